# Shared set-up for scripts/run and scripts/test: installs what is missing
# (Debian/Ubuntu), starts PostgreSQL, creates the dev role and database.
# Sourced, not executed.

set -euo pipefail
shopt -s inherit_errexit

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# One target dir that survives between runs (and clean clones) on this
# machine: a clean build of this dependency set costs minutes on 2 cores.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if mkdir -p /var/cache/arasuld/target 2>/dev/null && [ -w /var/cache/arasuld/target ]; then
    export CARGO_TARGET_DIR=/var/cache/arasuld/target
  else
    export CARGO_TARGET_DIR="$REPO_ROOT/target"
  fi
fi

# Each line carries the wall-clock time, so a run's log shows where the minutes go.
log() { printf '==> %s %s\n' "$(date +%T)" "$*" >&2; }

APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  log "installing: $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Installs each Debian package whose command is missing: ensure_cmd CMD PKG
ensure_cmd() {
  command -v "$1" >/dev/null 2>&1 || apt_install "$2"
}

PGPORT=5432
DEV_DB_USER=arasul_dev
DEV_DB_PASS=arasul_dev
DEV_DB_NAME=arasul_dev

pg_as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql postgresql-contrib
  fi
  local ver
  ver="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
  export ARASUL_TEST_PG_BIN="/usr/lib/postgresql/$ver/bin"
  if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -qx "$ver main"; then
    log "creating PostgreSQL $ver cluster"
    $SUDO pg_createcluster "$ver" main >/dev/null
  fi
  if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $4}' | grep -qx online; then
    log "starting PostgreSQL $ver"
    $SUDO pg_ctlcluster "$ver" main start
  fi
  PGPORT="$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')"
  export PGPORT
  # Wait for it to accept connections (at most 30 s).
  for _ in $(seq 1 60); do
    pg_as_postgres psql -p "$PGPORT" -Atqc 'select 1' >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! pg_as_postgres psql -p "$PGPORT" -Atqc "select 1 from pg_roles where rolname='$DEV_DB_USER'" | grep -q 1; then
    log "creating role $DEV_DB_USER"
    # Superuser only for the dev/test role: #[sqlx::test] creates a database per test.
    pg_as_postgres psql -p "$PGPORT" -qc "create role $DEV_DB_USER login superuser password '$DEV_DB_PASS'"
  fi
  if ! pg_as_postgres psql -p "$PGPORT" -Atqc "select 1 from pg_database where datname='$DEV_DB_NAME'" | grep -q 1; then
    pg_as_postgres createdb -p "$PGPORT" -O "$DEV_DB_USER" "$DEV_DB_NAME"
  fi
  export DATABASE_URL="postgres://$DEV_DB_USER:$DEV_DB_PASS@127.0.0.1:$PGPORT/$DEV_DB_NAME"
}

ensure_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  if [ "${CI:-}" = "true" ]; then
    log "the Docker engine is not reachable (docker info failed); with CI=true this is a failure"
    exit 1
  fi
  log "warning: the Docker engine is not reachable; tests that need it will fail"
}

# Headless Chromium and its WebDriver server for tests/it/browser.rs (Debian's
# chromium and chromium-driver). With CI=true the browser tests fail without them.
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then return 0; fi
  apt_install chromium chromium-driver
}

# The release binary as shipped: linked against glibc dynamically (libc,
# libm, libgcc_s only). Not static: a static-pie build died with SIGFPE when
# it dlopened the real libnvidia-ml on an H200 (the library brings its own
# libc); the dynamic build read NVML correctly there. Prints its path.
build_release() {
  cargo build --release --bin arasuld >&2
  echo "$CARGO_TARGET_DIR/release/arasuld"
}
