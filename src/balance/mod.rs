//! Backend selection. A [`Balancer`] is built once per routing-table snapshot from the
//! backends' weights and queried per request without locks. What changes per request (in-flight
//! counts, latency, health) is read through [`Load`], so every strategy is a pure function of
//! the snapshot, the loads and a random number — and is tested that way.

pub mod hash;
pub mod rng;
pub mod wrr;

pub use hash::Maglev;
pub use wrr::SmoothWrr;

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

/// Balancing strategy of a service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Smooth weighted round-robin (nginx's algorithm).
    #[default]
    RoundRobin,
    /// Weighted random.
    Random,
    /// Power of two random choices on in-flight requests × peak-EWMA latency.
    P2c,
    /// Fewest in-flight requests, weighted.
    LeastConn,
    /// Consistent hashing (Maglev) on `hash_key`.
    Hash,
}

impl Strategy {
    pub const NAMES: &'static str = "round_robin, random, p2c, least_conn or hash";

    pub fn is_default(&self) -> bool {
        *self == Strategy::default()
    }

    pub fn parse(v: &str) -> Option<Strategy> {
        Some(match v.trim() {
            "round_robin" => Strategy::RoundRobin,
            "random" => Strategy::Random,
            "p2c" => Strategy::P2c,
            "least_conn" => Strategy::LeastConn,
            "hash" => Strategy::Hash,
            _ => return None,
        })
    }
}

/// What a strategy may know about a backend at pick time.
pub trait Load {
    /// Takes new requests (healthy, not ejected).
    fn available(&self) -> bool;
    fn in_flight(&self) -> u32;
    /// Peak-EWMA latency in ms (0 when unknown).
    fn latency_ms(&self) -> f64;
    fn weight(&self) -> u32;
    /// Slow-start share in (0, 1]: 1 once fully ramped up.
    fn ramp(&self) -> f64 {
        1.0
    }
    /// Found answering nothing while requests waited on it and its peers answered: picked
    /// only when nothing else is available.
    fn stalled(&self) -> bool {
        false
    }
}

impl<T: Load> Load for std::sync::Arc<T> {
    fn available(&self) -> bool {
        (**self).available()
    }
    fn in_flight(&self) -> u32 {
        (**self).in_flight()
    }
    fn latency_ms(&self) -> f64 {
        (**self).latency_ms()
    }
    fn weight(&self) -> u32 {
        (**self).weight()
    }
    fn ramp(&self) -> f64 {
        (**self).ramp()
    }
    fn stalled(&self) -> bool {
        (**self).stalled()
    }
}

/// The selection state of one service.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(SmoothWrr),
    Random(Cumulative),
    P2c(Cumulative),
    LeastConn(AtomicUsize),
    Hash(Maglev),
}

/// Cumulative weights, for weighted random picks.
#[derive(Debug)]
pub struct Cumulative(Box<[u64]>);

impl Cumulative {
    pub fn new(weights: &[u32]) -> Self {
        let mut acc = 0u64;
        Cumulative(
            weights
                .iter()
                .map(|&w| {
                    acc += w as u64;
                    acc
                })
                .collect(),
        )
    }

    /// Index for a uniform random `r`.
    pub fn sample(&self, r: u64) -> Option<usize> {
        let total = *self.0.last()?;
        if total == 0 {
            return None;
        }
        let x = r % total;
        Some(self.0.partition_point(|&c| c <= x))
    }
}

impl Balancer {
    /// `weights[i]` belongs to backend `i`; `names` are stable keys for consistent hashing.
    pub fn build(
        strategy: Strategy,
        weights: &[u32],
        names: &[&str],
        prev: Option<&Balancer>,
    ) -> Self {
        match strategy {
            Strategy::RoundRobin => {
                let w = SmoothWrr::new(weights);
                // Carry on where the previous snapshot was, so frequent table changes don't
                // keep sending the first pick of the cycle to the same backend.
                if let Some(Balancer::RoundRobin(p)) = prev {
                    w.resume_from(p);
                }
                Balancer::RoundRobin(w)
            }
            Strategy::Random => Balancer::Random(Cumulative::new(weights)),
            Strategy::P2c => Balancer::P2c(Cumulative::new(weights)),
            Strategy::LeastConn => Balancer::LeastConn(AtomicUsize::new(0)),
            Strategy::Hash => Balancer::Hash(Maglev::new(names, weights)),
        }
    }

    /// Index of the backend to use, or `None` when none is available. `key` is the request's
    /// hash (used by `hash`), `rand` a source of random numbers.
    pub fn pick<L: Load>(
        &self,
        backends: &[L],
        key: u64,
        rand: &mut impl FnMut() -> u64,
    ) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        // A backend ramping up under slow start takes a request with probability `ramp`; a
        // stalled one takes none while another can.
        let admit = |i: usize, r: u64| {
            let b = &backends[i];
            if !b.available() || b.stalled() {
                return false;
            }
            let ramp = b.ramp();
            ramp >= 1.0 || (r % 10_000) as f64 / 10_000.0 < ramp
        };
        let picked = match self {
            Balancer::RoundRobin(w) => (0..n)
                .filter_map(|_| w.pick())
                .find(|&i| admit(i, rand()))
                .map(|i| swerve(w, backends, i, &admit, rand())),
            Balancer::Random(c) => (0..2 * n).find_map(|_| {
                let (r1, r2) = (rand(), rand());
                c.sample(r1).filter(|&i| admit(i, r2))
            }),
            Balancer::P2c(c) => {
                let a = (0..n).find_map(|_| {
                    let (r1, r2) = (rand(), rand());
                    c.sample(r1).filter(|&i| admit(i, r2))
                });
                let b = (0..n).find_map(|_| {
                    let (r1, r2) = (rand(), rand());
                    c.sample(r1).filter(|&i| Some(i) != a && admit(i, r2))
                });
                match (a, b) {
                    (Some(a), Some(b)) => Some(if cost(&backends[b]) < cost(&backends[a]) {
                        b
                    } else {
                        a
                    }),
                    (a, b) => a.or(b),
                }
            }
            Balancer::LeastConn(next) => {
                // Start the scan at a rotating offset so ties spread out.
                let start = next.fetch_add(1, Ordering::Relaxed);
                let mut best: Option<usize> = None;
                for k in 0..n {
                    let i = (start + k) % n;
                    if !admit(i, rand()) {
                        continue;
                    }
                    best = match best {
                        None => Some(i),
                        Some(j) => {
                            let (bi, bj) = (&backends[i], &backends[j]);
                            // in_flight_i / w_i < in_flight_j / w_j, without division.
                            let li = (bi.in_flight() as u64 + 1) * bj.weight().max(1) as u64;
                            let lj = (bj.in_flight() as u64 + 1) * bi.weight().max(1) as u64;
                            Some(if li < lj { i } else { j })
                        }
                    };
                }
                best
            }
            Balancer::Hash(m) => m.lookup(key, |i| backends[i].available()),
        };
        // Everything refused only by slow start: take any available one rather than fail.
        picked.or_else(|| (0..n).find(|&i| backends[i].available()))
    }
}

/// In-flight requests from which round-robin looks at the next backend of its cycle too.
const SWERVE_AT: u32 = 8;

/// Round-robin sees requests in flight: a pick with [`SWERVE_AT`] or more in flight, four
/// times more than the next of the cycle has (plus one), gives way to that one (whose own turn
/// comes all the same). Equal
/// backends alternate exactly; one that accepts requests and answers none stops collecting
/// clients once it holds a few (then it is found stalled and skipped outright).
#[inline]
fn swerve<L: Load>(
    w: &SmoothWrr,
    backends: &[L],
    i: usize,
    admit: &impl Fn(usize, u64) -> bool,
    r: u64,
) -> usize {
    let held = backends[i].in_flight();
    if held < SWERVE_AT {
        return i;
    }
    match w.peek() {
        Some(j) if j != i && admit(j, r) && held >= 4 * (backends[j].in_flight() + 1) => j,
        _ => i,
    }
}

/// Added to every latency so sub-millisecond jitter between equal backends (loopback, one
/// rack) does not skew the spread; a backend slower by milliseconds still loses clearly.
const P2C_LATENCY_FLOOR_MS: f64 = 1.0;

/// p2c's load estimate: (latency + floor) × (in-flight + 1) ÷ weight.
fn cost<L: Load>(b: &L) -> f64 {
    (b.latency_ms() + P2C_LATENCY_FLOOR_MS) * (b.in_flight() as f64 + 1.0)
        / b.weight().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop_assert, proptest};

    #[derive(Clone, Debug)]
    struct Fake {
        up: bool,
        in_flight: u32,
        latency: f64,
        weight: u32,
    }

    impl Load for Fake {
        fn available(&self) -> bool {
            self.up
        }
        fn in_flight(&self) -> u32 {
            self.in_flight
        }
        fn latency_ms(&self) -> f64 {
            self.latency
        }
        fn weight(&self) -> u32 {
            self.weight
        }
    }

    fn fakes(weights: &[u32]) -> Vec<Fake> {
        weights
            .iter()
            .map(|&w| Fake {
                up: true,
                in_flight: 0,
                latency: 1.0,
                weight: w,
            })
            .collect()
    }

    fn counts(strategy: Strategy, backends: &[Fake], picks: usize) -> Vec<usize> {
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let names: Vec<String> = (0..backends.len()).map(|i| format!("b{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let b = Balancer::build(strategy, &weights, &names, None);
        let mut rng = rng::seeded(7);
        let mut r = || rand::Rng::next_u64(&mut rng);
        let mut c = vec![0; backends.len()];
        for k in 0..picks {
            let key = rng::mix(k as u64);
            c[b.pick(backends, key, &mut r).unwrap()] += 1;
        }
        c
    }

    #[test]
    fn equal_loads_spread_evenly() {
        let backends = fakes(&[1, 1, 1]);
        for s in [Strategy::P2c, Strategy::LeastConn] {
            let c = counts(s, &backends, 9000);
            for x in &c {
                assert!((*x as f64 / 3000.0 - 1.0).abs() < 0.1, "{s:?}: {c:?}");
            }
        }
    }

    #[test]
    fn every_strategy_respects_weights_roughly() {
        // (p2c and least_conn weigh load, not traffic share: see their own tests.)
        let backends = fakes(&[3, 1]);
        for s in [Strategy::RoundRobin, Strategy::Random, Strategy::Hash] {
            let c = counts(s, &backends, 8000);
            let share = c[0] as f64 / 8000.0;
            assert!((share - 0.75).abs() < 0.05, "{s:?}: {c:?}");
        }
    }

    #[test]
    fn unavailable_backends_are_skipped_and_none_when_all_down() {
        let mut backends = fakes(&[1, 1, 1]);
        backends[1].up = false;
        for s in [
            Strategy::RoundRobin,
            Strategy::Random,
            Strategy::P2c,
            Strategy::LeastConn,
            Strategy::Hash,
        ] {
            let c = counts(s, &backends, 600);
            assert_eq!(c[1], 0, "{s:?}");
            assert_eq!(c[0] + c[2], 600);
        }
        for b in &mut backends {
            b.up = false;
        }
        let b = Balancer::build(Strategy::RoundRobin, &[1, 1, 1], &["a", "b", "c"], None);
        assert_eq!(b.pick(&backends, 0, &mut || 1), None);
    }

    #[test]
    fn least_conn_picks_the_least_loaded_weighted() {
        let mut backends = fakes(&[1, 1, 2]);
        backends[0].in_flight = 5;
        backends[1].in_flight = 2;
        backends[2].in_flight = 3; // 3/2 per weight: least
        let b = Balancer::build(Strategy::LeastConn, &[1, 1, 2], &["a", "b", "c"], None);
        for _ in 0..5 {
            assert_eq!(b.pick(&backends, 0, &mut || 3), Some(2));
        }
    }

    #[test]
    fn p2c_sends_less_to_a_slow_backend() {
        let mut backends = fakes(&[1, 1, 1]);
        backends[2].latency = 50.0;
        let c = counts(Strategy::P2c, &backends, 9000);
        // The slow one only wins when it is drawn twice... which p2c avoids: it gets very little.
        assert!(c[2] < 300, "{c:?}");
    }

    #[test]
    fn round_robin_gives_way_to_a_peer_with_far_fewer_in_flight() {
        let mut backends = fakes(&[1, 1]);
        // Equal loads, even high ones: exact alternation.
        backends[0].in_flight = 20;
        backends[1].in_flight = 20;
        assert_eq!(counts(Strategy::RoundRobin, &backends, 100), [50, 50]);
        // One holding far more (a backend that stopped answering): it gets almost nothing.
        backends[1].in_flight = 2;
        let c = counts(Strategy::RoundRobin, &backends, 100);
        assert_eq!(c, [0, 100], "{c:?}");
        // Below the threshold nothing changes.
        backends[0].in_flight = 7;
        backends[1].in_flight = 0;
        assert_eq!(counts(Strategy::RoundRobin, &backends, 100), [50, 50]);
    }

    #[test]
    fn a_stalled_backend_is_picked_only_when_nothing_else_is_available() {
        #[derive(Clone)]
        struct S(Fake, bool);
        impl Load for S {
            fn available(&self) -> bool {
                self.0.available()
            }
            fn in_flight(&self) -> u32 {
                self.0.in_flight
            }
            fn latency_ms(&self) -> f64 {
                self.0.latency
            }
            fn weight(&self) -> u32 {
                self.0.weight
            }
            fn stalled(&self) -> bool {
                self.1
            }
        }
        let f = fakes(&[1, 1, 1]);
        let mut backends: Vec<S> = f.into_iter().map(|f| S(f, false)).collect();
        backends[1].1 = true;
        for s in [
            Strategy::RoundRobin,
            Strategy::Random,
            Strategy::P2c,
            Strategy::LeastConn,
        ] {
            let b = Balancer::build(s, &[1, 1, 1], &["a", "b", "c"], None);
            let mut rng = rng::seeded(3);
            let mut r = || rand::Rng::next_u64(&mut rng);
            for k in 0..300 {
                assert_ne!(b.pick(&backends, k, &mut r), Some(1), "{s:?}");
            }
        }
        // All stalled: picked all the same (a service of long polls is not left without one).
        for b in &mut backends {
            b.1 = true;
        }
        let b = Balancer::build(Strategy::RoundRobin, &[1, 1, 1], &["a", "b", "c"], None);
        assert!(b.pick(&backends, 0, &mut || 1).is_some());
    }

    #[test]
    fn round_robin_resumes_across_rebuilds() {
        let a = Balancer::build(Strategy::RoundRobin, &[1, 1], &["a", "b"], None);
        let f = fakes(&[1, 1]);
        assert_eq!(a.pick(&f, 0, &mut || 0), Some(0));
        let b = Balancer::build(Strategy::RoundRobin, &[1, 1], &["a", "b"], Some(&a));
        assert_eq!(b.pick(&f, 0, &mut || 0), Some(1));
    }

    proptest! {
        /// Weighted random: each backend's share is within a few points of its weight share.
        #[test]
        fn random_spread(weights in proptest::collection::vec(1u32..10, 2..6)) {
            let backends = fakes(&weights);
            let total: u32 = weights.iter().sum();
            let picks = 20_000;
            let c = counts(Strategy::Random, &backends, picks);
            for (i, w) in weights.iter().enumerate() {
                let want = *w as f64 / total as f64;
                let got = c[i] as f64 / picks as f64;
                prop_assert!((want - got).abs() < 0.03, "{i}: {got} vs {want}");
            }
        }
    }
}
