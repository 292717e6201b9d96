//! `novated`: the clearing daemon. `novated [--config FILE] [--listen ADDR] [--data-dir DIR]`.
//!
//! Prints `novated listening on ADDR` once it accepts connections. SIGTERM or SIGINT: stop
//! accepting, answer every request already read, commit the journal, snapshot, exit 0.
//! A restart recovers the snapshot and the journal and serves the same state hash.

use std::process::exit;

use novate_engine::{Config, Server};

fn usage() -> ! {
    eprintln!("usage: novated [--config FILE] [--listen ADDR:PORT] [--data-dir DIR]");
    exit(2)
}

/// Block SIGTERM and SIGINT in this thread (and so in every thread it starts), then wait for
/// one of them in `wait_for_signal`.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and its signals are blocked in this thread; `sig` is valid.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

fn main() {
    let mut config_path = None;
    let mut listen = None;
    let mut data_dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => config_path = Some(args.next().unwrap_or_else(|| usage())),
            "--listen" => listen = Some(args.next().unwrap_or_else(|| usage())),
            "--data-dir" => data_dir = Some(args.next().unwrap_or_else(|| usage())),
            "-h" | "--help" => {
                println!("usage: novated [--config FILE] [--listen ADDR:PORT] [--data-dir DIR]  (docs/CONFIG.md)");
                return;
            }
            _ => usage(),
        }
    }
    let mut cfg = match &config_path {
        Some(p) => Config::load(std::path::Path::new(p)).unwrap_or_else(|e| {
            eprintln!("novated: {p}: {e}");
            exit(2)
        }),
        None => Config::default(),
    };
    if let Some(l) = listen {
        cfg.net.listen = l;
    }
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    if let Err(e) = cfg.validate() {
        eprintln!("novated: {e}");
        exit(2);
    }
    let signals = block_signals();
    let server = Server::start(&cfg).unwrap_or_else(|e| {
        eprintln!("novated: {e}");
        exit(1)
    });
    for line in &server.engine().start_report().lines {
        eprintln!("novated: {line}");
    }
    let n = &cfg.net;
    let poll = match n.busy_poll_us {
        0 => "block at once".to_string(),
        us => format!("poll their socket for {us} us before they block"),
    };
    eprintln!(
        "novated: connections: at most {}, cut off after {} ms without reading, readers {poll}",
        n.connections_max, n.write_timeout_ms
    );
    println!("novated listening on {}", server.local_addr());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let sig = wait_for_signal(&signals);
    eprintln!("novated: signal {sig}: draining");
    let report = server.shutdown();
    eprintln!(
        "novated: stopped at seq {} state hash {:016x}{}",
        report.last_seq,
        report.state_hash,
        if report.snapshot_saved { " (snapshot saved)" } else { "" }
    );
}
