//! Support for the chaos suite: the commands that restart the control plane (given by whoever
//! runs it), a mock Azure (Entra + ARM) that counts every mint and can fail a share of its
//! answers, retrying appliers, samplers, and the figures each case reports.
#![allow(dead_code)]

use crate::e2e_support::Cluster;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TENANT: &str = "00000000-0000-0000-0000-000000000000";
pub const CLIENT: &str = "11111111-1111-1111-1111-111111111111";
pub const SUBSCRIPTION: &str = "00000000-1111-2222-3333-444444444444";
pub const CLIENT_SECRET: &str = "chaos-client-secret";

/// Runs the shell command in environment variable `var` (e.g. `CHAOS_RESTART_APISERVER`),
/// waiting for it to finish; returns how long it took.
pub async fn run_control(var: &str) -> Duration {
    let command = std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "set {var} to the shell command that does this to the control plane in KUBECONFIG \
             (see docs/reliability.md, 'Running it')"
        )
    });
    let started = Instant::now();
    let cmd = command.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .status()
            .expect("run the control command")
    })
    .await
    .expect("the control command's thread");
    assert!(status.success(), "{var} ({command}) failed: {status}");
    started.elapsed()
}

/// One measured figure of a case.
pub struct Figure {
    pub metric: String,
    pub value: String,
    pub target: String,
    pub pass: bool,
}

/// The figures of one case, printed as a table and appended as JSON lines to `CHAOS_REPORT`
/// (when set), so that a run can be turned into the tables of the docs.
pub struct Figures {
    case: String,
    rows: Vec<Figure>,
}

impl Figures {
    pub fn new(case: &str) -> Self {
        Self {
            case: case.into(),
            rows: Vec::new(),
        }
    }

    /// Records a figure; `pass` says whether it meets its target.
    pub fn add(&mut self, metric: &str, value: impl ToString, target: &str, pass: bool) {
        self.rows.push(Figure {
            metric: metric.into(),
            value: value.to_string(),
            target: target.into(),
            pass,
        });
    }

    /// A figure without a target (for the record).
    pub fn note(&mut self, metric: &str, value: impl ToString) {
        self.add(metric, value, "", true);
    }

    /// Prints the table, writes the report, and fails the test if any figure missed its target.
    pub fn finish(self) {
        eprintln!("\n== chaos case: {}", self.case);
        for r in &self.rows {
            eprintln!(
                "  {:<58} {:>14}   {:<22} {}",
                r.metric,
                r.value,
                r.target,
                if r.target.is_empty() {
                    ""
                } else if r.pass {
                    "pass"
                } else {
                    "FAIL"
                }
            );
        }
        if let Ok(path) = std::env::var("CHAOS_REPORT") {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("open CHAOS_REPORT");
            for r in &self.rows {
                let line = json!({"case": self.case, "metric": r.metric, "value": r.value,
                                  "target": r.target, "pass": r.pass});
                writeln!(f, "{line}").expect("write CHAOS_REPORT");
            }
        }
        let failed: Vec<&str> = self
            .rows
            .iter()
            .filter(|r| !r.pass)
            .map(|r| r.metric.as_str())
            .collect();
        assert!(failed.is_empty(), "{}: missed {failed:?}", self.case);
    }
}

/// A minted notebook token, as the mock handed it out.
#[derive(Clone, Debug)]
pub struct Mint {
    pub workspace: String,
    pub token: String,
    pub expires_at: Instant,
    /// How long it lives (minted at `expires_at - lifetime`).
    pub lifetime: Duration,
}

#[derive(Default)]
struct AzureState {
    mints: Vec<Mint>,
    entra_calls: u64,
    arm_calls: u64,
    arm_failed: u64,
}

/// A mock of Microsoft Entra ID and `listNotebookAccessToken` on one loopback port. Tokens live
/// `lifetime`; a share `fail_per_mille / 1000` of ARM calls is answered 503.
#[derive(Clone)]
pub struct MockAzure {
    pub base_url: String,
    pub host_port: String,
    state: Arc<Mutex<AzureState>>,
    lifetime_secs: Arc<AtomicU64>,
    fail_per_mille: Arc<AtomicU64>,
    seq: Arc<AtomicU64>,
}

type Shared = MockAzure;

impl MockAzure {
    pub async fn start(lifetime: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mock = Self {
            base_url: format!("http://{addr}"),
            host_port: addr.to_string(),
            state: Arc::default(),
            lifetime_secs: Arc::new(AtomicU64::new(lifetime.as_secs())),
            fail_per_mille: Arc::new(AtomicU64::new(0)),
            seq: Arc::new(AtomicU64::new(0)),
        };
        let app = axum::Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(entra))
            .route(
                "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}/listNotebookAccessToken",
                post(arm),
            )
            .with_state(mock.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        mock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AzureState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fail this share of ARM calls (0.0 to 1.0) with 503 from now on.
    pub fn set_failure_ratio(&self, ratio: f64) {
        self.fail_per_mille
            .store((ratio * 1000.0) as u64, Ordering::SeqCst);
    }

    /// Tokens minted from now on live this long.
    pub fn set_lifetime(&self, lifetime: Duration) {
        self.lifetime_secs
            .store(lifetime.as_secs(), Ordering::SeqCst);
    }

    /// Every token minted so far.
    pub fn mints(&self) -> Vec<Mint> {
        self.lock().mints.clone()
    }

    /// Tokens minted per workspace name.
    pub fn mints_per_workspace(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for m in self.lock().mints.iter() {
            *out.entry(m.workspace.clone()).or_default() += 1;
        }
        out
    }

    /// Whether `token` was minted here and has not expired.
    pub fn is_live(&self, token: &str) -> bool {
        let now = Instant::now();
        self.lock()
            .mints
            .iter()
            .any(|m| m.token == token && now < m.expires_at)
    }

    /// (Entra calls, ARM calls, ARM calls answered 503).
    pub fn calls(&self) -> (u64, u64, u64) {
        let s = self.lock();
        (s.entra_calls, s.arm_calls, s.arm_failed)
    }
}

async fn entra(State(m): State<Shared>, Path(_tenant): Path<String>) -> Response {
    m.lock().entra_calls += 1;
    axum::Json(
        json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "chaos-arm-token"}),
    )
    .into_response()
}

async fn arm(
    State(m): State<Shared>,
    Path((_sub, _rg, ws)): Path<(String, String, String)>,
) -> Response {
    let n = m.seq.fetch_add(1, Ordering::SeqCst);
    let fail = m.fail_per_mille.load(Ordering::SeqCst);
    // A deterministic scramble of the call number: failures are spread, not in runs.
    let fails = n.wrapping_mul(2_654_435_761) % 1000 < fail;
    let mut s = m.lock();
    s.arm_calls += 1;
    if fails {
        s.arm_failed += 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": {"code": "ServiceUnavailable", "message": "brown-out"}})),
        )
            .into_response();
    }
    let lifetime = m.lifetime_secs.load(Ordering::SeqCst);
    let token = format!("tok-{ws}-{n}");
    s.mints.push(Mint {
        workspace: ws.clone(),
        token: token.clone(),
        expires_at: Instant::now() + Duration::from_secs(lifetime),
        lifetime: Duration::from_secs(lifetime),
    });
    axum::Json(json!({
        "notebookResourceId": "1", "hostName": "h", "publicDns": "nb.example",
        "tokenType": "Bearer", "expiresIn": lifetime, "accessToken": token
    }))
    .into_response()
}

/// A NotebookTokenRequest named `name` for workspace `name`, against the mock.
pub fn ntr(azure: &MockAzure, name: &str) -> Value {
    json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
        "metadata": {"name": name},
        "spec": {"subscriptionId": SUBSCRIPTION, "resourceGroup": "rg", "workspaceName": name,
                 "endpoint": azure.base_url,
                 "azure": {"tenantId": TENANT, "clientId": CLIENT,
                           "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"},
                           "authorityHost": azure.base_url}}
    })
}

/// The Secret with the client secret the NotebookTokenRequests reference.
pub fn azure_secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "azure-sp"},
           "stringData": {"clientSecret": CLIENT_SECRET}})
}

/// Applies `doc` until the API server accepts it (it may be restarting), for up to 3 minutes.
/// Returns how many attempts failed.
pub async fn apply_retrying(cluster: &Cluster, ns: &str, doc: Value) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut failures = 0;
    loop {
        match cluster.try_apply_json(ns, doc.clone()).await {
            Ok(()) => return failures,
            Err(e) => {
                failures += 1;
                assert!(
                    Instant::now() < deadline,
                    "could not apply for 3 minutes: {e}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Applies every document with `parallel` requests in flight, each retried until accepted.
/// Returns the number of failed attempts.
pub async fn apply_all(cluster: &Cluster, ns: &str, docs: Vec<Value>, parallel: usize) -> u32 {
    use futures::StreamExt;
    futures::stream::iter(docs)
        .map(|d| apply_retrying(cluster, ns, d))
        .buffer_unordered(parallel)
        .fold(0, |acc, f| async move { acc + f })
        .await
}

/// Resources of kind `plural` in `ns` whose Ready condition is True for their generation, by
/// name. A failed list (the API server restarting) counts nothing.
pub async fn ready_names(cluster: &Cluster, ns: &str, plural: &str) -> Vec<String> {
    let ar = kube::core::ApiResource {
        group: "workspaceaccess.io".into(),
        version: "v1alpha1".into(),
        api_version: "workspaceaccess.io/v1alpha1".into(),
        kind: String::new(),
        plural: plural.into(),
    };
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(cluster.client.clone(), ns, &ar);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|o| {
            let generation = o.metadata.generation;
            o.data["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .is_some_and(|c| {
                    c["status"] == "True" && c["observedGeneration"].as_i64() == generation
                })
        })
        .filter_map(|o| o.metadata.name)
        .collect()
}

/// Waits until `count` resources of `plural` are Ready; returns how long it took, or `None`.
pub async fn wait_all_ready(
    cluster: &Cluster,
    ns: &str,
    plural: &str,
    count: usize,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if ready_names(cluster, ns, plural).await.len() >= count {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// The Secrets in `ns` managed by the operator: name -> data (text).
pub async fn managed_secrets(
    cluster: &Cluster,
    ns: &str,
) -> Option<HashMap<String, BTreeMap<String, String>>> {
    let api: Api<Secret> = Api::namespaced(cluster.client.clone(), ns);
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=workspace-access-operator");
    let list = api.list(&lp).await.ok()?;
    Some(
        list.items
            .into_iter()
            .map(|s| {
                let data = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                (s.metadata.name.unwrap_or_default(), data)
            })
            .collect(),
    )
}

/// Resident set size of a process, in KiB (from /proc).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Threads of a process.
pub fn threads(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("Threads:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
