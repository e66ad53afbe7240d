//! The decision: given what is desired and what is observed, the one next
//! step. Pure and synchronous, so every rule is a unit test away.
//!
//! One step per reconcile: the loop observes again after each action, so a
//! crash of the operator between steps loses nothing.

use std::time::Duration;

use super::version::{Version, check_supported, check_upgrade};

/// One member as observed: its runtime object, its membership entry and its health.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemberView {
    pub name: String,
    pub peer_url: String,
    /// Membership id, if the member is in the etcd membership.
    pub id: Option<u64>,
    pub is_learner: bool,
    /// The runtime holds it (process/data dir, Pod).
    pub in_runtime: bool,
    pub running: bool,
    pub has_data: bool,
    /// It was started at least once (a reserved member never was).
    pub ever_started: bool,
    /// Answers status, without errors, and sees a leader.
    pub healthy: bool,
    /// The runtime says it runs, but the operator's status call failed
    /// (what failed: DNS, connect, TLS, timeout). Not evidence that the
    /// member is down: the operator may be the one cut off.
    pub unreachable: Option<String>,
    /// How long it has been unreachable (zero when it answers).
    pub unreachable_for: Duration,
    /// How long it has been unhealthy (zero when healthy).
    pub unhealthy_for: Duration,
    pub raft_index: Option<u64>,
    pub is_leader: bool,
    pub version: Option<Version>,
    /// Its database file's size and the part of it in use, when it answers.
    pub db_size: Option<i64>,
    pub db_size_in_use: Option<i64>,
    /// The revision it has applied, when it answers.
    pub revision: Option<i64>,
    /// The extra etcd flags the runtime started it with.
    pub flags: Vec<String>,
}

/// `NOSPACE (raised by c-1, c-2), CORRUPT (raised by c-3)`.
pub fn alarm_summary(alarms: &[crate::api::ClusterAlarm]) -> String {
    super::status::alarms_by_kind(alarms)
        .iter()
        .map(|(kind, members)| format!("{kind} (raised by {})", members.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole cluster as observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    pub members: Vec<MemberView>,
    /// Whether the membership could be read (it needs a quorum).
    pub membership_known: bool,
    /// How long fewer than a quorum of voters have been healthy.
    pub quorum_lost_for: Option<Duration>,
    /// The cluster has served at least once (a member was seen healthy),
    /// so it may hold data: never seeded again. Remembered in status.
    pub ever_served: bool,
    /// The members of a recovery from a backup that was recorded in status
    /// (`status.restoring`) and may not have finished.
    pub restoring: Option<Vec<String>>,
    /// etcd's alarms, as any member reported them (they are cluster-wide).
    pub alarms: Vec<crate::api::ClusterAlarm>,
    /// A member stopped and started again comes back without its data
    /// (Kubernetes members on emptyDir), so new flags need new members.
    pub restart_loses_data: bool,
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub size: usize,
    pub version: Version,
    /// The extra etcd flags every member should run with
    /// ([`crate::etcd::flags::member_flags`]).
    pub flags: Vec<String>,
    /// The database quota those flags give the members, in bytes.
    pub quota: u64,
}

impl Desired {
    /// `size` members of `version`, with no extra flags and etcd's default
    /// quota.
    pub fn new(size: usize, version: Version) -> Self {
        Desired {
            size,
            version,
            flags: Vec::new(),
            quota: crate::etcd::flags::DEFAULT_QUOTA_BYTES,
        }
    }
}

/// Thresholds, from the operator's configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    /// A member unhealthy this long is replaced.
    pub member_failure_grace: Duration,
    /// A majority unhealthy this long triggers disaster recovery.
    pub quorum_loss_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            member_failure_grace: Duration::from_secs(60),
            quorum_loss_timeout: Duration::from_secs(120),
        }
    }
}

/// The next step.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Everything matches the spec.
    Steady,
    /// Nothing safe to do yet; the reason goes to status.
    Wait {
        reason: String,
    },
    /// Start a brand-new cluster: all `spec.size` members at once, with a
    /// static `--initial-cluster` naming every one of them. Safe only
    /// because nothing of this cluster ever ran (or what ran never served
    /// and left no data), so no data exists anywhere; growth beyond the
    /// initial size stays learner-first ([`Action::Grow`]). Members reserved
    /// but never started keep their names (`reuse`); fresh ones make up the
    /// rest.
    Seed {
        reuse: Vec<String>,
    },
    /// Start the members a static bootstrap reserved but did not start (the
    /// operator stopped between its starts), with the same
    /// `--initial-cluster`: every member the runtime holds.
    StartSeeded {
        names: Vec<String>,
    },
    /// Add a member: reserve it (or reuse a reserved one), add it as a learner, start it.
    Grow {
        name: Option<String>,
    },
    /// Start a learner that is in the membership but was never started.
    StartLearner {
        name: String,
    },
    Promote {
        name: String,
        id: u64,
    },
    /// Its process is down but its data survived: restart it under its own identity.
    Restart {
        name: String,
    },
    /// Remove a failed member from the membership, then delete it.
    Replace {
        name: String,
        id: u64,
        why: String,
    },
    /// Scale down: remove a healthy member from the membership, then delete it.
    Shrink {
        name: String,
        id: u64,
    },
    /// Delete a runtime member that is not in the membership.
    Cleanup {
        name: String,
    },
    /// Restart a member on a new version.
    Upgrade {
        name: String,
        to: Version,
    },
    /// Bring a member to the spec's etcd flags: restart it keeping its
    /// data, or, where a restart loses the data (`replace`), remove it from
    /// the membership and delete it, for a fresh member to be added with
    /// them.
    Reconfigure {
        name: String,
        id: u64,
        replace: bool,
    },
    /// Quorum is lost for good: restart the survivor with the most data as a
    /// one-member cluster; the rest is deleted and the cluster grows back.
    Recover {
        survivor: String,
    },
    /// Defragment one member (`spec.maintenance.defrag`); chosen only when
    /// the cluster is otherwise steady ([`super::defrag::next`]).
    Defragment {
        name: String,
        is_leader: bool,
        /// Its database file and the free space in it when it was chosen.
        db_size: i64,
        free: i64,
    },
    /// NOSPACE recovery (`spec.maintenance.noSpace.recover`): compact the
    /// history up to `revision` ([`super::nospace`]).
    CompactHistory {
        revision: i64,
    },
    /// NOSPACE recovery: every member's file is below the limit now;
    /// disarm the NOSPACE alarms.
    DisarmNoSpace,
    /// Go on with the recovery from a backup recorded in status: start the
    /// recorded members that do not run yet, delete every other member.
    FinishRestore,
    /// Quorum is lost and no member has data left.
    Unrecoverable {
        reason: String,
    },
    /// The spec asks for something that must not be done.
    Refuse {
        reason: String,
    },
}

impl MemberView {
    /// Reserved for a Grow (ports allocated) but never started nor added:
    /// not a member yet, so neither healthy nor unhealthy.
    pub fn is_reserved(&self) -> bool {
        self.in_runtime
            && self.id.is_none()
            && !self.ever_started
            && !self.running
            && !self.has_data
    }
}

fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// A recovery from a backup recorded in status still has work to do: not
/// every recorded member has started, or they do not hold a quorum yet.
/// It is over (and forgotten) as soon as a member outside the record runs
/// or holds data: then something else (an EtcdRestore, a user) has changed
/// the cluster, and deleting that member to finish the recorded restore
/// could destroy data.
fn restore_unfinished(names: &[String], m: &[MemberView]) -> bool {
    let ours = |x: &MemberView| names.contains(&x.name);
    if m.iter()
        .any(|x| x.in_runtime && !ours(x) && (x.running || x.has_data))
    {
        return false;
    }
    let started = names.iter().all(|n| {
        m.iter()
            .any(|x| &x.name == n && x.in_runtime && x.ever_started)
    });
    let healthy = m.iter().filter(|x| ours(x) && x.healthy).count();
    !(started && healthy >= quorum(names.len()))
}

/// `name (what failed), ...` of the members the runtime runs but the
/// operator cannot reach; `None` when there are none.
pub fn unreachable_summary(members: &[MemberView]) -> Option<String> {
    summary(members.iter().filter(|x| x.unreachable.is_some()))
}

/// A member unreachable this long is reported (condition, Event, metric).
/// Shorter is the normal start of a member (its port refuses until etcd
/// listens); the core waits for it either way.
pub const REPORT_UNREACHABLE_AFTER: Duration = Duration::from_secs(5);

/// [`unreachable_summary`] of the members unreachable for at least
/// [`REPORT_UNREACHABLE_AFTER`].
pub fn reported_unreachable(members: &[MemberView]) -> Option<String> {
    summary(
        members
            .iter()
            .filter(|x| x.unreachable.is_some() && x.unreachable_for >= REPORT_UNREACHABLE_AFTER),
    )
}

fn summary<'a>(members: impl Iterator<Item = &'a MemberView>) -> Option<String> {
    let named: Vec<String> = members
        .map(|x| {
            format!(
                "{} ({})",
                x.name,
                x.unreachable.as_deref().unwrap_or_default()
            )
        })
        .collect();
    (!named.is_empty()).then(|| named.join(", "))
}

/// Decide the next step.
pub fn decide(desired: &Desired, view: &ClusterView, tuning: &Tuning) -> Action {
    if let Err(reason) = check_supported(&desired.version) {
        return Action::Refuse { reason };
    }
    let m = &view.members;
    if let Some(names) = &view.restoring
        && restore_unfinished(names, m)
    {
        return Action::FinishRestore;
    }
    if !view.ever_served
        && (m.iter().all(|x| !x.ever_started) || m.iter().all(|x| !x.running && !x.has_data))
    {
        // Nothing ever started, or a first start that never served and left
        // no data (e.g. a member could not bind its port): seed (again),
        // reusing reserved names but not a failed seed (a fresh name gets
        // fresh ports; the failed ones are deleted).
        return Action::Seed {
            reuse: m
                .iter()
                .filter(|x| !x.ever_started)
                .map(|x| x.name.clone())
                .take(desired.size)
                .collect(),
        };
    }
    if !view.ever_served && m.iter().any(|x| x.ever_started) && m.iter().any(|x| x.is_reserved()) {
        // A static bootstrap cut short: some members started, the others
        // were reserved with them and never started. A cluster that never
        // served never grew (growth needs a healthy member), so every
        // reserved member is one of the seed's.
        return Action::StartSeeded {
            names: m
                .iter()
                .filter(|x| x.is_reserved())
                .map(|x| x.name.clone())
                .collect(),
        };
    }
    if m.iter().all(|x| !x.ever_started) {
        // A cluster that has served is *never* seeded again: that would
        // silently replace the user's data with an empty cluster. Members
        // reserved but never started are all that is left after a restore
        // was stopped between deleting the old members and starting the
        // new ones.
        return Action::Unrecoverable {
            reason: "no member that ever ran is left (only members reserved for a restore); the operator \
                     restores the newest verified backup of this cluster if there is one: create an \
                     EtcdRestore, or delete and re-create the EtcdCluster to start empty"
                .into(),
        };
    }

    // Voters: from the membership when it can be read, else every member
    // that ever held data (the membership lives in the data).
    let voters: Vec<&MemberView> = if view.membership_known {
        m.iter()
            .filter(|x| x.id.is_some() && !x.is_learner)
            .collect()
    } else {
        m.iter().filter(|x| x.ever_started).collect()
    };
    let healthy_voters = voters.iter().filter(|x| x.healthy).count();

    if voters.is_empty() || healthy_voters < quorum(voters.len()) {
        if let Some(x) = voters
            .iter()
            .find(|x| x.in_runtime && !x.running && x.has_data)
        {
            return Action::Restart {
                name: x.name.clone(),
            };
        }
        // Only the runtime's word that members are down (no process, Pod
        // failed or gone) allows rebuilding from a survivor. Members it
        // reports running may hold a quorum that the operator cannot see.
        let running = voters.iter().filter(|x| x.in_runtime && x.running).count();
        if running >= quorum(voters.len()) {
            return Action::Wait {
                reason: match unreachable_summary(m) {
                    Some(what) => format!(
                        "members unreachable from the operator: {what}; {running} of {} voting members are running, \
                         so nothing is changed until they answer",
                        voters.len()
                    ),
                    None => format!(
                        "no leader: {healthy_voters} of {} voting members healthy, {running} running; waiting for \
                         an election",
                        voters.len()
                    ),
                },
            };
        }
        let lost_for = view.quorum_lost_for.unwrap_or_default();
        if lost_for < tuning.quorum_loss_timeout {
            return Action::Wait {
                reason: format!(
                    "quorum lost: {healthy_voters} of {} voting members healthy, {running} running; recovering from \
                     the surviving member with the most data in {}s unless members come back",
                    voters.len(),
                    (tuning.quorum_loss_timeout - lost_for).as_secs()
                ),
            };
        }
        // The survivor is chosen from raft indexes actually read: a
        // running member whose index is unknown might be the most advanced.
        // With a single member holding data there is no choice to make (a
        // member restarted without quorum does not answer until it has one).
        let holders = m
            .iter()
            .filter(|x| x.in_runtime && x.running && x.has_data)
            .count();
        if holders > 1
            && let Some(x) = m
                .iter()
                .find(|x| x.in_runtime && x.running && x.has_data && x.raft_index.is_none())
        {
            return Action::Wait {
                reason: format!(
                    "quorum lost: waiting to read the raft index of running member {} ({}) before choosing \
                     the survivor",
                    x.name,
                    x.unreachable.as_deref().unwrap_or("no answer yet")
                ),
            };
        }
        let survivor = m
            .iter()
            .filter(|x| x.in_runtime && x.running && x.has_data)
            .filter(|x| holders == 1 || x.raft_index.is_some())
            .max_by_key(|x| (x.raft_index, std::cmp::Reverse(x.name.clone())));
        return match survivor {
            Some(s) => Action::Recover {
                survivor: s.name.clone(),
            },
            None => Action::Unrecoverable {
                reason: "quorum lost and no member has data left; restore the cluster from a backup (EtcdRestore)"
                    .into(),
            },
        };
    }

    // Quorum holds from here on.
    if let Some(x) = m
        .iter()
        .find(|x| x.id.is_some() && x.in_runtime && !x.running && x.has_data)
    {
        return Action::Restart {
            name: x.name.clone(),
        };
    }
    // Stale runtime members (removed from the membership, or strays). A member
    // reserved but never started is kept: the next Grow reuses it.
    if view.membership_known
        && let Some(x) = m
            .iter()
            .find(|x| x.in_runtime && x.id.is_none() && (x.ever_started || x.running || x.has_data))
    {
        return Action::Cleanup {
            name: x.name.clone(),
        };
    }
    if let Some(x) = m.iter().find(|x| x.id.is_some() && !x.in_runtime) {
        return Action::Replace {
            name: x.name.clone(),
            id: x.id.unwrap_or_default(),
            why: "its runtime object is gone".into(),
        };
    }
    if let Some(x) = m.iter().find(|x| x.is_learner && !x.running && !x.has_data) {
        return Action::StartLearner {
            name: x.name.clone(),
        };
    }
    if let Some(x) = m
        .iter()
        .find(|x| x.id.is_some() && !x.is_learner && !x.running && !x.has_data)
    {
        return Action::Replace {
            name: x.name.clone(),
            id: x.id.unwrap_or_default(),
            why: "its data is gone".into(),
        };
    }
    // Replacing an unhealthy member needs it to have answered (it reports
    // errors or no leader): one the operator cannot reach is not replaced,
    // however long that lasts.
    if let Some(x) = m.iter().find(|x| {
        x.id.is_some()
            && !x.healthy
            && x.unreachable.is_none()
            && x.unhealthy_for >= tuning.member_failure_grace
    }) {
        return Action::Replace {
            name: x.name.clone(),
            id: x.id.unwrap_or_default(),
            why: format!("it has been unhealthy for {}s", x.unhealthy_for.as_secs()),
        };
    }
    if let Some(x) = m.iter().find(|x| x.is_learner && x.healthy) {
        return Action::Promote {
            name: x.name.clone(),
            id: x.id.unwrap_or_default(),
        };
    }
    if let Some(what) = unreachable_summary(m) {
        return Action::Wait {
            reason: format!(
                "members unreachable from the operator: {what}; they are running, so nothing is changed until \
                 they answer"
            ),
        };
    }
    if let Some(x) = m.iter().find(|x| !x.healthy && !x.is_reserved()) {
        return Action::Wait {
            reason: format!(
                "member {} is not healthy yet ({}s; replaced after {}s)",
                x.name,
                x.unhealthy_for.as_secs(),
                tuning.member_failure_grace.as_secs()
            ),
        };
    }

    // An alarm stops upgrades and scaling: restarting or adding members
    // does not clear it, and a NOSPACE cluster cannot take the writes a
    // new member's join needs. Maintenance (a defragmentation, which a
    // NOSPACE cluster needs) still runs: the reconciler tries it on this
    // Wait as on a steady result.
    // A restart with new flags is allowed: raising the quota is how a
    // NOSPACE cluster gets room again.
    let change = upgrade_or_scale(desired, &voters, m, view.restart_loses_data);
    let changes_members = matches!(
        change,
        Action::Upgrade { .. }
            | Action::Grow { .. }
            | Action::Shrink { .. }
            | Action::Reconfigure { replace: true, .. }
    );
    if changes_members && !view.alarms.is_empty() {
        return Action::Wait {
            reason: format!(
                "etcd alarm {}: no upgrade or scaling until it is disarmed (see the Alarm condition)",
                alarm_summary(&view.alarms)
            ),
        };
    }
    change
}

/// With every member healthy: the next upgrade step, then scaling.
fn upgrade_or_scale(
    desired: &Desired,
    voters: &[&MemberView],
    m: &[MemberView],
    restart_loses_data: bool,
) -> Action {
    let versions: Vec<Version> = voters.iter().filter_map(|x| x.version).collect();
    if let Some(current) = versions.iter().min()
        && versions
            .iter()
            .any(|v| v.minor_line() != desired.version.minor_line() || *v != desired.version)
    {
        if let Err(reason) = check_upgrade(current, &desired.version) {
            return Action::Refuse { reason };
        }
        // Followers first, the leader last: one leader election at most.
        let next = voters
            .iter()
            .filter(|x| x.version != Some(desired.version))
            .min_by_key(|x| (x.is_leader, x.name.clone()));
        if let Some(x) = next {
            return Action::Upgrade {
                name: x.name.clone(),
                to: desired.version,
            };
        }
    }
    let members = voters.len() + m.iter().filter(|x| x.is_learner).count();
    if members < desired.size {
        let reserved = m
            .iter()
            .find(|x| x.in_runtime && x.id.is_none() && !x.ever_started);
        return Action::Grow {
            name: reserved.map(|x| x.name.clone()),
        };
    }
    if voters.len() > desired.size {
        let x = voters
            .iter()
            .max_by_key(|x| (!x.is_leader, x.name.clone()))
            .expect("voters is not empty");
        return Action::Shrink {
            name: x.name.clone(),
            id: x.id.unwrap_or_default(),
        };
    }
    reconfigure(desired, voters, restart_loses_data)
}

/// At the desired size and version: the next member whose etcd flags are
/// not the spec's, followers first and the leader last.
fn reconfigure(desired: &Desired, voters: &[&MemberView], restart_loses_data: bool) -> Action {
    let Some(x) = voters
        .iter()
        .filter(|x| x.in_runtime && x.flags != desired.flags)
        .min_by_key(|x| (x.is_leader, x.name.clone()))
    else {
        return Action::Steady;
    };
    // A member restarted under a quota its data already exceeds refuses
    // every write at once.
    if let Some(big) = voters
        .iter()
        .filter(|v| v.db_size.is_some_and(|s| s as u64 >= desired.quota))
        .max_by_key(|v| v.db_size)
    {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        return Action::Refuse {
            reason: format!(
                "spec.quotaBackendBytes is {} ({:.1} MiB) but member {}'s database file is already {:.1} MiB:                  members restarted with it would raise NOSPACE and refuse every write; set a larger quota,                  or compact and defragment first",
                desired.quota,
                mib(desired.quota),
                big.name,
                mib(big.db_size.unwrap_or_default() as u64),
            ),
        };
    }
    if restart_loses_data && voters.len() < 3 {
        return Action::Refuse {
            reason: format!(
                "the spec's etcd flags differ from what member {} runs, and changing them means new members \
                 (its storage does not outlive a restart), which a cluster of {} cannot do without losing its \
                 data: set spec.pod.persistentVolumeClaimSpec, or scale to 3 members first",
                x.name,
                voters.len()
            ),
        };
    }
    Action::Reconfigure {
        name: x.name.clone(),
        id: x.id.unwrap_or_default(),
        replace: restart_loses_data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn healthy(name: &str, id: u64) -> MemberView {
        MemberView {
            name: name.into(),
            id: Some(id),
            in_runtime: true,
            running: true,
            has_data: true,
            ever_started: true,
            healthy: true,
            raft_index: Some(100),
            version: Some(v("3.5.1")),
            ..Default::default()
        }
    }

    fn dead(mut m: MemberView, data: bool, for_secs: u64) -> MemberView {
        m.running = false;
        m.healthy = false;
        m.has_data = data;
        m.unhealthy_for = Duration::from_secs(for_secs);
        m
    }

    fn view(members: Vec<MemberView>) -> ClusterView {
        ClusterView {
            members,
            membership_known: true,
            quorum_lost_for: None,
            ever_served: true,
            restoring: None,
            alarms: Vec::new(),
            restart_loses_data: false,
        }
    }

    fn want(size: usize) -> Desired {
        Desired::new(size, v("3.5.1"))
    }

    fn t() -> Tuning {
        Tuning {
            member_failure_grace: Duration::from_secs(10),
            quorum_loss_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn seeds_a_new_cluster_at_its_size_then_grows_one_at_a_time() {
        assert_eq!(
            decide(&want(3), &ClusterView::default(), &t()),
            Action::Seed { reuse: vec![] }
        );
        // Beyond the size it started with, a cluster grows by learners.
        assert_eq!(
            decide(&want(3), &view(vec![healthy("a", 1)]), &t()),
            Action::Grow { name: None }
        );
        let mut learner = healthy("b", 2);
        learner.is_learner = true;
        assert_eq!(
            decide(
                &want(3),
                &view(vec![healthy("a", 1), learner.clone()]),
                &t()
            ),
            Action::Promote {
                name: "b".into(),
                id: 2
            }
        );
        // A learner still catching up blocks further growth.
        learner.healthy = false;
        learner.unhealthy_for = Duration::from_secs(2);
        assert!(matches!(
            decide(&want(3), &view(vec![healthy("a", 1), learner]), &t()),
            Action::Wait { .. }
        ));
    }

    #[test]
    fn refuses_unsupported_versions() {
        let d = Desired::new(3, v("3.2.25"));
        assert!(
            matches!(decide(&d, &ClusterView::default(), &t()), Action::Refuse { reason } if reason.contains("not supported"))
        );
    }

    #[test]
    fn shrinks_a_follower_never_the_leader() {
        let mut members = vec![healthy("a", 1), healthy("b", 2), healthy("c", 3)];
        members[2].is_leader = true;
        assert_eq!(
            decide(&want(2), &view(members), &t()),
            Action::Shrink {
                name: "b".into(),
                id: 2
            }
        );
    }

    #[test]
    fn restarts_a_crashed_member_that_kept_its_data() {
        let members = vec![
            healthy("a", 1),
            healthy("b", 2),
            dead(healthy("c", 3), true, 1),
        ];
        assert_eq!(
            decide(&want(3), &view(members), &t()),
            Action::Restart { name: "c".into() }
        );
    }

    #[test]
    fn replaces_a_member_whose_data_is_gone_or_that_stays_unhealthy() {
        let members = vec![
            healthy("a", 1),
            healthy("b", 2),
            dead(healthy("c", 3), false, 1),
        ];
        assert!(
            matches!(decide(&want(3), &view(members), &t()), Action::Replace { name, .. } if name == "c")
        );
        let mut sick = healthy("c", 3);
        sick.healthy = false;
        sick.unhealthy_for = Duration::from_secs(5);
        let members = vec![healthy("a", 1), healthy("b", 2), sick.clone()];
        assert!(
            matches!(decide(&want(3), &view(members), &t()), Action::Wait { .. }),
            "within the grace period"
        );
        sick.unhealthy_for = Duration::from_secs(11);
        let members = vec![healthy("a", 1), healthy("b", 2), sick];
        assert!(
            matches!(decide(&want(3), &view(members), &t()), Action::Replace { name, .. } if name == "c")
        );
    }

    #[test]
    fn a_reserved_member_is_reused_not_waited_for() {
        let reserved = MemberView {
            name: "r".into(),
            in_runtime: true,
            ..Default::default()
        };
        assert_eq!(
            decide(&want(2), &view(vec![healthy("a", 1), reserved]), &t()),
            Action::Grow {
                name: Some("r".into())
            }
        );
    }

    #[test]
    fn cleans_up_runtime_members_outside_the_membership() {
        let mut stray = healthy("x", 0);
        stray.id = None;
        assert_eq!(
            decide(&want(1), &view(vec![healthy("a", 1), stray]), &t()),
            Action::Cleanup { name: "x".into() }
        );
    }

    /// Running (per the runtime), reachable, but no leader.
    fn leaderless(name: &str, id: u64, raft_index: u64) -> MemberView {
        let mut m = healthy(name, id);
        m.healthy = false;
        m.raft_index = Some(raft_index);
        m
    }

    /// Running (per the runtime), but the operator's status call failed.
    fn unreachable(name: &str, id: u64) -> MemberView {
        let mut m = healthy(name, id);
        m.healthy = false;
        m.raft_index = None;
        m.unreachable = Some("timed out".into());
        m
    }

    fn quorum_lost(members: Vec<MemberView>, for_secs: u64) -> ClusterView {
        ClusterView {
            members,
            membership_known: false,
            quorum_lost_for: Some(Duration::from_secs(for_secs)),
            ever_served: true,
            restoring: None,
            alarms: Vec::new(),
            restart_loses_data: false,
        }
    }

    #[test]
    fn quorum_loss_waits_then_recovers_from_the_most_advanced_survivor() {
        let mut v = quorum_lost(
            vec![
                leaderless("a", 1, 90),
                dead(healthy("b", 2), false, 100),
                dead(healthy("c", 3), false, 100),
            ],
            5,
        );
        assert!(
            matches!(decide(&want(3), &v, &t()), Action::Wait { reason } if reason.contains("quorum lost"))
        );
        v.quorum_lost_for = Some(Duration::from_secs(31));
        assert_eq!(
            decide(&want(3), &v, &t()),
            Action::Recover {
                survivor: "a".into()
            }
        );
        // Of two running survivors (five members), the one with the higher index.
        let v = quorum_lost(
            vec![
                leaderless("a", 1, 90),
                leaderless("b", 2, 120),
                dead(healthy("c", 3), false, 100),
                dead(healthy("d", 4), false, 100),
                dead(healthy("e", 5), false, 100),
            ],
            31,
        );
        assert_eq!(
            decide(&want(5), &v, &t()),
            Action::Recover {
                survivor: "b".into()
            }
        );
    }

    #[test]
    fn an_operator_cut_off_from_running_members_never_recovers_however_long() {
        // Every member runs; the operator's own calls fail.
        let v = quorum_lost(
            vec![
                unreachable("a", 1),
                unreachable("b", 2),
                unreachable("c", 3),
            ],
            100_000,
        );
        match decide(&want(3), &v, &t()) {
            Action::Wait { reason } => {
                assert!(reason.contains("unreachable"), "{reason}");
                assert!(reason.contains("a (timed out)"), "{reason}");
            }
            other => panic!("expected a wait, got {other:?}"),
        }
        // Two running members without a leader are not a reason either.
        let v = quorum_lost(
            vec![
                leaderless("a", 1, 90),
                leaderless("b", 2, 120),
                dead(healthy("c", 3), false, 100),
            ],
            100_000,
        );
        assert!(
            matches!(decide(&want(3), &v, &t()), Action::Wait { reason } if reason.contains("no leader"))
        );
    }

    #[test]
    fn an_unreachable_member_is_never_replaced_while_quorum_holds() {
        let mut c = unreachable("c", 3);
        c.unhealthy_for = Duration::from_secs(100_000);
        let action = decide(
            &want(3),
            &view(vec![healthy("a", 1), healthy("b", 2), c]),
            &t(),
        );
        assert!(
            matches!(&action, Action::Wait { reason } if reason.contains("c (timed out)")),
            "{action:?}"
        );
        // Nor does it let the cluster scale or upgrade past it.
        let c = unreachable("c", 3);
        assert!(matches!(
            decide(
                &want(5),
                &view(vec![healthy("a", 1), healthy("b", 2), c]),
                &t()
            ),
            Action::Wait { .. }
        ));
    }

    #[test]
    fn the_survivor_is_chosen_only_from_raft_indexes_read() {
        let mut v = quorum_lost(
            vec![
                leaderless("a", 1, 90),
                unreachable("b", 2),
                dead(healthy("c", 3), false, 100),
                dead(healthy("d", 4), false, 100),
                dead(healthy("e", 5), false, 100),
            ],
            1000,
        );
        assert!(
            matches!(decide(&want(5), &v, &t()), Action::Wait { reason } if reason.contains("raft index of running member b")),
        );
        v.members[1] = leaderless("b", 2, 80);
        assert_eq!(
            decide(&want(5), &v, &t()),
            Action::Recover {
                survivor: "a".into()
            }
        );
    }

    #[test]
    fn a_lone_data_holder_is_the_survivor_even_before_it_answers() {
        // Restarted without quorum, etcd does not serve clients: its index
        // cannot be read, and there is nobody to compare it with.
        let v = quorum_lost(
            vec![
                unreachable("a", 1),
                dead(healthy("b", 2), false, 100),
                dead(healthy("c", 3), false, 100),
            ],
            31,
        );
        assert_eq!(
            decide(&want(3), &v, &t()),
            Action::Recover {
                survivor: "a".into()
            }
        );
    }

    #[test]
    fn voters_gone_from_the_runtime_count_as_down() {
        // An emptyDir cluster: two Pods deleted, only a member's local view
        // of the membership names them.
        let gone = |name: &str, id: u64| MemberView {
            name: name.into(),
            id: Some(id),
            ever_started: true,
            ..Default::default()
        };
        let v = quorum_lost(vec![leaderless("a", 1, 90), gone("b", 2), gone("c", 3)], 31);
        assert_eq!(
            decide(&want(3), &v, &t()),
            Action::Recover {
                survivor: "a".into()
            }
        );
    }

    #[test]
    fn a_seed_that_never_served_is_seeded_again_but_a_served_cluster_never() {
        // The seed died at start (its port was taken) and left no data.
        let mut v = quorum_lost(vec![dead(healthy("a", 1), false, 50)], 1000);
        v.members[0].id = None;
        v.ever_served = false;
        assert_eq!(
            decide(&want(1), &v, &t()),
            Action::Seed { reuse: vec![] },
            "a fresh member, not the failed one"
        );
        v.ever_served = true;
        assert!(matches!(
            decide(&want(1), &v, &t()),
            Action::Unrecoverable { .. }
        ));
        // Still starting (running): not seeded again.
        let mut v = quorum_lost(vec![leaderless("a", 1, 0)], 1000);
        v.ever_served = false;
        assert!(!matches!(decide(&want(1), &v, &t()), Action::Seed { .. }));
    }

    #[test]
    fn a_static_bootstrap_cut_short_starts_its_remaining_members() {
        let reserved = |name: &str| MemberView {
            name: name.into(),
            in_runtime: true,
            ..Default::default()
        };
        let mut v = quorum_lost(vec![leaderless("a", 1, 0), reserved("b"), reserved("c")], 5);
        v.ever_served = false;
        assert_eq!(
            decide(&want(3), &v, &t()),
            Action::StartSeeded {
                names: vec!["b".into(), "c".into()]
            }
        );
        // A cluster that served grows its reserved members as learners.
        v.ever_served = true;
        assert!(!matches!(
            decide(&want(3), &v, &t()),
            Action::StartSeeded { .. }
        ));
    }

    #[test]
    fn an_alarm_holds_back_scaling_but_not_a_restart() {
        let alarms = vec![crate::api::ClusterAlarm {
            alarm: "NOSPACE".into(),
            member: "a".into(),
        }];
        let v = ClusterView {
            members: vec![healthy("a", 1), healthy("b", 2), healthy("c", 3)],
            membership_known: true,
            ever_served: true,
            alarms: alarms.clone(),
            ..Default::default()
        };
        assert!(
            matches!(decide(&want(5), &v, &t()), Action::Wait { reason } if reason.contains("etcd alarm NOSPACE (raised by a)")),
            "{:?}",
            decide(&want(5), &v, &t())
        );
        let v = ClusterView {
            members: vec![
                healthy("a", 1),
                healthy("b", 2),
                dead(healthy("c", 3), true, 5),
            ],
            ..v
        };
        assert_eq!(
            decide(&want(3), &v, &t()),
            Action::Restart { name: "c".into() }
        );
    }

    #[test]
    fn quorum_loss_restarts_members_with_data_first() {
        let v = ClusterView {
            members: vec![
                healthy("a", 1),
                dead(healthy("b", 2), true, 50),
                dead(healthy("c", 3), true, 50),
            ],
            membership_known: false,
            quorum_lost_for: Some(Duration::from_secs(100)),
            ever_served: true,
            restoring: None,
            alarms: Vec::new(),
            restart_loses_data: false,
        };
        assert_eq!(
            decide(&want(3), &v, &t()),
            Action::Restart { name: "b".into() }
        );
    }

    #[test]
    fn quorum_loss_without_data_is_unrecoverable_here() {
        let v = ClusterView {
            members: vec![
                dead(healthy("a", 1), false, 50),
                dead(healthy("b", 2), false, 50),
            ],
            membership_known: false,
            quorum_lost_for: Some(Duration::from_secs(100)),
            ever_served: true,
            restoring: None,
            alarms: Vec::new(),
            restart_loses_data: false,
        };
        assert!(matches!(
            decide(&want(3), &v, &t()),
            Action::Unrecoverable { .. }
        ));
        // Members reserved but never started, in a cluster that never
        // served, are a seed that crashed: seed again.
        let mut reserved = v.clone();
        for m in &mut reserved.members {
            m.ever_started = false;
        }
        assert!(matches!(
            decide(&want(3), &reserved, &t()),
            Action::Unrecoverable { .. }
        ));
        reserved.ever_served = false;
        assert_eq!(
            decide(&want(3), &reserved, &t()),
            Action::Seed {
                reuse: vec!["a".into(), "b".into()]
            }
        );
        // Never more names than the size asks for.
        assert_eq!(
            decide(&want(1), &reserved, &t()),
            Action::Seed {
                reuse: vec!["a".into()]
            }
        );
    }

    #[test]
    fn a_recorded_restore_is_finished_unless_something_else_changed_the_cluster() {
        let reserved = |n: &str| MemberView {
            name: n.into(),
            in_runtime: true,
            ..Default::default()
        };
        let mut restored = reserved("r1");
        restored.ever_started = true;
        restored.running = true;
        restored.has_data = true;
        let old = MemberView {
            ever_started: true,
            ..reserved("old")
        };
        let names: Vec<String> = ["r1", "r2", "r3"].map(String::from).to_vec();
        let mut v = ClusterView {
            members: vec![
                old.clone(),
                restored.clone(),
                reserved("r2"),
                reserved("r3"),
            ],
            ever_served: true,
            restoring: Some(names.clone()),
            ..Default::default()
        };
        // One restored member waits for peers that were never started.
        assert_eq!(decide(&want(3), &v, &t()), Action::FinishRestore);
        // All started and a quorum of them healthy: the restore is over.
        let mut done = v.clone();
        done.members = ["r1", "r2", "r3"]
            .iter()
            .zip(1..)
            .map(|(n, i)| healthy(n, i))
            .collect();
        for m in &mut done.members {
            m.in_runtime = true;
            m.running = true;
            m.has_data = true;
            m.ever_started = true;
        }
        done.membership_known = true;
        assert_ne!(decide(&want(3), &done, &t()), Action::FinishRestore);
        // A member outside the record holds data: the record is stale.
        v.members[0].has_data = true;
        assert_ne!(decide(&want(3), &v, &t()), Action::FinishRestore);
    }

    #[test]
    fn upgrades_followers_first_one_minor_at_a_time() {
        let mut members: Vec<MemberView> = ["a", "b", "c"]
            .iter()
            .zip(1..)
            .map(|(n, i)| healthy(n, i))
            .collect();
        for m in &mut members {
            m.version = Some(v("3.4.23"));
        }
        members[0].is_leader = true;
        let d = Desired::new(3, v("3.5.1"));
        assert_eq!(
            decide(&d, &view(members.clone()), &t()),
            Action::Upgrade {
                name: "b".into(),
                to: v("3.5.1")
            }
        );
        members[1].version = Some(v("3.5.1"));
        members[2].version = Some(v("3.5.1"));
        assert_eq!(
            decide(&d, &view(members.clone()), &t()),
            Action::Upgrade {
                name: "a".into(),
                to: v("3.5.1")
            }
        );
        let down = Desired::new(3, v("3.3.0"));
        assert!(matches!(
            decide(&down, &view(members), &t()),
            Action::Refuse { .. }
        ));
    }

    #[test]
    fn new_flags_restart_followers_first_after_scaling_and_never_under_a_quota_already_passed() {
        let mut members: Vec<MemberView> = ["a", "b", "c"]
            .iter()
            .zip(1..)
            .map(|(n, i)| healthy(n, i))
            .collect();
        members[0].is_leader = true;
        let flags = vec!["--snapshot-count=5000".to_string()];
        let d = Desired {
            flags: flags.clone(),
            ..Desired::new(3, v("3.5.1"))
        };
        let restart = |name: &str| Action::Reconfigure {
            name: name.into(),
            id: match name {
                "a" => 1,
                "b" => 2,
                _ => 3,
            },
            replace: false,
        };
        assert_eq!(decide(&d, &view(members.clone()), &t()), restart("b"));
        members[1].flags = flags.clone();
        assert_eq!(decide(&d, &view(members.clone()), &t()), restart("c"));
        members[2].flags = flags.clone();
        assert_eq!(decide(&d, &view(members.clone()), &t()), restart("a"));
        members[0].flags = flags.clone();
        assert_eq!(decide(&d, &view(members.clone()), &t()), Action::Steady);

        // Scaling comes first: a new member starts with the new flags.
        members[0].flags.clear();
        assert!(matches!(
            decide(
                &Desired {
                    flags: flags.clone(),
                    ..Desired::new(4, v("3.5.1"))
                },
                &view(members.clone()),
                &t()
            ),
            Action::Grow { .. }
        ));

        // A quota the data already passes is refused, naming both sizes.
        members[2].db_size = Some(300 << 20);
        let small = Desired {
            quota: 200 << 20,
            ..d.clone()
        };
        match decide(&small, &view(members.clone()), &t()) {
            Action::Refuse { reason } => assert!(
                reason.starts_with(
                    "spec.quotaBackendBytes is 209715200 (200.0 MiB) but member c's database file is \
                     already 300.0 MiB"
                ),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn where_a_restart_loses_the_data_new_flags_replace_members_and_wait_out_alarms() {
        let mut members: Vec<MemberView> = ["a", "b", "c"]
            .iter()
            .zip(1..)
            .map(|(n, i)| healthy(n, i))
            .collect();
        members[0].is_leader = true;
        let d = Desired {
            flags: vec!["--pre-vote=true".to_string()],
            ..Desired::new(3, v("3.5.1"))
        };
        let mut v3 = view(members.clone());
        v3.restart_loses_data = true;
        assert_eq!(
            decide(&d, &v3, &t()),
            Action::Reconfigure {
                name: "b".into(),
                id: 2,
                replace: true
            }
        );
        // Removing a member while an alarm stands is a member change: it
        // waits. A restart in place does not (a larger quota is the cure).
        v3.alarms = vec![crate::api::ClusterAlarm {
            alarm: "NOSPACE".into(),
            member: "a".into(),
        }];
        assert!(matches!(decide(&d, &v3, &t()), Action::Wait { .. }));
        v3.restart_loses_data = false;
        assert!(matches!(
            decide(&d, &v3, &t()),
            Action::Reconfigure { replace: false, .. }
        ));

        // One member on emptyDir: new flags would mean losing it all.
        let mut v1 = view(vec![members[0].clone()]);
        v1.restart_loses_data = true;
        match decide(
            &Desired {
                size: 1,
                ..d.clone()
            },
            &v1,
            &t(),
        ) {
            Action::Refuse { reason } => assert!(
                reason.contains(
                    "set spec.pod.persistentVolumeClaimSpec, or scale to 3 members first"
                ),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
