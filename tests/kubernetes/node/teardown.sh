#!/bin/sh
# teardown.sh STATE [PID]
# Stops the test node whose state directory is STATE and removes everything it
# made on this machine: its processes (listed in STATE/pids), the containers
# under its cgroup root, its mounts (network namespaces included), its
# iptables rules and bridge, and STATE itself. With PID, first waits for that
# process (the test binary) to exit: the node outlives no test run, however the
# run ends. Without PID it removes what a previous run left (idempotent).
set -u
state=$1
[ $# -ge 2 ] && while kill -0 "$2" 2>/dev/null; do sleep 0.5; done
[ -d "$state" ] || exit 0
. "$state/node.env" 2>/dev/null || exit 0

# The kubelet first, so it restarts nothing; then every container process.
[ -f "$state/pids" ] && for pid in $(grep '^kubelet ' "$state/pids" | cut -d' ' -f2); do kill -9 "$pid" 2>/dev/null; done
for pass in 1 2 3; do
  for procs in $(find "/sys/fs/cgroup/pids/$CGROUP_ROOT" -name cgroup.procs 2>/dev/null); do
    for pid in $(cat "$procs"); do kill -9 "$pid" 2>/dev/null; done
  done
  sleep 0.2
done
# The rest of the node's processes (containerd's shims exit with their containers).
[ -f "$state/pids" ] && while read -r _ pid; do kill -9 "$pid" 2>/dev/null; done <"$state/pids"
pkill -9 -f "containerd-shim.*$state" 2>/dev/null
# kube-proxy's rules (its own cleanup mode) and the bridge. The sandboxes'
# network namespaces are mounts under STATE (containerd's
# netns_mounts_under_state_dir), removed with the other mounts below.
[ -x "$KUBE_PROXY" ] && "$KUBE_PROXY" --cleanup >/dev/null 2>&1
# The kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...), which
# kube-proxy's cleanup leaves: the rules jumping to them, then the chains.
for cmd in iptables ip6tables; do
  for table in filter nat mangle; do
    "$cmd" -t "$table" -S 2>/dev/null | grep -E -- '-j KUBE-' | grep -v '^-A KUBE-' | sed 's/^-A/-D/' | while read -r rule; do
      eval "$cmd -t $table $rule" 2>/dev/null
    done
    chains=$("$cmd" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }')
    for chain in $chains; do "$cmd" -t "$table" -F "$chain" 2>/dev/null; done
    for chain in $chains; do "$cmd" -t "$table" -X "$chain" 2>/dev/null; done
  done
done
ip link delete "$BRIDGE" 2>/dev/null
# Mounts under the state directory (emptyDir, Secret volumes, sandboxes' /dev/shm, snapshots), deepest first.
for _ in 1 2 3; do
  awk -v s="$state" 'index($2, s) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
done
for c in /sys/fs/cgroup/*/; do
  [ -d "$c$CGROUP_ROOT" ] && find "$c$CGROUP_ROOT" -depth -type d -exec rmdir {} \; 2>/dev/null
done
rm -rf "$state"
# The host-path provisioner's volumes (a fixed path in kube-controller-manager).
rm -rf /tmp/hostpath_pv
exit 0
