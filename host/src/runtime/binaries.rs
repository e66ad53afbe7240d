//! Finding etcd binaries by version on this machine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::controller::RuntimeError;
use crate::controller::version::Version;

/// The etcd binaries found, by the version each reports.
#[derive(Debug, Clone, Default)]
pub struct EtcdBinaries {
    by_version: BTreeMap<Version, PathBuf>,
    /// `etcdutl` binaries found without an `etcd` beside them, by version:
    /// all the operator image ships (it verifies snapshots; members run
    /// etcd in their own images).
    etcdutl_only: BTreeMap<Version, PathBuf>,
}

/// The version a binary reports: `<binary> <arg>` prints a line `<prefix> X.Y.Z`.
fn reported_version(binary: &Path, arg: &str, prefix: &str) -> Option<Version> {
    let out = std::process::Command::new(binary).arg(arg).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    Version::parse(line.trim_start_matches(prefix).trim()).ok()
}

fn version_of(binary: &Path) -> Option<Version> {
    reported_version(binary, "--version", "etcd Version:")
}

/// `dir/<name>` and `dir/*/<name>` for each directory, then `<name>` on `path`.
fn candidates(dirs: &[PathBuf], path: Option<&std::ffi::OsStr>, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in dirs {
        found.push(dir.join(name));
        if let Ok(entries) = std::fs::read_dir(dir) {
            let mut subdirs: Vec<PathBuf> =
                entries.flatten().map(|e| e.path().join(name)).collect();
            subdirs.sort();
            found.extend(subdirs);
        }
    }
    if let Some(path) = path {
        found.extend(std::env::split_paths(path).map(|d| d.join(name)));
    }
    found
}

impl EtcdBinaries {
    /// Look in each directory (for `etcd` and `*/etcd`), then on `PATH`.
    /// The first binary found for a version wins.
    /// A lone `etcdutl` (no `etcd` beside it) is kept as a snapshot tool.
    pub fn discover(dirs: &[PathBuf]) -> Self {
        Self::discover_on(dirs, std::env::var_os("PATH").as_deref())
    }

    /// [`EtcdBinaries::discover`] with `path` for PATH.
    fn discover_on(dirs: &[PathBuf], path: Option<&std::ffi::OsStr>) -> Self {
        let mut by_version = BTreeMap::new();
        for c in candidates(dirs, path, "etcd") {
            if c.is_file()
                && let Some(v) = version_of(&c)
            {
                by_version.entry(v).or_insert(c);
            }
        }
        let mut etcdutl_only = BTreeMap::new();
        for c in candidates(dirs, path, "etcdutl") {
            if c.is_file()
                && !c.with_file_name("etcd").is_file()
                && let Some(v) = reported_version(&c, "version", "etcdutl version:")
            {
                etcdutl_only.entry(v).or_insert(c);
            }
        }
        EtcdBinaries {
            by_version,
            etcdutl_only,
        }
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
    /// Without a release's `etcd`, a lone `etcdutl` of the same minor line
    /// (or, for `None`, the newest) serves.
    pub fn snapshot_tool(&self, version: Option<&str>) -> Result<SnapshotTool, RuntimeError> {
        let lone = self
            .etcdutl_only
            .iter()
            .rfind(|(v, _)| {
                version
                    .and_then(|r| Version::parse(r).ok())
                    .is_none_or(|want| v.minor_line() == want.minor_line())
            })
            .map(|(_, path)| SnapshotTool {
                path: path.clone(),
                is_etcdctl: false,
            });
        self.snapshot_tool_of_etcd(version)
            .or_else(|e| lone.ok_or(e))
    }

    fn snapshot_tool_of_etcd(&self, version: Option<&str>) -> Result<SnapshotTool, RuntimeError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An executable shell script `dir/name` printing `text`.
    fn fake(dir: &Path, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\nprintf '{text}\\n'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_lone_etcdutl_verifies_snapshots_of_its_minor_line() {
        // The operator image: /usr/local/bin/etcdutl and no etcd.
        let dir = tempfile::tempdir().unwrap();
        let tool = fake(dir.path(), "etcdutl", "etcdutl version: 3.5.9");
        let found = EtcdBinaries::discover_on(&[dir.path().to_path_buf()], None);
        assert!(found.versions().is_empty());
        let newest = found.snapshot_tool(None).unwrap();
        assert_eq!(
            (newest.path.as_path(), newest.is_etcdctl),
            (tool.as_path(), false)
        );
        assert_eq!(found.snapshot_tool(Some("3.5.17")).unwrap().path, tool);
        // Another minor line still needs that release's own tools.
        assert!(found.snapshot_tool(Some("3.4.23")).is_err());
    }
}
