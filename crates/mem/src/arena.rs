//! Bump arena with checkpoint/restore (design notes §3.2).
//!
//! Allocation is a pointer bump: align, add, compare. Nothing is freed individually; `reset` or
//! `restore` take `&mut self`, so the borrow checker proves no allocation outlives them.
//! Destructors never run, so only `Copy` values are accepted.
//!
//! Fixed relative to the design notes' fragment: the end-of-arena check there computes
//! `aligned + size` on pointers, which can wrap (here offsets use checked arithmetic); its
//! fallback `aligned_alloc(4096, size)` is undefined for sizes that are not a multiple of 4096;
//! `arena_restore` accepts a checkpoint from another arena or one already invalidated by an
//! earlier restore (here both are bugs and panic); and alignment is never validated.

use core::cell::Cell;
use core::fmt;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::huge::{AllocOptions, HugeRegion};

/// The arena has too little room left for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaFull {
    /// Bytes requested.
    pub requested: usize,
    /// Bytes left (before alignment).
    pub remaining: usize,
}

impl fmt::Display for ArenaFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "arena full: {} bytes requested, {} remaining", self.requested, self.remaining)
    }
}

impl std::error::Error for ArenaFull {}

/// A saved arena position, from [`Arena::checkpoint`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    arena: u64,
    offset: usize,
}

enum Backing {
    Region(#[allow(dead_code)] HugeRegion),
    Heap(std::alloc::Layout),
}

/// A bump allocator over one contiguous block (heap or huge pages).
pub struct Arena {
    base: NonNull<u8>,
    capacity: usize,
    /// Bytes handed out (next free offset).
    offset: Cell<usize>,
    high_water: Cell<usize>,
    /// Identifies this arena in its checkpoints.
    id: u64,
    backing: Backing,
}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("capacity", &self.capacity)
            .field("used", &self.used())
            .field("high_water", &self.high_water())
            .finish_non_exhaustive()
    }
}

// SAFETY: the arena owns its block; moving it to another thread moves that ownership. It is not
// `Sync` (the `Cell`s make concurrent `alloc` unsound), which the compiler derives.
unsafe impl Send for Arena {}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Arena {
    /// An arena of `capacity` bytes on the heap (zeroed, page-aligned).
    pub fn with_capacity(capacity: usize) -> Arena {
        assert!(capacity > 0, "arena capacity must be > 0");
        let layout = std::alloc::Layout::from_size_align(capacity, 4096).expect("arena layout");
        // SAFETY: non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self::from_parts(base, capacity, Backing::Heap(layout))
    }

    /// An arena over huge pages (see [`HugeRegion::allocate`]; check `region().report()`).
    pub fn with_huge_pages(capacity: usize, opts: AllocOptions) -> std::io::Result<Arena> {
        let region = HugeRegion::allocate(capacity, opts)?;
        let base = NonNull::new(region.as_ptr()).expect("mapping is not null");
        let len = region.len();
        Ok(Self::from_parts(base, len, Backing::Region(region)))
    }

    fn from_parts(base: NonNull<u8>, capacity: usize, backing: Backing) -> Arena {
        Arena {
            base,
            capacity,
            offset: Cell::new(0),
            high_water: Cell::new(0),
            // Relaxed: only uniqueness matters.
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            backing,
        }
    }

    /// The huge-page region behind this arena, if any.
    pub fn region(&self) -> Option<&HugeRegion> {
        match &self.backing {
            Backing::Region(r) => Some(r),
            Backing::Heap(_) => None,
        }
    }

    /// `len` zeroed bytes aligned to `align` (a power of two).
    ///
    /// # Panics
    /// If `align` is not a power of two (a bug in the caller).
    #[inline]
    #[allow(clippy::mut_from_ref)] // each call returns a disjoint range (bumpalo does the same)
    pub fn alloc_bytes(&self, len: usize, align: usize) -> Result<&mut [u8], ArenaFull> {
        let p = self.bump(len, align)?;
        // SAFETY: `bump` returned `len` bytes inside our block, disjoint from every other live
        // allocation (the offset only grows until `reset`/`restore`, which need `&mut self`).
        // They are zeroed before a `&mut [u8]` is made of them: a value moved in by `alloc`
        // before a `reset` may have left padding or `MaybeUninit` bytes uninitialised.
        unsafe {
            p.as_ptr().write_bytes(0, len);
            Ok(core::slice::from_raw_parts_mut(p.as_ptr(), len))
        }
    }

    /// Moves `value` into the arena.
    #[inline]
    #[allow(clippy::mut_from_ref)] // disjoint per call, as above
    pub fn alloc<T: Copy>(&self, value: T) -> Result<&mut T, ArenaFull> {
        let p = self.bump(size_of::<T>(), align_of::<T>())?.cast::<T>();
        // SAFETY: aligned for `T`, room for one `T`, disjoint from other allocations.
        unsafe {
            p.as_ptr().write(value);
            Ok(&mut *p.as_ptr())
        }
    }

    /// Copies `src` into the arena.
    #[inline]
    #[allow(clippy::mut_from_ref)] // disjoint per call, as above
    pub fn alloc_slice_copy<T: Copy>(&self, src: &[T]) -> Result<&mut [T], ArenaFull> {
        let bytes = size_of_val(src);
        let p = self.bump(bytes, align_of::<T>())?.cast::<T>();
        // SAFETY: aligned, room for `src.len()` values, disjoint; `T: Copy`.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), p.as_ptr(), src.len());
            Ok(core::slice::from_raw_parts_mut(p.as_ptr(), src.len()))
        }
    }

    #[inline(always)]
    fn bump(&self, len: usize, align: usize) -> Result<NonNull<u8>, ArenaFull> {
        assert!(align.is_power_of_two(), "arena alignment {align} is not a power of two");
        let offset = self.offset.get();
        let full = ArenaFull { requested: len, remaining: self.capacity - offset };
        let addr = self.base.as_ptr() as usize + offset;
        let aligned = addr.checked_add(align - 1).ok_or(full)? & !(align - 1);
        let start = aligned - self.base.as_ptr() as usize;
        let end = start.checked_add(len).ok_or(full)?;
        if end > self.capacity {
            return Err(full);
        }
        self.offset.set(end);
        if end > self.high_water.get() {
            self.high_water.set(end);
        }
        // SAFETY: `start <= capacity`, inside (or one past) our block.
        Ok(unsafe { NonNull::new_unchecked(self.base.as_ptr().add(start)) })
    }

    /// The current position.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { arena: self.id, offset: self.offset.get() }
    }

    /// Frees everything allocated since `cp`.
    ///
    /// # Panics
    /// If `cp` belongs to another arena, or lies beyond the current position (it was invalidated
    /// by an earlier restore or reset).
    pub fn restore(&mut self, cp: Checkpoint) {
        assert_eq!(cp.arena, self.id, "checkpoint from another arena");
        assert!(cp.offset <= self.offset.get(), "checkpoint invalidated by an earlier restore");
        self.offset.set(cp.offset);
    }

    /// Frees everything.
    pub fn reset(&mut self) {
        self.offset.set(0);
    }

    /// Bytes in use (including alignment gaps).
    pub fn used(&self) -> usize {
        self.offset.get()
    }

    /// Total bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Highest `used()` ever reached: size the arena from this in production.
    pub fn high_water(&self) -> usize {
        self.high_water.get()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        if let Backing::Heap(layout) = self.backing {
            // SAFETY: allocated in `with_capacity` with this layout.
            unsafe { std::alloc::dealloc(self.base.as_ptr(), layout) };
        }
        // A `Region` backing unmaps itself.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_handed_out_again_after_a_reset_are_zeroed() {
        let mut a = Arena::with_capacity(4096);
        a.alloc([0xFFu8; 64]).unwrap();
        a.alloc(core::mem::MaybeUninit::<u64>::uninit()).unwrap();
        a.reset();
        assert!(a.alloc_bytes(72, 1).unwrap().iter().all(|&b| b == 0));
    }

    #[test]
    fn alignment_and_disjointness() {
        let a = Arena::with_capacity(4096);
        let x = a.alloc(1u8).unwrap();
        let y = a.alloc(0x1122_3344_5566_7788u64).unwrap();
        assert_eq!(y as *mut u64 as usize % 8, 0);
        assert_eq!(a.used(), 16, "7 bytes of padding before the u64");
        let s = a.alloc_slice_copy(&[1u32, 2, 3]).unwrap();
        let b = a.alloc_bytes(100, 64).unwrap();
        assert_eq!(b.as_ptr() as usize % 64, 0);
        b.fill(0xAA);
        *x = 9;
        assert_eq!((*x, *y, &s[..]), (9, 0x1122_3344_5566_7788, &[1, 2, 3][..]));
    }

    #[test]
    fn full_is_a_typed_error_and_nothing_moves() {
        let a = Arena::with_capacity(4096);
        a.alloc_bytes(4000, 1).unwrap();
        assert_eq!(a.alloc_bytes(97, 1).unwrap_err(), ArenaFull { requested: 97, remaining: 96 });
        assert_eq!(a.used(), 4000);
        assert_eq!(a.alloc_bytes(96, 1).unwrap().len(), 96);
        assert!(a.alloc_bytes(usize::MAX, 1).is_err(), "no overflow on huge requests");
        assert!(a.alloc_bytes(0, 1).is_ok(), "zero-length at the very end is fine");
    }

    #[test]
    fn checkpoint_restore_and_high_water() {
        let mut a = Arena::with_capacity(4096);
        a.alloc([0u8; 100]).unwrap();
        let cp = a.checkpoint();
        a.alloc([0u8; 1000]).unwrap();
        assert_eq!(a.used(), 1100);
        a.restore(cp);
        assert_eq!(a.used(), 100);
        assert_eq!(a.high_water(), 1100);
        let second = a.alloc([7u8; 10]).unwrap();
        assert_eq!(second[0], 7);
        a.reset();
        assert_eq!(a.used(), 0);
        assert_eq!(a.high_water(), 1100);
    }

    #[test]
    #[should_panic(expected = "another arena")]
    fn a_foreign_checkpoint_is_a_bug() {
        let a = Arena::with_capacity(4096);
        let mut b = Arena::with_capacity(4096);
        b.alloc(1u64).unwrap();
        b.restore(a.checkpoint());
    }

    #[test]
    #[should_panic(expected = "invalidated")]
    fn a_stale_checkpoint_is_a_bug() {
        let mut a = Arena::with_capacity(4096);
        a.alloc(1u64).unwrap();
        let late = a.checkpoint();
        a.reset();
        a.restore(late);
    }

    #[test]
    #[should_panic(expected = "power of two")]
    fn bad_alignment_is_a_bug() {
        let a = Arena::with_capacity(4096);
        let _ = a.alloc_bytes(8, 3);
    }
}
