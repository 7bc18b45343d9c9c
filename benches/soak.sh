#!/usr/bin/env bash
# Soak: MINUTES (default 30) of steady use of the release daemon (sampling
# every second, API requests every second, five live-stream clients, a login
# a minute), with its RSS and open FDs sampled every minute; prints the growth
# after the first 5 minutes.
#
#   benches/soak.sh            # MINUTES=30 (ARASULD_BIN=… to skip the build)
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
MINUTES="${MINUTES:-30}"
ensure_postgres
python3 -c 'import websockets' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check 'websockets>=12,<16'
BIN="${ARASULD_BIN:-$(build_release)}"
bench_setup soak
cat > "$work/arasuld.yaml" <<YAML
http:
  listen: 127.0.0.1:$port
  rate_limit_exempt: [127.0.0.0/8]
database:
  url: $BENCH_DB_URL
$(bench_paths)
metrics:
  interval: 1s
logging:
  level: warn
YAML
bench_serve
initial="$(cat "$work/secrets/initial-admin-password")"
pw="Soak-Bench-Pw-$$!"
token="$(bench_login "$initial")"
curl -fsS -H 'Content-Type: application/json' -H "Authorization: Bearer $token" \
  -d "{\"current_password\":\"$initial\",\"new_password\":\"$pw\"}" "$base/api/auth/change-password" >/dev/null
python3 "$REPO_ROOT/benches/soak.py" "$base" "$PID" "$MINUTES" "$pw" || { tail -20 "$work/out"; exit 1; }
