//! Credentials: values from Secrets in the resource's own namespace, and the pod-identity
//! namespace allowlist.

use crate::api::common::SecretKeyRef;
use crate::controller::error::Error;
use crate::redact::SecretString;
use async_trait::async_trait;
use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Caches Secrets read through another source for a short time, and makes concurrent reads of
/// the same Secret wait for one API request: when a thousand resources share one credentials
/// Secret, they cost one GET per `ttl` instead of one each. Only Secrets that exist are cached,
/// so a missing Secret is noticed as soon as it is created; a changed one within `ttl`.
pub struct CachedSecretSource {
    inner: Arc<dyn SecretSource>,
    ttl: Duration,
    slots: Mutex<HashMap<(String, String), Slot>>,
}

type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Secret)>>>;

impl CachedSecretSource {
    /// A cache in front of `inner`; `ttl` zero disables caching.
    pub fn new(inner: Arc<dyn SecretSource>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, namespace: &str, name: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        // Forget expired entries nobody is reading, so values don't linger.
        let ttl = self.ttl;
        slots.retain(|_, slot| match slot.try_lock() {
            Ok(content) => content.as_ref().is_some_and(|(at, _)| at.elapsed() < ttl),
            Err(_) => true,
        });
        slots
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default()
            .clone()
    }
}

#[async_trait]
impl SecretSource for CachedSecretSource {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        if self.ttl.is_zero() {
            return self.inner.get_secret(namespace, name).await;
        }
        let slot = self.slot(namespace, name);
        let mut content = slot.lock().await;
        if let Some((at, secret)) = content.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(Some(secret.clone()));
        }
        let fetched = self.inner.get_secret(namespace, name).await?;
        *content = fetched.clone().map(|s| (Instant::now(), s));
        Ok(fetched)
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
    // A Secret name is one path segment under the resource's own namespace: a name with a `/`
    // (or `..`) must never reach the API client, which puts it into the URL as it is.
    if !crate::api::names::is_dns_subdomain(&r.name) {
        return Err(Error::InvalidSpec(format!(
            "{:?} is not a Secret name; credentials are read only from Secrets in namespace \
             {namespace}",
            crate::providers::error::clip(&r.name, 100)
        )));
    }
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

    /// Counts reads and serves a Secret whose value can change.
    struct Counting {
        reads: std::sync::atomic::AtomicUsize,
        value: Mutex<Option<&'static str>>,
    }

    #[async_trait]
    impl SecretSource for Counting {
        async fn get_secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(self
                .value
                .lock()
                .unwrap()
                .map(|v| secret(ns, name, &[("k", v.as_bytes())])))
        }
    }

    #[tokio::test]
    async fn the_cache_coalesces_reads_and_expires() {
        let inner = Arc::new(Counting {
            reads: Default::default(),
            value: Mutex::new(Some("one")),
        });
        let cache = Arc::new(CachedSecretSource::new(
            inner.clone(),
            Duration::from_millis(300),
        ));
        let reads = futures::future::join_all((0..50).map(|_| {
            let c = cache.clone();
            async move { read_key(c.as_ref(), "ns", &kref("s", "k")).await.unwrap() }
        }))
        .await;
        assert!(reads.iter().all(|v| v.value.expose() == "one"));
        assert_eq!(
            inner.reads.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "50 readers, 1 GET"
        );

        // What one read of key k of Secret s in `ns` gives.
        let read = |ns: &'static str| {
            let cache = cache.clone();
            async move {
                read_key(cache.as_ref(), ns, &kref("s", "k"))
                    .await
                    .map(|v| v.value.expose().to_string())
            }
        };

        // A changed value is seen once the entry expired.
        *inner.value.lock().unwrap() = Some("two");
        assert_eq!(read("ns").await.unwrap(), "one");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(read("ns").await.unwrap(), "two");

        // A missing Secret is not cached: it is seen as soon as it exists.
        *inner.value.lock().unwrap() = None;
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(read("ns").await.is_err());
        *inner.value.lock().unwrap() = Some("three");
        assert_eq!(read("ns").await.unwrap(), "three");

        // Other namespaces are other entries.
        assert_eq!(read("other").await.unwrap(), "three");
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
