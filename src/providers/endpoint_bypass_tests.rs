//! Attempts to get around the endpoint policy, table-driven: URL tricks in a configured
//! endpoint (userinfo, IP literals in every notation, IPv6 forms, DNS names that resolve to
//! loopback, case and trailing dots, percent-encoded and international hosts, backslashes,
//! schemes), next-page links to other origins (Fabric `continuationUri`, DataRobot `next`), and
//! redirects. The policy is literal: it looks at the URL as the HTTP client will use it, never
//! at DNS.

use crate::metrics::Metrics;
use crate::providers::datarobot::{AuthScheme, DataRobotClient};
use crate::providers::endpoint::{EndpointPolicy, Service};
use crate::providers::error::ProviderErrorKind;
use crate::providers::fabric::{FabricClient, StaticToken};
use crate::providers::http::{Call, HttpClient, HttpOptions};
use crate::redact::SecretString;
use httpmock::prelude::*;
use std::sync::Arc;
use url::Url;

fn policy(entries: &[&str]) -> EndpointPolicy {
    EndpointPolicy::new(entries.iter().map(|e| e.parse().unwrap()).collect())
}

/// `Ok` means allowed; `Err(x)` means refused with `x` in the message.
type Want = Result<(), &'static str>;
const OK: Want = Ok(());

#[test]
fn configured_endpoints_can_not_bypass_the_policy() {
    use Service::*;
    let nothing: &[&str] = &[];
    let mock: &[&str] = &["127.0.0.1:8080"];
    let named: &[&str] = &["localtest.me", "localhost", "[::1]:9000"];
    let cases: &[(&[&str], Service, &str, Want)] = &[
        // userinfo, in every position
        (
            nothing,
            AzureResourceManager,
            "https://user@management.azure.com",
            Err("credentials"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://user:pw@management.azure.com",
            Err("credentials"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://:pw@management.azure.com",
            Err("credentials"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://management.azure.com@evil.example.com",
            Err("credentials"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://management.azure.com:443@evil.example.com/",
            Err("credentials"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://management.azure.com%40evil.example.com",
            Err("valid absolute URL"),
        ),
        // the URL parser's reading wins: a backslash ends the host of an http(s) URL
        (
            nothing,
            AzureResourceManager,
            "https://evil.example.com\\@management.azure.com",
            Err("not an official"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://management.azure.com\\.evil.example.com",
            OK,
        ),
        // IP literals are never official, in any notation
        (
            nothing,
            AzureResourceManager,
            "https://20.50.2.1",
            Err("not an official"),
        ),
        (
            nothing,
            EntraId,
            "https://[2603:1030::1]",
            Err("not an official"),
        ),
        (nothing, Fabric, "https://127.0.0.1", Err("not an official")),
        (
            nothing,
            Fabric,
            "https://2130706433",
            Err("not an official"),
        ),
        (
            nothing,
            Fabric,
            "https://0x7f.0.0.1",
            Err("not an official"),
        ),
        (
            nothing,
            Fabric,
            "https://0177.0.0.1",
            Err("not an official"),
        ),
        (
            nothing,
            Fabric,
            "https://169.254.169.254/metadata",
            Err("not an official"),
        ),
        (
            nothing,
            Fabric,
            "https://[::ffff:169.254.169.254]",
            Err("not an official"),
        ),
        // ... and an allowed literal matches only the same address and port
        (mock, Fabric, "http://127.0.0.1:8080", OK),
        (mock, Fabric, "http://2130706433:8080", OK), // the same address, written as a number
        (mock, Fabric, "http://0x7f.1:8080", OK),
        (
            mock,
            Fabric,
            "http://127.0.0.2:8080",
            Err("not an official"),
        ),
        (
            mock,
            Fabric,
            "http://127.0.0.1:8081",
            Err("not an official"),
        ),
        (
            mock,
            Fabric,
            "http://[::ffff:127.0.0.1]:8080",
            Err("not an official"),
        ),
        (mock, Fabric, "http://[::1]:8080", Err("not an official")),
        (
            mock,
            Fabric,
            "http://localhost:8080",
            Err("not an official"),
        ),
        // IPv6 forms
        (named, DataRobot, "http://[::1]:9000", OK),
        (named, DataRobot, "http://[0:0:0:0:0:0:0:1]:9000", OK),
        (
            named,
            DataRobot,
            "http://[::1]:9001",
            Err("not an official"),
        ),
        (
            named,
            DataRobot,
            "http://[::ffff:7f00:1]:9000",
            Err("not an official"),
        ),
        // DNS names that resolve to loopback are not loopback: no plain http for them
        (named, DataRobot, "http://localtest.me", Err("loopback")),
        (named, DataRobot, "https://localtest.me", OK),
        (
            &["127.0.0.1.nip.io"],
            DataRobot,
            "http://127.0.0.1.nip.io",
            Err("loopback"),
        ),
        (named, DataRobot, "http://localhost:1234", OK),
        (named, DataRobot, "http://LOCALHOST:1234", OK),
        (named, DataRobot, "http://localhost.:1234", Err("dot")),
        // case, trailing dots, encodings and look-alikes
        (
            nothing,
            AzureResourceManager,
            "HTTPS://MANAGEMENT.AZURE.COM",
            OK,
        ),
        (
            nothing,
            AzureResourceManager,
            "https://management.azure.com.",
            Err("dot"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://management.azure.com..",
            Err("dot"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://management%2Eazure.com",
            OK,
        ), // decodes to the official host
        (
            nothing,
            AzureResourceManager,
            "https://evil.example.com%2Fmanagement.azure.com",
            Err("valid absolute URL"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://management.azure.com%00.evil.example.com",
            Err("valid absolute URL"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://m\u{430}nagement.azure.com",
            Err("not an official"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://management.azure.com.evil.example.com",
            Err("not an official"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://evil-management.azure.com",
            Err("not an official"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://manage\tment.azure.com",
            OK,
        ), // the parser drops tabs
        (
            nothing,
            DataRobot,
            "https://datarobot.com",
            Err("not an official"),
        ),
        (
            nothing,
            DataRobot,
            "https://app.datarobot.com.evil.example.com",
            Err("not an official"),
        ),
        (
            nothing,
            DataRobot,
            "https://app.-x.datarobot.com",
            Err("not an official"),
        ),
        (
            nothing,
            DataRobot,
            "https://app..datarobot.com",
            Err("not an official"),
        ),
        (
            nothing,
            EmrServerlessSpark,
            "https://aliyuncs.com",
            Err("not an official"),
        ),
        (
            nothing,
            EmrServerlessSpark,
            "https://x.aliyuncs.com.evil.example.com",
            Err("not an official"),
        ),
        // schemes and ports
        (
            nothing,
            AzureResourceManager,
            "http://management.azure.com",
            Err("https only"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://management.azure.com:8443",
            Err("port 443"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://management.azure.com:0443",
            OK,
        ),
        (
            nothing,
            AzureResourceManager,
            "https:management.azure.com",
            OK,
        ), // read as https://management.azure.com/
        (
            nothing,
            AzureResourceManager,
            "ws://management.azure.com",
            Err("scheme ws"),
        ),
        (
            nothing,
            AzureResourceManager,
            "file:///etc/passwd",
            Err("scheme file"),
        ),
        (
            nothing,
            AzureResourceManager,
            "data:text/plain,x",
            Err("scheme data"),
        ),
        (
            nothing,
            AzureResourceManager,
            "//management.azure.com",
            Err("valid absolute URL"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https://management.azure.com/#x",
            Err("fragment"),
        ),
        (
            nothing,
            AzureResourceManager,
            "https:///management.azure.com",
            OK,
        ), // extra slashes are dropped
        (mock, Fabric, "https://127.0.0.1:8080", OK),
    ];
    let mut failures = vec![];
    for (allow, service, url, want) in cases {
        let got = policy(allow).check_str(*service, url);
        let ok = match (want, &got) {
            (Ok(()), Ok(_)) => true,
            (Err(why), Err(e)) => e.to_string().contains(why),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{allow:?} {service:?} {url:?}: want {want:?}, got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What an allowed URL is normalised to is what the HTTP client connects to: the checked host
/// is the one used.
#[test]
fn the_checked_url_is_the_url_used() {
    let p = EndpointPolicy::default();
    for (given, host) in [
        ("https://management%2Eazure.com", "management.azure.com"),
        ("HTTPS://MANAGEMENT.AZURE.COM:443/", "management.azure.com"),
        ("https://manage\tment.azure.com", "management.azure.com"),
        (
            "https://management.azure.com\\.evil.example.com",
            "management.azure.com",
        ),
    ] {
        let url = p.check_str(Service::AzureResourceManager, given).unwrap();
        assert_eq!(url.host_str(), Some(host), "{given}");
        assert_eq!(url.port_or_known_default(), Some(443));
        crate::providers::http::install_crypto_provider();
        let request = reqwest::Client::new().get(url.clone()).build().unwrap();
        assert_eq!(request.url(), &url);
    }
}

#[test]
fn next_page_links_stay_on_the_configured_origin() {
    use Service::*;
    let p = policy(&["127.0.0.1:8080", "127.0.0.1:9090", "localhost"]);
    let fabric = "https://api.fabric.microsoft.com";
    let datarobot = "https://app.datarobot.com/api/v2";
    let mock = "http://127.0.0.1:8080/api/v2";
    let cases: &[(Service, &str, &str, Want)] = &[
        (
            Fabric,
            fabric,
            "https://api.fabric.microsoft.com/v1/workspaces?continuationToken=abc",
            OK,
        ),
        (
            Fabric,
            fabric,
            "HTTPS://API.FABRIC.MICROSOFT.COM:443/v1/workspaces?x=1",
            OK,
        ),
        (
            Fabric,
            fabric,
            "https://evil.example.com/v1/workspaces",
            Err("not an official"),
        ),
        (
            Fabric,
            fabric,
            "https://api.fabric.microsoft.com./v1/workspaces",
            Err("dot"),
        ),
        (
            Fabric,
            fabric,
            "https://api.fabric.microsoft.com:8443/v1/workspaces",
            Err("port 443"),
        ),
        (
            Fabric,
            fabric,
            "http://api.fabric.microsoft.com/v1/workspaces",
            Err("https only"),
        ),
        (
            Fabric,
            fabric,
            "https://x@api.fabric.microsoft.com/v1/workspaces",
            Err("credentials"),
        ),
        (
            Fabric,
            fabric,
            "https://api.fabric.microsoft.com@evil.example.com/v1",
            Err("credentials"),
        ),
        (
            Fabric,
            fabric,
            "//evil.example.com/v1/workspaces",
            Err("valid absolute URL"),
        ),
        (
            Fabric,
            fabric,
            "/v1/workspaces?continuationToken=abc",
            Err("valid absolute URL"),
        ),
        (
            Fabric,
            fabric,
            "javascript:alert(1)",
            Err("scheme javascript"),
        ),
        (
            DataRobot,
            datarobot,
            "https://app.datarobot.com/api/v2/notebooks/?offset=100",
            OK,
        ),
        // another official host is still another origin
        (
            DataRobot,
            datarobot,
            "https://app.eu.datarobot.com/api/v2/notebooks/",
            Err("another origin"),
        ),
        (
            DataRobot,
            datarobot,
            "https://datarobot.com/api/v2/notebooks/",
            Err("not an official"),
        ),
        (
            DataRobot,
            mock,
            "http://127.0.0.1:8080/api/v2/notebooks/?offset=100",
            OK,
        ),
        (
            DataRobot,
            mock,
            "http://127.0.0.1:9090/api/v2/notebooks/",
            Err("another origin"),
        ),
        (
            DataRobot,
            mock,
            "http://2130706433:8080/api/v2/notebooks/",
            OK,
        ), // the same address
        (
            DataRobot,
            mock,
            "http://localhost:8080/api/v2/notebooks/",
            Err("another origin"),
        ),
        (
            DataRobot,
            mock,
            "https://127.0.0.1:8080/api/v2/notebooks/",
            Err("another origin"),
        ),
        (
            DataRobot,
            mock,
            "http://[::1]:8080/api/v2/notebooks/",
            Err("not an official"),
        ),
    ];
    let mut failures = vec![];
    for (service, base, link, want) in cases {
        let base = Url::parse(base).unwrap();
        let got = p.check_link(*service, &base, link);
        let ok = match (want, &got) {
            (Ok(()), Ok(_)) => true,
            (Err(why), Err(e)) => e.to_string().contains(why),
            _ => false,
        };
        if !ok {
            failures.push(format!("{service:?} {link:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn http() -> HttpClient {
    HttpClient::new(HttpOptions::default(), Arc::new(Metrics::new())).unwrap()
}

fn allow(servers: &[&MockServer]) -> EndpointPolicy {
    EndpointPolicy::new(
        servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.address().port()).parse().unwrap())
            .collect(),
    )
}

/// A page of a real listing that points to another allowed origin: the clients stop there,
/// and the other server never sees a request (nor the token).
#[tokio::test]
async fn clients_do_not_follow_next_page_links_to_another_origin() {
    let server = MockServer::start_async().await;
    let elsewhere = MockServer::start_async().await;
    let stolen = elsewhere
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).body(r#"{"value": [], "data": []}"#);
        })
        .await;
    let next = elsewhere.url("/v1/workspaces?continuationToken=x");
    server
        .mock_async(|when, then| {
            when.method(GET).path("/v1/workspaces");
            then.status(200).json_body(serde_json::json!({
                "value": [{"id": "w1"}], "continuationUri": next}));
        })
        .await;
    let both = allow(&[&server, &elsewhere]);
    let fabric = FabricClient::new(
        http(),
        both.clone(),
        Url::parse(&server.base_url()).unwrap(),
        Arc::new(StaticToken(SecretString::new("fabric-token"))),
    );
    let err = fabric.list_workspaces(&[]).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::InvalidResponse);
    assert!(err.message.contains("another origin"), "{}", err.message);

    let next = elsewhere.url("/api/v2/notebooks/?offset=100");
    server
        .mock_async(|when, then| {
            when.method(GET).path("/api/v2/notebooks/");
            then.status(200)
                .json_body(serde_json::json!({"data": [{"id": "nb1"}], "next": next}));
        })
        .await;
    let dr = DataRobotClient::new(
        http(),
        both,
        Url::parse(&server.url("/api/v2")).unwrap(),
        &SecretString::new("dr-token"),
        AuthScheme::Token,
    )
    .unwrap();
    let err = dr.discover(&Default::default()).await.unwrap_err();
    assert!(err.message.contains("another origin"), "{}", err.message);
    assert_eq!(stolen.calls_async().await, 0);
}

const CALL: Call = Call {
    provider: "test",
    operation: "redirect",
};

/// Redirects are followed only to the same scheme, host and port, at most three times; the
/// Authorization header goes nowhere else.
#[tokio::test]
async fn redirects_can_not_leave_the_origin() {
    let server = MockServer::start_async().await;
    let elsewhere = MockServer::start_async().await;
    let stolen = elsewhere
        .mock_async(|when, then| {
            when.any_request();
            then.status(200).body("{}");
        })
        .await;
    let port = server.address().port();
    let other_port = elsewhere.address().port();
    let target = server
        .mock_async(|when, then| {
            when.method(GET)
                .path("/target")
                .header("authorization", "Bearer tok");
            then.status(200).body("{}");
        })
        .await;
    let redirects = [
        ("/same", "/target".to_string(), 200),
        (
            "/other-port",
            format!("http://127.0.0.1:{other_port}/x"),
            302,
        ),
        (
            "/other-name",
            format!("http://localhost:{port}/target"),
            302,
        ),
        (
            "/scheme-relative",
            format!("//localhost:{other_port}/x"),
            302,
        ),
        ("/https", format!("https://127.0.0.1:{port}/target"), 302),
        ("/loop1", "/loop2".to_string(), 302),
        ("/loop2", "/loop3".to_string(), 302),
        ("/loop3", "/loop4".to_string(), 302),
        ("/loop4", "/target".to_string(), 302),
    ];
    for (path, location, _) in &redirects {
        server
            .mock_async(|when, then| {
                when.path(*path);
                then.status(302).header("location", location);
            })
            .await;
    }
    let c = http();
    for (path, _, want) in &redirects {
        if path.starts_with("/loop") && *path != "/loop1" {
            continue;
        }
        let req = c
            .reqwest()
            .get(server.url(*path))
            .bearer_auth("tok")
            .build()
            .unwrap();
        let resp = c.execute(CALL, req).await.unwrap();
        assert_eq!(resp.status, *want, "{path}");
    }
    // A 307 keeps the method and body: an Entra token request redirected elsewhere would carry
    // the client secret. Not followed either.
    server
        .mock_async(|when, then| {
            when.method(POST).path("/token");
            then.status(307)
                .header("location", format!("http://127.0.0.1:{other_port}/token"));
        })
        .await;
    let req = c
        .reqwest()
        .post(server.url("/token"))
        .form(&[("client_secret", "s3cret")])
        .build()
        .unwrap();
    assert_eq!(c.execute(CALL, req).await.unwrap().status, 307);
    assert_eq!(
        target.calls_async().await,
        1,
        "only the same-origin redirect"
    );
    assert_eq!(
        stolen.calls_async().await,
        0,
        "nothing reached another origin"
    );
}
