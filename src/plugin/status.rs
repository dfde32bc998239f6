//! `kubectl workspaceaccess status [-n NS | -A] [-o table|json]`: every resource with its Ready
//! condition, when its token expires and is renewed, when it last synced and its Secret;
//! soonest expiry first.

use super::format::{Table, relative};
use super::{Connection, KINDS, KindInfo, Listed, PluginError};
use crate::api::ClusterCredential;
use crate::api::common::RENEW_REQUESTED_AT_ANNOTATION;
use jiff::Timestamp;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// One resource, as `status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRow {
    /// Kind, e.g. NotebookTokenRequest.
    pub kind: String,
    /// Namespace; absent for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Status of the Ready condition: True, False, or Unknown (not reconciled yet).
    pub ready: String,
    /// Reason of the Ready condition.
    pub reason: String,
    /// Message of the Ready condition.
    pub message: String,
    /// Whether the Ready condition describes the current spec (its observedGeneration is the
    /// resource's generation).
    pub current: bool,
    /// When the token in the Secret expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// When the operator renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<Timestamp>,
    /// When the operator last obtained data from the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Timestamp>,
    /// The Secret holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// A renew request the operator has not handled yet (the annotation's value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_requested: Option<String>,
    /// The renew request handled last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_renew_request: Option<String>,
    /// Items the inventory found (WorkspaceView).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<i64>,
    /// How many resources name it in their credentialRef (ClusterCredential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<i64>,
}

/// The row of one object.
pub fn row_of<K: Listed>(obj: &K) -> StatusRow {
    let status = obj.summary();
    let common = status.map(|s| s.common());
    let ready = common.and_then(|c| c.ready());
    let last_renew_request = common.and_then(|c| c.last_renew_request.clone());
    let renew_requested = obj
        .annotations()
        .get(RENEW_REQUESTED_AT_ANNOTATION)
        .filter(|v| Some(v.as_str()) != last_renew_request.as_deref() && !v.trim().is_empty())
        .cloned();
    StatusRow {
        kind: K::kind(&()).into_owned(),
        namespace: obj.namespace(),
        name: obj.name_any(),
        ready: ready.map_or_else(|| "Unknown".into(), |c| c.status.clone()),
        reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
        message: ready.map(|c| c.message.clone()).unwrap_or_default(),
        current: ready.is_some_and(|c| {
            c.observed_generation.is_some() && c.observed_generation == obj.meta().generation
        }),
        expires_at: status.and_then(|s| s.token_expires_at()),
        renew_at: status.and_then(|s| s.token_renew_at()),
        last_sync_time: common.and_then(|c| c.last_sync_time),
        secret_name: status.and_then(|s| s.token_secret_name().map(str::to_owned)),
        renew_requested,
        last_renew_request,
        items: status.and_then(|s| s.inventory_count()).map(|(_, n)| n),
        used_by: None,
    }
}

/// The row of a ClusterCredential: its Ready condition (Valid, or why its Secret can't be
/// used) and how many resources use it; it has no token, Secret or sync time of its own.
pub fn credential_row(obj: &ClusterCredential) -> StatusRow {
    let status = obj.status.as_ref();
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    StatusRow {
        kind: ClusterCredential::kind(&()).into_owned(),
        namespace: None,
        name: obj.name_any(),
        ready: ready.map_or_else(|| "Unknown".into(), |c| c.status.clone()),
        reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
        message: ready.map(|c| c.message.clone()).unwrap_or_default(),
        current: ready.is_some_and(|c| {
            c.observed_generation.is_some() && c.observed_generation == obj.meta().generation
        }),
        used_by: status.and_then(|s| s.used_by),
        ..StatusRow::default()
    }
}

fn kind_index(kind: &str) -> usize {
    KINDS
        .iter()
        .position(|k| k.kind == kind)
        .unwrap_or(KINDS.len())
}

/// Soonest expiry first; resources without a token after them; then by kind, namespace, name.
pub fn sort(rows: &mut [StatusRow]) {
    rows.sort_by(|a, b| {
        let expiry = match (a.expires_at, b.expires_at) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        expiry
            .then_with(|| kind_index(&a.kind).cmp(&kind_index(&b.kind)))
            .then_with(|| a.namespace.cmp(&b.namespace))
            .then_with(|| a.name.cmp(&b.name))
    });
}

/// The rows as a table; with a NAMESPACE column when they come from all namespaces.
pub fn table(rows: &[StatusRow], now: Timestamp, all_namespaces: bool) -> String {
    let mut headers = vec![
        "RESOURCE",
        "READY",
        "REASON",
        "EXPIRES IN",
        "RENEWS IN",
        "LAST SYNC",
        "SECRET",
    ];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let mut t = Table::new(&headers);
    for r in rows {
        let short = KINDS
            .iter()
            .find(|k| k.kind == r.kind)
            .map_or_else(|| r.kind.to_lowercase(), |k| k.short.to_owned());
        let ready = if r.current || r.ready == "Unknown" {
            r.ready.clone()
        } else {
            // The condition is about an older spec: the operator hasn't caught up yet.
            format!("{} (old spec)", r.ready)
        };
        let renews = match &r.renew_requested {
            Some(_) => "requested".to_owned(),
            None => relative(now, r.renew_at),
        };
        let mut cells = vec![
            format!("{short}/{}", r.name),
            ready,
            if r.reason.is_empty() {
                "-".into()
            } else {
                r.reason.clone()
            },
            relative(now, r.expires_at),
            renews,
            relative(now, r.last_sync_time),
            r.secret_name.clone().unwrap_or_else(|| "-".into()),
        ];
        if all_namespaces {
            cells.insert(0, r.namespace.clone().unwrap_or_else(|| "-".into()));
        }
        t.push(cells);
    }
    t.render()
}

/// `status -o json`: `{"items": [...]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusList {
    /// The rows, sorted.
    pub items: Vec<StatusRow>,
}

/// What `status` found: the rows, sorted, and notes about kinds it could not list.
#[derive(Clone, Debug, Default)]
pub struct Found {
    /// The resources.
    pub rows: Vec<StatusRow>,
    /// Kinds that could not be listed (not installed, not allowed), for stderr.
    pub notes: Vec<String>,
}

/// Lists every kind in `namespace` (all namespaces with `None`). A kind the cluster doesn't
/// serve, or that the user may not list, is noted and skipped, unless no kind could be listed
/// at all; an unreachable API server is an error.
pub async fn collect(conn: &Connection, namespace: Option<&str>) -> Result<Found, PluginError> {
    let mut found = Found::default();
    let mut listed = 0;
    let mut first_error = None;
    let kinds: Vec<&KindInfo> = KINDS
        .iter()
        .filter(|k| k.namespaced || namespace.is_none())
        .collect();
    for kind in &kinds {
        match (kind.list)(&conn.client, namespace).await {
            Ok(rows) => {
                listed += 1;
                found.rows.extend(rows);
            }
            Err(e) => {
                let err = conn.error(e, kind, None, namespace.unwrap_or_default());
                match err {
                    PluginError::NotServed { .. } | PluginError::Forbidden(_) => {
                        found.notes.push(format!("{}: {err}", kind.kind));
                        first_error.get_or_insert(err);
                    }
                    other => return Err(other),
                }
            }
        }
    }
    if listed == 0
        && let Some(err) = first_error
    {
        return Err(err);
    }
    sort(&mut found.rows);
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LivyToken, NotebookTokenRequest, WorkspaceView};
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-11-23T10:00:00Z".parse().unwrap()
    }

    fn ready(status: &str, reason: &str, generation: i64) -> serde_json::Value {
        json!([{"type": "Ready", "status": status, "reason": reason, "message": "m",
                "observedGeneration": generation, "lastTransitionTime": "2026-11-23T09:00:00Z"}])
    }

    /// A fixed set of resources: tokens expiring at different times, one failing, one never
    /// reconciled, one with a pending renew request, one whose spec changed since, a view.
    pub(crate) fn fixtures() -> Vec<StatusRow> {
        let ntr: NotebookTokenRequest = serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
            "metadata": {"name": "ml", "namespace": "team-a", "generation": 2},
            "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444", "resourceGroup": "rg",
                     "workspaceName": "ws", "azure": {"tenantId": "t", "clientId": "c",
                     "clientSecretRef": {"name": "sp", "key": "k"}}},
            "status": {"expiresAt": "2026-11-23T10:47:00Z", "renewAt": "2026-11-23T10:41:00Z",
                       "secretName": "ml-token", "lastSyncTime": "2026-11-23T09:47:00Z",
                       "observedGeneration": 2, "conditions": ready("True", "Synced", 2)}
        }))
        .unwrap();
        let overdue: NotebookTokenRequest = serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
            "metadata": {"name": "overdue", "namespace": "team-a", "generation": 1,
                         "annotations": {"workspaceaccess.io/renew-requested-at": "2026-11-23T09:59:00Z"}},
            "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444", "resourceGroup": "rg",
                     "workspaceName": "ws", "azure": {"tenantId": "t", "clientId": "c",
                     "clientSecretRef": {"name": "sp", "key": "k"}}},
            "status": {"expiresAt": "2026-11-23T10:04:00Z", "renewAt": "2026-11-23T09:58:00Z",
                       "secretName": "overdue", "lastSyncTime": "2026-11-23T09:04:00Z",
                       "observedGeneration": 1, "conditions": ready("False", "AuthenticationFailed", 1)}
        }))
        .unwrap();
        let new: NotebookTokenRequest = serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
            "metadata": {"name": "new", "namespace": "team-a", "generation": 1},
            "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444", "resourceGroup": "rg",
                     "workspaceName": "ws", "azure": {"tenantId": "t", "clientId": "c",
                     "clientSecretRef": {"name": "sp", "key": "k"}}}
        }))
        .unwrap();
        let livy: LivyToken = serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "LivyToken",
            "metadata": {"name": "spark", "namespace": "team-b", "generation": 3},
            "spec": {"regionId": "cn-hangzhou", "workspaceId": "w-1", "livyComputeId": "lc-1",
                     "managed": {"expireDays": 7}, "alibaba": {"rrsa": true}},
            "status": {"tokenId": "lctk-1", "expiresAt": "2026-11-30T08:00:00Z",
                       "renewAt": "2026-11-29T15:12:00Z", "secretName": "spark",
                       "lastSyncTime": "2026-11-23T08:00:00Z", "lastRenewRequest": "x",
                       "observedGeneration": 2, "conditions": ready("True", "Synced", 2)}
        }))
        .unwrap();
        let wsv: WorkspaceView = serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
            "metadata": {"name": "fabric-all", "namespace": "platform", "generation": 1},
            "spec": {"fabric": {"azure": {"tenantId": "t", "clientId": "c",
                     "clientSecretRef": {"name": "sp", "key": "k"}}}},
            "status": {"provider": "Fabric", "count": 3, "lastSyncTime": "2026-11-23T09:45:00Z",
                       "nextSyncTime": "2026-11-23T10:00:00Z",
                       "observedGeneration": 1, "conditions": ready("True", "Synced", 1)}
        }))
        .unwrap();
        let mut rows = vec![
            row_of(&wsv),
            row_of(&livy),
            row_of(&new),
            row_of(&ntr),
            row_of(&overdue),
        ];
        sort(&mut rows);
        rows
    }

    #[test]
    fn the_table_shows_the_soonest_expiry_first() {
        let rows = fixtures();
        assert_eq!(
            table(&rows, now(), true),
            "\
NAMESPACE   RESOURCE          READY             REASON                 EXPIRES IN   RENEWS IN   LAST SYNC   SECRET
team-a      ntr/overdue       False             AuthenticationFailed   4m           requested   56m ago     overdue
team-a      ntr/ml            True              Synced                 47m          41m         13m ago     ml-token
team-b      livytoken/spark   True (old spec)   Synced                 6d22h        6d5h        120m ago    spark
team-a      ntr/new           Unknown           -                      -            -           -           -
platform    wsv/fabric-all    True              Synced                 -            -           15m ago     -
"
        );
        assert_eq!(
            table(&rows[1..2], now(), false),
            "\
RESOURCE   READY   REASON   EXPIRES IN   RENEWS IN   LAST SYNC   SECRET
ntr/ml     True    Synced   47m          41m         13m ago     ml-token
"
        );
    }

    #[test]
    fn json_has_the_facts_behind_the_table() {
        let rows = fixtures();
        let text = serde_json::to_string(&StatusList {
            items: rows.clone(),
        })
        .unwrap();
        let back: StatusList = serde_json::from_str(&text).unwrap();
        assert_eq!(back.items, rows);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let first = &v["items"][0];
        assert_eq!(first["kind"], "NotebookTokenRequest");
        assert_eq!(first["namespace"], "team-a");
        assert_eq!(first["name"], "overdue");
        assert_eq!(first["ready"], "False");
        assert_eq!(first["reason"], "AuthenticationFailed");
        assert_eq!(first["expiresAt"], "2026-11-23T10:04:00Z");
        assert_eq!(first["renewAt"], "2026-11-23T09:58:00Z");
        assert_eq!(first["renewRequested"], "2026-11-23T09:59:00Z");
        assert_eq!(v["items"][2]["lastRenewRequest"], "x");
        assert_eq!(v["items"][2]["current"], false);
        assert_eq!(v["items"][4]["items"], 3);
        assert!(v["items"][4].get("expiresAt").is_none());
    }

    #[test]
    fn a_cluster_credential_shows_its_state_and_users_without_a_namespace() {
        let cc: ClusterCredential = serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "ClusterCredential",
            "metadata": {"name": "azure-ml-prod", "generation": 2},
            "spec": {"dataRobot": {"apiTokenRef": {"name": "dr", "key": "apiToken"}}},
            "status": {"provider": "DataRobot", "usedBy": 3, "observedGeneration": 2,
                       "conditions": ready("False", "CredentialsNotFound", 2)}
        }))
        .unwrap();
        let row = credential_row(&cc);
        assert_eq!(
            (row.kind.as_str(), row.namespace.as_deref(), row.used_by),
            ("ClusterCredential", None, Some(3))
        );
        assert!(row.current);
        let mut rows = fixtures();
        rows.push(row);
        sort(&mut rows);
        let text = table(&rows, now(), true);
        assert!(
            text.lines().last().unwrap().starts_with(
                "-           ccred/azure-ml-prod   False             CredentialsNotFound    -"
            ),
            "{text}"
        );
        let never = credential_row(&ClusterCredential::new("new", cc.spec.clone()));
        assert_eq!(
            (never.ready.as_str(), never.reason.as_str()),
            ("Unknown", "")
        );
    }
}
