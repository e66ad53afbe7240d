#!/usr/bin/env bash
# The main job on its embedded default: the operator managing a real local
# etcd cluster, no Kubernetes needed. Runs in the foreground; Ctrl-C stops it
# (members are stopped cleanly, their data kept for the next run).
#
# Desired state: $DEMO_DIR/*.yaml (default ~/.cache/etcd-operator/demo), seeded
# from examples/local/. Edit `size` or `version` there and save to watch the
# operator act; status appears in $DEMO_DIR/.status/etcdcluster/example.yaml
# (`etcd-operator local get --dir $DEMO_DIR` shows it as kubectl get would).
# A periodic EtcdBackup writes snapshots to $DEMO_DIR/.backups through the
# `local` storage plugin.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"

"$ROOT/scripts/setup.sh" --demo
if [ ! -f "$ROOT/plugins/dist/local.wasm" ]; then
  echo "demo: building the local storage plugin the demo's backup uses (plugins/build.sh local; about a minute on 2 cores the first time)"
  "$ROOT/plugins/build.sh" local
fi
echo "demo: building the operator (cargo build --release; about 5 minutes on 2 cores the first time)"
cargo build --release --bin etcd-operator
op="$CARGO_TARGET_DIR/release/etcd-operator"

demo="${DEMO_DIR:-$HOME/.cache/etcd-operator/demo}"
mkdir -p "$demo"
for f in examples/local/*.yaml; do
  [ -e "$demo/$(basename "$f")" ] || cp "$f" "$demo/"
done
echo "desired state: $demo/*.yaml"
echo "status:        $demo/.status/etcdcluster/example.yaml"
echo "events:        $demo/.status/events.log"
echo "at a glance:   $op local get --dir $demo   (like kubectl get; -o yaml for everything)"
echo "backups:       $demo/.backups/example/ (EtcdBackup example-periodic, every 60 s)"
# From the checkout, the operator finds plugins/dist without --plugin-dir.
exec "$op" local --dir "$demo"
