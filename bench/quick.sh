#!/usr/bin/env bash
# Quick core benchmark: backend direct vs through quayside (wrk, loopback), quayside CPU per
# request and RSS, and the admin API's /add rate with persistence on.
# Needs: wrk, nginx (apt-get install -y wrk nginx-extras). Run by hand: bash bench/quick.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
PROXY=127.0.0.1:18080
ADMIN=127.0.0.1:18001
work=$(mktemp -d)
cleanup() {
  [ -n "${QPID:-}" ] && kill "$QPID" 2>/dev/null || true
  [ -n "${NPID:-}" ] && kill "$NPID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet
nginx -c "$PWD/bench/nginx-backend.conf" -p "$work" &
NPID=$!
./target/release/quayside --no-docker --listen $PROXY --admin-listen $ADMIN \
  --state "$work/state.json" 2>"$work/quayside.log" &
QPID=$!
sleep 1
curl -fsS "http://$ADMIN/add?no=1&ip=127.0.0.1&port=18081" >/dev/null
curl -fsS "http://$ADMIN/add?no=2&ip=127.0.0.1&port=18082" >/dev/null

rps() { wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$1" | tee -a "$work/wrk.log" | awk '/Requests\/sec/ {print $2}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$QPID/stat"; }
reqs() { awk '/requests in/ {n=$1} END {print n}' "$work/wrk.log"; }

echo "round direct_rps quayside_rps ratio quayside_us_cpu_per_req"
for r in $(seq 1 "$ROUNDS"); do
  d=$(rps "http://127.0.0.1:18081/")
  : >"$work/wrk.log"
  t0=$(cpu_ticks)
  q=$(rps "http://$PROXY/")
  t1=$(cpu_ticks)
  n=$(reqs)
  hz=$(getconf CLK_TCK)
  us=$(awk -v a="$t0" -v b="$t1" -v n="$n" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz * 1e6 / n}')
  echo "$r $d $q $(awk -v d="$d" -v q="$q" 'BEGIN {printf "%.2f", q / d}') $us"
done
echo "quayside RSS after load: $(awk '/VmRSS/ {print $2, $3}' /proc/$QPID/status)"

# Admin API: /add with the state file on (every OK is durable).
out=$(wrk -t1 -c16 -d5s -s bench/add.lua "http://$ADMIN/")
echo "admin /add with persistence: $(echo "$out" | awk '/Requests\/sec/ {print $2}') req/s; errors: $(echo "$out" | grep -c 'Non-2xx' || true)"
echo "backends registered: $(curl -fsS "http://$ADMIN/api/v1/backends" | grep -o '"no"' | wc -l)"
