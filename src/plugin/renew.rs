//! `kubectl workspaceaccess renew KIND/NAME... [-n NS] [--wait]`: sets the annotation
//! `workspaceaccess.io/renew-requested-at` to the current time, which the operator handles
//! once (a new token; a managed LivyToken rotates; a WorkspaceView is read again) and records
//! in `status.lastRenewRequest`. With `--wait`, waits for that record.

use super::{Connection, FIELD_MANAGER, KindInfo, PluginError};
use crate::api::common::RENEW_REQUESTED_AT_ANNOTATION;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use std::time::Duration;

/// The value `renew` writes: `now` in RFC 3339 with milliseconds, so that two requests in the
/// same second are still two requests.
pub fn request_value(now: Timestamp) -> String {
    now.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn api(conn: &Connection, kind: &KindInfo, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(conn.client.clone(), namespace, &kind.api_resource())
}

/// Sets the annotation on `kind/name` in `namespace` to `value`.
pub async fn request(
    conn: &Connection,
    kind: &KindInfo,
    name: &str,
    namespace: &str,
    value: &str,
) -> Result<(), PluginError> {
    if !kind.renewable {
        return Err(PluginError::Usage(format!(
            "a {} has no token or inventory to renew",
            kind.kind
        )));
    }
    let patch = json!({"metadata": {"annotations": {RENEW_REQUESTED_AT_ANNOTATION: value}}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api(conn, kind, namespace)
        .patch(name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|e| conn.error(e, kind, Some(name), namespace))?;
    Ok(())
}

/// The Ready condition after the request was handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    /// Status of the Ready condition.
    pub ready: String,
    /// Its reason.
    pub reason: String,
    /// Its message.
    pub message: String,
}

fn ready_of(status: &Value) -> Handled {
    let c = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let field = |k: &str| c.and_then(|c| c[k].as_str()).unwrap_or_default().to_owned();
    Handled {
        ready: c.map_or_else(|| "Unknown".into(), |_| field("status")),
        reason: field("reason"),
        message: field("message"),
    }
}

/// Waits until the operator records `value` in `status.lastRenewRequest` (polling every
/// `every`), at most `timeout`. On a timeout the error tells the resource's Ready condition:
/// a request whose sync fails stays pending and is retried by the operator.
pub async fn wait(
    conn: &Connection,
    kind: &KindInfo,
    name: &str,
    namespace: &str,
    value: &str,
    timeout: Duration,
    every: Duration,
) -> Result<Handled, PluginError> {
    let api = api(conn, kind, namespace);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let obj = api
            .get(name)
            .await
            .map_err(|e| conn.error(e, kind, Some(name), namespace))?;
        let status = obj.data.get("status").cloned().unwrap_or(Value::Null);
        let handled = ready_of(&status);
        if status["lastRenewRequest"].as_str() == Some(value) {
            return Ok(handled);
        }
        if tokio::time::Instant::now() + every > deadline {
            return Err(PluginError::Timeout(format!(
                "{}/{name}: the operator did not handle the renew request within {}s; the \
                 request stays pending and the operator retries it. Ready={} {}: {}",
                kind.short,
                timeout.as_secs(),
                handled.ready,
                handled.reason,
                handled.message
            )));
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_values_are_rfc3339_with_milliseconds() {
        let t: Timestamp = "2026-11-23T10:00:00.123456Z".parse().unwrap();
        assert_eq!(request_value(t), "2026-11-23T10:00:00.123Z");
        let v = request_value(Timestamp::now());
        assert!(v.parse::<Timestamp>().is_ok(), "{v}");
        assert!(v.len() <= crate::controller::driver::MAX_RENEW_REQUEST);
    }
}
