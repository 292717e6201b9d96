//! Rings (issue 4): novate-ring against crossbeam's ArrayQueue/SegQueue, crossbeam-channel,
//! rtrb, `RwLock<HashMap>` and dashmap, in the same run. Hand-rolled loops: two threads pinned to
//! CPUs 0 and 1, busy-spinning, 64-byte messages; every run checks that each message arrived
//! exactly once (and in order where the queue promises it). Prints medians of RUNS runs and a
//! `ratio` line against each peer.
//!
//! `cargo bench -p novate-benches --bench ring` (NOVATE_BENCH_QUICK=1 for a smoke run).

use std::collections::HashMap;
use std::hint::{black_box, spin_loop};
use std::sync::{Arc, Barrier, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::queue::{ArrayQueue, SegQueue};
use novate_benches::{latency_histogram, report, SplitMix};
use novate_mem::cpu::pin_current_thread;
use novate_ring::{index, mpsc, spsc, WaitStrategy, Waiter};

const CAPACITY: usize = 4096;
const BATCH: usize = 64;

/// One 64-byte message (one cache line): a sequence number and payload.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(64))]
struct Msg {
    seq: u64,
    payload: [u64; 7],
}
const _: () = assert!(size_of::<Msg>() == 64);

fn msg(seq: u64) -> Msg {
    Msg { seq, payload: [seq; 7] }
}

struct Config {
    messages: u64,
    runs: usize,
    round_trips: u64,
}

fn config() -> Config {
    if std::env::var_os("NOVATE_BENCH_QUICK").is_some() {
        Config { messages: 200_000, runs: 1, round_trips: 20_000 }
    } else {
        Config { messages: 5_000_000, runs: 11, round_trips: 200_000 }
    }
}

/// `NOVATE_BENCH_ONLY=spsc,rt,mpsc,index` runs only the named sections.
fn enabled(section: &str) -> bool {
    std::env::var("NOVATE_BENCH_ONLY").map_or(true, |v| v.split(',').any(|s| s == section))
}

fn pin(cpu: usize) {
    let cpus = novate_mem::cpu::cpus_online();
    let outcome = pin_current_thread(cpu % cpus);
    if !matches!(outcome, novate_mem::PinOutcome::Pinned { .. }) {
        eprintln!("warning: {outcome}");
    }
}

/// Runs `producer` on CPU 1 and `consumer` on CPU 0, returns the time from the first thread's
/// start to the last thread's end. Timestamps are taken by the workers themselves: with two
/// busy threads on two CPUs the spawning thread may not run again until they are done.
fn timed_pair(
    producer: impl FnOnce() + Send + 'static,
    consumer: impl FnOnce() + Send + 'static,
) -> Duration {
    timed_threads(vec![(1, Box::new(producer)), (0, Box::new(consumer))])
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs each job on a thread pinned to its CPU, all released together; returns the span from
/// the earliest start to the latest end, as measured by the workers.
fn timed_threads(jobs: Vec<(usize, Job)>) -> Duration {
    let barrier = Arc::new(Barrier::new(jobs.len()));
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|(cpu, job)| {
            let b = barrier.clone();
            thread::spawn(move || {
                pin(cpu);
                b.wait();
                let start = Instant::now();
                job();
                (start, Instant::now())
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    end - start
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// Median messages per second of each contender over `cfg.runs` rounds. Rounds interleave the
/// contenders (A B C, A B C, ...) so that drift in the VM's speed hits all of them alike.
fn throughput_set(cfg: &Config, contenders: &[(&str, &dyn Fn(u64) -> Duration)]) -> Vec<f64> {
    let mut rates = vec![Vec::new(); contenders.len()];
    for _ in 0..cfg.runs {
        for (i, (_, run)) in contenders.iter().enumerate() {
            rates[i].push(cfg.messages as f64 / run(cfg.messages).as_secs_f64());
        }
    }
    contenders
        .iter()
        .zip(rates)
        .map(|((name, _), r)| {
            let m = median(r.clone());
            let (lo, hi) = r.iter().fold((f64::MAX, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
            println!(
                "{name:<44} median {:>7.2} Mmsg/s ({:>5.1} ns/msg)  min {:.2} max {:.2}",
                m / 1e6,
                1e9 / m,
                lo / 1e6,
                hi / 1e6
            );
            m
        })
        .collect()
}

fn ratio(ours: &str, a: f64, peer: &str, b: f64) {
    println!("ratio {ours} / {peer}: {:.2}x", a / b);
}

// ---------------------------------------------------------------- SPSC throughput

fn novate_spsc(n: u64) -> Duration {
    let (mut p, mut c) = spsc::channel::<Msg>(CAPACITY).unwrap();
    timed_pair(
        move || {
            for i in 0..n {
                while p.try_push(msg(i)).is_err() {
                    spin_loop();
                }
            }
        },
        move || {
            for i in 0..n {
                let m = loop {
                    if let Some(m) = c.try_pop() {
                        break m;
                    }
                    spin_loop();
                };
                assert_eq!(m.seq, i);
            }
        },
    )
}

fn novate_spsc_batched(n: u64) -> Duration {
    let (mut p, mut c) = spsc::channel::<Msg>(CAPACITY).unwrap();
    timed_pair(
        move || {
            let mut i = 0;
            while i < n {
                let mut claim = p.claim(BATCH.min((n - i) as usize));
                while claim.written() < claim.len() {
                    let _ = claim.push(msg(i + claim.written() as u64));
                }
                let k = claim.commit() as u64;
                if k == 0 {
                    spin_loop();
                }
                i += k;
            }
        },
        move || {
            let mut next = 0;
            while next < n {
                let k = c.read(
                    |m| {
                        assert_eq!(m.seq, next);
                        next += 1;
                    },
                    BATCH,
                );
                if k == 0 {
                    spin_loop();
                }
            }
        },
    )
}

fn rtrb_spsc(n: u64) -> Duration {
    let (mut p, mut c) = rtrb::RingBuffer::<Msg>::new(CAPACITY);
    timed_pair(
        move || {
            for i in 0..n {
                while p.push(msg(i)).is_err() {
                    spin_loop();
                }
            }
        },
        move || {
            for i in 0..n {
                let m = loop {
                    if let Ok(m) = c.pop() {
                        break m;
                    }
                    spin_loop();
                };
                assert_eq!(m.seq, i);
            }
        },
    )
}

fn rtrb_spsc_batched(n: u64) -> Duration {
    let (mut p, mut c) = rtrb::RingBuffer::<Msg>::new(CAPACITY);
    timed_pair(
        move || {
            let mut i = 0;
            while i < n {
                let k = p.slots().min(BATCH).min((n - i) as usize);
                if k == 0 {
                    spin_loop();
                    continue;
                }
                let chunk = p.write_chunk_uninit(k).unwrap();
                let written = chunk.fill_from_iter((i..i + k as u64).map(msg));
                i += written as u64;
            }
        },
        move || {
            let mut next = 0;
            while next < n {
                let k = c.slots().min(BATCH);
                if k == 0 {
                    spin_loop();
                    continue;
                }
                let chunk = c.read_chunk(k).unwrap();
                for m in chunk {
                    assert_eq!(m.seq, next);
                    next += 1;
                }
            }
        },
    )
}

fn array_queue_spsc(n: u64) -> Duration {
    let q = Arc::new(ArrayQueue::<Msg>::new(CAPACITY));
    let q2 = q.clone();
    timed_pair(
        move || {
            for i in 0..n {
                while q.push(msg(i)).is_err() {
                    spin_loop();
                }
            }
        },
        move || {
            for i in 0..n {
                let m = loop {
                    if let Some(m) = q2.pop() {
                        break m;
                    }
                    spin_loop();
                };
                assert_eq!(m.seq, i);
            }
        },
    )
}

fn channel_spsc(n: u64) -> Duration {
    let (tx, rx) = crossbeam::channel::bounded::<Msg>(CAPACITY);
    timed_pair(
        move || {
            for i in 0..n {
                while tx.try_send(msg(i)).is_err() {
                    spin_loop();
                }
            }
        },
        move || {
            for i in 0..n {
                let m = loop {
                    if let Ok(m) = rx.try_recv() {
                        break m;
                    }
                    spin_loop();
                };
                assert_eq!(m.seq, i);
            }
        },
    )
}

// ---------------------------------------------------------------- SPSC round trip

/// `ping(seq)` sends `seq` and waits for its echo; `echo` echoes `total` messages.
fn round_trip(name: &str, cfg: &Config, make: impl FnOnce(u64) -> PingEcho) -> u64 {
    let warmup = cfg.round_trips / 10;
    let total = cfg.round_trips + warmup;
    let (mut ping, echo) = make(total);
    let echo = thread::spawn(move || {
        pin(1);
        echo();
    });
    pin(0);
    let mut h = latency_histogram();
    for i in 0..total {
        let t = Instant::now();
        ping(i);
        if i >= warmup {
            h.record(t.elapsed().as_nanos().max(1) as u64).unwrap();
        }
    }
    echo.join().unwrap();
    println!("{}", report(&format!("round trip {name}"), &h));
    h.value_at_quantile(0.5)
}

/// The measuring side (`ping(seq)`: send, wait for the echo) and the echo side of a round trip.
type PingEcho = (Box<dyn FnMut(u64) + Send>, Box<dyn FnOnce() + Send>);

fn spin_pop<T>(mut pop: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = pop() {
            return v;
        }
        spin_loop();
    }
}

fn rt_novate(total: u64) -> PingEcho {
    let (mut p1, mut c1) = spsc::channel::<Msg>(CAPACITY).unwrap();
    let (mut p2, mut c2) = spsc::channel::<Msg>(CAPACITY).unwrap();
    (
        Box::new(move |i| {
            p1.try_push(msg(i)).unwrap();
            assert_eq!(spin_pop(|| c2.try_pop()).seq, i);
        }),
        Box::new(move || {
            for _ in 0..total {
                let m = spin_pop(|| c1.try_pop());
                p2.try_push(m).unwrap();
            }
        }),
    )
}

fn rt_rtrb(total: u64) -> PingEcho {
    let (mut p1, mut c1) = rtrb::RingBuffer::<Msg>::new(CAPACITY);
    let (mut p2, mut c2) = rtrb::RingBuffer::<Msg>::new(CAPACITY);
    (
        Box::new(move |i| {
            p1.push(msg(i)).unwrap();
            assert_eq!(spin_pop(|| c2.pop().ok()).seq, i);
        }),
        Box::new(move || {
            for _ in 0..total {
                let m = spin_pop(|| c1.pop().ok());
                p2.push(m).unwrap();
            }
        }),
    )
}

fn rt_array_queue(total: u64) -> PingEcho {
    let a = Arc::new(ArrayQueue::<Msg>::new(CAPACITY));
    let b = Arc::new(ArrayQueue::<Msg>::new(CAPACITY));
    let (a2, b2) = (a.clone(), b.clone());
    (
        Box::new(move |i| {
            a.push(msg(i)).unwrap();
            assert_eq!(spin_pop(|| b.pop()).seq, i);
        }),
        Box::new(move || {
            for _ in 0..total {
                let m = spin_pop(|| a2.pop());
                b2.push(m).unwrap();
            }
        }),
    )
}

fn rt_channel(total: u64) -> PingEcho {
    let (tx1, rx1) = crossbeam::channel::bounded::<Msg>(CAPACITY);
    let (tx2, rx2) = crossbeam::channel::bounded::<Msg>(CAPACITY);
    (
        Box::new(move |i| {
            tx1.try_send(msg(i)).unwrap();
            assert_eq!(spin_pop(|| rx2.try_recv().ok()).seq, i);
        }),
        Box::new(move || {
            for _ in 0..total {
                let m = spin_pop(|| rx1.try_recv().ok());
                tx2.try_send(m).unwrap();
            }
        }),
    )
}

// ---------------------------------------------------------------- MPSC

/// How producers wait on a full queue: busy-spin when each has its own CPU; spin-then-yield when
/// two share CPU 1 (a spinning producer would otherwise hold the CPU while the other one, preempted
/// between claiming and publishing a slot, keeps the consumer waiting for a whole time slice).
fn producer_wait(producers: u64) -> WaitStrategy {
    if producers == 1 {
        WaitStrategy::BusySpin
    } else {
        WaitStrategy::SpinYield
    }
}

/// `producers` threads (pinned to CPU 1, sharing it when there are two) each push `n /
/// producers` messages tagged with their id; the consumer (CPU 0) checks per-producer order.
fn mpsc_run<Q: Send + Sync + 'static>(
    n: u64,
    producers: u64,
    queue: Q,
    push: fn(&Q, Msg) -> bool,
    pop: fn(&Q) -> Option<Msg>,
) -> Duration {
    let q = Arc::new(queue);
    let per = n / producers;
    let mut jobs: Vec<(usize, Job)> = Vec::new();
    for id in 0..producers {
        let q = q.clone();
        jobs.push((
            1,
            Box::new(move || {
                let mut w = Waiter::new(producer_wait(producers));
                for i in 0..per {
                    let mut m = msg(i);
                    m.payload[0] = id;
                    while !push(&q, m) {
                        w.wait();
                    }
                    w.reset();
                }
            }),
        ));
    }
    jobs.push((
        0,
        Box::new(move || {
            let mut next = vec![0u64; producers as usize];
            for _ in 0..per * producers {
                let m = spin_pop(|| pop(&q));
                let id = m.payload[0] as usize;
                assert_eq!(m.seq, next[id], "producer {id}: lost or duplicated message");
                next[id] += 1;
            }
        }),
    ));
    timed_threads(jobs)
}

/// As `mpsc_run`, with novate's queue: its consumer is a unique handle that moves into the
/// consumer thread.
fn novate_mpsc_run(n: u64, producers: u64) -> Duration {
    let (p, mut c) = mpsc::channel::<Msg>(CAPACITY).unwrap();
    let per = n / producers;
    let mut jobs: Vec<(usize, Job)> = Vec::new();
    for id in 0..producers {
        let p = p.clone();
        jobs.push((
            1,
            Box::new(move || {
                let mut w = Waiter::new(producer_wait(producers));
                for i in 0..per {
                    let mut m = msg(i);
                    m.payload[0] = id;
                    while p.try_push(m).is_err() {
                        w.wait();
                    }
                    w.reset();
                }
            }),
        ));
    }
    drop(p);
    jobs.push((
        0,
        Box::new(move || {
            let mut next = vec![0u64; producers as usize];
            for _ in 0..per * producers {
                let m = spin_pop(|| c.try_pop());
                let id = m.payload[0] as usize;
                assert_eq!(m.seq, next[id], "producer {id}: lost or duplicated message");
                next[id] += 1;
            }
        }),
    ));
    timed_threads(jobs)
}

// ---------------------------------------------------------------- account index

fn index_bench(cfg: &Config) {
    const ACCOUNTS: u64 = 100_000;
    let lookups: u64 = if cfg.runs == 1 { 1_000_000 } else { 10_000_000 };
    let keys: Vec<u64> =
        (1..=ACCOUNTS).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1).collect();
    let mut rng = SplitMix(42);
    let queries: Arc<Vec<u64>> =
        Arc::new((0..1 << 20).map(|_| keys[rng.below(ACCOUNTS) as usize]).collect());

    let (mut w, reader) = index::new(ACCOUNTS as usize, index::PROBES_MAX_DEFAULT);
    let mut std_map = HashMap::new();
    let dash = dashmap::DashMap::new();
    for (row, &k) in keys.iter().enumerate() {
        w.insert(k, row as u32).unwrap();
        std_map.insert(k, row as u32);
        dash.insert(k, row as u32);
    }
    let rw = Arc::new(RwLock::new(std_map));
    let dash = Arc::new(dash);

    // `threads` readers, each doing `lookups` lookups; returns median ns per lookup per thread.
    let run = |name: &str, threads: usize, get: Arc<dyn Fn(u64) -> Option<u32> + Send + Sync>| {
        let mut per_lookup = Vec::new();
        for _ in 0..cfg.runs {
            let barrier = Arc::new(Barrier::new(threads + 1));
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let (get, q, b) = (get.clone(), queries.clone(), barrier.clone());
                    thread::spawn(move || {
                        pin(t);
                        b.wait();
                        let start = Instant::now();
                        let mut sum = 0u64;
                        for i in 0..lookups as usize {
                            let k = q[(i + t * 7919) & ((1 << 20) - 1)];
                            sum += u64::from(get(k).expect("every queried key is present"));
                        }
                        black_box(sum);
                        start.elapsed()
                    })
                })
                .collect();
            barrier.wait();
            let worst = hs.into_iter().map(|h| h.join().unwrap()).max().unwrap();
            per_lookup.push(worst.as_nanos() as f64 / lookups as f64);
        }
        let m = median(per_lookup);
        println!("{name:<44} median {m:>6.1} ns/lookup per thread ({threads} thread(s))");
        m
    };
    for threads in [1, 2] {
        let r = reader.clone();
        let ours = run("index novate-ring", threads, Arc::new(move |k| r.get(k)));
        let m = rw.clone();
        let std_rw = run(
            "index RwLock<HashMap>",
            threads,
            Arc::new(move |k| m.read().unwrap().get(&k).copied()),
        );
        let d = dash.clone();
        let dm = run("index dashmap", threads, Arc::new(move |k| d.get(&k).map(|v| *v)));
        println!(
            "ratio index ({threads} thread(s)) RwLock<HashMap> / novate: {:.2}x faster",
            std_rw / ours
        );
        println!("ratio index ({threads} thread(s)) dashmap / novate: {:.2}x faster", dm / ours);
    }
}

fn main() {
    let cfg = config();
    println!(
        "# ring bench: {} messages x {} runs, capacity {CAPACITY}, 64-byte messages, threads pinned to cpus 0 and 1, busy-spin",
        cfg.messages, cfg.runs
    );

    if enabled("spsc") {
        spsc_section(&cfg);
    }
    if enabled("rt") {
        round_trip_section(&cfg);
    }
    if enabled("mpsc") {
        mpsc_section(&cfg);
    }
    if enabled("index") {
        println!("## account index lookups (100k accounts, random keys)");
        index_bench(&cfg);
    }
}

fn spsc_section(cfg: &Config) {
    println!("## SPSC throughput");
    let r = throughput_set(
        cfg,
        &[
            ("spsc novate-ring try_push/try_pop", &novate_spsc),
            ("spsc novate-ring claim/read batch 64", &novate_spsc_batched),
            ("spsc rtrb push/pop", &rtrb_spsc),
            ("spsc rtrb chunks of 64", &rtrb_spsc_batched),
            ("spsc crossbeam ArrayQueue", &array_queue_spsc),
            ("spsc crossbeam-channel bounded", &channel_spsc),
        ],
    );
    let (ours, ours_b, rtrb, rtrb_b, aq, ch) = (r[0], r[1], r[2], r[3], r[4], r[5]);
    ratio("novate", ours, "ArrayQueue", aq);
    ratio("novate", ours, "rtrb", rtrb);
    ratio("novate", ours, "crossbeam-channel", ch);
    ratio("novate batched", ours_b, "rtrb batched", rtrb_b);
    ratio("novate batched", ours_b, "ArrayQueue", aq);
}

fn round_trip_section(cfg: &Config) {
    println!("## SPSC round trip (two rings, ping-pong between cpu 0 and cpu 1)");
    let rt_ours = round_trip("novate-ring", cfg, rt_novate);
    let rt_r = round_trip("rtrb", cfg, rt_rtrb);
    let rt_aq = round_trip("ArrayQueue", cfg, rt_array_queue);
    let rt_ch = round_trip("crossbeam-channel", cfg, rt_channel);
    for (peer, p50) in [("rtrb", rt_r), ("ArrayQueue", rt_aq), ("crossbeam-channel", rt_ch)] {
        println!("ratio round-trip p50 {peer} / novate: {:.2}x", p50 as f64 / rt_ours as f64);
    }
}

fn mpsc_section(cfg: &Config) {
    println!("## MPSC throughput");
    for producers in [1u64, 2] {
        let ours_name = format!("mpsc novate-ring, {producers} producer(s)");
        let aq_name = format!("mpsc ArrayQueue, {producers} producer(s)");
        let sq_name = format!("mpsc SegQueue, {producers} producer(s)");
        let r = throughput_set(
            cfg,
            &[
                (&ours_name, &|n| novate_mpsc_run(n, producers)),
                (&aq_name, &|n| {
                    mpsc_run(
                        n,
                        producers,
                        ArrayQueue::<Msg>::new(CAPACITY),
                        |q, m| q.push(m).is_ok(),
                        |q| q.pop(),
                    )
                }),
                (&sq_name, &|n| {
                    mpsc_run(
                        n,
                        producers,
                        SegQueue::<Msg>::new(),
                        |q, m| {
                            q.push(m);
                            true
                        },
                        |q| q.pop(),
                    )
                }),
            ],
        );
        let (ours, aq, sq) = (r[0], r[1], r[2]);
        ratio(&format!("mpsc novate ({producers}p)"), ours, "ArrayQueue", aq);
        ratio(&format!("mpsc novate ({producers}p)"), ours, "SegQueue", sq);
    }
}
