//! A byte stream cut into reads of fuzzer-chosen sizes: the incremental SOFH decoder must give
//! the same frames as parsing the whole stream at once, and never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use novate_wire::frame::{parse_frame, StreamDecoder};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let chunk = usize::from(cut).max(1);
    // Reference: parse the whole stream at once.
    let mut whole = Vec::new();
    let mut rest = stream;
    while let Ok(Some((payload, len))) = parse_frame(rest) {
        whole.push(payload);
        rest = &rest[len..];
    }
    let mut dec = StreamDecoder::new();
    let mut got = 0usize;
    'outer: for piece in stream.chunks(chunk) {
        dec.push(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => {
                    assert_eq!(Some(&f), whole.get(got));
                    got += 1;
                    let _ = novate_wire::frame::decode_frame(f);
                }
                Ok(None) => break,
                Err(_) => break 'outer,
            }
        }
    }
    assert!(got <= whole.len());
});
