//! Multi-threaded stress tests: bounded in count and in time (every wait loop has a deadline).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use novate_ring::seqlock::{self, Plain};
use novate_ring::{index, mpsc, spsc, WaitStrategy, Waiter};

const TIMEOUT: Duration = Duration::from_secs(60);

fn deadline() -> Instant {
    Instant::now() + TIMEOUT
}

#[test]
fn spsc_every_message_arrives_once_in_order() {
    const N: u64 = 2_000_000;
    let (mut p, mut c) = spsc::channel::<[u64; 8]>(1024).unwrap();
    let end = deadline();
    let producer = thread::spawn(move || {
        let mut w = Waiter::new(WaitStrategy::SpinYield);
        let mut i = 0u64;
        while i < N {
            // Alternate single pushes and batches of up to 16.
            if i % 64 < 32 {
                if p.try_push([i; 8]).is_ok() {
                    i += 1;
                    w.reset();
                    continue;
                }
            } else {
                let mut claim = p.claim(16.min((N - i) as usize));
                while claim.push([i + claim.written() as u64; 8]).is_ok() {}
                let n = claim.commit() as u64;
                if n > 0 {
                    i += n;
                    w.reset();
                    continue;
                }
            }
            assert!(Instant::now() < end, "producer timed out at {i}");
            w.wait();
        }
    });
    let mut w = Waiter::new(WaitStrategy::SpinYield);
    let mut next = 0u64;
    while next < N {
        let n = if next.is_multiple_of(3) {
            c.try_pop()
                .map(|v| {
                    assert_eq!(v, [next; 8]);
                    next += 1;
                })
                .is_some() as usize
        } else {
            c.read(
                |v| {
                    assert_eq!(v, [next; 8]);
                    next += 1;
                },
                100,
            )
        };
        if n == 0 {
            assert!(Instant::now() < end, "consumer timed out at {next}");
            w.wait();
        } else {
            w.reset();
        }
    }
    producer.join().unwrap();
    assert_eq!(c.try_pop(), None);
}

#[test]
fn mpsc_every_message_arrives_exactly_once() {
    const PRODUCERS: u64 = 3;
    const PER_PRODUCER: u64 = 300_000;
    let (p, mut c) = mpsc::channel::<(u64, u64)>(256).unwrap();
    let end = deadline();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            let p = p.clone();
            thread::spawn(move || {
                let mut w = Waiter::new(WaitStrategy::SpinYield);
                for seq in 0..PER_PRODUCER {
                    let mut v = (id, seq);
                    while let Err(full) = p.try_push(v) {
                        assert!(Instant::now() < end, "producer {id} timed out at {seq}");
                        v = full.0;
                        w.wait();
                    }
                    w.reset();
                }
            })
        })
        .collect();
    drop(p);
    // Per producer, values must arrive in the order it pushed them (each producer is a FIFO),
    // and each exactly once.
    let mut next = vec![0u64; PRODUCERS as usize];
    let mut total = 0u64;
    let mut w = Waiter::new(WaitStrategy::SpinYield);
    while total < PRODUCERS * PER_PRODUCER {
        let n = c.read(
            |(id, seq)| {
                assert_eq!(seq, next[id as usize], "producer {id}: duplicate or lost value");
                next[id as usize] += 1;
            },
            64,
        );
        total += n as u64;
        if n == 0 {
            assert!(Instant::now() < end, "consumer timed out at {total}");
            w.wait();
        }
    }
    for h in producers {
        h.join().unwrap();
    }
    assert_eq!(next, vec![PER_PRODUCER; PRODUCERS as usize]);
    assert_eq!(c.try_pop(), None);
}

#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
struct Snapshot {
    version: u64,
    position: i64,
    margin: i64,
    check: u64,
}
const _: () = assert!(std::mem::size_of::<Snapshot>() == 32);
// SAFETY: repr(C), four 8-byte integers (size asserted): no padding, no pointers.
unsafe impl Plain for Snapshot {}

impl Snapshot {
    fn new(version: u64) -> Self {
        let position = version as i64 * 3 - 7;
        let margin = -(version as i64) * 11;
        Snapshot { version, position, margin, check: version ^ 0xdead_beef_cafe_f00d }
    }
}

#[test]
fn seqlock_readers_never_see_a_torn_snapshot() {
    const WRITES: u64 = 500_000;
    let (mut w, r) = seqlock::new(Snapshot::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // Readers check in before the writer starts, so each overlaps at least part of the writes
    // even when the scheduler (2 CPUs, other tests) starts them late.
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let r = r.clone();
            let done = done.clone();
            let started = started.clone();
            thread::spawn(move || {
                let end = deadline();
                let (mut last, mut reads) = (0u64, 0u64);
                started.fetch_add(1, Ordering::AcqRel);
                loop {
                    assert!(Instant::now() < end, "reader timed out");
                    let (s, version) = r.read();
                    assert_eq!(s, Snapshot::new(s.version), "torn snapshot");
                    assert_eq!(s.version, version);
                    assert!(version >= last, "went back in time");
                    last = version;
                    reads += 1;
                    if done.load(Ordering::Acquire) {
                        break;
                    }
                }
                reads
            })
        })
        .collect();
    let end = deadline();
    while started.load(Ordering::Acquire) < 2 {
        assert!(Instant::now() < end, "readers never started");
        thread::yield_now();
    }
    for v in 1..=WRITES {
        w.publish(Snapshot::new(v));
    }
    done.store(true, Ordering::Release);
    for h in readers {
        assert!(h.join().unwrap() > 0);
    }
    assert_eq!(r.read(), (Snapshot::new(WRITES), WRITES));
}

#[test]
fn index_readers_see_each_inserted_row_and_only_it() {
    const N: u64 = 50_000;
    let (mut w, r) = index::new(N as usize, index::PROBES_MAX_DEFAULT);
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|k| {
            let r = r.clone();
            let done = done.clone();
            thread::spawn(move || {
                let end = deadline();
                let mut hits = 0u64;
                let mut id = 1 + k;
                while !done.load(Ordering::Acquire) {
                    assert!(Instant::now() < end, "reader timed out");
                    let key = id * 0x9E37_79B9 + 1;
                    if let Some(row) = r.get(key) {
                        assert_eq!(u64::from(row), id, "wrong row for {key}");
                        hits += 1;
                    }
                    id = id % N + 1;
                }
                hits
            })
        })
        .collect();
    for id in 1..=N {
        w.insert(id * 0x9E37_79B9 + 1, id as u32).unwrap();
    }
    done.store(true, Ordering::Release);
    for h in readers {
        h.join().unwrap();
    }
    for id in 1..=N {
        assert_eq!(r.get(id * 0x9E37_79B9 + 1), Some(id as u32));
    }
}
