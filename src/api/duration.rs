//! `Duration`: a length of time written the way Kubernetes users write it (`30m`, `1h30m`, `90s`).
//!
//! The format is Go's `time.ParseDuration` without signs: one or more `<number><unit>` pairs with
//! units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`, and an optional decimal fraction (`1.5h`).

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::{borrow::Cow, fmt, str::FromStr, time::Duration as StdDuration};

/// The regular expression the CRD schema checks durations against.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

/// A duration in Go/Kubernetes notation, kept as written so that a round trip through the API
/// server doesn't rewrite the user's manifest.
///
/// Deserializing never fails on the text: a duration the CRD schema's pattern lets through but
/// that doesn't parse (e.g. `99999999999h`, too large) is kept with its error, because one
/// object that fails to deserialize fails the whole list of its kind and would stop the
/// operator's watch for every resource of that kind. Reconcilers read durations through
/// [`Duration::parsed`] and report such a value as `InvalidSpec`. [`FromStr`] (command-line
/// flags) stays strict.
#[derive(Clone, PartialEq, Eq)]
pub struct Duration {
    text: String,
    value: Result<StdDuration, DurationParseError>,
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {why} (expected e.g. 90s, 30m, 1h30m)")]
pub struct DurationParseError {
    input: String,
    why: &'static str,
}

impl Duration {
    /// The parsed length of time; zero for a text that doesn't parse (see
    /// [`Duration::parsed`], which reconcilers check first).
    pub fn get(&self) -> StdDuration {
        self.value.as_ref().map_or(StdDuration::ZERO, |d| *d)
    }

    /// The parsed length of time, or why the text is not a duration.
    pub fn parsed(&self) -> Result<StdDuration, &DurationParseError> {
        self.value.as_ref().map(|d| *d)
    }

    /// The text as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A duration from a number of seconds, written as `<n>s`.
    pub fn from_secs(secs: u64) -> Self {
        Self {
            text: format!("{secs}s"),
            value: Ok(StdDuration::from_secs(secs)),
        }
    }
}

impl FromStr for Duration {
    type Err = DurationParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |why| DurationParseError {
            input: input.to_owned(),
            why,
        };
        if input.is_empty() {
            return Err(err("empty"));
        }
        let mut rest = input;
        let mut total_nanos: f64 = 0.0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| err("missing unit"))?;
            if num_len == 0 {
                return Err(err("expected a number"));
            }
            let number = &rest[..num_len];
            if number.starts_with('.') || number.ends_with('.') || number.matches('.').count() > 1 {
                return Err(err("malformed number"));
            }
            let n: f64 = number.parse().map_err(|_| err("malformed number"))?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let nanos_per_unit = match &rest[..unit_len] {
                "h" => 3_600e9,
                "m" => 60e9,
                "s" => 1e9,
                "ms" => 1e6,
                "us" | "µs" => 1e3,
                "ns" => 1.0,
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            rest = &rest[unit_len..];
            total_nanos += n * nanos_per_unit;
        }
        // More than ~290 years would overflow; nobody means that.
        if !total_nanos.is_finite() || total_nanos > 9.0e18 {
            return Err(err("too large"));
        }
        Ok(Self {
            text: input.to_owned(),
            value: Ok(StdDuration::from_nanos(total_nanos.round() as u64)),
        })
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(text.parse().unwrap_or_else(|e| Self {
            text,
            value: Err(e),
        }))
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

/// Formats a duration compactly for messages: `1h30m`, `45s`, `250ms`.
pub fn format_duration(d: StdDuration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> f64 {
        s.parse::<Duration>().unwrap().get().as_secs_f64()
    }

    #[test]
    fn parses_go_style_durations() {
        assert_eq!(secs("30m"), 1800.0);
        assert_eq!(secs("1h30m"), 5400.0);
        assert_eq!(secs("90s"), 90.0);
        assert_eq!(secs("1.5h"), 5400.0);
        assert_eq!(secs("250ms"), 0.25);
        assert_eq!(secs("1h1m1s"), 3661.0);
        assert_eq!(secs("10us"), 0.00001);
        assert_eq!(secs("10µs"), 0.00001);
    }

    #[test]
    fn refuses_malformed_durations() {
        for bad in [
            "",
            "30",
            "m",
            "1d",
            "1h 30m",
            "-5m",
            "1..5h",
            ".5h",
            "5.h",
            "1hx",
            "30M",
            "1e3s",
            "99999999999h",
        ] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be refused"
            );
        }
        let msg = "1d".parse::<Duration>().unwrap_err().to_string();
        assert!(msg.contains("unknown unit") && msg.contains("1d"), "{msg}");
    }

    #[test]
    fn schema_pattern_agrees_with_parser() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for s in [
            "30m", "1h30m", "1.5h", "250ms", "10µs", "1d", "", "30", "1h 30m", "-5m", "M", "5.h",
        ] {
            assert_eq!(
                re.is_match(s),
                s.parse::<Duration>().is_ok(),
                "schema pattern and parser disagree on {s:?}"
            );
        }
    }

    #[test]
    fn round_trips_as_written() {
        let d: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        assert_eq!(d.parsed(), Ok(StdDuration::from_secs(5400)));
        assert!(
            serde_json::from_str::<Duration>("1").is_err(),
            "not a string"
        );
    }

    /// The schema pattern allows `99999999999h`; the object must still deserialize (or the
    /// whole list of its kind would fail), with the error kept for the reconciler.
    #[test]
    fn deserializing_keeps_unparseable_text_and_its_error() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        assert!(re.is_match("99999999999h"), "the schema lets it through");
        for text in ["99999999999h", "soon", ""] {
            let d: Duration = serde_json::from_str(&format!("{text:?}")).unwrap();
            let err = d.parsed().unwrap_err().to_string();
            assert!(err.contains(&format!("{text:?}")), "{err}");
            assert_eq!(d.get(), StdDuration::ZERO);
            assert_eq!(d.as_str(), text);
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("{text:?}"));
        }
        assert!(
            "99999999999h".parse::<Duration>().is_err(),
            "flags stay strict"
        );
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_duration(StdDuration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(StdDuration::from_secs(45)), "45s");
        assert_eq!(format_duration(StdDuration::from_millis(250)), "250ms");
        assert_eq!(format_duration(StdDuration::from_secs(3600)), "1h");
    }
}
