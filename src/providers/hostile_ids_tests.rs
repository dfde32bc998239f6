//! Hostile path parameters against every provider's URL builder and client: a value either
//! stays exactly one path segment (host, port, query and the other segments unchanged, and the
//! segment decodes back to the value), or the request is refused before anything is sent.

use crate::metrics::Metrics;
use crate::providers::auth::acs3::AcsCredentials;
use crate::providers::auth::entra::token_url;
use crate::providers::azure_ml::{Workspace, list_notebook_access_token_url};
use crate::providers::datarobot::{self, AuthScheme, DataRobotClient};
use crate::providers::emr_spark::{EmrSparkClient, LivyCompute, operation_url};
use crate::providers::endpoint::EndpointPolicy;
use crate::providers::error::{ProviderError, ProviderErrorKind};
use crate::providers::fabric::{self, FabricClient, RoleAssignments, StaticToken};
use crate::providers::http::{HttpClient, HttpOptions};
use crate::redact::SecretString;
use httpmock::prelude::*;
use percent_encoding::percent_decode_str;
use std::sync::Arc;
use url::Url;

/// Values that can't be one segment: the builders refuse them.
const REFUSED: &[&str] = &["", ".", "..", ".\t.", "a\nb", "\r", "x\u{0}"];

/// Values that must arrive as one segment, exactly.
const KEPT: &[&str] = &[
    "a/b",
    "../../x",
    "../",
    "a?b=c",
    "a#b",
    "%2e%2e",
    "%2F",
    "a b",
    "ü",
    "a;b",
    "a\\b",
    "//evil.example.com",
    "@evil.example.com",
    ":80",
    "a&b=c",
    "...",
    "./x",
];

type Build = Box<dyn Fn(&str) -> Result<Url, ProviderError>>;

/// A builder under test: makes the URL with `value` in one parameter; the index of that
/// parameter among the path segments; the query the URL must have.
struct Builder {
    name: &'static str,
    build: Build,
    index: usize,
    segments: usize,
    query: Option<&'static str>,
}

fn builders() -> Vec<Builder> {
    let arm = Url::parse("https://management.azure.com").unwrap();
    let ws = move |s: &str, rg: &str, w: &str| Workspace {
        endpoint: arm.clone(),
        subscription_id: s.into(),
        resource_group: rg.into(),
        workspace_name: w.into(),
        api_version: "2024-04-01".into(),
    };
    let (w1, w2, w3) = (ws.clone(), ws.clone(), ws);
    let emr = Url::parse("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com").unwrap();
    let lc = |w: &str, l: &str| LivyCompute {
        region_id: "cn-hangzhou".into(),
        workspace_id: w.into(),
        livy_compute_id: l.into(),
    };
    let (e1, e2, e3) = (emr.clone(), emr.clone(), emr);
    let login = Url::parse("https://login.microsoftonline.com").unwrap();
    let fab = Url::parse("https://api.fabric.microsoft.com").unwrap();
    let dr = Url::parse("https://app.datarobot.com/api/v2").unwrap();
    let arm_query = Some("api-version=2024-04-01");
    let emr_query = Some("regionId=cn-hangzhou");
    vec![
        Builder {
            name: "ARM subscription",
            build: Box::new(move |v| list_notebook_access_token_url(&w1(v, "rg", "ws"))),
            index: 1,
            segments: 9,
            query: arm_query,
        },
        Builder {
            name: "ARM resource group",
            build: Box::new(move |v| list_notebook_access_token_url(&w2("s", v, "ws"))),
            index: 3,
            segments: 9,
            query: arm_query,
        },
        Builder {
            name: "ARM workspace",
            build: Box::new(move |v| list_notebook_access_token_url(&w3("s", "rg", v))),
            index: 7,
            segments: 9,
            query: arm_query,
        },
        Builder {
            name: "Entra tenant",
            build: Box::new(move |v| token_url(&login, v)),
            index: 0,
            segments: 4,
            query: None,
        },
        Builder {
            name: "EMR workspace",
            build: Box::new(move |v| operation_url(&e1, &lc(v, "lc-1"), Some("t-1"))),
            index: 4,
            segments: 9,
            query: emr_query,
        },
        Builder {
            name: "EMR Livy compute",
            build: Box::new(move |v| operation_url(&e2, &lc("w-1", v), None)),
            index: 6,
            segments: 8,
            query: emr_query,
        },
        Builder {
            name: "EMR token",
            build: Box::new(move |v| operation_url(&e3, &lc("w-1", "lc-1"), Some(v))),
            index: 8,
            segments: 9,
            query: emr_query,
        },
        Builder {
            name: "Fabric workspace",
            build: Box::new(move |v| fabric::api_url(&fab, &["workspaces", v, "roleAssignments"])),
            index: 2,
            segments: 4,
            query: None,
        },
        Builder {
            name: "DataRobot notebook",
            build: Box::new(move |v| datarobot::api_url(&dr, &["notebooks", v, "sharedRoles"])),
            index: 3,
            segments: 6,
            query: None,
        },
    ]
}

#[test]
fn every_path_parameter_is_one_segment_or_refused() {
    let mut failures = vec![];
    for b in builders() {
        let host = (b.build)("x").unwrap();
        for v in REFUSED {
            match (b.build)(v) {
                Err(e) if e.kind == ProviderErrorKind::InvalidRequest => {}
                other => failures.push(format!("{}: {v:?} gave {other:?}", b.name)),
            }
        }
        for v in KEPT {
            let url = match (b.build)(v) {
                Ok(u) => u,
                Err(e) => {
                    failures.push(format!("{}: {v:?} refused: {e}", b.name));
                    continue;
                }
            };
            let segments: Vec<&str> = url.path_segments().unwrap().collect();
            let decoded = segments
                .get(b.index)
                .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned());
            let same_elsewhere = segments
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != b.index)
                .map(|(_, s)| *s)
                .eq(host
                    .path_segments()
                    .unwrap()
                    .enumerate()
                    .filter(|(i, _)| *i != b.index)
                    .map(|(_, s)| s));
            // Parsing the URL again (as the HTTP stack does) changes nothing.
            let reparsed = Url::parse(url.as_str()).unwrap();
            if segments.len() != b.segments
                || decoded.as_deref() != Some(*v)
                || !same_elsewhere
                || url.host_str() != host.host_str()
                || url.port() != host.port()
                || url.query() != b.query
                || url.fragment().is_some()
                || reparsed != url
            {
                failures.push(format!("{}: {v:?} built {url}", b.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn http() -> HttpClient {
    HttpClient::new(HttpOptions::default(), Arc::new(Metrics::new())).unwrap()
}

fn loopback_policy(server: &MockServer) -> EndpointPolicy {
    EndpointPolicy::new(vec![
        format!("127.0.0.1:{}", server.address().port())
            .parse()
            .unwrap(),
    ])
}

#[tokio::test]
async fn clients_send_nothing_for_a_refused_id() {
    let server = MockServer::start_async().await;
    let any = server
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).body(r#"{"data": [], "value": []}"#);
        })
        .await;
    let base = Url::parse(&server.url("/api/v2")).unwrap();
    let dr = DataRobotClient::new(
        http(),
        loopback_policy(&server),
        base,
        &SecretString::new("tok"),
        AuthScheme::Token,
    )
    .unwrap();
    for id in REFUSED {
        let err = dr.notebook_roles(id).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::InvalidRequest, "{id:?}");
    }
    let fabric = FabricClient::new(
        http(),
        loopback_policy(&server),
        Url::parse(&server.base_url()).unwrap(),
        Arc::new(StaticToken(SecretString::new("tok"))),
    );
    let ids: Vec<String> = REFUSED.iter().map(|s| s.to_string()).collect();
    let got = fabric.role_assignments_of(&ids).await.unwrap();
    assert!(
        got.iter()
            .all(|r| matches!(r, RoleAssignments::NotReadable(e) if e.kind == ProviderErrorKind::InvalidRequest)),
        "{got:?}"
    );
    let emr = EmrSparkClient::new(
        http(),
        Url::parse(&server.base_url()).unwrap(),
        AcsCredentials {
            access_key_id: "id".into(),
            access_key_secret: SecretString::new("secret"),
            security_token: None,
        },
    );
    for id in REFUSED {
        let compute = LivyCompute {
            region_id: "cn-hangzhou".into(),
            workspace_id: (*id).into(),
            livy_compute_id: "lc-1".into(),
        };
        let err = emr.list_tokens(&compute).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::InvalidRequest, "{id:?}");
        let ok = LivyCompute {
            workspace_id: "w-1".into(),
            ..compute
        };
        let err = emr.delete_token(&ok, id).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::InvalidRequest, "{id:?}");
    }
    assert_eq!(any.calls_async().await, 0, "nothing was sent");
}

/// The bulk call lists IDs separated by commas: an ID with a comma would read as two. It is
/// asked for on its own instead, as one path segment.
#[tokio::test]
async fn a_notebook_id_with_a_comma_is_not_split_in_the_bulk_call() {
    let server = MockServer::start_async().await;
    let bulk = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/sharedRoles/")
                .query_param("notebookIds", "nb1");
            then.status(200)
                .body(r#"{"data": [{"notebookId": "nb1", "roles": []}]}"#);
        })
        .await;
    let single = server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/a,b/sharedRoles/");
            then.status(200)
                .body(r#"{"data": [{"id": "u1", "role": "OWNER"}], "next": null}"#);
        })
        .await;
    let dr = DataRobotClient::new(
        http(),
        loopback_policy(&server),
        Url::parse(&server.url("/api/v2")).unwrap(),
        &SecretString::new("tok"),
        AuthScheme::Token,
    )
    .unwrap();
    let got = dr
        .shared_roles(&["nb1".to_string(), "a,b".to_string()])
        .await
        .unwrap();
    assert_eq!(bulk.calls_async().await, 1);
    assert_eq!(single.calls_async().await, 1);
    let ids: Vec<&str> = got
        .notebooks
        .iter()
        .map(|n| n.notebook_id.as_str())
        .collect();
    assert_eq!(ids, ["a,b", "nb1"]);
    assert!(got.missing.is_empty());
}
