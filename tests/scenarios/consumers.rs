//! Tokens reach their consumers: templated Secret keys, rollout restarts when a token changes,
//! and repair of a Secret someone else changed or deleted. Against the in-memory API server
//! with a scripted provider seam whose every mint is a new token (`tok-1`, `tok-2`, ...).

use crate::support::fake_api::FakeApiServer;
use crate::support::fake_clients::{FakeClients, Handle};
use crate::support::*;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use workspace_access_operator::api::NotebookTokenRequest;
use workspace_access_operator::api::common::{
    DATA_DIGEST_ANNOTATION, RESTART_PENDING_ANNOTATION, RESTARTED_AT_ANNOTATION,
};
use workspace_access_operator::controller::driver::reconcile;
use workspace_access_operator::controller::run::{ControllerOptions, run_controllers};
use workspace_access_operator::controller::{Clock, Context, ManualClock, Settings, SystemClock};
use workspace_access_operator::providers::azure_ml::NotebookAccessToken;
use workspace_access_operator::redact::SecretString;

const NS: &str = "team-a";
const WINDOW: Duration = Duration::from_millis(100);

/// A seam fake whose every notebook token is new, and the number minted so far.
fn minting() -> (FakeClients, Arc<AtomicUsize>) {
    let minted = Arc::new(AtomicUsize::new(0));
    let m = minted.clone();
    let fake = FakeClients {
        notebook_access_token: Arc::new(move |_| {
            let n = m.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(NotebookAccessToken {
                access_token: SecretString::new(format!("tok-{n}")),
                refresh_token: None,
                expires_in: Duration::from_secs(3600),
                notebook_resource_id: Some("nb-1".into()),
                host_name: None,
                public_dns: Some("nb.example".into()),
                token_type: Some("Bearer".into()),
                scope: None,
                request_id: None,
            })
        }),
        ..Default::default()
    };
    (fake, minted)
}

fn apps_server() -> FakeApiServer {
    server()
}

fn settings() -> Settings {
    Settings {
        rollout_restart_window: WINDOW,
        base_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        ..Settings::default()
    }
}

fn ntr(name: &str, extra: Value) -> NotebookTokenRequest {
    let mut spec = json!({
        "subscriptionId": "00000000-1111-2222-3333-444444444444",
        "resourceGroup": "rg", "workspaceName": "okws",
        "azure": {"tenantId": "contoso.onmicrosoft.com",
                  "clientId": "11111111-1111-1111-1111-111111111111",
                  "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"}},
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
        "metadata": {"name": name, "namespace": NS}, "spec": spec,
    }))
    .unwrap()
}

fn workload<K: serde::de::DeserializeOwned>(kind: &str, name: &str, labels: Value) -> K {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": kind,
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap()
}

/// The restartedAt annotation of a Deployment's pod template.
fn restarted_at(s: &FakeApiServer, name: &str) -> Option<String> {
    let d: Deployment = s.get(NS, name)?;
    d.spec
        .template
        .metadata?
        .annotations?
        .get(RESTARTED_AT_ANNOTATION)
        .cloned()
}

/// PATCH requests to workloads of `plural` named `name`.
fn patches(s: &FakeApiServer, plural: &str, name: &str) -> usize {
    let path = format!("/apis/apps/v1/namespaces/{NS}/{plural}/{name}");
    s.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == path)
        .count()
}

fn events(s: &FakeApiServer, reason: &str) -> Vec<Event> {
    s.list::<Event>(Some(NS))
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

fn status(s: &FakeApiServer, name: &str) -> Value {
    serde_json::to_value(
        s.get::<NotebookTokenRequest>(NS, name)
            .unwrap()
            .status
            .unwrap(),
    )
    .unwrap()
}

fn token_secret(s: &FakeApiServer, name: &str) -> Secret {
    s.get(NS, name).expect("token Secret")
}

struct Direct {
    s: FakeApiServer,
    ctx: Arc<Context>,
    clock: Arc<ManualClock>,
    fake: Arc<FakeClients>,
    minted: Arc<AtomicUsize>,
}

/// Reconcilers called directly, with a manual clock.
fn direct(s: FakeApiServer) -> Direct {
    let (fake, minted) = minting();
    let fake = Arc::new(fake);
    let clock = Arc::new(ManualClock::new(t0()));
    let ctx = Arc::new(operator(&s, &fake, clock.clone()));
    Direct {
        s,
        ctx,
        clock,
        fake,
        minted,
    }
}

fn operator(
    s: &FakeApiServer,
    fake: &Arc<FakeClients>,
    clock: Arc<dyn workspace_access_operator::controller::Clock>,
) -> Context {
    builder(s, settings())
        .clock(clock)
        .clients(Arc::new(Handle(fake.clone())))
        .build()
}

impl Direct {
    async fn sync(&self, name: &str) {
        let obj: NotebookTokenRequest = self.s.get(NS, name).unwrap();
        reconcile(Arc::new(obj), self.ctx.clone()).await.unwrap();
    }

    /// Past the renewal time of the token in `name`'s status.
    fn past_renewal(&self, name: &str) {
        let renew_at: jiff::Timestamp = status(&self.s, name)["renewAt"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        self.clock.set(renew_at);
    }
}

// ---------------------------------------------------------------------------------------------
// Templated keys

#[tokio::test]
async fn a_templated_netrc_key_tracks_every_renewal() {
    let d = direct(server());
    d.s.insert(&ntr(
        "ml",
        json!({"secretTemplate": {"data": {
            "netrc": "machine {{ publicDns }} login token password {{ accessToken }}\n",
            "NOTEBOOK_URL": "https://{{ publicDns }}/?ns={{ namespace | urlencode }}&r={{ name }}"
        }}}),
    ));
    d.sync("ml").await;
    let secret = token_secret(&d.s, "ml");
    assert_eq!(
        secret_value(&secret, "netrc").as_deref(),
        Some("machine nb.example login token password tok-1\n")
    );
    assert_eq!(
        secret_value(&secret, "NOTEBOOK_URL").as_deref(),
        Some("https://nb.example/?ns=team-a&r=ml")
    );
    assert_eq!(
        secret_value(&secret, "accessToken").as_deref(),
        Some("tok-1")
    );

    d.past_renewal("ml");
    d.sync("ml").await;
    assert_eq!(d.minted.load(Ordering::SeqCst), 2);
    assert_eq!(
        secret_value(&token_secret(&d.s, "ml"), "netrc").as_deref(),
        Some("machine nb.example login token password tok-2\n")
    );
}

#[tokio::test]
async fn templated_only_writes_just_the_templated_keys() {
    let d = direct(server());
    d.s.insert(&ntr(
        "ml",
        json!({"secretTemplate": {"keys": "TemplatedOnly",
                                  "data": {"token": "{{ accessToken }}"}}}),
    ));
    d.sync("ml").await;
    let secret = token_secret(&d.s, "ml");
    let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["token"]);
    assert_eq!(secret_value(&secret, "token").as_deref(), Some("tok-1"));
    // The status still tells the token's expiry (from the token, not the Secret).
    assert!(status(&d.s, "ml")["expiresAt"].is_string());
}

#[tokio::test]
async fn a_template_error_is_invalid_spec_naming_the_key_and_nothing_is_minted_or_written() {
    let d = direct(server());
    d.s.insert(&ntr(
        "ml",
        json!({"secretTemplate": {"data": {"netrc": "password {{ acessToken }}"}}}),
    ));
    d.sync("ml").await;
    let st = status(&d.s, "ml");
    let (ready, reason, message) = ready_of(&st).unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(
        message.contains(r#"spec.secretTemplate.data["netrc"]"#)
            && message.contains("undefined variable acessToken"),
        "{message}"
    );
    assert_eq!(d.minted.load(Ordering::SeqCst), 0, "no provider call");
    assert!(d.s.get::<Secret>(NS, "ml").is_none(), "nothing written");
    assert!(d.fake.calls().is_empty(), "{:?}", d.fake.calls());
}

// ---------------------------------------------------------------------------------------------
// Rollout restarts

fn with_targets(targets: Value) -> Value {
    json!({"rolloutRestartTargets": targets})
}

#[tokio::test]
async fn a_deployment_is_restarted_once_per_token_change_and_never_otherwise() {
    let d = direct(apps_server());
    d.s.insert(&workload::<Deployment>("Deployment", "proxy", json!({})));
    d.s.insert(&ntr(
        "ml",
        with_targets(json!([{"kind": "Deployment", "name": "proxy"}])),
    ));

    // First creation: no restart.
    d.sync("ml").await;
    tokio::time::sleep(WINDOW * 3).await;
    d.sync("ml").await;
    assert_eq!(patches(&d.s, "deployments", "proxy"), 0);
    assert!(restarted_at(&d.s, "proxy").is_none());
    let secret = token_secret(&d.s, "ml");
    assert!(
        !secret
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(RESTART_PENDING_ANNOTATION)
    );
    assert!(
        secret
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(DATA_DIGEST_ANNOTATION)
    );

    // Resyncs that change no token: none.
    d.clock.advance(Duration::from_secs(600));
    d.sync("ml").await;
    tokio::time::sleep(WINDOW * 3).await;
    assert_eq!(patches(&d.s, "deployments", "proxy"), 0);

    // A renewal: the Secret is marked in the same write, the restart follows the window.
    d.past_renewal("ml");
    d.sync("ml").await;
    let secret = token_secret(&d.s, "ml");
    assert_eq!(
        secret_value(&secret, "accessToken").as_deref(),
        Some("tok-2")
    );
    let mark = secret.metadata.annotations.as_ref().unwrap()[RESTART_PENDING_ANNOTATION].clone();
    assert_eq!(
        mark,
        workspace_access_operator::time::rfc3339(d.clock.now())
    );
    eventually("the Deployment restarted", || {
        restarted_at(&d.s, "proxy").is_some()
    })
    .await;
    assert_eq!(patches(&d.s, "deployments", "proxy"), 1);
    assert_eq!(
        restarted_at(&d.s, "proxy").as_deref(),
        Some(mark.as_str()),
        "the restart time"
    );
    // The next sync records it and removes the mark.
    d.sync("ml").await;
    let last = &status(&d.s, "ml")["lastRolloutRestart"];
    assert_eq!(last["targets"], json!(["Deployment/proxy"]));
    assert_eq!(last["message"], "restarted Deployment/proxy");
    assert!(
        !token_secret(&d.s, "ml")
            .metadata
            .annotations
            .unwrap()
            .contains_key(RESTART_PENDING_ANNOTATION)
    );
    assert_eq!(events(&d.s, "RolloutRestarted").len(), 1);
    assert_eq!(ready_of(&status(&d.s, "ml")).unwrap().0, "True");

    // More resyncs and a restarted operator (a new context, nothing in memory): no restart.
    d.sync("ml").await;
    let restarted = Arc::new(operator(&d.s, &d.fake, d.clock.clone()));
    let obj: NotebookTokenRequest = d.s.get(NS, "ml").unwrap();
    reconcile(Arc::new(obj), restarted).await.unwrap();
    tokio::time::sleep(WINDOW * 3).await;
    assert_eq!(patches(&d.s, "deployments", "proxy"), 1);
    assert_eq!(d.minted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn two_resources_sharing_a_deployment_restart_it_once_per_window() {
    let d = direct(apps_server());
    d.s.insert(&workload::<Deployment>("Deployment", "shared", json!({})));
    let target = with_targets(json!([{"kind": "Deployment", "name": "shared"}]));
    d.s.insert(&ntr("a", target.clone()));
    d.s.insert(&ntr("b", target));
    d.sync("a").await;
    d.sync("b").await;
    // Both renew within one window.
    d.clock.advance(Duration::from_secs(3600));
    d.sync("a").await;
    d.sync("b").await;
    eventually("the Deployment restarted", || {
        restarted_at(&d.s, "shared").is_some()
    })
    .await;
    tokio::time::sleep(WINDOW * 3).await;
    assert_eq!(patches(&d.s, "deployments", "shared"), 1);
    d.sync("a").await;
    d.sync("b").await;
    for name in ["a", "b"] {
        assert_eq!(
            status(&d.s, name)["lastRolloutRestart"]["targets"],
            json!(["Deployment/shared"]),
            "{name}"
        );
    }
    // Changes in separate windows restart it again.
    d.clock.advance(Duration::from_secs(3600));
    d.sync("a").await;
    eventually("restarted again", || {
        patches(&d.s, "deployments", "shared") == 2
    })
    .await;
}

#[tokio::test]
async fn selectors_reach_every_matching_workload_of_their_kind() {
    let d = direct(apps_server());
    for (name, app) in [
        ("spark-0", "spark-client"),
        ("spark-1", "spark-client"),
        ("web", "web"),
    ] {
        d.s.insert(&workload::<StatefulSet>(
            "StatefulSet",
            name,
            json!({"app": app}),
        ));
    }
    d.s.insert(&workload::<DaemonSet>(
        "DaemonSet",
        "agent",
        json!({"app": "spark-client"}),
    ));
    d.s.insert(&ntr(
        "ml",
        with_targets(json!([
            {"kind": "StatefulSet", "selector": {"matchLabels": {"app": "spark-client"}}},
            {"kind": "DaemonSet", "selector": {"matchExpressions": [
                {"key": "app", "operator": "In", "values": ["spark-client"]}]}}
        ])),
    ));
    d.sync("ml").await;
    d.past_renewal("ml");
    d.sync("ml").await;
    eventually("the batch ran", || {
        patches(&d.s, "daemonsets", "agent") == 1
    })
    .await;
    assert_eq!(patches(&d.s, "statefulsets", "spark-0"), 1);
    assert_eq!(patches(&d.s, "statefulsets", "spark-1"), 1);
    assert_eq!(patches(&d.s, "statefulsets", "web"), 0);
    let sts: StatefulSet = d.s.get(NS, "spark-1").unwrap();
    assert!(
        sts.spec
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()
            .contains_key(RESTARTED_AT_ANNOTATION)
    );
    d.sync("ml").await;
    assert_eq!(
        status(&d.s, "ml")["lastRolloutRestart"]["targets"],
        json!([
            "StatefulSet/spark-0",
            "StatefulSet/spark-1",
            "DaemonSet/agent"
        ])
    );
}

#[tokio::test]
async fn a_missing_target_is_a_warning_and_the_resource_stays_ready() {
    let d = direct(apps_server());
    d.s.insert(&workload::<Deployment>("Deployment", "proxy", json!({})));
    d.s.insert(&ntr(
        "ml",
        with_targets(json!([
            {"kind": "Deployment", "name": "gone"},
            {"kind": "Deployment", "name": "proxy"},
            {"kind": "StatefulSet", "selector": {"matchLabels": {"app": "none"}}}
        ])),
    ));
    d.sync("ml").await;
    d.past_renewal("ml");
    d.sync("ml").await;
    eventually("the batch ran", || restarted_at(&d.s, "proxy").is_some()).await;
    d.sync("ml").await;
    let st = status(&d.s, "ml");
    assert_eq!(ready_of(&st).unwrap().0, "True");
    let message = st["lastRolloutRestart"]["message"].as_str().unwrap();
    assert_eq!(
        message,
        "restarted Deployment/proxy; no StatefulSet matches the selector; Deployment/gone not found"
    );
    let warnings = events(&d.s, "RolloutRestartFailed");
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].type_.as_deref(), Some("Warning"));
    assert!(
        warnings[0]
            .note
            .as_deref()
            .unwrap()
            .contains("Deployment/gone not found")
    );
    // The mark is gone: a failed target is not retried until the next change.
    tokio::time::sleep(WINDOW * 3).await;
    d.sync("ml").await;
    assert_eq!(patches(&d.s, "deployments", "proxy"), 1);
}

#[tokio::test]
async fn a_restart_owed_when_the_operator_stopped_is_made_by_the_next_one() {
    let d = direct(apps_server());
    d.s.insert(&workload::<Deployment>("Deployment", "proxy", json!({})));
    d.s.insert(&ntr(
        "ml",
        with_targets(json!([{"kind": "Deployment", "name": "proxy"}])),
    ));
    d.sync("ml").await;
    d.past_renewal("ml");
    d.sync("ml").await;
    // The operator stops before its window ends: the mark stays on the Secret.
    d.ctx.rollouts.stop();
    tokio::time::sleep(WINDOW * 3).await;
    assert_eq!(patches(&d.s, "deployments", "proxy"), 0);
    assert!(
        token_secret(&d.s, "ml")
            .metadata
            .annotations
            .unwrap()
            .contains_key(RESTART_PENDING_ANNOTATION)
    );
    let next = Arc::new(operator(&d.s, &d.fake, d.clock.clone()));
    let obj: NotebookTokenRequest = d.s.get(NS, "ml").unwrap();
    reconcile(Arc::new(obj), next.clone()).await.unwrap();
    eventually("restarted by the next operator", || {
        patches(&d.s, "deployments", "proxy") == 1
    })
    .await;
    let obj: NotebookTokenRequest = d.s.get(NS, "ml").unwrap();
    reconcile(Arc::new(obj), next).await.unwrap();
    assert_eq!(
        status(&d.s, "ml")["lastRolloutRestart"]["targets"],
        json!(["Deployment/proxy"])
    );
    tokio::time::sleep(WINDOW * 3).await;
    assert_eq!(patches(&d.s, "deployments", "proxy"), 1, "once");
    assert_eq!(d.minted.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------------------
// Drift repair, with the controllers running

struct Running {
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

async fn start(s: &FakeApiServer, fake: &Arc<FakeClients>) -> Running {
    let ctx = operator(s, fake, Arc::new(SystemClock));
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(run_controllers(
        ctx,
        ControllerOptions::new(4),
        ready.clone(),
        shutdown.clone(),
    ));
    eventually("controllers ready", || ready.load(Ordering::SeqCst)).await;
    Running { shutdown, task }
}

/// GETs of the Secret `name` with its data (not lists, watches or the metadata-only read of
/// an ownership check).
fn secret_reads(s: &FakeApiServer, name: &str) -> usize {
    let path = format!("/api/v1/namespaces/{NS}/secrets/{name}");
    s.requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == path && !r.is_watch())
        .filter(|r| {
            !r.accept
                .as_deref()
                .unwrap_or_default()
                .contains("PartialObjectMetadata")
        })
        .count()
}

fn edit_secret(s: &FakeApiServer, name: &str, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    s.modify::<Secret>(NS, name, |o| {
        f(o["data"].as_object_mut().unwrap());
    });
}

fn b64(v: &str) -> Value {
    json!(k8s_openapi::ByteString(v.as_bytes().to_vec()))
}

fn netrc_ntr() -> NotebookTokenRequest {
    ntr(
        "ml",
        json!({"secretTemplate": {"data": {"netrc": "password {{ accessToken }}\n"}}}),
    )
}

#[tokio::test]
async fn a_secret_edited_by_hand_is_put_back_within_seconds_without_a_new_token() {
    let (fake, minted) = minting();
    let fake = Arc::new(fake);
    let s = server();
    s.insert(&netrc_ntr());
    let running = start(&s, &fake).await;
    eventually("Secret written", || s.get::<Secret>(NS, "ml").is_some()).await;
    let written = token_secret(&s, "ml");
    let written_data = written.data.clone().unwrap();
    // The operator's own writes (Secret, status) make it read nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(secret_reads(&s, "ml"), 0);

    let intact = |s: &FakeApiServer| {
        s.get::<Secret>(NS, "ml")
            .is_some_and(|now| now.data.as_ref() == Some(&written_data))
    };
    // A value edited.
    edit_secret(&s, "ml", |d| {
        d.insert("accessToken".into(), b64("forged"));
    });
    eventually("the edited value put back", || intact(&s)).await;
    // A key removed.
    edit_secret(&s, "ml", |d| {
        d.remove("expiresAt");
    });
    eventually("the removed key put back", || intact(&s)).await;
    // A templated key changed.
    edit_secret(&s, "ml", |d| {
        d.insert("netrc".into(), b64("password nope\n"));
    });
    eventually("the templated key put back", || intact(&s)).await;
    // A key someone added is left alone, and no repair write follows.
    let writes_before = s.writes().len();
    edit_secret(&s, "ml", |d| {
        d.insert("mine".into(), b64("kept"));
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let now = token_secret(&s, "ml");
    assert_eq!(secret_value(&now, "mine").as_deref(), Some("kept"));
    assert_eq!(s.writes().len(), writes_before, "no repair write");
    // A label edited: read once, nothing to repair.
    s.modify::<Secret>(NS, "ml", |o| o["metadata"]["labels"]["team"] = json!("a"));
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(minted.load(Ordering::SeqCst), 1, "no new token");
    // One read per outside change (4 data edits and the label), none for the operator's writes.
    assert_eq!(secret_reads(&s, "ml"), 5);
    let restored = events(&s, "SecretRestored");
    assert_eq!(restored.len(), 3, "{restored:?}");
    assert!(
        restored
            .iter()
            .all(|e| !e.note.as_deref().unwrap().contains("tok-1"))
    );
    running.stop().await;
}

/// Found in review: a relist of owned Secrets (the watch's history was lost) took an edit
/// made while the watch was down as it was, so the Secret stayed wrong until the next renewal.
#[tokio::test]
async fn a_secret_edited_while_the_watch_was_down_is_put_back_after_the_relist() {
    use crate::support::fake_api::Fault;
    let (fake, minted) = minting();
    let fake = Arc::new(fake);
    let s = server();
    s.insert(&netrc_ntr());
    let running = start(&s, &fake).await;
    eventually("Secret written", || s.get::<Secret>(NS, "ml").is_some()).await;
    let written = token_secret(&s, "ml").data.unwrap();
    // The Secret watch can't come back for a while (the other watches can), and its history
    // is gone: it relists once it's back.
    s.fail_next(
        Fault::new(500)
            .method("GET")
            .path_contains("secrets?")
            .times(2),
    );
    s.expire_watch_history();
    edit_secret(&s, "ml", |d| {
        d.insert("netrc".into(), b64("password nope\n"));
    });
    eventually("the Secret put back", || {
        s.get::<Secret>(NS, "ml")
            .is_some_and(|n| n.data.as_ref() == Some(&written))
    })
    .await;
    assert_eq!(minted.load(Ordering::SeqCst), 1, "the same token");
    running.stop().await;
}

#[tokio::test]
async fn after_a_restart_the_token_keys_of_the_secret_restore_it_or_a_new_token_is_minted() {
    let (fake, minted) = minting();
    let fake = Arc::new(fake);
    let s = apps_server();
    s.insert(&workload::<Deployment>("Deployment", "proxy", json!({})));
    let mut obj = netrc_ntr();
    obj.spec.rollout_restart_targets =
        serde_json::from_value(json!([{"kind": "Deployment", "name": "proxy"}])).unwrap();
    s.insert(&obj);
    let first = start(&s, &fake).await;
    eventually("Secret written", || s.get::<Secret>(NS, "ml").is_some()).await;
    first.stop().await;

    // A new operator process: it holds no token. The token itself changed: it can't be
    // restored, so a new one is minted, and the workloads that read the forged one restart.
    let second = start(&s, &fake).await;
    edit_secret(&s, "ml", |d| {
        d.insert("accessToken".into(), b64("forged"));
    });
    eventually("a new token", || {
        s.get::<Secret>(NS, "ml")
            .and_then(|n| secret_value(&n, "accessToken"))
            .as_deref()
            == Some("tok-2")
    })
    .await;
    assert_eq!(minted.load(Ordering::SeqCst), 2);
    assert_eq!(
        secret_value(&token_secret(&s, "ml"), "netrc").as_deref(),
        Some("password tok-2\n")
    );
    eventually("the Deployment restarted", || {
        restarted_at(&s, "proxy").is_some()
    })
    .await;
    eventually("the restart recorded", || {
        status(&s, "ml")["lastRolloutRestart"]["targets"] == json!(["Deployment/proxy"])
    })
    .await;
    assert_eq!(patches(&s, "deployments", "proxy"), 1);
    second.stop().await;

    // Another new process: only a templated key changed, so the token keys of the Secret
    // rebuild it; the same token, no restart.
    let third = start(&s, &fake).await;
    let written_data = token_secret(&s, "ml").data.unwrap();
    edit_secret(&s, "ml", |d| {
        d.insert("netrc".into(), b64("password nope\n"));
    });
    eventually("the templated key put back", || {
        s.get::<Secret>(NS, "ml")
            .is_some_and(|n| n.data.as_ref() == Some(&written_data))
    })
    .await;
    tokio::time::sleep(WINDOW * 3).await;
    assert_eq!(minted.load(Ordering::SeqCst), 2);
    assert_eq!(
        patches(&s, "deployments", "proxy"),
        1,
        "the same token: no restart"
    );
    third.stop().await;
}

/// With `keys: TemplatedOnly` a templated key may carry a kind key's name: the Secret then
/// holds rendered values only, and a restarted operator must not read them back as the token
/// (found in review: the repair wrote `Bearer Bearer tok-1`). It gets a new token instead.
#[tokio::test]
async fn a_templated_only_secret_is_never_read_back_as_the_token() {
    let (fake, minted) = minting();
    let fake = Arc::new(fake);
    let s = server();
    s.insert(&ntr(
        "ml",
        json!({"secretTemplate": {"keys": "TemplatedOnly", "data": {
            "accessToken": "Bearer {{ accessToken }}",
            "netrc": "password {{ accessToken }}\n"}}}),
    ));
    let first = start(&s, &fake).await;
    eventually("Secret written", || s.get::<Secret>(NS, "ml").is_some()).await;
    assert_eq!(
        secret_value(&token_secret(&s, "ml"), "accessToken").as_deref(),
        Some("Bearer tok-1")
    );
    first.stop().await;

    // A new process (no token in memory); only the other templated key is edited.
    let second = start(&s, &fake).await;
    edit_secret(&s, "ml", |d| {
        d.insert("netrc".into(), b64("password nope\n"));
    });
    eventually("the Secret repaired", || {
        s.get::<Secret>(NS, "ml")
            .and_then(|n| secret_value(&n, "netrc"))
            .as_deref()
            != Some("password nope\n")
    })
    .await;
    let repaired = token_secret(&s, "ml");
    assert_eq!(
        minted.load(Ordering::SeqCst),
        2,
        "a new token, not the rendered one"
    );
    assert_eq!(
        secret_value(&repaired, "accessToken").as_deref(),
        Some("Bearer tok-2")
    );
    assert_eq!(
        secret_value(&repaired, "netrc").as_deref(),
        Some("password tok-2\n")
    );
    second.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A token minted whose Secret write failed

/// Found by the chaos suite on a real API server (case 1: the API server restarting while
/// resources are applied cost about 1.05 mints per resource): a token minted while the API
/// server goes away is still valid, so the retry writes it instead of minting another.
#[tokio::test]
async fn a_token_whose_secret_write_failed_is_written_later_without_minting_again() {
    use crate::support::fake_api::Fault;
    let d = direct(server());
    d.s.insert(&ntr("ml", json!({})));
    // The API server goes away just as the Secret is written (3 attempts of the conflict
    // retry would not help: it answers 503).
    d.s.fail_next(Fault::new(503).method("PATCH").path_contains("/secrets/ml"));
    let obj: NotebookTokenRequest = d.s.get(NS, "ml").unwrap();
    reconcile(Arc::new(obj), d.ctx.clone()).await.unwrap();
    assert_eq!(d.minted.load(Ordering::SeqCst), 1);
    assert!(d.s.get::<Secret>(NS, "ml").is_none());
    assert_eq!(ready_of(&status(&d.s, "ml")).unwrap().0, "False");
    // The retry writes the token minted before.
    d.clock.advance(Duration::from_secs(5));
    d.sync("ml").await;
    assert_eq!(d.minted.load(Ordering::SeqCst), 1, "no second mint");
    assert_eq!(
        secret_value(&token_secret(&d.s, "ml"), "accessToken").as_deref(),
        Some("tok-1")
    );
    let st = status(&d.s, "ml");
    assert_eq!(ready_of(&st).unwrap().0, "True");
    assert_eq!(
        st["publicDns"], "nb.example",
        "the status describes the token"
    );
    // The same for a renewal whose write fails: the Secret keeps the old token meanwhile.
    d.past_renewal("ml");
    d.s.fail_next(Fault::new(503).method("PATCH").path_contains("/secrets/ml"));
    let obj: NotebookTokenRequest = d.s.get(NS, "ml").unwrap();
    reconcile(Arc::new(obj), d.ctx.clone()).await.unwrap();
    assert_eq!(d.minted.load(Ordering::SeqCst), 2);
    assert_eq!(
        secret_value(&token_secret(&d.s, "ml"), "accessToken").as_deref(),
        Some("tok-1")
    );
    d.sync("ml").await;
    assert_eq!(d.minted.load(Ordering::SeqCst), 2, "no third mint");
    assert_eq!(
        secret_value(&token_secret(&d.s, "ml"), "accessToken").as_deref(),
        Some("tok-2")
    );
}

// ---------------------------------------------------------------------------------------------
// A new Secret costs one request

/// Requests about the Secret `name` (path `/secrets/name`, or a create in the namespace).
fn secret_requests(s: &FakeApiServer, name: &str) -> Vec<String> {
    let one = format!("/api/v1/namespaces/{NS}/secrets/{name}");
    let create = format!("/api/v1/namespaces/{NS}/secrets");
    s.requests()
        .iter()
        .filter(|r| {
            r.path == one
                || (r.path == create
                    && r.method == "POST"
                    && r.body
                        .as_ref()
                        .is_some_and(|b| b["metadata"]["name"] == name))
        })
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect()
}

#[tokio::test]
async fn a_new_secret_is_created_with_one_request_and_a_foreign_one_is_left_alone() {
    let (fake, minted) = minting();
    let fake = Arc::new(fake);
    let s = server();
    // A Secret of that name made by someone else, without the operator's label: the watch
    // of owned Secrets doesn't show it.
    s.insert(&secret(NS, "taken", &[("precious", "data")]));
    let mut taken = ntr("other", json!({"secretName": "taken"}));
    taken.metadata.namespace = Some(NS.into());
    s.insert(&taken);
    s.insert(&ntr("ml", json!({})));
    let running = start(&s, &fake).await;
    eventually("the new Secret written", || {
        s.get::<Secret>(NS, "ml").is_some()
    })
    .await;
    eventually("the foreign Secret refused", || {
        s.get::<NotebookTokenRequest>(NS, "other")
            .and_then(|o| o.status)
            .and_then(|st| ready_of(&serde_json::to_value(st).unwrap()))
            .is_some_and(|r| r.1 == "SecretConflict")
    })
    .await;
    // No read before the create: one POST.
    assert_eq!(
        secret_requests(&s, "ml"),
        vec![format!("POST /api/v1/namespaces/{NS}/secrets -> 201")]
    );
    // The foreign one: the create says it exists, one metadata read says whose it is, and
    // nothing is written to it.
    let taken_requests = secret_requests(&s, "taken");
    assert_eq!(
        taken_requests[..2],
        [
            format!("POST /api/v1/namespaces/{NS}/secrets -> 409"),
            format!("GET /api/v1/namespaces/{NS}/secrets/taken -> 200"),
        ],
        "{taken_requests:?}"
    );
    assert!(taken_requests.iter().all(|r| !r.starts_with("PATCH")));
    let kept = s.get::<Secret>(NS, "taken").unwrap();
    assert_eq!(secret_value(&kept, "precious").as_deref(), Some("data"));
    assert!(kept.metadata.owner_references.is_none());
    // (Minted for both: the conflict is found at the write.)
    assert!(minted.load(Ordering::SeqCst) >= 2);
    running.stop().await;
}

#[tokio::test]
async fn keys_the_operator_no_longer_writes_leave_the_secret() {
    let (fake, _) = minting();
    let fake = Arc::new(fake);
    let s = server();
    s.insert(&ntr(
        "ml",
        json!({"secretTemplate": {"data": {"netrc": "password {{ accessToken }}"}}}),
    ));
    let running = start(&s, &fake).await;
    eventually("Secret written", || {
        s.get::<Secret>(NS, "ml")
            .is_some_and(|x| secret_value(&x, "netrc").is_some())
    })
    .await;
    // The Secret was created (not applied); a later write without the templated key and with
    // only the templated keys still removes what the operator wrote before.
    s.modify::<NotebookTokenRequest>(NS, "ml", |o| {
        o["spec"]["secretTemplate"] =
            json!({"keys": "TemplatedOnly", "data": {"TOKEN": "{{ accessToken }}"}});
    });
    eventually("only the templated key left", || {
        s.get::<Secret>(NS, "ml").is_some_and(|x| {
            x.data
                .as_ref()
                .map(|d| d.keys().cloned().collect::<Vec<_>>())
                == Some(vec!["TOKEN".to_string()])
        })
    })
    .await;
    running.stop().await;
}

/// Found by the benchmark on a real API server (v1.24): the watch's paginated, label-selected
/// listing of owned Secrets left out a whole page (the first 500 keys), so after a restart the
/// cache lacked about 500 Secrets, and treating a cache miss as "not there" minted a token for
/// each. A Secret the resource wrote before (its status names it) is looked up when the cache
/// misses it; only a new one is created without a read.
#[tokio::test]
async fn a_secret_the_cache_misses_is_looked_up_before_a_token_is_minted() {
    use workspace_access_operator::api::common::{
        EXPIRES_AT_ANNOTATION, GENERATION_ANNOTATION, RENEW_AT_ANNOTATION,
    };
    let (fake, minted) = minting();
    let fake = Arc::new(fake);
    let s = server();
    let obj = s.insert(&ntr("ml", json!({})));
    let expires =
        workspace_access_operator::time::add(jiff::Timestamp::now(), Duration::from_secs(3600));
    let renew =
        workspace_access_operator::time::add(jiff::Timestamp::now(), Duration::from_secs(3000));
    let rfc = workspace_access_operator::time::rfc3339;
    // The status of the token written before a restart ...
    s.modify::<NotebookTokenRequest>(NS, "ml", |o| {
        o["status"] = json!({"secretName": "ml", "expiresAt": rfc(expires), "renewAt": rfc(renew),
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Synced",
                            "message": "token valid", "lastTransitionTime": rfc(jiff::Timestamp::now()),
                            "observedGeneration": 1}]});
    });
    // ... and its Secret, which the watch's listing doesn't show (here: no managed-by label).
    let mut held = secret(NS, "ml", &[("accessToken", "tok-held")]);
    held.metadata.owner_references = Some(vec![
        workspace_access_operator::controller::secret::owner_reference(&obj),
    ]);
    held.metadata.annotations = Some(
        [
            (EXPIRES_AT_ANNOTATION.to_string(), rfc(expires)),
            (RENEW_AT_ANNOTATION.to_string(), rfc(renew)),
            (GENERATION_ANNOTATION.to_string(), "1".to_string()),
        ]
        .into(),
    );
    s.insert(&held);
    let running = start(&s, &fake).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(minted.load(Ordering::SeqCst), 0, "no token minted");
    assert_eq!(
        secret_value(&token_secret(&s, "ml"), "accessToken").as_deref(),
        Some("tok-held")
    );
    assert!(
        s.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == format!("/api/v1/namespaces/{NS}/secrets/ml")),
        "looked up"
    );
    running.stop().await;
}
