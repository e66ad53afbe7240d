#!/usr/bin/env bash
# Benchmarks on the real single-node Kubernetes the tests start (results in
# docs/benchmarks.md; the measurements are tests/kubernetes/bench.rs, which
# says what each one times):
#   create   apply → N/N healthy for N in SIZES (default "1 3 5"), RUNS times
#            each (default 3), interleaved with a hand-made static bootstrap of
#            the same member Pods;
#   heal     HEALS (default 20) seeded SIGKILLs of a member's etcd (SEED, default 1);
#   many     COUNT clusters of size 3 (default 10): operator RSS and CPU share over
#            WINDOW seconds (default 60) while steady, and MANY_HEALS seeded kills.
# Usage: benches/kubernetes.sh [create|many|all]   (default all; needs root, as the tests do)
#   ETCD_OPERATOR_BIN=path   measure that operator binary instead of a fresh release build
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"
which="${1:-all}"
"$ROOT/scripts/setup.sh" >/dev/null
"$ROOT/scripts/build-kube.sh" >/dev/null
op=$(bench_operator)
case "$which" in
  create) filter=bench::bench_create_and_heal ;;
  many) filter=bench::bench_many_clusters ;;
  all) filter=bench:: ;;
  *) echo "usage: benches/kubernetes.sh [create|many|all]" >&2; exit 2 ;;
esac
# One test process runs the benchmarks one after another on one node.
ETCD_OPERATOR_IMAGE_BIN="$op" cargo test --quiet --test kubernetes -- \
  --ignored --nocapture --test-threads=1 "$filter"
