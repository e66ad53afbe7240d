#!/usr/bin/env bash
# The whole test suite: set-up, plugin build, formatting, lints, tests.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh"
# kube-apiserver and kube-controller-manager for the Kubernetes tests, built from the Go module in
# tests/kube and cached by version (only a new pin rebuilds it). On a cold
# machine it downloads modules and compiles while the plugins and the
# operator build, and is waited for before the tests.
kube_log="$(mktemp)"
"$ROOT/scripts/build-kube.sh" all >/dev/null 2>"$kube_log" &
kube_pid=$!
"$ROOT/plugins/build.sh"
"$ROOT/plugins/examples/build.sh"

echo "== format"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)

echo "== lints"
cargo clippy --quiet --all-targets -- -D warnings
for p in local retention faults s3 abs oss gcs; do
  (cd plugins && cargo clippy --quiet --target wasm32-wasip2 -p "etcd-plugin-$p" -- -D warnings)
done

(cd plugins && cargo clippy --quiet -p crc-fast -- -D warnings)
# The Go example plugin: formatting, vet (for wasip1, where its ABI file
# builds; its canonical-ABI glue turns host addresses into pointers, which
# the unsafeptr check flags by design) and its unit tests (natively).
(cd plugins/examples/go-count-age && test -z "$(gofmt -l .)" && GOOS=wasip1 GOARCH=wasm go vet -unsafeptr=false ./... && go test ./...) || {
  echo "error: the Go example plugin failed gofmt, go vet or go test (plugins/examples/go-count-age)" >&2
  exit 1
}

if ! wait "$kube_pid"; then
  cat "$kube_log" >&2
  echo "error: building the Kubernetes binaries failed (scripts/build-kube.sh all)" >&2
  exit 1
fi
rm -f "$kube_log"

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
