//! A client for callers that must never block, such as a JavaScript event loop (the napi
//! binding): [`AsyncClient::submit`] hands work to the pipeline and returns at once; a
//! completion thread waits for the answers and hands them, in batches, to a callback.
//!
//! - **Tickets.** Each piece of work carries the caller's ticket and completes exactly once with
//!   an [`Outcome`]: one command, a batch of commands (one outcome summing every answer), the
//!   state hash or a snapshot barrier.
//! - **Order.** Work is submitted in the order of `submit` calls and the pipeline answers one
//!   client in order, so outcomes are delivered in log order (ascending seq).
//! - **Back-pressure without blocking.** When the client's window or the ingress ring is full,
//!   `submit` queues the work (in order, behind anything queued before it) and the completion
//!   thread submits it as answers free the window. The queue is the caller's own work: it is
//!   bounded by what the caller submitted, and a batch is queued as one entry.
//! - **Answered at once.** [`AsyncClient::submit_all_now`]: an idle client of a fused pipeline
//!   with `threads.combine` steps it on the caller's thread and gets back what completed, with
//!   no hand-off to the pipeline or the completion thread (the SDK's awaited single calls).
//! - **Batch vectors are kept.** [`batch_vec`] hands out the vector a finished batch left
//!   behind (one spare per process, of up to [`SPARE_COMMANDS_MAX`] commands), so a caller that
//!   submits batch after batch writes into memory that is already mapped.
//! - **Shutdown.** After the engine shut down, [`AsyncClient::finish`] delivers every answer the
//!   engine gave and completes whatever it did not answer with `Closed`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use novate_core::{Command, Reject, Seq};
use novate_ring::Waiter;

use crate::pipeline::{
    Answer, AnswerKind, Answers, CallError, ClientMaker, Combined, SubmitError, Submitter,
};

/// The largest batch vector kept as the spare (2^21 commands: 128 MiB). A larger one is freed.
pub const SPARE_COMMANDS_MAX: usize = 1 << 21;

/// The spare: the largest vector of a finished batch, empty, its memory mapped and written.
static SPARE: Mutex<Option<Vec<Command>>> = Mutex::new(None);

/// An empty vector with room for at least `capacity` commands, for a [`Work::Batch`]: the spare
/// a finished batch left if it is large enough, else a new allocation advised for huge pages.
///
/// Why: fresh memory costs page faults (zeroing every page) and, on VMs that hand freed memory
/// back to the host (this project's Firecracker VMs), host faults too. Filling a fresh 64 MiB
/// vector with a million decoded trades took 5-190 ms here, the spare ~4-6 ms.
pub fn batch_vec(capacity: usize) -> Vec<Command> {
    let spare = SPARE.lock().unwrap_or_else(|p| p.into_inner()).take();
    match spare {
        Some(mut v) if v.capacity() >= capacity => {
            v.clear();
            v
        }
        small => {
            // Too small (or none): put it back for a smaller batch, and map a new one.
            if let Some(v) = small {
                recycle(v);
            }
            let v: Vec<Command> = Vec::with_capacity(capacity);
            novate_core::map::advise_huge_pages(
                v.as_ptr().cast(),
                v.capacity() * std::mem::size_of::<Command>(),
            );
            v
        }
    }
}

/// Keep `v` as the spare if it is larger than the one kept and not over the bound.
fn recycle(mut v: Vec<Command>) {
    if v.capacity() == 0 || v.capacity() > SPARE_COMMANDS_MAX {
        return;
    }
    v.clear();
    let mut spare = SPARE.lock().unwrap_or_else(|p| p.into_inner());
    if spare.as_ref().is_none_or(|s| s.capacity() < v.capacity()) {
        *spare = Some(v);
    }
}

/// The caller's name for a piece of work.
pub type Ticket = u64;

/// What can be submitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// One command: completes with `Ack`, `Rejected` or `Failed`.
    Command(Command),
    /// Many commands, answered together: completes with `Batch` (or `Failed(Closed)` if the
    /// engine closed before all of them were submitted).
    Batch(Vec<Command>),
    /// The state hash after every command submitted before it.
    Hash,
    /// A snapshot covering every command submitted before it.
    Snapshot,
}

/// How a batch fared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub accepted: u32,
    pub rejected: u32,
    /// Highest seq among the answers (0: none).
    pub last_seq: Seq,
    /// (index in the batch, reason), in batch order.
    pub rejects: Vec<(u32, Reject)>,
    /// Commands the journal failed (answered `Unavailable`; counted in `rejected`).
    pub unavailable: u32,
}

/// How a piece of work completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ack {
        seq: Seq,
    },
    Rejected {
        seq: Seq,
        reason: Reject,
    },
    Batch(BatchOutcome),
    Hash {
        seq: Seq,
        hash: u64,
    },
    Snapshot {
        seq: Seq,
    },
    /// `Submit(Closed)`: the engine closed first; `Unavailable`: the journal failed.
    Failed(CallError),
}

/// Receives completions on the completion thread, in log order.
pub type Deliver = Box<dyn FnMut(Vec<(Ticket, Outcome)>) + Send>;

struct Job {
    ticket: Ticket,
    work: Work,
    /// Commands of a `Batch` already submitted.
    next: usize,
}

/// Work with at least one item in the pipeline.
struct Flight {
    ticket: Ticket,
    /// Request id of its first item; its items have consecutive ids.
    first: u64,
    /// Items submitted so far.
    submitted: usize,
    answered: usize,
    /// All items submitted (or the rest refused): complete once `answered == submitted`.
    sealed: bool,
    batch: Option<BatchOutcome>,
    /// Outcome of a single item, or the reason a batch stopped early.
    single: Option<Outcome>,
}

impl Flight {
    fn outcome(self) -> Outcome {
        match (self.batch, self.single) {
            (_, Some(o @ Outcome::Failed(_))) => o,
            (Some(b), _) => Outcome::Batch(b),
            (None, Some(o)) => o,
            (None, None) => Outcome::Failed(CallError::Submit(SubmitError::Closed)),
        }
    }
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    flights: VecDeque<Flight>,
    done: Vec<(Ticket, Outcome)>,
    next_request: u64,
    /// The client's answers (taken by the completion thread, or by `submit_all_now`).
    answers: Option<Answers>,
}

impl State {
    /// Route every answer that has arrived to its flight; finished flights go to `done`.
    fn take_answers(&mut self) {
        let Some(mut answers) = self.answers.take() else { return };
        while let Some((mut a, mut n)) = answers.poll_run() {
            // A run of acks may span flights (a batch and the command after it): each takes
            // its part.
            while n > 0 {
                let taken = route(self, a, n);
                // Pop what is finished at once, so the next answer's flight is at the front.
                complete_front(self);
                if taken == 0 {
                    break; // not ours (cannot happen)
                }
                n -= taken;
                a = nth_of_run(a, taken);
            }
        }
        self.answers = Some(answers);
    }

    fn idle(&self) -> bool {
        self.queue.is_empty() && self.flights.is_empty() && self.done.is_empty()
    }
}

struct Inner {
    submitter: Submitter,
    state: Mutex<State>,
    finish: AtomicBool,
    thread: thread::Thread,
}

/// See the module documentation. One per caller thread; `submit` takes `&self` but is meant
/// for one submitting thread (order is the order of `submit` calls).
pub struct AsyncClient {
    inner: Arc<Inner>,
    handle: Option<JoinHandle<()>>,
}

/// Completion thread waits at most this long between checks when nothing wakes it.
const IDLE_PARK: Duration = Duration::from_millis(50);
/// ... and this long while work is queued behind a full ingress ring.
const QUEUED_PARK: Duration = Duration::from_micros(200);

impl AsyncClient {
    /// Start the completion thread (named `novate-completion`) for a new client of the engine
    /// behind `maker`; completions go to `deliver` on that thread.
    pub fn start(maker: &ClientMaker, deliver: Deliver) -> std::io::Result<AsyncClient> {
        let maker = maker.clone();
        let (tx, rx) = std_mpsc::channel();
        let handle = thread::Builder::new().name("novate-completion".into()).spawn(move || {
            let (submitter, answers) = maker.split(thread::current());
            let inner = Arc::new(Inner {
                submitter,
                state: Mutex::new(State {
                    next_request: 1,
                    answers: Some(answers),
                    ..State::default()
                }),
                finish: AtomicBool::new(false),
                thread: thread::current(),
            });
            if tx.send(inner.clone()).is_ok() {
                run(&inner, deliver);
            }
        })?;
        let inner = rx.recv().map_err(|_| std::io::Error::other("completion thread failed"))?;
        Ok(AsyncClient { inner, handle: Some(handle) })
    }

    /// Hand `work` to the pipeline (or queue it behind a full window); never waits.
    pub fn submit(&self, ticket: Ticket, work: Work) {
        self.submit_all(std::iter::once((ticket, work)));
    }

    /// [`AsyncClient::submit`] for many pieces of work, in order, with one lock and one wake-up
    /// of the sequencer.
    pub fn submit_all(&self, work: impl IntoIterator<Item = (Ticket, Work)>) {
        let mut st = lock(&self.inner.state);
        let queued_before = !st.queue.is_empty();
        // From idle to due: wake the completion thread now, so that it is already waiting
        // actively (spin, yield) when the answers come instead of being woken by them.
        let idle_before = st.flights.is_empty();
        st.queue.extend(work.into_iter().map(|(ticket, work)| Job { ticket, work, next: 0 }));
        let wake = if queued_before {
            false // the completion thread is already submitting the queue, in order
        } else {
            pump(&self.inner.submitter, &mut st, true);
            idle_before || !st.done.is_empty() || !st.queue.is_empty()
        };
        drop(st);
        if wake {
            self.inner.thread.unpark();
        }
    }

    /// [`AsyncClient::submit_all`], and if this client had nothing pending and the pipeline is
    /// fused with `threads.combine`, step it here ([`Submitter::combine_short`]: at most
    /// 2 x `engine.batch_max` commands) and return what completed, in log order; the rest is delivered as usual. Call it from
    /// the thread that started the client, and only when every completion delivered before
    /// has been received, so that those returned here overtake none.
    pub fn submit_all_now(
        &self,
        work: impl IntoIterator<Item = (Ticket, Work)>,
    ) -> Vec<(Ticket, Outcome)> {
        let sub = &self.inner.submitter;
        let mut st = lock(&self.inner.state);
        if !(sub.combines() && st.idle()) {
            drop(st);
            self.submit_all(work);
            return Vec::new();
        }
        st.queue.extend(work.into_iter().map(|(ticket, work)| Job { ticket, work, next: 0 }));
        let pushed = pump(sub, &mut st, false);
        // Holding the state lock: the completion thread cannot take these answers in between,
        // so nothing of this client is delivered before what is returned here.
        let combined = if pushed { sub.combine_short() } else { Combined::No };
        if combined != Combined::No {
            st.take_answers();
        }
        let done = std::mem::take(&mut st.done);
        let rest = !st.flights.is_empty() || !st.queue.is_empty();
        drop(st);
        if pushed && combined != Combined::Drained {
            sub.flush(); // work is left in the ingress ring
        }
        if rest {
            self.inner.thread.unpark(); // it takes the rest (stepping or waiting)
        }
        done
    }

    /// Work submitted and not yet completed (queued or in the pipeline).
    pub fn pending(&self) -> usize {
        let st = lock(&self.inner.state);
        st.queue.len() + st.flights.len() + st.done.len()
    }

    /// Call after the engine shut down (every accepted command answered): delivers what is
    /// left, completes the rest with `Closed`, and stops the completion thread.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.inner.finish.store(true, Ordering::Release);
        self.inner.thread.unpark();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for AsyncClient {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A poisoned lock means a panic on the completion thread while routing; the state is still
    // consistent enough to drain (every mutation is a push or pop).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Submit queued work, in order, until the window or the ring is full; wake the sequencer
/// after if `flush`. True if anything was submitted.
fn pump(sub: &Submitter, st: &mut State, flush: bool) -> bool {
    let mut pushed = false;
    while let Some(job) = st.queue.front_mut() {
        let rid = st.next_request;
        // How many items went in (a batch's commands go in as many as fit at once).
        let r = match &job.work {
            Work::Command(c) => sub.try_submit(rid, *c).map(|()| 1),
            Work::Batch(cmds) if job.next < cmds.len() => {
                match sub.try_submit_many(rid, &cmds[job.next..]) {
                    Ok(0) => Err(SubmitError::Busy),
                    r => r,
                }
            }
            Work::Batch(_) => Ok(0), // empty, or fully submitted: seal below
            Work::Hash => sub.try_state_hash(rid).map(|()| 1),
            Work::Snapshot => sub.try_snapshot(rid).map(|()| 1),
        };
        let total = match &job.work {
            Work::Batch(c) => c.len(),
            _ => 1,
        };
        match r {
            Ok(items) => {
                if items > 0 {
                    pushed = true;
                    st.next_request += items as u64;
                    job.next += items;
                }
                let ticket = job.ticket;
                let batch = matches!(job.work, Work::Batch(_));
                let sealed = job.next >= total;
                let started = st.flights.back().is_some_and(|f| f.ticket == ticket && !f.sealed);
                if !started {
                    st.flights.push_back(Flight {
                        ticket,
                        first: rid,
                        submitted: 0,
                        answered: 0,
                        sealed: false,
                        batch: batch.then(BatchOutcome::default),
                        single: None,
                    });
                }
                if let Some(f) = st.flights.back_mut() {
                    f.submitted += items;
                    f.sealed = sealed;
                }
                if sealed {
                    // A finished batch's vector goes to the spare.
                    if let Some(Job { work: Work::Batch(v), .. }) = st.queue.pop_front() {
                        recycle(v);
                    }
                }
            }
            Err(SubmitError::Busy) => break,
            Err(e @ SubmitError::Closed) => {
                let job = st.queue.pop_front().expect("front exists");
                let started = st.flights.back_mut().filter(|f| f.ticket == job.ticket && !f.sealed);
                match started {
                    Some(f) => {
                        f.sealed = true;
                        f.single = Some(Outcome::Failed(CallError::Submit(e)));
                    }
                    None => st.done.push((job.ticket, Outcome::Failed(CallError::Submit(e)))),
                }
            }
        }
    }
    if pushed && flush {
        sub.flush();
    }
    complete_front(st);
    pushed
}

/// Move finished flights (at the front) to `done`.
fn complete_front(st: &mut State) {
    while st.flights.front().is_some_and(|f| f.sealed && f.answered == f.submitted) {
        let f = st.flights.pop_front().expect("front exists");
        let t = f.ticket;
        st.done.push((t, f.outcome()));
    }
}

/// The answer `k` places after `a` in its run (see `Answers::poll_run`).
fn nth_of_run(a: Answer, k: u64) -> Answer {
    let kind = match a.kind {
        AnswerKind::Ack { seq, ts } => AnswerKind::Ack { seq: seq + k, ts },
        other => other,
    };
    Answer { request_id: a.request_id + k, kind }
}

/// Account answer `a` and, if it is an ack, up to `n - 1` acks of its run after it, to `a`'s
/// flight; returns how many were accounted (0: no flight of ours).
fn route(st: &mut State, a: Answer, n: u64) -> u64 {
    // Answers come in submission order and finished flights are popped after each answer, so
    // this is the front flight; the search only guards against a bug elsewhere.
    let Some(f) = st
        .flights
        .iter_mut()
        .take_while(|f| f.first <= a.request_id)
        .find(|f| a.request_id < f.first + f.submitted as u64)
    else {
        return 0; // not ours (cannot happen: this sink only carries our requests)
    };
    let index = (a.request_id - f.first) as u32;
    // Only a batch's acks are taken together; anything else is one answer.
    let k = match (&f.batch, a.kind) {
        (Some(_), AnswerKind::Ack { .. }) => n.min(f.first + f.submitted as u64 - a.request_id),
        _ => 1,
    };
    f.answered += k as usize;
    match f.batch.as_mut() {
        Some(b) => match a.kind {
            AnswerKind::Ack { seq, .. } => {
                b.accepted += k as u32;
                b.last_seq = b.last_seq.max(seq + k - 1);
            }
            AnswerKind::Reject { seq, reason } => {
                b.rejected += 1;
                b.last_seq = b.last_seq.max(seq);
                b.rejects.push((index, reason));
            }
            _ => {
                b.rejected += 1;
                b.unavailable += 1;
            }
        },
        None => {
            f.single = Some(match a.kind {
                AnswerKind::Ack { seq, .. } => Outcome::Ack { seq },
                AnswerKind::Reject { seq, reason } => Outcome::Rejected { seq, reason },
                AnswerKind::Hash { seq, hash } => Outcome::Hash { seq, hash },
                AnswerKind::Snapshot { seq } => Outcome::Snapshot { seq },
                AnswerKind::Unavailable => Outcome::Failed(CallError::Unavailable),
            })
        }
    }
    k
}

fn run(inner: &Inner, mut deliver: Deliver) {
    // While answers are due, wait like the engine's stages (spin, yield, then park with a
    // bounded backoff): a parked thread costs a futex wake-up per answer. Idle, just park.
    let mut waiter = Waiter::new(inner.submitter.wait_strategy());
    loop {
        // Read `finish` before draining: once set, the engine has answered everything it will.
        let finishing = inner.finish.load(Ordering::Acquire);
        let mut st = lock(&inner.state);
        st.take_answers();
        if !st.queue.is_empty() {
            pump(&inner.submitter, &mut st, true);
        }
        if finishing {
            // Nothing more will be answered: fail what is left, in order.
            let closed = Outcome::Failed(CallError::Submit(SubmitError::Closed));
            let flights: Vec<Flight> = st.flights.drain(..).collect();
            for mut f in flights {
                if !(f.sealed && f.answered == f.submitted) {
                    f.single = Some(closed.clone());
                }
                let t = f.ticket;
                st.done.push((t, f.outcome()));
            }
            let queued: Vec<Job> = st.queue.drain(..).collect();
            for j in queued {
                st.done.push((j.ticket, closed.clone()));
            }
        }
        let done = std::mem::take(&mut st.done);
        let queued = !st.queue.is_empty();
        let due = !st.flights.is_empty();
        drop(st);
        let progress = !done.is_empty();
        if progress {
            deliver(done);
        }
        if finishing {
            return;
        }
        if progress {
            waiter.reset();
        } else if due {
            // The pipeline thread works in parallel with this one (throughput), so this thread
            // does not step it: only `submit_all_now` does, for an idle client's latency.
            waiter.wait();
        } else {
            waiter.reset();
            thread::park_timeout(if queued { QUEUED_PARK } else { IDLE_PARK });
        }
    }
}
