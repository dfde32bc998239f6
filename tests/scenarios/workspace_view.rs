//! WorkspaceView: inventories from mock Fabric (with a mock Entra ID) and DataRobot servers,
//! written to the status by the driver against the fake API server.

use crate::support::fake_api::FakeApiServer;
use crate::support::*;
use httpmock::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use workspace_access_operator::api::WorkspaceView;
use workspace_access_operator::controller::Settings;
use workspace_access_operator::controller::driver::reconcile;
use workspace_access_operator::providers::azure_cloud::FABRIC_SCOPE;
use workspace_access_operator::providers::endpoint::EndpointPolicy;

const NS: &str = "platform";
const TENANT: &str = "contoso.onmicrosoft.com";
const DR_TOKEN: &str = "dr-api-key";
const ENTRA_TOKEN: &str = "eyJ-fabric-access-token";

fn settings(mocks: &[&MockServer]) -> Settings {
    Settings {
        endpoint_policy: EndpointPolicy::new(
            mocks
                .iter()
                .map(|m| format!("127.0.0.1:{}", m.address().port()).parse().unwrap())
                .collect(),
        ),
        ..Settings::default()
    }
}

fn datarobot_view(mock: &MockServer, selection: Value, max_items: Option<i64>) -> WorkspaceView {
    let mut source = json!({"endpoint": mock.url("/api/v2"),
                            "apiTokenRef": {"name": "dr", "key": "apiToken"}});
    for (k, v) in selection.as_object().unwrap() {
        source[k] = v.clone();
    }
    let mut spec = json!({"dataRobot": source});
    if let Some(m) = max_items {
        spec["maxItems"] = json!(m);
    }
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
        "metadata": {"name": "dr", "namespace": NS}, "spec": spec
    }))
    .unwrap()
}

fn fabric_view(
    entra: &MockServer,
    fabric: &MockServer,
    extra: Value,
    max_items: i64,
) -> WorkspaceView {
    let mut source = json!({
        "endpoint": fabric.base_url(),
        "azure": {"tenantId": TENANT, "clientId": "11111111-1111-1111-1111-111111111111",
                  "clientSecretRef": {"name": "fabric-sp", "key": "clientSecret"},
                  "authorityHost": entra.base_url()}
    });
    for (k, v) in extra.as_object().unwrap() {
        source[k] = v.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
        "metadata": {"name": "fabric", "namespace": NS},
        "spec": {"maxItems": max_items, "refreshInterval": "10m", "fabric": source}
    }))
    .unwrap()
}

fn role(id: &str, role: &str) -> Value {
    json!({"id": id, "name": format!("{id}@example.com"), "role": role, "shareRecipientType": "user"})
}

fn status_json(s: &FakeApiServer, name: &str) -> Value {
    let obj: WorkspaceView = s.get(NS, name).unwrap();
    serde_json::to_value(obj.status.unwrap()).unwrap()
}

fn status_writes(s: &FakeApiServer) -> usize {
    s.writes()
        .iter()
        .filter(|r| r.path.ends_with("/status"))
        .count()
}

async fn entra_mock(entra: &MockServer) -> httpmock::Mock<'_> {
    entra
        .mock_async(|when, then| {
            when.method(POST)
                .path(format!("/{TENANT}/oauth2/v2.0/token"))
                .form_urlencoded_tuple("scope", FABRIC_SCOPE)
                .form_urlencoded_tuple("client_secret", "sp-secret")
                .form_urlencoded_tuple("grant_type", "client_credentials");
            then.status(200).json_body(
                json!({"token_type": "Bearer", "expires_in": 3599, "access_token": ENTRA_TOKEN}),
            );
        })
        .await
}

#[tokio::test]
async fn a_datarobot_inventory_is_written_sorted_and_not_rewritten_while_unchanged() {
    let mock = MockServer::start_async().await;
    let mut bulk = mock
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/sharedRoles/")
                .query_param("notebookIds", "nb1,nb2")
                .header("authorization", format!("Token {DR_TOKEN}"));
            then.status(200).json_body(json!({"data": [
                {"notebookId": "nb2", "roles": [role("u9", "OWNER"), role("u1", "CONSUMER")]},
                {"notebookId": "nb1", "roles": [role("u5", "EDITOR")]}
            ]}));
        })
        .await;
    let s = server();
    s.insert(&secret(NS, "dr", &[("apiToken", DR_TOKEN)]));
    let obj = s.insert(&datarobot_view(
        &mock,
        json!({"notebookIds": ["nb2", "nb1"]}),
        None,
    ));
    let (ctx, clock) = context(&s, settings(&[&mock]));
    s.clear_requests();

    let action = reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
    assert_eq!(status_writes(&s), 1);
    assert_eq!(
        action_delay(&action),
        Duration::from_secs(15 * 60),
        "refreshInterval default"
    );
    let st = status_json(&s, "dr");
    assert_eq!(st["provider"], "DataRobot");
    assert_eq!(
        (st["count"].clone(), st["truncated"].clone()),
        (json!(2), json!(false))
    );
    assert_eq!(st["notebooks"][0]["notebookId"], "nb1");
    assert_eq!(st["notebooks"][1]["notebookId"], "nb2");
    assert_eq!(
        st["notebooks"][1]["roles"][0],
        role("u1", "CONSUMER"),
        "roles sorted by id"
    );
    assert_eq!(
        ready_of(&st).unwrap(),
        ("True".into(), "Synced".into(), "2 notebooks".into())
    );
    assert_eq!(st["lastSyncTime"], t0().to_string());
    assert!(!st.to_string().contains(DR_TOKEN));

    // A refresh finding the same inventory, even in another order, writes nothing: no write,
    // no watch event.
    bulk.delete_async().await;
    bulk = mock
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/sharedRoles/");
            then.status(200).json_body(json!({"data": [
                {"notebookId": "nb1", "roles": [role("u5", "EDITOR")]},
                {"notebookId": "nb2", "roles": [role("u1", "CONSUMER"), role("u9", "OWNER")]}
            ]}));
        })
        .await;
    clock.advance(Duration::from_secs(15 * 60));
    let obj: WorkspaceView = s.get(NS, "dr").unwrap();
    let rv = s.resource_version();
    s.clear_requests();
    let action = reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
    assert_eq!(bulk.calls_async().await, 1, "the provider was asked again");
    assert!(s.writes().is_empty(), "{:?}", s.writes());
    assert_eq!(s.resource_version(), rv);
    assert_eq!(action_delay(&action), Duration::from_secs(15 * 60));

    // A changed inventory is written, with a new lastSyncTime.
    bulk.delete_async().await;
    bulk = mock
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/sharedRoles/");
            then.status(200).json_body(json!({"data": [
                {"notebookId": "nb2", "roles": [role("u9", "OWNER")]},
                {"notebookId": "nb1", "roles": [role("u5", "EDITOR")]}
            ]}));
        })
        .await;
    clock.advance(Duration::from_secs(15 * 60));
    let obj: WorkspaceView = s.get(NS, "dr").unwrap();
    s.clear_requests();
    reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
    assert_eq!(bulk.calls_async().await, 1);
    assert_eq!(status_writes(&s), 1);
    let st = status_json(&s, "dr");
    assert_eq!(st["notebooks"][1]["roles"].as_array().unwrap().len(), 1);
    assert_eq!(st["lastSyncTime"], "2026-11-23T10:30:00Z");
    assert_eq!(
        st["conditions"][0]["lastTransitionTime"],
        t0().to_string(),
        "still Ready since t0"
    );
}

#[tokio::test]
async fn a_failed_sync_keeps_the_last_inventory() {
    let mock = MockServer::start_async().await;
    let p2 = mock.url("/api/v2/notebooks/?offset=100&limit=100");
    let mut pages = vec![
        mock.mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/")
                .query_param("offset", "0");
            then.status(200)
                .json_body(json!({"data": [{"id": "nb1"}], "next": p2}));
        })
        .await,
    ];
    pages.push(
        mock.mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/")
                .query_param("offset", "100");
            then.status(200)
                .json_body(json!({"data": [{"id": "nb2"}], "next": null}));
        })
        .await,
    );
    mock.mock_async(|when, then| {
        when.method(GET).path("/api/v2/notebooks/sharedRoles/");
        then.status(200).json_body(json!({"data": [
            {"notebookId": "nb1", "roles": [role("u1", "OWNER")]},
            {"notebookId": "nb2", "roles": [role("u2", "OWNER")]}
        ]}));
    })
    .await;
    let s = server();
    s.insert(&secret(NS, "dr", &[("apiToken", DR_TOKEN)]));
    let obj = s.insert(&datarobot_view(
        &mock,
        json!({"selector": {"useCaseId": "uc1"}}),
        None,
    ));
    let (ctx, clock) = context(&s, settings(&[&mock]));
    reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
    let good = status_json(&s, "dr");
    assert_eq!(good["count"], 2);

    // The second page now fails midway through discovery: nothing partial is published.
    pages.pop().unwrap().delete_async().await;
    mock.mock_async(|when, then| {
        when.method(GET)
            .path("/api/v2/notebooks/")
            .query_param("offset", "100");
        then.status(503)
            .header("Retry-After", "120")
            .header("x-request-id", "rq-9")
            .json_body(json!({"message": "Service temporarily unavailable"}));
    })
    .await;
    clock.advance(Duration::from_secs(15 * 60));
    let obj: WorkspaceView = s.get(NS, "dr").unwrap();
    s.clear_requests();
    let action = reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
    assert!(
        action_delay(&action) >= Duration::from_secs(120),
        "Retry-After honoured"
    );
    let st = status_json(&s, "dr");
    let (ready, reason, message) = ready_of(&st).unwrap();
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "ProviderError")
    );
    assert!(
        message.contains(
            "Service temporarily unavailable (DataRobot listNotebooks, HTTP 503; request id rq-9)"
        ),
        "{message}"
    );
    for field in [
        "provider",
        "count",
        "truncated",
        "notebooks",
        "lastSyncTime",
    ] {
        assert_eq!(st[field], good[field], "{field} kept");
    }
}

#[tokio::test]
async fn explicit_notebook_ids_datarobot_does_not_know_are_not_found() {
    let mock = MockServer::start_async().await;
    mock.mock_async(|when, then| {
        when.method(GET).path("/api/v2/notebooks/sharedRoles/");
        then.status(200)
            .json_body(json!({"data": [{"notebookId": "nb1", "roles": []}]}));
    })
    .await;
    mock.mock_async(|when, then| {
        when.method(GET).path("/api/v2/notebooks/gone/sharedRoles/");
        then.status(404).json_body(json!({"message": "Not found"}));
    })
    .await;
    let s = server();
    s.insert(&secret(NS, "dr", &[("apiToken", DR_TOKEN)]));
    let obj = s.insert(&datarobot_view(
        &mock,
        json!({"notebookIds": ["nb1", "gone"]}),
        None,
    ));
    let (ctx, _) = context(&s, settings(&[&mock]));
    reconcile(Arc::new(obj), ctx).await.unwrap();
    let st = status_json(&s, "dr");
    let (_, reason, message) = ready_of(&st).unwrap();
    assert_eq!(reason, "NotFound");
    assert!(message.ends_with("notebookIds: gone"), "{message}");
    assert!(st.get("notebooks").is_none(), "nothing partial");
}

/// The "done when" for DataRobot: 300 notebooks found through the selector over
/// several pages, complete and sorted.
#[tokio::test]
async fn three_hundred_notebooks_from_a_selector() {
    let mock = MockServer::start_async().await;
    let ids: Vec<String> = (0..300).rev().map(|i| format!("65f0{i:020x}")).collect();
    for (p, chunk) in ids.chunks(100).enumerate() {
        let next = (p < 2).then(|| {
            mock.url(format!(
                "/api/v2/notebooks/?offset={}&limit=100",
                (p + 1) * 100
            ))
        });
        let data: Vec<Value> = chunk.iter().map(|id| json!({"id": id})).collect();
        mock.mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/")
                .query_param("offset", (p * 100).to_string());
            then.status(200)
                .json_body(json!({"data": data, "next": next}));
        })
        .await;
    }
    let mut sorted = ids.clone();
    sorted.sort();
    let mut bulk = Vec::new();
    for chunk in sorted.chunks(100) {
        let data: Vec<Value> = chunk
            .iter()
            .map(|id| json!({"notebookId": id, "roles": [role("owner", "OWNER")]}))
            .collect();
        bulk.push(
            mock.mock_async(|when, then| {
                when.method(GET)
                    .path("/api/v2/notebooks/sharedRoles/")
                    .query_param("notebookIds", chunk.join(","));
                then.status(200).json_body(json!({ "data": data }));
            })
            .await,
        );
    }
    let s = server();
    s.insert(&secret(NS, "dr", &[("apiToken", DR_TOKEN)]));
    let obj = s.insert(&datarobot_view(
        &mock,
        json!({"selector": {"owners": ["u1"]}, "authScheme": "Bearer"}),
        None,
    ));
    let (ctx, _) = context(&s, settings(&[&mock]));
    reconcile(Arc::new(obj), ctx).await.unwrap();
    for b in &bulk {
        assert_eq!(b.calls_async().await, 1);
    }
    let st = status_json(&s, "dr");
    assert_eq!(
        (st["count"].clone(), st["truncated"].clone()),
        (json!(300), json!(false))
    );
    let listed: Vec<&str> = st["notebooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["notebookId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, sorted);
}

/// The "done when" for Fabric: 2,500 workspaces over 25 pages, truncated at maxItems
/// with the true count; the Entra token is fetched once, with the Fabric scope.
#[tokio::test]
async fn a_fabric_inventory_over_25_pages_is_truncated_at_max_items() {
    let entra = MockServer::start_async().await;
    let fabric = MockServer::start_async().await;
    let token = entra_mock(&entra).await;
    let mut pages = Vec::new();
    for p in 0..25usize {
        // Workspace ids descend across pages, so the listed ones come from the last pages.
        let value: Vec<Value> = (0..100)
            .map(|i| {
                let n = 2499 - (p * 100 + i);
                json!({"id": format!("{n:08x}-0000-4000-8000-000000000000"),
                       "displayName": format!("Workspace {n}"), "description": "", "type": "Workspace"})
            })
            .collect();
        let mut body = json!({ "value": value });
        if p < 24 {
            let t = format!("LD{}%3D", p + 1);
            body["continuationToken"] = json!(t);
            body["continuationUri"] =
                json!(fabric.url(format!("/v1/workspaces?roles=Admin&continuationToken={t}")));
        }
        let expected = if p == 0 {
            "roles=Admin".to_owned()
        } else {
            format!("roles=Admin&continuationToken=LD{p}%3D")
        };
        pages.push(
            fabric
                .mock_async(|when, then| {
                    when.method(GET)
                        .path("/v1/workspaces")
                        .header("authorization", format!("Bearer {ENTRA_TOKEN}"))
                        .is_true(move |req| req.uri().query() == Some(expected.as_str()));
                    then.status(200).json_body(body);
                })
                .await,
        );
    }
    let s = server();
    s.insert(&secret(NS, "fabric-sp", &[("clientSecret", "sp-secret")]));
    let obj = s.insert(&fabric_view(
        &entra,
        &fabric,
        json!({"roles": ["Admin"]}),
        2000,
    ));
    let (ctx, _) = context(&s, settings(&[&entra, &fabric]));
    s.clear_requests();
    let action = reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
    assert_eq!(action_delay(&action), Duration::from_secs(600));
    for p in &pages {
        assert_eq!(p.calls_async().await, 1);
    }
    assert_eq!(token.calls_async().await, 1, "one Entra call for 25 pages");
    let st = status_json(&s, "fabric");
    assert_eq!(st["provider"], "Fabric");
    assert_eq!(
        (st["count"].clone(), st["truncated"].clone()),
        (json!(2500), json!(true))
    );
    let listed = st["workspaces"].as_array().unwrap();
    assert_eq!(listed.len(), 2000);
    assert_eq!(listed[0]["id"], "00000000-0000-4000-8000-000000000000");
    assert_eq!(
        listed[1999]["id"],
        format!("{:08x}-0000-4000-8000-000000000000", 1999)
    );
    assert!(
        listed
            .windows(2)
            .all(|w| w[0]["id"].as_str() < w[1]["id"].as_str())
    );
    assert_eq!(
        ready_of(&st).unwrap().2,
        "2500 workspaces, the first 2000 by id listed (maxItems 2000)"
    );
    assert!(!st.to_string().contains(ENTRA_TOKEN));
    assert_eq!(status_writes(&s), 1);
    let bytes = serde_json::to_vec(&st).unwrap().len();
    eprintln!("status of 2000 listed Fabric workspaces: {bytes} bytes");
}

#[tokio::test]
async fn fabric_role_assignments_are_listed_per_workspace() {
    let entra = MockServer::start_async().await;
    let fabric = MockServer::start_async().await;
    entra_mock(&entra).await;
    fabric
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces");
            then.status(200).json_body(json!({"value": [
                {"id": "w2", "displayName": "Marketing", "description": "", "type": "Workspace"},
                {"id": "w1", "displayName": "Finance", "description": "", "type": "Workspace"},
                {"id": "w3", "displayName": "Viewers only", "description": "", "type": "Workspace"}
            ]}));
        })
        .await;
    for (ws, principal) in [("w1", "p1"), ("w2", "p2")] {
        fabric
            .mock_async(|when, then| {
                when.method(GET).path(format!("/v1/workspaces/{ws}/roleAssignments"));
                then.status(200).json_body(json!({"value": [
                    {"id": principal, "principal": {"id": principal, "displayName": "Eric Solomon", "type": "User",
                                                    "userDetails": {"userPrincipalName": "eric@microsoft.com"}},
                     "role": "Admin"}
                ]}));
            })
            .await;
    }
    fabric
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces/w3/roleAssignments");
            then.status(403)
                .json_body(json!({"errorCode": "InsufficientPrivileges", "message": "no"}));
        })
        .await;
    let s = server();
    s.insert(&secret(NS, "fabric-sp", &[("clientSecret", "sp-secret")]));
    let obj = s.insert(&fabric_view(
        &entra,
        &fabric,
        json!({"includeRoleAssignments": true}),
        500,
    ));
    let (ctx, _) = context(&s, settings(&[&entra, &fabric]));
    reconcile(Arc::new(obj), ctx).await.unwrap();
    let st = status_json(&s, "fabric");
    assert_eq!(
        st["workspaces"][0],
        json!({"id": "w1", "displayName": "Finance", "description": "", "type": "Workspace",
               "roleAssignments": [{"principalId": "p1", "principalType": "User",
                                    "displayName": "Eric Solomon", "role": "Admin"}]})
    );
    assert!(st["workspaces"][2].get("roleAssignments").is_none());
    assert_eq!(
        ready_of(&st).unwrap(),
        (
            "True".into(),
            "Synced".into(),
            "3 workspaces; role assignments not readable in 1 (the caller needs Member or higher there)".into()
        )
    );
}

#[tokio::test]
async fn fabric_throttling_is_reported_and_honoured() {
    let entra = MockServer::start_async().await;
    let fabric = MockServer::start_async().await;
    entra_mock(&entra).await;
    fabric
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces");
            then.status(429).header("Retry-After", "300").json_body(json!({
                "errorCode": "RequestBlocked", "message": "Request is blocked by the upstream service"
            }));
        })
        .await;
    let s = server();
    s.insert(&secret(NS, "fabric-sp", &[("clientSecret", "sp-secret")]));
    let obj = s.insert(&fabric_view(&entra, &fabric, json!({}), 500));
    let (ctx, _) = context(&s, settings(&[&entra, &fabric]));
    let action = reconcile(Arc::new(obj), ctx).await.unwrap();
    assert!(action_delay(&action) >= Duration::from_secs(300));
    let st = status_json(&s, "fabric");
    let (ready, reason, message) = ready_of(&st).unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "Throttled"));
    assert!(message.contains("RequestBlocked"), "{message}");
    assert!(st.get("workspaces").is_none());
}

#[tokio::test]
async fn a_restart_does_not_re_read_views_that_are_not_due() {
    let mock = MockServer::start_async().await;
    let bulk = mock
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/sharedRoles/");
            then.status(200).json_body(
                json!({"data": [{"notebookId": "nb1", "roles": [role("u5", "EDITOR")]}]}),
            );
        })
        .await;
    let s = server();
    s.insert(&secret(NS, "dr", &[("apiToken", DR_TOKEN)]));
    let obj = s.insert(&datarobot_view(
        &mock,
        json!({"notebookIds": ["nb1"]}),
        None,
    ));
    let (ctx, _) = context(&s, settings(&[&mock]));
    reconcile(Arc::new(obj), ctx).await.unwrap();
    assert_eq!(bulk.calls_async().await, 1);

    // A new operator process (fresh context, same cluster) five minutes later: not due yet.
    let (ctx, clock) = context(&s, settings(&[&mock]));
    clock.advance(Duration::from_secs(5 * 60));
    let obj: WorkspaceView = s.get(NS, "dr").unwrap();
    s.clear_requests();
    let action = reconcile(Arc::new(obj.clone()), ctx.clone()).await.unwrap();
    assert_eq!(
        bulk.calls_async().await,
        1,
        "no provider call before nextSyncTime"
    );
    assert!(s.writes().is_empty());
    assert_eq!(
        action_delay(&action),
        Duration::from_secs(10 * 60),
        "requeued for nextSyncTime"
    );

    // Due: read again.
    clock.advance(Duration::from_secs(10 * 60));
    reconcile(Arc::new(obj.clone()), ctx.clone()).await.unwrap();
    assert_eq!(bulk.calls_async().await, 2);

    // A spec change is read at once, whatever nextSyncTime says.
    let changed = s.modify::<WorkspaceView>(NS, "dr", |v| v["spec"]["maxItems"] = json!(10));
    reconcile(Arc::new(changed), ctx).await.unwrap();
    assert_eq!(bulk.calls_async().await, 3);
}
