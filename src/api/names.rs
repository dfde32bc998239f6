//! The CRD schema's name patterns as plain functions, for the reconcilers: a resource that never
//! went through the API server (`preview`), or one stored before a pattern was tightened, is
//! checked again before any request is built. Each function accepts exactly what its pattern
//! accepts (a test compares them on many strings).

fn ascii_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// A DNS-1123 label in lower case: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns_label(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A Secret name ([`crate::api::common::DNS_SUBDOMAIN_PATTERN`], at most 253 characters):
/// lower-case DNS labels joined by dots. It can't contain `/`, so it can't name a path outside
/// the Secrets of the namespace it is looked up in.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A namespace name ([`crate::api::common::DNS_LABEL_PATTERN`], at most 63 characters): one
/// lower-case DNS label.
pub fn is_namespace_name(s: &str) -> bool {
    s.len() <= 63 && is_dns_label(s)
}

/// A key of a Secret's data ([`crate::api::common::SECRET_KEY_PATTERN`], at most 253).
pub fn is_secret_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| ascii_alnum(b) || matches!(b, b'-' | b'.' | b'_'))
}

/// A GUID ([`crate::api::common::GUID_PATTERN`]).
pub fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// An Entra tenant ([`crate::api::common::TENANT_PATTERN`], at most 253): a GUID, or a domain of at least two
/// labels of letters, digits and inner hyphens.
pub fn is_tenant(s: &str) -> bool {
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter().all(|c| ascii_alnum(*c) || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    s.len() <= 253 && (is_guid(s) || (s.contains('.') && s.split('.').all(label)))
}

/// An Alibaba Cloud region ([`crate::api::livy_token::REGION_PATTERN`], at most 64):
/// `^[a-z]{2,}(-[a-z0-9]+)+$`, e.g. `cn-hangzhou`.
pub fn is_region(s: &str) -> bool {
    let mut parts = s.split('-');
    let first = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    s.len() <= 64
        && first.len() >= 2
        && first.bytes().all(|b| b.is_ascii_lowercase())
        && !rest.is_empty()
        && rest.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// An EMR Serverless Spark ID ([`crate::api::livy_token::ALIBABA_ID_PATTERN`]): 1-128 letters,
/// digits, `_` and `-`, starting with a letter or digit.
pub fn is_alibaba_id(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=128).contains(&b.len())
        && ascii_alnum(b[0])
        && b.iter()
            .all(|c| ascii_alnum(*c) || matches!(c, b'_' | b'-'))
}

/// A managed Livy token name ([`crate::api::livy_token::TOKEN_NAME_PATTERN`]): empty, or 1-64
/// letters, digits, `_`, `.` and `-`, starting with a letter or digit.
pub fn is_token_name(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= 64
            && ascii_alnum(b[0])
            && b.iter()
                .all(|c| ascii_alnum(*c) || matches!(c, b'_' | b'.' | b'-')))
}

/// A DataRobot ID ([`crate::api::workspace_view::DATAROBOT_ID_PATTERN`]): 1-64 letters,
/// digits, `_` and `-`.
pub fn is_datarobot_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|c| ascii_alnum(c) || matches!(c, b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::{
        DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, GUID_PATTERN, SECRET_KEY_PATTERN, TENANT_PATTERN,
    };
    use crate::api::livy_token::{ALIBABA_ID_PATTERN, REGION_PATTERN, TOKEN_NAME_PATTERN};
    use crate::api::workspace_view::DATAROBOT_ID_PATTERN;

    /// Strings built from the characters that matter to the patterns, in all short
    /// combinations, plus hand-picked edge cases.
    fn corpus() -> Vec<String> {
        let alphabet = ["a", "Z", "0", "f", "-", ".", "_", "/", "é", "%", " "];
        let mut out = vec![String::new()];
        let mut layer = vec![String::new()];
        for _ in 0..4 {
            let next: Vec<String> = layer
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            out.extend(next.iter().cloned());
            layer = next;
        }
        for s in [
            "00000000-1111-2222-3333-444444444444",
            "0000000g-1111-2222-3333-444444444444",
            "00000000-1111-2222-3333-4444444444444",
            "contoso.onmicrosoft.com",
            "contoso.",
            ".contoso.com",
            "a-.com",
            "cn-hangzhou",
            "ap-southeast-1",
            "cn--x",
            "cn-",
            "c-x",
            "w-8adde60aa809701f",
            "lctk-xxxxxxxx",
            "65f0aa",
            "a.b.c",
            "a..b",
            "..",
            ".",
            "../x",
            "x/../y",
            "x?y=1",
            "x#y",
            "Secret",
            "my-secret.v2",
        ] {
            out.push(s.to_owned());
        }
        for n in [63, 64, 65, 127, 128, 129, 252, 253, 254] {
            out.push("a".repeat(n));
        }
        out
    }

    #[test]
    fn checks_agree_with_the_schema_patterns() {
        type Check = fn(&str) -> bool;
        let pairs: [(&str, Option<usize>, Check); 9] = [
            (DNS_SUBDOMAIN_PATTERN, Some(253), is_dns_subdomain),
            (DNS_LABEL_PATTERN, Some(63), is_namespace_name),
            (SECRET_KEY_PATTERN, Some(253), is_secret_key),
            (GUID_PATTERN, None, is_guid),
            (TENANT_PATTERN, Some(253), is_tenant),
            (REGION_PATTERN, Some(64), is_region),
            (ALIBABA_ID_PATTERN, None, is_alibaba_id),
            (TOKEN_NAME_PATTERN, None, is_token_name),
            (DATAROBOT_ID_PATTERN, None, is_datarobot_id),
        ];
        let corpus = corpus();
        for (pattern, max_len, check) in pairs {
            let re = regex::Regex::new(pattern).unwrap();
            for s in &corpus {
                let schema = re.is_match(s) && max_len.is_none_or(|m| s.chars().count() <= m);
                assert_eq!(check(s), schema, "{pattern} on {s:?}");
            }
        }
    }

    #[test]
    fn nothing_with_a_slash_or_a_dot_segment_is_a_secret_name() {
        for bad in [
            "..", ".", "a/b", "../other", "a..b", "A", "a?b", "a#b", "", "-a",
        ] {
            assert!(!is_dns_subdomain(bad), "{bad:?}");
        }
    }
}
