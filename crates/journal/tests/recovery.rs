//! Replay equals live; snapshot + tail equals live; snapshot verification and fallback.

use novate_core::{Command, Limits, StateMachine};
use novate_journal::*;
use std::path::Path;
use std::time::Duration;

const SEED: u64 = 0x5eed;
const N: u64 = 30_000;

fn opts() -> Options {
    Options { segment_bytes: 256 << 10, policy: Policy::Fsync, first_seq: 1, populate: false }
}

fn limits() -> Limits {
    synthetic::limits()
}

/// Apply the synthetic workload live to a state machine while journaling it; returns the live
/// state machine and the state hash at `snapshot_at` (with its export written to `store`).
fn run_live(dir: &Path, to: u64, snapshot_at: &[u64]) -> StateMachine {
    let (jdir, sdir) = data_dirs(dir);
    let store = SnapshotStore::open(&sdir).unwrap();
    let (mut j, _) = Journal::open(&jdir, opts()).unwrap();
    let mut sm = StateMachine::new(limits()).unwrap();
    for seq in 1..=to {
        let cmd: Command = synthetic::command(SEED, seq);
        assert_eq!(j.append_command(seq * 1_000, seq, &cmd).unwrap(), seq);
        let _ = sm.apply(&cmd, seq, seq * 1_000);
        if seq % 97 == 0 {
            j.commit().unwrap();
        }
        if snapshot_at.contains(&seq) {
            store.write(&sm.export(), sm.state_hash()).unwrap();
        }
    }
    j.close().unwrap();
    sm
}

#[test]
fn replay_equals_live() {
    let t = tempfile::tempdir().unwrap();
    let mut live = run_live(t.path(), N, &[]);
    let (jdir, _) = data_dirs(t.path());
    let mut fresh = StateMachine::new(limits()).unwrap();
    let stats = replay(&mut Reader::open(&jdir, 1).unwrap(), &mut fresh).unwrap();
    assert_eq!(stats.records, N);
    assert_eq!(stats.last_seq, N);
    assert!(stats.rejected < N / 5, "{stats:?}");
    assert_eq!(fresh.state_hash(), live.state_hash());
    assert_eq!(fresh.last_seq(), live.last_seq());
    // Every record decodes back to the command that was appended, request id included.
    let mut r = Reader::open(&jdir, 1).unwrap();
    while let Some(rec) = r.next().unwrap() {
        assert_eq!(rec.ts, rec.seq * 1_000);
        assert_eq!(
            decode_command(rec.seq, rec.payload).unwrap(),
            (rec.seq, synthetic::command(SEED, rec.seq))
        );
    }
}

#[test]
fn snapshot_plus_tail_equals_live() {
    let t = tempfile::tempdir().unwrap();
    let mut live = run_live(t.path(), N, &[10_000, 20_000]);
    let mut rec = recover(t.path(), limits(), opts()).unwrap();
    assert_eq!(rec.snapshot.map(|s| s.seq), Some(20_000));
    assert_eq!(rec.replay.records, N - 20_000);
    assert_eq!(rec.last_seq, N);
    assert_eq!(rec.state.state_hash(), live.state_hash());
    assert!(rec.skipped_snapshots.is_empty());
    // The recovered journal continues where it was.
    let mut j = rec.journal;
    assert_eq!(j.next_seq(), N + 1);
    j.append_command(0, 1, &synthetic::command(SEED, N + 1)).unwrap();
    j.close().unwrap();
}

#[test]
fn snapshot_read_back_is_exactly_the_export() {
    let t = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::new(limits()).unwrap();
    for seq in 1..=5_000 {
        let _ = sm.apply(&synthetic::command(SEED, seq), seq, 0);
    }
    let store = SnapshotStore::open(t.path()).unwrap();
    let snap = sm.export();
    assert!(!snap.positions.is_empty() && !snap.trades.is_empty());
    let info = store.write(&snap, sm.state_hash()).unwrap();
    let (info2, back) = store.read(5_000).unwrap();
    assert_eq!(info, info2);
    assert_eq!(back, snap);
    let (_, mut restored) = store.load(5_000, limits()).unwrap();
    assert_eq!(restored.state_hash(), sm.state_hash());
    // Not newer than the newest: refused.
    assert!(matches!(store.write(&snap, sm.state_hash()), Err(Error::SnapshotInvalid { .. })));
}

#[test]
fn a_snapshot_that_fails_verification_falls_back_to_the_previous_one() {
    let t = tempfile::tempdir().unwrap();
    let mut live = run_live(t.path(), 12_000, &[4_000]);
    let (_, sdir) = data_dirs(t.path());
    {
        // A snapshot at 8000 whose stored hash does not match its content.
        let store = SnapshotStore::open(&sdir).unwrap();
        let mut sm = StateMachine::new(limits()).unwrap();
        for seq in 1..=8_000 {
            let _ = sm.apply(&synthetic::command(SEED, seq), seq, 0);
        }
        store.write(&sm.export(), sm.state_hash() ^ 1).unwrap();
        assert!(matches!(
            store.load(8_000, limits()),
            Err(Error::SnapshotInvalid { seq: 8_000, .. })
        ));
    }
    let mut rec = recover(t.path(), limits(), opts()).unwrap();
    assert_eq!(rec.snapshot.map(|s| s.seq), Some(4_000));
    assert_eq!(rec.skipped_snapshots.len(), 1);
    assert_eq!(rec.skipped_snapshots[0].0, 8_000);
    assert_eq!(rec.state.state_hash(), live.state_hash());
}

#[test]
fn a_snapshot_ahead_of_the_journal_is_skipped_and_a_lost_journal_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let mut live = run_live(t.path(), 3_000, &[1_000]);
    let (jdir, sdir) = data_dirs(t.path());
    {
        let store = SnapshotStore::open(&sdir).unwrap();
        let mut sm = StateMachine::new(limits()).unwrap();
        for seq in 1..=5_000 {
            let _ = sm.apply(&synthetic::command(SEED, seq), seq, 0);
        }
        store.write(&sm.export(), sm.state_hash()).unwrap();
    }
    let mut rec = recover(t.path(), limits(), opts()).unwrap();
    assert_eq!(rec.snapshot.map(|s| s.seq), Some(1_000));
    assert_eq!(rec.skipped_snapshots[0].0, 5_000);
    assert_eq!(rec.state.state_hash(), live.state_hash());
    drop(rec);
    std::fs::remove_dir_all(&jdir).unwrap();
    assert!(matches!(recover(t.path(), limits(), opts()), Err(Error::JournalGap { .. })));
}

#[test]
fn snapshotter_writes_on_its_thread_and_retention_follows() {
    let t = tempfile::tempdir().unwrap();
    let (jdir, sdir) = data_dirs(t.path());
    let store = SnapshotStore::open(&sdir).unwrap();
    let snapshotter = Snapshotter::spawn(store.clone());
    let (mut j, _) = Journal::open(&jdir, opts()).unwrap();
    let mut sm = StateMachine::new(limits()).unwrap();
    let mut written = Vec::new();
    for seq in 1..=20_000 {
        let cmd = synthetic::command(SEED, seq);
        j.append_command(seq, seq, &cmd).unwrap();
        let _ = sm.apply(&cmd, seq, seq);
        if seq % 5_000 == 0 {
            j.commit_wait().unwrap();
            // Export in internal order into the last snapshot's buffers (after the first).
            let mut snap = snapshotter.spare().unwrap_or_default();
            assert_eq!(snap.last_seq, written.last().copied().unwrap_or(0), "buffers came back");
            sm.export_into(&mut snap);
            assert!(snapshotter.submit(snap, sm.state_hash()));
            let w = snapshotter.wait_result(Duration::from_secs(60)).unwrap().unwrap();
            assert_eq!(w.info.seq, seq);
            written.push(w.info.seq);
            j.retain(w.info.seq, None).unwrap();
        }
    }
    // A snapshot whose records do not hash to the state's hash is refused, not written.
    let mut snap = sm.export();
    snap.last_seq += 1;
    snap.accounts[0].1 += 1; // one unit of collateral
    assert!(snapshotter.submit(snap, sm.state_hash()));
    let r = snapshotter.wait_result(Duration::from_secs(60)).unwrap();
    assert!(matches!(r, Err(Error::SnapshotInvalid { seq: 20_001, .. })), "{r:?}");
    // The hash can also be computed on the snapshotter thread (the caller pays only export()).
    j.append_command(20_001, 20_001, &synthetic::command(SEED, 20_001)).unwrap();
    let _ = sm.apply(&synthetic::command(SEED, 20_001), 20_001, 20_001);
    j.commit_wait().unwrap();
    assert!(snapshotter.submit_unhashed(sm.export(), limits()));
    let w = snapshotter.wait_result(Duration::from_secs(60)).unwrap().unwrap();
    assert_eq!((w.info.seq, w.info.state_hash), (20_001, sm.state_hash()));
    snapshotter.shutdown();
    j.close().unwrap();
    assert_eq!(
        store.list().unwrap().iter().map(|i| i.seq).collect::<Vec<_>>(),
        vec![20_001, 20_000]
    );
    assert!(scan::list_segments(&jdir).unwrap()[0].0 > 1, "retention removed old segments");
    drop(store);
    let mut rec = recover(t.path(), limits(), opts()).unwrap();
    assert_eq!(rec.state.state_hash(), sm.state_hash());
    assert_eq!(rec.replay.records, 0);
    assert_eq!(rec.snapshot.map(|s| s.seq), Some(20_001));
    assert_eq!(written, vec![5_000, 10_000, 15_000, 20_000]);
}
