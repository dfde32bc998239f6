//! `NotebookTokenRequest`: an Azure Machine Learning notebook access token in a Secret.

// kube's `printcolumn(...)` attributes repeat `type_ = ...`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use crate::api::common::*;
use crate::api::duration::Duration;
use jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// ARM `api-version` used when `spec.apiVersion` is not set.
pub const DEFAULT_API_VERSION: &str = "2024-04-01";
/// Pattern of an Azure Machine Learning workspace name (from the ARM specification).
pub const WORKSPACE_NAME_PATTERN: &str = r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,32}$";
/// Pattern of a resource group name: letters, digits, `_`, `-`, `.`, `(`, `)`; not ending in `.`.
pub const RESOURCE_GROUP_PATTERN: &str = r"^[-\w.()]*[-\w()]$";
/// Pattern of an ARM api-version.
pub const API_VERSION_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(-preview)?$";

/// Requests an Azure Machine Learning notebook access token (ARM `listNotebookAccessToken`) and
/// keeps it in a Secret, renewed before it expires.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "workspaceaccess.io",
    version = "v1alpha1",
    kind = "NotebookTokenRequest",
    namespaced,
    status = "NotebookTokenRequestStatus",
    shortname = "ntr",
    category = "workspaceaccess",
    doc = "Requests an Azure Machine Learning notebook access token and keeps it in a Secret, renewed before it expires.",
    printcolumn(
        name = "Workspace",
        type_ = "string",
        json_path = ".spec.workspaceName"
    ),
    printcolumn(name = "Secret", type_ = "string", json_path = ".status.secretName"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#
    ),
    printcolumn(
        name = "Last Sync",
        type_ = "date",
        priority = 1,
        json_path = ".status.lastSyncTime"
    ),
    printcolumn(
        name = "Next Sync",
        type_ = "date",
        priority = 1,
        json_path = ".status.nextSyncTime"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.azure) ? !has(self.credentialRef) : has(self.credentialRef)",
    "message": "set exactly one of azure (credentials in this namespace) or credentialRef (a ClusterCredential)"
}]))]
pub struct NotebookTokenRequestSpec {
    /// Azure subscription ID (a GUID) that holds the workspace.
    #[schemars(regex(pattern = GUID_PATTERN))]
    pub subscription_id: String,
    /// Resource group of the workspace (1-90 characters; letters, digits, _ - . ( ); not ending
    /// in a period).
    #[schemars(length(min = 1, max = 90), regex(pattern = RESOURCE_GROUP_PATTERN))]
    pub resource_group: String,
    /// Name of the Azure Machine Learning workspace (3-33 characters: letters, digits, _ and -,
    /// starting with a letter or digit).
    #[schemars(regex(pattern = WORKSPACE_NAME_PATTERN))]
    pub workspace_name: String,
    /// ARM api-version of the call (default 2024-04-01).
    #[serde(default = "default_api_version")]
    #[schemars(regex(pattern = API_VERSION_PATTERN))]
    pub api_version: String,
    /// Azure Resource Manager endpoint, e.g. https://management.azure.com. Default: the ARM
    /// host of azure.cloud. Must pass the operator's endpoint policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = URL_PATTERN))]
    pub endpoint: Option<String>,
    /// Microsoft Entra credentials used to call Azure Resource Manager, with their Secret in
    /// this namespace. Exactly one of azure and credentialRef is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureCredentials>,
    /// A ClusterCredential with Azure credentials, instead of azure: the platform team keeps the
    /// credential in the operator's namespace and allows this namespace to use it. Exactly one
    /// of azure and credentialRef is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_ref: Option<CredentialRef>,
    /// Name of the Secret to write, in this namespace (default: the resource's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub secret_name: Option<String>,
    /// How long before expiry the token is renewed, e.g. 30m (default: 10% of the token's
    /// lifetime, at least 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before: Option<Duration>,
    /// Type, labels and annotations merged onto the Secret, and extra keys rendered from
    /// templates (data, keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_template: Option<SecretTemplate>,
    /// Workloads in this namespace (Deployments, StatefulSets, DaemonSets, by name or label
    /// selector) restarted when the token in the Secret changes after the Secret first
    /// existed (a renewal, a rotation, a new token after a spec change or a repaired
    /// Secret), by setting their pod template annotation workspaceaccess.io/restartedAt as
    /// kubectl rollout restart does. Never on the Secret's creation, an operator restart or
    /// a resync that changes no token; tokens changing within a few seconds of each other
    /// restart a shared workload once. A workload that is missing or can't be patched gives
    /// a Warning event and status.lastRolloutRestart.message; the resource stays Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,
}

fn default_api_version() -> String {
    DEFAULT_API_VERSION.into()
}

impl NotebookTokenRequestSpec {
    /// Where the Azure credentials are defined, or why `azure` / `credentialRef` are
    /// inconsistent.
    pub fn credentials(&self) -> Result<CredentialChoice<'_, AzureCredentials>, String> {
        credential_choice(
            "spec.azure",
            self.azure.as_ref(),
            "spec.credentialRef",
            self.credential_ref.as_ref(),
        )
    }
}

/// Observed state of a NotebookTokenRequest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotebookTokenRequestStatus {
    /// When the token in the Secret expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// When the operator renews the token: expiresAt - renewBefore, minus a small jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<Timestamp>,
    /// Name of the Secret holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Notebook resource ID returned by Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notebook_resource_id: Option<String>,
    /// Host name returned by Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    /// Public DNS name of the notebook service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_dns: Option<String>,
    /// Token type, e.g. Bearer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// Token scope, e.g. aznb_identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The last rollout restart of spec.rolloutRestartTargets: when, which workloads, and
    /// what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollout_restart: Option<LastRolloutRestart>,
    /// Conditions, observed generation and sync times.
    #[serde(flatten)]
    pub common: CommonStatus,
}

impl HasCommonStatus for NotebookTokenRequestStatus {
    fn common(&self) -> &CommonStatus {
        &self.common
    }
    fn common_mut(&mut self) -> &mut CommonStatus {
        &mut self.common
    }
    fn token_expires_at(&self) -> Option<Timestamp> {
        self.expires_at
    }
    fn token_renew_at(&self) -> Option<Timestamp> {
        self.renew_at
    }
    fn token_secret_name(&self) -> Option<&str> {
        self.secret_name.as_deref()
    }
}

impl TokenSecretSpec for NotebookTokenRequestSpec {
    fn secret_name(&self) -> Option<&str> {
        self.secret_name.as_deref()
    }
    fn secret_template(&self) -> Option<&SecretTemplate> {
        self.secret_template.as_ref()
    }
    fn renew_before(&self) -> Option<&Duration> {
        self.renew_before.as_ref()
    }
    fn rollout_restart_targets(&self) -> &[RolloutRestartTarget] {
        &self.rollout_restart_targets
    }
}
