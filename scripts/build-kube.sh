#!/usr/bin/env bash
# Build the binaries of the single-node test cluster: kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet and kube-proxy from the
# k8s.io/kubernetes Go module pinned in tests/kube/go.mod, and CoreDNS (with
# only the plugins the test cluster uses) from tests/coredns/go.mod — no
# registry ships these binaries. Cached by version under
# $ETCD_OPERATOR_TOOLS/kube/<version>/ and $ETCD_OPERATOR_TOOLS/coredns/<version>-<plugins>/,
# so only a new pin rebuilds. Measured on 2 cores with the modules downloaded:
# kube-apiserver 7 min, then the other four ≈1 min each, sharing the Go build
# cache (an unoptimised build, -gcflags=all=-N -l, saves only 1.5 min).
# Prints the directory holding the Kubernetes binaries, then CoreDNS's.
set -euo pipefail
source "$(dirname "$0")/env.sh"
if ! command -v go >/dev/null; then
  echo "error: Go is needed to build the Kubernetes binaries for the Kubernetes tests (go.dev toolchains come from the Go module proxy)" >&2
  exit 1
fi

build() { # module dir, output dir, package, binary name
  local dir=$1 out=$2 pkg=$3 name=$4
  if [ ! -x "$out/$name" ]; then
    echo "building $name (cached afterwards in $out)" >&2
    mkdir -p "$out"
    (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" "$pkg")
    mv "$out/$name.tmp" "$out/$name"
  fi
}

version=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "$ROOT/tests/kube/go.mod")
kube="$ETCD_OPERATOR_TOOLS/kube/$version"
for cmd in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  build "$ROOT/tests/kube" "$kube" "k8s.io/kubernetes/cmd/$cmd" "$cmd"
done
coredns_version=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" { print $3 }' "$ROOT/tests/coredns/go.mod")
# Keyed by the plugin list too (main.go), not only the version.
plugins=$(sha256sum "$ROOT/tests/coredns/main.go" | cut -c1-12)
coredns="$ETCD_OPERATOR_TOOLS/coredns/$coredns_version-$plugins"
build "$ROOT/tests/coredns" "$coredns" . coredns
echo "$kube"
echo "$coredns"
