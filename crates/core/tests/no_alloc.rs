//! `apply` allocates nothing after start-up: a counting global allocator proves it over every
//! command kind, accepted and rejected, including mark-to-market over many holders.

mod common;
use common::*;
use novate_core::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

thread_local! {
    /// Allocations made by this thread. Per thread, not global: libtest's main thread does its
    /// own bookkeeping (allocating) while the test thread runs, and on a loaded machine that
    /// overlaps the measured section. Const-initialised and without a destructor, so reading
    /// it from inside the allocator never allocates.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

thread_local! {
    /// This thread is a lookup stage's: its allocations also go to `STAGE_ALLOCATIONS`.
    static STAGE: Cell<bool> = const { Cell::new(false) };
}

/// Allocations made by lookup stages' threads (set by their `on_start`).
static STAGE_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

fn count() {
    // `try_with`: a thread being torn down may still free/allocate after its TLS is gone.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    if STAGE.try_with(Cell::get).unwrap_or(false) {
        STAGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: delegates to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn apply_and_apply_batch_never_allocate() {
    let limits =
        Limits { accounts_max: 200, instruments_max: 20, positions_max: 4_000, trades_max: 20_000 };
    // Build every command first: only the state machine runs while counting.
    let mut cmds = Vec::new();
    for i in 1..=20 {
        cmds.push(instrument(i, 1 + i64::from(i % 3) * 49, 1_000));
    }
    for a in 1..=200 {
        cmds.push(account_with(a, if a % 7 == 0 { 50 } else { 0 }, 0, 0));
        cmds.push(deposit(a, i128::from(a) * 1_000 * P as i128));
    }
    let mut id = 0;
    for round in 0..40u64 {
        for k in 0..200u64 {
            id += 1;
            let buy = 1 + (k * 7 + round) % 200;
            let sell = 1 + (k * 13 + round * 3 + 1) % 200;
            let ins = 1 + ((k + round) % 20) as u32;
            cmds.push(trade(id, buy, sell, ins, 1 + (k % 9) as i64, (90 + (k % 20) as i64) * P));
            cmds.push(order(buy, ins, Side::Sell, 5, 95 * P));
        }
        cmds.push(Command::MarkPrice { instrument: 1 + (round % 20) as u32, price: 97 * P });
        cmds.push(Command::SettlementPrice {
            instrument: 1 + ((round + 3) % 20) as u32,
            price: 99 * P,
        });
        cmds.push(Command::BustTrade { trade_id: id - 5 });
        cmds.push(Command::BustTrade { trade_id: id - 5 }); // AlreadyBusted
        cmds.push(trade(id, 1, 2, 1, 1, P)); // Duplicate
        cmds.push(deposit(3, -1));
        cmds.push(deposit(99_999, 1)); // UnknownAccount
    }
    let (first, rest) = cmds.split_at(cmds.len() / 2);
    let batch: Vec<Sequenced> = rest
        .iter()
        .enumerate()
        .map(|(i, c)| Sequenced { seq: 1_000_000 + i as u64, ts: 0, cmd: *c })
        .collect();

    // The counter sees this thread's allocations (else the zero below would prove nothing).
    let probe = allocations();
    drop(std::hint::black_box(Box::new(probe)));
    assert_eq!(allocations() - probe, 1, "the counting allocator counts");

    let mut sm = StateMachine::new(limits).unwrap();
    let mut accepted = 0u64;
    let before = allocations();
    for (i, c) in first.iter().enumerate() {
        accepted += u64::from(sm.apply(c, i as u64 + 1, 0).is_ok());
    }
    sm.apply_batch(&batch, |_, r| accepted += u64::from(r.is_ok()));
    let after = allocations();
    assert_eq!(after - before, 0, "apply allocated {} times", after - before);
    assert!(accepted > cmds.len() as u64 / 2, "the workload must mostly succeed: {accepted}");
    assert!(sm.positions_len() > 1_000, "{}", sm.positions_len());

    // `apply_batch_on`, after start-up (the stage's thread started and served one job), on
    // neither thread.
    let mut on = StateMachine::new(limits).unwrap();
    let mut stage = LookupStage::new(|| STAGE.with(|s| s.set(true))).unwrap();
    let firsts: Vec<Sequenced> = first
        .iter()
        .enumerate()
        .map(|(i, c)| Sequenced { seq: i as u64 + 1, ts: 0, cmd: *c })
        .collect();
    let mut staged = 0u64;
    on.apply_batch_on(&mut stage, &firsts[..100], |_, r, _| staged += u64::from(r.is_ok()));
    let (before, stage_before) = (allocations(), STAGE_ALLOCATIONS.load(Ordering::Relaxed));
    on.apply_batch_on(&mut stage, &firsts[100..], |_, r, _| staged += u64::from(r.is_ok()));
    // The batch's first half with the stage finding holders' rows too, the rest without.
    let half = batch.len() / 2;
    stage.force_holder_rows(Some(true));
    on.apply_batch_on(&mut stage, &batch[..half], |_, r, _| staged += u64::from(r.is_ok()));
    stage.force_holder_rows(Some(false));
    on.apply_batch_on(&mut stage, &batch[half..], |_, r, _| staged += u64::from(r.is_ok()));
    let (after, stage_after) = (allocations(), STAGE_ALLOCATIONS.load(Ordering::Relaxed));
    assert_eq!(after - before, 0, "apply_batch_on allocated {} times", after - before);
    assert_eq!(stage_after - stage_before, 0, "the stage allocated");
    assert_eq!(staged, accepted, "apply_batch_on accepts what apply does");
    assert_eq!(on.state_hash(), sm.state_hash());
}
