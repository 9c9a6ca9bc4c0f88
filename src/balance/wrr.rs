//! Smooth weighted round-robin, as in nginx (`ngx_http_upstream_get_peer`).
//!
//! nginx keeps a mutable `current_weight` per peer and takes a lock per pick. Here the whole
//! cycle (one period of nginx's sequence: the sum of the weights, reduced by their gcd) is worked
//! out when the routing table is built, and each request takes the next slot with one atomic
//! increment. The sequence is exactly nginx's: for weights 5:1:1 it is `a a b a c a a`.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest cycle stored exactly. Beyond it, weights are scaled down proportionally first
/// (only reachable with thousands of unequal weights in one service).
const MAX_CYCLE: u64 = 1 << 16;

#[derive(Debug)]
pub struct SmoothWrr {
    schedule: Box<[u32]>,
    next: AtomicUsize,
}

impl SmoothWrr {
    pub fn new(weights: &[u32]) -> Self {
        SmoothWrr {
            schedule: schedule(weights).into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }

    #[inline]
    pub fn pick(&self) -> Option<usize> {
        let n = self.schedule.len();
        if n == 0 {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
        Some(self.schedule[i] as usize)
    }

    /// The next pick, without taking it.
    #[inline]
    pub fn peek(&self) -> Option<usize> {
        let n = self.schedule.len();
        if n == 0 {
            return None;
        }
        let i = self.next.load(Ordering::Relaxed) % n;
        Some(self.schedule[i] as usize)
    }

    /// Continue the cycle position of `prev` (a previous snapshot's balancer).
    pub fn resume_from(&self, prev: &SmoothWrr) {
        self.next
            .store(prev.next.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub fn cycle_len(&self) -> usize {
        self.schedule.len()
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Above this many steps (cycle length × backends) nginx's O(n) step is replaced by an
/// O(log n) one with the same per-cycle counts and smoothness, so a rebuild stays fast.
const EXACT_WORK: u64 = 1 << 22;

/// One period of nginx's smooth weighted round-robin over `weights` (zero weights never picked).
pub fn schedule(weights: &[u32]) -> Vec<u32> {
    schedule_with(weights, EXACT_WORK)
}

fn schedule_with(weights: &[u32], exact_work: u64) -> Vec<u32> {
    let mut w: Vec<u64> = weights.iter().map(|&x| x as u64).collect();
    let g = w.iter().copied().filter(|&x| x > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    for x in &mut w {
        *x /= g;
    }
    let mut total: u64 = w.iter().sum();
    if total > MAX_CYCLE {
        // Scale down, keeping every live backend at least at weight 1.
        let scale = total.div_ceil(MAX_CYCLE);
        for x in &mut w {
            if *x > 0 {
                *x = (*x / scale).max(1);
            }
        }
        total = w.iter().sum();
    }
    // All equal: the sequence is the plain order.
    if w.iter().all(|&x| x == 1 || x == 0) {
        return (0..w.len() as u32).filter(|&i| w[i as usize] > 0).collect();
    }
    if total * w.len() as u64 > exact_work {
        return virtual_time_schedule(&w, total);
    }
    let total_i = total as i64;
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = usize::MAX;
        for i in 0..w.len() {
            if w[i] == 0 {
                continue;
            }
            current[i] += w[i] as i64;
            if best == usize::MAX || current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total_i;
        out.push(best as u32);
    }
    out
}

/// Each backend's k-th pick is due at virtual time (2k+1)/(2w); picks are made in due order
/// (ties by index). Exactly `w` picks per cycle, each backend within two picks of its share at
/// every point (nginx's exact sequence keeps within one).
fn virtual_time_schedule(w: &[u64], total: u64) -> Vec<u32> {
    use std::cmp::{Ordering as O, Reverse};
    use std::collections::BinaryHeap;
    #[derive(PartialEq, Eq)]
    struct Due {
        num: u64, // 2k+1
        den: u64, // w
        idx: u32,
    }
    impl Ord for Due {
        fn cmp(&self, o: &Self) -> O {
            ((self.num as u128) * (o.den as u128))
                .cmp(&((o.num as u128) * (self.den as u128)))
                .then(self.idx.cmp(&o.idx))
        }
    }
    impl PartialOrd for Due {
        fn partial_cmp(&self, o: &Self) -> Option<O> {
            Some(self.cmp(o))
        }
    }
    let mut heap: BinaryHeap<Reverse<Due>> = w
        .iter()
        .enumerate()
        .filter(|(_, x)| **x > 0)
        .map(|(i, &x)| {
            Reverse(Due {
                num: 1,
                den: x,
                idx: i as u32,
            })
        })
        .collect();
    let mut out = Vec::with_capacity(total as usize);
    while out.len() < total as usize {
        let Some(Reverse(mut d)) = heap.pop() else {
            break;
        };
        out.push(d.idx);
        d.num += 2;
        heap.push(Reverse(d));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nginx_sequence_for_5_1_1() {
        assert_eq!(schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn equal_weights_alternate_exactly() {
        let w = SmoothWrr::new(&[1, 1]);
        let picks: Vec<usize> = (0..6).map(|_| w.pick().unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 0, 1, 0, 1]);
        assert_eq!(schedule(&[3, 3, 3]), vec![0, 1, 2]);
    }

    #[test]
    fn empty_and_zero() {
        assert_eq!(SmoothWrr::new(&[]).pick(), None);
        assert_eq!(SmoothWrr::new(&[0, 0]).pick(), None);
        assert_eq!(schedule(&[0, 2]), vec![1]);
    }

    #[test]
    fn large_services_use_the_fast_path_with_the_same_counts() {
        for weights in [vec![5u32, 1, 1], vec![3, 7, 2, 9, 1], vec![10, 10, 1]] {
            let fast = schedule_with(&weights, 0);
            let exact = schedule_with(&weights, u64::MAX);
            assert_eq!(fast.len(), exact.len());
            for i in 0..weights.len() as u32 {
                let count = |s: &[u32]| s.iter().filter(|&&x| x == i).count();
                assert_eq!(count(&fast), count(&exact), "{weights:?}");
            }
        }
    }

    #[test]
    fn huge_cycles_are_capped() {
        let weights: Vec<u32> = (0..5000).map(|i| 1000 - (i % 997)).collect();
        let s = schedule(&weights);
        assert!(s.len() as u64 <= MAX_CYCLE + 5000);
        // every backend still appears
        let mut seen = vec![false; weights.len()];
        for &i in &s {
            seen[i as usize] = true;
        }
        assert!(seen.iter().all(|&b| b));
    }

    proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)))]
        /// Over every full cycle each backend is picked exactly weight/gcd times, and no backend
        /// waits longer than the cycle between picks.
        #[test]
        fn exact_counts_per_cycle(weights in proptest::collection::vec(1u32..20, 1..8), cycles in 1usize..4) {
            let g = weights.iter().fold(0u64, |a, &b| gcd(a, b as u64)) as u32;
            let total: u32 = weights.iter().map(|w| w / g).sum();
            let w = SmoothWrr::new(&weights);
            prop_assert_eq!(w.cycle_len(), total as usize);
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..(total as usize * cycles) {
                counts[w.pick().unwrap()] += 1;
            }
            for (i, c) in counts.iter().enumerate() {
                prop_assert_eq!(*c, weights[i] / g * cycles as u32);
            }
        }

        /// Smoothness: at every point of the sequence a backend's count stays within 1 of its
        /// share (nginx's property that makes 5:1:1 interleave rather than burst); the fast
        /// path for very large services stays within 2.
        #[test]
        fn smooth_spread(weights in proptest::collection::vec(1u32..10, 2..6), fast in proptest::bool::ANY) {
            let s = schedule_with(&weights, if fast { 0 } else { u64::MAX });
            let total: f64 = s.len() as f64;
            let g = weights.iter().fold(0u64, |a, &b| gcd(a, b as u64)) as f64;
            for (i, &wi) in weights.iter().enumerate() {
                let share = (wi as f64 / g) / total;
                let mut count = 0f64;
                for (k, &p) in s.iter().enumerate() {
                    if p as usize == i { count += 1.0; }
                    let expect = share * (k + 1) as f64;
                    let bound = if fast { 2.0 } else { 1.0 };
                    prop_assert!((count - expect).abs() <= bound + 1e-9, "backend {i} count {count} vs {expect} at {k}");
                }
            }
        }
    }
}
