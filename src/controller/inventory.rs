//! WorkspaceView inventories as status: provider answers turned into status entries, sorted by
//! id, de-duplicated, cut at `maxItems` and at a size budget, long strings clipped. Pure
//! functions; the reconciler (`workspace_view.rs`) does the I/O.
//!
//! The API server refuses objects over about 1.5 MB (etcd's limit; the status subresource
//! shares it). The status is kept well under it:
//! - strings are clipped by their JSON size: IDs to [`MAX_ID_BYTES`], names and descriptions
//!   to [`MAX_NAME_BYTES`], types and roles to [`MAX_LABEL_BYTES`]; a clipped string ends in
//!   "…";
//! - each entry lists at most [`MAX_ROLES_PER_ENTRY`] role assignments / shared roles (sorted
//!   by principal id) and then carries the true total;
//! - entries are listed, in id order, while their JSON fits [`inventory_budget`]
//!   ([`INVENTORY_BUDGET_BYTES`] less twice the spec's size); the rest is left out like
//!   entries beyond `maxItems`, with `truncated: true`, the true `count`, and a Ready message
//!   saying why;
//! - the history of access changes (`recentChanges`, [`diff`]) has a budget of its own,
//!   [`diff::HISTORY_BUDGET_BYTES`]: both together, with the conditions, stay under 1 MiB.
//!
//! The filters `spec.fabric.principalTypes` and `spec.dataRobot.recipientTypes` are applied
//! here too ([`keep_principal_types`], [`keep_recipient_types`]), before the role lists are
//! bounded, so the bound and the totals count only what is kept.

pub mod diff;

use crate::api::workspace_view::{
    DataRobotRecipientType, FabricPrincipalType, FabricRoleAssignment, FabricWorkspace,
    MAX_ROLES_PER_ENTRY, NotebookRoles, NotebookSharedRole, WorkspaceViewStatus,
};
use crate::providers::datarobot::{NotebookAcl, SharedRole};
use crate::providers::fabric::{RoleAssignment, RoleAssignments, Workspace};
use serde::Serialize;

/// Largest JSON size of an ID.
pub const MAX_ID_BYTES: usize = 128;
/// Largest JSON size of a display name, recipient name or description.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest JSON size of a type, role or recipient type.
pub const MAX_LABEL_BYTES: usize = 64;
/// Largest JSON size of the listed entries plus twice the spec. With the history's budget
/// ([`diff::HISTORY_BUDGET_BYTES`]) and the conditions the whole status stays under 1 MiB, and
/// the whole object (metadata, the spec and kubectl's copy of it) well under the API server's
/// limit of about 1.5 MiB.
pub const INVENTORY_BUDGET_BYTES: usize = 850_000;

/// The size budget of the listed entries of a resource whose spec takes `spec_bytes` as JSON:
/// the spec counts twice because `kubectl apply` keeps a copy of it in an annotation.
pub fn inventory_budget(spec_bytes: usize) -> usize {
    INVENTORY_BUDGET_BYTES.saturating_sub(spec_bytes.saturating_mul(2))
}

/// Provider names in `status.provider`.
pub const FABRIC: &str = "Fabric";
/// Provider names in `status.provider`.
pub const DATAROBOT: &str = "DataRobot";

/// `text` shortened so that its JSON string form (without the quotes) takes at most `max`
/// bytes; a shortened text ends in "…". Control characters (which JSON would escape into up to
/// six bytes, and which don't belong in a one-line listing) become spaces.
pub fn clip_json(text: &str, max: usize) -> String {
    const MARK: char = '…';
    let room = max.saturating_sub(MARK.len_utf8());
    let mut used = 0;
    // Length of the longest prefix of `out` that leaves room for the mark.
    let mut cut = 0;
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        used += match c {
            '"' | '\\' => 2,
            c => c.len_utf8(),
        };
        if used > max {
            out.truncate(cut);
            out.push(MARK);
            return out;
        }
        out.push(c);
        if used <= room {
            cut = out.len();
        }
    }
    out
}

fn clip_opt(text: Option<String>, max: usize) -> Option<String> {
    text.map(|t| clip_json(&t, max))
}

/// Sorts by `id`, drops repeated ids (keeping the first the provider gave), and keeps the first
/// `max_items`. Returns them and how many distinct entries there were.
pub fn first_by_id<T>(
    mut items: Vec<T>,
    id: impl Fn(&T) -> &str,
    max_items: usize,
) -> (Vec<T>, usize) {
    items.sort_by(|a, b| id(a).cmp(id(b)));
    items.dedup_by(|later, earlier| id(later) == id(earlier));
    let count = items.len();
    items.truncate(max_items);
    (items, count)
}

/// The longest prefix of `entries` whose JSON fits `budget` bytes; and whether that cut any.
pub fn fit<T: Serialize>(mut entries: Vec<T>, budget: usize) -> (Vec<T>, bool) {
    let mut used = 2; // the list's brackets
    let mut keep = entries.len();
    for (i, e) in entries.iter().enumerate() {
        used += serde_json::to_vec(e)
            .map(|v| v.len())
            .unwrap_or(usize::MAX / 2)
            + 1;
        if used > budget {
            keep = i;
            break;
        }
    }
    let cut = keep < entries.len();
    entries.truncate(keep);
    (entries, cut)
}

/// Sorts `items` by `key` and keeps [`MAX_ROLES_PER_ENTRY`]; returns them and the total if
/// more were dropped.
fn bounded_roles<T>(mut items: Vec<T>, key: impl Fn(&T) -> (&str, &str)) -> (Vec<T>, Option<i64>) {
    items.sort_by(|a, b| key(a).cmp(&key(b)));
    let total = items.len();
    items.truncate(MAX_ROLES_PER_ENTRY);
    let total = (total > MAX_ROLES_PER_ENTRY).then(|| i64::try_from(total).unwrap_or(i64::MAX));
    (items, total)
}

/// The role assignments of principals of these types only (`spec.fabric.principalTypes`;
/// `None`: all). Types compare without regard to case; an assignment without a type is left
/// out by a filter.
pub fn keep_principal_types(
    assignments: Vec<RoleAssignments>,
    types: Option<&[FabricPrincipalType]>,
) -> Vec<RoleAssignments> {
    let Some(types) = types else {
        return assignments;
    };
    let wanted = |t: &Option<String>| {
        t.as_deref()
            .is_some_and(|t| types.iter().any(|w| w.as_str().eq_ignore_ascii_case(t)))
    };
    assignments
        .into_iter()
        .map(|a| match a {
            RoleAssignments::Listed(list) => RoleAssignments::Listed(
                list.into_iter()
                    .filter(|a| wanted(&a.principal.type_))
                    .collect(),
            ),
            other => other,
        })
        .collect()
}

/// The shared roles of recipients of these types only (`spec.dataRobot.recipientTypes`;
/// `None`: all). Types compare without regard to case; a role without a type is left out by a
/// filter.
pub fn keep_recipient_types(
    mut notebooks: Vec<NotebookAcl>,
    types: Option<&[DataRobotRecipientType]>,
) -> Vec<NotebookAcl> {
    let Some(types) = types else {
        return notebooks;
    };
    for n in &mut notebooks {
        n.roles.retain(|r| {
            r.share_recipient_type
                .as_deref()
                .is_some_and(|t| types.iter().any(|w| w.as_str().eq_ignore_ascii_case(t)))
        });
    }
    notebooks
}

fn fabric_workspace(w: Workspace) -> FabricWorkspace {
    FabricWorkspace {
        id: clip_json(&w.id, MAX_ID_BYTES),
        display_name: clip_opt(w.display_name, MAX_NAME_BYTES),
        description: clip_opt(w.description, MAX_NAME_BYTES),
        type_: clip_opt(w.type_, MAX_LABEL_BYTES),
        capacity_id: clip_opt(w.capacity_id, MAX_ID_BYTES),
        role_assignments: None,
        role_assignment_count: None,
    }
}

fn fabric_role_assignment(a: RoleAssignment) -> FabricRoleAssignment {
    FabricRoleAssignment {
        principal_id: clip_json(&a.principal.id, MAX_ID_BYTES),
        principal_type: clip_opt(a.principal.type_, MAX_LABEL_BYTES),
        display_name: clip_opt(a.principal.display_name, MAX_NAME_BYTES),
        role: clip_opt(a.role, MAX_LABEL_BYTES),
    }
}

fn shared_role(r: SharedRole) -> NotebookSharedRole {
    NotebookSharedRole {
        id: clip_json(&r.id, MAX_ID_BYTES),
        name: clip_opt(r.name, MAX_NAME_BYTES),
        role: clip_opt(r.role, MAX_LABEL_BYTES),
        share_recipient_type: clip_opt(r.share_recipient_type, MAX_LABEL_BYTES),
    }
}

fn notebook(acl: NotebookAcl) -> NotebookRoles {
    let roles = acl.roles.into_iter().map(shared_role).collect();
    let (roles, role_count) = bounded_roles(roles, |r: &NotebookSharedRole| {
        (r.id.as_str(), r.role.as_deref().unwrap_or_default())
    });
    NotebookRoles {
        notebook_id: clip_json(&acl.notebook_id, MAX_ID_BYTES),
        roles,
        role_count,
    }
}

/// An inventory ready for the status, and its Ready message.
#[derive(Clone, Debug, PartialEq)]
pub struct Built {
    /// The inventory part of the status (provider, count, truncated, entries).
    pub status: WorkspaceViewStatus,
    /// The Ready message: stable as long as the inventory is, so an unchanged inventory
    /// changes nothing in the status.
    pub message: String,
}

/// The Fabric status from the selected workspaces (see [`first_by_id`]), the role assignments
/// read for them (in the same order; `None` without includeRoleAssignments), the number of
/// workspaces found, and the size budget of the entries.
pub fn fabric_status(
    selected: Vec<Workspace>,
    assignments: Option<Vec<RoleAssignments>>,
    count: usize,
    max_items: usize,
    budget: usize,
) -> Built {
    let mut entries: Vec<FabricWorkspace> = selected.into_iter().map(fabric_workspace).collect();
    let mut unreadable = 0;
    if let Some(assignments) = assignments {
        for (w, a) in entries.iter_mut().zip(assignments) {
            match a {
                RoleAssignments::Listed(list) => {
                    let list = list.into_iter().map(fabric_role_assignment).collect();
                    let (list, total) = bounded_roles(list, |a: &FabricRoleAssignment| {
                        (
                            a.principal_id.as_str(),
                            a.role.as_deref().unwrap_or_default(),
                        )
                    });
                    w.role_assignments = Some(list);
                    w.role_assignment_count = total;
                }
                RoleAssignments::NotReadable(_) => unreadable += 1,
            }
        }
    }
    let (entries, cut_by_size) = fit(entries, budget);
    let mut message = summary(
        count,
        entries.len(),
        max_items,
        cut_by_size,
        ("workspace", "workspaces"),
    );
    if unreadable > 0 {
        message.push_str(&format!(
            "; role assignments not readable in {unreadable} (the caller needs Member or \
             higher there)"
        ));
    }
    Built {
        status: WorkspaceViewStatus {
            provider: Some(FABRIC.into()),
            count: Some(as_i64(count)),
            truncated: Some(entries.len() < count),
            workspaces: entries,
            ..Default::default()
        },
        message,
    }
}

/// The DataRobot status from the selected notebooks (see [`first_by_id`]), the number of
/// notebooks found, and the size budget of the entries.
pub fn datarobot_status(
    selected: Vec<NotebookAcl>,
    count: usize,
    max_items: usize,
    budget: usize,
) -> Built {
    let entries: Vec<NotebookRoles> = selected.into_iter().map(notebook).collect();
    let (entries, cut_by_size) = fit(entries, budget);
    let message = summary(
        count,
        entries.len(),
        max_items,
        cut_by_size,
        ("notebook", "notebooks"),
    );
    Built {
        status: WorkspaceViewStatus {
            provider: Some(DATAROBOT.into()),
            count: Some(as_i64(count)),
            truncated: Some(entries.len() < count),
            notebooks: entries,
            ..Default::default()
        },
        message,
    }
}

/// Whether two statuses hold the same inventory (provider, count, truncation and entries).
pub fn same_inventory(a: &WorkspaceViewStatus, b: &WorkspaceViewStatus) -> bool {
    a.provider == b.provider
        && a.count == b.count
        && a.truncated == b.truncated
        && a.workspaces == b.workspaces
        && a.notebooks == b.notebooks
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// "3 workspaces", "2500 workspaces, the first 500 by id listed (maxItems)", "... (status
/// size limit)".
fn summary(
    count: usize,
    listed: usize,
    max_items: usize,
    cut_by_size: bool,
    (one, many): (&str, &str),
) -> String {
    let noun = if count == 1 { one } else { many };
    let mut s = format!("{count} {noun}");
    if listed < count {
        let why = if cut_by_size {
            "status size limit".to_owned()
        } else {
            format!("maxItems {max_items}")
        };
        s.push_str(&format!(", the first {listed} by id listed ({why})"));
    }
    s
}

#[cfg(test)]
mod tests;
