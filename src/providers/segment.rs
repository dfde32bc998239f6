//! Path parameters as URL path segments. Every provider client puts IDs and names from the spec
//! (or from a provider's answer) into request paths one percent-encoded segment each, so a `/`,
//! `?` or `#` inside a value stays inside it. Encoding alone is not enough for three kinds of
//! value, which [`check`] refuses before any URL is built:
//!
//! - the empty string (it would join two slashes, or end the path early);
//! - `.` and `..`: URL normalisation resolves them (`url`'s `path_segments_mut` even drops them
//!   silently), so the request would go to another path;
//! - control characters: the URL parser strips tab and newline, so `.\t.` would become `..`.

use crate::providers::error::{ProviderError, ProviderErrorKind, clip};

/// Ok if `value` can be sent as one path segment; otherwise an
/// [`ProviderErrorKind::InvalidRequest`] naming `what` (e.g. "the workspace ID").
pub fn check(what: &str, value: &str) -> Result<(), ProviderError> {
    let why = if value.is_empty() {
        "it is empty"
    } else if value == "." || value == ".." {
        "`.` and `..` would change the request path"
    } else if value.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(ProviderError::new(
        ProviderErrorKind::InvalidRequest,
        format!(
            "{what} {:?} can't be used in a request path: {why}",
            clip(value, 100)
        ),
    ))
}

/// `base` without its query and fragment, with `segments` appended to its path (after a
/// trailing empty segment, so `https://h/` + `a` is `https://h/a`), each percent-encoded as
/// one segment. The caller has [`check`]ed every value from a spec or an answer. `None` if the
/// base can't have a path (not an http(s) URL).
pub fn join<'a>(base: &url::Url, segments: impl IntoIterator<Item = &'a str>) -> Option<url::Url> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .ok()?
        .pop_if_empty()
        .extend(segments);
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use url::Url;

    #[test]
    fn refuses_what_encoding_cannot_protect() {
        for bad in ["", ".", "..", ".\t.", "a\nb", "\r", "x\u{7f}", "\u{85}"] {
            let err = check("the ID", bad).unwrap_err();
            assert_eq!(err.kind, ProviderErrorKind::InvalidRequest, "{bad:?}");
            assert!(err.message.starts_with("the ID "), "{}", err.message);
        }
        for ok in [
            "a", "...", "a/b", "?x=1", "#f", "%2e%2e", " ", "é", "a..b", "./a",
        ] {
            check("the ID", ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    /// Why the check exists: what the URL library does with these values.
    #[test]
    fn the_url_library_would_change_the_path_for_the_refused_values() {
        let base = Url::parse("https://example.com/api").unwrap();
        let with = |v: &str| {
            let mut u = base.clone();
            u.path_segments_mut().unwrap().extend([v, "tail"]);
            u.path().to_owned()
        };
        assert_eq!(with(".."), "/api/tail", "dropped");
        assert_eq!(with(".\t."), "/tail", "tab stripped, then `..` resolved");
        // Values that pass the check stay one segment.
        assert_eq!(with("a/b?c#d"), "/api/a%2Fb%3Fc%23d/tail");
        assert_eq!(with("%2e%2e"), "/api/%252e%252e/tail");
    }

    #[test]
    fn join_appends_encoded_segments_and_drops_query_and_fragment() {
        let base = Url::parse("https://h.example/?x=1#f").unwrap();
        let url = join(&base, ["v1", "a/b?c", ""]).unwrap();
        assert_eq!(url.as_str(), "https://h.example/v1/a%2Fb%3Fc/");
        let base = Url::parse("https://h.example/api/v2/").unwrap();
        assert_eq!(
            join(&base, ["x"]).unwrap().as_str(),
            "https://h.example/api/v2/x"
        );
        assert!(join(&Url::parse("mailto:a@b").unwrap(), ["x"]).is_none());
    }
}
