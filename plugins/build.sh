#!/usr/bin/env bash
# Build every plugin as a WebAssembly component (wasm32-wasip2, release, size-optimised).
#
# plugins/dist/<name>.wasm      the plugins the operator ships (the image, the demo)
# plugins/test-dist/<name>.wasm what the tests load: the shipped plugins (links
#                               into dist/) and the test-only fault injectors,
#                               which must never reach an operator's plugin directory
#
# Each plugin is built on its own (`-p`), because the SDK's `storage` and `policy`
# features select one world each and must not be unified across plugins.
#
# With names (`plugins/build.sh local`), builds only those shipped plugins into
# dist/ and leaves the rest as they are: what scripts/demo.sh needs.
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
shipped=(local retention s3 abs oss gcs)
test_only=(faults faults-policy)
build() {
  cargo build --quiet --release --target wasm32-wasip2 -p "etcd-plugin-$1"
  cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/etcd_plugin_${1//-/_}.wasm" "$2/$1.wasm"
}
if [ $# -gt 0 ]; then
  mkdir -p dist
  for crate in "$@"; do
    case " ${shipped[*]} " in
      *" $crate "*) build "$crate" dist ;;
      *) echo "error: $crate is not a shipped plugin (one of: ${shipped[*]})" >&2; exit 1 ;;
    esac
  done
  exit 0
fi
rm -rf dist test-dist
mkdir -p dist test-dist
for crate in "${shipped[@]}"; do
  build "$crate" dist
  ln -s "../dist/$crate.wasm" "test-dist/$crate.wasm"
done
for crate in "${test_only[@]}"; do
  build "$crate" test-dist
done
./check-size.sh
