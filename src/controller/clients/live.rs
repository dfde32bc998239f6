//! The real [`ClientFactory`]: the endpoint policy, credentials from Secrets or the operator
//! pod's identity, the shared Entra and STS caches, and the provider clients of
//! [`crate::providers`] behind the seam's traits.
//!
//! Rules kept here, in one place:
//! - an endpoint (or the default of the resource's cloud or region) must pass the endpoint
//!   policy; a refused endpoint the spec named is `EndpointNotAllowed`;
//! - credentials come from Secrets in the resource's own namespace only;
//! - the operator pod's identity (Azure workload identity, Alibaba RRSA) is used only for
//!   namespaces the pod-identity allowlist names, and only towards official hosts;
//! - provider tokens (Entra access tokens, STS credentials) are cached per credential and shared
//!   by every resource; a 401 from the provider drops the cached Entra token.

use crate::api::common::{
    AccessKeyRef, AlibabaCredentialSource, AlibabaCredentials, AzureCredentialSource,
    AzureCredentials, SecretKeyRef,
};
use crate::api::workspace_view::{DataRobotAuthScheme, DataRobotSource, FabricSource};
use crate::api::{LivyTokenSpec, NotebookTokenRequestSpec};
use crate::controller::Clock;
use crate::controller::clients::{
    ClientFactory, DataRobotInventory, FabricInventory, LivyLocation, LivyTokens, NotebookTokens,
};
use crate::controller::credentials::{CredentialValue, PodIdentityPolicy, SecretSource, read_key};
use crate::controller::error::Error;
use crate::controller::validate;
use crate::providers::auth::acs3::AcsCredentials;
use crate::providers::auth::entra::{EntraCredential, EntraTokens, TokenRequest};
use crate::providers::auth::sts::{RrsaCredentials, RrsaError};
use crate::providers::azure_cloud::{self, FABRIC_ENDPOINT, FABRIC_SCOPE};
use crate::providers::azure_ml::{self, NotebookAccessToken, Workspace};
use crate::providers::datarobot::{self, AuthScheme, DataRobotClient, NotebookQuery, SharedRoles};
use crate::providers::emr_spark::{
    self, EmrSparkClient, LivyTokenInfo, TokenRequest as LivyRequest,
};
use crate::providers::endpoint::{EndpointPolicy, Service};
use crate::providers::error::{ProviderError, ProviderErrorKind};
use crate::providers::fabric::{self, FabricClient, RoleAssignments, TokenSource};
use crate::providers::http::HttpClient;
use crate::redact::SecretString;
use async_trait::async_trait;
use jiff::Timestamp;
use std::sync::Arc;
use url::Url;

/// The real client factory.
pub struct LiveClients {
    http: HttpClient,
    endpoints: EndpointPolicy,
    pod_identity: PodIdentityPolicy,
    secrets: Arc<dyn SecretSource>,
    entra: Arc<EntraTokens>,
    rrsa: Arc<RrsaCredentials>,
    clock: Arc<dyn Clock>,
}

impl LiveClients {
    /// A factory with the given policies, reading credentials Secrets from `secrets`, with a
    /// new Entra cache and the pod's RRSA configuration from the process environment.
    pub fn new(
        http: HttpClient,
        endpoints: EndpointPolicy,
        pod_identity: PodIdentityPolicy,
        secrets: Arc<dyn SecretSource>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            entra: Arc::new(EntraTokens::new(http.clone())),
            rrsa: Arc::new(RrsaCredentials::from_process_env()),
            http,
            endpoints,
            pod_identity,
            secrets,
            clock,
        }
    }

    /// Replaces the Entra token cache (tests give it another environment).
    pub fn with_entra(mut self, entra: Arc<EntraTokens>) -> Self {
        self.entra = entra;
        self
    }

    /// Replaces the RRSA credentials source (tests give it another environment).
    pub fn with_rrsa(mut self, rrsa: Arc<RrsaCredentials>) -> Self {
        self.rrsa = rrsa;
        self
    }

    /// The Entra token cache (for diagnostics and tests).
    pub fn entra(&self) -> &Arc<EntraTokens> {
        &self.entra
    }

    /// Checks an endpoint (or the default) against the policy for `service`. A refused
    /// endpoint the spec named is `EndpointNotAllowed`; a refused default (an operator
    /// misconfiguration) is `InvalidSpec` naming the field.
    pub fn endpoint(
        &self,
        service: Service,
        field: &str,
        given: Option<&str>,
        default: &str,
    ) -> Result<Url, Error> {
        let raw = given.filter(|s| !s.is_empty()).unwrap_or(default);
        self.endpoints.check_str(service, raw).map_err(|e| {
            if given.is_some() {
                Error::EndpointNotAllowed(e)
            } else {
                Error::InvalidSpec(format!("{field}: default endpoint refused: {e}"))
            }
        })
    }

    /// Validates Azure credentials for a resource in `namespace`: the one-of, the authority
    /// host against the endpoint policy, pod identity against the allowlist (and only towards
    /// an official Entra host), and reads the client secret from the namespace.
    pub async fn azure(
        &self,
        namespace: &str,
        field: &str,
        creds: &AzureCredentials,
    ) -> Result<AzureAuth, Error> {
        let source = creds
            .source()
            .map_err(|m| Error::InvalidSpec(format!("{field}: {m}")))?;
        validate::name(
            &format!("{field}.tenantId"),
            &creds.tenant_id,
            crate::api::names::is_tenant,
            "a Microsoft Entra tenant (a GUID, or a domain such as contoso.onmicrosoft.com)",
        )?;
        validate::name(
            &format!("{field}.clientId"),
            &creds.client_id,
            crate::api::names::is_guid,
            "an application (client) ID (a GUID)",
        )?;
        if let AzureCredentialSource::ClientSecret(r) = &source {
            validate::secret_key_ref(&format!("{field}.clientSecretRef"), r)?;
        }
        let cloud = azure_cloud::endpoints(creds.cloud);
        let authority = self.endpoint(
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
                self.pod_identity
                    .check(namespace, &format!("{field}.workloadIdentity"))?;
                EndpointPolicy::require_official(Service::EntraId, &authority)?;
                (None, EntraCredential::WorkloadIdentity)
            }
            AzureCredentialSource::ClientSecret(r) => {
                let value = read_key(self.secrets.as_ref(), namespace, r).await?;
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
            tenant: creds.tenant_id.clone(),
            client_id: creds.client_id.clone(),
            credential,
        })
    }

    /// Validates Alibaba credentials for a resource in `namespace` (one-of, pod identity
    /// allowlist, the AccessKey reference) and reads the AccessKey from the namespace.
    async fn alibaba(
        &self,
        namespace: &str,
        creds: &AlibabaCredentials,
    ) -> Result<AlibabaKeys, Error> {
        match creds.source().map_err(Error::InvalidSpec)? {
            AlibabaCredentialSource::Rrsa => {
                self.pod_identity.check(namespace, "alibaba.rrsa")?;
                Ok(AlibabaKeys::Rrsa)
            }
            AlibabaCredentialSource::AccessKey(r) => {
                validate::access_key_ref("spec.alibaba.accessKeyRef", &r)?;
                Ok(AlibabaKeys::AccessKey(
                    self.access_key(namespace, &r).await?,
                ))
            }
        }
    }

    async fn access_key(&self, namespace: &str, r: &AccessKeyRef) -> Result<AcsCredentials, Error> {
        let key = |k: &str| SecretKeyRef {
            name: r.name.clone(),
            key: k.to_owned(),
        };
        let source = self.secrets.as_ref();
        let id = read_key(source, namespace, &key(&r.access_key_id_key)).await?;
        let secret = read_key(source, namespace, &key(&r.access_key_secret_key)).await?;
        let token = match r.security_token_key() {
            Some(k) => Some(read_key(source, namespace, &key(k)).await?.value),
            None => None,
        };
        Ok(AcsCredentials {
            access_key_id: id.value.expose().to_owned(),
            access_key_secret: secret.value,
            security_token: token,
        })
    }
}

/// Validated Azure credentials: where they come from and the authority (login host) to use.
#[derive(Clone, Debug)]
pub struct AzureAuth {
    /// The credential source.
    pub source: AzureCredentialSource,
    /// The client secret, for [`AzureCredentialSource::ClientSecret`].
    pub client_secret: Option<CredentialValue>,
    /// The Entra authority host URL.
    pub authority: Url,
    /// Tenant ID or verified domain.
    pub tenant: String,
    /// Application (client) ID.
    pub client_id: String,
    /// The credential as the Entra client takes it (client secret with its version, or
    /// workload identity).
    pub credential: EntraCredential,
}

impl AzureAuth {
    /// The Entra token request for `scope` (e.g. the ARM or Fabric `.default` scope).
    pub fn token_request(&self, scope: &str) -> TokenRequest {
        TokenRequest {
            authority: self.authority.clone(),
            tenant: self.tenant.clone(),
            client_id: self.client_id.clone(),
            credential: self.credential.clone(),
            scope: scope.to_owned(),
        }
    }
}

#[async_trait]
impl ClientFactory for LiveClients {
    async fn notebook_tokens(
        &self,
        namespace: &str,
        spec: &NotebookTokenRequestSpec,
    ) -> Result<Arc<dyn NotebookTokens>, Error> {
        let cloud = azure_cloud::endpoints(spec.azure.cloud);
        let endpoint = self.endpoint(
            Service::AzureResourceManager,
            "spec.endpoint",
            spec.endpoint.as_deref(),
            cloud.resource_manager,
        )?;
        let auth = self.azure(namespace, "spec.azure", &spec.azure).await?;
        Ok(Arc::new(ArmNotebookTokens {
            http: self.http.clone(),
            entra: self.entra.clone(),
            clock: self.clock.clone(),
            request: auth.token_request(cloud.resource_manager_scope),
            workspace: Workspace {
                endpoint,
                subscription_id: spec.subscription_id.clone(),
                resource_group: spec.resource_group.clone(),
                workspace_name: spec.workspace_name.clone(),
                api_version: spec.api_version.clone(),
            },
        }))
    }

    async fn livy_tokens(
        &self,
        namespace: &str,
        spec: &LivyTokenSpec,
    ) -> Result<Arc<dyn LivyTokens>, Error> {
        let url = self.endpoint(
            Service::EmrServerlessSpark,
            "spec.endpoint",
            spec.endpoint.as_deref().filter(|e| !e.is_empty()),
            &emr_spark::default_endpoint(&spec.region_id),
        )?;
        let keys = self.alibaba(namespace, &spec.alibaba).await?;
        if matches!(keys, AlibabaKeys::Rrsa) {
            EndpointPolicy::require_official(Service::EmrServerlessSpark, &url)?;
        }
        Ok(Arc::new(EmrLivyTokens {
            http: self.http.clone(),
            endpoints: self.endpoints.clone(),
            rrsa: self.rrsa.clone(),
            keys,
            resolved: tokio::sync::OnceCell::new(),
        }))
    }

    async fn fabric_inventory(
        &self,
        namespace: &str,
        source: &FabricSource,
    ) -> Result<Arc<dyn FabricInventory>, Error> {
        let endpoint = self.endpoint(
            Service::Fabric,
            "spec.fabric.endpoint",
            source.endpoint.as_deref(),
            FABRIC_ENDPOINT,
        )?;
        let auth = self
            .azure(namespace, "spec.fabric.azure", &source.azure)
            .await?;
        let token = EntraFabricToken {
            entra: self.entra.clone(),
            request: auth.token_request(FABRIC_SCOPE),
            clock: self.clock.clone(),
        };
        Ok(Arc::new(FabricClient::new(
            self.http.clone(),
            self.endpoints.clone(),
            endpoint,
            Arc::new(token),
        )))
    }

    async fn datarobot_inventory(
        &self,
        namespace: &str,
        source: &DataRobotSource,
    ) -> Result<Arc<dyn DataRobotInventory>, Error> {
        validate::secret_key_ref("spec.dataRobot.apiTokenRef", &source.api_token_ref)?;
        let endpoint = self.endpoint(
            Service::DataRobot,
            "spec.dataRobot.endpoint",
            source.endpoint.as_deref(),
            datarobot::DEFAULT_ENDPOINT,
        )?;
        let token = read_key(self.secrets.as_ref(), namespace, &source.api_token_ref).await?;
        let scheme = match source.auth_scheme {
            DataRobotAuthScheme::Token => AuthScheme::Token,
            DataRobotAuthScheme::Bearer => AuthScheme::Bearer,
        };
        Ok(Arc::new(DataRobotClient::new(
            self.http.clone(),
            self.endpoints.clone(),
            endpoint,
            &token.value,
            scheme,
        )?))
    }
}

/// `listNotebookAccessToken` with an ARM token from the shared Entra cache.
struct ArmNotebookTokens {
    http: HttpClient,
    entra: Arc<EntraTokens>,
    clock: Arc<dyn Clock>,
    request: TokenRequest,
    workspace: Workspace,
}

#[async_trait]
impl NotebookTokens for ArmNotebookTokens {
    /// A 401 from ARM drops the cached Entra token, so the retry gets a fresh one.
    async fn notebook_access_token(&self) -> Result<NotebookAccessToken, Error> {
        let bearer = self.entra.token(&self.request, self.clock.now()).await?;
        azure_ml::list_notebook_access_token(&self.http, &bearer.token, &self.workspace)
            .await
            .map_err(|e| {
                if e.kind == ProviderErrorKind::AuthenticationFailed {
                    self.entra.invalidate(&self.request);
                }
                e.into()
            })
    }
}

/// Where a LivyToken's signing credentials come from, once validated.
#[derive(Clone, Debug)]
enum AlibabaKeys {
    /// An AccessKey read from the resource's namespace.
    AccessKey(AcsCredentials),
    /// The operator pod's RRSA identity (exchanged with STS when first needed).
    Rrsa,
}

/// The Livy compute token operations, signed with an AccessKey or the pod's RRSA credentials.
struct EmrLivyTokens {
    http: HttpClient,
    endpoints: EndpointPolicy,
    rrsa: Arc<RrsaCredentials>,
    keys: AlibabaKeys,
    /// The credentials, resolved at the first call (RRSA: one STS exchange, cached and shared).
    resolved: tokio::sync::OnceCell<AcsCredentials>,
}

impl EmrLivyTokens {
    async fn credentials(&self) -> Result<&AcsCredentials, Error> {
        self.resolved
            .get_or_try_init(|| async {
                match &self.keys {
                    AlibabaKeys::AccessKey(c) => Ok(c.clone()),
                    AlibabaKeys::Rrsa => self
                        .rrsa
                        .credentials(&self.http, Timestamp::now())
                        .await
                        .map_err(|e| match e {
                            RrsaError::NotConfigured(m) => Error::CredentialsNotFound(m),
                            RrsaError::Provider(p) => Error::Provider(p),
                        }),
                }
            })
            .await
    }

    /// A client for the endpoint of `at`, checked against the endpoint policy now (the policy
    /// may have changed since a token was recorded); the pod's own credentials go to official
    /// hosts only.
    async fn client(&self, at: &LivyLocation) -> Result<EmrSparkClient, Error> {
        let credentials = self.credentials().await?.clone();
        let raw = at.endpoint.as_deref().filter(|e| !e.is_empty());
        let default = emr_spark::default_endpoint(&at.compute.region_id);
        let url = self
            .endpoints
            .check_str(Service::EmrServerlessSpark, raw.unwrap_or(&default))
            .map_err(|e| match raw {
                Some(_) => Error::EndpointNotAllowed(e),
                None => Error::InvalidSpec(format!("endpoint: default endpoint refused: {e}")),
            })?;
        if matches!(self.keys, AlibabaKeys::Rrsa) {
            EndpointPolicy::require_official(Service::EmrServerlessSpark, &url)?;
        }
        Ok(EmrSparkClient::new(self.http.clone(), url, credentials))
    }
}

#[async_trait]
impl LivyTokens for EmrLivyTokens {
    async fn get_token(&self, at: &LivyLocation, token_id: &str) -> Result<LivyTokenInfo, Error> {
        Ok(self
            .client(at)
            .await?
            .get_token(&at.compute, token_id)
            .await?)
    }

    async fn list_tokens(&self, at: &LivyLocation) -> Result<Vec<LivyTokenInfo>, Error> {
        Ok(self.client(at).await?.list_tokens(&at.compute).await?)
    }

    async fn create_token(
        &self,
        at: &LivyLocation,
        request: &LivyRequest,
    ) -> Result<String, Error> {
        Ok(self
            .client(at)
            .await?
            .create_token(&at.compute, request)
            .await?)
    }

    async fn delete_token(&self, at: &LivyLocation, token_id: &str) -> Result<(), Error> {
        Ok(self
            .client(at)
            .await?
            .delete_token(&at.compute, token_id)
            .await?)
    }
}

/// Fabric bearer tokens from the shared Microsoft Entra ID cache (scope [`FABRIC_SCOPE`]),
/// for one resource's credentials.
struct EntraFabricToken {
    entra: Arc<EntraTokens>,
    request: TokenRequest,
    clock: Arc<dyn Clock>,
}

#[async_trait]
impl TokenSource for EntraFabricToken {
    async fn bearer_token(&self) -> Result<SecretString, ProviderError> {
        Ok(self
            .entra
            .token(&self.request, self.clock.now())
            .await?
            .token)
    }

    fn rejected(&self) {
        self.entra.invalidate(&self.request);
    }
}

#[async_trait]
impl FabricInventory for FabricClient {
    async fn list_workspaces(&self, roles: &[&str]) -> Result<Vec<fabric::Workspace>, Error> {
        Ok(FabricClient::list_workspaces(self, roles).await?)
    }

    async fn role_assignments_of(
        &self,
        workspace_ids: &[String],
    ) -> Result<Vec<RoleAssignments>, Error> {
        Ok(FabricClient::role_assignments_of(self, workspace_ids).await?)
    }
}

#[async_trait]
impl DataRobotInventory for DataRobotClient {
    async fn discover(&self, query: &NotebookQuery) -> Result<Vec<String>, Error> {
        Ok(DataRobotClient::discover(self, query).await?)
    }

    async fn shared_roles(&self, notebook_ids: &[String]) -> Result<SharedRoles, Error> {
        Ok(DataRobotClient::shared_roles(self, notebook_ids).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::{AzureCloud, SecretKeyRef};
    use crate::controller::SystemClock;
    use crate::controller::credentials::StaticSecretSource;
    use crate::controller::error::Reason;
    use crate::metrics::Metrics;
    use crate::providers::http::HttpOptions;
    use k8s_openapi::api::core::v1::Secret;

    fn clients(allow: &[&str], pod_identity: &[&str], secrets: StaticSecretSource) -> LiveClients {
        let metrics = Arc::new(Metrics::new());
        let http = HttpClient::new(HttpOptions::default(), metrics).unwrap();
        LiveClients::new(
            http,
            EndpointPolicy::new(allow.iter().map(|a| a.parse().unwrap()).collect()),
            PodIdentityPolicy::new(pod_identity.iter().map(|s| s.to_string())),
            Arc::new(secrets),
            Arc::new(SystemClock),
        )
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
        let clients = clients(&[], &[], secrets);
        let c = creds(Some("sp"), None);
        let auth = clients.azure("team-a", "spec.azure", &c).await.unwrap();
        assert_eq!(auth.authority.as_str(), "https://login.microsoftonline.us/");
        let req = auth.token_request("https://management.usgovcloudapi.net/.default");
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
        let err = clients(&[], &[], Default::default())
            .azure("team-a", "spec.azure", &c)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Reason::PodIdentityNotAllowed);

        let allowed = clients(&["127.0.0.1"], &["team-a"], Default::default());
        let auth = allowed.azure("team-a", "spec.azure", &c).await.unwrap();
        assert!(matches!(auth.credential, EntraCredential::WorkloadIdentity));

        // --allow-endpoint lets a client secret go to a mock, never the operator's identity.
        let mock = creds(None, Some("http://127.0.0.1:8080"));
        let err = allowed
            .azure("team-a", "spec.azure", &mock)
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Reason::EndpointNotAllowed);
        assert!(err.to_string().contains("own identity"), "{err}");
    }
}
