//! When to talk to a provider next: token renewal with jitter, retry backoff, and restart
//! recovery from the annotations of owned Secrets. Pure functions of their inputs, no I/O and no
//! clock: callers pass `now`.

use crate::api::common::{EXPIRES_AT_ANNOTATION, GENERATION_ANNOTATION, RENEW_AT_ANNOTATION};
use crate::time::{duration_between, sub};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::time::Duration;

/// Smallest default renew-before.
pub const MIN_RENEW_BEFORE: Duration = Duration::from_secs(60);
/// Largest jitter subtracted from a renewal time.
pub const MAX_JITTER: Duration = Duration::from_secs(300);

/// How long before expiry a token is renewed: `spec.renewBefore`, or 10% of the lifetime but at
/// least [`MIN_RENEW_BEFORE`]. Never more than half the lifetime, so that a token that lives
/// shorter than renewBefore is still used for a while instead of being renewed in a loop.
pub fn renew_before(lifetime: Duration, spec: Option<Duration>) -> Duration {
    let wanted = spec.unwrap_or_else(|| (lifetime / 10).max(MIN_RENEW_BEFORE));
    wanted.min(lifetime / 2)
}

/// Width of the jitter window for a renew-before: a fifth of it, at most [`MAX_JITTER`].
pub fn jitter_window(renew_before: Duration) -> Duration {
    (renew_before / 5).min(MAX_JITTER)
}

/// A deterministic pseudo-random fraction in [0, 1) from a seed (FNV-1a, then a mix), so that
/// the same resource and token always get the same jitter while different resources spread out.
pub fn unit_fraction(seed: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finaliser for a good spread of nearby seeds.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// When to renew a token obtained at `issued_at` that expires at `expires_at`:
/// `expires_at - renewBefore - jitter`, where the jitter is in [0, jitter_window) and derived
/// from `seed` (use the resource UID and the token's expiry). Never before `issued_at`.
pub fn renew_at(
    issued_at: Timestamp,
    expires_at: Timestamp,
    spec_renew_before: Option<Duration>,
    seed: &str,
) -> Timestamp {
    let lifetime = duration_between(issued_at, expires_at);
    let before = renew_before(lifetime, spec_renew_before);
    let jitter = jitter_window(before).mul_f64(unit_fraction(seed));
    let at = sub(expires_at, before + jitter);
    at.max(issued_at)
}

/// Exponential backoff after `failures` consecutive failures (1 = first failure):
/// `base * 2^(failures-1)`, capped at `cap`, with up to 10% deterministic jitter from `seed`
/// added below the cap.
pub fn backoff(failures: u32, base: Duration, cap: Duration, seed: &str) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let raw = base.saturating_mul(1u32 << exp.min(31));
    let capped = raw.min(cap);
    let jitter = capped.mul_f64(0.1 * unit_fraction(&format!("{seed}/{failures}")));
    (capped + jitter).min(cap.max(capped))
}

/// How long to wait before retrying after a failure: the backoff, or the provider's
/// Retry-After if that is longer (a provider's explicit request always wins over our cap).
pub fn retry_delay(
    failures: u32,
    retry_after: Option<Duration>,
    base: Duration,
    cap: Duration,
    seed: &str,
) -> Duration {
    let b = backoff(failures, base, cap, seed);
    match retry_after {
        Some(ra) if ra > b => ra,
        _ => b,
    }
}

/// A token recorded on an owned Secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordedToken {
    /// When it expires.
    pub expires_at: Timestamp,
    /// When the operator planned to renew it.
    pub renew_at: Timestamp,
}

/// The token an owned Secret records in its annotations, if they were written for
/// `generation`: its `expires-at` and `renew-at` (`renew-at` defaults to `expires-at`). Due
/// or not; see [`recorded_token`] for restart recovery.
pub fn recorded(meta: &ObjectMeta, generation: Option<i64>) -> Option<RecordedToken> {
    let ann = meta.annotations.as_ref()?;
    let for_generation: i64 = ann.get(GENERATION_ANNOTATION)?.parse().ok()?;
    if Some(for_generation) != generation {
        return None;
    }
    let expires_at: Timestamp = ann.get(EXPIRES_AT_ANNOTATION)?.parse().ok()?;
    let renew_at: Timestamp = ann
        .get(RENEW_AT_ANNOTATION)
        .and_then(|s| s.parse().ok())
        .unwrap_or(expires_at);
    Some(RecordedToken {
        expires_at,
        renew_at,
    })
}

impl RecordedToken {
    /// Whether neither the renewal time nor the expiry has come at `now`.
    pub fn is_current(&self, now: Timestamp) -> bool {
        now < self.renew_at && now < self.expires_at
    }
}

/// Restart recovery: the token an owned Secret holds, if it was obtained for `generation` and
/// its renewal time has not come yet. `None` means a provider call is due.
pub fn recorded_token(
    meta: &ObjectMeta,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<RecordedToken> {
    recorded(meta, generation).filter(|r| r.is_current(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    const H: u64 = 3600;

    #[test]
    fn renew_before_defaults_to_ten_percent_with_a_floor() {
        assert_eq!(
            renew_before(Duration::from_secs(8 * H), None),
            Duration::from_secs(2880)
        );
        assert_eq!(
            renew_before(Duration::from_secs(300), None),
            Duration::from_secs(60)
        );
        assert_eq!(
            renew_before(Duration::from_secs(8 * H), Some(Duration::from_secs(1800))),
            Duration::from_secs(1800)
        );
    }

    #[test]
    fn renew_before_never_exceeds_half_the_lifetime() {
        assert_eq!(
            renew_before(Duration::from_secs(90), None),
            Duration::from_secs(45)
        );
        assert_eq!(
            renew_before(Duration::from_secs(1800), Some(Duration::from_secs(2 * H))),
            Duration::from_secs(900)
        );
    }

    #[test]
    fn renew_at_is_before_expiry_by_renew_before_plus_bounded_jitter() {
        let issued = ts("2026-11-23T10:00:00Z");
        let expires = ts("2026-11-23T18:00:00Z");
        let latest = ts("2026-11-23T17:12:00Z"); // expires - 48m (10% of 8h)
        let earliest = ts("2026-11-23T17:07:00Z"); // minus the 5m jitter cap
        for i in 0..200 {
            let at = renew_at(issued, expires, None, &format!("uid-{i}"));
            assert!(at <= latest && at > earliest, "{at}");
        }
    }

    #[test]
    fn jitter_spreads_tokens_minted_together() {
        let issued = ts("2026-11-23T10:00:00Z");
        let expires = ts("2026-11-23T18:00:00Z");
        let mut seconds: Vec<i64> = (0..1000)
            .map(|i| renew_at(issued, expires, None, &format!("uid-{i}")).as_second())
            .collect();
        seconds.sort_unstable();
        seconds.dedup();
        // 1000 tokens over a 300 s window: most seconds of the window get used.
        assert!(
            seconds.len() > 250,
            "only {} distinct renewal seconds",
            seconds.len()
        );
        // Deterministic for the same seed.
        assert_eq!(
            renew_at(issued, expires, None, "x"),
            renew_at(issued, expires, None, "x")
        );
    }

    #[test]
    fn renew_at_never_precedes_issue() {
        let issued = ts("2026-11-23T10:00:00Z");
        let expires = ts("2026-11-23T10:00:10Z");
        assert!(renew_at(issued, expires, Some(Duration::from_secs(3600)), "s") >= issued);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(300);
        let b: Vec<Duration> = (1..=12).map(|n| backoff(n, base, cap, "s")).collect();
        assert!(
            b[0] >= Duration::from_secs(2) && b[0] < Duration::from_millis(2201),
            "{:?}",
            b[0]
        );
        assert!(b[1] >= Duration::from_secs(4) && b[1] < Duration::from_millis(4401));
        assert!(b[4] >= Duration::from_secs(32) && b[4] < Duration::from_millis(35201));
        for d in &b {
            assert!(*d <= cap, "{d:?} above cap");
        }
        assert_eq!(b[11], cap);
        assert_eq!(backoff(u32::MAX, base, cap, "s"), cap);
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(300);
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(55)), base, cap, "s"),
            Duration::from_secs(55)
        );
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(900)), base, cap, "s"),
            Duration::from_secs(900),
            "Retry-After above the cap is still honoured"
        );
        let d = retry_delay(3, Some(Duration::from_secs(1)), base, cap, "s");
        assert!(d >= Duration::from_secs(8), "{d:?}");
    }

    fn meta(ann: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            annotations: Some(
                ann.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn restart_recovery_reads_the_annotations() {
        let m = meta(&[
            (GENERATION_ANNOTATION, "3"),
            (EXPIRES_AT_ANNOTATION, "2026-11-23T18:00:00Z"),
            (RENEW_AT_ANNOTATION, "2026-11-23T17:10:00Z"),
        ]);
        let before = ts("2026-11-23T12:00:00Z");
        let got = recorded_token(&m, Some(3), before).unwrap();
        assert_eq!(got.renew_at, ts("2026-11-23T17:10:00Z"));
        assert_eq!(
            recorded_token(&m, Some(4), before),
            None,
            "spec changed since"
        );
        assert_eq!(
            recorded_token(&m, Some(3), ts("2026-11-23T17:10:00Z")),
            None,
            "renewal due"
        );
        assert_eq!(recorded_token(&meta(&[]), Some(3), before), None);
        let no_renew = meta(&[
            (GENERATION_ANNOTATION, "3"),
            (EXPIRES_AT_ANNOTATION, "2026-11-23T18:00:00Z"),
        ]);
        assert!(recorded_token(&no_renew, Some(3), before).is_some());
        assert_eq!(
            recorded_token(&no_renew, Some(3), ts("2026-11-23T18:00:00Z")),
            None,
            "expired"
        );
        let garbage = meta(&[
            (GENERATION_ANNOTATION, "3"),
            (EXPIRES_AT_ANNOTATION, "tomorrow"),
        ]);
        assert_eq!(recorded_token(&garbage, Some(3), before), None);
    }

    #[test]
    fn secret_annotations_count_only_for_this_generation() {
        let meta = meta(&[
            (GENERATION_ANNOTATION, "2"),
            (EXPIRES_AT_ANNOTATION, "2026-11-30T10:00:00Z"),
            (RENEW_AT_ANNOTATION, "2026-11-29T17:00:00Z"),
        ]);
        let r = recorded(&meta, Some(2)).unwrap();
        assert_eq!(r.renew_at, ts("2026-11-29T17:00:00Z"));
        assert_eq!(r.expires_at, ts("2026-11-30T10:00:00Z"));
        assert!(recorded(&meta, Some(3)).is_none());
        assert!(recorded(&ObjectMeta::default(), Some(2)).is_none());
        // Due or not, the record is read; restart recovery takes it only before renewal.
        assert!(r.is_current(ts("2026-11-29T16:59:59Z")));
        assert!(!r.is_current(ts("2026-11-29T17:00:00Z")));
        assert_eq!(
            recorded_token(&meta, Some(2), ts("2026-11-29T17:00:00Z")),
            None
        );
    }
}
