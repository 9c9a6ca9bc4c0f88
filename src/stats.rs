//! Recent figures for the dashboard: once a second, the request counts [`Metrics`] keeps are
//! read and turned into one point per service and per backend (requests per second, error
//! rate, p50 and p99 latency), kept in a ring of the last [`WINDOW`] seconds.
//!
//! Nothing here runs per request: the data plane only adds to the metrics' counters, and the
//! sampler reads them. [`Rings::step`] is the pure part (counts in, points out).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use crate::metrics::{BUCKETS, Metrics, Totals};

/// The (no, service) pair of every backend there is.
pub type Listed = Arc<Vec<(String, String)>>;

/// How far back the rings go, in samples (one a second).
pub const WINDOW: usize = 300;
/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// One second of one service or backend.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Point {
    /// The sample's time, in seconds since the Unix epoch.
    pub t: u64,
    /// Requests finished since the previous sample.
    pub requests: u64,
    /// Of those, answers with a 5xx status.
    pub errors: u64,
    /// Requests per second over the sample.
    pub rps: f64,
    /// Median duration in ms, estimated within the histogram's buckets (none without requests).
    pub p50_ms: Option<f64>,
    /// 99th percentile duration in ms, likewise.
    pub p99_ms: Option<f64>,
}

/// A service's points, oldest first.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceSeries {
    pub name: String,
    pub points: Vec<Point>,
}

/// A backend's points, oldest first.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct BackendSeries {
    pub no: String,
    pub service: String,
    pub points: Vec<Point>,
}

/// What `GET /api/v1/stats` answers.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StatsView {
    pub interval_seconds: u64,
    pub window_seconds: u64,
    pub services: Vec<ServiceSeries>,
    pub backends: Vec<BackendSeries>,
}

/// The rings and the counts of the previous sample.
#[derive(Default)]
pub struct Rings {
    prev: BTreeMap<(String, String), Totals>,
    services: BTreeMap<String, VecDeque<Point>>,
    /// The samples in the window, oldest first: (sequence number, time). Every series has a
    /// point for each since it was first listed.
    samples: VecDeque<(u64, u64)>,
    /// Samples taken so far.
    seq: u64,
    /// By `no`.
    backends: BTreeMap<String, BackendRing>,
}

/// A backend's ring, kept sparse: only the points of seconds that counted requests are
/// stored, the others are zeros made when viewed. A registry of 100,000 backends, mostly idle,
/// then costs a few bytes per backend instead of a window of points each (BENCHMARKS.md,
/// "The state store").
struct BackendRing {
    service: String,
    /// The sequence number of its first sample.
    first: u64,
    /// Points that counted requests, with their sample's sequence number, oldest first.
    busy: VecDeque<(u64, Point)>,
}

impl Rings {
    /// Take one sample: `totals` are the counts now, `backends` the (no, service) pairs the
    /// registry holds (a backend without traffic gets zero points too; one that is gone loses
    /// its ring), `elapsed` the time since the previous sample. In steady state (the same
    /// backends) it allocates nothing but the rings' points.
    pub fn step(
        &mut self,
        t: u64,
        elapsed: Duration,
        totals: BTreeMap<(String, String), Totals>,
        backends: &[(String, String)],
    ) {
        // What each series counted since the previous sample (only those that moved).
        let mut moved: BTreeMap<&str, Totals> = BTreeMap::new();
        let mut per_service: BTreeMap<&str, Totals> = BTreeMap::new();
        for (key, now) in &totals {
            // A series that was pruned and came back (or restarted) counts from zero.
            let before = self.prev.get(key).filter(|p| p.requests <= now.requests);
            let d = delta(now, before);
            add(per_service.entry(&key.0).or_default(), &d);
            if !key.1.is_empty() && d.requests > 0 {
                add(moved.entry(&key.1).or_default(), &d);
            }
        }
        let secs = elapsed.as_secs_f64().max(0.001);
        let push = |ring: &mut VecDeque<Point>, d: &Totals| {
            if ring.len() == WINDOW {
                ring.pop_front();
            }
            ring.push_back(point(t, secs, d));
        };
        self.seq += 1;
        let seq = self.seq;
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back((seq, t));
        let oldest = self.samples.front().map_or(seq, |s| s.0);
        for (no, service) in backends {
            per_service.entry(service).or_default();
            let busy = moved.get(no.as_str()).map(|d| (seq, point(t, secs, d)));
            match self.backends.get_mut(no.as_str()) {
                Some(ring) => {
                    if ring.service != *service {
                        ring.service.clone_from(service);
                    }
                    ring.busy.extend(busy);
                    while ring.busy.front().is_some_and(|(s, _)| *s < oldest) {
                        ring.busy.pop_front();
                    }
                }
                None => {
                    let ring = BackendRing {
                        service: service.clone(),
                        first: seq,
                        busy: busy.into_iter().collect(),
                    };
                    self.backends.insert(no.clone(), ring);
                }
            }
        }
        // Every listed backend has a ring now, so more rings means some are gone.
        if self.backends.len() > backends.len() {
            let listed: std::collections::BTreeSet<&str> =
                backends.iter().map(|(no, _)| no.as_str()).collect();
            self.backends.retain(|no, _| listed.contains(no.as_str()));
        }
        for (name, d) in &per_service {
            match self.services.get_mut(*name) {
                Some(ring) => push(ring, d),
                None => {
                    let mut ring = VecDeque::new();
                    push(&mut ring, d);
                    self.services.insert((*name).to_owned(), ring);
                }
            }
        }
        if self.services.len() > per_service.len() {
            self.services
                .retain(|name, _| per_service.contains_key(name.as_str()));
        }
        self.prev = totals;
    }

    /// Points newer than `since` (all without it); with `backends_last`, only each backend's
    /// newest.
    pub fn view(&self, since: Option<u64>, backends_last: bool) -> StatsView {
        let newer = |ring: &VecDeque<Point>, at_most: usize| -> Vec<Point> {
            let mut v: Vec<Point> = ring
                .iter()
                .rev()
                .take_while(|p| since.is_none_or(|s| p.t > s))
                .take(at_most)
                .cloned()
                .collect();
            v.reverse();
            v
        };
        // The samples a backend's points are for.
        let mut samples: Vec<(u64, u64)> = self
            .samples
            .iter()
            .filter(|(_, t)| since.is_none_or(|s| *t > s))
            .copied()
            .collect();
        if backends_last && samples.len() > 1 {
            samples.drain(..samples.len() - 1);
        }
        let backend_points = |ring: &BackendRing| -> Vec<Point> {
            let mut busy = ring.busy.iter().peekable();
            samples
                .iter()
                .filter(|(seq, _)| *seq >= ring.first)
                .map(|&(seq, t)| {
                    while busy.next_if(|(s, _)| *s < seq).is_some() {}
                    match busy.next_if(|(s, _)| *s == seq) {
                        Some((_, p)) => p.clone(),
                        None => point(t, 1.0, &Totals::default()),
                    }
                })
                .collect()
        };
        StatsView {
            interval_seconds: INTERVAL.as_secs(),
            window_seconds: WINDOW as u64 * INTERVAL.as_secs(),
            services: self
                .services
                .iter()
                .map(|(name, ring)| ServiceSeries {
                    name: name.clone(),
                    points: newer(ring, WINDOW),
                })
                .collect(),
            backends: self
                .backends
                .iter()
                .map(|(no, ring)| BackendSeries {
                    no: no.clone(),
                    service: ring.service.clone(),
                    points: backend_points(ring),
                })
                .collect(),
        }
    }
}

fn delta(now: &Totals, before: Option<&Totals>) -> Totals {
    let Some(b) = before else { return *now };
    let mut d = Totals {
        requests: now.requests - b.requests,
        errors: now.errors.saturating_sub(b.errors),
        ..Totals::default()
    };
    for (i, n) in now.buckets.iter().enumerate() {
        d.buckets[i] = n.saturating_sub(b.buckets[i]);
    }
    d
}

fn add(sum: &mut Totals, d: &Totals) {
    sum.requests += d.requests;
    sum.errors += d.errors;
    for (s, n) in sum.buckets.iter_mut().zip(d.buckets) {
        *s += n;
    }
}

fn point(t: u64, secs: f64, d: &Totals) -> Point {
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    Point {
        t,
        requests: d.requests,
        errors: d.errors,
        rps: round(d.requests as f64 / secs),
        p50_ms: quantile(&d.buckets, 0.5).map(round),
        p99_ms: quantile(&d.buckets, 0.99).map(round),
    }
}

/// The `q` quantile in ms of per-bucket counts over [`BUCKETS`], interpolated linearly within
/// the bucket it falls in (as Prometheus' `histogram_quantile` does); the overflow bucket
/// reports the last bound.
pub fn quantile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in buckets.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&hi) = BUCKETS.get(i) else {
                return Some(BUCKETS[BUCKETS.len() - 1] * 1000.0);
            };
            let lo = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some((lo + (hi - lo) * within) * 1000.0);
        }
        below += n;
    }
    Some(BUCKETS[BUCKETS.len() - 1] * 1000.0)
}

/// The rings, shared by the sampler and the admin API.
#[derive(Clone, Default)]
pub struct Stats(Arc<Mutex<Rings>>);

impl Stats {
    pub fn view(&self, since: Option<u64>, backends_last: bool) -> StatsView {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .view(since, backends_last)
    }

    /// Sample `metrics` every [`INTERVAL`] until `stop`; `backends` says which (no, service)
    /// pairs exist now.
    pub async fn run(
        self,
        metrics: Arc<Metrics>,
        mut backends: impl FnMut() -> Listed,
        mut stop: watch::Receiver<bool>,
    ) {
        // (The first sample a whole interval after the start, so each covers one.)
        let mut last = Instant::now();
        let mut tick = tokio::time::interval_at((last + INTERVAL).into(), INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let totals = metrics.totals();
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let now = Instant::now();
            let list = backends();
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .step(t, now - last, totals, &list);
            last = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(rows: &[(&str, &str, u64, u64, usize)]) -> BTreeMap<(String, String), Totals> {
        // (service, backend, requests, errors, the bucket they all fell in)
        rows.iter()
            .map(|&(s, b, n, e, bucket)| {
                let mut t = Totals {
                    requests: n,
                    errors: e,
                    ..Totals::default()
                };
                t.buckets[bucket] = n;
                ((s.to_owned(), b.to_owned()), t)
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect()
    }

    #[test]
    fn points_are_differences_per_second() {
        let mut r = Rings::default();
        let known = pairs(&[("a1", "app"), ("a2", "app")]);
        r.step(
            100,
            INTERVAL,
            totals(&[("app", "a1", 10, 0, 2), ("app", "a2", 4, 1, 2)]),
            &known,
        );
        r.step(
            101,
            Duration::from_millis(500),
            totals(&[("app", "a1", 30, 2, 2), ("app", "a2", 4, 1, 2)]),
            &known,
        );
        let v = r.view(Some(100), false);
        assert_eq!(v.services.len(), 1);
        let p = &v.services[0].points;
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].t, p[0].requests, p[0].errors), (101, 20, 2));
        assert_eq!(p[0].rps, 40.0);
        let a2 = v.backends.iter().find(|b| b.no == "a2").unwrap();
        assert_eq!(a2.points[0].requests, 0);
        assert_eq!(a2.points[0].p50_ms, None);
        // Bucket 2 is 1 ms to 2.5 ms: the median is in the middle of it.
        let a1 = v.backends.iter().find(|b| b.no == "a1").unwrap();
        assert_eq!(a1.points[0].p50_ms, Some(1.75));
        assert_eq!(r.view(None, false).services[0].points.len(), 2);
        let last = r.view(None, true);
        assert_eq!(
            last.services[0].points.len(),
            2,
            "services keep their history"
        );
        assert_eq!(last.backends[0].points.len(), 1);
        assert_eq!(last.backends[0].points[0].t, 101);
    }

    #[test]
    fn a_backend_without_traffic_has_points_and_a_gone_one_has_none() {
        let mut r = Rings::default();
        r.step(1, INTERVAL, BTreeMap::new(), &pairs(&[("a1", "app")]));
        let v = r.view(None, false);
        assert_eq!(v.backends[0].points[0].requests, 0);
        assert_eq!(v.services[0].name, "app");
        r.step(2, INTERVAL, BTreeMap::new(), &[]);
        let v = r.view(None, false);
        assert!(v.backends.is_empty() && v.services.is_empty());
        // One gone and one new in the same sample, and one moved to another service.
        r.step(
            3,
            INTERVAL,
            BTreeMap::new(),
            &pairs(&[("a1", "app"), ("a2", "app")]),
        );
        r.step(
            4,
            INTERVAL,
            BTreeMap::new(),
            &pairs(&[("a1", "web"), ("a3", "app")]),
        );
        let v = r.view(None, false);
        let nos: Vec<(&str, &str)> = v
            .backends
            .iter()
            .map(|b| (b.no.as_str(), b.service.as_str()))
            .collect();
        assert_eq!(nos, [("a1", "web"), ("a3", "app")]);
        let names: Vec<&str> = v.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["app", "web"]);
    }

    #[test]
    fn a_pruned_series_that_returns_counts_from_zero() {
        let mut r = Rings::default();
        let known = pairs(&[("a1", "app")]);
        r.step(1, INTERVAL, totals(&[("app", "a1", 50, 0, 0)]), &known);
        r.step(2, INTERVAL, totals(&[("app", "a1", 3, 0, 0)]), &known);
        assert_eq!(r.view(Some(1), false).services[0].points[0].requests, 3);
    }

    #[test]
    fn the_ring_keeps_the_window() {
        let mut r = Rings::default();
        let known = pairs(&[("a1", "app")]);
        for t in 0..(WINDOW as u64 + 10) {
            r.step(t, INTERVAL, BTreeMap::new(), &known);
        }
        let v = r.view(None, false);
        assert_eq!(v.services[0].points.len(), WINDOW);
        assert_eq!(v.services[0].points[0].t, 10);
    }

    #[test]
    fn an_idle_backend_keeps_no_points_but_shows_zeros() {
        let mut r = Rings::default();
        let known = pairs(&[("idle", "app"), ("busy", "app")]);
        for t in 0..(WINDOW as u64 + 20) {
            let rows = if t % 2 == 0 {
                totals(&[("app", "busy", t + 1, 0, 1)])
            } else {
                totals(&[("app", "busy", t, 0, 1)])
            };
            r.step(t, INTERVAL, rows, &known);
        }
        assert!(r.backends["idle"].busy.is_empty());
        // Only the seconds that counted requests are kept, within the window.
        assert!(r.backends["busy"].busy.len() <= WINDOW / 2 + 1);
        let v = r.view(None, false);
        for b in &v.backends {
            assert_eq!(b.points.len(), WINDOW, "{}", b.no);
            assert_eq!(b.points[0].t, 20);
            assert_eq!(b.points.last().unwrap().t, WINDOW as u64 + 19);
        }
        let idle = v.backends.iter().find(|b| b.no == "idle").unwrap();
        assert!(
            idle.points
                .iter()
                .all(|p| p.requests == 0 && p.p50_ms.is_none())
        );
        let busy = v.backends.iter().find(|b| b.no == "busy").unwrap();
        let counted: u64 = busy.points.iter().map(|p| p.requests).sum();
        assert_eq!(
            counted,
            busy.points.iter().filter(|p| p.requests > 0).count() as u64 * 2
        );
        // A backend listed later has points from then on only.
        let mut more = known.clone();
        more.push(("new".into(), "app".into()));
        r.step(WINDOW as u64 + 20, INTERVAL, BTreeMap::new(), &more);
        let v = r.view(None, false);
        let new = v.backends.iter().find(|b| b.no == "new").unwrap();
        assert_eq!(new.points.len(), 1);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut b = [0u64; BUCKETS.len() + 1];
        assert_eq!(quantile(&b, 0.5), None);
        b[0] = 100;
        assert_eq!(quantile(&b, 0.5), Some(0.25));
        b[BUCKETS.len()] = 100;
        // Half in the first bucket, half beyond the last bound.
        assert_eq!(quantile(&b, 0.99), Some(5000.0));
        assert_eq!(quantile(&b, 0.5), Some(0.5));
    }
}
