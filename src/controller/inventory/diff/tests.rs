use super::*;
use crate::api::common::Condition;
use crate::api::workspace_view::{
    FabricRoleAssignment, MAX_MAX_ITEMS, MAX_NOTEBOOK_IDS, MAX_ROLES_PER_ENTRY, WorkspaceView,
};
use crate::controller::inventory::{
    Built, INVENTORY_BUDGET_BYTES, MAX_ID_BYTES, MAX_LABEL_BYTES, MAX_NAME_BYTES, clip_json,
    datarobot_status, fabric_status, first_by_id, inventory_budget,
};
use crate::providers::datarobot::{NotebookAcl, SharedRole};
use crate::providers::fabric::{Principal, RoleAssignment, RoleAssignments, Workspace};
use AccessChangeKind::*;

fn t1() -> Timestamp {
    "2026-12-01T10:00:00Z".parse().unwrap()
}

fn ra(principal: &str, role: &str) -> FabricRoleAssignment {
    FabricRoleAssignment {
        principal_id: principal.into(),
        principal_type: Some("User".into()),
        display_name: Some(format!("{principal}@contoso.com")),
        role: Some(role.into()),
    }
}

fn ws(id: &str, name: &str, roles: Option<Vec<FabricRoleAssignment>>) -> FabricWorkspace {
    FabricWorkspace {
        id: id.into(),
        display_name: Some(name.into()),
        role_assignments: roles,
        ..Default::default()
    }
}

fn fabric(workspaces: Vec<FabricWorkspace>) -> WorkspaceViewStatus {
    WorkspaceViewStatus {
        provider: Some(FABRIC.into()),
        count: Some(workspaces.len() as i64),
        truncated: Some(false),
        workspaces,
        ..Default::default()
    }
}

/// (change, item, principal, old role, new role) of each change, for compact assertions.
fn brief(changes: &[AccessChange]) -> Vec<(AccessChangeKind, &str, &str, &str, &str)> {
    changes
        .iter()
        .map(|c| {
            (
                c.change,
                c.item_id.as_str(),
                c.principal_id.as_deref().unwrap_or("-"),
                c.old_role.as_deref().unwrap_or("-"),
                c.new_role.as_deref().unwrap_or("-"),
            )
        })
        .collect()
}

fn before() -> WorkspaceViewStatus {
    fabric(vec![
        ws(
            "w1",
            "Finance",
            Some(vec![ra("alice", "Viewer"), ra("bob", "Member")]),
        ),
        ws("w2", "Sales", Some(vec![ra("carol", "Admin")])),
        ws("w3", "Old", Some(vec![ra("dave", "Admin")])),
    ])
}

fn after() -> WorkspaceViewStatus {
    fabric(vec![
        ws(
            "w1",
            "Finance",
            Some(vec![ra("alice", "Admin"), ra("erin", "Contributor")]),
        ),
        ws("w2", "Sales", Some(vec![ra("carol", "Admin")])),
        ws("w4", "New", Some(vec![ra("frank", "Admin")])),
    ])
}

#[test]
fn every_kind_of_change_is_found() {
    let changes = diff(&before(), &after(), t1());
    assert_eq!(
        brief(&changes),
        [
            (RoleChanged, "w1", "alice", "Viewer", "Admin"),
            (Revoked, "w1", "bob", "Member", "-"),
            (Granted, "w1", "erin", "-", "Contributor"),
            (Removed, "w3", "-", "-", "-"),
            (Added, "w4", "-", "-", "-"),
        ]
    );
    let alice = &changes[0];
    assert_eq!(alice.time, t1());
    assert_eq!(alice.item_name.as_deref(), Some("Finance"));
    assert_eq!(alice.principal_type.as_deref(), Some("User"));
    assert_eq!(alice.principal_name.as_deref(), Some("alice@contoso.com"));
    assert_eq!(changes[3].item_name.as_deref(), Some("Old"));
    assert_eq!(changes[4].item_name.as_deref(), Some("New"));
    // Added / Removed are about the workspace: its principals are not granted or revoked.
    assert!(
        !changes
            .iter()
            .any(|c| c.item_id == "w4" && c.change == Granted)
    );
    assert!(
        !changes
            .iter()
            .any(|c| c.item_id == "w3" && c.change == Revoked)
    );
    // The way back is the mirror image.
    assert_eq!(
        brief(&diff(&after(), &before(), t1())),
        [
            (RoleChanged, "w1", "alice", "Admin", "Viewer"),
            (Granted, "w1", "bob", "-", "Member"),
            (Revoked, "w1", "erin", "Contributor", "-"),
            (Added, "w3", "-", "-", "-"),
            (Removed, "w4", "-", "-", "-"),
        ]
    );
}

#[test]
fn an_unchanged_inventory_has_no_changes() {
    assert!(diff(&before(), &before(), t1()).is_empty());
    assert!(diff(&after(), &after(), t1()).is_empty());
}

#[test]
fn the_order_of_entries_and_role_assignments_does_not_matter() {
    let expected = diff(&before(), &after(), t1());
    let mut a = before();
    a.workspaces.reverse();
    for w in &mut a.workspaces {
        w.role_assignments.as_mut().unwrap().reverse();
    }
    let mut b = after();
    b.workspaces.rotate_left(1);
    for w in &mut b.workspaces {
        w.role_assignments.as_mut().unwrap().reverse();
    }
    assert_eq!(diff(&a, &b, t1()), expected);
    assert_eq!(diff(&before(), &b, t1()), expected);
    assert_eq!(diff(&a, &after(), t1()), expected);
}

#[test]
fn a_renamed_workspace_or_principal_is_no_change_of_access() {
    let mut renamed = before();
    renamed.workspaces[0].display_name = Some("Finance (EMEA)".into());
    renamed.workspaces[0].description = Some("now with a description".into());
    let alice = &mut renamed.workspaces[0].role_assignments.as_mut().unwrap()[0];
    alice.display_name = Some("Alice Smith".into());
    assert!(diff(&before(), &renamed, t1()).is_empty());
    // A change found later carries the current names.
    let mut then = renamed.clone();
    then.workspaces[0].role_assignments.as_mut().unwrap()[0].role = Some("Admin".into());
    let changes = diff(&renamed, &then, t1());
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].item_name.as_deref(), Some("Finance (EMEA)"));
    assert_eq!(changes[0].principal_name.as_deref(), Some("Alice Smith"));
}

#[test]
fn entries_beyond_a_truncated_listing_are_neither_removed_nor_added() {
    // 5 workspaces, the first 3 by id listed (maxItems 3). Then w0 appears: w3 is pushed out
    // of the listing, and nothing is known about it, w4 or w5.
    let listed = |ids: &[&str], count: i64| WorkspaceViewStatus {
        truncated: Some(true),
        count: Some(count),
        ..fabric(
            ids.iter()
                .map(|id| ws(id, id, Some(vec![ra("p", "Admin")])))
                .collect(),
        )
    };
    let a = listed(&["w1", "w2", "w3"], 5);
    let b = listed(&["w0", "w1", "w2"], 6);
    assert_eq!(brief(&diff(&a, &b, t1())), [(Added, "w0", "-", "-", "-")]);
    // w2 deleted: it sorts before the last listed id, so it is known to be gone; w4, now
    // listed, sorts after what the earlier listing covered and is not "added".
    let c = listed(&["w1", "w3", "w4"], 4);
    assert_eq!(brief(&diff(&a, &c, t1())), [(Removed, "w2", "-", "-", "-")]);
    // A complete listing after a truncated one: only what the truncated one covered counts.
    let d = WorkspaceViewStatus {
        truncated: Some(false),
        ..listed(&["w1", "w3"], 2)
    };
    assert_eq!(brief(&diff(&a, &d, t1())), [(Removed, "w2", "-", "-", "-")]);
    assert_eq!(brief(&diff(&d, &a, t1())), [(Added, "w2", "-", "-", "-")]);
    // Unknown truncation (no truncated field) counts as truncated.
    let e = WorkspaceViewStatus {
        truncated: None,
        ..listed(&["w1"], 1)
    };
    assert!(diff(&e, &a, t1()).is_empty(), "w2, w3 sort after w1");
}

/// The inventory's own cut of role lists at MAX_ROLES_PER_ENTRY, built by the real builder:
/// principals beyond the cut are not revoked, whatever happens to them.
#[test]
fn role_assignments_beyond_the_per_entry_cut_are_not_revoked() {
    let workspace = || Workspace {
        id: "w1".into(),
        display_name: Some("Big".into()),
        description: None,
        type_: None,
        capacity_id: None,
    };
    let assignment = |i: usize, role: &str| RoleAssignment {
        id: None,
        principal: Principal {
            id: format!("p{i:03}"),
            display_name: None,
            type_: Some("User".into()),
        },
        role: Some(role.into()),
    };
    let build = |assignments: Vec<RoleAssignment>| {
        fabric_status(
            vec![workspace()],
            Some(vec![RoleAssignments::Listed(assignments)]),
            1,
            500,
            INVENTORY_BUDGET_BYTES,
        )
        .status
    };
    let n = MAX_ROLES_PER_ENTRY + 50;
    let a = build((0..n).map(|i| assignment(i, "Viewer")).collect());
    assert_eq!(a.workspaces[0].role_assignment_count, Some(n as i64));
    // p000 is removed, so p100 moves into the listing; p120..p149 lose access, beyond the cut.
    let b = build(
        (1..120)
            .map(|i| assignment(i, if i == 5 { "Admin" } else { "Viewer" }))
            .collect(),
    );
    assert_eq!(
        brief(&diff(&a, &b, t1())),
        [
            (Revoked, "w1", "p000", "Viewer", "-"),
            (RoleChanged, "w1", "p005", "Viewer", "Admin"),
        ],
        "p099 (the last listed before, maybe cut) and p100 (beyond the cut) are not compared"
    );
    // Both listings cut: the second one's last principal may have lost roles to the cut.
    let c = build(
        (0..n)
            .map(|i| assignment(i, "Viewer"))
            .chain([assignment(99, "Admin")])
            .collect(),
    );
    assert!(
        diff(&a, &c, t1()).is_empty(),
        "p099's second role sorts after the cut"
    );
}

#[test]
fn role_assignments_not_read_are_not_compared() {
    let mut unreadable = before();
    unreadable.workspaces[0].role_assignments = None;
    assert!(
        diff(&before(), &unreadable, t1()).is_empty(),
        "no longer readable: nobody revoked"
    );
    assert!(
        diff(&unreadable, &before(), t1()).is_empty(),
        "readable again: nobody granted"
    );
    // An empty list is read: everyone on it was revoked.
    let mut empty = before();
    empty.workspaces[1].role_assignments = Some(vec![]);
    assert_eq!(
        brief(&diff(&before(), &empty, t1())),
        [(Revoked, "w2", "carol", "Admin", "-")]
    );
}

#[test]
fn inventories_of_different_providers_or_none_are_not_compared() {
    let none = WorkspaceViewStatus::default();
    assert!(diff(&none, &after(), t1()).is_empty());
    let dr = WorkspaceViewStatus {
        provider: Some(DATAROBOT.into()),
        truncated: Some(false),
        ..Default::default()
    };
    assert!(diff(&dr, &after(), t1()).is_empty());
    assert!(diff(&after(), &dr, t1()).is_empty());
}

#[test]
fn several_roles_of_one_principal_pair_up() {
    let one = |roles: &[&str]| {
        fabric(vec![ws(
            "w1",
            "W",
            Some(roles.iter().map(|r| ra("p", r)).collect()),
        )])
    };
    assert_eq!(
        brief(&diff(&one(&["Viewer"]), &one(&["Admin", "Viewer"]), t1())),
        [(Granted, "w1", "p", "-", "Admin")]
    );
    assert_eq!(
        brief(&diff(&one(&["Admin", "Viewer"]), &one(&["Member"]), t1())),
        [
            (RoleChanged, "w1", "p", "Admin", "Member"),
            (Revoked, "w1", "p", "Viewer", "-"),
        ]
    );
    assert!(diff(&one(&["Admin", "Admin"]), &one(&["Admin"]), t1()).is_empty());
}

#[test]
fn datarobot_notebooks_are_compared_by_recipient() {
    let acl = |id: &str, roles: &[(&str, &str, &str)]| NotebookAcl {
        notebook_id: id.into(),
        roles: roles
            .iter()
            .map(|(id, role, type_)| SharedRole {
                id: (*id).into(),
                name: Some(format!("{id}@example.com")),
                role: Some((*role).into()),
                share_recipient_type: Some((*type_).into()),
            })
            .collect(),
    };
    let build = |acls: Vec<NotebookAcl>| {
        let (selected, count) = first_by_id(acls, |n| &n.notebook_id, 500);
        datarobot_status(selected, count, 500, 1_000_000).status
    };
    let a = build(vec![
        acl(
            "nb1",
            &[("u1", "OWNER", "user"), ("g1", "CONSUMER", "group")],
        ),
        acl("nb2", &[("u1", "OWNER", "user")]),
    ]);
    let b = build(vec![
        acl(
            "nb2",
            &[("u1", "OWNER", "user"), ("org", "CONSUMER", "organization")],
        ),
        acl("nb1", &[("u1", "OWNER", "user"), ("g1", "EDITOR", "group")]),
    ]);
    let changes = diff(&a, &b, t1());
    assert_eq!(
        brief(&changes),
        [
            (RoleChanged, "nb1", "g1", "CONSUMER", "EDITOR"),
            (Granted, "nb2", "org", "-", "CONSUMER"),
        ]
    );
    assert_eq!(changes[0].principal_type.as_deref(), Some("group"));
    assert_eq!(
        changes[1].principal_name.as_deref(),
        Some("org@example.com")
    );
    assert_eq!(
        changes[0].item_name, None,
        "DataRobot gives no notebook names"
    );
    // Cut role lists: the same rule as for Fabric.
    let mut cut = b.clone();
    cut.notebooks[1].roles.truncate(1);
    cut.notebooks[1].role_count = Some(2);
    assert!(diff(&b, &cut, t1()).is_empty(), "org sorts after the cut");
}

fn change(kind: AccessChangeKind, item: &str, principal: &str) -> AccessChange {
    AccessChange {
        time: t1(),
        change: kind,
        item_id: item.into(),
        item_name: Some(format!("{item} name")),
        principal_id: Some(principal.into()),
        principal_type: Some("User".into()),
        principal_name: Some(format!("{principal}@contoso.com")),
        old_role: (kind != Granted).then(|| "Viewer".into()),
        new_role: (kind != Revoked).then(|| "Admin".into()),
    }
}

#[test]
fn the_history_keeps_the_newest_first_up_to_the_limit() {
    let old = vec![change(Granted, "w1", "old1"), change(Revoked, "w1", "old2")];
    let new = vec![change(RoleChanged, "w2", "new1")];
    let h = record(new.clone(), &old, 50);
    let who: Vec<&str> = h
        .iter()
        .map(|c| c.principal_id.as_deref().unwrap())
        .collect();
    assert_eq!(who, ["new1", "old1", "old2"]);
    assert_eq!(record(new.clone(), &old, 2).len(), 2);
    assert_eq!(
        record(new.clone(), &old, 2)[1].principal_id.as_deref(),
        Some("old1")
    );
    assert!(record(new, &old, 0).is_empty());
    assert_eq!(record(vec![], &old, 50), old, "nothing new: unchanged");
}

/// The largest history entry the inventory's clipping allows.
fn maximal_change(i: usize) -> AccessChange {
    let long = |n: usize| clip_json(&format!("{i:04}{}", "\"".repeat(1000)), n);
    AccessChange {
        time: "2026-12-31T23:59:59Z".parse().unwrap(),
        change: RoleChanged,
        item_id: long(MAX_ID_BYTES),
        item_name: Some(long(MAX_NAME_BYTES)),
        principal_id: Some(long(MAX_ID_BYTES)),
        principal_type: Some(long(MAX_LABEL_BYTES)),
        principal_name: Some(long(MAX_NAME_BYTES)),
        old_role: Some(long(MAX_LABEL_BYTES)),
        new_role: Some(long(MAX_LABEL_BYTES)),
    }
}

/// The history at its largest `historyLimit`, every string at its clipping limit: cut by its
/// byte budget, newest kept.
fn maximal_history() -> Vec<AccessChange> {
    let changes: Vec<AccessChange> = (0..MAX_HISTORY).map(maximal_change).collect();
    record(changes, &[], MAX_HISTORY)
}

const MAX_HISTORY: usize = crate::api::workspace_view::MAX_HISTORY_LIMIT as usize;

#[test]
fn the_history_stays_within_its_byte_budget() {
    let h = maximal_history();
    let bytes = serde_json::to_vec(&h).unwrap().len();
    eprintln!(
        "maximal history: {} of {MAX_HISTORY} entries kept, {bytes} bytes, {} bytes each",
        h.len(),
        serde_json::to_vec(&h[0]).unwrap().len()
    );
    assert!(bytes <= HISTORY_BUDGET_BYTES, "{bytes}");
    assert!(h.len() < MAX_HISTORY, "cut by size");
    assert!(h[0].item_id.starts_with("0000"), "the newest are kept");
    // Typical entries: all 500 fit.
    let typical: Vec<AccessChange> = (0..MAX_HISTORY)
        .map(|i| AccessChange {
            time: t1(),
            change: RoleChanged,
            item_id: format!("{i:08x}-8037-4d0c-896e-a46fb27ff227"),
            item_name: Some("Finance reporting EMEA".into()),
            principal_id: Some(format!("{i:08x}-1111-4d0c-896e-a46fb27ff227")),
            principal_type: Some("ServicePrincipal".into()),
            principal_name: Some("firstname.lastname@contoso.com".into()),
            old_role: Some("Contributor".into()),
            new_role: Some("Admin".into()),
        })
        .collect();
    let bytes = serde_json::to_vec(&typical).unwrap().len();
    eprintln!("{MAX_HISTORY} typical history entries: {bytes} bytes");
    assert_eq!(record(typical, &[], MAX_HISTORY).len(), MAX_HISTORY);
}

#[test]
fn the_summary_counts_and_then_names_as_many_as_fit() {
    let changes = vec![
        change(Granted, "w1", "alice"),
        change(Granted, "w2", "bob"),
        change(Revoked, "w2", "carol"),
        change(RoleChanged, "w3", "dave"),
        AccessChange {
            principal_id: None,
            principal_name: None,
            principal_type: None,
            old_role: None,
            new_role: None,
            ..change(Added, "w4", "")
        },
    ];
    assert_eq!(
        summary(&changes, FABRIC),
        "2 granted, 1 revoked, 1 role changed on 3 workspaces; 1 workspace added: \
         alice@contoso.com granted Admin on w1 name; bob@contoso.com granted Admin on w2 name; \
         carol@contoso.com lost Viewer on w2 name; dave@contoso.com Viewer -> Admin on w3 name; \
         w4 name added"
    );
    assert_eq!(
        summary(&changes[2..3], DATAROBOT),
        "1 revoked on 1 notebook: carol@contoso.com lost Viewer on w2 name"
    );
    // Thousands of changes: one note of bounded size, pointing at the history.
    let many: Vec<AccessChange> = (0..5000)
        .map(|i| change(Revoked, &format!("w{}", i % 300), &format!("user{i}")))
        .collect();
    let note = summary(&many, FABRIC);
    assert!(note.len() <= NOTE_BUDGET_BYTES + 60, "{}", note.len());
    assert!(
        note.starts_with("5000 revoked on 300 workspaces: "),
        "{note}"
    );
    assert!(note.ends_with("more (status.recentChanges)"), "{note}");
    // Maximal names: still bounded, still the counts first.
    let big: Vec<AccessChange> = (0..10).map(maximal_change).collect();
    let note = summary(&big, FABRIC);
    assert!(note.len() <= NOTE_BUDGET_BYTES + 60, "{}", note.len());
    assert!(
        note.starts_with("10 role changed on 10 workspaces"),
        "{note}"
    );
}

fn view(spec: serde_json::Value) -> WorkspaceView {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
        "metadata": {"name": "v", "namespace": "ns"}, "spec": spec
    }))
    .unwrap()
}

#[test]
fn the_source_digest_changes_with_what_decides_the_inventory_only() {
    let azure = serde_json::json!({"tenantId": "t", "clientId": "c",
                                   "clientSecretRef": {"name": "sp", "key": "k"}});
    let base =
        view(serde_json::json!({"fabric": {"includeRoleAssignments": true, "azure": azure}}));
    let d = source_digest(&base.spec);
    assert_eq!(d.len(), 16);
    assert_eq!(d, source_digest(&base.spec.clone()), "stable");
    // Pinned, so that an upgrade that changes the digest's computation is noticed (it would
    // make every view's next inventory a new baseline). Computed outside Rust as
    // printf 'fabric\0{"includeRoleAssignments":true,"azure":{"tenantId":"t","clientId":"c",
    // "clientSecretRef":{"name":"sp","key":"k"},"cloud":"AzurePublic"}}' | sha256sum (the
    // JSON on one line; the first 16 hex digits).
    assert_eq!(d, "d6c6d1b1732ec95a");
    let same = view(
        serde_json::json!({"maxItems": 10, "historyLimit": 5, "refreshInterval": "1h",
                                       "fabric": {"includeRoleAssignments": true, "azure": azure}}),
    );
    assert_eq!(source_digest(&same.spec), d);
    for other in [
        serde_json::json!({"fabric": {"includeRoleAssignments": true, "principalTypes": ["User"], "azure": azure}}),
        serde_json::json!({"fabric": {"roles": ["Admin"], "includeRoleAssignments": true, "azure": azure}}),
        serde_json::json!({"fabric": {"azure": azure}}),
        serde_json::json!({"fabric": {"includeRoleAssignments": true, "azure":
            {"tenantId": "t", "clientId": "other", "clientSecretRef": {"name": "sp", "key": "k"}}}}),
        serde_json::json!({"dataRobot": {"notebookIds": ["a"], "apiTokenRef": {"name": "d", "key": "k"}}}),
    ] {
        assert_ne!(source_digest(&view(other.clone()).spec), d, "{other}");
    }
}

/// The API server's limit on a whole object, roughly (etcd's default request limit).
const OBJECT_LIMIT: usize = 1_572_864;
/// The bound on the whole status.
const MIB: usize = 1_048_576;

/// The whole status as the driver writes it: `built` with the maximal history, the digest, and
/// a Ready condition with the longest message the driver writes (1000 bytes).
fn largest_status(built: &Built) -> WorkspaceViewStatus {
    let mut status = built.status.clone();
    status.recent_changes = maximal_history();
    status.source_digest = Some("f".repeat(16));
    status.common.observed_generation = Some(i64::MAX);
    status.common.conditions = vec![Condition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: "Synced".into(),
        message: "\"".repeat(1000),
        observed_generation: Some(i64::MAX),
        last_transition_time: "2026-11-23T10:00:00Z".parse().unwrap(),
    }];
    status.common.last_sync_time = Some("2026-11-23T10:00:00.123456789Z".parse().unwrap());
    status.common.next_sync_time = Some("2026-11-23T10:15:00.123456789Z".parse().unwrap());
    status
}

fn maximal_workspaces(n: usize) -> Vec<Workspace> {
    (0..n)
        .map(|i| Workspace {
            id: format!("{i:08}{}", "\"".repeat(70)),
            display_name: Some("\"".repeat(200)),
            description: Some("😀".repeat(100)),
            type_: Some("\\".repeat(40)),
            capacity_id: Some("é".repeat(80)),
        })
        .collect()
}

fn maximal_assignments(n: usize) -> Vec<RoleAssignments> {
    (0..n)
        .map(|_| {
            RoleAssignments::Listed(
                (0..MAX_ROLES_PER_ENTRY + 1)
                    .map(|j| RoleAssignment {
                        id: None,
                        principal: Principal {
                            id: format!("{j:04}{}", "\"".repeat(70)),
                            display_name: Some("\\".repeat(200)),
                            type_: Some("😀".repeat(20)),
                        },
                        role: Some("\"".repeat(40)),
                    })
                    .collect(),
            )
        })
        .collect()
}

fn maximal_notebooks(n: usize) -> Vec<NotebookAcl> {
    (0..n)
        .map(|i| NotebookAcl {
            notebook_id: format!("{i:08}{}", "\"".repeat(70)),
            roles: (0..MAX_ROLES_PER_ENTRY + 1)
                .map(|j| SharedRole {
                    id: format!("{j:04}{}", "\\".repeat(70)),
                    name: Some("😀".repeat(100)),
                    role: Some("\"".repeat(40)),
                    share_recipient_type: Some("\"".repeat(40)),
                })
                .collect(),
        })
        .collect()
}

/// The largest status `maxItems` and `historyLimit` allow, for each shape of inventory, with
/// every string at its limit in the characters that cost the most JSON bytes: under 1 MiB.
#[test]
fn the_largest_status_with_its_history_is_under_one_mebibyte() {
    let max = MAX_MAX_ITEMS as usize;
    let b = INVENTORY_BUDGET_BYTES;
    let (selected, count) = first_by_id(maximal_workspaces(max + 500), |w| &w.id, max);
    let n = selected.len();
    let cases = [
        (
            "Fabric with role assignments",
            fabric_status(
                selected.clone(),
                Some(maximal_assignments(n)),
                count,
                max,
                b,
            ),
        ),
        (
            "Fabric without role assignments",
            fabric_status(selected, None, count, max, b),
        ),
        ("DataRobot", {
            let (selected, count) = first_by_id(maximal_notebooks(max), |n| &n.notebook_id, max);
            datarobot_status(selected, count, max, b)
        }),
    ];
    for (what, built) in cases {
        let status = largest_status(&built);
        let bytes = serde_json::to_vec(&status).unwrap().len();
        eprintln!(
            "largest {what} status: {bytes} bytes ({} entries listed, {} history entries)",
            status.workspaces.len() + status.notebooks.len(),
            status.recent_changes.len()
        );
        assert!(bytes < MIB, "{what}: {bytes}");
        assert_eq!(status.truncated, Some(true), "{what}: cut by size");
    }
}

/// The whole object at its largest: a spec with the most notebook IDs (twice, as kubectl's
/// last-applied annotation holds it again), the largest status: well under the API server's
/// limit.
#[test]
fn the_largest_object_stays_well_under_the_api_server_limit() {
    let ids: Vec<String> = (0..MAX_NOTEBOOK_IDS)
        .map(|i| format!("{i:08}{}", "a".repeat(56)))
        .collect();
    let obj = view(
        serde_json::json!({"maxItems": MAX_MAX_ITEMS, "historyLimit": MAX_HISTORY,
        "dataRobot": {"notebookIds": ids, "recipientTypes": ["user", "group", "organization", "externalApplication"],
                      "apiTokenRef": {"name": "d".repeat(253), "key": "k".repeat(253)}}}),
    );
    let spec_bytes = serde_json::to_vec(&obj.spec).unwrap().len();
    let max = MAX_MAX_ITEMS as usize;
    let (selected, count) = first_by_id(maximal_notebooks(max), |n| &n.notebook_id, max);
    let built = datarobot_status(selected, count, max, inventory_budget(spec_bytes));
    let status_bytes = serde_json::to_vec(&largest_status(&built)).unwrap().len();
    // metadata: name, namespace, uid, labels and annotations besides the last-applied copy.
    let object = 2 * spec_bytes + status_bytes + 4096;
    eprintln!(
        "largest object: spec {spec_bytes} bytes, status {status_bytes}, about {object} in all"
    );
    assert!(object < OBJECT_LIMIT * 3 / 4, "{object}");
}
