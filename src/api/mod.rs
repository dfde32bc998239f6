//! The custom resource types (group `workspaceaccess.io`, version `v1alpha1`).

pub mod common;
pub mod duration;
pub mod livy_token;
pub mod notebook_token_request;
pub mod workspace_view;

pub use common::*;
pub use livy_token::{LivyToken, LivyTokenSpec, LivyTokenStatus};
pub use notebook_token_request::{
    NotebookTokenRequest, NotebookTokenRequestSpec, NotebookTokenRequestStatus,
};
pub use workspace_view::{WorkspaceView, WorkspaceViewSpec, WorkspaceViewStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The three CRDs, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        NotebookTokenRequest::crd(),
        LivyToken::crd(),
        WorkspaceView::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream, as `workspace-access-operator crd` prints it and
/// `crds/` holds it.
pub fn crds_yaml() -> Result<String, serde_saphyr::ser::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod schema_tests;
