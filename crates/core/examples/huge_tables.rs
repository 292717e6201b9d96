//! How much of a large state machine's memory is backed by transparent huge pages: builds one
//! with the core bench's 1m limits (100k accounts, 1k instruments, 1,001,000 positions, 2M
//! trades), prefaults it as the engine does, and prints every mapping of 2 MiB or more with
//! its resident and `AnonHugePages` kB (from /proc/self/smaps; Linux).
//!
//! `cargo run --release -p novate-core --example huge_tables`

use novate_core::*;

fn main() {
    let limits = Limits {
        accounts_max: 100_000,
        instruments_max: 1_000,
        positions_max: 1_001_000,
        trades_max: 2_000_000,
    };
    let sm = StateMachine::new(limits).expect("limits");
    let (done, asked) = sm.prefault();
    println!("prefaulted {} of {} MiB", done >> 20, asked >> 20);
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps (Linux)");
    let (mut range, mut rss) = (String::new(), 0u64);
    for line in smaps.lines() {
        let kb = |rest: &str| rest.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0);
        if let Some(v) = line.strip_prefix("Rss:") {
            rss = kb(v);
        } else if let Some(v) = line.strip_prefix("AnonHugePages:") {
            if rss >= 2048 {
                println!("{range}  rss {rss:>7} kB  huge {:>7} kB", kb(v));
            }
        } else if line.split(' ').next().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            range = line.split(' ').next().unwrap_or("").to_string();
        }
    }
}
