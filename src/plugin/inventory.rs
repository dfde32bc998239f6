//! `kubectl workspaceaccess inventory wsv/NAME [-n NS] [-o table|csv|json]`: a WorkspaceView's
//! inventory with one row per (workspace or notebook, principal, role), what an access review
//! needs. A workspace or notebook without listed principals is one row with empty principal
//! columns.

use super::format::{Table, csv_record};
use super::{Connection, PluginError, kind_named};
use crate::api::WorkspaceView;
use crate::api::workspace_view::WorkspaceViewStatus;
use kube::ResourceExt;
use kube::api::Api;
use serde::{Deserialize, Serialize};

/// One (item, principal, role).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryRow {
    /// Fabric or DataRobot.
    pub provider: String,
    /// Fabric: the workspace's type (Workspace, Personal, ...); DataRobot: Notebook.
    pub item_type: String,
    /// Workspace or notebook ID.
    pub item_id: String,
    /// Workspace display name (DataRobot notebooks have none in the inventory).
    pub item_name: String,
    /// Principal (Fabric) or share recipient (DataRobot) ID; empty when none is listed.
    pub principal_id: String,
    /// Principal type (User, Group, ServicePrincipal, ...) or recipient type (user, group, ...).
    pub principal_type: String,
    /// Display name or user name of the principal.
    pub principal_name: String,
    /// The principal's role.
    pub role: String,
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 8] = [
    "provider",
    "itemType",
    "itemId",
    "itemName",
    "principalId",
    "principalType",
    "principalName",
    "role",
];

/// The rows of an inventory, in its order (items by id, principals by id).
pub fn rows(status: &WorkspaceViewStatus) -> Vec<InventoryRow> {
    let provider = status.provider.clone().unwrap_or_default();
    let mut out = Vec::new();
    for w in &status.workspaces {
        let item = InventoryRow {
            provider: provider.clone(),
            item_type: w.type_.clone().unwrap_or_else(|| "Workspace".into()),
            item_id: w.id.clone(),
            item_name: w.display_name.clone().unwrap_or_default(),
            ..Default::default()
        };
        let assignments = w.role_assignments.as_deref().unwrap_or_default();
        if assignments.is_empty() {
            out.push(item);
            continue;
        }
        for a in assignments {
            out.push(InventoryRow {
                principal_id: a.principal_id.clone(),
                principal_type: a.principal_type.clone().unwrap_or_default(),
                principal_name: a.display_name.clone().unwrap_or_default(),
                role: a.role.clone().unwrap_or_default(),
                ..item.clone()
            });
        }
    }
    for n in &status.notebooks {
        let item = InventoryRow {
            provider: provider.clone(),
            item_type: "Notebook".into(),
            item_id: n.notebook_id.clone(),
            ..Default::default()
        };
        if n.roles.is_empty() {
            out.push(item);
            continue;
        }
        for r in &n.roles {
            out.push(InventoryRow {
                principal_id: r.id.clone(),
                principal_type: r.share_recipient_type.clone().unwrap_or_default(),
                principal_name: r.name.clone().unwrap_or_default(),
                role: r.role.clone().unwrap_or_default(),
                ..item.clone()
            });
        }
    }
    out
}

/// What the rows leave out, for stderr: entries beyond `maxItems`, principals beyond the 100
/// listed per item, workspaces whose role assignments were not read.
pub fn notes(view: &WorkspaceView) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(s) = &view.status else {
        return notes;
    };
    let listed = s.workspaces.len() + s.notebooks.len();
    if s.truncated == Some(true) {
        notes.push(format!(
            "the inventory is truncated: {listed} of {} items listed (spec.maxItems and the \
             status size limit)",
            s.count.unwrap_or_default()
        ));
    }
    for w in &s.workspaces {
        if let Some(total) = w.role_assignment_count {
            notes.push(format!(
                "workspace {}: {} of {total} role assignments listed",
                w.id,
                w.role_assignments.as_ref().map_or(0, Vec::len)
            ));
        }
    }
    let unread = s
        .workspaces
        .iter()
        .filter(|w| w.role_assignments.is_none())
        .count();
    let asked = view
        .spec
        .fabric
        .as_ref()
        .is_some_and(|f| f.include_role_assignments);
    if unread > 0 && asked {
        notes.push(format!(
            "{unread} workspace(s) without role assignments: the view's identity may not read \
             them (that needs Member or higher)"
        ));
    }
    for n in &s.notebooks {
        if let Some(total) = n.role_count {
            notes.push(format!(
                "notebook {}: {} of {total} shared roles listed",
                n.notebook_id,
                n.roles.len()
            ));
        }
    }
    if let Some(c) = s.common.ready().filter(|c| c.status != "True") {
        notes.push(format!(
            "the view is not Ready ({}: {}); this is the last inventory read",
            c.reason, c.message
        ));
    }
    notes
}

/// The rows as a table.
pub fn table(rows: &[InventoryRow]) -> String {
    let mut t = Table::new(&["TYPE", "ID", "NAME", "PRINCIPAL", "PRINCIPAL TYPE", "ROLE"]);
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    for r in rows {
        let principal = if r.principal_name.is_empty() {
            &r.principal_id
        } else {
            &r.principal_name
        };
        t.push(vec![
            r.item_type.clone(),
            r.item_id.clone(),
            dash(&r.item_name),
            dash(principal),
            dash(&r.principal_type),
            dash(&r.role),
        ]);
    }
    t.render()
}

/// The rows as CSV with a header line.
pub fn csv(rows: &[InventoryRow]) -> String {
    let mut out = csv_record(&CSV_HEADER);
    for r in rows {
        out.push_str(&csv_record(&[
            &r.provider,
            &r.item_type,
            &r.item_id,
            &r.item_name,
            &r.principal_id,
            &r.principal_type,
            &r.principal_name,
            &r.role,
        ]));
    }
    out
}

/// `inventory -o json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryList {
    /// The view's namespace.
    pub namespace: String,
    /// The view's name.
    pub name: String,
    /// Fabric or DataRobot.
    pub provider: String,
    /// Items the provider listed (more than the rows' items when truncated).
    pub count: i64,
    /// Whether not every item is in the status.
    pub truncated: bool,
    /// The rows.
    pub items: Vec<InventoryRow>,
}

/// The JSON of a view's rows.
pub fn list(view: &WorkspaceView, rows: Vec<InventoryRow>) -> InventoryList {
    let s = view.status.clone().unwrap_or_default();
    InventoryList {
        namespace: view.namespace().unwrap_or_default(),
        name: view.name_any(),
        provider: s.provider.unwrap_or_default(),
        count: s.count.unwrap_or_default(),
        truncated: s.truncated.unwrap_or_default(),
        items: rows,
    }
}

/// `wsv/NAME` (or just `NAME`) as a WorkspaceView name.
pub fn view_name(target: &str) -> Result<String, PluginError> {
    let (kind, name) = match target.split_once('/') {
        Some((kind, name)) => (kind_named(kind)?, name),
        None => (kind_named("wsv")?, target),
    };
    if kind.kind != "WorkspaceView" {
        return Err(PluginError::Usage(format!(
            "{target:?}: inventory shows WorkspaceViews (wsv/NAME); a {} has none",
            kind.kind
        )));
    }
    if !crate::api::names::is_dns_subdomain(name) {
        return Err(PluginError::Usage(format!(
            "{target:?}: {name:?} is not a resource name"
        )));
    }
    Ok(name.to_owned())
}

/// Reads the view; one that was never synced has no inventory and is an error.
pub async fn get(
    conn: &Connection,
    namespace: &str,
    name: &str,
) -> Result<WorkspaceView, PluginError> {
    let kind = kind_named("wsv")?;
    let api: Api<WorkspaceView> = Api::namespaced(conn.client.clone(), namespace);
    let view = api
        .get(name)
        .await
        .map_err(|e| conn.error(e, kind, Some(name), namespace))?;
    let has_inventory = view.status.as_ref().is_some_and(|s| s.count.is_some());
    if !has_inventory {
        let why = view
            .status
            .as_ref()
            .and_then(|s| s.common.ready())
            .map_or_else(
                || "the operator has not reconciled it yet".to_owned(),
                |c| format!("Ready={} {}: {}", c.status, c.reason, c.message),
            );
        return Err(PluginError::Api(format!(
            "wsv/{name} in namespace {namespace:?} has no inventory yet ({why})"
        )));
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn fabric_view() -> WorkspaceView {
        serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
            "metadata": {"name": "fabric-all", "namespace": "platform"},
            "spec": {"maxItems": 2, "fabric": {"includeRoleAssignments": true, "azure": {
                "tenantId": "t", "clientId": "c", "clientSecretRef": {"name": "sp", "key": "k"}}}},
            "status": {"provider": "Fabric", "count": 3, "truncated": true,
                "workspaces": [
                    {"id": "0a", "displayName": "Finance, EMEA", "type": "Workspace",
                     "roleAssignments": [
                        {"principalId": "p1", "principalType": "User", "displayName": "Ann \"A\" Lee", "role": "Admin"},
                        {"principalId": "p2", "principalType": "Group", "displayName": "=cmd|' /C calc'!A0", "role": "Viewer"}],
                     "roleAssignmentCount": 140},
                    {"id": "0b", "displayName": "Sales\nteam", "type": "Personal"}],
                "conditions": [{"type": "Ready", "status": "True", "reason": "Synced", "message": "3",
                                "lastTransitionTime": "2026-11-23T09:00:00Z"}]}
        }))
        .unwrap()
    }

    pub(crate) fn datarobot_view() -> WorkspaceView {
        serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
            "metadata": {"name": "dr", "namespace": "platform"},
            "spec": {"dataRobot": {"notebookIds": ["nb1", "nb2"], "apiTokenRef": {"name": "dr", "key": "k"}}},
            "status": {"provider": "DataRobot", "count": 2,
                "notebooks": [
                    {"notebookId": "nb1", "roles": [
                        {"id": "u1", "name": "alice@example.com", "role": "OWNER", "shareRecipientType": "user"},
                        {"id": "g1", "name": "data-team", "role": "EDITOR", "shareRecipientType": "group"}]},
                    {"notebookId": "nb2", "roles": []}],
                "conditions": [{"type": "Ready", "status": "False", "reason": "Throttled", "message": "429",
                                "lastTransitionTime": "2026-11-23T09:00:00Z"}]}
        }))
        .unwrap()
    }

    #[test]
    fn one_row_per_item_principal_and_role() {
        let r = rows(fabric_view().status.as_ref().unwrap());
        assert_eq!(r.len(), 3);
        assert_eq!(
            (
                r[0].item_id.as_str(),
                r[0].principal_id.as_str(),
                r[0].role.as_str()
            ),
            ("0a", "p1", "Admin")
        );
        assert_eq!(r[2].item_id, "0b");
        assert_eq!(
            r[2].principal_id, "",
            "a workspace without principals is one row"
        );
        assert_eq!(
            table(&r),
            "\
TYPE        ID   NAME            PRINCIPAL            PRINCIPAL TYPE   ROLE
Workspace   0a   Finance, EMEA   Ann \"A\" Lee          User             Admin
Workspace   0a   Finance, EMEA   =cmd|' /C calc'!A0   Group            Viewer
Personal    0b   Sales?team      -                    -                -
"
        );
        let r = rows(datarobot_view().status.as_ref().unwrap());
        assert_eq!(
            table(&r),
            "\
TYPE       ID    NAME   PRINCIPAL           PRINCIPAL TYPE   ROLE
Notebook   nb1   -      alice@example.com   user             OWNER
Notebook   nb1   -      data-team           group            EDITOR
Notebook   nb2   -      -                   -                -
"
        );
    }

    /// The CSV read back by an independent RFC 4180 reader gives the rows, field by field; a
    /// cell that would be a formula comes back with its leading quote.
    #[test]
    fn csv_parses_back_into_the_rows() {
        for view in [fabric_view(), datarobot_view()] {
            let rows = rows(view.status.as_ref().unwrap());
            let text = csv(&rows);
            let mut reader = ::csv::Reader::from_reader(text.as_bytes());
            let header: Vec<String> = reader
                .headers()
                .unwrap()
                .iter()
                .map(str::to_owned)
                .collect();
            assert_eq!(header, CSV_HEADER);
            let back: Vec<InventoryRow> = reader
                .records()
                .map(|r| {
                    let r = r.unwrap();
                    let f = |i: usize| r.get(i).unwrap().to_owned();
                    InventoryRow {
                        provider: f(0),
                        item_type: f(1),
                        item_id: f(2),
                        item_name: f(3),
                        principal_id: f(4),
                        principal_type: f(5),
                        principal_name: f(6),
                        role: f(7),
                    }
                })
                .collect();
            let expected: Vec<InventoryRow> = rows
                .iter()
                .map(|r| InventoryRow {
                    principal_name: if r.principal_name.starts_with('=') {
                        format!("'{}", r.principal_name)
                    } else {
                        r.principal_name.clone()
                    },
                    ..r.clone()
                })
                .collect();
            assert_eq!(back, expected, "{text}");
        }
        let text = csv(&rows(fabric_view().status.as_ref().unwrap()));
        assert!(text.contains("\"Finance, EMEA\""), "{text}");
        assert!(text.contains("\"Ann \"\"A\"\" Lee\""), "{text}");
        assert!(text.contains("\"Sales\nteam\""), "{text}");
    }

    #[test]
    fn json_carries_the_view_and_its_rows() {
        let view = fabric_view();
        let list = list(&view, rows(view.status.as_ref().unwrap()));
        let v = serde_json::to_value(&list).unwrap();
        assert_eq!(v["namespace"], "platform");
        assert_eq!(v["name"], "fabric-all");
        assert_eq!(v["provider"], "Fabric");
        assert_eq!(v["count"], 3);
        assert_eq!(v["truncated"], true);
        assert_eq!(v["items"][0]["principalName"], "Ann \"A\" Lee");
        assert_eq!(v["items"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn notes_say_what_the_rows_leave_out() {
        let notes = notes(&fabric_view()).join("\n");
        assert!(notes.contains("truncated: 2 of 3 items"), "{notes}");
        assert!(
            notes.contains("workspace 0a: 2 of 140 role assignments"),
            "{notes}"
        );
        assert!(
            notes.contains("1 workspace(s) without role assignments"),
            "{notes}"
        );
        let notes = super::notes(&datarobot_view()).join("\n");
        assert!(notes.contains("not Ready (Throttled: 429)"), "{notes}");
    }

    #[test]
    fn view_names() {
        assert_eq!(view_name("wsv/fabric-all").unwrap(), "fabric-all");
        assert_eq!(view_name("workspaceview/fabric-all").unwrap(), "fabric-all");
        assert_eq!(view_name("fabric-all").unwrap(), "fabric-all");
        let err = view_name("ntr/ml").unwrap_err().to_string();
        assert!(err.contains("inventory shows WorkspaceViews"), "{err}");
        assert!(view_name("wsv/A_B").is_err());
    }
}
