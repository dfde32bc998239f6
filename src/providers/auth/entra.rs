//! Microsoft Entra ID access tokens: the OAuth 2.0 client-credentials grant
//! (`POST {authority}/{tenant}/oauth2/v2.0/token`) with a client secret or with the operator
//! pod's Azure workload identity (a federated client assertion).
//!
//! [`EntraTokens`] is one cache shared by every resource and kind: a token is fetched once per
//! (authority, tenant, client, scope, credential version) and reused until shortly before it
//! expires; concurrent requests for the same token wait for one Entra call. Callers pass the
//! scope, e.g. `https://management.azure.com/.default` for Azure Resource Manager or
//! `https://api.fabric.microsoft.com/.default` for Microsoft Fabric.
//!
//! Workload identity: the client assertion is the file named by `AZURE_FEDERATED_TOKEN_FILE`,
//! read again for every Entra call (the kubelet rotates it), and it is sent only to official
//! Entra hosts: an `authorityHost` override or `--allow-endpoint` can't redirect the operator's
//! own identity.
//!
//! Errors: Entra's error body (`error`, `error_description`, `error_codes`, `trace_id`) becomes a
//! [`ProviderError`] naming the AADSTS code, with `trace_id` as the request id. Messages never
//! contain the client secret or the assertion (they are scrubbed even if Entra echoed them).

use crate::providers::endpoint::{EndpointPolicy, Service, origin_of};
use crate::providers::error::{ProviderError, ProviderErrorKind, clip, scrub};
use crate::providers::http::{Call, HttpClient, ProviderResponse};
use crate::providers::lenient::opt_seconds;
use crate::providers::ratelimit::RateKey;
use crate::providers::segment;
use crate::redact::SecretString;
use crate::time::{add, sub};
use futures::future::{BoxFuture, FutureExt, Shared};
use jiff::Timestamp;
use serde::Deserialize;
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::{debug, warn};
use url::Url;

/// Environment variable naming the projected service-account token of Azure workload identity.
pub const FEDERATED_TOKEN_FILE_ENV: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// `client_assertion_type` of a JWT client assertion (workload identity federation).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A cached token is replaced this long before it expires (at most; a short-lived token is
/// replaced at half its lifetime), so that it is still valid when the provider checks it.
pub const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Lifetime assumed when Entra's answer has no usable `expires_in`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// When fetching a replacement fails, a cached token that is still valid for at least this
/// long is used instead of failing.
pub const MIN_REMAINING_ON_FAILURE: Duration = Duration::from_secs(60);

const CALL: Call = Call {
    provider: "entra",
    operation: "token",
};

/// How the operator proves its identity to Entra.
#[derive(Clone, Debug)]
pub enum EntraCredential {
    /// A service principal's client secret, with a version that changes whenever the value
    /// does (e.g. a hash prefix of it), so that a rotated secret gets a new token.
    ClientSecret {
        /// The client secret.
        secret: SecretString,
        /// Content version of the secret (not secret itself).
        version: String,
    },
    /// The operator pod's Azure workload identity: a client assertion read from
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    WorkloadIdentity,
}

impl EntraCredential {
    /// The part of the cache key that identifies the credential.
    fn cache_version(&self) -> String {
        match self {
            EntraCredential::ClientSecret { version, .. } => format!("secret:{version}"),
            EntraCredential::WorkloadIdentity => "workload-identity".into(),
        }
    }
}

/// What token to get: from which authority and tenant, for which client, with which
/// credential, for which resource (`scope`, e.g. `https://management.azure.com/.default`).
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// Entra authority host, e.g. `https://login.microsoftonline.com` (checked by the caller
    /// against the endpoint policy).
    pub authority: Url,
    /// Tenant ID or verified domain.
    pub tenant: String,
    /// Application (client) ID.
    pub client_id: String,
    /// Client secret or workload identity.
    pub credential: EntraCredential,
    /// The `.default` scope of the resource the token is for.
    pub scope: String,
}

/// An Entra access token.
#[derive(Clone, Debug)]
pub struct AccessToken {
    /// The bearer token.
    pub token: SecretString,
    /// When Entra says it expires.
    pub expires_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    authority: String,
    tenant: String,
    client_id: String,
    scope: String,
    credential: String,
}

impl CacheKey {
    fn of(req: &TokenRequest) -> Self {
        Self {
            authority: req
                .authority
                .as_str()
                .trim_end_matches('/')
                .to_ascii_lowercase(),
            tenant: req.tenant.to_ascii_lowercase(),
            client_id: req.client_id.to_ascii_lowercase(),
            scope: req.scope.clone(),
            credential: req.credential.cache_version(),
        }
    }
}

#[derive(Clone, Debug)]
struct Cached {
    token: AccessToken,
    refresh_at: Timestamp,
}

type Fetch = Shared<BoxFuture<'static, Result<Cached, ProviderError>>>;

#[derive(Default)]
struct Slot {
    cached: Option<Cached>,
    inflight: Option<Fetch>,
}

type Slots = Arc<Mutex<HashMap<CacheKey, Slot>>>;

/// Reads an environment variable (replaceable in tests).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<OsString> + Send + Sync>;

/// The operator's cache of Entra access tokens. Hold one in the controller context and ask
/// it for every token.
pub struct EntraTokens {
    http: HttpClient,
    env: EnvLookup,
    pod_identity_host: fn(&Url) -> bool,
    slots: Slots,
}

impl EntraTokens {
    /// A cache that calls Entra through `http` and reads the process environment.
    pub fn new(http: HttpClient) -> Self {
        Self {
            http,
            env: Arc::new(|name| std::env::var_os(name)),
            pod_identity_host: |url| EndpointPolicy::is_official(Service::EntraId, url),
            slots: Arc::default(),
        }
    }

    /// Replaces the environment lookup (tests point `AZURE_FEDERATED_TOKEN_FILE` elsewhere).
    pub fn with_env(mut self, env: EnvLookup) -> Self {
        self.env = env;
        self
    }

    /// Tests only: send workload-identity assertions to any host (a loopback mock).
    #[cfg(test)]
    fn trusting_any_host_for_pod_identity(mut self) -> Self {
        self.pod_identity_host = |_| true;
        self
    }

    /// An access token for `req`: the cached one while it is fresh at `now`, else a new one
    /// from Entra. Concurrent callers asking for the same token share one Entra call. If
    /// that call fails while the cached token is still valid for a while, the cached token
    /// is returned.
    pub async fn token(
        &self,
        req: &TokenRequest,
        now: Timestamp,
    ) -> Result<AccessToken, ProviderError> {
        let key = CacheKey::of(req);
        let fetch = {
            let mut slots = lock(&self.slots);
            let slot = slots.entry(key.clone()).or_default();
            if let Some(c) = &slot.cached
                && now < c.refresh_at
            {
                return Ok(c.token.clone());
            }
            match &slot.inflight {
                Some(f) => f.clone(),
                None => {
                    let f = self.start_fetch(key.clone(), req.clone(), now);
                    slot.inflight = Some(f.clone());
                    f
                }
            }
        };
        match fetch.await {
            Ok(c) => Ok(c.token),
            Err(e) => {
                let slots = lock(&self.slots);
                let usable = slots
                    .get(&key)
                    .and_then(|s| s.cached.as_ref())
                    .filter(|c| add(now, MIN_REMAINING_ON_FAILURE) < c.token.expires_at);
                match usable {
                    Some(c) => {
                        warn!(tenant = %req.tenant, client_id = %req.client_id, error = %e,
                              "renewing an Entra token failed; using the cached one until it expires");
                        Ok(c.token.clone())
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Forgets the cached token for `req` (e.g. after a provider answered 401 to it), so the
    /// next request fetches a new one.
    pub fn invalidate(&self, req: &TokenRequest) {
        if let Some(slot) = lock(&self.slots).get_mut(&CacheKey::of(req)) {
            slot.cached = None;
        }
    }

    /// Number of cached tokens (for tests and diagnostics).
    pub fn cached_len(&self) -> usize {
        lock(&self.slots)
            .values()
            .filter(|s| s.cached.is_some())
            .count()
    }

    fn start_fetch(&self, key: CacheKey, req: TokenRequest, now: Timestamp) -> Fetch {
        let http = self.http.clone();
        let env = self.env.clone();
        let pod_identity_host = self.pod_identity_host;
        let slots = self.slots.clone();
        async move {
            let result = fetch(&http, &env, pod_identity_host, &req, now).await;
            let mut map = lock(&slots);
            if let Some(slot) = map.get_mut(&key) {
                slot.inflight = None;
                if let Ok(c) = &result {
                    slot.cached = Some(c.clone());
                }
            }
            // Forget tokens that expired and are not being fetched (deleted resources,
            // rotated secrets), so the cache doesn't grow without bound.
            map.retain(|_, s| {
                s.inflight.is_some() || s.cached.as_ref().is_some_and(|c| now < c.token.expires_at)
            });
            result
        }
        .boxed()
        .shared()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The token endpoint: `{authority}/{tenant}/oauth2/v2.0/token`, the tenant as one
/// percent-encoded path segment.
pub fn token_url(authority: &Url, tenant: &str) -> Result<Url, ProviderError> {
    segment::check("the Microsoft Entra tenant", tenant)?;
    segment::join(authority, [tenant, "oauth2", "v2.0", "token"]).ok_or_else(|| {
        ProviderError::new(
            ProviderErrorKind::InvalidRequest,
            format!(
                "the Microsoft Entra authority {} can't have a path",
                origin_of(authority)
            ),
        )
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: Option<SecretString>,
    #[serde(default, deserialize_with = "opt_seconds")]
    expires_in: Option<Duration>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorBody {
    error: Option<String>,
    error_description: Option<String>,
    error_codes: Option<Vec<serde_json::Value>>,
    trace_id: Option<String>,
}

async fn fetch(
    http: &HttpClient,
    env: &EnvLookup,
    pod_identity_host: fn(&Url) -> bool,
    req: &TokenRequest,
    now: Timestamp,
) -> Result<Cached, ProviderError> {
    let url = token_url(&req.authority, &req.tenant)?;
    let assertion = match &req.credential {
        EntraCredential::ClientSecret { .. } => None,
        EntraCredential::WorkloadIdentity => {
            if !pod_identity_host(&req.authority) {
                return Err(ProviderError::new(
                    ProviderErrorKind::InvalidRequest,
                    format!(
                        "the operator's workload identity is sent only to official Microsoft \
                         Entra ID hosts, and {} is not one",
                        origin_of(&req.authority)
                    ),
                ));
            }
            Some(federated_token(env).await?)
        }
    };
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "client_credentials"),
        ("client_id", &req.client_id),
        ("scope", &req.scope),
    ];
    let secret = match (&req.credential, &assertion) {
        (EntraCredential::ClientSecret { secret, .. }, _) => {
            form.push(("client_secret", secret.expose()));
            secret.expose()
        }
        (EntraCredential::WorkloadIdentity, Some(a)) => {
            form.push(("client_assertion_type", CLIENT_ASSERTION_TYPE));
            form.push(("client_assertion", a.expose()));
            a.expose()
        }
        (EntraCredential::WorkloadIdentity, None) => "",
    };
    // Entra throttles per application (client).
    let http = http.for_credential(RateKey::entra_client(&req.client_id));
    let request = http
        .reqwest()
        .post(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(&form)
        .build()
        .map_err(|_| {
            ProviderError::new(
                ProviderErrorKind::InvalidRequest,
                "the Microsoft Entra ID token request could not be built",
            )
        })?;
    let response = http.execute(CALL, request).await?;
    let (token, refresh_at) = token_from_response(&response, &[secret], now)?;
    debug!(authority = %origin_of(&req.authority), tenant = %req.tenant, client_id = %req.client_id,
           scope = %req.scope, expires_at = %token.expires_at, "obtained a Microsoft Entra ID token");
    Ok(Cached { token, refresh_at })
}

/// The access token in an Entra token response and when to refresh it, or the error the
/// response carries (`secrets`, the credentials sent, scrubbed from it).
pub(crate) fn token_from_response(
    response: &ProviderResponse,
    secrets: &[&str],
    now: Timestamp,
) -> Result<(AccessToken, Timestamp), ProviderError> {
    if !response.is_success() {
        return Err(error_from(response, secrets));
    }
    let body: TokenResponse = response.json("Microsoft Entra ID token")?;
    let token = body.access_token.filter(|t| !t.is_empty()).ok_or_else(|| {
        ProviderError::new(
            ProviderErrorKind::InvalidResponse,
            "the Microsoft Entra ID token response has no access_token",
        )
        .with_status(response.status)
    })?;
    let lifetime = body
        .expires_in
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_LIFETIME);
    let expires_at = add(now, lifetime);
    let refresh_at = sub(expires_at, MAX_REFRESH_MARGIN.min(lifetime / 2));
    Ok((AccessToken { token, expires_at }, refresh_at))
}

/// Reads the workload-identity client assertion from `AZURE_FEDERATED_TOKEN_FILE`.
async fn federated_token(env: &EnvLookup) -> Result<SecretString, ProviderError> {
    let fail = |m: String| ProviderError::new(ProviderErrorKind::AuthenticationFailed, m);
    let path: PathBuf = env(FEDERATED_TOKEN_FILE_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            fail(format!(
                "workload identity: {FEDERATED_TOKEN_FILE_ENV} is not set; the operator pod is \
                 not set up for Azure workload identity (pod label \
                 azure.workload.identity/use: \"true\" and a service account annotated with \
                 azure.workload.identity/client-id)"
            ))
        })?;
    let text = tokio::fs::read_to_string(&path).await.map_err(|e| {
        fail(format!(
            "workload identity: can't read the federated token file {}: {}",
            path.display(),
            e.kind()
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(fail(format!(
            "workload identity: the federated token file {} is empty",
            path.display()
        )));
    }
    Ok(SecretString::new(token))
}

/// Maps an Entra error response. `secrets` are scrubbed from the message.
fn error_from(response: &ProviderResponse, secrets: &[&str]) -> ProviderError {
    let status = response.status;
    let kind = match status {
        429 => ProviderErrorKind::Throttled,
        408 | 500..=599 => ProviderErrorKind::Unavailable,
        300..=399 => ProviderErrorKind::InvalidResponse,
        _ => ProviderErrorKind::AuthenticationFailed,
    };
    let body: ErrorBody = serde_json::from_slice(&response.body).unwrap_or_default();
    let description = body
        .error_description
        .as_deref()
        .map(|d| without_boilerplate(strip_aadsts_prefix(d.trim())).to_owned());
    let aadsts = body
        .error_codes
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|c| match c {
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => {
                Some(s.clone())
            }
            _ => None,
        })
        .map(|n| format!("AADSTS{n}"))
        .or_else(|| body.error_description.as_deref().and_then(aadsts_code));
    // Provider text is scrubbed before it is shortened: a shortened secret would not match.
    let error_name = body.error.as_deref().map(|e| clip(&scrub(e, secrets), 60));
    // The AADSTS code first; Entra's `error` (e.g. invalid_client) then goes with the status.
    let (code, context) = match (aadsts, error_name) {
        (Some(c), Some(e)) => (Some(c), format!("{ENTRA_CALL}, HTTP {status}, {e}")),
        (Some(c), None) => (Some(c), format!("{ENTRA_CALL}, HTTP {status}")),
        (None, e) => (e, format!("{ENTRA_CALL}, HTTP {status}")),
    };
    let text = scrub(description.as_deref().unwrap_or_default(), secrets);
    let mut error = ProviderError::http(kind, ENTRA_CALL, status, code.as_deref(), &text);
    error.message = scrub(&error.message, secrets);
    error
        .with_context(context)
        .with_request_id(body.trace_id.map(|t| clip(&scrub(&t, secrets), 100)))
        .with_retry_after(response.retry_after())
}

/// What the Entra error messages call the token request.
const ENTRA_CALL: &str = "Microsoft Entra ID token request";

/// `text` without the tail Entra appends to every description ("Trace ID: … Correlation ID:
/// … Timestamp: …"): the request id carries the trace ID, and the event its own time.
fn without_boilerplate(text: &str) -> &str {
    ["Trace ID:", "Correlation ID:", "Timestamp:"]
        .iter()
        .filter_map(|marker| text.find(marker))
        .min()
        .map_or(text, |at| text[..at].trim_end())
}

/// Removes a leading `AADSTS12345: ` (the code is reported separately).
fn strip_aadsts_prefix(s: &str) -> &str {
    s.strip_prefix("AADSTS")
        .map(|rest| rest.trim_start_matches(|c: char| c.is_ascii_digit()))
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::trim_start)
        .unwrap_or(s)
}

/// The first `AADSTS<digits>` in `s`.
fn aadsts_code(s: &str) -> Option<String> {
    let start = s.find("AADSTS")?;
    let digits: String = s[start + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| format!("AADSTS{digits}"))
}

#[cfg(test)]
mod tests;
