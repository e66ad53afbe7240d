//! `etcd-operator local` against real etcd: create, scale, heal, recover,
//! upgrade, restart, pause, delete.

#[path = "../common/mod.rs"]
mod common;

mod backup;
mod backup_restore;
mod catalog;
mod containment;
mod etcd_flags;
mod examples;
mod failpoints;
mod first_run;
mod harness;
mod maintenance;
mod safety;

use std::time::{Duration, Instant};

use harness::{
    Operator, alive, assert_all_acked_readable, cluster_yaml, read_prefix, wait_ready_all,
    write_keys,
};

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
    // A new cluster starts all its members at once (a static bootstrap):
    // one ClusterSeeded per cluster naming every member, no learner added.
    let events = op.events();
    let added = events
        .iter()
        .filter(|e| e["reason"] == "MemberAdded")
        .count();
    assert_eq!(added, 0, "{}", op.log_tail());
    for (name, size) in [("one", 1), ("three", 3), ("five", 5)] {
        let seeded: Vec<&str> = events
            .iter()
            .filter(|e| e["reason"] == "ClusterSeeded" && e["name"] == name)
            .filter_map(|e| e["message"].as_str())
            .collect();
        assert_eq!(seeded.len(), 1, "{name}: {seeded:?}");
        let members = op.status(name).unwrap().members.ready;
        assert!(
            members.iter().all(|m| seeded[0].contains(m.as_str())),
            "{name} ({size}): {} does not name {members:?}",
            seeded[0]
        );
    }
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
    // Mark the status the first operator left, so only a status written by
    // the restarted operator (after it observed the members) satisfies the
    // wait below.
    let path = op.path().join(".status/etcdcluster/c.yaml");
    let mut left = op.status("c").unwrap();
    left.reason = Some("left by the first operator".into());
    std::fs::write(&path, serde_yaml::to_string(&left).unwrap()).unwrap();
    let log_before = op.events().len();
    op.restart();
    // Re-adopted: still ready, same processes, nothing restarted.
    op.wait("c", "re-adoption by the restarted operator", |s| {
        s.reason.as_deref() != Some("left by the first operator") && s.members.ready.len() == 3
    })
    .await;
    assert_eq!(op.pids("c"), pids);
    assert!(
        op.events()[log_before..]
            .iter()
            .all(|e| e["reason"] != "MemberRestarted"),
        "{:?}",
        &op.events()[log_before..]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_3_4_to_3_5_under_write_load() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.4.23", ""));
    let s = op.wait_ready("c", 3).await;
    assert_eq!(s.current_version.as_deref(), Some("3.4.23"));
    let writer = crate::harness::writer(&op, "c", "/upgrade");
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    op.wait_upgraded("c", 3, "3.5.1").await;
    let acked = writer.finish().await;
    // Progress, not speed: since members are restarted on their exit and
    // looked at again 500 ms after each step, the whole rolling upgrade can
    // take under 3 s, and a loaded CI machine acks few writes in that.
    assert!(
        acked.len() > 10,
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
    // Replay a run with CHAOS_SEED=<the seed it printed>.
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("chaos seed {seed} (replay with CHAOS_SEED={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    op.wait_ready("c", 3).await;
    let writer = crate::harness::writer(&op, "c", "/chaos");
    let mut operator_kills = 0;
    for round in 0..8 {
        let s = op.wait_ready("c", 3).await;
        let mut members = s.members.ready.clone();
        let pick = |rng: &mut rand::rngs::StdRng, members: &mut Vec<String>| {
            members.remove(rng.random_range(0..members.len()))
        };
        // Faults that never take more than one disk: losing two of three
        // disks may lose acknowledged writes by etcd's own rules.
        let victim = match rng.random_range(0..5) {
            0 | 1 => {
                let victim = pick(&mut rng, &mut members);
                let lose_disk = rng.random_bool(0.5);
                eprintln!("round {round}: killing {victim} (disk lost: {lose_disk})");
                op.kill_member("c", &victim, lose_disk);
                Some(victim)
            }
            2 => {
                // Two at once: quorum lost; one may lose its disk too.
                let (a, b) = (pick(&mut rng, &mut members), pick(&mut rng, &mut members));
                let lose_disk = rng.random_bool(0.5);
                eprintln!("round {round}: killing {a} and {b} (disk of {b} lost: {lose_disk})");
                op.kill_member("c", &a, false);
                op.kill_member("c", &b, lose_disk);
                Some(b)
            }
            3 => {
                eprintln!("round {round}: killing the operator");
                op.kill();
                operator_kills += 1;
                op.restart();
                None
            }
            _ => {
                // Overlapping: a member dies while the operator is down.
                let victim = pick(&mut rng, &mut members);
                let lose_disk = rng.random_bool(0.5);
                eprintln!(
                    "round {round}: killing the operator, then {victim} (disk lost: {lose_disk})"
                );
                op.kill();
                operator_kills += 1;
                op.kill_member("c", &victim, lose_disk);
                op.restart();
                Some(victim)
            }
        };
        // The status must have seen a member fault before the next round
        // trusts it (an operator kill alone leaves the members as they were).
        if let Some(victim) = victim {
            op.wait("c", "the failure to be seen", |s| {
                s.members.ready.len() < 3 || !s.members.ready.contains(&victim)
            })
            .await;
        }
    }
    eprintln!("{operator_kills} operator kills");
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
