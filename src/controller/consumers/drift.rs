//! Drift repair: what the operator knows about the Secrets it wrote, so that one changed or
//! deleted by someone else is put back, without reading Secret data on the operator's own
//! writes or on resyncs.
//!
//! - [`fingerprint`]: per key, a salted, truncated SHA-256 of the value the operator wrote,
//!   kept in the Secret's `workspaceaccess.io/data-digest` annotation. It says which keys
//!   someone changed or removed (keys someone added are left alone), and whether a write
//!   changes the Secret's data (a rollout restart). A hash of a token can't be turned back
//!   into the token; the values that are not tokens (token type, expiry, host names, IDs) are
//!   in the resource's status anyway. The salt (the resource's UID) keeps equal values of two
//!   resources from having equal fingerprints.
//! - [`SecretVersions`]: the `resourceVersion` of each owned Secret as the operator last wrote
//!   or checked it. A watch event with another version is someone else's change: only then is
//!   the Secret read.
//! - [`TokenMemory`]: the last token the operator obtained for each resource (in memory only,
//!   never logged), so that a deleted or edited Secret is restored, and a token whose Secret
//!   write failed (the API server went away) is written later, without another provider call.

use crate::controller::secret::SecretContent;
use crate::redact::SecretString;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Hex digits of each key's hash in a fingerprint (64 bits).
const HASH_HEX: usize = 16;

fn key_hash(salt: &str, key: &str, value: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    h.update([0]);
    h.update(value);
    hex::encode(h.finalize())[..HASH_HEX].to_owned()
}

/// The fingerprint of a Secret's data: `key:hash` pairs sorted by key, comma-separated.
pub fn fingerprint(salt: &str, data: &BTreeMap<String, SecretString>) -> String {
    data.iter()
        .map(|(k, v)| format!("{k}:{}", key_hash(salt, k, v.expose().as_bytes())))
        .collect::<Vec<_>>()
        .join(",")
}

/// The keys of a fingerprint, with their hashes.
fn parse(fingerprint: &str) -> BTreeMap<&str, &str> {
    fingerprint
        .split(',')
        .filter_map(|pair| pair.rsplit_once(':'))
        .collect()
}

/// The keys a fingerprint names.
pub fn keys(fingerprint: &str) -> Vec<String> {
    parse(fingerprint).into_keys().map(str::to_owned).collect()
}

/// The keys of `recorded` (a fingerprint) whose value in `actual` differs or is missing.
pub fn drifted_keys(
    salt: &str,
    recorded: &str,
    actual: &BTreeMap<String, ByteString>,
) -> Vec<String> {
    parse(recorded)
        .into_iter()
        .filter(|(key, hash)| {
            actual
                .get(*key)
                .is_none_or(|v| key_hash(salt, key, &v.0) != *hash)
        })
        .map(|(key, _)| key.to_owned())
        .collect()
}

/// Versions of owned Secrets the operator wrote or checked, by `namespace/name`, and the
/// Secrets it is writing right now (whose watch events may come before the write's answer).
#[derive(Default)]
pub struct SecretVersions {
    versions: Mutex<HashMap<String, String>>,
    writing: Mutex<std::collections::HashSet<String>>,
}

fn secret_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl SecretVersions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The operator wrote (or checked) this version.
    pub fn known_as(&self, namespace: &str, name: &str, version: &str) {
        self.lock()
            .insert(secret_key(namespace, name), version.to_owned());
    }

    /// The operator starts writing the Secret: until [`Self::written`], its watch events are
    /// the operator's own (a change by someone else meanwhile is overwritten by the write).
    pub fn writing(&self, namespace: &str, name: &str) {
        self.writing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(secret_key(namespace, name));
    }

    /// The write is over: `version` if it succeeded.
    pub fn written(&self, namespace: &str, name: &str, version: Option<&str>) {
        if let Some(v) = version {
            self.known_as(namespace, name, v);
        }
        self.writing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&secret_key(namespace, name));
    }

    /// Whether a watch event showing `version` is the operator's own doing: a version it wrote
    /// or checked, or any while it is writing the Secret.
    pub fn is_own(&self, namespace: &str, name: &str, version: &str) -> bool {
        self.is_known(namespace, name, version)
            || self
                .writing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&secret_key(namespace, name))
    }

    /// A version seen when the watch (re)listed: it becomes the known one unless the operator
    /// already knows another. Returns whether it knew another: the Secret changed while the
    /// watch was down, by someone else unless the operator is writing it now.
    pub fn listed(&self, namespace: &str, name: &str, version: &str) -> bool {
        let key = secret_key(namespace, name);
        let other = match self.lock().entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(known) => known.get() != version,
            std::collections::hash_map::Entry::Vacant(new) => {
                new.insert(version.to_owned());
                false
            }
        };
        other
            && !self
                .writing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key)
    }

    /// Whether `version` is the one the operator wrote or checked last.
    pub fn is_known(&self, namespace: &str, name: &str, version: &str) -> bool {
        self.lock()
            .get(&secret_key(namespace, name))
            .is_some_and(|v| v == version)
    }

    /// The Secret is gone.
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&secret_key(namespace, name));
    }

    /// Number of Secrets known.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A token the operator obtained for a resource.
#[derive(Clone, Debug)]
pub struct Remembered {
    /// The resource's kind.
    pub kind: &'static str,
    /// The resource generation it was obtained for.
    pub generation: Option<i64>,
    /// The kind's Secret keys and the token's times.
    pub content: SecretContent,
}

/// The last token obtained per resource (by `object_key`), in memory only.
#[derive(Default)]
pub struct TokenMemory(Mutex<HashMap<String, Remembered>>);

impl TokenMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Remembered>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers the token obtained for the resource `key` (before its Secret is written).
    pub fn remember(
        &self,
        kind: &'static str,
        key: &str,
        generation: Option<i64>,
        content: SecretContent,
    ) {
        self.lock().insert(
            key.to_owned(),
            Remembered {
                kind,
                generation,
                content,
            },
        );
    }

    /// The token remembered for `key`, if it was obtained for `generation` and neither its
    /// renewal time nor its expiry has come at `now`.
    pub fn current(
        &self,
        key: &str,
        generation: Option<i64>,
        now: Timestamp,
    ) -> Option<Remembered> {
        self.lock()
            .get(key)
            .filter(|r| r.generation == generation)
            .filter(|r| now < r.content.renew_at && now < r.content.expires_at)
            .cloned()
    }

    /// Forgets the resource `key` (deleted).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Keeps, of the resources of `kind`, only the tokens of those (by `object_key`) for
    /// which `keep` is true (after a relist: resources deleted while the watch was down are
    /// forgotten).
    pub fn retain_kind(&self, kind: &str, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|k, r| r.kind != kind || keep(k));
    }

    /// Number of resources with a remembered token.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no token is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretString::new(*v)))
            .collect()
    }

    fn bytes(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn a_fingerprint_names_each_key_and_hides_each_value() {
        let fp = fingerprint(
            "uid-1",
            &data(&[("token", "tok-secret-1"), ("tokenId", "t1")]),
        );
        let parts: Vec<&str> = fp.split(',').collect();
        assert_eq!(parts.len(), 2);
        assert!(
            parts[0].starts_with("token:") && parts[1].starts_with("tokenId:"),
            "{fp}"
        );
        assert!(!fp.contains("tok-secret-1"));
        assert!(
            parts
                .iter()
                .all(|p| p.rsplit_once(':').unwrap().1.len() == HASH_HEX)
        );
        // Salted: the same data of another resource has another fingerprint.
        let other = fingerprint(
            "uid-2",
            &data(&[("token", "tok-secret-1"), ("tokenId", "t1")]),
        );
        assert_ne!(fp, other);
        // Deterministic, and any value change changes it.
        assert_eq!(
            fp,
            fingerprint(
                "uid-1",
                &data(&[("tokenId", "t1"), ("token", "tok-secret-1")])
            )
        );
        assert_ne!(
            fp,
            fingerprint(
                "uid-1",
                &data(&[("token", "tok-secret-2"), ("tokenId", "t1")])
            )
        );
    }

    #[test]
    fn drifted_keys_are_the_changed_and_removed_ones_not_added_ones() {
        let written = data(&[("a", "1111"), ("b", "2222"), ("c", "3333")]);
        let fp = fingerprint("u", &written);
        let same = bytes(&[("a", "1111"), ("b", "2222"), ("c", "3333")]);
        assert!(drifted_keys("u", &fp, &same).is_empty());
        let added = bytes(&[("a", "1111"), ("b", "2222"), ("c", "3333"), ("mine", "x")]);
        assert!(drifted_keys("u", &fp, &added).is_empty());
        let edited = bytes(&[("a", "1111"), ("b", "edited"), ("c", "3333")]);
        assert_eq!(drifted_keys("u", &fp, &edited), vec!["b"]);
        let removed = bytes(&[("a", "1111")]);
        assert_eq!(drifted_keys("u", &fp, &removed), vec!["b", "c"]);
        assert_eq!(drifted_keys("other-salt", &fp, &same).len(), 3);
    }

    #[test]
    fn versions_are_known_after_a_write_and_a_listing_does_not_overwrite_them() {
        let v = SecretVersions::default();
        assert!(!v.is_known("ns", "s", "10"));
        assert!(
            !v.listed("ns", "s", "10"),
            "first seen: nothing to compare with"
        );
        assert!(v.is_known("ns", "s", "10"));
        v.known_as("ns", "s", "12");
        assert!(v.is_known("ns", "s", "12") && !v.is_known("ns", "s", "10"));
        assert!(!v.listed("ns", "s", "12"), "relisted unchanged");
        // A relist showing an edit made while the watch was down doesn't make it known, and
        // says so (its owner is reconciled); not while the operator itself writes it.
        assert!(v.listed("ns", "s", "15"));
        assert!(!v.is_known("ns", "s", "15"));
        v.writing("ns", "s");
        assert!(!v.listed("ns", "s", "15"));
        v.written("ns", "s", None);
        // While the operator writes, any version is its own; after, only the one written.
        v.writing("ns", "s");
        assert!(v.is_own("ns", "s", "16") && v.is_own("ns", "s", "17"));
        v.written("ns", "s", Some("17"));
        assert!(v.is_own("ns", "s", "17") && !v.is_own("ns", "s", "16"));
        v.writing("ns", "s");
        v.written("ns", "s", None);
        assert!(!v.is_own("ns", "s", "18") && v.is_own("ns", "s", "17"));
        v.forget("ns", "s");
        assert!(v.is_empty());
    }

    #[test]
    fn a_remembered_token_is_current_for_its_generation_until_its_renewal() {
        let m = TokenMemory::default();
        let t0: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let content = SecretContent {
            data: data(&[("token", "tok")]),
            expires_at: crate::time::add(t0, std::time::Duration::from_secs(3600)),
            renew_at: crate::time::add(t0, std::time::Duration::from_secs(3000)),
        };
        m.remember("LivyToken", "ns/n/uid", Some(2), content.clone());
        m.remember("NotebookTokenRequest", "ns/other/uid", Some(1), content);
        assert!(m.current("ns/n/uid", Some(2), t0).is_some());
        assert!(
            m.current("ns/n/uid", Some(3), t0).is_none(),
            "another generation"
        );
        assert!(m.current("ns/n/other-uid", Some(2), t0).is_none());
        let due = crate::time::add(t0, std::time::Duration::from_secs(3000));
        assert!(
            m.current("ns/n/uid", Some(2), due).is_none(),
            "renewal time came"
        );
        m.forget("ns/n/uid");
        assert_eq!(m.len(), 1);
        m.retain_kind("LivyToken", |_| false);
        assert_eq!(m.len(), 1, "only LivyTokens' are dropped");
        m.retain_kind("NotebookTokenRequest", |k| k != "ns/other/uid");
        assert!(m.is_empty());
    }
}
