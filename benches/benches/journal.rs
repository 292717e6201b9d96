//! Journal and snapshot benchmarks (issue 5), each against peers in the same run:
//! - append: novate `Journal` (mmap, CRC32C, hash chain) with `Policy::None` and `Policy::Fsync`
//!   (group commit on the flusher thread), batches of 1, 64 and 1024 records of 64..=256 bytes;
//!   peers: heed (LMDB) puts of the same records, one write transaction per batch (with and
//!   without sync at commit), and a plain file: one `write(2)` per record, `fdatasync` per batch.
//! - replay: `Reader` (every record's CRC, sequence and chain checked), and full replay of SBE
//!   commands into a `StateMachine`.
//! - snapshots: `export()` (the state machine's pause), `state_hash()`, LMDB write and
//!   load (read + restore + hash verification) at 1M positions.
//!
//! Run: `cargo bench -p novate-benches --bench journal` (NOVATE_BENCH_QUICK=1 for a smoke run).
//! Files go to a temporary directory under `TMPDIR` (default /tmp).

use hdrhistogram::Histogram;
use heed::types::Bytes;
use heed::{Database, EnvFlags, EnvOpenOptions};
use novate_benches::{latency_histogram, report, SplitMix};
use novate_core::*;
use novate_journal::*;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

const BATCHES: [usize; 3] = [1, 64, 1024];

struct Sizes {
    records_none: usize,
    records_fsync: usize,
    replay_records: usize,
    positions: usize,
}

fn sizes() -> Sizes {
    if std::env::var_os("NOVATE_BENCH_QUICK").is_some() {
        Sizes {
            records_none: 200_000,
            records_fsync: 20_000,
            replay_records: 200_000,
            positions: 100_000,
        }
    } else {
        Sizes {
            records_none: 2_000_000,
            records_fsync: 500_000,
            replay_records: 2_000_000,
            positions: 1_000_000,
        }
    }
}

/// `n` payloads of 64..=256 bytes, concatenated, with their offsets.
fn payloads(n: usize) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut rng = SplitMix(5);
    let mut bytes = Vec::new();
    let mut at = Vec::with_capacity(n);
    for _ in 0..n {
        let len = 64 + rng.below(193) as usize;
        at.push((bytes.len(), len));
        for _ in 0..len {
            bytes.push(rng.next_u64() as u8);
        }
    }
    (bytes, at)
}

struct Run {
    /// Amortized ns per record, appends through the last record durable (by the policy).
    ns_per_record: f64,
    /// Per batch: time of the append+commit calls (what the appender thread pays).
    call: Histogram<u64>,
    /// Per batch: commit until the durable watermark covers it (Policy::Fsync only).
    ack: Option<Histogram<u64>>,
    syncs: u64,
}

fn journal_run(
    dir: &Path,
    policy: Policy,
    batch: usize,
    n: usize,
    data: &(Vec<u8>, Vec<(usize, usize)>),
    timed: bool,
    in_flight_max: Option<u64>,
) -> Run {
    let _ = std::fs::remove_dir_all(dir);
    let opts = Options { policy, ..Options::default() };
    let (mut j, _) = Journal::open(dir, opts).expect("open journal");
    let w = j.watermark();
    let mut call = latency_histogram();
    let mut ack = latency_histogram();
    // Commit times of batches not yet seen durable: (last seq, commit instant).
    let mut pending: std::collections::VecDeque<(u64, Instant)> = std::collections::VecDeque::new();
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        if !timed {
            for &(off, len) in &data.1[i..end] {
                j.append(0, &data.0[off..off + len]).expect("append");
            }
            j.commit().expect("commit");
            i = end;
            continue;
        }
        let s = Instant::now();
        for &(off, len) in &data.1[i..end] {
            j.append(0, &data.0[off..off + len]).expect("append");
        }
        let last = j.commit().expect("commit");
        let e = Instant::now();
        call.record((e - s).as_nanos().max(1) as u64).expect("record");
        if let Some(cap) = in_flight_max {
            // A sequencer that bounds what is appended but not yet durable.
            if last > cap && w.durable() < last - cap {
                w.wait(last - cap, Duration::from_secs(60)).expect("wait");
            }
        }
        if policy == Policy::Fsync {
            pending.push_back((last, e));
            let d = w.durable();
            while pending.front().is_some_and(|&(l, _)| l <= d) {
                let (_, c) = pending.pop_front().expect("front");
                ack.record(c.elapsed().as_nanos().max(1) as u64).expect("record");
            }
        }
        i = end;
    }
    let last = j.last_seq();
    while !w.wait(last, Duration::from_secs(60)).expect("wait") {}
    let elapsed = t0.elapsed();
    for (_, c) in pending {
        ack.record(c.elapsed().as_nanos().max(1) as u64).expect("record");
    }
    let syncs = w.syncs();
    j.close().expect("close");
    Run {
        ns_per_record: elapsed.as_nanos() as f64 / n as f64,
        call,
        ack: (policy == Policy::Fsync).then_some(ack),
        syncs,
    }
}

fn heed_run(
    dir: &Path,
    sync: bool,
    batch: usize,
    n: usize,
    data: &(Vec<u8>, Vec<(usize, usize)>),
) -> (f64, Histogram<u64>) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("dir");
    let mut o = EnvOpenOptions::new();
    o.map_size(8 << 30).max_dbs(1);
    if !sync {
        // SAFETY: NO_SYNC only drops the fsync at commit; this benchmark env is private.
        unsafe {
            o.flags(EnvFlags::NO_SYNC);
        }
    }
    // SAFETY: a fresh directory opened once in this process.
    let env = unsafe { o.open(dir) }.expect("open lmdb");
    let mut wtxn = env.write_txn().expect("txn");
    let db: Database<Bytes, Bytes> = env.create_database(&mut wtxn, Some("log")).expect("db");
    wtxn.commit().expect("commit");
    let mut h = latency_histogram();
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        let s = Instant::now();
        let mut wtxn = env.write_txn().expect("txn");
        for (k, &(off, len)) in data.1[i..end].iter().enumerate() {
            let key = ((i + k) as u64 + 1).to_be_bytes();
            db.put_with_flags(&mut wtxn, heed::PutFlags::APPEND, &key, &data.0[off..off + len])
                .expect("put");
        }
        wtxn.commit().expect("commit");
        h.record(s.elapsed().as_nanos().max(1) as u64).expect("record");
        i = end;
    }
    (t0.elapsed().as_nanos() as f64 / n as f64, h)
}

fn file_run(
    dir: &Path,
    sync: bool,
    batch: usize,
    n: usize,
    data: &(Vec<u8>, Vec<(usize, usize)>),
) -> (f64, Histogram<u64>) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("dir");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(dir.join("log"))
        .expect("open");
    let mut h = latency_histogram();
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + batch).min(n);
        let s = Instant::now();
        for &(off, len) in &data.1[i..end] {
            f.write_all(&data.0[off..off + len]).expect("write");
        }
        if sync {
            // SAFETY: fdatasync on the descriptor `f` owns.
            let rc = unsafe { libc::fdatasync(f.as_raw_fd()) };
            assert_eq!(rc, 0, "fdatasync");
        }
        h.record(s.elapsed().as_nanos().max(1) as u64).expect("record");
        i = end;
    }
    (t0.elapsed().as_nanos() as f64 / n as f64, h)
}

fn append_benches(root: &Path, sz: &Sizes) {
    for (policy, n) in [(Policy::None, sz.records_none), (Policy::Fsync, sz.records_fsync)] {
        let data = payloads(n);
        let pname = if policy == Policy::None { "none" } else { "fsync" };
        let sync = policy == Policy::Fsync;
        for batch in BATCHES {
            // Batches of 1 with a synchronous fdatasync each take ~1 ms: fewer records there.
            let peer_n = if sync && batch == 1 { n.min(2_000) } else { n };
            let r = journal_run(&root.join("journal"), policy, batch, n, &data, true, None);
            // Amortized figure: median of 3 runs without per-batch clock reads.
            let mut untimed: Vec<Run> = (0..3)
                .map(|_| journal_run(&root.join("journal"), policy, batch, n, &data, false, None))
                .collect();
            untimed.sort_by(|a, b| a.ns_per_record.total_cmp(&b.ns_per_record));
            let (timed_ns, u) = (r.ns_per_record, &untimed[1]);
            let r = Run { ns_per_record: u.ns_per_record, syncs: u.syncs, ..r };
            let (heed_ns, heed_h) = heed_run(&root.join("heed"), sync, batch, peer_n, &data);
            let (file_ns, file_h) = file_run(&root.join("file"), sync, batch, peer_n, &data);
            let name = format!("append/{pname}/batch {batch}");
            println!(
                "{name}/novate journal: {:.1} ns/record amortized, median of 3 untimed runs ({:.2} M records/s; runs {:.1} / {:.1} / {:.1}), {} fdatasyncs; {timed_ns:.1} ns/record in the timed run",
                r.ns_per_record,
                1e3 / r.ns_per_record,
                untimed[0].ns_per_record,
                untimed[1].ns_per_record,
                untimed[2].ns_per_record,
                r.syncs
            );
            println!(
                "{}",
                report(&format!("{name}/novate journal append+commit per batch"), &r.call)
            );
            if let Some(a) = &r.ack {
                println!(
                    "{}",
                    report(&format!("{name}/novate journal commit->durable per batch"), a)
                );
            }
            let heed_label =
                if sync { "heed txn per batch (sync)" } else { "heed txn per batch (NO_SYNC)" };
            let file_label = if sync { "write(2) + fdatasync per batch" } else { "write(2)" };
            println!(
                "{name}/peer {heed_label}: {heed_ns:.1} ns/record ({:.2} M records/s)",
                1e3 / heed_ns
            );
            println!("{}", report(&format!("{name}/peer {heed_label} per batch"), &heed_h));
            println!(
                "{name}/peer {file_label}: {file_ns:.1} ns/record ({:.2} M records/s)",
                1e3 / file_ns
            );
            println!("{}", report(&format!("{name}/peer {file_label} per batch"), &file_h));
            println!(
                "ratio {name}: heed/novate = {:.2}x, file/novate = {:.2}x",
                heed_ns / r.ns_per_record,
                file_ns / r.ns_per_record
            );
        }
    }
}

/// Group commit with a bound on records appended but not yet durable: the trade-off between
/// throughput and acknowledgement latency a sequencer would actually run with.
fn bounded_fsync_benches(root: &Path, sz: &Sizes) {
    let n = sz.records_fsync;
    let data = payloads(n);
    for (batch, cap) in [(64usize, 4_096u64), (64, 32_768), (1024, 65_536)] {
        let r = journal_run(&root.join("journal"), Policy::Fsync, batch, n, &data, true, Some(cap));
        let name = format!("append/fsync/batch {batch}/in-flight <= {cap}");
        println!(
            "{name}/novate journal: {:.1} ns/record amortized ({:.2} M records/s), {} fdatasyncs",
            r.ns_per_record,
            1e3 / r.ns_per_record,
            r.syncs
        );
        println!(
            "{}",
            report(
                &format!("{name}/novate journal commit->durable per batch"),
                r.ack.as_ref().expect("fsync")
            )
        );
    }
}

fn replay_benches(root: &Path, sz: &Sizes) {
    let dir = root.join("replay");
    let _ = std::fs::remove_dir_all(&dir);
    let (jdir, _) = data_dirs(&dir);
    let (mut j, _) =
        Journal::open(&jdir, Options { policy: Policy::None, ..Options::default() }).expect("open");
    let n = sz.replay_records as u64;
    let mut live = StateMachine::new(synthetic::limits()).expect("limits");
    for seq in 1..=n {
        let cmd = synthetic::command(11, seq);
        j.append_command(seq, seq, &cmd).expect("append");
        let _ = live.apply(&cmd, seq, seq);
    }
    j.close().expect("close");
    let mut best_raw = f64::MAX;
    let mut best_apply = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut r = Reader::open(&jdir, 1).expect("reader");
        let mut bytes = 0usize;
        let mut count = 0u64;
        while let Some(rec) = r.next().expect("read") {
            bytes += rec.payload.len();
            count += 1;
        }
        let ns = t.elapsed().as_nanos() as f64 / count as f64;
        assert_eq!(count, n);
        assert!(bytes > 0);
        best_raw = best_raw.min(ns);
        let t = Instant::now();
        let mut sm = StateMachine::new(synthetic::limits()).expect("limits");
        let stats = replay(&mut Reader::open(&jdir, 1).expect("reader"), &mut sm).expect("replay");
        let ns = t.elapsed().as_nanos() as f64 / stats.records as f64;
        assert_eq!(sm.state_hash(), live.state_hash(), "replay must equal live");
        best_apply = best_apply.min(ns);
    }
    println!("replay/read+verify (CRC, seq, chain): {best_raw:.1} ns/record ({:.1} M records/s), best of 3", 1e3 / best_raw);
    println!(
        "replay/read+verify+decode SBE+apply: {best_apply:.1} ns/record ({:.2} M records/s), best of 3",
        1e3 / best_apply
    );
    // Peer: reading the same bytes back with read(2) (no checks) is the floor for a file journal.
    let t = Instant::now();
    let mut total = 0usize;
    for (_, p) in scan::list_segments(&jdir).expect("list") {
        total += std::fs::read(&p).expect("read").len();
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("replay/peer std::fs::read of the segment files (no checks): {ns:.1} ns/record ({total} bytes)");
    println!("ratio replay: read+verify / plain read = {:.2}x", best_raw / ns);
}

fn snapshot_benches(root: &Path, sz: &Sizes) {
    // ~10 instruments per account: accounts = positions / 10, trades open 2 positions each.
    let accounts = (sz.positions / 10) as u64;
    let instruments = 1_000u32;
    let limits = Limits {
        accounts_max: accounts as u32 + 16,
        instruments_max: instruments + 16,
        positions_max: sz.positions as u32 + 1_000,
        trades_max: sz.positions as u32,
    };
    let mut sm = StateMachine::new(limits).expect("limits");
    let mut seq = 0;
    let mut next = |sm: &mut StateMachine, cmd: Command| {
        seq += 1;
        let _ = sm.apply(&cmd, seq, 0);
    };
    for id in 1..=instruments {
        next(
            &mut sm,
            Command::UpsertInstrument(InstrumentSpec {
                id,
                multiplier: 1,
                margin_bps: 1_000,
                settle_days: 2,
            }),
        );
        next(&mut sm, Command::MarkPrice { instrument: id, price: 100 * PRICE_SCALE });
    }
    for id in 1..=accounts {
        next(
            &mut sm,
            Command::UpsertAccount(AccountSpec {
                id,
                max_position: 0,
                max_notional: 0,
                max_loss: 0,
                suspended: false,
            }),
        );
        next(
            &mut sm,
            Command::AdjustCollateral {
                account: id,
                amount: 1_000_000_000 * i128::from(PRICE_SCALE),
            },
        );
    }
    let mut rng = SplitMix(3);
    let mut trade_id = 0;
    while sm.positions_len() + 2 <= sz.positions && trade_id < u64::from(limits.trades_max) {
        trade_id += 1;
        let buy = 1 + rng.below(accounts);
        let sell = 1 + (buy + rng.below(accounts - 1)) % accounts;
        let t = Trade {
            trade_id,
            buy,
            sell,
            instrument: 1 + rng.below(u64::from(instruments)) as u32,
            qty: 1 + rng.below(100) as i64,
            price: (95 + rng.below(10) as i64) * PRICE_SCALE,
            trade_date: 20260105,
        };
        next(&mut sm, Command::ClearTrade(t));
    }
    println!(
        "snapshot setup: {} accounts, {} instruments, {} positions, {} trades",
        sm.accounts_len(),
        sm.instruments_len(),
        sm.positions_len(),
        sm.trades_len()
    );
    let dir = root.join("snapshots");
    let _ = std::fs::remove_dir_all(&dir);
    let store = SnapshotStore::open(&dir).expect("store");
    let mut export = Vec::new();
    let mut hash = Vec::new();
    let mut write = Vec::new();
    let mut load = Vec::new();
    let expected = sm.state_hash();
    for rep in 0..3u64 {
        // A new seq per repetition (the store keeps the newest two).
        let _ = sm.apply(
            &Command::MarkPrice { instrument: 1, price: (100 + rep as i64) * PRICE_SCALE },
            1_000_000_000 + rep,
            0,
        );
        let t = Instant::now();
        let snap = sm.export();
        export.push(t.elapsed());
        let t = Instant::now();
        let h = sm.state_hash();
        hash.push(t.elapsed());
        let t = Instant::now();
        let info = store.write(&snap, h).expect("write");
        write.push(t.elapsed());
        drop(snap);
        let t = Instant::now();
        let (_, mut back) = store.load(info.seq, limits).expect("load");
        load.push(t.elapsed());
        assert_eq!(back.state_hash(), h);
    }
    let _ = expected;
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    let positions = sm.positions_len();
    println!(
        "snapshot/export (state machine pause) at {positions} positions: median {:.1} ms of 3",
        med(&mut export)
    );
    println!("snapshot/state_hash at {positions} positions: median {:.1} ms of 3", med(&mut hash));
    println!("snapshot/LMDB write (one txn, APPEND, fsync at commit) at {positions} positions: median {:.1} ms of 3", med(&mut write));
    println!("snapshot/LMDB load (read + restore + hash check) at {positions} positions: median {:.1} ms of 3", med(&mut load));
    let disk: u64 = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    println!(
        "snapshot/LMDB files: {:.1} MiB (two snapshots retained)",
        disk as f64 / (1 << 20) as f64
    );
}

fn main() {
    let sz = sizes();
    let root = tempfile::Builder::new().prefix("novate-journal-bench").tempdir().expect("tempdir");
    println!("journal bench files in {}", root.path().display());
    let only = std::env::var("NOVATE_BENCH_JOURNAL").ok();
    let run = |what: &str| only.as_deref().is_none_or(|o| o == what);
    if run("append") {
        append_benches(root.path(), &sz);
    }
    if run("append") || run("bounded") {
        bounded_fsync_benches(root.path(), &sz);
    }
    if run("replay") {
        replay_benches(root.path(), &sz);
    }
    if run("snapshot") {
        snapshot_benches(root.path(), &sz);
    }
}
