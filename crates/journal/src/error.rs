//! Typed errors. Expected conditions (a torn tail) are not errors: they are reported in
//! [`crate::OpenReport`]. Corruption is an error that names the segment and the byte offset.

use novate_core::Seq;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why one record failed validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRecord {
    /// `len` is 0 or over `RECORD_PAYLOAD_MAX`.
    Length(u32),
    /// The record would run past the end of the segment.
    PastEnd,
    /// CRC32C of header and payload does not match.
    Checksum,
    /// The sequence number is not the previous one + 1.
    Sequence { expected: Seq, found: Seq },
    /// The chain value does not match the records before it.
    Chain,
}

/// What is wrong, where corruption was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorruptionKind {
    /// The segment header is unreadable (magic, checksum, version).
    SegmentHeader(&'static str),
    /// The file is shorter or longer than its header's `segment_bytes` (segments are
    /// pre-allocated before they get their name, so a crash never changes their size).
    SegmentSize { expected: u64, found: u64 },
    /// The file name and the header disagree on the first sequence number.
    SegmentName { header_first_seq: Seq },
    /// A record fails validation and valid records follow it (or it is not in the last
    /// segment): this is not a torn tail.
    Record { bad: BadRecord, valid_record_after: Option<u64> },
    /// Zeroes where a record was expected, with a valid record after them.
    ZeroedRecords { valid_record_after: u64 },
    /// A segment starts at the wrong sequence number: records (a segment) are missing.
    MissingRecords { expected_first_seq: Seq, found_first_seq: Seq },
    /// A segment does not continue the hash chain of its predecessor.
    ChainBreak,
    /// The last segment is sealed, so a successor existed and is gone.
    MissingSegment { next_first_seq: Seq },
    /// The durable mark says records up to `durable_seq` were acknowledged, but only records
    /// up to `last_valid_seq` are intact.
    DurableRecordsLost { durable_seq: Seq, last_valid_seq: Seq },
}

/// Corruption at a place: segment file and byte offset inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    pub segment: PathBuf,
    pub offset: u64,
    pub kind: CorruptionKind,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "journal corruption in {} at offset {}: {:?}",
            self.segment.display(),
            self.offset,
            self.kind
        )
    }
}

/// Every failure of the journal, snapshots and recovery.
#[derive(Debug)]
pub enum Error {
    /// An I/O call failed: which call, on which path.
    Io { op: &'static str, path: PathBuf, source: io::Error },
    /// The journal is corrupt; [`crate::repair`] can truncate it at this point (explicitly).
    Corrupt(Corruption),
    /// The options cannot be honoured.
    InvalidOptions(&'static str),
    /// A payload of 0 bytes or over `RECORD_PAYLOAD_MAX`.
    PayloadSize(usize),
    /// A flush (fdatasync) failed. The journal stops: after a failed fsync the kernel may have
    /// dropped the dirty pages, so retrying could report data durable that is not.
    FlushFailed(String),
    /// A record's payload is not a single SBE command.
    Decode { seq: Seq, what: String },
    /// Snapshot store (LMDB) failure.
    Lmdb(String),
    /// A snapshot failed verification (its state hash or counts do not match its content).
    SnapshotInvalid { seq: Seq, why: String },
    /// The journal does not hold the records recovery needs (e.g. after the newest snapshot).
    JournalGap { needed_from: Seq, journal_first: Seq, journal_last: Seq },
    /// The writer process or thread panicked or is gone.
    Stopped,
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Io { op, path: path.to_path_buf(), source }
    }

    /// The corruption, if this is one.
    pub fn corruption(&self) -> Option<&Corruption> {
        match self {
            Error::Corrupt(c) => Some(c),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::Corrupt(c) => write!(f, "{c}"),
            Error::InvalidOptions(why) => write!(f, "invalid journal options: {why}"),
            Error::PayloadSize(n) => write!(f, "record payload of {n} bytes (1..=65536 allowed)"),
            Error::FlushFailed(why) => write!(f, "journal flush failed, journal stopped: {why}"),
            Error::Decode { seq, what } => write!(f, "record {seq} is not a command: {what}"),
            Error::Lmdb(why) => write!(f, "snapshot store: {why}"),
            Error::SnapshotInvalid { seq, why } => write!(f, "snapshot at seq {seq} is invalid: {why}"),
            Error::JournalGap { needed_from, journal_first, journal_last } => write!(
                f,
                "journal holds records {journal_first}..={journal_last} but recovery needs them from {needed_from}"
            ),
            Error::Stopped => write!(f, "journal writer stopped"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<heed::Error> for Error {
    fn from(e: heed::Error) -> Error {
        Error::Lmdb(e.to_string())
    }
}
