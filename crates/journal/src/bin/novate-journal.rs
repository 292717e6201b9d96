//! `novate-journal`: operate on a novate data directory.
//!
//! ```text
//! novate-journal verify DATA_DIR              check every record; exit 1 on corruption
//! novate-journal repair DATA_DIR              truncate the journal at its first corruption
//! novate-journal recover DATA_DIR             recover and print last seq and state hash
//! novate-journal crash-writer DATA_DIR SEED   append the synthetic workload forever under
//!                                             Policy::Fsync, printing `ack N` for each new
//!                                             durable watermark (for the crash tests)
//! ```

use novate_journal::*;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Segment size of the crash writer: small, so a run crosses many segments.
const CRASH_SEGMENT_BYTES: u64 = 1 << 20;
/// The crash writer snapshots every this many records.
const CRASH_SNAPSHOT_EVERY: u64 = 4_000;
/// Most records appended but not yet durable; the writer waits beyond this.
const CRASH_IN_FLIGHT_MAX: u64 = 1_024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let r = match args.get(1).map(String::as_str) {
        Some("verify") if args.len() == 3 => verify(Path::new(&args[2])),
        Some("repair") if args.len() == 3 => repair_cmd(Path::new(&args[2])),
        Some("recover") if args.len() == 3 => recover_cmd(Path::new(&args[2])),
        Some("crash-writer") if args.len() == 4 => match args[3].parse() {
            Ok(seed) => crash_writer(Path::new(&args[2]), seed),
            Err(_) => Err("SEED must be a number".to_string()),
        },
        _ => {
            Err("usage: novate-journal verify|repair|recover DATA_DIR | crash-writer DATA_DIR SEED"
                .to_string())
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("novate-journal: {e}");
            ExitCode::FAILURE
        }
    }
}

fn verify(dir: &Path) -> Result<(), String> {
    let (jdir, _) = data_dirs(dir);
    match scan_journal(&jdir).map_err(|e| e.to_string())? {
        None => println!("empty journal"),
        Some(s) => {
            let mut reader = Reader::open(&jdir, s.first_seq).map_err(|e| e.to_string())?;
            let mut n = 0u64;
            while let Some(r) = reader.next().map_err(|e| e.to_string())? {
                decode_command(r.seq, r.payload).map_err(|e| e.to_string())?;
                n += 1;
            }
            println!(
                "ok: {} segments, records {}..={} ({n} commands), torn tail bytes {}",
                s.segments.len(),
                s.first_seq,
                s.last_seq,
                s.dirty_end - s.end_offset
            );
        }
    }
    Ok(())
}

fn repair_cmd(dir: &Path) -> Result<(), String> {
    let (jdir, _) = data_dirs(dir);
    let report = repair(&jdir).map_err(|e| e.to_string())?;
    for a in &report.actions {
        println!("{a:?}");
    }
    println!("journal ends at record {}", report.last_seq);
    Ok(())
}

fn recover_cmd(dir: &Path) -> Result<(), String> {
    let opts = Options { policy: Policy::None, ..Options::default() };
    let mut r = recover(dir, novate_core::Limits::default(), opts).map_err(|e| e.to_string())?;
    println!(
        "last_seq {} state_hash {:#018x} snapshot {:?} replayed {}",
        r.last_seq,
        r.state.state_hash(),
        r.snapshot.map(|s| s.seq),
        r.replay.records
    );
    Ok(())
}

fn crash_writer(dir: &Path, seed: u64) -> Result<(), String> {
    let opts =
        Options { segment_bytes: CRASH_SEGMENT_BYTES, policy: Policy::Fsync, ..Options::default() };
    let rec = recover(dir, synthetic::limits(), opts).map_err(|e| e.to_string())?;
    let (mut sm, mut journal) = (rec.state, rec.journal);
    let out = std::io::stdout();
    let mut out = out.lock();
    writeln!(out, "recovered {} {:#018x}", rec.last_seq, sm.state_hash())
        .map_err(|e| e.to_string())?;
    let snapshotter = Snapshotter::spawn(rec.snapshots.clone());
    let watermark = journal.watermark();
    let mut acked = journal.durable();
    let mut last_snapshot = rec.snapshot.map_or(0, |s| s.seq);
    let mut rng = seed ^ rec.last_seq;
    loop {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let batch = 1 + (rng >> 58);
        for _ in 0..batch {
            let seq = journal.next_seq();
            let cmd = synthetic::command(seed, seq);
            journal.append_command(seq, seq, &cmd).map_err(|e| e.to_string())?;
            let _ = sm.apply(&cmd, seq, seq);
        }
        let last = journal.commit().map_err(|e| e.to_string())?;
        if last - watermark.durable() > CRASH_IN_FLIGHT_MAX {
            watermark.wait(last, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        }
        let d = watermark.durable();
        if d > acked {
            acked = d;
            writeln!(out, "ack {acked}").map_err(|e| e.to_string())?;
        }
        if last - last_snapshot >= CRASH_SNAPSHOT_EVERY {
            // Snapshot only durable state, so a snapshot is never ahead of the journal.
            watermark.wait(last, Duration::from_secs(10)).map_err(|e| e.to_string())?;
            if snapshotter.submit_unhashed(sm.export(), synthetic::limits()) {
                last_snapshot = last;
            }
        }
        if let Some(w) = snapshotter.try_result() {
            let w = w.map_err(|e| e.to_string())?;
            journal.retain(w.info.seq, None).map_err(|e| e.to_string())?;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
