//! novate-wire: the wire protocol of novate.
//!
//! One schema, `schema/novate.xml` (FIX Simple Binary Encoding 1.0, little-endian), defines every
//! message. `build.rs` generates from it, with the generator in `codegen/`:
//!
//! - flyweight decoders (`ClearTradeDecoder::wrap(&[u8])`) that check the header, every length,
//!   every group count and every enum value once, then read fields in place without copying or
//!   allocating, and in-place encoders (`ClearTradeEncoder::wrap(&mut [u8])`);
//! - const asserts on every block layout;
//! - [`DISPATCH`], a table indexed by template id, behind [`decode_message`];
//! - the TypeScript codecs in `ts/src/wire/generated.ts` (written by the `gen-ts` binary).
//!
//! [`convert`] maps messages to and from `novate_core::Command` / `Event`; [`frame`] is SOFH
//! framing for streams and a sequenced packet header for datagrams; [`fix`] parses FIX 4.4
//! tag=value into the same commands.
//!
//! # Versions
//!
//! A decoder reads every version up to [`SCHEMA_VERSION`]: fields added later (`sinceVersion`)
//! read as `None` from an older sender, and a longer block than expected is skipped using the
//! header's `blockLength`. A message of a *newer* version than the engine knows is refused with
//! [`DecodeError::UnsupportedVersion`] rather than read as an older one: the engine is upgraded
//! before its members, and a clearing house must not half-understand an instruction about money.
//!
//! # Template ids
//!
//! | ids | what |
//! |---|---|
//! | 1..=8 | commands, in the order of `Command::kind()` |
//! | 9 | `ClearTradeBatch`: up to [`GROUP_ENTRIES_MAX`] trades, each with its own `requestId` |
//! | 101..=111 | events, in the order of `novate_core::Event`, each with the `seq` that produced it |
//! | 201, 202 | answers: `Ack{requestId, seq, timestampNs (v1)}`, `Reject{requestId, code}` |
//!
//! `RejectCode` numbers 1..=999 equal `novate_core::Reject::code()`; 1000.. are wire-level
//! (the message did not decode, unknown template, unsupported schema).
//!
//! # Bad input
//!
//! Any byte string given to a decoder yields a message or a typed [`DecodeError`] (short
//! buffer, bad block length, bad group entry length, group count over [`GROUP_ENTRIES_MAX`],
//! unknown template, unsupported schema or version, bad enum value); framing errors are
//! [`frame::FrameError`], FIX errors [`fix::FixError`]. Nothing panics, indexes out of range or
//! allocates: `tests/bad_input.rs` and `tests/no_alloc.rs` check it, and the cargo-fuzz targets in
//! `fuzz/` (run by CI, `fuzz/run.sh`) search for counterexamples.
//!
//! # Conformance
//!
//! `tests/golden/*.bin` (with readable listings `*.txt`) hold one message of every template.
//! The Rust codecs (`tests/golden.rs`) and the TypeScript codecs (`__test__/wire.test.ts`) must
//! both decode them to the listed values and re-encode them byte for byte.

pub mod convert;
pub mod fix;
pub mod frame;
pub mod query;
pub mod rt;

/// The codecs generated from `schema/novate.xml`.
#[allow(clippy::all, missing_docs, dead_code)]
pub mod generated {
    use crate::rt::{DecodeError, EncodeError, MessageHeader};
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}

pub use generated::*;
pub use rt::{DecodeError, EncodeError, MessageHeader, GROUP_HEADER_LEN, HEADER_LEN};

/// The generated TypeScript codecs (what `gen-ts` writes to `ts/src/wire/generated.ts`).
pub const GENERATED_TS: &str = include_str!(concat!(env!("OUT_DIR"), "/generated.ts"));

/// Decode any message of the schema at the start of `buf` through the dispatch table.
/// Bytes after the message are ignored (see [`frame`] for exact-length framing).
#[inline]
pub fn decode_message(buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    let header = MessageHeader::read(buf)?;
    header.check_schema()?;
    match DISPATCH.get(usize::from(header.template_id)).copied().flatten() {
        Some(decode) => decode(buf, header),
        None => Err(DecodeError::UnknownTemplate(header.template_id)),
    }
}

/// Like [`decode_message`], but the message must fill `buf` exactly.
#[inline]
pub fn decode_exact(buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    let m = decode_message(buf)?;
    if m.encoded_len() != buf.len() {
        return Err(DecodeError::BadLength { declared: buf.len(), actual: m.encoded_len() });
    }
    Ok(m)
}
