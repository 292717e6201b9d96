//! How a thread waits when its ring is empty (or full): chosen in configuration.
//!
//! | strategy | latency to notice new data | CPU while idle | use |
//! |---|---|---|---|
//! | `busy-spin` | tens of ns | one full core | pinned threads on isolated cores, benchmarks |
//! | `spin-yield` | sub-µs while other work is runnable | one core, but yields it | shared cores |
//! | `park` | at once if woken, else within [`PARK_MAX`] ([`PARK_IDLE_MAX`] long idle) | ~0 | laptops, CI, the default |
//!
//! `park` spins, then yields, then sleeps in `park_timeout` steps that double from [`PARK_MIN`]
//! to [`PARK_MAX`] (a bounded backoff): there is no wake-up call to forget.
//!
//! A thread that waits for work its producers wake it for (a pipeline stage with an empty input
//! ring) waits with [`Waiter::idle`]: the same backoff, whose bound rises from `PARK_MAX` to
//! [`PARK_IDLE_MAX`] once it has been idle for [`IDLE_DEEP_PARKS`] parks (~0.1 s).
//! An idle engine then wakes each thread ~20 times a second instead of ~1,000; a busy one, whose
//! waits are short, waits exactly as before; and a wake-up that went missing still costs at most
//! `PARK_IDLE_MAX`.

use core::fmt;
use core::str::FromStr;
use std::time::{Duration, Instant};

/// Spin iterations before `spin-yield` and `park` start yielding.
pub const SPIN_STEPS: u32 = 100;
/// Yields before `park` starts parking.
pub const YIELD_STEPS: u32 = 20;
/// First park duration.
pub const PARK_MIN: Duration = Duration::from_micros(1);
/// Longest park duration (bounds the added latency of an idle `park` waiter).
pub const PARK_MAX: Duration = Duration::from_millis(1);
/// Longest park of a long-idle [`Waiter::idle`] (its producers wake it; this bounds the cost
/// of a wake-up that went missing).
pub const PARK_IDLE_MAX: Duration = Duration::from_millis(50);
/// Parks (the ~10 of the doubling to [`PARK_MAX`], then ~100 at it: ~0.1 s) after which
/// [`Waiter::idle`] may park up to [`PARK_IDLE_MAX`].
pub const IDLE_DEEP_PARKS: u32 = 110;

/// A waiting policy, parsed from configuration: `"busy-spin" | "spin-yield" | "park"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WaitStrategy {
    /// Spin with a CPU hint forever.
    BusySpin,
    /// Spin [`SPIN_STEPS`] times, then `yield_now` on every step.
    SpinYield,
    /// Spin, yield, then park with a doubling, bounded timeout. The default: behaves on 2 cores.
    #[default]
    Park,
}

impl WaitStrategy {
    /// The configuration spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BusySpin => "busy-spin",
            Self::SpinYield => "spin-yield",
            Self::Park => "park",
        }
    }
}

impl fmt::Display for WaitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown wait strategy name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownWaitStrategy(pub String);

impl fmt::Display for UnknownWaitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown wait strategy {:?} (expected busy-spin, spin-yield or park)", self.0)
    }
}

impl std::error::Error for UnknownWaitStrategy {}

impl FromStr for WaitStrategy {
    type Err = UnknownWaitStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "busy-spin" => Ok(Self::BusySpin),
            "spin-yield" => Ok(Self::SpinYield),
            "park" => Ok(Self::Park),
            other => Err(UnknownWaitStrategy(other.to_owned())),
        }
    }
}

/// The state of one waiting loop: call [`Waiter::wait`] after each empty poll and
/// [`Waiter::reset`] after each successful one.
#[derive(Debug)]
pub struct Waiter {
    strategy: WaitStrategy,
    /// Waits so far: spins, then yields, then parks (`park` strategy; saturating).
    step: u32,
    park: Duration,
}

impl Waiter {
    /// A waiter at its first step.
    pub fn new(strategy: WaitStrategy) -> Self {
        Self { strategy, step: 0, park: PARK_MIN }
    }

    /// The policy.
    pub fn strategy(&self) -> WaitStrategy {
        self.strategy
    }

    /// Back to the first (cheapest, most responsive) step.
    #[inline]
    pub fn reset(&mut self) {
        self.step = 0;
        self.park = PARK_MIN;
    }

    /// Idles once, according to the policy and how long this wait has lasted.
    #[inline]
    pub fn wait(&mut self) {
        self.step_with(PARK_MAX);
    }

    /// [`wait`](Self::wait) for a thread that every producer wakes (`Thread::unpark`) after
    /// handing it work: once it has been idle for [`IDLE_DEEP_PARKS`] parks, its
    /// parks grow up to [`PARK_IDLE_MAX`] (see the module docs). Never for a wait that nobody
    /// ends with a wake-up (room in a full ring): use `wait` there.
    #[inline]
    pub fn idle(&mut self) {
        let deep = self.step >= SPIN_STEPS + YIELD_STEPS + IDLE_DEEP_PARKS;
        self.step_with(if deep { PARK_IDLE_MAX } else { PARK_MAX });
    }

    #[inline]
    fn step_with(&mut self, park_max: Duration) {
        match self.strategy {
            WaitStrategy::BusySpin => std::hint::spin_loop(),
            WaitStrategy::SpinYield => {
                if self.step < SPIN_STEPS {
                    self.step += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            WaitStrategy::Park => {
                if self.step < SPIN_STEPS {
                    self.step += 1;
                    std::hint::spin_loop();
                } else if self.step < SPIN_STEPS + YIELD_STEPS {
                    self.step += 1;
                    std::thread::yield_now();
                } else {
                    std::thread::park_timeout(self.park);
                    self.step = self.step.saturating_add(1);
                    self.park = (self.park * 2).min(park_max);
                }
            }
        }
    }

    /// Polls `poll` until it returns `Some`, waiting between polls; gives up at `deadline`.
    pub fn wait_until<R>(
        &mut self,
        deadline: Instant,
        mut poll: impl FnMut() -> Option<R>,
    ) -> Option<R> {
        loop {
            if let Some(r) = poll() {
                self.reset();
                return Some(r);
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.wait();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_names_and_rejects_others() {
        for s in [WaitStrategy::BusySpin, WaitStrategy::SpinYield, WaitStrategy::Park] {
            assert_eq!(s.to_string().parse::<WaitStrategy>(), Ok(s));
        }
        assert_eq!("busy-spin".parse(), Ok(WaitStrategy::BusySpin));
        let err = "spin".parse::<WaitStrategy>().unwrap_err();
        assert!(err.to_string().contains("spin-yield"));
        assert_eq!(WaitStrategy::default(), WaitStrategy::Park);
    }

    #[test]
    fn park_backoff_is_bounded() {
        let mut w = Waiter::new(WaitStrategy::Park);
        for _ in 0..(SPIN_STEPS + YIELD_STEPS + 20) {
            w.wait();
        }
        assert_eq!(w.park, PARK_MAX);
        w.reset();
        assert_eq!(w.park, PARK_MIN);
        assert_eq!(w.step, 0);
    }

    #[test]
    fn an_idle_waiter_parks_longer_only_after_a_long_idle_time() {
        let mut w = Waiter::new(WaitStrategy::Park);
        // Spins, yields, then IDLE_DEEP_PARKS parks (~10 doubling to PARK_MAX, the rest at it):
        // still bounded by PARK_MAX.
        let idle_enough = SPIN_STEPS + YIELD_STEPS + IDLE_DEEP_PARKS;
        for _ in 0..idle_enough {
            w.idle();
        }
        assert_eq!(w.park, PARK_MAX, "not yet idle long enough");
        for _ in 0..10 {
            w.idle();
        }
        assert_eq!(w.park, PARK_IDLE_MAX, "long idle: parks up to PARK_IDLE_MAX");
        w.reset();
        assert_eq!((w.park, w.step), (PARK_MIN, 0), "work resets the backoff");
        // `wait` never goes past PARK_MAX, however long it lasts.
        for _ in 0..idle_enough + 10 {
            w.wait();
        }
        assert_eq!(w.park, PARK_MAX);
    }

    #[test]
    fn wait_until_times_out_and_succeeds() {
        for strategy in [WaitStrategy::BusySpin, WaitStrategy::SpinYield, WaitStrategy::Park] {
            let mut w = Waiter::new(strategy);
            let start = Instant::now();
            let got: Option<()> = w.wait_until(start + Duration::from_millis(20), || None);
            assert_eq!(got, None);
            assert!(start.elapsed() >= Duration::from_millis(20));
            let mut n = 0;
            // The deadline only bounds a hang: 300 polls may yield or park a few hundred times,
            // each of which can take milliseconds on a loaded machine.
            let got = w.wait_until(Instant::now() + Duration::from_secs(60), || {
                n += 1;
                (n == 300).then_some(n)
            });
            assert_eq!(got, Some(300));
        }
    }
}
