//! No secret in a panic: a panic message shows values through `Debug` (`unwrap`, `expect`,
//! `assert_eq!`, `{:?}` in a log line). Every type that carries a credential or token prints
//! `[redacted]` instead, nested or not.

use crate::api::common::{AzureCredentialSource, SecretKeyRef};
use crate::controller::clients::live::AzureAuth;
use crate::controller::credentials::CredentialValue;
use crate::controller::secret::SecretContent;
use crate::providers::auth::acs3::AcsCredentials;
use crate::providers::auth::entra::{AccessToken, EntraCredential, TokenRequest};
use crate::providers::azure_ml::NotebookAccessToken;
use crate::providers::emr_spark::{self, LivyTokenInfo};
use crate::redact::SecretString;
use std::time::Duration;
use url::Url;

const SECRET: &str = "hunter2-secret-value";

fn s() -> SecretString {
    SecretString::new(SECRET)
}

#[test]
fn debug_output_of_every_secret_carrying_type_is_redacted() {
    let now = jiff::Timestamp::UNIX_EPOCH;
    let entra = EntraCredential::ClientSecret {
        secret: s(),
        version: "v1".into(),
    };
    let request = TokenRequest {
        authority: Url::parse("https://login.microsoftonline.com").unwrap(),
        tenant: "t".into(),
        client_id: "c".into(),
        credential: entra.clone(),
        scope: "x/.default".into(),
    };
    let value = CredentialValue {
        value: s(),
        version: "v".into(),
    };
    let values: Vec<Box<dyn std::fmt::Debug>> = vec![
        Box::new(s()),
        Box::new(Some(s())),
        Box::new(entra.clone()),
        Box::new(request.clone()),
        Box::new(AccessToken {
            token: s(),
            expires_at: now,
        }),
        Box::new(AcsCredentials {
            access_key_id: "LTAI".into(),
            access_key_secret: s(),
            security_token: Some(s()),
        }),
        Box::new(NotebookAccessToken {
            access_token: s(),
            refresh_token: Some(s()),
            expires_in: Duration::from_secs(1),
            notebook_resource_id: None,
            host_name: None,
            public_dns: None,
            token_type: None,
            scope: None,
            request_id: None,
        }),
        Box::new(LivyTokenInfo {
            token_id: "lctk-1".into(),
            name: None,
            token: Some(s()),
            created_by: None,
            create_time: None,
            expire_time: None,
            last_used_time: None,
            auto_expire: None,
        }),
        Box::new(emr_spark::TokenRequest {
            name: "n".into(),
            token: Some(s()),
            auto_expire: None,
        }),
        Box::new(value.clone()),
        Box::new(SecretContent {
            data: [("token".to_string(), s())].into(),
            expires_at: now,
            renew_at: now,
        }),
        Box::new(AzureAuth {
            source: AzureCredentialSource::ClientSecret(SecretKeyRef {
                name: "sp".into(),
                key: "k".into(),
            }),
            client_secret: Some(value),
            authority: Url::parse("https://login.microsoftonline.com").unwrap(),
            tenant: "t".into(),
            client_id: "c".into(),
            credential: entra,
        }),
        Box::new(Err::<(), _>(request)),
    ];
    for v in &values {
        for text in [format!("{v:?}"), format!("{v:#?}")] {
            assert!(!text.contains(SECRET), "{text}");
            assert!(text.contains("[redacted]"), "{text}");
        }
    }
}
