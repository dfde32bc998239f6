//! The decisions of a LivyToken sync, as pure functions of the status, the Secret's record, the
//! tokens the provider listed, the spec and the time: no I/O. The reconciler (`mod.rs`) carries
//! them out; `preview` asks the same functions what a sync would do.
//!
//! Managed mode, step by step:
//! 1. [`first_step`]: keep the current token (nothing due), re-read it (it may still serve a
//!    new generation or a deleted Secret), or get a new one.
//! 2. A new token resumes `status.managed.pending` if there is one; else the Livy Gateway's
//!    tokens are listed and [`after_list`] says which to adopt (a create whose result was lost)
//!    or what to create, and which unknown tokens of this resource to retire.
//! 3. Once the Secret holds the new token, [`rotate`] makes it current and retires the one it
//!    replaced; [`take_due`] says which retired tokens' grace period is over.
//!
//! Reference mode: [`reference_next_read`] says whether the token must be read now.
//!
//! A renew request skips these: managed mode gets a new token (step 2, so a pending one is
//! resumed rather than a second one created), reference mode reads the token.

use crate::api::livy_token::{
    LivyTokenStatus, ManagedLivyToken, ManagedTokenRef, ManagedTokensStatus,
};
use crate::controller::clients::LivyLocation;
use crate::controller::schedule::RecordedToken;
use crate::controller::status::READY;
use crate::providers::emr_spark::{LivyCompute, LivyTokenInfo};
use crate::time::add;
use jiff::Timestamp;
use std::collections::HashSet;
use std::time::Duration;

/// The rotation number of a token named `<prefix><n>`.
pub fn rotation_of(prefix: &str, name: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.parse().ok()
}

/// Where a recorded token lives.
pub fn location_of(r: &ManagedTokenRef) -> LivyLocation {
    LivyLocation {
        compute: LivyCompute {
            region_id: r.region_id.clone(),
            workspace_id: r.workspace_id.clone(),
            livy_compute_id: r.livy_compute_id.clone(),
        },
        endpoint: r.endpoint.clone(),
    }
}

/// The record of token `token_id` named `name` at `at`.
pub fn record(at: &LivyLocation, token_id: &str, name: &str) -> ManagedTokenRef {
    ManagedTokenRef {
        token_id: token_id.to_owned(),
        name: name.to_owned(),
        region_id: at.compute.region_id.clone(),
        workspace_id: at.compute.workspace_id.clone(),
        livy_compute_id: at.compute.livy_compute_id.clone(),
        endpoint: at.endpoint.clone(),
        delete_after: None,
    }
}

/// Whether the current token can stay in the Secret for this spec: still named as this
/// resource's tokens are, with the spec's expiry, not expired and not due for renewal.
pub fn still_serves(
    info: &LivyTokenInfo,
    prefix: &str,
    m: &ManagedLivyToken,
    renew_at: Timestamp,
    now: Timestamp,
) -> bool {
    let named = info
        .name
        .as_deref()
        .is_some_and(|n| rotation_of(prefix, n).is_some());
    let same_expiry = info
        .auto_expire
        .is_none_or(|a| a.enable && a.expire_days == m.expire_days);
    named && same_expiry && info.expire_time.is_some_and(|e| now < e) && now < renew_at
}

/// Earliest `deleteAfter` among retiring tokens.
pub fn next_retirement(status: &LivyTokenStatus) -> Option<Timestamp> {
    status
        .managed
        .as_ref()?
        .retiring
        .iter()
        .filter_map(|r| r.delete_after)
        .min()
}

/// The Ready condition is True for `generation`.
pub fn ready_for_generation(status: &LivyTokenStatus, generation: Option<i64>) -> bool {
    status
        .common
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True" && c.observed_generation == generation)
}

/// The first step of a managed sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The Secret holds the current token for this generation and its renewal time has not
    /// come: no provider call but the deletion of retired tokens that are due.
    Keep(ManagedTokenRef),
    /// The current token may still serve (a spec change that doesn't affect the token, or a
    /// deleted Secret): read it and, if [`still_serves`], write it to the Secret again.
    Recheck(ManagedTokenRef),
    /// A new token: resume the pending one, else list and follow [`after_list`].
    NewToken,
}

/// What a managed sync starts with. `status_token_id` is `status.tokenId` (the token the
/// status describes); `record` is what the Secret's annotations say, for this generation.
pub fn first_step(
    ms: &ManagedTokensStatus,
    status_token_id: Option<&str>,
    record: Option<&RecordedToken>,
    compute: &LivyCompute,
    now: Timestamp,
) -> Step {
    if ms.pending.is_some() {
        return Step::NewToken;
    }
    let current_here = ms
        .current
        .as_ref()
        // The same Livy Gateway; a new endpoint (e.g. the VPC one) reaches the same tokens.
        .filter(|c| location_of(c).compute == *compute)
        .filter(|c| status_token_id == Some(c.token_id.as_str()));
    let Some(current) = current_here else {
        return Step::NewToken;
    };
    match record {
        Some(r) if r.is_current(now) => Step::Keep(current.clone()),
        Some(r) if now >= r.renew_at => Step::NewToken,
        _ => Step::Recheck(current.clone()),
    }
}

/// The token a sync writes to the Secret next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextToken {
    /// A token of this resource that the status doesn't know (a create whose result was lost
    /// in a crash): adopted instead of creating a second one.
    Adopt(ManagedTokenRef),
    /// A new token of this name.
    Create(String),
}

/// What to do after listing the Livy Gateway's tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListDecision {
    /// The token to adopt or create.
    pub next: NextToken,
    /// Other unknown tokens of this resource: retired, deleted after the grace period.
    pub retire: Vec<ManagedTokenRef>,
}

/// Adopts the newest unknown, unexpired token of this resource with a rotation number above
/// the current one's, retires the other unknown ones, or creates `<prefix><n+1>` (n the highest
/// number listed or recorded).
pub fn after_list(
    ms: &ManagedTokensStatus,
    listed: &[LivyTokenInfo],
    prefix: &str,
    at: &LivyLocation,
    now: Timestamp,
    grace_period: Duration,
) -> ListDecision {
    let known: HashSet<&str> = ms
        .current
        .iter()
        .chain(ms.pending.iter())
        .chain(ms.retiring.iter())
        .map(|r| r.token_id.as_str())
        .collect();
    let mut ours: Vec<(u64, &LivyTokenInfo)> = listed
        .iter()
        .filter_map(|t| Some((rotation_of(prefix, t.name.as_deref()?)?, t)))
        .collect();
    ours.sort_by_key(|(n, _)| *n);
    let recorded_max = ms
        .current
        .iter()
        .chain(ms.retiring.iter())
        .filter_map(|r| rotation_of(prefix, &r.name))
        .max()
        .unwrap_or(0);
    let current_n = ms
        .current
        .as_ref()
        .and_then(|c| rotation_of(prefix, &c.name))
        .unwrap_or(0);
    let unknown: Vec<(u64, &LivyTokenInfo)> = ours
        .iter()
        .filter(|(_, t)| !known.contains(t.token_id.as_str()))
        .copied()
        .collect();
    let adopt = unknown
        .iter()
        .rev()
        .find(|(n, t)| *n > current_n && t.expire_time.is_none_or(|e| now < e))
        .map(|(_, t)| *t);
    let delete_after = add(now, grace_period);
    let retire = unknown
        .iter()
        .filter(|(_, t)| adopt.is_none_or(|a| a.token_id != t.token_id))
        .map(|(_, t)| ManagedTokenRef {
            delete_after: Some(delete_after),
            ..record(at, &t.token_id, t.name.as_deref().unwrap_or_default())
        })
        .collect();
    let next = match adopt {
        Some(t) => NextToken::Adopt(record(
            at,
            &t.token_id,
            t.name.as_deref().unwrap_or_default(),
        )),
        None => {
            let n = ours.last().map(|(n, _)| *n).unwrap_or(0).max(recorded_max) + 1;
            NextToken::Create(format!("{prefix}{n}"))
        }
    };
    ListDecision { next, retire }
}

/// The Secret holds `new`: it becomes current (and is no longer pending or retiring), and the
/// token it replaced retires, to be deleted after the grace period. Returns the replaced one.
pub fn rotate(
    ms: &mut ManagedTokensStatus,
    new: ManagedTokenRef,
    now: Timestamp,
    grace_period: Duration,
) -> Option<ManagedTokenRef> {
    let replaced = ms
        .current
        .take()
        .filter(|old| old.token_id != new.token_id)
        .map(|old| ManagedTokenRef {
            delete_after: Some(add(now, grace_period)),
            ..old
        });
    if let Some(old) = &replaced {
        ms.retiring.push(old.clone());
    }
    ms.retiring.retain(|r| r.token_id != new.token_id);
    ms.current = Some(new);
    ms.pending = None;
    replaced
}

/// Takes the retiring tokens whose `deleteAfter` has passed out of `ms`, to be deleted (the
/// caller puts back any whose deletion fails).
pub fn take_due(ms: &mut ManagedTokensStatus, now: Timestamp) -> Vec<ManagedTokenRef> {
    let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut ms.retiring)
        .into_iter()
        .partition(|r| r.delete_after.is_some_and(|t| t <= now));
    ms.retiring = keep;
    due
}

/// Reference mode: when the referenced token is to be read next, if that is later than `now`
/// (`None`: read it now). Nothing is due while the Secret holds this token for this generation,
/// the last read was good (Ready for this generation), and neither `refreshInterval` since the
/// last read nor the token's renewal time (unless the last read was after it) has come.
pub fn reference_next_read(
    status: &LivyTokenStatus,
    record: Option<&RecordedToken>,
    token_id: &str,
    generation: Option<i64>,
    refresh_interval: Duration,
    now: Timestamp,
) -> Option<Timestamp> {
    let record = record?;
    if status.token_id.as_deref() != Some(token_id) || !ready_for_generation(status, generation) {
        return None;
    }
    let last = status.common.last_sync_time?;
    let refresh_at = add(last, refresh_interval);
    let next_read = if last < record.renew_at {
        refresh_at.min(record.renew_at)
    } else {
        refresh_at
    };
    (now < next_read && now < record.expires_at).then_some(next_read)
}

#[cfg(test)]
mod tests;
