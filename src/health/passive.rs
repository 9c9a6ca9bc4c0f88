//! Passive health: decided by the outcome of real requests. A backend ejected for connect
//! failures takes requests again as trials after its cooldown; one ejected for not answering
//! (timeouts: it may accept connections and answer nothing) is let back only by a check (a
//! probe that gets an answer, [`crate::health::BackendStats::readmit`]), never by clients'
//! requests, which would hang again.

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
    /// Ejected for not answering: after the cooldown, a check decides, not a request.
    pub needs_check: bool,
}

impl State {
    /// 1 bit needs_check, 15 bits failures, 8 bits ejections, 40 bits time.
    pub fn pack(self) -> u64 {
        (self.needs_check as u64) << 63
            | (self.consecutive_failures.min(0x7fff) as u64) << 48
            | (self.ejections.min(0xff) as u64) << 40
            | (self.ejected_until & 0xff_ffff_ffff)
    }

    pub fn unpack(v: u64) -> State {
        State {
            needs_check: v >> 63 == 1,
            consecutive_failures: ((v >> 48) & 0x7fff) as u32,
            ejections: ((v >> 40) & 0xff) as u32,
            ejected_until: v & 0xff_ffff_ffff,
        }
    }
}

pub fn on_success(_: State) -> State {
    State::default()
}

/// A failed request (or check); `unanswered`: it timed out waiting for the backend, which
/// then needs a check to come back.
pub fn on_failure(s: State, now: u64, unanswered: bool) -> State {
    if now < s.ejected_until {
        // Requests sent before the ejection failing after it: one fault, already ejected for,
        // not a reason to eject for longer (a burst of requests caught on a backend that
        // stopped would otherwise take it out for minutes).
        return State {
            needs_check: s.needs_check || unanswered,
            ..s
        };
    }
    let failures = s.consecutive_failures + 1;
    // A failed trial (or check) after an ejection ejects again at once, for longer.
    let trial_failed = s.ejections > 0 && now >= s.ejected_until;
    if failures >= THRESHOLD || trial_failed {
        let cooldown = (BASE_COOLDOWN_MS << s.ejections.min(16)).min(MAX_COOLDOWN_MS);
        State {
            consecutive_failures: 0,
            ejections: s.ejections + 1,
            ejected_until: now + cooldown,
            needs_check: unanswered || s.needs_check,
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
/// for twice as long. One that needs a check takes none until the check passes.
pub fn admits(s: State, now: u64) -> bool {
    now >= s.ejected_until && !s.needs_check
}

/// Whether a backend in state `s` is due its check at `now` (ejected for not answering, its
/// cooldown over).
pub fn check_due(s: State, now: u64) -> bool {
    s.needs_check && now >= s.ejected_until
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ejects_after_threshold_and_backs_off() {
        let mut s = State::default();
        for _ in 0..THRESHOLD - 1 {
            s = on_failure(s, 10, false);
            assert!(admits(s, 10));
        }
        s = on_failure(s, 10, false);
        assert!(!admits(s, 10));
        assert!(!admits(s, 10 + BASE_COOLDOWN_MS - 1));
        assert!(admits(s, 10 + BASE_COOLDOWN_MS));
        // The trial fails: out again for twice as long.
        let t = 10 + BASE_COOLDOWN_MS;
        s = on_failure(s, t, false);
        assert!(!admits(s, t + 2 * BASE_COOLDOWN_MS - 1));
        assert!(admits(s, t + 2 * BASE_COOLDOWN_MS));
        // A success restores it fully.
        s = on_success(s);
        assert_eq!(s, State::default());
    }

    #[test]
    fn a_backend_that_stopped_answering_comes_back_by_a_check_only() {
        let mut s = State::default();
        for _ in 0..THRESHOLD {
            s = on_failure(s, 10, true);
        }
        assert!(s.needs_check && !admits(s, 10));
        let after = 10 + BASE_COOLDOWN_MS;
        assert!(!check_due(s, after - 1) && check_due(s, after));
        // No request is let through as a trial: only a check decides.
        assert!(!admits(s, after + 60_000));
        // A failed check: out again, for twice as long, still waiting for a check.
        let failed = on_failure(s, after, false);
        assert!(failed.needs_check && !check_due(failed, after + 2 * BASE_COOLDOWN_MS - 1));
        assert!(admits(on_success(failed), after));
    }

    #[test]
    fn failures_while_ejected_do_not_eject_for_longer() {
        let mut s = State::default();
        for _ in 0..THRESHOLD {
            s = on_failure(s, 10, false);
        }
        let ejected = s;
        // Requests caught on it fail after the ejection: the same ejection, flagged for a
        // check if they waited for an answer.
        for _ in 0..10 {
            s = on_failure(s, 20, true);
        }
        assert_eq!(s.ejected_until, ejected.ejected_until);
        assert_eq!(s.ejections, 1);
        assert!(s.needs_check);
    }

    proptest! {
        #[test]
        fn pack_round_trips(
            f in 0u32..0x7fff,
            e in 0u32..0xff,
            t in 0u64..0xff_ffff_ffff,
            c in any::<bool>(),
        ) {
            let s = State { consecutive_failures: f, ejections: e, ejected_until: t, needs_check: c };
            prop_assert_eq!(State::unpack(s.pack()), s);
        }

        /// Cooldowns never exceed the maximum, and a success always readmits.
        #[test]
        fn bounded(outcomes in proptest::collection::vec(any::<bool>(), 0..100)) {
            let mut s = State::default();
            let mut now = 1;
            for ok in outcomes {
                now += 500;
                s = if ok { on_success(s) } else { on_failure(s, now, false) };
                prop_assert!(s.ejected_until <= now + MAX_COOLDOWN_MS);
                if ok { prop_assert!(admits(s, now)); }
            }
        }
    }
}
