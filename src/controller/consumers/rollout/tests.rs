use super::*;
use crate::api::common::{LabelSelector, RolloutRestartTarget};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn by_name(kind: WorkloadKind, name: &str) -> RolloutRestartTarget {
    RolloutRestartTarget {
        kind,
        name: Some(name.into()),
        selector: None,
    }
}

fn by_labels(kind: WorkloadKind, labels: &[(&str, &str)]) -> RolloutRestartTarget {
    RolloutRestartTarget {
        kind,
        name: None,
        selector: Some(LabelSelector {
            match_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            match_expressions: Vec::new(),
        }),
    }
}

#[test]
fn a_restart_is_due_only_when_an_existing_secrets_data_changes() {
    // First creation: never.
    assert!(!restart_due(false, None, "token:aa"));
    // Unchanged data (a resync, a re-read of the same token): no.
    assert!(!restart_due(true, Some("token:aa"), "token:aa"));
    // A new token: yes.
    assert!(restart_due(true, Some("token:aa"), "token:bb"));
    // A Secret written by an earlier version (no fingerprint): its data can't be compared.
    assert!(restart_due(true, None, "token:bb"));
}

#[test]
fn the_pending_mark_is_set_on_a_change_with_targets_and_otherwise_kept() {
    let now = ts("2026-12-05T10:00:00Z");
    assert_eq!(
        pending_mark(true, true, None, now).as_deref(),
        Some("2026-12-05T10:00:00Z")
    );
    assert_eq!(pending_mark(true, false, None, now), None, "no targets");
    // Never later than the change: a restart right after it settles it.
    assert_eq!(
        pending_mark(true, true, None, ts("2026-12-05T10:00:00.7Z")).as_deref(),
        Some("2026-12-05T10:00:00Z")
    );
    assert_eq!(pending_mark(false, true, None, now), None, "no change");
    // A restart still to be made stays marked through writes that change nothing.
    assert_eq!(
        pending_mark(false, true, Some("2026-12-05T09:59:58Z"), now).as_deref(),
        Some("2026-12-05T09:59:58Z")
    );
    // A newer change moves the mark forward.
    assert_eq!(
        pending_mark(true, true, Some("2026-12-05T09:59:58Z"), now).as_deref(),
        Some("2026-12-05T10:00:00Z")
    );
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn targets_resolve_by_name_and_selector_to_distinct_workloads() {
    let listed = BTreeMap::from([
        (
            WorkloadKind::StatefulSet,
            Ok(vec![
                ("spark-0".to_string(), labels(&[("app", "spark-client")])),
                ("spark-1".to_string(), labels(&[("app", "spark-client")])),
                ("other".to_string(), labels(&[("app", "web")])),
            ]),
        ),
        (
            WorkloadKind::DaemonSet,
            Err("listing DaemonSets failed: 403".to_string()),
        ),
    ]);
    let (w, problems) = resolve(
        &[
            by_name(WorkloadKind::Deployment, "proxy"),
            by_labels(WorkloadKind::StatefulSet, &[("app", "spark-client")]),
            by_name(WorkloadKind::StatefulSet, "spark-0"),
            by_labels(WorkloadKind::Deployment, &[("app", "none")]),
            by_labels(WorkloadKind::DaemonSet, &[("app", "x")]),
        ],
        &BTreeMap::from([
            (
                WorkloadKind::Deployment,
                Ok(vec![("proxy".to_string(), labels(&[("app", "proxy")]))]),
            ),
            listed.into_iter().next().unwrap(),
            (
                WorkloadKind::DaemonSet,
                Err("listing DaemonSets failed: 403".to_string()),
            ),
        ]),
    );
    let names: Vec<String> = w.iter().map(|(k, n)| describe(*k, n)).collect();
    assert_eq!(
        names,
        vec![
            "Deployment/proxy",
            "StatefulSet/spark-0",
            "StatefulSet/spark-1"
        ]
    );
    assert_eq!(
        problems,
        vec![
            "no Deployment matches the selector".to_string(),
            "listing DaemonSets failed: 403".to_string()
        ]
    );
}

#[test]
fn the_outcome_lists_what_was_restarted_and_why_the_rest_was_not() {
    let now = ts("2026-12-05T10:00:05Z");
    let workloads: BTreeSet<(WorkloadKind, String)> = [
        (WorkloadKind::Deployment, "proxy".to_string()),
        (WorkloadKind::Deployment, "gone".to_string()),
    ]
    .into();
    let patched = HashMap::from([
        ((WorkloadKind::Deployment, "proxy".to_string()), Ok(())),
        (
            (WorkloadKind::Deployment, "gone".to_string()),
            Err("Deployment/gone not found".to_string()),
        ),
    ]);
    let o = outcome(now, &workloads, &[], &patched);
    assert!(o.failed);
    assert_eq!(o.restart.time, now);
    assert_eq!(o.restart.targets, vec!["Deployment/proxy"]);
    assert_eq!(
        o.restart.message,
        "restarted Deployment/proxy; Deployment/gone not found"
    );
    let ok = outcome(
        now,
        &[(WorkloadKind::Deployment, "proxy".to_string())].into(),
        &[],
        &patched,
    );
    assert!(!ok.failed);
    assert_eq!(ok.restart.message, "restarted Deployment/proxy");
}
