//! Live changes: watches of ClusterCredentials, of the Secrets of the credential namespace
//! (metadata only) and of Namespaces (metadata only), and the reconciliations they cause.
//!
//! - A ClusterCredential created, changed (a new generation) or deleted: every resource naming
//!   it is reconciled (a new one lets waiting resources proceed; a deleted one turns them
//!   `CredentialsNotFound`), and its cached provider tokens are dropped when it changed.
//! - A Secret of the credential namespace changed or deleted: the ClusterCredentials naming it
//!   are checked again, their cached provider tokens dropped (a rotated client secret is used
//!   from the next Entra call), and the resources using them reconciled.
//! - A Namespace's labels changed: the resources of that namespace that name a
//!   ClusterCredential are reconciled (allowed now, or no longer).
//!
//! A watch that restarts after losing its history relists: what changed or went away meanwhile
//! is found by comparing with what was known before. Nothing is triggered by the first listing,
//! when every controller reconciles everything anyway.
//!
//! The decisions are pure functions of what was known and what the watch reports
//! ([`Known`]); the tasks here only carry them out.

use crate::api::cluster_credential::{ClusterCredential, CredentialUser};
use crate::api::{LivyToken, NotebookTokenRequest, WorkspaceView};
use crate::controller::Context;
use crate::controller::cluster_credential::directory::{Labels, Watched};
use crate::controller::cluster_credential::{CredentialContext, error_policy, reconcile};
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The caches of the three kinds that may name a ClusterCredential.
#[derive(Clone)]
pub struct Users {
    /// NotebookTokenRequests.
    pub ntr: Store<NotebookTokenRequest>,
    /// LivyTokens.
    pub livy: Store<LivyToken>,
    /// WorkspaceViews.
    pub wsv: Store<WorkspaceView>,
}

/// Resources to reconcile, per kind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Refs {
    /// NotebookTokenRequests.
    pub ntr: Vec<ObjectRef<NotebookTokenRequest>>,
    /// LivyTokens.
    pub livy: Vec<ObjectRef<LivyToken>>,
    /// WorkspaceViews.
    pub wsv: Vec<ObjectRef<WorkspaceView>>,
}

impl Refs {
    /// How many resources.
    pub fn len(&self) -> usize {
        self.ntr.len() + self.livy.len() + self.wsv.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn matching<K>(store: &Store<K>, pick: &dyn Fn(&str, &str) -> bool) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + CredentialUser + Clone + 'static,
{
    store
        .state()
        .iter()
        .filter(|o| {
            o.credential_ref()
                .is_some_and(|c| pick(&o.namespace().unwrap_or_default(), c))
        })
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

impl Users {
    /// The resources for which `pick(namespace, credential)` holds.
    pub fn matching(&self, pick: &dyn Fn(&str, &str) -> bool) -> Refs {
        Refs {
            ntr: matching(&self.ntr, pick),
            livy: matching(&self.livy, pick),
            wsv: matching(&self.wsv, pick),
        }
    }

    /// The resources naming ClusterCredential `name`.
    pub fn using(&self, name: &str) -> Refs {
        self.matching(&|_, c| c == name)
    }

    /// The resources of `namespace` that name any ClusterCredential.
    pub fn in_namespace(&self, namespace: &str) -> Refs {
        self.matching(&|ns, _| ns == namespace)
    }

    /// How many resources name ClusterCredential `name`.
    pub fn count(&self, name: &str) -> usize {
        self.using(name).len()
    }
}

/// Where reconciliations are sent: the three kinds' controllers and the ClusterCredential
/// controller.
#[derive(Clone)]
pub struct Triggers {
    ntr: mpsc::UnboundedSender<ObjectRef<NotebookTokenRequest>>,
    livy: mpsc::UnboundedSender<ObjectRef<LivyToken>>,
    wsv: mpsc::UnboundedSender<ObjectRef<WorkspaceView>>,
    credentials: mpsc::UnboundedSender<ObjectRef<ClusterCredential>>,
}

impl Triggers {
    fn resources(&self, refs: Refs) {
        for r in refs.ntr {
            let _ = self.ntr.unbounded_send(r);
        }
        for r in refs.livy {
            let _ = self.livy.unbounded_send(r);
        }
        for r in refs.wsv {
            let _ = self.wsv.unbounded_send(r);
        }
    }

    fn credential(&self, name: &str) {
        let _ = self.credentials.unbounded_send(ObjectRef::new(name));
    }
}

/// The receiving ends for the three kinds' controllers (`Controller::reconcile_on`).
pub struct Receivers {
    /// NotebookTokenRequests to reconcile.
    pub ntr: mpsc::UnboundedReceiver<ObjectRef<NotebookTokenRequest>>,
    /// LivyTokens to reconcile.
    pub livy: mpsc::UnboundedReceiver<ObjectRef<LivyToken>>,
    /// WorkspaceViews to reconcile.
    pub wsv: mpsc::UnboundedReceiver<ObjectRef<WorkspaceView>>,
}

/// What a watch knew of each object (by name): a version of what matters (a
/// ClusterCredential's uid and generation, a Secret's resourceVersion, a Namespace's labels).
/// [`Known::observe`] tells which names changed.
#[derive(Debug)]
pub struct Known<K: Ord, V: PartialEq> {
    versions: BTreeMap<K, V>,
    /// Names seen during the listing in progress.
    listing: Option<BTreeSet<K>>,
    /// Whether a first listing completed.
    synced: bool,
}

impl<K: Ord, V: PartialEq> Default for Known<K, V> {
    fn default() -> Self {
        Self {
            versions: BTreeMap::new(),
            listing: None,
            synced: false,
        }
    }
}

/// One event of a watch, reduced to what [`Known`] compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen<K, V> {
    /// A (re)listing starts.
    Init,
    /// An object, during a listing or afterwards.
    Object(K, V),
    /// An object was deleted.
    Deleted(K),
    /// The listing is complete.
    InitDone,
}

impl<K: Ord + Clone, V: PartialEq> Known<K, V> {
    /// Records an event; returns the names whose version changed, appeared or went away (none
    /// before the first listing completed).
    pub fn observe(&mut self, seen: Seen<K, V>) -> Vec<K> {
        let changed = match seen {
            Seen::Init => {
                self.listing = Some(BTreeSet::new());
                vec![]
            }
            Seen::Object(k, v) => {
                if let Some(l) = self.listing.as_mut() {
                    l.insert(k.clone());
                }
                match self.versions.get(&k) {
                    Some(old) if *old == v => vec![],
                    _ => {
                        self.versions.insert(k.clone(), v);
                        vec![k]
                    }
                }
            }
            Seen::Deleted(k) => match self.versions.remove(&k) {
                Some(_) => vec![k],
                None => vec![],
            },
            Seen::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                let gone: Vec<K> = self
                    .versions
                    .keys()
                    .filter(|k| !listed.contains(*k))
                    .cloned()
                    .collect();
                for k in &gone {
                    self.versions.remove(k);
                }
                let first = !self.synced;
                self.synced = true;
                if first {
                    return vec![];
                }
                gone
            }
        };
        if self.synced { changed } else { vec![] }
    }
}

/// The watch event as [`Seen`], with `version` of each object.
fn seen<O, V>(event: &watcher::Event<O>, version: impl Fn(&O) -> V) -> Seen<String, V>
where
    O: Resource,
{
    match event {
        watcher::Event::Init => Seen::Init,
        watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
            Seen::Object(o.name_any(), version(o))
        }
        watcher::Event::Delete(o) => Seen::Deleted(o.name_any()),
        watcher::Event::InitDone => Seen::InitDone,
    }
}

/// The ClusterCredentials that read Secret `secret` of the credential namespace.
pub fn credentials_reading(credentials: &[Arc<ClusterCredential>], secret: &str) -> Vec<String> {
    credentials
        .iter()
        .filter(|c| c.spec.secret_names().contains(&secret))
        .map(|c| c.name_any())
        .collect()
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(task))
}

/// The running watches, and the ClusterCredential controller to run once they are synced.
pub struct CredentialWatches {
    watched: Watched,
    users: Users,
    changed_credentials: mpsc::UnboundedReceiver<Result<ClusterCredential, watcher::Error>>,
    credential_triggers: mpsc::UnboundedReceiver<ObjectRef<ClusterCredential>>,
    _tasks: Vec<AbortOnDrop>,
}

/// Starts the watches: ClusterCredentials (cluster-wide), the Secrets of the credential
/// namespace and the Namespaces (`watch_namespace` only, if set), metadata only for the latter
/// two. `users` are the caches of the three kinds' controllers. Returns the reconciliations for
/// the three kinds' controllers, where their watches report the ClusterCredentials a resource
/// names (see [`report_usage`]), and the watches.
pub fn start(
    ctx: &Context,
    watch_namespace: Option<&str>,
    users: Users,
) -> (Receivers, mpsc::UnboundedSender<String>, CredentialWatches) {
    let client = ctx.client.clone();
    let directory = ctx.credentials.clone();
    let clients = ctx.clients.clone();
    let credential_ns = directory.credential_namespace().to_owned();
    let (ntr, ntr_rx) = mpsc::unbounded();
    let (livy, livy_rx) = mpsc::unbounded();
    let (wsv, wsv_rx) = mpsc::unbounded();
    let (credentials_tx, credential_triggers) = mpsc::unbounded();
    let triggers = Triggers {
        ntr,
        livy,
        wsv,
        credentials: credentials_tx,
    };
    let (usage, usage_rx) = mpsc::unbounded::<String>();
    let (changed_tx, changed_credentials) = mpsc::unbounded();

    let (credentials, credentials_writer) = reflector::store::<ClusterCredential>();
    let (namespaces, namespaces_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let (secrets, secrets_writer) = reflector::store::<PartialObjectMeta<Secret>>();

    // ClusterCredentials: a new generation (or a new or deleted object) reaches the
    // ClusterCredential controller and every resource naming it.
    let credential_watch = {
        let users = users.clone();
        let triggers = triggers.clone();
        let clients = clients.clone();
        let mut known: Known<String, (String, Option<i64>)> = Known::default();
        watcher(
            Api::<ClusterCredential>::all(client.clone()),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .modify(|c| c.managed_fields_mut().clear())
        .reflect(credentials_writer)
        .for_each(move |event| {
            match event {
                Ok(event) => {
                    let changed = known.observe(seen(&event, |c: &ClusterCredential| {
                        (c.uid().unwrap_or_default(), c.metadata.generation)
                    }));
                    if let watcher::Event::Apply(c) | watcher::Event::InitApply(c) = &event
                        && changed.contains(&c.name_any())
                    {
                        let _ = changed_tx.unbounded_send(Ok(c.clone()));
                    }
                    if let watcher::Event::InitApply(c) = &event
                        && !known.synced
                    {
                        let _ = changed_tx.unbounded_send(Ok(c.clone()));
                    }
                    for name in changed {
                        let refs = users.using(&name);
                        debug!(credential = %name, resources = refs.len(),
                               "ClusterCredential changed; reconciling its users");
                        clients.forget_cluster_credential(&name);
                        triggers.resources(refs);
                    }
                }
                Err(e) => warn!(error = %e, "watch of ClusterCredentials failed; retrying"),
            }
            futures::future::ready(())
        })
    };

    // Secrets of the credential namespace (metadata only): a change reaches the
    // ClusterCredentials naming the Secret and every resource using them.
    let secret_watch = {
        let users = users.clone();
        let triggers = triggers.clone();
        let clients = clients.clone();
        let directory = directory.clone();
        let credentials = credentials.clone();
        let mut known: Known<String, String> = Known::default();
        watcher(
            Api::<PartialObjectMeta<Secret>>::namespaced(client.clone(), &credential_ns),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff()
        .modify(|s| s.metadata.managed_fields = None)
        .reflect(secrets_writer)
        .for_each(move |event| {
            match event {
                Ok(event) => {
                    let changed = known.observe(seen(&event, |s: &PartialObjectMeta<Secret>| {
                        s.resource_version().unwrap_or_default()
                    }));
                    for secret in changed {
                        directory.forget_secret(&secret);
                        for name in credentials_reading(&credentials.state(), &secret) {
                            debug!(credential = %name, secret = %secret,
                                   "credential Secret changed; reconciling its users");
                            clients.forget_cluster_credential(&name);
                            triggers.credential(&name);
                            triggers.resources(users.using(&name));
                        }
                    }
                }
                Err(e) => warn!(error = %e, "watch of credential Secrets failed; retrying"),
            }
            futures::future::ready(())
        })
    };

    // Namespaces (metadata only): changed labels reach the namespace's resources that name a
    // ClusterCredential.
    let namespace_watch = {
        let users = users.clone();
        let triggers = triggers.clone();
        let mut known: Known<String, Labels> = Known::default();
        let config = match watch_namespace {
            Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
            None => watcher::Config::default(),
        };
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            config.any_semantic(),
        )
        .default_backoff()
        .modify(|n| {
            n.metadata.managed_fields = None;
            n.metadata.annotations = None;
        })
        .reflect(namespaces_writer)
        .for_each(move |event| {
            match event {
                Ok(event) => {
                    let changed = known
                        .observe(seen(&event, |n: &PartialObjectMeta<Namespace>| {
                            n.labels().clone()
                        }));
                    for ns in changed {
                        let refs = users.in_namespace(&ns);
                        if !refs.is_empty() {
                            debug!(namespace = %ns, resources = refs.len(),
                                   "namespace labels changed; reconciling its credential users");
                        }
                        triggers.resources(refs);
                    }
                }
                Err(e) => warn!(error = %e, "watch of Namespaces failed; retrying"),
            }
            futures::future::ready(())
        })
    };

    // The kinds' watches report which ClusterCredential a resource names: its count changes.
    let usage_task = {
        let triggers = triggers.clone();
        usage_rx.for_each(move |name| {
            triggers.credential(&name);
            futures::future::ready(())
        })
    };

    let receivers = Receivers {
        ntr: ntr_rx,
        livy: livy_rx,
        wsv: wsv_rx,
    };
    let watches = CredentialWatches {
        watched: Watched {
            credentials,
            namespaces,
            secrets,
        },
        users,
        changed_credentials,
        credential_triggers,
        _tasks: vec![
            spawn(credential_watch),
            spawn(secret_watch),
            spawn(namespace_watch),
            spawn(usage_task),
        ],
    };
    (receivers, usage, watches)
}

/// The receivers and usage sender when ClusterCredentials are turned off: nothing is ever
/// sent.
pub fn no_changes() -> (Receivers, mpsc::UnboundedSender<String>) {
    let (_, ntr) = mpsc::unbounded();
    let (_, livy) = mpsc::unbounded();
    let (_, wsv) = mpsc::unbounded();
    let (usage, _) = mpsc::unbounded();
    (Receivers { ntr, livy, wsv }, usage)
}

impl CredentialWatches {
    /// Waits until the three caches are synced, then lets the client factory answer from them.
    pub async fn wait_until_ready(&self, ctx: &Context) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let w = &self.watched;
        w.credentials
            .wait_until_ready()
            .await
            .context("ClusterCredential cache")?;
        w.secrets
            .wait_until_ready()
            .await
            .context("credential Secret cache")?;
        w.namespaces
            .wait_until_ready()
            .await
            .context("Namespace cache")?;
        ctx.credentials.attach(w.clone());
        info!(
            credentials = w.credentials.len(),
            namespace = ctx.credentials.credential_namespace(),
            "ClusterCredential caches ready"
        );
        Ok(())
    }

    /// Runs the ClusterCredential controller (status) until `shutdown`; the watches stop with
    /// it.
    pub async fn run(self, ctx: Arc<Context>, concurrency: u16, shutdown: CancellationToken) {
        let Self {
            watched,
            users,
            changed_credentials,
            credential_triggers,
            _tasks,
        } = self;
        let cctx = Arc::new(CredentialContext {
            client: ctx.client.clone(),
            directory: ctx.credentials.clone(),
            users: Some(users),
            metrics: ctx.metrics.clone(),
            clock: ctx.clock.clone(),
        });
        Controller::for_stream(changed_credentials, watched.credentials)
            .reconcile_on(credential_triggers)
            .with_config(
                controller::Config::default()
                    .concurrency(concurrency)
                    .debounce(Duration::from_millis(500)),
            )
            .graceful_shutdown_on(async move { shutdown.cancelled().await })
            .run(reconcile, error_policy, cctx)
            .for_each(|result| {
                if let Err(e) = result {
                    debug!(kind = super::KIND, error = %e, "controller event");
                }
                futures::future::ready(())
            })
            .map(drop)
            .await;
        drop(_tasks);
    }
}

/// The ClusterCredentials whose `usedBy` count an object's change affects: none when it names
/// the same one as before (`old`, from the cache before the event is applied; e.g. a status
/// write), else the one it named and the one it names (`new`; `None` once deleted).
pub fn usage_of<K: CredentialUser>(old: Option<&K>, new: Option<&K>) -> Vec<String> {
    let before = old.and_then(CredentialUser::credential_ref);
    let after = new.and_then(CredentialUser::credential_ref);
    if old.is_some() && before == after {
        return vec![];
    }
    before.into_iter().chain(after).map(str::to_owned).collect()
}

/// Reports the ClusterCredentials a user kind's watch event concerns to `usage` (before the
/// event reaches the cache `store`, which still holds the old object).
pub fn report_usage<K>(
    store: &Store<K>,
    usage: &mpsc::UnboundedSender<String>,
    event: &watcher::Event<K>,
) where
    K: Resource<DynamicType = ()> + CredentialUser + Clone + 'static,
{
    let names = match event {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
            usage_of(store.get(&ObjectRef::from_obj(o)).as_deref(), Some(o))
        }
        watcher::Event::Delete(o) => usage_of(Some(o), None),
        watcher::Event::Init | watcher::Event::InitDone => return,
    };
    for name in names {
        let _ = usage.unbounded_send(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_reports_changes_after_the_first_listing() {
        let mut k: Known<String, u32> = Known::default();
        let s = |n: &str| n.to_owned();
        // The first listing triggers nothing.
        assert!(k.observe(Seen::Init).is_empty());
        assert!(k.observe(Seen::Object(s("a"), 1)).is_empty());
        assert!(k.observe(Seen::Object(s("b"), 1)).is_empty());
        assert!(k.observe(Seen::InitDone).is_empty());
        // Then: changes, new objects and deletions; not unchanged versions.
        assert_eq!(k.observe(Seen::Object(s("a"), 2)), ["a"]);
        assert!(k.observe(Seen::Object(s("a"), 2)).is_empty());
        assert_eq!(k.observe(Seen::Object(s("c"), 1)), ["c"]);
        assert_eq!(k.observe(Seen::Deleted(s("b"))), ["b"]);
        assert!(k.observe(Seen::Deleted(s("b"))).is_empty());
        // A relist: a changed object is reported as it is listed, one gone meanwhile at the
        // end.
        assert!(k.observe(Seen::Init).is_empty());
        assert_eq!(k.observe(Seen::Object(s("a"), 3)), ["a"]);
        assert!(k.observe(Seen::InitDone).contains(&s("c")));
        assert!(
            k.observe(Seen::Object(s("c"), 1)) == ["c"],
            "c is new again"
        );
    }

    #[test]
    fn usage_names_the_old_and_the_new_credential() {
        let ntr = |cred: Option<&str>| -> NotebookTokenRequest {
            let mut spec = serde_json::json!({
                "subscriptionId": "00000000-1111-2222-3333-444444444444",
                "resourceGroup": "rg", "workspaceName": "ws"});
            if let Some(c) = cred {
                spec["credentialRef"] = serde_json::json!({"name": c});
            }
            serde_json::from_value(serde_json::json!({
                "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
                "metadata": {"name": "n", "namespace": "a"}, "spec": spec}))
            .unwrap()
        };
        let (a, b, none) = (ntr(Some("a")), ntr(Some("b")), ntr(None));
        assert_eq!(usage_of(Some(&a), Some(&b)), ["a", "b"], "switched");
        assert!(
            usage_of(Some(&a), Some(&a)).is_empty(),
            "e.g. a status write"
        );
        assert_eq!(usage_of(None, Some(&b)), ["b"], "new");
        assert_eq!(usage_of(Some(&a), Some(&none)), ["a"], "went inline");
        assert_eq!(usage_of(Some(&a), None), ["a"], "deleted");
        assert!(usage_of(None, Some(&none)).is_empty());
    }

    #[test]
    fn a_secret_concerns_the_credentials_that_read_it() {
        let c = |name: &str, spec: serde_json::Value| -> Arc<ClusterCredential> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "ClusterCredential",
                    "metadata": {"name": name}, "spec": spec}))
                .unwrap(),
            )
        };
        let all = vec![
            c(
                "dr",
                serde_json::json!({"dataRobot": {"apiTokenRef": {"name": "keys", "key": "dr"}}}),
            ),
            c(
                "ali",
                serde_json::json!({"alibaba": {"accessKeyRef": {"name": "keys"}}}),
            ),
            c(
                "az",
                serde_json::json!({"azure": {"tenantId": "t.example.com",
                "clientId": "11111111-1111-1111-1111-111111111111", "workloadIdentity": true}}),
            ),
        ];
        assert_eq!(credentials_reading(&all, "keys"), ["dr", "ali"]);
        assert!(credentials_reading(&all, "other").is_empty());
    }
}
