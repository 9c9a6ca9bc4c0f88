//! A small, fast random source for picks: xorshift64* per thread, no locks.

use std::cell::Cell;

/// splitmix64's finaliser: a good 64-bit mix (also used to spread hash keys).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        Rng(mix(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

thread_local! {
    static STATE: Cell<u64> = Cell::new({
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        mix(t ^ (&t as *const u64 as u64)) | 1
    });
}

/// A random number from this thread's generator.
pub fn next() -> u64 {
    STATE.with(|s| {
        let mut r = Rng(s.get());
        let v = r.next_u64();
        s.set(r.0);
        v
    })
}
