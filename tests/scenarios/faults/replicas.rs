//! Two replicas with leader election, both running the real controllers against the same API
//! server and providers: only the leader writes, the standby takes over within the lease
//! duration when the leader goes, and a leader cut off from the API server stops before its
//! lease can pass to the standby, so that it can't write once the partition heals.
//!
//! Each replica talks to the API server through its own [`ApiTap`], which records the writes
//! that reached the API server (Secrets, status, finalizers, events; not the Lease) with their
//! time, and can cut the replica off.

use super::stub::{Reply, Req, Stub};
use super::*;
use crate::support::fake_api::FakeApiServer;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use workspace_access_operator::controller::SystemClock;
use workspace_access_operator::controller::run::{ControllerOptions, run_controllers};
use workspace_access_operator::leader::{LeaseSettings, run_as_leader};

/// Lease duration of the replicas (seconds).
const LEASE_SECS: u64 = 3;

struct Replica {
    id: &'static str,
    partitioned: Arc<AtomicBool>,
    /// Writes that reached the API server.
    writes: Arc<Mutex<Vec<(Instant, String)>>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Replica {
    fn start(s: &FakeApiServer, id: &'static str) -> Self {
        let partitioned = Arc::new(AtomicBool::new(false));
        let writes: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let tap = {
            let (partitioned, writes) = (partitioned.clone(), writes.clone());
            ApiTap::new(s, move |r: &ApiReq| {
                if partitioned.load(Ordering::SeqCst) {
                    return Tap::Refuse;
                }
                if r.is_write() && !r.path.contains("/leases") {
                    writes
                        .lock()
                        .unwrap()
                        .push((Instant::now(), format!("{} {}", r.method, r.path)));
                }
                Tap::Pass
            })
        };
        let client = tap.client();
        let metrics = Arc::new(Metrics::new());
        let ready = Arc::new(AtomicBool::new(false));
        let shutdown = CancellationToken::new();
        let lease = LeaseSettings {
            name: "workspace-access-operator".into(),
            namespace: "default".into(),
            identity: id.into(),
            duration_secs: LEASE_SECS,
        };
        let term = {
            let (client, metrics, ready) = (client.clone(), metrics.clone(), ready.clone());
            move |token: CancellationToken| {
                let ctx = context_with(
                    client.clone(),
                    Settings {
                        base_backoff: Duration::from_millis(200),
                        max_backoff: Duration::from_secs(1),
                        ..settings()
                    },
                    HttpOptions {
                        timeout: Duration::from_secs(2),
                        ..http_options(RateLimits::default())
                    },
                    Arc::new(SystemClock),
                    metrics.clone(),
                );
                run_controllers(ctx, ControllerOptions::new(4), ready.clone(), token)
            }
        };
        let task = tokio::spawn(run_as_leader(
            client,
            lease,
            metrics.clone(),
            ready,
            shutdown.clone(),
            term,
        ));
        Self {
            id,
            partitioned,
            writes,
            metrics,
            shutdown,
            task: Some(task),
        }
    }

    fn leads(&self) -> bool {
        self.metrics
            .encode()
            .lines()
            .any(|l| l == "workspace_access_leader 1")
    }

    fn writes(&self) -> Vec<(Instant, String)> {
        self.writes.lock().unwrap().clone()
    }

    fn first_write(&self) -> Option<Instant> {
        self.writes().iter().map(|w| w.0).min()
    }

    async fn stop(&mut self) {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .unwrap_or_else(|_| panic!("{} did not stop", self.id))
            .unwrap()
            .unwrap();
    }
}

/// Every write of `earlier` happened before the first write of `later`.
fn never_both(earlier: &Replica, later: &Replica) {
    let Some(first) = later.first_write() else {
        return;
    };
    let overlapping: Vec<String> = earlier
        .writes()
        .into_iter()
        .filter(|(at, _)| *at >= first)
        .map(|(_, w)| w)
        .collect();
    assert!(
        overlapping.is_empty(),
        "{} wrote after {} had started writing: {overlapping:?}",
        earlier.id,
        later.id
    );
}

async fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn only_the_leader_writes_and_the_standby_takes_over_when_it_goes() {
    let s = crd_server();
    insert_credentials(&s);
    let azure = azure_stub().await;
    let datarobot = datarobot_stub(Arc::default()).await;
    let mut a = Replica::start(&s, "replica-a");
    wait_for("a leads", Duration::from_secs(10), || a.leads()).await;
    let mut b = Replica::start(&s, "replica-b");

    s.insert(&notebook("ntr-1", &azure));
    s.insert(&datarobot_view("wsv-1", &datarobot));
    wait_for("synced by the leader", Duration::from_secs(10), || {
        is_ready(&s, "notebooktokenrequests", "ntr-1") && is_ready(&s, "workspaceviews", "wsv-1")
    })
    .await;
    // Give the standby time to (wrongly) join in.
    tokio::time::sleep(Duration::from_secs(LEASE_SECS)).await;
    assert!(!a.writes().is_empty());
    assert_eq!(b.writes(), vec![], "the standby wrote");
    assert!(!b.leads());

    // The leader shuts down: it releases the lease, the standby takes over at once.
    a.stop().await;
    let took = wait_for("b leads", Duration::from_secs(10), || b.leads()).await;
    assert!(
        took < Duration::from_secs(LEASE_SECS),
        "took {took:?} to take over a released lease"
    );
    s.insert(&notebook("ntr-2", &azure));
    wait_for("synced by the new leader", Duration::from_secs(10), || {
        is_ready(&s, "notebooktokenrequests", "ntr-2")
    })
    .await;
    assert!(!b.writes().is_empty());
    never_both(&a, &b);
    b.stop().await;
}

/// The leader is cut off from the API server (its Lease renewals fail, and so does everything
/// else it sends) while the standby is not. The standby takes over once the lease expires; the
/// cut-off leader must have stopped its controllers before that, so that when the partition
/// heals its pending work (here: a retry that would now succeed) doesn't write too.
#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_standby_takes_over() {
    let s = crd_server();
    insert_credentials(&s);
    let azure = azure_stub().await;
    // A provider that fails until the test lets it succeed.
    let flaky_ok = Arc::new(AtomicBool::new(false));
    let flaky = Stub::start().await;
    route_entra(&flaky);
    {
        let ok = flaky_ok.clone();
        flaky.route("POST", &arm_path(), move |_: &Req| {
            if ok.load(Ordering::SeqCst) {
                Reply::json(
                    200,
                    json!({"accessToken": "flaky-token", "expiresIn": 28800}),
                )
            } else {
                Reply::raw(503, "")
            }
        });
    }
    let mut a = Replica::start(&s, "replica-a");
    wait_for("a leads", Duration::from_secs(10), || a.leads()).await;
    let mut b = Replica::start(&s, "replica-b");
    s.insert(&notebook("ntr-1", &azure));
    s.insert(&notebook("flaky", &flaky));
    wait_for("synced by the leader", Duration::from_secs(10), || {
        is_ready(&s, "notebooktokenrequests", "ntr-1")
            && ready(&s, "notebooktokenrequests", "flaky")
                .is_some_and(|(_, reason)| reason == "ProviderError")
    })
    .await;

    // The partition: a can't reach the API server; its watches break.
    a.partitioned.store(true, Ordering::SeqCst);
    s.disconnect_watches();
    let cut_at = Instant::now();
    flaky_ok.store(true, Ordering::SeqCst);
    s.insert(&notebook("ntr-2", &azure));

    let took = wait_for("b leads", Duration::from_secs(3 * LEASE_SECS), || b.leads()).await;
    assert!(
        took <= Duration::from_secs(2 * LEASE_SECS),
        "the standby took {took:?} to take over an expired lease"
    );
    wait_for("b synced what changed", Duration::from_secs(10), || {
        is_ready(&s, "notebooktokenrequests", "ntr-2")
            && is_ready(&s, "notebooktokenrequests", "flaky")
    })
    .await;
    assert!(
        !a.leads(),
        "a still thinks it leads {:?} after the cut",
        cut_at.elapsed()
    );

    // The partition heals; a has every chance to write what it had pending (its retries come
    // within a second).
    a.partitioned.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(b.leads() && !a.leads());
    never_both(&a, &b);
    a.stop().await;
    b.stop().await;
}
