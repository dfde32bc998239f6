//! API-server faults: 409 conflicts on Secret and status writes are retried for every kind,
//! and a watch that restarts (the API server going away and coming back, with or without its
//! event history, with failing list and watch requests meanwhile) loses nothing that changed
//! during the outage.

use super::fake_emr::FakeEmr;
use super::stub::Stub;
use super::*;
use crate::support::fake_api::{FakeApiServer, Fault};
use workspace_access_operator::controller::SystemClock;

/// Providers for every kind, on loopback.
struct Providers {
    azure: Stub,
    emr: FakeEmr,
    emr_stub: Stub,
    datarobot: Stub,
    fabric: Stub,
}

impl Providers {
    async fn start(clock: Arc<dyn Clock>) -> Self {
        let (emr, emr_stub) = emr_behind_stub(clock).await;
        Self {
            azure: azure_stub().await,
            emr,
            emr_stub,
            datarobot: datarobot_stub(Arc::default()).await,
            fabric: fabric_stub(Arc::default()).await,
        }
    }

    fn calls(&self) -> usize {
        [&self.azure, &self.emr_stub, &self.datarobot, &self.fabric]
            .iter()
            .map(|s| s.calls().len())
            .sum()
    }
}

fn writes_answered(s: &FakeApiServer, status: u16, fragment: &str) -> usize {
    s.requests()
        .iter()
        .filter(|r| r.is_write() && r.status == status && r.path.contains(fragment))
        .count()
}

/// One resource of one kind synced with three conflicts in a row (one fewer than the attempts
/// a write gets) on every Secret and status write.
async fn synced_through_conflicts(plural: &'static str, name: &'static str, calls: usize) {
    let clock = Arc::new(ManualClock::new(t0()));
    let p = Providers::start(clock.clone()).await;
    let s = crd_server();
    insert_credentials(&s);
    match name {
        "ntr" => drop(s.insert(&notebook(name, &p.azure))),
        "ref" => {
            p.emr.add_token(
                WS,
                LC,
                "lctk-ref",
                "shared",
                "reference-content-0001",
                Duration::from_secs(7 * 24 * 3600),
            );
            s.insert(&livy(
                name,
                &p.emr_stub,
                json!({"tokenId": "lctk-ref"}),
                true,
            ));
        }
        "managed" => drop(s.insert(&livy(name, &p.emr_stub, managed(), true))),
        "fabric" => drop(s.insert(&fabric_view(name, &p.fabric))),
        _ => drop(s.insert(&datarobot_view(name, &p.datarobot))),
    }
    let ctx = Arc::new(context_on(
        &s,
        settings(),
        http_options(RateLimits::default()),
        clock,
    ));
    for target in ["/secrets/", "/status"] {
        s.fail_next(
            Fault::new(409)
                .method("PATCH")
                .path_contains(target)
                .times(3),
        );
    }
    reconcile_kind(&s, &ctx, plural, name)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        is_ready(&s, plural, name),
        "{name}: {}",
        status_of(&s, plural, name)
    );
    assert_eq!(writes_answered(&s, 409, "/status"), 3, "{name}");
    if plural != "workspaceviews" {
        assert_eq!(writes_answered(&s, 409, "/secrets/"), 3, "{name}");
        assert!(s.get::<Secret>(NS, name).is_some(), "{name}: no Secret");
    }
    assert_eq!(
        p.calls(),
        calls,
        "{name}: a conflict repeats the write, not the provider calls"
    );
    assert_eq!(failures(&s, &ctx, plural, name), 0, "{name}");
    assert_eq!(p.emr.bad_signatures(), 0);
}

#[tokio::test]
async fn conflicts_on_secret_and_status_writes_are_retried_for_every_kind() {
    futures::future::join_all([
        // Entra, ARM.
        synced_through_conflicts("notebooktokenrequests", "ntr", 2),
        // Get.
        synced_through_conflicts("livytokens", "ref", 1),
        // List, Create, Get.
        synced_through_conflicts("livytokens", "managed", 3),
        // Entra, two pages.
        synced_through_conflicts("workspaceviews", "fabric", 3),
        // Two pages, one bulk call.
        synced_through_conflicts("workspaceviews", "datarobot", 3),
    ])
    .await;
}

// ---------------------------------------------------------------------------------------------
// Watch restarts

/// Controllers with a short backoff and timeout.
async fn start_controllers(s: &FakeApiServer) -> Running {
    Running::start(
        s,
        Settings {
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(1),
            ..settings()
        },
        HttpOptions {
            timeout: Duration::from_secs(2),
            ..http_options(RateLimits::default())
        },
        4,
    )
    .await
}

fn generation_observed(s: &FakeApiServer, plural: &str, name: &str, generation: i64) -> bool {
    let st = status_of(s, plural, name);
    st["observedGeneration"] == generation && ready_of(&st).is_some_and(|r| r.0 == "True")
}

/// The outage: every watch stream closes, and the next `failing` list and watch requests of
/// the operator's kinds and its Secrets fail while the test changes things.
fn outage(s: &FakeApiServer, expire_history: bool, failing: usize) {
    for what in [
        "v1alpha1/notebooktokenrequests?",
        "v1alpha1/livytokens?",
        "v1alpha1/workspaceviews?",
        "/api/v1/secrets?",
    ] {
        s.fail_next(
            Fault::new(503)
                .method("GET")
                .path_contains(what)
                .times(failing),
        );
    }
    if expire_history {
        s.expire_watch_history();
    } else {
        s.disconnect_watches();
    }
}

async fn changes_during_an_outage_are_reconciled_afterwards(expire_history: bool) {
    let s = crd_server();
    insert_credentials(&s);
    let p = Providers::start(Arc::new(SystemClock)).await;
    let run = start_controllers(&s).await;
    s.insert(&notebook("a", &p.azure));
    s.insert(&livy("doomed", &p.emr_stub, managed(), false));
    s.insert(&datarobot_view("view", &p.datarobot));
    eventually("everything synced", || {
        is_ready(&s, "notebooktokenrequests", "a")
            && is_ready(&s, "livytokens", "doomed")
            && is_ready(&s, "workspaceviews", "view")
    })
    .await;
    assert_eq!(p.emr.tokens().len(), 1);
    let secret_a = secret_snapshot(&s, "a").unwrap();
    let uid_a = s.get::<Secret>(NS, "a").unwrap().metadata.uid;

    outage(&s, expire_history, 1);
    // While the operator can't watch: a new resource of each token kind, a spec change, an
    // owned Secret deleted by someone, a resource with a finalizer deleted.
    s.insert(&notebook("b", &p.azure));
    s.insert(&livy("new", &p.emr_stub, managed(), false));
    s.modify::<WorkspaceView>(NS, "view", |o| o["spec"]["maxItems"] = json!(100));
    s.delete_object::<Secret>(NS, "a");
    s.delete_object::<LivyToken>(NS, "doomed");

    eventually("the new notebook token request synced", || {
        is_ready(&s, "notebooktokenrequests", "b") && s.get::<Secret>(NS, "b").is_some()
    })
    .await;
    eventually("the new Livy token synced", || {
        is_ready(&s, "livytokens", "new") && s.get::<Secret>(NS, "new").is_some()
    })
    .await;
    eventually("the spec change observed", || {
        generation_observed(&s, "workspaceviews", "view", 2)
    })
    .await;
    // With the token it held: the operator still holds it.
    eventually("the deleted Secret written again", || {
        s.get::<Secret>(NS, "a")
            .is_some_and(|now| now.metadata.uid != uid_a)
            && secret_snapshot(&s, "a").is_some_and(|now| now["data"] == secret_a["data"])
    })
    .await;
    eventually(
        "the deleted resource's token deleted, and the resource gone",
        || s.get::<LivyToken>(NS, "doomed").is_none() && p.emr.tokens().len() == 1,
    )
    .await;
    let requests = s.requests();
    let failed = requests.iter().filter(|r| r.status == 503).count();
    assert!(
        failed >= 4,
        "the outage failed {failed} list/watch requests"
    );
    run.stop().await;
}

#[tokio::test]
async fn changes_while_watches_are_down_are_reconciled_when_they_resume() {
    changes_during_an_outage_are_reconciled_afterwards(false).await;
}

#[tokio::test]
async fn changes_while_the_api_server_lost_its_history_are_reconciled_after_a_relist() {
    changes_during_an_outage_are_reconciled_afterwards(true).await;
}

// ---------------------------------------------------------------------------------------------
// Namespace deletion

/// While a namespace is being deleted its Secrets may go before its resources. The operator
/// then makes no provider call, writes nothing and reports no failure: nothing new can be
/// created there, and the resources are about to go too. (Found by the chaos suite on a real
/// API server: every deleted Secret cost a minted token, a refused create, a failure status
/// and a refused event.)
#[tokio::test]
async fn a_namespace_being_deleted_gets_no_new_tokens_writes_or_failures() {
    let azure = azure_stub().await;
    let s = crd_server();
    insert_credentials(&s);
    let names = ["ntr-a", "ntr-b", "ntr-c"];
    for n in names {
        s.insert(&notebook(n, &azure));
    }
    let run = start_controllers(&s).await;
    run.until("Secrets written", Duration::from_secs(10), || {
        names.iter().all(|n| s.get::<Secret>(NS, n).is_some())
    })
    .await;
    let calls = azure.calls().len();
    let statuses: Vec<Value> = names
        .iter()
        .map(|n| status_of(&s, "notebooktokenrequests", n))
        .collect();
    s.clear_requests();

    s.terminate_namespace(NS);
    // Let the Namespace watch see it, then the namespace controller's work begins.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in names {
        s.delete_object::<Secret>(NS, n);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(azure.calls().len(), calls, "no provider call");
    let writes: Vec<String> = s
        .requests()
        .iter()
        .filter(|r| r.is_write())
        .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    let after: Vec<Value> = names
        .iter()
        .map(|n| status_of(&s, "notebooktokenrequests", n))
        .collect();
    assert_eq!(after, statuses, "no failure reported");
    run.stop().await;
}

/// Without a watch of Namespaces (`--cluster-credentials=false`), the API server's refusal
/// (403, cause NamespaceTerminating) is what tells: no failure status and no event follow it.
#[tokio::test]
async fn a_refusal_for_a_terminating_namespace_is_not_reported_as_a_failure() {
    let azure = azure_stub().await;
    let s = crd_server();
    insert_credentials(&s);
    let obj = s.insert(&notebook("ntr-a", &azure));
    let ctx = Arc::new(context_on(
        &s,
        settings(),
        http_options(RateLimits::default()),
        Arc::new(SystemClock),
    ));
    workspace_access_operator::controller::driver::reconcile(Arc::new(obj), ctx.clone())
        .await
        .unwrap();
    let before = status_of(&s, "notebooktokenrequests", "ntr-a");
    s.terminate_namespace(NS);
    s.delete_object::<Secret>(NS, "ntr-a");
    s.clear_requests();
    let obj: NotebookTokenRequest = s.get(NS, "ntr-a").unwrap();
    let action = workspace_access_operator::controller::driver::reconcile(Arc::new(obj), ctx)
        .await
        .unwrap();
    assert!(
        format!("{action:?}").contains("requeue_after: None"),
        "{action:?}"
    );
    let writes: Vec<(String, String, u16)> = s
        .requests()
        .iter()
        .filter(|r| r.is_write())
        .map(|r| (r.method.clone(), r.path.clone(), r.status))
        .collect();
    assert_eq!(writes.len(), 1, "only the refused Secret write: {writes:?}");
    assert_eq!(writes[0].2, 403);
    assert!(writes[0].1.contains("/secrets/"), "{writes:?}");
    assert_eq!(status_of(&s, "notebooktokenrequests", "ntr-a"), before);
}
