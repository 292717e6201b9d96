//! Lock-free building blocks of the novate pipeline (design notes §2).
//!
//! - [`spsc`]: single-producer single-consumer ring of fixed-size slots (stage to stage).
//! - [`mpsc`]: bounded multi-producer single-consumer queue (transports into the sequencer).
//! - [`bytes`]: byte ring for variable-length frames, shareable across processes via a file.
//! - [`index`]: account id → dense row, one writer, lock-free readers.
//! - [`seqlock`]: publish `Copy` snapshots to reader threads without blocking the writer.
//! - [`wait`]: busy-spin / spin-yield / park, chosen in configuration.
//!
//! Capacities are fixed at construction (allocated once, at start-up); running out of room is a
//! typed error ([`Full`], [`index::InsertError`], [`bytes::ClaimError`]), never a silent drop.
//!
//! Cache padding uses `crossbeam_utils::CachePadded`, which is 128 bytes on x86_64 and aarch64:
//! Intel's adjacent-line prefetcher (and AMD's equivalent) pulls 64-byte lines in pairs, so two
//! hot atomics need 128 bytes between them to avoid false sharing.
//!
//! The loom models (`RUSTFLAGS="--cfg loom" cargo test -p novate-ring --release --lib loom`)
//! check the SPSC, MPSC, seqlock and index protocols under every interleaving loom explores.

#![warn(missing_docs)]

use core::fmt;

mod sync;

pub mod bytes;
pub mod index;
pub mod mpsc;
pub mod seqlock;
pub mod spsc;
pub mod wait;

#[cfg(all(test, loom))]
mod loom_tests;

pub use wait::{WaitStrategy, Waiter};

/// A push failed because the ring is full; the value is handed back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Full<T>(pub T);

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ring full")
    }
}

impl<T> std::error::Error for Full<T> {}

/// A capacity that the structure cannot use (configuration error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapacityError {
    /// The capacity asked for.
    pub requested: usize,
    /// What it must be.
    pub reason: &'static str,
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "capacity {} {}", self.requested, self.reason)
    }
}

impl std::error::Error for CapacityError {}
