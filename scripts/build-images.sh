#!/usr/bin/env bash
# Build the quayside:local and quayside-whoami:local images without pulling anything:
# static binaries are compiled on the host, then copied into FROM scratch images.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --quiet \
  --target "$target" --target-dir target-static -p quayside -p whoami
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "target-static/$target/release/quayside" "target-static/$target/release/whoami" docker/Dockerfile.local "$ctx/"
docker build -q --target quayside -t quayside:local -f "$ctx/Dockerfile.local" "$ctx" >/dev/null
docker build -q --target whoami -t quayside-whoami:local -f "$ctx/Dockerfile.local" "$ctx" >/dev/null
docker images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^quayside(-whoami)?:local'
