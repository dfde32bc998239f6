//! Alibaba Cloud EMR Serverless Spark (API 2023-08-08, ROA style): the five Livy compute token
//! operations (docs/providers.md §4.2), signed with ACS3-HMAC-SHA256.
//!
//! Every response is the envelope `{requestId, code, message, data}`; `code` "1000000" is
//! success, anything else is an error even on HTTP 200. Errors are classified by their code
//! first (`Throttling*`, signature and AccessKey codes, `Forbidden*`, not-found codes) and the
//! HTTP status second, see [`acs3::error_kind`]. Times are epoch milliseconds.

use crate::providers::auth::acs3::{self, AcsCredentials, ErrorFields, Operation};
use crate::providers::error::{ProviderError, ProviderErrorKind};
use crate::providers::http::{Call, HttpClient, ProviderResponse};
use crate::providers::segment;
use crate::redact::SecretString;
use jiff::Timestamp;
use reqwest::Method;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use url::Url;

/// API version (`x-acs-version`).
pub const API_VERSION: &str = "2023-08-08";
/// The envelope `code` of a successful call.
pub const SUCCESS_CODE: &str = "1000000";
/// Provider label in metrics.
pub const PROVIDER: &str = "emr_spark";

/// Default endpoint of a region.
pub fn default_endpoint(region_id: &str) -> String {
    format!("https://emr-serverless-spark.{region_id}.aliyuncs.com")
}

/// A Livy Gateway: where Livy compute tokens live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivyCompute {
    /// Region, sent as the `regionId` query parameter.
    pub region_id: String,
    /// Workspace ID (`workspaceBizId`).
    pub workspace_id: String,
    /// Livy compute ID.
    pub livy_compute_id: String,
}

/// A token's `autoExpireConfiguration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoExpire {
    /// Whether the token expires by itself.
    pub enable: bool,
    /// Days until it expires.
    pub expire_days: i32,
}

/// A Livy compute token as Get or List return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivyTokenInfo {
    /// Token ID.
    pub token_id: String,
    /// Token name.
    pub name: Option<String>,
    /// The token content (absent in some List answers).
    pub token: Option<SecretString>,
    /// Who created it (`createdBy` in Get, `createdby` in List).
    pub created_by: Option<String>,
    /// When it was created.
    pub create_time: Option<Timestamp>,
    /// When it expires.
    pub expire_time: Option<Timestamp>,
    /// When it was last used.
    pub last_used_time: Option<Timestamp>,
    /// Its expiry configuration (Get only).
    pub auto_expire: Option<AutoExpire>,
}

/// The body of Create.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// Token name.
    pub name: String,
    /// Token content to set (at least 16 characters); `None` lets the service generate one.
    pub token: Option<SecretString>,
    /// Expiry configuration.
    pub auto_expire: Option<AutoExpire>,
}

impl TokenRequest {
    fn to_json(&self) -> Vec<u8> {
        let mut body = serde_json::Map::new();
        body.insert("name".into(), Value::from(self.name.clone()));
        if let Some(t) = &self.token {
            body.insert("token".into(), Value::from(t.expose()));
        }
        if let Some(a) = self.auto_expire {
            body.insert(
                "autoExpireConfiguration".into(),
                serde_json::json!({"enable": a.enable, "expireDays": a.expire_days}),
            );
        }
        Value::Object(body).to_string().into_bytes()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Create,
    Get,
    List,
    Delete,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Create => "CreateLivyComputeToken",
            Action::Get => "GetLivyComputeToken",
            Action::List => "ListLivyComputeToken",
            Action::Delete => "DeleteLivyComputeToken",
        }
    }

    fn method(self) -> Method {
        match self {
            Action::Create => Method::PUT,
            Action::Get | Action::List => Method::GET,
            Action::Delete => Method::DELETE,
        }
    }
}

/// A client of one EMR Serverless Spark endpoint with one set of credentials.
#[derive(Clone)]
pub struct EmrSparkClient {
    http: HttpClient,
    endpoint: Url,
    credentials: AcsCredentials,
}

impl EmrSparkClient {
    /// A client for `endpoint` (checked against the endpoint policy by the caller).
    pub fn new(http: HttpClient, endpoint: Url, credentials: AcsCredentials) -> Self {
        Self {
            http,
            endpoint,
            credentials,
        }
    }

    /// `CreateLivyComputeToken` (PUT): creates a token; returns its ID.
    pub async fn create_token(
        &self,
        compute: &LivyCompute,
        request: &TokenRequest,
    ) -> Result<String, ProviderError> {
        let data = self
            .call(Action::Create, compute, None, Some(request.to_json()))
            .await?;
        token_id_of_create(&data)
    }

    /// `GetLivyComputeToken` (GET): one token, with its content.
    pub async fn get_token(
        &self,
        compute: &LivyCompute,
        token_id: &str,
    ) -> Result<LivyTokenInfo, ProviderError> {
        let data = self
            .call(Action::Get, compute, Some(token_id), None)
            .await?;
        token_of_get(data)
    }

    /// `ListLivyComputeToken` (GET): every token of the Livy Gateway (the API has no paging).
    pub async fn list_tokens(
        &self,
        compute: &LivyCompute,
    ) -> Result<Vec<LivyTokenInfo>, ProviderError> {
        let data = self.call(Action::List, compute, None, None).await?;
        tokens_of_list(data)
    }

    /// `DeleteLivyComputeToken` (DELETE).
    pub async fn delete_token(
        &self,
        compute: &LivyCompute,
        token_id: &str,
    ) -> Result<(), ProviderError> {
        self.call(Action::Delete, compute, Some(token_id), None)
            .await
            .map(drop)
    }

    async fn call(
        &self,
        action: Action,
        compute: &LivyCompute,
        token_id: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Value, ProviderError> {
        let url = operation_url(&self.endpoint, compute, token_id)?;
        let mut builder = self.http.reqwest().request(action.method(), url);
        if let Some(b) = body {
            builder = builder.body(b);
        }
        let mut request = builder.build().map_err(|_| {
            ProviderError::new(
                ProviderErrorKind::InvalidRequest,
                format!("internal: could not build the {} request", action.name()),
            )
        })?;
        acs3::sign_request(
            &mut request,
            &self.credentials,
            Operation {
                action: action.name(),
                version: API_VERSION,
            },
            Timestamp::now(),
            &acs3::new_nonce(),
        )?;
        let call = Call {
            provider: PROVIDER,
            operation: action.name(),
        };
        let response = self.http.execute(call, request).await?;
        data_of(action.name(), &response, &self.credentials)
    }
}

/// The URL of an operation: the endpoint's path, then
/// `api/interactive/v1/workspace/{workspaceBizId}/livycompute/{livyComputeId}/token[/{tokenId}]`
/// with each parameter percent-encoded as one segment (refused if it can't be one, see
/// [`segment::check`]), and `?regionId=`.
pub fn operation_url(
    endpoint: &Url,
    compute: &LivyCompute,
    token_id: Option<&str>,
) -> Result<Url, ProviderError> {
    segment::check("the workspace ID", &compute.workspace_id)?;
    segment::check("the Livy compute ID", &compute.livy_compute_id)?;
    if let Some(id) = token_id {
        segment::check("the token ID", id)?;
    }
    let mut segments = vec![
        "api",
        "interactive",
        "v1",
        "workspace",
        compute.workspace_id.as_str(),
        "livycompute",
        compute.livy_compute_id.as_str(),
        "token",
    ];
    segments.extend(token_id);
    let mut url = endpoint.clone();
    let path = acs3::segment_path(endpoint.path(), &segments);
    url.set_path(&path);
    url.set_query(Some(&acs3::canonical_query_string(&[(
        "regionId",
        compute.region_id.as_str(),
    )])));
    url.set_fragment(None);
    Ok(url)
}

/// The `data` of a response, or the error it carries: a non-2xx status, or an envelope `code`
/// other than "1000000" (also on HTTP 200); `secrets` are scrubbed from it.
pub fn envelope_data(
    what: &str,
    response: &ProviderResponse,
    secrets: &[&str],
) -> Result<Value, ProviderError> {
    let now = Timestamp::now();
    let error = || {
        acs3::provider_error(
            what,
            response.status,
            &response.headers,
            &response.body,
            now,
            secrets,
        )
    };
    if !response.is_success() {
        return Err(error());
    }
    let v: Value = response.json(what)?;
    match ErrorFields::from_json(&v).code.as_deref() {
        // No code at all: nothing says it failed; the data is checked by the caller.
        Some(SUCCESS_CODE) | None => Ok(v.get("data").cloned().unwrap_or(Value::Null)),
        Some(_) => Err(error()),
    }
}

/// The `data` of a response to a call signed with `credentials`, or its error with the
/// credentials scrubbed from it (a provider may echo what it was sent).
pub(crate) fn data_of(
    what: &str,
    response: &ProviderResponse,
    credentials: &AcsCredentials,
) -> Result<Value, ProviderError> {
    let token = credentials
        .security_token
        .as_ref()
        .map_or("", SecretString::expose);
    envelope_data(
        what,
        response,
        &[credentials.access_key_secret.expose(), token],
    )
}

/// The token in GetLivyComputeToken's `data`, which must carry its content.
pub(crate) fn token_of_get(data: Value) -> Result<LivyTokenInfo, ProviderError> {
    let info = parse_token(Action::Get, data)?;
    if info.token.as_ref().is_none_or(SecretString::is_empty) {
        return Err(missing(Action::Get, "data.token"));
    }
    Ok(info)
}

/// The tokens in ListLivyComputeToken's `data`.
pub(crate) fn tokens_of_list(data: Value) -> Result<Vec<LivyTokenInfo>, ProviderError> {
    // An answer without `data` says nothing about the tokens; taken for "none", it would
    // hide a token whose create answer was lost, and a second one would be created.
    if data.is_null() {
        return Err(missing(Action::List, "data"));
    }
    let tokens = match data.get("tokens") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err(missing(Action::List, "data.tokens as a list")),
    };
    tokens
        .into_iter()
        .map(|t| parse_token(Action::List, t))
        .collect()
}

/// The ID in CreateLivyComputeToken's `data`.
pub(crate) fn token_id_of_create(data: &Value) -> Result<String, ProviderError> {
    data.get("tokenId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| missing(Action::Create, "data.tokenId"))
}

fn missing(action: Action, what: &str) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::InvalidResponse,
        format!("{} answered without {what}", action.name()),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenData {
    token_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    token: Option<SecretString>,
    #[serde(default, alias = "createdby")]
    created_by: Option<String>,
    #[serde(default, deserialize_with = "epoch_ms")]
    create_time: Option<Timestamp>,
    #[serde(default, deserialize_with = "epoch_ms")]
    expire_time: Option<Timestamp>,
    #[serde(default, deserialize_with = "epoch_ms")]
    last_used_time: Option<Timestamp>,
    #[serde(default)]
    auto_expire_configuration: Option<AutoExpireData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AutoExpireData {
    #[serde(default)]
    enable: Option<bool>,
    #[serde(default)]
    expire_days: Option<i32>,
}

fn parse_token(action: Action, data: Value) -> Result<LivyTokenInfo, ProviderError> {
    if data.is_null() {
        return Err(missing(action, "data"));
    }
    // serde's message could quote a value (a token), so only the category is reported.
    let t: TokenData = serde_json::from_value(data).map_err(|_| {
        ProviderError::new(
            ProviderErrorKind::InvalidResponse,
            format!(
                "malformed {} response: unexpected shape of a token",
                action.name()
            ),
        )
    })?;
    Ok(LivyTokenInfo {
        token_id: t.token_id,
        name: t.name.filter(|s| !s.is_empty()),
        token: t.token,
        created_by: t.created_by.filter(|s| !s.is_empty()),
        create_time: t.create_time,
        expire_time: t.expire_time,
        last_used_time: t.last_used_time,
        auto_expire: t.auto_expire_configuration.map(|a| AutoExpire {
            enable: a.enable.unwrap_or(false),
            expire_days: a.expire_days.unwrap_or(0),
        }),
    })
}

/// Epoch milliseconds (a number, or digits in a string); 0 and null mean "none".
fn epoch_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    let ms = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| serde::de::Error::custom("time out of range"))?,
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s
            .parse::<i64>()
            .map_err(|_| serde::de::Error::custom("time is not epoch milliseconds"))?,
        Some(_) => return Err(serde::de::Error::custom("time is not epoch milliseconds")),
    };
    if ms <= 0 {
        return Ok(None);
    }
    Timestamp::from_millisecond(ms)
        .map(Some)
        .map_err(|_| serde::de::Error::custom("time out of range"))
}

#[cfg(test)]
mod tests;
