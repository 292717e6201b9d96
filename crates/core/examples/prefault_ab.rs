//! Fresh state machines alternately prefaulted and not, each clearing the same 1M trades with
//! `apply_batch` (1,000 accounts, one instrument, a 4M-trade index: the engine bench's shape):
//! `cargo run --release -p novate-core --example prefault_ab [rounds]`.

mod support;
use novate_core::*;
use std::time::Instant;

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let limits = Limits {
        accounts_max: 1_001,
        instruments_max: 16,
        positions_max: 20_000,
        trades_max: 4_000_000,
    };
    let n = 1_000_000u64;
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        let prefault = r % 2 == 0;
        let mut book = support::Book::new(limits, 1_000, 1);
        if prefault {
            book.sm.prefault();
        }
        let mut seq = book.sm.last_seq();
        let batch: Vec<Sequenced> = (0..n)
            .map(|i| {
                let buy = 1 + (i * 7919) % 1_000;
                seq += 1;
                let t = Trade {
                    trade_id: i + 1,
                    buy,
                    sell: 1 + buy % 1_000,
                    instrument: 1,
                    qty: 1 + (i % 10) as i64,
                    price: (99 + (i % 3) as i64) * PRICE_SCALE,
                    trade_date: 20261125,
                };
                Sequenced { seq, ts: 0, cmd: Command::ClearTrade(t) }
            })
            .collect();
        let t = Instant::now();
        let mut ok = 0u64;
        for chunk in batch.chunks(1024) {
            book.sm.apply_batch(chunk, |_, r| ok += u64::from(r.is_ok()));
        }
        let rate = n as f64 / t.elapsed().as_secs_f64() / 1e6;
        assert_eq!(ok, n);
        println!("round {r} prefault={prefault}: {rate:.2} M trades/s");
        if prefault {
            on.push(rate)
        } else {
            off.push(rate)
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("median: prefaulted {:.2} M trades/s, lazy {:.2} M trades/s", median(on), median(off));
}
