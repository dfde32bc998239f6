//! Leader election: two replicas never run controllers at the same time, and the standby takes
//! over when the leader goes.

use crate::support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use workspace_access_operator::leader::{LeaseSettings, run_as_leader};
use workspace_access_operator::metrics::Metrics;

struct Replica {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    terms: Arc<AtomicUsize>,
}

fn replica(
    server: &crate::support::fake_api::FakeApiServer,
    id: &str,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
) -> Replica {
    let shutdown = CancellationToken::new();
    let terms = Arc::new(AtomicUsize::new(0));
    let lease = LeaseSettings {
        name: "workspace-access-operator".into(),
        namespace: "default".into(),
        identity: id.into(),
        duration_secs: 3,
    };
    let t = terms.clone();
    let task = tokio::spawn(run_as_leader(
        server.client(),
        lease,
        Arc::new(Metrics::new()),
        Arc::new(AtomicBool::new(false)),
        shutdown.clone(),
        move |token| {
            let running = running.clone();
            let max_running = max_running.clone();
            let t = t.clone();
            async move {
                t.fetch_add(1, Ordering::SeqCst);
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                max_running.fetch_max(now, Ordering::SeqCst);
                token.cancelled().await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        },
    ));
    Replica {
        shutdown,
        task,
        terms,
    }
}

#[tokio::test]
async fn only_one_replica_leads_and_the_standby_takes_over() {
    let s = server();
    let running = Arc::new(AtomicUsize::new(0));
    let max_running = Arc::new(AtomicUsize::new(0));
    let a = replica(&s, "replica-a", running.clone(), max_running.clone());
    eventually("a leader", || running.load(Ordering::SeqCst) == 1).await;
    let b = replica(&s, "replica-b", running.clone(), max_running.clone());
    // Give b several lease periods to (wrongly) start too.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(running.load(Ordering::SeqCst), 1);
    let (first, second) = if a.terms.load(Ordering::SeqCst) == 1 {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(
        second.terms.load(Ordering::SeqCst),
        0,
        "the standby never started"
    );

    // The leader shuts down (SIGTERM): it stops its controllers and releases the lease.
    let stopped_at = Instant::now();
    first.shutdown.cancel();
    first.task.await.unwrap().unwrap();
    eventually("the standby takes over", || {
        second.terms.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "took over within the lease duration"
    );
    assert_eq!(
        max_running.load(Ordering::SeqCst),
        1,
        "never two leaders at once"
    );

    second.shutdown.cancel();
    second.task.await.unwrap().unwrap();
    assert_eq!(running.load(Ordering::SeqCst), 0);
}
