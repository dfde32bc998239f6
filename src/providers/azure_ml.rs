//! Azure Machine Learning through Azure Resource Manager: `listNotebookAccessToken`.
//!
//! `POST {arm}/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/
//! Microsoft.MachineLearningServices/workspaces/{workspaceName}/listNotebookAccessToken
//! ?api-version=...` with an ARM bearer token and an empty body (`Content-Length: 0`: ARM front
//! doors refuse a body-less POST without a length). Every path parameter is one
//! percent-encoded segment, so no name can change the path. The answer is parsed tolerantly
//! (every field optional, `expiresIn` may be a float); the ARM error body
//! (`error.code`, `error.message`) and `x-ms-request-id` become a [`ProviderError`].

use crate::providers::endpoint::origin_of;
use crate::providers::error::{ProviderError, ProviderErrorKind, clip, scrub};
use crate::providers::http::{Call, HttpClient, ProviderResponse};
use crate::providers::lenient::opt_seconds;
use crate::providers::segment;
use crate::redact::SecretString;
use serde::Deserialize;
use std::time::Duration;
use url::Url;

/// ARM resource provider of Azure Machine Learning.
pub const RESOURCE_PROVIDER: &str = "Microsoft.MachineLearningServices";
/// The ARM action the caller needs on the workspace (named after the ARM convention for
/// POST actions).
pub const REQUIRED_ACTION: &str =
    "Microsoft.MachineLearningServices/workspaces/listNotebookAccessToken/action";

const CALL: Call = Call {
    provider: "azure_ml",
    operation: "listNotebookAccessToken",
};

/// The workspace whose notebook token is requested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    /// Azure Resource Manager endpoint (checked by the caller against the endpoint policy).
    pub endpoint: Url,
    /// Subscription ID.
    pub subscription_id: String,
    /// Resource group name.
    pub resource_group: String,
    /// Workspace name.
    pub workspace_name: String,
    /// ARM api-version.
    pub api_version: String,
}

/// A notebook access token, as Azure returned it.
#[derive(Clone, Debug)]
pub struct NotebookAccessToken {
    /// The notebook access token.
    pub access_token: SecretString,
    /// The refresh token, if Azure returned one.
    pub refresh_token: Option<SecretString>,
    /// Lifetime from the moment of the answer (`expiresIn`).
    pub expires_in: Duration,
    /// Notebook resource ID.
    pub notebook_resource_id: Option<String>,
    /// Host name.
    pub host_name: Option<String>,
    /// Public DNS name of the notebook service.
    pub public_dns: Option<String>,
    /// Token type, e.g. Bearer.
    pub token_type: Option<String>,
    /// Token scope, e.g. aznb_identity.
    pub scope: Option<String>,
    /// ARM's `x-ms-request-id` of the call.
    pub request_id: Option<String>,
}

/// `NotebookAccessTokenResult`: every property optional.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct NotebookAccessTokenResult {
    notebook_resource_id: Option<String>,
    host_name: Option<String>,
    public_dns: Option<String>,
    access_token: Option<SecretString>,
    token_type: Option<String>,
    #[serde(deserialize_with = "opt_seconds")]
    expires_in: Option<Duration>,
    refresh_token: Option<SecretString>,
    scope: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorResponse {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
}

/// The URL of the call, each path parameter one percent-encoded segment.
pub fn list_notebook_access_token_url(ws: &Workspace) -> Result<Url, ProviderError> {
    for (what, value) in [
        ("the subscription ID", &ws.subscription_id),
        ("the resource group", &ws.resource_group),
        ("the workspace name", &ws.workspace_name),
    ] {
        segment::check(what, value)?;
    }
    let mut url = segment::join(
        &ws.endpoint,
        [
            "subscriptions",
            &ws.subscription_id,
            "resourceGroups",
            &ws.resource_group,
            "providers",
            RESOURCE_PROVIDER,
            "workspaces",
            &ws.workspace_name,
            "listNotebookAccessToken",
        ],
    )
    .ok_or_else(|| {
        ProviderError::new(
            ProviderErrorKind::InvalidRequest,
            format!(
                "the Azure Resource Manager endpoint {} can't have a path",
                origin_of(&ws.endpoint)
            ),
        )
    })?;
    url.query_pairs_mut()
        .append_pair("api-version", &ws.api_version);
    Ok(url)
}

/// Calls `listNotebookAccessToken` with an ARM bearer token.
pub async fn list_notebook_access_token(
    http: &HttpClient,
    bearer: &SecretString,
    ws: &Workspace,
) -> Result<NotebookAccessToken, ProviderError> {
    let url = list_notebook_access_token_url(ws)?;
    let request = http
        .reqwest()
        .post(url)
        .bearer_auth(bearer.expose())
        .header(reqwest::header::ACCEPT, "application/json")
        .header(reqwest::header::CONTENT_LENGTH, "0")
        .build()
        .map_err(|_| {
            ProviderError::new(
                ProviderErrorKind::InvalidRequest,
                "the listNotebookAccessToken request could not be built",
            )
        })?;
    let response = http.execute(CALL, request).await?;
    token_from_response(&response, bearer.expose())
}

/// The token in a `listNotebookAccessToken` response, or the error it carries (with `bearer`,
/// the token the call was made with, scrubbed from the message).
pub(crate) fn token_from_response(
    response: &ProviderResponse,
    bearer: &str,
) -> Result<NotebookAccessToken, ProviderError> {
    let request_id = request_id(response, bearer);
    if !response.is_success() {
        return Err(error_from(response, bearer));
    }
    let with_context = |e: ProviderError| e.with_request_id(request_id.clone());
    let body: NotebookAccessTokenResult = response
        .json("listNotebookAccessToken")
        .map_err(with_context)?;
    let invalid = |what: &str| {
        with_context(
            ProviderError::new(
                ProviderErrorKind::InvalidResponse,
                format!("the listNotebookAccessToken response {what}"),
            )
            .with_status(response.status),
        )
    };
    let access_token = body
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("has no accessToken"))?;
    let expires_in = body
        .expires_in
        .filter(|d| *d >= Duration::from_secs(1))
        .ok_or_else(|| invalid("has no usable expiresIn"))?;
    Ok(NotebookAccessToken {
        access_token,
        refresh_token: body.refresh_token.filter(|t| !t.is_empty()),
        expires_in,
        notebook_resource_id: body.notebook_resource_id,
        host_name: body.host_name,
        public_dns: body.public_dns,
        token_type: body.token_type,
        scope: body.scope,
        request_id,
    })
}

/// ARM's request id of a response (`bearer` scrubbed before it is shortened, so that not even
/// part of it shows).
fn request_id(response: &ProviderResponse, bearer: &str) -> Option<String> {
    response
        .header("x-ms-request-id")
        .or_else(|| response.header("x-ms-correlation-request-id"))
        .map(|id| clip(&scrub(id, &[bearer]), 100))
}

/// Maps an ARM error response. The bearer token is scrubbed from the message.
fn error_from(response: &ProviderResponse, bearer: &str) -> ProviderError {
    let status = response.status;
    let detail = serde_json::from_slice::<ErrorResponse>(&response.body)
        .ok()
        .and_then(|b| b.error)
        .unwrap_or_default();
    // Provider text is scrubbed before it is shortened: a shortened secret would not match.
    let code = detail
        .code
        .as_deref()
        .map(|c| clip(&scrub(c, &[bearer]), 80));
    let kind = kind_of(status, code.as_deref());
    let text = match detail.message.as_deref().filter(|m| !m.trim().is_empty()) {
        Some(m) => scrub(m, &[bearer]),
        None if kind == ProviderErrorKind::Forbidden => {
            format!("the caller needs {REQUIRED_ACTION} on the workspace")
        }
        None => String::new(),
    };
    ProviderError::http(
        kind,
        "Azure Resource Manager listNotebookAccessToken",
        status,
        code.as_deref(),
        &text,
    )
    .with_request_id(request_id(response, bearer))
    .with_retry_after(response.retry_after())
}

/// The error kind for an ARM status and `error.code`.
fn kind_of(status: u16, code: Option<&str>) -> ProviderErrorKind {
    use ProviderErrorKind::*;
    match (status, code) {
        (401, _) => AuthenticationFailed,
        (429, _) => Throttled,
        (403, _) => Forbidden,
        (404, _) => NotFound,
        (500..=599, _) => Unavailable,
        (_, Some("AuthorizationFailed" | "LinkedAuthorizationFailed")) => Forbidden,
        (_, Some(c)) if c.ends_with("NotFound") => NotFound,
        (
            _,
            Some(
                "InvalidAuthenticationToken"
                | "InvalidAuthenticationTokenTenant"
                | "ExpiredAuthenticationToken"
                | "AuthenticationFailed",
            ),
        ) => AuthenticationFailed,
        _ => ProviderError::kind_for_status(status),
    }
}

#[cfg(test)]
mod tests;
