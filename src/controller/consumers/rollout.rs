//! Rollout restarts of the workloads that read a token (`spec.rolloutRestartTargets`).
//!
//! When a write changes the data of a Secret that already existed, the write itself marks the
//! Secret with the annotation `workspaceaccess.io/restart-pending: <time>` (in the same
//! server-side apply, so a crash can't lose the restart, and nothing marks a Secret on its
//! first creation, on an operator restart or on a write that changes nothing). [`Rollouts`]
//! then restarts the targets of every resource of a namespace that asked within the window
//! (`--rollout-restart-window`) together, each workload once, by setting its pod template
//! annotation `workspaceaccess.io/restartedAt` (as `kubectl rollout restart` does), and asks
//! for each resource to be reconciled; its next sync records the outcome in
//! `status.lastRolloutRestart` and removes the mark ([`super::settle`]). A mark found with no
//! restart under way (the operator restarted in between) asks for one.

use crate::api::common::{
    FIELD_MANAGER, LastRolloutRestart, RESTARTED_AT_ANNOTATION, RolloutRestartTarget, WorkloadKind,
};
use crate::controller::Clock;
use crate::metrics::Metrics;
use crate::time::rfc3339;
use jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};

/// Default `--rollout-restart-window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(5);
/// How long an outcome waits for its resource to record it before it is dropped (the
/// resource was deleted meanwhile).
const OUTCOME_TTL: Duration = Duration::from_secs(600);

/// A resource with restart targets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    /// Its kind (NotebookTokenRequest, LivyToken).
    pub kind: &'static str,
    /// Its namespace (also the targets').
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
}

/// What a batch of restarts did for one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// What goes into `status.lastRolloutRestart`.
    pub restart: LastRolloutRestart,
    /// Whether a target was missing or could not be patched.
    pub failed: bool,
}

/// Whether a write that gives the Secret the fingerprint `new` changes the data of a Secret
/// that existed (`previous`, the fingerprint it had; `None` when it had none, e.g. written by
/// an earlier version). A first creation is never a change.
pub fn restart_due(existed: bool, previous: Option<&str>, new: &str) -> bool {
    existed && previous != Some(new)
}

/// The restart-pending mark a write puts on the Secret: `now` when the write changes its data
/// and the resource has targets, else the mark it already had (a restart still to be made).
/// Truncated to the second, never rounded up: a restart made right after the write must count
/// as made after the mark.
pub fn pending_mark(
    due: bool,
    has_targets: bool,
    previous: Option<&str>,
    now: Timestamp,
) -> Option<String> {
    if due && has_targets {
        Some(rfc3339(crate::time::whole_second(now)))
    } else {
        previous.map(str::to_owned)
    }
}

/// The workloads of each kind listed in a namespace: name and labels of each, or why the
/// listing failed.
pub type Listed = BTreeMap<WorkloadKind, Result<Vec<(String, BTreeMap<String, String>)>, String>>;

/// A workload as `Kind/name`.
fn describe(kind: WorkloadKind, name: &str) -> String {
    format!("{}/{name}", kind.as_str())
}

/// The workloads a batch restarts for each resource, and the problems resolving them:
/// pure, given the listed workloads (name and labels, per kind; `Err` when listing failed).
pub fn resolve(
    targets: &[RolloutRestartTarget],
    listed: &Listed,
) -> (BTreeSet<(WorkloadKind, String)>, Vec<String>) {
    let mut workloads = BTreeSet::new();
    let mut problems = Vec::new();
    for t in targets {
        match (&t.name, &t.selector) {
            (Some(name), _) => {
                workloads.insert((t.kind, name.clone()));
            }
            (None, Some(selector)) => match listed.get(&t.kind) {
                Some(Ok(items)) => {
                    let matched: Vec<&String> = items
                        .iter()
                        .filter(|(_, labels)| selector.matches(labels))
                        .map(|(name, _)| name)
                        .collect();
                    if matched.is_empty() {
                        problems.push(format!("no {} matches the selector", t.kind.as_str()));
                    }
                    workloads.extend(matched.into_iter().map(|n| (t.kind, n.clone())));
                }
                Some(Err(e)) => problems.push(e.clone()),
                None => problems.push(format!("{}s were not listed", t.kind.as_str())),
            },
            (None, None) => problems.push(format!(
                "a {} target has neither name nor selector",
                t.kind.as_str()
            )),
        }
    }
    (workloads, problems)
}

/// The outcome for one resource, from the results of the batch's patches.
pub fn outcome(
    now: Timestamp,
    workloads: &BTreeSet<(WorkloadKind, String)>,
    problems: &[String],
    patched: &HashMap<(WorkloadKind, String), Result<(), String>>,
) -> Outcome {
    let mut done = Vec::new();
    let mut problems = problems.to_vec();
    for w in workloads {
        match patched.get(w) {
            Some(Ok(())) => done.push(describe(w.0, &w.1)),
            Some(Err(e)) => problems.push(e.clone()),
            None => problems.push(format!("{} was not patched", describe(w.0, &w.1))),
        }
    }
    let mut message = match done.len() {
        0 => "restarted no workload".to_owned(),
        1 => format!("restarted {}", done[0]),
        n => format!("restarted {n} workloads"),
    };
    if !problems.is_empty() {
        message.push_str("; ");
        message.push_str(&problems.join("; "));
    }
    Outcome {
        restart: LastRolloutRestart {
            time: now,
            targets: done,
            message: crate::providers::error::clip(&message, 1000),
        },
        failed: !problems.is_empty(),
    }
}

#[derive(Default)]
struct Batch {
    owners: BTreeMap<Owner, Vec<RolloutRestartTarget>>,
}

#[derive(Default)]
struct State {
    /// Restarts waiting for their window to end, by namespace.
    batches: HashMap<String, Batch>,
    /// Resources whose batch is being carried out.
    running: BTreeSet<Owner>,
    /// What the last batch did, per resource, until its sync records it.
    outcomes: HashMap<Owner, Outcome>,
    /// The time of the last restart each resource recorded: a mark from before it is one
    /// whose removal the cache of Secrets has not shown yet, not a new restart.
    settled: HashMap<Owner, Timestamp>,
    /// The batches' tasks, so that they stop with the controllers.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Carries out rollout restarts in batches per namespace (see the module docs).
pub struct Rollouts {
    client: kube::Client,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    window: Duration,
    state: Mutex<State>,
    done: Mutex<Option<futures::channel::mpsc::UnboundedSender<Owner>>>,
}

impl Rollouts {
    /// Restarts made with `client`, coalesced over `window`.
    pub fn new(
        client: kube::Client,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        window: Duration,
    ) -> Self {
        Self {
            client,
            metrics,
            clock,
            window,
            state: Mutex::new(State::default()),
            done: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the owners of a finished batch are sent (to be reconciled).
    pub fn on_done(&self, sender: futures::channel::mpsc::UnboundedSender<Owner>) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender);
    }

    /// The outcome of a batch for `owner` that was made at or after `pending` (the time the
    /// Secret was marked), if one is waiting to be recorded.
    pub fn outcome_for(&self, owner: &Owner, pending: Timestamp) -> Option<Outcome> {
        self.lock()
            .outcomes
            .get(owner)
            .filter(|o| o.restart.time >= pending)
            .cloned()
    }

    /// The outcome for `owner` is recorded: it is dropped, and marks made up to its time are
    /// settled.
    pub fn recorded(&self, owner: &Owner) {
        let mut state = self.lock();
        if let Some(o) = state.outcomes.remove(owner) {
            state.settled.insert(owner.clone(), o.restart.time);
        }
    }

    /// Whether a mark made at `pending` for `owner` was settled already (its removal not yet
    /// seen by the cache).
    pub fn is_settled(&self, owner: &Owner, pending: Timestamp) -> bool {
        self.lock()
            .settled
            .get(owner)
            .is_some_and(|t| pending <= *t)
    }

    /// Whether `owner` waits in a batch, or its batch is being carried out.
    pub fn is_waiting(&self, owner: &Owner) -> bool {
        let state = self.lock();
        state.running.contains(owner)
            || state
                .batches
                .get(&owner.namespace)
                .is_some_and(|b| b.owners.contains_key(owner))
    }

    /// Asks for `owner`'s targets to be restarted: joins its namespace's batch, or opens one
    /// that runs when the window has passed.
    pub fn request(self: &Arc<Self>, owner: Owner, targets: Vec<RolloutRestartTarget>) {
        let mut state = self.lock();
        state.tasks.retain(|t| !t.is_finished());
        let namespace = owner.namespace.clone();
        let opens = !state.batches.contains_key(&namespace);
        state
            .batches
            .entry(namespace.clone())
            .or_default()
            .owners
            .insert(owner, targets);
        if opens {
            let this = self.clone();
            let window = self.window;
            state.tasks.push(tokio::spawn(async move {
                tokio::time::sleep(window).await;
                this.run_batch(&namespace).await;
            }));
        }
    }

    /// Stops the batches under way (the marks stay on the Secrets for the next leader).
    pub fn stop(&self) {
        let mut state = self.lock();
        for t in state.tasks.drain(..) {
            t.abort();
        }
        state.batches.clear();
        state.running.clear();
    }

    async fn run_batch(&self, namespace: &str) {
        let batch = {
            let mut state = self.lock();
            let Some(batch) = state.batches.remove(namespace) else {
                return;
            };
            state.running.extend(batch.owners.keys().cloned());
            batch
        };
        let kinds: BTreeSet<WorkloadKind> = batch
            .owners
            .values()
            .flatten()
            .filter(|t| t.name.is_none())
            .map(|t| t.kind)
            .collect();
        let mut listed = BTreeMap::new();
        for kind in kinds {
            listed.insert(kind, self.list(namespace, kind).await);
        }
        let resolved: BTreeMap<&Owner, _> = batch
            .owners
            .iter()
            .map(|(o, targets)| (o, resolve(targets, &listed)))
            .collect();
        let all: BTreeSet<(WorkloadKind, String)> = resolved
            .values()
            .flat_map(|(w, _)| w.iter().cloned())
            .collect();
        let now = self.clock.now();
        let mut patched = HashMap::new();
        for (kind, name) in all {
            let result = self.patch(namespace, kind, &name, now).await;
            patched.insert((kind, name), result);
        }
        let mut finished = Vec::new();
        {
            let mut state = self.lock();
            let stale = crate::time::sub(now, OUTCOME_TTL);
            state.outcomes.retain(|_, o| o.restart.time >= stale);
            state.settled.retain(|_, t| *t >= stale);
            for (owner, (workloads, problems)) in resolved {
                let o = outcome(now, &workloads, &problems, &patched);
                info!(kind = owner.kind, namespace = %owner.namespace, name = %owner.name,
                      targets = ?o.restart.targets, failed = o.failed, message = %o.restart.message,
                      "rollout restart");
                state.outcomes.insert(owner.clone(), o);
                state.running.remove(owner);
                finished.push(owner.clone());
            }
        }
        let sender = self.done.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(sender) = sender {
            for owner in finished {
                let _ = sender.unbounded_send(owner);
            }
        }
    }

    fn api(&self, namespace: &str, kind: WorkloadKind) -> Api<DynamicObject> {
        let resource = ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: kind.as_str().into(),
            plural: kind.plural().into(),
        };
        Api::namespaced_with(self.client.clone(), namespace, &resource)
    }

    /// The names and labels of the workloads of `kind` in `namespace` (metadata only).
    async fn list(
        &self,
        namespace: &str,
        kind: WorkloadKind,
    ) -> Result<Vec<(String, BTreeMap<String, String>)>, String> {
        match self
            .api(namespace, kind)
            .list_metadata(&ListParams::default())
            .await
        {
            Ok(list) => Ok(list
                .items
                .into_iter()
                .map(|m| {
                    (
                        m.metadata.name.unwrap_or_default(),
                        m.metadata.labels.unwrap_or_default(),
                    )
                })
                .collect()),
            Err(e) => {
                warn!(namespace, kind = kind.as_str(), error = %e, "listing workloads failed");
                Err(format!("listing {}s failed: {}", kind.as_str(), short(&e)))
            }
        }
    }

    /// Sets the restartedAt annotation of one workload's pod template (a merge patch of that
    /// one annotation).
    async fn patch(
        &self,
        namespace: &str,
        kind: WorkloadKind,
        name: &str,
        now: Timestamp,
    ) -> Result<(), String> {
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            RESTARTED_AT_ANNOTATION: rfc3339(now)
        }}}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self
            .api(namespace, kind)
            .patch(name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.metrics.write(kind.as_str(), "rollout-restart");
                debug!(namespace, kind = kind.as_str(), name, "workload restarted");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                Err(format!("{} not found", describe(kind, name)))
            }
            Err(kube::Error::Api(e)) if e.code == 403 => Err(format!(
                "{}: the operator may not patch it (RBAC)",
                describe(kind, name)
            )),
            Err(e) => Err(format!("{}: {}", describe(kind, name), short(&e))),
        }
    }
}

fn short(e: &kube::Error) -> String {
    crate::providers::error::clip(&e.to_string().replace('\n', " "), 200)
}

#[cfg(test)]
mod tests;
