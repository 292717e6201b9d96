//! Snapshots of the state machine in LMDB (heed), and the thread that writes them.
//!
//! # Layout
//! One LMDB environment (`<dir>/snapshots`) holds the newest [`SNAPSHOTS_RETAINED`] snapshots.
//! Keys are big-endian so LMDB's byte order is (snapshot seq, id) ascending; values are fixed
//! little-endian records:
//!
//! ```text
//! database     key (big-endian)                       value (little-endian)                    bytes
//! meta         seq:u64                                last_seq u64, state_hash u64, instruments  64
//!                                                     u64, accounts u64, positions u64, trades
//!                                                     u64, created_ns u64, format u32, crc32c u32
//! instruments  seq:u64 id:u32                         multiplier i64, margin_bps i64,            33
//!                                                     settle_days u8, mark i64, last_price i64
//! accounts     seq:u64 id:u64                         max_position i64, max_notional i128,       57
//!                                                     max_loss i128, suspended u8, collateral i128
//! positions    seq:u64 account:u64 instrument:u32     qty i64, cost i128, realized i128          40
//! trades       seq:u64 trade_id:u64                   buy u64, sell u64, instrument u32, qty      41
//!                                                     i64, price i64, trade_date u32, busted u8
//! ```
//!
//! A snapshot is written in one write transaction, rows in ascending key order (LMDB `APPEND`),
//! `meta` last; LMDB commits it atomically and durably (fsync at commit) or not at all.
//! Loading checks the counts, restores through `StateMachine::restore` (which validates ids and
//! capacities) and compares `state_hash()` with the stored one: a mismatch is
//! [`Error::SnapshotInvalid`] and recovery falls back to the previous snapshot.

use crate::error::Error;
use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions, PutFlags};
use novate_core::{AccountSpec, Book, InstrumentSpec, Limits, Seq, Snapshot, StateMachine, Trade};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Snapshots kept; older ones are deleted in the transaction that writes a new one. Two, so a
/// snapshot that fails verification on load still leaves one to fall back to.
pub const SNAPSHOTS_RETAINED: usize = 2;
/// LMDB map size: address space reserved, not disk used. 64 GiB holds ~500M positions.
pub const SNAPSHOT_MAP_BYTES: usize = 64 << 30;
/// Version of the value layouts above.
pub const SNAPSHOT_FORMAT: u32 = 1;

const META_BYTES: usize = 64;
const INSTRUMENT_BYTES: usize = 33;
const ACCOUNT_BYTES: usize = 57;
const POSITION_BYTES: usize = 40;
const TRADE_BYTES: usize = 41;

/// What a stored snapshot claims about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub seq: Seq,
    pub state_hash: u64,
    pub instruments: u64,
    pub accounts: u64,
    pub positions: u64,
    pub trades: u64,
    pub created_ns: u64,
}

/// The snapshot store: an LMDB environment and its five databases.
#[derive(Clone)]
pub struct SnapshotStore {
    env: Env,
    path: PathBuf,
    meta: Database<Bytes, Bytes>,
    instruments: Database<Bytes, Bytes>,
    accounts: Database<Bytes, Bytes>,
    positions: Database<Bytes, Bytes>,
    trades: Database<Bytes, Bytes>,
}

struct W<const N: usize> {
    b: [u8; N],
    at: usize,
}

impl<const N: usize> W<N> {
    fn new() -> Self {
        W { b: [0; N], at: 0 }
    }
    fn put(mut self, bytes: &[u8]) -> Self {
        self.b[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
        self
    }
    fn done(self) -> [u8; N] {
        assert_eq!(self.at, N, "layout size");
        self.b
    }
}

struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl R<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let v: [u8; N] = self.b[self.at..self.at + N].try_into().expect("length checked by caller");
        self.at += N;
        v
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
    fn i128(&mut self) -> i128 {
        i128::from_le_bytes(self.take())
    }
    fn u32_be(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn u64_be(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
}

fn key12(seq: Seq, id: u32) -> [u8; 12] {
    W::<12>::new().put(&seq.to_be_bytes()).put(&id.to_be_bytes()).done()
}
fn key16(seq: Seq, id: u64) -> [u8; 16] {
    W::<16>::new().put(&seq.to_be_bytes()).put(&id.to_be_bytes()).done()
}
fn key20(seq: Seq, a: u64, i: u32) -> [u8; 20] {
    W::<20>::new().put(&seq.to_be_bytes()).put(&a.to_be_bytes()).put(&i.to_be_bytes()).done()
}

fn encode_meta(i: &SnapshotInfo) -> [u8; META_BYTES] {
    let w = W::<META_BYTES>::new()
        .put(&i.seq.to_le_bytes())
        .put(&i.state_hash.to_le_bytes())
        .put(&i.instruments.to_le_bytes())
        .put(&i.accounts.to_le_bytes())
        .put(&i.positions.to_le_bytes())
        .put(&i.trades.to_le_bytes())
        .put(&i.created_ns.to_le_bytes())
        .put(&SNAPSHOT_FORMAT.to_le_bytes());
    let crc = crc32c::crc32c(&w.b[..60]);
    w.put(&crc.to_le_bytes()).done()
}

fn decode_meta(b: &[u8]) -> Result<SnapshotInfo, String> {
    if b.len() != META_BYTES {
        return Err(format!("meta of {} bytes", b.len()));
    }
    if u32::from_le_bytes(b[60..64].try_into().expect("4")) != crc32c::crc32c(&b[..60]) {
        return Err("meta checksum mismatch".into());
    }
    let mut r = R { b, at: 0 };
    let info = SnapshotInfo {
        seq: r.u64(),
        state_hash: r.u64(),
        instruments: r.u64(),
        accounts: r.u64(),
        positions: r.u64(),
        trades: r.u64(),
        created_ns: r.u64(),
    };
    if r.u32() != SNAPSHOT_FORMAT {
        return Err("unknown snapshot format".into());
    }
    Ok(info)
}

fn lmdb(e: heed::Error) -> Error {
    Error::Lmdb(e.to_string())
}

impl SnapshotStore {
    /// Open (or create) the store in `dir`. One store per directory per process.
    pub fn open(dir: &Path) -> Result<SnapshotStore, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create_dir_all", dir, e))?;
        let mut o = EnvOpenOptions::new();
        o.map_size(SNAPSHOT_MAP_BYTES).max_dbs(8);
        // SAFETY: heed's contract for `open`: the environment is not opened twice in this
        // process (one SnapshotStore per directory; clones share the Env) and its files are not
        // modified by anything but LMDB.
        let env = unsafe { o.open(dir) }.map_err(lmdb)?;
        let mut wtxn = env.write_txn().map_err(lmdb)?;
        let meta = env.create_database(&mut wtxn, Some("meta")).map_err(lmdb)?;
        let instruments = env.create_database(&mut wtxn, Some("instruments")).map_err(lmdb)?;
        let accounts = env.create_database(&mut wtxn, Some("accounts")).map_err(lmdb)?;
        let positions = env.create_database(&mut wtxn, Some("positions")).map_err(lmdb)?;
        let trades = env.create_database(&mut wtxn, Some("trades")).map_err(lmdb)?;
        wtxn.commit().map_err(lmdb)?;
        Ok(SnapshotStore {
            env,
            path: dir.to_path_buf(),
            meta,
            instruments,
            accounts,
            positions,
            trades,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stored snapshots, newest first (entries whose meta does not decode are skipped).
    pub fn list(&self) -> Result<Vec<SnapshotInfo>, Error> {
        let rtxn = self.env.read_txn().map_err(lmdb)?;
        let mut out = Vec::new();
        for kv in self.meta.iter(&rtxn).map_err(lmdb)? {
            let (_, v) = kv.map_err(lmdb)?;
            if let Ok(i) = decode_meta(v) {
                out.push(i);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Write `snap` (taken at `snap.last_seq`) with the `state_hash()` of the state it was
    /// exported from. Its seq must be above every stored snapshot's. Deletes snapshots beyond
    /// [`SNAPSHOTS_RETAINED`] in the same transaction.
    pub fn write(&self, snap: &Snapshot, state_hash: u64) -> Result<SnapshotInfo, Error> {
        let seq = snap.last_seq;
        let created_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let info = SnapshotInfo {
            seq,
            state_hash,
            instruments: snap.instruments.len() as u64,
            accounts: snap.accounts.len() as u64,
            positions: snap.positions.len() as u64,
            trades: snap.trades.len() as u64,
            created_ns,
        };
        let existing = self.list()?;
        if existing.first().is_some_and(|n| n.seq >= seq) {
            return Err(Error::SnapshotInvalid {
                seq,
                why: "not newer than the newest stored snapshot".into(),
            });
        }
        let mut wtxn = self.env.write_txn().map_err(lmdb)?;
        let append = PutFlags::APPEND;
        for &(s, mark, last) in &snap.instruments {
            let v = W::<INSTRUMENT_BYTES>::new()
                .put(&s.multiplier.to_le_bytes())
                .put(&s.margin_bps.to_le_bytes())
                .put(&[s.settle_days])
                .put(&mark.to_le_bytes())
                .put(&last.to_le_bytes())
                .done();
            self.instruments
                .put_with_flags(&mut wtxn, append, &key12(seq, s.id), &v)
                .map_err(lmdb)?;
        }
        for &(s, collateral) in &snap.accounts {
            let v = W::<ACCOUNT_BYTES>::new()
                .put(&s.max_position.to_le_bytes())
                .put(&s.max_notional.to_le_bytes())
                .put(&s.max_loss.to_le_bytes())
                .put(&[u8::from(s.suspended)])
                .put(&collateral.to_le_bytes())
                .done();
            self.accounts.put_with_flags(&mut wtxn, append, &key16(seq, s.id), &v).map_err(lmdb)?;
        }
        for &(a, i, b) in &snap.positions {
            let v = W::<POSITION_BYTES>::new()
                .put(&b.qty.to_le_bytes())
                .put(&b.cost.to_le_bytes())
                .put(&b.realized.to_le_bytes())
                .done();
            self.positions
                .put_with_flags(&mut wtxn, append, &key20(seq, a, i), &v)
                .map_err(lmdb)?;
        }
        for &(t, busted) in &snap.trades {
            let v = W::<TRADE_BYTES>::new()
                .put(&t.buy.to_le_bytes())
                .put(&t.sell.to_le_bytes())
                .put(&t.instrument.to_le_bytes())
                .put(&t.qty.to_le_bytes())
                .put(&t.price.to_le_bytes())
                .put(&t.trade_date.to_le_bytes())
                .put(&[u8::from(busted)])
                .done();
            self.trades
                .put_with_flags(&mut wtxn, append, &key16(seq, t.trade_id), &v)
                .map_err(lmdb)?;
        }
        self.meta
            .put_with_flags(&mut wtxn, append, &seq.to_be_bytes(), &encode_meta(&info))
            .map_err(lmdb)?;
        for old in existing.iter().skip(SNAPSHOTS_RETAINED - 1) {
            self.delete_in(&mut wtxn, old.seq)?;
        }
        wtxn.commit().map_err(lmdb)?;
        Ok(info)
    }

    fn delete_in(&self, wtxn: &mut heed::RwTxn, seq: Seq) -> Result<(), Error> {
        let keys = SeqKeys::of(seq);
        let range = keys.range();
        for db in [&self.instruments, &self.accounts, &self.positions, &self.trades, &self.meta] {
            db.delete_range(wtxn, &range).map_err(lmdb)?;
        }
        Ok(())
    }

    /// Delete one snapshot (operators; tests).
    pub fn delete(&self, seq: Seq) -> Result<(), Error> {
        let mut wtxn = self.env.write_txn().map_err(lmdb)?;
        self.delete_in(&mut wtxn, seq)?;
        wtxn.commit().map_err(lmdb)
    }

    /// Read the snapshot at `seq` back (no verification beyond its meta's checksum; the
    /// counts in its meta only size the buffers, and one that cannot be allocated is an
    /// invalid snapshot, not an abort).
    pub fn read(&self, seq: Seq) -> Result<(SnapshotInfo, Snapshot), Error> {
        let bad = |why: String| Error::SnapshotInvalid { seq, why };
        let rtxn = self.env.read_txn().map_err(lmdb)?;
        let meta = self
            .meta
            .get(&rtxn, &seq.to_be_bytes())
            .map_err(lmdb)?
            .ok_or_else(|| bad("no such snapshot".into()))?;
        let info = decode_meta(meta).map_err(bad)?;
        let keys = SeqKeys::of(seq);
        let range = keys.range();
        let mut snap = Snapshot { last_seq: info.seq, ..Snapshot::default() };
        reserve(&mut snap.instruments, info.instruments)
            .map_err(|e| bad(format!("instruments: {e}")))?;
        for kv in self.instruments.range(&rtxn, &range).map_err(lmdb)? {
            let (k, v) = kv.map_err(lmdb)?;
            if k.len() != 12 || v.len() != INSTRUMENT_BYTES {
                return Err(bad("instrument row size".into()));
            }
            let mut kr = R { b: k, at: 8 };
            let id = kr.u32_be();
            let mut r = R { b: v, at: 0 };
            let spec = InstrumentSpec {
                id,
                multiplier: r.i64(),
                margin_bps: r.i64(),
                settle_days: r.u8(),
            };
            snap.instruments.push((spec, r.i64(), r.i64()));
        }
        reserve(&mut snap.accounts, info.accounts).map_err(|e| bad(format!("accounts: {e}")))?;
        for kv in self.accounts.range(&rtxn, &range).map_err(lmdb)? {
            let (k, v) = kv.map_err(lmdb)?;
            if k.len() != 16 || v.len() != ACCOUNT_BYTES {
                return Err(bad("account row size".into()));
            }
            let id = R { b: k, at: 8 }.u64_be();
            let mut r = R { b: v, at: 0 };
            let spec = AccountSpec {
                id,
                max_position: r.i64(),
                max_notional: r.i128(),
                max_loss: r.i128(),
                suspended: r.u8() != 0,
            };
            snap.accounts.push((spec, r.i128()));
        }
        reserve(&mut snap.positions, info.positions).map_err(|e| bad(format!("positions: {e}")))?;
        for kv in self.positions.range(&rtxn, &range).map_err(lmdb)? {
            let (k, v) = kv.map_err(lmdb)?;
            if k.len() != 20 || v.len() != POSITION_BYTES {
                return Err(bad("position row size".into()));
            }
            let mut kr = R { b: k, at: 8 };
            let (a, i) = (kr.u64_be(), kr.u32_be());
            let mut r = R { b: v, at: 0 };
            snap.positions.push((a, i, Book { qty: r.i64(), cost: r.i128(), realized: r.i128() }));
        }
        reserve(&mut snap.trades, info.trades).map_err(|e| bad(format!("trades: {e}")))?;
        for kv in self.trades.range(&rtxn, &range).map_err(lmdb)? {
            let (k, v) = kv.map_err(lmdb)?;
            if k.len() != 16 || v.len() != TRADE_BYTES {
                return Err(bad("trade row size".into()));
            }
            let trade_id = R { b: k, at: 8 }.u64_be();
            let mut r = R { b: v, at: 0 };
            let t = Trade {
                trade_id,
                buy: r.u64(),
                sell: r.u64(),
                instrument: r.u32(),
                qty: r.i64(),
                price: r.i64(),
                trade_date: r.u32(),
            };
            snap.trades.push((t, r.u8() != 0));
        }
        let counts =
            (snap.instruments.len(), snap.accounts.len(), snap.positions.len(), snap.trades.len());
        if counts
            != (
                info.instruments as usize,
                info.accounts as usize,
                info.positions as usize,
                info.trades as usize,
            )
        {
            return Err(bad(format!("row counts {counts:?} differ from meta {info:?}")));
        }
        Ok((info, snap))
    }

    /// Read, restore and verify the snapshot at `seq`: the restored `state_hash()` must equal
    /// the stored one.
    pub fn load(&self, seq: Seq, limits: Limits) -> Result<(SnapshotInfo, StateMachine), Error> {
        let (info, snap) = self.read(seq)?;
        let mut sm = StateMachine::restore(limits, &snap)
            .map_err(|e| Error::SnapshotInvalid { seq, why: format!("restore: {e}") })?;
        let hash = sm.state_hash();
        if hash != info.state_hash {
            return Err(Error::SnapshotInvalid {
                seq,
                why: format!(
                    "state hash {hash:#018x} differs from the stored {:#018x}",
                    info.state_hash
                ),
            });
        }
        Ok((info, sm))
    }
}

/// A finished background write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotWritten {
    pub info: SnapshotInfo,
    /// Time of the LMDB transaction, commit (fsync) included.
    pub write_time: Duration,
}

/// What the snapshotter thread is asked to write.
enum Job {
    /// The state hash was computed by the caller (the state machine's own, kept as commands
    /// apply: O(records changed since it was last read)); the snapshot
    /// may be in any order (`StateMachine::export_into`). The thread sorts it and checks that
    /// its records hash to that value before writing.
    Hashed(Snapshot, u64),
    /// Compute the hash here: restore the snapshot (which also proves it restores) and hash
    /// the result, so the state machine thread pays only for `export()`.
    Restore(Snapshot, Limits),
}

/// Writes snapshots on its own thread so the state machine only pays for `export()`.
pub struct Snapshotter {
    tx: Option<SyncSender<Job>>,
    done: Receiver<Result<SnapshotWritten, Error>>,
    /// Written snapshots handed back for reuse (see [`Snapshotter::spare`]).
    spares: Receiver<Snapshot>,
    handle: Option<JoinHandle<()>>,
}

impl Snapshotter {
    pub fn spawn(store: SnapshotStore) -> Snapshotter {
        // One queued behind the one being written: a snapshot is a whole copy of the state, so
        // more would only pile up memory; `submit` says when the writer is busy.
        let (tx, rx) = sync_channel::<Job>(1);
        let (dtx, done) = sync_channel(16);
        let (spare_tx, spares) = sync_channel::<Snapshot>(1);
        let handle = std::thread::Builder::new()
            .name("snapshotter".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let t = Instant::now();
                    let (snap, hash) = match job {
                        Job::Hashed(mut snap, hash) => {
                            snap.sort();
                            let of_records = snap.state_hash();
                            let r = if of_records == hash {
                                Ok(hash)
                            } else {
                                Err(Error::SnapshotInvalid {
                                    seq: snap.last_seq,
                                    why: format!(
                                        "its records hash to {of_records:#018x}, the state it was exported from to {hash:#018x}"
                                    ),
                                })
                            };
                            (snap, r)
                        }
                        Job::Restore(snap, limits) => {
                            let hash = StateMachine::restore(limits, &snap)
                                .map(|mut sm| sm.state_hash())
                                .map_err(|e| Error::SnapshotInvalid { seq: snap.last_seq, why: format!("restore: {e}") });
                            (snap, hash)
                        }
                    };
                    let r = hash
                        .and_then(|h| store.write(&snap, h))
                        .map(|info| SnapshotWritten { info, write_time: t.elapsed() });
                    // Hand the buffers back for the next export (or drop them if one is waiting).
                    let _ = spare_tx.try_send(snap);
                    if dtx.try_send(r).is_err() {
                        // Nobody reads results: keep writing, drop the report.
                    }
                }
            })
            .expect("spawn snapshotter thread");
        Snapshotter { tx: Some(tx), done, spares, handle: Some(handle) }
    }

    /// Queue `snap` (exported at `snap.last_seq`, in any order) with the state hash of the
    /// state it was exported from. The writer sorts it, refuses it if its records do not hash
    /// to `state_hash` (reported as [`Error::SnapshotInvalid`]), and writes it. `false` when the
    /// writer is busy and one is already queued (the caller tries again at a later boundary).
    pub fn submit(&self, snap: Snapshot, state_hash: u64) -> bool {
        self.send(Job::Hashed(snap, state_hash))
    }

    /// Like [`Snapshotter::submit`], but the state hash is computed on the snapshotter thread
    /// by restoring `snap` with `limits` (the limits of the state machine it came from): the
    /// caller's pause is `export()` alone.
    pub fn submit_unhashed(&self, snap: Snapshot, limits: Limits) -> bool {
        self.send(Job::Restore(snap, limits))
    }

    fn send(&self, job: Job) -> bool {
        match self.tx.as_ref().expect("running").try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// A written snapshot's buffers to export the next one into (`StateMachine::export_into`),
    /// if one is back: after the first, periodic snapshots allocate nothing.
    pub fn spare(&self) -> Option<Snapshot> {
        self.spares.try_recv().ok()
    }

    /// A finished write, if any (non-blocking).
    pub fn try_result(&self) -> Option<Result<SnapshotWritten, Error>> {
        self.done.try_recv().ok()
    }

    /// Wait for the next finished write.
    pub fn wait_result(&self, timeout: Duration) -> Option<Result<SnapshotWritten, Error>> {
        self.done.recv_timeout(timeout).ok()
    }

    /// Finish queued writes and stop the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The key bounds of snapshot `seq`'s rows (8 bytes of seq, then the row's id).
struct SeqKeys {
    lo: [u8; 8],
    /// The next seq's first key; none after u64::MAX.
    hi: Option<[u8; 8]>,
}

impl SeqKeys {
    fn of(seq: Seq) -> SeqKeys {
        SeqKeys { lo: seq.to_be_bytes(), hi: seq.checked_add(1).map(u64::to_be_bytes) }
    }

    fn range(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        let hi = self.hi.as_ref().map_or(Bound::Unbounded, |h| Bound::Excluded(&h[..]));
        (Bound::Included(&self.lo[..]), hi)
    }
}

/// Room for `count` rows read back from a snapshot's meta: a damaged count is an error, not a
/// capacity-overflow panic or an allocation failure that aborts the process.
fn reserve<T>(v: &mut Vec<T>, count: u64) -> Result<(), String> {
    let n = usize::try_from(count).map_err(|_| format!("count {count} does not fit"))?;
    v.try_reserve(n).map_err(|e| format!("count {count}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meta_whose_counts_cannot_be_allocated_is_an_invalid_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        let info = store.write(&Snapshot { last_seq: 7, ..Snapshot::default() }, 1).unwrap();
        for count in [u64::MAX, 1 << 60] {
            // A meta row rewritten with a huge count and a checksum that matches it.
            let bad = SnapshotInfo { trades: count, ..info };
            let mut wtxn = store.env.write_txn().unwrap();
            store.meta.put(&mut wtxn, &7u64.to_be_bytes(), &encode_meta(&bad)).unwrap();
            wtxn.commit().unwrap();
            match store.read(7) {
                Err(Error::SnapshotInvalid { seq: 7, why }) => {
                    assert!(why.contains("trades"), "{why}")
                }
                other => panic!("expected an invalid snapshot, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_last_possible_seq_is_written_read_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::open(dir.path()).unwrap();
        store.write(&Snapshot { last_seq: u64::MAX, ..Snapshot::default() }, 3).unwrap();
        let (info, snap) = store.read(u64::MAX).unwrap();
        assert_eq!((info.seq, info.state_hash, snap.last_seq), (u64::MAX, 3, u64::MAX));
        store.delete(u64::MAX).unwrap();
        assert!(store.list().unwrap().is_empty());
    }
}
