//! Active health: periodic probes with rise/fall thresholds (as in HAProxy).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ActiveState)]
pub struct State {
    /// Routable as far as probes know. Starts up, so a new backend takes traffic at once.
    pub up: bool,
    /// Probes in a row that disagree with `up` (counting toward a flip).
    pub streak: u32,
    /// Probes done.
    pub probes: u32,
}

impl Default for State {
    fn default() -> Self {
        State {
            up: true,
            streak: 0,
            probes: 0,
        }
    }
}

impl State {
    pub fn pack(self) -> u32 {
        (self.up as u32) << 31 | (self.streak.min(0x7f) << 24) | self.probes.min(0xff_ffff)
    }

    pub fn unpack(v: u32) -> State {
        State {
            up: v >> 31 == 1,
            streak: (v >> 24) & 0x7f,
            probes: v & 0xff_ffff,
        }
    }
}

/// One probe result: `fall` failures in a row take it down, `rise` successes bring it up.
pub fn step(s: State, ok: bool, rise: u32, fall: u32) -> State {
    let probes = (s.probes + 1).min(0xff_ffff);
    if ok == s.up {
        return State {
            streak: 0,
            probes,
            ..s
        };
    }
    let streak = s.streak + 1;
    let needed = if s.up { fall } else { rise }.max(1);
    if streak >= needed {
        State {
            up: !s.up,
            streak: 0,
            probes,
        }
    } else {
        State {
            streak,
            probes,
            ..s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let mut s = State::default();
        s = step(s, false, 2, 3);
        s = step(s, false, 2, 3);
        assert!(s.up);
        s = step(s, true, 2, 3); // streak broken
        s = step(s, false, 2, 3);
        s = step(s, false, 2, 3);
        s = step(s, false, 2, 3);
        assert!(!s.up);
        s = step(s, true, 2, 3);
        assert!(!s.up);
        s = step(s, true, 2, 3);
        assert!(s.up);
        assert_eq!(State::unpack(s.pack()), s);
    }
}
