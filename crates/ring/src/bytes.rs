//! Byte ring for variable-length frames, usable across processes through a shared memory file.
//!
//! One producer claims space for a frame ([`ByteProducer::try_claim`]), writes the payload in
//! place, then commits or aborts it; one consumer hands each committed frame, in place, to a
//! handler ([`ByteConsumer::read`]). The producer and the consumer may live in two processes
//! that map the same file (`/dev/shm/...` or any file): the layout below is the contract, so a
//! TypeScript (or C) peer can implement either side.
//!
//! # Format
//!
//! ```text
//!  offset  size  field
//!  0       8     magic "NVRNGB01" (written last by the creator, read first by an opener)
//!  8       4     version = 1
//!  12      4     capacity in bytes (power of two, CAPACITY_MIN ..= CAPACITY_MAX)
//!  16      112   reserved, zero
//!  128     8     tail: bytes committed since creation (u64, written only by the producer)
//!  136     120   reserved (tail has the 128-byte pair of cache lines to itself)
//!  256     8     head: bytes released since creation (u64, written only by the consumer)
//!  264     120   reserved
//!  384     cap   data: records
//!
//!  record at data[pos % cap], 8-byte aligned, never split across the end of data:
//!  0  4  length of payload in bytes (u32)
//!  4  4  kind: 1 = frame, 2 = padding (skip to the start of data)
//!  8  n  payload, then zero to 7 bytes up to the next multiple of 8
//! ```
//!
//! All integers are little-endian (the crate asserts a little-endian target). `tail` and `head`
//! are accessed with atomic 64-bit operations: the producer stores `tail` with Release after
//! writing a record, the consumer loads it with Acquire, and symmetrically for `head`.
//!
//! A frame's record is at most half the capacity, so after padding to the end of data an empty
//! ring always has room for it: [`ByteProducer::frame_len_max`] = `capacity / 2 - 8`.
//!
//! # Trust
//!
//! Both processes must follow the protocol. The consumer checks every record header it reads and
//! reports a malformed one as [`Corrupt`] instead of reading out of bounds; both ends check the
//! counters they read from the file or the peer (8-aligned, `tail` at most one capacity ahead
//! of `head`) before they use them ([`Corrupt`], [`ClaimError::Corrupt`]). A peer that writes
//! into records it does not own can still garble payloads (as with any shared memory): a
//! handler gets the payload in place and should copy what it validates.

use core::fmt;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[cfg(not(target_endian = "little"))]
compile_error!("the byte ring's shared-memory format is little-endian");

/// File magic.
pub const MAGIC: u64 = u64::from_le_bytes(*b"NVRNGB01");
/// Format version.
pub const VERSION: u32 = 1;
/// Bytes before the data area.
pub const HEADER_LEN: usize = 384;
/// Offset of `tail`.
pub const TAIL_OFFSET: usize = 128;
/// Offset of `head`.
pub const HEAD_OFFSET: usize = 256;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 8;
/// Record alignment.
pub const RECORD_ALIGN: usize = 8;
/// Smallest capacity (1 KiB).
pub const CAPACITY_MIN: usize = 1 << 10;
/// Largest capacity (1 GiB): the capacity field is a u32 and frame lengths are u32.
pub const CAPACITY_MAX: usize = 1 << 30;
const KIND_FRAME: u32 = 1;
const KIND_PADDING: u32 = 2;

const fn record_len(payload_len: usize) -> usize {
    (RECORD_HEADER_LEN + payload_len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// Whether `tail` and `head` are counters the format allows: both 8-aligned (so every record
/// header is 4-aligned and inside data), `tail` at most one capacity ahead of `head`.
const fn in_range(tail: u64, head: u64, cap: u64) -> bool {
    tail.is_multiple_of(RECORD_ALIGN as u64)
        && head.is_multiple_of(RECORD_ALIGN as u64)
        && tail.wrapping_sub(head) <= cap
}

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
mod ffi {
    //! The two libc calls this crate needs, declared here so the crate keeps its one dependency
    //! (crossbeam-utils). Signatures and constants are Linux x86_64/aarch64 ones (off_t = i64).
    use core::ffi::{c_int, c_void};
    extern "C" {
        pub fn mmap(
            addr: *mut c_void,
            len: usize,
            prot: c_int,
            flags: c_int,
            fd: c_int,
            offset: i64,
        ) -> *mut c_void;
        pub fn munmap(addr: *mut c_void, len: usize) -> c_int;
    }
    pub const PROT_READ: c_int = 1;
    pub const PROT_WRITE: c_int = 2;
    pub const MAP_SHARED: c_int = 1;
    pub const MAP_FAILED: *mut c_void = !0usize as *mut c_void;
}

/// The memory a ring lives in: a heap block (in-process use) or a shared mapping of a file.
struct Region {
    base: *mut u8,
    len: usize,
    mapped: bool,
}

// SAFETY: the region is plain memory; concurrent access to it follows the ring protocol.
unsafe impl Send for Region {}
// SAFETY: as above; the only shared mutable words (`head`, `tail`) are accessed atomically.
unsafe impl Sync for Region {}

impl Region {
    fn heap(len: usize) -> Region {
        let layout = std::alloc::Layout::from_size_align(len, 4096).expect("ring layout");
        // SAFETY: `len > 0` (HEADER_LEN at least).
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        if base.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Region { base, len, mapped: false }
    }

    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    fn map(file: &std::fs::File, len: usize) -> io::Result<Region> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh mapping (addr = null) of `len` bytes of an open file; no Rust object
        // aliases it yet.
        let p = unsafe {
            ffi::mmap(
                core::ptr::null_mut(),
                len,
                ffi::PROT_READ | ffi::PROT_WRITE,
                ffi::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == ffi::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region { base: p.cast(), len, mapped: true })
    }

    fn atomic(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset == TAIL_OFFSET || offset == HEAD_OFFSET);
        // SAFETY: `offset` is 8-aligned inside the header and the region is page-aligned; this
        // word is only ever accessed atomically (by every process, per the format).
        unsafe { &*self.base.add(offset).cast::<AtomicU64>() }
    }

    fn magic(&self) -> &AtomicU64 {
        // SAFETY: offset 0 of a page-aligned region; the magic is only accessed atomically.
        unsafe { &*self.base.cast::<AtomicU64>() }
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: the region is HEADER_LEN + capacity bytes long.
        unsafe { self.base.add(HEADER_LEN) }
    }

    fn read_u32(&self, offset: usize) -> u32 {
        debug_assert!(offset + 4 <= self.len);
        // SAFETY: in bounds (checked by callers against the capacity) and 4-aligned.
        unsafe { self.base.add(offset).cast::<u32>().read() }
    }

    fn write_u32(&self, offset: usize, value: u32) {
        debug_assert!(offset + 4 <= self.len);
        // SAFETY: in bounds and 4-aligned; the caller owns these bytes by the ring protocol.
        unsafe { self.base.add(offset).cast::<u32>().write(value) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.mapped {
            #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
            // SAFETY: `base`/`len` are exactly the mapping created in `map`, unmapped once.
            unsafe {
                ffi::munmap(self.base.cast(), self.len);
            }
        } else {
            let layout = std::alloc::Layout::from_size_align(self.len, 4096).expect("ring layout");
            // SAFETY: allocated in `heap` with this layout.
            unsafe { std::alloc::dealloc(self.base, layout) };
        }
    }
}

/// A byte ring before it is split into its producer and consumer ends.
pub struct ByteRing {
    region: Arc<Region>,
    capacity: usize,
}

impl fmt::Debug for ByteRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteRing").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

fn check_capacity(capacity: usize) -> io::Result<()> {
    if !capacity.is_power_of_two() || !(CAPACITY_MIN..=CAPACITY_MAX).contains(&capacity) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "byte ring capacity {capacity} must be a power of two in {CAPACITY_MIN}..={CAPACITY_MAX}"
            ),
        ));
    }
    Ok(())
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl ByteRing {
    /// A ring in private heap memory, for two threads of this process.
    pub fn in_process(capacity: usize) -> io::Result<ByteRing> {
        check_capacity(capacity)?;
        let region = Region::heap(HEADER_LEN + capacity);
        Ok(Self::init(region, capacity))
    }

    fn init(region: Region, capacity: usize) -> ByteRing {
        // The region is zeroed (fresh heap block or fresh file), so head = tail = 0.
        region.write_u32(8, VERSION);
        region.write_u32(12, capacity as u32);
        // Release: an opener that sees the magic (Acquire) sees version and capacity too.
        region.magic().store(MAGIC, Ordering::Release);
        ByteRing { region: Arc::new(region), capacity }
    }

    /// Creates the file at `path` (it must not exist) and a ring of `capacity` bytes in it.
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    pub fn create(path: &Path, capacity: usize) -> io::Result<ByteRing> {
        check_capacity(capacity)?;
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        file.set_len((HEADER_LEN + capacity) as u64)?;
        let region = Region::map(&file, HEADER_LEN + capacity)?;
        Ok(Self::init(region, capacity))
    }

    /// Maps the ring another process created at `path`, checking its header.
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    pub fn open(path: &Path) -> io::Result<ByteRing> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let file_len = file.metadata()?.len() as usize;
        if file_len < HEADER_LEN + CAPACITY_MIN {
            return Err(invalid(format!("{}: {file_len} bytes is too short", path.display())));
        }
        let region = Region::map(&file, file_len)?;
        // Acquire: pairs with the creator's Release store of the magic.
        let magic = region.magic().load(Ordering::Acquire);
        if magic != MAGIC {
            return Err(invalid(format!("{}: bad magic {magic:#018x}", path.display())));
        }
        let version = region.read_u32(8);
        if version != VERSION {
            return Err(invalid(format!(
                "{}: version {version}, expected {VERSION}",
                path.display()
            )));
        }
        let capacity = region.read_u32(12) as usize;
        check_capacity(capacity)?;
        if HEADER_LEN + capacity != file_len {
            return Err(invalid(format!(
                "{}: capacity {capacity} does not match file length {file_len}",
                path.display()
            )));
        }
        Ok(ByteRing { region: Arc::new(region), capacity })
    }

    /// Data bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Both ends, for use by two threads of this process.
    pub fn split(self) -> (ByteProducer, ByteConsumer) {
        let consumer = ByteConsumer::new(self.region.clone(), self.capacity);
        (self.into_producer(), consumer)
    }

    /// The producing end (the consumer is in another process). Resumes at the committed tail.
    pub fn into_producer(self) -> ByteProducer {
        let r = &self.region;
        // Acquire: see the consumer's progress (and a previous producer's records, if resumed).
        let tail = r.atomic(TAIL_OFFSET).load(Ordering::Acquire);
        let head = r.atomic(HEAD_OFFSET).load(Ordering::Acquire);
        ByteProducer { region: self.region, mask: self.capacity as u64 - 1, tail, head_cache: head }
    }

    /// The consuming end (the producer is in another process). Resumes at the released head.
    pub fn into_consumer(self) -> ByteConsumer {
        ByteConsumer::new(self.region, self.capacity)
    }
}

/// Why a claim failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// The frame can never fit: longer than [`ByteProducer::frame_len_max`].
    TooLong {
        /// Requested payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The ring's counters break the format (`tail` or `head` not 8-aligned, or `tail` not
    /// within one capacity ahead of `head`): a peer broke the protocol or the file is damaged.
    /// Nothing was written.
    Corrupt {
        /// The producer's tail.
        tail: u64,
        /// The consumer's head as read.
        head: u64,
    },
    /// Not enough free space now; retry after the consumer catches up.
    Full {
        /// Bytes the record (and any padding before it) needs.
        needed: usize,
        /// Bytes free.
        free: usize,
    },
}

impl fmt::Display for ClaimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { len, max } => write!(f, "frame of {len} bytes exceeds max {max}"),
            Self::Full { needed, free } => {
                write!(f, "byte ring full: need {needed} bytes, {free} free")
            }
            Self::Corrupt { tail, head } => {
                write!(f, "byte ring counters out of range: tail {tail}, head {head}")
            }
        }
    }
}

impl std::error::Error for ClaimError {}

/// A malformed record header read from the ring (a peer broke the protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corrupt {
    /// Ring position of the record.
    pub position: u64,
    /// Its length field.
    pub len: u32,
    /// Its kind field.
    pub kind: u32,
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "corrupt byte ring record at {}: len {} kind {}",
            self.position, self.len, self.kind
        )
    }
}

impl std::error::Error for Corrupt {}

/// The producing end. Exactly one per ring (across all processes).
pub struct ByteProducer {
    region: Arc<Region>,
    mask: u64,
    /// Exact: this end is the only writer of `tail`.
    tail: u64,
    /// The consumer's `head` as last seen (never ahead of the real one).
    head_cache: u64,
}

impl fmt::Debug for ByteProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteProducer").field("tail", &self.tail).finish_non_exhaustive()
    }
}

impl ByteProducer {
    /// Data bytes.
    pub fn capacity(&self) -> usize {
        self.mask as usize + 1
    }

    /// Longest payload a frame may have.
    pub fn frame_len_max(&self) -> usize {
        self.capacity() / 2 - RECORD_HEADER_LEN
    }

    /// Reserves room for a frame of exactly `len` payload bytes. Write the payload through the
    /// claim, then [`FrameClaim::commit`] it; dropping the claim aborts it (nothing is published).
    pub fn try_claim(&mut self, len: usize) -> Result<FrameClaim<'_>, ClaimError> {
        let max = self.frame_len_max();
        if len > max {
            return Err(ClaimError::TooLong { len, max });
        }
        let cap = self.capacity() as u64;
        let record = record_len(len) as u64;
        let offset = self.tail & self.mask;
        let to_end = cap - offset;
        let padding = if record > to_end { to_end } else { 0 };
        let needed = padding + record;
        // Counters as the format allows them (`in_range`); a head read from a peer or a file
        // is checked before it is trusted, and so is the tail a resumed producer starts from.
        let mut used = self.tail.wrapping_sub(self.head_cache);
        if !in_range(self.tail, self.head_cache, cap) || cap - used < needed {
            // Acquire: pairs with the consumer's Release store of `head`: it has finished reading
            // the records below `head` before we overwrite them.
            self.head_cache = self.region.atomic(HEAD_OFFSET).load(Ordering::Acquire);
            if !in_range(self.tail, self.head_cache, cap) {
                return Err(ClaimError::Corrupt { tail: self.tail, head: self.head_cache });
            }
            used = self.tail - self.head_cache;
            let free = cap - used;
            if free < needed {
                return Err(ClaimError::Full { needed: needed as usize, free: free as usize });
            }
        }
        let record_offset = if padding > 0 { 0 } else { offset as usize };
        Ok(FrameClaim {
            producer: self,
            len,
            record_offset,
            padding_offset: offset as usize,
            padding: padding as usize,
            needed,
        })
    }

    /// Claims, copies `payload`, commits.
    pub fn try_write(&mut self, payload: &[u8]) -> Result<(), ClaimError> {
        let mut claim = self.try_claim(payload.len())?;
        claim.copy_from_slice(payload);
        claim.commit();
        Ok(())
    }
}

/// Space reserved for one frame. Derefs to the payload bytes (in the ring, in place).
pub struct FrameClaim<'a> {
    producer: &'a mut ByteProducer,
    len: usize,
    /// Offset in data of the record header.
    record_offset: usize,
    /// Offset in data where padding starts (meaningful only if `padding > 0`).
    padding_offset: usize,
    padding: usize,
    needed: u64,
}

impl FrameClaim<'_> {
    /// Publishes the frame.
    pub fn commit(self) {
        let p = &mut *self.producer;
        let data = HEADER_LEN;
        if self.padding > 0 {
            let at = data + self.padding_offset;
            p.region.write_u32(at, (self.padding - RECORD_HEADER_LEN) as u32);
            p.region.write_u32(at + 4, KIND_PADDING);
        }
        let at = data + self.record_offset;
        p.region.write_u32(at, self.len as u32);
        p.region.write_u32(at + 4, KIND_FRAME);
        p.tail += self.needed;
        // Release: the payload and the headers written above are visible to a consumer that
        // loads this tail with Acquire (in this process or another one mapping the file).
        p.region.atomic(TAIL_OFFSET).store(p.tail, Ordering::Release);
    }

    /// Gives the space back; nothing is published. (Dropping the claim does the same.)
    pub fn abort(self) {}
}

impl core::ops::Deref for FrameClaim<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the payload lies inside data (checked at claim), is owned by the producer until
        // commit, and the consumer does not read it before the tail store.
        unsafe {
            core::slice::from_raw_parts(
                self.producer.region.data().add(self.record_offset + RECORD_HEADER_LEN),
                self.len,
            )
        }
    }
}

impl core::ops::DerefMut for FrameClaim<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference to these bytes.
        unsafe {
            core::slice::from_raw_parts_mut(
                self.producer.region.data().add(self.record_offset + RECORD_HEADER_LEN),
                self.len,
            )
        }
    }
}

/// The consuming end. Exactly one per ring (across all processes).
pub struct ByteConsumer {
    region: Arc<Region>,
    mask: u64,
    /// Exact: this end is the only writer of `head`.
    head: u64,
    /// The producer's `tail` as last seen (never ahead of the real one).
    tail_cache: u64,
}

impl fmt::Debug for ByteConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteConsumer").field("head", &self.head).finish_non_exhaustive()
    }
}

impl ByteConsumer {
    fn new(region: Arc<Region>, capacity: usize) -> ByteConsumer {
        // Acquire: resume after whatever a previous consumer released.
        let head = region.atomic(HEAD_OFFSET).load(Ordering::Acquire);
        ByteConsumer { region, mask: capacity as u64 - 1, head, tail_cache: head }
    }

    /// Data bytes.
    pub fn capacity(&self) -> usize {
        self.mask as usize + 1
    }

    /// Hands up to `limit` committed frames, oldest first and in place, to `handler`, then
    /// releases their space with one store. Returns how many frames were handled.
    ///
    /// If `handler` panics, nothing of this batch is released: the frames are delivered again
    /// by the next `read` (at-least-once).
    pub fn read<F: FnMut(&[u8])>(
        &mut self,
        mut handler: F,
        limit: usize,
    ) -> Result<usize, Corrupt> {
        let cap = self.capacity() as u64;
        let frame_len_max = cap / 2 - RECORD_HEADER_LEN as u64;
        let mut head = self.head;
        let mut n = 0;
        let result = loop {
            if n == limit {
                break Ok(n);
            }
            if head == self.tail_cache {
                // Acquire: pairs with the producer's Release store of `tail`, so the records
                // below it (headers and payloads) are visible.
                self.tail_cache = self.region.atomic(TAIL_OFFSET).load(Ordering::Acquire);
                if head == self.tail_cache {
                    break Ok(n);
                }
            }
            // Checked before a header is read: an unaligned or runaway counter (a damaged file,
            // a peer that broke the protocol) would put it outside data.
            if !in_range(self.tail_cache, head, cap) {
                break Err(Corrupt { position: head, len: 0, kind: 0 });
            }
            let offset = head & self.mask;
            let to_end = cap - offset;
            let at = HEADER_LEN + offset as usize;
            let len = self.region.read_u32(at);
            let kind = self.region.read_u32(at + 4);
            let corrupt = Corrupt { position: head, len, kind };
            match kind {
                KIND_PADDING
                    if u64::from(len) + RECORD_HEADER_LEN as u64 == to_end
                        && head + to_end <= self.tail_cache =>
                {
                    head += to_end;
                }
                KIND_FRAME if u64::from(len) <= frame_len_max => {
                    let record = record_len(len as usize) as u64;
                    if record > to_end || head + record > self.tail_cache {
                        break Err(corrupt);
                    }
                    // SAFETY: the payload lies inside data (record <= to_end), was published by
                    // the producer (below tail), and is not overwritten until we release `head`.
                    let payload = unsafe {
                        core::slice::from_raw_parts(
                            self.region.data().add(offset as usize + RECORD_HEADER_LEN),
                            len as usize,
                        )
                    };
                    handler(payload);
                    head += record;
                    n += 1;
                }
                _ => break Err(corrupt),
            }
        };
        if head != self.head {
            self.head = head;
            // Release: our reads of the released records happen before the producer reuses them.
            self.region.atomic(HEAD_OFFSET).store(head, Ordering::Release);
        }
        result
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_checked() {
        assert!(ByteRing::in_process(1000).is_err());
        assert!(ByteRing::in_process(512).is_err());
        assert!(ByteRing::in_process(1024).is_ok());
    }

    #[test]
    fn commit_abort_and_limits() {
        let (mut p, mut c) = ByteRing::in_process(1024).unwrap().split();
        assert_eq!(p.frame_len_max(), 504);
        assert_eq!(p.try_claim(505).err(), Some(ClaimError::TooLong { len: 505, max: 504 }));
        let mut claim = p.try_claim(3).unwrap();
        claim.copy_from_slice(b"abc");
        claim.abort();
        assert_eq!(c.read(|_| panic!("aborted frame delivered"), 10), Ok(0));
        p.try_write(b"hello").unwrap();
        p.try_write(b"").unwrap();
        let mut got = Vec::new();
        assert_eq!(c.read(|f| got.push(f.to_vec()), 10), Ok(2));
        assert_eq!(got, vec![b"hello".to_vec(), Vec::new()]);
    }

    #[test]
    fn full_then_wraps_with_padding() {
        let (mut p, mut c) = ByteRing::in_process(1024).unwrap().split();
        // 3 records of 8 + 300 -> 312 bytes each = 936; a fourth needs 88 padding + 312.
        for i in 0..3u8 {
            p.try_write(&[i; 300]).unwrap();
        }
        assert!(matches!(p.try_write(&[9; 300]), Err(ClaimError::Full { needed: 400, free: 88 })));
        let mut got = Vec::new();
        assert_eq!(c.read(|f| got.push(f[0]), 1), Ok(1));
        // tail at 936: 88 bytes to the end, so the next record pads to 1024 and goes at 0.
        p.try_write(&[3; 300]).unwrap();
        assert_eq!(c.read(|f| got.push(f[0]), 10), Ok(3));
        assert_eq!(got, vec![0, 1, 2, 3]);
    }

    #[test]
    fn corrupt_headers_are_reported_not_followed() {
        let ring = ByteRing::in_process(1024).unwrap();
        let region = ring.region.clone();
        let (mut p, mut c) = ring.split();
        p.try_write(b"xyz").unwrap();
        region.write_u32(HEADER_LEN, 4000); // length beyond the ring
        let err = c.read(|_| panic!("corrupt frame delivered"), 10).unwrap_err();
        assert_eq!(err, Corrupt { position: 0, len: 4000, kind: KIND_FRAME });
        region.write_u32(HEADER_LEN, 3);
        region.write_u32(HEADER_LEN + 4, 77); // unknown kind
        assert_eq!(c.read(|_| {}, 10).unwrap_err().kind, 77);
    }

    #[test]
    fn counters_out_of_range_are_corrupt_not_followed() {
        let store = |r: &Region, off: usize, v: u64| r.atomic(off).store(v, Ordering::SeqCst);
        // A consumer resuming at an unaligned head, with a tail 8 ahead: no header is read.
        let ring = ByteRing::in_process(1024).unwrap();
        let region = ring.region.clone();
        store(&region, HEAD_OFFSET, 1021);
        store(&region, TAIL_OFFSET, 1029);
        let mut c = ring.into_consumer();
        let err = c.read(|_| panic!("delivered"), 10).unwrap_err();
        assert_eq!((err.position, err.len, err.kind), (1021, 0, 0));
        // A tail more than a capacity ahead of the head, or behind it.
        for (head, tail) in [(0, 4096), (4096, 0)] {
            let ring = ByteRing::in_process(1024).unwrap();
            store(&ring.region, HEAD_OFFSET, head);
            store(&ring.region, TAIL_OFFSET, tail);
            let mut c = ring.into_consumer();
            assert!(c.read(|_| panic!("delivered"), 10).is_err(), "head {head} tail {tail}");
        }
        // A padding record that claims the whole ring while one record was committed: refused,
        // not looped over forever.
        let ring = ByteRing::in_process(1024).unwrap();
        let region = ring.region.clone();
        store(&region, TAIL_OFFSET, 8);
        region.write_u32(HEADER_LEN, 1024 - 8);
        region.write_u32(HEADER_LEN + 4, KIND_PADDING);
        let mut c = ring.into_consumer();
        assert_eq!(c.read(|_| panic!("delivered"), 10).unwrap_err().kind, KIND_PADDING);
        // A producer resuming at an unaligned tail, or a head the consumer never wrote.
        for (head, tail) in [(1020, 1020), (0, 2048), (2048, 0)] {
            let ring = ByteRing::in_process(1024).unwrap();
            store(&ring.region, HEAD_OFFSET, head);
            store(&ring.region, TAIL_OFFSET, tail);
            let mut p = ring.into_producer();
            assert_eq!(
                p.try_write(b"x").unwrap_err(),
                ClaimError::Corrupt { tail, head },
                "head {head} tail {tail}"
            );
        }
    }

    #[test]
    fn threads_exchange_many_frames_in_order() {
        use std::time::{Duration, Instant};
        let (mut p, mut c) = ByteRing::in_process(4096).unwrap().split();
        const N: u32 = 200_000;
        let deadline = Instant::now() + Duration::from_secs(60);
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                let len = (i as usize * 7) % 300;
                loop {
                    match p.try_claim(len + 4) {
                        Ok(mut claim) => {
                            claim[..4].copy_from_slice(&i.to_le_bytes());
                            claim[4..].fill(i as u8);
                            claim.commit();
                            break;
                        }
                        Err(ClaimError::Full { .. }) => {
                            assert!(Instant::now() < deadline, "producer timed out");
                            std::hint::spin_loop();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        });
        let mut next = 0u32;
        while next < N {
            assert!(Instant::now() < deadline, "consumer timed out at {next}");
            c.read(
                |f| {
                    let i = u32::from_le_bytes(f[..4].try_into().unwrap());
                    assert_eq!(i, next);
                    assert_eq!(f.len(), (i as usize * 7) % 300 + 4);
                    assert!(f[4..].iter().all(|&b| b == i as u8));
                    next += 1;
                },
                64,
            )
            .unwrap();
        }
        producer.join().unwrap();
    }
}
