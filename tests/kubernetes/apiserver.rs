//! A real Kubernetes control plane for tests: etcd, a kube-apiserver and a
//! kube-controller-manager (garbage collection) built from the
//! k8s.io/kubernetes Go module (`scripts/build-kube.sh all`), on
//! random loopback ports, with generated certificates and an admin client.
//! Everything is killed and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Process, free_port, issue_cert, make_ca, openssl, repo, tools};

/// A CA, the API server's serving certificate, an admin client certificate
/// (group system:masters) and the service-account signing key.
fn make_pki(dir: &Path) {
    make_ca(dir, "test-kube-ca");
    issue_cert(
        dir,
        "apiserver",
        "/CN=kube-apiserver",
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth",
    );
    issue_cert(
        dir,
        "admin",
        "/O=system:masters/CN=admin",
        "extendedKeyUsage=clientAuth",
    );
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "sa.key",
        ],
    );
    openssl(dir, &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
}

/// The directory of the built Kubernetes binaries (building them if needed).
fn kube_binaries() -> PathBuf {
    let out = Command::new(repo().join("scripts/build-kube.sh"))
        .arg("all")
        .output()
        .expect("scripts/build-kube.sh");
    assert!(
        out.status.success(),
        "building kube-apiserver and kube-controller-manager failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn path_of(server: &ApiServer, file: &str) -> PathBuf {
    server.dir.path().join(file)
}

fn b64(bytes: Vec<u8>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// etcd + kube-apiserver, and an admin client.
pub struct ApiServer {
    pub dir: tempfile::TempDir,
    pub url: String,
    /// controller-manager, then kube-apiserver, then etcd: stopped in that order.
    children: Vec<Process>,
}

impl ApiServer {
    pub async fn start() -> ApiServer {
        let dir = tempfile::Builder::new()
            .prefix("kube-test-")
            .tempdir()
            .unwrap();
        let path = dir.path();
        make_pki(path);
        let bin = kube_binaries();

        let (client, peer) = (free_port(), free_port());
        let etcd = Command::new(tools().join("etcd/3.5/etcd"))
            .args(["--name", "kube", "--data-dir"])
            .arg(path.join("etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=kube=http://127.0.0.1:{peer}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path.join("etcd.log")).unwrap())
            .spawn()
            .unwrap();

        let port = free_port();
        let p = |f: &str| path.join(f).display().to_string();
        let apiserver = Command::new(bin.join("kube-apiserver"))
            .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={port}"))
            .arg(format!("--tls-cert-file={}", p("apiserver.pem")))
            .arg(format!("--tls-private-key-file={}", p("apiserver-key.pem")))
            .arg(format!("--client-ca-file={}", p("ca.pem")))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p("sa.key")
            ))
            .args([
                "--service-cluster-ip-range=10.96.0.0/24",
                "--authorization-mode=Node,RBAC",
            ])
            // Only a loopback address to advertise: no endpoint reconciler.
            .arg("--endpoint-reconciler-type=none")
            // The controller-manager runs only garbage collection: Pods
            // are admitted without a ServiceAccount (the operator's own
            // tokens come from the TokenRequest API).
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg(format!("--cert-dir={}", p("apiserver-certs")))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path.join("apiserver.log")).unwrap())
            .spawn()
            .unwrap();
        let mut server = ApiServer {
            url: format!("https://127.0.0.1:{port}"),
            dir,
            children: vec![Process(apiserver), Process(etcd)],
        };
        server.wait_ready().await;
        // Garbage collection through owner references (and the PVC
        // protection finalizer's removal), as a real control plane does.
        let kubeconfig = server.admin_kubeconfig();
        let manager = Command::new(bin.join("kube-controller-manager"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--controllers=garbage-collector-controller,persistentvolumeclaim-protection-controller")
            .args(["--leader-elect=false", "--bind-address=127.0.0.1"])
            .arg(format!("--secure-port={}", free_port()))
            .arg(format!(
                "--cert-dir={}",
                path_of(&server, "controller-manager-certs").display()
            ))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path_of(&server, "controller-manager.log")).unwrap())
            .spawn()
            .unwrap();
        server.children.insert(0, Process(manager));
        server
    }

    fn kubeconfig(&self, user: serde_json::Value) -> serde_json::Value {
        let ca = std::fs::read(self.dir.path().join("ca.pem")).unwrap();
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": self.url,
                "certificate-authority-data": b64(ca),
            }}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
            "current-context": "test",
        })
    }

    fn admin_user(&self) -> serde_json::Value {
        let read = |f: &str| std::fs::read(self.dir.path().join(f)).unwrap();
        serde_json::json!({
            "client-certificate-data": b64(read("admin.pem")),
            "client-key-data": b64(read("admin-key.pem")),
        })
    }

    /// A kubeconfig file for the admin, for processes under test.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        let path = self.dir.path().join("admin.kubeconfig");
        let text = serde_json::to_string(&self.kubeconfig(self.admin_user())).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A kubeconfig file authenticating as ServiceAccount `namespace/name`
    /// with a bound token from the TokenRequest API (no controller-manager needed).
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::ServiceAccount;
        let sas: kube::Api<ServiceAccount> = kube::Api::namespaced(self.client().await, namespace);
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600},
        }))
        .unwrap();
        let token: TokenRequest = sas
            .create_subresource("token", name, &kube::api::PostParams::default(), &request)
            .await
            .unwrap();
        let token = token.status.unwrap().token;
        let path = self
            .dir
            .path()
            .join(format!("{namespace}-{name}.kubeconfig"));
        let text =
            serde_json::to_string(&self.kubeconfig(serde_json::json!({"token": token}))).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A client authenticated as the admin (system:masters).
    pub async fn client(&self) -> kube::Client {
        let kubeconfig: kube::config::Kubeconfig =
            serde_json::from_value(self.kubeconfig(self.admin_user())).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    async fn wait_ready(&self) {
        let client = self.client().await;
        let start = Instant::now();
        loop {
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            if let Ok(text) = client.request_text(req).await
                && text.trim() == "ok"
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "kube-apiserver not ready; log tail:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.children.clear();
        if std::thread::panicking() {
            eprintln!("kube-apiserver log tail:\n{}", self.log_tail());
        }
    }
}
