#!/usr/bin/env bash
# One backup → wipe → restore run with a box's worth of data, on the real
# PostgreSQL, Docker engine and file system: the backup (pg_dump, n8n's
# volume copied while the service is stopped, the archive read back and its
# dump restored into a scratch database) and the restore (archive checked,
# safety backup, services stopped, database and files put back, n8n healthy
# again). It is the test
# supervisor::backup::backup_wipe_restore_brings_the_data_back_a_corrupt_archive_changes_nothing_a_failed_restore_rolls_back
# with MIB MiB of random binary data in n8n's volume (default 256) and ROWS
# rows of ~190 bytes in the database (default 500000); it prints the
# archive's size and the durations.
#
#   benches/backup_restore.sh
#   MIB=1024 ROWS=2000000 benches/backup_restore.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO_ROOT"
ensure_postgres
ensure_docker
"$REPO_ROOT/scripts/testrt-image" >/dev/null
ARASUL_BENCH_BACKUP_MIB="${MIB:-256}" ARASUL_BENCH_BACKUP_ROWS="${ROWS:-500000}" CI=true \
  cargo nextest run --test it --no-capture \
  -E 'test(backup_wipe_restore_brings_the_data_back)' 2>&1 | grep -E '^backup-wipe-restore|PASS|FAIL|panicked'
