//! Prometheus metrics of the operator process. Metrics are process-wide by
//! nature (one `/metrics` per process), so they live in one global registry
//! that any layer can record into without threading a handle through it.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindResult {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    namespace: String,
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlarmLabel {
    namespace: String,
    cluster: String,
    alarm: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupLabel {
    namespace: String,
    backup: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackupName {
    namespace: String,
    backup: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginCall {
    plugin: String,
    function: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLoad {
    plugin: String,
    /// precompiled, cache or compiled.
    from: String,
}

struct Metrics {
    registry: Registry,
    reconciles: Family<KindResult, Counter>,
    reconcile_seconds: Family<Kind, Histogram>,
    cluster_size: Family<ClusterLabel, Gauge>,
    cluster_ready: Family<ClusterLabel, Gauge>,
    cluster_unreachable: Family<ClusterLabel, Gauge>,
    cluster_alarms: Family<AlarmLabel, Gauge>,
    defrags: Family<ClusterLabel, Counter>,
    defrag_reclaimed: Family<ClusterLabel, Counter>,
    backups: Family<BackupLabel, Counter>,
    backup_seconds: Family<BackupLabel, Histogram>,
    backup_last_success: Family<BackupName, Gauge>,
    backup_interval: Family<BackupName, Gauge>,
    /// The EtcdBackups the two gauges above hold, so those deleted can go.
    backups_known: std::sync::Mutex<std::collections::HashSet<BackupName>>,
    plugin_seconds: Family<PluginCall, Histogram>,
    plugin_log_suppressed: Family<PluginLabel, Counter>,
    plugin_loads: Family<PluginLoad, Counter>,
    plugin_load_seconds: Family<PluginLoad, Histogram>,
    plugin_fetch_failures: Family<PluginLabel, Counter>,
}

/// Reconciles: 1 ms to ~33 s.
fn reconcile_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Backups: 50 ms to ~27 min.
fn backup_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

/// Plugin calls: 0.5 ms to ~16 s.
fn plugin_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut registry = Registry::with_prefix("etcd_operator");
        let reconciles = Family::<KindResult, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by resource kind and result (ok, error)",
            reconciles.clone(),
        );
        let reconcile_seconds = Family::<Kind, Histogram>::new_with_constructor(reconcile_buckets);
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            reconcile_seconds.clone(),
        );
        let cluster_size = Family::<ClusterLabel, Gauge>::default();
        registry.register(
            "cluster_size",
            "Members an EtcdCluster should have (spec.size)",
            cluster_size.clone(),
        );
        let cluster_ready = Family::<ClusterLabel, Gauge>::default();
        registry.register(
            "cluster_ready_members",
            "Members of an EtcdCluster that are healthy",
            cluster_ready.clone(),
        );
        let cluster_unreachable = Family::<ClusterLabel, Gauge>::default();
        registry.register(
            "cluster_unreachable_members",
            "Members of an EtcdCluster that run (per the runtime) but do not answer the operator",
            cluster_unreachable.clone(),
        );
        let cluster_alarms = Family::<AlarmLabel, Gauge>::default();
        registry.register(
            "cluster_alarms",
            "Members of an EtcdCluster that raised an etcd alarm (NOSPACE, CORRUPT), by alarm",
            cluster_alarms.clone(),
        );
        let defrags = Family::<ClusterLabel, Counter>::default();
        registry.register(
            "defrags",
            "Members of an EtcdCluster defragmented (spec.maintenance.defrag)",
            defrags.clone(),
        );
        let defrag_reclaimed = Family::<ClusterLabel, Counter>::default();
        registry.register(
            "defrag_reclaimed_bytes",
            "Bytes of database files that defragmenting an EtcdCluster's members gave back",
            defrag_reclaimed.clone(),
        );
        let backups = Family::<BackupLabel, Counter>::default();
        registry.register(
            "backups",
            "Backup runs by EtcdBackup and result (succeeded, failed, skipped)",
            backups.clone(),
        );
        let backup_seconds = Family::<BackupLabel, Histogram>::new_with_constructor(backup_buckets);
        registry.register(
            "backup_duration_seconds",
            "Time a backup run took",
            backup_seconds.clone(),
        );
        let backup_last_success = Family::<BackupName, Gauge>::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "When an EtcdBackup last succeeded (status.lastSuccessDate), in seconds since the epoch; \
             absent until its first success",
            backup_last_success.clone(),
        );
        let backup_interval = Family::<BackupName, Gauge>::default();
        registry.register(
            "backup_interval_seconds",
            "An EtcdBackup's spec.backupPolicy.backupIntervalInSecond (0: one-shot), so alerts can \
             compare the age of its last success with its schedule",
            backup_interval.clone(),
        );
        let plugin_seconds = Family::<PluginCall, Histogram>::new_with_constructor(plugin_buckets);
        registry.register(
            "plugin_call_duration_seconds",
            "Time one call into a WebAssembly plugin took, by plugin, function and result",
            plugin_seconds.clone(),
        );
        let plugin_log_suppressed = Family::<PluginLabel, Counter>::default();
        registry.register(
            "plugin_log_suppressed",
            "Log messages of a plugin dropped because it was over its log budget",
            plugin_log_suppressed.clone(),
        );
        let plugin_loads = Family::<PluginLoad, Counter>::default();
        registry.register(
            "plugin_loads",
            "Plugins loaded, by where their compiled code came from (precompiled, cache, compiled)",
            plugin_loads.clone(),
        );
        let plugin_load_seconds =
            Family::<PluginLoad, Histogram>::new_with_constructor(reconcile_buckets);
        registry.register(
            "plugin_load_duration_seconds",
            "Time loading a plugin's compiled code took (compiling it, or reading it from a cache)",
            plugin_load_seconds.clone(),
        );
        let plugin_fetch_failures = Family::<PluginLabel, Counter>::default();
        registry.register(
            "plugin_fetch_failures",
            "Failed fetches of a plugin catalog entry's source (registry or https)",
            plugin_fetch_failures.clone(),
        );
        Metrics {
            registry,
            plugin_loads,
            plugin_load_seconds,
            plugin_fetch_failures,
            reconciles,
            reconcile_seconds,
            cluster_size,
            cluster_ready,
            cluster_unreachable,
            cluster_alarms,
            defrags,
            defrag_reclaimed,
            backups,
            backup_seconds,
            backup_last_success,
            backup_interval,
            backups_known: Default::default(),
            plugin_seconds,
            plugin_log_suppressed,
        }
    })
}

/// One reconcile of a resource of `kind` finished.
pub fn reconciled(kind: &str, took: Duration, ok: bool) {
    let m = metrics();
    m.reconciles
        .get_or_create(&KindResult {
            kind: kind.into(),
            result: if ok { "ok" } else { "error" }.into(),
        })
        .inc();
    m.reconcile_seconds
        .get_or_create(&Kind { kind: kind.into() })
        .observe(took.as_secs_f64());
}

/// The desired, healthy and unreachable member counts of a cluster.
pub fn cluster_members(namespace: &str, cluster: &str, size: i64, ready: i64, unreachable: i64) {
    let m = metrics();
    let l = ClusterLabel {
        namespace: namespace.into(),
        cluster: cluster.into(),
    };
    m.cluster_size.get_or_create(&l).set(size);
    m.cluster_ready.get_or_create(&l).set(ready);
    m.cluster_unreachable.get_or_create(&l).set(unreachable);
}

/// The alarms kinds etcd knows, always exported (0 when not raised) so an
/// alert can say `> 0`.
const ALARM_KINDS: [&str; 2] = ["NOSPACE", "CORRUPT"];

/// How many members of a cluster raised each alarm (`status.alarms`).
pub fn cluster_alarms(namespace: &str, cluster: &str, alarms: &[crate::api::ClusterAlarm]) {
    let m = metrics();
    let mut kinds: Vec<&str> = ALARM_KINDS.to_vec();
    for a in alarms {
        if !kinds.contains(&a.alarm.as_str()) {
            kinds.push(&a.alarm);
        }
    }
    for kind in kinds {
        let raised = alarms.iter().filter(|a| a.alarm == kind).count();
        m.cluster_alarms
            .get_or_create(&AlarmLabel {
                namespace: namespace.into(),
                cluster: cluster.into(),
                alarm: kind.into(),
            })
            .set(raised as i64);
    }
}

/// A member of a cluster was defragmented and gave back `reclaimed` bytes.
pub fn defragmented(namespace: &str, cluster: &str, reclaimed: u64) {
    let m = metrics();
    let l = ClusterLabel {
        namespace: namespace.into(),
        cluster: cluster.into(),
    };
    m.defrags.get_or_create(&l).inc();
    m.defrag_reclaimed.get_or_create(&l).inc_by(reclaimed);
}

/// A cluster was deleted: its gauges go.
pub fn cluster_deleted(namespace: &str, cluster: &str) {
    let m = metrics();
    let l = ClusterLabel {
        namespace: namespace.into(),
        cluster: cluster.into(),
    };
    m.cluster_size.remove(&l);
    m.cluster_ready.remove(&l);
    m.cluster_unreachable.remove(&l);
    m.defrags.remove(&l);
    m.defrag_reclaimed.remove(&l);
    for kind in ALARM_KINDS {
        m.cluster_alarms.remove(&AlarmLabel {
            namespace: namespace.into(),
            cluster: cluster.into(),
            alarm: kind.into(),
        });
    }
}

/// A backup run ended with `result` (succeeded, failed, skipped).
pub fn backup_run(namespace: &str, backup: &str, result: &str, took: Duration) {
    let m = metrics();
    let l = BackupLabel {
        namespace: namespace.into(),
        backup: backup.into(),
        result: result.into(),
    };
    m.backups.get_or_create(&l).inc();
    m.backup_seconds
        .get_or_create(&l)
        .observe(took.as_secs_f64());
}

/// An EtcdBackup's schedule and last success, after each of its reconciles.
pub fn backup_schedule(
    namespace: &str,
    backup: &str,
    last_success_unix: Option<i64>,
    interval_secs: u64,
) {
    let m = metrics();
    let l = BackupName {
        namespace: namespace.into(),
        backup: backup.into(),
    };
    match last_success_unix {
        Some(t) => {
            m.backup_last_success.get_or_create(&l).set(t);
        }
        None => {
            m.backup_last_success.remove(&l);
        }
    }
    m.backup_interval
        .get_or_create(&l)
        .set(i64::try_from(interval_secs).unwrap_or(i64::MAX));
    m.backups_known.lock().expect("backups known").insert(l);
}

/// Only the EtcdBackups in `present` (namespace, name) exist: the schedule
/// gauges of the others go, so a deleted EtcdBackup does not look stale.
pub fn backups_present(present: &std::collections::HashSet<(String, String)>) {
    let m = metrics();
    m.backups_known.lock().expect("backups known").retain(|l| {
        let keep = present.contains(&(l.namespace.clone(), l.backup.clone()));
        if !keep {
            m.backup_last_success.remove(l);
            m.backup_interval.remove(l);
        }
        keep
    });
}

/// One call into a plugin returned (or trapped, or timed out).
pub fn plugin_call(plugin: &str, function: &str, took: Duration, ok: bool) {
    metrics()
        .plugin_seconds
        .get_or_create(&PluginCall {
            plugin: plugin.into(),
            function: function.into(),
            result: if ok { "ok" } else { "error" }.into(),
        })
        .observe(took.as_secs_f64());
}

/// Log messages of a plugin dropped over its log budget.
pub fn plugin_log_suppressed(plugin: &str, n: u64) {
    metrics()
        .plugin_log_suppressed
        .get_or_create(&PluginLabel {
            plugin: plugin.into(),
        })
        .inc_by(n);
}

/// A plugin's compiled code was loaded `from` precompiled, cache or compiled.
pub fn plugin_loaded(plugin: &str, from: &str, took: Duration) {
    let label = PluginLoad {
        plugin: plugin.into(),
        from: from.into(),
    };
    metrics().plugin_loads.get_or_create(&label).inc();
    metrics()
        .plugin_load_seconds
        .get_or_create(&label)
        .observe(took.as_secs_f64());
}

/// Fetching a catalog plugin's source failed.
pub fn plugin_fetch_failed(plugin: &str) {
    metrics()
        .plugin_fetch_failures
        .get_or_create(&PluginLabel {
            plugin: plugin.into(),
        })
        .inc();
}

/// The text exposition format, for `/metrics`.
pub fn encode() -> String {
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics().registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_appear_in_the_exposition() {
        reconciled("EtcdCluster", Duration::from_millis(3), true);
        cluster_members("ns", "c1", 3, 2, 1);
        plugin_call("s3", "write", Duration::from_millis(1), false);
        let text = encode();
        assert!(
            text.contains(r#"etcd_operator_reconciles_total{kind="EtcdCluster",result="ok"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#"etcd_operator_cluster_ready_members{namespace="ns",cluster="c1"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"etcd_operator_cluster_unreachable_members{namespace="ns",cluster="c1"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"etcd_operator_plugin_call_duration_seconds_count{plugin="s3",function="write",result="error"} 1"#), "{text}");
        cluster_deleted("ns", "c1");
        assert!(!encode().contains(r#"cluster="c1""#));
    }

    #[test]
    fn a_deleted_backups_schedule_gauges_go() {
        backup_schedule("ns", "kept", Some(1_700_000_000), 3600);
        backup_schedule("ns", "gone", Some(1_700_000_100), 60);
        backup_schedule("ns", "never", None, 60);
        let text = encode();
        assert!(
            text.contains(r#"etcd_operator_backup_last_success_timestamp_seconds{namespace="ns",backup="kept"} 1700000000"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"etcd_operator_backup_interval_seconds{namespace="ns",backup="never"} 60"#
            ),
            "{text}"
        );
        assert!(
            !text.contains(r#"etcd_operator_backup_last_success_timestamp_seconds{namespace="ns",backup="never"}"#),
            "no success yet, no timestamp: {text}"
        );
        backups_present(&[("ns".to_string(), "kept".to_string())].into());
        let text = encode();
        assert!(!text.contains(r#"backup="gone""#), "{text}");
        assert!(text.contains(r#"backup="kept""#), "{text}");
    }
}
