//! `WorkspaceView`: an inventory of Microsoft Fabric workspaces or DataRobot notebook roles in
//! `.status`.

// kube's `printcolumn(...)` attributes repeat `type_ = ...`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use crate::api::common::*;
use crate::api::duration::Duration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default `spec.maxItems`.
pub const DEFAULT_MAX_ITEMS: i32 = 500;
/// Largest `spec.maxItems` accepted.
pub const MAX_MAX_ITEMS: i32 = 2000;
/// Most entries in `spec.dataRobot.notebookIds` (more notebooks: use a selector). Keeps the
/// spec, which kubectl's last-applied annotation may hold a second time, small next to the
/// status inventory.
pub const MAX_NOTEBOOK_IDS: usize = 2000;
/// Most role assignments (Fabric) or shared roles (DataRobot) listed per entry; the entry's
/// total tells how many there are when it has more.
pub const MAX_ROLES_PER_ENTRY: usize = 100;
/// Pattern of a DataRobot ID (notebook, use case, user).
pub const DATAROBOT_ID_PATTERN: &str = r"^[A-Za-z0-9_-]{1,64}$";
/// Default `spec.historyLimit`.
pub const DEFAULT_HISTORY_LIMIT: i32 = 50;
/// Largest `spec.historyLimit` accepted.
pub const MAX_HISTORY_LIMIT: i32 = 500;

/// Lists Microsoft Fabric workspaces (and their role assignments) or DataRobot notebook shared
/// roles into .status, refreshed every refreshInterval.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "workspaceaccess.io",
    version = "v1alpha1",
    kind = "WorkspaceView",
    namespaced,
    status = "WorkspaceViewStatus",
    shortname = "wsv",
    category = "workspaceaccess",
    doc = "Lists Microsoft Fabric workspaces (and their role assignments) or DataRobot notebook shared roles into .status, kept current.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".status.provider"),
    printcolumn(name = "Count", type_ = "integer", json_path = ".status.count"),
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
    printcolumn(name = "Last Sync", type_ = "date", json_path = ".status.lastSyncTime"),
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
        name = "Next Sync",
        type_ = "date",
        priority = 1,
        json_path = ".status.nextSyncTime"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.fabric) ? !has(self.dataRobot) : has(self.dataRobot)",
    "message": "set exactly one of fabric or dataRobot"
}]))]
pub struct WorkspaceViewSpec {
    /// How often the inventory is re-read from the provider (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<Duration>,
    /// Most entries kept in .status (default 500, at most 2000). count always tells the total.
    #[serde(default = "default_max_items")]
    #[schemars(range(min = 1, max = 2000))]
    pub max_items: i32,
    /// Most access changes kept in .status.recentChanges, newest first (default 50, at most
    /// 500; 0 keeps none). Every change still counts in the AccessChanged event and the
    /// workspace_access_inventory_changes_total metric.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 0, max = 500))]
    pub history_limit: i32,
    /// List Microsoft Fabric workspaces. Exactly one of fabric and dataRobot is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fabric: Option<FabricSource>,
    /// List DataRobot notebooks' shared roles. Exactly one of fabric and dataRobot is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_robot: Option<DataRobotSource>,
}

fn default_max_items() -> i32 {
    DEFAULT_MAX_ITEMS
}

fn default_history_limit() -> i32 {
    DEFAULT_HISTORY_LIMIT
}

/// A Fabric workspace role.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum FabricRole {
    /// Admin.
    Admin,
    /// Member.
    Member,
    /// Contributor.
    Contributor,
    /// Viewer.
    Viewer,
}

/// A type of Fabric principal holding a workspace role (Fabric's `Principal.type`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum FabricPrincipalType {
    /// A Microsoft Entra user.
    User,
    /// A Microsoft Entra group (security group or distribution list).
    Group,
    /// A service principal (an app registration or managed identity).
    ServicePrincipal,
    /// A service principal profile (profiles a multi-tenant app creates under its service
    /// principal).
    ServicePrincipalProfile,
}

impl FabricPrincipalType {
    /// The type as Fabric spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FabricPrincipalType::User => "User",
            FabricPrincipalType::Group => "Group",
            FabricPrincipalType::ServicePrincipal => "ServicePrincipal",
            FabricPrincipalType::ServicePrincipalProfile => "ServicePrincipalProfile",
        }
    }
}

/// A type of DataRobot share recipient (DataRobot's `shareRecipientType`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum DataRobotRecipientType {
    /// A user.
    User,
    /// A group of users.
    Group,
    /// A whole organization: everyone in it.
    Organization,
    /// An external application.
    ExternalApplication,
}

impl DataRobotRecipientType {
    /// The type as DataRobot spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DataRobotRecipientType::User => "user",
            DataRobotRecipientType::Group => "group",
            DataRobotRecipientType::Organization => "organization",
            DataRobotRecipientType::ExternalApplication => "externalApplication",
        }
    }
}

/// Microsoft Fabric `GET /v1/workspaces`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.azure) ? !has(self.credentialRef) : has(self.credentialRef)",
    "message": "set exactly one of azure (credentials in this namespace) or credentialRef (a ClusterCredential)"
}, {
    "rule": "!has(self.principalTypes) || (has(self.includeRoleAssignments) && self.includeRoleAssignments)",
    "message": "principalTypes filters role assignments: set includeRoleAssignments: true"
}]))]
pub struct FabricSource {
    /// Only workspaces where the principal has one of these roles (Fabric's roles filter).
    /// Default: all workspaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4), extend("x-kubernetes-list-type" = "set"))]
    pub roles: Option<Vec<FabricRole>>,
    /// Also list each workspace's role assignments (needs Member or higher in the workspace).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_role_assignments: bool,
    /// Keep only role assignments of these principal types (with includeRoleAssignments).
    /// Default: all types, including ones Fabric adds later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4), extend("x-kubernetes-list-type" = "set"))]
    pub principal_types: Option<Vec<FabricPrincipalType>>,
    /// Fabric API endpoint (default https://api.fabric.microsoft.com). Must pass the operator's
    /// endpoint policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = URL_PATTERN))]
    pub endpoint: Option<String>,
    /// Microsoft Entra credentials used to call Fabric, with their Secret in this namespace.
    /// Exactly one of azure and credentialRef is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureCredentials>,
    /// A ClusterCredential with Azure credentials, instead of azure: the platform team keeps the
    /// credential in the operator's namespace and allows this namespace to use it. Exactly one
    /// of azure and credentialRef is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_ref: Option<CredentialRef>,
}

impl FabricSource {
    /// Where the Azure credentials are defined, or why `azure` / `credentialRef` are
    /// inconsistent.
    pub fn credentials(&self) -> Result<CredentialChoice<'_, AzureCredentials>, String> {
        credential_choice(
            "spec.fabric.azure",
            self.azure.as_ref(),
            "spec.fabric.credentialRef",
            self.credential_ref.as_ref(),
        )
    }
}

/// How the DataRobot API token is presented in the Authorization header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DataRobotAuthScheme {
    /// `Authorization: Token <key>`, as the official client sends API keys (default).
    #[default]
    Token,
    /// `Authorization: Bearer <token>`, for DataRobot OAuth access tokens.
    Bearer,
}

/// DataRobot notebooks' shared roles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.notebookIds) ? !has(self.selector) : has(self.selector)",
    "message": "set exactly one of notebookIds or selector"
}, {
    "rule": "has(self.apiTokenRef) ? !has(self.credentialRef) : has(self.credentialRef)",
    "message": "set exactly one of apiTokenRef (a Secret in this namespace) or credentialRef (a ClusterCredential)"
}, {
    "rule": "!has(self.credentialRef) || !has(self.authScheme)",
    "message": "authScheme comes from the ClusterCredential named by credentialRef; leave it out here"
}]))]
pub struct DataRobotSource {
    /// DataRobot API base URL (default https://app.datarobot.com/api/v2). Must pass the
    /// operator's endpoint policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), regex(pattern = URL_PATTERN))]
    pub endpoint: Option<String>,
    /// Notebook IDs to report (at most 2000; use a selector for more). Exactly one of
    /// notebookIds and selector is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2000), inner(regex(pattern = DATAROBOT_ID_PATTERN)))]
    pub notebook_ids: Option<Vec<String>>,
    /// Discover notebooks with GET /notebooks/ instead of listing IDs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<NotebookSelector>,
    /// Keep only shared roles of these recipient types. Default: all types, including ones
    /// DataRobot adds later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4), extend("x-kubernetes-list-type" = "set"))]
    pub recipient_types: Option<Vec<DataRobotRecipientType>>,
    /// Secret key holding the DataRobot API token, in this namespace. Exactly one of
    /// apiTokenRef and credentialRef is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_ref: Option<SecretKeyRef>,
    /// Authorization scheme of apiTokenRef: Token (API keys, the default) or Bearer (OAuth
    /// access tokens). With credentialRef, the ClusterCredential's authScheme applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<DataRobotAuthScheme>,
    /// A ClusterCredential with a DataRobot API token, instead of apiTokenRef: the platform
    /// team keeps the key in the operator's namespace and allows this namespace to use it.
    /// Exactly one of apiTokenRef and credentialRef is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_ref: Option<CredentialRef>,
}

/// Filters for discovering DataRobot notebooks (all optional; combined with AND).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotebookSelector {
    /// Only notebooks of this use case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DATAROBOT_ID_PATTERN))]
    pub use_case_id: Option<String>,
    /// Only notebooks owned by these user IDs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), inner(regex(pattern = DATAROBOT_ID_PATTERN)))]
    pub owners: Option<Vec<String>>,
    /// Only notebooks with these tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 256)))]
    pub tags: Option<Vec<String>>,
    /// Only notebooks matching this text query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub query: Option<String>,
}

/// Which inventory the view lists, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InventorySource {
    /// Fabric workspaces.
    Fabric(FabricSource),
    /// DataRobot notebook roles.
    DataRobot(DataRobotSource),
}

/// Which DataRobot notebooks, once validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotebookSelection {
    /// These IDs.
    Ids(Vec<String>),
    /// Notebooks discovered with this selector.
    Selector(NotebookSelector),
}

impl WorkspaceViewSpec {
    /// The inventory source, or why `fabric` / `dataRobot` are inconsistent.
    pub fn source(&self) -> Result<InventorySource, String> {
        match (&self.fabric, &self.data_robot) {
            (Some(f), None) => Ok(InventorySource::Fabric(f.clone())),
            (None, Some(d)) => Ok(InventorySource::DataRobot(d.clone())),
            (Some(_), Some(_)) => Err("set either fabric or dataRobot, not both".into()),
            (None, None) => Err("set fabric or dataRobot".into()),
        }
    }
}

impl DataRobotSource {
    /// Where the API token is defined, or why `apiTokenRef` / `credentialRef` (and
    /// `authScheme`) are inconsistent.
    pub fn credentials(&self) -> Result<CredentialChoice<'_, SecretKeyRef>, String> {
        if self.credential_ref.is_some() && self.auth_scheme.is_some() {
            return Err(
                "spec.dataRobot.authScheme comes from the ClusterCredential named by \
                        spec.dataRobot.credentialRef; leave it out"
                    .into(),
            );
        }
        credential_choice(
            "spec.dataRobot.apiTokenRef",
            self.api_token_ref.as_ref(),
            "spec.dataRobot.credentialRef",
            self.credential_ref.as_ref(),
        )
    }

    /// The notebook selection, or why `notebookIds` / `selector` are inconsistent.
    pub fn selection(&self) -> Result<NotebookSelection, String> {
        match (&self.notebook_ids, &self.selector) {
            (Some(ids), None) => Ok(NotebookSelection::Ids(ids.clone())),
            (None, Some(s)) => Ok(NotebookSelection::Selector(s.clone())),
            (Some(_), Some(_)) => {
                Err("dataRobot: set either notebookIds or selector, not both".into())
            }
            (None, None) => Err("dataRobot: set notebookIds or selector".into()),
        }
    }
}

/// Observed state of a WorkspaceView.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceViewStatus {
    /// Fabric or DataRobot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Total number of entries found, even when not all are listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    /// True when not every entry found is listed: only the first ones by id are, up to
    /// maxItems and as many as fit the status size limit (the Ready message says which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Fabric workspaces, sorted by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workspaces: Vec<FabricWorkspace>,
    /// DataRobot notebooks and their shared roles, sorted by notebook id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notebooks: Vec<NotebookRoles>,
    /// Who gained or lost access, newest first: what changed between the inventories of
    /// successive syncs (at most spec.historyLimit entries, fewer when long names would make
    /// them exceed the status size budget). The first inventory, and the first after a change
    /// of spec.fabric or spec.dataRobot, is a new baseline and reports nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_changes: Vec<AccessChange>,
    /// Digest of the spec.fabric or spec.dataRobot the listed inventory was read with.
    /// Inventories are compared only when it is unchanged, so a changed filter or credential
    /// is not reported as access granted or revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
    /// Conditions, observed generation and sync times.
    #[serde(flatten)]
    pub common: CommonStatus,
}

/// A Fabric workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FabricWorkspace {
    /// Workspace ID.
    pub id: String,
    /// Display name (clipped to 256 bytes, ending in "…" when clipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Description (clipped to 256 bytes, ending in "…" when clipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Workspace type as Fabric reports it (Personal, Workspace, AdminWorkspace, ...).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// ID of the capacity the workspace is assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_id: Option<String>,
    /// Role assignments (with includeRoleAssignments), sorted by principal id; at most 100.
    /// Absent when the caller may not read them (that needs Member or higher in the
    /// workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_assignments: Option<Vec<FabricRoleAssignment>>,
    /// Total number of role assignments, set only when there are more than the 100 listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_assignment_count: Option<i64>,
}

/// A principal's role in a Fabric workspace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FabricRoleAssignment {
    /// ID of the principal.
    pub principal_id: String,
    /// Principal type as Fabric reports it (User, ServicePrincipal, Group, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_type: Option<String>,
    /// Display name of the principal (clipped to 256 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Role as Fabric reports it (Admin, Member, Contributor, Viewer, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// A DataRobot notebook's shared roles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotebookRoles {
    /// Notebook ID.
    pub notebook_id: String,
    /// Who has which role, sorted by recipient id; at most 100.
    #[serde(default)]
    pub roles: Vec<NotebookSharedRole>,
    /// Total number of shared roles, set only when there are more than the 100 listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_count: Option<i64>,
}

/// One recipient's role on a DataRobot notebook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotebookSharedRole {
    /// ID of the recipient.
    pub id: String,
    /// Name of the recipient (clipped to 256 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Role as DataRobot reports it (OWNER, EDITOR, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Recipient type (user, group, organization, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_recipient_type: Option<String>,
}

/// What happened to a principal's access, or to a workspace or notebook itself.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum AccessChangeKind {
    /// The principal got a role it didn't have (newRole).
    Granted,
    /// The principal lost a role (oldRole).
    Revoked,
    /// The principal's role changed from oldRole to newRole.
    RoleChanged,
    /// The workspace or notebook appeared in the inventory.
    Added,
    /// The workspace or notebook disappeared from the inventory.
    Removed,
}

impl AccessChangeKind {
    /// The kind as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessChangeKind::Granted => "Granted",
            AccessChangeKind::Revoked => "Revoked",
            AccessChangeKind::RoleChanged => "RoleChanged",
            AccessChangeKind::Added => "Added",
            AccessChangeKind::Removed => "Removed",
        }
    }
}

/// One change between two inventories: a principal's role on a workspace or notebook, or the
/// workspace or notebook itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessChange {
    /// When the sync that found the change read the inventory.
    pub time: jiff::Timestamp,
    /// Granted, Revoked, RoleChanged, or Added / Removed for a workspace or notebook itself.
    pub change: AccessChangeKind,
    /// Workspace ID (Fabric) or notebook ID (DataRobot).
    pub item_id: String,
    /// Workspace display name (Fabric; DataRobot's sharing API gives no notebook name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_name: Option<String>,
    /// ID of the principal (Fabric) or recipient (DataRobot); absent for Added / Removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// Fabric principal type (User, Group, ...) or DataRobot shareRecipientType (user, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_type: Option<String>,
    /// Display name of the principal (Fabric) or name of the recipient (DataRobot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_name: Option<String>,
    /// The role before; absent for Granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_role: Option<String>,
    /// The role after; absent for Revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_role: Option<String>,
}

impl HasCommonStatus for WorkspaceViewStatus {
    fn common(&self) -> &CommonStatus {
        &self.common
    }
    fn common_mut(&mut self) -> &mut CommonStatus {
        &mut self.common
    }
    fn inventory_count(&self) -> Option<(&str, i64)> {
        Some((self.provider.as_deref()?, self.count?))
    }
}
