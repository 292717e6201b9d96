//! Hot-path memory and CPU placement (design notes §3 and §6.1).
//!
//! - [`huge`]: regions on 1 GB / 2 MB / transparent huge / normal pages, locked, pre-faulted,
//!   NUMA-bound, with a report of what was obtained.
//! - [`arena`]: bump allocator with checkpoint/restore.
//! - [`slab`]: fixed-size values, O(1) insert/remove, many slabs.
//! - [`numa`]: `mbind` without libnuma; "not available" on one-node machines.
//! - [`cpu`]: pinning (`sched_setaffinity`) and SCHED_FIFO, verified by reading back.
//! - [`doctor`]: the host's latency-relevant settings and what §6.1 recommends.
//!
//! Everything that may be refused by the host returns an outcome value saying what happened;
//! nothing fails silently and nothing aborts because an optimisation was unavailable.

#![warn(missing_docs)]

pub mod arena;
pub mod cpu;
pub mod doctor;
pub mod huge;
pub mod numa;
pub mod slab;

pub use arena::{Arena, ArenaFull, Checkpoint};
pub use cpu::{pin_current_thread, set_fifo, PinOutcome, SchedOutcome};
pub use doctor::{doctor, DoctorReport};
pub use huge::{AllocOptions, AllocReport, HugeRegion, LockOutcome, PageKind};
pub use numa::NumaOutcome;
pub use slab::{Slab, SlabConfig, SlabFull, SlabKey};
