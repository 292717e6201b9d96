//! An idle `novated` (default `park` wait strategy) stays asleep: its pipeline threads, its
//! listener and an idle connection's threads wake a few times a second, not ~1,000 times each
//! (what a 1 ms park bound costs), and it still answers at once when work comes.
//!
//! One test in its own file, so its process holds no other test's threads while it counts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use novate_engine::{Config, Server};
use novate_wire::convert::encode_command;
use novate_wire::frame::write_frame;
use novate_wire::{decode_exact, Message};

mod common;

/// Voluntary context switches (sleeps that ended) of this process's `novate-*` threads, and how
/// many such threads there are.
fn novate_wakeups() -> (u64, usize) {
    let ours: Vec<_> = novate_mem::cpu::thread_stats()
        .into_iter()
        .filter(|t| t.name.starts_with("novate-"))
        .collect();
    (ours.iter().map(|t| t.voluntary_switches).sum(), ours.len())
}

/// Send `cmds` on `t` and read one answer per command: true if all are Acks.
fn all_acked(t: &mut TcpStream, first_rid: u64, cmds: &[novate_core::Command]) -> bool {
    for (i, c) in cmds.iter().enumerate() {
        let mut b = [0u8; 128];
        let n = write_frame(&mut b, |x| encode_command(x, first_rid + i as u64, c)).unwrap();
        t.write_all(&b[..n]).unwrap();
    }
    (0..cmds.len()).all(|_| {
        let mut head = [0u8; 6];
        t.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let mut payload = vec![0u8; len - head.len()];
        t.read_exact(&mut payload).unwrap();
        matches!(decode_exact(&payload), Ok(Message::Ack(_)))
    })
}

#[test]
fn an_idle_daemon_sleeps_and_still_answers_at_once() {
    for stages in ["split", "fused"] {
        let mut c = Config::default();
        c.threads.stages = stages.into();
        c.net.listen = "127.0.0.1:0".into();
        c.engine.accounts_max = 100;
        c.engine.instruments_max = 10;
        c.engine.positions_max = 1000;
        c.engine.trades_max = 1000;
        let server = Server::start(&c).unwrap();
        let mut t = TcpStream::connect(server.local_addr()).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert!(all_acked(&mut t, 1, &common::instrument_and_two_accounts(1)));

        // Idle long enough for every waiter to reach its long parks (~0.1 s of 1 ms parks, then
        // a doubling up to 50 ms: ~0.2 s, with room for a slow machine), then count the
        // wake-ups of a further 0.6 s.
        std::thread::sleep(Duration::from_millis(800));
        let (before, threads) = novate_wakeups();
        std::thread::sleep(Duration::from_millis(600));
        let (after, _) = novate_wakeups();
        let wakeups = after - before;
        // Sequencer, state machine, egress (or the fused stage), listener, the connection's
        // reader (blocked in recv) and writer: ~20 wake-ups a second each now. With a 1 ms park
        // bound the pipeline threads and the writer alone woke ~900 times a second each
        // (~2,000 in these 0.6 s).
        assert!(threads >= 4, "{stages}: found {threads} novate threads");
        assert!(
            wakeups < 40 * threads as u64,
            "{stages}: {threads} idle threads woke {wakeups} times in 0.6 s"
        );

        // Work after a long idle is still taken at once: the submitter wakes the pipeline.
        assert!(all_acked(
            &mut t,
            10,
            &[common::trade_in_7(1, 1, 2, 1, 10 * novate_core::PRICE_SCALE)]
        ));
        drop(t);
        server.shutdown();
    }
}
