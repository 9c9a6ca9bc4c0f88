//! Passive health: decided by the outcome of real requests.

use serde::Serialize;

/// Consecutive failures that eject a backend.
pub const THRESHOLD: u32 = 3;
/// First cooldown; doubles on every ejection in a row, up to [`MAX_COOLDOWN_MS`].
pub const BASE_COOLDOWN_MS: u64 = 1_000;
pub const MAX_COOLDOWN_MS: u64 = 60_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = PassiveState)]
pub struct State {
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Ejections in a row (reset by a success).
    pub ejections: u32,
    /// Ejected until this time (ms, [`super::now_ms`] clock); 0 when never ejected.
    pub ejected_until: u64,
}

impl State {
    /// 16 bits failures, 8 bits ejections, 40 bits time.
    pub fn pack(self) -> u64 {
        (self.consecutive_failures.min(0xffff) as u64) << 48
            | (self.ejections.min(0xff) as u64) << 40
            | (self.ejected_until & 0xff_ffff_ffff)
    }

    pub fn unpack(v: u64) -> State {
        State {
            consecutive_failures: (v >> 48) as u32,
            ejections: ((v >> 40) & 0xff) as u32,
            ejected_until: v & 0xff_ffff_ffff,
        }
    }
}

pub fn on_success(_: State) -> State {
    State::default()
}

pub fn on_failure(s: State, now: u64) -> State {
    let failures = s.consecutive_failures + 1;
    // A failed trial after an ejection ejects again at once, for longer.
    let trial_failed = s.ejections > 0 && now >= s.ejected_until;
    if failures >= THRESHOLD || trial_failed {
        let cooldown = (BASE_COOLDOWN_MS << s.ejections.min(16)).min(MAX_COOLDOWN_MS);
        State {
            consecutive_failures: 0,
            ejections: s.ejections + 1,
            ejected_until: now + cooldown,
        }
    } else {
        State {
            consecutive_failures: failures,
            ..s
        }
    }
}

/// Whether new requests may go to a backend in state `s` at `now`. After the cooldown the
/// backend takes requests again as trials: the first success restores it, a failure ejects it
/// for twice as long.
pub fn admits(s: State, now: u64) -> bool {
    now >= s.ejected_until
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ejects_after_threshold_and_backs_off() {
        let mut s = State::default();
        for _ in 0..THRESHOLD - 1 {
            s = on_failure(s, 10);
            assert!(admits(s, 10));
        }
        s = on_failure(s, 10);
        assert!(!admits(s, 10));
        assert!(!admits(s, 10 + BASE_COOLDOWN_MS - 1));
        assert!(admits(s, 10 + BASE_COOLDOWN_MS));
        // The trial fails: out again for twice as long.
        let t = 10 + BASE_COOLDOWN_MS;
        s = on_failure(s, t);
        assert!(!admits(s, t + 2 * BASE_COOLDOWN_MS - 1));
        assert!(admits(s, t + 2 * BASE_COOLDOWN_MS));
        // A success restores it fully.
        s = on_success(s);
        assert_eq!(s, State::default());
    }

    proptest! {
        #[test]
        fn pack_round_trips(f in 0u32..0xffff, e in 0u32..0xff, t in 0u64..0xff_ffff_ffff) {
            let s = State { consecutive_failures: f, ejections: e, ejected_until: t };
            prop_assert_eq!(State::unpack(s.pack()), s);
        }

        /// Cooldowns never exceed the maximum, and a success always readmits.
        #[test]
        fn bounded(outcomes in proptest::collection::vec(any::<bool>(), 0..100)) {
            let mut s = State::default();
            let mut now = 1;
            for ok in outcomes {
                now += 500;
                s = if ok { on_success(s) } else { on_failure(s, now) };
                prop_assert!(s.ejected_until <= now + MAX_COOLDOWN_MS);
                if ok { prop_assert!(admits(s, now)); }
            }
        }
    }
}
