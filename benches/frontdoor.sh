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
source "$REPO_ROOT/benches/lib.sh"
bench_setup frontdoor
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
cat > "$work/arasuld.yaml" <<YAML
http:
  listen: 127.0.0.1:$port
  rate_limit_exempt: [127.0.0.0/8]
  rate_limits:
    api_key: {count: 1000000, per: 1s, burst: 1000000}
database:
  url: $BENCH_DB_URL
docker:
  pull: never
logging:
  level: warn
$(bench_paths)
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
