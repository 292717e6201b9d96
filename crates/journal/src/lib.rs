//! novate-journal: durability for novate (design notes §5.2–5.4).
//!
//! - [`Journal`]: the command log. Segmented, pre-allocated files written through `mmap`; every
//!   record carries its sequence number, timestamp, length, a CRC32C (hardware-accelerated via
//!   the `crc32c` crate: SSE4.2 / ARMv8 CRC) and a hash chain to the record before it. Records
//!   hold SBE-encoded commands ([`Journal::append_command`]).
//! - Group commit: [`Journal::commit`] ends a batch; under [`Policy::Fsync`] a flusher thread
//!   fdatasyncs and advances the durable [`Watermark`], which the sequencer acknowledges from.
//! - [`Reader`] and [`replay`]: iterate from any sequence number, verifying every record.
//! - [`SnapshotStore`] / [`Snapshotter`]: the state machine's `export()` in LMDB (heed), with
//!   its `state_hash()`, written on another thread.
//! - [`recover`]: newest valid snapshot + journal replay.
//! - [`repair`] and [`Journal::retain`]: explicit truncation at corruption; archival or deletion
//!   of segments covered by a snapshot.
//!
//! # Format
//!
//! A journal is a directory of segment files named after their first sequence number
//! (`00000000000000000001.nvj`), each pre-allocated to `segment_bytes` (zeros):
//!
//! ```text
//!  segment file (segment_bytes, pre-allocated)
//!  0        64       80                4096
//!  +--------+--------+-----------------+--------------------+--------------------+-----+------+-------+
//!  | header | durable|     zero        | record first_seq   | record first_seq+1 | ... | seal | zeros |
//!  |  64 B  | mark   |                 | (8-byte aligned)   |                    |     | 32 B |       |
//!  +--------+--------+-----------------+--------------------+--------------------+-----+------+-------+
//!
//!  segment header (64 B, written once, before the file gets its name)
//!  0       8        12      16              24          32          40           48         60     64
//!  | magic | version| flags | segment_bytes | first_seq | chain_in  | created_ns | reserved | crc32c |
//!
//!  durable mark (16 B at offset 64, rewritten by the flusher after each sync)
//!  | durable_seq u64 | reserved u32 | crc32c u32 |
//!
//!  record (32 B header + payload, padded with zeros to 8 bytes)
//!  0        4       8       16      24       32
//!  | crc32c | len   | seq   | ts    | prev   | payload (len bytes: one SBE command) | pad |
//!    crc32c = CRC32C(header[4..32] ++ payload)
//!    prev   = chain value after record seq-1 (segment's chain_in for its first record)
//!    chain after a record = chain_next(prev, crc32c)   (64-bit mix, seeded with CHAIN_SEED)
//!
//!  seal (32 B record header with len = 0xFFFF_FFFF, no payload): seq = first_seq of the next
//!  segment, prev = chain value; written when the next record would not fit.
//! ```
//!
//! All integers are little-endian. Layouts are `repr(C)` structs with compile-time asserts on
//! size, offsets and absence of padding (see [`format`]).
//!
//! # Invariants
//!
//! - One writer per directory ([`Journal`]); sequence numbers are dense (`prev + 1`), also
//!   across segments: a segment's `first_seq` is its predecessor's last + 1 and its `chain_in`
//!   is its predecessor's final chain value.
//! - Everything after the write offset of the last segment is zero (open zeroes a torn tail),
//!   so an all-zero header means "no more records" and padding is always zero.
//! - A segment file only appears under its final name complete (header written to a `.tmp`
//!   file, then renamed), and a successor exists before its predecessor is sealed.
//! - `durable <= written <= appended`. Under [`Policy::Fsync`] `durable` only moves after an
//!   fdatasync of every segment holding records up to it returned; the durable mark on disk
//!   lags `durable` by at most one sync.
//! - A failed fdatasync stops the journal (no retry: the kernel may have dropped the pages).
//! - Segments are removed only by an explicit [`Journal::retain`] (never the newest), or moved
//!   aside by [`repair`].
//!
//! # Recovery
//!
//! [`Journal::open`] reads every segment and checks header, sequence, CRC and chain of every
//! record. At the first record that is not valid, at byte offset X of segment S:
//!
//! - S is the last segment, nothing after X validates as a record, and no durable mark claims a
//!   sequence number beyond the last valid record: this is a **torn tail** — a crash during
//!   a batch that was never acknowledged. The bytes after X are zeroed and reported in
//!   [`OpenReport::truncated`]; appending continues at X.
//! - Otherwise it is **corruption**: a valid record follows the bad one (a flipped bit or a
//!   zeroed page in the middle), the bad record is in an earlier segment, records that a
//!   durable mark says were acknowledged are gone, a segment is missing (a sequence gap, or a
//!   sealed last segment), or a header is unreadable. Open refuses with
//!   [`Error::Corrupt`] naming the segment and offset; [`repair`] truncates there on request.
//!
//! Limits of what can be told apart: after a *power loss* (not a process crash) the kernel may
//! have written an unacknowledged batch's pages out of order, leaving a hole before valid
//! records; open reports that as corruption ([`CorruptionKind::ZeroedRecords`]) although no
//! acknowledged record is lost, and [`repair`] is the answer. A bit flip in the last flush's
//! records before the durable mark covering them reached the disk looks like a torn tail.
//! The durable mark is kept in the newest segment: losing that file is caught by its
//! predecessor's seal, but if the seal is damaged too, nothing left says that more was
//! acknowledged, and the journal opens at the predecessor's last record
//! (`tests/damage.rs` counts a deleted newest segment as a lost durable mark).
//!
//! [`recover`] then restores the newest snapshot that verifies (its `state_hash()` is stored
//! beside it) and replays the journal after its sequence number.

//! # Use
//!
//! What the engine does: recover, then per batch append + commit, acknowledge up to the durable
//! watermark, snapshot now and then, and drop journal segments the snapshot covers.
//!
//! ```
//! use novate_journal::{recover, synthetic, Options, Policy, Snapshotter};
//! use std::time::Duration;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let opts = Options { segment_bytes: 1 << 20, policy: Policy::Fsync, ..Options::default() };
//! let rec = recover(dir.path(), synthetic::limits(), opts).unwrap();
//! let (mut sm, mut journal) = (rec.state, rec.journal);
//! let snapshotter = Snapshotter::spawn(rec.snapshots);
//! let watermark = journal.watermark(); // clone it to the thread that sends acks
//! for _batch in 0..10 {
//!     for _ in 0..100 {
//!         let seq = journal.next_seq();
//!         let cmd = synthetic::command(1, seq);
//!         journal.append_command(/* ts */ 0, /* request id */ seq, &cmd).unwrap();
//!     }
//!     let last = journal.commit().unwrap(); // the flusher fdatasyncs; this does not wait
//!     watermark.wait(last, Duration::from_secs(5)).unwrap(); // ack up to watermark.durable()
//!     let first = last - 99;
//!     for seq in first..=last {
//!         let _ = sm.apply(&synthetic::command(1, seq), seq, 0); // apply only durable records
//!     }
//! }
//! assert!(snapshotter.submit_unhashed(sm.export(), synthetic::limits()));
//! let written = snapshotter.wait_result(Duration::from_secs(30)).unwrap().unwrap();
//! journal.retain(written.info.seq, None).unwrap(); // or Some(archive_dir)
//! assert_eq!(journal.close().unwrap(), 1_000);
//! ```

pub mod command;
pub mod error;
pub mod format;
pub mod journal;
pub mod reader;
pub mod recover;
pub mod repair;
pub mod scan;
pub mod snapshot;
pub mod synthetic;

pub use command::{decode_command, replay, ReplayStats, COMMAND_BYTES_MAX};
pub use error::{BadRecord, Corruption, CorruptionKind, Error};
pub use journal::{
    retain_segments, Journal, OpenReport, Options, Policy, Watermark, SEGMENT_BYTES_DEFAULT,
};
pub use reader::{Reader, Record};
pub use recover::{data_dirs, recover, Recovered, JOURNAL_DIR, SNAPSHOT_DIR};
pub use repair::{repair, RepairAction, RepairReport};
pub use scan::{scan_journal, JournalScan};
pub use snapshot::{SnapshotInfo, SnapshotStore, SnapshotWritten, Snapshotter, SNAPSHOTS_RETAINED};

#[cfg(test)]
mod tests {
    /// The engine moves the journal to the sequencer thread and the watermark to the ack path.
    #[test]
    fn handles_can_move_across_threads() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<super::Journal>();
        send::<super::Snapshotter>();
        send::<super::Recovered>();
        send_sync::<super::Watermark>();
        send_sync::<super::SnapshotStore>();
    }
}
