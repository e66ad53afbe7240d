//! When backups run, what they are called and which old ones go: pure
//! functions of the spec, the persisted status and the clock, so an operator
//! restart neither skips nor doubles a backup.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::plugins::storage::ObjectInfo;

/// The CoreOS time format of periodic backup names (Go `2006-01-02-15:04:05`, UTC).
const NAME_TIME: &str = "%Y-%m-%d-%H:%M:%S";

/// The key of a periodic backup: `<path>_v<revision>_<YYYY-MM-DD-HH:MM:SS>`,
/// as the CoreOS backup operator named them.
pub fn periodic_key(path: &str, revision: i64, at: DateTime<Utc>) -> String {
    format!("{path}_v{revision}_{}", at.format(NAME_TIME))
}

/// Is `key` a periodic backup of `path` in the CoreOS naming?
pub fn is_periodic_key(path: &str, key: &str) -> bool {
    let Some(rest) = key.strip_prefix(path).and_then(|r| r.strip_prefix("_v")) else {
        return false;
    };
    let Some((rev, time)) = rest.split_once('_') else {
        return false;
    };
    !rev.is_empty()
        && rev.bytes().all(|b| b.is_ascii_digit())
        && chrono::NaiveDateTime::parse_from_str(time, NAME_TIME).is_ok()
}

/// When the next backup is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    Now,
    In(Duration),
    /// A one-shot backup that already succeeded: nothing more to do.
    Never,
}

/// The schedule from the spec and the persisted status alone.
/// `interval` 0 means one-shot; `last_success` is `status.lastSuccessDate`.
pub fn next_due(
    interval: Duration,
    succeeded: bool,
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Due {
    if interval.is_zero() {
        return if succeeded { Due::Never } else { Due::Now };
    }
    let Some(last) = last_success else {
        return Due::Now;
    };
    // Checked: an interval past what a date can hold is never due.
    let Some(due) = chrono::Duration::from_std(interval)
        .ok()
        .and_then(|d| last.checked_add_signed(d))
    else {
        return Due::Never;
    };
    match (due - now).to_std() {
        Ok(wait) if !wait.is_zero() => Due::In(wait),
        _ => Due::Now,
    }
}

/// Delay before retry number `attempt` (1-based) after a transient failure:
/// 5 s doubling to at most 5 minutes, and never longer than the interval of
/// a periodic backup (the next scheduled run is as good as a retry).
pub fn retry_delay(attempt: u32, interval: Duration) -> Duration {
    let base = Duration::from_secs(5).saturating_mul(1u32 << attempt.saturating_sub(1).min(6));
    let cap = Duration::from_secs(300);
    let d = base.min(cap);
    if interval.is_zero() {
        d
    } else {
        d.min(interval)
    }
}

/// Backups beyond the newest `max` (by modification time, then key), never
/// including `newest` — the backup that just completed.
pub fn over_limit(backups: &[ObjectInfo], max: usize, newest: &str) -> Vec<String> {
    let mut sorted: Vec<&ObjectInfo> = backups.iter().collect();
    sorted.sort_by(|a, b| {
        (b.key == newest, b.last_modified_ms, &b.key).cmp(&(
            a.key == newest,
            a.last_modified_ms,
            &a.key,
        ))
    });
    sorted
        .into_iter()
        .skip(max.max(1))
        .filter(|o| o.key != newest)
        .map(|o| o.key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    #[test]
    fn names_follow_coreos() {
        let at = Utc.with_ymd_and_hms(2026, 11, 29, 8, 5, 9).unwrap();
        let k = periodic_key("backups/a", 42, at);
        assert_eq!(k, "backups/a_v42_2026-11-29-08:05:09");
        assert!(is_periodic_key("backups/a", &k));
        assert!(!is_periodic_key(
            "backups/a",
            "backups/a_v42_2026-11-29-08:05:09.meta.json"
        ));
        assert!(!is_periodic_key(
            "backups/a",
            "backups/ab_v42_2026-11-29-08:05:09"
        ));
        assert!(!is_periodic_key(
            "backups/a",
            "backups/a_vx_2026-11-29-08:05:09"
        ));
    }

    #[test]
    fn schedule_comes_from_the_last_success() {
        let i = Duration::from_secs(60);
        assert_eq!(next_due(i, false, None, t(0)), Due::Now);
        assert_eq!(
            next_due(i, true, Some(t(0)), t(20)),
            Due::In(Duration::from_secs(40))
        );
        assert_eq!(next_due(i, true, Some(t(0)), t(60)), Due::Now);
        assert_eq!(next_due(i, false, Some(t(0)), t(500)), Due::Now);
        assert_eq!(next_due(Duration::ZERO, true, Some(t(0)), t(1)), Due::Never);
        assert_eq!(next_due(Duration::ZERO, false, None, t(1)), Due::Now);
        // No overflow panic, whatever the interval.
        assert_eq!(next_due(Duration::MAX, true, Some(t(0)), t(1)), Due::Never);
        assert_eq!(
            next_due(Duration::from_secs(i64::MAX as u64), true, Some(t(0)), t(1)),
            Due::Never
        );
    }

    #[test]
    fn retries_back_off_but_not_past_the_interval() {
        assert_eq!(retry_delay(1, Duration::ZERO), Duration::from_secs(5));
        assert_eq!(retry_delay(3, Duration::ZERO), Duration::from_secs(20));
        assert_eq!(retry_delay(30, Duration::ZERO), Duration::from_secs(300));
        assert_eq!(
            retry_delay(4, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn retention_keeps_the_newest_and_never_the_new_one() {
        let o = |k: &str, ms| ObjectInfo {
            key: k.into(),
            size: 1,
            last_modified_ms: ms,
        };
        let all = [o("a", 1), o("b", 2), o("c", 3), o("d", 4)];
        assert_eq!(over_limit(&all, 2, "d"), ["b", "a"]);
        // A clock-skewed backend reports the new backup as older: still kept.
        assert_eq!(over_limit(&all, 2, "a"), ["c", "b"]);
        assert_eq!(over_limit(&all, 0, "d"), ["c", "b", "a"], "max 0 keeps one");
        assert!(over_limit(&all, 10, "d").is_empty());
    }
}
