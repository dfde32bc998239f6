//! Rate limiting and concurrency, through the real controllers: many resources of every kind
//! created at once never make the providers' host see more than `--provider-host-rate` allows
//! (measured from the providers' own arrival times), the reconcile concurrency bounds the
//! calls in flight, and tokens minted together are not renewed together.

use super::stub::{Reply, Req, Stub};
use super::*;
use crate::support::fake_api::FakeApiServer;
use std::time::Instant;
use workspace_access_operator::api::common::RENEW_AT_ANNOTATION;
use workspace_access_operator::controller::SystemClock;
use workspace_access_operator::providers::ratelimit::{HostRate, Rate};

async fn run_until(
    s: &FakeApiServer,
    rate_limits: RateLimits,
    concurrency: u16,
    what: &str,
    done: impl Fn() -> bool,
) {
    let http = HttpOptions {
        timeout: Duration::from_secs(10),
        ..http_options(rate_limits)
    };
    let run = Running::start(s, settings(), http, concurrency).await;
    run.until(what, Duration::from_secs(40), done).await;
    run.stop().await;
}

fn datarobot_ids_view(name: &str, dr: &Stub) -> WorkspaceView {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"dataRobot": {
            "endpoint": format!("{}/api/v2", dr.base_url()),
            "notebookIds": ["nb-01", "nb-02"],
            "apiTokenRef": {"name": "dr", "key": "apiToken"}}}
    }))
    .unwrap()
}

/// 300 resources (100 of each kind) created at once against providers that all live on one
/// host, 127.0.0.1, limited to 100 calls/s with bursts of 10: in no window of one second do
/// the providers see more than the bucket allows. Each kind uses its own credential, and
/// `--provider-rate` is per host and credential, so the host's limit is the cap of
/// `--provider-host-rate` (each credential is given the same rate: it alone could use all of
/// it).
#[tokio::test]
async fn three_hundred_resources_at_once_stay_under_the_per_host_rate() {
    const PER_KIND: usize = 100;
    const RATE: f64 = 100.0;
    const BURST: u32 = 10;
    let s = crd_server();
    insert_credentials(&s);
    let azure = azure_stub().await;
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
    for i in 0..PER_KIND {
        s.insert(&notebook(&format!("ntr-{i:03}"), &azure));
        s.insert(&livy(
            &format!("livy-{i:03}"),
            &emr_stub,
            json!({"tokenId": "lctk-ref"}),
            false,
        ));
        s.insert(&datarobot_ids_view(&format!("wsv-{i:03}"), &datarobot));
    }
    let all_ready = || {
        (0..PER_KIND).all(|i| {
            is_ready(&s, "notebooktokenrequests", &format!("ntr-{i:03}"))
                && is_ready(&s, "livytokens", &format!("livy-{i:03}"))
                && is_ready(&s, "workspaceviews", &format!("wsv-{i:03}"))
        })
    };
    let rate = Rate {
        per_second: RATE,
        burst: BURST,
    };
    let limits = RateLimits {
        default: Some(rate),
        hosts: vec![HostRate {
            host: "127.0.0.1".into(),
            rate,
        }],
    };
    run_until(&s, limits, 16, "300 resources Ready", all_ready).await;

    let arrivals: Vec<Instant> = [&azure, &emr_stub, &datarobot]
        .iter()
        .flat_map(|stub| stub.calls())
        .map(|r| r.at)
        .collect();
    // One Entra token shared by all notebooks, one call per resource otherwise.
    assert_eq!(arrivals.len(), 3 * PER_KIND + 1, "provider calls");
    let window = Duration::from_secs(1);
    let peak = peak_in_window(arrivals.clone(), window);
    // The bucket allows BURST + RATE * window calls to *start* in a window; arrivals may lag
    // their start by scheduling delays, so a quarter of a second of slack is allowed.
    let allowed = f64::from(BURST) + RATE * (window.as_secs_f64() + 0.25);
    assert!(
        (peak as f64) <= allowed,
        "{peak} provider calls within one second; the limit allows {allowed}"
    );
    let span = arrivals
        .iter()
        .max()
        .unwrap()
        .duration_since(*arrivals.iter().min().unwrap());
    let least = (arrivals.len() as f64 - f64::from(BURST)) / RATE;
    assert!(
        span.as_secs_f64() >= least * 0.9,
        "{} calls took {span:?}: faster than the rate allows",
        arrivals.len()
    );
    assert_eq!(emr.bad_signatures(), 0);

    // The notebook tokens, minted within a few seconds of each other, renew spread over
    // minutes (the jitter window of an 8 h token is 5 minutes).
    let renew_at: Vec<i64> = (0..PER_KIND)
        .map(|i| {
            let secret: Secret = s.get(NS, &format!("ntr-{i:03}")).unwrap();
            let at: jiff::Timestamp = secret.annotations()[RENEW_AT_ANNOTATION].parse().unwrap();
            at.as_second()
        })
        .collect();
    let spread = renew_at.iter().max().unwrap() - renew_at.iter().min().unwrap();
    let mut distinct = renew_at.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        spread >= 120 && distinct.len() >= PER_KIND / 2,
        "renewals spread over {spread} s, {} distinct seconds",
        distinct.len()
    );
}

/// With `--concurrency 3` and a slow provider, never more than three calls are in flight:
/// each reconciliation makes one call at a time.
#[tokio::test]
async fn reconcile_concurrency_bounds_the_calls_in_flight() {
    let s = crd_server();
    insert_credentials(&s);
    let azure = Stub::start().await;
    route_entra(&azure);
    let body = json!({"accessToken": "t", "expiresIn": 28800});
    azure.route("POST", &arm_path(), move |_: &Req| {
        Reply::json(200, body.clone()).delayed(Duration::from_millis(100))
    });
    for i in 0..20 {
        s.insert(&notebook(&format!("ntr-{i:02}"), &azure));
    }
    let all_ready =
        || (0..20).all(|i| is_ready(&s, "notebooktokenrequests", &format!("ntr-{i:02}")));
    run_until(
        &s,
        RateLimits::default(),
        3,
        "20 resources Ready",
        all_ready,
    )
    .await;
    assert_eq!(azure.calls().len(), 21);
    let peak = azure.peak_in_flight();
    assert!(
        (2..=3).contains(&peak),
        "{peak} calls in flight with a concurrency of 3"
    );
}
