"""WebSocket fan-out: CLIENTS live-stream clients on /api/metrics/live-stream
for DURATION seconds. Each message is a sample with its `ts`; the delay of a
message is the time it arrived minus that `ts` (sampling to delivery). Prints
the delays' percentiles over every message of every client, the messages per
client, and the daemon's CPU over the window (from /proc)."""
import asyncio, json, os, statistics, sys, time
from datetime import datetime

import websockets

url, pid, clients, duration = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
tck = os.sysconf("SC_CLK_TCK")


def cpu_s():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tck


# Samples taken before the window (the one a client gets on connecting,
# and any still queued) are not counted.
window_start = [float("inf")]


async def client(delays, counts, i, connected, stop):
    async with websockets.connect(url, max_size=None, ping_interval=None, open_timeout=60) as ws:
        connected.release()
        n = 0
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.recv(), timeout=1)
            except asyncio.TimeoutError:
                continue
            now = time.time()
            ts = datetime.fromisoformat(json.loads(msg)["ts"].replace("Z", "+00:00")).timestamp()
            if ts >= window_start[0]:
                delays.append(now - ts)
                n += 1
        counts[i] = n


async def main():
    delays, counts = [], [0] * clients
    connected, stop = asyncio.Semaphore(0), asyncio.Event()
    tasks = [asyncio.create_task(client(delays, counts, i, connected, stop)) for i in range(clients)]
    for _ in range(clients):
        await connected.acquire()
    c0, t0 = cpu_s(), time.time()
    window_start[0] = t0
    await asyncio.sleep(duration)
    c1, t1 = cpu_s(), time.time()
    stop.set()
    await asyncio.gather(*tasks)
    return delays, counts, (c1 - c0) / (t1 - t0)


async def idle_cpu():
    c0, t0 = cpu_s(), time.time()
    await asyncio.sleep(duration)
    return (cpu_s() - c0) / (time.time() - t0)


idle = asyncio.run(idle_cpu())
delays, counts, busy = asyncio.run(main())
q = statistics.quantiles(sorted(delays), n=100)
print(f"{clients} clients for {duration:.0f} s: {len(delays)} messages, "
      f"{min(counts)}..{max(counts)} per client")
print(f"delay sampling→client ms: p50 {q[49]*1000:.1f}  p99 {q[98]*1000:.1f}  max {max(delays)*1000:.1f}")
print(f"daemon CPU (cores): no clients {idle:.4f}, {clients} clients {busy:.4f}")
