"""Start to READY=1: spawns the daemon RUNS times with NOTIFY_SOCKET set to a
datagram socket of ours (as systemd does for Type=notify), times each start
until READY=1 arrives, then stops it (SIGTERM) and waits for it to exit."""
import os, socket, statistics, subprocess, sys, tempfile, time

binary, config, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = []
with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    env = dict(os.environ, NOTIFY_SOCKET=path)
    for _ in range(runs):
        t0 = time.monotonic()
        p = subprocess.Popen([binary, "--config", config, "serve"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            msg = sock.recv(4096).decode()
            if "READY=1" in msg.split("\n"):
                times.append(time.monotonic() - t0)
                break
        p.terminate()
        p.wait(timeout=30)
print(f"start to READY=1 over {runs} starts (ms): mean {statistics.mean(times)*1000:.1f}  "
      f"min {min(times)*1000:.1f}  max {max(times)*1000:.1f}")
