//! Microsoft Fabric workspaces and their role assignments (docs/providers.md §2).
//!
//! - `GET /v1/workspaces[?roles=Admin,Member]`, every page followed: `continuationUri` is
//!   requested as given (after the endpoint policy and a same-origin check: a link to another
//!   host is refused), otherwise `continuationToken` is added to the first request's query
//!   exactly as received (it arrives percent-encoded, e.g. `LDEsMTAwMDAwLDA%3D`, and is never
//!   encoded again).
//! - `GET /v1/workspaces/{id}/roleAssignments`, paged the same way, for many workspaces with at
//!   most [`CONCURRENCY`] requests in flight. A workspace whose assignments the caller may not
//!   read (403: it needs Member or higher there) or that vanished meanwhile (404) is reported as
//!   such instead of failing the whole listing.
//! - `type`, `role` and principal types stay strings: Fabric adds values over time.
//! - Errors: `{errorCode, message, requestId}` mapped to kinds by status (and `TokenExpired`);
//!   429 + `Retry-After` (seconds); a short wait is repeated in place.
//! - The bearer token comes from a [`TokenSource`] (Microsoft Entra ID, scope
//!   [`crate::providers::azure_cloud::FABRIC_SCOPE`]), asked once per request; the source
//!   caches it, and is told when Fabric rejects it (401, `TokenExpired`) so that the next sync
//!   gets a fresh one.
//!
//! Every list is complete or an error: a page failing midway fails the whole call.

use crate::providers::endpoint::{EndpointPolicy, Service};
use crate::providers::error::{ProviderError, ProviderErrorKind, clip, scrub};
use crate::providers::http::{Call, HttpClient, ProviderResponse, RetrySoon};
use crate::providers::segment;
use crate::redact::SecretString;
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt, stream};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Most role-assignment listings in flight at once.
pub const CONCURRENCY: usize = 4;
/// Most pages followed in one listing; more is taken for a server that never stops.
pub const MAX_PAGES: usize = 10_000;

const PROVIDER: &str = "fabric";
const RETRY: RetrySoon = RetrySoon {
    statuses: &[429],
    attempts: 3,
    max_wait: Duration::from_secs(60),
};

/// Characters of a continuation token that would change the structure of the query if sent
/// raw (separators, spaces, controls, non-ASCII). Everything else, `%` included, is sent as
/// received.
const TOKEN_UNSAFE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'&')
    .add(b'<')
    .add(b'>')
    .add(b'`');

/// Where the Fabric client gets its bearer tokens.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A current access token for the Fabric API.
    async fn bearer_token(&self) -> Result<SecretString, ProviderError>;
    /// Fabric refused the token (expired or revoked): don't hand it out again.
    fn rejected(&self) {}
}

/// A fixed token (tests, or a token obtained elsewhere for one sync).
pub struct StaticToken(pub SecretString);

#[async_trait]
impl TokenSource for StaticToken {
    async fn bearer_token(&self) -> Result<SecretString, ProviderError> {
        Ok(self.0.clone())
    }
}

/// A Fabric workspace as listed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    /// Workspace ID.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Description (may be empty).
    #[serde(default)]
    pub description: Option<String>,
    /// Personal, Workspace, AdminWorkspace, or a type Fabric adds later.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// Capacity the workspace is assigned to.
    #[serde(default)]
    pub capacity_id: Option<String>,
}

/// A principal's role in a workspace.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAssignment {
    /// Assignment ID.
    #[serde(default)]
    pub id: Option<String>,
    /// Who.
    pub principal: Principal,
    /// Admin, Member, Contributor, Viewer, or a role Fabric adds later.
    #[serde(default)]
    pub role: Option<String>,
}

/// A Fabric principal.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// Principal (object) ID.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// User, ServicePrincipal, Group, ServicePrincipalProfile, ...
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
}

/// One workspace's role assignments, or why they could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoleAssignments {
    /// Every assignment.
    Listed(Vec<RoleAssignment>),
    /// Fabric refused (403) or no longer knows the workspace (404).
    NotReadable(ProviderError),
}

/// One page of a Fabric listing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Page<T> {
    pub(crate) value: Vec<T>,
    #[serde(default)]
    pub(crate) continuation_token: Option<String>,
    #[serde(default)]
    pub(crate) continuation_uri: Option<String>,
}

/// A Fabric REST API client for one endpoint and token source.
pub struct FabricClient {
    http: HttpClient,
    policy: EndpointPolicy,
    base: Url,
    token: Arc<dyn TokenSource>,
}

impl FabricClient {
    /// A client for `base` (e.g. `https://api.fabric.microsoft.com`, already checked against
    /// `policy`).
    pub fn new(
        http: HttpClient,
        policy: EndpointPolicy,
        base: Url,
        token: Arc<dyn TokenSource>,
    ) -> Self {
        Self {
            http,
            policy,
            base,
            token,
        }
    }

    /// Every workspace the principal can reach (in one of `roles`, if given), every page
    /// followed, in the order Fabric gave them.
    pub async fn list_workspaces(&self, roles: &[&str]) -> Result<Vec<Workspace>, ProviderError> {
        let url = workspaces_url(&self.base, roles)?;
        self.all_pages("listWorkspaces", url).await
    }

    /// Every role assignment of one workspace.
    pub async fn role_assignments(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<RoleAssignment>, ProviderError> {
        segment::check("the workspace ID", workspace_id)?;
        let url = api_url(&self.base, &["workspaces", workspace_id, "roleAssignments"])?;
        self.all_pages("listWorkspaceRoleAssignments", url).await
    }

    /// The role assignments of each of `workspace_ids` (in that order), at most
    /// [`CONCURRENCY`] at once. 403 and 404 are per-workspace answers; any other failure fails
    /// the whole call.
    pub async fn role_assignments_of(
        &self,
        workspace_ids: &[String],
    ) -> Result<Vec<RoleAssignments>, ProviderError> {
        // Owned IDs: futures borrowing from the argument trip up the Send check of callers.
        stream::iter(workspace_ids.to_vec())
            .map(|id| async move {
                // An ID Fabric gave that can't be a path segment: its assignments can't be
                // asked for, which doesn't make the rest of the inventory wrong.
                if let Err(e) = segment::check("the workspace ID", &id) {
                    return Ok(RoleAssignments::NotReadable(e));
                }
                match self.role_assignments(&id).await {
                    Ok(list) => Ok(RoleAssignments::Listed(list)),
                    Err(e)
                        if matches!(
                            e.kind,
                            ProviderErrorKind::Forbidden | ProviderErrorKind::NotFound
                        ) =>
                    {
                        Ok(RoleAssignments::NotReadable(e))
                    }
                    Err(mut e) => {
                        e.message = format!("workspace {}: {}", clip(&id, 64), e.message);
                        Err(e)
                    }
                }
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await
    }

    /// Reads `first` and every page after it.
    async fn all_pages<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        first: Url,
    ) -> Result<Vec<T>, ProviderError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut url = first.clone();
        for _ in 0..MAX_PAGES {
            if !seen.insert(url.as_str().to_owned()) {
                return Err(invalid(
                    operation,
                    "the continuation repeats an earlier page",
                ));
            }
            let page: Page<T> = self.get(operation, url).await?;
            out.extend(page.value);
            url = match next_page(
                &self.policy,
                &self.base,
                &first,
                operation,
                page.continuation_uri.as_deref(),
                page.continuation_token.as_deref(),
            )? {
                Some(next) => next,
                None => return Ok(out),
            };
        }
        Err(invalid(
            operation,
            &format!("more than {MAX_PAGES} pages; giving up"),
        ))
    }

    async fn get<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        url: Url,
    ) -> Result<T, ProviderError> {
        let token = self.token.bearer_token().await?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| {
                ProviderError::new(
                    ProviderErrorKind::AuthenticationFailed,
                    "the Microsoft Entra access token can't be sent in an HTTP header",
                )
            })?;
        authorization.set_sensitive(true);
        let request = self
            .http
            .reqwest()
            .get(url)
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, authorization)
            .build()
            .map_err(|_| invalid(operation, "the request could not be built"))?;
        let call = Call {
            provider: PROVIDER,
            operation,
        };
        let response = self.http.execute_retrying(call, request, RETRY).await?;
        parse(operation, &response, &[token.expose()]).inspect_err(|e| {
            if e.kind == ProviderErrorKind::AuthenticationFailed {
                self.token.rejected();
            }
        })
    }
}

/// The body of a Fabric answer, or the error it carries (`secrets`, the credentials the request
/// carried, scrubbed from it).
pub(crate) fn parse<T: DeserializeOwned>(
    operation: &str,
    response: &ProviderResponse,
    secrets: &[&str],
) -> Result<T, ProviderError> {
    if !response.is_success() {
        return Err(error_from(operation, response, secrets));
    }
    response.json(&format!("Fabric {operation}"))
}

/// `base` + `/v1/` + path segments, each percent-encoded as one segment (refused if it can't
/// be one, see [`segment::check`]).
pub fn api_url(base: &Url, segments: &[&str]) -> Result<Url, ProviderError> {
    for s in segments {
        segment::check("a path parameter", s)?;
    }
    segment::join(base, ["v1"].into_iter().chain(segments.iter().copied()))
        .ok_or_else(|| invalid("request", "the endpoint can't have a path"))
}

/// The first URL of the workspace listing, with the `roles` filter if any.
pub(crate) fn workspaces_url(base: &Url, roles: &[&str]) -> Result<Url, ProviderError> {
    let mut url = api_url(base, &["workspaces"])?;
    if !roles.is_empty() {
        // Comma-separated, as documented; role names are plain words.
        let list: Vec<String> = roles
            .iter()
            .map(|r| utf8_percent_encode(r, TOKEN_UNSAFE).to_string())
            .collect();
        url.set_query(Some(&format!("roles={}", list.join(","))));
    }
    Ok(url)
}

/// Where the listing that started at `first` goes after a page that gave `uri` and `token`:
/// `continuationUri` if it passes the endpoint policy and stays on `base`'s origin, else the
/// first request with `continuationToken`; `None` when the page was the last.
pub(crate) fn next_page(
    policy: &EndpointPolicy,
    base: &Url,
    first: &Url,
    operation: &str,
    uri: Option<&str>,
    token: Option<&str>,
) -> Result<Option<Url>, ProviderError> {
    match (
        uri.filter(|s| !s.is_empty()),
        token.filter(|s| !s.is_empty()),
    ) {
        (Some(uri), _) => policy
            .check_link(Service::Fabric, base, uri)
            .map(Some)
            .map_err(|e| invalid(operation, &format!("continuationUri refused: {e}"))),
        (None, Some(token)) => Ok(Some(with_continuation_token(first, token))),
        (None, None) => Ok(None),
    }
}

/// The first request's URL with `continuationToken=<token>` added, the token as received.
fn with_continuation_token(first: &Url, token: &str) -> Url {
    let token = utf8_percent_encode(token, TOKEN_UNSAFE);
    let query = match first.query() {
        Some(q) if !q.is_empty() => format!("{q}&continuationToken={token}"),
        _ => format!("continuationToken={token}"),
    };
    let mut url = first.clone();
    url.set_query(Some(&query));
    url
}

fn invalid(operation: &str, why: &str) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::InvalidResponse,
        format!("Fabric {operation}: {why}"),
    )
}

/// Maps a Fabric `ErrorResponse`: the status decides the kind (`TokenExpired` is an
/// authentication failure whatever the status); `errorCode` and `message` are the text; the
/// request id comes from the body or the `requestid` / `x-ms-request-id` header.
fn error_from(operation: &str, response: &ProviderResponse, secrets: &[&str]) -> ProviderError {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        #[serde(default)]
        error_code: Option<String>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        request_id: Option<String>,
    }
    let status = response.status;
    let body: Option<Body> = serde_json::from_slice(&response.body).ok();
    let (code, text, body_request_id) = match body {
        Some(b) => (
            b.error_code.filter(|s| !s.is_empty()),
            b.message.unwrap_or_default(),
            b.request_id.filter(|s| !s.is_empty()),
        ),
        None => (None, String::new(), None),
    };
    let kind = match code.as_deref() {
        Some("TokenExpired") => ProviderErrorKind::AuthenticationFailed,
        _ => ProviderError::kind_for_status(status),
    };
    // Provider text is scrubbed before it is shortened: a shortened secret would not match.
    let error = ProviderError::http(
        kind,
        &format!("Fabric {operation}"),
        status,
        code.map(|c| scrub(&c, secrets)).as_deref(),
        &scrub(&text, secrets),
    );
    let request_id = body_request_id
        .or_else(|| response.header("requestid").map(str::to_owned))
        .or_else(|| response.header("x-ms-request-id").map(str::to_owned))
        .map(|s| clip(&scrub(&s, secrets), 100));
    error
        .with_request_id(request_id)
        .with_retry_after(response.retry_after())
}

#[cfg(test)]
mod tests;
