#!/usr/bin/env bash
# Start to READY=1 of the release daemon, RUNS times (default 10), with its
# secrets in place and PostgreSQL up (the box's every start after the first).
#
#   benches/startup.sh            # RUNS=10 (ARASULD_BIN=… to skip the build)
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
RUNS="${RUNS:-10}"
ensure_postgres
BIN="${ARASULD_BIN:-$(build_release)}"
bench_setup startup
cat > "$work/arasuld.yaml" <<YAML
http:
  listen: 127.0.0.1:$port
database:
  url: $BENCH_DB_URL
$(bench_paths)
logging:
  level: warn
YAML
# The first start generates the secrets and migrates the database.
python3 "$REPO_ROOT/benches/startup.py" "$BIN" "$work/arasuld.yaml" 1 >/dev/null
python3 "$REPO_ROOT/benches/startup.py" "$BIN" "$work/arasuld.yaml" "$RUNS"
