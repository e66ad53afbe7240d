#!/usr/bin/env bash
# Build everything the container image holds into a root filesystem
# directory, without Docker (deploy/Dockerfile runs this same script):
#   DIR/usr/local/bin/etcd-operator          the operator
#   DIR/usr/local/bin/etcdutl                verifies snapshots before restores
#   DIR/usr/lib/etcd-operator/plugins/*.wasm the bundled plugins
#   DIR/usr/lib/etcd-operator/plugins/.compiled/  the same, compiled ahead of
#       time, so an operator on a read-only root filesystem starts without
#       compiling them (one that cannot use them compiles as before)
#   DIR/etc/ssl/certs/ca-certificates.crt    the CA bundle plugin sources
#       (OCI registries, https) are verified against, as in the base image
#
#   scripts/build-image-root.sh DIR                              # release build
#   ETCD_OPERATOR_BIN=path/to/etcd-operator scripts/build-image-root.sh DIR
#       (an operator binary built already, e.g. by the tests)
set -euo pipefail
source "$(dirname "$0")/env.sh"
root="${1:?usage: scripts/build-image-root.sh DIR}"
"$ROOT/scripts/setup.sh" >/dev/null
bin="${ETCD_OPERATOR_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --locked -p etcd-operator --manifest-path "$ROOT/Cargo.toml"
  bin="$CARGO_TARGET_DIR/release/etcd-operator"
fi
[ -f "$ROOT/plugins/dist/s3.wasm" ] || "$ROOT/plugins/build.sh" >/dev/null
mkdir -p "$root/usr/local/bin" "$root/usr/lib/etcd-operator/plugins"
install -m 0755 "$bin" "$root/usr/local/bin/etcd-operator"
install -m 0755 "$(readlink -f "$ETCD_OPERATOR_TOOLS/etcd/3.5/etcdutl")" "$root/usr/local/bin/etcdutl"
# Every shipped plugin (the test-only ones are built into plugins/test-dist).
for f in "$ROOT"/plugins/dist/*.wasm; do
  install -m 0644 "$f" "$root/usr/lib/etcd-operator/plugins/$(basename "$f")"
done
mkdir -p "$root/etc/ssl/certs"
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
"$root/usr/local/bin/etcd-operator" plugin precompile "$root/usr/lib/etcd-operator/plugins" >/dev/null
echo "$root"
