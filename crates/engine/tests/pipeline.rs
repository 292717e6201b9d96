//! The pipeline's promises: acks only after durability, Busy under back-pressure (never a silent
//! drop), events in order with an overflow signal for slow readers, views that agree with the
//! state machine, and restart recovery to the same state hash.

use std::sync::Arc;
use std::time::Duration;

use novate_core::*;
use novate_engine::*;

#[macro_use]
mod common;
use common::STAGES;

fn cfg() -> Config {
    let mut c = Config::default();
    c.threads.stages = STAGES.get().into();
    c.engine.accounts_max = 64;
    c.engine.instruments_max = 16;
    c.engine.positions_max = 256;
    c.engine.trades_max = 10_000;
    c.engine.ingress_ring = 64;
    c.engine.apply_ring = 64;
    c.engine.egress_ring = 64;
    c.engine.batch_max = 16;
    c.engine.client_inflight_max = 256;
    c.engine.subscriber_buffer = 1024;
    c
}

fn start(c: &Config) -> Engine {
    Engine::start(c, Box::new(MemJournal::new()), Box::new(MemSnapshots::new())).unwrap()
}

fn setup_cmds() -> Vec<Command> {
    let mut v = common::instrument_and_two_accounts(10);
    for account in [1, 2] {
        v.push(Command::AdjustCollateral { account, amount: 1_000_000 * PRICE_SCALE as i128 });
    }
    v
}

use common::trade_in_7 as trade;

use common::GatedJournal;

#[test]
fn an_idle_engine_hashes_the_records_its_state_hash_lacks_before_it_is_asked() {
    let engine = start(&cfg());
    let mut c = engine.client();
    let mut model = StateMachine::new(Limits {
        accounts_max: 64,
        instruments_max: 16,
        positions_max: 256,
        trades_max: 10_000,
    })
    .unwrap();
    const TRADES: u64 = 300;
    let trades = (0..TRADES).map(|t| trade(t + 1, 1, 2, 1 + (t % 5) as i64, 100 * PRICE_SCALE));
    for (seq, cmd) in (1..).zip(setup_cmds().into_iter().chain(trades)) {
        c.call(cmd).unwrap();
        model.apply(&cmd, seq, 0).unwrap();
    }
    // No hash was asked for: each trade's record at least is out of the digest until the
    // state-machine thread, with no command to apply, hashes it.
    let settled = || engine.metrics().idle_settled.load(std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while settled() < TRADES && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(settled() >= TRADES, "{} records hashed while idle", settled());
    assert_eq!(c.state_hash().unwrap().1, model.state_hash());
}

#[test]
fn acks_come_only_after_the_journal_commit() {
    let j = GatedJournal::new();
    let engine = Engine::start(&cfg(), Box::new(j.clone()), Box::new(MemSnapshots::new())).unwrap();
    let mut c = engine.client();
    c.try_submit(1, setup_cmds()[0]).unwrap();
    c.flush();
    // The commit is held: no answer, nothing applied, nothing published.
    assert_eq!(c.wait_answer(Duration::from_millis(200)), None);
    assert!(engine.views().instrument(7).is_none());
    assert_eq!(j.inner.committed(), 0);
    j.open();
    let a = c.wait_answer(Duration::from_secs(10)).expect("answer after the commit");
    assert!(matches!(a.kind, AnswerKind::Ack { seq: 1, .. }), "{a:?}");
    assert_eq!(j.inner.committed(), 1, "acknowledged entries are committed");
    assert!(engine.views().instrument(7).is_some());
}

#[test]
fn a_call_that_timed_out_does_not_poison_the_next() {
    let j = GatedJournal::new();
    let engine = Engine::start(&cfg(), Box::new(j.clone()), Box::new(MemSnapshots::new())).unwrap();
    let mut c = engine.client();
    // Declared last, dropped first: a failing assertion opens the gate, so the engine can stop.
    struct OpenOnDrop(GatedJournal);
    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.open();
        }
    }
    let _open = OpenOnDrop(j.clone());
    c.timeout = Duration::from_millis(100);
    // The commit is held: both calls time out, their answers still to come.
    let setup = setup_cmds();
    assert_eq!(c.call(setup[0]), Err(CallError::Timeout));
    assert_eq!(c.call(setup[1]), Err(CallError::Timeout));
    j.open();
    // The next call takes its own answer, dropping the two late ones; and so on.
    c.timeout = Duration::from_secs(10);
    let (seq, _) = c.call(setup[2]).unwrap();
    assert_eq!(seq, 3);
    assert_eq!(c.state_hash().unwrap().0, 3);
    assert!(engine.views().account(2).is_ok(), "the timed-out commands were applied");
}

#[test]
fn accounts_whose_ids_collide_in_the_view_index_are_all_queryable() {
    // 80 ids whose hashes share the home slot of a 256-slot view index (accounts_max 100): one
    // cluster longer than a bound of 64 probes.
    let ids: Vec<u64> =
        (1..).filter(|&k| novate_ring::index::spread(k) & 255 == 5).take(80).collect();
    let mut config = cfg();
    config.engine.accounts_max = 100;
    let engine = start(&config);
    let mut c = engine.client();
    for &id in &ids {
        c.call(Command::UpsertAccount(AccountSpec {
            id,
            max_position: 0,
            max_notional: 0,
            max_loss: 0,
            suspended: false,
        }))
        .unwrap();
    }
    for &id in &ids {
        assert!(engine.views().account(id).is_ok(), "account {id} missing from the views");
    }
}

#[test]
fn a_full_ring_or_window_is_busy_and_nothing_is_dropped() {
    let mut c = cfg();
    c.engine.ingress_ring = 2;
    c.engine.apply_ring = 2;
    c.engine.batch_max = 1;
    c.engine.client_inflight_max = 8;
    let j = GatedJournal::new();
    let engine = Engine::start(&c, Box::new(j.clone()), Box::new(MemSnapshots::new())).unwrap();
    let mut client = engine.client();
    let mut accepted = 0u64;
    let mut busy = 0;
    for i in 0..8u64 {
        let cmd = Command::UpsertAccount(AccountSpec {
            id: i + 1,
            max_position: 0,
            max_notional: 0,
            max_loss: 0,
            suspended: false,
        });
        match client.try_submit(i, cmd) {
            Ok(()) => accepted += 1,
            Err(SubmitError::Busy) => busy += 1,
            Err(e) => panic!("{e}"),
        }
        client.flush();
        std::thread::sleep(Duration::from_millis(5));
    }
    // The sequencer holds one command in its commit; the ingress ring holds two more.
    assert!(busy > 0, "a blocked pipeline must push back");
    assert!((2..8).contains(&accepted), "accepted {accepted}");
    // The window: a second client cannot exceed its own window either.
    j.open();
    let mut answers = 0;
    while let Some(a) = client.wait_answer(Duration::from_secs(10)) {
        assert!(matches!(a.kind, AnswerKind::Ack { .. }));
        answers += 1;
    }
    assert_eq!(answers, accepted, "every accepted command is answered exactly once");
    // Window full: with the journal open again, try_submit past the window is Busy.
    let mut c2 = cfg();
    c2.engine.client_inflight_max = 2;
    let j2 = GatedJournal::new();
    let e2 = Engine::start(&c2, Box::new(j2.clone()), Box::new(MemSnapshots::new())).unwrap();
    let mut cl = e2.client();
    cl.try_submit(1, setup_cmds()[1]).unwrap();
    cl.try_submit(2, setup_cmds()[2]).unwrap();
    assert_eq!(cl.try_submit(3, setup_cmds()[0]), Err(SubmitError::Busy));
    j2.open();
    assert!(cl.wait_answer(Duration::from_secs(10)).is_some());
    assert!(cl.wait_answer(Duration::from_secs(10)).is_some());
}

#[test]
fn calls_answer_with_typed_rejections_and_views_match_the_state_machine() {
    let engine = start(&cfg());
    let mut c = engine.client();
    let mut model = StateMachine::new(cfg().limits()).unwrap();
    let mut seq = 0;
    let mut both = |c: &mut Client, cmd: Command| {
        seq += 1;
        let m = model.apply(&cmd, seq, 0).map(|_| ());
        let r = c.call(cmd);
        match (&m, &r) {
            (Ok(()), Ok((s, _))) => assert_eq!(*s, seq),
            (Err(a), Err(CallError::Rejected(b))) => assert_eq!(a, b),
            _ => panic!("{cmd:?}: model {m:?}, engine {r:?}"),
        }
        r
    };
    for cmd in setup_cmds() {
        both(&mut c, cmd).unwrap();
    }
    both(&mut c, trade(1, 1, 2, 5, 100 * PRICE_SCALE)).unwrap();
    assert_eq!(
        both(&mut c, trade(1, 1, 2, 5, 100 * PRICE_SCALE)),
        Err(CallError::Rejected(Reject::Duplicate))
    );
    assert_eq!(
        both(&mut c, trade(2, 1, 99, 5, 100 * PRICE_SCALE)),
        Err(CallError::Rejected(Reject::UnknownAccount))
    );
    both(&mut c, Command::MarkPrice { instrument: 7, price: 103 * PRICE_SCALE }).unwrap();
    both(&mut c, trade(3, 2, 1, 2, 104 * PRICE_SCALE)).unwrap();
    both(&mut c, Command::SettlementPrice { instrument: 7, price: 105 * PRICE_SCALE }).unwrap();
    both(&mut c, Command::BustTrade { trade_id: 3 }).unwrap();
    // Views are published at batch boundaries: after the last answer they are current.
    let v = engine.views();
    for a in [1, 2] {
        let got = v.account(a).unwrap().value;
        assert_eq!(got, model.account(a).unwrap(), "account {a}");
        assert_eq!(v.position(a, 7).unwrap().value, model.position(a, 7).unwrap(), "position {a}");
    }
    assert_eq!(v.instrument(7).unwrap().value, model.instrument(7).unwrap());
    assert_eq!(v.account(99), Err(Reject::UnknownAccount));
    assert!(v.position(1, 8).is_none());
    assert_eq!(c.state_hash().unwrap(), (seq, model.state_hash()));
}

/// Every published view (accounts, instruments, positions) equals the state machine's own
/// answer, for a random stream of every command kind (trades that move the mark or not, marks,
/// settlements, busts, margin-rate changes, deposits, rejections), checked at many points.
#[test]
fn every_view_matches_the_state_machine_through_a_random_stream() {
    let engine = start(&cfg());
    let mut c = engine.client();
    let mut model = StateMachine::new(cfg().limits()).unwrap();
    let mut x = 0x5eed_u64;
    let mut rnd = |n: u64| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let (accounts, instruments) = (12u64, 4u32);
    let mut cmds = Vec::new();
    for id in 1..=instruments {
        let spec =
            InstrumentSpec { id, multiplier: 1 + i64::from(id), margin_bps: 500, settle_days: 2 };
        cmds.push(Command::UpsertInstrument(spec));
    }
    for id in 1..=accounts {
        let spec =
            AccountSpec { id, max_position: 0, max_notional: 0, max_loss: 0, suspended: false };
        cmds.push(Command::UpsertAccount(spec));
        cmds.push(Command::AdjustCollateral {
            account: id,
            amount: 1_000_000 * PRICE_SCALE as i128,
        });
    }
    let mut trade_id = 0;
    for _ in 0..1_200 {
        let instrument = 1 + rnd(u64::from(instruments)) as u32;
        let price = (90 + rnd(20) as i64) * PRICE_SCALE;
        cmds.push(match rnd(20) {
            0 => Command::MarkPrice { instrument, price },
            1 => Command::SettlementPrice { instrument, price },
            2 if trade_id > 0 => Command::BustTrade { trade_id: 1 + rnd(trade_id) },
            3 => Command::UpsertInstrument(InstrumentSpec {
                id: instrument,
                multiplier: 1 + i64::from(instrument),
                margin_bps: 100 * (1 + rnd(20) as i64),
                settle_days: 2,
            }),
            4 => Command::AdjustCollateral { account: 1 + rnd(accounts + 1), amount: 1_000 },
            _ => {
                trade_id += 1;
                let buy = 1 + rnd(accounts);
                Command::ClearTrade(Trade {
                    trade_id,
                    buy,
                    sell: 1 + (buy + rnd(accounts - 1)) % accounts,
                    instrument,
                    qty: 1 + rnd(9) as i64,
                    price,
                    trade_date: 20261125,
                })
            }
        });
    }
    for (k, cmd) in cmds.iter().enumerate() {
        let seq = k as u64 + 1;
        let m = model.apply(cmd, seq, 0).map(|_| ());
        match (m, c.call(*cmd)) {
            (Ok(()), Ok((s, _))) => assert_eq!(s, seq),
            (Err(a), Err(CallError::Rejected(b))) => assert_eq!(a, b),
            (m, r) => panic!("{cmd:?}: model {m:?}, engine {r:?}"),
        }
        if k % 97 != 0 && k + 1 != cmds.len() {
            continue;
        }
        // After an answer the views are current (published at the batch boundary).
        let v = engine.views();
        for a in 1..=accounts + 1 {
            assert_eq!(v.account(a).map(|p| p.value), model.account(a), "account {a} at {seq}");
            for i in 1..=instruments + 1 {
                let got = v.position(a, i).map(|p| p.value);
                assert_eq!(got, model.position(a, i), "position {a}/{i} at {seq}");
            }
        }
        for i in 1..=instruments + 1 {
            assert_eq!(v.instrument(i).map(|p| p.value), model.instrument(i), "instrument {i}");
        }
        let mut want: Vec<_> = (1..=accounts).filter_map(|a| model.account(a).ok()).collect();
        let mut got = v.accounts();
        want.sort_by_key(|a| a.spec.id);
        got.sort_by_key(|a| a.spec.id);
        assert_eq!(got, want);
        assert_eq!(v.instruments().len(), model.instruments_len());
    }
}

/// `threads.lookup_stage`: runs of 16 commands or more are applied with their lookups made
/// on the stage's thread (`StateMachine::apply_batch_on`), while the state machine opens the
/// positions they look up. The answers and the state are those of the engine without it, with
/// split stages and fused.
#[test]
fn the_lookup_stage_gives_the_same_answers_and_state() {
    use std::sync::atomic::Ordering::Relaxed;
    let run = |stages: &str, lookup_stage: bool| {
        let mut c = cfg();
        c.threads.stages = stages.into();
        c.threads.lookup_stage = lookup_stage;
        c.engine.positions_max = 2_048;
        c.engine.ingress_ring = 1_024;
        c.engine.apply_ring = 1_024;
        c.engine.egress_ring = 1_024;
        c.engine.batch_max = 128;
        c.engine.client_inflight_max = 1_024;
        let e = start(&c);
        let mut cl = e.client();
        let (accounts, instruments) = (60u64, 16u32);
        for id in 1..=instruments {
            let spec = InstrumentSpec { id, multiplier: 1, margin_bps: 500, settle_days: 2 };
            cl.call(Command::UpsertInstrument(spec)).unwrap();
        }
        for id in 1..=accounts {
            let spec =
                AccountSpec { id, max_position: 0, max_notional: 0, max_loss: 0, suspended: false };
            cl.call(Command::UpsertAccount(spec)).unwrap();
            let amount = 1_000_000 * PRICE_SCALE as i128;
            cl.call(Command::AdjustCollateral { account: id, amount }).unwrap();
        }
        let mut x = 0x10c4_u64;
        let mut rnd = |n: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        let mut answers = Vec::new();
        let mut id = 0u64;
        for _window in 0..8 {
            // A window of trades submitted at once: the sequencer batches them.
            for _ in 0..1_000 {
                id += 1;
                // Accounts 61 and 62 do not exist: a few trades are rejected.
                let (buy, sell) = (1 + rnd(accounts + 2), 1 + rnd(accounts + 2));
                let t = Trade {
                    trade_id: id,
                    buy,
                    sell,
                    instrument: 1 + rnd(u64::from(instruments)) as u32,
                    qty: 1 + rnd(5) as i64,
                    price: (95 + rnd(11) as i64) * PRICE_SCALE,
                    trade_date: 20261125,
                };
                cl.try_submit(id, Command::ClearTrade(t)).unwrap();
            }
            cl.flush();
            for _ in 0..1_000 {
                let a = cl.wait_answer(Duration::from_secs(30)).expect("an answer per command");
                answers.push(match a.kind {
                    AnswerKind::Ack { seq, .. } => (a.request_id, Ok(seq)),
                    AnswerKind::Reject { seq, reason } => (a.request_id, Err((seq, reason))),
                    k => panic!("{k:?}"),
                });
            }
        }
        let hash = cl.state_hash().unwrap();
        let jobs = e.metrics().lookup_jobs.load(Relaxed);
        (answers, hash, jobs, e.start_report().lines.clone())
    };
    for stages in ["split", "fused"] {
        let (with, with_hash, jobs, lines) = run(stages, true);
        let (without, without_hash, no_jobs, plain) = run(stages, false);
        assert_eq!(with.len(), 8_000);
        assert!(with.iter().any(|a| a.1.is_err()) && with.iter().any(|a| a.1.is_ok()));
        assert_eq!(with, without, "{stages}");
        assert_eq!(with_hash, without_hash, "{stages}");
        assert!(jobs > 0, "{stages}: runs went through the lookup stage");
        assert_eq!(no_jobs, 0);
        assert!(lines.iter().any(|l| l.starts_with("lookup stage: not pinned")), "{lines:?}");
        assert!(!plain.iter().any(|l| l.starts_with("lookup stage")), "{plain:?}");
    }
}

#[test]
fn events_arrive_in_order_filtered_and_a_slow_reader_gets_an_overflow_signal() {
    let mut c = cfg();
    c.engine.subscriber_buffer = 8;
    let engine = start(&c);
    let mut all = engine.subscribe(EventFilter::default());
    let mut positions_of_1 = engine.subscribe(EventFilter { kinds: 1 << 6, account: Some(1) });
    let mut client = engine.client();
    for cmd in setup_cmds() {
        client.call(cmd).unwrap();
    }
    let mut got = Vec::new();
    let (_, st) = all.poll(usize::MAX, |s, e| got.push((s, *e)));
    assert_eq!(st, SubStatus::Open);
    assert_eq!(got.len(), 5);
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "ascending seq");
    assert!(matches!(got[0].1, Event::InstrumentUpdated { instrument: 7 }));
    // Ten trades: 30+ events overflow `all` (buffer 8) unless read; `positions_of_1` gets 10.
    for t in 0..10 {
        client.call(trade(t + 1, 1, 2, 1, 100 * PRICE_SCALE)).unwrap();
    }
    let mut n = 0;
    let mut last = 0;
    let (_, st) = positions_of_1.poll(usize::MAX, |s, e| {
        assert!(matches!(e, Event::PositionChanged { account: 1, .. }), "{e:?}");
        assert!(s > last);
        last = s;
        n += 1;
    });
    assert_eq!((n, st), (8, SubStatus::Overflowed), "8 delivered then the cut");
    let mut delivered = Vec::new();
    let (_, st) = all.poll(usize::MAX, |s, e| delivered.push((s, *e)));
    assert_eq!(st, SubStatus::Overflowed);
    assert_eq!(delivered.len(), 8);
    assert!(matches!(delivered[0].1, Event::TradeCleared { trade_id: 1 }));
    assert!(matches!(delivered[1].1, Event::PositionChanged { account: 1, qty: 1, .. }));
    assert!(matches!(delivered[2].1, Event::PositionChanged { account: 2, qty: -1, .. }));
    assert!(
        engine.metrics().subscription_overflows.load(std::sync::atomic::Ordering::Relaxed) >= 2
    );
    // Dropping a subscription unsubscribes it.
    drop(all);
    drop(positions_of_1);
    client.call(trade(100, 1, 2, 1, 100 * PRICE_SCALE)).unwrap();
}

#[test]
fn restart_recovers_the_same_state_from_snapshot_and_journal() {
    let journal = MemJournal::new();
    let snaps = MemSnapshots::new();
    let c = cfg();
    let (hash, pos) = {
        let engine = Engine::start(&c, Box::new(journal.clone()), Box::new(snaps.clone())).unwrap();
        let mut cl = engine.client();
        for cmd in setup_cmds() {
            cl.call(cmd).unwrap();
        }
        cl.call(trade(1, 1, 2, 5, 100 * PRICE_SCALE)).unwrap();
        assert_eq!(cl.snapshot().unwrap(), 6);
        cl.call(trade(2, 2, 1, 3, 101 * PRICE_SCALE)).unwrap();
        assert!(cl.call(trade(2, 2, 1, 3, 101 * PRICE_SCALE)).is_err());
        cl.call(Command::SettlementPrice { instrument: 7, price: 102 * PRICE_SCALE }).unwrap();
        let (seq, hash) = cl.state_hash().unwrap();
        assert_eq!(seq, 9);
        let pos = engine.views().position(1, 7).unwrap().value;
        drop(cl);
        let report = engine.shutdown();
        assert_eq!((report.last_seq, report.state_hash), (9, hash));
        assert!(report.snapshot_saved);
        (hash, pos)
    };
    // Recover from the snapshot taken at shutdown...
    let engine = Engine::start(&c, Box::new(journal.clone()), Box::new(snaps.clone())).unwrap();
    assert_eq!(engine.start_report().recovered_snapshot_seq, Some(9));
    let mut cl = engine.client();
    assert_eq!(cl.state_hash().unwrap(), (9, hash));
    assert_eq!(engine.views().position(1, 7).unwrap().value, pos);
    // ...and from the journal alone (no snapshot): replay reaches the same hash; new commands
    // continue the sequence.
    drop(cl);
    drop(engine);
    let engine =
        Engine::start(&c, Box::new(journal.clone()), Box::new(MemSnapshots::new())).unwrap();
    assert_eq!(engine.start_report().replayed, 9);
    let mut cl = engine.client();
    assert_eq!(cl.state_hash().unwrap(), (9, hash));
    assert_eq!(engine.views().position(1, 7).unwrap().value, pos);
    assert_eq!(cl.call(trade(3, 1, 2, 1, 100 * PRICE_SCALE)).unwrap().0, 10);
}

#[test]
fn shutdown_answers_everything_accepted_and_then_refuses() {
    let engine = start(&cfg());
    let mut c = engine.client();
    for cmd in setup_cmds() {
        c.try_submit(0, cmd).unwrap();
    }
    c.flush();
    let report = engine.shutdown();
    assert_eq!(report.last_seq, 5);
    let mut n = 0;
    while let Some(a) = c.wait_answer(Duration::from_secs(5)) {
        assert!(matches!(a.kind, AnswerKind::Ack { .. }));
        n += 1;
    }
    assert_eq!(n, 5);
    assert_eq!(c.try_submit(9, setup_cmds()[0]), Err(SubmitError::Closed));
}

#[test]
fn many_clients_on_many_threads_all_get_their_own_answers() {
    let engine = Arc::new(start(&cfg()));
    let mut setup = engine.client();
    for cmd in setup_cmds() {
        setup.call(cmd).unwrap();
    }
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let e = engine.clone();
            std::thread::spawn(move || {
                let mut c = e.client();
                let mut seen = Vec::new();
                for i in 0..500u64 {
                    let rid = t * 1000 + i;
                    c.submit_with(
                        rid,
                        trade(rid + 1, 1, 2, 1, 100 * PRICE_SCALE),
                        Duration::from_secs(10),
                        &mut |a| seen.push(a.request_id),
                    )
                    .unwrap();
                }
                while let Some(a) = c.wait_answer(Duration::from_secs(10)) {
                    seen.push(a.request_id);
                }
                seen.sort_unstable();
                assert_eq!(seen, (0..500).map(|i| t * 1000 + i).collect::<Vec<_>>());
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let v = engine.views().position(1, 7).unwrap().value;
    assert_eq!(v.qty, 2000);
}

/// Whoever gets an answer finds the views published at least up to its seq: with two clients
/// the state machine's runs hold several commands, and an answer routed the moment its command
/// was applied (before the run's views were published) would be seen, by a client spinning on
/// its ring, with the views one batch behind.
#[test]
fn an_answer_is_never_seen_before_the_views_of_its_batch() {
    let mut c = cfg();
    c.threads.wait = "spin-yield".into();
    let engine = Arc::new(start(&c));
    let mut setup = engine.client();
    for cmd in setup_cmds() {
        setup.call(cmd).unwrap();
    }
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let e = engine.clone();
            std::thread::spawn(move || {
                let mut c = e.client();
                for i in 0..3_000u64 {
                    let id = 1 + t * 10_000 + i;
                    let (seq, _) = c.call(trade(id, 1 + t, 2 - t, 1, 100 * PRICE_SCALE)).unwrap();
                    let seen = e.views().seq();
                    assert!(seen >= seq, "answer of seq {seq} seen with views at {seen}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Under both policies, and with `threads.prefault` (whose committed snapshot buffers then go
/// to the file store's writer first, then come back as its spares), a restart recovers the
/// same state from the snapshots and the journal.
#[test]
fn a_data_dir_survives_restarts_under_both_policies() {
    let runs = [
        (DurabilityPolicy::None, false),
        (DurabilityPolicy::Fsync, false),
        (DurabilityPolicy::None, true),
    ];
    for (policy, prefault) in runs {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        c.data_dir = dir.path().to_str().unwrap().into();
        c.durability.policy = policy;
        c.durability.snapshot_every = 4;
        c.threads.prefault = prefault;
        let (hash, pos) = {
            let engine = Engine::open(&c).unwrap();
            let lines = &engine.start_report().lines;
            let committed = lines.iter().any(|l| l.contains("and snapshot buffers committed"));
            assert_eq!(committed, prefault, "{lines:?}");
            let mut cl = engine.client();
            for cmd in setup_cmds() {
                cl.call(cmd).unwrap();
            }
            for t in 0..10 {
                cl.call(trade(t + 1, 1, 2, 1 + t as i64, (100 + t as i64) * PRICE_SCALE)).unwrap();
            }
            assert!(cl.call(trade(1, 1, 2, 1, PRICE_SCALE)).is_err());
            let (seq, hash) = cl.state_hash().unwrap();
            assert_eq!(seq, 16);
            let pos = engine.views().position(2, 7).unwrap().value;
            drop(cl);
            assert_eq!(engine.shutdown().state_hash, hash);
            (hash, pos)
        };
        let engine = Engine::open(&c).unwrap();
        assert!(
            engine.start_report().recovered_snapshot_seq.is_some(),
            "{:?}",
            engine.start_report().lines
        );
        let mut cl = engine.client();
        assert_eq!(cl.state_hash().unwrap(), (16, hash), "{policy:?}, prefault {prefault}");
        assert_eq!(engine.views().position(2, 7).unwrap().value, pos);
        assert_eq!(cl.call(trade(11, 1, 2, 1, PRICE_SCALE)).unwrap().0, 17);
        drop(cl);
        drop(engine);
        // Read-only replay of the same directory reaches the same hash.
        let mut calls = 0;
        let r = novate_engine::store::replay_dir(dir.path(), c.limits(), &mut |_, _| calls += 1)
            .unwrap();
        assert_eq!((r.seq, r.capacity_rejects), (17, 0));
        assert_ne!(r.state_hash, hash);
        assert!(calls >= 1);
        // Into smaller tables: the commands refused for capacity are counted.
        let mut small = c.limits();
        small.accounts_max = 1;
        let r = novate_engine::store::replay_dir(dir.path(), small, &mut |_, _| {}).unwrap();
        assert!(r.capacity_rejects >= 1, "{r:?}");
    }
}

/// `threads.prefault` (off by default) commits the state tables and the first two snapshot
/// buffers at start-up and says so; off, nothing is said and the same commands give the same
/// answers, snapshots and state.
#[test]
fn start_up_commits_the_state_tables_unless_told_not_to() {
    let run = |prefault: bool| {
        let mut c = cfg();
        c.threads.prefault = prefault;
        c.engine.trades_max = 200_000; // a trade index of 512k slots x 16 bytes: 8 MiB
                                       // A snapshot every 4 commands: the two committed buffers, then the store's recycled ones.
        c.durability.snapshot_every = 4;
        let e = start(&c);
        let lines = e.start_report().lines.clone();
        let mut cl = e.client();
        for cmd in setup_cmds() {
            cl.call(cmd).unwrap();
        }
        let acks: Vec<Seq> = (0..20)
            .map(|t| cl.call(trade(t + 1, 1, 2, 1 + t as i64, 100 * PRICE_SCALE)).unwrap().0)
            .collect();
        let hash = cl.state_hash().unwrap();
        let snapshots = e.metrics().snapshots.load(std::sync::atomic::Ordering::Relaxed);
        assert!(snapshots >= 4, "{snapshots} periodic snapshots");
        drop(cl);
        e.shutdown();
        (lines, acks, hash)
    };
    let (on, acks_on, hash_on) = run(true);
    let line = on.iter().find(|l| l.contains("committed at start-up")).expect("a prefault line");
    assert!(line.contains("state tables and snapshot buffers"), "{line}");
    // "memory: D of A MiB ...": on this Linux (5.14+) everything asked for is committed.
    let mib: Vec<u64> = line.split(' ').filter_map(|w| w.parse().ok()).take(2).collect();
    assert!(
        mib.len() == 2 && mib[0] >= 8 && mib[0] == mib[1] && !line.contains("refused"),
        "{line}"
    );
    let (off, acks_off, hash_off) = run(false);
    assert!(!off.iter().any(|l| l.contains("committed at start-up")), "{off:?}");
    assert_eq!((acks_on, hash_on), (acks_off, hash_off));
}

/// Every test above again with `threads.stages = "fused"` (one pipeline thread).
mod fused {
    #[test]
    fn the_engine_reports_one_fused_thread() {
        crate::common::STAGES.set("fused");
        let e = super::start(&super::cfg());
        let lines = &e.start_report().lines;
        assert!(lines.iter().any(|l| l.starts_with("stages: fused")), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("fused pipeline thread")), "{lines:?}");
        assert!(!lines.iter().any(|l| l.starts_with("sequencer:")), "{lines:?}");
    }

    /// `threads.combine`: a caller that waits for its answer steps the fused pipeline itself;
    /// on or off, the same commands give the same answers and the same state; never with a
    /// journal whose commit waits (a caller's timeout must not wait out a commit).
    #[test]
    fn waiting_callers_step_the_fused_pipeline_with_the_same_results() {
        use novate_core::{Command, Side, PRICE_SCALE};
        use novate_engine::{CallError, Engine, Journal, MemJournal, MemSnapshots};
        use std::sync::atomic::Ordering::Relaxed;
        let run = |combine: bool, journal: Box<dyn Journal>| {
            let mut c = super::cfg();
            c.threads.stages = "fused".into();
            c.threads.combine = combine;
            let e = Engine::start(&c, journal, Box::new(MemSnapshots::new())).unwrap();
            let mut client = e.client();
            for cmd in super::setup_cmds() {
                client.call(cmd).unwrap();
            }
            let mut answers = Vec::new();
            for t in 0..300u64 {
                // Every fourth trade names an unknown account: rejected.
                let sell = if t % 4 == 3 { 99 } else { 2 };
                let qty = 1 + (t % 5) as i64;
                let price = (95 + (t % 11) as i64) * PRICE_SCALE;
                answers.push(client.call(super::trade(t + 1, 1, sell, qty, price)).map(|a| a.0));
            }
            let hash = client.state_hash().unwrap();
            // Whether a call finds the pipeline free is timing: its thread may hold it (spinning
            // after a wake-up, or preempted while stepping on a loaded machine). Go on with
            // orders (they change nothing) until a caller has stepped it, or 20,000 of them.
            let order = Command::CheckOrder {
                account: 1,
                instrument: 7,
                side: Side::Buy,
                qty: 1,
                price: 100 * PRICE_SCALE,
            };
            let steps = |e: &Engine| e.metrics().combined_steps.load(Relaxed);
            for _ in 0..20_000 {
                if steps(&e) > 0 {
                    break;
                }
                let answered = client.call(order);
                assert!(matches!(answered, Ok(_) | Err(CallError::Rejected(_))), "{answered:?}");
            }
            (answers, hash, steps(&e), e.start_report().lines.clone())
        };
        let (a_on, h_on, steps_on, lines_on) = run(true, Box::new(MemJournal::new()));
        let (a_off, h_off, steps_off, _) = run(false, Box::new(MemJournal::new()));
        let gated = super::GatedJournal::new();
        gated.open();
        let (a_gated, h_gated, steps_gated, lines_gated) = run(true, Box::new(gated));
        assert_eq!(a_on, a_off);
        assert_eq!(a_on, a_gated);
        assert_eq!(a_on.iter().filter(|a| a.is_err()).count(), 75);
        assert_eq!((h_on, h_on), (h_off, h_gated));
        assert!(steps_on > 0, "callers stepped the pipeline");
        assert_eq!((steps_off, steps_gated), (0, 0));
        assert!(lines_on.iter().any(|l| l.contains("threads.combine")), "{lines_on:?}");
        assert!(lines_gated.iter().any(|l| l.contains("not combining")), "{lines_gated:?}");
    }

    fused_twins!(
        an_idle_engine_hashes_the_records_its_state_hash_lacks_before_it_is_asked,
        acks_come_only_after_the_journal_commit,
        a_full_ring_or_window_is_busy_and_nothing_is_dropped,
        calls_answer_with_typed_rejections_and_views_match_the_state_machine,
        every_view_matches_the_state_machine_through_a_random_stream,
        events_arrive_in_order_filtered_and_a_slow_reader_gets_an_overflow_signal,
        restart_recovers_the_same_state_from_snapshot_and_journal,
        shutdown_answers_everything_accepted_and_then_refuses,
        many_clients_on_many_threads_all_get_their_own_answers,
        an_answer_is_never_seen_before_the_views_of_its_batch,
        a_data_dir_survives_restarts_under_both_policies,
    );
}
