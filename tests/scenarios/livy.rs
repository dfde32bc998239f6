//! LivyToken: both modes against the in-memory API server and a fake EMR Serverless Spark
//! endpoint that verifies every signature (`e2e_support/fake_emr.rs`).

#[path = "../e2e_support/fake_emr.rs"]
pub(crate) mod fake_emr;

use crate::support::fake_api::{FakeApiServer, Fault};
use crate::support::*;
use fake_emr::{FakeEmr, FakeFault};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use workspace_access_operator::api::LivyToken;
use workspace_access_operator::api::common::{EXPIRES_AT_ANNOTATION, RENEW_AT_ANNOTATION};
use workspace_access_operator::controller::driver::{error_policy, reconcile};
use workspace_access_operator::controller::livy::FINALIZER;
use workspace_access_operator::controller::{Clock, Context, ManualClock, Settings};
use workspace_access_operator::providers::endpoint::EndpointPolicy;

const AK_ID: &str = "LTAI5tScenarioKey";
const AK_SECRET: &str = "scenario-access-key-secret";
const NS: &str = "team-b";
const WS: &str = "w-8adde60aa809701f";
const LC: &str = "lc-6mkvn01zrg8rqhhv";
const H: u64 = 3600;

struct Env {
    s: FakeApiServer,
    emr: FakeEmr,
    ctx: Arc<Context>,
    clock: Arc<ManualClock>,
}

async fn env() -> Env {
    let s = server();
    s.insert(&secret(
        NS,
        "ali-ak",
        &[("accessKeyId", AK_ID), ("accessKeySecret", AK_SECRET)],
    ));
    let clock = Arc::new(ManualClock::new(t0()));
    let c = clock.clone();
    let emr = FakeEmr::start(AK_ID, AK_SECRET, Arc::new(move || c.now())).await;
    let settings = Settings {
        endpoint_policy: EndpointPolicy::new(vec![emr.host_port.parse().unwrap()]),
        ..Settings::default()
    };
    let ctx = context_clocked(&s, settings, clock.clone());
    Env {
        s,
        emr,
        ctx: Arc::new(ctx),
        clock,
    }
}

fn resource(emr: &FakeEmr, name: &str, mode: Value) -> LivyToken {
    let mut spec = json!({
        "regionId": "cn-hangzhou", "workspaceId": WS, "livyComputeId": LC,
        "endpoint": emr.base_url,
        "alibaba": {"accessKeyRef": {"name": "ali-ak"}},
        "secretName": format!("{name}-token"),
    });
    for (k, v) in mode.as_object().unwrap() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "LivyToken",
        // The finalizer is already there, as after the first reconciliation.
        "metadata": {"name": name, "namespace": NS, "finalizers": [FINALIZER]},
        "spec": spec,
    }))
    .unwrap()
}

impl Env {
    /// The existing token the reference-mode tests read: `lctk-ref1`, valid for 8 hours.
    fn add_team_token(&self) {
        self.emr.add_token(
            WS,
            LC,
            "lctk-ref1",
            "team-token",
            "content-one-0123456",
            Duration::from_secs(8 * H),
        );
    }

    /// One reconciliation of the resource as stored now (as the controller would run it).
    async fn reconcile(&self, name: &str) -> Result<Action, String> {
        let obj: LivyToken = self.s.get(NS, name).expect("resource exists");
        reconcile(Arc::new(obj), self.ctx.clone())
            .await
            .map_err(|e| e.to_string())
    }

    fn status(&self, name: &str) -> Value {
        let obj: LivyToken = self.s.get(NS, name).unwrap();
        serde_json::to_value(obj.status.unwrap_or_default()).unwrap()
    }

    fn ready(&self, name: &str) -> (String, String, String) {
        ready_of(&self.status(name)).expect("Ready condition")
    }

    fn secret(&self, name: &str) -> Secret {
        self.s.get(NS, name).expect("Secret exists")
    }

    fn annotation(&self, name: &str, key: &str) -> jiff::Timestamp {
        self.secret(name).metadata.annotations.unwrap()[key]
            .parse()
            .unwrap()
    }

    /// A resync `after` the last one: no provider call, no write.
    async fn assert_quiet_resync(&self, name: &str, after: Duration) {
        self.s.clear_requests();
        self.emr.clear_calls();
        self.clock.advance(after);
        self.reconcile(name).await.unwrap();
        assert_eq!(self.provider_calls(), 0);
        assert_eq!(self.writes(), 0, "{:?}", self.s.writes());
    }

    fn provider_calls(&self) -> usize {
        self.emr.calls().len()
    }

    fn writes(&self) -> usize {
        self.s.writes().len()
    }

    /// The Secret holds a token the provider has, with the same content: pods never read an
    /// invalid token.
    fn assert_secret_token_valid(&self, secret: &str) {
        let s = self.secret(secret);
        let id = secret_value(&s, "tokenId").unwrap();
        let token = self
            .emr
            .token(&id)
            .unwrap_or_else(|| panic!("the Secret's token {id} does not exist at the provider"));
        assert_eq!(secret_value(&s, "token").unwrap(), token.token);
        assert!(
            token.expire_time.unwrap() > self.clock.now(),
            "token {id} expired"
        );
    }
}

fn ts(s: &str) -> jiff::Timestamp {
    s.parse().unwrap()
}

// ------------------------------------------------------------------------------------------
// Reference mode

#[tokio::test]
async fn reference_mode_copies_the_token_and_follows_outside_changes() {
    let e = env().await;
    e.add_team_token();
    e.s.insert(&resource(&e.emr, "spark", json!({"tokenId": "lctk-ref1"})));
    e.s.clear_requests();

    let action = e.reconcile("spark").await.unwrap();
    assert_eq!(e.emr.actions(), ["GetLivyComputeToken"]);
    assert_eq!(e.emr.bad_signatures(), 0);
    let secret = e.secret("spark-token");
    assert_eq!(
        secret_value(&secret, "token").as_deref(),
        Some("content-one-0123456")
    );
    assert_eq!(
        secret_value(&secret, "tokenId").as_deref(),
        Some("lctk-ref1")
    );
    assert_eq!(
        secret_value(&secret, "expiresAt").as_deref(),
        Some("2026-11-23T18:00:00Z")
    );
    assert_eq!(
        secret.metadata.annotations.as_ref().unwrap()[EXPIRES_AT_ANNOTATION],
        "2026-11-23T18:00:00Z"
    );
    let st = e.status("spark");
    assert_eq!(st["tokenId"], "lctk-ref1");
    assert_eq!(st["tokenName"], "team-token");
    assert_eq!(st["createdBy"], "alice");
    assert_eq!(st["createTime"], "2026-11-23T10:00:00Z");
    assert_eq!(st["expiresAt"], "2026-11-23T18:00:00Z");
    assert_eq!(st["lastUsedTime"], "2026-11-23T10:00:04Z");
    assert_eq!(st["secretName"], "spark-token");
    assert!(st.get("managed").is_none());
    let (ready, reason, message) = e.ready("spark");
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "Synced"));
    assert_eq!(message, "token lctk-ref1 valid until 2026-11-23T18:00:00Z");
    // Requeued at the refresh interval (default 5m).
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));

    // An unchanged resync (e.g. the operator's own status write, or a resync): no provider
    // call, no write.
    e.assert_quiet_resync("spark", Duration::from_secs(60))
        .await;

    // The token is refreshed outside the cluster: the next read (refresh interval) brings it.
    e.emr.update_token("lctk-ref1", |t| {
        t.token = "content-two-abcdefg".into();
        t.expire_time = Some(ts("2026-11-24T10:00:00Z"));
    });
    e.clock.advance(Duration::from_secs(241));
    e.reconcile("spark").await.unwrap();
    assert_eq!(e.emr.actions(), ["GetLivyComputeToken"]);
    let secret = e.secret("spark-token");
    assert_eq!(
        secret_value(&secret, "token").as_deref(),
        Some("content-two-abcdefg")
    );
    assert_eq!(e.status("spark")["expiresAt"], "2026-11-24T10:00:00Z");

    // A restarted operator (fresh context, no cache) reads the Secret's annotations and makes
    // no provider call.
    let fresh = Arc::new(context_clocked(
        &e.s,
        e.ctx.settings.clone(),
        e.clock.clone(),
    ));
    e.emr.clear_calls();
    e.s.clear_requests();
    let obj: LivyToken = e.s.get(NS, "spark").unwrap();
    reconcile(Arc::new(obj), fresh).await.unwrap();
    assert_eq!(e.provider_calls(), 0);
    assert_eq!(e.writes(), 0);
}

/// EMR's times are epoch milliseconds; the Secret's annotations hold whole seconds (rounded to
/// the nearest). A token expiring at .250 s once made every resync take the token in memory
/// for one whose write had failed, and write the Secret again.
#[tokio::test]
async fn a_token_expiring_between_seconds_is_not_written_again_on_resync() {
    let e = env().await;
    e.emr.add_token(
        WS,
        LC,
        "lctk-ms",
        "team-token",
        "content-ms-0123456",
        Duration::from_millis(8 * H * 1000 + 250),
    );
    e.s.insert(&resource(&e.emr, "spark", json!({"tokenId": "lctk-ms"})));
    e.reconcile("spark").await.unwrap();
    assert_eq!(
        e.secret("spark-token").metadata.annotations.unwrap()[EXPIRES_AT_ANNOTATION],
        "2026-11-23T18:00:00Z"
    );
    for _ in 0..3 {
        e.assert_quiet_resync("spark", Duration::from_secs(60))
            .await;
    }
}

#[tokio::test]
async fn reference_mode_gone_or_expired_tokens_keep_the_secret() {
    let e = env().await;
    e.emr.add_token(
        WS,
        LC,
        "lctk-ref1",
        "t",
        "content-one-0123456",
        Duration::from_secs(H),
    );
    e.s.insert(&resource(&e.emr, "spark", json!({"tokenId": "lctk-ref1"})));
    e.reconcile("spark").await.unwrap();

    // Deleted outside: NotFound, the Secret stays as it was.
    e.emr.remove_token("lctk-ref1");
    e.clock.advance(Duration::from_secs(301));
    e.reconcile("spark").await.unwrap();
    let (ready, reason, message) = e.ready("spark");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "NotFound"));
    assert!(message.contains("LivyComputeToken.NotFound"), "{message}");
    assert_eq!(
        secret_value(&e.secret("spark-token"), "token").as_deref(),
        Some("content-one-0123456")
    );

    // The retry reads again (the failed read is not mistaken for a fresh one).
    e.emr.clear_calls();
    e.clock.advance(Duration::from_secs(5));
    e.reconcile("spark").await.unwrap();
    assert_eq!(e.emr.actions(), ["GetLivyComputeToken"]);

    // Expired: a clear condition, no write of a dead token, retried at the refresh interval.
    e.emr.add_token(
        WS,
        LC,
        "lctk-ref1",
        "t",
        "content-three-0123",
        Duration::from_secs(60),
    );
    e.clock.advance(Duration::from_secs(120));
    let action = e.reconcile("spark").await.unwrap();
    let (ready, reason, message) = e.ready("spark");
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "ProviderError")
    );
    assert!(message.contains("expired at"), "{message}");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    assert_eq!(
        secret_value(&e.secret("spark-token"), "token").as_deref(),
        Some("content-one-0123456")
    );
}

#[tokio::test]
async fn throttling_on_400_is_reported_and_its_wait_honoured() {
    let e = env().await;
    e.emr.add_token(
        WS,
        LC,
        "lctk-ref1",
        "t",
        "content-one-0123456",
        Duration::from_secs(H),
    );
    e.s.insert(&resource(&e.emr, "spark", json!({"tokenId": "lctk-ref1"})));
    e.emr.fail_next(
        FakeFault::new("GetLivyComputeToken", 400, "Throttling.User").retry_after_ms(90_000),
    );
    let action = e.reconcile("spark").await.unwrap();
    let (ready, reason, _) = e.ready("spark");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "Throttled"));
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(90)),
        "x-acs-retry-after is milliseconds"
    );
    assert!(e.s.get::<Secret>(NS, "spark-token").is_none());
}

// ------------------------------------------------------------------------------------------
// Managed mode

fn managed() -> Value {
    json!({"managed": {"expireDays": 7, "gracePeriod": "10m"}})
}

#[tokio::test]
async fn managed_mode_creates_records_and_then_leaves_the_provider_alone() {
    let e = env().await;
    e.s.insert(&resource(&e.emr, "spark", managed()));
    e.s.clear_requests();

    e.reconcile("spark").await.unwrap();
    assert_eq!(
        e.emr.actions(),
        [
            "ListLivyComputeToken",
            "CreateLivyComputeToken",
            "GetLivyComputeToken"
        ]
    );
    assert_eq!(e.emr.bad_signatures(), 0);
    let create = &e.emr.calls()[1];
    assert_eq!(
        create.body["autoExpireConfiguration"],
        json!({"enable": true, "expireDays": 7})
    );
    let name = create.body["name"].as_str().unwrap().to_owned();
    assert!(
        name.starts_with("wao-spark-") && name.ends_with("-1"),
        "{name}"
    );

    let tokens = e.emr.tokens();
    assert_eq!(tokens.len(), 1);
    let t = &tokens[0];
    e.assert_secret_token_valid("spark-token");
    let st = e.status("spark");
    assert_eq!(st["tokenId"], t.token_id);
    assert_eq!(st["tokenName"], name);
    assert_eq!(st["expiresAt"], "2026-11-30T10:00:00Z");
    assert_eq!(st["managed"]["current"]["tokenId"], t.token_id);
    assert_eq!(st["managed"]["namePrefix"], name.trim_end_matches('1'));
    assert!(st["managed"].get("pending").is_none());
    // The token was recorded (pending) in a status write before the Secret was written.
    let writes = e.s.writes();
    let order: Vec<&str> = writes
        .iter()
        .filter_map(|w| {
            if w.path.ends_with("/livytokens/spark/status") {
                Some("status")
            } else if w.path.contains("/secrets/") {
                Some("secret")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(order, ["status", "secret", "status"]);
    let pending_write = writes
        .iter()
        .find(|w| w.path.ends_with("/livytokens/spark/status"))
        .unwrap();
    assert_eq!(
        pending_write.body.as_ref().unwrap()["status"]["managed"]["pending"]["tokenId"],
        t.token_id
    );
    assert_eq!(e.ready("spark").0, "True");

    // Resyncs before the renewal time: nothing at all.
    e.emr.clear_calls();
    e.s.clear_requests();
    for _ in 0..3 {
        e.clock.advance(Duration::from_secs(6 * H));
        e.reconcile("spark").await.unwrap();
    }
    assert_eq!(e.provider_calls(), 0);
    assert_eq!(e.writes(), 0, "{:?}", e.s.writes());

    // A spec change that doesn't affect the token rewrites the Secret without a new token.
    e.s.modify::<LivyToken>(NS, "spark", |o| {
        o["spec"]["secretTemplate"] = json!({"labels": {"team": "b"}})
    });
    e.reconcile("spark").await.unwrap();
    assert_eq!(e.emr.actions(), ["GetLivyComputeToken"]);
    assert_eq!(e.emr.tokens().len(), 1);
    assert_eq!(
        e.secret("spark-token").metadata.labels.unwrap()["team"],
        "b"
    );

    // The Secret deleted by someone: written again with the same token, which the operator
    // holds: no provider call.
    e.s.delete_object::<Secret>(NS, "spark-token");
    e.emr.clear_calls();
    e.reconcile("spark").await.unwrap();
    assert_eq!(e.emr.actions(), Vec::<String>::new());
    e.assert_secret_token_valid("spark-token");
    assert_eq!(e.emr.tokens().len(), 1);
}

#[tokio::test]
async fn rotations_update_the_secret_before_deleting_the_old_token() {
    let e = env().await;
    e.s.insert(&resource(&e.emr, "spark", managed()));
    e.reconcile("spark").await.unwrap();

    // At every deletion, record which token the Secret held at that moment.
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    {
        let seen = seen.clone();
        let s = e.s.clone();
        e.emr.on_delete(move |deleted| {
            let held = s
                .get::<Secret>(NS, "spark-token")
                .and_then(|x| secret_value(&x, "tokenId"))
                .unwrap_or_default();
            seen.lock().unwrap().push((deleted.to_owned(), held));
        });
    }

    let mut previous = e.status("spark")["tokenId"].as_str().unwrap().to_owned();
    for round in 0..4 {
        // Up to the renewal time nothing happens; at it, a new token.
        let renew_at = e.annotation("spark-token", RENEW_AT_ANNOTATION);
        let expires = e.annotation("spark-token", EXPIRES_AT_ANNOTATION);
        assert!(renew_at < expires);
        e.clock.set(renew_at);
        e.emr.clear_calls();
        e.reconcile("spark").await.unwrap();
        assert_eq!(
            e.emr.actions(),
            [
                "ListLivyComputeToken",
                "CreateLivyComputeToken",
                "GetLivyComputeToken"
            ],
            "round {round}"
        );
        e.assert_secret_token_valid("spark-token");
        let st = e.status("spark");
        let current = st["tokenId"].as_str().unwrap().to_owned();
        assert_ne!(current, previous);
        assert_eq!(st["managed"]["retiring"][0]["tokenId"], previous);
        let delete_after: jiff::Timestamp = st["managed"]["retiring"][0]["deleteAfter"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            delete_after,
            e.clock.now() + jiff::SignedDuration::from_mins(10)
        );
        // The old token still works during the grace period.
        assert!(e.emr.token(&previous).is_some());
        assert_eq!(e.emr.tokens().len(), 2);
        assert!(
            e.emr
                .tokens()
                .iter()
                .all(|t| t.expire_time.unwrap() > e.clock.now())
        );

        // Within the grace period: nothing.
        e.emr.clear_calls();
        e.clock.advance(Duration::from_secs(300));
        e.reconcile("spark").await.unwrap();
        assert_eq!(e.provider_calls(), 0);

        // After it: the old token is deleted, and only that.
        e.clock.set(delete_after);
        e.reconcile("spark").await.unwrap();
        assert_eq!(e.emr.actions(), ["DeleteLivyComputeToken"]);
        assert_eq!(e.emr.tokens().len(), 1);
        assert!(e.emr.token(&previous).is_none());
        assert!(e.status("spark")["managed"].get("retiring").is_none());
        assert_eq!(e.ready("spark").0, "True");
        e.assert_secret_token_valid("spark-token");
        previous = current;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for (deleted, held) in &seen {
        assert_ne!(
            deleted, held,
            "a token was deleted while the Secret still held it"
        );
    }
    // Names count up with the rotations.
    assert!(
        e.emr.tokens()[0].name.ends_with("-5"),
        "{:?}",
        e.emr.tokens()
    );
    assert_eq!(e.emr.bad_signatures(), 0);
}

#[tokio::test]
async fn a_failed_deletion_is_reported_and_retried_with_the_new_token_in_place() {
    let e = env().await;
    e.s.insert(&resource(&e.emr, "spark", managed()));
    e.reconcile("spark").await.unwrap();
    let first = e.status("spark")["tokenId"].as_str().unwrap().to_owned();
    e.clock
        .set(e.annotation("spark-token", RENEW_AT_ANNOTATION));
    e.reconcile("spark").await.unwrap();
    let second = e.status("spark")["tokenId"].as_str().unwrap().to_owned();

    e.clock.advance(Duration::from_secs(601));
    e.emr.fail_next(FakeFault::new(
        "DeleteLivyComputeToken",
        403,
        "Forbidden.RAM",
    ));
    e.reconcile("spark").await.unwrap();
    let (ready, reason, message) = e.ready("spark");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "Forbidden"));
    assert!(
        message.contains(&format!("deleting replaced token {first}")),
        "{message}"
    );
    // The rotation is not undone: the Secret and status name the new token.
    assert_eq!(e.status("spark")["tokenId"], second);
    assert_eq!(
        e.status("spark")["managed"]["retiring"][0]["tokenId"],
        first
    );
    e.assert_secret_token_valid("spark-token");

    // The retry deletes it.
    e.clock.advance(Duration::from_secs(10));
    e.reconcile("spark").await.unwrap();
    assert!(e.emr.token(&first).is_none());
    assert_eq!(e.ready("spark").0, "True");
}

#[tokio::test]
async fn a_create_whose_record_was_lost_is_adopted_not_repeated() {
    let e = env().await;
    e.s.insert(&resource(&e.emr, "spark", managed()));
    // The status write right after Create fails (as a crash there would lose it).
    e.s.fail_next(
        Fault::new(500)
            .method("PATCH")
            .path_contains("/livytokens/spark/status"),
    );
    e.reconcile("spark").await.unwrap();
    assert_eq!(e.emr.count("CreateLivyComputeToken"), 1);
    assert_eq!(e.emr.tokens().len(), 1);
    assert!(e.s.get::<Secret>(NS, "spark-token").is_none());
    assert_eq!(e.ready("spark").1, "KubernetesError");

    e.clock.advance(Duration::from_secs(5));
    e.emr.clear_calls();
    e.reconcile("spark").await.unwrap();
    assert_eq!(
        e.emr.actions(),
        ["ListLivyComputeToken", "GetLivyComputeToken"]
    );
    assert_eq!(e.emr.tokens().len(), 1, "no second token");
    e.assert_secret_token_valid("spark-token");
    assert_eq!(e.status("spark")["tokenId"], e.emr.tokens()[0].token_id);
    assert_eq!(e.ready("spark").0, "True");
}

#[tokio::test]
async fn a_lost_create_answer_is_adopted_not_repeated() {
    let e = env().await;
    e.s.insert(&resource(&e.emr, "spark", managed()));
    // The token is created, but the answer is lost (a timeout, a 5xx after the fact).
    e.emr.fail_next(
        FakeFault::new("CreateLivyComputeToken", 503, "ServiceUnavailable").after_effect(),
    );
    e.reconcile("spark").await.unwrap();
    assert_eq!(e.ready("spark").1, "ProviderError");
    assert_eq!(e.emr.tokens().len(), 1);

    e.clock.advance(Duration::from_secs(5));
    e.reconcile("spark").await.unwrap();
    assert_eq!(e.emr.tokens().len(), 1, "no second token");
    assert_eq!(e.emr.count("CreateLivyComputeToken"), 1);
    e.assert_secret_token_valid("spark-token");
}

#[tokio::test]
async fn a_failed_secret_write_after_create_keeps_the_old_secret_and_resumes() {
    let e = env().await;
    e.s.insert(&resource(&e.emr, "spark", managed()));
    e.reconcile("spark").await.unwrap();
    let first = e.status("spark")["tokenId"].as_str().unwrap().to_owned();
    e.clock
        .set(e.annotation("spark-token", RENEW_AT_ANNOTATION));
    e.s.fail_next(
        Fault::new(500)
            .method("PATCH")
            .path_contains("/secrets/spark-token"),
    );
    e.reconcile("spark").await.unwrap();
    assert_eq!(e.ready("spark").1, "KubernetesError");
    // The old Secret is intact and its token still valid; nothing was deleted.
    assert_eq!(
        secret_value(&e.secret("spark-token"), "tokenId").unwrap(),
        first
    );
    e.assert_secret_token_valid("spark-token");
    assert_eq!(e.emr.tokens().len(), 2);

    e.clock.advance(Duration::from_secs(5));
    e.emr.clear_calls();
    e.reconcile("spark").await.unwrap();
    assert_eq!(
        e.emr.count("CreateLivyComputeToken"),
        0,
        "the created token is reused"
    );
    assert_eq!(e.emr.tokens().len(), 2);
    let second = e.status("spark")["tokenId"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(
        secret_value(&e.secret("spark-token"), "tokenId").unwrap(),
        second
    );
    assert_eq!(
        e.status("spark")["managed"]["retiring"][0]["tokenId"],
        first
    );
}

#[tokio::test]
async fn deleting_the_resource_deletes_its_tokens() {
    let e = env().await;
    e.s.insert(&resource(&e.emr, "spark", managed()));
    e.reconcile("spark").await.unwrap();
    e.clock
        .set(e.annotation("spark-token", RENEW_AT_ANNOTATION));
    e.reconcile("spark").await.unwrap(); // now one current and one retiring token
    // And one left behind by a lost create, known to nobody.
    e.emr.fail_next(
        FakeFault::new("CreateLivyComputeToken", 503, "ServiceUnavailable").after_effect(),
    );
    e.s.modify::<LivyToken>(NS, "spark", |o| {
        o["spec"]["managed"]["expireDays"] = json!(3)
    });
    e.reconcile("spark").await.unwrap();
    // A token of someone else on the same Livy Gateway.
    e.emr.add_token(
        WS,
        LC,
        "lctk-other",
        "someone-elses",
        "other-content-0000",
        Duration::from_secs(H),
    );
    assert_eq!(e.emr.tokens().len(), 4);

    e.s.delete_object::<LivyToken>(NS, "spark");
    let obj: LivyToken = e.s.get(NS, "spark").expect("held by the finalizer");
    assert!(obj.metadata.deletion_timestamp.is_some());
    e.reconcile("spark").await.unwrap();
    assert!(
        e.s.get::<LivyToken>(NS, "spark").is_none(),
        "finalizer removed"
    );
    let left: Vec<String> = e.emr.tokens().iter().map(|t| t.token_id.clone()).collect();
    assert_eq!(left, ["lctk-other"]);
}

#[tokio::test]
async fn cleanup_failures_keep_the_finalizer_and_are_reported() {
    let e = env().await;
    e.s.insert(&resource(&e.emr, "spark", managed()));
    e.reconcile("spark").await.unwrap();
    e.s.delete_object::<LivyToken>(NS, "spark");
    e.emr.fail_next(FakeFault::new(
        "DeleteLivyComputeToken",
        400,
        "Forbidden.RAM",
    ));
    assert!(e.reconcile("spark").await.is_err());
    let obj: LivyToken = e.s.get(NS, "spark").expect("finalizer kept");
    assert_eq!(obj.metadata.finalizers.unwrap(), [FINALIZER]);
    let (ready, reason, message) = e.ready("spark");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "Forbidden"));
    assert!(message.starts_with("deleting:"), "{message}");
    assert_eq!(e.emr.tokens().len(), 1);

    // Retried: deleted, and the resource goes. A token already gone counts as deleted.
    e.reconcile("spark").await.unwrap();
    assert!(e.s.get::<LivyToken>(NS, "spark").is_none());
    assert!(e.emr.tokens().is_empty());
}

/// A cleanup that fails for a reason other than the provider (the API server, the endpoint
/// policy) says so, with the time of the retry the operator makes, rather than telling the
/// user to fix a spec that is fine.
#[tokio::test]
async fn cleanup_failures_report_their_own_reason_and_the_retry_time() {
    let e = env().await;
    e.s.insert(&resource(&e.emr, "spark", managed()));
    e.reconcile("spark").await.unwrap();
    e.s.delete_object::<LivyToken>(NS, "spark");

    // The API server fails the read of the AccessKey (a context that caches no credentials).
    let uncached = Arc::new(context_clocked(
        &e.s,
        Settings {
            credential_cache_ttl: Duration::ZERO,
            ..e.ctx.settings.clone()
        },
        e.clock.clone(),
    ));
    // The operator restarted without --allow-endpoint for the mock: the endpoint is refused.
    let strict = Arc::new(context_clocked(&e.s, Settings::default(), e.clock.clone()));
    for (ctx, reason) in [
        (uncached, "KubernetesError"),
        (strict, "EndpointNotAllowed"),
    ] {
        e.s.fail_next(
            Fault::new(500)
                .method("GET")
                .path_contains("/secrets/ali-ak"),
        );
        let obj: LivyToken = e.s.get(NS, "spark").unwrap();
        let err = reconcile(Arc::new(obj.clone()), ctx.clone())
            .await
            .expect_err("the cleanup failed");
        let (ready, got, message) = e.ready("spark");
        assert_eq!(
            (ready.as_str(), got.as_str()),
            ("False", reason),
            "{message}"
        );
        assert!(message.starts_with("deleting:"), "{message}");
        let next: jiff::Timestamp = e.status("spark")["nextSyncTime"]
            .as_str()
            .expect("the retry time is shown")
            .parse()
            .unwrap();
        // The controller retries exactly when the status says.
        let action = error_policy(Arc::new(obj), &err, ctx.clone());
        let delay = action_delay(&action);
        assert!(delay >= Duration::from_secs(1), "{delay:?}");
        let shown = next.duration_since(e.clock.now()).as_secs_f64();
        assert!(
            (shown - delay.as_secs_f64()).abs() < 1.0,
            "nextSyncTime in {shown} s, retried in {delay:?}"
        );
        let obj: LivyToken = e.s.get(NS, "spark").expect("finalizer kept");
        assert_eq!(obj.metadata.finalizers.unwrap(), [FINALIZER]);
        e.s.clear_faults();
    }
    assert_eq!(e.emr.tokens().len(), 1, "nothing deleted yet");
    e.reconcile("spark").await.unwrap();
    assert!(e.s.get::<LivyToken>(NS, "spark").is_none());
    assert!(e.emr.tokens().is_empty());
}

#[tokio::test]
async fn reference_mode_deletion_needs_no_provider() {
    let e = env().await;
    e.emr.add_token(
        WS,
        LC,
        "lctk-ref1",
        "t",
        "content-one-0123456",
        Duration::from_secs(H),
    );
    e.s.insert(&resource(&e.emr, "spark", json!({"tokenId": "lctk-ref1"})));
    e.reconcile("spark").await.unwrap();
    e.s.delete_object::<Secret>(NS, "ali-ak");
    e.s.delete_object::<LivyToken>(NS, "spark");
    e.emr.clear_calls();
    e.reconcile("spark").await.unwrap();
    assert!(e.s.get::<LivyToken>(NS, "spark").is_none());
    assert_eq!(e.provider_calls(), 0);
    assert!(
        e.emr.token("lctk-ref1").is_some(),
        "a referenced token is never deleted"
    );
}

#[tokio::test]
async fn switching_from_managed_to_a_reference_retires_the_managed_token() {
    let e = env().await;
    e.emr.add_token(
        WS,
        LC,
        "lctk-ref1",
        "t",
        "content-one-0123456",
        Duration::from_secs(8 * H),
    );
    e.s.insert(&resource(&e.emr, "spark", managed()));
    e.reconcile("spark").await.unwrap();
    let managed_id = e.status("spark")["tokenId"].as_str().unwrap().to_owned();
    e.s.modify::<LivyToken>(NS, "spark", |o| {
        o["spec"]["managed"] = Value::Null;
        o["spec"]["tokenId"] = json!("lctk-ref1");
    });
    e.reconcile("spark").await.unwrap();
    assert_eq!(
        secret_value(&e.secret("spark-token"), "tokenId").unwrap(),
        "lctk-ref1"
    );
    assert_eq!(
        e.status("spark")["managed"]["retiring"][0]["tokenId"],
        managed_id
    );
    e.clock.advance(Duration::from_secs(601));
    e.reconcile("spark").await.unwrap();
    assert!(e.emr.token(&managed_id).is_none());
    assert!(e.emr.token("lctk-ref1").is_some());
    assert!(
        e.status("spark").get("managed").is_none()
            || e.status("spark")["managed"].get("retiring").is_none()
    );
}

async fn preview(e: &Env, mode: Value) -> workspace_access_operator::preview::Report {
    let mut doc = serde_json::to_value(resource(&e.emr, "spark", mode)).unwrap();
    doc["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("finalizers");
    let docs = vec![
        doc,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ali-ak", "namespace": NS},
               "stringData": {"accessKeyId": AK_ID, "accessKeySecret": AK_SECRET}}),
    ];
    let metrics = Arc::new(workspace_access_operator::metrics::Metrics::new());
    let http = workspace_access_operator::providers::http::HttpClient::new(
        Default::default(),
        metrics.clone(),
    )
    .unwrap();
    workspace_access_operator::preview::preview_documents(
        docs,
        NS,
        e.ctx.settings.clone(),
        metrics,
        http,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn preview_of_managed_mode_leaves_nothing_behind() {
    let e = env().await;
    let report = preview(&e, managed()).await;
    assert!(report.ready, "{}", report.yaml);
    assert!(report.yaml.contains("creates nothing"), "{}", report.yaml);
    assert!(report.yaml.contains("[redacted]"), "{}", report.yaml);
    assert!(!report.yaml.contains(AK_SECRET));
    assert_eq!(e.emr.actions(), ["ListLivyComputeToken"]);
    assert!(e.emr.tokens().is_empty());
}

#[tokio::test]
async fn preview_of_reference_mode_shows_the_status_and_hides_the_token() {
    let e = env().await;
    e.emr.add_token(
        WS,
        LC,
        "lctk-ref1",
        "team-token",
        "content-one-0123456",
        Duration::from_secs(H),
    );
    let report = preview(&e, json!({"tokenId": "lctk-ref1"})).await;
    assert!(report.ready, "{}", report.yaml);
    assert!(
        report.yaml.contains("tokenId: lctk-ref1"),
        "{}",
        report.yaml
    );
    assert!(report.yaml.contains("createdBy: alice"), "{}", report.yaml);
    assert!(report.yaml.contains("expiresAt"), "{}", report.yaml);
    assert!(
        !report.yaml.contains("content-one-0123456"),
        "{}",
        report.yaml
    );
    assert_eq!(e.emr.actions(), ["GetLivyComputeToken"]);

    // A token that is gone: preview says so.
    e.emr.remove_token("lctk-ref1");
    let report = preview(&e, json!({"tokenId": "lctk-ref1"})).await;
    assert!(!report.ready);
    assert!(report.yaml.contains("reason: NotFound"), "{}", report.yaml);
}

/// The whole controller (watches, finalizer, requeues) with the system clock and a fake whose
/// day lasts 6 s: a managed token is rotated again and again, the Secret always holds a token
/// the provider has, no token is created twice, and deleting the resource deletes its tokens.
#[tokio::test]
async fn controllers_keep_a_managed_token_valid_across_rotations() {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use workspace_access_operator::controller::SystemClock;
    use workspace_access_operator::controller::run::{ControllerOptions, run_controllers};

    let s = server();
    s.insert(&secret(
        NS,
        "ali-ak",
        &[("accessKeyId", AK_ID), ("accessKeySecret", AK_SECRET)],
    ));
    let emr = FakeEmr::start(AK_ID, AK_SECRET, Arc::new(jiff::Timestamp::now)).await;
    emr.set_day_length(Duration::from_secs(6));
    let settings = Settings {
        endpoint_policy: EndpointPolicy::new(vec![emr.host_port.parse().unwrap()]),
        ..Settings::default()
    };
    let (ctx, _) = context_mut(&s, settings);
    let ctx = Context {
        clock: Arc::new(SystemClock),
        ..ctx
    };
    let ready = Arc::new(AtomicBool::new(false));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(run_controllers(
        ctx,
        ControllerOptions::new(2),
        ready.clone(),
        shutdown.clone(),
    ));
    eventually("controllers ready", || ready.load(Ordering::SeqCst)).await;

    let mut obj = resource(
        &emr,
        "spark",
        json!({"managed": {"expireDays": 1, "gracePeriod": "1s"}, "renewBefore": "3s"}),
    );
    obj.metadata.finalizers = None; // the controller adds it
    s.insert(&obj);

    let mut seen = BTreeSet::new();
    for _ in 0..1500 {
        if let Some(secret) = s.get::<Secret>(NS, "spark-token") {
            let id = secret_value(&secret, "tokenId").unwrap();
            let held = emr
                .token(&id)
                .unwrap_or_else(|| panic!("gap: the Secret holds {id}, gone at the provider"));
            assert_eq!(secret_value(&secret, "token").unwrap(), held.token);
            seen.insert(id);
        }
        if seen.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.len() >= 4, "rotations seen: {seen:?}");
    let created: Vec<String> = emr
        .calls()
        .iter()
        .filter(|c| c.action == "CreateLivyComputeToken")
        .map(|c| c.body["name"].as_str().unwrap().to_owned())
        .collect();
    let distinct: BTreeSet<&String> = created.iter().collect();
    assert_eq!(distinct.len(), created.len(), "{created:?}");
    // (A Delete may find a token already gone; NotFound counts as deleted.)
    assert!(
        emr.calls()
            .iter()
            .all(|c| c.status == 200 || (c.action == "DeleteLivyComputeToken" && c.status == 404)),
        "{:?}",
        emr.calls()
    );
    assert_eq!(emr.bad_signatures(), 0);
    let obj: LivyToken = s.get(NS, "spark").unwrap();
    assert_eq!(obj.metadata.finalizers.unwrap(), [FINALIZER]);

    s.delete_object::<LivyToken>(NS, "spark");
    eventually("resource deleted after its tokens", || {
        s.get::<LivyToken>(NS, "spark").is_none()
    })
    .await;
    assert!(emr.tokens().is_empty(), "{:?}", emr.tokens());

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn rrsa_goes_to_official_endpoints_only() {
    use workspace_access_operator::controller::credentials::PodIdentityPolicy;
    let s = server();
    let emr = FakeEmr::start(AK_ID, AK_SECRET, Arc::new(jiff::Timestamp::now)).await;
    let settings = Settings {
        endpoint_policy: EndpointPolicy::new(vec![emr.host_port.parse().unwrap()]),
        pod_identity: PodIdentityPolicy::new(vec![NS.to_string()]),
        ..Settings::default()
    };
    let (ctx, _) = context(&s, settings);
    let mut obj = resource(&emr, "spark", json!({"tokenId": "lctk-1"}));
    let alibaba = obj.spec.alibaba.as_mut().unwrap();
    alibaba.access_key_ref = None;
    alibaba.rrsa = true;
    let obj = s.insert(&obj);
    reconcile(Arc::new(obj), ctx).await.unwrap();
    let obj: LivyToken = s.get(NS, "spark").unwrap();
    let (_, reason, message) =
        ready_of(&serde_json::to_value(obj.status.unwrap()).unwrap()).unwrap();
    assert_eq!(reason, "EndpointNotAllowed");
    assert!(message.contains("own identity"), "{message}");
    assert!(emr.calls().is_empty());
}

#[tokio::test]
async fn a_token_recorded_mid_sync_stays_recorded_when_the_sync_then_fails() {
    let e = env().await;
    e.s.insert(&resource(&e.emr, "spark", managed()));
    e.reconcile("spark").await.unwrap();
    let first = e.status("spark")["tokenId"].as_str().unwrap().to_owned();
    e.clock
        .set(e.annotation("spark-token", RENEW_AT_ANNOTATION));
    // Rotation: the new token is created and recorded as pending, then the Secret write fails.
    e.s.fail_next(
        Fault::new(500)
            .method("PATCH")
            .path_contains("/secrets/spark-token"),
    );
    e.reconcile("spark").await.unwrap();
    assert_eq!(e.ready("spark").1, "KubernetesError");
    let created: Vec<String> = e
        .emr
        .tokens()
        .into_iter()
        .map(|t| t.token_id)
        .filter(|id| *id != first)
        .collect();
    assert_eq!(created.len(), 1);
    // The failure report must not erase the record written mid-sync.
    assert_eq!(
        e.status("spark")["managed"]["pending"]["tokenId"],
        created[0].as_str(),
        "{}",
        e.status("spark")
    );
}

// ------------------------------------------------------------------------------------------
// The finalizer only where there is something to delete

fn without_finalizer(mut obj: LivyToken) -> LivyToken {
    obj.metadata.finalizers = None;
    obj
}

#[tokio::test]
async fn reference_mode_needs_no_finalizer_and_is_synced_in_one_pass() {
    let e = env().await;
    e.add_team_token();
    e.s.insert(&without_finalizer(resource(
        &e.emr,
        "spark",
        json!({"tokenId": "lctk-ref1"}),
    )));
    e.s.clear_requests();
    e.reconcile("spark").await.unwrap();
    // The first pass already wrote the Secret and the status, and added no finalizer.
    assert_eq!(
        secret_value(&e.secret("spark-token"), "tokenId").as_deref(),
        Some("lctk-ref1")
    );
    assert_eq!(e.ready("spark").1, "Synced");
    let obj: LivyToken = e.s.get(NS, "spark").unwrap();
    assert!(obj.metadata.finalizers.unwrap_or_default().is_empty());
    assert!(
        e.s.writes()
            .iter()
            .all(|w| !w.path.ends_with("/livytokens/spark")),
        "the resource itself was patched: {:?}",
        e.s.writes()
    );
    // Deleting it needs no operator: it is gone at once, and the referenced token is untouched.
    e.s.delete_object::<LivyToken>(NS, "spark");
    assert!(e.s.get::<LivyToken>(NS, "spark").is_none());
    assert!(e.emr.token("lctk-ref1").is_some());
}

#[tokio::test]
async fn managed_mode_adds_the_finalizer_before_creating_a_token() {
    let e = env().await;
    e.s.insert(&without_finalizer(resource(&e.emr, "spark", managed())));
    e.reconcile("spark").await.unwrap();
    // First pass: the finalizer, and no token yet (a crash now leaves nothing behind).
    let obj: LivyToken = e.s.get(NS, "spark").unwrap();
    assert_eq!(obj.metadata.finalizers.unwrap(), [FINALIZER]);
    assert_eq!(e.provider_calls(), 0, "{:?}", e.emr.actions());
    // Second pass (the finalizer change triggers it): the token.
    e.reconcile("spark").await.unwrap();
    assert!(
        e.emr
            .actions()
            .contains(&"CreateLivyComputeToken".to_string())
    );
    e.assert_secret_token_valid("spark-token");
}

#[tokio::test]
async fn a_reference_with_managed_tokens_still_recorded_gets_the_finalizer() {
    use workspace_access_operator::controller::driver::Reconciler;
    let e = env().await;
    let reference = without_finalizer(resource(&e.emr, "spark", json!({"tokenId": "lctk-ref1"})));
    assert!(!reference.needs_finalizer());
    assert!(without_finalizer(resource(&e.emr, "spark", managed())).needs_finalizer());
    // Switched from managed mode, with a replaced token still to delete (and, here, without
    // the finalizer): the finalizer is added before anything else.
    let mut switched = reference;
    switched.status = Some(
        serde_json::from_value(json!({"managed": {"namePrefix": "spark-", "retiring": [{
            "tokenId": "lctk-old", "regionId": "cn-hangzhou", "workspaceId": WS,
            "livyComputeId": LC, "deleteAfter": "2026-11-23T11:00:00Z"}]}}))
        .unwrap(),
    );
    assert!(switched.needs_finalizer());
    e.s.insert(&switched);
    e.reconcile("spark").await.unwrap();
    let obj: LivyToken = e.s.get(NS, "spark").unwrap();
    assert_eq!(obj.metadata.finalizers.unwrap(), [FINALIZER]);
    assert_eq!(e.provider_calls(), 0, "{:?}", e.emr.actions());
}
