//! Alibaba Cloud's V3 request signature, ACS3-HMAC-SHA256 (docs/providers.md §4.3), and the
//! error shape of the Alibaba Cloud OpenAPI gateway that every ACS3-signed API shares
//! (docs/providers.md §4.4).
//!
//! The signing functions are pure: they take the parts of a request and return strings, so the
//! official test vectors can be reproduced byte for byte. [`sign_request`] applies them to a
//! `reqwest::Request`, signing exactly what is sent: the encoded path of the URL, its query,
//! the headers it sets itself, and the body bytes.

use crate::providers::error::{ProviderError, ProviderErrorKind, clip, scrub};
use crate::providers::http::MAX_RETRY_AFTER;
use crate::redact::SecretString;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// The signature algorithm, first word of the Authorization header.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// Hex SHA-256 of an empty body.
pub const EMPTY_BODY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Content type of JSON request bodies.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// Longest wait `x-acs-retry-after` can ask for that the official SDK honours (milliseconds).
pub const SDK_RETRY_AFTER_CAP: Duration = Duration::from_millis(120_000);

/// Credentials that sign requests: an AccessKey pair, plus an STS security token for temporary
/// credentials (sent as `x-acs-security-token`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcsCredentials {
    /// AccessKey ID (appears in the Authorization header; not secret, but not logged either).
    pub access_key_id: String,
    /// AccessKey secret: the HMAC key. Never sent.
    pub access_key_secret: SecretString,
    /// STS security token, for temporary credentials.
    pub security_token: Option<SecretString>,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// RFC 3986 percent-encoding: the unreserved characters `A-Z a-z 0-9 - _ . ~` stay, every other
/// byte of the UTF-8 text becomes `%XX` with upper-case hex (space is `%20`, `*` is `%2A`).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes a path: every `/`-separated segment percent-encoded, the slashes kept.
pub fn encode_path(path: &str) -> String {
    path.split('/')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// A path made of `segments`, each percent-encoded as one path segment (so a `/` inside a
/// parameter stays inside it), appended to `base` (an already-encoded path, e.g. "/").
pub fn segment_path(base: &str, segments: &[&str]) -> String {
    let mut path = base.trim_end_matches('/').to_owned();
    for s in segments {
        path.push('/');
        path.push_str(&percent_encode(s));
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

/// The canonical query string: names and values RFC 3986-encoded, sorted by name (then value),
/// `name=value` joined by `&`; an empty value gives `name=`; no parameters give "".
pub fn canonical_query_string<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (percent_encode(k.as_ref()), percent_encode(v.as_ref())))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Canonical headers and the matching signed-headers list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalHeaders {
    /// `name:value\n` for every header, names lower-cased and sorted, values trimmed; several
    /// values of one name sorted and joined with `,`.
    pub canonical: String,
    /// The lower-cased names, sorted, joined with `;`.
    pub signed: String,
}

/// Canonicalizes the headers to sign.
pub fn canonical_headers<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> CanonicalHeaders {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers {
        by_name
            .entry(k.as_ref().trim().to_ascii_lowercase())
            .or_default()
            .push(v.as_ref().trim().to_owned());
    }
    let mut canonical = String::new();
    for (name, values) in &mut by_name {
        values.sort();
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&values.join(","));
        canonical.push('\n');
    }
    let signed = by_name.keys().cloned().collect::<Vec<_>>().join(";");
    CanonicalHeaders { canonical, signed }
}

/// The canonical request. `canonical_uri` is the encoded path exactly as sent ("/" when empty).
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    headers: &CanonicalHeaders,
    payload_hash: &str,
) -> String {
    let uri = if canonical_uri.is_empty() {
        "/"
    } else {
        canonical_uri
    };
    format!(
        "{}\n{uri}\n{canonical_query}\n{}\n{}\n{payload_hash}",
        method.to_ascii_uppercase(),
        headers.canonical,
        headers.signed
    )
}

/// The string to sign: the algorithm and the hex SHA-256 of the canonical request.
pub fn string_to_sign(canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// Lower-case hex HMAC-SHA256 of the string to sign, keyed with the AccessKey secret.
pub fn signature(access_key_secret: &SecretString, string_to_sign: &str) -> String {
    // HMAC takes keys of any length, so this never fails; were it to, the empty signature
    // would be refused by the provider rather than crash the operator.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(access_key_secret.expose().as_bytes())
    else {
        return String::new();
    };
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The Authorization header value.
pub fn authorization(access_key_id: &str, signed_headers: &str, signature: &str) -> String {
    format!(
        "{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"
    )
}

/// The Authorization value for a request given by its parts.
pub fn sign_parts<K: AsRef<str>, V: AsRef<str>>(
    credentials: &AcsCredentials,
    method: &str,
    canonical_uri: &str,
    query: &[(K, V)],
    headers: &[(K, V)],
    payload_hash: &str,
) -> String {
    let headers = canonical_headers(headers);
    let request = canonical_request(
        method,
        canonical_uri,
        &canonical_query_string(query),
        &headers,
        payload_hash,
    );
    let sig = signature(&credentials.access_key_secret, &string_to_sign(&request));
    authorization(&credentials.access_key_id, &headers.signed, &sig)
}

/// The `x-acs-date` format.
pub fn acs_date(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A fresh `x-acs-signature-nonce`: 128 random bits in hex.
pub fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The API operation a request calls.
#[derive(Clone, Copy, Debug)]
pub struct Operation<'a> {
    /// `x-acs-action`, e.g. `GetLivyComputeToken`.
    pub action: &'a str,
    /// `x-acs-version`, e.g. `2023-08-08`.
    pub version: &'a str,
}

/// Signs `request` in place: sets `host`, `accept`, `x-acs-action`, `x-acs-version`,
/// `x-acs-date`, `x-acs-signature-nonce`, `x-acs-content-sha256`, `x-acs-security-token` (STS
/// credentials only) and `Authorization`. Signed are `host`, `content-type` (when a body is sent)
/// and every `x-acs-*` header, over the URL's encoded path and query and the body bytes.
pub fn sign_request(
    request: &mut reqwest::Request,
    credentials: &AcsCredentials,
    operation: Operation<'_>,
    date: Timestamp,
    nonce: &str,
) -> Result<(), ProviderError> {
    let invalid = |what: &str| {
        ProviderError::new(
            ProviderErrorKind::InvalidRequest,
            format!("internal: could not sign the request: {what}"),
        )
    };
    let url = request.url().clone();
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => return Err(invalid("the URL has no host")),
    };
    let body: &[u8] = match request.body() {
        None => &[],
        Some(b) => b
            .as_bytes()
            .ok_or_else(|| invalid("streaming bodies can't be signed"))?,
    };
    let payload_hash = sha256_hex(body);
    let has_body = !body.is_empty();

    let mut to_sign: Vec<(String, String)> = vec![
        ("host".into(), host),
        ("x-acs-action".into(), operation.action.into()),
        ("x-acs-version".into(), operation.version.into()),
        ("x-acs-date".into(), acs_date(date)),
        ("x-acs-signature-nonce".into(), nonce.into()),
        ("x-acs-content-sha256".into(), payload_hash.clone()),
    ];
    if has_body {
        to_sign.push(("content-type".into(), JSON_CONTENT_TYPE.into()));
    }
    if let Some(token) = &credentials.security_token {
        to_sign.push(("x-acs-security-token".into(), token.expose().to_owned()));
    }
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let auth = sign_parts(
        credentials,
        request.method().as_str(),
        url.path(),
        &query,
        &to_sign,
        &payload_hash,
    );

    let headers: &mut HeaderMap = request.headers_mut();
    for (name, value) in to_sign
        .into_iter()
        .chain([("accept".to_owned(), "application/json".to_owned())])
        .chain([("authorization".to_owned(), auth)])
    {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid("header name"))?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| invalid("header value"))?;
        if name == "x-acs-security-token" || name == "authorization" {
            value.set_sensitive(true);
        }
        headers.insert(name, value);
    }
    Ok(())
}

/// How long an Alibaba Cloud response asks the caller to wait: `x-acs-retry-after` (a positive
/// integer of **milliseconds**, as the official SDK reads it), else a standard `Retry-After`.
pub fn retry_after(headers: &HeaderMap, now: Timestamp) -> Option<Duration> {
    let acs = headers
        .get("x-acs-retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(|ms| Duration::from_millis(ms).min(MAX_RETRY_AFTER));
    acs.or_else(|| {
        headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::providers::http::parse_retry_after(v, now))
    })
}

/// The error fields of an Alibaba Cloud response body, in either spelling: the gateway's
/// `Code`/`Message`/`RequestId`, or the ROA envelope's `code`/`message`/`requestId`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// The error code, e.g. `Throttling.User`, `SignatureDoesNotMatch`.
    pub code: Option<String>,
    /// The provider's message.
    pub message: Option<String>,
    /// The request ID.
    pub request_id: Option<String>,
}

impl ErrorFields {
    /// Reads the fields from a parsed JSON body (codes may be strings or numbers).
    pub fn from_json(v: &serde_json::Value) -> Self {
        let text = |names: &[&str]| {
            names.iter().find_map(|n| match v.get(*n) {
                Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
        };
        Self {
            code: text(&["code", "Code"]),
            message: text(&["message", "Message"]),
            request_id: text(&["requestId", "RequestId"]),
        }
    }
}

/// Whether an error code says the signature or the credentials were refused.
fn is_authentication_code(code: &str) -> bool {
    const EXACT: &[&str] = &[
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "SignatureNonceUsed",
        "MissingSecurityToken",
        "InvalidAuthorization",
        "MissingAuthorization",
        "InvalidAccessKeySecret",
        "AuthenticationFailed",
        "Unauthorized",
    ];
    const PREFIXES: &[&str] = &[
        "InvalidAccessKeyId",
        "InvalidSecurityToken",
        "InvalidTimeStamp",
        "AuthenticationFail",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
    ];
    EXACT.contains(&code) || PREFIXES.iter().any(|p| code.starts_with(p))
}

/// Whether an error code says access was denied.
fn is_forbidden_code(code: &str) -> bool {
    code.starts_with("Forbidden")
        || code.starts_with("NoPermission")
        || code.starts_with("AccessDenied")
}

/// Whether an error code says the named object doesn't exist.
fn is_not_found_code(code: &str) -> bool {
    let c = code.to_ascii_lowercase();
    c.contains("notfound") || c.contains("notexist") || c.contains("not_found")
}

/// Classifies an Alibaba Cloud error by its code first and the HTTP status second:
/// `Throttling*` is [`ProviderErrorKind::Throttled`] whatever the status (many products answer
/// 400), signature and AccessKey codes are `AuthenticationFailed`, `Forbidden*` is
/// `Forbidden`, not-found codes are `NotFound`.
pub fn error_kind(code: Option<&str>, status: u16) -> ProviderErrorKind {
    match code {
        Some(c) if c.starts_with("Throttling") => ProviderErrorKind::Throttled,
        Some(c) if is_authentication_code(c) => ProviderErrorKind::AuthenticationFailed,
        Some(c) if is_forbidden_code(c) => ProviderErrorKind::Forbidden,
        Some(c) if is_not_found_code(c) => ProviderErrorKind::NotFound,
        // A business error answered with HTTP 200: nothing in the status to go by.
        _ if (200..300).contains(&status) => ProviderErrorKind::InvalidRequest,
        _ => ProviderError::kind_for_status(status),
    }
}

/// The [`ProviderError`] for a failed Alibaba Cloud call: `what` names the operation; the
/// message carries the provider's code and message, never the request. `secrets` (the
/// credentials the request carried) are scrubbed from what the provider sent, before it is
/// shortened.
pub fn provider_error(
    what: &str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
    now: Timestamp,
    secrets: &[&str],
) -> ProviderError {
    let fields = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| ErrorFields::from_json(&v))
        .unwrap_or_default();
    let fields = ErrorFields {
        code: fields.code.map(|c| scrub(&c, secrets)),
        message: fields.message.map(|m| scrub(&m, secrets)),
        request_id: fields.request_id.map(|r| scrub(&r, secrets)),
    };
    let wait = retry_after(headers, now);
    let mut kind = error_kind(fields.code.as_deref(), status);
    // The SDK raises a throttling error whenever x-acs-retry-after is set on an error.
    if wait.is_some() && headers.contains_key("x-acs-retry-after") {
        kind = ProviderErrorKind::Throttled;
    }
    let text = fields
        .message
        .as_deref()
        .map(|m| clip(m, 300))
        .unwrap_or_default();
    ProviderError::http(kind, what, status, fields.code.as_deref(), &text)
        .with_request_id(fields.request_id)
        .with_retry_after(wait)
        .with_status(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(id: &str, secret: &str) -> AcsCredentials {
        AcsCredentials {
            access_key_id: id.into(),
            access_key_secret: SecretString::new(secret),
            security_token: None,
        }
    }

    /// The official vector from Alibaba's "Request syntax and signature method V3" document
    /// ("Fixed parameter values"), docs/providers.md §4.3, reproduced byte for byte.
    #[test]
    fn official_documentation_vector() {
        let headers = [
            ("host", "ecs.cn-shanghai.aliyuncs.com"),
            ("x-acs-action", "RunInstances"),
            ("x-acs-content-sha256", EMPTY_BODY_SHA256),
            ("x-acs-date", "2023-10-26T10:22:32Z"),
            ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
            ("x-acs-version", "2014-05-26"),
        ];
        let query = [
            (
                "ImageId",
                "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
            ),
            ("RegionId", "cn-shanghai"),
        ];
        let ch = canonical_headers(&headers);
        let cr = canonical_request(
            "POST",
            "/",
            &canonical_query_string(&query),
            &ch,
            EMPTY_BODY_SHA256,
        );
        let expected = "POST\n\
/\n\
ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n\
host:ecs.cn-shanghai.aliyuncs.com\n\
x-acs-action:RunInstances\n\
x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
x-acs-date:2023-10-26T10:22:32Z\n\
x-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n\
x-acs-version:2014-05-26\n\
\n\
host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n\
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(cr, expected);
        let sts = string_to_sign(&cr);
        assert_eq!(
            sts,
            "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        let c = creds("YourAccessKeyId", "YourAccessKeySecret");
        let sig = signature(&c.access_key_secret, &sts);
        assert_eq!(
            sig,
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
        assert_eq!(
            sign_parts(&c, "POST", "/", &query, &headers, EMPTY_BODY_SHA256),
            "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;\
x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,\
Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
    }

    /// The official SDK's unit-test vector (Python `test_get_authorization`): an empty query
    /// value written `k=`, a duplicate header merged as `http,https`, `/` for an empty path.
    #[test]
    fn sdk_vector() {
        let payload = "55e12e91650d2fec56ec74e1d3e4ddbfce2ef3a65890c2a19ecf88a307e76a23";
        let query = [("test", "ok"), ("empty", "")];
        let headers = [("x-acs-test", "http"), ("x-acs-TEST", "https")];
        let ch = canonical_headers(&headers);
        assert_eq!(ch.canonical, "x-acs-test:http,https\n");
        assert_eq!(ch.signed, "x-acs-test");
        let cr = canonical_request("GET", "", &canonical_query_string(&query), &ch, payload);
        assert_eq!(
            cr,
            format!("GET\n/\nempty=&test=ok\nx-acs-test:http,https\n\nx-acs-test\n{payload}")
        );
        assert_eq!(
            sha256_hex(cr.as_bytes()),
            "6c416f315497f25326e3f67e06370dbfce4d082b99aecdfc2411eeecd152f68f"
        );
        let auth = sign_parts(
            &creds("acesskey", "secret"),
            "GET",
            "",
            &query,
            &headers,
            payload,
        );
        assert_eq!(
            auth,
            "ACS3-HMAC-SHA256 Credential=acesskey,SignedHeaders=x-acs-test,\
Signature=d16b30a7699ae9e43875b13195b2f81bcc3ed10c14a9b5eb780e51619aa50be1"
        );
    }

    /// The other SDK helper vectors: hashing and encoding.
    #[test]
    fn sdk_hash_and_encoding_vectors() {
        assert_eq!(
            sha256_hex(b"test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
        assert_eq!(sha256_hex(b""), EMPTY_BODY_SHA256);
        assert_eq!(encode_path("/path/ test"), "/path/%20test");
        assert_eq!(percent_encode("a/b/c/ test"), "a%2Fb%2Fc%2F%20test");
        assert_eq!(
            canonical_query_string(&[("test", " ~/*-+")]),
            "test=%20~%2F%2A-%2B"
        );
        assert_eq!(canonical_query_string::<&str, &str>(&[]), "");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn segments_are_encoded_one_by_one() {
        assert_eq!(
            segment_path("/", &["api", "w 1", "a/b", "x*y"]),
            "/api/w%201/a%2Fb/x%2Ay"
        );
        assert_eq!(segment_path("/prefix/", &["t"]), "/prefix/t");
        assert_eq!(segment_path("", &[]), "/");
    }

    #[test]
    fn sign_request_signs_what_is_sent() {
        let c = AcsCredentials {
            security_token: Some(SecretString::new("sts-token")),
            ..creds("AKID", "s3cret")
        };
        crate::providers::http::install_crypto_provider();
        let client = reqwest::Client::new();
        let mut req = client
            .put("http://127.0.0.1:8080/api/x%2Ay?regionId=cn-hangzhou")
            .body(r#"{"name":"n"}"#)
            .build()
            .unwrap();
        let date: Timestamp = "2025-06-09T08:01:34Z".parse().unwrap();
        sign_request(
            &mut req,
            &c,
            Operation {
                action: "CreateLivyComputeToken",
                version: "2023-08-08",
            },
            date,
            "nonce1",
        )
        .unwrap();
        let h = req.headers();
        assert_eq!(h["host"], "127.0.0.1:8080");
        assert_eq!(h["x-acs-date"], "2025-06-09T08:01:34Z");
        assert_eq!(h["x-acs-security-token"], "sts-token");
        assert_eq!(h["content-type"], JSON_CONTENT_TYPE);
        assert_eq!(h["x-acs-content-sha256"], sha256_hex(br#"{"name":"n"}"#));
        let auth = h["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with(
                "ACS3-HMAC-SHA256 Credential=AKID,SignedHeaders=content-type;host;x-acs-action;\
x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version,Signature="
            ),
            "{auth}"
        );
        // The signature covers the encoded path exactly as sent.
        let expected = sign_parts(
            &c,
            "PUT",
            "/api/x%2Ay",
            &[("regionId", "cn-hangzhou")],
            &[
                ("host", "127.0.0.1:8080"),
                ("x-acs-action", "CreateLivyComputeToken"),
                ("x-acs-version", "2023-08-08"),
                ("x-acs-date", "2025-06-09T08:01:34Z"),
                ("x-acs-signature-nonce", "nonce1"),
                ("x-acs-content-sha256", &sha256_hex(br#"{"name":"n"}"#)),
                ("content-type", JSON_CONTENT_TYPE),
                ("x-acs-security-token", "sts-token"),
            ],
            &sha256_hex(br#"{"name":"n"}"#),
        );
        assert_eq!(auth, expected);
        assert!(h["authorization"].is_sensitive());
    }

    #[test]
    fn nonces_differ() {
        let a = new_nonce();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_nonce());
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn x_acs_retry_after_is_milliseconds() {
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(
            retry_after(&headers(&[("x-acs-retry-after", "1500")]), now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(
                &headers(&[("x-acs-retry-after", "0"), ("retry-after", "3")]),
                now
            ),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers(&[("x-acs-retry-after", "soon")]), now),
            None
        );
    }

    #[test]
    fn errors_are_classified_by_code_then_status() {
        use ProviderErrorKind::*;
        for (code, status, kind) in [
            (Some("Throttling.User"), 400, Throttled),
            (Some("Throttling"), 503, Throttled),
            (Some("Throttling.Api"), 200, Throttled),
            (Some("SignatureDoesNotMatch"), 400, AuthenticationFailed),
            (
                Some("InvalidAccessKeyId.NotFound"),
                404,
                AuthenticationFailed,
            ),
            (
                Some("InvalidSecurityToken.Expired"),
                400,
                AuthenticationFailed,
            ),
            (Some("IncompleteSignature"), 400, AuthenticationFailed),
            (Some("Forbidden.RAM"), 400, Forbidden),
            (Some("Forbidden"), 200, Forbidden),
            (Some("Token.NotFound"), 400, NotFound),
            (Some("InvalidParameter"), 400, InvalidRequest),
            (Some("1001"), 200, InvalidRequest),
            (None, 404, NotFound),
            (None, 500, Unavailable),
            (Some("InternalError"), 500, Unavailable),
        ] {
            assert_eq!(error_kind(code, status), kind, "{code:?} {status}");
        }
    }

    #[test]
    fn provider_errors_carry_code_message_request_id_and_wait() {
        let body = br#"{"RequestId":"9736ED45","Message":"Request was denied due to user flow control.",
            "Recommend":"https://next.api.aliyun.com/troubleshoot?q=Throttling.User","Code":"Throttling.User"}"#;
        let e = provider_error(
            "GetLivyComputeToken",
            400,
            &headers(&[("x-acs-retry-after", "2500")]),
            body,
            Timestamp::UNIX_EPOCH,
            &[],
        );
        assert_eq!(e.kind, ProviderErrorKind::Throttled);
        assert_eq!(e.retry_after, Some(Duration::from_millis(2500)));
        assert_eq!(e.request_id.as_deref(), Some("9736ED45"));
        assert_eq!(
            e.to_string(),
            "Throttling.User: Request was denied due to user flow control. (GetLivyComputeToken, \
             HTTP 400; request id 9736ED45)"
        );
        // An error without a code but with x-acs-retry-after is throttling too (as in the SDK).
        let e = provider_error(
            "X",
            400,
            &headers(&[("x-acs-retry-after", "100")]),
            b"not json",
            Timestamp::UNIX_EPOCH,
            &[],
        );
        assert_eq!(e.kind, ProviderErrorKind::Throttled);
        assert!(e.message.ends_with("no error details in the response"));
    }
}
