//! Alibaba Cloud RRSA (RAM Roles for Service Accounts): the operator pod's OIDC token exchanged
//! for temporary credentials with STS `AssumeRoleWithOIDC` (docs/providers.md §4.5).
//!
//! The configuration comes from the environment the RRSA webhook injects
//! (`ALIBABA_CLOUD_ROLE_ARN`, `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`, `ALIBABA_CLOUD_OIDC_TOKEN_FILE`,
//! optional `ALIBABA_CLOUD_STS_REGION`, `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED`,
//! `ALIBABA_CLOUD_STS_ENDPOINT`, `ALIBABA_CLOUD_ROLE_SESSION_NAME`). The token file is read for
//! every STS request (the kubelet rotates it). The STS credentials are cached until shortly
//! before their `Expiration` and shared by every resource; concurrent callers wait for one STS
//! request instead of each sending their own. The OIDC token and the credentials it buys belong
//! to the operator itself, so STS is called only at its official hosts over https.

use crate::providers::auth::acs3::{self, AcsCredentials};
use crate::providers::endpoint::{EndpointPolicy, Service};
use crate::providers::error::{ProviderError, ProviderErrorKind};
use crate::providers::http::{Call, HttpClient};
use crate::providers::ratelimit::RateKey;
use crate::redact::SecretString;
use jiff::Timestamp;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Requested lifetime of the STS credentials (the SDK default; STS allows 900 s and more).
pub const DURATION_SECONDS: u64 = 3600;
/// The credentials are renewed this long before they expire (as the official SDK does), or a
/// quarter of their lifetime if that is shorter.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(15 * 60);
/// STS API version.
pub const STS_VERSION: &str = "2015-04-01";
/// Role session name when `ALIBABA_CLOUD_ROLE_SESSION_NAME` is not set.
pub const DEFAULT_SESSION_NAME: &str = "workspace-access-operator";

/// Looks up an environment variable (replaceable in tests).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Why RRSA credentials could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RrsaError {
    /// The operator pod is not set up for RRSA (variable missing, token file unreadable, STS
    /// endpoint not official).
    #[error("{0}")]
    NotConfigured(String),
    /// STS refused or failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// The RRSA configuration of the operator pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrsaConfig {
    /// `ALIBABA_CLOUD_ROLE_ARN`.
    pub role_arn: String,
    /// `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`.
    pub oidc_provider_arn: String,
    /// `ALIBABA_CLOUD_OIDC_TOKEN_FILE`.
    pub token_file: PathBuf,
    /// `ALIBABA_CLOUD_ROLE_SESSION_NAME`, default [`DEFAULT_SESSION_NAME`].
    pub session_name: String,
    /// The STS endpoint: `ALIBABA_CLOUD_STS_ENDPOINT`, else `sts[-vpc].<ALIBABA_CLOUD_STS_REGION>
    /// .aliyuncs.com`, else `sts.aliyuncs.com`.
    pub sts_endpoint: Url,
}

impl RrsaConfig {
    /// Reads the configuration. Missing variables are [`RrsaError::NotConfigured`].
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, RrsaError> {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let required = |name: &str| {
            var(name).ok_or_else(|| {
                RrsaError::NotConfigured(format!(
                    "alibaba.rrsa: {name} is not set in the operator pod; enable RRSA for the \
                     operator's service account"
                ))
            })
        };
        let role_arn = required("ALIBABA_CLOUD_ROLE_ARN")?;
        let oidc_provider_arn = required("ALIBABA_CLOUD_OIDC_PROVIDER_ARN")?;
        let token_file = PathBuf::from(required("ALIBABA_CLOUD_OIDC_TOKEN_FILE")?);
        let session_name =
            var("ALIBABA_CLOUD_ROLE_SESSION_NAME").unwrap_or_else(|| DEFAULT_SESSION_NAME.into());
        let endpoint = match var("ALIBABA_CLOUD_STS_ENDPOINT") {
            Some(e) if e.contains("://") => e,
            Some(host) => format!("https://{host}"),
            None => {
                let vpc = var("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED")
                    .is_some_and(|v| v.eq_ignore_ascii_case("true"));
                let prefix = if vpc { "sts-vpc" } else { "sts" };
                match var("ALIBABA_CLOUD_STS_REGION") {
                    Some(region) => format!("https://{prefix}.{region}.aliyuncs.com"),
                    None => "https://sts.aliyuncs.com".into(),
                }
            }
        };
        let sts_endpoint = Url::parse(&endpoint).map_err(|_| {
            RrsaError::NotConfigured(
                "alibaba.rrsa: the STS endpoint from the operator's environment is not a valid URL"
                    .into(),
            )
        })?;
        Ok(Self {
            role_arn,
            oidc_provider_arn,
            token_file,
            session_name,
            sts_endpoint,
        })
    }
}

#[derive(Clone)]
struct Cached {
    config: RrsaConfig,
    credentials: AcsCredentials,
    refresh_at: Timestamp,
}

/// The operator pod's RRSA credentials, cached and shared.
pub struct RrsaCredentials {
    env: EnvLookup,
    official_only: bool,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl Default for RrsaCredentials {
    fn default() -> Self {
        Self::from_process_env()
    }
}

impl RrsaCredentials {
    /// Reads the configuration from the process environment.
    pub fn from_process_env() -> Self {
        Self::with_env(Arc::new(|name| std::env::var(name).ok()))
    }

    /// Reads the configuration through `env`.
    pub fn with_env(env: EnvLookup) -> Self {
        Self {
            env,
            official_only: true,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Like [`Self::with_env`], but STS may be any host (for mock servers in tests).
    #[cfg(test)]
    pub(crate) fn with_env_any_endpoint(env: EnvLookup) -> Self {
        Self {
            official_only: false,
            ..Self::with_env(env)
        }
    }

    /// The rate-limit bucket of calls made with these credentials: the role's (`None` when
    /// RRSA is not configured).
    pub fn rate_key(&self) -> Option<RateKey> {
        RrsaConfig::from_env(self.env.as_ref())
            .ok()
            .map(|c| RateKey::sts_role(&c.role_arn))
    }

    /// Valid STS credentials: the cached ones, or new ones from `AssumeRoleWithOIDC`. Callers
    /// arriving while a request is under way wait for its result.
    pub async fn credentials(
        &self,
        http: &HttpClient,
        now: Timestamp,
    ) -> Result<AcsCredentials, RrsaError> {
        let config = RrsaConfig::from_env(self.env.as_ref())?;
        if self.official_only
            && !EndpointPolicy::is_official(Service::AlibabaSts, &config.sts_endpoint)
        {
            return Err(RrsaError::NotConfigured(
                "alibaba.rrsa: the STS endpoint from the operator's environment is not an official \
                 Alibaba Cloud STS host over https; the operator's OIDC token is sent nowhere else"
                    .into(),
            ));
        }
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && c.config == config
            && now < c.refresh_at
        {
            return Ok(c.credentials.clone());
        }
        let (credentials, expiration) = assume_role_with_oidc(http, &config, now).await?;
        let lifetime = crate::time::duration_between(now, expiration);
        let margin = REFRESH_MARGIN.min(lifetime / 4);
        let refresh_at = crate::time::sub(expiration, margin);
        *cache = Some(Cached {
            config,
            credentials: credentials.clone(),
            refresh_at,
        });
        Ok(credentials)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeRoleResponse {
    credentials: Option<StsCredentials>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StsCredentials {
    access_key_id: String,
    access_key_secret: SecretString,
    security_token: SecretString,
    expiration: String,
}

/// One `AssumeRoleWithOIDC` call (anonymous, parameters in the query as the official SDK sends
/// them). Returns the credentials and when they expire.
pub async fn assume_role_with_oidc(
    http: &HttpClient,
    config: &RrsaConfig,
    now: Timestamp,
) -> Result<(AcsCredentials, Timestamp), RrsaError> {
    let token = tokio::fs::read_to_string(&config.token_file)
        .await
        .map_err(|e| {
            RrsaError::NotConfigured(format!(
                "alibaba.rrsa: cannot read the OIDC token file {} named by \
                 ALIBABA_CLOUD_OIDC_TOKEN_FILE: {}",
                config.token_file.display(),
                e.kind()
            ))
        })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(RrsaError::NotConfigured(format!(
            "alibaba.rrsa: the OIDC token file {} is empty",
            config.token_file.display()
        )));
    }
    let duration = DURATION_SECONDS.to_string();
    let timestamp = acs3::acs_date(now);
    let query = acs3::canonical_query_string(&[
        ("Action", "AssumeRoleWithOIDC"),
        ("Format", "JSON"),
        ("Version", STS_VERSION),
        ("DurationSeconds", duration.as_str()),
        ("RoleArn", config.role_arn.as_str()),
        ("OIDCProviderArn", config.oidc_provider_arn.as_str()),
        ("OIDCToken", token),
        ("RoleSessionName", config.session_name.as_str()),
        ("Timestamp", timestamp.as_str()),
    ]);
    let mut url = config.sts_endpoint.clone();
    url.set_path("/");
    url.set_query(Some(&query));
    // STS limits per account; the role names it.
    let http = http.for_credential(RateKey::sts_role(&config.role_arn));
    let request = http
        .reqwest()
        .get(url)
        .header("accept", "application/json")
        .build()
        .map_err(|_| {
            ProviderError::new(
                ProviderErrorKind::InvalidRequest,
                "internal: could not build the STS request",
            )
        })?;
    let call = Call {
        provider: "sts",
        operation: "AssumeRoleWithOIDC",
    };
    let response = http.execute(call, request).await?;
    if !response.is_success() {
        return Err(acs3::provider_error(
            "STS AssumeRoleWithOIDC",
            response.status,
            &response.headers,
            &response.body,
            now,
            &[token],
        )
        .into());
    }
    let parsed: AssumeRoleResponse = response.json("STS AssumeRoleWithOIDC")?;
    let c = parsed.credentials.ok_or_else(|| {
        ProviderError::new(
            ProviderErrorKind::InvalidResponse,
            "STS AssumeRoleWithOIDC answered without Credentials",
        )
    })?;
    let expiration: Timestamp = c.expiration.parse().map_err(|_| {
        ProviderError::new(
            ProviderErrorKind::InvalidResponse,
            "STS AssumeRoleWithOIDC answered with an unreadable Expiration",
        )
    })?;
    if c.access_key_id.is_empty() || c.access_key_secret.is_empty() || c.security_token.is_empty() {
        return Err(ProviderError::new(
            ProviderErrorKind::InvalidResponse,
            "STS AssumeRoleWithOIDC answered with incomplete Credentials",
        )
        .into());
    }
    Ok((
        AcsCredentials {
            access_key_id: c.access_key_id,
            access_key_secret: c.access_key_secret,
            security_token: Some(c.security_token),
        },
        expiration,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::providers::http::HttpOptions;
    use httpmock::prelude::*;
    use std::collections::HashMap;

    fn http() -> HttpClient {
        HttpClient::new(HttpOptions::default(), Arc::new(Metrics::new())).unwrap()
    }

    fn env(vars: &[(&str, &str)]) -> EnvLookup {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Arc::new(move |k| m.get(k).cloned())
    }

    fn token_file(content: &str) -> (tempdir::Dir, String) {
        let dir = tempdir::Dir::new();
        let path = dir.path.join("token");
        std::fs::write(&path, content).unwrap();
        let p = path.to_string_lossy().into_owned();
        (dir, p)
    }

    /// A throwaway directory (no extra dependency for one test helper).
    mod tempdir {
        pub struct Dir {
            pub path: std::path::PathBuf,
        }
        impl Dir {
            pub fn new() -> Self {
                let path =
                    std::env::temp_dir().join(format!("wao-sts-{:x}", rand::random::<u64>()));
                std::fs::create_dir_all(&path).unwrap();
                Self { path }
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    const OK: &str = r#"{"RequestId":"3D57EAD2","AssumedRoleUser":{"Arn":"acs:ram::1:role/r/s","AssumedRoleId":"3:s"},
        "Credentials":{"SecurityToken":"CAIShwJ1q6Ft5B2yfSjIr5bSEsj4g7BihPWGWHbBi2QmSOJFgJvJ1Dz2IHhMf3NpBOkZvvQ1lGlU6/4YloltTtpfTEmBc5I179Fd6VqqZNTZqcy74qwHmYS9RXv5nOwAiZ28Wf7waf+AUBnGCTmd5MMYo9bTcTGlQCZuW//toJV7b9MRcxClZD5dfrl/LRdjr8lo1xGzUPG2KUzSn3b3BkhlsRYe72Rk8vaHxdaAzRDcgVbmqJcSvJ+jC4C8Ys9gG519XtypvopxbbGT8CNZ5z9A9qp9kM49/izc7P6QH35b4RiNL8/Z7tQNXwhiffobHa9YrfHgmNhlvvDSj43t1ytVOeZcX0akQ5u7ku7ZHP+oLt8jaYvjP3PE3rLpMYLu4T48ZXUSODtDYcZDUHhrEk4RUjXdI6Of8UrWSQC7Wsr217otg7Fyyk3s8MaHAkWLX7SB2DwEB4c4aEoKjSWmN5ezD4SEAAVf8YhYy8h7ujf1zE","AccessKeySecret":"CVwjCkNzTMupZ8NbTCxCBRq3K16jtcWFTJAyBEv2****","Expiration":"2021-10-20T04:27:09Z","AccessKeyId":"STS.NUgYrLnoC37mZZCNnAbez****"},
        "OIDCTokenInfo":{"Subject":"KryrkIdjylZb7agUgCEf****","Issuer":"https://dev-xxxxxx.okta.com","ClientIds":"496271242565057****"}}"#;

    fn now() -> Timestamp {
        "2021-10-20T03:27:09Z".parse().unwrap()
    }

    #[tokio::test]
    async fn exchanges_the_token_file_and_caches_until_shortly_before_expiration() {
        let server = MockServer::start_async().await;
        let (_dir, path) = token_file("oidc-token-1\n");
        let sts = server
            .mock_async(|when, then| {
                when.method(GET)
                    .path("/")
                    .query_param("Action", "AssumeRoleWithOIDC")
                    .query_param("Format", "JSON")
                    .query_param("Version", "2015-04-01")
                    .query_param("DurationSeconds", "3600")
                    .query_param("RoleArn", "acs:ram::1:role/r")
                    .query_param("OIDCProviderArn", "acs:ram::1:oidc-provider/ack-rrsa-c1")
                    .query_param("OIDCToken", "oidc-token-1")
                    .query_param("RoleSessionName", "workspace-access-operator")
                    .query_param("Timestamp", "2021-10-20T03:27:09Z");
                then.status(200).body(OK);
            })
            .await;
        let rrsa = RrsaCredentials::with_env_any_endpoint(env(&[
            ("ALIBABA_CLOUD_ROLE_ARN", "acs:ram::1:role/r"),
            (
                "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
                "acs:ram::1:oidc-provider/ack-rrsa-c1",
            ),
            ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", &path),
            ("ALIBABA_CLOUD_STS_ENDPOINT", &server.base_url()),
        ]));
        let h = http();
        let c = rrsa.credentials(&h, now()).await.unwrap();
        assert_eq!(c.access_key_id, "STS.NUgYrLnoC37mZZCNnAbez****");
        assert!(
            c.security_token
                .as_ref()
                .unwrap()
                .expose()
                .starts_with("CAIS")
        );
        assert_eq!(format!("{c:?}").matches("[redacted]").count(), 2, "{c:?}");
        // Cached: 44 minutes later (expiry at +60 min, renewed 15 min before) no new call.
        let later = crate::time::add(now(), Duration::from_secs(44 * 60));
        rrsa.credentials(&h, later).await.unwrap();
        assert_eq!(sts.calls_async().await, 1);
        // Within the margin: a new exchange.
        let renewed = server
            .mock_async(|when, then| {
                when.method(GET)
                    .query_param("Action", "AssumeRoleWithOIDC")
                    .query_param("Timestamp", "2021-10-20T04:13:09Z");
                then.status(200).body(OK);
            })
            .await;
        let stale = crate::time::add(now(), Duration::from_secs(46 * 60));
        rrsa.credentials(&h, stale).await.unwrap();
        assert_eq!(sts.calls_async().await, 1);
        assert_eq!(renewed.calls_async().await, 1);
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_request() {
        let server = MockServer::start_async().await;
        let (_dir, path) = token_file("t");
        let sts = server
            .mock_async(|when, then| {
                when.method(GET).query_param("Action", "AssumeRoleWithOIDC");
                then.status(200).delay(Duration::from_millis(200)).body(OK);
            })
            .await;
        let rrsa = Arc::new(RrsaCredentials::with_env_any_endpoint(env(&[
            ("ALIBABA_CLOUD_ROLE_ARN", "r"),
            ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "p"),
            ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", &path),
            ("ALIBABA_CLOUD_STS_ENDPOINT", &server.base_url()),
        ])));
        let h = http();
        let calls = (0..8).map(|_| {
            let rrsa = rrsa.clone();
            let h = h.clone();
            tokio::spawn(async move { rrsa.credentials(&h, now()).await })
        });
        for r in futures::future::join_all(calls).await {
            assert!(r.unwrap().is_ok());
        }
        assert_eq!(sts.calls_async().await, 1);
    }

    #[tokio::test]
    async fn the_token_file_is_read_for_every_request() {
        let server = MockServer::start_async().await;
        let (_dir, path) = token_file("first");
        let first = server
            .mock_async(|when, then| {
                when.query_param("OIDCToken", "first");
                then.status(200).body(OK);
            })
            .await;
        let second = server
            .mock_async(|when, then| {
                when.query_param("OIDCToken", "second");
                then.status(200).body(OK);
            })
            .await;
        let rrsa = RrsaCredentials::with_env_any_endpoint(env(&[
            ("ALIBABA_CLOUD_ROLE_ARN", "r"),
            ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "p"),
            ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", &path),
            ("ALIBABA_CLOUD_STS_ENDPOINT", &server.base_url()),
        ]));
        let h = http();
        rrsa.credentials(&h, now()).await.unwrap();
        std::fs::write(&path, "second").unwrap();
        // Past the refresh time: the rotated file content is sent.
        let stale = crate::time::add(now(), Duration::from_secs(50 * 60));
        rrsa.credentials(&h, stale).await.unwrap();
        assert_eq!(first.calls_async().await, 1);
        assert_eq!(second.calls_async().await, 1);
    }

    #[tokio::test]
    async fn sts_errors_and_missing_configuration() {
        let server = MockServer::start_async().await;
        let (_dir, path) = token_file("oidc-secret-token");
        server
            .mock_async(|when, then| {
                when.any_request();
                then.status(400).body(
                    r#"{"RequestId":"R1","HostId":"sts.aliyuncs.com","Code":"AuthenticationFail.OIDCToken.Expired","Message":"The OIDC token has expired."}"#,
                );
            })
            .await;
        let vars = [
            ("ALIBABA_CLOUD_ROLE_ARN", "r"),
            ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "p"),
            ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", path.as_str()),
            ("ALIBABA_CLOUD_STS_ENDPOINT", &server.base_url()),
        ];
        let h = http();
        let err = RrsaCredentials::with_env_any_endpoint(env(&vars))
            .credentials(&h, now())
            .await
            .unwrap_err();
        let RrsaError::Provider(p) = err else {
            panic!("{err:?}")
        };
        assert!(
            p.message
                .contains("AuthenticationFail.OIDCToken.Expired: The OIDC token has expired."),
            "{}",
            p.message
        );
        assert!(!p.to_string().contains("oidc-secret-token"), "{p}");
        assert_eq!(p.kind, ProviderErrorKind::AuthenticationFailed);
        assert_eq!(p.request_id.as_deref(), Some("R1"));

        // A missing variable, an unreadable file.
        let err = RrsaCredentials::with_env_any_endpoint(env(&vars[1..]))
            .credentials(&h, now())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RrsaError::NotConfigured(m) if m.contains("ALIBABA_CLOUD_ROLE_ARN")),
            "{err}"
        );
        let mut gone = vars;
        gone[2].1 = "/nonexistent/wao/token";
        let err = RrsaCredentials::with_env_any_endpoint(env(&gone))
            .credentials(&h, now())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RrsaError::NotConfigured(m) if m.contains("cannot read the OIDC token file")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn only_official_sts_hosts_receive_the_pod_token() {
        let server = MockServer::start_async().await;
        let hit = server
            .mock_async(|when, then| {
                when.any_request();
                then.status(200).body(OK);
            })
            .await;
        let (_dir, path) = token_file("t");
        let err = RrsaCredentials::with_env(env(&[
            ("ALIBABA_CLOUD_ROLE_ARN", "r"),
            ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "p"),
            ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", &path),
            ("ALIBABA_CLOUD_STS_ENDPOINT", &server.base_url()),
        ]))
        .credentials(&http(), now())
        .await
        .unwrap_err();
        assert!(err.to_string().contains("not an official"), "{err}");
        assert_eq!(hit.calls_async().await, 0);
    }

    #[test]
    fn sts_endpoint_from_region_and_vpc() {
        let base = [
            ("ALIBABA_CLOUD_ROLE_ARN", "r"),
            ("ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "p"),
            ("ALIBABA_CLOUD_OIDC_TOKEN_FILE", "/f"),
        ];
        let c = RrsaConfig::from_env(env(&base).as_ref()).unwrap();
        assert_eq!(c.sts_endpoint.as_str(), "https://sts.aliyuncs.com/");
        let mut v = base.to_vec();
        v.push(("ALIBABA_CLOUD_STS_REGION", "cn-hangzhou"));
        let c = RrsaConfig::from_env(env(&v).as_ref()).unwrap();
        assert_eq!(
            c.sts_endpoint.as_str(),
            "https://sts.cn-hangzhou.aliyuncs.com/"
        );
        v.push(("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED", "true"));
        let c = RrsaConfig::from_env(env(&v).as_ref()).unwrap();
        assert_eq!(
            c.sts_endpoint.as_str(),
            "https://sts-vpc.cn-hangzhou.aliyuncs.com/"
        );
        assert!(EndpointPolicy::is_official(
            Service::AlibabaSts,
            &c.sts_endpoint
        ));
        assert_eq!(c.session_name, DEFAULT_SESSION_NAME);
    }
}
