//! File storage: crates/journal behind the engine's [`Journal`] and [`SnapshotStore`] traits.
//!
//! A data dir holds `journal/` (segments: one SBE command per record, seq and ts as the
//! sequencer stamped them) and `snapshots/` (LMDB). Start-up is `novate_journal::recover`:
//! newest valid snapshot + replay of the journal after it (a torn tail is truncated and
//! reported; corruption is refused). Group commit: the sequencer appends a batch and commits it
//! once; under `fsync` it waits for the flusher's fdatasync covering the batch
//! (`commit_wait`) before releasing the batch to the state machine.

use std::io;
use std::path::Path;
use std::time::Duration;

use novate_core::{Limits, Reject, Seq, Sequenced, Snapshot, StateMachine};
use novate_journal::{Policy, Reader, Snapshotter};

use crate::config::{Config, DurabilityPolicy};
use crate::durability::{Journal, SnapshotStore};
use crate::pipeline::{EngineError, StartReport};

fn io_err(e: novate_journal::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// The journal of a data dir.
pub struct FileJournal {
    j: novate_journal::Journal,
    fsync: bool,
}

impl Journal for FileJournal {
    fn append(&mut self, batch: &[Sequenced]) -> io::Result<()> {
        self.append_with_requests(batch, &[])
    }

    /// Each record is the command's SBE message with the member's request id in it (0 where
    /// none is given), so the journal holds the bytes a member sent.
    fn append_with_requests(&mut self, batch: &[Sequenced], request_ids: &[u64]) -> io::Result<()> {
        for (i, s) in batch.iter().enumerate() {
            let rid = request_ids.get(i).copied().unwrap_or(0);
            let seq = self.j.append_command(s.ts, rid, &s.cmd).map_err(io_err)?;
            if seq != s.seq {
                return Err(io::Error::other(format!(
                    "journal seq {seq} differs from the sequencer's {}",
                    s.seq
                )));
            }
        }
        Ok(())
    }

    fn commit(&mut self) -> io::Result<()> {
        if self.fsync {
            self.j.commit_wait().map_err(io_err)?;
        } else {
            self.j.commit().map_err(io_err)?;
        }
        Ok(())
    }

    fn replay(&mut self, from: Seq, f: &mut dyn FnMut(&Sequenced)) -> io::Result<u64> {
        let mut r = Reader::open(self.j.dir(), from).map_err(io_err)?.until(self.j.last_seq());
        let mut n = 0;
        while let Some(rec) = r.next().map_err(io_err)? {
            let (_, cmd) = novate_journal::decode_command(rec.seq, rec.payload).map_err(io_err)?;
            f(&Sequenced { seq: rec.seq, ts: rec.ts, cmd });
            n += 1;
        }
        Ok(n)
    }

    fn last_seq(&self) -> Seq {
        self.j.last_seq()
    }

    fn describe(&self) -> String {
        format!(
            "segmented journal in {} ({})",
            self.j.dir().display(),
            if self.fsync { "fdatasync per batch" } else { "page cache" }
        )
    }

    fn commit_waits(&self) -> bool {
        self.fsync
    }
}

/// The LMDB snapshot store of a data dir, written on the journal crate's snapshotter thread
/// (the state-machine thread pays only for `export_into()`; the snapshotter sorts, checks the
/// records against the state hash and writes).
pub struct FileSnapshots {
    store: novate_journal::SnapshotStore,
    writer: Option<Snapshotter>,
}

impl SnapshotStore for FileSnapshots {
    fn save(&mut self, snap: Snapshot, state_hash: u64, wait: bool) -> io::Result<()> {
        let seq = snap.last_seq;
        let w = self.writer.get_or_insert_with(|| Snapshotter::spawn(self.store.clone()));
        while let Some(r) = w.try_result() {
            if let Err(e) = r {
                eprintln!("novate: a background snapshot write failed: {e}");
            }
        }
        if !w.submit(snap, state_hash) {
            if !wait {
                return Ok(()); // a write is running and one is queued: skip this boundary
            }
            return Err(io::Error::other("snapshot writer busy"));
        }
        if !wait {
            return Ok(());
        }
        loop {
            match w.wait_result(Duration::from_secs(600)) {
                Some(Ok(done)) if done.info.seq == seq => return Ok(()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(io_err(e)),
                None => return Err(io::Error::other("snapshot write timed out")),
            }
        }
    }

    fn spare(&mut self) -> Snapshot {
        self.writer.as_ref().and_then(Snapshotter::spare).unwrap_or_default()
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(w) = self.writer.take() {
            w.shutdown();
        }
        Ok(())
    }

    fn load_latest(&mut self) -> io::Result<Option<Snapshot>> {
        match self.store.list().map_err(io_err)?.first() {
            Some(i) => Ok(Some(self.store.read(i.seq).map_err(io_err)?.1)),
            None => Ok(None),
        }
    }

    fn describe(&self) -> String {
        format!("LMDB snapshots in {}", self.store.path().display())
    }
}

impl Drop for FileSnapshots {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// A recovered data dir, ready for `Engine::launch`.
pub struct RecoveredDir {
    pub sm: StateMachine,
    pub journal: Box<dyn Journal>,
    pub snapshots: Box<dyn SnapshotStore>,
    pub report: StartReport,
}

/// Open (creating if needed) and recover `dir`.
pub fn recover_dir(cfg: &Config, dir: &Path) -> Result<RecoveredDir, EngineError> {
    std::fs::create_dir_all(dir).map_err(EngineError::Io)?;
    let fsync = cfg.durability.policy == DurabilityPolicy::Fsync;
    let opts = novate_journal::Options {
        policy: if fsync { Policy::Fsync } else { Policy::None },
        ..novate_journal::Options::default()
    };
    let r = novate_journal::recover(dir, cfg.limits(), opts)
        .map_err(|e| EngineError::Recovery(e.to_string()))?;
    let mut report =
        StartReport { last_seq: r.last_seq, replayed: r.replay.records, ..StartReport::default() };
    if let Some(s) = r.snapshot {
        report.recovered_snapshot_seq = Some(s.seq);
        report.lines.push(format!(
            "recovered snapshot at seq {} (state hash {:016x})",
            s.seq, s.state_hash
        ));
    }
    for (seq, why) in &r.skipped_snapshots {
        report.lines.push(format!("skipped snapshot at seq {seq}: {why}"));
    }
    report.lines.push(format!("journal open: {:?}", r.open));
    report.lines.push(format!(
        "replayed {} journal entries ({} rejected, as they were live); next seq {}",
        r.replay.records,
        r.replay.rejected,
        r.last_seq + 1
    ));
    Ok(RecoveredDir {
        sm: r.state,
        journal: Box::new(FileJournal { j: r.journal, fsync }),
        snapshots: Box::new(FileSnapshots { store: r.snapshots, writer: None }),
        report,
    })
}

/// What [`replay_dir`] rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replayed {
    pub seq: Seq,
    pub state_hash: u64,
    /// Commands of the journal rejected for a capacity (`AccountCapacity`,
    /// `InstrumentCapacity`, `PositionCapacity`, `TradeCapacity`) in this replay. The journal
    /// does not record the limits the engine ran with: if they were larger than `limits`,
    /// these commands were accepted then, and the state and its hash differ from the engine's.
    pub capacity_rejects: u64,
}

/// Rebuild the state of a data dir read-only (the newest snapshot, then every journal record
/// after it), calling `progress(done, total)` as it goes. Safe while a daemon owns the
/// directory: nothing is written.
pub fn replay_dir(
    dir: &Path,
    limits: Limits,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Replayed, EngineError> {
    let (jdir, sdir) = novate_journal::data_dirs(dir);
    let scan = novate_journal::scan_journal(&jdir)
        .map_err(|e| EngineError::Recovery(e.to_string()))?
        .ok_or_else(|| EngineError::Recovery(format!("no journal in {}", jdir.display())))?;
    let mut sm = None;
    if sdir.exists() {
        let store = novate_journal::SnapshotStore::open(&sdir)
            .map_err(|e| EngineError::Recovery(e.to_string()))?;
        for info in store.list().map_err(|e| EngineError::Recovery(e.to_string()))? {
            if info.seq <= scan.last_seq && info.seq + 1 >= scan.first_seq {
                if let Ok((_, s)) = store.load(info.seq, limits) {
                    sm = Some(s);
                    break;
                }
            }
        }
    }
    let mut sm = match sm {
        Some(s) => s,
        None => StateMachine::new(limits).map_err(|e| EngineError::Config(e.to_string()))?,
    };
    let from = sm.last_seq() + 1;
    let total = scan.last_seq.saturating_sub(from - 1);
    let mut reader = Reader::open(&jdir, from)
        .map_err(|e| EngineError::Recovery(e.to_string()))?
        .until(scan.last_seq);
    let (mut done, mut capacity_rejects) = (0u64, 0u64);
    while let Some(rec) = reader.next().map_err(|e| EngineError::Recovery(e.to_string()))? {
        let (_, cmd) = novate_journal::decode_command(rec.seq, rec.payload)
            .map_err(|e| EngineError::Recovery(e.to_string()))?;
        if let Err(
            Reject::AccountCapacity
            | Reject::InstrumentCapacity
            | Reject::PositionCapacity
            | Reject::TradeCapacity,
        ) = sm.apply(&cmd, rec.seq, rec.ts)
        {
            capacity_rejects += 1;
        }
        done += 1;
        if done.is_multiple_of(65_536) {
            progress(done, total);
        }
    }
    progress(done, total);
    Ok(Replayed { seq: sm.last_seq(), state_hash: sm.state_hash(), capacity_rejects })
}
