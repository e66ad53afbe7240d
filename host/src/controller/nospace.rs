//! Recovering from etcd's NOSPACE alarm (`spec.maintenance.noSpace.recover`),
//! as a pure function of what was observed and of how far this episode got.
//!
//! A member whose database file reaches the quota raises NOSPACE, and from
//! then on the whole cluster refuses writes until the alarm is disarmed.
//! etcd's own remedy is: compact the history, defragment every member (the
//! file keeps its size until then, and the quota is checked against the
//! file), disarm. Disarming while the data itself still fills the quota
//! only lets the alarm come back at the next write, so the alarm is
//! disarmed only once every file is well below the quota; otherwise the
//! user is told to delete keys or raise `spec.quotaBackendBytes`.

use std::time::{Duration, Instant};

use super::decide::ClusterView;
use super::defrag::Pick;

/// A file must be below this share of the quota for the alarm to go.
pub const DISARM_BELOW_PERCENT: u64 = 80;
/// Defragmentation rounds before the data is taken to fill the quota: a
/// member may be defragmented before its own compaction has finished (it
/// compacts as it applies the request), and then gives back less.
pub const ROUNDS: u8 = 2;
/// A NOSPACE that comes back this soon after a recovery is not recovered
/// again by itself: the data grows faster than compaction frees it, and
/// compacting every few minutes would throw away all history.
pub const RELAPSE_WITHIN: Duration = Duration::from_secs(600);

/// How far the recovery from one NOSPACE alarm got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Episode {
    /// The revision the history was compacted to.
    pub compacted: Option<i64>,
    /// When the current defragmentation round began.
    pub round_began: Option<Instant>,
    /// Rounds begun.
    pub rounds: u8,
    /// Where the recovery stopped: at which revision, under which quota,
    /// and why. Under NOSPACE only deletions move the revision, so a later
    /// one means the user freed something; a new quota (the members
    /// restarted with a larger one) may leave room: either way the recovery
    /// tries again.
    pub stuck: Option<Stuck>,
    /// The user deleted keys since the recovery stopped: the guard against
    /// a NOSPACE that comes back soon after a recovery is lifted.
    pub user_freed: bool,
}

/// See [`Episode::stuck`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub revision: i64,
    pub quota: u64,
    pub reason: String,
}

/// The next step of a recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Compact the history up to `revision`.
    Compact { revision: i64 },
    /// Defragment this member.
    Defragment(Pick),
    /// Every file is below the limit: disarm the NOSPACE alarms.
    Disarm,
    /// Nothing more can be done by the operator; the reason goes to status.
    Stuck {
        reason: String,
        /// The first time it stops there (for one Event).
        first: bool,
    },
}

/// The next step, or `None` when there is no NOSPACE alarm or a member is
/// not a healthy voter whose sizes are known (the recovery waits for it).
/// `defragmented_since(name, t)` says whether a member was defragmented
/// after `t`; `recovered_at` is when the previous episode ended in a disarm.
pub fn next(
    view: &ClusterView,
    quota: u64,
    episode: &mut Episode,
    recovered_at: Option<Instant>,
    defragmented_since: impl Fn(&str, Instant) -> bool,
) -> Option<Step> {
    if !view.alarms.iter().any(|a| a.alarm == "NOSPACE") {
        *episode = Episode::default();
        return None;
    }
    if !super::defrag::all_measured(view) {
        return None;
    }
    let revision = view.members.iter().filter_map(|m| m.revision).max()?;
    if let Some(stuck) = &episode.stuck {
        if revision <= stuck.revision && quota == stuck.quota {
            return Some(Step::Stuck {
                reason: stuck.reason.clone(),
                first: false,
            });
        }
        *episode = Episode {
            user_freed: true,
            ..Episode::default()
        };
    }
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    if episode.compacted.is_none()
        && !episode.user_freed
        && let Some(at) = recovered_at
        && at.elapsed() < RELAPSE_WITHIN
    {
        return Some(stuck(
            episode,
            (revision, quota),
            format!(
                "NOSPACE came back {}s after the operator last recovered from it: the data grows faster \
                 than compaction frees it, so it is not compacted again by itself; delete keys (the \
                 recovery then goes on) or raise spec.quotaBackendBytes ({:.1} MiB now)",
                at.elapsed().as_secs(),
                mib(quota)
            ),
        ));
    }
    if episode.compacted.is_none() {
        return Some(Step::Compact { revision });
    }
    let began = *episode.round_began.get_or_insert_with(|| {
        episode.rounds = 1;
        Instant::now()
    });
    let mut todo: Vec<_> = view
        .members
        .iter()
        .filter(|m| !defragmented_since(&m.name, began))
        .collect();
    todo.sort_by(|a, b| (a.is_leader, &a.name).cmp(&(b.is_leader, &b.name)));
    if let Some(m) = todo.first() {
        let size = m.db_size.unwrap_or_default();
        return Some(Step::Defragment(Pick {
            name: m.name.clone(),
            is_leader: m.is_leader,
            db_size: size,
            free: size - m.db_size_in_use.unwrap_or(size).min(size),
        }));
    }
    let limit = quota / 100 * DISARM_BELOW_PERCENT;
    let biggest = view
        .members
        .iter()
        .max_by_key(|m| m.db_size)
        .expect("members is not empty");
    let size = biggest.db_size.unwrap_or_default().max(0) as u64;
    if size < limit {
        return Some(Step::Disarm);
    }
    if episode.rounds < ROUNDS {
        episode.rounds += 1;
        episode.round_began = Some(Instant::now());
        return next(view, quota, episode, recovered_at, defragmented_since);
    }
    Some(stuck(
        episode,
        (revision, quota),
        format!(
            "NOSPACE stays: after compacting and defragmenting every member, {}'s database is still \
             {:.1} MiB of the {:.1} MiB quota (the alarm is disarmed below {DISARM_BELOW_PERCENT} %): the \
             data itself fills it; delete keys (the recovery then goes on) or raise spec.quotaBackendBytes",
            biggest.name,
            mib(size),
            mib(quota)
        ),
    ))
}

fn stuck(episode: &mut Episode, (revision, quota): (i64, u64), reason: String) -> Step {
    episode.stuck = Some(Stuck {
        revision,
        quota,
        reason: reason.clone(),
    });
    Step::Stuck {
        reason,
        first: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ClusterAlarm;
    use crate::controller::decide::MemberView;

    const MIB: i64 = 1 << 20;

    fn member(name: &str, leader: bool, size: i64) -> MemberView {
        MemberView {
            name: name.into(),
            id: Some(1),
            healthy: true,
            is_leader: leader,
            db_size: Some(size),
            db_size_in_use: Some(size / 4),
            revision: Some(if leader { 900 } else { 899 }),
            ..Default::default()
        }
    }

    fn alarmed(members: Vec<MemberView>) -> ClusterView {
        ClusterView {
            members,
            alarms: vec![ClusterAlarm {
                alarm: "NOSPACE".into(),
                member: "b".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn compact_then_defragment_followers_first_then_disarm_once_below_the_limit() {
        let quota = 100 * MIB as u64;
        let mut view = alarmed(vec![
            member("a", true, 100 * MIB),
            member("b", false, 100 * MIB),
            member("c", false, 100 * MIB),
        ]);
        let mut episode = Episode::default();
        let done = std::cell::RefCell::new(Vec::<String>::new());
        let since = |n: &str, _: Instant| done.borrow().iter().any(|d| d == n);
        assert_eq!(
            next(&view, quota, &mut episode, None, since),
            Some(Step::Compact { revision: 900 }),
            "to the newest revision a member reports"
        );
        episode.compacted = Some(900);
        let mut order = Vec::new();
        while let Some(Step::Defragment(p)) = next(&view, quota, &mut episode, None, since) {
            order.push(p.name.clone());
            done.borrow_mut().push(p.name.clone());
            let m = view.members.iter_mut().find(|m| m.name == p.name).unwrap();
            m.db_size = Some(30 * MIB);
        }
        assert_eq!(order, ["b", "c", "a"]);
        assert_eq!(
            next(&view, quota, &mut episode, None, since),
            Some(Step::Disarm)
        );
        // Disarmed: the episode is over.
        view.alarms.clear();
        assert_eq!(next(&view, quota, &mut episode, None, since), None);
        assert_eq!(episode, Episode::default());
    }

    #[test]
    fn data_that_fills_the_quota_is_defragmented_twice_then_reported_once() {
        let quota = 100 * MIB as u64;
        let view = alarmed(vec![
            member("a", true, 90 * MIB),
            member("b", false, 50 * MIB),
        ]);
        let mut episode = Episode {
            compacted: Some(900),
            ..Default::default()
        };
        let rounds = std::cell::RefCell::new(Vec::<(String, Instant)>::new());
        let since = |n: &str, t: Instant| rounds.borrow().iter().any(|(m, at)| m == n && *at >= t);
        let mut defrags = 0;
        loop {
            match next(&view, quota, &mut episode, None, since) {
                Some(Step::Defragment(p)) => {
                    defrags += 1;
                    rounds.borrow_mut().push((p.name, Instant::now()));
                }
                Some(Step::Stuck { reason, first }) => {
                    assert!(first);
                    assert!(
                        reason.contains("a's database is still 90.0 MiB of the 100.0 MiB quota"),
                        "{reason}"
                    );
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(defrags, 4, "two rounds of two members");
        assert!(matches!(
            next(&view, quota, &mut episode, None, since),
            Some(Step::Stuck { first: false, .. })
        ));
        // A larger quota (the members restarted with it): it starts over.
        let mut raised = episode.clone();
        assert_eq!(
            next(&view, 2 * quota, &mut raised, None, since),
            Some(Step::Compact { revision: 900 })
        );
        // The user deletes keys: the revision moves, and it starts over.
        let mut freed = view.clone();
        for m in &mut freed.members {
            m.revision = Some(950);
        }
        assert_eq!(
            next(&freed, quota, &mut episode, None, since),
            Some(Step::Compact { revision: 950 })
        );
    }

    #[test]
    fn nothing_while_a_member_is_unhealthy_and_no_second_compaction_soon_after_a_recovery() {
        let quota = 100 * MIB as u64;
        let mut sick = member("b", false, 100 * MIB);
        sick.healthy = false;
        let mut episode = Episode::default();
        let view = alarmed(vec![member("a", true, 100 * MIB), sick]);
        assert_eq!(next(&view, quota, &mut episode, None, |_, _| false), None);

        let view = alarmed(vec![member("a", true, 100 * MIB)]);
        match next(&view, quota, &mut episode, Some(Instant::now()), |_, _| {
            false
        }) {
            Some(Step::Stuck { reason, first }) => {
                assert!(first);
                assert!(reason.starts_with("NOSPACE came back 0s after"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Until keys are deleted: then the guard is lifted.
        let mut freed = view.clone();
        freed.members[0].revision = Some(901);
        assert_eq!(
            next(&freed, quota, &mut episode, Some(Instant::now()), |_, _| {
                false
            }),
            Some(Step::Compact { revision: 901 })
        );
    }
}
