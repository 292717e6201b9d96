//! Bounded multi-producer single-consumer queue (design notes §2.2).
//!
//! # Which algorithm, and why
//!
//! This is Dmitry Vyukov's *bounded* array queue (one sequence number per slot), specialised to a
//! single consumer, not his intrusive linked-list MPSC that the design notes sketch. Reasons:
//!
//! - **No allocation after start-up.** The list version needs a node per message (allocated by the
//!   producer, freed by the consumer); the array is allocated once, at construction.
//! - **Back-pressure is a typed error.** A full queue returns [`Full`] with the value; the list
//!   version grows without bound, which the architecture forbids on the hot path.
//! - **No memory-reclamation problem.** Slots are reused in place; nodes need a safe point to free.
//! - **The consumer needs no read-modify-write.** Its position is private (single consumer), and
//!   each slot's sequence number tells it whether the slot is published, so a pop is one Acquire
//!   load and one Release store. Producers pay one CAS on the shared tail.
//!
//! Shared with the list version: a producer that is descheduled between claiming a slot and
//! publishing it holds up the consumer at that slot (later slots stay invisible until it
//! finishes). That window is a handful of instructions, never a blocking call.
//!
//! # Protocol
//!
//! Slot `i` starts with `seq = i`. For position `pos` (free-running) in slot `pos & mask`:
//! `seq == pos` → free for the producer that claims `pos`; `seq == pos + 1` → holds the value of
//! `pos`; the consumer then sets `seq = pos + capacity`, freeing it for the next lap.

use core::fmt;
use core::mem::MaybeUninit;

use crossbeam_utils::CachePadded;

use crate::sync::{Arc, AtomicUsize, Ordering, UnsafeCell};
use crate::{CapacityError, Full};

struct Slot<T> {
    /// Written by the producer that claimed the slot (Release, `pos + 1`, after writing `value`)
    /// and by the consumer (Release, `pos + capacity`, after moving `value` out).
    seq: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

struct Shared<T> {
    /// Next position to claim. Written by every producer (CAS); never read by the consumer.
    /// Padded (128 bytes on x86_64, adjacent-line prefetch) away from the slots.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[Slot<T>]>,
    mask: usize,
}

// SAFETY: values of `T` move between threads (so `T: Send`); each slot is owned by one thread at a
// time, as its `seq` says, so sharing `Shared` is sound.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The slot of free-running position `pos`.
    #[inline(always)]
    fn slot(&self, pos: usize) -> &Slot<T> {
        debug_assert_eq!(self.slots.len(), self.mask + 1);
        // SAFETY: `pos & mask <= mask < slots.len()`, since `slots.len() == mask + 1` by
        // construction (checked in debug builds above). No bounds check on the hot path.
        unsafe { self.slots.get_unchecked(pos & self.mask) }
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let cap = self.mask + 1;
        for (i, slot) in self.slots.iter().enumerate() {
            // Relaxed: every handle is gone; dropping the last `Arc` synchronised with them.
            let seq = slot.seq.load(Ordering::Relaxed);
            // A slot holds an unread value iff `seq == pos + 1` for its position; since
            // capacity >= 2, `(i + 1) mod cap` differs from the free state `i mod cap`.
            if seq & self.mask == (i + 1) % cap {
                // SAFETY: published and never consumed, so initialised and owned by nobody else.
                slot.value.with_mut(|p| unsafe { (*p).assume_init_drop() });
            }
        }
    }
}

/// Creates a queue with room for `capacity` values (a power of two, at least 2).
pub fn channel<T>(capacity: usize) -> Result<(Producer<T>, Consumer<T>), CapacityError> {
    if capacity < 2 || !capacity.is_power_of_two() {
        return Err(CapacityError { requested: capacity, reason: "must be a power of two >= 2" });
    }
    let slots = (0..capacity)
        .map(|i| Slot { seq: AtomicUsize::new(i), value: UnsafeCell::new(MaybeUninit::uninit()) })
        .collect();
    let shared =
        Arc::new(Shared { tail: CachePadded::new(AtomicUsize::new(0)), slots, mask: capacity - 1 });
    Ok((Producer { shared: shared.clone() }, Consumer { shared, head: 0 }))
}

/// A writing end; clone it for each producer thread.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        Self { shared: self.shared.clone() }
    }
}

impl<T> fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("mpsc::Producer").field("capacity", &(self.shared.mask + 1)).finish()
    }
}

impl<T> Producer<T> {
    /// Appends `value`, or hands it back if the queue is full.
    #[inline]
    pub fn try_push(&self, value: T) -> Result<(), Full<T>> {
        let shared = &*self.shared;
        let mut pos = shared.tail.load(Ordering::Relaxed);
        loop {
            let slot = shared.slot(pos);
            // Acquire: pairs with the consumer's Release store that freed this slot, so its read
            // of the previous lap's value happens before our write.
            let seq = slot.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos) as isize;
            if diff == 0 {
                // Relaxed: the CAS only arbitrates which producer owns `pos`; the data hand-off
                // is ordered by `seq` (Acquire above, Release below).
                match shared.tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: we won `pos`, and `seq == pos` says the consumer is done with
                        // the slot, so no other thread touches it until we publish.
                        slot.value.with_mut(|p| unsafe { (*p).write(value) });
                        // Release: publishes the value write to the consumer's Acquire load.
                        slot.seq.store(pos.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(current) => pos = current,
                }
            } else if diff < 0 {
                // The slot still holds the value from one lap ago: the queue is full.
                return Err(Full(value));
            } else {
                // Another producer claimed `pos` already; catch up.
                pos = shared.tail.load(Ordering::Relaxed);
            }
        }
    }
}

impl<T> Producer<T> {
    /// Appends up to `n` values, `make(0)`, `make(1)`, ... in order, with one CAS on the tail
    /// for all of them; returns how many (fewer than `n` only when the queue has less room; 0
    /// when it is full). `make` is called exactly once for each value appended, in order.
    ///
    /// Claiming `k` positions at once is sound because the consumer frees slots in position
    /// order: if the slot of the last position `pos + k - 1` is free for this lap, so is every
    /// slot before it, and none of them can be claimed by anyone but the winner of the CAS
    /// from `pos` (the tail never moves back).
    pub fn try_push_many(&self, n: usize, mut make: impl FnMut(usize) -> T) -> usize {
        let shared = &*self.shared;
        let mut want = n.min(shared.mask + 1);
        let mut pos = shared.tail.load(Ordering::Relaxed);
        while want > 0 {
            let last = pos.wrapping_add(want - 1);
            // Acquire: pairs with the consumer's Release store that freed the last slot, and
            // so (in position order) every slot before it.
            let seq = shared.slot(last).seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(last) as isize;
            if diff == 0 {
                // Relaxed: as in `try_push`, the CAS only arbitrates ownership of the positions.
                match shared.tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(want),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        for i in 0..want {
                            let at = pos.wrapping_add(i);
                            let slot = shared.slot(at);
                            let value = make(i);
                            // SAFETY: we won positions `pos..pos + want`, and their slots are
                            // free for this lap (see above), so no other thread touches this
                            // one until we publish it.
                            slot.value.with_mut(|p| unsafe { (*p).write(value) });
                            // Release: publishes the value write to the consumer's Acquire load.
                            slot.seq.store(at.wrapping_add(1), Ordering::Release);
                        }
                        return want;
                    }
                    Err(current) => pos = current,
                }
            } else if diff < 0 {
                // The last slot still holds a value from one lap ago: ask for fewer.
                want /= 2;
            } else {
                // Another producer claimed positions from `pos` already; catch up.
                pos = shared.tail.load(Ordering::Relaxed);
            }
        }
        0
    }
}

/// The reading end. `Send`, not `Clone`: there is exactly one.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Next position to read; private because there is one consumer.
    head: usize,
}

impl<T> fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("mpsc::Consumer").field("head", &self.head).finish_non_exhaustive()
    }
}

impl<T> Consumer<T> {
    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Takes the oldest published value, if any.
    #[inline]
    pub fn try_pop(&mut self) -> Option<T> {
        let shared = &*self.shared;
        let slot = shared.slot(self.head);
        // Acquire: pairs with the producer's Release store of `seq`, making its value visible.
        let seq = slot.seq.load(Ordering::Acquire);
        if seq != self.head.wrapping_add(1) {
            return None; // empty, or the producer of `head` has not published yet
        }
        // SAFETY: `seq == head + 1`: the slot holds the value of `head`, and no producer writes
        // it again until we store `head + capacity`.
        let value = slot.value.with(|p| unsafe { (*p).assume_init_read() });
        // Release: our read happens before the producer of the next lap writes the slot.
        slot.seq.store(self.head.wrapping_add(shared.mask + 1), Ordering::Release);
        self.head = self.head.wrapping_add(1);
        Some(value)
    }

    /// Whether [`try_pop`](Self::try_pop) would return a value now (a published one is next).
    #[inline]
    pub fn has_next(&self) -> bool {
        let shared = &*self.shared;
        // Acquire: as in `try_pop`.
        shared.slot(self.head).seq.load(Ordering::Acquire) == self.head.wrapping_add(1)
    }

    /// Hands up to `limit` values, oldest first, to `handler`; returns how many.
    #[inline]
    pub fn read<F: FnMut(T)>(&mut self, mut handler: F, limit: usize) -> usize {
        let mut n = 0;
        while n < limit {
            match self.try_pop() {
                Some(v) => handler(v),
                None => break,
            }
            n += 1;
        }
        n
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn capacity_is_checked() {
        assert!(channel::<u8>(0).is_err());
        assert!(channel::<u8>(1).is_err());
        assert!(channel::<u8>(6).is_err());
        assert!(channel::<u8>(2).is_ok());
    }

    #[test]
    fn has_next_says_what_try_pop_would_do() {
        let (p, mut c) = channel::<u64>(4).unwrap();
        for lap in 0..10u64 {
            assert!(!c.has_next());
            p.try_push(lap).unwrap();
            p.try_push(lap + 100).unwrap();
            assert!(c.has_next());
            assert_eq!(c.try_pop(), Some(lap));
            assert!(c.has_next());
            assert_eq!(c.try_pop(), Some(lap + 100));
            assert!(!c.has_next());
            assert_eq!(c.try_pop(), None);
        }
    }

    /// Read up to `limit` values, which must be `expect`, `expect + 1`, ...; the next expected.
    fn read_in_order(c: &mut Consumer<u64>, mut expect: u64, limit: usize) -> u64 {
        c.read(
            |v| {
                assert_eq!(v, expect);
                expect += 1;
            },
            limit,
        );
        expect
    }

    #[test]
    fn push_many_appends_in_order_up_to_the_room_there_is() {
        let (p, mut c) = channel::<u64>(8).unwrap();
        let mut next = 0u64;
        let mut expect = 0u64;
        for lap in 0..200usize {
            // Between 1 and 11 at a time, with single pushes among them, across many laps.
            let n = 1 + lap % 11;
            let mut made = Vec::new();
            let k = p.try_push_many(n, |i| {
                made.push(i);
                next + i as u64
            });
            assert_eq!(made, (0..k).collect::<Vec<_>>(), "make is called once per value, in order");
            next += k as u64;
            if lap % 3 == 0 && p.try_push(next).is_ok() {
                next += 1;
            }
            expect = read_in_order(&mut c, expect, lap % 5);
        }
        expect = read_in_order(&mut c, expect, usize::MAX);
        assert_eq!(expect, next);
        // Full: nothing is made. With room for 3, a request for 5 halves until it fits (2),
        // and the next takes the last one.
        while p.try_push(0).is_ok() {}
        assert_eq!(p.try_push_many(4, |_| panic!("made while full")), 0);
        c.read(|_| {}, 3);
        assert_eq!(p.try_push_many(5, |i| 100 + i as u64), 2, "asks for half until it fits");
        assert_eq!(p.try_push_many(5, |i| 200 + i as u64), 1);
        assert_eq!(p.try_push_many(0, |_| panic!()), 0);
    }

    #[test]
    fn full_then_drain_many_laps() {
        let (p, mut c) = channel::<u64>(4).unwrap();
        let mut next = 0u64;
        let mut expect = 0u64;
        for _ in 0..1000 {
            while p.try_push(next).is_ok() {
                next += 1;
            }
            assert_eq!(p.try_push(u64::MAX), Err(Full(u64::MAX)));
            expect = read_in_order(&mut c, expect, 3);
        }
        expect = read_in_order(&mut c, expect, usize::MAX);
        assert_eq!(expect, next);
    }

    #[test]
    fn unread_values_are_dropped_once() {
        let token = Rc::new(());
        {
            let (p, mut c) = channel::<Rc<()>>(8).unwrap();
            for _ in 0..6 {
                p.try_push(token.clone()).unwrap();
            }
            drop(c.try_pop());
            drop(c.try_pop());
            assert_eq!(Rc::strong_count(&token), 5);
        }
        assert_eq!(Rc::strong_count(&token), 1);
    }
}
