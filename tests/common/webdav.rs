//! A real WebDAV server for the JavaScript `webdav` example plugin: nginx
//! (Debian's, with its dav and dav-ext modules; installed by
//! scripts/setup.sh) on a random loopback port, with HTTP Basic
//! authentication, serving a temporary directory. Killed on drop.

use std::path::{Path, PathBuf};

use super::{Process, free_port, run_ok, serve_on};

pub const USER: &str = "etcd";
pub const PASSWORD: &str = "s3cret-dav";

/// A `v1` Secret named `dav` holding the server's credentials, as the
/// `webdav` plugin's `secretRef` reads them.
pub fn secret_yaml() -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: dav\nstringData:\n  username: {USER}\n  password: {PASSWORD}\n"
    )
}

pub struct WebDav {
    _process: Process,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:<port>`: what `allowedEndpoints` lists.
    pub endpoint: String,
    /// Base URL of the collection the plugin is configured with.
    pub url: String,
}

impl WebDav {
    pub fn start() -> WebDav {
        WebDav::start_on("127.0.0.1")
    }

    /// A server listening on `host`, an address of this machine (the
    /// Kubernetes tests' node address, which Pods reach).
    pub fn start_on(host: &str) -> WebDav {
        let dir = tempfile::Builder::new()
            .prefix("webdav-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etcd")).unwrap();
        std::fs::create_dir_all(dir.path().join("body")).unwrap();
        // One nginx process (`master_process off`): it keeps the user it was
        // started as (no unprivileged workers), and killing it on drop leaves
        // nothing behind.
        let hash =
            run_ok(std::process::Command::new("openssl").args(["passwd", "-apr1", PASSWORD]));
        std::fs::write(
            dir.path().join("htpasswd"),
            format!("{USER}:{}", hash.trim()),
        )
        .unwrap();
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "load_module /usr/lib/nginx/modules/ngx_http_dav_ext_module.so;\n\
             daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  client_max_body_size 0;\n\
               server {{\n    listen {host}:{port};\n    root {d}/root;\n\
                 location / {{\n      auth_basic \"etcd backups\";\n      auth_basic_user_file {d}/htpasswd;\n\
                   dav_methods PUT DELETE MKCOL COPY MOVE;\n      dav_ext_methods PROPFIND OPTIONS;\n\
                   create_full_put_path on;\n    }}\n  }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let mut cmd = std::process::Command::new("nginx");
        cmd.arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"));
        let process = serve_on(cmd, host, port, "nginx (WebDAV)");
        let endpoint = format!("http://{host}:{port}");
        WebDav {
            _process: process,
            url: format!("{endpoint}/etcd/"),
            endpoint,
            dir,
        }
    }

    /// The directory behind the `etcd` collection.
    pub fn files(&self) -> PathBuf {
        self.dir.path().join("root/etcd")
    }

    /// Every file under the collection, as keys relative to it (sorted).
    pub fn keys(&self) -> Vec<String> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.files(), &self.files(), &mut out);
        out.sort();
        out
    }

    /// The plugin configuration for this server.
    pub fn config(&self) -> Vec<(String, String)> {
        super::config(&[
            ("url", &self.url),
            ("username", USER),
            ("password", PASSWORD),
        ])
    }
}
