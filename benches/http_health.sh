#!/usr/bin/env bash
# The HTTP edge side by side, in one run on this machine: `wrk -t2 -c32 -d10s`
# against the release daemon's GET /api/health and against Debian's nginx
# serving the same JSON from a file, then the authenticated GET /api/auth/me.
# Rate limits are off for loopback (`http.rate_limit_exempt`), as a local
# benchmark needs; the security headers, body limit, Origin check and the
# rest of the edge stay on. The two servers run alternately, ROUNDS times
# each (default 2), and the best round of each is compared.
#
#   benches/http_health.sh            # DURATION=10 ROUNDS=2 (ARASULD_BIN=… to skip the build)
source "$(dirname "$0")/../scripts/lib.sh"
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-2}"

ensure_postgres
ensure_cmd wrk wrk
ensure_cmd nginx nginx-light
BIN="${ARASULD_BIN:-$(build_release)}"
bench_setup http
n_port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
bench_cleanup_extra() { [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; }

cat > "$work/arasuld.yaml" <<YAML
http:
  listen: 127.0.0.1:$port
  rate_limit_exempt: [127.0.0.0/8]
database:
  url: $BENCH_DB_URL
$(bench_paths)
logging:
  level: warn
YAML
bench_serve
token="$(bench_login "$(cat "$work/secrets/initial-admin-password")")"

# nginx: the same body, the same content type, the workers it would pick
# (they run as www-data: the served dir is world-readable).
chmod 755 "$work"
mkdir -p "$work/www/api" "$work/nginx"
curl -fsS "$base/api/health" > "$work/www/api/health"
cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$n_port;
    root $work/www;
    location = /api/health { default_type application/json; }
  }
}
NGINX
nginx -c "$work/nginx.conf"
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$n_port/api/health" >/dev/null && break; sleep 0.1; done
cmp -s <(curl -fsS "http://127.0.0.1:$n_port/api/health") "$work/www/api/health" \
  || { log "nginx does not serve the JSON"; exit 1; }

# Requests per second, p99 latency in ms and non-2xx answers of one wrk run.
run_wrk() {
  wrk -t2 -c32 -d"${DURATION}s" --latency "$@" 2>&1 | python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", t)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {p99:.2f} {bad.group(1) if bad else 0}")'
}
best() { sort -n -k1 | tail -1; }
a_runs=""; n_runs=""; m_runs=""
for _ in $(seq 1 "$ROUNDS"); do
  n_runs+="$(run_wrk "http://127.0.0.1:$n_port/api/health")"$'\n'
  a_runs+="$(run_wrk "$base/api/health")"$'\n'
  m_runs+="$(run_wrk -H "Authorization: Bearer $token" "$base/api/auth/me")"$'\n'
done
read -r n_rps n_p99 n_bad <<<"$(printf '%s' "$n_runs" | best)"
read -r a_rps a_p99 a_bad <<<"$(printf '%s' "$a_runs" | best)"
read -r m_rps m_p99 m_bad <<<"$(printf '%s' "$m_runs" | best)"
printf '%-34s %10s %9s %8s\n' "wrk -t2 -c32 -d${DURATION}s, best of $ROUNDS" req/s p99_ms non-2xx
printf '%-34s %10s %9s %8s\n' "nginx, the same JSON from a file" "$n_rps" "$n_p99" "$n_bad"
printf '%-34s %10s %9s %8s\n' "arasuld GET /api/health" "$a_rps" "$a_p99" "$a_bad"
printf '%-34s %10s %9s %8s\n' "arasuld GET /api/auth/me (token)" "$m_rps" "$m_p99" "$m_bad"
python3 -c "print(f'ratio arasuld/nginx on /api/health: {$a_rps / $n_rps:.2f}')"
[ "$a_bad" = 0 ] && [ "$m_bad" = 0 ] || { log "some answers were not 2xx"; exit 1; }
