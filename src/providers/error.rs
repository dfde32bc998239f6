//! Typed provider errors. Every provider client maps its API's error shapes onto these kinds; the
//! reconcilers map kinds onto condition reasons and retry behaviour.

use std::{fmt, time::Duration};

/// What went wrong at a provider, in terms a reconciler can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderErrorKind {
    /// The credentials were refused (401, invalid client secret, bad signature...).
    AuthenticationFailed,
    /// Authenticated, but not allowed (403, missing role assignment or RAM permission).
    Forbidden,
    /// The workspace, token or other named object does not exist.
    NotFound,
    /// The provider asked us to slow down (429, Throttling.*).
    Throttled,
    /// The provider refused the request as malformed (400 that is not about credentials).
    InvalidRequest,
    /// The provider failed or could not be reached: 5xx, timeout, connection error.
    Unavailable,
    /// The provider answered with something we could not understand (malformed JSON, missing
    /// fields, an unexpected redirect).
    InvalidResponse,
}

/// An error from a provider call. `message` is safe to show in a condition: providers' own error
/// codes and messages, never a request body, header or token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderError {
    /// What kind of failure.
    pub kind: ProviderErrorKind,
    /// Human-readable, secret-free detail.
    pub message: String,
    /// The provider's request ID, if it gave one (quoted to support).
    pub request_id: Option<String>,
    /// How long the provider asked us to wait (Retry-After, x-acs-retry-after).
    pub retry_after: Option<Duration>,
    /// HTTP status, when there was a response.
    pub status: Option<u16>,
}

impl ProviderError {
    /// A new error with a message.
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            request_id: None,
            retry_after: None,
            status: None,
        }
    }

    /// Adds the provider's request ID.
    pub fn with_request_id(mut self, id: Option<String>) -> Self {
        self.request_id = id.filter(|s| !s.is_empty());
        self
    }

    /// Adds a retry-after hint.
    pub fn with_retry_after(mut self, d: Option<Duration>) -> Self {
        self.retry_after = d;
        self
    }

    /// Adds the HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// The default kind for an HTTP status with no more specific information.
    pub fn kind_for_status(status: u16) -> ProviderErrorKind {
        match status {
            401 => ProviderErrorKind::AuthenticationFailed,
            403 => ProviderErrorKind::Forbidden,
            404 | 410 => ProviderErrorKind::NotFound,
            429 => ProviderErrorKind::Throttled,
            408 | 500..=599 => ProviderErrorKind::Unavailable,
            300..=399 => ProviderErrorKind::InvalidResponse,
            _ => ProviderErrorKind::InvalidRequest,
        }
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProviderError {}

/// The message of a provider's error response: `{what}: HTTP {status}`, then the provider's
/// error code and text where it gave them, on one line of at most 600 characters.
pub fn http_error_message(what: &str, status: u16, code: Option<&str>, text: &str) -> String {
    let mut message = format!("{what}: HTTP {status}");
    for part in [code.unwrap_or_default(), text] {
        if !part.is_empty() {
            message.push_str(": ");
            message.push_str(part);
        }
    }
    clip(&message, 600)
}

/// `text` with every occurrence of each of `secrets` (the credentials a request carried, in
/// case the provider echoes one back) replaced by `[redacted]`. Values shorter than 6
/// characters are left alone: replacing them would mangle the text and hide nothing. Scrub
/// provider text before [`clip`]ping it: a clipped secret no longer matches.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 6) {
        out = out.replace(*s, "[redacted]");
    }
    out
}

/// Shortens provider-supplied text for a condition message: at most `max` characters, one line.
pub fn clip(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    if trimmed.chars().count() <= max {
        trimmed.to_owned()
    } else {
        let mut s: String = trimmed.chars().take(max).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        use ProviderErrorKind::*;
        for (status, kind) in [
            (401, AuthenticationFailed),
            (403, Forbidden),
            (404, NotFound),
            (429, Throttled),
            (500, Unavailable),
            (503, Unavailable),
            (400, InvalidRequest),
            (302, InvalidResponse),
        ] {
            assert_eq!(ProviderError::kind_for_status(status), kind, "{status}");
        }
    }

    #[test]
    fn display_carries_request_id() {
        let e = ProviderError::new(
            ProviderErrorKind::Forbidden,
            "AuthorizationFailed: no access",
        )
        .with_request_id(Some("abc-123".into()));
        assert_eq!(
            e.to_string(),
            "AuthorizationFailed: no access (request id abc-123)"
        );
        let e = ProviderError::new(ProviderErrorKind::Forbidden, "x")
            .with_request_id(Some(String::new()));
        assert_eq!(e.to_string(), "x");
    }

    #[test]
    fn http_error_messages_show_what_the_provider_gave() {
        assert_eq!(
            http_error_message(
                "Fabric listWorkspaces",
                400,
                Some("InvalidParameter"),
                "bad"
            ),
            "Fabric listWorkspaces: HTTP 400: InvalidParameter: bad"
        );
        assert_eq!(
            http_error_message("X", 403, Some("Code"), ""),
            "X: HTTP 403: Code"
        );
        assert_eq!(
            http_error_message("X", 500, None, "oops\nmore"),
            "X: HTTP 500: oops more"
        );
        assert_eq!(http_error_message("X", 502, Some(""), ""), "X: HTTP 502");
        assert!(
            http_error_message("X", 500, None, &"y".repeat(2000))
                .chars()
                .count()
                <= 601
        );
    }

    #[test]
    fn scrubbing_hides_echoed_credentials() {
        assert_eq!(
            scrub(
                "bad key s3cret-key! (s3cret-key)",
                &["s3cret-key", "short", ""]
            ),
            "bad key [redacted]! ([redacted])"
        );
        assert_eq!(scrub("a short b", &["short"]), "a short b");
    }

    #[test]
    fn clip_keeps_one_short_line() {
        assert_eq!(clip("a\nb", 10), "a b");
        assert_eq!(clip("abcdef", 3), "abc…");
    }
}
