//! DataRobot notebooks' shared roles (docs/providers.md §3).
//!
//! - Which notebooks: explicit IDs, or discovered with `GET /notebooks/` (filters, paged by
//!   following `next`).
//! - Their roles: the bulk `GET /notebooks/sharedRoles/?notebookIds=a,b,...` in batches of at
//!   most [`BULK_BATCH_SIZE`] IDs (and [`BULK_BATCH_QUERY_BYTES`] of query), not paginated. A
//!   notebook the bulk answer leaves out, or lists with [`FULL_LIST_THRESHOLD`] roles or more
//!   (the bulk answer might be cut short; its limits are undocumented), is read again with the
//!   paged per-notebook `GET /notebooks/{id}/sharedRoles/` (`offset`/`limit`, following `next`).
//! - `next` links are absolute URLs from the server; they are followed only when they pass the
//!   endpoint policy and stay on the configured endpoint's origin, so a page can't send the API
//!   token elsewhere.
//! - Auth: `Authorization: Token <key>` (what the official client sends for API keys) or
//!   `Bearer <token>` (OAuth access tokens).
//! - Errors: the body's `message` (a string or an object) and `errorName`; the request id from
//!   `x-request-id` / `X-DataRobot-Request-ID`. 429 and 503 with a short `Retry-After` are
//!   repeated in place; otherwise `Retry-After` goes back to the caller.
//!
//! Every list is complete or an error: a page failing midway fails the whole call.

use crate::providers::endpoint::{EndpointPolicy, Service};
use crate::providers::error::{ProviderError, ProviderErrorKind, clip, scrub};
use crate::providers::http::{Call, HttpClient, ProviderResponse, RetrySoon};
use crate::providers::segment;
use crate::redact::SecretString;
use futures::{StreamExt, TryStreamExt, stream};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;
use url::Url;

/// Most notebook IDs in one bulk `sharedRoles` call (the API's own maximum is undocumented).
pub const BULK_BATCH_SIZE: usize = 100;
/// Most bytes of comma-separated IDs in one bulk call, to keep the URL short.
pub const BULK_BATCH_QUERY_BYTES: usize = 4000;
/// Page size asked for from paged endpoints.
pub const PAGE_LIMIT: u32 = 100;
/// A notebook listed with this many roles or more in a bulk answer is read again page by page.
pub const FULL_LIST_THRESHOLD: usize = 100;
/// Most pages followed in one listing; more is taken for a server that never stops.
pub const MAX_PAGES: usize = 10_000;
/// Most requests in flight for one listing.
pub const CONCURRENCY: usize = 4;

const PROVIDER: &str = "datarobot";
const RETRY: RetrySoon = RetrySoon {
    statuses: &[429, 503],
    attempts: 3,
    max_wait: Duration::from_secs(30),
};

/// How the API token is presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: Token <key>`: API keys from Developer Tools.
    Token,
    /// `Authorization: Bearer <token>`: DataRobot OAuth access tokens.
    Bearer,
}

impl AuthScheme {
    fn as_str(self) -> &'static str {
        match self {
            AuthScheme::Token => "Token",
            AuthScheme::Bearer => "Bearer",
        }
    }
}

/// Filters of `GET /notebooks/` (combined with AND by the server).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotebookQuery {
    /// `useCaseId`.
    pub use_case_id: Option<String>,
    /// `owners` (user IDs).
    pub owners: Vec<String>,
    /// `tags`.
    pub tags: Vec<String>,
    /// `query` (text).
    pub query: Option<String>,
}

/// One recipient's role on a notebook, as DataRobot reports it. `role` and
/// `shareRecipientType` stay strings so values DataRobot adds don't break parsing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedRole {
    /// Recipient ID.
    pub id: String,
    /// Recipient name.
    #[serde(default)]
    pub name: Option<String>,
    /// Role, e.g. OWNER, EDITOR, CONSUMER.
    #[serde(default)]
    pub role: Option<String>,
    /// user, group, organization, externalApplication, ...
    #[serde(default)]
    pub share_recipient_type: Option<String>,
}

/// A notebook's complete access control list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotebookAcl {
    /// Notebook ID.
    pub notebook_id: String,
    /// Every recipient's role, in the order DataRobot gave them.
    pub roles: Vec<SharedRole>,
}

/// The answer for a set of notebook IDs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedRoles {
    /// Notebooks found, sorted by ID.
    pub notebooks: Vec<NotebookAcl>,
    /// Requested IDs DataRobot does not know (404), sorted.
    pub missing: Vec<String>,
}

/// One page of a DataRobot listing.
#[derive(Deserialize)]
pub(crate) struct Page<T> {
    pub(crate) data: Vec<T>,
    #[serde(default)]
    pub(crate) next: Option<String>,
}

/// An entry of `GET /notebooks/`.
#[derive(Deserialize)]
pub(crate) struct NotebookSummary {
    pub(crate) id: String,
}

/// The answer of the bulk `sharedRoles` call.
#[derive(Deserialize)]
pub(crate) struct BulkResponse {
    pub(crate) data: Vec<BulkEntry>,
}

/// One notebook in the bulk answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BulkEntry {
    pub(crate) notebook_id: String,
    #[serde(default)]
    pub(crate) roles: Option<Vec<SharedRole>>,
}

/// Default DataRobot API endpoint (the US multi-tenant SaaS).
pub const DEFAULT_ENDPOINT: &str = "https://app.datarobot.com/api/v2";

/// A DataRobot API client for one endpoint and token.
pub struct DataRobotClient {
    http: HttpClient,
    policy: EndpointPolicy,
    base: Url,
    authorization: HeaderValue,
    /// The API token, to scrub from error messages that echo it.
    token: SecretString,
}

impl DataRobotClient {
    /// A client for `base` (e.g. `https://app.datarobot.com/api/v2`, already checked against
    /// `policy`), presenting `token` with `scheme`.
    pub fn new(
        http: HttpClient,
        policy: EndpointPolicy,
        base: Url,
        token: &SecretString,
        scheme: AuthScheme,
    ) -> Result<Self, ProviderError> {
        let mut authorization =
            HeaderValue::from_str(&format!("{} {}", scheme.as_str(), token.expose())).map_err(
                |_| {
                    ProviderError::new(
                        ProviderErrorKind::AuthenticationFailed,
                        "the DataRobot API token contains characters that can't be sent in an \
                         HTTP header",
                    )
                },
            )?;
        authorization.set_sensitive(true);
        Ok(Self {
            http,
            policy,
            base,
            authorization,
            token: token.clone(),
        })
    }

    /// IDs of the notebooks `GET /notebooks/` lists for `query`, every page followed, sorted
    /// and without duplicates.
    pub async fn discover(&self, query: &NotebookQuery) -> Result<Vec<String>, ProviderError> {
        let mut url = api_url(&self.base, &["notebooks"])?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("offset", "0")
                .append_pair("limit", &PAGE_LIMIT.to_string())
                // A stable order keeps offset paging from skipping or repeating notebooks.
                .append_pair("orderBy", "created");
            if let Some(id) = &query.use_case_id {
                q.append_pair("useCaseId", id);
            }
            for owner in &query.owners {
                q.append_pair("owners", owner);
            }
            for tag in &query.tags {
                q.append_pair("tags", tag);
            }
            if let Some(text) = &query.query {
                q.append_pair("query", text);
            }
        }
        let found: Vec<NotebookSummary> = self.all_pages("listNotebooks", url).await?;
        let ids: BTreeSet<String> = found.into_iter().map(|n| n.id).collect();
        Ok(ids.into_iter().collect())
    }

    /// The complete access control lists of `ids` (duplicates ignored).
    pub async fn shared_roles(&self, ids: &[String]) -> Result<SharedRoles, ProviderError> {
        let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let wanted: Vec<&str> = wanted.into_iter().collect();
        // Owned batches and IDs below: futures borrowing from locals trip up the Send check of
        // callers.
        // An ID with a comma can't be told apart from two in the bulk call's comma-separated
        // list; such an ID is left to the per-notebook call below (as one path segment).
        let bulk_ids: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|id| !id.contains(','))
            .collect();
        let batches: Vec<Vec<String>> = batches(&bulk_ids)
            .into_iter()
            .map(|b| b.into_iter().map(str::to_owned).collect())
            .collect();
        let answers: Vec<Vec<BulkEntry>> = stream::iter(batches)
            .map(|batch| self.bulk(batch))
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut found: BTreeMap<String, Vec<SharedRole>> = BTreeMap::new();
        for entry in answers.into_iter().flatten() {
            if wanted.binary_search(&entry.notebook_id.as_str()).is_ok() {
                found
                    .entry(entry.notebook_id)
                    .or_insert_with(|| entry.roles.unwrap_or_default());
            }
        }
        let recheck: Vec<String> = wanted
            .iter()
            .filter(|id| {
                found
                    .get(**id)
                    .is_none_or(|r| r.len() >= FULL_LIST_THRESHOLD)
            })
            .map(|id| (*id).to_owned())
            .collect();
        let rechecked: Vec<(String, Option<Vec<SharedRole>>)> = stream::iter(recheck)
            .map(|id| async move {
                let roles = self.notebook_roles(&id).await?;
                Ok::<_, ProviderError>((id, roles))
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut missing = Vec::new();
        for (id, roles) in rechecked {
            match roles {
                Some(roles) => {
                    found.insert(id, roles);
                }
                None => {
                    found.remove(&id);
                    missing.push(id);
                }
            }
        }
        missing.sort();
        Ok(SharedRoles {
            notebooks: found
                .into_iter()
                .map(|(notebook_id, roles)| NotebookAcl { notebook_id, roles })
                .collect(),
            missing,
        })
    }

    /// One bulk call.
    async fn bulk(&self, ids: Vec<String>) -> Result<Vec<BulkEntry>, ProviderError> {
        let mut url = api_url(&self.base, &["notebooks", "sharedRoles"])?;
        url.query_pairs_mut()
            .append_pair("notebookIds", &ids.join(","));
        let body: BulkResponse = self.get("listNotebooksSharedRoles", url).await?;
        Ok(body.data)
    }

    /// Every role on one notebook through the paged endpoint; `None` if DataRobot doesn't know
    /// the notebook.
    pub async fn notebook_roles(&self, id: &str) -> Result<Option<Vec<SharedRole>>, ProviderError> {
        segment::check("the notebook ID", id)?;
        let mut url = api_url(&self.base, &["notebooks", id, "sharedRoles"])?;
        url.query_pairs_mut()
            .append_pair("offset", "0")
            .append_pair("limit", &PAGE_LIMIT.to_string());
        match self.all_pages("getNotebookSharedRoles", url).await {
            Ok(roles) => Ok(Some(roles)),
            Err(e) if e.status == Some(404) => Ok(None),
            Err(mut e) => {
                e.message = format!("notebook {}: {}", clip(id, 64), e.message);
                Err(e)
            }
        }
    }

    /// Reads `first` and every page its `next` links lead to.
    async fn all_pages<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        first: Url,
    ) -> Result<Vec<T>, ProviderError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut url = first;
        for _ in 0..MAX_PAGES {
            if !seen.insert(url.as_str().to_owned()) {
                return Err(invalid(
                    operation,
                    "the next-page link repeats an earlier page",
                ));
            }
            let page: Page<T> = self.get(operation, url).await?;
            out.extend(page.data);
            match next_page(&self.policy, &self.base, operation, page.next.as_deref())? {
                None => return Ok(out),
                Some(next) => url = next,
            }
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
        let request = self
            .http
            .reqwest()
            .get(url)
            .header(ACCEPT, "application/json")
            .header(AUTHORIZATION, self.authorization.clone())
            .build()
            .map_err(|_| invalid(operation, "the request could not be built"))?;
        let call = Call {
            provider: PROVIDER,
            operation,
        };
        let response = self.http.execute_retrying(call, request, RETRY).await?;
        parse(operation, &response, &[self.token.expose()])
    }
}

/// The body of a DataRobot answer, or the error it carries (`secrets`, the credentials the
/// request carried, scrubbed from it).
pub(crate) fn parse<T: DeserializeOwned>(
    operation: &str,
    response: &ProviderResponse,
    secrets: &[&str],
) -> Result<T, ProviderError> {
    if !response.is_success() {
        return Err(error_from(operation, response, secrets));
    }
    response.json(&format!("DataRobot {operation}"))
}

/// Where a listing goes after a page whose `next` is `next`: the link, if it passes the endpoint
/// policy and stays on `base`'s origin; `None` when the page was the last.
pub(crate) fn next_page(
    policy: &EndpointPolicy,
    base: &Url,
    operation: &str,
    next: Option<&str>,
) -> Result<Option<Url>, ProviderError> {
    match next.filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(next) => policy
            .check_link(Service::DataRobot, base, next)
            .map(Some)
            .map_err(|e| invalid(operation, &format!("next-page link refused: {e}"))),
    }
}

/// `base` + path segments, each percent-encoded as one segment (refused if it can't be one,
/// see [`segment::check`]), + a trailing slash, as DataRobot's paths have.
pub fn api_url(base: &Url, segments: &[&str]) -> Result<Url, ProviderError> {
    for s in segments {
        segment::check("a path parameter", s)?;
    }
    segment::join(base, segments.iter().copied().chain([""]))
        .ok_or_else(|| invalid("request", "the endpoint can't have a path"))
}

/// Splits IDs into bulk batches: at most [`BULK_BATCH_SIZE`] IDs and about
/// [`BULK_BATCH_QUERY_BYTES`] bytes each (an ID is never split; a batch has at least one).
fn batches<'a>(ids: &[&'a str]) -> Vec<Vec<&'a str>> {
    let mut out: Vec<Vec<&str>> = Vec::new();
    let mut bytes = 0;
    for id in ids {
        let fits = out.last().is_some_and(|b| {
            b.len() < BULK_BATCH_SIZE && bytes + 1 + id.len() <= BULK_BATCH_QUERY_BYTES
        });
        if fits {
            bytes += 1 + id.len();
            if let Some(b) = out.last_mut() {
                b.push(id);
            }
        } else {
            bytes = id.len();
            out.push(vec![id]);
        }
    }
    out
}

fn invalid(operation: &str, why: &str) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::InvalidResponse,
        format!("DataRobot {operation}: {why}"),
    )
}

/// Maps a DataRobot error response: the status decides the kind; `errorName` and `message`
/// (a string, or an object of field messages) are the text.
fn error_from(operation: &str, response: &ProviderResponse, secrets: &[&str]) -> ProviderError {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        #[serde(default)]
        message: Option<serde_json::Value>,
        #[serde(default)]
        error_name: Option<String>,
    }
    let status = response.status;
    let body: Option<Body> = serde_json::from_slice(&response.body).ok();
    let (name, text) = match body {
        Some(b) => (
            b.error_name.filter(|n| !n.is_empty()),
            match b.message {
                Some(serde_json::Value::String(s)) => s,
                Some(serde_json::Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            },
        ),
        None => (None, String::new()),
    };
    // Provider text is scrubbed before it is shortened: a shortened secret would not match.
    let mut error = ProviderError::http(
        ProviderError::kind_for_status(status),
        &format!("DataRobot {operation}"),
        status,
        name.map(|n| scrub(&n, secrets)).as_deref(),
        &scrub(&text, secrets),
    );
    if status == 401 {
        error.message.push_str(
            " (check the API token in apiTokenRef, and authScheme: Token for API keys, Bearer \
             for OAuth access tokens)",
        );
    }
    let request_id = response
        .header("x-request-id")
        .or_else(|| response.header("x-datarobot-request-id"))
        .map(|s| clip(&scrub(s, secrets), 100));
    error
        .with_request_id(request_id)
        .with_retry_after(response.retry_after())
}

#[cfg(test)]
mod tests;
