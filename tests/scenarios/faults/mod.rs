//! The fault-injection suite (issue 6, part A): provider faults for every provider, the rate
//! limit and reconcile concurrency, and API-server faults (conflicts, watch restarts, crashes in
//! the middle of a managed Livy rotation, two replicas with leader election).
//!
//! Providers are [`stub::Stub`]s: raw-TCP endpoints that can answer anything, including
//! resets, half responses and answers slower than the client's timeout. The EMR endpoint is
//! the signature-checking fake EMR behind a forwarding stub. Time is a [`ManualClock`] except
//! where the real controllers run. The HTTP client's timeout is short ([`TIMEOUT`]) where
//! timeouts are injected, generous ([`http_options`]) elsewhere.

pub(crate) use crate::livy::fake_emr;
pub mod stub;

mod apiserver;
mod livy_crash;
mod provider;
mod rate;
mod replicas;

use crate::support::fake_api::FakeApiServer;
use crate::support::*;
use fake_emr::FakeEmr;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use stub::{Reply, Req, Stub};
use workspace_access_operator::api::{LivyToken, NotebookTokenRequest, WorkspaceView};
use workspace_access_operator::controller::driver::reconcile;
use workspace_access_operator::controller::object_key as backoff_key;
use workspace_access_operator::controller::{Clock, Context, ManualClock, Settings};
use workspace_access_operator::metrics::Metrics;
use workspace_access_operator::providers::endpoint::EndpointPolicy;
use workspace_access_operator::providers::http::{HttpClient, HttpOptions};
use workspace_access_operator::providers::ratelimit::RateLimits;

pub const NS: &str = "faults";
pub const TENANT: &str = "00000000-0000-0000-0000-000000000000";
pub const CLIENT_SECRET: &str = "sp-client-secret-value";
pub const DR_TOKEN: &str = "dr-api-key-value";
pub const AK_ID: &str = "LTAI5tFaultsKey";
pub const AK_SECRET: &str = "faults-access-key-secret";
pub const WS: &str = "w-8adde60aa809701f";
pub const LC: &str = "lc-6mkvn01zrg8rqhhv";
/// The provider HTTP client's timeout where the provider-fault cases inject timeouts: short,
/// but far above what an answer takes even with many cases running at once.
pub const TIMEOUT: Duration = Duration::from_secs(1);
/// Backoff settings of this suite: 1 s doubling up to 8 s.
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

pub fn arm_path() -> String {
    "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/workspace-1234/providers/\
     Microsoft.MachineLearningServices/workspaces/testworkspace/listNotebookAccessToken"
        .into()
}

pub fn entra_path() -> String {
    format!("/{TENANT}/oauth2/v2.0/token")
}

/// Settings of the suite: loopback endpoints allowed, short backoff.
pub fn settings() -> Settings {
    Settings {
        endpoint_policy: EndpointPolicy::new(vec!["127.0.0.1".parse().unwrap()]),
        base_backoff: BASE_BACKOFF,
        max_backoff: MAX_BACKOFF,
        ..Settings::default()
    }
}

/// HTTP options with a generous timeout (nothing here is meant to time out).
pub fn http_options(rate_limits: RateLimits) -> HttpOptions {
    HttpOptions {
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        rate_limits,
        ..HttpOptions::default()
    }
}

/// A fake API server serving the operator's CRDs, like `support::server`, with the CRDs
/// generated once per test binary (generating them takes a while in a debug build, and some
/// tests here start many servers).
pub fn crd_server() -> FakeApiServer {
    static CRDS: std::sync::OnceLock<
        Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
    > = std::sync::OnceLock::new();
    let s = FakeApiServer::new();
    for crd in CRDS.get_or_init(workspace_access_operator::api::crds) {
        s.register_crd(crd);
    }
    s
}

/// A context on `s` with the suite's HTTP options and `clock`.
pub fn context_on(
    s: &FakeApiServer,
    settings: Settings,
    http: HttpOptions,
    clock: Arc<dyn Clock>,
) -> Context {
    context_with(s.client(), settings, http, clock, Arc::new(Metrics::new()))
}

/// A context with this kube client, HTTP options, clock and metrics.
pub fn context_with(
    client: kube::Client,
    settings: Settings,
    http: HttpOptions,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
) -> Context {
    let http = HttpClient::new(http, metrics.clone()).unwrap();
    context_sharing(client, settings, http, clock, metrics)
}

/// A context with an existing HTTP client (building one takes a while in a debug build; a
/// "restarted operator" may share it, as nothing of a sync's state lives in it).
pub fn context_sharing(
    client: kube::Client,
    settings: Settings,
    http: HttpClient,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
) -> Context {
    Context::builder(client, settings, metrics, http)
        .clock(clock)
        .build()
}

/// The real controllers running against `s` with the system clock.
pub struct Running {
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Starts the controllers and waits until they run.
    pub async fn start(
        s: &FakeApiServer,
        settings: Settings,
        http: HttpOptions,
        concurrency: u16,
    ) -> Self {
        use workspace_access_operator::controller::run::{ControllerOptions, run_controllers};
        let ctx = context_on(
            s,
            settings,
            http,
            Arc::new(workspace_access_operator::controller::SystemClock),
        );
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(run_controllers(
            ctx,
            ControllerOptions::new(concurrency),
            ready.clone(),
            shutdown.clone(),
        ));
        eventually("controllers ready", || ready.load(Ordering::SeqCst)).await;
        Self { shutdown, task }
    }

    /// Waits up to `limit` for `cond`.
    pub async fn until(&self, what: &str, limit: Duration, cond: impl Fn() -> bool) {
        let started = std::time::Instant::now();
        while !cond() {
            assert!(started.elapsed() < limit, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the controllers gracefully.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Provider stubs

/// Entra's token endpoint on `stub`: every scope gets a bearer token valid for an hour.
pub fn route_entra(stub: &Stub) {
    stub.route("POST", &entra_path(), |r: &Req| {
        if r.form("client_secret").as_deref() != Some(CLIENT_SECRET) {
            return Reply::raw(401, r#"{"error":"invalid_client"}"#);
        }
        Reply::json(
            200,
            json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "entra-bearer"}),
        )
    });
}

/// Entra and ARM `listNotebookAccessToken` on one stub; the notebook tokens count up.
pub async fn azure_stub() -> Stub {
    let stub = Stub::start().await;
    route_entra(&stub);
    let n = Arc::new(AtomicUsize::new(0));
    stub.route("POST", &arm_path(), move |r: &Req| {
        if r.header("authorization") != Some("Bearer entra-bearer") {
            return Reply::raw(401, r#"{"error":{"code":"InvalidAuthenticationToken"}}"#);
        }
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        Reply::json(
            200,
            json!({"accessToken": format!("notebook-token-{i}"), "expiresIn": 28800,
                   "tokenType": "Bearer", "notebookResourceId": "94350843095843059",
                   "hostName": "h", "publicDns": "p.notebooks.azure.net", "scope": "aznb_identity"}),
        )
        .header("x-ms-request-id", &format!("req-{i}"))
    });
    stub
}

/// Entra and Fabric `GET /v1/workspaces` on one stub: two pages (the second one asked for with
/// `continuationToken=p2`); `extra` more workspaces appear on page 2.
pub async fn fabric_stub(extra: Arc<AtomicUsize>) -> Stub {
    let stub = Stub::start().await;
    route_entra(&stub);
    let ws = |i: usize| json!({"id": format!("ws-{i:04}"), "displayName": format!("Workspace {i}"), "type": "Workspace"});
    stub.route("GET", "/v1/workspaces", move |r: &Req| {
        if r.header("authorization") != Some("Bearer entra-bearer") {
            return Reply::raw(401, r#"{"errorCode":"Unauthorized"}"#);
        }
        match r.query_param("continuationToken").as_deref() {
            None => Reply::json(
                200,
                json!({"value": [ws(1), ws(2)], "continuationToken": "p2"}),
            ),
            Some("p2") => {
                let n = 2 + extra.load(Ordering::SeqCst);
                let value: Vec<Value> = (3..=2 + n).map(ws).collect();
                Reply::json(200, json!({ "value": value }))
            }
            Some(_) => Reply::raw(400, r#"{"errorCode":"BadToken"}"#),
        }
    });
    stub
}

/// DataRobot with a selector: `GET /api/v2/notebooks/` over two pages (`next` links), then the
/// bulk `sharedRoles`; `extra` more notebooks appear on page 2.
pub async fn datarobot_stub(extra: Arc<AtomicUsize>) -> Stub {
    let stub = Stub::start().await;
    let base = stub.base_url();
    stub.route("GET", "/api/v2/notebooks/", move |r: &Req| {
        if r.header("authorization") != Some(format!("Token {DR_TOKEN}").as_str()) {
            return Reply::raw(401, r#"{"message":"Invalid API key"}"#);
        }
        match r.query_param("offset").as_deref() {
            Some("0") => Reply::json(
                200,
                json!({"data": [{"id": "nb-01"}, {"id": "nb-02"}],
                       "next": format!("{base}/api/v2/notebooks/?offset=2&limit=100&orderBy=created")}),
            ),
            _ => {
                let n = 1 + extra.load(Ordering::SeqCst);
                let data: Vec<Value> = (3..3 + n).map(|i| json!({"id": format!("nb-{i:02}")})).collect();
                Reply::json(200, json!({"data": data, "next": null}))
            }
        }
    });
    stub.route("GET", "/api/v2/notebooks/sharedRoles/", |r: &Req| {
        let ids = r.query_param("notebookIds").unwrap_or_default();
        let data: Vec<Value> = ids
            .split(',')
            .map(|id| json!({"notebookId": id, "roles": [{"id": "u1", "name": "alice", "role": "OWNER", "shareRecipientType": "user"}]}))
            .collect();
        Reply::json(200, json!({ "data": data }))
    });
    stub
}

/// The signature-checking fake EMR (times from `clock`) behind a forwarding stub.
pub async fn emr_behind_stub(clock: Arc<dyn Clock>) -> (FakeEmr, Stub) {
    let emr = FakeEmr::start(AK_ID, AK_SECRET, Arc::new(move || clock.now())).await;
    let stub = Stub::forwarding(&emr.host_port).await;
    (emr, stub)
}

// ---------------------------------------------------------------------------------------------
// Resources

pub fn notebook(name: &str, azure: &Stub) -> NotebookTokenRequest {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444",
                 "resourceGroup": "workspace-1234", "workspaceName": "testworkspace",
                 "endpoint": azure.base_url(),
                 "azure": {"tenantId": TENANT, "clientId": "11111111-1111-1111-1111-111111111111",
                           "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"},
                           "authorityHost": azure.base_url()}}
    }))
    .unwrap()
}

/// A LivyToken; `mode` is `{"tokenId": ...}` or `{"managed": {...}}`. With `finalizer`, the
/// finalizer is there already, as after the first reconciliation.
pub fn livy(name: &str, emr: &Stub, mode: Value, finalizer: bool) -> LivyToken {
    let mut spec = json!({
        "regionId": "cn-hangzhou", "workspaceId": WS, "livyComputeId": LC,
        "endpoint": emr.base_url(),
        "alibaba": {"accessKeyRef": {"name": "ali-ak"}},
    });
    for (k, v) in mode.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let mut meta = json!({"name": name, "namespace": NS});
    if finalizer {
        meta["finalizers"] = json!([workspace_access_operator::controller::livy::FINALIZER]);
    }
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "LivyToken",
        "metadata": meta, "spec": spec,
    }))
    .unwrap()
}

pub fn managed() -> Value {
    json!({"managed": {"expireDays": 7, "gracePeriod": "10m"}})
}

pub fn fabric_view(name: &str, fabric: &Stub) -> WorkspaceView {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"refreshInterval": "10m", "fabric": {
            "endpoint": fabric.base_url(),
            "azure": {"tenantId": TENANT, "clientId": "11111111-1111-1111-1111-111111111111",
                      "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"},
                      "authorityHost": fabric.base_url()}}}
    }))
    .unwrap()
}

pub fn datarobot_view(name: &str, dr: &Stub) -> WorkspaceView {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"refreshInterval": "10m", "dataRobot": {
            "endpoint": format!("{}/api/v2", dr.base_url()),
            "selector": {"owners": ["u1"]},
            "apiTokenRef": {"name": "dr", "key": "apiToken"}}}
    }))
    .unwrap()
}

/// The credential Secrets every kind of this suite reads.
pub fn insert_credentials(s: &FakeApiServer) {
    s.insert(&secret(NS, "azure-sp", &[("clientSecret", CLIENT_SECRET)]));
    s.insert(&secret(NS, "dr", &[("apiToken", DR_TOKEN)]));
    s.insert(&secret(
        NS,
        "ali-ak",
        &[("accessKeyId", AK_ID), ("accessKeySecret", AK_SECRET)],
    ));
}

// ---------------------------------------------------------------------------------------------
// Reading results

/// The status of a resource of any kind, as JSON.
pub fn status_of(s: &FakeApiServer, plural: &str, name: &str) -> Value {
    let status = match plural {
        "notebooktokenrequests" => s
            .get::<NotebookTokenRequest>(NS, name)
            .and_then(|o| o.status)
            .map(|x| serde_json::to_value(x).unwrap()),
        "livytokens" => s
            .get::<LivyToken>(NS, name)
            .and_then(|o| o.status)
            .map(|x| serde_json::to_value(x).unwrap()),
        _ => s
            .get::<WorkspaceView>(NS, name)
            .and_then(|o| o.status)
            .map(|x| serde_json::to_value(x).unwrap()),
    };
    status.unwrap_or(Value::Null)
}

/// (status, reason) of the Ready condition, if any.
pub fn ready(s: &FakeApiServer, plural: &str, name: &str) -> Option<(String, String)> {
    ready_of(&status_of(s, plural, name)).map(|(st, reason, _)| (st, reason))
}

pub fn is_ready(s: &FakeApiServer, plural: &str, name: &str) -> bool {
    ready(s, plural, name).is_some_and(|(st, _)| st == "True")
}

/// The requeue delay, or `None` for "wait for a change".
pub fn requeue(a: &Action) -> Option<Duration> {
    (a != &Action::await_change()).then(|| action_delay(a))
}

/// One reconciliation of the stored object with `ctx`.
pub async fn reconcile_kind(
    s: &FakeApiServer,
    ctx: &Arc<Context>,
    plural: &str,
    name: &str,
) -> Result<Action, String> {
    let r = match plural {
        "notebooktokenrequests" => {
            reconcile(
                Arc::new(s.get::<NotebookTokenRequest>(NS, name).unwrap()),
                ctx.clone(),
            )
            .await
        }
        "livytokens" => {
            reconcile(Arc::new(s.get::<LivyToken>(NS, name).unwrap()), ctx.clone()).await
        }
        _ => {
            reconcile(
                Arc::new(s.get::<WorkspaceView>(NS, name).unwrap()),
                ctx.clone(),
            )
            .await
        }
    };
    r.map_err(|e| e.to_string())
}

/// The backoff counter of a stored object.
pub fn failures(s: &FakeApiServer, ctx: &Context, plural: &str, name: &str) -> u32 {
    let key = match plural {
        "notebooktokenrequests" => backoff_key(&s.get::<NotebookTokenRequest>(NS, name).unwrap()),
        "livytokens" => backoff_key(&s.get::<LivyToken>(NS, name).unwrap()),
        _ => backoff_key(&s.get::<WorkspaceView>(NS, name).unwrap()),
    };
    ctx.backoff.count(&key)
}

/// A Secret's data as text, with its annotations and resourceVersion: equal snapshots mean
/// the Secret was not written.
pub fn secret_snapshot(s: &FakeApiServer, name: &str) -> Option<Value> {
    let secret: Secret = s.get(NS, name)?;
    let data: serde_json::Map<String, Value> = secret
        .data
        .as_ref()
        .map(|d| {
            d.iter()
                .map(|(k, v)| (k.clone(), json!(String::from_utf8_lossy(&v.0))))
                .collect()
        })
        .unwrap_or_default();
    Some(json!({
        "data": data,
        "annotations": secret.annotations(),
        "resourceVersion": secret.resource_version(),
    }))
}

/// The max number of requests that arrived within any window of length `window`, over the
/// arrival times `at` of several stubs' records.
pub fn peak_in_window(mut at: Vec<std::time::Instant>, window: Duration) -> usize {
    at.sort();
    let mut peak = 0;
    let mut start = 0;
    for end in 0..at.len() {
        while at[end].duration_since(at[start]) >= window {
            start += 1;
        }
        peak = peak.max(end - start + 1);
    }
    peak
}

// ---------------------------------------------------------------------------------------------
// A tap between a kube client and the fake API server

/// A request as the tap sees it.
#[derive(Clone, Debug)]
pub struct ApiReq {
    pub method: String,
    pub path: String,
}

impl ApiReq {
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }
}

/// What the tap does with a request.
#[derive(Clone, Debug)]
pub enum Tap {
    /// Passes it to the fake API server.
    Pass,
    /// The API server answers with this status (a `metav1.Status` error), changing nothing.
    Fail(u16),
    /// The connection fails (a network partition).
    Refuse,
    /// The request reaches the API server and takes effect, then the connection fails: the
    /// client sees an error.
    Lost,
    /// Never answered, as a process killed at this request sees it; with `forward` the request
    /// reaches the API server first (it takes effect, its answer is lost); `notify` is told.
    Hang {
        forward: bool,
        notify: Arc<tokio::sync::Notify>,
    },
}

type TapHook = Arc<dyn Fn(&ApiReq) -> Tap + Send + Sync>;

/// A `tower::Service` in front of the fake API server that lets `hook` decide about every
/// request (and record it): give it to `kube::Client::new`.
#[derive(Clone)]
pub struct ApiTap {
    inner: FakeApiServer,
    hook: TapHook,
}

impl ApiTap {
    pub fn new(
        inner: &FakeApiServer,
        hook: impl Fn(&ApiReq) -> Tap + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner: inner.clone(),
            hook: Arc::new(hook),
        }
    }

    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Request<kube::client::Body>> for ApiTap {
    type Response = http::Response<crate::support::fake_api::FakeBody>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let info = ApiReq {
            method: req.method().to_string(),
            path: req.uri().path().to_owned(),
        };
        let tap = (self.hook)(&info);
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let pass = |mut inner: FakeApiServer, req| async move {
                match inner.call(req).await {
                    Ok(r) => Ok(r),
                    Err(never) => match never {},
                }
            };
            match tap {
                Tap::Pass => pass(inner, req).await,
                Tap::Fail(code) => {
                    inner.fail_next(
                        crate::support::fake_api::Fault::new(code)
                            .method(&info.method)
                            .path_contains(&info.path),
                    );
                    pass(inner, req).await
                }
                Tap::Refuse => Err("connection refused (partitioned by the test)".into()),
                Tap::Lost => {
                    let _ = inner.call(req).await;
                    Err("connection reset after the request was sent (by the test)".into())
                }
                Tap::Hang { forward, notify } => {
                    if forward {
                        let _ = inner.call(req).await;
                    }
                    notify.notify_one();
                    futures::future::pending().await
                }
            }
        })
    }
}
