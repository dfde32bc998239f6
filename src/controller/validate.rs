//! Spec checks shared by the kinds before any provider call: names, Secret references and
//! durations, as the CRD schema checks them (repeated for resources that never went through the
//! API server, e.g. `preview`). Pure functions; endpoints and credentials are the client
//! factory's (`clients/live.rs`).

use crate::api::common::{AccessKeyRef, MAX_ROLLOUT_TARGETS, RolloutRestartTarget, SecretKeyRef};
use crate::api::duration::Duration;
use crate::api::names;
use crate::controller::error::Error;
use crate::providers::error::clip;

/// InvalidSpec unless `ok(value)`: "`field` "value" is not `what`". The value is quoted
/// (clipped): names and IDs are not secret, and seeing them helps.
pub fn name(field: &str, value: &str, ok: fn(&str) -> bool, what: &str) -> Result<(), Error> {
    if ok(value) {
        Ok(())
    } else {
        Err(Error::InvalidSpec(format!(
            "{field} {:?} is not {what}",
            clip(value, 100)
        )))
    }
}

const SECRET_NAME: &str = "a Secret name (lower-case letters, digits, '-' and '.', at most 253 \
                           characters; the Secret is always looked up in this resource's \
                           namespace)";
const SECRET_KEY: &str = "a Secret key (letters, digits, '-', '_' and '.')";

/// A Secret name written in `field` (e.g. `spec.secretName`).
pub fn secret_name(field: &str, value: Option<&str>) -> Result<(), Error> {
    match value.filter(|v| !v.is_empty()) {
        Some(v) => name(field, v, names::is_dns_subdomain, SECRET_NAME),
        None => Ok(()),
    }
}

/// A `{name, key}` reference to a Secret in the resource's namespace.
pub fn secret_key_ref(field: &str, r: &SecretKeyRef) -> Result<(), Error> {
    name(
        &format!("{field}.name"),
        &r.name,
        names::is_dns_subdomain,
        SECRET_NAME,
    )?;
    name(
        &format!("{field}.key"),
        &r.key,
        names::is_secret_key,
        SECRET_KEY,
    )
}

/// An AccessKey reference: the Secret name and its keys.
pub fn access_key_ref(field: &str, r: &AccessKeyRef) -> Result<(), Error> {
    name(
        &format!("{field}.name"),
        &r.name,
        names::is_dns_subdomain,
        SECRET_NAME,
    )?;
    for (key_field, key) in [
        ("accessKeyIdKey", Some(r.access_key_id_key.as_str())),
        ("accessKeySecretKey", Some(r.access_key_secret_key.as_str())),
        ("securityTokenKey", r.security_token_key()),
    ] {
        if let Some(k) = key {
            name(
                &format!("{field}.{key_field}"),
                k,
                names::is_secret_key,
                SECRET_KEY,
            )?;
        }
    }
    Ok(())
}

/// A positive duration from the spec, or InvalidSpec naming the field.
pub fn positive(field: &str, d: Option<&Duration>) -> Result<Option<std::time::Duration>, Error> {
    let Some(d) = d else { return Ok(None) };
    match d.parsed() {
        Err(e) => Err(Error::InvalidSpec(format!("{field}: {e}"))),
        Ok(v) if v.is_zero() => Err(Error::InvalidSpec(format!(
            "{field} must be greater than zero, got {d}"
        ))),
        Ok(v) => Ok(Some(v)),
    }
}
/// `spec.rolloutRestartTargets`: at most [`MAX_ROLLOUT_TARGETS`], each with exactly one of name
/// (a workload name) and a well-formed selector. They name workloads of the resource's own
/// namespace only: the spec has no field for another.
pub fn rollout_targets(targets: &[RolloutRestartTarget]) -> Result<(), Error> {
    if targets.len() > MAX_ROLLOUT_TARGETS {
        return Err(Error::InvalidSpec(format!(
            "spec.rolloutRestartTargets has {} entries, at most {MAX_ROLLOUT_TARGETS} are allowed",
            targets.len()
        )));
    }
    for (i, t) in targets.iter().enumerate() {
        let field = format!("spec.rolloutRestartTargets[{i}]");
        match (&t.name, &t.selector) {
            (Some(n), None) => name(
                &format!("{field}.name"),
                n,
                names::is_dns_subdomain,
                "a workload name (lower-case letters, digits, '-' and '.', at most 253 \
                 characters; in this resource's namespace)",
            )?,
            (None, Some(s)) => {
                if let Some(p) = s.problem() {
                    return Err(Error::InvalidSpec(format!("{field}.selector: {p}")));
                }
            }
            _ => {
                return Err(Error::InvalidSpec(format!(
                    "{field}: set exactly one of name or selector"
                )));
            }
        }
    }
    Ok(())
}
