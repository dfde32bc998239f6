//! `LivyToken`: an Alibaba Cloud EMR Serverless Spark Livy compute token in a Secret.

// kube's `printcolumn(...)` attributes repeat `type_ = ...`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use crate::api::common::*;
use crate::api::duration::Duration;
use jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of an Alibaba Cloud region ID such as cn-hangzhou or ap-southeast-1.
pub const REGION_PATTERN: &str = r"^[a-z]{2,}(-[a-z0-9]+)+$";
/// Pattern of EMR Serverless Spark IDs (workspace, Livy compute, token): letters, digits, - and _.
pub const ALIBABA_ID_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$";
/// Pattern of a managed token's name.
pub const TOKEN_NAME_PATTERN: &str = r"^$|^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$";

/// Keeps an Alibaba Cloud EMR Serverless Spark Livy Gateway token in a Secret: an existing token
/// read by ID, or a token the operator creates, rotates before expiry and deletes.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "workspaceaccess.io",
    version = "v1alpha1",
    kind = "LivyToken",
    namespaced,
    status = "LivyTokenStatus",
    shortname = "livytoken",
    category = "workspaceaccess",
    doc = "Keeps an Alibaba Cloud EMR Serverless Spark Livy Gateway token in a Secret: an existing token read by ID, or a token the operator creates, rotates and deletes.",
    printcolumn(
        name = "Livy Compute",
        type_ = "string",
        json_path = ".spec.livyComputeId"
    ),
    printcolumn(name = "Token", type_ = "string", json_path = ".status.tokenId"),
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
    "rule": "has(self.tokenId) ? !has(self.managed) : has(self.managed)",
    "message": "set exactly one of tokenId (read an existing token) or managed (the operator creates and rotates the token)"
}, {
    "rule": "has(self.alibaba) ? !has(self.credentialRef) : has(self.credentialRef)",
    "message": "set exactly one of alibaba (credentials in this namespace) or credentialRef (a ClusterCredential)"
}]))]
pub struct LivyTokenSpec {
    /// Alibaba Cloud region of the workspace, e.g. cn-hangzhou.
    #[schemars(length(max = 64), regex(pattern = REGION_PATTERN))]
    pub region_id: String,
    /// EMR Serverless Spark workspace ID (workspaceBizId), e.g. w-8adde60aa809701f.
    #[schemars(regex(pattern = ALIBABA_ID_PATTERN))]
    pub workspace_id: String,
    /// Livy Gateway (Livy compute) ID, e.g. lc-6mkvn01zrg8rqhhv.
    #[schemars(regex(pattern = ALIBABA_ID_PATTERN))]
    pub livy_compute_id: String,
    /// EMR Serverless Spark endpoint. Default:
    /// https://emr-serverless-spark.<regionId>.aliyuncs.com. Must pass the operator's endpoint
    /// policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = URL_PATTERN))]
    pub endpoint: Option<String>,
    /// ID of an existing token to read (GetLivyComputeToken). Exactly one of tokenId and
    /// managed is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = ALIBABA_ID_PATTERN))]
    pub token_id: Option<String>,
    /// Let the operator create the token, rotate it before it expires (new token, Secret
    /// updated, old token deleted after gracePeriod) and delete it when this resource is
    /// deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedLivyToken>,
    /// Alibaba Cloud credentials used to sign the requests, with their Secret in this
    /// namespace. Exactly one of alibaba and credentialRef is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alibaba: Option<AlibabaCredentials>,
    /// A ClusterCredential with Alibaba Cloud credentials, instead of alibaba: the platform team
    /// keeps the AccessKey (or RRSA) in the operator's namespace and allows this namespace to
    /// use it. Exactly one of alibaba and credentialRef is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_ref: Option<CredentialRef>,
    /// Name of the Secret to write, in this namespace (default: the resource's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub secret_name: Option<String>,
    /// Reference mode: how often the token is re-read even before it expires, so that a token
    /// changed outside the cluster reaches the Secret (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<Duration>,
    /// How long before expiry the token is renewed (default: 10% of its lifetime, at least 1m).
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

/// A token whose whole life the operator manages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedLivyToken {
    /// Beginning of the names of the tokens the operator creates (default: "wao-" and this
    /// resource's name; at most 40 characters are used). The operator appends 8 hex digits
    /// derived from the resource's namespace, name and UID and a number counting rotations,
    /// e.g. spark-livy-1a2b3c4d-3, so that tokens of different resources never mix and a token
    /// created just before a crash is found again by its name instead of being created twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = TOKEN_NAME_PATTERN))]
    pub name: Option<String>,
    /// Days until a created token expires (autoExpireConfiguration.expireDays; default 7).
    #[serde(default = "default_expire_days")]
    #[schemars(range(min = 1, max = 365))]
    pub expire_days: i32,
    /// How long a replaced token stays valid after the Secret holds its successor, so that pods
    /// reading the Secret pick up the new token (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<Duration>,
}

fn default_expire_days() -> i32 {
    7
}

/// Which Livy token the resource follows, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LivyTokenMode {
    /// Read the existing token with this ID.
    Reference {
        /// The token ID.
        token_id: String,
    },
    /// The operator owns the token's whole life.
    Managed(ManagedLivyToken),
}

impl LivyTokenSpec {
    /// Where the Alibaba Cloud credentials are defined, or why `alibaba` / `credentialRef`
    /// are inconsistent.
    pub fn credentials(&self) -> Result<CredentialChoice<'_, AlibabaCredentials>, String> {
        credential_choice(
            "spec.alibaba",
            self.alibaba.as_ref(),
            "spec.credentialRef",
            self.credential_ref.as_ref(),
        )
    }

    /// The mode, or why `tokenId` / `managed` are inconsistent.
    pub fn mode(&self) -> Result<LivyTokenMode, String> {
        match (&self.token_id, &self.managed) {
            (Some(id), None) => Ok(LivyTokenMode::Reference {
                token_id: id.clone(),
            }),
            (None, Some(m)) => Ok(LivyTokenMode::Managed(m.clone())),
            (Some(_), Some(_)) => Err("set either tokenId or managed, not both".into()),
            (None, None) => Err(
                "set tokenId (read an existing token) or managed (the operator creates the token)"
                    .into(),
            ),
        }
    }
}

/// Observed state of a LivyToken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LivyTokenStatus {
    /// ID of the token in the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Name of the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
    /// Who created the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// When the token was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<Timestamp>,
    /// When the token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// When the operator renews the token before it expires (expiresAt - renewBefore, minus a
    /// small jitter): managed mode rotates it then, reference mode reads it again. Absent for
    /// a token without an expiry time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<Timestamp>,
    /// When the token was last used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_time: Option<Timestamp>,
    /// Name of the Secret holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The tokens the operator created for this resource (managed mode, and replaced managed
    /// tokens still to be deleted after switching to tokenId).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedTokensStatus>,
    /// The last rollout restart of spec.rolloutRestartTargets: when, which workloads, and
    /// what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollout_restart: Option<LastRolloutRestart>,
    /// Conditions, observed generation and sync times.
    #[serde(flatten)]
    pub common: CommonStatus,
}

/// The tokens the operator manages for a LivyToken.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedTokensStatus {
    /// Beginning of the names of this resource's tokens (from spec.managed.name or the
    /// resource's name, and 8 hex digits of its namespace, name and UID); each token is named
    /// <namePrefix><n>, n counting up with every rotation.
    #[serde(default)]
    pub name_prefix: String,
    /// The token the Secret holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<ManagedTokenRef>,
    /// A token created but not yet written to the Secret. It is recorded right after it is
    /// created, so that an interrupted rotation resumes with it instead of creating another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<ManagedTokenRef>,
    /// Replaced tokens, deleted at the provider once deleteAfter has passed (gracePeriod after
    /// the Secret received their successor, so that pods reading the Secret switch first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring: Vec<ManagedTokenRef>,
}

/// A Livy compute token the operator created, and where it lives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedTokenRef {
    /// Token ID.
    pub token_id: String,
    /// Token name.
    #[serde(default)]
    pub name: String,
    /// Region of the Livy Gateway the token belongs to.
    pub region_id: String,
    /// Workspace of the Livy Gateway the token belongs to.
    pub workspace_id: String,
    /// Livy Gateway the token belongs to.
    pub livy_compute_id: String,
    /// Endpoint the token was created through (absent: the region's default endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// When the token is deleted at the provider (replaced tokens only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after: Option<Timestamp>,
}

impl HasCommonStatus for LivyTokenStatus {
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

impl TokenSecretSpec for LivyTokenSpec {
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
