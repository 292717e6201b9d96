//! Huge-page memory regions (design notes §3.3): 1 GB pages, then 2 MB pages (`MAP_HUGETLB`),
//! then transparent huge pages (`madvise(MADV_HUGEPAGE)`), then normal pages; optionally bound
//! to a NUMA node, locked (`mlock`) and pre-faulted. The [`AllocReport`] says what was obtained,
//! and why each better kind was not: nothing degrades silently.
//!
//! Differences from the design notes' `allocate_huge_pages`: its THP fallback maps without 2 MB
//! alignment (the unaligned head and tail can never be huge-backed), it ignores the results of
//! `mbind` and `mlock` (the caller never learns it got neither), it cannot tell whether THP
//! actually backed the region (here `/proc/self/smaps` is read), and it pre-faults with a
//! `memset` of the whole region (one write per page is enough, and is what happens here).

use core::fmt;
use core::ptr::NonNull;
use std::io;

use crate::numa::{self, NumaOutcome};

/// 2 MiB.
pub const SIZE_2M: usize = 2 << 20;
/// 1 GiB.
pub const SIZE_1G: usize = 1 << 30;
/// Base page size on x86_64 and most aarch64 kernels.
pub const SIZE_4K: usize = 4 << 10;

/// Which pages back a region, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageKind {
    /// 1 GiB hugetlb pages (reserved via `/sys/kernel/mm/hugepages/hugepages-1048576kB`).
    Huge1G,
    /// 2 MiB hugetlb pages (reserved via `/proc/sys/vm/nr_hugepages`).
    Huge2M,
    /// Normal pages with `MADV_HUGEPAGE`: the kernel backs them with 2 MiB pages when it can;
    /// [`AllocReport::thp_backed_bytes`] says how much it did.
    Transparent,
    /// Normal 4 KiB pages.
    Normal,
}

impl PageKind {
    /// All kinds, best first.
    pub const ALL: [PageKind; 4] =
        [PageKind::Huge1G, PageKind::Huge2M, PageKind::Transparent, PageKind::Normal];

    /// Granularity the region's length is rounded up to.
    pub const fn page_size(self) -> usize {
        match self {
            PageKind::Huge1G => SIZE_1G,
            PageKind::Huge2M | PageKind::Transparent => SIZE_2M,
            PageKind::Normal => SIZE_4K,
        }
    }

    /// Short name.
    pub const fn as_str(self) -> &'static str {
        match self {
            PageKind::Huge1G => "1G hugetlb",
            PageKind::Huge2M => "2M hugetlb",
            PageKind::Transparent => "transparent huge pages",
            PageKind::Normal => "4K pages",
        }
    }
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocOptions {
    /// The best kind to try; the fallback chain starts here (e.g. `Normal` forces normal pages).
    pub largest: PageKind,
    /// Lock the pages in RAM (`mlock`).
    pub lock: bool,
    /// Touch every page now so the hot path never page-faults.
    pub prefault: bool,
    /// Bind to this NUMA node (`mbind`, before any page is touched).
    pub numa_node: Option<u32>,
}

impl Default for AllocOptions {
    fn default() -> Self {
        AllocOptions { largest: PageKind::Huge1G, lock: true, prefault: true, numa_node: None }
    }
}

/// Why one kind of page was not obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// The request is smaller than one page of this kind (it would waste most of a page).
    TooSmall,
    /// THP is disabled (`never`) on this host.
    ThpDisabled,
    /// The kernel refused, with this errno (ENOMEM: no free reserved pages).
    Errno(i32),
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::TooSmall => f.write_str("request smaller than one page"),
            Skipped::ThpDisabled => f.write_str("THP disabled on this host"),
            Skipped::Errno(e) => write!(f, "{}", io::Error::from_raw_os_error(*e)),
        }
    }
}

/// Result of `mlock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockOutcome {
    /// Not asked for.
    NotRequested,
    /// Locked in RAM.
    Locked,
    /// Refused, with this errno (EPERM/ENOMEM: over `RLIMIT_MEMLOCK` without CAP_IPC_LOCK).
    Failed(i32),
}

/// What an allocation obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocReport {
    /// The pages obtained.
    pub kind: PageKind,
    /// Mapped length (the request rounded up to `kind.page_size()`).
    pub len: usize,
    /// Better kinds that were not obtained, and why.
    pub skipped: Vec<(PageKind, Skipped)>,
    /// `mlock` result.
    pub locked: LockOutcome,
    /// NUMA binding result.
    pub numa: NumaOutcome,
    /// Whether every page was touched.
    pub prefaulted: bool,
    /// For [`PageKind::Transparent`] after pre-faulting: bytes the kernel backed with huge pages
    /// (from `/proc/self/smaps`). `None` when not measured.
    pub thp_backed_bytes: Option<usize>,
}

impl fmt::Display for AllocReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes of {}", self.len, self.kind)?;
        if let Some(b) = self.thp_backed_bytes {
            write!(f, " ({} MiB huge-backed)", b >> 20)?;
        }
        for (kind, why) in &self.skipped {
            write!(f, "; no {kind}: {why}")?;
        }
        match self.locked {
            LockOutcome::NotRequested => {}
            LockOutcome::Locked => f.write_str("; locked")?,
            LockOutcome::Failed(e) => {
                write!(f, "; mlock failed: {}", io::Error::from_raw_os_error(e))?
            }
        }
        write!(f, "; numa: {}", self.numa)
    }
}

/// An anonymous private mapping, unmapped on drop.
pub struct HugeRegion {
    ptr: NonNull<u8>,
    len: usize,
    report: AllocReport,
}

// SAFETY: the region is plain memory owned by this value; `&HugeRegion` gives only shared access.
unsafe impl Send for HugeRegion {}
// SAFETY: as above.
unsafe impl Sync for HugeRegion {}

impl fmt::Debug for HugeRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HugeRegion").field("ptr", &self.ptr).field("report", &self.report).finish()
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn round_up(len: usize, to: usize) -> Option<usize> {
    len.checked_add(to - 1).map(|l| l & !(to - 1))
}

/// `mmap` an anonymous private region with extra flags.
fn map(len: usize, extra_flags: i32) -> Result<NonNull<u8>, i32> {
    // SAFETY: a fresh anonymous mapping at an address the kernel chooses; no existing memory is
    // affected.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(errno());
    }
    Ok(NonNull::new(p.cast()).expect("mmap returned null without MAP_FIXED"))
}

/// A normal anonymous mapping of `len` bytes whose start is aligned to `align` (for THP).
fn map_aligned(len: usize, align: usize) -> Result<NonNull<u8>, i32> {
    let over = len.checked_add(align).ok_or(libc::ENOMEM)?;
    let raw = map(over, 0)?;
    let start = raw.as_ptr() as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = over - head - len;
    // SAFETY: both ranges lie inside the mapping just created and nothing refers to them.
    unsafe {
        if head > 0 {
            libc::munmap(raw.as_ptr().cast(), head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
    }
    Ok(NonNull::new(aligned as *mut u8).expect("aligned address is not null"))
}

/// The THP mode from `/sys/kernel/mm/transparent_hugepage/enabled` (`always`, `madvise`,
/// `never`), if readable.
pub fn thp_mode() -> Option<String> {
    let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    crate::doctor::parse_bracketed(&s).map(str::to_owned)
}

/// Bytes of the mapping that holds `addr` (its start, or any address in it: a heap table's
/// pointer lies inside its mapping) backed by transparent huge pages (`AnonHugePages` in
/// `/proc/self/smaps`).
pub fn thp_backed_bytes(addr: *const u8) -> Option<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    parse_smaps_anon_huge(&smaps, addr as usize)
}

pub(crate) fn parse_smaps_anon_huge(smaps: &str, addr: usize) -> Option<usize> {
    let mut in_mapping = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                in_mapping = (lo..hi).contains(&addr);
                continue;
            }
        }
        if in_mapping {
            if let Some(rest) = line.strip_prefix("AnonHugePages:") {
                let kb: usize = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
                return Some(kb * 1024);
            }
        }
    }
    None
}

impl HugeRegion {
    /// Maps at least `len` bytes (rounded up to the page size obtained), trying page kinds from
    /// `opts.largest` down to normal pages. Fails only if even normal pages cannot be mapped
    /// (or `len` is 0: `InvalidInput`).
    pub fn allocate(len: usize, opts: AllocOptions) -> io::Result<HugeRegion> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "HugeRegion: zero length"));
        }
        if len > isize::MAX as usize - SIZE_1G {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        let mut skipped = Vec::new();
        let mut obtained = None;
        for kind in PageKind::ALL.into_iter().filter(|k| *k >= opts.largest) {
            let attempt = match kind {
                PageKind::Huge1G | PageKind::Huge2M => {
                    if len < kind.page_size() {
                        Err(Skipped::TooSmall)
                    } else {
                        let size_flag = if kind == PageKind::Huge1G {
                            libc::MAP_HUGE_1GB
                        } else {
                            libc::MAP_HUGE_2MB
                        };
                        let l = round_up(len, kind.page_size()).expect("length checked");
                        map(l, libc::MAP_HUGETLB | size_flag)
                            .map(|p| (p, l))
                            .map_err(Skipped::Errno)
                    }
                }
                PageKind::Transparent => {
                    if len < SIZE_2M {
                        Err(Skipped::TooSmall)
                    } else if thp_mode().as_deref() == Some("never") {
                        Err(Skipped::ThpDisabled)
                    } else {
                        let l = round_up(len, SIZE_2M).expect("length checked");
                        map_aligned(l, SIZE_2M).map_err(Skipped::Errno).and_then(|p| {
                            // SAFETY: advising our own fresh mapping.
                            let rc =
                                unsafe { libc::madvise(p.as_ptr().cast(), l, libc::MADV_HUGEPAGE) };
                            if rc == 0 {
                                Ok((p, l))
                            } else {
                                let e = errno();
                                // SAFETY: unmapping the mapping we just made, not yet shared.
                                unsafe { libc::munmap(p.as_ptr().cast(), l) };
                                Err(Skipped::Errno(e))
                            }
                        })
                    }
                }
                PageKind::Normal => {
                    let l = round_up(len, SIZE_4K).expect("length checked");
                    map(l, 0).map(|p| (p, l)).map_err(Skipped::Errno)
                }
            };
            match attempt {
                Ok((p, l)) => {
                    obtained = Some((kind, p, l));
                    break;
                }
                Err(why) => skipped.push((kind, why)),
            }
        }
        let Some((kind, ptr, len)) = obtained else {
            let e = match skipped.last() {
                Some((_, Skipped::Errno(e))) => *e,
                _ => libc::ENOMEM,
            };
            return Err(io::Error::from_raw_os_error(e));
        };
        let numa = match opts.numa_node {
            None => NumaOutcome::NotRequested,
            Some(node) => {
                // SAFETY: our fresh mapping of `len` bytes, not yet shared with anyone.
                let memory = unsafe { core::slice::from_raw_parts_mut(ptr.as_ptr(), len) };
                numa::bind(memory, node)
            }
        };
        let locked = if opts.lock {
            // SAFETY: locking our own mapping.
            if unsafe { libc::mlock(ptr.as_ptr().cast(), len) } == 0 {
                LockOutcome::Locked
            } else {
                LockOutcome::Failed(errno())
            }
        } else {
            LockOutcome::NotRequested
        };
        let mut region = HugeRegion {
            ptr,
            len,
            report: AllocReport {
                kind,
                len,
                skipped,
                locked,
                numa,
                prefaulted: false,
                thp_backed_bytes: None,
            },
        };
        if opts.prefault {
            region.prefault();
            if kind == PageKind::Transparent {
                region.report.thp_backed_bytes = thp_backed_bytes(ptr.as_ptr());
            }
        }
        Ok(region)
    }

    /// Writes one byte in every base page so each is backed now (the region starts zeroed, and
    /// a zero is written, so contents are unchanged).
    pub fn prefault(&mut self) {
        let step = match self.report.kind {
            PageKind::Huge1G => SIZE_1G,
            PageKind::Huge2M => SIZE_2M,
            PageKind::Transparent | PageKind::Normal => SIZE_4K,
        };
        let mut off = 0;
        while off < self.len {
            // SAFETY: `off < len`, inside our mapping; a volatile write so it is not elided. The
            // byte is read and written back, preserving contents.
            unsafe {
                let p = self.ptr.as_ptr().add(off);
                p.write_volatile(p.read_volatile());
            }
            off += step;
        }
        self.report.prefaulted = true;
    }

    /// What was obtained.
    pub fn report(&self) -> &AllocReport {
        &self.report
    }

    /// Start of the region (aligned to its page size).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true (a region is at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The region as bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: our mapping of `len` readable, writable, initialised (zero-filled) bytes,
        // borrowed mutably through `&mut self`.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The region as bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: as above, shared.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for HugeRegion {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly our mapping, once; no borrow of it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Counters of one hugetlb pool (`/sys/kernel/mm/hugepages/hugepages-*kB/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HugePageCounts {
    /// `nr_hugepages`: pages in the pool.
    pub total: u64,
    /// `free_hugepages`: pages not yet faulted in (includes reserved ones).
    pub free: u64,
    /// `resv_hugepages`: pages promised to mappings but not yet faulted in.
    pub reserved: u64,
}

impl HugePageCounts {
    /// Pages a new mapping can still get.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }
}

/// The pool counters for `kind` (`Huge1G` or `Huge2M`), if the kernel has that pool.
pub fn hugepage_counts(kind: PageKind) -> Option<HugePageCounts> {
    let dir = match kind {
        PageKind::Huge1G => "/sys/kernel/mm/hugepages/hugepages-1048576kB",
        PageKind::Huge2M => "/sys/kernel/mm/hugepages/hugepages-2048kB",
        _ => return None,
    };
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(format!("{dir}/{f}")).ok()?.trim().parse().ok()
    };
    Some(HugePageCounts {
        total: read("nr_hugepages")?,
        free: read("free_hugepages")?,
        reserved: read("resv_hugepages")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_parsing_finds_the_right_mapping() {
        let smaps = "\
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Size:               4096 kB
AnonHugePages:         0 kB
7f0000400000-7f0000800000 rw-p 00000000 00:00 0
Size:               4096 kB
AnonHugePages:      4096 kB
";
        assert_eq!(parse_smaps_anon_huge(smaps, 0x7f00_0040_0000), Some(4096 * 1024));
        assert_eq!(parse_smaps_anon_huge(smaps, 0x7f00_0000_0000), Some(0));
        assert_eq!(parse_smaps_anon_huge(smaps, 0x1234), None);
        // An address inside a mapping names it too; its end belongs to the next one.
        assert_eq!(parse_smaps_anon_huge(smaps, 0x7f00_0050_0010), Some(4096 * 1024));
        assert_eq!(parse_smaps_anon_huge(smaps, 0x7f00_003f_ffff), Some(0));
        assert_eq!(parse_smaps_anon_huge(smaps, 0x7f00_0080_0000), None);
    }

    #[test]
    fn kinds_are_ordered_best_first() {
        assert!(PageKind::Huge1G < PageKind::Huge2M);
        assert!(PageKind::Transparent < PageKind::Normal);
        assert_eq!(PageKind::Normal.page_size(), 4096);
    }

    #[test]
    fn a_zero_length_is_an_error() {
        let e = HugeRegion::allocate(0, AllocOptions::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn small_requests_get_normal_pages_and_say_why() {
        let mut r =
            HugeRegion::allocate(10_000, AllocOptions { lock: false, ..AllocOptions::default() })
                .unwrap();
        assert_eq!(r.report().kind, PageKind::Normal);
        assert_eq!(r.len(), 12_288);
        assert_eq!(
            r.report().skipped,
            vec![
                (PageKind::Huge1G, Skipped::TooSmall),
                (PageKind::Huge2M, Skipped::TooSmall),
                (PageKind::Transparent, Skipped::TooSmall)
            ]
        );
        assert!(r.report().prefaulted);
        r.as_mut_slice()[12_287] = 7;
        assert_eq!(r.as_slice()[12_287], 7);
        assert!(r.as_slice()[..100].iter().all(|&b| b == 0));
    }
}
