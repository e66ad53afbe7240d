//! Harness for `etcd-operator local` tests: runs the real binary against a
//! temporary directory and real etcd processes, and cleans everything up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_operator::api::EtcdClusterStatus;

use crate::common::writer::Writer;

pub const DEADLINE: Duration = Duration::from_secs(120);
/// For compiling every plugin of the operator's directory from cold.
const PLUGIN_COMPILE_DEADLINE: Duration = Duration::from_secs(300);

/// One operator process and its directory.
pub struct Operator {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
    /// Failpoints armed for the next spawn (`ETCD_OPERATOR_FAILPOINTS`).
    failpoints: Option<String>,
}

impl Operator {
    /// Start an operator with short failure thresholds.
    pub fn start(extra: &[&str]) -> Operator {
        Operator::start_with_plugins(&crate::common::test_plugin_dir(), extra)
    }

    /// [`Operator::start`] with plugins from `plugin_dir`.
    pub fn start_with_plugins(plugin_dir: &Path, extra: &[&str]) -> Operator {
        let mut op = Operator::new(plugin_dir, extra);
        op.spawn();
        op
    }

    fn new(plugin_dir: &Path, extra: &[&str]) -> Operator {
        let dir = tempfile::Builder::new()
            .prefix("etcd-op-test-")
            .tempdir()
            .unwrap();
        let mut args: Vec<String> = [
            "--member-failure-grace",
            "4s",
            "--quorum-loss-timeout",
            "6s",
            "--poll-interval",
            "200ms",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        args.push("--plugin-dir".into());
        args.push(plugin_dir.display().to_string());
        args.extend(extra.iter().map(ToString::to_string));
        Operator {
            dir,
            child: None,
            args,
            failpoints: None,
        }
    }

    /// [`Operator::start_with_plugins`] without waiting for the plugins to
    /// compile: for the scenario that checks what happens meanwhile.
    pub fn start_compiling(plugin_dir: &Path, extra: &[&str]) -> Operator {
        let mut op = Operator::new(plugin_dir, extra);
        op.spawn_process();
        op
    }

    /// Whether the operator has finished compiling its plugins since it started.
    pub fn plugins_loaded(&self) -> bool {
        self.plugin_loads() > 0
    }

    /// An operator that is killed when it reaches failpoint `point`.
    pub fn start_armed(point: &str, extra: &[&str]) -> Operator {
        let mut op = Operator::new(&crate::common::test_plugin_dir(), extra);
        op.failpoints = Some(point.to_string());
        op.spawn();
        op
    }

    /// Wait until the armed failpoint killed the operator (SIGKILL).
    pub async fn wait_killed_at_failpoint(&mut self) {
        use std::os::unix::process::ExitStatusExt;
        let start = Instant::now();
        let mut child = self.child.take().expect("operator running");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the operator never reached failpoint {:?}\n{}",
                    self.failpoints,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            status.signal(),
            Some(9),
            "killed by its failpoint: {status:?}\n{}",
            self.log_tail()
        );
        assert!(
            self.log_tail().contains("failpoint armed"),
            "{}",
            self.log_tail()
        );
    }

    /// Start the operator again with no failpoint armed.
    pub fn restart_disarmed(&mut self) {
        self.failpoints = None;
        self.restart();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// How many times this operator's log says its plugin directory was
    /// loaded (or could not be read): once per start.
    fn plugin_loads(&self) -> usize {
        std::fs::read_to_string(self.path().join("operator.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains("plugins loaded") || l.contains("cannot read the plugin directory")
            })
            .count()
    }

    /// Start the operator and wait until it has compiled its plugins (or
    /// exited): it compiles them in the background, and a scenario should
    /// not race its own backup against a cold compile. A fresh build of the
    /// Python and JavaScript examples is never in the compile cache
    /// (componentize-py's output differs from build to build), and compiling
    /// one takes about a minute on two busy cores.
    fn spawn(&mut self) {
        let before = self.plugin_loads();
        self.spawn_process();
        let start = Instant::now();
        while self.plugin_loads() == before {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().unwrap().is_some()
            {
                return;
            }
            if start.elapsed() > PLUGIN_COMPILE_DEADLINE {
                panic!(
                    "the operator did not load its plugins within {PLUGIN_COMPILE_DEADLINE:?}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("operator.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
            .arg("local")
            .arg("--dir")
            .arg(self.path())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .env(
                etcd_operator::failpoints::ENV,
                self.failpoints.as_deref().unwrap_or(""),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Start the operator again on the same directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the operator first");
        self.spawn();
    }

    /// SIGKILL the operator (members keep running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the operator and wait for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("operator running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "operator did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn apply(&self, file: &str, yaml: &str) {
        let tmp = self.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.path().join(file)).unwrap();
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.path().join(file)).unwrap();
    }

    /// The operator's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where the `local` plugin keeps backups.
    pub fn backups(&self) -> PathBuf {
        self.path().join(".backups")
    }

    /// The status file of any kind of object.
    pub fn object_status<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        name: &str,
    ) -> Option<T> {
        let text = std::fs::read_to_string(
            self.path()
                .join(".status")
                .join(kind.to_ascii_lowercase())
                .join(format!("{name}.yaml")),
        )
        .ok()?;
        serde_yaml::from_str(&text).ok()
    }

    /// Poll the status of `kind`/`name` until `pred` holds.
    pub async fn wait_object<T: serde::de::DeserializeOwned + std::fmt::Debug>(
        &self,
        kind: &str,
        name: &str,
        what: &str,
        pred: impl Fn(&T) -> bool,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(s) = self.object_status::<T>(kind, name)
                && pred(&s)
            {
                return s;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out waiting for {kind} {name}: {what}\nlast status: {:#?}\noperator log tail:\n{}",
                    self.object_status::<T>(kind, name),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Events of one reason.
    /// The operator's Events of `reason`, once there are `n` (2 min).
    pub async fn wait_events(&self, reason: &str, n: usize) -> Vec<serde_json::Value> {
        let start = Instant::now();
        loop {
            let events = self.events_of(reason);
            if events.len() >= n {
                return events;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{n} {reason}: {:?}\n{}",
                self.events(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn events_of(&self, reason: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .collect()
    }

    pub fn status(&self, name: &str) -> Option<EtcdClusterStatus> {
        let text = std::fs::read_to_string(
            self.path()
                .join(".status/etcdcluster")
                .join(format!("{name}.yaml")),
        )
        .ok()?;
        serde_yaml::from_str(&text).ok()
    }

    /// Poll the status of `name` until `pred` holds.
    pub async fn wait(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&EtcdClusterStatus) -> bool,
    ) -> EtcdClusterStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status(name)
                && pred(&s)
            {
                return s;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out waiting for {name}: {what}\nlast status: {:#?}\noperator log tail:\n{}",
                    self.status(name),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until `name` has `size` ready voting members and nothing to do.
    pub async fn wait_ready(&self, name: &str, size: usize) -> EtcdClusterStatus {
        let want = format!("{size}/{size}");
        self.wait(name, &format!("{want} ready and steady"), |s| {
            s.ready.as_deref() == Some(want.as_str())
                && s.members.ready.len() == size
                && s.members.unready.is_empty()
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Progressing" && c.status == "False")
        })
        .await
    }

    /// Wait until every one of `size` members of `name` runs `version` and
    /// nothing is left to do (an upgrade finished).
    pub async fn wait_upgraded(&self, name: &str, size: usize, version: &str) -> EtcdClusterStatus {
        self.wait(name, &format!("all members on {version}"), |s| {
            s.current_version.as_deref() == Some(version)
                && s.members.ready.len() == size
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Progressing" && c.status == "False")
        })
        .await
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.path().join("operator.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path().join(".status/events.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn member_dirs(&self, cluster: &str) -> Vec<PathBuf> {
        let dir = self.path().join(".data/default").join(cluster);
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        out.sort();
        out
    }

    /// (member name, pid) of running members.
    pub fn pids(&self, cluster: &str) -> Vec<(String, i32)> {
        self.member_dirs(cluster)
            .iter()
            .filter_map(|d| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(d.join("member.json")).ok()?).ok()?;
                let pid = v["pid"].as_i64()? as i32;
                alive(pid).then(|| (v["name"].as_str().unwrap().to_string(), pid))
            })
            .collect()
    }

    /// SIGKILL a member; optionally delete its data (a lost disk).
    pub fn kill_member(&self, cluster: &str, member: &str, delete_data: bool) {
        let (_, pid) = self
            .pids(cluster)
            .into_iter()
            .find(|(n, _)| n == member)
            .expect("member running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let start = Instant::now();
        while alive(pid) {
            assert!(start.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(20));
        }
        if delete_data {
            let dir = self
                .path()
                .join(".data/default")
                .join(cluster)
                .join(member)
                .join("data");
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}

pub fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
}

impl Drop for Operator {
    /// Kill the operator and every etcd member it started.
    fn drop(&mut self) {
        self.kill();
        let data = self.path().join(".data");
        for ns in std::fs::read_dir(&data).into_iter().flatten().flatten() {
            for cluster in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                for member in std::fs::read_dir(cluster.path())
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let Ok(bytes) = std::fs::read(member.path().join("member.json")) else {
                        continue;
                    };
                    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                        continue;
                    };
                    if let Some(pid) = v["pid"].as_i64() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "operator log tail ({}):\n{}",
                self.path().display(),
                self.log_tail()
            );
        }
    }
}

pub fn cluster_yaml(name: &str, size: usize, version: &str, extra: &str) -> String {
    format!(
        "apiVersion: etcd.database.coreos.com/v1beta2\nkind: EtcdCluster\nmetadata:\n  name: {name}\nspec:\n  size: {size}\n  version: \"{version}\"\n{extra}"
    )
}

/// A client of the cluster's ready members.
pub async fn client(status: &EtcdClusterStatus) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    etcd_client::Client::connect(&status.client_urls, Some(opts))
        .await
        .unwrap()
}

/// Write `n` keys `prefix/i`; returns their values.
pub async fn write_keys(
    status: &EtcdClusterStatus,
    prefix: &str,
    n: usize,
) -> Vec<(String, String)> {
    let mut c = client(status).await;
    let mut out = Vec::new();
    for i in 0..n {
        let (k, v) = (format!("{prefix}/{i:05}"), format!("value-{i}"));
        c.put(k.as_str(), v.as_str(), None).await.unwrap();
        out.push((k, v));
    }
    out
}

/// Every key under `prefix`, sorted.
pub async fn read_prefix(status: &EtcdClusterStatus, prefix: &str) -> Vec<(String, String)> {
    let stored = crate::common::writer::read_prefix(&mut client(status).await, prefix).await;
    stored.into_iter().collect()
}

/// Wait for several clusters.
pub async fn wait_ready_all(op: &Operator, clusters: &[(&str, usize)]) {
    for (name, size) in clusters {
        op.wait_ready(name, *size).await;
    }
}

/// A [`Writer`] to the client URLs in a local cluster's status, read again
/// each round.
pub fn writer(op: &Operator, cluster: &'static str, prefix: &'static str) -> Writer {
    let status_file = op
        .path()
        .join(".status/etcdcluster")
        .join(format!("{cluster}.yaml"));
    Writer::spawn(
        prefix,
        Box::new(move || {
            let urls = std::fs::read_to_string(&status_file)
                .ok()
                .and_then(|t| {
                    serde_yaml::from_str::<etcd_operator::api::EtcdClusterStatus>(&t).ok()
                })
                .map(|s| s.client_urls)
                .unwrap_or_default();
            Box::pin(async move { urls })
        }),
    )
}

/// A [`Writer`] to fixed `urls`, whatever the status says (a status that no
/// longer lists members must not stop the writes).
pub fn writer_to(prefix: &'static str, urls: Vec<String>) -> Writer {
    Writer::spawn(
        prefix,
        Box::new(move || {
            let urls = urls.clone();
            Box::pin(async move { urls })
        }),
    )
}

/// Every acknowledged write must be readable (extra keys from writes whose
/// acknowledgement was lost in a failure are allowed).
pub async fn assert_all_acked_readable(
    op: &Operator,
    cluster: &str,
    prefix: &str,
    acked: &[(String, String)],
) {
    let s = op.status(cluster).unwrap();
    let stored = crate::common::writer::read_prefix(&mut client(&s).await, prefix).await;
    crate::common::writer::assert_all_stored(acked, &stored);
}
