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

/// An error from a provider call, safe to show in a condition: providers' own error codes and
/// messages, never a request body, header or token.
///
/// It reads as one line: the provider's code and text first (`message`), then in parentheses
/// which call failed and how (`context`) and the provider's request id:
/// `AADSTS7000215: Invalid client secret provided. (Microsoft Entra ID token request, HTTP 401,
/// invalid_client; request id 67c1…)`. [`ProviderError::summary`] is the same line with the
/// provider's text shortened, for condition messages (`kubectl get -o wide`); the full line
/// goes to events and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderError {
    /// What kind of failure.
    pub kind: ProviderErrorKind,
    /// Human-readable, secret-free detail: the provider's code and text, or what happened.
    pub message: String,
    /// Which call failed and how it ended, e.g. `Fabric listWorkspaces, HTTP 403`.
    pub context: Option<String>,
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
            context: None,
            request_id: None,
            retry_after: None,
            status: None,
        }
    }

    /// An error answered by a provider over HTTP: `what` names the call (e.g. `Fabric
    /// listWorkspaces`), `code` and `text` are what the provider said (scrubbed by the caller).
    /// The message is the code and the text (at most 600 characters); the context names the
    /// call and the status.
    pub fn http(
        kind: ProviderErrorKind,
        what: &str,
        status: u16,
        code: Option<&str>,
        text: &str,
    ) -> Self {
        let parts: Vec<&str> = [code.unwrap_or_default(), text.trim()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        let message = if parts.is_empty() {
            "no error details in the response".to_owned()
        } else {
            parts.join(": ")
        };
        Self::new(kind, clip(&message, 600))
            .with_context(format!("{what}, HTTP {status}"))
            .with_status(status)
    }

    /// Adds which call failed and how.
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into()).filter(|c| !c.is_empty());
        self
    }

    /// The error as one line of at most about `max` characters: the message shortened (never
    /// below 60 characters), the context and request id kept whole.
    pub fn summary(&self, max: usize) -> String {
        let tail = self.tail();
        let room = max.saturating_sub(tail.chars().count()).max(60);
        let mut line = clip(&self.message, room - 1);
        line.push_str(&tail);
        line
    }

    /// ` (context; request id …)`, or empty.
    fn tail(&self) -> String {
        let parts: Vec<String> = self
            .context
            .iter()
            .cloned()
            .chain(self.request_id.iter().map(|id| format!("request id {id}")))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join("; "))
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
        write!(f, "{}{}", self.message, self.tail())
    }
}

impl std::error::Error for ProviderError {}

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

/// Shortens provider-supplied text for a condition message: at most `max` characters, one line
/// (control characters and runs of white space become one space).
pub fn clip(text: &str, max: usize) -> String {
    let one_line = text
        .split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let trimmed = one_line.as_str();
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
        let e = |code, text: &str, status| {
            ProviderError::http(ProviderErrorKind::InvalidRequest, "X", status, code, text)
                .to_string()
        };
        assert_eq!(
            ProviderError::http(
                ProviderErrorKind::InvalidRequest,
                "Fabric listWorkspaces",
                400,
                Some("InvalidParameter"),
                "bad"
            )
            .to_string(),
            "InvalidParameter: bad (Fabric listWorkspaces, HTTP 400)"
        );
        assert_eq!(e(Some("Code"), "", 403), "Code (X, HTTP 403)");
        assert_eq!(e(None, "oops\nmore", 500), "oops more (X, HTTP 500)");
        assert_eq!(
            e(Some(""), "", 502),
            "no error details in the response (X, HTTP 502)"
        );
        let long = ProviderError::http(
            ProviderErrorKind::Unavailable,
            "X",
            500,
            None,
            &"y".repeat(2000),
        );
        assert!(long.message.chars().count() <= 601);
        assert_eq!(long.status, Some(500));
    }

    #[test]
    fn the_summary_shortens_the_text_and_keeps_the_code_context_and_request_id() {
        let e = ProviderError::http(
            ProviderErrorKind::AuthenticationFailed,
            "Microsoft Entra ID token request",
            401,
            Some("AADSTS7000215"),
            &format!(
                "Invalid client secret provided. {}",
                "Ensure the secret ".repeat(30)
            ),
        )
        .with_request_id(Some("67c1-trace".into()));
        let full = e.to_string();
        assert!(full.len() > 500, "{full}");
        assert_eq!(full.matches("request id").count(), 1);
        let short = e.summary(200);
        assert!(short.chars().count() <= 200, "{} {short}", short.len());
        assert!(short.starts_with("AADSTS7000215: Invalid client secret provided."));
        assert!(
            short
                .ends_with("… (Microsoft Entra ID token request, HTTP 401; request id 67c1-trace)")
        );
        // A short message is left whole.
        let small = ProviderError::new(ProviderErrorKind::NotFound, "gone");
        assert_eq!(small.summary(200), "gone");
        assert_eq!(small.to_string(), "gone");
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
