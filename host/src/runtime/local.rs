//! The local runtime: members are etcd processes on this machine.
//!
//! Each member has a directory `<root>/<namespace>/<cluster>/<member>/` with
//! `member.json` (its ports, version and pid), `data/` (the etcd data dir)
//! and `etcd.log`. Processes run in their own process group, so they survive
//! the operator when asked to (`--keep-members`) and are re-adopted from
//! `member.json` on the next start.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::binaries::EtcdBinaries;
use crate::controller::{
    ClusterKey, MemberPlan, MemberUrls, Runtime, RuntimeError, RuntimeMember, StartMode,
};

/// What is remembered about one member between operator runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MemberRecord {
    name: String,
    peer_port: u16,
    client_port: u16,
    /// Version of the binary it last ran.
    version: String,
    /// Started at least once.
    started: bool,
    pid: Option<i32>,
    /// The extra etcd flags it was last started with.
    #[serde(default)]
    flags: Vec<String>,
}

/// Members as local processes.
pub struct LocalRuntime {
    root: PathBuf,
    binaries: EtcdBinaries,
    /// Processes this operator spawned that have exited (each is awaited,
    /// and so reaped, by a task of its own).
    exited: Arc<Mutex<HashSet<i32>>>,
    /// Per cluster, woken when one of its member processes exits, so that
    /// the cluster is reconciled on the exit rather than at its next tick.
    exits: Mutex<HashMap<ClusterKey, Arc<Notify>>>,
    /// Time to wait for a graceful stop before SIGKILL.
    stop_grace: Duration,
    /// Serialises port choice, so two reservations never pick one port.
    reserving: Mutex<()>,
}

fn member_err(member: &str) -> impl Fn(std::io::Error) -> RuntimeError + '_ {
    move |e| RuntimeError::Member {
        member: member.to_string(),
        message: e.to_string(),
    }
}

/// The lowest port the kernel hands out as the source port of outgoing
/// connections (`ip_local_port_range`). Member ports are chosen below it:
/// a port from `bind(0)` lies inside that range, and between choosing it
/// and etcd binding it one of the operator's own client connections could
/// take it ("address already in use" at start).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// Lowest port chosen for members.
const MEMBER_PORT_MIN: u16 = 10_000;

/// A port below the ephemeral range that nothing listens on now and that
/// no member in `taken` holds.
fn free_port(taken: &std::collections::HashSet<u16>) -> std::io::Result<u16> {
    use rand::Rng;
    let high = ephemeral_low().max(MEMBER_PORT_MIN + 1000);
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(MEMBER_PORT_MIN..high);
        if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port between {MEMBER_PORT_MIN} and {high} after 1000 tries"),
    ))
}

fn urls(r: &MemberRecord) -> MemberUrls {
    MemberUrls {
        peer: format!("http://127.0.0.1:{}", r.peer_port),
        client: format!("http://127.0.0.1:{}", r.client_port),
    }
}

impl LocalRuntime {
    /// `root` holds member directories; `binaries` are the etcd versions available.
    pub fn new(root: PathBuf, binaries: EtcdBinaries) -> Self {
        LocalRuntime {
            root,
            binaries,
            exited: Arc::default(),
            exits: Mutex::default(),
            stop_grace: Duration::from_secs(5),
            reserving: Mutex::default(),
        }
    }

    pub fn binaries(&self) -> &EtcdBinaries {
        &self.binaries
    }

    /// Replace `data` with the plan's snapshot, restored for this member's
    /// name, URLs and the plan's membership (`etcdutl snapshot restore`).
    async fn restore_data(
        &self,
        name: &str,
        data: &Path,
        plan: &MemberPlan,
        u: &MemberUrls,
    ) -> Result<(), RuntimeError> {
        let fail = |message: String| RuntimeError::Member {
            member: name.into(),
            message,
        };
        let snapshot = plan
            .snapshot
            .as_ref()
            .ok_or_else(|| fail("a restore needs a snapshot file".into()))?;
        let tool = self.binaries.snapshot_tool(Some(&plan.version))?;
        match std::fs::remove_dir_all(data) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(member_err(name)(e)),
        }
        let initial: Vec<String> = plan
            .initial_cluster
            .iter()
            .map(|(n, p)| format!("{n}={p}"))
            .collect();
        let out = tool
            .command()
            .arg("snapshot")
            .arg("restore")
            .arg(snapshot)
            .arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(data)
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", &plan.cluster_token])
            .args(["--initial-advertise-peer-urls", &u.peer])
            // The plan's snapshot is the operator's own staged file, whose
            // trailer (the sha256 this check recomputes) was verified as it
            // was downloaded, and nothing else writes there. The tool still
            // cuts the trailer off; its second sha256 of the whole database
            // is what it skips, two thirds of its time at 1.4 GiB. (On
            // Kubernetes the init container keeps the check: its copy came
            // over the network.)
            .arg("--skip-hash-check")
            .output()
            .await
            .map_err(|e| fail(format!("cannot run {}: {e}", tool.path.display())))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(data);
            return Err(fail(format!(
                "snapshot restore failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    fn cluster_dir(&self, c: &ClusterKey) -> PathBuf {
        self.root.join(&c.namespace).join(&c.name)
    }

    fn member_dir(&self, c: &ClusterKey, name: &str) -> PathBuf {
        self.cluster_dir(c).join(name)
    }

    fn read_record(dir: &Path) -> Option<MemberRecord> {
        serde_json::from_slice(&std::fs::read(dir.join("member.json")).ok()?).ok()
    }

    fn write_record(dir: &Path, r: &MemberRecord) -> Result<(), RuntimeError> {
        let tmp = dir.join("member.json.tmp");
        let bytes = serde_json::to_vec_pretty(r).expect("member record serializes");
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, dir.join("member.json")))
            .map_err(member_err(&r.name))
    }

    /// Is `pid` a live etcd process serving `data_dir`? Reaps it if it is our
    /// exited child.
    fn alive(&self, pid: i32, data_dir: &Path) -> bool {
        if self.exited.lock().expect("exited lock").contains(&pid) {
            return false;
        }
        if kill(Pid::from_raw(pid), None).is_err() {
            return false;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        {
            return false;
        }
        // Guard against pid reuse: the process must be serving this data dir.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let needle = data_dir.to_string_lossy();
        String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|a| a == needle)
    }

    async fn terminate(&self, pid: i32, data_dir: &Path) {
        if !self.alive(pid, data_dir) {
            return;
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + self.stop_grace;
        while Instant::now() < deadline {
            if !self.alive(pid, data_dir) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A leader whose followers are gone can take long to stop.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.alive(pid, data_dir) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Woken whenever a member process of cluster `c` this operator started
    /// exits (a permit is kept if nobody waits at that moment).
    pub fn exit_signal(&self, c: &ClusterKey) -> Arc<Notify> {
        self.exits
            .lock()
            .expect("exits lock")
            .entry(c.clone())
            .or_default()
            .clone()
    }

    /// Stop every member process of every cluster, keeping data (shutdown).
    pub async fn stop_all(&self) {
        let Ok(namespaces) = std::fs::read_dir(&self.root) else {
            return;
        };
        for ns in namespaces.flatten() {
            for cluster in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let key = ClusterKey {
                    namespace: ns.file_name().to_string_lossy().into_owned(),
                    name: cluster.file_name().to_string_lossy().into_owned(),
                };
                if let Ok(members) = self.list(&key).await {
                    for m in members.iter().filter(|m| m.running) {
                        let _ = self.stop(&key, &m.name).await;
                    }
                }
            }
        }
    }

    /// Every cluster that has member directories.
    pub fn clusters(&self) -> Vec<ClusterKey> {
        let mut out = Vec::new();
        for ns in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            for cluster in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                out.push(ClusterKey {
                    namespace: ns.file_name().to_string_lossy().into_owned(),
                    name: cluster.file_name().to_string_lossy().into_owned(),
                });
            }
        }
        out
    }

    /// Ports recorded by every member of every cluster of this runtime.
    fn ports_held(&self) -> std::collections::HashSet<u16> {
        let mut out = std::collections::HashSet::new();
        for c in self.clusters() {
            for m in std::fs::read_dir(self.cluster_dir(&c))
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Some(r) = Self::read_record(&m.path()) {
                    out.extend([r.peer_port, r.client_port]);
                }
            }
        }
        out
    }

    /// The pid of a running member, for tests and diagnostics.
    pub fn pid_of(&self, c: &ClusterKey, name: &str) -> Option<i32> {
        let dir = self.member_dir(c, name);
        Self::read_record(&dir)?
            .pid
            .filter(|pid| self.alive(*pid, &dir.join("data")))
    }
}

impl Runtime for LocalRuntime {
    async fn reserve(&self, c: &ClusterKey, name: &str) -> Result<MemberUrls, RuntimeError> {
        let dir = self.member_dir(c, name);
        if let Some(r) = Self::read_record(&dir) {
            return Ok(urls(&r));
        }
        std::fs::create_dir_all(&dir).map_err(member_err(name))?;
        let _one_at_a_time = self.reserving.lock().expect("reserving lock");
        let mut taken = self.ports_held();
        let peer_port = free_port(&taken).map_err(member_err(name))?;
        taken.insert(peer_port);
        let client_port = free_port(&taken).map_err(member_err(name))?;
        let r = MemberRecord {
            name: name.into(),
            peer_port,
            client_port,
            version: String::new(),
            started: false,
            pid: None,
            flags: Vec::new(),
        };
        Self::write_record(&dir, &r)?;
        Ok(urls(&r))
    }

    async fn list(&self, c: &ClusterKey) -> Result<Vec<RuntimeMember>, RuntimeError> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.cluster_dir(c)) else {
            return Ok(out);
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            let Some(r) = Self::read_record(&dir) else {
                continue;
            };
            let data = dir.join("data");
            out.push(RuntimeMember {
                name: r.name.clone(),
                urls: urls(&r),
                running: r.pid.is_some_and(|pid| self.alive(pid, &data)),
                has_data: data.join("member").join("wal").is_dir(),
                ever_started: r.started,
                version: r.version.clone(),
                flags: r.flags.clone(),
            });
        }
        Ok(out)
    }

    async fn start(&self, c: &ClusterKey, plan: &MemberPlan) -> Result<(), RuntimeError> {
        let name = plan.name.as_str();
        let dir = self.member_dir(c, name);
        let mut r = Self::read_record(&dir).ok_or_else(|| RuntimeError::Member {
            member: name.into(),
            message: "start before reserve: the member has no ports yet".into(),
        })?;
        let data = dir.join("data");
        if r.pid.is_some_and(|pid| self.alive(pid, &data)) {
            return Ok(());
        }
        let (version, binary) = self.binaries.resolve(&plan.version)?;
        let u = urls(&r);
        let initial: Vec<String> = plan
            .initial_cluster
            .iter()
            .map(|(n, p)| format!("{n}={p}"))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("etcd.log"))
            .map_err(member_err(name))?;
        if plan.mode == StartMode::Restore {
            self.restore_data(name, &data, plan, &u).await?;
        }
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-peer-urls",
                &u.peer,
                "--initial-advertise-peer-urls",
                &u.peer,
            ])
            .args([
                "--listen-client-urls",
                &u.client,
                "--advertise-client-urls",
                &u.client,
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-token", &plan.cluster_token])
            .args([
                "--initial-cluster-state",
                if matches!(plan.mode, StartMode::Seed | StartMode::Restore) {
                    "new"
                } else {
                    "existing"
                },
            ])
            .args(["--logger", "zap"])
            .args(&plan.flags)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(member_err(name))?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        if plan.mode == StartMode::ForceNewCluster {
            cmd.arg("--force-new-cluster");
        }
        let child = cmd.spawn().map_err(|e| RuntimeError::Member {
            member: name.into(),
            message: format!("cannot start {}: {e}", binary.display()),
        })?;
        let pid = child.id().map(|p| p as i32);
        if let Some(pid) = pid {
            // A pid the kernel hands out again is a new process.
            self.exited.lock().expect("exited lock").remove(&pid);
            let (exited, signal) = (self.exited.clone(), self.exit_signal(c));
            let member = name.to_string();
            let mut child = child;
            tokio::spawn(async move {
                let status = child.wait().await;
                tracing::debug!(member, pid, ?status, "etcd member process exited");
                exited.lock().expect("exited lock").insert(pid);
                signal.notify_one();
            });
        }
        r.pid = pid;
        r.started = true;
        r.version = version.to_string();
        r.flags = plan.flags.clone();
        Self::write_record(&dir, &r)?;
        tracing::info!(cluster = %c, member = name, %version, mode = ?plan.mode, pid, "etcd member started");
        Ok(())
    }

    async fn stop(&self, c: &ClusterKey, name: &str) -> Result<(), RuntimeError> {
        let dir = self.member_dir(c, name);
        if let Some(mut r) = Self::read_record(&dir) {
            if let Some(pid) = r.pid {
                let data = dir.join("data");
                self.terminate(pid, &data).await;
            }
            r.pid = None;
            Self::write_record(&dir, &r)?;
        }
        Ok(())
    }

    async fn delete(&self, c: &ClusterKey, name: &str) -> Result<(), RuntimeError> {
        self.stop(c, name).await?;
        let dir = self.member_dir(c, name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(member_err(name)(e)),
        }
        // Remove the cluster directory once it is empty.
        let _ = std::fs::remove_dir(self.cluster_dir(c));
        Ok(())
    }

    async fn check_restore(&self, _c: &ClusterKey, plan: &MemberPlan) -> Result<(), RuntimeError> {
        let fail = |message: String| RuntimeError::Member {
            member: plan.name.clone(),
            message,
        };
        self.binaries.resolve(&plan.version)?;
        self.binaries.snapshot_tool(Some(&plan.version))?;
        match &plan.snapshot {
            Some(path) if path.is_file() => Ok(()),
            Some(path) => Err(fail(format!(
                "the snapshot {} is not a readable file",
                path.display()
            ))),
            None => Err(fail("a restore needs a snapshot file".into())),
        }
    }

    async fn resolve_version(&self, requested: &str) -> Result<String, RuntimeError> {
        self.binaries.resolve(requested).map(|(v, _)| v.to_string())
    }
}
