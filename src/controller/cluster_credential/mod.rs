//! ClusterCredentials: their status reconciler (is the spec valid, do its Secret and keys exist,
//! how many resources use it), the [`directory`] where credentials, Namespace labels and
//! credential Secrets are looked up, and the [`watch`]es that carry a change of a
//! ClusterCredential, of its Secret or of a Namespace's labels to exactly the resources it
//! concerns.
//!
//! Resolving a resource's `credentialRef` (allowed namespace, provider, Secret) is the client
//! factory's job (`clients/live.rs`), like every other credential; this module only reports on
//! the ClusterCredential itself. Its status never contains a credential value.

pub mod directory;
pub mod watch;

use crate::api::cluster_credential::{
    ClusterCredential, ClusterCredentialStatus, CredentialProvider, ProviderCredentials,
};
use crate::api::common::{
    AccessKeyRef, AlibabaCredentialSource, AzureCredentialSource, Condition, FIELD_MANAGER,
    SecretKeyRef,
};
use crate::controller::credentials::read_key;
use crate::controller::error::Error;
use crate::controller::validate;
use crate::controller::{Clock, retry_on_conflict};
use crate::metrics::Metrics;
use directory::CredentialDirectory;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// The kind's name, for metrics and logs.
pub const KIND: &str = "ClusterCredential";
/// Reason of a Ready=True ClusterCredential.
pub const VALID: &str = "Valid";
/// How often a ClusterCredential is checked again without any change (a safety net: changes
/// of its Secret and of the resources using it are watched).
pub const RECHECK: Duration = Duration::from_secs(600);

/// What the ClusterCredential reconciler needs.
pub struct CredentialContext {
    /// Kubernetes client (status writes).
    pub client: kube::Client,
    /// Where the credential Secrets are read.
    pub directory: Arc<CredentialDirectory>,
    /// The resources that may use ClusterCredentials (for `usedBy`), when watched.
    pub users: Option<watch::Users>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

/// Checks a ClusterCredential: which provider, and whether it is usable (its Secret and keys
/// exist) or why not. Values read are only checked, never kept.
pub async fn check(
    obj: &ClusterCredential,
    directory: &CredentialDirectory,
) -> (Option<CredentialProvider>, Result<String, Error>) {
    let credentials = match obj.spec.credentials() {
        Ok(c) => c,
        Err(m) => return (None, Err(Error::InvalidSpec(m))),
    };
    let provider = credentials.provider();
    if let Some(p) = obj.spec.allowed_namespaces.problem() {
        return (Some(provider), Err(Error::InvalidSpec(format!("spec.{p}"))));
    }
    (
        Some(provider),
        check_credentials(credentials, directory).await,
    )
}

async fn check_credentials(
    credentials: ProviderCredentials<'_>,
    directory: &CredentialDirectory,
) -> Result<String, Error> {
    let ns = directory.credential_namespace();
    let present = |r: &SecretKeyRef| format!("Secret {ns}/{} has key {:?}", r.name, r.key);
    match credentials {
        ProviderCredentials::Azure(a) => {
            let source = a
                .source()
                .map_err(|m| Error::InvalidSpec(format!("spec.{m}")))?;
            validate::name(
                "spec.azure.tenantId",
                &a.tenant_id,
                crate::api::names::is_tenant,
                "a Microsoft Entra tenant (a GUID, or a domain such as contoso.onmicrosoft.com)",
            )?;
            validate::name(
                "spec.azure.clientId",
                &a.client_id,
                crate::api::names::is_guid,
                "an application (client) ID (a GUID)",
            )?;
            match source {
                AzureCredentialSource::WorkloadIdentity => {
                    Ok("uses the operator pod's Azure workload identity".into())
                }
                AzureCredentialSource::ClientSecret(r) => {
                    validate::secret_key_ref("spec.azure.clientSecretRef", &r)?;
                    read_key(directory, ns, &r).await?;
                    Ok(present(&r))
                }
            }
        }
        ProviderCredentials::Alibaba(a) => match a
            .source()
            .map_err(|m| Error::InvalidSpec(format!("spec.{m}")))?
        {
            AlibabaCredentialSource::Rrsa => Ok("uses the operator pod's RRSA identity".into()),
            AlibabaCredentialSource::AccessKey(r) => {
                validate::access_key_ref("spec.alibaba.accessKeyRef", &r)?;
                let keys = access_keys(&r);
                for k in &keys {
                    read_key(directory, ns, k).await?;
                }
                let names: Vec<String> = keys.iter().map(|k| format!("{:?}", k.key)).collect();
                Ok(format!(
                    "Secret {ns}/{} has keys {}",
                    r.name,
                    names.join(", ")
                ))
            }
        },
        ProviderCredentials::DataRobot(d) => {
            validate::secret_key_ref("spec.dataRobot.apiTokenRef", &d.api_token_ref)?;
            read_key(directory, ns, &d.api_token_ref).await?;
            Ok(present(&d.api_token_ref))
        }
    }
}

/// The keys an AccessKey reference reads.
fn access_keys(r: &AccessKeyRef) -> Vec<SecretKeyRef> {
    let key = |k: &str| SecretKeyRef {
        name: r.name.clone(),
        key: k.to_owned(),
    };
    let mut keys = vec![key(&r.access_key_id_key), key(&r.access_key_secret_key)];
    if let Some(t) = r.security_token_key() {
        keys.push(key(t));
    }
    keys
}

/// The status for a check's outcome, keeping `lastTransitionTime` while Ready keeps its value.
pub fn status_for(
    current: Option<&ClusterCredentialStatus>,
    generation: Option<i64>,
    provider: Option<CredentialProvider>,
    outcome: &Result<String, Error>,
    used_by: Option<i64>,
    now: Timestamp,
) -> ClusterCredentialStatus {
    let (status, reason, message) = match outcome {
        Ok(m) => ("True", VALID.to_owned(), m.clone()),
        Err(e) => ("False", e.reason().as_str().to_owned(), e.message()),
    };
    let previous = current.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let last_transition_time = match previous {
        Some(c) if c.status == status => c.last_transition_time,
        _ => now,
    };
    let mut conditions: Vec<Condition> = current
        .map(|s| {
            s.conditions
                .iter()
                .filter(|c| c.type_ != "Ready")
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    conditions.push(Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time,
    });
    ClusterCredentialStatus {
        provider: provider.map(|p| p.as_str().to_owned()),
        used_by,
        observed_generation: generation,
        conditions,
    }
}

/// Reconciles one ClusterCredential: checks it and writes its status when that changed.
pub async fn reconcile(
    obj: Arc<ClusterCredential>,
    ctx: Arc<CredentialContext>,
) -> Result<Action, Error> {
    let name = obj.name_any();
    let (provider, outcome) = check(&obj, &ctx.directory).await;
    if let Err(e @ Error::Kube(_)) = &outcome {
        warn!(kind = KIND, name = %name, error = %e, "could not check the credential");
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let used_by = ctx
        .users
        .as_ref()
        .map(|u| i64::try_from(u.count(&name)).unwrap_or(i64::MAX));
    let desired = status_for(
        obj.status.as_ref(),
        obj.metadata.generation,
        provider,
        &outcome,
        used_by,
        ctx.clock.now(),
    );
    if obj.status.as_ref() != Some(&desired) {
        let body = serde_json::json!({
            "apiVersion": crate::api::common::GROUP.to_owned() + "/" + crate::api::common::VERSION,
            "kind": KIND,
            "status": desired,
        });
        let api: Api<ClusterCredential> = Api::all(ctx.client.clone());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&body);
        retry_on_conflict(|| api.patch_status(&name, &params, &patch)).await?;
        ctx.metrics.write(KIND, "status");
        match &outcome {
            Ok(_) => debug!(kind = KIND, name = %name, used_by = ?used_by, "credential valid"),
            Err(e) => info!(kind = KIND, name = %name, reason = e.reason().as_str(),
                            message = %e.message(), "credential not ready"),
        }
    }
    Ok(Action::requeue(RECHECK))
}

/// Requeue after an error that escaped [`reconcile`] (a failed status write).
pub fn error_policy(obj: Arc<ClusterCredential>, err: &Error, _: Arc<CredentialContext>) -> Action {
    warn!(kind = KIND, name = %obj.name_any(), error = %err, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::credentials::StaticSecretSource;
    use k8s_openapi::api::core::v1::Secret;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn ccred(spec: serde_json::Value) -> ClusterCredential {
        serde_json::from_value(json!({
            "apiVersion": "workspaceaccess.io/v1alpha1", "kind": "ClusterCredential",
            "metadata": {"name": "c", "generation": 2}, "spec": spec
        }))
        .unwrap()
    }

    /// (namespace, name, data) of a Secret.
    type SecretDoc<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    fn directory(secrets: &[SecretDoc<'_>]) -> CredentialDirectory {
        let mut src = StaticSecretSource::default();
        for (ns, name, data) in secrets {
            let s: Secret = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns},
                "stringData": data.iter().map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>()
            }))
            .unwrap();
            src.insert(s, ns);
        }
        CredentialDirectory::fixed("wao", [], BTreeMap::new(), Arc::new(src))
    }

    const SECRET_VALUE: &str = "ccred-check-secret-value";

    #[tokio::test]
    async fn reports_provider_and_whether_the_secret_and_keys_exist() {
        let d = directory(&[
            ("wao", "sp", &[("clientSecret", SECRET_VALUE)]),
            (
                "team-a",
                "ak",
                &[("accessKeyId", "x"), ("accessKeySecret", "y")],
            ),
        ]);
        let azure = ccred(json!({"azure": {"tenantId": "t.example.com",
            "clientId": "11111111-1111-1111-1111-111111111111",
            "clientSecretRef": {"name": "sp", "key": "clientSecret"}}}));
        let (p, outcome) = check(&azure, &d).await;
        assert_eq!(p, Some(CredentialProvider::Azure));
        let message = outcome.unwrap();
        assert_eq!(message, "Secret wao/sp has key \"clientSecret\"");

        // An AccessKey Secret in another namespace is not found: only the credential
        // namespace counts.
        let alibaba = ccred(json!({"alibaba": {"accessKeyRef": {"name": "ak"}}}));
        let (p, outcome) = check(&alibaba, &d).await;
        assert_eq!(p, Some(CredentialProvider::Alibaba));
        let err = outcome.unwrap_err();
        assert_eq!(err.reason().as_str(), "CredentialsNotFound");
        assert_eq!(err.to_string(), "Secret wao/ak not found");

        let dr = ccred(json!({"dataRobot": {"apiTokenRef": {"name": "sp", "key": "apiToken"}}}));
        let err = check(&dr, &d).await.1.unwrap_err();
        assert!(err.to_string().contains("has no key \"apiToken\""), "{err}");

        let rrsa = ccred(json!({"alibaba": {"rrsa": true}}));
        assert!(check(&rrsa, &d).await.1.unwrap().contains("RRSA"));

        for (bad, says) in [
            (json!({}), "set one of"),
            (
                json!({"alibaba": {"rrsa": true}, "dataRobot": {"apiTokenRef": {"name": "a", "key": "b"}}}),
                "only one",
            ),
            (json!({"alibaba": {}}), "spec.alibaba: set accessKeyRef"),
            (
                json!({"alibaba": {"rrsa": true}, "allowedNamespaces": {"names": ["Bad"]}}),
                "spec.allowedNamespaces.names",
            ),
            (
                json!({"dataRobot": {"apiTokenRef": {"name": "../x", "key": "k"}}}),
                "spec.dataRobot.apiTokenRef.name",
            ),
        ] {
            let err = check(&ccred(bad.clone()), &d).await.1.unwrap_err();
            assert_eq!(err.reason().as_str(), "InvalidSpec", "{bad}");
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn the_status_names_no_value_and_keeps_its_transition_time() {
        let d = directory(&[("wao", "sp", &[("clientSecret", SECRET_VALUE)])]);
        let obj =
            ccred(json!({"dataRobot": {"apiTokenRef": {"name": "sp", "key": "clientSecret"}}}));
        let (p, outcome) = check(&obj, &d).await;
        let t0: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-11-23T11:00:00Z".parse().unwrap();
        let first = status_for(None, Some(2), p, &outcome, Some(3), t0);
        assert_eq!(first.provider.as_deref(), Some("DataRobot"));
        assert_eq!(first.used_by, Some(3));
        assert_eq!(first.conditions[0].reason, "Valid");
        assert!(
            !serde_json::to_string(&first)
                .unwrap()
                .contains(SECRET_VALUE)
        );
        let again = status_for(Some(&first), Some(2), p, &outcome, Some(3), t1);
        assert_eq!(again, first, "an unchanged check writes nothing");
        let failed = status_for(
            Some(&first),
            Some(3),
            p,
            &Err(Error::CredentialsNotFound("gone".into())),
            Some(3),
            t1,
        );
        assert_eq!(failed.conditions[0].status, "False");
        assert_eq!(failed.conditions[0].last_transition_time, t1);
    }
}
