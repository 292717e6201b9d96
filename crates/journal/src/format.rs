//! On-disk layout of journal segments: the segment header, the durable mark, record headers,
//! the seal, the checksum and the hash chain. See the crate docs (`# Format`) for the diagram.
//!
//! Every structure that reaches the disk is `repr(C)`, little-endian, and asserted at compile
//! time to have its documented size and no padding. They are encoded field by field with
//! `to_le_bytes` (no transmutes), so the layout does not depend on the host.

use novate_core::{Nanos, Seq};
use std::mem::{offset_of, size_of};

/// "NVJRNL" + format version 1 in the last two bytes, as a little-endian u64.
pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"NVJRNL\x00\x01");
/// Version of the segment format. Bumped (never reused) when the layout changes.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the first record: the segment header and the durable mark share page 0, so the
/// flusher's mark updates never touch a page the appender is writing records into.
pub const SEGMENT_DATA_OFFSET: usize = 4096;
/// Offset of the durable mark inside page 0.
pub const DURABLE_MARK_OFFSET: usize = 64;
/// Records start and end on this alignment, so every header is 8-byte aligned.
pub const RECORD_ALIGN: usize = 8;
/// Largest payload of one record. A command in SBE is under 128 bytes; 64 KiB leaves room for
/// batches without letting one record eat a segment.
pub const RECORD_PAYLOAD_MAX: usize = 64 * 1024;
/// `len` value of a seal: the end of a segment whose successor starts at the seal's `seq`.
pub const SEAL_LEN: u32 = u32::MAX;
/// Chain value before the first record of a journal (seq 1 or `Options::first_seq`).
pub const CHAIN_SEED: u64 = 0x6e6f_7661_7465_4a4c; // "novateJL"
/// Smallest segment: page 0, one largest record and a seal.
pub const SEGMENT_BYTES_MIN: u64 =
    (SEGMENT_DATA_OFFSET + RECORD_HEADER_BYTES * 2 + RECORD_PAYLOAD_MAX) as u64;
/// Largest segment: offsets inside a segment are kept in `usize` and mapped whole.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 32;

/// The first 64 bytes of every segment. Written once when the segment is created, never again.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// [`SEGMENT_MAGIC`].
    pub magic: u64,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Reserved, zero.
    pub flags: u32,
    /// Size of the pre-allocated file.
    pub segment_bytes: u64,
    /// Sequence number of the first record in this segment.
    pub first_seq: Seq,
    /// Chain value after the record `first_seq - 1` (the seed for a new journal).
    pub chain_in: u64,
    /// Wall-clock creation time (ns since the epoch), for operators only.
    pub created_ns: Nanos,
    /// Reserved, zero.
    pub reserved: [u8; 12],
    /// CRC32C of bytes 0..60.
    pub crc: u32,
}

/// Bytes of [`SegmentHeader`].
pub const SEGMENT_HEADER_BYTES: usize = 64;
const _: () = {
    assert!(size_of::<SegmentHeader>() == SEGMENT_HEADER_BYTES);
    // No padding: the fields add up to the size.
    assert!(8 + 4 + 4 + 8 + 8 + 8 + 8 + 12 + 4 == SEGMENT_HEADER_BYTES);
    assert!(offset_of!(SegmentHeader, segment_bytes) == 16);
    assert!(offset_of!(SegmentHeader, first_seq) == 24);
    assert!(offset_of!(SegmentHeader, chain_in) == 32);
    assert!(offset_of!(SegmentHeader, created_ns) == 40);
    assert!(offset_of!(SegmentHeader, reserved) == 48);
    assert!(offset_of!(SegmentHeader, crc) == 60);
    assert!(DURABLE_MARK_OFFSET >= SEGMENT_HEADER_BYTES);
    assert!(DURABLE_MARK_OFFSET + DURABLE_MARK_BYTES <= SEGMENT_DATA_OFFSET);
    assert!(SEGMENT_DATA_OFFSET.is_multiple_of(RECORD_ALIGN));
};

impl SegmentHeader {
    pub fn new(
        segment_bytes: u64,
        first_seq: Seq,
        chain_in: u64,
        created_ns: Nanos,
    ) -> SegmentHeader {
        let mut h = SegmentHeader {
            magic: SEGMENT_MAGIC,
            version: FORMAT_VERSION,
            flags: 0,
            segment_bytes,
            first_seq,
            chain_in,
            created_ns,
            reserved: [0; 12],
            crc: 0,
        };
        h.crc = crc32c::crc32c(&h.encode()[..60]);
        h
    }

    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..8].copy_from_slice(&self.magic.to_le_bytes());
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.segment_bytes.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.chain_in.to_le_bytes());
        b[40..48].copy_from_slice(&self.created_ns.to_le_bytes());
        b[48..60].copy_from_slice(&self.reserved);
        b[60..64].copy_from_slice(&self.crc.to_le_bytes());
        b
    }

    /// Decode and check magic, version and CRC. `Err` names what is wrong.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, &'static str> {
        if b.len() < SEGMENT_HEADER_BYTES {
            return Err("file shorter than a segment header");
        }
        let h = SegmentHeader {
            magic: u64_at(b, 0),
            version: u32_at(b, 8),
            flags: u32_at(b, 12),
            segment_bytes: u64_at(b, 16),
            first_seq: u64_at(b, 24),
            chain_in: u64_at(b, 32),
            created_ns: u64_at(b, 40),
            reserved: b[48..60].try_into().expect("12 bytes"),
            crc: u32_at(b, 60),
        };
        if h.magic != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        if h.crc != crc32c::crc32c(&b[..60]) {
            return Err("segment header checksum mismatch");
        }
        if h.version != FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        if h.first_seq == 0 {
            return Err("segment first_seq is 0");
        }
        Ok(h)
    }
}

/// The durable mark at [`DURABLE_MARK_OFFSET`]: the highest sequence number the flusher has
/// seen made durable, written *after* the sync that made it durable (so it reaches the disk with
/// the next sync). Recovery uses it to tell a torn tail (records after the mark) from lost
/// acknowledged records (at or below the mark), which are corruption.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableMark {
    pub durable_seq: Seq,
    /// Reserved, zero.
    pub reserved: u32,
    /// CRC32C of bytes 0..12.
    pub crc: u32,
}

/// Bytes of [`DurableMark`].
pub const DURABLE_MARK_BYTES: usize = 16;
const _: () = {
    assert!(size_of::<DurableMark>() == DURABLE_MARK_BYTES);
    assert!(8 + 4 + 4 == DURABLE_MARK_BYTES);
    assert!(offset_of!(DurableMark, reserved) == 8);
    assert!(offset_of!(DurableMark, crc) == 12);
};

impl DurableMark {
    pub fn encode(durable_seq: Seq) -> [u8; DURABLE_MARK_BYTES] {
        let mut b = [0u8; DURABLE_MARK_BYTES];
        b[0..8].copy_from_slice(&durable_seq.to_le_bytes());
        let crc = crc32c::crc32c(&b[..12]);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The mark's sequence number; 0 when never written or unreadable (no claim is made).
    pub fn decode(b: &[u8]) -> Seq {
        let m = &b[DURABLE_MARK_OFFSET..DURABLE_MARK_OFFSET + DURABLE_MARK_BYTES];
        if m.iter().all(|&x| x == 0) || u32_at(m, 12) != crc32c::crc32c(&m[..12]) {
            return 0;
        }
        u64_at(m, 0)
    }
}

/// The header in front of every record payload (and of the seal).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// CRC32C of header bytes 4..32 followed by the payload.
    pub crc: u32,
    /// Payload bytes (1..=RECORD_PAYLOAD_MAX), or [`SEAL_LEN`] for a seal.
    pub len: u32,
    /// Sequence number: the previous record's + 1. For a seal: the next segment's first_seq.
    pub seq: Seq,
    /// Sequencer timestamp, ns since the epoch (0 for a seal).
    pub ts: Nanos,
    /// Chain value after the previous record: links this record to everything before it.
    pub prev: u64,
}

/// Bytes of [`RecordHeader`].
pub const RECORD_HEADER_BYTES: usize = 32;
const _: () = {
    assert!(size_of::<RecordHeader>() == RECORD_HEADER_BYTES);
    assert!(4 + 4 + 8 + 8 + 8 == RECORD_HEADER_BYTES);
    assert!(offset_of!(RecordHeader, len) == 4);
    assert!(offset_of!(RecordHeader, seq) == 8);
    assert!(offset_of!(RecordHeader, ts) == 16);
    assert!(offset_of!(RecordHeader, prev) == 24);
    assert!(RECORD_HEADER_BYTES.is_multiple_of(RECORD_ALIGN));
    assert!(RECORD_PAYLOAD_MAX < SEAL_LEN as usize);
};

impl RecordHeader {
    #[inline]
    pub fn read(b: &[u8]) -> RecordHeader {
        RecordHeader {
            crc: u32_at(b, 0),
            len: u32_at(b, 4),
            seq: u64_at(b, 8),
            ts: u64_at(b, 16),
            prev: u64_at(b, 24),
        }
    }

    /// Header bytes 4..32 (everything but the CRC).
    #[inline]
    pub fn tail_bytes(&self) -> [u8; RECORD_HEADER_BYTES - 4] {
        let mut b = [0u8; RECORD_HEADER_BYTES - 4];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4..12].copy_from_slice(&self.seq.to_le_bytes());
        b[12..20].copy_from_slice(&self.ts.to_le_bytes());
        b[20..28].copy_from_slice(&self.prev.to_le_bytes());
        b
    }

    /// The checksum this header must carry for `payload`.
    #[inline]
    pub fn checksum(&self, payload: &[u8]) -> u32 {
        crc32c::crc32c_append(crc32c::crc32c(&self.tail_bytes()), payload)
    }

    #[inline]
    pub fn is_seal(&self) -> bool {
        self.len == SEAL_LEN
    }
}

/// Bytes a record with `len` payload bytes occupies, header and alignment padding included.
#[inline]
pub const fn record_bytes(len: usize) -> usize {
    RECORD_HEADER_BYTES + len.div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

/// The chain value after a record whose checksum is `crc`, given the value before it.
/// A 64-bit mix (SplitMix64's finaliser): it detects records that are missing, reordered or
/// spliced from another journal; it is not a defence against a deliberate forger.
#[inline]
pub fn chain_next(prev: u64, crc: u32) -> u64 {
    let mut z = prev.rotate_left(17) ^ u64::from(crc).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_file_name(first_seq: Seq) -> String {
    format!("{first_seq:020}.nvj")
}

/// The first sequence number a segment file name claims, if it is one.
pub fn parse_segment_file_name(name: &str) -> Option<Seq> {
    let digits = name.strip_suffix(".nvj")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[inline]
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_header_round_trips_and_rejects_a_flipped_bit() {
        let h = SegmentHeader::new(1 << 20, 42, 7, 99);
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for bit in 0..(SEGMENT_HEADER_BYTES * 8) {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&c).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn record_checksum_covers_every_header_field_and_the_payload() {
        let h = RecordHeader { crc: 0, len: 3, seq: 5, ts: 6, prev: 7 };
        let base = h.checksum(b"abc");
        assert_ne!(RecordHeader { len: 4, ..h }.checksum(b"abc"), base);
        assert_ne!(RecordHeader { seq: 4, ..h }.checksum(b"abc"), base);
        assert_ne!(RecordHeader { ts: 4, ..h }.checksum(b"abc"), base);
        assert_ne!(RecordHeader { prev: 4, ..h }.checksum(b"abc"), base);
        assert_ne!(h.checksum(b"abd"), base);
    }

    #[test]
    fn pinned_encodings() {
        // Changing any of these breaks every journal on disk: bump FORMAT_VERSION instead.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283, "CRC32C (Castagnoli) check value");
        assert_eq!(chain_next(CHAIN_SEED, 0), 0x9c54c08cc62bd83d);
        assert_eq!(chain_next(chain_next(CHAIN_SEED, 0), 0xe306_9283), 0xcccc27ca5dce83ea);
        assert_eq!(record_bytes(1), 40);
        assert_eq!(record_bytes(8), 40);
        assert_eq!(record_bytes(9), 48);
        assert_eq!(segment_file_name(17), "00000000000000000017.nvj");
        assert_eq!(parse_segment_file_name("00000000000000000017.nvj"), Some(17));
        assert_eq!(parse_segment_file_name("17.nvj"), None);
        assert_eq!(DurableMark::decode(&[0u8; 128]), 0);
        let mut page = [0u8; 128];
        page[DURABLE_MARK_OFFSET..DURABLE_MARK_OFFSET + 16]
            .copy_from_slice(&DurableMark::encode(9));
        assert_eq!(DurableMark::decode(&page), 9);
        page[DURABLE_MARK_OFFSET] ^= 1;
        assert_eq!(DurableMark::decode(&page), 0);
    }
}
