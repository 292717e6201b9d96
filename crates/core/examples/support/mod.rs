//! The book both examples build: instruments with an explicit mark of 100.00 (multiplier 10,
//! 10 % margin) and well-funded accounts, applied through one sequence counter.

use novate_core::*;

pub struct Book {
    pub sm: StateMachine,
    seq: Seq,
}

impl Book {
    /// `accounts` funded accounts (ids 1..) and `instruments` marked instruments (ids 1..).
    pub fn new(limits: Limits, accounts: u64, instruments: u32) -> Book {
        let mut b = Book { sm: StateMachine::new(limits).expect("limits"), seq: 0 };
        for id in 1..=instruments {
            let spec = InstrumentSpec { id, multiplier: 10, margin_bps: 1_000, settle_days: 2 };
            b.apply(Command::UpsertInstrument(spec));
            b.apply(Command::MarkPrice { instrument: id, price: 100 * PRICE_SCALE });
        }
        for id in 1..=accounts {
            let spec =
                AccountSpec { id, max_position: 0, max_notional: 0, max_loss: 0, suspended: false };
            b.apply(Command::UpsertAccount(spec));
            // 10^9 of the currency, as the core bench funds its accounts.
            let amount = 1_000_000_000 * i128::from(PRICE_SCALE);
            b.apply(Command::AdjustCollateral { account: id, amount });
        }
        b
    }

    /// Apply the next command; true if accepted.
    pub fn apply(&mut self, c: Command) -> bool {
        self.seq += 1;
        self.sm.apply(&c, self.seq, 0).is_ok()
    }

    /// Apply `cmds` with `apply_batch`; how many were accepted.
    #[allow(dead_code)] // used by trade_loop only
    pub fn apply_batch(&mut self, cmds: &[Command]) -> u64 {
        let batch = self.sequence(cmds);
        let mut ok = 0;
        self.sm.apply_batch(&batch, |_, r| ok += u64::from(r.is_ok()));
        ok
    }

    /// [`apply_batch`](Self::apply_batch) in its two stages (`resolve_ahead`, then
    /// `apply_resolved`); with `lookups_only`, the first stage alone (nothing is applied).
    #[allow(dead_code)] // used by trade_loop only
    pub fn apply_split(&mut self, cmds: &[Command], lookups_only: bool) -> u64 {
        let batch = self.sequence(cmds);
        let mut hints = Vec::with_capacity(batch.len());
        self.sm.resolve_ahead(&batch, &mut hints);
        if lookups_only {
            return std::hint::black_box(hints).len() as u64;
        }
        let mut ok = 0;
        self.sm.apply_resolved(&batch, &hints, |_, r| ok += u64::from(r.is_ok()));
        ok
    }

    fn sequence(&mut self, cmds: &[Command]) -> Vec<Sequenced> {
        cmds.iter()
            .map(|&cmd| {
                self.seq += 1;
                Sequenced { seq: self.seq, ts: 0, cmd }
            })
            .collect()
    }
}
