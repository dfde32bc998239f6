//! Who gained or lost access: the changes between two WorkspaceView inventories, the history
//! they are kept in (`status.recentChanges`) and the summary the `AccessChanged` event carries.
//! Pure functions on the status types, so that anything reading a WorkspaceView (the reconciler,
//! `preview`, a kubectl plugin) can use them without I/O.
//!
//! What is compared, and what is not:
//! - Changes are keyed by (workspace or notebook, principal). A rename, a new description or a
//!   principal's new display name is no change of access and is not reported.
//! - Only what both inventories saw in full is compared. A truncated inventory (`truncated:
//!   true`: beyond `maxItems` or the size budget) lists the first entries by id, so an id it
//!   doesn't list is known to be absent only if it sorts before the last one it lists; the same
//!   holds for the role lists cut at `MAX_ROLES_PER_ENTRY` (with `roleAssignmentCount` /
//!   `roleCount` set), except that the last principal listed may have lost roles to the cut and
//!   counts as not seen in full. Entries beyond a cut are neither granted, revoked, added nor
//!   removed.
//! - Role assignments that were not read (`roleAssignments` absent: without
//!   `includeRoleAssignments`, or not readable by the caller) are not compared: a workspace whose
//!   assignments become readable doesn't report everyone as granted.
//! - A workspace or notebook that appears or disappears is reported as `Added` / `Removed`
//!   only, not as grants or revocations of its principals: it may merely have entered or left
//!   the view (the caller's own access in Fabric, a selector's match in DataRobot).
//! - Inventories of different providers, or of different `spec.fabric` / `spec.dataRobot`
//!   (see [`source_digest`]), are not compared at all: the newer one is a new baseline.

use crate::api::workspace_view::{
    AccessChange, AccessChangeKind, FabricWorkspace, NotebookRoles, WorkspaceViewSpec,
    WorkspaceViewStatus,
};
use crate::controller::inventory::{DATAROBOT, FABRIC, fit};
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Largest JSON size of `status.recentChanges`. With the inventory's budget
/// ([`super::INVENTORY_BUDGET_BYTES`]) and the rest of the status, the whole status stays under
/// 1 MiB. A typical change (GUIDs, an e-mail address, a workspace name) takes about 320 bytes,
/// so 500 fit; only with names near their clipping limits does the history keep fewer than
/// `historyLimit` (at worst about 150).
pub const HISTORY_BUDGET_BYTES: usize = 170_000;

/// Longest note of an `AccessChanged` event before the "and N more" tail: the counts and as
/// many changes as fit (the driver clips notes at 1000 bytes).
pub const NOTE_BUDGET_BYTES: usize = 800;

/// Digest of the part of the spec that decides what the inventory holds (`spec.fabric` or
/// `spec.dataRobot`: credentials, endpoint, filters, notebook selection). `maxItems` is not part
/// of it: a listing cut at another length is compared within what both listings cover.
pub fn source_digest(spec: &WorkspaceViewSpec) -> String {
    let source = match (&spec.fabric, &spec.data_robot) {
        (Some(f), _) => ("fabric", serde_json::to_vec(f)),
        (None, Some(d)) => ("dataRobot", serde_json::to_vec(d)),
        (None, None) => ("none", Ok(Vec::new())),
    };
    let mut hash = Sha256::new();
    hash.update(source.0.as_bytes());
    hash.update([0]);
    hash.update(source.1.unwrap_or_default());
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Entries of a listing by id, and which ids it shows in full.
struct Listing<'a, T> {
    by_id: BTreeMap<&'a str, T>,
    /// Every entry is listed.
    complete: bool,
    /// The largest id listed.
    last: Option<&'a str>,
}

impl<'a, T> Listing<'a, T> {
    fn new(entries: impl IntoIterator<Item = (&'a str, T)>, complete: bool) -> Self
    where
        T: Merge,
    {
        let mut by_id: BTreeMap<&'a str, T> = BTreeMap::new();
        for (id, entry) in entries {
            match by_id.get_mut(id) {
                Some(existing) => existing.merge(entry),
                None => {
                    by_id.insert(id, entry);
                }
            }
        }
        let last = by_id.keys().next_back().copied();
        Self {
            by_id,
            complete,
            last,
        }
    }

    /// Whether this listing shows everything the provider has under `id`: all of it when
    /// complete, else what sorts before the last id listed (a cut listing is a prefix by id,
    /// and the last entry listed may itself be cut).
    fn covers(&self, id: &str) -> bool {
        self.complete || self.last.is_some_and(|last| id < last)
    }
}

/// Repeated ids (which the inventory doesn't produce, but a hand-edited status might hold)
/// are merged rather than one of them silently winning.
trait Merge {
    fn merge(&mut self, other: Self);
}

/// A principal's roles on one workspace or notebook.
struct Holder<'a> {
    type_: Option<&'a str>,
    name: Option<&'a str>,
    roles: BTreeSet<Option<&'a str>>,
}

impl Merge for Holder<'_> {
    fn merge(&mut self, other: Self) {
        self.roles.extend(other.roles);
        self.type_ = self.type_.or(other.type_);
        self.name = self.name.or(other.name);
    }
}

/// A workspace or notebook.
struct Item<'a> {
    name: Option<&'a str>,
    /// `None` when its principals were not read.
    principals: Option<Listing<'a, Holder<'a>>>,
}

impl Merge for Item<'_> {
    fn merge(&mut self, other: Self) {
        self.name = self.name.or(other.name);
        if self.principals.is_none() {
            self.principals = other.principals;
        }
    }
}

fn holder<'a>(type_: Option<&'a str>, name: Option<&'a str>, role: Option<&'a str>) -> Holder<'a> {
    Holder {
        type_,
        name,
        roles: BTreeSet::from([role]),
    }
}

fn fabric_item(w: &FabricWorkspace) -> (&str, Item<'_>) {
    let principals = w.role_assignments.as_ref().map(|list| {
        Listing::new(
            list.iter().map(|a| {
                (
                    a.principal_id.as_str(),
                    holder(
                        a.principal_type.as_deref(),
                        a.display_name.as_deref(),
                        a.role.as_deref(),
                    ),
                )
            }),
            w.role_assignment_count.is_none(),
        )
    });
    (
        w.id.as_str(),
        Item {
            name: w.display_name.as_deref(),
            principals,
        },
    )
}

fn notebook_item(n: &NotebookRoles) -> (&str, Item<'_>) {
    let principals = Listing::new(
        n.roles.iter().map(|r| {
            (
                r.id.as_str(),
                holder(
                    r.share_recipient_type.as_deref(),
                    r.name.as_deref(),
                    r.role.as_deref(),
                ),
            )
        }),
        n.role_count.is_none(),
    );
    (
        n.notebook_id.as_str(),
        Item {
            name: None,
            principals: Some(principals),
        },
    )
}

/// The items of an inventory; `None` when the status holds no inventory.
fn items(s: &WorkspaceViewStatus) -> Option<Listing<'_, Item<'_>>> {
    let complete = s.truncated == Some(false);
    match s.provider.as_deref()? {
        FABRIC => Some(Listing::new(s.workspaces.iter().map(fabric_item), complete)),
        DATAROBOT => Some(Listing::new(
            s.notebooks.iter().map(notebook_item),
            complete,
        )),
        _ => None,
    }
}

/// The changes from inventory `before` to inventory `after`, found at `time`, ordered by
/// workspace or notebook id, then principal id (a workspace's own Added / Removed first).
/// Empty when the two are of different providers or `before` holds no inventory.
pub fn diff(
    before: &WorkspaceViewStatus,
    after: &WorkspaceViewStatus,
    time: Timestamp,
) -> Vec<AccessChange> {
    let mut out = Vec::new();
    if before.provider != after.provider {
        return out;
    }
    let (Some(a), Some(b)) = (items(before), items(after)) else {
        return out;
    };
    let ids: BTreeSet<&str> = a.by_id.keys().chain(b.by_id.keys()).copied().collect();
    for id in ids {
        let change = |kind, name: Option<&str>| AccessChange {
            time,
            change: kind,
            item_id: id.to_owned(),
            item_name: name.map(str::to_owned),
            principal_id: None,
            principal_type: None,
            principal_name: None,
            old_role: None,
            new_role: None,
        };
        match (a.by_id.get(id), b.by_id.get(id)) {
            (Some(x), None) if b.covers(id) => out.push(change(AccessChangeKind::Removed, x.name)),
            (None, Some(y)) if a.covers(id) => out.push(change(AccessChangeKind::Added, y.name)),
            (Some(x), Some(y)) => {
                if let (Some(pa), Some(pb)) = (&x.principals, &y.principals) {
                    principal_changes(&change(AccessChangeKind::Granted, y.name), pa, pb, &mut out);
                }
            }
            _ => {}
        }
    }
    out
}

/// The principals' changes on one item, each built from `item` (its time, id and name).
fn principal_changes(
    item: &AccessChange,
    a: &Listing<'_, Holder<'_>>,
    b: &Listing<'_, Holder<'_>>,
    out: &mut Vec<AccessChange>,
) {
    let ids: BTreeSet<&str> = a.by_id.keys().chain(b.by_id.keys()).copied().collect();
    for id in ids {
        let change = |kind, h: &Holder<'_>, old: Option<&str>, new: Option<&str>| AccessChange {
            change: kind,
            principal_id: Some(id.to_owned()),
            principal_type: h.type_.map(str::to_owned),
            principal_name: h.name.map(str::to_owned),
            old_role: old.map(str::to_owned),
            new_role: new.map(str::to_owned),
            ..item.clone()
        };
        match (a.by_id.get(id), b.by_id.get(id)) {
            (Some(h), None) if b.covers(id) => {
                for role in &h.roles {
                    out.push(change(AccessChangeKind::Revoked, h, *role, None));
                }
            }
            (None, Some(h)) if a.covers(id) => {
                for role in &h.roles {
                    out.push(change(AccessChangeKind::Granted, h, None, *role));
                }
            }
            (Some(ha), Some(hb)) if a.covers(id) && b.covers(id) => {
                // A principal has one role per workspace or notebook; should it have several,
                // roles lost and roles gained pair up as changes, in order, and the rest are
                // revoked or granted.
                let lost: Vec<Option<&str>> = ha.roles.difference(&hb.roles).copied().collect();
                let gained: Vec<Option<&str>> = hb.roles.difference(&ha.roles).copied().collect();
                for (i, old) in lost.iter().enumerate() {
                    match gained.get(i) {
                        Some(new) => {
                            out.push(change(AccessChangeKind::RoleChanged, hb, *old, *new))
                        }
                        None => out.push(change(AccessChangeKind::Revoked, hb, *old, None)),
                    }
                }
                for new in gained.iter().skip(lost.len()) {
                    out.push(change(AccessChangeKind::Granted, hb, None, *new));
                }
            }
            _ => {}
        }
    }
}

/// The history after a sync: `changes` (this sync's, all of one time) before the `previous`
/// history, at most `limit` entries and at most [`HISTORY_BUDGET_BYTES`] of JSON; the oldest
/// go first.
pub fn record(
    changes: Vec<AccessChange>,
    previous: &[AccessChange],
    limit: usize,
) -> Vec<AccessChange> {
    let kept: Vec<AccessChange> = changes
        .into_iter()
        .chain(previous.iter().cloned())
        .take(limit)
        .collect();
    fit(kept, HISTORY_BUDGET_BYTES).0
}

/// How many changes of each kind, in the order of [`AccessChangeKind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Granted.
    pub granted: u64,
    /// Revoked.
    pub revoked: u64,
    /// RoleChanged.
    pub role_changed: u64,
    /// Added.
    pub added: u64,
    /// Removed.
    pub removed: u64,
}

impl Counts {
    /// The counts of `changes`.
    pub fn of(changes: &[AccessChange]) -> Self {
        let mut c = Self::default();
        for change in changes {
            *match change.change {
                AccessChangeKind::Granted => &mut c.granted,
                AccessChangeKind::Revoked => &mut c.revoked,
                AccessChangeKind::RoleChanged => &mut c.role_changed,
                AccessChangeKind::Added => &mut c.added,
                AccessChangeKind::Removed => &mut c.removed,
            } += 1;
        }
        c
    }

    /// The counts of changes of principals' access, by the metric's `change` label
    /// (`granted`, `revoked`, `role_changed`).
    pub fn by_label(&self) -> [(&'static str, u64); 3] {
        [
            ("granted", self.granted),
            ("revoked", self.revoked),
            ("role_changed", self.role_changed),
        ]
    }
}

/// One change in a few words, e.g. "alice@contoso.com Viewer -> Admin on Finance".
pub fn describe(c: &AccessChange) -> String {
    let item = c.item_name.as_deref().unwrap_or(&c.item_id);
    let who = c
        .principal_name
        .as_deref()
        .or(c.principal_id.as_deref())
        .unwrap_or("?");
    let role = |r: &Option<String>| r.clone().unwrap_or_else(|| "(no role)".into());
    match c.change {
        AccessChangeKind::Granted => format!("{who} granted {} on {item}", role(&c.new_role)),
        AccessChangeKind::Revoked => format!("{who} lost {} on {item}", role(&c.old_role)),
        AccessChangeKind::RoleChanged => format!(
            "{who} {} -> {} on {item}",
            role(&c.old_role),
            role(&c.new_role)
        ),
        AccessChangeKind::Added => format!("{item} added"),
        AccessChangeKind::Removed => format!("{item} removed"),
    }
}

/// The note of the `AccessChanged` event for `changes` (non-empty) in an inventory of
/// `provider`: the counts, e.g. "2 granted, 1 revoked, 1 role changed on 3 workspaces; 1
/// workspace added", then as many changes as fit [`NOTE_BUDGET_BYTES`], then how many more
/// there are (the history has them, up to its limit).
pub fn summary(changes: &[AccessChange], provider: &str) -> String {
    let (one, many) = if provider == DATAROBOT {
        ("notebook", "notebooks")
    } else {
        ("workspace", "workspaces")
    };
    let noun = |n: usize| if n == 1 { one } else { many };
    let c = Counts::of(changes);
    let mut parts = Vec::new();
    for (n, what) in [
        (c.granted, "granted"),
        (c.revoked, "revoked"),
        (c.role_changed, "role changed"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    let mut note = String::new();
    if !parts.is_empty() {
        let items: BTreeSet<&str> = changes
            .iter()
            .filter(|c| c.principal_id.is_some())
            .map(|c| c.item_id.as_str())
            .collect();
        note = format!(
            "{} on {} {}",
            parts.join(", "),
            items.len(),
            noun(items.len())
        );
    }
    let mut whole = Vec::new();
    if c.added > 0 {
        whole.push(format!("{} {} added", c.added, noun(c.added as usize)));
    }
    if c.removed > 0 {
        let n = c.removed as usize;
        whole.push(if c.added > 0 {
            format!("{n} removed")
        } else {
            format!("{n} {} removed", noun(n))
        });
    }
    if !whole.is_empty() {
        if !note.is_empty() {
            note.push_str("; ");
        }
        note.push_str(&whole.join(", "));
    }
    let mut shown = 0;
    for (i, change) in changes.iter().enumerate() {
        let detail = describe(change);
        let sep = if i == 0 { ": " } else { "; " };
        if note.len() + sep.len() + detail.len() > NOTE_BUDGET_BYTES {
            break;
        }
        note.push_str(sep);
        note.push_str(&detail);
        shown += 1;
    }
    if shown < changes.len() {
        note.push_str(&format!(
            "; and {} more (status.recentChanges)",
            changes.len() - shown
        ));
    }
    note
}

#[cfg(test)]
mod tests;
