//! Which member to defragment next (`spec.maintenance.defrag`), as a pure
//! function of what was observed.
//!
//! etcd never shrinks its database file by itself: space freed by compaction
//! is only reused. Defragmenting rewrites the file, and the member does not
//! serve while it runs. So members are done one per step, only while every
//! member is healthy (the step is taken only when the cluster is otherwise
//! steady), followers first and the leader last: a follower that is slow to
//! come back costs nothing, a leader that stops costs an election.

use std::time::Duration;

use super::decide::ClusterView;
use crate::api::EtcdClusterSpec;

/// `minFreePercent` when unset.
pub const DEFAULT_MIN_FREE_PERCENT: u8 = 50;
/// `minFreeBytes` when unset: small databases are not worth a pause.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;
/// A member is not defragmented again this soon, whatever it reports: etcd
/// may keep some pages free after a defragmentation, and a policy that such
/// a member still meets must not pause it over and over.
pub const COOLDOWN: Duration = Duration::from_secs(600);

/// When a member qualifies: both minimums of free space are met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub min_free_percent: u8,
    pub min_free_bytes: u64,
}

impl Policy {
    /// The spec's policy, `None` without one, or what is wrong with it,
    /// naming the field (local mode has no API server to check the ranges).
    pub fn of(spec: &EtcdClusterSpec) -> Result<Option<Policy>, String> {
        let Some(p) = spec.maintenance.as_ref().and_then(|m| m.defrag.as_ref()) else {
            return Ok(None);
        };
        let percent = p
            .min_free_percent
            .unwrap_or(i32::from(DEFAULT_MIN_FREE_PERCENT));
        let min_free_percent = u8::try_from(percent)
            .ok()
            .filter(|p| (1..=99).contains(p))
            .ok_or_else(|| {
                format!(
                    "spec.maintenance.defrag.minFreePercent is {percent}; it must be between 1 and 99 \
                     (the share of a member's database file that must be free)"
                )
            })?;
        let bytes = p.min_free_bytes.unwrap_or(DEFAULT_MIN_FREE_BYTES as i64);
        let min_free_bytes = u64::try_from(bytes).map_err(|_| {
            format!("spec.maintenance.defrag.minFreeBytes is {bytes}; it must be 0 or more")
        })?;
        Ok(Some(Policy {
            min_free_percent,
            min_free_bytes,
        }))
    }

    fn qualifies(&self, db_size: i64, in_use: i64) -> bool {
        let (Ok(size), Ok(used)) = (u64::try_from(db_size), u64::try_from(in_use)) else {
            return false;
        };
        let free = size.saturating_sub(used);
        size > 0
            && free >= self.min_free_bytes.max(1)
            && free * 100 >= u64::from(self.min_free_percent) * size
    }
}

/// The member to defragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub name: String,
    pub is_leader: bool,
    /// Its database file and the free space in it when it was picked.
    pub db_size: i64,
    pub free: i64,
}

/// Every member is a healthy voter whose database sizes are known: the
/// only state in which a member may be taken out to be defragmented.
pub fn all_measured(view: &ClusterView) -> bool {
    !view.members.is_empty()
        && view
            .members
            .iter()
            .all(|m| m.healthy && !m.is_learner && m.db_size.is_some())
}

/// The next member to defragment, if any: only when every member is a
/// healthy voter whose sizes are known; the first qualifying follower by
/// name, else the leader; never one that `cooling` (defragmented recently).
pub fn next(policy: &Policy, view: &ClusterView, cooling: impl Fn(&str) -> bool) -> Option<Pick> {
    if !all_measured(view) {
        return None;
    }
    let mut candidates: Vec<_> = view
        .members
        .iter()
        .filter(|m| !cooling(&m.name))
        .filter_map(|m| {
            let (size, used) = (m.db_size?, m.db_size_in_use?);
            policy.qualifies(size, used).then(|| Pick {
                name: m.name.clone(),
                is_leader: m.is_leader,
                db_size: size,
                free: size - used,
            })
        })
        .collect();
    candidates.sort_by(|a, b| (a.is_leader, &a.name).cmp(&(b.is_leader, &b.name)));
    candidates.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{DefragPolicy, MaintenancePolicy};
    use crate::controller::decide::MemberView;

    fn member(name: &str, leader: bool, size: i64, used: i64) -> MemberView {
        MemberView {
            name: name.into(),
            id: Some(1),
            healthy: true,
            is_leader: leader,
            db_size: Some(size),
            db_size_in_use: Some(used),
            ..Default::default()
        }
    }

    const MIB: i64 = 1 << 20;

    fn policy() -> Policy {
        Policy {
            min_free_percent: 50,
            min_free_bytes: 64 << 20,
        }
    }

    #[test]
    fn followers_first_by_name_then_the_leader() {
        let view = ClusterView {
            members: vec![
                member("c", true, 400 * MIB, 100 * MIB),
                member("b", false, 400 * MIB, 100 * MIB),
                member("a", false, 400 * MIB, 100 * MIB),
            ],
            ..Default::default()
        };
        let mut order: Vec<String> = Vec::new();
        while let Some(pick) = next(&policy(), &view, |n| order.iter().any(|d| d == n)) {
            order.push(pick.name);
        }
        assert_eq!(order, ["a", "b", "c"]);
        let pick = next(&policy(), &view, |_| false).unwrap();
        assert_eq!((pick.db_size, pick.free), (400 * MIB, 300 * MIB));
    }

    #[test]
    fn both_minimums_must_be_met() {
        for (size, used, expect) in [
            (400 * MIB, 100 * MIB, true),
            // Half free, exactly: qualifies.
            (200 * MIB, 100 * MIB, true),
            // Most of it free, but under 64 MiB.
            (60 * MIB, MIB, false),
            // Plenty free in bytes, under half of the file.
            (1000 * MIB, 600 * MIB, false),
            (0, 0, false),
        ] {
            let view = ClusterView {
                members: vec![member("a", true, size, used)],
                ..Default::default()
            };
            assert_eq!(
                next(&policy(), &view, |_| false).is_some(),
                expect,
                "{size} {used}"
            );
        }
    }

    #[test]
    fn nothing_while_a_member_is_unhealthy_a_learner_or_unmeasured() {
        let fragmented = || member("a", false, 400 * MIB, 100 * MIB);
        for other in [
            MemberView {
                healthy: false,
                ..member("b", true, MIB, MIB)
            },
            MemberView {
                is_learner: true,
                ..member("b", true, MIB, MIB)
            },
            MemberView {
                db_size: None,
                ..member("b", true, MIB, MIB)
            },
        ] {
            let view = ClusterView {
                members: vec![fragmented(), other.clone()],
                ..Default::default()
            };
            assert_eq!(next(&policy(), &view, |_| false), None, "{other:?}");
        }
        let view = ClusterView {
            members: vec![fragmented()],
            ..Default::default()
        };
        assert_eq!(next(&policy(), &view, |n| n == "a"), None, "cooling down");
    }

    #[test]
    fn the_policy_is_read_and_checked_naming_the_field() {
        let spec = |percent, bytes| EtcdClusterSpec {
            maintenance: Some(MaintenancePolicy {
                defrag: Some(DefragPolicy {
                    min_free_percent: percent,
                    min_free_bytes: bytes,
                }),
                no_space: None,
            }),
            ..Default::default()
        };
        assert_eq!(Policy::of(&EtcdClusterSpec::default()), Ok(None));
        assert_eq!(Policy::of(&spec(None, None)), Ok(Some(policy())));
        let err = Policy::of(&spec(Some(100), None)).unwrap_err();
        assert!(
            err.contains("spec.maintenance.defrag.minFreePercent is 100"),
            "{err}"
        );
        let err = Policy::of(&spec(None, Some(-1))).unwrap_err();
        assert!(
            err.contains("spec.maintenance.defrag.minFreeBytes is -1"),
            "{err}"
        );
    }
}
