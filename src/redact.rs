//! A string type for secret values (tokens, client secrets, access keys).
//!
//! `SecretString` never prints its content: `Debug` shows `[redacted]` and there is no
//! `Display` or `Serialize`, so a secret can't end up in a log line, an event, a condition or a
//! panic message by accident. The value is reachable only through [`SecretString::expose`], which
//! makes every place that handles the raw value easy to find.

use std::fmt;

/// A secret value whose `Debug` output is `[redacted]`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The raw secret value. Call only where the value is sent to a provider or written to a
    /// Kubernetes Secret.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = SecretString::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            token: SecretString,
            other: Option<SecretString>,
        }
        let h = Holder {
            token: s.clone(),
            other: Some(s.clone()),
        };
        let printed = format!("{h:?} {h:#?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn deserializes_from_a_plain_string() {
        let s: SecretString = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(s.expose(), "abc");
        assert!(!s.is_empty());
        assert!(SecretString::default().is_empty());
    }
}
