#!/usr/bin/env bash
# One of two backends hangs (issue 31): two nginx backends (one process each), quayside in
# front with the default strategy, 16 closed-loop clients (wrk -c16). Requests per second for
# 8 s before, then for the 8 s right after `kill -STOP` of one backend (the kernel still
# accepts its connections; nothing answers), then for 8 s more; then SIGCONT and how long
# until the stopped backend serves again (let back by a check).
# Target: the 8 s after the stop keep >= 80 % of the rate before.
# Needs: nginx, wrk, curl, python3, `cargo build --release`. Run by hand:
#   bash bench/hung_backend.sh     (QUAYSIDE_BIN=path for another build, LB=p2c for a strategy)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/quayside-hung-XXXX)
pids=()
trap 'kill -CONT ${pids[@]:-} 2>/dev/null; kill ${pids[@]:-} 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
for port in 18081 18082; do
  cat >"$work/n$port.conf" <<CONF
worker_processes 1;
master_process off;
daemon off;
pid $work/n$port.pid;
error_log /dev/null;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$port; location / { return 200 "$port\n"; } }
}
CONF
  nginx -c "$work/n$port.conf" -p "$work/" >/dev/null 2>&1 &
  pids+=($!)
done
stopped=${pids[1]}
"${QUAYSIDE_BIN:-target/release/quayside}" --no-docker --listen 127.0.0.1:18900 \
  --admin-listen 127.0.0.1:18901 --state "$work/state.json" >"$work/q.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -s -o /dev/null 127.0.0.1:18901/healthz && break; sleep 0.2; done
if [ -n "${LB:-}" ]; then
  curl -s -o /dev/null -X PUT -d "{\"lb\": \"$LB\"}" 127.0.0.1:18901/api/v1/services/default
fi
curl -s -o /dev/null "127.0.0.1:18901/add?no=a&ip=127.0.0.1&port=18081"
curl -s -o /dev/null "127.0.0.1:18901/add?no=b&ip=127.0.0.1&port=18082"
load() { # label
  wrk -t2 -c16 -d8s --timeout 10s http://127.0.0.1:18900/ >"$work/wrk" 2>&1
  local rps non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk")
  printf '%-28s %10s req/s  non-2xx: %s  %s\n' "$1" "$rps" "${non2xx:-0}" \
    "$(grep -o 'Socket errors.*' "$work/wrk" || true)" >&2
  echo "$rps"
}
wrk -t2 -c16 -d3s http://127.0.0.1:18900/ >/dev/null # warm-up
before=$(load "before")
( sleep 0.2; kill -STOP "$stopped" ) &
after=$(load "first 8 s after the stop")
load "next 8 s, still stopped" >/dev/null
python3 -c "print(f'after/before: {float($after)/float($before)*100:.1f} %')"
kill -CONT "$stopped"
t0=$(date +%s.%N)
# Until a request through quayside is answered by b again (nginx answers with its port).
back=""
for _ in $(seq 1 1200); do
  if [ "$(curl -s -m 1 127.0.0.1:18900/)" = 18082 ]; then back=1; break; fi
  sleep 0.05
done
[ -n "$back" ] || echo "b not back within 60 s"
python3 -c "print(f'back in rotation {float($(date +%s.%N)) - $t0:.2f} s after SIGCONT')"
grep -E "answered nothing|ejected|answers a check" "$work/q.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-220 | head -8
