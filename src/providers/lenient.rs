//! Tolerant deserializers for provider JSON. Providers document a field as an integer and then
//! send `28800.0` (Azure Machine Learning's own example) or `"3599"` (Azure IMDS); a strict
//! parse would turn a usable answer into an outage.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A number of seconds given as an integer, a float or a numeric string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(f64),
    Text(String),
}

/// Deserializes an optional number of seconds (integer, float or numeric string). `null`,
/// a missing field, a negative, non-finite or non-numeric value all give `None`: the caller
/// decides what a missing lifetime means.
pub fn opt_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let raw: Option<Seconds> = Option::deserialize(d).unwrap_or(None);
    let secs = match raw {
        Some(Seconds::Number(n)) => Some(n),
        Some(Seconds::Text(s)) => s.trim().parse::<f64>().ok(),
        None => None,
    };
    Ok(secs
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(u32::MAX as f64))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    struct T {
        #[serde(default, deserialize_with = "opt_seconds")]
        s: Option<Duration>,
    }

    fn parse(json: &str) -> Option<Duration> {
        serde_json::from_str::<T>(json).unwrap().s
    }

    #[test]
    fn integers_floats_and_strings() {
        assert_eq!(parse(r#"{"s": 28800}"#), Some(Duration::from_secs(28800)));
        assert_eq!(parse(r#"{"s": 28800.0}"#), Some(Duration::from_secs(28800)));
        assert_eq!(parse(r#"{"s": "3599"}"#), Some(Duration::from_secs(3599)));
        assert_eq!(parse(r#"{"s": 1.5}"#), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn missing_or_unusable_values_are_none() {
        assert_eq!(parse(r#"{}"#), None);
        assert_eq!(parse(r#"{"s": null}"#), None);
        assert_eq!(parse(r#"{"s": -5}"#), None);
        assert_eq!(parse(r#"{"s": "soon"}"#), None);
        assert_eq!(parse(r#"{"s": {"x": 1}}"#), None);
        assert_eq!(parse(r#"{"s": [1]}"#), None);
    }
}
