//! `spec.quotaBackendBytes`, `spec.autoCompaction` and `spec.etcdOptions`
//! on real etcd: every flag the operator accepts is one both etcd lines
//! know; a change restarts the members one at a time, followers first,
//! while a writer runs and every acknowledged write reads back; a typo is
//! refused by name and restarts nothing.

use std::time::Duration;

use etcd_operator::etcd::flags::KNOWN;
use etcd_operator::runtime::binaries::EtcdBinaries;

use crate::harness::{Operator, assert_all_acked_readable, client, cluster_yaml, writer};

#[test]
fn every_flag_the_operator_accepts_is_one_both_etcd_lines_know() {
    // Where `scripts/setup.sh` puts them and the operator looks, then PATH.
    let binaries = EtcdBinaries::discover(&[crate::common::tools().join("etcd")]);
    let versions = binaries.versions();
    for line in ["3.4", "3.5"] {
        let v = versions
            .iter()
            .rev()
            .find(|v| v.to_string().starts_with(line))
            .unwrap_or_else(|| panic!("an etcd {line} binary: {versions:?}"));
        let (_, binary) = binaries.resolve(&v.to_string()).unwrap();
        let out = std::process::Command::new(&binary)
            .arg("--help")
            .output()
            .unwrap();
        let help = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let flags = KNOWN.iter().map(|f| f.name).chain([
            "quota-backend-bytes",
            "auto-compaction-mode",
            "auto-compaction-retention",
        ]);
        for name in flags {
            let listed = help.lines().any(|l| {
                l.trim_start()
                    .strip_prefix(&format!("--{name}"))
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '=']))
            });
            assert!(listed, "etcd {v} does not list --{name}");
        }
    }
}

/// The command line of process `pid`.
fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_flags_restart_members_one_at_a_time_followers_first_while_writes_go_on() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let status = op.wait_ready("c", 3).await;
    for (_, pid) in op.pids("c") {
        assert!(
            !cmdline(pid)
                .iter()
                .any(|a| a.starts_with("--snapshot-count")),
            "no extra flags before"
        );
    }
    let kv = client(&status).await;
    let leader_id = etcd_operator::etcd::status(&status.client_urls[0])
        .await
        .unwrap()
        .leader;
    let leader = kv
        .clone()
        .member_list()
        .await
        .unwrap()
        .members()
        .iter()
        .find(|m| m.id() == leader_id)
        .unwrap()
        .name()
        .to_string();
    let writes = writer(&op, "c", "/acked");

    let flags = "  quotaBackendBytes: 104857600\n  autoCompaction:\n    mode: revision\n    retention: \"1000\"\n  etcdOptions:\n    snapshot-count: \"5000\"\n";
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", flags));
    let events = op.wait_events("MemberReconfigured", 3).await;
    op.wait_ready("c", 3).await;
    let named: Vec<String> = events
        .iter()
        .map(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(named.len(), 3, "{events:?}");
    assert_eq!(named[2], leader, "the leader last: {events:?}");
    let mut distinct = named.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "each member once: {events:?}");
    assert!(
        events[0]["message"].as_str().unwrap().contains(
            "--quota-backend-bytes=104857600 --auto-compaction-mode=revision \
             --auto-compaction-retention=1000 --snapshot-count=5000 (was: no extra flags)"
        ),
        "{events:?}"
    );
    let pids = op.pids("c");
    assert_eq!(pids.len(), 3);
    for (name, pid) in &pids {
        let args = cmdline(*pid);
        for flag in [
            "--quota-backend-bytes=104857600",
            "--auto-compaction-mode=revision",
            "--auto-compaction-retention=1000",
            "--snapshot-count=5000",
        ] {
            assert!(args.iter().any(|a| a == flag), "{name}: {args:?}");
        }
    }

    let acked = writes.finish().await;
    assert!(!acked.is_empty());
    assert_all_acked_readable(&op, "c", "/acked", &acked).await;

    // A typo: refused by name, nothing restarted.
    let typo = flags.replace("snapshot-count", "snapshot-cuont");
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", &typo));
    let refused = op
        .wait("c", "the typo refused", |s| {
            s.reason.as_deref().is_some_and(|r| {
                r.contains(
                    "spec.etcdOptions.snapshot-cuont is not an etcd flag the operator accepts",
                ) && r.contains("did you mean snapshot-count?")
            })
        })
        .await;
    assert!(!op.events_of("SpecRefused").is_empty(), "{:?}", op.events());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(op.events_of("MemberReconfigured").len(), 3, "{refused:?}");
    assert_eq!(op.pids("c"), pids, "no member restarted");
    assert_eq!(op.events_of("StepFailed").len(), 0, "{:?}", op.events());
}
