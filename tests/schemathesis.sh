#!/usr/bin/env bash
# Fuzzes a running arasuld against its own /api/openapi.json with
# schemathesis (from PyPI): a valid admin token, a bounded number of examples
# per operation, and two checks: no 5xx, and every response matches the
# documented schema. Exits non-zero on any finding.
#
#   tests/schemathesis.sh PATH/TO/arasuld     (scripts/test passes the debug build)
#
# Uses $DATABASE_URL when set (scripts/test exports the dev database), else
# runs with the database unreachable. Only loopback is contacted.
set -euo pipefail

BIN="${1:?usage: tests/schemathesis.sh PATH/TO/arasuld}"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-20}"
log() { printf '==> %s\n' "$*" >&2; }

if ! command -v schemathesis >/dev/null 2>&1; then
  log "installing schemathesis (pip)"
  python3 -m pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi

tmp="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
db_url="${DATABASE_URL:-postgres://nobody@127.0.0.1:1/none}"
cat >"$tmp/arasuld.yaml" <<EOF
http:
  listen: 127.0.0.1:$port
  shutdown_grace: 2s
  # The fuzzer is not a client to pace: quotas are asserted in tests/it
  # (auth.rs, the edge), and at 15 requests/s the run took 3.5 minutes.
  rate_limit_exempt: [127.0.0.0/8]
database:
  url: $db_url
  retry_max: 1s
  check_interval: 1s
  connect_timeout: 2s
paths:
  state_dir: $tmp/state
  log_dir: $tmp/log
  secrets_dir: $tmp/secrets
  keys_dir: $tmp/keys
  services_file: $tmp/services.yaml
  data_path: $tmp
metrics:
  internet_check: 127.0.0.1:9
  webhook_check: http://127.0.0.1:9/healthz
# Fuzzed model pulls read no registry (nothing leaves the machine), and a
# fuzzed PATCH /api/settings that allows reboots reaches no logind.
models:
  registry: ""
healing:
  reboot:
    bus_address: "unix:path=$tmp/no-such-bus"
    drain_timeout: 1s
mdns:
  bus_address: "unix:path=$tmp/no-such-bus"
EOF

log "starting $BIN on $base"
"$BIN" --config "$tmp/arasuld.yaml" serve >"$tmp/daemon.log" 2>&1 &
pid=$!

# JSON over HTTP with python3 only (no curl/jq needed): call METHOD PATH BODY TOKEN
call() {
  python3 -c '
import json, sys, urllib.request, urllib.error
base, method, path, body, token = sys.argv[1:6]
req = urllib.request.Request(base + path, data=body.encode() if body else None, method=method)
if body: req.add_header("Content-Type", "application/json")
if token: req.add_header("Authorization", "Bearer " + token)
try:
    with urllib.request.urlopen(req, timeout=10) as r: print(r.status, r.read().decode())
except urllib.error.HTTPError as e: print(e.code, e.read().decode())
except Exception as e: print(0, e)
' "$base" "$@"
}

for _ in $(seq 1 150); do
  if [ -s "$tmp/secrets/initial-admin-password" ] && [ "$(call GET /api/health '' '' | cut -d' ' -f1)" = 200 ]; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/daemon.log" >&2; log "arasuld exited"; exit 1; }
  sleep 0.2
done
initial="$(cat "$tmp/secrets/initial-admin-password")"
new_pw="Schemathesis-Pw-$(date +%s)!"
login_body="$(python3 -c 'import json,sys; print(json.dumps({"username":"admin","password":sys.argv[1]}))' "$initial")"
read -r status body < <(call POST /api/auth/login "$login_body" '')
[ "$status" = 200 ] || { log "login failed: $status $body"; exit 1; }
token="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["token"])' "$body")"
change_body="$(python3 -c 'import json,sys; print(json.dumps({"current_password":sys.argv[1],"new_password":sys.argv[2]}))' "$initial" "$new_pw")"
read -r status body < <(call POST /api/auth/change-password "$change_body" "$token")
[ "$status" = 200 ] || { log "change-password failed: $status $body"; exit 1; }

log "schemathesis: $MAX_EXAMPLES examples per operation, checks not_a_server_error + response_schema_conformance"
cd "$tmp"
# The AI routes answer 503 (llm_unavailable / embeddings_unavailable, as
# documented) for valid input: this daemon runs no LLM or embedding service.
cat >"$tmp/schemathesis.toml" <<'EOF'
[[operations]]
include-tag = "ai"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
# Once a fuzzed PATCH /api/settings allowed reboots, a reboot reaches for
# logind, which this daemon's bus address says is absent: 503 logind_failed,
# as documented.
[[operations]]
include-path = "/api/system/reboot"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
EOF
rc=0
# logout / logout-all would revoke the token mid-run: excluded. The
# WebSocket stream and the SSE streams (logs, update status) never end by
# design, so every call would time out: excluded (the log stream's 400s are
# covered in tests/it/logs.rs). The notification channels and the backup
# destination are excluded too: a fuzzed webhook URL, SMTP host or S3
# endpoint would be contacted (a test send, the next backup), and nothing
# may leave this machine; their refusals of bad input are asserted in
# tests/it/daemon/notifications.rs and tests/it/daemon/backups.rs. Loopback
# is exempt from the quotas, so the fuzzer runs unpaced.
timeout 240 schemathesis --config-file "$tmp/schemathesis.toml" run "$base/api/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples "$MAX_EXAMPLES" \
  --exclude-path /api/auth/logout \
  --exclude-path /api/auth/logout-all \
  --exclude-path /api/metrics/live-stream \
  --exclude-path /api/logs/stream \
  --exclude-path /api/update/status/stream \
  --exclude-path /api/notifications \
  --exclude-path /api/notifications/test \
  --exclude-path /api/backups/settings \
  --workers 1 \
  --seed 4242 \
  --generation-database none \
  --request-timeout 10 \
  --no-color || rc=$?
if [ "$rc" -ne 0 ]; then
  log "schemathesis found problems (exit $rc); daemon log tail:"
  tail -n 40 "$tmp/daemon.log" >&2
  exit "$rc"
fi
# The token still works: nothing the fuzzer sent broke the session.
read -r status _ < <(call GET /api/auth/verify '' "$token")
[ "$status" = 200 ] || { log "token no longer valid after the run: $status"; exit 1; }
log "schemathesis: no findings"
