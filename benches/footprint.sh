#!/usr/bin/env bash
# Footprint side by side, in one run on this machine: arasuld sampling every
# 1 s vs Debian's prometheus-node-exporter, each scraped once a second, for
# DURATION seconds (default 60). Prints CPU seconds used during the window and
# peak RSS of each, and the ratios arasuld / node_exporter.
#
#   benches/footprint.sh            # DURATION=60
source "$(dirname "$0")/../scripts/lib.sh"
cd "$REPO_ROOT"
DURATION="${DURATION:-60}"

ensure_postgres
command -v prometheus-node-exporter >/dev/null || apt_install prometheus-node-exporter
BIN="${ARASULD_BIN:-$(build_release)}"

work="$(mktemp -d)"
trap 'kill $A_PID $N_PID 2>/dev/null; rm -rf "$work"' EXIT
a_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
n_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
mkdir -p "$work"/{state,log,secrets,keys}
cat > "$work/arasuld.yaml" <<YAML
http:
  listen: 127.0.0.1:$a_port
database:
  url: $DATABASE_URL
paths:
  state_dir: $work/state
  log_dir: $work/log
  secrets_dir: $work/secrets
  keys_dir: $work/keys
  services_file: $work/services.yaml
  data_path: $work/state
metrics:
  interval: 1s
logging:
  level: warn
YAML
# A first start creates the secrets (one argon2id hash of the initial
# password); the box's steady state is every later start, which is measured.
"$BIN" --config "$work/arasuld.yaml" serve >"$work/first.out" 2>&1 &
A_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$a_port/api/health" >/dev/null && break; sleep 0.1; done
kill -TERM $A_PID; wait $A_PID || true
"$BIN" --config "$work/arasuld.yaml" serve >"$work/arasuld.out" 2>&1 &
A_PID=$!
prometheus-node-exporter --web.listen-address="127.0.0.1:$n_port" --log.level=warn >"$work/ne.out" 2>&1 &
N_PID=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$a_port/api/health" >/dev/null && curl -fs "http://127.0.0.1:$n_port/metrics" >/dev/null && break
  sleep 0.1
done

tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
a0=$(cpu_ticks $A_PID); n0=$(cpu_ticks $N_PID)
for _ in $(seq 1 "$DURATION"); do
  curl -fs "http://127.0.0.1:$a_port/metrics" >/dev/null &
  curl -fs "http://127.0.0.1:$n_port/metrics" >/dev/null &
  sleep 1
done
wait_jobs() { for j in $(jobs -p); do [ "$j" = "$A_PID" ] || [ "$j" = "$N_PID" ] || wait "$j" 2>/dev/null; done; }
wait_jobs
a1=$(cpu_ticks $A_PID); n1=$(cpu_ticks $N_PID)
a_rss=$(awk '/VmHWM/{print $2}' /proc/$A_PID/status); n_rss=$(awk '/VmHWM/{print $2}' /proc/$N_PID/status)
a_now=$(awk '/VmRSS/{print $2}' /proc/$A_PID/status); n_now=$(awk '/VmRSS/{print $2}' /proc/$N_PID/status)
samples=$(curl -fs "http://127.0.0.1:$a_port/metrics" | awk '$1=="arasul_metrics_samples_total"{print $2}')
# Where the resident set is: anonymous (heap, stacks) and file-backed (the
# binary's code touched), and PSS (shared pages divided among their users).
split() {
  awk '/^RssAnon/{a=$2} /^RssFile/{f=$2} END{printf "%.1f %.1f", a/1024, f/1024}' "/proc/$1/status"
  awk '/^Pss:/{printf " %.1f\n", $2/1024}' "/proc/$1/smaps_rollup"
}
echo "binary: $(stat -c %s "$BIN") bytes ($BIN)"
printf '%-22s%10s%10s%10s\n' "" "anon MiB" "file MiB" "PSS MiB"
printf '%-22s%10s%10s%10s\n' arasuld $(split $A_PID)
printf '%-22s%10s%10s%10s\n' node_exporter $(split $N_PID)

python3 - "$DURATION" "$tck" "$a0" "$a1" "$n0" "$n1" "$a_rss" "$n_rss" "$samples" "$a_now" "$n_now" <<'PY'
import sys
dur, tck, a0, a1, n0, n1, arss, nrss, samples, anow, nnow = sys.argv[1:]
tck = float(tck)
a_cpu = (float(a1) - float(a0)) / tck
n_cpu = (float(n1) - float(n0)) / tck
arss, nrss = int(arss) / 1024, int(nrss) / 1024
print(f"window {dur} s, arasuld took {samples} samples")
anow, nnow = int(anow) / 1024, int(nnow) / 1024
print(f"{'':22}{'CPU s':>8}{'peak RSS MiB':>14}{'RSS at end MiB':>16}")
print(f"{'arasuld':22}{a_cpu:8.2f}{arss:14.1f}{anow:16.1f}")
print(f"{'node_exporter':22}{n_cpu:8.2f}{nrss:14.1f}{nnow:16.1f}")
ratio = lambda a, b: (a / b) if b else float('inf')
print(f"ratio arasuld/node_exporter: CPU {ratio(a_cpu, n_cpu):.2f}, RSS {ratio(arss, nrss):.2f}")
PY
