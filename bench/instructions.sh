#!/usr/bin/env bash
# User-space instructions per proxied request, by callgrind: repeatable whatever else the
# machine is doing (unlike req/s on this noisy 2-core box). One worker, one keepalive client
# sending N requests in sequence to the two nginx backends of bench/nginx-backend.conf; the
# per-request figure is (total at 2,500 requests - total at 500) / 2,000, which cancels
# start-up. Also for nginx with bench/conf/nginx-static.conf (one worker, no master).
#
# CLIENT=h2c measures quayside alone with an HTTP/2 client instead (h2load, prior knowledge,
# one connection, one stream at a time). IDLE=1 measures what quayside does per second with
# no requests at all (the stats sampler, timers): (total after 25 s - total after 5 s) / 20;
# IDLE_BACKENDS=N adds N more entries first.
# That per-second work is also inside the per-request figures, in proportion to how long
# the runs take under valgrind (the h2c runs take longest).
#
# Needs: valgrind, nginx (apt-get install -y valgrind nginx-extras), python3, curl, and
# `cargo build --release` (h2c: nghttp2-client). Run: bash bench/instructions.sh
# (QUAYSIDE_BIN=path measures another build)
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/quayside-instr-XXXX)
mkdir -p "$work/logs"
nginx -c "$PWD/bench/nginx-backend.conf" -p "$work/" >/dev/null 2>&1 &
backends=$!
trap 'kill $backends 2>/dev/null; pkill -f "$work" 2>/dev/null; true' EXIT
sleep 0.5

requests() { # PORT N
  if [ "${CLIENT:-}" = h2c ]; then
    h2load -n "$2" -c1 -m1 "http://127.0.0.1:$1/" >/dev/null
    return
  fi
  python3 - "$1" "$2" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    c.request("GET", "/"); r = c.getresponse(); r.read()
PY
}
wait_port() { for _ in $(seq 1 100); do curl -s -o /dev/null "127.0.0.1:$1/" && return; sleep 0.3; done; }

quayside() { # N -> total instructions
  local out="$work/q.$1"
  valgrind --tool=callgrind --callgrind-out-file="$out" "${QUAYSIDE_BIN:-target/release/quayside}" --no-docker \
    --workers 1 --listen 127.0.0.1:18900 --admin-listen 127.0.0.1:18901 \
    --state "$work/q$1.json" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do curl -s -o /dev/null 127.0.0.1:18901/healthz && break; sleep 0.3; done
  curl -s -o /dev/null "127.0.0.1:18901/add?no=1&ip=127.0.0.1&port=18081"
  curl -s -o /dev/null "127.0.0.1:18901/add?no=2&ip=127.0.0.1&port=18082"
  if [ -n "${IDLE:-}" ]; then
    # (IDLE_BACKENDS more entries in 10 services, added before the measured span.)
    python3 - "${IDLE_BACKENDS:-0}" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", 18901)
for i in range(int(sys.argv[1])):
    c.request("GET", f"/add?no=i{i}&ip=127.0.0.1&port={20000 + i}&service=s{i % 10}"); c.getresponse().read()
PY
    sleep "$1"
  else
    requests 18900 "$1"
  fi
  kill -INT $pid; wait $pid || true
  grep '^summary' "$out" | awk '{print $2}'
}

if [ -n "${IDLE:-}" ]; then
  i1=$(quayside 5); i2=$(quayside 25)
  echo "quayside idle: $(( (i2 - i1) / 20 )) instructions per second ($(( ${IDLE_BACKENDS:-0} + 2 )) backends)"
  exit 0
fi

nginx_static() { # N -> total instructions
  local out="$work/n.$1"
  sed 's/worker_processes 2;/worker_processes 1;\nmaster_process off;/; s/18580/18910/; s/nginx-static.pid/instr.pid/' \
    bench/conf/nginx-static.conf > "$work/n.conf"
  valgrind --tool=callgrind --callgrind-out-file="$out" nginx -c "$work/n.conf" -p "$work/" >/dev/null 2>&1 &
  local pid=$!
  wait_port 18910
  requests 18910 "$1"
  kill -QUIT $pid; wait $pid || true
  grep '^summary' "$out" | awk '{print $2}'
}

q1=$(quayside 500); q2=$(quayside 2500)
echo "quayside: $(( (q2 - q1) / 2000 )) instructions per request (user space${CLIENT:+, $CLIENT client})"
[ "${CLIENT:-}" = h2c ] && exit 0
n1=$(nginx_static 500); n2=$(nginx_static 2500)
echo "nginx-static: $(( (n2 - n1) / 2000 )) instructions per request (user space)"
