//! Consistent hashing with Maglev (Eisenbud et al., NSDI 2016), weighted.
//!
//! Each backend has a preference order over the lookup table's slots, derived from its name
//! with a fixed hash (FNV-1a 64 + splitmix64, the same in every Rust release). Backends take
//! turns claiming their next preferred free slot, a backend of weight w taking w turns per w_max.
//! Removing one of N backends moves about 1/N of the keys; lookups are one array index.

use super::rng::mix;

/// Table size (a prime), fixed so that adding or removing a backend never reshuffles the
/// table; a larger one for services of over 650 backends (at least 100 slots each).
const SIZE: usize = 65_537;
const SIZE_LARGE: usize = 1_048_573;

#[derive(Debug)]
pub struct Maglev {
    table: Box<[u32]>,
}

/// FNV-1a 64 (the `fnv` crate) with a seed, then mixed: fixed across platforms and Rust
/// versions.
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::with_key(0xcbf2_9ce4_8422_2325 ^ seed);
    std::hash::Hasher::write(&mut h, bytes);
    mix(std::hash::Hasher::finish(&h))
}

impl Maglev {
    pub fn new(names: &[&str], weights: &[u32]) -> Self {
        let n = names.len();
        let live: Vec<usize> = (0..n).filter(|&i| weights[i] > 0).collect();
        if live.is_empty() {
            return Maglev {
                table: Box::new([]),
            };
        }
        let m = if live.len() * 100 <= SIZE {
            SIZE
        } else {
            SIZE_LARGE
        };
        let offset: Vec<usize> = live
            .iter()
            .map(|&i| (hash_bytes(0x51, names[i].as_bytes()) % m as u64) as usize)
            .collect();
        let skip: Vec<usize> = live
            .iter()
            .map(|&i| (hash_bytes(0xa7, names[i].as_bytes()) % (m as u64 - 1)) as usize + 1)
            .collect();
        let w_max = live.iter().map(|&i| weights[i]).max().unwrap_or(1) as f64;
        let mut credit = vec![0f64; live.len()];
        let mut next = vec![0usize; live.len()];
        let mut table = vec![u32::MAX; m];
        let mut filled = 0;
        'fill: loop {
            for (k, &i) in live.iter().enumerate() {
                credit[k] += weights[i] as f64 / w_max;
                if credit[k] < 1.0 {
                    continue;
                }
                credit[k] -= 1.0;
                // Claim the next preferred free slot.
                loop {
                    let slot = (offset[k] + next[k] * skip[k]) % m;
                    next[k] += 1;
                    if table[slot] == u32::MAX {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break 'fill;
                }
            }
        }
        Maglev {
            table: table.into_boxed_slice(),
        }
    }

    /// The backend for `key`; if it is unavailable, the next slots' backends in turn.
    pub fn lookup(&self, key: u64, available: impl Fn(usize) -> bool) -> Option<usize> {
        let m = self.table.len();
        if m == 0 {
            return None;
        }
        let start = (key % m as u64) as usize;
        (0..m)
            .map(|k| self.table[(start + k) % m] as usize)
            .find(|&i| available(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owners(names: &[String], weights: &[u32], keys: usize) -> Vec<String> {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let m = Maglev::new(&refs, weights);
        (0..keys)
            .map(|k| names[m.lookup(mix(k as u64), |_| true).unwrap()].clone())
            .collect()
    }

    #[test]
    fn fixed_hash_values() {
        // These must never change: a change would move every client.
        assert_eq!(hash_bytes(0, b""), mix(0xcbf2_9ce4_8422_2325));
        // FNV-1a 64 of "a" (the published test vector): the same hash as before the crate.
        assert_eq!(hash_bytes(0, b"a"), mix(0xaf63_dc4c_8601_ec8c));
        assert_eq!(hash_bytes(0x51, b"web-1"), hash_bytes(0x51, b"web-1"));
        assert_ne!(hash_bytes(0x51, b"web-1"), hash_bytes(0x51, b"web-2"));
    }

    proptest! {
        /// Removing one of N backends moves about 1/N of the keys, and only a little more.
        #[test]
        fn minimal_disruption(n in 3usize..12, removed in 0usize..12) {
            let removed = removed % n;
            let names: Vec<String> = (0..n).map(|i| format!("backend-{i}")).collect();
            let keys = 5000;
            let before = owners(&names, &vec![1; n], keys);
            let mut fewer = names.clone();
            fewer.remove(removed);
            let after = owners(&fewer, &vec![1; n - 1], keys);
            let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count() as f64 / keys as f64;
            let ideal = 1.0 / n as f64;
            prop_assert!(moved <= ideal * 1.25 + 0.02, "moved {moved:.3}, ideal {ideal:.3}");
        }

        /// Spread follows the weights.
        #[test]
        fn weighted_spread(weights in proptest::collection::vec(1u32..5, 2..6)) {
            let names: Vec<String> = (0..weights.len()).map(|i| format!("b{i}")).collect();
            let keys = 20_000;
            let own = owners(&names, &weights, keys);
            let total: u32 = weights.iter().sum();
            for (i, w) in weights.iter().enumerate() {
                let got = own.iter().filter(|o| **o == names[i]).count() as f64 / keys as f64;
                let want = *w as f64 / total as f64;
                prop_assert!((got - want).abs() < 0.04, "{i}: {got:.3} vs {want:.3}");
            }
        }
    }
}
