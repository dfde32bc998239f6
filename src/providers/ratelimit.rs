//! Rate limits of provider calls, shared by every resource, so that any number of resources
//! created at once can't exceed what a provider allows a caller.
//!
//! Providers throttle per caller, not per host: Azure Resource Manager per subscription and
//! principal, Microsoft Entra ID and Fabric per client, Alibaba Cloud per account (AccessKey
//! or assumed role), DataRobot per API key. So `--provider-rate` is one token bucket per
//! (provider host, credential), the credential named by a [`RateKey`] the provider seam gives
//! each client it builds (calls made without one share one bucket per host), and
//! `--provider-host-rate` adds a bucket per host that caps all its credentials together.
//!
//! The buckets are [`governor`]'s GCRA limiters: a keyed limiter for the credentials' buckets
//! (the buckets of credentials no longer used are dropped, see [`ProviderLimiter`]) and a
//! direct limiter per capped host. A call takes a slot from its credential's bucket, then from
//! its host's cap; a caller without a slot sleeps until the time governor names for the next
//! slot and asks again: a loop of its own rather than governor's `until_key_ready`, so that it
//! sleeps on tokio's timer and reads tokio's clock (which tests pause and advance).
//! Reconcile concurrency bounds how many callers wait for one bucket.

use crate::redact::SecretString;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

/// Longest interval between two calls a rate is taken to mean (slower rates are this one).
const SLOWEST_INTERVAL: Duration = Duration::from_secs(24 * 3600);

impl Rate {
    /// The rate as a governor quota: one cell every `1 / per_second` (between 1 ns and a
    /// day), `burst` at once.
    fn quota(&self) -> Quota {
        let interval = Duration::try_from_secs_f64(1.0 / self.per_second)
            .unwrap_or(SLOWEST_INTERVAL)
            .clamp(Duration::from_nanos(1), SLOWEST_INTERVAL);
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst)
    }
}

/// A `HOST=QPS[:BURST]` cap.
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

/// The rate limits: one rate for each (host, credential), and caps for whole hosts.
#[derive(Clone, Debug, Default)]
pub struct RateLimits {
    /// Rate of each credential on each host (`--provider-rate`); `None` means unlimited.
    pub default: Option<Rate>,
    /// Caps of whole hosts, all credentials together (`--provider-host-rate`); the last one
    /// given for a host counts.
    pub hosts: Vec<HostRate>,
}

impl RateLimits {
    /// The operator's defaults: 5 requests per second per host and credential, with bursts of
    /// 10 — well under the published limits (ARM: 10 writes/s refill per subscription and
    /// principal; Fabric and the others publish per-caller limits at least as high or none).
    pub fn operator_default() -> Self {
        Self {
            default: Some(Rate {
                per_second: 5.0,
                burst: 10,
            }),
            hosts: Vec::new(),
        }
    }
}

/// The credential a provider call is made with, as far as the provider's own limits go: the
/// key of its bucket on each host. Build it with the constructor for the provider's unit of
/// throttling. It holds identifiers (subscription and client IDs, AccessKey IDs, role ARNs)
/// or a fingerprint of a secret, never a secret; even so its `Debug` shows none of it, and it
/// has no `Display`: it is never a metric label or part of a message.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RateKey(Arc<str>);

impl fmt::Debug for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RateKey(..)")
    }
}

impl RateKey {
    fn new(kind: &str, parts: &[&str]) -> Self {
        let mut s = String::from(kind);
        for p in parts {
            s.push('\n');
            s.push_str(&p.to_ascii_lowercase());
        }
        Self(s.into())
    }

    /// Azure Resource Manager: a subscription and the principal (client) calling it.
    pub fn arm(subscription_id: &str, client_id: &str) -> Self {
        Self::new("arm", &[subscription_id, client_id])
    }

    /// A Microsoft Entra ID application (client), for Entra itself and for Fabric.
    pub fn entra_client(client_id: &str) -> Self {
        Self::new("client", &[client_id])
    }

    /// An Alibaba Cloud AccessKey, by its AccessKey ID.
    pub fn access_key_id(access_key_id: &str) -> Self {
        Self::new("accesskey", &[access_key_id])
    }

    /// An Alibaba Cloud RAM role assumed through STS (RRSA), by its ARN.
    pub fn sts_role(role_arn: &str) -> Self {
        Self::new("role", &[role_arn])
    }

    /// A credential known only by its secret (a DataRobot API key): an HMAC-SHA256 of it under
    /// a key drawn at random when the process starts, so the fingerprint says nothing about
    /// the secret and can't be matched outside this process.
    pub fn secret_fingerprint(secret: &SecretString) -> Self {
        static SALT: OnceLock<[u8; 32]> = OnceLock::new();
        let salt = SALT.get_or_init(rand::random);
        let digest = match <Hmac<Sha256> as Mac>::new_from_slice(salt) {
            Ok(mut mac) => {
                mac.update(secret.expose().as_bytes());
                hex::encode(&mac.finalize().into_bytes()[..16])
            }
            // HMAC takes keys of any length; this branch is not taken.
            Err(_) => String::new(),
        };
        Self::new("fingerprint", &[&digest])
    }

    #[cfg(test)]
    fn text(&self) -> &str {
        &self.0
    }
}

/// governor's clock on tokio's time: production reads the monotonic clock; paused-time tests
/// move it.
#[derive(Clone)]
struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        Nanos::from(self.origin.elapsed())
    }
}

/// One bucket of `--provider-rate`: a host and the credential calling it.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BucketKey {
    host: Box<str>,
    credential: Option<RateKey>,
}

type CredentialBuckets =
    RateLimiter<BucketKey, DashMapStateStore<BucketKey>, TokioClock, NoOpMiddleware<Nanos>>;
type HostCap = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// The buckets of idle credentials are dropped at most this many calls apart...
const PRUNE_EVERY_CALLS: u64 = 1024;
/// ...or when this long has passed since the last time, whichever comes first.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The buckets of every (host, credential) and the caps of hosts.
///
/// Memory stays bounded: every [`PRUNE_EVERY_CALLS`] calls, or at the first call after
/// [`PRUNE_EVERY`], the buckets that are full again (their credential made no call for the
/// time it takes to refill, so a new bucket would be the same) are dropped.
pub struct ProviderLimiter {
    clock: TokioClock,
    credentials: Option<CredentialBuckets>,
    hosts: HashMap<String, HostCap>,
    calls: AtomicU64,
    /// Nanoseconds on `clock` of the last prune.
    pruned_at: AtomicU64,
}

impl ProviderLimiter {
    /// A limiter with these limits.
    pub fn new(limits: &RateLimits) -> Self {
        let clock = TokioClock {
            origin: tokio::time::Instant::now(),
        };
        let hosts = limits
            .hosts
            .iter()
            .map(|h| {
                let cap = RateLimiter::direct_with_clock(h.rate.quota(), clock.clone());
                (h.host.clone(), cap)
            })
            .collect();
        Self {
            credentials: limits
                .default
                .map(|r| RateLimiter::dashmap_with_clock(r.quota(), clock.clone())),
            hosts,
            clock,
            calls: AtomicU64::new(0),
            pruned_at: AtomicU64::new(0),
        }
    }

    /// Waits for a slot for a call to `host` (lower case) with `credential`: first in the
    /// credential's bucket on that host, then in the host's cap. Returns how long it waited.
    pub async fn acquire(&self, host: &str, credential: Option<&RateKey>) -> Duration {
        let mut waited = Duration::ZERO;
        if let Some(buckets) = &self.credentials {
            self.maybe_prune(buckets);
            let key = BucketKey {
                host: host.into(),
                credential: credential.cloned(),
            };
            waited += self.until_ready(|| buckets.check_key(&key)).await;
        }
        if let Some(cap) = self.hosts.get(host) {
            waited += self.until_ready(|| cap.check()).await;
        }
        waited
    }

    /// Asks `check` for a slot until it gives one, sleeping until the earliest time governor
    /// names in between (its `until_ready`, on tokio's timer).
    async fn until_ready(&self, check: impl Fn() -> Result<(), NotUntil<Nanos>>) -> Duration {
        let mut waited = Duration::ZERO;
        while let Err(not_until) = check() {
            let wait = not_until
                .wait_time_from(self.clock.now())
                .max(Duration::from_nanos(1));
            tokio::time::sleep(wait).await;
            waited += wait;
        }
        waited
    }

    fn maybe_prune(&self, buckets: &CredentialBuckets) {
        let calls = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.clock.now().as_u64();
        let last = self.pruned_at.load(Ordering::Relaxed);
        let due = calls.is_multiple_of(PRUNE_EVERY_CALLS)
            || now.saturating_sub(last) >= PRUNE_EVERY.as_nanos() as u64;
        if due
            && self
                .pruned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
    }

    /// Number of (host, credential) buckets held.
    pub fn buckets(&self) -> usize {
        self.credentials.as_ref().map_or(0, |b| b.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn limits(default: Option<&str>, hosts: &[&str]) -> RateLimits {
        RateLimits {
            default: default.map(|r| r.parse().unwrap()),
            hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
        }
    }

    /// Starts `n` callers of (`host`, `key`) at once and returns when each got its slot,
    /// in ms after the start (sorted).
    async fn start_times(
        l: &Arc<ProviderLimiter>,
        calls: impl IntoIterator<Item = (&'static str, Option<RateKey>)>,
    ) -> Vec<u128> {
        let t0 = Instant::now();
        let tasks: Vec<_> = calls
            .into_iter()
            .map(|(host, key)| {
                let l = l.clone();
                tokio::spawn(async move {
                    l.acquire(host, key.as_ref()).await;
                    t0.elapsed().as_millis()
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out.sort_unstable();
        out
    }

    fn key(name: &str) -> Option<RateKey> {
        Some(RateKey::entra_client(name))
    }

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

    #[test]
    fn extreme_rates_become_usable_quotas() {
        let slow = Rate {
            per_second: 1e-300,
            burst: 1,
        };
        assert_eq!(slow.quota().replenish_interval(), SLOWEST_INTERVAL);
        let fast = Rate {
            per_second: 1e300,
            burst: 3,
        };
        assert_eq!(fast.quota().replenish_interval(), Duration::from_nanos(1));
        assert_eq!(fast.quota().burst_size().get(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_sustained_rate() {
        let l = Arc::new(ProviderLimiter::new(&limits(Some("4:2"), &[])));
        // Two at once, then one every 250 ms.
        let calls = (0..6).map(|_| ("h", key("a")));
        assert_eq!(
            start_times(&l, calls).await,
            vec![0, 0, 250, 500, 750, 1000]
        );
        // After a quiet period the bucket refills up to the burst, no more.
        tokio::time::advance(Duration::from_secs(10)).await;
        let calls = (0..3).map(|_| ("h", key("a")));
        assert_eq!(start_times(&l, calls).await, vec![0, 0, 250]);
    }

    #[tokio::test(start_paused = true)]
    async fn two_credentials_on_one_host_have_a_bucket_each() {
        let l = Arc::new(ProviderLimiter::new(&limits(Some("1:1"), &[])));
        assert_eq!(l.acquire("h", key("a").as_ref()).await, Duration::ZERO);
        assert_eq!(l.acquire("h", key("b").as_ref()).await, Duration::ZERO);
        // Calls without a credential share one bucket per host, of their own.
        assert_eq!(l.acquire("h", None).await, Duration::ZERO);
        // The same credential on another host is another bucket.
        assert_eq!(l.acquire("other", key("a").as_ref()).await, Duration::ZERO);
        // Identifiers are compared without case (GUIDs, ARNs).
        assert_eq!(RateKey::arm("SUB", "Client"), RateKey::arm("sub", "client"));
        assert_ne!(RateKey::arm("s", "c"), RateKey::arm("s", "d"));
        assert_ne!(RateKey::access_key_id("x"), RateKey::sts_role("x"));
        assert_eq!(l.buckets(), 4);
        // Each credential is held to its own rate: two calls each at once, one slot each.
        tokio::time::advance(Duration::from_secs(10)).await;
        let calls = [key("a"), key("a"), None, None, key("b")].map(|k| ("h", k));
        assert_eq!(start_times(&l, calls).await, vec![0, 0, 0, 1000, 1000]);
    }

    #[tokio::test(start_paused = true)]
    async fn one_credential_never_exceeds_the_rate_over_a_window() {
        // 300 callers at once against 5/s with burst 10: in any 10 s window at most 60 start.
        let l = Arc::new(ProviderLimiter::new(&RateLimits::operator_default()));
        let starts = start_times(&l, (0..300).map(|_| ("h", key("a")))).await;
        for w in 0..60 {
            let from = w * 1000;
            let n = starts
                .iter()
                .filter(|s| **s >= from && **s < from + 10_000)
                .count();
            assert!(n <= 60, "{n} requests in [{from} ms, +10 s)");
        }
        assert_eq!(starts[299], (290 * 1000) / 5);
        // A second credential meanwhile had the whole burst for itself.
        assert_eq!(
            start_times(&l, (0..10).map(|_| ("h", key("b")))).await,
            [0; 10]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_cap_caps_all_credentials_together() {
        // Each credential may do 100/s, the host 2/s with bursts of 2.
        let l = Arc::new(ProviderLimiter::new(&limits(Some("100:100"), &["h=2:2"])));
        let calls = (0..6).map(|i| ("h", key(["a", "b", "c", "d", "e", "f"][i])));
        assert_eq!(
            start_times(&l, calls).await,
            vec![0, 0, 500, 1000, 1500, 2000]
        );
        // Other hosts have no cap.
        let calls = (0..6).map(|i| ("other", key(["a", "b", "c", "d", "e", "f"][i])));
        assert_eq!(start_times(&l, calls).await, [0; 6]);
        // Under a cap, a credential is still held to its own rate.
        let l = ProviderLimiter::new(&limits(Some("1:1"), &["h=100:100"]));
        assert_eq!(l.acquire("h", key("a").as_ref()).await, Duration::ZERO);
        assert_eq!(
            l.acquire("h", key("a").as_ref()).await,
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn caps_without_a_default_rate_and_unlimited_hosts() {
        let l = ProviderLimiter::new(&limits(None, &["slow=1:1"]));
        for _ in 0..100 {
            assert_eq!(l.acquire("fast", key("a").as_ref()).await, Duration::ZERO);
        }
        assert_eq!(l.acquire("slow", key("a").as_ref()).await, Duration::ZERO);
        assert_eq!(
            l.acquire("slow", key("b").as_ref()).await,
            Duration::from_secs(1)
        );
        assert_eq!(l.buckets(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_buckets_of_idle_credentials_are_dropped() {
        let l = ProviderLimiter::new(&RateLimits::operator_default());
        for i in 0..100 {
            l.acquire("h", key(&format!("client-{i}")).as_ref()).await;
        }
        assert_eq!(l.buckets(), 100);
        // A credential in use: its burst spent just before the prune.
        tokio::time::advance(Duration::from_millis(59_500)).await;
        for _ in 0..10 {
            assert_eq!(l.acquire("h", key("busy").as_ref()).await, Duration::ZERO);
        }
        // A minute after the last prune, the next call drops every bucket that is full again.
        tokio::time::advance(Duration::from_secs(1)).await;
        l.acquire("h", key("new").as_ref()).await;
        assert_eq!(l.buckets(), 2, "busy and new are left");
        // The bucket kept still holds its state: 1 s after its burst, 5 of the 10 slots are
        // back (a new bucket would have all 10).
        for _ in 0..5 {
            assert_eq!(l.acquire("h", key("busy").as_ref()).await, Duration::ZERO);
        }
        assert!(l.acquire("h", key("busy").as_ref()).await > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn many_calls_prune_before_a_minute_has_passed() {
        let l = ProviderLimiter::new(&limits(Some("1000000:1"), &[]));
        for i in 0..PRUNE_EVERY_CALLS - 1 {
            l.acquire("h", key(&format!("c{i}")).as_ref()).await;
        }
        assert_eq!(l.buckets() as u64, PRUNE_EVERY_CALLS - 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        l.acquire("h", key("last").as_ref()).await;
        assert_eq!(l.buckets(), 1, "the 1024th call pruned the full buckets");
    }

    #[test]
    fn an_api_key_is_known_by_a_fingerprint_only() {
        let secret = SecretString::new("dr-api-key-0123456789abcdef");
        let k = RateKey::secret_fingerprint(&secret);
        assert!(!k.text().contains(secret.expose()));
        assert!(!k.text().contains("0123456789abcdef"));
        assert_eq!(format!("{k:?}"), "RateKey(..)");
        // The fingerprint is 16 bytes of an HMAC, as hex: nothing of the key.
        let fingerprint = k.text().strip_prefix("fingerprint\n").unwrap();
        assert_eq!(fingerprint.len(), 32);
        assert!(fingerprint.chars().all(|c| c.is_ascii_hexdigit()));
        // The same key is the same bucket, another key another.
        assert_eq!(k, RateKey::secret_fingerprint(&secret.clone()));
        assert_ne!(
            k,
            RateKey::secret_fingerprint(&SecretString::new("dr-api-key-0123456789abcdeF"))
        );
        // Identifiers are not shown either.
        assert_eq!(
            format!("{:?}", RateKey::arm("sub", "client")),
            "RateKey(..)"
        );
    }
}
