//! Shared test support: the fake API server and helpers to build contexts and objects.
#![allow(dead_code)]

pub mod fake_api;
pub mod fake_clients;

use fake_api::FakeApiServer;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use std::sync::Arc;
use workspace_access_operator::controller::{
    Clock, Context, ContextBuilder, ManualClock, Settings,
};
use workspace_access_operator::metrics::Metrics;
use workspace_access_operator::providers::http::{HttpClient, HttpOptions};

/// A fake API server serving the operator's CRDs.
pub fn server() -> FakeApiServer {
    let s = FakeApiServer::new();
    for crd in workspace_access_operator::api::crds() {
        s.register_crd(&crd);
    }
    // The workloads that rollout restarts reach.
    s.register_builtin::<k8s_openapi::api::apps::v1::Deployment>(true, true);
    s.register_builtin::<k8s_openapi::api::apps::v1::StatefulSet>(true, true);
    s.register_builtin::<k8s_openapi::api::apps::v1::DaemonSet>(true, true);
    s
}

/// The default test time.
pub fn t0() -> jiff::Timestamp {
    "2026-11-23T10:00:00Z".parse().unwrap()
}

/// A context on the fake server with a manual clock at [`t0`].
pub fn context(server: &FakeApiServer, settings: Settings) -> (Arc<Context>, Arc<ManualClock>) {
    let (ctx, clock) = context_mut(server, settings);
    (Arc::new(ctx), clock)
}

/// Like [`context`], for tests that adjust the context before sharing it.
pub fn context_mut(server: &FakeApiServer, settings: Settings) -> (Context, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(t0()));
    (context_clocked(server, settings, clock.clone()), clock)
}

/// A context on the fake server with the given clock.
pub fn context_clocked(
    server: &FakeApiServer,
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> Context {
    builder(server, settings).clock(clock).build()
}

/// A shared context on the fake server with the given (manual) clock: a second operator
/// process, e.g. one that restarted, next to an existing context.
pub fn context_clocked_with(
    server: &FakeApiServer,
    settings: Settings,
    clock: Arc<ManualClock>,
) -> (Arc<Context>, Arc<ManualClock>) {
    (
        Arc::new(context_clocked(server, settings, clock.clone())),
        clock,
    )
}

/// A context builder on the fake server (5 s provider timeout, system clock).
pub fn builder(server: &FakeApiServer, settings: Settings) -> ContextBuilder {
    let metrics = Arc::new(Metrics::new());
    Context::builder(
        server.client(),
        settings,
        metrics.clone(),
        http_client(&metrics),
    )
}

/// A provider HTTP client with a 5 s timeout.
pub fn http_client(metrics: &Arc<Metrics>) -> HttpClient {
    HttpClient::new(
        HttpOptions {
            timeout: std::time::Duration::from_secs(5),
            ..HttpOptions::default()
        },
        metrics.clone(),
    )
    .unwrap()
}

/// A Secret with string data.
pub fn secret(ns: &str, name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The value of `key` in a Secret, as text.
pub fn secret_value(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(key)
        .map(|b| String::from_utf8(b.0.clone()).unwrap())
}

/// (status, reason, message) of the Ready condition in a status value.
pub fn ready_of(status: &serde_json::Value) -> Option<(String, String, String)> {
    let c = status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str()?.to_owned(),
    ))
}

/// Polls `cond` every 20 ms for up to 10 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// The requeue delay of an `Action` (which has no getter; its Debug form is stable enough).
pub fn action_delay(a: &kube::runtime::controller::Action) -> std::time::Duration {
    let dbg = format!("{a:?}");
    assert!(
        dbg.contains("requeue_after: Some"),
        "expected a requeue, got {dbg}"
    );
    let secs: f64 = dbg
        .split("requeue_after: Some(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .map(humanish)
        .unwrap();
    std::time::Duration::from_secs_f64(secs)
}

/// Seconds in a `Duration`'s Debug form: "2.134s", "500ms", "5s".
pub fn humanish(d: &str) -> f64 {
    if let Some(ms) = d.strip_suffix("ms") {
        ms.parse::<f64>().unwrap() / 1000.0
    } else if let Some(us) = d.strip_suffix("µs") {
        us.parse::<f64>().unwrap() / 1e6
    } else {
        d.trim_end_matches('s').parse::<f64>().unwrap()
    }
}
