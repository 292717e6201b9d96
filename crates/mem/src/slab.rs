//! Slab allocator of fixed-size values: O(1) insert and remove through a free list, over many
//! slabs (design notes §3.1).
//!
//! The design notes' `slab_free` computes the slot index relative to the *current* slab, so
//! freeing a value from any earlier slab corrupts the free stack (and its `free_stack` indices
//! are then applied to the wrong slab on the next allocation); it also drops frees silently
//! when the stack is full. Here a [`SlabKey`] names the slab and the slot (`slab << shift | slot`)
//! and the free list is threaded through the vacant slots themselves, so it can never overflow.
//!
//! Slabs are allocated up front (`slabs_initial`) and, if allowed, on demand up to `slabs_max`;
//! beyond that [`SlabFull`] is returned.

use core::fmt;

/// A handle to an occupied slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlabKey(u32);

impl SlabKey {
    /// The raw key (slab and slot packed).
    pub fn get(self) -> u32 {
        self.0
    }
}

/// No free slot and no more slabs allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabFull {
    /// Slots in total (`slots_per_slab * slabs_max`).
    pub capacity: usize,
}

impl fmt::Display for SlabFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "slab full ({} slots)", self.capacity)
    }
}

impl std::error::Error for SlabFull {}

/// Sizing of a [`Slab`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabConfig {
    /// Slots per slab: a power of two.
    pub slots_per_slab: usize,
    /// Slabs allocated at construction (at least 1).
    pub slabs_initial: usize,
    /// Most slabs ever allocated.
    pub slabs_max: usize,
}

const NONE: u32 = u32::MAX;

enum Entry<T> {
    Vacant { next_free: u32 },
    Occupied(T),
}

/// Fixed-size value storage with stable keys.
pub struct Slab<T> {
    slabs: Vec<Box<[Entry<T>]>>,
    shift: u32,
    mask: u32,
    slabs_max: usize,
    /// First vacant slot (a key), or `NONE`.
    free_head: u32,
    len: usize,
}

impl<T> fmt::Debug for Slab<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slab")
            .field("len", &self.len)
            .field("slabs", &self.slabs.len())
            .finish_non_exhaustive()
    }
}

impl<T> Slab<T> {
    /// Allocates `slabs_initial` slabs.
    ///
    /// # Panics
    /// On a configuration that makes no sense (not a power of two, zero, keys beyond `u32`).
    pub fn new(cfg: SlabConfig) -> Slab<T> {
        assert!(cfg.slots_per_slab.is_power_of_two(), "slots_per_slab must be a power of two");
        assert!(cfg.slabs_initial >= 1 && cfg.slabs_initial <= cfg.slabs_max, "bad slab counts");
        assert!(
            (cfg.slots_per_slab as u64) * (cfg.slabs_max as u64) < u64::from(NONE),
            "slab keys must fit in u32"
        );
        let mut slab = Slab {
            slabs: Vec::with_capacity(cfg.slabs_max),
            shift: cfg.slots_per_slab.trailing_zeros(),
            mask: cfg.slots_per_slab as u32 - 1,
            slabs_max: cfg.slabs_max,
            free_head: NONE,
            len: 0,
        };
        for _ in 0..cfg.slabs_initial {
            slab.grow();
        }
        slab
    }

    /// Adds a slab and threads its slots, in order, onto the front of the free list.
    fn grow(&mut self) {
        let index = self.slabs.len() as u32;
        let per = self.mask as usize + 1;
        let base = index << self.shift;
        let old_head = self.free_head;
        let entries = (0..per as u32)
            .map(|i| Entry::Vacant {
                next_free: if i + 1 < per as u32 { base + i + 1 } else { old_head },
            })
            .collect();
        self.slabs.push(entries);
        self.free_head = base;
    }

    #[inline(always)]
    fn entry(&self, key: u32) -> Option<&Entry<T>> {
        self.slabs.get((key >> self.shift) as usize)?.get((key & self.mask) as usize)
    }

    #[inline(always)]
    fn entry_mut(&mut self, key: u32) -> Option<&mut Entry<T>> {
        self.slabs.get_mut((key >> self.shift) as usize)?.get_mut((key & self.mask) as usize)
    }

    /// Stores `value`, in O(1) (plus one slab allocation when growing).
    #[inline]
    pub fn insert(&mut self, value: T) -> Result<SlabKey, SlabFull> {
        if self.free_head == NONE {
            if self.slabs.len() == self.slabs_max {
                return Err(SlabFull { capacity: self.capacity_max() });
            }
            self.grow();
        }
        let key = self.free_head;
        let entry = self.entry_mut(key).expect("free list points inside the slabs");
        let Entry::Vacant { next_free } = *entry else {
            unreachable!("free list points at an occupied slot");
        };
        *entry = Entry::Occupied(value);
        self.free_head = next_free;
        self.len += 1;
        Ok(SlabKey(key))
    }

    /// Removes and returns the value at `key`, in O(1); `None` if the slot is vacant (a stale
    /// or foreign key).
    #[inline]
    pub fn remove(&mut self, key: SlabKey) -> Option<T> {
        let free_head = self.free_head;
        let entry = self.entry_mut(key.0)?;
        if let Entry::Vacant { .. } = entry {
            return None;
        }
        let Entry::Occupied(value) =
            core::mem::replace(entry, Entry::Vacant { next_free: free_head })
        else {
            unreachable!()
        };
        self.free_head = key.0;
        self.len -= 1;
        Some(value)
    }

    /// The value at `key`.
    #[inline]
    pub fn get(&self, key: SlabKey) -> Option<&T> {
        match self.entry(key.0)? {
            Entry::Occupied(v) => Some(v),
            Entry::Vacant { .. } => None,
        }
    }

    /// The value at `key`, mutably.
    #[inline]
    pub fn get_mut(&mut self, key: SlabKey) -> Option<&mut T> {
        match self.entry_mut(key.0)? {
            Entry::Occupied(v) => Some(v),
            Entry::Vacant { .. } => None,
        }
    }

    /// Values stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slabs allocated so far.
    pub fn slabs(&self) -> usize {
        self.slabs.len()
    }

    /// Most values this slab can ever hold.
    pub fn capacity_max(&self) -> usize {
        (self.mask as usize + 1) * self.slabs_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(per: usize, initial: usize, max: usize) -> SlabConfig {
        SlabConfig { slots_per_slab: per, slabs_initial: initial, slabs_max: max }
    }

    #[test]
    fn insert_get_remove() {
        let mut s = Slab::new(cfg(4, 1, 1));
        let a = s.insert("a").unwrap();
        let b = s.insert("b").unwrap();
        assert_eq!((s.get(a), s.get(b)), (Some(&"a"), Some(&"b")));
        *s.get_mut(a).unwrap() = "A";
        assert_eq!(s.remove(a), Some("A"));
        assert_eq!(s.remove(a), None, "double free is detected");
        assert_eq!(s.get(a), None);
        let c = s.insert("c").unwrap();
        assert_eq!(c, a, "LIFO reuse of the freed slot");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn many_slabs_free_into_the_right_slab() {
        // The design notes' bug: freeing from an earlier slab. Fill 3 slabs, free from each,
        // reinsert, check every value is where its key says.
        let mut s = Slab::new(cfg(8, 1, 3));
        let keys: Vec<_> = (0..24u32).map(|i| s.insert(i).unwrap()).collect();
        assert_eq!(s.slabs(), 3);
        assert_eq!(s.insert(99), Err(SlabFull { capacity: 24 }));
        for &i in &[0usize, 9, 17, 23] {
            assert_eq!(s.remove(keys[i]), Some(i as u32));
        }
        let new: Vec<_> = (100..104u32).map(|v| s.insert(v).unwrap()).collect();
        let mut reused: Vec<_> = new.iter().map(|k| k.get()).collect();
        reused.sort_unstable();
        let mut freed: Vec<_> = [0usize, 9, 17, 23].iter().map(|&i| keys[i].get()).collect();
        freed.sort_unstable();
        assert_eq!(reused, freed);
        for (i, k) in keys.iter().enumerate() {
            if ![0, 9, 17, 23].contains(&i) {
                assert_eq!(s.get(*k), Some(&(i as u32)));
            }
        }
        for (j, k) in new.iter().enumerate() {
            assert_eq!(s.get(*k), Some(&(100 + j as u32)));
        }
        assert_eq!(s.insert(5), Err(SlabFull { capacity: 24 }));
    }

    #[test]
    fn random_model_check() {
        let mut s = Slab::new(cfg(16, 1, 8));
        let mut model: std::collections::HashMap<SlabKey, u64> = Default::default();
        let mut x = 0x1234_5678_9abc_def0u64;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if !x.is_multiple_of(3) && model.len() < 128 {
                let k = s.insert(i).unwrap();
                assert!(model.insert(k, i).is_none(), "key handed out twice");
            } else if let Some(&k) = model.keys().nth((x as usize) % model.len().max(1)) {
                assert_eq!(s.remove(k), model.remove(&k));
            }
            assert_eq!(s.len(), model.len());
        }
        for (k, v) in &model {
            assert_eq!(s.get(*k), Some(v));
        }
    }

    #[test]
    fn keys_out_of_range_are_rejected() {
        let mut s: Slab<u8> = Slab::new(cfg(4, 1, 2));
        assert_eq!(s.get(SlabKey(1000)), None);
        assert_eq!(s.remove(SlabKey(7)), None, "slot in a slab not yet allocated");
    }
}
