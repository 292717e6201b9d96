//! `novate-demo`: the embedded engine on a synthetic feed. `--help` for the options.

use novate_engine::demo::{run, DemoOptions};

fn main() {
    let mut o = DemoOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> u64 {
            args.next().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or_else(|| {
                eprintln!("novate-demo: {name} needs a number");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--trades" => o.trades = num("--trades"),
            "--accounts" => o.accounts = num("--accounts").clamp(2, 1 << 24) as u32,
            "--instruments" => o.instruments = num("--instruments").clamp(1, 1 << 20) as u32,
            "--latency-samples" => o.latency_samples = num("--latency-samples") as u32,
            "--seed" => o.seed = num("--seed"),
            "--data-dir" => o.data_dir = args.next().unwrap_or_default(),
            "--fsync" => o.fsync = true,
            "--fused" => o.fused = true,
            "--no-progress" => o.progress = false,
            "-h" | "--help" => {
                println!("usage: novate-demo [--trades N] [--accounts N] [--instruments N] [--latency-samples N]");
                println!(
                    "                   [--seed N] [--data-dir DIR] [--fsync] [--fused] [--no-progress]"
                );
                println!(
                    "defaults: {} trades, {} accounts, {} instruments, in memory",
                    o.trades, o.accounts, o.instruments
                );
                return;
            }
            other => {
                eprintln!("novate-demo: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = run(&o, &mut std::io::stdout().lock()) {
        eprintln!("novate-demo: {e}");
        std::process::exit(1);
    }
}
