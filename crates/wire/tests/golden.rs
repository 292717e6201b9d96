//! Golden byte fixtures: every message of the schema, encoded from core values, must match
//! `tests/golden/<name>.bin` byte for byte and its listing `<name>.txt` line for line. The
//! TypeScript codecs check the same files (`__test__/wire.test.ts`).
//!
//! To regenerate after a deliberate schema change: `NOVATE_UPDATE_GOLDEN=1 cargo test -p novate-wire --test golden`
//! (and say why in the commit: released bytes never change).

use novate_core::{
    AccountSpec, AccountView, Command, Event, InstrumentSpec, InstrumentView, PositionView, Side,
    Totals, Trade,
};
use novate_wire::convert::*;
use novate_wire::query::{encode_report, encode_request, Report, Request};
use novate_wire::*;
use std::path::PathBuf;

const TRADE: Trade = Trade {
    trade_id: 900_001,
    buy: 1001,
    sell: 1002,
    instrument: 7,
    qty: 100,
    price: 10_125_000_000,
    trade_date: 20260115,
};

enum Case {
    Command(u64, Command),
    Batch(Vec<(u64, Trade)>),
    Event(u64, Event),
    Ack(u64, u64, u64),
    Reject(u64, RejectCode),
    Req(Request),
    Rep(Report),
    /// Hand-made bytes of an older version: decode-only.
    Raw(Vec<u8>),
}

fn cases() -> Vec<(&'static str, Case)> {
    use Case::*;
    let big = 123_456_789_012_345_678_901_234i128;
    vec![
        (
            "upsert_instrument",
            Command(
                1,
                novate_core::Command::UpsertInstrument(InstrumentSpec {
                    id: 7,
                    multiplier: 50,
                    margin_bps: 1500,
                    settle_days: 2,
                }),
            ),
        ),
        (
            "upsert_account",
            Command(
                2,
                novate_core::Command::UpsertAccount(AccountSpec {
                    id: 1001,
                    max_position: 10_000,
                    max_notional: 100_000_000_000_000_000_000,
                    max_loss: 500_000_000_000_000_000,
                    suspended: true,
                }),
            ),
        ),
        (
            "adjust_collateral",
            Command(3, novate_core::Command::AdjustCollateral { account: 1001, amount: -big }),
        ),
        (
            "check_order",
            Command(
                4,
                novate_core::Command::CheckOrder {
                    account: 1001,
                    instrument: 7,
                    side: Side::Sell,
                    qty: 25,
                    price: 10_125_000_000,
                },
            ),
        ),
        ("clear_trade", Command(5, novate_core::Command::ClearTrade(TRADE))),
        ("bust_trade", Command(6, novate_core::Command::BustTrade { trade_id: 900_001 })),
        (
            "mark_price",
            Command(7, novate_core::Command::MarkPrice { instrument: 7, price: 10_200_000_000 }),
        ),
        (
            "settlement_price",
            Command(8, novate_core::Command::SettlementPrice { instrument: 7, price: -50_000_000 }),
        ),
        (
            "clear_trade_batch",
            Batch(vec![
                (10, TRADE),
                (11, Trade { trade_id: 900_002, buy: 1002, sell: 1003, qty: 1, price: 1, ..TRADE }),
                (
                    12,
                    Trade {
                        trade_id: u64::MAX,
                        buy: u64::MAX,
                        sell: 1,
                        instrument: u32::MAX,
                        qty: i64::MAX,
                        price: i64::MIN,
                        trade_date: 99991231,
                    },
                ),
            ]),
        ),
        ("instrument_updated", Event(77, novate_core::Event::InstrumentUpdated { instrument: 7 })),
        ("account_updated", Event(78, novate_core::Event::AccountUpdated { account: 1001 })),
        (
            "collateral_changed",
            Event(
                79,
                novate_core::Event::CollateralChanged {
                    account: 1001,
                    amount: big,
                    balance: i128::MAX,
                },
            ),
        ),
        (
            "order_accepted",
            Event(80, novate_core::Event::OrderAccepted { account: 1001, instrument: 7 }),
        ),
        ("trade_cleared", Event(81, novate_core::Event::TradeCleared { trade_id: 900_001 })),
        ("trade_busted", Event(82, novate_core::Event::TradeBusted { trade_id: 900_001 })),
        (
            "position_changed",
            Event(
                83,
                novate_core::Event::PositionChanged {
                    account: 1001,
                    instrument: 7,
                    qty: -100,
                    cost: -50_625_000_000_000,
                    realized: i128::MIN,
                },
            ),
        ),
        (
            "mark_changed",
            Event(84, novate_core::Event::MarkChanged { instrument: 7, price: 10_200_000_000 }),
        ),
        (
            "variation_margin",
            Event(
                85,
                novate_core::Event::VariationMargin {
                    account: 1002,
                    instrument: 7,
                    amount: -375_000_000_000,
                },
            ),
        ),
        (
            "limit_breach",
            Event(
                86,
                novate_core::Event::LimitBreach {
                    account: 1001,
                    reason: novate_core::Reject::MaxNotional,
                },
            ),
        ),
        ("margin_call", Event(87, novate_core::Event::MarginCall { account: 1001, shortfall: 1 })),
        ("ack", Ack(5, 81, 1_768_435_200_123_456_789)),
        ("reject", Reject(5, RejectCode::Duplicate)),
        ("reject_malformed", Reject(0, RejectCode::MalformedMessage)),
        ("query_position", Req(Request::Position { request_id: 20, account: 1001, instrument: 7 })),
        ("query_account", Req(Request::Account { request_id: 21, account: 1001 })),
        ("query_instrument", Req(Request::Instrument { request_id: 22, instrument: 7 })),
        ("query_state_hash", Req(Request::StateHash { request_id: 23 })),
        ("subscribe", Req(Request::Subscribe { request_id: 24, account: 1001, kinds: 0x40 })),
        ("unsubscribe", Req(Request::Unsubscribe { request_id: 25, subscription: 24 })),
        (
            "position_report",
            Rep(Report::Position {
                request_id: 20,
                view_seq: 88,
                position: Some(PositionView {
                    account: 1001,
                    instrument: 7,
                    qty: -100,
                    cost: -50_625_000_000_000,
                    realized: big,
                    unrealized: -1_000_000_000_000,
                    avg_price: Some(10_125_000_000),
                }),
            }),
        ),
        (
            "position_report_none",
            Rep(Report::Position { request_id: 26, view_seq: 88, position: None }),
        ),
        (
            "account_report",
            Rep(Report::Account {
                request_id: 21,
                view_seq: 88,
                account: AccountView {
                    spec: AccountSpec {
                        id: 1001,
                        max_position: 10_000,
                        max_notional: 100_000_000_000_000_000_000,
                        max_loss: 0,
                        suspended: false,
                    },
                    collateral: i128::MAX,
                    totals: Totals {
                        notional: 50_625_000_000_000,
                        unrealized: -1_000_000_000_000,
                        realized: big,
                        margin: 7_593_750_000_000,
                    },
                    equity: -big,
                    margin: 7_593_750_000_000,
                    excess: i128::MIN,
                    positions: 3,
                },
            }),
        ),
        (
            "instrument_report",
            Rep(Report::Instrument {
                request_id: 22,
                view_seq: 88,
                instrument: Some(InstrumentView {
                    spec: InstrumentSpec {
                        id: 7,
                        multiplier: 50,
                        margin_bps: 1500,
                        settle_days: 2,
                    },
                    mark: 10_200_000_000,
                    last_price: 10_125_000_000,
                    holders: 2,
                }),
            }),
        ),
        (
            "state_hash_report",
            Rep(Report::StateHash { request_id: 23, seq: 88, hash: u64::MAX - 1 }),
        ),
        (
            "subscription_status",
            Rep(Report::Subscription {
                subscription: 24,
                state: SubscriptionState::Events,
                events: 4096,
            }),
        ),
        // An Ack from a version-0 sender: 16-byte block, no timestampNs.
        (
            "ack_v0",
            Raw([16u16, 201, SCHEMA_ID, 0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .chain(5u64.to_le_bytes())
                .chain(81u64.to_le_bytes())
                .collect()),
        ),
    ]
}

fn encode(case: &Case) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = match case {
        Case::Command(r, c) => encode_command(&mut buf, *r, c),
        Case::Batch(t) => encode_clear_trade_batch(&mut buf, t),
        Case::Event(s, e) => encode_event(&mut buf, *s, e),
        Case::Ack(r, s, t) => encode_ack(&mut buf, *r, *s, *t),
        Case::Reject(r, c) => encode_reject(&mut buf, *r, *c),
        Case::Req(r) => encode_request(&mut buf, r),
        Case::Rep(r) => encode_report(&mut buf, r),
        Case::Raw(b) => return b.clone(),
    }
    .expect("encodes");
    buf.truncate(n);
    buf
}

/// The readable listing: machine-checked lines (`template`, `header`, `field`) and a hex dump.
fn listing(name: &str, bytes: &[u8], decode_only: bool) -> String {
    let m = decode_exact(bytes).expect("golden bytes decode");
    let h = MessageHeader::read(bytes).expect("header");
    let mut s = format!(
        "# {name}.bin: {} bytes{}\n",
        bytes.len(),
        if decode_only { " (decode-only: an older version)" } else { "" }
    );
    s += &format!("template {}\n", m.name());
    s += &format!(
        "header blockLength={} templateId={} schemaId={} version={}\n",
        h.block_length, h.template_id, h.schema_id, h.version
    );
    m.visit(&mut |group, field, value| match group {
        None => s += &format!("field {field}={value}\n"),
        Some((g, i)) => s += &format!("field {g}[{i}].{field}={value}\n"),
    });
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        s += &format!("hex {:04x}: {}\n", i * 16, hex.join(" "));
    }
    s
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn golden_fixtures_match_byte_for_byte() {
    let update = std::env::var_os("NOVATE_UPDATE_GOLDEN").is_some();
    let mut templates_seen = std::collections::BTreeSet::new();
    for (name, case) in cases() {
        let bytes = encode(&case);
        let text = listing(name, &bytes, matches!(case, Case::Raw(_)));
        let (bin_path, txt_path) =
            (dir().join(format!("{name}.bin")), dir().join(format!("{name}.txt")));
        if update {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&bin_path, &bytes).unwrap();
            std::fs::write(&txt_path, &text).unwrap();
        }
        let golden =
            std::fs::read(&bin_path).unwrap_or_else(|e| panic!("{}: {e}", bin_path.display()));
        assert_eq!(bytes, golden, "{name}: encoding differs from {}", bin_path.display());
        let golden_text = std::fs::read_to_string(&txt_path).unwrap();
        assert_eq!(text, golden_text, "{name}: listing differs");
        templates_seen.insert(decode_exact(&golden).unwrap().template_id());
    }
    assert_eq!(
        templates_seen.into_iter().collect::<Vec<_>>(),
        TEMPLATE_IDS.to_vec(),
        "a fixture for every template"
    );
}

#[test]
fn golden_fixtures_decode_to_the_values_they_were_made_from() {
    for (name, case) in cases() {
        let golden = std::fs::read(dir().join(format!("{name}.bin"))).unwrap();
        let m = decode_exact(&golden).unwrap();
        match case {
            Case::Command(r, c) => assert_eq!(m.command(), Some((r, c)), "{name}"),
            Case::Batch(t) => {
                let Message::ClearTradeBatch(d) = m else { panic!("{name}: {}", m.name()) };
                let got: Vec<_> = d.commands().collect();
                let want: Vec<_> = t.iter().map(|(r, t)| (*r, Command::ClearTrade(*t))).collect();
                assert_eq!(got, want);
            }
            Case::Event(s, e) => assert_eq!(m.event().unwrap(), Some((s, e)), "{name}"),
            Case::Ack(r, s, t) => {
                let Message::Ack(d) = m else { panic!() };
                assert_eq!((d.request_id(), d.seq(), d.timestamp_ns()), (r, s, Some(t)));
            }
            Case::Reject(r, c) => {
                let Message::Reject(d) = m else { panic!() };
                assert_eq!((d.request_id(), d.code()), (r, c));
            }
            Case::Req(r) => assert_eq!(m.request(), Some(r), "{name}"),
            Case::Rep(r) => assert_eq!(m.report(), Some(r), "{name}"),
            Case::Raw(_) => {
                let Message::Ack(d) = m else { panic!() };
                assert_eq!(d.acting_version(), 0);
                assert_eq!((d.request_id(), d.seq(), d.timestamp_ns()), (5, 81, None));
            }
        }
        let kinds = [
            m.command().is_some(),
            m.event().unwrap().is_some(),
            m.request().is_some(),
            m.report().is_some(),
        ];
        assert!(kinds.iter().filter(|k| **k).count() <= 1, "{name}: one kind of message");
    }
}

#[test]
fn money_is_the_little_endian_bytes_of_an_i128() {
    let bytes = std::fs::read(dir().join("adjust_collateral.bin")).unwrap();
    let amount = -123_456_789_012_345_678_901_234i128;
    assert_eq!(&bytes[8 + 16..8 + 32], &amount.to_le_bytes());
}
