//! Messages to and from the core contract (`novate_core::Command`, `Event`, `Reject`).
//!
//! The wire adds an envelope the core does not see: a client `requestId` on every command, the
//! log `seq` on every event. Field values are carried as they are (a quantity of 0 encodes and
//! decodes fine): validating them is the state machine's job, with its numbered `Reject`s.

use crate::generated::*;
use crate::rt::{DecodeError, EncodeError};
use novate_core::{
    AccountSpec, Command, Event, InstrumentSpec, Reject, Seq, Side as CoreSide, Trade,
};

/// The request id a client chose for a command (unique per member session).
pub type RequestId = u64;

/// The schema's code of a core rejection (same number; exhaustive, so a new core code that is
/// missing from the schema fails to compile here).
pub fn reject_code(r: Reject) -> RejectCode {
    match r {
        Reject::InvalidId => RejectCode::InvalidId,
        Reject::UnknownAccount => RejectCode::UnknownAccount,
        Reject::UnknownInstrument => RejectCode::UnknownInstrument,
        Reject::Suspended => RejectCode::Suspended,
        Reject::MaxPosition => RejectCode::MaxPosition,
        Reject::MaxNotional => RejectCode::MaxNotional,
        Reject::MaxLoss => RejectCode::MaxLoss,
        Reject::Margin => RejectCode::Margin,
        Reject::Duplicate => RejectCode::Duplicate,
        Reject::Overflow => RejectCode::Overflow,
        Reject::InvalidQuantity => RejectCode::InvalidQuantity,
        Reject::InvalidPrice => RejectCode::InvalidPrice,
        Reject::InvalidMultiplier => RejectCode::InvalidMultiplier,
        Reject::InvalidMarginRate => RejectCode::InvalidMarginRate,
        Reject::InvalidLimit => RejectCode::InvalidLimit,
        Reject::InvalidDate => RejectCode::InvalidDate,
        Reject::SelfTrade => RejectCode::SelfTrade,
        Reject::UnknownTrade => RejectCode::UnknownTrade,
        Reject::AlreadyBusted => RejectCode::AlreadyBusted,
        Reject::InstrumentInUse => RejectCode::InstrumentInUse,
        Reject::InsufficientCollateral => RejectCode::InsufficientCollateral,
        Reject::InvalidSettleDays => RejectCode::InvalidSettleDays,
        Reject::AccountCapacity => RejectCode::AccountCapacity,
        Reject::InstrumentCapacity => RejectCode::InstrumentCapacity,
        Reject::PositionCapacity => RejectCode::PositionCapacity,
        Reject::TradeCapacity => RejectCode::TradeCapacity,
    }
}

/// The core rejection of a schema code; `None` for the wire-level codes (1000..).
pub fn core_reject(c: RejectCode) -> Option<Reject> {
    Reject::from_code(c.raw())
}

fn side_of(s: CoreSide) -> Side {
    match s {
        CoreSide::Buy => Side::Buy,
        CoreSide::Sell => Side::Sell,
    }
}

fn core_side(s: Side) -> CoreSide {
    match s {
        Side::Buy => CoreSide::Buy,
        Side::Sell => CoreSide::Sell,
    }
}

pub(crate) fn bool_of(b: bool) -> BooleanType {
    if b {
        BooleanType::True
    } else {
        BooleanType::False
    }
}

/// Encode `cmd` with its request id at the start of `buf`; returns the bytes written.
pub fn encode_command(
    buf: &mut [u8],
    request_id: RequestId,
    cmd: &Command,
) -> Result<usize, EncodeError> {
    Ok(match *cmd {
        Command::UpsertInstrument(i) => UpsertInstrumentEncoder::wrap(buf)?
            .request_id(request_id)
            .instrument_id(i.id)
            .multiplier(i.multiplier)
            .margin_bps(i.margin_bps)
            .settle_days(i.settle_days)
            .encoded_len(),
        Command::UpsertAccount(a) => UpsertAccountEncoder::wrap(buf)?
            .request_id(request_id)
            .account_id(a.id)
            .max_position(a.max_position)
            .max_notional(a.max_notional)
            .max_loss(a.max_loss)
            .suspended(bool_of(a.suspended))
            .encoded_len(),
        Command::AdjustCollateral { account, amount } => AdjustCollateralEncoder::wrap(buf)?
            .request_id(request_id)
            .account_id(account)
            .amount(amount)
            .encoded_len(),
        Command::CheckOrder { account, instrument, side, qty, price } => {
            CheckOrderEncoder::wrap(buf)?
                .request_id(request_id)
                .account_id(account)
                .instrument_id(instrument)
                .side(side_of(side))
                .qty(qty)
                .price(price)
                .encoded_len()
        }
        Command::ClearTrade(t) => encode_clear_trade(buf, request_id, &t)?,
        Command::BustTrade { trade_id } => {
            BustTradeEncoder::wrap(buf)?.request_id(request_id).trade_id(trade_id).encoded_len()
        }
        Command::MarkPrice { instrument, price } => MarkPriceEncoder::wrap(buf)?
            .request_id(request_id)
            .instrument_id(instrument)
            .price(price)
            .encoded_len(),
        Command::SettlementPrice { instrument, price } => SettlementPriceEncoder::wrap(buf)?
            .request_id(request_id)
            .instrument_id(instrument)
            .price(price)
            .encoded_len(),
    })
}

/// Encode a `ClearTrade` (the hot path: no match on the command kind).
#[inline]
pub fn encode_clear_trade(
    buf: &mut [u8],
    request_id: RequestId,
    t: &Trade,
) -> Result<usize, EncodeError> {
    Ok(ClearTradeEncoder::wrap(buf)?
        .request_id(request_id)
        .trade_id(t.trade_id)
        .buy_account_id(t.buy)
        .sell_account_id(t.sell)
        .instrument_id(t.instrument)
        .qty(t.qty)
        .price(t.price)
        .trade_date(t.trade_date)
        .encoded_len())
}

/// Encode up to `GROUP_ENTRIES_MAX` trades, each with its request id, as one `ClearTradeBatch`.
pub fn encode_clear_trade_batch(
    buf: &mut [u8],
    trades: &[(RequestId, Trade)],
) -> Result<usize, EncodeError> {
    let mut e = ClearTradeBatchEncoder::wrap(buf, trades.len())?;
    for (i, (request_id, t)) in trades.iter().enumerate() {
        if let Some(mut x) = e.trades(i) {
            x.request_id(*request_id)
                .trade_id(t.trade_id)
                .buy_account_id(t.buy)
                .sell_account_id(t.sell)
                .instrument_id(t.instrument)
                .qty(t.qty)
                .price(t.price)
                .trade_date(t.trade_date);
        }
    }
    Ok(e.encoded_len())
}

impl ClearTradeDecoder<'_> {
    /// The trade as the core sees it.
    #[inline]
    pub fn trade(&self) -> Trade {
        Trade {
            trade_id: self.trade_id(),
            buy: self.buy_account_id(),
            sell: self.sell_account_id(),
            instrument: self.instrument_id(),
            qty: self.qty(),
            price: self.price(),
            trade_date: self.trade_date(),
        }
    }
}

impl ClearTradeBatchDecoder<'_> {
    /// Each entry as `(request_id, Command::ClearTrade)`, in order.
    pub fn commands(&self) -> impl ExactSizeIterator<Item = (RequestId, Command)> + '_ {
        self.trades().map(|e| {
            let t = Trade {
                trade_id: e.trade_id(),
                buy: e.buy_account_id(),
                sell: e.sell_account_id(),
                instrument: e.instrument_id(),
                qty: e.qty(),
                price: e.price(),
                trade_date: e.trade_date(),
            };
            (e.request_id(), Command::ClearTrade(t))
        })
    }
}

impl Message<'_> {
    /// The command of a single-command message with its request id; `None` for events,
    /// answers and batches (use [`ClearTradeBatchDecoder::commands`]).
    #[inline]
    pub fn command(&self) -> Option<(RequestId, Command)> {
        Some(match self {
            Message::UpsertInstrument(d) => (
                d.request_id(),
                Command::UpsertInstrument(InstrumentSpec {
                    id: d.instrument_id(),
                    multiplier: d.multiplier(),
                    margin_bps: d.margin_bps(),
                    settle_days: d.settle_days(),
                }),
            ),
            Message::UpsertAccount(d) => (
                d.request_id(),
                Command::UpsertAccount(AccountSpec {
                    id: d.account_id(),
                    max_position: d.max_position(),
                    max_notional: d.max_notional(),
                    max_loss: d.max_loss(),
                    suspended: d.suspended() == BooleanType::True,
                }),
            ),
            Message::AdjustCollateral(d) => (
                d.request_id(),
                Command::AdjustCollateral { account: d.account_id(), amount: d.amount() },
            ),
            Message::CheckOrder(d) => (
                d.request_id(),
                Command::CheckOrder {
                    account: d.account_id(),
                    instrument: d.instrument_id(),
                    side: core_side(d.side()),
                    qty: d.qty(),
                    price: d.price(),
                },
            ),
            Message::ClearTrade(d) => (d.request_id(), Command::ClearTrade(d.trade())),
            Message::BustTrade(d) => {
                (d.request_id(), Command::BustTrade { trade_id: d.trade_id() })
            }
            Message::MarkPrice(d) => (
                d.request_id(),
                Command::MarkPrice { instrument: d.instrument_id(), price: d.price() },
            ),
            Message::SettlementPrice(d) => (
                d.request_id(),
                Command::SettlementPrice { instrument: d.instrument_id(), price: d.price() },
            ),
            _ => return None,
        })
    }

    /// The event of an event message with its seq; `Ok(None)` for other messages. A
    /// `LimitBreach` whose reason is a wire-level code (not a core `Reject`) is `BadEnumValue`.
    #[inline]
    pub fn event(&self) -> Result<Option<(Seq, Event)>, DecodeError> {
        Ok(Some(match self {
            Message::InstrumentUpdated(d) => {
                (d.seq(), Event::InstrumentUpdated { instrument: d.instrument_id() })
            }
            Message::AccountUpdated(d) => {
                (d.seq(), Event::AccountUpdated { account: d.account_id() })
            }
            Message::CollateralChanged(d) => (
                d.seq(),
                Event::CollateralChanged {
                    account: d.account_id(),
                    amount: d.amount(),
                    balance: d.balance(),
                },
            ),
            Message::OrderAccepted(d) => (
                d.seq(),
                Event::OrderAccepted { account: d.account_id(), instrument: d.instrument_id() },
            ),
            Message::TradeCleared(d) => (d.seq(), Event::TradeCleared { trade_id: d.trade_id() }),
            Message::TradeBusted(d) => (d.seq(), Event::TradeBusted { trade_id: d.trade_id() }),
            Message::PositionChanged(d) => (
                d.seq(),
                Event::PositionChanged {
                    account: d.account_id(),
                    instrument: d.instrument_id(),
                    qty: d.qty(),
                    cost: d.cost(),
                    realized: d.realized(),
                },
            ),
            Message::MarkChanged(d) => {
                (d.seq(), Event::MarkChanged { instrument: d.instrument_id(), price: d.price() })
            }
            Message::VariationMargin(d) => (
                d.seq(),
                Event::VariationMargin {
                    account: d.account_id(),
                    instrument: d.instrument_id(),
                    amount: d.amount(),
                },
            ),
            Message::LimitBreach(d) => {
                let code = d.reason();
                let reason = core_reject(code).ok_or(DecodeError::BadEnumValue {
                    field: "reason",
                    value: u64::from(code.raw()),
                })?;
                (d.seq(), Event::LimitBreach { account: d.account_id(), reason })
            }
            Message::MarginCall(d) => {
                (d.seq(), Event::MarginCall { account: d.account_id(), shortfall: d.shortfall() })
            }
            _ => return Ok(None),
        }))
    }
}

/// Encode `event` produced by log entry `seq`; returns the bytes written.
pub fn encode_event(buf: &mut [u8], seq: Seq, event: &Event) -> Result<usize, EncodeError> {
    Ok(match *event {
        Event::InstrumentUpdated { instrument } => {
            InstrumentUpdatedEncoder::wrap(buf)?.seq(seq).instrument_id(instrument).encoded_len()
        }
        Event::AccountUpdated { account } => {
            AccountUpdatedEncoder::wrap(buf)?.seq(seq).account_id(account).encoded_len()
        }
        Event::CollateralChanged { account, amount, balance } => {
            CollateralChangedEncoder::wrap(buf)?
                .seq(seq)
                .account_id(account)
                .amount(amount)
                .balance(balance)
                .encoded_len()
        }
        Event::OrderAccepted { account, instrument } => OrderAcceptedEncoder::wrap(buf)?
            .seq(seq)
            .account_id(account)
            .instrument_id(instrument)
            .encoded_len(),
        Event::TradeCleared { trade_id } => {
            TradeClearedEncoder::wrap(buf)?.seq(seq).trade_id(trade_id).encoded_len()
        }
        Event::TradeBusted { trade_id } => {
            TradeBustedEncoder::wrap(buf)?.seq(seq).trade_id(trade_id).encoded_len()
        }
        Event::PositionChanged { account, instrument, qty, cost, realized } => {
            PositionChangedEncoder::wrap(buf)?
                .seq(seq)
                .account_id(account)
                .instrument_id(instrument)
                .qty(qty)
                .cost(cost)
                .realized(realized)
                .encoded_len()
        }
        Event::MarkChanged { instrument, price } => MarkChangedEncoder::wrap(buf)?
            .seq(seq)
            .instrument_id(instrument)
            .price(price)
            .encoded_len(),
        Event::VariationMargin { account, instrument, amount } => {
            VariationMarginEncoder::wrap(buf)?
                .seq(seq)
                .account_id(account)
                .instrument_id(instrument)
                .amount(amount)
                .encoded_len()
        }
        Event::LimitBreach { account, reason } => LimitBreachEncoder::wrap(buf)?
            .seq(seq)
            .account_id(account)
            .reason(reject_code(reason))
            .encoded_len(),
        Event::MarginCall { account, shortfall } => MarginCallEncoder::wrap(buf)?
            .seq(seq)
            .account_id(account)
            .shortfall(shortfall)
            .encoded_len(),
    })
}

/// Encode the `Ack` of a command (version 1: with the sequencer's timestamp).
pub fn encode_ack(
    buf: &mut [u8],
    request_id: RequestId,
    seq: Seq,
    timestamp_ns: u64,
) -> Result<usize, EncodeError> {
    Ok(AckEncoder::wrap(buf)?
        .request_id(request_id)
        .seq(seq)
        .timestamp_ns(timestamp_ns)
        .encoded_len())
}

/// Encode the `Reject` of a command.
pub fn encode_reject(
    buf: &mut [u8],
    request_id: RequestId,
    code: RejectCode,
) -> Result<usize, EncodeError> {
    Ok(RejectEncoder::wrap(buf)?.request_id(request_id).code(code).encoded_len())
}

/// The wire-level code answering a message that did not decode.
pub fn reject_code_of_decode_error(e: &DecodeError) -> RejectCode {
    match e {
        DecodeError::UnknownTemplate(_) => RejectCode::UnknownTemplate,
        DecodeError::UnsupportedSchema(_) | DecodeError::UnsupportedVersion(_) => {
            RejectCode::UnsupportedSchema
        }
        _ => RejectCode::MalformedMessage,
    }
}
