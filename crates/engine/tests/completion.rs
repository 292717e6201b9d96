//! AsyncClient: submit never waits, every ticket completes exactly once, in log order, through a
//! window and an ingress ring far smaller than the work; shutdown completes the rest as Closed.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use novate_core::*;
use novate_engine::*;

mod common;

fn cfg() -> Config {
    let mut c = Config::default();
    c.engine.accounts_max = 64;
    c.engine.instruments_max = 16;
    c.engine.positions_max = 256;
    c.engine.trades_max = 100_000;
    c.engine.ingress_ring = 16;
    c.engine.apply_ring = 16;
    c.engine.egress_ring = 16;
    c.engine.batch_max = 8;
    c.engine.client_inflight_max = 8;
    c.engine.subscriber_buffer = 16;
    c
}

fn setup() -> Vec<Command> {
    common::instrument_and_two_accounts(10)
}

fn trade(id: u64) -> Command {
    common::trade_in_7(id, 1, 2, 1, 100 * PRICE_SCALE)
}

type Completions = mpsc::Receiver<Vec<(Ticket, Outcome)>>;

fn start() -> (Engine, AsyncClient, Completions) {
    start_with(&cfg(), Box::new(MemJournal::new()))
}

/// An engine of `c` on `journal` and an async client whose completions arrive on the receiver.
fn start_with(c: &Config, journal: Box<dyn Journal>) -> (Engine, AsyncClient, Completions) {
    let e = Engine::start(c, journal, Box::new(MemSnapshots::new())).unwrap();
    let (tx, rx) = mpsc::channel();
    let c = AsyncClient::start(
        &e.client_maker(),
        Box::new(move |done| {
            let _ = tx.send(done);
        }),
    )
    .unwrap();
    (e, c, rx)
}

fn collect(rx: &mpsc::Receiver<Vec<(Ticket, Outcome)>>, n: usize) -> Vec<(Ticket, Outcome)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => out.extend(v),
            Err(_) => panic!("only {} of {n} completions within 30 s", out.len()),
        }
    }
    out
}

#[test]
fn thousands_of_submissions_through_a_window_of_8_complete_once_each_in_seq_order() {
    // The journal holds every commit until the gate opens: nothing can complete meanwhile.
    let gate = common::GatedJournal::new();
    let (e, c, rx) = start_with(&cfg(), Box::new(gate.clone()));
    // Should `submit` ever wait for the pipeline, this opens the gate after 30 s (so the test
    // fails below instead of hanging).
    let rescued = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let (gate, rescued) = (gate.clone(), rescued.clone());
        let (tx, done) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if done.recv_timeout(Duration::from_secs(30)).is_err() {
                rescued.store(true, std::sync::atomic::Ordering::SeqCst);
                gate.open();
            }
        });
        tx
    };
    let mut t = 0;
    for cmd in setup() {
        t += 1;
        c.submit(t, Work::Command(cmd));
    }
    let n = 5_000u64;
    for i in 1..=n {
        t += 1;
        c.submit(t, Work::Command(trade(i)));
    }
    t += 1;
    c.submit(t, Work::Command(trade(3))); // duplicate trade id
    t += 1;
    c.submit(t, Work::Hash);
    // submit never waited for the pipeline: 5,000 commands through a window of 8, with
    // nothing committed, all returned at once and all are still pending.
    assert!(!rescued.load(std::sync::atomic::Ordering::SeqCst), "submit waited");
    assert_eq!(c.pending(), t as usize);
    let _ = watchdog.send(());
    gate.open();
    let done = collect(&rx, t as usize);
    let tickets: Vec<Ticket> = done.iter().map(|d| d.0).collect();
    assert_eq!(tickets, (1..=t).collect::<Vec<_>>(), "each ticket once, in order");
    for (i, (_, o)) in done[..(n as usize + 3)].iter().enumerate() {
        assert_eq!(*o, Outcome::Ack { seq: i as u64 + 1 }, "ticket {}", i + 1);
    }
    assert_eq!(done[n as usize + 3].1, Outcome::Rejected { seq: n + 4, reason: Reject::Duplicate });
    let Outcome::Hash { seq, hash } = done[n as usize + 4].1 else { panic!("{:?}", done.last()) };
    assert_eq!(seq, n + 4);
    assert_eq!(c.pending(), 0);
    c.finish();
    let r = e.shutdown();
    assert_eq!(r.state_hash, hash);
}

#[test]
fn a_batch_completes_once_with_every_answer_counted_and_rejects_by_index() {
    let (e, c, rx) = start();
    let mut cmds = setup();
    cmds.extend((1..=1000).map(trade));
    cmds.push(trade(17)); // duplicate
    cmds.push(Command::ClearTrade(Trade {
        trade_id: 5000,
        buy: 99, // unknown account
        sell: 2,
        instrument: 7,
        qty: 1,
        price: 100 * PRICE_SCALE,
        trade_date: 20261125,
    }));
    c.submit(1, Work::Batch(cmds));
    c.submit(2, Work::Batch(Vec::new()));
    c.submit(3, Work::Command(trade(2000)));
    c.submit(4, Work::Snapshot);
    let done = collect(&rx, 4);
    let Outcome::Batch(b) = &done[0].1 else { panic!("{:?}", done[0]) };
    assert_eq!(done[0].0, 1);
    assert_eq!((b.accepted, b.rejected, b.last_seq, b.unavailable), (1003, 2, 1005, 0));
    assert_eq!(b.rejects, vec![(1003, Reject::Duplicate), (1004, Reject::UnknownAccount)]);
    assert_eq!(done[1], (2, Outcome::Batch(BatchOutcome::default())));
    assert_eq!(done[2], (3, Outcome::Ack { seq: 1006 }));
    assert_eq!(done[3], (4, Outcome::Snapshot { seq: 1006 }));
    c.finish();
    e.shutdown();
}

/// The engine joins the acks of consecutive commands into runs, which may span pieces of work
/// (a batch's last acks and the command after it): with a small window and a wide one, each
/// batch still counts exactly its own answers, with a reject in the middle of a run, and each
/// command gets its own ack.
#[test]
fn runs_of_acks_across_batches_and_commands_complete_each_piece_of_work_once() {
    for (window, batch_max) in [(8, 8), (512, 256)] {
        let mut c = cfg();
        c.engine.ingress_ring = 512;
        c.engine.apply_ring = 512;
        c.engine.egress_ring = 512;
        c.engine.batch_max = batch_max;
        c.engine.client_inflight_max = window;
        let (e, client, rx) = start_with(&c, Box::new(MemJournal::new()));
        let setup = setup();
        let s = setup.len() as u64;
        client.submit(1, Work::Batch(setup));
        let mut a: Vec<Command> = (1..=300).map(trade).collect();
        a[150] = trade(5); // a duplicate in the middle
        client.submit(2, Work::Batch(a));
        client.submit(3, Work::Command(trade(1_000)));
        client.submit(4, Work::Batch((1_001..=1_100).map(trade).collect()));
        client.submit(5, Work::Command(trade(2_000)));
        client.submit(6, Work::Command(trade(2_000))); // a duplicate of the one before
        let done = collect(&rx, 6);
        let tickets: Vec<Ticket> = done.iter().map(|d| d.0).collect();
        assert_eq!(tickets, [1, 2, 3, 4, 5, 6], "window {window}");
        let batch = |i: usize| match &done[i].1 {
            Outcome::Batch(b) => b.clone(),
            o => panic!("window {window}: {o:?}"),
        };
        assert_eq!((batch(0).accepted, batch(0).rejected, batch(0).last_seq), (s as u32, 0, s));
        let b = batch(1);
        assert_eq!((b.accepted, b.rejected, b.last_seq), (299, 1, s + 300), "window {window}");
        assert_eq!(b.rejects, vec![(150, Reject::Duplicate)]);
        assert_eq!(done[2].1, Outcome::Ack { seq: s + 301 }, "window {window}");
        let b = batch(3);
        assert_eq!((b.accepted, b.rejected, b.last_seq), (100, 0, s + 401), "window {window}");
        assert_eq!(done[4].1, Outcome::Ack { seq: s + 402 });
        assert_eq!(done[5].1, Outcome::Rejected { seq: s + 403, reason: Reject::Duplicate });
        assert_eq!(client.pending(), 0);
        client.finish();
        e.shutdown();
    }
}

#[test]
fn after_shutdown_everything_completes_accepted_work_answered_the_rest_closed() {
    let (e, c, rx) = start();
    for (i, cmd) in setup().into_iter().enumerate() {
        c.submit(i as u64 + 1, Work::Command(cmd));
    }
    let mut big: Vec<Command> = (1..=20_000).map(trade).collect();
    big.push(trade(1)); // a duplicate at the very end
    c.submit(4, Work::Batch(big));
    c.submit(5, Work::Command(trade(50_000)));
    std::thread::sleep(Duration::from_millis(5));
    e.shutdown();
    c.submit(6, Work::Command(trade(60_000))); // after shutdown: Closed
    c.finish();
    let done = collect(&rx, 6);
    let tickets: Vec<Ticket> = {
        let mut t: Vec<Ticket> = done.iter().map(|d| d.0).collect();
        t.sort_unstable();
        t
    };
    assert_eq!(tickets, vec![1, 2, 3, 4, 5, 6], "every ticket exactly once");
    let of = |t: Ticket| done.iter().find(|d| d.0 == t).unwrap().1.clone();
    assert_eq!(of(1), Outcome::Ack { seq: 1 });
    let closed = Outcome::Failed(CallError::Submit(SubmitError::Closed));
    // The batch either finished before the shutdown or was cut off by it; both complete once.
    match of(4) {
        Outcome::Batch(b) => {
            assert_eq!((b.accepted, b.rejected), (20_000, 1));
            assert!(matches!(of(5), Outcome::Ack { .. }) || of(5) == closed);
        }
        o => {
            assert_eq!(o, closed);
            assert_eq!(of(5), closed);
        }
    }
    assert_eq!(of(6), closed);
}

/// A journal that fails every append after the first `ok` commands.
struct FailingJournal {
    inner: MemJournal,
    ok: usize,
}

impl Journal for FailingJournal {
    fn append(&mut self, batch: &[Sequenced]) -> std::io::Result<()> {
        if self.ok < batch.len() {
            return Err(std::io::Error::other("disk on fire"));
        }
        self.ok -= batch.len();
        self.inner.append(batch)
    }
    fn commit(&mut self) -> std::io::Result<()> {
        self.inner.commit()
    }
    fn replay(&mut self, from: Seq, f: &mut dyn FnMut(&Sequenced)) -> std::io::Result<u64> {
        self.inner.replay(from, f)
    }
    fn last_seq(&self) -> Seq {
        self.inner.last_seq()
    }
    fn describe(&self) -> String {
        "failing".into()
    }
}

#[test]
fn a_failed_journal_completes_commands_and_batches_as_unavailable_never_hangs() {
    let (e, c, rx) =
        start_with(&cfg(), Box::new(FailingJournal { inner: MemJournal::new(), ok: 3 }));
    for (i, cmd) in setup().into_iter().enumerate() {
        c.submit(i as u64 + 1, Work::Command(cmd));
    }
    let first = collect(&rx, 3);
    assert!(first.iter().all(|(_, o)| matches!(o, Outcome::Ack { .. })), "{first:?}");
    c.submit(4, Work::Command(trade(1)));
    c.submit(5, Work::Batch((2..50).map(trade).collect()));
    c.submit(6, Work::Hash);
    let done = collect(&rx, 3);
    let of = |t: Ticket| done.iter().find(|d| d.0 == t).unwrap().1.clone();
    assert_eq!(of(4), Outcome::Failed(CallError::Unavailable));
    // The batch: whatever reached the failed journal is Unavailable, the rest refused (Closed).
    match of(5) {
        Outcome::Batch(b) => {
            assert_eq!(b.accepted, 0);
            assert_eq!(b.unavailable, b.rejected);
            assert_eq!(b.rejected, 48);
        }
        o => assert_eq!(o, Outcome::Failed(CallError::Submit(SubmitError::Closed))),
    }
    assert!(matches!(of(6), Outcome::Hash { .. } | Outcome::Failed(_)), "{:?}", of(6));
    c.finish();
    e.shutdown();
}

/// Submit `work` with `submit_all_now`; its `n` completions, and whether they came at once.
fn now_or_later(
    client: &AsyncClient,
    rx: &Completions,
    work: Vec<(Ticket, Work)>,
    n: usize,
) -> (Vec<(Ticket, Outcome)>, bool) {
    let got = client.submit_all_now(work);
    if got.is_empty() {
        (collect(rx, n), false)
    } else {
        assert_eq!(got.len(), n, "all at once or none");
        (got, true)
    }
}

/// `submit_all_now`: an idle client of a fused, combining pipeline gets its completions back
/// at once (a batch too, when it fits in the two steps), unless the pipeline thread happens to
/// hold the pipeline at that instant; with work pending, split stages or combining off,
/// nothing comes back at once. Either way every ticket completes exactly once, in log order.
#[test]
fn an_idle_client_of_a_combining_pipeline_is_answered_at_once() {
    for (stages, combine) in [("fused", true), ("fused", false), ("split", true)] {
        let mut c = cfg();
        c.threads.stages = stages.into();
        c.threads.combine = combine;
        c.engine.client_inflight_max = 64;
        let (e, client, rx) = start_with(&c, Box::new(MemJournal::new()));
        let setup_work: Vec<_> = (1..).zip(setup().into_iter().map(Work::Command)).collect();
        let (got, _) = now_or_later(&client, &rx, setup_work, 3);
        assert!(got.iter().all(|(_, o)| matches!(o, Outcome::Ack { .. })), "{got:?}");
        // One command, then a batch that fits in the two steps (batch_max 8), many times.
        let mut at_once = 0;
        let mut seq = 3;
        for i in 0..40u64 {
            let (one, now1) =
                now_or_later(&client, &rx, vec![(100 + i, Work::Command(trade(1 + 10 * i)))], 1);
            seq += 1;
            assert_eq!(one, vec![(100 + i, Outcome::Ack { seq })]);
            let cmds = (2..=7).map(|k| trade(k + 10 * i)).collect();
            let (batch, now2) = now_or_later(&client, &rx, vec![(200 + i, Work::Batch(cmds))], 1);
            seq += 6;
            let [(t, Outcome::Batch(b))] = batch.as_slice() else { panic!("{batch:?}") };
            assert_eq!((*t, b.accepted, b.rejected, b.last_seq), (200 + i, 6, 0, seq));
            at_once += usize::from(now1) + usize::from(now2);
        }
        if stages == "fused" && combine {
            // At least once, not most times: under load the pipeline thread (woken for other
            // work) may hold the pipeline at that instant; with combining off it is never.
            assert!(at_once > 0, "answered at once {at_once} of 80 times");
        } else {
            assert_eq!(at_once, 0, "{stages} combine={combine}");
        }
        // Work pending (a batch bigger than the window, handed over without stepping): a
        // command submitted behind it is not answered at once, and comes after it. If this
        // thread loses the CPU long enough for the batch to complete first, the command is
        // rightly answered at once; then the case is tried again, a few times at most.
        let mut pending_seen = false;
        for attempt in 0..10u64 {
            let base = 10_000 + 1_000 * attempt;
            client.submit(base, Work::Batch((base..base + 200).map(trade).collect()));
            let now = client.submit_all_now([(base + 1, Work::Command(trade(base + 500)))]);
            let late = collect(&rx, 2 - now.len());
            let (t0, Outcome::Batch(b)) = &late[0] else { panic!("{late:?}") };
            assert_eq!((*t0, b.accepted, b.last_seq), (base, 200, seq + 200));
            let behind = if now.is_empty() { &late[1] } else { &now[0] };
            assert_eq!(*behind, (base + 1, Outcome::Ack { seq: seq + 201 }));
            seq += 201;
            if now.is_empty() {
                pending_seen = true;
                break;
            }
        }
        assert!(pending_seen, "the batch completed before the next submission 10 times");
        drop(client);
        e.shutdown();
    }
}

/// A finished batch's vector is what the next `batch_vec` hands out: the same memory (already
/// mapped), emptied. Only this test calls `batch_vec`, with more room than any other test's
/// batch, so the spare it finds is its own.
#[test]
fn a_finished_batch_leaves_its_vector_for_the_next_one() {
    let (e, c, rx) = start();
    let mut v = completion::batch_vec(300_000);
    assert!(v.is_empty() && v.capacity() >= 300_000);
    v.extend(setup());
    v.extend((1..=300).map(trade));
    let n = v.len() as u32;
    let at = v.as_ptr();
    c.submit(1, Work::Batch(v));
    let done = collect(&rx, 1);
    let Outcome::Batch(b) = &done[0].1 else { panic!("{:?}", done[0]) };
    assert_eq!(b.accepted, n);
    let again = completion::batch_vec(250_000);
    assert_eq!(again.as_ptr(), at, "the spare is the finished batch's vector");
    assert!(again.is_empty());
    // Taken: the next request gets other memory.
    let other = completion::batch_vec(250_000);
    assert_ne!(other.as_ptr(), at);
    c.finish();
    e.shutdown();
}
