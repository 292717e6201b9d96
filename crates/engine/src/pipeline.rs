//! The pipeline of ARCHITECTURE.md, in one process:
//!
//! ```text
//!  clients ──► [MPSC ingress] ──► sequencer ──► [SPSC apply] ──► state machine ──► [SPSC egress] ──► egress
//!  (Client,     try_push: Busy     seq + ts,      batches          apply_batch,       answers and       answers to each
//!   TCP conns)  when full          journal         released only    views published    events            client's ring,
//!                                  append+commit   when durable     per batch                            subscriptions
//! ```
//!
//! - **Back-pressure.** Each client may have at most `client_inflight_max` commands without an
//!   answer, and the ingress ring is bounded: a full ring or a full window is `Busy` from
//!   [`Client::try_submit`], or a bounded wait in [`Client::submit_with`]. The stages behind the
//!   ingress wait for room (the sequencer for the apply ring, the state machine for the egress
//!   ring); nothing is dropped. A client's answer ring has room for its whole window, so egress
//!   never waits for a client; a subscription that falls `subscriber_buffer` events behind is
//!   cut off with an overflow flag that its reader sees after the last delivered event.
//! - **Durability.** The sequencer appends a batch to the [`Journal`] and commits it (the group
//!   commit) before pushing it to the state machine: a command is applied, and so answered,
//!   only once durable by the policy.
//! - **Threads.** Three (sequencer, state machine, egress), each waiting with the configured
//!   [`WaitStrategy`] (`park` by default: spin, yield, then sleep with a bounded backoff). A
//!   stage that hands work to a parked stage unparks it, so an idle engine answers in
//!   microseconds without burning a core. Clients wait for answers the same way.
//! - **Fused stages** (`threads.stages = "fused"`) run the sequencer, the state machine and
//!   egress as one step behind one lock. Its thread steps it; so does a submitter that is about
//!   to wait for its answers (`threads.combine`, flat combining): a novated connection's reader
//!   or a blocking call steps the pipeline itself when it is free instead of waking the thread,
//!   so a command crosses no thread hand-off at all. Whoever holds the lock steps until the
//!   ingress ring is empty; a submitter that finds it held wakes the thread, so no item waits.
//! - **Barriers.** `state_hash`, `snapshot` and shutdown travel through the rings in order with
//!   the commands, so each is taken at a batch boundary of the state-machine thread.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use novate_core::{
    BatchItem, Command, Event, Item, LookupStage, Nanos, Prepared, Reject, Seq, Sequenced,
    Snapshot, StateMachine,
};
use novate_ring::{mpsc, spsc, WaitStrategy, Waiter};

use crate::config::Config;
use crate::counted::{self, CountedRx, CountedTx};
use crate::durability::{Journal, SnapshotStore};
use crate::views::{self, Publisher, Views};

/// A command from a client, tagged with where its answer goes.
#[derive(Clone, Copy, Debug)]
struct Request {
    cmd: Command,
    sink: u32,
    request_id: u64,
}

#[derive(Clone, Copy, Debug)]
enum Barrier {
    Hash { sink: u32, request_id: u64 },
    Snapshot { sink: u32, request_id: u64 },
    Shutdown,
}

#[derive(Clone, Copy, Debug)]
enum Inbound {
    Cmd(Request),
    Barrier(Barrier),
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    Cmd {
        /// The command, with the hashes of its index keys computed by the sequencer (split
        /// stages) for a batch of more than one command: the state machine's thread, the
        /// busiest, is spared hashing a trade's keys ahead. Not hashed (fused stages, or a
        /// batch of one, which the state machine applies without looking ahead): hashed there
        /// if ever needed.
        p: Prepared,
        sink: u32,
        request_id: u64,
    },
    Barrier(Barrier),
    /// The journal failed: the command was not made durable and is not applied.
    Failed {
        sink: u32,
        request_id: u64,
    },
}

/// What a batch of entries that are not commands would apply: never, since the state machine
/// applies only runs of `Entry::Cmd` (`SmThread::process`); and if it did, a bust of trade 0 is
/// rejected (`InvalidId`) and changes nothing.
const NOT_A_COMMAND: Sequenced =
    Sequenced { seq: 0, ts: 0, cmd: Command::BustTrade { trade_id: 0 } };

/// The state machine applies its runs of commands in place, from the ring's entries, with the
/// hashes the sequencer computed.
impl BatchItem for Entry {
    #[inline]
    fn item(&self) -> Item<'_> {
        match self {
            Entry::Cmd { p, .. } => Item::Prepared(p),
            _ => Item::Plain(&NOT_A_COMMAND),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Out {
    Answer { sink: u32, answer: AnswerRun },
    Event { seq: Seq, event: Event },
    Shutdown,
}

/// What a command (or a barrier) got back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub request_id: u64,
    pub kind: AnswerKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerKind {
    /// Applied as log entry `seq`, stamped `ts`, durable by the policy.
    Ack { seq: Seq, ts: Nanos },
    /// Rejected; changed nothing (it still consumed `seq` in the log).
    Reject { seq: Seq, reason: Reject },
    /// The state hash after log entry `seq`.
    Hash { seq: Seq, hash: u64 },
    /// A snapshot covering the log up to `seq` was handed to the snapshot store.
    Snapshot { seq: Seq },
    /// The journal failed; the command was not applied. The engine refuses further commands.
    Unavailable,
}

/// Answers on their way to a client: `answer`, then `more` acks that follow it, each with the
/// next request id and the next seq and the same `ts`. The state machine joins the acks of
/// consecutive commands of one client (a batch's, typically) into one run, so they cost the
/// egress ring, egress and the client's answer ring one item instead of one each; the client
/// hands them out one by one ([`AnswerRx`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AnswerRun {
    answer: Answer,
    more: u32,
}

impl AnswerRun {
    fn one(request_id: u64, kind: AnswerKind) -> AnswerRun {
        AnswerRun { answer: Answer { request_id, kind }, more: 0 }
    }

    /// Extend this run by the ack of `request_id` at `seq`, stamped `ts`, if it is the next
    /// one; false otherwise.
    #[inline]
    fn join(&mut self, request_id: u64, seq: Seq, ts: Nanos) -> bool {
        let AnswerKind::Ack { seq: first, ts: t } = self.answer.kind else { return false };
        let next = u64::from(self.more) + 1;
        let joins = t == ts
            && first.checked_add(next) == Some(seq)
            && self.answer.request_id.checked_add(next) == Some(request_id)
            && self.more < u32::MAX;
        if joins {
            self.more += 1;
        }
        joins
    }

    /// The answer after this run's first: the next request id and (an ack) the next seq.
    #[inline]
    fn next_answer(a: &Answer) -> Answer {
        let kind = match a.kind {
            AnswerKind::Ack { seq, ts } => AnswerKind::Ack { seq: seq + 1, ts },
            k => k,
        };
        Answer { request_id: a.request_id + 1, kind }
    }
}

/// A client's receiving end of its answer ring, one answer at a time.
struct AnswerRx {
    ring: spsc::Consumer<AnswerRun>,
    /// The next answer of the run being handed out, and how many of it are left (0: take the
    /// next run from the ring).
    next: Answer,
    left: u64,
}

impl AnswerRx {
    fn new(ring: spsc::Consumer<AnswerRun>) -> AnswerRx {
        AnswerRx { ring, next: Answer { request_id: 0, kind: AnswerKind::Unavailable }, left: 0 }
    }

    #[inline]
    fn poll(&mut self) -> Option<Answer> {
        if self.left == 0 {
            let run = self.ring.try_pop()?;
            if run.more == 0 {
                return Some(run.answer);
            }
            (self.next, self.left) = (run.answer, u64::from(run.more) + 1);
        }
        let a = self.next;
        self.left -= 1;
        self.next = AnswerRun::next_answer(&a);
        Some(a)
    }

    /// The next answer and how many answers its run has from it on (see
    /// [`Answers::poll_run`]), all taken.
    #[inline]
    fn poll_run(&mut self) -> Option<(Answer, u64)> {
        if self.left > 0 {
            let run = (self.next, self.left);
            self.left = 0;
            return Some(run);
        }
        let run = self.ring.try_pop()?;
        Some((run.answer, u64::from(run.more) + 1))
    }

    fn ready(&mut self) -> bool {
        self.left > 0 || self.ring.available() > 0
    }
}

/// Why a command was not accepted into the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The ingress ring or the client's window is full (back-pressure): retry later.
    Busy,
    /// The engine is shut down (or failed).
    Closed,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Busy => {
                f.write_str("Busy: the engine's ingress ring or this client's window is full")
            }
            SubmitError::Closed => f.write_str("Closed: the engine is shut down"),
        }
    }
}

impl std::error::Error for SubmitError {}

/// Errors of a blocking call (submit and wait for the answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    Rejected(Reject),
    Submit(SubmitError),
    /// No answer within the timeout (the command may still be applied).
    Timeout,
    /// The journal failed.
    Unavailable,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Rejected(r) => write!(f, "rejected: {r}"),
            CallError::Submit(e) => write!(f, "{e}"),
            CallError::Timeout => f.write_str("no answer within the timeout"),
            CallError::Unavailable => {
                f.write_str("the journal failed; the engine accepts no more commands")
            }
        }
    }
}

impl std::error::Error for CallError {}

/// Which events a subscription wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Bit `k` set: event kind `k` (see [`event_kind`]); 0 = every kind.
    pub kinds: u16,
    /// Only events that name this account (events without an account are excluded).
    pub account: Option<u64>,
}

/// A stable number per event kind, in the order of `novate_core::Event` (0..=10); the wire's
/// template id is `101 + kind`.
pub fn event_kind(e: &Event) -> u8 {
    match e {
        Event::InstrumentUpdated { .. } => 0,
        Event::AccountUpdated { .. } => 1,
        Event::CollateralChanged { .. } => 2,
        Event::OrderAccepted { .. } => 3,
        Event::TradeCleared { .. } => 4,
        Event::TradeBusted { .. } => 5,
        Event::PositionChanged { .. } => 6,
        Event::MarkChanged { .. } => 7,
        Event::VariationMargin { .. } => 8,
        Event::LimitBreach { .. } => 9,
        Event::MarginCall { .. } => 10,
    }
}

/// The account an event names, if any.
pub fn event_account(e: &Event) -> Option<u64> {
    match *e {
        Event::AccountUpdated { account }
        | Event::CollateralChanged { account, .. }
        | Event::OrderAccepted { account, .. }
        | Event::PositionChanged { account, .. }
        | Event::VariationMargin { account, .. }
        | Event::LimitBreach { account, .. }
        | Event::MarginCall { account, .. } => Some(account),
        _ => None,
    }
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        (self.kinds == 0 || self.kinds & (1 << event_kind(e)) != 0)
            && self.account.is_none_or(|a| event_account(e) == Some(a))
    }
}

enum Control {
    Sink {
        id: u32,
        producer: spsc::Producer<AnswerRun>,
        waker: Thread,
        taking: Option<Arc<AtomicBool>>,
    },
    Unsink {
        id: u32,
    },
    Subscribe {
        filter: EventFilter,
        producer: spsc::Producer<(Seq, Event)>,
        state: Arc<SubState>,
    },
}

/// Shared by a subscription's two ends.
struct SubState {
    /// Set by the reader: stop delivering.
    closed: AtomicBool,
    /// Set through a [`SubStop`]: deliver no event of a command submitted after it was set
    /// (what is buffered stays to be read; the reader still sees the subscription open).
    stopped: AtomicBool,
    /// Set by egress: the buffer was full and events were not delivered from then on.
    overflowed: AtomicBool,
    waker: Mutex<Option<Thread>>,
}

impl SubState {
    fn new() -> Arc<SubState> {
        Arc::new(SubState {
            closed: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            waker: Mutex::new(None),
        })
    }
}

/// Counters for metrics and the demo (Relaxed: statistics).
#[derive(Default, Debug)]
pub struct Metrics {
    pub commands: AtomicU64,
    pub rejects: AtomicU64,
    pub batches: AtomicU64,
    pub events: AtomicU64,
    pub journal_commits: AtomicU64,
    pub snapshots: AtomicU64,
    pub subscription_overflows: AtomicU64,
    /// Pipeline steps taken by combining submitters instead of the pipeline thread.
    pub combined_steps: AtomicU64,
    /// Records of the state digest hashed while the state machine had no command to apply
    /// (`StateMachine::settle_some`), so that a hash query or snapshot has fewer left.
    pub idle_settled: AtomicU64,
    /// Jobs the lookup stage has taken (`threads.lookup_stage`): batches applied with its
    /// lookups (a batch of more than `novate_core::JOB_MAX` commands is several).
    pub lookup_jobs: AtomicU64,
}

/// Add `n` to a counter that one stage writes (the stage's thread, or whoever holds the fused
/// pipeline's lock: the lock orders successive holders). A load and a store instead of a
/// locked read-modify-write, which costs ~20 cycles on every command's path. Relaxed:
/// statistics, read by anyone at any time.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

struct Shared {
    ingress: mpsc::Producer<Inbound>,
    /// Set by `shutdown`; submitters check it inside the `submitting` bracket.
    closed: AtomicBool,
    failed: AtomicBool,
    submitting: AtomicUsize,
    /// Control messages to egress (counted: a step looks into the channel only when there is
    /// something in it).
    control: Mutex<CountedTx<Control>>,
    next_sink: AtomicU64,
    subscribers: AtomicUsize,
    sequencer: OnceLock<Thread>,
    egress: OnceLock<Thread>,
    metrics: Metrics,
    wait: WaitStrategy,
    inflight_max: usize,
    subscriber_buffer: usize,
    /// Fused stages: the whole pipeline, stepped by its thread or by a combining submitter.
    fused: Option<Mutex<FusedStage>>,
    /// `threads.combine`: submitters that wait for their answers step the fused pipeline.
    combine: bool,
}

/// What a combining call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combined {
    /// Did not step: not combining, the pipeline held by another thread.
    No,
    /// Stepped until the ingress ring was empty: everything submitted before is answered.
    Drained,
    /// Stepped, but stopped at the bound (or at shutdown) with work maybe left: the pipeline
    /// thread must be woken.
    Partial,
}

/// Steps a combining submitter takes at most before it hands the rest to the pipeline thread
/// (bounds how long one submitter works for others).
const COMBINE_STEPS_MAX: usize = 8;

impl Shared {
    fn wake(t: &OnceLock<Thread>) {
        if let Some(t) = t.get() {
            t.unpark();
        }
    }

    fn push_control(&self, c: Control) {
        if let Ok(tx) = self.control.lock() {
            let _ = tx.send(c);
        }
        Shared::wake(&self.egress);
    }

    /// Fused stages with `threads.combine`: if the pipeline is free, step it on this thread
    /// until the ingress ring is empty (flat combining: the submitter does the work the
    /// pipeline thread would be woken for). Returns false if the pipeline thread must be woken
    /// instead: split stages, the pipeline busy (its holder or thread will see our items: a
    /// holder steps until it finds the ring empty, and a failed `try_lock` wakes the thread),
    /// more than [`COMBINE_STEPS_MAX`] steps of work, or shutdown.
    fn combine(&self) -> bool {
        self.combine_steps(COMBINE_STEPS_MAX, None) == Combined::Drained
    }

    /// Fused stages with `threads.combine` (and a journal whose commit does not wait).
    fn combines(&self) -> bool {
        self.fused.is_some() && self.combine
    }

    /// [`Shared::combine`] with at most `steps` steps. `taking`: the flag of the caller's sink,
    /// set while it steps: egress does not wake that sink's waker for the answers it routes
    /// meanwhile, because the caller takes them itself right after (or wakes the waker).
    fn combine_steps(&self, steps: usize, taking: Option<&AtomicBool>) -> Combined {
        let Some(core) = self.fused.as_ref().filter(|_| self.combine) else { return Combined::No };
        let Ok(mut stage) = core.try_lock() else { return Combined::No };
        // Relaxed: only this thread (holding the pipeline) reads it while it is set.
        taking.inspect(|t| t.store(true, Ordering::Relaxed));
        let mut r = Combined::Partial;
        for _ in 0..steps {
            match stage.step(self) {
                Step::Worked => {
                    bump(&self.metrics.combined_steps, 1);
                    if stage.drained() {
                        r = Combined::Drained;
                        break;
                    }
                }
                Step::Idle => {
                    r = Combined::Drained;
                    break;
                }
                // The pipeline thread finishes the shutdown.
                Step::Done => break,
            }
        }
        taking.inspect(|t| t.store(false, Ordering::Relaxed));
        r
    }

    /// After a run of submissions: step the pipeline here ([`Shared::combine`]) or wake its
    /// thread.
    fn flush_combining(&self, taking: Option<&AtomicBool>) {
        if self.combine_steps(COMBINE_STEPS_MAX, taking) != Combined::Drained {
            Shared::wake(&self.sequencer);
        }
    }

    /// Push into the ingress ring unless closed; the bracket lets `shutdown` wait for pushes
    /// that passed the check before it set `closed`.
    /// [`Shared::try_ingress`] for `n` items made by `make`, in order: how many went in.
    fn try_ingress_many(
        &self,
        n: usize,
        make: impl FnMut(usize) -> Inbound,
    ) -> Result<usize, SubmitError> {
        // SeqCst: as in `try_ingress`.
        self.submitting.fetch_add(1, Ordering::SeqCst);
        let r = if self.closed.load(Ordering::SeqCst) || self.failed.load(Ordering::Relaxed) {
            Err(SubmitError::Closed)
        } else {
            Ok(self.ingress.try_push_many(n, make))
        };
        self.submitting.fetch_sub(1, Ordering::SeqCst);
        r
    }

    fn try_ingress(&self, item: Inbound) -> Result<(), SubmitError> {
        // SeqCst (with the SeqCst store of `closed` and load of `submitting` in shutdown): either
        // shutdown sees our increment and waits, or we see `closed`.
        self.submitting.fetch_add(1, Ordering::SeqCst);
        let r = if self.closed.load(Ordering::SeqCst) || self.failed.load(Ordering::Relaxed) {
            Err(SubmitError::Closed)
        } else {
            self.ingress.try_push(item).map_err(|_| SubmitError::Busy)
        };
        self.submitting.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

/// What start-up obtained and recovered, for the log.
#[derive(Clone, Debug, Default)]
pub struct StartReport {
    pub lines: Vec<String>,
    pub recovered_snapshot_seq: Option<Seq>,
    pub replayed: u64,
    pub last_seq: Seq,
}

/// What shutdown did.
#[derive(Clone, Debug, Default)]
pub struct ShutdownReport {
    pub last_seq: Seq,
    pub state_hash: u64,
    pub snapshot_saved: bool,
}

/// A running engine. Dropping it shuts it down (as [`Engine::shutdown`]).
pub struct Engine {
    shared: Arc<Shared>,
    views: Arc<Views>,
    threads: Vec<JoinHandle<()>>,
    final_report: Arc<Mutex<Option<ShutdownReport>>>,
    report: StartReport,
}

/// Wall-clock nanoseconds since the Unix epoch (0 before it): `clock_gettime(CLOCK_REALTIME)`
/// read directly, half the instructions of `SystemTime::now().duration_since(UNIX_EPOCH)`.
fn now_ns() -> Nanos {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec; CLOCK_REALTIME always exists on Linux.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) } != 0 || t.tv_sec < 0 {
        return 0;
    }
    (t.tv_sec as Nanos).wrapping_mul(1_000_000_000).wrapping_add(t.tv_nsec as Nanos)
}

impl Engine {
    /// Recover (newest snapshot + journal replay), then start the three threads.
    pub fn start(
        cfg: &Config,
        mut journal: Box<dyn Journal>,
        mut snapshots: Box<dyn SnapshotStore>,
    ) -> Result<Engine, EngineError> {
        cfg.validate().map_err(|e| EngineError::Config(e.to_string()))?;
        let limits = cfg.limits();
        let wait = cfg.wait_strategy().map_err(|e| EngineError::Config(e.to_string()))?;
        let _ = wait;
        let mut report = StartReport::default();

        // Recovery.
        let mut sm = match snapshots.load_latest().map_err(EngineError::Io)? {
            Some(snap) => {
                report.recovered_snapshot_seq = Some(snap.last_seq);
                StateMachine::restore(limits, &snap)
                    .map_err(|e| EngineError::Recovery(e.to_string()))?
            }
            None => StateMachine::new(limits).map_err(|e| EngineError::Config(e.to_string()))?,
        };
        let from = sm.last_seq() + 1;
        let mut replay_err = None;
        let replayed = journal
            .replay(from, &mut |s: &Sequenced| {
                if replay_err.is_none() && s.seq >= from {
                    // Rejections replay as rejections: same log, same state.
                    let _ = sm.apply(&s.cmd, s.seq, s.ts);
                }
                if s.seq < from {
                    replay_err = Some(s.seq);
                }
            })
            .map_err(EngineError::Io)?;
        report.replayed = replayed;
        let last_seq = sm.last_seq().max(journal.last_seq());
        report.last_seq = last_seq;
        if let Some(s) = report.recovered_snapshot_seq {
            report.lines.push(format!("recovered snapshot at seq {s}"));
        }
        report
            .lines
            .push(format!("replayed {replayed} journal entries; next seq {}", last_seq + 1));
        Engine::launch(cfg, sm, journal, snapshots, report)
    }

    /// Start the threads on a recovered state machine whose last seq is `report.last_seq`.
    pub fn launch(
        cfg: &Config,
        sm: StateMachine,
        journal: Box<dyn Journal>,
        snapshots: Box<dyn SnapshotStore>,
        mut report: StartReport,
    ) -> Result<Engine, EngineError> {
        let limits = cfg.limits();
        let wait = cfg.wait_strategy().map_err(|e| EngineError::Config(e.to_string()))?;
        let last_seq = report.last_seq;
        report.lines.insert(
            0,
            format!("journal: {}; snapshots: {}", journal.describe(), snapshots.describe()),
        );
        report.lines.insert(1, format!("durability policy: {}", cfg.durability.policy.as_str()));
        report.lines.insert(2, format!("wait strategy: {wait}"));

        // The periodic snapshots' first two buffers (the stores recycle them from the third).
        let mut spares = Vec::new();
        if cfg.threads.prefault {
            let t = std::time::Instant::now();
            let (mut done, mut asked) = sm.prefault();
            if cfg.durability.snapshot_every > 0 {
                spares = (0..SNAPSHOT_SPARES).map(|_| Snapshot::with_room(&limits)).collect();
                for (d, a) in spares.iter().map(Snapshot::prefault) {
                    (done, asked) = (done + d, asked + a);
                }
            }
            report.lines.push(format!(
                "memory: {} of {} MiB of state tables{} committed at start-up in {} ms{}",
                done >> 20,
                asked >> 20,
                if spares.is_empty() { "" } else { " and snapshot buffers" },
                t.elapsed().as_millis(),
                if done < asked {
                    " (the kernel refused the rest: MADV_POPULATE_WRITE)"
                } else {
                    ""
                }
            ));
        }
        let (publisher, views) = views::new(limits, sm.position_slots_max());
        let views = Arc::new(views);
        let mut publisher = publisher;
        publisher.publish_all(&sm, &views);

        let e = &cfg.engine;
        let (ingress_tx, ingress_rx) = mpsc::channel::<Inbound>(e.ingress_ring)
            .map_err(|x| EngineError::Config(x.to_string()))?;
        let (apply_tx, apply_rx) =
            spsc::channel::<Entry>(e.apply_ring).map_err(|x| EngineError::Config(x.to_string()))?;
        let (egress_tx, egress_rx) =
            spsc::channel::<Out>(e.egress_ring).map_err(|x| EngineError::Config(x.to_string()))?;
        let (control_tx, control_rx) = counted::channel();
        let fused_stages = cfg.fused().map_err(|e| EngineError::Config(e.to_string()))?;
        let combine = fused_stages && cfg.threads.combine && !journal.commit_waits();
        let final_report = Arc::new(Mutex::new(None));
        // The lookup stage's thread reports where it runs when it starts.
        let (lookups, lookups_report) = if cfg.threads.lookup_stage {
            let (tx, rx) = std_mpsc::channel::<String>();
            let cpu = cfg.threads.lookup_cpu;
            let stage = LookupStage::new(move || {
                let place = match cpu {
                    Some(cpu) => novate_mem::pin_current_thread(cpu).to_string(),
                    None => "not pinned".into(),
                };
                let _ = tx.send(format!("lookup stage: {place}"));
            })
            .map_err(EngineError::Io)?;
            (Some(stage), Some(rx))
        } else {
            (None, None)
        };
        let mut lookups = Some(lookups);
        let mut sm_thread = |sm, publisher, snapshots, fr, spares| SmThread {
            sm,
            publisher,
            views: views.clone(),
            snapshots,
            spares,
            snapshot_every: cfg.durability.snapshot_every,
            since_snapshot: 0,
            batch_max: e.batch_max,
            final_report: fr,
            outs: Vec::with_capacity(e.batch_max * OUTS_PER_COMMAND),
            lookups: lookups.take().flatten(),
        };
        // Split: the sequencer's thread hashes a batch's index keys for the state machine's.
        // Fused, one thread does both: hashing ahead would only move the work and copy it.
        let q = Sequencer::new(journal, last_seq, e.batch_max, !fused_stages);
        // Fused: the whole pipeline is built here and put where submitters can step it; split:
        // its parts go to the three threads below.
        let (fused_stage, parts) = if fused_stages {
            let st = sm_thread(sm, publisher, snapshots, final_report.clone(), spares);
            let down = Inline { st, egress: Egress::new(control_rx) };
            let waiter = Waiter::new(wait);
            let stage = SeqStage { rx: ingress_rx, q, batch_max: e.batch_max, down, waiter };
            (Some(Mutex::new(stage)), None)
        } else {
            (None, Some((ingress_rx, q, sm, publisher, snapshots, control_rx, spares)))
        };
        let shared = Arc::new(Shared {
            ingress: ingress_tx,
            closed: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            submitting: AtomicUsize::new(0),
            control: Mutex::new(control_tx),
            next_sink: AtomicU64::new(1),
            subscribers: AtomicUsize::new(0),
            sequencer: OnceLock::new(),
            egress: OnceLock::new(),
            metrics: Metrics::default(),
            wait,
            inflight_max: e.client_inflight_max,
            subscriber_buffer: e.subscriber_buffer,
            fused: fused_stage,
            combine,
        });
        let placement = Placement::from_config(cfg);
        report.lines.extend(placement.describe_process());
        let sm_thread_slot: Arc<OnceLock<Thread>> = Arc::new(OnceLock::new());

        let mut threads = Vec::new();
        let (tx_report, rx_report) = std_mpsc::channel::<String>();
        report.lines.insert(
            3,
            match (fused_stages, combine) {
                (true, true) => "stages: fused (one thread: sequencer, state machine, egress), \
                                 stepped by waiting submitters when idle (threads.combine)"
                    .to_string(),
                (true, false) => format!(
                    "stages: fused (one thread: sequencer, state machine, egress){}",
                    if cfg.threads.combine {
                        "; not combining: the journal commit waits"
                    } else {
                        ""
                    }
                ),
                _ => "stages: split (sequencer, state machine and egress threads)".into(),
            },
        );
        if let Some((ingress_rx, q, sm, publisher, snapshots, control_rx, spares)) = parts {
            {
                let shared = shared.clone();
                let sm_wake = sm_thread_slot.clone();
                let batch_max = e.batch_max;
                let place = placement.clone();
                let txr = tx_report.clone();
                threads.push(spawn("novate-sequencer", move || {
                    let _ = txr.send(format!("sequencer: {}", place.apply(0)));
                    drop(txr);
                    sequencer(&shared, ingress_rx, apply_tx, q, batch_max, &sm_wake)
                })?);
            }
            {
                let shared = shared.clone();
                let mut st = sm_thread(sm, publisher, snapshots, final_report.clone(), spares);
                let slot = sm_thread_slot.clone();
                let place = placement.clone();
                let txr = tx_report.clone();
                threads.push(spawn("novate-state", move || {
                    let _ = slot.set(thread::current());
                    let _ = txr.send(format!("state machine: {}", place.apply(1)));
                    drop(txr);
                    st.run(&shared, apply_rx, egress_tx)
                })?);
            }
            {
                let shared = shared.clone();
                let place = placement.clone();
                let txr = tx_report;
                threads.push(spawn("novate-egress", move || {
                    let _ = txr.send(format!("egress: {}", place.apply(2)));
                    drop(txr);
                    egress(&shared, egress_rx, control_rx)
                })?);
            }
        } else {
            let shared = shared.clone();
            let slot = sm_thread_slot.clone();
            let place = placement.clone();
            let txr = tx_report;
            drop((apply_tx, apply_rx, egress_tx, egress_rx));
            threads.push(spawn("novate-engine", move || {
                // Every wake-up (submitters, control messages) lands on this thread.
                let _ = shared.sequencer.set(thread::current());
                let _ = shared.egress.set(thread::current());
                let _ = slot.set(thread::current());
                let _ = txr.send(format!("fused pipeline thread: {}", place.apply(0)));
                drop(txr);
                fused(&shared)
            })?);
        }
        for line in rx_report.iter() {
            report.lines.push(line);
        }
        if let Some(rx) = lookups_report {
            report.lines.push(
                rx.recv_timeout(Duration::from_secs(10))
                    .unwrap_or_else(|_| "lookup stage: did not start".into()),
            );
        }
        // Each thread records its handle first thing; wait for them so wake-ups are never lost.
        let deadline = Instant::now() + Duration::from_secs(10);
        while (shared.sequencer.get().is_none()
            || shared.egress.get().is_none()
            || sm_thread_slot.get().is_none())
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_micros(50));
        }
        Ok(Engine { shared, views, threads, final_report, report })
    }

    /// Start with the storage `cfg` asks for: the real journal and snapshots under `data_dir`,
    /// or memory only when `data_dir` is empty.
    pub fn open(cfg: &Config) -> Result<Engine, EngineError> {
        cfg.validate().map_err(|e| EngineError::Config(e.to_string()))?;
        match cfg.data_dir() {
            None => Engine::start(
                cfg,
                Box::new(crate::MemJournal::discard()),
                Box::new(crate::MemSnapshots::new()),
            ),
            Some(dir) => {
                let r = crate::store::recover_dir(cfg, &dir)?;
                Engine::launch(cfg, r.sm, r.journal, r.snapshots, r.report)
            }
        }
    }

    /// A new client: its own answer ring and window.
    pub fn client(&self) -> Client {
        Client::new(self.shared.clone())
    }

    /// A client split in two for a connection: the reader thread submits, `waker` (the writer
    /// thread) receives the answers. The window is shared.
    pub fn split_client(&self, waker: Thread) -> (Submitter, Answers) {
        self.client_maker().split(waker)
    }

    /// Something that makes split clients from any thread (for connection threads).
    pub fn client_maker(&self) -> ClientMaker {
        ClientMaker { shared: self.shared.clone() }
    }

    /// The published query views.
    pub fn views(&self) -> &Arc<Views> {
        &self.views
    }
}

/// Makes split clients of an engine; cheap to clone, `Send`.
#[derive(Clone)]
pub struct ClientMaker {
    shared: Arc<Shared>,
}

fn subscribe(shared: &Arc<Shared>, filter: EventFilter) -> Subscription {
    let (producer, consumer) =
        spsc::channel(shared.subscriber_buffer).expect("validated power of two");
    let state = SubState::new();
    shared.subscribers.fetch_add(1, Ordering::SeqCst);
    shared.push_control(Control::Subscribe { filter, producer, state: state.clone() });
    Subscription { consumer, state, shared: shared.clone(), done: false }
}

impl ClientMaker {
    /// See [`Engine::subscribe`] (for connection threads).
    pub fn subscribe(&self, filter: EventFilter) -> Subscription {
        subscribe(&self.shared, filter)
    }

    /// Subscriptions made and not yet dropped by egress (an ended one counts until egress
    /// next looks at it).
    pub fn live_subscriptions(&self) -> usize {
        self.shared.subscribers.load(Ordering::SeqCst)
    }

    /// See [`Engine::split_client`].
    pub fn split(&self, waker: Thread) -> (Submitter, Answers) {
        let shared = self.shared.clone();
        let (producer, consumer) =
            spsc::channel(shared.inflight_max).expect("validated power of two");
        let sink = shared.next_sink.fetch_add(1, Ordering::Relaxed) as u32;
        let taking = Arc::new(AtomicBool::new(false));
        shared.push_control(Control::Sink {
            id: sink,
            producer,
            waker,
            taking: Some(taking.clone()),
        });
        let inflight = Arc::new(AtomicUsize::new(0));
        let sub = Submitter { shared: shared.clone(), sink, inflight: inflight.clone(), taking };
        let answers = AnswerRx::new(consumer);
        (sub, Answers { shared, sink, answers, inflight })
    }
}

impl Engine {
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub fn start_report(&self) -> &StartReport {
        &self.report
    }

    /// Subscribe to events from now on.
    pub fn subscribe(&self, filter: EventFilter) -> Subscription {
        subscribe(&self.shared, filter)
    }

    /// Graceful shutdown: refuse new commands, let every accepted one be applied and answered,
    /// commit the journal, take a final snapshot, stop the threads.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop();
        self.final_report.lock().ok().and_then(|r| r.clone()).unwrap_or_default()
    }

    fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.shared.closed.store(true, Ordering::SeqCst);
        while self.shared.submitting.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
        let mut w = Waiter::new(WaitStrategy::Park);
        while self.shared.ingress.try_push(Inbound::Barrier(Barrier::Shutdown)).is_err() {
            Shared::wake(&self.shared.sequencer);
            w.wait();
        }
        Shared::wake(&self.shared.sequencer);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, EngineError> {
    thread::Builder::new().name(name.into()).spawn(f).map_err(EngineError::Io)
}

/// Why the engine could not start.
#[derive(Debug)]
pub enum EngineError {
    Config(String),
    Io(io::Error),
    Recovery(String),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Config(e) => write!(f, "{e}"),
            EngineError::Io(e) => write!(f, "i/o: {e}"),
            EngineError::Recovery(e) => write!(f, "recovery: {e}"),
        }
    }
}

impl std::error::Error for EngineError {}

/// Pinning, SCHED_FIFO and memory locking as configured; each thread reports what it got.
#[derive(Clone)]
struct Placement {
    pin: Vec<usize>,
    fifo: i32,
    huge: crate::config::HugePages,
}

impl Placement {
    fn from_config(cfg: &Config) -> Placement {
        Placement {
            pin: cfg.threads.pin.clone(),
            fifo: cfg.threads.fifo_priority,
            huge: cfg.threads.huge_pages,
        }
    }

    fn describe_process(&self) -> Vec<String> {
        let mut lines = Vec::new();
        match self.huge {
            crate::config::HugePages::Normal => {
                lines.push("memory: normal pages (threads.huge_pages = \"normal\")".into())
            }
            crate::config::HugePages::Thp => lines.push(format!(
                "memory: transparent huge pages advised for state tables (THP mode: {})",
                novate_mem::huge::thp_mode().unwrap_or_else(|| "unknown".into())
            )),
            crate::config::HugePages::Locked => {
                // SAFETY: mlockall has no memory-safety preconditions; failure is reported.
                let r = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
                lines.push(if r == 0 {
                    "memory: mlockall obtained (every page locked in RAM)".into()
                } else {
                    format!("memory: mlockall refused: {}", io::Error::last_os_error())
                });
            }
        }
        lines
    }

    /// Apply to the calling thread (stage 0, 1, 2); returns what was obtained.
    fn apply(&self, stage: usize) -> String {
        let mut parts = Vec::new();
        match self.pin.get(stage) {
            Some(&cpu) => parts.push(novate_mem::pin_current_thread(cpu).to_string()),
            None => parts.push("not pinned".to_string()),
        }
        if self.fifo > 0 {
            parts.push(novate_mem::set_fifo(self.fifo).to_string());
        }
        parts.join(", ")
    }
}

// ---- sequencer -----------------------------------------------------------------------------

/// The sequencer stage: numbers commands, journals them (durability by policy) and turns the
/// inbound items into entries for the state machine.
struct Sequencer {
    journal: Box<dyn Journal>,
    seq: Seq,
    batch: Vec<Sequenced>,
    request_ids: Vec<u64>,
    entries: Vec<Entry>,
    shutting_down: bool,
    /// Compute the index hashes of a batch of more than one command (`Entry::Cmd::p`).
    hash_ahead: bool,
}

impl Sequencer {
    fn new(journal: Box<dyn Journal>, seq: Seq, batch_max: usize, hash_ahead: bool) -> Sequencer {
        Sequencer {
            journal,
            seq,
            batch: Vec::with_capacity(batch_max),
            request_ids: Vec::with_capacity(batch_max),
            entries: Vec::with_capacity(batch_max),
            shutting_down: false,
            hash_ahead,
        }
    }

    /// Read up to `batch_max` inbound items and leave their entries in `self.entries`, the
    /// commands journaled and durable by the policy. Returns how many items were read.
    fn step(
        &mut self,
        shared: &Shared,
        rx: &mut mpsc::Consumer<Inbound>,
        batch_max: usize,
    ) -> usize {
        let Some(first) = rx.try_pop() else { return 0 };
        // One timestamp per batch, read once there is one.
        let ts = now_ns();
        self.batch.clear();
        self.request_ids.clear();
        self.entries.clear();
        self.take(first, ts);
        let read = 1 + rx.read(|x| self.take(x, ts), batch_max.saturating_sub(1));
        if self.hash_ahead && self.entries.len() > 1 {
            for en in self.entries.iter_mut() {
                if let Entry::Cmd { p, .. } = en {
                    p.hash();
                }
            }
        }
        if !self.batch.is_empty() {
            let durable = self
                .journal
                .append_with_requests(&self.batch, &self.request_ids)
                .and_then(|()| self.journal.commit());
            bump(&shared.metrics.journal_commits, 1);
            if let Err(e) = durable {
                eprintln!("novate: journal failed, refusing further commands: {e}");
                shared.failed.store(true, Ordering::SeqCst);
                for en in self.entries.iter_mut() {
                    if let Entry::Cmd { sink, request_id, .. } = *en {
                        *en = Entry::Failed { sink, request_id };
                    }
                }
                // Forget the seqs that were not made durable.
                self.seq -= self.batch.len() as Seq;
            }
        }
        read
    }

    /// Sequence one inbound item into this step's batch and entries.
    #[inline]
    fn take(&mut self, x: Inbound, ts: Nanos) {
        match x {
            Inbound::Cmd(r) => {
                self.seq += 1;
                let s = Sequenced { seq: self.seq, ts, cmd: r.cmd };
                self.batch.push(s);
                self.request_ids.push(r.request_id);
                let p = Prepared::new(s);
                self.entries.push(Entry::Cmd { p, sink: r.sink, request_id: r.request_id });
            }
            Inbound::Barrier(Barrier::Shutdown) => self.shutting_down = true,
            Inbound::Barrier(b) => self.entries.push(Entry::Barrier(b)),
        }
    }

    /// Every command accepted before shutdown is in the journal: flush it.
    fn finish(&mut self) {
        let _ = self.journal.commit();
    }
}

/// Where the sequencer's entries go: the state machine's ring (split stages), or the state
/// machine and egress themselves on the same thread (fused).
trait Downstream {
    /// Before each step.
    fn tick(&mut self) {}
    /// Hand over a step's entries (the last call hands over the shutdown barrier).
    fn hand(&mut self, shared: &Shared, entries: &[Entry], waiter: &mut Waiter);
    /// After the shutdown barrier was handed over.
    fn finish(&mut self) {}
}

/// What one step of the sequencer stage did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Read and handed over some entries.
    Worked,
    /// Nothing to read.
    Idle,
    /// The shutdown barrier was read and everything before it handed over: call `finish`.
    Done,
}

/// The sequencer stage and what it hands to: stepped by its thread, or (fused stages) by
/// whichever thread holds it (see [`Shared::combine`]).
struct SeqStage<D: Downstream> {
    rx: mpsc::Consumer<Inbound>,
    q: Sequencer,
    batch_max: usize,
    down: D,
    /// For a downstream that waits for room.
    waiter: Waiter,
}

impl<D: Downstream> SeqStage<D> {
    /// After a `Worked` step: nothing more is published in the ingress ring (and no shutdown is
    /// pending), so the next step would be `Idle`; the caller need not take it to find out.
    fn drained(&self) -> bool {
        !self.rx.has_next() && !self.q.shutting_down
    }

    fn step(&mut self, shared: &Shared) -> Step {
        self.down.tick();
        if self.q.step(shared, &mut self.rx, self.batch_max) == 0 {
            return if self.q.shutting_down { Step::Done } else { Step::Idle };
        }
        self.down.hand(shared, &self.q.entries, &mut self.waiter);
        Step::Worked
    }

    /// Flush the journal and hand over the shutdown barrier.
    fn finish(&mut self, shared: &Shared) {
        self.q.finish();
        self.down.hand(shared, &[Entry::Barrier(Barrier::Shutdown)], &mut self.waiter);
        self.down.finish();
    }
}

/// A stage thread's loop: step until `Done`, waiting with the configured strategy when idle.
fn run_steps(shared: &Shared, mut step: impl FnMut() -> Step) {
    let mut waiter = Waiter::new(shared.wait);
    loop {
        match step() {
            Step::Worked => waiter.reset(),
            // Every submitter wakes this thread after pushing (or steps the stage itself).
            Step::Idle => waiter.idle(),
            Step::Done => return,
        }
    }
}

/// Split stages: entries go through the SPSC ring to the state-machine thread.
struct ToRing<'a> {
    tx: spsc::Producer<Entry>,
    sm: &'a OnceLock<Thread>,
}

impl Downstream for ToRing<'_> {
    fn hand(&mut self, _: &Shared, entries: &[Entry], waiter: &mut Waiter) {
        push_all(&mut self.tx, entries, waiter, self.sm);
    }
}

fn sequencer(
    shared: &Shared,
    rx: mpsc::Consumer<Inbound>,
    tx: spsc::Producer<Entry>,
    q: Sequencer,
    batch_max: usize,
    sm: &OnceLock<Thread>,
) {
    let _ = shared.sequencer.set(thread::current());
    let waiter = Waiter::new(shared.wait);
    let mut stage = SeqStage { rx, q, batch_max, down: ToRing { tx, sm }, waiter };
    run_steps(shared, || stage.step(shared));
    stage.finish(shared);
}

/// Fused stages: the stepping thread applies the entries and routes the answers itself.
struct Inline {
    st: SmThread,
    egress: Egress,
}

impl Downstream for Inline {
    fn tick(&mut self) {
        self.egress.apply_pending_control();
    }

    fn hand(&mut self, shared: &Shared, entries: &[Entry], _: &mut Waiter) {
        let mut out = EgressTx::Direct { egress: &mut self.egress, shared };
        // Cannot stop early: the shutdown barrier is only handed over last.
        let _ = self.st.process(shared, entries, &mut out);
        out.flush();
    }

    fn finish(&mut self) {
        self.egress.finish();
    }
}

/// The fused pipeline: sequencer, state machine and egress in one stage, behind a lock so that
/// a submitting thread may step it (see [`Shared::combine`]).
type FusedStage = SeqStage<Inline>;

/// `threads.stages = "fused"`: sequencer, state machine and egress on this one thread, the
/// entries and answers handed over by calls instead of rings. A command then crosses two
/// thread hand-offs (client -> this thread -> client) instead of four, and none when its
/// submitter steps the pipeline itself (`threads.combine`).
fn fused(shared: &Shared) {
    let Some(core) = shared.fused.as_ref() else { return };
    // A poisoned lock means a panic inside the pipeline: its state cannot be trusted.
    run_steps(shared, || match core.lock() {
        Ok(mut stage) => match stage.step(shared) {
            // Idle: hash a few of the records the state digest lacks, as the split state-machine
            // thread does (`SmThread::run`); not when a submitter steps the stage (it returns
            // to its caller instead).
            Step::Idle => match settle_idle(&mut stage.down.st.sm, shared) {
                0 => Step::Idle,
                _ => Step::Worked,
            },
            step => step,
        },
        Err(_) => Step::Done,
    });
    match core.lock() {
        Ok(mut stage) => stage.finish(shared),
        Err(_) => shared.failed.store(true, Ordering::SeqCst),
    }
}

/// Push every item, waiting for room (the downstream stage always makes progress).
fn push_all<T: Copy>(
    tx: &mut spsc::Producer<T>,
    items: &[T],
    waiter: &mut Waiter,
    wake: &OnceLock<Thread>,
) {
    let mut done = 0;
    while done < items.len() {
        let n = tx.push_slice(&items[done..]);
        done += n;
        Shared::wake(wake);
        if done < items.len() {
            waiter.wait();
        }
    }
    waiter.reset();
}

// ---- state machine -------------------------------------------------------------------------

/// Room reserved per command of a batch for its answer and events (a trade's answer and three
/// to seven events); a run with more (a mark moving many holders) grows the buffer once.
const OUTS_PER_COMMAND: usize = 8;

/// Snapshot buffers committed at start-up with `threads.prefault`: a store recycles the buffer
/// of the snapshot before the latest, so from the third snapshot on the buffers are reused.
const SNAPSHOT_SPARES: usize = 2;
/// Records of the state digest an idle state-machine thread hashes before it looks for
/// commands again (`StateMachine::settle_some`): ~16 x 30 ns at most on a book past the caches.
const IDLE_SETTLE: usize = 16;

/// Hash up to `IDLE_SETTLE` of the records the state digest lacks, for a state-machine stage
/// with no command to apply, and count them (`Metrics::idle_settled`); how many.
fn settle_idle(sm: &mut StateMachine, shared: &Shared) -> usize {
    let n = sm.settle_some(IDLE_SETTLE);
    if n > 0 {
        bump(&shared.metrics.idle_settled, n as u64);
    }
    n
}

struct SmThread {
    sm: StateMachine,
    publisher: Publisher,
    views: Arc<Views>,
    snapshots: Box<dyn SnapshotStore>,
    /// Buffers for the next snapshots, committed at start-up (`threads.prefault`), used
    /// before any the store hands back.
    spares: Vec<Snapshot>,
    snapshot_every: u64,
    since_snapshot: u64,
    batch_max: usize,
    final_report: Arc<Mutex<Option<ShutdownReport>>>,
    /// The run's answers and events, held until its views are published.
    outs: Vec<Out>,
    /// The lookup stage (`threads.lookup_stage`), which makes each run's lookups ahead.
    lookups: Option<LookupStage>,
}

/// Where the state machine's answers and events go: the egress thread's ring (waiting for
/// room), or, fused, straight to the egress stage on the same thread.
// One value per stage, made once and never moved in the loop: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum EgressTx<'a> {
    Ring { tx: spsc::Producer<Out>, waiter: Waiter, wake: &'a OnceLock<Thread> },
    Direct { egress: &'a mut Egress, shared: &'a Shared },
}

impl EgressTx<'_> {
    #[inline]
    fn push(&mut self, mut item: Out) {
        match self {
            EgressTx::Ring { tx, waiter, wake } => loop {
                match tx.try_push(item) {
                    Ok(()) => return,
                    Err(novate_ring::Full(back)) => {
                        item = back;
                        Shared::wake(wake);
                        waiter.wait();
                    }
                }
            },
            EgressTx::Direct { egress, shared } => {
                egress.route(shared, item);
            }
        }
    }

    /// The batch is out: wake whoever delivers it.
    fn flush(&mut self) {
        match self {
            EgressTx::Ring { wake, .. } => Shared::wake(wake),
            EgressTx::Direct { egress, shared } => egress.wake(shared),
        }
    }
}

impl SmThread {
    fn run(&mut self, shared: &Shared, mut rx: spsc::Consumer<Entry>, tx: spsc::Producer<Out>) {
        let mut waiter = Waiter::new(shared.wait);
        let mut out = EgressTx::Ring { tx, waiter: Waiter::new(shared.wait), wake: &shared.egress };
        loop {
            // The batch is applied where it lies in the ring (two slices where it wraps).
            let (n, stop) = rx.read_in_place(self.batch_max, |a, b| {
                self.process(shared, a, &mut out) || self.process(shared, b, &mut out)
            });
            if n == 0 {
                // Idle: hash a few of the records the state digest lacks, so that a later hash
                // query or snapshot has less to do (a command that arrives meanwhile waits for
                // at most IDLE_SETTLE records, ~0.5 us on a large book).
                if settle_idle(&mut self.sm, shared) == IDLE_SETTLE {
                    waiter.reset(); // more may be left
                    continue;
                }
                // The sequencer wakes this thread after each hand-over.
                waiter.idle();
                continue;
            }
            waiter.reset();
            out.flush();
            if stop {
                return;
            }
        }
    }

    /// Apply a batch of entries; true once the shutdown barrier has been handled (and
    /// `Out::Shutdown` sent).
    fn process(&mut self, shared: &Shared, entries: &[Entry], out: &mut EgressTx<'_>) -> bool {
        let mut i = 0;
        while i < entries.len() {
            // A run of commands goes through apply_batch (in place); barriers sit between runs.
            let start = i;
            while let Some(Entry::Cmd { .. }) = entries.get(i) {
                i += 1;
            }
            if i > start {
                self.apply_run(shared, &entries[start..i], out);
            }
            match entries.get(i) {
                Some(Entry::Barrier(b)) => {
                    if self.barrier(shared, *b, out) {
                        out.push(Out::Shutdown);
                        return true;
                    }
                    i += 1;
                }
                Some(Entry::Failed { sink, request_id }) => {
                    out.push(Out::Answer {
                        sink: *sink,
                        answer: AnswerRun::one(*request_id, AnswerKind::Unavailable),
                    });
                    i += 1;
                }
                _ => {}
            }
        }
        false
    }

    /// Apply a run of `Entry::Cmd`.
    fn apply_run(&mut self, shared: &Shared, cmds: &[Entry], out: &mut EgressTx<'_>) {
        let with_events = shared.subscribers.load(Ordering::Relaxed) > 0;
        let publisher = &mut self.publisher;
        let outs = &mut self.outs;
        let mut rejects = 0u64;
        let mut events = 0u64;
        let on_result = |i: usize, r: Result<&[Event], Reject>, sm: &StateMachine| {
            let Entry::Cmd { p, sink, request_id } = cmds[i] else { return };
            let s = *p.sequenced();
            let kind = match r {
                Ok(evs) => {
                    publisher.note(sm, &s.cmd, evs);
                    if with_events {
                        outs.extend(evs.iter().map(|e| Out::Event { seq: s.seq, event: *e }));
                    }
                    events += evs.len() as u64;
                    // Right after the ack of the client's previous command: one run.
                    if let Some(Out::Answer { sink: to, answer: run }) = outs.last_mut() {
                        if *to == sink && run.join(request_id, s.seq, s.ts) {
                            return;
                        }
                    }
                    AnswerKind::Ack { seq: s.seq, ts: s.ts }
                }
                Err(reason) => {
                    rejects += 1;
                    AnswerKind::Reject { seq: s.seq, reason }
                }
            };
            outs.push(Out::Answer { sink, answer: AnswerRun::one(request_id, kind) });
        };
        match &mut self.lookups {
            Some(stage) => {
                self.sm.apply_batch_on(stage, cmds, on_result);
                shared.metrics.lookup_jobs.store(stage.jobs(), Ordering::Relaxed);
            }
            None => self.sm.apply_batch_with(cmds, on_result),
        }
        let last = cmds.last().map_or(0, |e| e.item().sequenced().seq);
        self.publisher.publish(&self.sm, &self.views, last);
        // Only now do the answers and events go out: whoever sees one (a client spinning on
        // its ring sees it the moment egress routes it) finds the views of its batch published.
        for o in self.outs.drain(..) {
            out.push(o);
        }
        let m = &shared.metrics;
        bump(&m.commands, cmds.len() as u64);
        bump(&m.rejects, rejects);
        bump(&m.events, events);
        bump(&m.batches, 1);
        self.since_snapshot += cmds.len() as u64;
        if self.snapshot_every > 0 && self.since_snapshot >= self.snapshot_every {
            self.take_snapshot(shared, false);
        }
    }

    fn take_snapshot(&mut self, shared: &Shared, wait: bool) -> bool {
        self.since_snapshot = 0;
        // The pause: a sequential copy into reused buffers, which also hashes the records
        // changed since the hash was last read (the rest of the hash is kept as commands apply).
        let mut snap = self.spares.pop().unwrap_or_else(|| self.snapshots.spare());
        let hash = self.sm.export_hashed(&mut snap);
        let seq = snap.last_seq;
        match self.snapshots.save(snap, hash, wait) {
            Ok(()) => {
                bump(&shared.metrics.snapshots, 1);
                true
            }
            Err(e) => {
                eprintln!("novate: snapshot at seq {seq} failed: {e}");
                false
            }
        }
    }

    /// Returns true on shutdown.
    fn barrier(&mut self, shared: &Shared, b: Barrier, out: &mut EgressTx<'_>) -> bool {
        match b {
            Barrier::Hash { sink, request_id } => {
                let kind = AnswerKind::Hash { seq: self.sm.last_seq(), hash: self.sm.state_hash() };
                out.push(Out::Answer { sink, answer: AnswerRun::one(request_id, kind) });
                false
            }
            Barrier::Snapshot { sink, request_id } => {
                let kind = if self.take_snapshot(shared, true) {
                    AnswerKind::Snapshot { seq: self.sm.last_seq() }
                } else {
                    AnswerKind::Unavailable
                };
                out.push(Out::Answer { sink, answer: AnswerRun::one(request_id, kind) });
                false
            }
            Barrier::Shutdown => {
                let saved = self.since_snapshot > 0 && self.take_snapshot(shared, true);
                if let Err(e) = self.snapshots.flush() {
                    eprintln!("novate: finishing snapshot writes failed: {e}");
                }
                let report = ShutdownReport {
                    last_seq: self.sm.last_seq(),
                    state_hash: self.sm.state_hash(),
                    snapshot_saved: saved,
                };
                if let Ok(mut r) = self.final_report.lock() {
                    *r = Some(report);
                }
                true
            }
        }
    }
}

// ---- egress --------------------------------------------------------------------------------

struct EgressSink {
    producer: spsc::Producer<AnswerRun>,
    waker: Thread,
    /// Set while the sink's submitter steps the pipeline (see [`Shared::combine_steps`]): it
    /// takes the answers itself, so the waker is not woken for them.
    taking: Option<Arc<AtomicBool>>,
    touched: bool,
}

struct EgressSub {
    filter: EventFilter,
    producer: spsc::Producer<(Seq, Event)>,
    state: Arc<SubState>,
    touched: bool,
}

/// Hashes a sink id with one multiply (Fibonacci hashing) instead of SipHash: the ids are
/// sequential numbers the engine hands out, so no one can choose them to collide, and the
/// lookup runs for every answer.
#[derive(Default)]
struct SinkIdHasher(u64);

impl std::hash::Hasher for SinkIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The egress stage's state: client answer rings and subscriptions. Run by its own thread
/// (`egress`) or, with `threads.stages = "fused"`, by the one pipeline thread.
struct Egress {
    control: CountedRx<Control>,
    sinks: HashMap<u32, EgressSink, BuildHasherDefault<SinkIdHasher>>,
    subs: Vec<EgressSub>,
    touched: Vec<u32>,
}

impl Egress {
    fn new(control: CountedRx<Control>) -> Egress {
        Egress { control, sinks: HashMap::default(), subs: Vec::new(), touched: Vec::new() }
    }

    /// Register the sinks and subscriptions that clients asked for (each step's look: one
    /// atomic load when there are none).
    fn apply_pending_control(&mut self) {
        while let Some(c) = self.control.try_take() {
            self.register(c);
        }
    }

    /// [`apply_pending_control`](Self::apply_pending_control), also taking a message whose
    /// count is not in yet (for an answer to a sink not seen: its registration was sent first).
    fn apply_control(&mut self) {
        while let Some(c) = self.control.take_now() {
            self.register(c);
        }
    }

    fn register(&mut self, c: Control) {
        match c {
            Control::Sink { id, producer, waker, taking } => {
                self.sinks.insert(id, EgressSink { producer, waker, taking, touched: false });
            }
            Control::Unsink { id } => {
                self.sinks.remove(&id);
            }
            Control::Subscribe { filter, producer, state } => {
                self.subs.push(EgressSub { filter, producer, state, touched: false })
            }
        }
    }

    /// Deliver one item; returns true for `Out::Shutdown`.
    fn route(&mut self, shared: &Shared, o: Out) -> bool {
        match o {
            Out::Answer { sink, answer } => {
                if !self.deliver(sink, answer) {
                    // Registered before its first command was submitted: it is in the queue.
                    self.apply_control();
                    // Not there either: the client is gone (dropped with commands in flight).
                    self.deliver(sink, answer);
                }
                false
            }
            Out::Event { seq, event } => {
                // A subscription made before this event's command was submitted has its
                // registration in the control queue by now (and is counted in `subscribers`),
                // but this stage may have looked at the queue before it got there: take it now,
                // so that it misses none of the events it was promised. Relaxed: the command's
                // hand-off (Release/Acquire through the rings) orders the count's increment
                // before this load.
                if shared.subscribers.load(Ordering::Relaxed) != self.subs.len() {
                    self.apply_control();
                }
                for sub in self.subs.iter_mut() {
                    let st = &sub.state;
                    // Relaxed (`stopped`): set before the commands it must cut off were
                    // submitted, so ordered before this load by their hand-off, as above.
                    if st.overflowed.load(Ordering::Relaxed)
                        || st.stopped.load(Ordering::Relaxed)
                        || !sub.filter.matches(&event)
                    {
                        continue;
                    }
                    if sub.producer.try_push((seq, event)).is_err() {
                        // Release: the reader's Acquire load sees every event pushed before.
                        sub.state.overflowed.store(true, Ordering::Release);
                        bump(&shared.metrics.subscription_overflows, 1);
                    }
                    sub.touched = true;
                }
                false
            }
            Out::Shutdown => true,
        }
    }

    /// Push answers into their client's ring; false if the sink is not registered (here).
    #[inline]
    fn deliver(&mut self, sink: u32, answer: AnswerRun) -> bool {
        let Some(s) = self.sinks.get_mut(&sink) else { return false };
        // Cannot be full: the client's window is the ring's capacity.
        let pushed = s.producer.try_push(answer).is_ok();
        debug_assert!(pushed, "a client's answer ring is sized for its window");
        if !s.touched {
            s.touched = true;
            self.touched.push(sink);
        }
        true
    }

    /// Wake the clients and subscribers that got something; drop closed subscriptions.
    fn wake(&mut self, shared: &Shared) {
        for id in self.touched.drain(..) {
            if let Some(s) = self.sinks.get_mut(&id) {
                s.touched = false;
                if !s.taking.as_ref().is_some_and(|t| t.load(Ordering::Relaxed)) {
                    s.waker.unpark();
                }
            }
        }
        self.subs.retain_mut(|sub| {
            if sub.touched {
                sub.touched = false;
                if let Ok(w) = sub.state.waker.lock() {
                    if let Some(t) = w.as_ref() {
                        t.unpark();
                    }
                }
            }
            let keep = !sub.state.closed.load(Ordering::Relaxed);
            if !keep {
                shared.subscribers.fetch_sub(1, Ordering::SeqCst);
            }
            keep
        });
    }

    /// At shutdown: wake everyone waiting so they observe it.
    fn finish(&mut self) {
        for s in self.sinks.values() {
            s.waker.unpark();
        }
        for sub in &self.subs {
            sub.state.closed.store(true, Ordering::Release);
            if let Ok(w) = sub.state.waker.lock() {
                if let Some(t) = w.as_ref() {
                    t.unpark();
                }
            }
        }
    }
}

fn egress(shared: &Shared, mut rx: spsc::Consumer<Out>, control: CountedRx<Control>) {
    let _ = shared.egress.set(thread::current());
    let mut waiter = Waiter::new(shared.wait);
    let mut e = Egress::new(control);
    let mut stop = false;
    while !stop {
        e.apply_pending_control();
        let n = rx.read(|o| stop |= e.route(shared, o), 4096);
        e.wake(shared);
        if n == 0 && !stop {
            // The state machine wakes this thread after each batch, a client after a control.
            waiter.idle();
        } else {
            waiter.reset();
        }
    }
    e.finish();
}

// ---- clients -------------------------------------------------------------------------------

/// A handle that submits commands and receives their answers. One per thread of use; waits
/// wake fastest on the thread that created it.
pub struct Client {
    shared: Arc<Shared>,
    sink: u32,
    answers: AnswerRx,
    inflight: usize,
    /// Answers still to come to calls that timed out: a later call drops them as they arrive.
    abandoned: usize,
    next_request: u64,
    waiter: Waiter,
    /// Default timeout of blocking calls.
    pub timeout: Duration,
}

impl Client {
    fn new(shared: Arc<Shared>) -> Client {
        let (producer, answers) =
            spsc::channel(shared.inflight_max).expect("validated power of two");
        let sink = shared.next_sink.fetch_add(1, Ordering::Relaxed) as u32;
        let waker = thread::current();
        shared.push_control(Control::Sink { id: sink, producer, waker, taking: None });
        let waiter = Waiter::new(shared.wait);
        Client {
            shared,
            sink,
            answers: AnswerRx::new(answers),
            inflight: 0,
            abandoned: 0,
            next_request: 1,
            waiter,
            timeout: Duration::from_secs(30),
        }
    }

    /// Commands submitted and not yet answered.
    pub fn inflight(&self) -> usize {
        self.inflight
    }

    /// The window: most commands in flight.
    pub fn window(&self) -> usize {
        self.shared.inflight_max
    }

    /// Submit without waiting: `Busy` if the window or the ingress ring is full.
    pub fn try_submit(&mut self, request_id: u64, cmd: Command) -> Result<(), SubmitError> {
        if self.inflight >= self.shared.inflight_max {
            return Err(SubmitError::Busy);
        }
        self.shared.try_ingress(Inbound::Cmd(Request { cmd, sink: self.sink, request_id }))?;
        self.inflight += 1;
        Ok(())
    }

    /// Wake the sequencer (after a run of `try_submit`s; `submit` does it itself).
    pub fn flush(&self) {
        Shared::wake(&self.shared.sequencer);
    }

    /// Submit, waiting up to `timeout` for room; answers that arrive meanwhile go to `on_answer`.
    pub fn submit_with(
        &mut self,
        request_id: u64,
        cmd: Command,
        timeout: Duration,
        on_answer: &mut dyn FnMut(Answer),
    ) -> Result<(), SubmitError> {
        let mut deadline = None;
        loop {
            match self.try_submit(request_id, cmd) {
                Ok(()) => {
                    self.flush();
                    self.waiter.reset();
                    return Ok(());
                }
                Err(SubmitError::Busy) => {
                    let d = *deadline.get_or_insert_with(|| Instant::now() + timeout);
                    if let Some(a) = self.poll_answer() {
                        on_answer(a);
                        continue;
                    }
                    if Instant::now() >= d {
                        return Err(SubmitError::Busy);
                    }
                    // About to wait for room: do the pipeline's work here if it is free.
                    self.combine_or_wait();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next answer, if one is ready.
    pub fn poll_answer(&mut self) -> Option<Answer> {
        let a = self.answers.poll()?;
        self.inflight -= 1;
        Some(a)
    }

    /// The next answer, waiting up to `timeout`.
    pub fn wait_answer(&mut self, timeout: Duration) -> Option<Answer> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = self.poll_answer() {
                self.waiter.reset();
                return Some(a);
            }
            if self.inflight == 0 || Instant::now() >= deadline {
                return None;
            }
            self.combine_or_wait();
        }
    }

    /// Before waiting for answers: step a combining pipeline here if it is free
    /// ([`Shared::combine`]); wait only if that brought no answer. If another thread holds
    /// it, wake the pipeline thread in case the holder missed our work. Without combining,
    /// just wait (the submit woke the sequencer).
    fn combine_or_wait(&mut self) {
        if self.shared.combines() {
            if self.shared.combine() {
                if self.answers.ready() {
                    return;
                }
            } else {
                self.flush();
            }
        }
        self.waiter.wait();
    }

    fn fresh_request(&mut self) -> u64 {
        let r = self.next_request;
        self.next_request += 1;
        r | 1 << 63
    }

    /// Submit one command and wait for its answer (other answers must not be pending).
    pub fn call(&mut self, cmd: Command) -> Result<(Seq, Nanos), CallError> {
        let kind =
            self.call_inbound(|rid, sink| Inbound::Cmd(Request { cmd, sink, request_id: rid }))?;
        match kind {
            AnswerKind::Ack { seq, ts } => Ok((seq, ts)),
            AnswerKind::Reject { reason, .. } => Err(CallError::Rejected(reason)),
            _ => Err(CallError::Unavailable),
        }
    }

    fn call_inbound(
        &mut self,
        make: impl Fn(u64, u32) -> Inbound,
    ) -> Result<AnswerKind, CallError> {
        assert_eq!(
            self.inflight, self.abandoned,
            "Client::call with answers pending: use submit/poll_answer"
        );
        let rid = self.fresh_request();
        let item = make(rid, self.sink);
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.shared.try_ingress(item) {
                Ok(()) => break,
                Err(SubmitError::Busy) if Instant::now() < deadline => {
                    self.flush();
                    self.waiter.wait();
                }
                Err(e) => return Err(CallError::Submit(e)),
            }
        }
        self.inflight += 1;
        self.waiter.reset();
        if !self.shared.combines() {
            self.flush();
        }
        // With combining, wait_answer steps the pipeline here (or wakes its thread).
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait_answer(left) {
                Some(a) if a.request_id == rid => return Ok(a.kind),
                // The late answer of an earlier call that timed out (ids only grow).
                Some(a) if self.abandoned > 0 && a.request_id < rid => self.abandoned -= 1,
                Some(_) => return Err(CallError::Unavailable),
                None => {
                    self.abandoned += 1;
                    return Err(CallError::Timeout);
                }
            }
        }
    }

    /// The state hash at a batch boundary, with the seq it covers.
    pub fn state_hash(&mut self) -> Result<(Seq, u64), CallError> {
        match self
            .call_inbound(|rid, sink| Inbound::Barrier(Barrier::Hash { sink, request_id: rid }))?
        {
            AnswerKind::Hash { seq, hash } => Ok((seq, hash)),
            _ => Err(CallError::Unavailable),
        }
    }

    /// Take a snapshot now; returns the seq it covers.
    pub fn snapshot(&mut self) -> Result<Seq, CallError> {
        match self.call_inbound(|rid, sink| {
            Inbound::Barrier(Barrier::Snapshot { sink, request_id: rid })
        })? {
            AnswerKind::Snapshot { seq } => Ok(seq),
            _ => Err(CallError::Unavailable),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.push_control(Control::Unsink { id: self.sink });
    }
}

/// The submitting half of a split client (see [`Engine::split_client`]).
pub struct Submitter {
    shared: Arc<Shared>,
    sink: u32,
    inflight: Arc<AtomicUsize>,
    /// Set while this submitter steps the pipeline (it then takes its answers itself).
    taking: Arc<AtomicBool>,
}

impl Submitter {
    /// Commands submitted and not yet taken from the [`Answers`].
    pub fn inflight(&self) -> usize {
        // Acquire: pairs with the Release decrement of the answer reader.
        self.inflight.load(Ordering::Acquire)
    }

    fn reserve(&self) -> Result<(), SubmitError> {
        // Relaxed increment: the window check needs no ordering with the data path.
        if self.inflight.fetch_add(1, Ordering::Relaxed) >= self.shared.inflight_max {
            self.inflight.fetch_sub(1, Ordering::Relaxed);
            return Err(SubmitError::Busy);
        }
        Ok(())
    }

    fn push(&self, item: Inbound) -> Result<(), SubmitError> {
        self.reserve()?;
        match self.shared.try_ingress(item) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.inflight.fetch_sub(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Submit without waiting: `Busy` if the window or the ingress ring is full.
    pub fn try_submit(&self, request_id: u64, cmd: Command) -> Result<(), SubmitError> {
        self.push(Inbound::Cmd(Request { cmd, sink: self.sink, request_id }))
    }

    /// Submit the first of `cmds` that fit in the window and the ingress ring, in order, with
    /// request ids `first_request_id`, `first_request_id + 1`, ...; returns how many (`Ok(0)`:
    /// no room now, as `Busy` from [`Submitter::try_submit`]). One reservation of the window
    /// and one claim of the ring for all of them, where `try_submit` pays both per command.
    pub fn try_submit_many(
        &self,
        first_request_id: u64,
        cmds: &[Command],
    ) -> Result<usize, SubmitError> {
        let max = self.shared.inflight_max;
        // At most a window's worth: the reservation below briefly counts all it asks for.
        let want = cmds.len().min(max);
        // Relaxed, as in `reserve`: the window check needs no ordering with the data path.
        let before = self.inflight.fetch_add(want, Ordering::Relaxed);
        let room = max.saturating_sub(before).min(want);
        if room < want {
            self.inflight.fetch_sub(want - room, Ordering::Relaxed);
        }
        if room == 0 {
            return Ok(0);
        }
        let sink = self.sink;
        let pushed = self.shared.try_ingress_many(room, |i| {
            Inbound::Cmd(Request { cmd: cmds[i], sink, request_id: first_request_id + i as u64 })
        });
        let n = *pushed.as_ref().unwrap_or(&0);
        if n < room {
            self.inflight.fetch_sub(room - n, Ordering::Relaxed);
        }
        pushed
    }

    /// Ask for the state hash (answered as `AnswerKind::Hash` in order with the commands).
    pub fn try_state_hash(&self, request_id: u64) -> Result<(), SubmitError> {
        self.push(Inbound::Barrier(Barrier::Hash { sink: self.sink, request_id }))
    }

    /// Ask for a snapshot (answered as `AnswerKind::Snapshot` in order with the commands).
    pub fn try_snapshot(&self, request_id: u64) -> Result<(), SubmitError> {
        self.push(Inbound::Barrier(Barrier::Snapshot { sink: self.sink, request_id }))
    }

    /// Wake the sequencer after a run of submissions (never does the pipeline's work here).
    pub fn flush(&self) {
        Shared::wake(&self.shared.sequencer);
    }

    /// After a run of submissions whose answers this side waits for: with fused stages and
    /// `threads.combine`, step the pipeline on this thread when it is free (see
    /// `threads.combine` in docs/CONFIG.md); otherwise wake the sequencer. After any of the
    /// combining calls, the caller must take the answers now on the [`Answers`] or wake the
    /// thread that does: egress did not wake it for answers routed during the steps.
    pub fn flush_combining(&self) {
        self.shared.flush_combining(Some(&self.taking));
    }

    /// Step the pipeline on this thread if it is fused, `threads.combine` is on and the
    /// pipeline is free: two steps at most (at most 2 x `engine.batch_max` commands done here,
    /// e.g. on a JavaScript thread), one for the work just submitted, one that finds the
    /// ingress ring empty. Unless `Drained`, the pipeline thread must be woken
    /// ([`Submitter::flush`]).
    pub fn combine_short(&self) -> Combined {
        self.shared.combine_steps(2, Some(&self.taking))
    }

    /// True if [`Submitter::combine_short`] can step the pipeline (fused stages, `threads.combine`,
    /// a journal whose commit does not wait).
    pub fn combines(&self) -> bool {
        self.shared.combines()
    }

    /// True once the engine refuses commands.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Relaxed) || self.shared.failed.load(Ordering::Relaxed)
    }

    pub fn wait_strategy(&self) -> WaitStrategy {
        self.shared.wait
    }
}

/// The answer half of a split client. Dropping it unregisters the client.
pub struct Answers {
    shared: Arc<Shared>,
    sink: u32,
    answers: AnswerRx,
    inflight: Arc<AtomicUsize>,
}

impl Answers {
    #[inline]
    pub fn poll(&mut self) -> Option<Answer> {
        let a = self.answers.poll()?;
        // Release: the slot is free before the submitter may reuse the window.
        self.inflight.fetch_sub(1, Ordering::Release);
        Some(a)
    }

    /// The next answers at once: `(a, n)` is `a` and, for `n > 1`, the acks of the `n - 1`
    /// commands after it (request ids and seqs one higher each, the same ts), in order. What
    /// `n` calls of [`Answers::poll`] would return, without the `n` steps.
    #[inline]
    pub fn poll_run(&mut self) -> Option<(Answer, u64)> {
        let (a, n) = self.answers.poll_run()?;
        // Release: as in `poll`.
        self.inflight.fetch_sub(n as usize, Ordering::Release);
        Some((a, n))
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        self.shared.push_control(Control::Unsink { id: self.sink });
    }
}

/// A subscription's reading end. Dropping it unsubscribes.
pub struct Subscription {
    consumer: spsc::Consumer<(Seq, Event)>,
    state: Arc<SubState>,
    shared: Arc<Shared>,
    done: bool,
}

/// What one poll of a subscription found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubStatus {
    /// Events delivered (maybe 0); more may come.
    Open,
    /// The buffer overflowed: every event before the cut was delivered, none after.
    Overflowed,
    /// The engine shut down (every event before it was delivered).
    Closed,
}

impl Subscription {
    /// Hand up to `max` buffered events to `f`; then say whether more may come.
    pub fn poll(&mut self, max: usize, mut f: impl FnMut(Seq, &Event)) -> (usize, SubStatus) {
        // Acquire (both flags): every event pushed before the flag was set is visible below.
        let overflowed = self.state.overflowed.load(Ordering::Acquire);
        let closed = self.state.closed.load(Ordering::Acquire);
        let n = self.consumer.read(|(s, e)| f(s, &e), max);
        if n == max {
            return (n, SubStatus::Open);
        }
        let status = if overflowed {
            SubStatus::Overflowed
        } else if closed && self.consumer.available() == 0 {
            SubStatus::Closed
        } else {
            SubStatus::Open
        };
        (n, status)
    }

    /// Events waiting to be read.
    pub fn available(&mut self) -> usize {
        self.consumer.available()
    }

    /// The subscription overflowed or the engine ended it: `poll` says which once the events
    /// before are read. Egress unparks the waker when either happens.
    pub fn ended(&self) -> bool {
        // Acquire: as in `poll`.
        self.state.overflowed.load(Ordering::Acquire) || self.state.closed.load(Ordering::Acquire)
    }

    /// Let the egress thread unpark `t` when events arrive (and when the subscription ends).
    pub fn set_waker(&self, t: Option<Thread>) {
        if let Ok(mut w) = self.state.waker.lock() {
            *w = t;
        }
    }

    /// Encode up to `max` events as SBE messages (wire templates 101..=111) into `buf`.
    pub fn poll_encoded(&mut self, max: usize, buf: &mut Vec<u8>) -> (usize, SubStatus) {
        let mut tmp = [0u8; 128];
        self.poll(max, |seq, e| {
            if let Ok(n) = novate_wire::convert::encode_event(&mut tmp, seq, e) {
                buf.extend_from_slice(&tmp[..n]);
            }
        })
    }

    /// A handle that stops this subscription's delivery from another place (a connection's
    /// reader, on `Unsubscribe`, while its writer still owns the subscription).
    pub fn stopper(&self) -> SubStop {
        SubStop(self.state.clone())
    }

    pub fn close(&mut self) {
        self.done = true;
        self.state.closed.store(true, Ordering::Release);
        Shared::wake(&self.shared.egress);
    }
}

/// Stops a subscription's delivery ([`Subscription::stopper`]).
#[derive(Clone)]
pub struct SubStop(Arc<SubState>);

impl SubStop {
    /// From now on, no event of a command submitted after this call reaches the subscription;
    /// the events already buffered stay to be read.
    pub fn stop(&self) {
        // Relaxed: every command this must cut off is submitted after it on this thread, and
        // that submission's Release (then egress's Acquire) orders this store before egress
        // looks at the flag.
        self.0.stopped.store(true, Ordering::Relaxed);
    }

    /// The subscription was dropped (or the engine shut down): nothing left to stop.
    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durability::{MemJournal, MemSnapshots};

    /// A subscription registered with `egress` (through its control queue, counted as
    /// `subscribe` counts it) and its reading end.
    fn subscribe_into(
        shared: &Shared,
        control: &CountedTx<Control>,
    ) -> (spsc::Consumer<(Seq, Event)>, SubStop) {
        let (producer, consumer) = spsc::channel(8).unwrap();
        let state = SubState::new();
        shared.subscribers.fetch_add(1, Ordering::SeqCst);
        let stop = SubStop(state.clone());
        control
            .send(Control::Subscribe { filter: EventFilter::default(), producer, state })
            .unwrap();
        (consumer, stop)
    }

    fn event(seq: Seq) -> Out {
        Out::Event { seq, event: Event::TradeCleared { trade_id: seq } }
    }

    fn read(c: &mut spsc::Consumer<(Seq, Event)>) -> Vec<Seq> {
        let mut seqs = Vec::new();
        c.read(|(s, _)| seqs.push(s), 8);
        seqs
    }

    fn small_config() -> Config {
        let mut c = Config::default();
        c.engine.accounts_max = 8;
        c.engine.instruments_max = 4;
        c.engine.positions_max = 16;
        c.engine.trades_max = 64;
        c
    }

    fn start_in_memory(c: &Config) -> Engine {
        Engine::start(c, Box::new(MemJournal::new()), Box::new(MemSnapshots::new())).unwrap()
    }

    #[test]
    fn acks_join_into_runs_only_when_next_in_request_id_seq_and_ts() {
        let ack = |seq| AnswerKind::Ack { seq, ts: 7 };
        let mut run = AnswerRun::one(10, ack(100));
        assert!(run.join(11, 101, 7));
        assert!(run.join(12, 102, 7));
        assert!(!run.join(14, 103, 7), "a request id skipped");
        assert!(!run.join(13, 104, 7), "a seq skipped (another client's command between)");
        assert!(!run.join(13, 103, 8), "another sequencer batch");
        assert_eq!(run.more, 2);
        let mut reject = AnswerRun::one(1, AnswerKind::Reject { seq: 5, reason: Reject::Overflow });
        assert!(!reject.join(2, 6, 7), "only acks join");
        let mut edge = AnswerRun::one(u64::MAX, ack(3));
        assert!(!edge.join(0, 4, 7), "request ids do not wrap");
        // Handed out one by one: every request id with its own seq, then nothing.
        let (mut producer, ring) = spsc::channel(4).unwrap();
        let mut rx = AnswerRx::new(ring);
        producer.try_push(run).unwrap();
        producer.try_push(reject).unwrap();
        let got: Vec<Answer> = std::iter::from_fn(|| rx.poll()).collect();
        let want = [
            Answer { request_id: 10, kind: ack(100) },
            Answer { request_id: 11, kind: ack(101) },
            Answer { request_id: 12, kind: ack(102) },
            reject.answer,
        ];
        assert_eq!(got, want);
        assert!(!rx.ready());
    }

    /// A client's window of commands, answered in order with consecutive seqs: every answer
    /// arrives once, matched to its request id, whether the state machine joined them or not.
    #[test]
    fn a_full_window_is_answered_one_by_one_in_order() {
        let mut c = small_config();
        c.engine.client_inflight_max = 64;
        let engine = start_in_memory(&c);
        let mut cl = engine.client();
        let spec = novate_core::AccountSpec {
            id: 1,
            max_position: 0,
            max_notional: 0,
            max_loss: 0,
            suspended: false,
        };
        // Accepted commands (acks, which join) with rejected ones (which do not) among them.
        for rid in 0..64u64 {
            let cmd = if rid % 9 == 4 {
                Command::AdjustCollateral { account: 99, amount: 1 }
            } else {
                Command::UpsertAccount(spec)
            };
            cl.try_submit(1_000 + rid, cmd).unwrap();
        }
        cl.flush();
        let mut last_seq = 0;
        for rid in 0..64u64 {
            let a = cl.wait_answer(Duration::from_secs(10)).expect("an answer per command");
            assert_eq!(a.request_id, 1_000 + rid);
            let seq = match a.kind {
                AnswerKind::Ack { seq, .. } => {
                    assert!(rid % 9 != 4, "{a:?}");
                    seq
                }
                AnswerKind::Reject { seq, reason } => {
                    assert_eq!((rid % 9, reason), (4, Reject::UnknownAccount));
                    seq
                }
                k => panic!("{k:?}"),
            };
            assert_eq!(seq, last_seq + 1);
            last_seq = seq;
        }
        assert_eq!(cl.inflight(), 0);
        assert!(cl.poll_answer().is_none());
        drop(cl);
        engine.shutdown();
    }

    /// Egress looks at its control queue once per step; a subscription registered just after
    /// that look, and a command submitted after it, must not lose the command's events to the
    /// step already under way. Then a stopped subscription gets no later event but keeps what
    /// it had.
    #[test]
    fn egress_takes_a_late_registration_before_an_event_and_honours_a_stop() {
        let engine = start_in_memory(&small_config());
        let shared = engine.shared.clone();
        let (tx, rx) = counted::channel();
        let mut e = Egress::new(rx);
        e.apply_pending_control(); // the step's look: nothing registered yet
        let (mut sub, stop) = subscribe_into(&shared, &tx);
        assert!(!e.route(&shared, event(1)));
        assert_eq!(read(&mut sub), vec![1], "the event of a command after the subscription");
        assert!(!e.route(&shared, event(2)));
        stop.stop();
        assert!(!e.route(&shared, event(3)));
        assert_eq!(read(&mut sub), vec![2], "delivered before the stop, none after");
        assert!(!stop.is_closed());
        shared.subscribers.fetch_sub(1, Ordering::SeqCst);
        engine.shutdown();
    }
}
