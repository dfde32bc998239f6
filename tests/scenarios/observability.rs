//! What the people on call see and do: the per-resource gauges on `/metrics` (set from the
//! status, gone with the resource and when the controllers stop), and renew on request (the
//! `workspaceaccess.io/renew-requested-at` annotation, handled once per value, noticed by the
//! watch while other edits are not).

use crate::support::fake_api::{FakeApiServer, Fault};
use crate::support::fake_clients::{FakeClients, Handle};
use crate::support::*;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;
use workspace_access_operator::api::common::RENEW_REQUESTED_AT_ANNOTATION;
use workspace_access_operator::api::{LivyToken, NotebookTokenRequest, WorkspaceView};
use workspace_access_operator::controller::driver::reconcile;
use workspace_access_operator::controller::livy::FINALIZER;
use workspace_access_operator::controller::run::{ControllerOptions, run_controllers};
use workspace_access_operator::controller::{Context, ManualClock, Settings};
use workspace_access_operator::metrics::Metrics;
use workspace_access_operator::providers::azure_ml::NotebookAccessToken;
use workspace_access_operator::providers::emr_spark::{AutoExpire, LivyTokenInfo};
use workspace_access_operator::providers::error::{ProviderError, ProviderErrorKind};
use workspace_access_operator::providers::fabric::Workspace;
use workspace_access_operator::redact::SecretString;
use workspace_access_operator::server::{ServerState, router};
use workspace_access_operator::time::add;

const NS: &str = "team-a";

fn context(s: &FakeApiServer, fake: &Arc<FakeClients>) -> (Context, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    let ctx = builder(s, Settings::default())
        .clock(clock.clone())
        .clients(Arc::new(Handle(fake.clone())))
        .build();
    (ctx, clock)
}

fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> K {
    let mut metadata = json!({"name": name, "namespace": NS});
    if kind == "LivyToken" {
        metadata["finalizers"] = json!([FINALIZER]);
    }
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": kind,
        "metadata": metadata, "spec": spec,
    }))
    .unwrap()
}

fn ntr(name: &str, secret_name: &str) -> NotebookTokenRequest {
    object(
        "NotebookTokenRequest",
        name,
        json!({
            "subscriptionId": "00000000-1111-2222-3333-444444444444",
            "resourceGroup": "rg", "workspaceName": "okws", "secretName": secret_name,
            "azure": {"tenantId": "contoso.onmicrosoft.com",
                      "clientId": "11111111-1111-1111-1111-111111111111",
                      "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"}},
        }),
    )
}

fn livy(name: &str, mode: Value) -> LivyToken {
    let mut spec = json!({
        "regionId": "cn-hangzhou", "workspaceId": "w-1", "livyComputeId": "lc-1",
        "alibaba": {"rrsa": true},
    });
    for (k, v) in mode.as_object().unwrap() {
        spec[k] = v.clone();
    }
    object("LivyToken", name, spec)
}

fn fabric_view(name: &str) -> WorkspaceView {
    object(
        "WorkspaceView",
        name,
        json!({"fabric": {"azure": {"tenantId": "contoso.onmicrosoft.com",
            "clientId": "11111111-1111-1111-1111-111111111111",
            "clientSecretRef": {"name": "fabric-sp", "key": "clientSecret"}}}}),
    )
}

/// A notebook token living an hour from the clock's current time.
fn notebook_token() -> NotebookAccessToken {
    NotebookAccessToken {
        access_token: SecretString::new("scripted-access-token"),
        refresh_token: None,
        expires_in: Duration::from_secs(3600),
        notebook_resource_id: Some("nb-1".into()),
        host_name: None,
        public_dns: None,
        token_type: Some("Bearer".into()),
        scope: None,
        request_id: None,
    }
}

fn livy_info(id: &str, name: &str, expires_in: Duration) -> LivyTokenInfo {
    LivyTokenInfo {
        token_id: id.into(),
        name: Some(name.into()),
        token: Some(SecretString::new(format!("scripted-{id}"))),
        created_by: None,
        create_time: Some(t0()),
        expire_time: Some(add(t0(), expires_in)),
        last_used_time: None,
        auto_expire: Some(AutoExpire {
            enable: true,
            expire_days: 7,
        }),
    }
}

fn workspaces() -> Vec<Workspace> {
    ["a-1", "b-2"]
        .iter()
        .map(|id| Workspace {
            id: (*id).into(),
            display_name: Some(format!("ws {id}")),
            description: None,
            type_: Some("Workspace".into()),
            capacity_id: None,
        })
        .collect()
}

/// `/metrics` as the operator serves it.
async fn scrape(metrics: &Arc<Metrics>) -> String {
    let state = ServerState {
        metrics: metrics.clone(),
        ready: Arc::default(),
    };
    let response = router(state)
        .oneshot(
            http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of the series `name{labels...}` (all of `labels`, in any order), if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> usize {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .count()
}

const EXPIRY: &str = "workspace_access_token_expiration_timestamp_seconds";
const RENEWAL: &str = "workspace_access_token_renewal_timestamp_seconds";
const READY: &str = "workspace_access_resource_ready_status";
const ITEMS: &str = "workspace_access_inventory_items";
const RESOURCES: &str = "workspace_access_resources";

fn who<'a>(kind: &'a str, name: &'a str) -> [(&'a str, &'a str); 3] {
    [("kind", kind), ("namespace", NS), ("name", name)]
}

/// Polls `/metrics` until `cond` holds (10 s at most).
async fn metrics_until(metrics: &Arc<Metrics>, what: &str, cond: impl Fn(&str) -> bool) -> String {
    for _ in 0..500 {
        let text = scrape(metrics).await;
        if cond(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "timed out waiting for /metrics: {what}\n{}",
        scrape(metrics).await
    );
}

#[tokio::test]
async fn per_resource_gauges_follow_the_status_and_go_with_the_resource() {
    let s = server();
    s.insert(&secret(NS, "taken", &[("precious", "data")]));
    let fake = Arc::new(FakeClients {
        notebook_access_token: Arc::new(|_| Ok(notebook_token())),
        get_token: Arc::new(|(_, id)| Ok(livy_info(&id, "team", Duration::from_secs(8 * 3600)))),
        list_workspaces: Arc::new(|_| Ok(workspaces())),
        ..Default::default()
    });
    let (ctx, _clock) = context(&s, &fake);
    let metrics = ctx.metrics.clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(run_controllers(
        ctx,
        ControllerOptions::new(4),
        ready.clone(),
        shutdown.clone(),
    ));
    eventually("controllers ready", || ready.load(Ordering::SeqCst)).await;
    s.insert(&ntr("ml", "ml-token"));
    s.insert(&ntr("conflict", "taken"));
    s.insert(&livy("spark", json!({"tokenId": "lctk-ref"})));
    s.insert(&fabric_view("fabric"));

    let text = metrics_until(&metrics, "all four resources", |t| {
        sample(t, EXPIRY, &who("NotebookTokenRequest", "ml")).is_some()
            && sample(t, EXPIRY, &who("LivyToken", "spark")).is_some()
            && sample(t, ITEMS, &[("name", "fabric")]).is_some()
            && sample(t, READY, &[("name", "conflict"), ("condition", "False")]) == Some(1.0)
    })
    .await;

    // The token kinds: expiry and renewal as the status has them, as Unix times.
    let status = s
        .get::<NotebookTokenRequest>(NS, "ml")
        .unwrap()
        .status
        .unwrap();
    let ml = who("NotebookTokenRequest", "ml");
    assert_eq!(
        sample(&text, EXPIRY, &ml),
        Some(add(t0(), Duration::from_secs(3600)).as_second() as f64)
    );
    assert_eq!(
        sample(&text, RENEWAL, &ml),
        Some(status.renew_at.unwrap().as_second() as f64)
    );
    assert!(status.renew_at.unwrap() < status.expires_at.unwrap());
    let spark = s.get::<LivyToken>(NS, "spark").unwrap().status.unwrap();
    assert_eq!(
        sample(&text, EXPIRY, &who("LivyToken", "spark")),
        Some(spark.expires_at.unwrap().as_second() as f64)
    );
    assert_eq!(
        sample(&text, RENEWAL, &who("LivyToken", "spark")),
        Some(spark.renew_at.unwrap().as_second() as f64)
    );
    // Ready: 1 for the current status, 0 for the two others.
    for (name, current) in [("ml", "True"), ("conflict", "False")] {
        for condition in ["True", "False", "Unknown"] {
            let labels = [
                ("kind", "NotebookTokenRequest"),
                ("namespace", NS),
                ("name", name),
                ("condition", condition),
            ];
            let want = if condition == current { 1.0 } else { 0.0 };
            assert_eq!(
                sample(&text, READY, &labels),
                Some(want),
                "{name} {condition}"
            );
        }
    }
    // A resource without a token in its Secret has no expiry series.
    assert_eq!(series(&text, EXPIRY, &[("name", "conflict")]), 0);
    // The inventory's size, by provider; the view has no token series.
    assert_eq!(
        sample(
            &text,
            ITEMS,
            &[
                ("namespace", NS),
                ("name", "fabric"),
                ("provider", "Fabric")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(series(&text, EXPIRY, &[("kind", "WorkspaceView")]), 0);
    // Resources by readiness and reason.
    let count = |kind: &str, condition: &str, reason: &str| {
        sample(
            &text,
            RESOURCES,
            &[("kind", kind), ("condition", condition), ("reason", reason)],
        )
    };
    assert_eq!(count("NotebookTokenRequest", "True", "Synced"), Some(1.0));
    assert_eq!(
        count("NotebookTokenRequest", "False", "SecretConflict"),
        Some(1.0)
    );
    assert_eq!(count("WorkspaceView", "True", "Synced"), Some(1.0));
    // No label carries anything but kind, namespace, name, condition, provider, reason.
    for line in text.lines().filter(|l| {
        [EXPIRY, RENEWAL, READY, ITEMS, RESOURCES]
            .iter()
            .any(|m| l.starts_with(&format!("{m}{{")))
    }) {
        let labels = &line[line.find('{').unwrap() + 1..line.find('}').unwrap()];
        for pair in labels.split(',') {
            let key = pair.split('=').next().unwrap();
            assert!(
                [
                    "kind",
                    "namespace",
                    "name",
                    "condition",
                    "provider",
                    "reason"
                ]
                .contains(&key),
                "{line}"
            );
        }
    }

    // The conflict resolves (the Secret goes): Ready flips, the count moves, expiry appears.
    s.delete_object::<Secret>(NS, "taken");
    s.modify::<NotebookTokenRequest>(NS, "conflict", |o| {
        o["spec"]["secretName"] = json!("conflict-token")
    });
    let text = metrics_until(&metrics, "the conflict resolved", |t| {
        sample(t, READY, &[("name", "conflict"), ("condition", "True")]) == Some(1.0)
    })
    .await;
    assert_eq!(
        sample(
            &text,
            READY,
            &[("name", "conflict"), ("condition", "False")]
        ),
        Some(0.0)
    );
    assert!(sample(&text, EXPIRY, &[("name", "conflict")]).is_some());
    assert_eq!(
        sample(
            &text,
            RESOURCES,
            &[("kind", "NotebookTokenRequest"), ("condition", "True")]
        ),
        Some(2.0)
    );
    assert_eq!(
        series(
            &text,
            RESOURCES,
            &[("kind", "NotebookTokenRequest"), ("condition", "False")]
        ),
        0
    );

    // A deleted resource's series disappear.
    s.delete_object::<NotebookTokenRequest>(NS, "ml");
    let text = metrics_until(&metrics, "ml's series gone", |t| {
        series(t, READY, &[("name", "ml")]) == 0
    })
    .await;
    assert_eq!(series(&text, EXPIRY, &[("name", "ml")]), 0);
    assert_eq!(series(&text, RENEWAL, &[("name", "ml")]), 0);
    assert!(sample(&text, EXPIRY, &[("name", "conflict")]).is_some());

    // Deleted while the watch was down and its history lost: the relist notices.
    s.fail_next(
        Fault::new(503)
            .method("GET")
            .path_contains("v1alpha1/workspaceviews")
            .times(1),
    );
    s.expire_watch_history();
    s.delete_object::<WorkspaceView>(NS, "fabric");
    metrics_until(&metrics, "the view's series gone after the relist", |t| {
        series(t, ITEMS, &[("name", "fabric")]) == 0 && series(t, READY, &[("name", "fabric")]) == 0
    })
    .await;

    // The controllers stop (shutdown, or the replica lost the lease): every per-resource series
    // goes; the counters stay.
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let text = scrape(&metrics).await;
    for m in [EXPIRY, RENEWAL, READY, ITEMS, RESOURCES] {
        assert_eq!(series(&text, m, &[]), 0, "{m}: {text}");
    }
    assert_eq!(metrics.resources_observed(), 0);
    assert!(text.contains("workspace_access_reconciles_total{kind=\"NotebookTokenRequest\"}"));
}

#[tokio::test]
async fn a_failed_renewal_keeps_the_expiry_and_the_renewal_time_in_the_past() {
    let s = server();
    let failing = Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    let fake = Arc::new(FakeClients {
        notebook_access_token: Arc::new(move |_| {
            if f.load(Ordering::SeqCst) {
                Err(ProviderError::new(ProviderErrorKind::Unavailable, "ARM is down").into())
            } else {
                Ok(notebook_token())
            }
        }),
        ..Default::default()
    });
    let (ctx, clock) = context(&s, &fake);
    let ctx = Arc::new(ctx);
    s.insert(&ntr("ml", "ml-token"));
    let get = || Arc::new(s.get::<NotebookTokenRequest>(NS, "ml").unwrap());
    reconcile(get(), ctx.clone()).await.unwrap();
    let status = get().status.clone().unwrap();
    let (expires, renew) = (status.expires_at.unwrap(), status.renew_at.unwrap());

    // Past the renewal time the provider fails: the gauges still show the token in the Secret,
    // whose renewal time is now in the past (what the overdue alert looks for).
    failing.store(true, Ordering::SeqCst);
    clock.set(add(renew, Duration::from_secs(1)));
    reconcile(get(), ctx.clone()).await.unwrap();
    let text = scrape(&ctx.metrics).await;
    let ml = who("NotebookTokenRequest", "ml");
    assert_eq!(sample(&text, EXPIRY, &ml), Some(expires.as_second() as f64));
    assert_eq!(sample(&text, RENEWAL, &ml), Some(renew.as_second() as f64));
    assert_eq!(
        sample(&text, READY, &[("name", "ml"), ("condition", "False")]),
        Some(1.0)
    );
    assert!((renew.as_second() as f64) < clock_now(&clock));

    // The operator restarts while the provider still fails: a new process (new metrics) has the
    // gauges from the status alone, with no provider call.
    let (ctx2, clock2) = context(&s, &fake);
    clock2.set(add(renew, Duration::from_secs(30)));
    let ctx2 = Arc::new(ctx2);
    let calls = fake.count("notebook_access_token");
    reconcile(get(), ctx2.clone()).await.unwrap();
    assert_eq!(
        fake.count("notebook_access_token"),
        calls + 1,
        "the renewal is retried"
    );
    let text = scrape(&ctx2.metrics).await;
    assert_eq!(sample(&text, EXPIRY, &ml), Some(expires.as_second() as f64));
    assert_eq!(sample(&text, RENEWAL, &ml), Some(renew.as_second() as f64));
}

fn clock_now(clock: &ManualClock) -> f64 {
    use workspace_access_operator::controller::Clock;
    clock.now().as_second() as f64
}

fn annotate<K>(s: &FakeApiServer, name: &str, key: &str, value: &str)
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    s.modify::<K>(NS, name, |o| {
        o["metadata"]["annotations"][key] = json!(value);
    });
}

fn last_renew_request<K>(s: &FakeApiServer, name: &str) -> Option<String>
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + serde::Serialize,
{
    let v = serde_json::to_value(s.get::<K>(NS, name).unwrap()).unwrap();
    v["status"]["lastRenewRequest"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn a_renew_request_mints_a_new_token_once_per_value() {
    let s = server();
    let failing = Arc::new(AtomicBool::new(false));
    let f = failing.clone();
    let fake = Arc::new(FakeClients {
        notebook_access_token: Arc::new(move |_| {
            if f.load(Ordering::SeqCst) {
                Err(ProviderError::new(ProviderErrorKind::Throttled, "slow down").into())
            } else {
                Ok(notebook_token())
            }
        }),
        ..Default::default()
    });
    let (ctx, clock) = context(&s, &fake);
    let ctx = Arc::new(ctx);
    s.insert(&ntr("ml", "ml-token"));
    let sync = || async {
        let obj = Arc::new(s.get::<NotebookTokenRequest>(NS, "ml").unwrap());
        reconcile(obj, ctx.clone()).await.unwrap();
    };
    let calls = || fake.count("notebook_access_token");
    let expiry = || {
        s.get::<Secret>(NS, "ml-token")
            .unwrap()
            .metadata
            .annotations
            .unwrap()["workspaceaccess.io/expires-at"]
            .clone()
    };
    sync().await;
    sync().await;
    assert_eq!(calls(), 1, "a valid token is kept");
    assert_eq!(last_renew_request::<NotebookTokenRequest>(&s, "ml"), None);
    let first = expiry();

    // A request: a new token at once, long before the renewal time, and the value recorded.
    clock.advance(Duration::from_secs(60));
    annotate::<NotebookTokenRequest>(
        &s,
        "ml",
        RENEW_REQUESTED_AT_ANNOTATION,
        "2026-11-23T10:01:00Z",
    );
    sync().await;
    assert_eq!(calls(), 2);
    assert_ne!(expiry(), first, "the Secret holds the new token");
    assert_eq!(
        last_renew_request::<NotebookTokenRequest>(&s, "ml").as_deref(),
        Some("2026-11-23T10:01:00Z")
    );
    let status = s
        .get::<NotebookTokenRequest>(NS, "ml")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        status.expires_at,
        Some(add(t0(), Duration::from_secs(3660)))
    );

    // The same value again (resyncs, a re-applied manifest): no call.
    sync().await;
    annotate::<NotebookTokenRequest>(
        &s,
        "ml",
        RENEW_REQUESTED_AT_ANNOTATION,
        "2026-11-23T10:01:00Z",
    );
    sync().await;
    assert_eq!(calls(), 2, "each value is handled once");

    // A request whose sync fails stays pending: the retry honours it, then it is recorded.
    failing.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(60));
    annotate::<NotebookTokenRequest>(
        &s,
        "ml",
        RENEW_REQUESTED_AT_ANNOTATION,
        "2026-11-23T10:02:00Z",
    );
    sync().await;
    assert_eq!(calls(), 3);
    assert_eq!(
        last_renew_request::<NotebookTokenRequest>(&s, "ml").as_deref(),
        Some("2026-11-23T10:01:00Z")
    );
    failing.store(false, Ordering::SeqCst);
    sync().await;
    assert_eq!(calls(), 4);
    assert_eq!(
        last_renew_request::<NotebookTokenRequest>(&s, "ml").as_deref(),
        Some("2026-11-23T10:02:00Z")
    );
    sync().await;
    assert_eq!(calls(), 4);

    // A blank or oversized value is no request.
    annotate::<NotebookTokenRequest>(&s, "ml", RENEW_REQUESTED_AT_ANNOTATION, " ");
    sync().await;
    annotate::<NotebookTokenRequest>(&s, "ml", RENEW_REQUESTED_AT_ANNOTATION, &"x".repeat(129));
    sync().await;
    assert_eq!(calls(), 4);
}

#[tokio::test]
async fn a_renew_request_rotates_a_managed_livy_token_and_rereads_a_referenced_one() {
    let s = server();
    let created: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let (c1, c2) = (created.clone(), created.clone());
    let fake = Arc::new(FakeClients {
        list_tokens: Arc::new(|_| Ok(Vec::new())),
        create_token: Arc::new(move |(_, name)| {
            let mut c = c1.lock().unwrap();
            let id = format!("lctk-{}", c.len() + 1);
            c.push((id.clone(), name));
            Ok(id)
        }),
        get_token: Arc::new(move |(_, id)| {
            let name = c2
                .lock()
                .unwrap()
                .iter()
                .find(|(i, _)| *i == id)
                .map_or_else(|| "team".to_owned(), |(_, n)| n.clone());
            Ok(livy_info(&id, &name, Duration::from_secs(7 * 86_400)))
        }),
        ..Default::default()
    });
    let (ctx, _) = context(&s, &fake);
    let ctx = Arc::new(ctx);
    s.insert(&livy("managed", json!({"managed": {"expireDays": 7}})));
    s.insert(&livy("reference", json!({"tokenId": "lctk-ref"})));
    let sync = |name: &'static str| {
        let s = &s;
        let ctx = ctx.clone();
        async move {
            let obj = Arc::new(s.get::<LivyToken>(NS, name).unwrap());
            reconcile(obj, ctx).await.unwrap();
        }
    };
    for name in ["managed", "reference"] {
        sync(name).await;
        sync(name).await;
    }
    assert_eq!(fake.count("create_token"), 1);
    assert_eq!(fake.count("get_token"), 2, "{:?}", fake.calls());

    annotate::<LivyToken>(&s, "managed", RENEW_REQUESTED_AT_ANNOTATION, "r1");
    sync("managed").await;
    assert_eq!(fake.count("create_token"), 2, "a rotation");
    let status = s.get::<LivyToken>(NS, "managed").unwrap().status.unwrap();
    let managed = status.managed.as_ref().unwrap();
    assert_eq!(managed.current.as_ref().unwrap().token_id, "lctk-2");
    assert_eq!(managed.retiring.len(), 1, "the replaced token retires");
    assert_eq!(managed.retiring[0].token_id, "lctk-1");
    assert_eq!(status.common.last_renew_request.as_deref(), Some("r1"));
    let secret: Secret = s.get(NS, "managed").unwrap();
    assert_eq!(secret_value(&secret, "tokenId").as_deref(), Some("lctk-2"));
    sync("managed").await;
    assert_eq!(fake.count("create_token"), 2, "once per value");

    let reads = fake.count("get_token");
    annotate::<LivyToken>(&s, "reference", RENEW_REQUESTED_AT_ANNOTATION, "r1");
    sync("reference").await;
    assert_eq!(fake.count("get_token"), reads + 1, "a re-read");
    assert_eq!(
        last_renew_request::<LivyToken>(&s, "reference").as_deref(),
        Some("r1")
    );
    sync("reference").await;
    assert_eq!(fake.count("get_token"), reads + 1);
}

#[tokio::test]
async fn a_renew_request_refreshes_a_workspace_view_once() {
    let s = server();
    let fake = Arc::new(FakeClients {
        list_workspaces: Arc::new(|_| Ok(workspaces())),
        ..Default::default()
    });
    let (ctx, _) = context(&s, &fake);
    let ctx = Arc::new(ctx);
    s.insert(&fabric_view("fabric"));
    let sync = || async {
        let obj = Arc::new(s.get::<WorkspaceView>(NS, "fabric").unwrap());
        reconcile(obj, ctx.clone()).await.unwrap();
    };
    sync().await;
    sync().await;
    assert_eq!(
        fake.count("list_workspaces"),
        1,
        "not due before the refresh interval"
    );
    annotate::<WorkspaceView>(&s, "fabric", RENEW_REQUESTED_AT_ANNOTATION, "now");
    sync().await;
    assert_eq!(fake.count("list_workspaces"), 2);
    assert_eq!(
        last_renew_request::<WorkspaceView>(&s, "fabric").as_deref(),
        Some("now")
    );
    sync().await;
    assert_eq!(fake.count("list_workspaces"), 2);
}

fn reconciles(metrics: &Metrics, kind: &str) -> u64 {
    metrics
        .encode()
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "workspace_access_reconciles_total{{kind=\"{kind}\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Annotations don't bump the generation: the watch notices a new renew request, and only
/// that; other annotation and label edits, and the operator's own status writes, cause no
/// reconciliation.
#[tokio::test]
async fn the_watch_notices_a_renew_request_and_no_other_metadata_edit() {
    let s = server();
    let fake = Arc::new(FakeClients {
        notebook_access_token: Arc::new(|_| Ok(notebook_token())),
        ..Default::default()
    });
    let (ctx, _) = context(&s, &fake);
    let metrics = ctx.metrics.clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(run_controllers(
        ctx,
        ControllerOptions::new(4),
        ready.clone(),
        shutdown.clone(),
    ));
    eventually("controllers ready", || ready.load(Ordering::SeqCst)).await;
    s.insert(&ntr("ml", "ml-token"));
    eventually("first token", || fake.count("notebook_access_token") == 1).await;
    eventually("status written", || {
        last_status_ready(&s) && reconciles(&metrics, "NotebookTokenRequest") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = reconciles(&metrics, "NotebookTokenRequest");

    annotate::<NotebookTokenRequest>(&s, "ml", "team.example.com/owner", "ann");
    s.modify::<NotebookTokenRequest>(NS, "ml", |o| {
        o["metadata"]["labels"] = json!({"tier": "gold"})
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(reconciles(&metrics, "NotebookTokenRequest"), before);
    assert_eq!(fake.count("notebook_access_token"), 1);

    annotate::<NotebookTokenRequest>(
        &s,
        "ml",
        RENEW_REQUESTED_AT_ANNOTATION,
        "2026-11-23T10:05:00Z",
    );
    eventually("the request is handled", || {
        last_renew_request::<NotebookTokenRequest>(&s, "ml").as_deref()
            == Some("2026-11-23T10:05:00Z")
    })
    .await;
    assert_eq!(fake.count("notebook_access_token"), 2, "one provider call");
    // The status write that recorded it triggers nothing more.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fake.count("notebook_access_token"), 2);
    assert_eq!(reconciles(&metrics, "NotebookTokenRequest"), before + 1);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

fn last_status_ready(s: &FakeApiServer) -> bool {
    s.get::<NotebookTokenRequest>(NS, "ml")
        .and_then(|o| o.status)
        .and_then(|st| st.common.ready().map(|c| c.status == "True"))
        .unwrap_or(false)
}

#[test]
fn the_renew_request_helper_compares_with_the_handled_value() {
    use workspace_access_operator::controller::driver::renew_request;
    let mut o = ntr("ml", "ml-token");
    assert_eq!(renew_request(&o), None);
    o.metadata.annotations =
        Some([(RENEW_REQUESTED_AT_ANNOTATION.to_owned(), "v1".to_owned())].into());
    assert_eq!(renew_request(&o), Some("v1"));
    o.status = Some(Default::default());
    o.status.as_mut().unwrap().common.last_renew_request = Some("v1".into());
    assert_eq!(renew_request(&o), None);
    o.status.as_mut().unwrap().common.last_renew_request = Some("v0".into());
    assert_eq!(renew_request(&o), Some("v1"));
}
