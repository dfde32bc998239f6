//! Prometheus metrics. Labels carry kinds, reasons, providers, operations and HTTP statuses,
//! and, for series about one resource (a WorkspaceView's access changes), its namespace and
//! name: never any value from a Secret.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::time::Duration;

/// Labels of per-kind metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Resource kind.
    pub kind: String,
}

/// Labels of failure metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// Resource kind.
    pub kind: String,
    /// Condition reason.
    pub reason: String,
}

/// Labels of provider-call metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderCallLabels {
    /// Provider, e.g. azure_ml, entra, fabric, datarobot, emr_spark, sts.
    pub provider: String,
    /// Operation, e.g. listNotebookAccessToken.
    pub operation: String,
    /// HTTP status code, or timeout / connect / error when there was no response.
    pub status: String,
}

/// Labels of API-server write metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// Resource kind of the owner.
    pub kind: String,
    /// secret, status, event or finalizer.
    pub target: String,
}

/// Labels of a WorkspaceView's access-change counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InventoryChangeLabels {
    /// Namespace of the WorkspaceView.
    pub namespace: String,
    /// Name of the WorkspaceView.
    pub name: String,
    /// granted, revoked or role_changed.
    pub change: String,
}

/// The `change` label values of `workspace_access_inventory_changes_total`.
pub const INVENTORY_CHANGES: [&str; 3] = ["granted", "revoked", "role_changed"];

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    /// Reconciliations started.
    pub reconciles: Family<KindLabels, Counter>,
    /// Reconciliations that ended with the resource not Ready, by reason.
    pub failures: Family<FailureLabels, Counter>,
    /// Duration of reconciliations.
    pub reconcile_duration: Family<KindLabels, Histogram>,
    /// Calls to provider APIs.
    pub provider_calls: Family<ProviderCallLabels, Counter>,
    /// Writes to the API server.
    pub writes: Family<WriteLabels, Counter>,
    /// 1 while this replica is the leader (or leader election is off), else 0.
    pub leader: Gauge,
    /// Provider calls delayed by the operator's own rate limit.
    pub rate_limited: Family<ProviderLabels, Counter>,
    /// Access changes a WorkspaceView's syncs found, by kind.
    pub inventory_changes: Family<InventoryChangeLabels, Counter>,
}

/// Labels of per-provider metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    /// Provider label.
    pub provider: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("workspace_access");
        let reconciles = Family::<KindLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let provider_calls = Family::<ProviderCallLabels, Counter>::default();
        let writes = Family::<WriteLabels, Counter>::default();
        let leader = Gauge::default();
        let rate_limited = Family::<ProviderLabels, Counter>::default();
        let inventory_changes = Family::<InventoryChangeLabels, Counter>::default();
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciliations that left the resource not Ready, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciliations",
            reconcile_duration.clone(),
        );
        registry.register(
            "provider_calls",
            "Calls to provider APIs by provider, operation and HTTP status",
            provider_calls.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API server by owner kind and target",
            writes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica runs the controllers",
            leader.clone(),
        );
        registry.register(
            "provider_rate_limited",
            "Provider calls delayed by the operator's per-host rate limit",
            rate_limited.clone(),
        );
        registry.register(
            "inventory_changes",
            "Access changes (granted, revoked, role_changed) a WorkspaceView's syncs found",
            inventory_changes.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            reconcile_duration,
            provider_calls,
            writes,
            leader,
            rate_limited,
            inventory_changes,
        }
    }

    /// Counts a reconciliation start.
    pub fn reconcile_started(&self, kind: &str) {
        self.reconciles
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// Records a reconciliation's duration.
    pub fn reconcile_finished(&self, kind: &str, took: Duration) {
        self.reconcile_duration
            .get_or_create(&KindLabels { kind: kind.into() })
            .observe(took.as_secs_f64());
    }

    /// Counts a failure by reason.
    pub fn failure(&self, kind: &str, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a provider call.
    pub fn provider_call(&self, provider: &str, operation: &str, status: &str) {
        self.provider_calls
            .get_or_create(&ProviderCallLabels {
                provider: provider.into(),
                operation: operation.into(),
                status: status.into(),
            })
            .inc();
    }

    /// Number of provider calls recorded for `provider` / `operation`, all statuses.
    pub fn provider_call_count(&self, provider: &str, operation: &str) -> u64 {
        // Families can't be iterated without encoding; keep it exact by encoding.
        let text = self.encode();
        let needle_p = format!("provider=\"{provider}\"");
        let needle_o = format!("operation=\"{operation}\"");
        text.lines()
            .filter(|l| {
                l.starts_with("workspace_access_provider_calls_total{")
                    && l.contains(&needle_p)
                    && l.contains(&needle_o)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Counts a provider call delayed by the rate limit.
    pub fn rate_limited(&self, provider: &str) {
        self.rate_limited
            .get_or_create(&ProviderLabels {
                provider: provider.into(),
            })
            .inc();
    }

    /// Adds a WorkspaceView's access changes: `counts` by `change` label (see
    /// [`INVENTORY_CHANGES`]). Every label gets its series, also at zero, so that a rate over
    /// the first change is right.
    pub fn inventory_changes(&self, namespace: &str, name: &str, counts: &[(&str, u64)]) {
        for change in INVENTORY_CHANGES {
            let n = counts
                .iter()
                .filter(|(c, _)| *c == change)
                .map(|(_, n)| *n)
                .sum();
            self.inventory_changes
                .get_or_create(&InventoryChangeLabels {
                    namespace: namespace.into(),
                    name: name.into(),
                    change: change.into(),
                })
                .inc_by(n);
        }
    }

    /// Drops a deleted WorkspaceView's access-change series.
    pub fn forget_inventory_changes(&self, namespace: &str, name: &str) {
        for change in INVENTORY_CHANGES {
            self.inventory_changes.remove(&InventoryChangeLabels {
                namespace: namespace.into(),
                name: name.into(),
                change: change.into(),
            });
        }
    }

    /// Counts an API-server write.
    pub fn write(&self, kind: &str, target: &str) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.into(),
                target: target.into(),
            })
            .inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String can't fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_labels() {
        let m = Metrics::new();
        m.reconcile_started("LivyToken");
        m.failure("LivyToken", "Throttled");
        m.provider_call("emr_spark", "GetLivyComputeToken", "200");
        m.provider_call("emr_spark", "GetLivyComputeToken", "429");
        m.provider_call("emr_spark", "ListLivyComputeToken", "200");
        m.write("LivyToken", "secret");
        m.reconcile_finished("LivyToken", Duration::from_millis(20));
        let text = m.encode();
        assert!(
            text.contains(r#"workspace_access_reconciles_total{kind="LivyToken"} 1"#),
            "{text}"
        );
        assert!(text.contains(
            r#"workspace_access_reconcile_failures_total{kind="LivyToken",reason="Throttled"} 1"#
        ));
        assert!(
            text.contains(
                "workspace_access_reconcile_duration_seconds_count{kind=\"LivyToken\"} 1"
            )
        );
        assert_eq!(m.provider_call_count("emr_spark", "GetLivyComputeToken"), 2);
        assert_eq!(
            m.provider_call_count("emr_spark", "ListLivyComputeToken"),
            1
        );
        assert_eq!(m.provider_call_count("fabric", "ListWorkspaces"), 0);
    }

    #[test]
    fn inventory_changes_are_counted_per_view_and_forgotten() {
        let m = Metrics::new();
        m.inventory_changes("platform", "fabric", &[("granted", 2), ("revoked", 1)]);
        m.inventory_changes("platform", "fabric", &[("granted", 1)]);
        m.inventory_changes("platform", "other", &[]);
        let text = m.encode();
        for line in [
            r#"workspace_access_inventory_changes_total{namespace="platform",name="fabric",change="granted"} 3"#,
            r#"workspace_access_inventory_changes_total{namespace="platform",name="fabric",change="revoked"} 1"#,
            r#"workspace_access_inventory_changes_total{namespace="platform",name="fabric",change="role_changed"} 0"#,
            r#"workspace_access_inventory_changes_total{namespace="platform",name="other",change="granted"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        m.forget_inventory_changes("platform", "fabric");
        let text = m.encode();
        assert!(!text.contains(r#"name="fabric""#), "{text}");
        assert!(text.contains(r#"name="other""#), "{text}");
    }
}
