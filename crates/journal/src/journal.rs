//! The appender: records go into a memory-mapped, pre-allocated segment; `commit` ends a batch
//! and hands it to the flusher thread, which makes it durable (fdatasync) and advances the
//! durable watermark that the sequencer acknowledges from.

use crate::error::Error;
use crate::format::*;
use crate::scan::{list_segments, scan_journal};
use memmap2::{MmapMut, MmapOptions};
use novate_core::{Nanos, Seq};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// When a committed batch counts as durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// At `commit`: the records are in the page cache. Survives a process crash (kill -9), not
    /// a power loss or kernel crash.
    None,
    /// After the flusher thread's fdatasync that covers the batch returns. The appender does
    /// not wait; it reads or waits on the [`Watermark`]. Group commit: one fdatasync covers
    /// every batch committed while the previous one ran.
    Fsync,
}

/// Journal configuration. Every limit has a name and a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Size of every (pre-allocated) segment file.
    pub segment_bytes: u64,
    pub policy: Policy,
    /// Sequence number of the first record of a journal created empty.
    pub first_seq: Seq,
    /// Pre-fault every page of the next segment writable (MADV_POPULATE_WRITE) on the preparer
    /// thread, so the appender takes no page faults. Applies to `Policy::None` only: under
    /// `Policy::Fsync` the pre-faulted (dirty, zero) pages would all be written by the first
    /// fdatasync after a roll (64 MiB at once), so there the appender takes the faults.
    pub populate: bool,
}

/// 64 MiB: ~300k commands of ~200 bytes; big enough that rolling (once per segment) is rare,
/// small enough that retention frees space in useful steps.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            policy: Policy::Fsync,
            first_seq: 1,
            populate: true,
        }
    }
}

impl Options {
    fn validate(&self) -> Result<(), Error> {
        if self.segment_bytes < SEGMENT_BYTES_MIN {
            return Err(Error::InvalidOptions("segment_bytes below SEGMENT_BYTES_MIN"));
        }
        if self.segment_bytes > SEGMENT_BYTES_MAX {
            return Err(Error::InvalidOptions("segment_bytes above SEGMENT_BYTES_MAX"));
        }
        if !self.segment_bytes.is_multiple_of(4096) {
            return Err(Error::InvalidOptions("segment_bytes must be a multiple of 4096"));
        }
        if self.first_seq == 0 {
            return Err(Error::InvalidOptions("first_seq must be >= 1"));
        }
        Ok(())
    }
}

/// What opening found and did. A truncated torn tail is reported here, never silently.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The journal was created empty.
    pub created: bool,
    /// First and last sequence numbers held (`last < first` when empty).
    pub first_seq: Seq,
    pub last_seq: Seq,
    pub segments: usize,
    /// A torn tail was zeroed: (segment, offset, bytes).
    pub truncated: Option<(PathBuf, u64, u64)>,
    /// An interrupted segment creation was removed.
    pub removed_incomplete: Option<PathBuf>,
    /// Leftover `*.tmp` files removed.
    pub removed_tmp: Vec<PathBuf>,
}

/// Shared between the appender, the flusher and any number of watermark readers.
struct Shared {
    /// Last sequence number committed (handed to the flusher). Written by the appender only
    /// (SeqCst store: see `wake_flusher`); read by the flusher.
    written: AtomicU64,
    /// Last sequence number durable by the policy. Written by the flusher (or by the appender
    /// under `Policy::None`) with Release, so a reader that sees `n` also sees that records
    /// up to `n` are durable; readers may see a stale (lower) value, never a higher one.
    durable: AtomicU64,
    /// The flusher is about to park (Dekker handshake with the appender, SeqCst on both sides).
    sleeping: AtomicBool,
    stop: AtomicBool,
    /// A flush failed: the journal is stopped.
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    files: Mutex<FlushFiles>,
    /// Threads blocked in `Watermark::wait`; the flusher notifies only when some wait.
    waiters: AtomicUsize,
    wait_lock: Mutex<()>,
    wait_cv: Condvar,
    /// Count of fdatasync batches (for benchmarks and tests).
    syncs: AtomicU64,
}

/// Files the flusher must sync: sealed segments not yet synced (with their mappings, dropped
/// by the flusher so munmap never runs on the appender), then the current one.
struct FlushFiles {
    sealed: Vec<(Arc<File>, Option<MmapMut>)>,
    current: Arc<File>,
    dir: PathBuf,
    /// The directory entry of `current` has not been synced yet.
    dir_dirty: bool,
}

/// A handle on the durable watermark: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Watermark {
    shared: Arc<Shared>,
}

impl Watermark {
    /// Highest sequence number durable by the journal's policy (0 before any).
    #[inline]
    pub fn durable(&self) -> Seq {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Block until `seq` is durable, the journal fails, or `timeout` passes (then `Ok(false)`).
    pub fn wait(&self, seq: Seq, timeout: Duration) -> Result<bool, Error> {
        let deadline = Instant::now() + timeout;
        let s = &self.shared;
        loop {
            if self.durable() >= seq {
                return Ok(true);
            }
            if s.failed.load(Ordering::Acquire) {
                return Err(Error::FlushFailed(
                    s.failure.lock().expect("lock").clone().unwrap_or_default(),
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            s.waiters.fetch_add(1, Ordering::SeqCst);
            let guard = s.wait_lock.lock().expect("lock");
            // Re-check under the lock (the flusher notifies while holding it); SeqCst pairs with
            // the flusher's store of `durable` and its load of `waiters`.
            if s.durable.load(Ordering::SeqCst) < seq && !s.failed.load(Ordering::SeqCst) {
                let step = (deadline - now).min(Duration::from_millis(10));
                let _ = s.wait_cv.wait_timeout(guard, step).expect("lock");
            }
            s.waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Number of fdatasync rounds the flusher has completed.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }
}

/// The single writer of a journal directory.
pub struct Journal {
    dir: PathBuf,
    opts: Options,
    file: Arc<File>,
    map: MmapMut,
    /// Where the next record goes in `map`.
    offset: usize,
    next_seq: Seq,
    chain: u64,
    first_seq: Seq,
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    preparer: Option<Preparer>,
}

impl Journal {
    /// Open (or create) the journal in `dir`: check every segment, zero a torn tail, refuse
    /// corruption with [`Error::Corrupt`], and start the flusher thread for `Policy::Fsync`.
    pub fn open(dir: &Path, opts: Options) -> Result<(Journal, OpenReport), Error> {
        opts.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create_dir_all", dir, e))?;
        let mut report = OpenReport::default();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io("read_dir", dir, e))? {
            let path = entry.map_err(|e| Error::io("read_dir", dir, e))?.path();
            if path.extension().is_some_and(|x| x == "tmp") {
                std::fs::remove_file(&path).map_err(|e| Error::io("remove_file", &path, e))?;
                report.removed_tmp.push(path);
            }
        }
        let (file, map, offset, next_seq, chain, first_seq) = match scan_journal(dir)? {
            None => {
                report.created = true;
                let (file, map) = create_segment(dir, &opts, opts.first_seq, CHAIN_SEED)?;
                sync_dir(dir)?;
                (
                    Arc::new(file),
                    map,
                    SEGMENT_DATA_OFFSET,
                    opts.first_seq,
                    CHAIN_SEED,
                    opts.first_seq,
                )
            }
            Some(scan) => {
                if let Some(p) = &scan.incomplete_last {
                    std::fs::remove_file(p).map_err(|e| Error::io("remove_file", p, e))?;
                    report.removed_incomplete = Some(p.clone());
                }
                let (_, path) = scan.segments.last().expect("scan has segments").clone();
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io("open", &path, e))?;
                let mut map = map_segment(&file, &path)?;
                if scan.dirty_end > scan.end_offset {
                    map[scan.end_offset..scan.dirty_end].fill(0);
                    map.flush_range(scan.end_offset, scan.dirty_end - scan.end_offset)
                        .map_err(|e| Error::io("msync", &path, e))?;
                    report.truncated = Some((
                        path.clone(),
                        scan.end_offset as u64,
                        (scan.dirty_end - scan.end_offset) as u64,
                    ));
                }
                // Whatever the previous process left in the page cache is made durable before
                // the watermark starts at the last record.
                for (_, p) in &scan.segments {
                    let f = File::open(p).map_err(|e| Error::io("open", p, e))?;
                    fdatasync(&f).map_err(|e| Error::io("fdatasync", p, e))?;
                }
                report.segments = scan.segments.len();
                (
                    Arc::new(file),
                    map,
                    scan.end_offset,
                    scan.last_seq + 1,
                    scan.chain,
                    scan.first_seq,
                )
            }
        };
        if report.created {
            report.segments = 1;
        }
        report.first_seq = first_seq;
        report.last_seq = next_seq - 1;
        let shared = Arc::new(Shared {
            written: AtomicU64::new(next_seq - 1),
            durable: AtomicU64::new(next_seq - 1),
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            files: Mutex::new(FlushFiles {
                sealed: Vec::new(),
                current: file.clone(),
                dir: dir.to_path_buf(),
                dir_dirty: false,
            }),
            waiters: AtomicUsize::new(0),
            wait_lock: Mutex::new(()),
            wait_cv: Condvar::new(),
            syncs: AtomicU64::new(0),
        });
        let flusher = match opts.policy {
            Policy::None => None,
            Policy::Fsync => {
                let s = shared.clone();
                Some(
                    thread::Builder::new()
                        .name("journal-flusher".into())
                        .spawn(move || flusher(s))
                        .map_err(|e| Error::io("spawn flusher", dir, e))?,
                )
            }
        };
        let preparer = Some(Preparer::spawn(dir, opts)?);
        let journal = Journal {
            dir: dir.to_path_buf(),
            opts,
            file,
            map,
            offset,
            next_seq,
            chain,
            first_seq,
            shared,
            flusher,
            preparer,
        };
        Ok((journal, report))
    }

    /// The sequence number the next `append` gets.
    #[inline]
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// Last sequence number appended (committed or not).
    #[inline]
    pub fn last_seq(&self) -> Seq {
        self.next_seq - 1
    }

    /// First sequence number still held (after retention).
    pub fn first_seq(&self) -> Seq {
        self.first_seq
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> Options {
        self.opts
    }

    /// The durable watermark handle (clone it to other threads).
    pub fn watermark(&self) -> Watermark {
        Watermark { shared: self.shared.clone() }
    }

    /// Highest durable sequence number.
    #[inline]
    pub fn durable(&self) -> Seq {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Append one record; returns its sequence number. Not durable (nor visible to the
    /// flusher) until [`Journal::commit`].
    #[inline]
    pub fn append(&mut self, ts: Nanos, payload: &[u8]) -> Result<Seq, Error> {
        self.append_with(ts, payload.len(), |buf| {
            buf[..payload.len()].copy_from_slice(payload);
            payload.len()
        })
    }

    /// Append one record written in place: `write` gets `len_max` zeroed bytes of the mapped
    /// segment and returns how many it used (1..=len_max). No copy, no allocation.
    #[inline]
    pub fn append_with(
        &mut self,
        ts: Nanos,
        len_max: usize,
        write: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<Seq, Error> {
        if len_max == 0 || len_max > RECORD_PAYLOAD_MAX {
            return Err(Error::PayloadSize(len_max));
        }
        // Room for this record and, after it, the seal of this segment.
        if self.offset + record_bytes(len_max) + RECORD_HEADER_BYTES > self.map.len() {
            self.roll()?;
        }
        let off = self.offset;
        let at = off + RECORD_HEADER_BYTES;
        // Invariant: everything after `offset` is zero, so the payload area and padding are too.
        let len = write(&mut self.map[at..at + len_max]);
        if len == 0 || len > len_max {
            self.map[at..at + len_max].fill(0);
            return Err(Error::PayloadSize(len));
        }
        if len < len_max {
            self.map[at + len..at + len_max].fill(0);
        }
        let seq = self.next_seq;
        let h = RecordHeader { crc: 0, len: len as u32, seq, ts, prev: self.chain };
        let crc = h.checksum(&self.map[at..at + len]);
        self.map[off + 4..off + RECORD_HEADER_BYTES].copy_from_slice(&h.tail_bytes());
        self.map[off..off + 4].copy_from_slice(&crc.to_le_bytes());
        self.chain = chain_next(self.chain, crc);
        self.offset = off + record_bytes(len);
        self.next_seq = seq + 1;
        Ok(seq)
    }

    /// End a batch: everything appended so far becomes durable by the policy. Under
    /// `Policy::None` the watermark moves now; under `Policy::Fsync` the flusher is woken and
    /// the watermark moves when its fdatasync returns. Returns the last sequence committed.
    #[inline]
    pub fn commit(&mut self) -> Result<Seq, Error> {
        let last = self.next_seq - 1;
        let s = &self.shared;
        match self.opts.policy {
            Policy::None => {
                s.written.store(last, Ordering::Release);
                s.durable.store(last, Ordering::Release);
            }
            Policy::Fsync => {
                if s.failed.load(Ordering::Relaxed) {
                    return Err(Error::FlushFailed(
                        s.failure.lock().expect("lock").clone().unwrap_or_default(),
                    ));
                }
                // SeqCst: pairs with the flusher's SeqCst `sleeping` store/`written` load; either
                // it sees this batch or we see it going to sleep and unpark it.
                s.written.store(last, Ordering::SeqCst);
                if s.sleeping.load(Ordering::SeqCst) && s.sleeping.swap(false, Ordering::SeqCst) {
                    if let Some(f) = &self.flusher {
                        f.thread().unpark();
                    }
                }
            }
        }
        Ok(last)
    }

    /// Commit and block until the batch is durable.
    pub fn commit_wait(&mut self) -> Result<Seq, Error> {
        let last = self.commit()?;
        while !self.watermark().wait(last, Duration::from_secs(60))? {}
        Ok(last)
    }

    /// Seal the current segment and continue in a new one. The successor is created complete
    /// (tmp file, header, rename) *before* the seal is written, so a crash in between leaves an
    /// unsealed segment followed by an empty valid one, never a seal without a successor.
    fn roll(&mut self) -> Result<(), Error> {
        let prepared = match &mut self.preparer {
            Some(p) => p.take()?,
            None => allocate_segment(
                &self.dir.join(format!("{}.tmp", segment_file_name(self.next_seq))),
                &self.opts,
            )?,
        };
        let (file, map) =
            install_segment(&self.dir, prepared, &self.opts, self.next_seq, self.chain)?;
        let seal =
            RecordHeader { crc: 0, len: SEAL_LEN, seq: self.next_seq, ts: 0, prev: self.chain };
        let crc = seal.checksum(&[]);
        let off = self.offset;
        self.map[off + 4..off + RECORD_HEADER_BYTES].copy_from_slice(&seal.tail_bytes());
        self.map[off..off + 4].copy_from_slice(&crc.to_le_bytes());
        let old_map = std::mem::replace(&mut self.map, map);
        let new_file = Arc::new(file);
        let old_file = std::mem::replace(&mut self.file, new_file.clone());
        {
            let mut f = self.shared.files.lock().expect("lock");
            f.current = new_file;
            f.dir_dirty = true;
            if self.opts.policy == Policy::Fsync {
                f.sealed.push((old_file, Some(old_map)));
            }
        }
        self.offset = SEGMENT_DATA_OFFSET;
        Ok(())
    }

    /// Move (`Some(archive_dir)`) or delete (`None`) every segment whose records are all at or
    /// below `snapshot_seq` and durable. The segment being written is never touched. Returns
    /// the paths removed from the journal directory.
    pub fn retain(
        &mut self,
        snapshot_seq: Seq,
        archive_dir: Option<&Path>,
    ) -> Result<Vec<PathBuf>, Error> {
        let limit = snapshot_seq.min(self.durable());
        let removed = retain_segments(&self.dir, limit, archive_dir)?;
        if let Some(&(first, _)) = list_segments(&self.dir)?.first() {
            self.first_seq = first;
        }
        Ok(removed)
    }

    /// Commit, wait until durable, stop the flusher, and make the durable mark itself durable.
    pub fn close(mut self) -> Result<Seq, Error> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<Seq, Error> {
        let last = self.commit()?;
        if let Some(f) = self.flusher.take() {
            while !self.watermark().wait(last, Duration::from_secs(60))? {}
            self.shared.stop.store(true, Ordering::SeqCst);
            f.thread().unpark();
            f.join().map_err(|_| Error::Stopped)?;
            let path = self.dir.join(segment_file_name(self.segment_first_seq()));
            self.file
                .write_at(&DurableMark::encode(last), DURABLE_MARK_OFFSET as u64)
                .map_err(|e| Error::io("pwrite durable mark", &path, e))?;
            fdatasync(&self.file).map_err(|e| Error::io("fdatasync", &path, e))?;
        }
        Ok(last)
    }

    fn segment_first_seq(&self) -> Seq {
        SegmentHeader::decode(&self.map).map_or(0, |h| h.first_seq)
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if self.flusher.is_some() {
            let _ = self.shutdown();
        }
    }
}

/// Remove segments whose records are all `<= upto` (never the newest segment).
pub fn retain_segments(
    dir: &Path,
    upto: Seq,
    archive_dir: Option<&Path>,
) -> Result<Vec<PathBuf>, Error> {
    let segs = list_segments(dir)?;
    let mut removed = Vec::new();
    if let Some(a) = archive_dir {
        std::fs::create_dir_all(a).map_err(|e| Error::io("create_dir_all", a, e))?;
    }
    for w in segs.windows(2) {
        let ((_, path), (next_first, _)) = (&w[0], &w[1]);
        if *next_first > upto + 1 {
            break;
        }
        match archive_dir {
            Some(a) => {
                let to = a.join(path.file_name().expect("segment has a name"));
                std::fs::rename(path, &to).map_err(|e| Error::io("rename to archive", path, e))?;
            }
            None => std::fs::remove_file(path).map_err(|e| Error::io("remove_file", path, e))?,
        }
        removed.push(path.clone());
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
        if let Some(a) = archive_dir {
            sync_dir(a)?;
        }
    }
    Ok(removed)
}

/// Prepares the next segment (allocate, map, pre-fault) on its own thread while the current
/// one fills, so rolling costs the appender a header write and a rename.
struct Preparer {
    request: Option<std::sync::mpsc::SyncSender<()>>,
    ready: std::sync::mpsc::Receiver<Result<Prepared, Error>>,
    handle: Option<JoinHandle<()>>,
}

impl Preparer {
    fn spawn(dir: &Path, opts: Options) -> Result<Preparer, Error> {
        let (request, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let (tx, ready) = std::sync::mpsc::sync_channel(1);
        let dir2 = dir.to_path_buf();
        let handle = thread::Builder::new()
            .name("journal-preparer".into())
            .spawn(move || {
                let mut n = 0u64;
                while rx.recv().is_ok() {
                    n += 1;
                    let tmp = dir2.join(format!("prepared-{}-{n}.nvj.tmp", std::process::id()));
                    if tx.send(allocate_segment(&tmp, &opts)).is_err() {
                        let _ = std::fs::remove_file(&tmp);
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("spawn preparer", dir, e))?;
        request.send(()).map_err(|_| Error::Stopped)?;
        Ok(Preparer { request: Some(request), ready, handle: Some(handle) })
    }

    /// The prepared segment (waits if it is not ready yet) and a request for the next one.
    fn take(&mut self) -> Result<Prepared, Error> {
        let p = self.ready.recv().map_err(|_| Error::Stopped)??;
        self.request.as_ref().ok_or(Error::Stopped)?.send(()).map_err(|_| Error::Stopped)?;
        Ok(p)
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.request.take();
        // A segment prepared but never used is removed (open would remove it too).
        while let Ok(Ok(p)) = self.ready.recv() {
            let _ = std::fs::remove_file(&p.tmp);
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn flusher(s: Arc<Shared>) {
    let mut done = s.durable.load(Ordering::Acquire);
    loop {
        let target = s.written.load(Ordering::SeqCst);
        if target > done {
            if let Err(e) = flush_once(&s, target) {
                *s.failure.lock().expect("lock") = Some(e.to_string());
                s.failed.store(true, Ordering::SeqCst);
                let _g = s.wait_lock.lock().expect("lock");
                s.wait_cv.notify_all();
                return;
            }
            done = target;
            // SeqCst (not just Release, which readers need to see the flushed state): it pairs
            // with a waiter's SeqCst `waiters` increment and re-check, so either we see the
            // waiter or it sees the new watermark (no missed wake-up).
            s.durable.store(target, Ordering::SeqCst);
            s.syncs.fetch_add(1, Ordering::Relaxed);
            if s.waiters.load(Ordering::SeqCst) > 0 {
                let _g = s.wait_lock.lock().expect("lock");
                s.wait_cv.notify_all();
            }
            continue;
        }
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        s.sleeping.store(true, Ordering::SeqCst);
        if s.written.load(Ordering::SeqCst) > done || s.stop.load(Ordering::SeqCst) {
            s.sleeping.store(false, Ordering::SeqCst);
            continue;
        }
        // The timeout is a safety net only; the appender unparks us.
        thread::park_timeout(Duration::from_millis(100));
        s.sleeping.store(false, Ordering::SeqCst);
    }
}

/// Sync every file holding records up to `target`, then record `target` in the durable mark of
/// the current segment (it reaches the disk with the next sync).
fn flush_once(s: &Shared, target: Seq) -> Result<(), Error> {
    let (sealed, current, dir, dir_dirty) = {
        let mut f = s.files.lock().expect("lock");
        let dirty = std::mem::replace(&mut f.dir_dirty, false);
        (std::mem::take(&mut f.sealed), f.current.clone(), f.dir.clone(), dirty)
    };
    for (file, map) in sealed {
        fdatasync(&file).map_err(|e| Error::io("fdatasync sealed segment", &dir, e))?;
        drop(map);
    }
    fdatasync(&current).map_err(|e| Error::io("fdatasync", &dir, e))?;
    if dir_dirty {
        sync_dir(&dir)?;
    }
    current
        .write_at(&DurableMark::encode(target), DURABLE_MARK_OFFSET as u64)
        .map_err(|e| Error::io("pwrite durable mark", &dir, e))?;
    Ok(())
}

fn fdatasync(file: &File) -> std::io::Result<()> {
    // SAFETY: fdatasync on a file descriptor owned by `file`, which outlives the call.
    let rc = unsafe { libc::fdatasync(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    let d = File::open(dir).map_err(|e| Error::io("open dir", dir, e))?;
    d.sync_all().map_err(|e| Error::io("fsync dir", dir, e))
}

fn map_segment(file: &File, path: &Path) -> Result<MmapMut, Error> {
    let o = MmapOptions::new();
    // SAFETY: this process is the only writer of the journal directory (one Journal per
    // directory, by contract), so nothing else resizes or rewrites the file under the mapping.
    unsafe { o.map_mut(file) }.map_err(|e| Error::io("mmap", path, e))
}

/// Create a segment: a `.tmp` file, pre-allocated, header written, renamed into place.
fn create_segment(
    dir: &Path,
    opts: &Options,
    first_seq: Seq,
    chain_in: u64,
) -> Result<(File, MmapMut), Error> {
    let tmp = dir.join(format!("{}.tmp", segment_file_name(first_seq)));
    let p = allocate_segment(&tmp, opts)?;
    install_segment(dir, p, opts, first_seq, chain_in)
}

/// A pre-allocated, mapped segment file without a header yet, under a `.tmp` name.
struct Prepared {
    tmp: PathBuf,
    file: File,
    map: MmapMut,
}

fn allocate_segment(tmp: &Path, opts: &Options) -> Result<Prepared, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(|e| Error::io("create", tmp, e))?;
    let len = opts.segment_bytes as libc::off_t;
    // SAFETY: fallocate on the descriptor `file` owns; mode 0 only allocates blocks.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc != 0 {
        // Filesystems without fallocate (tmpfs before 3.5, some FUSE): a sparse file works too.
        file.set_len(opts.segment_bytes).map_err(|e| Error::io("set_len", tmp, e))?;
    }
    let map = map_segment(&file, tmp)?;
    if opts.populate && opts.policy == Policy::None {
        // Best effort (Linux >= 5.14); without it the appender takes the faults.
        let _ = map.advise(memmap2::Advice::PopulateWrite);
    }
    Ok(Prepared { tmp: tmp.to_path_buf(), file, map })
}

/// Give a prepared segment its header and its name.
fn install_segment(
    dir: &Path,
    p: Prepared,
    opts: &Options,
    first_seq: Seq,
    chain_in: u64,
) -> Result<(File, MmapMut), Error> {
    let Prepared { tmp, file, mut map } = p;
    let path = dir.join(segment_file_name(first_seq));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let header = SegmentHeader::new(opts.segment_bytes, first_seq, chain_in, now);
    map[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
    std::fs::rename(&tmp, &path).map_err(|e| Error::io("rename", &tmp, e))?;
    Ok((file, map))
}
