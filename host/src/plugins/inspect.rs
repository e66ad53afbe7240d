//! What a `.wasm` file is — read from its bytes, without compiling or
//! running it: the world it implements, the WIT version it was built for,
//! its imports and exports, size and digest.

use sha2::{Digest, Sha256};
use wasmparser::{Encoding, Parser, Payload};

use super::{PluginError, WIT_VERSION};

/// The package every plugin world belongs to.
pub const PACKAGE: &str = "etcd-operator:plugin";

/// The world a plugin implements, recognised by its export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    StorageBackend,
    BackupPolicy,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::StorageBackend => "storage-backend",
            World::BackupPolicy => "backup-policy",
        }
    }

    /// The interface a component of this world exports.
    fn export_interface(self) -> &'static str {
        match self {
            World::StorageBackend => "storage",
            World::BackupPolicy => "policy",
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the operator knows about a plugin file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Name the operator knows the plugin by (the file stem or ConfigMap key).
    pub name: String,
    pub world: World,
    /// The `etcd-operator:plugin` version the plugin was built against.
    pub wit_version: semver::Version,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub size: u64,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
}

impl PluginInfo {
    /// Whether the plugin exports `upload-cleanup` (world
    /// `storage-backend-with-cleanup`, WIT 0.1.1), so the operator can have
    /// it discard an upload whose sandbox was lost.
    pub fn cleans_up_uploads(&self) -> bool {
        let prefix = format!("{PACKAGE}/{UPLOAD_CLEANUP}@");
        self.exports.iter().any(|e| e.starts_with(&prefix))
    }
}

/// The optional interface of storage plugins that clean up lost uploads.
pub const UPLOAD_CLEANUP: &str = "upload-cleanup";

impl std::fmt::Display for PluginInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "name:        {}", self.name)?;
        writeln!(f, "world:       {PACKAGE}/{}", self.world)?;
        if self.world == World::StorageBackend {
            let answer = if self.cleans_up_uploads() {
                "yes"
            } else {
                "no (it does not export upload-cleanup: what a crashed upload sent stays at the backend until it expires there)"
            };
            writeln!(f, "cleans up lost uploads: {answer}")?;
        }
        writeln!(f, "wit version: {}", self.wit_version)?;
        writeln!(f, "size:        {} bytes", self.size)?;
        writeln!(f, "sha256:      {}", self.sha256)?;
        writeln!(f, "imports:")?;
        for i in &self.imports {
            writeln!(f, "  {i}")?;
        }
        writeln!(f, "exports:")?;
        for e in &self.exports {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Is a plugin built for `version` loadable by this host? Same major; while
/// the major is 0, same minor too (semver treats 0.x minors as breaking).
pub fn compatible(version: &semver::Version) -> bool {
    let host = semver::Version::parse(WIT_VERSION).expect("WIT_VERSION is semver");
    version.major == host.major && (host.major > 0 || version.minor == host.minor)
}

/// Read the top-level imports and exports of a component.
fn top_level_names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    // Nested modules and components each open with a Version payload and
    // close with End; only depth 1 is the component itself.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("it is not valid WebAssembly: {e}"))? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Err(
                        "it is a core WebAssembly module, not a component; build it for the \
                                wasm32-wasip2 target or wrap it with `wasm-tools component new`"
                            .into(),
                    );
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import =
                        import.map_err(|e| format!("its import section is malformed: {e}"))?;
                    imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export =
                        export.map_err(|e| format!("its export section is malformed: {e}"))?;
                    exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// Identify a plugin. Errors say what is wrong with the file and what to do.
pub fn inspect(name: &str, bytes: &[u8]) -> Result<PluginInfo, PluginError> {
    let fail = |message: String| PluginError::Load {
        source_name: name.to_string(),
        message,
    };
    if !bytes.starts_with(b"\0asm") {
        return Err(fail(
            "it is not a WebAssembly file (no \\0asm header)".into(),
        ));
    }
    let (imports, exports) = top_level_names(bytes).map_err(fail)?;

    let mut found = None;
    for export in &exports {
        let Some(rest) = export.strip_prefix(&format!("{PACKAGE}/")) else {
            continue;
        };
        let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let world = [World::StorageBackend, World::BackupPolicy]
            .into_iter()
            .find(|w| w.export_interface() == iface);
        if let Some(world) = world {
            let version = semver::Version::parse(version).map_err(|_| {
                fail(format!("its export `{export}` carries no valid version; build it against wit/ of this release"))
            })?;
            found = Some((world, version));
        }
    }
    let Some((world, wit_version)) = found else {
        return Err(fail(format!(
            "it implements no known plugin world: it must export `{PACKAGE}/storage@{WIT_VERSION}` \
             (storage-backend) or `{PACKAGE}/policy@{WIT_VERSION}` (backup-policy), but exports [{}]",
            exports.join(", ")
        )));
    };
    if !compatible(&wit_version) {
        return Err(fail(format!(
            "it was built against {PACKAGE}@{wit_version}, but this operator speaks {PACKAGE}@{WIT_VERSION}; \
             rebuild the plugin against the wit/ directory of this operator release"
        )));
    }
    Ok(PluginInfo {
        name: name.to_string(),
        world,
        wit_version,
        imports,
        exports,
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(bytes)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_follow_semver_zero_rules() {
        assert!(compatible(&"0.1.0".parse().unwrap()));
        assert!(compatible(&"0.1.7".parse().unwrap()));
        assert!(!compatible(&"0.2.0".parse().unwrap()));
        assert!(!compatible(&"1.1.0".parse().unwrap()));
    }

    #[test]
    fn rejects_non_wasm_and_core_modules() {
        let err = inspect("x", b"hello").unwrap_err().to_string();
        assert!(err.contains("not a WebAssembly file"), "{err}");
        let core = wat::parse_str("(module)").unwrap();
        let err = inspect("core", &core).unwrap_err().to_string();
        assert!(
            err.contains("core WebAssembly module, not a component"),
            "{err}"
        );
    }

    #[test]
    fn rejects_unknown_worlds_and_incompatible_versions() {
        let empty = wat::parse_str("(component)").unwrap();
        let err = inspect("empty", &empty).unwrap_err().to_string();
        assert!(err.contains("implements no known plugin world"), "{err}");

        let future = wat::parse_str(
            r#"(component (instance $i) (export "etcd-operator:plugin/storage@1.0.0" (instance $i)))"#,
        )
        .unwrap();
        let err = inspect("future", &future).unwrap_err().to_string();
        assert!(
            err.contains("built against etcd-operator:plugin@1.0.0"),
            "{err}"
        );
        assert!(err.contains("rebuild"), "{err}");

        let ok = wat::parse_str(
            r#"(component (instance $i) (export "etcd-operator:plugin/policy@0.1.3" (instance $i)))"#,
        )
        .unwrap();
        let info = inspect("ok", &ok).unwrap();
        assert_eq!(info.world, World::BackupPolicy);
        assert_eq!(info.wit_version.to_string(), "0.1.3");
    }
}
