//! Wire codecs (issue 3): decode and encode of one ClearTrade in SBE (novate-wire), FIX 4.4
//! tag=value (novate-wire's parser and writer) and serde + bincode 1 (a general-purpose peer),
//! on the same 256 distinct trades in the same run.
//!
//! Two measurements per codec:
//! - our loop: SAMPLES batches of BATCH messages, each batch timed once (a single message is
//!   shorter than the clock's resolution), giving the median and p99 of ns per message;
//! - criterion (short measurement time) for the same operations, as a cross-check.
//!
//! Every decode checks its result (the decoded trades are summed and compared), so the work
//! cannot be optimized away. Run: `cargo bench -p novate-benches --bench wire`
//! (NOVATE_BENCH_QUICK=1 for a smoke run).

use criterion::{black_box, Criterion};
use hdrhistogram::Histogram;
use novate_benches::SplitMix;
use novate_core::{Command, Trade};
use novate_wire::convert::encode_clear_trade;
use novate_wire::fix;
use novate_wire::ClearTradeDecoder;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

const BATCH: usize = 256;

/// The peer's message: the same fields as the SBE ClearTrade.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
struct TradeMsg {
    request_id: u64,
    trade_id: u64,
    buy: u64,
    sell: u64,
    qty: i64,
    price: i64,
    instrument: u32,
    trade_date: u32,
}

struct Data {
    trades: Vec<(u64, Trade)>,
    sbe: Vec<[u8; 64]>,
    fix: Vec<Vec<u8>>,
    bincode: Vec<Vec<u8>>,
}

fn data() -> Data {
    let mut rng = SplitMix(3);
    let trades: Vec<(u64, Trade)> = (0..BATCH as u64)
        .map(|i| {
            let t = Trade {
                trade_id: 1_000_000 + i,
                buy: 1 + rng.below(100_000),
                sell: 100_001 + rng.below(100_000),
                instrument: 1 + rng.below(1000) as u32,
                qty: 1 + rng.below(10_000) as i64,
                price: 100_000_000 + rng.below(100_000_000_000) as i64,
                trade_date: 20260115,
            };
            (i + 1, t)
        })
        .collect();
    let sbe = trades
        .iter()
        .map(|(r, t)| {
            let mut b = [0u8; 64];
            encode_clear_trade(&mut b, *r, t).expect("fits");
            b
        })
        .collect();
    let fix = trades
        .iter()
        .map(|(r, t)| {
            let mut b = [0u8; 512];
            let n = fix::write_trade_capture_report(&mut b, *r, t).expect("fits");
            b[..n].to_vec()
        })
        .collect();
    let bincode =
        trades.iter().map(|(r, t)| bincode::serialize(&peer(*r, t)).expect("serializes")).collect();
    Data { trades, sbe, fix, bincode }
}

fn peer(request_id: u64, t: &Trade) -> TradeMsg {
    TradeMsg {
        request_id,
        trade_id: t.trade_id,
        buy: t.buy,
        sell: t.sell,
        qty: t.qty,
        price: t.price,
        instrument: t.instrument,
        trade_date: t.trade_date,
    }
}

/// A checksum over every field, so a decode that skipped a field would not match.
fn fold(acc: u64, request_id: u64, t: &Trade) -> u64 {
    acc.wrapping_mul(31)
        .wrapping_add(request_id ^ t.trade_id ^ t.buy.rotate_left(7) ^ t.sell.rotate_left(13))
        .wrapping_add(
            (t.qty as u64)
                ^ (t.price as u64).rotate_left(3)
                ^ u64::from(t.instrument)
                ^ u64::from(t.trade_date),
        )
}

#[inline(never)]
fn sbe_decode_batch(d: &Data) -> u64 {
    let mut acc = 0;
    for b in &d.sbe {
        let m = ClearTradeDecoder::wrap(black_box(b)).expect("valid");
        acc = fold(acc, m.request_id(), &m.trade());
    }
    acc
}

#[inline(never)]
fn sbe_dispatch_batch(d: &Data) -> u64 {
    let mut acc = 0;
    for b in &d.sbe {
        let m = novate_wire::decode_message(black_box(b)).expect("valid");
        if let Some((r, Command::ClearTrade(t))) = m.command() {
            acc = fold(acc, r, &t);
        }
    }
    acc
}

#[inline(never)]
fn fix_decode_batch(d: &Data) -> u64 {
    let mut acc = 0;
    for b in &d.fix {
        let p = fix::parse(black_box(b)).expect("valid");
        if let Command::ClearTrade(t) = p.command {
            acc = fold(acc, p.request_id, &t);
        }
    }
    acc
}

#[inline(never)]
fn bincode_decode_batch(d: &Data) -> u64 {
    let mut acc = 0;
    for b in &d.bincode {
        let m: TradeMsg = bincode::deserialize(black_box(b)).expect("valid");
        let t = Trade {
            trade_id: m.trade_id,
            buy: m.buy,
            sell: m.sell,
            instrument: m.instrument,
            qty: m.qty,
            price: m.price,
            trade_date: m.trade_date,
        };
        acc = fold(acc, m.request_id, &t);
    }
    acc
}

#[inline(never)]
fn sbe_encode_batch(d: &Data, out: &mut [u8; 64]) -> usize {
    let mut n = 0;
    for (r, t) in &d.trades {
        n += encode_clear_trade(black_box(&mut out[..]), *r, black_box(t)).expect("fits");
        black_box(&out);
    }
    n
}

#[inline(never)]
fn fix_encode_batch(d: &Data, out: &mut [u8; 512]) -> usize {
    let mut n = 0;
    for (r, t) in &d.trades {
        n += fix::write_trade_capture_report(black_box(&mut out[..]), *r, black_box(t))
            .expect("fits");
        black_box(&out);
    }
    n
}

#[inline(never)]
fn bincode_encode_batch(d: &Data, out: &mut [u8; 64]) -> usize {
    let mut n = 0;
    for (r, t) in &d.trades {
        let mut w = &mut out[..];
        bincode::serialize_into(&mut w, &peer(*r, black_box(t))).expect("fits");
        n += 64 - w.len();
        black_box(&out);
    }
    n
}

/// Median and p99 of ns per message over `samples` timed batches, in hundredths of a ns.
fn measure(samples: usize, mut batch: impl FnMut() -> u64) -> (f64, f64) {
    let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).expect("bounds");
    for _ in 0..samples / 10 {
        black_box(batch());
    }
    for _ in 0..samples {
        let t0 = Instant::now();
        black_box(batch());
        let ns = t0.elapsed().as_nanos() as u64;
        h.record((ns * 100 / BATCH as u64).max(1)).expect("in range");
    }
    (h.value_at_quantile(0.5) as f64 / 100.0, h.value_at_quantile(0.99) as f64 / 100.0)
}

fn summary(d: &Data) {
    let samples = if std::env::var_os("NOVATE_BENCH_QUICK").is_some() { 2_000 } else { 20_000 };
    let want: u64 = d.trades.iter().fold(0, |acc, (r, t)| fold(acc, *r, t));
    assert_eq!(sbe_decode_batch(d), want, "SBE decodes every field");
    assert_eq!(sbe_dispatch_batch(d), want, "SBE dispatch decodes every field");
    assert_eq!(fix_decode_batch(d), want, "FIX decodes every field");
    assert_eq!(bincode_decode_batch(d), want, "bincode decodes every field");

    let sizes =
        (d.sbe[0].len(), d.fix.iter().map(Vec::len).sum::<usize>() / BATCH, d.bincode[0].len());
    let (mut o64, mut o512, mut p64) = ([0u8; 64], [0u8; 512], [0u8; 64]);
    let rows = [
        ("SBE decode (wrap + read all fields)", sizes.0, measure(samples, || sbe_decode_batch(d))),
        (
            "SBE decode via dispatch table -> Command",
            sizes.0,
            measure(samples, || sbe_dispatch_batch(d)),
        ),
        ("FIX 4.4 AE parse -> Command", sizes.1, measure(samples, || fix_decode_batch(d))),
        ("serde + bincode 1 decode", sizes.2, measure(samples, || bincode_decode_batch(d))),
        ("SBE encode", sizes.0, measure(samples, || sbe_encode_batch(d, &mut o64) as u64)),
        ("FIX 4.4 AE write", sizes.1, measure(samples, || fix_encode_batch(d, &mut o512) as u64)),
        (
            "serde + bincode 1 encode",
            sizes.2,
            measure(samples, || bincode_encode_batch(d, &mut p64) as u64),
        ),
    ];
    println!("\nwire: ns per ClearTrade, {samples} batches of {BATCH} distinct messages");
    println!("{:<44} {:>6} {:>10} {:>10}", "codec", "bytes", "median ns", "p99 ns");
    for (name, bytes, (p50, p99)) in &rows {
        println!("{name:<44} {bytes:>6} {p50:>10.2} {p99:>10.2}");
    }
    let r = |a: usize, b: usize| rows[b].2 .0 / rows[a].2 .0;
    println!("ratio FIX parse / SBE decode:        {:>8.1}x  (goal >= 100x)", r(0, 2));
    println!("ratio bincode decode / SBE decode:   {:>8.1}x", r(0, 3));
    println!("ratio FIX write / SBE encode:        {:>8.1}x", r(4, 5));
    println!("ratio bincode encode / SBE encode:   {:>8.1}x", r(4, 6));
    println!(
        "SBE decode median {:.2} ns: goal <= 5 ns {}",
        rows[0].2 .0,
        if rows[0].2 .0 <= 5.0 { "met" } else { "MISSED" }
    );
}

fn main() {
    let d = data();
    summary(&d);
    let quick = std::env::var_os("NOVATE_BENCH_QUICK").is_some();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_millis(if quick { 300 } else { 1500 }))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(20)
        .configure_from_args();
    let mut g = c.benchmark_group("wire (per batch of 256)");
    g.bench_function("sbe_decode", |b| b.iter(|| sbe_decode_batch(&d)));
    g.bench_function("fix_parse", |b| b.iter(|| fix_decode_batch(&d)));
    g.bench_function("bincode_decode", |b| b.iter(|| bincode_decode_batch(&d)));
    let (mut o64, mut o512) = ([0u8; 64], [0u8; 512]);
    g.bench_function("sbe_encode", |b| b.iter(|| sbe_encode_batch(&d, &mut o64)));
    g.bench_function("fix_write", |b| b.iter(|| fix_encode_batch(&d, &mut o512)));
    g.bench_function("bincode_encode", |b| b.iter(|| bincode_encode_batch(&d, &mut o64)));
    g.finish();
    c.final_summary();
}
