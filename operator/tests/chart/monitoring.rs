//! The chart's dashboard and alerts, rendered by the real helm: every query parses with
//! Prometheus's own PromQL grammar (npm `@prometheus-io/lezer-promql`, e2e/monitoring) and
//! names only metrics the worker exports — read from the registrations in
//! `worker/src/metrics.rs` (prefix `spindle_`; counters get `_total`, histograms `_bucket`,
//! `_sum` and `_count`) — or the kubelet's container metrics; the PodMonitor,
//! ServiceMonitor and PrometheusRule validate against the Prometheus Operator's published
//! schemas (npm `@kubernetes-models/prometheus-operator`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use super::{find, helm, root, template};

/// Metrics that come from the kubelet (cAdvisor), not from Spindle: the per-worker CPU and
/// memory panels.
const KUBELET: [&str; 2] = [
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
];

/// Every series name the worker exports, from `worker/src/metrics.rs`: the field types of
/// `struct Metrics` and the `register("name", "help", m.field.clone())` calls.
fn exported_metrics() -> BTreeSet<String> {
    let source = std::fs::read_to_string(root().join("worker/src/metrics.rs")).unwrap();
    let prefix = source
        .split("Registry::with_prefix(\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the worker's registry prefix");
    let body = source
        .split("pub struct Metrics {")
        .nth(1)
        .and_then(|r| r.split("\n}").next())
        .expect("struct Metrics");
    let mut kinds = BTreeMap::new();
    for line in body.lines().map(str::trim).filter(|l| l.starts_with("pub ")) {
        let (field, ty) = line.trim_start_matches("pub ").split_once(':').unwrap();
        let ty = ty.trim().trim_end_matches(',');
        let kind = ["Histogram", "Counter", "Gauge"].into_iter().find(|k| ty.contains(k));
        if let Some(kind) = kind {
            kinds.insert(field.trim().to_string(), kind);
        }
    }
    let mut names = BTreeSet::new();
    let mut registered = 0;
    for call in source.split(".register(").skip(1) {
        let name = call.split('"').nth(1).expect("a metric name");
        let field = call
            .split("m.")
            .nth(1)
            .and_then(|r| r.split(".clone()").next())
            .expect("the registered field");
        let kind = kinds
            .get(field)
            .unwrap_or_else(|| panic!("register(\"{name}\"): no field {field} in struct Metrics"));
        let base = format!("{prefix}_{name}");
        match *kind {
            "Counter" => names.insert(format!("{base}_total")),
            "Gauge" => names.insert(base),
            _ => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{base}{suffix}"));
                }
                true
            }
        };
        registered += 1;
    }
    assert_eq!(
        registered,
        kinds.len(),
        "every metric field of struct Metrics is registered once (the parser of metrics.rs agrees with it)"
    );
    names
}

#[derive(serde::Deserialize)]
struct Checked {
    exprs: Vec<CheckedExpr>,
    objects: Vec<CheckedObject>,
}

#[derive(serde::Deserialize)]
struct CheckedExpr {
    expr: String,
    error: Option<String>,
    metrics: Vec<String>,
}

#[derive(serde::Deserialize)]
struct CheckedObject {
    kind: String,
    name: Option<String>,
    error: Option<String>,
}

/// e2e/monitoring/check.mjs on `exprs` and `objects`; `None` (after one `skip:` line) when
/// node or the npm packages cannot be had here.
fn check(exprs: &[String], objects: &[serde_json::Value]) -> Option<Checked> {
    let dir = root().join("e2e/monitoring");
    let started = std::time::Instant::now();
    let setup = Command::new("bash").arg(dir.join("setup.sh")).output().unwrap();
    if setup.status.code() == Some(75) {
        eprintln!(
            "skip: dashboard/alert query check not run: {}",
            String::from_utf8_lossy(&setup.stderr).trim()
        );
        return None;
    }
    assert!(
        setup.status.success(),
        "e2e/monitoring/setup.sh: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    eprintln!(
        "e2e/monitoring: npm packages ready in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let Ok(mut child) = Command::new("node")
        .arg(dir.join("check.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("skip: dashboard/alert query check not run: node is not installed");
        return None;
    };
    let input = serde_json::json!({"exprs": exprs, "objects": objects});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "check.mjs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("check.mjs prints JSON"))
}

/// Grafana's variables replaced by what Prometheus accepts in their places.
fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m").replace("$__range", "1h")
}

/// Every query of the dashboard: panel targets and the variables' `label_values(selector, label)`.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push(as_promql(t["expr"].as_str().unwrap()));
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(selector, _)| selector)
                .unwrap_or_else(|| panic!("variable {}: not label_values(…): {q}", var["name"]));
            out.push(as_promql(inner));
        }
    }
    out
}

fn rendered() -> Vec<serde_yaml::Value> {
    template(
        &helm(),
        &[
            "monitoring.podMonitor.enabled=true",
            "monitoring.serviceMonitor.enabled=true",
            "monitoring.prometheusRule.enabled=true",
        ],
    )
}

fn to_json(v: &serde_yaml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn dashboard_and_alerts_query_only_exported_metrics() {
    let exported = exported_metrics();
    eprintln!(
        "worker/src/metrics.rs: {} series names ({} …)",
        exported.len(),
        exported.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
    );
    let objects = rendered();
    let config_map = objects
        .iter()
        .find(|o| {
            o["kind"].as_str() == Some("ConfigMap")
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-dashboard"))
        })
        .expect("the dashboard ConfigMap");
    assert_eq!(
        config_map["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(config_map["data"]["spindle.json"].as_str().unwrap()).expect("the dashboard is JSON");
    let rule = to_json(find(&objects, "PrometheusRule"));
    let mut alerts = BTreeMap::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            alerts.insert(
                r["alert"].as_str().unwrap().to_string(),
                r["expr"].as_str().unwrap().to_string(),
            );
        }
    }
    let panel_queries = dashboard_queries(&dashboard);
    let queries: Vec<String> = panel_queries.iter().cloned().chain(alerts.values().cloned()).collect();
    let monitors: Vec<serde_json::Value> = objects
        .iter()
        .filter(|o| {
            o["apiVersion"]
                .as_str()
                .is_some_and(|a| a.starts_with("monitoring.coreos.com/"))
        })
        .map(to_json)
        .collect();
    let Some(checked) = check(&queries, &monitors) else {
        return;
    };

    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for q in &checked.exprs {
        if let Some(e) = &q.error {
            problems.push(format!("{}: {e}", q.expr));
        }
        for m in &q.metrics {
            used.insert(m.clone());
            if !exported.contains(m) && !KUBELET.contains(&m.as_str()) {
                problems.push(format!("{}: names `{m}`, which the worker does not export", q.expr));
            }
        }
        if q.metrics.is_empty() {
            problems.push(format!("{}: selects no metric", q.expr));
        }
    }
    for o in &checked.objects {
        if let Some(e) = &o.error {
            problems.push(format!("{} {:?}: {e}", o.kind, o.name));
        }
    }
    assert!(problems.is_empty(), "dashboard and alerts:\n{}", problems.join("\n"));
    let mut kinds: Vec<&str> = checked.objects.iter().map(|o| o.kind.as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["PodMonitor", "PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
    );
    eprintln!(
        "{} dashboard queries and {} alerts parse (PromQL grammar) and name {} exported metrics; {} valid",
        panel_queries.len(),
        alerts.len(),
        used.len(),
        kinds.join(", ")
    );

    // What the dashboard and the alerts must cover (issue 18): each area by a metric it needs.
    for (area, metric) in [
        ("ingress throughput", "spindle_ingress_accepted_total"),
        ("function throughput", "spindle_invocation_messages_total"),
        ("egress throughput", "spindle_egress_records_total"),
        ("invocation latency", "spindle_invocation_duration_seconds_bucket"),
        ("checkpoint duration", "spindle_checkpoint_duration_seconds_bucket"),
        ("checkpoint size", "spindle_checkpoint_bytes"),
        ("checkpoint failures", "spindle_checkpoints_failed_total"),
        ("rollbacks", "spindle_rollbacks_total"),
        ("dead letters", "spindle_dead_letters_total"),
        ("queue sizes", "spindle_messages_queued"),
        ("backlog", "spindle_backlog_messages"),
        ("worker CPU", "container_cpu_usage_seconds_total"),
        ("worker memory", "container_memory_working_set_bytes"),
    ] {
        assert!(
            panel_queries.iter().any(|q| q.contains(metric)),
            "the dashboard has no panel for {area} ({metric})"
        );
    }
    for (alert, metric) in [
        ("SpindleCheckpointsFailing", "spindle_checkpoints_failed_total"),
        ("SpindleNoCompletedCheckpoint", "spindle_last_checkpoint"),
        ("SpindleRollbackLoop", "spindle_rollbacks_total"),
        ("SpindleDeadLettersGrowing", "spindle_dead_letters_total"),
        ("SpindleBacklogGrowing", "spindle_backlog_messages"),
        ("SpindleCheckpointDataLoss", "spindle_checkpoint_data_loss_total"),
    ] {
        let expr = alerts.get(alert).unwrap_or_else(|| panic!("no alert {alert}"));
        assert!(expr.contains(metric), "{alert}: {expr}");
    }
}

/// The check itself can fail: an unknown metric, a misspelt suffix and a broken query are
/// each reported, and an invalid monitor is refused by its schema.
#[test]
fn the_check_catches_unknown_metrics_and_bad_queries() {
    let exported = exported_metrics();
    let queries = [
        "sum(rate(spindle_no_such_thing_total[5m]))".to_string(),
        // A counter without its _total suffix is not a series Prometheus stores.
        "rate(spindle_rollbacks[5m])".to_string(),
        "sum(rate(spindle_rollbacks_total[5m])".to_string(),
    ];
    let bad_monitor = serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "x"},
        "spec": {"selector": {}, "podMetricsEndpoints": [{"port": "admin", "interval": 15}]}
    });
    let Some(checked) = check(&queries, &[bad_monitor]) else {
        return;
    };
    assert!(!exported.contains(&checked.exprs[0].metrics[0]));
    assert!(!exported.contains(&checked.exprs[1].metrics[0]));
    assert!(exported.contains("spindle_rollbacks_total"));
    assert!(
        checked.exprs[2].error.is_some(),
        "an unclosed parenthesis does not parse"
    );
    assert!(
        checked.objects[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("interval"))
    );
}
