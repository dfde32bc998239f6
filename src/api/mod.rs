//! The custom resource types (group `workspaceaccess.io`, version `v1alpha1`).

pub mod cluster_credential;
pub mod common;
pub mod duration;
pub mod livy_token;
pub mod names;
pub mod notebook_token_request;
pub mod workspace_view;

pub use cluster_credential::{ClusterCredential, ClusterCredentialSpec, ClusterCredentialStatus};
pub use common::*;
pub use livy_token::{LivyToken, LivyTokenSpec, LivyTokenStatus};
pub use notebook_token_request::{
    NotebookTokenRequest, NotebookTokenRequestSpec, NotebookTokenRequestStatus,
};
pub use workspace_view::{WorkspaceView, WorkspaceViewSpec, WorkspaceViewStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CRDs, in a stable order, with descriptions reflowed for `kubectl explain`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        NotebookTokenRequest::crd(),
        LivyToken::crd(),
        WorkspaceView::crd(),
        ClusterCredential::crd(),
    ]
    .into_iter()
    .map(reflow_descriptions)
    .collect()
}

/// Doc comments are wrapped at 100 columns; `kubectl explain` wraps again. Joins the lines of
/// each paragraph so the text reads as written.
fn reflow_descriptions(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    match child {
                        serde_json::Value::String(text) if k == "description" => {
                            *text = reflow(text);
                        }
                        _ => walk(child),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut value = match serde_json::to_value(&crd) {
        Ok(v) => v,
        Err(_) => return crd,
    };
    walk(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
}

/// Joins the lines of each paragraph (paragraphs are separated by blank lines).
fn reflow(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
        .trim()
        .to_owned()
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

#[cfg(test)]
mod bad_input_tests;

#[cfg(test)]
mod tests {
    #[test]
    fn reflow_joins_lines_but_keeps_paragraphs() {
        assert_eq!(super::reflow("a\nb\n\nc\n d"), "a b\n\nc d");
        assert_eq!(super::reflow("one line"), "one line");
    }
}
