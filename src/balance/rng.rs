//! Random picks: one small fast generator (rand's `SmallRng`) per thread, seeded from the
//! OS, so the data plane never locks; and the 64-bit mix that spreads hash keys.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// splitmix64's finaliser: a good 64-bit mix for hash keys. Kept by hand (four lines) because
/// Maglev's tables must come out the same for the same names in every release, which no hash
/// crate promises for its own mixing.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

thread_local! {
    static STATE: RefCell<SmallRng> = RefCell::new(rand::make_rng());
}

/// A random number from this thread's generator.
pub fn next() -> u64 {
    STATE.with(|r| r.borrow_mut().next_u64())
}

/// A generator with a fixed seed, for tests that must pick the same way every run.
pub fn seeded(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}
