//! Fixed-capacity open-addressing maps from ids to dense `u32` indices.
//!
//! Allocated once at start-up; `insert` never allocates and never grows. The table is sized to
//! twice the item limit (load factor <= 0.5), so linear probing always finds an empty slot within
//! a short run and every loop is bounded by the table size. The hash is fixed (no random seed):
//! lookups are deterministic, and nothing is ever iterated in table order to produce output.

/// A key with a reserved "empty" value.
pub trait MapKey: Copy + Eq {
    /// The reserved empty key; its bytes are all zero.
    const EMPTY: Self;
    fn hash64(&self) -> u64;
    fn is_zero(&self) -> bool;
}

/// Murmur3's 64-bit finaliser: a fast, well-mixing bijection.
#[inline]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

impl MapKey for u64 {
    const EMPTY: u64 = 0;
    #[inline]
    fn hash64(&self) -> u64 {
        fmix64(*self)
    }
    fn is_zero(&self) -> bool {
        *self == 0
    }
}

/// A key that usually arrives in increasing order (venue execution ids): groups of four
/// consecutive ids share one 64-byte line of the table, and the groups are spread by the full
/// mixer. A run of new ids then costs one cache miss per four, and crafted ids cannot cluster
/// more than four to a group.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SeqKey(pub u64);

impl MapKey for SeqKey {
    const EMPTY: SeqKey = SeqKey(0);
    #[inline]
    fn hash64(&self) -> u64 {
        fmix64(self.0 >> 2) << 2 | (self.0 & 3)
    }
    fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

/// (account id, instrument id) packed as three u32 words so an entry is 16 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PairKey([u32; 3]);

impl PairKey {
    #[inline]
    pub fn new(account: u64, instrument: u32) -> PairKey {
        PairKey([account as u32, (account >> 32) as u32, instrument])
    }
}

impl MapKey for PairKey {
    const EMPTY: PairKey = PairKey([0; 3]);
    #[inline]
    fn hash64(&self) -> u64 {
        let a = u64::from(self.0[0]) | u64::from(self.0[1]) << 32;
        fmix64(a ^ u64::from(self.0[2]).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
    fn is_zero(&self) -> bool {
        self.0 == [0; 3]
    }
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Entry<K> {
    key: K,
    val: u32,
}

/// What [`FixedMap::find`] saw: the key's value, or the empty slot its probe ended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Found(u32),
    Vacant(usize),
}

/// The map is at its item limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

pub struct FixedMap<K: MapKey> {
    entries: Box<[Entry<K>]>,
    mask: usize,
    len: usize,
    items_max: usize,
}

impl<K: MapKey> FixedMap<K> {
    /// A map holding at most `items_max` keys.
    pub fn new(items_max: usize) -> Self {
        let slots = (items_max.max(4) * 2).next_power_of_two();
        assert!(K::EMPTY.is_zero(), "empty keys are all-zero bytes");
        FixedMap {
            // SAFETY: an all-zero entry is the EMPTY key (checked above) with value 0: valid.
            entries: unsafe { zeroed_slice(slots) },
            mask: slots - 1,
            len: 0,
            items_max,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len >= self.items_max
    }

    #[inline]
    fn home(&self, key: &K) -> usize {
        key.hash64() as usize & self.mask
    }

    /// `key`'s hash, for a [`prefetch_hashed`](Self::prefetch_hashed) and the lookups after
    /// it (`*_hashed`), so the key is hashed once for all of them.
    #[inline]
    pub fn hash(key: &K) -> u64 {
        key.hash64()
    }

    #[inline]
    pub fn get(&self, key: &K) -> Option<u32> {
        self.get_hashed(key, key.hash64())
    }

    /// [`get`](Self::get) with `hash == FixedMap::hash(key)` computed before.
    #[inline]
    pub fn get_hashed(&self, key: &K, hash: u64) -> Option<u32> {
        debug_assert_eq!(hash, key.hash64());
        if *key == K::EMPTY {
            return None;
        }
        let mut i = hash as usize & self.mask;
        // Bounded: the load factor is <= 0.5, so an empty slot exists.
        for _ in 0..=self.mask {
            let e = &self.entries[i];
            if e.key == *key {
                return Some(e.val);
            }
            if e.key == K::EMPTY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Look `key` up once: its value, or where a later [`insert_at`](Self::insert_at) can
    /// put it without probing again. `key` must not be the empty key.
    #[inline]
    pub fn find(&self, key: &K) -> Probe {
        self.find_hashed(key, key.hash64())
    }

    /// [`find`](Self::find) with `hash == FixedMap::hash(key)` computed before.
    #[inline]
    pub fn find_hashed(&self, key: &K, hash: u64) -> Probe {
        debug_assert!(*key != K::EMPTY);
        debug_assert_eq!(hash, key.hash64());
        let mut i = hash as usize & self.mask;
        // Bounded: the load factor is <= 0.5, so an empty slot exists.
        for _ in 0..=self.mask {
            let e = &self.entries[i];
            if e.key == *key {
                return Probe::Found(e.val);
            }
            if e.key == K::EMPTY {
                break;
            }
            i = (i + 1) & self.mask;
        }
        Probe::Vacant(i)
    }

    /// Insert a key that is not present. The caller checks `get` first.
    pub fn insert(&mut self, key: K, val: u32) -> Result<(), Full> {
        debug_assert!(key != K::EMPTY && self.get(&key).is_none());
        let at = self.home(&key);
        self.insert_at(at, key, val)
    }

    /// Insert a key that is not present, starting the probe at `at`: its home slot, or the
    /// vacancy a [`find`](Self::find) of it returned (still right if other keys were inserted
    /// since: the probe goes on from there to the next empty slot).
    #[inline]
    pub fn insert_at(&mut self, at: usize, key: K, val: u32) -> Result<(), Full> {
        debug_assert!(key != K::EMPTY && self.get(&key).is_none());
        if self.is_full() {
            return Err(Full);
        }
        let mut i = at & self.mask;
        while self.entries[i].key != K::EMPTY {
            i = (i + 1) & self.mask;
        }
        self.entries[i] = Entry { key, val };
        self.len += 1;
        Ok(())
    }

    /// The table's memory (every slot), for [`populate`].
    pub fn memory(&self) -> (*const u8, usize) {
        (self.entries.as_ptr().cast(), std::mem::size_of_val(&*self.entries))
    }

    /// Hint the CPU to load the key's home slot (no effect on results).
    #[inline]
    pub fn prefetch(&self, key: &K) {
        prefetch(&self.entries[self.home(key)]);
    }

    /// [`prefetch`](Self::prefetch) the home slot of the key whose hash is `hash`.
    #[inline]
    pub fn prefetch_hashed(&self, hash: u64) {
        prefetch(&self.entries[hash as usize & self.mask]);
    }
}

/// A boxed slice of `n` zeroed `T`, from fresh zero pages that the kernel is asked to back
/// with transparent huge pages (fewer TLB misses on large random-access tables). The advice is
/// a hint: without THP the memory is ordinary pages and everything works the same.
///
/// # Safety
/// An all-zero bit pattern must be a valid `T`.
pub unsafe fn zeroed_slice<T>(n: usize) -> Box<[T]> {
    use std::alloc::{alloc_zeroed, handle_alloc_error, Layout};
    let layout = Layout::array::<T>(n.max(1)).expect("table size fits the address space");
    // SAFETY: the layout has a non-zero size (n.max(1) elements of a sized, non-ZST T here).
    let ptr = unsafe { alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        handle_alloc_error(layout);
    }
    advise_huge_pages(ptr.cast::<u8>(), layout.size());
    // SAFETY: `ptr` holds n.max(1) zeroed Ts (valid per the caller); Box<[T]> frees it with
    // Layout::array::<T>(len), the layout it was allocated with, when len == n.max(1).
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, n.max(1))) }
}

/// Advise the kernel to back `[ptr, ptr + len)` with transparent huge pages (Linux; a no-op
/// elsewhere). Only whole 4 KiB pages inside the range are advised; failure is ignored because
/// the advice never changes results.
pub fn advise_huge_pages(ptr: *const u8, len: usize) {
    const MADV_HUGEPAGE: i32 = 14;
    let (start, end) = ((ptr as usize).div_ceil(PAGE) * PAGE, (ptr as usize + len) / PAGE * PAGE);
    if end > start {
        let _ = madvise_pages(start, end, MADV_HUGEPAGE);
    }
}

/// Commit the pages of `[ptr, ptr + len)` now, writable (`madvise(MADV_POPULATE_WRITE)`, Linux
/// 5.14+): the kernel allocates every page as a first write would (zeroed, for fresh memory;
/// in 2 MiB pages where THP was advised), without writing to it, so the contents do not
/// change and the first real writes take no page fault. The range is widened to whole 4 KiB
/// pages, which belong to mappings of ours. Returns whether the kernel did it (an older kernel
/// refuses with `EINVAL`, and nothing else happens; elsewhere than Linux: `false`).
pub fn populate(ptr: *const u8, len: usize) -> bool {
    const MADV_POPULATE_WRITE: i32 = 23;
    let (start, end) = (ptr as usize / PAGE * PAGE, (ptr as usize + len).div_ceil(PAGE) * PAGE);
    len == 0 || madvise_pages(start, end, MADV_POPULATE_WRITE)
}

const PAGE: usize = 4096;

/// `madvise(start, end - start, advice)` on page-aligned bounds of memory of ours; whether the
/// kernel accepted it (`false` elsewhere than Linux). Callers pass only advice that changes no
/// contents (`MADV_HUGEPAGE`, `MADV_POPULATE_WRITE`).
fn madvise_pages(start: usize, end: usize, advice: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn madvise(addr: *mut u8, len: usize, advice: i32) -> i32;
        }
        // SAFETY: every page of the range holds bytes of a live allocation of ours, so it is
        // mapped; the callers' advice never changes its contents or validity.
        unsafe { madvise(start as *mut u8, end - start, advice) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (start, end, advice);
        false
    }
}

/// Ask the CPU to pull the cache line holding `r` into L1. Never faults, changes nothing.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    prefetch_ptr((r as *const T).cast::<u8>());
}

/// Prefetch the line holding address `p` (any address: a prefetch never faults).
#[inline(always)]
pub fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: prefetch is a hint; it never faults or writes, and SSE is baseline on x86_64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_and_full() {
        let mut m: FixedMap<u64> = FixedMap::new(100);
        for k in 1..=100u64 {
            assert_eq!(m.get(&(k * 7919)), None);
            m.insert(k * 7919, k as u32).unwrap();
        }
        assert_eq!(m.insert(5, 5), Err(Full));
        for k in 1..=100u64 {
            assert_eq!(m.get(&(k * 7919)), Some(k as u32));
        }
        assert_eq!(m.get(&0), None);
        assert_eq!(m.get(&3), None);
        assert_eq!(m.len(), 100);
    }

    #[test]
    fn vacancies_found_before_other_inserts_still_insert_right() {
        // Two new keys looked up first and inserted after (as a trade's two new positions are):
        // in an 8-slot table their vacancies often coincide; both must land and be found.
        let mut coincided = 0;
        for a in 1..40u64 {
            for b in (a + 1)..40u64 {
                let mut m: FixedMap<u64> = FixedMap::new(4);
                m.insert(1000 + a, 1).unwrap();
                let (Probe::Vacant(va), Probe::Vacant(vb)) = (m.find(&a), m.find(&b)) else {
                    panic!("new keys are vacant");
                };
                coincided += usize::from(va == vb);
                m.insert_at(va, a, 10).unwrap();
                m.insert_at(vb, b, 20).unwrap();
                assert_eq!(
                    (m.get(&a), m.get(&b), m.get(&(1000 + a))),
                    (Some(10), Some(20), Some(1))
                );
                assert_eq!((m.find(&a), m.find(&b)), (Probe::Found(10), Probe::Found(20)));
            }
        }
        assert!(coincided > 0, "the case of one vacancy for both keys was reached");
    }

    #[test]
    fn hashed_lookups_equal_the_plain_ones() {
        fn check<K: MapKey + std::fmt::Debug>(keys: &[K], absent: &[K]) {
            let mut m: FixedMap<K> = FixedMap::new(keys.len());
            for (v, k) in keys.iter().enumerate() {
                m.insert(*k, v as u32).unwrap();
            }
            for k in keys.iter().chain(absent) {
                let h = FixedMap::<K>::hash(k);
                m.prefetch_hashed(h);
                assert_eq!(m.get_hashed(k, h), m.get(k), "{k:?}");
                assert_eq!(m.find_hashed(k, h), m.find(k), "{k:?}");
            }
        }
        check(&[3u64, 77, 1 << 40], &[4, 78]);
        check(&[SeqKey(1), SeqKey(2), SeqKey(3), SeqKey(4), SeqKey(9)], &[SeqKey(5), SeqKey(8)]);
        check(&[PairKey::new(1, 2), PairKey::new(2, 1)], &[PairKey::new(1, 1)]);
    }

    #[test]
    fn pair_keys_are_distinct() {
        let mut m: FixedMap<PairKey> = FixedMap::new(16);
        m.insert(PairKey::new(1, 2), 10).unwrap();
        m.insert(PairKey::new(2, 1), 20).unwrap();
        m.insert(PairKey::new(1 << 32, 2), 30).unwrap();
        assert_eq!(m.get(&PairKey::new(1, 2)), Some(10));
        assert_eq!(m.get(&PairKey::new(2, 1)), Some(20));
        assert_eq!(m.get(&PairKey::new(1 << 32, 2)), Some(30));
        assert_eq!(m.get(&PairKey::new(1, 1)), None);
        assert_eq!(std::mem::size_of::<Entry<PairKey>>(), 16);
        assert_eq!(std::mem::size_of::<Entry<u64>>(), 16);
    }
}
