//! WorkspaceView access changes against a scripted provider seam: a role assignment changed at
//! the provider becomes one `AccessChanged` event, one `status.recentChanges` entry and a
//! counter increase; an unchanged sync writes and publishes nothing; failures, failed status
//! writes and changed filters report nothing false.

use crate::support::fake_api::{FakeApiServer, Fault};
use crate::support::fake_clients::{FakeClients, Handle};
use crate::support::*;
use k8s_openapi::api::events::v1::Event;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use workspace_access_operator::api::WorkspaceView;
use workspace_access_operator::controller::driver::reconcile;
use workspace_access_operator::controller::error::Error;
use workspace_access_operator::controller::{Context, ManualClock, Settings};
use workspace_access_operator::providers::datarobot::{NotebookAcl, SharedRole, SharedRoles};
use workspace_access_operator::providers::error::{ProviderError, ProviderErrorKind};
use workspace_access_operator::providers::fabric::{
    Principal, RoleAssignment, RoleAssignments, Workspace,
};

const NS: &str = "platform";
const REFRESH: Duration = Duration::from_secs(600);

/// What the scripted provider answers: replaced between syncs.
type Answer<T> = Arc<Mutex<Result<T, ProviderErrorKind>>>;
/// Role assignments by workspace id, changed between syncs.
type Roles = Arc<Mutex<Vec<(String, Vec<RoleAssignment>)>>>;

fn answer<T: Clone>(a: &Answer<T>) -> Result<T, Error> {
    a.lock()
        .unwrap()
        .clone()
        .map_err(|kind| Error::Provider(ProviderError::new(kind, "page 2 failed: HTTP 503")))
}

fn workspace(id: &str, name: &str) -> Workspace {
    Workspace {
        id: id.into(),
        display_name: Some(name.into()),
        description: None,
        type_: Some("Workspace".into()),
        capacity_id: None,
    }
}

fn assignment(id: &str, type_: &str, role: &str) -> RoleAssignment {
    RoleAssignment {
        id: Some(format!("a-{id}")),
        principal: Principal {
            id: id.into(),
            display_name: Some(format!("{id}@contoso.com")),
            type_: Some(type_.into()),
        },
        role: Some(role.into()),
    }
}

struct Env {
    s: FakeApiServer,
    ctx: Arc<Context>,
    clock: Arc<ManualClock>,
}

fn env(fake: FakeClients) -> Env {
    let s = server();
    let clock = Arc::new(ManualClock::new(t0()));
    let ctx = builder(&s, Settings::default())
        .clock(clock.clone())
        .clients(Arc::new(Handle(Arc::new(fake))))
        .build();
    Env {
        s,
        ctx: Arc::new(ctx),
        clock,
    }
}

impl Env {
    fn view(&self, name: &str, spec: Value) -> WorkspaceView {
        self.s.insert(
            &serde_json::from_value::<WorkspaceView>(json!({
                "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
                "metadata": {"name": name, "namespace": NS}, "spec": spec
            }))
            .unwrap(),
        )
    }

    /// Reconciles the view as stored now.
    async fn sync(&self, name: &str) {
        let obj: WorkspaceView = self.s.get(NS, name).unwrap();
        reconcile(Arc::new(obj), self.ctx.clone()).await.unwrap();
    }

    /// The next refresh: the clock one refresh interval on, then a sync.
    async fn refresh(&self, name: &str) {
        self.clock.advance(REFRESH);
        self.sync(name).await;
    }

    fn status(&self, name: &str) -> Value {
        let obj: WorkspaceView = self.s.get(NS, name).unwrap();
        serde_json::to_value(obj.status.unwrap()).unwrap()
    }

    /// (reason, note) of the events about `name`, oldest first.
    fn events(&self, name: &str) -> Vec<(String, String)> {
        let mut events = self.s.list::<Event>(Some(NS));
        events.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
        events
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    fn access_events(&self, name: &str) -> Vec<String> {
        self.events(name)
            .into_iter()
            .filter(|(reason, _)| reason == "AccessChanged")
            .map(|(_, note)| note)
            .collect()
    }

    /// workspace_access_inventory_changes_total for the view and `change`, if the series exists.
    fn counter(&self, name: &str, change: &str) -> Option<u64> {
        let prefix = format!(
            "workspace_access_inventory_changes_total{{namespace=\"{NS}\",name=\"{name}\",change=\"{change}\"}} "
        );
        self.ctx
            .metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str())?.parse().ok())
    }

    fn status_writes(&self) -> usize {
        self.s
            .writes()
            .iter()
            .filter(|r| r.path.ends_with("/status"))
            .count()
    }
}

fn fabric_spec(extra: Value) -> Value {
    let mut fabric = json!({
        "includeRoleAssignments": true,
        "azure": {"tenantId": "contoso.onmicrosoft.com",
                  "clientId": "11111111-1111-1111-1111-111111111111",
                  "clientSecretRef": {"name": "fabric-sp", "key": "clientSecret"}}
    });
    for (k, v) in extra.as_object().unwrap() {
        fabric[k] = v.clone();
    }
    json!({"refreshInterval": "10m", "fabric": fabric})
}

/// A Fabric fake whose workspaces and role assignments the test sets between syncs.
fn fabric_fake(workspaces: Answer<Vec<Workspace>>, roles: Roles) -> FakeClients {
    FakeClients {
        list_workspaces: Arc::new(move |_| answer(&workspaces)),
        role_assignments_of: Arc::new(move |ids| {
            let roles = roles.lock().unwrap();
            Ok(ids
                .iter()
                .map(|id| {
                    let list = roles
                        .iter()
                        .find(|(w, _)| w == id)
                        .map(|(_, l)| l.clone())
                        .unwrap_or_default();
                    RoleAssignments::Listed(list)
                })
                .collect())
        }),
        ..Default::default()
    }
}

/// The scenario for Fabric: a changed role assignment gives one event, one history
/// entry and a counter increase at the next refresh; an unchanged refresh writes nothing.
#[tokio::test]
async fn a_changed_fabric_role_assignment_is_an_event_a_history_entry_and_a_count() {
    let workspaces: Answer<Vec<Workspace>> = Arc::new(Mutex::new(Ok(vec![
        workspace("w1", "Finance"),
        workspace("w2", "Sales"),
    ])));
    let roles = Arc::new(Mutex::new(vec![
        (
            "w1".to_owned(),
            vec![
                assignment("alice", "User", "Viewer"),
                assignment("bob", "User", "Member"),
            ],
        ),
        ("w2".to_owned(), vec![assignment("carol", "Group", "Admin")]),
    ]));
    let e = env(fabric_fake(workspaces.clone(), roles.clone()));
    e.view("fabric", fabric_spec(json!({})));

    // The first inventory is the baseline: nothing is reported.
    e.sync("fabric").await;
    let st = e.status("fabric");
    assert_eq!(st["count"], 2);
    assert!(st.get("recentChanges").is_none(), "{st}");
    assert!(st["sourceDigest"].is_string());
    assert!(e.access_events("fabric").is_empty());
    assert_eq!(e.counter("fabric", "role_changed"), None);

    // Alice is made Admin of Finance.
    roles.lock().unwrap()[0].1[0].role = Some("Admin".into());
    e.s.clear_requests();
    e.refresh("fabric").await;
    assert_eq!(e.status_writes(), 1);
    let st = e.status("fabric");
    assert_eq!(
        st["recentChanges"],
        json!([{"time": "2026-11-23T10:10:00Z", "change": "RoleChanged", "itemId": "w1",
                "itemName": "Finance", "principalId": "alice", "principalType": "User",
                "principalName": "alice@contoso.com", "oldRole": "Viewer", "newRole": "Admin"}])
    );
    assert_eq!(st["lastSyncTime"], "2026-11-23T10:10:00Z");
    assert_eq!(
        e.access_events("fabric"),
        ["1 role changed on 1 workspace: alice@contoso.com Viewer -> Admin on Finance"]
    );
    assert_eq!(e.counter("fabric", "role_changed"), Some(1));
    assert_eq!(e.counter("fabric", "granted"), Some(0));
    assert_eq!(e.counter("fabric", "revoked"), Some(0));

    // An unchanged refresh: no write at all (no status, no event), nothing counted.
    e.s.clear_requests();
    e.refresh("fabric").await;
    assert!(e.s.writes().is_empty(), "{:?}", e.s.writes());
    assert_eq!(e.access_events("fabric").len(), 1);
    assert_eq!(e.counter("fabric", "role_changed"), Some(1));

    // Bob loses access, Dave gets it, and a workspace goes: one event for all, newest first in
    // the history.
    {
        let mut roles = roles.lock().unwrap();
        roles[0].1.retain(|a| a.principal.id != "bob");
        roles[0]
            .1
            .push(assignment("dave", "ServicePrincipal", "Contributor"));
    }
    *workspaces.lock().unwrap() = Ok(vec![workspace("w1", "Finance")]);
    e.refresh("fabric").await;
    let st = e.status("fabric");
    let history: Vec<(&str, &str)> = st["recentChanges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap(),
                c["principalId"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            ("Revoked", "bob"),
            ("Granted", "dave"),
            ("Removed", "-"),
            ("RoleChanged", "alice")
        ]
    );
    let notes = e.access_events("fabric");
    assert_eq!(notes.len(), 2);
    assert!(
        notes[1].starts_with("1 granted, 1 revoked on 1 workspace; 1 workspace removed: "),
        "{}",
        notes[1]
    );
    assert_eq!(e.counter("fabric", "granted"), Some(1));
    assert_eq!(e.counter("fabric", "revoked"), Some(1));
    assert_eq!(e.counter("fabric", "role_changed"), Some(1));
    // AccessChanged events are Normal events.
    let events = e.s.list::<Event>(Some(NS));
    assert!(
        events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("AccessChanged"))
            .all(|e| e.type_.as_deref() == Some("Normal"))
    );
}

/// The same for DataRobot: a new share is reported as granted.
#[tokio::test]
async fn a_changed_datarobot_share_is_an_event_a_history_entry_and_a_count() {
    let role = |id: &str, role: &str, type_: &str| SharedRole {
        id: id.into(),
        name: Some(format!("{id}@example.com")),
        role: Some(role.into()),
        share_recipient_type: Some(type_.into()),
    };
    let acls: Answer<Vec<NotebookAcl>> = Arc::new(Mutex::new(Ok(vec![NotebookAcl {
        notebook_id: "nb1".into(),
        roles: vec![role("u1", "OWNER", "user")],
    }])));
    let a = acls.clone();
    let e = env(FakeClients {
        shared_roles: Arc::new(move |_| {
            Ok(SharedRoles {
                notebooks: answer(&a)?,
                missing: vec![],
            })
        }),
        ..Default::default()
    });
    e.view(
        "dr",
        json!({"refreshInterval": "10m", "dataRobot": {"notebookIds": ["nb1"],
               "apiTokenRef": {"name": "dr", "key": "apiToken"}}}),
    );
    e.sync("dr").await;
    assert!(e.access_events("dr").is_empty());

    acls.lock().unwrap().as_mut().unwrap()[0]
        .roles
        .push(role("g7", "CONSUMER", "group"));
    e.refresh("dr").await;
    let st = e.status("dr");
    assert_eq!(
        st["recentChanges"],
        json!([{"time": "2026-11-23T10:10:00Z", "change": "Granted", "itemId": "nb1",
                "principalId": "g7", "principalType": "group", "principalName": "g7@example.com",
                "newRole": "CONSUMER"}])
    );
    assert_eq!(
        e.access_events("dr"),
        ["1 granted on 1 notebook: g7@example.com granted CONSUMER on nb1"]
    );
    assert_eq!(e.counter("dr", "granted"), Some(1));

    e.s.clear_requests();
    e.refresh("dr").await;
    assert!(e.s.writes().is_empty(), "{:?}", e.s.writes());
    assert_eq!(e.counter("dr", "granted"), Some(1));
}

/// A provider failing midway (a page of the listing) reports nothing: the last inventory
/// stays, and the next good sync is compared with it.
#[tokio::test]
async fn a_failed_sync_reports_no_changes_and_the_next_good_one_reports_them_once() {
    let workspaces: Answer<Vec<Workspace>> =
        Arc::new(Mutex::new(Ok(vec![workspace("w1", "Finance")])));
    let roles = Arc::new(Mutex::new(vec![(
        "w1".to_owned(),
        vec![
            assignment("alice", "User", "Admin"),
            assignment("bob", "User", "Viewer"),
        ],
    )]));
    let e = env(fabric_fake(workspaces.clone(), roles.clone()));
    e.view("fabric", fabric_spec(json!({})));
    e.sync("fabric").await;
    let good = e.status("fabric");

    // Bob is removed at the provider, but the listing fails on its second page.
    roles.lock().unwrap()[0].1.truncate(1);
    *workspaces.lock().unwrap() = Err(ProviderErrorKind::Unavailable);
    e.refresh("fabric").await;
    let st = e.status("fabric");
    assert_eq!(ready_of(&st).unwrap().0, "False");
    assert_eq!(
        st["workspaces"], good["workspaces"],
        "the last inventory stays"
    );
    assert!(st.get("recentChanges").is_none());
    assert!(e.access_events("fabric").is_empty());
    assert_eq!(e.counter("fabric", "revoked"), None);

    // The provider recovers: bob's revocation is reported once, against the last good list.
    *workspaces.lock().unwrap() = Ok(vec![workspace("w1", "Finance")]);
    e.refresh("fabric").await;
    let st = e.status("fabric");
    assert_eq!(ready_of(&st).unwrap().0, "True");
    assert_eq!(st["recentChanges"].as_array().unwrap().len(), 1);
    assert_eq!(st["recentChanges"][0]["change"], "Revoked");
    assert_eq!(st["recentChanges"][0]["principalId"], "bob");
    assert_eq!(e.access_events("fabric").len(), 1);
    assert_eq!(e.counter("fabric", "revoked"), Some(1));
}

/// A status write that fails publishes no event and counts nothing: the retried sync finds the
/// change again and reports it once.
#[tokio::test]
async fn a_failed_status_write_reports_nothing_twice() {
    let workspaces: Answer<Vec<Workspace>> =
        Arc::new(Mutex::new(Ok(vec![workspace("w1", "Finance")])));
    let roles = Arc::new(Mutex::new(vec![(
        "w1".to_owned(),
        vec![assignment("alice", "User", "Viewer")],
    )]));
    let e = env(fabric_fake(workspaces, roles.clone()));
    e.view("fabric", fabric_spec(json!({})));
    e.sync("fabric").await;

    roles.lock().unwrap()[0].1[0].role = Some("Admin".into());
    e.clock.advance(REFRESH);
    e.s.fail_next(Fault::new(500).method("PATCH").path_contains("/status"));
    let obj: WorkspaceView = e.s.get(NS, "fabric").unwrap();
    let failed = reconcile(Arc::new(obj), e.ctx.clone()).await;
    assert!(failed.is_err(), "the status write failed");
    assert!(e.access_events("fabric").is_empty());
    assert_eq!(e.counter("fabric", "role_changed"), None);
    assert!(e.status("fabric").get("recentChanges").is_none());

    e.sync("fabric").await;
    assert_eq!(e.access_events("fabric").len(), 1);
    assert_eq!(e.counter("fabric", "role_changed"), Some(1));
    assert_eq!(
        e.status("fabric")["recentChanges"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// Changing what the view lists (here: principalTypes) is a new baseline, not a wave of
/// revocations; the history so far stays.
#[tokio::test]
async fn a_changed_filter_is_a_new_baseline_not_revocations() {
    let workspaces: Answer<Vec<Workspace>> =
        Arc::new(Mutex::new(Ok(vec![workspace("w1", "Finance")])));
    let roles = Arc::new(Mutex::new(vec![(
        "w1".to_owned(),
        vec![
            assignment("alice", "User", "Viewer"),
            assignment("app", "ServicePrincipal", "Admin"),
            assignment("profile", "ServicePrincipalProfile", "Member"),
        ],
    )]));
    let e = env(fabric_fake(workspaces, roles.clone()));
    e.view("fabric", fabric_spec(json!({})));
    e.sync("fabric").await;
    roles.lock().unwrap()[0].1[0].role = Some("Member".into());
    e.refresh("fabric").await;
    assert_eq!(e.access_events("fabric").len(), 1);
    let digest = e.status("fabric")["sourceDigest"].clone();

    // Only users and groups from now on: the service principals leave the inventory unreported.
    e.s.modify::<WorkspaceView>(NS, "fabric", |v| {
        v["spec"]["fabric"]["principalTypes"] = json!(["User", "Group"])
    });
    e.sync("fabric").await;
    let st = e.status("fabric");
    let listed: Vec<&str> = st["workspaces"][0]["roleAssignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["principalId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["alice"]);
    assert_ne!(st["sourceDigest"], digest);
    assert_eq!(st["recentChanges"].as_array().unwrap().len(), 1, "kept");
    assert_eq!(e.access_events("fabric").len(), 1, "no new event");
    assert_eq!(e.counter("fabric", "revoked"), Some(0));

    // Changes under the new filter are reported again.
    roles.lock().unwrap()[0]
        .1
        .push(assignment("grp", "Group", "Viewer"));
    e.refresh("fabric").await;
    assert_eq!(e.access_events("fabric").len(), 2);
    assert_eq!(e.counter("fabric", "granted"), Some(1));
    assert_eq!(e.status("fabric")["recentChanges"][0]["principalId"], "grp");

    // historyLimit: only the newest are kept.
    e.s.modify::<WorkspaceView>(NS, "fabric", |v| v["spec"]["historyLimit"] = json!(1));
    e.sync("fabric").await;
    let st = e.status("fabric");
    assert_eq!(st["recentChanges"].as_array().unwrap().len(), 1);
    assert_eq!(st["recentChanges"][0]["principalId"], "grp");
}
