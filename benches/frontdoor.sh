#!/usr/bin/env bash
# The front door (issue 15) against the runtime reached directly, one run,
# the same test runtime container: first streamed chunk and chunk lag,
# request latency, throughput (benches/frontdoor.py prints the table).
#   benches/frontdoor.sh [REQUESTS]
source "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO_ROOT"
N="${1:-200}"
TOKEN_MS=20
ensure_postgres
ensure_docker
"$REPO_ROOT/scripts/testrt-image" >/dev/null
BIN="$(build_release)"
work="$(mktemp -d)"
project="bench$$"
cleanup() {
  kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null
  docker ps -aq --filter "label=io.arasul.project=$project" | xargs -r docker rm -f >/dev/null
  docker network rm "$project-net" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
mkdir -p "$work"/{state,log,secrets,keys}
cat > "$work/services.yaml" <<YAML
project: $project
network: $project-net
services:
  - name: llm
    image: arasul-testrt:dev
    role: llm
    env: {TESTRT_TOKEN_DELAY_MS: "$TOKEN_MS"}
    health: {http: {port: 11434, path: /api/version}, interval: 1s, timeout: 1s, retries: 3, start_period: 5s}
YAML
# The bench's own database, so its key does not outlive it.
db="arasul_bench_$$"
psql_admin() { pg_as_postgres psql -p "$PGPORT" -qtAc "$1" >/dev/null; }
psql_admin "CREATE DATABASE $db OWNER arasul_dev"
trap 'cleanup; psql_admin "DROP DATABASE IF EXISTS $db"' EXIT
cat > "$work/arasuld.yaml" <<YAML
http:
  listen: 127.0.0.1:$port
  rate_limit_exempt: [127.0.0.0/8]
  rate_limits:
    api_key: {count: 1000000, per: 1s, burst: 1000000}
database:
  url: ${DATABASE_URL%/*}/$db
docker:
  pull: never
paths:
  state_dir: $work/state
  log_dir: $work/log
  secrets_dir: $work/secrets
  keys_dir: $work/keys
  services_file: $work/services.yaml
  data_path: $work/state
logging:
  level: warn
YAML
"$BIN" --config "$work/arasuld.yaml" serve >"$work/out" 2>&1 &
PID=$!
for _ in $(seq 100); do
  addr=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$project-llm" 2>/dev/null || true)
  [ -n "$addr" ] && curl -fs "http://$addr:11434/api/version" >/dev/null && break
  sleep 0.3
done
key=$("$BIN" --config "$work/arasuld.yaml" admin key create bench --scope llm 2>/dev/null | grep '^ak_')
for _ in $(seq 50); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $key" "http://127.0.0.1:$port/ollama/api/tags")" = 200 ] && break
  sleep 0.2
done
python3 "$REPO_ROOT/benches/frontdoor.py" "http://$addr:11434" "http://127.0.0.1:$port/ollama" "$key" "$TOKEN_MS" "$N"
