//! Tokens reach their consumers: templated Secret keys, rollout restarts when a token changes,
//! and repair of a Secret someone else changed or deleted. Shared by the token kinds
//! (NotebookTokenRequest, LivyToken) through [`TokenSecret`], which every write of a token
//! Secret goes through:
//!
//! - [`TokenSecret::prepare`] runs before a sync decides anything. When the Secret's
//!   `resourceVersion` is not one the operator wrote or checked (someone else changed it; known
//!   from the metadata watch, so the operator's own writes and resyncs read nothing), it reads
//!   the Secret once and compares it with the fingerprint of what was written
//!   ([`drift`]). Changed or removed keys are put back from the token the operator holds
//!   (in memory, or the untouched token keys of the Secret itself) without a provider call; if
//!   the token itself is gone, the state says so ([`SecretState::Lost`]) and the sync gets a
//!   new one. A deleted Secret, and a token minted whose write failed, are written from memory.
//! - [`TokenSecret::write`] renders `secretTemplate.data` ([`template`]), fingerprints the
//!   data, and marks the Secret for a rollout restart when the write changes the data of a
//!   Secret that existed ([`rollout`]).
//! - [`TokenSecret::settle`] runs after a successful sync: it records the outcome of a rollout
//!   restart in the status and removes the mark, or asks for the restart the mark calls for.

pub mod drift;
pub mod rollout;
pub mod template;

use crate::api::common::{
    DATA_DIGEST_ANNOTATION, FIELD_MANAGER, LastRolloutRestart, RESTART_PENDING_ANNOTATION,
    RolloutRestartTarget, SecretTemplate,
};
use crate::controller::driver::{Notice, Synced, renew_request};
use crate::controller::error::Error;
use crate::controller::schedule;
use crate::controller::secret::{Marks, SecretContent, SecretState, SecretWrite, write_secret};
use crate::controller::{Context, ManagedKind, object_key};
use crate::redact::SecretString;
use crate::time::nearest_second;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use rollout::Owner;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tracing::{debug, info};

/// A token kind, as the consumer machinery sees it.
pub trait TokenKind: ManagedKind {
    /// The kind's Secret keys: the template variables besides name and namespace.
    const SECRET_KEYS: &'static [&'static str];
    /// Keys holding the token itself: a Secret whose token keys were changed can't be
    /// restored from itself.
    const TOKEN_KEYS: &'static [&'static str];
    /// `spec.secretTemplate`.
    fn secret_template(&self) -> Option<&SecretTemplate>;
    /// `spec.rolloutRestartTargets`.
    fn rollout_targets(&self) -> &[RolloutRestartTarget];
    /// `status.lastRolloutRestart`.
    fn last_rollout_restart(status: &mut Self::Status) -> &mut Option<LastRolloutRestart>;
}

/// Checks `spec.secretTemplate.data` before any provider call.
pub fn check_template<K: TokenKind>(obj: &K) -> Result<(), Error> {
    match obj.secret_template() {
        Some(t) => template::check(t, K::SECRET_KEYS).map_err(Error::InvalidSpec),
        None => Ok(()),
    }
}

/// The data of the Secret for a token's keys `base`: the kind's keys (unless `keys:
/// TemplatedOnly`) and the rendered templates.
pub fn secret_data<K: TokenKind>(
    obj: &K,
    base: &BTreeMap<String, SecretString>,
) -> Result<BTreeMap<String, SecretString>, Error> {
    let name = obj.name_any();
    let namespace = obj.namespace().unwrap_or_default();
    template::render(
        obj.secret_template(),
        K::SECRET_KEYS,
        base,
        template::Resource {
            name: &name,
            namespace: &namespace,
        },
    )
    .map_err(Error::InvalidSpec)
}

/// The keys of the Secret for a token with the kind's keys `base_keys` (for `preview`).
pub fn secret_keys<K: TokenKind>(obj: &K, base_keys: Vec<String>) -> Vec<String> {
    let mut keys = match obj.secret_template().map(SecretTemplate::keys) {
        Some(crate::api::common::SecretKeys::TemplatedOnly) => Vec::new(),
        _ => base_keys,
    };
    if let Some(t) = obj.secret_template() {
        keys.extend(t.templates().map(|(k, _)| k.clone()));
    }
    keys.sort();
    keys.dedup();
    keys
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// One sync's access to a token kind's Secret (see the module docs).
pub struct TokenSecret<K: TokenKind> {
    ctx: Arc<Context>,
    obj: Arc<K>,
    name: String,
    /// The Secret's metadata as this sync last wrote or found it.
    written: Mutex<Option<ObjectMeta>>,
    /// The token keys this sync restored the Secret with.
    restored: Mutex<Option<BTreeMap<String, SecretString>>>,
    /// Events to publish once the status is recorded.
    notices: Mutex<Vec<Notice>>,
}

impl<K: TokenKind> TokenSecret<K> {
    /// The Secret `name` of `obj`.
    pub fn new(ctx: Arc<Context>, obj: Arc<K>, name: String) -> Self {
        Self {
            ctx,
            obj,
            name,
            written: Mutex::new(None),
            restored: Mutex::new(None),
            notices: Mutex::new(Vec::new()),
        }
    }

    /// The Secret's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn namespace(&self) -> String {
        self.obj.namespace().unwrap_or_default()
    }

    fn owner(&self) -> Owner {
        Owner {
            kind: K::KIND,
            namespace: self.namespace(),
            name: self.obj.name_any(),
            uid: self.obj.uid().unwrap_or_default(),
        }
    }

    fn notice(&self, reason: &'static str, warning: bool, note: String) {
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Notice {
                reason,
                note,
                count: None,
                warning,
            });
    }

    /// The kind's keys of the token this sync restored the Secret with (from memory or from
    /// the Secret's own token keys), if it did.
    pub fn restored(&self) -> Option<BTreeMap<String, SecretString>> {
        self.restored
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Brings the Secret back to what the operator wrote, before the sync decides anything
    /// (see the module docs). Returns the state the sync continues from.
    pub async fn prepare(&self, state: SecretState, now: Timestamp) -> Result<SecretState, Error> {
        let state = self.prepare_state(state, now).await?;
        if let Some(meta) = state.meta() {
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            if written.is_none() {
                *written = Some(meta.clone());
            }
        }
        Ok(state)
    }

    async fn prepare_state(
        &self,
        state: SecretState,
        now: Timestamp,
    ) -> Result<SecretState, Error> {
        if renew_request(self.obj.as_ref()).is_some() {
            return Ok(state);
        }
        let generation = self.obj.meta().generation;
        let memory = self
            .ctx
            .tokens
            .current(&object_key(self.obj.as_ref()), generation, now);
        let meta = match state {
            SecretState::Absent | SecretState::Unseen => {
                return match memory {
                    Some(m) => {
                        let held = self.obj.status().and_then(|s| {
                            use crate::api::common::HasCommonStatus;
                            s.token_expires_at()
                        });
                        if held == Some(m.content.expires_at) {
                            self.notice(
                                "SecretRestored",
                                false,
                                format!(
                                    "Secret {} was deleted; wrote it again with the token the \
                                     operator holds (valid until {})",
                                    self.name,
                                    crate::time::rfc3339(m.content.expires_at)
                                ),
                            );
                        }
                        self.restore(&state, m.content).await
                    }
                    None => Ok(state),
                };
            }
            SecretState::Lost(m) => return Ok(SecretState::Lost(m)),
            SecretState::Owned(meta) => meta,
        };
        let recorded = schedule::recorded(&meta, generation);
        // A token obtained for this generation that the Secret doesn't hold (its write failed):
        // written now, instead of obtaining another. The annotations hold times to the nearest
        // second; a provider's (EMR's) may carry milliseconds, so compare at the seconds.
        if let Some(m) = &memory
            && recorded.is_none_or(|r| r.expires_at < nearest_second(m.content.expires_at))
        {
            debug!(kind = K::KIND, namespace = %self.namespace(), name = %self.obj.name_any(),
                   "writing the token whose earlier write failed");
            return self
                .restore(&SecretState::Owned(meta), m.content.clone())
                .await;
        }
        let ns = self.namespace();
        let version = meta.resource_version.clone().unwrap_or_default();
        if !self.ctx.secret_cache.is_watching()
            || self.ctx.secret_versions.is_known(&ns, &self.name, &version)
        {
            return Ok(SecretState::Owned(meta));
        }
        // Someone else changed the Secret: read it once.
        let Some(secret) = Api::<Secret>::namespaced(self.ctx.client.clone(), &ns)
            .get_opt(&self.name)
            .await?
        else {
            return Box::pin(self.prepare_state(SecretState::Absent, now)).await;
        };
        let current = secret.metadata.clone();
        let version = current.resource_version.clone().unwrap_or_default();
        let Some(fingerprint) = annotation(&current, DATA_DIGEST_ANNOTATION) else {
            // Written by an earlier version: nothing to compare with.
            self.ctx.secret_versions.known_as(&ns, &self.name, &version);
            return Ok(SecretState::Owned(Box::new(current)));
        };
        let uid = self.obj.uid().unwrap_or_default();
        let actual = secret.data.clone().unwrap_or_default();
        let drifted = drift::drifted_keys(&uid, fingerprint, &actual);
        if drifted.is_empty() {
            self.ctx.secret_versions.known_as(&ns, &self.name, &version);
            return Ok(SecretState::Owned(Box::new(current)));
        }
        let recorded = schedule::recorded(&current, generation);
        let from_memory = memory
            .filter(|m| {
                recorded.is_some_and(|r| r.expires_at == nearest_second(m.content.expires_at))
            })
            .map(|m| m.content);
        let from_secret = || {
            self.rebuilt_from_secret(&actual, &drifted, recorded?.expires_at, recorded?.renew_at)
        };
        let keys = drifted.join(", ");
        match from_memory.or_else(from_secret) {
            Some(content) => {
                info!(kind = K::KIND, namespace = %ns, name = %self.obj.name_any(),
                      secret = %self.name, keys = %keys, "Secret changed outside the operator; restoring it");
                self.notice(
                    "SecretRestored",
                    false,
                    format!(
                        "key(s) {keys} of Secret {} were changed or removed outside the \
                         operator; restored them",
                        self.name
                    ),
                );
                self.restore(&SecretState::Owned(Box::new(current)), content)
                    .await
            }
            None => {
                info!(kind = K::KIND, namespace = %ns, name = %self.obj.name_any(),
                      secret = %self.name, keys = %keys,
                      "Secret changed outside the operator and its token is not known; asking the provider");
                self.notice(
                    "SecretRestored",
                    false,
                    format!(
                        "key(s) {keys} of Secret {} were changed or removed outside the \
                         operator, the token among them; getting the token from the provider",
                        self.name
                    ),
                );
                Ok(SecretState::Lost(Box::new(current)))
            }
        }
    }

    /// The token's content rebuilt from the Secret itself: possible when none of the kind's
    /// keys it was written with drifted (only templated keys did), and it holds them (not
    /// `keys: TemplatedOnly`).
    fn rebuilt_from_secret(
        &self,
        actual: &BTreeMap<String, k8s_openapi::ByteString>,
        drifted: &[String],
        expires_at: Timestamp,
        renew_at: Timestamp,
    ) -> Option<SecretContent> {
        // With `keys: TemplatedOnly` a templated key may carry a kind key's name (e.g. `token:
        // "Bearer {{ token }}"`): the Secret then holds rendered values, not the token.
        let templated_only = self
            .obj
            .secret_template()
            .is_some_and(|t| t.keys() == crate::api::common::SecretKeys::TemplatedOnly);
        if templated_only || drifted.iter().any(|k| K::SECRET_KEYS.contains(&k.as_str())) {
            return None;
        }
        let base: BTreeMap<String, SecretString> = K::SECRET_KEYS
            .iter()
            .filter_map(|k| {
                let v = actual.get(*k)?;
                Some((
                    k.to_string(),
                    SecretString::new(String::from_utf8(v.0.clone()).ok()?),
                ))
            })
            .collect();
        K::TOKEN_KEYS
            .iter()
            .any(|k| base.contains_key(*k))
            .then_some(SecretContent {
                data: base,
                expires_at,
                renew_at,
            })
    }

    async fn restore(
        &self,
        state: &SecretState,
        content: SecretContent,
    ) -> Result<SecretState, Error> {
        let data = content.data.clone();
        let meta = self.write(state, content).await?;
        *self.restored.lock().unwrap_or_else(|e| e.into_inner()) = Some(data);
        Ok(SecretState::Owned(Box::new(meta)))
    }

    /// Writes a token to the Secret (the kind's keys in `content.data`): renders the
    /// templates, records the fingerprint and, when the data of a Secret that existed
    /// changes and the resource has rollout restart targets, marks the Secret for a restart
    /// and asks for it. The token is remembered first, so that a failed write is retried
    /// with it. A template error writes nothing.
    pub async fn write(
        &self,
        state: &SecretState,
        content: SecretContent,
    ) -> Result<ObjectMeta, Error> {
        let obj = self.obj.as_ref();
        let data = secret_data(obj, &content.data)?;
        let uid = obj.uid().unwrap_or_default();
        let fingerprint = drift::fingerprint(&uid, &data);
        let previous = state.meta();
        let due = rollout::restart_due(
            previous.is_some(),
            previous.and_then(|m| annotation(m, DATA_DIGEST_ANNOTATION)),
            &fingerprint,
        );
        let targets = obj.rollout_targets();
        let now = self.ctx.now();
        let marks = Marks {
            fingerprint: Some(fingerprint),
            restart_pending: rollout::pending_mark(
                due,
                !targets.is_empty(),
                previous.and_then(|m| annotation(m, RESTART_PENDING_ANNOTATION)),
                now,
            ),
        };
        self.ctx.tokens.remember(
            K::KIND,
            &object_key(obj),
            obj.meta().generation,
            content.clone(),
        );
        let written = SecretContent {
            data,
            expires_at: content.expires_at,
            renew_at: content.renew_at,
        };
        // Keys written before and not now (a key the provider left out this time, a template
        // removed) go, also if the Secret's creation made another manager entry own them.
        let stale: Vec<String> = previous
            .and_then(|m| annotation(m, DATA_DIGEST_ANNOTATION))
            .map(drift::keys)
            .unwrap_or_default()
            .into_iter()
            .filter(|k| !written.data.contains_key(k))
            .collect();
        let ns = self.namespace();
        self.ctx.secret_versions.writing(&ns, &self.name);
        let result = write_secret(
            &self.ctx,
            obj,
            &self.name,
            state,
            &SecretWrite {
                content: &written,
                template: obj.secret_template(),
                marks: &marks,
                stale_keys: &stale,
            },
        )
        .await;
        let version = result
            .as_ref()
            .ok()
            .and_then(|m| m.resource_version.as_deref());
        self.ctx.secret_versions.written(&ns, &self.name, version);
        let meta = result?;
        if due && !targets.is_empty() {
            self.ctx.rollouts.request(self.owner(), targets.to_vec());
        }
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = Some(meta.clone());
        Ok(meta)
    }

    /// After a successful sync: records the outcome of a rollout restart in the status (and
    /// publishes it), removing the Secret's restart-pending mark, or asks for the restart the
    /// mark calls for. Keeps `status.lastRolloutRestart` otherwise, and adds the sync's
    /// notices.
    pub async fn settle(&self, mut synced: Synced<K::Status>) -> Result<Synced<K::Status>, Error> {
        let field = K::last_rollout_restart(&mut synced.status);
        if field.is_none() {
            let mut current = self.obj.status().cloned().unwrap_or_default();
            *field = K::last_rollout_restart(&mut current).take();
        }
        synced
            .notices
            .append(&mut self.notices.lock().unwrap_or_else(|e| e.into_inner()));
        let meta = self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(mark) = meta
            .as_ref()
            .and_then(|m| annotation(m, RESTART_PENDING_ANNOTATION))
        else {
            return Ok(synced);
        };
        let targets = self.obj.rollout_targets();
        let owner = self.owner();
        // A mark that doesn't parse counts as made now (the restart is still made).
        let marked: Timestamp = mark.parse().unwrap_or_else(|_| self.ctx.now());
        if self.ctx.rollouts.is_settled(&owner, marked) {
            // Removed already; the cache doesn't show it yet.
            return Ok(synced);
        }
        if targets.is_empty() {
            // The targets were removed from the spec meanwhile: nothing to restart.
            self.unmark().await?;
            return Ok(synced);
        }
        match self.ctx.rollouts.outcome_for(&owner, marked) {
            Some(outcome) => {
                self.unmark().await?;
                self.ctx.rollouts.recorded(&owner);
                let (reason, warning) = if outcome.failed {
                    ("RolloutRestartFailed", true)
                } else {
                    ("RolloutRestarted", false)
                };
                synced.notices.push(Notice {
                    reason,
                    note: format!(
                        "the token in Secret {} changed: {}",
                        self.name, outcome.restart.message
                    ),
                    count: None,
                    warning,
                });
                *K::last_rollout_restart(&mut synced.status) = Some(outcome.restart);
            }
            None if self.ctx.rollouts.is_waiting(&owner) => {}
            None => self.ctx.rollouts.request(owner, targets.to_vec()),
        }
        Ok(synced)
    }

    /// Removes the restart-pending mark from the Secret (a merge patch of that annotation).
    async fn unmark(&self) -> Result<(), Error> {
        let ns = self.namespace();
        let api = Api::<Secret>::namespaced(self.ctx.client.clone(), &ns);
        let patch = serde_json::json!({"metadata": {"annotations": {
            RESTART_PENDING_ANNOTATION: null
        }}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.ctx.secret_versions.writing(&ns, &self.name);
        let result = api.patch(&self.name, &params, &Patch::Merge(&patch)).await;
        let version = result
            .as_ref()
            .ok()
            .and_then(|s| s.metadata.resource_version.as_deref());
        self.ctx.secret_versions.written(&ns, &self.name, version);
        let written = result?;
        self.ctx.metrics.write(K::KIND, "secret");
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = Some(written.metadata);
        Ok(())
    }
}
