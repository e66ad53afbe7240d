//! The single-node Kubernetes cluster the tests run on, built from real
//! components on this machine by `node/start.sh`: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kubelet and kube-proxy from the
//! pinned `k8s.io/kubernetes` module, CoreDNS from its Go module (all built by
//! `scripts/build-kube.sh`), containerd, runc and the CNI plugins from Debian.
//! Pods run in containers from images built here (no registry), in network
//! namespaces on a bridge whose gateway is the node's own address.
//!
//! One node per test process, started on first use and shared by every test
//! (each in its own namespace), as a real cluster is shared: two kubelets or
//! two kube-proxies cannot share a machine's cgroups and iptables. It is torn
//! down by `node/teardown.sh`, started beside it, when the test process exits
//! (however it exits), and a node left by a killed run is removed first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::common::{repo, run_ok, tools};

/// The operator image the tests install with the chart (`image.tag`).
pub const OPERATOR_IMAGE_TAG: &str = "test";
const OPERATOR_REPOSITORY: &str = "ghcr.io/etcd-operator/etcd-operator";

pub struct Node {
    /// Everything the node wrote (certificates, logs, containerd's root, ...).
    pub state: PathBuf,
    /// The node's address: the Pod network's gateway, where the host's
    /// test servers listen for Pods to reach them.
    pub ip: String,
    containerd: PathBuf,
}

fn here() -> PathBuf {
    repo().join("tests/kubernetes/node")
}

/// The directories of the built Kubernetes binaries and of CoreDNS (building them if needed).
fn binaries() -> (PathBuf, PathBuf) {
    let out = Command::new(repo().join("scripts/build-kube.sh"))
        .output()
        .expect("scripts/build-kube.sh");
    assert!(
        out.status.success(),
        "building the Kubernetes binaries failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(PathBuf::from);
    (lines.next().unwrap(), lines.next().unwrap())
}

impl Node {
    /// The node of this test process, started on first use.
    pub fn shared() -> &'static Node {
        static NODE: OnceLock<Node> = OnceLock::new();
        NODE.get_or_init(Node::start)
    }

    fn start() -> Node {
        let state = std::env::temp_dir().join("etcd-operator-test-node");
        let teardown = here().join("teardown.sh");
        // What a killed run left, then a watcher that removes this node when
        // this process exits.
        run_ok(Command::new(&teardown).arg(&state));
        // ETCD_OPERATOR_KEEP_NODE=1 keeps it after the run, to look at (the
        // next run removes it).
        if std::env::var_os("ETCD_OPERATOR_KEEP_NODE").is_none() {
            Command::new("setsid")
                .arg("-f")
                .arg(&teardown)
                .arg(&state)
                .arg(std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("setsid");
        }
        let (kube, coredns) = binaries();
        let out = Command::new(here().join("start.sh"))
            .arg(&state)
            .arg(&kube)
            .arg(coredns.join("coredns"))
            .arg(tools().join("etcd/3.5/etcd"))
            .stdout(Stdio::null())
            .output()
            .expect("node/start.sh");
        assert!(
            out.status.success(),
            "the test node did not start:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env: BTreeMap<String, String> = std::fs::read_to_string(state.join("node.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let node = Node {
            ip: env["NODE_IP"].clone(),
            containerd: PathBuf::from(&env["CONTAINERD"]),
            state,
        };
        node.import_operator_image();
        node
    }

    /// The operator image as `deploy/Dockerfile` lays it out
    /// (`scripts/build-image-root.sh`), with the operator binary under test
    /// and the C libraries it links, imported as
    /// `ghcr.io/etcd-operator/etcd-operator:test`.
    fn import_operator_image(&self) {
        let root = self.state.join("images/operator");
        // The benchmarks measure a release build (`benches/kubernetes.sh`).
        let bin = std::env::var("ETCD_OPERATOR_IMAGE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_etcd-operator").to_string());
        let bin = bin.as_str();
        run_ok(
            Command::new(repo().join("scripts/build-image-root.sh"))
                .arg(&root)
                .env("ETCD_OPERATOR_BIN", bin),
        );
        let ldd = run_ok(Command::new("ldd").arg(bin));
        for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
            let to = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(lib, &to).unwrap();
        }
        self.import(
            &format!("{OPERATOR_REPOSITORY}:{OPERATOR_IMAGE_TAG}"),
            &root,
            &["/usr/local/bin/etcd-operator"],
        );
    }

    /// Build a one-layer image `name` from `rootfs` and import it into the
    /// node's containerd.
    pub fn import(&self, name: &str, rootfs: &Path, entrypoint: &[&str]) {
        let tar = self
            .state
            .join("images")
            .join(format!("{}.tar", name.replace(['/', ':'], "_")));
        run_ok(
            Command::new(here().join("image.sh"))
                .arg(name)
                .arg(rootfs)
                .arg(&tar)
                .args(entrypoint),
        );
        run_ok(
            Command::new("ctr")
                .arg("-a")
                .arg(&self.containerd)
                .args(["-n", "k8s.io", "images", "import"])
                .arg(&tar),
        );
    }

    /// The host PID of a running container (`containerd://<id>`, as a Pod's
    /// status names it).
    pub fn container_pid(&self, container_id: &str) -> u32 {
        let id = container_id.trim_start_matches("containerd://");
        let tasks = run_ok(
            Command::new("ctr")
                .arg("-a")
                .arg(&self.containerd)
                .args(["-n", "k8s.io", "tasks", "ls"]),
        );
        tasks
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?, f.next()?))
            })
            .find(|(task, _)| *task == id)
            .and_then(|(_, pid)| pid.parse().ok())
            .unwrap_or_else(|| panic!("no running task {id}:\n{tasks}"))
    }

    /// The host PID of a running Pod's first container.
    pub fn pod_pid(&self, pod: &k8s_openapi::api::core::v1::Pod) -> u32 {
        let status = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref());
        let id = status
            .and_then(|c| c.first()?.container_id.clone())
            .unwrap_or_else(|| panic!("Pod {:?} has no container yet", pod.metadata.name));
        self.container_pid(&id)
    }

    /// SIGKILL the process of a running Pod's first container (a member's
    /// etcd), as a crash would.
    pub fn kill_pod_process(&self, pod: &k8s_openapi::api::core::v1::Pod) {
        let pid = self.pod_pid(pod);
        crate::common::run_ok(Command::new("kill").args(["-9", &pid.to_string()]));
    }

    /// Run `args` in the network namespace of process `pid` (a Pod's: the
    /// harness made it, through containerd).
    pub fn in_netns(&self, pid: u32, args: &[&str]) {
        run_ok(
            Command::new("nsenter")
                .args(["-t", &pid.to_string(), "-n"])
                .args(args),
        );
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.state.join("admin.kubeconfig")
    }

    /// A client authenticated as the admin (system:masters).
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.admin_kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// The last lines of a node component's log (`kubelet`, `containerd`, ...).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let log = std::fs::read_to_string(self.state.join(format!("logs/{component}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}
