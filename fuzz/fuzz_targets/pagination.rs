//! Fabric and DataRobot pages of any shape, and the decision that follows each: which URL is
//! requested next (with the token), or that the listing is complete.
//!
//! Invariants:
//! - a next-page link (Fabric `continuationUri`, DataRobot `next`) is followed only if it passes
//!   the endpoint policy and has the configured endpoint's scheme, host and port, and carries
//!   no credentials or fragment;
//! - a Fabric `continuationToken` changes nothing but the query of the first request, to which
//!   it adds exactly one `continuationToken` parameter; the URL reads back unchanged;
//! - no next URL when the page has no link (or an empty one).

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use url::Url;
use workspace_access_operator::fuzzing;
use workspace_access_operator::providers::endpoint::Service;

#[derive(Arbitrary, Debug)]
struct Input {
    datarobot: bool,
    /// Which configured endpoint.
    endpoint: u8,
    /// Extra --allow-endpoint entries.
    allow: Vec<String>,
    /// Fabric roles filter of the first request.
    roles: Vec<u8>,
    /// The page's JSON, or (if it doesn't parse) the link fields directly.
    page: String,
    uri: Option<String>,
    token: Option<String>,
}

const FABRIC: &[&str] = &[
    "https://api.fabric.microsoft.com",
    "http://127.0.0.1:8080",
    "https://fabric.contoso.internal:9443/prefix/",
];
const DATAROBOT: &[&str] = &[
    "https://app.datarobot.com/api/v2",
    "http://127.0.0.1:8080/api/v2",
    "https://datarobot.contoso.internal/api/v2/",
];
const ROLES: &[&str] = &["Admin", "Member", "Contributor", "Viewer"];

fn origin(u: &Url) -> (String, Option<String>, Option<u16>) {
    (
        u.scheme().to_owned(),
        u.host_str().map(str::to_ascii_lowercase),
        u.port_or_known_default(),
    )
}

fuzz_target!(|input: Input| {
    let mut allow: Vec<&str> = vec![
        "127.0.0.1:8080",
        "fabric.contoso.internal",
        "datarobot.contoso.internal",
    ];
    allow.extend(input.allow.iter().map(String::as_str).take(4));
    let policy = fuzzing::policy(&allow);
    let bodies = |uri: &Option<String>, token: &Option<String>| {
        // The fuzzed page, if it is one; else a page carrying the fuzzed link fields.
        let parsed: Option<serde_json::Value> = serde_json::from_str(&input.page).ok();
        parsed.unwrap_or_else(|| {
            serde_json::json!({"value": [], "data": [], "continuationUri": uri,
                               "continuationToken": token, "next": uri})
        })
    };
    let body = bodies(&input.uri, &input.token).to_string();
    let r = fuzzing::response(200, &[], body.as_bytes());
    if input.datarobot {
        let base = Url::parse(DATAROBOT[usize::from(input.endpoint) % DATAROBOT.len()]).unwrap();
        let Ok(next) = fuzzing::datarobot_notebooks(&r, "token") else {
            return;
        };
        match fuzzing::datarobot_next(&policy, &base, next.as_deref()) {
            Ok(Some(url)) => {
                assert!(next.as_deref().is_some_and(|n| !n.is_empty()));
                assert_eq!(origin(&url), origin(&base), "{url}");
                assert!(policy.check(Service::DataRobot, &url).is_ok(), "{url}");
                assert!(
                    url.username().is_empty() && url.password().is_none(),
                    "{url}"
                );
                assert!(url.fragment().is_none(), "{url}");
            }
            Ok(None) => assert!(next.as_deref().is_none_or(str::is_empty)),
            Err(e) => assert!(e.message.contains("next-page link refused"), "{e}"),
        }
        return;
    }
    let base = Url::parse(FABRIC[usize::from(input.endpoint) % FABRIC.len()]).unwrap();
    let roles: Vec<&str> = input
        .roles
        .iter()
        .take(4)
        .map(|r| ROLES[usize::from(*r) % ROLES.len()])
        .collect();
    let first = fuzzing::fabric_first(&base, &roles).unwrap();
    let Ok((uri, token)) = fuzzing::fabric_workspaces(&r, "bearer") else {
        return;
    };
    let uri_given = uri.as_deref().is_some_and(|u| !u.is_empty());
    let token_given = token.as_deref().is_some_and(|t| !t.is_empty());
    match fuzzing::fabric_next(&policy, &base, &first, uri.as_deref(), token.as_deref()) {
        Ok(Some(url)) if uri_given => {
            assert_eq!(origin(&url), origin(&base), "{url}");
            assert!(policy.check(Service::Fabric, &url).is_ok(), "{url}");
            assert!(
                url.username().is_empty() && url.password().is_none(),
                "{url}"
            );
            assert!(url.fragment().is_none(), "{url}");
        }
        Ok(Some(url)) => {
            assert!(token_given);
            assert_eq!(
                (url.scheme(), url.host_str(), url.port(), url.path()),
                (first.scheme(), first.host_str(), first.port(), first.path()),
                "only the query changes: {url}"
            );
            let query = url.query().unwrap_or_default();
            let added = match first.query() {
                Some(q) if !q.is_empty() => query
                    .strip_prefix(q)
                    .and_then(|rest| rest.strip_prefix('&')),
                _ => Some(query),
            };
            let added = added.unwrap_or_else(|| panic!("the first query is kept: {url}"));
            let value = added
                .strip_prefix("continuationToken=")
                .unwrap_or_else(|| panic!("one continuationToken parameter: {url}"));
            assert!(
                !value.contains('&') && !value.contains('#'),
                "one parameter: {url}"
            );
            assert!(url.fragment().is_none(), "{url}");
            assert_eq!(
                Url::parse(url.as_str()).unwrap(),
                url,
                "reads back unchanged"
            );
        }
        Ok(None) => assert!(!uri_given && !token_given),
        Err(e) => {
            assert!(uri_given, "only a link is refused: {e}");
            assert!(e.message.contains("continuationUri refused"), "{e}");
        }
    }
});
