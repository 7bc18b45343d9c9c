#!/usr/bin/env python3
"""Time from `docker kill` to the state change, 20 kills, side by side:
arasuld (Docker events stream; read from GET /api/services every 12 ms, under the 100/s rate limit) vs a
1 s polling loop of `docker inspect` (what the old agent did, every 10 s).
Both watch the same kills. Run by benches/kill_latency.sh."""
import json, statistics, subprocess, sys, threading, time, urllib.request

base, container, kills = sys.argv[1], sys.argv[2], int(sys.argv[3])

def state():
    with urllib.request.urlopen(f"{base}/api/services", timeout=2) as r:
        return {s["name"]: s for s in json.load(r)["services"]}["llm"]["state"]

def wait(pred, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.012)
    raise SystemExit("timed out")

ours, polled = [], []
poll_seen = {}
stop = False

def poller():
    # The old way: inspect once a second, note when it first says "not running".
    while not stop:
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container],
                             capture_output=True, text=True).stdout.strip()
        if out == "false" and "t0" in poll_seen and "t" not in poll_seen:
            poll_seen["t"] = time.monotonic()
        time.sleep(1.0)

threading.Thread(target=poller, daemon=True).start()
wait(lambda: state() == "healthy")
for i in range(kills):
    poll_seen.clear()
    t0 = time.monotonic()
    poll_seen["t0"] = t0
    subprocess.run(["docker", "kill", container], check=True, capture_output=True)
    wait(lambda: state() == "unhealthy")
    ours.append(time.monotonic() - t0)
    wait(lambda: "t" in poll_seen, timeout=10)
    polled.append(poll_seen["t"] - t0)
    subprocess.run(["docker", "start", container], check=True, capture_output=True)
    wait(lambda: state() == "healthy")
stop = True

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

print(f"{kills} kills       p50 ms   p95 ms")
for name, xs in (("arasuld (events)", ours), ("inspect every 1 s", polled)):
    print(f"{name:18} {pct(xs,50)*1000:7.0f}  {pct(xs,95)*1000:7.0f}")
print(f"ratio p50 {pct(ours,50)/pct(polled,50):.3f}, p95 {pct(ours,95)/pct(polled,95):.3f}")
