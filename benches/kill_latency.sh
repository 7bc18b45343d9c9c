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
    health: {http: {port: 11434, path: /api/version}, interval: 1s, timeout: 1s, retries: 3, start_period: 5s}
YAML
cat > "$work/arasuld.yaml" <<YAML
http:
  listen: 127.0.0.1:$port
database:
  url: $DATABASE_URL
paths:
  state_dir: $work/state
  log_dir: $work/log
  secrets_dir: $work/secrets
  keys_dir: $work/keys
  services_file: $work/services.yaml
  data_path: $work/state
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
