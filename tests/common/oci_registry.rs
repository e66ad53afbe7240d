//! A real OCI registry for plugin artifacts: Debian's `docker-registry`
//! (distribution 2.8) with TLS from a CA generated per test and htpasswd
//! (bcrypt) basic auth, on a random port of a given address; and a static
//! https file server (nginx) for `https://` plugin sources. Killed on drop.

use std::path::PathBuf;

use base64::Engine as _;
use etcd_operator::plugins::source::Sha256Digest;

use super::{Process, free_port, issue_cert, make_ca, run_ok, serve_on};

pub const USER: &str = "plugins";
pub const PASSWORD: &str = "s3cret-registry";

pub struct Registry {
    process: Option<Process>,
    dir: tempfile::TempDir,
    host: String,
    port: u16,
}

/// A CA and a server certificate for `host` in `dir` (`ca.pem`, `server.pem`, `server-key.pem`).
fn tls(dir: &std::path::Path, host: &str) {
    make_ca(dir, "etcd-operator test registry CA");
    let san = if host.parse::<std::net::IpAddr>().is_ok() {
        format!("IP:{host}")
    } else {
        format!("DNS:{host}")
    };
    issue_cert(
        dir,
        "server",
        &format!("/CN={host}"),
        &format!("subjectAltName={san}\nextendedKeyUsage=serverAuth"),
    );
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_on("127.0.0.1")
    }

    /// A registry listening on `host`, an address of this machine.
    pub fn start_on(host: &str) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("oci-registry-")
            .tempdir()
            .unwrap();
        tls(dir.path(), host);
        let hash = run_ok(std::process::Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
        std::fs::write(dir.path().join("htpasswd"), hash.trim()).unwrap();
        let mut registry = Registry {
            process: None,
            dir,
            host: host.to_string(),
            port: free_port(),
        };
        registry.restart();
        registry
    }

    /// Start it (again, on the same port and storage).
    pub fn restart(&mut self) {
        let d = self.dir.path().display();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {d}/data\n\
             http:\n  addr: {}:{}\n  tls:\n    certificate: {d}/server.pem\n    key: {d}/server-key.pem\n\
             auth:\n  htpasswd:\n    realm: etcd-operator-tests\n    path: {d}/htpasswd\n",
            self.host, self.port
        );
        std::fs::write(self.dir.path().join("config.yml"), config).unwrap();
        let mut cmd = std::process::Command::new("docker-registry");
        cmd.arg("serve").arg(self.dir.path().join("config.yml"));
        self.process = Some(serve_on(cmd, &self.host, self.port, "docker-registry"));
    }

    /// Stop it (a registry that is down).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// `HOST:PORT`, as references and credentials name it.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `oci://HOST:PORT/<repo>`.
    pub fn reference(&self, repo: &str) -> String {
        format!("oci://{}/{repo}", self.address())
    }

    /// The CA that signed the registry's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A Docker config.json with `user`/`password` for this registry.
    pub fn auth_file_with(&self, user: &str, password: &str) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("auth-{user}-{}.json", password.len()));
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::write(
            &path,
            format!(
                r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
                self.address()
            ),
        )
        .unwrap();
        path
    }

    /// The right credentials.
    pub fn auth_file(&self) -> PathBuf {
        self.auth_file_with(USER, PASSWORD)
    }

    /// `etcd-operator plugin ARGS…` with this registry's CA and credentials
    /// and the CLI cache in `cache`; returns stdout.
    pub fn plugin_cli(&self, cache: &std::path::Path, args: &[&str]) -> String {
        run_ok(
            std::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
                .arg("plugin")
                .args(args)
                .arg("--registry-ca")
                .arg(self.ca())
                .arg("--registry-auth")
                .arg(self.auth_file())
                .env("ETCD_OPERATOR_CACHE_DIR", cache),
        )
    }

    /// `etcd-operator plugin push FILE` to `repo_tag` (`REPO:TAG`); returns
    /// the manifest digest it printed.
    pub fn push(&self, file: &std::path::Path, repo_tag: &str) -> Sha256Digest {
        let cache = self.dir.path().join("cli-cache");
        let out = self.plugin_cli(
            &cache,
            &["push", file.to_str().unwrap(), &self.reference(repo_tag)],
        );
        out.lines()
            .find_map(|l| l.strip_prefix("manifest "))
            .unwrap_or_else(|| panic!("no manifest digest in {out}"))
            .parse()
            .unwrap()
    }
}

/// Static files over https (nginx), for `https://` plugin sources.
pub struct HttpsFiles {
    _process: Process,
    dir: tempfile::TempDir,
    pub url: String,
}

impl HttpsFiles {
    pub fn start() -> HttpsFiles {
        let dir = tempfile::Builder::new()
            .prefix("https-files-")
            .tempdir()
            .unwrap();
        tls(dir.path(), "127.0.0.1");
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    \
             ssl_certificate {d}/server.pem;\n    ssl_certificate_key {d}/server-key.pem;\n    \
             root {d}/root;\n  }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let mut cmd = std::process::Command::new("nginx");
        cmd.arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"));
        let process = serve_on(cmd, "127.0.0.1", port, "nginx (https files)");
        HttpsFiles {
            _process: process,
            url: format!("https://127.0.0.1:{port}"),
            dir,
        }
    }

    /// Serve `bytes` at `/<name>`; returns its URL.
    pub fn put(&self, name: &str, bytes: &[u8]) -> String {
        std::fs::write(self.dir.path().join("root").join(name), bytes).unwrap();
        format!("{}/{name}", self.url)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}
