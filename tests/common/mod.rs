//! Shared test harness: paths, plugin loading, small servers.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_operator::plugins::{Limits, LoadedPlugin, PluginEngine, registry};

pub mod oci_registry;
pub mod oss_server;
pub mod webdav;
pub mod writer;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// What the tests load as a plugin directory: the shipped plugins (links
/// into `plugins/dist/`) and the test-only ones (`faults`, `faults-policy`).
pub fn test_plugin_dir() -> PathBuf {
    repo().join("plugins/test-dist")
}

/// A built plugin from [`test_plugin_dir`].
pub fn plugin_path(name: &str) -> PathBuf {
    let path = test_plugin_dir().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run plugins/build.sh first",
        path.display()
    );
    path
}

/// An example plugin built from another language by
/// `plugins/examples/build.sh` (`webdav`, `time-window`, `count-age`).
pub fn example_path(name: &str) -> PathBuf {
    let path = repo()
        .join("plugins/examples/dist")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run plugins/examples/build.sh first",
        path.display()
    );
    path
}

pub fn plugin_bytes(name: &str) -> Vec<u8> {
    std::fs::read(plugin_path(name)).unwrap()
}

/// An engine with short call deadlines (so fault tests finish quickly) and a
/// compile cache shared across test runs.
pub fn engine() -> PluginEngine {
    engine_with(Limits {
        call_timeout: Duration::from_secs(3),
        ..Limits::default()
    })
}

pub fn engine_with(limits: Limits) -> PluginEngine {
    let cache = std::env::temp_dir().join("etcd-operator-test-wasm-cache");
    PluginEngine::new(limits, Some(cache)).unwrap()
}

pub fn load(engine: &PluginEngine, name: &str) -> LoadedPlugin {
    registry::load(engine, name, &plugin_bytes(name)).unwrap()
}

/// Poll `check` until it returns Some or `deadline` passes.
pub async fn wait_for<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Grants for a storage plugin tested against a server on loopback: HTTP to
/// `endpoint` only, with 127.0.0.1 allowed as a private network.
pub fn loopback_grants(endpoint: &str) -> etcd_operator::plugins::Grants {
    etcd_operator::plugins::Grants {
        egress: std::sync::Arc::new(
            etcd_operator::plugins::EgressPolicy::from_entries(
                &[endpoint.to_string()],
                &["127.0.0.1/32".into()],
            )
            .unwrap(),
        ),
        dir: None,
    }
}

pub fn config(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The tools directory `scripts/setup.sh` fills.
pub fn tools() -> PathBuf {
    std::env::var_os("ETCD_OPERATOR_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/etcd-operator/tools")
        })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process a test started; killed on drop.
pub struct Process(pub std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `cmd` (output discarded) and wait until loopback `port` accepts
/// connections. `what` names the server in failures.
pub fn serve(cmd: std::process::Command, port: u16, what: &str) -> Process {
    serve_on(cmd, "127.0.0.1", port, what)
}

/// [`serve`] for a server listening on `host` (an address of this machine).
pub fn serve_on(mut cmd: std::process::Command, host: &str, port: u16, what: &str) -> Process {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} (run scripts/setup.sh): {e}"));
    let process = Process(child);
    let start = Instant::now();
    while std::net::TcpStream::connect((host, port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    process
}

/// Run `etcd-operator plugin test` on a built plugin against a server at
/// `endpoint` (loopback allowed) with a 64 MiB round trip; assert that every
/// check passed and return the report.
pub fn plugin_test(plugin: &str, config: &[(String, String)], endpoint: &str) -> String {
    plugin_test_file(&plugin_path(plugin), config, endpoint, &[])
}

/// [`plugin_test`] of a plugin file anywhere, with extra `plugin test` flags.
pub fn plugin_test_file(
    plugin: &std::path::Path,
    config: &[(String, String)],
    endpoint: &str,
    extra: &[&str],
) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_etcd-operator"));
    cmd.args(["plugin", "test"])
        .arg(plugin)
        .args(extra)
        .args(["--large-mib", "64", "--allow-network", "127.0.0.1/32"])
        .args(["--allow-endpoint", endpoint]);
    for (k, v) in config {
        cmd.arg("--config").arg(format!("{k}={v}"));
    }
    let out = cmd.output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("67108864 bytes") && report.contains("9 passed, 0 failed"),
        "{report}"
    );
    report
}

/// Run `cmd` to completion, failing the test with its stderr unless it
/// succeeds; returns its stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run openssl in `dir`, failing the test with its output on error.
pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    run_ok(
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir),
    );
}

/// A P-256 CA in `dir` (`ca.pem`, `ca-key.pem`).
pub fn make_ca(dir: &std::path::Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

/// A certificate `<name>.pem` / `<name>-key.pem` signed by the CA in `dir`,
/// with `subject` and the extra extension lines `ext`.
pub fn issue_cert(dir: &std::path::Path, name: &str, subject: &str, ext: &str) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("{ext}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "1",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// A moto S3 server on a random loopback port (installed by scripts/setup.sh),
/// killed on drop. moto keeps objects in memory and does not check signatures.
pub struct Moto {
    _process: Process,
    pub endpoint: String,
    access_key: String,
    secret_key: String,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_on("127.0.0.1")
    }

    /// A moto server listening on `host`, an address of this machine (the
    /// Kubernetes tests' node address, which Pods reach), that checks SigV4
    /// signatures: its first three requests (unauthenticated) create an IAM
    /// user with an allow-all policy and an access key; every request after
    /// that must be signed with that key, so a wrong secret is refused
    /// (`SignatureDoesNotMatch`) as by AWS.
    pub fn start_on(host: &str) -> Moto {
        let port = free_port();
        let mut cmd = std::process::Command::new(tools().join("venv/bin/moto_server"));
        cmd.args(["-H", host, "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3");
        let process = serve_on(cmd, host, port, "moto_server");
        let endpoint = format!("http://{host}:{port}");
        let script = format!(
            "import boto3, json\n\
             iam = boto3.client('iam', endpoint_url='{endpoint}', aws_access_key_id='bootstrap', \
             aws_secret_access_key='bootstrap', region_name='us-east-1')\n\
             iam.create_user(UserName='etcd-operator')\n\
             iam.put_user_policy(UserName='etcd-operator', PolicyName='all', PolicyDocument=json.dumps(\
             {{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}}]}}))\n\
             k = iam.create_access_key(UserName='etcd-operator')['AccessKey']\n\
             print(k['AccessKeyId'], k['SecretAccessKey'])"
        );
        let out = run_ok(
            std::process::Command::new(tools().join("venv/bin/python")).args(["-c", &script]),
        );
        let mut key = out.split_whitespace();
        let (access_key, secret_key) = (
            key.next().expect("an access key id").to_string(),
            key.next().expect("a secret access key").to_string(),
        );
        Moto {
            _process: process,
            endpoint,
            access_key,
            secret_key,
        }
    }

    /// Run `body` with `c`, a boto3 S3 client of this server (boto3 is
    /// moto's own dependency, so always there); returns what it printed.
    fn boto3(&self, body: &str) -> String {
        let script = format!(
            "import boto3\nc = boto3.client('s3', endpoint_url='{}', aws_access_key_id='{}', \
             aws_secret_access_key='{}', region_name='us-east-1')\n{body}",
            self.endpoint, self.access_key, self.secret_key
        );
        run_ok(std::process::Command::new(tools().join("venv/bin/python")).args(["-c", &script]))
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.boto3(&format!("c.create_bucket(Bucket='{bucket}')"));
    }

    /// Keys in a bucket.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.boto3(&format!(
            "for o in c.list_objects_v2(Bucket='{bucket}').get('Contents', []): print(o['Key'])"
        ))
        .lines()
        .map(ToString::to_string)
        .collect()
    }

    /// Keys of the multipart uploads open in `bucket`, one per upload.
    pub fn open_uploads(&self, bucket: &str) -> Vec<String> {
        self.boto3(&format!(
            "for u in c.list_multipart_uploads(Bucket='{bucket}').get('Uploads', []): print(u['Key'])"
        ))
        .lines()
        .map(ToString::to_string)
        .collect()
    }

    /// The `credentials` file text the S3 plugin reads: this server's key.
    pub fn credentials(&self) -> String {
        Moto::credentials_file(&self.access_key, &self.secret_key)
    }

    /// The same key with a wrong secret.
    pub fn wrong_credentials(&self) -> String {
        Moto::credentials_file(&self.access_key, "not-the-secret")
    }

    fn credentials_file(id: &str, secret: &str) -> String {
        format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n")
    }
}

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An Azurite blob server (3.35.0, installed by scripts/setup.sh) on a random
/// loopback port, in memory, telemetry off; killed on drop. It checks
/// SharedKey signatures.
pub struct Azurite {
    _process: Process,
    /// Blob service URL of the development account.
    pub endpoint: String,
}

impl Azurite {
    pub fn start() -> Azurite {
        let port = free_port();
        let mut cmd =
            std::process::Command::new(tools().join("azurite/node_modules/.bin/azurite-blob"));
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args([
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--loose",
            ])
            .current_dir(std::env::temp_dir());
        Azurite {
            _process: serve(cmd, port, "azurite-blob"),
            endpoint: format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
        }
    }

    /// Create a container with the Azure SDK for JavaScript.
    pub fn create_container(&self, name: &str) {
        let script = format!(
            "const {{ BlobServiceClient, StorageSharedKeyCredential }} = require('@azure/storage-blob');\n\
             const c = new BlobServiceClient('{}', new StorageSharedKeyCredential('{AZURITE_ACCOUNT}', '{AZURITE_KEY}'));\n\
             c.getContainerClient('{name}').create().catch(e => {{ console.error(e.message); process.exit(1); }});",
            self.endpoint
        );
        run_ok(
            std::process::Command::new("node")
                .args(["-e", &script])
                .current_dir(tools().join("azurite")),
        );
    }
}

/// gcp-storage-emulator (PyPI, installed by scripts/setup.sh) on a random
/// loopback port, in memory, with one bucket; killed on drop. It implements
/// the JSON API (incl. resumable uploads) and does not check credentials.
pub struct GcsEmulator {
    _process: Process,
    pub endpoint: String,
}

impl GcsEmulator {
    pub fn start(bucket: &str) -> GcsEmulator {
        let port = free_port();
        let mut cmd = std::process::Command::new(tools().join("venv/bin/gcp-storage-emulator"));
        cmd.args(["start", "-H", "127.0.0.1", "--port", &port.to_string()])
            .args(["--in-memory", "--default-bucket", bucket]);
        GcsEmulator {
            _process: serve(cmd, port, "gcp-storage-emulator"),
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}
