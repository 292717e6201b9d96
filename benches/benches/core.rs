//! ClearTrade / CheckOrder / valuation benchmarks for novate-core, against a plain
//! `HashMap<(account, instrument), Position>` engine doing the same work in the same run.
//!
//! Workload (issue 2): 100k accounts, 1k instruments, ~1M open positions (sparse: most accounts
//! hold ~10 instruments), ClearTrade between holders of existing positions, uniform or hot-set
//! (Zipf, s = 0.99) access. Each figure is the median of REPS repetitions of N commands.
//!
//! Run: `cargo bench -p novate-benches --bench core` (NOVATE_BENCH_QUICK=1 for a smoke run,
//! NOVATE_BENCH_SCALE=1m|10k|1k for one book). NOVATE_BENCH_AB=1 times only `apply_batch_on`,
//! 20 repetitions of 100k trades that alternate between batches of `LONG_BATCH` (four jobs
//! each, each looked up while the one before is applied) and of `JOB_MAX` (one job a call, so
//! each waits for its first hints), and prints both sets: an A/B in one process, which the
//! host's drift between runs does not skew. NOVATE_BENCH_AB=head alternates, in batches of
//! `BATCH`, between `apply_batch_on` looking the first commands up itself (its default) and
//! the stage looking up all (`LookupStage::force_head`).

use criterion::{black_box, Criterion};
use hdrhistogram::Histogram;
use novate_benches::{latency_histogram, report, SplitMix, Timer};
use novate_core::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const PREFILL_PER_ACCOUNT: u64 = 5; // each prefill trade opens up to 2 positions
/// The longer batches of `apply_batch_on`: the engine's default `engine.batch_max` (its runs
/// under load).
const LONG_BATCH: usize = 4096;
const BATCH: usize = 256;

/// The book's size: the 1M positions; a cache-resident one (~10k positions, ~2 MB with
/// the indices and accounts: L2 and L3) that shows compute cost; and one of ~640 positions that
/// stays in L1 and L2, the compute floor (what the 10k book adds to it is its cache misses).
#[derive(Clone, Copy)]
struct Scale {
    name: &'static str,
    accounts: u64,
    instruments: u32,
}

const SCALES: [Scale; 3] = [
    Scale { name: "1m", accounts: 100_000, instruments: 1_000 },
    Scale { name: "10k", accounts: 1_000, instruments: 100 },
    Scale { name: "1k", accounts: 100, instruments: 10 },
];

struct Sizes {
    n: usize,
    reps: usize,
}

fn sizes() -> Sizes {
    if std::env::var_os("NOVATE_BENCH_QUICK").is_some() {
        Sizes { n: 100_000, reps: 2 }
    } else {
        Sizes { n: 1_000_000, reps: 5 }
    }
}

fn setup_commands(sc: Scale, rng: &mut SplitMix) -> (Vec<Command>, Vec<Trade>) {
    let mut cmds = Vec::new();
    for id in 1..=sc.instruments {
        let multiplier = [1, 10, 50, 100][id as usize % 4];
        cmds.push(Command::UpsertInstrument(InstrumentSpec {
            id,
            multiplier,
            margin_bps: 1_000,
            settle_days: 2,
        }));
        cmds.push(Command::MarkPrice { instrument: id, price: 100 * PRICE_SCALE });
    }
    for id in 1..=sc.accounts {
        let max_position = if id % 10 == 0 { 1_000_000 } else { 0 };
        cmds.push(Command::UpsertAccount(AccountSpec {
            id,
            max_position,
            max_notional: 0,
            max_loss: 0,
            suspended: false,
        }));
        cmds.push(Command::AdjustCollateral {
            account: id,
            amount: 1_000_000_000 * i128::from(PRICE_SCALE),
        });
    }
    let mut prefill = Vec::new();
    let mut trade_id = 0;
    for buy in 1..=sc.accounts {
        for _ in 0..PREFILL_PER_ACCOUNT {
            let sell = 1 + (buy + rng.below(sc.accounts - 1)) % sc.accounts;
            trade_id += 1;
            let t = Trade {
                trade_id,
                buy,
                sell,
                instrument: 1 + rng.below(u64::from(sc.instruments)) as u32,
                qty: 1 + rng.below(100) as i64,
                price: (95 + rng.below(10) as i64) * PRICE_SCALE,
                trade_date: 20260105,
            };
            cmds.push(Command::ClearTrade(t));
            prefill.push(t);
        }
    }
    (cmds, prefill)
}

/// Zipf(s) over ranks 0..n by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        cdf.iter_mut().for_each(|c| *c /= acc);
        Zipf { cdf }
    }
    fn sample(&self, rng: &mut SplitMix) -> usize {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// ClearTrades re-trading existing (buy, sell, instrument) pairs, so no position is new.
fn workload(
    rng: &mut SplitMix,
    prefill: &[Trade],
    n: usize,
    zipf: Option<&Zipf>,
    first_id: u64,
) -> Vec<Sequenced> {
    (0..n)
        .map(|i| {
            let k = match zipf {
                Some(z) => z.sample(rng),
                None => rng.below(prefill.len() as u64) as usize,
            };
            let base = prefill[k];
            let (buy, sell) =
                if rng.below(2) == 0 { (base.buy, base.sell) } else { (base.sell, base.buy) };
            let t = Trade {
                trade_id: first_id + i as u64,
                buy,
                sell,
                qty: 1 + rng.below(20) as i64,
                price: (90 + rng.below(20) as i64) * PRICE_SCALE,
                ..base
            };
            Sequenced { seq: first_id + i as u64, ts: 0, cmd: Command::ClearTrade(t) }
        })
        .collect()
}

fn build(sc: Scale, setup: &[Command], trades_max: u32) -> StateMachine {
    let limits = Limits {
        accounts_max: sc.accounts as u32,
        instruments_max: sc.instruments,
        positions_max: (sc.accounts * PREFILL_PER_ACCOUNT * 2 + 1_000) as u32,
        trades_max,
    };
    let mut sm = StateMachine::new(limits).expect("limits");
    // Start-up as the engine does it (threads.prefault): every table committed, so no timed
    // command pays a first-touch page fault (the peer reserves its trade map, see bench_peer).
    sm.prefault();
    for (i, c) in setup.iter().enumerate() {
        sm.apply(c, i as u64 + 1, 0).expect("setup command accepted");
    }
    sm
}

/// [`build`] with the setup's records settled into the state digest (`state_hash()`), as a
/// running engine's are after its first hash or snapshot: a timed trade then takes its
/// position's record out of the digest the first time it changes the position, as it would.
fn build_settled(sc: Scale, setup: &[Command], trades_max: u32) -> StateMachine {
    let mut sm = build(sc, setup, trades_max);
    sm.state_hash();
    sm
}

// ---- the peer: a plain HashMap engine doing the same work -----------------------------------

struct PeerAccount {
    collateral: Money,
    spec: AccountSpec,
    /// Same algorithm as novate: totals kept exact incrementally (marks are fixed in this
    /// workload, so they never go stale); only the storage differs.
    totals: Totals,
}

#[derive(Default)]
struct Peer {
    instruments: HashMap<InstrumentId, (InstrumentSpec, Price)>,
    accounts: HashMap<AccountId, PeerAccount>,
    positions: HashMap<(AccountId, InstrumentId), Book>,
    trades: HashMap<TradeId, Trade>,
}

impl Peer {
    fn apply(&mut self, c: &Command) -> Result<usize, Reject> {
        match *c {
            Command::UpsertInstrument(s) => {
                self.instruments.insert(s.id, (s, 0));
            }
            Command::MarkPrice { instrument, price } => {
                assert!(self.positions.is_empty(), "marks are set before any trade");
                self.instruments.get_mut(&instrument).ok_or(Reject::UnknownInstrument)?.1 = price;
            }
            Command::UpsertAccount(spec) => {
                self.accounts.insert(
                    spec.id,
                    PeerAccount { collateral: 0, spec, totals: Totals::default() },
                );
            }
            Command::AdjustCollateral { account, amount } => {
                self.accounts.get_mut(&account).ok_or(Reject::UnknownAccount)?.collateral += amount;
            }
            Command::ClearTrade(t) => return self.clear(&t),
            _ => unreachable!("not in the workload"),
        }
        Ok(0)
    }

    fn clear(&mut self, t: &Trade) -> Result<usize, Reject> {
        if self.trades.contains_key(&t.trade_id) {
            return Err(Reject::Duplicate);
        }
        let &(spec, mark) = self.instruments.get(&t.instrument).ok_or(Reject::UnknownInstrument)?;
        assert!(mark != 0, "explicit marks in this workload");
        let mut breaches = 0;
        let mut books = [Book::default(); 2];
        let mut totals = [Totals::default(); 2];
        for (leg, (acct, d)) in [(t.buy, t.qty), (t.sell, -t.qty)].into_iter().enumerate() {
            let old = self.positions.get(&(acct, t.instrument)).copied().unwrap_or_default();
            books[leg] = old.fill(d, t.price, spec.multiplier).ok_or(Reject::Overflow)?;
            let a = self.accounts.get(&acct).ok_or(Reject::UnknownAccount)?;
            let v = |book| Valued {
                book,
                mark,
                multiplier: spec.multiplier,
                margin_bps: spec.margin_bps,
            };
            let mut sums = Sums::of(&a.totals);
            sums.sub(&v(old).terms().ok_or(Reject::Overflow)?);
            sums.add(&v(books[leg]).terms().ok_or(Reject::Overflow)?);
            totals[leg] = sums.totals().ok_or(Reject::Overflow)?;
            let equity = a.collateral + totals[leg].realized + totals[leg].unrealized;
            breaches +=
                usize::from(a.spec.max_position != 0 && books[leg].qty.abs() > a.spec.max_position);
            breaches += usize::from(equity < totals[leg].margin);
        }
        for (leg, acct) in [t.buy, t.sell].into_iter().enumerate() {
            self.positions.insert((acct, t.instrument), books[leg]);
            self.accounts.get_mut(&acct).expect("checked").totals = totals[leg];
        }
        self.trades.insert(t.trade_id, *t);
        Ok(breaches)
    }
}

// ---- measurement ----------------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Run {
    ns_per_op: f64,
    hist: Option<Histogram<u64>>,
    /// After the batched runs (ms): `state_hash()` read after `hashed` trades (it hashes the
    /// records of the positions and trades changed since the last read); a snapshot's copy
    /// (`export_into`) alone, and with the hash of the `n` trades since (`export_hashed`).
    reads: Option<Reads>,
}

struct Reads {
    hashed: usize,
    hash_ms: f64,
    export_ms: f64,
    export_hashed_ms: f64,
}

/// Time `f` in ms.
fn ms(f: impl FnOnce()) -> f64 {
    let t0 = Instant::now();
    f();
    t0.elapsed().as_secs_f64() * 1e3
}

fn bench_engine(
    sc: Scale,
    setup: &[Command],
    prefill: &[Trade],
    zipf: Option<&Zipf>,
    batched: bool,
    sz: &Sizes,
) -> Run {
    let first = prefill.len() as u64 + 1;
    let mut sm = build_settled(sc, setup, (prefill.len() + sz.n * (sz.reps + 1)) as u32);
    let (mut hash_ms, mut export_ms, mut export_hashed_ms) = (0.0, 0.0, 0.0);
    let mut snap = novate_core::Snapshot::default();
    let mut rng = SplitMix(if zipf.is_some() { 7 } else { 3 });
    let mut times = Vec::new();
    let mut hist = latency_histogram();
    for rep in 0..=sz.reps {
        let work = workload(&mut rng, prefill, sz.n, zipf, first + (rep * sz.n) as u64);
        let mut ok = 0usize;
        let t0 = Instant::now();
        if batched {
            for chunk in work.chunks(BATCH) {
                sm.apply_batch(chunk, |_, r| ok += usize::from(r.is_ok()));
            }
        } else if rep == sz.reps {
            // The last repetition times every command (adds the timer's own cost, reported).
            let timer = Timer::default();
            for s in &work {
                let t = timer.start();
                ok += usize::from(sm.apply(&s.cmd, s.seq, s.ts).is_ok());
                hist.record(timer.ns_since(t)).expect("in range");
            }
        } else {
            for s in &work {
                ok += usize::from(sm.apply(&s.cmd, s.seq, s.ts).is_ok());
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        if batched && rep + 1 == sz.reps {
            hash_ms = ms(|| {
                black_box(sm.state_hash());
            });
        }
        if batched && rep == sz.reps {
            sm.export_into(&mut snap); // sizes the buffers (allocation and page faults)
            export_ms = ms(|| sm.export_into(&mut snap));
            export_hashed_ms = ms(|| {
                black_box(sm.export_hashed(&mut snap));
            });
        }
        assert_eq!(ok, work.len(), "every benchmark trade must clear");
        if rep < sz.reps && rep > 0 || sz.reps == 1 {
            times.push(dt * 1e9 / work.len() as f64);
        }
    }
    let reads =
        batched.then_some(Reads { hashed: sz.n * sz.reps, hash_ms, export_ms, export_hashed_ms });
    Run { ns_per_op: median(times), hist: (!batched).then_some(hist), reads }
}

/// `apply_batch` split in its two stages, each timed per batch of `BATCH`: the lookups
/// (`resolve_ahead`) and the rest (`apply_resolved`, which equals `apply_batch` given them).
/// The second is what the state machine's core would do if another core made the lookups, as
/// the pipeline's sequencer already hashes the keys (`Prepared`). ns per trade of each, the
/// median of the repetitions.
fn bench_split(
    sc: Scale,
    setup: &[Command],
    prefill: &[Trade],
    zipf: Option<&Zipf>,
    sz: &Sizes,
) -> (f64, f64) {
    let first = prefill.len() as u64 + 1;
    let mut sm = build_settled(sc, setup, (prefill.len() + sz.n * (sz.reps + 1)) as u32);
    let mut rng = SplitMix(if zipf.is_some() { 7 } else { 3 });
    let (mut lookups, mut rest) = (Vec::new(), Vec::new());
    let mut hints = Vec::with_capacity(BATCH);
    let timer = Timer::default();
    for rep in 0..=sz.reps {
        let work = workload(&mut rng, prefill, sz.n, zipf, first + (rep * sz.n) as u64);
        let (mut ok, mut look_ns, mut apply_ns) = (0usize, 0u64, 0u64);
        for chunk in work.chunks(BATCH) {
            let t = timer.start();
            sm.resolve_ahead(chunk, &mut hints);
            look_ns += timer.ns_since(t);
            let t = timer.start();
            sm.apply_resolved(chunk, &hints, |_, r| ok += usize::from(r.is_ok()));
            apply_ns += timer.ns_since(t);
        }
        assert_eq!(ok, work.len(), "every benchmark trade must clear");
        if rep < sz.reps && rep > 0 || sz.reps == 1 {
            lookups.push(look_ns as f64 / work.len() as f64);
            rest.push(apply_ns as f64 / work.len() as f64);
        }
    }
    (median(lookups), median(rest))
}

/// `apply_batch_on`: `apply_batch` with its lookups made on a [`LookupStage`]'s thread
/// (pinned to CPU 1, this thread to CPU 0 while it runs), in batches of `batch`: ns per trade,
/// the median of the repetitions. The stage is woken before each timed repetition (by a few
/// CheckOrders, which change nothing): an idle stage parks.
fn bench_staged(
    sc: Scale,
    setup: &[Command],
    prefill: &[Trade],
    zipf: Option<&Zipf>,
    sz: &Sizes,
    batch: usize,
) -> f64 {
    let first = prefill.len() as u64 + 1;
    let mut sm = build_settled(sc, setup, (prefill.len() + sz.n * (sz.reps + 1)) as u32);
    let mut stage = LookupStage::new(|| {
        let _ = novate_mem::cpu::pin_current_thread(1);
    })
    .expect("the lookup stage's thread");
    let _ = novate_mem::cpu::pin_current_thread(0);
    let mut rng = SplitMix(if zipf.is_some() { 7 } else { 3 });
    let mut times = Vec::new();
    // NOVATE_BENCH_AB: odd repetitions in batches of `batch`, even ones of one job each;
    // NOVATE_BENCH_AB=head: all in batches of `BATCH`, even ones with no head (every lookup
    // made by the stage).
    let ab = std::env::var("NOVATE_BENCH_AB").ok();
    let head_ab = ab.as_deref() == Some("head");
    let mut ab_times = [Vec::new(), Vec::new()];
    for rep in 0..=sz.reps {
        let even = ab.is_some() && rep % 2 == 0;
        let size = match (head_ab, even) {
            (true, _) => BATCH,
            (false, true) => JOB_MAX,
            (false, false) => batch,
        };
        stage.force_head(if head_ab && even { Some(0) } else { None });
        let work = workload(&mut rng, prefill, sz.n, zipf, first + (rep * sz.n) as u64);
        let orders: Vec<Sequenced> = work[..BATCH]
            .iter()
            .map(|s| match s.cmd {
                Command::ClearTrade(t) => Sequenced {
                    cmd: Command::CheckOrder {
                        account: t.buy,
                        instrument: t.instrument,
                        side: Side::Buy,
                        qty: 1,
                        price: t.price,
                    },
                    ..*s
                },
                cmd => Sequenced { cmd, ..*s },
            })
            .collect();
        sm.apply_batch_on(&mut stage, &orders, |_, _, _| {});
        let mut ok = 0usize;
        let t0 = Instant::now();
        for chunk in work.chunks(size) {
            sm.apply_batch_on(&mut stage, chunk, |_, r, _| ok += usize::from(r.is_ok()));
        }
        let dt = t0.elapsed().as_secs_f64();
        assert_eq!(ok, work.len(), "every benchmark trade must clear");
        if rep < sz.reps && rep > 0 || sz.reps == 1 {
            times.push(dt * 1e9 / work.len() as f64);
        }
        if ab.is_some() && rep > 0 {
            ab_times[rep % 2].push(dt * 1e9 / work.len() as f64);
        }
    }
    for (odd, t) in ab_times.iter_mut().enumerate().filter(|_| ab.is_some()) {
        t.sort_by(f64::total_cmp);
        let t: Vec<String> = t.iter().map(|x| format!("{x:.1}")).collect();
        let side = match (head_ab, odd == 1) {
            (true, true) => format!("batches of {BATCH}, a head"),
            (true, false) => format!("batches of {BATCH}, no head"),
            (false, true) => format!("batches of {batch}"),
            (false, false) => format!("batches of {JOB_MAX}"),
        };
        println!("  {side}: {} ns/op (sorted)", t.join(", "));
    }
    let _ = novate_mem::cpu::set_affinity(&(0..novate_mem::cpu::cpus_online()).collect::<Vec<_>>());
    median(times)
}

fn bench_peer(
    setup: &[Command],
    prefill: &[Trade],
    zipf: Option<&Zipf>,
    sz: &Sizes,
    check: &StateMachine,
) -> Run {
    let mut peer = Peer::default();
    // Room for every trade id of the run up front, as novate's trade index has.
    peer.trades.reserve(prefill.len() + sz.n * (sz.reps + 1));
    for c in setup {
        peer.apply(c).expect("peer setup");
    }
    // The peer must compute the same positions as the engine for the same setup.
    for t in prefill.iter().step_by(997) {
        let p = check.position(t.buy, t.instrument).expect("engine position");
        let q = peer.positions[&(t.buy, t.instrument)];
        assert_eq!((p.qty, p.cost, p.realized), (q.qty, q.cost, q.realized), "peer disagrees");
    }
    let first = prefill.len() as u64 + 1;
    let mut rng = SplitMix(if zipf.is_some() { 7 } else { 3 });
    let mut times = Vec::new();
    let mut hist = latency_histogram();
    let timer = Timer::default();
    for rep in 0..=sz.reps {
        let work = workload(&mut rng, prefill, sz.n, zipf, first + (rep * sz.n) as u64);
        let t0 = Instant::now();
        for s in &work {
            let t = timer.start();
            black_box(peer.apply(&s.cmd).expect("peer clears"));
            if rep == sz.reps {
                hist.record(timer.ns_since(t)).expect("in range");
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        if rep < sz.reps && rep > 0 || sz.reps == 1 {
            times.push(dt * 1e9 / work.len() as f64);
        }
    }
    Run { ns_per_op: median(times), hist: Some(hist), reads: None }
}

/// Bytes of the memory-floor table: 4x this machine's 32 MiB L3 and larger than the 1M book's
/// positions (64 B each) plus their index (16 B a slot, two slots a position), so random lines
/// in it come from DRAM as the 1M-book trades' do.
const FLOOR_TABLE_BYTES: usize = 128 << 20;

/// Lines of a trade on the uniform 1M book that come from DRAM: its two positions, their two
/// position-index slots, and its two accounts' hot lines, one each (100k accounts' 6.4 MB of
/// hot lines do not stay in the L3 next to ~100 MB of positions and indices: without their
/// prefetch a trade took ~130 ns longer, PERFORMANCE.md, eighteenth session; an account's funds
/// fit in one line since the twenty-second). Not counted: its trade-id slot, which it shares with
/// the three ids before or after it (`SeqKey`: the bench's ids are consecutive, as a venue's
/// are). A batched trade between holders reads no account-index slot: it finds a holder's row
/// in its position (PERFORMANCE.md, twenty-first session).
const FLOOR_LINES: usize = 6;

/// Rounds of independent compute per item for the floor "behind compute": four chains of
/// multiplies, rotates and adds (117-129 ns an item here), about a cache-resident trade's time.
const FLOOR_WORK: u32 = 100;

/// Items the other core's prefetcher runs ahead of the measured core in the two-core memory
/// floor: far enough that its lines have arrived when the measured core prefetches them
/// (128-512 measured the same here), near enough that they are still in its 1 MiB L2 (256
/// items of 6 lines are 96 KiB).
const HELPER_LEAD: usize = 256;

/// The memory floor of a trade on a book larger than the caches: `items` random 64-byte lines
/// of a `FLOOR_TABLE_BYTES` table read and written, `lines` per item, each prefetched
/// `2 * PREFETCH_DISTANCE` items ahead as `apply_batch` prefetches, then `work` rounds of
/// compute that depends on no line (0: none): ns per item, the median of `reps`. With no work,
/// what no layout touching that many random lines can beat here; with work, less the same work
/// alone (`lines` 0), what the lines still cost when there is other work to hide them behind.
/// With `helper`, the machine's other core prefetches every item's lines [`HELPER_LEAD`] items
/// ahead of this one (the thread is pinned to CPU 0 and the helper to CPU 1 while timed): what
/// the lines cost when both cores fetch them, as a lookup stage on the other core would.
fn memory_floor(lines: usize, items: usize, reps: usize, work: u32, helper: bool) -> f64 {
    let n = FLOOR_TABLE_BYTES / 64;
    // SAFETY: all-zero bits are a valid [u64; 8].
    let mut table: Box<[[u64; 8]]> = unsafe { novate_core::map::zeroed_slice(n) };
    table.iter_mut().for_each(|l| l[1] = 1); // touch every page before timing
    let mut rng = SplitMix(11);
    let idx: Vec<u32> = (0..items * lines).map(|_| rng.below(n as u64) as u32).collect();
    let ahead = 2 * PREFETCH_DISTANCE;
    let mut times = Vec::new();
    let mut acc = 0u64;
    let mut chains = [1u64, 2, 3, 4];
    // The helper only prefetches (a hint, not an access): it holds the table's address, never a
    // reference into it.
    let base = table.as_ptr() as usize;
    // On a line of its own: this thread's other writes do not take it from the helper.
    let progress = &Padded(AtomicUsize::new(0)).0;
    let started = &Padded(AtomicUsize::new(0)).0;
    if helper {
        let _ = novate_mem::cpu::pin_current_thread(0);
    }
    for _ in 0..=reps {
        progress.store(0, Ordering::Relaxed);
        started.store(0, Ordering::Relaxed);
        std::thread::scope(|s| {
            if helper {
                s.spawn(|| prefetch_ahead(base, &idx, lines, progress, started));
                // Timed once the helper runs (a new thread's first run can take milliseconds).
                while started.load(Ordering::Acquire) == 0 {
                    std::hint::spin_loop();
                }
            }
            let t0 = Instant::now();
            for i in 0..items {
                if i % 16 == 0 {
                    // Relaxed: it only paces the helper; no data is passed through it.
                    progress.store(i, Ordering::Relaxed);
                }
                for &j in idx.get((i + ahead) * lines..(i + ahead + 1) * lines).unwrap_or(&[]) {
                    novate_core::map::prefetch(&table[j as usize]);
                }
                for &j in &idx[i * lines..(i + 1) * lines] {
                    let line = &mut table[j as usize];
                    line[0] = line[0].wrapping_add(acc);
                    acc ^= line[1];
                }
                let [mut a, mut b, mut c, mut d] = chains;
                for _ in 0..work {
                    a = a.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    b = b.rotate_left(7) ^ a;
                    c = c.wrapping_add(b >> 3);
                    d ^= c.wrapping_mul(3);
                }
                chains = black_box([a, b, c, d]);
            }
            times.push(t0.elapsed().as_secs_f64() * 1e9 / items as f64);
            progress.store(usize::MAX, Ordering::Relaxed); // the helper's loop ends
        });
    }
    if helper {
        let _ =
            novate_mem::cpu::set_affinity(&(0..novate_mem::cpu::cpus_online()).collect::<Vec<_>>());
    }
    black_box(acc);
    median(times[1..].to_vec()) // the first round warms the TLB
}

/// A value on cache lines of its own (two: the adjacent-line prefetcher pairs them).
#[repr(align(128))]
struct Padded<T>(T);

/// The two-core memory floor's helper (on CPU 1): prefetches each item's lines of the table at
/// `base`, at most [`HELPER_LEAD`] items ahead of the measured core's `progress`, until it has
/// gone through every item or `progress` is `usize::MAX`; it says `started` when running.
fn prefetch_ahead(
    base: usize,
    idx: &[u32],
    lines: usize,
    progress: &AtomicUsize,
    started: &AtomicUsize,
) {
    let _ = novate_mem::cpu::pin_current_thread(1);
    started.store(1, Ordering::Release);
    for (i, item) in idx.chunks_exact(lines).enumerate() {
        loop {
            let at = progress.load(Ordering::Relaxed);
            if at == usize::MAX {
                return;
            }
            if i <= at + HELPER_LEAD {
                break;
            }
            std::hint::spin_loop();
        }
        for &j in item {
            novate_core::map::prefetch_ptr((base + 64 * j as usize) as *const u8);
        }
    }
}

/// The median cost of one timing of nothing: with [`Timer`] (the per-command timer) and, for
/// comparison, with `Instant`.
fn timer_overhead_ns() -> (u64, u64) {
    let (mut tsc, mut os) = (latency_histogram(), latency_histogram());
    let timer = Timer::default();
    for _ in 0..100_000 {
        let t = timer.start();
        tsc.record(black_box(timer.ns_since(t))).expect("in range");
        let t = Instant::now();
        os.record(black_box(t.elapsed()).as_nanos() as u64).expect("in range");
    }
    (tsc.value_at_quantile(0.5), os.value_at_quantile(0.5))
}

fn main() {
    let sz = sizes();
    let (tsc, os) = timer_overhead_ns();
    println!(
        "timer overhead: p50 {tsc} ns (TSC pair, included in the per-command percentiles; an \
         Instant pair {os} ns)"
    );
    let mut big = None;
    let only = std::env::var("NOVATE_BENCH_SCALE").ok();
    for sc in SCALES {
        if only.as_deref().is_some_and(|o| o != sc.name) {
            continue;
        }
        let mut rng = SplitMix(1);
        let t0 = Instant::now();
        let (setup, prefill) = setup_commands(sc, &mut rng);
        let probe = build(sc, &setup, prefill.len() as u32 + 1);
        println!(
            "core/{} setup: {} accounts, {} instruments, {} positions, {} prefill trades ({:.1}s)",
            sc.name,
            probe.accounts_len(),
            probe.instruments_len(),
            probe.positions_len(),
            prefill.len(),
            t0.elapsed().as_secs_f64()
        );
        let zipf = Zipf::new(prefill.len(), 0.99);
        let mut uniform_batch = f64::NAN;
        for (dist, z) in [("uniform", None), ("zipf", Some(&zipf))] {
            let name = format!("{}/{dist}", sc.name);
            if std::env::var_os("NOVATE_BENCH_AB").is_some() {
                println!("clear_trade/{name}/novate apply_batch_on, A/B:");
                bench_staged(sc, &setup, &prefill, z, &Sizes { n: 100_000, reps: 21 }, LONG_BATCH);
                continue;
            }
            let one = bench_engine(sc, &setup, &prefill, z, false, &sz);
            let batch = bench_engine(sc, &setup, &prefill, z, true, &sz);
            let peer = bench_peer(&setup, &prefill, z, &sz, &probe);
            let (lookups, rest) = bench_split(sc, &setup, &prefill, z, &sz);
            let staged = bench_staged(sc, &setup, &prefill, z, &sz, BATCH);
            let staged_long = bench_staged(sc, &setup, &prefill, z, &sz, LONG_BATCH);
            if z.is_none() {
                uniform_batch = batch.ns_per_op;
            }
            println!(
                "clear_trade/{name}/novate apply: {:.1} ns/op ({:.2} M/s)",
                one.ns_per_op,
                1e3 / one.ns_per_op
            );
            println!(
                "clear_trade/{name}/novate apply_batch({BATCH}): {:.1} ns/op ({:.2} M/s)",
                batch.ns_per_op,
                1e3 / batch.ns_per_op
            );
            println!(
                "clear_trade/{name}/novate apply_batch split in two stages: lookups {lookups:.1} \
                 ns/op, the rest {rest:.1} ns/op ({:.2} M/s; apply_batch / the rest = {:.2}x)",
                1e3 / rest,
                batch.ns_per_op / rest
            );
            println!(
                "clear_trade/{name}/novate apply_batch_on (lookups on the other core): {staged:.1} \
                 ns/op ({:.2} M/s); apply_batch / apply_batch_on = {:.2}x, peer / apply_batch_on \
                 = {:.2}x",
                1e3 / staged,
                batch.ns_per_op / staged,
                peer.ns_per_op / staged
            );
            println!(
                "clear_trade/{name}/novate apply_batch_on in batches of {LONG_BATCH} (the \
                 engine's batch_max; each job looked up while the one before is applied): \
                 {staged_long:.1} ns/op ({:.2} M/s); peer / it = {:.2}x",
                1e3 / staged_long,
                peer.ns_per_op / staged_long
            );
            let r = batch.reads.as_ref().expect("batched");
            println!(
                "clear_trade/{name}/novate state_hash after {} trades: {:.1} ms ({:.1} ns a \
                 trade: the records they changed, hashed when read); a snapshot's export {:.1} \
                 ms, with the hash of the {} trades since {:.1} ms",
                r.hashed,
                r.hash_ms,
                r.hash_ms * 1e6 / r.hashed as f64,
                r.export_ms,
                sz.n,
                r.export_hashed_ms
            );
            println!(
                "clear_trade/{name}/peer HashMap: {:.1} ns/op ({:.2} M/s)",
                peer.ns_per_op,
                1e3 / peer.ns_per_op
            );
            println!(
                "{}",
                report(
                    &format!("clear_trade/{name}/novate apply latency"),
                    one.hist.as_ref().expect("hist")
                )
            );
            println!(
                "{}",
                report(
                    &format!("clear_trade/{name}/peer latency"),
                    peer.hist.as_ref().expect("hist")
                )
            );
            println!(
                "ratio clear_trade/{name}: peer/novate apply = {:.2}x, peer/novate apply_batch = {:.2}x, apply/apply_batch = {:.2}x",
                peer.ns_per_op / one.ns_per_op, peer.ns_per_op / batch.ns_per_op, one.ns_per_op / batch.ns_per_op
            );
        }
        if sc.name == "1m" {
            let one = memory_floor(1, sz.n, sz.reps, 0, false);
            let floor = memory_floor(FLOOR_LINES, sz.n, sz.reps, 0, false);
            let work = memory_floor(0, sz.n, sz.reps, FLOOR_WORK, false);
            let behind = memory_floor(FLOOR_LINES, sz.n, sz.reps, FLOOR_WORK, false);
            // A layout that would touch fewer lines: a position found in its own hash table (no
            // index slot: 4).
            let four = memory_floor(4, sz.n, sz.reps, 0, false);
            let four_behind = memory_floor(4, sz.n, sz.reps, FLOOR_WORK, false);
            // Both cores fetching the lines (a lookup stage on the other core).
            let two_cores = memory_floor(FLOOR_LINES, sz.n, sz.reps, 0, true);
            let two_cores_four = memory_floor(4, sz.n, sz.reps, 0, true);
            println!(
                "memory floor (random 64 B lines of a {} MiB table, read and written, prefetched \
                 {} ahead, no computation): 1 line {one:.1} ns; {FLOOR_LINES} lines (a 1M-book \
                 trade's lines from DRAM) {floor:.1} ns/trade ({:.2} M/s); \
                 1m/uniform apply_batch / floor = {:.2}x",
                FLOOR_TABLE_BYTES >> 20,
                2 * PREFETCH_DISTANCE,
                1e3 / floor,
                uniform_batch / floor
            );
            println!(
                "memory floor behind compute: {FLOOR_LINES} lines an item with {work:.1} ns of \
                 independent compute an item take {behind:.1} ns: the lines add {:.1} ns \
                 (alone {floor:.1})",
                behind - work
            );
            println!(
                "memory floor of another layout: 4 lines (a position in its own table, no index \
                 slot) {four:.1} ns, behind compute +{:.1} ns",
                four_behind - work
            );
            println!(
                "memory floor on two cores (the other core prefetching every line {HELPER_LEAD} \
                 items ahead): {FLOOR_LINES} lines {two_cores:.1} ns (one core {floor:.1}), 4 \
                 lines {two_cores_four:.1} ns (one core {four:.1}); 1m/uniform apply_batch / \
                 two-core floor = {:.2}x",
                uniform_batch / two_cores
            );
            big = Some((probe, prefill, setup));
        }
    }
    if let Some((probe, prefill, setup)) = big {
        criterion_part(SCALES[0], &probe, &prefill, &setup);
    }
}

/// The same CheckOrders one by one (`apply`) and in batches of `BATCH` (`apply_batch`, as the
/// pipeline applies them), each the median of 5 passes: ns per order and the ratio. Both
/// must accept and reject the same orders.
fn check_order_batched(sm: &mut StateMachine, orders: &[Command]) {
    let seqd: Vec<Sequenced> =
        (1..).zip(orders).map(|(seq, &cmd)| Sequenced { seq, ts: 0, cmd }).collect();
    let per_order = |t: Instant| t.elapsed().as_secs_f64() * 1e9 / seqd.len() as f64;
    let (mut lone_ok, mut batch_ok) = (0, 0);
    let lone = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for s in &seqd {
                    lone_ok += usize::from(sm.apply(&s.cmd, s.seq, s.ts).is_ok());
                }
                per_order(t)
            })
            .collect(),
    );
    let batched = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for chunk in seqd.chunks(BATCH) {
                    sm.apply_batch(chunk, |_, r| batch_ok += usize::from(r.is_ok()));
                }
                per_order(t)
            })
            .collect(),
    );
    assert_eq!(lone_ok, batch_ok, "apply and apply_batch must accept the same orders");
    println!(
        "check_order/novate apply: {lone:.1} ns/op ({:.2} M/s); apply_batch({BATCH}): \
         {batched:.1} ns/op ({:.2} M/s); apply/apply_batch = {:.2}x ({} of {} accepted)",
        1e3 / lone,
        1e3 / batched,
        lone / batched,
        lone_ok / 5,
        seqd.len()
    );
}

/// The median of `passes` passes over every instrument, each applying `cmd(instrument, pass)`
/// (which must be accepted): ns a pass.
fn instrument_passes(
    sm: &mut StateMachine,
    instruments: u32,
    passes: usize,
    cmd: impl Fn(InstrumentId, usize) -> Command,
) -> f64 {
    let mut seq = sm.last_seq();
    let times = (0..passes)
        .map(|pass| {
            let t = Instant::now();
            for instrument in 1..=instruments {
                seq += 1;
                let c = cmd(instrument, pass);
                assert!(sm.apply(&c, seq, 0).is_ok(), "{c:?} is accepted");
            }
            t.elapsed().as_secs_f64() * 1e9
        })
        .collect();
    median(times)
}

/// A new mark for every instrument in turn, each re-valuing all its holders (~1k on the 1M
/// book): ns per MarkPrice and per holder, the median of 5 passes (the marks alternate
/// between 101 and 100, so every pass moves every mark). Then the day's settlement of the
/// whole book: a SettlementPrice for every instrument (each settles every holder's
/// variation, in account order), the median of 3 passes.
fn mark_prices(sm: &mut StateMachine, instruments: u32) {
    let holders = sm.positions_len() as f64;
    let pass = instrument_passes(sm, instruments, 5, |instrument, pass| {
        let price = if pass % 2 == 0 { 101 } else { 100 } * PRICE_SCALE;
        Command::MarkPrice { instrument, price }
    });
    println!(
        "mark_price/novate: {:.1} us a MarkPrice ({:.0} holders each on average), {:.1} ns a \
         holder re-valued",
        pass / 1e3 / f64::from(instruments),
        holders / f64::from(instruments),
        pass / holders
    );
    let pass = instrument_passes(sm, instruments, 3, |instrument, pass| {
        let price = if pass % 2 == 0 { 102 } else { 99 } * PRICE_SCALE;
        Command::SettlementPrice { instrument, price }
    });
    println!(
        "settlement_price/novate: {:.1} ms the whole book, {:.1} ns a holder settled",
        pass / 1e6,
        pass / holders
    );
}

fn criterion_part(sc: Scale, sm: &StateMachine, prefill: &[Trade], setup: &[Command]) {
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(20);
    // CheckOrder changes nothing, so it can run against the loaded book again and again.
    let mut sm2 = build(sc, setup, prefill.len() as u32 + 1);
    let orders: Vec<Command> = prefill
        .iter()
        .step_by(7)
        .take(65_536)
        .map(|t| Command::CheckOrder {
            account: t.buy,
            instrument: t.instrument,
            side: Side::Sell,
            qty: 10,
            price: 100 * PRICE_SCALE,
        })
        .collect();
    let mut i = 0;
    c.bench_function("check_order/novate", |b| {
        b.iter(|| {
            i = (i + 1) & (orders.len() - 1);
            black_box(sm2.apply(&orders[i], 1, 0).is_ok())
        })
    });
    let mut hist = latency_histogram();
    let timer = Timer::default();
    for (k, o) in orders.iter().enumerate() {
        let t = timer.start();
        black_box(sm2.apply(o, k as u64, 0).is_ok());
        hist.record(timer.ns_since(t)).expect("in range");
    }
    println!("{}", report("check_order/novate latency", &hist));
    check_order_batched(&mut sm2, &orders);
    mark_prices(&mut sm2, sc.instruments);

    // Batch valuation over ~1M positions: the AVX2 kernel over columns vs its scalar twin over
    // the same columns, and the row-wise (AoS) kernel, all checked equal first.
    let positions: Vec<Valued> =
        (1..=sc.instruments).flat_map(|i| sm.instrument_positions(i)).collect();
    let columns: Columns = positions.iter().collect();
    let want = value_scalar(&positions);
    assert_eq!(value_batch(&positions), want, "kernels must agree");
    assert_eq!(value_columns(&columns), want, "kernels must agree");
    assert_eq!(value_columns_scalar(&columns), want, "kernels must agree");
    println!("valuation over {} positions", positions.len());
    let mut g = c.benchmark_group("valuation_1m");
    g.throughput(criterion::Throughput::Elements(positions.len() as u64));
    g.bench_function("simd", |b| b.iter(|| black_box(value_columns(black_box(&columns)))));
    g.bench_function("scalar", |b| b.iter(|| black_box(value_columns_scalar(black_box(&columns)))));
    g.bench_function("rows", |b| b.iter(|| black_box(value_batch(black_box(&positions)))));
    g.finish();
    let time = |f: &dyn Fn() -> Option<Totals>, reps: usize| {
        median(
            (0..9)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..reps {
                        black_box(f());
                    }
                    t.elapsed().as_secs_f64() / reps as f64
                })
                .collect(),
        )
    };
    // Also on 4,096 positions (256 KiB of columns, cache-resident): the kernels without DRAM.
    let small: Columns = positions[..4_096].iter().collect();
    for (label, cols, rows, reps) in
        [("1m", &columns, &positions[..], 1), ("4k (cache)", &small, &positions[..4_096], 200)]
    {
        let n = cols.len() as f64;
        let simd = time(&|| value_columns(cols), reps);
        let scalar = time(&|| value_columns_scalar(cols), reps);
        let aos = time(&|| value_batch(rows), reps);
        println!(
            "valuation {label}: simd {:.2} ns/position, scalar twin {:.2}, rows {:.2}; \
             ratio scalar/simd = {:.2}x, rows/simd = {:.2}x",
            simd * 1e9 / n,
            scalar * 1e9 / n,
            aos * 1e9 / n,
            scalar / simd,
            aos / simd
        );
    }
}
