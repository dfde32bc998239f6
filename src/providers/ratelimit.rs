//! Per-host token buckets for provider calls, shared by every resource, so that any number of
//! resources created at once can't exceed a provider's published request rate.
//!
//! Each acquisition reserves the next free slot (the bucket may go into debt), so concurrent
//! callers wake at distinct, evenly spaced times instead of all retrying at once.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A request rate: `per_second` on average, with bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.per_second, self.burst)
    }
}

impl FromStr for Rate {
    type Err = String;
    /// `QPS` or `QPS:BURST`, e.g. `5` or `2.5:10`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (qps, burst) = match s.split_once(':') {
            Some((q, b)) => (q, Some(b)),
            None => (s, None),
        };
        let per_second: f64 = qps
            .parse()
            .map_err(|_| format!("invalid rate {s:?}: expected QPS or QPS:BURST"))?;
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(format!("invalid rate {s:?}: QPS must be positive"));
        }
        let burst =
            match burst {
                Some(b) => b.parse::<u32>().ok().filter(|b| *b >= 1).ok_or_else(|| {
                    format!("invalid rate {s:?}: BURST must be a positive integer")
                })?,
                None => (per_second.ceil() as u32).max(1),
            };
        Ok(Self { per_second, burst })
    }
}

/// A `HOST=QPS[:BURST]` override.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRate {
    /// Host name (lower case).
    pub host: String,
    /// Its rate.
    pub rate: Rate,
}

impl FromStr for HostRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, rate) = s
            .split_once('=')
            .ok_or_else(|| format!("invalid {s:?}: expected HOST=QPS[:BURST]"))?;
        if host.is_empty() || host.contains('/') {
            return Err(format!("invalid {s:?}: expected HOST=QPS[:BURST]"));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            rate: rate.parse()?,
        })
    }
}

/// Rates per host: a default for every host, and overrides.
#[derive(Clone, Debug, Default)]
pub struct RateLimits {
    /// Rate of hosts without an override; `None` means unlimited.
    pub default: Option<Rate>,
    /// Overrides by host.
    pub hosts: Vec<HostRate>,
}

impl RateLimits {
    /// The operator's defaults: 5 requests per second per host with bursts of 10 — well under
    /// the published limits (ARM: 10 writes/s refill per subscription and principal; Fabric and
    /// the others publish per-caller limits at least as high or none).
    pub fn operator_default() -> Self {
        Self {
            default: Some(Rate {
                per_second: 5.0,
                burst: 10,
            }),
            hosts: Vec::new(),
        }
    }

    fn rate_for(&self, host: &str) -> Option<Rate> {
        self.hosts
            .iter()
            .rev()
            .find(|h| h.host == host)
            .map(|h| h.rate)
            .or(self.default)
    }
}

struct Bucket {
    rate: Rate,
    /// Tokens available at `at` (may be negative: reserved future slots).
    tokens: f64,
    at: Instant,
}

/// The buckets of all hosts.
pub struct HostLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl HostLimiter {
    /// A limiter with these limits.
    pub fn new(limits: RateLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves a request slot for `host` and returns how long to wait for it.
    pub fn reserve(&self, host: &str) -> Duration {
        let Some(rate) = self.limits.rate_for(host) else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets.entry(host.to_owned()).or_insert(Bucket {
            rate,
            tokens: f64::from(rate.burst),
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * b.rate.per_second).min(f64::from(b.rate.burst));
        b.at = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / b.rate.per_second)
        }
    }

    /// Waits for a request slot for `host`.
    pub async fn acquire(&self, host: &str) -> Duration {
        let wait = self.reserve(host);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(
            "5".parse::<Rate>().unwrap(),
            Rate {
                per_second: 5.0,
                burst: 5
            }
        );
        assert_eq!(
            "0.5".parse::<Rate>().unwrap(),
            Rate {
                per_second: 0.5,
                burst: 1
            }
        );
        assert_eq!(
            "2.5:10".parse::<Rate>().unwrap(),
            Rate {
                per_second: 2.5,
                burst: 10
            }
        );
        for bad in ["", "0", "-1", "x", "5:0", "5:x", "inf"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
        let h: HostRate = "Management.Azure.com=10:200".parse().unwrap();
        assert_eq!(h.host, "management.azure.com");
        assert_eq!(h.rate.burst, 200);
        assert!("=5".parse::<HostRate>().is_err());
        assert!("https://x/=5".parse::<HostRate>().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_sustained_rate() {
        let l = HostLimiter::new(RateLimits {
            default: Some(Rate {
                per_second: 4.0,
                burst: 2,
            }),
            hosts: vec![],
        });
        // Two at once, then one every 250 ms, each caller with its own slot.
        let waits: Vec<Duration> = (0..6).map(|_| l.reserve("h")).collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![0, 0, 250, 500, 750, 1000]);
        // Other hosts have their own bucket.
        assert_eq!(l.reserve("other"), Duration::ZERO);
        // After a quiet period the bucket refills up to the burst, no more.
        tokio::time::advance(Duration::from_secs(10)).await;
        let ms: Vec<u128> = (0..3).map(|_| l.reserve("h").as_millis()).collect();
        assert_eq!(ms, vec![0, 0, 250]);
    }

    #[tokio::test(start_paused = true)]
    async fn overrides_and_unlimited() {
        let l = HostLimiter::new(RateLimits {
            default: None,
            hosts: vec!["slow=1:1".parse().unwrap()],
        });
        for _ in 0..100 {
            assert_eq!(l.reserve("fast"), Duration::ZERO);
        }
        assert_eq!(l.reserve("slow"), Duration::ZERO);
        assert_eq!(l.reserve("slow"), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_rate_over_a_window() {
        // 1000 callers at once against 5/s with burst 10: in any 10 s window at most 60 start.
        let l = HostLimiter::new(RateLimits::operator_default());
        let starts: Vec<f64> = (0..1000).map(|_| l.reserve("h").as_secs_f64()).collect();
        for w in 0..190 {
            let from = w as f64;
            let n = starts
                .iter()
                .filter(|s| **s >= from && **s < from + 10.0)
                .count();
            assert!(n <= 60, "{n} requests in [{from}, {from}+10)");
        }
        assert!((starts[999] - (990.0 / 5.0)).abs() < 1e-6);
    }
}
