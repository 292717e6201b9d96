//! novate-core: the deterministic clearing state machine of SPEC.md.
//!
//! No I/O, no clocks, no randomness, no allocation on the hot path after start-up, and no hash
//! iteration order leaking into results: given the same log, every node computes bit-identical
//! state and events.

pub mod command;
pub mod hash;
pub mod lookahead;
pub mod map;
pub mod position;
pub mod state;
pub mod units;
pub mod valuation;

pub use command::*;
pub use lookahead::{LookupStage, JOB_MAX};
pub use position::{value_batch, value_scalar, Book, Sums, Terms, Totals, Valued, WideSum};
pub use state::*;
pub use units::*;
pub use valuation::{value_columns, value_columns_scalar, Columns};
