//! `workspace-access-operator preview -f resource.yaml [-f credentials-secret.yaml]`: syncs one
//! resource once without a cluster and reports the status it would write and the Secret keys
//! (values redacted). Credentials come from Secret manifests given with `-f`; a resource with a
//! `credentialRef` finds its ClusterCredential among the documents too (its Secrets in the
//! credential namespace, the resource's Namespace for a label selector). A ClusterCredential
//! given without a resource is checked as the operator checks it for its status.

use crate::api::common::{GROUP, VERSION};
use crate::api::{ClusterCredential, LivyToken, NotebookTokenRequest, WorkspaceView};
use crate::controller::cluster_credential::{self, directory::CredentialDirectory};
use crate::controller::credentials::StaticSecretSource;
use crate::controller::driver::{Preview, Reconciler};
use crate::controller::{Context, Settings};
use crate::metrics::Metrics;
use crate::providers::http::HttpClient;
use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

/// The outcome of a preview.
#[derive(Debug)]
pub struct Report {
    /// The report as YAML.
    pub yaml: String,
    /// Whether the resource would be Ready.
    pub ready: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    resource: String,
    ready: bool,
    reason: String,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<SecretOutput>,
}

#[derive(Serialize)]
struct SecretOutput {
    name: String,
    keys: std::collections::BTreeMap<String, String>,
}

/// Loads the documents in `files`, previews the one resource among them, and reports.
pub async fn run(
    files: &[impl AsRef<Path>],
    default_namespace: &str,
    settings: Settings,
    metrics: Arc<Metrics>,
    http: HttpClient,
) -> anyhow::Result<Report> {
    let mut docs = Vec::new();
    for f in files {
        let path = f.as_ref();
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| anyhow!("{}: not valid YAML: {e}", path.display()))?;
        docs.extend(parsed.into_iter().filter(|d| !d.is_null()));
    }
    preview_documents(docs, default_namespace, settings, metrics, http).await
}

/// Previews the one resource among `docs`, with the Secrets among them as credentials.
pub async fn preview_documents(
    docs: Vec<Value>,
    default_namespace: &str,
    settings: Settings,
    metrics: Arc<Metrics>,
    http: HttpClient,
) -> anyhow::Result<Report> {
    let ours = format!("{GROUP}/{VERSION}");
    let mut secrets = StaticSecretSource::default();
    let mut resource: Option<Value> = None;
    let mut credentials: Vec<ClusterCredential> = vec![];
    let mut namespaces = std::collections::BTreeMap::new();
    for doc in docs {
        let api_version = doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Secret") => {
                let s: Secret =
                    serde_json::from_value(doc).context("a Secret document is malformed")?;
                secrets.insert(s, default_namespace);
            }
            ("v1", "Namespace") => {
                let n: k8s_openapi::api::core::v1::Namespace =
                    serde_json::from_value(doc).context("a Namespace document is malformed")?;
                namespaces.insert(n.name_any(), n.labels().clone());
            }
            (v, "ClusterCredential") if v == ours => {
                let mut c: ClusterCredential = serde_json::from_value(doc)
                    .map_err(|e| anyhow!("the ClusterCredential is invalid: {e}"))?;
                c.metadata.generation = Some(1);
                credentials.push(c);
            }
            (v, "NotebookTokenRequest" | "LivyToken" | "WorkspaceView") if v == ours => {
                if resource.is_some() {
                    bail!("give exactly one {ours} resource; found more than one");
                }
                resource = Some(doc);
            }
            _ => bail!(
                "unsupported document {api_version}/{kind}: give one {ours} resource, v1 Secrets, \
                 ClusterCredentials and v1 Namespaces"
            ),
        }
    }
    let secrets = Arc::new(secrets);
    let directory = Arc::new(CredentialDirectory::fixed(
        settings.credential_namespace.clone(),
        credentials.clone(),
        namespaces,
        secrets.clone(),
    ));
    let mut doc = match resource {
        Some(doc) => doc,
        None if credentials.len() == 1 => {
            return check_credential(&credentials[0], &directory).await;
        }
        None => bail!(
            "no {ours} resource among the documents (give one, or a single ClusterCredential to \
             check it)"
        ),
    };
    let meta = doc
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow!("the resource has no metadata"))?;
    meta.entry("namespace")
        .or_insert_with(|| Value::from(default_namespace));
    meta.insert(
        "uid".into(),
        Value::from("00000000-0000-0000-0000-preview00000"),
    );
    meta.insert("generation".into(), Value::from(1));

    let ctx = Arc::new(
        Context::builder(offline_client(default_namespace), settings, metrics, http)
            .secrets(secrets)
            .credentials(directory)
            .build(),
    );
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match kind.as_str() {
        "NotebookTokenRequest" => one::<NotebookTokenRequest>(doc, ctx).await,
        "LivyToken" => one::<LivyToken>(doc, ctx).await,
        _ => one::<WorkspaceView>(doc, ctx).await,
    }
}

/// The check the operator makes for a ClusterCredential's status.
async fn check_credential(
    credential: &ClusterCredential,
    directory: &CredentialDirectory,
) -> anyhow::Result<Report> {
    let (provider, outcome) = cluster_credential::check(credential, directory).await;
    let status = cluster_credential::status_for(
        None,
        Some(1),
        provider,
        &outcome,
        None,
        jiff::Timestamp::now(),
    );
    let ready = outcome.is_ok();
    let (reason, message) = status
        .conditions
        .first()
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default();
    let out = Output {
        resource: format!("ClusterCredential {}", credential.name_any()),
        ready,
        reason,
        message,
        status: Some(serde_json::to_value(status)?),
        secret: None,
    };
    Ok(Report {
        ready,
        yaml: serde_saphyr::to_string(&out)?,
    })
}

async fn one<K: Reconciler>(doc: Value, ctx: Arc<Context>) -> anyhow::Result<Report> {
    let obj: K =
        serde_json::from_value(doc).map_err(|e| anyhow!("the {} is invalid: {e}", K::KIND))?;
    let resource = format!(
        "{} {}/{}",
        K::KIND,
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    );
    let out = match K::preview(Arc::new(obj), ctx).await {
        Ok(Preview {
            status,
            message,
            secret_name,
            secret_keys,
        }) => Output {
            resource,
            ready: true,
            reason: "Synced".into(),
            message,
            status: Some(serde_json::to_value(status)?),
            secret: secret_name.map(|name| SecretOutput {
                name,
                keys: secret_keys
                    .into_iter()
                    .map(|k| (k, "[redacted]".into()))
                    .collect(),
            }),
        },
        Err(e) => Output {
            resource,
            ready: false,
            reason: e.reason().as_str().into(),
            message: e.message(),
            status: None,
            secret: None,
        },
    };
    Ok(Report {
        ready: out.ready,
        yaml: serde_saphyr::to_string(&out)?,
    })
}

/// A client for a cluster that isn't there: every request fails. Preview code paths never use
/// it; if one did by mistake, it fails instead of reaching a real cluster.
fn offline_client(namespace: &str) -> kube::Client {
    let service = tower::service_fn(|_req: http::Request<kube::client::Body>| async {
        Err::<http::Response<kube::client::Body>, _>(std::io::Error::other(
            "preview runs without a cluster",
        ))
    });
    kube::Client::new(service, namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::HttpOptions;

    fn http() -> (Arc<Metrics>, HttpClient) {
        let m = Arc::new(Metrics::new());
        (
            m.clone(),
            HttpClient::new(HttpOptions::default(), m).unwrap(),
        )
    }

    fn yaml(s: &str) -> Vec<Value> {
        serde_saphyr::from_multiple(s).unwrap()
    }

    const WSV: &str = r#"
apiVersion: workspaceaccess.io/v1alpha1
kind: WorkspaceView
metadata: {name: dr}
spec:
  dataRobot:
    notebookIds: [abc]
    apiTokenRef: {name: datarobot, key: apiToken}
"#;

    #[tokio::test]
    async fn reports_missing_credentials_without_a_cluster() {
        let (m, h) = http();
        let r = preview_documents(yaml(WSV), "team-a", Settings::default(), m, h)
            .await
            .unwrap();
        assert!(!r.ready);
        assert!(r.yaml.contains("reason: CredentialsNotFound"), "{}", r.yaml);
        assert!(
            r.yaml.contains("Secret team-a/datarobot not found"),
            "{}",
            r.yaml
        );
    }

    #[tokio::test]
    async fn uses_secrets_from_the_given_documents() {
        use httpmock::prelude::*;
        let server = MockServer::start_async().await;
        let bulk = server
            .mock_async(|when, then| {
                when.method(GET)
                    .path("/api/v2/notebooks/sharedRoles/")
                    .query_param("notebookIds", "abc")
                    .header("authorization", "Token very-secret");
                then.status(200)
                    .json_body(serde_json::json!({"data": [{"notebookId": "abc",
                    "roles": [{"id": "u1", "name": "alice@example.com", "role": "OWNER",
                               "shareRecipientType": "user"}]}]}));
            })
            .await;
        let (m, h) = http();
        let docs = format!(
            "{}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: datarobot}}\nstringData: {{apiToken: very-secret}}\n",
            WSV.replace(
                "dataRobot:",
                &format!("dataRobot:\n    endpoint: {}", server.url("/api/v2"))
            )
        );
        let settings = Settings {
            endpoint_policy: crate::providers::endpoint::EndpointPolicy::new(vec![
                format!("127.0.0.1:{}", server.address().port())
                    .parse()
                    .unwrap(),
            ]),
            ..Settings::default()
        };
        let r = preview_documents(yaml(&docs), "team-a", settings, m, h)
            .await
            .unwrap();
        bulk.assert_async().await;
        assert!(r.ready, "{}", r.yaml);
        assert!(r.yaml.contains("message: 1 notebook"), "{}", r.yaml);
        assert!(r.yaml.contains("alice@example.com"), "{}", r.yaml);
        assert!(!r.yaml.contains("very-secret"));
    }

    #[tokio::test]
    async fn previews_a_notebook_token_request_without_writing_anything() {
        use httpmock::prelude::*;
        let azure = MockServer::start_async().await;
        let entra = azure
            .mock_async(|when, then| {
                when.method(POST)
                    .path("/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token")
                    .form_urlencoded_tuple("client_secret", "sp-secret");
                then.status(200)
                    .body(r#"{"token_type":"Bearer","expires_in":3599,"access_token":"arm"}"#);
            })
            .await;
        let arm = azure
            .mock_async(|when, then| {
                when.method(POST)
                    .path_suffix("/workspaces/testworkspace/listNotebookAccessToken")
                    .header("authorization", "Bearer arm");
                then.status(200).body(
                    r#"{"notebookResourceId":"94350843095843059","hostName":"Host product name",
                        "publicDns":"resource.notebooks.azure.net","tokenType":"Bearer",
                        "expiresIn":28800.0,"scope":"aznb_identity",
                        "accessToken":"very-secret-notebook-token"}"#,
                );
            })
            .await;
        let docs = format!(
            r#"
apiVersion: workspaceaccess.io/v1alpha1
kind: NotebookTokenRequest
metadata: {{name: ml}}
spec:
  subscriptionId: 00000000-1111-2222-3333-444444444444
  resourceGroup: workspace-1234
  workspaceName: testworkspace
  endpoint: {url}
  azure:
    tenantId: 00000000-0000-0000-0000-000000000000
    clientId: 11111111-1111-1111-1111-111111111111
    clientSecretRef: {{name: azure-sp, key: clientSecret}}
    authorityHost: {url}
  secretTemplate:
    data:
      netrc: "machine {{{{ publicDns }}}} login token password {{{{ accessToken }}}}"
---
apiVersion: v1
kind: Secret
metadata: {{name: azure-sp}}
stringData: {{clientSecret: sp-secret}}
"#,
            url = azure.base_url()
        );
        let settings = Settings {
            endpoint_policy: crate::providers::endpoint::EndpointPolicy::new(vec![
                "127.0.0.1".parse().unwrap(),
            ]),
            ..Settings::default()
        };
        let (m, h) = http();
        let r = preview_documents(yaml(&docs), "team-a", settings, m.clone(), h)
            .await
            .unwrap();
        assert!(r.ready, "{}", r.yaml);
        for wanted in [
            "resource: NotebookTokenRequest team-a/ml",
            "reason: Synced",
            "token valid until",
            "hostName: Host product name",
            "notebookResourceId: \"94350843095843059\"",
            "name: ml",
            "accessToken: \"[redacted]\"",
            "publicDns: \"[redacted]\"",
            // The templated key, rendered (a template that doesn't render fails the preview).
            "netrc: \"[redacted]\"",
        ] {
            assert!(r.yaml.contains(wanted), "{wanted:?} in {}", r.yaml);
        }
        assert!(!r.yaml.contains("refreshToken"), "absent keys are left out");
        assert!(!r.yaml.contains("very-secret") && !r.yaml.contains("sp-secret"));
        entra.assert_calls_async(1).await;
        arm.assert_calls_async(1).await;
        assert!(
            m.encode()
                .contains("workspace_access_provider_calls_total{")
        );
    }

    #[tokio::test]
    async fn a_template_error_fails_the_preview_before_any_provider_call() {
        let docs = r#"
apiVersion: workspaceaccess.io/v1alpha1
kind: NotebookTokenRequest
metadata: {name: ml}
spec:
  subscriptionId: 00000000-1111-2222-3333-444444444444
  resourceGroup: workspace-1234
  workspaceName: testworkspace
  azure:
    tenantId: 00000000-0000-0000-0000-000000000000
    clientId: 11111111-1111-1111-1111-111111111111
    clientSecretRef: {name: azure-sp, key: clientSecret}
  secretTemplate:
    data:
      netrc: "password {{ accesToken }}"
"#;
        let (m, h) = http();
        let r = preview_documents(yaml(docs), "team-a", Settings::default(), m.clone(), h)
            .await
            .unwrap();
        assert!(!r.ready, "{}", r.yaml);
        assert!(r.yaml.contains("reason: InvalidSpec"), "{}", r.yaml);
        assert!(
            r.yaml
                .contains(r#"spec.secretTemplate.data[\"netrc\"]: undefined variable accesToken"#),
            "{}",
            r.yaml
        );
        assert!(
            !m.encode()
                .contains("workspace_access_provider_calls_total{")
        );
    }

    const CCRED: &str = r#"
apiVersion: workspaceaccess.io/v1alpha1
kind: ClusterCredential
metadata: {name: dr-prod}
spec:
  dataRobot:
    apiTokenRef: {name: datarobot, key: apiToken}
    authScheme: Bearer
  allowedNamespaces:
    selector: {matchLabels: {datarobot: "yes"}}
"#;

    #[tokio::test]
    async fn previews_a_resource_using_a_cluster_credential() {
        use httpmock::prelude::*;
        let server = MockServer::start_async().await;
        let bulk = server
            .mock_async(|when, then| {
                when.method(GET)
                    .path("/api/v2/notebooks/sharedRoles/")
                    .header("authorization", "Bearer platform-dr-key");
                then.status(200)
                    .json_body(serde_json::json!({"data": [{"notebookId": "abc", "roles": []}]}));
            })
            .await;
        let resource = format!(
            "apiVersion: workspaceaccess.io/v1alpha1\nkind: WorkspaceView\nmetadata: {{name: dr}}\n\
             spec:\n  dataRobot:\n    endpoint: {}\n    notebookIds: [abc]\n    \
             credentialRef: {{name: dr-prod}}\n",
            server.url("/api/v2")
        );
        // The Secret is in the credential namespace; one of that name in the resource's
        // namespace is not the credential's.
        let secrets = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: datarobot, namespace: wao}\n\
                       stringData: {apiToken: platform-dr-key}\n\
                       ---\napiVersion: v1\nkind: Secret\nmetadata: {name: datarobot}\n\
                       stringData: {apiToken: team-key}\n";
        let labelled = "---\napiVersion: v1\nkind: Namespace\n\
                        metadata: {name: team-a, labels: {datarobot: \"yes\"}}\n";
        let settings = || Settings {
            endpoint_policy: crate::providers::endpoint::EndpointPolicy::new(vec![
                "127.0.0.1".parse().unwrap(),
            ]),
            credential_namespace: "wao".into(),
            ..Settings::default()
        };
        let (m, h) = http();
        let docs = format!("{resource}---\n{CCRED}{secrets}");
        let r = preview_documents(yaml(&docs), "team-a", settings(), m.clone(), h.clone())
            .await
            .unwrap();
        assert!(!r.ready, "{}", r.yaml);
        assert!(
            r.yaml.contains("reason: CredentialNotAllowed"),
            "{}",
            r.yaml
        );

        let docs = format!("{resource}---\n{CCRED}{secrets}{labelled}");
        let r = preview_documents(yaml(&docs), "team-a", settings(), m.clone(), h.clone())
            .await
            .unwrap();
        assert!(r.ready, "{}", r.yaml);
        bulk.assert_async().await;
        assert!(!r.yaml.contains("platform-dr-key"), "{}", r.yaml);

        // A ClusterCredential alone is checked as the operator checks it.
        let r = preview_documents(
            yaml(&format!("{CCRED}{secrets}")),
            "team-a",
            settings(),
            m.clone(),
            h.clone(),
        )
        .await
        .unwrap();
        assert!(r.ready, "{}", r.yaml);
        assert!(
            r.yaml.contains("resource: ClusterCredential dr-prod"),
            "{}",
            r.yaml
        );
        assert!(r.yaml.contains("reason: Valid"), "{}", r.yaml);
        assert!(r.yaml.contains("provider: DataRobot"), "{}", r.yaml);
        let r = preview_documents(yaml(CCRED), "team-a", settings(), m, h)
            .await
            .unwrap();
        assert!(!r.ready);
        assert!(
            r.yaml.contains("Secret wao/datarobot not found"),
            "{}",
            r.yaml
        );
    }

    #[tokio::test]
    async fn refuses_unrelated_or_ambiguous_input() {
        let (m, h) = http();
        let err = preview_documents(
            yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
            "d",
            Settings::default(),
            m.clone(),
            h.clone(),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("unsupported document v1/ConfigMap"),
            "{err}"
        );
        let two = format!("{WSV}\n---\n{WSV}");
        let err = preview_documents(yaml(&two), "d", Settings::default(), m.clone(), h.clone())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("more than one"), "{err}");
        let err = preview_documents(vec![], "d", Settings::default(), m, h)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("no workspaceaccess.io/v1alpha1 resource"),
            "{err}"
        );
    }
}
