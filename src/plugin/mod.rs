//! The kubectl plugin `kubectl-workspaceaccess` (`kubectl workspaceaccess ...` once it is on
//! `PATH`), for the people on call: which tokens are about to expire (`status`), renew one now
//! (`renew`), and a WorkspaceView's inventory for access reviews (`inventory`). The binary
//! (`src/bin/kubectl-workspaceaccess.rs`) parses the command line and prints; what it prints is
//! built here, from the kinds' own types.
//!
//! The kinds the plugin knows are the entries of [`KINDS`]: each names its kind, short name and
//! plural, whether it is namespaced and renewable, and the function that lists it as
//! [`status::StatusRow`]s. A new kind is one entry there and a [`Listed`] implementation.

pub mod format;
pub mod inventory;
pub mod renew;
pub mod status;

use crate::api::common::{GROUP, HasCommonStatus, VERSION};
use crate::api::{ClusterCredential, LivyToken, NotebookTokenRequest, WorkspaceView};
use futures::future::BoxFuture;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, NamespaceResourceScope};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use status::StatusRow;
use std::fmt::Debug;
use std::path::Path;

/// Field manager of the plugin's writes (the renew annotation).
pub const FIELD_MANAGER: &str = "kubectl-workspaceaccess";

/// What went wrong, in words for the person at the terminal.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No kubeconfig and not in a cluster, or an unusable kubeconfig.
    #[error("no cluster to talk to: {0} (set KUBECONFIG or pass --kubeconfig, as for kubectl)")]
    NoCluster(String),
    /// The API server did not answer.
    #[error("can't reach the API server at {url}: {cause}")]
    Unreachable {
        /// The API server's URL from the kubeconfig.
        url: String,
        /// What the connection attempt said.
        cause: String,
    },
    /// The named resource doesn't exist.
    #[error("{kind} {name:?} not found in namespace {namespace:?}")]
    NotFound {
        /// Kind, lower case (as kubectl names it).
        kind: String,
        /// The name asked for.
        name: String,
        /// The namespace looked in.
        namespace: String,
    },
    /// The kind's CRD is not installed.
    #[error(
        "the cluster does not serve {plural}.{GROUP}/{VERSION}; install the CRDs (kubectl apply -f crds/)"
    )]
    NotServed {
        /// The kind's plural.
        plural: String,
    },
    /// The API server refused the credentials.
    #[error("the API server refused the credentials of the kubeconfig: {0}")]
    Unauthorized(String),
    /// RBAC doesn't allow the request.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
    /// A renew request was not handled in time.
    #[error("{0}")]
    Timeout(String),
    /// Any other answer of the API server.
    #[error("the API server answered: {0}")]
    Api(String),
}

/// The cluster of the kubeconfig: a client, the namespace of the current context, and the API
/// server's URL (for messages).
#[derive(Clone)]
pub struct Connection {
    /// Client for the cluster.
    pub client: kube::Client,
    /// The namespace of the kubeconfig's context (default `default`).
    pub namespace: String,
    /// The API server's URL.
    pub url: String,
}

impl Connection {
    /// Connects as kubectl does: `kubeconfig` (else `KUBECONFIG`, else `~/.kube/config`, else
    /// the in-cluster configuration), with `context` instead of the current context if given.
    /// Nothing is sent yet.
    pub async fn new(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
    ) -> Result<Self, PluginError> {
        crate::providers::http::install_crypto_provider();
        let options = KubeConfigOptions {
            context: context.map(str::to_owned),
            ..Default::default()
        };
        let no_cluster = |e: &dyn std::fmt::Display| PluginError::NoCluster(e.to_string());
        let config = match (kubeconfig, context) {
            (Some(path), _) => {
                let file = Kubeconfig::read_from(path).map_err(|e| no_cluster(&e))?;
                kube::Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| no_cluster(&e))?
            }
            (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| no_cluster(&e))?,
            (None, None) => kube::Config::infer().await.map_err(|e| no_cluster(&e))?,
        };
        let url = config.cluster_url.to_string();
        let namespace = config.default_namespace.clone();
        let client = kube::Client::try_from(config).map_err(|e| no_cluster(&e))?;
        Ok(Self {
            client,
            namespace,
            url,
        })
    }

    /// A connection over an existing client (tests).
    pub fn from_client(client: kube::Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            url: "(test client)".into(),
        }
    }

    /// The error for a failed request about `what` (a kind, and the name asked for if any).
    pub fn error(
        &self,
        e: kube::Error,
        kind: &KindInfo,
        name: Option<&str>,
        namespace: &str,
    ) -> PluginError {
        match e {
            kube::Error::Api(status) => {
                let message = status.message.clone();
                match (status.code, name) {
                    (404, Some(name))
                        if status.reason == "NotFound"
                            && !message
                                .contains("the server could not find the requested resource") =>
                    {
                        PluginError::NotFound {
                            kind: kind.kind.to_lowercase(),
                            name: name.to_owned(),
                            namespace: namespace.to_owned(),
                        }
                    }
                    (404, _) => PluginError::NotServed {
                        plural: kind.plural.to_owned(),
                    },
                    (401, _) => PluginError::Unauthorized(message),
                    (403, _) => PluginError::Forbidden(message),
                    _ => PluginError::Api(message),
                }
            }
            other => {
                let mut cause = other.to_string();
                let mut source = std::error::Error::source(&other);
                while let Some(s) = source {
                    let text = s.to_string();
                    if !cause.contains(&text) {
                        cause = format!("{cause}: {text}");
                    }
                    source = s.source();
                }
                PluginError::Unreachable {
                    url: self.url.clone(),
                    cause,
                }
            }
        }
    }
}

/// How a kind is listed: all of it in `namespace`, or everywhere with `None`.
pub type ListFn = for<'a> fn(
    &'a kube::Client,
    Option<&'a str>,
) -> BoxFuture<'a, Result<Vec<StatusRow>, kube::Error>>;

/// A kind the plugin knows.
#[derive(Debug)]
pub struct KindInfo {
    /// The kind, e.g. NotebookTokenRequest.
    pub kind: &'static str,
    /// Its short name, e.g. ntr (the table's RESOURCE column uses it).
    pub short: &'static str,
    /// Its plural, e.g. notebooktokenrequests.
    pub plural: &'static str,
    /// Namespaced (else cluster-scoped: listed with `-A` only).
    pub namespaced: bool,
    /// Whether `renew` applies (it has a token or an inventory to obtain again).
    pub renewable: bool,
    /// Lists it.
    pub list: ListFn,
}

impl KindInfo {
    /// The API resource, for untyped requests.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: GROUP.into(),
            version: VERSION.into(),
            api_version: format!("{GROUP}/{VERSION}"),
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }

    /// Whether `name` (as typed: the kind, its short name, singular or plural, case-insensitive,
    /// optionally with `.workspaceaccess.io`) names this kind.
    pub fn is_named(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        let name = name.strip_suffix(&format!(".{GROUP}")).unwrap_or(&name);
        name == self.short || name == self.plural || name == self.kind.to_ascii_lowercase()
    }
}

/// The kinds, in the order `status` lists kinds with the same expiry.
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: "NotebookTokenRequest",
        short: "ntr",
        plural: "notebooktokenrequests",
        namespaced: true,
        renewable: true,
        list: list_namespaced::<NotebookTokenRequest>,
    },
    KindInfo {
        kind: "LivyToken",
        short: "livytoken",
        plural: "livytokens",
        namespaced: true,
        renewable: true,
        list: list_namespaced::<LivyToken>,
    },
    KindInfo {
        kind: "WorkspaceView",
        short: "wsv",
        plural: "workspaceviews",
        namespaced: true,
        renewable: true,
        list: list_namespaced::<WorkspaceView>,
    },
    KindInfo {
        kind: "ClusterCredential",
        short: "ccred",
        plural: "clustercredentials",
        namespaced: false,
        renewable: false,
        list: list_cluster_credentials,
    },
];

/// The kind named `name` (see [`KindInfo::is_named`]).
pub fn kind_named(name: &str) -> Result<&'static KindInfo, PluginError> {
    KINDS.iter().find(|k| k.is_named(name)).ok_or_else(|| {
        let known: Vec<&str> = KINDS.iter().map(|k| k.short).collect();
        PluginError::Usage(format!(
            "unknown kind {name:?}; one of {}",
            known.join(", ")
        ))
    })
}

/// `KIND/NAME`, as kubectl takes it.
pub fn parse_target(target: &str) -> Result<(&'static KindInfo, String), PluginError> {
    let Some((kind, name)) = target.split_once('/') else {
        return Err(PluginError::Usage(format!(
            "{target:?}: name the resource as KIND/NAME, e.g. ntr/ml-notebooks"
        )));
    };
    let kind = kind_named(kind)?;
    if !crate::api::names::is_dns_subdomain(name) {
        return Err(PluginError::Usage(format!(
            "{target:?}: {name:?} is not a resource name"
        )));
    }
    Ok((kind, name.to_owned()))
}

/// A kind as the plugin reads it: its status through [`HasCommonStatus`].
pub trait Listed:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
    /// The status, if any.
    fn summary(&self) -> Option<&dyn HasCommonStatus>;
}

macro_rules! listed {
    ($($kind:ty),*) => {$(
        impl Listed for $kind {
            fn summary(&self) -> Option<&dyn HasCommonStatus> {
                self.status.as_ref().map(|s| s as &dyn HasCommonStatus)
            }
        }
    )*};
}
listed!(NotebookTokenRequest, LivyToken, WorkspaceView);

/// Every object of a kind in `namespace` (all namespaces with `None`), page by page.
pub async fn list_all<K>(api: Api<K>) -> Result<Vec<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}

/// [`ListFn`] of a namespaced kind.
pub fn list_namespaced<'a, K>(
    client: &'a kube::Client,
    namespace: Option<&'a str>,
) -> BoxFuture<'a, Result<Vec<StatusRow>, kube::Error>>
where
    K: Listed + Resource<Scope = NamespaceResourceScope>,
{
    Box::pin(async move {
        let api: Api<K> = match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        Ok(list_all(api).await?.iter().map(status::row_of).collect())
    })
}

/// [`ListFn`] of a cluster-scoped kind: listed with `-A` only.
pub fn list_cluster<'a, K: Listed>(
    client: &'a kube::Client,
    namespace: Option<&'a str>,
) -> BoxFuture<'a, Result<Vec<StatusRow>, kube::Error>> {
    Box::pin(async move {
        if namespace.is_some() {
            return Ok(Vec::new());
        }
        Ok(list_all(Api::<K>::all(client.clone()))
            .await?
            .iter()
            .map(status::row_of)
            .collect())
    })
}

/// [`ListFn`] of ClusterCredentials (cluster-scoped: listed with `-A` only), whose status has a
/// Ready condition but no token.
pub fn list_cluster_credentials<'a>(
    client: &'a kube::Client,
    namespace: Option<&'a str>,
) -> BoxFuture<'a, Result<Vec<StatusRow>, kube::Error>> {
    Box::pin(async move {
        if namespace.is_some() {
            return Ok(Vec::new());
        }
        Ok(list_all(Api::<ClusterCredential>::all(client.clone()))
            .await?
            .iter()
            .map(status::credential_row)
            .collect())
    })
}

/// The name of `obj` as `short/name`.
pub fn resource_name<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let kind = K::kind(&());
    let short = KINDS
        .iter()
        .find(|k| k.kind == kind)
        .map_or_else(|| kind.to_lowercase(), |k| k.short.to_owned());
    format!("{short}/{}", obj.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_kind_slash_name() {
        for (t, kind) in [
            ("ntr/ml", "NotebookTokenRequest"),
            ("NotebookTokenRequest/ml", "NotebookTokenRequest"),
            (
                "notebooktokenrequests.workspaceaccess.io/ml",
                "NotebookTokenRequest",
            ),
            ("livytoken/ml", "LivyToken"),
            ("livytokens/ml", "LivyToken"),
            ("wsv/ml", "WorkspaceView"),
            ("workspaceview/ml", "WorkspaceView"),
        ] {
            let (k, name) = parse_target(t).unwrap();
            assert_eq!((k.kind, name.as_str()), (kind, "ml"), "{t}");
        }
        for (bad, says) in [
            ("ml", "KIND/NAME"),
            (
                "secret/ml",
                "unknown kind \"secret\"; one of ntr, livytoken, wsv",
            ),
            ("ntr/../x", "is not a resource name"),
            ("ntr/", "is not a resource name"),
        ] {
            let err = parse_target(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn every_kind_of_the_crds_is_known_with_its_short_name_and_plural() {
        let crds = crate::api::crds();
        assert_eq!(crds.len(), KINDS.len());
        for crd in crds {
            let names = &crd.spec.names;
            let k = KINDS.iter().find(|k| k.kind == names.kind).unwrap();
            assert_eq!(k.plural, names.plural);
            let short = names.short_names.clone().unwrap_or_default();
            assert!(
                short.iter().any(|s| s == k.short) || names.singular.as_deref() == Some(k.short),
                "{}: {short:?}",
                k.kind
            );
            assert_eq!(k.namespaced, crd.spec.scope == "Namespaced");
        }
    }
}
