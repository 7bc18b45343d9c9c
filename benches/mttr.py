#!/usr/bin/env python3
"""Mean time to recovery; run by benches/mttr.sh. Every recovery is timed the
same way for every contender: from the fault (SIGKILL of the container's
process from the host, or POST /testrt/hang) until the container has started
again (its StartedAt changed) and answers GET /api/version with 200."""
import json, statistics, subprocess, sys, time, urllib.request

base, project, crashes, hangs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
shipped_probe = sys.argv[5]
llm, fast, plain = f"{project}-llm", f"{project}-fast", f"{project}-docker"

def inspect(name):
    out = subprocess.run(["docker", "inspect", name], capture_output=True, text=True).stdout
    found = json.loads(out) if out.strip() else []
    return found[0] if found else None

def address(c):
    nets = c["NetworkSettings"]["Networks"]
    return next(n["IPAddress"] for n in nets.values() if n.get("IPAddress"))

def answers(ip, timeout=0.5):
    try:
        with urllib.request.urlopen(f"http://{ip}:11434/api/version", timeout=timeout) as r:
            return r.status == 200
    except Exception:
        return False

def service_state(name):
    with urllib.request.urlopen(f"{base}/api/services", timeout=2) as r:
        return {s["name"]: s for s in json.load(r)["services"]}[name]["state"]

def wait(pred, timeout=180, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(step)
    raise SystemExit("timed out")

def ready(name):
    """Running, answering, and (for arasuld's) seen healthy by arasuld."""
    def ok():
        c = inspect(name)
        return c and c["State"]["Running"] and answers(address(c))
    wait(ok)
    if name != plain:
        wait(lambda: service_state(name.removeprefix(project + "-")) == "healthy", step=0.1)

def recovered_after(name, t0, started_before):
    c = None
    def restarted():
        nonlocal c
        c = inspect(name)
        return c and c["State"]["Running"] and c["State"]["StartedAt"] != started_before
    wait(restarted)
    ip = address(c)
    wait(lambda: answers(ip, timeout=0.2), step=0.01)
    return time.monotonic() - t0

def crash(name):
    c = inspect(name)
    started = c["State"]["StartedAt"]
    t0 = time.monotonic()
    subprocess.run(["kill", "-9", str(c["State"]["Pid"])], check=True)
    return recovered_after(name, t0, started)

def hang(name):
    c = inspect(name)
    started = c["State"]["StartedAt"]
    req = urllib.request.Request(f"http://{address(c)}:11434/testrt/hang", method="POST")
    t0 = time.monotonic()
    urllib.request.urlopen(req, timeout=2).read()
    return recovered_after(name, t0, started)

def restart_time(name):
    """A hung container restarted the way a kubelet would (SIGTERM, 30 s grace)."""
    c = inspect(name)
    req = urllib.request.Request(f"http://{address(c)}:11434/testrt/hang", method="POST")
    urllib.request.urlopen(req, timeout=2).read()
    started = c["State"]["StartedAt"]
    t0 = time.monotonic()
    subprocess.run(["docker", "restart", "-t", "30", name], check=True, capture_output=True)
    return recovered_after(name, t0, started)

for n in (llm, fast, plain):
    ready(n)

# (1) crashes
ours, docker_own = [], []
for _ in range(crashes):
    ours.append(crash(fast)); ready(fast); time.sleep(1.5)
    # Docker doubles its restart delay (from 100 ms) for a container that
    # crashes again within 10 s of starting: 11 s apart, each crash is a first.
    docker_own.append(crash(plain)); ready(plain); time.sleep(11)

# (2) hangs
shipped, tight, restart = [], [], []
for _ in range(hangs):
    tight.append(hang(fast)); ready(fast); time.sleep(1.5)
    shipped.append(hang(llm)); ready(llm); time.sleep(1.5)
    restart.append(restart_time(plain)); ready(plain)

mean = statistics.mean
r = mean(restart)
# Kubernetes liveness defaults: periodSeconds 10, failureThreshold 3,
# timeoutSeconds 1. The hang lands uniformly within a period: the first failed
# probe comes after U(0, 10) s, the third 20 s later, each failing after its 1 s
# timeout. Mean detection 5 + 20 + 1 = 26 s, worst 10 + 20 + 1 = 31 s.
k8s_mean, k8s_worst = 26 + r, 31 + r

print(f"(1) crashed container, {crashes} crashes: MTTR mean / max (s)")
print(f"  arasuld (events stream → restart)   {mean(ours):6.2f} / {max(ours):6.2f}")
print(f"  docker --restart always             {mean(docker_own):6.2f} / {max(docker_own):6.2f}")
print(f"  ratio arasuld/docker (mean)         {mean(ours)/mean(docker_own):6.2f}")
print(f"(2) hung container (health failing), {hangs} hangs: MTTR mean / max (s)")
print(f"  arasuld, probe 2 s / 1 s / 3        {mean(tight):6.2f} / {max(tight):6.2f}")
print(f"  arasuld, shipped {shipped_probe:<19}{mean(shipped):6.2f} / {max(shipped):6.2f}")
print(f"  docker alone                        never (a running container is not restarted)")
print(f"  Kubernetes default budget           {k8s_mean:6.2f} / {k8s_worst:6.2f}  (26 s mean / 31 s worst detection + {r:.2f} s measured restart)")
print(f"  ratio arasuld 2 s/k8s (mean)        {mean(tight)/k8s_mean:6.2f}")
print(f"  ratio arasuld shipped/k8s (mean)    {mean(shipped)/k8s_mean:6.2f}")
