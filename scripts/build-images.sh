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
if [ "$profile" = dev ]; then
  # The tests' images. quayside: examples/quayside-static.rs (the same program) linked
  # statically in the ordinary target directory, so it reuses what `cargo test` compiled
  # rather than building every dependency again (BENCHMARKS.md, "Clean cargo test").
  cargo rustc --profile dev --quiet -p quayside --example quayside-static \
    -- -C target-feature=+crt-static
  quayside_bin="${CARGO_TARGET_DIR:-target}/debug/examples/quayside-static"
  # whoami is std-only: seconds, in a directory of static builds of its own. (Without
  # incremental state or debug info, as tests/common/docker.rs builds it: one shared build.)
  CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=false RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --profile dev --quiet --target "$target" --target-dir target-static -p whoami
else
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile "$profile" --quiet \
    --target "$target" --target-dir target-static -p quayside -p whoami
  quayside_bin="target-static/$target/$dir/quayside"
fi
# (A scratch image has no libc: a dynamic binary would not start in it.)
ldd "$quayside_bin" 2>&1 | grep -q -E 'statically linked|not a dynamic' \
  || { echo "build-images.sh: $quayside_bin is not statically linked" >&2; exit 2; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$quayside_bin" "$ctx/quayside"
cp "target-static/$target/$dir/whoami" docker/Dockerfile.local "$ctx/"
# The CA roots the quayside image carries (automatic HTTPS talks to a public CA over HTTPS).
roots=/etc/ssl/certs/ca-certificates.crt
[ -s "$roots" ] || { echo "build-images.sh: $roots is missing; apt-get install -y ca-certificates" >&2; exit 2; }
cp "$roots" "$ctx/ca-certificates.crt"
echo "== building images $quayside_image and $whoami_image"
docker build -q --target quayside -t "$quayside_image" -f "$ctx/Dockerfile.local" "$ctx" >/dev/null
docker build -q --target whoami -t "$whoami_image" -f "$ctx/Dockerfile.local" "$ctx" >/dev/null
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$quayside_image"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$whoami_image"
