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
