//! `rate_limit`: token buckets, per client address or per service.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::registry::middleware::{RateLimit, RatePer};

/// One bucket: `tokens` left at `at`.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    /// Take one token at `now` (refilled at `per_sec`, up to `burst`), or say how long until
    /// one is there.
    pub fn take(&mut self, now: Instant, per_sec: f64, burst: f64) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * per_sec).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / per_sec))
        }
    }

    /// Full again by `now` (so forgetting it changes nothing).
    fn refilled(&self, now: Instant, per_sec: f64, burst: f64) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * per_sec >= burst
    }
}

/// Shards of the per-client map: two workers rarely wait on each other's lock.
const SHARDS: usize = 16;
/// Clients remembered per shard before full buckets are forgotten.
const SHARD_CLIENTS: usize = 4096;

#[derive(Debug)]
pub struct Limiter {
    per_sec: f64,
    burst: f64,
    per: RatePer,
    one: Mutex<Option<Bucket>>,
    clients: Box<[Mutex<fnv::FnvHashMap<IpAddr, Bucket>>]>,
}

impl Limiter {
    pub fn new(cfg: &RateLimit) -> Limiter {
        let period = cfg.period.map_or(1.0, |d| d.0.as_secs_f64());
        Limiter {
            per_sec: f64::from(cfg.average) / period,
            burst: f64::from(cfg.burst.unwrap_or(cfg.average).max(1)),
            per: cfg.per,
            one: Mutex::new(None),
            clients: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// Let one request from `client` through at `now`, or say when to come back.
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let (rate, burst) = (self.per_sec, self.burst);
        if self.per == RatePer::Service {
            let mut one = self.one.lock().unwrap_or_else(|p| p.into_inner());
            return one
                .get_or_insert_with(|| Bucket::full(burst, now))
                .take(now, rate, burst);
        }
        let shard = match client {
            IpAddr::V4(a) => u32::from(a) as usize,
            IpAddr::V6(a) => u128::from(a) as usize ^ (u128::from(a) >> 64) as usize,
        };
        let mut map = self.clients[shard.wrapping_mul(0x9E37_79B9) % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map.len() >= SHARD_CLIENTS && !map.contains_key(&client) {
            map.retain(|_, b| !b.refilled(now, rate, burst));
        }
        map.entry(client)
            .or_insert_with(|| Bucket::full(burst, now))
            .take(now, rate, burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Dur;

    #[test]
    fn a_bucket_allows_its_burst_then_the_average() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3.0, t0);
        for _ in 0..3 {
            b.take(t0, 2.0, 3.0).unwrap();
        }
        let wait = b.take(t0, 2.0, 3.0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        b.take(t0 + Duration::from_millis(500), 2.0, 3.0).unwrap();
        assert!(b.take(t0 + Duration::from_millis(500), 2.0, 3.0).is_err());
        // Never more than the burst, however long it waited.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            b.take(later, 2.0, 3.0).unwrap();
        }
        assert!(b.take(later, 2.0, 3.0).is_err());
    }

    #[test]
    fn clients_have_their_own_buckets_unless_the_service_shares_one() {
        let cfg = |per| RateLimit {
            average: 1,
            burst: Some(1),
            period: Some(Dur(Duration::from_secs(60))),
            per,
        };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        let l = Limiter::new(&cfg(RatePer::ClientIp));
        assert!(l.take(a, now).is_ok());
        assert!(l.take(a, now).is_err());
        assert!(l.take(b, now).is_ok());
        let s = Limiter::new(&cfg(RatePer::Service));
        assert!(s.take(a, now).is_ok());
        let wait = s.take(b, now).unwrap_err();
        assert_eq!(wait.as_secs(), 60);
    }
}
