#!/usr/bin/env bash
# Fuzzes a running quayside's admin API from its own OpenAPI document with Schemathesis:
# every answer must be documented (status, content type, headers, body schema) and none may
# be a 5xx. Starts quayside itself (--no-docker, an admin token, a state file of its own),
# adds a few backends so the routes have something to work on, and stops it at the end.
#   pip install schemathesis; scripts/fuzz-admin.sh [extra schemathesis options]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --bin quayside
dir=$(mktemp -d)
token=fuzz-$RANDOM$RANDOM
read -r proxy_port admin_port < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
admin=http://127.0.0.1:$admin_port
target/debug/quayside --no-docker --listen 127.0.0.1:$proxy_port --admin-listen 127.0.0.1:$admin_port \
  --admin-token "$token" --state "$dir/state.json" >"$dir/quayside.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 100); do curl -fs "$admin/readyz" >/dev/null && break; sleep 0.1; done
auth=(-H "Authorization: Bearer $token")
curl -fs "${auth[@]}" "$admin/add?no=a1&ip=127.0.0.1&port=9001" >/dev/null
curl -fs "${auth[@]}" "$admin/add?no=a2&ip=127.0.0.1&port=9002&service=web" >/dev/null
curl -fs "${auth[@]}" -X PUT -d '{"hosts":["web.example"],"health":{"path":"/health","interval":"1s"}}' \
  "$admin/api/v1/services/web" >/dev/null
# The event stream never ends, so it is left out (tests/events.rs covers it).
status=0
# (From the work directory: Schemathesis keeps a cache where it runs.)
(cd "$dir" && schemathesis run "$admin/api/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --exclude-path /api/v1/events \
  --max-examples "${FUZZ_EXAMPLES:-50}" \
  --no-color "$@") || status=$?
if ! kill -0 $pid 2>/dev/null; then
  echo "quayside died during the fuzzing:"; cat "$dir/quayside.log"; exit 1
fi
if grep -q -i panick "$dir/quayside.log"; then
  echo "quayside panicked during the fuzzing:"; grep -i -A5 panick "$dir/quayside.log"; exit 1
fi
exit $status
