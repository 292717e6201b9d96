//! A batch's lookups on another thread: [`LookupStage`], for
//! [`StateMachine::apply_batch_on`](crate::StateMachine::apply_batch_on).
//!
//! `apply_batch` spends about a quarter of a cache-resident trade finding its positions (the
//! hashes, the index probes and their prefetches). A lookup stage makes those lookups on a
//! thread of its own, a few hundred commands ahead of the state machine's thread, which then
//! applies each command with the hints as they come. The hints are the batch's own: only hits
//! are kept, and a hit stays true (an index never moves or removes a key, see
//! [`crate::map`]); a miss is looked up again when the command is applied, as `apply_batch`
//! does. So results and state are exactly `apply_batch`'s, whatever the stage's thread saw and
//! whenever it saw it: it only reads the indices, through their readers' atomic words.
//!
//! A batch goes to the stage in jobs of at most [`JOB_MAX`] commands, and at most two jobs
//! are out at a time (`Pipeline`): while the state machine's thread reads one job's hints,
//! the stage looks the next one up, so a long batch waits for its first hints once, not once
//! a job. The stage's thread publishes each job's hints in order; the state machine's thread
//! waits for the stage to be done with every job before the batch's borrow ends (also when
//! unwinding).

use crate::map::{MapReader, PairKey};
use crate::state::{BatchItem, IndexHashes, Indices, Legs, Sequenced, NONE, PREFETCH_DISTANCE};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Commands a job holds at most: `apply_batch_on` applies a longer batch in jobs of this many
/// (a job's hints: 24 KiB, in one of two halves).
pub const JOB_MAX: usize = 1024;

/// The stage's thread publishes its progress after every this many commands (and at a job's
/// end): each publication is a store the state machine's thread has to fetch from the other
/// core.
const PUBLISH_EVERY: usize = 8;

/// Hints of the next job whose lines the stage takes ahead at least (see `run`; as many as
/// the last job had, if more): more than the state machine's thread waits for at a job's start
/// (`PREFETCH_DISTANCE`).
const PRETOUCH: usize = 64;

/// Job `k`'s slot, counter of published hints and half of the hints (jobs alternate).
fn slot(k: u64) -> usize {
    (k & 1) as usize
}

/// Where job `k`'s hints start in `Shared::hints`.
fn half(k: u64) -> usize {
    slot(k) * JOB_MAX
}

/// Hints ahead of the one read whose line the state machine's thread prefetches.
const HINT_PREFETCH: usize = 32;

/// Polls of an idle stage before its thread parks (~0.4 ms: a poll pauses ~26 ns on the Zen 4
/// this was measured on): back-to-back batches never wait for a wake-up; an idle engine does
/// not keep a core busy.
const SPINS_BEFORE_PARK: u32 = 1 << 14;

/// Polls of a waiting state machine's thread between checks that the stage's thread is alive.
const SPINS_PER_CHECK: u32 = 1 << 20;

/// Readers of a state machine's three indices, for a stage's thread (the state machine keeps
/// one, and lends it to each job).
pub(crate) struct Lookups {
    pub(crate) positions: MapReader<PairKey>,
    pub(crate) accounts: MapReader<u64>,
    pub(crate) instruments: MapReader<u64>,
}

impl Lookups {
    fn indices(&self) -> Indices<'_> {
        Indices {
            positions: &self.positions,
            accounts: &self.accounts,
            instruments: &self.instruments,
        }
    }
}

/// A value on a cache line of its own (two: the adjacent-line prefetcher pairs them), so that
/// one thread's writes do not take the line of another thread's value away.
#[repr(align(128))]
struct Padded<T>(T);

/// A job, on one line: the stage's thread reads it in one transfer. Jobs alternate between
/// two slots (job `k` in `slot(k)`).
struct JobSlot {
    /// The number of the job in the slot (jobs are numbered from 1). The state machine's
    /// thread stores it (Release) after the job's fields; the stage's thread loads it
    /// (Acquire) before reading them.
    number: AtomicU64,
    /// The job's batch (its first item and length), how to read an item of it (a
    /// [`ReadItem`] as a raw pointer), and the lookups it lends (an `Arc<Lookups>` as a raw
    /// pointer: the stage's thread takes it back and drops it).
    batch: AtomicPtr<()>,
    len: AtomicUsize,
    read: AtomicPtr<()>,
    lookups: AtomicPtr<Lookups>,
    /// Whether the stage finds the rows of holders, and the column, too ([`look_ahead`]'s
    /// `ROWS`).
    holder_rows: AtomicBool,
}

impl JobSlot {
    fn new() -> JobSlot {
        JobSlot {
            number: AtomicU64::new(0),
            batch: AtomicPtr::new(std::ptr::null_mut()),
            len: AtomicUsize::new(0),
            read: AtomicPtr::new(std::ptr::null_mut()),
            lookups: AtomicPtr::new(std::ptr::null_mut()),
            holder_rows: AtomicBool::new(false),
        }
    }
}

/// Item `i` of a batch of some [`BatchItem`] type starting at `base`: its command, and the
/// hashes of its index keys (prepared, or computed now).
///
/// # Safety
/// `base` points at a live slice of that type with more than `i` items, readable by this
/// thread.
type ReadItem = unsafe fn(base: *const (), i: usize) -> (*const Sequenced, IndexHashes);

/// [`ReadItem`] for a batch of `T`.
///
/// # Safety
/// As for [`ReadItem`], with `T` the slice's type.
unsafe fn read_item<T: BatchItem>(base: *const (), i: usize) -> (*const Sequenced, IndexHashes) {
    // SAFETY: the caller's (see `ReadItem`).
    let item = unsafe { &*base.cast::<T>().add(i) }.item();
    (item.sequenced(), item.index_hashes())
}

/// Both halves of hints, on cache lines of their own: no other allocation shares a line with
/// them (the state machine's thread would lose it to each write of the stage).
#[repr(align(128))]
struct Hints([[AtomicU64; 3]; 2 * JOB_MAX]);

/// What the two threads share.
struct Shared {
    /// The two jobs out at most (job `k` in `slots[slot(k)]`).
    slots: [Padded<JobSlot>; 2],
    /// Hints published so far of the job in each slot. The stage's thread stores it (Release)
    /// after the hints, and after every read of the items before them and of the items it
    /// looked ahead at; the state machine's thread loads it (Acquire) before reading them.
    /// All of a job's hints published: the stage reads nothing of its batch any more, nor of
    /// its slot.
    ready: [Padded<AtomicUsize>; 2],
    /// The last job whose hints the state machine's thread has read all of (or will not read
    /// any more of): it stores it (Release) after those reads; the stage's thread loads it
    /// (Acquire) before it writes that job's half of the hints ahead of the next job there.
    released: Padded<AtomicU64>,
    /// Set once, when the stage is dropped (Release; loaded with Acquire by the stage's
    /// thread, which then exits).
    stop: AtomicBool,
    /// Hint `i` of job `k`, at `half(k) + i`: [`Legs::to_words`]. Two halves, one job's each:
    /// the stage writes the next job's hints while the state machine's thread reads this
    /// job's.
    hints: Box<Hints>,
}

/// A thread that makes `apply_batch`'s lookups ahead of the state machine's thread (see the
/// module's documentation). Give it to
/// [`StateMachine::apply_batch_on`](crate::StateMachine::apply_batch_on); any state machine
/// may use it, one batch at a time. Dropping it stops and joins its thread.
pub struct LookupStage {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Jobs posted so far (the number of the last).
    jobs: u64,
    /// Overrides `post`'s `holder_rows` ([`force_holder_rows`](Self::force_holder_rows)).
    force_rows: Option<bool>,
    /// Overrides `apply_batch_on`'s head ([`force_head`](Self::force_head)).
    force_head: Option<usize>,
}

impl LookupStage {
    /// Start the stage's thread; it first runs `on_start` (e.g. to pin itself to a CPU of its
    /// own: it spins while batches come, and should not share a core with the state
    /// machine's thread).
    pub fn new(on_start: impl FnOnce() + Send + 'static) -> std::io::Result<LookupStage> {
        let shared = Arc::new(Shared {
            slots: [Padded(JobSlot::new()), Padded(JobSlot::new())],
            ready: [Padded(AtomicUsize::new(0)), Padded(AtomicUsize::new(0))],
            released: Padded(AtomicU64::new(0)),
            stop: AtomicBool::new(false),
            hints: Box::new(Hints(std::array::from_fn(|_| Default::default()))),
        });
        let theirs = shared.clone();
        let thread =
            std::thread::Builder::new().name("novate-lookups".into()).spawn(move || {
                on_start();
                run(&theirs);
            })?;
        Ok(LookupStage {
            shared,
            thread: Some(thread),
            jobs: 0,
            force_rows: None,
            force_head: None,
        })
    }

    /// The lookups of `batch` (at least one command) in `lookups`, job by job: their hints,
    /// for the caller to read in order ([`Pipeline::hint`]); with the rows of holders too if
    /// `holder_rows`. The batch stays borrowed until the pipeline is dropped, which waits for
    /// the stage's thread to be done with it.
    pub(crate) fn pipeline<'a, T: BatchItem + Sync>(
        &'a mut self,
        batch: &'a [T],
        lookups: Arc<Lookups>,
        holder_rows: bool,
    ) -> Pipeline<'a, T> {
        assert!(!batch.is_empty(), "a pipeline of at least one command");
        let holder_rows = self.force_rows.unwrap_or(holder_rows);
        let current = post(self, job_at(batch, 0), &lookups, holder_rows);
        let mut p =
            Pipeline { stage: self, batch, lookups, holder_rows, start: 0, current, next: None };
        if batch.len() > JOB_MAX {
            p.next = Some(post(p.stage, job_at(batch, JOB_MAX), &p.lookups, holder_rows));
        }
        p
    }

    /// Tests and benches: whether the stage finds the rows of holders too, for every job
    /// from now on (`None`: as `apply_batch_on` decides by the book's size, the default).
    #[doc(hidden)]
    pub fn force_holder_rows(&mut self, on: Option<bool>) {
        self.force_rows = on;
    }

    /// Tests and benches: how many commands at a batch's start `apply_batch_on` looks up
    /// on its own thread, while the stage starts on the rest (at most 32; `None`: its
    /// default, 16).
    #[doc(hidden)]
    pub fn force_head(&mut self, head: Option<usize>) {
        self.force_head = head;
    }

    /// The head `apply_batch_on` is to use, if forced.
    pub(crate) fn head(&self) -> Option<usize> {
        self.force_head
    }

    /// Jobs posted so far (a batch of more than [`JOB_MAX`] commands is several).
    pub fn jobs(&self) -> u64 {
        self.jobs
    }

    /// Spin until `done` says so; panics if the stage's thread has exited (it does not while
    /// the stage lives, unless it panicked), rather than wait forever.
    fn wait(&self, mut done: impl FnMut() -> bool) {
        let mut spins = 0u32;
        while !done() {
            std::hint::spin_loop();
            spins += 1;
            if spins == SPINS_PER_CHECK {
                spins = 0;
                let alive = self.thread.as_ref().is_some_and(|t| !t.is_finished());
                assert!(alive || done(), "the lookup stage's thread has exited");
            }
        }
    }
}

impl Drop for LookupStage {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// A posted job, as the state machine's thread follows it.
struct Posted {
    number: u64,
    len: usize,
    /// Hints known to be published.
    ready: usize,
}

/// A batch's jobs on a stage, at most two out at a time: the one whose hints the caller reads
/// ([`hint`](Self::hint), in order over the whole batch) and the one after it, which the
/// stage looks up meanwhile. Reading the first hint of a job releases the job before it and
/// posts the job after it. Dropping the pipeline waits until the stage's thread is done with
/// every job out.
pub(crate) struct Pipeline<'a, T> {
    stage: &'a mut LookupStage,
    batch: &'a [T],
    lookups: Arc<Lookups>,
    holder_rows: bool,
    /// Where the current job starts in `batch`.
    start: usize,
    /// The job whose hints are read, and the one posted after it, if any.
    current: Posted,
    next: Option<Posted>,
}

/// Post the job of `batch` (1 to [`JOB_MAX`] commands) to `stage`. At most two are out: the
/// caller has released the job before the one out (see `Pipeline::release`), whose slot and
/// half this one takes.
fn post<T: BatchItem + Sync>(
    stage: &mut LookupStage,
    batch: &[T],
    lookups: &Arc<Lookups>,
    holder_rows: bool,
) -> Posted {
    assert!((1..=JOB_MAX).contains(&batch.len()), "a job holds 1 to JOB_MAX commands");
    stage.jobs += 1;
    let k = stage.jobs;
    let (s, j) = (&*stage.shared, &stage.shared.slots[slot(k)].0);
    // Relaxed: the Release store of `number` below publishes them; the stage's thread is done
    // with the slot's job before (`release` saw all its hints published), so nothing races.
    j.batch.store(batch.as_ptr().cast::<()>().cast_mut(), Ordering::Relaxed);
    j.len.store(batch.len(), Ordering::Relaxed);
    j.read.store(read_item::<T> as ReadItem as *mut (), Ordering::Relaxed);
    j.lookups.store(Arc::into_raw(lookups.clone()).cast_mut(), Ordering::Relaxed);
    j.holder_rows.store(holder_rows, Ordering::Relaxed);
    s.ready[slot(k)].0.store(0, Ordering::Relaxed);
    j.number.store(k, Ordering::Release);
    if let Some(t) = &stage.thread {
        // A no-op unless the thread is parked (one atomic swap).
        t.thread().unpark();
    }
    Posted { number: k, len: batch.len(), ready: 0 }
}

/// The job of `batch` that starts at `from`: at most [`JOB_MAX`] commands.
fn job_at<T>(batch: &[T], from: usize) -> &[T] {
    &batch[from..batch.len().min(from + JOB_MAX)]
}

impl<T: BatchItem + Sync> Pipeline<'_, T> {
    /// The hint of the batch's command `i` (waiting for it if the stage has not got there).
    /// Asked in order: asked for the first command of the next job, the current one is
    /// released and the job after the next posted.
    #[inline(always)]
    pub(crate) fn hint(&mut self, i: usize) -> Legs {
        if i >= self.start + self.current.len {
            self.advance();
        }
        let j = i - self.start;
        let (stage, shared) = (&*self.stage, &*self.stage.shared);
        let job = &mut self.current;
        let (half, ready) = (half(job.number), &shared.ready[slot(job.number)].0);
        if j >= job.ready {
            stage.wait(|| {
                // Acquire: pairs with the stage's Release store after the hints.
                job.ready = ready.load(Ordering::Acquire);
                j < job.ready
            });
        }
        // The line of a later hint, which the stage wrote, on its way from the stage's core:
        // read when it comes, it would stall this thread for a transfer every few hints.
        // Only a published one: a line the stage has yet to write would go back to it.
        let ahead = half + (j + HINT_PREFETCH).min(job.ready - 1);
        crate::map::prefetch_element(&shared.hints.0, ahead);
        // Relaxed: published by the Acquire load of `ready` above.
        Legs::from_words(shared.hints.0[half + j].each_ref().map(|w| w.load(Ordering::Relaxed)))
    }

    /// Jobs the stage has had posted so far (tests: how many are out ahead of the reader).
    #[cfg(test)]
    pub(crate) fn posted(&self) -> u64 {
        self.stage.jobs
    }

    /// Move on to the next job: release the current one (all its hints read), and post the
    /// one after the next, into the released job's slot and half.
    #[cold]
    #[inline(never)]
    fn advance(&mut self) {
        let next = self.next.take().expect("a job for every command of the batch");
        let done = std::mem::replace(&mut self.current, next);
        self.start += done.len;
        self.release(&done);
        let after = self.start + self.current.len;
        if after < self.batch.len() {
            let job = job_at(self.batch, after);
            self.next = Some(post(self.stage, job, &self.lookups, self.holder_rows));
        }
    }
}

impl<T> Pipeline<'_, T> {
    /// Wait until the stage's thread is done with `job` (at once if the caller read all its
    /// hints: its last is published), and say that this thread reads none of it any more.
    fn release(&self, job: &Posted) {
        let (stage, shared) = (&*self.stage, &*self.stage.shared);
        let ready = &shared.ready[slot(job.number)].0;
        if job.ready < job.len {
            // Acquire: pairs with the stage's Release store of the last hint.
            stage.wait(|| ready.load(Ordering::Acquire) == job.len);
        }
        // Release: this thread's reads of the job's hints come before the stage's next writes
        // to them (it loads `released` with Acquire before).
        shared.released.0.store(job.number, Ordering::Release);
    }
}

impl<T> Drop for Pipeline<'_, T> {
    /// Waits until the stage's thread is done with every job out (at once for a job whose
    /// hints were all read, as they are unless the caller unwinds): its reads of the batch
    /// and of the jobs' slots happen before (see `Shared::ready`).
    fn drop(&mut self) {
        self.release(&self.current);
        if let Some(next) = &self.next {
            self.release(next);
        }
    }
}

/// The stage's thread: wait for the next job, look its batch up, say so; until the stage is
/// dropped.
fn run(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let k = seen + 1;
        let j = &shared.slots[slot(k)].0;
        let mut spins = 0u32;
        // Acquire: pairs with `post`'s Release store, after the job's fields.
        while j.number.load(Ordering::Acquire) != k {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            spins += 1;
            if spins < SPINS_BEFORE_PARK {
                std::hint::spin_loop();
            } else {
                // Woken by `post` (or spuriously); a wake-up before the park is not lost.
                std::thread::park();
            }
        }
        seen = k;
        // SAFETY: `post` stored a `ReadItem` (`read_item::<T>`) as a pointer.
        let read =
            unsafe { std::mem::transmute::<*mut (), ReadItem>(j.read.load(Ordering::Relaxed)) };
        // `post` stored a batch of `len` items of the type `read` reads, which stays borrowed
        // (and is `Sync`) until the pipeline has seen the job's last hint published, after the
        // last read of it (`look_up`).
        let batch = Batch {
            base: j.batch.load(Ordering::Relaxed),
            len: j.len.load(Ordering::Relaxed),
            read,
        };
        let holder_rows = j.holder_rows.load(Ordering::Relaxed);
        // SAFETY: `post` stored `Arc::into_raw` of a clone, once per job; taken back once here.
        let lookups = unsafe { Arc::from_raw(j.lookups.load(Ordering::Relaxed)) };
        let hints = &shared.hints.0[half(k)..half(k) + JOB_MAX];
        let ready = &shared.ready[slot(k)].0;
        if holder_rows {
            look_up::<true>(lookups.indices(), &batch, hints, ready);
        } else {
            look_up::<false>(lookups.indices(), &batch, hints, ready);
        }
        // The job is over for the state machine's thread: it may post the one after the next.
        drop(lookups);
        // The next job's hints go to the lines of the job before this one. Once the state
        // machine's thread is done with it (a batch of one job posts each after the last is
        // released), and if the next job has not come yet, take them now (as many as this job
        // had), not one by one as the next job writes them. (The next job, if posted meanwhile,
        // waits for this: it is this thread's.) Acquire: pairs with `release`'s Release store,
        // after that thread's reads of those hints.
        let next_posted = shared.slots[slot(k + 1)].0.number.load(Ordering::Relaxed) == k + 1;
        if !next_posted && shared.released.0.load(Ordering::Acquire) + 1 >= k {
            let touch = batch.len.clamp(PRETOUCH, JOB_MAX);
            for cell in &shared.hints.0[half(k + 1)..half(k + 1) + touch] {
                // Relaxed: overwritten, then published, by the next job.
                cell[0].store(0, Ordering::Relaxed);
            }
        }
    }
}

/// A job's batch, as the stage's thread reads it.
struct Batch {
    base: *const (),
    len: usize,
    read: ReadItem,
}

impl Batch {
    /// Item `i` (`< len`): its command and the hashes of its index keys.
    #[inline(always)]
    fn get(&self, i: usize) -> (&Sequenced, IndexHashes) {
        debug_assert!(i < self.len);
        // SAFETY: `base` and `read` are a job's, whose batch of `len` items stays borrowed
        // while the job runs (see `run`); `i < len`.
        let (s, h) = unsafe { (self.read)(self.base, i) };
        // SAFETY: a command of that batch.
        (unsafe { &*s }, h)
    }
}

/// The lookups of `batch`, as `apply_batch`'s first two stages make them, into `hints`,
/// publishing `ready` as it goes (see [`look_ahead`]).
fn look_up<const ROWS: bool>(
    ix: Indices<'_>,
    batch: &Batch,
    hints: &[[AtomicU64; 3]],
    ready: &AtomicUsize,
) {
    look_ahead::<ROWS>(
        ix,
        batch.len,
        |k| batch.get(k),
        |i, legs| {
            for (w, v) in hints[i].iter().zip(legs.to_words()) {
                // Relaxed: published by the Release store of `ready`.
                w.store(v, Ordering::Relaxed);
            }
            if (i + 1) % PUBLISH_EVERY == 0 || i + 1 == batch.len {
                ready.store(i + 1, Ordering::Release);
            }
        },
    );
}

/// The lookups of a batch of `len` items (`item(k)`: item `k`'s command and the hashes of its
/// index keys), as `apply_batch`'s first two stages make them: the position-index slots
/// prefetched `2 * PREFETCH_DISTANCE` items ahead, then probed ([`Indices::resolve`]);
/// `out(i, legs)` for each item in order. With `ROWS`, the rows of the holders found and the
/// column as well ([`Indices::resolve`]'s `HOLDERS`), which `apply_batch` reads from the
/// positions when it applies a command: the state machine's thread can then prefetch an
/// account's line with its position's, not after it. No position's or account's line is
/// prefetched here: the state machine's thread does that, into its own caches. Every `item`
/// call for an item comes before `out` for it and for every item after it that was looked
/// ahead at, so `out`'s last call follows the last read of the batch. (The stage's thread
/// calls it for its jobs; `apply_batch_on`'s thread for a batch's head, and
/// `resolve_ahead`.)
pub(crate) fn look_ahead<'a, const ROWS: bool>(
    ix: Indices<'_>,
    len: usize,
    item: impl Fn(usize) -> (&'a Sequenced, IndexHashes),
    mut out: impl FnMut(usize, Legs),
) {
    const AHEAD: usize = 2 * PREFETCH_DISTANCE;
    const RING: usize = (AHEAD + 1).next_power_of_two() - 1;
    let mut hashes = [IndexHashes::default(); RING + 1];
    // Item `k`'s hashes, its position-index slots prefetched.
    let ahead = |k: usize| {
        let (_, h) = item(k);
        for p in h.positions {
            ix.positions.prefetch_hashed_probe(p);
        }
        if ROWS {
            for a in h.accounts {
                ix.accounts.prefetch_hashed_probe(a);
            }
        }
        h
    };
    for (k, h) in hashes.iter_mut().enumerate().take(len.min(AHEAD)) {
        *h = ahead(k);
    }
    let mut last = (0, NONE);
    for i in 0..len {
        if i + AHEAD < len {
            hashes[(i + AHEAD) & RING] = ahead(i + AHEAD);
        }
        let (s, _) = item(i);
        out(i, ix.resolve::<ROWS>(&s.cmd, &hashes[i & RING], &mut last, |_| {}, |_| {}));
    }
}
