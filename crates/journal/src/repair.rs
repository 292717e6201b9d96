//! Explicit repair of a corrupt journal: truncate at the first corruption. Never automatic:
//! [`crate::Journal::open`] refuses a corrupt journal; an operator runs this (or the CLI's
//! `repair`) after deciding the records after that point are lost (or restorable from a
//! replica). Segments after the cut are moved to a `quarantine-<ns>/` sub-directory, not
//! deleted.

use crate::error::{CorruptionKind, Error};
use crate::format::*;
use crate::journal::sync_dir;
use crate::scan::{list_segments, map_read, nonzero_end, scan_journal};
use novate_core::Seq;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One thing repair did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairAction {
    /// Bytes `offset..offset + bytes` of `segment` were zeroed (records from there on dropped).
    Truncated { segment: PathBuf, offset: u64, bytes: u64 },
    /// A segment was moved out of the journal into `to`.
    Quarantined { segment: PathBuf, to: PathBuf },
    /// The seal of the last segment was removed (its successor is missing).
    Unsealed { segment: PathBuf, offset: u64 },
    /// A segment file was brought back to its pre-allocated size.
    Resized { segment: PathBuf, from: u64, to: u64 },
    /// The durable marks were lowered to the last intact record.
    MarkLowered { from: Seq, to: Seq },
}

/// What repair did, and where the journal ends now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    pub actions: Vec<RepairAction>,
    /// Last intact record after the repair.
    pub last_seq: Seq,
}

/// Truncate the journal in `dir` at its first corruption, repeatedly, until it opens.
pub fn repair(dir: &Path) -> Result<RepairReport, Error> {
    let mut report = RepairReport::default();
    let quarantine = dir.join(format!(
        "quarantine-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    for _ in 0..(list_segments(dir)?.len() + 4) {
        let c = match scan_journal(dir) {
            Ok(scan) => {
                report.last_seq = scan.map_or(0, |s| s.last_seq);
                return Ok(report);
            }
            Err(Error::Corrupt(c)) => c,
            Err(e) => return Err(e),
        };
        match c.kind {
            CorruptionKind::SegmentHeader(_)
            | CorruptionKind::SegmentName { .. }
            | CorruptionKind::MissingRecords { .. }
            | CorruptionKind::ChainBreak => {
                quarantine_from(dir, &c.segment, &quarantine, &mut report)?
            }
            CorruptionKind::Record { .. } | CorruptionKind::ZeroedRecords { .. } => {
                zero_from(&c.segment, c.offset as usize, &mut report)?;
                quarantine_after(dir, &c.segment, &quarantine, &mut report)?;
            }
            CorruptionKind::SegmentSize { expected, found } => {
                // Restore the pre-allocated size; the bytes after the cut read as zeros, so the
                // records before it survive and the cut becomes the end of the journal.
                let f = OpenOptions::new()
                    .write(true)
                    .open(&c.segment)
                    .map_err(|e| Error::io("open", &c.segment, e))?;
                f.set_len(expected).map_err(|e| Error::io("set_len", &c.segment, e))?;
                f.sync_all().map_err(|e| Error::io("fsync", &c.segment, e))?;
                report.actions.push(RepairAction::Resized {
                    segment: c.segment.clone(),
                    from: found,
                    to: expected,
                });
            }
            CorruptionKind::MissingSegment { .. } => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&c.segment)
                    .map_err(|e| Error::io("open", &c.segment, e))?;
                f.write_at(&[0u8; RECORD_HEADER_BYTES], c.offset)
                    .map_err(|e| Error::io("write", &c.segment, e))?;
                f.sync_data().map_err(|e| Error::io("fdatasync", &c.segment, e))?;
                report
                    .actions
                    .push(RepairAction::Unsealed { segment: c.segment.clone(), offset: c.offset });
            }
            CorruptionKind::DurableRecordsLost { durable_seq, last_valid_seq } => {
                for (_, path) in list_segments(dir)? {
                    let f = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| Error::io("open", &path, e))?;
                    let mark = DurableMark::encode(last_valid_seq);
                    f.write_at(&mark, DURABLE_MARK_OFFSET as u64)
                        .map_err(|e| Error::io("write", &path, e))?;
                    f.sync_data().map_err(|e| Error::io("fdatasync", &path, e))?;
                }
                report
                    .actions
                    .push(RepairAction::MarkLowered { from: durable_seq, to: last_valid_seq });
            }
        }
    }
    Err(Error::InvalidOptions("repair did not converge"))
}

fn zero_from(path: &Path, offset: usize, report: &mut RepairReport) -> Result<(), Error> {
    let end = {
        let map = map_read(path)?;
        nonzero_end(&map, offset)
    };
    if end > offset {
        let f =
            OpenOptions::new().write(true).open(path).map_err(|e| Error::io("open", path, e))?;
        let zeros = vec![0u8; 1 << 20];
        let mut at = offset;
        while at < end {
            let n = (end - at).min(zeros.len());
            f.write_at(&zeros[..n], at as u64).map_err(|e| Error::io("write", path, e))?;
            at += n;
        }
        f.sync_data().map_err(|e| Error::io("fdatasync", path, e))?;
    }
    report.actions.push(RepairAction::Truncated {
        segment: path.to_path_buf(),
        offset: offset as u64,
        bytes: (end.max(offset) - offset) as u64,
    });
    Ok(())
}

fn quarantine_from(
    dir: &Path,
    from: &Path,
    to_dir: &Path,
    report: &mut RepairReport,
) -> Result<(), Error> {
    move_segments(dir, to_dir, report, |p| p >= from)
}

fn quarantine_after(
    dir: &Path,
    after: &Path,
    to_dir: &Path,
    report: &mut RepairReport,
) -> Result<(), Error> {
    move_segments(dir, to_dir, report, |p| p > after)
}

fn move_segments(
    dir: &Path,
    to_dir: &Path,
    report: &mut RepairReport,
    pick: impl Fn(&Path) -> bool,
) -> Result<(), Error> {
    for (_, path) in list_segments(dir)? {
        if !pick(&path) {
            continue;
        }
        std::fs::create_dir_all(to_dir).map_err(|e| Error::io("create_dir_all", to_dir, e))?;
        let to = to_dir.join(path.file_name().expect("segment has a name"));
        std::fs::rename(&path, &to).map_err(|e| Error::io("rename", &path, e))?;
        report.actions.push(RepairAction::Quarantined { segment: path, to });
    }
    sync_dir(dir)
}
