//! A snapshot comes from disk, so `restore` takes it as input: damaged records (ids that name
//! nothing or repeat, extreme or inconsistent numbers, trades of unknown accounts) are refused
//! with a typed `RestoreError`, or restored into a state that works. For every damaged snapshot:
//! - `restore` does not panic (overflow checks on, as in every test build);
//! - if it restores, the state hashes as the snapshot does, every account can be valued, and
//!   every kind of command (trades between all accounts, busts of every remembered trade,
//!   marks, settlements, orders, withdrawals) is answered without a panic, each rejection
//!   leaving the hash unchanged and the kept digest equal to the export's.

mod common;
use common::*;
use novate_core::*;
use proptest::prelude::*;

const LIMITS: Limits =
    Limits { accounts_max: 8, instruments_max: 4, positions_max: 24, trades_max: 64 };

/// A small book: 4 accounts, 3 instruments (one without a mark), positions long, short and
/// flat, trades (one busted).
fn snapshot() -> Snapshot {
    let mut s = Sm::with(LIMITS);
    s.ok(instrument(1, 1, 1_000));
    s.ok(instrument(2, 50, 500));
    s.ok(instrument(3, 10, 0));
    for a in 1..=4 {
        s.ok(account_with(a, 100, 0, 0));
        s.ok(deposit(a, 1_000_000 * P as i128));
    }
    s.ok(Command::MarkPrice { instrument: 2, price: 4_000 * P });
    let mut id = 0;
    for (buy, sell, ins, qty, price) in [
        (1, 2, 1, 10, 100),
        (2, 1, 1, 4, 103),
        (3, 4, 2, 2, 4_010),
        (4, 3, 2, 2, 3_990),
        (1, 3, 3, 7, 12),
        (2, 4, 3, 3, 11),
    ] {
        id += 1;
        s.ok(trade(id, buy, sell, ins, qty, price * P));
    }
    s.ok(Command::BustTrade { trade_id: 2 });
    s.sm.export()
}

/// Values at the edges of each type, and ordinary ones.
fn int64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(-1),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(100 * P),
        Just(-100 * P),
        -1_000i64..1_000,
    ]
}

fn int128() -> impl Strategy<Value = i128> {
    prop_oneof![
        Just(0),
        Just(-1),
        Just(i128::MAX),
        Just(i128::MIN),
        Just(i128::from(i64::MAX) * 3),
        Just(1_000 * P as i128),
        int64().prop_map(i128::from),
    ]
}

/// One change to a snapshot's records: which record (modulo the count) and what.
#[derive(Clone, Debug)]
enum Change {
    InstrumentSpec(usize, i64, i64, u8),
    InstrumentPrices(usize, i64, i64),
    AccountId(usize, u64),
    AccountLimits(usize, i64, i64, i64, bool),
    Collateral(usize, i128),
    PositionIds(usize, u64, u32),
    PositionBook(usize, i64, i128, i128),
    TradeFields(usize, u64, u64, u64, u32),
    TradeNumbers(usize, i64, i64, u32),
    TradeBusted(usize, bool),
    Repeat(u8, usize),
    Drop(u8, usize),
}

fn change() -> impl Strategy<Value = Change> {
    let ix = any::<usize>();
    let id = prop_oneof![Just(0u64), 1u64..=5];
    prop_oneof![
        (ix, int64(), int64(), 0u8..=40)
            .prop_map(|(i, m, r, d)| Change::InstrumentSpec(i, m, r, d)),
        (ix, int64(), int64()).prop_map(|(i, m, l)| Change::InstrumentPrices(i, m, l)),
        (ix, id.clone()).prop_map(|(i, a)| Change::AccountId(i, a)),
        (ix, int64(), int64(), int64(), any::<bool>())
            .prop_map(|(i, p, n, l, s)| Change::AccountLimits(i, p, n, l, s)),
        (ix, int128()).prop_map(|(i, c)| Change::Collateral(i, c)),
        (ix, id.clone(), 0u32..=4).prop_map(|(i, a, n)| Change::PositionIds(i, a, n)),
        (ix, int64(), int128(), int128()).prop_map(|(i, q, c, r)| Change::PositionBook(i, q, c, r)),
        (ix, 0u64..=8, id.clone(), id, 0u32..=4)
            .prop_map(|(i, t, b, s, n)| Change::TradeFields(i, t, b, s, n)),
        (ix, int64(), int64(), prop_oneof![Just(20260105u32), Just(0), Just(20260230)])
            .prop_map(|(i, q, p, d)| Change::TradeNumbers(i, q, p, d)),
        (ix, any::<bool>()).prop_map(|(i, b)| Change::TradeBusted(i, b)),
        (0u8..4, ix).prop_map(|(k, i)| Change::Repeat(k, i)),
        (0u8..4, ix).prop_map(|(k, i)| Change::Drop(k, i)),
    ]
}

fn pick<T>(v: &mut [T], i: usize) -> Option<&mut T> {
    let n = v.len();
    (n > 0).then(|| &mut v[i % n])
}

fn repeat<T: Clone>(v: &mut Vec<T>, i: usize) {
    if !v.is_empty() {
        let x = v[i % v.len()].clone();
        v.push(x);
    }
}

fn drop_one<T>(v: &mut Vec<T>, i: usize) {
    if !v.is_empty() {
        let n = v.len();
        v.remove(i % n);
    }
}

fn damage(snap: &mut Snapshot, c: &Change) {
    match *c {
        Change::InstrumentSpec(i, m, r, d) => {
            if let Some((spec, _, _)) = pick(&mut snap.instruments, i) {
                (spec.multiplier, spec.margin_bps, spec.settle_days) = (m, r, d);
            }
        }
        Change::InstrumentPrices(i, m, l) => {
            if let Some((_, mark, last)) = pick(&mut snap.instruments, i) {
                (*mark, *last) = (m, l);
            }
        }
        Change::AccountId(i, a) => {
            if let Some((spec, _)) = pick(&mut snap.accounts, i) {
                spec.id = a;
            }
        }
        Change::AccountLimits(i, p, n, l, s) => {
            if let Some((spec, _)) = pick(&mut snap.accounts, i) {
                (spec.max_position, spec.max_notional, spec.max_loss, spec.suspended) =
                    (p, i128::from(n), i128::from(l), s);
            }
        }
        Change::Collateral(i, c) => {
            if let Some((_, collateral)) = pick(&mut snap.accounts, i) {
                *collateral = c;
            }
        }
        Change::PositionIds(i, a, n) => {
            if let Some((account, ins, _)) = pick(&mut snap.positions, i) {
                (*account, *ins) = (a, n);
            }
        }
        Change::PositionBook(i, q, c, r) => {
            if let Some((_, _, book)) = pick(&mut snap.positions, i) {
                *book = Book { qty: q, cost: c, realized: r };
            }
        }
        Change::TradeFields(i, t, b, s, n) => {
            if let Some((trade, _)) = pick(&mut snap.trades, i) {
                (trade.trade_id, trade.buy, trade.sell, trade.instrument) = (t, b, s, n);
            }
        }
        Change::TradeNumbers(i, q, p, d) => {
            if let Some((trade, _)) = pick(&mut snap.trades, i) {
                (trade.qty, trade.price, trade.trade_date) = (q, p, d);
            }
        }
        Change::TradeBusted(i, b) => {
            if let Some((_, busted)) = pick(&mut snap.trades, i) {
                *busted = b;
            }
        }
        Change::Repeat(k, i) | Change::Drop(k, i) => {
            let rep = matches!(c, Change::Repeat(..));
            match (k, rep) {
                (0, true) => repeat(&mut snap.instruments, i),
                (1, true) => repeat(&mut snap.accounts, i),
                (2, true) => repeat(&mut snap.positions, i),
                (_, true) => repeat(&mut snap.trades, i),
                (0, false) => drop_one(&mut snap.instruments, i),
                (1, false) => drop_one(&mut snap.accounts, i),
                (2, false) => drop_one(&mut snap.positions, i),
                (_, false) => drop_one(&mut snap.trades, i),
            }
        }
    }
}

/// Every kind of command over the restored state; none may panic, and a rejection changes
/// nothing.
fn drive(sm: &mut StateMachine, snap: &Snapshot) {
    let mut seq = snap.last_seq;
    let mut run = |sm: &mut StateMachine, c: Command| {
        let before = sm.state_hash();
        seq += 1;
        if sm.apply(&c, seq, 0).is_err() {
            assert_eq!(sm.state_hash(), before, "a rejected {c:?} changed the state");
        }
    };
    let accounts: Vec<u64> = snap.accounts.iter().map(|a| a.0.id).collect();
    let instruments: Vec<u32> = snap.instruments.iter().map(|i| i.0.id).collect();
    for t in &snap.trades {
        run(sm, Command::BustTrade { trade_id: t.0.trade_id });
    }
    let mut id = 1_000;
    for &ins in &instruments {
        for &b in &accounts {
            for &s in &accounts {
                id += 1;
                run(sm, trade(id, b, s, ins, 3, 101 * P));
                run(sm, order(b, ins, Side::Sell, 5, 99 * P));
            }
        }
        run(sm, Command::MarkPrice { instrument: ins, price: 95 * P });
        run(sm, Command::SettlementPrice { instrument: ins, price: 97 * P });
        run(sm, instrument(ins, 1, 2_000));
    }
    for &a in &accounts {
        run(sm, deposit(a, -(10 * P as i128)));
        let _ = sm.account(a);
    }
    let export = sm.export();
    assert_eq!(sm.state_hash(), export.state_hash(), "the kept digest left the records'");
}

fn check(changes: &[Change]) -> bool {
    let mut snap = snapshot();
    for c in changes {
        damage(&mut snap, c);
    }
    let Ok(mut sm) = StateMachine::restore(LIMITS, &snap) else { return false };
    assert_eq!(sm.state_hash(), snap.state_hash(), "restored state hashes as its snapshot");
    for (spec, _) in &snap.accounts {
        sm.account(spec.id).expect("every restored account can be valued");
    }
    drive(&mut sm, &snap);
    true
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("RESTORE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_damaged_snapshot_is_refused_or_restores_a_working_state(
        changes in prop::collection::vec(change(), 1..4)
    ) {
        check(&changes);
    }
}

#[test]
fn an_undamaged_snapshot_restores_and_works() {
    assert!(check(&[]));
}

#[test]
fn the_damage_reaches_both_outcomes() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut restored, mut refused) = (0, 0);
    for _ in 0..300 {
        let changes =
            prop::collection::vec(change(), 1..4).new_tree(&mut runner).unwrap().current();
        if check(&changes) {
            restored += 1;
        } else {
            refused += 1;
        }
    }
    println!("300 damaged snapshots: {restored} restored and driven, {refused} refused");
    assert!(restored >= 30 && refused >= 30, "{restored} restored, {refused} refused");
}
