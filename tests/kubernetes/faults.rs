//! Faults on the real node, with a writer running and every acknowledged
//! write read back at the end: the operator cut off from its members (it
//! destroys nothing), its leader Pod deleted mid-scale with two replicas (the
//! other takes over), `helm upgrade` while the cluster scales, a member's
//! etcd process killed in its container, a paused cluster, and a rolling
//! upgrade from 3.4 to 3.5.

use std::time::{Duration, Instant};

use etcd_operator::api::EtcdCluster;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use crate::e2e::{Env, Operator, eventually};
use crate::node::Node;

/// The reasons that mean a member was destroyed or the cluster rebuilt.
const DESTRUCTIVE: [&str; 5] = [
    "QuorumRecovered",
    "RestoringFromBackup",
    "QuorumRecoveredFromBackup",
    "MemberReplaced",
    "MemberRemoved",
];

/// The destructive Events about cluster `ha` so far: name, note, and how
/// often it was repeated (a repeated Event is one object with a count).
async fn destructive_events(env: &Env) -> Vec<(String, String, i32)> {
    env.events_for("ha")
        .await
        .into_iter()
        .filter(|e| {
            e.reason
                .as_deref()
                .is_some_and(|r| DESTRUCTIVE.contains(&r))
        })
        .map(|e| {
            (
                e.metadata.name.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.series.map(|s| s.count).unwrap_or(1),
            )
        })
        .collect()
}

/// The host PIDs of the operator's containers (one per replica).
async fn operator_pids(op: &Operator) -> Vec<u32> {
    op.pods()
        .await
        .iter()
        .filter_map(|p| {
            let status = p.status.as_ref()?.container_statuses.as_ref()?;
            status[0].container_id.clone()
        })
        .map(|id| Node::shared().container_pid(&id))
        .collect()
}

/// The rule that drops the operator's traffic to the members' client port
/// (in the operator Pod's own network namespace: the members, the writer and
/// cluster DNS are untouched).
const CUT: [&str; 9] = [
    "-p",
    "tcp",
    "-d",
    "10.201.0.0/24",
    "--dport",
    "2379",
    "-j",
    "DROP",
    "-w",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_cut_off_or_handed_over_destroys_nothing_and_loses_no_write() {
    let env = Env::new("e2e-faults").await;
    let node = Node::shared();
    let op = Operator::install(
        &env,
        "etcd-operator",
        &[
            "replicas=2",
            "memberFailureGrace=5s",
            "quorumLossTimeout=15s",
        ],
    )
    .await;
    let clusters: Api<EtcdCluster> = env.api();
    clusters
        .create(
            &PostParams::default(),
            &env.cluster("ha", 3, serde_json::json!({})),
        )
        .await
        .unwrap();
    env.wait_ready("ha", 3, Duration::from_secs(180)).await;
    let ids = env.member_ids("ha").await;
    let writer = env.writer("ha", "/ha");

    // 1. Both replicas cut off from the members for twice the quorum-loss
    //    timeout: unreachable is reported, nothing is replaced or recovered.
    let pids = operator_pids(&op).await;
    assert_eq!(pids.len(), 2);
    // What growing to 3 did already (a member can be replaced on the way).
    let before = destructive_events(&env).await;
    for pid in &pids {
        node.in_netns(*pid, &[&["iptables", "-I", "OUTPUT"][..], &CUT].concat());
    }
    let degraded_by = |status: &etcd_operator::api::EtcdClusterStatus| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
            .and_then(|c| c.reason.clone())
    };
    eventually(
        "the cluster Degraded by unreachable members",
        Duration::from_secs(90),
        || async {
            let s = clusters.get("ha").await.ok()?.status?;
            (degraded_by(&s).as_deref() == Some("MembersUnreachable")).then_some(())
        },
    )
    .await;
    let cut_at = Instant::now();
    while cut_at.elapsed() < Duration::from_secs(30) {
        let acted = destructive_events(&env).await;
        assert!(
            acted.iter().all(|e| before.contains(e)),
            "the operator acted on members it could not see: {acted:?} (before the cut: {before:?})"
        );
        assert_eq!(env.member_pods("ha").await.len(), 3);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for pid in &pids {
        node.in_netns(*pid, &[&["iptables", "-D", "OUTPUT"][..], &CUT].concat());
    }
    eventually(
        "the members reachable again",
        Duration::from_secs(90),
        || async {
            let s = clusters.get("ha").await.ok()?.status?;
            (degraded_by(&s).as_deref() != Some("MembersUnreachable")).then_some(())
        },
    )
    .await;
    env.wait_ready("ha", 3, Duration::from_secs(120)).await;
    assert_eq!(env.member_ids("ha").await, ids, "every member kept");

    // 2. Scale 3 → 5 and delete the leader's Pod as it starts: the other
    //    replica takes the Lease and finishes.
    let leases: Api<Lease> = env.api();
    let holder = || async {
        leases
            .get("etcd-operator")
            .await
            .ok()?
            .spec?
            .holder_identity
    };
    let leader = holder().await.unwrap();
    let size = |n: i32| Patch::Merge(serde_json::json!({"spec": {"size": n}}));
    clusters
        .patch("ha", &PatchParams::default(), &size(5))
        .await
        .unwrap();
    eventually("a fourth member Pod", Duration::from_secs(60), || async {
        (env.member_pods("ha").await.len() > 3).then_some(())
    })
    .await;
    env.api::<Pod>()
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    env.wait_ready("ha", 5, Duration::from_secs(240)).await;
    let successor = holder().await.unwrap();
    assert_ne!(successor, leader, "the other replica took over");

    // 3. `helm upgrade` (a changed Deployment: a rolling update, briefly
    //    three Pods) while the cluster scales 5 → 3.
    clusters
        .patch("ha", &PatchParams::default(), &size(3))
        .await
        .unwrap();
    let upgrade = op.upgrade(&["memberFailureGrace=6s"]);
    env.wait_ready("ha", 3, Duration::from_secs(240)).await;
    upgrade
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("helm upgrade failed: {e}"));
    env.wait_ready("ha", 3, Duration::from_secs(120)).await;

    // 4. A member's etcd killed inside its container: the Pod fails
    //    (restartPolicy Never, emptyDir) and the member is replaced.
    let pods: Api<Pod> = env.api();
    let victim = env.member_pods("ha").await.remove(0);
    let name = victim.metadata.name.clone().unwrap();
    node.kill_pod_process(&victim);
    eventually(
        "the killed member replaced",
        Duration::from_secs(240),
        || async {
            let s = env.wait_ready("ha", 3, Duration::from_secs(180)).await;
            (!s.members.ready.contains(&name)).then_some(())
        },
    )
    .await;

    // 5. Paused: a deleted member Pod is not replaced until unpaused.
    let pause = |p: bool| Patch::Merge(serde_json::json!({"spec": {"paused": p}}));
    clusters
        .patch("ha", &PatchParams::default(), &pause(true))
        .await
        .unwrap();
    eventually("controlPaused", Duration::from_secs(60), || async {
        let s = clusters.get("ha").await.ok()?.status?;
        s.control_paused.then_some(())
    })
    .await;
    let gone = env.member_pods("ha").await.remove(0);
    let gone = gone.metadata.name.unwrap();
    pods.delete(&gone, &DeleteParams::default()).await.unwrap();
    eventually(
        "the paused member Pod gone",
        Duration::from_secs(60),
        || async { pods.get_opt(&gone).await.ok()?.is_none().then_some(()) },
    )
    .await;
    let paused_at = Instant::now();
    while paused_at.elapsed() < Duration::from_secs(15) {
        assert_eq!(
            env.member_pods("ha").await.len(),
            2,
            "a paused cluster was changed"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    clusters
        .patch("ha", &PatchParams::default(), &pause(false))
        .await
        .unwrap();
    env.wait_ready("ha", 3, Duration::from_secs(180)).await;

    let acked = writer.finish().await;
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    env.assert_all_acked_readable("ha", "/ha", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_upgrade_from_3_4_to_3_5_under_writes_keeps_every_write() {
    let env = Env::new("e2e-upgrade").await;
    let _op = Operator::install(&env, "etcd-operator", &["memberFailureGrace=5s"]).await;
    let clusters: Api<EtcdCluster> = env.api();
    let mut up = env.cluster("up", 3, serde_json::json!({}));
    up.spec.version = Some("3.4.23".into());
    clusters.create(&PostParams::default(), &up).await.unwrap();
    env.wait_ready("up", 3, Duration::from_secs(180)).await;
    let ids = env.member_ids("up").await;
    let writer = env.writer("up", "/up");
    // Writes flowing before the first member is touched...
    eventually(
        "writes before the upgrade",
        Duration::from_secs(60),
        || async { (writer.acked() >= 20).then_some(()) },
    )
    .await;

    clusters
        .patch(
            "up",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"version": "3.5.17"}})),
        )
        .await
        .unwrap();
    eventually(
        "every member on 3.5.17",
        Duration::from_secs(300),
        || async {
            let s = env.wait_ready("up", 3, Duration::from_secs(240)).await;
            let images: Vec<String> = env
                .member_pods("up")
                .await
                .iter()
                .filter_map(|p| p.spec.as_ref()?.containers[0].image.clone())
                .collect();
            (s.current_version.as_deref() == Some("3.5.17")
                && images.iter().all(|i| i == "quay.io/coreos/etcd:v3.5.17"))
            .then_some(())
        },
    )
    .await;
    // In place: the members kept their identity (emptyDir data survives a
    // container image change; the Pod is the same).
    assert_eq!(env.member_ids("up").await, ids);
    // ...and after the last one is on 3.5 (how many land while members
    // restart depends on the machine, so it is not counted).
    let after = writer.acked();
    eventually(
        "writes after the upgrade",
        Duration::from_secs(60),
        || async { (writer.acked() >= after + 20).then_some(()) },
    )
    .await;
    let acked = writer.finish().await;
    env.assert_all_acked_readable("up", "/up", &acked).await;
}
