//! Credentials: values from Secrets in the resource's own namespace, and the pod-identity
//! namespace allowlist.

use crate::api::common::SecretKeyRef;
use crate::controller::error::Error;
use crate::redact::SecretString;
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Where Secrets are read from: the cluster, or (for `preview`) manifests given on the command
/// line.
#[async_trait]
pub trait SecretSource: Send + Sync {
    /// The Secret `namespace/name`, or `None` if it doesn't exist.
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error>;
}

/// Reads Secrets from the API server.
pub struct KubeSecretSource(pub kube::Client);

#[async_trait]
impl SecretSource for KubeSecretSource {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        kube::Api::<Secret>::namespaced(self.0.clone(), namespace)
            .get_opt(name)
            .await
    }
}

/// Secrets held in memory (for `preview` and tests).
#[derive(Default)]
pub struct StaticSecretSource {
    secrets: BTreeMap<(String, String), Secret>,
}

impl StaticSecretSource {
    /// Adds a Secret; its namespace defaults to `default_namespace`.
    pub fn insert(&mut self, mut secret: Secret, default_namespace: &str) {
        let ns = secret
            .metadata
            .namespace
            .get_or_insert_with(|| default_namespace.to_owned())
            .clone();
        let name = secret.metadata.name.clone().unwrap_or_default();
        self.secrets.insert((ns, name), secret);
    }
}

#[async_trait]
impl SecretSource for StaticSecretSource {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        Ok(self
            .secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned())
    }
}

/// A credential value and a version that changes whenever the value does (a hash prefix of the
/// value: stable across restarts and independent of where the Secret came from).
#[derive(Clone, Debug)]
pub struct CredentialValue {
    /// The value.
    pub value: SecretString,
    /// Content version, for cache keys.
    pub version: String,
}

/// Reads one key of a Secret in `namespace`. Trailing newlines (as `echo` leaves them) are
/// removed. A missing Secret, key or empty value is [`Error::CredentialsNotFound`].
pub async fn read_key(
    source: &dyn SecretSource,
    namespace: &str,
    r: &SecretKeyRef,
) -> Result<CredentialValue, Error> {
    let secret = source
        .get_secret(namespace, &r.name)
        .await?
        .ok_or_else(|| {
            Error::CredentialsNotFound(format!("Secret {namespace}/{} not found", r.name))
        })?;
    value_of(&secret, namespace, &r.name, &r.key)
}

/// The value of `key` in an already-read Secret.
pub fn value_of(
    secret: &Secret,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<CredentialValue, Error> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.as_bytes().to_vec())
        })
        .ok_or_else(|| {
            Error::CredentialsNotFound(format!("Secret {namespace}/{name} has no key {key:?}"))
        })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::CredentialsNotFound(format!(
            "key {key:?} of Secret {namespace}/{name} is not UTF-8 text"
        ))
    })?;
    let text = text.trim_end_matches(['\n', '\r']).to_owned();
    if text.is_empty() {
        return Err(Error::CredentialsNotFound(format!(
            "key {key:?} of Secret {namespace}/{name} is empty"
        )));
    }
    let version = hex::encode(&Sha256::digest(text.as_bytes())[..8]);
    Ok(CredentialValue {
        value: SecretString::new(text),
        version,
    })
}

/// Which namespaces may use the operator pod's own identity (Azure workload identity, Alibaba
/// RRSA). From the `--pod-identity-namespace` flag; `*` allows every namespace.
#[derive(Clone, Debug, Default)]
pub struct PodIdentityPolicy {
    all: bool,
    namespaces: BTreeSet<String>,
}

impl PodIdentityPolicy {
    /// A policy from the flag's values.
    pub fn new<I: IntoIterator<Item = String>>(entries: I) -> Self {
        let mut p = Self::default();
        for e in entries {
            if e == "*" {
                p.all = true;
            } else {
                p.namespaces.insert(e);
            }
        }
        p
    }

    /// Ok if `namespace` may use pod identity, else [`Error::PodIdentityNotAllowed`].
    pub fn check(&self, namespace: &str, what: &str) -> Result<(), Error> {
        if self.all || self.namespaces.contains(namespace) {
            Ok(())
        } else {
            Err(Error::PodIdentityNotAllowed(format!(
                "{what} uses the operator's own identity, which namespace {namespace} may not use; \
                 ask the operator's administrators to add it to --pod-identity-namespace, or \
                 reference a Secret in this namespace instead"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::error::Reason;
    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    fn secret(ns: &str, name: &str, data: &[(&str, &[u8])]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn kref(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    #[tokio::test]
    async fn reads_values_from_the_same_namespace_only() {
        let mut src = StaticSecretSource::default();
        src.insert(
            secret("team-a", "sp", &[("clientSecret", b"s3cret\n")]),
            "default",
        );
        src.insert(
            secret("team-b", "other", &[("clientSecret", b"x")]),
            "default",
        );
        let v = read_key(&src, "team-a", &kref("sp", "clientSecret"))
            .await
            .unwrap();
        assert_eq!(v.value.expose(), "s3cret", "trailing newline removed");
        assert_eq!(v.version.len(), 16);
        // The same name in another namespace is invisible.
        let err = read_key(&src, "team-a", &kref("other", "clientSecret"))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), Reason::CredentialsNotFound);
        assert_eq!(err.to_string(), "Secret team-a/other not found");
    }

    #[tokio::test]
    async fn missing_or_empty_keys_are_credentials_not_found() {
        let mut src = StaticSecretSource::default();
        src.insert(
            secret("ns", "s", &[("empty", b"\n"), ("bin", &[0xff, 0xfe])]),
            "default",
        );
        for (key, msg) in [
            ("nope", "has no key \"nope\""),
            ("empty", "is empty"),
            ("bin", "not UTF-8"),
        ] {
            let err = read_key(&src, "ns", &kref("s", key)).await.unwrap_err();
            assert_eq!(err.reason(), Reason::CredentialsNotFound);
            assert!(err.to_string().contains(msg), "{err}");
        }
    }

    #[tokio::test]
    async fn version_changes_with_the_value() {
        let mut a = StaticSecretSource::default();
        a.insert(secret("ns", "s", &[("k", b"one")]), "default");
        let mut b = StaticSecretSource::default();
        b.insert(secret("ns", "s", &[("k", b"two")]), "default");
        let va = read_key(&a, "ns", &kref("s", "k")).await.unwrap();
        let vb = read_key(&b, "ns", &kref("s", "k")).await.unwrap();
        assert_ne!(va.version, vb.version);
        assert!(!va.version.contains("one"));
    }

    #[test]
    fn pod_identity_allowlist() {
        let p = PodIdentityPolicy::new(vec!["platform".to_string()]);
        assert!(p.check("platform", "azure.workloadIdentity").is_ok());
        let err = p.check("team-a", "azure.workloadIdentity").unwrap_err();
        assert_eq!(err.reason(), Reason::PodIdentityNotAllowed);
        assert!(PodIdentityPolicy::default().check("x", "y").is_err());
        assert!(
            PodIdentityPolicy::new(vec!["*".to_string()])
                .check("any", "y")
                .is_ok()
        );
    }
}
