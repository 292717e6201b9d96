//! Engine, daemon (issue 6), each against a peer in the same run:
//! - in-process pipeline: submit -> ack throughput with the client's window full, and one
//!   command at a time latency, under durability `none` (memory journal; and a data dir in the
//!   page cache) and `fsync` (a data dir on TMPDIR, fdatasync per group commit); the peer is the
//!   bare state machine applying the same commands on one thread (what the pipeline adds).
//! - TCP loopback round trip: one ClearTrade frame -> Ack through `novated` (in-process Server)
//!   against a bare TCP echo server of the same 64-byte frame (what novated adds over the
//!   network stack; goal: <= 1 us at p50), in alternating runs of 500 round trips over two
//!   open connections, the servers' threads on CPU 1 and the client on CPU 0; the headline is
//!   the median over the run pairs of (novated's p50 - the echo's p50).
//!
//! Run: `cargo bench -p novate-benches --bench engine` (NOVATE_BENCH_QUICK=1 for a smoke run;
//! NOVATE_BENCH_ONLY=tcp or =pipeline for one part; NOVATE_BENCH_TCP=wait/stages/poll_us for
//! one TCP case; NOVATE_BENCH_TCP_PIN=0 to leave thread placement to the scheduler).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use novate_benches::{latency_histogram, report, SplitMix};
use novate_core::*;
use novate_engine::{AnswerKind, Config, DurabilityPolicy, Engine, Server};
use novate_wire::convert::{encode_clear_trade, encode_command};
use novate_wire::frame::write_frame;

const ACCOUNTS: u64 = 1000;

fn quick() -> bool {
    std::env::var_os("NOVATE_BENCH_QUICK").is_some()
}

/// Whether to run `part` ("pipeline" or "tcp"): all unless NOVATE_BENCH_ONLY names one.
fn runs(part: &str) -> bool {
    std::env::var("NOVATE_BENCH_ONLY").map_or(true, |only| only == part)
}

fn config(data_dir: &str, policy: DurabilityPolicy) -> Config {
    let mut c = Config { data_dir: data_dir.into(), ..Config::default() };
    c.durability.policy = policy;
    c.durability.snapshot_every = 0;
    c.engine.accounts_max = ACCOUNTS as u32 + 1;
    c.engine.instruments_max = 16;
    c.engine.positions_max = 20_000;
    c.engine.trades_max = 4_000_000;
    c.threads.prefault = true;
    // `NOVATE_BENCH_BATCH_MAX=n` sets engine.batch_max (default: the engine's).
    if let Some(b) = std::env::var("NOVATE_BENCH_BATCH_MAX").ok().and_then(|b| b.parse().ok()) {
        c.engine.batch_max = b;
    }
    c
}

fn setup() -> Vec<Command> {
    let mut v = vec![Command::UpsertInstrument(InstrumentSpec {
        id: 1,
        multiplier: 1,
        margin_bps: 500,
        settle_days: 2,
    })];
    v.push(Command::MarkPrice { instrument: 1, price: 100 * PRICE_SCALE });
    for a in 1..=ACCOUNTS {
        v.push(Command::UpsertAccount(AccountSpec {
            id: a,
            max_position: 0,
            max_notional: 0,
            max_loss: 0,
            suspended: false,
        }));
        v.push(Command::AdjustCollateral {
            account: a,
            amount: 1_000_000_000 * i128::from(PRICE_SCALE),
        });
    }
    v
}

fn trades(n: u64, first_id: u64, seed: u64) -> Vec<Command> {
    let mut r = SplitMix(seed);
    (0..n)
        .map(|i| {
            let buy = r.below(ACCOUNTS) + 1;
            let sell = buy % ACCOUNTS + 1;
            Command::ClearTrade(Trade {
                trade_id: first_id + i,
                buy,
                sell,
                instrument: 1,
                qty: 1 + r.below(10) as i64,
                price: (99 + r.below(3) as i64) * PRICE_SCALE,
                trade_date: 20261125,
            })
        })
        .collect()
}

/// (commands per second with the window full, latency histogram one at a time).
fn pipeline(cfg: &Config, n: u64, samples: u64) -> (f64, Histogram<u64>) {
    let engine = Engine::open(cfg).expect("engine");
    let mut c = engine.client();
    for cmd in setup() {
        c.call(cmd).expect("setup");
    }
    let cmds = trades(n, 1, 7);
    let t = Instant::now();
    let mut acks = 0u64;
    let mut count = |a: novate_engine::Answer| {
        if matches!(a.kind, AnswerKind::Ack { .. }) {
            acks += 1
        }
    };
    for (i, cmd) in cmds.iter().enumerate() {
        c.submit_with(i as u64, *cmd, Duration::from_secs(60), &mut count).expect("submit");
        while let Some(a) = c.poll_answer() {
            count(a);
        }
    }
    while c.inflight() > 0 {
        count(c.wait_answer(Duration::from_secs(60)).expect("answer"));
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    assert_eq!(acks, n, "every trade acknowledged");
    let mut h = latency_histogram();
    for cmd in trades(samples, 10_000_000, 9) {
        let t = Instant::now();
        c.call(cmd).expect("ack");
        h.record(t.elapsed().as_nanos() as u64).expect("record");
    }
    drop(c);
    engine.shutdown();
    (rate, h)
}

/// The peer: the bare state machine on this thread, same commands.
fn bare(n: u64) -> f64 {
    let mut sm = StateMachine::new(config("", DurabilityPolicy::None).limits()).expect("limits");
    // The pipeline commits its tables at start-up (threads.prefault, set above): so does
    // its peer, so that neither pays first-touch page faults in the timed part.
    sm.prefault();
    let mut seq = 0;
    for cmd in setup() {
        seq += 1;
        sm.apply(&cmd, seq, 0).expect("setup");
    }
    let batch: Vec<Sequenced> = trades(n, 1, 7)
        .into_iter()
        .map(|cmd| {
            seq += 1;
            Sequenced { seq, ts: 0, cmd }
        })
        .collect();
    let t = Instant::now();
    let mut ok = 0u64;
    for chunk in batch.chunks(1024) {
        sm.apply_batch(chunk, |_, r| ok += u64::from(r.is_ok()));
    }
    assert_eq!(ok, n);
    n as f64 / t.elapsed().as_secs_f64()
}

/// A connection for `round_trips` (Nagle off: one frame per segment).
fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Send each frame and wait for its `reply_len`-byte answer, one at a time, on `s`; each round
/// trip's time goes into `h`.
fn round_trips(s: &mut TcpStream, frames: &[Vec<u8>], reply_len: usize, h: &mut Histogram<u64>) {
    let mut buf = vec![0u8; reply_len];
    for f in frames {
        let t = Instant::now();
        s.write_all(f).expect("write");
        s.read_exact(&mut buf).expect("read");
        h.record(t.elapsed().as_nanos() as u64).expect("record");
    }
}

/// The peer: a bare echo of 64-byte frames. With `poll` (novated's `net.busy_poll_us`) it
/// polls its socket the same way before it blocks, so both sides wait for a request alike.
fn echo_server(poll: Duration) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_nodelay(true);
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                loop {
                    poll_readable(&s, poll);
                    if s.read_exact(&mut buf).is_err() || s.write_all(&buf).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Poll `s` without blocking for up to `poll` until it has bytes (or an end or error).
fn poll_readable(s: &TcpStream, poll: Duration) {
    use std::os::fd::AsRawFd;
    if poll.is_zero() {
        return;
    }
    let start = Instant::now();
    let mut probe = [0u8; 1];
    // SAFETY: the fd is the open socket `s`; MSG_PEEK copies at most one byte into `probe`.
    while unsafe {
        libc::recv(s.as_raw_fd(), probe.as_mut_ptr().cast(), 1, libc::MSG_DONTWAIT | libc::MSG_PEEK)
    } < 0
        && start.elapsed() < poll
    {
        std::hint::spin_loop();
    }
}

fn main() {
    let (n, samples, rtts) =
        if quick() { (100_000, 2_000, 5_000) } else { (1_000_000, 20_000, 50_000) };
    println!("engine benchmarks (issue 6): {n} trades with the window full, {samples} one-at-a-time, {rtts} TCP round trips");
    if runs("pipeline") {
        let _warm = bare(n / 10);
        let bare_rate = bare(n);
        println!("bare state machine apply_batch (peer): {:.2} M trades/s", bare_rate / 1e6);
        let tmp = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
        for (name, dir, policy) in [
            (
                "durability none, memory journal, wait spin-yield",
                "spin-yield".to_string(),
                DurabilityPolicy::None,
            ),
            ("durability none, memory journal", String::new(), DurabilityPolicy::None),
            (
                "durability none, memory journal, stages fused",
                "fused".to_string(),
                DurabilityPolicy::None,
            ),
            (
                "durability none, memory journal, stages fused, lookup stage",
                "fused-lookups".to_string(),
                DurabilityPolicy::None,
            ),
            (
                "durability none, data dir (page cache)",
                format!("{tmp}/novate-bench-none-{}", std::process::id()),
                DurabilityPolicy::None,
            ),
            (
                "durability fsync, data dir",
                format!("{tmp}/novate-bench-fsync-{}", std::process::id()),
                DurabilityPolicy::Fsync,
            ),
        ] {
            let (n, samples) = if policy == DurabilityPolicy::Fsync {
                (n / 5, samples / 10)
            } else {
                (n, samples)
            };
            let mut cfg = config(&dir, policy);
            if dir == "spin-yield" {
                cfg = config("", policy);
                cfg.threads.wait = "spin-yield".into();
            }
            if dir == "fused" || dir == "fused-lookups" {
                cfg = config("", policy);
                cfg.threads.stages = "fused".into();
                cfg.threads.lookup_stage = dir == "fused-lookups";
            }
            let (rate, h) = pipeline(&cfg, n, samples);
            println!(
                "pipeline [{name}]: {:.3} M trades/s (window full; {:.2}x of the bare state machine); {}",
                rate / 1e6,
                rate / bare_rate,
                report("submit->ack one at a time", &h)
            );
            if !dir.is_empty() && !["spin-yield", "fused", "fused-lookups"].contains(&dir.as_str())
            {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    if !runs("tcp") {
        return;
    }
    // NOVATE_BENCH_TCP=wait/stages/poll_us (e.g. park/fused/0) runs that one only.
    let one = std::env::var("NOVATE_BENCH_TCP").ok();
    for (wait, stages, poll_us) in [
        ("park", "split", 0),
        ("spin-yield", "split", 0),
        ("park", "fused", 0),
        ("spin-yield", "fused", 0),
        ("park", "fused", TCP_POLL_US),
    ] {
        if one.as_ref().is_none_or(|o| *o == format!("{wait}/{stages}/{poll_us}")) {
            tcp(rtts, wait, stages, poll_us);
        }
    }
}

/// `net.busy_poll_us` of the polling case (and its echo's poll): longer than a round trip
/// (~15-30 us here), so a reader that answered polls until the next request comes.
const TCP_POLL_US: u64 = 100;

/// Round trips per run of one server before the other's (see `tcp`): ~10-30 ms, long enough
/// for the idle side's poll to end (so the two never poll at once), short against drift.
const TCP_RUN: usize = 500;

/// TCP: novated vs an echo server, same 64-byte frames, one at a time, interleaved. With
/// `poll_us`, novated's readers and the echo both poll their sockets that long before blocking.
fn tcp(rtts: usize, wait: &str, stages: &str, poll_us: u64) {
    let mut cfg = config("", DurabilityPolicy::None);
    cfg.net.listen = "127.0.0.1:0".into();
    cfg.net.busy_poll_us = poll_us;
    cfg.threads.wait = wait.into();
    cfg.threads.stages = stages.into();
    // Placement: on 2 vCPUs the scheduler's choice of CPU for the client and server threads
    // moved the echo's p50 from ~27 to ~15 us depending on how the runs alternated, while
    // novated's stayed ~28 us. So every server thread (novated's and the echo's: they inherit
    // this thread's affinity) runs on CPU 1 and the client on CPU 0, and both servers are
    // measured alike; NOVATE_BENCH_TCP_PIN=0 leaves placement to the scheduler.
    let before = novate_mem::cpu::affinity().ok();
    let pin = std::env::var("NOVATE_BENCH_TCP_PIN").map_or(true, |v| v != "0")
        && before.as_ref().is_some_and(|c| c.contains(&0) && c.contains(&1));
    if pin {
        novate_mem::pin_current_thread(1);
    }
    let server = Server::start(&cfg).expect("server");
    {
        let mut s = TcpStream::connect(server.local_addr()).expect("connect");
        let mut buf = [0u8; 64];
        for cmd in setup() {
            let mut f = [0u8; 128];
            let k = write_frame(&mut f, |b| encode_command(b, 1, &cmd)).expect("frame");
            s.write_all(&f[..k]).expect("write");
            s.read_exact(&mut buf[..38]).expect("ack"); // SOFH 6 + header 8 + Ack block 24
        }
    }
    let frames: Vec<Vec<u8>> = trades(rtts as u64, 1, 11)
        .iter()
        .enumerate()
        .map(|(i, cmd)| {
            let Command::ClearTrade(t) = cmd else { unreachable!() };
            let mut f = [0u8; 128];
            let k = write_frame(&mut f, |b| encode_clear_trade(b, i as u64, t)).expect("frame");
            assert_eq!(k, 70);
            f[..k].to_vec()
        })
        .collect();
    let echo_frames: Vec<Vec<u8>> = frames.iter().map(|f| f[..64].to_vec()).collect();
    let echo = echo_server(Duration::from_micros(poll_us));
    if pin {
        novate_mem::pin_current_thread(0);
    }
    // Interleave the two in short runs so the machine's drift (this VM's loopback latency moves
    // by 2x within minutes) hits both alike; each pair of runs also gives one paired
    // difference of medians, whose median is the drift-free figure.
    let (mut sn, mut se) = (connect(server.local_addr()), connect(echo));
    // Warm-up: 100 round trips each, not counted.
    round_trips(&mut sn, &frames[..100], 38, &mut latency_histogram());
    round_trips(&mut se, &echo_frames[..100], 64, &mut latency_histogram());
    let mut hn = latency_histogram();
    let mut he = latency_histogram();
    let mut paired = Vec::new();
    // (The first 100 frames were the warm-up: trade ids are not sent twice.)
    for (fr, ef) in frames[100..].chunks(TCP_RUN).zip(echo_frames[100..].chunks(TCP_RUN)) {
        let (mut rn, mut re) = (latency_histogram(), latency_histogram());
        round_trips(&mut sn, fr, 38, &mut rn);
        round_trips(&mut se, ef, 64, &mut re);
        paired.push(rn.value_at_quantile(0.5) as i64 - re.value_at_quantile(0.5) as i64);
        hn.add(rn).expect("add");
        he.add(re).expect("add");
    }
    paired.sort_unstable();
    let paired_p50 = paired[paired.len() / 2];
    println!("{}", report("tcp echo server (peer), 64 B frame round trip", &he));
    println!(
        "{}",
        report(
            &format!(
                "novated ClearTrade -> Ack round trip (wait {wait}, stages {stages}, busy_poll_us {poll_us}, echo alike, {})",
                if pin { "servers on CPU 1, client on CPU 0" } else { "not pinned" }
            ),
            &hn
        )
    );
    let p50 = hn.value_at_quantile(0.5) as i64 - he.value_at_quantile(0.5) as i64;
    let p99 = hn.value_at_quantile(0.99) as i64 - he.value_at_quantile(0.99) as i64;
    println!(
        "novated adds {:.2} us at p50 and {:.2} us at p99 over the echo; median of {} paired \
         runs of {TCP_RUN} (novated p50 - echo p50): {:.2} us (goal <= 1 us at p50: {})",
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        paired.len(),
        paired_p50 as f64 / 1e3,
        if paired_p50 <= 1000 { "met" } else { "missed" }
    );
    server.shutdown();
    if let (true, Some(cpus)) = (pin, before) {
        let _ = novate_mem::cpu::set_affinity(&cpus);
    }
}
