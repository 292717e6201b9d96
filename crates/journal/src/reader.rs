//! Reading a journal from any sequence number, checking the CRC, the sequence and the hash
//! chain of every record on the way (records before `from` are checked too: the chain must be
//! followed from the start of their segment).

use crate::error::{Corruption, CorruptionKind, Error};
use crate::format::*;
use crate::scan::{list_segments, map_read, step, Step};
use memmap2::Mmap;
use novate_core::{Nanos, Seq};
use std::path::PathBuf;

/// One record, borrowed from the mapped segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: Seq,
    pub ts: Nanos,
    pub payload: &'a [u8],
}

/// Iterates records `from..=until` in order. Use `while let Some(r) = reader.next()? { .. }`.
pub struct Reader {
    segments: Vec<(Seq, PathBuf)>,
    index: usize,
    map: Option<Mmap>,
    offset: usize,
    seq: Seq,
    chain: u64,
    from: Seq,
    until: Seq,
    /// The next segment must start at `seq` with chain `chain` (set after a seal or an
    /// unsealed end).
    entering: bool,
}

impl Reader {
    /// A reader of the journal in `dir` starting at record `from` (records before it are
    /// verified but not returned). The journal may be written at the same time: bound the
    /// reader with [`Reader::until`] to the durable (or committed) watermark.
    pub fn open(dir: &std::path::Path, from: Seq) -> Result<Reader, Error> {
        let segments = list_segments(dir)?;
        let index = segments.iter().rposition(|&(first, _)| first <= from).unwrap_or(0);
        Ok(Reader {
            segments,
            index,
            map: None,
            offset: 0,
            seq: 0,
            chain: 0,
            from,
            until: Seq::MAX,
            entering: false,
        })
    }

    /// Stop after record `until`.
    pub fn until(mut self, until: Seq) -> Reader {
        self.until = until;
        self
    }

    fn path(&self) -> PathBuf {
        self.segments[self.index].1.clone()
    }

    fn corrupt(&self, offset: usize, kind: CorruptionKind) -> Error {
        Error::Corrupt(Corruption { segment: self.path(), offset: offset as u64, kind })
    }

    /// Map segment `index` and check that it continues what came before.
    fn enter(&mut self) -> Result<(), Error> {
        let path = self.path();
        let map = map_read(&path)?;
        let h = SegmentHeader::decode(&map)
            .map_err(|why| self.corrupt(0, CorruptionKind::SegmentHeader(why)))?;
        if h.first_seq != self.segments[self.index].0 {
            return Err(
                self.corrupt(24, CorruptionKind::SegmentName { header_first_seq: h.first_seq })
            );
        }
        if self.entering {
            if h.first_seq != self.seq {
                return Err(self.corrupt(
                    24,
                    CorruptionKind::MissingRecords {
                        expected_first_seq: self.seq,
                        found_first_seq: h.first_seq,
                    },
                ));
            }
            if h.chain_in != self.chain {
                return Err(self.corrupt(32, CorruptionKind::ChainBreak));
            }
        } else if h.first_seq > self.from {
            return Err(Error::JournalGap {
                needed_from: self.from,
                journal_first: h.first_seq,
                journal_last: 0,
            });
        }
        self.seq = h.first_seq;
        self.chain = h.chain_in;
        self.offset = SEGMENT_DATA_OFFSET;
        self.map = Some(map);
        Ok(())
    }

    /// The next record, `None` at the end of the journal or after `until`.
    #[allow(clippy::should_implement_trait)] // lending: the record borrows the mapping
    pub fn next(&mut self) -> Result<Option<Record<'_>>, Error> {
        let (seq, ts, at, len) = loop {
            if self.seq > self.until && self.map.is_some() {
                return Ok(None);
            }
            if self.map.is_none() {
                if self.index >= self.segments.len() {
                    return Ok(None);
                }
                self.enter()?;
                continue;
            }
            let b = self.map.as_deref().expect("mapped");
            match step(b, self.offset, self.seq, self.chain) {
                Ok(Step::Record { seq, ts, crc, payload_at, len, next }) => {
                    self.chain = chain_next(self.chain, crc);
                    self.seq = seq + 1;
                    self.offset = next;
                    if seq < self.from {
                        continue;
                    }
                    if seq > self.until {
                        return Ok(None);
                    }
                    break (seq, ts, payload_at, len);
                }
                Ok(Step::Seal { .. }) | Ok(Step::End) => {
                    let sealed =
                        matches!(step(b, self.offset, self.seq, self.chain), Ok(Step::Seal { .. }));
                    if self.index + 1 >= self.segments.len() {
                        if sealed {
                            return Err(self.corrupt(
                                self.offset,
                                CorruptionKind::MissingSegment { next_first_seq: self.seq },
                            ));
                        }
                        return Ok(None);
                    }
                    self.index += 1;
                    self.map = None;
                    self.entering = true;
                }
                Err(bad) => {
                    return Err(self.corrupt(
                        self.offset,
                        CorruptionKind::Record { bad, valid_record_after: None },
                    ))
                }
            }
        };
        let b = self.map.as_deref().expect("mapped");
        Ok(Some(Record { seq, ts, payload: &b[at..at + len] }))
    }

    /// Sequence number of the next record this reader would return.
    pub fn position(&self) -> Seq {
        self.seq.max(self.from)
    }
}
