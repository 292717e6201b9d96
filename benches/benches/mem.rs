//! Memory (issue 4): novate-mem's arena and slab against the system allocator (glibc malloc via
//! `Box`) and mimalloc (called directly through `GlobalAlloc`, not installed globally), and a
//! random-access walk over huge pages against normal pages (the TLB effect).
//!
//! `cargo bench -p novate-benches --bench mem` (NOVATE_BENCH_QUICK=1 for a smoke run;
//! NOVATE_BENCH_WALK_MB sets the walk size, default 4096). As root the walk reserves the hugetlb
//! pages it needs and gives them back afterwards; otherwise it reports what it could not get.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::Instant;

use mimalloc::MiMalloc;
use novate_mem::huge::{hugepage_counts, SIZE_1G, SIZE_2M};
use novate_mem::{AllocOptions, Arena, HugeRegion, PageKind, Slab, SlabConfig};

/// A 64-byte object, the size of a ring message. Alignment 8, not 64: an over-aligned type would
/// push glibc malloc onto its slower `memalign` path and flatter the comparison.
#[derive(Clone, Copy)]
#[repr(C)]
struct Obj([u64; 8]);

fn obj(i: u64) -> Obj {
    Obj([i; 8])
}

const BATCH: usize = 1024;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn quick() -> bool {
    std::env::var_os("NOVATE_BENCH_QUICK").is_some()
}

/// Median ns per (alloc + free) over `runs` runs of `rounds` batches of BATCH objects.
fn alloc_bench(name: &str, runs: usize, rounds: usize, mut round: impl FnMut(u64) -> u64) -> f64 {
    let mut per_op = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let mut sum = 0;
        for r in 0..rounds {
            sum += round(r as u64);
        }
        black_box(sum);
        per_op.push(start.elapsed().as_nanos() as f64 / (rounds * BATCH) as f64);
    }
    let m = median(per_op);
    println!("{name:<52} median {m:>6.2} ns per alloc+free");
    m
}

fn allocators() {
    let (runs, rounds) = if quick() { (1, 200) } else { (7, 2000) };
    let layout = Layout::new::<Obj>();
    println!("## allocators: {BATCH} x 64-byte objects allocated, written, then all freed; {rounds} rounds x {runs} runs");

    let mut boxes: Vec<Box<Obj>> = Vec::with_capacity(BATCH);
    let system = alloc_bench("system allocator (Box, glibc malloc)", runs, rounds, |r| {
        for i in 0..BATCH as u64 {
            boxes.push(Box::new(obj(r + i)));
        }
        let s = boxes.iter().map(|b| b.0[7]).sum::<u64>();
        boxes.clear();
        s
    });

    let mut ptrs: Vec<*mut u8> = Vec::with_capacity(BATCH);
    let mi = alloc_bench("mimalloc (GlobalAlloc::alloc/dealloc)", runs, rounds, |r| {
        for i in 0..BATCH as u64 {
            // SAFETY: non-zero-sized layout; the pointer is checked, written as an `Obj` (the
            // layout is `Obj`'s) and freed below with the same layout.
            unsafe {
                let p = MiMalloc.alloc(layout);
                assert!(!p.is_null());
                p.cast::<Obj>().write(obj(r + i));
                ptrs.push(p);
            }
        }
        let mut s = 0;
        for &p in &ptrs {
            // SAFETY: each `p` was allocated above with `layout`, initialised, and is freed once.
            unsafe {
                s += (*p.cast::<Obj>()).0[7];
                MiMalloc.dealloc(p, layout);
            }
        }
        ptrs.clear();
        s
    });

    let mut slab: Slab<Obj> =
        Slab::new(SlabConfig { slots_per_slab: BATCH, slabs_initial: 1, slabs_max: 1 });
    let mut keys = Vec::with_capacity(BATCH);
    let slab_ns = alloc_bench("novate-mem Slab insert/remove", runs, rounds, |r| {
        for i in 0..BATCH as u64 {
            keys.push(slab.insert(obj(r + i)).expect("sized for one batch"));
        }
        let mut s = 0;
        for &k in &keys {
            s += slab.remove(k).expect("present").0[7];
        }
        keys.clear();
        s
    });

    let mut arena = Arena::with_capacity(BATCH * size_of::<Obj>());
    let arena_ns = alloc_bench("novate-mem Arena alloc + reset per batch", runs, rounds, |r| {
        let mut s = 0;
        for i in 0..BATCH as u64 {
            s += arena.alloc(obj(r + i)).expect("sized for one batch").0[7];
        }
        arena.reset();
        s
    });

    println!("ratio slab vs system: {:.2}x faster", system / slab_ns);
    println!("ratio slab vs mimalloc: {:.2}x faster", mi / slab_ns);
    println!("ratio arena vs system: {:.2}x faster", system / arena_ns);
    println!("ratio arena vs mimalloc: {:.2}x faster", mi / arena_ns);
}

/// Sets a hugetlb pool to at least `pages` for the lifetime of the guard (root only), restoring
/// the previous size on drop.
struct PoolGuard {
    path: &'static str,
    old: u64,
}

impl PoolGuard {
    fn reserve(kind: PageKind, pages: u64) -> Option<PoolGuard> {
        let path = match kind {
            PageKind::Huge1G => "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
            _ => "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
        };
        let counts = hugepage_counts(kind)?;
        if counts.available() >= pages {
            return None; // enough already; leave the pool alone
        }
        let want = counts.total + pages - counts.available();
        std::fs::write(path, want.to_string()).ok()?;
        Some(PoolGuard { path, old: counts.total })
    }
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.old.to_string());
    }
}

/// Dependent random loads over the region: each address depends on the previous load, so the
/// CPU cannot overlap misses and each step pays the full cache + TLB miss latency.
fn walk(region: &HugeRegion, steps: u64) -> f64 {
    let words = region.len() / 8;
    assert!(words.is_power_of_two(), "walk size must be a power of two");
    let mask = words - 1;
    let base = region.as_ptr().cast::<u64>().cast_const();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let start = Instant::now();
    for _ in 0..steps {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z ^= z >> 31;
        // SAFETY: `z & mask < words`: inside the region, which is initialised (pre-faulted).
        let v = unsafe { base.add(z as usize & mask).read_volatile() };
        x ^= v;
    }
    black_box(x);
    start.elapsed().as_nanos() as f64 / steps as f64
}

fn tlb_walk() {
    let mb: usize = std::env::var("NOVATE_BENCH_WALK_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick() { 256 } else { 4096 });
    let len = mb << 20;
    let steps: u64 = if quick() { 1_000_000 } else { 10_000_000 };
    let runs = if quick() { 1 } else { 3 };
    println!("## random walk: {mb} MiB region, {steps} dependent 8-byte loads x {runs} runs");
    let mut results = Vec::new();
    for kind in [PageKind::Normal, PageKind::Transparent, PageKind::Huge2M, PageKind::Huge1G] {
        let _guard = match kind {
            PageKind::Huge2M => PoolGuard::reserve(kind, (len / SIZE_2M) as u64),
            PageKind::Huge1G => PoolGuard::reserve(kind, len.div_ceil(SIZE_1G) as u64),
            _ => None,
        };
        let t = Instant::now();
        let opts = AllocOptions { largest: kind, lock: false, prefault: true, numa_node: None };
        let region = match HugeRegion::allocate(len, opts) {
            Ok(r) => r,
            Err(e) => {
                println!("walk {kind}: allocation failed: {e}");
                continue;
            }
        };
        let setup = t.elapsed();
        if region.report().kind != kind {
            println!("walk {kind}: not obtained ({}), skipped", region.report());
            continue;
        }
        let ns = median((0..runs).map(|_| walk(&region, steps)).collect());
        println!(
            "walk {:<24} median {ns:>6.1} ns/load  (map + prefault {:.2}s; {})",
            kind.to_string(),
            setup.as_secs_f64(),
            region.report()
        );
        results.push((kind, ns));
    }
    if let Some(&(_, normal)) = results.iter().find(|(k, _)| *k == PageKind::Normal) {
        for &(kind, ns) in results.iter().filter(|(k, _)| *k != PageKind::Normal) {
            println!("ratio walk 4K pages / {kind}: {:.2}x faster", normal / ns);
        }
    }
}

fn main() {
    allocators();
    tlb_walk();
}
