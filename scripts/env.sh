# Shared environment of the project scripts (sourced, not run).
# Build caches live outside the clone so fresh clones (CI) reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/etcd-operator/target}"
export ETCD_OPERATOR_TOOLS="${ETCD_OPERATOR_TOOLS:-$HOME/.cache/etcd-operator/tools}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT

# The operator binary a benchmark measures: $ETCD_OPERATOR_BIN if set, else a
# fresh release build. Prints its path.
bench_operator() {
  if [ -n "${ETCD_OPERATOR_BIN:-}" ]; then
    echo "$ETCD_OPERATOR_BIN"
  else
    (cd "$ROOT" && cargo build --quiet --release --bin etcd-operator) >&2
    echo "$CARGO_TARGET_DIR/release/etcd-operator"
  fi
}
