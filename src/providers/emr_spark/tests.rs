//! Contract tests of the EMR Serverless Spark client against httpmock: what is sent (method,
//! path, query, `x-acs-*` headers, body and its hash, a signature that verifies with a
//! computation written separately from the signer) and how every answer is read.

use super::*;
use crate::metrics::Metrics;
use crate::providers::http::HttpOptions;
use httpmock::prelude::*;
use std::sync::Arc;
use std::time::Duration;

const AK_ID: &str = "LTAI5tTestAccessKey";
const AK_SECRET: &str = "test-access-key-secret-value";
const WS: &str = "w-8adde60aa809701f";
const LC: &str = "lc-6mkvn01zrg8rqhhv";
const BASE: &str =
    "/api/interactive/v1/workspace/w-8adde60aa809701f/livycompute/lc-6mkvn01zrg8rqhhv/token";

/// The signature check a server does, written independently of `acs3`: parse the
/// Authorization header, rebuild the canonical request from the request as received (raw path,
/// query re-encoded with the `percent-encoding` crate, the headers named in SignedHeaders, the
/// SHA-256 of the received body) and compare HMAC-SHA256 signatures.
pub(crate) mod verify {
    use hmac::{Hmac, Mac};
    use httpmock::HttpMockRequest;
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
    use sha2::{Digest, Sha256};

    const UNRESERVED_KEPT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');

    fn enc(raw: &str) -> String {
        let decoded = percent_decode_str(raw).decode_utf8_lossy().into_owned();
        utf8_percent_encode(&decoded, UNRESERVED_KEPT).to_string()
    }

    fn hex_sha256(b: &[u8]) -> String {
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    }

    /// Ok when the request's ACS3 signature is valid for `ak_id` / `secret`.
    pub fn verify(req: &HttpMockRequest, ak_id: &str, secret: &str) -> Result<(), String> {
        let headers = req.headers();
        let auth = headers
            .get("authorization")
            .ok_or("no Authorization header")?
            .to_str()
            .map_err(|e| e.to_string())?
            .to_owned();
        let rest = auth
            .strip_prefix("ACS3-HMAC-SHA256 ")
            .ok_or("not ACS3-HMAC-SHA256")?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let (k, v) = part
                .trim()
                .split_once('=')
                .ok_or("malformed Authorization")?;
            match k {
                "Credential" => credential = Some(v.to_owned()),
                "SignedHeaders" => signed = Some(v.to_owned()),
                "Signature" => signature = Some(v.to_owned()),
                _ => return Err(format!("unknown Authorization part {k}")),
            }
        }
        let (credential, signed, signature) = (
            credential.ok_or("no Credential")?,
            signed.ok_or("no SignedHeaders")?,
            signature.ok_or("no Signature")?,
        );
        if credential != ak_id {
            return Err(format!("Credential {credential} is not {ak_id}"));
        }
        let names: Vec<&str> = signed.split(';').collect();
        for required in [
            "host",
            "x-acs-action",
            "x-acs-version",
            "x-acs-date",
            "x-acs-signature-nonce",
            "x-acs-content-sha256",
        ] {
            if !names.contains(&required) {
                return Err(format!("{required} is not signed"));
            }
        }
        for (name, _) in headers.iter() {
            if name.as_str().starts_with("x-acs-") && !names.contains(&name.as_str()) {
                return Err(format!("{name} is sent but not signed"));
            }
        }
        let body_hash = hex_sha256(req.body_ref());
        let declared = headers
            .get("x-acs-content-sha256")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if declared != body_hash {
            return Err("x-acs-content-sha256 does not match the body".into());
        }
        let uri = req.uri();
        let mut query: Vec<(String, String)> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (enc(k), enc(v))
            })
            .collect();
        query.sort();
        let query = query
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let mut canonical_headers = String::new();
        for name in &names {
            let mut values: Vec<String> = headers
                .get_all(*name)
                .iter()
                .map(|v| v.to_str().unwrap_or_default().trim().to_owned())
                .collect();
            if values.is_empty() {
                return Err(format!("signed header {name} was not sent"));
            }
            values.sort();
            canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
        }
        let canonical = format!(
            "{}\n{}\n{query}\n{canonical_headers}\n{signed}\n{body_hash}",
            req.method_str(),
            uri.path()
        );
        let to_sign = format!("ACS3-HMAC-SHA256\n{}", hex_sha256(canonical.as_bytes()));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(to_sign.as_bytes());
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        if expected == signature {
            Ok(())
        } else {
            Err("signature does not verify".into())
        }
    }
}

fn http() -> HttpClient {
    HttpClient::new(
        HttpOptions {
            timeout: Duration::from_secs(5),
            ..HttpOptions::default()
        },
        Arc::new(Metrics::new()),
    )
    .unwrap()
}

fn creds() -> AcsCredentials {
    AcsCredentials {
        access_key_id: AK_ID.into(),
        access_key_secret: SecretString::new(AK_SECRET),
        security_token: None,
    }
}

fn client(server: &MockServer) -> EmrSparkClient {
    EmrSparkClient::new(http(), Url::parse(&server.base_url()).unwrap(), creds())
}

fn compute() -> LivyCompute {
    LivyCompute {
        region_id: "cn-hangzhou".into(),
        workspace_id: WS.into(),
        livy_compute_id: LC.into(),
    }
}

fn signed_by(secret: &'static str) -> impl Fn(&HttpMockRequest) -> bool + Send + Sync + 'static {
    move |req| match verify::verify(req, AK_ID, secret) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("signature check failed: {e}");
            false
        }
    }
}

/// The seed document's sample response of GetLivyComputeToken.
const GET_SAMPLE: &str = r#"{
"requestId": "484D9DDA-300D-525E-AF7A-0CCCA5C64A7A",
"code": "1000000",
"message": "ok",
"data": {
"tokenId": "lctk-xxxxxxxxxx",
"name": "test",
"token": "d25561157a635bb",
"createdBy": "alice",
"createTime": 1749456094000,
"expireTime": 1749457994000,
"lastUsedTime": 1749456098000,
"autoExpireConfiguration": {
"enable": false,
"expireDays": 7
}
}
}"#;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[tokio::test]
async fn create_puts_a_signed_json_body() {
    let server = MockServer::start_async().await;
    let body = r#"{"autoExpireConfiguration":{"enable":true,"expireDays":7},"name":"wao-spark-1a2b3c4d-1"}"#;
    let m = server
        .mock_async(|when, then| {
            when.method(PUT)
                .path(BASE)
                .query_param("regionId", "cn-hangzhou")
                .header("x-acs-action", "CreateLivyComputeToken")
                .header("x-acs-version", "2023-08-08")
                .header("content-type", "application/json; charset=utf-8")
                .header("x-acs-content-sha256", acs3::sha256_hex(body.as_bytes()))
                .json_body(serde_json::from_str::<Value>(body).unwrap())
                .is_true(signed_by(AK_SECRET));
            then.status(200).body(
                r#"{"requestId":"R1","code":"1000000","message":"ok","data":{"tokenId":"lctk-new"}}"#,
            );
        })
        .await;
    let id = client(&server)
        .create_token(
            &compute(),
            &TokenRequest {
                name: "wao-spark-1a2b3c4d-1".into(),
                token: None,
                auto_expire: Some(AutoExpire {
                    enable: true,
                    expire_days: 7,
                }),
            },
        )
        .await
        .unwrap();
    assert_eq!(id, "lctk-new");
    m.assert_async().await;
}

#[tokio::test]
async fn get_reads_the_seed_sample() {
    let server = MockServer::start_async().await;
    let m = server
        .mock_async(|when, then| {
            when.method(GET)
                .path(format!("{BASE}/lctk-xxxxxxxx"))
                .query_param("regionId", "cn-hangzhou")
                .header("x-acs-action", "GetLivyComputeToken")
                .header("x-acs-version", "2023-08-08")
                .header("x-acs-content-sha256", acs3::EMPTY_BODY_SHA256)
                .header("accept", "application/json")
                .is_true(signed_by(AK_SECRET));
            then.status(200).body(GET_SAMPLE);
        })
        .await;
    let t = client(&server)
        .get_token(&compute(), "lctk-xxxxxxxx")
        .await
        .unwrap();
    m.assert_async().await;
    assert_eq!(t.token_id, "lctk-xxxxxxxxxx");
    assert_eq!(t.name.as_deref(), Some("test"));
    assert_eq!(t.token.as_ref().unwrap().expose(), "d25561157a635bb");
    assert_eq!(t.created_by.as_deref(), Some("alice"));
    assert_eq!(t.create_time, Some(ts("2025-06-09T08:01:34Z")));
    assert_eq!(t.expire_time, Some(ts("2025-06-09T08:33:14Z")));
    assert_eq!(t.last_used_time, Some(ts("2025-06-09T08:01:38Z")));
    assert_eq!(
        t.auto_expire,
        Some(AutoExpire {
            enable: false,
            expire_days: 7
        })
    );
    assert!(!format!("{t:?}").contains("d25561157a635bb"));
}

#[tokio::test]
async fn list_reads_both_creator_spellings() {
    let server = MockServer::start_async().await;
    let m = server
        .mock_async(|when, then| {
            when.method(GET)
                .path(BASE)
                .query_param("regionId", "cn-hangzhou")
                .header("x-acs-action", "ListLivyComputeToken")
                .header("x-acs-version", "2023-08-08")
                .header("x-acs-content-sha256", acs3::EMPTY_BODY_SHA256)
                .is_true(signed_by(AK_SECRET));
            then.status(200).body(
                r#"{"requestId":"R","code":"1000000","message":"ok","data":{"tokens":[
                {"tokenId":"lctk-1","name":"a","token":"t1","createdby":"bob","createTime":1749456094000,"expireTime":1749457994000,"lastUsedTime":null},
                {"tokenId":"lctk-2","name":"b","createdBy":"carol","createTime":"1749456094000","expireTime":0}]}}"#,
            );
        })
        .await;
    let tokens = client(&server).list_tokens(&compute()).await.unwrap();
    m.assert_async().await;
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0].created_by.as_deref(), Some("bob"));
    assert_eq!(tokens[0].last_used_time, None);
    assert_eq!(tokens[1].created_by.as_deref(), Some("carol"));
    assert_eq!(tokens[1].create_time, Some(ts("2025-06-09T08:01:34Z")));
    assert_eq!(tokens[1].expire_time, None, "0 means none");
    assert_eq!(tokens[1].token, None);
}

#[tokio::test]
async fn list_without_tokens_is_empty() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(GET).path(BASE);
            then.status(200)
                .body(r#"{"requestId":"R","code":"1000000","message":"ok","data":{}}"#);
        })
        .await;
    assert!(
        client(&server)
            .list_tokens(&compute())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_list_answer_without_data_is_malformed_not_empty() {
    for body in ["{}", r#"{"requestId":"R","code":"1000000","message":"ok"}"#] {
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(GET).path(BASE);
                then.status(200).body(body);
            })
            .await;
        let err = client(&server).list_tokens(&compute()).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::InvalidResponse, "{body}");
        assert!(err.message.contains("without data"), "{}", err.message);
    }
}

#[tokio::test]
async fn delete_deletes() {
    let server = MockServer::start_async().await;
    let delete = server
        .mock_async(|when, then| {
            when.method(DELETE)
                .path(format!("{BASE}/lctk-1"))
                .query_param("regionId", "cn-hangzhou")
                .header("x-acs-action", "DeleteLivyComputeToken")
                .header("x-acs-version", "2023-08-08")
                .header("x-acs-content-sha256", acs3::EMPTY_BODY_SHA256)
                .is_true(signed_by(AK_SECRET));
            then.status(200)
                .body(r#"{"requestId":"R3","code":"1000000","message":"ok"}"#);
        })
        .await;
    let c = client(&server);
    c.delete_token(&compute(), "lctk-1").await.unwrap();
    delete.assert_async().await;
}

#[tokio::test]
async fn the_verifier_refuses_a_wrong_key() {
    // Proves the independent check is not vacuous: a request signed with another secret does
    // not match the mock, and httpmock answers 404.
    let server = MockServer::start_async().await;
    let m = server
        .mock_async(|when, then| {
            when.method(GET).is_true(signed_by("another-secret"));
            then.status(200).body(GET_SAMPLE);
        })
        .await;
    let err = client(&server)
        .get_token(&compute(), "lctk-1")
        .await
        .unwrap_err();
    assert_eq!(err.status, Some(404));
    assert_eq!(m.calls_async().await, 0);
}

#[tokio::test]
async fn sts_credentials_send_a_signed_security_token() {
    let server = MockServer::start_async().await;
    let m = server
        .mock_async(|when, then| {
            when.method(GET)
                .header("x-acs-security-token", "sts-security-token")
                .is_true(|req: &HttpMockRequest| {
                    let auth = req.headers()["authorization"].to_str().unwrap().to_owned();
                    auth.contains("x-acs-security-token")
                        && verify::verify(req, "STS.id", "sts-secret").is_ok()
                });
            then.status(200).body(GET_SAMPLE);
        })
        .await;
    let c = EmrSparkClient::new(
        http(),
        Url::parse(&server.base_url()).unwrap(),
        AcsCredentials {
            access_key_id: "STS.id".into(),
            access_key_secret: SecretString::new("sts-secret"),
            security_token: Some(SecretString::new("sts-security-token")),
        },
    );
    c.get_token(&compute(), "lctk-1").await.unwrap();
    m.assert_async().await;
}

#[tokio::test]
async fn path_parameters_are_encoded_segments_and_signed_as_sent() {
    let server = MockServer::start_async().await;
    let m = server
        .mock_async(|when, then| {
            when.method(DELETE).is_true(|req: &HttpMockRequest| {
                req.uri().path()
                    == "/api/interactive/v1/workspace/w%201/livycompute/lc%2Fx/token/t%2A1"
                    && verify::verify(req, AK_ID, AK_SECRET).is_ok()
            });
            then.status(200)
                .body(r#"{"requestId":"R","code":"1000000","message":"ok"}"#);
        })
        .await;
    let odd = LivyCompute {
        region_id: "cn-hangzhou".into(),
        workspace_id: "w 1".into(),
        livy_compute_id: "lc/x".into(),
    };
    client(&server).delete_token(&odd, "t*1").await.unwrap();
    m.assert_async().await;
}

async fn error_for(status: u16, headers: &[(&str, &str)], body: &str) -> ProviderError {
    let server = MockServer::start_async().await;
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let body = body.to_owned();
    server
        .mock_async(move |when, then| {
            when.any_request();
            let mut then = then.status(status).body(body);
            for (k, v) in &headers {
                then = then.header(k, v);
            }
        })
        .await;
    client(&server)
        .get_token(&compute(), "lctk-1")
        .await
        .unwrap_err()
}

#[tokio::test]
async fn envelope_errors_on_http_200() {
    let e = error_for(
        200,
        &[],
        r#"{"requestId":"R9","code":"Forbidden.RAM","message":"User not authorized to operate on the specified resource."}"#,
    )
    .await;
    assert_eq!(e.kind, ProviderErrorKind::Forbidden);
    assert_eq!(e.request_id.as_deref(), Some("R9"));
    assert!(
        e.message.contains("Forbidden.RAM: User not authorized"),
        "{}",
        e.message
    );

    let e = error_for(
        200,
        &[],
        r#"{"requestId":"R","code":"1000001","message":"livy compute is stopped"}"#,
    )
    .await;
    assert_eq!(e.kind, ProviderErrorKind::InvalidRequest);
    assert!(
        e.message.contains("1000001: livy compute is stopped"),
        "{}",
        e.message
    );

    let e = error_for(
        200,
        &[("x-acs-retry-after", "3000")],
        r#"{"requestId":"R","code":"Throttling.User","message":"slow down"}"#,
    )
    .await;
    assert_eq!(e.kind, ProviderErrorKind::Throttled);
    assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
}

#[tokio::test]
async fn envelope_errors_on_4xx_and_5xx() {
    let e = error_for(
        404,
        &[],
        r#"{"requestId":"R","code":"LivyComputeToken.NotFound","message":"token lctk-1 does not exist"}"#,
    )
    .await;
    assert_eq!(e.kind, ProviderErrorKind::NotFound);
    let e = error_for(
        400,
        &[],
        r#"{"RequestId":"R","Code":"SignatureDoesNotMatch","Message":"Specified signature is not matched with our calculation."}"#,
    )
    .await;
    assert_eq!(e.kind, ProviderErrorKind::AuthenticationFailed);
    let e = error_for(
        403,
        &[],
        r#"{"RequestId":"R","Code":"InvalidAccessKeyId.NotFound","Message":"Specified access key is not found."}"#,
    )
    .await;
    assert_eq!(e.kind, ProviderErrorKind::AuthenticationFailed);
    let e = error_for(
        403,
        &[],
        r#"{"RequestId":"R","Code":"Forbidden.NoPermission","Message":"no"}"#,
    )
    .await;
    assert_eq!(e.kind, ProviderErrorKind::Forbidden);
    let e = error_for(503, &[], "<html>Service Unavailable</html>").await;
    assert_eq!(e.kind, ProviderErrorKind::Unavailable);
    assert!(e.to_string().contains(", HTTP 503"), "{e}");
}

#[tokio::test]
async fn throttling_on_400_with_throttling_user() {
    let e = error_for(
        400,
        &[("x-acs-retry-after", "1500")],
        r#"{"RequestId":"9736ED45","Message":"Request was denied due to user flow control.",
            "Recommend":"https://next.api.aliyun.com/troubleshoot?q=Throttling.User&product=emr-serverless-spark",
            "HostId":"emr-serverless-spark.cn-hangzhou.aliyuncs.com","Code":"Throttling.User"}"#,
    )
    .await;
    assert_eq!(e.kind, ProviderErrorKind::Throttled);
    assert_eq!(e.status, Some(400));
    assert_eq!(e.retry_after, Some(Duration::from_millis(1500)));
    assert_eq!(e.request_id.as_deref(), Some("9736ED45"));
    // Without the header, the code alone decides.
    let e = error_for(400, &[], r#"{"Code":"Throttling.Api","Message":"x"}"#).await;
    assert_eq!(e.kind, ProviderErrorKind::Throttled);
    assert_eq!(e.retry_after, None);
}

#[tokio::test]
async fn malformed_answers_are_invalid_responses_that_quote_nothing() {
    let e = error_for(
        200,
        &[],
        r#"{"code":"1000000","data":{"tokenId":"x","token":12345678901234}}"#,
    )
    .await;
    assert_eq!(e.kind, ProviderErrorKind::InvalidResponse);
    assert!(!e.message.contains("12345678901234"), "{}", e.message);
    let e = error_for(200, &[], r#"{"code":"1000000","data":{"tokenId":"x"}}"#).await;
    assert_eq!(e.kind, ProviderErrorKind::InvalidResponse);
    assert!(e.message.contains("data.token"), "{}", e.message);
    let e = error_for(
        200,
        &[],
        r#"{"code":"1000000","data":{"tokenId":"x","token":"secret-token-x"#,
    )
    .await;
    assert_eq!(e.kind, ProviderErrorKind::InvalidResponse);
    assert!(!e.message.contains("secret-token-x"), "{}", e.message);
}

#[tokio::test]
async fn create_without_token_id_is_invalid() {
    let server = MockServer::start_async().await;
    server
        .mock_async(|when, then| {
            when.method(PUT);
            then.status(200)
                .body(r#"{"requestId":"R","code":"1000000","message":"ok","data":{}}"#);
        })
        .await;
    let e = client(&server)
        .create_token(
            &compute(),
            &TokenRequest {
                name: "n".into(),
                token: Some(SecretString::new("super-secret-token-content")),
                auto_expire: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::InvalidResponse);
    assert!(!e.to_string().contains("super-secret"), "{e}");
}

#[tokio::test]
async fn the_endpoint_path_is_kept_as_a_prefix() {
    let server = MockServer::start_async().await;
    let m = server
        .mock_async(|when, then| {
            when.method(GET)
                .path(format!("/gateway{BASE}"))
                .is_true(signed_by(AK_SECRET));
            then.status(200)
                .body(r#"{"requestId":"R","code":"1000000","message":"ok","data":{"tokens":[]}}"#);
        })
        .await;
    let c = EmrSparkClient::new(
        http(),
        Url::parse(&format!("{}/gateway/", server.base_url())).unwrap(),
        creds(),
    );
    c.list_tokens(&compute()).await.unwrap();
    m.assert_async().await;
}

#[test]
fn default_endpoints_are_official() {
    use crate::providers::endpoint::{EndpointPolicy, Service};
    let u = Url::parse(&default_endpoint("cn-hangzhou")).unwrap();
    assert_eq!(
        u.as_str(),
        "https://emr-serverless-spark.cn-hangzhou.aliyuncs.com/"
    );
    assert!(EndpointPolicy::is_official(Service::EmrServerlessSpark, &u));
}
