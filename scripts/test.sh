#!/usr/bin/env bash
# The whole test suite: set-up, plugin build, formatting, lints, tests.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

# The Kubernetes test node's binaries (control plane, kubelet, kube-proxy from
# the Go module in tests/kube; CoreDNS from tests/coredns), cached by version
# (only a new pin rebuilds them). On a cold
# machine it downloads modules and compiles while the set-up installs (mostly
# downloads) and the plugins and the operator build; it is waited for before
# the tests.
kube_log="$(mktemp)"
"$ROOT/scripts/build-kube.sh" >/dev/null 2>"$kube_log" &
kube_pid=$!
"$ROOT/scripts/setup.sh"
"$ROOT/plugins/build.sh"
"$ROOT/plugins/examples/build.sh"

echo "== format"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)

echo "== lints"
# The operator is linted in the compilation that builds it for the tests:
# clippy-driver as the rustc of workspace members (what `cargo clippy` does,
# but in a full build), with clippy's own argument encoding for -D warnings.
# A separate `cargo clippy` would compile every dependency a second time, in
# check mode — minutes on 2 cores. Dependencies are not affected by the
# wrapper, so their cached builds stay fresh.
export RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
cargo test --workspace --all-targets --no-run --quiet
for p in local retention faults faults-policy s3 abs oss gcs; do
  (cd plugins && env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS cargo clippy --quiet --target wasm32-wasip2 -p "etcd-plugin-$p" -- -D warnings)
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
  echo "error: building the Kubernetes binaries failed (scripts/build-kube.sh)" >&2
  exit 1
fi
rm -f "$kube_log"

echo "== tests"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
(cd plugins && cargo test -p crc-fast 2>&1) | tee "$log"
plugin_status=${PIPESTATUS[0]}
# Every test binary runs even after one fails (--no-fail-fast), so a red run
# shows all that is red. Four tests at a time, not one per core: the
# integration tests mostly wait on etcd members and servers, and the local
# suite takes 2 minutes instead of 3.5 on 2 cores.
cargo test --workspace --no-fail-fast -- --test-threads=4 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
[ "$plugin_status" = 0 ] || status=$plugin_status
set -e
# One closing line summing every test binary (the last cargo line is the
# doc-test summary, which has no tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
