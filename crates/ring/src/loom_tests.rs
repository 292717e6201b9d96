//! loom models: every interleaving (within loom's bounds) of small instances of each protocol.
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p novate-ring --release --lib loom`.
//! The instances are tiny on purpose (capacity 2, two or three operations per thread): loom's
//! cost grows exponentially with the number of atomic operations.

use loom::thread;

use crate::{index, mpsc, seqlock, spsc};

#[test]
fn loom_spsc_values_arrive_once_in_order_across_a_wrap() {
    loom::model(|| {
        let (mut p, mut c) = spsc::channel::<u32>(2).unwrap();
        let producer = thread::spawn(move || {
            let mut sent = 0;
            for v in 0..3u32 {
                if p.try_push(v).is_ok() {
                    sent += 1;
                } else {
                    break;
                }
            }
            sent
        });
        let mut got = Vec::new();
        for _ in 0..3 {
            if let Some(v) = c.try_pop() {
                got.push(v);
            }
        }
        let sent = producer.join().unwrap();
        while let Some(v) = c.try_pop() {
            got.push(v);
        }
        assert_eq!(got, (0..sent).collect::<Vec<_>>());
    });
}

#[test]
fn loom_spsc_batch_claim_commit_and_read() {
    loom::model(|| {
        let (mut p, mut c) = spsc::channel::<u32>(2).unwrap();
        let producer = thread::spawn(move || {
            let mut claim = p.claim(2);
            assert_eq!(claim.len(), 2);
            claim.push(10).unwrap();
            claim.push(11).unwrap();
            claim.commit();
        });
        let mut got = Vec::new();
        c.read(|v| got.push(v), 2);
        // All or nothing: a commit publishes both values with one store.
        assert!(got.is_empty() || got == [10, 11], "{got:?}");
        producer.join().unwrap();
        c.read(|v| got.push(v), 2);
        assert_eq!(got, [10, 11]);
    });
}

#[test]
fn loom_spsc_read_in_place_sees_published_values_and_frees_after() {
    loom::model(|| {
        let (mut p, mut c) = spsc::channel::<u32>(2).unwrap();
        let producer = thread::spawn(move || {
            // Three values through two slots: the third waits for a slot the reader frees.
            for v in [1, 2, 3] {
                while p.try_push(v).is_err() {
                    loom::thread::yield_now();
                }
            }
        });
        let mut got: Vec<u32> = Vec::new();
        while got.len() < 3 {
            let (n, ()) = c.read_in_place(2, |a, b| got.extend(a.iter().chain(b)));
            if n == 0 {
                loom::thread::yield_now();
            }
        }
        assert_eq!(got, [1, 2, 3]);
        producer.join().unwrap();
    });
}

#[test]
fn loom_mpsc_two_producers_exactly_once() {
    loom::model(|| {
        let (p, mut c) = mpsc::channel::<u32>(2).unwrap();
        let p2 = p.clone();
        let a = thread::spawn(move || p.try_push(1).is_ok());
        let b = thread::spawn(move || p2.try_push(2).is_ok());
        let mut got = Vec::new();
        if let Some(v) = c.try_pop() {
            got.push(v);
        }
        let sent_a = a.join().unwrap();
        let sent_b = b.join().unwrap();
        while let Some(v) = c.try_pop() {
            got.push(v);
        }
        // Capacity 2 and one pop: both pushes succeed.
        assert!(sent_a && sent_b);
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
    });
}

#[test]
fn loom_mpsc_push_many_races_a_push_exactly_once_in_order() {
    loom::model(|| {
        let (p, mut c) = mpsc::channel::<u32>(4).unwrap();
        p.try_push(0).unwrap();
        let p2 = p.clone();
        let a = thread::spawn(move || p.try_push_many(2, |i| 10 + i as u32));
        let b = thread::spawn(move || p2.try_push(20).is_ok());
        let mut got = Vec::new();
        if let Some(v) = c.try_pop() {
            got.push(v);
        }
        let many = a.join().unwrap();
        let one = b.join().unwrap();
        while let Some(v) = c.try_pop() {
            got.push(v);
        }
        // Room for 3 after the first value: both succeed whatever the interleaving.
        assert!(many == 2 && one);
        assert_eq!(got[0], 0);
        let tens: Vec<u32> = got.iter().copied().filter(|v| (10..20).contains(v)).collect();
        assert_eq!(tens, [10, 11], "a producer's values arrive in its order");
        let mut all = got.clone();
        all.sort_unstable();
        assert_eq!(all, [0, 10, 11, 20]);
    });
}

#[test]
fn loom_mpsc_full_then_reuse_slot() {
    loom::model(|| {
        let (p, mut c) = mpsc::channel::<u32>(2).unwrap();
        p.try_push(1).unwrap();
        p.try_push(2).unwrap();
        let p2 = p.clone();
        let producer = thread::spawn(move || p2.try_push(3).is_ok());
        let first = c.try_pop();
        let pushed = producer.join().unwrap();
        assert_eq!(first, Some(1));
        let mut rest = Vec::new();
        while let Some(v) = c.try_pop() {
            rest.push(v);
        }
        if pushed {
            assert_eq!(rest, [2, 3]);
        } else {
            assert_eq!(rest, [2]);
        }
    });
}

#[test]
fn loom_seqlock_reads_are_never_torn() {
    loom::model(|| {
        let (mut w, r) = seqlock::new([0u64, 0u64]);
        let writer = thread::spawn(move || {
            w.publish([1, 1]);
            w.publish([2, 2]);
        });
        if let Some((v, version)) = r.try_read() {
            assert_eq!(v[0], v[1], "torn read {v:?}");
            assert_eq!(v[0], version);
        }
        writer.join().unwrap();
        assert_eq!(r.try_read(), Some(([2, 2], 2)));
    });
}

#[test]
fn loom_index_reader_sees_row_with_key() {
    loom::model(|| {
        let (mut w, r) = index::new(4, index::PROBES_MAX_DEFAULT);
        let writer = thread::spawn(move || {
            w.insert(7, 70).unwrap();
            w.insert(8, 80).unwrap();
        });
        // A reader sees either nothing yet or the exact row, never a row of 0 from before.
        let a = r.get(7);
        let b = r.get(8);
        assert!(a.is_none() || a == Some(70));
        assert!(b.is_none() || b == Some(80));
        writer.join().unwrap();
        assert_eq!((r.get(7), r.get(8)), (Some(70), Some(80)));
    });
}
