//! Huge pages for real: these tests map hugetlb pages from the host's pools and check the pool
//! counters move. `.ci/run` reserves the pools (64 x 2 MiB, 1 x 1 GiB when it can) and sets
//! `NOVATE_EXPECT_HUGEPAGES_2M` / `_1G` to the number it got, which makes the "reserved" branches
//! mandatory; without them each test checks the fallback it must take instead.
//! The tests share the pools, so they run one at a time (a mutex), and they free what they map.

use std::sync::Mutex;

use novate_mem::huge::{hugepage_counts, thp_mode, Skipped, SIZE_1G, SIZE_2M};
use novate_mem::{AllocOptions, Arena, HugeRegion, LockOutcome, NumaOutcome, PageKind};

static POOLS: Mutex<()> = Mutex::new(());

fn expected(var: &str) -> u64 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn opts(largest: PageKind) -> AllocOptions {
    AllocOptions { largest, lock: true, prefault: true, numa_node: None }
}

#[test]
fn two_mb_pages_are_obtained_when_reserved() {
    let _pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    let before = hugepage_counts(PageKind::Huge2M).expect("2M pool exists on x86_64 Linux");
    let must = expected("NOVATE_EXPECT_HUGEPAGES_2M");
    if must >= 8 {
        assert!(before.available() >= 8, "CI reserved {must} pages but only {before:?}");
    }
    let mut r = HugeRegion::allocate(16 << 20, opts(PageKind::Huge2M)).unwrap();
    if before.available() >= 8 {
        assert_eq!(r.report().kind, PageKind::Huge2M, "{}", r.report());
        assert_eq!(r.len(), 16 << 20);
        assert_eq!(r.as_ptr() as usize % SIZE_2M, 0);
        let during = hugepage_counts(PageKind::Huge2M).unwrap();
        assert_eq!(before.free - during.free, 8, "8 pages faulted in: {before:?} -> {during:?}");
        r.as_mut_slice()[(16 << 20) - 1] = 1;
        drop(r);
        let after = hugepage_counts(PageKind::Huge2M).unwrap();
        assert_eq!(after.free, before.free, "pages returned to the pool");
    } else {
        assert_ne!(r.report().kind, PageKind::Huge2M);
        assert_eq!(r.report().skipped[0], (PageKind::Huge2M, Skipped::Errno(libc_enomem())));
    }
}

fn libc_enomem() -> i32 {
    12 // ENOMEM on Linux
}

#[test]
fn a_request_beyond_the_reservation_falls_back_to_transparent_pages() {
    let _pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    let pool = hugepage_counts(PageKind::Huge2M).unwrap();
    let len = (pool.available() as usize + 8) * SIZE_2M;
    let r = HugeRegion::allocate(len, opts(PageKind::Huge2M)).unwrap();
    let report = r.report();
    assert_eq!(report.skipped[0], (PageKind::Huge2M, Skipped::Errno(libc_enomem())), "{report}");
    if thp_mode().as_deref() == Some("never") {
        assert_eq!(report.kind, PageKind::Normal);
    } else {
        assert_eq!(report.kind, PageKind::Transparent, "{report}");
        assert_eq!(r.as_ptr() as usize % SIZE_2M, 0, "THP regions are 2 MiB aligned");
        let backed = report.thp_backed_bytes.expect("measured after prefault");
        assert!(backed > 0 && backed <= len, "THP backed {backed} of {len} bytes");
    }
    assert_eq!(hugepage_counts(PageKind::Huge2M).unwrap().free, pool.free, "pool untouched");
}

#[test]
fn normal_pages_can_be_forced() {
    let r = HugeRegion::allocate(4 << 20, opts(PageKind::Normal)).unwrap();
    assert_eq!(r.report().kind, PageKind::Normal);
    assert!(r.report().skipped.is_empty());
    assert_eq!(r.report().thp_backed_bytes, None);
    assert!(r.report().prefaulted);
}

#[test]
fn one_gb_page_when_reserved() {
    let _pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(before) = hugepage_counts(PageKind::Huge1G) else {
        // No 1G pool in this kernel: a 1G request must report the failure and fall back.
        let r =
            HugeRegion::allocate(SIZE_1G, AllocOptions { lock: false, ..opts(PageKind::Huge1G) })
                .unwrap();
        assert!(matches!(r.report().skipped[0], (PageKind::Huge1G, Skipped::Errno(_))));
        return;
    };
    if expected("NOVATE_EXPECT_HUGEPAGES_1G") > 0 {
        assert!(before.available() >= 1, "CI reserved a 1G page but {before:?}");
    }
    let r = HugeRegion::allocate(SIZE_1G, AllocOptions { lock: false, ..opts(PageKind::Huge1G) })
        .unwrap();
    if before.available() >= 1 {
        assert_eq!(r.report().kind, PageKind::Huge1G, "{}", r.report());
        assert_eq!(r.as_ptr() as usize % SIZE_1G, 0);
        let during = hugepage_counts(PageKind::Huge1G).unwrap();
        assert_eq!(before.free - during.free, 1);
    } else {
        assert_eq!(r.report().skipped[0], (PageKind::Huge1G, Skipped::Errno(libc_enomem())));
        assert_ne!(r.report().kind, PageKind::Huge1G);
    }
}

#[test]
fn mlock_and_numa_outcomes_are_reported() {
    let r = HugeRegion::allocate(
        16 << 20,
        AllocOptions { numa_node: Some(0), ..opts(PageKind::Transparent) },
    )
    .unwrap();
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    match r.report().locked {
        LockOutcome::Locked => {}
        LockOutcome::Failed(e) => assert!(!root, "root (CAP_IPC_LOCK) could not mlock: {e}"),
        LockOutcome::NotRequested => panic!("lock was requested"),
    }
    let nodes = novate_mem::numa::node_count();
    if nodes < 2 {
        assert_eq!(r.report().numa, NumaOutcome::NotAvailable { nodes });
    } else {
        assert_eq!(r.report().numa, NumaOutcome::Bound { node: 0 });
    }
    assert!(r.report().to_string().contains("numa"));
}

#[test]
fn arena_on_huge_pages() {
    let _pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    let available = hugepage_counts(PageKind::Huge2M).map_or(0, |c| c.available());
    let mut a = Arena::with_huge_pages(4 << 20, opts(PageKind::Huge2M)).unwrap();
    let kind = a.region().unwrap().report().kind;
    if available >= 2 {
        assert_eq!(kind, PageKind::Huge2M);
    } else {
        assert_ne!(kind, PageKind::Huge2M);
    }
    assert_eq!(a.capacity(), 4 << 20);
    let x = a.alloc([3u64; 64]).unwrap();
    assert_eq!(x[63], 3);
    a.reset();
    assert!(a.alloc_bytes(4 << 20, 4096).is_ok());
}
