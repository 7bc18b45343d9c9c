#!/usr/bin/env bash
# Bounded fuzzing of the bundle reader and manifest parser (src/update/fuzz.rs).
# With nightly + cargo-fuzz: `cargo fuzz run` each target for FUZZ_SECONDS
# (default 60), starting from the seed bundles; a crash fails the script and
# leaves the reproducer in fuzz/artifacts/. Installs both when missing. If that
# fails: the seeded stable run (tests/it/bundle_fuzz.rs) with FUZZ_ITERS (default
# 20000) inputs per target; with CI=true that is an error, not a silent fallback.
#
#   tests/fuzz.sh                  # 60 s per target
#   FUZZ_SECONDS=600 tests/fuzz.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO_ROOT"
FUZZ_SECONDS="${FUZZ_SECONDS:-60}"

have_fuzz() { rustup toolchain list 2>/dev/null | grep -q '^nightly' && cargo +nightly fuzz --version >/dev/null 2>&1; }
if ! have_fuzz && command -v rustup >/dev/null; then
  log "installing nightly (minimal) and cargo-fuzz"
  rustup toolchain list | grep -q '^nightly' || timeout 600 rustup toolchain install nightly --profile minimal || true
  command -v cargo-fuzz >/dev/null || timeout 900 cargo install --locked cargo-fuzz || true
fi
if have_fuzz; then
  corpus="$REPO_ROOT/fuzz/corpus"
  FUZZ_SEED_DIR="$corpus" cargo test -q --test it bundle_fuzz::seed_bundle_reaches_the_payload_checks >/dev/null
  # The daemon's locked dependency versions (fuzz/ is its own workspace).
  cp Cargo.lock fuzz/Cargo.lock
  # Own target dir: sanitizer builds must not evict the shared debug build.
  export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$CARGO_TARGET_DIR/fuzz}"
  for target in bundle_reader manifest_parser; do
    log "cargo fuzz run $target for ${FUZZ_SECONDS}s"
    # -s none: no AddressSanitizer. The code under fuzz is safe Rust (unsafe is
    # denied outside os::sys), so ASan would only slow the build and each run.
    # -a: debug assertions and overflow checks, so those are caught with panics.
    (cd fuzz && cargo +nightly fuzz run -s none -a "$target" "$corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1)
  done
else
  if [ "${CI:-}" = "true" ]; then
    echo "tests/fuzz.sh: nightly or cargo-fuzz missing (rustup toolchain install nightly; cargo install cargo-fuzz)" >&2
    exit 1
  fi
  log "no nightly/cargo-fuzz: seeded stable run instead"
  FUZZ_ITERS="${FUZZ_ITERS:-20000}" cargo test -q --test it bundle_fuzz::
fi
