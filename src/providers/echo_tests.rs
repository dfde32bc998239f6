//! A provider that echoes the credential a request carried (in its error text, error code or
//! request id) never gets it, or any part of it, into an error: every provider scrubs its
//! answer's text before shortening it. Found by the `provider_responses` fuzz target: ARM's
//! request id of a malformed success answer was not scrubbed at all, and text shortened before
//! scrubbing could keep the first part of a secret.

use crate::providers::auth::acs3::AcsCredentials;
use crate::providers::http::ProviderResponse;
use crate::providers::{azure_ml, datarobot, emr_spark, fabric};
use crate::redact::SecretString;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

const SECRET: &str = "echoed-credential-0123456789abcdef";

fn response(status: u16, headers: &[(&str, String)], body: String) -> ProviderResponse {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    ProviderResponse {
        status,
        headers: map,
        body: body.into(),
    }
}

/// Some 8 characters in a row of the secret, if `text` shows them.
fn fragment(text: &str) -> Option<&'static str> {
    (0..=SECRET.len() - 8)
        .map(|i| &SECRET[i..i + 8])
        .find(|w| text.contains(w))
}

/// Text with the secret placed so that it straddles position `at` (where the provider's text
/// gets shortened).
fn straddling(at: usize) -> String {
    format!("{}{SECRET} tail", "x".repeat(at - SECRET.len() / 2))
}

#[test]
fn no_part_of_an_echoed_credential_reaches_an_error() {
    let mut shown = vec![];
    // Every clip length the providers use, with the secret across it.
    for at in [60, 80, 100, 300, 600] {
        let text = straddling(at);
        let id = straddling(100);
        let ids = |names: &[&'static str]| -> Vec<(&'static str, String)> {
            names.iter().map(|n| (*n, id.clone())).collect()
        };
        let arm = |status| {
            let body = serde_json::json!({"error": {"code": text, "message": text}}).to_string();
            azure_ml::token_from_response(
                &response(status, &ids(&["x-ms-request-id"]), body),
                SECRET,
            )
        };
        // The fuzzer's finding: a 2xx answer that doesn't parse.
        let malformed = azure_ml::token_from_response(
            &response(200, &ids(&["x-ms-request-id"]), "{".into()),
            SECRET,
        );
        let entra = crate::providers::auth::entra::token_from_response(
            &response(
                401,
                &[],
                serde_json::json!({"error": text, "error_description": text,
                                   "trace_id": id})
                .to_string(),
            ),
            &[SECRET],
            jiff::Timestamp::UNIX_EPOCH,
        );
        let fabric = fabric::parse::<serde_json::Value>(
            "listWorkspaces",
            &response(
                403,
                &ids(&["requestid"]),
                serde_json::json!({"errorCode": text, "message": text}).to_string(),
            ),
            &[SECRET],
        );
        let datarobot = datarobot::parse::<serde_json::Value>(
            "listNotebooks",
            &response(
                401,
                &ids(&["x-request-id"]),
                serde_json::json!({"errorName": text, "message": {"detail": text}}).to_string(),
            ),
            &[SECRET],
        );
        let credentials = AcsCredentials {
            access_key_id: "LTAI".into(),
            access_key_secret: SecretString::new("another-secret-value"),
            security_token: Some(SecretString::new(SECRET)),
        };
        let emr = emr_spark::data_of(
            "GetLivyComputeToken",
            &response(
                200,
                &[],
                serde_json::json!({"code": text, "message": text, "requestId": id}).to_string(),
            ),
            &credentials,
        );
        for (provider, result) in [
            ("ARM 401", arm(401).map(drop)),
            ("ARM 500", arm(500).map(drop)),
            ("ARM malformed 200", malformed.map(drop)),
            ("Entra", entra.map(drop)),
            ("Fabric", fabric.map(drop)),
            ("DataRobot", datarobot.map(drop)),
            ("EMR", emr.map(drop)),
        ] {
            let e = result.unwrap_err();
            let text = e.to_string();
            assert!(text.contains("[redacted]"), "{provider}: {text}");
            if let Some(f) = fragment(&text) {
                shown.push(format!("{provider} (clipped at {at}) shows {f:?}: {text}"));
            }
        }
    }
    assert!(shown.is_empty(), "{}", shown.join("\n"));
}
