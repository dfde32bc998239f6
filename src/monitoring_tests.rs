//! `deploy/monitoring/` against the code: every metric the alert rules and the dashboard use is
//! one the operator exports (a rename can't silently break an alert), every alert has a promtool
//! test, and the ServiceMonitor scrapes the Service of `deploy/`.

use crate::metrics::Metrics;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path)).unwrap()
}

/// The metrics with a sample in every family (a family without one is not encoded).
fn every_family() -> Metrics {
    let m = Metrics::new();
    m.reconcile_started("NotebookTokenRequest");
    m.reconcile_finished("NotebookTokenRequest", std::time::Duration::from_millis(5));
    m.failure("NotebookTokenRequest", "Throttled");
    m.provider_call("azure_ml", "listNotebookAccessToken", "200");
    m.provider_call_took(
        "azure_ml",
        "listNotebookAccessToken",
        std::time::Duration::from_millis(5),
    );
    m.rate_limited("azure_ml");
    m.write("NotebookTokenRequest", "secret");
    m.observe_resource(
        "WorkspaceView",
        "ns",
        "v",
        crate::metrics::ResourceGauges {
            expires_at: Some(1),
            renew_at: Some(1),
            ready: Some(("True".into(), "Synced".into())),
            inventory: Some(("Fabric".into(), 1)),
        },
    );
    m
}

/// The sample names the operator exports: gauges as registered, counters with `_total`,
/// histograms with `_bucket`, `_sum` and `_count` (from the `# TYPE` lines of /metrics).
fn exported() -> BTreeSet<String> {
    let text = every_family().encode();
    // Every family registered has a sample above.
    let code = read("src/metrics.rs");
    let code = code.split("#[cfg(test)]").next().unwrap();
    let registered = code.matches("registry.register(").count();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("# TYPE ")).count(),
        registered,
        "give every family a sample in every_family()"
    );
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line["# TYPE ".len()..].split(' ');
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The PromQL expressions of the PrometheusRule, by alert name.
fn alert_exprs() -> Vec<(String, String)> {
    let rule = yaml("deploy/monitoring/prometheusrule.yaml");
    let mut out = Vec::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            out.push((
                r["alert"].as_str().unwrap().to_owned(),
                r["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

/// The PromQL expressions of the dashboard: panel targets and template variable queries.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(&read("deploy/monitoring/dashboard.json")).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

/// The metric names an expression selects: identifiers followed by `{` (every selector in these
/// files has a label matcher), and any `workspace_access_` name.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let selector = regex::Regex::new(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{").unwrap();
    let ours = regex::Regex::new(r"workspace_access_[a-zA-Z0-9_]+").unwrap();
    selector
        .captures_iter(expr)
        .map(|c| c[1].to_owned())
        .chain(ours.find_iter(expr).map(|m| m.as_str().to_owned()))
        .collect()
}

#[test]
fn every_metric_the_rules_and_the_dashboard_use_is_exported() {
    let exported = exported();
    assert!(
        exported.contains("workspace_access_token_expiration_timestamp_seconds")
            && exported.contains("workspace_access_provider_calls_total")
            && exported.contains("workspace_access_reconcile_duration_seconds_bucket"),
        "{exported:?}"
    );
    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    let exprs = alert_exprs()
        .into_iter()
        .map(|(alert, e)| (format!("alert {alert}"), e))
        .chain(
            dashboard_exprs()
                .into_iter()
                .map(|e| ("dashboard".to_owned(), e)),
        );
    for (place, expr) in exprs {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        for name in names {
            // `up` is Prometheus's own per-target series.
            if name != "up" && !exported.contains(&name) {
                unknown.push(format!("{place}: {name}"));
            }
            used.insert(name);
        }
    }
    assert!(unknown.is_empty(), "not exported:\n{}", unknown.join("\n"));
    // The dashboard shows every metric the operator has.
    let dashboard: BTreeSet<String> = dashboard_exprs()
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    let families = |names: &BTreeSet<String>| -> BTreeSet<String> {
        names
            .iter()
            .map(|n| {
                ["_bucket", "_sum", "_count", "_total"]
                    .iter()
                    .fold(n.clone(), |n, s| {
                        n.strip_suffix(s).map_or(n.clone(), str::to_owned)
                    })
            })
            .collect()
    };
    let missing: Vec<String> = families(&exported)
        .difference(&families(&dashboard))
        .cloned()
        .collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
}

#[test]
fn the_checker_finds_a_renamed_metric() {
    let names = metric_names(
        "time() - max by (kind) (workspace_access_token_renewal_timestamp{job=\"x\"}) > 600",
    );
    assert_eq!(
        names,
        BTreeSet::from(["workspace_access_token_renewal_timestamp".to_owned()])
    );
    assert!(!exported().contains("workspace_access_token_renewal_timestamp"));
}

#[test]
fn every_alert_has_a_promtool_test_that_fires_it() {
    let tests = yaml("deploy/monitoring/tests/alerts.test.yaml");
    assert_eq!(tests["rule_files"][0], "rules.yaml");
    let mut fired = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_array().unwrap() {
        for a in t["alert_rule_test"].as_array().unwrap() {
            let name = a["alertname"].as_str().unwrap().to_owned();
            let exp = a["exp_alerts"].as_array().map_or(0, Vec::len);
            if exp > 0 {
                fired.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    for (alert, _) in alert_exprs() {
        assert!(fired.contains(&alert), "{alert}: no test where it fires");
        assert!(
            quiet.contains(&alert),
            "{alert}: no test where it stays quiet"
        );
    }
}

#[test]
fn the_rules_select_the_job_the_service_monitor_scrapes() {
    let service = yaml("deploy/service.yaml");
    let job = service["metadata"]["name"].as_str().unwrap();
    for (alert, expr) in alert_exprs() {
        assert!(
            expr.contains(&format!("job=\"{job}\"")),
            "{alert} does not select job {job}: {expr}"
        );
    }
    // The ServiceMonitor selects the Service by a label kustomize puts on everything in
    // deploy/, in the namespace of deploy/, by its port's name, and keeps the gauges' own
    // namespace label.
    let base = yaml("deploy/kustomization.yaml");
    let monitor = yaml("deploy/monitoring/servicemonitor.yaml");
    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    let labels = base["labels"][0]["pairs"].as_object().unwrap();
    for (k, v) in wanted {
        assert_eq!(labels.get(k), Some(v), "{k}");
    }
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"][0],
        base["namespace"]
    );
    let port = &monitor["spec"]["endpoints"][0];
    assert_eq!(port["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(port["path"], "/metrics");
    assert_eq!(port["honorLabels"], true);
}

#[test]
fn the_component_ships_the_dashboard_with_the_grafana_label() {
    let k = yaml("deploy/monitoring/kustomization.yaml");
    assert_eq!(k["kind"], "Component");
    let resources: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(resources, ["servicemonitor.yaml", "prometheusrule.yaml"]);
    let generator = &k["configMapGenerator"][0];
    assert_eq!(generator["options"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        generator["files"][0],
        "workspace-access-operator.json=dashboard.json"
    );
    let dashboard: Value = serde_json::from_str(&read("deploy/monitoring/dashboard.json")).unwrap();
    assert_eq!(dashboard["uid"], "workspace-access-operator");
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for t in [
        "Tokens by time to expiry",
        "Resources by Ready status and reason",
        "Provider calls by status",
        "Provider latency (p50, p95)",
        "Reconcile duration (p50, p95)",
        "API-server writes",
    ] {
        assert!(titles.contains(&t), "{t}: {titles:?}");
    }
    // `spec` is the PrometheusRule's last key: .ci/check-rules extracts it for promtool.
    let text = read("deploy/monitoring/prometheusrule.yaml");
    let top: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with([' ', '#', '-']) && !l.is_empty())
        .collect();
    assert_eq!(top.last(), Some(&"spec:"), "{top:?}");
}
