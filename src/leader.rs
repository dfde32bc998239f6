//! Leader election through a `coordination.k8s.io/v1` Lease: only the replica holding the lease
//! runs the controllers; when it loses the lease it stops them (waiting for reconciliations in
//! flight) before anything else can happen, and a standby takes over once the lease expires.

use crate::metrics::Metrics;
use anyhow::Context as _;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Seconds a lease is valid without renewal (at least 2).
    pub duration_secs: u64,
}

/// Runs `term(token)` whenever this replica holds the lease, cancelling `token` when the lease
/// is lost, until `shutdown` is cancelled or a term ends on its own (its result is returned).
/// The lease is released on the way out so a standby takes over at once.
pub async fn run_as_leader<F, Fut>(
    client: kube::Client,
    lease: LeaseSettings,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
    mut term: F,
) -> anyhow::Result<()>
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let duration = lease.duration_secs.max(2);
    let grace = (duration / 3).max(1);
    let params = LeaseParams::new(lease.identity.clone(), duration, grace)
        .with_field_manager(format!("workspace-access-operator-{}", lease.identity));
    let manager = LeaseManager::new(
        client,
        &lease.name,
        &lease.namespace,
        params,
        LeaseCreateMode::AutoCreate,
    )
    .await
    .context("setting up leader election")?;
    let (mut leader, lease_task) = manager.watch().await;
    info!(identity = %lease.identity, lease = %lease.name, namespace = %lease.namespace, "waiting to become the leader");
    // A standby is ready: it serves its endpoints and takes over when the leader goes.
    ready.store(true, Ordering::SeqCst);
    let mut result = Ok(());
    'terms: loop {
        while !*leader.borrow_and_update() {
            tokio::select! {
                changed = leader.changed() => if changed.is_err() { break 'terms; },
                _ = shutdown.cancelled() => break 'terms,
            }
        }
        info!(identity = %lease.identity, "became the leader; starting controllers");
        metrics.leader.set(1);
        let token = shutdown.child_token();
        let running = term(token.clone());
        tokio::pin!(running);
        let lost = async {
            loop {
                if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                    return;
                }
            }
        };
        tokio::select! {
            r = &mut running => {
                metrics.leader.set(0);
                result = r;
                break 'terms;
            }
            _ = lost => {
                warn!(identity = %lease.identity, "lost the lease; stopping controllers");
                token.cancel();
                if let Err(e) = running.await {
                    warn!(error = format!("{e:#}"), "controllers stopped with an error");
                }
                metrics.leader.set(0);
                ready.store(true, Ordering::SeqCst);
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
    // Dropping the receiver makes the lease task release the lease.
    drop(leader);
    match lease_task.await {
        Ok(Ok(_)) => info!("lease released"),
        Ok(Err(e)) => warn!(error = %e, "releasing the lease failed"),
        Err(e) => warn!(error = %e, "lease task failed"),
    }
    result
}
