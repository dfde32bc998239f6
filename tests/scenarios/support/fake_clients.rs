//! A scripted fake of the provider seam (`controller::clients`): each operation is a function
//! field the test sets, and every call is recorded. For reconciler scenarios that need answers,
//! not HTTP: the real clients keep their contract tests against HTTP mocks.

use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use workspace_access_operator::api::workspace_view::{DataRobotSource, FabricSource};
use workspace_access_operator::api::{LivyTokenSpec, NotebookTokenRequestSpec};
use workspace_access_operator::controller::clients::{
    ClientFactory, DataRobotInventory, FabricInventory, LivyLocation, LivyTokens, NotebookTokens,
};
use workspace_access_operator::controller::error::Error;
use workspace_access_operator::providers::azure_ml::NotebookAccessToken;
use workspace_access_operator::providers::datarobot::{NotebookQuery, SharedRoles};
use workspace_access_operator::providers::emr_spark::{LivyTokenInfo, TokenRequest};
use workspace_access_operator::providers::fabric::{RoleAssignments, Workspace};

type Op<A, R> = Arc<dyn Fn(A) -> Result<R, Error> + Send + Sync>;

fn unscripted<A, R>(what: &'static str) -> Op<A, R> {
    Arc::new(move |_| Err(Error::InvalidSpec(format!("fake: {what} is not scripted"))))
}

/// The fake factory and its clients, all in one.
pub struct FakeClients {
    /// What the factory itself answers (e.g. a credential error), before any client.
    pub factory: Op<(), ()>,
    /// `listNotebookAccessToken`.
    pub notebook_access_token: Op<(), NotebookAccessToken>,
    /// `GetLivyComputeToken` (location, token id).
    pub get_token: Op<(LivyLocation, String), LivyTokenInfo>,
    /// `ListLivyComputeToken`.
    pub list_tokens: Op<LivyLocation, Vec<LivyTokenInfo>>,
    /// `CreateLivyComputeToken` (location, name): the new token's ID.
    pub create_token: Op<(LivyLocation, String), String>,
    /// `DeleteLivyComputeToken` (location, token id).
    pub delete_token: Op<(LivyLocation, String), ()>,
    /// Fabric list workspaces (roles).
    pub list_workspaces: Op<Vec<String>, Vec<Workspace>>,
    /// Fabric role assignments of workspaces.
    pub role_assignments_of: Op<Vec<String>, Vec<RoleAssignments>>,
    /// DataRobot discovery.
    pub discover: Op<NotebookQuery, Vec<String>>,
    /// DataRobot shared roles.
    pub shared_roles: Op<Vec<String>, SharedRoles>,
    /// The calls made (see [`FakeClients::calls`]).
    pub calls: Mutex<Vec<String>>,
}

impl Default for FakeClients {
    fn default() -> Self {
        Self {
            factory: Arc::new(|_| Ok(())),
            notebook_access_token: unscripted("notebook_access_token"),
            get_token: unscripted("get_token"),
            list_tokens: unscripted("list_tokens"),
            create_token: unscripted("create_token"),
            delete_token: unscripted("delete_token"),
            list_workspaces: unscripted("list_workspaces"),
            role_assignments_of: unscripted("role_assignments_of"),
            discover: unscripted("discover"),
            shared_roles: unscripted("shared_roles"),
            calls: Mutex::default(),
        }
    }
}

impl FakeClients {
    /// The calls made so far, by operation name ("factory:livy", "get_token", ...).
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// How many calls of `op` were made.
    pub fn count(&self, op: &str) -> usize {
        self.calls().iter().filter(|c| *c == op).count()
    }

    fn called(&self, op: &str) {
        self.calls.lock().unwrap().push(op.to_owned());
    }
}

/// The fake behind the seam's client traits.
pub struct Handle(pub Arc<FakeClients>);

#[async_trait]
impl ClientFactory for Handle {
    async fn notebook_tokens(
        &self,
        _namespace: &str,
        _spec: &NotebookTokenRequestSpec,
    ) -> Result<Arc<dyn NotebookTokens>, Error> {
        self.0.called("factory:notebook");
        (self.0.factory)(())?;
        Ok(Arc::new(Handle(self.0.clone())))
    }

    async fn livy_tokens(
        &self,
        _namespace: &str,
        _spec: &LivyTokenSpec,
    ) -> Result<Arc<dyn LivyTokens>, Error> {
        self.0.called("factory:livy");
        (self.0.factory)(())?;
        Ok(Arc::new(Handle(self.0.clone())))
    }

    async fn fabric_inventory(
        &self,
        _namespace: &str,
        _source: &FabricSource,
    ) -> Result<Arc<dyn FabricInventory>, Error> {
        self.0.called("factory:fabric");
        (self.0.factory)(())?;
        Ok(Arc::new(Handle(self.0.clone())))
    }

    async fn datarobot_inventory(
        &self,
        _namespace: &str,
        _source: &DataRobotSource,
    ) -> Result<Arc<dyn DataRobotInventory>, Error> {
        self.0.called("factory:datarobot");
        (self.0.factory)(())?;
        Ok(Arc::new(Handle(self.0.clone())))
    }
}

#[async_trait]
impl NotebookTokens for Handle {
    async fn notebook_access_token(&self) -> Result<NotebookAccessToken, Error> {
        self.0.called("notebook_access_token");
        (self.0.notebook_access_token)(())
    }
}

#[async_trait]
impl LivyTokens for Handle {
    async fn get_token(&self, at: &LivyLocation, token_id: &str) -> Result<LivyTokenInfo, Error> {
        self.0.called("get_token");
        (self.0.get_token)((at.clone(), token_id.to_owned()))
    }

    async fn list_tokens(&self, at: &LivyLocation) -> Result<Vec<LivyTokenInfo>, Error> {
        self.0.called("list_tokens");
        (self.0.list_tokens)(at.clone())
    }

    async fn create_token(
        &self,
        at: &LivyLocation,
        request: &TokenRequest,
    ) -> Result<String, Error> {
        self.0.called("create_token");
        (self.0.create_token)((at.clone(), request.name.clone()))
    }

    async fn delete_token(&self, at: &LivyLocation, token_id: &str) -> Result<(), Error> {
        self.0.called("delete_token");
        (self.0.delete_token)((at.clone(), token_id.to_owned()))
    }
}

#[async_trait]
impl FabricInventory for Handle {
    async fn list_workspaces(&self, roles: &[&str]) -> Result<Vec<Workspace>, Error> {
        self.0.called("list_workspaces");
        (self.0.list_workspaces)(roles.iter().map(|r| r.to_string()).collect())
    }

    async fn role_assignments_of(
        &self,
        workspace_ids: &[String],
    ) -> Result<Vec<RoleAssignments>, Error> {
        self.0.called("role_assignments_of");
        (self.0.role_assignments_of)(workspace_ids.to_vec())
    }
}

#[async_trait]
impl DataRobotInventory for Handle {
    async fn discover(&self, query: &NotebookQuery) -> Result<Vec<String>, Error> {
        self.0.called("discover");
        (self.0.discover)(query.clone())
    }

    async fn shared_roles(&self, notebook_ids: &[String]) -> Result<SharedRoles, Error> {
        self.0.called("shared_roles");
        (self.0.shared_roles)(notebook_ids.to_vec())
    }
}
