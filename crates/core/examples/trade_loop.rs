//! A fixed ClearTrade workload for instruction counting (load-independent):
//! `valgrind --tool=callgrind target/release/examples/trade_loop N` for N and 0 trades; the
//! difference divided by N is instructions per ClearTrade on a cache-resident book.
//! `trade_loop N batch` applies the same trades with `apply_batch`, 256 at a time; `held`
//! (after N, with or without `batch`) first opens every account's position in every
//! instrument, so that no trade opens one (the core bench's workload: trades between holders).
//! `order` (after N, with `held`, with or without `batch`) applies a CheckOrder of each
//! trade's buyer instead of the trade: instructions per CheckOrder. `mark` (after N, with
//! `held`) applies N MarkPrices instead, instrument after instrument, each re-valuing the
//! instrument's 1,000 holders: instructions per MarkPrice (over 1,000: per holder); `settle`
//! SettlementPrices, each settling the 1,000. `split` (instead of `batch`) applies the batches
//! in `apply_batch`'s two stages (`resolve_ahead`, `apply_resolved`); `lookups` makes only the
//! first stage's lookups and applies nothing. The trades' ids come in order, after the ids of
//! `held`'s opening trades; with `late` they are all below those (the trade index's map path,
//! as for ids that arrive late or far apart).

mod support;
use novate_core::*;

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mode: Vec<String> = std::env::args().skip(2).collect();
    // `split` and `lookups`: batches as `batch` does, in `apply_batch`'s two stages; `lookups`
    // makes the first stage's lookups alone and applies nothing (instructions of the lookups).
    let split = mode.iter().any(|a| a == "split");
    let lookups_only = mode.iter().any(|a| a == "lookups");
    // The first of the workload's ids: after the opening trades' (1 ..= 50,000), or below.
    let (first_opening, first_id) =
        if mode.iter().any(|a| a == "late") { (1 << 40, 1) } else { (1, 1 << 20) };
    let batched = split || lookups_only || mode.iter().any(|a| a == "batch");
    let orders = mode.iter().any(|a| a == "order");
    let marks = mode.iter().any(|a| a == "mark");
    let settles = mode.iter().any(|a| a == "settle");
    let limits = Limits {
        accounts_max: 1_000,
        instruments_max: 100,
        positions_max: 100_000,
        trades_max: 1_000_000,
    };
    let mut book = support::Book::new(limits, 1_000, 100);
    if mode.iter().any(|a| a == "held") {
        // Accounts 2k + 1 and 2k + 2 trade each instrument once: 100,000 positions.
        let mut trade_id = first_opening;
        for instrument in 1..=100 {
            for buy in (1..=1_000).step_by(2) {
                let t = Trade {
                    trade_id,
                    buy,
                    sell: buy + 1,
                    instrument,
                    qty: 1,
                    price: 100 * PRICE_SCALE,
                    trade_date: 20260105,
                };
                assert!(book.apply(Command::ClearTrade(t)), "an opening trade clears");
                trade_id += 1;
            }
        }
    }
    if marks || settles {
        for k in 0..n {
            // Every mark moves: 101, then 100 on the next round of the instruments.
            let price = if (k / 100) % 2 == 0 { 101 } else { 100 } * PRICE_SCALE;
            let instrument = 1 + (k % 100) as u32;
            let cmd = if settles {
                Command::SettlementPrice { instrument, price }
            } else {
                Command::MarkPrice { instrument, price }
            };
            assert!(book.apply(cmd), "a mark is accepted");
        }
        println!("{n} marks, {} positions", book.sm.positions_len());
        return;
    }
    let mut x = 12345u64;
    let mut ok = 0;
    let mut batch = Vec::with_capacity(256);
    for k in 1..=n {
        let trade_id = first_id + k - 1;
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let (buy, sell) = (1 + (x >> 33) % 1_000, 1 + (x >> 13) % 1_000);
        let t = Trade {
            trade_id,
            buy,
            sell: if sell == buy { 1 + buy % 1_000 } else { sell },
            instrument: 1 + ((x >> 45) % 100) as u32,
            qty: 1 + ((x >> 20) % 50) as i64,
            price: (95 + ((x >> 40) % 10) as i64) * PRICE_SCALE,
            trade_date: 20260105,
        };
        let cmd = if orders {
            let side = if t.qty % 2 == 0 { Side::Buy } else { Side::Sell };
            let (account, instrument, qty, price) = (t.buy, t.instrument, t.qty, t.price);
            Command::CheckOrder { account, instrument, side, qty, price }
        } else {
            Command::ClearTrade(t)
        };
        if batched {
            batch.push(cmd);
            if batch.len() == 256 || k == n {
                let accepted = if split || lookups_only {
                    book.apply_split(&batch, lookups_only)
                } else {
                    book.apply_batch(&batch)
                };
                // An order accepted or rejected by a check is counted.
                ok += if orders { batch.len() as u64 } else { accepted };
                batch.clear();
            }
        } else if orders {
            book.apply(cmd);
            ok += 1;
        } else {
            ok += u64::from(book.apply(cmd));
        }
    }
    println!("{ok} of {n} trades cleared, {} positions", book.sm.positions_len());
    assert_eq!(ok, n, "every trade of the workload clears");
}
