//! The Secret writer: server-side apply under the operator's field manager, with an owner
//! reference to the resource, the managed-by label, the expiry annotations and the user's
//! `secretTemplate`. It never touches a Secret the resource doesn't own, and never writes an
//! empty Secret: a failed refresh simply doesn't call it, so the last good Secret stays.

use crate::api::common::*;
use crate::controller::error::Error;
use crate::controller::{Context, ManagedKind};
use crate::redact::SecretString;
use crate::time::rfc3339;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;

/// What a token kind wants in its Secret.
#[derive(Clone, Debug)]
pub struct SecretContent {
    /// Keys and values.
    pub data: BTreeMap<String, SecretString>,
    /// When the token expires (the `expires-at` annotation).
    pub expires_at: Timestamp,
    /// When the operator plans to renew it (the `renew-at` annotation).
    pub renew_at: Timestamp,
}

/// The operator's own marks on a Secret it writes, besides the token's times: the
/// fingerprint of its data (drift repair, rollout restarts) and a rollout restart still to be
/// made (see [`crate::controller::consumers`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Marks {
    /// The `data-digest` annotation.
    pub fingerprint: Option<String>,
    /// The `restart-pending` annotation.
    pub restart_pending: Option<String>,
}

/// State of the Secret a resource writes to.
#[derive(Clone, Debug)]
pub enum SecretState {
    /// No Secret of that name exists.
    Absent,
    /// The watched cache of owned Secrets doesn't hold it: it doesn't exist, or exists without
    /// the operator's label. Writing it creates it, and only a create that finds it exists
    /// asks whose it is.
    Unseen,
    /// The resource owns it; its metadata.
    Owned(Box<ObjectMeta>),
    /// The resource owns it, but someone else changed the token in it and the operator can't
    /// put it back: a new token is due. Its metadata.
    Lost(Box<ObjectMeta>),
}

impl SecretState {
    /// The Secret's metadata, if it exists.
    pub fn meta(&self) -> Option<&ObjectMeta> {
        match self {
            Self::Absent | Self::Unseen => None,
            Self::Owned(m) | Self::Lost(m) => Some(m),
        }
    }
}

/// The Secret name of a resource: `spec.secretName`, default the resource's name.
pub fn secret_name<K: ManagedKind>(obj: &K, spec_secret_name: Option<&str>) -> String {
    spec_secret_name
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| obj.name_any())
}

/// Whether `meta` has a controller owner reference to the object with `owner_uid`.
pub fn is_owned_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| r.uid == owner_uid && r.controller == Some(true))
    })
}

/// Looks up the Secret `name` for `owner`: from the operator's cache of owned Secrets'
/// metadata when it holds it. A Secret the cache doesn't hold, for a resource whose status
/// names no Secret of that name yet (a new resource, or a new `secretName`), is taken as not
/// seen, without asking the API server, when a watch keeps the cache: the write then creates
/// it, and only if the create says it exists is its ownership checked (see [`write_secret`]).
/// Otherwise a metadata-only GET decides: without a watch (tests, `preview`), and for a
/// Secret the resource wrote before, which the cache may lack (it was deleted; or the watch's
/// listing missed it: a v1.24 API server was seen to leave out a whole page of a paginated,
/// label-selected list). A Secret that exists but is not owned by `owner` is
/// [`Error::SecretConflict`].
pub async fn check_ownership<K: ManagedKind>(
    ctx: &Context,
    owner: &K,
    name: &str,
) -> Result<SecretState, Error> {
    valid_name(name)?;
    let ns = owner.namespace().unwrap_or_default();
    let written_before = owner
        .status()
        .and_then(|s| s.token_secret_name())
        .is_some_and(|n| n == name);
    match ctx.secret_cache.get(&ns, name) {
        Some(m) => ownership(owner, &ns, name, Some(m)),
        None if ctx.secret_cache.is_watching() && !written_before => Ok(SecretState::Unseen),
        None => check_ownership_uncached(ctx, owner, name).await,
    }
}

/// [`check_ownership`] with a metadata-only GET, whatever the cache holds.
pub async fn check_ownership_uncached<K: ManagedKind>(
    ctx: &Context,
    owner: &K,
    name: &str,
) -> Result<SecretState, Error> {
    valid_name(name)?;
    let ns = owner.namespace().unwrap_or_default();
    let meta = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_metadata_opt(name)
        .await?
        .map(|m| m.metadata);
    ownership(owner, &ns, name, meta)
}

fn ownership<K: ManagedKind>(
    owner: &K,
    ns: &str,
    name: &str,
    meta: Option<ObjectMeta>,
) -> Result<SecretState, Error> {
    let uid = owner.uid().unwrap_or_default();
    match meta {
        None => Ok(SecretState::Absent),
        Some(m) if is_owned_by(&m, &uid) => Ok(SecretState::Owned(Box::new(m))),
        Some(m) => {
            let by_us = m
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY_LABEL))
                .is_some_and(|v| v == MANAGED_BY_VALUE);
            let who = if by_us {
                "another workspaceaccess.io resource"
            } else {
                "something else"
            };
            Err(Error::SecretConflict(format!(
                "Secret {ns}/{name} already exists and is owned by {who}; the operator does not \
                 overwrite or adopt it. Delete it, or set spec.secretName to another name"
            )))
        }
    }
}

/// A write of a token Secret (see [`write_secret`]).
pub struct SecretWrite<'a> {
    /// What the Secret holds (the kind's keys and the templated ones) and the token's times.
    pub content: &'a SecretContent,
    /// `spec.secretTemplate`.
    pub template: Option<&'a SecretTemplate>,
    /// The operator's marks.
    pub marks: &'a Marks,
    /// Keys the operator wrote before and no longer writes (they go, whoever else may also
    /// have set them).
    pub stale_keys: &'a [String],
}

/// Writes a token Secret in the state `state`: one the cache hasn't seen is created (a POST,
/// the one request a new Secret costs); if the create finds it exists after all (a Secret
/// without the operator's label, or created meanwhile), its ownership is checked and, if the
/// resource owns it, it is applied. Others are applied with server-side apply (which creates
/// one known to be absent). Keys in `stale_keys` still present afterwards are removed.
/// Returns the written metadata.
pub async fn write_secret<K: ManagedKind>(
    ctx: &Context,
    owner: &K,
    name: &str,
    state: &SecretState,
    write: &SecretWrite<'_>,
) -> Result<ObjectMeta, Error> {
    if matches!(state, SecretState::Unseen) {
        refuse_empty(write.content)?;
        valid_name(name)?;
        let secret = build_secret(owner, name, write.content, write.template, write.marks);
        let ns = owner.namespace().unwrap_or_default();
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match Api::<Secret>::namespaced(ctx.client.clone(), &ns)
            .create(&params, &secret)
            .await
        {
            Ok(created) => {
                ctx.metrics.write(K::KIND, "secret");
                return Ok(created.metadata);
            }
            // It exists after all: written below only if the resource owns it (or it was
            // deleted again meanwhile, and the apply creates it).
            Err(kube::Error::Api(e)) if e.code == 409 => {
                check_ownership_uncached(ctx, owner, name).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let written =
        apply_secret(ctx, owner, name, write.content, write.template, write.marks).await?;
    let left: Vec<&String> = write
        .stale_keys
        .iter()
        .filter(|k| written.data.as_ref().is_some_and(|d| d.contains_key(*k)))
        .collect();
    if left.is_empty() {
        return Ok(written.metadata);
    }
    let nulls: serde_json::Map<String, serde_json::Value> = left
        .iter()
        .map(|k| ((*k).clone(), serde_json::Value::Null))
        .collect();
    let ns = owner.namespace().unwrap_or_default();
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let patched = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .patch(
            name,
            &params,
            &Patch::Merge(&serde_json::json!({"data": nulls})),
        )
        .await?;
    ctx.metrics.write(K::KIND, "secret");
    Ok(patched.metadata)
}

fn refuse_empty(content: &SecretContent) -> Result<(), Error> {
    if content.data.is_empty() || content.data.values().all(SecretString::is_empty) {
        return Err(Error::InvalidSpec(
            "internal: refusing to write a Secret without a token".into(),
        ));
    }
    Ok(())
}

/// The name goes into the API request path as it is: only a DNS subdomain name (no `/`, no
/// `..`) keeps the request on the Secrets of the owner's namespace.
fn valid_name(name: &str) -> Result<(), Error> {
    if crate::api::names::is_dns_subdomain(name) {
        Ok(())
    } else {
        Err(Error::InvalidSpec(format!(
            "{:?} (spec.secretName, default the resource's name) is not a Secret name: \
             lower-case letters, digits, '-' and '.', at most 253 characters",
            crate::providers::error::clip(name, 100)
        )))
    }
}

/// The controller owner reference to `owner`. `blockOwnerDeletion` is left unset so that no
/// permission on the owner's finalizers is needed.
pub fn owner_reference<K: ManagedKind>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

/// Builds the Secret to apply (pure, for tests and preview): `content.data` is what the Secret
/// holds (the kind's keys and the templated ones).
pub fn build_secret<K: ManagedKind>(
    owner: &K,
    name: &str,
    content: &SecretContent,
    template: Option<&SecretTemplate>,
    marks: &Marks,
) -> Secret {
    let mut labels = template.and_then(|t| t.labels.clone()).unwrap_or_default();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    let mut annotations: BTreeMap<String, String> = template
        .and_then(|t| t.annotations.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("workspaceaccess.io/"))
        .collect();
    annotations.insert(EXPIRES_AT_ANNOTATION.into(), rfc3339(content.expires_at));
    annotations.insert(RENEW_AT_ANNOTATION.into(), rfc3339(content.renew_at));
    if let Some(g) = owner.meta().generation {
        annotations.insert(GENERATION_ANNOTATION.into(), g.to_string());
    }
    if let Some(f) = &marks.fingerprint {
        annotations.insert(DATA_DIGEST_ANNOTATION.into(), f.clone());
    }
    if let Some(p) = &marks.restart_pending {
        annotations.insert(RESTART_PENDING_ANNOTATION.into(), p.clone());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: owner.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner_reference(owner)]),
            ..Default::default()
        },
        type_: Some(
            template
                .and_then(|t| t.type_.clone())
                .unwrap_or_else(|| "Opaque".into()),
        ),
        data: Some(
            content
                .data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.expose().as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Applies the Secret with server-side apply and returns it as written. The caller has
/// checked ownership with [`check_ownership`]. Refuses empty content, so a bug upstream can't
/// blank a working Secret.
pub async fn apply_secret<K: ManagedKind>(
    ctx: &Context,
    owner: &K,
    name: &str,
    content: &SecretContent,
    template: Option<&SecretTemplate>,
    marks: &Marks,
) -> Result<Secret, Error> {
    refuse_empty(content)?;
    valid_name(name)?;
    let secret = build_secret(owner, name, content, template, marks);
    let ns = owner.namespace().unwrap_or_default();
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&secret);
    let written = crate::controller::retry_on_conflict(|| api.patch(name, &params, &patch)).await?;
    ctx.metrics.write(K::KIND, "secret");
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LivyToken, LivyTokenSpec, livy_token::ManagedLivyToken};

    fn owner() -> LivyToken {
        let mut o = LivyToken::new(
            "spark",
            LivyTokenSpec {
                region_id: "cn-hangzhou".into(),
                workspace_id: "w-1".into(),
                livy_compute_id: "lc-1".into(),
                endpoint: None,
                token_id: None,
                managed: Some(ManagedLivyToken {
                    name: None,
                    expire_days: 7,
                    grace_period: None,
                }),
                alibaba: Some(AlibabaCredentials {
                    access_key_ref: None,
                    rrsa: true,
                }),
                credential_ref: None,
                secret_name: None,
                refresh_interval: None,
                renew_before: None,
                secret_template: None,
                rollout_restart_targets: Vec::new(),
            },
        );
        o.metadata.namespace = Some("team-b".into());
        o.metadata.uid = Some("uid-1".into());
        o.metadata.generation = Some(3);
        o
    }

    fn content() -> SecretContent {
        SecretContent {
            data: [("token".to_string(), SecretString::new("t0k"))].into(),
            expires_at: "2026-11-23T18:00:00.4Z".parse().unwrap(),
            renew_at: "2026-11-23T17:10:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn built_secret_has_owner_label_annotations_and_template() {
        let o = owner();
        let template = SecretTemplate {
            type_: Some("kubernetes.io/basic-auth".into()),
            labels: Some(
                [
                    ("team".to_string(), "b".to_string()),
                    (MANAGED_BY_LABEL.to_string(), "someone-else".to_string()),
                ]
                .into(),
            ),
            annotations: Some(
                [
                    ("note".to_string(), "x".to_string()),
                    (EXPIRES_AT_ANNOTATION.to_string(), "never".to_string()),
                ]
                .into(),
            ),
            ..Default::default()
        };
        let s = build_secret(
            &o,
            "spark-token",
            &content(),
            Some(&template),
            &Marks::default(),
        );
        let m = &s.metadata;
        assert_eq!(m.name.as_deref(), Some("spark-token"));
        assert_eq!(m.namespace.as_deref(), Some("team-b"));
        let labels = m.labels.as_ref().unwrap();
        assert_eq!(
            labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE,
            "managed-by can't be overridden"
        );
        assert_eq!(labels["team"], "b");
        let ann = m.annotations.as_ref().unwrap();
        assert_eq!(ann[EXPIRES_AT_ANNOTATION], "2026-11-23T18:00:00Z");
        assert_eq!(ann[RENEW_AT_ANNOTATION], "2026-11-23T17:10:00Z");
        assert_eq!(ann[GENERATION_ANNOTATION], "3");
        assert_eq!(ann["note"], "x");
        let refs = m.owner_references.as_ref().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].uid, "uid-1");
        assert_eq!(refs[0].kind, "LivyToken");
        assert_eq!(refs[0].api_version, "workspaceaccess.io/v1alpha1");
        assert_eq!(refs[0].controller, Some(true));
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        assert_eq!(s.data.as_ref().unwrap()["token"].0, b"t0k");
        assert!(is_owned_by(m, "uid-1"));
        assert!(!is_owned_by(m, "uid-2"));
    }

    #[test]
    fn default_type_is_opaque_and_name_defaults_to_resource() {
        let o = owner();
        let s = build_secret(&o, "x", &content(), None, &Marks::default());
        assert_eq!(s.type_.as_deref(), Some("Opaque"));
        assert_eq!(secret_name(&o, None), "spark");
        assert_eq!(secret_name(&o, Some("")), "spark");
        assert_eq!(secret_name(&o, Some("other")), "other");
    }

    #[test]
    fn a_non_controller_reference_is_not_ownership() {
        let mut m = ObjectMeta::default();
        let mut r = owner_reference(&owner());
        r.controller = None;
        m.owner_references = Some(vec![r]);
        assert!(!is_owned_by(&m, "uid-1"));
    }
}
