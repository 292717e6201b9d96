//! Recovery: newest valid snapshot + journal replay from its sequence number.

use crate::command::{replay, ReplayStats};
use crate::error::Error;
use crate::journal::{Journal, OpenReport, Options};
use crate::reader::Reader;
use crate::scan::list_segments;
use crate::snapshot::{SnapshotInfo, SnapshotStore};
use novate_core::{Limits, Seq, StateMachine};
use std::path::{Path, PathBuf};

/// Sub-directory of the data directory holding journal segments.
pub const JOURNAL_DIR: &str = "journal";
/// Sub-directory of the data directory holding the LMDB snapshot store.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// A recovered engine state, ready to continue: append to `journal`, apply to `state`.
pub struct Recovered {
    pub state: StateMachine,
    pub journal: Journal,
    pub snapshots: SnapshotStore,
    /// Last sequence number applied (= `journal.last_seq()`).
    pub last_seq: Seq,
    /// The snapshot recovery started from, if any.
    pub snapshot: Option<SnapshotInfo>,
    /// Newer snapshots that failed verification or were ahead of the journal, with the reason.
    pub skipped_snapshots: Vec<(Seq, String)>,
    pub replay: ReplayStats,
    /// What opening the journal found (a truncated torn tail is reported here).
    pub open: OpenReport,
}

/// Paths of the journal and the snapshot store under a data directory.
pub fn data_dirs(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(JOURNAL_DIR), dir.join(SNAPSHOT_DIR))
}

/// Recover the state in `dir`: open the snapshot store and the journal (torn tail truncated,
/// corruption refused), restore the newest snapshot that verifies and is not ahead of the
/// journal, then replay the journal after it. The recovered `state_hash()` equals that of a
/// state machine that applied every record of the journal from the start.
pub fn recover(dir: &Path, limits: Limits, opts: Options) -> Result<Recovered, Error> {
    let (jdir, sdir) = data_dirs(dir);
    let snapshots = SnapshotStore::open(&sdir)?;
    let stored = snapshots.list()?;
    std::fs::create_dir_all(&jdir).map_err(|e| Error::io("create_dir_all", &jdir, e))?;
    if list_segments(&jdir)?.is_empty() {
        if let Some(newest) = stored.first() {
            // Retention never removes the newest segment, so snapshots without a journal mean
            // the journal was lost: refuse rather than restart the sequence.
            return Err(Error::JournalGap {
                needed_from: newest.seq + 1,
                journal_first: 0,
                journal_last: 0,
            });
        }
    }
    let (journal, open) = Journal::open(&jdir, opts)?;
    let (first, last) = (journal.first_seq(), journal.last_seq());
    let mut skipped = Vec::new();
    let mut start: Option<(SnapshotInfo, StateMachine)> = None;
    for info in &stored {
        if info.seq > last {
            skipped.push((info.seq, format!("ahead of the journal (last record {last})")));
            continue;
        }
        if info.seq + 1 < first {
            skipped.push((info.seq, format!("older than the journal (first record {first})")));
            continue;
        }
        match snapshots.load(info.seq, limits) {
            Ok(loaded) => {
                start = Some(loaded);
                break;
            }
            Err(e) => skipped.push((info.seq, e.to_string())),
        }
    }
    let (snapshot, mut state, from) = match start {
        Some((info, sm)) => (Some(info), sm, info.seq + 1),
        None => {
            if first > 1 && first != opts.first_seq {
                return Err(Error::JournalGap {
                    needed_from: 1,
                    journal_first: first,
                    journal_last: last,
                });
            }
            (
                None,
                StateMachine::new(limits).map_err(|e| Error::InvalidOptions(limits_error(e)))?,
                first,
            )
        }
    };
    let mut reader = Reader::open(&jdir, from)?.until(last);
    let replay = replay(&mut reader, &mut state)?;
    let last_seq = if replay.records > 0 { replay.last_seq } else { from - 1 };
    if last_seq != last {
        return Err(Error::JournalGap {
            needed_from: from,
            journal_first: first,
            journal_last: last,
        });
    }
    Ok(Recovered {
        state,
        journal,
        snapshots,
        last_seq,
        snapshot,
        skipped_snapshots: skipped,
        replay,
        open,
    })
}

fn limits_error(e: novate_core::LimitsError) -> &'static str {
    match e {
        novate_core::LimitsError::Zero(what) | novate_core::LimitsError::TooLarge(what) => what,
    }
}
