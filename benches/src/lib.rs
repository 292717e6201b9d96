//! Shared helpers for the benchmarks: deterministic random numbers and percentile reports.

use hdrhistogram::Histogram;

/// A small deterministic generator (SplitMix64) so every run sees the same workload.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The clock of per-command latencies: the CPU's time-stamp counter through `quanta`,
/// calibrated to nanoseconds against the OS clock when created (the OS clock itself where the
/// counter is not invariant). A pair of reads costs ~10 ns on the bench machine against
/// `Instant`'s ~30 (the core bench prints both), so a percentile of a ~70 ns command carries
/// less of its timer.
pub struct Timer(quanta::Clock);

impl Default for Timer {
    fn default() -> Self {
        Self(quanta::Clock::new())
    }
}

impl Timer {
    /// A reading, for [`ns_since`](Self::ns_since).
    #[inline(always)]
    pub fn start(&self) -> u64 {
        self.0.raw()
    }

    /// Nanoseconds from `start`'s reading to now.
    #[inline(always)]
    pub fn ns_since(&self, start: u64) -> u64 {
        self.0.delta_as_nanos(start, self.0.raw())
    }
}

/// A new latency histogram in nanoseconds (1 ns .. 10 s, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid histogram bounds")
}

/// One line: name, count, p50, p99, p99.9 and max in nanoseconds.
pub fn report(name: &str, h: &Histogram<u64>) -> String {
    format!(
        "{name}: n={} p50={}ns p99={}ns p99.9={}ns max={}ns",
        h.len(),
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    )
}
