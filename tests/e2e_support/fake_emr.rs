//! A stateful fake of the EMR Serverless Spark Livy compute token API (docs/providers.md §4.2) on
//! loopback, for reconciler scenarios and e2e tests. It keeps tokens per Livy Gateway, answers
//! the five operations with the real envelope, refuses requests whose ACS3-HMAC-SHA256
//! signature does not verify (checked by code written here, independently of the operator's
//! signer), refuses duplicate token names, records every call and can inject failures.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Time source of the fake (the tests' manual clock, or the system clock).
pub type Now = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// A token held by the fake.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeToken {
    pub workspace_id: String,
    pub livy_compute_id: String,
    pub token_id: String,
    pub name: String,
    pub token: String,
    pub created_by: String,
    pub create_time: Timestamp,
    pub expire_time: Option<Timestamp>,
    pub expire_days: Option<i64>,
}

/// One call the fake answered.
#[derive(Clone, Debug)]
pub struct FakeCall {
    pub action: String,
    pub method: String,
    pub token_id: Option<String>,
    pub status: u16,
    pub body: Value,
}

/// An injected failure for the next call of an action.
#[derive(Clone, Debug)]
pub struct FakeFault {
    pub action: String,
    pub status: u16,
    pub code: String,
    pub message: String,
    pub retry_after_ms: Option<u64>,
    /// Carry out the operation anyway and fail only the answer (a lost response).
    pub after_effect: bool,
}

type DeleteHook = Arc<dyn Fn(&str) + Send + Sync>;

struct Inner {
    access_key_id: String,
    access_key_secret: String,
    tokens: Vec<FakeToken>,
    next_id: u64,
    calls: Vec<FakeCall>,
    faults: VecDeque<FakeFault>,
    bad_signatures: usize,
    on_delete: Option<DeleteHook>,
    now: Now,
    /// How long one `expireDays` day lasts (24 h, shorter in e2e tests to see rotations).
    day: Duration,
}

/// The fake endpoint.
#[derive(Clone)]
pub struct FakeEmr {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// `127.0.0.1:<port>`, for `--allow-endpoint`.
    pub host_port: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeEmr {
    /// Starts the fake on a free loopback port; it accepts requests signed with this AccessKey.
    pub async fn start(access_key_id: &str, access_key_secret: &str, now: Now) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner {
            access_key_id: access_key_id.into(),
            access_key_secret: access_key_secret.into(),
            tokens: Vec::new(),
            next_id: 1,
            calls: Vec::new(),
            faults: VecDeque::new(),
            bad_signatures: 0,
            on_delete: None,
            now,
            day: Duration::from_secs(24 * 3600),
        }));
        let state = inner.clone();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let state = state.clone();
            async move { handle(state, req).await }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{addr}"),
            host_port: addr.to_string(),
            inner,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a token (as if created outside the operator).
    pub fn add_token(
        &self,
        ws: &str,
        lc: &str,
        id: &str,
        name: &str,
        token: &str,
        lifetime: Duration,
    ) {
        let mut i = self.lock();
        let now = (i.now)();
        i.tokens.push(FakeToken {
            workspace_id: ws.into(),
            livy_compute_id: lc.into(),
            token_id: id.into(),
            name: name.into(),
            token: token.into(),
            created_by: "alice".into(),
            create_time: now,
            expire_time: Some(now + jiff::SignedDuration::try_from(lifetime).unwrap()),
            expire_days: None,
        });
    }

    /// Changes a token in place (as an outside refresh would).
    pub fn update_token(&self, id: &str, f: impl FnOnce(&mut FakeToken)) {
        let mut i = self.lock();
        if let Some(t) = i.tokens.iter_mut().find(|t| t.token_id == id) {
            f(t);
        }
    }

    /// Deletes a token (as if deleted outside the operator).
    pub fn remove_token(&self, id: &str) {
        self.lock().tokens.retain(|t| t.token_id != id);
    }

    /// Every token held.
    pub fn tokens(&self) -> Vec<FakeToken> {
        self.lock().tokens.clone()
    }

    /// A token by ID.
    pub fn token(&self, id: &str) -> Option<FakeToken> {
        self.lock()
            .tokens
            .iter()
            .find(|t| t.token_id == id)
            .cloned()
    }

    /// Every call answered so far.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// Actions of the calls answered so far, in order.
    pub fn actions(&self) -> Vec<String> {
        self.lock().calls.iter().map(|c| c.action.clone()).collect()
    }

    /// How many calls of `action` were answered.
    pub fn count(&self, action: &str) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.action == action)
            .count()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Requests refused because their signature did not verify.
    pub fn bad_signatures(&self) -> usize {
        self.lock().bad_signatures
    }

    /// Fails the next call of `action` with an error envelope.
    pub fn fail_next(&self, fault: FakeFault) {
        self.lock().faults.push_back(fault);
    }

    /// Makes one `expireDays` day last `day` (so that e2e tests see rotations in seconds).
    pub fn set_day_length(&self, day: Duration) {
        self.lock().day = day;
    }

    /// Runs `hook(token_id)` whenever a token is deleted, before it is deleted.
    pub fn on_delete(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        self.lock().on_delete = Some(Arc::new(hook));
    }
}

impl FakeFault {
    /// A failure of the next `action` with `status` and error `code`.
    pub fn new(action: &str, status: u16, code: &str) -> Self {
        Self {
            action: action.into(),
            status,
            code: code.into(),
            message: format!("injected {code}"),
            retry_after_ms: None,
            after_effect: false,
        }
    }

    /// With an `x-acs-retry-after` header (milliseconds).
    pub fn retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// The operation is carried out, only its answer fails.
    pub fn after_effect(mut self) -> Self {
        self.after_effect = true;
        self
    }
}

const UNRESERVED_KEPT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn reencode(raw: &str) -> String {
    let decoded = percent_decode_str(raw).decode_utf8_lossy().into_owned();
    utf8_percent_encode(&decoded, UNRESERVED_KEPT).to_string()
}

/// Verifies the ACS3-HMAC-SHA256 signature of a received request, as the gateway would.
fn verify_signature(
    method: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
    access_key_id: &str,
    secret: &str,
) -> Result<(), String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or("missing Authorization")?;
    let rest = auth
        .strip_prefix("ACS3-HMAC-SHA256 ")
        .ok_or("unknown algorithm")?;
    let mut parts = std::collections::HashMap::new();
    for p in rest.split(',') {
        let (k, v) = p.trim().split_once('=').ok_or("malformed Authorization")?;
        parts.insert(k.to_owned(), v.to_owned());
    }
    let credential = parts.get("Credential").ok_or("no Credential")?;
    if credential != access_key_id {
        return Err("InvalidAccessKeyId.NotFound".into());
    }
    let signed = parts.get("SignedHeaders").ok_or("no SignedHeaders")?;
    let names: Vec<&str> = signed.split(';').collect();
    for h in [
        "host",
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
    ] {
        if !names.contains(&h) {
            return Err(format!("{h} not signed"));
        }
    }
    let body_hash = sha256_hex(body);
    if headers
        .get("x-acs-content-sha256")
        .and_then(|v| v.to_str().ok())
        != Some(body_hash.as_str())
    {
        return Err("x-acs-content-sha256 does not match the body".into());
    }
    // The date must be within 15 minutes of the (real) time.
    let date: Timestamp = headers
        .get("x-acs-date")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or("bad x-acs-date")?;
    if (Timestamp::now().as_second() - date.as_second()).abs() > 900 {
        return Err("InvalidTimeStamp.Expired".into());
    }
    let mut query: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (reencode(k), reencode(v))
        })
        .collect();
    query.sort();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut canonical_headers = String::new();
    for n in &names {
        let mut values: Vec<String> = headers
            .get_all(*n)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().trim().to_owned())
            .collect();
        if values.is_empty() {
            return Err(format!("signed header {n} missing"));
        }
        values.sort();
        canonical_headers.push_str(&format!("{n}:{}\n", values.join(",")));
    }
    let canonical = format!(
        "{method}\n{raw_path}\n{}\n{canonical_headers}\n{signed}\n{body_hash}",
        query.join("&")
    );
    let to_sign = format!("ACS3-HMAC-SHA256\n{}", sha256_hex(canonical.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect();
    if Some(&expected) == parts.get("Signature") {
        Ok(())
    } else {
        Err("SignatureDoesNotMatch".into())
    }
}

fn reply(status: u16, body: Value, retry_after_ms: Option<u64>) -> Response<Body> {
    let mut r = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json");
    if let Some(ms) = retry_after_ms {
        r = r.header("x-acs-retry-after", ms.to_string());
    }
    r.body(Body::from(body.to_string())).unwrap()
}

fn ok(data: Option<Value>) -> Value {
    let mut v = json!({"requestId": "FAKE-REQUEST", "code": "1000000", "message": "ok"});
    if let Some(d) = data {
        v["data"] = d;
    }
    v
}

fn error_body(code: &str, message: &str) -> Value {
    json!({"requestId": "FAKE-REQUEST", "code": code, "message": message})
}

fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

async fn handle(state: Arc<Mutex<Inner>>, req: Request<Body>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let method = parts.method.as_str().to_owned();
    let raw_path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let action = parts
        .headers
        .get("x-acs-action")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut i = state.lock().unwrap_or_else(|e| e.into_inner());

    if let Err(why) = verify_signature(
        &method,
        &raw_path,
        &raw_query,
        &parts.headers,
        &body,
        &i.access_key_id,
        &i.access_key_secret,
    ) {
        i.bad_signatures += 1;
        return reply(
            400,
            json!({"RequestId": "FAKE", "Code": why, "Message": "signature check failed"}),
            None,
        );
    }
    if parts
        .headers
        .get("x-acs-version")
        .and_then(|v| v.to_str().ok())
        != Some("2023-08-08")
    {
        return reply(
            400,
            error_body("InvalidVersion", "x-acs-version must be 2023-08-08"),
            None,
        );
    }
    if !raw_query
        .split('&')
        .any(|kv| kv.starts_with("regionId=") && kv.len() > 9)
    {
        return reply(
            400,
            error_body("MissingRegionId", "regionId is required"),
            None,
        );
    }
    // /api/interactive/v1/workspace/{ws}/livycompute/{lc}/token[/{id}]
    let segs: Vec<String> = raw_path
        .trim_start_matches('/')
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let shape_ok = segs.len() >= 8
        && segs[..4] == ["api", "interactive", "v1", "workspace"]
        && segs[5] == "livycompute"
        && segs[7] == "token"
        && segs.len() <= 9;
    if !shape_ok {
        return reply(404, error_body("InvalidPath", "no such API"), None);
    }
    let (ws, lc) = (segs[4].clone(), segs[6].clone());
    let token_id = segs.get(8).cloned();
    let expected_action = match (method.as_str(), token_id.is_some()) {
        ("PUT", false) => "CreateLivyComputeToken",
        ("GET", false) => "ListLivyComputeToken",
        ("GET", true) => "GetLivyComputeToken",
        ("POST", true) => "RefreshLivyComputeToken",
        ("DELETE", true) => "DeleteLivyComputeToken",
        _ => "",
    };
    if expected_action.is_empty() || expected_action != action {
        return reply(
            400,
            error_body("InvalidAction", "x-acs-action does not match the request"),
            None,
        );
    }
    let body_json: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return reply(400, error_body("InvalidBody", "body is not JSON"), None),
        }
    };
    let mut record = FakeCall {
        action: action.clone(),
        method: method.clone(),
        token_id: token_id.clone(),
        status: 200,
        body: body_json.clone(),
    };
    let fault = i
        .faults
        .iter()
        .position(|f| f.action == action)
        .and_then(|p| i.faults.remove(p));
    if let Some(f) = &fault
        && !f.after_effect
    {
        record.status = f.status;
        i.calls.push(record);
        return reply(f.status, error_body(&f.code, &f.message), f.retry_after_ms);
    }

    let now = (i.now)();
    let in_compute = |t: &FakeToken| t.workspace_id == ws && t.livy_compute_id == lc;
    let (status, answer) = match action.as_str() {
        "CreateLivyComputeToken" => {
            let name = body_json["name"].as_str().unwrap_or_default().to_owned();
            if name.is_empty() {
                (400, error_body("InvalidParameter.Name", "name is required"))
            } else if i.tokens.iter().any(|t| in_compute(t) && t.name == name) {
                (
                    400,
                    error_body(
                        "LivyComputeToken.NameExists",
                        "a token with this name exists",
                    ),
                )
            } else {
                let enable = body_json["autoExpireConfiguration"]["enable"]
                    .as_bool()
                    .unwrap_or(false);
                let days = body_json["autoExpireConfiguration"]["expireDays"].as_i64();
                let id = format!("lctk-{:08}", i.next_id);
                i.next_id += 1;
                let day = jiff::SignedDuration::try_from(i.day).unwrap();
                let expire_time = match (enable, days) {
                    (true, Some(d)) => Some(now + day * i32::try_from(d).unwrap()),
                    _ => None,
                };
                let token = format!("tok-{}-{:016x}", id, rand::random::<u64>());
                i.tokens.push(FakeToken {
                    workspace_id: ws.clone(),
                    livy_compute_id: lc.clone(),
                    token_id: id.clone(),
                    name,
                    token,
                    created_by: "operator-ram-user".into(),
                    create_time: now,
                    expire_time,
                    expire_days: days,
                });
                (200, ok(Some(json!({"tokenId": id}))))
            }
        }
        "ListLivyComputeToken" => {
            let tokens: Vec<Value> = i
                .tokens
                .iter()
                .filter(|t| in_compute(t))
                .map(|t| {
                    json!({"tokenId": t.token_id, "name": t.name, "token": t.token, "createdby": t.created_by,
                           "createTime": ms(t.create_time), "expireTime": t.expire_time.map(ms), "lastUsedTime": null})
                })
                .collect();
            (200, ok(Some(json!({"tokens": tokens}))))
        }
        "GetLivyComputeToken" => match i
            .tokens
            .iter()
            .find(|t| in_compute(t) && Some(&t.token_id) == token_id.as_ref())
        {
            Some(t) => (
                200,
                ok(Some(
                    json!({"tokenId": t.token_id, "name": t.name, "token": t.token, "createdBy": t.created_by,
                    "createTime": ms(t.create_time), "expireTime": t.expire_time.map(ms), "lastUsedTime": ms(t.create_time) + 4000,
                    "autoExpireConfiguration": {"enable": t.expire_days.is_some(), "expireDays": t.expire_days.unwrap_or(0)}}),
                )),
            ),
            None => (
                404,
                error_body("LivyComputeToken.NotFound", "the token does not exist"),
            ),
        },
        "RefreshLivyComputeToken" => match i
            .tokens
            .iter_mut()
            .find(|t| in_compute(t) && Some(&t.token_id) == token_id.as_ref())
        {
            Some(t) => {
                if let Some(n) = body_json["name"].as_str() {
                    t.name = n.into();
                }
                if let Some(v) = body_json["token"].as_str() {
                    t.token = v.into();
                }
                if let Some(d) = body_json["autoExpireConfiguration"]["expireDays"].as_i64() {
                    t.expire_days = Some(d);
                    t.expire_time = Some(now + jiff::SignedDuration::from_hours(24 * d));
                }
                (200, ok(None))
            }
            None => (
                404,
                error_body("LivyComputeToken.NotFound", "the token does not exist"),
            ),
        },
        "DeleteLivyComputeToken" => {
            let exists = i
                .tokens
                .iter()
                .any(|t| in_compute(t) && Some(&t.token_id) == token_id.as_ref());
            if exists {
                if let (Some(hook), Some(id)) = (i.on_delete.clone(), token_id.clone()) {
                    drop(i);
                    hook(&id);
                    i = state.lock().unwrap_or_else(|e| e.into_inner());
                }
                i.tokens
                    .retain(|t| !(in_compute(t) && Some(&t.token_id) == token_id.as_ref()));
                (200, ok(None))
            } else {
                (
                    404,
                    error_body("LivyComputeToken.NotFound", "the token does not exist"),
                )
            }
        }
        _ => (400, error_body("InvalidAction", "unknown action")),
    };
    if let Some(f) = fault {
        // The operation happened; the answer is lost.
        record.status = f.status;
        i.calls.push(record);
        return reply(f.status, error_body(&f.code, &f.message), f.retry_after_ms);
    }
    record.status = status;
    i.calls.push(record);
    reply(status, answer, None)
}
