//! Contract tests of the Fabric client against httpmock, with the seed's sample bodies.

use super::*;
use crate::metrics::Metrics;
use crate::providers::http::HttpOptions;
use httpmock::prelude::*;
use serde_json::{Value, json};

const TOKEN: &str = "eyJ-entra-access-token-secret";
/// The continuation token of the seed's "List workspaces with continuation example".
const SEED_TOKEN: &str = "LDEsMTAwMDAwLDA%3D";

fn policy_for(servers: &[&MockServer]) -> EndpointPolicy {
    EndpointPolicy::new(
        servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.address().port()).parse().unwrap())
            .collect(),
    )
}

fn client_with(server: &MockServer, policy: EndpointPolicy) -> FabricClient {
    let http = HttpClient::new(HttpOptions::default(), Arc::new(Metrics::new())).unwrap();
    FabricClient::new(
        http,
        policy,
        Url::parse(&server.base_url()).unwrap(),
        Arc::new(StaticToken(SecretString::new(TOKEN))),
    )
}

fn client(server: &MockServer) -> FabricClient {
    client_with(server, policy_for(&[server]))
}

/// The seed's three workspaces ("List workspaces example").
fn seed_workspaces() -> Value {
    json!([
        {"id": "fa9ad228-3e6b-44d4-b5f4-e275f337afa9", "displayName": "My workspace", "description": "", "type": "Personal"},
        {"id": "cfafbeb1-8037-4d0c-896e-a46fb27ff227", "displayName": "Marketing", "description": "A  workspace used by the marketing team", "type": "Workspace"},
        {"id": "f2d70dc6-8f3e-4f2c-b00e-e2d336d7d711", "displayName": "Finance", "description": "A workspace used by the finance team", "type": "Workspace", "capacityId": "171018af-1531-4e61-942a-74f024b7f9fd"}
    ])
}

fn workspaces(prefix: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"id": format!("{prefix}-{i:04}"), "displayName": format!("ws {i}"), "description": ""}))
            .collect(),
    )
}

/// docs/providers.md §2.2's GetWorkspaceRoleAssignments example.
fn seed_role_assignments() -> Value {
    json!([
        {"id": "81fac5e1-3e6b-44d4-b5f4-e275f337afa9",
         "principal": {"displayName": "Eric Solomon", "id": "81fac5e1-3e6b-44d4-b5f4-e275f337afa9", "type": "User",
                       "userDetails": {"userPrincipalName": "eric@microsoft.com"}},
         "role": "Admin"},
        {"id": "dbc4f130-8037-4d0c-896e-a46fb27ff227",
         "principal": {"displayName": "ServicePrincipal", "id": "dbc4f130-8037-4d0c-896e-a46fb27ff227", "type": "ServicePrincipal",
                       "servicePrincipalDetails": {"aadAppId": "7ac9c70b-8037-4d0c-896e-a46fb27ff227"}},
         "role": "Member"}
    ])
}

fn raw_query_is(
    expected: &'static str,
) -> impl Fn(&HttpMockRequest) -> bool + Send + Sync + 'static {
    move |req: &HttpMockRequest| req.uri().query() == Some(expected)
}

#[tokio::test]
async fn lists_the_seed_sample_with_a_bearer_token() {
    let server = MockServer::start_async().await;
    let list = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/workspaces")
                .query_param_missing("roles")
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("accept", "application/json");
            then.status(200)
                .json_body(json!({"value": seed_workspaces()}));
        })
        .await;
    let got = client(&server).list_workspaces(&[]).await.unwrap();
    list.assert_async().await;
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[2],
        Workspace {
            id: "f2d70dc6-8f3e-4f2c-b00e-e2d336d7d711".into(),
            display_name: Some("Finance".into()),
            description: Some("A workspace used by the finance team".into()),
            type_: Some("Workspace".into()),
            capacity_id: Some("171018af-1531-4e61-942a-74f024b7f9fd".into()),
        }
    );
    assert_eq!(got[0].description.as_deref(), Some(""));
}

#[tokio::test]
async fn follows_continuation_uri_verbatim_then_continuation_token_unencoded() {
    let server = MockServer::start_async().await;
    // Page 1: the seed's continuation example, pointing at the mock server.
    let uri = server.url(format!("/v1/workspaces?continuationToken={SEED_TOKEN}"));
    let p1 = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/workspaces")
                .is_true(raw_query_is("roles=Admin,Member"))
                .query_param("roles", "Admin,Member");
            then.status(200).json_body(json!({
                "value": seed_workspaces(),
                "continuationToken": SEED_TOKEN,
                "continuationUri": uri,
            }));
        })
        .await;
    // Page 2: reached through the URI exactly as given (%3D not turned into %253D).
    let p2 = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/workspaces")
                .is_true(raw_query_is("continuationToken=LDEsMTAwMDAwLDA%3D"))
                .query_param("continuationToken", "LDEsMTAwMDAwLDA=");
            then.status(200).json_body(json!({
                "value": workspaces("b", 2),
                // Only a token this time.
                "continuationToken": "LDIsMjAwMDAwLDA%3D",
            }));
        })
        .await;
    // Page 3: the token appended to the first request's query, as received.
    let p3 = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/workspaces")
                .is_true(raw_query_is(
                    "roles=Admin,Member&continuationToken=LDIsMjAwMDAwLDA%3D",
                ))
                .header("authorization", format!("Bearer {TOKEN}"));
            then.status(200)
                .json_body(json!({"value": workspaces("c", 1)}));
        })
        .await;
    let got = client(&server)
        .list_workspaces(&["Admin", "Member"])
        .await
        .unwrap();
    for p in [&p1, &p2, &p3] {
        assert_eq!(p.calls_async().await, 1);
    }
    let ids: Vec<&str> = got.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(ids[3..], ["b-0000", "b-0001", "c-0000"]);
}

#[test]
fn continuation_tokens_keep_their_encoding() {
    let first = Url::parse("https://api.fabric.microsoft.com/v1/workspaces").unwrap();
    assert_eq!(
        with_continuation_token(&first, SEED_TOKEN).as_str(),
        "https://api.fabric.microsoft.com/v1/workspaces?continuationToken=LDEsMTAwMDAwLDA%3D"
    );
    let filtered =
        Url::parse("https://api.fabric.microsoft.com/v1/workspaces?roles=Admin").unwrap();
    assert_eq!(
        with_continuation_token(&filtered, "a+b/c=").query(),
        Some("roles=Admin&continuationToken=a+b/c=")
    );
    // Only what would change the query's structure is escaped.
    assert_eq!(
        with_continuation_token(&first, "x&roles=Viewer#f").query(),
        Some("continuationToken=x%26roles=Viewer%23f")
    );
}

#[tokio::test]
async fn many_pages_are_all_followed() {
    let server = MockServer::start_async().await;
    let pages = 25;
    let mut mocks = Vec::new();
    for p in 0..pages {
        let (matcher, next): (String, Option<String>) = (
            if p == 0 {
                String::new()
            } else {
                format!("continuationToken=tok{p}")
            },
            (p + 1 < pages)
                .then(|| server.url(format!("/v1/workspaces?continuationToken=tok{}", p + 1))),
        );
        let mut body = json!({"value": workspaces(&format!("p{p:02}"), 100)});
        if let Some(n) = next {
            body["continuationUri"] = json!(n);
        }
        mocks.push(
            server
                .mock_async(|when, then| {
                    when.method(GET)
                        .path("/v1/workspaces")
                        .is_true(move |req| req.uri().query().unwrap_or("") == matcher);
                    then.status(200).json_body(body);
                })
                .await,
        );
    }
    let got = client(&server).list_workspaces(&[]).await.unwrap();
    assert_eq!(got.len(), 2500);
    for m in &mocks {
        assert_eq!(m.calls_async().await, 1);
    }
}

#[tokio::test]
async fn continuation_uri_to_another_host_is_refused() {
    let server = MockServer::start_async().await;
    let elsewhere = MockServer::start_async().await;
    let stolen = elsewhere
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).json_body(json!({"value": []}));
        })
        .await;
    let uri = elsewhere.url("/v1/workspaces?continuationToken=abc");
    server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces");
            then.status(200).json_body(json!({
                "value": seed_workspaces(), "continuationToken": "abc", "continuationUri": uri
            }));
        })
        .await;
    // Even an allowed host is refused: it is not the configured endpoint.
    let err = client_with(&server, policy_for(&[&server, &elsewhere]))
        .list_workspaces(&[])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::InvalidResponse);
    assert!(err.message.contains("continuationUri refused"), "{err}");
    assert!(err.message.contains("another origin"), "{err}");
    assert_eq!(stolen.calls_async().await, 0);

    let server2 = MockServer::start_async().await;
    server2
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces");
            then.status(200).json_body(json!({
                "value": [], "continuationUri": "https://api.fabric.microsoft.com.evil.io/v1/workspaces?continuationToken=x"
            }));
        })
        .await;
    let err = client(&server2).list_workspaces(&[]).await.unwrap_err();
    assert!(
        err.message
            .contains("not an official Microsoft Fabric host"),
        "{err}"
    );
}

#[tokio::test]
async fn a_page_failing_midway_fails_the_listing() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/workspaces")
                .query_param_missing("continuationToken");
            then.status(200)
                .json_body(json!({"value": workspaces("a", 100), "continuationToken": "t2"}));
        })
        .await;
    server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/workspaces")
                .query_param("continuationToken", "t2");
            then.status(500).json_body(json!({
                "errorCode": "UnknownError", "message": "An error occurred", "requestId": "rq-500"
            }));
        })
        .await;
    let err = client(&server).list_workspaces(&[]).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Unavailable);
    assert_eq!(err.request_id.as_deref(), Some("rq-500"));
    assert_eq!(
        err.to_string(),
        "UnknownError: An error occurred (Fabric listWorkspaces, HTTP 500; request id rq-500)"
    );
}

#[tokio::test]
async fn new_types_and_roles_are_kept_as_strings() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces");
            then.status(200).json_body(json!({"value": [
                {"id": "w1", "displayName": "x", "description": "", "type": "AdminWorkspace"},
                {"id": "w2", "displayName": "y", "description": "", "type": "SomethingNew", "domainId": "d", "tags": [{"id": "t", "displayName": "T"}]}
            ]}));
        })
        .await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces/w1/roleAssignments");
            then.status(200).json_body(json!({"value": [
                {"id": "a", "principal": {"id": "p", "type": "FuturePrincipal"}, "role": "Owner2030"}
            ]}));
        })
        .await;
    let c = client(&server);
    let got = c.list_workspaces(&[]).await.unwrap();
    assert_eq!(got[1].type_.as_deref(), Some("SomethingNew"));
    let ra = c.role_assignments("w1").await.unwrap();
    assert_eq!(ra[0].role.as_deref(), Some("Owner2030"));
    assert_eq!(ra[0].principal.type_.as_deref(), Some("FuturePrincipal"));
}

#[tokio::test]
async fn role_assignments_of_several_workspaces() {
    let server = MockServer::start_async().await;
    let next = server.url("/v1/workspaces/w1/roleAssignments?continuationToken=p2");
    let w1p1 = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/workspaces/w1/roleAssignments")
                .query_param_missing("continuationToken")
                .header("authorization", format!("Bearer {TOKEN}"));
            then.status(200).json_body(json!({
                "value": seed_role_assignments(), "continuationToken": "p2", "continuationUri": next
            }));
        })
        .await;
    let w1p2 = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/workspaces/w1/roleAssignments")
                .query_param("continuationToken", "p2");
            then.status(200).json_body(json!({"value": [
                {"id": "g1", "principal": {"id": "g1", "displayName": "Analysts", "type": "Group",
                                           "groupDetails": {"groupType": "SecurityGroup"}}, "role": "Viewer"}
            ]}));
        })
        .await;
    let w2 = server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces/w2/roleAssignments");
            then.status(200)
                .json_body(json!({"value": seed_role_assignments()}));
        })
        .await;
    let w3 = server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces/w3/roleAssignments");
            then.status(403).json_body(json!({
                "errorCode": "InsufficientPrivileges",
                "message": "The caller does not have sufficient permissions", "requestId": "rq-403"
            }));
        })
        .await;
    let got = client(&server)
        .role_assignments_of(&["w1".into(), "w2".into(), "w3".into()])
        .await
        .unwrap();
    for m in [&w1p1, &w1p2, &w2, &w3] {
        assert_eq!(m.calls_async().await, 1);
    }
    let RoleAssignments::Listed(w1) = &got[0] else {
        panic!("{:?}", got[0])
    };
    assert_eq!(w1.len(), 3);
    assert_eq!(
        w1[0].principal.display_name.as_deref(),
        Some("Eric Solomon")
    );
    assert_eq!(w1[0].principal.type_.as_deref(), Some("User"));
    assert_eq!(w1[1].role.as_deref(), Some("Member"));
    assert_eq!(w1[2].principal.type_.as_deref(), Some("Group"));
    assert!(matches!(&got[1], RoleAssignments::Listed(l) if l.len() == 2));
    let RoleAssignments::NotReadable(e) = &got[2] else {
        panic!("{:?}", got[2])
    };
    assert_eq!(e.kind, ProviderErrorKind::Forbidden);
    assert!(e.message.contains("InsufficientPrivileges"), "{e}");
}

#[tokio::test]
async fn throttling_fails_the_role_assignment_listing_with_retry_after() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces/w1/roleAssignments");
            then.status(200)
                .json_body(json!({"value": seed_role_assignments()}));
        })
        .await;
    let throttled = server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces/w2/roleAssignments");
            then.status(429).header("Retry-After", "120").json_body(json!({
                "errorCode": "RequestBlocked", "message": "Request is blocked by the upstream service until: 2026-11-23 10:01:00 (UTC)"
            }));
        })
        .await;
    let err = client(&server)
        .role_assignments_of(&["w1".into(), "w2".into()])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Throttled);
    assert_eq!(err.retry_after, Some(Duration::from_secs(120)));
    assert!(
        err.message.starts_with("workspace w2: RequestBlocked")
            && err
                .to_string()
                .contains("(Fabric listWorkspaceRoleAssignments, HTTP 429"),
        "{err}"
    );
    assert_eq!(
        throttled.calls_async().await,
        1,
        "longer than a minute: back to the caller"
    );
}

/// Status, body, extra header, expected kind, text and request id.
type ErrorCase<'a> = (
    u16,
    Value,
    Option<(&'a str, &'a str)>,
    ProviderErrorKind,
    &'a str,
    Option<&'a str>,
);

#[tokio::test]
async fn error_bodies_map_to_kinds() {
    let cases: Vec<ErrorCase> = vec![
        (
            400,
            json!({"errorCode": "InvalidParameter", "message": "Invalid workspace role", "requestId": "rq-1"}),
            None,
            ProviderErrorKind::InvalidRequest,
            "InvalidParameter: Invalid workspace role (Fabric listWorkspaces, HTTP 400",
            Some("rq-1"),
        ),
        (
            403,
            json!({"errorCode": "TokenExpired", "message": "Access token has expired, resubmit with a new access token"}),
            Some(("requestid", "hdr-2")),
            ProviderErrorKind::AuthenticationFailed,
            "TokenExpired: Access token has expired, resubmit with a new access token (Fabric listWorkspaces, HTTP 403",
            Some("hdr-2"),
        ),
        (
            401,
            json!({"errorCode": "Unauthorized", "message": "The caller is not authenticated"}),
            Some(("x-ms-request-id", "hdr-3")),
            ProviderErrorKind::AuthenticationFailed,
            "Unauthorized: The caller is not authenticated (Fabric listWorkspaces, HTTP 401",
            Some("hdr-3"),
        ),
        (
            404,
            json!({"errorCode": "EntityNotFound", "message": "The requested resource could not be found",
                   "moreDetails": [{"errorCode": "X", "message": "y"}],
                   "relatedResource": {"resourceId": "w", "resourceType": "Workspace"}}),
            None,
            ProviderErrorKind::NotFound,
            "EntityNotFound",
            None,
        ),
        (
            502,
            json!("<html>"),
            None,
            ProviderErrorKind::Unavailable,
            "(Fabric listWorkspaces, HTTP 502",
            None,
        ),
    ];
    for (status, body, header, kind, text, request_id) in cases {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(GET).path("/v1/workspaces");
                let then = then.status(status).json_body(body);
                if let Some((k, v)) = header {
                    then.header(k, v);
                }
            })
            .await;
        let err = client(&server)
            .list_workspaces(&["Viewer"])
            .await
            .unwrap_err();
        assert_eq!(err.kind, kind, "{status}");
        assert!(err.to_string().contains(text), "{status}: {err}");
        assert_eq!(err.request_id.as_deref(), request_id, "{status}");
        assert!(!err.to_string().contains(TOKEN));
    }
}

#[tokio::test]
async fn malformed_pages_are_invalid_responses() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces");
            then.status(200).body(r#"{"workspaces": []}"#);
        })
        .await;
    let err = client(&server).list_workspaces(&[]).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::InvalidResponse);
    assert!(
        err.message.contains("malformed Fabric listWorkspaces"),
        "{err}"
    );
}

#[tokio::test]
async fn token_failures_stop_before_any_request() {
    struct Refused;
    #[async_trait]
    impl TokenSource for Refused {
        async fn bearer_token(&self) -> Result<SecretString, ProviderError> {
            Err(ProviderError::new(
                ProviderErrorKind::AuthenticationFailed,
                "AADSTS7000215: Invalid client secret provided",
            ))
        }
    }
    let server = MockServer::start_async().await;
    let any = server
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).json_body(json!({"value": []}));
        })
        .await;
    let http = HttpClient::new(HttpOptions::default(), Arc::new(Metrics::new())).unwrap();
    let c = FabricClient::new(
        http,
        policy_for(&[&server]),
        Url::parse(&server.base_url()).unwrap(),
        Arc::new(Refused),
    );
    let err = c.list_workspaces(&[]).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::AuthenticationFailed);
    assert_eq!(any.calls_async().await, 0);
}

#[tokio::test]
async fn a_rejected_token_is_reported_to_its_source() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Counting(AtomicUsize);
    #[async_trait]
    impl TokenSource for Counting {
        async fn bearer_token(&self) -> Result<SecretString, ProviderError> {
            Ok(SecretString::new(TOKEN))
        }
        fn rejected(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces");
            then.status(401).json_body(json!({
                "errorCode": "TokenExpired", "message": "Access token has expired"
            }));
        })
        .await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces/w1/roleAssignments");
            then.status(403)
                .json_body(json!({"errorCode": "InsufficientPrivileges", "message": "no"}));
        })
        .await;
    let source = Arc::new(Counting(AtomicUsize::new(0)));
    let http = HttpClient::new(HttpOptions::default(), Arc::new(Metrics::new())).unwrap();
    let c = FabricClient::new(
        http,
        policy_for(&[&server]),
        Url::parse(&server.base_url()).unwrap(),
        source.clone(),
    );
    let err = c.list_workspaces(&[]).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::AuthenticationFailed);
    assert_eq!(source.0.load(Ordering::SeqCst), 1);
    // A 403 is about the caller's role, not the token.
    c.role_assignments_of(&["w1".into()]).await.unwrap();
    assert_eq!(source.0.load(Ordering::SeqCst), 1);
}
