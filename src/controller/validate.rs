//! Checks shared by the kinds before any provider call: credentials (same-namespace Secrets or
//! allowed pod identity) and endpoints (the endpoint policy).

use crate::api::common::{
    AccessKeyRef, AlibabaCredentialSource, AlibabaCredentials, AzureCredentialSource,
    AzureCredentials, SecretKeyRef,
};
use crate::api::duration::Duration;
use crate::api::names;
use crate::controller::Context;
use crate::controller::credentials::{CredentialValue, read_key};
use crate::controller::error::Error;
use crate::providers::auth::entra::{EntraCredential, TokenRequest};
use crate::providers::azure_cloud;
use crate::providers::endpoint::{EndpointPolicy, Service};
use crate::providers::error::clip;
use url::Url;

/// InvalidSpec unless `ok(value)`: "`field` "value" is not `what`". The value is quoted
/// (clipped): names and IDs are not secret, and seeing them helps.
pub fn name(field: &str, value: &str, ok: fn(&str) -> bool, what: &str) -> Result<(), Error> {
    if ok(value) {
        Ok(())
    } else {
        Err(Error::InvalidSpec(format!(
            "{field} {:?} is not {what}",
            clip(value, 100)
        )))
    }
}

const SECRET_NAME: &str = "a Secret name (lower-case letters, digits, '-' and '.', at most 253 \
                           characters; the Secret is always looked up in this resource's \
                           namespace)";
const SECRET_KEY: &str = "a Secret key (letters, digits, '-', '_' and '.')";

/// A Secret name written in `field` (e.g. `spec.secretName`).
pub fn secret_name(field: &str, value: Option<&str>) -> Result<(), Error> {
    match value.filter(|v| !v.is_empty()) {
        Some(v) => name(field, v, names::is_dns_subdomain, SECRET_NAME),
        None => Ok(()),
    }
}

/// A `{name, key}` reference to a Secret in the resource's namespace.
pub fn secret_key_ref(field: &str, r: &SecretKeyRef) -> Result<(), Error> {
    name(
        &format!("{field}.name"),
        &r.name,
        names::is_dns_subdomain,
        SECRET_NAME,
    )?;
    name(
        &format!("{field}.key"),
        &r.key,
        names::is_secret_key,
        SECRET_KEY,
    )
}

/// An AccessKey reference: the Secret name and its keys.
pub fn access_key_ref(field: &str, r: &AccessKeyRef) -> Result<(), Error> {
    name(
        &format!("{field}.name"),
        &r.name,
        names::is_dns_subdomain,
        SECRET_NAME,
    )?;
    for (key_field, key) in [
        ("accessKeyIdKey", Some(r.access_key_id_key.as_str())),
        ("accessKeySecretKey", Some(r.access_key_secret_key.as_str())),
        ("securityTokenKey", r.security_token_key()),
    ] {
        if let Some(k) = key {
            name(
                &format!("{field}.{key_field}"),
                k,
                names::is_secret_key,
                SECRET_KEY,
            )?;
        }
    }
    Ok(())
}

/// A positive duration from the spec, or InvalidSpec naming the field.
pub fn positive(field: &str, d: Option<&Duration>) -> Result<Option<std::time::Duration>, Error> {
    let Some(d) = d else { return Ok(None) };
    match d.parsed() {
        Err(e) => Err(Error::InvalidSpec(format!("{field}: {e}"))),
        Ok(v) if v.is_zero() => Err(Error::InvalidSpec(format!(
            "{field} must be greater than zero, got {d}"
        ))),
        Ok(v) => Ok(Some(v)),
    }
}

/// Checks an endpoint (or the default) against the policy for `service`.
pub fn endpoint(
    ctx: &Context,
    service: Service,
    field: &str,
    given: Option<&str>,
    default: &str,
) -> Result<Url, Error> {
    let raw = given.filter(|s| !s.is_empty()).unwrap_or(default);
    ctx.settings
        .endpoint_policy
        .check_str(service, raw)
        .map_err(|e| {
            if given.is_some() {
                Error::EndpointNotAllowed(e)
            } else {
                Error::InvalidSpec(format!("{field}: default endpoint refused: {e}"))
            }
        })
}

/// Validated Azure credentials: where they come from, the authority (login host) to use.
#[derive(Clone, Debug)]
pub struct AzureAuth {
    /// The credential source.
    pub source: AzureCredentialSource,
    /// The client secret, for [`AzureCredentialSource::ClientSecret`].
    pub client_secret: Option<CredentialValue>,
    /// The Entra authority host URL.
    pub authority: Url,
    /// The credential as the Entra client takes it (client secret with its version, or
    /// workload identity).
    pub credential: EntraCredential,
}

impl AzureAuth {
    /// The Entra token request for `scope` (e.g. the ARM or Fabric `.default` scope) with these
    /// credentials; ask `ctx.entra` for the token.
    pub fn token_request(&self, creds: &AzureCredentials, scope: &str) -> TokenRequest {
        TokenRequest {
            authority: self.authority.clone(),
            tenant: creds.tenant_id.clone(),
            client_id: creds.client_id.clone(),
            credential: self.credential.clone(),
            scope: scope.to_owned(),
        }
    }
}

/// Validates Azure credentials for a resource in `namespace`: the one-of, the authority host
/// against the endpoint policy, pod identity against the allowlist (and only towards an
/// official Entra host), and reads the client secret from the namespace.
pub async fn azure(
    ctx: &Context,
    namespace: &str,
    field: &str,
    creds: &AzureCredentials,
) -> Result<AzureAuth, Error> {
    let source = creds
        .source()
        .map_err(|m| Error::InvalidSpec(format!("{field}: {m}")))?;
    name(
        &format!("{field}.tenantId"),
        &creds.tenant_id,
        names::is_tenant,
        "a Microsoft Entra tenant (a GUID, or a domain such as contoso.onmicrosoft.com)",
    )?;
    name(
        &format!("{field}.clientId"),
        &creds.client_id,
        names::is_guid,
        "an application (client) ID (a GUID)",
    )?;
    if let AzureCredentialSource::ClientSecret(r) = &source {
        secret_key_ref(&format!("{field}.clientSecretRef"), r)?;
    }
    let cloud = azure_cloud::endpoints(creds.cloud);
    let authority = endpoint(
        ctx,
        Service::EntraId,
        &format!("{field}.authorityHost"),
        creds.authority_host_override(),
        cloud.authority_host,
    )?;
    if authority.path() != "/" || authority.query().is_some() {
        return Err(Error::InvalidSpec(format!(
            "{field}.authorityHost must be a scheme and host (and port) only, e.g. \
             https://login.microsoftonline.com"
        )));
    }
    let (client_secret, credential) = match &source {
        AzureCredentialSource::WorkloadIdentity => {
            ctx.settings
                .pod_identity
                .check(namespace, &format!("{field}.workloadIdentity"))?;
            EndpointPolicy::require_official(Service::EntraId, &authority)?;
            (None, EntraCredential::WorkloadIdentity)
        }
        AzureCredentialSource::ClientSecret(r) => {
            let value = read_key(ctx.secrets.as_ref(), namespace, r).await?;
            let credential = EntraCredential::ClientSecret {
                secret: value.value.clone(),
                version: value.version.clone(),
            };
            (Some(value), credential)
        }
    };
    Ok(AzureAuth {
        source,
        client_secret,
        authority,
        credential,
    })
}

/// Validates Alibaba credentials for a resource in `namespace` (one-of, pod identity
/// allowlist); reading the AccessKey itself is the provider module's job.
pub fn alibaba(
    ctx: &Context,
    namespace: &str,
    creds: &AlibabaCredentials,
) -> Result<AlibabaCredentialSource, Error> {
    let source = creds.source().map_err(Error::InvalidSpec)?;
    match &source {
        AlibabaCredentialSource::Rrsa => {
            ctx.settings.pod_identity.check(namespace, "alibaba.rrsa")?;
        }
        AlibabaCredentialSource::AccessKey(r) => {
            access_key_ref("spec.alibaba.accessKeyRef", r)?;
        }
    }
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::{AzureCloud, SecretKeyRef};
    use crate::controller::credentials::{PodIdentityPolicy, StaticSecretSource};
    use crate::controller::error::Reason;
    use crate::controller::{Context, Settings};
    use crate::metrics::Metrics;
    use crate::providers::endpoint::EndpointPolicy;
    use crate::providers::http::{HttpClient, HttpOptions};
    use k8s_openapi::api::core::v1::Secret;
    use std::sync::Arc;

    fn ctx(allow: &[&str], pod_identity: &[&str], secrets: StaticSecretSource) -> Context {
        let service = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
            Err::<http::Response<kube::client::Body>, _>(std::io::Error::other("no cluster"))
        });
        let client = kube::Client::new(service, "default");
        let metrics = Arc::new(Metrics::new());
        let http = HttpClient::new(HttpOptions::default(), metrics.clone()).unwrap();
        let settings = Settings {
            endpoint_policy: EndpointPolicy::new(
                allow.iter().map(|a| a.parse().unwrap()).collect(),
            ),
            pod_identity: PodIdentityPolicy::new(pod_identity.iter().map(|s| s.to_string())),
            ..Settings::default()
        };
        let mut ctx = Context::new(client, settings, metrics, http);
        ctx.secrets = Arc::new(secrets);
        ctx
    }

    fn creds(secret_ref: Option<&str>, authority_host: Option<&str>) -> AzureCredentials {
        AzureCredentials {
            tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "11111111-1111-1111-1111-111111111111".into(),
            client_secret_ref: secret_ref.map(|n| SecretKeyRef {
                name: n.into(),
                key: "clientSecret".into(),
            }),
            workload_identity: secret_ref.is_none(),
            cloud: AzureCloud::AzureUsGovernment,
            authority_host: authority_host.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn client_secret_credentials_become_a_token_request() {
        let mut secrets = StaticSecretSource::default();
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sp", "namespace": "team-a"},
            "stringData": {"clientSecret": "s3cret"}
        }))
        .unwrap();
        secrets.insert(s, "team-a");
        let ctx = ctx(&[], &[], secrets);
        let c = creds(Some("sp"), None);
        let auth = azure(&ctx, "team-a", "spec.azure", &c).await.unwrap();
        assert_eq!(auth.authority.as_str(), "https://login.microsoftonline.us/");
        let req = auth.token_request(&c, "https://management.usgovcloudapi.net/.default");
        assert_eq!(req.tenant, "contoso.onmicrosoft.com");
        assert_eq!(req.client_id, c.client_id);
        assert_eq!(req.scope, "https://management.usgovcloudapi.net/.default");
        match req.credential {
            EntraCredential::ClientSecret { secret, version } => {
                assert_eq!(secret.expose(), "s3cret");
                assert_eq!(Some(version), auth.client_secret.map(|v| v.version));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn workload_identity_needs_an_allowed_namespace_and_an_official_authority() {
        let c = creds(None, None);
        let err = azure(
            &ctx(&[], &[], Default::default()),
            "team-a",
            "spec.azure",
            &c,
        )
        .await
        .unwrap_err();
        assert_eq!(err.reason(), Reason::PodIdentityNotAllowed);

        let allowed = ctx(&["127.0.0.1"], &["team-a"], Default::default());
        let auth = azure(&allowed, "team-a", "spec.azure", &c).await.unwrap();
        assert!(matches!(auth.credential, EntraCredential::WorkloadIdentity));

        // --allow-endpoint lets a client secret go to a mock, never the operator's identity.
        let mock = creds(None, Some("http://127.0.0.1:8080"));
        let err = azure(&allowed, "team-a", "spec.azure", &mock)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Reason::EndpointNotAllowed);
        assert!(err.to_string().contains("own identity"), "{err}");
    }
}
