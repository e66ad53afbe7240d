//! What the chart gives Prometheus and Grafana: the PrometheusRule's alerts
//! pass `promtool check rules` and its unit tests
//! (`tests/fixtures/alerts/etcd-operator.test.yaml`: each alert fires on the
//! series that should set it off and not on those beside it), and the alerts
//! and the dashboard name only metrics the operator exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use crate::common::{repo, run_ok, tools};
use crate::deploy::render;

/// promtool, which scripts/setup.sh takes from Debian's prometheus package.
fn promtool() -> PathBuf {
    tools().join("prometheus/promtool")
}

/// The chart's PrometheusRule, rendered with its defaults.
fn rules() -> serde_json::Value {
    let docs = render("etcd", &["metrics.prometheusRule.enabled=true"]);
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("the chart renders a PrometheusRule");
    serde_json::json!({ "groups": rule["spec"]["groups"] })
}

#[test]
fn the_alert_rules_pass_promtool_and_its_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&rules()).unwrap(),
    )
    .unwrap();
    let fixture = repo().join("tests/fixtures/alerts/etcd-operator.test.yaml");
    std::fs::copy(&fixture, dir.path().join("etcd-operator.test.yaml")).unwrap();
    run_ok(
        Command::new(promtool())
            .args(["check", "rules", "rules.yaml"])
            .current_dir(dir.path()),
    );
    run_ok(
        Command::new(promtool())
            .args(["test", "rules", "etcd-operator.test.yaml"])
            .current_dir(dir.path()),
    );
    // Every alert has a test that sees it fire.
    let tests = std::fs::read_to_string(&fixture).unwrap();
    for rule in rules()["groups"][0]["rules"].as_array().unwrap() {
        let alert = rule["alert"].as_str().unwrap();
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "no unit test sees {alert} fire"
        );
    }
}

/// Metric names in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if token.starts_with("etcd_operator_") {
            into.insert(token.to_string());
        }
    }
}

/// Every `expr` anywhere in a JSON document.
fn exprs(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v.as_str()) {
                    ("expr", Some(e)) => into.push(e.to_string()),
                    _ => exprs(v, into),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, into)),
        _ => {}
    }
}

/// The sample names the operator's `/metrics` has, from its `# TYPE` lines.
/// A family shows only once it has a sample, so each is recorded once here
/// (a new metric the dashboard uses must be added here too).
fn exported() -> BTreeSet<String> {
    use etcd_operator::metrics as m;
    let took = std::time::Duration::from_millis(1);
    m::reconciled("EtcdCluster", took, true);
    m::cluster_members("ns", "c", 3, 3, 0);
    m::defragmented("ns", "c", 1);
    m::cluster_alarms("ns", "c", &[]);
    m::backup_run("ns", "b", "succeeded", took);
    m::backup_schedule("ns", "b", Some(1), 60);
    m::plugin_call("s3", "write", took, true);
    m::plugin_log_suppressed("s3", 1);
    m::plugin_loaded("s3", "cache", took);
    m::plugin_fetch_failed("s3");
    let mut names = BTreeSet::new();
    for line in etcd_operator::metrics::encode().lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_count", "_sum"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn the_alerts_and_the_dashboard_name_only_metrics_the_operator_exports() {
    let docs = render(
        "etcd",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.grafanaDashboard.enabled=true",
        ],
    );
    let dashboard = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the chart renders the dashboard ConfigMap with the sidecar's label");
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["etcd-operator.json"].as_str().unwrap())
            .expect("the dashboard is JSON");
    let exported = exported();
    for (what, doc) in [("the dashboard", json), ("the alerts", rules())] {
        let mut found = Vec::new();
        exprs(&doc, &mut found);
        assert!(found.len() >= 7, "{what} has its queries: {found:?}");
        let mut names = BTreeSet::new();
        for e in &found {
            metric_names(e, &mut names);
        }
        let unknown: Vec<_> = names.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics the operator does not export: {unknown:?} (it exports {exported:?})"
        );
    }
}
