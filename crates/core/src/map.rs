//! Fixed-capacity open-addressing maps from ids to dense `u32` indices.
//!
//! Allocated once at start-up; `insert` never allocates and never grows. The table is sized to
//! twice the item limit (load factor <= 0.5), so linear probing always finds an empty slot within
//! a short run and every loop is bounded by the table size. The hash is fixed (no random seed):
//! lookups are deterministic, and nothing is ever iterated in table order to produce output.
//!
//! A map's slots are atomic words, shared with its [`MapReader`]s: another thread may look keys
//! up while the map's owner inserts (the batch's lookup stage on another core,
//! [`crate::lookahead`]). Keys are only ever inserted, so a key a reader finds stays there with
//! its value; a reader may miss a key inserted meanwhile.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A key with a reserved "empty" value.
pub trait MapKey: Copy + Eq {
    /// The reserved empty key; its bytes are all zero.
    const EMPTY: Self;
    fn hash64(&self) -> u64;
    fn is_zero(&self) -> bool;
    /// The key as a slot stores it: a low word, never 0 but for the empty key's (the engine's
    /// ids start at 1), and a high word.
    fn words(&self) -> (u64, u32);
    /// Whether the high word can be other than 0 (if not, a lookup compares the low word only).
    const WIDE: bool;
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

/// The index keys' mixer: the key's high half folded onto its low half (a bijection), then
/// one 64x64 -> 128-bit multiply with its halves folded (the wyhash "mum"): about half the
/// work of murmur3's finaliser ([`fmix64`]), in a shorter dependency chain.
///
/// Without the first fold, keys whose low bits are all equal (a counter in the high bits,
/// strides of 2^24 and more) leave the product's low half constant there and cluster: 3.2-6.6
/// probes a lookup instead of 1.3 (the test below).
#[inline(always)]
pub fn mix64(k: u64) -> u64 {
    let x = k ^ (k >> 32) ^ 0x2d35_8dcc_aa6c_78a5;
    let r = u128::from(x) * u128::from(0x8bb8_4b93_962e_acc9u64);
    (r as u64) ^ ((r >> 64) as u64)
}

impl MapKey for u64 {
    const EMPTY: u64 = 0;
    #[inline]
    fn hash64(&self) -> u64 {
        mix64(*self)
    }
    fn is_zero(&self) -> bool {
        *self == 0
    }
    #[inline(always)]
    fn words(&self) -> (u64, u32) {
        (*self, 0)
    }
    const WIDE: bool = false;
}

/// A key that usually arrives in increasing order (venue execution ids; the map of a
/// [`TradeIndex`] holds those that are not the next in order, or are outside its bitmap's
/// range): groups of four consecutive ids share one 64-byte line of the table, and the groups
/// are spread by the full mixer. A run of new ids then costs one cache miss per four, and
/// crafted ids cannot cluster more than four to a group.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SeqKey(pub u64);

impl MapKey for SeqKey {
    const EMPTY: SeqKey = SeqKey(0);
    #[inline]
    fn hash64(&self) -> u64 {
        mix64(self.0 >> 2) << 2 | (self.0 & 3)
    }
    fn is_zero(&self) -> bool {
        self.0 == 0
    }
    #[inline(always)]
    fn words(&self) -> (u64, u32) {
        (self.0, 0)
    }
    const WIDE: bool = false;
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
    /// The account's own hash ([`mix64`], as the account index hashes it) plus the instrument
    /// times an odd constant: a trade hashes each of its accounts once for both indices (the
    /// compiler shares the mix), and one account's instruments land on distinct slots (an odd
    /// multiple is a bijection of the low bits the table uses). Probes as random hashes would
    /// (the test below).
    #[inline]
    fn hash64(&self) -> u64 {
        let a = u64::from(self.0[0]) | u64::from(self.0[1]) << 32;
        mix64(a).wrapping_add(u64::from(self.0[2]).wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }
    fn is_zero(&self) -> bool {
        self.0 == [0; 3]
    }
    /// The account (its id; 0 is no account's) and the instrument.
    #[inline(always)]
    fn words(&self) -> (u64, u32) {
        (u64::from(self.0[0]) | u64::from(self.0[1]) << 32, self.0[2])
    }
    const WIDE: bool = true;
}

/// One slot: its key's low word (0: empty), and its key's high word in the low half of `hi`
/// with the value in the high half. The owner writes `hi`, then `lo` with `Release`; a reader
/// loads `lo` with `Acquire`, then `hi`. So a reader that sees a key's low word sees the rest
/// of its slot, and a slot whose low word it sees as 0 is empty or still being written: a key
/// it looks for cannot lie past it (linear probing, no removals: every slot between a key's
/// home and its own was full when it was inserted). On x86-64 these loads and stores are plain
/// moves.
#[repr(C, align(16))]
struct Slot {
    lo: AtomicU64,
    hi: AtomicU64,
}

/// The lookups of a [`FixedMap`], on the map's slots: the map's own ([`FixedMap`] derefs to
/// it), or a copy for another thread ([`FixedMap::reader`]), which keeps the slots allocated.
pub struct MapReader<K> {
    /// The slots; `base` points at the first.
    slots: Arc<Box<[Slot]>>,
    base: NonNull<Slot>,
    mask: usize,
    _key: PhantomData<fn() -> K>,
}

// SAFETY: `base` points into `slots`, which the reader keeps alive (an `Arc`), and every access
// through it is to an atomic word: the reader is as thread-safe as `Arc<Box<[Slot]>>` is.
unsafe impl<K> Send for MapReader<K> {}
// SAFETY: as above.
unsafe impl<K> Sync for MapReader<K> {}

impl<K> Clone for MapReader<K> {
    fn clone(&self) -> Self {
        MapReader { slots: self.slots.clone(), base: self.base, mask: self.mask, _key: PhantomData }
    }
}

/// What [`MapReader::find`] saw: the key's value, or the empty slot its probe ended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Found(u32),
    Vacant(usize),
}

/// The map is at its item limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

pub struct FixedMap<K: MapKey> {
    reader: MapReader<K>,
    len: usize,
    items_max: usize,
}

impl<K: MapKey> std::ops::Deref for FixedMap<K> {
    type Target = MapReader<K>;
    #[inline(always)]
    fn deref(&self) -> &MapReader<K> {
        &self.reader
    }
}

impl<K: MapKey> MapReader<K> {
    /// The slot `i & mask`, read without a bounds check: it is always in the table.
    #[inline(always)]
    fn slot(&self, i: usize) -> &Slot {
        // SAFETY: `slots.len() == mask + 1` (both set in `FixedMap::new`, never changed), so
        // `i & mask` is a slot of the allocation `slots` keeps alive.
        unsafe { &*self.base.as_ptr().add(i & self.mask) }
    }

    #[inline]
    fn home(&self, key: &K) -> usize {
        key.hash64() as usize & self.mask
    }

    #[inline]
    pub fn get(&self, key: &K) -> Option<u32> {
        self.get_hashed(key, key.hash64())
    }

    /// [`get`](Self::get) with `hash == FixedMap::hash(key)` computed before.
    #[inline]
    pub fn get_hashed(&self, key: &K, hash: u64) -> Option<u32> {
        self.probe(key, hash).ok()
    }

    /// Look `key` up once: its value, or where a later [`FixedMap::insert_at`] can put it
    /// without probing again (on a reader, the vacancy means nothing). A key whose low word is
    /// 0 (the empty key) is never found.
    #[inline]
    pub fn find(&self, key: &K) -> Probe {
        self.find_hashed(key, key.hash64())
    }

    /// [`find`](Self::find) with `hash == FixedMap::hash(key)` computed before.
    #[inline]
    pub fn find_hashed(&self, key: &K, hash: u64) -> Probe {
        match self.probe(key, hash) {
            Ok(v) => Probe::Found(v),
            Err(at) => Probe::Vacant(at),
        }
    }

    /// The linear probe for `key` from its home slot: its value, or the empty slot it ended
    /// on (`& mask`).
    #[inline(always)]
    fn probe(&self, key: &K, hash: u64) -> Result<u32, usize> {
        debug_assert_eq!(hash, key.hash64());
        let (lo, hi) = key.words();
        let mut i = hash as usize;
        // Bounded by the table's size (`last`; an empty slot comes first anyway: the load
        // factor is <= 0.5). Tested at the end, so that a key in its home slot (most are)
        // costs no loop set-up.
        let last = i.wrapping_add(self.mask);
        loop {
            let s = self.slot(i);
            // Acquire: pairs with `insert_at`'s Release store of `lo` (see `Slot`).
            let found = s.lo.load(Ordering::Acquire);
            if found == 0 {
                return Err(i & self.mask);
            }
            if found == lo {
                // Relaxed: ordered after the Acquire load above.
                let word = s.hi.load(Ordering::Relaxed);
                if !K::WIDE || word as u32 == hi {
                    return Ok((word >> 32) as u32);
                }
            }
            if i == last {
                return Err(i & self.mask);
            }
            i = i.wrapping_add(1);
        }
    }

    /// The table's memory (every slot), for [`populate`].
    pub fn memory(&self) -> (*const u8, usize) {
        (self.base.as_ptr().cast_const().cast(), (self.mask + 1) * std::mem::size_of::<Slot>())
    }

    /// Hint the CPU to load the key's home slot (no effect on results).
    #[inline]
    pub fn prefetch(&self, key: &K) {
        self.prefetch_hashed(key.hash64());
    }

    /// [`prefetch`](Self::prefetch) the home slot of the key whose hash is `hash`.
    #[inline]
    pub fn prefetch_hashed(&self, hash: u64) {
        prefetch(self.slot(hash as usize));
    }

    /// [`prefetch_hashed`](Self::prefetch_hashed), and the line after the home slot's too
    /// when the home slot is in the second half of its line: a key found one or two slots
    /// past its home (linear probing; at a load factor near 0.5 about a third of the keys
    /// are) is then in a line prefetched as well.
    #[inline]
    pub fn prefetch_hashed_probe(&self, hash: u64) {
        let i = hash as usize;
        prefetch(self.slot(i));
        // The same line when `i` is in its first half (16-byte slots, four to a line).
        prefetch(self.slot(i + 2));
    }
}

impl<K: MapKey> FixedMap<K> {
    /// A map holding at most `items_max` keys.
    pub fn new(items_max: usize) -> Self {
        let slots = (items_max.max(4) * 2).next_power_of_two();
        assert!(K::EMPTY.is_zero() && K::EMPTY.words() == (0, 0), "empty keys are all-zero");
        // SAFETY: all-zero atomic words are valid (an empty slot).
        let table: Box<[Slot]> = unsafe { zeroed_slice(slots) };
        let slots = Arc::new(table);
        let (base, mask) = (NonNull::from(&slots[0]), slots_mask(&slots));
        FixedMap { reader: MapReader { slots, base, mask, _key: PhantomData }, len: 0, items_max }
    }

    /// `key`'s hash, for a [`prefetch_hashed`](MapReader::prefetch_hashed) and the lookups
    /// after it (`*_hashed`), so the key is hashed once for all of them.
    #[inline]
    pub fn hash(key: &K) -> u64 {
        key.hash64()
    }

    /// A reader of this map's slots for another thread: it sees every key inserted before it
    /// looks, and may or may not see one inserted while it looks (see the module documentation).
    pub fn reader(&self) -> MapReader<K> {
        self.reader.clone()
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

    /// Insert a key that is not present. The caller checks `get` first.
    pub fn insert(&mut self, key: K, val: u32) -> Result<(), Full> {
        debug_assert!(key != K::EMPTY && self.get(&key).is_none());
        let at = self.home(&key);
        self.insert_at(at, key, val)
    }

    /// Insert a key that is not present, starting the probe at `at`: its home slot, or the
    /// vacancy a [`find`](MapReader::find) of it returned (still right if other keys were
    /// inserted since: the probe goes on from there to the next empty slot).
    ///
    /// Panics if the key's low word is 0 (the engine's ids start at 1; see [`MapKey::words`]).
    #[inline]
    pub fn insert_at(&mut self, at: usize, key: K, val: u32) -> Result<(), Full> {
        debug_assert!(self.get(&key).is_none());
        let (lo, hi) = key.words();
        assert!(lo != 0, "a key's low word is never 0");
        if self.is_full() {
            return Err(Full);
        }
        let mut i = at;
        while self.slot(i).lo.load(Ordering::Relaxed) != 0 {
            i += 1;
        }
        let s = self.slot(i);
        s.hi.store(u64::from(val) << 32 | u64::from(hi), Ordering::Relaxed);
        // Release: a reader that sees `lo` sees `hi` (see `Slot`).
        s.lo.store(lo, Ordering::Release);
        self.len += 1;
        Ok(())
    }
}

#[cfg(test)]
impl<K: MapKey> MapReader<K> {
    /// The key words in slot `i & mask`, if it holds a key.
    fn words_at(&self, i: usize) -> Option<(u64, u32)> {
        let s = self.slot(i);
        let lo = s.lo.load(Ordering::Acquire);
        (lo != 0).then(|| (lo, s.hi.load(Ordering::Relaxed) as u32))
    }
}

/// The index mask of a power-of-two table of slots.
fn slots_mask(slots: &[Slot]) -> usize {
    debug_assert!(slots.len().is_power_of_two());
    slots.len() - 1
}

/// Ids per item of a [`TradeIndex`] that its bitmap spans: ids that average at most this far
/// apart stay in the bitmap's range for the index's whole capacity (8 bytes of bitmap an item).
pub const TRADE_ID_SPAN: u64 = 64;

/// Trade ids -> their index in the state machine's trade table: the duplicate check and the
/// lookup of a bust.
///
/// Venues number their executions in increasing order. So the index keeps a bitmap of the ids
/// it holds over a range that starts at the first id (`TRADE_ID_SPAN` ids per item of
/// capacity), and the ids of that range that were above every id before them in a sorted list
/// (their values beside them). An id above the largest so far, in the range, cannot be a
/// duplicate: it is appended to the list and its bit set, with no hash, no probe and no
/// random line. An id in the range that arrives late is a duplicate if its bit is set (one
/// line, usually a recent one); if not, it goes into a hash map of the others, with its bit
/// set. An id outside the range (below the first id, or far above) is only in the map, as
/// every id would be without the list. No order of ids costs more than the map alone would,
/// but a bust of an id in the list (a binary search, rare).
///
/// Its answers depend only on the ids and values it holds; its layout on their order too (a
/// snapshot lists its trades in id order, so an imported index may hold in its list ids that
/// the exporter's held in its map), which nothing reads.
pub struct TradeIndex {
    /// The first id inserted: bit 0 of the bitmap (0 before the first).
    base: u64,
    /// The largest offset from `base` in the bitmap's range (`u64::MAX` before the first id
    /// is inserted: every id is in range then, so the first always goes to the list).
    last_off: u64,
    /// Bit `id - base`: `id` is in the index (a bit is set only for an id of the range).
    bits: Box<[u64]>,
    /// The largest id in the list (0 before the first).
    max: u64,
    /// The ids of the range that were above every id before them, ascending; `at` holds
    /// their values.
    ids: Box<[u64]>,
    at: Box<[u32]>,
    /// How many of `ids` and `at` are used.
    ascending: usize,
    /// The ids that are not in the list, with their values. Its item limit is the index's.
    others: FixedMap<SeqKey>,
}

/// Where a new trade id goes ([`TradeIndex::vacancy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradeVacancy {
    /// At the end of the list: the id is above every id so far, in the bitmap's range.
    Ascending,
    /// In the map, from this slot on ([`FixedMap::insert_at`]), and in the bitmap: a late id
    /// of its range.
    Late(usize),
    /// In the map only: an id outside the bitmap's range.
    Other(usize),
}

impl TradeIndex {
    /// An index holding at most `items_max` ids.
    pub fn new(items_max: usize) -> Self {
        let items = items_max.max(1);
        TradeIndex {
            base: 0,
            last_off: u64::MAX,
            // SAFETY: all-zero u64s and u32s are valid.
            bits: unsafe { zeroed_slice((items as u64 * TRADE_ID_SPAN).div_ceil(64) as usize) },
            max: 0,
            // SAFETY: as above.
            ids: unsafe { zeroed_slice(items) },
            // SAFETY: as above.
            at: unsafe { zeroed_slice(items) },
            ascending: 0,
            others: FixedMap::new(items_max),
        }
    }

    /// Ids held: the list's and the map's.
    pub fn len(&self) -> usize {
        self.ascending + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.len() >= self.others.items_max
    }

    /// Whether `id` (not 0) would be appended to the list: above every id so far, in the
    /// bitmap's range.
    #[inline(always)]
    fn is_next(&self, id: u64) -> bool {
        id > self.max && id - self.base <= self.last_off
    }

    /// `id`'s bit in the bitmap, if at or below the largest id (in the list's range, so
    /// after the first).
    #[inline(always)]
    fn late_bit(&self, id: u64) -> Option<(usize, u64)> {
        let off = id.wrapping_sub(self.base);
        // `off <= max - base <= last_off`: a word of the bitmap (`new` sized it for the range).
        (id <= self.max && off <= self.last_off).then_some(((off / 64) as usize, 1 << (off % 64)))
    }

    /// Where the id `id` (not 0) would go, or `None` if it is there already (a duplicate).
    #[inline(always)]
    pub fn vacancy(&self, id: u64) -> Option<TradeVacancy> {
        debug_assert!(id != 0);
        if self.is_next(id) {
            return Some(TradeVacancy::Ascending);
        }
        self.vacancy_in_map(id)
    }

    /// [`vacancy`](Self::vacancy) of an id that goes to the map if new.
    #[inline(always)]
    fn vacancy_in_map(&self, id: u64) -> Option<TradeVacancy> {
        let late = self.late_bit(id);
        if late.is_some_and(|(word, bit)| self.bits[word] & bit != 0) {
            return None;
        }
        match self.others.find(&SeqKey(id)) {
            // Only for an id outside the range: one in it is in the map only if its bit is set.
            Probe::Found(_) => None,
            Probe::Vacant(at) if late.is_some() => Some(TradeVacancy::Late(at)),
            Probe::Vacant(at) => Some(TradeVacancy::Other(at)),
        }
    }

    /// Insert the id `id` with the value `index` where [`vacancy`](Self::vacancy) said (with no
    /// other id inserted since). `Err(Full)` at the item limit.
    #[inline(always)]
    pub fn insert(&mut self, v: TradeVacancy, id: u64, index: u32) -> Result<(), Full> {
        if self.is_full() {
            return Err(Full);
        }
        match v {
            TradeVacancy::Ascending => {
                debug_assert!(self.is_next(id));
                if self.ascending == 0 {
                    (self.base, self.last_off) = (id, self.ids.len() as u64 * TRADE_ID_SPAN - 1);
                }
                let (off, n) = (id - self.base, self.ascending);
                // Checked: an id that is not the next (a caller's mistake) may be out of range.
                self.bits[(off / 64) as usize] |= 1 << (off % 64);
                // SAFETY: `n = ascending <= len() < items_max <= ids.len() == at.len()` (not
                // full, checked above; `len()` counts every id of the list).
                unsafe {
                    *self.ids.get_unchecked_mut(n) = id;
                    *self.at.get_unchecked_mut(n) = index;
                }
                (self.ascending, self.max) = (n + 1, id);
            }
            TradeVacancy::Late(at) => {
                let (word, bit) = self.late_bit(id).expect("a late vacancy is for a late id");
                self.others.insert_at(at, SeqKey(id), index)?;
                self.bits[word] |= bit;
            }
            TradeVacancy::Other(at) => self.others.insert_at(at, SeqKey(id), index)?,
        }
        Ok(())
    }

    /// The value of `id`, if present.
    pub fn get(&self, id: u64) -> Option<u32> {
        if id == 0 || self.is_next(id) {
            return None;
        }
        if self.late_bit(id).is_some_and(|(word, bit)| self.bits[word] & bit == 0) {
            return None;
        }
        self.others.get(&SeqKey(id)).or_else(|| {
            let ids = &self.ids[..self.ascending];
            ids.binary_search(&id).ok().map(|k| self.at[k])
        })
    }

    /// Hint the CPU to load the map slot that [`vacancy`](Self::vacancy) of `id` reads first,
    /// if it reads one: not for the next id in order.
    #[inline(always)]
    pub fn prefetch(&self, id: u64) {
        if !self.is_next(id) {
            self.others.prefetch(&SeqKey(id));
        }
    }

    /// The index's memory (the bitmap, the list and its values, the map), for [`populate`].
    pub fn memory(&self) -> [(*const u8, usize); 4] {
        [
            (self.bits.as_ptr().cast(), std::mem::size_of_val(&*self.bits)),
            (self.ids.as_ptr().cast(), std::mem::size_of_val(&*self.ids)),
            (self.at.as_ptr().cast(), std::mem::size_of_val(&*self.at)),
            self.others.memory(),
        ]
    }
}

/// A boxed slice of `n` zeroed `T`, from fresh zero pages that the kernel is asked to back
/// with transparent huge pages (fewer TLB misses on large random-access tables). The advice is
/// a hint: without THP the memory is ordinary pages and everything works the same.
///
/// The pages must not be touched before the advice: a page already faulted in stays a 4 KiB
/// page. `alloc_zeroed` does not promise that (the system allocator zeroes a block aligned
/// over 16 bytes with a `memset`, committing every page of a 64-byte-aligned table as 4 KiB
/// pages), so a table of 2 MiB or more is allocated uninitialized, advised, and then zeroed by
/// [`fresh_pages`]: its whole pages are handed back to the kernel, which gives zero pages on
/// first touch, and only the partial pages at its ends are written.
///
/// # Safety
/// An all-zero bit pattern must be a valid `T`.
pub unsafe fn zeroed_slice<T>(n: usize) -> Box<[T]> {
    use std::alloc::{alloc, alloc_zeroed, handle_alloc_error, Layout};
    let layout = Layout::array::<T>(n.max(1)).expect("table size fits the address space");
    let large = layout.size() >= HUGE_PAGE;
    // SAFETY: the layout has a non-zero size (n.max(1) elements of a sized, non-ZST T here).
    let ptr = unsafe {
        if large {
            alloc(layout)
        } else {
            alloc_zeroed(layout)
        }
    }
    .cast::<T>();
    if ptr.is_null() {
        handle_alloc_error(layout);
    }
    advise_huge_pages(ptr.cast::<u8>(), layout.size());
    if large {
        // SAFETY: `ptr` is a live allocation of `layout.size()` bytes that nothing has read.
        unsafe { zero_fresh(ptr.cast::<u8>(), layout.size()) };
    }
    // SAFETY: `ptr` holds n.max(1) zeroed Ts (valid per the caller); Box<[T]> frees it with
    // Layout::array::<T>(len), the layout it was allocated with, when len == n.max(1).
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, n.max(1))) }
}

/// Zero `[ptr, ptr + len)` without touching its whole pages: they are handed back
/// ([`fresh_pages`]) and read as zeros from then on; the partial pages at the ends are written.
/// If the kernel refuses, every byte is written.
///
/// # Safety
/// `[ptr, ptr + len)` must be memory of one live allocation of ours that nothing else uses.
unsafe fn zero_fresh(ptr: *mut u8, len: usize) {
    let (start, end) = (ptr as usize, ptr as usize + len);
    let (inner_start, inner_end) = whole_pages(ptr, len);
    // SAFETY: the caller's allocation, to be zeroed here: its old bytes are never read.
    if unsafe { fresh_pages(ptr, len) } {
        // SAFETY: both ranges lie inside the allocation (per the caller).
        unsafe {
            std::ptr::write_bytes(ptr, 0, inner_start - start);
            std::ptr::write_bytes(inner_end as *mut u8, 0, end - inner_end);
        }
    } else {
        // SAFETY: the whole range is the caller's allocation.
        unsafe { std::ptr::write_bytes(ptr, 0, len) };
    }
}

/// Hand the whole 4 KiB pages inside `[ptr, ptr + len)` back to the kernel
/// (`madvise(MADV_DONTNEED)`, Linux): the allocation keeps its addresses, and each page is
/// faulted in afresh on first touch, as zeros (the heap is private anonymous memory) and in a
/// 2 MiB page where THP was advised, however the allocator had touched it before. For memory
/// whose contents do not matter (a table about to be zeroed, a vector's spare capacity).
/// Returns whether the kernel did it (`false` elsewhere than Linux).
///
/// # Safety
/// `[ptr, ptr + len)` must lie in one live allocation of the caller's whose bytes there hold
/// nothing that will be read before it is written (they may read as zeros afterwards).
pub unsafe fn fresh_pages(ptr: *const u8, len: usize) -> bool {
    const MADV_DONTNEED: i32 = 4;
    let (start, end) = whole_pages(ptr, len);
    end > start && madvise_pages(start, end, MADV_DONTNEED)
}

/// The whole 4 KiB pages inside `[ptr, ptr + len)`, as `(start, end)` addresses (`end <=
/// start`: none).
fn whole_pages(ptr: *const u8, len: usize) -> (usize, usize) {
    ((ptr as usize).div_ceil(PAGE) * PAGE, (ptr as usize + len) / PAGE * PAGE)
}

/// Advise the kernel to back `[ptr, ptr + len)` with transparent huge pages (Linux; a no-op
/// elsewhere). Only whole 4 KiB pages inside the range are advised; failure is ignored because
/// the advice never changes results.
pub fn advise_huge_pages(ptr: *const u8, len: usize) {
    const MADV_HUGEPAGE: i32 = 14;
    let (start, end) = whole_pages(ptr, len);
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
/// A transparent huge page (x86-64): smaller tables are not worth a huge page of their own.
const HUGE_PAGE: usize = 2 << 20;

/// `madvise(start, end - start, advice)` on page-aligned bounds of memory of ours; whether the
/// kernel accepted it (`false` elsewhere than Linux). Callers pass only advice that changes no
/// contents they rely on (`MADV_HUGEPAGE`, `MADV_POPULATE_WRITE`; `MADV_DONTNEED` on memory
/// whose contents do not matter, see [`fresh_pages`]).
fn madvise_pages(start: usize, end: usize, advice: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn madvise(addr: *mut u8, len: usize, advice: i32) -> i32;
        }
        // SAFETY: every page of the range holds bytes of a live allocation of ours, so it is
        // mapped; the callers' advice never changes its validity, nor contents they rely on.
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

/// Prefetch every cache line of element `i` of `s` (a view cell spans two), without a bounds
/// check: an `i` past the end only names an address past the slice,
/// and a prefetch of any address is harmless.
#[inline(always)]
pub fn prefetch_element<T>(s: &[T], i: usize) {
    prefetch_element_bytes(s, i, std::mem::size_of::<T>());
}

/// [`prefetch_element`] of the first `bytes` of element `i` only (the part about to be used).
#[inline(always)]
pub fn prefetch_element_bytes<T>(s: &[T], i: usize, bytes: usize) {
    let p = s.as_ptr().wrapping_add(i).cast::<u8>();
    for off in (0..bytes).step_by(64) {
        // wrapping_add: only an address for the hint.
        prefetch_ptr(p.wrapping_add(off));
    }
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

    /// Mean probe length of a successful lookup (1 = found in its home slot) for `keys`
    /// inserted in a map sized for them, and the longest probe.
    fn probes<K: MapKey>(keys: impl Iterator<Item = K>, n: usize) -> (f64, usize) {
        let mut m: FixedMap<K> = FixedMap::new(n);
        let keys: Vec<K> = keys.collect();
        for (v, k) in keys.iter().enumerate() {
            m.insert(*k, v as u32).unwrap();
        }
        let mut sum = 0;
        let mut max = 0;
        for k in &keys {
            let home = m.home(k);
            let mut i = home;
            while m.words_at(i) != Some(k.words()) {
                i = (i + 1) & m.mask;
            }
            let len = ((i + m.mask + 1 - home) & m.mask) + 1;
            (sum, max) = (sum + len, max.max(len));
        }
        (sum as f64 / keys.len() as f64, max)
    }

    #[test]
    fn the_mixer_spreads_the_key_shapes_the_engine_sees_as_random_hashes_would() {
        // Linear probing with random hashes: ~1.3 probes at this load (n keys in
        // 2n.next_power_of_two() slots: 0.38); a mixer that let structured keys cluster would
        // take several times that. Trade ids in order fill their four-slot groups (`SeqKey`),
        // which then collide as units: ~1.8-2.1 (fmix64 gave 1.8-2.2).
        let n = 100_000;
        let check = |name: &str, (mean, max): (f64, usize)| {
            let bound = if name.starts_with("trade ids in order") { 2.5 } else { 1.5 };
            assert!(mean < bound && max < 64, "{name}: mean {mean:.3}, longest {max}");
        };
        check("ids 1..n", probes(1..=n as u64, n));
        check("ids with a member prefix", probes((0..n as u64).map(|k| (k % 97 + 1) << 40 | k), n));
        check("strided ids", probes((1..=n as u64).map(|k| k << 20), n));
        check("ids strided by 2^24", probes((1..=n as u64).map(|k| k << 24), n));
        check("ids counted in the high bits", probes((1..=n as u64).map(|k| k << 40 | 7), n));
        let pairs = (1..=10_000u64).flat_map(|a| (1..=10u32).map(move |i| PairKey::new(a, i)));
        check("positions", probes(pairs, n));
        let wide = (1..=100u64).flat_map(|a| (1..=1_000u32).map(move |i| PairKey::new(a << 32, i)));
        check("positions of ids past 2^32", probes(wide, n));
        check("trade ids in order", probes((1..=n as u64).map(SeqKey), n));
        check(
            "trade ids in order, counted in the high bits",
            probes((1..=n as u64).map(|k| SeqKey(k << 40)), n),
        );
        check(
            "trade ids of several venues",
            probes((0..n as u64).map(|k| SeqKey((k % 7 + 1) << 48 | k)), n),
        );
    }

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

    /// The trade index against a `HashMap` for id streams of every shape it must take: in
    /// order, in order with gaps filled late, duplicated, random, and descending.
    #[test]
    fn the_trade_index_agrees_with_a_hash_map() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut kinds = std::collections::HashSet::new();
        for shape in 0..6 {
            let n = 3_000;
            let mut index = TradeIndex::new(n);
            let mut model = std::collections::HashMap::new();
            let mut next = 0;
            for i in 0..3 * n as u64 {
                let id = match shape {
                    // In order.
                    0 => next + 1,
                    // In order with gaps, some filled late; duplicates.
                    1 if rand(4) == 0 => 1 + rand(next + 1),
                    1 => next + 1 + rand(3),
                    // Mostly duplicates.
                    2 => 1 + rand(next / 2 + 10),
                    // Random.
                    3 => 1 + rand(1 << 40),
                    // Descending.
                    4 => (1 << 20) - 3 * i,
                    // Two venues' ids interleaved, the second's far above the first's.
                    _ => 1 + i / 2 + (i % 2) * (1 << 40),
                };
                next = next.max(id);
                let vacancy = index.vacancy(id);
                assert_eq!(vacancy.is_none(), model.contains_key(&id), "shape {shape}, id {id}");
                if let Some(v) = vacancy {
                    kinds.insert(std::mem::discriminant(&v));
                    let value = model.len() as u32;
                    if model.len() == n {
                        assert!(index.is_full());
                        assert_eq!(index.insert(v, id, value), Err(Full));
                        continue;
                    }
                    index.insert(v, id, value).unwrap();
                    model.insert(id, value);
                }
                assert_eq!(index.len(), model.len());
            }
            for probe in (0..=next + 2).step_by(1 + next as usize / 5_000) {
                assert_eq!(index.get(probe), model.get(&probe).copied(), "shape {shape}");
            }
            for (&id, &value) in &model {
                assert_eq!(index.get(id), Some(value), "shape {shape}");
            }
        }
        assert_eq!(kinds.len(), 3, "every kind of vacancy taken");
    }

    proptest::proptest! {
        /// Any sequence of ids (near the first, near the largest, anywhere), against a
        /// `HashMap`, in a small index that fills up.
        #[test]
        fn the_trade_index_agrees_with_a_hash_map_for_any_ids(
            steps in proptest::collection::vec((0u8..4, proptest::num::u64::ANY), 1..400),
        ) {
            let n = 256;
            let mut index = TradeIndex::new(n);
            let mut model = std::collections::HashMap::new();
            let mut last = 1u64;
            for (shape, x) in steps {
                let id = match shape {
                    0 => last.saturating_add(x % 8),
                    1 => last.saturating_sub(x % 8),
                    2 => u64::MAX - x % 8,
                    _ => x,
                }
                .max(1);
                last = id;
                let v = index.vacancy(id);
                proptest::prop_assert_eq!(v.is_none(), model.contains_key(&id));
                if let Some(v) = v {
                    let value = model.len() as u32;
                    if model.len() == n {
                        proptest::prop_assert_eq!(index.insert(v, id, value), Err(Full));
                    } else {
                        index.insert(v, id, value).unwrap();
                        model.insert(id, value);
                    }
                }
                proptest::prop_assert_eq!(index.get(id), model.get(&id).copied());
            }
            for (&id, &value) in &model {
                proptest::prop_assert_eq!(index.get(id), Some(value));
            }
        }
    }

    /// `insert` is safe to call wrongly: an "ascending" id far out of range panics, it does not
    /// write past the bitmap.
    #[test]
    #[should_panic]
    fn an_ascending_vacancy_for_an_id_out_of_range_panics() {
        let mut index = TradeIndex::new(4);
        index.insert(TradeVacancy::Ascending, 1_000, 0).unwrap();
        let _ = index.insert(TradeVacancy::Ascending, 1_000 + 1_000 * TRADE_ID_SPAN, 1);
    }

    #[test]
    fn ids_in_order_skip_the_map_and_others_use_it() {
        let mut index = TradeIndex::new(16);
        for id in [10, 20, 30, 40] {
            assert_eq!(index.vacancy(id), Some(TradeVacancy::Ascending));
            index.insert(TradeVacancy::Ascending, id, id as u32).unwrap();
        }
        assert_eq!(index.others.len(), 0);
        for id in [10, 20, 30, 40] {
            assert_eq!(index.vacancy(id), None);
            assert_eq!(index.get(id), Some(id as u32));
        }
        // The bitmap spans 16 * 64 ids from the first.
        let far = 10 + 16 * TRADE_ID_SPAN;
        assert_eq!(index.vacancy(far - 1), Some(TradeVacancy::Ascending));
        for id in [5, far, far + 7] {
            assert!(matches!(index.vacancy(id), Some(TradeVacancy::Other(_))), "{id}");
        }
        for id in [15, 25, 35] {
            assert!(matches!(index.vacancy(id), Some(TradeVacancy::Late(_))), "{id}");
            assert_eq!(index.get(id), None);
        }
        for (id, value) in [(25, 99), (far, 98), (5, 97)] {
            let v = index.vacancy(id).unwrap();
            index.insert(v, id, value).unwrap();
            assert_eq!((index.get(id), index.vacancy(id)), (Some(value), None));
        }
        assert_eq!(index.others.len(), 3);
        // An id outside the range never moves the list's largest.
        assert_eq!(index.vacancy(41), Some(TradeVacancy::Ascending));
        assert_eq!((index.get(0), index.get(41)), (None, None));

        // The largest ids: the first always starts the list, wherever the range then ends.
        for first in [u64::MAX, u64::MAX - 5] {
            let mut index = TradeIndex::new(4);
            for id in [first, u64::MAX, u64::MAX - 7, u64::MAX - 6] {
                if let Some(v) = index.vacancy(id) {
                    index.insert(v, id, id as u32).unwrap();
                }
                assert_eq!((index.vacancy(id), index.get(id)), (None, Some(id as u32)), "{id}");
            }
            assert_eq!(index.ids[0], first);
            for id in [first, u64::MAX, u64::MAX - 7, u64::MAX - 6] {
                assert_eq!(index.vacancy(id), None, "{id} is held");
            }
        }
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
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        assert_eq!(m.memory().1, 32 * 16);
    }

    /// A 64-byte-aligned block, as the state machine's positions and accounts are.
    #[derive(Clone, Copy)]
    #[repr(C, align(64))]
    struct Line([u64; 8]);

    /// 8 MiB and a bit: several whole 2 MiB pages, and partial 4 KiB pages at both ends.
    const LINES: usize = (8 << 20) / 64 + 3;

    #[test]
    fn zeroing_fresh_pages_zeroes_exactly_the_range() {
        use std::alloc::{alloc, dealloc, Layout};
        let layout = Layout::array::<Line>(LINES).unwrap();
        // SAFETY: a non-zero size; freed below with the same layout.
        let base = unsafe { alloc(layout) };
        assert!(!base.is_null());
        let len = layout.size();
        // Every page written (committed), then a range that starts and ends inside a page.
        // SAFETY: the whole block is ours.
        unsafe { std::ptr::write_bytes(base, 0xab, len) };
        let (head, tail) = (100, 200);
        // SAFETY: the range is inside the live block, and only this test uses it.
        unsafe { zero_fresh(base.add(head), len - head - tail) };
        // SAFETY: the block is initialized (written above).
        let bytes = unsafe { std::slice::from_raw_parts(base, len) };
        assert!(bytes[..head].iter().all(|&b| b == 0xab), "bytes before the range kept");
        assert!(bytes[len - tail..].iter().all(|&b| b == 0xab), "bytes after the range kept");
        let zeroed = &bytes[head..len - tail];
        assert!(zeroed.iter().all(|&b| b == 0), "every byte of the range is zero");
        // SAFETY: allocated above with this layout.
        unsafe { dealloc(base, layout) };
        // And a table from `zeroed_slice`, large and small.
        // SAFETY: an all-zero Line is valid.
        let t: Box<[Line]> = unsafe { zeroed_slice(LINES) };
        assert_eq!(t.len(), LINES);
        assert!(t.iter().all(|l| l.0 == [0; 8]));
        // SAFETY: as above (small: the plain alloc_zeroed path).
        let small: Box<[Line]> = unsafe { zeroed_slice(3) };
        assert!(small.iter().all(|l| l.0 == [0; 8]));
    }

    /// The mode in /sys/kernel/mm/transparent_hugepage/enabled (the bracketed word).
    fn thp_mode() -> String {
        let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        s.split('[').nth(1).and_then(|r| r.split(']').next()).unwrap_or("").to_string()
    }

    /// A 64-byte-aligned table (the state machine's positions and accounts) is backed by
    /// transparent huge pages once touched, where the kernel offers them (THP `madvise` or
    /// `always`; .ci/run makes sure of that and sets NOVATE_EXPECT_THP=1, so CI cannot pass
    /// this without checking). With `alloc_zeroed`'s memset it stayed in 4 KiB pages.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_large_aligned_table_is_backed_by_huge_pages() {
        let mode = thp_mode();
        let expected = std::env::var("NOVATE_EXPECT_THP").is_ok_and(|v| v == "1");
        if mode != "madvise" && mode != "always" {
            assert!(!expected, "NOVATE_EXPECT_THP=1 but transparent huge pages are {mode:?}");
            eprintln!("transparent huge pages are {mode:?} here: only the zeroing is checked");
        }
        // SAFETY: an all-zero Line is valid.
        let t: Box<[Line]> = unsafe { zeroed_slice(LINES) };
        let (ptr, len) = (t.as_ptr() as *const u8, std::mem::size_of_val(&*t));
        if !populate(ptr, len) {
            // An older kernel: touch every page instead.
            for l in t.iter() {
                std::hint::black_box(l.0[0]);
            }
        }
        assert!(t.iter().all(|l| l.0 == [0; 8]));
        if mode == "madvise" || mode == "always" {
            let kb =
                novate_mem::huge::thp_backed_bytes(ptr.wrapping_add(len / 2)).unwrap_or(0) >> 10;
            assert!(
                kb >= 2048,
                "the table's mapping holds {kb} kB of huge pages, expected >= 2 MiB"
            );
        }
    }
}
