//! Durability behind two small traits, so the pipeline does not depend on one storage engine:
//! [`Journal`] (the sequenced command log, group commit) and [`SnapshotStore`] (whole-state
//! snapshots). The in-memory implementations here serve tests, the demo and `data_dir = ""`;
//! [`crate::store`] plugs in crates/journal for real files.
//!
//! # Contract (every implementation)
//! - `append` receives each batch in ascending, gap-free `seq` order, once.
//! - After `commit` returns `Ok`, everything appended is durable by the configured policy
//!   (`none`: may still be in the page cache or memory; `fsync`: on stable storage).
//!   The sequencer releases a batch to the state machine, and so to acknowledgement, only then.
//! - `replay(from, f)` calls `f` for every committed entry with `seq >= from`, in order.
//! - An `Err` is fatal to the engine: it stops accepting commands rather than ack what is not
//!   durable.

use std::io;
use std::sync::{Arc, Mutex};

use novate_core::{Seq, Sequenced, Snapshot};

/// The sequenced command log.
pub trait Journal: Send + 'static {
    /// Append a batch (not yet durable).
    fn append(&mut self, batch: &[Sequenced]) -> io::Result<()>;
    /// [`Journal::append`] with the client's request id of each command (`request_ids[i]` is
    /// that of `batch[i]`), for journals whose records keep it. The default drops the ids.
    fn append_with_requests(&mut self, batch: &[Sequenced], request_ids: &[u64]) -> io::Result<()> {
        let _ = request_ids;
        self.append(batch)
    }
    /// Make everything appended durable by the policy; the group commit of one batch.
    fn commit(&mut self) -> io::Result<()>;
    /// Call `f` for every committed entry with `seq >= from`, in order; returns how many.
    fn replay(&mut self, from: Seq, f: &mut dyn FnMut(&Sequenced)) -> io::Result<u64>;
    /// Highest seq committed (0 if none).
    fn last_seq(&self) -> Seq;
    /// Entries below `seq` may be discarded (a snapshot covers them). Optional.
    fn truncate_before(&mut self, _seq: Seq) -> io::Result<()> {
        Ok(())
    }
    /// What this journal is, for the start-up log.
    fn describe(&self) -> String;
    /// True if `commit` may wait on a device or on another party (an fsync): then no
    /// submitter steps the fused pipeline itself (`threads.combine`), because a caller with a
    /// timeout would wait out the commit of everyone's batch instead of timing out.
    fn commit_waits(&self) -> bool {
        false
    }
}

/// Whole-state snapshots.
pub trait SnapshotStore: Send + 'static {
    /// Store a snapshot (its `last_seq` says which log prefix it covers; its tables may be in
    /// any order, as `StateMachine::export_into` leaves them) of a state whose `state_hash()`
    /// is `state_hash`. With `wait`, return only once it is stored; without, the store may
    /// write it in the background (and may skip it if a write is still running).
    fn save(&mut self, snap: Snapshot, state_hash: u64, wait: bool) -> io::Result<()>;
    /// A snapshot to export the next one into: a written one's buffers when the store hands
    /// them back, so the state machine's pause is the copy alone.
    fn spare(&mut self) -> Snapshot {
        Snapshot::default()
    }
    /// Finish every background write (at shutdown).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// The newest snapshot, if any.
    fn load_latest(&mut self) -> io::Result<Option<Snapshot>>;
    fn describe(&self) -> String;
}

/// A journal in memory, shareable so that a test can "restart" an engine on the same log.
#[derive(Clone, Default)]
pub struct MemJournal {
    inner: Arc<Mutex<MemLog>>,
    /// Keep entries (for replay)? The demo turns this off to bound memory.
    keep: bool,
    last: Seq,
}

#[derive(Default)]
struct MemLog {
    entries: Vec<Sequenced>,
    committed: usize,
    commits: u64,
}

impl MemJournal {
    /// A journal that keeps every entry (replayable).
    pub fn new() -> MemJournal {
        MemJournal { keep: true, ..MemJournal::default() }
    }

    /// A journal that keeps nothing: durability `none` with no data dir.
    pub fn discard() -> MemJournal {
        MemJournal { keep: false, ..MemJournal::default() }
    }

    /// Group commits so far (tests check that commits happen per batch); a `discard` journal
    /// counts none.
    pub fn commits(&self) -> u64 {
        self.inner.lock().map(|l| l.commits).unwrap_or(0)
    }

    /// Entries committed so far.
    pub fn committed(&self) -> usize {
        self.inner.lock().map(|l| l.committed).unwrap_or(0)
    }
}

impl Journal for MemJournal {
    fn append(&mut self, batch: &[Sequenced]) -> io::Result<()> {
        if let Some(last) = batch.last() {
            self.last = last.seq;
        }
        if self.keep {
            let mut l = self.inner.lock().map_err(|_| io::Error::other("journal lock poisoned"))?;
            l.entries.extend_from_slice(batch);
        }
        Ok(())
    }

    fn commit(&mut self) -> io::Result<()> {
        if !self.keep {
            return Ok(()); // nothing kept, nothing to count
        }
        let mut l = self.inner.lock().map_err(|_| io::Error::other("journal lock poisoned"))?;
        l.committed = l.entries.len();
        l.commits += 1;
        Ok(())
    }

    fn replay(&mut self, from: Seq, f: &mut dyn FnMut(&Sequenced)) -> io::Result<u64> {
        let l = self.inner.lock().map_err(|_| io::Error::other("journal lock poisoned"))?;
        let mut n = 0;
        for e in l.entries[..l.committed].iter().filter(|e| e.seq >= from) {
            f(e);
            n += 1;
        }
        if let Some(e) = l.entries[..l.committed].last() {
            self.last = self.last.max(e.seq);
        }
        Ok(n)
    }

    fn last_seq(&self) -> Seq {
        if self.keep {
            self.inner
                .lock()
                .ok()
                .and_then(|l| l.entries[..l.committed].last().map(|e| e.seq))
                .unwrap_or(self.last)
        } else {
            self.last
        }
    }

    fn describe(&self) -> String {
        if self.keep {
            "in-memory journal (nothing survives the process)".into()
        } else {
            "no journal (durability none, no data_dir)".into()
        }
    }
}

/// Snapshots in memory, shareable like [`MemJournal`]. `save` only swaps the snapshot in
/// (it runs on the state-machine thread); `load_latest` sorts a copy and checks it against the
/// state hash it was saved with.
#[derive(Clone, Default)]
pub struct MemSnapshots {
    inner: Arc<Mutex<MemSnapshot>>,
}

#[derive(Default)]
struct MemSnapshot {
    latest: Option<(Snapshot, u64)>,
    /// The one before, handed back by `spare` for the next export.
    spare: Option<Snapshot>,
}

impl MemSnapshots {
    pub fn new() -> MemSnapshots {
        MemSnapshots::default()
    }
}

impl SnapshotStore for MemSnapshots {
    fn save(&mut self, snap: Snapshot, state_hash: u64, _wait: bool) -> io::Result<()> {
        let mut m = self.inner.lock().map_err(|_| io::Error::other("snapshot lock poisoned"))?;
        m.spare = m.latest.replace((snap, state_hash)).map(|(old, _)| old);
        Ok(())
    }

    fn spare(&mut self) -> Snapshot {
        self.inner.lock().ok().and_then(|mut m| m.spare.take()).unwrap_or_default()
    }

    fn load_latest(&mut self) -> io::Result<Option<Snapshot>> {
        let m = self.inner.lock().map_err(|_| io::Error::other("snapshot lock poisoned"))?;
        let Some((snap, hash)) = &m.latest else { return Ok(None) };
        let mut snap = snap.clone();
        snap.sort();
        if snap.state_hash() != *hash {
            return Err(io::Error::other("snapshot records do not hash to the state's hash"));
        }
        Ok(Some(snap))
    }

    fn describe(&self) -> String {
        "in-memory snapshots".into()
    }
}
