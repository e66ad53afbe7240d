//! `spec.maintenance.defrag` on real etcd: fragmented members are
//! defragmented one at a time, followers first and the leader last, while a
//! writer runs, and every acknowledged write reads back.

use std::time::Duration;

use crate::harness::{Operator, assert_all_acked_readable, client, cluster_yaml, writer};

/// Delete every key under `prefix` and compact the history away: their
/// pages are free in each member's file, which keeps its size.
async fn delete_and_compact(kv: &mut etcd_client::Client, prefix: &str) {
    kv.delete(
        prefix,
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    let revision = kv
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    kv.compact(
        revision,
        Some(etcd_client::CompactionOptions::new().with_physical()),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_members_are_defragmented_followers_first_while_writes_go_on() {
    let op = Operator::start(&[]);
    // 1 MiB free and 40 % of the file: what 8 MiB of deleted, compacted
    // keys leaves in a fresh cluster's file.
    op.apply(
        "c.yaml",
        &cluster_yaml(
            "c",
            3,
            "3.5.1",
            "  maintenance:\n    defrag:\n      minFreePercent: 40\n      minFreeBytes: 1048576\n",
        ),
    );
    let status = op.wait_ready("c", 3).await;
    let writes = writer(&op, "c", "/acked");
    let mut kv = client(&status).await;
    let value = "x".repeat(4096);
    for i in 0..2000 {
        kv.put(format!("/frag/{i:04}"), value.clone(), None)
            .await
            .unwrap();
    }
    delete_and_compact(&mut kv, "/frag/").await;
    let before: Vec<i64> = {
        let mut sizes = Vec::new();
        for url in &status.client_urls {
            sizes.push(etcd_operator::etcd::status(url).await.unwrap().db_size);
        }
        sizes
    };
    assert!(
        before.iter().all(|s| *s > 8 << 20),
        "the files kept the deleted keys' pages: {before:?}"
    );

    let events = op.wait_events("MemberDefragmented", 3).await;
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(
        messages[0].contains("(a follower)") && messages[1].contains("(a follower)"),
        "{messages:#?}"
    );
    assert!(messages[2].contains("(the leader)"), "{messages:#?}");
    for m in &messages {
        assert!(m.contains("MiB given back"), "{m}");
    }
    // The last one named is the leader, and each member was done once.
    let leader_id = etcd_operator::etcd::status(&status.client_urls[0])
        .await
        .unwrap()
        .leader;
    let members = kv.member_list().await.unwrap();
    let leader = members
        .members()
        .iter()
        .find(|m| m.id() == leader_id)
        .unwrap()
        .name()
        .to_string();
    assert!(
        messages[2].starts_with(&format!("defragmented member {leader} ")),
        "{leader}: {messages:#?}"
    );
    let mut named: Vec<&str> = messages
        .iter()
        .map(|m| m.split_whitespace().nth(2).unwrap())
        .collect();
    named.sort();
    named.dedup();
    assert_eq!(named.len(), 3, "{messages:#?}");
    for url in &status.client_urls {
        let after = etcd_operator::etcd::status(url).await.unwrap().db_size;
        assert!(after < 4 << 20, "{url} shrank: {after} (before {before:?})");
    }
    assert_eq!(op.events_of("StepFailed").len(), 0, "{:?}", op.events());

    let acked = writes.finish().await;
    assert!(!acked.is_empty());
    assert_all_acked_readable(&op, "c", "/acked", &acked).await;
}

/// A cluster whose database reached its quota raises NOSPACE on every
/// member. The members still answer and hold a quorum: the operator must
/// say so (Alarm condition, Event) and not take them for unhealthy, and
/// must not scale while the alarm lasts. Asked to recover
/// (`spec.maintenance.noSpace.recover`), it compacts and defragments, and
/// says the data itself fills the quota instead of disarming; once keys are
/// deleted it recovers, disarms, and the held-back scaling goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nospace_alarm_holds_scaling_back_and_is_recovered_once_keys_are_deleted() {
    let op = Operator::start(&[]);
    // 4 MB is etcd's quota for this cluster.
    let quota = "  quotaBackendBytes: 4000000\n";
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", quota));
    let status = op.wait_ready("c", 3).await;
    let mut kv = client(&status).await;
    let value = "x".repeat(4096);
    let mut refused = None;
    for i in 0..4000 {
        if let Err(e) = kv.put(format!("/fill/{i:04}"), value.clone(), None).await {
            refused = Some(e.to_string());
            break;
        }
    }
    let refused = refused.expect("the quota was reached");
    assert!(refused.contains("database space exceeded"), "{refused}");

    let alarmed = op
        .wait("c", "the Alarm condition", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Alarm" && c.status == "True")
        })
        .await;
    let alarm = alarmed
        .conditions
        .iter()
        .find(|c| c.type_ == "Alarm")
        .unwrap();
    assert_eq!(alarm.reason.as_deref(), Some("NOSPACE"), "{alarm:?}");
    assert!(
        alarm
            .message
            .as_deref()
            .is_some_and(|m| m.contains("refuses writes") && m.contains("etcdctl alarm disarm")),
        "{alarm:?}"
    );
    // Each member that reaches the quota raises its own: one Event still.
    assert!(!alarmed.alarms.is_empty());
    assert!(
        alarmed
            .alarms
            .iter()
            .all(|a| a.alarm == "NOSPACE" && a.member.starts_with("c-")),
        "{:?}",
        alarmed.alarms
    );
    let available = alarmed
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .unwrap();
    assert_eq!(
        available.status, "True",
        "reads still served: {available:?}"
    );
    assert_eq!(alarmed.members.ready.len(), 3, "{alarmed:?}");
    assert_eq!(op.events_of("AlarmRaised").len(), 1, "{:?}", op.events());

    // Scaling waits; past the member failure grace (4 s here) nothing is
    // replaced.
    op.apply("c.yaml", &cluster_yaml("c", 5, "3.5.1", quota));
    let held = op
        .wait("c", "scaling held back by the alarm", |s| {
            s.reason
                .as_deref()
                .is_some_and(|r| r.contains("etcd alarm NOSPACE"))
        })
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(op.status("c").unwrap().size, 3, "{held:?}");
    for reason in [
        "MemberReplaced",
        "MemberAdded",
        "QuorumRecovered",
        "StepFailed",
        "HistoryCompacted",
    ] {
        assert!(
            op.events_of(reason).is_empty(),
            "{reason}: {:?}",
            op.events()
        );
    }
    assert_eq!(
        op.events_of("AlarmRaised").len(),
        1,
        "raised once: {:?}",
        op.events()
    );

    // Asked to recover while the data itself fills the quota: compacted
    // and defragmented, but not disarmed, and told why.
    let recover = format!("{quota}  maintenance:\n    noSpace:\n      recover: true\n");
    op.apply("c.yaml", &cluster_yaml("c", 5, "3.5.1", &recover));
    let stuck = op.wait_events("NoSpaceNotRecovered", 1).await.remove(0);
    let message = stuck["message"].as_str().unwrap();
    assert!(
        message.contains("the data itself fills it; delete keys"),
        "{message}"
    );
    assert!(!op.events_of("HistoryCompacted").is_empty());
    assert!(
        op.events_of("MemberDefragmented").len() >= 3,
        "{:?}",
        op.events()
    );
    assert!(op.events_of("NoSpaceRecovered").is_empty());
    assert!(!op.status("c").unwrap().alarms.is_empty());
    assert!(
        kv.put("/after", "no", None).await.is_err(),
        "still refused while alarmed"
    );

    // The user deletes the data (etcd allows deletes under NOSPACE): the
    // recovery goes on by itself, to a disarm, and the scaling with it.
    kv.delete(
        "/fill/",
        Some(etcd_client::DeleteOptions::new().with_prefix()),
    )
    .await
    .unwrap();
    let recovered = op.wait_events("NoSpaceRecovered", 1).await.remove(0);
    assert!(
        recovered["message"]
            .as_str()
            .unwrap()
            .contains("writes are accepted again"),
        "{recovered}"
    );
    op.wait("c", "5 members once disarmed", |s| {
        s.size == 5 && s.members.ready.len() == 5
    })
    .await;
    assert!(
        !op.events_of("AlarmCleared").is_empty(),
        "{:?}",
        op.events()
    );
    let mut kv = client(&op.status("c").unwrap()).await;
    kv.put("/after", "yes", None).await.unwrap();
    assert_eq!(
        kv.get("/after", None).await.unwrap().kvs()[0]
            .value_str()
            .unwrap(),
        "yes"
    );
    assert_eq!(op.events_of("StepFailed").len(), 0, "{:?}", op.events());
}
