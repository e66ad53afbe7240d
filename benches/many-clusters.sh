#!/usr/bin/env bash
# Many clusters under one operator in local mode (results in docs/benchmarks.md):
#   1. one cluster of SIZE alone: HEALS seeded SIGKILLs of a member, each timed
#      until the cluster is whole and healthy again (the single-cluster figure);
#   2. COUNT clusters of SIZE applied at once: time until all are ready;
#   3. steady: the operator's RSS and CPU share over WINDOW seconds (and the
#      etcd processes' CPU, for scale), after SETTLE seconds;
#   4. HEALS seeded SIGKILLs of a member of a random cluster while all are
#      watched, timed as in 1.
# Operator defaults throughout (a platform team's operator), release build.
# Usage: benches/many-clusters.sh            COUNT=100 SIZE=1
#        COUNT=20 SIZE=3 benches/many-clusters.sh
#   SEED (default 1), HEALS (default 20), SETTLE (30), WINDOW (60),
#   ETCD_OPERATOR_BIN=path   measure that operator binary instead of a fresh release build
set -euo pipefail
source "$(dirname "$0")/../scripts/env.sh"
cd "$ROOT"
"$ROOT/scripts/setup.sh" >/dev/null
op=$(bench_operator)
export OP="$op" ETCD_DIR="$ETCD_OPERATOR_TOOLS/etcd/3.5"
exec python3 - <<'PY'
import glob, json, os, random, re, signal, statistics, subprocess, sys, tempfile, time, shutil

COUNT = int(os.environ.get("COUNT", "100"))
SIZE = int(os.environ.get("SIZE", "1"))
HEALS = int(os.environ.get("HEALS", "20"))
SETTLE = float(os.environ.get("SETTLE", "30"))
WINDOW = float(os.environ.get("WINDOW", "60"))
rng = random.Random(int(os.environ.get("SEED", "1")))
TICK = os.sysconf("SC_CLK_TCK")
started = []  # operator processes, stopped by PID at the end (they stop their members)
dirs = []


def operator(d):
    log = open(os.path.join(d, "op.log"), "w")
    p = subprocess.Popen([os.environ["OP"], "local", "--dir", d, "--etcd-dir", os.environ["ETCD_DIR"]],
                         stdout=log, stderr=log)
    started.append(p)
    return p


def manifest(d, name):
    with open(os.path.join(d, f"{name}.yaml"), "w") as f:
        f.write("apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdCluster\n"
                f"metadata:\n  name: {name}\nspec:\n  size: {SIZE}\n  version: \"3.5.1\"\n")


def status(d, name):
    try:
        return open(os.path.join(d, ".status", "etcdcluster", f"{name}.yaml")).read()
    except OSError:
        return ""


def whole(d, name):
    s = status(d, name)
    return re.search(rf"^ready: {SIZE}/{SIZE}$", s, re.M) and "reason: AllHealthy" in s


def pids(d, name):
    out = []
    for f in sorted(glob.glob(os.path.join(d, ".data", "default", name, "*", "member.json"))):
        try:
            pid = json.load(open(f)).get("pid")
        except (OSError, ValueError):
            continue
        if pid and os.path.exists(f"/proc/{pid}") and not zombie(pid):
            out.append(pid)
    return out


def zombie(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            sys.exit(f"timeout after {timeout}s waiting for {what}")
        time.sleep(0.02)


def heal_times(d, names):
    times = []
    for _ in range(HEALS):
        name = rng.choice(names)
        wait(lambda: whole(d, name) and len(pids(d, name)) == SIZE, 120, f"{name} whole before a kill")
        victim = rng.choice(pids(d, name))
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait(lambda: zombie(victim) or not os.path.exists(f"/proc/{victim}"), 10, "the victim to die")
        wait(lambda: victim not in pids(d, name) and len(pids(d, name)) == SIZE and whole(d, name),
             120, f"{name} to heal")
        times.append(time.monotonic() - t0)
    return times


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


def etcd_pids(d):
    return [p for name in os.listdir(d) if name.endswith(".yaml") for p in pids(d, name[:-5])]


def summary(ts):
    return f"median {statistics.median(ts):.2f} s, worst {max(ts):.2f} s over {len(ts)}"


try:
    # 1. One cluster alone.
    d = tempfile.mkdtemp(prefix="etcd-bench-many.")
    dirs.append(d)
    op = operator(d)
    manifest(d, "alone")
    wait(lambda: whole(d, "alone"), 120, "the lone cluster")
    alone = heal_times(d, ["alone"])
    op.terminate(); op.wait(60)
    print(f"one cluster of {SIZE}: heal {summary(alone)}", flush=True)

    # 2. COUNT clusters at once.
    d = tempfile.mkdtemp(prefix="etcd-bench-many.")
    dirs.append(d)
    op = operator(d)
    names = [f"c{i:03}" for i in range(COUNT)]
    t0 = time.monotonic()
    for n in names:
        manifest(d, n)
    ready_at = {}
    deadline = t0 + 600
    while len(ready_at) < COUNT and time.monotonic() < deadline:
        for n in names:
            if n not in ready_at and whole(d, n):
                ready_at[n] = time.monotonic() - t0
        time.sleep(0.2)
    if len(ready_at) < COUNT:
        sys.exit(f"only {len(ready_at)} of {COUNT} clusters ready after 600 s")
    times = sorted(ready_at.values())
    print(f"{COUNT} clusters of {SIZE} applied at once: all ready in {times[-1]:.1f} s "
          f"(half in {times[len(times) // 2]:.1f} s)", flush=True)

    # 3. Steady.
    time.sleep(SETTLE)
    etcds = etcd_pids(d)
    c0, e0, w0 = cpu_seconds(op.pid), sum(cpu_seconds(p) for p in etcds), time.monotonic()
    rss = []
    while time.monotonic() - w0 < WINDOW:
        rss.append(rss_mib(op.pid))
        time.sleep(1)
    c1, e1, w1 = cpu_seconds(op.pid), sum(cpu_seconds(p) for p in etcds), time.monotonic()
    share = 100 * (c1 - c0) / (w1 - w0)
    print(f"steady ({len(etcds)} etcd processes, {WINDOW:.0f} s window after {SETTLE:.0f} s): operator RSS "
          f"{statistics.median(rss):.1f} MiB median, {max(rss):.1f} max; operator CPU {share:.2f} % of one core; "
          f"all etcd processes {100 * (e1 - e0) / (w1 - w0):.1f} %", flush=True)

    # 4. Heals while all are watched.
    many = heal_times(d, names)
    ratio = statistics.median(many) / statistics.median(alone)
    print(f"{COUNT} clusters: heal {summary(many)}; median ratio to one cluster alone {ratio:.2f}", flush=True)
finally:
    for p in started:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
PY
