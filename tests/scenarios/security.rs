//! Security properties, end to end against the in-memory API server and mock providers:
//!
//! - credentials are read only from the resource's own namespace, whatever a reference says;
//! - a ClusterCredential reaches only Secrets of the credential namespace, and only the
//!   namespaces it allows may use it (whatever its provider);
//! - the operator pod's identity is usable only in allowed namespaces, for every kind (by the
//!   flag inline, by its allowedNamespaces through a ClusterCredential);
//! - one resource the operator can't read doesn't stop the others of its kind;
//! - a full run of all three controllers (successes, failures, a deletion, events, leader
//!   election) leaks no secret value into logs (TRACE for the operator, DEBUG for kube),
//!   events, conditions, status, metrics or API requests, and uses exactly the RBAC that
//!   `deploy/rbac.yaml` grants;
//! - `deploy/deployment.yaml` passes the restricted Pod Security Standard.

use crate::livy::fake_emr::FakeEmr;
use crate::support::fake_api::{FakeApiServer, RecordedRequest};
use crate::support::*;
use httpmock::prelude::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PodSpec, Secret};
use k8s_openapi::api::events::v1::Event;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use workspace_access_operator::api::{
    ClusterCredential, LivyToken, NotebookTokenRequest, WorkspaceView,
};
use workspace_access_operator::controller::credentials::PodIdentityPolicy;
use workspace_access_operator::controller::driver::reconcile;
use workspace_access_operator::controller::livy::FINALIZER;
use workspace_access_operator::controller::run::{ControllerOptions, run_controllers};
use workspace_access_operator::controller::{Context, Settings};
use workspace_access_operator::leader::{LeaseSettings, run_as_leader};
use workspace_access_operator::metrics::Metrics;
use workspace_access_operator::providers::auth::entra::EntraTokens;
use workspace_access_operator::providers::auth::sts::RrsaCredentials;
use workspace_access_operator::providers::azure_cloud::FABRIC_SCOPE;
use workspace_access_operator::providers::endpoint::EndpointPolicy;
use workspace_access_operator::providers::http::{HttpClient, HttpOptions};

const TENANT: &str = "00000000-0000-0000-0000-000000000000";
const CLIENT: &str = "11111111-1111-1111-1111-111111111111";

fn loopback() -> EndpointPolicy {
    EndpointPolicy::new(vec!["127.0.0.1".parse().unwrap()])
}

fn ntr(ns: &str, name: &str, spec: Value) -> NotebookTokenRequest {
    let mut full = json!({
        "subscriptionId": "00000000-1111-2222-3333-444444444444",
        "resourceGroup": "rg", "workspaceName": "okws",
        "azure": {"tenantId": TENANT, "clientId": CLIENT,
                  "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"}},
    });
    merge(&mut full, spec);
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "NotebookTokenRequest",
        "metadata": {"name": name, "namespace": ns}, "spec": full
    }))
    .unwrap()
}

fn livy(ns: &str, name: &str, spec: Value) -> LivyToken {
    let mut full = json!({
        "regionId": "cn-hangzhou", "workspaceId": "w-1", "livyComputeId": "lc-1",
        "tokenId": "lctk-1", "alibaba": {"accessKeyRef": {"name": "ali-ak"}},
    });
    merge(&mut full, spec);
    // The finalizer is already there, as after the first reconciliation.
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "LivyToken",
        "metadata": {"name": name, "namespace": ns, "finalizers": [FINALIZER]}, "spec": full
    }))
    .unwrap()
}

fn wsv(ns: &str, name: &str, spec: Value) -> WorkspaceView {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "WorkspaceView",
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }))
    .unwrap()
}

fn cluster_credential(name: &str, spec: Value) -> ClusterCredential {
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "ClusterCredential",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

/// Merges `patch` into `base` (objects recursively; `null` removes).
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p,
    }
}

fn fabric_spec(azure: Value) -> Value {
    let mut a = json!({"tenantId": TENANT, "clientId": CLIENT,
                       "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"}});
    merge(&mut a, azure);
    json!({"fabric": {"azure": a}})
}

/// (reason, message) of the Ready condition of a stored resource.
fn ready<K>(s: &FakeApiServer, ns: &str, name: &str) -> Option<(String, String)>
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + serde::Serialize,
{
    let obj: K = s.get(ns, name)?;
    let v = serde_json::to_value(&obj).ok()?;
    ready_of(&v["status"]).map(|(_, r, m)| (r, m))
}

fn secret_requests(s: &FakeApiServer) -> Vec<RecordedRequest> {
    s.requests()
        .into_iter()
        .filter(|r| r.path.contains("/secrets"))
        .collect()
}

// ------------------------------------------------------------------------------------------
// Credentials stay in the resource's namespace

/// A reference has a name and a key, and nothing else: no field of any spec can name a
/// namespace. The one field that names namespaces is a ClusterCredential's
/// `allowedNamespaces` (who may use it); its Secret references can't name one either.
#[test]
fn no_spec_field_can_name_a_namespace() {
    fn walk(path: &str, s: &Value, out: &mut Vec<String>) {
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                if k.to_ascii_lowercase().contains("namespace") {
                    out.push(format!("{path}.{k}"));
                }
                walk(&format!("{path}.{k}"), v, out);
            }
        }
        if let Some(items) = s.get("items") {
            walk(path, items, out);
        }
    }
    let mut found = vec![];
    for crd in workspace_access_operator::api::crds() {
        let v = crd.spec.versions[0].schema.clone().unwrap();
        let schema = serde_json::to_value(v.open_api_v3_schema.unwrap()).unwrap();
        walk(
            &crd.spec.names.kind,
            &schema["properties"]["spec"],
            &mut found,
        );
    }
    assert_eq!(found, ["ClusterCredential.allowedNamespaces"]);
}

/// For every kind and every credential reference: a Secret of that name in another namespace
/// is invisible, and a name that tries to leave the namespace in the request path is refused
/// before any request.
#[tokio::test]
async fn credentials_are_read_only_from_the_resources_namespace() {
    let s = server();
    // The credentials exist, with every key, but only in namespace "other".
    s.insert(&secret(
        "other",
        "creds",
        &[
            ("clientSecret", "other-ns-secret"),
            ("accessKeyId", "id"),
            ("accessKeySecret", "other-ns-ak"),
            ("apiToken", "other-ns-token"),
        ],
    ));
    let (ctx, _) = context(
        &s,
        Settings {
            endpoint_policy: loopback(),
            ..Settings::default()
        },
    );
    let creds = |name: &str| json!({"name": name, "key": "clientSecret"});
    let hostile = [
        "../other/secrets/creds",
        "../../namespaces/other/secrets/creds",
        "creds/../../other/secrets/creds",
        "..",
        "creds?fieldSelector=metadata.namespace%3Dother",
        "creds#x",
        "%2e%2e",
        "Creds",
    ];
    type SpecFor = Box<dyn Fn(&str) -> Value>;
    let cases: Vec<(&str, SpecFor)> = vec![
        (
            "NotebookTokenRequest",
            Box::new(move |n| json!({"azure": {"clientSecretRef": creds(n)}})),
        ),
        (
            "LivyToken",
            Box::new(|n| json!({"alibaba": {"accessKeyRef": {"name": n}}})),
        ),
        (
            "WorkspaceView/fabric",
            Box::new(move |n| fabric_spec(json!({"clientSecretRef": creds(n)}))),
        ),
        (
            "WorkspaceView/dataRobot",
            Box::new(|n| {
                json!({"dataRobot": {"notebookIds": ["nb1"],
                                     "apiTokenRef": {"name": n, "key": "apiToken"}}})
            }),
        ),
    ];
    let mut n = 0;
    for (kind, spec) in &cases {
        for name in std::iter::once("creds").chain(hostile) {
            n += 1;
            let res = format!("r{n}");
            s.clear_requests();
            let (reason, message) = match *kind {
                "NotebookTokenRequest" => {
                    let o = s.insert(&ntr("team-a", &res, spec(name)));
                    reconcile(Arc::new(o), ctx.clone()).await.unwrap();
                    ready::<NotebookTokenRequest>(&s, "team-a", &res)
                }
                "LivyToken" => {
                    let o = s.insert(&livy("team-a", &res, spec(name)));
                    reconcile(Arc::new(o), ctx.clone()).await.unwrap();
                    ready::<LivyToken>(&s, "team-a", &res)
                }
                _ => {
                    let o = s.insert(&wsv("team-a", &res, spec(name)));
                    reconcile(Arc::new(o), ctx.clone()).await.unwrap();
                    ready::<WorkspaceView>(&s, "team-a", &res)
                }
            }
            .unwrap();
            let reads = secret_requests(&s);
            if name == "creds" {
                assert_eq!(reason, "CredentialsNotFound", "{kind}: {message}");
                assert!(
                    message.contains("team-a/creds not found"),
                    "{kind}: {message}"
                );
                assert!(!reads.is_empty(), "{kind}: the Secret was looked for");
            } else {
                assert_eq!(reason, "InvalidSpec", "{kind} {name:?}: {message}");
                assert!(
                    message.contains("Secret name") && message.contains("namespace"),
                    "{kind} {name:?}: {message}"
                );
            }
            // Every Secret request stays on the Secrets of team-a, one plain name each.
            for r in &reads {
                let rest = r.path.strip_prefix("/api/v1/namespaces/team-a/secrets/");
                assert!(
                    rest.is_some_and(|n| !n.is_empty() && !n.contains('/') && n != ".."),
                    "{kind} {name:?}: {} {}",
                    r.method,
                    r.path
                );
                assert!(r.query.is_empty(), "{kind} {name:?}: {:?}", r.query);
                assert_eq!(r.method, "GET", "{kind} {name:?}");
            }
        }
    }
}

/// The Secret a token kind writes is named by spec.secretName: a name that would leave the
/// namespace is refused before the ownership check and the write.
#[tokio::test]
async fn a_secret_name_can_not_leave_the_namespace_either() {
    let s = server();
    s.insert(&secret("team-a", "azure-sp", &[("clientSecret", "x")]));
    s.insert(&secret(
        "team-a",
        "ali-ak",
        &[("accessKeyId", "id"), ("accessKeySecret", "y")],
    ));
    let (ctx, _) = context(
        &s,
        Settings {
            endpoint_policy: loopback(),
            ..Settings::default()
        },
    );
    for (i, name) in ["../other/secrets/x", "x/status", "..", "X"]
        .iter()
        .enumerate()
    {
        s.clear_requests();
        let o = s.insert(&ntr(
            "team-a",
            &format!("n{i}"),
            json!({"secretName": name}),
        ));
        reconcile(Arc::new(o), ctx.clone()).await.unwrap();
        let (reason, message) =
            ready::<NotebookTokenRequest>(&s, "team-a", &format!("n{i}")).unwrap();
        assert_eq!(reason, "InvalidSpec", "{name}: {message}");
        assert!(message.contains("spec.secretName"), "{message}");
        let o = s.insert(&livy(
            "team-a",
            &format!("l{i}"),
            json!({"secretName": name}),
        ));
        reconcile(Arc::new(o), ctx.clone()).await.unwrap();
        let (reason, message) = ready::<LivyToken>(&s, "team-a", &format!("l{i}")).unwrap();
        assert_eq!(reason, "InvalidSpec", "{name}: {message}");
        assert!(
            secret_requests(&s).is_empty(),
            "{name}: {:?}",
            secret_requests(&s)
        );
    }
}

/// A ClusterCredential's Secret references are looked up in the credential namespace only: a
/// Secret of that name in the resource's namespace or elsewhere is invisible, and a name that
/// tries to leave the namespace is refused before any request, for every provider.
#[tokio::test]
async fn a_cluster_credential_reaches_only_secrets_of_the_credential_namespace() {
    let s = server();
    let every_key = [
        ("clientSecret", "team-ns-secret"),
        ("accessKeyId", "id"),
        ("accessKeySecret", "team-ns-ak"),
        ("apiToken", "team-ns-token"),
    ];
    s.insert(&secret("team-a", "creds", &every_key));
    s.insert(&secret("other", "creds", &every_key));
    let (ctx, _) = context(
        &s,
        Settings {
            endpoint_policy: loopback(),
            ..Settings::default()
        },
    );
    let cred_ns = ctx.credentials.credential_namespace().to_owned();
    let hostile = [
        "../team-a/secrets/creds",
        "../../namespaces/team-a/secrets/creds",
        "..",
        "creds?fieldSelector=metadata.namespace%3Dteam-a",
        "%2e%2e",
        "Creds",
    ];
    type Case = (&'static str, Box<dyn Fn(&str) -> Value>, Value);
    let allowed = json!({"names": ["team-a"]});
    let cases: Vec<Case> = vec![
        (
            "NotebookTokenRequest",
            Box::new(|n| {
                json!({"azure": {"tenantId": TENANT, "clientId": CLIENT,
                                 "clientSecretRef": {"name": n, "key": "clientSecret"}}})
            }),
            json!({"azure": null, "credentialRef": {"name": "c"}}),
        ),
        (
            "LivyToken",
            Box::new(|n| json!({"alibaba": {"accessKeyRef": {"name": n}}})),
            json!({"alibaba": null, "credentialRef": {"name": "c"}}),
        ),
        (
            "WorkspaceView",
            Box::new(|n| json!({"dataRobot": {"apiTokenRef": {"name": n, "key": "apiToken"}}})),
            json!({"dataRobot": {"notebookIds": ["nb1"], "credentialRef": {"name": "c"}}}),
        ),
    ];
    let mut n = 0;
    for (kind, credential, uses) in &cases {
        for name in std::iter::once("creds").chain(hostile) {
            n += 1;
            let mut spec = credential(name);
            spec["allowedNamespaces"] = allowed.clone();
            s.delete_object::<ClusterCredential>("", "c");
            s.insert(&cluster_credential("c", spec));
            let res = format!("r{n}");
            s.clear_requests();
            let (reason, message) = match *kind {
                "NotebookTokenRequest" => {
                    let o = s.insert(&ntr("team-a", &res, uses.clone()));
                    reconcile(Arc::new(o), ctx.clone()).await.unwrap();
                    ready::<NotebookTokenRequest>(&s, "team-a", &res)
                }
                "LivyToken" => {
                    let o = s.insert(&livy("team-a", &res, uses.clone()));
                    reconcile(Arc::new(o), ctx.clone()).await.unwrap();
                    ready::<LivyToken>(&s, "team-a", &res)
                }
                _ => {
                    let o = s.insert(&wsv("team-a", &res, uses.clone()));
                    reconcile(Arc::new(o), ctx.clone()).await.unwrap();
                    ready::<WorkspaceView>(&s, "team-a", &res)
                }
            }
            .unwrap();
            let reads = secret_requests(&s);
            if name == "creds" {
                assert_eq!(reason, "CredentialsNotFound", "{kind}: {message}");
                assert!(
                    message.contains(&format!("{cred_ns}/creds not found")),
                    "{kind}: {message}"
                );
                assert!(!reads.is_empty(), "{kind}: the Secret was looked for");
            } else {
                assert_eq!(reason, "InvalidSpec", "{kind} {name:?}: {message}");
                assert!(
                    message.contains("ClusterCredential c") && message.contains("Secret name"),
                    "{kind} {name:?}: {message}"
                );
            }
            for r in &reads {
                let rest = r
                    .path
                    .strip_prefix(&format!("/api/v1/namespaces/{cred_ns}/secrets/"));
                assert!(
                    rest.is_some_and(|n| !n.is_empty() && !n.contains('/') && n != ".."),
                    "{kind} {name:?}: {} {}",
                    r.method,
                    r.path
                );
                assert!(r.query.is_empty(), "{kind} {name:?}: {:?}", r.query);
                assert_eq!(r.method, "GET", "{kind} {name:?}");
            }
        }
    }
}

/// A resource can use only a ClusterCredential that allows its namespace: naming one that
/// doesn't is CredentialNotAllowed, with no Secret read and nothing told about the credential
/// (not even its provider, when it is another one); naming one that allows it but holds
/// another provider's credentials is InvalidSpec.
#[tokio::test]
async fn a_resource_can_not_name_a_credential_its_namespace_is_not_allowed() {
    let s = server();
    s.insert(&secret(
        "workspace-access-operator",
        "ak",
        &[
            ("accessKeyId", "id"),
            ("accessKeySecret", "platform-ak-secret"),
        ],
    ));
    s.insert(&secret(
        "workspace-access-operator",
        "sp",
        &[("clientSecret", "platform-sp-secret")],
    ));
    s.insert(&cluster_credential(
        "alibaba-prod",
        json!({"alibaba": {"accessKeyRef": {"name": "ak"}},
               "allowedNamespaces": {"names": ["team-b"]}}),
    ));
    s.insert(&cluster_credential(
        "azure-prod",
        json!({"azure": {"tenantId": TENANT, "clientId": CLIENT,
                         "clientSecretRef": {"name": "sp", "key": "clientSecret"}},
               "allowedNamespaces": {"selector": {"matchLabels": {"azure": "yes"}}}}),
    ));
    let (ctx, _) = context(
        &s,
        Settings {
            endpoint_policy: loopback(),
            ..Settings::default()
        },
    );
    let by_ref = |inline: &str, name: &str| json!({inline: null, "credentialRef": {"name": name}});
    // team-a: allowed by neither; same provider or another, the answer is the same.
    for (res, cred) in [
        ("same-provider", "azure-prod"),
        ("other-provider", "alibaba-prod"),
    ] {
        s.clear_requests();
        let o = s.insert(&ntr("team-a", res, by_ref("azure", cred)));
        reconcile(Arc::new(o), ctx.clone()).await.unwrap();
        let (reason, message) = ready::<NotebookTokenRequest>(&s, "team-a", res).unwrap();
        assert_eq!(reason, "CredentialNotAllowed", "{res}: {message}");
        assert!(
            message.contains(&format!(
                "ClusterCredential {cred} does not allow namespace team-a"
            )),
            "{message}"
        );
        assert!(
            !message.contains("Alibaba") && !message.contains("Azure"),
            "{message}"
        );
        assert!(secret_requests(&s).is_empty(), "{res}: no Secret is read");
    }
    let o = s.insert(&livy("team-a", "livy", by_ref("alibaba", "alibaba-prod")));
    reconcile(Arc::new(o), ctx.clone()).await.unwrap();
    assert_eq!(
        ready::<LivyToken>(&s, "team-a", "livy").unwrap().0,
        "CredentialNotAllowed"
    );
    // team-b is allowed to use alibaba-prod: for a NotebookTokenRequest that's the wrong
    // provider.
    let o = s.insert(&ntr("team-b", "wrong", by_ref("azure", "alibaba-prod")));
    reconcile(Arc::new(o), ctx.clone()).await.unwrap();
    let (reason, message) = ready::<NotebookTokenRequest>(&s, "team-b", "wrong").unwrap();
    assert_eq!(reason, "InvalidSpec", "{message}");
    assert!(
        message.contains("holds Alibaba credentials; a NotebookTokenRequest needs Azure"),
        "{message}"
    );
    // A label on team-a lets it use azure-prod (the labels are read when needed).
    s.modify::<Namespace>("", "team-a", |n| {
        n["metadata"]["labels"] = json!({"azure": "yes"});
    });
    let o: NotebookTokenRequest = s.get("team-a", "same-provider").unwrap();
    reconcile(Arc::new(o), ctx.clone()).await.unwrap();
    let (reason, message) = ready::<NotebookTokenRequest>(&s, "team-a", "same-provider").unwrap();
    assert_ne!(reason, "CredentialNotAllowed", "{message}");
    // The credential is read from the credential namespace; in team-a only the resource's own
    // token Secret is looked at.
    let paths: BTreeSet<String> = secret_requests(&s).into_iter().map(|r| r.path).collect();
    let expected: BTreeSet<String> = [
        "/api/v1/namespaces/workspace-access-operator/secrets/sp",
        "/api/v1/namespaces/team-a/secrets/same-provider",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(paths, expected);
}

// ------------------------------------------------------------------------------------------
// Pod identity

/// Counts environment lookups: the operator's own identity is configured in its environment,
/// so a namespace that may not use it must never cause a lookup.
fn counting_env() -> (Arc<AtomicUsize>, Arc<AtomicUsize>, Context, FakeApiServer) {
    counting_env_allowing(&["platform"])
}

/// [`counting_env`] with pod identity allowed in `namespaces`.
fn counting_env_allowing(
    namespaces: &[&str],
) -> (Arc<AtomicUsize>, Arc<AtomicUsize>, Context, FakeApiServer) {
    let s = server();
    let entra_lookups = Arc::new(AtomicUsize::new(0));
    let rrsa_lookups = Arc::new(AtomicUsize::new(0));
    let e = entra_lookups.clone();
    let r = rrsa_lookups.clone();
    let http = http_client(&Arc::new(Metrics::new()));
    let ctx = builder(
        &s,
        Settings {
            endpoint_policy: loopback(),
            pod_identity: PodIdentityPolicy::new(namespaces.iter().map(|n| n.to_string())),
            ..Settings::default()
        },
    )
    .live_clients(move |live| {
        live.with_entra(Arc::new(EntraTokens::new(http).with_env(Arc::new(
            move |_name: &str| {
                e.fetch_add(1, Ordering::SeqCst);
                None::<OsString>
            },
        ))))
        .with_rrsa(Arc::new(RrsaCredentials::with_env(Arc::new(
            move |_name: &str| {
                r.fetch_add(1, Ordering::SeqCst);
                None
            },
        ))))
    })
    .build();
    (entra_lookups, rrsa_lookups, ctx, s)
}

#[tokio::test]
async fn pod_identity_is_used_only_in_allowed_namespaces_for_every_kind() {
    let (entra, rrsa, ctx, s) = counting_env();
    let ctx = Arc::new(ctx);
    let wi = json!({"azure": {"clientSecretRef": null, "workloadIdentity": true}});
    let fabric_wi = fabric_spec(json!({"clientSecretRef": null, "workloadIdentity": true}));
    let rrsa_spec = json!({"alibaba": {"accessKeyRef": null, "rrsa": true}});
    let lookups = || entra.load(Ordering::SeqCst) + rrsa.load(Ordering::SeqCst);
    for (ns, allowed) in [("team-a", false), ("platform", true)] {
        let before = lookups();
        let a = s.insert(&ntr(ns, "ntr", wi.clone()));
        reconcile(Arc::new(a), ctx.clone()).await.unwrap();
        let b = s.insert(&wsv(ns, "fabric", fabric_wi.clone()));
        reconcile(Arc::new(b), ctx.clone()).await.unwrap();
        let c = s.insert(&livy(ns, "livy", rrsa_spec.clone()));
        reconcile(Arc::new(c), ctx.clone()).await.unwrap();
        let got = [
            ready::<NotebookTokenRequest>(&s, ns, "ntr").unwrap(),
            ready::<WorkspaceView>(&s, ns, "fabric").unwrap(),
            ready::<LivyToken>(&s, ns, "livy").unwrap(),
        ];
        if allowed {
            // Past the allowlist, the operator looks for its identity (not configured here).
            assert_eq!(got[0].0, "AuthenticationFailed", "{:?}", got[0]);
            assert!(
                got[0].1.contains("AZURE_FEDERATED_TOKEN_FILE"),
                "{:?}",
                got[0]
            );
            assert_eq!(got[1].0, "AuthenticationFailed", "{:?}", got[1]);
            assert_eq!(got[2].0, "CredentialsNotFound", "{:?}", got[2]);
            assert!(got[2].1.contains("ALIBABA_CLOUD_ROLE_ARN"), "{:?}", got[2]);
            assert!(lookups() > before);
        } else {
            for (reason, message) in &got {
                assert_eq!(reason, "PodIdentityNotAllowed", "{message}");
                assert!(
                    message.contains("--pod-identity-namespace")
                        && message.contains("namespace team-a"),
                    "{message}"
                );
            }
            assert_eq!(
                lookups(),
                before,
                "the operator's identity was not even looked up"
            );
        }
    }
    // `*` allows every namespace.
    let (_, _, ctx, s) = counting_env_allowing(&["*"]);
    let ctx = Arc::new(ctx);
    let c = s.insert(&livy("anywhere", "livy", rrsa_spec));
    reconcile(Arc::new(c), ctx).await.unwrap();
    assert_eq!(
        ready::<LivyToken>(&s, "anywhere", "livy").unwrap().0,
        "CredentialsNotFound"
    );
}

/// Pod identity held by a ClusterCredential is granted by its allowedNamespaces, without
/// --pod-identity-namespace; a namespace it doesn't allow can't reach the operator's identity
/// through it; inline pod identity keeps the flag's rule.
#[tokio::test]
async fn pod_identity_through_a_cluster_credential_follows_its_allowed_namespaces() {
    let (entra, rrsa, ctx, s) = counting_env_allowing(&[]);
    let ctx = Arc::new(ctx);
    let allowed = json!({"names": ["team-a"]});
    s.insert(&cluster_credential(
        "azure-wi",
        json!({"azure": {"tenantId": TENANT, "clientId": CLIENT, "workloadIdentity": true},
               "allowedNamespaces": allowed}),
    ));
    s.insert(&cluster_credential(
        "alibaba-rrsa",
        json!({"alibaba": {"rrsa": true}, "allowedNamespaces": allowed}),
    ));
    let lookups = || entra.load(Ordering::SeqCst) + rrsa.load(Ordering::SeqCst);
    let ntr_ref = json!({"azure": null, "credentialRef": {"name": "azure-wi"}});
    let fabric_ref = json!({"fabric": {"credentialRef": {"name": "azure-wi"}}});
    let livy_ref = json!({"alibaba": null, "credentialRef": {"name": "alibaba-rrsa"}});
    for (ns, allowed) in [("team-b", false), ("team-a", true)] {
        let before = lookups();
        let a = s.insert(&ntr(ns, "ntr", ntr_ref.clone()));
        reconcile(Arc::new(a), ctx.clone()).await.unwrap();
        let b = s.insert(&wsv(ns, "fabric", fabric_ref.clone()));
        reconcile(Arc::new(b), ctx.clone()).await.unwrap();
        let c = s.insert(&livy(ns, "livy", livy_ref.clone()));
        reconcile(Arc::new(c), ctx.clone()).await.unwrap();
        let got = [
            ready::<NotebookTokenRequest>(&s, ns, "ntr").unwrap(),
            ready::<WorkspaceView>(&s, ns, "fabric").unwrap(),
            ready::<LivyToken>(&s, ns, "livy").unwrap(),
        ];
        if allowed {
            // Granted: the operator looks for its identity (not configured here).
            assert_eq!(got[0].0, "AuthenticationFailed", "{:?}", got[0]);
            assert!(
                got[0].1.contains("AZURE_FEDERATED_TOKEN_FILE"),
                "{:?}",
                got[0]
            );
            assert_eq!(got[1].0, "AuthenticationFailed", "{:?}", got[1]);
            assert_eq!(got[2].0, "CredentialsNotFound", "{:?}", got[2]);
            assert!(got[2].1.contains("ALIBABA_CLOUD_ROLE_ARN"), "{:?}", got[2]);
            assert!(lookups() > before);
        } else {
            for (reason, message) in &got {
                assert_eq!(reason, "CredentialNotAllowed", "{message}");
            }
            assert_eq!(
                lookups(),
                before,
                "the operator's identity was not looked up"
            );
        }
    }
    // Inline pod identity in the same namespace still needs --pod-identity-namespace.
    let before = lookups();
    let d = s.insert(&ntr(
        "team-a",
        "inline",
        json!({"azure": {"clientSecretRef": null, "workloadIdentity": true}}),
    ));
    reconcile(Arc::new(d), ctx.clone()).await.unwrap();
    assert_eq!(
        ready::<NotebookTokenRequest>(&s, "team-a", "inline")
            .unwrap()
            .0,
        "PodIdentityNotAllowed"
    );
    assert_eq!(lookups(), before);
}

// ------------------------------------------------------------------------------------------
// One unreadable resource doesn't stop its kind

/// The CRD schema's duration pattern lets `99999999999h` through, which the parser refuses.
/// Were the object to fail to deserialize, the LIST of its kind would fail and no resource of
/// that kind would be reconciled; instead it is InvalidSpec and the others carry on.
#[tokio::test]
async fn a_resource_with_an_unparseable_duration_does_not_stop_its_kind() {
    let s = server();
    // Created as raw JSON, as the API server would store it (the typed constructors can't
    // express a value the parser refuses).
    let raw = |value: Value, ar: kube::core::ApiResource, ns: &'static str| {
        let client = s.client();
        async move {
            let api: kube::Api<kube::core::DynamicObject> =
                kube::Api::namespaced_with(client, ns, &ar);
            let obj: kube::core::DynamicObject = serde_json::from_value(value).unwrap();
            api.create(&Default::default(), &obj).await.unwrap();
        }
    };
    for ns in ["team-b", "platform"] {
        s.insert(&Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        });
    }
    let mut bad = serde_json::to_value(livy("team-b", "bad", json!({}))).unwrap();
    bad["spec"]["renewBefore"] = json!("99999999999h");
    raw(
        bad,
        kube::core::ApiResource::erase::<LivyToken>(&()),
        "team-b",
    )
    .await;
    s.insert(&livy("team-b", "good", json!({})));
    let mut view = serde_json::to_value(wsv(
        "platform",
        "bad",
        json!({"dataRobot": {"notebookIds": ["nb1"],
                             "apiTokenRef": {"name": "dr", "key": "apiToken"}}}),
    ))
    .unwrap();
    view["spec"]["refreshInterval"] = json!("99999999999h");
    raw(
        view,
        kube::core::ApiResource::erase::<WorkspaceView>(&()),
        "platform",
    )
    .await;
    let (ctx, _) = context_mut(&s, Settings::default());
    let ready_flag = Arc::new(AtomicBool::new(false));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(run_controllers(
        ctx,
        ControllerOptions::new(2),
        ready_flag,
        shutdown.clone(),
    ));
    eventually("the good LivyToken is reconciled", || {
        ready::<LivyToken>(&s, "team-b", "good").is_some()
    })
    .await;
    eventually("the bad ones report", || {
        ready::<LivyToken>(&s, "team-b", "bad").is_some()
            && ready::<WorkspaceView>(&s, "platform", "bad").is_some()
    })
    .await;
    assert_eq!(
        ready::<LivyToken>(&s, "team-b", "good").unwrap().0,
        "CredentialsNotFound"
    );
    let (reason, message) = ready::<LivyToken>(&s, "team-b", "bad").unwrap();
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("spec.renewBefore") && message.contains("too large"),
        "{message}"
    );
    let (reason, message) = ready::<WorkspaceView>(&s, "platform", "bad").unwrap();
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("spec.refreshInterval"), "{message}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

// ------------------------------------------------------------------------------------------
// A full run: nothing leaks, and exactly the RBAC deploy/ grants is used

/// Secret values the credential Secrets and the mock providers use. None of them may appear
/// anywhere but in Secrets: not in logs, events, conditions, status, metrics, or any request
/// the operator sends to the API server other than a Secret's.
const CS_NTR: &str = "ntr-client-secret-3f9a";
const CS_NTR_BAD: &str = "ntr-wrong-secret-77c1";
const CS_FABRIC: &str = "fabric-client-secret-0b2e";
const CS_FABRIC_DENIED: &str = "fabric-denied-secret-5d41";
const ARM_BEARER: &str = "eyJ-arm-bearer-9e11";
const FABRIC_BEARER: &str = "eyJ-fabric-bearer-42aa";
const FABRIC_BEARER_DENIED: &str = "eyJ-fabric-denied-8c03";
const NOTEBOOK_TOKEN: &str = "nb-access-token-61f2";
const NOTEBOOK_REFRESH: &str = "nb-refresh-token-c4d9";
const DR_TOKEN: &str = "dr-api-token-1a7e";
const DR_TOKEN_BAD: &str = "dr-api-token-bad-e2b0";
const AK_SECRET: &str = "ak-secret-9d3c";
const AK_SECRET_ECHO: &str = "ak-secret-echo-2f6b";
const STS_TOKEN: &str = "sts-security-token-7e5d";
const LIVY_REF_TOKEN: &str = "livy-reference-token-4b8f";
/// The client secret a ClusterCredential holds in the credential namespace.
const CS_CCRED: &str = "ccred-client-secret-6a1f";
/// The DataRobot key a ClusterCredential holds.
const DR_TOKEN_CCRED: &str = "dr-api-token-ccred-3c77";
/// The AccessKey ID is not secret (it is sent in every Authorization header).
const AK_ID: &str = "LTAI-full-run";
const LEASE_NS: &str = "workspace-access-operator";

/// What a full run left behind.
struct Run {
    /// Everything logged (TRACE for the operator's crate, DEBUG for kube).
    logs: String,
    /// Every request the operator sent to the API server.
    requests: Vec<RecordedRequest>,
    /// Events, as stored.
    events: String,
    /// The three kinds' resources (spec and status), as stored at the end.
    resources: String,
    /// The /metrics text, while the controllers ran (with the per-resource gauges).
    metrics: String,
    /// What the kubectl plugin prints about the run's resources: `status` as a table and as
    /// JSON, and every view's `inventory` as table, CSV and JSON.
    plugin: String,
    /// Every secret value used, including the tokens the fake EMR generated.
    secrets: Vec<String>,
    /// Secret values that did reach the Secrets the operator wrote (the run was real).
    written: Vec<String>,
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn arm_path(workspace: &str) -> String {
    format!(
        "/subscriptions/00000000-1111-2222-3333-444444444444/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/{workspace}/listNotebookAccessToken"
    )
}

async fn full_run() -> Run {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "workspace_access_operator=trace,kube=debug",
        ))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // tracing-core decides per call site, once, whether anyone listens; while exactly one
    // dispatcher exists it asks only the registering thread's default, so a call site first
    // hit by a test on another thread would stay silenced for this run. A second (silent)
    // dispatcher makes it ask all of them.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    // The tests run on a current-thread runtime: every task the run spawns logs here.
    let _logging = tracing::subscriber::set_default(subscriber);

    // --- mock providers ---
    let azure = MockServer::start_async().await;
    let entra_path = format!("/{TENANT}/oauth2/v2.0/token");
    for (secret, scope, token) in [
        (CS_NTR, "https://management.azure.com/.default", ARM_BEARER),
        (CS_FABRIC, FABRIC_SCOPE, FABRIC_BEARER),
        (CS_FABRIC_DENIED, FABRIC_SCOPE, FABRIC_BEARER_DENIED),
        (
            CS_CCRED,
            "https://management.azure.com/.default",
            ARM_BEARER,
        ),
        (CS_CCRED, FABRIC_SCOPE, FABRIC_BEARER),
    ] {
        azure
            .mock_async(|when, then| {
                when.method(POST)
                    .path(&entra_path)
                    .form_urlencoded_tuple("client_secret", secret)
                    .form_urlencoded_tuple("scope", scope);
                then.status(200).json_body(
                    json!({"token_type": "Bearer", "expires_in": 3599, "access_token": token}),
                );
            })
            .await;
    }
    // Providers that echo what they were sent in their error messages.
    let entra_refusal = azure
        .mock_async(|when, then| {
            when.method(POST)
                .path(&entra_path)
                .form_urlencoded_tuple("client_secret", CS_NTR_BAD);
            then.status(401).json_body(json!({
                "error": "invalid_client",
                "error_description": format!("AADSTS7000215: Invalid client secret provided: {CS_NTR_BAD}.\r\nTrace ID: t1"),
                "error_codes": [7000215], "trace_id": format!("trace-{CS_NTR_BAD}")
            }));
        })
        .await;
    azure
        .mock_async(|when, then| {
            when.method(POST)
                .path(arm_path("okws"))
                .header("authorization", format!("Bearer {ARM_BEARER}"));
            then.status(200).json_body(json!({
                "accessToken": NOTEBOOK_TOKEN, "refreshToken": NOTEBOOK_REFRESH,
                "expiresIn": 3600, "tokenType": "Bearer", "scope": "aznb_identity",
                "notebookResourceId": "nb-resource-1"
            }));
        })
        .await;
    let arm_refusal = azure
        .mock_async(|when, then| {
            when.method(POST).path(arm_path("denied"));
            then.status(401).json_body(json!({"error": {
                "code": "InvalidAuthenticationToken",
                "message": format!("The access token '{ARM_BEARER}' is invalid.")}}));
        })
        .await;
    let fabric = MockServer::start_async().await;
    fabric
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/workspaces")
                .header("authorization", format!("Bearer {FABRIC_BEARER}"));
            then.status(200).json_body(
                json!({"value": [{"id": "ws-1", "displayName": "Sales", "type": "Workspace"}]}),
            );
        })
        .await;
    fabric
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/workspaces/ws-1/roleAssignments")
                .header("authorization", format!("Bearer {FABRIC_BEARER}"));
            then.status(200).json_body(json!({"value": [
                {"id": "a1", "principal": {"id": "p1", "type": "User", "displayName": "Ann"}, "role": "Admin"}]}));
        })
        .await;
    let fabric_refusal = fabric
        .mock_async(|when, then| {
            when.method(GET)
                .path("/v1/workspaces")
                .header("authorization", format!("Bearer {FABRIC_BEARER_DENIED}"));
            then.status(403).json_body(json!({
                "errorCode": "InsufficientPrivileges",
                "message": format!("Bearer {FABRIC_BEARER_DENIED} may not list workspaces"),
                "requestId": format!("req-{FABRIC_BEARER_DENIED}")}));
        })
        .await;
    let datarobot = MockServer::start_async().await;
    let dr_ok = datarobot
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/sharedRoles/")
                .header("authorization", format!("Token {DR_TOKEN}"));
            then.status(200).json_body(json!({"data": [{"notebookId": "nb1", "roles": [
                {"id": "u1", "name": "ann@example.com", "role": "OWNER", "shareRecipientType": "user"}]}]}));
        })
        .await;
    let dr_ccred = datarobot
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/sharedRoles/")
                .header("authorization", format!("Bearer {DR_TOKEN_CCRED}"));
            then.status(200)
                .json_body(json!({"data": [{"notebookId": "nb1", "roles": []}]}));
        })
        .await;
    let dr_refusal = datarobot
        .mock_async(|when, then| {
            when.header("authorization", format!("Token {DR_TOKEN_BAD}"));
            then.status(401)
                .header("x-request-id", format!("req-{DR_TOKEN_BAD}"))
                .json_body(json!({"message": format!("Invalid API key {DR_TOKEN_BAD}")}));
        })
        .await;
    let alibaba_echo = MockServer::start_async().await;
    let alibaba_refusal = alibaba_echo
        .mock_async(|when, then| {
            when.any_request();
            then.status(400).json_body(json!({
                "Code": "InvalidSecurityToken.Expired",
                "Message": format!("The security token {STS_TOKEN} has expired (key {AK_SECRET_ECHO})"),
                "RequestId": format!("req-{STS_TOKEN}")}));
        })
        .await;
    let emr = FakeEmr::start(AK_ID, AK_SECRET, Arc::new(jiff::Timestamp::now)).await;
    emr.add_token(
        "w-1",
        "lc-1",
        "lctk-ref",
        "team-token",
        LIVY_REF_TOKEN,
        Duration::from_secs(8 * 3600),
    );

    // --- the cluster: credentials and resources, succeeding and failing ---
    let s = server();
    for ns in ["team-a", "team-b", "platform", LEASE_NS] {
        s.insert(&Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(ns.into()),
                labels: (ns == "team-b").then(|| [("team".to_string(), "b".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        });
    }
    s.insert(&secret("team-a", "azure-sp", &[("clientSecret", CS_NTR)]));
    s.insert(&secret(
        "team-a",
        "azure-bad",
        &[("clientSecret", CS_NTR_BAD)],
    ));
    s.insert(&secret("team-a", "taken", &[("precious", "data")]));
    s.insert(&secret(
        "team-b",
        "ali-ak",
        &[("accessKeyId", AK_ID), ("accessKeySecret", AK_SECRET)],
    ));
    s.insert(&secret(
        "team-b",
        "ali-echo",
        &[
            ("accessKeyId", AK_ID),
            ("accessKeySecret", AK_SECRET_ECHO),
            ("securityToken", STS_TOKEN),
        ],
    ));
    s.insert(&secret(
        "platform",
        "fabric-sp",
        &[("clientSecret", CS_FABRIC)],
    ));
    s.insert(&secret(
        "platform",
        "fabric-denied",
        &[("clientSecret", CS_FABRIC_DENIED)],
    ));
    s.insert(&secret("platform", "dr", &[("apiToken", DR_TOKEN)]));
    s.insert(&secret("platform", "dr-bad", &[("apiToken", DR_TOKEN_BAD)]));

    let az = azure.base_url();
    let azure_spec = |workspace: &str, secret_ref: &str, secret_name: &str| {
        json!({"workspaceName": workspace, "endpoint": az, "secretName": secret_name,
               "azure": {"authorityHost": az, "clientSecretRef": {"name": secret_ref}}})
    };
    // Its consumers: a templated key holding the token, and workloads of each kind restarted
    // by name and by selector when the token changes.
    let mut ok_spec = azure_spec("okws", "azure-sp", "ok-token");
    merge(
        &mut ok_spec,
        json!({"secretTemplate": {"data": {"netrc": "machine nb login token password {{ accessToken }}\n"}},
               "rolloutRestartTargets": [
                   {"kind": "Deployment", "name": "web"},
                   {"kind": "Deployment", "selector": {"matchLabels": {"reads": "ok-token"}}},
                   {"kind": "StatefulSet", "selector": {"matchLabels": {"reads": "ok-token"}}},
                   {"kind": "DaemonSet", "selector": {"matchLabels": {"reads": "ok-token"}}}]}),
    );
    s.insert(&ntr("team-a", "ok", ok_spec));
    for (kind, name) in [
        ("Deployment", "web"),
        ("Deployment", "api"),
        ("StatefulSet", "db"),
        ("DaemonSet", "agent"),
    ] {
        let w = json!({"apiVersion": "apps/v1", "kind": kind,
                       "metadata": {"name": name, "namespace": "team-a", "labels": {"reads": "ok-token"}},
                       "spec": {"selector": {"matchLabels": {"app": name}},
                                "template": {"metadata": {"labels": {"app": name}},
                                             "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        match kind {
            "Deployment" => drop(s.insert(
                &serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(w).unwrap(),
            )),
            "StatefulSet" => drop(s.insert(
                &serde_json::from_value::<k8s_openapi::api::apps::v1::StatefulSet>(w).unwrap(),
            )),
            _ => drop(s.insert(
                &serde_json::from_value::<k8s_openapi::api::apps::v1::DaemonSet>(w).unwrap(),
            )),
        }
    }
    s.insert(&ntr(
        "team-a",
        "bad-secret",
        azure_spec("okws", "azure-bad", "bad-token"),
    ));
    s.insert(&ntr(
        "team-a",
        "denied",
        azure_spec("denied", "azure-sp", "denied-token"),
    ));
    s.insert(&ntr(
        "team-a",
        "conflict",
        azure_spec("okws", "azure-sp", "taken"),
    ));
    s.insert(&ntr(
        "team-a",
        "pod-identity",
        json!({"azure": {"clientSecretRef": null, "workloadIdentity": true}}),
    ));
    let without_finalizer = |mut o: LivyToken| {
        o.metadata.finalizers = None;
        o
    };
    s.insert(&without_finalizer(livy(
        "team-b",
        "managed",
        json!({"endpoint": emr.base_url, "tokenId": null, "managed": {"expireDays": 7},
               "secretName": "managed-token"}),
    )));
    s.insert(&without_finalizer(livy(
        "team-b",
        "reference",
        json!({"endpoint": emr.base_url, "tokenId": "lctk-ref", "secretName": "ref-token"}),
    )));
    s.insert(&without_finalizer(livy(
        "team-b",
        "missing",
        json!({"endpoint": emr.base_url, "tokenId": "lctk-missing"}),
    )));
    s.insert(&without_finalizer(livy(
        "team-b",
        "echo",
        json!({"endpoint": alibaba_echo.base_url(),
               "alibaba": {"accessKeyRef": {"name": "ali-echo", "securityTokenKey": "securityToken"}}}),
    )));
    let fabric_view = |secret_ref: &str| {
        let mut spec =
            fabric_spec(json!({"authorityHost": az, "clientSecretRef": {"name": secret_ref}}));
        spec["fabric"]["endpoint"] = json!(fabric.base_url());
        spec["fabric"]["includeRoleAssignments"] = json!(true);
        spec["refreshInterval"] = json!("1h");
        spec
    };
    s.insert(&wsv("platform", "fabric", fabric_view("fabric-sp")));
    s.insert(&wsv(
        "platform",
        "fabric-denied",
        fabric_view("fabric-denied"),
    ));
    let dr_view = |secret: &str| {
        json!({"refreshInterval": "1h", "dataRobot": {"endpoint": datarobot.url("/api/v2"),
               "notebookIds": ["nb1"], "apiTokenRef": {"name": secret, "key": "apiToken"}}})
    };
    s.insert(&wsv("platform", "datarobot", dr_view("dr")));
    s.insert(&wsv("platform", "datarobot-bad", dr_view("dr-bad")));
    s.insert(&wsv("platform", "invalid", json!({"maxItems": 0, "fabric": {"azure": {
        "tenantId": TENANT, "clientId": CLIENT, "clientSecretRef": {"name": "fabric-sp", "key": "clientSecret"}}}})));

    // ClusterCredentials: their Secrets in the credential namespace (the operator's own), the
    // resources naming them in team namespaces.
    s.insert(&secret(LEASE_NS, "azure-ml", &[("clientSecret", CS_CCRED)]));
    s.insert(&secret(
        LEASE_NS,
        "alibaba",
        &[("accessKeyId", AK_ID), ("accessKeySecret", AK_SECRET)],
    ));
    s.insert(&secret(
        LEASE_NS,
        "datarobot",
        &[("apiToken", DR_TOKEN_CCRED)],
    ));
    s.insert(&cluster_credential(
        "azure-ml",
        json!({"azure": {"tenantId": TENANT, "clientId": CLIENT, "authorityHost": az,
                         "clientSecretRef": {"name": "azure-ml", "key": "clientSecret"}},
               "allowedNamespaces": {"names": ["team-a", "platform"]}}),
    ));
    s.insert(&cluster_credential(
        "alibaba",
        json!({"alibaba": {"accessKeyRef": {"name": "alibaba"}},
               "allowedNamespaces": {"selector": {"matchLabels": {"team": "b"}}}}),
    ));
    s.insert(&cluster_credential(
        "datarobot",
        json!({"dataRobot": {"apiTokenRef": {"name": "datarobot", "key": "apiToken"},
                             "authScheme": "Bearer"},
               "allowedNamespaces": {"names": ["platform"]}}),
    ));
    s.insert(&cluster_credential(
        "missing-secret",
        json!({"dataRobot": {"apiTokenRef": {"name": "nope", "key": "apiToken"}},
               "allowedNamespaces": {"names": ["platform"]}}),
    ));
    let by_ref = |name: &str| json!({"azure": null, "credentialRef": {"name": name}});
    let mut ccred_ntr = by_ref("azure-ml");
    merge(
        &mut ccred_ntr,
        json!({"endpoint": az, "secretName": "ccred-token"}),
    );
    s.insert(&ntr("team-a", "ccred", ccred_ntr));
    s.insert(&ntr("team-b", "ccred-not-allowed", by_ref("azure-ml")));
    s.insert(&ntr("team-b", "ccred-wrong-provider", by_ref("alibaba")));
    s.insert(&ntr("team-a", "ccred-unknown", by_ref("nope")));
    s.insert(&without_finalizer(livy(
        "team-b",
        "ccred",
        json!({"endpoint": emr.base_url, "tokenId": "lctk-ref", "secretName": "ccred-ref-token",
               "alibaba": null, "credentialRef": {"name": "alibaba"}}),
    )));
    let dr_by_ref = |credential: &str| {
        json!({"refreshInterval": "1h", "dataRobot": {"endpoint": datarobot.url("/api/v2"),
               "notebookIds": ["nb1"], "credentialRef": {"name": credential}}})
    };
    s.insert(&wsv("platform", "ccred", dr_by_ref("datarobot")));
    s.insert(&wsv(
        "platform",
        "fabric-ccred",
        json!({"refreshInterval": "1h", "fabric": {"endpoint": fabric.base_url(),
               "credentialRef": {"name": "azure-ml"}}}),
    ));
    s.insert(&wsv(
        "platform",
        "ccred-missing-secret",
        dr_by_ref("missing-secret"),
    ));
    s.clear_requests();

    // --- the operator: leader election around the three controllers ---
    let metrics = Arc::new(Metrics::new());
    let http = HttpClient::new(HttpOptions::default(), metrics.clone()).unwrap();
    let settings = Settings {
        endpoint_policy: loopback(),
        base_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        rollout_restart_window: Duration::from_millis(200),
        ..Settings::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ready_flag = Arc::new(AtomicBool::new(false));
    let client = s.client();
    let (m, r) = (metrics.clone(), ready_flag.clone());
    let operator = tokio::spawn(run_as_leader(
        s.client(),
        LeaseSettings {
            name: "workspace-access-operator".into(),
            namespace: LEASE_NS.into(),
            identity: "replica-a".into(),
            duration_secs: 3,
        },
        metrics.clone(),
        ready_flag.clone(),
        shutdown.clone(),
        move |token| {
            let ctx = Context::new(client.clone(), settings.clone(), m.clone(), http.clone());
            run_controllers(ctx, ControllerOptions::new(4), r.clone(), token)
        },
    ));

    let expected: [(&str, &str, &str, &str); 22] = [
        ("ntr", "team-a", "ok", "Synced"),
        ("ntr", "team-a", "bad-secret", "AuthenticationFailed"),
        ("ntr", "team-a", "denied", "AuthenticationFailed"),
        ("ntr", "team-a", "conflict", "SecretConflict"),
        ("ntr", "team-a", "pod-identity", "PodIdentityNotAllowed"),
        ("livy", "team-b", "managed", "Synced"),
        ("livy", "team-b", "reference", "Synced"),
        ("livy", "team-b", "missing", "NotFound"),
        ("livy", "team-b", "echo", "AuthenticationFailed"),
        ("wsv", "platform", "fabric", "Synced"),
        ("wsv", "platform", "fabric-denied", "Forbidden"),
        ("wsv", "platform", "datarobot", "Synced"),
        ("wsv", "platform", "datarobot-bad", "AuthenticationFailed"),
        ("wsv", "platform", "invalid", "InvalidSpec"),
        ("ntr", "team-a", "ccred", "Synced"),
        ("ntr", "team-b", "ccred-not-allowed", "CredentialNotAllowed"),
        ("ntr", "team-b", "ccred-wrong-provider", "InvalidSpec"),
        ("ntr", "team-a", "ccred-unknown", "CredentialsNotFound"),
        ("livy", "team-b", "ccred", "Synced"),
        ("wsv", "platform", "ccred", "Synced"),
        ("wsv", "platform", "fabric-ccred", "Synced"),
        (
            "wsv",
            "platform",
            "ccred-missing-secret",
            "CredentialsNotFound",
        ),
    ];
    let reason_of = |kind: &str, ns: &str, name: &str| {
        match kind {
            "ntr" => ready::<NotebookTokenRequest>(&s, ns, name),
            "livy" => ready::<LivyToken>(&s, ns, name),
            _ => ready::<WorkspaceView>(&s, ns, name),
        }
        .map(|(r, _)| r)
    };
    eventually("every resource reports its outcome", || {
        expected
            .iter()
            .all(|(k, ns, n, want)| reason_of(k, ns, n).as_deref() == Some(*want))
    })
    .await;
    let credential_reason = |name: &str| {
        s.get::<ClusterCredential>("", name)
            .and_then(|c| serde_json::to_value(&c).ok())
            .and_then(|v| ready_of(&v["status"]))
            .map(|(_, r, _)| r)
    };
    eventually("every ClusterCredential reports its state", || {
        ["azure-ml", "alibaba", "datarobot"]
            .iter()
            .all(|c| credential_reason(c).as_deref() == Some("Valid"))
            && credential_reason("missing-secret").as_deref() == Some("CredentialsNotFound")
    })
    .await;

    // A deleted Secret is written again, with a second Normal event.
    let event_posts = || {
        s.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/namespaces/team-a/events"))
            .count()
    };
    let events_before = event_posts();
    let first: Secret = s.get("team-a", "ok-token").unwrap();
    s.delete_object::<Secret>("team-a", "ok-token");
    eventually("the deleted Secret is written again", || {
        s.get::<Secret>("team-a", "ok-token")
            .is_some_and(|n| n.metadata.uid != first.metadata.uid)
    })
    .await;
    eventually("the new sync publishes another event", || {
        event_posts() > events_before
    })
    .await;

    // A changed template gets "ok" a new token and Secret data: its workloads restart.
    s.modify::<NotebookTokenRequest>("team-a", "ok", |o| {
        o["spec"]["secretTemplate"]["data"]["netrc"] =
            json!("machine nb2 login token password {{ accessToken }}\n");
    });
    eventually(
        "the workloads reading the token restart and it is recorded",
        || {
            s.get::<NotebookTokenRequest>("team-a", "ok")
                .and_then(|o| o.status)
                .and_then(|st| st.last_rollout_restart)
                .is_some_and(|r| r.targets.len() == 4)
        },
    )
    .await;

    // A share added at DataRobot: the view's next sync (at once, through a spec change that
    // leaves its source alone) reports it as an AccessChanged event, a history entry and a
    // counter increase, which the leak checks cover.
    let dr_calls = dr_ok.calls_async().await;
    dr_ok.delete_async().await;
    datarobot
        .mock_async(|when, then| {
            when.method(GET)
                .path("/api/v2/notebooks/sharedRoles/")
                .header("authorization", format!("Token {DR_TOKEN}"));
            then.status(200).json_body(json!({"data": [{"notebookId": "nb1", "roles": [
                {"id": "u1", "name": "ann@example.com", "role": "OWNER", "shareRecipientType": "user"},
                {"id": "g1", "name": "analysts", "role": "CONSUMER", "shareRecipientType": "group"}]}]}));
        })
        .await;
    s.modify::<WorkspaceView>("platform", "datarobot", |v| {
        v["spec"]["refreshInterval"] = json!("2h")
    });
    eventually("the new share is reported", || {
        s.list::<Event>(Some("platform"))
            .iter()
            .any(|e| e.reason.as_deref() == Some("AccessChanged"))
    })
    .await;

    // Deleting the managed LivyToken deletes its token at the provider and the finalizer.
    let mut written = vec![];
    for (ns, name, key) in [
        ("team-a", "ok-token", "accessToken"),
        ("team-a", "ok-token", "refreshToken"),
        ("team-b", "managed-token", "token"),
        ("team-b", "ref-token", "token"),
        ("team-a", "ccred-token", "accessToken"),
        ("team-b", "ccred-ref-token", "token"),
    ] {
        written.push(secret_value(&s.get(ns, name).unwrap(), key).unwrap());
    }
    let mut secrets: Vec<String> = [
        CS_NTR,
        CS_NTR_BAD,
        CS_FABRIC,
        CS_FABRIC_DENIED,
        ARM_BEARER,
        FABRIC_BEARER,
        FABRIC_BEARER_DENIED,
        NOTEBOOK_TOKEN,
        NOTEBOOK_REFRESH,
        DR_TOKEN,
        DR_TOKEN_BAD,
        AK_SECRET,
        AK_SECRET_ECHO,
        STS_TOKEN,
        LIVY_REF_TOKEN,
        CS_CCRED,
        DR_TOKEN_CCRED,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    secrets.extend(emr.tokens().into_iter().map(|t| t.token));
    assert!(emr.count("CreateLivyComputeToken") >= 1);
    s.delete_object::<LivyToken>("team-b", "managed");
    eventually("the managed LivyToken is gone", || {
        s.get::<LivyToken>("team-b", "managed").is_none()
    })
    .await;
    assert!(emr.count("DeleteLivyComputeToken") >= 1);

    let metrics_while_running = metrics.encode();
    let plugin = plugin_output(&s);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), operator)
        .await
        .expect("the operator stops")
        .unwrap()
        .unwrap();

    // The providers did see the secrets (and echoed them): the run was real.
    assert!(dr_calls >= 1);
    assert!(dr_ccred.calls_async().await >= 1);
    for refusal in [
        &entra_refusal,
        &arm_refusal,
        &fabric_refusal,
        &dr_refusal,
        &alibaba_refusal,
    ] {
        assert!(refusal.calls_async().await >= 1);
    }
    assert_eq!(emr.bad_signatures(), 0);

    let json = |v: &[Value]| serde_json::to_string_pretty(v).unwrap();
    let resources = json(
        &s.list::<NotebookTokenRequest>(None)
            .iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .chain(
                s.list::<LivyToken>(None)
                    .iter()
                    .map(|o| serde_json::to_value(o).unwrap()),
            )
            .chain(
                s.list::<WorkspaceView>(None)
                    .iter()
                    .map(|o| serde_json::to_value(o).unwrap()),
            )
            .chain(
                s.list::<ClusterCredential>(None)
                    .iter()
                    .map(|o| serde_json::to_value(o).unwrap()),
            )
            .collect::<Vec<_>>(),
    );
    // No ClusterCredential's value reached any team namespace, not even in a Secret.
    for secret in s.list::<Secret>(None) {
        let ns = secret.metadata.namespace.clone().unwrap_or_default();
        if ns == LEASE_NS {
            continue;
        }
        let text = serde_json::to_string(&secret).unwrap();
        for value in [CS_CCRED, DR_TOKEN_CCRED] {
            assert!(
                !text.contains(value),
                "{value} in Secret {ns}/{:?}",
                secret.metadata.name
            );
        }
    }
    let events = json(
        &s.list::<Event>(None)
            .iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect::<Vec<_>>(),
    );
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    Run {
        logs,
        requests: s.requests(),
        events,
        resources,
        metrics: metrics_while_running,
        plugin,
        secrets,
        written,
    }
}

/// Everything the kubectl plugin would print about the resources of `s` (built from the
/// stored objects, so that the run's requests stay the operator's alone).
fn plugin_output(s: &FakeApiServer) -> String {
    use workspace_access_operator::plugin::{inventory, status};
    let mut rows: Vec<status::StatusRow> = s
        .list::<NotebookTokenRequest>(None)
        .iter()
        .map(status::row_of)
        .chain(s.list::<LivyToken>(None).iter().map(status::row_of))
        .chain(s.list::<WorkspaceView>(None).iter().map(status::row_of))
        .collect();
    status::sort(&mut rows);
    assert!(rows.len() >= 13, "{rows:?}");
    let mut out = status::table(&rows, jiff::Timestamp::now(), true);
    out.push_str(&serde_json::to_string(&status::StatusList { items: rows }).unwrap());
    for view in s.list::<WorkspaceView>(None) {
        let rows = view
            .status
            .as_ref()
            .map(inventory::rows)
            .unwrap_or_default();
        out.push_str(&inventory::table(&rows));
        out.push_str(&inventory::csv(&rows));
        out.push_str(&inventory::notes(&view).join("\n"));
        out.push_str(&serde_json::to_string(&inventory::list(&view, rows)).unwrap());
    }
    out
}

static RUN: tokio::sync::OnceCell<Run> = tokio::sync::OnceCell::const_new();

async fn run() -> &'static Run {
    RUN.get_or_init(full_run).await
}

#[tokio::test]
async fn a_full_run_leaks_no_secret_into_logs_events_status_or_metrics() {
    let run = run().await;
    // The run is real: logs were captured at TRACE/DEBUG, and the secrets reached the Secrets.
    assert!(
        run.logs.contains("TRACE") || run.logs.contains("DEBUG"),
        "{}",
        run.logs
    );
    assert!(
        run.logs.contains("kube_runtime"),
        "kube's debug logs are captured"
    );
    assert!(run.logs.contains(" not ready "), "failures are logged");
    assert!(run.logs.contains("notebook access token written"));
    assert!(run.events.contains("AuthenticationFailed"));
    assert!(run.resources.contains("InsufficientPrivileges"));
    // Access changes are covered too: their event, history and counter.
    assert!(run.events.contains("AccessChanged"));
    assert!(run.resources.contains("recentChanges"));
    assert!(run.metrics.contains(
        r#"workspace_access_inventory_changes_total{namespace="platform",name="datarobot",change="granted"} 1"#
    ));
    // The per-resource gauges were there to be searched, and the plugin's output too.
    for gauge in [
        "workspace_access_token_expiration_timestamp_seconds{",
        "workspace_access_token_renewal_timestamp_seconds{",
        "workspace_access_resource_ready_status{",
        "workspace_access_inventory_items{",
    ] {
        assert!(run.metrics.contains(gauge), "{gauge}: {}", run.metrics);
    }
    assert!(run.plugin.contains("ntr/ok") && run.plugin.contains("ann@example.com"));
    for w in &run.written {
        assert!(run.secrets.contains(w), "{w}");
    }
    let mut leaks = vec![];
    for secret in &run.secrets {
        for (place, text) in [
            ("logs", &run.logs),
            ("events", &run.events),
            ("resources (conditions and status)", &run.resources),
            ("metrics", &run.metrics),
            ("kubectl plugin output", &run.plugin),
        ] {
            if text.contains(secret.as_str()) {
                let line = text.lines().find(|l| l.contains(secret.as_str())).unwrap();
                leaks.push(format!("{secret} in {place}: {line}"));
            }
        }
        // Every request to the API server but a Secret's (status, events, finalizers, leases).
        for r in run.requests.iter().filter(|r| !r.path.contains("/secrets")) {
            let text = format!("{} {:?} {:?}", r.path, r.query, r.body);
            if text.contains(secret.as_str()) {
                leaks.push(format!("{secret} in {} {}", r.method, r.path));
            }
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

/// (API group, resource[/subresource], verb) of a request, as the API server authorizes it,
/// and its namespace. A server-side apply that creates its object needs `create` as well as
/// `patch`.
fn authorization_of(r: &RecordedRequest) -> Vec<(String, String, String, Option<String>)> {
    let parts: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts[0] {
        "api" => ("", &parts[2..]),
        _ => (parts[1], &parts[3..]),
    };
    let (namespace, rest) = if rest[0] == "namespaces" && rest.len() >= 3 {
        (Some(rest[1].to_owned()), &rest[2..])
    } else {
        (None, rest)
    };
    let resource = match rest.get(2) {
        Some(sub) => format!("{}/{sub}", rest[0]),
        None => rest[0].to_owned(),
    };
    let named = rest.len() >= 2;
    let verbs: &[&str] = match (r.method.as_str(), named) {
        ("GET", _) if r.is_watch() => &["watch"],
        ("GET", true) => &["get"],
        ("GET", false) => &["list"],
        ("POST", _) => &["create"],
        ("PUT", _) => &["update"],
        ("PATCH", _) if r.status == 201 => &["patch", "create"],
        ("PATCH", _) => &["patch"],
        ("DELETE", true) => &["delete"],
        ("DELETE", false) => &["deletecollection"],
        (m, _) => panic!("unexpected method {m}"),
    };
    verbs
        .iter()
        .map(|v| {
            (
                group.to_owned(),
                resource.clone(),
                v.to_string(),
                namespace.clone(),
            )
        })
        .collect()
}

type Grant = (String, String, String);

/// Every (API group, resource, verb) a Role or ClusterRole in `deploy/rbac.yaml` grants, and
/// whether it comes from a namespaced Role.
fn granted() -> Vec<(Grant, bool)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml");
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = vec![];
    for doc in docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
    {
        let namespaced = doc["kind"] == "Role";
        for rule in doc["rules"].as_array().unwrap() {
            let strings = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect()
            };
            assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
            for g in strings("apiGroups") {
                for r in strings("resources") {
                    for v in strings("verbs") {
                        assert!(g != "*" && r != "*" && v != "*", "no wildcards");
                        out.push(((g.clone(), r.clone(), v), namespaced));
                    }
                }
            }
        }
    }
    out
}

/// The ClusterRole and Role in deploy/ are exactly what the code uses: every (group, resource,
/// verb) the operator sent in a full run (three controllers with successes and failures,
/// finalizer removal, events and an event series, leader election) is granted, and every grant
/// was used. The Role (leases) is used only in the operator's own namespace.
#[tokio::test]
async fn the_shipped_rbac_is_exactly_what_a_full_run_uses() {
    let run = run().await;
    let mut used: BTreeSet<Grant> = BTreeSet::new();
    for r in &run.requests {
        for (g, res, v, ns) in authorization_of(r) {
            if g == "coordination.k8s.io" {
                assert_eq!(ns.as_deref(), Some(LEASE_NS), "{} {}", r.method, r.path);
            }
            used.insert((g, res, v));
        }
    }
    let grants = granted();
    let granted: BTreeSet<Grant> = grants.iter().map(|(g, _)| g.clone()).collect();
    for ((g, res, _), namespaced) in &grants {
        assert_eq!(
            *namespaced,
            g == "coordination.k8s.io",
            "only the leases are granted in a namespaced Role: {g}/{res}"
        );
    }
    let missing: Vec<_> = used.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "used but not granted: {missing:?}\ngranted but not used: {unused:?}"
    );
}

// ------------------------------------------------------------------------------------------
// The restricted Pod Security Standard

/// Violations of the restricted Pod Security Standard (baseline and restricted controls, as
/// of Kubernetes 1.30: https://kubernetes.io/docs/concepts/security/pod-security-standards/)
/// by a pod template (`metadata` and `spec`).
fn restricted_violations(template: &Value) -> Vec<String> {
    let mut v = vec![];
    let spec = &template["spec"];
    let pod_sc = &spec["securityContext"];
    let truthy = |x: &Value| x.as_bool() == Some(true);
    for f in ["hostNetwork", "hostPID", "hostIPC"] {
        if truthy(&spec[f]) {
            v.push(format!("host namespaces: {f}"));
        }
    }
    // Volume types (restricted); hostPath (baseline) is among the refused.
    const VOLUMES: &[&str] = &[
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for vol in spec["volumes"].as_array().into_iter().flatten() {
        for k in vol.as_object().unwrap().keys().filter(|k| *k != "name") {
            if !VOLUMES.contains(&k.as_str()) {
                v.push(format!("volume type {k}"));
            }
        }
    }
    // Sysctls: only the safe set.
    const SAFE_SYSCTLS: &[&str] = &[
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    ];
    for s in pod_sc["sysctls"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or_default();
        if !SAFE_SYSCTLS.contains(&name) {
            v.push(format!("unsafe sysctl {name}"));
        }
    }
    // AppArmor, by annotation.
    for (k, val) in template["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let val = val.as_str().unwrap_or_default();
        if k.starts_with("container.apparmor.security.beta.kubernetes.io/")
            && val != "runtime/default"
            && !val.starts_with("localhost/")
        {
            v.push(format!("AppArmor {k}={val}"));
        }
    }
    // Checks that apply to the pod's and each container's security context.
    let context_checks = |who: &str, sc: &Value, v: &mut Vec<String>| {
        if truthy(&sc["windowsOptions"]["hostProcess"]) {
            v.push(format!("{who}: windowsOptions.hostProcess"));
        }
        let se = &sc["seLinuxOptions"];
        if !se.is_null() {
            let t = se["type"].as_str().unwrap_or_default();
            if ![
                "",
                "container_t",
                "container_init_t",
                "container_kvm_t",
                "container_engine_t",
            ]
            .contains(&t)
            {
                v.push(format!("{who}: seLinuxOptions.type {t}"));
            }
            for f in ["user", "role"] {
                if !se[f].is_null() {
                    v.push(format!("{who}: seLinuxOptions.{f}"));
                }
            }
        }
        if sc["runAsUser"].as_i64() == Some(0) {
            v.push(format!("{who}: runAsUser 0"));
        }
        if sc["runAsNonRoot"].as_bool() == Some(false) {
            v.push(format!("{who}: runAsNonRoot false"));
        }
        for f in ["seccompProfile", "appArmorProfile"] {
            let t = sc[f]["type"].as_str();
            if t.is_some_and(|t| t != "RuntimeDefault" && t != "Localhost") {
                v.push(format!("{who}: {f}.type {}", t.unwrap_or_default()));
            }
        }
    };
    context_checks("pod", pod_sc, &mut v);
    let pod_non_root = truthy(&pod_sc["runAsNonRoot"]);
    let pod_seccomp = pod_sc["seccompProfile"]["type"].is_string();
    let mut containers = 0;
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            containers += 1;
            let who = format!("{list}/{}", c["name"].as_str().unwrap_or_default());
            let sc = &c["securityContext"];
            context_checks(&who, sc, &mut v);
            if truthy(&sc["privileged"]) {
                v.push(format!("{who}: privileged"));
            }
            if sc["allowPrivilegeEscalation"].as_bool() != Some(false) {
                v.push(format!("{who}: allowPrivilegeEscalation is not false"));
            }
            if !pod_non_root && !truthy(&sc["runAsNonRoot"]) {
                v.push(format!("{who}: runAsNonRoot is not true (nor on the pod)"));
            }
            if !pod_seccomp && !sc["seccompProfile"]["type"].is_string() {
                v.push(format!("{who}: no seccompProfile (nor on the pod)"));
            }
            let drops: Vec<&str> = sc["capabilities"]["drop"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !drops.contains(&"ALL") {
                v.push(format!("{who}: capabilities.drop lacks ALL"));
            }
            for add in sc["capabilities"]["add"].as_array().into_iter().flatten() {
                if add.as_str() != Some("NET_BIND_SERVICE") {
                    v.push(format!("{who}: capabilities.add {add}"));
                }
            }
            if sc["procMount"].as_str().is_some_and(|p| p != "Default") {
                v.push(format!("{who}: procMount {}", sc["procMount"]));
            }
            for p in c["ports"].as_array().into_iter().flatten() {
                if p["hostPort"].as_i64().is_some_and(|h| h != 0) {
                    v.push(format!("{who}: hostPort {}", p["hostPort"]));
                }
            }
        }
    }
    if containers == 0 {
        v.push("no containers".into());
    }
    v
}

fn deployment_template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/deployment.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    // It is a valid Deployment...
    let typed: Deployment = serde_saphyr::from_str(&text).unwrap();
    let template = serde_json::to_value(typed.spec.template).unwrap();
    // ...and nothing in the file was dropped by the typed read.
    let raw: Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(raw["spec"]["template"], template);
    template
}

#[test]
fn the_deployment_passes_the_restricted_pod_security_standard() {
    let template = deployment_template();
    assert_eq!(restricted_violations(&template), Vec::<String>::new());
    // The namespace enforces the same standard, so a change that breaks it is refused by the
    // API server too.
    let ns: Namespace = serde_saphyr::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/namespace.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let labels = ns.metadata.labels.unwrap();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    // Also what the README promises beyond the standard.
    let c = &template["spec"]["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(c["resources"]["limits"]["memory"].is_string());
    let pod: PodSpec = serde_json::from_value(template["spec"].clone()).unwrap();
    assert!(
        pod.automount_service_account_token != Some(false),
        "the operator needs its token"
    );
}

/// The checker catches every control: each of these edits of the shipped template breaks the
/// standard and is reported.
#[test]
fn the_pod_security_check_catches_each_violation() {
    let good = deployment_template();
    let edits: Vec<(&str, Value)> = vec![
        ("/spec/hostNetwork", json!(true)),
        ("/spec/hostPID", json!(true)),
        ("/spec/hostIPC", json!(true)),
        (
            "/spec/volumes",
            json!([{"name": "h", "hostPath": {"path": "/"}}]),
        ),
        (
            "/spec/volumes",
            json!([{"name": "n", "nfs": {"server": "x", "path": "/"}}]),
        ),
        (
            "/spec/securityContext/sysctls",
            json!([{"name": "kernel.msgmax", "value": "1"}]),
        ),
        (
            "/metadata/annotations",
            json!({"container.apparmor.security.beta.kubernetes.io/operator": "unconfined"}),
        ),
        (
            "/spec/securityContext/seccompProfile/type",
            json!("Unconfined"),
        ),
        ("/spec/securityContext/runAsUser", json!(0)),
        ("/spec/securityContext/runAsNonRoot", json!(false)),
        (
            "/spec/securityContext/seLinuxOptions",
            json!({"user": "root"}),
        ),
        (
            "/spec/securityContext/seLinuxOptions",
            json!({"type": "spc_t"}),
        ),
        (
            "/spec/securityContext/windowsOptions",
            json!({"hostProcess": true}),
        ),
        ("/spec/containers/0/securityContext/privileged", json!(true)),
        (
            "/spec/containers/0/securityContext/allowPrivilegeEscalation",
            json!(true),
        ),
        (
            "/spec/containers/0/securityContext/allowPrivilegeEscalation",
            Value::Null,
        ),
        (
            "/spec/containers/0/securityContext/capabilities",
            json!({"drop": ["NET_RAW"]}),
        ),
        (
            "/spec/containers/0/securityContext/capabilities",
            json!({"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
        ),
        (
            "/spec/containers/0/securityContext/procMount",
            json!("Unmasked"),
        ),
        ("/spec/containers/0/securityContext/runAsUser", json!(0)),
        (
            "/spec/containers/0/securityContext/seccompProfile",
            json!({"type": "Unconfined"}),
        ),
        (
            "/spec/containers/0/securityContext/appArmorProfile",
            json!({"type": "Unconfined"}),
        ),
        ("/spec/containers/0/ports/0/hostPort", json!(8080)),
        (
            "/spec/initContainers",
            json!([{"name": "init", "image": "busybox"}]),
        ),
        ("/spec/containers", json!([])),
    ];
    for (pointer, value) in edits {
        let mut t = good.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let parent = t.pointer_mut(parent).unwrap_or_else(|| panic!("{pointer}"));
        if value.is_null() {
            parent.as_object_mut().unwrap().remove(key);
        } else if let Ok(i) = key.parse::<usize>() {
            parent[i] = value;
        } else {
            parent[key] = value;
        }
        assert!(
            !restricted_violations(&t).is_empty(),
            "{pointer} was not caught"
        );
    }
    // Without the pod-level settings, each container must carry them.
    let mut t = good.clone();
    let pod_sc = t["spec"]["securityContext"].as_object_mut().unwrap();
    pod_sc.remove("runAsNonRoot");
    pod_sc.remove("seccompProfile");
    let found = restricted_violations(&t);
    assert!(
        found.iter().any(|f| f.contains("seccompProfile")),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|f| f.contains("runAsNonRoot")),
        "the container sets it"
    );
    t["spec"]["containers"][0]["securityContext"]
        .as_object_mut()
        .unwrap()
        .remove("runAsNonRoot");
    let found = restricted_violations(&t);
    assert!(
        found.iter().any(|f| f.contains("runAsNonRoot")),
        "{found:?}"
    );
}
