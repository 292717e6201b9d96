//! Single-producer single-consumer ring of fixed-size slots (design notes §2.1).
//!
//! # Layout
//!
//! ```text
//!  Shared (one allocation, behind an Arc)
//!  ┌──────────────── 128 B ───────────────┐┌──────────────── 128 B ───────────────┐┌── slots ──┐
//!  │ head: AtomicUsize  (consumer writes) ││ tail: AtomicUsize  (producer writes) ││ T T T T … │
//!  └──────────────────────────────────────┘└──────────────────────────────────────┘└───────────┘
//!  Producer (own cache lines): tail (exact), head_cache (possibly stale)
//!  Consumer (own cache lines): head (exact), tail_cache (possibly stale)
//! ```
//!
//! `head` and `tail` are free-running counters (they wrap at `usize::MAX`, which a power-of-two
//! capacity divides); the slot of counter `i` is `i & mask` and the occupancy is `tail - head`.
//! Each side keeps the other side's counter in a local cache and reloads it only when the ring
//! *looks* full (producer) or empty (consumer), so in steady state a push or pop touches no cache
//! line written by the other thread except the slot itself. A stale cache is always conservative:
//! the producer may think the ring fuller than it is, the consumer emptier.
//!
//! Differences from the design notes' fragment: there both cached positions sit on one cache
//! line, which the producer and the consumer both write (false sharing on every refresh, the very
//! traffic the caches exist to avoid); here each cache lives in its own handle, padded. The
//! fragment also stores masked positions, so it cannot tell full from empty and wastes a slot;
//! free-running counters use every slot.

use core::fmt;
use core::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::sync::{Arc, AtomicUsize, Ordering, UnsafeCell};
use crate::{CapacityError, Full};

/// The state both ends share. Dropped when the last end is dropped.
struct Shared<T> {
    /// Counter of the next slot to read. Written only by the [`Consumer`] (Release, after it has
    /// moved values out); read by the [`Producer`] when its cached copy says the ring is full.
    /// `CachePadded` is 128 bytes on x86_64 (adjacent-line prefetch pulls cache lines in pairs).
    head: CachePadded<AtomicUsize>,
    /// Counter one past the last published slot. Written only by the [`Producer`] (Release, after
    /// writing the slots); read by the [`Consumer`] when its cached copy says the ring is empty.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
}

// SAFETY: values of `T` move from the producer's thread to the consumer's thread, so `T: Send` is
// required and sufficient; every slot is accessed by one side at a time (see the index protocol).
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above: the two handles that share `Shared` never touch the same slot concurrently.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    #[inline(always)]
    fn slot(&self, counter: usize) -> &UnsafeCell<MaybeUninit<T>> {
        debug_assert_eq!(self.slots.len(), self.mask + 1);
        // SAFETY: `counter & mask <= mask < slots.len()`, since `slots.len() == mask + 1` by
        // construction (checked in debug builds above). No bounds check on the hot path.
        unsafe { self.slots.get_unchecked(counter & self.mask) }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Relaxed: both handles are gone; dropping the last `Arc` already synchronised with them.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let mut i = head;
        while i != tail {
            // SAFETY: counters in head..tail are published and not yet consumed, so each of these
            // slots holds an initialised value that nobody else will read or drop.
            self.slot(i).with_mut(|p| unsafe { (*p).assume_init_drop() });
            i = i.wrapping_add(1);
        }
    }
}

/// Creates a ring with room for `capacity` values (a power of two, at least 1).
pub fn channel<T>(capacity: usize) -> Result<(Producer<T>, Consumer<T>), CapacityError> {
    if capacity == 0 || !capacity.is_power_of_two() {
        return Err(CapacityError { requested: capacity, reason: "must be a power of two >= 1" });
    }
    let slots = (0..capacity).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        slots,
        mask: capacity - 1,
    });
    let producer = Producer {
        shared: shared.clone(),
        local: CachePadded::new(ProducerLocal { tail: 0, head_cache: 0 }),
    };
    let consumer =
        Consumer { shared, local: CachePadded::new(ConsumerLocal { head: 0, tail_cache: 0 }) };
    Ok((producer, consumer))
}

/// The producer's private counters, on their own cache lines.
struct ProducerLocal {
    /// Exact: the producer is the only writer of `tail`.
    tail: usize,
    /// The consumer's `head` as last seen; stale by any amount, never ahead of the real one.
    head_cache: usize,
}

/// The consumer's private counters, on their own cache lines.
struct ConsumerLocal {
    /// Exact: the consumer is the only writer of `head`.
    head: usize,
    /// The producer's `tail` as last seen; stale by any amount, never ahead of the real one.
    tail_cache: usize,
}

/// The writing end. `Send`, not `Clone`: there is exactly one.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    local: CachePadded<ProducerLocal>,
}

/// The reading end. `Send`, not `Clone`: there is exactly one.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    local: CachePadded<ConsumerLocal>,
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer").field("capacity", &self.capacity()).finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").field("capacity", &self.capacity()).finish_non_exhaustive()
    }
}

impl<T> Producer<T> {
    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Free slots, refreshing the cached consumer position.
    pub fn free(&mut self) -> usize {
        self.refresh_head();
        self.capacity() - self.local.tail.wrapping_sub(self.local.head_cache)
    }

    #[inline(always)]
    fn refresh_head(&mut self) {
        // Acquire: pairs with the consumer's Release store of `head`, so its reads of the slots
        // below `head` happen before we overwrite them.
        self.local.head_cache = self.shared.head.load(Ordering::Acquire);
    }

    /// Appends `value`, or hands it back if the ring is full.
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), Full<T>> {
        let tail = self.local.tail;
        if tail.wrapping_sub(self.local.head_cache) == self.capacity() {
            self.refresh_head();
            if tail.wrapping_sub(self.local.head_cache) == self.capacity() {
                return Err(Full(value));
            }
        }
        // SAFETY: `tail - head < capacity`, so the slot of `tail` was consumed (or never used) and
        // the consumer will not read it before we publish `tail + 1` below.
        self.shared.slot(tail).with_mut(|p| unsafe { (*p).write(value) });
        self.local.tail = tail.wrapping_add(1);
        // Release: makes the slot write above visible to the consumer's Acquire load of `tail`.
        self.shared.tail.store(self.local.tail, Ordering::Release);
        Ok(())
    }

    /// Claims up to `max` free slots for a batch; values written into the claim become visible
    /// to the consumer all at once on [`Claim::commit`] (one Release store for the whole batch).
    /// Dropping the claim without committing aborts it (the written values are dropped).
    #[inline]
    pub fn claim(&mut self, max: usize) -> Claim<'_, T> {
        let tail = self.local.tail;
        let mut free = self.capacity() - tail.wrapping_sub(self.local.head_cache);
        if free < max {
            self.refresh_head();
            free = self.capacity() - tail.wrapping_sub(self.local.head_cache);
        }
        Claim { len: free.min(max), written: 0, committed: false, producer: self }
    }

    /// Copies as many values of `items` as fit, publishes them together, returns how many.
    #[inline]
    pub fn push_slice(&mut self, items: &[T]) -> usize
    where
        T: Copy,
    {
        let mut claim = self.claim(items.len());
        for &item in &items[..claim.len()] {
            // Cannot fail: the claim holds exactly this many slots.
            let _ = claim.push(item);
        }
        claim.commit()
    }
}

/// A batch of slots claimed by [`Producer::claim`]: fill with [`Claim::push`], then
/// [`Claim::commit`]. Dropping it without committing aborts the batch.
pub struct Claim<'a, T> {
    producer: &'a mut Producer<T>,
    /// Slots claimed (fixed at creation).
    len: usize,
    /// Slots written so far, always `<= len`.
    written: usize,
    committed: bool,
}

impl<T> Claim<'_, T> {
    /// Slots claimed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no slot could be claimed (the ring is full).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Writes the next claimed slot, or hands `value` back if all claimed slots are written.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), Full<T>> {
        if self.written == self.len {
            return Err(Full(value));
        }
        let counter = self.producer.local.tail.wrapping_add(self.written);
        // SAFETY: `counter` is inside the claimed, unpublished range (checked free at claim time),
        // so the consumer does not read this slot until commit.
        self.producer.shared.slot(counter).with_mut(|p| unsafe { (*p).write(value) });
        self.written += 1;
        Ok(())
    }

    /// Publishes the written values; returns how many.
    #[inline]
    pub fn commit(mut self) -> usize {
        let n = self.written;
        let p = &mut *self.producer;
        p.local.tail = p.local.tail.wrapping_add(n);
        // Release: the slot writes of the whole batch become visible with this one store.
        p.shared.tail.store(p.local.tail, Ordering::Release);
        self.committed = true;
        n
    }
}

impl<T> Drop for Claim<'_, T> {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Abort: drop the values written into the unpublished slots; `tail` is unchanged.
        let tail = self.producer.local.tail;
        for i in 0..self.written {
            // SAFETY: slots tail..tail+written were initialised by `push` and never published.
            self.producer
                .shared
                .slot(tail.wrapping_add(i))
                .with_mut(|p| unsafe { (*p).assume_init_drop() });
        }
    }
}

impl<T> Consumer<T> {
    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    #[inline(always)]
    fn refresh_tail(&mut self) {
        // Acquire: pairs with the producer's Release store of `tail`, making the slot writes
        // below `tail` visible before we read them.
        self.local.tail_cache = self.shared.tail.load(Ordering::Acquire);
    }

    /// How many values (at most `limit`) are ready from `head`: the cached producer position
    /// is refreshed only when it shows fewer than `limit`.
    #[inline(always)]
    fn ready(&mut self, limit: usize) -> usize {
        let mut available = self.local.tail_cache.wrapping_sub(self.local.head);
        if available < limit {
            self.refresh_tail();
            available = self.local.tail_cache.wrapping_sub(self.local.head);
        }
        available.min(limit)
    }

    /// Values ready to read, refreshing the cached producer position.
    pub fn available(&mut self) -> usize {
        self.refresh_tail();
        self.local.tail_cache.wrapping_sub(self.local.head)
    }

    /// Takes the oldest value, if any.
    #[inline]
    pub fn try_pop(&mut self) -> Option<T> {
        let head = self.local.head;
        if head == self.local.tail_cache {
            self.refresh_tail();
            if head == self.local.tail_cache {
                return None;
            }
        }
        // SAFETY: `head < tail` (published), so the slot holds an initialised value that the
        // producer will not overwrite before we publish `head + 1` below.
        let value = self.shared.slot(head).with(|p| unsafe { (*p).assume_init_read() });
        self.local.head = head.wrapping_add(1);
        // Release: our read of the slot happens before the producer may reuse it.
        self.shared.head.store(self.local.head, Ordering::Release);
        Some(value)
    }

    /// Hands up to `limit` values, oldest first, to `handler` and frees their slots with a single
    /// store at the end. Returns how many were handled. If `handler` panics, the values already
    /// handed over are still released (and none is dropped twice).
    #[inline]
    pub fn read<F: FnMut(T)>(&mut self, mut handler: F, limit: usize) -> usize {
        let head = self.local.head;
        let n = self.ready(limit);
        let mut guard = ReleaseOnDrop { consumer: self, start: head, done: 0 };
        while guard.done < n {
            let counter = head.wrapping_add(guard.done);
            // SAFETY: `counter < tail` (published) and not yet released, as in `try_pop`.
            let value =
                guard.consumer.shared.slot(counter).with(|p| unsafe { (*p).assume_init_read() });
            guard.done += 1;
            handler(value);
        }
        n
    }
}

impl<T: Copy> Consumer<T> {
    /// Hands up to `limit` values, oldest first, to `f` where they lie: as two slices, the
    /// second non-empty only when the values wrap around the ring's end. Their slots are freed
    /// (one store) when `f` returns, or unwinds; until then the producer cannot reuse them, so a
    /// consumer that works on a batch in place holds that much of the ring. Returns how many
    /// values `f` was given, and its result. `T: Copy`: values are read, never dropped.
    #[inline]
    pub fn read_in_place<R>(
        &mut self,
        limit: usize,
        f: impl FnOnce(&[T], &[T]) -> R,
    ) -> (usize, R) {
        let head = self.local.head;
        let n = self.ready(limit);
        let guard = ReleaseOnDrop { consumer: self, start: head, done: n };
        let r = guard.consumer.with_slices(head, n, f);
        drop(guard);
        (n, r)
    }

    /// `f` on the `n` published values from counter `head`, in place.
    #[cfg(not(loom))]
    #[inline(always)]
    fn with_slices<R>(&self, head: usize, n: usize, f: impl FnOnce(&[T], &[T]) -> R) -> R {
        let cap = self.shared.mask + 1;
        let start = head & self.shared.mask;
        let first = n.min(cap - start);
        let base = self.shared.slots.as_ptr().cast::<T>();
        // SAFETY: `UnsafeCell<MaybeUninit<T>>` has `T`'s layout (both wrappers are
        // `repr(transparent)`: `sync::UnsafeCell` and std's), so `slots` is `cap` `T`s in a row.
        // The `n` values from counter `head` are published (below `tail`, read with Acquire) and
        // hence initialised, and not yet released, so the producer writes none of them while
        // these shared borrows live (they end before `read_in_place` frees the slots).
        // `start + first <= cap` and `n - first <= start`, so both slices are in bounds.
        unsafe {
            let a = std::slice::from_raw_parts(base.add(start), first);
            let b = std::slice::from_raw_parts(base, n - first);
            f(a, b)
        }
    }

    /// Under loom, slots are model-checked cells that cannot be borrowed as a slice: the
    /// values are read through the cells (so loom sees every access, in the same order as
    /// the slices above: after the Acquire of `tail`, before the Release of `head`) and `f` is
    /// given a copy.
    #[cfg(loom)]
    fn with_slices<R>(&self, head: usize, n: usize, f: impl FnOnce(&[T], &[T]) -> R) -> R {
        let values: Vec<T> = (0..n)
            .map(|k| {
                let slot = self.shared.slot(head.wrapping_add(k));
                // SAFETY: as in `try_pop`: published and not yet released.
                slot.with(|p| unsafe { (*p).assume_init_read() })
            })
            .collect();
        f(&values, &[])
    }
}

/// Publishes the consumer's progress through a batch even if the handler unwinds.
struct ReleaseOnDrop<'a, T> {
    consumer: &'a mut Consumer<T>,
    start: usize,
    done: usize,
}

impl<T> Drop for ReleaseOnDrop<'_, T> {
    fn drop(&mut self) {
        if self.done == 0 {
            return;
        }
        let c = &mut *self.consumer;
        c.local.head = self.start.wrapping_add(self.done);
        // Release: the reads of the whole batch happen before the producer may reuse the slots.
        c.shared.head.store(c.local.head, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn capacity_must_be_a_power_of_two() {
        assert!(channel::<u64>(0).is_err());
        assert!(channel::<u64>(3).is_err());
        let err = channel::<u64>(100).unwrap_err();
        assert_eq!(err.requested, 100);
        assert!(channel::<u64>(1).is_ok());
        assert!(channel::<u64>(64).is_ok());
    }

    #[test]
    fn push_until_full_then_pop_in_order() {
        let (mut p, mut c) = channel::<u32>(4).unwrap();
        for i in 0..4 {
            p.try_push(i).unwrap();
        }
        assert_eq!(p.try_push(99), Err(Full(99)));
        assert_eq!(p.free(), 0);
        assert_eq!(c.available(), 4);
        for i in 0..4 {
            assert_eq!(c.try_pop(), Some(i));
        }
        assert_eq!(c.try_pop(), None);
        assert_eq!(p.free(), 4);
    }

    #[test]
    fn counters_wrap_around_many_laps() {
        let (mut p, mut c) = channel::<u64>(8).unwrap();
        let mut next_out = 0;
        for i in 0..10_000u64 {
            p.try_push(i).unwrap();
            if i % 3 == 0 {
                while let Some(v) = c.try_pop() {
                    assert_eq!(v, next_out);
                    next_out += 1;
                }
            }
            if p.free() == 0 {
                c.try_pop().unwrap();
                next_out += 1;
            }
        }
    }

    #[test]
    fn read_in_place_splits_at_the_wrap_and_holds_its_slots_until_done() {
        let (mut p, mut c) = channel::<u64>(8).unwrap();
        let mut next_in = 0u64;
        let mut next_out = 0u64;
        // Lap after lap, with batch sizes that put the wrap at every offset.
        for round in 0..200usize {
            while p.try_push(next_in).is_ok() {
                next_in += 1;
            }
            let limit = 1 + round % 8;
            let (n, seen) = c.read_in_place(limit, |a, b| {
                // While in place, none of these slots is free to the producer.
                assert!(!a.is_empty());
                assert!(b.is_empty() || a.len() + b.len() == limit);
                [a, b].concat()
            });
            assert_eq!(n, limit);
            assert_eq!(seen, (next_out..next_out + n as u64).collect::<Vec<_>>());
            next_out += n as u64;
            assert_eq!(p.free(), n, "freed when the closure returned");
        }
        // Empty: nothing handed over, nothing freed.
        while c.try_pop().is_some() {}
        let (n, called) = c.read_in_place(4, |a, b| a.len() + b.len());
        assert_eq!((n, called), (0, 0));
    }

    #[test]
    fn read_in_place_holds_the_slots_while_the_closure_runs() {
        let (mut p, mut c) = channel::<u32>(4).unwrap();
        for i in 0..4 {
            p.try_push(i).unwrap();
        }
        let (n, ()) = c.read_in_place(3, |a, _| {
            assert_eq!(a, [0, 1, 2]);
            assert_eq!(p.free(), 0, "not yet released");
            assert_eq!(p.try_push(9), Err(Full(9)));
        });
        assert_eq!(n, 3);
        assert_eq!(p.free(), 3);
        assert_eq!(c.try_pop(), Some(3));
    }

    #[test]
    fn claim_commit_publishes_at_once_and_abort_publishes_nothing() {
        let (mut p, mut c) = channel::<u32>(8).unwrap();
        let mut claim = p.claim(5);
        assert_eq!(claim.len(), 5);
        for i in 0..5 {
            claim.push(i).unwrap();
        }
        assert_eq!(claim.push(5), Err(Full(5)));
        assert_eq!(c.available(), 0, "nothing visible before commit");
        assert_eq!(claim.commit(), 5);
        assert_eq!(c.available(), 5);

        let mut claim = p.claim(100);
        assert_eq!(claim.len(), 3, "only the free slots are claimed");
        claim.push(70).unwrap();
        drop(claim); // abort
        assert_eq!(c.available(), 5);
        let mut seen = Vec::new();
        assert_eq!(c.read(|v| seen.push(v), 100), 5);
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(p.push_slice(&[7, 8, 9]), 3);
        assert_eq!(c.try_pop(), Some(7));
    }

    #[test]
    fn read_respects_limit() {
        let (mut p, mut c) = channel::<u32>(16).unwrap();
        assert_eq!(p.push_slice(&(0..10).collect::<Vec<_>>()), 10);
        let mut seen = Vec::new();
        assert_eq!(c.read(|v| seen.push(v), 4), 4);
        assert_eq!(c.read(|v| seen.push(v), 4), 4);
        assert_eq!(c.read(|v| seen.push(v), 4), 2);
        assert_eq!(c.read(|v| seen.push(v), 4), 0);
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn values_left_in_the_ring_or_an_aborted_claim_are_dropped_once() {
        let token = Rc::new(());
        {
            let (mut p, mut c) = channel::<Rc<()>>(8).unwrap();
            for _ in 0..5 {
                p.try_push(token.clone()).unwrap();
            }
            drop(c.try_pop());
            let mut claim = p.claim(2);
            claim.push(token.clone()).unwrap();
            drop(claim);
            assert_eq!(Rc::strong_count(&token), 5);
        }
        assert_eq!(Rc::strong_count(&token), 1);
    }

    #[test]
    fn a_panicking_handler_releases_what_it_was_given() {
        let (mut p, mut c) = channel::<u32>(8).unwrap();
        p.push_slice(&[1, 2, 3, 4]);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.read(|v| assert!(v < 3, "boom"), 8);
        }));
        assert!(result.is_err());
        // 1, 2 and 3 were handed over; only 4 remains.
        assert_eq!(c.try_pop(), Some(4));
        assert_eq!(c.try_pop(), None);
    }
}
