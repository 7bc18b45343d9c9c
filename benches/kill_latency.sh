#!/usr/bin/env bash
# Time from `docker kill` to arasuld's state change (20 kills, p50/p95),
# next to a 1 s polling loop of `docker inspect` on the same kills.
#   benches/kill_latency.sh [KILLS]
source "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO_ROOT"
KILLS="${1:-20}"
ensure_postgres
ensure_docker
"$REPO_ROOT/scripts/testrt-image" >/dev/null
BIN="$(build_release)"
source "$REPO_ROOT/benches/lib.sh"
bench_setup bench
cat > "$work/services.yaml" <<YAML
project: $project
network: $project-net
services:
  - name: llm
    image: arasul-testrt:dev
    role: llm
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
# Detection only: with healing on, the container is back before a 1 s
# inspect loop could even see it down.
healing:
  enabled: false
YAML
"$BIN" --config "$work/arasuld.yaml" serve >"$work/out" 2>&1 &
PID=$!
python3 "$REPO_ROOT/benches/kill_latency.py" "http://127.0.0.1:$port" "$project-llm" "$KILLS"
