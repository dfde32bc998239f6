use super::*;
use crate::api::common::Condition;
use crate::api::workspace_view::MAX_MAX_ITEMS;
use crate::providers::error::{ProviderError, ProviderErrorKind};
use crate::providers::fabric::Principal;

/// The API server's limit on a whole object, roughly (etcd's default request limit).
const OBJECT_LIMIT: usize = 1_572_864;
/// The budget of a resource with a small spec.
const B: usize = INVENTORY_BUDGET_BYTES;

fn json_len(s: &str) -> usize {
    serde_json::to_string(s).unwrap().len() - 2
}

fn ws(id: &str, name: &str) -> Workspace {
    Workspace {
        id: id.into(),
        display_name: Some(name.into()),
        description: Some(String::new()),
        type_: Some("Workspace".into()),
        capacity_id: None,
    }
}

fn assignment(principal: &str, role: &str) -> RoleAssignment {
    RoleAssignment {
        id: Some(principal.into()),
        principal: Principal {
            id: principal.into(),
            display_name: Some(format!("User {principal}")),
            type_: Some("User".into()),
        },
        role: Some(role.into()),
    }
}

/// The whole status as the driver writes it: the inventory plus a Ready condition with the
/// longest message the driver writes (1000 characters) and the common fields.
fn full_status_bytes(built: &Built) -> usize {
    let mut status = built.status.clone();
    status.common.observed_generation = Some(i64::MAX);
    status.common.conditions = vec![Condition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: "Synced".into(),
        message: "x".repeat(1000),
        observed_generation: Some(i64::MAX),
        last_transition_time: "2026-11-23T10:00:00Z".parse().unwrap(),
    }];
    status.common.last_sync_time = Some("2026-11-23T10:00:00Z".parse().unwrap());
    status.common.next_sync_time = Some("2026-11-23T10:15:00Z".parse().unwrap());
    serde_json::to_vec(&status).unwrap().len()
}

#[test]
fn clipping_bounds_the_json_size_and_marks_the_cut() {
    assert_eq!(clip_json("Marketing", 10), "Marketing");
    assert_eq!(clip_json("a\nb\tc", 10), "a b c", "controls become spaces");
    let cases = [
        "x".repeat(1000),
        "\"".repeat(1000),
        "\\".repeat(999),
        "😀".repeat(1000),
        "é".repeat(1000),
        "\u{1}".repeat(1000),
        format!("{}😀😀", "a".repeat(61)),
    ];
    for text in &cases {
        for max in [64, 65, 66, 128, 256] {
            let c = clip_json(text, max);
            assert!(json_len(&c) <= max, "{max}: {} > {max}", json_len(&c));
            if json_len(text) > max {
                assert!(c.ends_with('…'), "marked");
                assert!(json_len(&c) + 4 > max, "not cut more than needed");
            } else {
                assert_eq!(&c, text);
            }
        }
    }
    // Exactly at the limit: kept whole.
    let exact = "\"".repeat(32);
    assert_eq!(clip_json(&exact, 64), exact);
}

#[test]
fn first_by_id_sorts_deduplicates_and_counts() {
    let items = vec![ws("c", "C"), ws("a", "A1"), ws("b", "B"), ws("a", "A2")];
    let (top, count) = first_by_id(items, |w| &w.id, 2);
    assert_eq!(count, 3, "a repeated id counts once");
    let ids: Vec<(&str, &str)> = top
        .iter()
        .map(|w| (w.id.as_str(), w.display_name.as_deref().unwrap()))
        .collect();
    assert_eq!(ids, [("a", "A1"), ("b", "B")], "the first a is kept");
}

#[test]
fn fabric_status_lists_sorted_entries_and_role_assignments() {
    let (selected, count) = first_by_id(
        vec![ws("w2", "Two"), ws("w1", "One"), ws("w3", "Three")],
        |w| &w.id,
        500,
    );
    let assignments = vec![
        RoleAssignments::Listed(vec![assignment("p2", "Member"), assignment("p1", "Admin")]),
        RoleAssignments::NotReadable(ProviderError::new(ProviderErrorKind::Forbidden, "x")),
        RoleAssignments::Listed(vec![]),
    ];
    let built = fabric_status(selected, Some(assignments), count, 500, B);
    let s = &built.status;
    assert_eq!(s.provider.as_deref(), Some("Fabric"));
    assert_eq!((s.count, s.truncated), (Some(3), Some(false)));
    let ids: Vec<&str> = s.workspaces.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["w1", "w2", "w3"]);
    let ra = s.workspaces[0].role_assignments.as_ref().unwrap();
    assert_eq!(ra[0].principal_id, "p1", "sorted by principal id");
    assert_eq!(ra[0].role.as_deref(), Some("Admin"));
    assert_eq!(ra[1].display_name.as_deref(), Some("User p2"));
    assert_eq!(s.workspaces[1].role_assignments, None, "not readable");
    assert_eq!(s.workspaces[2].role_assignments, Some(vec![]));
    assert_eq!(
        built.message,
        "3 workspaces; role assignments not readable in 1 (the caller needs Member or higher there)"
    );
    // Without includeRoleAssignments: no role assignments at all.
    let (selected, count) = first_by_id(vec![ws("w1", "One")], |w| &w.id, 500);
    let built = fabric_status(selected, None, count, 500, B);
    assert_eq!(built.status.workspaces[0].role_assignments, None);
    assert_eq!(built.message, "1 workspace");
}

#[test]
fn truncation_at_max_items_keeps_the_true_count() {
    let all: Vec<Workspace> = (0..2500)
        .rev()
        .map(|i| ws(&format!("{i:05}"), "w"))
        .collect();
    let (selected, count) = first_by_id(all, |w| &w.id, 500);
    let built = fabric_status(selected, None, count, 500, B);
    let s = &built.status;
    assert_eq!((s.count, s.truncated), (Some(2500), Some(true)));
    assert_eq!(s.workspaces.len(), 500);
    assert_eq!(s.workspaces[0].id, "00000");
    assert_eq!(s.workspaces[499].id, "00499");
    assert_eq!(
        built.message,
        "2500 workspaces, the first 500 by id listed (maxItems 500)"
    );
}

#[test]
fn role_lists_are_bounded_per_entry_with_their_total() {
    let acl = NotebookAcl {
        notebook_id: "nb".into(),
        roles: (0..150)
            .rev()
            .map(|i| SharedRole {
                id: format!("u{i:03}"),
                name: None,
                role: Some("EDITOR".into()),
                share_recipient_type: Some("user".into()),
            })
            .collect(),
    };
    let built = datarobot_status(vec![acl], 1, 500, B);
    let nb = &built.status.notebooks[0];
    assert_eq!(nb.roles.len(), MAX_ROLES_PER_ENTRY);
    assert_eq!(nb.roles[0].id, "u000");
    assert_eq!(nb.role_count, Some(150));
    assert_eq!(built.status.provider.as_deref(), Some("DataRobot"));
    assert_eq!(built.message, "1 notebook");
}

/// The worst case the spec allows: maxItems at its maximum, every string far over its clip,
/// made of characters that cost the most JSON bytes, more role assignments than listed per
/// workspace. The whole status must stay well under the object limit.
#[test]
fn worst_case_fabric_status_stays_well_under_the_object_limit() {
    let max = MAX_MAX_ITEMS as usize;
    let long = |c: &str, n: usize| c.repeat(n);
    let all: Vec<Workspace> = (0..max + 500)
        .map(|i| Workspace {
            id: format!("{i:08}{}", long("\"", 70)),
            display_name: Some(long("\"", 200)),
            description: Some(long("😀", 100)),
            type_: Some(long("\\", 40)),
            capacity_id: Some(long("é", 80)),
        })
        .collect();
    let (selected, count) = first_by_id(all, |w| &w.id, max);
    let assignments = selected
        .iter()
        .map(|_| {
            RoleAssignments::Listed(
                (0..MAX_ROLES_PER_ENTRY + 1)
                    .map(|j| RoleAssignment {
                        id: None,
                        principal: Principal {
                            id: format!("{j:04}{}", long("\"", 70)),
                            display_name: Some(long("\\", 200)),
                            type_: Some(long("😀", 20)),
                        },
                        role: Some(long("\"", 40)),
                    })
                    .collect(),
            )
        })
        .collect();
    let built = fabric_status(selected, Some(assignments), count, max, B);
    let bytes = full_status_bytes(&built);
    eprintln!(
        "worst-case Fabric status with role assignments: {bytes} bytes, {} of {} workspaces listed",
        built.status.workspaces.len(),
        count
    );
    assert!(bytes <= INVENTORY_BUDGET_BYTES + 4096, "{bytes}");
    assert!(bytes < OBJECT_LIMIT / 3 * 2, "{bytes}");
    assert_eq!(built.status.count, Some((max + 500) as i64));
    assert_eq!(built.status.truncated, Some(true));
    assert!(
        built.message.ends_with("listed (status size limit)"),
        "{}",
        built.message
    );
    let first = &built.status.workspaces[0];
    assert!(json_len(first.display_name.as_deref().unwrap()) <= MAX_NAME_BYTES);
    assert!(json_len(&first.id) <= MAX_ID_BYTES);
    assert_eq!(
        first.role_assignments.as_ref().unwrap().len(),
        MAX_ROLES_PER_ENTRY
    );
    assert_eq!(
        first.role_assignment_count,
        Some(MAX_ROLES_PER_ENTRY as i64 + 1)
    );
    // Listed entries are still the first ones by id.
    assert!(first.id.starts_with("00000000"));
}

#[test]
fn worst_case_without_role_assignments_and_for_datarobot() {
    let max = MAX_MAX_ITEMS as usize;
    let all: Vec<Workspace> = (0..max)
        .map(|i| Workspace {
            id: format!("{i:08}{}", "\"".repeat(70)),
            display_name: Some("\"".repeat(200)),
            description: Some("😀".repeat(100)),
            type_: Some("\\".repeat(40)),
            capacity_id: Some("é".repeat(80)),
        })
        .collect();
    let (selected, count) = first_by_id(all, |w| &w.id, max);
    let built = fabric_status(selected, None, count, max, B);
    let bytes = full_status_bytes(&built);
    eprintln!(
        "worst-case Fabric status without role assignments: {bytes} bytes, {} listed",
        built.status.workspaces.len()
    );
    assert!(bytes <= INVENTORY_BUDGET_BYTES + 4096, "{bytes}");

    let notebooks: Vec<NotebookAcl> = (0..max)
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
        .collect();
    let (selected, count) = first_by_id(notebooks, |n| &n.notebook_id, max);
    let built = datarobot_status(selected, count, max, B);
    let bytes = full_status_bytes(&built);
    eprintln!(
        "worst-case DataRobot status: {bytes} bytes, {} listed",
        built.status.notebooks.len()
    );
    assert!(bytes <= INVENTORY_BUDGET_BYTES + 4096, "{bytes}");
    assert_eq!(built.status.truncated, Some(true));
}

/// Realistic inventories are not cut by the size budget: 2000 workspaces with ordinary names
/// and descriptions, or 500 with ten role assignments each.
#[test]
fn realistic_inventories_fit_whole() {
    let max = MAX_MAX_ITEMS as usize;
    let guid = |i: usize| format!("{i:08x}-8037-4d0c-896e-a46fb27ff227");
    let all: Vec<Workspace> = (0..max)
        .map(|i| Workspace {
            id: guid(i),
            display_name: Some(format!("Sales analytics team {i}")),
            description: Some("Workspace of the sales analytics team: reports, lakehouse and notebooks for the quarterly forecast".into()),
            type_: Some("Workspace".into()),
            capacity_id: Some(guid(i + 100_000)),
        })
        .collect();
    let (selected, count) = first_by_id(all, |w| &w.id, max);
    let built = fabric_status(selected.clone(), None, count, max, B);
    let bytes = full_status_bytes(&built);
    eprintln!("2000 realistic Fabric workspaces: {bytes} bytes");
    assert_eq!(built.status.workspaces.len(), max);
    assert_eq!(built.status.truncated, Some(false));

    let (selected, count) = first_by_id(selected, |w| &w.id, 500);
    let assignments = selected
        .iter()
        .map(|_| {
            RoleAssignments::Listed(
                (0..10)
                    .map(|j| RoleAssignment {
                        id: Some(guid(j)),
                        principal: Principal {
                            id: guid(j + 200_000),
                            display_name: Some(format!("Firstname Lastname {j}")),
                            type_: Some("User".into()),
                        },
                        role: Some("Contributor".into()),
                    })
                    .collect(),
            )
        })
        .collect();
    let built = fabric_status(selected, Some(assignments), count, 500, B);
    let bytes = full_status_bytes(&built);
    eprintln!("500 realistic Fabric workspaces with 10 role assignments each: {bytes} bytes");
    assert_eq!(built.status.workspaces.len(), 500);
    assert_eq!(
        built.message, "2000 workspaces, the first 500 by id listed (maxItems 500)",
        "not cut by size"
    );
}

#[test]
fn same_inventory_ignores_the_common_status() {
    let (selected, count) = first_by_id(vec![ws("w1", "One")], |w| &w.id, 500);
    let a = fabric_status(selected.clone(), None, count, 500, B).status;
    let mut b = a.clone();
    b.common.last_sync_time = Some("2026-11-23T10:00:00Z".parse().unwrap());
    b.common.observed_generation = Some(3);
    assert!(same_inventory(&a, &b));
    let c = fabric_status(vec![ws("w1", "Renamed")], None, 1, 500, B).status;
    assert!(!same_inventory(&a, &c));
    let d = fabric_status(selected, None, 2, 500, B).status;
    assert!(!same_inventory(&a, &d), "count differs");
}

#[test]
fn the_schema_bounds_match_the_constants() {
    use crate::api::workspace_view::MAX_NOTEBOOK_IDS;
    let crd = serde_json::to_value(crate::api::crds().remove(2)).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        spec["properties"]["maxItems"]["maximum"].as_f64(),
        Some(f64::from(MAX_MAX_ITEMS))
    );
    assert_eq!(
        spec["properties"]["dataRobot"]["properties"]["notebookIds"]["maxItems"],
        MAX_NOTEBOOK_IDS
    );
}

#[test]
fn type_filters_keep_only_the_types_listed_before_the_bound() {
    use crate::api::workspace_view::{DataRobotRecipientType, FabricPrincipalType};
    let typed = |id: &str, type_: Option<&str>| RoleAssignment {
        id: None,
        principal: Principal {
            id: id.into(),
            display_name: None,
            type_: type_.map(str::to_owned),
        },
        role: Some("Viewer".into()),
    };
    // 150 service principal profiles and two people: the people survive the bound.
    let mut list: Vec<RoleAssignment> = (0..150)
        .map(|i| typed(&format!("a{i:03}"), Some("ServicePrincipalProfile")))
        .collect();
    list.push(typed("zz-user", Some("User")));
    list.push(typed("zz-group", Some("group")));
    list.push(typed("zz-untyped", None));
    let all = vec![
        RoleAssignments::Listed(list),
        RoleAssignments::NotReadable(ProviderError::new(ProviderErrorKind::Forbidden, "x")),
    ];
    let kept = keep_principal_types(
        all.clone(),
        Some(&[FabricPrincipalType::User, FabricPrincipalType::Group]),
    );
    let RoleAssignments::Listed(people) = &kept[0] else {
        panic!("listed")
    };
    let ids: Vec<&str> = people.iter().map(|a| a.principal.id.as_str()).collect();
    assert_eq!(
        ids,
        ["zz-user", "zz-group"],
        "case-insensitive; untyped left out"
    );
    assert!(matches!(kept[1], RoleAssignments::NotReadable(_)));
    assert_eq!(keep_principal_types(all.clone(), None), all, "no filter");
    let (selected, count) = first_by_id(vec![ws("w1", "W"), ws("w2", "V")], |w| &w.id, 500);
    let built = fabric_status(selected, Some(kept), count, 500, B);
    let w1 = &built.status.workspaces[0];
    assert_eq!(w1.role_assignments.as_ref().unwrap().len(), 2);
    assert_eq!(
        w1.role_assignment_count, None,
        "the total counts what is kept"
    );

    let acl = NotebookAcl {
        notebook_id: "nb".into(),
        roles: ["user", "organization", "externalApplication", "Group"]
            .iter()
            .map(|t| SharedRole {
                id: format!("r-{t}"),
                name: None,
                role: Some("CONSUMER".into()),
                share_recipient_type: Some((*t).into()),
            })
            .collect(),
    };
    let kept = keep_recipient_types(
        vec![acl.clone()],
        Some(&[
            DataRobotRecipientType::Group,
            DataRobotRecipientType::Organization,
        ]),
    );
    let ids: Vec<&str> = kept[0].roles.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r-organization", "r-Group"]);
    assert_eq!(keep_recipient_types(vec![acl.clone()], None), vec![acl]);
}
