//! The kubectl plugin against the in-memory API server (what `status`, `renew` and
//! `inventory` find, ask and refuse), and the binary's command line: its errors without a
//! cluster and its help.

use crate::support::fake_api::FakeApiServer;
use crate::support::fake_clients::{FakeClients, Handle};
use crate::support::*;
use serde_json::json;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use workspace_access_operator::api::common::RENEW_REQUESTED_AT_ANNOTATION;
use workspace_access_operator::api::{NotebookTokenRequest, WorkspaceView};
use workspace_access_operator::controller::Settings;
use workspace_access_operator::controller::run::{ControllerOptions, run_controllers};
use workspace_access_operator::plugin::{
    Connection, PluginError, inventory, kind_named, parse_target, renew, status,
};
use workspace_access_operator::providers::azure_ml::NotebookAccessToken;
use workspace_access_operator::redact::SecretString;

fn ntr(ns: &str, name: &str) -> NotebookTokenRequest {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"subscriptionId": "00000000-1111-2222-3333-444444444444",
                 "resourceGroup": "rg", "workspaceName": "okws",
                 "azure": {"tenantId": "contoso.onmicrosoft.com",
                           "clientId": "11111111-1111-1111-1111-111111111111",
                           "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"}}}
    }))
    .unwrap()
}

fn with_status(mut o: NotebookTokenRequest, expires: &str) -> NotebookTokenRequest {
    o.status = Some(
        serde_json::from_value(json!({
            "expiresAt": expires, "renewAt": expires, "secretName": o.metadata.name,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Synced",
                            "message": "ok", "observedGeneration": 1,
                            "lastTransitionTime": "2026-11-23T09:00:00Z"}]
        }))
        .unwrap(),
    );
    o
}

fn view(ns: &str, name: &str) -> WorkspaceView {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"dataRobot": {"notebookIds": ["nb1"], "apiTokenRef": {"name": "dr", "key": "k"}}}
    }))
    .unwrap()
}

fn conn(s: &FakeApiServer) -> Connection {
    Connection::from_client(s.client(), "team-a")
}

#[tokio::test]
async fn status_lists_every_kind_in_a_namespace_or_all_of_them() {
    let s = server();
    s.insert(&with_status(ntr("team-a", "later"), "2026-11-24T10:00:00Z"));
    s.insert(&with_status(ntr("team-b", "soon"), "2026-11-23T10:30:00Z"));
    s.insert(&ntr("team-a", "new"));
    s.insert(&view("team-a", "dr"));
    let cc: workspace_access_operator::api::ClusterCredential = serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "ClusterCredential",
        "metadata": {"name": "dr-prod"},
        "spec": {"dataRobot": {"apiTokenRef": {"name": "dr", "key": "apiToken"}}}
    }))
    .unwrap();
    s.insert(&cc);
    let all = status::collect(&conn(&s), None).await.unwrap();
    let names: Vec<(Option<&str>, &str)> = all
        .rows
        .iter()
        .map(|r| (r.namespace.as_deref(), r.name.as_str()))
        .collect();
    // All namespaces: the cluster-scoped ClusterCredentials too, after the namespaced kinds.
    assert_eq!(
        names,
        [
            (Some("team-b"), "soon"),
            (Some("team-a"), "later"),
            (Some("team-a"), "new"),
            (Some("team-a"), "dr"),
            (None, "dr-prod"),
        ]
    );
    assert!(all.notes.is_empty(), "{:?}", all.notes);
    let team_a = status::collect(&conn(&s), Some("team-a")).await.unwrap();
    assert_eq!(team_a.rows.len(), 3);
    assert!(
        team_a
            .rows
            .iter()
            .all(|r| r.namespace.as_deref() == Some("team-a"))
    );
    // Namespaced requests only: a user with a Role in one namespace can run it.
    assert!(
        s.requests()
            .iter()
            .filter(|r| r.method == "GET")
            .rev()
            .take(3)
            .all(|r| r.path.contains("/namespaces/team-a/")),
        "{:?}",
        s.requests()
    );
}

#[tokio::test]
async fn status_says_when_the_crds_are_missing() {
    let s = FakeApiServer::new();
    let err = status::collect(&conn(&s), None).await.unwrap_err();
    assert!(matches!(err, PluginError::NotServed { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the cluster does not serve notebooktokenrequests.workspaceaccess.io/v1alpha1; install \
         the CRDs (kubectl apply -f crds/)"
    );
}

#[tokio::test]
async fn status_skips_a_kind_it_may_not_list_and_says_so() {
    use crate::support::fake_api::Fault;
    let s = server();
    s.insert(&with_status(ntr("team-a", "ml"), "2026-11-24T10:00:00Z"));
    s.fail_next(
        Fault::new(403)
            .method("GET")
            .path_contains("/livytokens")
            .message("livytokens.workspaceaccess.io is forbidden: User \"ann\" cannot list"),
    );
    let found = status::collect(&conn(&s), Some("team-a")).await.unwrap();
    assert_eq!(found.rows.len(), 1);
    assert_eq!(found.notes.len(), 1);
    assert!(
        found.notes[0]
            .starts_with("LivyToken: forbidden: livytokens.workspaceaccess.io is forbidden"),
        "{:?}",
        found.notes
    );
}

#[tokio::test]
async fn renew_sets_the_annotation_and_names_a_missing_resource() {
    let s = server();
    s.insert(&ntr("team-a", "ml"));
    let c = conn(&s);
    let (kind, name) = parse_target("ntr/ml").unwrap();
    renew::request(&c, kind, &name, "team-a", "2026-11-23T10:00:00.123Z")
        .await
        .unwrap();
    let o: NotebookTokenRequest = s.get("team-a", "ml").unwrap();
    assert_eq!(
        o.metadata.annotations.unwrap()[RENEW_REQUESTED_AT_ANNOTATION],
        "2026-11-23T10:00:00.123Z"
    );
    assert_eq!(o.metadata.generation, Some(1), "no spec change");
    let patch = s.writes().into_iter().last().unwrap();
    assert_eq!(patch.method, "PATCH");
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        patch.query_param("fieldManager"),
        Some("kubectl-workspaceaccess")
    );

    let err = renew::request(&c, kind, "nope", "team-a", "x")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "notebooktokenrequest \"nope\" not found in namespace \"team-a\""
    );
    let err = renew::request(&c, kind, "ml", "team-b", "x")
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn renew_wait_returns_once_the_operator_handled_it() {
    let s = server();
    let fake = Arc::new(FakeClients {
        notebook_access_token: Arc::new(|_| {
            Ok(NotebookAccessToken {
                access_token: SecretString::new("t"),
                refresh_token: None,
                expires_in: Duration::from_secs(3600),
                notebook_resource_id: None,
                host_name: None,
                public_dns: None,
                token_type: None,
                scope: None,
                request_id: None,
            })
        }),
        ..Default::default()
    });
    let ctx = builder(&s, Settings::default())
        .clients(Arc::new(Handle(fake.clone())))
        .build();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(run_controllers(
        ctx,
        ControllerOptions::new(2),
        ready.clone(),
        shutdown.clone(),
    ));
    eventually("controllers ready", || ready.load(Ordering::SeqCst)).await;
    s.insert(&ntr("team-a", "ml"));
    eventually("first token", || fake.count("notebook_access_token") == 1).await;

    let c = conn(&s);
    let (kind, name) = parse_target("ntr/ml").unwrap();
    let value = renew::request_value(jiff::Timestamp::now());
    renew::request(&c, kind, &name, "team-a", &value)
        .await
        .unwrap();
    let handled = renew::wait(
        &c,
        kind,
        &name,
        "team-a",
        &value,
        Duration::from_secs(10),
        Duration::from_millis(20),
    )
    .await
    .unwrap();
    assert_eq!(
        (handled.ready.as_str(), handled.reason.as_str()),
        ("True", "Synced")
    );
    assert_eq!(fake.count("notebook_access_token"), 2, "one provider call");

    // Nobody handles a request for a resource in an unwatched state: the wait times out and
    // says what the resource reports.
    shutdown.cancel();
    task.await.unwrap().unwrap();
    renew::request(&c, kind, &name, "team-a", "again")
        .await
        .unwrap();
    let err = renew::wait(
        &c,
        kind,
        &name,
        "team-a",
        "again",
        Duration::from_millis(200),
        Duration::from_millis(20),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("did not handle the renew request within"),
        "{text}"
    );
    assert!(text.contains("Ready=True Synced"), "{text}");
}

#[tokio::test]
async fn inventory_names_a_missing_view_and_one_not_synced_yet() {
    let s = server();
    s.insert(&view("team-a", "dr"));
    let c = conn(&s);
    let err = inventory::get(&c, "team-a", "nope").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "workspaceview \"nope\" not found in namespace \"team-a\""
    );
    let err = inventory::get(&c, "team-a", "dr").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("wsv/dr in namespace \"team-a\" has no inventory yet"),
        "{err}"
    );
    s.modify::<WorkspaceView>("team-a", "dr", |o| {
        o["status"] = json!({"provider": "DataRobot", "count": 1,
            "notebooks": [{"notebookId": "nb1", "roles": [
                {"id": "u1", "name": "ann@example.com", "role": "OWNER", "shareRecipientType": "user"}]}]});
    });
    let v = inventory::get(&c, "team-a", "dr").await.unwrap();
    let rows = inventory::rows(v.status.as_ref().unwrap());
    assert_eq!(
        inventory::csv(&rows),
        "provider,itemType,itemId,itemName,principalId,principalType,principalName,role\n\
         DataRobot,Notebook,nb1,,u1,user,ann@example.com,OWNER\n"
    );
    // ClusterCredentials are a kind of the plugin (status -A lists them), with nothing to
    // renew.
    let ccred = kind_named("ccred").unwrap();
    assert!(!ccred.namespaced && !ccred.renewable);
    let err = workspace_access_operator::plugin::renew::request(&c, ccred, "x", "", "now")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a ClusterCredential has no token or inventory to renew"
    );
}

// ------------------------------------------------------------------------------------------
// The binary

fn plugin(args: &[&str], kubeconfig: Option<&std::path::Path>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubectl-workspaceaccess"));
    cmd.args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT");
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        None => cmd.env("KUBECONFIG", "/nonexistent/kubeconfig"),
    };
    let out = cmd.env("HOME", "/nonexistent").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A kubeconfig whose API server is a loopback port nobody listens on.
fn unreachable_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    \
             server: http://127.0.0.1:{port}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, \
             namespace: team-a}}\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn the_binary_says_there_is_no_cluster_and_exits_non_zero() {
    let (code, out, err) = plugin(&["status"], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty());
    assert!(err.starts_with("error: no cluster to talk to:"), "{err}");
    assert!(err.contains("set KUBECONFIG or pass --kubeconfig"), "{err}");

    let dir = std::env::temp_dir().join(format!("wao-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = unreachable_kubeconfig(&dir);
    for args in [
        vec!["status", "-A"],
        vec!["renew", "ntr/ml"],
        vec!["inventory", "wsv/fabric-all", "-o", "csv"],
    ] {
        let (code, out, err) = plugin(&args, Some(&kubeconfig));
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(
            err.starts_with("error: can't reach the API server at http://127.0.0.1:"),
            "{args:?}: {err}"
        );
    }
    let given = dir.join("missing");
    let (code, _, err) = plugin(
        &["--kubeconfig", given.to_str().unwrap(), "status"],
        Some(&kubeconfig),
    );
    assert_eq!(code, 1);
    assert!(err.contains("no cluster to talk to"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_binary_checks_its_arguments_before_the_cluster() {
    for (args, says) in [
        (vec!["renew", "ml"], "name the resource as KIND/NAME"),
        (vec!["renew", "secret/ml"], "unknown kind \"secret\""),
        (
            vec!["inventory", "ntr/ml"],
            "inventory shows WorkspaceViews",
        ),
    ] {
        let (code, _, err) = plugin(&args, None);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Usage errors of the command line itself (clap) exit 2.
    for args in [
        vec!["status", "-n", "a", "-A"],
        vec!["status", "-o", "yaml"],
        vec!["renew"],
        vec!["inventory", "wsv/x", "-o", "xml"],
    ] {
        let (code, _, err) = plugin(&args, None);
        assert_eq!(code, 2, "{args:?}: {err}");
    }
}

#[test]
fn every_subcommand_has_help() {
    let (code, out, _) = plugin(&["--help"], None);
    assert_eq!(code, 0);
    for word in ["status", "renew", "inventory", "--kubeconfig", "--context"] {
        assert!(out.contains(word), "{word}: {out}");
    }
    for (sub, words) in [
        (
            "status",
            vec![
                "--all-namespaces",
                "--namespace",
                "--output",
                "soonest expiry first",
            ],
        ),
        (
            "renew",
            vec!["KIND/NAME", "--wait", "--timeout", "renew-requested-at"],
        ),
        ("inventory", vec!["wsv/NAME", "csv", "access review"]),
    ] {
        let (code, out, _) = plugin(&[sub, "--help"], None);
        assert_eq!(code, 0, "{sub}");
        assert!(
            out.contains("Usage: kubectl workspaceaccess"),
            "{sub}: {out}"
        );
        for w in words {
            assert!(out.contains(w), "{sub}: {w}: {out}");
        }
    }
}
