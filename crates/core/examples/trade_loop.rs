//! A fixed ClearTrade workload for instruction counting (load-independent):
//! `valgrind --tool=callgrind target/release/examples/trade_loop N` for N and 0 trades; the
//! difference divided by N is instructions per ClearTrade on a cache-resident book.

use novate_core::*;

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let limits = Limits {
        accounts_max: 1_000,
        instruments_max: 100,
        positions_max: 100_000,
        trades_max: 1_000_000,
    };
    let mut sm = StateMachine::new(limits).expect("limits");
    let mut seq = 0;
    let mut run = |sm: &mut StateMachine, c: Command| {
        seq += 1;
        sm.apply(&c, seq, 0).is_ok()
    };
    for id in 1..=100u32 {
        run(
            &mut sm,
            Command::UpsertInstrument(InstrumentSpec {
                id,
                multiplier: 10,
                margin_bps: 1_000,
                settle_days: 2,
            }),
        );
        run(&mut sm, Command::MarkPrice { instrument: id, price: 100 * PRICE_SCALE });
    }
    for id in 1..=1_000u64 {
        run(
            &mut sm,
            Command::UpsertAccount(AccountSpec {
                id,
                max_position: 0,
                max_notional: 0,
                max_loss: 0,
                suspended: false,
            }),
        );
        run(&mut sm, Command::AdjustCollateral { account: id, amount: 1 << 90 });
    }
    let mut x = 12345u64;
    let mut ok = 0;
    for trade_id in 1..=n {
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
        ok += u64::from(run(&mut sm, Command::ClearTrade(t)));
    }
    println!("{ok} of {n} trades cleared, {} positions", sm.positions_len());
    assert_eq!(ok, n, "every trade of the workload clears");
}
