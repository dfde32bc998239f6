//! The ACS3-HMAC-SHA256 canonicalisation, and signing requests as the EMR client builds them.
//!
//! Invariants (not just "no panic"):
//! - RFC 3986 encoding: only unreserved characters and `%XX` (upper-case hex) come out, and
//!   decoding gives the input back;
//! - the canonical query: one `name=value` per parameter, sorted by name then value, each
//!   decoding to its parameter; the same whatever order the parameters come in;
//! - canonical headers: lower-case names, sorted and unique, values trimmed and sorted per
//!   name; the signed-headers list names exactly those; order-independent;
//! - the signature is deterministic and order-independent;
//! - what is signed is what is sent: for a request built as the EMR client builds it, the
//!   canonical URI is the path on the wire, the canonical query is the query on the wire, and
//!   a server recomputing both from the raw request (RFC 3986 decoding, `+` is a plus) gets
//!   the same signature.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode_str;
use url::Url;
use workspace_access_operator::providers::auth::acs3::{
    self, AcsCredentials, Operation, canonical_headers, canonical_query_string, percent_encode,
};
use workspace_access_operator::providers::emr_spark::{LivyCompute, operation_url};
use workspace_access_operator::redact::SecretString;

#[derive(Arbitrary, Debug)]
struct Input {
    text: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    rotate: u8,
    region: String,
    workspace: String,
    compute: String,
    token: Option<String>,
    body: Vec<u8>,
}

fn decode(s: &str) -> Vec<u8> {
    percent_decode_str(s).collect()
}

fn check_encoding(text: &str) {
    let e = percent_encode(text);
    let b = e.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                assert!(i + 2 < b.len(), "{e}");
                let hex = &e[i + 1..i + 3];
                assert!(
                    hex.bytes()
                        .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(&h)),
                    "{e}"
                );
                i += 3;
            }
            c => {
                assert!(c.is_ascii_alphanumeric() || b"-_.~".contains(&c), "{e}");
                i += 1;
            }
        }
    }
    assert_eq!(decode(&e), text.as_bytes());
}

/// A header name as HTTP allows it (what the signer is given is always one).
fn header_name(s: &str) -> Option<String> {
    let n = s.trim().to_ascii_lowercase();
    (!n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!#$%&'*+^`|~".contains(&b)))
    .then_some(n)
}

/// A header value without control characters (HTTP forbids them).
fn header_value(s: &str) -> Option<String> {
    (!s.chars().any(char::is_control)).then(|| s.to_owned())
}

fuzz_target!(|input: Input| {
    // RFC 3986 encoding.
    check_encoding(&input.text);

    // The canonical query.
    let q = &input.query;
    let canonical = canonical_query_string(q);
    let mut rotated = q.clone();
    if !rotated.is_empty() {
        let k = usize::from(input.rotate) % rotated.len();
        rotated.rotate_left(k);
        rotated.reverse();
    }
    assert_eq!(
        canonical_query_string(&rotated),
        canonical,
        "order-independent"
    );
    if q.is_empty() {
        assert_eq!(canonical, "");
    } else {
        let pairs: Vec<(&str, &str)> = canonical
            .split('&')
            .map(|p| p.split_once('=').expect("name=value"))
            .collect();
        assert_eq!(pairs.len(), q.len());
        assert!(
            pairs.windows(2).all(|w| w[0] <= w[1]),
            "sorted: {canonical}"
        );
        assert!(
            pairs
                .iter()
                .all(|(k, v)| !k.contains('=') && !v.contains('='))
        );
        let mut decoded: Vec<(Vec<u8>, Vec<u8>)> =
            pairs.iter().map(|(k, v)| (decode(k), decode(v))).collect();
        let mut given: Vec<(Vec<u8>, Vec<u8>)> = q
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        decoded.sort();
        given.sort();
        assert_eq!(decoded, given, "{canonical}");
    }

    // Canonical headers.
    let headers: Vec<(String, String)> = input
        .headers
        .iter()
        .filter_map(|(k, v)| Some((header_name(k)?, header_value(v)?)))
        .collect();
    let ch = canonical_headers(&headers);
    let mut hr = headers.clone();
    hr.reverse();
    assert_eq!(canonical_headers(&hr), ch, "order-independent");
    let names: Vec<&str> = ch
        .canonical
        .lines()
        .map(|l| l.split_once(':').expect("name:value").0)
        .collect();
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "sorted, unique: {ch:?}"
    );
    assert_eq!(ch.signed, names.join(";"));
    for line in ch.canonical.lines() {
        let (_, value) = line.split_once(':').unwrap();
        for part in value.split(',') {
            assert_eq!(part, part.trim(), "trimmed: {line:?}");
        }
    }
    let unique: std::collections::BTreeSet<&str> =
        headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(unique.len(), names.len());

    // Signing a request as the EMR client builds it.
    let creds = AcsCredentials {
        access_key_id: "LTAI-fuzz".into(),
        access_key_secret: SecretString::new("fuzz-secret"),
        security_token: None,
    };
    let endpoint = Url::parse("https://emr-serverless-spark.cn-hangzhou.aliyuncs.com/").unwrap();
    let compute = LivyCompute {
        region_id: input.region.clone(),
        workspace_id: input.workspace.clone(),
        livy_compute_id: input.compute.clone(),
    };
    let Ok(url) = operation_url(&endpoint, &compute, input.token.as_deref()) else {
        return;
    };
    // One segment per parameter, each decoding to it.
    let segments: Vec<&str> = url.path_segments().unwrap().collect();
    let mut want = vec![
        "api".to_owned(),
        "interactive".into(),
        "v1".into(),
        "workspace".into(),
        input.workspace.clone(),
        "livycompute".into(),
        input.compute.clone(),
        "token".into(),
    ];
    want.extend(input.token.clone());
    let got: Vec<Vec<u8>> = segments.iter().map(|s| decode(s)).collect();
    let want_bytes: Vec<Vec<u8>> = want.iter().map(|s| s.as_bytes().to_vec()).collect();
    assert_eq!(got, want_bytes, "{url}");
    assert_eq!(
        url.query(),
        Some(canonical_query_string(&[("regionId", input.region.as_str())]).as_str())
    );
    let sign = || {
        let mut req = reqwest::Request::new(reqwest::Method::PUT, url.clone());
        *req.body_mut() = Some(input.body.clone().into());
        acs3::sign_request(
            &mut req,
            &creds,
            Operation {
                action: "CreateLivyComputeToken",
                version: "2023-08-08",
            },
            "2025-06-09T08:01:34Z".parse().unwrap(),
            "nonce",
        )
        .unwrap();
        req
    };
    let req = sign();
    let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
    assert_eq!(
        sign().headers()["authorization"].to_str().unwrap(),
        auth,
        "deterministic"
    );
    // A server's view of the raw request: the path as sent, the query split on & and =,
    // RFC 3986-decoded (a + stays a plus), and the signed headers as received.
    let raw_query: Vec<(String, String)> = req
        .url()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                String::from_utf8(decode(k)).unwrap(),
                String::from_utf8(decode(v)).unwrap(),
            )
        })
        .collect();
    let signed_names: Vec<&str> = auth
        .split("SignedHeaders=")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .split(';')
        .collect();
    let received: Vec<(String, String)> = signed_names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                req.headers()[*n].to_str().unwrap().to_owned(),
            )
        })
        .collect();
    let hash = acs3::sha256_hex(&input.body);
    let server = acs3::sign_parts(
        &creds,
        "PUT",
        req.url().path(),
        &raw_query
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>(),
        &received,
        &hash,
    );
    assert_eq!(server, auth, "signed what was sent: {}", req.url());
});
