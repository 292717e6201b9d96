//! Bad input: every decoder returns a typed error for malformed bytes and never panics.

use novate_core::{Command, Trade};
use novate_wire::convert::*;
use novate_wire::*;
use proptest::prelude::*;

const TRADE: Trade =
    Trade { trade_id: 9, buy: 1, sell: 2, instrument: 3, qty: 4, price: 5, trade_date: 20260102 };

fn clear_trade() -> Vec<u8> {
    let mut buf = vec![0u8; 128];
    let n = encode_command(&mut buf, 42, &Command::ClearTrade(TRADE)).unwrap();
    buf.truncate(n);
    buf
}

fn set_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn short_buffer_at_every_cut_is_typed() {
    let full = clear_trade();
    for cut in 0..full.len() {
        let err = decode_message(&full[..cut]).unwrap_err();
        assert!(matches!(err, DecodeError::ShortBuffer { .. }), "cut {cut}: {err:?}");
        assert!(ClearTradeDecoder::wrap(&full[..cut]).is_err());
    }
    assert!(decode_exact(&full).is_ok());
}

#[test]
fn trailing_bytes_are_refused_by_decode_exact_only() {
    let mut b = clear_trade();
    b.push(0);
    assert!(decode_message(&b).is_ok());
    assert_eq!(decode_exact(&b).unwrap_err(), DecodeError::BadLength { declared: 65, actual: 64 });
}

#[test]
fn unknown_template_ids_are_refused_through_the_table() {
    let mut b = clear_trade();
    for id in [0u16, 10, 100, 112, 200, 203, TEMPLATE_ID_MAX + 1, u16::MAX] {
        set_u16(&mut b, 2, id);
        assert_eq!(decode_message(&b).unwrap_err(), DecodeError::UnknownTemplate(id));
    }
}

#[test]
fn wrong_template_for_a_typed_decoder() {
    let b = clear_trade();
    assert_eq!(
        BustTradeDecoder::wrap(&b).unwrap_err(),
        DecodeError::WrongTemplate { expected: 6, found: 5 }
    );
}

#[test]
fn other_schema_and_newer_version_are_refused() {
    let mut b = clear_trade();
    set_u16(&mut b, 4, SCHEMA_ID + 1);
    assert_eq!(decode_message(&b).unwrap_err(), DecodeError::UnsupportedSchema(SCHEMA_ID + 1));
    let mut b = clear_trade();
    set_u16(&mut b, 6, SCHEMA_VERSION + 1);
    assert_eq!(
        decode_message(&b).unwrap_err(),
        DecodeError::UnsupportedVersion(SCHEMA_VERSION + 1)
    );
    assert_eq!(
        reject_code_of_decode_error(&DecodeError::UnsupportedVersion(9)),
        RejectCode::UnsupportedSchema
    );
}

#[test]
fn block_length_below_the_fields_is_refused_and_longer_is_skipped() {
    let mut b = clear_trade();
    set_u16(&mut b, 0, 55);
    assert_eq!(
        decode_message(&b).unwrap_err(),
        DecodeError::BadBlockLength { template_id: 5, block_length: 55, min: 56 }
    );
    // A longer block (padding from a sender we trust to be at most our version) is skipped.
    let mut b = clear_trade();
    set_u16(&mut b, 0, 60);
    b.extend_from_slice(&[0xee; 4]);
    let m = decode_exact(&b).unwrap();
    assert_eq!(m.command(), Some((42, Command::ClearTrade(TRADE))));
}

#[test]
fn ack_of_version_1_needs_its_timestamp_but_version_0_does_not() {
    let mut buf = [0u8; 64];
    let n = encode_ack(&mut buf, 1, 2, 3).unwrap();
    assert_eq!(n, 8 + 24);
    let mut b = buf[..n].to_vec();
    set_u16(&mut b, 0, 16); // version 1 with a version-0 block: too short
    assert_eq!(
        decode_message(&b).unwrap_err(),
        DecodeError::BadBlockLength { template_id: 201, block_length: 16, min: 24 }
    );
    set_u16(&mut b, 6, 0); // now a version-0 message
    let Message::Ack(d) = decode_message(&b).unwrap() else { panic!() };
    assert_eq!((d.seq(), d.timestamp_ns(), d.encoded_len()), (2, None, 24));
}

#[test]
fn bad_enum_values_are_typed() {
    let mut buf = [0u8; 64];
    let n = encode_command(
        &mut buf,
        1,
        &Command::CheckOrder {
            account: 1,
            instrument: 2,
            side: novate_core::Side::Buy,
            qty: 3,
            price: 4,
        },
    )
    .unwrap();
    let side_at = 8 + 36;
    for bad in [0u8, 3, 255] {
        let mut b = buf[..n].to_vec();
        b[side_at] = bad;
        assert_eq!(
            decode_message(&b).unwrap_err(),
            DecodeError::BadEnumValue { field: "side", value: u64::from(bad) }
        );
    }
    let n = encode_reject(&mut buf, 1, RejectCode::Margin).unwrap();
    let mut b = buf[..n].to_vec();
    set_u16(&mut b, 16, 27);
    assert_eq!(
        decode_message(&b).unwrap_err(),
        DecodeError::BadEnumValue { field: "code", value: 27 }
    );
    // A LimitBreach with a wire-level reason decodes as a message but is not a core event.
    let n = LimitBreachEncoder::wrap(&mut buf)
        .unwrap()
        .seq(1)
        .account_id(2)
        .reason(RejectCode::UnknownTemplate)
        .encoded_len();
    let m = decode_exact(&buf[..n]).unwrap();
    assert_eq!(m.event().unwrap_err(), DecodeError::BadEnumValue { field: "reason", value: 1001 });
}

#[test]
fn group_count_over_the_limit_and_short_groups_are_typed() {
    let trades: Vec<_> = (0..GROUP_ENTRIES_MAX as u64).map(|i| (i, TRADE)).collect();
    let mut buf = vec![0u8; 20_000];
    let n = encode_clear_trade_batch(&mut buf, &trades).unwrap();
    assert_eq!(n, 8 + 4 + 256 * 56);
    let Message::ClearTradeBatch(d) = decode_exact(&buf[..n]).unwrap() else { panic!() };
    assert_eq!(d.commands().len(), 256);

    let mut b = buf[..n].to_vec();
    set_u16(&mut b, 10, 257);
    assert_eq!(
        decode_message(&b).unwrap_err(),
        DecodeError::GroupCountOverLimit { group: "trades", count: 257, max: 256 }
    );
    set_u16(&mut b, 10, 256);
    set_u16(&mut b, 8, 55);
    assert_eq!(
        decode_message(&b).unwrap_err(),
        DecodeError::BadGroupBlockLength { group: "trades", block_length: 55, min: 56 }
    );
    set_u16(&mut b, 8, 56);
    assert!(matches!(decode_message(&b[..n - 1]).unwrap_err(), DecodeError::ShortBuffer { .. }));
    assert!(matches!(decode_message(&b[..11]).unwrap_err(), DecodeError::ShortBuffer { .. }));

    let too_many: Vec<_> = (0..257u64).map(|i| (i, TRADE)).collect();
    assert_eq!(
        encode_clear_trade_batch(&mut buf, &too_many).unwrap_err(),
        EncodeError::GroupCountOverLimit { group: "trades", count: 257, max: 256 }
    );
}

#[test]
fn encoders_refuse_short_buffers() {
    let mut buf = [0u8; 63];
    assert_eq!(
        encode_command(&mut buf, 1, &Command::ClearTrade(TRADE)).unwrap_err(),
        EncodeError::ShortBuffer { needed: 64, len: 63 }
    );
    assert!(encode_clear_trade_batch(&mut buf, &[(1, TRADE)]).is_err());
}

#[test]
fn reject_codes_equal_core_codes_by_number_and_name() {
    for r in novate_core::Reject::ALL {
        let c = reject_code(r);
        assert_eq!(c.raw(), r.code(), "{r:?}");
        assert_eq!(c.name(), r.name());
        assert_eq!(core_reject(c), Some(r));
    }
    let wire_level = [
        RejectCode::MalformedMessage,
        RejectCode::UnknownTemplate,
        RejectCode::UnsupportedSchema,
        RejectCode::SubscriptionCapacity,
    ];
    for c in wire_level {
        assert!(c.raw() >= 1000);
        assert_eq!(core_reject(c), None);
    }
    assert_eq!(RejectCode::ALL.len(), novate_core::Reject::ALL.len() + wire_level.len());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// Any bytes: a typed result, never a panic; what decodes re-encodes to a prefix of itself.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(m) = decode_message(&bytes) {
            prop_assert!(m.encoded_len() <= bytes.len());
            let _ = m.event();
            if let Some((r, c)) = m.command() {
                let mut out = [0u8; 128];
                let n = encode_command(&mut out, r, &c).unwrap();
                let again = decode_message(&out[..n]).unwrap();
                prop_assert_eq!(again.command(), Some((r, c)));
            }
        }
    }

    /// Valid headers with random bodies reach the body checks of every template.
    #[test]
    fn valid_headers_random_bodies(t in 0usize..TEMPLATE_IDS.len(), bl in 0u16..80, v in 0u16..3, body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut b = Vec::new();
        for x in [bl, TEMPLATE_IDS[t], SCHEMA_ID, v] { b.extend_from_slice(&x.to_le_bytes()); }
        b.extend_from_slice(&body);
        let _ = decode_message(&b).map(|m| m.visit(&mut |_, _, _| {}));
    }

    /// Round trip of every command through SBE.
    #[test]
    fn clear_trade_round_trips(r in any::<u64>(), id in any::<u64>(), buy in any::<u64>(), sell in any::<u64>(), inst in any::<u32>(), qty in any::<i64>(), price in any::<i64>(), date in any::<u32>()) {
        let c = Command::ClearTrade(Trade { trade_id: id, buy, sell, instrument: inst, qty, price, trade_date: date });
        let mut out = [0u8; 64];
        let n = encode_command(&mut out, r, &c).unwrap();
        prop_assert_eq!(decode_exact(&out[..n]).unwrap().command(), Some((r, c)));
    }
}
