//! etcd versions and the upgrade rules.

use std::fmt;

/// The oldest etcd this operator manages: learners arrived in 3.4.
pub const MIN_SUPPORTED: (u64, u64) = (3, 4);

/// The version used when `spec.version` is unset.
pub const DEFAULT_VERSION: &str = "3.5.1";

/// An etcd release, `major.minor.patch` (a leading `v` is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl Version {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim().trim_start_matches('v');
        let core = t.split(['-', '+']).next().unwrap_or(t);
        let parts: Vec<&str> = core.split('.').collect();
        let num = |p: &str| {
            p.parse::<u64>()
                .map_err(|_| format!("`{s}` is not an etcd version such as 3.5.17"))
        };
        match parts.as_slice() {
            [a, b, c] => Ok(Version {
                major: num(a)?,
                minor: num(b)?,
                patch: num(c)?,
            }),
            _ => Err(format!("`{s}` is not an etcd version such as 3.5.17")),
        }
    }

    pub fn minor_line(&self) -> (u64, u64) {
        (self.major, self.minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Is `target` a version this operator can run at all?
pub fn check_supported(target: &Version) -> Result<(), String> {
    if target.minor_line() < MIN_SUPPORTED {
        return Err(format!(
            "etcd {target} is not supported: this operator needs etcd {}.{} or newer (member learners); \
             set spec.version to a 3.4 or 3.5 release",
            MIN_SUPPORTED.0, MIN_SUPPORTED.1
        ));
    }
    Ok(())
}

/// May a cluster running `current` (its oldest member) move to `target`?
/// Upgrades go one minor version at a time; downgrades across minors are refused.
pub fn check_upgrade(current: &Version, target: &Version) -> Result<(), String> {
    check_supported(target)?;
    if target.major != current.major {
        return Err(format!(
            "cannot change etcd from {current} to {target}: major version changes are not supported"
        ));
    }
    if target.minor < current.minor {
        return Err(format!(
            "refusing to downgrade etcd from {current} to {target}: etcd does not support downgrades across \
             minor versions; set spec.version back to {}.{}.x",
            current.major, current.minor
        ));
    }
    if target.minor > current.minor + 1 {
        return Err(format!(
            "refusing to skip a minor version from {current} to {target}: upgrade one minor version at a time; \
             set spec.version to {}.{}.x first",
            current.major,
            current.minor + 1
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn parses_with_and_without_v() {
        assert_eq!(v("v3.5.1"), v("3.5.1"));
        assert_eq!(v("3.4.23").to_string(), "3.4.23");
        assert!(Version::parse("latest").is_err());
        assert!(Version::parse("3.5").is_err());
    }

    #[test]
    fn upgrade_rules() {
        assert!(check_upgrade(&v("3.4.23"), &v("3.5.1")).is_ok());
        assert!(check_upgrade(&v("3.5.1"), &v("3.5.17")).is_ok());
        assert!(
            check_upgrade(&v("3.5.17"), &v("3.5.1")).is_ok(),
            "patch downgrades are allowed"
        );
        let e = check_upgrade(&v("3.5.1"), &v("3.4.23")).unwrap_err();
        assert!(e.contains("refusing to downgrade"), "{e}");
        let e = check_upgrade(&v("3.4.23"), &v("3.6.0")).unwrap_err();
        assert!(
            e.contains("skip a minor") && e.contains("3.5.x first"),
            "{e}"
        );
        let e = check_supported(&v("3.2.25")).unwrap_err();
        assert!(e.contains("not supported"), "{e}");
    }
}
