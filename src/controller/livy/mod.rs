//! Reconciler of `LivyToken`: an Alibaba Cloud EMR Serverless Spark Livy Gateway token in a
//! Secret (keys `token`, `tokenId`, `expiresAt`).
//!
//! **Reference mode** (`spec.tokenId`): the token is read with GetLivyComputeToken and copied to
//! the Secret. It is read again every `refreshInterval` (default 5m) and once more at its renewal
//! time before it expires, so that a token changed outside the cluster reaches the Secret. A
//! token that is gone is `NotFound`, an expired one a `ProviderError`; the Secret is kept.
//!
//! **Managed mode** (`spec.managed`): the operator owns the token's whole life.
//! - Tokens are named `<namePrefix><n>` ([`name_prefix`]: derived from the resource's
//!   namespace, name and UID) with `autoExpireConfiguration {enable: true, expireDays}`.
//! - Before creating a token the operator lists the Livy Gateway's tokens: one of this
//!   resource's names that status doesn't know (a create whose result was lost in a crash) is
//!   adopted instead of creating a second one; other unknown ones are retired.
//! - Right after CreateLivyComputeToken the new token is recorded in `status.managed.pending`
//!   (a status write in the middle of the sync), then read, then written to the Secret, and only
//!   then does it become `status.managed.current` while the replaced token moves to
//!   `status.managed.retiring` with `deleteAfter = now + gracePeriod`. Rotation happens at
//!   `expiresAt - renewBefore - jitter`. Retired tokens are deleted in a later sync once
//!   `deleteAfter` has passed, so pods never see an invalid token in the Secret.
//! - The `pending` record is written through the driver's [`Checkpoint`] before anything else
//!   can fail, and the driver's final status write (success or failure) starts from it; a
//!   failure before it means the next sync finds the token again through the List above. Every
//!   step is safe to repeat: nothing is created twice and nothing is deleted while the Secret
//!   holds it.
//! - The decisions (keep, re-read, adopt, create, rotate, retire, delete) are pure functions in
//!   [`plan`], shared with `preview`; this module carries them out.
//! - The finalizer `workspaceaccess.io/livy-token` deletes every token the resource created
//!   (recorded ones, and any with its name prefix that List shows); NotFound counts as deleted,
//!   other failures keep the finalizer and are reported.
//!
//! **No provider call** when nothing is due: the Secret's annotations (written for this
//! generation; `expires-at`, `renew-at`) and the status say whether a token is still good,
//! also right after a restart.
//!
//! **Renew on request**: a `workspaceaccess.io/renew-requested-at` value not handled yet
//! rotates a managed token at once (as at its renewal time) and re-reads a referenced one.
//!
//! **Preview** never leaves anything behind: reference mode reads the token; managed mode lists
//! the Livy Gateway's tokens (proving the credentials, the signature and access) and reports the
//! name of the token a sync would create, without creating it.

pub mod plan;

use crate::api::LivyToken;
use crate::api::livy_token::{
    LivyTokenMode, LivyTokenStatus, ManagedLivyToken, ManagedTokenRef, ManagedTokensStatus,
};
use crate::controller::clients::{LivyLocation, LivyTokens};
use crate::controller::consumers::{self, TokenKind, TokenSecret};
use crate::controller::driver::renew_request;
use crate::controller::error::Error;
use crate::controller::schedule::{self, RecordedToken};
use crate::controller::secret::{SecretContent, SecretState, check_ownership, secret_name};
use crate::controller::status::Checkpoint;
use crate::controller::{Context, Preview, Reconciler, Synced, validate};
use crate::providers::emr_spark::{self, AutoExpire, LivyCompute, LivyTokenInfo, TokenRequest};
use crate::providers::error::{ProviderError, ProviderErrorKind};
use crate::redact::SecretString;
use crate::time::{add, nearest_second, rfc3339};
use async_trait::async_trait;
use jiff::Timestamp;
use kube::{Resource, ResourceExt};
use plan::{ListDecision, NextToken, Step, location_of, next_retirement, rotation_of};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Finalizer that deletes managed tokens at the provider with the resource.
pub const FINALIZER: &str = "workspaceaccess.io/livy-token";
/// Default `spec.refreshInterval`.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Default `spec.managed.gracePeriod`.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(600);
/// Most characters of `spec.managed.name` used in token names.
pub const MAX_NAME_BASE: usize = 40;
/// Keys of the Secret.
pub const SECRET_KEYS: [&str; 3] = ["token", "tokenId", "expiresAt"];

impl TokenKind for LivyToken {
    const SECRET_KEYS: &'static [&'static str] = &SECRET_KEYS;
    const TOKEN_KEYS: &'static [&'static str] = &["token"];
    fn secret_template(&self) -> Option<&crate::api::common::SecretTemplate> {
        self.spec.secret_template.as_ref()
    }
    fn rollout_targets(&self) -> &[crate::api::common::RolloutRestartTarget] {
        &self.spec.rollout_restart_targets
    }
    fn last_rollout_restart(
        status: &mut LivyTokenStatus,
    ) -> &mut Option<crate::api::common::LastRolloutRestart> {
        &mut status.last_rollout_restart
    }
}

/// Default EMR Serverless Spark endpoint of a region.
pub fn default_endpoint(region_id: &str) -> String {
    emr_spark::default_endpoint(region_id)
}

/// The beginning of the names of a resource's managed tokens:
/// `<base>-<8 hex of sha256(namespace/name/uid)>-`, where base is `spec.managed.name` (at most
/// [`MAX_NAME_BASE`] characters) or `wao-` and the first 24 characters of the resource's name.
pub fn name_prefix(namespace: &str, name: &str, uid: &str, spec_name: Option<&str>) -> String {
    let digest = hex::encode(Sha256::digest(
        format!("{namespace}/{name}/{uid}").as_bytes(),
    ));
    let base: String = match spec_name.filter(|n| !n.is_empty()) {
        Some(n) => n.chars().take(MAX_NAME_BASE).collect(),
        None => format!("wao-{}", name.chars().take(24).collect::<String>()),
    };
    format!(
        "{}-{}-",
        base.trim_end_matches(['-', '.', '_']),
        &digest[..8]
    )
}

/// A validated spec, with the client to reach its Livy Gateway.
pub struct Checked {
    mode: LivyTokenMode,
    location: LivyLocation,
    tokens: Arc<dyn LivyTokens>,
    secret_name: String,
    refresh_interval: Duration,
    renew_before: Option<Duration>,
    grace_period: Duration,
}

/// Everything checked before calling Alibaba Cloud: the mode, names and durations here; the
/// endpoint (official only with RRSA), pod identity and the AccessKey by the client factory.
pub async fn validate(obj: &LivyToken, ctx: &Context) -> Result<Checked, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let spec = &obj.spec;
    let mode = spec.mode().map_err(Error::InvalidSpec)?;
    check_names(spec)?;
    let renew_before = validate::positive("spec.renewBefore", spec.renew_before.as_ref())?;
    let refresh_interval =
        validate::positive("spec.refreshInterval", spec.refresh_interval.as_ref())?
            .unwrap_or(DEFAULT_REFRESH_INTERVAL);
    let grace_period = match &spec.managed {
        Some(m) => validate::positive("spec.managed.gracePeriod", m.grace_period.as_ref())?,
        None => None,
    }
    .unwrap_or(DEFAULT_GRACE_PERIOD);
    consumers::check_template(obj)?;
    validate::rollout_targets(&spec.rollout_restart_targets)?;
    spec.credentials().map_err(Error::InvalidSpec)?;
    let tokens = ctx.clients.livy_tokens(&ns, spec).await?;
    Ok(Checked {
        mode,
        location: LivyLocation {
            compute: LivyCompute {
                region_id: spec.region_id.clone(),
                workspace_id: spec.workspace_id.clone(),
                livy_compute_id: spec.livy_compute_id.clone(),
            },
            endpoint: spec.endpoint.clone().filter(|e| !e.is_empty()),
        },
        tokens,
        secret_name: secret_name(obj, spec.secret_name.as_deref()),
        refresh_interval,
        renew_before,
        grace_period,
    })
}

/// The IDs and names of the spec, as the CRD schema checks them: they become path segments,
/// the default endpoint's host, or token names.
fn check_names(spec: &crate::api::LivyTokenSpec) -> Result<(), Error> {
    use crate::api::names;
    const ID: &str = "an EMR Serverless Spark ID (1-128 letters, digits, '_' and '-', starting \
                      with a letter or digit)";
    validate::name(
        "spec.regionId",
        &spec.region_id,
        names::is_region,
        "an Alibaba Cloud region ID such as cn-hangzhou",
    )?;
    validate::name(
        "spec.workspaceId",
        &spec.workspace_id,
        names::is_alibaba_id,
        ID,
    )?;
    validate::name(
        "spec.livyComputeId",
        &spec.livy_compute_id,
        names::is_alibaba_id,
        ID,
    )?;
    if let Some(id) = &spec.token_id {
        validate::name("spec.tokenId", id, names::is_alibaba_id, ID)?;
    }
    if let Some(m) = &spec.managed {
        validate::name(
            "spec.managed.name",
            m.name.as_deref().unwrap_or_default(),
            names::is_token_name,
            "a token name (1-64 letters, digits, '_', '.' and '-', starting with a letter or \
             digit)",
        )?;
        if !(1..=365).contains(&m.expire_days) {
            return Err(Error::InvalidSpec(format!(
                "spec.managed.expireDays must be between 1 and 365, got {}",
                m.expire_days
            )));
        }
    }
    validate::secret_name("spec.secretName", spec.secret_name.as_deref())
}

/// What the owned Secret's annotations record for `generation`.
fn recorded(state: &SecretState, generation: Option<i64>) -> Option<RecordedToken> {
    match state {
        SecretState::Owned(m) => schedule::recorded(m, generation),
        SecretState::Absent | SecretState::Unseen | SecretState::Lost(_) => None,
    }
}

/// When to renew a token: `expiresAt - renewBefore - jitter` (jitter from the UID and expiry).
fn renewal(
    obj: &LivyToken,
    plan: &Checked,
    info: &LivyTokenInfo,
    expires: Timestamp,
    now: Timestamp,
) -> Timestamp {
    let issued = info.create_time.unwrap_or(now).min(expires);
    let seed = format!("{}/{}", obj.uid().unwrap_or_default(), rfc3339(expires));
    schedule::renew_at(issued, expires, plan.renew_before, &seed)
}

/// Copies a token's facts into the status.
fn apply_info(status: &mut LivyTokenStatus, info: &LivyTokenInfo) {
    status.token_id = Some(info.token_id.clone());
    status.token_name = info.name.clone();
    status.created_by = info.created_by.clone();
    status.create_time = info.create_time;
    status.expires_at = info.expire_time;
    status.last_used_time = info.last_used_time;
}

fn secret_content(
    info: &LivyTokenInfo,
    expires_at: Timestamp,
    renew_at: Timestamp,
) -> Result<SecretContent, Error> {
    let token = info
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::Provider(ProviderError::new(
                ProviderErrorKind::InvalidResponse,
                "GetLivyComputeToken answered without the token",
            ))
        })?;
    let mut data = BTreeMap::new();
    data.insert("token".to_owned(), token);
    data.insert(
        "tokenId".to_owned(),
        SecretString::new(info.token_id.clone()),
    );
    if let Some(e) = info.expire_time {
        data.insert("expiresAt".to_owned(), SecretString::new(rfc3339(e)));
    }
    Ok(SecretContent {
        data,
        expires_at,
        renew_at,
    })
}

fn valid_until(token_id: &str, expires: Option<Timestamp>) -> String {
    match expires {
        Some(e) => format!("token {token_id} valid until {}", rfc3339(e)),
        None => format!("token {token_id} has no expiry time"),
    }
}

fn earliest(a: Timestamp, b: Option<Timestamp>) -> Timestamp {
    b.map_or(a, |b| a.min(b))
}

/// Deletes the retiring tokens whose `deleteAfter` has passed. NotFound counts as deleted.
/// Returns the IDs deleted; on a failure the other tokens are still tried and the first
/// failure is returned (the tokens stay in the list and are tried again).
async fn delete_due(
    tokens: &dyn LivyTokens,
    status: &mut LivyTokenStatus,
    now: Timestamp,
) -> Result<Vec<String>, Error> {
    let Some(ms) = status.managed.as_mut() else {
        return Ok(Vec::new());
    };
    let mut deleted = Vec::new();
    let mut failure = None;
    for r in plan::take_due(ms, now) {
        match delete_one(tokens, &r).await {
            Ok(()) => deleted.push(r.token_id.clone()),
            Err(e) => {
                failure.get_or_insert(e);
                ms.retiring.push(r);
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(deleted),
    }
}

/// Deletes one recorded token; NotFound counts as deleted.
async fn delete_one(tokens: &dyn LivyTokens, r: &ManagedTokenRef) -> Result<(), Error> {
    match tokens.delete_token(&location_of(r), &r.token_id).await {
        Ok(()) => Ok(()),
        Err(Error::Provider(e)) if e.kind == ProviderErrorKind::NotFound => Ok(()),
        Err(Error::Provider(mut e)) => {
            e.message = format!("deleting replaced token {}: {}", r.token_id, e.message);
            Err(Error::Provider(e))
        }
        Err(e) => Err(e),
    }
}

fn deleted_note(deleted: &[String]) -> Option<String> {
    (!deleted.is_empty()).then(|| format!("deleted replaced Livy token(s) {}", deleted.join(", ")))
}

#[async_trait]
impl Reconciler for LivyToken {
    const FINALIZER: Option<&'static str> = Some(FINALIZER);

    /// Managed mode creates tokens; a resource that recorded managed tokens (it was switched
    /// from managed to reference mode) still has them to delete. Reference mode alone creates
    /// nothing and needs no finalizer.
    fn needs_finalizer(&self) -> bool {
        self.spec.managed.is_some()
            || self
                .status
                .as_ref()
                .and_then(|s| s.managed.as_ref())
                .is_some_and(|m| {
                    m.current.is_some() || m.pending.is_some() || !m.retiring.is_empty()
                })
    }

    async fn sync(
        obj: Arc<Self>,
        ctx: Arc<Context>,
        checkpoint: &mut Checkpoint<Self>,
    ) -> Result<Synced<LivyTokenStatus>, Error> {
        let checked = validate(&obj, &ctx).await?;
        let secret = TokenSecret::new(ctx.clone(), obj.clone(), checked.secret_name.clone());
        let state = check_ownership(&ctx, obj.as_ref(), secret.name()).await?;
        let now = ctx.now();
        let state = secret.prepare(state, now).await?;
        let synced = match checked.mode.clone() {
            LivyTokenMode::Reference { token_id } => {
                sync_reference(&obj, &checked, &secret, &state, &token_id, now).await?
            }
            LivyTokenMode::Managed(m) => {
                sync_managed(&obj, &checked, &secret, &state, &m, now, checkpoint).await?
            }
        };
        secret.settle(synced).await
    }

    async fn preview(obj: Arc<Self>, ctx: Arc<Context>) -> Result<Preview<LivyTokenStatus>, Error> {
        let checked = validate(&obj, &ctx).await?;
        let tokens = checked.tokens.as_ref();
        let mut status = LivyTokenStatus {
            secret_name: Some(checked.secret_name.clone()),
            ..Default::default()
        };
        let message = match &checked.mode {
            LivyTokenMode::Reference { token_id } => {
                let info = tokens.get_token(&checked.location, token_id).await?;
                apply_info(&mut status, &info);
                valid_until(&info.token_id, info.expire_time)
            }
            LivyTokenMode::Managed(m) => {
                let prefix = managed_prefix(&obj, m);
                let listed = tokens.list_tokens(&checked.location).await?;
                // What a first sync of this resource would do (its status is empty).
                let ListDecision { next, .. } = plan::after_list(
                    &ManagedTokensStatus::default(),
                    &listed,
                    &prefix,
                    &checked.location,
                    ctx.now(),
                    checked.grace_period,
                );
                let what = match next {
                    NextToken::Create(name) => {
                        let what =
                            format!("create token {name} expiring after {} days", m.expire_days);
                        status.token_name = Some(name);
                        what
                    }
                    NextToken::Adopt(r) => {
                        let what = format!(
                            "adopt token {} ({}), left by an earlier create of this resource",
                            r.name, r.token_id
                        );
                        status.token_name = Some(r.name);
                        what
                    }
                };
                status.managed = Some(ManagedTokensStatus {
                    name_prefix: prefix,
                    ..Default::default()
                });
                format!(
                    "ListLivyComputeToken succeeded ({} tokens on the Livy Gateway); a sync would \
                     {what} (preview creates nothing)",
                    listed.len(),
                )
            }
        };
        Ok(Preview {
            status,
            message,
            secret_keys: consumers::secret_keys(
                obj.as_ref(),
                SECRET_KEYS.iter().map(|k| k.to_string()).collect(),
            ),
            secret_name: Some(checked.secret_name),
        })
    }

    async fn cleanup(obj: Arc<Self>, ctx: Arc<Context>) -> Result<(), Error> {
        cleanup_managed(&obj, &ctx).await
    }
}

fn managed_prefix(obj: &LivyToken, m: &ManagedLivyToken) -> String {
    name_prefix(
        &obj.namespace().unwrap_or_default(),
        &obj.name_any(),
        &obj.uid().unwrap_or_default(),
        m.name.as_deref(),
    )
}

// ---------------------------------------------------------------------------------------------
// Reference mode

async fn sync_reference(
    obj: &LivyToken,
    checked: &Checked,
    secret: &TokenSecret<LivyToken>,
    state: &SecretState,
    token_id: &str,
    now: Timestamp,
) -> Result<Synced<LivyTokenStatus>, Error> {
    let generation = obj.meta().generation;
    let current = obj.status.clone().unwrap_or_default();
    let mut status = current.clone();
    status.secret_name = Some(checked.secret_name.clone());
    let tokens = checked.tokens.as_ref();

    let record = recorded(state, generation);
    if let Some(next_read) = plan::reference_next_read(
        &current,
        record.as_ref(),
        token_id,
        generation,
        checked.refresh_interval,
        now,
    )
    .filter(|_| renew_request(obj).is_none())
    {
        // Also for a status written before it recorded the renewal time.
        status.renew_at = status.expires_at.and(record.map(|r| r.renew_at));
        let due = next_retirement(&status).is_some_and(|t| t <= now);
        let deleted = if due {
            delete_due(tokens, &mut status, now).await?
        } else {
            Vec::new()
        };
        return Ok(Synced {
            message: valid_until(token_id, status.expires_at),
            next_sync: earliest(next_read, next_retirement(&status)),
            last_sync: None,
            event: deleted_note(&deleted),
            status,
            notices: Vec::new(),
        });
    }

    let info = tokens.get_token(&checked.location, token_id).await?;
    let refresh_at = add(now, checked.refresh_interval);
    if let Some(e) = info.expire_time
        && e <= now
    {
        return Err(Error::Provider(
            ProviderError::new(
                ProviderErrorKind::InvalidRequest,
                format!(
                    "token {token_id} expired at {}; in reference mode the operator only reads \
                     the token: refresh it in EMR Serverless Spark, or use spec.managed",
                    rfc3339(e)
                ),
            )
            .with_retry_after(Some(checked.refresh_interval)),
        ));
    }
    // A token without an expiry time is re-read at the refresh interval; the annotations then
    // name that time.
    let (expires_at, renew_at) = match info.expire_time {
        Some(e) => (e, renewal(obj, checked, &info, e, now)),
        None => (refresh_at, refresh_at),
    };
    let content = secret_content(&info, expires_at, renew_at)?;
    // Server-side apply of unchanged content changes nothing at the API server.
    secret.write(state, content).await?;
    let changed =
        current.token_id.as_deref() != Some(token_id) || current.expires_at != info.expire_time;
    apply_info(&mut status, &info);
    status.renew_at = info.expire_time.map(|_| nearest_second(renew_at));

    // Tokens the operator created before the resource switched from managed to tokenId are
    // retired now that the Secret holds the referenced token.
    let mut retired = Vec::new();
    if let Some(ms) = status.managed.as_mut() {
        for mut r in ms.current.take().into_iter().chain(ms.pending.take()) {
            r.delete_after = Some(add(now, checked.grace_period));
            retired.push(r.token_id.clone());
            ms.retiring.push(r);
        }
    }
    // Retired tokens whose grace period is over go (not in a sync that just retired some: a
    // failure here would undo that record).
    let deleted = if retired.is_empty() {
        delete_due(tokens, &mut status, now).await?
    } else {
        Vec::new()
    };
    if status
        .managed
        .as_ref()
        .is_some_and(|ms| ms.retiring.is_empty())
    {
        status.managed = None;
    }
    let next_read = if now < renew_at && info.expire_time.is_some() {
        refresh_at.min(renew_at)
    } else {
        refresh_at
    };
    let event = if changed {
        Some(format!(
            "read Livy token {token_id} into Secret {}; {}",
            checked.secret_name,
            valid_until(token_id, info.expire_time)
        ))
    } else {
        deleted_note(&deleted)
    };
    Ok(Synced {
        message: valid_until(token_id, info.expire_time),
        next_sync: earliest(next_read, next_retirement(&status)),
        last_sync: Some(now),
        event,
        status,
        notices: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------------
// Managed mode

async fn sync_managed(
    obj: &LivyToken,
    checked: &Checked,
    secret: &TokenSecret<LivyToken>,
    state: &SecretState,
    m: &ManagedLivyToken,
    now: Timestamp,
    checkpoint: &mut Checkpoint<LivyToken>,
) -> Result<Synced<LivyTokenStatus>, Error> {
    let generation = obj.meta().generation;
    let start = obj.status.clone().unwrap_or_default();
    let prefix = managed_prefix(obj, m);
    let mut status = start.clone();
    status.secret_name = Some(checked.secret_name.clone());
    let mut ms = status.managed.take().unwrap_or_default();
    ms.name_prefix = prefix.clone();
    status.managed = Some(ms.clone());
    let tokens = checked.tokens.as_ref();
    let rec = recorded(state, generation);

    // A renew request gets a new token whatever the current one's renewal time.
    let step = match renew_request(obj) {
        Some(_) => Step::NewToken,
        None => plan::first_step(
            &ms,
            start.token_id.as_deref(),
            rec.as_ref(),
            &checked.location.compute,
            now,
        ),
    };
    match step {
        // Nothing due: only retired tokens whose grace period is over are deleted.
        Step::Keep(current) => {
            let due = next_retirement(&status).is_some_and(|t| t <= now);
            let deleted = if due {
                delete_due(tokens, &mut status, now).await?
            } else {
                Vec::new()
            };
            let renew_at = rec.map_or(now, |r| r.renew_at);
            // Also for a status written before it recorded the renewal time.
            status.renew_at = Some(nearest_second(renew_at));
            return Ok(Synced {
                message: valid_until(&current.token_id, status.expires_at),
                next_sync: earliest(renew_at, next_retirement(&status)),
                last_sync: (!deleted.is_empty()).then_some(now),
                event: deleted_note(&deleted),
                status,
                notices: Vec::new(),
            });
        }
        Step::Recheck(current) => {
            match tokens.get_token(&checked.location, &current.token_id).await {
                Ok(info) => {
                    if let Some(expires) = info.expire_time {
                        let renew_at = renewal(obj, checked, &info, expires, now);
                        if plan::still_serves(&info, &prefix, m, renew_at, now) {
                            let content = secret_content(&info, expires, renew_at)?;
                            secret.write(state, content).await?;
                            apply_info(&mut status, &info);
                            status.renew_at = Some(nearest_second(renew_at));
                            if let Some(c) =
                                status.managed.as_mut().and_then(|m| m.current.as_mut())
                            {
                                c.endpoint = checked.location.endpoint.clone();
                            }
                            // Nothing above needs recording mid-way, so due deletions can follow.
                            let deleted = delete_due(tokens, &mut status, now).await?;
                            return Ok(Synced {
                                message: valid_until(&info.token_id, info.expire_time),
                                next_sync: earliest(renew_at, next_retirement(&status)),
                                last_sync: Some(now),
                                event: deleted_note(&deleted),
                                status,
                                notices: Vec::new(),
                            });
                        }
                    }
                }
                Err(Error::Provider(e)) if e.kind == ProviderErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Step::NewToken => {}
    }

    // A new token: resume the pending one, adopt one a lost create left behind, or create one.
    let mut resume = ms.pending.clone();
    let (new_ref, info, created) = loop {
        let resumed = resume.is_some();
        let (new_ref, created) = match resume.take() {
            Some(p) => (p, false),
            None => {
                let listed = tokens.list_tokens(&checked.location).await?;
                let decision = plan::after_list(
                    &ms,
                    &listed,
                    &prefix,
                    &checked.location,
                    now,
                    checked.grace_period,
                );
                ms.retiring.extend(decision.retire);
                let (r, created) = match decision.next {
                    NextToken::Adopt(r) => (r, false),
                    NextToken::Create(name) => {
                        let request = TokenRequest {
                            name: name.clone(),
                            token: None,
                            auto_expire: Some(AutoExpire {
                                enable: true,
                                expire_days: m.expire_days,
                            }),
                        };
                        let id = tokens.create_token(&checked.location, &request).await?;
                        (plan::record(&checked.location, &id, &name), true)
                    }
                };
                ms.pending = Some(r.clone());
                // Record the new token at once (see the module docs).
                let mut mid = start.clone();
                mid.managed = Some(ms.clone());
                checkpoint.record(&mid).await?;
                (r, created)
            }
        };
        match tokens
            .get_token(&location_of(&new_ref), &new_ref.token_id)
            .await
        {
            Ok(info) => break (new_ref, info, created),
            // The pending token recorded by an earlier sync is gone (deleted outside): start
            // over with List and, if need be, a new token.
            Err(Error::Provider(e)) if e.kind == ProviderErrorKind::NotFound && resumed => {
                ms.pending = None;
            }
            Err(Error::Provider(e)) if e.kind == ProviderErrorKind::NotFound => {
                return Err(Error::Provider(ProviderError::new(
                    ProviderErrorKind::Unavailable,
                    format!(
                        "token {} was just created but can't be read yet; retrying",
                        new_ref.token_id
                    ),
                )));
            }
            Err(e) => return Err(e),
        }
    };
    let expires = info.expire_time.unwrap_or_else(|| {
        add(
            info.create_time.unwrap_or(now),
            Duration::from_secs(u64::try_from(m.expire_days).unwrap_or(1) * 86_400),
        )
    });
    let renew_at = renewal(obj, checked, &info, expires, now);
    let content = secret_content(&info, expires, renew_at)?;
    secret.write(state, content).await?;

    // The Secret holds the new token: it becomes current, the one it replaced retires.
    let mut note = format!(
        "{} Livy token {} ({}) into Secret {}; {}",
        if created { "created" } else { "adopted" },
        new_ref.name,
        new_ref.token_id,
        checked.secret_name,
        valid_until(&info.token_id, info.expire_time)
    );
    if let Some(old) = plan::rotate(&mut ms, new_ref, now, checked.grace_period) {
        note.push_str(&format!(
            "; replaced token {} is deleted after {}",
            old.token_id,
            rfc3339(old.delete_after.unwrap_or(now))
        ));
    }
    status.managed = Some(ms);
    apply_info(&mut status, &info);
    status.renew_at = Some(nearest_second(renew_at));
    Ok(Synced {
        message: valid_until(&info.token_id, info.expire_time),
        next_sync: earliest(renew_at, next_retirement(&status)),
        last_sync: Some(now),
        event: Some(note),
        status,
        notices: Vec::new(),
    })
}

/// The finalizer's work: deletes every token the resource created. Tokens recorded in status
/// are deleted wherever they live; in managed mode the Livy Gateway's tokens are also listed, so
/// that one created just before a crash is not left behind.
async fn cleanup_managed(obj: &LivyToken, ctx: &Context) -> Result<(), Error> {
    let recorded: Vec<ManagedTokenRef> = obj
        .status
        .as_ref()
        .and_then(|s| s.managed.as_ref())
        .map(|ms| {
            ms.current
                .iter()
                .chain(ms.pending.iter())
                .chain(ms.retiring.iter())
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let managed_spec = obj.spec.managed.as_ref();
    if recorded.is_empty() && managed_spec.is_none() {
        // Reference mode: the operator created nothing.
        return Ok(());
    }
    let checked = validate(obj, ctx).await?;
    let tokens = checked.tokens.as_ref();
    let mut recorded = recorded;
    if let Some(m) = managed_spec {
        let mut prefixes = vec![managed_prefix(obj, m)];
        if let Some(p) = obj
            .status
            .as_ref()
            .and_then(|s| s.managed.as_ref())
            .map(|ms| ms.name_prefix.clone())
            .filter(|p| !p.is_empty() && !prefixes.contains(p))
        {
            prefixes.push(p);
        }
        for t in tokens.list_tokens(&checked.location).await? {
            let name = t.name.clone().unwrap_or_default();
            if prefixes.iter().any(|p| rotation_of(p, &name).is_some())
                && !recorded.iter().any(|r| r.token_id == t.token_id)
            {
                recorded.push(plan::record(&checked.location, &t.token_id, &name));
            }
        }
    }
    let mut failure = None;
    for r in &recorded {
        if let Err(e) = delete_one(tokens, r).await {
            failure.get_or_insert(e);
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_prefixes_are_deterministic_and_distinct() {
        let a = name_prefix("team-b", "spark-livy", "uid-1", None);
        assert_eq!(a, name_prefix("team-b", "spark-livy", "uid-1", None));
        assert!(a.starts_with("wao-spark-livy-"), "{a}");
        assert_eq!(a.len(), "wao-spark-livy-".len() + 9);
        assert_ne!(a, name_prefix("team-b", "spark-livy", "uid-2", None));
        assert_ne!(a, name_prefix("team-c", "spark-livy", "uid-1", None));
        let named = name_prefix("team-b", "spark-livy", "uid-1", Some("etl-jobs"));
        assert!(named.starts_with("etl-jobs-"), "{named}");
        let long = name_prefix("n", &"x".repeat(253), "u", Some(&"y".repeat(64)));
        assert!(long.len() <= MAX_NAME_BASE + 10, "{long}");
        let pattern = regex::Regex::new(crate::api::livy_token::TOKEN_NAME_PATTERN).unwrap();
        assert!(pattern.is_match(&format!("{a}12")));
    }
}
