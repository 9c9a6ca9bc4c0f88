#!/usr/bin/env bash
# Build the quayside and whoami images without pulling anything: static binaries are compiled
# on the host, then copied into FROM scratch images. Each step says what it does and how long
# it took; cargo shows its progress.
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
started=$(date +%s)
step_started=$started
# `step NAME`: the previous step's time, then the next one's name.
step() {
  local now
  now=$(date +%s)
  if [ -n "${step_name:-}" ]; then
    echo "   ($step_name: $((now - step_started)) s)"
  fi
  step_name=$1
  step_started=$now
  echo "== $1"
}
if [ "$profile" = dev ]; then
  step "compiling static quayside (dev profile)"
  # The tests' images. quayside: examples/quayside-static.rs (the same program) linked
  # statically in the ordinary target directory, so it reuses what `cargo test` compiled
  # rather than building every dependency again (BENCHMARKS.md, "Clean cargo test").
  cargo rustc --profile dev -p quayside --example quayside-static \
    -- -C target-feature=+crt-static
  quayside_bin="${CARGO_TARGET_DIR:-target}/debug/examples/quayside-static"
  step "compiling static whoami (dev profile)"
  # whoami is std-only: seconds, in a directory of static builds of its own. (Without
  # incremental state or debug info, as tests/common/docker.rs builds it: one shared build.)
  CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=false RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --profile dev --target "$target" --target-dir target-static -p whoami
else
  step "compiling static quayside and whoami (release profile)"
  # (One link-time-optimised unit of quayside and every crate it uses, as [profile.release]
  # says: most of the time goes there. BENCHMARKS.md, "Image build".)
  echo "   (about 5 minutes on 2 cores the first time, plus the crates' download; seconds after)"
  RUSTFLAGS='-C target-feature=+crt-static' cargo build --profile "$profile" \
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
step "building images $quayside_image and $whoami_image"
# Both builds' messages, each said once (the Docker CLI repeats its legacy-builder notice for
# every build); all of them if a build fails.
build() {
  docker build -q --target "$1" -t "$2" -f "$ctx/Dockerfile.local" "$ctx" >/dev/null 2>>"$ctx/build.err" \
    || { cat "$ctx/build.err" >&2; exit 1; }
}
build quayside "$quayside_image"
build whoami "$whoami_image"
awk 'NF && !seen[$0]++' "$ctx/build.err" >&2
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$quayside_image"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$whoami_image"
echo "   ($step_name: $(($(date +%s) - step_started)) s)"
echo "== done in $(($(date +%s) - started)) s"
