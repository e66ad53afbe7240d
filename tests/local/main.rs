//! `etcd-operator local` against real etcd: create, scale, heal, recover,
//! upgrade, restart, pause, delete.

#[path = "../common/mod.rs"]
mod common;

mod backup;
mod backup_restore;
mod examples;
mod harness;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Operator, alive, cluster_yaml, read_prefix, wait_ready_all, write_keys};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_clusters_of_1_3_and_5() {
    let op = Operator::start(&[]);
    for (name, size) in [("one", 1), ("three", 3), ("five", 5)] {
        op.apply(
            &format!("{name}.yaml"),
            &cluster_yaml(name, size, "3.5.1", ""),
        );
    }
    wait_ready_all(&op, &[("one", 1), ("three", 3), ("five", 5)]).await;
    for (name, size) in [("one", 1), ("three", 3), ("five", 5)] {
        let s = op.status(name).unwrap();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.size, size as i32);
        assert_eq!(s.current_version.as_deref(), Some("3.5.1"));
        assert_eq!(s.client_urls.len(), size);
        assert_eq!(op.pids(name).len(), size, "{name}: one process per member");
        // Every member answers, with the same data.
        write_keys(&s, &format!("/{name}"), 3).await;
        assert_eq!(read_prefix(&s, &format!("/{name}")).await.len(), 3);
    }
    let added = op
        .events()
        .iter()
        .filter(|e| e["reason"] == "MemberAdded")
        .count();
    assert_eq!(
        added,
        2 + 4,
        "members join one at a time as learners: {}",
        op.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_3_to_5_to_3_keeping_data() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    let written = write_keys(&s, "/scale", 50).await;

    op.apply("c.yaml", &cluster_yaml("c", 5, "3.5.1", ""));
    let s = op.wait_ready("c", 5).await;
    assert_eq!(read_prefix(&s, "/scale").await, written);

    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    assert_eq!(op.pids("c").len(), 3, "removed members are stopped");
    assert_eq!(
        op.member_dirs("c").len(),
        3,
        "removed members' data is deleted"
    );
    assert_eq!(read_prefix(&s, "/scale").await, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heals_a_killed_member() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    let written = write_keys(&s, "/heal", 20).await;

    // SIGKILL with data intact: restarted under its own identity.
    let victim = s.members.ready[0].clone();
    op.kill_member("c", &victim, false);
    op.wait("c", "the killed member to be noticed", |s| {
        s.members.unready.contains(&victim) || s.members.ready.len() < 3
    })
    .await;
    let s = op.wait_ready("c", 3).await;
    assert!(
        s.members.ready.contains(&victim),
        "the member rejoins with its data: {:?}",
        s.members
    );

    // SIGKILL and disk lost: replaced by a fresh member.
    let victim = s.members.ready[1].clone();
    op.kill_member("c", &victim, true);
    let s = op
        .wait("c", "the failed member to be replaced", |s| {
            s.members.ready.len() == 3
                && !s.members.ready.contains(&victim)
                && s.members.unready.is_empty()
        })
        .await;
    assert_eq!(read_prefix(&s, "/heal").await, written);
    assert!(op.events().iter().any(|e| e["reason"] == "MemberReplaced"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_from_losing_a_majority_with_their_data() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    let written = write_keys(&s, "/dr", 100).await;

    let survivor = s.members.ready[2].clone();
    for victim in &s.members.ready[..2] {
        op.kill_member("c", victim, true);
    }
    op.wait("c", "quorum loss to be reported", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "False")
    })
    .await;
    let s = op.wait_ready("c", 3).await;
    assert!(
        s.members.ready.contains(&survivor),
        "rebuilt from the survivor: {:?}",
        s.members
    );
    assert_eq!(
        read_prefix(&s, "/dr").await,
        written,
        "every key the survivor had is back"
    );
    assert!(op.events().iter().any(|e| e["reason"] == "QuorumRecovered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishes_a_scale_after_the_operator_is_killed_mid_way() {
    let mut op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    op.wait_ready("c", 1).await;
    op.apply("c.yaml", &cluster_yaml("c", 5, "3.5.1", ""));
    op.wait("c", "scaling to start", |s| s.size >= 2).await;
    op.kill();
    let running = op.pids("c").len();
    assert!(
        (2..5).contains(&running),
        "killed mid-scale with {running} members"
    );
    op.restart();
    let s = op.wait_ready("c", 5).await;
    assert_eq!(s.members.ready.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_members_and_the_next_run_rejoins_them() {
    let mut op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    let written = write_keys(&s, "/restart", 10).await;
    let before: Vec<String> = s.members.ready.clone();
    assert!(op.terminate().success());
    assert!(op.pids("c").is_empty(), "SIGTERM stops every member");
    let stopped = op.status("c").unwrap();
    assert_eq!(
        stopped.ready.as_deref(),
        Some("0/3"),
        "status says the members are stopped"
    );
    op.restart();
    let s = op.wait_ready("c", 3).await;
    assert_eq!(
        s.members.ready, before,
        "the same members come back with their data"
    );
    assert_eq!(read_prefix(&s, "/restart").await, written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_members_leaves_them_running_for_re_adoption() {
    let mut op = Operator::start(&["--keep-members"]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    op.wait_ready("c", 3).await;
    let pids = op.pids("c");
    assert!(op.terminate().success());
    assert_eq!(op.pids("c"), pids, "members keep running");
    op.restart();
    // Re-adopted: still ready, same processes, nothing restarted.
    let log_before = op.events().len();
    op.wait("c", "re-adoption", |s| s.members.ready.len() == 3)
        .await;
    assert_eq!(op.pids("c"), pids);
    assert!(
        op.events()[log_before..]
            .iter()
            .all(|e| e["reason"] != "MemberRestarted")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_cluster_is_left_alone() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", "  paused: true\n"));
    op.wait("c", "controlPaused", |s| s.control_paused).await;
    let victim = s.members.ready[0].clone();
    op.kill_member("c", &victim, false);
    // Several reconcile periods pass without a restart.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(
            !op.pids("c").iter().any(|(n, _)| n == &victim),
            "a paused cluster must not be touched"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = op.status("c").unwrap();
    assert!(
        s.control_paused && s.members.unready.contains(&victim),
        "status still reports the dead member: {:?}",
        s.members
    );
    op.apply(
        "c.yaml",
        &cluster_yaml("c", 3, "3.5.1", "  paused: false\n"),
    );
    let s = op
        .wait("c", "unpaused and healed", |s| {
            !s.control_paused && s.members.ready.len() == 3
        })
        .await;
    assert!(s.members.ready.contains(&victim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_manifest_deletes_the_cluster() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    op.wait_ready("c", 3).await;
    let pids = op.pids("c");
    op.remove("c.yaml");
    let start = Instant::now();
    while !op.member_dirs("c").is_empty() || pids.iter().any(|(_, p)| alive(*p)) {
        assert!(
            start.elapsed() < harness::DEADLINE,
            "cluster not deleted: {}",
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(op.status("c").is_none(), "its status file is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_versions_and_sizes_are_explained_in_status() {
    let op = Operator::start(&[]);
    // The seed example asks for etcd 3.2.25, which predates learners.
    op.apply(
        "seed.yaml",
        &std::fs::read_to_string(common::repo().join("tests/fixtures/seed/etcd-cluster.yaml"))
            .unwrap(),
    );
    let s = op
        .wait("etcd-cluster", "a refusal", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.reason.as_deref() == Some("SpecRefused"))
        })
        .await;
    let reason = s.reason.unwrap();
    assert!(
        reason.contains("3.2.25") && reason.contains("set spec.version"),
        "{reason}"
    );
    assert!(op.pids("etcd-cluster").is_empty(), "nothing is started");

    op.apply("big.yaml", &cluster_yaml("big", 9, "3.5.1", ""));
    let s = op.wait("big", "a refusal", |s| s.reason.is_some()).await;
    assert!(
        s.reason
            .unwrap()
            .contains("spec.size is 9; it must be between 1 and 7")
    );

    op.apply("future.yaml", &cluster_yaml("future", 1, "3.6.0", ""));
    let s = op
        .wait("future", "a refusal", |s| {
            s.reason
                .as_deref()
                .is_some_and(|r| r.contains("not available"))
        })
        .await;
    assert!(
        s.reason.unwrap().contains("available: "),
        "lists the versions it has"
    );
}

/// Records every write etcd acknowledged, while members are disturbed.
struct Writer {
    acked: Arc<Mutex<Vec<(String, String)>>>,
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(op: &Operator, cluster: &'static str, prefix: &'static str) -> Writer {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let dir = op.path().to_path_buf();
        let record = acked.clone();
        let handle = tokio::spawn(async move {
            let mut i = 0u64;
            while !*stopped.borrow_and_update() {
                let status_file = dir
                    .join(".status/etcdcluster")
                    .join(format!("{cluster}.yaml"));
                let urls = std::fs::read_to_string(&status_file)
                    .ok()
                    .and_then(|t| {
                        serde_yaml::from_str::<etcd_operator::api::EtcdClusterStatus>(&t).ok()
                    })
                    .map(|s| s.client_urls)
                    .unwrap_or_default();
                let opts = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_timeout(Duration::from_secs(2));
                if let Ok(Ok(mut c)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    etcd_client::Client::connect(&urls, Some(opts)),
                )
                .await
                {
                    for _ in 0..20 {
                        let (k, v) = (format!("{prefix}/{i:08}"), format!("v{i}"));
                        i += 1;
                        match c.put(k.as_str(), v.as_str(), None).await {
                            Ok(_) => record.lock().unwrap().push((k, v)),
                            Err(_) => break,
                        }
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = stopped.changed() => {}
                }
            }
        });
        Writer {
            acked,
            stop,
            handle,
        }
    }

    async fn finish(self) -> Vec<(String, String)> {
        self.stop.send(true).unwrap();
        self.handle.await.unwrap();
        let mut acked = self.acked.lock().unwrap().clone();
        acked.sort();
        acked
    }
}

/// Every acknowledged write must be readable (extra keys from writes whose
/// acknowledgement was lost in a failure are allowed).
async fn assert_all_acked_readable(
    op: &Operator,
    cluster: &str,
    prefix: &str,
    acked: &[(String, String)],
) {
    let s = op.status(cluster).unwrap();
    let stored: std::collections::BTreeMap<String, String> =
        read_prefix(&s, prefix).await.into_iter().collect();
    let missing: Vec<&(String, String)> = acked
        .iter()
        .filter(|(k, v)| stored.get(k) != Some(v))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_3_4_to_3_5_under_write_load() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.4.23", ""));
    let s = op.wait_ready("c", 3).await;
    assert_eq!(s.current_version.as_deref(), Some("3.4.23"));
    let writer = Writer::start(&op, "c", "/upgrade");
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    op.wait("c", "all members on 3.5.1", |s| {
        s.current_version.as_deref() == Some("3.5.1")
            && s.members.ready.len() == 3
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Progressing" && c.status == "False")
    })
    .await;
    let acked = writer.finish().await;
    assert!(
        acked.len() > 50,
        "the writer made progress during the upgrade: {}",
        acked.len()
    );
    assert_all_acked_readable(&op, "c", "/upgrade", &acked).await;
    let upgrades = op
        .events()
        .iter()
        .filter(|e| e["reason"] == "MemberUpgraded")
        .count();
    assert_eq!(upgrades, 3, "one member at a time");

    // Skipping back is refused with a reason.
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.4.23", ""));
    let s = op
        .wait("c", "downgrade refusal", |s| {
            s.reason
                .as_deref()
                .is_some_and(|r| r.contains("refusing to downgrade"))
        })
        .await;
    assert_eq!(s.current_version.as_deref(), Some("3.5.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_keeps_every_acknowledged_write() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = rand::random();
    eprintln!("chaos seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    op.wait_ready("c", 3).await;
    let writer = Writer::start(&op, "c", "/chaos");
    for round in 0..6 {
        let s = op.wait_ready("c", 3).await;
        let victim = s.members.ready[rng.random_range(0..3)].clone();
        let lose_disk = rng.random_bool(0.5);
        eprintln!("round {round}: killing {victim} (disk lost: {lose_disk})");
        op.kill_member("c", &victim, lose_disk);
        op.wait("c", "the failure to be seen", |s| {
            s.members.ready.len() < 3 || !s.members.ready.contains(&victim)
        })
        .await;
    }
    op.wait_ready("c", 3).await;
    let acked = writer.finish().await;
    assert!(
        acked.len() > 50,
        "writes went through between failures: {}",
        acked.len()
    );
    assert_all_acked_readable(&op, "c", "/chaos", &acked).await;
    assert_eq!(op.status("c").unwrap().size, 3);
}
