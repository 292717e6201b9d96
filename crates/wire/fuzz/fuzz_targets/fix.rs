//! FIX tag=value: any bytes give a command or a typed error; a parsed trade re-written by our
//! writer parses to the same command.
#![no_main]
use libfuzzer_sys::fuzz_target;
use novate_core::Command;
use novate_wire::fix::{parse, write_new_order_single, write_trade_capture_report};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = parse(data) else { return };
    let mut buf = [0u8; 1024];
    let n = match p.command {
        Command::ClearTrade(t) => write_trade_capture_report(&mut buf, p.request_id, &t),
        c => write_new_order_single(&mut buf, p.request_id, &c),
    }
    .expect("fits");
    assert_eq!(parse(&buf[..n]), Ok(p));
});
