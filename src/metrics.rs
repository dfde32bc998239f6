//! Prometheus metrics. Counters and histograms carry kinds, reasons, providers, operations and
//! HTTP statuses only. The per-resource gauges ([`ResourceGauges`]: token expiry and renewal,
//! Ready status, inventory size) and the per-resource counter of a WorkspaceView's access
//! changes also carry the resource's namespace and name, and nothing else: never a value from a
//! Secret or a provider's answer. They exist while the resource does and while this replica
//! runs the controllers.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// Labels of the per-resource gauges, also the key of a resource's gauges. The values are
/// shared: every series of one resource points at the same three strings instead of holding
/// copies (at 50,000 resources with five series each, the copies were about 30 MB).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// Resource kind.
    pub kind: Arc<str>,
    /// The resource's namespace.
    pub namespace: Arc<str>,
    /// The resource's name.
    pub name: Arc<str>,
}

/// Labels of the Ready-status gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    /// Resource kind.
    pub kind: Arc<str>,
    /// The resource's namespace.
    pub namespace: Arc<str>,
    /// The resource's name.
    pub name: Arc<str>,
    /// A status of the Ready condition: True, False or Unknown.
    pub condition: &'static str,
}

/// Labels of the inventory-size gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InventoryLabels {
    /// The WorkspaceView's namespace.
    pub namespace: Arc<str>,
    /// The WorkspaceView's name.
    pub name: Arc<str>,
    /// Fabric or DataRobot.
    pub provider: String,
}

/// Labels of the count of resources by Ready status and reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadinessLabels {
    /// Resource kind.
    pub kind: String,
    /// Status of the Ready condition: True, False or Unknown.
    pub condition: String,
    /// Reason of the Ready condition, e.g. Synced, Throttled.
    pub reason: String,
}

/// Labels of provider-call durations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderOperationLabels {
    /// Provider label.
    pub provider: String,
    /// Operation, e.g. listNotebookAccessToken.
    pub operation: String,
}

/// The statuses of a Ready condition, each a series of the Ready-status gauge.
pub const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

/// What the per-resource gauges of one resource show, from its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceGauges {
    /// When the token in its Secret expires (Unix seconds).
    pub expires_at: Option<i64>,
    /// When the operator renews that token (Unix seconds).
    pub renew_at: Option<i64>,
    /// Status (True, False or Unknown) and reason of its Ready condition.
    pub ready: Option<(String, String)>,
    /// Provider and number of items of its inventory (WorkspaceView).
    pub inventory: Option<(String, i64)>,
}

/// (kind, namespace, name) of a resource with gauges.
type ResourceKey = ResourceLabels;

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

/// Kind whose resources have access-change counters.
const WORKSPACE_VIEW: &str = "WorkspaceView";

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
    /// Duration of provider calls, until the response's headers.
    pub provider_duration: Family<ProviderOperationLabels, Histogram>,
    /// Expiry of the token in each resource's Secret.
    pub token_expiration: Family<ResourceLabels, Gauge>,
    /// When each resource's token is renewed.
    pub token_renewal: Family<ResourceLabels, Gauge>,
    /// 1 for the current status of each resource's Ready condition, 0 for the others.
    pub ready_status: Family<ReadyLabels, Gauge>,
    /// Items of each WorkspaceView's inventory.
    pub inventory_items: Family<InventoryLabels, Gauge>,
    /// Resources by kind and Ready status and reason.
    pub readiness: Family<ReadinessLabels, Gauge>,
    /// The gauges set for each resource, to remove exactly those.
    resources: Mutex<HashMap<ResourceKey, ResourceGauges>>,
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
        let provider_duration =
            Family::<ProviderOperationLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            });
        let token_expiration = Family::<ResourceLabels, Gauge>::default();
        let token_renewal = Family::<ResourceLabels, Gauge>::default();
        let ready_status = Family::<ReadyLabels, Gauge>::default();
        let inventory_items = Family::<InventoryLabels, Gauge>::default();
        let readiness = Family::<ReadinessLabels, Gauge>::default();
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
            "Provider calls delayed by the operator's rate limits (per host and credential, host caps)",
            rate_limited.clone(),
        );
        registry.register(
            "provider_request_duration_seconds",
            "Duration of provider calls until the response's headers, by provider and operation",
            provider_duration.clone(),
        );
        registry.register(
            "token_expiration_timestamp_seconds",
            "Expiry of the token in the resource's Secret, as a Unix time",
            token_expiration.clone(),
        );
        registry.register(
            "token_renewal_timestamp_seconds",
            "When the operator renews the resource's token, as a Unix time",
            token_renewal.clone(),
        );
        registry.register(
            "resource_ready_status",
            "1 for the current status (True, False, Unknown) of the resource's Ready condition, 0 for the others",
            ready_status.clone(),
        );
        registry.register(
            "inventory_items",
            "Items a WorkspaceView's inventory found (status.count)",
            inventory_items.clone(),
        );
        registry.register(
            "resources",
            "Resources by kind and by status and reason of their Ready condition",
            readiness.clone(),
        );
        let inventory_changes = Family::<InventoryChangeLabels, Counter>::default();
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
            provider_duration,
            token_expiration,
            token_renewal,
            ready_status,
            inventory_items,
            readiness,
            resources: Mutex::default(),
            inventory_changes,
        }
    }

    /// Records how long a provider call took.
    pub fn provider_call_took(&self, provider: &str, operation: &str, took: Duration) {
        self.provider_duration
            .get_or_create(&ProviderOperationLabels {
                provider: provider.into(),
                operation: operation.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Sets the gauges of one resource to `gauges`, removing its series that `gauges` no
    /// longer has (e.g. a token without expiry, another inventory provider).
    pub fn observe_resource(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        gauges: ResourceGauges,
    ) {
        let key = resource_key(kind, namespace, name);
        let mut resources = lock(&self.resources);
        // A resource seen before keeps the strings its series already share.
        let (key, previous) = match resources.get_key_value(&key) {
            Some((_, previous)) if *previous == gauges => return,
            Some((known, previous)) => (known.clone(), previous.clone()),
            None => (key, ResourceGauges::default()),
        };
        self.unset(&key, &previous, &gauges);
        let labels = key.clone();
        if let Some(t) = gauges.expires_at {
            self.token_expiration.get_or_create(&labels).set(t);
        }
        if let Some(t) = gauges.renew_at {
            self.token_renewal.get_or_create(&labels).set(t);
        }
        if let Some((status, reason)) = &gauges.ready {
            for condition in CONDITION_STATUSES {
                self.ready_status
                    .get_or_create(&ready_labels(&key, condition))
                    .set(i64::from(condition == status));
            }
            if previous.ready.as_ref() != Some(&(status.clone(), reason.clone())) {
                self.readiness
                    .get_or_create(&readiness_labels(kind, status, reason))
                    .inc();
            }
        }
        if let Some((provider, count)) = &gauges.inventory {
            self.inventory_items
                .get_or_create(&inventory_labels(&key, provider))
                .set(*count);
        }
        resources.insert(key, gauges);
    }

    /// Removes the series of `previous` that `next` doesn't have, and counts `previous`'s
    /// Ready status out if it differs.
    fn unset(&self, key: &ResourceKey, previous: &ResourceGauges, next: &ResourceGauges) {
        if previous.expires_at.is_some() && next.expires_at.is_none() {
            self.token_expiration.remove(key);
        }
        if previous.renew_at.is_some() && next.renew_at.is_none() {
            self.token_renewal.remove(key);
        }
        if let Some((status, reason)) = &previous.ready {
            if next.ready.is_none() {
                for condition in CONDITION_STATUSES {
                    self.ready_status.remove(&ready_labels(key, condition));
                }
            }
            if next.ready.as_ref() != previous.ready.as_ref() {
                let labels = readiness_labels(&key.kind, status, reason);
                let left = self.readiness.get_or_create(&labels).dec() - 1;
                if left <= 0 {
                    self.readiness.remove(&labels);
                }
            }
        }
        if let Some((provider, _)) = &previous.inventory
            && next.inventory.as_ref().map(|(p, _)| p) != Some(provider)
        {
            self.inventory_items
                .remove(&inventory_labels(key, provider));
        }
    }

    /// Removes every gauge of one resource (it was deleted).
    pub fn forget_resource(&self, kind: &str, namespace: &str, name: &str) {
        let key = resource_key(kind, namespace, name);
        let mut resources = lock(&self.resources);
        if let Some(previous) = resources.remove(&key) {
            self.unset(&key, &previous, &ResourceGauges::default());
        }
        if kind == WORKSPACE_VIEW {
            self.forget_inventory_changes(namespace, name);
        }
    }

    /// Removes the gauges of the resources of `kind` for which `keep(namespace, name)` is
    /// false (after a relist: they were deleted while the watch was down).
    pub fn retain_resources(&self, kind: &str, keep: impl Fn(&str, &str) -> bool) {
        let mut resources = lock(&self.resources);
        let gone: Vec<ResourceKey> = resources
            .keys()
            .filter(|k| &*k.kind == kind && !keep(&k.namespace, &k.name))
            .cloned()
            .collect();
        for key in gone {
            if let Some(previous) = resources.remove(&key) {
                self.unset(&key, &previous, &ResourceGauges::default());
            }
            // Every view with changes counted has gauges (they are set on every status write).
            if kind == WORKSPACE_VIEW {
                self.forget_inventory_changes(&key.namespace, &key.name);
            }
        }
    }

    /// Removes every per-resource gauge (this replica stopped running the controllers).
    pub fn clear_resources(&self) {
        let mut resources = lock(&self.resources);
        resources.clear();
        self.token_expiration.clear();
        self.token_renewal.clear();
        self.ready_status.clear();
        self.inventory_items.clear();
        self.readiness.clear();
        self.inventory_changes.clear();
    }

    /// Adds a WorkspaceView's access changes: `counts` by `change` label (see
    /// [`INVENTORY_CHANGES`]). All three labels get their series with the view's first change,
    /// also at zero, so that a rate over a later first change of another kind is right.
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

    /// Drops a WorkspaceView's access-change series (it was deleted).
    pub fn forget_inventory_changes(&self, namespace: &str, name: &str) {
        for change in INVENTORY_CHANGES {
            self.inventory_changes.remove(&InventoryChangeLabels {
                namespace: namespace.into(),
                name: name.into(),
                change: change.into(),
            });
        }
    }

    /// Number of resources with gauges.
    pub fn resources_observed(&self) -> usize {
        lock(&self.resources).len()
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn resource_key(kind: &str, namespace: &str, name: &str) -> ResourceKey {
    ResourceLabels {
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn ready_labels(key: &ResourceKey, condition: &'static str) -> ReadyLabels {
    ReadyLabels {
        kind: key.kind.clone(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        condition,
    }
}

fn readiness_labels(kind: &str, condition: &str, reason: &str) -> ReadinessLabels {
    ReadinessLabels {
        kind: kind.into(),
        condition: condition.into(),
        reason: reason.into(),
    }
}

fn inventory_labels(key: &ResourceKey, provider: &str) -> InventoryLabels {
    InventoryLabels {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        provider: provider.into(),
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

    fn gauges(
        expires: Option<i64>,
        ready: (&str, &str),
        inventory: Option<(&str, i64)>,
    ) -> ResourceGauges {
        ResourceGauges {
            expires_at: expires,
            renew_at: expires.map(|e| e - 60),
            ready: Some((ready.0.into(), ready.1.into())),
            inventory: inventory.map(|(p, n)| (p.into(), n)),
        }
    }

    #[test]
    fn resource_gauges_are_set_replaced_and_removed() {
        let m = Metrics::new();
        m.observe_resource(
            "NotebookTokenRequest",
            "ns",
            "a",
            gauges(Some(100), ("True", "Synced"), None),
        );
        m.observe_resource(
            "NotebookTokenRequest",
            "ns",
            "b",
            gauges(Some(200), ("True", "Synced"), None),
        );
        m.observe_resource(
            "WorkspaceView",
            "ns",
            "v",
            gauges(None, ("True", "Synced"), Some(("Fabric", 7))),
        );
        let text = m.encode();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with(needle))
                .map(str::to_owned)
        };
        assert_eq!(
            line(r#"workspace_access_token_expiration_timestamp_seconds{kind="NotebookTokenRequest",namespace="ns",name="a"}"#)
                .unwrap().rsplit(' ').next(),
            Some("100")
        );
        assert!(line(r#"workspace_access_token_renewal_timestamp_seconds{kind="NotebookTokenRequest",namespace="ns",name="b"} 140"#).is_some());
        assert!(line(r#"workspace_access_resource_ready_status{kind="WorkspaceView",namespace="ns",name="v",condition="Unknown"} 0"#).is_some());
        assert!(
            line(
                r#"workspace_access_inventory_items{namespace="ns",name="v",provider="Fabric"} 7"#
            )
            .is_some()
        );
        assert!(line(r#"workspace_access_resources{kind="NotebookTokenRequest",condition="True",reason="Synced"} 2"#).is_some());

        // A failure: the token stays, Ready flips, the counts move.
        m.observe_resource(
            "NotebookTokenRequest",
            "ns",
            "a",
            gauges(Some(100), ("False", "Throttled"), None),
        );
        // Another provider, and no token any more.
        m.observe_resource(
            "WorkspaceView",
            "ns",
            "v",
            gauges(None, ("True", "Synced"), Some(("DataRobot", 3))),
        );
        m.observe_resource(
            "NotebookTokenRequest",
            "ns",
            "b",
            gauges(None, ("True", "Synced"), None),
        );
        let text = m.encode();
        assert!(text.contains(r#"workspace_access_resource_ready_status{kind="NotebookTokenRequest",namespace="ns",name="a",condition="False"} 1"#));
        assert!(text.contains(r#"workspace_access_resources{kind="NotebookTokenRequest",condition="True",reason="Synced"} 1"#));
        assert!(text.contains(r#"workspace_access_resources{kind="NotebookTokenRequest",condition="False",reason="Throttled"} 1"#));
        assert!(!text.contains(r#"provider="Fabric""#), "{text}");
        assert!(text.contains(
            r#"workspace_access_inventory_items{namespace="ns",name="v",provider="DataRobot"} 3"#
        ));
        assert!(
            !text.contains(
                r#"timestamp_seconds{kind="NotebookTokenRequest",namespace="ns",name="b"}"#
            ),
            "{text}"
        );

        m.forget_resource("NotebookTokenRequest", "ns", "a");
        let text = m.encode();
        assert!(!text.contains(r#"name="a""#), "{text}");
        assert!(
            !text.contains(r#"reason="Throttled""#),
            "a count at zero goes: {text}"
        );
        m.retain_resources("WorkspaceView", |_, name| name != "v");
        assert!(!m.encode().contains(r#"name="v""#));
        assert_eq!(m.resources_observed(), 1);
        m.clear_resources();
        let text = m.encode();
        assert!(!text.contains("namespace=\"ns\""), "{text}");
        assert_eq!(m.resources_observed(), 0);
    }

    #[test]
    fn inventory_changes_are_counted_per_view_and_go_with_it() {
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
        // Deleted: its series go, the others stay; a NotebookTokenRequest of that name is
        // another resource.
        m.forget_resource("NotebookTokenRequest", "platform", "fabric");
        assert!(m.encode().contains(r#"name="fabric",change="granted"} 3"#));
        m.forget_resource("WorkspaceView", "platform", "fabric");
        let text = m.encode();
        assert!(!text.contains(r#"name="fabric""#), "{text}");
        assert!(text.contains(r#"name="other""#), "{text}");
        // Deleted while the watch was down (it had gauges, as every synced view has).
        m.observe_resource(
            "WorkspaceView",
            "platform",
            "other",
            ResourceGauges {
                inventory: Some(("Fabric".into(), 1)),
                ..Default::default()
            },
        );
        m.retain_resources("WorkspaceView", |_, name| name != "other");
        assert!(
            !m.encode()
                .contains("workspace_access_inventory_changes_total{")
        );
        // The replica stops leading: all of them go.
        m.inventory_changes("platform", "again", &[("revoked", 1)]);
        m.clear_resources();
        assert!(
            !m.encode()
                .contains("workspace_access_inventory_changes_total{")
        );
    }
}
