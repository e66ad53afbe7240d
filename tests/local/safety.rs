//! Data safety in `etcd-operator local`: the operator never destroys what
//! it merely cannot see, and never seeds a cluster that has served.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{Operator, assert_all_acked_readable, cluster_yaml};

/// Cuts only the operator's own TCP traffic on loopback: its process moves
/// into a cgroup of its own (the members, spawned before, stay where they
/// are) and a packet filter drops what that cgroup sends. The members keep
/// talking to each other and to clients. Lifted on drop.
struct OperatorCut {
    cgroup: PathBuf,
    name: String,
    home: PathBuf,
    pid: u32,
}

/// Where the cgroup v2 hierarchy is mounted.
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .map(|f| PathBuf::from(f[1]))
        .expect("the partition test needs a cgroup v2 hierarchy (none in /proc/mounts)")
}

fn iptables(op: &str, name: &str) -> std::process::Output {
    Command::new("iptables")
        .args(["-w", op, "OUTPUT", "-o", "lo", "-p", "tcp", "-m", "cgroup"])
        .args(["--path", name, "-j", "DROP"])
        .output()
        .expect("iptables must be installed (scripts/setup.sh installs it)")
}

impl OperatorCut {
    fn new(pid: u32) -> OperatorCut {
        let root = cgroup2_root();
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let home = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| root.join(p.trim_start_matches('/')))
            .unwrap_or_else(|| root.clone());
        let name = format!("etcd-op-cut-{pid}");
        let cgroup = root.join(&name);
        std::fs::create_dir_all(&cgroup).unwrap();
        let out = iptables("-A", &name);
        assert!(
            out.status.success(),
            "iptables -A: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(cgroup.join("cgroup.procs"), pid.to_string()).unwrap();
        OperatorCut {
            cgroup,
            name,
            home,
            pid,
        }
    }
}

impl Drop for OperatorCut {
    fn drop(&mut self) {
        let _ = std::fs::write(self.home.join("cgroup.procs"), self.pid.to_string());
        let _ = iptables("-D", &self.name);
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// Member ids, from the membership.
async fn member_ids(urls: &[String]) -> Vec<u64> {
    let mut c = etcd_client::Client::connect(urls, None).await.unwrap();
    crate::common::writer::member_ids(&mut c).await
}

const DESTRUCTIVE: &[&str] = &[
    "QuorumRecovered",
    "RestoringFromBackup",
    "QuorumRecoveredFromBackup",
    "MemberReplaced",
    "MemberRemoved",
    "MemberDeleted",
    "MemberRestarted",
    "ClusterSeeded",
    "ClusterRestored",
];

fn destructive_since(op: &Operator, from: usize) -> Vec<serde_json::Value> {
    op.events()[from..]
        .iter()
        .filter(|e| DESTRUCTIVE.contains(&e["reason"].as_str().unwrap_or_default()))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cut_off_from_a_healthy_cluster_destroys_nothing() {
    // Thresholds from the harness: quorum-loss timeout 6 s, failure grace 4 s.
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 3, "3.5.1", ""));
    let s = op.wait_ready("c", 3).await;
    let urls = s.client_urls.clone();
    let ids = member_ids(&urls).await;
    let pids = op.pids("c");
    let writer = crate::harness::writer_to("/cut", urls.clone());
    let events_before = op.events().len();

    let cut = OperatorCut::new(op.pid().unwrap());
    let s = op
        .wait("c", "MembersUnreachable in status", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.reason.as_deref() == Some("MembersUnreachable"))
        })
        .await;
    let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert!(
        degraded
            .message
            .as_deref()
            .is_some_and(|m| m.contains("cannot connect") || m.contains("timed out")),
        "names what failed: {degraded:?}"
    );
    // Watch for four times the quorum-loss timeout: nothing is acted on.
    let until = Instant::now() + Duration::from_secs(24);
    while Instant::now() < until {
        assert_eq!(
            destructive_since(&op, events_before),
            Vec::<serde_json::Value>::new(),
            "nothing may be destroyed while the operator is cut off"
        );
        assert_eq!(op.pids("c"), pids, "every member process still runs");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        op.events_of("MembersUnreachable").len(),
        1,
        "reported once: {:?}",
        op.events_of("MembersUnreachable")
    );
    drop(cut);

    let s = op.wait_ready("c", 3).await;
    assert!(
        s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "False"),
        "{:?}",
        s.conditions
    );
    assert!(!op.events_of("MembersReachable").is_empty());
    assert!(destructive_since(&op, events_before).is_empty());
    assert_eq!(member_ids(&urls).await, ids, "no member id changed");
    assert_eq!(op.pids("c"), pids);
    let acked = writer.finish().await;
    assert!(
        acked.len() > 100,
        "writes went on during the cut: {}",
        acked.len()
    );
    assert_all_acked_readable(&op, "c", "/cut", &acked).await;
}

/// An `etcd` that fails its first start as a taken port does, then runs the
/// real one (`--version` always answers, so discovery finds it).
fn etcd_failing_first_start(dir: &Path) -> PathBuf {
    let tools = std::env::var_os("ETCD_OPERATOR_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/etcd-operator/tools")
        });
    let real = tools.join("etcd/3.5/etcd");
    assert!(real.exists(), "etcd 3.5 at {}", real.display());
    let flag = dir.join("failed-once");
    let bin = dir.join("3.5");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$1\" in --version) exec '{real}' \"$@\";; esac\n\
         if [ ! -e '{flag}' ]; then touch '{flag}'; echo 'listen tcp 127.0.0.1:2380: bind: address already in use' >&2; exit 1; fi\n\
         exec '{real}' \"$@\"\n",
        real = real.display(),
        flag = flag.display()
    );
    let path = bin.join("etcd");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    flag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_that_dies_at_start_is_seeded_again_not_declared_lost() {
    let fake = tempfile::tempdir().unwrap();
    let flag = etcd_failing_first_start(fake.path());
    let op = Operator::start(&["--etcd-dir", &fake.path().display().to_string()]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    let s = op.wait_ready("c", 1).await;
    assert!(flag.exists(), "the first start did fail");
    assert!(
        op.events_of("Unrecoverable").is_empty(),
        "{:?}",
        op.events_of("Unrecoverable")
    );
    assert_eq!(
        op.events_of("ClusterSeeded").len(),
        2,
        "seeded again with a fresh member"
    );
    assert_eq!(op.member_dirs("c").len(), 1, "the failed seed is gone");
    assert!(s.first_served_time.is_some(), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_served_is_never_seeded_again_even_after_a_refusal() {
    let op = Operator::start(&[]);
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    let s = op.wait_ready("c", 1).await;
    let served = s.first_served_time.clone().expect("marked as served");
    let member = s.members.ready[0].clone();
    // A refusal reports no members...
    op.apply("c.yaml", &cluster_yaml("c", 9, "3.5.1", ""));
    op.wait("c", "the refusal", |s| {
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains("spec.size is 9"))
    })
    .await;
    // ...and then the member vanishes with its data (process and directory).
    op.kill_member("c", &member, true);
    std::fs::remove_dir_all(op.path().join(".data/default/c").join(&member)).unwrap();
    let seeded = op.events_of("ClusterSeeded").len();
    op.apply("c.yaml", &cluster_yaml("c", 1, "3.5.1", ""));
    let s = op
        .wait("c", "Failed: every member gone", |s| {
            s.phase.as_deref() == Some("Failed")
        })
        .await;
    assert_eq!(s.first_served_time.as_deref(), Some(served.as_str()));
    assert!(
        s.reason
            .as_deref()
            .is_some_and(|r| r.contains("will not start an empty cluster")),
        "{s:?}"
    );
    // It stays that way.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(op.events_of("ClusterSeeded").len(), seeded);
        assert!(op.pids("c").is_empty());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
