#!/usr/bin/env bash
# Build the quayside and whoami images without pulling anything: static binaries are compiled
# on the host, then copied into FROM scratch images.
#
#   QUAYSIDE_IMAGE  tag of the quayside image     (default quayside:local)
#   WHOAMI_IMAGE    tag of the whoami image       (default quayside-whoami:local)
#   PROFILE         cargo profile: release or dev (default release; dev builds in a fraction
#                   of the time and is what the tests use)
set -euo pipefail
cd "$(dirname "$0")/.."
quayside_image=${QUAYSIDE_IMAGE:-quayside:local}
whoami_image=${WHOAMI_IMAGE:-quayside-whoami:local}
profile=${PROFILE:-release}
case "$profile" in
  release) dir=release ;;
  dev) dir=debug ;;
  *) echo "build-images.sh: PROFILE must be release or dev, got '$profile'" >&2; exit 2 ;;
esac
target=x86_64-unknown-linux-gnu
echo "== compiling static quayside and whoami ($profile profile; the first release build takes a few minutes)"
# (A dev build for the tests' images is built once from scratch: without incremental state
# or debug info it takes ~15 % less time; BENCHMARKS.md, "Automatic HTTPS".)
if [ "$profile" = dev ]; then export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=false; fi
RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile "$profile" --quiet \
  --target "$target" --target-dir target-static -p quayside -p whoami
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "target-static/$target/$dir/quayside" "target-static/$target/$dir/whoami" docker/Dockerfile.local "$ctx/"
# The CA roots the quayside image carries (automatic HTTPS talks to a public CA over HTTPS).
roots=/etc/ssl/certs/ca-certificates.crt
[ -s "$roots" ] || { echo "build-images.sh: $roots is missing; apt-get install -y ca-certificates" >&2; exit 2; }
cp "$roots" "$ctx/ca-certificates.crt"
echo "== building images $quayside_image and $whoami_image"
docker build -q --target quayside -t "$quayside_image" -f "$ctx/Dockerfile.local" "$ctx" >/dev/null
docker build -q --target whoami -t "$whoami_image" -f "$ctx/Dockerfile.local" "$ctx" >/dev/null
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$quayside_image"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$whoami_image"
