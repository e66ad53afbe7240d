//! `etcd-operator local` as a new user starts it: without `--plugin-dir`, it
//! finds the plugins where `plugins/build.sh` puts them in a checkout, and
//! when it finds none it says where it looked.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Start `etcd-operator local` in `cwd` with no plugin directory given, its
/// log in `cwd/operator.log`.
fn start_in(cwd: &Path) -> Child {
    std::fs::create_dir_all(cwd.join("state")).unwrap();
    let log = std::fs::File::create(cwd.join("operator.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_etcd-operator"))
        .current_dir(cwd)
        .args(["local", "--dir", "state"])
        .env_remove("ETCD_OPERATOR_PLUGIN_DIR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Poll the log until a line holds `what`; the operator is killed either way.
fn wait_line(mut child: Child, cwd: &Path, what: &str) -> String {
    let start = Instant::now();
    let found = loop {
        let log = std::fs::read_to_string(cwd.join("operator.log")).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains(what)) {
            break Ok(line.to_string());
        }
        if start.elapsed() > Duration::from_secs(60) || child.try_wait().unwrap().is_some() {
            break Err(log);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    found.unwrap_or_else(|log| panic!("no line with {what:?} in the log:\n{log}"))
}

#[test]
fn finds_the_checkouts_plugins_without_plugin_dir() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cwd.path().join("plugins/dist")).unwrap();
    std::os::unix::fs::symlink(
        crate::common::plugin_path("local"),
        cwd.path().join("plugins/dist/local.wasm"),
    )
    .unwrap();
    let line = wait_line(start_in(cwd.path()), cwd.path(), "plugins loaded");
    assert!(line.contains("loaded=[\"local\"]"), "{line}");
    let log = std::fs::read_to_string(cwd.path().join("operator.log")).unwrap();
    assert!(
        log.contains("plugins found without --plugin-dir dir=plugins/dist"),
        "{log}"
    );
}

#[test]
fn says_where_it_looked_when_it_finds_no_plugins() {
    let cwd = tempfile::tempdir().unwrap();
    let line = wait_line(start_in(cwd.path()), cwd.path(), "no plugins");
    for dir in [
        "/usr/lib/etcd-operator/plugins",
        "lib/etcd-operator/plugins",
        "plugins/dist",
    ] {
        assert!(line.contains(dir), "{dir} not named: {line}");
    }
    assert!(line.contains("--plugin-dir"), "{line}");
}
