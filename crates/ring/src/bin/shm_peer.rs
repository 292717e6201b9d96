//! `novate-shm-peer`: the other process of the cross-process byte ring test (and a manual tool).
//!
//! `novate-shm-peer echo IN OUT COUNT TIMEOUT_MS`: opens the rings at IN (as consumer) and OUT
//! (as producer), copies COUNT frames from IN to OUT unchanged, exits 0. Exits 2 on a bad
//! argument, 3 on a timeout, 4 on a corrupt frame.

use std::path::Path;
use std::process::exit;
use std::time::{Duration, Instant};

use novate_ring::bytes::{ByteRing, ClaimError};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 || args[1] != "echo" {
        eprintln!("usage: novate-shm-peer echo IN OUT COUNT TIMEOUT_MS");
        exit(2);
    }
    let count: u64 = args[4].parse().unwrap_or_else(|_| exit(2));
    let timeout_ms: u64 = args[5].parse().unwrap_or_else(|_| exit(2));
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    let open = |p: &str| {
        ByteRing::open(Path::new(p)).unwrap_or_else(|e| {
            eprintln!("novate-shm-peer: {p}: {e}");
            exit(2)
        })
    };
    let mut input = open(&args[2]).into_consumer();
    let mut output = open(&args[3]).into_producer();
    let mut copied = 0u64;
    let mut buf = Vec::new();
    while copied < count {
        if Instant::now() > deadline {
            eprintln!("novate-shm-peer: timed out after {copied} of {count} frames");
            exit(3);
        }
        buf.clear();
        match input.read(|f| buf.extend_from_slice(f), 1) {
            Ok(0) => {
                std::thread::yield_now();
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("novate-shm-peer: {e}");
                exit(4);
            }
        }
        loop {
            match output.try_write(&buf) {
                Ok(()) => break,
                Err(ClaimError::Full { .. }) if Instant::now() < deadline => {
                    std::thread::yield_now();
                }
                Err(e) => {
                    eprintln!("novate-shm-peer: {e}");
                    exit(3);
                }
            }
        }
        copied += 1;
    }
}
