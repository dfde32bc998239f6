//! Provider faults, for every provider and kind: throttling with `Retry-After`, 5xx bursts,
//! timeouts, connection resets, half responses, malformed, truncated and empty answers, and a
//! page failing midway through a listing.
//!
//! Each case starts from a resource that synced once (a Secret or an inventory in place),
//! makes a provider call due, turns the fault on and reconciles several times, moving the
//! manual clock by the requeue the driver asked for each time. It checks, at every attempt:
//! the old Secret / inventory intact, `Ready=False` with the expected reason, a bounded number
//! of provider calls; over the attempts: the backoff grows and stays capped at `max_backoff`
//! (or honours `Retry-After`); and once the fault clears, one reconciliation recovers.

use super::fake_emr::FakeEmr;
use super::stub::{Reply, Req, Stub};
use super::*;
use crate::support::fake_api::FakeApiServer;
use std::sync::atomic::{AtomicUsize, Ordering};
use workspace_access_operator::controller::SystemClock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Notebook,
    LivyReference,
    LivyManaged,
    Fabric,
    DataRobot,
}

/// Which requests of the kind's provider fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Microsoft Entra ID's token endpoint only.
    Entra,
    /// The kind's main call: ARM for notebooks, the first page of a listing, every EMR call.
    Main,
    /// The second page of a listing (a page failing midway).
    SecondPage,
}

fn matcher(kind: Kind, target: Target) -> impl Fn(&Req) -> bool + Send + Sync + 'static {
    move |r: &Req| match (kind, target) {
        (_, Target::Entra) => r.path == entra_path(),
        (Kind::Notebook, Target::Main) => r.path == arm_path(),
        (Kind::Fabric, Target::Main) => {
            r.path == "/v1/workspaces" && r.query_param("continuationToken").is_none()
        }
        (Kind::Fabric, Target::SecondPage) => r.query_param("continuationToken").is_some(),
        (Kind::DataRobot, Target::Main) => {
            r.path == "/api/v2/notebooks/" && r.query_param("offset").as_deref() == Some("0")
        }
        (Kind::DataRobot, Target::SecondPage) => {
            r.path == "/api/v2/notebooks/" && r.query_param("offset").as_deref() != Some("0")
        }
        (Kind::LivyReference | Kind::LivyManaged, _) => true,
        (Kind::Notebook, Target::SecondPage) => unreachable!("notebooks are not paged"),
    }
}

/// One resource of a kind, its provider, and a context on a manual clock.
struct World {
    kind: Kind,
    s: FakeApiServer,
    ctx: Arc<Context>,
    clock: Arc<ManualClock>,
    stub: Stub,
    emr: Option<FakeEmr>,
    /// More inventory entries at the provider (WorkspaceView).
    extra: Arc<AtomicUsize>,
}

const NAME: &str = "r";

impl World {
    /// Sets everything up and runs the first, successful sync.
    async fn new(kind: Kind) -> Self {
        let s = crd_server();
        insert_credentials(&s);
        let clock = Arc::new(ManualClock::new(t0()));
        let extra = Arc::new(AtomicUsize::new(0));
        let mut emr = None;
        let stub = match kind {
            Kind::Notebook => {
                let stub = azure_stub().await;
                s.insert(&notebook(NAME, &stub));
                stub
            }
            Kind::LivyReference | Kind::LivyManaged => {
                let (fake, stub) = emr_behind_stub(clock.clone()).await;
                let mode = if kind == Kind::LivyManaged {
                    managed()
                } else {
                    fake.add_token(
                        WS,
                        LC,
                        "lctk-ref",
                        "shared",
                        "reference-content-0001",
                        Duration::from_secs(7 * 24 * 3600),
                    );
                    json!({"tokenId": "lctk-ref"})
                };
                s.insert(&livy(NAME, &stub, mode, true));
                emr = Some(fake);
                stub
            }
            Kind::Fabric => {
                let stub = fabric_stub(extra.clone()).await;
                s.insert(&fabric_view(NAME, &stub));
                stub
            }
            Kind::DataRobot => {
                let stub = datarobot_stub(extra.clone()).await;
                s.insert(&datarobot_view(NAME, &stub));
                stub
            }
        };
        let ctx = Arc::new(context_on(
            &s,
            settings(),
            HttpOptions {
                timeout: TIMEOUT,
                connect_timeout: TIMEOUT,
                ..HttpOptions::default()
            },
            clock.clone(),
        ));
        let w = Self {
            kind,
            s,
            ctx,
            clock,
            stub,
            emr,
            extra,
        };
        w.reconcile().await;
        assert!(
            is_ready(&w.s, w.plural(), NAME),
            "{kind:?}: the first sync works: {}",
            w.status()
        );
        w
    }

    fn plural(&self) -> &'static str {
        match self.kind {
            Kind::Notebook => "notebooktokenrequests",
            Kind::LivyReference | Kind::LivyManaged => "livytokens",
            Kind::Fabric | Kind::DataRobot => "workspaceviews",
        }
    }

    fn has_secret(&self) -> bool {
        !matches!(self.kind, Kind::Fabric | Kind::DataRobot)
    }

    async fn reconcile(&self) -> Action {
        reconcile_kind(&self.s, &self.ctx, self.plural(), NAME)
            .await
            .unwrap_or_else(|e| panic!("{:?}: reconcile failed: {e}", self.kind))
    }

    fn status(&self) -> Value {
        status_of(&self.s, self.plural(), NAME)
    }

    /// Moves the clock to when the provider is to be asked again.
    fn make_due(&self) {
        match self.kind {
            Kind::Notebook | Kind::LivyManaged => {
                let secret: Secret = self.s.get(NS, NAME).unwrap();
                let renew_at: jiff::Timestamp = secret.annotations()
                    [workspace_access_operator::api::common::RENEW_AT_ANNOTATION]
                    .parse()
                    .unwrap();
                self.clock.set(renew_at);
            }
            // The refresh interval (5m by default).
            Kind::LivyReference => self.clock.advance(Duration::from_secs(300)),
            // Past the refresh interval (10m) and the cached Entra token's lifetime.
            Kind::Fabric | Kind::DataRobot => self.clock.advance(Duration::from_secs(3600)),
        }
    }

    /// What a failure must leave alone: the Secret (data, annotations, not even rewritten) and
    /// the status apart from the Ready condition and the retry time.
    fn kept(&self) -> Value {
        let mut status = self.status();
        let o = status.as_object_mut().unwrap();
        o.remove("conditions");
        o.remove("nextSyncTime");
        let secret = if self.has_secret() {
            secret_snapshot(&self.s, NAME).expect("the Secret exists")
        } else {
            Value::Null
        };
        json!({"status": status, "secret": secret})
    }

    /// Changes the provider's data, so that a recovered sync visibly brings news.
    fn change_provider_data(&self) {
        match self.kind {
            // Every notebook call mints a new token; managed Livy tokens rotate.
            Kind::Notebook | Kind::LivyManaged => {}
            Kind::LivyReference => self
                .emr
                .as_ref()
                .unwrap()
                .update_token("lctk-ref", |t| t.token = "reference-content-0002".into()),
            Kind::Fabric | Kind::DataRobot => {
                self.extra.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Most provider calls one reconciliation may make.
    fn calls_per_attempt(&self) -> usize {
        match self.kind {
            // Entra (its cached token may be due) and ARM.
            Kind::Notebook => 2,
            Kind::LivyReference => 1,
            // List, Create, Get.
            Kind::LivyManaged => 3,
            // Entra and two pages; DataRobot: two pages and one bulk call.
            Kind::Fabric | Kind::DataRobot => 3,
        }
    }
}

/// A fault and what it must lead to.
struct Case {
    name: &'static str,
    target: Target,
    reply: Reply,
    reason: &'static str,
    /// A `Retry-After` the requeue must honour.
    retry_after: Option<Duration>,
}

fn case(name: &'static str, target: Target, reply: Reply, reason: &'static str) -> Case {
    Case {
        name,
        target,
        reply,
        reason,
        retry_after: None,
    }
}

/// The faults every provider is put through.
fn cases(kind: Kind) -> Vec<Case> {
    let error_body = match kind {
        Kind::Notebook => json!({"error": {"code": "ServerBusy", "message": "try later"}}),
        Kind::LivyReference | Kind::LivyManaged => {
            json!({"requestId": "R1", "code": "Throttling.Api", "message": "slow down"})
        }
        Kind::Fabric => json!({"errorCode": "RequestBlocked", "message": "slow down"}),
        Kind::DataRobot => json!({"message": "slow down"}),
    };
    let mut v = vec![
        Case {
            retry_after: Some(Duration::from_secs(120)),
            ..case(
                "429 with a Retry-After longer than max_backoff",
                Target::Main,
                Reply::json(429, error_body.clone()).header("retry-after", "120"),
                "Throttled",
            )
        },
        case(
            "a burst of 503s with an HTML body",
            Target::Main,
            Reply::raw(503, "<html><body>Service Unavailable</body></html>"),
            "ProviderError",
        ),
        case(
            "500 with a JSON error",
            Target::Main,
            Reply::json(500, json!({"message": "internal error"})),
            "ProviderError",
        ),
        case(
            "an answer slower than the client's timeout",
            Target::Main,
            Reply::json(200, json!({})).delayed(Duration::from_secs(3)),
            "ProviderError",
        ),
        case(
            "a connection reset",
            Target::Main,
            Reply::Reset,
            "ProviderError",
        ),
        case(
            "half a response, then the connection closes",
            Target::Main,
            Reply::HalfResponse,
            "ProviderError",
        ),
        case(
            "malformed JSON",
            Target::Main,
            Reply::raw(200, "{this is not json"),
            "ProviderError",
        ),
        case(
            "truncated JSON",
            Target::Main,
            Reply::raw(
                200,
                r#"{"accessToken": "abc", "value": [{"id": "x"}], "data": [{"id"#,
            ),
            "ProviderError",
        ),
        case(
            "an empty 200",
            Target::Main,
            Reply::raw(200, ""),
            "ProviderError",
        ),
        case(
            "an empty JSON object",
            Target::Main,
            Reply::raw(200, "{}"),
            "ProviderError",
        ),
    ];
    if matches!(
        kind,
        Kind::Notebook | Kind::LivyReference | Kind::LivyManaged
    ) {
        // A short Retry-After: the driver's capped backoff decides (Fabric and DataRobot wait
        // for short ones in place; the real-time test covers that).
        v.push(Case {
            retry_after: Some(Duration::from_secs(1)),
            ..case(
                "429 with a short Retry-After",
                Target::Main,
                Reply::json(429, error_body).header("retry-after", "1"),
                "Throttled",
            )
        });
    }
    if matches!(kind, Kind::Notebook | Kind::Fabric) {
        v.push(Case {
            retry_after: Some(Duration::from_secs(120)),
            ..case(
                "Entra throttles",
                Target::Entra,
                Reply::json(429, json!({"error": "temporarily_unavailable"}))
                    .header("retry-after", "120"),
                "Throttled",
            )
        });
        v.push(case(
            "Entra fails with 503",
            Target::Entra,
            Reply::raw(503, ""),
            "ProviderError",
        ));
        if kind == Kind::Notebook {
            // (One Entra client serves both kinds; its timeout costs real time.)
            v.push(case(
                "Entra times out",
                Target::Entra,
                Reply::Reset.delayed(Duration::from_secs(3)),
                "ProviderError",
            ));
        }
        v.push(case(
            "Entra answers malformed JSON",
            Target::Entra,
            Reply::raw(200, "{\"access_token\": "),
            "ProviderError",
        ));
    }
    if matches!(kind, Kind::Fabric | Kind::DataRobot) {
        v.push(case(
            "the second page fails with 500",
            Target::SecondPage,
            Reply::json(500, json!({"message": "oops"})),
            "ProviderError",
        ));
        v.push(case(
            "the second page's connection is reset",
            Target::SecondPage,
            Reply::Reset,
            "ProviderError",
        ));
        v.push(case(
            "the second page is truncated",
            Target::SecondPage,
            Reply::raw(200, r#"{"value": [{"id": "ws-0003"}, {"id": "#),
            "ProviderError",
        ));
        v.push(case(
            "the second page times out",
            Target::SecondPage,
            Reply::raw(200, "{}").delayed(Duration::from_secs(3)),
            "ProviderError",
        ));
        v.push(Case {
            retry_after: Some(Duration::from_secs(120)),
            ..case(
                "the second page is throttled",
                Target::SecondPage,
                Reply::json(429, json!({"message": "slow down"})).header("retry-after", "120"),
                "Throttled",
            )
        });
    }
    v
}

/// Attempts made while a fault lasts: enough to reach the backoff cap (1, 2, 4, 8 s) and
/// stay there; faults that cost a client timeout per attempt stop at the cap.
const ATTEMPTS: usize = 5;
const SLOW_ATTEMPTS: usize = 4;

async fn run(kind: Kind, c: &Case) {
    let what = format!("{kind:?}, {}", c.name);
    let w = World::new(kind).await;
    w.make_due();
    let before = w.kept();
    w.stub.clear_calls();
    w.stub.fault(matcher(kind, c.target), c.reply.clone());
    let attempts = match c.reply {
        Reply::Delay(..) => SLOW_ATTEMPTS,
        _ => ATTEMPTS,
    };

    let mut delays = Vec::new();
    for attempt in 1..=attempts {
        let calls_before = w.stub.calls().len();
        let action = w.reconcile().await;
        let calls = w.stub.calls().len() - calls_before;
        assert!(
            (1..=w.calls_per_attempt()).contains(&calls),
            "{what}: attempt {attempt} made {calls} provider calls"
        );
        let (ready, reason) = ready(&w.s, w.plural(), NAME).unwrap();
        assert_eq!(
            (ready.as_str(), reason.as_str()),
            ("False", c.reason),
            "{what}: attempt {attempt}: {}",
            w.status()
        );
        assert_eq!(
            w.kept(),
            before,
            "{what}: attempt {attempt}: the Secret / inventory changed"
        );
        let delay = requeue(&action).unwrap_or_else(|| panic!("{what}: no retry"));
        delays.push(delay);
        w.clock.advance(delay);
    }
    let faulted = w.stub.count(|r| r.faulted);
    assert!(
        faulted >= attempts && w.stub.calls().len() <= attempts * w.calls_per_attempt(),
        "{what}: {} calls, {faulted} faulted",
        w.stub.calls().len()
    );
    // The backoff grows to the cap and stays there; a Retry-After beyond it is honoured.
    match c.retry_after {
        Some(ra) if ra > MAX_BACKOFF => {
            assert!(delays.iter().all(|d| *d == ra), "{what}: {delays:?}");
        }
        ra => {
            for pair in delays.windows(2) {
                assert!(pair[0] <= pair[1], "{what}: backoff shrank: {delays:?}");
            }
            assert!(
                delays[0] >= BASE_BACKOFF.max(ra.unwrap_or_default()),
                "{what}: {delays:?}"
            );
            assert!(
                delays.iter().all(|d| *d <= MAX_BACKOFF),
                "{what}: {delays:?}"
            );
            assert_eq!(*delays.last().unwrap(), MAX_BACKOFF, "{what}: {delays:?}");
        }
    }
    assert_eq!(
        failures(&w.s, &w.ctx, w.plural(), NAME),
        attempts as u32,
        "{what}"
    );

    // The fault clears: one reconciliation brings the news and resets the backoff.
    w.stub.clear_faults();
    w.change_provider_data();
    w.reconcile().await;
    assert!(
        is_ready(&w.s, w.plural(), NAME),
        "{what}: not recovered: {}",
        w.status()
    );
    assert_eq!(failures(&w.s, &w.ctx, w.plural(), NAME), 0, "{what}");
    let after = w.kept();
    if w.has_secret() {
        assert_ne!(
            after["secret"]["data"], before["secret"]["data"],
            "{what}: the Secret was not renewed"
        );
    } else {
        assert_eq!(
            after["status"]["count"].as_u64(),
            before["status"]["count"].as_u64().map(|c| c + 1),
            "{what}: the inventory was not refreshed"
        );
    }
    if let Some(emr) = &w.emr {
        assert_eq!(emr.bad_signatures(), 0, "{what}");
    }
}

/// Every case of a kind, each in its own world, four at a time (much of the time goes to
/// waiting for timeouts; more at once would slow the answers that must not time out).
async fn run_all(kind: Kind) {
    use futures::StreamExt;
    let cases = cases(kind);
    futures::stream::iter(cases.iter().map(|c| run(kind, c)))
        .buffer_unordered(4)
        .collect::<Vec<()>>()
        .await;
}

#[tokio::test]
async fn notebook_token_requests_survive_entra_and_arm_faults() {
    run_all(Kind::Notebook).await;
}

#[tokio::test]
async fn livy_tokens_in_reference_mode_survive_emr_faults() {
    run_all(Kind::LivyReference).await;
}

#[tokio::test]
async fn livy_tokens_in_managed_mode_survive_emr_faults_at_rotation() {
    run_all(Kind::LivyManaged).await;
}

#[tokio::test]
async fn fabric_views_survive_entra_and_fabric_faults() {
    run_all(Kind::Fabric).await;
}

#[tokio::test]
async fn datarobot_views_survive_datarobot_faults() {
    run_all(Kind::DataRobot).await;
}

/// Over real time, through the real controllers: a provider that answers 429 with
/// `Retry-After: 2` is not called again before those two seconds have passed — whether the
/// wait happens in place (Fabric and DataRobot repeat a page after a short wait) or through
/// the driver's requeue (ARM, EMR; longer than its shortest requeue of one second).
#[tokio::test]
async fn throttled_providers_are_not_called_again_before_retry_after() {
    let s = crd_server();
    insert_credentials(&s);
    let azure = azure_stub().await;
    let fabric = fabric_stub(Arc::default()).await;
    let datarobot = datarobot_stub(Arc::default()).await;
    let (emr, emr_stub) = emr_behind_stub(Arc::new(SystemClock)).await;
    emr.add_token(
        WS,
        LC,
        "lctk-ref",
        "shared",
        "reference-content-0001",
        Duration::from_secs(7 * 24 * 3600),
    );
    let throttled = |kind| {
        let matches = matcher(kind, Target::Main);
        (
            move |r: &Req| matches(r),
            Reply::json(429, json!({"code": "Throttling", "message": "slow down"}))
                .header("retry-after", "2"),
        )
    };
    for (stub, kind) in [
        (&azure, Kind::Notebook),
        (&fabric, Kind::Fabric),
        (&datarobot, Kind::DataRobot),
        (&emr_stub, Kind::LivyReference),
    ] {
        let (matches, reply) = throttled(kind);
        stub.fault_times(1, matches, reply);
    }
    let run = Running::start(
        &s,
        Settings {
            // Short, so that only Retry-After can explain a wait of two seconds.
            base_backoff: Duration::from_millis(100),
            ..settings()
        },
        HttpOptions {
            timeout: Duration::from_secs(2),
            ..http_options(RateLimits::default())
        },
        4,
    )
    .await;
    s.insert(&notebook("ntr", &azure));
    s.insert(&fabric_view("fabric", &fabric));
    s.insert(&datarobot_view("datarobot", &datarobot));
    s.insert(&livy(
        "livy",
        &emr_stub,
        json!({"tokenId": "lctk-ref"}),
        false,
    ));
    run.until(
        "all synced after the throttling",
        Duration::from_secs(20),
        || {
            is_ready(&s, "notebooktokenrequests", "ntr")
                && is_ready(&s, "workspaceviews", "fabric")
                && is_ready(&s, "workspaceviews", "datarobot")
                && is_ready(&s, "livytokens", "livy")
        },
    )
    .await;
    run.stop().await;
    for (stub, kind) in [
        (&azure, Kind::Notebook),
        (&fabric, Kind::Fabric),
        (&datarobot, Kind::DataRobot),
        (&emr_stub, Kind::LivyReference),
    ] {
        let matches = matcher(kind, Target::Main);
        let calls: Vec<_> = stub
            .calls()
            .into_iter()
            .filter(|c| {
                matches(&Req {
                    method: c.method.clone(),
                    path: c.path.clone(),
                    query: c.query.clone(),
                    headers: vec![],
                    body: vec![],
                })
            })
            .collect();
        assert_eq!(
            calls.iter().filter(|c| c.faulted).count(),
            1,
            "{kind:?}: {calls:?}"
        );
        for pair in calls.windows(2).filter(|p| p[0].faulted) {
            let gap = pair[1].at.duration_since(pair[0].at);
            assert!(
                gap >= Duration::from_secs(2),
                "{kind:?}: called again {gap:?} after a 429 with Retry-After: 2"
            );
        }
    }
}
