#!/usr/bin/env bash
# Build kube-apiserver (and, with `all`, kube-controller-manager) from the
# k8s.io/kubernetes Go module pinned in tests/kube/go.mod — no registry ships
# these binaries. Cached by version under $ETCD_OPERATOR_TOOLS/kube/<version>/,
# so only a new pin rebuilds (measured on 2 cores with the modules downloaded:
# kube-apiserver 7 min, then kube-controller-manager 2 min more, sharing the
# Go build cache; an unoptimised build, -gcflags=all=-N -l, saves only 1.5 min).
# Prints the directory holding the binaries.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT/tests/kube"
if ! command -v go >/dev/null; then
  echo "error: Go is needed to build kube-apiserver for the Kubernetes tests (go.dev toolchains come from the Go module proxy)" >&2
  exit 1
fi
version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' go.mod)
out="$ETCD_OPERATOR_TOOLS/kube/$version"
cmds=(kube-apiserver)
[ "${1:-}" = all ] && cmds+=(kube-controller-manager)
mkdir -p "$out"
for cmd in "${cmds[@]}"; do
  if [ ! -x "$out/$cmd" ]; then
    echo "building $cmd $version (cached afterwards in $out)" >&2
    go build -trimpath -ldflags "-s -w" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$out/$cmd.tmp" "$out/$cmd"
  fi
done
echo "$out"
