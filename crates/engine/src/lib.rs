//! novate-engine: the pipeline that feeds the deterministic state machine (crates/core) from
//! clients and serves its results, the `novated` daemon, and the demo.
//!
//! - [`pipeline`]: ingress ring -> sequencer (seq, ts, journal group commit) -> state machine
//!   (`apply_batch`, published views) -> egress (answers, subscriptions, metrics).
//! - [`views`]: what queries read, published by the state-machine thread at batch boundaries.
//! - [`durability`]: the `Journal` and `SnapshotStore` traits and in-memory implementations;
//!   [`store`] picks the real ones (crates/journal) for a data dir.
//! - [`completion`]: a client that never blocks its caller (the napi binding's), with a
//!   completion thread that delivers answers in batches.
//! - [`config`]: the TOML configuration (docs/CONFIG.md).
//! - [`counted`]: a channel whose receiver looks into it only when a message was counted in.
//! - [`server`]: the TCP ingress of `novated` (SOFH-framed SBE).
//! - [`demo`]: the synthetic feed and summary of `novate-demo`.

pub mod completion;
pub mod config;
pub mod counted;
pub mod demo;
pub mod durability;
pub mod pipeline;
pub mod seqarray;
pub mod server;
pub mod store;
pub mod views;

pub use completion::{AsyncClient, BatchOutcome, Outcome, Ticket, Work};
pub use config::{Config, ConfigError, DurabilityPolicy};
pub use durability::{Journal, MemJournal, MemSnapshots, SnapshotStore};
pub use pipeline::{
    event_account, event_kind, Answer, AnswerKind, Answers, CallError, Client, ClientMaker,
    Combined, Engine, EngineError, EventFilter, Metrics, ShutdownReport, StartReport, SubStatus,
    SubStop, SubmitError, Submitter, Subscription,
};
pub use server::{Server, ServerHandle};
pub use views::{Published, Views};
