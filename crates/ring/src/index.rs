//! Concurrent account index: account id (`u64`, 0 reserved) → dense row (`u32`)
//! (design notes §2.3).
//!
//! Open addressing with linear probing over a power-of-two table sized for a load factor of at
//! most 1/2, with a bounded probe sequence. One [`IndexWriter`] inserts; any number of
//! [`IndexReader`]s (cheap clones, any thread) look up, without locks and without retries.
//!
//! # Protocol
//!
//! A slot is `(key, row)`, both atomics, `key == 0` meaning empty. The writer stores `row`
//! (Relaxed) and then `key` (Release); a reader loads `key` (Acquire) and, on a match, `row`
//! (Relaxed), which the Acquire/Release pair makes the row written before the key. A slot never
//! changes once its key is set: there is no removal (accounts are never deleted from a running
//! shard; closing an account is account state, not an index change), so a reader can never see a
//! key with another key's row, and probe chains never break.
//!
//! Unlike the design notes' map, the writer is single (no CAS), entries hold only the row (the
//! state itself lives in the state machine's dense arrays, written by one thread), and running
//! out of room is a typed [`InsertError`], never a `NULL` that a caller may forget to check.

use core::fmt;

use crate::sync::{Arc, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Default probe bound: with a load factor <= 1/2, linear probing averages ~1.5 probes for a hit
/// and a chain of 32 is vanishingly rare for well-mixed keys; hitting it is reported, not hidden.
pub const PROBES_MAX_DEFAULT: usize = 32;

/// Why an insert failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// Account id 0 is reserved to mark empty slots.
    ReservedKey,
    /// The id is already present (with this row).
    Duplicate {
        /// The row it already maps to.
        row: u32,
    },
    /// The index holds `capacity` entries already.
    Full {
        /// The configured capacity.
        capacity: usize,
    },
    /// No free slot within `probes_max` probes of the key's home slot.
    ProbeLimit {
        /// The configured probe bound.
        probes_max: usize,
    },
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedKey => write!(f, "account id 0 is reserved"),
            Self::Duplicate { row } => write!(f, "account id already indexed (row {row})"),
            Self::Full { capacity } => write!(f, "account index full ({capacity} entries)"),
            Self::ProbeLimit { probes_max } => {
                write!(f, "account index full: no free slot within {probes_max} probes")
            }
        }
    }
}

impl std::error::Error for InsertError {}

struct Slot {
    /// 0 = empty. Written once, by the writer (Release); read by everyone (Acquire).
    key: AtomicU64,
    /// Written once, by the writer (Relaxed, before `key`); read after a matching `key`.
    row: AtomicU32,
}

struct Table {
    slots: Box<[Slot]>,
    mask: usize,
    capacity: usize,
    probes_max: usize,
    /// Entries inserted. Written only by the writer; readers read it Relaxed (a statistic).
    len: AtomicUsize,
}

/// The hash whose low bits are a key's home slot: murmur3's 64-bit finaliser, so that
/// sequential ids spread over the whole table. (Unkeyed: ids can be chosen to collide; the
/// index stays correct, only longer probes.)
#[inline(always)]
pub fn spread(key: u64) -> u64 {
    let mut h = key;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

impl Table {
    #[inline(always)]
    fn home(&self, key: u64) -> usize {
        (spread(key) as usize) & self.mask
    }

    #[inline]
    fn get(&self, key: u64) -> Option<u32> {
        if key == 0 {
            return None;
        }
        let mut i = self.home(key);
        for _ in 0..self.probes_max {
            let slot = &self.slots[i];
            // Acquire: pairs with the writer's Release store of `key`, so `row` is visible.
            let k = slot.key.load(Ordering::Acquire);
            if k == key {
                return Some(slot.row.load(Ordering::Relaxed));
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        None
    }
}

/// Creates an index for up to `capacity` accounts, probing at most `probes_max` slots.
///
/// # Panics
/// If `capacity` is 0 or `probes_max` is 0 (configuration bugs).
pub fn new(capacity: usize, probes_max: usize) -> (IndexWriter, IndexReader) {
    assert!(capacity > 0, "account index capacity must be > 0");
    assert!(probes_max > 0, "account index probes_max must be > 0");
    let slots_len = (capacity * 2).next_power_of_two();
    let slots =
        (0..slots_len).map(|_| Slot { key: AtomicU64::new(0), row: AtomicU32::new(0) }).collect();
    let table = Arc::new(Table {
        slots,
        mask: slots_len - 1,
        capacity,
        probes_max: probes_max.min(slots_len),
        len: AtomicUsize::new(0),
    });
    (IndexWriter { table: table.clone() }, IndexReader { table })
}

/// The only inserting handle. `Send`, not `Clone`.
pub struct IndexWriter {
    table: Arc<Table>,
}

/// A lookup handle; clone one per reader thread.
#[derive(Clone)]
pub struct IndexReader {
    table: Arc<Table>,
}

impl fmt::Debug for IndexWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexWriter").field("len", &self.len()).finish_non_exhaustive()
    }
}

impl fmt::Debug for IndexReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexReader").finish_non_exhaustive()
    }
}

impl IndexWriter {
    /// Maps `key` to `row`.
    pub fn insert(&mut self, key: u64, row: u32) -> Result<(), InsertError> {
        let t = &*self.table;
        if key == 0 {
            return Err(InsertError::ReservedKey);
        }
        // Relaxed: `len` is written only by this thread.
        let len = t.len.load(Ordering::Relaxed);
        let mut i = t.home(key);
        for _ in 0..t.probes_max {
            let slot = &t.slots[i];
            // Relaxed: this thread is the only writer of every `key`.
            let k = slot.key.load(Ordering::Relaxed);
            if k == key {
                return Err(InsertError::Duplicate { row: slot.row.load(Ordering::Relaxed) });
            }
            if k == 0 {
                if len == t.capacity {
                    return Err(InsertError::Full { capacity: t.capacity });
                }
                slot.row.store(row, Ordering::Relaxed);
                // Release: a reader that sees this key also sees the row stored above.
                slot.key.store(key, Ordering::Release);
                t.len.store(len + 1, Ordering::Relaxed);
                return Ok(());
            }
            i = (i + 1) & t.mask;
        }
        Err(InsertError::ProbeLimit { probes_max: t.probes_max })
    }

    /// The row of `key`, if indexed.
    pub fn get(&self, key: u64) -> Option<u32> {
        self.table.get(key)
    }

    /// Entries inserted.
    pub fn len(&self) -> usize {
        self.table.len.load(Ordering::Relaxed)
    }

    /// True if nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A new reader of this index.
    pub fn reader(&self) -> IndexReader {
        IndexReader { table: self.table.clone() }
    }
}

impl IndexReader {
    /// The row of `key`, if indexed (and published before this call, by the writer's order).
    #[inline]
    pub fn get(&self, key: u64) -> Option<u32> {
        self.table.get(key)
    }

    /// The configured capacity.
    pub fn capacity(&self) -> usize {
        self.table.capacity
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn insert_and_get() {
        let (mut w, r) = new(1000, PROBES_MAX_DEFAULT);
        for id in 1..=1000u64 {
            w.insert(id * 7919, id as u32).unwrap();
        }
        for id in 1..=1000u64 {
            assert_eq!(r.get(id * 7919), Some(id as u32));
        }
        assert_eq!(r.get(5), None);
        assert_eq!(r.get(0), None);
        assert_eq!(w.len(), 1000);
    }

    #[test]
    fn typed_errors() {
        let (mut w, _r) = new(2, PROBES_MAX_DEFAULT);
        assert_eq!(w.insert(0, 1), Err(InsertError::ReservedKey));
        w.insert(10, 1).unwrap();
        assert_eq!(w.insert(10, 2), Err(InsertError::Duplicate { row: 1 }));
        w.insert(11, 2).unwrap();
        assert_eq!(w.insert(12, 3), Err(InsertError::Full { capacity: 2 }));
        assert!(InsertError::Full { capacity: 2 }.to_string().contains("full"));
    }

    #[test]
    fn probe_limit_is_reported() {
        // probes_max = 1: the second key whose home slot collides cannot be placed.
        let (mut w, r) = new(64, 1);
        let mut placed = 0;
        let mut probe_limited = 0;
        for id in 1..=64u64 {
            match w.insert(id, id as u32) {
                Ok(()) => placed += 1,
                Err(InsertError::ProbeLimit { probes_max: 1 }) => probe_limited += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert!(probe_limited > 0, "64 keys in 128 slots must collide at least once");
        assert_eq!(placed + probe_limited, 64);
        let found = (1..=64u64).filter(|&id| r.get(id) == Some(id as u32)).count();
        assert_eq!(found, placed);
    }
}
