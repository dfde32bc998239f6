//! Controllers: the shared [`Context`], the generic reconcile driver, and the wiring of one
//! `Controller` per kind.
//!
//! Each kind implements [`Reconciler::sync`], which validates the spec, talks to its provider
//! and writes the Secret (token kinds), and returns the desired status. The driver around it
//! ([`driver::reconcile`]) is the same for every kind: it writes the Ready condition and status
//! only when they changed, emits events on transitions, records metrics, and decides the
//! requeue (renewal time, or capped backoff / Retry-After after a failure).

pub mod credentials;
pub mod driver;
pub mod error;
pub mod inventory;
pub mod livy;
pub mod notebook;
pub mod run;
pub mod schedule;
pub mod secret;
pub mod status;
pub mod validate;
pub mod workspace_view;

use crate::api::common::HasCommonStatus;
use crate::api::{LivyToken, NotebookTokenRequest, WorkspaceView};
use crate::controller::credentials::{PodIdentityPolicy, SecretSource};
use crate::metrics::Metrics;
use crate::providers::auth::entra::EntraTokens;
use crate::providers::endpoint::EndpointPolicy;
use crate::providers::http::HttpClient;
use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use serde::{Serialize, de::DeserializeOwned};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The operator's resource kinds, as the generic machinery sees them.
pub trait ManagedKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind's status type.
    type Status: HasCommonStatus
        + Clone
        + Default
        + PartialEq
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static;
    /// The kind's name, for metrics and logs.
    const KIND: &'static str;
    /// The current status, if any.
    fn status(&self) -> Option<&Self::Status>;
}

macro_rules! managed_kind {
    ($kind:ty, $status:ty, $name:literal) => {
        impl ManagedKind for $kind {
            type Status = $status;
            const KIND: &'static str = $name;
            fn status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
        }
    };
}
managed_kind!(
    NotebookTokenRequest,
    crate::api::NotebookTokenRequestStatus,
    "NotebookTokenRequest"
);
managed_kind!(LivyToken, crate::api::LivyTokenStatus, "LivyToken");
managed_kind!(
    WorkspaceView,
    crate::api::WorkspaceViewStatus,
    "WorkspaceView"
);

pub use driver::{Preview, Reconciler, Synced};

/// Attempts of a write that the API server answers with 409 Conflict.
pub const CONFLICT_ATTEMPTS: u32 = 4;

/// Runs a write, retrying it (after 50, 100, 200 ms) when the API server answers 409 Conflict,
/// as it can for concurrent writers; other errors return at once.
pub async fn retry_on_conflict<T, F, Fut>(mut write: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 1;
    loop {
        match write().await {
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < CONFLICT_ATTEMPTS => {
                tracing::debug!(attempt, "write conflicted; retrying");
                tokio::time::sleep(Duration::from_millis(50 << (attempt - 1))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The operator's configuration that reconcilers consult.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Which provider endpoints resources may name.
    pub endpoint_policy: EndpointPolicy,
    /// Which namespaces may use the operator pod's identity.
    pub pod_identity: PodIdentityPolicy,
    /// First retry delay after a failure.
    pub base_backoff: Duration,
    /// Longest retry delay (a provider's Retry-After may ask for longer and is honoured).
    pub max_backoff: Duration,
    /// How long a credentials Secret read from the API server is reused (zero: every
    /// reconciliation reads it).
    pub credential_cache_ttl: Duration,
    /// Which successful syncs publish a Normal event (failures always publish a Warning).
    pub sync_events: SyncEvents,
}

/// Which successful syncs publish a Normal `Synced` event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncEvents {
    /// Every sync that changed something (a token minted, read, rotated; an inventory that
    /// changed) and every return to Ready.
    #[default]
    All,
    /// Only when the resource becomes Ready (first sync, recovery after a failure).
    Transitions,
    /// None: only failures publish events. Saves an API-server write per renewal.
    None,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            endpoint_policy: EndpointPolicy::default(),
            pod_identity: PodIdentityPolicy::default(),
            base_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            credential_cache_ttl: Duration::from_secs(10),
            sync_events: SyncEvents::All,
        }
    }
}

/// Source of the current time (replaceable in tests).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that tests set and advance.
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    /// A clock at `t`.
    pub fn new(t: Timestamp) -> Self {
        Self(Mutex::new(t))
    }
    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t = schedule::add(*t, d);
    }
    /// Sets the clock.
    pub fn set(&self, to: Timestamp) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Metadata of the Secrets the operator owns, from one label-filtered, metadata-only watch.
/// Empty (every lookup misses, and callers fall back to a GET) when no watch runs, e.g. in
/// tests that call reconcilers directly.
#[derive(Clone, Default)]
pub struct SecretCache(Option<Store<PartialObjectMeta<Secret>>>);

impl SecretCache {
    /// A cache backed by a reflector store.
    pub fn new(store: Store<PartialObjectMeta<Secret>>) -> Self {
        Self(Some(store))
    }

    /// The cached metadata of `namespace/name`, if present.
    pub fn get(&self, namespace: &str, name: &str) -> Option<ObjectMeta> {
        let store = self.0.as_ref()?;
        store
            .get(&ObjectRef::new(name).within(namespace))
            .map(|m| m.metadata.clone())
    }

    /// Number of cached Secrets.
    pub fn len(&self) -> usize {
        self.0.as_ref().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Consecutive failures per object, for exponential backoff. Reset on success.
#[derive(Default)]
pub struct BackoffTracker(Mutex<HashMap<String, u32>>);

impl BackoffTracker {
    /// Records a failure and returns how many in a row.
    pub fn failed(&self, key: &str) -> u32 {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// Forgets failures after a success (or deletion).
    pub fn reset(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    /// Current count (for tests).
    pub fn count(&self, key: &str) -> u32 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// Everything reconcilers share.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// The operator's configuration.
    pub settings: Settings,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// HTTP client for provider calls.
    pub http: HttpClient,
    /// Microsoft Entra ID access tokens, cached per credential and shared by all resources.
    pub entra: Arc<EntraTokens>,
    /// Where credential Secrets are read from.
    pub secrets: Arc<dyn SecretSource>,
    /// Metadata of owned Secrets.
    pub secret_cache: SecretCache,
    /// Failure counts for backoff.
    pub backoff: BackoffTracker,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The operator pod's Alibaba Cloud RRSA credentials (STS), cached and shared.
    pub alibaba_rrsa: Arc<crate::providers::auth::sts::RrsaCredentials>,
    /// Statuses a sync wrote before finishing (progress records), by object, so that the
    /// driver builds on them rather than on the status the reconciliation started from.
    pub progress: Mutex<HashMap<String, serde_json::Value>>,
}

impl Context {
    /// A context reading credentials from the cluster.
    pub fn new(
        client: kube::Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        http: HttpClient,
    ) -> Self {
        Self {
            secrets: Arc::new(credentials::CachedSecretSource::new(
                Arc::new(credentials::KubeSecretSource(client.clone())),
                settings.credential_cache_ttl,
            )),
            client,
            settings,
            metrics,
            entra: Arc::new(EntraTokens::new(http.clone())),
            http,
            secret_cache: SecretCache::default(),
            backoff: BackoffTracker::default(),
            clock: Arc::new(SystemClock),
            alibaba_rrsa: Arc::new(
                crate::providers::auth::sts::RrsaCredentials::from_process_env(),
            ),
            progress: Mutex::new(HashMap::new()),
        }
    }

    /// Now, by the context's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Takes the status a sync of the object with `key` recorded as progress, if any.
    pub fn take_progress<S: DeserializeOwned>(&self, key: &str) -> Option<S> {
        let value = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)?;
        serde_json::from_value(value).ok()
    }
}
