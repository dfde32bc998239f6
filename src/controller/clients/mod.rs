//! The provider seam: what reconcilers need from the providers, as traits, and the factory that
//! hands them ready clients.
//!
//! A reconciler validates its spec (pure checks in `validate.rs` and its own module), then asks
//! the [`ClientFactory`] on the [`Context`](crate::controller::Context) for a client of the
//! resource's provider. The factory owns everything between the spec and an authenticated
//! request: the endpoint policy, credential resolution (Secrets in the resource's namespace,
//! pod identity and its allowlist), the shared Entra and STS caches, and (through the HTTP
//! client) the rate limiter. Reconcilers see no URL, HTTP status or signature; they get typed
//! answers or an [`Error`] with its condition reason.
//!
//! [`live::LiveClients`] is the real factory. Tests that only need answers script a fake of
//! these traits instead of HTTP servers (`tests/scenarios/support/fake_clients.rs`); the real
//! clients keep their own contract tests against HTTP mocks.

pub mod live;

use crate::api::workspace_view::{DataRobotSource, FabricSource};
use crate::api::{LivyTokenSpec, NotebookTokenRequestSpec};
use crate::controller::error::Error;
use crate::providers::azure_ml::NotebookAccessToken;
use crate::providers::datarobot::{NotebookQuery, SharedRoles};
use crate::providers::emr_spark::{LivyCompute, LivyTokenInfo, TokenRequest};
use crate::providers::fabric::{RoleAssignments, Workspace};
use async_trait::async_trait;
use std::sync::Arc;

/// Azure Machine Learning notebook access tokens for one workspace, with one credential.
#[async_trait]
pub trait NotebookTokens: Send + Sync {
    /// A new notebook access token (`listNotebookAccessToken`).
    async fn notebook_access_token(&self) -> Result<NotebookAccessToken, Error>;
}

/// Where a Livy compute token lives: the Livy Gateway, and the endpoint that reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LivyLocation {
    /// The Livy Gateway.
    pub compute: LivyCompute,
    /// `spec.endpoint` when the token was recorded (None: the region's default endpoint).
    pub endpoint: Option<String>,
}

/// The EMR Serverless Spark Livy compute token operations, with one credential. Every call
/// names the token's location: a token recorded under an earlier spec may live elsewhere, and
/// its endpoint is checked against the endpoint policy as it is now.
#[async_trait]
pub trait LivyTokens: Send + Sync {
    /// `GetLivyComputeToken`: one token, with its content.
    async fn get_token(&self, at: &LivyLocation, token_id: &str) -> Result<LivyTokenInfo, Error>;
    /// `ListLivyComputeToken`: every token of the Livy Gateway.
    async fn list_tokens(&self, at: &LivyLocation) -> Result<Vec<LivyTokenInfo>, Error>;
    /// `CreateLivyComputeToken`: creates a token; returns its ID.
    async fn create_token(
        &self,
        at: &LivyLocation,
        request: &TokenRequest,
    ) -> Result<String, Error>;
    /// `DeleteLivyComputeToken`.
    async fn delete_token(&self, at: &LivyLocation, token_id: &str) -> Result<(), Error>;
}

/// Microsoft Fabric workspaces and role assignments, with one credential.
#[async_trait]
pub trait FabricInventory: Send + Sync {
    /// Every workspace the principal can reach (in one of `roles`, if given), every page
    /// followed.
    async fn list_workspaces(&self, roles: &[&str]) -> Result<Vec<Workspace>, Error>;
    /// The role assignments of each workspace, in the order given.
    async fn role_assignments_of(
        &self,
        workspace_ids: &[String],
    ) -> Result<Vec<RoleAssignments>, Error>;
}

/// DataRobot notebooks and their shared roles, with one API key.
#[async_trait]
pub trait DataRobotInventory: Send + Sync {
    /// IDs of the notebooks a query finds, every page followed.
    async fn discover(&self, query: &NotebookQuery) -> Result<Vec<String>, Error>;
    /// The shared roles of each notebook, and the IDs DataRobot doesn't know.
    async fn shared_roles(&self, notebook_ids: &[String]) -> Result<SharedRoles, Error>;
}

/// Hands reconcilers ready clients for a resource's provider. Each method checks the
/// endpoints and resolves the credentials the spec names (no provider call yet: a client
/// obtains provider tokens when it is first used), or fails with the reason to report.
#[async_trait]
pub trait ClientFactory: Send + Sync {
    /// Notebook tokens for a NotebookTokenRequest in `namespace`.
    async fn notebook_tokens(
        &self,
        namespace: &str,
        spec: &NotebookTokenRequestSpec,
    ) -> Result<Arc<dyn NotebookTokens>, Error>;

    /// Livy token operations for a LivyToken in `namespace`.
    async fn livy_tokens(
        &self,
        namespace: &str,
        spec: &LivyTokenSpec,
    ) -> Result<Arc<dyn LivyTokens>, Error>;

    /// The Fabric inventory of a WorkspaceView in `namespace`.
    async fn fabric_inventory(
        &self,
        namespace: &str,
        source: &FabricSource,
    ) -> Result<Arc<dyn FabricInventory>, Error>;

    /// The DataRobot inventory of a WorkspaceView in `namespace`.
    async fn datarobot_inventory(
        &self,
        namespace: &str,
        source: &DataRobotSource,
    ) -> Result<Arc<dyn DataRobotInventory>, Error>;

    /// ClusterCredential `name` changed, its Secret changed, or it was deleted: provider
    /// tokens obtained with it are not to be used again.
    fn forget_cluster_credential(&self, _name: &str) {}
}
