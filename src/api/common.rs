//! Pieces shared by the kinds: credential references (inline, or to a ClusterCredential), the
//! Secret template, conditions and the common part of every status.

use crate::api::duration::Duration;
use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API group of every kind.
pub const GROUP: &str = "workspaceaccess.io";
/// API version of every kind.
pub const VERSION: &str = "v1alpha1";
/// kubectl category shared by the three kinds (`kubectl get workspaceaccess`).
pub const CATEGORY: &str = "workspaceaccess";
/// Field manager for every write the operator makes.
pub const FIELD_MANAGER: &str = "workspace-access-operator";
/// Label key and value on everything the operator creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "workspace-access-operator";
/// Label selector matching everything the operator creates.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=workspace-access-operator";
/// Annotation with the token's expiry (RFC 3339) on Secrets the operator writes.
pub const EXPIRES_AT_ANNOTATION: &str = "workspaceaccess.io/expires-at";
/// Annotation with the time the operator plans to renew the token (RFC 3339).
pub const RENEW_AT_ANNOTATION: &str = "workspaceaccess.io/renew-at";
/// Annotation with the resource generation the Secret's token was obtained for.
pub const GENERATION_ANNOTATION: &str = "workspaceaccess.io/generation";
/// Annotation with the fingerprint of the data the operator wrote into a Secret (per key, a
/// salted hash; never a value): which keys someone else changed, and whether a write changes
/// the data.
pub const DATA_DIGEST_ANNOTATION: &str = "workspaceaccess.io/data-digest";
/// Annotation on a Secret whose data changed, until the rollout restart of the resource's
/// targets is made (its value: when the data changed, RFC 3339).
pub const RESTART_PENDING_ANNOTATION: &str = "workspaceaccess.io/restart-pending";
/// Pod template annotation a rollout restart sets on each target (as kubectl rollout restart
/// sets kubectl.kubernetes.io/restartedAt).
pub const RESTARTED_AT_ANNOTATION: &str = "workspaceaccess.io/restartedAt";
/// Annotation on a resource asking for a new token (a rotation of a managed LivyToken, a
/// re-read of a referenced one) or a refreshed inventory at once; each distinct value is
/// handled once and recorded in `status.lastRenewRequest`. `kubectl workspaceaccess renew` sets
/// it to the current time (RFC 3339).
pub const RENEW_REQUESTED_AT_ANNOTATION: &str = "workspaceaccess.io/renew-requested-at";

/// DNS subdomain name (Secret names).
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// DNS label (namespace names).
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A key of a Secret's data.
pub const SECRET_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";
/// A GUID such as an Azure subscription, tenant or client ID.
pub const GUID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
/// An Entra tenant: a GUID or a verified domain name such as `contoso.onmicrosoft.com`.
pub const TENANT_PATTERN: &str = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)+)$";
/// An absolute http(s) URL without spaces (the endpoint policy decides which are allowed).
pub const URL_PATTERN: &str = r"^https?://[^\s/?#@]+(/[^\s]*)?$";

/// Reference to one key of a Secret in the resource's own namespace (in a ClusterCredential: in
/// the operator's credential namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret. It is looked up in this resource's namespace (for a
    /// ClusterCredential: in the operator's credential namespace); references to other
    /// namespaces are not possible.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Key in the Secret's data that holds the value.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub key: String,
}

/// The Azure cloud whose login and resource-manager hosts are used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AzureCloud {
    /// Azure public cloud (`login.microsoftonline.com`, `management.azure.com`).
    #[default]
    AzurePublic,
    /// Azure US Government (`login.microsoftonline.us`, `management.usgovcloudapi.net`).
    #[serde(rename = "AzureUSGovernment")]
    AzureUsGovernment,
    /// Azure operated by 21Vianet in China (`login.chinacloudapi.cn`, `management.chinacloudapi.cn`).
    AzureChina,
}

/// Microsoft Entra ID credentials: a service principal with a client secret, or the operator
/// pod's workload identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.clientSecretRef) ? !(has(self.workloadIdentity) && self.workloadIdentity) : (has(self.workloadIdentity) && self.workloadIdentity)",
    "message": "set exactly one of clientSecretRef or workloadIdentity: true"
}]))]
pub struct AzureCredentials {
    /// Microsoft Entra tenant: its GUID or a verified domain (e.g. contoso.onmicrosoft.com).
    #[schemars(length(max = 253), regex(pattern = TENANT_PATTERN))]
    pub tenant_id: String,
    /// Application (client) ID of the service principal or managed identity (a GUID).
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub client_id: String,
    /// Secret key holding the service principal's client secret, in this namespace (in a
    /// ClusterCredential: in the operator's credential namespace). Exactly one of
    /// clientSecretRef and workloadIdentity is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_ref: Option<SecretKeyRef>,
    /// Use the operator pod's Azure workload identity (the federated token file named by
    /// AZURE_FEDERATED_TOKEN_FILE) instead of a client secret. Inline in a resource: allowed
    /// only in namespaces the operator's --pod-identity-namespace flag lists (elsewhere the
    /// resource is not Ready with reason PodIdentityNotAllowed). In a ClusterCredential: allowed
    /// for the namespaces of its allowedNamespaces.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workload_identity: bool,
    /// Azure cloud: AzurePublic (default), AzureUSGovernment or AzureChina. Chooses the login
    /// host, the resource-manager host and the token scopes.
    #[serde(default)]
    pub cloud: AzureCloud,
    /// Overrides the Entra login host (e.g. https://login.microsoftonline.com). Must pass the
    /// operator's endpoint policy; empty means the cloud's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = r"^$|^https?://[^\s/?#@]+/?$"))]
    pub authority_host: Option<String>,
}

/// Where Azure credentials come from, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AzureCredentialSource {
    /// A client secret read from a Secret in the resource's namespace.
    ClientSecret(SecretKeyRef),
    /// The operator pod's federated workload identity token.
    WorkloadIdentity,
}

impl AzureCredentials {
    /// The credential source, or why the pair of fields is inconsistent.
    pub fn source(&self) -> Result<AzureCredentialSource, String> {
        match (&self.client_secret_ref, self.workload_identity) {
            (Some(r), false) => Ok(AzureCredentialSource::ClientSecret(r.clone())),
            (None, true) => Ok(AzureCredentialSource::WorkloadIdentity),
            (Some(_), true) => {
                Err("azure: set either clientSecretRef or workloadIdentity: true, not both".into())
            }
            (None, false) => Err(
                "azure: set clientSecretRef (a Secret in this namespace) or workloadIdentity: true"
                    .into(),
            ),
        }
    }

    /// The authority host override, if one is set (an empty string means none).
    pub fn authority_host_override(&self) -> Option<&str> {
        self.authority_host.as_deref().filter(|h| !h.is_empty())
    }
}

/// Reference to an Alibaba Cloud AccessKey pair (and optional STS token) in a Secret of this
/// namespace (in a ClusterCredential: of the operator's credential namespace).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyRef {
    /// Name of the Secret, in the same namespace as this resource (in a ClusterCredential: in
    /// the operator's credential namespace).
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Key holding the AccessKey ID (default accessKeyId).
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub access_key_id_key: String,
    /// Key holding the AccessKey secret (default accessKeySecret).
    #[serde(default = "default_access_key_secret_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY_PATTERN))]
    pub access_key_secret_key: String,
    /// Key holding an STS security token, for temporary credentials; empty or absent for a
    /// long-lived AccessKey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = r"^$|^[-._a-zA-Z0-9]+$"))]
    pub security_token_key: Option<String>,
}

fn default_access_key_id_key() -> String {
    "accessKeyId".into()
}
fn default_access_key_secret_key() -> String {
    "accessKeySecret".into()
}

impl AccessKeyRef {
    /// The security-token key, if one is set (an empty string means none).
    pub fn security_token_key(&self) -> Option<&str> {
        self.security_token_key.as_deref().filter(|k| !k.is_empty())
    }
}

/// Alibaba Cloud credentials: an AccessKey from a Secret, or the operator pod's RRSA identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.accessKeyRef) ? !(has(self.rrsa) && self.rrsa) : (has(self.rrsa) && self.rrsa)",
    "message": "set exactly one of accessKeyRef or rrsa: true"
}]))]
pub struct AlibabaCredentials {
    /// Secret in this namespace (in a ClusterCredential: in the operator's credential
    /// namespace) holding an AccessKey pair. Exactly one of accessKeyRef and rrsa is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_ref: Option<AccessKeyRef>,
    /// Use the operator pod's RRSA OIDC token (STS AssumeRoleWithOIDC with the role in
    /// ALIBABA_CLOUD_ROLE_ARN). Inline in a resource: allowed only in namespaces the operator's
    /// --pod-identity-namespace flag lists. In a ClusterCredential: allowed for the namespaces
    /// of its allowedNamespaces.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rrsa: bool,
}

/// Where Alibaba Cloud credentials come from, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlibabaCredentialSource {
    /// An AccessKey (and optional STS token) read from a Secret in the resource's namespace.
    AccessKey(AccessKeyRef),
    /// The operator pod's RRSA identity.
    Rrsa,
}

impl AlibabaCredentials {
    /// The credential source, or why the pair of fields is inconsistent.
    pub fn source(&self) -> Result<AlibabaCredentialSource, String> {
        match (&self.access_key_ref, self.rrsa) {
            (Some(r), false) => Ok(AlibabaCredentialSource::AccessKey(r.clone())),
            (None, true) => Ok(AlibabaCredentialSource::Rrsa),
            (Some(_), true) => {
                Err("alibaba: set either accessKeyRef or rrsa: true, not both".into())
            }
            (None, false) => {
                Err("alibaba: set accessKeyRef (a Secret in this namespace) or rrsa: true".into())
            }
        }
    }
}

/// Reference to a ClusterCredential: provider credentials the platform team holds in the
/// operator's namespace and shares with chosen namespaces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CredentialRef {
    /// Name of the ClusterCredential. Its allowedNamespaces must include this resource's
    /// namespace (else the resource is not Ready, with reason CredentialNotAllowed), and it must
    /// hold credentials of this resource's provider.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// Where a resource's provider credentials are defined, once validated: in its own spec, or in
/// a ClusterCredential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialChoice<'a, T> {
    /// The inline block (Secrets in the resource's namespace, or pod identity).
    Inline(&'a T),
    /// A ClusterCredential.
    Cluster(&'a CredentialRef),
}

/// The one-of between an inline credentials block (`inline_field`, e.g. `spec.azure`) and a
/// `credentialRef` (`ref_field`), or why it is inconsistent.
pub fn credential_choice<'a, T>(
    inline_field: &str,
    inline: Option<&'a T>,
    ref_field: &str,
    credential_ref: Option<&'a CredentialRef>,
) -> Result<CredentialChoice<'a, T>, String> {
    match (inline, credential_ref) {
        (Some(i), None) => Ok(CredentialChoice::Inline(i)),
        (None, Some(r)) => Ok(CredentialChoice::Cluster(r)),
        (Some(_), Some(_)) => Err(format!(
            "set either {inline_field} or {ref_field}, not both"
        )),
        (None, None) => Err(format!(
            "set {inline_field} (credentials in this namespace) or {ref_field} (a \
             ClusterCredential)"
        )),
    }
}

/// Extra metadata and type for the Secret the operator writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplate {
    /// Secret type (default Opaque).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub type_: Option<String>,
    /// Labels added to the Secret. The managed-by label can't be overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the Secret. The operator's own workspaceaccess.io/ annotations
    /// can't be overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Extra keys of the Secret, each rendered from a Jinja template (MiniJinja) whenever the
    /// token is written, e.g. NOTEBOOK_HOST: "{{ publicDns }}" or netrc: "machine {{ publicDns
    /// }} login token password {{ accessToken }}". Variables: the kind's Secret keys
    /// (NotebookTokenRequest: accessToken, refreshToken, tokenType, expiresAt, hostName,
    /// publicDns, notebookResourceId, scope; LivyToken: token, tokenId, expiresAt; an optional
    /// key the provider did not return is an empty string) and name and namespace (of this
    /// resource). Filters include tojson, urlencode, trim, lower, upper, replace, default.
    /// Nothing is HTML-escaped. An unknown variable or a template that doesn't parse makes
    /// the resource not Ready with reason InvalidSpec (naming the key, never a value) and
    /// nothing is written. At most 32 keys, 8192 characters per template, 65536 per rendered
    /// value; a key can't be one of the kind's keys unless keys is TemplatedOnly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "template_data_schema")]
    pub data: Option<BTreeMap<String, String>>,
    /// Which keys the Secret holds: All (default) the kind's keys and those of data;
    /// TemplatedOnly only the keys of data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<SecretKeys>,
}

/// Most keys of `secretTemplate.data`.
pub const MAX_TEMPLATE_KEYS: usize = 32;
/// Longest template of `secretTemplate.data`, in characters.
pub const MAX_TEMPLATE_LENGTH: usize = 8192;

/// The schema of `secretTemplate.data`: a map of Secret keys to templates, bounded so that the
/// API server can check its key names with a CEL rule.
fn template_data_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_TEMPLATE_KEYS,
        "additionalProperties": {"type": "string", "maxLength": MAX_TEMPLATE_LENGTH},
        "x-kubernetes-validations": [{
            "rule": "self.all(k, size(k) <= 253 && k.matches('^[-._a-zA-Z0-9]+$'))",
            "message": "keys of secretTemplate.data must be Secret keys: letters, digits, '-', '_' and '.', at most 253 characters"
        }]
    })
}

/// Which keys a token Secret holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SecretKeys {
    /// The kind's keys and the templated keys of secretTemplate.data.
    #[default]
    All,
    /// Only the templated keys of secretTemplate.data.
    TemplatedOnly,
}

impl SecretTemplate {
    /// Which keys the Secret holds (default All).
    pub fn keys(&self) -> SecretKeys {
        self.keys.unwrap_or_default()
    }

    /// The templates of `data` (none when unset).
    pub fn templates(&self) -> impl Iterator<Item = (&String, &String)> {
        self.data.iter().flatten()
    }
}

/// Kinds of workload that rollout restarts reach.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
}

impl WorkloadKind {
    /// The resource's plural, in API group apps/v1.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Deployment => "deployments",
            Self::StatefulSet => "statefulsets",
            Self::DaemonSet => "daemonsets",
        }
    }

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
        }
    }
}

/// Workloads in the resource's namespace that are restarted (as kubectl rollout restart does)
/// when the token in the Secret changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.name) ? !has(self.selector) : has(self.selector)",
    "message": "set exactly one of name or selector"
}]))]
pub struct RolloutRestartTarget {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: WorkloadKind,
    /// Name of the workload, in this resource's namespace. Exactly one of name and selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: Option<String>,
    /// The workloads of this kind in this resource's namespace whose labels match. Exactly one
    /// of name and selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Most rollout restart targets of a resource.
pub const MAX_ROLLOUT_TARGETS: usize = 16;

/// The last rollout restart the operator made for a resource's workloads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRolloutRestart {
    /// When the workloads' pod template annotation workspaceaccess.io/restartedAt was set.
    pub time: Timestamp,
    /// The workloads restarted, as Kind/name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// What happened: the workloads restarted, or why one could not be (not found, no
    /// permission).
    pub message: String,
}

/// A label selector, as Kubernetes' LabelSelector: every matchLabels entry and every
/// matchExpressions requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be set, with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements on the labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// In, NotIn, Exists or DoesNotExist.
    pub operator: LabelOperator,
    /// The values for In and NotIn (at least one); empty for Exists and DoesNotExist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub values: Vec<String>,
}

/// Operator of a label requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LabelOperator {
    /// The label is set to one of the values.
    In,
    /// The label is not set, or set to none of the values.
    NotIn,
    /// The label is set.
    Exists,
    /// The label is not set.
    DoesNotExist,
}

/// A condition in the Kubernetes convention.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type; the operator sets Ready.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// Machine-readable reason in CamelCase, e.g. Synced, InvalidSpec, Throttled.
    pub reason: String,
    /// Human-readable detail. Never contains a secret value.
    pub message: String,
    /// The resource generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When status last changed between True, False and Unknown.
    pub last_transition_time: Timestamp,
}

/// Status fields every kind has.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// The generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions; Ready is True when the Secret or inventory is current for this generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When the operator last obtained data from the provider that it wrote here or into the
    /// Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Timestamp>,
    /// When the operator plans to contact the provider next (renewal, refresh or retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_time: Option<Timestamp>,
    /// The value of the resource's workspaceaccess.io/renew-requested-at annotation that the
    /// operator last handled (a new token or inventory was obtained for it). A value that
    /// differs from this one is handled at once, each value once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_renew_request: Option<String>,
}

impl CommonStatus {
    /// The Ready condition, if set.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == "Ready")
    }
}

/// Status types that carry a [`CommonStatus`], and what the metrics and the kubectl plugin
/// read from them (the defaults: nothing, for kinds without a token or an inventory).
pub trait HasCommonStatus {
    /// The common part.
    fn common(&self) -> &CommonStatus;
    /// The common part, mutable.
    fn common_mut(&mut self) -> &mut CommonStatus;
    /// When the token in the resource's Secret expires (token kinds).
    fn token_expires_at(&self) -> Option<Timestamp> {
        None
    }
    /// When the operator renews that token (token kinds).
    fn token_renew_at(&self) -> Option<Timestamp> {
        None
    }
    /// Name of the Secret holding the token (token kinds).
    fn token_secret_name(&self) -> Option<&str> {
        None
    }
    /// The inventory's provider and its number of items, even beyond those listed
    /// (WorkspaceView).
    fn inventory_count(&self) -> Option<(&str, i64)> {
        None
    }
}

/// Parameters of the Secret a token kind writes.
pub trait TokenSecretSpec {
    /// `spec.secretName`, if set.
    fn secret_name(&self) -> Option<&str>;
    /// `spec.secretTemplate`, if set.
    fn secret_template(&self) -> Option<&SecretTemplate>;
    /// `spec.renewBefore`, if set.
    fn renew_before(&self) -> Option<&Duration>;
    /// `spec.rolloutRestartTargets`.
    fn rollout_restart_targets(&self) -> &[RolloutRestartTarget];
}
