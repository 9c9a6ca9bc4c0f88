//! Peak-EWMA latency (as in Finagle and Linkerd): a slower sample is taken at once, a faster
//! one is blended in with a weight that grows with the time since the last sample.

/// Decay time constant.
pub const TAU_MS: f64 = 10_000.0;

/// The estimate after a `sample_ms` observed at `now`, given `prev` set at `prev_at`.
pub fn peak_ewma(prev: f64, prev_at: u64, sample_ms: f64, now: u64) -> f64 {
    if prev_at == 0 || sample_ms > prev {
        return sample_ms;
    }
    let elapsed = now.saturating_sub(prev_at) as f64;
    let w = (-elapsed / TAU_MS).exp();
    prev * w + sample_ms * (1.0 - w)
}

/// The estimate as seen at `now` (no new sample): it decays toward zero so an idle backend
/// gets tried again.
pub fn decayed(v: f64, at: u64, now: u64) -> f64 {
    if at == 0 {
        return 0.0;
    }
    v * (-(now.saturating_sub(at) as f64) / TAU_MS).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_fast_and_decays_slowly() {
        let e = peak_ewma(0.0, 0, 5.0, 1);
        assert_eq!(e, 5.0);
        assert_eq!(peak_ewma(e, 1, 50.0, 2), 50.0);
        let later = peak_ewma(50.0, 2, 5.0, 3);
        assert!(later > 49.0, "{later}");
        let much_later = peak_ewma(50.0, 2, 5.0, 100_000);
        assert!(much_later < 6.0, "{much_later}");
        assert!(decayed(50.0, 1, 10_001) < 20.0);
    }
}
