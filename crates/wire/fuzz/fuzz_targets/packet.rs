//! Datagrams: parse the packet header and frames, decode each message, track gaps.
#![no_main]
use libfuzzer_sys::fuzz_target;
use novate_wire::frame::{decode_frame, GapDetector, Packet};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::parse(data) else { return };
    assert_eq!(p.frames().count(), usize::from(p.header.frame_count));
    for f in p.frames() {
        let _ = decode_frame(f).map(|m| m.command());
    }
    let mut g = GapDetector::starting_at(1);
    let _ = g.observe(p.header.seq);
});
