#!/usr/bin/env bash
# The whole test suite: set-up, plugin build, formatting, lints, tests.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"
"$ROOT/plugins/build.sh" >/dev/null

echo "== format"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)

echo "== lints"
cargo clippy --quiet --all-targets -- -D warnings
for p in local retention faults; do
  (cd plugins && cargo clippy --quiet --target wasm32-wasip2 -p "etcd-plugin-$p" -- -D warnings)
done

echo "== tests"
cargo test --workspace
