//! Checks shared by the kinds before any provider call: credentials (same-namespace Secrets or
//! allowed pod identity) and endpoints (the endpoint policy).

use crate::api::common::{
    AlibabaCredentialSource, AlibabaCredentials, AzureCredentialSource, AzureCredentials,
};
use crate::api::duration::Duration;
use crate::controller::Context;
use crate::controller::credentials::{CredentialValue, read_key};
use crate::controller::error::Error;
use crate::providers::azure_cloud;
use crate::providers::endpoint::Service;
use url::Url;

/// A positive duration from the spec, or InvalidSpec naming the field.
pub fn positive(field: &str, d: Option<&Duration>) -> Result<Option<std::time::Duration>, Error> {
    match d {
        Some(d) if d.get().is_zero() => Err(Error::InvalidSpec(format!(
            "{field} must be greater than zero"
        ))),
        Some(d) => Ok(Some(d.get())),
        None => Ok(None),
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
}

/// Validates Azure credentials for a resource in `namespace`: the one-of, the authority host
/// against the endpoint policy, pod identity against the allowlist, and reads the client
/// secret from the namespace.
pub async fn azure(
    ctx: &Context,
    namespace: &str,
    field: &str,
    creds: &AzureCredentials,
) -> Result<AzureAuth, Error> {
    let source = creds
        .source()
        .map_err(|m| Error::InvalidSpec(format!("{field}: {m}")))?;
    let cloud = azure_cloud::endpoints(creds.cloud);
    let authority = endpoint(
        ctx,
        Service::EntraId,
        &format!("{field}.authorityHost"),
        creds.authority_host_override(),
        cloud.authority_host,
    )?;
    let client_secret = match &source {
        AzureCredentialSource::WorkloadIdentity => {
            ctx.settings
                .pod_identity
                .check(namespace, &format!("{field}.workloadIdentity"))?;
            None
        }
        AzureCredentialSource::ClientSecret(r) => {
            Some(read_key(ctx.secrets.as_ref(), namespace, r).await?)
        }
    };
    Ok(AzureAuth {
        source,
        client_secret,
        authority,
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
    if source == AlibabaCredentialSource::Rrsa {
        ctx.settings.pod_identity.check(namespace, "alibaba.rrsa")?;
    }
    Ok(source)
}
