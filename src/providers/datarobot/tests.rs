//! Contract tests of the DataRobot client against httpmock, with the seed's sample bodies.

use super::*;
use crate::metrics::Metrics;
use crate::providers::http::HttpOptions;
use httpmock::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;

const TOKEN: &str = "dr-api-key-very-secret";

fn policy_for(servers: &[&MockServer]) -> EndpointPolicy {
    EndpointPolicy::new(
        servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.address().port()).parse().unwrap())
            .collect(),
    )
}

fn http() -> HttpClient {
    HttpClient::new(HttpOptions::default(), Arc::new(Metrics::new())).unwrap()
}

fn client_with(server: &MockServer, policy: EndpointPolicy, scheme: AuthScheme) -> DataRobotClient {
    let base = Url::parse(&server.url("/api/v2")).unwrap();
    DataRobotClient::new(http(), policy, base, &SecretString::new(TOKEN), scheme).unwrap()
}

fn client(server: &MockServer) -> DataRobotClient {
    client_with(server, policy_for(&[server]), AuthScheme::Token)
}

/// The seed's `NotebooksSharedRolesListResponse` sample, for one notebook.
fn seed_bulk_entry(notebook_id: &str) -> Value {
    json!({"notebookId": notebook_id,
           "roles": [{"id": "string", "name": "string", "role": "ADMIN", "shareRecipientType": "user"}]})
}

fn role(id: &str) -> Value {
    json!({"id": id, "name": format!("{id}@example.com"), "role": "EDITOR", "shareRecipientType": "user"})
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("65f0{i:020x}")).collect()
}

#[tokio::test]
async fn bulk_call_sends_token_scheme_and_parses_the_seed_sample() {
    let server = MockServer::start_async().await;
    let bulk = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/sharedRoles/")
                .query_param("notebookIds", "nb1,nb2")
                .header("authorization", format!("Token {TOKEN}"))
                .header("accept", "application/json");
            then.status(200).json_body(json!({"data": [
                seed_bulk_entry("nb2"),
                // The seed sample, as given; plus a recipient type the seed doesn't list.
                {"notebookId": "nb1", "roles": [
                    {"id": "string", "name": "string", "role": "ADMIN", "shareRecipientType": "user"},
                    {"id": "app-1", "name": "robot", "role": "FUTURE_ROLE", "shareRecipientType": "externalApplication"}
                ]},
                // Not asked for: ignored.
                seed_bulk_entry("other")
            ]}));
        })
        .await;
    let got = client(&server)
        .shared_roles(&["nb2".into(), "nb1".into(), "nb1".into()])
        .await
        .unwrap();
    bulk.assert_async().await;
    assert!(got.missing.is_empty());
    let notebooks: Vec<&str> = got
        .notebooks
        .iter()
        .map(|n| n.notebook_id.as_str())
        .collect();
    assert_eq!(notebooks, ["nb1", "nb2"], "sorted, duplicates asked once");
    assert_eq!(
        got.notebooks[0].roles[1],
        SharedRole {
            id: "app-1".into(),
            name: Some("robot".into()),
            role: Some("FUTURE_ROLE".into()),
            share_recipient_type: Some("externalApplication".into()),
        }
    );
    assert_eq!(got.notebooks[1].roles[0].role.as_deref(), Some("ADMIN"));
}

#[tokio::test]
async fn bearer_scheme_is_configurable() {
    let server = MockServer::start_async().await;
    let bulk = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/sharedRoles/")
                .header("authorization", format!("Bearer {TOKEN}"));
            then.status(200)
                .json_body(json!({"data": [seed_bulk_entry("nb1")]}));
        })
        .await;
    let c = client_with(&server, policy_for(&[&server]), AuthScheme::Bearer);
    let got = c.shared_roles(&["nb1".into()]).await.unwrap();
    bulk.assert_async().await;
    assert_eq!(got.notebooks.len(), 1);
}

#[tokio::test]
async fn many_ids_go_out_in_bounded_batches() {
    let server = MockServer::start_async().await;
    let all = ids(250);
    let mut mocks = Vec::new();
    for chunk in all.chunks(BULK_BATCH_SIZE) {
        let joined = chunk.join(",");
        let data: Vec<Value> = chunk.iter().map(|id| seed_bulk_entry(id)).collect();
        mocks.push(
            server
                .mock_async(|when, then| {
                    when.method(GET)
                        .path("/api/v2/notebooks/sharedRoles/")
                        .query_param("notebookIds", joined);
                    then.status(200).json_body(json!({ "data": data }));
                })
                .await,
        );
    }
    // Reversed input: batches are built from the sorted, de-duplicated IDs.
    let mut asked = all.clone();
    asked.reverse();
    let got = client(&server).shared_roles(&asked).await.unwrap();
    assert_eq!(mocks.len(), 3, "250 IDs -> 100 + 100 + 50");
    for m in &mocks {
        assert_eq!(m.calls_async().await, 1);
    }
    let got_ids: Vec<String> = got.notebooks.into_iter().map(|n| n.notebook_id).collect();
    assert_eq!(got_ids, all);
}

#[test]
fn batches_respect_count_and_length() {
    let long: Vec<String> = (0..200).map(|i| format!("{i:0>60}")).collect();
    let refs: Vec<&str> = long.iter().map(String::as_str).collect();
    let b = batches(&refs);
    assert!(b.len() > 2, "64-ish byte IDs make shorter batches");
    for batch in &b {
        assert!(batch.len() <= BULK_BATCH_SIZE);
        assert!(batch.join(",").len() <= BULK_BATCH_QUERY_BYTES);
    }
    assert_eq!(b.concat(), refs, "nothing lost or reordered");
    assert!(batches(&[]).is_empty());
}

#[tokio::test]
async fn selector_discovery_follows_next_over_several_pages() {
    let server = MockServer::start_async().await;
    let page = |n: usize, ids: &[&str], next: Option<String>| {
        json!({"count": ids.len(), "totalCount": 5, "previous": null, "next": next,
               "data": ids.iter().map(|id| json!({"id": id, "name": format!("notebook {id}"), "type": "plain"})).collect::<Vec<_>>(),
               "page": n})
    };
    let p2 = server.url("/api/v2/notebooks/?offset=2&limit=2&useCaseId=uc1");
    let p3 = server.url("/api/v2/notebooks/?offset=4&limit=2&useCaseId=uc1");
    let first = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/")
                .query_param("offset", "0")
                .query_param("limit", "100")
                .query_param("orderBy", "created")
                .query_param("useCaseId", "uc1")
                .query_param("owners", "u1")
                .query_param("owners", "u2")
                .query_param("tags", "finance team")
                .query_param("query", "churn & retention")
                .header("authorization", format!("Token {TOKEN}"));
            then.status(200)
                .json_body(page(1, &["n5", "n1"], Some(p2.clone())));
        })
        .await;
    let second = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/")
                .query_param("offset", "2");
            then.status(200)
                .json_body(page(2, &["n3", "n1"], Some(p3.clone())));
        })
        .await;
    let third = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/")
                .query_param("offset", "4")
                .header("authorization", format!("Token {TOKEN}"));
            then.status(200).json_body(page(3, &["n2"], None));
        })
        .await;
    let query = NotebookQuery {
        use_case_id: Some("uc1".into()),
        owners: vec!["u1".into(), "u2".into()],
        tags: vec!["finance team".into()],
        query: Some("churn & retention".into()),
    };
    let got = client(&server).discover(&query).await.unwrap();
    assert_eq!(got, ["n1", "n2", "n3", "n5"], "sorted, de-duplicated");
    for m in [&first, &second, &third] {
        assert_eq!(m.calls_async().await, 1);
    }
}

#[tokio::test]
async fn a_page_failing_midway_fails_the_whole_listing() {
    let server = MockServer::start_async().await;
    let p2 = server.url("/api/v2/notebooks/?offset=100&limit=100");
    server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/")
                .query_param("offset", "0");
            then.status(200)
                .json_body(json!({"data": [{"id": "n1"}], "next": p2}));
        })
        .await;
    server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/")
                .query_param("offset", "100");
            then.status(500)
                .header("x-request-id", "req-77")
                .json_body(json!({"message": "Internal error"}));
        })
        .await;
    let err = client(&server)
        .discover(&NotebookQuery::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Unavailable);
    assert_eq!(err.request_id.as_deref(), Some("req-77"));
    assert!(
        err.to_string()
            .contains("Internal error (DataRobot listNotebooks, HTTP 500;"),
        "{err}"
    );
}

#[tokio::test]
async fn per_notebook_endpoint_follows_the_next_chain() {
    let server = MockServer::start_async().await;
    // The bulk answer leaves nb1 out, so it is read page by page.
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/sharedRoles/");
            then.status(200).json_body(json!({"data": []}));
        })
        .await;
    let p2 = server.url("/api/v2/notebooks/nb1/sharedRoles/?offset=100&limit=100");
    let p3 = server.url("/api/v2/notebooks/nb1/sharedRoles/?offset=200&limit=100");
    let pages = [
        server
            .mock_async(|when, then| {
                when.method(GET)
                    .path("/api/v2/notebooks/nb1/sharedRoles/")
                    .query_param("offset", "0")
                    .query_param("limit", "100");
                then.status(200)
                    .json_body(json!({"count": 2, "totalCount": 5, "previous": null,
                    "next": p2, "data": [role("u1"), role("u2")]}));
            })
            .await,
        server
            .mock_async(|when, then| {
                when.method(GET)
                    .path("/api/v2/notebooks/nb1/sharedRoles/")
                    .query_param("offset", "100");
                then.status(200)
                    .json_body(json!({"count": 2, "totalCount": 5,
                    "next": p3, "data": [role("u3"), role("u4")]}));
            })
            .await,
        server
            .mock_async(|when, then| {
                when.method(GET)
                    .path("/api/v2/notebooks/nb1/sharedRoles/")
                    .query_param("offset", "200");
                then.status(200).json_body(
                    json!({"count": 1, "totalCount": 5, "next": null, "data": [role("u5")]}),
                );
            })
            .await,
    ];
    let got = client(&server).shared_roles(&["nb1".into()]).await.unwrap();
    for p in &pages {
        assert_eq!(p.calls_async().await, 1);
    }
    let roles: Vec<&str> = got.notebooks[0]
        .roles
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(roles, ["u1", "u2", "u3", "u4", "u5"]);
}

#[tokio::test]
async fn long_bulk_lists_are_completed_page_by_page() {
    let server = MockServer::start_async().await;
    let hundred: Vec<Value> = (0..FULL_LIST_THRESHOLD)
        .map(|i| role(&format!("u{i:03}")))
        .collect();
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/sharedRoles/");
            then.status(200).json_body(json!({"data": [
                {"notebookId": "big", "roles": hundred},
                seed_bulk_entry("small")
            ]}));
        })
        .await;
    let mut all: Vec<Value> = (0..FULL_LIST_THRESHOLD)
        .map(|i| role(&format!("u{i:03}")))
        .collect();
    all.push(role("u100"));
    let big = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/big/sharedRoles/");
            then.status(200)
                .json_body(json!({"data": all, "next": null}));
        })
        .await;
    let small = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/small/sharedRoles/");
            then.status(500);
        })
        .await;
    let got = client(&server)
        .shared_roles(&["big".into(), "small".into()])
        .await
        .unwrap();
    assert_eq!(big.calls_async().await, 1);
    assert_eq!(
        small.calls_async().await,
        0,
        "a short list is taken from the bulk answer"
    );
    assert_eq!(got.notebooks[0].roles.len(), FULL_LIST_THRESHOLD + 1);
}

#[tokio::test]
async fn unknown_notebooks_are_reported_missing() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/sharedRoles/");
            then.status(200)
                .json_body(json!({"data": [seed_bulk_entry("nb1")]}));
        })
        .await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/gone/sharedRoles/");
            then.status(404)
                .json_body(json!({"message": "Notebook not found"}));
        })
        .await;
    let got = client(&server)
        .shared_roles(&["nb1".into(), "gone".into()])
        .await
        .unwrap();
    assert_eq!(got.missing, ["gone"]);
    assert_eq!(got.notebooks.len(), 1);
}

#[tokio::test]
async fn path_parameters_are_percent_encoded_segments() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/sharedRoles/");
            then.status(200).json_body(json!({"data": []}));
        })
        .await;
    let encoded = server
        .mock_async(|when, then| {
            when.method(GET)
                .is_true(|req| req.uri().path() == "/api/v2/notebooks/a%2F..%2Fb/sharedRoles/");
            then.status(200)
                .json_body(json!({"data": [role("u1")], "next": null}));
        })
        .await;
    let got = client(&server)
        .shared_roles(&["a/../b".into()])
        .await
        .unwrap();
    assert_eq!(encoded.calls_async().await, 1);
    assert_eq!(got.notebooks[0].notebook_id, "a/../b");
}

#[tokio::test]
async fn next_links_to_another_origin_are_refused_before_any_request() {
    let server = MockServer::start_async().await;
    let elsewhere = MockServer::start_async().await;
    let stolen = elsewhere
        .mock_async(|when, then| {
            when.any_request();
            then.status(200)
                .json_body(json!({"data": [], "next": null}));
        })
        .await;
    let next = elsewhere.url("/api/v2/notebooks/?offset=100");
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/");
            then.status(200)
                .json_body(json!({"data": [{"id": "n1"}], "next": next}));
        })
        .await;
    // Both mock servers are allowed endpoints; the link is still refused: another origin.
    let c = client_with(
        &server,
        policy_for(&[&server, &elsewhere]),
        AuthScheme::Token,
    );
    let err = c.discover(&NotebookQuery::default()).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::InvalidResponse);
    assert!(err.message.contains("next-page link refused"), "{err}");
    assert!(
        !err.message.contains("offset=100"),
        "no path or query: {err}"
    );
    assert_eq!(stolen.calls_async().await, 0);

    // And a host the policy doesn't allow at all.
    let server2 = MockServer::start_async().await;
    server2
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/");
            then.status(200).json_body(
                json!({"data": [], "next": "https://attacker.example.com/api/v2/notebooks/?offset=1"}),
            );
        })
        .await;
    let err = client(&server2)
        .discover(&NotebookQuery::default())
        .await
        .unwrap_err();
    assert!(
        err.message.contains("not an official DataRobot host"),
        "{err}"
    );
}

#[tokio::test]
async fn a_next_link_that_loops_is_an_error() {
    let server = MockServer::start_async().await;
    let same = server.url("/api/v2/notebooks/?offset=0&limit=100&orderBy=created");
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/");
            then.status(200)
                .json_body(json!({"data": [{"id": "n1"}], "next": same}));
        })
        .await;
    let err = client(&server)
        .discover(&NotebookQuery::default())
        .await
        .unwrap_err();
    assert!(err.message.contains("repeats an earlier page"), "{err}");
}

#[tokio::test]
async fn error_bodies_map_to_kinds_with_provider_text() {
    let cases: Vec<(u16, Value, Option<&str>, ProviderErrorKind, &str)> = vec![
        (
            401,
            json!({"message": "The user is not properly authenticated"}),
            None,
            ProviderErrorKind::AuthenticationFailed,
            "The user is not properly authenticated (check the API token",
        ),
        (
            403,
            json!({"message": "Forbidden", "errorName": "PermissionDenied"}),
            None,
            ProviderErrorKind::Forbidden,
            "PermissionDenied: Forbidden (DataRobot listNotebooksSharedRoles, HTTP 403",
        ),
        (
            422,
            json!({"message": {"notebookIds": "too many"}}),
            None,
            ProviderErrorKind::InvalidRequest,
            r#"{"notebookIds":"too many"} (DataRobot listNotebooksSharedRoles, HTTP 422"#,
        ),
        (
            429,
            json!({"message": "Rate limit exceeded"}),
            Some("120"),
            ProviderErrorKind::Throttled,
            "Rate limit exceeded (DataRobot listNotebooksSharedRoles, HTTP 429",
        ),
        (
            503,
            json!({"message": "Maintenance"}),
            Some("90"),
            ProviderErrorKind::Unavailable,
            "Maintenance (DataRobot listNotebooksSharedRoles, HTTP 503",
        ),
    ];
    for (status, body, retry_after, kind, text) in cases {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(GET).path("/api/v2/notebooks/sharedRoles/");
                let then = then
                    .status(status)
                    .header("X-DataRobot-Request-ID", "dr-req-1")
                    .json_body(body);
                if let Some(ra) = retry_after {
                    then.header("retry-after", ra);
                }
            })
            .await;
        let err = client(&server)
            .shared_roles(&["nb1".into()])
            .await
            .unwrap_err();
        assert_eq!(err.kind, kind, "{status}");
        assert_eq!(err.status, Some(status));
        assert!(err.to_string().contains(text), "{status}: {err}");
        assert_eq!(err.request_id.as_deref(), Some("dr-req-1"));
        assert_eq!(
            err.retry_after,
            retry_after.map(|s| Duration::from_secs(s.parse().unwrap()))
        );
        assert!(!err.to_string().contains(TOKEN));
    }
}

#[tokio::test]
async fn short_throttling_is_retried_in_place() {
    let server = MockServer::start_async().await;
    let throttled = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/sharedRoles/");
            then.status(429)
                .header("retry-after", "0")
                .json_body(json!({"message": "slow down"}));
        })
        .await;
    let err = client(&server)
        .shared_roles(&["nb1".into()])
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Throttled);
    assert_eq!(
        throttled.calls_async().await,
        3,
        "repeated twice, then given up"
    );
}

#[tokio::test]
async fn malformed_and_non_json_answers() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/sharedRoles/");
            then.status(200).body(r#"{"data": [{"notebookId": 5}]}"#);
        })
        .await;
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/");
            then.status(502).body("<html>bad gateway</html>");
        })
        .await;
    let c = client(&server);
    let err = c.shared_roles(&["nb1".into()]).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::InvalidResponse);
    assert!(err.message.contains("unexpected shape"), "{err}");
    let err = c.discover(&NotebookQuery::default()).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Unavailable);
    assert_eq!(
        err.to_string(),
        "no error details in the response (DataRobot listNotebooks, HTTP 502)"
    );
}

#[test]
fn a_token_that_cant_be_a_header_is_refused_without_echoing_it() {
    let err = DataRobotClient::new(
        http(),
        EndpointPolicy::default(),
        Url::parse("https://app.datarobot.com/api/v2").unwrap(),
        &SecretString::new("abc\ndef-secret"),
        AuthScheme::Token,
    )
    .err()
    .unwrap();
    assert_eq!(err.kind, ProviderErrorKind::AuthenticationFailed);
    assert!(!err.message.contains("def-secret"));
}
