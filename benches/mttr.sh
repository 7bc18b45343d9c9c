#!/usr/bin/env bash
# Mean time to recovery, side by side in one run, on arasul-testrt:dev:
#  (1) a crashed container (its process SIGKILLed from the host): arasuld's
#      self-healing vs Docker's own `--restart always` on the same image;
#  (2) a hung container (running, health failing): arasuld with the shipped
#      LLM health settings (read from assets/services.yaml) and with a tighter
#      2 s / 1 s / 3,
#      vs the Kubernetes default liveness budget (period 10 s × 3 failures,
#      timeout 1 s) plus the restart time measured here.
#   benches/mttr.sh [CRASHES] [HANGS]          (ARASULD_BIN=… to skip the release build)
source "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO_ROOT"
CRASHES="${1:-10}"
HANGS="${2:-3}"
ensure_postgres
ensure_docker
"$REPO_ROOT/scripts/testrt-image" >/dev/null
BIN="${ARASULD_BIN:-$(build_release)}"
source "$REPO_ROOT/benches/lib.sh"
bench_setup mttr
# The `--restart always` container it is compared with.
bench_cleanup_extra() { docker rm -f "$project-docker" >/dev/null 2>&1; }
# The llm service's probe as shipped: interval, timeout, retries.
read -r SHIP_INTERVAL SHIP_TIMEOUT SHIP_RETRIES < <(awk '
  /^  - name: /{llm = ($3 == "llm")}
  llm && $1 == "interval:" {i = $2} llm && $1 == "timeout:" {t = $2} llm && $1 == "retries:" {r = $2}
  END {print i, t, r}' assets/services.yaml)
cat > "$work/services.yaml" <<YAML
project: $project
network: $project-net
services:
  # The shipped LLM health settings (assets/services.yaml), short start period.
  - name: llm
    image: arasul-testrt:dev
    role: llm
    health: {http: {port: 11434, path: /api/version}, interval: $SHIP_INTERVAL, timeout: $SHIP_TIMEOUT, retries: $SHIP_RETRIES, start_period: 5s}
  - name: fast
    image: arasul-testrt:dev
    role: other
    health: {http: {port: 11434, path: /api/version}, interval: 2s, timeout: 1s, retries: 3, start_period: 5s}
YAML
cat > "$work/arasuld.yaml" <<YAML
http:
  listen: 127.0.0.1:$port
database:
  url: $BENCH_DB_URL
$(bench_paths)
logging:
  level: warn
# Each failure here is its own incident: the backoff resets after 1 s
# healthy (default 10 min) and the restart cap is lifted (default: more than
# 5 in 30 min marks the service failed), so every round is a first restart.
healing:
  services:
    backoff_reset_after: 1s
    max_restarts: 1000
YAML
docker run -d --name "$project-docker" --restart always arasul-testrt:dev >/dev/null
"$BIN" --config "$work/arasuld.yaml" serve >"$work/out" 2>&1 &
PID=$!
python3 "$REPO_ROOT/benches/mttr.py" "http://127.0.0.1:$port" "$project" "$CRASHES" "$HANGS" \
  "$SHIP_INTERVAL / $SHIP_TIMEOUT / $SHIP_RETRIES" \
  || { tail -20 "$work/out"; exit 1; }
