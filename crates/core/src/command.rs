//! The command/event contract of SPEC.md: what goes into the log and what comes out.
//!
//! Commands are fixed-size `Copy` values so they can travel through rings and be journaled
//! without allocation. Every rejection is a [`Reject`] with a stable number: numbers are never
//! reused or renumbered once released (the wire schema and the SDK carry them).

use crate::units::*;

/// Which side of the book an order is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Side {
    Buy = 1,
    Sell = 2,
}

impl Side {
    /// The signed quantity a fill of `qty` on this side adds to a position.
    pub fn signed(self, qty: Qty) -> Qty {
        match self {
            Side::Buy => qty,
            Side::Sell => -qty,
        }
    }
}

/// Static data of an instrument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InstrumentSpec {
    pub id: InstrumentId,
    /// Contract multiplier, >= 1 (1 for a share, 50 for an index future).
    pub multiplier: i64,
    /// Initial margin rate of the rate model, in basis points of notional (0..=MARGIN_BPS_MAX).
    pub margin_bps: Bps,
    /// Settlement cycle in business days (T+n), 0..=SETTLE_DAYS_MAX.
    pub settle_days: u8,
}

/// An account and its risk limits. A limit of 0 means "no limit".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AccountSpec {
    pub id: AccountId,
    /// Largest |qty| allowed per instrument.
    pub max_position: Qty,
    /// Largest sum of notionals over the account.
    pub max_notional: Money,
    /// realized + unrealized may not go below -max_loss.
    pub max_loss: Money,
    /// A suspended account may not place orders (CheckOrder); executed trades still clear.
    pub suspended: bool,
}

/// A trade already executed on a venue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Trade {
    pub trade_id: TradeId,
    pub buy: AccountId,
    pub sell: AccountId,
    pub instrument: InstrumentId,
    pub qty: Qty,
    pub price: Price,
    pub trade_date: Date,
}

/// Every input of the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    UpsertInstrument(InstrumentSpec),
    UpsertAccount(AccountSpec),
    /// Add (deposit, > 0) or remove (withdrawal, < 0) collateral.
    AdjustCollateral {
        account: AccountId,
        amount: Money,
    },
    /// A pre-trade risk check; changes nothing.
    CheckOrder {
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        qty: Qty,
        price: Price,
    },
    ClearTrade(Trade),
    /// Books the reverse of the original trade at its original price for both accounts.
    BustTrade {
        trade_id: TradeId,
    },
    /// Sets the instrument's mark; no variation is paid.
    MarkPrice {
        instrument: InstrumentId,
        price: Price,
    },
    /// Sets the instrument's mark and marks every open position to it (variation margin).
    SettlementPrice {
        instrument: InstrumentId,
        price: Price,
    },
}

impl Command {
    /// A stable number per command kind (the wire's template ids follow the same order).
    pub fn kind(&self) -> u8 {
        match self {
            Command::UpsertInstrument(_) => 1,
            Command::UpsertAccount(_) => 2,
            Command::AdjustCollateral { .. } => 3,
            Command::CheckOrder { .. } => 4,
            Command::ClearTrade(_) => 5,
            Command::BustTrade { .. } => 6,
            Command::MarkPrice { .. } => 7,
            Command::SettlementPrice { .. } => 8,
        }
    }
}

/// What applying a command produced. Order within one command is defined in docs/SEMANTICS.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    InstrumentUpdated {
        instrument: InstrumentId,
    },
    AccountUpdated {
        account: AccountId,
    },
    CollateralChanged {
        account: AccountId,
        amount: Money,
        balance: Money,
    },
    OrderAccepted {
        account: AccountId,
        instrument: InstrumentId,
    },
    TradeCleared {
        trade_id: TradeId,
    },
    TradeBusted {
        trade_id: TradeId,
    },
    PositionChanged {
        account: AccountId,
        instrument: InstrumentId,
        qty: Qty,
        cost: Money,
        realized: Money,
    },
    MarkChanged {
        instrument: InstrumentId,
        price: Price,
    },
    VariationMargin {
        account: AccountId,
        instrument: InstrumentId,
        amount: Money,
    },
    LimitBreach {
        account: AccountId,
        reason: Reject,
    },
    MarginCall {
        account: AccountId,
        shortfall: Money,
    },
}

/// Numbered result codes for every expected rejection. The numbers are part of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Reject {
    /// An id was 0.
    InvalidId = 1,
    UnknownAccount = 2,
    UnknownInstrument = 3,
    /// The account is suspended (CheckOrder only).
    Suspended = 4,
    MaxPosition = 5,
    MaxNotional = 6,
    MaxLoss = 7,
    /// Equity would be below initial margin.
    Margin = 8,
    /// The trade id was seen before.
    Duplicate = 9,
    /// A value does not fit its type (SPEC.md: units).
    Overflow = 10,
    /// Quantity <= 0.
    InvalidQuantity = 11,
    /// Price <= 0.
    InvalidPrice = 12,
    /// Multiplier < 1.
    InvalidMultiplier = 13,
    /// Margin rate outside 0..=MARGIN_BPS_MAX.
    InvalidMarginRate = 14,
    /// A negative risk limit.
    InvalidLimit = 15,
    /// Not a calendar date in YYYYMMDD.
    InvalidDate = 16,
    /// Buy and sell account are the same.
    SelfTrade = 17,
    /// BustTrade of a trade id never cleared.
    UnknownTrade = 18,
    /// BustTrade of a trade already busted.
    AlreadyBusted = 19,
    /// Changing the multiplier of an instrument that has positions.
    InstrumentInUse = 20,
    /// A withdrawal larger than the collateral.
    InsufficientCollateral = 21,
    /// Settlement cycle over SETTLE_DAYS_MAX.
    InvalidSettleDays = 22,
    /// `Limits::accounts_max` reached.
    AccountCapacity = 23,
    /// `Limits::instruments_max` reached.
    InstrumentCapacity = 24,
    /// `Limits::positions_max` reached.
    PositionCapacity = 25,
    /// `Limits::trades_max` reached.
    TradeCapacity = 26,
}

impl Reject {
    /// Every code, in number order.
    pub const ALL: [Reject; 26] = [
        Reject::InvalidId,
        Reject::UnknownAccount,
        Reject::UnknownInstrument,
        Reject::Suspended,
        Reject::MaxPosition,
        Reject::MaxNotional,
        Reject::MaxLoss,
        Reject::Margin,
        Reject::Duplicate,
        Reject::Overflow,
        Reject::InvalidQuantity,
        Reject::InvalidPrice,
        Reject::InvalidMultiplier,
        Reject::InvalidMarginRate,
        Reject::InvalidLimit,
        Reject::InvalidDate,
        Reject::SelfTrade,
        Reject::UnknownTrade,
        Reject::AlreadyBusted,
        Reject::InstrumentInUse,
        Reject::InsufficientCollateral,
        Reject::InvalidSettleDays,
        Reject::AccountCapacity,
        Reject::InstrumentCapacity,
        Reject::PositionCapacity,
        Reject::TradeCapacity,
    ];

    /// The stable number of this code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code with this number, if any.
    pub fn from_code(code: u16) -> Option<Reject> {
        Reject::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    /// The code's name as documented (e.g. "MaxPosition").
    pub fn name(self) -> &'static str {
        match self {
            Reject::InvalidId => "InvalidId",
            Reject::UnknownAccount => "UnknownAccount",
            Reject::UnknownInstrument => "UnknownInstrument",
            Reject::Suspended => "Suspended",
            Reject::MaxPosition => "MaxPosition",
            Reject::MaxNotional => "MaxNotional",
            Reject::MaxLoss => "MaxLoss",
            Reject::Margin => "Margin",
            Reject::Duplicate => "Duplicate",
            Reject::Overflow => "Overflow",
            Reject::InvalidQuantity => "InvalidQuantity",
            Reject::InvalidPrice => "InvalidPrice",
            Reject::InvalidMultiplier => "InvalidMultiplier",
            Reject::InvalidMarginRate => "InvalidMarginRate",
            Reject::InvalidLimit => "InvalidLimit",
            Reject::InvalidDate => "InvalidDate",
            Reject::SelfTrade => "SelfTrade",
            Reject::UnknownTrade => "UnknownTrade",
            Reject::AlreadyBusted => "AlreadyBusted",
            Reject::InstrumentInUse => "InstrumentInUse",
            Reject::InsufficientCollateral => "InsufficientCollateral",
            Reject::InvalidSettleDays => "InvalidSettleDays",
            Reject::AccountCapacity => "AccountCapacity",
            Reject::InstrumentCapacity => "InstrumentCapacity",
            Reject::PositionCapacity => "PositionCapacity",
            Reject::TradeCapacity => "TradeCapacity",
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

impl std::error::Error for Reject {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_stable_and_round_trip() {
        for (i, r) in Reject::ALL.iter().enumerate() {
            assert_eq!(r.code() as usize, i + 1, "{r:?}");
            assert_eq!(Reject::from_code(r.code()), Some(*r));
        }
        assert_eq!(Reject::from_code(0), None);
        assert_eq!(Reject::from_code(27), None);
        // Pinned numbers: changing these breaks every client.
        assert_eq!(Reject::Duplicate.code(), 9);
        assert_eq!(Reject::Overflow.code(), 10);
        assert_eq!(Reject::Margin.code(), 8);
    }

    #[test]
    fn command_is_small_and_copy() {
        assert!(std::mem::size_of::<Command>() <= 64, "{}", std::mem::size_of::<Command>());
        assert!(std::mem::size_of::<Event>() <= 64, "{}", std::mem::size_of::<Event>());
    }
}
