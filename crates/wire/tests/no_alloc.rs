//! Decoding, encoding, framing and FIX parsing never allocate: a counting global allocator
//! proves it (ARCHITECTURE.md: no allocation on the hot path).

use novate_core::{Command, Trade};
use novate_wire::convert::*;
use novate_wire::frame::{write_frame, Packet, PacketWriter, StreamDecoder};
use novate_wire::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Allocations made by this thread. Per thread, not global: libtest's main thread does its
    /// own bookkeeping (allocating) while the test thread runs, and on a loaded machine that
    /// overlaps the measured section. Const-initialised and without a destructor, so reading
    /// it from inside the allocator never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: a thread being torn down may still free/allocate after its TLS is gone.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn the_hot_paths_do_not_allocate() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut golden: Vec<Vec<u8>> = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "bin") {
            golden.push(std::fs::read(p).unwrap());
        }
    }
    assert!(golden.len() >= 22);
    let trade = Trade {
        trade_id: 1,
        buy: 2,
        sell: 3,
        instrument: 4,
        qty: 5,
        price: 6,
        trade_date: 20260101,
    };
    let mut fix_buf = [0u8; 512];
    let fix_len = fix::write_trade_capture_report(&mut fix_buf, 9, &trade).unwrap();
    let mut stream = vec![0u8; 4096];
    let mut stream_len = 0;
    for g in &golden {
        stream_len += write_frame(&mut stream[stream_len..], |b| {
            b[..g.len()].copy_from_slice(g);
            Ok(g.len())
        })
        .unwrap();
    }
    let mut dec = StreamDecoder::new(); // the one allocation, at start-up
    let mut out = [0u8; 1024];
    let mut packet = [0u8; 1500];

    let n = allocations_during(|| {
        let mut decoded = 0;
        for g in &golden {
            let m = decode_exact(g).unwrap();
            m.visit(&mut |_, _, _| {});
            if let Some((r, c)) = m.command() {
                encode_command(&mut out, r, &c).unwrap();
            }
            if let Ok(Some((s, e))) = m.event() {
                encode_event(&mut out, s, &e).unwrap();
            }
            if let Message::ClearTradeBatch(b) = m {
                decoded += b.commands().count();
            }
            decoded += 1;
        }
        assert!(decoded > golden.len());
        for chunk in stream[..stream_len].chunks(7) {
            dec.push(chunk);
            while let Some(f) = dec.next_frame().unwrap() {
                decode_exact(f).unwrap();
            }
        }
        assert!(decode_message(&[0u8; 3]).is_err());
        assert_eq!(fix::parse(&fix_buf[..fix_len]).unwrap().command, Command::ClearTrade(trade));
        assert!(fix::parse(b"8=FIX.4.4\x019=5\x0135=D\x0110=000\x01").is_err());
        let mut w = PacketWriter::new(&mut packet, 1, 1).unwrap();
        w.push(|b| encode_ack(b, 1, 2, 3)).unwrap();
        let len = w.len();
        assert_eq!(Packet::parse(&packet[..len]).unwrap().frames().count(), 1);
    });
    assert_eq!(n, 0, "allocations on the hot paths");
    // The counter does see allocations.
    assert!(allocations_during(|| drop(std::hint::black_box(vec![1u8; 8]))) >= 1);
}
