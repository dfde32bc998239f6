//! Reconciler of `NotebookTokenRequest`: an Azure Machine Learning notebook access token in a
//! Secret, renewed before it expires.
//!
//! One sync: validate the spec, endpoint and credentials; look at the Secret. If the Secret is
//! ours and records a token obtained for this generation whose renewal time has not come, no
//! Azure call is made (resyncs, the operator's own status writes and restarts cost nothing);
//! otherwise get an ARM token from the shared Entra cache, call `listNotebookAccessToken`,
//! write the Secret and report the token's metadata in the status. A failure leaves the Secret
//! as it is. A renew request (the `workspaceaccess.io/renew-requested-at` annotation with a
//! value not handled yet) mints a new token even when the recorded one is still good.

use crate::api::NotebookTokenRequest;
use crate::api::common::TokenSecretSpec;
use crate::api::notebook_token_request::NotebookTokenRequestStatus;
use crate::controller::clients::NotebookTokens;
use crate::controller::consumers::{self, TokenKind, TokenSecret};
use crate::controller::driver::renew_request;
use crate::controller::error::Error;
use crate::controller::schedule::{self, RecordedToken, recorded_token};
use crate::controller::secret::{SecretContent, SecretState, check_ownership, secret_name};
use crate::controller::status::Checkpoint;
use crate::controller::{Context, Preview, Reconciler, Synced, validate};
use crate::providers::azure_ml::NotebookAccessToken;
use crate::redact::SecretString;
use crate::time::{rfc3339, whole_second};
use async_trait::async_trait;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::info;

/// Keys of the Secret holding the token.
pub mod keys {
    /// The notebook access token.
    pub const ACCESS_TOKEN: &str = "accessToken";
    /// The refresh token, when Azure returns one.
    pub const REFRESH_TOKEN: &str = "refreshToken";
    /// Token type, e.g. Bearer.
    pub const TOKEN_TYPE: &str = "tokenType";
    /// Expiry, RFC 3339.
    pub const EXPIRES_AT: &str = "expiresAt";
    /// Host name returned by Azure.
    pub const HOST_NAME: &str = "hostName";
    /// Public DNS name of the notebook service.
    pub const PUBLIC_DNS: &str = "publicDns";
    /// Notebook resource ID.
    pub const NOTEBOOK_RESOURCE_ID: &str = "notebookResourceId";
    /// Token scope.
    pub const SCOPE: &str = "scope";
    /// Every key, in the order `kubectl explain` lists them.
    pub const ALL: [&str; 8] = [
        ACCESS_TOKEN,
        REFRESH_TOKEN,
        TOKEN_TYPE,
        EXPIRES_AT,
        HOST_NAME,
        PUBLIC_DNS,
        NOTEBOOK_RESOURCE_ID,
        SCOPE,
    ];
}

impl TokenKind for NotebookTokenRequest {
    const SECRET_KEYS: &'static [&'static str] = &keys::ALL;
    const TOKEN_KEYS: &'static [&'static str] = &[keys::ACCESS_TOKEN, keys::REFRESH_TOKEN];
    fn secret_template(&self) -> Option<&crate::api::common::SecretTemplate> {
        self.spec.secret_template.as_ref()
    }
    fn rollout_targets(&self) -> &[crate::api::common::RolloutRestartTarget] {
        &self.spec.rollout_restart_targets
    }
    fn last_rollout_restart(
        status: &mut NotebookTokenRequestStatus,
    ) -> &mut Option<crate::api::common::LastRolloutRestart> {
        &mut status.last_rollout_restart
    }
}

/// A resource that passed validation: the client to mint its tokens with.
pub struct Checked {
    /// Notebook tokens for the resource's workspace, with its credentials.
    pub tokens: Arc<dyn NotebookTokens>,
    /// `spec.renewBefore`, if set.
    pub renew_before: Option<std::time::Duration>,
}

/// Everything checked before calling Azure: the spec here (the CRD schema checks the names
/// too; this repeats it for resources that never went through the API server, e.g.
/// `preview`), the endpoint and credentials by the client factory.
pub async fn validate(obj: &NotebookTokenRequest, ctx: &Context) -> Result<Checked, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let spec = &obj.spec;
    let renew_before = validate::positive("spec.renewBefore", spec.renew_before.as_ref())?;
    check_names(spec)?;
    validate::secret_name("spec.secretName", spec.secret_name.as_deref())?;
    consumers::check_template(obj)?;
    validate::rollout_targets(&spec.rollout_restart_targets)?;
    spec.credentials().map_err(Error::InvalidSpec)?;
    let tokens = ctx.clients.notebook_tokens(&ns, spec).await?;
    Ok(Checked {
        tokens,
        renew_before,
    })
}

fn check_names(spec: &crate::api::NotebookTokenRequestSpec) -> Result<(), Error> {
    let invalid = |m: String| Err(Error::InvalidSpec(m));
    if !is_guid(&spec.subscription_id) {
        return invalid(format!(
            "spec.subscriptionId {:?} is not a GUID",
            spec.subscription_id
        ));
    }
    let rg = &spec.resource_group;
    let rg_chars = rg
        .chars()
        .all(|c| c.is_alphanumeric() || "-_.()".contains(c));
    if rg.is_empty() || rg.chars().count() > 90 || !rg_chars || rg.ends_with('.') {
        return invalid(format!(
            "spec.resourceGroup {rg:?} is not a resource group name (1-90 letters, digits, \
             _ - . ( ), not ending in a period)"
        ));
    }
    let ws = spec.workspace_name.as_bytes();
    let ws_ok = (3..=33).contains(&ws.len())
        && ws[0].is_ascii_alphanumeric()
        && ws
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
    if !ws_ok {
        return invalid(format!(
            "spec.workspaceName {:?} is not a workspace name (3-33 letters, digits, _ and -, \
             starting with a letter or digit)",
            spec.workspace_name
        ));
    }
    let v = spec.api_version.as_bytes();
    let date = v.len() >= 10
        && v[..10].iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !(date && (v.len() == 10 || &v[10..] == b"-preview")) {
        return invalid(format!(
            "spec.apiVersion {:?} is not an ARM api-version (YYYY-MM-DD or YYYY-MM-DD-preview)",
            spec.api_version
        ));
    }
    Ok(())
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A minted token, with the times that go into the Secret and status.
struct Minted {
    token: NotebookAccessToken,
    expires_at: Timestamp,
    renew_at: Timestamp,
}

fn schedule_token(
    obj: &NotebookTokenRequest,
    checked: &Checked,
    token: NotebookAccessToken,
    now: Timestamp,
) -> Minted {
    // Whole seconds (rounded down), as the Secret's annotations record them, so that the
    // status and the annotations agree after a restart.
    let expires_at = whole_second(crate::time::add(now, token.expires_in));
    let seed = format!("{}/{}", obj.uid().unwrap_or_default(), expires_at);
    let renew_at = whole_second(schedule::renew_at(
        now,
        expires_at,
        checked.renew_before,
        &seed,
    ));
    Minted {
        token,
        expires_at,
        renew_at,
    }
}

/// The Secret's keys (absent fields are left out).
fn secret_data(m: &Minted) -> BTreeMap<String, SecretString> {
    let t = &m.token;
    let mut data = BTreeMap::new();
    data.insert(keys::ACCESS_TOKEN.into(), t.access_token.clone());
    data.insert(
        keys::EXPIRES_AT.into(),
        SecretString::new(rfc3339(m.expires_at)),
    );
    if let Some(r) = &t.refresh_token {
        data.insert(keys::REFRESH_TOKEN.into(), r.clone());
    }
    for (key, value) in [
        (keys::TOKEN_TYPE, &t.token_type),
        (keys::HOST_NAME, &t.host_name),
        (keys::PUBLIC_DNS, &t.public_dns),
        (keys::NOTEBOOK_RESOURCE_ID, &t.notebook_resource_id),
        (keys::SCOPE, &t.scope),
    ] {
        if let Some(v) = value {
            data.insert(key.into(), SecretString::new(v.clone()));
        }
    }
    data
}

fn status_for(
    current: Option<&NotebookTokenRequestStatus>,
    secret: &str,
    m: &Minted,
) -> NotebookTokenRequestStatus {
    let t = &m.token;
    NotebookTokenRequestStatus {
        expires_at: Some(m.expires_at),
        renew_at: Some(m.renew_at),
        secret_name: Some(secret.to_owned()),
        notebook_resource_id: t.notebook_resource_id.clone(),
        host_name: t.host_name.clone(),
        public_dns: t.public_dns.clone(),
        token_type: t.token_type.clone(),
        scope: t.scope.clone(),
        last_rollout_restart: current.and_then(|s| s.last_rollout_restart.clone()),
        common: current.map(|s| s.common.clone()).unwrap_or_default(),
    }
}

fn valid_until(expires_at: Timestamp) -> String {
    format!("token valid until {}", rfc3339(expires_at))
}

/// The sync when the Secret already holds a valid token for this generation: no Azure call.
/// The status is kept as it is; if it doesn't describe that token (the status was lost, e.g.
/// the resource was restored from a backup without status, or the token was written from the
/// operator's memory after its first write failed), it is rebuilt from the token's non-secret
/// keys: those `restored` (the keys this sync wrote), else the Secret's. `None` if the Secret
/// vanished meanwhile (then a token is minted).
async fn from_recorded(
    obj: &NotebookTokenRequest,
    ctx: &Context,
    name: &str,
    recorded: RecordedToken,
    restored: Option<BTreeMap<String, SecretString>>,
) -> Result<Option<Synced<NotebookTokenRequestStatus>>, Error> {
    let current = obj.status.clone().unwrap_or_default();
    let describes_it = current.expires_at == Some(recorded.expires_at)
        && current.secret_name.as_deref() == Some(name);
    let mut status = if describes_it {
        current
    } else {
        let data: BTreeMap<String, Vec<u8>> = match restored {
            Some(d) => d
                .into_iter()
                .map(|(k, v)| (k, v.expose().as_bytes().to_vec()))
                .collect(),
            None => {
                let ns = obj.namespace().unwrap_or_default();
                let Some(secret) = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
                    .get_opt(name)
                    .await?
                else {
                    return Ok(None);
                };
                secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect()
            }
        };
        let text = |key: &str| {
            data.get(key)
                .and_then(|b| String::from_utf8(b.clone()).ok())
        };
        NotebookTokenRequestStatus {
            expires_at: Some(recorded.expires_at),
            renew_at: None,
            secret_name: Some(name.to_owned()),
            notebook_resource_id: text(keys::NOTEBOOK_RESOURCE_ID),
            host_name: text(keys::HOST_NAME),
            public_dns: text(keys::PUBLIC_DNS),
            token_type: text(keys::TOKEN_TYPE),
            scope: text(keys::SCOPE),
            last_rollout_restart: current.last_rollout_restart,
            common: current.common,
        }
    };
    // Also for a status written before it recorded the renewal time.
    status.renew_at = Some(recorded.renew_at);
    Ok(Some(Synced {
        status,
        message: valid_until(recorded.expires_at),
        next_sync: recorded.renew_at,
        last_sync: None,
        event: None,
        notices: Vec::new(),
    }))
}

/// The sync once the Secret is as the operator wrote it: keep the token it holds for this
/// generation until its renewal time (no Azure call; a renew request mints a new one), else
/// mint one and write it.
async fn sync_token(
    obj: &NotebookTokenRequest,
    ctx: &Context,
    checked: &Checked,
    secret: &TokenSecret<NotebookTokenRequest>,
    state: SecretState,
    now: Timestamp,
) -> Result<Synced<NotebookTokenRequestStatus>, Error> {
    let name = secret.name();
    // A renew request (workspaceaccess.io/renew-requested-at) mints a new token now.
    if let SecretState::Owned(meta) = &state
        && renew_request(obj).is_none()
        && let Some(recorded) = recorded_token(meta, obj.meta().generation, now)
        && let Some(synced) = from_recorded(obj, ctx, name, recorded, secret.restored()).await?
    {
        return Ok(synced);
    }

    let token = checked.tokens.notebook_access_token().await?;
    let minted = schedule_token(obj, checked, token, now);
    let content = SecretContent {
        data: secret_data(&minted),
        expires_at: minted.expires_at,
        renew_at: minted.renew_at,
    };
    secret.write(&state, content).await?;
    let expires = rfc3339(minted.expires_at);
    info!(namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any(),
          workspace = %obj.spec.workspace_name, secret = %name, expires_at = %expires,
          renew_at = %rfc3339(minted.renew_at), request_id = ?minted.token.request_id,
          "notebook access token written");
    Ok(Synced {
        status: status_for(obj.status.as_ref(), name, &minted),
        message: valid_until(minted.expires_at),
        next_sync: minted.renew_at,
        last_sync: Some(now),
        event: Some(format!(
            "Wrote a notebook access token for workspace {} to Secret {name}, valid until \
             {expires}",
            obj.spec.workspace_name
        )),
        notices: Vec::new(),
    })
}

#[async_trait]
impl Reconciler for NotebookTokenRequest {
    async fn sync(
        obj: Arc<Self>,
        ctx: Arc<Context>,
        _checkpoint: &mut Checkpoint<Self>,
    ) -> Result<Synced<NotebookTokenRequestStatus>, Error> {
        let now = ctx.now();
        let checked = validate(&obj, &ctx).await?;
        let name = secret_name(obj.as_ref(), obj.spec.secret_name());
        let secret = TokenSecret::new(ctx.clone(), obj.clone(), name);
        let state = check_ownership(&ctx, obj.as_ref(), secret.name()).await?;
        let state = secret.prepare(state, now).await?;
        let synced = sync_token(&obj, &ctx, &checked, &secret, state, now).await?;
        secret.settle(synced).await
    }

    async fn preview(
        obj: Arc<Self>,
        ctx: Arc<Context>,
    ) -> Result<Preview<NotebookTokenRequestStatus>, Error> {
        let now = ctx.now();
        let checked = validate(&obj, &ctx).await?;
        let name = secret_name(obj.as_ref(), obj.spec.secret_name());
        let token = checked.tokens.notebook_access_token().await?;
        let minted = schedule_token(&obj, &checked, token, now);
        let mut status = status_for(None, &name, &minted);
        status.common.last_sync_time = Some(now);
        status.common.next_sync_time = Some(minted.renew_at);
        let data = consumers::secret_data(obj.as_ref(), &secret_data(&minted))?;
        Ok(Preview {
            status,
            message: valid_until(minted.expires_at),
            secret_name: Some(name),
            secret_keys: data.into_keys().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(patch: serde_json::Value) -> crate::api::NotebookTokenRequestSpec {
        let mut base = json!({
            "subscriptionId": "00000000-1111-2222-3333-444444444444",
            "resourceGroup": "workspace-1234",
            "workspaceName": "testworkspace",
            "azure": {"tenantId": "t.example.com", "clientId": "11111111-1111-1111-1111-111111111111",
                      "clientSecretRef": {"name": "sp", "key": "clientSecret"}}
        });
        for (k, v) in patch.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn names_are_checked_like_the_schema_does() {
        assert!(check_names(&spec(json!({}))).is_ok());
        assert_eq!(spec(json!({})).api_version, "2024-04-01");
        for ok in [
            json!({"resourceGroup": "rg.(prod)_x-1"}),
            json!({"resourceGroup": "Grüppe"}),
            json!({"workspaceName": "a_b-c"}),
            json!({"apiVersion": "2025-01-01-preview"}),
        ] {
            assert!(check_names(&spec(ok.clone())).is_ok(), "{ok}");
        }
        for (bad, field) in [
            (json!({"subscriptionId": "sub"}), "spec.subscriptionId"),
            (json!({"resourceGroup": ""}), "spec.resourceGroup"),
            (json!({"resourceGroup": "rg."}), "spec.resourceGroup"),
            (json!({"resourceGroup": "a/b"}), "spec.resourceGroup"),
            (
                json!({"resourceGroup": "x".repeat(91)}),
                "spec.resourceGroup",
            ),
            (json!({"workspaceName": "../x"}), "spec.workspaceName"),
            (json!({"workspaceName": "ab"}), "spec.workspaceName"),
            (json!({"workspaceName": "_abc"}), "spec.workspaceName"),
            (
                json!({"workspaceName": "a".repeat(34)}),
                "spec.workspaceName",
            ),
            (json!({"apiVersion": "latest"}), "spec.apiVersion"),
            (json!({"apiVersion": "2024-04-01-beta"}), "spec.apiVersion"),
        ] {
            let err = check_names(&spec(bad.clone())).unwrap_err();
            assert_eq!(err.reason().as_str(), "InvalidSpec", "{bad}");
            assert!(err.to_string().starts_with(field), "{bad}: {err}");
        }
    }
}
