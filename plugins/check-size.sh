#!/usr/bin/env bash
# Every plugin must fit in a ConfigMap: at most 1 MiB gzipped (ConfigMaps
# hold 1 MiB; plugins may be stored gzipped in binaryData). Prints raw and
# gzipped sizes and fails above the limit.
set -euo pipefail
cd "$(dirname "$0")"
limit=$((1 << 20))
status=0
printf "%-12s %10s %10s\n" plugin raw gzipped
for f in dist/*.wasm test-dist/*.wasm; do
  [ -L "$f" ] && continue
  raw=$(stat -c %s "$f")
  gz=$(gzip -9c "$f" | wc -c)
  printf "%-12s %10d %10d\n" "$(basename "$f" .wasm)" "$raw" "$gz"
  if [ "$gz" -gt "$limit" ]; then
    echo "error: $f is $gz bytes gzipped, above the 1 MiB a ConfigMap holds" >&2
    status=1
  fi
done
exit $status
