//! In-process mock providers for the benchmark: Entra ID, Azure Resource Manager, EMR
//! Serverless Spark, Microsoft Fabric and DataRobot on one loopback HTTP server, with a
//! configurable token lifetime and latency, counting every call.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What a mock call was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    EntraToken,
    ArmNotebookToken,
    EmrGet,
    EmrList,
    EmrCreate,
    EmrRefresh,
    EmrDelete,
    FabricWorkspaces,
    FabricRoleAssignments,
    DataRobotSharedRoles,
    DataRobotNotebooks,
}

impl Op {
    /// Whether this call hands out a resource's token or inventory (as opposed to a
    /// credential exchange like Entra).
    pub fn is_resource_call(self) -> bool {
        !matches!(self, Op::EntraToken)
    }
}

/// Settings of the mocks.
#[derive(Clone, Debug)]
pub struct MockSettings {
    /// Lifetime of the tokens handed out.
    pub token_lifetime: Duration,
    /// Delay before every answer.
    pub latency: Duration,
    /// Lifetime of tokens for workspaces whose name starts with `short-` (renewal phase).
    pub short_lifetime: Duration,
}

#[derive(Clone)]
struct EmrToken {
    id: String,
    name: String,
    token: String,
    created_ms: u64,
    expire_ms: u64,
}

/// Shared state of the mocks.
pub struct Mocks {
    settings: MockSettings,
    seq: AtomicU64,
    calls: Mutex<Vec<(Instant, Op, String)>>,
    emr: Mutex<HashMap<String, EmrToken>>,
    /// Expiry (unix ms) of the last notebook token handed out per workspace key.
    pub handed_out: Mutex<HashMap<String, Vec<(u64, u64)>>>,
}

impl Mocks {
    fn new(settings: MockSettings) -> Self {
        Self {
            settings,
            seq: AtomicU64::new(0),
            calls: Mutex::new(Vec::new()),
            emr: Mutex::new(HashMap::new()),
            handed_out: Mutex::new(HashMap::new()),
        }
    }

    fn record(&self, op: Op, key: &str) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).push((
            Instant::now(),
            op,
            key.to_owned(),
        ));
    }

    fn next(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Number of calls of `op` since `since`.
    pub fn count_since(&self, since: Instant, pred: impl Fn(Op) -> bool) -> u64 {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(t, op, _)| *t >= since && pred(*op))
            .count() as u64
    }

    /// Calls since `since`, counted by operation, as text (`EmrGet=20 ...`).
    pub fn breakdown_since(&self, since: Instant) -> String {
        let mut counts: std::collections::BTreeMap<Op, u64> = Default::default();
        for (t, op, _) in self.calls.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if *t >= since {
                *counts.entry(*op).or_default() += 1;
            }
        }
        counts
            .iter()
            .map(|(op, n)| format!("{op:?}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Highest number of resource calls in any `window` since `since`.
    pub fn peak_calls_since(&self, since: Instant, window: Duration) -> u64 {
        let mut times: Vec<Instant> = self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(t, op, _)| *t >= since && op.is_resource_call())
            .map(|(t, _, _)| *t)
            .collect();
        times.sort();
        let mut best = 0usize;
        let mut start = 0usize;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best as u64
    }

    /// Highest number of `op` calls in any `window` since `since` for one group of calls, the
    /// group named by `group` from a call's key (e.g. its subscription); with that group.
    pub fn peak_per_group_since(
        &self,
        since: Instant,
        window: Duration,
        op: Op,
        group: impl Fn(&str) -> String,
    ) -> (u64, String) {
        let mut by_group: HashMap<String, Vec<Instant>> = HashMap::new();
        for (t, o, key) in self.calls.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if *t >= since && *o == op {
                by_group.entry(group(key)).or_default().push(*t);
            }
        }
        let mut best = (0u64, String::new());
        for (g, mut times) in by_group {
            times.sort();
            let mut start = 0usize;
            for end in 0..times.len() {
                while times[end].duration_since(times[start]) >= window {
                    start += 1;
                }
                let n = (end - start + 1) as u64;
                if n > best.0 {
                    best = (n, g.clone());
                }
            }
        }
        best
    }

    /// Renewals of notebook tokens for workspaces starting with `prefix`: (on time, late). A
    /// renewal is on time when the new token was handed out before the previous one expired.
    pub fn renewals(&self, prefix: &str) -> (u64, u64) {
        let mut on_time = 0;
        let mut late = 0;
        for (key, tokens) in self
            .handed_out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if !key.rsplit('/').next().unwrap_or("").starts_with(prefix) {
                continue;
            }
            for pair in tokens.windows(2) {
                let (_, prev_expiry) = pair[0];
                let (issued, _) = pair[1];
                if issued < prev_expiry {
                    on_time += 1;
                } else {
                    late += 1;
                }
            }
        }
        (on_time, late)
    }

    /// Seeds an existing EMR token for reference mode.
    pub fn seed_emr_token(&self, id: &str) {
        let now = now_ms();
        self.emr.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id.to_owned(),
            EmrToken {
                id: id.to_owned(),
                name: format!("seeded-{id}"),
                token: format!("livy-{}", self.next()),
                created_ms: now,
                expire_ms: now + self.settings.token_lifetime.as_millis() as u64,
            },
        );
    }

    async fn delay(&self) {
        if !self.settings.latency.is_zero() {
            tokio::time::sleep(self.settings.latency).await;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type S = State<Arc<Mocks>>;

async fn entra(State(m): S, Path(tenant): Path<String>) -> Response {
    m.delay().await;
    m.record(Op::EntraToken, &tenant);
    Json(json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "access_token": format!("mock-entra-{}", m.next()),
    }))
    .into_response()
}

async fn arm(State(m): S, Path((sub, rg, ws)): Path<(String, String, String)>) -> Response {
    m.delay().await;
    let key = format!("{sub}/{rg}/{ws}");
    m.record(Op::ArmNotebookToken, &key);
    let lifetime = if ws.starts_with("short-") {
        m.settings.short_lifetime.as_secs()
    } else {
        m.settings.token_lifetime.as_secs()
    };
    let now = now_ms();
    m.handed_out
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default()
        .push((now, now + lifetime * 1000));
    Json(json!({
        "notebookResourceId": "94350843095843059",
        "hostName": "Host product name",
        "publicDns": "resource.notebooks.azure.net",
        "tokenType": "Bearer",
        "expiresIn": lifetime as f64,
        "scope": "aznb_identity",
        "accessToken": format!("mock-notebook-{}", m.next()),
        "refreshToken": format!("mock-refresh-{}", m.next()),
    }))
    .into_response()
}

fn envelope(data: Value) -> Response {
    Json(json!({"requestId": "bench", "code": "1000000", "message": "ok", "data": data}))
        .into_response()
}

fn emr_json(t: &EmrToken, list: bool) -> Value {
    let creator = if list { "createdby" } else { "createdBy" };
    json!({
        "tokenId": t.id, "name": t.name, "token": t.token, creator: "bench",
        "createTime": t.created_ms, "expireTime": t.expire_ms, "lastUsedTime": t.created_ms,
        "autoExpireConfiguration": {"enable": true, "expireDays": 1}
    })
}

async fn emr_list(State(m): S, Path((w, lc)): Path<(String, String)>) -> Response {
    m.delay().await;
    m.record(Op::EmrList, &format!("{w}/{lc}"));
    let tokens: Vec<Value> = m
        .emr
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|t| emr_json(t, true))
        .collect();
    envelope(json!({"tokens": tokens}))
}

async fn emr_create(
    State(m): S,
    Path((w, lc)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    m.delay().await;
    m.record(Op::EmrCreate, &format!("{w}/{lc}"));
    let n = m.next();
    let now = now_ms();
    let t = EmrToken {
        id: format!("lctk-{n}"),
        name: body["name"].as_str().unwrap_or("unnamed").to_owned(),
        token: format!("livy-{n}"),
        created_ms: now,
        expire_ms: now + m.settings.token_lifetime.as_millis() as u64,
    };
    m.emr
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(t.id.clone(), t.clone());
    envelope(json!({"tokenId": t.id}))
}

async fn emr_get(State(m): S, Path((_w, _lc, id)): Path<(String, String, String)>) -> Response {
    m.delay().await;
    m.record(Op::EmrGet, &id);
    match m.emr.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        Some(t) => envelope(emr_json(t, false)),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"requestId": "bench", "code": "TokenNotFound", "message": "not found"})),
        )
            .into_response(),
    }
}

async fn emr_refresh(State(m): S, Path((_w, _lc, id)): Path<(String, String, String)>) -> Response {
    m.delay().await;
    m.record(Op::EmrRefresh, &id);
    if let Some(t) = m.emr.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&id) {
        t.expire_ms = now_ms() + m.settings.token_lifetime.as_millis() as u64;
    }
    Json(json!({"requestId": "bench", "code": "1000000", "message": "ok"})).into_response()
}

async fn emr_delete(State(m): S, Path((_w, _lc, id)): Path<(String, String, String)>) -> Response {
    m.delay().await;
    m.record(Op::EmrDelete, &id);
    m.emr.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    Json(json!({"requestId": "bench", "code": "1000000", "message": "ok"})).into_response()
}

async fn fabric_workspaces(State(m): S) -> Response {
    m.delay().await;
    m.record(Op::FabricWorkspaces, "");
    Json(json!({"value": [
        {"id": "fa9ad228-3e6b-44d4-b5f4-e275f337afa9", "displayName": "My workspace", "description": "", "type": "Personal"},
        {"id": "cfafbeb1-8037-4d0c-896e-a46fb27ff227", "displayName": "Marketing", "description": "A workspace", "type": "Workspace"}
    ]}))
    .into_response()
}

async fn fabric_roles(State(m): S, Path(id): Path<String>) -> Response {
    m.delay().await;
    m.record(Op::FabricRoleAssignments, &id);
    Json(json!({"value": [
        {"id": "81fac5e1-0000-0000-0000-000000000001", "principal": {"id": "81fac5e1-0000-0000-0000-000000000001", "displayName": "Eric", "type": "User"}, "role": "Admin"}
    ]}))
    .into_response()
}

async fn datarobot_shared_roles(
    State(m): S,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Response {
    m.delay().await;
    let ids: Vec<String> = q
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("notebookIds="))
        .flat_map(|v| {
            percent_decode(v)
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect();
    m.record(Op::DataRobotSharedRoles, &ids.join(","));
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({"notebookId": id, "roles": [{"id": "u1", "name": "alice@example.com", "role": "OWNER", "shareRecipientType": "user"}]}))
        .collect();
    Json(json!({"data": data})).into_response()
}

async fn datarobot_notebooks(State(m): S) -> Response {
    m.delay().await;
    m.record(Op::DataRobotNotebooks, "");
    Json(json!({"count": 1, "data": [{"id": "nb-selected", "name": "n"}], "next": null, "previous": null, "totalCount": 1}))
        .into_response()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Starts the mocks on 127.0.0.1 (any free port); returns the address and the shared state.
pub async fn start(settings: MockSettings) -> anyhow::Result<(SocketAddr, Arc<Mocks>)> {
    let state = Arc::new(Mocks::new(settings));
    let token = "/api/interactive/v1/workspace/{w}/livycompute/{lc}/token";
    let token_id = "/api/interactive/v1/workspace/{w}/livycompute/{lc}/token/{id}";
    let app = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(entra))
        .route(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices/workspaces/{ws}/listNotebookAccessToken",
            post(arm),
        )
        .route(token, get(emr_list).put(emr_create))
        .route(token_id, get(emr_get).post(emr_refresh).delete(emr_delete))
        .route("/v1/workspaces", get(fabric_workspaces))
        .route("/v1/workspaces/{id}/roleAssignments", get(fabric_roles))
        .route("/api/v2/notebooks/sharedRoles/", get(datarobot_shared_roles))
        .route("/api/v2/notebooks/", get(datarobot_notebooks))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, state))
}
