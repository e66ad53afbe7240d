//! The EtcdCluster status, computed from one observation and the step taken.

use crate::api::EtcdClusterStatus;
use crate::api::cluster::MembersStatus;
use crate::api::condition::{Condition, set_condition};

use super::decide::{Action, ClusterView, Desired, reported_unreachable};

fn condition(type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        ..Default::default()
    }
}

/// Why the cluster is changing, for the Progressing condition.
pub(crate) fn progress(action: &Action) -> Option<(&'static str, String)> {
    Some(match action {
        Action::Seed { .. } => ("Creating", "starting the members of a new cluster".into()),
        Action::StartSeeded { names } => (
            "Creating",
            format!("starting {}, the rest of a new cluster", names.join(", ")),
        ),
        Action::Grow { .. } => ("Scaling", "adding a member".into()),
        Action::StartLearner { name } => ("Scaling", format!("starting new member {name}")),
        Action::Promote { name, .. } => (
            "Scaling",
            format!("promoting learner {name} to a voting member"),
        ),
        Action::Shrink { name, .. } => ("Scaling", format!("removing member {name}")),
        Action::Upgrade { name, to } => ("Upgrading", format!("upgrading member {name} to {to}")),
        Action::Restart { name } => (
            "Recovering",
            format!("restarting member {name} with its data"),
        ),
        Action::Replace { name, why, .. } => {
            ("Recovering", format!("replacing member {name}: {why}"))
        }
        Action::Cleanup { name } => ("Recovering", format!("deleting stray member {name}")),
        Action::Reconfigure {
            name,
            replace: false,
            ..
        } => (
            "Reconfiguring",
            format!("restarting member {name} with the spec's etcd flags"),
        ),
        Action::Reconfigure {
            name,
            replace: true,
            ..
        } => (
            "Reconfiguring",
            format!("replacing member {name} by one with the spec's etcd flags"),
        ),
        Action::Defragment {
            name, is_leader, ..
        } => (
            "Defragmenting",
            format!(
                "defragmenting member {name} ({})",
                if *is_leader {
                    "the leader"
                } else {
                    "a follower"
                }
            ),
        ),
        Action::CompactHistory { revision } => (
            "RecoveringFromNoSpace",
            format!("NOSPACE: compacting the history up to revision {revision}"),
        ),
        Action::DisarmNoSpace => (
            "RecoveringFromNoSpace",
            "NOSPACE: every database is below the limit again; disarming the alarm".into(),
        ),
        Action::Recover { survivor } => (
            "Recovering",
            format!(
                "quorum lost: rebuilding from member {survivor}, the survivor with the most data"
            ),
        ),
        Action::FinishRestore => (
            "Recovering",
            "restoring the members named in status.restoring from their backup".into(),
        ),
        Action::Wait { reason } if reason.starts_with("quorum lost") => {
            ("Recovering", reason.clone())
        }
        Action::Wait { reason } => ("Waiting", reason.clone()),
        Action::Steady | Action::Refuse { .. } | Action::Unrecoverable { .. } => return None,
    })
}

/// The alarms by kind, each with the members that raised it, in order.
pub(crate) fn alarms_by_kind(alarms: &[crate::api::ClusterAlarm]) -> Vec<(&str, Vec<&str>)> {
    let mut kinds: Vec<(&str, Vec<&str>)> = Vec::new();
    for a in alarms {
        match kinds.iter_mut().find(|(k, _)| *k == a.alarm) {
            Some((_, members)) => members.push(&a.member),
            None => kinds.push((&a.alarm, vec![&a.member])),
        }
    }
    kinds
}

/// What an alarm means and what to do about it, for the `Alarm` condition
/// and the `AlarmRaised` Event.
pub(crate) fn alarm_message(kind: &str, members: &[&str]) -> String {
    let by = members.join(", ");
    match kind {
        "NOSPACE" => format!(
            "NOSPACE (raised by {by}): a member's database reached its quota (etcd's \
             --quota-backend-bytes, 2 GiB unless set), so the cluster serves reads and deletes but \
             refuses writes. Delete keys or compact, defragment the members, then disarm the alarm \
             (etcdctl alarm disarm)."
        ),
        "CORRUPT" => format!(
            "CORRUPT (raised by {by}): etcd found a member's data inconsistent with the others' and \
             refuses writes. Find the member whose hash differs (etcdctl endpoint hashkv), replace it \
             (the operator does not: it cannot tell which copy is right), then disarm the alarm."
        ),
        other => format!("{other} (raised by {by}): see etcdctl alarm list."),
    }
}

/// Status after observing `view` and choosing `action`.
pub fn compute(
    previous: Option<&EtcdClusterStatus>,
    desired: &Desired,
    view: &ClusterView,
    action: &Action,
    client_urls: Vec<String>,
    now: &str,
) -> EtcdClusterStatus {
    let mut s = previous.cloned().unwrap_or_default();
    let voters: Vec<_> = view
        .members
        .iter()
        .filter(|m| m.id.is_some() && !m.is_learner)
        .collect();
    let ready: Vec<String> = view
        .members
        .iter()
        .filter(|m| m.healthy)
        .map(|m| m.name.clone())
        .collect();
    let unready: Vec<String> = view
        .members
        .iter()
        .filter(|m| !m.healthy)
        .map(|m| m.name.clone())
        .collect();
    let ready_voters = voters.iter().filter(|m| m.healthy).count();
    let quorum_ok = view.membership_known && ready_voters > voters.len() / 2 && !voters.is_empty();

    if view.ever_served && s.first_served_time.is_none() {
        s.first_served_time = Some(now.to_string());
    }
    s.control_paused = false;
    s.size = voters.len() as i32;
    s.members = MembersStatus { ready, unready };
    s.ready = Some(format!("{ready_voters}/{}", desired.size));
    s.current_version = voters
        .iter()
        .filter_map(|m| m.version)
        .min()
        .map(|v| v.to_string());
    s.target_version = Some(desired.version.to_string());
    s.client_urls = client_urls;
    s.alarms = view.alarms.clone();

    let all_ready = ready_voters == desired.size
        && voters.len() == desired.size
        && view.members.len() == desired.size;
    s.phase = Some(match action {
        Action::Unrecoverable { .. } => "Failed".into(),
        _ if s.phase.as_deref() == Some("Running") || all_ready => "Running".into(),
        _ => "Creating".into(),
    });
    s.reason = match action {
        Action::Refuse { reason } | Action::Unrecoverable { reason } | Action::Wait { reason } => {
            Some(reason.clone())
        }
        _ => None,
    };

    let available = if quorum_ok {
        condition(
            "Available",
            true,
            "QuorumHealthy",
            format!("{ready_voters} of {} voting members healthy", voters.len()),
        )
    } else {
        condition(
            "Available",
            false,
            "QuorumLost",
            format!("{ready_voters} of {} voting members healthy", voters.len()),
        )
    };
    set_condition(&mut s.conditions, available, now);
    let progressing = match progress(action) {
        Some((reason, message)) => condition("Progressing", true, reason, message),
        None => condition("Progressing", false, "Steady", "nothing to do"),
    };
    set_condition(&mut s.conditions, progressing, now);
    let alarm = if view.alarms.is_empty() {
        condition("Alarm", false, "NoAlarm", "etcd reports no alarm")
    } else {
        let kinds = alarms_by_kind(&view.alarms);
        condition(
            "Alarm",
            true,
            &kinds.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(","),
            kinds
                .iter()
                .map(|(k, members)| alarm_message(k, members))
                .collect::<Vec<_>>()
                .join(" "),
        )
    };
    set_condition(&mut s.conditions, alarm, now);
    let unreachable = reported_unreachable(&view.members);
    let degraded = match action {
        Action::Refuse { reason } => Some(("SpecRefused", reason.clone())),
        Action::Unrecoverable { reason } => Some(("Unrecoverable", reason.clone())),
        _ if !view.alarms.is_empty() => Some((
            "Alarm",
            format!("etcd alarm {}", super::decide::alarm_summary(&view.alarms)),
        )),
        _ if unreachable.is_some() => Some((
            "MembersUnreachable",
            format!(
                "running members the operator cannot reach: {}",
                unreachable.unwrap_or_default()
            ),
        )),
        _ if !s.members.unready.is_empty() => Some((
            "MembersUnhealthy",
            format!("unhealthy members: {}", s.members.unready.join(", ")),
        )),
        _ if voters.len() != desired.size => Some((
            "SizeMismatch",
            format!("{} voting members, {} desired", voters.len(), desired.size),
        )),
        _ => None,
    };
    let degraded = match degraded {
        Some((reason, message)) => condition("Degraded", true, reason, message),
        None => condition(
            "Degraded",
            false,
            "AllHealthy",
            "all members healthy at the desired size",
        ),
    };
    set_condition(&mut s.conditions, degraded, now);
    s
}

/// Mark an observed status as paused: it still reports the members, and
/// says that nothing is being changed.
pub fn mark_paused(s: &mut EtcdClusterStatus, now: &str) {
    s.control_paused = true;
    set_condition(
        &mut s.conditions,
        condition(
            "Progressing",
            false,
            "Paused",
            "spec.paused is true: no changes are made; set it to false to resume",
        ),
        now,
    );
}

/// A reconcile step panicked: the status says so until a step succeeds.
pub fn mark_internal_error(s: &mut EtcdClusterStatus, message: &str, now: &str) {
    s.reason = Some(message.to_string());
    set_condition(
        &mut s.conditions,
        condition("Degraded", true, "InternalError", message),
        now,
    );
}
