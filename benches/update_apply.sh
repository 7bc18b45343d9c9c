#!/usr/bin/env bash
# Time from "apply" to "done" of a one-image update, split into docker load /
# switch / verify, on the real Docker engine and PostgreSQL (a database of
# its own, dropped at the end). RUNS updates in a row (default 3), each a
# new image of the test runtime (~1.6 MB tarball, one service whose health
# probe runs every 1 s). Verify = until the service is healthy, plus the
# stability window (STABILITY, default 0s here; 60s in production).
#
#   benches/update_apply.sh                  # release build
#   ARASULD_BIN=path/to/arasuld benches/update_apply.sh
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
RUNS="${RUNS:-3}"
STABILITY="${STABILITY:-0s}"
ensure_postgres
ensure_docker
ensure_cmd curl curl
"$REPO_ROOT/scripts/testrt-image" >/dev/null
BIN="${ARASULD_BIN:-$(build_release)}"
bench_setup benchupd
mkdir -p "$work/etc"
# The update images are this run's own: removed with its containers.
bench_cleanup_extra() {
  docker image ls --format '{{.Repository}}:{{.Tag}}' arasul-testrt | grep "^arasul-testrt:$project-" |
    xargs -r docker rmi -f >/dev/null 2>&1 || true
}

# Images: v1 is the test runtime; each run's image differs by one ENV line.
variant() {
  local cid
  cid="$(docker create arasul-testrt:dev)"
  docker commit --change "ENV TESTRT_VERSION=$2" "$cid" "$1" >/dev/null
  docker rm -f "$cid" >/dev/null
}
docker tag arasul-testrt:dev "arasul-testrt:$project-v1"

cat > "$work/services.yaml" <<YAML
project: $project
network: $project-net
services:
  - name: app
    image: arasul-testrt:$project-v1
    health: {http: {port: 11434, path: /api/version}, interval: 1s, timeout: 1s, retries: 3, start_period: 5s}
YAML
cat > "$work/arasuld.yaml" <<YAML
http:
  listen: 127.0.0.1:$port
database:
  url: $BENCH_DB_URL
$(bench_paths)
logging:
  level: warn
update:
  stability_window: $STABILITY
  config_dir: $work/etc
YAML
"$BIN" bundle keygen --out "$work/vendor" >/dev/null
cp "$work/vendor/update-signing.pem" "$work/keys/"
bench_serve

json() { python3 -c 'import json,sys; v=json.load(sys.stdin)
for k in sys.argv[1].split("."): v=v[int(k)] if k.isdigit() else v[k]
print(v)' "$1"; }
initial="$(cat "$work/secrets/initial-admin-password")"
token="$(bench_login "$initial")"
pw="Bench-Update-Pw-$$!"
curl -fsS -H 'Content-Type: application/json' -H "Authorization: Bearer $token" \
  -d "{\"current_password\":\"$initial\",\"new_password\":\"$pw\"}" "$base/api/auth/change-password" >/dev/null
auth=(-H "Authorization: Bearer $token")
wait_healthy() {
  for _ in $(seq 1 300); do
    [ "$(curl -fsS "$base/api/services" | json services.0.state)" = healthy ] && return 0
    sleep 0.2
  done
  log "app never became healthy"; exit 1
}
wait_healthy

printf '%-4s %-8s %10s %10s %10s %10s %12s\n' run version load_ms switch_ms verify_ms other_ms apply→done_ms
for i in $(seq 1 "$RUNS"); do
  v="0.$((i + 1)).0"
  img="arasul-testrt:$project-v$((i + 1))"
  variant "$img" "$v"
  "$BIN" bundle create --key "$work/vendor/update-signing.key" --version "$v" --min-version 0.1.0 \
    --image "app=$img" --out "$work/$v.araupdate" >/dev/null
  docker rmi "$img" >/dev/null # the image must come from the bundle
  code=$(curl -sS -o "$work/check.json" -w '%{http_code}' "${auth[@]}" -F "file=@$work/$v.araupdate" "$base/api/update/upload")
  [ "$code" = 200 ] || { log "upload answered $code: $(cat "$work/check.json")"; exit 1; }
  curl -fsS -X POST "${auth[@]}" "$base/api/update/apply" >/dev/null
  for _ in $(seq 1 1200); do
    state="$(curl -fsS "${auth[@]}" "$base/api/update/status" | json state)"
    case "$state" in done|rolled_back|failed) break ;; esac
    sleep 0.1
  done
  [ "$state" = done ] || { log "run $i ended $state"; tail -n 20 "$work/log/update.log" >&2; exit 1; }
  line="$(grep "done: installed $v" "$work/log/update.log" | tail -n 1)"
  read -r load switch verify < <(sed -E 's/.*load ([0-9]+) ms, switch ([0-9]+) ms, verify ([0-9]+) ms.*/\1 \2 \3/' <<<"$line")
  total="$(curl -fsS "${auth[@]}" "$base/api/update/history?limit=1" | python3 -c '
import json, sys
from datetime import datetime
u = json.load(sys.stdin)["updates"][0]
f = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
print(round((f(u["finished_at"]) - f(u["started_at"])).total_seconds() * 1000))')"
  printf '%-4s %-8s %10s %10s %10s %10s %12s\n' "$i" "$v" "$load" "$switch" "$verify" \
    "$((total - load - switch - verify))" "$total"
done
echo "other = backup (pg_dump + pg_restore --list), migrations (none here), state writes; stability window $STABILITY"
