#!/usr/bin/env bash
# Build every plugin as a WebAssembly component (wasm32-wasip2, release, size-optimised)
# and copy the results to plugins/dist/<name>.wasm.
#
# Each plugin is built on its own (`-p`), because the SDK's `storage` and `policy`
# features select one world each and must not be unified across plugins.
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
mkdir -p dist
for crate in local retention faults faults-policy s3 abs oss gcs; do
  cargo build --quiet --release --target wasm32-wasip2 -p "etcd-plugin-$crate"
  cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/etcd_plugin_${crate//-/_}.wasm" "dist/$crate.wasm"
done
./check-size.sh
