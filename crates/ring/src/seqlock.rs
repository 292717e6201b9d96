//! Seqlock for publishing `Copy` snapshots (positions, account views) from the state-machine
//! thread to readers on other threads (design notes §2.4).
//!
//! One [`SeqWriter`] publishes; any number of [`SeqReader`]s copy the latest value without
//! blocking the writer. The value is stored as `AtomicU64` words, so a reader racing the writer
//! reads torn words *through atomics* (defined behaviour) and discards them when the sequence
//! number says a write overlapped; a plain `memcpy` of the value would be a data race (undefined
//! behaviour) in Rust's memory model, whatever the hardware does.
//!
//! The orderings follow Boehm, "Can Seqlocks Get Along With Programming Language Memory Models?"
//! (2012): writer `seq = odd (Relaxed); fence(Release); data (Relaxed); seq = even (Release)`;
//! reader `s1 = seq (Acquire); data (Relaxed); fence(Acquire); s2 = seq (Relaxed); s1 == s2`.
//! The design notes' fragment gets three things wrong: its first increment is a Release RMW,
//! which lets the *later* data stores become visible before it; its reader's second sequence load
//! is Acquire, which lets the *earlier* data loads sink below it (both need the fences above); and
//! its `continue` on an odd sequence jumps to `while (seq1 != seq2)` with `seq2` uninitialised.

use core::fmt;
use core::marker::PhantomData;
use core::mem::{size_of, MaybeUninit};

use crossbeam_utils::CachePadded;

use crate::sync::{fence, spin_loop, Arc, AtomicU64, Ordering};

/// Types whose every byte is initialised (no padding) and for which any byte pattern produced by
/// a real value is a valid value: plain integers, arrays of them, and `#[repr(C)]` structs of them
/// without padding. The seqlock copies such values word by word.
///
/// # Safety
/// Implement only for `Copy` types with no padding bytes and no pointers or references.
/// Assert the size of a struct next to the impl (`size_of` == sum of field sizes).
pub unsafe trait Plain: Copy + Send + 'static {}

macro_rules! plain {
    ($($t:ty),*) => { $(
        // SAFETY: primitive integers and floats have no padding and no invalid bit patterns.
        unsafe impl Plain for $t {}
    )* };
}
plain!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64, usize, isize);
// SAFETY: an array of padding-free elements has no padding.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}

const WORD: usize = size_of::<u64>();

struct Shared<T> {
    /// Even: stable; odd: a write is in progress. Written only by the writer; read by readers.
    /// Padded (128 bytes on x86_64) so readers polling it do not share a line with other data.
    seq: CachePadded<AtomicU64>,
    /// The value's bytes. Written only by the writer (Relaxed, bracketed by `seq`).
    words: Box<[AtomicU64]>,
    _value: PhantomData<T>,
}

/// Creates a seqlock holding `initial`.
pub fn new<T: Plain>(initial: T) -> (SeqWriter<T>, SeqReader<T>) {
    let n = size_of::<T>().div_ceil(WORD);
    let words = (0..n).map(|_| AtomicU64::new(0)).collect();
    let shared =
        Arc::new(Shared { seq: CachePadded::new(AtomicU64::new(0)), words, _value: PhantomData });
    store_words(&shared.words, &initial);
    (SeqWriter { shared: shared.clone(), seq: 0 }, SeqReader { shared })
}

fn store_words<T: Plain>(words: &[AtomicU64], value: &T) {
    let bytes = (value as *const T).cast::<u8>();
    for (i, w) in words.iter().enumerate() {
        let off = i * WORD;
        let len = WORD.min(size_of::<T>() - off);
        let mut word = [0u8; WORD];
        // SAFETY: `off + len <= size_of::<T>()`, and `T: Plain` has no padding, so every byte read
        // is initialised; `word` has room for `len <= 8` bytes.
        unsafe { core::ptr::copy_nonoverlapping(bytes.add(off), word.as_mut_ptr(), len) };
        // Relaxed: ordered by the sequence protocol (fence before, Release store after).
        w.store(u64::from_ne_bytes(word), Ordering::Relaxed);
    }
}

/// The publishing end. `Send`, not `Clone`: there is one writer.
pub struct SeqWriter<T> {
    shared: Arc<Shared<T>>,
    /// Exact copy of `shared.seq` (this is its only writer).
    seq: u64,
}

/// A reading end; clone one per reader thread.
pub struct SeqReader<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for SeqReader<T> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<T> fmt::Debug for SeqWriter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeqWriter").field("seq", &self.seq).finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for SeqReader<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeqReader").finish_non_exhaustive()
    }
}

impl<T: Plain> SeqWriter<T> {
    /// Publishes `value`. Never waits for readers.
    #[inline]
    pub fn publish(&mut self, value: T) {
        let s = &*self.shared;
        // Relaxed store of the odd number, then a Release fence: any reader whose data loads see
        // a word written below synchronises with this fence (through its own Acquire fence) and
        // therefore sees at least this odd sequence on its second load, rejecting the copy.
        s.seq.store(self.seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        store_words(&s.words, &value);
        self.seq = self.seq.wrapping_add(2);
        // Release: the data stores above happen before a reader's Acquire load of the even value.
        s.seq.store(self.seq, Ordering::Release);
    }

    /// Number of values published since creation.
    pub fn version(&self) -> u64 {
        self.seq / 2
    }
}

impl<T: Plain> SeqReader<T> {
    /// One attempt: the value, with its version, unless a write overlapped the copy.
    #[inline]
    pub fn try_read(&self) -> Option<(T, u64)> {
        let s = &*self.shared;
        // Acquire: pairs with the writer's final Release store, so the data of that write (and of
        // every earlier one) is visible to the loads below.
        let s1 = s.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            return None;
        }
        let mut out = MaybeUninit::<T>::uninit();
        let dst = out.as_mut_ptr().cast::<u8>();
        for (i, w) in s.words.iter().enumerate() {
            let off = i * WORD;
            let len = WORD.min(size_of::<T>() - off);
            // Relaxed: validated by the sequence check below.
            let word = w.load(Ordering::Relaxed).to_ne_bytes();
            // SAFETY: `off + len <= size_of::<T>()`, inside `out`.
            unsafe { core::ptr::copy_nonoverlapping(word.as_ptr(), dst.add(off), len) };
        }
        // Acquire fence: orders the data loads above before the second `seq` load (and pairs with
        // the writer's Release fence when a data load saw a concurrent write).
        fence(Ordering::Acquire);
        let s2 = s.seq.load(Ordering::Relaxed);
        if s1 != s2 {
            return None;
        }
        // SAFETY: no write overlapped, so every byte of `out` comes from one value that the
        // writer published; `T: Plain` makes those bytes a valid `T`.
        Some((unsafe { out.assume_init() }, s1 / 2))
    }

    /// The latest value and its version, retrying (with a spin hint) while writes overlap.
    /// The writer never blocks, so a retry waits at most one write.
    #[inline]
    pub fn read(&self) -> (T, u64) {
        loop {
            if let Some(v) = self.try_read() {
                return v;
            }
            spin_loop();
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(C)]
    struct Position {
        account: u64,
        qty: i64,
        price: i64,
        flags: u32,
        instrument: u32,
    }
    const _: () = assert!(size_of::<Position>() == 32);
    // SAFETY: repr(C), four 8-byte and two 4-byte integer fields, size asserted above: no padding.
    unsafe impl Plain for Position {}

    #[test]
    fn publish_then_read() {
        let p = Position { account: 1, qty: -5, price: 100, flags: 7, instrument: 9 };
        let (mut w, r) = new(p);
        assert_eq!(r.read(), (p, 0));
        let q = Position { qty: 10, ..p };
        w.publish(q);
        assert_eq!(r.try_read(), Some((q, 1)));
        assert_eq!(w.version(), 1);
    }

    #[test]
    fn odd_sizes_round_trip() {
        let (mut w, r) = new([1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        w.publish([11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(r.read().0, [11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]);
        let (_w, r) = new(0xABu8);
        assert_eq!(r.read().0, 0xAB);
    }

    #[test]
    fn a_read_overlapping_a_write_is_rejected() {
        let (w, r) = new(5u64);
        // Simulate a writer stopped half-way: odd sequence.
        w.shared.seq.store(1, Ordering::Relaxed);
        assert_eq!(r.try_read(), None);
        w.shared.seq.store(2, Ordering::Relaxed);
        assert_eq!(r.try_read(), Some((5, 1)));
    }
}
