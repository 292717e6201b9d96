//! Shared by the engine's test binaries: a test runs with the split pipeline (three threads)
//! and again, as its twin in `mod fused`, with the fused one (`threads.stages`).
// Each test binary uses part of this module.
#![allow(dead_code, unused_macros)]

thread_local! {
    /// `threads.stages` for the test running on this thread.
    pub static STAGES: std::cell::Cell<&'static str> = const { std::cell::Cell::new("split") };
}

/// Inside a test binary's `mod fused`: `fused_twins!(a, b)` defines tests `fused::a` and
/// `fused::b` that run the binary's `a` and `b` with `STAGES` set to `"fused"`.
macro_rules! fused_twins {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            crate::common::STAGES.set("fused");
            super::$name();
        }
    )*};
}

/// Instrument 7 (multiplier `m`, 10 % margin) and accounts 1 and 2 without limits.
pub fn instrument_and_two_accounts(m: i64) -> Vec<novate_core::Command> {
    use novate_core::{AccountSpec, Command, InstrumentSpec};
    let account =
        |id| AccountSpec { id, max_position: 0, max_notional: 0, max_loss: 0, suspended: false };
    vec![
        Command::UpsertInstrument(InstrumentSpec {
            id: 7,
            multiplier: m,
            margin_bps: 1000,
            settle_days: 2,
        }),
        Command::UpsertAccount(account(1)),
        Command::UpsertAccount(account(2)),
    ]
}

/// A ClearTrade in instrument 7.
pub fn trade_in_7(id: u64, buy: u64, sell: u64, qty: i64, price: i64) -> novate_core::Command {
    novate_core::Command::ClearTrade(novate_core::Trade {
        trade_id: id,
        buy,
        sell,
        instrument: 7,
        qty,
        price,
        trade_date: 20261125,
    })
}

/// A journal whose commit waits until the test opens the gate.
#[derive(Clone)]
pub struct GatedJournal {
    pub inner: novate_engine::MemJournal,
    gate: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl GatedJournal {
    pub fn new() -> GatedJournal {
        GatedJournal {
            inner: novate_engine::MemJournal::new(),
            gate: std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())),
        }
    }
    pub fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl novate_engine::Journal for GatedJournal {
    fn append(&mut self, batch: &[novate_core::Sequenced]) -> std::io::Result<()> {
        self.inner.append(batch)
    }
    fn commit(&mut self) -> std::io::Result<()> {
        let mut open = self.gate.0.lock().unwrap();
        while !*open {
            open = self.gate.1.wait(open).unwrap();
        }
        drop(open);
        self.inner.commit()
    }
    fn replay(
        &mut self,
        from: novate_core::Seq,
        f: &mut dyn FnMut(&novate_core::Sequenced),
    ) -> std::io::Result<u64> {
        self.inner.replay(from, f)
    }
    fn last_seq(&self) -> novate_core::Seq {
        self.inner.last_seq()
    }
    fn describe(&self) -> String {
        "gated".into()
    }
    fn commit_waits(&self) -> bool {
        true // on the test's gate
    }
}
