#!/usr/bin/env bash
# The whole test suite: set-up, plugin build, formatting, lints, tests.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"
"$ROOT/plugins/build.sh"
# kube-apiserver for the Kubernetes tests, built from the Go module in
# tests/kube and cached by version (only a new pin rebuilds it).
"$ROOT/scripts/build-kube.sh" >/dev/null

echo "== format"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)

echo "== lints"
cargo clippy --quiet --all-targets -- -D warnings
for p in local retention faults s3 abs oss gcs; do
  (cd plugins && cargo clippy --quiet --target wasm32-wasip2 -p "etcd-plugin-$p" -- -D warnings)
done

(cd plugins && cargo clippy --quiet -p crc-fast -- -D warnings)

echo "== tests"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
(cd plugins && cargo test -p crc-fast 2>&1) | tee "$log"
plugin_status=${PIPESTATUS[0]}
cargo test --workspace 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
[ "$plugin_status" = 0 ] || status=$plugin_status
set -e
# One closing line summing every test binary (the last cargo line is the
# doc-test summary, which has no tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
