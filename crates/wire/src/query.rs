//! Queries, subscription requests and their reports (templates 301..319), to and from the core's
//! view types (`PositionView`, `AccountView`, `InstrumentView`).
//!
//! A member sends a [`Request`] with its own request id; the daemon answers each with exactly one
//! [`Report`] (or a `Reject` carrying the request id, e.g. `UnknownAccount`). Subscriptions are
//! named by the request id of their `Subscribe`; their batches and end come as
//! [`Report::Subscription`].

use crate::convert::{bool_of, RequestId};
use crate::generated::*;
use crate::rt::EncodeError;
use novate_core::{
    AccountId, AccountSpec, AccountView, InstrumentId, InstrumentSpec, InstrumentView,
    PositionView, Seq, Totals,
};

/// A query or subscription request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Position {
        request_id: RequestId,
        account: AccountId,
        instrument: InstrumentId,
    },
    Account {
        request_id: RequestId,
        account: AccountId,
    },
    Instrument {
        request_id: RequestId,
        instrument: InstrumentId,
    },
    /// The state hash after every command sent before it on the connection; its report comes
    /// after every event of those commands that the connection's subscriptions take.
    StateHash {
        request_id: RequestId,
    },
    /// Events of `account` (0: every account) whose kind bit is set in `kinds` (0: every kind).
    Subscribe {
        request_id: RequestId,
        account: AccountId,
        kinds: u16,
    },
    /// End the subscription named by the request id of its `Subscribe`.
    Unsubscribe {
        request_id: RequestId,
        subscription: RequestId,
    },
}

/// The answer to a [`Request`] (or a subscription's batch header and end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// `view_seq`: the seq of the last command the published views include.
    Position {
        request_id: RequestId,
        view_seq: Seq,
        position: Option<PositionView>,
    },
    Account {
        request_id: RequestId,
        view_seq: Seq,
        account: AccountView,
    },
    Instrument {
        request_id: RequestId,
        view_seq: Seq,
        instrument: Option<InstrumentView>,
    },
    StateHash {
        request_id: RequestId,
        seq: Seq,
        hash: u64,
    },
    /// `events`: with [`SubscriptionState::Events`], how many SBE event frames follow.
    Subscription {
        subscription: RequestId,
        state: SubscriptionState,
        events: u32,
    },
}

impl Request {
    pub fn request_id(&self) -> RequestId {
        match *self {
            Request::Position { request_id, .. }
            | Request::Account { request_id, .. }
            | Request::Instrument { request_id, .. }
            | Request::StateHash { request_id }
            | Request::Subscribe { request_id, .. }
            | Request::Unsubscribe { request_id, .. } => request_id,
        }
    }
}

/// Encode a request at the start of `buf`; returns the bytes written.
pub fn encode_request(buf: &mut [u8], r: &Request) -> Result<usize, EncodeError> {
    Ok(match *r {
        Request::Position { request_id, account, instrument } => QueryPositionEncoder::wrap(buf)?
            .request_id(request_id)
            .account_id(account)
            .instrument_id(instrument)
            .encoded_len(),
        Request::Account { request_id, account } => {
            QueryAccountEncoder::wrap(buf)?.request_id(request_id).account_id(account).encoded_len()
        }
        Request::Instrument { request_id, instrument } => QueryInstrumentEncoder::wrap(buf)?
            .request_id(request_id)
            .instrument_id(instrument)
            .encoded_len(),
        Request::StateHash { request_id } => {
            QueryStateHashEncoder::wrap(buf)?.request_id(request_id).encoded_len()
        }
        Request::Subscribe { request_id, account, kinds } => SubscribeEncoder::wrap(buf)?
            .request_id(request_id)
            .account_id(account)
            .kinds(kinds)
            .encoded_len(),
        Request::Unsubscribe { request_id, subscription } => UnsubscribeEncoder::wrap(buf)?
            .request_id(request_id)
            .subscription(subscription)
            .encoded_len(),
    })
}

/// Encode a report at the start of `buf`; returns the bytes written.
pub fn encode_report(buf: &mut [u8], r: &Report) -> Result<usize, EncodeError> {
    Ok(match *r {
        Report::Position { request_id, view_seq, position } => {
            let p = position.unwrap_or(PositionView {
                account: 0,
                instrument: 0,
                qty: 0,
                cost: 0,
                realized: 0,
                unrealized: 0,
                avg_price: None,
            });
            PositionReportEncoder::wrap(buf)?
                .request_id(request_id)
                .view_seq(view_seq)
                .account_id(p.account)
                .qty(p.qty)
                .cost(p.cost)
                .realized(p.realized)
                .unrealized(p.unrealized)
                .avg_price(p.avg_price.unwrap_or(0))
                .instrument_id(p.instrument)
                .found(bool_of(position.is_some()))
                .has_avg_price(bool_of(p.avg_price.is_some()))
                .encoded_len()
        }
        Report::Account { request_id, view_seq, account: a } => AccountReportEncoder::wrap(buf)?
            .request_id(request_id)
            .view_seq(view_seq)
            .account_id(a.spec.id)
            .max_position(a.spec.max_position)
            .max_notional(a.spec.max_notional)
            .max_loss(a.spec.max_loss)
            .collateral(a.collateral)
            .notional(a.totals.notional)
            .unrealized(a.totals.unrealized)
            .realized(a.totals.realized)
            .equity(a.equity)
            .margin(a.margin)
            .excess(a.excess)
            .positions(a.positions)
            .suspended(bool_of(a.spec.suspended))
            .encoded_len(),
        Report::Instrument { request_id, view_seq, instrument } => {
            let i = instrument.unwrap_or(InstrumentView {
                spec: InstrumentSpec { id: 0, multiplier: 0, margin_bps: 0, settle_days: 0 },
                mark: 0,
                last_price: 0,
                holders: 0,
            });
            InstrumentReportEncoder::wrap(buf)?
                .request_id(request_id)
                .view_seq(view_seq)
                .multiplier(i.spec.multiplier)
                .margin_bps(i.spec.margin_bps)
                .mark(i.mark)
                .last_price(i.last_price)
                .instrument_id(i.spec.id)
                .holders(i.holders)
                .settle_days(i.spec.settle_days)
                .found(bool_of(instrument.is_some()))
                .encoded_len()
        }
        Report::StateHash { request_id, seq, hash } => StateHashReportEncoder::wrap(buf)?
            .request_id(request_id)
            .seq(seq)
            .hash(hash)
            .encoded_len(),
        Report::Subscription { subscription, state, events } => {
            SubscriptionStatusEncoder::wrap(buf)?
                .subscription(subscription)
                .events(events)
                .state(state)
                .encoded_len()
        }
    })
}

impl Message<'_> {
    /// The request of a query or subscription message; `None` for any other message.
    pub fn request(&self) -> Option<Request> {
        Some(match self {
            Message::QueryPosition(d) => Request::Position {
                request_id: d.request_id(),
                account: d.account_id(),
                instrument: d.instrument_id(),
            },
            Message::QueryAccount(d) => {
                Request::Account { request_id: d.request_id(), account: d.account_id() }
            }
            Message::QueryInstrument(d) => {
                Request::Instrument { request_id: d.request_id(), instrument: d.instrument_id() }
            }
            Message::QueryStateHash(d) => Request::StateHash { request_id: d.request_id() },
            Message::Subscribe(d) => Request::Subscribe {
                request_id: d.request_id(),
                account: d.account_id(),
                kinds: d.kinds(),
            },
            Message::Unsubscribe(d) => {
                Request::Unsubscribe { request_id: d.request_id(), subscription: d.subscription() }
            }
            _ => return None,
        })
    }

    /// The report of a report message; `None` for any other message.
    pub fn report(&self) -> Option<Report> {
        let yes = |b: BooleanType| b == BooleanType::True;
        Some(match self {
            Message::PositionReport(d) => Report::Position {
                request_id: d.request_id(),
                view_seq: d.view_seq(),
                position: yes(d.found()).then(|| PositionView {
                    account: d.account_id(),
                    instrument: d.instrument_id(),
                    qty: d.qty(),
                    cost: d.cost(),
                    realized: d.realized(),
                    unrealized: d.unrealized(),
                    avg_price: yes(d.has_avg_price()).then(|| d.avg_price()),
                }),
            },
            Message::AccountReport(d) => Report::Account {
                request_id: d.request_id(),
                view_seq: d.view_seq(),
                account: AccountView {
                    spec: AccountSpec {
                        id: d.account_id(),
                        max_position: d.max_position(),
                        max_notional: d.max_notional(),
                        max_loss: d.max_loss(),
                        suspended: yes(d.suspended()),
                    },
                    collateral: d.collateral(),
                    totals: Totals {
                        notional: d.notional(),
                        unrealized: d.unrealized(),
                        realized: d.realized(),
                        margin: d.margin(),
                    },
                    equity: d.equity(),
                    margin: d.margin(),
                    excess: d.excess(),
                    positions: d.positions(),
                },
            },
            Message::InstrumentReport(d) => Report::Instrument {
                request_id: d.request_id(),
                view_seq: d.view_seq(),
                instrument: yes(d.found()).then(|| InstrumentView {
                    spec: InstrumentSpec {
                        id: d.instrument_id(),
                        multiplier: d.multiplier(),
                        margin_bps: d.margin_bps(),
                        settle_days: d.settle_days(),
                    },
                    mark: d.mark(),
                    last_price: d.last_price(),
                    holders: d.holders(),
                }),
            },
            Message::StateHashReport(d) => {
                Report::StateHash { request_id: d.request_id(), seq: d.seq(), hash: d.hash() }
            }
            Message::SubscriptionStatus(d) => Report::Subscription {
                subscription: d.subscription(),
                state: d.state(),
                events: d.events(),
            },
            _ => return None,
        })
    }
}
