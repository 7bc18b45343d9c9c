# Sourced by the bench scripts after scripts/lib.sh: one bench's corner of
# this machine (a work dir, a project label for its containers, a database
# of its own, a free port) and its cleanup at exit, daemon included.
#
#   bench_setup NAME   sets work, project, port, BENCH_DB_URL; PID is the
#                      daemon's once started (killed at exit)
#   bench_paths        prints the config's paths section for $work
#   bench_cleanup_extra  (define it) anything else to remove at exit

bench_setup() {
  work="$(mktemp -d)"
  project="$1$$"
  PID=""
  # Not the shared dev database: it may carry other branches' migrations.
  pg_as_postgres createdb -p "$PGPORT" -O "$DEV_DB_USER" "$project"
  BENCH_DB_URL="postgres://$DEV_DB_USER:$DEV_DB_PASS@127.0.0.1:$PGPORT/$project"
  trap bench_cleanup EXIT
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  mkdir -p "$work"/{state,log,secrets,keys}
}

bench_cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; fi
  docker ps -aq --filter "label=io.arasul.project=$project" | xargs -r docker rm -f >/dev/null
  if declare -F bench_cleanup_extra >/dev/null; then bench_cleanup_extra; fi
  docker network rm "$project-net" >/dev/null 2>&1
  rm -rf "$work"
  pg_as_postgres dropdb -p "$PGPORT" --if-exists "$project"
}

bench_paths() {
  cat <<YAML
paths:
  state_dir: $work/state
  log_dir: $work/log
  secrets_dir: $work/secrets
  keys_dir: $work/keys
  services_file: $work/services.yaml
  data_path: $work/state
YAML
}

# bench_serve: starts $BIN on $work/arasuld.yaml in the background (PID,
# base) and waits until it answers and its first password is written.
bench_serve() {
  "$BIN" --config "$work/arasuld.yaml" serve >"$work/out" 2>&1 &
  PID=$!
  base="http://127.0.0.1:$port"
  for _ in $(seq 1 150); do
    [ -s "$work/secrets/initial-admin-password" ] && curl -fsS "$base/api/health" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "the daemon did not answer"; tail -20 "$work/out"; exit 1
}

# bench_login PASSWORD: the admin's token.
bench_login() {
  curl -fsS -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$1\"}" "$base/api/auth/login" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
