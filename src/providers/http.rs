//! The HTTP client every provider uses: rustls, timeouts, bounded bodies, no redirects to other
//! hosts, `Retry-After` parsing, provider-call metrics, and transport errors mapped to
//! [`ProviderError`]s whose messages never contain a URL's path or query (which may carry
//! tokens, e.g. STS AssumeRoleWithOIDC) or any header.

use crate::metrics::Metrics;
use crate::providers::endpoint::origin_of;
use crate::providers::error::{ProviderError, ProviderErrorKind, clip};
use crate::providers::ratelimit::{ProviderLimiter, RateKey, RateLimits};
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use std::{
    sync::{Arc, Once},
    time::Duration,
};

/// Longest `Retry-After` honoured; a larger value is clamped to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// User-Agent sent to providers.
pub const USER_AGENT: &str = concat!("workspace-access-operator/", env!("CARGO_PKG_VERSION"));

/// Settings of the HTTP client.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Whole-request timeout.
    pub timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Largest response body read; larger ones are an error.
    pub max_body_bytes: usize,
    /// Request rates per provider host and credential, and caps per host (default:
    /// unlimited; the `run` command sets the operator's defaults).
    pub rate_limits: RateLimits,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_body_bytes: 16 * 1024 * 1024,
            rate_limits: RateLimits::default(),
        }
    }
}

/// Names a provider call for metrics and messages.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// Provider label, e.g. `azure_ml`, `entra`, `fabric`, `datarobot`, `emr_spark`, `sts`.
    pub provider: &'static str,
    /// Operation label, e.g. `listNotebookAccessToken`.
    pub operation: &'static str,
}

/// In-place repeats of an idempotent request (a GET of one page) that the provider asked to
/// repeat soon: the status is one of `statuses` and the response carries a `Retry-After` of at
/// most `max_wait`. Anything else (no Retry-After, a longer one, a transport error) goes back to
/// the caller at once, whose reconciliation then backs off as a whole. Without this, one
/// throttled page among hundreds would restart a long listing from its first page.
#[derive(Clone, Copy, Debug)]
pub struct RetrySoon {
    /// HTTP statuses that may be repeated, e.g. 429 and 503.
    pub statuses: &'static [u16],
    /// Most attempts in all (1 = no repeat).
    pub attempts: u32,
    /// Longest `Retry-After` waited for in place.
    pub max_wait: Duration,
}

/// A provider's complete response.
#[derive(Debug)]
pub struct ProviderResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: bytes::Bytes,
}

impl ProviderResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header's value, if present and valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Retry-After` header (seconds or HTTP date), clamped to [`MAX_RETRY_AFTER`].
    pub fn retry_after(&self) -> Option<Duration> {
        parse_retry_after(self.header("retry-after")?, jiff::Timestamp::now())
    }

    /// Parses the body as JSON. A parse failure is [`ProviderErrorKind::InvalidResponse`] with a
    /// message naming only the error category and position, never the body's content.
    pub fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, ProviderError> {
        parse_json(&self.body, what).map_err(|e| e.with_status(self.status))
    }
}

/// Parses JSON without echoing any of the input in the error.
pub fn parse_json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| {
        let why = match e.classify() {
            serde_json::error::Category::Eof => "truncated",
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "unexpected shape",
            serde_json::error::Category::Io => "unreadable",
        };
        ProviderError::new(
            ProviderErrorKind::InvalidResponse,
            format!(
                "malformed {what} response: {why} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    let d = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else if let Ok(secs) = value.parse::<f64>() {
        if !(secs.is_finite() && secs >= 0.0) {
            return None;
        }
        Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()))
    } else {
        let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
        let delta = at.as_second() - now.as_second();
        Duration::from_secs(delta.max(0) as u64)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

static CRYPTO: Once = Once::new();

/// Installs ring as rustls's process-wide crypto provider (once).
pub fn install_crypto_provider() {
    CRYPTO.call_once(|| {
        // Another component may have installed one already; either is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The shared HTTP client. Clones share the connection pool, the metrics and the rate
/// limiter; [`HttpClient::for_credential`] makes the clone a provider client built for one
/// credential uses, whose calls count against that credential's buckets.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    options: HttpOptions,
    limiter: Arc<ProviderLimiter>,
    /// The credential the calls are made with (`None`: the host's bucket for calls without
    /// one).
    rate_key: Option<RateKey>,
}

impl HttpClient {
    /// Builds the client.
    pub fn new(options: HttpOptions, metrics: Arc<Metrics>) -> Result<Self, String> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // Follow a redirect only to the same scheme, host and port, and only a few times:
                // a provider can't send us (and our Authorization header) anywhere else.
                let same_origin = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| origin_of(first) == origin_of(attempt.url()));
                if same_origin && attempt.previous().len() < 3 {
                    attempt.follow()
                } else {
                    attempt.stop()
                }
            }))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self {
            client,
            metrics,
            limiter: Arc::new(ProviderLimiter::new(&options.rate_limits)),
            options,
            rate_key: None,
        })
    }

    /// This client for calls made with `credential`: they wait for slots in its bucket on
    /// each host (`--provider-rate` is per host and credential) besides any host cap.
    pub fn for_credential(&self, credential: RateKey) -> Self {
        Self {
            rate_key: Some(credential),
            ..self.clone()
        }
    }

    /// The rate limiter the clients share (for diagnostics and tests).
    pub fn limiter(&self) -> &Arc<ProviderLimiter> {
        &self.limiter
    }

    /// The underlying reqwest client, to build requests.
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.client
    }

    /// The metrics the client records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Sends a request and reads the whole response. Transport failures become
    /// [`ProviderErrorKind::Unavailable`]; the status is not interpreted here (each provider
    /// maps its own error bodies).
    pub async fn execute(
        &self,
        call: Call,
        request: reqwest::Request,
    ) -> Result<ProviderResponse, ProviderError> {
        let origin = origin_of(request.url());
        let host = request
            .url()
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !self
            .limiter
            .acquire(&host, self.rate_key.as_ref())
            .await
            .is_zero()
        {
            self.metrics.rate_limited(call.provider);
        }
        let started = std::time::Instant::now();
        let result = self.client.execute(request).await;
        self.metrics
            .provider_call_took(call.provider, call.operation, started.elapsed());
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                let (label, message) = describe_transport_error(&e, &origin, &self.options);
                self.metrics
                    .provider_call(call.provider, call.operation, label);
                return Err(ProviderError::new(ProviderErrorKind::Unavailable, message));
            }
        };
        let status = response.status().as_u16();
        self.metrics
            .provider_call(call.provider, call.operation, &status.to_string());
        let headers = response.headers().clone();
        let body = read_bounded(response, self.options.max_body_bytes, &origin)
            .await
            .map_err(|e| e.with_status(status))?;
        Ok(ProviderResponse {
            status,
            headers,
            body,
        })
    }
}

impl HttpClient {
    /// [`HttpClient::execute`], repeating the request in place as `retry` allows. Requests
    /// whose body can't be cloned are sent once.
    pub async fn execute_retrying(
        &self,
        call: Call,
        request: reqwest::Request,
        retry: RetrySoon,
    ) -> Result<ProviderResponse, ProviderError> {
        let mut attempt = 1;
        loop {
            let Some(this) = request.try_clone() else {
                return self.execute(call, request).await;
            };
            let response = self.execute(call, this).await?;
            if attempt >= retry.attempts || !retry.statuses.contains(&response.status) {
                return Ok(response);
            }
            match response.retry_after() {
                Some(wait) if wait <= retry.max_wait => {
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                _ => return Ok(response),
            }
        }
    }
}

async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
    origin: &str,
) -> Result<bytes::Bytes, ProviderError> {
    let mut buf = bytes::BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if buf.len() + chunk.len() > max {
                    return Err(ProviderError::new(
                        ProviderErrorKind::InvalidResponse,
                        format!("response from {origin} is larger than {max} bytes"),
                    ));
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timed out while reading the response"
                } else {
                    "connection broke while reading the response"
                };
                return Err(ProviderError::new(
                    ProviderErrorKind::Unavailable,
                    format!("{origin}: {kind}"),
                ));
            }
        }
    }
}

/// Why a connection could not be made: the DNS lookup, a refused or reset connection, a
/// timeout, or the TLS handshake (with the certificate problem). Read from the error's source
/// chain: kinds and library error texts, never a URL, header or body.
fn connect_cause(e: &reqwest::Error) -> Option<String> {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(tls) = tls_error(err) {
            return Some(describe_tls(tls));
        }
        let text = err.to_string();
        if text.starts_with("dns error") || text.contains("failed to lookup address") {
            return Some("DNS lookup failed (the host name does not resolve)".into());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            let what = match io.kind() {
                ConnectionRefused => Some("connection refused (nothing listens on that port)"),
                ConnectionReset | ConnectionAborted => Some("the connection was reset"),
                TimedOut => Some("the connection timed out"),
                HostUnreachable | NetworkUnreachable => Some("host or network unreachable"),
                _ => None,
            };
            if let Some(what) = what {
                return Some(what.into());
            }
        }
        source = err.source();
    }
    None
}

/// The rustls error `err` is or wraps (the TLS stream wraps it in I/O errors, whose `source()`
/// skips the wrapped error itself).
fn tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = err.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = err.downcast_ref::<std::io::Error>()?.get_ref()?;
    tls_error(inner)
}

/// A TLS failure in words, naming the certificate problem.
fn describe_tls(e: &rustls::Error) -> String {
    use rustls::CertificateError::*;
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let what = match c {
                UnknownIssuer => {
                    "issued by an unknown certificate authority (self-signed, or a private CA the \
                     operator doesn't trust)"
                        .to_owned()
                }
                Expired | ExpiredContext { .. } => "expired".to_owned(),
                NotValidYet | NotValidYetContext { .. } => "not valid yet".to_owned(),
                NotValidForName | NotValidForNameContext { .. } => {
                    "not valid for this host name".to_owned()
                }
                Revoked => "revoked".to_owned(),
                BadSignature => "badly signed".to_owned(),
                other => format!("refused: {other}"),
            };
            format!("TLS handshake failed: the server's certificate is {what}")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

/// A metric label and a secret-free message for a transport error.
fn describe_transport_error(
    e: &reqwest::Error,
    origin: &str,
    options: &HttpOptions,
) -> (&'static str, String) {
    if e.is_connect() {
        let cause = connect_cause(e).unwrap_or_else(|| {
            if e.is_timeout() {
                format!(
                    "no connection within {}",
                    crate::api::duration::format_duration(options.connect_timeout)
                )
            } else {
                "connection failed".to_owned()
            }
        });
        ("connect", format!("could not connect to {origin}: {cause}"))
    } else if e.is_timeout() {
        (
            "timeout",
            format!(
                "{origin} did not answer within {}",
                crate::api::duration::format_duration(options.timeout)
            ),
        )
    } else if e.is_redirect() {
        (
            "redirect",
            format!("{origin} redirected to another host, which is not followed"),
        )
    } else {
        // reqwest's own Display includes the URL (path and query); keep only its category.
        let what = if e.is_body() || e.is_decode() {
            "the response could not be read"
        } else if e.is_request() {
            "the request could not be sent"
        } else {
            "the request failed"
        };
        ("error", clip(&format!("{origin}: {what}"), 200))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::SecretString;
    use httpmock::prelude::*;

    fn client(timeout_ms: u64) -> HttpClient {
        HttpClient::new(
            HttpOptions {
                timeout: Duration::from_millis(timeout_ms),
                connect_timeout: Duration::from_millis(timeout_ms),
                max_body_bytes: 1024,
                rate_limits: RateLimits::default(),
            },
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    const CALL: Call = Call {
        provider: "test",
        operation: "op",
    };

    #[test]
    fn retry_after_seconds_and_dates() {
        let now: jiff::Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("55", now), Some(Duration::from_secs(55)));
        assert_eq!(parse_retry_after(" 2 ", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 10:01:40 GMT", now),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn json_errors_never_echo_the_body() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            n: u64,
        }
        let err = parse_json::<T>(br#"{"n": "secret-token-value"}"#, "test").unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::InvalidResponse);
        assert!(
            !err.message.contains("secret-token-value"),
            "{}",
            err.message
        );
        assert!(err.message.contains("unexpected shape"), "{}", err.message);
        let err = parse_json::<T>(br#"{"n": 1"#, "test").unwrap_err();
        assert!(err.message.contains("truncated"), "{}", err.message);
        let err = parse_json::<T>(b"<html>", "test").unwrap_err();
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
    }

    #[tokio::test]
    async fn records_status_and_reads_body() {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(GET).path("/ok");
                then.status(429).header("retry-after", "7").body("{}");
            })
            .await;
        let c = client(2000);
        let req = c.reqwest().get(server.url("/ok")).build().unwrap();
        let resp = c.execute(CALL, req).await.unwrap();
        assert_eq!(resp.status, 429);
        assert_eq!(resp.retry_after(), Some(Duration::from_secs(7)));
        assert!(
            c.metrics()
                .encode()
                .contains(r#"provider="test",operation="op",status="429""#)
        );
    }

    #[tokio::test]
    async fn short_retry_after_is_waited_for_in_place_a_bounded_number_of_times() {
        let server = MockServer::start_async().await;
        let soon = server
            .mock_async(|when, then| {
                when.method(GET).path("/soon");
                then.status(429).header("retry-after", "0").body("{}");
            })
            .await;
        let later = server
            .mock_async(|when, then| {
                when.method(GET).path("/later");
                then.status(429).header("retry-after", "120").body("{}");
            })
            .await;
        let other = server
            .mock_async(|when, then| {
                when.method(GET).path("/other");
                then.status(500).header("retry-after", "0").body("{}");
            })
            .await;
        let c = client(2000);
        let retry = RetrySoon {
            statuses: &[429, 503],
            attempts: 3,
            max_wait: Duration::from_secs(30),
        };
        let req = c.reqwest().get(server.url("/soon")).build().unwrap();
        let resp = c.execute_retrying(CALL, req, retry).await.unwrap();
        assert_eq!(resp.status, 429, "the last answer is returned");
        assert_eq!(soon.calls_async().await, 3);
        let req = c.reqwest().get(server.url("/later")).build().unwrap();
        let resp = c.execute_retrying(CALL, req, retry).await.unwrap();
        assert_eq!(resp.retry_after(), Some(Duration::from_secs(120)));
        assert_eq!(later.calls_async().await, 1, "too long to wait in place");
        let req = c.reqwest().get(server.url("/other")).build().unwrap();
        c.execute_retrying(CALL, req, retry).await.unwrap();
        assert_eq!(other.calls_async().await, 1, "500 is not in the list");
    }

    #[tokio::test]
    async fn timeouts_are_unavailable_and_name_no_path() {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(GET).path("/slow");
                then.status(200)
                    .delay(Duration::from_millis(1500))
                    .body("{}");
            })
            .await;
        let c = client(200);
        let url = server.url("/slow?OIDCToken=very-secret");
        let req = c.reqwest().get(url).build().unwrap();
        let err = c.execute(CALL, req).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Unavailable);
        assert!(
            err.message.contains("did not answer within"),
            "{}",
            err.message
        );
        assert!(!err.message.contains("very-secret") && !err.message.contains("/slow"));
        assert!(c.metrics().encode().contains(r#"status="timeout""#));
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused() {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(GET).path("/big");
                then.status(200).body("x".repeat(5000));
            })
            .await;
        let c = client(2000);
        let req = c.reqwest().get(server.url("/big")).build().unwrap();
        let err = c.execute(CALL, req).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::InvalidResponse);
        assert!(err.message.contains("larger than 1024 bytes"));
    }

    #[tokio::test]
    async fn redirects_to_other_hosts_are_not_followed() {
        let target = MockServer::start_async().await;
        let hit = target
            .mock_async(|when, then| {
                when.any_request();
                then.status(200).body("stolen");
            })
            .await;
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(GET).path("/r");
                then.status(302).header("location", target.url("/steal"));
            })
            .await;
        let c = client(2000);
        let req = c
            .reqwest()
            .get(server.url("/r"))
            .bearer_auth("tok")
            .build()
            .unwrap();
        let resp = c.execute(CALL, req).await.unwrap();
        assert_eq!(resp.status, 302, "the redirect is returned, not followed");
        assert_eq!(hit.calls_async().await, 0);
    }

    #[tokio::test]
    async fn calls_wait_for_the_hosts_rate_limit() {
        let server = MockServer::start_async().await;
        let hits = server
            .mock_async(|when, then| {
                when.method(GET).path("/x");
                then.status(200).body("{}");
            })
            .await;
        let metrics = Arc::new(Metrics::new());
        let c = HttpClient::new(
            HttpOptions {
                rate_limits: RateLimits {
                    default: Some("20:1".parse().unwrap()),
                    hosts: vec![],
                },
                ..HttpOptions::default()
            },
            metrics.clone(),
        )
        .unwrap();
        for _ in 0..3 {
            let req = c.reqwest().get(server.url("/x")).build().unwrap();
            c.execute(CALL, req).await.unwrap();
        }
        assert_eq!(hits.calls_async().await, 3);
        assert!(
            metrics
                .encode()
                .contains(r#"workspace_access_provider_rate_limited_total{provider="test"} 2"#),
            "the 2nd and 3rd call waited for a slot"
        );
    }

    #[tokio::test]
    async fn each_credential_has_its_own_bucket_and_no_metric_names_it() {
        let server = MockServer::start_async().await;
        let hits = server
            .mock_async(|when, then| {
                when.method(GET).path("/x");
                then.status(200).body("{}");
            })
            .await;
        let metrics = Arc::new(Metrics::new());
        let c = HttpClient::new(
            HttpOptions {
                rate_limits: RateLimits {
                    default: Some("20:1".parse().unwrap()),
                    hosts: vec![],
                },
                ..HttpOptions::default()
            },
            metrics.clone(),
        )
        .unwrap();
        let key = SecretString::new("api-key-that-must-not-leak");
        let a = c.for_credential(RateKey::secret_fingerprint(&key));
        let b = c.for_credential(RateKey::arm("sub-b", "client-b"));
        for client in [&a, &b, &c] {
            let req = client.reqwest().get(server.url("/x")).build().unwrap();
            client.execute(CALL, req).await.unwrap();
        }
        assert!(
            !metrics
                .encode()
                .contains("workspace_access_provider_rate_limited_total{"),
            "three credentials on one host: none waited"
        );
        let req = a.reqwest().get(server.url("/x")).build().unwrap();
        a.execute(CALL, req).await.unwrap();
        assert_eq!(hits.calls_async().await, 4);
        let text = metrics.encode();
        assert!(
            text.contains(r#"workspace_access_provider_rate_limited_total{provider="test"} 1"#),
            "the second call of one credential waited for its bucket"
        );
        assert_eq!(c.limiter().buckets(), 3);
        for leak in ["api-key", "sub-b", "client-b", "fingerprint"] {
            assert!(!text.contains(leak), "{leak} in the metrics");
        }
    }

    #[tokio::test]
    async fn a_host_cap_holds_every_credential_back() {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(GET).path("/x");
                then.status(200).body("{}");
            })
            .await;
        let metrics = Arc::new(Metrics::new());
        let c = HttpClient::new(
            HttpOptions {
                rate_limits: RateLimits {
                    default: Some("1000:1000".parse().unwrap()),
                    hosts: vec!["127.0.0.1=20:1".parse().unwrap()],
                },
                ..HttpOptions::default()
            },
            metrics.clone(),
        )
        .unwrap();
        for i in 0..3 {
            let client = c.for_credential(RateKey::entra_client(&format!("client-{i}")));
            let req = client.reqwest().get(server.url("/x")).build().unwrap();
            client.execute(CALL, req).await.unwrap();
        }
        assert!(
            metrics
                .encode()
                .contains(r#"workspace_access_provider_rate_limited_total{provider="test"} 2"#),
            "three credentials, one host allowing one call at once: two waited"
        );
    }

    #[tokio::test]
    async fn connection_refused_is_unavailable() {
        // Bind and drop a listener to get a free port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = client(2000);
        let req = c
            .reqwest()
            .get(format!("http://127.0.0.1:{port}/x"))
            .build()
            .unwrap();
        let err = c.execute(CALL, req).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Unavailable);
        assert_eq!(
            err.message,
            format!(
                "could not connect to http://127.0.0.1:{port}: connection refused (nothing \
                 listens on that port)"
            )
        );
    }

    #[tokio::test]
    async fn an_unresolvable_host_is_a_dns_failure() {
        let c = client(5000);
        // `.invalid` never resolves (RFC 2606).
        let req = c
            .reqwest()
            .get("http://no-such-host.invalid/x?secret=not-shown")
            .build()
            .unwrap();
        let err = c.execute(CALL, req).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Unavailable);
        assert_eq!(
            err.message,
            "could not connect to http://no-such-host.invalid: DNS lookup failed (the host name \
             does not resolve)"
        );
    }

    #[tokio::test]
    async fn a_self_signed_certificate_is_named_as_the_cause() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        install_crypto_provider();
        let cert =
            CertificateDer::from_pem_slice(include_bytes!("testdata/self-signed.crt")).unwrap();
        let key =
            PrivateKeyDer::from_pem_slice(include_bytes!("testdata/self-signed.key")).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                // The client gives up during the handshake.
                let _ = acceptor.accept(tcp).await;
            }
        });
        let c = client(5000);
        let req = c
            .reqwest()
            .get(format!("https://127.0.0.1:{port}/x"))
            .build()
            .unwrap();
        let err = c.execute(CALL, req).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Unavailable);
        assert_eq!(
            err.message,
            format!(
                "could not connect to https://127.0.0.1:{port}: TLS handshake failed: the \
                 server's certificate is issued by an unknown certificate authority \
                 (self-signed, or a private CA the operator doesn't trust)"
            )
        );
    }
}
