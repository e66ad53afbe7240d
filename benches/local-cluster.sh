#!/usr/bin/env bash
# Benchmark of the local runtime (results in docs/benchmarks.md):
#   1. apply → N healthy members for N = 1, 3, 5 (SIZES), each side by side with a
#      static N-member bootstrap of the same etcd binary started by hand (all
#      members at once), in a fresh operator directory;
#   2. SIGKILL of one member → full health again, HEALS times (default 40) with
#      members picked by a seeded random choice (SEED, default 1; replayable),
#      median and worst reported;
#   3. SIGKILL of two members with their data deleted → serving again (and → 3/3).
# Usage: benches/local-cluster.sh [runs]   (default 3)
#   ETCD_OPERATOR_BIN=path   measure that operator binary instead of a fresh release build
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"
runs="${1:-3}"
"$ROOT/scripts/setup.sh" >/dev/null
heals="${HEALS:-40}"
RANDOM="${SEED:-1}"
op=$(bench_operator)
etcd="$ETCD_OPERATOR_TOOLS/etcd/3.5/etcd"
grace=5s; qlt=10s

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.3f\", $* }"; }
status() { cat "$1/.status/etcdcluster/bench.yaml" 2>/dev/null || true; }
wait_for() { # dir, grep pattern (all must match), timeout
  local start; start=$(now)
  while :; do
    local s; s=$(status "$1")
    local ok=1
    for p in "${@:3}"; do grep -q -- "$p" <<<"$s" || ok=0; done
    [ $ok = 1 ] && return 0
    if awk "BEGIN { exit !($(now) - $start > $2) }"; then echo "timeout waiting for ${*:3}" >&2; return 1; fi
    sleep 0.05
  done
}
pids_of() { python3 - "$1" <<'PY'
import json,sys,glob,os
for f in sorted(glob.glob(sys.argv[1]+"/.data/default/bench/*/member.json")):
    m=json.load(open(f))
    if m.get("pid") and os.path.exists(f"/proc/{m['pid']}"): print(m["name"], m["pid"])
PY
}
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

static_bootstrap() { # N: seconds until N hand-started members all answer `endpoint health`
  local n="$1" d; d=$(mktemp -d); local names=() peers=() clients=() pids=()
  for i in $(seq 0 $((n - 1))); do names+=("m$i"); peers+=("$(free_port)"); clients+=("$(free_port)"); done
  local initial=""; for i in $(seq 0 $((n - 1))); do initial+="${names[$i]}=http://127.0.0.1:${peers[$i]},"; done
  local t0; t0=$(now)
  for i in $(seq 0 $((n - 1))); do
    "$etcd" --name "${names[$i]}" --data-dir "$d/${names[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${peers[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${peers[$i]}" \
      --listen-client-urls "http://127.0.0.1:${clients[$i]}" --advertise-client-urls "http://127.0.0.1:${clients[$i]}" \
      --initial-cluster "${initial%,}" --initial-cluster-state new >"$d/${names[$i]}.log" 2>&1 &
    pids+=($!)
  done
  local eps=""; for c in "${clients[@]}"; do eps+="http://127.0.0.1:$c,"; done; eps="${eps%,}"
  # Short timeouts: a member not listening yet must not hold a check for etcdctl's 5 s default.
  until ETCDCTL_API=3 "$ETCD_OPERATOR_TOOLS/etcd/3.5/etcdctl" --dial-timeout 200ms --command-timeout 500ms \
    --endpoints "$eps" endpoint health >/dev/null 2>&1; do sleep 0.05; done
  calc "$(now) - $t0"
  kill -9 "${pids[@]}"; wait 2>/dev/null || true; rm -rf "$d"
}

start_operator() { # dir
  "$op" local --dir "$1" --member-failure-grace $grace --quorum-loss-timeout $qlt --poll-interval 100ms 2>"$1/op.log" &
  opid=$!
}
apply_bench() { # dir, size
  printf 'apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdCluster\nmetadata:\n  name: bench\nspec:\n  size: %s\n  version: "3.5.1"\n' "$2" >"$1/bench.yaml"
}

# Create: the operator against a static bootstrap by hand, interleaved.
printf "run  size  static  operator  ratio\n"
for r in $(seq 1 "$runs"); do
  for n in ${SIZES:-1 3 5}; do
    base=$(static_bootstrap "$n")
    d=$(mktemp -d)
    start_operator "$d"
    t0=$(now)
    apply_bench "$d" "$n"
    wait_for "$d" 120 "^ready: $n/$n" "reason: Steady"
    create=$(calc "$(now) - $t0")
    kill -TERM "$opid"; wait "$opid" || true; rm -rf "$d"
    printf "%3d  %4d  %6.2f  %8.2f  %5.2f\n" "$r" "$n" "$base" "$create" "$(calc "$create / $base")"
  done
done

printf "run  static-3  operator-3  ratio  heal-median  heal-worst  majority-serving  majority-full\n"
for r in $(seq 1 "$runs"); do
  base=$(static_bootstrap 3)
  d=$(mktemp -d)
  start_operator "$d"
  t0=$(now)
  apply_bench "$d" 3
  wait_for "$d" 120 "^ready: 3/3" "reason: Steady"
  create=$(calc "$(now) - $t0")

  times=()
  for _ in $(seq 1 "$heals"); do
    victim=$(pids_of "$d" | awk -v n=$((RANDOM % 3 + 1)) "NR==n {print \$2}")
    t0=$(now); kill -9 "$victim"
    while [ -e "/proc/$victim" ] && ! grep -q '^[^)]*) Z' "/proc/$victim/stat" 2>/dev/null; do sleep 0.005; done
    # Healthy again: three members with live processes and the status says so.
    until [ "$(pids_of "$d" | grep -vc " $victim\$")" = 3 ] && status "$d" | grep -q "^ready: 3/3" && status "$d" | grep -q "reason: AllHealthy"; do sleep 0.02; done
    times+=("$(calc "$(now) - $t0")")
  done
  read -r heal worst < <(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)], a[NR]}')

  mapfile -t two < <(pids_of "$d" | awk "NR<=2")
  t0=$(now)
  for m in "${two[@]}"; do read -r name pid <<<"$m"; kill -9 "$pid"; rm -rf "$d/.data/default/bench/$name/data"; done
  until status "$d" | grep -q "reason: QuorumLost"; do sleep 0.02; done
  wait_for "$d" 180 "reason: QuorumHealthy"
  serving=$(calc "$(now) - $t0")
  wait_for "$d" 180 "^ready: 3/3" "reason: Steady" "reason: AllHealthy"
  full=$(calc "$(now) - $t0")

  kill -TERM "$opid"; wait "$opid" || true; rm -rf "$d"
  printf "%3d  %8.2f  %10.2f  %5.2f  %11.2f  %10.2f  %16.2f  %13.2f\n" "$r" "$base" "$create" "$(calc "$create / $base")" "$heal" "$worst" "$serving" "$full"
done
echo "(seconds; member-failure-grace $grace, quorum-loss-timeout $qlt: majority times include that wait)"
