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
//! - A failure after the `pending` write makes the driver write back the status the sync
//!   started from; the next sync then finds the token again through the List above. Every step
//!   is safe to repeat: nothing is created twice and nothing is deleted while the Secret holds it.
//! - The finalizer `workspaceaccess.io/livy-token` deletes every token the resource created
//!   (recorded ones, and any with its name prefix that List shows); NotFound counts as deleted,
//!   other failures keep the finalizer and are reported.
//!
//! **No provider call** when nothing is due: the Secret's annotations (written for this
//! generation; `expires-at`, `renew-at`) and the status say whether a token is still good,
//! also right after a restart.
//!
//! **Preview** never leaves anything behind: reference mode reads the token; managed mode lists
//! the Livy Gateway's tokens (proving the credentials, the signature and access) and reports the
//! name of the token a sync would create, without creating it.

use crate::api::LivyToken;
use crate::api::common::{
    AlibabaCredentialSource, EXPIRES_AT_ANNOTATION, GENERATION_ANNOTATION, RENEW_AT_ANNOTATION,
};
use crate::api::livy_token::{
    LivyTokenMode, LivyTokenStatus, ManagedLivyToken, ManagedTokenRef, ManagedTokensStatus,
};
use crate::controller::credentials::read_key;
use crate::controller::error::Error;
use crate::controller::schedule;
use crate::controller::secret::{
    SecretContent, SecretState, apply_secret, check_ownership, rfc3339, secret_name,
};
use crate::controller::status::{READY, record_progress};
use crate::controller::{Context, Preview, Reconciler, Synced, validate};
use crate::providers::auth::acs3::AcsCredentials;
use crate::providers::auth::sts::RrsaError;
use crate::providers::emr_spark::{
    self, AutoExpire, EmrSparkClient, LivyCompute, LivyTokenInfo, TokenRequest,
};
use crate::providers::endpoint::{EndpointPolicy, Service};
use crate::providers::error::{ProviderError, ProviderErrorKind};
use crate::redact::SecretString;
use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use url::Url;

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

/// The rotation number of a token named `<prefix><n>`.
fn rotation_of(prefix: &str, name: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.parse().ok()
}

/// Where a token lives: the Livy Gateway and the endpoint that reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Location {
    compute: LivyCompute,
    /// `spec.endpoint` (None: the region's default).
    endpoint: Option<String>,
}

impl Location {
    fn of_record(r: &ManagedTokenRef) -> Self {
        Self {
            compute: LivyCompute {
                region_id: r.region_id.clone(),
                workspace_id: r.workspace_id.clone(),
                livy_compute_id: r.livy_compute_id.clone(),
            },
            endpoint: r.endpoint.clone(),
        }
    }

    fn record(&self, token_id: &str, name: &str) -> ManagedTokenRef {
        ManagedTokenRef {
            token_id: token_id.to_owned(),
            name: name.to_owned(),
            region_id: self.compute.region_id.clone(),
            workspace_id: self.compute.workspace_id.clone(),
            livy_compute_id: self.compute.livy_compute_id.clone(),
            endpoint: self.endpoint.clone(),
            delete_after: None,
        }
    }
}

/// Where the signing credentials come from, once validated.
#[derive(Clone, Debug)]
enum CredentialPlan {
    /// An AccessKey read from the resource's namespace.
    AccessKey(AcsCredentials),
    /// The operator pod's RRSA identity (fetched when first needed).
    Rrsa,
}

/// A validated spec.
#[derive(Clone, Debug)]
pub struct Plan {
    mode: LivyTokenMode,
    location: Location,
    credentials: CredentialPlan,
    secret_name: String,
    refresh_interval: Duration,
    renew_before: Option<Duration>,
    grace_period: Duration,
}

/// Everything checked before calling Alibaba Cloud: the mode, durations, the endpoint (official
/// only with RRSA), pod identity, and the AccessKey read from the namespace.
pub async fn validate(obj: &LivyToken, ctx: &Context) -> Result<Plan, Error> {
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
    let endpoint = spec.endpoint.clone().filter(|e| !e.is_empty());
    let url = validate::endpoint(
        ctx,
        Service::EmrServerlessSpark,
        "spec.endpoint",
        endpoint.as_deref(),
        &default_endpoint(&spec.region_id),
    )?;
    let credentials = match validate::alibaba(ctx, &ns, &spec.alibaba)? {
        AlibabaCredentialSource::Rrsa => {
            pod_identity_endpoint(&url)?;
            CredentialPlan::Rrsa
        }
        AlibabaCredentialSource::AccessKey(r) => {
            let key = |k: &str| crate::api::SecretKeyRef {
                name: r.name.clone(),
                key: k.to_owned(),
            };
            let source = ctx.secrets.as_ref();
            let id = read_key(source, &ns, &key(&r.access_key_id_key)).await?;
            let secret = read_key(source, &ns, &key(&r.access_key_secret_key)).await?;
            let token = match r.security_token_key() {
                Some(k) => Some(read_key(source, &ns, &key(k)).await?.value),
                None => None,
            };
            CredentialPlan::AccessKey(AcsCredentials {
                access_key_id: id.value.expose().to_owned(),
                access_key_secret: secret.value,
                security_token: token,
            })
        }
    };
    Ok(Plan {
        mode,
        location: Location {
            compute: LivyCompute {
                region_id: spec.region_id.clone(),
                workspace_id: spec.workspace_id.clone(),
                livy_compute_id: spec.livy_compute_id.clone(),
            },
            endpoint,
        },
        credentials,
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

/// The operator pod's own credentials go to official EMR Serverless Spark hosts only.
fn pod_identity_endpoint(url: &Url) -> Result<(), Error> {
    EndpointPolicy::require_official(Service::EmrServerlessSpark, url)?;
    Ok(())
}

/// Provider access for one sync: the credentials, resolved once, and clients per location.
struct Session<'a> {
    ctx: &'a Context,
    rrsa: bool,
    credentials: AcsCredentials,
}

impl<'a> Session<'a> {
    async fn open(ctx: &'a Context, plan: &Plan) -> Result<Self, Error> {
        let (rrsa, credentials) = match &plan.credentials {
            CredentialPlan::AccessKey(c) => (false, c.clone()),
            CredentialPlan::Rrsa => {
                let c = ctx
                    .alibaba_rrsa
                    .credentials(&ctx.http, Timestamp::now())
                    .await
                    .map_err(|e| match e {
                        RrsaError::NotConfigured(m) => Error::CredentialsNotFound(m),
                        RrsaError::Provider(p) => Error::Provider(p),
                    })?;
                (true, c)
            }
        };
        Ok(Self {
            ctx,
            rrsa,
            credentials,
        })
    }

    /// A client for the endpoint of `location`, checked against the endpoint policy now (the
    /// policy may have changed since a token was recorded).
    fn client(&self, location: &Location) -> Result<EmrSparkClient, Error> {
        let url = validate::endpoint(
            self.ctx,
            Service::EmrServerlessSpark,
            "endpoint",
            location.endpoint.as_deref(),
            &default_endpoint(&location.compute.region_id),
        )?;
        if self.rrsa {
            pod_identity_endpoint(&url)?;
        }
        Ok(EmrSparkClient::new(
            self.ctx.http.clone(),
            url,
            self.credentials.clone(),
        ))
    }
}

/// The Ready condition is True for the current generation.
fn ready_for_generation(status: &LivyTokenStatus, generation: Option<i64>) -> bool {
    status
        .common
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True" && c.observed_generation == generation)
}

/// The Secret's annotations, if it was written for `generation`.
struct Recorded {
    expires_at: Option<Timestamp>,
    renew_at: Timestamp,
}

fn recorded(meta: &ObjectMeta, generation: Option<i64>) -> Option<Recorded> {
    let ann = meta.annotations.as_ref()?;
    let g: i64 = ann.get(GENERATION_ANNOTATION)?.parse().ok()?;
    if Some(g) != generation {
        return None;
    }
    let expires_at = ann.get(EXPIRES_AT_ANNOTATION).and_then(|v| v.parse().ok());
    let renew_at = ann.get(RENEW_AT_ANNOTATION)?.parse().ok()?;
    Some(Recorded {
        expires_at,
        renew_at,
    })
}

fn owned_meta(state: &SecretState) -> Option<&ObjectMeta> {
    match state {
        SecretState::Owned(m) => Some(m),
        SecretState::Absent => None,
    }
}

/// When to renew a token: `expiresAt - renewBefore - jitter` (jitter from the UID and expiry).
fn renewal(
    obj: &LivyToken,
    plan: &Plan,
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

/// Earliest `deleteAfter` among retiring tokens.
fn next_retirement(status: &LivyTokenStatus) -> Option<Timestamp> {
    status
        .managed
        .as_ref()?
        .retiring
        .iter()
        .filter_map(|r| r.delete_after)
        .min()
}

fn earliest(a: Timestamp, b: Option<Timestamp>) -> Timestamp {
    b.map_or(a, |b| a.min(b))
}

/// Deletes the retiring tokens whose `deleteAfter` has passed. NotFound counts as deleted.
/// Returns the IDs deleted; on a failure the other tokens are still tried and the first
/// failure is returned (the tokens stay in the list and are tried again).
async fn delete_due(
    session: &Session<'_>,
    status: &mut LivyTokenStatus,
    now: Timestamp,
) -> Result<Vec<String>, Error> {
    let Some(ms) = status.managed.as_mut() else {
        return Ok(Vec::new());
    };
    let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut ms.retiring)
        .into_iter()
        .partition(|r| r.delete_after.is_some_and(|t| t <= now));
    ms.retiring = keep;
    let mut deleted = Vec::new();
    let mut failure = None;
    for r in due {
        match delete_one(session, &r).await {
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
async fn delete_one(session: &Session<'_>, r: &ManagedTokenRef) -> Result<(), Error> {
    let location = Location::of_record(r);
    let client = session.client(&location)?;
    match client.delete_token(&location.compute, &r.token_id).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind == ProviderErrorKind::NotFound => Ok(()),
        Err(mut e) => {
            e.message = format!("deleting replaced token {}: {}", r.token_id, e.message);
            Err(Error::Provider(e))
        }
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

    async fn sync(obj: Arc<Self>, ctx: Arc<Context>) -> Result<Synced<LivyTokenStatus>, Error> {
        let plan = validate(&obj, &ctx).await?;
        let state = check_ownership(&ctx, obj.as_ref(), &plan.secret_name).await?;
        let now = ctx.now();
        match plan.mode.clone() {
            LivyTokenMode::Reference { token_id } => {
                sync_reference(&obj, &ctx, &plan, &state, &token_id, now).await
            }
            LivyTokenMode::Managed(m) => sync_managed(&obj, &ctx, &plan, &state, &m, now).await,
        }
    }

    async fn preview(obj: Arc<Self>, ctx: Arc<Context>) -> Result<Preview<LivyTokenStatus>, Error> {
        let plan = validate(&obj, &ctx).await?;
        let session = Session::open(&ctx, &plan).await?;
        let client = session.client(&plan.location)?;
        let mut status = LivyTokenStatus {
            secret_name: Some(plan.secret_name.clone()),
            ..Default::default()
        };
        let message = match &plan.mode {
            LivyTokenMode::Reference { token_id } => {
                let info = client.get_token(&plan.location.compute, token_id).await?;
                apply_info(&mut status, &info);
                valid_until(&info.token_id, info.expire_time)
            }
            LivyTokenMode::Managed(m) => {
                let prefix = managed_prefix(&obj, m);
                let listed = client.list_tokens(&plan.location.compute).await?;
                let next = listed
                    .iter()
                    .filter_map(|t| rotation_of(&prefix, t.name.as_deref()?))
                    .max()
                    .unwrap_or(0)
                    + 1;
                let name = format!("{prefix}{next}");
                status.token_name = Some(name.clone());
                status.managed = Some(ManagedTokensStatus {
                    name_prefix: prefix,
                    ..Default::default()
                });
                format!(
                    "ListLivyComputeToken succeeded ({} tokens on the Livy Gateway); a sync would \
                     create token {name} expiring after {} days (preview creates nothing)",
                    listed.len(),
                    m.expire_days
                )
            }
        };
        Ok(Preview {
            status,
            message,
            secret_name: Some(plan.secret_name),
            secret_keys: SECRET_KEYS.iter().map(|k| k.to_string()).collect(),
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
    ctx: &Context,
    plan: &Plan,
    state: &SecretState,
    token_id: &str,
    now: Timestamp,
) -> Result<Synced<LivyTokenStatus>, Error> {
    let generation = obj.meta().generation;
    let current = obj.status.clone().unwrap_or_default();
    let mut status = current.clone();
    status.secret_name = Some(plan.secret_name.clone());

    // Nothing due: the Secret holds this token for this generation, the last read was good,
    // and neither the refresh interval nor the renewal time has come.
    if let Some(rec) = owned_meta(state).and_then(|m| recorded(m, generation))
        && current.token_id.as_deref() == Some(token_id)
        && ready_for_generation(&current, generation)
        && let Some(last) = current.common.last_sync_time
    {
        let refresh_at = schedule::add(last, plan.refresh_interval);
        let next_read = if last < rec.renew_at {
            refresh_at.min(rec.renew_at)
        } else {
            refresh_at
        };
        if now < next_read && rec.expires_at.is_none_or(|e| now < e) {
            let due = next_retirement(&status).is_some_and(|t| t <= now);
            let deleted = if due {
                let session = Session::open(ctx, plan).await?;
                delete_due(&session, &mut status, now).await?
            } else {
                Vec::new()
            };
            return Ok(Synced {
                message: valid_until(token_id, status.expires_at),
                next_sync: earliest(next_read, next_retirement(&status)),
                last_sync: None,
                event: deleted_note(&deleted),
                status,
            });
        }
    }

    let session = Session::open(ctx, plan).await?;
    let client = session.client(&plan.location)?;
    let info = client.get_token(&plan.location.compute, token_id).await?;
    let refresh_at = schedule::add(now, plan.refresh_interval);
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
            .with_retry_after(Some(plan.refresh_interval)),
        ));
    }
    // A token without an expiry time is re-read at the refresh interval; the annotations then
    // name that time.
    let (expires_at, renew_at) = match info.expire_time {
        Some(e) => (e, renewal(obj, plan, &info, e, now)),
        None => (refresh_at, refresh_at),
    };
    let content = secret_content(&info, expires_at, renew_at)?;
    // Server-side apply of unchanged content changes nothing at the API server.
    apply_secret(
        ctx,
        obj,
        &plan.secret_name,
        &content,
        obj.spec.secret_template.as_ref(),
    )
    .await?;
    let changed =
        current.token_id.as_deref() != Some(token_id) || current.expires_at != info.expire_time;
    apply_info(&mut status, &info);

    // Tokens the operator created before the resource switched from managed to tokenId are
    // retired now that the Secret holds the referenced token.
    let mut retired = Vec::new();
    if let Some(ms) = status.managed.as_mut() {
        for mut r in ms.current.take().into_iter().chain(ms.pending.take()) {
            r.delete_after = Some(schedule::add(now, plan.grace_period));
            retired.push(r.token_id.clone());
            ms.retiring.push(r);
        }
    }
    // Retired tokens whose grace period is over go (not in a sync that just retired some: a
    // failure here would undo that record).
    let deleted = if retired.is_empty() {
        delete_due(&session, &mut status, now).await?
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
            plan.secret_name,
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
    })
}

// ---------------------------------------------------------------------------------------------
// Managed mode

/// Whether the current token can stay in the Secret for this spec.
fn still_serves(
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

async fn sync_managed(
    obj: &LivyToken,
    ctx: &Context,
    plan: &Plan,
    state: &SecretState,
    m: &ManagedLivyToken,
    now: Timestamp,
) -> Result<Synced<LivyTokenStatus>, Error> {
    let generation = obj.meta().generation;
    let start = obj.status.clone().unwrap_or_default();
    let prefix = managed_prefix(obj, m);
    let mut status = start.clone();
    status.secret_name = Some(plan.secret_name.clone());
    let mut ms = status.managed.take().unwrap_or_default();
    ms.name_prefix = prefix.clone();
    status.managed = Some(ms.clone());

    let rec = owned_meta(state).and_then(|meta| recorded(meta, generation));
    let current_here = ms
        .current
        .as_ref()
        // The same Livy Gateway; a new endpoint (e.g. the VPC one) reaches the same tokens.
        .filter(|c| Location::of_record(c).compute == plan.location.compute)
        .filter(|c| start.token_id.as_deref() == Some(c.token_id.as_str()))
        .cloned();

    // Nothing due: the Secret holds the current token for this generation and its renewal time
    // has not come. Only retired tokens whose grace period is over are deleted.
    if ms.pending.is_none()
        && let (Some(cur), Some(rec)) = (&current_here, &rec)
        && now < rec.renew_at
        && rec.expires_at.is_some_and(|e| now < e)
    {
        let due = next_retirement(&status).is_some_and(|t| t <= now);
        let deleted = if due {
            let session = Session::open(ctx, plan).await?;
            delete_due(&session, &mut status, now).await?
        } else {
            Vec::new()
        };
        return Ok(Synced {
            message: valid_until(&cur.token_id, status.expires_at),
            next_sync: earliest(rec.renew_at, next_retirement(&status)),
            last_sync: (!deleted.is_empty()).then_some(now),
            event: deleted_note(&deleted),
            status,
        });
    }

    let session = Session::open(ctx, plan).await?;

    // The current token may still serve (a spec change that doesn't affect the token, or a
    // deleted Secret): write it to the Secret again, no rotation.
    let renewal_due = rec.as_ref().is_some_and(|r| now >= r.renew_at);
    if ms.pending.is_none()
        && !renewal_due
        && let Some(cur) = &current_here
    {
        let client = session.client(&plan.location)?;
        match client
            .get_token(&plan.location.compute, &cur.token_id)
            .await
        {
            Ok(info) => {
                if let Some(expires) = info.expire_time {
                    let renew_at = renewal(obj, plan, &info, expires, now);
                    if still_serves(&info, &prefix, m, renew_at, now) {
                        let content = secret_content(&info, expires, renew_at)?;
                        apply_secret(
                            ctx,
                            obj,
                            &plan.secret_name,
                            &content,
                            obj.spec.secret_template.as_ref(),
                        )
                        .await?;
                        apply_info(&mut status, &info);
                        if let Some(c) = status.managed.as_mut().and_then(|m| m.current.as_mut()) {
                            c.endpoint = plan.location.endpoint.clone();
                        }
                        // Nothing above needs recording mid-way, so due deletions can follow.
                        let deleted = delete_due(&session, &mut status, now).await?;
                        return Ok(Synced {
                            message: valid_until(&info.token_id, info.expire_time),
                            next_sync: earliest(renew_at, next_retirement(&status)),
                            last_sync: Some(now),
                            event: deleted_note(&deleted),
                            status,
                        });
                    }
                }
            }
            Err(e) if e.kind == ProviderErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }

    // A new token: resume the pending one, adopt one a lost create left behind, or create one.
    let mut resume = ms.pending.clone();
    let (new_ref, info, created) = loop {
        let resumed = resume.is_some();
        let (new_ref, created) = match resume.take() {
            Some(p) => (p, false),
            None => {
                let (r, created) =
                    adopt_or_create(&session, plan, m, &prefix, &mut ms, now).await?;
                ms.pending = Some(r.clone());
                // Record the new token at once (see the module docs).
                let mut mid = start.clone();
                mid.managed = Some(ms.clone());
                record_progress(ctx, obj, &mid).await?;
                (r, created)
            }
        };
        let location = Location::of_record(&new_ref);
        let client = session.client(&location)?;
        match client.get_token(&location.compute, &new_ref.token_id).await {
            Ok(info) => break (new_ref, info, created),
            // The pending token recorded by an earlier sync is gone (deleted outside): start
            // over with List and, if need be, a new token.
            Err(e) if e.kind == ProviderErrorKind::NotFound && resumed => {
                ms.pending = None;
            }
            Err(e) if e.kind == ProviderErrorKind::NotFound => {
                return Err(Error::Provider(ProviderError::new(
                    ProviderErrorKind::Unavailable,
                    format!(
                        "token {} was just created but can't be read yet; retrying",
                        new_ref.token_id
                    ),
                )));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let expires = info.expire_time.unwrap_or_else(|| {
        schedule::add(
            info.create_time.unwrap_or(now),
            Duration::from_secs(u64::try_from(m.expire_days).unwrap_or(1) * 86_400),
        )
    });
    let renew_at = renewal(obj, plan, &info, expires, now);
    let content = secret_content(&info, expires, renew_at)?;
    apply_secret(
        ctx,
        obj,
        &plan.secret_name,
        &content,
        obj.spec.secret_template.as_ref(),
    )
    .await?;

    // The Secret holds the new token: it becomes current, the one it replaced retires.
    let replaced = ms.current.take();
    let mut note = format!(
        "{} Livy token {} ({}) into Secret {}; {}",
        if created { "created" } else { "adopted" },
        new_ref.name,
        new_ref.token_id,
        plan.secret_name,
        valid_until(&info.token_id, info.expire_time)
    );
    if let Some(mut old) = replaced.filter(|o| o.token_id != new_ref.token_id) {
        old.delete_after = Some(schedule::add(now, plan.grace_period));
        note.push_str(&format!(
            "; replaced token {} is deleted after {}",
            old.token_id,
            rfc3339(old.delete_after.unwrap_or(now))
        ));
        ms.retiring.push(old);
    }
    ms.retiring.retain(|r| r.token_id != new_ref.token_id);
    ms.current = Some(new_ref);
    ms.pending = None;
    status.managed = Some(ms);
    apply_info(&mut status, &info);
    Ok(Synced {
        message: valid_until(&info.token_id, info.expire_time),
        next_sync: earliest(renew_at, next_retirement(&status)),
        last_sync: Some(now),
        event: Some(note),
        status,
    })
}

/// Lists the Livy Gateway's tokens: adopts the newest unknown token of this resource (a create
/// whose result was lost), retires the other unknown ones, or creates `<prefix><n+1>`.
/// Returns the token and whether it was created now.
async fn adopt_or_create(
    session: &Session<'_>,
    plan: &Plan,
    m: &ManagedLivyToken,
    prefix: &str,
    ms: &mut ManagedTokensStatus,
    now: Timestamp,
) -> Result<(ManagedTokenRef, bool), Error> {
    let location = &plan.location;
    let client = session.client(location)?;
    let listed = client.list_tokens(&location.compute).await?;
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
        .copied();
    let delete_after = schedule::add(now, plan.grace_period);
    for (_, t) in &unknown {
        if adopt.is_some_and(|(_, a)| a.token_id == t.token_id) {
            continue;
        }
        let mut r = location.record(&t.token_id, t.name.as_deref().unwrap_or_default());
        r.delete_after = Some(delete_after);
        ms.retiring.push(r);
    }
    if let Some((_, t)) = adopt {
        let name = t.name.clone().unwrap_or_default();
        return Ok((location.record(&t.token_id, &name), false));
    }
    let n = ours.last().map(|(n, _)| *n).unwrap_or(0).max(recorded_max) + 1;
    let name = format!("{prefix}{n}");
    let token_id = client
        .create_token(
            &location.compute,
            &TokenRequest {
                name: name.clone(),
                token: None,
                auto_expire: Some(AutoExpire {
                    enable: true,
                    expire_days: m.expire_days,
                }),
            },
        )
        .await?;
    Ok((location.record(&token_id, &name), true))
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
    let plan = validate(obj, ctx).await?;
    let session = Session::open(ctx, &plan).await?;
    let mut tokens = recorded;
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
        let client = session.client(&plan.location)?;
        for t in client.list_tokens(&plan.location.compute).await? {
            let name = t.name.clone().unwrap_or_default();
            if prefixes.iter().any(|p| rotation_of(p, &name).is_some())
                && !tokens.iter().any(|r| r.token_id == t.token_id)
            {
                tokens.push(plan.location.record(&t.token_id, &name));
            }
        }
    }
    let mut failure = None;
    for r in &tokens {
        if let Err(e) = delete_one(&session, r).await {
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

    fn info(name: &str, expire_days: i32) -> LivyTokenInfo {
        LivyTokenInfo {
            token_id: "lctk-1".into(),
            name: Some(name.into()),
            token: Some(SecretString::new("t")),
            created_by: None,
            create_time: Some("2026-11-23T10:00:00Z".parse().unwrap()),
            expire_time: Some("2026-11-30T10:00:00Z".parse().unwrap()),
            last_used_time: None,
            auto_expire: Some(AutoExpire {
                enable: true,
                expire_days,
            }),
        }
    }

    #[test]
    fn the_current_token_serves_until_renewal_or_a_relevant_spec_change() {
        let m = ManagedLivyToken {
            name: None,
            expire_days: 7,
            grace_period: None,
        };
        let p = "wao-x-1a2b3c4d-";
        let renew: Timestamp = "2026-11-29T17:00:00Z".parse().unwrap();
        let now: Timestamp = "2026-11-25T00:00:00Z".parse().unwrap();
        assert!(still_serves(
            &info("wao-x-1a2b3c4d-3", 7),
            p,
            &m,
            renew,
            now
        ));
        assert!(
            !still_serves(&info("wao-x-1a2b3c4d-3", 3), p, &m, renew, now),
            "expireDays changed"
        );
        assert!(
            !still_serves(&info("other-name-3", 7), p, &m, renew, now),
            "name changed"
        );
        assert!(
            !still_serves(&info("wao-x-1a2b3c4d-3", 7), p, &m, renew, renew),
            "renewal due"
        );
    }

    #[test]
    fn secret_annotations_count_only_for_this_generation() {
        let meta = ObjectMeta {
            annotations: Some(
                [
                    (GENERATION_ANNOTATION.to_string(), "2".to_string()),
                    (
                        EXPIRES_AT_ANNOTATION.to_string(),
                        "2026-11-30T10:00:00Z".to_string(),
                    ),
                    (
                        RENEW_AT_ANNOTATION.to_string(),
                        "2026-11-29T17:00:00Z".to_string(),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let r = recorded(&meta, Some(2)).unwrap();
        assert_eq!(
            r.renew_at,
            "2026-11-29T17:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(r.expires_at, Some("2026-11-30T10:00:00Z".parse().unwrap()));
        assert!(recorded(&meta, Some(3)).is_none());
        assert!(recorded(&ObjectMeta::default(), Some(2)).is_none());
    }

    #[test]
    fn rotation_numbers_parse_only_our_names() {
        let p = "wao-x-1a2b3c4d-";
        assert_eq!(rotation_of(p, "wao-x-1a2b3c4d-7"), Some(7));
        assert_eq!(rotation_of(p, "wao-x-1a2b3c4d-"), None);
        assert_eq!(rotation_of(p, "wao-x-1a2b3c4d-7b"), None);
        assert_eq!(rotation_of(p, "wao-x-ffffffff-7"), None);
    }
}
