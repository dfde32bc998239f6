//! Leader election through a `coordination.k8s.io/v1` Lease: only the replica holding the lease
//! runs the controllers, and a standby takes over once the lease is released or expires.
//!
//! A leader must stop before its lease can pass to another replica, also when it can't reach
//! the API server to renew it (a partition: its lease manager then keeps believing it leads).
//! So, while leading, the Lease itself is read every [`Timing::check`]: the controllers run
//! only while it shows this replica renewed it recently enough, and stop at
//! `renewTime + duration - margin` otherwise. Reconciliations still running then get a short
//! moment to finish and are abandoned after it (as if the process had died there; every step
//! of every kind is safe to repeat), so that nothing this replica started writes after a
//! standby may have taken over.

use crate::metrics::Metrics;
use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;
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

/// When a leader checks and gives up its lease, derived from the lease duration and the lease
/// manager's grace period (it renews `grace` before expiry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The controllers stop this long before the lease would expire without renewal.
    pub margin: Duration,
    /// How often the Lease is read while leading (also the longest wait for one read).
    pub check: Duration,
    /// How long reconciliations in flight may finish after the controllers are told to stop
    /// because the lease is lost or can't be confirmed.
    pub stop_within: Duration,
}

impl Timing {
    /// For a lease of `duration_secs` renewed `grace_secs` before it expires: the controllers
    /// stop half the grace period before expiry, i.e. after the renewal was due and before a
    /// standby can take over. A check (and the longest wait for one read of the Lease) is a
    /// quarter of that margin, and so is the time left to reconciliations in flight: a
    /// deadline noticed up to two checks late still leaves them stopped before expiry.
    pub fn new(duration_secs: u64, grace_secs: u64) -> Self {
        let margin = Duration::from_secs(grace_secs.min(duration_secs)) / 2;
        Self {
            margin,
            check: margin / 4,
            stop_within: margin / 4,
        }
    }
}

/// Until when this replica may act as the leader according to the Lease: it is the holder and
/// `renewTime + leaseDurationSeconds - margin` is still ahead. `None` if it isn't, or if the
/// Lease can't be read within `timing.check`.
async fn confirmed(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    timing: Timing,
) -> Option<Instant> {
    let lease = tokio::time::timeout(timing.check, api.get_opt(name))
        .await
        .ok()?
        .ok()??;
    let spec = lease.spec?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = spec.renew_time?.0;
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    let now = k8s_openapi::jiff::Timestamp::now();
    let left = renewed.duration_since(now)
        + k8s_openapi::jiff::SignedDuration::try_from(duration).ok()?
        - k8s_openapi::jiff::SignedDuration::try_from(timing.margin).ok()?;
    let left = Duration::try_from(left).ok()?;
    Some(Instant::now() + left)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ready once the instant in `at` has passed. The clock is read at every poll, not only when
/// the timer fires, so that the deadline wins over anything else polled in the same task.
struct Deadline<'a> {
    at: &'a Mutex<Instant>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<'a> Deadline<'a> {
    fn new(at: &'a Mutex<Instant>) -> Self {
        let timer = Box::pin(tokio::time::sleep_until(*lock(at)));
        Self { at, timer }
    }
}

impl Future for Deadline<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let at = *lock(self.at);
        if Instant::now() >= at {
            return Poll::Ready(());
        }
        if self.timer.deadline() != at {
            self.timer.as_mut().reset(at);
        }
        self.timer.as_mut().poll(cx)
    }
}

/// Why a term ended.
#[derive(Debug)]
enum Lost {
    /// The lease manager saw another holder (or stopped).
    Taken,
    /// The Lease was not confirmed as renewed in time.
    NotRenewed,
}

/// Runs `term(token)` whenever this replica holds the lease, cancelling `token` when the lease
/// is lost or can't be confirmed in time, until `shutdown` is cancelled or a term ends on its
/// own (its result is returned). The lease is released on the way out so a standby takes over
/// at once.
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
    let timing = Timing::new(duration, grace);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
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
        // Lead only while the lease manager says so and the Lease confirms it.
        let valid_until = loop {
            if *leader.borrow_and_update()
                && let Some(until) = confirmed(&leases, &lease.name, &lease.identity, timing).await
            {
                break until;
            }
            tokio::select! {
                changed = leader.changed() => if changed.is_err() { break 'terms; },
                _ = tokio::time::sleep(timing.check) => {},
                _ = shutdown.cancelled() => break 'terms,
            }
        };
        info!(identity = %lease.identity, "became the leader; starting controllers");
        metrics.leader.set(1);
        let token = shutdown.child_token();
        let mut running = Box::pin(term(token.clone()));
        // Until when the Lease was last confirmed; moved on by every confirmation.
        let valid = Mutex::new(valid_until);
        let renewals = async {
            loop {
                tokio::time::sleep(timing.check).await;
                if let Some(until) = confirmed(&leases, &lease.name, &lease.identity, timing).await
                {
                    *lock(&valid) = until;
                }
            }
        };
        let taken =
            async { while leader.changed().await.is_ok() && *leader.borrow_and_update() {} };
        let lost = async {
            tokio::select! {
                biased;
                () = Deadline::new(&valid) => Lost::NotRenewed,
                () = taken => Lost::Taken,
                () = renewals => Lost::NotRenewed,
            }
        };
        // The lease is checked first whenever this task runs: after a pause (a frozen
        // process, a starved runtime), no reconciliation takes another step once it's gone.
        tokio::select! {
            biased;
            why = lost => {
                warn!(identity = %lease.identity, reason = ?why, "lost the lease; stopping controllers");
                token.cancel();
                // Reconciliations in flight may finish while the lease (as last confirmed)
                // still holds; then they are abandoned.
                let expiry = *lock(&valid) + timing.margin;
                let grace = expiry
                    .saturating_duration_since(Instant::now())
                    .min(timing.stop_within);
                match tokio::time::timeout(grace, &mut running).await {
                    Ok(Err(e)) => warn!(error = format!("{e:#}"), "controllers stopped with an error"),
                    Ok(Ok(())) => {}
                    Err(_) => warn!("abandoning reconciliations still running, as another replica may take over"),
                }
                drop(running);
                metrics.leader.set(0);
                ready.store(true, Ordering::SeqCst);
            }
            r = &mut running => {
                metrics.leader.set(0);
                result = r;
                break 'terms;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_stops_after_its_renewal_was_due_and_before_its_lease_expires() {
        // The operator's default: 15 s, renewed 5 s before expiry.
        let t = Timing::new(15, 5);
        let (renewal_due, expiry) = (Duration::from_secs(10), Duration::from_secs(15));
        let stops_at = expiry - t.margin;
        assert!(stops_at > renewal_due, "{t:?}");
        // Noticed at most two checks late, plus the time given to reconciliations in flight.
        assert!(stops_at + 2 * t.check + t.stop_within < expiry, "{t:?}");
        assert!(
            t.check >= Duration::from_millis(500),
            "{t:?}: reads the Lease too often"
        );
        let t = Timing::new(3, 1);
        assert!(
            Duration::from_secs(3) - t.margin > Duration::from_secs(2),
            "{t:?}"
        );
        assert!(t.margin > 2 * t.check + t.stop_within, "{t:?}");
    }
}
