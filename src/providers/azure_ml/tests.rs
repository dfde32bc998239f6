//! Contract tests of the listNotebookAccessToken client against httpmock.

use super::*;
use crate::metrics::Metrics;
use crate::providers::http::HttpOptions;
use httpmock::prelude::*;
use serde_json::json;
use std::sync::Arc;

const SUB: &str = "00000000-1111-2222-3333-444444444444";
const PATH: &str = "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/workspace-1234/providers/Microsoft.MachineLearningServices/workspaces/testworkspace/listNotebookAccessToken";
const BEARER: &str = "arm-bearer-token-value";

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

fn workspace(endpoint: &str, rg: &str, name: &str) -> Workspace {
    Workspace {
        endpoint: Url::parse(endpoint).unwrap(),
        subscription_id: SUB.into(),
        resource_group: rg.into(),
        workspace_name: name.into(),
        api_version: "2024-04-01".into(),
    }
}

/// The seed document's sample response, plus the two secret fields it leaves out.
fn sample() -> serde_json::Value {
    json!({
        "notebookResourceId": "94350843095843059",
        "hostName": "Host product name",
        "publicDns": "resource.notebooks.azure.net",
        "tokenType": "Bearer",
        "expiresIn": 28800.0,
        "scope": "aznb_identity",
        "accessToken": "notebook-access-token",
        "refreshToken": "notebook-refresh-token"
    })
}

async fn call(server: &MockServer) -> Result<NotebookAccessToken, ProviderError> {
    list_notebook_access_token(
        &http(Duration::from_secs(5)),
        &SecretString::new(BEARER),
        &workspace(&server.base_url(), "workspace-1234", "testworkspace"),
    )
    .await
}

#[tokio::test]
async fn sends_an_empty_authorised_post_and_parses_the_sample_response() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST)
                .path(PATH)
                .query_param("api-version", "2024-04-01")
                .query_param_count("api-version", ".*", 1)
                .header("authorization", format!("Bearer {BEARER}"))
                .header("content-length", "0")
                .header("accept", "application/json")
                .body("");
            then.status(200)
                .header("content-type", "application/json; charset=utf-8")
                .header("x-ms-request-id", "req-200")
                .json_body(sample());
        })
        .await;
    let got = call(&server).await.unwrap();
    mock.assert_calls_async(1).await;
    assert_eq!(got.access_token.expose(), "notebook-access-token");
    assert_eq!(
        got.refresh_token.as_ref().map(SecretString::expose),
        Some("notebook-refresh-token")
    );
    assert_eq!(got.expires_in, Duration::from_secs(28800));
    assert_eq!(
        got.notebook_resource_id.as_deref(),
        Some("94350843095843059")
    );
    assert_eq!(got.host_name.as_deref(), Some("Host product name"));
    assert_eq!(
        got.public_dns.as_deref(),
        Some("resource.notebooks.azure.net")
    );
    assert_eq!(got.token_type.as_deref(), Some("Bearer"));
    assert_eq!(got.scope.as_deref(), Some("aznb_identity"));
    assert_eq!(got.request_id.as_deref(), Some("req-200"));
    let printed = format!("{got:?}");
    assert!(!printed.contains("notebook-access-token"), "{printed}");
}

#[tokio::test]
async fn only_the_token_and_its_lifetime_are_required() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path(PATH);
            then.status(200)
                .body(r#"{"accessToken": "t", "expiresIn": 3600, "somethingNew": {"x": 1}}"#);
        })
        .await;
    let got = call(&server).await.unwrap();
    assert_eq!(got.expires_in, Duration::from_secs(3600));
    assert!(got.refresh_token.is_none() && got.host_name.is_none() && got.scope.is_none());
}

#[test]
fn path_parameters_are_encoded_segments() {
    let url = list_notebook_access_token_url(&workspace(
        "https://management.azure.com/",
        "rg (prod)",
        "../../x?y#z%",
    ))
    .unwrap();
    assert_eq!(
        url.path(),
        "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg%20(prod)/providers/Microsoft.MachineLearningServices/workspaces/..%2F..%2Fx%3Fy%23z%25/listNotebookAccessToken"
    );
    assert_eq!(url.query(), Some("api-version=2024-04-01"));
    let prefixed = list_notebook_access_token_url(&workspace(
        "http://127.0.0.1:9/arm/",
        "rg",
        "testworkspace",
    ))
    .unwrap();
    assert!(
        prefixed
            .path()
            .starts_with("/arm/subscriptions/00000000-1111-2222-3333-444444444444/"),
        "{prefixed}"
    );
    for bad in ["", ".", ".."] {
        let err = list_notebook_access_token_url(&workspace(
            "https://management.azure.com",
            bad,
            "testworkspace",
        ))
        .unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::InvalidRequest, "{bad:?}");
    }
}

#[tokio::test]
async fn an_encoded_name_reaches_the_server_as_one_segment() {
    let server = MockServer::start_async().await;
    let mock = server
        .mock_async(|when, then| {
            when.method(POST).path(
                "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/a%2Fb/providers/Microsoft.MachineLearningServices/workspaces/w%3Fx/listNotebookAccessToken",
            );
            then.status(200).json_body(sample());
        })
        .await;
    list_notebook_access_token(
        &http(Duration::from_secs(5)),
        &SecretString::new(BEARER),
        &workspace(&server.base_url(), "a/b", "w?x"),
    )
    .await
    .unwrap();
    mock.assert_calls_async(1).await;
}

#[tokio::test]
async fn arm_errors_map_to_reasons_with_code_message_and_request_id() {
    use ProviderErrorKind::*;
    let arm = |code: &str, message: &str| {
        json!({"error": {"code": code, "message": message}}).to_string()
    };
    type Case = (
        u16,
        String,
        Vec<(&'static str, &'static str)>,
        ProviderErrorKind,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            401,
            arm("InvalidAuthenticationToken", "The access token is invalid."),
            vec![],
            AuthenticationFailed,
            vec![
                "InvalidAuthenticationToken: The access token is invalid. (Azure Resource Manager listNotebookAccessToken, HTTP 401;",
            ],
        ),
        (
            403,
            arm(
                "AuthorizationFailed",
                "The client 'abc' with object id 'abc' does not have authorization to perform action 'Microsoft.MachineLearningServices/workspaces/listNotebookAccessToken/action'.",
            ),
            vec![],
            Forbidden,
            vec![
                "AuthorizationFailed: The client",
                "(Azure Resource Manager listNotebookAccessToken, HTTP 403;",
                "listNotebookAccessToken/action",
            ],
        ),
        (403, String::new(), vec![], Forbidden, vec![REQUIRED_ACTION]),
        (
            404,
            arm(
                "ResourceNotFound",
                "The Resource 'Microsoft.MachineLearningServices/workspaces/testworkspace' under resource group 'workspace-1234' was not found.",
            ),
            vec![],
            NotFound,
            vec!["ResourceNotFound", "was not found"],
        ),
        (
            400,
            arm(
                "ResourceGroupNotFound",
                "Resource group 'workspace-1234' could not be found.",
            ),
            vec![],
            NotFound,
            vec!["ResourceGroupNotFound"],
        ),
        (
            400,
            arm("AuthorizationFailed", "denied"),
            vec![],
            Forbidden,
            vec!["AuthorizationFailed: denied"],
        ),
        (
            429,
            arm("TooManyRequests", "Slow down."),
            vec![("retry-after", "30")],
            Throttled,
            vec![
                "TooManyRequests: Slow down. (Azure Resource Manager listNotebookAccessToken, HTTP 429;",
            ],
        ),
        (
            500,
            arm("InternalServerError", "Something broke."),
            vec![],
            Unavailable,
            vec![
                "InternalServerError: Something broke. (Azure Resource Manager listNotebookAccessToken, HTTP 500;",
            ],
        ),
        (
            502,
            "<html>Bad Gateway</html>".into(),
            vec![],
            Unavailable,
            vec!["HTTP 502"],
        ),
        (
            400,
            arm("BadRequest", &format!("token {BEARER} was echoed")),
            vec![],
            InvalidRequest,
            vec!["[redacted]"],
        ),
    ];
    for (status, body, headers, kind, contains) in cases {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(POST).path(PATH);
                let mut then = then
                    .status(status)
                    .header("x-ms-request-id", format!("req-{status}"))
                    .body(body.clone());
                for (k, v) in &headers {
                    then = then.header(*k, *v);
                }
            })
            .await;
        let err = call(&server).await.unwrap_err();
        let shown = err.to_string();
        assert_eq!(err.kind, kind, "{status}: {shown}");
        for c in contains {
            assert!(shown.contains(c), "{c:?} missing in {shown}");
        }
        assert!(
            shown.ends_with(&format!("; request id req-{status})")),
            "{shown}"
        );
        assert!(!shown.contains(BEARER), "{shown}");
        assert_eq!(err.status, Some(status));
        if status == 429 {
            assert_eq!(err.retry_after, Some(Duration::from_secs(30)));
        } else {
            assert_eq!(err.retry_after, None);
        }
    }
}

#[tokio::test]
async fn unusable_answers_are_invalid_responses() {
    let seed_only = json!({
        "notebookResourceId": "94350843095843059", "hostName": "Host product name",
        "publicDns": "resource.notebooks.azure.net", "tokenType": "Bearer",
        "expiresIn": 28800, "scope": "aznb_identity"
    })
    .to_string();
    for (body, wanted) in [
        (seed_only, "has no accessToken"),
        (
            r#"{"accessToken": "t", "expiresIn": null}"#.to_string(),
            "has no usable expiresIn",
        ),
        (
            r#"{"accessToken": "t", "expiresIn": 0}"#.to_string(),
            "has no usable expiresIn",
        ),
        (
            r#"{"accessToken": "secret-in-a-broken-body"#.to_string(),
            "malformed listNotebookAccessToken response",
        ),
        ("[1, 2]".to_string(), "malformed"),
    ] {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(POST).path(PATH);
                then.status(200)
                    .header("x-ms-request-id", "req-bad")
                    .body(body.clone());
            })
            .await;
        let err = call(&server).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::InvalidResponse, "{body}");
        assert!(
            err.message.contains(wanted),
            "{wanted:?} in {}",
            err.message
        );
        assert!(!err.to_string().contains("secret-in-a-broken-body"));
        assert_eq!(err.request_id.as_deref(), Some("req-bad"));
    }
}

#[tokio::test]
async fn a_slow_server_times_out_as_unavailable() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(POST).path(PATH);
            then.status(200)
                .delay(Duration::from_secs(3))
                .json_body(sample());
        })
        .await;
    let err = list_notebook_access_token(
        &http(Duration::from_millis(200)),
        &SecretString::new(BEARER),
        &workspace(&server.base_url(), "workspace-1234", "testworkspace"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Unavailable);
    assert!(
        err.message.contains("did not answer within"),
        "{}",
        err.message
    );
    assert!(
        !err.message.contains("listNotebookAccessToken"),
        "no path in {}",
        err.message
    );
}
