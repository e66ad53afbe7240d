#!/usr/bin/env bash
# Backup and restore of a ≥1 GiB etcd database (results in docs/benchmarks.md):
#   1. EtcdBackup (one-shot) through the `local` storage plugin: wall time,
#      throughput and the operator's peak RSS, side by side with
#      `etcdctl snapshot save` + `cp` of the same database in the same run;
#   2. EtcdRestore of that backup into the same 1-member cluster (verify +
#      restore + serving), side by side with `etcdutl snapshot restore` alone.
# Usage: benches/backup.sh [MiB]   (default 1100 MiB of values → ~1.3 GiB database)
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"
mib="${1:-1100}"
"$ROOT/scripts/setup.sh" >/dev/null
(cd plugins && ./build.sh >/dev/null)
cargo build --quiet --release --bin etcd-operator
op="$CARGO_TARGET_DIR/release/etcd-operator"
etcdctl="$ETCD_OPERATOR_TOOLS/etcd/3.5/etcdctl"
etcdutl="$ETCD_OPERATOR_TOOLS/etcd/3.5/etcdutl"

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.2f\", $* }"; }
wait_grep() { # file, pattern, timeout seconds
  local start; start=$(now)
  until grep -q -- "$2" "$1" 2>/dev/null; do
    if awk "BEGIN { exit !($(now) - $start > $3) }"; then echo "timeout waiting for '$2' in $1" >&2; exit 1; fi
    sleep 0.05
  done
}
hwm_mib() { awk '/VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }

dir=$(mktemp -d /tmp/etcd-bench-backup.XXXXXX)
cleanup() {
  [ -n "${op_pid:-}" ] && kill "$op_pid" 2>/dev/null && wait "$op_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

cat >"$dir/c.yaml" <<'EOF'
apiVersion: etcd.database.coreos.com/v1beta2
kind: EtcdCluster
metadata: {name: bench}
spec: {size: 1, version: "3.5.1"}
EOF
"$op" local --dir "$dir" --plugin-dir plugins/dist --poll-interval 100ms >"$dir/operator.log" 2>&1 &
op_pid=$!
wait_grep "$dir/.status/etcdcluster/bench.yaml" "ready: 1/1" 60
endpoint=$(awk '/clientUrls:/ { getline; print $2 }' "$dir/.status/etcdcluster/bench.yaml")

echo "loading $mib MiB of incompressible values into $endpoint ..." >&2
head -c $((mib << 20)) /dev/urandom >"$dir/values"
python3 - "$endpoint" "$dir/values" "$mib" "$etcdctl" <<'PY'
import subprocess, sys, concurrent.futures as cf
ep, values, mib, etcdctl = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def put(i):
    with open(values, "rb") as f:
        f.seek(i << 20); v = f.read(1 << 20)
    subprocess.run([etcdctl, "--endpoints", ep, "put", f"/bench/{i:05}"], input=v, check=True,
                   stdout=subprocess.DEVNULL, env={"ETCDCTL_API": "3"})
with cf.ThreadPoolExecutor(8) as ex:
    list(ex.map(put, range(mib)))
PY
rm -f "$dir/values"
db=$(ETCDCTL_API=3 "$etcdctl" --endpoints "$endpoint" endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["dbSize"])')
echo "database: $((db >> 20)) MiB" >&2
base_rss=$(hwm_mib "$op_pid")

# 1a. etcdctl snapshot save + cp.
mkdir -p "$dir/manual"
t0=$(now)
/usr/bin/time -f "%M" -o "$dir/etcdctl.rss" env ETCDCTL_API=3 "$etcdctl" --endpoints "$endpoint" \
  snapshot save "$dir/manual/snap.db" >/dev/null 2>&1
t1=$(now)
cp "$dir/manual/snap.db" "$dir/manual/copy.db"; sync "$dir/manual/copy.db"
t2=$(now)
manual=$(calc "$t2 - $t0"); save_only=$(calc "$t1 - $t0")
etcdctl_rss=$(( $(cat "$dir/etcdctl.rss") / 1024 ))
size=$(stat -c %s "$dir/manual/snap.db")
rm -rf "$dir/manual"

# 1b. The operator.
cat >"$dir/b.yaml" <<'EOF'
apiVersion: etcd.database.coreos.com/v1beta2
kind: EtcdBackup
metadata: {name: bench}
spec:
  etcdCluster: {name: bench}
  storageType: local
  backupPolicy: {timeoutInSecond: 900}
  plugin: {path: bench/full.db}
EOF
wait_grep "$dir/.status/etcdbackup/bench.yaml" "succeeded: true" 900
took=$(grep -o 'to bench/full.db in [0-9.]*s' "$dir/.status/etcdbackup/bench.yaml" | head -1 | grep -o '[0-9.]*s$' | tr -d s)
peak_rss=$(hwm_mib "$op_pid")

# 2. Restore: the operator (verify + restore + serving) vs etcdutl snapshot restore alone.
cp "$dir/.backups/bench/full.db" "$dir/direct.db"
# Dirty pages of the copy would be written back during the next timing: flush first.
sync
t0=$(now)
"$etcdutl" snapshot restore "$dir/direct.db" --data-dir "$dir/direct-data" >/dev/null 2>&1
direct_restore=$(calc "$(now) - $t0")
rm -rf "$dir/direct.db" "$dir/direct-data"
sync
t0=$(now)
cat >"$dir/r.yaml" <<'EOF'
apiVersion: etcd.database.coreos.com/v1beta2
kind: EtcdRestore
metadata: {name: bench}
spec:
  etcdCluster: {name: bench}
  backupStorageType: local
  plugin: {path: bench/full.db}
EOF
wait_grep "$dir/.status/etcdrestore/bench.yaml" "phase: Completed" 900
op_restore=$(calc "$(now) - $t0")
restore_rss=$(hwm_mib "$op_pid")

mibs() { calc "$size / 1048576 / $1"; }
printf "snapshot %d MiB\n" $((size >> 20))
printf "backup  | operator+local plugin %ss (%s MiB/s) | etcdctl save+cp %ss (%s MiB/s; save alone %ss) | throughput ratio operator/etcdctl %s\n" \
  "$took" "$(mibs "$took")" "$manual" "$(mibs "$manual")" "$save_only" "$(calc "$manual / $took")"
printf "memory  | operator peak RSS %s MiB (before the backup %s MiB, after restore %s MiB) | etcdctl snapshot save max RSS %s MiB\n" \
  "$peak_rss" "$base_rss" "$restore_rss" "$etcdctl_rss"
printf "restore | operator (download+verify+restore+serving) %ss | etcdutl snapshot restore alone %ss\n" \
  "$op_restore" "$direct_restore"
