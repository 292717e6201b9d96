//! Any bytes through the dispatch table: a typed error or a message whose fields all read, whose
//! command or event re-encodes to bytes that decode to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use novate_wire::convert::{encode_command, encode_event};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = novate_wire::decode_message(data) else { return };
    assert!(m.encoded_len() <= data.len());
    let mut n_fields = 0usize;
    m.visit(&mut |_, _, _| n_fields += 1);
    let mut out = [0u8; 256];
    if let Some((r, c)) = m.command() {
        let n = encode_command(&mut out, r, &c).expect("fits");
        assert_eq!(
            novate_wire::decode_exact(&out[..n]).expect("re-decodes").command(),
            Some((r, c))
        );
    }
    if let Ok(Some((seq, e))) = m.event() {
        let n = encode_event(&mut out, seq, &e).expect("fits");
        assert_eq!(
            novate_wire::decode_exact(&out[..n]).expect("re-decodes").event(),
            Ok(Some((seq, e)))
        );
    }
    if let novate_wire::Message::ClearTradeBatch(b) = m {
        assert!(b.commands().count() <= novate_wire::GROUP_ENTRIES_MAX);
    }
});
