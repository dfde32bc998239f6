//! Entry points for the `cargo fuzz` targets in `fuzz/` (cargo feature `fuzzing`, off by
//! default). Not an API: thin wrappers that hand fuzzer-made provider answers to the very
//! parsers and next-page decisions the clients use. The ACS3 canonicalisation is public
//! already (`providers::auth::acs3`).

use crate::providers::endpoint::EndpointPolicy;
use crate::providers::error::ProviderError;
use crate::providers::http::ProviderResponse;
use crate::providers::{azure_ml, datarobot, emr_spark, fabric};
use crate::redact::SecretString;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;

/// A provider answer; headers that aren't valid HTTP are left out.
pub fn response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> ProviderResponse {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.append(k, v);
        }
    }
    ProviderResponse {
        status,
        headers: map,
        body: bytes::Bytes::copy_from_slice(body),
    }
}

/// A policy allowing the official hosts and `allow` (`--allow-endpoint` entries; unparseable
/// ones are left out).
pub fn policy(allow: &[&str]) -> EndpointPolicy {
    EndpointPolicy::new(allow.iter().filter_map(|a| a.parse().ok()).collect())
}

/// Azure Resource Manager `listNotebookAccessToken`, called with `bearer`.
pub fn arm_token(r: &ProviderResponse, bearer: &str) -> Result<(), ProviderError> {
    azure_ml::token_from_response(r, bearer).map(drop)
}

/// A Microsoft Entra ID token answer to a request that carried `secret`.
pub fn entra_token(r: &ProviderResponse, secret: &str) -> Result<(), ProviderError> {
    crate::providers::auth::entra::token_from_response(r, &[secret], jiff::Timestamp::UNIX_EPOCH)
        .map(drop)
}

/// An EMR Serverless Spark operation.
#[derive(Clone, Copy, Debug)]
pub enum EmrOperation {
    /// GetLivyComputeToken.
    Get,
    /// ListLivyComputeToken.
    List,
    /// CreateLivyComputeToken.
    Create,
    /// DeleteLivyComputeToken (only the envelope matters).
    Delete,
}

/// An EMR Serverless Spark answer to a request signed with this AccessKey secret and STS token.
pub fn emr(
    op: EmrOperation,
    r: &ProviderResponse,
    access_key_secret: &str,
    security_token: &str,
) -> Result<(), ProviderError> {
    let credentials = crate::providers::auth::acs3::AcsCredentials {
        access_key_id: "LTAI-fuzz".into(),
        access_key_secret: SecretString::new(access_key_secret),
        security_token: Some(SecretString::new(security_token)),
    };
    let data = emr_spark::data_of("Fuzz", r, &credentials)?;
    match op {
        EmrOperation::Get => emr_spark::token_of_get(data).map(drop),
        EmrOperation::List => emr_spark::tokens_of_list(data).map(drop),
        EmrOperation::Create => emr_spark::token_id_of_create(&data).map(drop),
        EmrOperation::Delete => Ok(()),
    }
}

/// A page of Fabric workspaces (called with `bearer`): its continuation URI and token.
pub fn fabric_workspaces(
    r: &ProviderResponse,
    bearer: &str,
) -> Result<(Option<String>, Option<String>), ProviderError> {
    let page: fabric::Page<fabric::Workspace> = fabric::parse("listWorkspaces", r, &[bearer])?;
    Ok((page.continuation_uri, page.continuation_token))
}

/// A page of a Fabric workspace's role assignments: its continuation URI and token.
pub fn fabric_role_assignments(
    r: &ProviderResponse,
    bearer: &str,
) -> Result<(Option<String>, Option<String>), ProviderError> {
    let page: fabric::Page<fabric::RoleAssignment> =
        fabric::parse("listWorkspaceRoleAssignments", r, &[bearer])?;
    Ok((page.continuation_uri, page.continuation_token))
}

/// Fabric's decision after a page: the next URL, or `None` at the end.
pub fn fabric_next(
    policy: &EndpointPolicy,
    base: &Url,
    first: &Url,
    uri: Option<&str>,
    token: Option<&str>,
) -> Result<Option<Url>, ProviderError> {
    fabric::next_page(policy, base, first, "listWorkspaces", uri, token)
}

/// The first URL of a Fabric workspace listing (with a `roles` filter).
pub fn fabric_first(base: &Url, roles: &[&str]) -> Result<Url, ProviderError> {
    fabric::workspaces_url(base, roles)
}

/// A page of `GET /notebooks/` (called with `token`): its `next` link.
pub fn datarobot_notebooks(
    r: &ProviderResponse,
    token: &str,
) -> Result<Option<String>, ProviderError> {
    let page: datarobot::Page<datarobot::NotebookSummary> =
        datarobot::parse("listNotebooks", r, &[token])?;
    Ok(page.next)
}

/// A page of one notebook's shared roles: its `next` link.
pub fn datarobot_roles(r: &ProviderResponse, token: &str) -> Result<Option<String>, ProviderError> {
    let page: datarobot::Page<datarobot::SharedRole> =
        datarobot::parse("getNotebookSharedRoles", r, &[token])?;
    Ok(page.next)
}

/// The bulk shared-roles answer: how many notebooks it lists.
pub fn datarobot_bulk(r: &ProviderResponse, token: &str) -> Result<usize, ProviderError> {
    let body: datarobot::BulkResponse = datarobot::parse("listNotebooksSharedRoles", r, &[token])?;
    Ok(body.data.len())
}

/// DataRobot's decision after a page: the next URL, or `None` at the end.
pub fn datarobot_next(
    policy: &EndpointPolicy,
    base: &Url,
    next: Option<&str>,
) -> Result<Option<Url>, ProviderError> {
    datarobot::next_page(policy, base, "listNotebooks", next)
}
