//! A fixed in-process pipeline workload for instruction counting (load-independent), the
//! engine bench's shape: 1,000 accounts, one marked instrument, ClearTrades submitted with the
//! client's window full, every answer counted.
//! `valgrind --tool=callgrind target/release/examples/pipeline_loop N [split|fused] [wide]` for
//! N and 0 trades; the difference divided by N is instructions per trade through the pipeline.
//! The accounts hold 10^9 of the currency each, or with `wide` 2^80 units (funds beyond 64 bits,
//! which the state machine holds as 64-bit offsets from an exact base: the same path).

use std::time::Duration;

use novate_core::*;
use novate_engine::{AnswerKind, Config, Engine};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let stages = args.next().unwrap_or_else(|| "fused".into());
    let wide = args.next().is_some_and(|a| a == "wide");
    let mut c = Config::default();
    c.engine.accounts_max = 1_001;
    c.engine.instruments_max = 16;
    c.engine.positions_max = 20_000;
    c.engine.trades_max = 1_000_000;
    c.durability.snapshot_every = 0;
    c.threads.stages = stages;
    c.threads.prefault = true;
    let engine = Engine::open(&c).expect("engine");
    let mut cl = engine.client();
    let spec = InstrumentSpec { id: 1, multiplier: 1, margin_bps: 500, settle_days: 2 };
    cl.call(Command::UpsertInstrument(spec)).expect("instrument");
    cl.call(Command::MarkPrice { instrument: 1, price: 100 * PRICE_SCALE }).expect("mark");
    for id in 1..=1_000 {
        let a = AccountSpec { id, max_position: 0, max_notional: 0, max_loss: 0, suspended: false };
        cl.call(Command::UpsertAccount(a)).expect("account");
        // 10^9 of the currency, as the core bench funds its accounts; or 2^80 units.
        let amount = if wide { 1 << 80 } else { 1_000_000_000 * i128::from(PRICE_SCALE) };
        cl.call(Command::AdjustCollateral { account: id, amount }).expect("collateral");
    }
    let mut acks = 0u64;
    let mut count =
        |a: novate_engine::Answer| acks += u64::from(matches!(a.kind, AnswerKind::Ack { .. }));
    for i in 0..n {
        let buy = 1 + (i * 7919) % 1_000;
        let t = Trade {
            trade_id: i + 1,
            buy,
            sell: 1 + buy % 1_000,
            instrument: 1,
            qty: 1 + (i % 10) as i64,
            price: (99 + (i % 3) as i64) * PRICE_SCALE,
            trade_date: 20261125,
        };
        cl.submit_with(i, Command::ClearTrade(t), Duration::from_secs(60), &mut count)
            .expect("submit");
        while let Some(a) = cl.poll_answer() {
            count(a);
        }
    }
    while cl.inflight() > 0 {
        count(cl.wait_answer(Duration::from_secs(60)).expect("answer"));
    }
    assert_eq!(acks, n, "every trade acknowledged");
    drop(cl);
    engine.shutdown();
    println!("{n} trades acknowledged");
}
