//! The etcd flags a cluster's spec adds to its members' command line
//! (`spec.quotaBackendBytes`, `spec.autoCompaction`, `spec.etcdOptions`),
//! checked before any member sees them: a flag etcd does not know makes it
//! exit at start, and a member that crash-loops on a typo is an outage the
//! operator caused. So only flags listed here are accepted, each with its
//! value checked, and a refusal names the field and the fix.
//!
//! Every flag listed exists in both etcd lines the operator runs (3.4 and
//! 3.5); `tests/local/etcd_flags.rs` checks that against both binaries'
//! `--help`.

use crate::api::{AutoCompaction, CompactionMode, EtcdClusterSpec};

/// What a flag's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A whole number, 0 or more.
    Count,
    /// A Go duration: `100ms`, `5s`, `1h30m`.
    Duration,
    /// `true` or `false`.
    Bool,
    /// One of these words.
    OneOf(&'static [&'static str]),
}

/// A flag `spec.etcdOptions` may set.
#[derive(Debug, Clone, Copy)]
pub struct KnownFlag {
    pub name: &'static str,
    pub value: ValueKind,
}

const fn flag(name: &'static str, value: ValueKind) -> KnownFlag {
    KnownFlag { name, value }
}

/// The flags `spec.etcdOptions` accepts.
pub const KNOWN: &[KnownFlag] = &[
    flag("snapshot-count", ValueKind::Count),
    flag("heartbeat-interval", ValueKind::Count),
    flag("election-timeout", ValueKind::Count),
    flag("max-snapshots", ValueKind::Count),
    flag("max-wals", ValueKind::Count),
    flag("max-txn-ops", ValueKind::Count),
    flag("max-request-bytes", ValueKind::Count),
    flag("grpc-keepalive-min-time", ValueKind::Duration),
    flag("grpc-keepalive-interval", ValueKind::Duration),
    flag("grpc-keepalive-timeout", ValueKind::Duration),
    flag("backend-batch-interval", ValueKind::Duration),
    flag("backend-batch-limit", ValueKind::Count),
    flag("enable-pprof", ValueKind::Bool),
    flag("metrics", ValueKind::OneOf(&["basic", "extensive"])),
    flag(
        "log-level",
        ValueKind::OneOf(&["debug", "info", "warn", "error", "panic", "fatal"]),
    ),
    flag("pre-vote", ValueKind::Bool),
    flag("experimental-initial-corrupt-check", ValueKind::Bool),
    flag("experimental-corrupt-check-time", ValueKind::Duration),
    flag("experimental-compaction-batch-limit", ValueKind::Count),
    flag("experimental-enable-lease-checkpoint", ValueKind::Bool),
    flag(
        "experimental-watch-progress-notify-interval",
        ValueKind::Duration,
    ),
    flag("experimental-warning-apply-duration", ValueKind::Duration),
];

/// Flags with a field of their own, which is where they are set.
const TYPED: &[(&str, &str)] = &[
    ("quota-backend-bytes", "spec.quotaBackendBytes"),
    ("auto-compaction-mode", "spec.autoCompaction.mode"),
    ("auto-compaction-retention", "spec.autoCompaction.retention"),
];

/// Flags the operator sets itself (or that would break what it relies on:
/// member identity, URLs, data and TLS files, membership checks).
const OWNED: &[&str] = &[
    "name",
    "data-dir",
    "wal-dir",
    "listen-peer-urls",
    "listen-client-urls",
    "listen-metrics-urls",
    "advertise-client-urls",
    "initial-advertise-peer-urls",
    "initial-cluster",
    "initial-cluster-state",
    "initial-cluster-token",
    "force-new-cluster",
    "discovery",
    "logger",
    "log-outputs",
    "cert-file",
    "key-file",
    "trusted-ca-file",
    "client-cert-auth",
    "auto-tls",
    "peer-cert-file",
    "peer-key-file",
    "peer-trusted-ca-file",
    "peer-client-cert-auth",
    "peer-auto-tls",
    "strict-reconfig-check",
    "config-file",
];

/// A spec whose etcd flags cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error(
        "spec.etcdOptions.{name} is not an etcd flag the operator accepts{hint}; accepted: {accepted}"
    )]
    Unknown {
        name: String,
        hint: String,
        accepted: String,
    },
    #[error("spec.etcdOptions.{name} is set by the operator itself and cannot be changed")]
    Owned { name: String },
    #[error("spec.etcdOptions.{name} has a field of its own: set {field} instead")]
    HasField { name: String, field: &'static str },
    #[error("{field} is {value:?}; it must be {expected}")]
    BadValue {
        field: String,
        value: String,
        expected: String,
    },
}

/// The flags, `--name=value`, that the spec adds to every member's command
/// line, in a fixed order (so that a change is one that matters).
pub fn member_flags(spec: &EtcdClusterSpec) -> Result<Vec<String>, FlagError> {
    let mut flags = Vec::new();
    if let Some(quota) = spec.quota_backend_bytes {
        if quota < 1 << 20 {
            return Err(FlagError::BadValue {
                field: "spec.quotaBackendBytes".into(),
                value: quota.to_string(),
                expected: "at least 1048576 (1 MiB); etcd's default is 2147483648 (2 GiB)".into(),
            });
        }
        flags.push(format!("--quota-backend-bytes={quota}"));
    }
    if let Some(c) = &spec.auto_compaction {
        flags.extend(compaction_flags(c)?);
    }
    for (key, value) in spec.etcd_options.iter().flatten() {
        flags.push(option_flag(key, value)?);
    }
    Ok(flags)
}

/// The quota the members run with: `spec.quotaBackendBytes`, else an
/// `ETCD_QUOTA_BACKEND_BYTES` in `spec.pod.etcdEnv` (how it was set before
/// the field existed), else etcd's default.
pub fn quota_bytes(spec: &EtcdClusterSpec) -> u64 {
    let from_env = || {
        spec.pod
            .as_ref()?
            .etcd_env
            .as_ref()?
            .iter()
            .find(|e| e.name == "ETCD_QUOTA_BACKEND_BYTES")?
            .value
            .as_deref()?
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|q| *q > 0)
    };
    spec.quota_backend_bytes
        .and_then(|q| u64::try_from(q).ok())
        .or_else(from_env)
        .unwrap_or(DEFAULT_QUOTA_BYTES)
}

/// etcd's `--quota-backend-bytes` when unset.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

fn compaction_flags(c: &AutoCompaction) -> Result<[String; 2], FlagError> {
    let retention = c.retention.trim();
    let (mode, ok, expected) = match c.mode {
        // etcd reads a bare number as hours.
        CompactionMode::Periodic => (
            "periodic",
            is_count(retention) || is_duration(retention),
            "a duration such as 1h or 30m (or a number of hours), for mode periodic",
        ),
        CompactionMode::Revision => (
            "revision",
            is_count(retention) && retention != "0",
            "a number of revisions to keep, such as 10000, for mode revision",
        ),
    };
    if !ok {
        return Err(FlagError::BadValue {
            field: "spec.autoCompaction.retention".into(),
            value: c.retention.clone(),
            expected: expected.into(),
        });
    }
    Ok([
        format!("--auto-compaction-mode={mode}"),
        format!("--auto-compaction-retention={retention}"),
    ])
}

fn option_flag(key: &str, value: &str) -> Result<String, FlagError> {
    let name = key.trim_start_matches('-');
    if let Some((_, field)) = TYPED.iter().find(|(n, _)| *n == name) {
        return Err(FlagError::HasField {
            name: name.into(),
            field,
        });
    }
    if OWNED.contains(&name) {
        return Err(FlagError::Owned { name: name.into() });
    }
    let Some(known) = KNOWN.iter().find(|f| f.name == name) else {
        let hint = closest(name)
            .map(|c| format!(" (did you mean {c}?)"))
            .unwrap_or_default();
        return Err(FlagError::Unknown {
            name: name.into(),
            hint,
            accepted: KNOWN.iter().map(|f| f.name).collect::<Vec<_>>().join(", "),
        });
    };
    let value = value.trim();
    let (ok, expected) = match known.value {
        ValueKind::Count => (is_count(value), "a whole number, 0 or more".to_string()),
        ValueKind::Duration => (
            is_duration(value),
            "a duration such as 100ms, 5s or 1h30m".to_string(),
        ),
        ValueKind::Bool => (
            matches!(value, "true" | "false"),
            "true or false".to_string(),
        ),
        ValueKind::OneOf(words) => (
            words.contains(&value),
            format!("one of {}", words.join(", ")),
        ),
    };
    if !ok {
        return Err(FlagError::BadValue {
            field: format!("spec.etcdOptions.{name}"),
            value: value.into(),
            expected,
        });
    }
    Ok(format!("--{name}={value}"))
}

fn is_count(s: &str) -> bool {
    !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A Go duration (`time.ParseDuration`): one or more decimal numbers, each
/// with a unit. A bare `0` is one too.
fn is_duration(s: &str) -> bool {
    if s == "0" {
        return true;
    }
    let mut rest = s;
    if rest.is_empty() || rest.len() > 32 {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .iter()
            // Two-letter units first, so `ms` is not read as `m`.
            .filter(|u| rest.starts_with(**u))
            .max_by_key(|u| u.len())
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

/// The accepted flag nearest to a misspelt one, when it is near enough to
/// be what was meant.
fn closest(name: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .map(|f| (distance(name, f.name), f.name))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, n)| n)
}

/// Edit distance (insertions, deletions, substitutions).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

/// The flags as the operator's Events and status name them: `none` or the
/// list.
pub fn describe(flags: &[String]) -> String {
    if flags.is_empty() {
        "no extra flags".into()
    } else {
        flags.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn spec_with(pairs: &[(&str, &str)]) -> EtcdClusterSpec {
        EtcdClusterSpec {
            size: 1,
            etcd_options: Some(options(pairs)),
            ..Default::default()
        }
    }

    #[test]
    fn the_flags_come_in_a_fixed_order_typed_fields_first() {
        let spec = EtcdClusterSpec {
            quota_backend_bytes: Some(8 << 30),
            auto_compaction: Some(AutoCompaction {
                mode: CompactionMode::Periodic,
                retention: "1h".into(),
            }),
            ..spec_with(&[("snapshot-count", "5000"), ("--enable-pprof", "true")])
        };
        assert_eq!(
            member_flags(&spec).unwrap(),
            [
                "--quota-backend-bytes=8589934592",
                "--auto-compaction-mode=periodic",
                "--auto-compaction-retention=1h",
                "--enable-pprof=true",
                "--snapshot-count=5000",
            ]
        );
        assert_eq!(quota_bytes(&spec), 8 << 30);
        assert_eq!(
            member_flags(&EtcdClusterSpec::default()).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(quota_bytes(&EtcdClusterSpec::default()), 2 << 30);
    }

    #[test]
    fn a_typo_is_refused_naming_the_flag_and_the_nearest_one() {
        let e = member_flags(&spec_with(&[("snapshot-cuont", "5000")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "spec.etcdOptions.snapshot-cuont is not an etcd flag the operator accepts \
                 (did you mean snapshot-count?); accepted: snapshot-count, "
            ),
            "{e}"
        );
        let e = member_flags(&spec_with(&[("no-such-thing", "1")]))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn owned_and_typed_flags_are_refused_with_where_to_set_them() {
        assert_eq!(
            member_flags(&spec_with(&[("data-dir", "/x")]))
                .unwrap_err()
                .to_string(),
            "spec.etcdOptions.data-dir is set by the operator itself and cannot be changed"
        );
        assert_eq!(
            member_flags(&spec_with(&[("quota-backend-bytes", "1")]))
                .unwrap_err()
                .to_string(),
            "spec.etcdOptions.quota-backend-bytes has a field of its own: set spec.quotaBackendBytes instead"
        );
    }

    #[test]
    fn values_are_checked_by_kind() {
        for (k, v) in [
            ("snapshot-count", "10000"),
            ("grpc-keepalive-time", "5s"),
            ("backend-batch-interval", "1h30m"),
            ("backend-batch-interval", "1.5s"),
            ("backend-batch-interval", "100ms"),
            ("log-level", "warn"),
            ("pre-vote", "false"),
        ] {
            let r = member_flags(&spec_with(&[(k, v)]));
            if k == "grpc-keepalive-time" {
                assert!(r.is_err(), "not a flag of etcd's");
            } else {
                assert_eq!(r.unwrap(), [format!("--{k}={v}")]);
            }
        }
        for (k, v, says) in [
            ("snapshot-count", "-1", "a whole number"),
            ("snapshot-count", "ten", "a whole number"),
            ("backend-batch-interval", "5", "a duration"),
            ("backend-batch-interval", "5 s", "a duration"),
            ("backend-batch-interval", "5d", "a duration"),
            ("pre-vote", "yes", "true or false"),
            ("log-level", "verbose", "one of debug, info"),
        ] {
            let e = member_flags(&spec_with(&[(k, v)])).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("spec.etcdOptions.{k} is {v:?}; it must be {says}")),
                "{e}"
            );
        }
    }

    #[test]
    fn compaction_retention_must_fit_its_mode_and_the_quota_a_floor() {
        let with = |mode, retention: &str| EtcdClusterSpec {
            auto_compaction: Some(AutoCompaction {
                mode,
                retention: retention.into(),
            }),
            ..Default::default()
        };
        assert!(member_flags(&with(CompactionMode::Periodic, "30m")).is_ok());
        assert!(member_flags(&with(CompactionMode::Periodic, "1")).is_ok());
        assert!(member_flags(&with(CompactionMode::Revision, "1000")).is_ok());
        let e = member_flags(&with(CompactionMode::Revision, "1h"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.autoCompaction.retention is \"1h\"; it must be a number of revisions"),
            "{e}"
        );
        let e = member_flags(&EtcdClusterSpec {
            quota_backend_bytes: Some(1000),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("spec.quotaBackendBytes is \"1000\"; it must be at least 1048576"),
            "{e}"
        );
    }
}
