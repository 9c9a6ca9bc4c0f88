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
trap 'kill ${QPID:-} ${PPID_:-} ${DPID:-} 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
cd "$work"
# pebble's own HTTPS (a CA of this script's, which --acme-ca-cert trusts), and a self-signed
# certificate of the operator's for own.test.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=bench pebble CA" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
  -keyout api.key -out api.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >api.ext
openssl x509 -req -in api.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
  -extfile api.ext -out api.pem 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=own.test" -addext "subjectAltName=DNS:own.test" -keyout own.key -out own.pem 2>/dev/null
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
  --acme-directory https://127.0.0.1:14300/dir --acme-ca-cert ca.pem 2>quayside.log &
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
# Full TLS 1.3 handshakes by SNI name, one after another, from Python's ssl (not verified:
# the figure is quayside's side of it).
handshakes() { # NAME -> count
  python3 - "$1" "$SECONDS_EACH" <<'PY'
import socket, ssl, sys, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
n, end = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    with socket.create_connection(("127.0.0.1", 18343)) as s:
        with ctx.wrap_socket(s, server_hostname=sys.argv[1]) as t:
            assert t.getpeercert(binary_form=True)
    n += 1
print(n)
PY
}
for name in own.test first.test; do
  before=$(cpu)
  n=$(handshakes $name)
  after=$(cpu)
  python3 -c "
n, ticks = $n, $after - $before
src = '$([ $name = own.test ] && echo --tls-cert || echo acme)'
print(f'$name ({src}): {n / $SECONDS_EACH:.0f} handshakes/s (one client), {ticks / $tick / n * 1e6:.0f} us quayside CPU per handshake')"
done
