//! The SDK's `submitBatch` path in Rust, for instruction counts and per-thread CPU: an engine
//! like benches/sdk.mjs's (1,000 accounts, one marked instrument, tables prefaulted), an
//! `AsyncClient` (the binding's client) and one `Work::Batch` of N trades per round, each round
//! into a fresh engine. Prints trades/s and, per thread, the CPU time it took per trade
//! (/proc schedstat; waiting threads' spins and yields included), how often it was
//! preempted (involuntary context switches) and its minor page faults.
//!
//! `target/release/examples/batch_submit [split|fused] [N] [rounds]`; for instructions per
//! trade, `valgrind --tool=callgrind target/release/examples/batch_submit split 200000 1`.
//! `BATCH_MAX=n` sets `engine.batch_max`; `PIN=0,1,0` pins the sequencer, state machine and
//! egress threads (`threads.pin`).

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Instant;

use novate_core::*;
use novate_engine::{AsyncClient, Config, Engine, Outcome, Work};

/// CPU time so far (ns), times preempted (involuntary context switches) and minor page faults
/// of every thread of this process, by name.
fn threads() -> BTreeMap<String, (u64, u64, u64)> {
    let mut m = BTreeMap::new();
    for t in novate_mem::cpu::thread_stats() {
        let e = m.entry(t.name).or_insert((0, 0, 0));
        e.0 += t.cpu_ns;
        e.1 += t.involuntary_switches;
        e.2 += t.minor_faults;
    }
    m
}

fn setup() -> Vec<Command> {
    let mut v = vec![
        Command::UpsertInstrument(InstrumentSpec {
            id: 1,
            multiplier: 1,
            margin_bps: 500,
            settle_days: 2,
        }),
        Command::MarkPrice { instrument: 1, price: 100 * PRICE_SCALE },
    ];
    for id in 1..=1000 {
        v.push(Command::UpsertAccount(AccountSpec {
            id,
            max_position: 0,
            max_notional: 0,
            max_loss: 0,
            suspended: false,
        }));
        v.push(Command::AdjustCollateral {
            account: id,
            amount: 1_000_000_000 * PRICE_SCALE as i128,
        });
    }
    v
}

fn main() {
    let mut args = std::env::args().skip(1);
    let stages = args.next().unwrap_or_else(|| "split".into());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    for _ in 0..rounds {
        let mut c = Config::default();
        c.engine.accounts_max = 1_001;
        c.engine.instruments_max = 8;
        c.engine.positions_max = 4_096;
        c.engine.trades_max = 4_000_000;
        c.threads.stages = stages.clone();
        c.threads.prefault = true;
        if let Ok(b) = std::env::var("BATCH_MAX") {
            c.engine.batch_max = b.parse().expect("BATCH_MAX: a number");
        }
        if let Ok(p) = std::env::var("PIN") {
            c.threads.pin = p.split(',').map(|x| x.parse().expect("PIN: CPU numbers")).collect();
        }
        let engine = Engine::open(&c).expect("engine");
        let (tx, rx) = mpsc::channel();
        let deliver = Box::new(move |done: Vec<_>| {
            for (_, o) in done {
                let _ = tx.send(o);
            }
        });
        let client = AsyncClient::start(&engine.client_maker(), deliver).expect("client");
        client.submit(1, Work::Batch(setup()));
        rx.recv().expect("setup answered");
        let trades: Vec<Command> = (0..n)
            .map(|i| {
                let buy = i % 1000 + 1;
                Command::ClearTrade(Trade {
                    trade_id: i + 1,
                    buy,
                    sell: buy % 1000 + 1,
                    instrument: 1,
                    qty: 1 + (i % 7) as i64,
                    price: 100 * PRICE_SCALE,
                    trade_date: 20261125,
                })
            })
            .collect();
        let before = threads();
        let t = Instant::now();
        client.submit(2, Work::Batch(trades));
        let outcome = rx.recv().expect("batch answered");
        let secs = t.elapsed().as_secs_f64();
        let after = threads();
        let Outcome::Batch(b) = outcome else { panic!("{outcome:?}") };
        assert_eq!(u64::from(b.accepted), n, "every trade accepted");
        let mut per = String::new();
        let mut preempted = String::new();
        let mut faults = String::new();
        let mut total = 0;
        for (name, (ns, pre, flt)) in &after {
            let (ns0, pre0, flt0) = before.get(name).copied().unwrap_or((0, 0, 0));
            let d = ns - ns0;
            total += d;
            if d > 1_000_000 {
                per += &format!(" {name}={}", d / n);
                preempted += &format!(" {name}={}", pre - pre0);
                faults += &format!(" {name}={}", flt - flt0);
            }
        }
        println!(
            "{stages}: {:.2} M trades/s; CPU ns per trade:{per} total={}; preempted:{preempted}; \
             minor faults:{faults}",
            n as f64 / secs / 1e6,
            total / n
        );
        client.finish();
        engine.shutdown();
    }
}
