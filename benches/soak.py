"""Soak: MINUTES minutes of steady use while RSS and open FDs of the daemon
are sampled once a minute. Each second: GET /api/health, /api/system/status,
/metrics and an authenticated /api/auth/me; each minute a login and logout;
five live-stream clients throughout. Growth is measured from minute 5 on."""
import asyncio, json, os, sys, time, urllib.request

import websockets

base, pid, minutes, password = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def req(path, token=None, body=None, method=None):
    r = urllib.request.Request(base + path, method=method,
                               data=json.dumps(body).encode() if body is not None else None)
    if body is not None:
        r.add_header("Content-Type", "application/json")
    if token:
        r.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(r, timeout=10) as resp:
        return resp.read()


def login():
    return json.loads(req("/api/auth/login", body={"username": "admin", "password": password}))["token"]


def probe():
    rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def live(stop):
    async with websockets.connect(base.replace("http", "ws") + "/api/metrics/live-stream") as ws:
        while not stop.is_set():
            try:
                await asyncio.wait_for(ws.recv(), timeout=1)
            except asyncio.TimeoutError:
                pass


async def main():
    stop = asyncio.Event()
    streams = [asyncio.create_task(live(stop)) for _ in range(5)]
    token = await asyncio.to_thread(login)
    rows, start = [], time.monotonic()
    for minute in range(minutes + 1):
        rows.append((minute, *probe()))
        print(f"minute {minute:3d}: RSS {rows[-1][1] / 1024:6.1f} MiB, {rows[-1][2]} fds", flush=True)
        if minute == minutes:
            break
        for s in range(60):
            for path in ("/api/health", "/api/system/status", "/metrics"):
                await asyncio.to_thread(req, path)
            await asyncio.to_thread(req, "/api/auth/me", token)
            await asyncio.sleep(max(0, start + minute * 60 + s + 1 - time.monotonic()))
        await asyncio.to_thread(req, "/api/auth/logout", token, {}, "POST")
        token = await asyncio.to_thread(login)
    stop.set()
    await asyncio.gather(*streams)
    at5 = rows[min(5, len(rows) - 1)]
    end = rows[-1]
    print(f"growth from minute {at5[0]} to {end[0]}: RSS {100 * (end[1] - at5[1]) / at5[1]:+.2f} %, "
          f"fds {at5[2]} → {end[2]} (goal: < 2 %)")


asyncio.run(main())
