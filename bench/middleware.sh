#!/usr/bin/env bash
# Middlewares' cost beside nginx doing the same (issue 20): requests/s and CPU per request
# through quayside and nginx (2 workers each), with no middleware, with a rate limit no
# request reaches (limit_req), and with gzip compression of a 16 KiB HTML page. wrk on
# loopback, 64 connections (wrk replaces its own Host only when given as `Host:`, capitalised);
# the proxies' CPU is read from /proc (user + system). nginx's CPU includes its backend: the
# backend is a server block of the same nginx.
# Needs: wrk, nginx (apt-get install -y wrk nginx-extras), curl, python3; run by hand:
#   bash bench/middleware.sh        (ROUNDS=3 DURATION=10s CONNS=64 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
work=$(mktemp -d /tmp/quayside-mw-XXXX)
mkdir -p "$work/logs" "$work/www"
chmod 755 "$work" "$work/www"  # (nginx's workers run as nobody)
trap 'kill ${NPID:-} ${QPID:-} 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
python3 -c '
import random, sys
random.seed(7)
words = "quay side proxy docker label service backend route table health pool".split()
body = " ".join(random.choice(words) for _ in range(3000))
html = "<html><body><p>" + body + "</p></body></html>\n"
open(sys.argv[1], "w").write(html[:16384].ljust(16384))
' "$work/www/page"

chmod 644 "$work/www/page"
cargo build --release --quiet
nginx -c "$PWD/bench/conf/nginx-middleware.conf" -p "$work/" &
NPID=$!
./target/release/quayside --no-docker --workers 2 --listen 127.0.0.1:18280 \
  --admin-listen 127.0.0.1:18201 --state "$work/state.json" 2>"$work/quayside.log" &
QPID=$!
for _ in $(seq 1 50); do curl -s -o /dev/null 127.0.0.1:18201/readyz && break; sleep 0.2; done
put() { curl -fsS -X PUT "127.0.0.1:18201/api/v1/services/$1" -d "$2" >/dev/null; }
put plain '{"hosts": ["plain.test"]}'
put limited '{"hosts": ["limited.test"], "rate_limit": {"average": 1000000, "burst": 1000000}}'
put gz '{"hosts": ["gz.test"], "compress": true}'
for s in plain limited gz; do
  curl -fsS "127.0.0.1:18201/add?no=$s&ip=127.0.0.1&port=18281&service=$s" >/dev/null
done
# Check that each does what it says before measuring.
curl -fsS -H 'host: gz.test' -H 'accept-encoding: gzip' -D - -o /dev/null 127.0.0.1:18280/page \
  | grep -qi 'content-encoding: gzip' || { echo "quayside did not compress"; exit 1; }
curl -fsS -H 'accept-encoding: gzip' -D - -o /dev/null 127.0.0.1:18292/page \
  | grep -qi 'content-encoding: gzip' || { echo "nginx did not compress"; exit 1; }

ticks() { # PID: user+system ticks of it (all threads) and its children (nginx's workers)
  local t
  t=$(awk '{print $14 + $15}' "/proc/$1/stat")
  for c in $(pgrep -P "$1" || true); do t=$((t + $(awk '{print $14 + $15}' "/proc/$c/stat"))); done
  echo "$t"
}
run() { # NAME PID URL [HEADER]
  local name=$1 pid=$2 url=$3 hdr=${4:-x-none: 1} host=${5:-127.0.0.1}
  local t0 t1 out n rps
  t0=$(ticks "$pid")
  out=$(wrk -t1 -c"$CONNS" -d"$DURATION" -H "$hdr" -H "Host: $host" "$url")
  t1=$(ticks "$pid")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  printf "%-28s %10s req/s  %6.1f us CPU/req  non-2xx: %s\n" "$name" "$rps" \
    "$(awk -v a="$t0" -v b="$t1" -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN {print (b - a) / hz * 1e6 / n}')" \
    "${non2xx:-0}"
}
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  run "quayside none" "$QPID" "http://127.0.0.1:18280/" "x-none: 1" plain.test
  run "nginx none" "$NPID" "http://127.0.0.1:18290/"
  run "quayside rate_limit" "$QPID" "http://127.0.0.1:18280/" "x-none: 1" limited.test
  run "nginx limit_req" "$NPID" "http://127.0.0.1:18291/"
  run "quayside compress (gzip)" "$QPID" "http://127.0.0.1:18280/page" "accept-encoding: gzip" gz.test
  run "nginx gzip" "$NPID" "http://127.0.0.1:18292/page" "accept-encoding: gzip"
  run "quayside 16 KiB, no gzip" "$QPID" "http://127.0.0.1:18280/page" "x-none: 1" plain.test
  run "nginx 16 KiB, no gzip" "$NPID" "http://127.0.0.1:18290/page"
done
echo "quayside RSS after: $(awk '/VmRSS/ {print $2, $3}' /proc/$QPID/status)"
