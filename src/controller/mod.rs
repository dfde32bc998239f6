//! Controllers: the shared [`Context`], the generic reconcile driver, and the wiring of one
//! `Controller` per kind.
//!
//! Each kind implements [`Reconciler::sync`], which validates the spec, talks to its provider
//! and writes the Secret (token kinds), and returns the desired status. The driver around it
//! ([`driver::reconcile`]) is the same for every kind: it writes the Ready condition and status
//! only when they changed, emits events on transitions, records metrics, and decides the
//! requeue (renewal time, or capped backoff / Retry-After after a failure).

pub mod clients;
pub mod cluster_credential;
pub mod consumers;
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

use crate::api::common::{FIELD_MANAGER, HasCommonStatus};
use crate::api::{LivyToken, NotebookTokenRequest, WorkspaceView};
use crate::controller::clients::ClientFactory;
use crate::controller::clients::live::LiveClients;
use crate::controller::cluster_credential::directory::CredentialDirectory;
use crate::controller::consumers::drift::{SecretVersions, TokenMemory};
use crate::controller::consumers::rollout::Rollouts;
use crate::controller::credentials::{PodIdentityPolicy, SecretSource};
use crate::metrics::Metrics;
use crate::providers::endpoint::EndpointPolicy;
use crate::providers::http::HttpClient;
use jiff::Timestamp;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::ResourceExt;
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
    /// How long rollout restarts of a namespace wait for more token changes, so that a
    /// workload shared by several resources is restarted once.
    pub rollout_restart_window: Duration,
    /// The namespace whose Secrets ClusterCredentials name (the operator's own namespace).
    pub credential_namespace: String,
}

/// The credential namespace when none is configured: the namespace `deploy/` installs the
/// operator in.
pub const DEFAULT_CREDENTIAL_NAMESPACE: &str = "workspace-access-operator";

/// Which successful syncs publish a Normal `Synced` event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncEvents {
    /// Every sync that changed something (a token minted, read, rotated; an inventory that
    /// changed) and every return to Ready.
    #[default]
    All,
    /// Only when the resource becomes Ready (first sync, recovery after a failure).
    Transitions,
    /// None: no Synced events, only failures (and events published for a reason of their own:
    /// AccessChanged, SecretRestored, RolloutRestarted). Saves an API-server write per renewal.
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
            rollout_restart_window: consumers::rollout::DEFAULT_WINDOW,
            credential_namespace: DEFAULT_CREDENTIAL_NAMESPACE.into(),
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
        *t = crate::time::add(*t, d);
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

    /// Whether a watch keeps the cache (else every lookup misses).
    pub fn is_watching(&self) -> bool {
        self.0.is_some()
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

/// The key an object's in-memory state (failure count, checkpoint) is kept under:
/// `namespace/name/uid`, so that a recreated object starts afresh.
pub fn object_key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
        obj.uid().unwrap_or_default()
    )
}

/// Who publishes the operator's events: the controller name (the field manager) and this
/// replica's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reporter {
    /// `reportingController` of events.
    pub controller: &'static str,
    /// `reportingInstance` of events: the pod name (`POD_NAME`), else the host name.
    pub instance: String,
}

impl Reporter {
    /// Longest `reportingInstance` the API server accepts.
    pub const MAX_INSTANCE: usize = 128;

    /// This process: `POD_NAME`, else `HOSTNAME` or `/etc/hostname`, else the controller name.
    pub fn from_environment() -> Self {
        let lookup = |name: &str| std::env::var(name).ok();
        let file = std::fs::read_to_string("/etc/hostname").ok();
        Self::from_sources(&lookup, file.as_deref())
    }

    /// [`Self::from_environment`] with its sources given (tests).
    pub fn from_sources(env: &dyn Fn(&str) -> Option<String>, hostname_file: Option<&str>) -> Self {
        let instance = ["POD_NAME", "HOSTNAME"]
            .iter()
            .filter_map(|n| env(n))
            .chain(hostname_file.map(str::to_owned))
            .map(|v| v.trim().to_owned())
            .find(|v| !v.is_empty())
            .unwrap_or_else(|| FIELD_MANAGER.to_owned());
        Self {
            controller: FIELD_MANAGER,
            instance: instance.chars().take(Self::MAX_INSTANCE).collect(),
        }
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
    /// Where reconcilers get provider clients (endpoint policy, credentials, provider token
    /// caches, rate limits).
    pub clients: Arc<dyn ClientFactory>,
    /// Metadata of owned Secrets.
    pub secret_cache: SecretCache,
    /// ClusterCredentials, Namespace labels and the credential namespace's Secrets (the client
    /// factory resolves credentialRefs with it; the watches keep it current).
    pub credentials: Arc<CredentialDirectory>,
    /// Failure counts for backoff.
    pub backoff: BackoffTracker,
    /// The resourceVersions of owned Secrets the operator wrote or checked (drift repair).
    pub secret_versions: Arc<SecretVersions>,
    /// The last token obtained per resource (drift repair, failed writes).
    pub tokens: TokenMemory,
    /// Rollout restarts of the workloads that read tokens.
    pub rollouts: Arc<Rollouts>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Who publishes events.
    pub reporter: Reporter,
}

impl Context {
    /// A context reading credentials from the cluster, with the real provider clients.
    pub fn new(
        client: kube::Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        http: HttpClient,
    ) -> Self {
        ContextBuilder::new(client, settings, metrics, http).build()
    }

    /// A builder, for contexts with another clock, Secret source or client factory.
    pub fn builder(
        client: kube::Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        http: HttpClient,
    ) -> ContextBuilder {
        ContextBuilder::new(client, settings, metrics, http)
    }

    /// Now, by the context's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// Builds a [`Context`]: by default the system clock, credentials read from the cluster
/// (cached for `settings.credential_cache_ttl`) and [`LiveClients`].
pub struct ContextBuilder {
    client: kube::Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    http: HttpClient,
    clock: Arc<dyn Clock>,
    secrets: Option<Arc<dyn SecretSource>>,
    credentials: Option<Arc<CredentialDirectory>>,
    live: Option<Box<dyn FnOnce(LiveClients) -> LiveClients + Send>>,
    clients: Option<Arc<dyn ClientFactory>>,
    reporter: Option<Reporter>,
}

impl ContextBuilder {
    fn new(
        client: kube::Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        http: HttpClient,
    ) -> Self {
        Self {
            client,
            settings,
            metrics,
            http,
            clock: Arc::new(SystemClock),
            secrets: None,
            credentials: None,
            live: None,
            clients: None,
            reporter: None,
        }
    }

    /// The clock (of the reconcilers and the provider clients).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Where credentials Secrets are read from (default: the cluster, cached).
    pub fn secrets(mut self, secrets: Arc<dyn SecretSource>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Where ClusterCredentials, Namespace labels and credential Secrets are looked up
    /// (default: the API server, reading the credential namespace's Secrets through the
    /// [`Self::secrets`] source if one is given, uncached otherwise; the watches of `run`
    /// answer once synced).
    pub fn credentials(mut self, credentials: Arc<CredentialDirectory>) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Adjusts the real client factory once it is built (e.g. another Entra cache).
    pub fn live_clients(
        mut self,
        adjust: impl FnOnce(LiveClients) -> LiveClients + Send + 'static,
    ) -> Self {
        self.live = Some(Box::new(adjust));
        self
    }

    /// Another client factory instead of the real one (fakes in tests).
    pub fn clients(mut self, clients: Arc<dyn ClientFactory>) -> Self {
        self.clients = Some(clients);
        self
    }

    /// Who publishes events (default: [`Reporter::from_environment`]).
    pub fn reporter(mut self, reporter: Reporter) -> Self {
        self.reporter = Some(reporter);
        self
    }

    /// The context.
    pub fn build(self) -> Context {
        let credentials = self.credentials.unwrap_or_else(|| {
            let reader = self
                .secrets
                .clone()
                .unwrap_or_else(|| Arc::new(credentials::KubeSecretSource(self.client.clone())));
            Arc::new(CredentialDirectory::api(
                self.client.clone(),
                self.settings.credential_namespace.clone(),
                reader,
            ))
        });
        let clients = match self.clients {
            Some(c) => c,
            None => {
                let secrets = self.secrets.unwrap_or_else(|| {
                    Arc::new(credentials::CachedSecretSource::new(
                        Arc::new(credentials::KubeSecretSource(self.client.clone())),
                        self.settings.credential_cache_ttl,
                    ))
                });
                let live = LiveClients::new(
                    self.http,
                    self.settings.endpoint_policy.clone(),
                    self.settings.pod_identity.clone(),
                    secrets,
                    self.clock.clone(),
                )
                .with_credentials(credentials.clone());
                let live = match self.live {
                    Some(adjust) => adjust(live),
                    None => live,
                };
                Arc::new(live)
            }
        };
        let rollouts = Arc::new(Rollouts::new(
            self.client.clone(),
            self.metrics.clone(),
            self.clock.clone(),
            self.settings.rollout_restart_window,
        ));
        Context {
            client: self.client,
            settings: self.settings,
            metrics: self.metrics,
            clients,
            secret_cache: SecretCache::default(),
            credentials,
            backoff: BackoffTracker::default(),
            secret_versions: Arc::new(SecretVersions::default()),
            tokens: TokenMemory::default(),
            rollouts,
            clock: self.clock,
            reporter: self.reporter.unwrap_or_else(Reporter::from_environment),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reporting_instance_is_the_pod_name_else_the_host_name() {
        let env = |pod: Option<&'static str>, host: Option<&'static str>| {
            move |name: &str| match name {
                "POD_NAME" => pod.map(str::to_owned),
                "HOSTNAME" => host.map(str::to_owned),
                _ => None,
            }
        };
        let r = Reporter::from_sources(&env(Some("wao-7d9f-x2"), Some("node")), Some("h"));
        assert_eq!(r.instance, "wao-7d9f-x2");
        assert_eq!(r.controller, "workspace-access-operator");
        let r = Reporter::from_sources(&env(None, Some("wao-host")), Some("h"));
        assert_eq!(r.instance, "wao-host");
        let r = Reporter::from_sources(&env(None, None), Some("from-file\n"));
        assert_eq!(r.instance, "from-file");
        let r = Reporter::from_sources(&env(Some(" "), None), None);
        assert_eq!(r.instance, "workspace-access-operator");
        let long = "p".repeat(300);
        let r = Reporter::from_sources(&|_| Some(long.clone()), None);
        assert_eq!(r.instance.len(), Reporter::MAX_INSTANCE);
    }
}
