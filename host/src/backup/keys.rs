//! Backup object keys are the operator's, not a plugin's. A backup-policy
//! plugin may choose the name of the next backup, but only under the
//! EtcdBackup's own `path`: the policy of one cluster must not be able to
//! write over another cluster's backup, escape the bucket's key space or
//! collide with the metadata objects the operator keeps beside each backup.

/// Longest part of a policy-chosen name after `<path>` and its separator.
pub const MAX_SUFFIX: usize = 200;
/// Longest key the operator writes (S3's and GCS's own limit is 1024 bytes).
pub const MAX_KEY: usize = 1024;

/// What may follow the path in a policy's name.
const SEPARATORS: [char; 3] = ['_', '/', '.'];

/// How much of a refused name is quoted back (a hostile name can be huge).
const QUOTED: usize = 120;

/// `name` as it may be quoted in status and events: at most [`QUOTED`]
/// characters, with its full length when cut.
pub fn quote(name: &str) -> String {
    if name.chars().count() <= QUOTED {
        return format!("`{name}`");
    }
    let cut: String = name.chars().take(QUOTED).collect();
    format!("`{cut}…` ({} bytes)", name.len())
}

/// Check a backup name a policy plugin returned for an EtcdBackup whose
/// storage path is `path`. Accepted: `<path>_<suffix>`, `<path>/<suffix>` or
/// `<path>.<suffix>` (or `<path><suffix>` when `path` already ends in one of
/// those), where the
/// suffix is 1 to [`MAX_SUFFIX`] ASCII letters, digits and `-._:+/`, with no
/// empty, `.` or `..` segment, not naming a metadata object, and the whole
/// key at most [`MAX_KEY`] bytes. The error says what is wrong, without the
/// plugin's name (the caller adds it).
pub fn check_policy_name(path: &str, name: &str) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "the name {} {why}; a policy's backup-name must be `{path}_…`, `{path}/…` or `{path}.…` \
             followed by up to {MAX_SUFFIX} letters, digits and `-._:+/`",
            quote(name)
        ))
    };
    if path.is_empty() {
        return refuse("has no path to be under (spec path is empty)");
    }
    let Some(rest) = name.strip_prefix(path) else {
        return refuse("is not under the EtcdBackup's path");
    };
    let suffix = if path.ends_with(SEPARATORS) {
        rest
    } else if let Some(s) = rest.strip_prefix(SEPARATORS) {
        s
    } else {
        return refuse("does not continue the path with `_`, `/` or `.`");
    };
    if suffix.is_empty() {
        return refuse("adds nothing to the path");
    }
    if suffix.len() > MAX_SUFFIX || name.len() > MAX_KEY {
        return refuse("is too long");
    }
    if let Some(c) = suffix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._:+/".contains(*c)))
    {
        return refuse(&format!("contains {c:?}"));
    }
    if suffix
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return refuse("has an empty, `.` or `..` segment");
    }
    if name.ends_with(".meta.json") {
        return refuse("ends in `.meta.json`, which names the operator's metadata objects");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_under_the_path_pass() {
        for name in [
            "b/prod_v12_2026-01-01-00:00:00",
            "b/prod/2026/01/01",
            "b/prod_daily.db",
            "b/prod_a+b-c.d",
            "b/prod.20260101T000000Z.r5.db",
        ] {
            assert_eq!(check_policy_name("b/prod", name), Ok(()), "{name}");
        }
        assert_eq!(check_policy_name("b/", "b/x"), Ok(()));
        assert_eq!(check_policy_name("b/prod_", "b/prod_x"), Ok(()));
    }

    #[test]
    fn names_outside_the_path_or_odd_are_refused() {
        let long = format!("b/prod_{}", "x".repeat(10_000));
        for (name, why) in [
            ("b/prod-eu_v1_2026-01-01-00:00:00", "does not continue"),
            ("b/other_v1", "not under"),
            ("../../escape", "not under"),
            ("/etc/x", "not under"),
            ("", "not under"),
            ("b/prod", "does not continue"),
            ("b/prod_", "adds nothing"),
            ("b/prod/../other", "segment"),
            ("b/prod//x", "segment"),
            ("b/prod/./x", "segment"),
            ("b/prod/x/", "segment"),
            ("b/prod_x y", "contains ' '"),
            ("b/prod_é", "contains"),
            ("b/prod_x.meta.json", "metadata"),
            (long.as_str(), "too long"),
        ] {
            let e = check_policy_name("b/prod", name).unwrap_err();
            assert!(e.contains(why), "{name}: {e}");
            assert!(
                e.len() < 600,
                "the message quotes a bounded part: {}",
                e.len()
            );
        }
        assert!(check_policy_name("", "_x").unwrap_err().contains("empty"));
    }
}
