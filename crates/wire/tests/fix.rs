//! FIX 4.4 tag=value: framing checks, the tag mapping, and agreement with the SBE path.

use novate_core::{Command, Side, Trade};
use novate_wire::convert::encode_command;
use novate_wire::decode_exact;
use novate_wire::fix::*;
use proptest::prelude::*;

/// Build a message from `|`-separated body fields, with a correct BodyLength and CheckSum.
fn msg(body: &str) -> Vec<u8> {
    let body = body.replace('|', "\x01");
    let mut m = format!("8=FIX.4.4\x019={}\x01{}", body.len(), body).into_bytes();
    let sum = m.iter().map(|&b| u32::from(b)).sum::<u32>() % 256;
    m.extend_from_slice(format!("10={sum:03}\x01").as_bytes());
    m
}

const AE: &str = "35=AE|49=VENUE|56=NOVATE|34=12|52=20260115-10:00:00|571=5001|17=900001|48=7|22=8|32=100|31=101.25|75=20260115|552=2|54=1|1=1001|54=2|1=1002|";
const TRADE: Trade = Trade {
    trade_id: 900_001,
    buy: 1001,
    sell: 1002,
    instrument: 7,
    qty: 100,
    price: 10_125_000_000,
    trade_date: 20260115,
};

#[test]
fn trade_capture_report_maps_to_clear_trade() {
    let got = parse(&msg(AE)).unwrap();
    assert_eq!(got, FixCommand { request_id: 5001, command: Command::ClearTrade(TRADE) });
}

#[test]
fn sides_in_either_order_and_parties_with_role_24() {
    let ae = "35=AE|571=5001|17=900001|55=7|32=100|31=101.25|75=20260115|552=2|54=2|453=2|448=FIRM9|452=1|448=1002|452=24|54=1|453=1|448=1001|452=24|";
    assert_eq!(parse(&msg(ae)).unwrap().command, Command::ClearTrade(TRADE));
}

#[test]
fn new_order_single_maps_to_check_order() {
    let d = "35=D|11=77|1=1001|55=IGNORED|48=7|54=2|38=25|40=2|44=0.5|";
    let got = parse(&msg(d)).unwrap();
    assert_eq!(
        got,
        FixCommand {
            request_id: 77,
            command: Command::CheckOrder {
                account: 1001,
                instrument: 7,
                side: Side::Sell,
                qty: 25,
                price: 50_000_000
            }
        }
    );
}

#[test]
fn fix_and_sbe_produce_the_same_commands() {
    let mut buf = [0u8; 512];
    let n = write_trade_capture_report(&mut buf, 5001, &TRADE).unwrap();
    let via_fix = parse(&buf[..n]).unwrap();
    let mut sbe = [0u8; 64];
    let m = encode_command(&mut sbe, 5001, &Command::ClearTrade(TRADE)).unwrap();
    assert_eq!(
        decode_exact(&sbe[..m]).unwrap().command(),
        Some((via_fix.request_id, via_fix.command))
    );

    let order = Command::CheckOrder {
        account: 3,
        instrument: 4,
        side: Side::Buy,
        qty: 5,
        price: 123_456_789,
    };
    let n = write_new_order_single(&mut buf, 9, &order).unwrap();
    assert_eq!(parse(&buf[..n]).unwrap(), FixCommand { request_id: 9, command: order });
}

#[test]
fn body_length_and_checksum_are_checked() {
    let good = msg(AE);
    // Wrong BodyLength.
    let s = String::from_utf8(good.clone()).unwrap();
    let len: usize = s.split('\x01').nth(1).unwrap()[2..].parse().unwrap();
    let wrong = s.replacen(&format!("9={len}"), &format!("9={}", len + 1), 1);
    assert_eq!(
        parse(wrong.as_bytes()).unwrap_err(),
        FixError::BodyLengthMismatch { declared: len + 1, actual: Some(len) }
    );
    // Wrong checksum.
    let mut bad = good.clone();
    let at = bad.len() - 2;
    bad[at] = if bad[at] == b'9' { b'0' } else { bad[at] + 1 };
    assert!(matches!(parse(&bad).unwrap_err(), FixError::BadChecksum { .. }));
    // A flipped byte in the body changes the sum.
    let mut flipped = good.clone();
    let i = flipped.iter().position(|&b| b == b'V').unwrap();
    flipped[i] = b'W';
    assert!(matches!(parse(&flipped).unwrap_err(), FixError::BadChecksum { .. }));
    // Truncation anywhere is an error, never a panic.
    for cut in 0..good.len() {
        assert!(parse(&good[..cut]).is_err(), "cut {cut}");
    }
    assert_eq!(parse(b"8=FIX.4.2\x019=5\x01").unwrap_err(), FixError::BadBeginString);
    assert_eq!(parse(b"8=FIX.4.4\x019=x\x01").unwrap_err(), FixError::BadBodyLength);
    let mut trailing = good.clone();
    trailing.push(b'x');
    assert!(parse(&trailing).is_err());
}

#[test]
fn missing_and_malformed_tags_are_named() {
    let cases: &[(&str, FixError)] = &[
        (
            "35=AE|17=1|48=7|32=1|31=1|75=20260115|552=2|54=1|1=1|54=2|1=2|",
            FixError::MissingTag(571),
        ),
        (
            "35=AE|571=1|48=7|32=1|31=1|75=20260115|552=2|54=1|1=1|54=2|1=2|",
            FixError::MissingTag(17),
        ),
        (
            "35=AE|571=1|17=1|32=1|31=1|75=20260115|552=2|54=1|1=1|54=2|1=2|",
            FixError::MissingTag(48),
        ),
        (
            "35=AE|571=1|17=1|48=7|31=1|75=20260115|552=2|54=1|1=1|54=2|1=2|",
            FixError::MissingTag(32),
        ),
        (
            "35=AE|571=1|17=1|48=7|32=1|75=20260115|552=2|54=1|1=1|54=2|1=2|",
            FixError::MissingTag(31),
        ),
        ("35=AE|571=1|17=1|48=7|32=1|31=1|552=2|54=1|1=1|54=2|1=2|", FixError::MissingTag(75)),
        ("35=AE|571=1|17=1|48=7|32=1|31=1|75=20260115|", FixError::MissingTag(552)),
        ("35=AE|571=1|17=1|48=7|32=1|31=1|75=20260115|552=2|54=1|1=1|", FixError::MissingTag(54)),
        (
            "35=AE|571=1|17=1|48=7|32=1|31=1|75=20260115|552=2|54=1|54=2|1=2|",
            FixError::MissingTag(1),
        ),
        (
            "35=AE|571=1|17=1|48=7|32=1|31=1|75=20260115|552=3|54=1|1=1|54=2|1=2|",
            FixError::UnsupportedValue { tag: 552 },
        ),
        (
            "35=AE|571=1|17=1|48=7|32=1|31=1|75=20260115|552=2|54=1|1=1|54=1|1=2|",
            FixError::UnsupportedValue { tag: 54 },
        ),
        (
            "35=AE|571=x|17=1|48=7|32=1|31=1|75=20260115|552=2|54=1|1=1|54=2|1=2|",
            FixError::MalformedValue { tag: 571 },
        ),
        (
            "35=AE|571=1|17=1|48=7|32=1.5|31=1|75=20260115|552=2|54=1|1=1|54=2|1=2|",
            FixError::MalformedValue { tag: 32 },
        ),
        (
            "35=AE|571=1|17=1|48=7|32=1|31=1.123456789|75=20260115|552=2|54=1|1=1|54=2|1=2|",
            FixError::MalformedValue { tag: 31 },
        ),
        (
            "35=AE|571=1|17=1|48=4294967296|32=1|31=1|75=20260115|552=2|54=1|1=1|54=2|1=2|",
            FixError::MalformedValue { tag: 48 },
        ),
        (
            "35=AE|571=1|17=1|48=7|32=1|31=1|75=2026011|552=2|54=1|1=1|54=2|1=2|",
            FixError::MalformedValue { tag: 75 },
        ),
        (
            "35=AE|571=1|571=2|17=1|48=7|32=1|31=1|75=20260115|552=2|54=1|1=1|54=2|1=2|",
            FixError::DuplicateTag(571),
        ),
        ("35=D|11=1|48=7|54=1|38=1|44=1|", FixError::MissingTag(1)),
        ("35=D|11=1|1=1|48=7|54=7|38=1|44=1|", FixError::UnsupportedValue { tag: 54 }),
        ("35=D|11=1|1=1|48=7|54=1|38=1|40=1|44=1|", FixError::UnsupportedValue { tag: 40 }),
        ("35=D|11=1|1=1|48=7|54=1|38=1|", FixError::MissingTag(44)),
        ("35=8|11=1|", FixError::UnsupportedMsgType),
        ("11=1|35=D|", FixError::MsgTypeNotFirst),
    ];
    for (body, want) in cases {
        assert_eq!(parse(&msg(body)).unwrap_err(), *want, "{body}");
    }
    // A field without '=' or with an empty value or a non-numeric tag.
    for body in ["35=D|11|", "35=D|11=|", "35=D|x1=3|", "35=D|=3|"] {
        assert!(
            matches!(parse(&msg(body)).unwrap_err(), FixError::MalformedField { .. }),
            "{body}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&bytes);
    }

    /// Corrupting one byte of a valid message is caught (by the checksum or the structure).
    #[test]
    fn one_corrupt_byte_is_detected(i in 0usize..1000, x in 1u8..=255) {
        let mut m = msg(AE);
        let i = i % m.len();
        m[i] ^= x;
        prop_assert!(parse(&m).is_err() || parse(&m).unwrap() != parse(&msg(AE)).unwrap());
    }

    #[test]
    fn writer_and_parser_agree(r in any::<u64>(), id in any::<u64>(), buy in any::<u64>(), sell in any::<u64>(), inst in any::<u32>(), qty in 0i64..=i64::MAX, price in any::<i64>(), date in 0u32..=99_999_999) {
        let t = Trade { trade_id: id, buy, sell, instrument: inst, qty, price, trade_date: date };
        let mut buf = [0u8; 512];
        let n = write_trade_capture_report(&mut buf, r, &t).unwrap();
        prop_assert_eq!(parse(&buf[..n]).unwrap(), FixCommand { request_id: r, command: Command::ClearTrade(t) });
    }
}
