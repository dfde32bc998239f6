//! The real [`ClientFactory`]: the endpoint policy, credentials from Secrets or the operator
//! pod's identity, the shared Entra and STS caches, and the provider clients of
//! [`crate::providers`] behind the seam's traits.
//!
//! Rules kept here, in one place:
//! - an endpoint (or the default of the resource's cloud or region) must pass the endpoint
//!   policy; a refused endpoint the spec named is `EndpointNotAllowed`;
//! - inline credentials come from Secrets in the resource's own namespace only;
//! - a `credentialRef` names a ClusterCredential: it must exist, allow the resource's namespace
//!   (by name or by the namespace's labels; else `CredentialNotAllowed`, checked before
//!   anything else about it) and hold the resource's provider's credentials (else
//!   `InvalidSpec`); its Secrets are read from the credential namespace only;
//! - the operator pod's identity (Azure workload identity, Alibaba RRSA) is used only for
//!   namespaces the pod-identity allowlist names, or that a ClusterCredential holding it
//!   allows, and only towards official hosts;
//! - provider tokens (Entra access tokens, STS credentials) are cached per credential and shared
//!   by every resource, in every namespace; a 401 from the provider drops the cached Entra
//!   token, and so does a change of a ClusterCredential or of its client secret;
//! - each provider client's calls count against the rate-limit bucket of the credential it
//!   was built for, named by what the provider throttles: the subscription and client for ARM,
//!   the client for Fabric, the AccessKey ID or the RRSA role for Alibaba, a fingerprint of the
//!   API key for DataRobot (the Entra and STS caches key their own calls by client and role).

use crate::api::cluster_credential::{ClusterCredential, CredentialProvider, ProviderCredentials};
use crate::api::common::{
    AccessKeyRef, AlibabaCredentialSource, AlibabaCredentials, AzureCredentialSource,
    AzureCredentials, CredentialChoice, CredentialRef, SecretKeyRef,
};
use crate::api::workspace_view::{DataRobotAuthScheme, DataRobotSource, FabricSource};
use crate::api::{LivyTokenSpec, NotebookTokenRequestSpec};
use crate::controller::Clock;
use crate::controller::clients::{
    ClientFactory, DataRobotInventory, FabricInventory, LivyLocation, LivyTokens, NotebookTokens,
};
use crate::controller::cluster_credential::directory::CredentialDirectory;
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
use crate::providers::ratelimit::RateKey;
use crate::redact::SecretString;
use async_trait::async_trait;
use jiff::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use url::Url;

/// The real client factory.
pub struct LiveClients {
    http: HttpClient,
    endpoints: EndpointPolicy,
    pod_identity: PodIdentityPolicy,
    secrets: Arc<dyn SecretSource>,
    credentials: Arc<CredentialDirectory>,
    entra: Arc<EntraTokens>,
    rrsa: Arc<RrsaCredentials>,
    clock: Arc<dyn Clock>,
    /// The Entra token requests built from each ClusterCredential (client secrets blanked:
    /// only their versions, which the cache keys on), to drop its cached tokens when it or its
    /// Secret changes.
    cluster_requests: Mutex<HashMap<String, Vec<TokenRequest>>>,
}

/// Where a resource's credentials are defined.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Origin {
    /// Inline in the resource: Secrets in its namespace; pod identity by the allowlist.
    Resource {
        /// The resource's namespace.
        namespace: String,
    },
    /// In a ClusterCredential that allows the resource's namespace: Secrets in the credential
    /// namespace; pod identity granted by the ClusterCredential.
    Cluster {
        /// The ClusterCredential's name.
        name: String,
    },
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
            credentials: Arc::new(CredentialDirectory::fixed(
                "",
                [],
                BTreeMap::new(),
                secrets.clone(),
            )),
            http,
            endpoints,
            pod_identity,
            secrets,
            clock,
            cluster_requests: Mutex::default(),
        }
    }

    /// Where ClusterCredentials, Namespace labels and credential Secrets are looked up
    /// (default: nowhere; every credentialRef is `CredentialsNotFound`).
    pub fn with_credentials(mut self, credentials: Arc<CredentialDirectory>) -> Self {
        self.credentials = credentials;
        self
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
        let origin = Origin::Resource {
            namespace: namespace.to_owned(),
        };
        self.azure_in(&origin, field, creds).await
    }

    /// [`Self::azure`] for credentials defined at `origin`.
    async fn azure_in(
        &self,
        origin: &Origin,
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
                if let Origin::Resource { namespace } = origin {
                    self.pod_identity
                        .check(namespace, &format!("{field}.workloadIdentity"))?;
                }
                EndpointPolicy::require_official(Service::EntraId, &authority)?;
                (None, EntraCredential::WorkloadIdentity)
            }
            AzureCredentialSource::ClientSecret(r) => {
                let value = self.read(origin, r).await?;
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

    /// Validates Alibaba credentials defined at `origin` (one-of, pod identity allowlist for
    /// inline credentials, the AccessKey reference) and reads the AccessKey.
    async fn alibaba(
        &self,
        origin: &Origin,
        field: &str,
        creds: &AlibabaCredentials,
    ) -> Result<AlibabaKeys, Error> {
        match creds.source().map_err(|m| match origin {
            Origin::Resource { .. } => Error::InvalidSpec(m),
            Origin::Cluster { .. } => Error::InvalidSpec(format!("{field}: {m}")),
        })? {
            AlibabaCredentialSource::Rrsa => {
                if let Origin::Resource { namespace } = origin {
                    self.pod_identity.check(namespace, "alibaba.rrsa")?;
                }
                Ok(AlibabaKeys::Rrsa)
            }
            AlibabaCredentialSource::AccessKey(r) => {
                validate::access_key_ref(&format!("{field}.accessKeyRef"), &r)?;
                Ok(AlibabaKeys::AccessKey(self.access_key(origin, &r).await?))
            }
        }
    }

    async fn access_key(&self, origin: &Origin, r: &AccessKeyRef) -> Result<AcsCredentials, Error> {
        let key = |k: &str| SecretKeyRef {
            name: r.name.clone(),
            key: k.to_owned(),
        };
        let id = self.read(origin, &key(&r.access_key_id_key)).await?;
        let secret = self.read(origin, &key(&r.access_key_secret_key)).await?;
        let token = match r.security_token_key() {
            Some(k) => Some(self.read(origin, &key(k)).await?.value),
            None => None,
        };
        Ok(AcsCredentials {
            access_key_id: id.value.expose().to_owned(),
            access_key_secret: secret.value,
            security_token: token,
        })
    }

    /// Reads one Secret key where credentials defined at `origin` keep their Secrets: the
    /// resource's namespace, or the credential namespace (through the directory, which serves
    /// no other namespace).
    async fn read(&self, origin: &Origin, r: &SecretKeyRef) -> Result<CredentialValue, Error> {
        match origin {
            Origin::Resource { namespace } => read_key(self.secrets.as_ref(), namespace, r).await,
            Origin::Cluster { name } => {
                let ns = self.credentials.credential_namespace();
                read_key(self.credentials.as_ref(), ns, r)
                    .await
                    .map_err(|e| match e {
                        Error::CredentialsNotFound(m) => Error::CredentialsNotFound(format!(
                            "ClusterCredential {name}: {m} (the platform team keeps it; see \
                             the ClusterCredential's status)"
                        )),
                        other => other,
                    })
            }
        }
    }

    /// The ClusterCredential a resource in `namespace` names, with its `want` provider's
    /// credentials: it must exist (else `CredentialsNotFound`), allow `namespace` by name or by
    /// the namespace's labels (else `CredentialNotAllowed`; checked before anything else
    /// about it is told) and hold credentials of `want` (else `InvalidSpec`).
    async fn cluster_credential(
        &self,
        namespace: &str,
        field: &str,
        r: &CredentialRef,
        want: CredentialProvider,
        kind: &str,
    ) -> Result<ClusterCredential, Error> {
        validate::name(
            &format!("{field}.name"),
            &r.name,
            crate::api::names::is_dns_subdomain,
            "a ClusterCredential name (lower-case letters, digits, '-' and '.')",
        )?;
        let Some(credential) = self.credentials.get(&r.name).await? else {
            return Err(Error::CredentialsNotFound(format!(
                "ClusterCredential {} not found",
                r.name
            )));
        };
        let allowed = &credential.spec.allowed_namespaces;
        let ok = allowed.allows_by_name(namespace)
            || (allowed.selector.is_some() && {
                let labels = self.credentials.namespace_labels(namespace).await?;
                allowed.allows(namespace, labels.as_ref())
            });
        if !ok {
            return Err(Error::CredentialNotAllowed(format!(
                "ClusterCredential {} does not allow namespace {namespace}; ask the platform \
                 team to add it to the ClusterCredential's allowedNamespaces",
                r.name
            )));
        }
        let held = credential.spec.credentials().map_err(|m| {
            Error::CredentialsNotFound(format!("ClusterCredential {} is not usable: {m}", r.name))
        })?;
        if held.provider() != want {
            return Err(Error::InvalidSpec(format!(
                "{field}: ClusterCredential {} holds {} credentials; a {kind} needs {}",
                r.name,
                held.provider().as_str(),
                want.as_str()
            )));
        }
        Ok(credential)
    }

    /// The Azure credentials a resource in `namespace` uses, and where they are defined.
    async fn azure_choice(
        &self,
        namespace: &str,
        choice: CredentialChoice<'_, AzureCredentials>,
        inline_field: &str,
        ref_field: &str,
        kind: &str,
    ) -> Result<(AzureCredentials, Origin, String), Error> {
        match choice {
            CredentialChoice::Inline(c) => Ok((
                c.clone(),
                Origin::Resource {
                    namespace: namespace.to_owned(),
                },
                inline_field.to_owned(),
            )),
            CredentialChoice::Cluster(r) => {
                let cc = self
                    .cluster_credential(namespace, ref_field, r, CredentialProvider::Azure, kind)
                    .await?;
                match cc.spec.credentials() {
                    Ok(ProviderCredentials::Azure(a)) => Ok((
                        a.clone(),
                        Origin::Cluster {
                            name: r.name.clone(),
                        },
                        format!("ClusterCredential {} spec.azure", r.name),
                    )),
                    _ => Err(Error::InvalidSpec(format!(
                        "{ref_field}: ClusterCredential {} holds no Azure credentials",
                        r.name
                    ))),
                }
            }
        }
    }

    /// Remembers an Entra token request built from ClusterCredential `origin`; cached tokens
    /// of its earlier client secrets (another version) are dropped at once.
    fn note_cluster_request(&self, origin: &Origin, request: &TokenRequest) {
        let Origin::Cluster { name } = origin else {
            return;
        };
        let blank = TokenRequest {
            credential: match &request.credential {
                EntraCredential::ClientSecret { version, .. } => EntraCredential::ClientSecret {
                    secret: SecretString::new(String::new()),
                    version: version.clone(),
                },
                EntraCredential::WorkloadIdentity => EntraCredential::WorkloadIdentity,
            },
            ..request.clone()
        };
        let key = |r: &TokenRequest| {
            (
                r.authority.to_string(),
                r.tenant.clone(),
                r.client_id.clone(),
                r.scope.clone(),
                credential_version(&r.credential),
            )
        };
        let mut all = self
            .cluster_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let known = all.entry(name.clone()).or_default();
        let version = credential_version(&blank.credential);
        known.retain(|r| {
            let current = credential_version(&r.credential) == version;
            if !current {
                self.entra.invalidate(r);
            }
            current
        });
        if !known.iter().any(|r| key(r) == key(&blank)) {
            known.push(blank);
        }
    }
}

/// The version of an Entra credential (a client secret's content version), for comparing
/// requests.
fn credential_version(c: &EntraCredential) -> Option<String> {
    match c {
        EntraCredential::ClientSecret { version, .. } => Some(version.clone()),
        EntraCredential::WorkloadIdentity => None,
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
        let choice = spec.credentials().map_err(Error::InvalidSpec)?;
        let (azure, origin, field) = self
            .azure_choice(
                namespace,
                choice,
                "spec.azure",
                "spec.credentialRef",
                "NotebookTokenRequest",
            )
            .await?;
        let cloud = azure_cloud::endpoints(azure.cloud);
        let endpoint = self.endpoint(
            Service::AzureResourceManager,
            "spec.endpoint",
            spec.endpoint.as_deref(),
            cloud.resource_manager,
        )?;
        let auth = self.azure_in(&origin, &field, &azure).await?;
        let request = auth.token_request(cloud.resource_manager_scope);
        self.note_cluster_request(&origin, &request);
        Ok(Arc::new(ArmNotebookTokens {
            // ARM throttles per subscription and principal.
            http: self
                .http
                .for_credential(RateKey::arm(&spec.subscription_id, &azure.client_id)),
            entra: self.entra.clone(),
            clock: self.clock.clone(),
            request,
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
        let (alibaba, origin, field) = match spec.credentials().map_err(Error::InvalidSpec)? {
            CredentialChoice::Inline(a) => (
                a.clone(),
                Origin::Resource {
                    namespace: namespace.to_owned(),
                },
                "spec.alibaba".to_owned(),
            ),
            CredentialChoice::Cluster(r) => {
                let cc = self
                    .cluster_credential(
                        namespace,
                        "spec.credentialRef",
                        r,
                        CredentialProvider::Alibaba,
                        "LivyToken",
                    )
                    .await?;
                let Some(a) = cc.spec.alibaba else {
                    return Err(Error::InvalidSpec(format!(
                        "spec.credentialRef: ClusterCredential {} holds no Alibaba credentials",
                        r.name
                    )));
                };
                (
                    a,
                    Origin::Cluster {
                        name: r.name.clone(),
                    },
                    format!("ClusterCredential {} spec.alibaba", r.name),
                )
            }
        };
        let keys = self.alibaba(&origin, &field, &alibaba).await?;
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
        let choice = source.credentials().map_err(Error::InvalidSpec)?;
        let (azure, origin, field) = self
            .azure_choice(
                namespace,
                choice,
                "spec.fabric.azure",
                "spec.fabric.credentialRef",
                "Fabric WorkspaceView",
            )
            .await?;
        let endpoint = self.endpoint(
            Service::Fabric,
            "spec.fabric.endpoint",
            source.endpoint.as_deref(),
            FABRIC_ENDPOINT,
        )?;
        let auth = self.azure_in(&origin, &field, &azure).await?;
        let request = auth.token_request(FABRIC_SCOPE);
        self.note_cluster_request(&origin, &request);
        let token = EntraFabricToken {
            entra: self.entra.clone(),
            request,
            clock: self.clock.clone(),
        };
        Ok(Arc::new(FabricClient::new(
            // Fabric throttles per principal.
            self.http
                .for_credential(RateKey::entra_client(&azure.client_id)),
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
        let (api_token_ref, scheme, origin, field) =
            match source.credentials().map_err(Error::InvalidSpec)? {
                CredentialChoice::Inline(r) => (
                    r.clone(),
                    source.auth_scheme.unwrap_or_default(),
                    Origin::Resource {
                        namespace: namespace.to_owned(),
                    },
                    "spec.dataRobot.apiTokenRef".to_owned(),
                ),
                CredentialChoice::Cluster(r) => {
                    let cc = self
                        .cluster_credential(
                            namespace,
                            "spec.dataRobot.credentialRef",
                            r,
                            CredentialProvider::DataRobot,
                            "DataRobot WorkspaceView",
                        )
                        .await?;
                    let Some(d) = cc.spec.data_robot else {
                        return Err(Error::InvalidSpec(format!(
                            "spec.dataRobot.credentialRef: ClusterCredential {} holds no \
                             DataRobot credentials",
                            r.name
                        )));
                    };
                    (
                        d.api_token_ref,
                        d.auth_scheme,
                        Origin::Cluster {
                            name: r.name.clone(),
                        },
                        format!("ClusterCredential {} spec.dataRobot.apiTokenRef", r.name),
                    )
                }
            };
        validate::secret_key_ref(&field, &api_token_ref)?;
        let endpoint = self.endpoint(
            Service::DataRobot,
            "spec.dataRobot.endpoint",
            source.endpoint.as_deref(),
            datarobot::DEFAULT_ENDPOINT,
        )?;
        let token = self.read(&origin, &api_token_ref).await?;
        let scheme = match scheme {
            DataRobotAuthScheme::Token => AuthScheme::Token,
            DataRobotAuthScheme::Bearer => AuthScheme::Bearer,
        };
        Ok(Arc::new(DataRobotClient::new(
            // DataRobot throttles per API key, known here by a fingerprint only.
            self.http
                .for_credential(RateKey::secret_fingerprint(&token.value)),
            self.endpoints.clone(),
            endpoint,
            &token.value,
            scheme,
        )?))
    }

    fn forget_cluster_credential(&self, name: &str) {
        let requests = self
            .cluster_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .unwrap_or_default();
        for r in &requests {
            self.entra.invalidate(r);
        }
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
        // Alibaba throttles per account: the AccessKey, or the role RRSA assumes (whose
        // temporary AccessKey IDs change with every STS exchange).
        let rate_key = match &self.keys {
            AlibabaKeys::AccessKey(c) => Some(RateKey::access_key_id(&c.access_key_id)),
            AlibabaKeys::Rrsa => self.rrsa.rate_key(),
        };
        let http = match rate_key {
            Some(key) => self.http.for_credential(key),
            None => self.http.clone(),
        };
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
        Ok(EmrSparkClient::new(http, url, credentials))
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

    /// A factory with these ClusterCredentials (their Secrets in namespace "wao") and
    /// namespaces' labels.
    fn with_cluster_credentials(
        credentials: Vec<serde_json::Value>,
        namespaces: &[(&str, &[(&str, &str)])],
    ) -> LiveClients {
        let mut secrets = StaticSecretSource::default();
        let s: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ak", "namespace": "wao"},
            "stringData": {"accessKeyId": "id", "accessKeySecret": "platform-ak"}
        }))
        .unwrap();
        secrets.insert(s, "wao");
        let secrets = Arc::new(secrets);
        let credentials = credentials
            .into_iter()
            .map(|spec| {
                serde_json::from_value::<ClusterCredential>(serde_json::json!({
                    "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "ClusterCredential",
                    "metadata": {"name": spec["name"]}, "spec": spec["spec"]
                }))
                .unwrap()
            })
            .collect::<Vec<_>>();
        let labels = namespaces
            .iter()
            .map(|(ns, l)| {
                let l = l
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                (ns.to_string(), l)
            })
            .collect();
        let directory = CredentialDirectory::fixed("wao", credentials, labels, secrets.clone());
        let metrics = Arc::new(Metrics::new());
        LiveClients::new(
            HttpClient::new(HttpOptions::default(), metrics).unwrap(),
            EndpointPolicy::default(),
            PodIdentityPolicy::default(),
            Arc::new(StaticSecretSource::default()),
            Arc::new(SystemClock),
        )
        .with_credentials(Arc::new(directory))
    }

    #[tokio::test]
    async fn a_cluster_credential_must_allow_the_namespace_and_hold_the_provider() {
        let clients = with_cluster_credentials(
            vec![serde_json::json!({"name": "emr", "spec": {
                "alibaba": {"accessKeyRef": {"name": "ak"}},
                "allowedNamespaces": {"names": ["team-a"],
                                      "selector": {"matchLabels": {"emr": "yes"}}}}})],
            &[("team-b", &[("emr", "yes")]), ("team-c", &[("emr", "no")])],
        );
        let r = CredentialRef { name: "emr".into() };
        let get = |ns: &'static str, want: CredentialProvider| {
            let clients = &clients;
            let r = &r;
            async move {
                clients
                    .cluster_credential(ns, "spec.credentialRef", r, want, "LivyToken")
                    .await
            }
        };
        // Allowed by name, by label; the provider matches.
        assert!(get("team-a", CredentialProvider::Alibaba).await.is_ok());
        assert!(get("team-b", CredentialProvider::Alibaba).await.is_ok());
        // Allowed but of another provider: InvalidSpec naming both.
        let err = get("team-a", CredentialProvider::Azure).await.unwrap_err();
        assert_eq!(err.reason(), Reason::InvalidSpec);
        assert!(
            err.to_string().contains(
                "ClusterCredential emr holds Alibaba credentials; a LivyToken needs Azure"
            ),
            "{err}"
        );
        // Not allowed: CredentialNotAllowed whatever the provider, which isn't told.
        for want in [CredentialProvider::Alibaba, CredentialProvider::Azure] {
            for ns in ["team-c", "team-d"] {
                let err = get(ns, want).await.unwrap_err();
                assert_eq!(err.reason(), Reason::CredentialNotAllowed, "{ns}");
                assert!(!err.to_string().contains("Alibaba"), "{err}");
            }
        }
        // Unknown: CredentialsNotFound.
        let unknown = CredentialRef {
            name: "nope".into(),
        };
        let err = clients
            .cluster_credential(
                "team-a",
                "spec.credentialRef",
                &unknown,
                CredentialProvider::Alibaba,
                "LivyToken",
            )
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Reason::CredentialsNotFound);
        assert_eq!(err.to_string(), "ClusterCredential nope not found");
    }

    /// A factory whose HTTP client allows each (host, credential) one call at once (then 20
    /// per second), with Secrets "sp" (an Azure client secret) and "dr-a", "dr-b" (DataRobot
    /// API keys) in team-a, and `server` allowed.
    fn rate_limited_clients(server: &httpmock::MockServer) -> (LiveClients, Arc<Metrics>) {
        let mut secrets = StaticSecretSource::default();
        for (name, data) in [
            ("sp", serde_json::json!({"clientSecret": "s3cret"})),
            ("dr-a", serde_json::json!({"apiToken": "dr-key-a"})),
            ("dr-b", serde_json::json!({"apiToken": "dr-key-b"})),
        ] {
            let s: Secret = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "team-a"}, "stringData": data
            }))
            .unwrap();
            secrets.insert(s, "team-a");
        }
        let metrics = Arc::new(Metrics::new());
        let http = HttpClient::new(
            HttpOptions {
                rate_limits: crate::providers::ratelimit::RateLimits {
                    default: Some("20:1".parse().unwrap()),
                    hosts: vec![],
                },
                ..HttpOptions::default()
            },
            metrics.clone(),
        )
        .unwrap();
        let allow = server.address().to_string();
        let clients = LiveClients::new(
            http,
            EndpointPolicy::new(vec![allow.parse().unwrap()]),
            PodIdentityPolicy::default(),
            Arc::new(secrets),
            Arc::new(SystemClock),
        );
        (clients, metrics)
    }

    fn rate_limited(metrics: &Metrics, provider: &str) -> u64 {
        let prefix =
            format!("workspace_access_provider_rate_limited_total{{provider=\"{provider}\"}} ");
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|n| n.parse().unwrap()))
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn arm_calls_count_against_their_subscription_and_principal() {
        use httpmock::prelude::*;
        let server = MockServer::start_async().await;
        server
            .mock_async(|when, then| {
                when.method(POST).path_suffix("/oauth2/v2.0/token");
                then.status(200).json_body(serde_json::json!({
                    "access_token": "entra", "expires_in": 3600, "token_type": "Bearer"}));
            })
            .await;
        let arm = server
            .mock_async(|when, then| {
                when.method(POST).path_suffix("/listNotebookAccessToken");
                then.status(200)
                    .json_body(serde_json::json!({"accessToken": "nb", "expiresIn": 3600}));
            })
            .await;
        let (clients, metrics) = rate_limited_clients(&server);
        let spec = |subscription: &str| -> NotebookTokenRequestSpec {
            serde_json::from_value(serde_json::json!({
                "subscriptionId": subscription, "resourceGroup": "rg", "workspaceName": "ws",
                "endpoint": server.base_url(),
                "azure": {"tenantId": "contoso.onmicrosoft.com",
                          "clientId": "11111111-1111-1111-1111-111111111111",
                          "clientSecretRef": {"name": "sp", "key": "clientSecret"},
                          "authorityHost": server.base_url()}
            }))
            .unwrap()
        };
        let a = "00000000-0000-0000-0000-00000000000a";
        let b = "00000000-0000-0000-0000-00000000000b";
        for sub in [a, b] {
            let tokens = clients.notebook_tokens("team-a", &spec(sub)).await.unwrap();
            tokens.notebook_access_token().await.unwrap();
        }
        assert_eq!(
            rate_limited(&metrics, "azure_ml"),
            0,
            "two subscriptions: two buckets"
        );
        // One principal in a subscription, again: its one slot is spent.
        let tokens = clients.notebook_tokens("team-a", &spec(a)).await.unwrap();
        tokens.notebook_access_token().await.unwrap();
        assert_eq!(rate_limited(&metrics, "azure_ml"), 1);
        assert_eq!(arm.calls_async().await, 3);
        // The one Entra call (the token is cached) had the client's own bucket.
        assert_eq!(rate_limited(&metrics, "entra"), 0);
    }

    #[tokio::test]
    async fn datarobot_calls_count_against_their_api_key() {
        use httpmock::prelude::*;
        let server = MockServer::start_async().await;
        let roles = server
            .mock_async(|when, then| {
                when.method(GET).path("/api/v2/notebooks/sharedRoles/");
                then.status(200).json_body(serde_json::json!({"data": [
                    {"notebookId": "nb-1", "roles": []}]}));
            })
            .await;
        let (clients, metrics) = rate_limited_clients(&server);
        let source = |secret: &str| -> DataRobotSource {
            serde_json::from_value(serde_json::json!({
                "endpoint": format!("{}/api/v2", server.base_url()),
                "notebookIds": ["nb-1"],
                "apiTokenRef": {"name": secret, "key": "apiToken"}
            }))
            .unwrap()
        };
        let ids = vec!["nb-1".to_owned()];
        for secret in ["dr-a", "dr-b"] {
            let inventory = clients
                .datarobot_inventory("team-a", &source(secret))
                .await
                .unwrap();
            inventory.shared_roles(&ids).await.unwrap();
        }
        assert_eq!(
            rate_limited(&metrics, "datarobot"),
            0,
            "two keys: two buckets"
        );
        let inventory = clients
            .datarobot_inventory("team-a", &source("dr-a"))
            .await
            .unwrap();
        inventory.shared_roles(&ids).await.unwrap();
        assert_eq!(rate_limited(&metrics, "datarobot"), 1, "one key, again");
        assert_eq!(roles.calls_async().await, 3);
        let text = metrics.encode();
        assert!(!text.contains("dr-key"), "{text}");
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
