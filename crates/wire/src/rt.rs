//! The small runtime the generated codecs stand on: the message header, typed errors, and byte
//! helpers that never panic (out-of-range reads return an error or zeroes, never index).

use crate::generated::{SCHEMA_ID, SCHEMA_VERSION};

/// Bytes of the SBE message header (`blockLength, templateId, schemaId, version`: u16 LE each).
pub const HEADER_LEN: usize = 8;
/// Bytes of `groupSizeEncoding` (`blockLength: u16, numInGroup: u16`).
pub const GROUP_HEADER_LEN: usize = 4;

/// Why bytes did not decode. Every decoder returns one of these for bad input; none panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The buffer ends before `needed` bytes.
    ShortBuffer { needed: usize, len: usize },
    /// The header's block length is shorter than the acting version's fields.
    BadBlockLength { template_id: u16, block_length: usize, min: usize },
    /// A group's entry length is shorter than its fields (or 0).
    BadGroupBlockLength { group: &'static str, block_length: usize, min: usize },
    /// A group declares more entries than `GROUP_ENTRIES_MAX`.
    GroupCountOverLimit { group: &'static str, count: usize, max: usize },
    /// No message of the schema has this template id.
    UnknownTemplate(u16),
    /// A typed decoder was given another message.
    WrongTemplate { expected: u16, found: u16 },
    /// The header names another schema.
    UnsupportedSchema(u16),
    /// The header's version is newer than `SCHEMA_VERSION` (see the crate docs for why newer
    /// messages are refused rather than read as older ones).
    UnsupportedVersion(u16),
    /// A field holds a number that is not a value of its enum.
    BadEnumValue { field: &'static str, value: u64 },
    /// A frame's length disagrees with the message inside it.
    BadLength { declared: usize, actual: usize },
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::ShortBuffer { needed, len } => {
                write!(f, "short buffer: {len} bytes, need {needed}")
            }
            DecodeError::BadBlockLength { template_id, block_length, min } => {
                write!(f, "template {template_id}: block length {block_length} below {min}")
            }
            DecodeError::BadGroupBlockLength { group, block_length, min } => {
                write!(f, "group {group}: entry length {block_length} below {min}")
            }
            DecodeError::GroupCountOverLimit { group, count, max } => {
                write!(f, "group {group}: {count} entries, max {max}")
            }
            DecodeError::UnknownTemplate(t) => write!(f, "unknown template id {t}"),
            DecodeError::WrongTemplate { expected, found } => {
                write!(f, "template id {found}, expected {expected}")
            }
            DecodeError::UnsupportedSchema(s) => write!(f, "schema id {s}, expected {SCHEMA_ID}"),
            DecodeError::UnsupportedVersion(v) => {
                write!(f, "schema version {v} is newer than {SCHEMA_VERSION}")
            }
            DecodeError::BadEnumValue { field, value } => {
                write!(f, "field {field}: {value} is not a valid value")
            }
            DecodeError::BadLength { declared, actual } => {
                write!(f, "length {declared} declared, {actual} found")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The output buffer is shorter than the message.
    ShortBuffer { needed: usize, len: usize },
    /// More entries than `GROUP_ENTRIES_MAX`.
    GroupCountOverLimit { group: &'static str, count: usize, max: usize },
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::ShortBuffer { needed, len } => {
                write!(f, "output buffer of {len} bytes, need {needed}")
            }
            EncodeError::GroupCountOverLimit { group, count, max } => {
                write!(f, "group {group}: {count} entries, max {max}")
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// The SBE message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageHeader {
    pub block_length: u16,
    pub template_id: u16,
    pub schema_id: u16,
    pub version: u16,
}

impl MessageHeader {
    /// A header of this schema at its current version.
    #[inline]
    pub const fn current(block_length: u16, template_id: u16) -> Self {
        MessageHeader { block_length, template_id, schema_id: SCHEMA_ID, version: SCHEMA_VERSION }
    }

    /// Read the header at the start of `buf`.
    #[inline]
    pub fn read(buf: &[u8]) -> Result<Self, DecodeError> {
        let h = buf
            .first_chunk::<HEADER_LEN>()
            .ok_or(DecodeError::ShortBuffer { needed: HEADER_LEN, len: buf.len() })?;
        Ok(MessageHeader {
            block_length: u16::from_le_bytes([h[0], h[1]]),
            template_id: u16::from_le_bytes([h[2], h[3]]),
            schema_id: u16::from_le_bytes([h[4], h[5]]),
            version: u16::from_le_bytes([h[6], h[7]]),
        })
    }

    /// Schema id must be ours, version at most ours.
    #[inline]
    pub fn check_schema(&self) -> Result<(), DecodeError> {
        if self.schema_id != SCHEMA_ID {
            return Err(DecodeError::UnsupportedSchema(self.schema_id));
        }
        if self.version > SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion(self.version));
        }
        Ok(())
    }

    /// Write at the start of `buf` (does nothing if `buf` is shorter than the header; encoders
    /// size their buffer first).
    #[inline]
    pub fn write(&self, buf: &mut [u8]) {
        wr(buf, 0, self.block_length.to_le_bytes());
        wr(buf, 2, self.template_id.to_le_bytes());
        wr(buf, 4, self.schema_id.to_le_bytes());
        wr(buf, 6, self.version.to_le_bytes());
    }
}

/// `W` bytes at `off`, or zeroes if out of range. Generated code only reads inside blocks whose
/// length it checked (and const-asserted), so the zero fallback is unreachable there; with a
/// fixed-size array and a constant offset it compiles to one load.
#[inline(always)]
pub fn rd<const W: usize>(b: &[u8], off: usize) -> [u8; W] {
    match b.get(off..).and_then(|s| s.first_chunk::<W>()) {
        Some(a) => *a,
        None => [0; W],
    }
}

/// Write `W` bytes at `off`; nothing if out of range (encoders size their buffer first).
#[inline(always)]
pub fn wr<const W: usize>(b: &mut [u8], off: usize, v: [u8; W]) {
    if let Some(d) = b.get_mut(off..).and_then(|s| s.first_chunk_mut::<W>()) {
        *d = v;
    }
}

/// `buf[off..off + len]` or `ShortBuffer`.
#[inline]
pub fn sub(buf: &[u8], off: usize, len: usize) -> Result<&[u8], DecodeError> {
    let end = off
        .checked_add(len)
        .ok_or(DecodeError::ShortBuffer { needed: usize::MAX, len: buf.len() })?;
    buf.get(off..end).ok_or(DecodeError::ShortBuffer { needed: end, len: buf.len() })
}

/// The first `N` bytes of `b` as an array, or `ShortBuffer`.
#[inline]
pub fn head<const N: usize>(b: &[u8]) -> Result<&[u8; N], DecodeError> {
    b.first_chunk::<N>().ok_or(DecodeError::ShortBuffer { needed: N, len: b.len() })
}

/// A repeating group checked once: its header, its count against the limit, its entry length
/// against the fields, and that every entry is inside the buffer.
#[derive(Clone, Copy, Debug)]
pub struct GroupView<'a> {
    entries: &'a [u8],
    block_length: usize,
    count: usize,
    end: usize,
}

impl<'a> GroupView<'a> {
    pub fn read(
        buf: &'a [u8],
        pos: usize,
        group: &'static str,
        min: usize,
    ) -> Result<Self, DecodeError> {
        let h = sub(buf, pos, GROUP_HEADER_LEN)?;
        let block_length = usize::from(u16::from_le_bytes([h[0], h[1]]));
        let count = usize::from(u16::from_le_bytes([h[2], h[3]]));
        if count > crate::GROUP_ENTRIES_MAX {
            return Err(DecodeError::GroupCountOverLimit {
                group,
                count,
                max: crate::GROUP_ENTRIES_MAX,
            });
        }
        if block_length < min.max(1) {
            return Err(DecodeError::BadGroupBlockLength { group, block_length, min: min.max(1) });
        }
        let start = pos + GROUP_HEADER_LEN;
        // count <= 256 and block_length <= 65535: the product cannot overflow.
        let entries = sub(buf, start, block_length * count)?;
        Ok(GroupView { entries, block_length, count, end: start + entries.len() })
    }

    #[inline]
    pub fn count(&self) -> usize {
        self.count
    }

    /// Offset just past the last entry.
    #[inline]
    pub fn end(&self) -> usize {
        self.end
    }

    /// Each entry's bytes (`block_length` >= 1 was checked in `read`).
    #[inline]
    pub fn entries(&self) -> std::slice::ChunksExact<'a, u8> {
        self.entries.chunks_exact(self.block_length.max(1))
    }
}

/// A field value in a listing (see the generated `visit` methods).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    Uint(u64),
    Int(i128),
    /// Name and number of an enum value.
    Enum(&'static str, u64),
    /// A field newer than the sender's version.
    Absent,
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Uint(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Enum(name, _) => write!(f, "{name}"),
            Value::Absent => write!(f, "absent"),
        }
    }
}
