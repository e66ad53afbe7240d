//! The retention rules as plain functions, so they are easy to reason about.

use std::collections::{BTreeSet, HashSet};

use etcd_plugin_sdk::config::{Config, ConfigError};

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// How many backups each rule keeps (0 = rule off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    pub last: u64,
    pub hourly: u64,
    pub daily: u64,
    pub weekly: u64,
}

impl Rules {
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let rules = Rules {
            last: config.u64_or("keep-last", 0)?,
            hourly: config.u64_or("keep-hourly", 0)?,
            daily: config.u64_or("keep-daily", 0)?,
            weekly: config.u64_or("keep-weekly", 0)?,
        };
        if rules == Rules::default() {
            return Err(ConfigError(
                "no retention rule is set: give at least one of `keep-last`, `keep-hourly`, `keep-daily`, `keep-weekly` a value above 0"
                    .into(),
            ));
        }
        Ok(rules)
    }
}

/// Week number with weeks starting on Monday (1970-01-01 was a Thursday).
fn week_of(ms: u64) -> u64 {
    (ms / DAY_MS + 3) / 7
}

/// Keep the newest backup in each of the `n` most recent periods.
fn keep_per_period(
    sorted: &[(String, u64)],
    n: u64,
    period: impl Fn(u64) -> u64,
    keep: &mut HashSet<String>,
) {
    let mut seen = BTreeSet::new();
    for (key, ms) in sorted {
        if seen.len() as u64 >= n {
            break;
        }
        if seen.insert(period(*ms)) {
            keep.insert(key.clone());
        }
    }
}

/// The keys to delete from `backups` (key, last-modified ms) under `rules`.
pub fn to_delete(rules: &Rules, backups: &[(String, u64)]) -> Vec<String> {
    let mut sorted = backups.to_vec();
    // Newest first; the key breaks ties so the result is deterministic.
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let mut keep = HashSet::new();
    if let Some((newest, _)) = sorted.first() {
        keep.insert(newest.clone());
    }
    for (key, _) in sorted.iter().take(rules.last as usize) {
        keep.insert(key.clone());
    }
    keep_per_period(&sorted, rules.hourly, |ms| ms / HOUR_MS, &mut keep);
    keep_per_period(&sorted, rules.daily, |ms| ms / DAY_MS, &mut keep);
    keep_per_period(&sorted, rules.weekly, week_of, &mut keep);
    sorted
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !keep.contains(k))
        .collect()
}
