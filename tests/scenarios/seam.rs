//! Reconcilers against a scripted provider seam (`support::fake_clients`): what they do with
//! the answers, without HTTP or signing fakes in the way.

use crate::support::fake_clients::{FakeClients, Handle};
use crate::support::*;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use workspace_access_operator::api::{LivyToken, NotebookTokenRequest, WorkspaceView};
use workspace_access_operator::controller::driver::reconcile;
use workspace_access_operator::controller::error::Error;
use workspace_access_operator::controller::livy::FINALIZER;
use workspace_access_operator::controller::{Context, Settings};
use workspace_access_operator::providers::azure_ml::NotebookAccessToken;
use workspace_access_operator::providers::emr_spark::{AutoExpire, LivyTokenInfo};
use workspace_access_operator::providers::error::{ProviderError, ProviderErrorKind};
use workspace_access_operator::providers::fabric::Workspace;
use workspace_access_operator::redact::SecretString;

const NS: &str = "team-a";

fn ctx(
    s: &fake_api::FakeApiServer,
    fake: FakeClients,
) -> (
    Arc<Context>,
    Arc<FakeClients>,
    Arc<workspace_access_operator::controller::ManualClock>,
) {
    let fake = Arc::new(fake);
    let clock = Arc::new(workspace_access_operator::controller::ManualClock::new(t0()));
    let ctx = builder(s, Settings::default())
        .clock(clock.clone())
        .clients(Arc::new(Handle(fake.clone())))
        .build();
    (Arc::new(ctx), fake, clock)
}

fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value) -> K {
    let mut metadata = json!({"name": name, "namespace": NS});
    if kind == "LivyToken" {
        metadata["finalizers"] = json!([FINALIZER]);
    }
    serde_json::from_value(json!({
        "apiVersion": "workspaceaccess.io/v1alpha1", "kind": kind,
        "metadata": metadata, "spec": spec,
    }))
    .unwrap()
}

fn ntr(name: &str) -> NotebookTokenRequest {
    object(
        "NotebookTokenRequest",
        name,
        json!({
            "subscriptionId": "00000000-1111-2222-3333-444444444444",
            "resourceGroup": "rg", "workspaceName": "okws",
            "azure": {"tenantId": "contoso.onmicrosoft.com",
                      "clientId": "11111111-1111-1111-1111-111111111111",
                      "clientSecretRef": {"name": "azure-sp", "key": "clientSecret"}},
        }),
    )
}

fn notebook_token() -> NotebookAccessToken {
    NotebookAccessToken {
        access_token: SecretString::new("scripted-access-token"),
        refresh_token: None,
        expires_in: Duration::from_secs(3600),
        notebook_resource_id: Some("nb-1".into()),
        host_name: None,
        public_dns: Some("nb.example".into()),
        token_type: Some("Bearer".into()),
        scope: None,
        request_id: None,
    }
}

#[tokio::test]
async fn a_scripted_notebook_token_reaches_the_secret_once() {
    let s = server();
    let (ctx, fake, clock) = ctx(
        &s,
        FakeClients {
            notebook_access_token: Arc::new(|_| Ok(notebook_token())),
            ..Default::default()
        },
    );
    let obj = s.insert(&ntr("ml"));
    reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
    let secret: k8s_openapi::api::core::v1::Secret = s.get(NS, "ml").expect("Secret written");
    assert_eq!(
        secret_value(&secret, "accessToken").as_deref(),
        Some("scripted-access-token")
    );
    assert_eq!(
        secret_value(&secret, "publicDns").as_deref(),
        Some("nb.example")
    );
    let status = s
        .get::<NotebookTokenRequest>(NS, "ml")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.public_dns.as_deref(), Some("nb.example"));
    assert_eq!(
        status.expires_at,
        Some(workspace_access_operator::time::add(
            t0(),
            Duration::from_secs(3600)
        ))
    );

    // A resync before the renewal time asks the factory (credentials are checked every time)
    // but not the provider.
    clock.advance(Duration::from_secs(600));
    let obj: NotebookTokenRequest = s.get(NS, "ml").unwrap();
    reconcile(Arc::new(obj), ctx).await.unwrap();
    assert_eq!(fake.count("notebook_access_token"), 1);
    assert_eq!(fake.count("factory:notebook"), 2);
}

#[tokio::test]
async fn a_factory_refusal_is_the_reason_and_no_client_is_called() {
    let s = server();
    let (ctx, fake, _) = ctx(
        &s,
        FakeClients {
            factory: Arc::new(|_| {
                Err(Error::PodIdentityNotAllowed(
                    "spec.azure.workloadIdentity: not in this namespace".into(),
                ))
            }),
            notebook_access_token: Arc::new(|_| Ok(notebook_token())),
            ..Default::default()
        },
    );
    let obj = s.insert(&ntr("ml"));
    reconcile(Arc::new(obj), ctx).await.unwrap();
    let status = s
        .get::<NotebookTokenRequest>(NS, "ml")
        .unwrap()
        .status
        .unwrap();
    let ready = status.common.ready().unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "PodIdentityNotAllowed")
    );
    assert_eq!(fake.calls(), ["factory:notebook"]);
    assert!(
        s.get::<k8s_openapi::api::core::v1::Secret>(NS, "ml")
            .is_none()
    );
}

fn livy_info(id: &str, name: &str) -> LivyTokenInfo {
    LivyTokenInfo {
        token_id: id.into(),
        name: Some(name.into()),
        token: Some(SecretString::new("scripted-livy-token")),
        created_by: None,
        create_time: Some(t0()),
        expire_time: Some(workspace_access_operator::time::add(
            t0(),
            Duration::from_secs(7 * 86_400),
        )),
        last_used_time: None,
        auto_expire: Some(AutoExpire {
            enable: true,
            expire_days: 7,
        }),
    }
}

/// The created token is recorded (through the driver's checkpoint) before anything can fail:
/// a create whose token can't be read yet leaves it in `status.managed.pending`, and the next
/// sync resumes with it instead of creating another.
#[tokio::test]
async fn a_created_livy_token_is_recorded_before_it_is_read() {
    let s = server();
    let created: Arc<Mutex<Option<String>>> = Arc::default();
    let readable = Arc::new(AtomicBool::new(false));
    let (c, r) = (created.clone(), readable.clone());
    let (ctx, fake, _) = ctx(
        &s,
        FakeClients {
            list_tokens: Arc::new(|_| Ok(Vec::new())),
            create_token: Arc::new(move |(_, name)| {
                *c.lock().unwrap() = Some(name);
                Ok("lctk-new".into())
            }),
            get_token: Arc::new(move |(_, id)| {
                let name = created.lock().unwrap().clone().unwrap_or_default();
                if r.load(Ordering::SeqCst) && id == "lctk-new" {
                    Ok(livy_info(&id, &name))
                } else {
                    Err(ProviderError::new(ProviderErrorKind::NotFound, "no such token").into())
                }
            }),
            ..Default::default()
        },
    );
    let spec = json!({
        "regionId": "cn-hangzhou", "workspaceId": "w-1", "livyComputeId": "lc-1",
        "managed": {"expireDays": 7}, "alibaba": {"rrsa": true},
    });
    let obj: LivyToken = s.insert(&object("LivyToken", "spark", spec));
    reconcile(Arc::new(obj), ctx.clone()).await.unwrap();
    let status = s.get::<LivyToken>(NS, "spark").unwrap().status.unwrap();
    let ready = status.common.ready().unwrap();
    assert_eq!(ready.reason, "ProviderError");
    assert!(ready.message.contains("just created"), "{}", ready.message);
    let pending = status.managed.as_ref().and_then(|m| m.pending.as_ref());
    assert_eq!(pending.map(|p| p.token_id.as_str()), Some("lctk-new"));
    assert!(
        s.get::<k8s_openapi::api::core::v1::Secret>(NS, "spark")
            .is_none()
    );

    readable.store(true, Ordering::SeqCst);
    let obj: LivyToken = s.get(NS, "spark").unwrap();
    reconcile(Arc::new(obj), ctx).await.unwrap();
    assert_eq!(fake.count("create_token"), 1, "{:?}", fake.calls());
    assert_eq!(fake.count("list_tokens"), 1);
    let status = s.get::<LivyToken>(NS, "spark").unwrap().status.unwrap();
    let managed = status.managed.unwrap();
    assert_eq!(managed.pending, None);
    assert_eq!(managed.current.unwrap().token_id, "lctk-new");
    let secret: k8s_openapi::api::core::v1::Secret = s.get(NS, "spark").unwrap();
    assert_eq!(
        secret_value(&secret, "token").as_deref(),
        Some("scripted-livy-token")
    );
}

#[tokio::test]
async fn a_scripted_fabric_inventory_becomes_the_status_sorted_by_id() {
    let s = server();
    let ws = |id: &str, name: &str| Workspace {
        id: id.into(),
        display_name: Some(name.into()),
        description: None,
        type_: Some("Workspace".into()),
        capacity_id: None,
    };
    let (ctx, fake, _) = ctx(
        &s,
        FakeClients {
            list_workspaces: Arc::new(move |roles| {
                assert_eq!(roles, ["Admin"]);
                Ok(vec![ws("b-2", "Finance"), ws("a-1", "Marketing")])
            }),
            ..Default::default()
        },
    );
    let spec = json!({"fabric": {
        "roles": ["Admin"],
        "azure": {"tenantId": "contoso.onmicrosoft.com",
                  "clientId": "11111111-1111-1111-1111-111111111111",
                  "clientSecretRef": {"name": "fabric-sp", "key": "clientSecret"}},
    }});
    let obj: WorkspaceView = s.insert(&object("WorkspaceView", "fabric", spec));
    reconcile(Arc::new(obj), ctx).await.unwrap();
    let status = s
        .get::<WorkspaceView>(NS, "fabric")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.count, Some(2));
    let ids: Vec<&str> = status.workspaces.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, ["a-1", "b-2"]);
    assert_eq!(fake.calls(), ["factory:fabric", "list_workspaces"]);
}
