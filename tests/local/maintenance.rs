//! `spec.maintenance.defrag` on real etcd: fragmented members are
//! defragmented one at a time, followers first and the leader last, while a
//! writer runs, and every acknowledged write reads back.

use std::time::{Duration, Instant};

use crate::harness::{Operator, assert_all_acked_readable, client, cluster_yaml, writer};

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
    kv.delete(
        "/frag/",
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

    let start = Instant::now();
    let events = loop {
        let events = op.events_of("MemberDefragmented");
        if events.len() >= 3 {
            break events;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{:?}\n{}",
            op.events(),
            op.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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
