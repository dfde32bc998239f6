//! What the benchmark does to the cluster: namespaces, credentials, resources, watching for
//! Ready, and direct writes for the API server's ceiling.

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::runtime::watcher;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use workspace_access_operator::api::common::{MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Writes of the bench retried after a transient API-server failure.
pub static RETRIED: AtomicU64 = AtomicU64::new(0);

/// Runs a write, retrying a few times when the API server fails it transiently: a 5xx, or a 422
/// "internal error" (the CEL evaluation of the CRD's rules failing inside the API server, seen
/// on Kubernetes 1.24 under load; the same object is accepted when sent again).
async fn retrying<T, F, Fut>(mut write: F) -> kube::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = kube::Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        match write().await {
            Err(kube::Error::Api(s))
                if attempt < 5
                    && (s.code >= 500
                        || (s.code == 422 && s.message.contains("internal error"))) =>
            {
                attempt += 1;
                RETRIED.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            r => return r,
        }
    }
}

/// The kinds a benchmark run creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Kind {
    NotebookTokenRequest,
    LivyToken,
    WorkspaceView,
}

impl Kind {
    pub fn plural(self) -> &'static str {
        match self {
            Kind::NotebookTokenRequest => "notebooktokenrequests",
            Kind::LivyToken => "livytokens",
            Kind::WorkspaceView => "workspaceviews",
        }
    }

    fn api(self, client: &kube::Client, ns: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("workspaceaccess.io", "v1alpha1", &format!("{self:?}"));
        Api::namespaced_with(
            client.clone(),
            ns,
            &ApiResource::from_gvk_with_plural(&gvk, self.plural()),
        )
    }
}

/// Where the mock providers listen.
#[derive(Clone)]
pub struct Target {
    pub base: String,
}

/// Names of resources: `r-<index>`, or `short-<index>` for the renewal phase.
pub fn name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i}")
}

/// The manifest of resource `name` of `kind`.
pub fn manifest(kind: Kind, name: &str, target: &Target, livy_managed: bool) -> Value {
    let base = &target.base;
    let spec = match kind {
        Kind::NotebookTokenRequest => json!({
            "subscriptionId": "00000000-1111-2222-3333-444444444444",
            "resourceGroup": "bench",
            "workspaceName": name,
            "endpoint": base,
            "azure": {"tenantId": "00000000-0000-0000-0000-000000000000",
                      "clientId": "11111111-1111-1111-1111-111111111111",
                      "clientSecretRef": {"name": "bench-azure", "key": "clientSecret"},
                      "authorityHost": base},
        }),
        Kind::LivyToken if livy_managed => json!({
            "regionId": "cn-hangzhou", "workspaceId": "w-bench", "livyComputeId": "lc-bench",
            "endpoint": base, "managed": {"expireDays": 1},
            "alibaba": {"accessKeyRef": {"name": "bench-ali"}},
        }),
        Kind::LivyToken => json!({
            "regionId": "cn-hangzhou", "workspaceId": "w-bench", "livyComputeId": "lc-bench",
            "endpoint": base, "tokenId": format!("lctk-{name}"),
            "alibaba": {"accessKeyRef": {"name": "bench-ali"}},
        }),
        Kind::WorkspaceView => json!({
            "dataRobot": {"endpoint": format!("{base}/api/v2"), "notebookIds": [name],
                          "apiTokenRef": {"name": "bench-dr", "key": "apiToken"}},
        }),
    };
    json!({
        "apiVersion": "workspaceaccess.io/v1alpha1",
        "kind": format!("{kind:?}"),
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// The subscription ID of subscription `k` of the subscriptions phase.
pub fn subscription_id(k: usize) -> String {
    format!("00000000-5ab5-0000-0000-{k:012}")
}

/// A NotebookTokenRequest in subscription `k`, with that subscription's own service principal
/// (client ID and Secret `bench-azure-<k>`), as fifty teams with fifty subscriptions have.
pub fn ntr_in_subscription(name: &str, target: &Target, k: usize) -> Value {
    let base = &target.base;
    json!({
        "apiVersion": "workspaceaccess.io/v1alpha1",
        "kind": "NotebookTokenRequest",
        "metadata": {"name": name},
        "spec": {
            "subscriptionId": subscription_id(k),
            "resourceGroup": "bench",
            "workspaceName": name,
            "endpoint": base,
            "azure": {"tenantId": "00000000-0000-0000-0000-000000000000",
                      "clientId": format!("11111111-1111-1111-1111-{k:012}"),
                      "clientSecretRef": {"name": format!("bench-azure-{k}"), "key": "clientSecret"},
                      "authorityHost": base},
        },
    })
}

/// Creates the client Secrets `bench-azure-0` .. `bench-azure-<n-1>` of the subscriptions'
/// service principals in `ns`.
pub async fn subscription_credentials(
    client: &kube::Client,
    ns: &str,
    n: usize,
) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    for k in 0..n {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("bench-azure-{k}")},
            "stringData": {"clientSecret": format!("bench-client-secret-{k}")},
        }))?;
        retrying(|| async { secrets.create(&PostParams::default(), &s).await }).await?;
    }
    Ok(())
}

/// Watches the operator's Secrets in `ns` (metadata only) and records when each is first seen.
pub fn watch_secrets(
    client: &kube::Client,
    ns: &str,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), ns);
    let config =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"));
    tokio::spawn(async move {
        let mut events = watcher(api, config).boxed();
        while let Some(event) = events.next().await {
            if let Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) = event {
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(o.metadata.name.unwrap_or_default())
                    .or_insert_with(Instant::now);
            }
        }
    })
}

/// Creates a namespace with the credentials Secrets the manifests reference.
pub async fn namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), name);
    for (secret, data) in [
        (
            "bench-azure",
            json!({"clientSecret": "bench-client-secret"}),
        ),
        (
            "bench-ali",
            json!({"accessKeyId": "bench-ak", "accessKeySecret": "bench-sk"}),
        ),
        ("bench-dr", json!({"apiToken": "bench-dr-token"})),
    ] {
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": secret}, "stringData": data}))?;
        secrets.create(&PostParams::default(), &s).await?;
    }
    Ok(())
}

/// Deletes a namespace and waits until it is gone (at most `within`).
pub async fn delete_namespace(
    client: &kube::Client,
    name: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let api = Api::<Namespace>::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    let deadline = Instant::now() + within;
    while api.get_opt(name).await?.is_some() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "namespace {name} not deleted within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// When each resource was applied and when it was first seen Ready.
#[derive(Default)]
pub struct Timings {
    pub applied: HashMap<(Kind, String), Instant>,
    pub ready: HashMap<(Kind, String), Instant>,
}

/// Applies the manifests with at most `parallel` requests in flight, recording apply times.
pub async fn apply_all(
    client: &kube::Client,
    ns: &str,
    items: Vec<(Kind, Value)>,
    parallel: usize,
    timings: &Arc<Mutex<Timings>>,
) -> anyhow::Result<()> {
    let params = PatchParams::apply("bench").force();
    stream::iter(items)
        .map(|(kind, doc)| {
            let api = kind.api(client, ns);
            let params = params.clone();
            let timings = timings.clone();
            async move {
                let name = doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                timings
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .applied
                    .insert((kind, name.clone()), Instant::now());
                retrying(|| async { api.patch(&name, &params, &Patch::Apply(&doc)).await }).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn is_ready(obj: &DynamicObject) -> bool {
    let generation = obj.metadata.generation;
    obj.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True" && c["observedGeneration"].as_i64() == generation)
}

/// Watches `kind` in `ns` and records when each resource is first Ready.
pub fn watch_ready(
    client: &kube::Client,
    ns: &str,
    kind: Kind,
    timings: Arc<Mutex<Timings>>,
) -> tokio::task::JoinHandle<()> {
    let api = kind.api(client, ns);
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            let objs = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => vec![o],
                _ => continue,
            };
            for o in objs {
                if is_ready(&o) {
                    let key = (kind, o.metadata.name.clone().unwrap_or_default());
                    timings
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .ready
                        .entry(key)
                        .or_insert_with(Instant::now);
                }
            }
        }
    })
}

/// The API server's ceiling, written directly with at most `parallel` requests in flight:
/// `n` resources applied (the same writes the bench makes before the operator's), then `n`
/// Secrets applied and `n` status patches. Returns the two times.
pub async fn direct_writes(
    client: &kube::Client,
    ns: &str,
    n: usize,
    with_secret: usize,
    parallel: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let create_started = Instant::now();
    let kind = Kind::WorkspaceView;
    let api = kind.api(client, ns);
    let target = Target {
        base: "http://127.0.0.1:1".into(),
    };
    let params = PatchParams::apply("bench-ceiling").force();
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let params = params.clone();
            let doc = manifest(kind, &name("ceiling", i), &target, false);
            async move {
                retrying(|| async {
                    api.patch(&name("ceiling", i), &params, &Patch::Apply(&doc))
                        .await
                })
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<_>>()
        .await?;

    let created = create_started.elapsed();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let secrets = secrets.clone();
            let api = api.clone();
            let params = params.clone();
            async move {
                let secret = json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name("ceiling", i), "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
                                 "annotations": {"workspaceaccess.io/expires-at": "2030-01-01T00:00:00Z"}},
                    "type": "Opaque",
                    "data": {"token": "Y2VpbGluZw=="},
                });
                // As many Secrets as the operator writes (WorkspaceViews have none).
                if i < with_secret {
                    retrying(|| async {
                        secrets
                            .patch(&name("ceiling", i), &params, &Patch::Apply(&secret))
                            .await
                    })
                    .await?;
                }
                let status = json!({
                    "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
                    "status": {"observedGeneration": 1, "provider": "DataRobot", "count": 1,
                               "conditions": [{"type": "Ready", "status": "True", "reason": "Synced",
                                               "message": "1 notebook", "observedGeneration": 1,
                                               "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
                });
                retrying(|| async {
                    api.patch_status(&name("ceiling", i), &params, &Patch::Apply(&status))
                        .await
                })
                .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<_>>()
        .await?;
    Ok((created, started.elapsed()))
}
