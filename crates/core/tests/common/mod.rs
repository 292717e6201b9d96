//! Helpers shared by the core's integration tests.
#![allow(dead_code)]

use novate_core::*;

pub const P: Price = PRICE_SCALE;
pub const DATE: Date = 20260105;

pub fn instrument(id: InstrumentId, multiplier: i64, margin_bps: Bps) -> Command {
    Command::UpsertInstrument(InstrumentSpec { id, multiplier, margin_bps, settle_days: 2 })
}

pub fn account(id: AccountId) -> Command {
    Command::UpsertAccount(AccountSpec {
        id,
        max_position: 0,
        max_notional: 0,
        max_loss: 0,
        suspended: false,
    })
}

pub fn account_with(
    id: AccountId,
    max_position: Qty,
    max_notional: Money,
    max_loss: Money,
) -> Command {
    Command::UpsertAccount(AccountSpec {
        id,
        max_position,
        max_notional,
        max_loss,
        suspended: false,
    })
}

pub fn deposit(account: AccountId, amount: Money) -> Command {
    Command::AdjustCollateral { account, amount }
}

pub fn trade(
    trade_id: TradeId,
    buy: AccountId,
    sell: AccountId,
    instrument: InstrumentId,
    qty: Qty,
    price: Price,
) -> Command {
    Command::ClearTrade(Trade { trade_id, buy, sell, instrument, qty, price, trade_date: DATE })
}

pub fn order(
    account: AccountId,
    instrument: InstrumentId,
    side: Side,
    qty: Qty,
    price: Price,
) -> Command {
    Command::CheckOrder { account, instrument, side, qty, price }
}

/// A state machine with small limits and a seq counter.
pub struct Sm {
    pub sm: StateMachine,
    pub seq: Seq,
}

impl Sm {
    pub fn new() -> Sm {
        Sm::with(Limits {
            accounts_max: 64,
            instruments_max: 16,
            positions_max: 256,
            trades_max: 1024,
        })
    }

    pub fn with(limits: Limits) -> Sm {
        Sm { sm: StateMachine::new(limits).unwrap(), seq: 0 }
    }

    pub fn apply(&mut self, c: Command) -> Result<Vec<Event>, Reject> {
        self.seq += 1;
        self.sm.apply(&c, self.seq, 1_000 * self.seq).map(|e| e.to_vec())
    }

    pub fn ok(&mut self, c: Command) -> Vec<Event> {
        self.apply(c).unwrap_or_else(|r| panic!("{c:?} rejected: {r}"))
    }

    /// Assert the command is rejected with `r` and the state is untouched.
    pub fn rejects(&mut self, c: Command, r: Reject) {
        let before = self.sm.state_hash();
        assert_eq!(self.apply(c), Err(r), "{c:?}");
        assert_eq!(self.sm.state_hash(), before, "state changed by rejected {c:?}");
    }

    pub fn pos(&self, a: AccountId, i: InstrumentId) -> (Qty, Money, Money) {
        let p = self.sm.position(a, i).expect("position exists");
        (p.qty, p.cost, p.realized)
    }
}

/// A tiny deterministic generator (SplitMix64) for the tests' random command streams.
pub struct Gen(pub u64);

impl Gen {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
