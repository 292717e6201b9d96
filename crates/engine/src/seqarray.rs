//! A fixed array of seqlock cells: the storage of the published views.
//!
//! The protocol is crates/ring's `seqlock` (Boehm 2012: writer `seq = odd (Relaxed);
//! fence(Release); words (Relaxed); seq = even (Release)`, reader `s1 (Acquire); words
//! (Relaxed); fence(Acquire); s2 (Relaxed); s1 == s2`), laid out flat: each cell's sequence word
//! sits on the same 64-byte line as the start of its data, and all cells are one allocation.
//! `novate_ring::seqlock` allocates each value on its own (an `Arc` plus a word box, three
//! dependent cache misses per publish); with 10^5 positions published at batch boundaries that
//! was most of the state-machine thread's time. (A candidate for crates/ring.)
//!
//! Values are `[u64; W]` words: no padding questions. The one `unsafe` is the allocation
//! (all-zero cells from fresh, huge-page-advised memory: see [`SeqArray::new`]).

use std::sync::atomic::{fence, AtomicU64, Ordering};

#[repr(C, align(64))]
struct Cell<const W: usize> {
    /// Even: stable; odd: a write is in progress. Written only by the single writer.
    seq: AtomicU64,
    words: [AtomicU64; W],
}

/// The cells. Exactly one thread may call [`SeqArray::write`] (the owner of the
/// `views::Publisher`); any thread may read.
pub struct SeqArray<const W: usize> {
    cells: Box<[Cell<W>]>,
}

impl<const W: usize> SeqArray<W> {
    /// `n` cells, all zero (sequence 0, words 0), in fresh pages advised for huge pages
    /// (`novate_core::map::zeroed_slice`): the publisher writes cells at random across up to
    /// `positions_max` of them, and a cell-by-cell initialization would have committed them
    /// all as 4 KiB pages.
    pub fn new(n: usize) -> SeqArray<W> {
        if n == 0 {
            return SeqArray { cells: Box::default() };
        }
        // SAFETY: a cell is atomics of u64 (same representation as u64) and padding, for which
        // all-zero bytes are valid: sequence 0 (stable) and words 0.
        let cells = unsafe { novate_core::map::zeroed_slice(n) };
        SeqArray { cells }
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Hint the CPU to load cell `i`'s lines (for writing soon; no effect on the contents).
    #[inline]
    pub fn prefetch(&self, i: usize) {
        novate_core::map::prefetch_element(&self.cells, i);
    }

    /// Publish `value` in cell `i`. Single writer (see the type's docs).
    #[inline]
    pub fn write(&self, i: usize, value: &[u64; W]) {
        self.write_words(i, 0, value);
    }

    /// Publish `value` as words `start..start + value.len()` of cell `i`, keeping the others:
    /// for a writer that knows only those changed. Single writer, as [`write`](Self::write).
    #[inline]
    pub fn write_words<const N: usize>(&self, i: usize, start: usize, value: &[u64; N]) {
        let c = &self.cells[i];
        // A fixed length: one bounds check, and the stores below are unrolled.
        let words = &c.words[start..start + N];
        // Relaxed: this thread is the only writer of `seq`.
        let s = c.seq.load(Ordering::Relaxed);
        // Relaxed odd store, then a Release fence: a reader whose data loads see a word stored
        // below synchronises with this fence through its Acquire fence and then sees the odd
        // (or a later) sequence on its second load, rejecting the copy.
        c.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (w, v) in words.iter().zip(value) {
            // Relaxed: ordered by the sequence protocol.
            w.store(*v, Ordering::Relaxed);
        }
        // Release: the data stores happen before a reader's Acquire load of the even value.
        c.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// One attempt at reading cell `i`: `None` if a write overlapped.
    #[inline]
    pub fn try_read(&self, i: usize) -> Option<[u64; W]> {
        let c = &self.cells[i];
        // Acquire: pairs with the writer's final Release store.
        let s1 = c.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            return None;
        }
        // Relaxed: validated by the sequence check below.
        let out: [u64; W] = std::array::from_fn(|k| c.words[k].load(Ordering::Relaxed));
        // Acquire fence: the data loads above stay before the second sequence load.
        fence(Ordering::Acquire);
        let s2 = c.seq.load(Ordering::Relaxed);
        (s1 == s2).then_some(out)
    }

    /// Read cell `i`, retrying while writes overlap (a retry waits at most one write).
    #[inline]
    pub fn read(&self, i: usize) -> [u64; W] {
        loop {
            if let Some(v) = self.try_read(i) {
                return v;
            }
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_reader_never_sees_a_torn_value() {
        let a = Arc::new(SeqArray::<8>::new(2));
        let w = a.clone();
        let writer = std::thread::spawn(move || {
            for v in 1..200_000u64 {
                w.write(1, &[v; 8]);
            }
        });
        let mut last = 0;
        while !writer.is_finished() {
            let v = a.read(1);
            assert!(v.iter().all(|x| *x == v[0]), "torn read {v:?}");
            assert!(v[0] >= last, "went back in time");
            last = v[0];
        }
        writer.join().unwrap();
        assert_eq!(a.read(1), [199_999; 8]);
        assert_eq!(a.read(0), [0; 8]);
    }

    #[test]
    fn a_partial_write_keeps_the_other_words_and_is_never_seen_torn() {
        let a = Arc::new(SeqArray::<8>::new(1));
        a.write(0, &[7; 8]);
        let w = a.clone();
        // Words 2..8 follow the counter; words 0 and 1 keep 7.
        let writer = std::thread::spawn(move || {
            for v in 1..200_000u64 {
                w.write_words(0, 2, &[v; 6]);
            }
        });
        while !writer.is_finished() {
            let v = a.read(0);
            assert_eq!(v[..2], [7, 7]);
            assert!(v[2..].iter().all(|x| *x == v[2]), "torn read {v:?}");
        }
        writer.join().unwrap();
        assert_eq!(a.read(0), [7, 7, 199_999, 199_999, 199_999, 199_999, 199_999, 199_999]);
    }
}
