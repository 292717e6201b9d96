//! `apply_batch_on`: a batch's lookups made on the lookup stage's thread while the state
//! machine inserts keys into the indices it reads. The results, events and state must be
//! exactly those of one-by-one `apply`, whatever the stage saw.

mod common;
use common::*;
use novate_core::*;

const LIMITS: Limits =
    Limits { accounts_max: 4_096, instruments_max: 32, positions_max: 70_000, trades_max: 200_000 };

/// 4,000 accounts and 16 instruments set up, then `trades` commands between random accounts:
/// most trades open a position (64,000 can be), so keys are inserted all through each batch
/// while the stage looks up the commands after them, often the same keys. Among them
/// CheckOrders, trades of unknown accounts and instruments, repeated trade ids and accounts
/// that are created mid-stream (looked up before they exist).
fn stream(seed: u64, trades: usize) -> Vec<Sequenced> {
    let mut g = Gen(seed);
    let mut cmds: Vec<Command> = (1..=16).map(|i| instrument(i, 1 + (i as i64 % 3), 500)).collect();
    for a in 1..=4_000 {
        cmds.push(account(a));
        cmds.push(deposit(a, 10_000_000 * P as i128));
    }
    for k in 1..=trades as u64 {
        let (buy, sell) = (1 + g.below(4_010), 1 + g.below(4_010));
        let instrument = 1 + g.below(17) as u32;
        let price = (90 + g.below(21)) as i64 * P;
        cmds.push(match g.below(20) {
            0 => Command::CheckOrder { account: buy, instrument, side: Side::Buy, qty: 3, price },
            // A repeated id: a duplicate, unless its first was rejected.
            1 => trade(k / 2 + 1, buy, sell, instrument, 1, price),
            // An account that did not exist until now (ids 4,001 ..= 4,010 appear this way).
            2 if buy > 4_000 => account(buy),
            _ => trade(k, buy, sell, instrument, 1 + g.below(9) as i64, price),
        });
    }
    cmds.into_iter()
        .enumerate()
        .map(|(i, cmd)| Sequenced { seq: i as u64 + 1, ts: 0, cmd })
        .collect()
}

/// A machine's state hash and every account's view (its funds, which the hash does not
/// cover: a trade booked on the wrong account's funds shows here).
type State = (u64, Vec<Result<AccountView, Reject>>);

fn state(sm: &mut StateMachine) -> State {
    (sm.state_hash(), (1..=4_010).map(|a| sm.account(a)).collect())
}

/// Each command's result (events or reject), applied one by one.
fn one_by_one(log: &[Sequenced]) -> (Vec<Result<Vec<Event>, Reject>>, State) {
    let mut sm = StateMachine::new(LIMITS).unwrap();
    let results = log.iter().map(|s| sm.apply(&s.cmd, s.seq, s.ts).map(|e| e.to_vec())).collect();
    (results, state(&mut sm))
}

/// The same log through `apply_batch_on`, in batches of `batch` commands.
fn staged(
    stage: &mut LookupStage,
    log: &[Sequenced],
    batch: usize,
) -> (Vec<Result<Vec<Event>, Reject>>, State) {
    let mut sm = StateMachine::new(LIMITS).unwrap();
    let mut results = Vec::with_capacity(log.len());
    for chunk in log.chunks(batch) {
        let first = results.len();
        sm.apply_batch_on(stage, chunk, |i, r, _| {
            assert_eq!(first + i, results.len(), "results come in order");
            results.push(r.map(|e| e.to_vec()));
        });
    }
    (results, state(&mut sm))
}

#[test]
fn keys_inserted_while_the_stage_looks_up_apply_as_one_by_one() {
    let log = stream(1, 60_000);
    let (want, hash) = one_by_one(&log);
    let opened = want.iter().filter(|r| r.as_ref().is_ok_and(|e| e.len() >= 3)).count();
    assert!(opened > 30_000, "the stream clears trades ({opened})");
    let mut stage = LookupStage::new(|| {}).unwrap();
    // Within a job, a job exactly, two jobs exactly, over several jobs, a length no power of
    // two, and the whole stream in one batch (59 jobs, each looked up while the one before is
    // applied); with the stage finding the rows of holders too (as it does for a book of many
    // accounts) and without.
    for rows in [false, true] {
        stage.force_holder_rows(Some(rows));
        for batch in [256, JOB_MAX, 2 * JOB_MAX, 3 * JOB_MAX + 17, 999, log.len()] {
            let (got, got_hash) = staged(&mut stage, &log, batch);
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "rows {rows}, batch {batch}, command #{i}: {:?}", log[i].cmd);
            }
            assert_eq!(got_hash, hash, "rows {rows}, batch {batch}");
        }
    }
    // No head (every lookup on the stage), and the longest (32 commands looked up by the state
    // machine's thread before it reads the stage's first hint).
    stage.force_holder_rows(None);
    for head in [0, 32] {
        stage.force_head(Some(head));
        for batch in [80, 3 * JOB_MAX + 17] {
            let (got, got_hash) = staged(&mut stage, &log, batch);
            assert!(got == want && got_hash == hash, "head {head}, batch {batch}");
        }
    }
}

#[test]
fn one_stage_serves_several_state_machines() {
    // Each job lends the stage the indices of the machine that posted it.
    let (a, b) = (stream(2, 8_000), stream(3, 8_000));
    let (want_a, hash_a) = one_by_one(&a);
    let (want_b, hash_b) = one_by_one(&b);
    let mut stage = LookupStage::new(|| {}).unwrap();
    let (mut sa, mut sb) = (StateMachine::new(LIMITS).unwrap(), StateMachine::new(LIMITS).unwrap());
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    for (ca, cb) in a.chunks(500).zip(b.chunks(500)) {
        sa.apply_batch_on(&mut stage, ca, |_, r, _| got_a.push(r.map(|e| e.to_vec())));
        sb.apply_batch_on(&mut stage, cb, |_, r, _| got_b.push(r.map(|e| e.to_vec())));
    }
    assert_eq!((got_a, state(&mut sa)), (want_a, hash_a));
    assert_eq!((got_b, state(&mut sb)), (want_b, hash_b));
}

#[test]
fn an_idle_stage_wakes_for_the_next_batch_and_stops_when_dropped() {
    let log = stream(4, 3_000);
    let (want, hash) = one_by_one(&log);
    let mut sm = StateMachine::new(LIMITS).unwrap();
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = started.clone();
    let mut stage =
        LookupStage::new(move || _ = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
            .unwrap();
    let mut got = Vec::new();
    for (k, chunk) in log.chunks(700).enumerate() {
        if k % 2 == 1 {
            // Long enough for the stage's thread to have parked (it spins ~0.4 ms first).
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        sm.apply_batch_on(&mut stage, chunk, |_, r, _| got.push(r.map(|e| e.to_vec())));
    }
    assert_eq!((got, state(&mut sm)), (want, hash));
    assert_eq!(started.load(std::sync::atomic::Ordering::SeqCst), 1, "on_start ran once");
    // Dropping the stage stops and joins its thread (a hang here is the failure).
    drop(stage);
    for _ in 0..50 {
        drop(LookupStage::new(|| {}).unwrap());
    }
}

#[test]
fn a_panic_in_on_result_leaves_the_batch_to_the_stage_until_it_is_done() {
    // The drop of the batch's jobs waits for the stage's thread while unwinding (for both
    // jobs out, the one applied and the next): the batch is freed only after it. Then the
    // stage serves the next batch. Stops early in the first job, just before and just after
    // the first hint of the second is asked for (8 commands ahead: the first job released and
    // the third posted), in the second job, and in the last.
    let log = stream(5, 4_000);
    let (want, hash) = one_by_one(&log);
    let mut stage = LookupStage::new(|| {}).unwrap();
    for stop in [40, JOB_MAX - 9, JOB_MAX - 8, JOB_MAX + 3, 2 * JOB_MAX + 100, log.len() - 5] {
        let mut sm = StateMachine::new(LIMITS).unwrap();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let copy: Vec<Sequenced> = log.clone();
            sm.apply_batch_on(&mut stage, &copy, |i, _, _| assert!(i < stop, "stop at {stop}"));
        }));
        assert!(unwound.is_err(), "stop at {stop}");
        let mut fresh = StateMachine::new(LIMITS).unwrap();
        let mut got = Vec::new();
        fresh.apply_batch_on(&mut stage, &log, |_, r, _| got.push(r.map(|e| e.to_vec())));
        assert_eq!((got, state(&mut fresh)), (want.clone(), hash.clone()), "stop at {stop}");
    }
}

#[test]
fn short_jobs_back_to_back_apply_as_one_by_one() {
    // Batches of 32-63 commands (jobs of 16-47: the first 16 commands of each are looked up
    // by the state machine's thread), posted the moment the one before has its last hint: the
    // stage is still finishing the last job (its lookups' release, the next half's lines)
    // when the next is posted, over and over.
    let log = stream(6, 20_000);
    let (want, hash) = one_by_one(&log);
    let mut stage = LookupStage::new(|| {}).unwrap();
    let mut sm = StateMachine::new(LIMITS).unwrap();
    let (mut got, mut at, mut g) = (Vec::with_capacity(log.len()), 0, Gen(7));
    while at < log.len() {
        let end = (at + 32 + g.below(32) as usize).min(log.len());
        sm.apply_batch_on(&mut stage, &log[at..end], |_, r, _| got.push(r.map(|e| e.to_vec())));
        at = end;
    }
    assert!(stage.jobs() > 400, "{} jobs", stage.jobs());
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "command #{i}: {:?}", log[i].cmd);
    }
    assert_eq!(state(&mut sm), hash);
}
