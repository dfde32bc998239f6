//! End-to-end tests against a real API server (`KUBECONFIG` must point at a disposable
//! cluster). Ignored by default; run with:
//!
//! ```sh
//! KUBECONFIG=~/.kube/test-cluster cargo test --test e2e -- --ignored
//! ```
//!
//! Each test installs `crds/`, starts the operator binary built by cargo against the cluster
//! (with mock providers on loopback allowed through `--allow-endpoint`), applies resources in a
//! fresh namespace, waits for their Secrets and status, and deletes the namespace afterwards.

// A test crate: its helpers unwrap and panic like its tests do (the lint allows that only
// inside #[test] functions and #[cfg(test)] modules, which helpers of a test crate are not).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod chaos_support;
mod e2e_support;

use e2e_support::*;
use httpmock::prelude::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;
use std::time::{Duration, Instant};
use workspace_access_operator::api::{LivyToken, NotebookTokenRequest, WorkspaceView};

/// The foundation: CRDs install, the operator starts, reports every kind in its status, serves
/// its HTTP endpoints and exits cleanly on SIGTERM.
#[tokio::test]
#[ignore = "needs a Kubernetes API server in KUBECONFIG"]
async fn operator_reports_each_kind_and_stops_on_sigterm() {
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("e2e-foundation").await;
    let mut operator = Operator::start(&cluster, &ns, &[]).await;

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

    // LivyTokens carry a finalizer: delete them while the operator runs.
    cluster
        .delete_and_wait::<LivyToken>(&ns, "livy", Duration::from_secs(30))
        .await;
    let status = operator.terminate(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "operator exit status after SIGTERM: {status:?}"
    );
    cluster.delete_namespace(&ns).await;
}

/// LivyToken against a fake EMR Serverless Spark endpoint that verifies every signature: a
/// referenced token follows outside changes; a managed token rotates several times with no
/// gap (the Secret's token always exists at the provider) and no duplicates, and deleting the
/// resource deletes it at the provider.
#[tokio::test]
#[ignore = "needs a Kubernetes API server in KUBECONFIG"]
async fn livy_tokens_rotate_without_gaps_against_a_signature_checking_endpoint() {
    use e2e_support::fake_emr::FakeEmr;
    use std::collections::BTreeSet;
    use std::time::Instant;

    const WS: &str = "w-8adde60aa809701f";
    const LC: &str = "lc-6mkvn01zrg8rqhhv";
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("e2e-livy").await;
    let emr = FakeEmr::start(
        "LTAI5tE2eKey",
        "e2e-access-key-secret",
        std::sync::Arc::new(jiff::Timestamp::now),
    )
    .await;
    // One expireDays day lasts 20 s: a managed token lives 20 s and is renewed 6 s before.
    emr.set_day_length(Duration::from_secs(20));
    emr.add_token(
        WS,
        LC,
        "lctk-ref",
        "shared",
        "reference-content-1",
        Duration::from_secs(3600),
    );
    let mut operator = Operator::start(&cluster, &ns, &["--allow-endpoint", &emr.host_port]).await;

    cluster
        .apply_json(&ns, json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ali-ak"},
            "stringData": {"accessKeyId": "LTAI5tE2eKey", "accessKeySecret": "e2e-access-key-secret"}
        }))
        .await;
    let spec = |mode: serde_json::Value| {
        let mut s = json!({
            "regionId": "cn-hangzhou", "workspaceId": WS, "livyComputeId": LC,
            "endpoint": emr.base_url, "alibaba": {"accessKeyRef": {"name": "ali-ak"}},
        });
        for (k, v) in mode.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    };
    cluster
        .apply_json(
            &ns,
            json!({
                "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "LivyToken",
                "metadata": {"name": "reference"},
                "spec": spec(json!({"tokenId": "lctk-ref", "refreshInterval": "2s"}))
            }),
        )
        .await;
    cluster
        .apply_json(&ns, json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "LivyToken",
            "metadata": {"name": "managed"},
            "spec": spec(json!({"managed": {"expireDays": 1, "gracePeriod": "3s"}, "renewBefore": "6s"}))
        }))
        .await;
    for name in ["reference", "managed"] {
        let (ready, reason) = cluster
            .wait_ready_reason::<LivyToken>(&ns, name, Duration::from_secs(30))
            .await;
        assert_eq!(
            (ready.as_str(), reason.as_str()),
            ("True", "Synced"),
            "{name}"
        );
    }
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    let value = |s: &Secret, k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|b| String::from_utf8(b.0.clone()).unwrap())
    };

    // Reference mode: a change made outside reaches the Secret within the refresh interval.
    let s = secrets.get("reference").await.unwrap();
    assert_eq!(value(&s, "token").as_deref(), Some("reference-content-1"));
    emr.update_token("lctk-ref", |t| t.token = "reference-content-2".into());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = secrets.get("reference").await.unwrap();
        if value(&s, "token").as_deref() == Some("reference-content-2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outside change never reached the Secret"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Managed mode: watch the Secret across several rotations.
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "only {} tokens seen: {seen:?}",
            seen.len()
        );
        let s = secrets.get("managed").await.unwrap();
        let id = value(&s, "tokenId").unwrap();
        let held = emr.token(&id).unwrap_or_else(|| {
            panic!("gap: the Secret holds {id}, which the provider no longer has")
        });
        assert_eq!(value(&s, "token").unwrap(), held.token);
        assert!(
            held.expire_time.unwrap() > jiff::Timestamp::now(),
            "the Secret holds an expired token"
        );
        let managed_tokens = emr
            .tokens()
            .into_iter()
            .filter(|t| t.token_id != "lctk-ref")
            .count();
        assert!(
            managed_tokens <= 2,
            "{managed_tokens} managed tokens at once: {:?}",
            emr.tokens()
        );
        seen.insert(id);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let names: Vec<String> = emr
        .calls()
        .iter()
        .filter(|c| c.action == "CreateLivyComputeToken")
        .map(|c| c.body["name"].as_str().unwrap().to_owned())
        .collect();
    let distinct: BTreeSet<&String> = names.iter().collect();
    assert_eq!(
        distinct.len(),
        names.len(),
        "a token name was created twice: {names:?}"
    );
    assert!(
        emr.calls().iter().all(|c| c.status == 200),
        "{:?}",
        emr.calls()
    );
    assert_eq!(emr.bad_signatures(), 0);

    // Deleting the resource deletes its tokens; the referenced token is never touched.
    cluster
        .delete_and_wait::<LivyToken>(&ns, "managed", Duration::from_secs(30))
        .await;
    let left: Vec<String> = emr.tokens().into_iter().map(|t| t.token_id).collect();
    assert_eq!(left, ["lctk-ref"]);
    cluster
        .delete_and_wait::<LivyToken>(&ns, "reference", Duration::from_secs(30))
        .await;
    assert!(emr.token("lctk-ref").is_some());

    let status = operator.terminate(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "operator exit status after SIGTERM: {status:?}"
    );
    cluster.delete_namespace(&ns).await;
}

/// NotebookTokenRequest against a mock Azure (Entra ID and ARM on one loopback httpmock server,
/// allowed with --allow-endpoint): the Secret appears, and the token, which the mock makes live
/// 90 s, is renewed before it expires with exactly one ARM call, reusing the Entra token.
#[tokio::test]
#[ignore = "needs a Kubernetes API server in KUBECONFIG"]
async fn notebook_token_request_gets_its_secret_and_renews_it() {
    const TENANT: &str = "00000000-0000-0000-0000-000000000000";
    let azure = MockServer::start_async().await;
    let entra = azure
        .mock_async(|when, then| {
            when.method(POST)
                .path(format!("/{TENANT}/oauth2/v2.0/token"))
                .form_urlencoded_tuple("client_secret", "e2e-client-secret")
                .form_urlencoded_tuple("scope", "https://management.azure.com/.default");
            then.status(200).json_body(json!({
                "token_type": "Bearer", "expires_in": 3599, "access_token": "e2e-arm-token"
            }));
        })
        .await;
    let arm = azure
        .mock_async(|when, then| {
            when.method(POST)
                .path("/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/workspace-1234/providers/Microsoft.MachineLearningServices/workspaces/testworkspace/listNotebookAccessToken")
                .query_param("api-version", "2024-04-01")
                .header("authorization", "Bearer e2e-arm-token")
                .header("content-length", "0");
            then.status(200).header("x-ms-request-id", "e2e-req").json_body(json!({
                "notebookResourceId": "94350843095843059", "hostName": "Host product name",
                "publicDns": "resource.notebooks.azure.net", "tokenType": "Bearer",
                "expiresIn": 90.0, "scope": "aznb_identity",
                "accessToken": "e2e-notebook-token", "refreshToken": "e2e-refresh-token"
            }));
        })
        .await;

    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("e2e-ntr").await;
    let allow = format!("127.0.0.1:{}", azure.port());
    let mut operator = Operator::start(&cluster, &ns, &["--allow-endpoint", &allow]).await;

    cluster
        .apply_json(
            &ns,
            json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "azure-sp"},
                "stringData": {"clientSecret": "e2e-client-secret"}
            }),
        )
        .await;
    let applied = Instant::now();
    cluster
        .apply_json(&ns, json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
            "metadata": {"name": "ml"},
            "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444",
                     "resourceGroup": "workspace-1234", "workspaceName": "testworkspace",
                     "endpoint": azure.base_url(),
                     "azure": {"tenantId": TENANT, "clientId": "11111111-1111-1111-1111-111111111111",
                               "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"},
                               "authorityHost": azure.base_url()},
                     "secretName": "ml-notebook-token"}
        }))
        .await;

    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    let expires_at = |s: &Secret| {
        s.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("workspaceaccess.io/expires-at"))
            .cloned()
            .unwrap_or_default()
    };
    let first = loop {
        if let Some(s) = secrets.get_opt("ml-notebook-token").await.unwrap() {
            break s;
        }
        assert!(
            applied.elapsed() < Duration::from_secs(30),
            "no Secret within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "Secret appeared {:?} after the resource was applied",
        applied.elapsed()
    );
    let data = first.data.as_ref().expect("Secret data");
    assert_eq!(data["accessToken"].0, b"e2e-notebook-token");
    assert_eq!(data["refreshToken"].0, b"e2e-refresh-token");
    assert_eq!(data["publicDns"].0, b"resource.notebooks.azure.net");
    let owner = &first.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "NotebookTokenRequest");
    let (ready, reason) = cluster
        .wait_ready_reason::<NotebookTokenRequest>(&ns, "ml", Duration::from_secs(30))
        .await;
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Synced"));

    // The mint is reported as a Normal event regarding the resource (the API server accepted
    // it: its name and fields are valid), and no token reaches the event.
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(cluster.client.clone(), &ns);
    let synced = loop {
        let found = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("ml")
                    && e.reason.as_deref() == Some("Synced")
            });
        if let Some(e) = found {
            break e;
        }
        assert!(
            applied.elapsed() < Duration::from_secs(30),
            "no Synced event within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(synced.type_.as_deref(), Some("Normal"));
    assert_eq!(
        synced.reporting_controller.as_deref(),
        Some("workspace-access-operator")
    );
    let note = synced.note.unwrap_or_default();
    assert!(note.contains("ml-notebook-token"), "{note}");
    assert!(!note.contains("e2e-notebook-token") && !note.contains("e2e-refresh-token"));
    let status = serde_json::to_value(
        Api::<NotebookTokenRequest>::namespaced(cluster.client.clone(), &ns)
            .get("ml")
            .await
            .unwrap()
            .status
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["hostName"], "Host product name");
    assert_eq!(
        status["expiresAt"].as_str(),
        Some(expires_at(&first).as_str())
    );
    assert_eq!(arm.calls_async().await, 1);

    // The 90 s token is renewed 36-45 s after it was minted, before it expires.
    let first_expiry = expires_at(&first);
    let renewed = loop {
        let s = secrets.get("ml-notebook-token").await.unwrap();
        if expires_at(&s) != first_expiry {
            break s;
        }
        assert!(
            applied.elapsed() < Duration::from_secs(120),
            "token not renewed within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let renewed_at = jiff::Timestamp::now();
    let old_expiry: jiff::Timestamp = first_expiry.parse().unwrap();
    assert!(
        renewed_at < old_expiry,
        "renewed at {renewed_at}, after the old token expired at {old_expiry}"
    );
    assert!(expires_at(&renewed).parse::<jiff::Timestamp>().unwrap() > old_expiry);
    assert_eq!(
        arm.calls_async().await,
        2,
        "exactly one ARM call per renewal"
    );
    assert_eq!(
        entra.calls_async().await,
        1,
        "the Entra token (1 h) is reused"
    );

    let status = operator.terminate(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "operator exit status after SIGTERM: {status:?}"
    );
    cluster.delete_namespace(&ns).await;
}

/// WorkspaceView against mock Fabric (+ Entra ID) and DataRobot servers on loopback: 2,500
/// Fabric workspaces over 25 pages and 300 DataRobot notebooks found by a selector show up
/// complete, sorted and counted (truncated at maxItems with the true count); `kubectl get wsv`
/// has the printer columns; refreshes of an unchanged inventory don't rewrite the resource.
#[tokio::test]
#[ignore = "needs a Kubernetes API server in KUBECONFIG"]
async fn workspace_views_show_complete_inventories_and_are_not_rewritten() {
    use serde_json::Value;

    // Mock providers: one server plays Entra ID, Fabric and DataRobot.
    let mock = MockServer::start_async().await;
    let tenant = "contoso.onmicrosoft.com";
    let entra = mock
        .mock_async(|when, then| {
            when.method(POST)
                .path(format!("/{tenant}/oauth2/v2.0/token"))
                .form_urlencoded_tuple("scope", "https://api.fabric.microsoft.com/.default");
            then.status(200).json_body(
                json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "fabric-token"}),
            );
        })
        .await;
    let mut first_fabric_page = None;
    for p in 0..25usize {
        let value: Vec<Value> = (0..100)
            .map(|i| {
                let n = 2499 - (p * 100 + i);
                json!({"id": format!("{n:08x}-0000-4000-8000-000000000000"),
                       "displayName": format!("Workspace {n}"), "description": "", "type": "Workspace"})
            })
            .collect();
        let mut body = json!({ "value": value });
        if p < 24 {
            body["continuationToken"] = json!(format!("LD{}%3D", p + 1));
            body["continuationUri"] =
                json!(mock.url(format!("/v1/workspaces?continuationToken=LD{}%3D", p + 1)));
        }
        let expected = (p > 0).then(|| format!("continuationToken=LD{p}%3D"));
        let m = mock
            .mock_async(|when, then| {
                when.method(GET)
                    .path("/v1/workspaces")
                    .header("authorization", "Bearer fabric-token")
                    .is_true(move |req| req.uri().query().map(str::to_owned) == expected);
                then.status(200).json_body(body);
            })
            .await;
        if p == 0 {
            first_fabric_page = Some(m);
        }
    }
    let first_fabric_page = first_fabric_page.unwrap();
    let ids: Vec<String> = (0..300).rev().map(|i| format!("65f0{i:020x}")).collect();
    for (p, chunk) in ids.chunks(100).enumerate() {
        let next = (p < 2).then(|| {
            mock.url(format!(
                "/api/v2/notebooks/?offset={}&limit=100",
                (p + 1) * 100
            ))
        });
        let data: Vec<Value> = chunk.iter().map(|id| json!({"id": id})).collect();
        mock.mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/")
                .header("authorization", "Token dr-key")
                .query_param("offset", (p * 100).to_string());
            then.status(200)
                .json_body(json!({"data": data, "next": next}));
        })
        .await;
    }
    let mut sorted = ids.clone();
    sorted.sort();
    for chunk in sorted.chunks(100) {
        let data: Vec<Value> = chunk
            .iter()
            .map(|id| json!({"notebookId": id, "roles": [{"id": "u1", "name": "alice@example.com",
                                                           "role": "OWNER", "shareRecipientType": "user"}]}))
            .collect();
        mock.mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/sharedRoles/")
                .query_param("notebookIds", chunk.join(","));
            then.status(200).json_body(json!({ "data": data }));
        })
        .await;
    }

    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("e2e-wsv").await;
    let allow = format!("127.0.0.1:{}", mock.address().port());
    let mut operator = Operator::start(
        &cluster,
        &ns,
        &["--allow-endpoint", &allow, "--provider-rate", "200:200"],
    )
    .await;

    cluster
        .apply_json(
            &ns,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "fabric-sp"},
                                 "stringData": {"clientSecret": "sp-secret"}}),
        )
        .await;
    cluster
        .apply_json(
            &ns,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "datarobot"},
                                 "stringData": {"apiToken": "dr-key"}}),
        )
        .await;
    cluster
        .apply_json(&ns, json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
            "metadata": {"name": "fabric"},
            "spec": {"refreshInterval": "5s", "maxItems": 2000,
                     "fabric": {"endpoint": mock.base_url(),
                                "azure": {"tenantId": tenant, "clientId": "11111111-1111-1111-1111-111111111111",
                                          "clientSecretRef": {"name": "fabric-sp", "key": "clientSecret"},
                                          "authorityHost": mock.base_url()}}}
        }))
        .await;
    cluster
        .apply_json(&ns, json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
            "metadata": {"name": "datarobot"},
            "spec": {"dataRobot": {"endpoint": mock.url("/api/v2"), "selector": {"owners": ["u1"]},
                                   "apiTokenRef": {"name": "datarobot", "key": "apiToken"}}}
        }))
        .await;
    for name in ["fabric", "datarobot"] {
        let (status, reason) = cluster
            .wait_ready_reason::<WorkspaceView>(&ns, name, Duration::from_secs(60))
            .await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "Synced"),
            "{name}"
        );
    }

    let api: Api<WorkspaceView> = Api::namespaced(cluster.client.clone(), &ns);
    let fabric = api.get("fabric").await.unwrap();
    let st = fabric.status.clone().unwrap();
    assert_eq!((st.count, st.truncated), (Some(2500), Some(true)));
    assert_eq!(st.workspaces.len(), 2000);
    assert!(
        st.workspaces.windows(2).all(|w| w[0].id < w[1].id),
        "sorted by id"
    );
    assert_eq!(st.workspaces[0].id, "00000000-0000-4000-8000-000000000000");
    let dr = api.get("datarobot").await.unwrap().status.unwrap();
    assert_eq!((dr.count, dr.truncated), (Some(300), Some(false)));
    let listed: Vec<&str> = dr
        .notebooks
        .iter()
        .map(|n| n.notebook_id.as_str())
        .collect();
    assert_eq!(listed, sorted);

    // kubectl get wsv: the server-side table has the printer columns.
    let req = http::Request::get(format!(
        "/apis/workspaceaccess.io/v1alpha1/namespaces/{ns}/workspaceviews"
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())
    .unwrap();
    let table: Value =
        serde_json::from_str(&cluster.client.request_text(req).await.unwrap()).unwrap();
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Name",
            "Provider",
            "Count",
            "Ready",
            "Reason",
            "Last Sync",
            "Age",
            "Message",
            "Next Sync"
        ]
    );
    let fabric_row = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cells"][0] == "fabric")
        .unwrap();
    assert_eq!(fabric_row["cells"][1], "Fabric");
    assert_eq!(fabric_row["cells"][2], 2500);

    // Refreshes every 5 s find the same inventory: the provider is asked again, the resource
    // is not rewritten.
    let rv = fabric.metadata.resource_version.clone();
    let calls = first_fabric_page.calls_async().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while first_fabric_page.calls_async().await < calls + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let again = api.get("fabric").await.unwrap();
    assert_eq!(
        again.metadata.resource_version, rv,
        "an unchanged inventory was rewritten"
    );
    assert_eq!(
        entra.calls_async().await,
        1,
        "the Entra token is cached across refreshes"
    );

    let status = operator.terminate(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "operator exit status after SIGTERM: {status:?}"
    );
    cluster.delete_namespace(&ns).await;
}

/// Access changes against the real API server: a role assignment changed at mock Fabric and a
/// share added at mock DataRobot show up within one refresh interval as an `AccessChanged`
/// event (found the way the docs say, `kubectl get events --field-selector
/// reason=AccessChanged`), a `status.recentChanges` entry and a counter increase; unchanged
/// refreshes then add nothing.
#[tokio::test]
#[ignore = "needs a Kubernetes API server in KUBECONFIG"]
async fn access_changes_at_the_providers_become_events_history_and_metrics() {
    use k8s_openapi::api::core::v1::Event;
    use kube::api::ListParams;
    use serde_json::Value;

    let mock = MockServer::start_async().await;
    let tenant = "contoso.onmicrosoft.com";
    mock.mock_async(|when, then| {
        when.method(POST)
            .path(format!("/{tenant}/oauth2/v2.0/token"));
        then.status(200).json_body(
            json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "fabric-token"}),
        );
    })
    .await;
    mock.mock_async(|when, then| {
        when.method(GET).path("/v1/workspaces");
        then.status(200).json_body(json!({"value": [
            {"id": "8b1f0e6c-0000-4000-8000-000000000001", "displayName": "Finance",
             "description": "", "type": "Workspace"}]}));
    })
    .await;
    let assignments = |role: &str| {
        json!({"value": [
            {"id": "a1", "principal": {"id": "11111111-aaaa-4000-8000-000000000001",
              "displayName": "Alice", "type": "User",
              "userDetails": {"userPrincipalName": "alice@contoso.com"}}, "role": role},
            {"id": "a2", "principal": {"id": "22222222-bbbb-4000-8000-000000000002",
              "displayName": "Contractors", "type": "Group"}, "role": "Viewer"}]})
    };
    let path = "/v1/workspaces/8b1f0e6c-0000-4000-8000-000000000001/roleAssignments";
    let mut fabric_roles = mock
        .mock_async(|when, then| {
            when.method(GET).path(path);
            then.status(200).json_body(assignments("Viewer"));
        })
        .await;
    let shares = |extra: Vec<Value>| {
        let mut roles = vec![
            json!({"id": "u1", "name": "ann@example.com", "role": "OWNER",
                                    "shareRecipientType": "user"}),
        ];
        roles.extend(extra);
        json!({"data": [{"notebookId": "nb1", "roles": roles}]})
    };
    let mut dr_roles = mock
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/sharedRoles/");
            then.status(200).json_body(shares(vec![]));
        })
        .await;

    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("e2e-access").await;
    let allow = format!("127.0.0.1:{}", mock.address().port());
    let mut operator = Operator::start(&cluster, &ns, &["--allow-endpoint", &allow]).await;
    for (name, key, value) in [
        ("fabric-sp", "clientSecret", "sp-secret"),
        ("datarobot", "apiToken", "dr-key"),
    ] {
        cluster
            .apply_json(
                &ns,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                       "stringData": {key: value}}),
            )
            .await;
    }
    cluster
        .apply_json(&ns, json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
            "metadata": {"name": "fabric"},
            "spec": {"refreshInterval": "5s",
                     "fabric": {"endpoint": mock.base_url(), "includeRoleAssignments": true,
                                "principalTypes": ["User", "Group"],
                                "azure": {"tenantId": tenant, "clientId": "11111111-1111-1111-1111-111111111111",
                                          "clientSecretRef": {"name": "fabric-sp", "key": "clientSecret"},
                                          "authorityHost": mock.base_url()}}}
        }))
        .await;
    cluster
        .apply_json(
            &ns,
            json!({
                "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
                "metadata": {"name": "datarobot"},
                "spec": {"refreshInterval": "5s", "historyLimit": 10,
                         "dataRobot": {"endpoint": mock.url("/api/v2"), "notebookIds": ["nb1"],
                                       "apiTokenRef": {"name": "datarobot", "key": "apiToken"}}}
            }),
        )
        .await;
    let api: Api<WorkspaceView> = Api::namespaced(cluster.client.clone(), &ns);
    for name in ["fabric", "datarobot"] {
        let (status, reason) = cluster
            .wait_ready_reason::<WorkspaceView>(&ns, name, Duration::from_secs(60))
            .await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "Synced"),
            "{name}"
        );
        let st = api.get(name).await.unwrap().status.unwrap();
        assert!(
            st.recent_changes.is_empty(),
            "{name}: the first inventory is the baseline"
        );
        assert!(st.source_digest.is_some());
    }
    let counter = "workspace_access_inventory_changes_total";
    assert_eq!(operator.counter(counter).await, 0.0);

    // Alice is made Admin of Finance; a group gets a notebook.
    fabric_roles.delete_async().await;
    fabric_roles = mock
        .mock_async(|when, then| {
            when.method(GET).path(path);
            then.status(200).json_body(assignments("Admin"));
        })
        .await;
    dr_roles.delete_async().await;
    dr_roles = mock
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/sharedRoles/");
            then.status(200)
                .json_body(shares(vec![json!({"id": "g1", "name": "analysts",
                "role": "CONSUMER", "shareRecipientType": "group"})]));
        })
        .await;
    let changed = Instant::now();
    let deadline = changed + Duration::from_secs(30);
    let history = |name: &'static str| {
        let api = api.clone();
        async move { api.get(name).await.unwrap().status.unwrap().recent_changes }
    };
    while history("fabric").await.is_empty() || history("datarobot").await.is_empty() {
        assert!(Instant::now() < deadline, "no history entry within 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seen_after = changed.elapsed();
    eprintln!("access changes seen {seen_after:?} after the provider changed (refresh 5s)");
    assert!(seen_after < Duration::from_secs(15), "{seen_after:?}");
    let fabric = history("fabric").await;
    assert_eq!(fabric.len(), 1, "{fabric:?}");
    let c = &fabric[0];
    assert_eq!(serde_json::to_value(c.change).unwrap(), "RoleChanged");
    assert_eq!(c.item_name.as_deref(), Some("Finance"));
    assert_eq!(c.principal_name.as_deref(), Some("Alice"));
    assert_eq!(
        (c.old_role.as_deref(), c.new_role.as_deref()),
        (Some("Viewer"), Some("Admin"))
    );
    let dr = history("datarobot").await;
    assert_eq!(dr.len(), 1, "{dr:?}");
    assert_eq!(serde_json::to_value(dr[0].change).unwrap(), "Granted");
    assert_eq!(dr[0].principal_id.as_deref(), Some("g1"));

    // The events, as kubectl get events --field-selector reason=AccessChanged finds them.
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), &ns);
    let access = || async {
        let mut notes: Vec<(String, String)> = events
            .list(&ListParams::default().fields("reason=AccessChanged"))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| {
                (
                    e.involved_object.name.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect();
        notes.sort();
        notes
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while access().await.len() < 2 {
        assert!(Instant::now() < deadline, "events: {:?}", access().await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        access().await,
        [
            (
                "datarobot".to_owned(),
                "1 granted on 1 notebook: analysts granted CONSUMER on nb1".to_owned()
            ),
            (
                "fabric".to_owned(),
                "1 role changed on 1 workspace: Alice Viewer -> Admin on Finance".to_owned()
            ),
        ]
    );
    assert_eq!(operator.counter(counter).await, 2.0);
    // The plugin's history view, as the docs use it for reviews.
    let (code, csv, stderr) = plugin(&[
        "inventory",
        "wsv/fabric",
        "-n",
        &ns,
        "--changes",
        "--since",
        "1h",
        "-o",
        "csv",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "time,change,itemId,itemName,principalId,principalType,principalName,oldRole,newRole"
    );
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[1].ends_with(
            ",RoleChanged,8b1f0e6c-0000-4000-8000-000000000001,Finance,\
             11111111-aaaa-4000-8000-000000000001,User,Alice,Viewer,Admin"
        ),
        "{csv}"
    );
    let (_, metrics) = operator.get("/metrics").await;
    for line in [
        format!(r#"{counter}{{namespace="{ns}",name="fabric",change="role_changed"}} 1"#),
        format!(r#"{counter}{{namespace="{ns}",name="datarobot",change="granted"}} 1"#),
    ] {
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }

    // Unchanged refreshes (at least two more each) add nothing.
    let calls = (
        fabric_roles.calls_async().await,
        dr_roles.calls_async().await,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while fabric_roles.calls_async().await < calls.0 + 2
        || dr_roles.calls_async().await < calls.1 + 2
    {
        assert!(Instant::now() < deadline, "no refresh within 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(history("fabric").await.len(), 1);
    assert_eq!(history("datarobot").await.len(), 1);
    assert_eq!(access().await.len(), 2);
    assert_eq!(operator.counter(counter).await, 2.0);

    let status = operator.terminate(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "operator exit status after SIGTERM: {status:?}"
    );
    cluster.delete_namespace(&ns).await;
}

/// Two replicas with leader election against the real API server: only the leader writes (as
/// its own metrics count); frozen (SIGSTOP) for longer than the lease, the leader is replaced
/// by the standby, and once thawed (SIGCONT) it writes nothing more, although a resource
/// created meanwhile waits in its watch: it notices its lease is gone before its controllers
/// take another step.
#[tokio::test]
#[ignore = "needs a Kubernetes API server in KUBECONFIG"]
async fn two_replicas_never_both_write_even_when_the_leader_freezes() {
    const TENANT: &str = "00000000-0000-0000-0000-000000000000";
    const WRITES: &str = "workspace_access_api_writes_total";
    let azure = MockServer::start_async().await;
    azure
        .mock_async(|when, then| {
            when.method(POST)
                .path(format!("/{TENANT}/oauth2/v2.0/token"));
            then.status(200).json_body(json!({
                "token_type": "Bearer", "expires_in": 3599, "access_token": "e2e-arm-token"
            }));
        })
        .await;
    azure
        .mock_async(|when, then| {
            when.method(POST).path_includes("/listNotebookAccessToken");
            then.status(200).json_body(json!({
                "accessToken": "e2e-notebook-token", "expiresIn": 28800.0
            }));
        })
        .await;
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("e2e-leader").await;
    // The deploy/ RBAC allows Leases only in the operator's namespace.
    let lease_ns = if std::env::var_os("E2E_OPERATOR_KUBECONFIG").is_some() {
        "workspace-access-operator".to_owned()
    } else {
        ns.clone()
    };
    let lease = format!("e2e-leader-{:x}", rand::random::<u32>());
    let allow = format!("127.0.0.1:{}", azure.port());
    let args = [
        "--allow-endpoint",
        &allow,
        "--leader-elect",
        "--lease-name",
        &lease,
        "--lease-namespace",
        &lease_ns,
        "--lease-duration",
        "4",
    ];
    let leads = |op: &Operator| {
        let op_addr = op.addr.clone();
        async move {
            let text = reqwest::get(format!("http://{op_addr}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            Some(text.lines().any(|l| l == "workspace_access_leader 1"))
        }
    };
    let mut a = Operator::start(&cluster, &ns, &args).await;
    let started = Instant::now();
    while leads(&a).await != Some(true) {
        assert!(started.elapsed() < Duration::from_secs(20), "a never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut b = Operator::start(&cluster, &ns, &args).await;

    cluster
        .apply_json(
            &ns,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "azure-sp"},
                   "stringData": {"clientSecret": "e2e-client-secret"}}),
        )
        .await;
    let ntr = |name: &str| {
        json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
            "metadata": {"name": name},
            "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444",
                     "resourceGroup": "workspace-1234", "workspaceName": "testworkspace",
                     "endpoint": azure.base_url(),
                     "azure": {"tenantId": TENANT, "clientId": "11111111-1111-1111-1111-111111111111",
                               "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"},
                               "authorityHost": azure.base_url()}}
        })
    };
    cluster.apply_json(&ns, ntr("one")).await;
    let (ready, _) = cluster
        .wait_ready_reason::<NotebookTokenRequest>(&ns, "one", Duration::from_secs(30))
        .await;
    assert_eq!(ready, "True");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(a.counter(WRITES).await > 0.0, "the leader wrote nothing");
    assert_eq!(b.counter(WRITES).await, 0.0, "the standby wrote");

    // The leader freezes for longer than its lease.
    let frozen_writes = a.counter(WRITES).await;
    a.signal("STOP");
    let frozen = Instant::now();
    while leads(&b).await != Some(true) {
        assert!(
            frozen.elapsed() < Duration::from_secs(15),
            "the standby didn't take over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the standby took over {:?} after the freeze",
        frozen.elapsed()
    );
    cluster.apply_json(&ns, ntr("two")).await;
    let (ready, _) = cluster
        .wait_ready_reason::<NotebookTokenRequest>(&ns, "two", Duration::from_secs(30))
        .await;
    assert_eq!(ready, "True");
    assert!(
        b.counter(WRITES).await > 0.0,
        "the new leader wrote nothing"
    );

    // Thawed, the old leader finds its lease gone before doing anything else.
    a.signal("CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        a.counter(WRITES).await,
        frozen_writes,
        "the old leader wrote after it was replaced"
    );
    assert_eq!(leads(&a).await, Some(false));
    assert_eq!(leads(&b).await, Some(true));

    for op in [&mut a, &mut b] {
        let status = op.terminate(Duration::from_secs(20)).await;
        assert!(status.success(), "exit status after SIGTERM: {status:?}");
    }
    cluster.delete_namespace(&ns).await;
}

/// The kubectl plugin against a running operator on the real API server: `status -A` shows the
/// namespace's resources with their expiry, `renew ntr/x --wait` gets a new token with exactly
/// one provider call, `/metrics` has the token's expiry, and a missing resource is an error.
#[tokio::test]
#[ignore = "needs a Kubernetes API server in KUBECONFIG"]
async fn the_kubectl_plugin_shows_and_renews_tokens_of_a_running_operator() {
    const TENANT: &str = "00000000-0000-0000-0000-000000000000";
    let azure = MockServer::start_async().await;
    azure
        .mock_async(|when, then| {
            when.method(POST)
                .path(format!("/{TENANT}/oauth2/v2.0/token"));
            then.status(200).json_body(json!({
                "token_type": "Bearer", "expires_in": 3599, "access_token": "e2e-arm-token"
            }));
        })
        .await;
    let arm = azure
        .mock_async(|when, then| {
            when.method(POST).path_includes("/listNotebookAccessToken");
            then.status(200).json_body(json!({
                "accessToken": "e2e-plugin-notebook-token", "expiresIn": 3600.0
            }));
        })
        .await;
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("e2e-plugin").await;
    let allow = format!("127.0.0.1:{}", azure.port());
    let mut operator = Operator::start(&cluster, &ns, &["--allow-endpoint", &allow]).await;
    cluster
        .apply_json(
            &ns,
            json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "azure-sp"},
                "stringData": {"clientSecret": "e2e-client-secret"}
            }),
        )
        .await;
    cluster
        .apply_json(&ns, json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
            "metadata": {"name": "x"},
            "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444",
                     "resourceGroup": "rg", "workspaceName": "testworkspace",
                     "endpoint": azure.base_url(), "secretName": "x-token",
                     "azure": {"tenantId": TENANT, "clientId": "11111111-1111-1111-1111-111111111111",
                               "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"},
                               "authorityHost": azure.base_url()}}
        }))
        .await;
    cluster
        .apply_json(
            &ns,
            json!({
                "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "LivyToken",
                "metadata": {"name": "spark"},
                "spec": {"regionId": "cn-hangzhou", "workspaceId": "w-1", "livyComputeId": "lc-1",
                         "tokenId": "lctk-1", "alibaba": {"accessKeyRef": {"name": "missing"}}}
            }),
        )
        .await;
    cluster
        .apply_json(&ns, json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
            "metadata": {"name": "view"},
            "spec": {"dataRobot": {"notebookIds": ["abc"], "apiTokenRef": {"name": "missing", "key": "apiToken"}}}
        }))
        .await;
    for (ready, reason) in [
        cluster
            .wait_ready_reason::<NotebookTokenRequest>(&ns, "x", Duration::from_secs(30))
            .await,
        cluster
            .wait_ready_reason::<LivyToken>(&ns, "spark", Duration::from_secs(30))
            .await,
        cluster
            .wait_ready_reason::<WorkspaceView>(&ns, "view", Duration::from_secs(30))
            .await,
    ] {
        assert!(
            (ready.as_str(), reason.as_str()) == ("True", "Synced")
                || reason == "CredentialsNotFound",
            "{ready} {reason}"
        );
    }
    assert_eq!(arm.calls_async().await, 1);

    // status -A: the namespace's rows, the token first (it is the only one with an expiry).
    let (code, out, err) = plugin(&["status", "-A"]);
    assert_eq!(code, 0, "{err}");
    eprintln!("{out}");
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("NAMESPACE") && header.contains("EXPIRES IN"),
        "{header}"
    );
    let ours: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with(&format!("{ns} ")))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(ours.len(), 3, "{out}");
    assert_eq!(
        &ours[0][..4],
        [ns.as_str(), "ntr/x", "True", "Synced"],
        "{out}"
    );
    assert!(ours[0][4].ends_with('m'), "expires in about an hour: {out}");
    assert_eq!(ours[0].last(), Some(&"x-token"));
    let kinds: Vec<&str> = ours.iter().map(|r| r[1]).collect();
    assert!(
        kinds.contains(&"livytoken/spark") && kinds.contains(&"wsv/view"),
        "{out}"
    );

    let (code, out, err) = plugin(&["status", "-n", &ns, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let x = &list["items"][0];
    assert_eq!(
        (x["name"].as_str(), x["kind"].as_str()),
        (Some("x"), Some("NotebookTokenRequest"))
    );
    let api: Api<NotebookTokenRequest> = Api::namespaced(cluster.client.clone(), &ns);
    let before = api.get("x").await.unwrap().status.unwrap();
    assert_eq!(
        x["expiresAt"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap(),
        before.expires_at.unwrap()
    );

    // renew ntr/x: one provider call, recorded in status.lastRenewRequest.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (code, out, err) = plugin(&["renew", "ntr/x", "-n", &ns, "--wait", "--timeout", "30s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ntr/x renew requested"), "{out}");
    assert!(out.contains("ntr/x renewed: Ready=True Synced"), "{out}");
    assert_eq!(
        arm.calls_async().await,
        2,
        "exactly one provider call for the renewal"
    );
    let after = api.get("x").await.unwrap().status.unwrap();
    assert!(after.common.last_renew_request.is_some());
    assert!(after.expires_at > before.expires_at, "{after:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(arm.calls_async().await, 2, "the request is handled once");

    // /metrics has the new expiry.
    let expected = format!(
        "workspace_access_token_expiration_timestamp_seconds{{kind=\"NotebookTokenRequest\",namespace=\"{ns}\",name=\"x\"}} {}",
        after.expires_at.unwrap().as_second()
    );
    let (_, metrics) = operator.get("/metrics").await;
    assert!(metrics.contains(&expected), "{expected}\n{metrics}");
    assert!(metrics.contains(&format!(
        "workspace_access_resource_ready_status{{kind=\"WorkspaceView\",namespace=\"{ns}\",name=\"view\",condition=\"False\"}} 1"
    )));

    // Errors: a missing resource, a view without an inventory.
    let (code, _, err) = plugin(&["renew", "ntr/missing", "-n", &ns]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "notebooktokenrequest \"missing\" not found in namespace \"{ns}\""
        )),
        "{err}"
    );
    let (code, _, err) = plugin(&["inventory", "wsv/view", "-n", &ns]);
    assert_eq!(code, 1);
    assert!(
        err.contains("has no inventory yet (Ready=False CredentialsNotFound"),
        "{err}"
    );

    cluster
        .delete_and_wait::<LivyToken>(&ns, "spark", Duration::from_secs(30))
        .await;
    let status = operator.terminate(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "operator exit status after SIGTERM: {status:?}"
    );
    cluster.delete_namespace(&ns).await;
}

/// Runs `kubectl-workspaceaccess` with the test's KUBECONFIG: (exit code, stdout, stderr).
fn plugin(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-workspaceaccess"))
        .args(args)
        .output()
        .expect("run kubectl-workspaceaccess");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// ClusterCredential against a real API server: the platform's client secret stays in the
/// credential namespace; a team namespace gets its token once it is labelled, within seconds
/// and without a restart, and is refused (no provider call) once the label goes.
#[tokio::test]
#[ignore = "needs a Kubernetes API server in KUBECONFIG"]
async fn a_cluster_credential_follows_namespace_labels_live() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Patch, PatchParams};
    use workspace_access_operator::api::ClusterCredential;
    const TENANT: &str = "00000000-0000-0000-0000-000000000000";
    let azure = MockServer::start_async().await;
    let entra = azure
        .mock_async(|when, then| {
            when.method(POST)
                .path(format!("/{TENANT}/oauth2/v2.0/token"))
                .form_urlencoded_tuple("client_secret", "e2e-platform-secret");
            then.status(200).json_body(json!({
                "token_type": "Bearer", "expires_in": 3599, "access_token": "e2e-arm-token"
            }));
        })
        .await;
    let arm = azure
        .mock_async(|when, then| {
            when.method(POST)
                .path_suffix("/workspaces/testworkspace/listNotebookAccessToken")
                .header("authorization", "Bearer e2e-arm-token");
            then.status(200).json_body(json!({
                "accessToken": "e2e-notebook-token", "expiresIn": 28800.0, "tokenType": "Bearer"
            }));
        })
        .await;

    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("e2e-ccred").await;
    let platform = cluster.fresh_namespace("e2e-ccred-platform").await;
    let credential = format!("{ns}-azure");
    let label = "e2e.workspaceaccess.io/azure-ml";
    cluster
        .apply_json(
            &platform,
            json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "azure-sp"},
                "stringData": {"clientSecret": "e2e-platform-secret"}
            }),
        )
        .await;
    // Cluster-scoped: applied through a namespaced helper, the namespace is ignored.
    let credentials: Api<ClusterCredential> = Api::all(cluster.client.clone());
    let cc: ClusterCredential = serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "ClusterCredential",
        "metadata": {"name": credential},
        "spec": {"azure": {"tenantId": TENANT, "clientId": "11111111-1111-1111-1111-111111111111",
                           "authorityHost": azure.base_url(),
                           "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"}},
                 "allowedNamespaces": {"selector": {"matchLabels": {label: &ns}}}}
    }))
    .unwrap();
    credentials
        .patch(
            &credential,
            &PatchParams::apply("e2e").force(),
            &Patch::Apply(&cc),
        )
        .await
        .expect("apply the ClusterCredential");
    let allow = format!("127.0.0.1:{}", azure.port());
    let mut operator = Operator::start(
        &cluster,
        &ns,
        &[
            "--allow-endpoint",
            &allow,
            "--credential-namespace",
            &platform,
        ],
    )
    .await;
    cluster
        .apply_json(
            &ns,
            json!({
                "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
                "metadata": {"name": "ml"},
                "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444",
                         "resourceGroup": "workspace-1234", "workspaceName": "testworkspace",
                         "endpoint": azure.base_url(), "credentialRef": {"name": credential},
                         "secretName": "ml-token"}
            }),
        )
        .await;

    let reason_is = |want: &'static str| {
        let api: Api<NotebookTokenRequest> = Api::namespaced(cluster.client.clone(), &ns);
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let o = api.get("ml").await.unwrap();
                let v = serde_json::to_value(&o).unwrap();
                let reason = v["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .and_then(|c| c["reason"].as_str().map(str::to_owned));
                if reason.as_deref() == Some(want) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "no {want} within 20 s: {reason:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    reason_is("CredentialNotAllowed").await;
    assert_eq!(arm.calls_async().await, 0);

    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let set_label = |value: serde_json::Value| {
        let namespaces = namespaces.clone();
        let ns = ns.clone();
        async move {
            namespaces
                .patch(
                    &ns,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {label: value}}})),
                )
                .await
                .expect("label the namespace");
        }
    };
    let labelled = Instant::now();
    set_label(json!(ns)).await;
    reason_is("Synced").await;
    eprintln!(
        "Synced {:?} after the namespace was labelled",
        labelled.elapsed()
    );
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    let token = secrets.get("ml-token").await.expect("the token Secret");
    assert_eq!(token.data.unwrap()["accessToken"].0, b"e2e-notebook-token");
    assert_eq!(entra.calls_async().await, 1);
    assert_eq!(arm.calls_async().await, 1);
    // Nothing in the team namespace holds the platform's secret.
    for s in secrets.list(&Default::default()).await.unwrap() {
        assert!(
            !serde_json::to_string(&s)
                .unwrap()
                .contains("e2e-platform-secret"),
            "{:?}",
            s.metadata.name
        );
    }
    // The ClusterCredential reports itself (written through the real API server).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status =
            serde_json::to_value(credentials.get(&credential).await.unwrap().status).unwrap();
        if status["provider"] == "Azure"
            && status["usedBy"] == 1
            && status["conditions"][0]["reason"] == "Valid"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ClusterCredential status: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let unlabelled = Instant::now();
    set_label(serde_json::Value::Null).await;
    reason_is("CredentialNotAllowed").await;
    eprintln!(
        "CredentialNotAllowed {:?} after the label was removed",
        unlabelled.elapsed()
    );
    // The last Secret stays; deleting it gets no new token either.
    secrets
        .delete("ml-token", &Default::default())
        .await
        .expect("delete the token Secret");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        arm.calls_async().await,
        1,
        "no provider call once not allowed"
    );
    assert!(secrets.get_opt("ml-token").await.unwrap().is_none());

    let status = operator.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    let _ = credentials.delete(&credential, &Default::default()).await;
    cluster.delete_namespace(&ns).await;
    cluster.delete_namespace(&platform).await;
}

/// Consumers against a real API server: a Deployment that reads a token is restarted exactly
/// once per rotation (its pod template annotation, so its generation moves by one each time)
/// and not when the Secret is first written; a templated `.netrc` key follows every rotation;
/// a templated key edited by hand is put back within seconds without a new token.
#[tokio::test]
#[ignore = "needs a Kubernetes API server in KUBECONFIG"]
async fn consumers_see_every_rotation_once_and_a_hand_edited_secret_is_repaired() {
    use chaos_support::{MockAzure, azure_secret, ntr};
    use k8s_openapi::api::apps::v1::Deployment;
    // 40 s tokens: renewed about 20 s before they expire, so a rotation every ~20 s.
    let azure = MockAzure::start(Duration::from_secs(40)).await;
    let cluster = Cluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.fresh_namespace("e2e-consumers").await;
    let _operator = Operator::start(
        &cluster,
        &ns,
        &[
            "--allow-endpoint",
            &azure.host_port,
            "--rollout-restart-window",
            "2s",
        ],
    )
    .await;
    cluster.apply_json(&ns, azure_secret()).await;
    cluster
        .apply_json(&ns, json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "notebook-proxy"},
            "spec": {"selector": {"matchLabels": {"app": "proxy"}},
                     "template": {"metadata": {"labels": {"app": "proxy"}},
                                  "spec": {"containers": [{"name": "proxy", "image": "busybox"}]}}}
        }))
        .await;
    let mut doc = ntr(&azure, "notebook");
    doc["spec"]["secretTemplate"] = json!({"data": {
        "netrc": "machine {{ workspaceName }} login token password {{ accessToken }}\n"}});
    // (An unknown variable: refused with InvalidSpec first.)
    cluster.apply_json(&ns, doc.clone()).await;
    let (ready, reason) = cluster
        .wait_ready_reason::<NotebookTokenRequest>(&ns, "notebook", Duration::from_secs(30))
        .await;
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert_eq!(azure.mints().len(), 0, "nothing minted for a bad template");
    doc["spec"]["secretTemplate"]["data"]["netrc"] =
        json!("machine {{ publicDns }} login token password {{ accessToken }}\n");
    doc["spec"]["rolloutRestartTargets"] =
        json!([{"kind": "Deployment", "name": "notebook-proxy"}]);
    cluster.apply_json(&ns, doc).await;

    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let value =
        |s: &Secret, k: &str| String::from_utf8(s.data.as_ref().unwrap()[k].0.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(s) = secrets.get_opt("notebook").await.unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no Secret within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        value(&first, "netrc").ends_with(&format!("password {}\n", value(&first, "accessToken")))
    );

    // Watch the Deployment through two rotations.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while azure.mints().len() < 3 {
        assert!(Instant::now() < deadline, "two rotations within 2 minutes");
        let d = deployments.get("notebook-proxy").await.unwrap();
        if let Some(v) = d
            .spec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .and_then(|a| a.get("workspaceaccess.io/restartedAt").cloned())
        {
            seen.insert(v);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The last rotation's restart follows its window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let d = deployments.get("notebook-proxy").await.unwrap();
    if let Some(v) = d
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get("workspaceaccess.io/restartedAt").cloned())
    {
        seen.insert(v);
    }
    assert_eq!(azure.mints().len(), 3);
    assert_eq!(seen.len(), 2, "one restart per rotation: {seen:?}");
    assert_eq!(
        d.metadata.generation,
        Some(3),
        "created, then two template changes"
    );
    let now = secrets.get("notebook").await.unwrap();
    let token = value(&now, "accessToken");
    assert_eq!(token, azure.mints().last().unwrap().token);
    assert!(value(&now, "netrc").ends_with(&format!("password {token}\n")));
    let obj: NotebookTokenRequest = Api::namespaced(cluster.client.clone(), &ns)
        .get("notebook")
        .await
        .unwrap();
    let last = obj.status.unwrap().last_rollout_restart.expect("recorded");
    assert_eq!(last.targets, vec!["Deployment/notebook-proxy".to_string()]);
    assert!(
        !now.metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("workspaceaccess.io/restart-pending")
    );

    // A templated key edited by hand: put back within seconds, without a new token (unless
    // a renewal fell due meanwhile).
    let mints = azure.mints().len();
    let renew_at = obj_renew_at(&cluster, &ns).await;
    let edited = json!({"data": {"netrc": k8s_openapi::ByteString(b"password forged\n".to_vec())}});
    secrets
        .patch(
            "notebook",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&edited),
        )
        .await
        .unwrap();
    let edited_at = Instant::now();
    loop {
        let s = secrets.get("notebook").await.unwrap();
        if value(&s, "netrc").ends_with(&format!("password {}\n", value(&s, "accessToken"))) {
            break;
        }
        assert!(
            edited_at.elapsed() < Duration::from_secs(10),
            "not repaired within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "the edited key was put back {:?} after the edit",
        edited_at.elapsed()
    );
    if jiff::Timestamp::now() < renew_at {
        assert_eq!(azure.mints().len(), mints, "no new token for a repair");
    }
    cluster.delete_namespace(&ns).await;
}

/// `status.renewAt` of NotebookTokenRequest `notebook` in `ns`.
async fn obj_renew_at(cluster: &Cluster, ns: &str) -> jiff::Timestamp {
    let obj: NotebookTokenRequest = Api::namespaced(cluster.client.clone(), ns)
        .get("notebook")
        .await
        .unwrap();
    obj.status.unwrap().renew_at.unwrap()
}
