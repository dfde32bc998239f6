//! Status: the Ready condition, and writing status only when something meaningful changed.

use crate::api::common::{Condition, FIELD_MANAGER, HasCommonStatus};
use crate::controller::ManagedKind;
use crate::controller::error::Reason;
use crate::metrics::Metrics;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use std::sync::Arc;

/// Type of the condition every kind carries.
pub const READY: &str = "Ready";

/// Sets the Ready condition in `conditions`, keeping `lastTransitionTime` unless the status
/// (True/False) changes. Other condition types are left alone.
pub fn set_ready(
    conditions: &mut Vec<Condition>,
    ready: bool,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if ready { "True" } else { "False" };
    let previous = conditions.iter().position(|c| c.type_ == READY);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(c) if c.status == status => c.last_transition_time,
        _ => now,
    };
    let cond = Condition {
        type_: READY.into(),
        status: status.into(),
        reason: reason.as_str().into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => conditions[i] = cond,
        None => conditions.push(cond),
    }
}

/// Whether writing `desired` over `current` changes anything but the sync timestamps.
/// `lastSyncTime` and `nextSyncTime` alone never cause a write: an unchanged resync writes
/// nothing and causes no watch event.
pub fn needs_write<S: HasCommonStatus + PartialEq + Clone>(
    current: Option<&S>,
    desired: &S,
) -> bool {
    let Some(current) = current else {
        return true;
    };
    let strip = |s: &S| {
        let mut s = s.clone();
        s.common_mut().last_sync_time = None;
        s.common_mut().next_sync_time = None;
        s
    };
    strip(current) != strip(desired)
}

/// Whether the Ready condition differs in status or reason between two statuses (used to emit
/// one event per transition, not one per retry).
pub fn ready_transitioned<S: HasCommonStatus>(current: Option<&S>, desired: &S) -> bool {
    let key = |c: Option<&Condition>| c.map(|c| (c.status.clone(), c.reason.clone()));
    key(current.and_then(|s| s.common().ready())) != key(desired.common().ready())
}

/// Writes `desired` as the status of `obj` with server-side apply, if [`needs_write`] says so
/// compared with `current` (the status as last written). Returns whether a write happened.
pub async fn write_status<K: ManagedKind>(
    client: &kube::Client,
    obj: &K,
    current: Option<&K::Status>,
    desired: &K::Status,
    metrics: &Metrics,
) -> Result<bool, kube::Error> {
    if !needs_write(current, desired) {
        return Ok(false);
    }
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": desired,
    });
    let name = obj.name_any();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&body);
    crate::controller::retry_on_conflict(|| api.patch_status(&name, &params, &patch)).await?;
    metrics.write(K::KIND, "status");
    Ok(true)
}

/// The status of one object as the current reconciliation last wrote it: the one place the
/// driver and a sync write status through.
///
/// The driver makes one per reconciliation, from the object it was given. A sync that is about
/// to cause a provider-side effect the next steps depend on (a Livy token created at the
/// provider) [`record`](Self::record)s the status that names it first (write-ahead); the driver's
/// final write (success or failure) then starts from what was recorded, not from the status
/// the reconciliation started with, so the record is never lost.
pub struct Checkpoint<K: ManagedKind> {
    obj: Arc<K>,
    client: kube::Client,
    metrics: Arc<Metrics>,
    /// What this reconciliation wrote last; `None`: nothing yet.
    written: Option<K::Status>,
}

impl<K: ManagedKind> Checkpoint<K> {
    /// A checkpoint of `obj`, writing through `client`.
    pub fn new(obj: Arc<K>, client: kube::Client, metrics: Arc<Metrics>) -> Self {
        Self {
            obj,
            client,
            metrics,
            written: None,
        }
    }

    /// The status as last written: recorded in this reconciliation, else the object's.
    pub fn current(&self) -> Option<&K::Status> {
        self.written.as_ref().or(self.obj.status())
    }

    /// Writes `desired` now (if it differs from [`Self::current`]); from then on it is the
    /// current status. A failed write leaves the previous one current.
    pub async fn record(&mut self, desired: &K::Status) -> Result<bool, kube::Error> {
        let wrote = write_status(
            &self.client,
            self.obj.as_ref(),
            self.current(),
            desired,
            &self.metrics,
        )
        .await?;
        self.written = Some(desired.clone());
        Ok(wrote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkspaceViewStatus;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut c = vec![];
        set_ready(
            &mut c,
            false,
            Reason::Throttled,
            "a",
            Some(1),
            ts("2026-01-01T00:00:00Z"),
        );
        assert_eq!(c[0].last_transition_time, ts("2026-01-01T00:00:00Z"));
        set_ready(
            &mut c,
            false,
            Reason::ProviderError,
            "b",
            Some(1),
            ts("2026-01-01T00:05:00Z"),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].reason, "ProviderError");
        assert_eq!(
            c[0].last_transition_time,
            ts("2026-01-01T00:00:00Z"),
            "still False"
        );
        set_ready(
            &mut c,
            true,
            Reason::Synced,
            "ok",
            Some(2),
            ts("2026-01-01T00:10:00Z"),
        );
        assert_eq!(c[0].status, "True");
        assert_eq!(c[0].observed_generation, Some(2));
        assert_eq!(c[0].last_transition_time, ts("2026-01-01T00:10:00Z"));
    }

    #[test]
    fn other_conditions_are_kept() {
        let mut c = vec![Condition {
            type_: "Other".into(),
            status: "True".into(),
            reason: "X".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: ts("2025-01-01T00:00:00Z"),
        }];
        set_ready(
            &mut c,
            true,
            Reason::Synced,
            "ok",
            Some(1),
            ts("2026-01-01T00:00:00Z"),
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].type_, "Other");
    }

    #[test]
    fn timestamps_alone_do_not_need_a_write() {
        let mut a = WorkspaceViewStatus {
            count: Some(3),
            ..Default::default()
        };
        set_ready(
            &mut a.common.conditions,
            true,
            Reason::Synced,
            "3",
            Some(1),
            ts("2026-01-01T00:00:00Z"),
        );
        a.common.last_sync_time = Some(ts("2026-01-01T00:00:00Z"));
        let mut b = a.clone();
        b.common.last_sync_time = Some(ts("2026-01-01T00:15:00Z"));
        b.common.next_sync_time = Some(ts("2026-01-01T00:30:00Z"));
        assert!(!needs_write(Some(&a), &b));
        b.count = Some(4);
        assert!(needs_write(Some(&a), &b));
        assert!(needs_write(None, &a));
    }

    #[test]
    fn transitions_compare_status_and_reason() {
        let mut a = WorkspaceViewStatus::default();
        set_ready(
            &mut a.common.conditions,
            false,
            Reason::Throttled,
            "x",
            Some(1),
            ts("2026-01-01T00:00:00Z"),
        );
        let mut b = a.clone();
        set_ready(
            &mut b.common.conditions,
            false,
            Reason::Throttled,
            "y",
            Some(1),
            ts("2026-01-01T00:01:00Z"),
        );
        assert!(!ready_transitioned(Some(&a), &b));
        set_ready(
            &mut b.common.conditions,
            false,
            Reason::Forbidden,
            "y",
            Some(1),
            ts("2026-01-01T00:01:00Z"),
        );
        assert!(ready_transitioned(Some(&a), &b));
        assert!(ready_transitioned(None, &b));
    }
}
