//! Observe → decide → act, one step per call.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::{EtcdClusterSpec, EtcdClusterStatus, RestoreInProgress};
use crate::etcd::{self, EtcdApi, EtcdError};

use super::decide::{Action, ClusterView, Desired, MemberView, Tuning, decide};
use super::defrag;
use super::events::Event;
use super::nospace;
use super::runtime::{ClusterKey, MemberPlan, Runtime, RuntimeError, RuntimeMember, StartMode};
use super::status;
use super::version::{DEFAULT_VERSION, Version};

/// What one reconcile produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: EtcdClusterStatus,
    pub events: Vec<Event>,
    /// When to reconcile again at the latest.
    pub requeue: Duration,
    pub action: Action,
    /// Members the runtime runs but the operator could not reach.
    pub unreachable: usize,
    /// A member was defragmented in this step: the bytes it gave back.
    pub defragmented: Option<u64>,
}

/// What the reconciler remembers between steps about one cluster (timers
/// only: everything else is observed again each time).
#[derive(Debug, Default)]
struct Memory {
    unhealthy_since: HashMap<String, Instant>,
    unreachable_since: HashMap<String, Instant>,
    quorum_lost_since: Option<Instant>,
    /// Since when every step found the cluster steady.
    steady_since: Option<Instant>,
    /// When each member was last defragmented (see [`defrag::COOLDOWN`]).
    defragmented_at: HashMap<String, Instant>,
    /// How far the recovery from the current NOSPACE alarm got.
    no_space: nospace::Episode,
    /// When the last NOSPACE recovery disarmed the alarm.
    no_space_recovered_at: Option<Instant>,
}

/// The routine care a spec asks for (`spec.maintenance`), read once per step.
struct Care {
    defrag: Option<defrag::Policy>,
    /// `spec.maintenance.noSpace.recover`.
    recover_no_space: bool,
    /// The members' quota, for the NOSPACE recovery's limit.
    quota: u64,
}

/// How often a cluster that just became steady is looked at.
const STEADY_POLL: Duration = Duration::from_secs(2);
/// How long a cluster stays steady before it is looked at less often.
const STEADY_SETTLED_AFTER: Duration = Duration::from_secs(30);
/// The longest wait between two looks at a settled cluster.
const STEADY_POLL_MAX: Duration = Duration::from_secs(8);

/// A verified snapshot handed to the reconciler for a restore. The
/// reconciler removes `path` once the members have been restored from it.
#[derive(Debug, Clone)]
pub struct RecoverySnapshot {
    pub path: PathBuf,
    /// Where it came from, for events (e.g. `local:backups/a_v12_...`).
    pub description: String,
    /// Which backup it is, so that a restore resumed after a crash of the
    /// operator fetches exactly the same one.
    pub pin: BackupPin,
}

/// One backup, by key and content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPin {
    pub key: String,
    pub sha256: String,
}

/// The future a [`RecoverySource`] returns.
pub type RecoveryFuture =
    Pin<Box<dyn Future<Output = Result<Option<RecoverySnapshot>, String>> + Send>>;

/// Finds, downloads and verifies the newest backup of a cluster, for the
/// last resort of quorum-loss recovery: every member lost its data. With a
/// [`BackupPin`], only that backup, with that content, will do.
/// `Ok(None)`: the cluster has no (such) backup.
pub type RecoverySource =
    Arc<dyn Fn(ClusterKey, Option<BackupPin>) -> RecoveryFuture + Send + Sync>;

/// Whether this operator may act now (it holds the leader Lease). Checked
/// right before every destructive step, so a replica that lost its Lease
/// mid-reconcile does not go on to remove, replace, force a new cluster or
/// restore.
pub type ActGuard = Arc<dyn Fn() -> bool + Send + Sync>;

/// Drives clusters through a [`Runtime`], talking to etcd through `E`
/// (the gRPC client; fakes in tests).
pub struct Reconciler<R, E = etcd::Grpc> {
    runtime: Arc<R>,
    etcd: Arc<E>,
    tuning: Tuning,
    memory: Mutex<HashMap<ClusterKey, Memory>>,
    /// One step at a time per cluster: a restore must not interleave with a
    /// reconcile of the same cluster.
    locks: Mutex<HashMap<ClusterKey, Arc<tokio::sync::Mutex<()>>>>,
    recovery: Option<RecoverySource>,
    /// Snapshots fetched for a recovery from a backup, kept from the step
    /// that records the restore to the step that carries it out.
    staged: Mutex<HashMap<ClusterKey, RecoverySnapshot>>,
    may_act: Option<ActGuard>,
}

/// An observation: the runtime's members, the membership (if a quorum
/// answered) and each running member's status.
struct Observation {
    runtime: Vec<RuntimeMember>,
    /// How to reach members that require client TLS.
    tls: Option<etcd::ClientTls>,
    membership: Option<Vec<etcd::Member>>,
    /// Without a leader: the membership as one answering member has it
    /// locally (not linearizable), so members whose runtime object is gone
    /// still count as voters that are down.
    local_membership: Option<Vec<etcd::Member>>,
    statuses: HashMap<String, etcd::Status>,
    /// Running members whose status call failed, and what failed.
    failures: HashMap<String, String>,
    /// [`Runtime::restart_keeps_data`].
    restart_keeps_data: bool,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A fresh cluster token for restored members: a restored cluster is a new
/// etcd cluster, which members of the old one must never join.
fn restore_token(key: &ClusterKey) -> String {
    format!("{}-{}", key.namespace, member_name(&key.name))
}

fn member_name(cluster: &str) -> String {
    use rand::Rng;
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .map(|c| (c as char).to_ascii_lowercase())
        .take(8)
        .collect();
    format!("{cluster}-{suffix}")
}

/// Errors while carrying out a step; reported in status and retried.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    #[error("{0}")]
    Recovery(String),
    #[error("this operator no longer holds the leader Lease; the step was not taken")]
    NotLeader,
    /// The restored members could not be prepared; nothing was deleted.
    #[error(
        "the restored members could not be prepared, so the running members were left untouched: {0}"
    )]
    RestorePreflight(#[source] RuntimeError),
    /// The spec's etcd flags are refused; nothing was started.
    #[error(transparent)]
    Flags(#[from] etcd::flags::FlagError),
}

impl<R: Runtime> Reconciler<R> {
    pub fn new(runtime: Arc<R>, tuning: Tuning) -> Self {
        Reconciler::with_etcd(runtime, Arc::new(etcd::Grpc), tuning)
    }
}

impl<R: Runtime, E: EtcdApi> Reconciler<R, E> {
    /// A reconciler that talks to etcd through `etcd`.
    pub fn with_etcd(runtime: Arc<R>, etcd: Arc<E>, tuning: Tuning) -> Self {
        Reconciler {
            runtime,
            etcd,
            tuning,
            memory: Mutex::default(),
            locks: Mutex::default(),
            recovery: None,
            staged: Mutex::default(),
            may_act: None,
        }
    }

    /// Check `guard` right before every destructive step.
    pub fn with_guard(mut self, guard: ActGuard) -> Self {
        self.may_act = Some(guard);
        self
    }

    /// `Err(NotLeader)` unless the guard allows acting now.
    fn still_leading(&self) -> Result<(), StepError> {
        match &self.may_act {
            Some(guard) if !guard() => Err(StepError::NotLeader),
            _ => Ok(()),
        }
    }

    /// Recover clusters that lost every member's data from their newest backup.
    pub fn with_recovery(mut self, source: RecoverySource) -> Self {
        self.recovery = Some(source);
        self
    }

    /// The timers; a step that panicked while holding them leaves them
    /// usable (they are only timers), so one bug never stops every cluster.
    fn memory(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterKey, Memory>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self, key: &ClusterKey) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Replace every member of cluster `key` with `spec.size` members
    /// restored from `snapshot` (verified by the caller), all with the same
    /// data and a fresh cluster token; the normal reconcile takes over after.
    /// Waits for a reconcile step of the same cluster in progress to finish.
    pub async fn restore(
        &self,
        key: &ClusterKey,
        spec: &EtcdClusterSpec,
        snapshot: &Path,
    ) -> Result<Event, StepError> {
        let lock = self.lock(key);
        let _guard = lock.lock().await;
        self.restore_locked(key, spec, snapshot).await
    }

    async fn restore_locked(
        &self,
        key: &ClusterKey,
        spec: &EtcdClusterSpec,
        snapshot: &Path,
    ) -> Result<Event, StepError> {
        let size = spec.size.clamp(1, 7) as usize;
        let (version, flags) = self.restore_version(spec).await?;
        let old = self.runtime.list(key).await?;
        let names: Vec<String> = (0..size).map(|_| member_name(&key.name)).collect();
        let token = restore_token(key);
        // The new members are reserved and checked before anything is
        // deleted: a restore never leaves the cluster with nothing.
        let plans = match self
            .prepare_restore(key, (&version, &flags), &names, &token, snapshot, &old)
            .await
        {
            Ok(plans) => plans,
            Err(e) => {
                self.release(key, &names).await;
                return Err(e);
            }
        };
        self.replace_with_restored(key, &plans, &old, "restore")
            .await?;
        Ok(Event::warning(
            "ClusterRestored",
            format!(
                "replaced all members with {size} members restored from a verified snapshot (etcd {version})"
            ),
        ))
    }

    /// The etcd version restored members run, and their flags.
    async fn restore_version(
        &self,
        spec: &EtcdClusterSpec,
    ) -> Result<(String, Vec<String>), StepError> {
        let flags = etcd::flags::member_flags(spec)?;
        let requested = spec
            .version
            .clone()
            .unwrap_or_else(|| DEFAULT_VERSION.to_string());
        Ok((self.runtime.resolve_version(&requested).await?, flags))
    }

    /// Reserve `names` and plan each one's start from `snapshot` (a member
    /// of `current` that already has data restarts from it instead), then
    /// check that a restored member can start and that this operator still
    /// leads. Deletes nothing.
    async fn prepare_restore(
        &self,
        key: &ClusterKey,
        (version, flags): (&str, &[String]),
        names: &[String],
        token: &str,
        snapshot: &Path,
        current: &[RuntimeMember],
    ) -> Result<Vec<MemberPlan>, StepError> {
        let mut initial = Vec::with_capacity(names.len());
        for name in names {
            let urls = self.runtime.reserve(key, name).await?;
            initial.push((name.clone(), urls.peer));
        }
        let plans: Vec<MemberPlan> = names
            .iter()
            .map(|name| {
                let restarts = current
                    .iter()
                    .any(|r| &r.name == name && r.ever_started && r.has_data);
                MemberPlan {
                    cluster_token: token.to_string(),
                    snapshot: (!restarts).then(|| snapshot.to_path_buf()),
                    ..Self::plan(
                        key,
                        name,
                        version,
                        initial.clone(),
                        if restarts {
                            StartMode::Join
                        } else {
                            StartMode::Restore
                        },
                        flags,
                    )
                }
            })
            .collect();
        if let Some(plan) = plans.iter().find(|p| p.mode == StartMode::Restore) {
            self.runtime
                .check_restore(key, plan)
                .await
                .map_err(StepError::RestorePreflight)?;
        }
        self.still_leading()?;
        Ok(plans)
    }

    /// Delete reserved members a refused restore will not use.
    async fn release(&self, key: &ClusterKey, names: &[String]) {
        for name in names {
            let _ = self.runtime.delete(key, name).await;
        }
    }

    /// Delete every member of `current` that is not planned, then start the
    /// planned ones that do not run. Failpoints `<point>-after-delete` and
    /// `<point>-after-first-start`.
    async fn replace_with_restored(
        &self,
        key: &ClusterKey,
        plans: &[MemberPlan],
        current: &[RuntimeMember],
        point: &str,
    ) -> Result<(), StepError> {
        let rt = &self.runtime;
        for m in current
            .iter()
            .filter(|m| !plans.iter().any(|p| p.name == m.name))
        {
            rt.delete(key, &m.name).await?;
        }
        crate::failpoints::hit(&format!("{point}-after-delete"));
        self.memory().remove(key);
        for plan in plans {
            if current.iter().any(|r| r.name == plan.name && r.running) {
                continue;
            }
            rt.start(key, plan).await?;
            crate::failpoints::hit(&format!("{point}-after-first-start"));
        }
        Ok(())
    }

    pub fn runtime(&self) -> &Arc<R> {
        &self.runtime
    }

    async fn observe(&self, key: &ClusterKey) -> Result<Observation, RuntimeError> {
        let runtime = self.runtime.list(key).await?;
        let tls = self.runtime.client_tls(key).await?;
        let restart_keeps_data = self.runtime.restart_keeps_data(key).await;
        let mut tasks = tokio::task::JoinSet::new();
        for m in runtime.iter().filter(|m| m.running) {
            let (name, url, tls) = (m.name.clone(), m.urls.client.clone(), tls.clone());
            let api = self.etcd.clone();
            tasks.spawn(async move { (name, api.status(&url, tls.as_ref()).await) });
        }
        let mut statuses = HashMap::new();
        let mut failures = HashMap::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((name, Ok(status))) => {
                    statuses.insert(name, status);
                }
                Ok((name, Err(e))) => {
                    failures.insert(name, e.reach_failure());
                }
                Err(_) => {}
            }
        }
        // Ask for the membership only through members that see a leader.
        let endpoints: Vec<String> = runtime
            .iter()
            .filter(|m| {
                statuses
                    .get(&m.name)
                    .is_some_and(|s| s.leader != 0 && !s.is_learner)
            })
            .map(|m| m.urls.client.clone())
            .collect();
        let membership = if endpoints.is_empty() {
            None
        } else {
            self.etcd.members(&endpoints, tls.as_ref()).await.ok()
        };
        let local_membership = match &membership {
            Some(_) => None,
            None => {
                let answering: Vec<String> = runtime
                    .iter()
                    .filter(|m| statuses.get(&m.name).is_some_and(|s| !s.is_learner))
                    .map(|m| m.urls.client.clone())
                    .collect();
                let mut found = None;
                for url in answering {
                    if let Ok(ms) = self.etcd.members(&[url], tls.as_ref()).await {
                        found = Some(ms);
                        break;
                    }
                }
                found
            }
        };
        Ok(Observation {
            runtime,
            tls,
            membership,
            local_membership,
            statuses,
            failures,
            restart_keeps_data,
        })
    }

    /// Join the three sources into one view, and update the timers.
    fn view(
        &self,
        key: &ClusterKey,
        obs: &Observation,
        ever_served: bool,
        restoring: Option<Vec<String>>,
    ) -> ClusterView {
        let mut memory = self.memory();
        let memory = memory.entry(key.clone()).or_default();
        let now = Instant::now();
        let mut members: Vec<MemberView> = Vec::new();
        for r in &obs.runtime {
            let entry = obs
                .membership
                .as_ref()
                .and_then(|ms| ms.iter().find(|m| m.peer_urls.contains(&r.urls.peer)));
            let status = obs.statuses.get(&r.name);
            let healthy = r.running && status.is_some_and(|s| s.errors.is_empty() && s.leader != 0);
            members.push(MemberView {
                name: r.name.clone(),
                peer_url: r.urls.peer.clone(),
                id: entry.map(|m| m.id).or_else(|| {
                    if obs.membership.is_none() {
                        status.map(|s| s.member_id)
                    } else {
                        None
                    }
                }),
                is_learner: entry
                    .map(|m| m.is_learner)
                    .or(status.map(|s| s.is_learner))
                    .unwrap_or(false),
                in_runtime: true,
                running: r.running,
                has_data: r.has_data,
                ever_started: r.ever_started,
                healthy,
                unreachable: if r.running && status.is_none() {
                    Some(
                        obs.failures
                            .get(&r.name)
                            .cloned()
                            .unwrap_or_else(|| "no answer".into()),
                    )
                } else {
                    None
                },
                unreachable_for: Duration::ZERO,
                unhealthy_for: Duration::ZERO,
                raft_index: status.map(|s| s.raft_index),
                is_leader: status.is_some_and(|s| s.leader != 0 && s.leader == s.member_id),
                version: Version::parse(&r.version).ok(),
                db_size: status.map(|s| s.db_size),
                db_size_in_use: status.map(|s| s.db_size_in_use),
                revision: status.map(|s| s.revision),
                flags: r.flags.clone(),
            });
        }
        // Membership entries with no runtime object (a Pod and its emptyDir
        // gone). Without a leader, only voters from a member's local view:
        // they count as down members, never as strays to clean up.
        let entries = match (&obs.membership, &obs.local_membership) {
            (Some(ms), _) => ms.iter().collect::<Vec<_>>(),
            (None, Some(ms)) => ms.iter().filter(|m| !m.is_learner).collect(),
            (None, None) => Vec::new(),
        };
        for m in entries {
            if !obs
                .runtime
                .iter()
                .any(|r| m.peer_urls.contains(&r.urls.peer))
            {
                members.push(MemberView {
                    name: if m.name.is_empty() {
                        format!("member-{:x}", m.id)
                    } else {
                        m.name.clone()
                    },
                    peer_url: m.peer_urls.first().cloned().unwrap_or_default(),
                    id: Some(m.id),
                    is_learner: m.is_learner,
                    ever_started: true,
                    ..Default::default()
                });
            }
        }
        for m in &mut members {
            if m.unreachable.is_some() {
                let since = *memory
                    .unreachable_since
                    .entry(m.name.clone())
                    .or_insert(now);
                m.unreachable_for = now - since;
            } else {
                memory.unreachable_since.remove(&m.name);
            }
            // The failure grace runs only while a member answers unhealthy:
            // time spent unreachable is not evidence against it.
            if m.healthy || m.unreachable.is_some() {
                memory.unhealthy_since.remove(&m.name);
            } else {
                let since = *memory.unhealthy_since.entry(m.name.clone()).or_insert(now);
                m.unhealthy_for = now - since;
            }
        }
        memory
            .unhealthy_since
            .retain(|name, _| members.iter().any(|m| &m.name == name));
        memory
            .unreachable_since
            .retain(|name, _| members.iter().any(|m| &m.name == name));

        let voters: Vec<&MemberView> = match &obs.membership {
            Some(_) => members
                .iter()
                .filter(|m| m.id.is_some() && !m.is_learner)
                .collect(),
            None => members.iter().filter(|m| m.ever_started).collect(),
        };
        let healthy = voters.iter().filter(|m| m.healthy).count();
        let lost = !voters.is_empty() && healthy < voters.len() / 2 + 1;
        memory.quorum_lost_since = if lost {
            Some(memory.quorum_lost_since.unwrap_or(now))
        } else {
            None
        };
        let alarms = alarms_of(obs, &members);
        ClusterView {
            ever_served: ever_served || members.iter().any(|m| m.healthy),
            members,
            membership_known: obs.membership.is_some(),
            quorum_lost_for: memory.quorum_lost_since.map(|t| now - t),
            restoring,
            alarms,
            restart_loses_data: !obs.restart_keeps_data,
        }
    }

    /// One reconcile step for the cluster `key`. A panic in the step is
    /// contained: the previous status gains a `Degraded`/`InternalError`
    /// condition and an Event, and the step is retried.
    pub async fn reconcile(
        &self,
        key: &ClusterKey,
        spec: &EtcdClusterSpec,
        previous: Option<&EtcdClusterStatus>,
    ) -> Outcome {
        match crate::supervise::contained(self.reconcile_step(key, spec, previous)).await {
            Ok(outcome) => outcome,
            Err(panicked) => {
                let mut status = previous.cloned().unwrap_or_default();
                let message = format!("reconciling {key}: {panicked}");
                status::mark_internal_error(&mut status, &message, &now_rfc3339());
                Outcome {
                    status,
                    events: vec![Event::warning("InternalError", message.clone())],
                    requeue: Duration::from_secs(10),
                    action: Action::Wait { reason: message },
                    unreachable: 0,
                    defragmented: None,
                }
            }
        }
    }

    async fn reconcile_step(
        &self,
        key: &ClusterKey,
        spec: &EtcdClusterSpec,
        previous: Option<&EtcdClusterStatus>,
    ) -> Outcome {
        let lock = self.lock(key);
        let _guard = lock.lock().await;
        let now = now_rfc3339();
        if !(1..=7).contains(&spec.size) {
            return self.refused(
                previous,
                spec,
                &format!("spec.size is {}; it must be between 1 and 7", spec.size),
                &now,
            );
        }
        let requested = spec
            .version
            .clone()
            .unwrap_or_else(|| DEFAULT_VERSION.to_string());
        let desired_version = match Version::parse(&requested) {
            Ok(v) => v,
            Err(reason) => return self.refused(previous, spec, &reason, &now),
        };
        let flags = match etcd::flags::member_flags(spec) {
            Ok(f) => f,
            Err(e) => return self.refused(previous, spec, &e.to_string(), &now),
        };
        let desired = Desired {
            flags,
            quota: etcd::flags::quota_bytes(spec),
            ..Desired::new(spec.size.max(0) as usize, desired_version)
        };
        let defrag_policy = match defrag::Policy::of(spec) {
            Ok(p) => p,
            Err(reason) => return self.refused(previous, spec, &reason, &now),
        };
        let care = Care {
            defrag: defrag_policy,
            recover_no_space: spec
                .maintenance
                .as_ref()
                .and_then(|m| m.no_space.as_ref())
                .and_then(|n| n.recover)
                .unwrap_or(false),
            quota: desired.quota,
        };
        let mut care_events = Vec::new();
        let obs = match self.observe(key).await {
            Ok(o) => o,
            Err(e) => {
                return self.refused(
                    previous,
                    spec,
                    &format!("cannot observe members: {e}"),
                    &now,
                );
            }
        };
        let recorded = previous.and_then(|p| p.restoring.clone());
        let view = self.view(
            key,
            &obs,
            previous.is_some_and(|p| p.has_served()),
            recorded.as_ref().map(|r| r.members.clone()),
        );
        let paused = spec.paused == Some(true);
        let lost = lost_members(previous, &view);
        let action = if paused {
            Action::Wait {
                reason: "spec.paused is true: the operator makes no changes to this cluster".into(),
            }
        } else if view.members.is_empty() && view.ever_served && view.restoring.is_none() {
            Action::Unrecoverable {
                reason: format!(
                    "every member ({}) is gone with its data; the operator restores the newest verified \
                     backup of this cluster if there is one, and will not start an empty cluster in its \
                     place: create an EtcdRestore, or delete and re-create the EtcdCluster to start empty",
                    if lost.is_empty() {
                        "names no longer known".to_string()
                    } else {
                        lost.join(", ")
                    }
                ),
            }
        } else {
            match decide(&desired, &view, &self.tuning) {
                Action::Steady => self
                    .maintenance(key, &care, &view, &mut care_events)
                    .unwrap_or(Action::Steady),
                // An alarm holds member changes back; maintenance, which a
                // NOSPACE cluster needs, goes on (on healthy members only).
                wait @ Action::Wait { .. } if !view.alarms.is_empty() => self
                    .maintenance(key, &care, &view, &mut care_events)
                    .unwrap_or(wait),
                other => other,
            }
        };
        let client_urls: Vec<String> = obs
            .runtime
            .iter()
            .filter(|r| view.members.iter().any(|m| m.name == r.name && m.healthy))
            .map(|r| r.urls.client.clone())
            .collect();
        let mut status = status::compute(previous, &desired, &view, &action, client_urls, &now);
        // Keep naming the lost members, so the next step still knows the
        // cluster had data (and does not take it for a new one).
        if !lost.is_empty() {
            status.members.unready = lost.clone();
        }
        let mut events = unreachable_events(previous, &view);
        events.append(&mut care_events);
        // Alarms are only known from members that answered: with none
        // answering, the previous ones stand.
        if obs.statuses.is_empty() {
            status.alarms = previous.map(|p| p.alarms.clone()).unwrap_or_default();
        } else {
            events.extend(alarm_events(previous, &view.alarms));
        }
        let unreachable = view
            .members
            .iter()
            .filter(|m| m.unreachable_for >= super::decide::REPORT_UNREACHABLE_AFTER)
            .count();
        if paused {
            status::mark_paused(&mut status, &now);
            return Outcome {
                status,
                events,
                requeue: Duration::from_secs(2),
                action,
                unreachable,
                defragmented: None,
            };
        }
        // The record of a recovery from a backup stays while the restore
        // is unfinished, is written by the step that begins one, and goes
        // with any other step.
        status.restoring = None;
        let mut defragmented = None;
        let acted = match (&action, &recorded) {
            (Action::Unrecoverable { .. }, _) if self.recovery.is_some() => {
                let begun = self.begin_recovery_from_backup(key, spec, &obs).await;
                begun.map(|b| {
                    b.map(|(event, record)| {
                        status.restoring = Some(record);
                        event
                    })
                })
            }
            (Action::FinishRestore, Some(record)) => {
                status.restoring = Some(record.clone());
                self.finish_recovery_from_backup(key, spec, record, &obs)
                    .await
            }
            (
                Action::Defragment {
                    name,
                    is_leader,
                    db_size,
                    free,
                },
                _,
            ) => {
                let pick = defrag::Pick {
                    name: name.clone(),
                    is_leader: *is_leader,
                    db_size: *db_size,
                    free: *free,
                };
                self.defragment(key, &obs, pick)
                    .await
                    .map(|(event, reclaimed)| {
                        defragmented = Some(reclaimed);
                        Some(event)
                    })
            }
            (Action::CompactHistory { revision }, _) => self
                .compact_history(key, &obs, &view, *revision)
                .await
                .map(Some),
            (Action::DisarmNoSpace, _) => self
                .disarm_no_space(key, &obs, &view, desired.quota)
                .await
                .map(Some),
            _ => self.act(key, &desired, &view, &obs, &action).await,
        };
        // A snapshot staged for a recovery that could not begin yet (its
        // members failed their checks) is kept for the next attempt.
        if status.restoring.is_none() && !matches!(action, Action::Unrecoverable { .. }) {
            self.drop_staged(key);
        }
        match acted {
            Ok(Some(event)) => events.push(event),
            Ok(None) => {}
            Err(e) => {
                let message = format!("{}: {e}", describe(&action));
                status.reason = Some(message.clone());
                events.push(Event::warning("StepFailed", message));
            }
        }
        if let Action::Refuse { reason } | Action::Unrecoverable { reason } = &action
            && previous.and_then(|p| p.reason.as_ref()) != Some(reason)
        {
            events.push(Event::warning(
                if matches!(action, Action::Refuse { .. }) {
                    "SpecRefused"
                } else {
                    "Unrecoverable"
                },
                reason.clone(),
            ));
        }
        if action != Action::Steady
            && let Some(m) = self.memory().get_mut(key)
        {
            m.steady_since = None;
        }
        let requeue = match action {
            Action::Steady => self.steady_poll(key),
            Action::Refuse { .. } | Action::Unrecoverable { .. } => Duration::from_secs(10),
            // Waiting on an alarm (held-back changes, a NOSPACE the data
            // fills) waits on the user or etcd: no need to look twice a
            // second. The runtime's signals still wake it at once.
            Action::Wait { .. } if !view.alarms.is_empty() => STEADY_POLL,
            // A new cluster's members answer within a few hundred
            // milliseconds of their start: while they run and it has not
            // served yet, look often, so creating one costs what etcd's own
            // bootstrap does (for its first 30 s: a bootstrap that hangs is
            // looked at like any other cluster).
            _ if !view.ever_served
                && view.members.iter().any(|m| m.running)
                && view
                    .members
                    .iter()
                    .all(|m| m.unhealthy_for < Duration::from_secs(30)) =>
            {
                Duration::from_millis(100)
            }
            // After acting, look again soon: a restarted member answers
            // within a fraction of a second (an observation is a few RPCs).
            _ => Duration::from_millis(500),
        };
        Outcome {
            status,
            events,
            requeue,
            action,
            unreachable,
            defragmented,
        }
    }

    /// What a steady (or alarmed) cluster gets: the next step of a NOSPACE
    /// recovery when there is one to take, else the next member the defrag
    /// policy names. A recovery that cannot go on says why (`Wait`, and an
    /// Event the first time, pushed to `events`).
    fn maintenance(
        &self,
        key: &ClusterKey,
        care: &Care,
        view: &ClusterView,
        events: &mut Vec<Event>,
    ) -> Option<Action> {
        let mut memory = self.memory();
        let memory = memory.entry(key.clone()).or_default();
        if care.recover_no_space {
            let defragmented_at = &memory.defragmented_at;
            let step = nospace::next(
                view,
                care.quota,
                &mut memory.no_space,
                memory.no_space_recovered_at,
                |name, since| defragmented_at.get(name).is_some_and(|at| *at > since),
            );
            match step {
                Some(nospace::Step::Compact { revision }) => {
                    return Some(Action::CompactHistory { revision });
                }
                Some(nospace::Step::Defragment(pick)) => {
                    return Some(Action::Defragment {
                        name: pick.name,
                        is_leader: pick.is_leader,
                        db_size: pick.db_size,
                        free: pick.free,
                    });
                }
                Some(nospace::Step::Disarm) => return Some(Action::DisarmNoSpace),
                Some(nospace::Step::Stuck { reason, first }) => {
                    if first {
                        events.push(Event::warning("NoSpaceNotRecovered", reason.clone()));
                    }
                    return Some(Action::Wait { reason });
                }
                None => {}
            }
        }
        let policy = care.defrag.as_ref()?;
        let recent = &mut memory.defragmented_at;
        recent.retain(|_, at| at.elapsed() < defrag::COOLDOWN);
        defrag::next(policy, view, |name| recent.contains_key(name)).map(|pick| {
            Action::Defragment {
                name: pick.name,
                is_leader: pick.is_leader,
                db_size: pick.db_size,
                free: pick.free,
            }
        })
    }

    /// Compact the history for a NOSPACE recovery, so that defragmenting
    /// the members gives the space of old revisions back.
    async fn compact_history(
        &self,
        key: &ClusterKey,
        obs: &Observation,
        view: &ClusterView,
        revision: i64,
    ) -> Result<Event, StepError> {
        self.still_leading()?;
        let endpoints = healthy_voters(obs, view, "");
        self.etcd
            .compact(&endpoints, obs.tls.as_ref(), revision)
            .await?;
        self.memory()
            .entry(key.clone())
            .or_default()
            .no_space
            .compacted = Some(revision);
        Ok(Event::warning(
            "HistoryCompacted",
            format!(
                "NOSPACE: compacted the history up to revision {revision} (older revisions are gone), so that \
                 defragmenting the members gives their space back (spec.maintenance.noSpace.recover)"
            ),
        ))
    }

    /// Disarm every NOSPACE alarm, the files being below the limit.
    async fn disarm_no_space(
        &self,
        key: &ClusterKey,
        obs: &Observation,
        view: &ClusterView,
        quota: u64,
    ) -> Result<Event, StepError> {
        self.still_leading()?;
        let endpoints = healthy_voters(obs, view, "");
        let mut ids: Vec<u64> = obs
            .statuses
            .values()
            .flat_map(|s| s.alarms.iter())
            .filter(|a| a.kind == "NOSPACE")
            .map(|a| a.member_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        for id in &ids {
            self.etcd
                .disarm_no_space(&endpoints, obs.tls.as_ref(), *id)
                .await?;
        }
        let mut memory = self.memory();
        let memory = memory.entry(key.clone()).or_default();
        memory.no_space = nospace::Episode::default();
        memory.no_space_recovered_at = Some(Instant::now());
        let largest = view.members.iter().filter_map(|m| m.db_size).max();
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        Ok(Event::normal(
            "NoSpaceRecovered",
            format!(
                "disarmed NOSPACE ({}): after compaction and defragmentation the largest database is {:.1} MiB \
                 of the {:.1} MiB quota; writes are accepted again",
                super::decide::alarm_summary(
                    &view
                        .alarms
                        .iter()
                        .filter(|a| a.alarm == "NOSPACE")
                        .cloned()
                        .collect::<Vec<_>>()
                ),
                mib(largest.unwrap_or_default().max(0) as u64),
                mib(quota)
            ),
        ))
    }

    /// Defragment the member an [`Action::Defragment`] names, and say how
    /// much it gave back. The member does not serve meanwhile, so this is
    /// checked against the Lease like a destructive step: two operators
    /// must never take two members out at once.
    async fn defragment(
        &self,
        key: &ClusterKey,
        obs: &Observation,
        pick: defrag::Pick,
    ) -> Result<(Event, u64), StepError> {
        let defrag::Pick {
            name,
            is_leader,
            db_size,
            free,
        } = pick;
        self.still_leading()?;
        let Some(member) = obs.runtime.iter().find(|m| m.name == name) else {
            return Err(StepError::Runtime(RuntimeError::Member {
                member: name,
                message: "no longer held by the runtime".into(),
            }));
        };
        self.memory()
            .entry(key.clone())
            .or_default()
            .defragmented_at
            .insert(name.clone(), Instant::now());
        let started = Instant::now();
        let url = member.urls.client.clone();
        self.etcd.defragment(&url, obs.tls.as_ref()).await?;
        let took = started.elapsed();
        let after = self
            .etcd
            .status(&url, obs.tls.as_ref())
            .await
            .ok()
            .map(|s| s.db_size);
        let reclaimed = after.map_or(0, |a| u64::try_from(db_size - a).unwrap_or(0));
        let mib = |b: i64| b as f64 / f64::from(1 << 20);
        let role = if is_leader {
            "the leader"
        } else {
            "a follower"
        };
        let message = match after {
            Some(a) => format!(
                "defragmented member {name} ({role}) in {:.1}s: its database file went from {:.1} MiB \
                 to {:.1} MiB ({:.1} MiB given back; {:.1} MiB were free)",
                took.as_secs_f64(),
                mib(db_size),
                mib(a),
                mib(reclaimed as i64),
                mib(free),
            ),
            None => format!(
                "defragmented member {name} ({role}) in {:.1}s; {:.1} MiB of its {:.1} MiB database \
                 file were free (its new size could not be read yet)",
                took.as_secs_f64(),
                mib(free),
                mib(db_size),
            ),
        };
        Ok((Event::normal("MemberDefragmented", message), reclaimed))
    }

    /// When to look at a steady cluster again. A steady cluster is watched
    /// by the runtime's own signals (a process exit, a Pod event), which
    /// wake it at once whatever this says, and by this poll, which notices
    /// what no signal reports (a member that hangs or stops answering).
    /// Such a member is acted on only after `member_failure_grace`, so once
    /// the cluster has been steady for a while a quarter of the grace is
    /// soon enough (2–8 s): with a hundred clusters on one operator, these
    /// looks are most of its steady work. Any other step starts over at 2 s.
    fn steady_poll(&self, key: &ClusterKey) -> Duration {
        let mut memory = self.memory();
        let since = *memory
            .entry(key.clone())
            .or_default()
            .steady_since
            .get_or_insert_with(Instant::now);
        if since.elapsed() < STEADY_SETTLED_AFTER {
            return STEADY_POLL;
        }
        (self.tuning.member_failure_grace / 4).clamp(STEADY_POLL, STEADY_POLL_MAX)
    }

    fn refused(
        &self,
        previous: Option<&EtcdClusterStatus>,
        spec: &EtcdClusterSpec,
        reason: &str,
        now: &str,
    ) -> Outcome {
        let desired = Desired::new(
            spec.size.max(0) as usize,
            Version {
                major: 0,
                minor: 0,
                patch: 0,
            },
        );
        let action = Action::Refuse {
            reason: reason.to_string(),
        };
        let mut status = status::compute(
            previous,
            &desired,
            &ClusterView::default(),
            &action,
            Vec::new(),
            now,
        );
        status.target_version = spec.version.clone();
        // Nothing was observed: the alarms last seen stand.
        status.alarms = previous.map(|p| p.alarms.clone()).unwrap_or_default();
        Outcome {
            status,
            events: vec![Event::warning("SpecRefused", reason)],
            requeue: Duration::from_secs(10),
            action,
            unreachable: 0,
            defragmented: None,
        }
    }

    /// `name=peer` of every membership entry, plus `extra`.
    fn initial_cluster(view: &ClusterView, extra: Option<(&str, &str)>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = view
            .members
            .iter()
            .filter(|m| m.id.is_some())
            .map(|m| (m.name.clone(), m.peer_url.clone()))
            .collect();
        if let Some((n, p)) = extra
            && !out.iter().any(|(name, _)| name == n)
        {
            out.push((n.to_string(), p.to_string()));
        }
        out
    }

    fn plan(
        key: &ClusterKey,
        name: &str,
        version: &str,
        initial: Vec<(String, String)>,
        mode: StartMode,
        flags: &[String],
    ) -> MemberPlan {
        MemberPlan {
            name: name.to_string(),
            version: version.to_string(),
            initial_cluster: initial,
            mode,
            cluster_token: format!("{}-{}", key.namespace, key.name),
            snapshot: None,
            flags: flags.to_vec(),
        }
    }

    /// Carry out one step. Returns the event describing it.
    async fn act(
        &self,
        key: &ClusterKey,
        desired: &Desired,
        view: &ClusterView,
        obs: &Observation,
        action: &Action,
    ) -> Result<Option<Event>, StepError> {
        let rt = &self.runtime;
        let version = desired.version.to_string();
        let member = |name: &str| view.members.iter().find(|m| m.name == name);
        if matches!(
            action,
            Action::Seed { .. }
                | Action::Replace { .. }
                | Action::Shrink { .. }
                | Action::Cleanup { .. }
                | Action::Recover { .. }
                | Action::Reconfigure { replace: true, .. }
        ) {
            self.still_leading()?;
        }
        let event = match action {
            Action::Steady
            | Action::Wait { .. }
            | Action::Refuse { .. }
            | Action::Unrecoverable { .. }
            | Action::FinishRestore
            // Taken by `defragment`, which also reports what it gave back,
            // and by the NOSPACE recovery's own steps.
            | Action::Defragment { .. }
            | Action::CompactHistory { .. }
            | Action::DisarmNoSpace => return Ok(None),
            Action::Seed { reuse } => {
                // Every member at once, each told of all the others: a
                // static bootstrap, as fast as etcd starts. Safe because
                // nothing of this cluster ever held data (see `decide`).
                let mut names = reuse.clone();
                while names.len() < desired.size.max(1) {
                    names.push(member_name(&key.name));
                }
                for extra in obs.runtime.iter().filter(|r| !names.contains(&r.name)) {
                    rt.delete(key, &extra.name).await?;
                }
                crate::failpoints::hit("seed-after-delete-extras");
                let mut initial = Vec::with_capacity(names.len());
                for name in &names {
                    initial.push((name.clone(), rt.reserve(key, name).await?.peer));
                }
                for (i, name) in names.iter().enumerate() {
                    let plan = Self::plan(key, name, &version, initial.clone(), StartMode::Seed, &desired.flags);
                    rt.start(key, &plan).await?;
                    if i == 0 && names.len() > 1 {
                        crate::failpoints::hit("seed-after-first-start");
                    }
                }
                Event::normal(
                    "ClusterSeeded",
                    match names.as_slice() {
                        [one] => format!("started the first member {one} (etcd {version})"),
                        all => format!(
                            "started the {} members of a new cluster at once, {} (static bootstrap, etcd {version})",
                            all.len(),
                            all.join(", ")
                        ),
                    },
                )
            }
            Action::StartSeeded { names } => {
                let initial: Vec<(String, String)> = obs
                    .runtime
                    .iter()
                    .map(|r| (r.name.clone(), r.urls.peer.clone()))
                    .collect();
                for name in names {
                    let plan = Self::plan(key, name, &version, initial.clone(), StartMode::Seed, &desired.flags);
                    rt.start(key, &plan).await?;
                }
                Event::normal(
                    "ClusterSeeded",
                    format!(
                        "started {}, the members of the new cluster not started yet (static bootstrap, etcd {version})",
                        names.join(", ")
                    ),
                )
            }
            Action::Grow { name } => {
                let name = name.clone().unwrap_or_else(|| member_name(&key.name));
                let urls = rt.reserve(key, &name).await?;
                let endpoints: Vec<String> = obs
                    .runtime
                    .iter()
                    .filter(|r| member(&r.name).is_some_and(|m| m.healthy && !m.is_learner))
                    .map(|r| r.urls.client.clone())
                    .collect();
                match self
                    .etcd
                    .add_learner(&endpoints, obs.tls.as_ref(), &urls.peer)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if not_yet(&e) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
                crate::failpoints::hit("grow-after-add-learner");
                let initial = Self::initial_cluster(view, Some((&name, &urls.peer)));
                rt.start(
                    key,
                    &Self::plan(key, &name, &version, initial, StartMode::Join, &desired.flags),
                )
                .await?;
                Event::normal(
                    "MemberAdded",
                    format!("added {name} as a learner; it is promoted once caught up"),
                )
            }
            Action::StartLearner { name } => {
                let peer = member(name).map(|m| m.peer_url.clone()).unwrap_or_default();
                let initial = Self::initial_cluster(view, Some((name, &peer)));
                rt.start(
                    key,
                    &Self::plan(key, name, &version, initial, StartMode::Join, &desired.flags),
                )
                .await?;
                Event::normal("MemberStarted", format!("started learner {name}"))
            }
            Action::Promote { name, id } => {
                let endpoints = healthy_voters(obs, view, "");
                match self.etcd.promote(&endpoints, obs.tls.as_ref(), *id).await {
                    Ok(()) => {
                        crate::failpoints::hit("promote-after-promote");
                        Event::normal(
                            "MemberPromoted",
                            format!("promoted {name} to a voting member"),
                        )
                    }
                    Err(EtcdError::LearnerNotReady { .. }) => return Ok(None),
                    Err(e) => return Err(e.into()),
                }
            }
            Action::Restart { name } => {
                let m = member(name);
                let v = m
                    .and_then(|m| m.version)
                    .map(|v| v.to_string())
                    .unwrap_or(version.clone());
                let initial =
                    Self::initial_cluster(view, m.map(|m| (m.name.as_str(), m.peer_url.as_str())));
                rt.start(key, &Self::plan(key, name, &v, initial, StartMode::Join, &desired.flags))
                    .await?;
                Event::warning(
                    "MemberRestarted",
                    format!("member {name} was down; restarted it with its data"),
                )
            }
            Action::Replace { name, id, why } => {
                let endpoints = healthy_voters(obs, view, name);
                if !removed(self.etcd.remove(&endpoints, obs.tls.as_ref(), *id).await)? {
                    return Ok(None);
                }
                crate::failpoints::hit("replace-after-remove");
                if member(name).is_some_and(|m| m.in_runtime) {
                    rt.delete(key, name).await?;
                }
                Event::warning(
                    "MemberReplaced",
                    format!("removed failed member {name} ({why}); a fresh member will be added"),
                )
            }
            Action::Shrink { name, id } => {
                let endpoints = healthy_voters(obs, view, name);
                if !removed(self.etcd.remove(&endpoints, obs.tls.as_ref(), *id).await)? {
                    return Ok(None);
                }
                crate::failpoints::hit("shrink-after-remove");
                rt.delete(key, name).await?;
                Event::normal(
                    "MemberRemoved",
                    format!("removed member {name} to scale down"),
                )
            }
            Action::Cleanup { name } => {
                rt.delete(key, name).await?;
                Event::normal(
                    "MemberDeleted",
                    format!("deleted {name}, which is not in the cluster membership"),
                )
            }
            Action::Upgrade { name, to } => {
                rt.stop(key, name).await?;
                crate::failpoints::hit("upgrade-after-stop");
                let m = member(name);
                let initial =
                    Self::initial_cluster(view, m.map(|m| (m.name.as_str(), m.peer_url.as_str())));
                rt.start(
                    key,
                    &Self::plan(key, name, &to.to_string(), initial, StartMode::Join, &desired.flags),
                )
                .await?;
                Event::normal("MemberUpgraded", format!("restarted {name} on etcd {to}"))
            }
            Action::Reconfigure {
                name,
                id: _,
                replace: false,
            } => {
                let m = member(name);
                let v = m
                    .and_then(|m| m.version)
                    .map(|v| v.to_string())
                    .unwrap_or(version.clone());
                let before = m.map(|m| etcd::flags::describe(&m.flags));
                rt.stop(key, name).await?;
                crate::failpoints::hit("reconfigure-after-stop");
                let initial =
                    Self::initial_cluster(view, m.map(|m| (m.name.as_str(), m.peer_url.as_str())));
                rt.start(
                    key,
                    &Self::plan(key, name, &v, initial, StartMode::Join, &desired.flags),
                )
                .await?;
                Event::normal(
                    "MemberReconfigured",
                    format!(
                        "restarted {name} with the spec's etcd flags: {} (was: {})",
                        etcd::flags::describe(&desired.flags),
                        before.unwrap_or_default()
                    ),
                )
            }
            Action::Reconfigure {
                name,
                id,
                replace: true,
            } => {
                let endpoints = healthy_voters(obs, view, name);
                if !removed(self.etcd.remove(&endpoints, obs.tls.as_ref(), *id).await)? {
                    return Ok(None);
                }
                crate::failpoints::hit("reconfigure-after-remove");
                rt.delete(key, name).await?;
                Event::normal(
                    "MemberReconfigured",
                    format!(
                        "removed {name} so that a fresh member starts with the spec's etcd flags ({}): \
                         its storage does not outlive a restart",
                        etcd::flags::describe(&desired.flags)
                    ),
                )
            }
            Action::Recover { survivor } => {
                // Only the survivor is touched: the others are left to the
                // next steps, which delete them as strays once the survivor
                // serves the new one-member membership. If it cannot be
                // restarted (no volume to keep its data), nothing is lost.
                rt.stop(key, survivor).await?;
                crate::failpoints::hit("recover-after-stop");
                let m = member(survivor);
                let v = m
                    .and_then(|m| m.version)
                    .map(|v| v.to_string())
                    .unwrap_or(version.clone());
                let peer = m.map(|m| m.peer_url.clone()).unwrap_or_default();
                let plan = Self::plan(
                    key,
                    survivor,
                    &v,
                    vec![(survivor.clone(), peer)],
                    StartMode::ForceNewCluster,
                    &desired.flags,
                );
                rt.start(key, &plan).await?;
                crate::failpoints::hit("recover-after-start");
                self.memory().remove(key);
                Event::warning(
                    "QuorumRecovered",
                    format!(
                        "quorum was lost; restarted {survivor} (the survivor with the most data) as a one-member cluster; growing back to {}",
                        desired.size
                    ),
                )
            }
        };
        Ok(Some(event))
    }

    /// Last resort: no member has data left. Fetch and verify the newest
    /// backup, reserve the members to restore it into and check that they
    /// can start; return the record that [`Self::finish_recovery_from_backup`]
    /// carries out once it is in status. Nothing is deleted here, so an
    /// operator that dies before the record is written loses nothing.
    async fn begin_recovery_from_backup(
        &self,
        key: &ClusterKey,
        spec: &EtcdClusterSpec,
        obs: &Observation,
    ) -> Result<Option<(Event, RestoreInProgress)>, StepError> {
        let Some(source) = &self.recovery else {
            return Ok(None);
        };
        let kept = self.staged().get(key).filter(|s| s.path.is_file()).cloned();
        let snapshot = match kept {
            Some(s) => s,
            None => match source(key.clone(), None).await {
                Ok(Some(s)) => {
                    self.staged().insert(key.clone(), s.clone());
                    s
                }
                Ok(None) => return Ok(None),
                Err(message) => {
                    return Err(StepError::Recovery(format!(
                        "no verified backup could be fetched: {message}"
                    )));
                }
            },
        };
        let size = spec.size.clamp(1, 7) as usize;
        let (version, flags) = self.restore_version(spec).await?;
        let names: Vec<String> = (0..size).map(|_| member_name(&key.name)).collect();
        let token = restore_token(key);
        let prepared = self
            .prepare_restore(
                key,
                (&version, &flags),
                &names,
                &token,
                &snapshot.path,
                &obs.runtime,
            )
            .await;
        if let Err(e) = prepared {
            // The verified snapshot stays staged: the next attempt (after
            // the checks' cause is fixed) does not download it again.
            self.release(key, &names).await;
            return Err(e);
        }
        let record = RestoreInProgress {
            backup: snapshot.pin.key.clone(),
            sha256: snapshot.pin.sha256.clone(),
            members: names.clone(),
            token,
            started_time: now_rfc3339(),
        };
        let event = Event::warning(
            "RestoringFromBackup",
            format!(
                "quorum was lost and no member had data left; restoring {} from the newest verified backup {}",
                names.join(", "),
                snapshot.description
            ),
        );
        Ok(Some((event, record)))
    }

    /// Carry out (or go on with) the recovery from a backup recorded in
    /// status: delete every member outside the record and start the
    /// recorded ones that do not run, all from the recorded backup. Run
    /// again after a crash of the operator, it picks up where it stopped.
    async fn finish_recovery_from_backup(
        &self,
        key: &ClusterKey,
        spec: &EtcdClusterSpec,
        record: &RestoreInProgress,
        obs: &Observation,
    ) -> Result<Option<Event>, StepError> {
        let current = &obs.runtime;
        let pending = record
            .members
            .iter()
            .any(|n| !current.iter().any(|r| &r.name == n && r.running))
            || current.iter().any(|r| !record.members.contains(&r.name));
        if !pending {
            // Every recorded member runs: wait for them to elect a leader.
            return Ok(None);
        }
        // The backup is needed only for members that have no data of their
        // own yet; a restored member that merely stopped restarts from its data.
        let needs_backup = record.members.iter().any(|n| {
            !current
                .iter()
                .any(|r| &r.name == n && r.ever_started && r.has_data)
        });
        let snapshot = if needs_backup {
            Some(self.recorded_backup(key, record).await?)
        } else {
            None
        };
        let path = snapshot
            .as_ref()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        let (version, flags) = self.restore_version(spec).await?;
        let plans = self
            .prepare_restore(
                key,
                (&version, &flags),
                &record.members,
                &record.token,
                &path,
                current,
            )
            .await?;
        self.replace_with_restored(key, &plans, current, "recovery")
            .await?;
        self.drop_staged(key);
        Ok(Some(match snapshot {
            Some(s) => Event::warning(
                "QuorumRecoveredFromBackup",
                format!(
                    "quorum was lost and no member had data left; restored {} from the verified backup {}",
                    record.members.join(", "),
                    s.description
                ),
            ),
            None => Event::normal(
                "MemberRestarted",
                format!(
                    "restarted the members restored from backup `{}` with their data",
                    record.backup
                ),
            ),
        }))
    }

    /// The snapshot of the backup `record` names: the one staged when the
    /// restore was recorded, or (after a restart of the operator) the same
    /// backup fetched again, by key and sha256.
    async fn recorded_backup(
        &self,
        key: &ClusterKey,
        record: &RestoreInProgress,
    ) -> Result<RecoverySnapshot, StepError> {
        let pin = BackupPin {
            key: record.backup.clone(),
            sha256: record.sha256.clone(),
        };
        if let Some(s) = self
            .staged()
            .get(key)
            .filter(|s| s.pin == pin && s.path.is_file())
        {
            return Ok(s.clone());
        }
        let Some(source) = &self.recovery else {
            return Err(StepError::Recovery(
                "no backup source to finish the recorded restore from".into(),
            ));
        };
        let fetched = source(key.clone(), Some(pin)).await.map_err(|m| {
            StepError::Recovery(format!(
                "the backup `{}` this restore began with could not be fetched again: {m}",
                record.backup
            ))
        })?;
        let Some(s) = fetched else {
            return Err(StepError::Recovery(format!(
                "the backup `{}` (sha256 {}) this restore began with is gone or changed; create an \
                 EtcdRestore naming a backup to restore instead (it replaces these members)",
                record.backup, record.sha256
            )));
        };
        if let Some(old) = self.staged().insert(key.clone(), s.clone()) {
            let _ = std::fs::remove_file(&old.path);
        }
        Ok(s)
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, HashMap<ClusterKey, RecoverySnapshot>> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forget (and remove) the snapshot staged for `key`'s recovery.
    fn drop_staged(&self, key: &ClusterKey) {
        if let Some(s) = self.staged().remove(key) {
            let _ = std::fs::remove_file(&s.path);
        }
    }

    /// Delete every member of a cluster (the resource was deleted).
    pub async fn delete(&self, key: &ClusterKey) -> Result<(), RuntimeError> {
        for m in self.runtime.list(key).await? {
            self.runtime.delete(key, &m.name).await?;
        }
        self.memory().remove(key);
        self.drop_staged(key);
        Ok(())
    }
}

/// The members the last status named when not one is left now (no
/// process, Pod or volume, no membership): every member was lost with its
/// data, e.g. all Pods of an emptyDir cluster deleted at once. Seeding a new
/// cluster would silently replace the data with an empty one.
///
/// Whether the cluster held data is [`EtcdClusterStatus::has_served`]; these
/// names only make the message concrete.
/// The alarms any member reported, each with the name of the member that
/// raised it.
fn alarms_of(obs: &Observation, members: &[MemberView]) -> Vec<crate::api::ClusterAlarm> {
    let mut out: Vec<crate::api::ClusterAlarm> = obs
        .statuses
        .values()
        .flat_map(|s| s.alarms.iter())
        .map(|a| crate::api::ClusterAlarm {
            alarm: a.kind.clone(),
            member: members
                .iter()
                .find(|m| m.id == Some(a.member_id))
                .map(|m| m.name.clone())
                .unwrap_or_else(|| format!("member-{:x}", a.member_id)),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Events for kinds of alarm raised or cleared since the previous status
/// (one per kind: several members often raise the same NOSPACE).
fn alarm_events(
    previous: Option<&EtcdClusterStatus>,
    now: &[crate::api::ClusterAlarm],
) -> Vec<Event> {
    let before: &[crate::api::ClusterAlarm] =
        previous.map(|p| p.alarms.as_slice()).unwrap_or_default();
    let (before, now) = (status::alarms_by_kind(before), status::alarms_by_kind(now));
    let mut events = Vec::new();
    for (kind, members) in now
        .iter()
        .filter(|(k, _)| !before.iter().any(|(b, _)| b == k))
    {
        events.push(Event::warning(
            "AlarmRaised",
            status::alarm_message(kind, members),
        ));
    }
    for (kind, members) in before
        .iter()
        .filter(|(k, _)| !now.iter().any(|(n, _)| n == k))
    {
        events.push(Event::normal(
            "AlarmCleared",
            format!(
                "etcd alarm {kind} (raised by {}) was disarmed",
                members.join(", ")
            ),
        ));
    }
    events
}

fn lost_members(previous: Option<&EtcdClusterStatus>, view: &ClusterView) -> Vec<String> {
    match previous {
        Some(p) if view.members.is_empty() => p
            .members
            .ready
            .iter()
            .chain(&p.members.unready)
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

/// Client URLs of the healthy voting members other than `except`: where
/// membership changes go. Never through the member being removed: it stops
/// on its own removal and answers "server stopped" to a change that did
/// happen.
fn healthy_voters(obs: &Observation, view: &ClusterView, except: &str) -> Vec<String> {
    obs.runtime
        .iter()
        .filter(|r| r.name != except)
        .filter(|r| {
            view.members
                .iter()
                .any(|m| m.name == r.name && m.healthy && !m.is_learner)
        })
        .map(|r| r.urls.client.clone())
        .collect()
}

/// `MembersUnreachable` when members the runtime runs stop answering the
/// operator, `MembersReachable` when they answer again (once per change,
/// read from the previous status's Degraded condition).
fn unreachable_events(previous: Option<&EtcdClusterStatus>, view: &ClusterView) -> Vec<Event> {
    let was = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Degraded"))
        .is_some_and(|c| c.status == "True" && c.reason.as_deref() == Some("MembersUnreachable"));
    match super::decide::reported_unreachable(&view.members) {
        Some(what) if !was => vec![Event::warning(
            "MembersUnreachable",
            format!(
                "the operator cannot reach members that are running: {what}; nothing is removed or \
                 replaced while they are unreachable"
            ),
        )],
        None if was => vec![Event::normal(
            "MembersReachable",
            "every running member answers the operator again",
        )],
        _ => Vec::new(),
    }
}

/// etcd refuses membership changes until every member has been connected
/// for a few seconds ("unhealthy cluster"): not a failure, try next step.
fn not_yet(e: &EtcdError) -> bool {
    matches!(e, EtcdError::Request { message, .. } if message.contains("unhealthy cluster"))
}

/// `Ok(true)` once removed, `Ok(false)` when etcd asks to wait.
fn removed(result: Result<(), EtcdError>) -> Result<bool, EtcdError> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if not_yet(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The step in words, for failure messages.
fn describe(action: &Action) -> String {
    status::progress(action)
        .map(|(_, what)| what)
        .unwrap_or_else(|| format!("{action:?}"))
}
