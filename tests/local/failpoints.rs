//! The operator killed between the steps of every multi-step membership
//! action (a failpoint, `etcd_operator::failpoints`), then restarted
//! without it: the cluster converges to the spec with no acknowledged write
//! lost. The restore's points are in `backup_restore.rs`.

use crate::harness::{Operator, assert_all_acked_readable, cluster_yaml, read_prefix, write_keys};

/// Members of `cluster` by name, from their directories.
fn member_count(op: &Operator, cluster: &str) -> usize {
    op.member_dirs(cluster).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_seeding_the_next_run_seeds() {
    let mut op = Operator::start_armed("seed-after-delete-extras", &[]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    op.wait_killed_at_failpoint().await;
    op.restart_disarmed();
    op.wait_ready("c", 1).await;
    assert_eq!(member_count(&op, "c"), 1, "one member, no leftover");
}

/// Killed between the starts of a static bootstrap: the next run starts the
/// members that were reserved with the first, with the same initial
/// cluster, instead of waiting out a quorum loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_starts_of_a_static_bootstrap_the_next_run_starts_the_rest() {
    let mut op = Operator::start_armed("seed-after-first-start", &[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    op.wait_killed_at_failpoint().await;
    assert_eq!(op.pids("c").len(), 1, "one member started before the kill");
    op.restart_disarmed();
    let s = op.wait_ready("c", 3).await;
    assert_eq!(member_count(&op, "c"), 3, "the reserved members were used");
    assert!(
        op.events_of("QuorumRecovered").is_empty(),
        "{:?}",
        op.events_of("QuorumRecovered")
    );
    write_keys(&s, "/seeded", 3).await;
    assert_eq!(read_prefix(&s, "/seeded").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_adding_a_learner_the_next_run_starts_it() {
    let mut op = Operator::start_armed("grow-after-add-learner", &[]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    op.wait_ready("c", 1).await;
    let writer = crate::harness::writer(&op, "c", "/grow");
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    op.wait_killed_at_failpoint().await;
    op.restart_disarmed();
    op.wait_ready("c", 3).await;
    assert_eq!(member_count(&op, "c"), 3);
    let acked = writer.finish().await;
    assert_all_acked_readable(&op, "c", "/grow", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_promoting_the_next_run_goes_on() {
    let mut op = Operator::start_armed("promote-after-promote", &[]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    op.wait_ready("c", 1).await;
    let writer = crate::harness::writer(&op, "c", "/promote");
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    op.wait_killed_at_failpoint().await;
    op.restart_disarmed();
    op.wait_ready("c", 3).await;
    let acked = writer.finish().await;
    assert_all_acked_readable(&op, "c", "/promote", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_removing_a_member_to_shrink_the_next_run_deletes_it() {
    let mut op = Operator::start_armed("shrink-after-remove", &[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    op.wait_ready("c", 3).await;
    let writer = crate::harness::writer(&op, "c", "/shrink");
    op.apply("c.yaml", &cluster_yaml("c", 2, "3.5.1", ""));
    op.wait_killed_at_failpoint().await;
    assert_eq!(
        member_count(&op, "c"),
        3,
        "killed between the removal and the deletion"
    );
    op.restart_disarmed();
    op.wait_ready("c", 2).await;
    assert_eq!(member_count(&op, "c"), 2, "the removed member is deleted");
    let acked = writer.finish().await;
    assert_all_acked_readable(&op, "c", "/shrink", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_replacing_a_member_the_next_run_finishes() {
    let mut op = Operator::start_armed("replace-after-remove", &[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    let writer = crate::harness::writer(&op, "c", "/replace");
    let victim = s.members.ready[0].clone();
    op.kill_member("c", &victim, true);
    op.wait_killed_at_failpoint().await;
    op.restart_disarmed();
    op.wait("c", "the lost member replaced", |s| {
        !s.members.ready.contains(&victim)
    })
    .await;
    let s = op.wait_ready("c", 3).await;
    assert!(!s.members.ready.contains(&victim), "{:?}", s.members);
    assert_eq!(member_count(&op, "c"), 3);
    let acked = writer.finish().await;
    assert_all_acked_readable(&op, "c", "/replace", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_upgrade_the_next_run_finishes_it() {
    let mut op = Operator::start_armed("upgrade-after-stop", &[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.4.23", ""));
    op.wait_ready("c", 3).await;
    let writer = crate::harness::writer(&op, "c", "/upgrade");
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    op.wait_killed_at_failpoint().await;
    op.restart_disarmed();
    op.wait_upgraded("c", 3, "3.5.1").await;
    let acked = writer.finish().await;
    assert_all_acked_readable(&op, "c", "/upgrade", &acked).await;
}

/// Quorum lost with two disks: the survivor's keys come back whichever step
/// of the recovery the operator died after.
async fn recovery_killed_at(point: &str) {
    let mut op = Operator::start_armed(point, &[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    let written = write_keys(&s, "/dr", 50).await;
    let survivor = s.members.ready[2].clone();
    for victim in &s.members.ready[..2] {
        op.kill_member("c", victim, true);
    }
    op.wait_killed_at_failpoint().await;
    op.restart_disarmed();
    let s = op.wait_ready("c", 3).await;
    assert!(s.members.ready.contains(&survivor), "{:?}", s.members);
    assert_eq!(read_prefix(&s, "/dr").await, written);
    assert_eq!(member_count(&op, "c"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_stopping_the_survivor_the_next_run_recovers() {
    recovery_killed_at("recover-after-stop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_forcing_a_new_cluster_the_next_run_grows_back() {
    recovery_killed_at("recover-after-start").await;
}
