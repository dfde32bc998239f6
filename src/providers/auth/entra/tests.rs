//! Contract tests of the Entra token client and cache against httpmock.

use super::*;
use crate::metrics::Metrics;
use crate::providers::http::HttpOptions;
use httpmock::prelude::*;
use serde_json::json;

const TENANT: &str = "00000000-0000-0000-0000-000000000000";
const CLIENT: &str = "11111111-1111-1111-1111-111111111111";
const ARM_SCOPE: &str = "https://management.azure.com/.default";
const FABRIC_SCOPE: &str = "https://api.fabric.microsoft.com/.default";
const SECRET: &str = "very-secret-client-value~123";
const TOKEN_PATH: &str = "/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token";

fn http(timeout: Duration) -> HttpClient {
    HttpClient::new(
        HttpOptions {
            timeout,
            connect_timeout: timeout,
            max_body_bytes: 64 * 1024,
            ..HttpOptions::default()
        },
        Arc::new(Metrics::new()),
    )
    .unwrap()
}

fn tokens() -> EntraTokens {
    EntraTokens::new(http(Duration::from_secs(5)))
}

fn t0() -> Timestamp {
    "2026-11-23T10:00:00Z".parse().unwrap()
}

fn secret(version: &str) -> EntraCredential {
    EntraCredential::ClientSecret {
        secret: SecretString::new(SECRET),
        version: version.into(),
    }
}

fn request(server: &MockServer, credential: EntraCredential, scope: &str) -> TokenRequest {
    TokenRequest {
        authority: Url::parse(&server.base_url()).unwrap(),
        tenant: TENANT.into(),
        client_id: CLIENT.into(),
        credential,
        scope: scope.into(),
    }
}

fn ok_body(token: &str, expires_in: serde_json::Value) -> String {
    json!({"token_type": "Bearer", "expires_in": expires_in, "ext_expires_in": 3599,
           "access_token": token})
    .to_string()
}

#[tokio::test]
async fn client_secret_request_carries_the_form_fields() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST)
                .path(TOKEN_PATH)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("accept", "application/json")
                .form_urlencoded_tuple("grant_type", "client_credentials")
                .form_urlencoded_tuple("client_id", CLIENT)
                .form_urlencoded_tuple("scope", ARM_SCOPE)
                .form_urlencoded_tuple("client_secret", SECRET)
                .form_urlencoded_tuple_missing("client_assertion");
            then.status(200).body(ok_body("arm-token", json!(3599)));
        })
        .await;
    let t = tokens();
    let got = t
        .token(&request(&server, secret("v1"), ARM_SCOPE), t0())
        .await
        .unwrap();
    assert_eq!(got.token.expose(), "arm-token");
    assert_eq!(got.expires_at, add(t0(), Duration::from_secs(3599)));
    mock.assert_calls_async(1).await;
}

#[test]
fn the_tenant_is_one_encoded_path_segment() {
    let authority = Url::parse("https://login.microsoftonline.com/").unwrap();
    assert_eq!(
        token_url(&authority, "contoso.onmicrosoft.com")
            .unwrap()
            .as_str(),
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(
        token_url(&authority, "a/../b?x#y").unwrap().path(),
        "/a%2F..%2Fb%3Fx%23y/oauth2/v2.0/token"
    );
    let without_slash = Url::parse("https://login.microsoftonline.us").unwrap();
    assert_eq!(
        token_url(&without_slash, "t").unwrap().as_str(),
        "https://login.microsoftonline.us/t/oauth2/v2.0/token"
    );
    for bad in ["", ".", ".."] {
        assert_eq!(
            token_url(&authority, bad).unwrap_err().kind,
            ProviderErrorKind::InvalidRequest
        );
    }
}

#[tokio::test]
async fn tokens_are_cached_per_scope_and_credential_version_until_shortly_before_expiry() {
    let server = MockServer::start_async().await;
    let arm = server
        .mock_async(|when, then| {
            when.method(POST)
                .path(TOKEN_PATH)
                .form_urlencoded_tuple("scope", ARM_SCOPE);
            then.status(200).body(ok_body("arm", json!(3600)));
        })
        .await;
    let fabric = server
        .mock_async(|when, then| {
            when.method(POST)
                .path(TOKEN_PATH)
                .form_urlencoded_tuple("scope", FABRIC_SCOPE);
            then.status(200).body(ok_body("fabric", json!(3600.0)));
        })
        .await;
    let t = tokens();
    let arm_v1 = request(&server, secret("v1"), ARM_SCOPE);
    for minutes in [0, 1, 30, 54] {
        let now = add(t0(), Duration::from_secs(60 * minutes));
        assert_eq!(t.token(&arm_v1, now).await.unwrap().token.expose(), "arm");
    }
    arm.assert_calls_async(1).await;

    // Another scope is another token; the ARM one is not disturbed.
    let fab = request(&server, secret("v1"), FABRIC_SCOPE);
    assert_eq!(t.token(&fab, t0()).await.unwrap().token.expose(), "fabric");
    fabric.assert_calls_async(1).await;
    t.token(&arm_v1, t0()).await.unwrap();
    arm.assert_calls_async(1).await;

    // A rotated client secret (new version) gets a new token.
    t.token(&request(&server, secret("v2"), ARM_SCOPE), t0())
        .await
        .unwrap();
    arm.assert_calls_async(2).await;

    // Five minutes before expiry the cached token is replaced.
    t.token(&arm_v1, add(t0(), Duration::from_secs(3600 - 300)))
        .await
        .unwrap();
    arm.assert_calls_async(3).await;
    assert_eq!(t.cached_len(), 3);
}

#[tokio::test]
async fn a_short_lived_token_is_replaced_at_half_its_lifetime() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST).path(TOKEN_PATH);
            then.status(200).body(ok_body("short", json!("90")));
        })
        .await;
    let t = tokens();
    let req = request(&server, secret("v1"), ARM_SCOPE);
    let got = t.token(&req, t0()).await.unwrap();
    assert_eq!(got.expires_at, add(t0(), Duration::from_secs(90)));
    t.token(&req, add(t0(), Duration::from_secs(44)))
        .await
        .unwrap();
    mock.assert_calls_async(1).await;
    t.token(&req, add(t0(), Duration::from_secs(45)))
        .await
        .unwrap();
    mock.assert_calls_async(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_one_token_make_one_entra_call() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST).path(TOKEN_PATH);
            then.status(200)
                .delay(Duration::from_millis(300))
                .body(ok_body("shared", json!(3599)));
        })
        .await;
    let t = Arc::new(tokens());
    let req = request(&server, secret("v1"), ARM_SCOPE);
    const CALLERS: usize = 64;
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (t, req, barrier) = (t.clone(), req.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                t.token(&req, t0()).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().token.expose(), "shared");
    }
    mock.assert_calls_async(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_failure_and_the_next_request_retries() {
    let server = MockServer::start_async().await;
    let failing = server
        .mock_async(|when, then| {
            when.method(POST).path(TOKEN_PATH);
            then.status(503)
                .delay(Duration::from_millis(300))
                .body(r#"{"error":"temporarily_unavailable","error_description":"AADSTS90033: busy","error_codes":[90033]}"#);
        })
        .await;
    let t = Arc::new(tokens());
    let req = request(&server, secret("v1"), ARM_SCOPE);
    const CALLERS: usize = 16;
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLERS));
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (t, req, barrier) = (t.clone(), req.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                t.token(&req, t0()).await
            })
        })
        .collect();
    for task in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::Unavailable);
    }
    failing.assert_calls_async(1).await;
    failing.delete_async().await;
    // Failures are not cached.
    let ok = server
        .mock_async(|when, then| {
            when.method(POST).path(TOKEN_PATH);
            then.status(200).body(ok_body("after", json!(3599)));
        })
        .await;
    assert_eq!(t.token(&req, t0()).await.unwrap().token.expose(), "after");
    ok.assert_calls_async(1).await;
}

#[tokio::test]
async fn a_failed_renewal_falls_back_to_the_cached_token_while_it_is_valid() {
    let server = MockServer::start_async().await;
    let first = server
        .mock_async(|when, then| {
            when.method(POST).path(TOKEN_PATH);
            then.status(200).body(ok_body("old", json!(3600)));
        })
        .await;
    let t = tokens();
    let req = request(&server, secret("v1"), ARM_SCOPE);
    t.token(&req, t0()).await.unwrap();
    first.delete_async().await;
    let failing = server
        .mock_async(|when, then| {
            when.method(POST).path(TOKEN_PATH);
            then.status(500).body("oops");
        })
        .await;
    // Due for renewal, renewal fails, the old token still has 4 minutes: use it.
    let got = t
        .token(&req, add(t0(), Duration::from_secs(3360)))
        .await
        .unwrap();
    assert_eq!(got.token.expose(), "old");
    failing.assert_calls_async(1).await;
    // 30 s before expiry it is too close: the failure is reported.
    let err = t
        .token(&req, add(t0(), Duration::from_secs(3570)))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Unavailable);
    assert!(err.to_string().contains("HTTP 500"), "{err}");
}

#[tokio::test]
async fn invalidate_forces_a_new_token() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST).path(TOKEN_PATH);
            then.status(200).body(ok_body("tok", json!(3599)));
        })
        .await;
    let t = tokens();
    let req = request(&server, secret("v1"), ARM_SCOPE);
    t.token(&req, t0()).await.unwrap();
    t.token(&req, t0()).await.unwrap();
    mock.assert_calls_async(1).await;
    t.invalidate(&req);
    t.token(&req, t0()).await.unwrap();
    mock.assert_calls_async(2).await;
}

#[tokio::test]
async fn expired_tokens_are_forgotten() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path(TOKEN_PATH);
            then.status(200).body(ok_body("tok", json!(600)));
        })
        .await;
    let t = tokens();
    for v in ["a", "b", "c"] {
        t.token(&request(&server, secret(v), ARM_SCOPE), t0())
            .await
            .unwrap();
    }
    assert_eq!(t.cached_len(), 3);
    t.token(
        &request(&server, secret("d"), ARM_SCOPE),
        add(t0(), Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    assert_eq!(t.cached_len(), 1, "the three expired tokens were dropped");
}

fn token_file(content: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "wao-entra-test-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&path, content).unwrap();
    path
}

fn env_with(path: Option<PathBuf>) -> EnvLookup {
    Arc::new(move |name| {
        assert_eq!(name, FEDERATED_TOKEN_FILE_ENV);
        path.clone().map(OsString::from)
    })
}

#[tokio::test]
async fn workload_identity_reads_the_token_file_for_every_entra_call() {
    let server = MockServer::start_async().await;
    let first = server
        .mock_async(|when, then| {
            when.method(POST)
                .path(TOKEN_PATH)
                .form_urlencoded_tuple("grant_type", "client_credentials")
                .form_urlencoded_tuple("client_id", CLIENT)
                .form_urlencoded_tuple("scope", ARM_SCOPE)
                .form_urlencoded_tuple("client_assertion_type", CLIENT_ASSERTION_TYPE)
                .form_urlencoded_tuple("client_assertion", "projected-jwt-1")
                .form_urlencoded_tuple_missing("client_secret");
            then.status(200).body(ok_body("wi-1", json!(3600)));
        })
        .await;
    let second = server
        .mock_async(|when, then| {
            when.method(POST)
                .path(TOKEN_PATH)
                .form_urlencoded_tuple("client_assertion", "projected-jwt-2");
            then.status(200).body(ok_body("wi-2", json!(3600)));
        })
        .await;
    let path = token_file("projected-jwt-1\n");
    let t = tokens()
        .with_env(env_with(Some(path.clone())))
        .trusting_any_host_for_pod_identity();
    let req = request(&server, EntraCredential::WorkloadIdentity, ARM_SCOPE);
    assert_eq!(t.token(&req, t0()).await.unwrap().token.expose(), "wi-1");
    // The kubelet rotates the file; the next Entra call sends the new content.
    std::fs::write(&path, "projected-jwt-2").unwrap();
    t.token(&req, add(t0(), Duration::from_secs(60)))
        .await
        .unwrap();
    second.assert_calls_async(0).await;
    let got = t
        .token(&req, add(t0(), Duration::from_secs(3400)))
        .await
        .unwrap();
    assert_eq!(got.token.expose(), "wi-2");
    first.assert_calls_async(1).await;
    second.assert_calls_async(1).await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn workload_identity_is_never_sent_to_a_host_that_is_not_official() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).body(ok_body("stolen", json!(3600)));
        })
        .await;
    let path = token_file("projected-jwt");
    // The production check: the loopback mock is allowed for client secrets, never for the
    // operator's own identity.
    let t = tokens().with_env(env_with(Some(path.clone())));
    let err = t
        .token(
            &request(&server, EntraCredential::WorkloadIdentity, ARM_SCOPE),
            t0(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::InvalidRequest);
    assert!(err.message.contains("official"), "{}", err.message);
    mock.assert_calls_async(0).await;
    let _ = std::fs::remove_file(path);
}

#[tokio::test]
async fn workload_identity_without_a_token_file_fails_clearly() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).body(ok_body("x", json!(3600)));
        })
        .await;
    let req = request(&server, EntraCredential::WorkloadIdentity, ARM_SCOPE);
    let unset = tokens()
        .with_env(env_with(None))
        .trusting_any_host_for_pod_identity();
    let err = unset.token(&req, t0()).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::AuthenticationFailed);
    assert!(
        err.message.contains(FEDERATED_TOKEN_FILE_ENV),
        "{}",
        err.message
    );
    let missing = tokens()
        .with_env(env_with(Some(PathBuf::from("/nonexistent/wao/token"))))
        .trusting_any_host_for_pod_identity();
    let err = missing.token(&req, t0()).await.unwrap_err();
    assert!(
        err.message.contains("/nonexistent/wao/token"),
        "{}",
        err.message
    );
    let empty = token_file("\n");
    let err = tokens()
        .with_env(env_with(Some(empty.clone())))
        .trusting_any_host_for_pod_identity()
        .token(&req, t0())
        .await
        .unwrap_err();
    assert!(err.message.contains("is empty"), "{}", err.message);
    mock.assert_calls_async(0).await;
    let _ = std::fs::remove_file(empty);
}

#[tokio::test]
async fn entra_errors_name_the_aadsts_code_and_never_the_secret() {
    struct Case {
        status: u16,
        body: String,
        headers: Vec<(&'static str, &'static str)>,
        kind: ProviderErrorKind,
        contains: Vec<&'static str>,
        request_id: Option<&'static str>,
        retry_after: Option<Duration>,
    }
    let cases = vec![
        Case {
            status: 401,
            // Entra doesn't echo secrets; make sure nothing would leak if it did.
            body: json!({
                "error": "invalid_client",
                "error_description": format!("AADSTS7000215: Invalid client secret provided ({SECRET}).\r\nTrace ID: abc\r\nCorrelation ID: def\r\nTimestamp: 2026-11-23 10:00:00Z"),
                "error_codes": [7000215],
                "timestamp": "2026-11-23 10:00:00Z",
                "trace_id": "trace-7000215",
                "correlation_id": "corr-1"
            })
            .to_string(),
            headers: vec![],
            kind: ProviderErrorKind::AuthenticationFailed,
            contains: vec![
                "HTTP 401",
                "invalid_client",
                "AADSTS7000215",
                "Invalid client secret provided",
                "[redacted]",
            ],
            request_id: Some("trace-7000215"),
            retry_after: None,
        },
        // As Entra sends it: one line, with the trace and correlation IDs and a timestamp at
        // the end; the request id carries the trace ID, once.
        Case {
            status: 401,
            body: json!({
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '11111111-1111-1111-1111-111111111111'. Trace ID: 67c1aa00-0000-0000-0000-000000000000 Correlation ID: f666bb00-0000-0000-0000-000000000000 Timestamp: 2026-12-01 20:02:01Z",
                "error_codes": [7000215],
                "trace_id": "67c1aa00-0000-0000-0000-000000000000",
            })
            .to_string(),
            headers: vec![],
            kind: ProviderErrorKind::AuthenticationFailed,
            contains: vec![
                "AADSTS7000215: Invalid client secret provided. Ensure the secret",
                "for a secret added to app '11111111-1111-1111-1111-111111111111'. (Microsoft Entra ID token request, HTTP 401, invalid_client; request id 67c1aa00-0000-0000-0000-000000000000)",
            ],
            request_id: Some("67c1aa00-0000-0000-0000-000000000000"),
            retry_after: None,
        },
        Case {
            status: 400,
            body: json!({
                "error": "invalid_scope",
                "error_description": "AADSTS70011: The provided request must include a 'scope' input parameter.",
                "error_codes": [70011],
                "trace_id": "trace-70011"
            })
            .to_string(),
            headers: vec![],
            kind: ProviderErrorKind::AuthenticationFailed,
            contains: vec!["invalid_scope", "AADSTS70011", "must include a 'scope'"],
            request_id: Some("trace-70011"),
            retry_after: None,
        },
        Case {
            status: 400,
            body: json!({
                "error": "invalid_request",
                "error_description": "AADSTS90002: Tenant '00000000-0000-0000-0000-000000000000' not found."
            })
            .to_string(),
            headers: vec![],
            kind: ProviderErrorKind::AuthenticationFailed,
            contains: vec!["AADSTS90002", "not found"],
            request_id: None,
            retry_after: None,
        },
        Case {
            status: 401,
            body: "<html>denied</html>".into(),
            headers: vec![],
            kind: ProviderErrorKind::AuthenticationFailed,
            contains: vec!["HTTP 401"],
            request_id: None,
            retry_after: None,
        },
        Case {
            status: 429,
            body: json!({"error": "temporarily_unavailable", "error_codes": [50196]}).to_string(),
            headers: vec![("retry-after", "17")],
            kind: ProviderErrorKind::Throttled,
            contains: vec!["HTTP 429", "AADSTS50196"],
            request_id: None,
            retry_after: Some(Duration::from_secs(17)),
        },
        Case {
            status: 503,
            body: String::new(),
            headers: vec![],
            kind: ProviderErrorKind::Unavailable,
            contains: vec!["HTTP 503"],
            request_id: None,
            retry_after: None,
        },
        Case {
            status: 200,
            body: r#"{"access_token": "#.into(),
            headers: vec![],
            kind: ProviderErrorKind::InvalidResponse,
            contains: vec!["malformed Microsoft Entra ID token response"],
            request_id: None,
            retry_after: None,
        },
        Case {
            status: 200,
            body: json!({"token_type": "Bearer", "expires_in": 3599}).to_string(),
            headers: vec![],
            kind: ProviderErrorKind::InvalidResponse,
            contains: vec!["no access_token"],
            request_id: None,
            retry_after: None,
        },
    ];
    for case in cases {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(POST).path(TOKEN_PATH);
                let mut then = then.status(case.status).body(case.body.clone());
                for (k, v) in &case.headers {
                    then = then.header(*k, *v);
                }
            })
            .await;
        let err = tokens()
            .token(&request(&server, secret("v1"), ARM_SCOPE), t0())
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert_eq!(err.kind, case.kind, "{}: {shown}", case.status);
        for c in &case.contains {
            assert!(err.to_string().contains(c), "{c:?} missing in {shown}");
        }
        assert!(shown.matches("request id").count() <= 1, "{shown}");
        assert!(!shown.contains(SECRET), "secret leaked: {shown}");
        assert!(!shown.contains("Trace ID"), "{shown}");
        assert!(
            !shown.contains("Correlation ID") && !shown.contains("Timestamp:"),
            "{shown}"
        );
        assert_eq!(err.request_id.as_deref(), case.request_id, "{shown}");
        assert_eq!(err.retry_after, case.retry_after, "{shown}");
    }
}

#[tokio::test]
async fn a_slow_entra_times_out_as_unavailable() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path(TOKEN_PATH);
            then.status(200)
                .delay(Duration::from_secs(3))
                .body(ok_body("late", json!(3599)));
        })
        .await;
    let t = EntraTokens::new(http(Duration::from_millis(200)));
    let err = t
        .token(&request(&server, secret("v1"), ARM_SCOPE), t0())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Unavailable);
    assert!(err.message.contains("did not answer"), "{}", err.message);
}

#[test]
fn code_helpers() {
    assert_eq!(
        strip_aadsts_prefix("AADSTS700016: App not found"),
        "App not found"
    );
    assert_eq!(strip_aadsts_prefix("No code here"), "No code here");
    assert_eq!(
        aadsts_code("Error AADSTS50034: user").as_deref(),
        Some("AADSTS50034")
    );
    assert_eq!(aadsts_code("AADSTS: nothing"), None);
    assert_eq!(scrub("a hunter22 b", &["hunter22", ""]), "a [redacted] b");
}
