//! Running the controllers: one `Controller` per kind over a managedFields-stripped watch
//! (reconciling on spec, finalizer and renew-request changes, not on the operator's own status
//! writes nor on other metadata edits; the per-resource gauges go with deleted resources), one
//! label-filtered metadata-only watch of owned Secrets shared by all kinds (the restart-recovery
//! cache; a deleted Secret re-triggers its owner, also one deleted while the watch was down),
//! leader election, and graceful shutdown.

use crate::api::cluster_credential::CredentialUser;
use crate::api::common::{GROUP, MANAGED_BY_SELECTOR, RENEW_REQUESTED_AT_ANNOTATION, VERSION};
use crate::api::{ClusterCredential, LivyToken, NotebookTokenRequest, WorkspaceView};
use crate::controller::cluster_credential::watch::{self as credential_watch, Users};
use crate::controller::consumers::drift::SecretVersions;
use crate::controller::consumers::rollout::{Owner, Rollouts};
use crate::controller::driver::{Reconciler, error_policy, reconcile};
use crate::controller::{Context, ManagedKind, SecretCache, object_key};
use crate::metrics::Metrics;
use anyhow::Context as _;
use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The annotation of client-side `kubectl apply`, stripped from cached objects.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Options of the controllers.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Most reconciliations running at once, per kind.
    pub concurrency: u16,
    /// Only this namespace is watched and reconciled (None: all namespaces).
    pub namespace: Option<String>,
    /// Whether resources may use ClusterCredentials (which watches ClusterCredentials, the
    /// credential namespace's Secrets and Namespaces).
    pub cluster_credentials: bool,
}

impl ControllerOptions {
    /// Options for all namespaces with the given concurrency, ClusterCredentials on.
    pub fn new(concurrency: u16) -> Self {
        Self {
            concurrency,
            namespace: None,
            cluster_credentials: true,
        }
    }

    /// An API of `K` over the watched namespace or all namespaces.
    fn api<K>(&self, client: &kube::Client) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// Checks that the API server serves the three kinds (the CRDs are installed).
pub async fn check_crds(client: &kube::Client, options: &ControllerOptions) -> anyhow::Result<()> {
    async fn one<K: ManagedKind>(
        client: &kube::Client,
        options: &ControllerOptions,
    ) -> anyhow::Result<()> {
        options
            .api::<K>(client)
            .list_metadata(&ListParams::default().limit(1))
            .await
            .with_context(|| {
                format!(
                    "{}.{GROUP}/{VERSION} is not served by the API server; install the CRDs \
                     (kubectl apply -f crds/) and check the operator's RBAC",
                    K::plural(&())
                )
            })?;
        Ok(())
    }
    one::<NotebookTokenRequest>(client, options).await?;
    one::<LivyToken>(client, options).await?;
    one::<WorkspaceView>(client, options).await?;
    if !options.cluster_credentials {
        return Ok(());
    }
    Api::<ClusterCredential>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
        .with_context(|| {
            format!(
                "clustercredentials.{GROUP}/{VERSION} is not served by the API server; install \
                 the CRDs (kubectl apply -f crds/) and check the operator's RBAC"
            )
        })?;
    Ok(())
}

/// Senders that re-trigger an owner when its Secret is deleted.
struct OwnerTriggers {
    ntr: mpsc::UnboundedSender<ObjectRef<NotebookTokenRequest>>,
    livy: mpsc::UnboundedSender<ObjectRef<LivyToken>>,
    wsv: mpsc::UnboundedSender<ObjectRef<WorkspaceView>>,
}

impl OwnerTriggers {
    /// Reconciles the resource `kind`/`namespace`/`name`.
    fn reconcile(&self, kind: &str, namespace: &str, name: &str) {
        let _ = match kind {
            "NotebookTokenRequest" => self
                .ntr
                .unbounded_send(ObjectRef::new(name).within(namespace))
                .map_err(drop),
            "LivyToken" => self
                .livy
                .unbounded_send(ObjectRef::new(name).within(namespace))
                .map_err(drop),
            "WorkspaceView" => self
                .wsv
                .unbounded_send(ObjectRef::new(name).within(namespace))
                .map_err(drop),
            _ => Ok(()),
        };
    }

    /// Reconciles the owner of an owned Secret that was deleted or changed (`what`).
    fn secret_changed(&self, secret: &PartialObjectMeta<Secret>, what: &str) {
        let ns = secret.namespace().unwrap_or_default();
        let api_version = format!("{GROUP}/{VERSION}");
        for owner in secret.owner_references() {
            if owner.controller != Some(true) || owner.api_version != api_version {
                continue;
            }
            debug!(namespace = %ns, owner = %owner.name, kind = %owner.kind, "owned Secret {what}");
            self.reconcile(&owner.kind, &ns, &owner.name);
        }
    }
}

/// What the watch of owned Secrets does with one event: a Secret deleted, or changed by
/// someone else (a `resourceVersion` the operator didn't write or check), reconciles its
/// owner, which repairs it (see [`crate::controller::consumers`]). A (re)list takes the
/// versions it shows as they are, except one that differs from the version the operator knew
/// (changed while the watch was down): that one reconciles its owner too.
fn on_secret_event(
    versions: &SecretVersions,
    triggers: &OwnerTriggers,
    event: &watcher::Event<PartialObjectMeta<Secret>>,
) {
    let version =
        |m: &PartialObjectMeta<Secret>| m.metadata.resource_version.clone().unwrap_or_default();
    match event {
        watcher::Event::Delete(m) => {
            versions.forget(&m.namespace().unwrap_or_default(), &m.name_any());
            triggers.secret_changed(m, "deleted");
        }
        watcher::Event::InitApply(m) => {
            if versions.listed(
                &m.namespace().unwrap_or_default(),
                &m.name_any(),
                &version(m),
            ) {
                triggers.secret_changed(m, "changed while the watch was down");
            }
        }
        watcher::Event::Apply(m) => {
            if !versions.is_own(
                &m.namespace().unwrap_or_default(),
                &m.name_any(),
                &version(m),
            ) {
                triggers.secret_changed(m, "changed by someone else");
            }
        }
        watcher::Event::Init | watcher::Event::InitDone => {}
    }
}

/// Runs the three controllers until `shutdown` is cancelled. `ready` is set once the Secret
/// cache is synced and the controllers run.
pub async fn run_controllers(
    mut ctx: Context,
    options: ControllerOptions,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    check_crds(&client, &options).await?;

    let (secret_store, secret_writer) = reflector::store::<PartialObjectMeta<Secret>>();
    let (ntr_tx, ntr_rx) = mpsc::unbounded();
    let (livy_tx, livy_rx) = mpsc::unbounded();
    let (wsv_tx, wsv_rx) = mpsc::unbounded();
    let triggers = Arc::new(OwnerTriggers {
        ntr: ntr_tx,
        livy: livy_tx,
        wsv: wsv_tx,
    });
    // A finished batch of rollout restarts reconciles its resources, which record it.
    let (restarted_tx, restarted_rx) = mpsc::unbounded::<Owner>();
    ctx.rollouts.on_done(restarted_tx);
    let _rollouts = StopRolloutsOnDrop(ctx.rollouts.clone());
    let restarted = {
        let triggers = triggers.clone();
        restarted_rx.for_each(move |o| {
            triggers.reconcile(o.kind, &o.namespace, &o.name);
            futures::future::ready(())
        })
    };
    let _restarted = AbortOnDrop(tokio::spawn(restarted));
    // A relist (the watch restarted after its history was lost) reports no deletions: the
    // Secrets known before it and missing after it were deleted meanwhile.
    let known = secret_store.clone();
    let versions = ctx.secret_versions.clone();
    let mut before_relist: Option<Vec<Arc<PartialObjectMeta<Secret>>>> = None;
    let secret_watch = watcher(
        options.api::<PartialObjectMeta<Secret>>(&client),
        watcher::Config::default()
            .labels(MANAGED_BY_SELECTOR)
            .any_semantic(),
    )
    .default_backoff()
    .modify(|m| m.metadata.managed_fields = None)
    .reflect(secret_writer)
    .for_each(move |event| {
        match &event {
            Ok(e) => on_secret_event(&versions, &triggers, e),
            Err(e) => warn!(error = %e, "watch of owned Secrets failed; retrying"),
        }
        match event {
            // The store still holds what was known before the relist until InitDone.
            Ok(watcher::Event::Init) => before_relist = Some(known.state()),
            Ok(watcher::Event::InitDone) => {
                for m in before_relist.take().unwrap_or_default() {
                    if known.get(&ObjectRef::from_obj(m.as_ref())).is_none() {
                        versions.forget(&m.namespace().unwrap_or_default(), &m.name_any());
                        triggers.secret_changed(&m, "deleted");
                    }
                }
            }
            _ => {}
        }
        futures::future::ready(())
    });
    // Stopped with the controllers, also when this future is dropped (a leader abandoning
    // its term).
    let _secret_watch = AbortOnDrop(tokio::spawn(secret_watch));

    // ClusterCredentials, their Secrets and Namespace labels: changes reach the resources
    // using them (through the kinds' caches) and the ClusterCredentials' own status.
    let (ntr_store, ntr_writer) = reflector::store::<NotebookTokenRequest>();
    let (livy_store, livy_writer) = reflector::store::<LivyToken>();
    let (wsv_store, wsv_writer) = reflector::store::<WorkspaceView>();
    let users = Users {
        ntr: ntr_store.clone(),
        livy: livy_store.clone(),
        wsv: wsv_store.clone(),
    };
    let (credential_changes, usage, credential_watches) = if options.cluster_credentials {
        let (changes, usage, watches) =
            credential_watch::start(&ctx, options.namespace.as_deref(), users);
        (changes, usage, Some(watches))
    } else {
        ctx.credentials.disable();
        let (changes, usage) = credential_watch::no_changes();
        (changes, usage, None)
    };

    info!("waiting for the cache of owned Secrets");
    tokio::select! {
        r = secret_store.wait_until_ready() => r.context("Secret cache")?,
        _ = shutdown.cancelled() => return Ok(()),
    }
    info!(secrets = secret_store.len(), "cache of owned Secrets ready");
    if let Some(watches) = &credential_watches {
        tokio::select! {
            r = watches.wait_until_ready(&ctx) => r?,
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
    ctx.secret_cache = SecretCache::new(secret_store);
    let ctx = Arc::new(ctx);
    // The per-resource gauges describe what this replica reconciles: they go when it stops,
    // also when this future is dropped.
    let _gauges = ClearGaugesOnDrop(ctx.metrics.clone());

    let ntr = controller_for::<NotebookTokenRequest>(
        ctx.clone(),
        (ntr_store, ntr_writer),
        futures::stream::select(ntr_rx, credential_changes.ntr),
        usage.clone(),
        &options,
        shutdown.clone(),
    );
    let livy = controller_for::<LivyToken>(
        ctx.clone(),
        (livy_store, livy_writer),
        futures::stream::select(livy_rx, credential_changes.livy),
        usage.clone(),
        &options,
        shutdown.clone(),
    );
    let wsv = controller_for::<WorkspaceView>(
        ctx.clone(),
        (wsv_store, wsv_writer),
        futures::stream::select(wsv_rx, credential_changes.wsv),
        usage,
        &options,
        shutdown.clone(),
    );
    let credentials = async {
        if let Some(watches) = credential_watches {
            watches
                .run(ctx.clone(), options.concurrency, shutdown.clone())
                .await;
        }
    };
    ready.store(true, Ordering::SeqCst);
    info!("controllers running");
    futures::join!(ntr, livy, wsv, credentials);
    ready.store(false, Ordering::SeqCst);
    info!("controllers stopped");
    Ok(())
}

/// Drops what the reconcilers never read from an object before it is cached: managedFields,
/// and the copy of the whole object a client-side `kubectl apply` keeps in an annotation (with
/// it, the cache would hold most objects twice).
pub fn trim_for_cache<K: kube::Resource>(o: &mut K) {
    o.managed_fields_mut().clear();
    o.annotations_mut().remove(LAST_APPLIED);
}

/// Removes the per-resource gauges when dropped.
struct ClearGaugesOnDrop(Arc<Metrics>);

impl Drop for ClearGaugesOnDrop {
    fn drop(&mut self) {
        self.0.clear_resources();
    }
}

/// The value of the renew-request annotation, hashed: a new value re-triggers a
/// reconciliation, other annotation edits don't.
pub fn renew_request_changed<K: kube::Resource>(o: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    o.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(RENEW_REQUESTED_AT_ANNOTATION))
        .hash(&mut h);
    Some(h.finish())
}

/// Stops the rollout restarts under way when dropped (the controllers stopped, or this
/// replica stopped leading): the Secrets' marks stay for the next leader.
struct StopRolloutsOnDrop(Arc<Rollouts>);

impl Drop for StopRolloutsOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One kind's controller: its watch fills `store`; `triggers` (an owned Secret deleted, a
/// change of the ClusterCredential it uses) reconcile objects too; `usage` hears which
/// ClusterCredential each object names.
fn controller_for<K: Reconciler + CredentialUser>(
    ctx: Arc<Context>,
    store: (reflector::Store<K>, reflector::store::Writer<K>),
    triggers: impl Stream<Item = ObjectRef<K>> + Send + 'static,
    usage: mpsc::UnboundedSender<String>,
    options: &ControllerOptions,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let api = options.api::<K>(&ctx.client);
    let (reader, writer) = store;
    let cached = reader.clone();
    let (metrics, known, tokens_ctx) = (ctx.metrics.clone(), reader.clone(), ctx.clone());
    let objects = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(trim_for_cache)
        .inspect(move |event| {
            if let Ok(event) = event {
                credential_watch::report_usage(&cached, &usage, event);
            }
        })
        .reflect(writer)
        .inspect(move |event| match event {
            Ok(watcher::Event::Delete(o)) => {
                metrics.forget_resource(K::KIND, &o.namespace().unwrap_or_default(), &o.name_any());
                tokens_ctx.tokens.forget(&object_key(o));
            }
            // After a relist the store holds what exists: resources deleted while the watch
            // was down lose their gauges.
            Ok(watcher::Event::InitDone) => {
                metrics.retain_resources(K::KIND, |ns, name| {
                    known.get(&ObjectRef::new(name).within(ns)).is_some()
                });
                let kind_keys: std::collections::HashSet<String> = known
                    .state()
                    .iter()
                    .map(|o| object_key(o.as_ref()))
                    .collect();
                // Other kinds' tokens are kept: their keys are not in this kind's store, so
                // only keys of this kind's objects that are gone are dropped.
                tokens_ctx
                    .tokens
                    .retain_kind(K::KIND, |k| kind_keys.contains(k));
            }
            _ => {}
        })
        .applied_objects()
        // Spec changes bump the generation (so does deletion); finalizer changes don't, and the
        // finalizer helper relies on seeing its own change; a renew request is an annotation.
        // The operator's status writes pass none of these and so don't re-trigger a
        // reconciliation, nor does any other edit of labels or annotations.
        .predicate_filter(
            predicates::generation
                .combine(predicates::finalizers)
                .combine(renew_request_changed),
            Default::default(),
        );
    let known = reader.clone();
    Controller::for_stream(objects, reader)
        .reconcile_on(triggers)
        .with_config(controller::Config::default().concurrency(options.concurrency))
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(
            move |obj, ctx| {
                let known = known.clone();
                async move {
                    let result = reconcile::<K>(obj.clone(), ctx.clone()).await;
                    // Deleted while it was reconciled: the gauges it just set go too.
                    if known.get(&ObjectRef::from_obj(obj.as_ref())).is_none() {
                        ctx.metrics.forget_resource(
                            K::KIND,
                            &obj.namespace().unwrap_or_default(),
                            &obj.name_any(),
                        );
                    }
                    result
                }
            },
            error_policy::<K>,
            ctx,
        )
        .for_each(|result| {
            if let Err(e) = result {
                debug!(kind = K::KIND, error = %e, "controller event");
            }
            futures::future::ready(())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_objects_lose_managed_fields_and_the_last_applied_copy_only() {
        let mut o: NotebookTokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
            "metadata": {
                "name": "ml", "namespace": "team-a",
                "annotations": {LAST_APPLIED: "{\"spec\":{}}", "team": "ml"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444",
                     "resourceGroup": "rg", "workspaceName": "ws",
                     "azure": {"tenantId": "t", "clientId": "c",
                               "clientSecretRef": {"name": "sp", "key": "clientSecret"}}}
        }))
        .unwrap();
        let spec_before = serde_json::to_value(&o.spec).unwrap();
        trim_for_cache(&mut o);
        assert!(o.metadata.managed_fields.unwrap_or_default().is_empty());
        let annotations = o.metadata.annotations.unwrap();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["team"], "ml");
        assert_eq!(serde_json::to_value(&o.spec).unwrap(), spec_before);
    }
}
