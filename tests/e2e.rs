//! End-to-end tests against a real API server (`KUBECONFIG` must point at a disposable
//! cluster). Ignored by default; run with:
//!
//! ```sh
//! KUBECONFIG=~/.kube/test-cluster cargo test --test e2e -- --ignored --test-threads=1
//! ```
//!
//! Each test installs `crds/`, starts the operator binary built by cargo against the cluster
//! (with mock providers on loopback allowed through `--allow-endpoint`), applies resources in a
//! fresh namespace, waits for their Secrets and status, and deletes the namespace afterwards.

mod e2e_support;

use e2e_support::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;
use std::time::Duration;
use workspace_access_operator::api::{LivyToken, NotebookTokenRequest, WorkspaceView};

/// The foundation: CRDs install, the operator starts, reports every kind in its status, serves
/// its HTTP endpoints and exits cleanly on SIGTERM.
#[tokio::test]
#[ignore = "needs a Kubernetes API server in KUBECONFIG"]
async fn operator_reports_each_kind_and_stops_on_sigterm() {
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("e2e-foundation").await;
    let mut operator = Operator::start(&cluster, &[]).await;

    // A resource of each kind whose credentials Secret is missing: the operator must say so.
    cluster
        .apply_json(&ns, json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
            "metadata": {"name": "ntr"},
            "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444", "resourceGroup": "rg",
                     "workspaceName": "testworkspace",
                     "azure": {"tenantId": "00000000-0000-0000-0000-000000000000",
                               "clientId": "11111111-1111-1111-1111-111111111111",
                               "clientSecretRef": {"name": "missing", "key": "clientSecret"}}}
        }))
        .await;
    cluster
        .apply_json(
            &ns,
            json!({
                "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "LivyToken",
                "metadata": {"name": "livy"},
                "spec": {"regionId": "cn-hangzhou", "workspaceId": "w-1", "livyComputeId": "lc-1",
                         "tokenId": "lctk-1", "alibaba": {"accessKeyRef": {"name": "missing"}}}
            }),
        )
        .await;
    cluster
        .apply_json(&ns, json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
            "metadata": {"name": "wsv"},
            "spec": {"dataRobot": {"notebookIds": ["abc"], "apiTokenRef": {"name": "missing", "key": "apiToken"}}}
        }))
        .await;
    let ntr = cluster
        .wait_ready_reason::<NotebookTokenRequest>(&ns, "ntr", Duration::from_secs(30))
        .await;
    let livy = cluster
        .wait_ready_reason::<LivyToken>(&ns, "livy", Duration::from_secs(30))
        .await;
    let wsv = cluster
        .wait_ready_reason::<WorkspaceView>(&ns, "wsv", Duration::from_secs(30))
        .await;
    for (kind, (status, reason)) in [("ntr", ntr), ("livy", livy), ("wsv", wsv)] {
        assert_eq!(status, "False", "{kind}");
        assert_eq!(reason, "CredentialsNotFound", "{kind}");
    }
    // Nothing was written in place of the missing credentials.
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    assert!(secrets.get_opt("ntr").await.unwrap().is_none());

    // A resource the schema refuses never reaches the operator.
    let refused = cluster
        .try_apply_json(&ns, json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
            "metadata": {"name": "bad"},
            "spec": {"subscriptionId": "x", "resourceGroup": "rg", "workspaceName": "../x",
                     "azure": {"tenantId": "t.example.com", "clientId": "11111111-1111-1111-1111-111111111111"}}
        }))
        .await;
    assert!(
        refused.is_err(),
        "the API server accepted an invalid NotebookTokenRequest"
    );

    assert_eq!(operator.get("/healthz").await.0, 200);
    assert_eq!(operator.get("/readyz").await.0, 200);
    let (code, metrics) = operator.get("/metrics").await;
    assert_eq!(code, 200);
    assert!(metrics.contains("workspace_access_reconcile_failures_total{kind=\"WorkspaceView\",reason=\"CredentialsNotFound\"}"), "{metrics}");

    let status = operator.terminate(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "operator exit status after SIGTERM: {status:?}"
    );
    cluster.delete_namespace(&ns).await;
}
