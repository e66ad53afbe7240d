//! Finding etcd binaries by version on this machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::controller::RuntimeError;
use crate::controller::version::Version;

/// The etcd binaries found, by the version each reports.
#[derive(Debug, Clone, Default)]
pub struct EtcdBinaries {
    by_version: BTreeMap<Version, PathBuf>,
}

fn version_of(binary: &Path) -> Option<Version> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("etcd Version:"))?;
    Version::parse(line.trim_start_matches("etcd Version:").trim()).ok()
}

impl EtcdBinaries {
    /// Look in each directory (for `etcd` and `*/etcd`), then on `PATH`.
    /// The first binary found for a version wins.
    pub fn discover(dirs: &[PathBuf]) -> Self {
        let mut candidates = Vec::new();
        for dir in dirs {
            candidates.push(dir.join("etcd"));
            if let Ok(entries) = std::fs::read_dir(dir) {
                let mut subdirs: Vec<PathBuf> =
                    entries.flatten().map(|e| e.path().join("etcd")).collect();
                subdirs.sort();
                candidates.extend(subdirs);
            }
        }
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("etcd")));
        }
        let mut by_version = BTreeMap::new();
        for c in candidates {
            if c.is_file()
                && let Some(v) = version_of(&c)
            {
                by_version.entry(v).or_insert(c);
            }
        }
        EtcdBinaries { by_version }
    }

    pub fn versions(&self) -> Vec<Version> {
        self.by_version.keys().copied().collect()
    }

    /// The binary for `requested`: the exact version, else the newest patch
    /// of the same minor line (patch releases are compatible).
    pub fn resolve(&self, requested: &str) -> Result<(Version, PathBuf), RuntimeError> {
        let unavailable = |message: String| RuntimeError::VersionUnavailable {
            requested: requested.to_string(),
            message,
        };
        let want = Version::parse(requested).map_err(unavailable)?;
        if let Some(p) = self.by_version.get(&want) {
            return Ok((want, p.clone()));
        }
        self.by_version
            .iter()
            .rfind(|(v, _)| v.minor_line() == want.minor_line())
            .map(|(v, p)| (*v, p.clone()))
            .ok_or_else(|| {
                let have: Vec<String> = self.versions().iter().map(ToString::to_string).collect();
                unavailable(format!(
                    "no etcd {}.{}.x binary found (available: {}); install one (scripts/setup.sh installs 3.4 and 3.5) \
                     or pass --etcd-dir",
                    want.major,
                    want.minor,
                    if have.is_empty() { "none".into() } else { have.join(", ") }
                ))
            })
    }
}

/// The offline snapshot tool of an etcd release: `etcdutl` (3.5+) or, for
/// older releases, `etcdctl` with the v3 API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTool {
    pub path: PathBuf,
    /// `etcdctl` needs `ETCDCTL_API=3` on 3.4.
    pub is_etcdctl: bool,
}

impl SnapshotTool {
    /// A command running the tool, ready for `snapshot status|restore ...`.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.path);
        if self.is_etcdctl {
            cmd.env("ETCDCTL_API", "3");
        }
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        cmd
    }
}

/// `dir/<name>` for the directory of `binary` and of the file it links to.
fn beside(binary: &Path, name: &str) -> Option<PathBuf> {
    let mut dirs = vec![binary.parent().map(Path::to_path_buf)];
    if let Ok(real) = binary.canonicalize() {
        dirs.push(real.parent().map(Path::to_path_buf));
    }
    dirs.into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl EtcdBinaries {
    /// The snapshot tool shipped with the etcd that runs `version` (for a
    /// restore, so the data is written in that release's format); `None`
    /// picks the newest release found, which reads older snapshots too.
    pub fn snapshot_tool(&self, version: Option<&str>) -> Result<SnapshotTool, RuntimeError> {
        let (v, etcd) = match version {
            Some(requested) => self.resolve(requested)?,
            None => self
                .by_version
                .iter()
                .next_back()
                .map(|(v, p)| (*v, p.clone()))
                .ok_or_else(|| RuntimeError::VersionUnavailable {
                    requested: "any".into(),
                    message: "no etcd binary found; run scripts/setup.sh or pass --etcd-dir".into(),
                })?,
        };
        let prefer_etcdutl = v
            >= Version {
                major: 3,
                minor: 5,
                patch: 0,
            };
        let order: &[&str] = if prefer_etcdutl {
            &["etcdutl", "etcdctl"]
        } else {
            &["etcdctl"]
        };
        order
            .iter()
            .find_map(|name| {
                beside(&etcd, name).map(|path| SnapshotTool {
                    path,
                    is_etcdctl: *name == "etcdctl",
                })
            })
            .ok_or_else(|| RuntimeError::VersionUnavailable {
                requested: v.to_string(),
                message: format!(
                    "no {} found beside {}; install the etcd release's tools next to its etcd binary",
                    order.join(" or "),
                    etcd.display()
                ),
            })
    }
}
