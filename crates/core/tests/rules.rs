//! One test per rule of SPEC.md (and of docs/SEMANTICS.md), with hand-computed numbers.

mod common;
use common::*;
use novate_core::*;

fn setup() -> Sm {
    let mut s = Sm::new();
    s.ok(instrument(1, 1, 1_000)); // a share, 10% margin
    s.ok(instrument(2, 50, 500)); // an index future x50, 5% margin
    for a in [10, 11, 12] {
        s.ok(account(a));
        s.ok(deposit(a, 1_000_000 * P as i128));
    }
    s
}

#[test]
fn open_reduce_close_and_flip_through_the_engine() {
    let mut s = setup();
    s.ok(trade(1, 10, 11, 1, 10, 100 * P));
    assert_eq!(s.pos(10, 1), (10, 1_000 * P as i128, 0));
    assert_eq!(s.pos(11, 1), (-10, -1_000 * P as i128, 0));
    // 10 sells 4 at 110 to 12: closed = 1000*4/10 = 400; realized = 440 - 400 = 40.
    s.ok(trade(2, 12, 10, 1, 4, 110 * P));
    assert_eq!(s.pos(10, 1), (6, 600 * P as i128, 40 * P as i128));
    // 10 sells 9 at 90: closes 6 (realized += 540 - 600 = -60), opens short 3 at 90.
    s.ok(trade(3, 11, 10, 1, 9, 90 * P));
    assert_eq!(s.pos(10, 1), (-3, -270 * P as i128, -20 * P as i128));
    // 11 was short 10 at 100, bought 9 at 90: realized = -1*9*90 - (-1000*9/10) = 90.
    assert_eq!(s.pos(11, 1), (-1, -100 * P as i128, 90 * P as i128));
    // 10 buys 3 at 80: flat, realized += -1*3*80 - (-270) = 30.
    s.ok(trade(4, 10, 12, 1, 3, 80 * P));
    assert_eq!(s.pos(10, 1), (0, 0, 10 * P as i128));
    let v = s.sm.position(10, 1).unwrap();
    assert_eq!((v.avg_price, v.unrealized), (None, 0));
}

#[test]
fn truncation_of_the_closed_cost_is_toward_zero_for_shorts() {
    let mut s = setup();
    // Short 3 with cost -100 (1e-8 units): three fills at price 1, 33 and 66 units.
    s.ok(trade(1, 11, 10, 1, 1, 1));
    s.ok(trade(2, 11, 10, 1, 1, 33));
    s.ok(trade(3, 11, 10, 1, 1, 66));
    assert_eq!(s.pos(10, 1), (-3, -100, 0));
    // Buy 1 back at 40: closed = -100*1/3 = -33 (toward zero); realized = -40 + 33 = -7.
    s.ok(trade(4, 10, 11, 1, 1, 40));
    assert_eq!(s.pos(10, 1), (-2, -67, -7));
}

#[test]
fn unrealized_and_average_price_use_the_multiplier() {
    let mut s = setup();
    s.ok(trade(1, 10, 11, 2, 3, 4_000 * P));
    s.ok(trade(2, 10, 11, 2, 1, 4_001 * P));
    // cost = (3*4000 + 4001) * 50 = 800_050; avg = 800_050 / (4*50) = 4000.25.
    let v = s.sm.position(10, 2).unwrap();
    assert_eq!(v.cost, 800_050 * P as i128);
    assert_eq!(v.avg_price, Some(400_025 * P / 100));
    // Mark is the last trade price (4001): unrealized = 4*4001*50 - 800_050 = 150.
    assert_eq!(v.unrealized, 150 * P as i128);
    s.ok(Command::MarkPrice { instrument: 2, price: 3_990 * P });
    assert_eq!(s.sm.position(10, 2).unwrap().unrealized, -2_050 * P as i128);
    // An explicit mark sticks: later trades do not move it.
    s.ok(trade(3, 12, 11, 2, 1, 4_100 * P));
    assert_eq!(s.sm.instrument(2).unwrap().mark, 3_990 * P);
    assert_eq!(s.sm.instrument(2).unwrap().last_price, 4_100 * P);
}

#[test]
fn settlement_price_pays_variation_in_ascending_account_order() {
    let mut s = setup();
    s.ok(trade(1, 12, 11, 2, 2, 100 * P)); // 12 long 2, 11 short 2
    s.ok(trade(2, 10, 12, 2, 1, 102 * P)); // 10 long 1; 12 sells 1: realized 2*50 = 100
    let ev = s.ok(Command::SettlementPrice { instrument: 2, price: 105 * P });
    assert_eq!(
        ev,
        vec![
            Event::MarkChanged { instrument: 2, price: 105 * P },
            Event::VariationMargin { account: 10, instrument: 2, amount: 150 * P as i128 },
            Event::VariationMargin { account: 11, instrument: 2, amount: -500 * P as i128 },
            Event::VariationMargin { account: 12, instrument: 2, amount: 250 * P as i128 },
        ]
    );
    assert_eq!(s.pos(12, 2), (1, 5_250 * P as i128, 350 * P as i128));
    assert_eq!(s.pos(11, 2), (-2, -10_500 * P as i128, -500 * P as i128));
    // A flat position gets no variation event.
    s.ok(trade(3, 11, 10, 2, 1, 105 * P));
    let ev = s.ok(Command::SettlementPrice { instrument: 2, price: 106 * P });
    assert_eq!(ev.len(), 3, "{ev:?}");
}

#[test]
fn margin_is_truncated_per_position_and_equity_includes_pnl() {
    let mut s = setup();
    // 3 units at 0.00000333 with 10%: 3*333*1000/10000 = 99.9 -> 99 per position.
    s.ok(trade(1, 10, 11, 1, 3, 333));
    s.ok(trade(2, 10, 11, 2, 1, 100 * P)); // 100*50 = 5000 notional, 5% = 250
    let a = s.sm.account(10).unwrap();
    assert_eq!(a.totals.notional, 999 + 5_000 * P as i128);
    assert_eq!(a.margin, 99 + 250 * P as i128);
    assert_eq!(a.equity, 1_000_000 * P as i128);
    assert_eq!(a.excess, a.equity - a.margin);
    s.ok(Command::MarkPrice { instrument: 2, price: 90 * P });
    let a = s.sm.account(10).unwrap();
    assert_eq!(a.equity, (1_000_000 - 500) * P as i128);
    assert_eq!(a.margin, 99 + 225 * P as i128);
}

#[test]
fn check_order_reasons_come_in_spec_order() {
    let mut s = setup();
    s.ok(account_with(20, 5, 1_000 * P as i128, 10 * P as i128));
    s.rejects(order(99, 1, Side::Buy, 1, P), Reject::UnknownAccount);
    s.rejects(order(99, 99, Side::Buy, 1, P), Reject::UnknownAccount);
    s.rejects(order(20, 99, Side::Buy, 1, P), Reject::UnknownInstrument);
    s.rejects(order(20, 1, Side::Buy, 0, P), Reject::InvalidQuantity);
    s.rejects(order(20, 1, Side::Buy, 1, 0), Reject::InvalidPrice);
    // No collateral: margin fails, but MaxPosition comes first.
    s.rejects(order(20, 1, Side::Buy, 6, 100 * P), Reject::MaxPosition);
    s.rejects(order(20, 1, Side::Buy, 5, 300 * P), Reject::MaxNotional);
    s.rejects(order(20, 1, Side::Buy, 5, 100 * P), Reject::Margin);
    s.ok(deposit(20, 50 * P as i128)); // margin of 5 @ 100 at 10% = 50
    assert_eq!(
        s.ok(order(20, 1, Side::Buy, 5, 100 * P)),
        vec![Event::OrderAccepted { account: 20, instrument: 1 }]
    );
    // With a mark of 97 (a cleared trade), buying 5 at 100 loses 15 > max_loss 10.
    s.ok(trade(1, 10, 11, 1, 1, 97 * P));
    s.rejects(order(20, 1, Side::Buy, 5, 100 * P), Reject::MaxLoss);
    s.ok(Command::UpsertAccount(AccountSpec {
        id: 20,
        max_position: 5,
        max_notional: 0,
        max_loss: 0,
        suspended: true,
    }));
    s.rejects(order(20, 1, Side::Buy, 1, 100 * P), Reject::Suspended);
    assert_eq!(s.sm.position(20, 1), None, "CheckOrder books nothing");
}

#[test]
fn check_order_on_a_reducing_order_passes_a_position_limit_breached_before() {
    let mut s = setup();
    s.ok(account_with(20, 5, 0, 0));
    s.ok(deposit(20, 1_000 * P as i128));
    s.ok(trade(1, 20, 10, 1, 8, P)); // cleared regardless of limits: breach reported
    s.rejects(order(20, 1, Side::Buy, 1, P), Reject::MaxPosition);
    s.ok(order(20, 1, Side::Sell, 3, P)); // |8-3| = 5 <= 5
}

/// `apply_batch` looks a CheckOrder's account, instrument and position up commands ahead of
/// applying it: what the commands before it in the batch create (the account, the instrument,
/// the position) and change (the book) must count, as one by one.
#[test]
fn a_batched_check_order_sees_what_the_commands_before_it_created_and_changed() {
    let cmds = [
        instrument(3, 1, 1_000),
        account_with(20, 5, 0, 0),
        deposit(20, 1_000 * P as i128),
        trade(1, 20, 10, 3, 8, P), // opens 20's position in 3: +8 (a breach of 5)
        order(20, 3, Side::Buy, 1, P), // 9 > 5: needs the position opened above
        order(99, 3, Side::Buy, 1, P),
        order(20, 3, Side::Sell, 13, P), // |8 - 13| = 5
        trade(2, 20, 10, 3, 1, P),       // +9: the book changes after the position is known
        order(20, 3, Side::Sell, 3, P),  // |9 - 3| = 6 > 5
        order(20, 3, Side::Sell, 4, P),  // 5
        order(20, 3, Side::Buy, 0, P),
    ];
    let mut one = setup();
    let want: Vec<_> = cmds.iter().map(|&c| one.apply(c)).collect();
    let mut batched = setup();
    let first = batched.seq + 1;
    let batch: Vec<Sequenced> =
        (first..).zip(cmds).map(|(seq, cmd)| Sequenced { seq, ts: 0, cmd }).collect();
    let mut got = Vec::new();
    batched.sm.apply_batch(&batch, |_, r| got.push(r.map(|e| e.to_vec())));
    assert_eq!(got, want, "apply_batch equals apply, command by command");
    let accepted = Ok(vec![Event::OrderAccepted { account: 20, instrument: 3 }]);
    assert_eq!(got[4], Err(Reject::MaxPosition));
    assert_eq!(got[5], Err(Reject::UnknownAccount));
    assert_eq!(got[6], accepted);
    assert_eq!(got[8], Err(Reject::MaxPosition));
    assert_eq!(got[9], accepted);
    assert_eq!(got[10], Err(Reject::InvalidQuantity));
    assert_eq!(batched.sm.state_hash(), one.sm.state_hash());
}

#[test]
fn clear_trade_books_then_reports_breaches_and_margin_calls() {
    let mut s = setup();
    s.ok(account_with(20, 2, 150 * P as i128, 0));
    s.ok(deposit(20, 10 * P as i128));
    let ev = s.ok(trade(7, 20, 10, 1, 3, 100 * P));
    assert_eq!(
        ev,
        vec![
            Event::TradeCleared { trade_id: 7 },
            Event::PositionChanged {
                account: 20,
                instrument: 1,
                qty: 3,
                cost: 300 * P as i128,
                realized: 0
            },
            Event::PositionChanged {
                account: 10,
                instrument: 1,
                qty: -3,
                cost: -300 * P as i128,
                realized: 0
            },
            Event::LimitBreach { account: 20, reason: Reject::MaxPosition },
            Event::LimitBreach { account: 20, reason: Reject::MaxNotional },
            // margin 30, equity 10
            Event::MarginCall { account: 20, shortfall: 20 * P as i128 },
        ]
    );
}

#[test]
fn suspended_accounts_still_clear() {
    let mut s = setup();
    s.ok(Command::UpsertAccount(AccountSpec {
        id: 10,
        max_position: 0,
        max_notional: 0,
        max_loss: 0,
        suspended: true,
    }));
    s.ok(trade(1, 10, 11, 1, 1, P));
    assert_eq!(s.pos(10, 1).0, 1);
}

#[test]
fn max_loss_breach_after_a_losing_trade() {
    let mut s = setup();
    s.ok(account_with(20, 0, 0, 5 * P as i128));
    s.ok(deposit(20, 1_000 * P as i128));
    s.ok(trade(1, 20, 10, 1, 1, 100 * P));
    // Mark falls to 90 by a trade between others: 20's loss is 10 > 5, reported on 20's next trade.
    s.ok(trade(2, 11, 12, 1, 1, 90 * P));
    let ev = s.ok(trade(3, 20, 12, 1, 1, 90 * P));
    assert!(ev.contains(&Event::LimitBreach { account: 20, reason: Reject::MaxLoss }), "{ev:?}");
}

#[test]
fn duplicate_trade_ids_are_rejected_every_time() {
    let mut s = setup();
    s.ok(trade(5, 10, 11, 1, 1, P));
    s.rejects(trade(5, 10, 11, 1, 1, P), Reject::Duplicate);
    s.rejects(trade(5, 12, 11, 2, 9, 3 * P), Reject::Duplicate);
    s.ok(Command::BustTrade { trade_id: 5 });
    s.rejects(trade(5, 10, 11, 1, 1, P), Reject::Duplicate);
    // Only a booked trade takes its id: one rejected for another reason leaves no trace, so
    // its corrected retry books.
    s.rejects(trade(6, 10, 99, 1, 1, P), Reject::UnknownAccount);
    s.ok(trade(6, 10, 11, 1, 1, P));
    s.rejects(trade(6, 10, 11, 1, 1, P), Reject::Duplicate);
    // The same id with fields that fail a check listed before Duplicate (docs/SEMANTICS.md,
    // "Order of checks") gets that check's reason: those checks read no trade id.
    s.rejects(trade(6, 10, 11, 1, 0, P), Reject::InvalidQuantity);
    s.rejects(trade(6, 10, 10, 1, 1, P), Reject::SelfTrade);
    s.rejects(trade(6, 10, 99, 1, 1, P), Reject::UnknownAccount);
}

#[test]
fn a_trade_reports_risk_for_its_own_two_accounts_only() {
    // SEMANTICS.md, "Risk": other holders re-valued because a trade moved the mark get no
    // events (as with MarkPrice); their account view shows the shortfall.
    let mut s = setup();
    s.ok(account(20));
    s.ok(deposit(20, 200 * P as i128));
    s.ok(trade(1, 20, 10, 1, 10, 100 * P)); // 20: notional 1,000, margin 100, equity 200
    assert!(s.sm.account(20).unwrap().excess > 0);
    let ev = s.ok(trade(2, 11, 12, 1, 1, 80 * P)); // the mark becomes 80
    assert_eq!(
        ev.iter().map(std::mem::discriminant).collect::<Vec<_>>(),
        [ev[0], ev[1], ev[1]].iter().map(std::mem::discriminant).collect::<Vec<_>>()
    );
    assert_eq!(ev[0], Event::TradeCleared { trade_id: 2 });
    assert!(ev[1..].iter().all(|e| matches!(e, Event::PositionChanged { account: 11 | 12, .. })));
    // 20: unrealized 10 * 80 - 1,000 = -200, equity 0, margin 10% of 800 = 80.
    let v = s.sm.account(20).unwrap();
    assert_eq!((v.equity, v.margin, v.excess), (0, 80 * P as i128, -80 * P as i128));
}

#[test]
fn bust_of_a_flipped_position_books_the_reverse_at_the_original_price() {
    let mut s = setup();
    s.ok(trade(1, 10, 11, 1, 5, 10 * P)); // 10 long 5 @ 10
    s.ok(trade(2, 12, 10, 1, 8, 12 * P)); // 10 sells 8 @ 12: realized 10, short 3 @ 12
    assert_eq!(s.pos(10, 1), (-3, -36 * P as i128, 10 * P as i128));
    let ev = s.ok(Command::BustTrade { trade_id: 2 });
    assert_eq!(ev[0], Event::TradeBusted { trade_id: 2 });
    // Reverse: 10 buys 8 @ 12: closes short 3 (realized += -36 + 36 = 0), long 5 @ 12.
    assert_eq!(s.pos(10, 1), (5, 60 * P as i128, 10 * P as i128));
    // 12 was long 8 @ 12 and sells 8 @ 12: flat, realized 0.
    assert_eq!(s.pos(12, 1), (0, 0, 0));
    assert_eq!(
        s.sm.trade(2),
        Some((
            Trade {
                trade_id: 2,
                buy: 12,
                sell: 10,
                instrument: 1,
                qty: 8,
                price: 12 * P,
                trade_date: DATE
            },
            true
        ))
    );
    s.rejects(Command::BustTrade { trade_id: 2 }, Reject::AlreadyBusted);
    s.rejects(Command::BustTrade { trade_id: 3 }, Reject::UnknownTrade);
    s.rejects(Command::BustTrade { trade_id: 0 }, Reject::InvalidId);
    assert_eq!(s.sm.instrument(1).unwrap().last_price, 12 * P, "a bust is not a market price");
}

#[test]
fn every_input_rejection_leaves_the_state_untouched() {
    let mut s = setup();
    s.ok(trade(1, 10, 11, 1, 1, P));
    s.rejects(instrument(0, 1, 0), Reject::InvalidId);
    s.rejects(instrument(3, 0, 0), Reject::InvalidMultiplier);
    s.rejects(instrument(3, 1, -1), Reject::InvalidMarginRate);
    s.rejects(instrument(3, 1, MARGIN_BPS_MAX + 1), Reject::InvalidMarginRate);
    s.rejects(
        Command::UpsertInstrument(InstrumentSpec {
            id: 3,
            multiplier: 1,
            margin_bps: 0,
            settle_days: 31,
        }),
        Reject::InvalidSettleDays,
    );
    s.rejects(instrument(1, 2, 0), Reject::InstrumentInUse);
    s.rejects(account(0), Reject::InvalidId);
    s.rejects(account_with(10, -1, 0, 0), Reject::InvalidLimit);
    s.rejects(account_with(10, 0, -1, 0), Reject::InvalidLimit);
    s.rejects(account_with(10, 0, 0, -1), Reject::InvalidLimit);
    s.rejects(deposit(99, 1), Reject::UnknownAccount);
    s.rejects(deposit(10, i128::MAX), Reject::Overflow);
    s.rejects(deposit(10, -2_000_000 * P as i128), Reject::InsufficientCollateral);
    s.rejects(trade(0, 10, 11, 1, 1, P), Reject::InvalidId);
    s.rejects(trade(2, 10, 11, 1, 0, P), Reject::InvalidQuantity);
    s.rejects(trade(2, 10, 11, 1, -1, P), Reject::InvalidQuantity);
    s.rejects(trade(2, 10, 11, 1, 1, 0), Reject::InvalidPrice);
    s.rejects(trade(2, 10, 11, 1, 1, -P), Reject::InvalidPrice);
    s.rejects(trade(2, 10, 10, 1, 1, P), Reject::SelfTrade);
    s.rejects(trade(2, 99, 11, 1, 1, P), Reject::UnknownAccount);
    s.rejects(trade(2, 10, 99, 1, 1, P), Reject::UnknownAccount);
    s.rejects(trade(2, 10, 11, 9, 1, P), Reject::UnknownInstrument);
    s.rejects(trade(2, 10, 11, 1, i64::MAX, i64::MAX), Reject::Overflow);
    s.rejects(
        Command::ClearTrade(Trade {
            trade_id: 2,
            buy: 10,
            sell: 11,
            instrument: 1,
            qty: 1,
            price: P,
            trade_date: 20260230,
        }),
        Reject::InvalidDate,
    );
    s.rejects(Command::MarkPrice { instrument: 1, price: 0 }, Reject::InvalidPrice);
    s.rejects(Command::MarkPrice { instrument: 9, price: 1 }, Reject::UnknownInstrument);
    s.rejects(Command::SettlementPrice { instrument: 1, price: -1 }, Reject::InvalidPrice);
    s.rejects(Command::SettlementPrice { instrument: 9, price: 1 }, Reject::UnknownInstrument);
    // 2^63 * 2^63 * 50 overflows.
    s.rejects(order(10, 2, Side::Sell, i64::MAX, i64::MAX), Reject::Overflow);
    // The most negative quantity is refused before it is signed (-i64::MIN would overflow).
    s.rejects(order(10, 1, Side::Sell, i64::MIN, P), Reject::InvalidQuantity);
    s.rejects(order(10, 1, Side::Buy, i64::MIN, P), Reject::InvalidQuantity);
    s.rejects(trade(2, 10, 11, 1, i64::MIN, P), Reject::InvalidQuantity);
    s.rejects(trade(2, 10, 11, 1, 1, i64::MIN), Reject::InvalidPrice);
}

#[test]
fn overflow_in_a_later_leg_or_in_settlement_changes_nothing() {
    let mut s = setup();
    s.ok(instrument(3, i64::MAX / 4, 0));
    s.ok(trade(1, 10, 11, 3, 1 << 20, 1 << 20)); // 2^40 * 2^61 = 2^101: fits
                                                 // qty 2^21 at 2^40 more: cost 2^21*2^40*2^61 = 2^122 fits; the position total too.
    s.ok(trade(2, 10, 11, 3, 1 << 21, 1 << 40));
    // Settling at a huge price: 3*2^20 * 2^62 * 2^61 overflows i128 for every holder.
    s.rejects(Command::SettlementPrice { instrument: 3, price: i64::MAX }, Reject::Overflow);
    assert_eq!(s.sm.instrument(3).unwrap().mark, 1 << 40, "mark unchanged");
}

#[test]
fn no_command_may_leave_an_account_that_cannot_be_valued() {
    // SEMANTICS.md, "Overflow": every position's terms fit, yet an account's totals or equity
    // could overflow i128 after a mark move, another pair's trade, a deposit or a settlement.
    // Each is rejected with Overflow and nothing changes.
    let mut s = setup();
    s.ok(account(13));
    s.ok(deposit(13, 1_000_000 * P as i128));
    let m = 1i64 << 40;
    s.ok(instrument(3, m, 0));
    s.ok(instrument(4, m, 0));
    s.ok(trade(1, 10, 11, 3, 1 << 43, 1 << 43)); // notional 2^43 * 2^43 * 2^40 = 2^126
    s.ok(trade(2, 10, 11, 4, 1 << 43, 1 << 42)); // 2^125 more: 3 * 2^125 in all, fits
    let account = |s: &Sm, a| s.sm.account(a).unwrap();
    assert_eq!(account(&s, 10).totals.notional, 3 << 125);
    assert_eq!(account(&s, 11).totals.notional, 3 << 125);
    // Marking 4 at 2^43: each position is worth 2^126 (fits), each account 2^127 (does not).
    s.rejects(Command::MarkPrice { instrument: 4, price: 1 << 43 }, Reject::Overflow);
    // The same move made by a trade of two other accounts (4 has no explicit mark, so the
    // trade's price becomes its mark): 12 and 13 are fine, holders 10 and 11 would not be.
    s.rejects(trade(3, 12, 13, 4, 1, 1 << 43), Reject::Overflow);
    // Marking 4 at 3 * 2^41 fits: notional 3 * 2^124 each, 7 * 2^124 in all; 10 is long and
    // gains 2^43 * 2^41 * 2^40 = 2^124 unrealized, 11 is short and loses as much.
    s.ok(Command::MarkPrice { instrument: 4, price: 3 << 41 });
    let v = account(&s, 10);
    assert_eq!((v.totals.notional, v.totals.unrealized), (7 << 124, 1 << 124));
    // A deposit whose balance fits but whose equity (balance + 2^124) does not.
    s.rejects(deposit(10, i128::MAX - (1 << 100)), Reject::Overflow);
    // On 11 (equity = balance - 2^124) the same deposit fits.
    s.ok(deposit(11, i128::MAX - (1 << 100)));
    // Settling 4 at its mark pays 10 a variation of 2^124 and charges 11 as much.
    s.ok(Command::SettlementPrice { instrument: 4, price: 3 << 41 });
    assert_eq!(account(&s, 10).totals.realized, 1 << 124);
    assert_eq!(account(&s, 11).totals.realized, -(1 << 124));
    // Settling 4 at 2^43 fits every position (2^126 each) but no holder's total: refused.
    s.rejects(Command::SettlementPrice { instrument: 4, price: 1 << 43 }, Reject::Overflow);
    for a in [10, 11, 12, 13] {
        assert!(s.sm.account(a).is_ok(), "account {a} can be valued");
    }
}

#[test]
fn withdrawals_must_leave_equity_above_margin() {
    let mut s = setup();
    s.ok(trade(1, 10, 11, 1, 1_000, 100 * P)); // margin 10% of 100_000 = 10_000
    s.rejects(deposit(10, -(990_001 * P as i128)), Reject::Margin);
    let ev = s.ok(deposit(10, -(990_000 * P as i128)));
    assert_eq!(
        ev,
        vec![Event::CollateralChanged {
            account: 10,
            amount: -(990_000 * P as i128),
            balance: 10_000 * P as i128
        }]
    );
}

#[test]
fn capacities_are_typed_rejections() {
    let mut s =
        Sm::with(Limits { accounts_max: 3, instruments_max: 2, positions_max: 3, trades_max: 2 });
    s.ok(instrument(1, 1, 0));
    s.ok(instrument(2, 1, 0));
    s.rejects(instrument(3, 1, 0), Reject::InstrumentCapacity);
    s.ok(instrument(2, 1, 10)); // an update needs no room
    for a in 1..=3 {
        s.ok(account(a));
    }
    s.rejects(account(4), Reject::AccountCapacity);
    s.ok(trade(1, 1, 2, 1, 1, P)); // 2 positions
    s.rejects(trade(2, 1, 3, 2, 1, P), Reject::PositionCapacity); // would need 2 more
    s.ok(trade(2, 1, 3, 1, 1, P)); // 1 more: 3
    s.rejects(trade(3, 2, 3, 1, 1, P), Reject::TradeCapacity);
    assert_eq!(s.sm.positions_len(), 3);
}

#[test]
fn limits_are_validated() {
    assert!(matches!(
        StateMachine::new(Limits { accounts_max: 0, ..Limits::default() }),
        Err(LimitsError::Zero("accounts_max"))
    ));
    assert!(matches!(
        StateMachine::new(Limits { trades_max: Limits::EACH_MAX + 1, ..Limits::default() }),
        Err(LimitsError::TooLarge("trades_max"))
    ));
}

#[test]
fn state_hash_ignores_seq_and_insertion_order_but_not_content() {
    let mut a = Sm::new();
    let mut b = Sm::new();
    a.ok(account(1));
    a.ok(account(2));
    b.seq = 1_000;
    b.ok(account(2));
    b.ok(account(1));
    assert_eq!(a.sm.state_hash(), b.sm.state_hash());
    b.ok(deposit(1, 1));
    assert_ne!(a.sm.state_hash(), b.sm.state_hash());
}

#[test]
fn limits_are_inclusive_a_value_equal_to_the_limit_passes() {
    let mut s = setup();
    s.ok(account_with(20, 5, 500 * P as i128, 10 * P as i128));
    s.ok(deposit(20, 1_000 * P as i128));
    s.ok(order(20, 1, Side::Buy, 5, 100 * P)); // |qty| 5 == 5, notional 500 == 500
    s.rejects(order(20, 1, Side::Buy, 5, 100 * P + 1), Reject::MaxNotional);
    s.ok(trade(1, 10, 11, 1, 1, 98 * P)); // mark 98
    s.ok(order(20, 1, Side::Buy, 5, 100 * P)); // loss 5*2 = 10 == max_loss
    s.rejects(order(20, 1, Side::Buy, 5, 100 * P + 1), Reject::MaxLoss);
    // Margin: equity == margin passes. 5 @ 100 at 10% = 50; collateral 50, no loss at mark 100.
    s.ok(account(21));
    s.ok(deposit(21, 50 * P as i128));
    s.ok(Command::MarkPrice { instrument: 1, price: 100 * P });
    s.ok(order(21, 1, Side::Buy, 5, 100 * P));
    s.rejects(order(21, 1, Side::Buy, 6, 100 * P), Reject::Margin);
}

#[test]
fn state_hash_of_a_fixed_state_is_pinned() {
    // Replicas and stored snapshots compare this value: a change here is a format change.
    let mut s = setup();
    s.ok(trade(1, 10, 11, 2, 3, 4_000 * P));
    s.ok(Command::SettlementPrice { instrument: 2, price: 4_010 * P });
    s.ok(Command::BustTrade { trade_id: 1 });
    let snap = s.sm.export();
    assert_eq!(snap.state_hash(), s.sm.state_hash());
    assert_eq!(format!("{:016x}", s.sm.state_hash()), PINNED_HASH);
}

const PINNED_HASH: &str = "58e850bea5f222d8";

#[test]
fn a_state_hash_counts_records_changed_many_times_since_the_last_once() {
    // Full tables: every position and instrument exists, so the lists of records changed since
    // the last state hash can hold each once and no more (a position changed twice listed twice
    // would overrun them: debug builds check the capacity). Busts of trades hashed already and
    // not yet; partial settles now and then. The hashes equal those of the exported records.
    let limits = Limits { accounts_max: 4, instruments_max: 2, positions_max: 8, trades_max: 512 };
    let (mut a, mut b) = (Sm::with(limits), Sm::with(limits));
    let mut cmds = vec![instrument(1, 1, 1_000), instrument(2, 50, 500)];
    for id in 1..=4 {
        cmds.push(account(id));
        cmds.push(deposit(id, 1_000_000 * P as i128));
    }
    for k in 0..480u64 {
        let (buy, sell) = (1 + k % 4, 1 + (k + 1 + k / 4 % 3) % 4);
        let price = (100 + (k % 7) as i64) * P;
        cmds.push(trade(k + 1, buy, sell, 1 + (k / 3 % 2) as u32, 1 + (k % 5) as i64, price));
        if k % 97 == 0 {
            cmds.push(Command::SettlementPrice { instrument: 2, price: 101 * P });
        }
        if k % 61 == 60 {
            // A trade cleared long ago (in the digest at `b`'s next hash) and one just cleared.
            cmds.push(Command::BustTrade { trade_id: k - 50 });
            cmds.push(Command::BustTrade { trade_id: k + 1 });
        }
    }
    let mut hashes = Vec::new();
    for (i, c) in cmds.iter().enumerate() {
        a.ok(*c);
        b.ok(*c);
        if i % 7 == 0 {
            b.sm.settle_some(3); // as an idle engine does, a few records at a time
        }
        if i % 150 == 149 {
            // `b` is hashed now and then (alone, or with a snapshot's export), `a` only at the
            // end.
            let want = b.sm.export();
            if i % 300 == 149 {
                hashes.push(b.sm.state_hash());
            } else {
                let mut snap = Snapshot::default();
                hashes.push(b.sm.export_hashed(&mut snap));
                assert_eq!(snap, want, "export_hashed exports what export does");
            }
            assert_eq!(want.state_hash(), *hashes.last().unwrap());
        }
    }
    assert_eq!(a.sm.positions_len(), 8, "every position is open");
    assert_eq!(a.sm.settle_some(5), 5, "more than 5 records are out of the digest");
    while a.sm.settle_some(5) == 5 {}
    assert_eq!(a.sm.settle_some(5), 0, "fewer than asked: none was left");
    b.sm.settle_some(usize::MAX);
    assert_eq!(b.sm.settle_some(1), 0, "an unbounded settle leaves nothing");
    assert_eq!(a.sm.state_hash(), b.sm.state_hash());
    assert_eq!(a.sm.state_hash(), a.sm.export().state_hash());
    assert_eq!(hashes.len(), cmds.len() / 150);
    assert!(hashes.windows(2).all(|w| w[0] != w[1]), "the state moved between the hashes");
}

#[test]
fn changed_positions_name_the_slots_whose_books_moved() {
    let mut s = setup();
    let slot = |s: &Sm, a, i| s.sm.position_slot(a, i).unwrap();
    s.ok(trade(1, 10, 11, 1, 10, 100 * P));
    let (b, sl) = (slot(&s, 10, 1), slot(&s, 11, 1));
    assert_eq!(s.sm.changed_positions(), &[b, sl], "buyer then seller, as the events");
    let p = s.sm.position_at(b).unwrap();
    assert_eq!((p.account, p.instrument, p.book.qty), (10, 1, 10));
    assert_eq!((p.row, p.col), (s.sm.row_of(10).unwrap(), s.sm.col_of(1).unwrap()));
    assert_eq!(s.sm.account_at(p.row).unwrap(), s.sm.account(10).unwrap());
    assert_eq!(s.sm.instrument_at(p.col), s.sm.instrument(1));
    // A mark moves no book; a rejected command changes nothing.
    s.ok(Command::MarkPrice { instrument: 1, price: 90 * P });
    assert!(s.sm.changed_positions().is_empty());
    s.ok(trade(2, 12, 10, 1, 4, 110 * P));
    assert_eq!(s.sm.changed_positions().len(), 2);
    assert!(s.sm.apply(&trade(2, 12, 10, 1, 4, 110 * P), 99, 0).is_err(), "duplicate");
    assert!(s.sm.changed_positions().is_empty());
    // A settlement moves every open position of the instrument, in its event order.
    let evs = s.sm.apply(&Command::SettlementPrice { instrument: 1, price: 95 * P }, 100, 0);
    let accounts: Vec<_> = evs
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Event::VariationMargin { account, .. } => Some(*account),
            _ => None,
        })
        .collect();
    let slots: Vec<_> = accounts.iter().map(|&a| slot(&s, a, 1)).collect();
    assert_eq!(s.sm.changed_positions(), &slots[..]);
    assert_eq!(accounts, vec![10, 11, 12]);
    assert_eq!(s.sm.account_at(99), Err(Reject::UnknownAccount));
    assert_eq!(s.sm.instrument_at(99), None);
    assert!(s.sm.position_at(u32::MAX).is_none());
}

#[test]
fn trade_dates_are_checked_on_every_change_of_date() {
    // The state machine remembers the last valid date; each date that differs from it is
    // checked again, whatever came between.
    let mut s = setup();
    let on = |id: TradeId, trade_date: Date| {
        Command::ClearTrade(Trade {
            trade_id: id,
            buy: 10,
            sell: 11,
            instrument: 1,
            qty: 1,
            price: P,
            trade_date,
        })
    };
    s.rejects(on(1, 0), Reject::InvalidDate); // a fresh state machine: nothing remembered yet
    s.ok(on(1, 20260105));
    s.rejects(on(2, 20260230), Reject::InvalidDate);
    s.ok(on(2, 20260105));
    s.rejects(on(3, 20260230), Reject::InvalidDate);
    s.ok(on(3, 20240229)); // leap day
    s.rejects(on(4, 20250229), Reject::InvalidDate);
    s.rejects(on(4, 0), Reject::InvalidDate);
    s.ok(on(4, 20240229));
    s.ok(on(5, 20260105));
}

#[test]
fn every_command_checks_in_the_documented_order() {
    // docs/SEMANTICS.md, "Order of checks": each pair of faults below is answered by the one
    // listed first there.
    let mut s = setup();
    s.ok(trade(1, 10, 11, 1, 1, P));
    let ins = |id, multiplier, margin_bps, settle_days| {
        Command::UpsertInstrument(InstrumentSpec { id, multiplier, margin_bps, settle_days })
    };
    s.rejects(ins(0, 0, -1, 31), Reject::InvalidId);
    s.rejects(ins(3, 0, -1, 31), Reject::InvalidMultiplier);
    s.rejects(ins(3, 1, -1, 31), Reject::InvalidMarginRate);
    s.rejects(ins(1, 2, 0, 31), Reject::InvalidSettleDays); // 1 is in use: checked later
    s.rejects(account_with(0, -1, 0, 0), Reject::InvalidId);
    s.rejects(deposit(99, i128::MAX), Reject::UnknownAccount);
    s.rejects(deposit(10, i128::MAX), Reject::Overflow);
    s.rejects(order(99, 9, Side::Sell, 0, 0), Reject::InvalidQuantity);
    s.rejects(order(99, 9, Side::Sell, 1, 0), Reject::InvalidPrice);
    s.rejects(order(99, 9, Side::Sell, 1, P), Reject::UnknownAccount);
    s.rejects(trade(0, 99, 99, 9, 0, 0), Reject::InvalidId);
    s.rejects(trade(1, 99, 99, 9, 0, 0), Reject::InvalidQuantity);
    s.rejects(trade(1, 99, 99, 9, 1, 0), Reject::InvalidPrice);
    let dated = |date| {
        Command::ClearTrade(Trade {
            trade_id: 1,
            buy: 99,
            sell: 99,
            instrument: 9,
            qty: 1,
            price: P,
            trade_date: date,
        })
    };
    s.rejects(dated(20260230), Reject::InvalidDate);
    s.rejects(dated(20260227), Reject::SelfTrade);
    s.rejects(trade(1, 98, 99, 9, 1, P), Reject::UnknownAccount);
    s.rejects(trade(1, 10, 99, 9, 1, P), Reject::UnknownAccount);
    s.rejects(trade(1, 10, 11, 9, 1, P), Reject::UnknownInstrument);
    s.rejects(trade(1, 10, 11, 1, i64::MAX, i64::MAX), Reject::Duplicate); // before Overflow
    s.rejects(Command::BustTrade { trade_id: 0 }, Reject::InvalidId);
    s.rejects(Command::BustTrade { trade_id: 2 }, Reject::UnknownTrade);
    s.rejects(Command::MarkPrice { instrument: 9, price: 0 }, Reject::InvalidPrice);
    s.rejects(Command::SettlementPrice { instrument: 9, price: -P }, Reject::InvalidPrice);
    // A zero adjustment is accepted: it changes nothing but is answered and journaled.
    assert_eq!(
        s.ok(deposit(10, 0)),
        vec![Event::CollateralChanged { account: 10, amount: 0, balance: 1_000_000 * P as i128 }]
    );
}
