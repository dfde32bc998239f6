//! NotebookTokenRequest: Secret and status from a mock Azure (Entra ID and ARM on one
//! httpmock server), renewal at the right time, no Azure call when nothing is due, restart
//! recovery, and failures that keep the old Secret.

use crate::support::fake_api::FakeApiServer;
use crate::support::*;
use httpmock::prelude::*;
use httpmock::{Mock, MockServer};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use workspace_access_operator::api::NotebookTokenRequest;
use workspace_access_operator::api::common::*;
use workspace_access_operator::controller::driver::reconcile;
use workspace_access_operator::controller::{Clock, Context, ManualClock, Settings, SyncEvents};
use workspace_access_operator::providers::endpoint::EndpointPolicy;

const NS: &str = "team-a";
const TENANT: &str = "00000000-0000-0000-0000-000000000000";
const ENTRA_PATH: &str = "/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token";
const CLIENT_SECRET: &str = "sp-client-secret-value";

fn arm_path(workspace: &str) -> String {
    format!(
        "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/workspace-1234/providers/Microsoft.MachineLearningServices/workspaces/{workspace}/listNotebookAccessToken"
    )
}

fn settings() -> Settings {
    Settings {
        endpoint_policy: EndpointPolicy::new(vec!["127.0.0.1".parse().unwrap()]),
        ..Settings::default()
    }
}

fn ntr(name: &str, azure: &MockServer) -> NotebookTokenRequest {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444",
                 "resourceGroup": "workspace-1234", "workspaceName": "testworkspace",
                 "endpoint": azure.base_url(),
                 "azure": {"tenantId": TENANT, "clientId": "11111111-1111-1111-1111-111111111111",
                           "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"},
                           "authorityHost": azure.base_url()},
                 "secretName": format!("{name}-token")}
    }))
    .unwrap()
}

/// The seed's sample response plus the two secret fields.
fn arm_body(access_token: &str) -> Value {
    json!({
        "notebookResourceId": "94350843095843059", "hostName": "Host product name",
        "publicDns": "resource.notebooks.azure.net", "tokenType": "Bearer",
        "expiresIn": 28800.0, "scope": "aznb_identity",
        "accessToken": access_token, "refreshToken": "refresh-1"
    })
}

async fn entra_ok(azure: &MockServer) -> Mock<'_> {
    azure
        .mock_async(|when, then| {
            when.method(POST)
                .path(ENTRA_PATH)
                .form_urlencoded_tuple("client_secret", CLIENT_SECRET)
                .form_urlencoded_tuple("scope", "https://management.azure.com/.default");
            then.status(200).json_body(json!({
                "token_type": "Bearer", "expires_in": 3599, "access_token": "arm-bearer"
            }));
        })
        .await
}

async fn arm_ok<'a>(azure: &'a MockServer, access_token: &str) -> Mock<'a> {
    let body = arm_body(access_token);
    azure
        .mock_async(|when, then| {
            when.method(POST)
                .path(arm_path("testworkspace"))
                .query_param("api-version", "2024-04-01")
                .header("authorization", "Bearer arm-bearer");
            then.status(200)
                .header("x-ms-request-id", "req-ok")
                .json_body(body);
        })
        .await
}

async fn arm_fails<'a>(
    azure: &'a MockServer,
    status: u16,
    body: Value,
    retry_after: Option<&str>,
) -> Mock<'a> {
    azure
        .mock_async(|when, then| {
            when.method(POST).path(arm_path("testworkspace"));
            let then = then
                .status(status)
                .header("x-ms-request-id", format!("req-{status}"))
                .json_body(body);
            if let Some(ra) = retry_after {
                let _ = then.header("retry-after", ra);
            }
        })
        .await
}

/// `ml` synced once (Entra and ARM answering), then ARM's answer taken away: the start of
/// the tests of failing renewals, which mock ARM's failure themselves.
async fn synced_then_arm_gone(azure: &MockServer) -> Env {
    entra_ok(azure).await;
    let arm = arm_ok(azure, "notebook-token-1").await;
    let e = env();
    e.s.insert(&ntr("ml", azure));
    e.sync("ml").await;
    arm.delete_async().await;
    e
}

struct Env {
    s: FakeApiServer,
    ctx: Arc<Context>,
    clock: Arc<ManualClock>,
}

fn env() -> Env {
    env_with(settings())
}

fn env_with(settings: Settings) -> Env {
    let s = server();
    s.insert(&secret(NS, "azure-sp", &[("clientSecret", CLIENT_SECRET)]));
    let (ctx, clock) = context(&s, settings);
    Env { s, ctx, clock }
}

impl Env {
    fn obj(&self, name: &str) -> NotebookTokenRequest {
        self.s.get(NS, name).expect("resource exists")
    }

    async fn sync(&self, name: &str) -> Action {
        reconcile(Arc::new(self.obj(name)), self.ctx.clone())
            .await
            .expect("reconcile")
    }

    fn status(&self, name: &str) -> Value {
        serde_json::to_value(self.obj(name).status.expect("status written")).unwrap()
    }

    fn token_secret(&self, name: &str) -> Secret {
        self.s
            .get(NS, &format!("{name}-token"))
            .expect("token Secret")
    }

    /// Events the API server accepted.
    fn events_created(&self) -> usize {
        self.s
            .writes()
            .iter()
            .filter(|r| r.path.ends_with("/events") && r.status == 201)
            .count()
    }

    fn writes(&self, fragment: &str) -> usize {
        self.s
            .writes()
            .iter()
            .filter(|r| r.path.contains(fragment))
            .count()
    }
}

fn annotation(s: &Secret, key: &str) -> String {
    s.metadata.annotations.as_ref().unwrap()[key].clone()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn requeue_after(a: &Action) -> Duration {
    // Action has no getter; its Debug form names the delay.
    let dbg = format!("{a:?}");
    let inner = dbg
        .split("requeue_after: Some(")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("expected a requeue, got {dbg}"));
    let secs = if let Some(ms) = inner.strip_suffix("ms") {
        ms.parse::<f64>().unwrap() / 1000.0
    } else {
        inner.trim_end_matches('s').parse::<f64>().unwrap()
    };
    Duration::from_secs_f64(secs)
}

#[tokio::test]
async fn first_sync_writes_the_secret_and_status_and_a_resync_calls_nothing() {
    let azure = MockServer::start_async().await;
    let entra = entra_ok(&azure).await;
    let arm = arm_ok(&azure, "notebook-token-1").await;
    let e = env();
    let obj = e.s.insert(&ntr("ml", &azure));
    e.s.clear_requests();

    let action = e.sync("ml").await;
    entra.assert_calls_async(1).await;
    arm.assert_calls_async(1).await;

    let secret = e.token_secret("ml");
    let keys: Vec<&str> = secret
        .data
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "accessToken",
            "expiresAt",
            "hostName",
            "notebookResourceId",
            "publicDns",
            "refreshToken",
            "scope",
            "tokenType"
        ]
    );
    assert_eq!(
        secret_value(&secret, "accessToken").as_deref(),
        Some("notebook-token-1")
    );
    assert_eq!(
        secret_value(&secret, "refreshToken").as_deref(),
        Some("refresh-1")
    );
    assert_eq!(
        secret_value(&secret, "expiresAt").as_deref(),
        Some("2026-11-23T18:00:00Z")
    );
    assert_eq!(
        secret_value(&secret, "publicDns").as_deref(),
        Some("resource.notebooks.azure.net")
    );
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("NotebookTokenRequest", obj.metadata.uid.as_deref().unwrap())
    );
    assert_eq!(
        annotation(&secret, EXPIRES_AT_ANNOTATION),
        "2026-11-23T18:00:00Z"
    );
    assert_eq!(annotation(&secret, GENERATION_ANNOTATION), "1");
    // Renewal: 10% of the 8 h lifetime (48 min) before expiry, minus up to 5 min jitter.
    let renew_at = ts(&annotation(&secret, RENEW_AT_ANNOTATION));
    assert!(
        renew_at > ts("2026-11-23T17:07:00Z") && renew_at <= ts("2026-11-23T17:12:00Z"),
        "{renew_at}"
    );
    assert_eq!(
        requeue_after(&action),
        Duration::from_secs(3600),
        "the driver caps the wait at an hour"
    );

    let status = e.status("ml");
    assert_eq!(
        ready_of(&status).unwrap(),
        (
            "True".into(),
            "Synced".into(),
            "token valid until 2026-11-23T18:00:00Z".into()
        )
    );
    assert_eq!(status["expiresAt"], "2026-11-23T18:00:00Z");
    assert_eq!(status["secretName"], "ml-token");
    assert_eq!(status["notebookResourceId"], "94350843095843059");
    assert_eq!(status["hostName"], "Host product name");
    assert_eq!(status["publicDns"], "resource.notebooks.azure.net");
    assert_eq!(status["tokenType"], "Bearer");
    assert_eq!(status["scope"], "aznb_identity");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["lastSyncTime"], t0().to_string());
    assert_eq!(ts(status["nextSyncTime"].as_str().unwrap()), renew_at);
    let printed = status.to_string();
    assert!(!printed.contains("notebook-token-1") && !printed.contains("refresh-1"));
    assert_eq!(e.writes("/secrets/"), 1);
    assert_eq!(e.writes("/status"), 1);
    assert_eq!(e.writes("/events"), 1, "one event for the minted token");

    // A resync (the hourly requeue, or the watch event of our own status write) an hour
    // later: the token is still good, so no Azure call and no write at all.
    e.clock.advance(Duration::from_secs(3600));
    e.s.clear_requests();
    let action = e.sync("ml").await;
    entra.assert_calls_async(1).await;
    arm.assert_calls_async(1).await;
    assert!(
        e.s.writes().is_empty(),
        "unchanged resync wrote {:?}",
        e.s.writes()
    );
    assert_eq!(requeue_after(&action), Duration::from_secs(3600));
}

#[tokio::test]
async fn the_token_is_renewed_at_its_renewal_time_not_before() {
    let azure = MockServer::start_async().await;
    let entra = entra_ok(&azure).await;
    let arm = arm_ok(&azure, "notebook-token-1").await;
    let e = env();
    e.s.insert(&ntr("ml", &azure));
    e.sync("ml").await;
    let renew_at = ts(&annotation(&e.token_secret("ml"), RENEW_AT_ANNOTATION));

    // One second before: nothing, and the requeue lands on the renewal time.
    e.clock.set(renew_at - jiff::SignedDuration::from_secs(1));
    let action = e.sync("ml").await;
    arm.assert_calls_async(1).await;
    assert_eq!(requeue_after(&action), Duration::from_secs(1));

    // At the renewal time: exactly one new ARM call, and one new Entra token (the first,
    // valid for an hour, is long stale).
    e.clock.set(renew_at);
    arm.delete_async().await;
    let arm2 = arm_ok(&azure, "notebook-token-2").await;
    e.s.clear_requests();
    e.sync("ml").await;
    arm2.assert_calls_async(1).await;
    entra.assert_calls_async(2).await;
    let secret = e.token_secret("ml");
    assert_eq!(
        secret_value(&secret, "accessToken").as_deref(),
        Some("notebook-token-2")
    );
    let expires = renew_at + jiff::SignedDuration::from_secs(28800);
    assert_eq!(
        ts(&annotation(&secret, EXPIRES_AT_ANNOTATION)),
        Timestamp::from_second(expires.as_second()).unwrap()
    );
    let status = e.status("ml");
    assert_eq!(
        ts(status["expiresAt"].as_str().unwrap()),
        ts(&annotation(&secret, EXPIRES_AT_ANNOTATION))
    );
    assert_eq!(status["lastSyncTime"], renew_at.to_string());
    assert_eq!(e.writes("/secrets/"), 1);
}

#[tokio::test]
async fn after_a_restart_a_valid_secret_is_used_without_calling_azure() {
    let azure = MockServer::start_async().await;
    let entra = entra_ok(&azure).await;
    let arm = arm_ok(&azure, "notebook-token-1").await;
    let e = env();
    e.s.insert(&ntr("ml", &azure));
    e.sync("ml").await;
    let before = e.status("ml");

    // A new operator process: empty caches, an hour later.
    let (ctx, clock) = context(&e.s, settings());
    clock.set(t0() + jiff::SignedDuration::from_hours(1));
    e.s.clear_requests();
    reconcile(Arc::new(e.obj("ml")), ctx.clone()).await.unwrap();
    entra.assert_calls_async(1).await;
    arm.assert_calls_async(1).await;
    assert!(e.s.writes().is_empty(), "{:?}", e.s.writes());

    // The status is lost (e.g. restored from a backup without it): rebuilt from the Secret,
    // still without calling Azure.
    e.s.modify::<NotebookTokenRequest>(NS, "ml", |o| {
        o.as_object_mut().unwrap().remove("status");
    });
    assert!(e.obj("ml").status.is_none());
    e.s.clear_requests();
    reconcile(Arc::new(e.obj("ml")), ctx.clone()).await.unwrap();
    entra.assert_calls_async(1).await;
    arm.assert_calls_async(1).await;
    assert_eq!(e.writes("/secrets/"), 0);
    assert_eq!(e.writes("/status"), 1);
    let after = e.status("ml");
    for field in [
        "expiresAt",
        "secretName",
        "notebookResourceId",
        "hostName",
        "publicDns",
        "tokenType",
        "scope",
        "nextSyncTime",
    ] {
        assert_eq!(after[field], before[field], "{field}");
    }
    assert_eq!(ready_of(&after).unwrap().0, "True");
    assert!(
        after.get("lastSyncTime").is_none(),
        "nothing was fetched in this process"
    );
}

#[tokio::test]
async fn a_spec_change_gets_a_new_token_and_a_deleted_secret_its_token_back_at_once() {
    let azure = MockServer::start_async().await;
    entra_ok(&azure).await;
    let arm = arm_ok(&azure, "notebook-token-1").await;
    let e = env();
    e.s.insert(&ntr("ml", &azure));
    e.sync("ml").await;
    e.clock.advance(Duration::from_secs(60));

    // New generation: the recorded token was obtained for the old spec.
    let changed = e.s.modify::<NotebookTokenRequest>(NS, "ml", |o| {
        o["spec"]["renewBefore"] = json!("2h");
    });
    assert_eq!(changed.metadata.generation, Some(2));
    e.sync("ml").await;
    arm.assert_calls_async(2).await;
    let secret = e.token_secret("ml");
    assert_eq!(annotation(&secret, GENERATION_ANNOTATION), "2");
    let renew_at = ts(&annotation(&secret, RENEW_AT_ANNOTATION));
    assert!(
        renew_at <= ts("2026-11-23T16:01:00Z") && renew_at > ts("2026-11-23T15:56:00Z"),
        "2h before the new expiry, minus jitter: {renew_at}"
    );
    assert_eq!(e.status("ml")["observedGeneration"], 2);

    // A user deletes the Secret: the next sync writes it again with the token the operator
    // holds (still valid), without asking Azure.
    let expires = annotation(&secret, EXPIRES_AT_ANNOTATION);
    e.s.delete_object::<Secret>(NS, "ml-token");
    e.sync("ml").await;
    arm.assert_calls_async(2).await;
    let back = e.token_secret("ml");
    assert_eq!(
        secret_value(&back, "accessToken").as_deref(),
        Some("notebook-token-1")
    );
    assert_eq!(
        annotation(&back, EXPIRES_AT_ANNOTATION),
        expires,
        "the same token"
    );

    // An operator that doesn't hold the token (it restarted) gets a new one.
    let (fresh, _) = context_clocked_with(&e.s, settings(), e.clock.clone());
    e.s.delete_object::<Secret>(NS, "ml-token");
    reconcile(Arc::new(e.obj("ml")), fresh).await.unwrap();
    arm.assert_calls_async(3).await;
    assert_eq!(
        secret_value(&e.token_secret("ml"), "accessToken").as_deref(),
        Some("notebook-token-1")
    );
}

/// A renewal that keeps failing is retried before the token in the Secret expires, however
/// long the backoff has grown (found by the chaos suite's provider brown-out on a real API
/// server: with half of the calls failing, a few Secrets held an expired token because the
/// doubling backoff jumped past the token's last minute).
#[tokio::test]
async fn a_failing_renewal_is_retried_before_the_token_expires() {
    let azure = MockServer::start_async().await;
    let e = synced_then_arm_gone(&azure).await;
    let expires = ts(e.status("ml")["expiresAt"].as_str().unwrap());
    let failing = arm_fails(
        &azure,
        503,
        json!({"error": {"code": "ServiceUnavailable", "message": "down"}}),
        None,
    )
    .await;
    // Past the renewal time, 10 minutes before expiry: every retry comes within half the time
    // the token has left, so it gets many tries in before it runs out.
    e.clock.set(workspace_access_operator::time::sub(
        expires,
        Duration::from_secs(600),
    ));
    let (mut tries_before_expiry, mut after_expiry) = (0, Vec::new());
    while after_expiry.len() < 5 {
        let now = e.clock.now();
        let delay = requeue_after(&e.sync("ml").await);
        if now < expires {
            tries_before_expiry += 1;
            let left = workspace_access_operator::time::duration_between(now, expires);
            assert!(
                delay <= (left / 2).max(Duration::from_secs(2)),
                "{delay:?} with {left:?} left"
            );
        } else {
            after_expiry.push(delay);
        }
        e.clock.advance(delay);
        assert!(tries_before_expiry < 40, "the retries reach the expiry");
    }
    // Doubling from 2 s alone would have made 8 tries in those 10 minutes (2 s ... 256 s).
    assert!(
        tries_before_expiry >= 12,
        "{tries_before_expiry} tries before expiry"
    );
    // Once the token has expired, the backoff is the usual one again: long after a dozen
    // failures, not the 2 s the cap came down to.
    assert!(
        after_expiry[1] >= Duration::from_secs(60),
        "{after_expiry:?}"
    );
    // But the provider is out (503) and the consumers have no valid token: a retry at least
    // every minute, not the 5 minutes the backoff grows to (found by the chaos suite's
    // brown-out: two resources whose tokens expired were Ready minutes after it ended).
    assert!(
        after_expiry.iter().all(|d| *d <= Duration::from_secs(60)),
        "{after_expiry:?}"
    );
    failing
        .assert_calls_async(tries_before_expiry + after_expiry.len())
        .await;
    assert_eq!(ready_of(&e.status("ml")).unwrap().1, "ProviderError");
}

/// The outage cap is for outages only: refused credentials don't fix themselves within a
/// minute, so an expired token whose renewal is refused backs off to `--max-backoff`.
#[tokio::test]
async fn refused_credentials_back_off_fully_once_the_token_has_expired() {
    let azure = MockServer::start_async().await;
    let e = synced_then_arm_gone(&azure).await;
    let expires = ts(e.status("ml")["expiresAt"].as_str().unwrap());
    let _refused = arm_fails(
        &azure,
        403,
        json!({"error": {"code": "AuthorizationFailed", "message": "no role"}}),
        None,
    )
    .await;
    e.clock.set(expires);
    let mut delays = Vec::new();
    for _ in 0..10 {
        let delay = requeue_after(&e.sync("ml").await);
        delays.push(delay);
        e.clock.advance(delay);
    }
    assert_eq!(ready_of(&e.status("ml")).unwrap().1, "Forbidden");
    assert_eq!(
        *delays.last().unwrap(),
        Duration::from_secs(300),
        "{delays:?}"
    );
}

#[tokio::test]
async fn failures_keep_the_old_secret_and_say_why() {
    let azure = MockServer::start_async().await;
    let e = synced_then_arm_gone(&azure).await;
    let good = e.token_secret("ml");
    let good_status = e.status("ml");
    let renew_at = ts(&annotation(&good, RENEW_AT_ANNOTATION));

    // Renewal is due; ARM refuses.
    e.clock.set(renew_at);
    let denied = arm_fails(
        &azure,
        403,
        json!({"error": {"code": "AuthorizationFailed",
                         "message": "The client does not have authorization to perform action 'Microsoft.MachineLearningServices/workspaces/listNotebookAccessToken/action'."}}),
        None,
    )
    .await;
    e.s.clear_requests();
    let action = e.sync("ml").await;
    denied.assert_calls_async(1).await;
    let status = e.status("ml");
    let (ready, reason, message) = ready_of(&status).unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "Forbidden"));
    // The condition: one line that reads well in `kubectl get -o wide`, the provider's code
    // first and the call, status and request id at the end.
    assert!(
        message.starts_with("AuthorizationFailed: The client does not have authorization")
            && message.ends_with(
                "(Azure Resource Manager listNotebookAccessToken, HTTP 403; request id req-403)"
            )
            && message.chars().count() <= 200,
        "{message}"
    );
    // The Warning event has the whole text.
    let events: Vec<k8s_openapi::api::events::v1::Event> = e.s.list(Some(NS));
    let note = events
        .iter()
        .filter_map(|ev| ev.note.as_deref())
        .find(|n| n.starts_with("AuthorizationFailed"))
        .expect("a Warning event");
    assert!(
        note.contains("listNotebookAccessToken/action") && note.ends_with("request id req-403)"),
        "{note}"
    );
    assert_eq!(e.writes("/secrets/"), 0, "the old Secret is not touched");
    let kept = e.token_secret("ml");
    assert_eq!(kept.data, good.data);
    assert_eq!(kept.metadata.annotations, good.metadata.annotations);
    assert_eq!(
        status["expiresAt"], good_status["expiresAt"],
        "still describes the token in the Secret"
    );
    let delay = requeue_after(&action);
    assert!(
        delay >= Duration::from_secs(2) && delay < Duration::from_secs(3),
        "first backoff step: {delay:?}"
    );
    denied.delete_async().await;

    // Throttled: Retry-After is honoured even beyond the backoff.
    let throttled = arm_fails(
        &azure,
        429,
        json!({"error": {"code": "TooManyRequests", "message": "Slow down."}}),
        Some("120"),
    )
    .await;
    let action = e.sync("ml").await;
    throttled.assert_calls_async(1).await;
    assert_eq!(ready_of(&e.status("ml")).unwrap().1, "Throttled");
    assert_eq!(requeue_after(&action), Duration::from_secs(120));
    assert_eq!(
        secret_value(&e.token_secret("ml"), "accessToken").as_deref(),
        Some("notebook-token-1")
    );
    throttled.delete_async().await;

    // Azure recovers: a new token, Ready again.
    let arm = arm_ok(&azure, "notebook-token-2").await;
    e.sync("ml").await;
    arm.assert_calls_async(1).await;
    assert_eq!(ready_of(&e.status("ml")).unwrap().0, "True");
    assert_eq!(
        secret_value(&e.token_secret("ml"), "accessToken").as_deref(),
        Some("notebook-token-2")
    );
}

#[tokio::test]
async fn entra_refusals_name_the_aadsts_code_and_arm_is_not_called() {
    let azure = MockServer::start_async().await;
    let entra = azure
        .mock_async(|when, then| {
            when.method(POST).path(ENTRA_PATH);
            then.status(401).json_body(json!({
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x",
                "error_codes": [7000215], "trace_id": "trace-1"
            }));
        })
        .await;
    let arm = arm_ok(&azure, "never").await;
    let e = env();
    e.s.insert(&ntr("ml", &azure));
    e.sync("ml").await;
    entra.assert_calls_async(1).await;
    arm.assert_calls_async(0).await;
    let (ready, reason, message) = ready_of(&e.status("ml")).unwrap();
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "AuthenticationFailed")
    );
    assert!(
        message.contains("AADSTS7000215") && message.contains("invalid_client"),
        "{message}"
    );
    assert!(!message.contains(CLIENT_SECRET));
    assert!(e.s.get::<Secret>(NS, "ml-token").is_none());
}

#[tokio::test]
async fn an_arm_401_drops_the_cached_entra_token() {
    let azure = MockServer::start_async().await;
    let entra = entra_ok(&azure).await;
    let refused = arm_fails(
        &azure,
        401,
        json!({"error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid."}}),
        None,
    )
    .await;
    let e = env();
    e.s.insert(&ntr("ml", &azure));
    e.sync("ml").await;
    assert_eq!(ready_of(&e.status("ml")).unwrap().1, "AuthenticationFailed");
    e.clock.advance(Duration::from_secs(5));
    e.sync("ml").await;
    refused.assert_calls_async(2).await;
    entra.assert_calls_async(2).await;
}

#[tokio::test]
async fn resources_sharing_a_credential_share_one_entra_token() {
    let azure = MockServer::start_async().await;
    let entra = entra_ok(&azure).await;
    let arm = arm_ok(&azure, "notebook-token-1").await;
    let e = env();
    let names: Vec<String> = (0..5).map(|i| format!("ml-{i}")).collect();
    for n in &names {
        e.s.insert(&ntr(n, &azure));
    }
    let syncs = names.iter().map(|n| e.sync(n));
    futures::future::join_all(syncs).await;
    entra.assert_calls_async(1).await;
    arm.assert_calls_async(5).await;
    for n in &names {
        assert_eq!(ready_of(&e.status(n)).unwrap().0, "True", "{n}");
    }
}

#[tokio::test]
async fn controllers_write_the_secret_once_and_again_when_it_is_deleted_with_the_same_token() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use workspace_access_operator::controller::SystemClock;
    use workspace_access_operator::controller::run::{ControllerOptions, run_controllers};

    let azure = MockServer::start_async().await;
    let entra = entra_ok(&azure).await;
    let arm = arm_ok(&azure, "notebook-token-1").await;
    let s = server();
    s.insert(&secret(NS, "azure-sp", &[("clientSecret", CLIENT_SECRET)]));
    let (ctx, _) = context_mut(&s, settings());
    let ctx = Context {
        clock: Arc::new(SystemClock),
        ..ctx
    };
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(run_controllers(
        ctx,
        ControllerOptions::new(4),
        ready.clone(),
        shutdown.clone(),
    ));
    eventually("controllers ready", || ready.load(Ordering::SeqCst)).await;

    s.insert(&ntr("ml", &azure));
    eventually("Secret written and Ready", || {
        s.get::<Secret>(NS, "ml-token").is_some()
            && s.get::<NotebookTokenRequest>(NS, "ml")
                .and_then(|o| o.status)
                .and_then(|st| ready_of(&serde_json::to_value(st).unwrap()))
                .is_some_and(|r| r.0 == "True")
    })
    .await;
    // The watch events of our own Secret and status writes cause no further Azure call.
    tokio::time::sleep(Duration::from_millis(300)).await;
    arm.assert_calls_async(1).await;

    let expires = annotation(
        &s.get::<Secret>(NS, "ml-token").unwrap(),
        EXPIRES_AT_ANNOTATION,
    );
    s.delete_object::<Secret>(NS, "ml-token");
    eventually("Secret written again", || {
        s.get::<Secret>(NS, "ml-token").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The operator still holds the token: it is written back without asking Azure.
    arm.assert_calls_async(1).await;
    entra.assert_calls_async(1).await;
    let back = s.get::<Secret>(NS, "ml-token").unwrap();
    assert_eq!(annotation(&back, EXPIRES_AT_ANNOTATION), expires);
    assert_eq!(
        secret_value(&back, "accessToken").as_deref(),
        Some("notebook-token-1")
    );

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn sync_events_chooses_which_successes_publish_an_event() {
    // (setting, events after the first sync, after a renewal, after a failure)
    for (mode, first, renewal, failure) in [
        (SyncEvents::All, 1, 1, 1),
        (SyncEvents::Transitions, 1, 0, 1),
        (SyncEvents::None, 0, 0, 1),
    ] {
        let azure = MockServer::start_async().await;
        let _entra = entra_ok(&azure).await;
        let arm = arm_ok(&azure, "notebook-token-1").await;
        let e = env_with(Settings {
            sync_events: mode,
            ..settings()
        });
        e.s.insert(&ntr("ml", &azure));
        e.s.clear_requests();
        e.sync("ml").await;
        assert_eq!(e.events_created(), first, "{mode:?}: first sync");

        e.clock
            .set(ts(&annotation(&e.token_secret("ml"), RENEW_AT_ANNOTATION)));
        e.s.clear_requests();
        e.sync("ml").await;
        arm.assert_calls_async(2).await;
        assert_eq!(e.events_created(), renewal, "{mode:?}: renewal");

        // Failures publish a Warning whatever the setting.
        arm.delete_async().await;
        let _fails = arm_fails(
            &azure,
            500,
            json!({"error": {"code": "InternalError"}}),
            None,
        )
        .await;
        e.clock
            .set(ts(&annotation(&e.token_secret("ml"), RENEW_AT_ANNOTATION)));
        e.s.clear_requests();
        e.sync("ml").await;
        assert_eq!(e.events_created(), failure, "{mode:?}: failure");
    }
}
