//! An in-memory, stateful fake Kubernetes API server for tests.
//!
//! [`FakeApiServer`] is a `tower::Service<http::Request<kube::client::Body>>`, so a real
//! [`kube::Client`] talks to it with no network: `kube::Client::new(server.clone(), "default")`
//! (or [`FakeApiServer::client`]). Reconcilers, `kube::runtime::watcher`s, `metadata_watcher`s
//! and whole `Controller`s run against it unchanged.
//!
//! It follows the API server's protocol as kube 5 speaks it:
//!
//! * paths `/api/v1/...` and `/apis/{group}/{version}/...`, namespaced and cluster-wide;
//! * GET, LIST (label and field selectors, `limit`/`continue`), WATCH (`resourceVersion`,
//!   `allowWatchBookmarks`, `timeoutSeconds`, `sendInitialEvents`), replayed from an in-memory
//!   event history; a resume from a compacted version answers a `410 Expired` ERROR event, as
//!   the real watch cache does, so kube's watcher relists;
//! * metadata-only requests (`Accept: ...;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1`);
//! * POST, PUT (optimistic concurrency), DELETE (finalizers, owner-reference garbage
//!   collection), DELETE collection, PATCH (server-side apply with per-manager field
//!   ownership and conflicts, JSON merge patch, strategic merge patch as a merge patch,
//!   RFC 6902 JSON patch with `test`), `dryRun=All`;
//! * the status subresource, `metadata.generation`, and no-op writes that do not bump
//!   `resourceVersion` nor emit watch events;
//! * `metav1.Status` error bodies, so kube reports `kube::Error::Api` with the right code
//!   and reason.
//!
//! Built-in kinds: core/v1 `namespaces` (cluster-scoped; `default`, `kube-system`,
//! `kube-public` and `kube-node-lease` exist from the start; each carries the label
//! `kubernetes.io/metadata.name`), `secrets`, `configmaps`,
//! `events`; `events.k8s.io/v1` `events`; `coordination.k8s.io/v1` `leases`. Custom
//! resources are added with [`FakeApiServer::register_crd`], other built-ins with
//! [`FakeApiServer::register_builtin`]; anything else answers 404.
//!
//! ```ignore
//! let server = FakeApiServer::new();
//! server.register_crd(&Widget::crd());
//! let mut w = Widget::new("w1", spec);
//! w.metadata.namespace = Some("ns1".into());
//! let w = server.insert(&w); // uid, resourceVersion, generation 1, creationTimestamp; ADDED
//! let client = server.client(); // inside a Tokio runtime
//! reconcile(Arc::new(w), ctx(client)).await?;
//! let secret: Secret = server.get("ns1", "w1-credentials").expect("secret written");
//! let applies = server.writes();
//! assert!(applies.iter().all(|r| r.query_param("fieldManager") == Some("my-operator")));
//! server.fail_next(Fault::new(409).method("PATCH").path_contains("/secrets/"));
//! ```
//!
//! Where the real API server and the brief of this fake differ, the fake follows the real
//! server: an apply without `fieldManager` is `422 Invalid` (not 400); a failed JSON-patch
//! `test` is `422 Invalid`; a too-old watch `resourceVersion` is an HTTP 200 watch carrying
//! one `ERROR` event with a `410 Expired` Status (an HTTP 410 would make kube's watcher retry
//! the same version forever); strategic merge patches on custom resources are `415`; PUT of
//! a custom resource without `metadata.resourceVersion` is `422`; immediate deletes answer a
//! `Success` Status, deletes held by finalizers answer the object.
//!
//! Deliberately *not* implemented: schema validation, defaulting and pruning of custom
//! resources; CRD version conversion (every served version returns the stored object with
//! only `apiVersion` rewritten); strategic-merge list semantics (strategic patches are merge
//! patches); `managedFields` in returned objects (ownership is tracked internally, see
//! [`FakeApiServer::field_managers`]); SSA list semantics other than atomic, except
//! `metadata.finalizers` (set) and `metadata.ownerReferences` (map keyed by `uid`); SSA
//! conflicts on anything but identical leaf paths; explicit `null`s (dropped everywhere);
//! foreground deletion (treated as background), the `orphan` finalizer (orphaning is done
//! at once), namespace deletion cascading or `Terminating`; `resourceVersionMatch=Exact`
//! and GET/LIST at past versions (always served from the current state); periodic watch
//! bookmarks (only at the end of a timed-out watch and after `sendInitialEvents`); YAML
//! bodies (JSON only); authentication, authorization, admission webhooks, quotas; grace
//! periods, TTLs and event expiry.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Body type of the fake's HTTP responses.
pub type FakeBody = UnsyncBoxBody<Bytes, Infallible>;

/// Manager name recorded for objects seeded with [`FakeApiServer::insert`].
pub const SEED_MANAGER: &str = "fake-api-seed";
/// Manager name recorded for edits made with [`FakeApiServer::modify`] / `delete_object`.
pub const TEST_MANAGER: &str = "fake-api-test";

/// Watch `timeoutSeconds` used when a watch request gives none.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// `metadata` fields the server owns; clients cannot set them and SSA does not track them.
const SYSTEM_META: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

// ---------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------

/// One HTTP request the fake received, with the status it answered.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`.
    pub method: String,
    /// URL path without the query, e.g. `/api/v1/namespaces/ns1/secrets/s1`.
    pub path: String,
    /// Decoded query pairs in request order.
    pub query: Vec<(String, String)>,
    /// `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// `Accept` header, if any.
    pub accept: Option<String>,
    /// JSON body; a body that is not JSON is kept as a `Value::String`; `None` when empty.
    pub body: Option<Value>,
    /// HTTP status the fake answered (200 for a watch that was opened).
    pub status: u16,
}

impl RecordedRequest {
    /// Value of the first query parameter named `key`.
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// POST, PUT, PATCH or DELETE.
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
    /// A GET with `watch=true`.
    pub fn is_watch(&self) -> bool {
        self.method == "GET" && matches!(self.query_param("watch"), Some("true" | "1"))
    }
    /// A GET on a collection that is not a watch.
    pub fn is_list(&self, plural: &str) -> bool {
        self.method == "GET" && !self.is_watch() && self.path.ends_with(&format!("/{plural}"))
    }
}

/// A fault to inject: the next `times` requests matching `method` and `path_contains`
/// answer `status` with a `metav1.Status` body instead of being served (no state changes).
///
/// ```ignore
/// server.fail_next(Fault::new(409).method("PATCH").path_contains("/secrets/").times(2));
/// ```
#[derive(Clone, Debug)]
pub struct Fault {
    method: Option<String>,
    path_contains: Option<String>,
    status: u16,
    times: usize,
    message: Option<String>,
}

impl Fault {
    /// Any request, once, answered with `status` (409, 429, 500, 503, ...).
    pub fn new(status: u16) -> Self {
        Self {
            method: None,
            path_contains: None,
            status,
            times: 1,
            message: None,
        }
    }
    /// Only requests with this HTTP method (case-insensitive).
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }
    /// Only requests whose `path?query` contains this string.
    pub fn path_contains(mut self, needle: &str) -> Self {
        self.path_contains = Some(needle.to_string());
        self
    }
    /// Fail this many matching requests (default 1).
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }
    /// Message of the returned Status.
    pub fn message(mut self, message: &str) -> Self {
        self.message = Some(message.to_string());
        self
    }
}

/// Shape of a resource type the fake serves.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceType {
    /// API group, `""` for core.
    pub group: String,
    /// Served versions; the first one is the storage version.
    pub versions: Vec<String>,
    /// URL plural, e.g. `secrets`.
    pub plural: String,
    /// Kind, e.g. `Secret`.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Has a `/status` subresource: main-resource writes ignore `.status`, `/status` writes
    /// change only `.status`.
    pub status_subresource: bool,
    /// Maintains `metadata.generation`.
    pub generation: bool,
    /// PUT without `metadata.resourceVersion` is allowed (false for custom resources).
    pub unconditional_update: bool,
    /// A custom resource (strategic merge patch is refused with 415, list items keep
    /// `apiVersion`/`kind`).
    pub custom: bool,
}

impl ResourceType {
    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            versions: vec![version.into()],
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status_subresource: false,
            generation: false,
            unconditional_update: true,
            custom: false,
        }
    }
    fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }
    fn storage_api_version(&self) -> String {
        self.api_version(&self.versions[0])
    }
    /// `secrets` or `widgets.example.com`, as in the API server's messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }
}

/// The fake API server. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------
// Internal state
// ---------------------------------------------------------------------------------------

/// (group, plural, namespace or "", name)
type ObjKey = (String, String, String, String);

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Seg {
    /// A field of an object.
    Field(String),
    /// An item of an associative list, by key (`metadata.finalizers` values,
    /// `metadata.ownerReferences` uids).
    Item(String),
}
type FieldPath = Vec<Seg>;

#[derive(Clone, Debug, PartialEq)]
struct Managed {
    manager: String,
    apply: bool,
    subresource: String,
    fields: BTreeSet<FieldPath>,
}

#[derive(Clone, Debug)]
struct Stored {
    obj: Value,
    managers: Vec<Managed>,
}

#[derive(Clone, Debug)]
struct HistEvent {
    rv: u64,
    group: String,
    plural: String,
    namespace: String,
    etype: &'static str,
    obj: Value,
    prev: Option<Value>,
}

struct Sub {
    id: u64,
    group: String,
    plural: String,
    namespace: Option<String>,
    version: String,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
    metadata_only: bool,
    rt: ResourceType,
    tx: UnboundedSender<Bytes>,
}

struct State {
    rv: u64,
    seq: u64,
    types: Vec<ResourceType>,
    objects: BTreeMap<ObjKey, Stored>,
    history: Vec<HistEvent>,
    /// Watches resuming from a resourceVersion below this get 410 Expired.
    history_floor: u64,
    subs: Vec<Sub>,
    requests: Vec<RecordedRequest>,
    faults: Vec<Fault>,
    /// See [`FakeApiServer::lose_short_selector_chunks`].
    lose_short_selector_chunks: bool,
}

#[derive(Debug, Clone)]
struct ApiError {
    code: u16,
    reason: String,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    /// What the real API server answers to a create in a namespace being deleted.
    fn namespace_terminating(rt: &ResourceType, name: &str, ns: &str) -> Self {
        Self {
            code: 403,
            reason: "Forbidden".into(),
            message: format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} \
                 because it is being terminated",
                rt.plural
            ),
            details: Some(json!({
                "name": name, "kind": rt.plural,
                "causes": [{"reason": "NamespaceTerminating",
                            "message": format!("namespace {ns} is being terminated"),
                            "field": "metadata.namespace"}]
            })),
        }
    }
}

enum Reply {
    Json(u16, Value),
    Watch(WatchStream),
}

struct WatchStream {
    rx: UnboundedReceiver<Bytes>,
    sub_id: Option<u64>,
    timeout: Duration,
    bookmark: Option<(String, String)>,
}

struct Incoming {
    method: Method,
    path: String,
    raw_query: String,
    query: Vec<(String, String)>,
    content_type: Option<String>,
    accept: Option<String>,
    user_agent: Option<String>,
    body: Option<Value>,
    body_invalid: bool,
}

impl Incoming {
    fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn meta_only(&self) -> bool {
        self.accept
            .as_deref()
            .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
    }
    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }
}

struct Route {
    rt: ResourceType,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------

impl FakeApiServer {
    /// A server with the built-in kinds and the namespaces `default`, `kube-system`,
    /// `kube-public` and `kube-node-lease`.
    pub fn new() -> Self {
        let mut namespaces = ResourceType::builtin("", "v1", "namespaces", "Namespace", false);
        namespaces.status_subresource = true;
        let types = vec![
            namespaces,
            ResourceType::builtin("", "v1", "secrets", "Secret", true),
            ResourceType::builtin("", "v1", "configmaps", "ConfigMap", true),
            ResourceType::builtin("", "v1", "events", "Event", true),
            ResourceType::builtin("events.k8s.io", "v1", "events", "Event", true),
            ResourceType::builtin("coordination.k8s.io", "v1", "leases", "Lease", true),
        ];
        let mut state = State {
            rv: 0,
            seq: 0,
            types,
            objects: BTreeMap::new(),
            history: Vec::new(),
            history_floor: 0,
            subs: Vec::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            lose_short_selector_chunks: false,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            state.ensure_namespace(ns);
        }
        Self {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// A `kube::Client` talking to this server, default namespace `default`.
    /// Must be called inside a Tokio runtime (kube spawns its request buffer).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Serve a custom resource: group, every served version (the storage version is the
    /// stored one), plural, kind, scope, and whether `/status` exists. Custom resources keep
    /// `metadata.generation` and refuse PUT without `resourceVersion`.
    pub fn register_crd(&self, crd: &CustomResourceDefinition) {
        let spec = &crd.spec;
        let mut versions: Vec<&_> = spec.versions.iter().filter(|v| v.served).collect();
        versions.sort_by_key(|v| !v.storage);
        let rt = ResourceType {
            group: spec.group.clone(),
            versions: versions.iter().map(|v| v.name.clone()).collect(),
            plural: spec.names.plural.clone(),
            kind: spec.names.kind.clone(),
            namespaced: spec.scope == "Namespaced",
            status_subresource: versions
                .iter()
                .any(|v| v.subresources.as_ref().is_some_and(|s| s.status.is_some())),
            generation: true,
            unconditional_update: false,
            custom: true,
        };
        self.register(rt);
    }

    /// Serve another built-in kind, e.g. `register_builtin::<Deployment>(true, true)`.
    pub fn register_builtin<K>(&self, status_subresource: bool, generation: bool)
    where
        K: kube::Resource<DynamicType = ()>,
        K::Scope: 'static,
    {
        let namespaced = std::any::TypeId::of::<K::Scope>()
            == std::any::TypeId::of::<kube::core::NamespaceResourceScope>();
        let mut rt = ResourceType::builtin(
            &K::group(&()),
            &K::version(&()),
            &K::plural(&()),
            &K::kind(&()),
            namespaced,
        );
        rt.status_subresource = status_subresource;
        rt.generation = generation;
        self.register(rt);
    }

    /// Serve a resource type described field by field.
    pub fn register(&self, rt: ResourceType) {
        let mut st = self.lock();
        st.types.retain(|t| !t.is(&rt.group, &rt.plural));
        st.types.push(rt);
    }

    /// Seed an object as if it had been created by someone else (manager [`SEED_MANAGER`],
    /// an Update manager: a later non-forced apply of a different value to one of its
    /// fields conflicts, as on a real cluster): assigns
    /// `uid`, `resourceVersion`, `creationTimestamp`, `generation: 1` for kinds with a
    /// generation, and emits a watch `ADDED` event. Unlike a POST, `.status` is kept and a
    /// missing namespace is created. Returns the stored object. Panics if it already
    /// exists or the kind is not served.
    pub fn insert<K>(&self, obj: &K) -> K
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let value = serde_json::to_value(obj).expect("serialize object");
        let mut st = self.lock();
        let rt = st.type_of::<K>();
        let ns = if rt.namespaced {
            let ns = value["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            st.ensure_namespace(&ns);
            Some(ns)
        } else {
            None
        };
        let created = st
            .create(&rt, ns.as_deref(), value, SEED_MANAGER, true)
            .unwrap_or_else(|e| panic!("insert {}: {} {}", rt.kind, e.code, e.message));
        from_value(render(&rt, &rt.versions[0], &created, false))
    }

    /// The object as stored (status included), or `None`. Use `""` as namespace for
    /// cluster-scoped kinds.
    pub fn get<K>(&self, ns: &str, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let st = self.lock();
        let rt = st.type_of::<K>();
        let key = obj_key(&rt, ns, name);
        st.objects
            .get(&key)
            .map(|s| from_value(render(&rt, &K::version(&()), &s.obj, false)))
    }

    /// Every object of the kind, in one namespace or (`None`) in all.
    pub fn list<K>(&self, ns: Option<&str>) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let st = self.lock();
        let rt = st.type_of::<K>();
        st.objects
            .iter()
            .filter(|(k, _)| rt.is(&k.0, &k.1) && ns.is_none_or(|n| k.2 == n))
            .map(|(_, s)| from_value(render(&rt, &K::version(&()), &s.obj, false)))
            .collect()
    }

    /// Edit an object as a user would (manager [`TEST_MANAGER`]; any field may change,
    /// including `.status`, whose edits are owned by nobody so they never conflict with a
    /// controller's status applies): bumps `resourceVersion` and emits `MODIFIED` if anything changed, bumps
    /// `generation` if anything outside `metadata` (and `status` for kinds with a status
    /// subresource) changed, and completes a pending deletion if the last finalizer was
    /// removed. Returns the object afterwards. Panics if it does not exist.
    pub fn modify<K>(&self, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> K
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let mut st = self.lock();
        let rt = st.type_of::<K>();
        let key = obj_key(&rt, ns, name);
        let stored = st
            .objects
            .get(&key)
            .cloned()
            .unwrap_or_else(|| panic!("modify: {} {ns}/{name} does not exist", rt.kind));
        let mut doc = stored.obj.clone();
        f(&mut doc);
        let mut full = rt.clone();
        full.status_subresource = false; // the test may edit status too
        let new = prepare_update(&full, &stored.obj, doc, "")
            .unwrap_or_else(|e| panic!("modify {}: {}", rt.kind, e.message));
        // Status edits are not owned by anyone, so they never conflict with a controller's
        // status applies.
        let managers = track_update(&rt, &stored.obj, &new, stored.managers, TEST_MANAGER, "");
        let out = st.commit_update(&rt, &key, new, managers);
        from_value(render(&rt, &K::version(&()), &out, false))
    }

    /// Starts deleting namespace `ns` as the real API server does: the namespace gets a
    /// `deletionTimestamp` and phase `Terminating` (a watch event), and from then on nothing new
    /// can be created in it (403 with cause `NamespaceTerminating`). Its objects stay until the
    /// test deletes them (there is no namespace controller).
    pub fn terminate_namespace(&self, ns: &str) {
        let mut st = self.lock();
        st.ensure_namespace(ns);
        let rt = st.type_of::<k8s_openapi::api::core::v1::Namespace>();
        let key = obj_key(&rt, "", ns);
        let stored = st.objects.get(&key).cloned().expect("the namespace");
        let mut new = stored.obj.clone();
        // System fields, set as the API server sets them (an update could not).
        new["metadata"]["deletionTimestamp"] = json!(
            jiff::Timestamp::now()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        );
        new["status"] = json!({"phase": "Terminating"});
        // Held, as by the namespace controller, until its content is gone.
        new["spec"]["finalizers"] = json!(["kubernetes"]);
        st.commit_update(&rt, &key, new, stored.managers);
    }

    /// Delete an object as `kubectl delete` would (background propagation): with finalizers
    /// it only gets a `deletionTimestamp`; otherwise it is removed and its dependents are
    /// garbage-collected. Returns false if it did not exist.
    pub fn delete_object<K>(&self, ns: &str, name: &str) -> bool
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let mut st = self.lock();
        let rt = st.type_of::<K>();
        let key = obj_key(&rt, ns, name);
        if !st.objects.contains_key(&key) {
            return false;
        }
        st.delete_key(&rt, &key, &json!({})).expect("delete");
        true
    }

    /// Current global `resourceVersion`.
    pub fn resource_version(&self) -> String {
        self.lock().rv.to_string()
    }

    /// Names of the field managers of an object, as `manager/Apply` or `manager/Update`
    /// (with `/status` appended for the status subresource).
    pub fn field_managers<K>(&self, ns: &str, name: &str) -> Vec<String>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let st = self.lock();
        let rt = st.type_of::<K>();
        st.objects
            .get(&obj_key(&rt, ns, name))
            .map(|s| {
                s.managers
                    .iter()
                    .map(|m| {
                        let op = if m.apply { "Apply" } else { "Update" };
                        let sub = if m.subresource.is_empty() {
                            String::new()
                        } else {
                            format!("/{}", m.subresource)
                        };
                        format!("{}/{op}{sub}", m.manager)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Only the POST/PUT/PATCH/DELETE requests (including failed and dry-run ones).
    pub fn writes(&self) -> Vec<RecordedRequest> {
        self.lock()
            .requests
            .iter()
            .filter(|r| r.is_write())
            .cloned()
            .collect()
    }

    /// Forget the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Inject a fault; faults are checked in the order they were added.
    pub fn fail_next(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Behave as a v1.24 API server (etcd 3.4) was seen to: a paginated list (`limit`) with a
    /// label selector reads the stored objects in chunks of `limit`, and the matches of a chunk
    /// that doesn't fill the page are lost when more objects follow it (so a watch's initial
    /// listing of 2,000 labelled Secrets in pages of 500 returned 1,503 of them). Lists without
    /// a selector or without a limit are complete, as on that server.
    pub fn lose_short_selector_chunks(&self, on: bool) {
        self.lock().lose_short_selector_chunks = on;
    }

    /// Drop the injected faults that have not struck yet.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Close every open watch stream, as an API server restart would. Watchers resume
    /// from their last resourceVersion and get the missed events replayed.
    pub fn disconnect_watches(&self) {
        self.lock().subs.clear();
    }

    /// Close every open watch stream and forget the event history: any watch that resumes
    /// from a resourceVersion issued so far gets a `410 Expired` ERROR event, which makes
    /// kube's watcher relist.
    pub fn expire_watch_history(&self) {
        let mut st = self.lock();
        st.subs.clear();
        st.history.clear();
        // A restarted server's history starts after every version handed out so far.
        st.rv += 1;
        st.history_floor = st.rv;
    }

    /// Number of watch streams currently open.
    pub fn open_watches(&self) -> usize {
        let mut st = self.lock();
        st.subs.retain(|s| !s.tx.is_closed());
        st.subs.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self, incoming: Incoming) -> Response<FakeBody> {
        let reply = {
            let mut st = self.lock();
            let fault = st.take_fault(&incoming);
            let reply = match fault {
                Some(f) => {
                    let msg = f
                        .message
                        .unwrap_or_else(|| format!("injected fault {}", f.status));
                    let mut err = ApiError::new(f.status, &msg);
                    if f.status == 429 {
                        err.details = Some(json!({"retryAfterSeconds": 1}));
                    }
                    Err(err)
                }
                None => st.dispatch(&incoming),
            };
            let status = match &reply {
                Ok(Reply::Json(code, _)) => *code,
                Ok(Reply::Watch(_)) => 200,
                Err(e) => e.code,
            };
            st.requests.push(RecordedRequest {
                method: incoming.method.to_string(),
                path: incoming.path.clone(),
                query: incoming.query.clone(),
                content_type: incoming.content_type.clone(),
                accept: incoming.accept.clone(),
                body: incoming.body.clone(),
                status,
            });
            reply
        };
        match reply {
            Ok(Reply::Json(code, v)) => json_response(code, &v),
            Err(e) => json_response(e.code, &e.to_status()),
            Ok(Reply::Watch(w)) => {
                let body = watch_body(self.state.clone(), w);
                Response::builder()
                    .status(200)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .expect("response")
            }
        }
    }
}

impl tower::Service<Request<kube::client::Body>> for FakeApiServer {
    type Response = Response<FakeBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let header = |name: http::header::HeaderName| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let raw_query = parts.uri.query().unwrap_or("").to_string();
            let (body, body_invalid) = if bytes.is_empty() {
                (None, false)
            } else {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v) => (Some(v), false),
                    Err(_) => (
                        Some(Value::String(String::from_utf8_lossy(&bytes).into_owned())),
                        true,
                    ),
                }
            };
            let incoming = Incoming {
                method: parts.method.clone(),
                path: parts.uri.path().to_string(),
                query: parse_query(&raw_query),
                raw_query,
                content_type: header(http::header::CONTENT_TYPE),
                accept: header(http::header::ACCEPT),
                user_agent: header(http::header::USER_AGENT),
                body,
                body_invalid,
            };
            Ok(this.handle(incoming))
        })
    }
}

fn json_response(code: u16, v: &Value) -> Response<FakeBody> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(v).expect("json"))).boxed_unsync())
        .expect("response")
}

/// Streams watch lines until the subscription is dropped (disconnect) or the watch times
/// out; on timeout it unregisters, flushes queued events and, if bookmarks were allowed,
/// ends with a BOOKMARK at the current resourceVersion (as the API server does).
fn watch_body(state: Arc<Mutex<State>>, w: WatchStream) -> FakeBody {
    let deadline = tokio::time::Instant::now() + w.timeout;
    let stream = futures::stream::unfold(Some((w, state)), move |st| async move {
        let (mut w, state) = st?;
        tokio::select! {
            biased;
            line = w.rx.recv() => line.map(|b| (Ok::<_, Infallible>(Frame::data(b)), Some((w, state)))),
            _ = tokio::time::sleep_until(deadline) => {
                let tail = finish_watch(&state, &mut w);
                Some((Ok(Frame::data(tail)), None))
            }
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

fn finish_watch(state: &Arc<Mutex<State>>, w: &mut WatchStream) -> Bytes {
    let rv = {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = w.sub_id {
            st.subs.retain(|s| s.id != id);
        }
        st.rv
    };
    let mut out = Vec::new();
    while let Ok(line) = w.rx.try_recv() {
        out.extend_from_slice(&line);
    }
    if let Some((api_version, kind)) = &w.bookmark {
        out.extend_from_slice(&bookmark_line(api_version, kind, rv, false));
    }
    Bytes::from(out)
}

fn bookmark_line(api_version: &str, kind: &str, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_line(
        "BOOKMARK",
        json!({"apiVersion": api_version, "kind": kind, "metadata": meta}),
    )
}

fn watch_line(etype: &str, object: Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": etype, "object": object})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

// ---------------------------------------------------------------------------------------
// Request dispatch
// ---------------------------------------------------------------------------------------

impl State {
    fn take_fault(&mut self, req: &Incoming) -> Option<Fault> {
        let target = format!("{}?{}", req.path, req.raw_query);
        let idx = self.faults.iter().position(|f| {
            f.times > 0
                && f.method.as_deref().is_none_or(|m| m == req.method.as_str())
                && f.path_contains
                    .as_deref()
                    .is_none_or(|p| target.contains(p))
        })?;
        let fault = self.faults[idx].clone();
        self.faults[idx].times -= 1;
        if self.faults[idx].times == 0 {
            self.faults.remove(idx);
        }
        Some(fault)
    }

    fn type_of<K: kube::Resource<DynamicType = ()>>(&self) -> ResourceType {
        let (group, plural) = (K::group(&()), K::plural(&()));
        self.types
            .iter()
            .find(|t| t.is(&group, &plural))
            .cloned()
            .unwrap_or_else(|| {
                panic!("fake API server does not serve {plural}.{group}; register it first")
            })
    }

    fn route(&self, path: &str) -> Result<Route, ApiError> {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return Err(ApiError::not_found_path()),
        };
        let (namespace, plural, name, sub) = match rest {
            [p] => (None, *p, None, None),
            ["namespaces", ns, p] if !matches!(*p, "status" | "finalize") => {
                (Some(*ns), *p, None, None)
            }
            ["namespaces", ns, p, n] => (Some(*ns), *p, Some(*n), None),
            ["namespaces", ns, p, n, s] => (Some(*ns), *p, Some(*n), Some(*s)),
            [p, n] => (None, *p, Some(*n), None),
            [p, n, s] => (None, *p, Some(*n), Some(*s)),
            _ => return Err(ApiError::not_found_path()),
        };
        let rt = self
            .types
            .iter()
            .find(|t| t.is(group, plural) && t.versions.iter().any(|v| v == version))
            .cloned()
            .ok_or_else(ApiError::not_found_path)?;
        // A cluster-scoped kind under a namespace, or a namespaced object without one.
        if (!rt.namespaced && namespace.is_some())
            || (rt.namespaced && namespace.is_none() && name.is_some())
        {
            return Err(ApiError::not_found_path());
        }
        if let Some(s) = sub
            && !(s == "status" && rt.status_subresource)
        {
            return Err(ApiError::not_found_path());
        }
        Ok(Route {
            rt,
            version: version.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        })
    }

    fn dispatch(&mut self, req: &Incoming) -> Result<Reply, ApiError> {
        let route = self.route(&req.path)?;
        if req.body_invalid && req.method != Method::GET {
            return Err(ApiError::bad_request("the request body is not valid JSON"));
        }
        let is_write = matches!(
            req.method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        );
        if is_write && req.dry_run() {
            let mut scratch = self.scratch_copy();
            return scratch.serve(req, &route);
        }
        if let Some(dr) = req.q("dryRun")
            && dr != "All"
        {
            return Err(ApiError::bad_request(&format!(
                "unsupported dryRun value {dr:?}"
            )));
        }
        self.serve(req, &route)
    }

    /// A copy without watchers or history, for dry runs.
    fn scratch_copy(&self) -> State {
        State {
            rv: self.rv,
            seq: self.seq,
            types: self.types.clone(),
            objects: self.objects.clone(),
            history: Vec::new(),
            history_floor: 0,
            subs: Vec::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            lose_short_selector_chunks: self.lose_short_selector_chunks,
        }
    }

    fn serve(&mut self, req: &Incoming, route: &Route) -> Result<Reply, ApiError> {
        let rt = &route.rt;
        let ns = route.namespace.as_deref();
        let meta_only = req.meta_only();
        let sub = route.subresource.as_deref().unwrap_or("");
        let manager = req
            .q("fieldManager")
            .map(str::to_string)
            .or_else(|| {
                req.user_agent
                    .as_deref()
                    .map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        if req.q("force").is_some() && !is_apply(req) {
            return Err(ApiError::invalid_options(
                "force: Forbidden: may not be specified for non-apply patch",
            ));
        }
        let out =
            |code: u16, obj: &Value| Reply::Json(code, render(rt, &route.version, obj, meta_only));
        match (&req.method, route.name.as_deref()) {
            (&Method::GET, None) => {
                if matches!(req.q("watch"), Some("true" | "1")) {
                    self.watch(req, route).map(Reply::Watch)
                } else {
                    self.list(req, route)
                }
            }
            (&Method::GET, Some(name)) => {
                let key = obj_key(rt, ns.unwrap_or(""), name);
                let stored = self
                    .objects
                    .get(&key)
                    .ok_or_else(|| ApiError::not_found(rt, name))?;
                Ok(out(200, &stored.obj))
            }
            (&Method::POST, None) => {
                if rt.namespaced && ns.is_none() {
                    return Err(ApiError::method_not_allowed());
                }
                let body = req
                    .body
                    .clone()
                    .ok_or_else(|| ApiError::bad_request("empty body"))?;
                let created = self.create(rt, ns, body, &manager, false)?;
                Ok(out(201, &created))
            }
            (&Method::PUT, Some(name)) => {
                let body = req
                    .body
                    .clone()
                    .ok_or_else(|| ApiError::bad_request("empty body"))?;
                let obj = self.replace(rt, ns.unwrap_or(""), name, sub, body, &manager)?;
                Ok(out(200, &obj))
            }
            (&Method::PATCH, Some(name)) => {
                let body = req
                    .body
                    .clone()
                    .ok_or_else(|| ApiError::bad_request("empty patch"))?;
                let (code, obj) = self.patch(req, route, name, body, &manager)?;
                Ok(out(code, &obj))
            }
            (&Method::DELETE, Some(name)) => {
                if !sub.is_empty() {
                    return Err(ApiError::method_not_allowed());
                }
                let key = obj_key(rt, ns.unwrap_or(""), name);
                if !self.objects.contains_key(&key) {
                    return Err(ApiError::not_found(rt, name));
                }
                let opts = delete_options(req);
                let (obj, removed) = self.delete_key(rt, &key, &opts)?;
                if removed {
                    Ok(Reply::Json(200, success_status(rt, name, &obj)))
                } else {
                    Ok(out(200, &obj))
                }
            }
            (&Method::DELETE, None) => {
                let opts = delete_options(req);
                let (labels, fields) = selectors(req, rt)?;
                let keys: Vec<ObjKey> = self
                    .objects
                    .iter()
                    .filter(|(k, s)| {
                        rt.is(&k.0, &k.1)
                            && ns.is_none_or(|n| k.2 == n)
                            && matches_selectors(&s.obj, &labels, &fields)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut items = Vec::new();
                for key in keys {
                    if self.objects.contains_key(&key) {
                        let (obj, _) = self.delete_key(rt, &key, &opts)?;
                        items.push(render_item(rt, &route.version, &obj, meta_only));
                    }
                }
                Ok(Reply::Json(
                    200,
                    list_value(rt, &route.version, meta_only, self.rv, None, items),
                ))
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    // ----- reads --------------------------------------------------------------------

    fn list(&self, req: &Incoming, route: &Route) -> Result<Reply, ApiError> {
        let rt = &route.rt;
        let (labels, fields) = selectors(req, rt)?;
        let limit = match req.q("limit") {
            Some(l) => Some(
                l.parse::<usize>()
                    .map_err(|_| ApiError::bad_request("invalid limit"))?,
            ),
            None => None,
        }
        .filter(|l| *l > 0);
        let (list_rv, after) = match req.q("continue") {
            Some(token) if !token.is_empty() => {
                let mut parts = token.splitn(3, '|');
                let rv = parts.next().and_then(|r| r.parse::<u64>().ok());
                match (rv, parts.next(), parts.next()) {
                    (Some(rv), Some(ns), Some(name)) => {
                        (rv, Some((ns.to_string(), name.to_string())))
                    }
                    _ => return Err(ApiError::bad_request("invalid continue token")),
                }
            }
            _ => (self.rv, None),
        };
        let in_range: Vec<(&ObjKey, &Stored)> = self
            .objects
            .iter()
            .filter(|(k, _)| {
                rt.is(&k.0, &k.1)
                    && route.namespace.as_deref().is_none_or(|n| k.2 == n)
                    && after
                        .as_ref()
                        .is_none_or(|(ans, aname)| (&k.2, &k.3) > (ans, aname))
            })
            .collect();
        let matches = |s: &Stored| matches_selectors(&s.obj, &labels, &fields);
        let matching: Vec<(&ObjKey, &Stored)> = match limit {
            Some(l) if self.lose_short_selector_chunks && !labels.is_empty() => {
                let mut kept = Vec::new();
                let chunks: Vec<&[(&ObjKey, &Stored)]> = in_range.chunks(l).collect();
                for (i, chunk) in chunks.iter().enumerate() {
                    let hits: Vec<(&ObjKey, &Stored)> =
                        chunk.iter().filter(|(_, s)| matches(s)).copied().collect();
                    let last = i + 1 == chunks.len();
                    if kept.len() + hits.len() < l && !last && kept.is_empty() {
                        continue; // the chunk's matches are lost
                    }
                    kept.extend(hits);
                }
                kept
            }
            _ => in_range.into_iter().filter(|(_, s)| matches(s)).collect(),
        };
        let page = limit.map_or(matching.len(), |l| l.min(matching.len()));
        let items: Vec<Value> = matching[..page]
            .iter()
            .map(|(_, s)| render_item(rt, &route.version, &s.obj, req.meta_only()))
            .collect();
        let remaining = matching.len() - page;
        let cont = (remaining > 0 && page > 0).then(|| {
            let last = matching[page - 1].0;
            (format!("{list_rv}|{}|{}", last.2, last.3), remaining)
        });
        Ok(Reply::Json(
            200,
            list_value(rt, &route.version, req.meta_only(), list_rv, cont, items),
        ))
    }

    fn watch(&mut self, req: &Incoming, route: &Route) -> Result<WatchStream, ApiError> {
        let rt = &route.rt;
        let (labels, fields) = selectors(req, rt)?;
        let bookmarks = req.q("allowWatchBookmarks") == Some("true");
        let send_initial = req.q("sendInitialEvents") == Some("true");
        if send_initial && !bookmarks {
            return Err(ApiError::invalid_options(
                "allowWatchBookmarks: Forbidden: sendInitialEvents requires allowWatchBookmarks",
            ));
        }
        if send_initial && req.q("resourceVersionMatch") != Some("NotOlderThan") {
            return Err(ApiError::invalid_options(
                "resourceVersionMatch: Forbidden: sendInitialEvents requires resourceVersionMatch=NotOlderThan",
            ));
        }
        let timeout = match req.q("timeoutSeconds") {
            Some(t) => match t
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request("invalid timeoutSeconds"))?
            {
                0 => DEFAULT_WATCH_TIMEOUT,
                secs => Duration::from_secs(secs),
            },
            None => DEFAULT_WATCH_TIMEOUT,
        };
        let (bm_api, bm_kind) = if req.meta_only() {
            (
                "meta.k8s.io/v1".to_string(),
                "PartialObjectMetadata".to_string(),
            )
        } else {
            (rt.api_version(&route.version), rt.kind.clone())
        };
        let (tx, rx) = unbounded_channel();
        self.seq += 1;
        let sub = Sub {
            id: self.seq,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            namespace: route.namespace.clone(),
            version: route.version.clone(),
            labels,
            fields,
            metadata_only: req.meta_only(),
            rt: rt.clone(),
            tx,
        };
        let rv_param = req.q("resourceVersion").unwrap_or("");
        let initial = send_initial || rv_param.is_empty() || rv_param == "0";
        if initial {
            for (k, s) in &self.objects {
                if sub.covers(&k.0, &k.1, &k.2) && sub.matches(&s.obj) {
                    let _ = sub.tx.send(watch_line("ADDED", sub.render(&s.obj)));
                }
            }
            if send_initial {
                let _ = sub.tx.send(bookmark_line(&bm_api, &bm_kind, self.rv, true));
            }
        } else {
            let from: u64 = rv_param.parse().map_err(|_| {
                ApiError::bad_request(&format!("invalid resource version: {rv_param}"))
            })?;
            if from < self.history_floor {
                let status = ApiError::new(
                    410,
                    &format!("too old resource version: {from} ({})", self.history_floor),
                )
                .to_status();
                let _ = sub.tx.send(watch_line("ERROR", status));
                return Ok(WatchStream {
                    rx,
                    sub_id: None,
                    timeout,
                    bookmark: None,
                });
            }
            for ev in self.history.iter().filter(|e| e.rv > from) {
                if let Some(line) = sub.event_line(ev) {
                    let _ = sub.tx.send(line);
                }
            }
        }
        let id = sub.id;
        self.subs.push(sub);
        Ok(WatchStream {
            rx,
            sub_id: Some(id),
            timeout,
            bookmark: bookmarks.then_some((bm_api, bm_kind)),
        })
    }

    // ----- writes -------------------------------------------------------------------

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn ensure_namespace(&mut self, ns: &str) {
        let key: ObjKey = (String::new(), "namespaces".into(), String::new(), ns.into());
        if !self.objects.contains_key(&key) {
            let rt = self
                .types
                .iter()
                .find(|t| t.is("", "namespaces"))
                .cloned()
                .expect("namespaces");
            self.create(
                &rt,
                None,
                json!({"metadata": {"name": ns}}),
                SEED_MANAGER,
                true,
            )
            .expect("create namespace");
        }
    }

    /// POST semantics (`seed` relaxes the namespace-exists check and keeps `.status`).
    fn create(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        mut body: Value,
        manager: &str,
        seed: bool,
    ) -> Result<Value, ApiError> {
        check_type_meta(rt, &body, false)?;
        strip_nulls(&mut body);
        let meta = body
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("object expected"))?
            .entry("metadata")
            .or_insert_with(|| json!({}));
        let meta = meta
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        if !seed
            && meta
                .get("resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::new(
                500,
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if rt.namespaced {
            let ns = ns.unwrap_or("default");
            if let Some(body_ns) = meta.get("namespace").and_then(Value::as_str)
                && body_ns != ns
            {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".into(), json!(ns));
        } else {
            meta.remove("namespace");
        }
        let name = match meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => n.to_string(),
            None => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) => {
                    self.seq += 1;
                    let n = format!("{prefix}{}", random_suffix(self.seq));
                    meta.insert("name".into(), json!(n));
                    n
                }
                None => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            },
        };
        // The real API server validates an Event's name, and its generateName as a prefix (a
        // trailing '-' allowed), as DNS subdomains: a generateName ending in '.' is refused.
        if rt.plural == "events" {
            let generate = meta.get("generateName").and_then(Value::as_str);
            let masked = generate.map(|g| match g.strip_suffix('-') {
                Some(head) => format!("{head}a"),
                None => g.to_string(),
            });
            for (field, value) in [("name", Some(name.clone())), ("generateName", masked)] {
                if let Some(v) = value.filter(|v| !is_dns_subdomain(v)) {
                    return Err(ApiError::invalid(
                        rt,
                        &name,
                        &format!(
                            "metadata.{field}: Invalid value: {v:?}: a lowercase RFC 1123 \
                             subdomain must consist of lower case alphanumeric characters, '-' \
                             or '.', and must start and end with an alphanumeric character"
                        ),
                    ));
                }
            }
        }
        for f in SYSTEM_META {
            meta.remove(*f);
        }
        let key = obj_key(
            rt,
            ns.unwrap_or(if rt.namespaced { "default" } else { "" }),
            &name,
        );
        if rt.namespaced && !seed && !self.namespace_exists(&key.2) {
            return Err(ApiError {
                code: 404,
                reason: "NotFound".into(),
                message: format!("namespaces \"{}\" not found", key.2),
                details: Some(json!({"name": key.2, "kind": "namespaces"})),
            });
        }
        if rt.namespaced && !seed && self.namespace_terminating(&key.2) {
            return Err(ApiError::namespace_terminating(rt, &name, &key.2));
        }
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        if rt.status_subresource && !seed {
            body.as_object_mut().expect("object").remove("status");
        }
        apply_defaults(rt, &mut body);
        drop_empty(rt, &mut body);
        validate_object(rt, &body, None)?;
        let managers = track_update(rt, &Value::Null, &body, Vec::new(), manager, "");
        Ok(self.insert_new(rt, key, body, managers))
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .contains_key(&(String::new(), "namespaces".into(), String::new(), ns.into()))
    }

    /// Whether the namespace is being deleted (it has a `deletionTimestamp`).
    fn namespace_terminating(&self, ns: &str) -> bool {
        self.objects
            .get(&(String::new(), "namespaces".into(), String::new(), ns.into()))
            .is_some_and(|n| n.obj["metadata"]["deletionTimestamp"].is_string())
    }

    /// Assigns the system fields, stores, emits ADDED and runs the dangling-owner check.
    fn insert_new(
        &mut self,
        rt: &ResourceType,
        key: ObjKey,
        mut obj: Value,
        managers: Vec<Managed>,
    ) -> Value {
        let rv = self.next_rv();
        self.seq += 1;
        let uid = format!("{:08x}-fa4e-4000-8000-{:012x}", self.seq, rv);
        obj["apiVersion"] = json!(rt.storage_api_version());
        obj["kind"] = json!(rt.kind);
        let meta = &mut obj["metadata"];
        meta["uid"] = json!(uid);
        meta["resourceVersion"] = json!(rv.to_string());
        meta["creationTimestamp"] = json!(now());
        if rt.generation {
            meta["generation"] = json!(1);
        }
        self.objects.insert(
            key.clone(),
            Stored {
                obj: obj.clone(),
                managers,
            },
        );
        self.emit(&key, "ADDED", obj.clone(), None);
        self.collect_dangling(&key);
        obj
    }

    fn replace(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        sub: &str,
        body: Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let key = obj_key(rt, ns, name);
        let stored = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        check_type_meta(rt, &body, false)?;
        check_identity(rt, &body, ns, name)?;
        match body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            Some(rv) if rv != stored_rv(&stored.obj) => return Err(ApiError::conflict(rt, name)),
            Some(_) => {}
            None if !rt.unconditional_update => {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ));
            }
            None => {}
        }
        let new = prepare_update(rt, &stored.obj, body, sub)?;
        let managers = track_update(rt, &stored.obj, &new, stored.managers, manager, sub);
        Ok(self.commit_update(rt, &key, new, managers))
    }

    fn patch(
        &mut self,
        req: &Incoming,
        route: &Route,
        name: &str,
        body: Value,
        manager: &str,
    ) -> Result<(u16, Value), ApiError> {
        let rt = &route.rt;
        let ns = route.namespace.as_deref().unwrap_or("");
        let sub = route.subresource.as_deref().unwrap_or("");
        let ctype = req
            .content_type
            .as_deref()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if ctype == "application/apply-patch+yaml" {
            let manager = req
                .q("fieldManager")
                .filter(|m| !m.is_empty())
                .ok_or_else(|| {
                    ApiError::invalid_options(
                        "fieldManager: Required value: is required for apply patch",
                    )
                })?;
            let force = req.q("force") == Some("true");
            return self.apply(rt, ns, name, sub, body, manager, force);
        }
        let key = obj_key(rt, ns, name);
        let stored = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let mut doc = render(rt, &route.version, &stored.obj, false);
        match ctype {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                if ctype.starts_with("application/strategic") && rt.custom {
                    return Err(ApiError {
                        code: 415,
                        reason: "UnsupportedMediaType".into(),
                        message: format!(
                            "the body of the request was in an unknown format - accepted media types include: \
                             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml \
                             (strategic merge patch is not supported for {})",
                            rt.qualified()
                        ),
                        details: None,
                    });
                }
                if !body.is_object() {
                    return Err(ApiError::bad_request("merge patch must be a JSON object"));
                }
                json_patch::merge(&mut doc, &body);
            }
            "application/json-patch+json" => apply_json_patch(&mut doc, body)?,
            other => {
                return Err(ApiError {
                    code: 415,
                    reason: "UnsupportedMediaType".into(),
                    message: format!("the body of the request was in an unknown format - {other}"),
                    details: None,
                });
            }
        }
        if let Some(rv) = doc
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && rv != stored_rv(&stored.obj)
        {
            return Err(ApiError::conflict(rt, name));
        }
        check_type_meta(rt, &doc, false)?;
        check_identity(rt, &doc, ns, name)?;
        let new = prepare_update(rt, &stored.obj, doc, sub)?;
        let managers = track_update(rt, &stored.obj, &new, stored.managers, manager, sub);
        Ok((200, self.commit_update(rt, &key, new, managers)))
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        sub: &str,
        mut body: Value,
        manager: &str,
        force: bool,
    ) -> Result<(u16, Value), ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request("apply patch must be an object"));
        }
        check_type_meta(rt, &body, true)?;
        check_identity(rt, &body, ns, name)?;
        strip_nulls(&mut body);
        convert_string_data(rt, &mut body);
        let leaves: BTreeMap<FieldPath, Value> = leaves(&body)
            .into_iter()
            .filter(|(p, _)| in_scope(rt, sub, p))
            .collect();
        let key = obj_key(rt, ns, name);
        let Some(stored) = self.objects.get(&key).cloned() else {
            if !sub.is_empty() {
                return Err(ApiError::not_found(rt, name));
            }
            if rt.namespaced && !self.namespace_exists(ns) {
                return Err(ApiError {
                    code: 404,
                    reason: "NotFound".into(),
                    message: format!("namespaces \"{ns}\" not found"),
                    details: Some(json!({"name": ns, "kind": "namespaces"})),
                });
            }
            if rt.namespaced && self.namespace_terminating(ns) {
                return Err(ApiError::namespace_terminating(rt, name, ns));
            }
            let mut obj = json!({"apiVersion": rt.storage_api_version(), "kind": rt.kind, "metadata": {"name": name}});
            if rt.namespaced {
                obj["metadata"]["namespace"] = json!(ns);
            }
            for (p, v) in &leaves {
                set_path(&mut obj, p, v.clone());
            }
            apply_defaults(rt, &mut obj);
            drop_empty(rt, &mut obj);
            validate_object(rt, &obj, None)?;
            let managers = vec![Managed {
                manager: manager.into(),
                apply: true,
                subresource: String::new(),
                fields: leaves.keys().cloned().collect(),
            }];
            return Ok((201, self.insert_new(rt, key, obj, managers)));
        };
        if let Some(rv) = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && rv != stored_rv(&stored.obj)
        {
            return Err(ApiError::conflict(rt, name));
        }
        let is_me = |m: &Managed| m.manager == manager && m.apply && m.subresource == sub;
        let mut managers = stored.managers.clone();
        let mut doc = stored.obj.clone();
        // Conflicts: a field another manager owns, applied with a different value.
        let mut conflicts = Vec::new();
        for (p, v) in &leaves {
            if get_path(&doc, p).is_some_and(|cur| cur != v) {
                for m in managers
                    .iter()
                    .filter(|m| !is_me(m) && m.fields.contains(p))
                {
                    conflicts.push((m.manager.clone(), p.clone()));
                }
            }
        }
        if !conflicts.is_empty() {
            if !force {
                return Err(ApiError::apply_conflict(rt, name, &conflicts));
            }
            for m in managers.iter_mut().filter(|m| !is_me(m)) {
                m.fields.retain(|p| !conflicts.iter().any(|(_, c)| c == p));
            }
        }
        // Fields this manager applied before but no longer does, and nobody else owns.
        let previous: BTreeSet<FieldPath> = managers
            .iter()
            .find(|m| is_me(m))
            .map(|m| m.fields.clone())
            .unwrap_or_default();
        for p in previous.iter().filter(|p| !leaves.contains_key(*p)) {
            if !managers.iter().any(|m| !is_me(m) && m.fields.contains(p)) {
                remove_path(&mut doc, p, 0);
            }
        }
        for (p, v) in &leaves {
            set_path(&mut doc, p, v.clone());
        }
        let new = prepare_update(rt, &stored.obj, doc, sub)?;
        match managers.iter_mut().find(|m| is_me(m)) {
            Some(m) => m.fields = leaves.keys().cloned().collect(),
            None => managers.push(Managed {
                manager: manager.into(),
                apply: true,
                subresource: sub.into(),
                fields: leaves.keys().cloned().collect(),
            }),
        }
        let managers = prune_managers(managers, &new);
        Ok((200, self.commit_update(rt, &key, new, managers)))
    }

    /// Stores an updated object unless nothing changed; bumps generation; completes a
    /// deletion whose last finalizer went away. Returns the resulting object.
    fn commit_update(
        &mut self,
        rt: &ResourceType,
        key: &ObjKey,
        mut new: Value,
        managers: Vec<Managed>,
    ) -> Value {
        let old = self.objects.get(key).cloned().expect("object exists");
        if rt.generation && spec_of(rt, &old.obj) != spec_of(rt, &new) {
            let g = old
                .obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        if new == old.obj && managers == old.managers {
            return old.obj;
        }
        let rv = self.next_rv();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
        if deleting && finalizers(&new).is_empty() {
            self.objects.remove(key);
            self.emit(key, "DELETED", new.clone(), None);
            self.collect_garbage(
                new.pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            );
            return new;
        }
        self.objects.insert(
            key.clone(),
            Stored {
                obj: new.clone(),
                managers,
            },
        );
        self.emit(key, "MODIFIED", new.clone(), Some(old.obj));
        self.collect_dangling(key);
        new
    }

    /// DELETE semantics. Returns the object and whether it is gone (vs. only marked).
    fn delete_key(
        &mut self,
        rt: &ResourceType,
        key: &ObjKey,
        opts: &Value,
    ) -> Result<(Value, bool), ApiError> {
        let stored = self.objects.get(key).cloned().expect("object exists");
        let name = &key.3;
        if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str)
            && Some(uid) != stored.obj.pointer("/metadata/uid").and_then(Value::as_str)
        {
            return Err(ApiError::precondition(rt, name, "UID"));
        }
        if let Some(rv) = opts
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            && rv != stored_rv(&stored.obj)
        {
            return Err(ApiError::precondition(rt, name, "ResourceVersion"));
        }
        let orphan = opts.get("propagationPolicy").and_then(Value::as_str) == Some("Orphan")
            || opts.get("orphanDependents").and_then(Value::as_bool) == Some(true);
        let mut obj = stored.obj.clone();
        if !finalizers(&obj).is_empty() {
            if obj.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok((obj, false));
            }
            let rv = self.next_rv();
            let meta = &mut obj["metadata"];
            meta["deletionTimestamp"] = json!(now());
            meta["deletionGracePeriodSeconds"] = json!(0);
            meta["resourceVersion"] = json!(rv.to_string());
            if rt.generation {
                let g = meta.get("generation").and_then(Value::as_i64).unwrap_or(0);
                meta["generation"] = json!(g + 1);
            }
            self.objects.insert(
                key.clone(),
                Stored {
                    obj: obj.clone(),
                    managers: stored.managers,
                },
            );
            self.emit(key, "MODIFIED", obj.clone(), Some(stored.obj));
            return Ok((obj, false));
        }
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.remove(key);
        self.emit(key, "DELETED", obj.clone(), None);
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if orphan {
            self.orphan_dependents(&uid);
        } else {
            self.collect_garbage(&uid);
        }
        Ok((obj, true))
    }

    fn type_for_key(&self, key: &ObjKey) -> ResourceType {
        self.types
            .iter()
            .find(|t| t.is(&key.0, &key.1))
            .cloned()
            .expect("served type")
    }

    /// Is there a live owner for this reference, as the garbage collector sees it?
    fn owner_exists(&self, owner_ref: &Value, dependent_ns: &str) -> bool {
        let uid = owner_ref.get("uid").and_then(Value::as_str).unwrap_or("");
        self.objects.iter().any(|(k, s)| {
            s.obj.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid)
                && owner_ref.get("kind").and_then(Value::as_str)
                    == s.obj.get("kind").and_then(Value::as_str)
                && owner_ref.get("name").and_then(Value::as_str) == Some(k.3.as_str())
                && (k.2.is_empty() || k.2 == dependent_ns)
        })
    }

    fn dependents_of(&self, uid: &str) -> Vec<ObjKey> {
        self.objects
            .iter()
            .filter(|(_, s)| {
                owner_refs(&s.obj)
                    .iter()
                    .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Background garbage collection after the object with `uid` went away.
    fn collect_garbage(&mut self, uid: &str) {
        if uid.is_empty() {
            return;
        }
        let mut queue = vec![uid.to_string()];
        while let Some(uid) = queue.pop() {
            for key in self.dependents_of(&uid) {
                if let Some(gone) = self.gc_one(&key) {
                    queue.push(gone);
                }
            }
        }
    }

    /// After a write: an object none of whose owners exist is collected, as the garbage
    /// collector would soon do; dangling references next to live owners are removed.
    fn collect_dangling(&mut self, key: &ObjKey) {
        if let Some(gone) = self.gc_one(key) {
            self.collect_garbage(&gone);
        }
    }

    /// Returns the uid of the object if it was removed.
    fn gc_one(&mut self, key: &ObjKey) -> Option<String> {
        let stored = self.objects.get(key)?.clone();
        let refs = owner_refs(&stored.obj);
        if refs.is_empty() {
            return None;
        }
        let live: Vec<Value> = refs
            .iter()
            .filter(|r| self.owner_exists(r, &key.2))
            .cloned()
            .collect();
        let rt = self.type_for_key(key);
        if live.is_empty() {
            if stored.obj.pointer("/metadata/deletionTimestamp").is_some() {
                return None;
            }
            let (obj, removed) = self.delete_key(&rt, key, &json!({})).ok()?;
            return removed.then(|| {
                obj.pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            });
        }
        if live.len() != refs.len() {
            let mut new = stored.obj.clone();
            new["metadata"]["ownerReferences"] = Value::Array(live);
            let managers = track_update(
                &rt,
                &stored.obj,
                &new,
                stored.managers,
                "garbage-collector",
                "",
            );
            self.commit_update(&rt, key, new, managers);
        }
        None
    }

    fn orphan_dependents(&mut self, uid: &str) {
        for key in self.dependents_of(uid) {
            let stored = self.objects[&key].clone();
            let mut new = stored.obj.clone();
            let refs: Vec<Value> = owner_refs(&new)
                .into_iter()
                .filter(|r| r.get("uid").and_then(Value::as_str) != Some(uid))
                .collect();
            let meta = new["metadata"].as_object_mut().expect("metadata");
            if refs.is_empty() {
                meta.remove("ownerReferences");
            } else {
                meta.insert("ownerReferences".into(), Value::Array(refs));
            }
            let rt = self.type_for_key(&key);
            let managers = track_update(
                &rt,
                &stored.obj,
                &new,
                stored.managers,
                "garbage-collector",
                "",
            );
            self.commit_update(&rt, &key, new, managers);
        }
    }

    fn emit(&mut self, key: &ObjKey, etype: &'static str, obj: Value, prev: Option<Value>) {
        let ev = HistEvent {
            rv: self.rv,
            group: key.0.clone(),
            plural: key.1.clone(),
            namespace: key.2.clone(),
            etype,
            obj,
            prev,
        };
        self.subs.retain(|s| {
            if !s.covers(&ev.group, &ev.plural, &ev.namespace) {
                return !s.tx.is_closed();
            }
            match s.event_line(&ev) {
                Some(line) => s.tx.send(line).is_ok(),
                None => !s.tx.is_closed(),
            }
        });
        self.history.push(ev);
    }
}

impl Sub {
    fn covers(&self, group: &str, plural: &str, namespace: &str) -> bool {
        self.group == group
            && self.plural == plural
            && self.namespace.as_deref().is_none_or(|n| n == namespace)
    }
    fn matches(&self, obj: &Value) -> bool {
        matches_selectors(obj, &self.labels, &self.fields)
    }
    fn render(&self, obj: &Value) -> Value {
        render(&self.rt, &self.version, obj, self.metadata_only)
    }
    /// The line this watcher sees for a stored event, honouring selectors: an object that
    /// stops matching is seen as DELETED, one that starts matching as ADDED.
    fn event_line(&self, ev: &HistEvent) -> Option<Bytes> {
        if !self.covers(&ev.group, &ev.plural, &ev.namespace) {
            return None;
        }
        let now = self.matches(&ev.obj);
        let etype = match (ev.etype, ev.prev.as_ref().map(|p| self.matches(p))) {
            ("MODIFIED", Some(before)) => match (before, now) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            },
            (t, _) if now => t,
            _ => return None,
        };
        Some(watch_line(etype, self.render(&ev.obj)))
    }
}

// ---------------------------------------------------------------------------------------
// Object helpers
// ---------------------------------------------------------------------------------------

fn obj_key(rt: &ResourceType, ns: &str, name: &str) -> ObjKey {
    let ns = if rt.namespaced { ns } else { "" };
    (
        rt.group.clone(),
        rt.plural.clone(),
        ns.to_string(),
        name.to_string(),
    )
}

fn stored_rv(obj: &Value) -> &str {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn finalizers(obj: &Value) -> Vec<Value> {
    let mut all = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    // A Namespace is also held by `spec.finalizers` (the namespace controller's `kubernetes`).
    if obj["kind"] == "Namespace" {
        all.extend(
            obj.pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        );
    }
    all
}

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn from_value<K: DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("stored object does not deserialize: {e}: {v}"))
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn random_suffix(seed: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995;
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            x = x.wrapping_add(seed.rotate_left(17));
            c
        })
        .collect()
}

/// The object as a client sees it at `version`, or its `PartialObjectMetadata`.
fn render(rt: &ResourceType, version: &str, obj: &Value, metadata_only: bool) -> Value {
    if metadata_only {
        return json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        });
    }
    let mut out = obj.clone();
    out["apiVersion"] = json!(rt.api_version(version));
    out["kind"] = json!(rt.kind);
    out
}

/// List items of built-in kinds carry no `apiVersion`/`kind`, like the real server's.
fn render_item(rt: &ResourceType, version: &str, obj: &Value, metadata_only: bool) -> Value {
    let mut item = render(rt, version, obj, metadata_only);
    if !rt.custom
        && !metadata_only
        && let Some(m) = item.as_object_mut()
    {
        m.remove("apiVersion");
        m.remove("kind");
    }
    item
}

fn list_value(
    rt: &ResourceType,
    version: &str,
    metadata_only: bool,
    rv: u64,
    cont: Option<(String, usize)>,
    items: Vec<Value>,
) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some((token, remaining)) = cont {
        meta["continue"] = json!(token);
        meta["remainingItemCount"] = json!(remaining);
    }
    let (api_version, kind) = if metadata_only {
        (
            "meta.k8s.io/v1".to_string(),
            "PartialObjectMetadataList".to_string(),
        )
    } else {
        (rt.api_version(version), format!("{}List", rt.kind))
    };
    json!({"apiVersion": api_version, "kind": kind, "metadata": meta, "items": items})
}

fn success_status(rt: &ResourceType, name: &str, obj: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": name,
            "group": rt.group,
            "kind": rt.plural,
            "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
        }
    })
}

fn delete_options(req: &Incoming) -> Value {
    let mut opts = req
        .body
        .clone()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    if let Some(p) = req.q("propagationPolicy") {
        opts["propagationPolicy"] = json!(p);
    }
    opts
}

fn is_apply(req: &Incoming) -> bool {
    req.method == Method::PATCH
        && req
            .content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/apply-patch"))
}

/// Everything but `metadata` (and `status` when it is a subresource): what `generation`
/// tracks.
fn spec_of(rt: &ResourceType, obj: &Value) -> Value {
    let mut m = obj.as_object().cloned().unwrap_or_default();
    for f in ["metadata", "apiVersion", "kind"] {
        m.remove(f);
    }
    if rt.status_subresource {
        m.remove("status");
    }
    Value::Object(m)
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, c| !c.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn check_type_meta(rt: &ResourceType, body: &Value, required: bool) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    }
    match body.get("apiVersion").and_then(Value::as_str) {
        Some(av) if !rt.versions.iter().any(|v| rt.api_version(v) == av) => {
            return Err(ApiError::bad_request(&format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rt.storage_api_version()
            )));
        }
        None if required => return Err(ApiError::bad_request("apiVersion must be set")),
        _ => {}
    }
    match body.get("kind").and_then(Value::as_str) {
        Some(k) if k != rt.kind => Err(ApiError::bad_request(&format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            rt.kind
        ))),
        None if required => Err(ApiError::bad_request("kind must be set")),
        _ => Ok(()),
    }
}

fn check_identity(rt: &ResourceType, body: &Value, ns: &str, name: &str) -> Result<(), ApiError> {
    if let Some(n) = body.pointer("/metadata/name").and_then(Value::as_str)
        && n != name
    {
        return Err(ApiError::bad_request(&format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    if rt.namespaced
        && let Some(n) = body.pointer("/metadata/namespace").and_then(Value::as_str)
        && n != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// Normalizes an update: keeps server-owned metadata, scopes main/status writes, applies
/// type-specific rules and validates.
fn prepare_update(
    rt: &ResourceType,
    old: &Value,
    mut new: Value,
    sub: &str,
) -> Result<Value, ApiError> {
    if !new.is_object() {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    }
    strip_nulls(&mut new);
    new["apiVersion"] = json!(rt.storage_api_version());
    new["kind"] = json!(rt.kind);
    if sub == "status" {
        let mut out = old.clone();
        match new.get("status") {
            Some(s) => out["status"] = s.clone(),
            None => {
                out.as_object_mut().expect("object").remove("status");
            }
        }
        new = out;
    } else if rt.status_subresource {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                new.as_object_mut().expect("object").remove("status");
            }
        }
    }
    if !new.get("metadata").is_some_and(Value::is_object) {
        new["metadata"] = json!({});
    }
    let old_meta = old
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let meta = new["metadata"].as_object_mut().expect("metadata");
    for f in SYSTEM_META.iter().chain(["name", "namespace"].iter()) {
        match old_meta.get(*f) {
            Some(v) => meta.insert(f.to_string(), v.clone()),
            None => meta.remove(*f),
        };
    }
    convert_string_data(rt, &mut new);
    namespace_name_label(rt, &mut new);
    drop_empty(rt, &mut new);
    validate_object(rt, &new, Some(old))?;
    Ok(new)
}

/// Drops what the API server's typed encoding omits: empty lists, maps and strings in
/// `metadata` (so a removed last finalizer leaves no `finalizers: []`), and for built-in
/// kinds empty top-level maps such as a Secret's `data`.
fn drop_empty(rt: &ResourceType, obj: &mut Value) {
    let empty = |v: &Value| match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|_, v| !empty(v));
    }
    if !rt.custom
        && let Some(top) = obj.as_object_mut()
    {
        top.retain(|k, v| {
            matches!(k.as_str(), "metadata" | "spec" | "status")
                || !v.as_object().is_some_and(Map::is_empty)
        });
    }
}

fn apply_defaults(rt: &ResourceType, obj: &mut Value) {
    convert_string_data(rt, obj);
    if rt.is("", "secrets") && obj.get("type").is_none() {
        obj["type"] = json!("Opaque");
    }
    if rt.is("", "namespaces") {
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        obj["status"] = json!({"phase": "Active"});
    }
    namespace_name_label(rt, obj);
}

/// Namespaces carry the label `kubernetes.io/metadata.name` with their name, set by the API
/// server on every create and update whatever the client sent (Kubernetes 1.21 and later).
fn namespace_name_label(rt: &ResourceType, obj: &mut Value) {
    if !rt.is("", "namespaces") {
        return;
    }
    let Some(name) = obj["metadata"]["name"].as_str().map(str::to_owned) else {
        return;
    };
    if !obj["metadata"]["labels"].is_object() {
        obj["metadata"]["labels"] = json!({});
    }
    obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
}

/// Secrets store `stringData` base64-encoded into `data`.
fn convert_string_data(rt: &ResourceType, obj: &mut Value) {
    if !rt.is("", "secrets") {
        return;
    }
    let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return;
    };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in sd {
        let s = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        obj["data"][k] = json!(base64_encode(s.as_bytes()));
    }
}

fn base64_encode(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Name, label, annotation, finalizer and kind-specific checks (422 Invalid).
fn validate_object(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let invalid = |msg: String| Err(ApiError::invalid(rt, name, &msg));
    if old.is_none() {
        let ok = if rt.is("", "namespaces") {
            is_dns_label(name)
        } else {
            is_dns_subdomain(name)
        };
        if !ok {
            return invalid(format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case \
                 alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ));
        }
    }
    for (field, values_too) in [("labels", true), ("annotations", false)] {
        let Some(map) = obj.pointer(&format!("/metadata/{field}")) else {
            continue;
        };
        let Some(map) = map.as_object() else {
            return Err(ApiError::bad_request(&format!(
                "metadata.{field} must be a map of strings"
            )));
        };
        for (k, v) in map {
            if !is_qualified_name(k) {
                return invalid(format!(
                    "metadata.{field}: Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.'"
                ));
            }
            let Some(v) = v.as_str() else {
                return Err(ApiError::bad_request(&format!(
                    "metadata.{field}.{k} must be a string"
                )));
            };
            if values_too && !is_label_value(v) {
                return invalid(format!(
                    "metadata.labels: Invalid value: \"{v}\": a valid label must be an empty string or consist of \
                     alphanumeric characters, '-', '_' or '.', must start and end with an alphanumeric character, \
                     and be at most 63 characters"
                ));
            }
        }
    }
    if let Some(old) = old
        && old.pointer("/metadata/deletionTimestamp").is_some()
    {
        let before = finalizers(old);
        if finalizers(obj).iter().any(|f| !before.contains(f)) {
            return Err(ApiError {
                code: 422,
                reason: "Invalid".into(),
                message: format!(
                    "{} \"{name}\" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the \
                     object is being deleted",
                    rt.kind
                ),
                details: None,
            });
        }
    }
    if rt.is("", "secrets") {
        if let Some(data) = obj.get("data").and_then(Value::as_object) {
            for k in data.keys() {
                if k.is_empty()
                    || !k
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return invalid(format!(
                        "data[{k}]: Invalid value: \"{k}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
                    ));
                }
            }
        }
        if let Some(old) = old
            && old.get("immutable") == Some(&json!(true))
            && (old.get("data") != obj.get("data") || obj.get("immutable") != Some(&json!(true)))
        {
            return invalid(
                "data: Forbidden: field is immutable when `immutable` is set".to_string(),
            );
        }
    }
    Ok(())
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_name_part(s)
}

fn is_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(s),
    }
}

// ---------------------------------------------------------------------------------------
// JSON patch (RFC 6902), with the API server's treatment of `test` against null
// ---------------------------------------------------------------------------------------

fn apply_json_patch(doc: &mut Value, ops: Value) -> Result<(), ApiError> {
    let Value::Array(ops) = ops else {
        return Err(ApiError::bad_request(
            "json patch must be an array of operations",
        ));
    };
    for op in ops {
        // The API server's json-patch treats `test` of a missing path against null as a
        // match (kube's finalizer helper relies on this for `/metadata/finalizers`).
        if op.get("op").and_then(Value::as_str) == Some("test")
            && op.get("value").is_some_and(Value::is_null)
        {
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            match doc.pointer(path) {
                None | Some(Value::Null) => continue,
                Some(_) => {
                    return Err(ApiError::json_patch_failed(&format!(
                        "testing value {path} failed: test failed"
                    )));
                }
            }
        }
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(vec![op.clone()]))
            .map_err(|e| {
                ApiError::bad_request(&format!("invalid json patch operation {op}: {e}"))
            })?;
        json_patch::patch(doc, &patch).map_err(|e| ApiError::json_patch_failed(&e.to_string()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Server-side apply field ownership
// ---------------------------------------------------------------------------------------

enum ListKind {
    Set,
    Map(&'static str),
}

fn list_kind(path: &[Seg]) -> Option<ListKind> {
    match path {
        [Seg::Field(a), Seg::Field(b)] if a == "metadata" && b == "finalizers" => {
            Some(ListKind::Set)
        }
        [Seg::Field(a), Seg::Field(b)] if a == "metadata" && b == "ownerReferences" => {
            Some(ListKind::Map("uid"))
        }
        _ => None,
    }
}

fn item_key(kind: &ListKind, item: &Value) -> String {
    let v = match kind {
        ListKind::Set => item,
        ListKind::Map(k) => item.get(*k).unwrap_or(item),
    };
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// Leaf fields of an object: scalars, lists (atomic) and empty maps, plus the items of
/// associative lists.
fn leaves(v: &Value) -> BTreeMap<FieldPath, Value> {
    fn walk(v: &Value, prefix: &mut FieldPath, out: &mut BTreeMap<FieldPath, Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, c) in m {
                    prefix.push(Seg::Field(k.clone()));
                    walk(c, prefix, out);
                    prefix.pop();
                }
            }
            Value::Array(items) if list_kind(prefix).is_some() => {
                let kind = list_kind(prefix).expect("list kind");
                for item in items {
                    prefix.push(Seg::Item(item_key(&kind, item)));
                    out.insert(prefix.clone(), item.clone());
                    prefix.pop();
                }
            }
            Value::Null => {}
            _ if !prefix.is_empty() => {
                out.insert(prefix.clone(), v.clone());
            }
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Fields a write to `sub` ("" or "status") may own.
fn in_scope(rt: &ResourceType, sub: &str, p: &[Seg]) -> bool {
    let Some(Seg::Field(top)) = p.first() else {
        return false;
    };
    match top.as_str() {
        "apiVersion" | "kind" => false,
        "metadata" => {
            sub.is_empty()
                && matches!(p.get(1), Some(Seg::Field(f)) if !SYSTEM_META.contains(&f.as_str()) && f != "name" && f != "namespace")
        }
        "status" => sub == "status" || !rt.status_subresource,
        _ => sub.is_empty(),
    }
}

fn get_path<'a>(v: &'a Value, p: &[Seg]) -> Option<&'a Value> {
    let mut cur = v;
    for (i, seg) in p.iter().enumerate() {
        cur = match seg {
            Seg::Field(f) => cur.get(f)?,
            Seg::Item(k) => {
                let kind = list_kind(&p[..i])?;
                cur.as_array()?
                    .iter()
                    .find(|it| item_key(&kind, it) == *k)?
            }
        };
    }
    Some(cur)
}

fn set_path(v: &mut Value, p: &[Seg], val: Value) {
    let Some((first, rest)) = p.split_first() else {
        *v = val;
        return;
    };
    match first {
        Seg::Field(f) => {
            if !v.is_object() {
                *v = json!({});
            }
            let child = v
                .as_object_mut()
                .expect("object")
                .entry(f.clone())
                .or_insert(Value::Null);
            set_path(child, rest, val);
        }
        Seg::Item(k) => {
            // Item segments are always last; the prefix tells the list kind.
            if !v.is_array() {
                *v = json!([]);
            }
            let arr = v.as_array_mut().expect("array");
            let kind = if val.is_object() {
                ListKind::Map("uid")
            } else {
                ListKind::Set
            };
            match arr.iter_mut().find(|it| item_key(&kind, it) == *k) {
                Some(existing) => *existing = val,
                None => arr.push(val),
            }
        }
    }
}

/// Removes a leaf; maps and associative lists it leaves empty below the top level go too.
fn remove_path(v: &mut Value, p: &[Seg], depth: usize) {
    let Some((first, rest)) = p.split_first() else {
        return;
    };
    match (first, v) {
        (Seg::Field(f), Value::Object(m)) => {
            if rest.is_empty() {
                m.remove(f);
            } else if let Some(child) = m.get_mut(f) {
                remove_path(child, rest, depth + 1);
                let empty = match child {
                    Value::Object(c) => c.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    _ => false,
                };
                if empty && depth >= 1 {
                    m.remove(f);
                }
            }
        }
        (Seg::Item(k), Value::Array(a)) => {
            a.retain(|it| {
                let set_key = it.as_str().map(str::to_string);
                let map_key = it.get("uid").and_then(Value::as_str).map(str::to_string);
                set_key.as_deref() != Some(k.as_str()) && map_key.as_deref() != Some(k.as_str())
            });
        }
        _ => {}
    }
}

/// Ownership after a non-apply write by `manager`: changed fields move to it, removed
/// fields leave every manager.
fn track_update(
    rt: &ResourceType,
    old: &Value,
    new: &Value,
    mut managers: Vec<Managed>,
    manager: &str,
    sub: &str,
) -> Vec<Managed> {
    let scoped = |v: &Value| -> BTreeMap<FieldPath, Value> {
        leaves(v)
            .into_iter()
            .filter(|(p, _)| in_scope(rt, sub, p))
            .collect()
    };
    let (before, after) = (scoped(old), scoped(new));
    let changed: BTreeSet<FieldPath> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    let is_me = |m: &Managed| m.manager == manager && !m.apply && m.subresource == sub;
    for m in managers.iter_mut() {
        if !is_me(m) {
            m.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match managers.iter_mut().find(|m| is_me(m)) {
            Some(m) => m.fields.extend(changed),
            None => managers.push(Managed {
                manager: manager.into(),
                apply: false,
                subresource: sub.into(),
                fields: changed,
            }),
        }
    }
    prune_managers(managers, new)
}

/// Drops ownership of fields that no longer exist, and managers left with nothing.
fn prune_managers(mut managers: Vec<Managed>, obj: &Value) -> Vec<Managed> {
    for m in managers.iter_mut() {
        m.fields.retain(|p| get_path(obj, p).is_some());
    }
    managers.retain(|m| !m.fields.is_empty());
    managers
}

fn render_path(p: &[Seg]) -> String {
    p.iter()
        .map(|s| match s {
            Seg::Field(f) => format!(".{f}"),
            Seg::Item(k) => format!("[{k}]"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Selectors
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug)]
struct FieldReq {
    path: String,
    value: String,
    negate: bool,
}

fn selectors(
    req: &Incoming,
    rt: &ResourceType,
) -> Result<(Vec<LabelReq>, Vec<FieldReq>), ApiError> {
    let labels = parse_label_selector(req.q("labelSelector").unwrap_or(""))
        .map_err(|e| ApiError::bad_request(&format!("unable to parse requirement: {e}")))?;
    let fields = parse_field_selector(req.q("fieldSelector").unwrap_or(""), rt)?;
    Ok((labels, fields))
}

fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    let mut out = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("expected a parenthesized set in {term:?}"))?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        let req = if let Some(k) = term.strip_prefix('!') {
            LabelReq::NotExists(k.trim().to_string())
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            LabelReq::NotIn(k.trim().to_string(), set(rest)?)
        } else if let Some((k, rest)) = term.split_once(" in ") {
            LabelReq::In(k.trim().to_string(), set(rest)?)
        } else if let Some((k, v)) = term.split_once("!=") {
            LabelReq::NotEq(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            LabelReq::Eq(k.trim().to_string(), v.trim().to_string())
        } else if term.contains(['<', '>', ' ', '(', ')']) {
            return Err(format!("unsupported selector term {term:?}"));
        } else {
            LabelReq::Exists(term.to_string())
        };
        let key = match &req {
            LabelReq::Eq(k, _)
            | LabelReq::NotEq(k, _)
            | LabelReq::In(k, _)
            | LabelReq::NotIn(k, _)
            | LabelReq::Exists(k)
            | LabelReq::NotExists(k) => k,
        };
        if !is_qualified_name(key) {
            return Err(format!("invalid label key {key:?}"));
        }
        out.push(req);
    }
    Ok(out)
}

fn parse_field_selector(s: &str, rt: &ResourceType) -> Result<Vec<FieldReq>, ApiError> {
    let mut out = Vec::new();
    for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (path, value, negate) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (k, v, false)
        } else {
            return Err(ApiError::bad_request(&format!(
                "invalid field selector term {term:?}"
            )));
        };
        let path = path.trim();
        let supported = matches!(path, "metadata.name" | "metadata.namespace")
            || (!rt.custom && path.split('.').all(|p| !p.is_empty()));
        if !supported {
            return Err(ApiError::bad_request(&format!(
                "field label not supported: {path}"
            )));
        }
        out.push(FieldReq {
            path: path.to_string(),
            value: value.trim().to_string(),
            negate,
        });
    }
    Ok(out)
}

fn matches_selectors(obj: &Value, labels: &[LabelReq], fields: &[FieldReq]) -> bool {
    let get_label = |k: &str| {
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
    };
    let labels_ok = labels.iter().all(|r| match r {
        LabelReq::Eq(k, v) => get_label(k) == Some(v.as_str()),
        LabelReq::NotEq(k, v) => get_label(k) != Some(v.as_str()),
        LabelReq::In(k, vs) => get_label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
        LabelReq::NotIn(k, vs) => get_label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
        LabelReq::Exists(k) => get_label(k).is_some(),
        LabelReq::NotExists(k) => get_label(k).is_none(),
    });
    labels_ok
        && fields.iter().all(|f| {
            let mut cur = Some(obj);
            for part in f.path.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            let actual = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == f.value) != f.negate
        })
}

// ---------------------------------------------------------------------------------------
// Query strings
// ---------------------------------------------------------------------------------------

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------
// Errors as metav1.Status
// ---------------------------------------------------------------------------------------

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

impl ApiError {
    fn new(code: u16, message: &str) -> Self {
        Self {
            code,
            reason: reason_for(code).into(),
            message: message.into(),
            details: None,
        }
    }
    fn bad_request(message: &str) -> Self {
        Self::new(400, message)
    }
    fn method_not_allowed() -> Self {
        Self::new(
            405,
            "the server does not allow this method on the requested resource",
        )
    }
    fn not_found_path() -> Self {
        Self::new(404, "the server could not find the requested resource")
    }
    fn details(rt: &ResourceType, name: &str) -> Value {
        json!({"name": name, "group": rt.group, "kind": rt.plural})
    }
    fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self {
            details: Some(Self::details(rt, name)),
            ..Self::new(404, &format!("{} \"{name}\" not found", rt.qualified()))
        }
    }
    fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self {
            code: 409,
            reason: "AlreadyExists".into(),
            message: format!("{} \"{name}\" already exists", rt.qualified()),
            details: Some(Self::details(rt, name)),
        }
    }
    fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self {
            details: Some(Self::details(rt, name)),
            ..Self::new(
                409,
                &format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your \
                     changes to the latest version and try again",
                    rt.qualified()
                ),
            )
        }
    }
    fn precondition(rt: &ResourceType, name: &str, what: &str) -> Self {
        Self {
            details: Some(Self::details(rt, name)),
            ..Self::new(
                409,
                &format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: {what}",
                    rt.qualified()
                ),
            )
        }
    }
    fn apply_conflict(rt: &ResourceType, name: &str, conflicts: &[(String, FieldPath)]) -> Self {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with \"{m}\": {}", render_path(p)))
            .collect();
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, p)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": render_path(p)})
            })
            .collect();
        let mut details = Self::details(rt, name);
        details["causes"] = Value::Array(causes);
        Self {
            details: Some(details),
            ..Self::new(
                409,
                &format!(
                    "Apply failed with {} conflict{}: {}",
                    lines.len(),
                    if lines.len() == 1 { "" } else { "s" },
                    lines.join("\n")
                ),
            )
        }
    }
    fn invalid(rt: &ResourceType, name: &str, message: &str) -> Self {
        Self {
            details: Some(json!({"name": name, "group": rt.group, "kind": rt.kind})),
            ..Self::new(
                422,
                &format!("{} \"{name}\" is invalid: {message}", rt.kind),
            )
        }
    }
    fn invalid_options(message: &str) -> Self {
        Self::new(
            422,
            &format!("PatchOptions.meta.k8s.io \"\" is invalid: {message}"),
        )
    }
    fn json_patch_failed(message: &str) -> Self {
        Self::new(422, message)
    }
    fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}
