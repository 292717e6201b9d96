//! Crash tests with real processes: `novate-journal crash-writer` appends the synthetic
//! workload under `Policy::Fsync` (snapshots, retention and segment rolls included) and prints
//! `ack N` for each durable watermark; the test kill -9s it at a random moment, recovers the
//! same directory, and checks that
//! - every acknowledged record is present and intact (CRC, chain, and the exact bytes the
//!   workload defines for that sequence number), and
//! - the recovered `state_hash()` equals a state machine that applied exactly the records the
//!   journal holds.
//!
//! Then the next writer continues on the recovered directory. Iterations:
//! `NOVATE_CRASH_ITERATIONS` (default 50).

use novate_core::StateMachine;
use novate_journal::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEED: u64 = 0xc0ffee;

fn iterations() -> usize {
    std::env::var("NOVATE_CRASH_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(50)
}

fn opts() -> Options {
    Options { segment_bytes: 1 << 20, policy: Policy::Fsync, ..Options::default() }
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_record() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let (jdir, _) = data_dirs(dir);
    let mut rng = novate_rng(0x9e37);
    let mut acked_max = 0u64;
    let mut model = StateMachine::new(synthetic::limits()).unwrap();
    let mut snapshots_used = 0;
    let mut truncations = 0;
    let started = Instant::now();
    let n = iterations();
    for i in 0..n {
        let mut child = Command::new(env!("CARGO_BIN_EXE_novate-journal"))
            .args(["crash-writer", dir.to_str().unwrap(), &SEED.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crash writer");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut max = 0u64;
            let mut started = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("recovered ") {
                    started = true;
                } else if let Some(n) = line.strip_prefix("ack ") {
                    max = max.max(n.parse().expect("ack number"));
                }
            }
            (started, max)
        });
        // Kill at a random moment: sometimes during its own recovery, mostly under load.
        let wait_ms = if i % 10 == 3 { rng() % 5 } else { 20 + rng() % 180 };
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().expect("kill -9"); // SIGKILL
        let status = child.wait().unwrap();
        let (started, acked) = reader.join().unwrap();
        if !started && status.code().is_some() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("iteration {i}: writer exited by itself ({status}): {err}");
        }
        acked_max = acked_max.max(acked);

        let mut rec = recover(dir, synthetic::limits(), opts())
            .unwrap_or_else(|e| panic!("iteration {i}: recovery failed after kill -9: {e}"));
        let last = rec.last_seq;
        assert!(
            last >= acked_max,
            "iteration {i}: acknowledged {acked_max} but recovered only {last}"
        );
        snapshots_used += usize::from(rec.snapshot.is_some());
        truncations += usize::from(rec.open.truncated.is_some());

        // Every acknowledged record still held (retention removes only snapshot-covered ones)
        // is intact and is exactly the workload's command.
        let first = rec.journal.first_seq();
        let mut reader = Reader::open(&jdir, first).unwrap().until(last);
        let mut expect = first;
        while let Some(r) = reader.next().unwrap() {
            assert_eq!(r.seq, expect);
            assert_eq!(
                decode_command(r.seq, r.payload).unwrap(),
                (r.seq, synthetic::command(SEED, r.seq))
            );
            expect += 1;
        }
        assert_eq!(expect, last + 1, "iteration {i}: records {first}..={last} not all readable");

        // The recovered state is the replay of exactly the records the journal holds.
        if model.last_seq() > last {
            model = StateMachine::new(synthetic::limits()).unwrap();
        }
        for seq in model.last_seq() + 1..=last {
            let _ = model.apply(&synthetic::command(SEED, seq), seq, seq);
        }
        assert_eq!(
            rec.state.state_hash(),
            model.state_hash(),
            "iteration {i}: recovered state differs at seq {last}"
        );
        drop(rec);
    }
    eprintln!(
        "{n} kill -9 runs in {:.1}s: {acked_max} records acknowledged, {} journaled, {snapshots_used} recoveries from a snapshot, {truncations} torn tails truncated",
        started.elapsed().as_secs_f64(),
        model.last_seq()
    );
    assert!(acked_max > 0, "the writer never acknowledged anything");
    if n >= 10 {
        assert!(snapshots_used > 0, "no recovery went through a snapshot");
    }
}

fn novate_rng(mut s: u64) -> impl FnMut() -> u64 {
    move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
