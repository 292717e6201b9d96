//! Storage faults injected into a closed journal, each with its documented outcome
//! (crate docs, `# Recovery`): a torn tail is truncated on open; corruption is refused with the
//! segment and offset, and `repair` truncates there on request.

use novate_journal::format::*;
use novate_journal::*;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const SEG: u64 = 128 << 10;
const LEN: usize = 100;
/// Bytes per record of LEN payload bytes.
const REC: usize = RECORD_HEADER_BYTES + 104;

fn opts(policy: Policy) -> Options {
    Options { segment_bytes: SEG, policy, first_seq: 1, populate: false }
}

fn payload(seq: u64) -> Vec<u8> {
    (0..LEN).map(|i| (seq as usize * 13 + i) as u8 | 0x80).collect()
}

/// A journal of `n` records of LEN bytes; `Policy::Fsync` + close leaves a durable mark of `n`.
fn journal(dir: &Path, n: u64, policy: Policy) -> Vec<(u64, PathBuf)> {
    let (mut j, _) = Journal::open(dir, opts(policy)).unwrap();
    for seq in 1..=n {
        j.append(seq, &payload(seq)).unwrap();
    }
    j.close().unwrap();
    scan::list_segments(dir).unwrap()
}

/// Offset of record `seq` in the first segment.
fn at(seq: u64) -> u64 {
    (SEGMENT_DATA_OFFSET + (seq as usize - 1) * REC) as u64
}

fn write(path: &Path, offset: u64, bytes: &[u8]) {
    OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset).unwrap();
}

fn flip(path: &Path, offset: u64, mask: u8) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, offset).unwrap();
}

fn corruption(dir: &Path) -> Corruption {
    match Journal::open(dir, opts(Policy::None)) {
        Err(Error::Corrupt(c)) => c,
        Err(e) => panic!("expected corruption, got {e}"),
        Ok((j, r)) => panic!("expected corruption, opened at {} ({r:?})", j.last_seq()),
    }
}

fn records(dir: &Path) -> Vec<u64> {
    let mut r = Reader::open(dir, 1).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        assert_eq!(rec.payload, payload(rec.seq).as_slice());
        out.push(rec.seq);
    }
    out
}

/// After a repair the journal opens, holds exactly 1..=last, and appending continues there.
fn assert_repaired_to(dir: &Path, last: u64) {
    let report = repair(dir).unwrap();
    assert_eq!(report.last_seq, last, "{report:?}");
    let (mut j, _) = Journal::open(dir, opts(Policy::Fsync)).unwrap();
    assert_eq!(j.last_seq(), last);
    j.append(last + 1, &payload(last + 1)).unwrap();
    j.close().unwrap();
    assert_eq!(records(dir), (1..=last + 1).collect::<Vec<_>>());
}

#[test]
fn record_cut_mid_way_is_a_torn_tail_and_is_truncated() {
    let t = tempfile::tempdir().unwrap();
    let segs = journal(t.path(), 100, Policy::None);
    // A crash while record 100 was being written: its second half never reached the file.
    write(&segs[0].1, at(100) + 60, &[0u8; REC - 60]);
    let (j, report) = Journal::open(t.path(), opts(Policy::None)).unwrap();
    assert_eq!(j.last_seq(), 99);
    let (path, offset, bytes) = report.truncated.expect("reported");
    assert_eq!((path, offset), (segs[0].1.clone(), at(100)));
    assert_eq!(bytes, 60);
    drop(j);
    assert_eq!(records(t.path()), (1..=99).collect::<Vec<_>>());
}

#[test]
fn file_truncated_mid_record_is_corruption_and_repair_keeps_what_precedes_the_cut() {
    let t = tempfile::tempdir().unwrap();
    let segs = journal(t.path(), 100, Policy::None);
    OpenOptions::new().write(true).open(&segs[0].1).unwrap().set_len(at(80) + 50).unwrap();
    let c = corruption(t.path());
    assert_eq!(c.segment, segs[0].1);
    assert_eq!(c.offset, at(80) + 50);
    assert_eq!(c.kind, CorruptionKind::SegmentSize { expected: SEG, found: at(80) + 50 });
    assert_repaired_to(t.path(), 79);
}

#[test]
fn bit_flip_in_the_middle_is_corruption_named_by_segment_and_offset() {
    let t = tempfile::tempdir().unwrap();
    let segs = journal(t.path(), 100, Policy::None);
    flip(&segs[0].1, at(50) + RECORD_HEADER_BYTES as u64 + 7, 0x04);
    let c = corruption(t.path());
    assert_eq!((c.segment.clone(), c.offset), (segs[0].1.clone(), at(50)));
    assert_eq!(
        c.kind,
        CorruptionKind::Record { bad: BadRecord::Checksum, valid_record_after: Some(at(51)) }
    );
    // The reader checks every record too.
    let mut r = Reader::open(t.path(), 1).unwrap();
    let err = loop {
        match r.next() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("read past a flipped bit"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.corruption().map(|c| c.offset), Some(at(50)));
    assert_repaired_to(t.path(), 49);
}

#[test]
fn bit_flip_in_a_header_sequence_number_is_corruption() {
    let t = tempfile::tempdir().unwrap();
    let segs = journal(t.path(), 100, Policy::None);
    flip(&segs[0].1, at(30) + 8, 0x01);
    let c = corruption(t.path());
    assert_eq!(c.offset, at(30));
    assert!(matches!(
        c.kind,
        CorruptionKind::Record { bad: BadRecord::Checksum, valid_record_after: Some(_) }
    ));
}

#[test]
fn bit_flip_at_the_tail_without_a_durable_mark_is_a_torn_tail() {
    let t = tempfile::tempdir().unwrap();
    let segs = journal(t.path(), 100, Policy::None);
    flip(&segs[0].1, at(100) + 40, 0x10);
    let (j, report) = Journal::open(t.path(), opts(Policy::None)).unwrap();
    assert_eq!(j.last_seq(), 99);
    assert_eq!(report.truncated.map(|t| t.1), Some(at(100)));
}

#[test]
fn bit_flip_at_the_tail_of_durable_records_is_corruption() {
    let t = tempfile::tempdir().unwrap();
    let segs = journal(t.path(), 100, Policy::Fsync);
    flip(&segs[0].1, at(100) + 40, 0x10);
    let c = corruption(t.path());
    assert_eq!(c.offset, at(100));
    assert_eq!(c.kind, CorruptionKind::DurableRecordsLost { durable_seq: 100, last_valid_seq: 99 });
    assert_repaired_to(t.path(), 99);
}

#[test]
fn zeroed_page_in_the_middle_is_corruption() {
    let t = tempfile::tempdir().unwrap();
    let segs = journal(t.path(), 200, Policy::None);
    let page = 3 * 4096u64;
    write(&segs[0].1, page, &[0u8; 4096]);
    let c = corruption(t.path());
    let first_hit = (page - SEGMENT_DATA_OFFSET as u64) / REC as u64 + 1; // record straddling the page start
    assert_eq!(c.offset, at(first_hit));
    assert!(
        matches!(
            c.kind,
            CorruptionKind::Record { valid_record_after: Some(_), .. }
                | CorruptionKind::ZeroedRecords { .. }
        ),
        "{c}"
    );
    assert_repaired_to(t.path(), first_hit - 1);
}

#[test]
fn zeroed_page_at_the_tail_is_a_torn_tail() {
    let t = tempfile::tempdir().unwrap();
    let segs = journal(t.path(), 100, Policy::None);
    let end = at(101);
    let page = (end - 1) / 4096 * 4096; // the page holding the last record's end
    write(&segs[0].1, page, &[0u8; 4096]);
    let (j, report) = Journal::open(t.path(), opts(Policy::None)).unwrap();
    let last = (page - SEGMENT_DATA_OFFSET as u64) / REC as u64; // records wholly before the page
    assert_eq!(j.last_seq(), last);
    assert_eq!(report.truncated.map(|t| t.1), Some(at(last + 1)));
}

#[test]
fn deleted_middle_segment_is_missing_records() {
    let t = tempfile::tempdir().unwrap();
    let segs = journal(t.path(), 3_000, Policy::Fsync);
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1].1).unwrap();
    let c = corruption(t.path());
    assert_eq!(c.segment, segs[2].1);
    assert_eq!(
        c.kind,
        CorruptionKind::MissingRecords {
            expected_first_seq: segs[1].0,
            found_first_seq: segs[2].0
        }
    );
    // Repair moves the orphaned segments aside; the durable mark they carried goes with them.
    assert_repaired_to(t.path(), segs[1].0 - 1);
    assert!(std::fs::read_dir(t.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("quarantine-")));
}

#[test]
fn deleted_last_segment_is_a_missing_segment() {
    let t = tempfile::tempdir().unwrap();
    let segs = journal(t.path(), 3_000, Policy::None);
    let last = segs.last().unwrap();
    std::fs::remove_file(&last.1).unwrap();
    let c = corruption(t.path());
    assert_eq!(c.segment, segs[segs.len() - 2].1);
    assert_eq!(c.kind, CorruptionKind::MissingSegment { next_first_seq: last.0 });
    assert_repaired_to(t.path(), last.0 - 1);
}

#[test]
fn flipped_segment_header_is_corruption() {
    let t = tempfile::tempdir().unwrap();
    let segs = journal(t.path(), 10, Policy::None);
    flip(&segs[0].1, 30, 0x01);
    let c = corruption(t.path());
    assert_eq!(
        (c.offset, c.kind),
        (0, CorruptionKind::SegmentHeader("segment header checksum mismatch"))
    );
}

#[test]
fn crash_between_creating_a_segment_and_sealing_its_predecessor_is_not_corruption() {
    let t = tempfile::tempdir().unwrap();
    let segs = journal(t.path(), 2_000, Policy::None);
    // Find the seal of the first segment and erase it, as if the crash came right before it.
    let b = std::fs::read(&segs[0].1).unwrap();
    let mut off = SEGMENT_DATA_OFFSET;
    while RecordHeader::read(&b[off..]).len != SEAL_LEN {
        off += REC;
    }
    write(&segs[0].1, off as u64, &[0u8; RECORD_HEADER_BYTES]);
    std::fs::write(t.path().join("00000000000000009999.nvj.tmp"), b"half-made").unwrap();
    let (j, report) = Journal::open(t.path(), opts(Policy::None)).unwrap();
    assert_eq!(j.last_seq(), 2_000);
    assert_eq!(report.truncated, None);
    assert_eq!(report.removed_tmp.len(), 1);
    drop(j);
    assert_eq!(records(t.path()).len(), 2_000);
}
