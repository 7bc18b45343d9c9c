#!/usr/bin/env bash
# Bundle verification throughput and memory, side by side with sha256sum.
# Builds a bundle with SIZE_MIB (default 1024) of random payload, warms the
# page cache, then times (best of RUNS, default 3):
#   sha256sum BUNDLE                       (the yardstick: one hash, read only)
#   arasuld bundle verify BUNDLE           (signature, versions, per-member
#                                           sha256 + whole-file sha256, nothing written)
#   arasuld bundle verify --staging DIR    (the upload path: every member also
#                                           written to staging and fsynced)
# and prints MB/s, the ratio verify / sha256sum (target ≥ 0.9) and the peak
# RSS of each verify (/usr/bin/time; target < 32 MB regardless of size).
#
#   benches/update_verify.sh                 # 1 GiB
#   SIZE_MIB=4096 benches/update_verify.sh   # RSS must not grow with size
source "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO_ROOT"
SIZE_MIB="${SIZE_MIB:-1024}"
RUNS="${RUNS:-3}"

ensure_cmd /usr/bin/time time
ensure_cmd sha256sum coreutils

work="$(mktemp -d "${BENCH_DIR:-/var/tmp}/update-verify.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# A private copy: the shared target dir's binary may be rebuilt meanwhile.
cp "${ARASULD_BIN:-$(build_release)}" "$work/arasuld"
BIN="$work/arasuld"

log "building a bundle with ${SIZE_MIB} MiB of random payload in $work"
"$BIN" bundle keygen --out "$work/k" >/dev/null
mkdir "$work/keys"
cp "$work/k/update-signing.pem" "$work/keys/"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$work/image.tar"
"$BIN" bundle create --key "$work/k/update-signing.key" --version 99.0.0 --min-version 0.0.0 \
  --image-tar "bench=arasul/bench:1=$work/image.tar" --out "$work/bench.araupdate" >/dev/null
rm "$work/image.tar"
bytes=$(stat -c %s "$work/bench.araupdate")

# time -f: elapsed seconds, max RSS in KiB
timed() { /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; return 1; }; cat "$work/t"; }
best() { sort -n | head -1; }

sha256sum "$work/bench.araupdate" >/dev/null   # warm the page cache
sha=(); ver=(); stg=()
for _ in $(seq "$RUNS"); do
  sha+=("$(timed sha256sum "$work/bench.araupdate")")
  ver+=("$(timed "$BIN" bundle verify --installed 1.0.0 --keys "$work/keys" "$work/bench.araupdate")")
  stg+=("$(timed "$BIN" bundle verify --installed 1.0.0 --keys "$work/keys" --staging "$work/staging" "$work/bench.araupdate")")
done
sha_s=$(printf '%s\n' "${sha[@]}" | awk '{print $1}' | best)
ver_s=$(printf '%s\n' "${ver[@]}" | awk '{print $1}' | best)
stg_s=$(printf '%s\n' "${stg[@]}" | awk '{print $1}' | best)
ver_rss=$(printf '%s\n' "${ver[@]}" | awk '{print $2}' | sort -n | tail -1)
stg_rss=$(printf '%s\n' "${stg[@]}" | awk '{print $2}' | sort -n | tail -1)

awk -v b="$bytes" -v s="$sha_s" -v v="$ver_s" -v t="$stg_s" -v vr="$ver_rss" -v tr="$stg_rss" -v n="$RUNS" 'BEGIN {
  printf "bundle: %.0f MiB, best of %d runs, page cache warm, %d CPUs\n", b/1048576, n, '"$(nproc)"'
  printf "%-34s %8.2f s %8.0f MB/s\n", "sha256sum", s, b/s/1e6
  printf "%-34s %8.2f s %8.0f MB/s  ratio %.2f  peak RSS %.1f MB\n", "bundle verify", v, b/v/1e6, s/v, vr/1024
  printf "%-34s %8.2f s %8.0f MB/s  ratio %.2f  peak RSS %.1f MB\n", "bundle verify --staging (fsync)", t, b/t/1e6, s/t, tr/1024
}'
