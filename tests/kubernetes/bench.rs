//! Benchmarks on the real test node, run by `benches/kubernetes.sh` (results and
//! method in `docs/benchmarks.md`). They are `#[ignore]`d, so the suite never
//! runs them, and they print figures instead of asserting times: each one only
//! fails when what it measures never happens (a cluster that never becomes
//! healthy).
//!
//! - **Create**: apply → N/N healthy for N in `SIZES` (default `1 3 5`), each run
//!   interleaved with a hand-made static bootstrap of the same members: the
//!   Pods and headless Service the operator would create, rendered by the same
//!   functions, created directly in a namespace no operator watches, and
//!   timed until every member answers a linearizable read.
//! - **Heal**: `HEALS` (default 20) SIGKILLs of the etcd process of a member Pod
//!   of a 3-member cluster, the victim picked by a seeded choice (`SEED`,
//!   default 1; the same seed replays the same picks), each timed from the kill
//!   until the cluster's status shows 3 healthy members again, the victim not
//!   among them (with `restartPolicy: Never` and an emptyDir, a killed member
//!   is replaced).
//! - **Many clusters**: `COUNT` (default 10) clusters of size 3 applied at once,
//!   then the operator's RSS and CPU share over `WINDOW` seconds (default 60)
//!   once all are steady, read from its container's process, then `MANY_HEALS`
//!   (default 10) seeded kills timed as above while all of them are watched.
//!
//! Every figure is of the operator image the harness imports: the test build,
//! or the binary in `ETCD_OPERATOR_IMAGE_BIN` (the benchmark script passes a
//! release build).

use std::time::{Duration, Instant};

use etcd_operator::api::EtcdCluster;
use etcd_operator::controller::runtime::{MemberPlan, StartMode};
use etcd_operator::kubernetes::members;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, PostParams};
use rand::{Rng, SeedableRng};

use crate::e2e::{Env, Operator};
use crate::node::Node;

/// How often the benchmarks look: finer than the tests' 300 ms, so the poll
/// adds little to what is measured.
const POLL: Duration = Duration::from_millis(100);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sizes() -> Vec<usize> {
    std::env::var("SIZES")
        .unwrap_or_else(|_| "1 3 5".into())
        .split_whitespace()
        .map(|s| s.parse().expect("SIZES: numbers"))
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn worst(v: &[Duration]) -> Duration {
    v.iter().copied().max().unwrap_or_default()
}

/// Poll `check` every [`POLL`] until it is true; the time it took.
async fn until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
    start.elapsed()
}

/// Does the cluster's status show `size` healthy members, none of `not`?
async fn healthy(env: &Env, name: &str, size: usize, not: Option<&str>) -> bool {
    let Ok(c) = env.api::<EtcdCluster>().get(name).await else {
        return false;
    };
    let Some(s) = c.status else { return false };
    s.phase.as_deref() == Some("Running")
        && s.members.ready.len() == size
        && s.members.unready.is_empty()
        && not.is_none_or(|n| !s.members.ready.iter().any(|m| m == n))
}

/// Does every Pod answer a linearizable read on its client port?
async fn all_serve(pods: &[Pod]) -> bool {
    for pod in pods {
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            return false;
        };
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(200))
            .with_timeout(Duration::from_millis(500));
        let Ok(mut c) =
            etcd_client::Client::connect([format!("http://{ip}:2379")], Some(options)).await
        else {
            return false;
        };
        if c.get("bench", None).await.is_err() {
            return false;
        }
    }
    true
}

/// Wait until no member Pod of `cluster` is left, so the next run starts on
/// an idle node.
async fn wait_pods_gone(env: &Env, cluster: &str) {
    until(
        &format!("{cluster}'s Pods gone"),
        Duration::from_secs(120),
        || async { env.member_pods(cluster).await.is_empty() },
    )
    .await;
}

async fn delete_and_wait_gone(env: &Env, cluster: &str) {
    let _ = env
        .api::<EtcdCluster>()
        .delete(cluster, &DeleteParams::default())
        .await;
    wait_pods_gone(env, cluster).await;
}

/// The hand-made reference: the members the operator would start for a new
/// cluster of `size`, all at once with a static `--initial-cluster`, created
/// directly; the time from the first create until every member serves.
async fn static_bootstrap(env: &Env, name: &str, size: usize) -> Duration {
    let cluster = env.cluster(name, size as i32, serde_json::json!({}));
    let names: Vec<String> = (0..size).map(|i| format!("{name}-{i}")).collect();
    let initial: Vec<(String, String)> = names
        .iter()
        .map(|n| (n.clone(), members::member_urls(&cluster, n).peer))
        .collect();
    let unowned = |mut meta: kube::api::ObjectMeta| {
        meta.owner_references = None;
        meta
    };
    let mut service = members::peer_service(&cluster);
    service.metadata = unowned(service.metadata);
    let pods: Vec<Pod> = names
        .iter()
        .map(|n| {
            let mut pod = members::member_pod(
                &cluster,
                &MemberPlan {
                    name: n.clone(),
                    version: "3.5.17".into(),
                    initial_cluster: initial.clone(),
                    mode: StartMode::Seed,
                    cluster_token: format!("{}-{name}", env.ns),
                    snapshot: None,
                    flags: Vec::new(),
                },
            );
            pod.metadata = unowned(pod.metadata);
            pod
        })
        .collect();
    let start = Instant::now();
    env.api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let api = env.api::<Pod>();
    let create = PostParams::default();
    futures::future::join_all(pods.iter().map(|p| api.create(&create, p)))
        .await
        .into_iter()
        .for_each(|r| {
            r.unwrap();
        });
    until(
        &format!("the static {name} serving"),
        Duration::from_secs(180),
        || async {
            let pods = env.member_pods(name).await;
            pods.len() == size && all_serve(&pods).await
        },
    )
    .await;
    let took = start.elapsed();
    for n in &names {
        let _ = api.delete(n, &DeleteParams::default()).await;
    }
    let _ = env
        .api::<Service>()
        .delete(name, &DeleteParams::default())
        .await;
    wait_pods_gone(env, name).await;
    took
}

/// apply → `size` healthy members in the status.
async fn operator_create(env: &Env, name: &str, size: usize) -> Duration {
    let cluster = env.cluster(name, size as i32, serde_json::json!({}));
    let start = Instant::now();
    env.api::<EtcdCluster>()
        .create(&PostParams::default(), &cluster)
        .await
        .unwrap();
    until(
        &format!("{name} with {size} healthy members"),
        Duration::from_secs(240),
        || healthy(env, name, size, None),
    )
    .await;
    start.elapsed()
}

/// SIGKILL the etcd process of one member Pod of `cluster` (picked by `rng`)
/// and time until `size` members are healthy again without it.
async fn kill_and_heal(
    env: &Env,
    cluster: &str,
    size: usize,
    rng: &mut rand::rngs::StdRng,
) -> Duration {
    let node = Node::shared();
    // Running ones only: a replaced member's failed Pod may linger a moment.
    let mut pods: Vec<Pod> = env
        .member_pods(cluster)
        .await
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .collect();
    pods.sort_by_key(|p| p.metadata.name.clone());
    let victim = pods.remove(rng.random_range(0..pods.len()));
    let name = victim.metadata.name.clone().unwrap();
    node.kill_pod_process(&victim);
    let start = Instant::now();
    until(
        &format!("{cluster} healed after {name} was killed"),
        Duration::from_secs(240),
        || healthy(env, cluster, size, Some(&name)),
    )
    .await;
    start.elapsed()
}

fn seeded() -> rand::rngs::StdRng {
    let seed: u64 = env_or("SEED", 1);
    println!("seed {seed} (replay with SEED={seed})");
    rand::rngs::StdRng::seed_from_u64(seed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: benches/kubernetes.sh"]
async fn bench_create_and_heal() {
    let stat = Env::new("bench-static").await;
    let env = Env::new("bench-create").await;
    let _op = Operator::install(&env, "etcd-operator", &[]).await;
    let runs: usize = env_or("RUNS", 3);
    let mut table = Vec::new();
    for size in sizes() {
        let (mut by_hand, mut operator) = (Vec::new(), Vec::new());
        for run in 0..runs {
            by_hand.push(static_bootstrap(&stat, &format!("s{size}-{run}"), size).await);
            let name = format!("c{size}-{run}");
            operator.push(operator_create(&env, &name, size).await);
            delete_and_wait_gone(&env, &name).await;
            println!(
                "size {size} run {run}: static {} s, operator {} s",
                secs(by_hand[run]),
                secs(operator[run])
            );
        }
        table.push((size, by_hand, operator));
    }
    println!(
        "| size | static by hand (s) | median | operator: apply → N/N healthy (s) | median | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    for (size, by_hand, operator) in &table {
        let list = |v: &[Duration]| v.iter().map(|d| secs(*d)).collect::<Vec<_>>().join(" ");
        println!(
            "| {size} | {} | {} | {} | {} | {:.2}× |",
            list(by_hand),
            secs(median(by_hand)),
            list(operator),
            secs(median(operator)),
            median(operator).as_secs_f64() / median(by_hand).as_secs_f64()
        );
    }

    let heals: usize = env_or("HEALS", 20);
    let mut rng = seeded();
    operator_create(&env, "heal", 3).await;
    let mut times = Vec::new();
    for i in 0..heals {
        let t = kill_and_heal(&env, "heal", 3, &mut rng).await;
        println!("heal {i}: {} s", secs(t));
        times.push(t);
    }
    println!(
        "heal of a 3-member cluster over {heals} kills: median {} s, worst {} s",
        secs(median(&times)),
        secs(worst(&times))
    );
}

/// The operator container's host process: (RSS in KiB, CPU seconds so far),
/// with `hz` clock ticks per second.
fn operator_usage(pid: u32, hz: f64) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: utime and
    // stime are the 14th and 15th fields of the whole line.
    let rest: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
    (rss, ticks as f64 / hz)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: benches/kubernetes.sh"]
async fn bench_many_clusters() {
    let env = Env::new("bench-many").await;
    let op = Operator::install(&env, "etcd-operator", &[]).await;
    let count: usize = env_or("COUNT", 10);
    let window: u64 = env_or("WINDOW", 60);
    let heals: usize = env_or("MANY_HEALS", 10);
    let names: Vec<String> = (0..count).map(|i| format!("m{i}")).collect();
    let start = Instant::now();
    for n in &names {
        env.api::<EtcdCluster>()
            .create(
                &PostParams::default(),
                &env.cluster(n, 3, serde_json::json!({})),
            )
            .await
            .unwrap();
    }
    until(
        &format!("{count} clusters of 3 healthy"),
        Duration::from_secs(60 * 20),
        || async {
            for n in &names {
                if !healthy(&env, n, 3, None).await {
                    return false;
                }
            }
            true
        },
    )
    .await;
    println!(
        "{count} clusters of 3: all healthy {} s after apply",
        secs(start.elapsed())
    );

    // Steady for a while first: the operator looks at a cluster steady for
    // 30 s less often, which is what a platform team's operator mostly is.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let pid = Node::shared().pod_pid(&op.pods().await.remove(0));
    let hz: f64 = crate::common::run_ok(std::process::Command::new("getconf").arg("CLK_TCK"))
        .trim()
        .parse()
        .unwrap();
    let (_, cpu0) = operator_usage(pid, hz);
    let t0 = Instant::now();
    let mut peak = 0;
    while t0.elapsed() < Duration::from_secs(window) {
        peak = peak.max(operator_usage(pid, hz).0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (rss, cpu1) = operator_usage(pid, hz);
    println!(
        "steady over {window} s: operator RSS {:.1} MiB (peak {:.1} MiB), CPU {:.1} % of one core",
        rss as f64 / 1024.0,
        peak.max(rss) as f64 / 1024.0,
        100.0 * (cpu1 - cpu0) / t0.elapsed().as_secs_f64()
    );

    let mut rng = seeded();
    let mut times = Vec::new();
    for i in 0..heals {
        let cluster = names[rng.random_range(0..names.len())].clone();
        let t = kill_and_heal(&env, &cluster, 3, &mut rng).await;
        println!("heal {i} ({cluster}): {} s", secs(t));
        times.push(t);
    }
    println!(
        "heal with {count} clusters watched, over {heals} kills: median {} s, worst {} s",
        secs(median(&times)),
        secs(worst(&times))
    );
    let _ = Api::<EtcdCluster>::namespaced(env.client.clone(), &env.ns)
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await;
}
