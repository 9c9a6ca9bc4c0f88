//! When to order what: the pure side of automatic HTTPS. Which names the services ask for, when
//! a certificate is due for renewal, how long to back off after a failure, and how many orders
//! the CA's rate limits leave room for. No I/O; the ACME task ([`super`]) feeds it the clock.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// What a host name of the services' rules gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// An exact DNS name: a certificate of its own.
    Order,
    /// `*.example.com`: only a configured certificate can serve it (ACME gives wildcards only
    /// for DNS-01, which quayside does not answer).
    Wildcard,
    /// Not a name a public CA certifies (an IP address, a single label, a bad character).
    Skip(&'static str),
}

/// The names the services' hosts ask for, lowercased, each with what it gets.
pub fn wanted<'a>(hosts: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, Want> {
    hosts
        .into_iter()
        .map(|h| {
            let name = h.trim_end_matches('.').to_ascii_lowercase();
            let want = classify(&name);
            (name, want)
        })
        .collect()
}

fn classify(name: &str) -> Want {
    if name.starts_with("*.") {
        return Want::Wildcard;
    }
    if name.parse::<IpAddr>().is_ok() || name.starts_with('[') {
        return Want::Skip("an IP address: ACME certificates here are for DNS names");
    }
    if !name.contains('.') {
        return Want::Skip("a single-label name (like localhost) that no public CA certifies");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Want::Skip("not a valid DNS name");
    }
    Want::Order
}

/// A held certificate's validity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Held {
    /// Two thirds into its life (Let's Encrypt's own advice for 90-day certificates: 30 days
    /// before expiry).
    pub fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }
}

/// The first wait after a failed order; each further failure doubles it, up to [`MAX_BACKOFF`].
/// Starting at 5 minutes keeps a failing name under Let's Encrypt's 5 failed validations per
/// name per hour (4 fit in the first hour: at 0, 5, 15 and 35 minutes).
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5 * 60);
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);
/// A CA's `rateLimited` answer (without a time of its own): wait at least this long.
pub const RATE_LIMITED_WAIT: Duration = Duration::from_secs(3600);

pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// One name's state between orders.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub held: Option<Held>,
    /// Failed orders since the last success.
    pub failures: u32,
    /// No order before this (backoff or a rate limit).
    pub not_before: Option<SystemTime>,
    pub last_error: Option<String>,
    /// Renewal asked for by the operator.
    pub forced: bool,
}

impl Entry {
    /// When it should be ordered next (now or in the past: due).
    pub fn next_order(&self) -> SystemTime {
        let wanted = match (&self.held, self.forced) {
            (Some(h), false) => h.renew_at(),
            _ => SystemTime::UNIX_EPOCH,
        };
        match self.not_before {
            Some(t) if t > wanted => t,
            _ => wanted,
        }
    }

    pub fn succeeded(&mut self, held: Held) {
        *self = Entry {
            held: Some(held),
            ..Entry::default()
        };
    }

    /// A failed order: back off (longer when the CA said it is rate-limiting).
    pub fn failed(&mut self, now: SystemTime, error: String, rate_limited: bool) {
        self.failures += 1;
        let mut wait = backoff(self.failures);
        if rate_limited {
            wait = wait.max(RATE_LIMITED_WAIT);
        }
        self.not_before = Some(now + wait);
        self.last_error = Some(error);
        self.forced = false;
    }
}

/// No order of any of `entries` before `until` (a CA's rate limit), keeping later waits.
pub fn pause_all<'a>(entries: impl IntoIterator<Item = &'a mut Entry>, until: SystemTime) {
    for e in entries {
        e.not_before = Some(e.not_before.map_or(until, |t| t.max(until)));
    }
}

/// A sliding window of events with a ceiling: the CA's rate limits on orders (per account) and
/// on duplicate certificates (per name), kept so quayside never asks beyond them.
#[derive(Clone, Debug)]
pub struct Window {
    pub max: usize,
    pub span: Duration,
    times: VecDeque<SystemTime>,
}

impl Window {
    pub fn new(max: usize, span: Duration) -> Window {
        Window {
            max,
            span,
            times: VecDeque::new(),
        }
    }

    fn prune(&mut self, now: SystemTime) {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t).unwrap_or_default() >= self.span)
        {
            self.times.pop_front();
        }
    }

    /// `None`: room now; else the time the oldest event leaves the window.
    pub fn full_until(&mut self, now: SystemTime) -> Option<SystemTime> {
        self.prune(now);
        (self.times.len() >= self.max).then(|| self.times[0] + self.span)
    }

    pub fn record(&mut self, now: SystemTime) {
        self.times.push_back(now);
    }

    pub fn len(&mut self, now: SystemTime) -> usize {
        self.prune(now);
        self.times.len()
    }

    pub fn is_empty(&mut self, now: SystemTime) -> bool {
        self.len(now) == 0
    }
}

/// Let's Encrypt's limits, the strictest of the CAs commonly used: 300 new orders per account
/// per 3 hours, and 5 certificates for the same set of names per 7 days.
pub fn orders_window() -> Window {
    Window::new(300, Duration::from_secs(3 * 3600))
}

pub fn duplicates_window() -> Window {
    Window::new(5, Duration::from_secs(7 * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;
    fn at(secs: u64) -> SystemTime {
        T0 + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn names_are_classified() {
        let w = wanted([
            "App.Example.com",
            "*.example.org",
            "10.0.0.1",
            "localhost",
            "bad_name.example.com",
            "ok.test.",
        ]);
        assert_eq!(w["app.example.com"], Want::Order);
        assert_eq!(w["ok.test"], Want::Order);
        assert_eq!(w["*.example.org"], Want::Wildcard);
        assert!(matches!(w["10.0.0.1"], Want::Skip(r) if r.contains("IP")));
        assert!(matches!(w["localhost"], Want::Skip(r) if r.contains("single-label")));
        assert!(matches!(w["bad_name.example.com"], Want::Skip(_)));
    }

    #[test]
    fn renewal_is_two_thirds_in() {
        let h = Held {
            not_before: at(0),
            not_after: at(90 * 86_400),
        };
        assert_eq!(h.renew_at(), at(60 * 86_400));
        let mut e = Entry::default();
        assert!(e.next_order() <= at(0), "nothing held: due at once");
        e.succeeded(h);
        assert_eq!(e.next_order(), at(60 * 86_400));
        e.forced = true;
        assert!(e.next_order() <= at(0), "forced: due at once");
    }

    #[test]
    fn failures_back_off_and_a_success_clears_them() {
        let mut e = Entry::default();
        e.failed(at(0), "no".into(), false);
        assert_eq!(e.next_order(), at(300));
        e.failed(at(300), "no".into(), false);
        assert_eq!(e.next_order(), at(300 + 600));
        e.failed(at(900), "limited".into(), true);
        assert_eq!(e.next_order(), at(900 + 3600), "a rate limit waits an hour");
        assert_eq!(e.last_error.as_deref(), Some("limited"));
        e.succeeded(Held {
            not_before: at(1000),
            not_after: at(1000 + 90 * 86_400),
        });
        assert_eq!(e.failures, 0);
        assert_eq!(e.last_error, None);
    }

    #[test]
    fn a_held_certificate_waits_out_a_backoff_past_its_renewal() {
        let mut e = Entry::default();
        e.succeeded(Held {
            not_before: at(0),
            not_after: at(3000),
        });
        e.failed(at(2000), "no".into(), false);
        assert_eq!(e.next_order(), at(2300));
        assert!(e.held.is_some(), "a failed renewal keeps the certificate");
    }

    #[test]
    fn a_rate_limit_pauses_every_name_but_shortens_no_wait() {
        let mut a = Entry::default();
        let mut b = Entry::default();
        b.failed(at(0), "x".into(), false);
        b.not_before = Some(at(10_000));
        let mut c = Entry::default();
        c.succeeded(Held {
            not_before: at(0),
            not_after: at(100),
        });
        pause_all([&mut a, &mut b, &mut c], at(3600));
        assert_eq!(a.next_order(), at(3600));
        assert_eq!(b.next_order(), at(10_000), "a longer wait stays");
        assert_eq!(c.next_order(), at(3600), "a due renewal waits too");
    }

    #[test]
    fn the_window_keeps_to_its_ceiling() {
        let mut w = Window::new(2, Duration::from_secs(100));
        assert_eq!(w.full_until(at(0)), None);
        w.record(at(0));
        w.record(at(10));
        assert_eq!(w.full_until(at(20)), Some(at(100)));
        assert_eq!(w.full_until(at(100)), None, "the oldest has left");
        assert_eq!(w.len(at(100)), 1);
    }

    proptest! {
        #[test]
        fn failing_names_stay_under_five_orders_an_hour(n in 1u32..40) {
            // Orders as soon as allowed, each failing: never 5 within an hour.
            let mut e = Entry::default();
            let mut times = Vec::new();
            let mut now = at(0);
            for _ in 0..n {
                times.push(now);
                e.failed(now, "x".into(), false);
                now = e.next_order();
            }
            for w in times.windows(5) {
                prop_assert!(w[4].duration_since(w[0]).unwrap() >= Duration::from_secs(3600));
            }
            prop_assert!(backoff(n) <= MAX_BACKOFF);
        }

        #[test]
        fn the_window_never_admits_more_than_its_max(gaps in proptest::collection::vec(0u64..50, 1..200)) {
            let mut w = Window::new(5, Duration::from_secs(100));
            let mut now = at(0);
            let mut admitted = Vec::new();
            for g in gaps {
                now += Duration::from_secs(g);
                if w.full_until(now).is_none() {
                    w.record(now);
                    admitted.push(now);
                }
            }
            for win in admitted.windows(6) {
                prop_assert!(win[5].duration_since(win[0]).unwrap() >= Duration::from_secs(100));
            }
        }
    }
}
