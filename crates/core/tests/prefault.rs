//! `StateMachine::prefault` commits every table at start-up: afterwards a run of trades takes
//! (almost) no page faults, where the same run on a state machine that was not prefaulted
//! takes one per fresh page of the trade index it touches; and nothing visible changes.
//! Linux only (page-fault counts from /proc, `MADV_POPULATE_WRITE` from kernel 5.14).
#![cfg(target_os = "linux")]

mod common;
use common::*;
use novate_core::*;

/// Minor page faults of the calling thread so far (/proc/thread-self/stat, field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("read stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    rest.split(' ').nth(7).expect("minflt field").parse().expect("minflt")
}

const ACCOUNTS: u64 = 100;
const TRADES: u64 = 20_000;

fn limits() -> Limits {
    // A 2M-trade index: 4M slots of 16 bytes (64 MiB), touched at random by trade ids.
    Limits { accounts_max: 128, instruments_max: 4, positions_max: 1024, trades_max: 2_000_000 }
}

fn book() -> (StateMachine, Seq) {
    let mut sm = StateMachine::new(limits()).expect("limits");
    let mut seq = 0;
    let mut setup =
        vec![instrument(1, 1, 500), Command::MarkPrice { instrument: 1, price: 100 * P }];
    for a in 1..=ACCOUNTS {
        setup.push(account(a));
        setup.push(deposit(a, 1 << 80));
    }
    for c in setup {
        seq += 1;
        sm.apply(&c, seq, 0).expect("setup");
    }
    (sm, seq)
}

/// Apply TRADES trades; the minor page faults this thread took meanwhile.
fn run(sm: &mut StateMachine, mut seq: Seq) -> u64 {
    let before = minor_faults();
    for i in 0..TRADES {
        let buy = 1 + i % ACCOUNTS;
        let t = Trade {
            trade_id: 1 + i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 1_000_000_007,
            buy,
            sell: 1 + buy % ACCOUNTS,
            instrument: 1,
            qty: 1 + (i % 7) as i64,
            price: (99 + (i % 3) as i64) * P,
            trade_date: DATE,
        };
        seq += 1;
        sm.apply(&Command::ClearTrade(t), seq, 0).expect("trade clears");
    }
    minor_faults() - before
}

#[test]
fn a_prefaulted_state_machine_takes_no_page_faults_and_changes_nothing() {
    let (mut lazy, seq) = book();
    let lazy_faults = run(&mut lazy, seq);

    let (mut warm, seq) = book();
    let hash = warm.state_hash();
    let (done, asked) = warm.prefault();
    assert!(asked >= 64 << 20, "the trade index alone is 64 MiB: asked {asked}");
    assert_eq!(done, asked, "MADV_POPULATE_WRITE refused (kernel older than 5.14?)");
    assert_eq!(warm.state_hash(), hash, "prefaulting changes no state");
    let warm_faults = run(&mut warm, seq);
    eprintln!("page faults over {TRADES} trades: lazy {lazy_faults}, prefaulted {warm_faults}");

    // Lazily, each fresh page of the index (2 MiB with THP, 4 KiB without) faults once: at
    // least the 32 huge pages of the index. Prefaulted, stray faults (the stack) at most.
    assert!(lazy_faults >= 32, "expected page faults without prefault, got {lazy_faults}");
    assert!(
        warm_faults * 8 <= lazy_faults,
        "prefaulted run took {warm_faults} faults, lazy run {lazy_faults}"
    );
    assert_eq!(warm.state_hash(), lazy.state_hash(), "same commands, same state");
    assert_eq!(warm.position(1, 1), lazy.position(1, 1));
}

/// A snapshot made with room for the limits and prefaulted takes the whole state without
/// growing any table or taking page faults, and holds what `export` gives.
#[test]
fn a_snapshot_with_room_takes_the_state_without_growing_or_faulting() {
    let (mut sm, seq) = book();
    run(&mut sm, seq);
    let mut snap = Snapshot::with_room(&limits());
    let caps = |s: &Snapshot| {
        [
            s.instruments.capacity(),
            s.accounts.capacity(),
            s.positions.capacity(),
            s.trades.capacity(),
        ]
    };
    let room = caps(&snap);
    assert_eq!(room, [4, 128, 1024, 2_000_000]);
    let (done, asked) = snap.prefault();
    assert!(asked >= 2_000_000 * std::mem::size_of::<(Trade, bool)>(), "asked {asked}");
    assert_eq!(done, asked, "MADV_POPULATE_WRITE refused (kernel older than 5.14?)");
    let before = minor_faults();
    sm.export_into(&mut snap);
    let faults = minor_faults() - before;
    assert!(faults <= 8, "an export into a prefaulted snapshot faulted {faults} times");
    assert_eq!(caps(&snap), room, "no table grew");
    let mut want = sm.export();
    want.sort();
    snap.sort();
    assert_eq!(snap, want);
    assert_eq!(snap.trades.len(), TRADES as usize);
    assert_eq!(snap.state_hash(), sm.state_hash());
}
