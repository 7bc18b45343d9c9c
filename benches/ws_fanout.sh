#!/usr/bin/env bash
# WebSocket fan-out: CLIENTS (default 1000) clients of the live metrics stream
# on the release daemon, sampling every second, for DURATION s (default 30):
# the delay from sample to each client (p50/p99/max) and the daemon's CPU
# with no clients and with all of them. Loopback is exempt from the rate
# limits and the connection and stream caps are raised to fit the clients.
#
#   benches/ws_fanout.sh            # CLIENTS=1000 DURATION=30 (ARASULD_BIN=… to skip the build)
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
CLIENTS="${CLIENTS:-1000}"
DURATION="${DURATION:-30}"
ensure_postgres
python3 -c 'import websockets' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check 'websockets>=12,<16'
BIN="${ARASULD_BIN:-$(build_release)}"
bench_setup wsfan
cat > "$work/arasuld.yaml" <<YAML
http:
  listen: 127.0.0.1:$port
  rate_limit_exempt: [127.0.0.0/8]
  max_connections: $((CLIENTS + 100))
  max_connections_per_client: $((CLIENTS + 100))
  max_streams: $((CLIENTS + 10))
database:
  url: $BENCH_DB_URL
$(bench_paths)
metrics:
  interval: 1s
  stream_interval: 1s
logging:
  level: warn
YAML
ulimit -n "$(ulimit -Hn)"   # the daemon and the 1000 clients each need a socket per client
bench_serve
python3 "$REPO_ROOT/benches/ws_fanout.py" "ws://127.0.0.1:$port/api/metrics/live-stream" "$PID" "$CLIENTS" "$DURATION" \
  || { tail -20 "$work/out"; exit 1; }
