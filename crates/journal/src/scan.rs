//! Validation of segments: one record at a time ([`step`]), the search for valid records after
//! a bad one ([`valid_record_after`]), and the whole-journal check that decides between a torn
//! tail (truncate) and corruption (refuse) — see the crate docs, `# Recovery`.

use crate::error::{BadRecord, Corruption, CorruptionKind, Error};
use crate::format::*;
use memmap2::Mmap;
use novate_core::Seq;
use std::fs::File;
use std::path::{Path, PathBuf};

/// What is at one offset of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A valid record whose payload is `payload_at..payload_at + len`; the next record starts
    /// at `next`.
    Record { seq: Seq, ts: u64, crc: u32, payload_at: usize, len: usize, next: usize },
    /// A valid seal: the successor segment starts at `next_seq`.
    Seal { next_seq: Seq },
    /// An all-zero header, or no room for a header: no more records here.
    End,
}

/// Validate what is at `off`, expecting record `expected_seq` after chain value `chain`.
#[inline]
pub fn step(b: &[u8], off: usize, expected_seq: Seq, chain: u64) -> Result<Step, BadRecord> {
    let Some(raw) = b.get(off..off + RECORD_HEADER_BYTES) else { return Ok(Step::End) };
    let h = RecordHeader::read(raw);
    if h.crc == 0 && h.len == 0 && h.seq == 0 && h.ts == 0 && h.prev == 0 {
        return Ok(Step::End);
    }
    if h.is_seal() {
        if h.crc != h.checksum(&[]) {
            return Err(BadRecord::Checksum);
        }
        if h.seq != expected_seq {
            return Err(BadRecord::Sequence { expected: expected_seq, found: h.seq });
        }
        if h.prev != chain {
            return Err(BadRecord::Chain);
        }
        return Ok(Step::Seal { next_seq: h.seq });
    }
    let len = h.len as usize;
    if len == 0 || len > RECORD_PAYLOAD_MAX {
        return Err(BadRecord::Length(h.len));
    }
    let end = off + record_bytes(len);
    if end > b.len() {
        return Err(BadRecord::PastEnd);
    }
    let payload_at = off + RECORD_HEADER_BYTES;
    if h.crc != h.checksum(&b[payload_at..payload_at + len]) {
        return Err(BadRecord::Checksum);
    }
    if h.seq != expected_seq {
        return Err(BadRecord::Sequence { expected: expected_seq, found: h.seq });
    }
    if h.prev != chain {
        return Err(BadRecord::Chain);
    }
    Ok(Step::Record { seq: h.seq, ts: h.ts, crc: h.crc, payload_at, len, next: end })
}

/// The offset of the first record or seal at or after `from` (8-byte aligned) whose checksum
/// holds and whose sequence number is above `after_seq`: evidence that data follows a bad spot.
pub fn valid_record_after(b: &[u8], from: usize, after_seq: Seq) -> Option<usize> {
    let mut off = from.next_multiple_of(RECORD_ALIGN);
    while off + RECORD_HEADER_BYTES <= b.len() {
        let raw = &b[off..off + RECORD_HEADER_BYTES];
        if raw[..16] != [0u8; 16] {
            let h = RecordHeader::read(raw);
            if h.seq > after_seq {
                if h.is_seal() {
                    if h.crc == h.checksum(&[]) {
                        return Some(off);
                    }
                } else if h.len != 0 && h.len as usize <= RECORD_PAYLOAD_MAX {
                    let end = off + RECORD_HEADER_BYTES + h.len as usize;
                    if end <= b.len() && h.crc == h.checksum(&b[off + RECORD_HEADER_BYTES..end]) {
                        return Some(off);
                    }
                }
            }
        }
        off += RECORD_ALIGN;
    }
    None
}

/// One past the last non-zero byte at or after `from` (`from` when all zero).
pub fn nonzero_end(b: &[u8], from: usize) -> usize {
    b[from.min(b.len())..].iter().rposition(|&x| x != 0).map_or(from, |i| from + i + 1)
}

/// Segment files of a journal directory, ascending by first sequence number.
pub fn list_segments(dir: &Path) -> Result<Vec<(Seq, PathBuf)>, Error> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io("read_dir", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read_dir", dir, e))?;
        let name = entry.file_name();
        if let Some(seq) = name.to_str().and_then(parse_segment_file_name) {
            out.push((seq, entry.path()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub(crate) fn map_read(path: &Path) -> Result<Mmap, Error> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    // SAFETY: segment files are only written by this process's journal writer through its own
    // mapping (single writer per directory); bytes changing under us can only make validation
    // fail, never cause undefined behaviour for plain byte reads of a shared file mapping.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io("mmap", path, e))
}

/// How a journal directory ends, after every segment was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalScan {
    /// `(first_seq, path)` of every segment, ascending.
    pub segments: Vec<(Seq, PathBuf)>,
    /// First sequence number held (of the first segment).
    pub first_seq: Seq,
    /// Last valid record (`first_seq - 1` when there is none).
    pub last_seq: Seq,
    /// Chain value after `last_seq`.
    pub chain: u64,
    /// Offset in the last segment where the next record goes.
    pub end_offset: usize,
    /// Bytes after `end_offset` in the last segment that are not zero (a torn write) and must be
    /// zeroed before appending: `end_offset..dirty_end`.
    pub dirty_end: usize,
    /// The highest durable mark found.
    pub durable_mark: Seq,
    /// The last segment's header could not be read and held nothing: an interrupted creation
    /// (only possible after a power loss; removed by open).
    pub incomplete_last: Option<PathBuf>,
}

fn corrupt(segment: &Path, offset: usize, kind: CorruptionKind) -> Error {
    Error::Corrupt(Corruption { segment: segment.to_path_buf(), offset: offset as u64, kind })
}

/// Check every record of every segment. `Ok` when the journal is intact up to `last_seq` with
/// at most a torn tail after it; `Err(Corrupt)` otherwise. Writes nothing.
pub fn scan_journal(dir: &Path) -> Result<Option<JournalScan>, Error> {
    let mut segments = list_segments(dir)?;
    if segments.is_empty() {
        return Ok(None);
    }
    let mut incomplete_last = None;
    let mut durable_mark = 0;
    let mut expected: Option<(Seq, u64)> = None; // (next seq, chain) from the previous segment
    let mut first_seq = 0;
    let n = segments.len();
    for i in 0..n {
        let (name_seq, ref path) = segments[i];
        let last = i + 1 == n;
        let map = map_read(path)?;
        let b: &[u8] = &map;
        let header = match SegmentHeader::decode(b) {
            Ok(h) => h,
            Err(_) if last && i > 0 && nonzero_end(b, 0) == 0 => {
                incomplete_last = Some(path.clone());
                break;
            }
            Err(why) => return Err(corrupt(path, 0, CorruptionKind::SegmentHeader(why))),
        };
        if header.first_seq != name_seq {
            return Err(corrupt(
                path,
                24,
                CorruptionKind::SegmentName { header_first_seq: header.first_seq },
            ));
        }
        if header.segment_bytes != b.len() as u64 {
            return Err(corrupt(
                path,
                b.len().min(header.segment_bytes as usize),
                CorruptionKind::SegmentSize {
                    expected: header.segment_bytes,
                    found: b.len() as u64,
                },
            ));
        }
        durable_mark = durable_mark.max(DurableMark::decode(b));
        let (mut seq, mut chain) = (header.first_seq, header.chain_in);
        match expected {
            None => first_seq = header.first_seq,
            Some((s, _)) if s != header.first_seq => {
                return Err(corrupt(
                    path,
                    24,
                    CorruptionKind::MissingRecords {
                        expected_first_seq: s,
                        found_first_seq: header.first_seq,
                    },
                ))
            }
            Some((_, c)) if c != header.chain_in => {
                return Err(corrupt(path, 32, CorruptionKind::ChainBreak))
            }
            Some(_) => {}
        }
        let mut off = SEGMENT_DATA_OFFSET;
        let stop = loop {
            match step(b, off, seq, chain) {
                Ok(Step::Record { crc, next, .. }) => {
                    chain = chain_next(chain, crc);
                    seq += 1;
                    off = next;
                }
                Ok(Step::Seal { .. }) if last => {
                    return Err(corrupt(
                        path,
                        off,
                        CorruptionKind::MissingSegment { next_first_seq: seq },
                    ))
                }
                Ok(Step::Seal { .. }) => break None,
                Ok(Step::End) => break Some(None),
                Err(bad) => break Some(Some(bad)),
            }
        };
        if let Some(bad) = stop {
            // Not a seal: either the end of data (last segment, or a roll interrupted between
            // creating the successor and sealing this one) or a bad record.
            let after = valid_record_after(b, off, seq - 1);
            match (bad, after) {
                (None, Some(a)) => {
                    return Err(corrupt(
                        path,
                        off,
                        CorruptionKind::ZeroedRecords { valid_record_after: a as u64 },
                    ))
                }
                (Some(bad), Some(a)) => {
                    return Err(corrupt(
                        path,
                        off,
                        CorruptionKind::Record { bad, valid_record_after: Some(a as u64) },
                    ))
                }
                (Some(bad), None) if !last => {
                    return Err(corrupt(
                        path,
                        off,
                        CorruptionKind::Record { bad, valid_record_after: None },
                    ))
                }
                _ => {}
            }
            if last {
                if durable_mark > seq - 1 {
                    return Err(corrupt(
                        path,
                        off,
                        CorruptionKind::DurableRecordsLost {
                            durable_seq: durable_mark,
                            last_valid_seq: seq - 1,
                        },
                    ));
                }
                let dirty_end = nonzero_end(b, off);
                return Ok(Some(JournalScan {
                    segments,
                    first_seq,
                    last_seq: seq - 1,
                    chain,
                    end_offset: off,
                    dirty_end,
                    durable_mark,
                    incomplete_last,
                }));
            }
        }
        expected = Some((seq, chain));
    }
    // Only reached when the last segment was an interrupted creation.
    let (seq, chain) = expected.expect("an interrupted creation is never the first segment");
    segments.pop();
    let (_, prev_path) = segments.last().expect("a predecessor exists").clone();
    if durable_mark > seq - 1 {
        return Err(corrupt(
            &prev_path,
            0,
            CorruptionKind::DurableRecordsLost {
                durable_seq: durable_mark,
                last_valid_seq: seq - 1,
            },
        ));
    }
    // The predecessor ended without a seal (checked above); appending resumes in it.
    let map = map_read(&prev_path)?;
    let mut off = SEGMENT_DATA_OFFSET;
    let header = SegmentHeader::decode(&map).expect("checked above");
    let (mut s, mut c) = (header.first_seq, header.chain_in);
    while let Ok(Step::Record { crc, next, .. }) = step(&map, off, s, c) {
        c = chain_next(c, crc);
        s += 1;
        off = next;
    }
    debug_assert_eq!((s, c), (seq, chain));
    Ok(Some(JournalScan {
        segments,
        first_seq,
        last_seq: seq - 1,
        chain,
        end_offset: off,
        dirty_end: nonzero_end(&map, off),
        durable_mark,
        incomplete_last,
    }))
}
