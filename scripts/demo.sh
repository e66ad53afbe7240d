#!/usr/bin/env bash
# The main job on its embedded default: build the operator and its reference
# plugins, then run the plugin conformance kit against them.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"
"$ROOT/plugins/build.sh" >/dev/null
cargo build --quiet --release
op="$CARGO_TARGET_DIR/release/etcd-operator"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
"$op" plugin inspect plugins/dist/local.wasm
"$op" plugin test plugins/dist/local.wasm --dir "$dir"
"$op" plugin test plugins/dist/retention.wasm --config keep-last=3 --config keep-daily=7
