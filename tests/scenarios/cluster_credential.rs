//! ClusterCredentials with the controllers running against the in-memory API server and a mock
//! Azure: namespaces allowed by name and by label (and not), one Entra token shared by every
//! namespace, labels added and removed while running, a rotated client secret, a deleted
//! ClusterCredential, and the `usedBy` count.

use crate::support::fake_api::FakeApiServer;
use crate::support::*;
use httpmock::prelude::*;
use httpmock::{Mock, MockServer};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use workspace_access_operator::api::{ClusterCredential, NotebookTokenRequest};
use workspace_access_operator::controller::run::{ControllerOptions, run_controllers};
use workspace_access_operator::controller::{Settings, SystemClock};
use workspace_access_operator::metrics::Metrics;
use workspace_access_operator::providers::auth::entra::EntraTokens;
use workspace_access_operator::providers::endpoint::EndpointPolicy;

/// The credential namespace of these tests (not the default, to show the setting is used).
const CRED_NS: &str = "platform-credentials";
const TENANT: &str = "00000000-0000-0000-0000-000000000000";
const ENTRA_PATH: &str = "/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token";
const ARM_SCOPE: &str = "https://management.azure.com/.default";
const CLIENT_SECRET: &str = "platform-sp-secret-1";
const ROTATED_SECRET: &str = "platform-sp-secret-2";
const LABEL: &str = "workspaceaccess.io/azure-ml";

fn arm_path() -> String {
    "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/testworkspace/listNotebookAccessToken".into()
}

async fn entra<'a>(azure: &'a MockServer, secret: &str, bearer: &str) -> Mock<'a> {
    azure
        .mock_async(|when, then| {
            when.method(POST)
                .path(ENTRA_PATH)
                .form_urlencoded_tuple("client_secret", secret)
                .form_urlencoded_tuple("scope", ARM_SCOPE);
            then.status(200).json_body(
                json!({"token_type": "Bearer", "expires_in": 3599, "access_token": bearer}),
            );
        })
        .await
}

async fn arm<'a>(azure: &'a MockServer, bearer: &str, token: &str) -> Mock<'a> {
    azure
        .mock_async(|when, then| {
            when.method(POST)
                .path(arm_path())
                .header("authorization", format!("Bearer {bearer}"));
            then.status(200).json_body(json!({
                "accessToken": token, "expiresIn": 28800, "tokenType": "Bearer",
                "publicDns": "resource.notebooks.azure.net"
            }));
        })
        .await
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    serde_json::from_value(json!({"metadata": {"name": name,
        "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>()}}))
    .unwrap()
}

fn cluster_credential(azure: &MockServer, allowed: Value) -> ClusterCredential {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "ClusterCredential",
        "metadata": {"name": "azure-ml-prod"},
        "spec": {"azure": {"tenantId": TENANT, "clientId": "11111111-1111-1111-1111-111111111111",
                           "authorityHost": azure.base_url(),
                           "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"}},
                 "allowedNamespaces": allowed}
    }))
    .unwrap()
}

fn ntr(ns: &str, azure: &MockServer) -> NotebookTokenRequest {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
        "metadata": {"name": "ml", "namespace": ns},
        "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444",
                 "resourceGroup": "rg", "workspaceName": "testworkspace",
                 "endpoint": azure.base_url(), "secretName": "ml-token",
                 "credentialRef": {"name": "azure-ml-prod"}}
    }))
    .unwrap()
}

fn reason(s: &FakeApiServer, ns: &str) -> Option<String> {
    let o: NotebookTokenRequest = s.get(ns, "ml")?;
    ready_of(&serde_json::to_value(&o).ok()?["status"]).map(|(_, r, _)| r)
}

fn credential_status(s: &FakeApiServer) -> Value {
    s.get::<ClusterCredential>("", "azure-ml-prod")
        .map(|c| serde_json::to_value(c.status).unwrap())
        .unwrap_or(Value::Null)
}

/// The controllers, running, with their own Entra cache (to look into).
struct Running {
    entra: Arc<EntraTokens>,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the operator stops")
            .unwrap()
            .unwrap();
    }
}

async fn start(s: &FakeApiServer) -> Running {
    let settings = Settings {
        endpoint_policy: EndpointPolicy::new(vec!["127.0.0.1".parse().unwrap()]),
        credential_namespace: CRED_NS.into(),
        base_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        ..Settings::default()
    };
    let entra = Arc::new(EntraTokens::new(http_client(&Arc::new(Metrics::new()))));
    let e = entra.clone();
    let ctx = builder(s, settings)
        .clock(Arc::new(SystemClock))
        .live_clients(move |live| live.with_entra(e))
        .build();
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(run_controllers(
        ctx,
        ControllerOptions::new(4),
        ready.clone(),
        shutdown.clone(),
    ));
    eventually("controllers ready", || ready.load(Ordering::SeqCst)).await;
    Running {
        entra,
        shutdown,
        task,
    }
}

/// The platform's Secret and ClusterCredential, and namespaces team-a (allowed by name),
/// team-b (by label) and team-c (neither).
fn platform(s: &FakeApiServer, azure: &MockServer) {
    s.insert(&namespace(CRED_NS, &[]));
    s.insert(&namespace("team-a", &[]));
    s.insert(&namespace("team-b", &[(LABEL, "true")]));
    s.insert(&namespace("team-c", &[("tier", "dev")]));
    s.insert(&secret(
        CRED_NS,
        "azure-sp",
        &[("clientSecret", CLIENT_SECRET)],
    ));
    s.insert(&cluster_credential(
        azure,
        json!({"names": ["team-a"], "selector": {"matchLabels": {LABEL: "true"}}}),
    ));
}

#[tokio::test]
async fn namespaces_allowed_by_name_or_label_share_one_entra_token_and_others_get_nothing() {
    let azure = MockServer::start_async().await;
    let entra_calls = entra(&azure, CLIENT_SECRET, "arm-bearer").await;
    let arm_calls = arm(&azure, "arm-bearer", "nb-token").await;
    let s = server();
    platform(&s, &azure);
    for ns in ["team-a", "team-b", "team-c"] {
        s.insert(&ntr(ns, &azure));
    }
    let running = start(&s).await;

    eventually("each namespace gets its outcome", || {
        reason(&s, "team-a").as_deref() == Some("Synced")
            && reason(&s, "team-b").as_deref() == Some("Synced")
            && reason(&s, "team-c").as_deref() == Some("CredentialNotAllowed")
    })
    .await;
    // One Entra call for both namespaces; one notebook token each; nothing for team-c.
    assert_eq!(entra_calls.calls_async().await, 1);
    assert_eq!(arm_calls.calls_async().await, 2);
    for ns in ["team-a", "team-b"] {
        let token: Secret = s.get(ns, "ml-token").unwrap();
        assert_eq!(
            secret_value(&token, "accessToken").as_deref(),
            Some("nb-token")
        );
    }
    assert!(s.get::<Secret>("team-c", "ml-token").is_none());
    let o: NotebookTokenRequest = s.get("team-c", "ml").unwrap();
    let (_, _, message) = ready_of(&serde_json::to_value(&o).unwrap()["status"]).unwrap();
    assert!(
        message.contains("does not allow namespace team-c") && message.contains("azure-ml-prod"),
        "{message}"
    );
    // The client secret is nowhere in a team namespace.
    for secret in s.list::<Secret>(None) {
        if secret.metadata.namespace.as_deref() != Some(CRED_NS) {
            assert!(
                !serde_json::to_string(&secret)
                    .unwrap()
                    .contains(CLIENT_SECRET)
            );
        }
    }

    // The ClusterCredential's own status: provider, Valid, and its three users.
    eventually("the ClusterCredential reports itself", || {
        let st = credential_status(&s);
        st["provider"] == "Azure" && st["usedBy"] == 3 && st["conditions"][0]["reason"] == "Valid"
    })
    .await;
    let st = credential_status(&s);
    assert_eq!(
        st["conditions"][0]["message"],
        format!("Secret {CRED_NS}/azure-sp has key \"clientSecret\"")
    );
    assert!(!st.to_string().contains(CLIENT_SECRET));
    s.delete_object::<NotebookTokenRequest>("team-c", "ml");
    eventually("usedBy follows a deletion", || {
        credential_status(&s)["usedBy"] == 2
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn a_label_added_and_removed_while_running_grants_and_stops_access_within_seconds() {
    let azure = MockServer::start_async().await;
    let entra_calls = entra(&azure, CLIENT_SECRET, "arm-bearer").await;
    let arm_calls = arm(&azure, "arm-bearer", "nb-token").await;
    let s = server();
    platform(&s, &azure);
    s.insert(&ntr("team-c", &azure));
    let running = start(&s).await;
    eventually("not allowed at first", || {
        reason(&s, "team-c").as_deref() == Some("CredentialNotAllowed")
    })
    .await;
    assert_eq!(arm_calls.calls_async().await, 0);

    // The platform team labels the namespace: its token follows, without a restart.
    s.modify::<Namespace>("", "team-c", |n| {
        n["metadata"]["labels"][LABEL] = json!("true");
    });
    eventually("allowed once labelled", || {
        reason(&s, "team-c").as_deref() == Some("Synced")
    })
    .await;
    assert!(s.get::<Secret>("team-c", "ml-token").is_some());
    assert_eq!(arm_calls.calls_async().await, 1);

    // The label goes: the resource says so at once, and gets no further token.
    s.modify::<Namespace>("", "team-c", |n| {
        n["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove(LABEL);
    });
    eventually("not allowed once unlabelled", || {
        reason(&s, "team-c").as_deref() == Some("CredentialNotAllowed")
    })
    .await;
    let kept: Secret = s.get("team-c", "ml-token").expect("the last Secret stays");
    // Even a deleted token Secret, which would be minted again at once, is not.
    s.delete_object::<Secret>("team-c", kept.metadata.name.as_deref().unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(arm_calls.calls_async().await, 1, "no provider call after");
    assert_eq!(entra_calls.calls_async().await, 1);
    assert_eq!(
        reason(&s, "team-c").as_deref(),
        Some("CredentialNotAllowed")
    );
    assert!(s.get::<Secret>("team-c", "ml-token").is_none());
    running.stop().await;
}

#[tokio::test]
async fn a_rotated_client_secret_is_used_from_the_next_entra_call() {
    let azure = MockServer::start_async().await;
    let old = entra(&azure, CLIENT_SECRET, "arm-bearer").await;
    let new = entra(&azure, ROTATED_SECRET, "arm-bearer-2").await;
    let arm_old = arm(&azure, "arm-bearer", "nb-token").await;
    let arm_new = arm(&azure, "arm-bearer-2", "nb-token-2").await;
    let s = server();
    platform(&s, &azure);
    s.insert(&ntr("team-a", &azure));
    let running = start(&s).await;
    eventually("synced with the first secret", || {
        reason(&s, "team-a").as_deref() == Some("Synced")
    })
    .await;
    assert_eq!(running.entra.cached_len(), 1);

    // The platform team rotates the client secret: the cached Entra token of the old one is
    // dropped at once.
    s.modify::<Secret>(CRED_NS, "azure-sp", |sec| {
        sec["data"]["clientSecret"] = json!(k8s_openapi::ByteString(ROTATED_SECRET.into()));
    });
    eventually("the old Entra token is dropped", || {
        running.entra.cached_len() == 0
    })
    .await;
    // The next mint (here: a renew request) calls Entra with the new secret.
    s.modify::<NotebookTokenRequest>("team-a", "ml", |o| {
        o["metadata"]["annotations"] =
            json!({"workspaceaccess.io/renew-requested-at": "2026-12-05T10:00:00Z"});
    });
    eventually("a new token from the new secret", || {
        s.get::<Secret>("team-a", "ml-token")
            .and_then(|t| secret_value(&t, "accessToken"))
            .as_deref()
            == Some("nb-token-2")
    })
    .await;
    assert_eq!(old.calls_async().await, 1);
    assert_eq!(new.calls_async().await, 1);
    assert_eq!(arm_old.calls_async().await, 1);
    assert_eq!(arm_new.calls_async().await, 1);
    running.stop().await;
}

#[tokio::test]
async fn a_deleted_cluster_credential_turns_its_users_credentials_not_found_and_keeps_secrets() {
    let azure = MockServer::start_async().await;
    entra(&azure, CLIENT_SECRET, "arm-bearer").await;
    let arm_calls = arm(&azure, "arm-bearer", "nb-token").await;
    let s = server();
    platform(&s, &azure);
    s.insert(&ntr("team-a", &azure));
    s.insert(&ntr("team-b", &azure));
    let running = start(&s).await;
    eventually("both synced", || {
        reason(&s, "team-a").as_deref() == Some("Synced")
            && reason(&s, "team-b").as_deref() == Some("Synced")
    })
    .await;
    assert_eq!(running.entra.cached_len(), 1);

    s.delete_object::<ClusterCredential>("", "azure-ml-prod");
    eventually("both CredentialsNotFound", || {
        reason(&s, "team-a").as_deref() == Some("CredentialsNotFound")
            && reason(&s, "team-b").as_deref() == Some("CredentialsNotFound")
    })
    .await;
    for ns in ["team-a", "team-b"] {
        let token: Secret = s.get(ns, "ml-token").expect("the Secret is kept");
        assert_eq!(
            secret_value(&token, "accessToken").as_deref(),
            Some("nb-token")
        );
    }
    assert_eq!(running.entra.cached_len(), 0, "its Entra token is dropped");
    assert_eq!(arm_calls.calls_async().await, 2);

    // Created again, it is used again (a new resource version, the users reconcile).
    s.insert(&cluster_credential(
        &azure,
        json!({"names": ["team-a", "team-b"]}),
    ));
    eventually("synced again", || {
        reason(&s, "team-a").as_deref() == Some("Synced")
            && reason(&s, "team-b").as_deref() == Some("Synced")
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn a_missing_credential_secret_is_reported_and_its_creation_noticed() {
    let azure = MockServer::start_async().await;
    entra(&azure, CLIENT_SECRET, "arm-bearer").await;
    arm(&azure, "arm-bearer", "nb-token").await;
    let s = server();
    s.insert(&namespace(CRED_NS, &[]));
    s.insert(&cluster_credential(&azure, json!({"names": ["team-a"]})));
    // A Secret of that name in the resource's own namespace is not the credential's.
    s.insert(&secret(
        "team-a",
        "azure-sp",
        &[("clientSecret", CLIENT_SECRET)],
    ));
    s.insert(&ntr("team-a", &azure));
    let running = start(&s).await;
    eventually("both say the Secret is missing", || {
        reason(&s, "team-a").as_deref() == Some("CredentialsNotFound")
            && credential_status(&s)["conditions"][0]["reason"] == "CredentialsNotFound"
    })
    .await;
    let o: NotebookTokenRequest = s.get("team-a", "ml").unwrap();
    let (_, _, message) = ready_of(&serde_json::to_value(&o).unwrap()["status"]).unwrap();
    assert!(
        message.contains(&format!(
            "ClusterCredential azure-ml-prod: Secret {CRED_NS}/azure-sp not found"
        )),
        "{message}"
    );
    assert!(
        !s.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/api/v1/namespaces/team-a/secrets/azure-sp"),
        "the team's own Secret is never read for a ClusterCredential"
    );
    // The platform team creates it: noticed from the watch.
    s.insert(&secret(
        CRED_NS,
        "azure-sp",
        &[("clientSecret", CLIENT_SECRET)],
    ));
    eventually("Valid and Synced", || {
        credential_status(&s)["conditions"][0]["reason"] == "Valid"
            && reason(&s, "team-a").as_deref() == Some("Synced")
    })
    .await;
    running.stop().await;
}

/// The platform team's setup end to end: one service principal, one AccessKey and one
/// DataRobot key in the credential namespace, three team namespaces allowed; each team gets
/// its notebook token, Livy token and inventory with no credential in its namespace. Taking a
/// namespace off the lists stops it at once, for every kind.
#[tokio::test]
async fn three_teams_get_tokens_and_inventories_from_the_platforms_three_credentials() {
    use crate::livy::fake_emr::FakeEmr;
    use workspace_access_operator::api::{LivyToken, WorkspaceView};
    const AK_ID: &str = "LTAI-platform";
    const AK_SECRET: &str = "platform-ak-secret";
    const DR_KEY: &str = "platform-datarobot-key";
    let teams = ["team-a", "team-b", "team-c"];
    let azure = MockServer::start_async().await;
    let entra_calls = entra(&azure, CLIENT_SECRET, "arm-bearer").await;
    let arm_calls = arm(&azure, "arm-bearer", "nb-token").await;
    let datarobot = MockServer::start_async().await;
    let dr_calls = datarobot
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/sharedRoles/")
                .header("authorization", format!("Token {DR_KEY}"));
            then.status(200)
                .json_body(json!({"data": [{"notebookId": "nb1", "roles": [
                {"id": "u1", "name": "ann@example.com", "role": "OWNER",
                 "shareRecipientType": "user"}]}]}));
        })
        .await;
    let emr = FakeEmr::start(AK_ID, AK_SECRET, Arc::new(jiff::Timestamp::now)).await;
    emr.add_token(
        "w-1",
        "lc-1",
        "lctk-team",
        "team",
        "livy-token-content",
        Duration::from_secs(8 * 3600),
    );

    let s = server();
    s.insert(&namespace(CRED_NS, &[]));
    s.insert(&secret(
        CRED_NS,
        "azure-sp",
        &[("clientSecret", CLIENT_SECRET)],
    ));
    s.insert(&secret(
        CRED_NS,
        "emr-ak",
        &[("accessKeyId", AK_ID), ("accessKeySecret", AK_SECRET)],
    ));
    s.insert(&secret(CRED_NS, "datarobot", &[("apiToken", DR_KEY)]));
    let allowed = json!({"names": teams});
    s.insert(&cluster_credential(&azure, allowed.clone()));
    let other = |name: &str, spec: Value| -> ClusterCredential {
        serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "ClusterCredential",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap()
    };
    s.insert(&other(
        "emr-prod",
        json!({"alibaba": {"accessKeyRef": {"name": "emr-ak"}}, "allowedNamespaces": allowed}),
    ));
    s.insert(&other(
        "datarobot-prod",
        json!({"dataRobot": {"apiTokenRef": {"name": "datarobot", "key": "apiToken"}},
               "allowedNamespaces": allowed}),
    ));
    for ns in teams {
        s.insert(&namespace(ns, &[]));
        s.insert(&ntr(ns, &azure));
        let livy: LivyToken = serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "LivyToken",
            "metadata": {"name": "spark", "namespace": ns},
            "spec": {"regionId": "cn-hangzhou", "workspaceId": "w-1", "livyComputeId": "lc-1",
                     "endpoint": emr.base_url, "tokenId": "lctk-team",
                     "credentialRef": {"name": "emr-prod"}, "secretName": "spark-token"}
        }))
        .unwrap();
        s.insert(&livy);
        let wsv: WorkspaceView = serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
            "metadata": {"name": "notebooks", "namespace": ns},
            "spec": {"refreshInterval": "1h", "dataRobot": {
                "endpoint": datarobot.url("/api/v2"), "notebookIds": ["nb1"],
                "credentialRef": {"name": "datarobot-prod"}}}
        }))
        .unwrap();
        s.insert(&wsv);
    }
    let running = start(&s).await;

    let reasons = |ns: &str| {
        let of = |v: Option<Value>| {
            v.and_then(|v| ready_of(&v["status"]))
                .map(|(_, r, _)| r)
                .unwrap_or_default()
        };
        [
            of(s.get::<NotebookTokenRequest>(ns, "ml")
                .map(|o| serde_json::to_value(o).unwrap())),
            of(s.get::<LivyToken>(ns, "spark")
                .map(|o| serde_json::to_value(o).unwrap())),
            of(s.get::<WorkspaceView>(ns, "notebooks")
                .map(|o| serde_json::to_value(o).unwrap())),
        ]
    };
    eventually("every team's three resources are Synced", || {
        teams
            .iter()
            .all(|ns| reasons(ns) == ["Synced", "Synced", "Synced"])
    })
    .await;
    for ns in teams {
        let nb: Secret = s.get(ns, "ml-token").unwrap();
        assert_eq!(
            secret_value(&nb, "accessToken").as_deref(),
            Some("nb-token")
        );
        let livy: Secret = s.get(ns, "spark-token").unwrap();
        assert_eq!(
            secret_value(&livy, "token").as_deref(),
            Some("livy-token-content")
        );
        let view: WorkspaceView = s.get(ns, "notebooks").unwrap();
        assert_eq!(view.status.unwrap().notebooks[0].roles[0].id, "u1");
    }
    assert_eq!(
        entra_calls.calls_async().await,
        1,
        "one Entra token for all"
    );
    assert_eq!(arm_calls.calls_async().await, 3);
    assert_eq!(dr_calls.calls_async().await, 3);
    assert_eq!(emr.bad_signatures(), 0);
    // No credential in any team namespace: not in a Secret, not in any object.
    let credentials = [CLIENT_SECRET, AK_SECRET, DR_KEY];
    let team_objects: Vec<String> = s
        .list::<Secret>(None)
        .iter()
        .filter(|o| o.metadata.namespace.as_deref() != Some(CRED_NS))
        .map(|o| serde_json::to_string(o).unwrap())
        .chain(
            s.list::<NotebookTokenRequest>(None)
                .iter()
                .map(|o| serde_json::to_string(o).unwrap()),
        )
        .chain(
            s.list::<LivyToken>(None)
                .iter()
                .map(|o| serde_json::to_string(o).unwrap()),
        )
        .chain(
            s.list::<WorkspaceView>(None)
                .iter()
                .map(|o| serde_json::to_string(o).unwrap()),
        )
        .chain(
            s.list::<k8s_openapi::api::events::v1::Event>(None)
                .iter()
                .map(|o| serde_json::to_string(o).unwrap()),
        )
        .collect();
    for text in &team_objects {
        for c in credentials {
            assert!(!text.contains(c), "{c} in {text}");
        }
    }

    // team-b is taken off all three lists: every one of its resources stops at once.
    for name in ["azure-ml-prod", "emr-prod", "datarobot-prod"] {
        s.modify::<ClusterCredential>("", name, |c| {
            c["spec"]["allowedNamespaces"]["names"] = json!(["team-a", "team-c"]);
        });
    }
    eventually("team-b is refused for every kind", || {
        reasons("team-b") == ["CredentialNotAllowed"; 3]
    })
    .await;
    assert_eq!(reasons("team-a"), ["Synced", "Synced", "Synced"]);
    running.stop().await;
}
