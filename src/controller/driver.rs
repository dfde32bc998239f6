//! The reconcile driver shared by every kind.

use crate::api::common::{HasCommonStatus, RENEW_REQUESTED_AT_ANNOTATION};
use crate::controller::error::{Error, Reason, Retry};
use crate::controller::schedule::retry_delay;
use crate::controller::status::{Checkpoint, ready_transitioned, set_ready};
use crate::controller::{Context, ManagedKind, SyncEvents, object_key};
use crate::metrics::{Metrics, ResourceGauges};
use crate::providers::error::clip;
use crate::time::{add, duration_between};
use async_trait::async_trait;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Longest time between two reconciliations of a healthy resource. Between provider calls the
/// reconciliation is a cheap check (cached Secret metadata, no write), and it repairs anything
/// a missed watch event left behind, e.g. a deleted Secret.
pub const MAX_REQUEUE: Duration = Duration::from_secs(3600);
/// Shortest requeue, so a renewal time in the past can't spin.
pub const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// What a successful sync produced.
#[derive(Clone, Debug)]
pub struct Synced<S> {
    /// The desired status. The driver fills in `observedGeneration`, the Ready condition and
    /// `nextSyncTime`; the kind fills in everything else (start from the current status to keep
    /// fields this sync didn't touch).
    pub status: S,
    /// Message of the Ready=True condition, e.g. "token valid until ...". Never a secret.
    pub message: String,
    /// When the provider is to be contacted next (renewal, refresh).
    pub next_sync: Timestamp,
    /// When data was obtained from the provider in this sync; `None` when nothing was fetched
    /// (the previous `lastSyncTime` is kept).
    pub last_sync: Option<Timestamp>,
    /// Note of a Normal event to publish, for things worth telling (a token minted).
    pub event: Option<String>,
    /// Further Normal events, each with a reason of its own (e.g. `AccessChanged`), published
    /// whatever `--sync-events` says; see [`Notice`].
    pub notices: Vec<Notice>,
}

/// An event a sync reports besides `Synced`, and what to count with it. Both happen once the
/// sync's status is recorded, and not at all when that write fails: the retried sync finds the
/// same thing again and reports it then, so nothing is reported twice.
#[derive(Clone)]
pub struct Notice {
    /// The event's reason, CamelCase (e.g. `AccessChanged`).
    pub reason: &'static str,
    /// The event's note (clipped to 1000 bytes). Never a secret.
    pub note: String,
    /// Counters to increase with it, if any.
    pub count: Option<CountFn>,
    /// A Warning (something the user should look at, though the resource is Ready), else a
    /// Normal event.
    pub warning: bool,
}

/// Increases counters of [`Metrics`] (see [`Notice::count`]).
pub type CountFn = Arc<dyn Fn(&Metrics) + Send + Sync>;

impl std::fmt::Debug for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notice")
            .field("reason", &self.reason)
            .field("note", &self.note)
            .field("count", &self.count.is_some())
            .field("warning", &self.warning)
            .finish()
    }
}

/// What `workspace-access-operator preview` shows for a resource: the status a sync would
/// write and the Secret it would write (key names only).
#[derive(Clone, Debug)]
pub struct Preview<S> {
    /// The status the sync would write (without conditions).
    pub status: S,
    /// Message of the Ready condition.
    pub message: String,
    /// Name of the Secret that would be written, for token kinds.
    pub secret_name: Option<String>,
    /// Keys of that Secret.
    pub secret_keys: Vec<String>,
}

/// A kind's reconciliation logic.
#[async_trait]
pub trait Reconciler: ManagedKind {
    /// Finalizer for kinds with provider-side state to delete with the resource.
    const FINALIZER: Option<&'static str> = None;

    /// Whether this resource has (or is about to create) provider-side state, and so needs
    /// the finalizer. A resource that doesn't is reconciled without one: adding it would cost
    /// a write and an extra pass, and its deletion would wait for the operator for nothing.
    fn needs_finalizer(&self) -> bool {
        Self::FINALIZER.is_some()
    }

    /// Brings the world in line with the spec and returns the desired status. A sync that
    /// causes a provider-side effect records the status naming it in `checkpoint` first (see
    /// [`Checkpoint`]); the driver writes the final status over it.
    async fn sync(
        obj: Arc<Self>,
        ctx: Arc<Context>,
        checkpoint: &mut Checkpoint<Self>,
    ) -> Result<Synced<Self::Status>, Error>;

    /// Runs the provider side of a sync once without touching the cluster (no Secret or status
    /// write, no provider-side state left behind), for `preview`.
    async fn preview(obj: Arc<Self>, ctx: Arc<Context>) -> Result<Preview<Self::Status>, Error>;

    /// Deletes provider-side state when the resource is deleted (kinds with a finalizer).
    async fn cleanup(_obj: Arc<Self>, _ctx: Arc<Context>) -> Result<(), Error> {
        Ok(())
    }
}

/// Longest value of the renew-request annotation that counts as a request (it is copied into
/// the status; an RFC 3339 time has about 30 characters).
pub const MAX_RENEW_REQUEST: usize = 128;

/// The renew request this reconciliation is to handle: the value of the
/// `workspaceaccess.io/renew-requested-at` annotation, when it is set (not blank, at most
/// [`MAX_RENEW_REQUEST`] characters) and differs from `status.lastRenewRequest` (the value
/// handled last). Any such value counts; `kubectl workspaceaccess renew` writes the current
/// time in RFC 3339. Each distinct value is handled once: a
/// kind's sync then gets a new token (or inventory) whatever its renewal time, and once it
/// succeeds the driver records the value in `status.lastRenewRequest`. Until then (the sync
/// failed) the request stays pending and the retries still honour it.
pub fn renew_request<K: ManagedKind>(obj: &K) -> Option<&str> {
    let value = obj
        .meta()
        .annotations
        .as_ref()?
        .get(RENEW_REQUESTED_AT_ANNOTATION)?
        .as_str();
    let handled = obj
        .status()
        .and_then(|s| s.common().last_renew_request.as_deref());
    let counts = !value.trim().is_empty() && value.chars().count() <= MAX_RENEW_REQUEST;
    (counts && handled != Some(value)).then_some(value)
}

/// The per-resource gauges a status shows (see [`crate::metrics::ResourceGauges`]).
pub fn gauges_of<S: HasCommonStatus>(status: &S) -> ResourceGauges {
    ResourceGauges {
        expires_at: status.token_expires_at().map(|t| t.as_second()),
        renew_at: status.token_renew_at().map(|t| t.as_second()),
        ready: status
            .common()
            .ready()
            .map(|c| (c.status.clone(), c.reason.clone())),
        inventory: status
            .inventory_count()
            .map(|(provider, count)| (provider.to_owned(), count)),
    }
}

/// Sets the resource's gauges from the status just recorded.
fn observe<K: ManagedKind>(ctx: &Context, obj: &K, status: &K::Status) {
    ctx.metrics.observe_resource(
        K::KIND,
        &obj.namespace().unwrap_or_default(),
        &obj.name_any(),
        gauges_of(status),
    );
}

/// Reconciles one object: the function given to `Controller::run`.
pub async fn reconcile<K: Reconciler>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconcile_started(K::KIND);
    let result = match K::FINALIZER {
        None => sync_and_report(obj, ctx.clone()).await,
        // Live, without the finalizer and not needing it: nothing to clean up on deletion.
        Some(name)
            if obj.meta().deletion_timestamp.is_none()
                && !obj.finalizers().iter().any(|f| f == name)
                && !obj.needs_finalizer() =>
        {
            sync_and_report(obj, ctx.clone()).await
        }
        Some(name) => {
            // The helper adds the finalizer to a live resource without it (and returns), and
            // removes it from a deleted one once the cleanup succeeded: one write either way.
            let finalizer_write = obj.finalizers().iter().any(|f| f == name)
                == obj.meta().deletion_timestamp.is_some();
            let metrics = ctx.metrics.clone();
            let api: Api<K> =
                Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
            let c = ctx.clone();
            finalizer(&api, name, obj, |event| async move {
                match event {
                    FinalizerEvent::Apply(o) => sync_and_report(o, c).await,
                    FinalizerEvent::Cleanup(o) => cleanup_and_report(o, c).await,
                }
            })
            .await
            .inspect(|_| {
                if finalizer_write {
                    metrics.write(K::KIND, "finalizer");
                }
            })
            .map_err(|e| match e {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
                kube::runtime::finalizer::Error::AddFinalizer(e)
                | kube::runtime::finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
                other => Error::InvalidSpec(other.to_string()),
            })
        }
    };
    ctx.metrics.reconcile_finished(K::KIND, started.elapsed());
    result
}

/// Requeue policy for errors that escaped the driver (the API server failing a status write):
/// capped exponential backoff. An error the driver already reported (a failed cleanup) is
/// requeued after the delay its report announced.
pub fn error_policy<K: Reconciler>(obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    if let Error::Reported { retry_in, .. } = err {
        return Action::requeue(*retry_in);
    }
    let key = object_key(obj.as_ref());
    let failures = ctx.backoff.failed(&key);
    let delay = retry_delay(
        failures,
        None,
        ctx.settings.base_backoff,
        ctx.settings.max_backoff,
        &key,
    );
    ctx.metrics.failure(K::KIND, err.reason().as_str());
    warn!(kind = K::KIND, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(),
          error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn sync_and_report<K: Reconciler>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = obj.namespace().unwrap_or_default();
    // A namespace being deleted takes its resources with it: nothing new can be written there,
    // so a sync would only mint tokens and fail (its Secrets may go before the resources).
    if ctx.credentials.namespace_terminating(&namespace) {
        debug!(kind = K::KIND, namespace = %namespace, name = %obj.name_any(),
               "namespace is being deleted; not syncing");
        return Ok(Action::await_change());
    }
    let now = ctx.now();
    let mut checkpoint = Checkpoint::new(obj.clone(), ctx.client.clone(), ctx.metrics.clone());
    match K::sync(obj.clone(), ctx.clone(), &mut checkpoint).await {
        Ok(synced) => report_success(&obj, checkpoint, &ctx, synced, now).await,
        Err(err) if err.is_namespace_terminating() => {
            debug!(kind = K::KIND, namespace = %namespace, name = %obj.name_any(),
                   "namespace is being deleted; not syncing");
            Ok(Action::await_change())
        }
        Err(err) => {
            let delay = failure_delay(obj.as_ref(), &ctx, &err, now);
            report_failure(&obj, checkpoint, &ctx, &err, None, delay, now).await?;
            Ok(match delay {
                Some(d) => Action::requeue(d.max(MIN_REQUEUE)),
                None => Action::await_change(),
            })
        }
    }
}

/// The finalizer's cleanup. A failure is reported with its own reason and the time of the
/// retry, and returned as [`Error::Reported`] so that the finalizer stays and
/// [`error_policy`] retries at that time. A cleanup is always retried (with backoff): the
/// resource is going away, so waiting for a spec change would leave it stuck.
async fn cleanup_and_report<K: Reconciler>(
    obj: Arc<K>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let now = ctx.now();
    match K::cleanup(obj.clone(), ctx.clone()).await {
        Ok(()) => {
            ctx.backoff.reset(&object_key(obj.as_ref()));
            Ok(Action::await_change())
        }
        Err(err) => {
            let key = object_key(obj.as_ref());
            let retry_after = match err.retry() {
                Retry::Backoff(after) => after,
                Retry::OnSpecChange => None,
            };
            let delay = retry_delay(
                ctx.backoff.failed(&key),
                retry_after,
                ctx.settings.base_backoff,
                ctx.settings.max_backoff,
                &key,
            )
            .max(MIN_REQUEUE);
            let checkpoint = Checkpoint::new(obj.clone(), ctx.client.clone(), ctx.metrics.clone());
            // A failed status write is logged; the cleanup's own error is what is retried.
            if let Err(e) = report_failure(
                &obj,
                checkpoint,
                &ctx,
                &err,
                Some("deleting"),
                Some(delay),
                now,
            )
            .await
            {
                debug!(error = %e, "could not report the failed cleanup");
            }
            Err(Error::Reported {
                source: Box::new(err),
                retry_in: delay,
            })
        }
    }
}

/// The longest retry delay of a resource without a valid token while its provider fails
/// (5xx, timeout, connection): a provider outage that ends is noticed within this time.
const OUTAGE_RETRY_CAP: Duration = Duration::from_secs(60);

/// When to retry after `err`: `None` waits for a change of the resource. While the token in
/// the resource's Secret is still valid, the retry comes before it expires, at most half the
/// time it has left (but not sooner than `--base-backoff`), however long the backoff has
/// grown: a renewal failing again and again gets several more tries in before the token runs
/// out. Without a valid token, a provider outage is retried at least every
/// [`OUTAGE_RETRY_CAP`]; other failures (refused credentials, missing objects) back off up
/// to `--max-backoff`. A provider's `Retry-After` is always honoured.
fn failure_delay<K: ManagedKind>(
    obj: &K,
    ctx: &Context,
    err: &Error,
    now: Timestamp,
) -> Option<Duration> {
    match err.retry() {
        Retry::OnSpecChange => None,
        Retry::Backoff(retry_after) => {
            let key = object_key(obj);
            let failures = ctx.backoff.failed(&key);
            let delay = retry_delay(
                failures,
                retry_after,
                ctx.settings.base_backoff,
                ctx.settings.max_backoff,
                &key,
            );
            let left = obj
                .status()
                .and_then(|s| s.token_expires_at())
                .filter(|e| *e > now)
                .map(|e| duration_between(now, e));
            Some(match (retry_after, left) {
                (None, Some(left)) => delay.min((left / 2).max(ctx.settings.base_backoff)),
                // No valid token (it expired during the outage, or there never was one): the
                // consumers wait for the provider to come back, so don't wait minutes longer.
                (None, None) if err.is_outage() => {
                    delay.min(OUTAGE_RETRY_CAP.max(ctx.settings.base_backoff))
                }
                _ => delay,
            })
        }
    }
}

async fn report_success<K: Reconciler>(
    obj: &Arc<K>,
    mut checkpoint: Checkpoint<K>,
    ctx: &Arc<Context>,
    synced: Synced<K::Status>,
    now: Timestamp,
) -> Result<Action, Error> {
    ctx.backoff.reset(&object_key(obj.as_ref()));
    let current = checkpoint.current().cloned();
    let current = current.as_ref();
    let generation = obj.meta().generation;
    let mut status = synced.status;
    let mut conditions = current
        .map(|s| s.common().conditions.clone())
        .unwrap_or_default();
    set_ready(
        &mut conditions,
        true,
        Reason::Synced,
        &synced.message,
        generation,
        now,
    );
    let common = status.common_mut();
    common.conditions = conditions;
    common.observed_generation = generation;
    common.next_sync_time = Some(synced.next_sync);
    common.last_sync_time = synced
        .last_sync
        .or_else(|| current.and_then(|s| s.common().last_sync_time));
    let request = renew_request(obj.as_ref());
    common.last_renew_request = request
        .map(str::to_owned)
        .or_else(|| current.and_then(|s| s.common().last_renew_request.clone()));
    let transitioned = ready_transitioned(current, &status);
    let wrote = checkpoint.record(&status).await?;
    observe(ctx, obj.as_ref(), &status);
    if let Some(value) = request {
        info!(kind = K::KIND, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(),
              renew_requested_at = %value, "renew request handled");
    }
    let event = match (synced.event, request) {
        (Some(note), Some(value)) => Some(format!("{note} (renew requested at {value})")),
        (event, _) => event,
    };
    let note = match (ctx.settings.sync_events, event, transitioned) {
        (SyncEvents::None, _, _) => None,
        (SyncEvents::All, Some(note), _) => Some(note),
        (SyncEvents::Transitions, Some(note), true) => Some(note),
        (_, _, true) => Some(synced.message.clone()),
        _ => None,
    };
    if let Some(note) = note {
        publish(
            ctx,
            obj.as_ref(),
            EventType::Normal,
            Reason::Synced.as_str(),
            &note,
        )
        .await;
    }
    for notice in synced.notices {
        if let Some(count) = &notice.count {
            count(&ctx.metrics);
        }
        let type_ = if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish(ctx, obj.as_ref(), type_, notice.reason, &notice.note).await;
    }
    debug!(kind = K::KIND, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(),
           wrote_status = wrote, next_sync = %synced.next_sync, "reconciled");
    let wait = duration_between(now, synced.next_sync).clamp(MIN_REQUEUE, MAX_REQUEUE);
    Ok(Action::requeue(wait))
}

/// Writes the Ready=False status for `err` (keeping the last good token data or inventory)
/// with `nextSyncTime` after `delay`, and publishes a Warning on a transition. `doing` names
/// what failed when it is not the sync (e.g. "deleting").
async fn report_failure<K: Reconciler>(
    obj: &Arc<K>,
    mut checkpoint: Checkpoint<K>,
    ctx: &Arc<Context>,
    err: &Error,
    doing: Option<&str>,
    delay: Option<Duration>,
    now: Timestamp,
) -> Result<(), Error> {
    let reason = err.reason();
    let with_doing = |m: String| match doing {
        Some(doing) => clip(&format!("{doing}: {m}"), 1000),
        None => m,
    };
    // The condition gets the short form; the event and the log the whole line.
    let summary = with_doing(err.summary());
    let message = with_doing(err.message());
    ctx.metrics.failure(K::KIND, reason.as_str());
    let generation = obj.meta().generation;
    let current = checkpoint.current().cloned();
    // Start from the current status: the last good token data or inventory stays in place.
    let mut status = current.clone().unwrap_or_default();
    let common = status.common_mut();
    set_ready(
        &mut common.conditions,
        false,
        reason,
        &summary,
        generation,
        now,
    );
    common.observed_generation = generation;
    common.next_sync_time = delay.map(|d| add(now, d));
    let transitioned = ready_transitioned(current.as_ref(), &status);
    checkpoint.record(&status).await?;
    observe(ctx, obj.as_ref(), &status);
    if transitioned {
        publish(
            ctx,
            obj.as_ref(),
            EventType::Warning,
            reason.as_str(),
            &message,
        )
        .await;
    }
    info!(kind = K::KIND, namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(),
          reason = reason.as_str(), message = %message, retry_in = ?delay, "not ready");
    Ok(())
}

/// An event's name: the object's name, a dot and 16 hex digits (as client-go names events),
/// kept a DNS subdomain of at most 253 characters. (A `generateName` ending in a dot is
/// refused by the API server.)
fn event_name(object: &str, suffix: u64) -> String {
    let head: String = object.chars().take(253 - 17).collect();
    let head = head.trim_end_matches(['.', '-']);
    format!("{head}.{suffix:016x}")
}

/// Publishes an event (`events.k8s.io/v1`); a failure to publish is logged, not fatal.
///
/// Events are created directly rather than through kube's `Recorder`, which keeps every event
/// it published in memory for minutes to count repeats into a series: at thousands of
/// resources minting at once that cache was the largest thing the operator held, and each
/// publish scanned it under a lock. The operator publishes on changes, not on every retry, so
/// repeats are rare and a repeated event is simply another event.
async fn publish<K: ManagedKind>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let namespace = obj.namespace().unwrap_or_default();
    let event = k8s_openapi::api::events::v1::Event {
        metadata: kube::api::ObjectMeta {
            name: Some(event_name(&obj.name_any(), rand::random())),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            Timestamp::now(),
        )),
        type_: Some(
            match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        reason: Some(reason.into()),
        note: Some(clip(note, 1000)),
        action: Some("Sync".into()),
        regarding: Some(obj.object_ref(&())),
        reporting_controller: Some(ctx.reporter.controller.into()),
        reporting_instance: Some(ctx.reporter.instance.clone()),
        ..Default::default()
    };
    let api: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ctx.client.clone(), &namespace);
    match api.create(&Default::default(), &event).await {
        Ok(_) => ctx.metrics.write(K::KIND, "event"),
        Err(e) => debug!(error = %e, "could not publish event"),
    }
}

#[cfg(test)]
mod tests {
    use super::event_name;

    #[test]
    fn event_names_are_dns_subdomains() {
        assert_eq!(event_name("ml", 0xab), "ml.00000000000000ab");
        let long = format!("{}-x", "a".repeat(235));
        let name = event_name(&long, u64::MAX);
        assert_eq!(name.len(), 235 + 17);
        assert!(name.starts_with(&"a".repeat(235)) && !name.contains("-."));
        assert!(crate::api::names::is_dns_subdomain(&name));
        assert!(crate::api::names::is_dns_subdomain(&event_name(
            &"b".repeat(253),
            1
        )));
    }
}
