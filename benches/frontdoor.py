#!/usr/bin/env python3
"""The front door's cost, side by side with the runtime reached directly
(its container address), in one run against the same test runtime:

- first streamed chunk: time to the first token of a streamed /api/chat,
  and how far each chunk lags the runtime's own schedule (tokens leave it
  every TOKEN_MS): a buffering proxy would bunch them up;
- added latency: GET /api/tags one at a time (p50/p95);
- throughput: GET /api/tags from 8 threads at once (requests/s).

Usage: frontdoor.py DIRECT_BASE PROXY_BASE KEY TOKEN_MS [N]
"""

import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

DIRECT, PROXY, KEY, TOKEN_MS = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
N = int(sys.argv[5]) if len(sys.argv) > 5 else 200


def conn(base):
    u = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30), u.path.rstrip("/")


def request(base, method, path, body=None, stream=False):
    c, prefix = conn(base)
    headers = {"Authorization": f"Bearer {KEY}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    c.request(method, prefix + path, body=body, headers=headers)
    return c, c.getresponse()


def chat_chunks(base):
    """(seconds to the first token chunk, lag of each chunk behind the
    runtime's schedule measured from the first)."""
    t0 = time.perf_counter()
    c, r = request(base, "POST", "/api/chat", {
        "model": "llama3.2:1b", "stream": True,
        "messages": [{"role": "user", "content": "Count slowly to twenty for me please"}],
    })
    assert r.status == 200, r.status
    arrivals = []
    while True:
        line = r.readline()
        if not line:
            break
        if line.strip() and not json.loads(line).get("done"):
            arrivals.append(time.perf_counter())
    c.close()
    first = arrivals[0] - t0
    lags = [(a - arrivals[0]) - i * TOKEN_MS / 1000 for i, a in enumerate(arrivals)]
    return first, lags


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def ms(x):
    return f"{x * 1000:.2f} ms"


def stream_figures(base, runs=30):
    firsts, lags = [], []
    for _ in range(runs):
        f, l = chat_chunks(base)
        firsts.append(f)
        lags.extend(l)
    return firsts, lags


def latency(base, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        c, r = request(base, "GET", "/api/tags")
        r.read()
        c.close()
        assert r.status == 200, r.status
        out.append(time.perf_counter() - t0)
    return out


def throughput(base, n, threads=8):
    done = [0]
    lock = threading.Lock()

    def worker():
        for _ in range(n // threads):
            c, r = request(base, "GET", "/api/tags")
            r.read()
            c.close()
            with lock:
                done[0] += 1

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return done[0] / (time.perf_counter() - t0)


# Warm both paths (connections, the key's first use).
latency(DIRECT, 5)
latency(PROXY, 5)
d_first, d_lags = stream_figures(DIRECT)
p_first, p_lags = stream_figures(PROXY)
d_lat = latency(DIRECT, N)
p_lat = latency(PROXY, N)
d_tp = throughput(DIRECT, N * 2)
p_tp = throughput(PROXY, N * 2)

print(f"{'':34} {'direct':>12} {'front door':>12} {'ratio':>7}")
rows = [
    ("first streamed chunk, p50", statistics.median(d_first), statistics.median(p_first)),
    ("first streamed chunk, p95", pct(d_first, 95), pct(p_first, 95)),
    ("chunk lag behind runtime, p95", pct(d_lags, 95), pct(p_lags, 95)),
    ("chunk lag behind runtime, max", max(d_lags), max(p_lags)),
    ("GET /api/tags latency, p50", statistics.median(d_lat), statistics.median(p_lat)),
    ("GET /api/tags latency, p95", pct(d_lat, 95), pct(p_lat, 95)),
]
for name, d, p in rows:
    print(f"{name:34} {ms(d):>12} {ms(p):>12} {p / d if d > 0 else float('nan'):>6.2f}x")
print(f"{'GET /api/tags, 8 threads':34} {d_tp:>9.0f}/s {p_tp:>9.0f}/s {p_tp / d_tp:>6.2f}x")
added = statistics.median(p_first) - statistics.median(d_first)
print(f"added to the first chunk by the front door (p50): {ms(added)}; "
      f"a chunk's extra lag (p95): {ms(pct(p_lags, 95) - pct(d_lags, 95))}")
