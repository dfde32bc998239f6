//! Reconciler of `WorkspaceView`: reads the whole inventory from Microsoft Fabric or DataRobot
//! every `refreshInterval` and returns it as the desired status (built in `inventory.rs`).
//!
//! - The driver writes the status only when something besides `lastSyncTime`/`nextSyncTime`
//!   changed, so a stable inventory causes no write and no watch event.
//! - `lastSyncTime` is set only when the inventory changed: it tells when the inventory shown
//!   was read. A refresh that finds the same inventory writes nothing, so neither timestamp
//!   moves then; Ready=True says the last refresh confirmed it (Ready=False if it failed).
//! - A failed sync, or one failing midway through paging, returns an error: the driver keeps
//!   the last inventory and sets Ready=False. A partial list is never published.
//! - A reconciliation before the status's `nextSyncTime` (for a Ready status of the current
//!   generation) reads nothing: after a restart, views whose inventory was written recently are
//!   not all re-read at once. Since an unchanged refresh writes nothing, `nextSyncTime` can be
//!   in the past, and then the view is read at once. A view naming a ClusterCredential is still
//!   checked against it then, so that a namespace that lost access is told at once.
//! - Each sync that read an inventory compares it with the one in the status
//!   (`inventory::diff`): the changes go first into `recentChanges`, and, once the status is
//!   recorded, into one `AccessChanged` event and the counter
//!   `workspace_access_inventory_changes_total`. An unchanged inventory reports nothing; a
//!   failed sync compares nothing (the last inventory stays, and the next good sync is
//!   compared with it).
//! - A renew request (the `workspaceaccess.io/renew-requested-at` annotation with a value not
//!   handled yet) reads the inventory at once.

use crate::api::WorkspaceView;
use crate::api::cluster_credential::CredentialUser;
use crate::api::workspace_view::{
    AccessChange, DataRobotRecipientType, FabricRole, FabricSource, InventorySource,
    MAX_HISTORY_LIMIT, NotebookSelection, NotebookSelector, WorkspaceViewStatus,
};
use crate::controller::clients::{DataRobotInventory, FabricInventory};
use crate::controller::driver::{Notice, renew_request};
use crate::controller::error::Error;
use crate::controller::inventory::diff::{self, Counts};
use crate::controller::inventory::{
    Built, datarobot_status, fabric_status, first_by_id, inventory_budget, keep_principal_types,
    keep_recipient_types, same_inventory,
};
use crate::controller::status::Checkpoint;
use crate::controller::{Context, Preview, Reconciler, Synced, validate};
use crate::providers::datarobot::NotebookQuery;
use crate::providers::error::{ProviderError, ProviderErrorKind};
use crate::time::{add, whole_second};
use async_trait::async_trait;
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;
/// Default `spec.refreshInterval`.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// The current status, unchanged, when it is Ready for the current generation and its
/// `nextSyncTime` hasn't come yet (e.g. right after a restart of the operator).
fn not_due(obj: &WorkspaceView, now: jiff::Timestamp) -> Option<Synced<WorkspaceViewStatus>> {
    let status = obj.status.as_ref()?;
    let common = &status.common;
    let ready = common.ready()?;
    let next = common.next_sync_time?;
    let current = common.observed_generation.is_some()
        && common.observed_generation == obj.metadata.generation
        && ready.status == "True"
        && ready.observed_generation == obj.metadata.generation;
    (current && now < next).then(|| Synced {
        status: status.clone(),
        message: ready.message.clone(),
        next_sync: next,
        last_sync: None,
        event: None,
        notices: Vec::new(),
    })
}

/// Reason of the event that reports access changes.
pub const ACCESS_CHANGED: &str = "AccessChanged";

/// The status to write for a new inventory: `built`, its source digest, and the history with
/// the changes since the inventory in `obj`'s status (none when that is of another provider
/// or source, or absent: then the new inventory is the baseline). Returns the changes too.
pub fn with_history(
    obj: &WorkspaceView,
    built: WorkspaceViewStatus,
    now: jiff::Timestamp,
) -> (WorkspaceViewStatus, Vec<AccessChange>) {
    let digest = diff::source_digest(&obj.spec);
    let previous = obj.status.as_ref();
    let changes = match previous {
        Some(p) if p.source_digest.as_deref() == Some(digest.as_str()) => {
            diff::diff(p, &built, whole_second(now))
        }
        _ => Vec::new(),
    };
    // Validated to be in 0..=MAX_HISTORY_LIMIT.
    let limit = usize::try_from(obj.spec.history_limit).unwrap_or(0);
    let history = diff::record(
        changes.clone(),
        previous.map_or(&[][..], |p| &p.recent_changes),
        limit,
    );
    let status = WorkspaceViewStatus {
        recent_changes: history,
        source_digest: Some(digest),
        ..built
    };
    (status, changes)
}

/// The `AccessChanged` event for `changes` and the counter increase that goes with it.
fn access_changed(obj: &WorkspaceView, provider: &str, changes: &[AccessChange]) -> Notice {
    let counts = Counts::of(changes).by_label();
    let (namespace, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    Notice {
        reason: ACCESS_CHANGED,
        note: diff::summary(changes, provider),
        count: Some(Arc::new(move |metrics| {
            metrics.inventory_changes(&namespace, &name, &counts)
        })),
        warning: false,
    }
}

/// A validated view: the client to read the inventory with.
pub enum Plan {
    /// Fabric workspaces.
    Fabric {
        /// The spec's Fabric part.
        source: FabricSource,
        /// Fabric, with the view's credentials.
        client: Arc<dyn FabricInventory>,
    },
    /// DataRobot notebooks' roles.
    DataRobot {
        /// Explicit IDs or a selector.
        selection: NotebookSelection,
        /// Only recipients of these types (`None`: all).
        recipient_types: Option<Vec<DataRobotRecipientType>>,
        /// DataRobot, with the view's API key.
        client: Arc<dyn DataRobotInventory>,
    },
}

/// Everything checked before calling the provider: the spec here, the endpoint and the
/// credentials by the client factory.
pub async fn validate(obj: &WorkspaceView, ctx: &Context) -> Result<Plan, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let spec = &obj.spec;
    validate::positive("spec.refreshInterval", spec.refresh_interval.as_ref())?;
    if !(1..=crate::api::workspace_view::MAX_MAX_ITEMS).contains(&spec.max_items) {
        return Err(Error::InvalidSpec(format!(
            "spec.maxItems must be between 1 and {}, got {}",
            crate::api::workspace_view::MAX_MAX_ITEMS,
            spec.max_items
        )));
    }
    if !(0..=MAX_HISTORY_LIMIT).contains(&spec.history_limit) {
        return Err(Error::InvalidSpec(format!(
            "spec.historyLimit must be between 0 and {MAX_HISTORY_LIMIT}, got {}",
            spec.history_limit
        )));
    }
    match spec.source().map_err(Error::InvalidSpec)? {
        InventorySource::Fabric(source) => {
            if source.roles.as_ref().is_some_and(Vec::is_empty) {
                return Err(Error::InvalidSpec(
                    "spec.fabric.roles is empty; list at least one role, or leave roles out for \
                     all workspaces"
                        .into(),
                ));
            }
            source.credentials().map_err(Error::InvalidSpec)?;
            check_principal_types(&source)?;
            let client = ctx.clients.fabric_inventory(&ns, &source).await?;
            Ok(Plan::Fabric { source, client })
        }
        InventorySource::DataRobot(source) => {
            let selection = source.selection().map_err(Error::InvalidSpec)?;
            check_selection(&selection)?;
            source.credentials().map_err(Error::InvalidSpec)?;
            if source.recipient_types.as_ref().is_some_and(Vec::is_empty) {
                return Err(Error::InvalidSpec(
                    "spec.dataRobot.recipientTypes is empty; list at least one type, or leave \
                     recipientTypes out for all recipients"
                        .into(),
                ));
            }
            let client = ctx.clients.datarobot_inventory(&ns, &source).await?;
            Ok(Plan::DataRobot {
                recipient_types: source.recipient_types.clone(),
                selection,
                client,
            })
        }
    }
}

/// `spec.fabric.principalTypes`: not empty, and only with the role assignments it filters.
fn check_principal_types(source: &FabricSource) -> Result<(), Error> {
    match &source.principal_types {
        Some(types) if types.is_empty() => Err(Error::InvalidSpec(
            "spec.fabric.principalTypes is empty; list at least one type, or leave \
             principalTypes out for all principals"
                .into(),
        )),
        Some(_) if !source.include_role_assignments => Err(Error::InvalidSpec(
            "spec.fabric.principalTypes filters role assignments: set \
             spec.fabric.includeRoleAssignments: true"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// The notebook IDs or the selector, as the CRD schema checks them: IDs become path segments
/// and query values.
fn check_selection(selection: &NotebookSelection) -> Result<(), Error> {
    use crate::api::names::is_datarobot_id;
    use crate::api::workspace_view::MAX_NOTEBOOK_IDS;
    const ID: &str = "a DataRobot ID (1-64 letters, digits, '_' and '-')";
    let count = |field: &str, n: usize, max: usize| {
        if n > max {
            Err(Error::InvalidSpec(format!(
                "{field} has {n} entries, at most {max} are allowed"
            )))
        } else {
            Ok(())
        }
    };
    match selection {
        NotebookSelection::Ids(ids) => {
            if ids.is_empty() {
                return Err(Error::InvalidSpec(
                    "spec.dataRobot.notebookIds is empty; list at least one notebook".into(),
                ));
            }
            count("spec.dataRobot.notebookIds", ids.len(), MAX_NOTEBOOK_IDS).map_err(|e| {
                Error::InvalidSpec(format!("{}; use a selector for more", e.message()))
            })?;
            for (i, id) in ids.iter().enumerate() {
                validate::name(
                    &format!("spec.dataRobot.notebookIds[{i}]"),
                    id,
                    is_datarobot_id,
                    ID,
                )?;
            }
        }
        NotebookSelection::Selector(s) => {
            if let Some(id) = &s.use_case_id {
                validate::name("spec.dataRobot.selector.useCaseId", id, is_datarobot_id, ID)?;
            }
            let owners = s.owners.as_deref().unwrap_or_default();
            count("spec.dataRobot.selector.owners", owners.len(), 100)?;
            for (i, id) in owners.iter().enumerate() {
                validate::name(
                    &format!("spec.dataRobot.selector.owners[{i}]"),
                    id,
                    is_datarobot_id,
                    ID,
                )?;
            }
            let tags = s.tags.as_deref().unwrap_or_default();
            count("spec.dataRobot.selector.tags", tags.len(), 100)?;
            for (i, tag) in tags.iter().enumerate() {
                if tag.is_empty() || tag.chars().count() > 256 {
                    return Err(Error::InvalidSpec(format!(
                        "spec.dataRobot.selector.tags[{i}] must have 1 to 256 characters"
                    )));
                }
            }
            if s.query
                .as_ref()
                .is_some_and(|q| q.is_empty() || q.chars().count() > 1024)
            {
                return Err(Error::InvalidSpec(
                    "spec.dataRobot.selector.query must have 1 to 1024 characters".into(),
                ));
            }
        }
    }
    Ok(())
}

fn role_name(role: FabricRole) -> &'static str {
    match role {
        FabricRole::Admin => "Admin",
        FabricRole::Member => "Member",
        FabricRole::Contributor => "Contributor",
        FabricRole::Viewer => "Viewer",
    }
}

fn notebook_query(s: NotebookSelector) -> NotebookQuery {
    NotebookQuery {
        use_case_id: s.use_case_id,
        owners: s.owners.unwrap_or_default(),
        tags: s.tags.unwrap_or_default(),
        query: s.query,
    }
}

/// Reads the whole inventory and builds its status. Any provider failure, including one
/// midway through paging, is an error.
pub async fn read_inventory(obj: &WorkspaceView, ctx: &Context) -> Result<Built, Error> {
    let plan = validate(obj, ctx).await?;
    // Validated to be in 1..=MAX_MAX_ITEMS.
    let max_items = usize::try_from(obj.spec.max_items).unwrap_or(1);
    let budget = inventory_budget(serde_json::to_vec(&obj.spec).map_or(0, |v| v.len()));
    match plan {
        Plan::Fabric { source, client } => {
            let roles: Vec<&str> = source
                .roles
                .iter()
                .flatten()
                .map(|r| role_name(*r))
                .collect();
            let all = client.list_workspaces(&roles).await?;
            let (selected, count) = first_by_id(all, |w| &w.id, max_items);
            let assignments = if source.include_role_assignments {
                let ids: Vec<String> = selected.iter().map(|w| w.id.clone()).collect();
                let all = client.role_assignments_of(&ids).await?;
                Some(keep_principal_types(all, source.principal_types.as_deref()))
            } else {
                None
            };
            Ok(fabric_status(
                selected,
                assignments,
                count,
                max_items,
                budget,
            ))
        }
        Plan::DataRobot {
            selection,
            recipient_types,
            client,
        } => {
            let (notebooks, count) = match selection {
                NotebookSelection::Ids(ids) => {
                    // Every ID named is checked, so count is exact and a wrong ID is visible.
                    let found = client.shared_roles(&ids).await?;
                    if !found.missing.is_empty() {
                        return Err(unknown_notebooks(&found.missing));
                    }
                    first_by_id(found.notebooks, |n| &n.notebook_id, max_items)
                }
                NotebookSelection::Selector(selector) => {
                    let ids = client.discover(&notebook_query(selector)).await?;
                    // Roles are read only for the notebooks that can be listed; one deleted
                    // since discovery is left out and not counted.
                    let (first, discovered) = first_by_id(ids, |id| id, max_items);
                    let found = client.shared_roles(&first).await?;
                    (found.notebooks, discovered - found.missing.len())
                }
            };
            let notebooks = keep_recipient_types(notebooks, recipient_types.as_deref());
            Ok(datarobot_status(notebooks, count, max_items, budget))
        }
    }
}

fn unknown_notebooks(missing: &[String]) -> Error {
    const SHOWN: usize = 10;
    let mut list = missing
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if missing.len() > SHOWN {
        list.push_str(&format!(" and {} more", missing.len() - SHOWN));
    }
    Error::Provider(ProviderError::new(
        ProviderErrorKind::NotFound,
        format!("DataRobot does not know these notebooks of spec.dataRobot.notebookIds: {list}"),
    ))
}

#[async_trait]
impl Reconciler for WorkspaceView {
    async fn sync(
        obj: Arc<Self>,
        ctx: Arc<Context>,
        _checkpoint: &mut Checkpoint<Self>,
    ) -> Result<Synced<WorkspaceViewStatus>, Error> {
        // A renew request (workspaceaccess.io/renew-requested-at) reads the inventory now.
        if renew_request(obj.as_ref()).is_none()
            && let Some(not_due) = not_due(&obj, ctx.now())
        {
            // A view using a ClusterCredential is checked against it even when not due (no
            // provider call): a namespace that lost access says so at once.
            if obj.credential_ref().is_some() {
                validate(&obj, &ctx).await?;
            }
            return Ok(not_due);
        }
        let built = read_inventory(&obj, &ctx).await?;
        let now = ctx.now();
        let changed = obj
            .status
            .as_ref()
            .is_none_or(|current| !same_inventory(current, &built.status));
        let interval = obj
            .spec
            .refresh_interval
            .as_ref()
            .map_or(DEFAULT_REFRESH_INTERVAL, |d| d.get());
        let (status, changes) = with_history(&obj, built.status, now);
        let notices = match status.provider.as_deref() {
            Some(provider) if !changes.is_empty() => {
                vec![access_changed(&obj, provider, &changes)]
            }
            _ => Vec::new(),
        };
        Ok(Synced {
            status,
            message: built.message,
            next_sync: add(now, interval),
            last_sync: changed.then_some(now),
            event: None,
            notices,
        })
    }

    async fn preview(
        obj: Arc<Self>,
        ctx: Arc<Context>,
    ) -> Result<Preview<WorkspaceViewStatus>, Error> {
        let built = read_inventory(&obj, &ctx).await?;
        let (status, _) = with_history(&obj, built.status, ctx.now());
        Ok(Preview {
            status,
            message: built.message,
            secret_name: None,
            secret_keys: Vec::new(),
        })
    }
}
