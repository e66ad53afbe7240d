#!/usr/bin/env bash
# Operator start → all bundled plugins loaded (results in docs/benchmarks.md),
# side by side in one run, RUNS times each (default 5), median reported:
#   compile      an empty compile cache: every plugin compiled at start;
#   cache        the compile cache the previous start filled;
#   precompiled  the plugins compiled ahead of time (`plugin precompile DIR`,
#                as the image ships them) and no writable cache at all, as
#                on the chart's read-only root filesystem.
# Timed from just before exec to the operator's own timestamp on its
# "plugins loaded" line (local mode; nothing else is started).
# Usage: benches/startup.sh [RUNS]
#   ETCD_OPERATOR_BIN=path   measure that operator binary instead of a fresh release build
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"
runs="${1:-5}"
op=$(bench_operator)
(cd plugins && ./build.sh >/dev/null)
work=$(mktemp -d /tmp/etcd-bench-startup.XXXXXX)
opid=""
cleanup() { [ -n "$opid" ] && kill "$opid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/plugins" "$work/precompiled"
for p in abs gcs local oss retention s3; do
  cp "plugins/dist/$p.wasm" "$work/plugins/"
  cp "plugins/dist/$p.wasm" "$work/precompiled/"
done
"$op" plugin precompile "$work/precompiled" >/dev/null

start() { # plugin dir, cache dir → seconds to "plugins loaded"
  local d; d=$(mktemp -d "$work/run.XXXXXX")
  local t0; t0=$(date +%s.%N)
  "$op" local --dir "$d" --plugin-dir "$1" --plugin-cache-dir "$2" --log-format json >"$d/log" 2>&1 &
  opid=$!
  until grep -q '"plugins loaded"' "$d/log" 2>/dev/null; do
    kill -0 "$opid" 2>/dev/null || { cat "$d/log" >&2; exit 1; }
    sleep 0.01
  done
  kill "$opid"; wait "$opid" 2>/dev/null || true; opid=""
  python3 - "$d/log" "$t0" <<'PY'
import json, sys, datetime
for line in open(sys.argv[1]):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    if r.get("fields", {}).get("message") == "plugins loaded":
        t = datetime.datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).timestamp()
        print(f"{t - float(sys.argv[2]):.3f}")
        break
PY
}

declare -A all
for r in $(seq 1 "$runs"); do
  rm -rf "$work/cache"
  all[compile]+="$(start "$work/plugins" "$work/cache") "
  all[cache]+="$(start "$work/plugins" "$work/cache") "
  # A cache directory that cannot be created: nothing is written anywhere.
  all[precompiled]+="$(start "$work/precompiled" /proc/none) "
done
for mode in compile cache precompiled; do
  # shellcheck disable=SC2086
  printf "%-12s %s  median %s s\n" "$mode" "${all[$mode]}" \
    "$(printf '%s\n' ${all[$mode]} | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
done
