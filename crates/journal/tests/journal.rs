//! Append, read, reopen, group commit and retention of the journal.

use novate_journal::format::*;
use novate_journal::*;
use std::path::Path;
use std::time::Duration;

const SEG: u64 = 128 << 10;

fn opts(policy: Policy) -> Options {
    Options { segment_bytes: SEG, policy, first_seq: 1, populate: false }
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i * 7) as u8 | 1).collect()
}

fn read_all(dir: &Path, from: u64) -> Vec<(u64, u64, Vec<u8>)> {
    let mut r = Reader::open(dir, from).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        out.push((rec.seq, rec.ts, rec.payload.to_vec()));
    }
    out
}

#[test]
fn append_read_across_segments_and_from_any_seq() {
    let t = tempfile::tempdir().unwrap();
    let (mut j, report) = Journal::open(t.path(), opts(Policy::None)).unwrap();
    assert!(report.created);
    for seq in 1..=5_000u64 {
        let len = 1 + (seq as usize * 37) % 300;
        assert_eq!(j.append(seq * 10, &payload(seq, len)).unwrap(), seq);
        if seq % 7 == 0 {
            j.commit().unwrap();
        }
    }
    j.commit().unwrap();
    assert_eq!(j.durable(), 5_000, "Policy::None: durable at commit");
    drop(j);
    let segments = scan::list_segments(t.path()).unwrap();
    assert!(segments.len() > 5, "rolled into {} segments", segments.len());
    for from in [1u64, 2, 999, 1_234, 4_999, 5_000] {
        let all = read_all(t.path(), from);
        assert_eq!(all.len() as u64, 5_001 - from);
        for (seq, ts, p) in all {
            assert_eq!(ts, seq * 10);
            assert_eq!(p, payload(seq, 1 + (seq as usize * 37) % 300));
        }
    }
    assert!(read_all(t.path(), 5_001).is_empty());
    let r = Reader::open(t.path(), 10).unwrap().until(20);
    let mut r = r;
    let mut n = 0;
    while let Some(rec) = r.next().unwrap() {
        assert!((10..=20).contains(&rec.seq));
        n += 1;
    }
    assert_eq!(n, 11);
}

#[test]
fn reopen_continues_sequence_and_chain() {
    let t = tempfile::tempdir().unwrap();
    for round in 0..4u64 {
        let (mut j, report) = Journal::open(t.path(), opts(Policy::Fsync)).unwrap();
        assert_eq!(report.last_seq, round * 700);
        assert_eq!(report.truncated, None);
        for _ in 0..700 {
            let seq = j.next_seq();
            j.append(seq, &payload(seq, 120)).unwrap();
        }
        assert_eq!(j.close().unwrap(), (round + 1) * 700);
    }
    let all = read_all(t.path(), 1);
    assert_eq!(all.len(), 2_800);
    assert!(all.iter().enumerate().all(|(i, r)| r.0 == i as u64 + 1 && r.2 == payload(r.0, 120)));
}

#[test]
fn fsync_policy_moves_the_watermark_only_through_the_flusher() {
    let t = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(t.path(), opts(Policy::Fsync)).unwrap();
    let w = j.watermark();
    for seq in 1..=100u64 {
        j.append(seq, &payload(seq, 64)).unwrap();
    }
    assert_eq!(w.durable(), 0, "nothing is durable before commit");
    let last = j.commit().unwrap();
    assert!(w.wait(last, Duration::from_secs(30)).unwrap());
    assert_eq!(w.durable(), 100);
    assert!(w.syncs() >= 1);
    // A reader on another thread waits for a later batch.
    let w2 = w.clone();
    let waiter = std::thread::spawn(move || w2.wait(150, Duration::from_secs(30)).unwrap());
    for seq in 101..=150u64 {
        j.append(seq, &payload(seq, 64)).unwrap();
    }
    j.commit().unwrap();
    assert!(waiter.join().unwrap());
    assert_eq!(j.commit_wait().unwrap(), 150);
    assert!(!w.wait(151, Duration::from_millis(20)).unwrap(), "151 was never appended");
    drop(j);
    // The close wrote a durable mark that covers everything.
    let segs = scan::list_segments(t.path()).unwrap();
    let map = std::fs::read(&segs.last().unwrap().1).unwrap();
    assert_eq!(DurableMark::decode(&map), 150);
}

#[test]
fn payload_limits_are_typed_errors() {
    let t = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::open(t.path(), opts(Policy::None)).unwrap();
    assert!(matches!(j.append(0, &[]), Err(Error::PayloadSize(0))));
    assert!(matches!(j.append(0, &vec![1u8; RECORD_PAYLOAD_MAX + 1]), Err(Error::PayloadSize(_))));
    assert_eq!(j.append(0, &vec![1u8; RECORD_PAYLOAD_MAX]).unwrap(), 1);
    assert!(matches!(
        Journal::open(t.path(), Options { segment_bytes: 4096, ..opts(Policy::None) }),
        Err(Error::InvalidOptions(_))
    ));
}

#[test]
fn retention_archives_or_deletes_only_segments_below_the_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let archive = t.path().join("archive");
    let jdir = t.path().join("j");
    let (mut j, _) = Journal::open(&jdir, opts(Policy::Fsync)).unwrap();
    for seq in 1..=4_000u64 {
        j.append(seq, &payload(seq, 100)).unwrap();
    }
    j.commit_wait().unwrap();
    let before = scan::list_segments(&jdir).unwrap();
    assert!(before.len() >= 4);
    let snapshot_seq = before[2].0 + 5; // inside the third segment
    let moved = j.retain(snapshot_seq, Some(&archive)).unwrap();
    assert_eq!(moved.len(), 2, "the two segments wholly at or below the snapshot");
    assert_eq!(j.first_seq(), before[2].0);
    assert_eq!(std::fs::read_dir(&archive).unwrap().count(), 2);
    // Reading from the snapshot on still works; from before it is a typed gap.
    assert_eq!(read_all(&jdir, snapshot_seq + 1).len() as u64, 4_000 - snapshot_seq);
    assert!(matches!(Reader::open(&jdir, 1).unwrap().next(), Err(Error::JournalGap { .. })));
    // Delete everything below the newest segment: the newest always stays.
    let deleted = j.retain(10_000, None).unwrap();
    assert_eq!(deleted.len(), before.len() - 3);
    assert_eq!(scan::list_segments(&jdir).unwrap().len(), 1);
    for seq in 4_001..=4_010u64 {
        j.append(seq, &payload(seq, 100)).unwrap();
    }
    j.close().unwrap();
    let (j, report) = Journal::open(&jdir, opts(Policy::None)).unwrap();
    assert_eq!(report.last_seq, 4_010);
    assert_eq!(j.first_seq(), before.last().unwrap().0);
}
