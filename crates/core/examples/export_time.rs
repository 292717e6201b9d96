//! Time `export()` and `state_hash()` on a 1M-position book (the snapshot pause):
//! `cargo run --release -p novate-core --example export_time`.

mod support;
use novate_core::*;
use std::time::Instant;

fn main() {
    let (accounts, instruments) = (100_000u64, 1_000u32);
    let limits = Limits {
        accounts_max: 100_000,
        instruments_max: 1_000,
        positions_max: 1_100_000,
        trades_max: 600_000,
    };
    let mut book = support::Book::new(limits, accounts, instruments);
    let mut x = 7u64;
    for trade_id in 1..=500_000u64 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let buy = 1 + (trade_id - 1) % accounts;
        let sell = 1 + (buy + (x >> 33) % (accounts - 1)) % accounts;
        let instrument = 1 + ((x >> 13) % u64::from(instruments)) as u32;
        let t = Trade {
            trade_id,
            buy,
            sell,
            instrument,
            qty: 5,
            price: 100 * PRICE_SCALE,
            trade_date: 20260105,
        };
        assert!(book.apply(Command::ClearTrade(t)), "trade {trade_id} accepted");
    }
    let sm = &mut book.sm;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let snap = sm.export();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(snap.positions.len(), sm.positions_len());
    }
    times.sort_by(f64::total_cmp);
    // Into a reused snapshot (warm buffers): the state machine's pause for a periodic
    // snapshot; the sort into id order happens afterwards on the snapshotter thread.
    let mut reused = sm.export();
    let (mut warm, mut sort) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        sm.export_into(&mut reused);
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        reused.sort();
        sort.push(t.elapsed().as_secs_f64() * 1e3);
    }
    warm.sort_by(f64::total_cmp);
    sort.sort_by(f64::total_cmp);
    assert!(reused == sm.export(), "export_into + sort equals export");
    println!(
        "export_into a reused snapshot: median {:.1} ms (min {:.1}); then sort {:.1} ms",
        warm[2], warm[0], sort[2]
    );
    let t = Instant::now();
    let h = sm.state_hash();
    println!(
        "{} positions: export median {:.1} ms (min {:.1}), state_hash {:.1} ms ({h:016x})",
        sm.positions_len(),
        times[2],
        times[0],
        t.elapsed().as_secs_f64() * 1e3
    );
}
