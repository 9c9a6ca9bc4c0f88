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
    // (Wildcards under it too: `*.api.localhost` is no more certifiable than the rest.)
    if name == "localhost" || name.ends_with(".localhost") {
        return Want::Skip("a localhost name (RFC 6761), which no public CA certifies");
    }
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

    /// The events still in the window, oldest first.
    pub fn times(&mut self, now: SystemTime) -> impl Iterator<Item = SystemTime> + '_ {
        self.prune(now);
        self.times.iter().copied()
    }

    /// The window holding `times` (in any order, duplicates kept as they are).
    pub fn with_times(mut self, times: impl IntoIterator<Item = SystemTime>) -> Window {
        let mut t: Vec<SystemTime> = times.into_iter().collect();
        t.sort();
        self.times = t.into();
        self
    }
}

/// What the rate limits and the backoff need to outlive a restart, as kept beside the
/// certificates (`limits.json`, or a swarm config shared by the replicas): without it a
/// quayside restarted in a loop would start every count from zero and ask the CA again at
/// once. Times are milliseconds since the epoch; an event is the same event wherever it is
/// read from, so two copies merge without counting anything twice.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// New orders of the account (started).
    #[serde(default)]
    pub orders: Vec<u64>,
    /// Certificates issued, per name.
    #[serde(default)]
    pub issued: BTreeMap<String, Vec<u64>>,
    /// Each name's last outcome (a success clears the failures).
    #[serde(default)]
    pub outcomes: BTreeMap<String, Outcome>,
    /// No order of any name before this (the CA said it is rate-limiting the account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<u64>,
}

/// A name's last order outcome, as [`Ledger`] keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    /// When the order ended.
    pub at: u64,
    /// Failed orders in a row (0: it succeeded).
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How long an outcome is kept: as long as a duplicate-certificate window.
const OUTCOME_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn from_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn union(a: &mut Vec<u64>, b: &[u64]) {
    a.extend_from_slice(b);
    a.sort_unstable();
    a.dedup();
}

impl Ledger {
    /// Everything either copy knows: every event of both, each once; of a name's two
    /// outcomes the later; the later pause.
    pub fn merge(&mut self, other: &Ledger) {
        union(&mut self.orders, &other.orders);
        for (name, times) in &other.issued {
            union(self.issued.entry(name.clone()).or_default(), times);
        }
        for (name, o) in &other.outcomes {
            match self.outcomes.get(name) {
                Some(mine) if mine.at >= o.at => {}
                _ => {
                    self.outcomes.insert(name.clone(), o.clone());
                }
            }
        }
        self.paused_until = self.paused_until.max(other.paused_until);
    }

    /// Forget what no limit or wait needs any more at `now`.
    pub fn prune(&mut self, now: SystemTime) {
        let since = |span: Duration| millis(now).saturating_sub(span.as_millis() as u64);
        let orders = since(orders_window().span);
        self.orders.retain(|t| *t > orders);
        let issued = since(duplicates_window().span);
        for times in self.issued.values_mut() {
            times.retain(|t| *t > issued);
        }
        self.issued.retain(|_, t| !t.is_empty());
        let kept = since(OUTCOME_KEPT);
        self.outcomes.retain(|_, o| o.at > kept);
        if self.paused_until.is_some_and(|p| p <= millis(now)) {
            self.paused_until = None;
        }
    }

    /// `entry` as a name new to the schedule starts: its kept backoff, and the account's
    /// pause.
    pub fn resume(&self, name: &str, entry: &mut Entry) {
        if let Some(o) = self.outcomes.get(name).filter(|o| o.failures > 0) {
            entry.failures = o.failures;
            entry.not_before = o.retry_at.map(from_millis);
            entry.last_error = o.error.clone();
        }
        if let Some(p) = self.paused_until.map(from_millis) {
            entry.not_before = Some(entry.not_before.map_or(p, |t| t.max(p)));
        }
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
            "intranet",
            "api.localhost",
            "*.api.LocalHost",
            "bad_name.example.com",
            "ok.test.",
        ]);
        for name in ["api.localhost", "*.api.localhost"] {
            assert!(
                matches!(w[name], Want::Skip(r) if r.contains("localhost name")),
                "{name}"
            );
        }
        assert_eq!(w["app.example.com"], Want::Order);
        assert_eq!(w["ok.test"], Want::Order);
        assert_eq!(w["*.example.org"], Want::Wildcard);
        assert!(matches!(w["10.0.0.1"], Want::Skip(r) if r.contains("IP")));
        assert!(matches!(w["localhost"], Want::Skip(r) if r.contains("localhost name")));
        assert!(matches!(w["intranet"], Want::Skip(r) if r.contains("single-label")));
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

    fn ledger(orders: &[u64], name_times: &[u64], outcome: Option<(u64, u32)>) -> Ledger {
        Ledger {
            orders: orders.to_vec(),
            issued: [("a.test".to_owned(), name_times.to_vec())].into(),
            outcomes: outcome
                .map(|(at, failures)| {
                    let o = Outcome {
                        at,
                        failures,
                        retry_at: (failures > 0).then_some(at + 300_000),
                        error: (failures > 0).then(|| "down".to_owned()),
                    };
                    ("a.test".to_owned(), o)
                })
                .into_iter()
                .collect(),
            paused_until: None,
        }
    }

    #[test]
    fn a_ledger_restores_the_windows_and_a_failing_names_wait_after_a_restart() {
        let now = at(10_000);
        let mut w = duplicates_window();
        for s in [1_000, 2_000, 3_000, 4_000, 5_000] {
            w.record(at(s));
        }
        let kept: Ledger = serde_json::from_slice(
            &serde_json::to_vec(&Ledger {
                issued: [("a.test".into(), w.times(now).map(millis).collect())].into(),
                ..ledger(&[], &[], Some((9_000_000, 3)))
            })
            .unwrap(),
        )
        .unwrap();
        let mut again =
            duplicates_window().with_times(kept.issued["a.test"].iter().map(|t| from_millis(*t)));
        assert_eq!(again.full_until(now), w.full_until(now));
        assert_eq!(again.full_until(now), Some(at(1_000) + again.span));
        let mut e = Entry::default();
        kept.resume("a.test", &mut e);
        assert_eq!(e.failures, 3);
        assert_eq!(e.not_before, Some(from_millis(9_300_000)));
        assert_eq!(e.last_error.as_deref(), Some("down"));
        // Another name starts clean; a pause holds every name.
        let mut other = Entry::default();
        kept.resume("b.test", &mut other);
        assert_eq!(other.failures, 0);
        let paused = Ledger {
            paused_until: Some(20_000_000),
            ..kept
        };
        paused.resume("b.test", &mut other);
        assert_eq!(other.next_order(), from_millis(20_000_000));
    }

    #[test]
    fn the_later_outcome_wins_and_old_events_are_forgotten() {
        let mut a = ledger(&[1, 2], &[1], Some((100, 2)));
        a.merge(&ledger(&[2, 3], &[5], Some((200, 0))));
        assert_eq!(a.orders, [1, 2, 3]);
        assert_eq!(a.issued["a.test"], [1, 5]);
        assert_eq!(a.outcomes["a.test"].failures, 0, "the success came later");
        a.merge(&ledger(&[], &[], Some((150, 4))));
        assert_eq!(
            a.outcomes["a.test"].failures, 0,
            "an older failure does not come back"
        );
        let day = 24 * 3600 * 1000;
        let mut b = ledger(&[day, 9 * day], &[day, 9 * day], Some((day, 1)));
        b.paused_until = Some(2 * day);
        b.prune(from_millis(9 * day + 1));
        assert_eq!(b.orders, [9 * day], "orders count for 3 hours");
        assert_eq!(b.issued["a.test"], [9 * day], "certificates for 7 days");
        assert!(b.outcomes.is_empty());
        assert_eq!(b.paused_until, None);
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
        fn the_window_never_admits_more_than_its_max_even_across_restarts(
            steps in proptest::collection::vec((0u64..50, proptest::bool::ANY), 1..200),
        ) {
            // Events as soon as the window has room; at a restart the window lives on only in
            // the ledger.
            let mut w = Window::new(5, Duration::from_secs(100));
            let mut now = at(0);
            let mut admitted = Vec::new();
            for (gap, restart) in steps {
                now += Duration::from_secs(gap);
                if restart {
                    let mut kept = Ledger { orders: w.times(now).map(millis).collect(), ..Ledger::default() };
                    kept.prune(now);
                    w = Window::new(5, Duration::from_secs(100))
                        .with_times(kept.orders.iter().map(|t| from_millis(*t)));
                }
                if w.full_until(now).is_none() {
                    w.record(now);
                    admitted.push(now);
                }
            }
            for win in admitted.windows(6) {
                prop_assert!(win[5].duration_since(win[0]).unwrap() >= Duration::from_secs(100));
            }
        }

        #[test]
        fn merging_loses_nothing_and_counts_nothing_twice(
            a in proptest::collection::vec(0u64..1000, 0..30),
            b in proptest::collection::vec(0u64..1000, 0..30),
            oa in 0u64..100, ob in 0u64..100,
        ) {
            let la = ledger(&a, &a, Some((oa, 1)));
            let lb = ledger(&b, &b, Some((ob, 0)));
            let mut ab = la.clone();
            ab.merge(&lb);
            let mut ba = lb.clone();
            ba.merge(&la);
            prop_assert_eq!(&ab.orders, &ba.orders);
            prop_assert_eq!(&ab.issued, &ba.issued);
            prop_assert_eq!(ab.outcomes["a.test"].at, oa.max(ob));
            let mut twice = ab.clone();
            twice.merge(&ab);
            prop_assert_eq!(&twice, &ab);
            for t in a.iter().chain(&b) {
                prop_assert!(ab.orders.contains(t));
            }
            let mut all: Vec<u64> = a.iter().chain(&b).copied().collect();
            all.sort_unstable();
            all.dedup();
            prop_assert_eq!(ab.orders, all);
        }
    }
}
