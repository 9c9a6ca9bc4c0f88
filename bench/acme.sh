#!/usr/bin/env bash
# Automatic HTTPS (issue 20) against a local pebble: how long from a service's host name
# appearing to its certificate being served (one name, then NAMES at once), and TLS handshakes
# per second and quayside's CPU per handshake with a certificate obtained by ACME beside one
# given with --tls-cert (openssl s_time, full handshakes, one client).
# Needs: pebble (apt-get install -y pebble), openssl, curl, python3; run by hand:
#   bash bench/acme.sh        (NAMES=20 SECONDS_EACH=10 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
NAMES=${NAMES:-20}
SECONDS_EACH=${SECONDS_EACH:-10}
work=$(mktemp -d /tmp/quayside-acme-XXXX)
trap 'kill ${QPID:-} ${PPID_:-} ${DPID:-} 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
cd "$work"
# pebble's own HTTPS (self-signed: also what --acme-ca-cert trusts), and a certificate of the
# operator's for own.test.
for n in api own; do
  cn=$([ $n = api ] && echo 127.0.0.1 || echo own.test)
  san=$([ $n = api ] && echo IP:127.0.0.1 || echo DNS:own.test)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=$cn" -addext "subjectAltName=$san" -keyout $n.key -out $n.pem 2>/dev/null
done
cat >pebble.json <<EOF
{"pebble": {"listenAddress": "127.0.0.1:14300", "managementListenAddress": "127.0.0.1:15300",
 "certificate": "$work/api.pem", "privateKey": "$work/api.key", "httpPort": 18380,
 "tlsPort": 18343, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF
pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" -dns01 127.0.0.1:18353 -http01 "" \
  -https01 "" -tlsalpn01 "" -management 127.0.0.1:18355 >dns.log 2>&1 &
DPID=$!
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config pebble.json \
  -dnsserver 127.0.0.1:18353 >pebble.log 2>&1 &
PPID_=$!
"$OLDPWD/target/release/quayside" --no-docker --workers 2 --listen 127.0.0.1:18380 \
  --tls-listen 127.0.0.1:18343 --admin-listen 127.0.0.1:18301 --state "$work/state.json" \
  --tls-cert own.pem --tls-key own.key --acme-email bench@quayside.test \
  --acme-directory https://127.0.0.1:14300/dir --acme-ca-cert api.pem 2>quayside.log &
QPID=$!
for _ in $(seq 1 50); do curl -s -o /dev/null 127.0.0.1:18301/readyz && break; sleep 0.2; done
for _ in $(seq 1 50); do curl -sk -o /dev/null https://127.0.0.1:14300/dir && break; sleep 0.2; done

# Seconds until every name in $@ is valid (polled every 20 ms).
until_valid() {
  python3 - "$@" <<'PY'
import json, sys, time, urllib.request
names, start = set(sys.argv[1:]), time.monotonic()
while time.monotonic() - start < 120:
    v = json.load(urllib.request.urlopen("http://127.0.0.1:18301/api/v1/tls"))
    valid = {n["name"] for n in v["names"] if n["state"] == "valid"}
    if names <= valid:
        print(f"{time.monotonic() - start:.2f}"); sys.exit(0)
    time.sleep(0.02)
print("timeout"); sys.exit(1)
PY
}
put() { curl -fsS -X PUT "127.0.0.1:18301/api/v1/services/$1" -d "$2" >/dev/null; }

put one '{"hosts": ["first.test"]}'
echo "one name: certificate served after $(until_valid first.test) s (account created too)"
hosts=$(python3 -c "import json; print(json.dumps(['n%d.test' % i for i in range($NAMES)]))")
put many "{\"hosts\": $hosts}"
echo "$NAMES names at once: all served after $(until_valid $(seq -f 'n%g.test' 0 $((NAMES - 1)))) s"

cpu() { awk '{print $14 + $15}' /proc/$QPID/stat; }
tick=$(getconf CLK_TCK)
for name in own.test first.test; do
  before=$(cpu)
  out=$(openssl s_time -connect 127.0.0.1:18343 -servername $name -new -time "$SECONDS_EACH" 2>/dev/null | grep "connections in" | head -1)
  after=$(cpu)
  conns=$(echo "$out" | awk '{print $1}')
  python3 -c "
conns, ticks = int('$conns'), $after - $before
print(f'$name ($([ $name = own.test ] && echo --tls-cert || echo acme)): {conns / $SECONDS_EACH:.0f} handshakes/s, {ticks / $tick / conns * 1e6:.0f} us quayside CPU per handshake')"
done
