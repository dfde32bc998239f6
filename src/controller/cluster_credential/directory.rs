//! Where ClusterCredentials, Namespace labels and the Secrets of the credential namespace are
//! looked up: the watches' caches while the controllers run, the API server before that (a
//! reconciler called directly), or the documents given to `preview`.
//!
//! Credential Secrets are read only from the credential namespace: a request for any other
//! namespace finds nothing. While the watches run, a Secret's value is read once per
//! `resourceVersion` the metadata watch reports, so a rotated value is used from the next
//! reconciliation on (no time-based cache that could serve the old value), and a Secret the
//! watch doesn't know is missing.

use crate::api::ClusterCredential;
use crate::controller::credentials::SecretSource;
use crate::controller::error::Error;
use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

/// Labels of a namespace.
pub type Labels = BTreeMap<String, String>;

/// The watches' caches, once they are synced.
#[derive(Clone)]
pub struct Watched {
    /// Every ClusterCredential.
    pub credentials: Store<ClusterCredential>,
    /// Namespaces' metadata (labels).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Metadata of the Secrets in the credential namespace.
    pub secrets: Store<PartialObjectMeta<Secret>>,
}

enum Fallback {
    /// GET from the API server.
    Api(kube::Client),
    /// Fixed documents (`preview`, tests).
    Fixed {
        credentials: BTreeMap<String, ClusterCredential>,
        namespaces: BTreeMap<String, Labels>,
    },
}

/// How lookups are answered once `run` decided.
enum Mode {
    /// From the watches' caches.
    Watched(Watched),
    /// Not at all: ClusterCredentials are turned off (`--cluster-credentials=false`).
    Disabled,
}

/// Looks up ClusterCredentials, Namespace labels and credential Secrets.
pub struct CredentialDirectory {
    namespace: String,
    fallback: Fallback,
    /// Reads Secrets of the credential namespace (uncached).
    reader: Arc<dyn SecretSource>,
    mode: OnceLock<Mode>,
    /// Credential Secrets read while watched, with the resourceVersion they were read at.
    values: Mutex<HashMap<String, (String, Secret)>>,
}

impl CredentialDirectory {
    /// A directory asking the API server (until [`Self::attach`]), reading the Secrets of
    /// `credential_namespace` through `reader`.
    pub fn api(
        client: kube::Client,
        credential_namespace: impl Into<String>,
        reader: Arc<dyn SecretSource>,
    ) -> Self {
        Self::new(credential_namespace.into(), Fallback::Api(client), reader)
    }

    /// A directory of fixed documents: ClusterCredentials, namespaces' labels, and the Secrets
    /// `reader` holds.
    pub fn fixed(
        credential_namespace: impl Into<String>,
        credentials: impl IntoIterator<Item = ClusterCredential>,
        namespaces: BTreeMap<String, Labels>,
        reader: Arc<dyn SecretSource>,
    ) -> Self {
        let credentials = credentials.into_iter().map(|c| (c.name_any(), c)).collect();
        Self::new(
            credential_namespace.into(),
            Fallback::Fixed {
                credentials,
                namespaces,
            },
            reader,
        )
    }

    fn new(namespace: String, fallback: Fallback, reader: Arc<dyn SecretSource>) -> Self {
        Self {
            namespace,
            fallback,
            reader,
            mode: OnceLock::new(),
            values: Mutex::new(HashMap::new()),
        }
    }

    /// The namespace whose Secrets ClusterCredentials name.
    pub fn credential_namespace(&self) -> &str {
        &self.namespace
    }

    /// From now on, answers from the watches' caches (the first of this and
    /// [`Self::disable`] wins).
    pub fn attach(&self, watched: Watched) {
        let _ = self.mode.set(Mode::Watched(watched));
    }

    /// From now on, finds no ClusterCredential: they are turned off.
    pub fn disable(&self) {
        let _ = self.mode.set(Mode::Disabled);
    }

    /// The watches' caches, if attached.
    pub fn watched(&self) -> Option<&Watched> {
        match self.mode.get() {
            Some(Mode::Watched(w)) => Some(w),
            _ => None,
        }
    }

    /// The ClusterCredential `name`, if it exists.
    pub async fn get(&self, name: &str) -> Result<Option<ClusterCredential>, Error> {
        match self.mode.get() {
            Some(Mode::Watched(w)) => {
                return Ok(w
                    .credentials
                    .get(&ObjectRef::new(name))
                    .map(|c| c.as_ref().clone()));
            }
            Some(Mode::Disabled) => {
                return Err(Error::CredentialsNotFound(format!(
                    "ClusterCredential {name} can't be used: this operator runs with \
                     --cluster-credentials=false"
                )));
            }
            None => {}
        }
        match &self.fallback {
            Fallback::Api(client) => Ok(Api::<ClusterCredential>::all(client.clone())
                .get_opt(name)
                .await?),
            Fallback::Fixed { credentials, .. } => Ok(credentials.get(name).cloned()),
        }
    }

    /// The labels of namespace `namespace`, if it is known.
    pub async fn namespace_labels(&self, namespace: &str) -> Result<Option<Labels>, kube::Error> {
        match self.mode.get() {
            Some(Mode::Watched(w)) => {
                return Ok(w
                    .namespaces
                    .get(&ObjectRef::new(namespace))
                    .map(|n| n.labels().clone()));
            }
            Some(Mode::Disabled) => return Ok(None),
            None => {}
        }
        match &self.fallback {
            Fallback::Api(client) => Ok(Api::<Namespace>::all(client.clone())
                .get_metadata_opt(namespace)
                .await?
                .map(|n| n.labels().clone())),
            Fallback::Fixed { namespaces, .. } => Ok(namespaces.get(namespace).cloned()),
        }
    }

    /// Whether namespace `namespace` is being deleted, as far as the watch of Namespaces has
    /// seen (false when Namespaces are not watched: `--cluster-credentials=false`).
    pub fn namespace_terminating(&self, namespace: &str) -> bool {
        self.watched().is_some_and(|w| {
            w.namespaces
                .get(&ObjectRef::new(namespace))
                .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
        })
    }

    /// Forgets the values read of Secret `name` (it changed or went away).
    pub fn forget_secret(&self, name: &str) {
        self.values
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

#[async_trait]
impl SecretSource for CredentialDirectory {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        if namespace != self.namespace {
            return Ok(None);
        }
        let w = match self.mode.get() {
            Some(Mode::Watched(w)) => w,
            Some(Mode::Disabled) => return Ok(None),
            None => return self.reader.get_secret(namespace, name).await,
        };
        let Some(meta) = w.secrets.get(&ObjectRef::new(name).within(namespace)) else {
            self.forget_secret(name);
            return Ok(None);
        };
        let version = meta.resource_version().unwrap_or_default();
        {
            let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((v, secret)) = values.get(name)
                && *v == version
            {
                return Ok(Some(secret.clone()));
            }
        }
        let fetched = self.reader.get_secret(namespace, name).await?;
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        match &fetched {
            Some(s) => {
                values.insert(
                    name.to_owned(),
                    (s.resource_version().unwrap_or_default(), s.clone()),
                );
            }
            None => {
                values.remove(name);
            }
        }
        Ok(fetched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::credentials::StaticSecretSource;
    use kube::api::ObjectMeta;

    fn secret(ns: &str, name: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn secrets_are_read_only_from_the_credential_namespace() {
        let mut src = StaticSecretSource::default();
        src.insert(secret("wao", "azure-sp"), "wao");
        src.insert(secret("team-a", "azure-sp"), "team-a");
        let d = CredentialDirectory::fixed("wao", [], BTreeMap::new(), Arc::new(src));
        assert!(d.get_secret("wao", "azure-sp").await.unwrap().is_some());
        assert!(
            d.get_secret("team-a", "azure-sp").await.unwrap().is_none(),
            "another namespace's Secret is never reached"
        );
        assert_eq!(d.credential_namespace(), "wao");
    }
}
