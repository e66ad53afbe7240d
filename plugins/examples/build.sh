#!/usr/bin/env bash
# Build the example plugins from source, each with its own language's tools,
# into plugins/examples/dist/:
#   webdav.wasm         JavaScript, storage-backend  (componentize-js)
#   revision-gate.wasm  JavaScript, backup-policy    (componentize-js)
#   time-window.wasm    Python,     backup-policy    (componentize-py)
#   count-age.wasm      Go,         backup-policy    (go build + wasm-tools)
# scripts/setup.sh installs the tools; a build is skipped when its output is
# newer than its sources and the WIT.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../../scripts/env.sh"
wit="$ROOT/wit"
dist="$here/dist"
mkdir -p "$dist"
tools="$ETCD_OPERATOR_TOOLS"

# Is $1 missing or older than any of the remaining paths?
stale() {
  local out="$1"
  shift
  [ ! -e "$out" ] || [ -n "$(find "$@" "$wit" -newer "$out" -type f -not -path "*/__pycache__/*" -print -quit)" ]
}

if stale "$dist/webdav.wasm" "$here/js-webdav"; then
  (cd "$here/js-webdav" && "$tools/componentize-js/node_modules/.bin/componentize-js" webdav.js \
    --wit "$wit" --world-name storage-backend -d http -d fetch-event -o "$dist/webdav.wasm" >/dev/null)
fi

if stale "$dist/revision-gate.wasm" "$here/js-revision-gate"; then
  (cd "$here/js-revision-gate" && "$tools/componentize-js/node_modules/.bin/componentize-js" revision-gate.js \
    --wit "$wit" --world-name backup-policy -d http -d fetch-event -o "$dist/revision-gate.wasm" >/dev/null)
fi

if stale "$dist/time-window.wasm" "$here/python-time-window"; then
  (cd "$here/python-time-window" && "$tools/venv/bin/componentize-py" -d "$wit" -w backup-policy \
    componentize app -o "$dist/time-window.wasm" >/dev/null)
fi

if stale "$dist/count-age.wasm" "$here/go-count-age"; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$here/go-count-age" && GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags=-s -o "$tmp/core.wasm" .)
  wasm_tools="$tools/venv/bin/wasm-tools"
  "$wasm_tools" component embed "$wit" --world backup-policy "$tmp/core.wasm" -o "$tmp/embedded.wasm"
  # Go's wasip1 runtime imports WASI preview 1; the reactor adapter maps it
  # onto the WASI 0.2 interfaces the operator links (and grants nothing of).
  "$wasm_tools" component new "$tmp/embedded.wasm" \
    --adapt "wasi_snapshot_preview1=$tools/componentize-js/node_modules/@bytecodealliance/jco/lib/wasi_snapshot_preview1.reactor.wasm" \
    -o "$dist/count-age.wasm"
fi
ls -l "$dist"/*.wasm | awk '{ printf "example plugin %s: %.1f MB\n", $NF, $5 / 1e6 }'
