//! Framing: SOFH for streams, a sequenced packet header for datagrams.
//!
//! # Stream format (Simple Open Framing Header 1.0)
//!
//! ```text
//!  0               4        6                        message_length
//!  +---------------+--------+------------------------------+
//!  | message_length| 0x5BE0 | SBE message (header + body)  |
//!  | u32 BE, incl. | u16 BE |  little-endian               |
//!  | these 6 bytes |        |                              |
//!  +---------------+--------+------------------------------+
//! ```
//!
//! # Datagram format
//!
//! ```text
//!  0          4            6          8                16
//!  +----------+------------+----------+-----------------+----------+----------+--
//!  | stream_id| frame_count| reserved | seq             | SOFH     | SOFH     |..
//!  | u32 LE   | u16 LE     | u16 = 0  | u64 LE          | frame 1  | frame 2  |
//!  +----------+------------+----------+-----------------+----------+----------+--
//! ```
//!
//! `seq` numbers the packets of a stream 1, 2, 3, ...; a receiver feeds each to a
//! [`GapDetector`] and learns which packets it missed. The frames must fill the packet exactly.
//!
//! # Invariants
//!
//! Nothing here allocates after construction ([`StreamDecoder::new`] allocates its buffer once),
//! and nothing panics on any input: every length is checked before it is used.

use crate::rt::{DecodeError, EncodeError};

/// Bytes of the SOFH header.
pub const SOFH_LEN: usize = 6;
/// SOFH encoding type of SBE 1.0 little-endian.
pub const SBE_LE_ENCODING: u16 = 0x5BE0;
/// Longest frame accepted, header included. The longest message of the schema (a full
/// `ClearTradeBatch`: 8 + 4 + 256 * 56 = 14_348 bytes) fits with room to grow; a bound this low
/// stops a corrupt length from making a receiver wait for gigabytes.
pub const FRAME_LEN_MAX: usize = 64 * 1024;
/// Bytes of the datagram packet header.
pub const PACKET_HEADER_LEN: usize = 16;
/// Largest datagram we send: an Ethernet MTU of 1500 less 20 bytes of IPv4 and 8 of UDP, so a
/// packet is never fragmented.
pub const PACKET_LEN_MAX: usize = 1472;

const _: () = assert!(
    SOFH_LEN
        + crate::HEADER_LEN
        + crate::GROUP_HEADER_LEN
        + crate::GROUP_ENTRIES_MAX * crate::ClearTradeBatchTradesDecoder::BLOCK_LENGTH
        <= FRAME_LEN_MAX
);
const _: () = assert!(FRAME_LEN_MAX <= u32::MAX as usize);
const _: () = assert!(
    PACKET_HEADER_LEN + SOFH_LEN + crate::HEADER_LEN + crate::ClearTradeDecoder::BLOCK_LENGTH
        <= PACKET_LEN_MAX
);

/// Why bytes are not a valid frame or packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// A SOFH length below the 6-byte header itself.
    LengthTooShort(usize),
    /// A SOFH length above `FRAME_LEN_MAX`.
    LengthTooLong(usize),
    /// An encoding type other than SBE 1.0 little-endian.
    BadEncoding(u16),
    /// The packet is shorter than its header, or its frames do not fill it exactly.
    BadPacket { len: usize, frames: usize },
    /// The packet's reserved field is not 0.
    BadReserved(u16),
    /// The stream was already broken by an earlier error (a stream cannot resynchronize).
    Broken(&'static str),
    /// The message inside a frame did not decode.
    Message(DecodeError),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::LengthTooShort(n) => {
                write!(f, "frame length {n} below the {SOFH_LEN}-byte header")
            }
            FrameError::LengthTooLong(n) => write!(f, "frame length {n} above {FRAME_LEN_MAX}"),
            FrameError::BadEncoding(e) => {
                write!(f, "encoding type {e:#06x}, expected {SBE_LE_ENCODING:#06x}")
            }
            FrameError::BadPacket { len, frames } => {
                write!(f, "packet of {len} bytes is not exactly {frames} frames")
            }
            FrameError::BadReserved(r) => write!(f, "packet reserved field {r} is not 0"),
            FrameError::Broken(why) => write!(f, "stream broken earlier: {why}"),
            FrameError::Message(e) => write!(f, "message: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<DecodeError> for FrameError {
    fn from(e: DecodeError) -> Self {
        FrameError::Message(e)
    }
}

/// The payload and total length of the frame at the start of `buf`: `Ok(None)` if more bytes are
/// needed, an error if the header is invalid (checked as soon as its 6 bytes are there).
#[inline]
pub fn parse_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, FrameError> {
    let Some(h) = buf.first_chunk::<SOFH_LEN>() else { return Ok(None) };
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let encoding = u16::from_be_bytes([h[4], h[5]]);
    if encoding != SBE_LE_ENCODING {
        return Err(FrameError::BadEncoding(encoding));
    }
    if len < SOFH_LEN {
        return Err(FrameError::LengthTooShort(len));
    }
    if len > FRAME_LEN_MAX {
        return Err(FrameError::LengthTooLong(len));
    }
    Ok(buf.get(SOFH_LEN..len).map(|payload| (payload, len)))
}

/// Write a frame: `encode` writes the message into the space after the header and returns its
/// length; the header is written after. Returns the frame's total length.
pub fn write_frame(
    buf: &mut [u8],
    encode: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<usize, EncodeError> {
    let len = buf.len();
    let body = buf.get_mut(SOFH_LEN..).ok_or(EncodeError::ShortBuffer { needed: SOFH_LEN, len })?;
    let n = SOFH_LEN + encode(body)?;
    if n > FRAME_LEN_MAX {
        return Err(EncodeError::ShortBuffer { needed: n, len: FRAME_LEN_MAX });
    }
    crate::rt::wr(buf, 0, (n as u32).to_be_bytes());
    crate::rt::wr(buf, 4, SBE_LE_ENCODING.to_be_bytes());
    Ok(n)
}

/// Decode the message of one complete frame; the frame length must match the message exactly.
pub fn decode_frame(frame_payload: &[u8]) -> Result<crate::Message<'_>, FrameError> {
    Ok(crate::decode_exact(frame_payload)?)
}

/// Incremental SOFH decoder for a byte stream: reads of any size in, whole frames out.
///
/// ```text
/// loop { let n = socket.read(dec.spare())?; dec.commit(n); while let Some(f) = dec.next_frame()? { .. } }
/// ```
#[derive(Debug)]
pub struct StreamDecoder {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    broken: Option<&'static str>,
}

impl StreamDecoder {
    /// A decoder with room for the largest frame (`FRAME_LEN_MAX`); the only allocation.
    pub fn new() -> Self {
        Self::with_capacity(FRAME_LEN_MAX)
    }

    /// `capacity` is raised to `FRAME_LEN_MAX` so any valid frame fits.
    pub fn with_capacity(capacity: usize) -> Self {
        StreamDecoder {
            buf: vec![0; capacity.max(FRAME_LEN_MAX)].into_boxed_slice(),
            start: 0,
            end: 0,
            broken: None,
        }
    }

    /// Free space to read into (moves unread bytes to the front first when that makes room).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    /// Mark `n` bytes of [`spare`](Self::spare) as filled (clamped to the space there is).
    pub fn commit(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.buf.len());
    }

    /// Copy as much of `bytes` in as fits; returns how many were taken.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let spare = self.spare();
        let n = bytes.len().min(spare.len());
        if let (Some(d), Some(s)) = (spare.get_mut(..n), bytes.get(..n)) {
            d.copy_from_slice(s);
        }
        self.commit(n);
        n
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next complete frame's payload (the SBE message), `Ok(None)` if more bytes are needed.
    /// After an error the stream is broken and every later call fails.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if let Some(why) = self.broken {
            return Err(FrameError::Broken(why));
        }
        let avail = self.buf.get(self.start..self.end).unwrap_or_default();
        match parse_frame(avail) {
            Ok(Some((_, len))) => {
                let s = self.start;
                self.start += len;
                Ok(self.buf.get(s + SOFH_LEN..s + len))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.broken = Some(match e {
                    FrameError::BadEncoding(_) => "bad encoding type",
                    FrameError::LengthTooLong(_) => "frame too long",
                    _ => "bad frame length",
                });
                Err(e)
            }
        }
    }
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// The datagram packet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PacketHeader {
    pub stream_id: u32,
    pub frame_count: u16,
    pub seq: u64,
}

/// A packet whose header and frames were checked; iterate its frames' payloads.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    pub header: PacketHeader,
    frames: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Check the header, and that exactly `frame_count` valid frames fill the rest.
    pub fn parse(buf: &'a [u8]) -> Result<Self, FrameError> {
        let h = buf
            .first_chunk::<PACKET_HEADER_LEN>()
            .ok_or(FrameError::BadPacket { len: buf.len(), frames: 0 })?;
        let header = PacketHeader {
            stream_id: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
            frame_count: u16::from_le_bytes([h[4], h[5]]),
            seq: u64::from_le_bytes(crate::rt::rd(h, 8)),
        };
        let reserved = u16::from_le_bytes([h[6], h[7]]);
        if reserved != 0 {
            return Err(FrameError::BadReserved(reserved));
        }
        let frames = buf.get(PACKET_HEADER_LEN..).unwrap_or_default();
        let bad = FrameError::BadPacket { len: buf.len(), frames: usize::from(header.frame_count) };
        let mut rest = frames;
        for _ in 0..header.frame_count {
            let (_, len) = parse_frame(rest)?.ok_or(bad)?;
            rest = rest.get(len..).unwrap_or_default();
        }
        if !rest.is_empty() {
            return Err(bad);
        }
        Ok(Packet { header, frames })
    }

    /// The SBE message of each frame, in order.
    pub fn frames(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = self.frames;
        std::iter::from_fn(move || {
            // parse() checked every frame; a failure here cannot happen and just ends iteration.
            let (payload, len) = parse_frame(rest).ok()??;
            rest = rest.get(len..).unwrap_or_default();
            Some(payload)
        })
    }
}

/// Builds one datagram: header first, then frames while they fit.
#[derive(Debug)]
pub struct PacketWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    frames: u16,
}

impl<'a> PacketWriter<'a> {
    /// Start packet `seq` of `stream_id` in `buf` (at most `PACKET_LEN_MAX` bytes of it are used).
    pub fn new(buf: &'a mut [u8], stream_id: u32, seq: u64) -> Result<Self, EncodeError> {
        let len = buf.len();
        let cap = len.min(PACKET_LEN_MAX);
        let buf = buf.get_mut(..cap).ok_or(EncodeError::ShortBuffer { needed: cap, len })?;
        if cap < PACKET_HEADER_LEN {
            return Err(EncodeError::ShortBuffer { needed: PACKET_HEADER_LEN, len });
        }
        crate::rt::wr(buf, 0, stream_id.to_le_bytes());
        crate::rt::wr(buf, 4, 0u16.to_le_bytes());
        crate::rt::wr(buf, 6, 0u16.to_le_bytes());
        crate::rt::wr(buf, 8, seq.to_le_bytes());
        Ok(PacketWriter { buf, len: PACKET_HEADER_LEN, frames: 0 })
    }

    /// Append one frame; `ShortBuffer` if it does not fit (the packet is unchanged then).
    pub fn push(
        &mut self,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
    ) -> Result<(), EncodeError> {
        let rest = self.buf.get_mut(self.len..).unwrap_or_default();
        let n = write_frame(rest, encode)?;
        self.len += n;
        self.frames += 1;
        crate::rt::wr(self.buf, 4, self.frames.to_le_bytes());
        Ok(())
    }

    /// The finished packet's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no frame was pushed.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }
}

/// What a packet's sequence number says about the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeqStatus {
    /// The packet expected next.
    InOrder,
    /// Packets `from..=to` were missed; this one is `to + 1`.
    Gap { from: u64, to: u64 },
    /// A packet at or before one already seen (duplicate or reordered late): drop it.
    Stale,
}

/// Tracks the next expected packet sequence number of one stream.
#[derive(Clone, Copy, Debug, Default)]
pub struct GapDetector {
    next: Expect,
}

/// What a [`GapDetector`] expects next.
#[derive(Clone, Copy, Debug, Default)]
enum Expect {
    /// No packet seen yet: the first one sets the stream's start.
    #[default]
    Any,
    Seq(u64),
    /// Packet u64::MAX was seen: nothing can follow it, every later packet is stale.
    Ended,
}

impl GapDetector {
    /// Expect the stream to start at `first` (usually 1).
    pub fn starting_at(first: u64) -> Self {
        GapDetector { next: Expect::Seq(first) }
    }

    /// Classify packet `seq` and advance.
    pub fn observe(&mut self, seq: u64) -> SeqStatus {
        let status = match self.next {
            Expect::Ended => return SeqStatus::Stale,
            Expect::Any => SeqStatus::InOrder,
            Expect::Seq(n) if seq == n => SeqStatus::InOrder,
            Expect::Seq(n) if seq > n => SeqStatus::Gap { from: n, to: seq - 1 },
            Expect::Seq(_) => return SeqStatus::Stale,
        };
        self.next = seq.checked_add(1).map_or(Expect::Ended, Expect::Seq);
        status
    }
}
