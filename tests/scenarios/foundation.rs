//! The shared machinery: Secret writer, status writer, driver, controllers wiring.

use crate::support::fake_api::{FakeApiServer, Fault};
use crate::support::*;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use workspace_access_operator::api::common::*;
use workspace_access_operator::api::livy_token::ManagedLivyToken;
use workspace_access_operator::api::{
    LivyToken, LivyTokenSpec, NotebookTokenRequest, WorkspaceView,
};
use workspace_access_operator::controller::driver::reconcile;
use workspace_access_operator::controller::run::{ControllerOptions, run_controllers};
use workspace_access_operator::controller::secret::{
    Marks, SecretContent, SecretState, apply_secret, check_ownership,
};
use workspace_access_operator::controller::{Context, Settings};
use workspace_access_operator::redact::SecretString;

fn livy(ns: &str, name: &str) -> LivyToken {
    let mut o = LivyToken::new(
        name,
        LivyTokenSpec {
            region_id: "cn-hangzhou".into(),
            workspace_id: "w-1".into(),
            livy_compute_id: "lc-1".into(),
            endpoint: None,
            token_id: None,
            managed: Some(ManagedLivyToken {
                name: None,
                expire_days: 7,
                grace_period: None,
            }),
            alibaba: Some(AlibabaCredentials {
                access_key_ref: Some(AccessKeyRef {
                    name: "ali-ak".into(),
                    access_key_id_key: "accessKeyId".into(),
                    access_key_secret_key: "accessKeySecret".into(),
                    security_token_key: None,
                }),
                rrsa: false,
            }),
            credential_ref: None,
            secret_name: None,
            refresh_interval: None,
            renew_before: None,
            secret_template: None,
            rollout_restart_targets: Vec::new(),
        },
    );
    o.metadata.namespace = Some(ns.into());
    o
}

fn ntr(ns: &str, name: &str, secret_ref: &str) -> NotebookTokenRequest {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444", "resourceGroup": "rg",
                 "workspaceName": "testworkspace",
                 "azure": {"tenantId": "00000000-0000-0000-0000-000000000000",
                           "clientId": "11111111-1111-1111-1111-111111111111",
                           "clientSecretRef": {"name": secret_ref, "key": "clientSecret"}}}
    }))
    .unwrap()
}

fn wsv_datarobot(ns: &str, name: &str) -> WorkspaceView {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"dataRobot": {"notebookIds": ["abc"], "apiTokenRef": {"name": "dr", "key": "apiToken"}}}
    }))
    .unwrap()
}

fn content(token: &str) -> SecretContent {
    SecretContent {
        data: [("token".to_string(), SecretString::new(token))].into(),
        expires_at: "2026-11-23T18:00:00Z".parse().unwrap(),
        renew_at: "2026-11-23T17:10:00Z".parse().unwrap(),
    }
}

fn status_writes(s: &FakeApiServer) -> usize {
    s.writes()
        .iter()
        .filter(|r| r.path.ends_with("/status"))
        .count()
}

fn secret_writes(s: &FakeApiServer) -> usize {
    s.writes()
        .iter()
        .filter(|r| r.path.contains("/secrets"))
        .count()
}

#[tokio::test]
async fn secret_writer_creates_an_owned_labelled_secret_by_server_side_apply() {
    let s = server();
    let owner = s.insert(&livy("team-b", "spark"));
    let (ctx, _) = context(&s, Settings::default());
    let state = check_ownership(&ctx, &owner, "spark").await.unwrap();
    assert!(matches!(state, SecretState::Absent));
    let template = SecretTemplate {
        type_: None,
        labels: Some([("team".to_string(), "b".to_string())].into()),
        annotations: None,
        ..Default::default()
    };
    apply_secret(
        &ctx,
        &owner,
        "spark",
        &content("t0k-1"),
        Some(&template),
        &Marks::default(),
    )
    .await
    .unwrap();

    let secret: Secret = s.get("team-b", "spark").expect("Secret written");
    let meta = &secret.metadata;
    let refs = meta.owner_references.as_ref().unwrap();
    assert_eq!(refs[0].uid, owner.metadata.uid.clone().unwrap());
    assert_eq!(refs[0].controller, Some(true));
    assert_eq!(
        meta.labels.as_ref().unwrap()[MANAGED_BY_LABEL],
        MANAGED_BY_VALUE
    );
    assert_eq!(meta.labels.as_ref().unwrap()["team"], "b");
    assert_eq!(
        meta.annotations.as_ref().unwrap()[EXPIRES_AT_ANNOTATION],
        "2026-11-23T18:00:00Z"
    );
    assert_eq!(secret_value(&secret, "token").as_deref(), Some("t0k-1"));
    let writes = s.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        writes[0].content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(writes[0].query_param("fieldManager"), Some(FIELD_MANAGER));
    assert_eq!(
        s.field_managers::<Secret>("team-b", "spark"),
        vec![format!("{FIELD_MANAGER}/Apply")]
    );

    // Now it is owned, and deleting the owner deletes it.
    let state = check_ownership(&ctx, &owner, "spark").await.unwrap();
    assert!(matches!(state, SecretState::Owned(_)));
    s.delete_object::<LivyToken>("team-b", "spark");
    assert!(
        s.get::<Secret>("team-b", "spark").is_none(),
        "garbage-collected with its owner"
    );
}

#[tokio::test]
async fn a_foreign_secret_is_a_conflict_and_is_never_touched() {
    let s = server();
    s.insert(&secret("team-a", "azure-sp", &[("clientSecret", "x")]));
    s.insert(&secret("team-a", "ml", &[("precious", "data")]));
    let obj = s.insert(&ntr("team-a", "ml", "azure-sp"));
    let (ctx, _) = context(&s, Settings::default());
    s.clear_requests();

    let action = reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
    assert_eq!(
        action,
        Action::requeue(action_delay(&action)),
        "retried later"
    );
    let obj: NotebookTokenRequest = s.get("team-a", "ml").unwrap();
    let status = serde_json::to_value(obj.status.unwrap()).unwrap();
    let (ready, reason, message) = ready_of(&status).unwrap();
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "SecretConflict")
    );
    assert!(message.contains("team-a/ml already exists"), "{message}");
    assert_eq!(secret_writes(&s), 0, "the foreign Secret is not written");
    let kept: Secret = s.get("team-a", "ml").unwrap();
    assert_eq!(secret_value(&kept, "precious").as_deref(), Some("data"));
    assert!(kept.metadata.owner_references.is_none(), "not adopted");

    // A Secret owned by another resource of ours is a conflict too.
    let other = s.insert(&livy("team-a", "other"));
    apply_secret(
        &ctx,
        &other,
        "shared",
        &content("x"),
        None,
        &Marks::default(),
    )
    .await
    .unwrap();
    let mine = s.insert(&livy("team-a", "mine"));
    let err = check_ownership(&ctx, &mine, "shared").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("another workspaceaccess.io resource"),
        "{err}"
    );
}

#[tokio::test]
async fn status_is_written_once_and_not_again_when_nothing_changed() {
    let s = server();
    // A DataRobot endpoint on a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut view = wsv_datarobot("platform", "dr");
    view.spec.data_robot.as_mut().unwrap().endpoint =
        Some(format!("http://127.0.0.1:{port}/api/v2"));
    let obj = s.insert(&view);
    let settings = Settings {
        endpoint_policy: workspace_access_operator::providers::endpoint::EndpointPolicy::new(vec![
            format!("127.0.0.1:{port}").parse().unwrap(),
        ]),
        ..Settings::default()
    };
    let (ctx, clock) = context(&s, settings);
    s.clear_requests();

    reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
    assert_eq!(status_writes(&s), 1);
    let events = s
        .writes()
        .iter()
        .filter(|r| r.path.contains("/events"))
        .count();
    assert_eq!(events, 1, "one Warning event for the transition");
    let obj: WorkspaceView = s.get("platform", "dr").unwrap();
    let status = serde_json::to_value(obj.status.clone().unwrap()).unwrap();
    assert_eq!(ready_of(&status).unwrap().1, "CredentialsNotFound");
    assert_eq!(status["observedGeneration"], 1);
    let rv = s.resource_version();

    // The same failure again, later: nothing to write (only nextSyncTime would differ).
    clock.advance(std::time::Duration::from_secs(30));
    s.clear_requests();
    reconcile(Arc::new(obj.clone()), ctx.clone()).await.unwrap();
    assert_eq!(
        s.writes().len(),
        0,
        "an unchanged resync writes nothing: {:?}",
        s.writes()
    );
    assert_eq!(s.resource_version(), rv, "no watch event");
    let key = workspace_access_operator::controller::object_key(&obj);
    assert_eq!(
        ctx.backoff.count(&key),
        2,
        "two failures in a row back off further"
    );

    // Fixing the cause changes the condition (here to the provider being unreachable).
    s.insert(&secret("platform", "dr", &[("apiToken", "tok")]));
    reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
    let obj: WorkspaceView = s.get("platform", "dr").unwrap();
    let status = serde_json::to_value(obj.status.unwrap()).unwrap();
    let (ready, reason, _) = ready_of(&status).unwrap();
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "ProviderError")
    );
    // Transition time unchanged: still False.
    assert_eq!(
        status["conditions"][0]["lastTransitionTime"],
        t0().to_string()
    );
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_old_secret() {
    let s = server();
    let mut owner = livy("team-b", "spark");
    // As after the first reconciliation, which adds the LivyToken finalizer.
    owner.metadata.finalizers = Some(vec![
        workspace_access_operator::controller::livy::FINALIZER.into(),
    ]);
    let owner = s.insert(&owner);
    let (ctx, _) = context(&s, Settings::default());
    // A previous sync wrote the Secret.
    apply_secret(
        &ctx,
        &owner,
        "spark",
        &content("still-valid"),
        None,
        &Marks::default(),
    )
    .await
    .unwrap();
    s.clear_requests();
    // Now the credentials are gone: the sync fails before any provider call.
    let action = reconcile(Arc::new(owner), ctx.clone()).await.unwrap();
    let delay = action_delay(&action);
    assert!(
        delay >= std::time::Duration::from_secs(2) && delay <= std::time::Duration::from_secs(300),
        "{delay:?}"
    );
    assert_eq!(secret_writes(&s), 0);
    let kept: Secret = s.get("team-b", "spark").unwrap();
    assert_eq!(secret_value(&kept, "token").as_deref(), Some("still-valid"));
    let obj: LivyToken = s.get("team-b", "spark").unwrap();
    let status = serde_json::to_value(obj.status.unwrap()).unwrap();
    assert_eq!(ready_of(&status).unwrap().1, "CredentialsNotFound");
    assert!(
        status["nextSyncTime"].is_string(),
        "the retry time is shown"
    );
}

#[tokio::test]
async fn problems_only_a_spec_change_fixes_wait_for_one() {
    let s = server();
    s.insert(&secret("team-a", "azure-sp", &[("clientSecret", "x")]));
    let mut bad = ntr("team-a", "ml", "azure-sp");
    bad.spec.endpoint = Some("https://evil.example.com".into());
    let bad = s.insert(&bad);
    let mut wi = ntr("team-a", "wi", "azure-sp");
    let azure = wi.spec.azure.as_mut().unwrap();
    azure.client_secret_ref = None;
    azure.workload_identity = true;
    let wi = s.insert(&wi);
    let (ctx, _) = context(&s, Settings::default());

    let action = reconcile(Arc::new(bad), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let obj: NotebookTokenRequest = s.get("team-a", "ml").unwrap();
    let (_, reason, message) =
        ready_of(&serde_json::to_value(obj.status.unwrap()).unwrap()).unwrap();
    assert_eq!(reason, "EndpointNotAllowed");
    assert!(message.contains("evil.example.com"), "{message}");

    let action = reconcile(Arc::new(wi), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    let obj: NotebookTokenRequest = s.get("team-a", "wi").unwrap();
    let (_, reason, _) = ready_of(&serde_json::to_value(obj.status.unwrap()).unwrap()).unwrap();
    assert_eq!(reason, "PodIdentityNotAllowed");
}

#[tokio::test]
async fn status_write_failures_surface_as_errors_for_backoff() {
    let s = server();
    let obj = s.insert(&wsv_datarobot("platform", "dr"));
    let (ctx, _) = context(&s, Settings::default());
    s.fail_next(Fault::new(500).method("PATCH").path_contains("/status"));
    let err = reconcile(Arc::new(obj.clone()), ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(err.reason().as_str(), "KubernetesError");
    let action = workspace_access_operator::controller::driver::error_policy(
        Arc::new(obj),
        &err,
        ctx.clone(),
    );
    assert!(action_delay(&action) >= std::time::Duration::from_secs(2));
}

async fn start_controllers(
    s: &FakeApiServer,
) -> (
    Arc<AtomicBool>,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    Arc<workspace_access_operator::metrics::Metrics>,
) {
    start_controllers_with(s, ControllerOptions::new(4)).await
}

async fn start_controllers_with(
    s: &FakeApiServer,
    options: ControllerOptions,
) -> (
    Arc<AtomicBool>,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
    Arc<workspace_access_operator::metrics::Metrics>,
) {
    let (ctx, _) = context_mut(s, Settings::default());
    let ctx = Context {
        clock: Arc::new(workspace_access_operator::controller::SystemClock),
        ..ctx
    };
    let metrics = ctx.metrics.clone();
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(run_controllers(
        ctx,
        options,
        ready.clone(),
        shutdown.clone(),
    ));
    (ready, shutdown, task, metrics)
}

/// With ClusterCredentials turned off, `--watch-namespace` keeps every request of the operator
/// inside that namespace (a Role there is all it needs).
#[tokio::test]
async fn a_watch_namespace_confines_the_operator_to_it() {
    let s = server();
    let options = ControllerOptions {
        namespace: Some("team-a".into()),
        cluster_credentials: false,
        ..ControllerOptions::new(4)
    };
    let (ready, shutdown, _task, _) = start_controllers_with(&s, options).await;
    eventually("controllers ready", || ready.load(Ordering::SeqCst)).await;

    s.insert(&ntr("team-b", "elsewhere", "missing"));
    s.insert(&ntr("team-a", "ml", "missing"));
    eventually("the resource in the watched namespace reports", || {
        s.get::<NotebookTokenRequest>("team-a", "ml")
            .and_then(|o| o.status)
            .is_some()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        s.get::<NotebookTokenRequest>("team-b", "elsewhere")
            .unwrap()
            .status
            .is_none(),
        "a resource outside the watched namespace was reconciled"
    );
    // Every list and watch the operator made was confined to the namespace.
    let outside: Vec<String> = s
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && !r.path.contains("/namespaces/team-a/"))
        .map(|r| r.path.clone())
        .collect();
    assert!(outside.is_empty(), "requests outside team-a: {outside:?}");
    shutdown.cancel();
}

/// With ClusterCredentials on (the default), `--watch-namespace` still reconciles only that
/// namespace, and reads outside it only what ClusterCredentials need: the ClusterCredentials
/// (cluster-scoped), the Secrets of the credential namespace and that one Namespace's labels.
#[tokio::test]
async fn a_watch_namespace_with_cluster_credentials_reads_only_what_they_need_outside() {
    let s = server();
    let options = ControllerOptions {
        namespace: Some("team-a".into()),
        ..ControllerOptions::new(4)
    };
    let (ready, shutdown, _task, _) = start_controllers_with(&s, options).await;
    eventually("controllers ready", || ready.load(Ordering::SeqCst)).await;
    s.insert(&ntr("team-b", "elsewhere", "missing"));
    s.insert(&ntr("team-a", "ml", "missing"));
    eventually("the resource in the watched namespace reports", || {
        s.get::<NotebookTokenRequest>("team-a", "ml")
            .and_then(|o| o.status)
            .is_some()
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        s.get::<NotebookTokenRequest>("team-b", "elsewhere")
            .unwrap()
            .status
            .is_none()
    );
    let outside: BTreeSet<String> = s
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && !r.path.contains("/namespaces/team-a/"))
        .map(|r| match r.path.as_str() {
            "/api/v1/namespaces" => {
                format!("{} {:?}", r.path, r.query_param("fieldSelector"))
            }
            p => p.to_owned(),
        })
        .collect();
    let expected: BTreeSet<String> = [
        "/apis/workspaceaccess.io/v1alpha1/clustercredentials",
        "/api/v1/namespaces/workspace-access-operator/secrets",
        "/api/v1/namespaces Some(\"metadata.name=team-a\")",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(outside, expected);
    shutdown.cancel();
}

#[tokio::test]
async fn controllers_reconcile_applied_resources_and_stop_cleanly() {
    let s = server();
    let (ready, shutdown, task, _) = start_controllers(&s).await;
    eventually("controllers ready", || ready.load(Ordering::SeqCst)).await;

    s.insert(&wsv_datarobot("platform", "dr"));
    s.insert(&ntr("team-a", "ml", "missing"));
    s.insert(&livy("team-b", "spark"));
    eventually("all three report", || {
        let reasons: Vec<Option<String>> = vec![
            s.get::<WorkspaceView>("platform", "dr")
                .and_then(|o| o.status)
                .map(|st| ready_of(&serde_json::to_value(st).unwrap()).unwrap().1),
            s.get::<NotebookTokenRequest>("team-a", "ml")
                .and_then(|o| o.status)
                .map(|st| ready_of(&serde_json::to_value(st).unwrap()).unwrap().1),
            s.get::<LivyToken>("team-b", "spark")
                .and_then(|o| o.status)
                .map(|st| ready_of(&serde_json::to_value(st).unwrap()).unwrap().1),
        ];
        reasons
            .iter()
            .all(|r| r.as_deref() == Some("CredentialsNotFound"))
    })
    .await;

    // Our own status writes don't re-trigger reconciliation: the status stays written once.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let writes_for_dr = s
        .writes()
        .iter()
        .filter(|r| r.path.ends_with("/workspaceviews/dr/status"))
        .count();
    assert_eq!(writes_for_dr, 1);

    shutdown.cancel();
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("controllers stop after shutdown")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(!ready.load(Ordering::SeqCst));
}

#[tokio::test]
async fn deleting_an_owned_secret_retriggers_its_owner() {
    let s = server();
    s.insert(&secret(
        "team-b",
        "ali-ak",
        &[("accessKeyId", "id"), ("accessKeySecret", "sk")],
    ));
    let owner = s.insert(&livy("team-b", "spark"));
    let (ready, shutdown, task, metrics) = start_controllers(&s).await;
    eventually("controllers ready", || ready.load(Ordering::SeqCst)).await;
    let reconciles = || {
        metrics
            .encode()
            .lines()
            .find(|l| l.starts_with("workspace_access_reconciles_total{kind=\"LivyToken\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    eventually("first reconcile", || reconciles() >= 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let before = reconciles();

    // An owned Secret appears (as a sync would write it) and is then deleted by a user.
    let (ctx, _) = context(&s, Settings::default());
    apply_secret(
        &ctx,
        &owner,
        "spark",
        &content("x"),
        None,
        &Marks::default(),
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    s.delete_object::<Secret>("team-b", "spark");
    eventually("owner reconciled after its Secret was deleted", || {
        reconciles() > before
    })
    .await;

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn missing_crds_are_reported_clearly() {
    let s = FakeApiServer::new(); // no CRDs registered
    let (ctx, _) = context_mut(&s, Settings::default());
    let err = run_controllers(
        ctx,
        ControllerOptions::new(1),
        Arc::new(AtomicBool::new(false)),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("install the CRDs"), "{msg}");
}

#[tokio::test]
async fn conflicts_on_secret_and_status_writes_are_retried() {
    let s = server();
    let owner = s.insert(&livy("team-b", "spark"));
    let (ctx, _) = context(&s, Settings::default());
    s.fail_next(
        Fault::new(409)
            .method("PATCH")
            .path_contains("/secrets/")
            .times(2),
    );
    apply_secret(
        &ctx,
        &owner,
        "spark",
        &content("t"),
        None,
        &Marks::default(),
    )
    .await
    .expect("two conflicts, then success");
    assert_eq!(
        secret_value(&s.get("team-b", "spark").unwrap(), "token").as_deref(),
        Some("t")
    );

    // A conflict that doesn't go away is an error (and the driver backs off).
    s.fail_next(
        Fault::new(409)
            .method("PATCH")
            .path_contains("/secrets/")
            .times(10),
    );
    let err = apply_secret(
        &ctx,
        &owner,
        "spark",
        &content("u"),
        None,
        &Marks::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason().as_str(), "KubernetesError");
    let patches = s
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/secrets/") && r.status == 409)
        .count();
    assert_eq!(patches, 2 + 4, "bounded attempts");

    // Status writes too.
    let obj = s.insert(&wsv_datarobot("platform", "dr"));
    s.fail_next(
        Fault::new(409)
            .method("PATCH")
            .path_contains("/status")
            .times(3),
    );
    reconcile(Arc::new(obj), ctx.clone())
        .await
        .expect("status written after 3 conflicts");
    let obj: WorkspaceView = s.get("platform", "dr").unwrap();
    assert!(obj.status.is_some());
}
