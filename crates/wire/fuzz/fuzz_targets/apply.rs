//! Any command stream through the state machine, with ids drawn from a few values (so commands
//! meet existing accounts, instruments, positions and trades, and the small limits fill up) and
//! numbers drawn from the edges (0, ±1, i64/i128 extremes, powers of two, invalid dates and
//! rates). Must hold for every input:
//! - no panic (every `assert!` and `unreachable!` of the core stays unreachable from input);
//! - a rejected command, and any CheckOrder, leaves `state_hash()` unchanged;
//! - every account can be valued (SEMANTICS.md, the account invariant);
//! - the O(1) digest equals the hash of the exported records;
//! - `apply_batch` in batches of a fuzzer-chosen size gives the same results, hash and
//!   accounts (their funds are derived, outside the hash);
//! - so does `apply_batch_on` (the lookups on a stage's thread), with the state machine's
//!   thread looking up the first 0, 16 or 32 commands of each batch itself (by the same byte's
//!   top bits) and the stage the next 16 or more, finding holders' rows or not (by its parity);
//! - export and restore give a machine with the same hash.
#![no_main]
use libfuzzer_sys::fuzz_target;
use novate_core::*;

const LIMITS: Limits =
    Limits { accounts_max: 4, instruments_max: 3, positions_max: 8, trades_max: 16 };

/// The fuzzer's bytes, read as the fields of commands; 0 once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }

    fn id(&mut self) -> u64 {
        u64::from(self.byte() % 7) // 0 is invalid, 5 and 6 exceed the limits
    }

    fn i64(&mut self) -> i64 {
        const EDGES: [i64; 16] = [
            0,
            1,
            -1,
            2,
            PRICE_SCALE,
            100 * PRICE_SCALE,
            -100 * PRICE_SCALE,
            i64::MAX,
            i64::MIN,
            i64::MAX / 2,
            1 << 31,
            1 << 32,
            -(1 << 40),
            1 << 62,
            3,
            7,
        ];
        let b = self.byte();
        match EDGES.get(usize::from(b >> 3)) {
            Some(&e) if b & 4 == 0 => e,
            Some(&e) => e.wrapping_add(i64::from(b & 3)).wrapping_sub(1),
            None => i64::from(b) * PRICE_SCALE / 16,
        }
    }

    fn money(&mut self) -> Money {
        match self.byte() % 8 {
            0 => i128::MAX,
            1 => i128::MIN,
            2 => 1 << 100,
            3 => -(1 << 100),
            4 => i128::from(i64::MAX) * 4,
            _ => i128::from(self.i64()),
        }
    }

    fn bps(&mut self) -> Bps {
        [0, 1, 500, BPS_SCALE, MARGIN_BPS_MAX, MARGIN_BPS_MAX + 1, -1, i64::MAX][usize::from(
            self.byte() % 8,
        )]
    }

    fn date(&mut self) -> Date {
        [20260105, 20261231, 0, 20260230, 99991231, 20240229, 20250229, 19700101]
            [usize::from(self.byte() % 8)]
    }

    fn command(&mut self) -> Command {
        match self.byte() % 9 {
            0 => Command::UpsertInstrument(InstrumentSpec {
                id: self.id() as u32,
                multiplier: self.i64(),
                margin_bps: self.bps(),
                settle_days: self.byte() % 40,
            }),
            1 => Command::UpsertAccount(AccountSpec {
                id: self.id(),
                max_position: self.i64(),
                max_notional: self.money(),
                max_loss: self.money(),
                suspended: self.byte() & 1 == 1,
            }),
            2 => Command::AdjustCollateral { account: self.id(), amount: self.money() },
            3 => Command::CheckOrder {
                account: self.id(),
                instrument: self.id() as u32,
                side: if self.byte() & 1 == 0 { Side::Buy } else { Side::Sell },
                qty: self.i64(),
                price: self.i64(),
            },
            4 | 8 => Command::ClearTrade(Trade {
                trade_id: u64::from(self.byte() % 24),
                buy: self.id(),
                sell: self.id(),
                instrument: self.id() as u32,
                qty: self.i64(),
                price: self.i64(),
                trade_date: self.date(),
            }),
            5 => Command::BustTrade { trade_id: u64::from(self.byte() % 24) },
            6 => Command::MarkPrice { instrument: self.id() as u32, price: self.i64() },
            _ => Command::SettlementPrice { instrument: self.id() as u32, price: self.i64() },
        }
    }
}

type Outcome = Result<Vec<Event>, Reject>;

/// `NOVATE_FUZZ_TRACE=1 target/.../apply FILE` prints each command and its result.
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("NOVATE_FUZZ_TRACE").is_some())
}

/// Every account's view (`Err` for ids with none).
fn accounts(sm: &StateMachine) -> Vec<Result<AccountView, Reject>> {
    (1..=6).map(|id| sm.account(id)).collect()
}

thread_local! {
    /// One lookup stage for the whole run (a thread each input would dominate the run).
    static STAGE: std::cell::RefCell<LookupStage> =
        std::cell::RefCell::new(LookupStage::new(|| {}).expect("the lookup stage's thread"));
}

fuzz_target!(|data: &[u8]| {
    let Some((&batch, rest)) = data.split_first() else { return };
    let mut input = Input(rest);
    let mut sm = StateMachine::new(LIMITS).expect("limits are valid");
    let mut log = Vec::new();
    let mut results: Vec<Outcome> = Vec::new();
    while !input.0.is_empty() && log.len() < 512 {
        let cmd = input.command();
        let seq = log.len() as u64 + 1;
        let before = sm.state_hash();
        let got = sm.apply(&cmd, seq, seq).map(|e| e.to_vec());
        if got.is_err() || matches!(cmd, Command::CheckOrder { .. }) {
            assert_eq!(sm.state_hash(), before, "{cmd:?} -> {got:?} changed the state");
        }
        log.push(Sequenced { seq, ts: seq, cmd });
        if trace() {
            eprintln!("{cmd:?} -> {got:?}");
        }
        results.push(got);
    }
    // The account invariant: every account can be valued after any accepted command.
    for id in 1..=6 {
        assert_ne!(sm.account(id).err(), Some(Reject::Overflow), "account {id} unvaluable");
    }
    let hash = sm.state_hash();
    let snap = sm.export();
    assert_eq!(snap.state_hash(), hash, "the incremental digest drifted");

    let mut b = StateMachine::new(LIMITS).expect("limits are valid");
    let mut batched: Vec<Outcome> = Vec::with_capacity(log.len());
    for chunk in log.chunks(1 + usize::from(batch % 32)) {
        b.apply_batch(chunk, |_, r| batched.push(r.map(|e| e.to_vec())));
    }
    assert_eq!(batched, results, "apply_batch differs from apply");
    assert_eq!(b.state_hash(), hash);
    assert_eq!(accounts(&b), accounts(&sm), "apply_batch's accounts differ");

    let mut on = StateMachine::new(LIMITS).expect("limits are valid");
    let mut staged: Vec<Outcome> = Vec::with_capacity(log.len());
    STAGE.with_borrow_mut(|stage| {
        stage.force_holder_rows(Some(batch % 2 == 1));
        let head = 16 * usize::from(batch / 64 % 3);
        stage.force_head(Some(head));
        for chunk in log.chunks(head + 16 + usize::from(batch % 64)) {
            on.apply_batch_on(stage, chunk, |_, r, _| staged.push(r.map(|e| e.to_vec())));
        }
    });
    assert_eq!(staged, results, "apply_batch_on differs from apply");
    assert_eq!(on.state_hash(), hash);
    assert_eq!(accounts(&on), accounts(&sm), "apply_batch_on's accounts differ");

    let mut restored = StateMachine::restore(LIMITS, &snap).expect("an export restores");
    assert_eq!(restored.state_hash(), hash, "restore changed the hash");
});
