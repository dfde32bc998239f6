//! Time arithmetic shared by the provider clients and the controllers: saturating additions
//! and differences of [`Timestamp`]s and std [`Duration`]s, and the RFC 3339 form the operator
//! writes. Pure functions, no clock: callers pass the times.

use jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// `to - from`, or zero if `to` is earlier.
pub fn duration_between(from: Timestamp, to: Timestamp) -> Duration {
    let d = to.duration_since(from);
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

/// `t + d`, saturating at the maximum timestamp.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|sd| t.checked_add(sd).ok())
        .unwrap_or(Timestamp::MAX)
}

/// `t - d`, saturating at the minimum timestamp.
pub fn sub(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|sd| t.checked_sub(sd).ok())
        .unwrap_or(Timestamp::MIN)
}

/// `t` rounded down to a whole second.
pub fn whole_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// `t` rounded to the nearest second: the time [`rfc3339`] writes.
pub fn nearest_second(t: Timestamp) -> Timestamp {
    t.round(jiff::Unit::Second).unwrap_or(t)
}

/// RFC 3339 with second precision (rounded), as written into annotations, Secret keys and
/// messages.
pub fn rfc3339(t: Timestamp) -> String {
    t.round(jiff::Unit::Second)
        .unwrap_or(t)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn time_arithmetic_saturates() {
        assert_eq!(
            duration_between(ts("2026-01-02T00:00:00Z"), ts("2026-01-01T00:00:00Z")),
            Duration::ZERO
        );
        assert_eq!(add(Timestamp::MAX, Duration::from_secs(5)), Timestamp::MAX);
        assert_eq!(sub(Timestamp::MIN, Duration::from_secs(5)), Timestamp::MIN);
    }

    #[test]
    fn rfc3339_has_whole_seconds() {
        assert_eq!(
            rfc3339(ts("2026-11-23T18:00:00.4Z")),
            "2026-11-23T18:00:00Z"
        );
        assert_eq!(
            rfc3339(ts("2026-11-23T18:00:00.6Z")),
            "2026-11-23T18:00:01Z"
        );
        assert_eq!(
            whole_second(ts("2026-11-23T18:00:00.6Z")),
            ts("2026-11-23T18:00:00Z")
        );
    }
}
