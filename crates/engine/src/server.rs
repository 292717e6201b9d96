//! The TCP ingress of `novated`: SOFH-framed SBE from members.
//!
//! # Protocol
//! - A connection carries SOFH frames (crates/wire `frame`). Encoding `0x5BE0` (SBE 1.0 LE):
//!   commands (templates 1..=8) and `ClearTradeBatch` (9); each command, and each batch entry,
//!   gets exactly one answer, `Ack` (201) or `Reject` (202), matched by its `requestId`. Many
//!   requests may be in flight on one connection (pipelining); answers come in sequence order.
//! - Queries (templates 301..=304: `QueryPosition`, `QueryAccount`, `QueryInstrument`,
//!   `QueryStateHash`) are answered by one report each (311..=314) with the query's
//!   `requestId`, or a `Reject` (e.g. `UnknownAccount`). Position, account and instrument reports
//!   come from the published views (never by stopping the state machine) and carry the `viewSeq`
//!   they are as of, and are answered at once (they may overtake the answers of commands sent
//!   before them); an unknown position or instrument is a report with `found = False`. The
//!   state hash travels through the pipeline as a barrier and is answered in order with the
//!   commands, after every event of the commands before it that the connection's subscriptions
//!   take: read up to its report, a member has all of those events.
//! - Event subscriptions, on the same connection: `Subscribe{requestId, accountId (0: all),
//!   kinds (bit k = event kind k as in crates/core; 0: all)}` is answered by
//!   `SubscriptionStatus{subscription = requestId, Subscribed}`; from then on the events that
//!   match come in batches: `SubscriptionStatus{Events, events = N}` followed by N SBE event
//!   frames (templates 101..=111). Because the reader registers the subscription before it
//!   reads the next frame, it sees the events of every command sent after it on the connection.
//!   A subscription that falls `subscriber_buffer` events behind (the member reads too slowly)
//!   ends with `SubscriptionStatus{Overflow}` after its last delivered event; one the engine ends
//!   at shutdown with `SubscriptionStatus{Closed}`. `Unsubscribe{subscription}` ends it early and
//!   is answered `SubscriptionStatus{Unsubscribed}` after its last event (also when it had
//!   already ended); closing the connection ends them all. A `Subscribe` whose `kinds` has an
//!   unknown bit is rejected `MalformedMessage`; one whose `requestId` names a live subscription
//!   of the connection, `InvalidId`.
//!
//! # Threads
//! Each connection has a reader thread (reads frames, answers queries from the views, submits
//! commands) and a writer thread (answers and event batches, with a write timeout). With
//! `threads.stages = "fused"` and `threads.combine`, the reader, right after submitting, steps
//! the pipeline itself when it is free and writes the answers with a non-blocking `send` when
//! the socket takes them at once: a ClearTrade -> Ack round trip then crosses no thread
//! hand-off. Whatever it cannot finish at once (the pipeline busy, a full socket, events) is
//! left to the pipeline thread and the writer thread as before. With `net.busy_poll_us`, the
//! reader polls its socket (non-blocking `recv`) that long before it blocks for the next
//! request, so it stays on its CPU with its caches warm between requests.
//!
//! # Robustness
//! - A message that does not decode is answered `Reject{MalformedMessage | UnknownTemplate |
//!   UnsupportedSchema}` (request id 0 when it cannot be read) and the connection goes on.
//! - A frame header that is not SOFH/SBE, or a length below 6 or above
//!   `FRAME_LEN_MAX`, cannot be resynchronised: `Reject{MalformedMessage}` with request id 0,
//!   then the connection is closed. Truncated frames wait for their bytes; memory per
//!   connection is bounded by one `FRAME_LEN_MAX` buffer.
//! - Back-pressure: each connection has `client_inflight_max` commands in flight at most; past
//!   that its reader stops reading the socket (TCP pushes back on the member). A member that
//!   stops reading its answers is disconnected after `net.write_timeout_ms`; it never blocks
//!   the engine or other connections.
//! - At most `net.connections_max` connections; more are closed at once. A connection that
//!   leaves a frame unfinished for `net.write_timeout_ms` is answered
//!   `Reject{MalformedMessage}` and closed; an idle one (between frames) stays open.
//! - Answers to queries and wire-level rejects go through the connection's writer; with
//!   `LOCAL_PENDING_MAX` of them queued the reader stops reading, as for a full command window.
//! - At most `net.subscriptions_per_connection` live subscriptions per connection and
//!   `net.subscriptions_max` in the engine; a `Subscribe` past either is answered
//!   `Reject{SubscriptionCapacity}` (each subscription may buffer `engine.subscriber_buffer`
//!   events).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use crate::counted::{self, CountedRx, CountedTx};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use novate_core::Reject;
use novate_ring::wait::{IDLE_DEEP_PARKS, PARK_IDLE_MAX};
use novate_ring::Waiter;
use novate_wire::convert::{
    encode_ack, encode_event, encode_reject, reject_code, reject_code_of_decode_error,
};
use novate_wire::frame::{write_frame, FRAME_LEN_MAX, SBE_LE_ENCODING, SOFH_LEN};
use novate_wire::query::{encode_report, Report, Request};
use novate_wire::{Message, RejectCode, SubscriptionState};

use crate::config::Config;
use crate::pipeline::{
    AnswerKind, Answers, ClientMaker, Engine, EngineError, EventFilter, SubStatus, SubStop,
    Submitter, Subscription,
};
use crate::views::Views;

/// A running daemon: the engine and its listener.
pub struct Server {
    engine: Option<Engine>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
    listener: Option<JoinHandle<()>>,
    workers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Connections being served.
    active: Arc<AtomicUsize>,
}

/// What a handle to a running server can do from another thread (signal handling).
#[derive(Clone)]
pub struct ServerHandle {
    stop: Arc<AtomicBool>,
}

impl ServerHandle {
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Server {
    /// Open the engine (recovering its data dir) and listen.
    pub fn start(cfg: &Config) -> Result<Server, EngineError> {
        let engine = Engine::open(cfg)?;
        let listener =
            TcpListener::bind(cfg.listen_addr().map_err(|e| EngineError::Config(e.to_string()))?)
                .map_err(EngineError::Io)?;
        listener.set_nonblocking(true).map_err(EngineError::Io)?;
        let addr = listener.local_addr().map_err(EngineError::Io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
        let workers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let active = Arc::new(AtomicUsize::new(0));
        let ctx = ConnCtx {
            maker: engine.client_maker(),
            views: engine.views().clone(),
            write_timeout: Duration::from_millis(cfg.net.write_timeout_ms),
            busy_poll: Duration::from_micros(cfg.net.busy_poll_us),
            active: active.clone(),
            subscriptions_per_connection: cfg.net.subscriptions_per_connection,
            subscriptions_max: cfg.net.subscriptions_max,
        };
        let max = cfg.net.connections_max;
        let (st, cs, ws, served) = (stop.clone(), conns.clone(), workers.clone(), active.clone());
        let listener_thread = thread::Builder::new()
            .name("novate-listener".into())
            .spawn(move || {
                let mut next_id = 0u64;
                while !st.load(Ordering::SeqCst) {
                    wait_readable(&listener, LISTEN_POLL);
                    match listener.accept() {
                        Ok(_) if st.load(Ordering::SeqCst) => break, // `shutdown`'s wake-up
                        Ok((sock, _)) => {
                            if active.load(Ordering::SeqCst) >= max {
                                drop(sock); // over connections_max: closed at once
                                continue;
                            }
                            active.fetch_add(1, Ordering::SeqCst);
                            let _ = sock.set_nonblocking(false);
                            let _ = sock.set_nodelay(true);
                            lock_send_buffer(&sock);
                            next_id += 1;
                            let id = next_id;
                            if let Ok(c) = sock.try_clone() {
                                if let Ok(mut v) = cs.lock() {
                                    v.insert(id, c);
                                }
                            }
                            let ctx = ctx.clone();
                            let registry = cs.clone();
                            let h = thread::Builder::new().name("novate-conn".into()).spawn(
                                move || {
                                    serve_conn(sock, ctx);
                                    // Close our last clone of the socket.
                                    if let Ok(mut v) = registry.lock() {
                                        v.remove(&id);
                                    }
                                },
                            );
                            match h {
                                Ok(h) => {
                                    if let Ok(mut w) = ws.lock() {
                                        w.retain(|h| !h.is_finished());
                                        w.push(h);
                                    }
                                }
                                Err(_) => {
                                    active.fetch_sub(1, Ordering::SeqCst);
                                }
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // E.g. out of file descriptors: try again later, not in a busy loop.
                        Err(_) => thread::sleep(LISTEN_POLL),
                    }
                }
            })
            .map_err(EngineError::Io)?;
        Ok(Server {
            engine: Some(engine),
            addr,
            stop,
            conns,
            listener: Some(listener_thread),
            workers,
            active: served,
        })
    }

    /// Connections being served now (accepted and not yet ended).
    pub fn connections(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine present until shutdown")
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle { stop: self.stop.clone() }
    }

    /// True once `ServerHandle::request_stop` was called.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Graceful shutdown: stop accepting, stop reading (every request already read is answered),
    /// then drain, commit and snapshot the engine.
    pub fn shutdown(mut self) -> crate::pipeline::ShutdownReport {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the listener from its wait (else it sees `stop` within LISTEN_POLL).
        let _ = TcpStream::connect_timeout(&self.addr, LISTEN_POLL);
        if let Some(l) = self.listener.take() {
            let _ = l.join();
        }
        if let Ok(v) = self.conns.lock() {
            for c in v.values() {
                let _ = c.shutdown(Shutdown::Read);
            }
        }
        let engine = self.engine.take().expect("engine present");
        // Connection threads end when their reader sees EOF and their answers are written.
        let handles: Vec<_> =
            self.workers.lock().map(|mut w| w.drain(..).collect()).unwrap_or_default();
        for h in handles {
            let _ = h.join();
        }
        engine.shutdown()
    }
}

/// Longest wait of the listener for a connection before it looks at the stop flag again.
const LISTEN_POLL: Duration = Duration::from_millis(50);

/// Wait until `listener` has a connection to accept, at most `timeout` (no busy loop: an idle
/// daemon's listener wakes 1 / `timeout` times a second).
fn wait_readable(listener: &TcpListener, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call; an error or EINTR just ends the
    // wait early (the caller's accept is non-blocking and it loops).
    unsafe {
        libc::poll(&mut fd, 1, ms);
    }
}

#[derive(Clone)]
struct ConnCtx {
    maker: ClientMaker,
    views: Arc<Views>,
    write_timeout: Duration,
    /// `net.busy_poll_us`.
    busy_poll: Duration,
    active: Arc<AtomicUsize>,
    /// `net.subscriptions_per_connection` and `net.subscriptions_max`.
    subscriptions_per_connection: usize,
    subscriptions_max: usize,
}

/// What the reader hands the writer besides the engine's answers.
enum Local {
    Bytes(Vec<u8>),
    /// A state-hash barrier: the answer to `internal` is the member's `request_id`'s report.
    HashQuery {
        internal: u64,
        request_id: u64,
    },
    /// An event subscription the writer now serves, named by the request id of its Subscribe.
    Subscribe {
        id: u64,
        sub: Box<Subscription>,
    },
    Unsubscribe {
        id: u64,
    },
    Close,
}

/// The reader's messages to the writer (counted, so the writer's every gather need not look
/// into the channel).
type LocalTx = CountedTx<Local>;
type LocalRx = CountedRx<Local>;

/// Events per batch frame of one subscription.
pub const EVENTS_PER_BATCH: usize = 4096;

/// Messages (answers to queries, rejects, subscription changes: ~200 bytes each at most) the
/// reader may queue for the writer; past it the reader stops reading the socket.
pub const LOCAL_PENDING_MAX: usize = 1024;

fn serve_conn(sock: TcpStream, ctx: ConnCtx) {
    let _guard = ActiveGuard(ctx.active.clone());
    let Ok(wsock) = sock.try_clone() else { return };
    let _ = wsock.set_write_timeout(Some(ctx.write_timeout));
    let (ltx, lrx) = counted::channel();
    let dead = Arc::new(AtomicBool::new(false));
    let (ctx_tx, ctx_rx) = mpsc::channel();
    let dead_w = dead.clone();
    let maker = ctx.maker.clone();
    let write_timeout = ctx.write_timeout;
    let writer = thread::Builder::new().name("novate-conn-w".into()).spawn(move || {
        // The writer receives the answers, so it registers itself as the one to wake; the
        // reader takes them itself after it stepped a fused pipeline (threads.combine).
        let (sub, answers) = maker.split(thread::current());
        let w = Arc::new(Mutex::new(Writer::new(wsock, answers, lrx, write_timeout)));
        let _ = ctx_tx.send((sub, w.clone()));
        write_loop(&w, &dead_w);
        dead_w.store(true, Ordering::SeqCst);
    });
    let Ok(writer) = writer else { return };
    let Ok((sub, w)) = ctx_rx.recv() else {
        let _ = writer.join();
        return;
    };
    let out = Deliver { writer: w, thread: writer.thread().clone(), stops: RefCell::default() };
    read_loop(sock.try_clone().ok(), &sub, &ctx, &ltx, &dead, &out);
    let _ = ltx.send(Local::Close);
    out.thread.unpark();
    let _ = writer.join();
    let _ = sock.shutdown(Shutdown::Both);
}

/// How the reader gets answers written: itself, when the writer is free (without blocking), or
/// by waking the writer thread.
struct Deliver {
    writer: Arc<Mutex<Writer>>,
    thread: thread::Thread,
    /// The reader's handles on the subscriptions it handed the writer, by request id: an
    /// `Unsubscribe` stops delivery at once, so that no event of a command read after it goes
    /// out, however late the writer takes the `Local::Unsubscribe`.
    stops: RefCell<Vec<(u64, SubStop)>>,
}

impl Deliver {
    /// After submitting: step a fused pipeline here if it is free, then write what is ready.
    fn after_submit(&self, sub: &Submitter) {
        sub.flush_combining();
        self.write_or_wake();
    }

    /// Write what is ready if the writer is free and the socket takes it all at once; otherwise
    /// leave it to the writer thread.
    fn write_or_wake(&self) {
        let done = match self.writer.try_lock() {
            Ok(mut w) => w.pass_nonblocking(),
            Err(_) => false,
        };
        if !done {
            self.thread.unpark();
        }
    }
}

/// Bytes of answers the kernel may hold for one connection. Fixed (setting it turns off the
/// kernel's send-buffer autotuning), so a member that stops reading fills it quickly and its
/// writes time out, instead of the kernel soaking up megabytes at a trickle.
pub const SEND_BUFFER_BYTES: libc::c_int = 256 * 1024;

fn lock_send_buffer(sock: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size = SEND_BUFFER_BYTES;
    // SAFETY: a valid socket fd and a pointer to a c_int of the given length.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn reject_frame(request_id: u64, code: RejectCode) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let n = write_frame(&mut buf, |b| encode_reject(b, request_id, code)).unwrap_or(0);
    buf[..n].to_vec()
}

/// Read frames and submit; returns when the peer closes, the stream breaks, or the writer died.
fn read_loop(
    sock: Option<TcpStream>,
    sub: &Submitter,
    ctx: &ConnCtx,
    local: &LocalTx,
    dead: &AtomicBool,
    out: &Deliver,
) {
    let Some(mut sock) = sock else { return };
    // A read returns at least every `write_timeout` without data: an idle connection goes on
    // waiting, one that left a frame unfinished that long is closed (it held a slot of
    // `connections_max` for nothing).
    let _ = sock.set_read_timeout(Some(ctx.write_timeout));
    let mut buf = vec![0u8; FRAME_LEN_MAX * 2];
    let (mut start, mut end) = (0usize, 0usize);
    let mut waiter = Waiter::new(sub.wait_strategy());
    loop {
        // Parse every complete frame in the buffer.
        loop {
            let avail = &buf[start..end];
            if avail.len() < SOFH_LEN {
                break;
            }
            let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
            let enc = u16::from_be_bytes([avail[4], avail[5]]);
            if enc != SBE_LE_ENCODING || !(SOFH_LEN..=FRAME_LEN_MAX).contains(&len) {
                let _ = local.send(Local::Bytes(reject_frame(0, RejectCode::MalformedMessage)));
                out.thread.unpark();
                return; // cannot resynchronise
            }
            if avail.len() < len {
                break;
            }
            let payload = &avail[SOFH_LEN..len];
            // Queries and rejects are answered through the writer: a member that sends them
            // and does not read is stopped here, like one whose command window is full.
            while local.pending() >= LOCAL_PENDING_MAX {
                out.after_submit(sub);
                if dead.load(Ordering::SeqCst) {
                    return;
                }
                waiter.wait();
            }
            waiter.reset();
            if !submit_frame(payload, ctx, sub, local, dead, out, &mut waiter) {
                return;
            }
            start += len;
        }
        out.after_submit(sub);
        if start == end {
            start = 0;
            end = 0;
        } else if start > 0 {
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
        }
        if dead.load(Ordering::SeqCst) {
            return;
        }
        match read_polling(&mut sock, &mut buf[end..], ctx.busy_poll) {
            Ok(0) => return,
            Ok(n) => end += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if end > 0 {
                    // Part of a frame, and nothing more for a whole timeout.
                    let _ = local.send(Local::Bytes(reject_frame(0, RejectCode::MalformedMessage)));
                    out.thread.unpark();
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// The request id to answer a frame that does not decode with: the first field of every
/// request's block (bytes 8..16, after the 8-byte message header), or 0 when the header says
/// the block is shorter than that, or for a `ClearTradeBatch`, whose root block is empty (bytes
/// 8..16 are its group header and half of an entry: no id of the member's).
fn rid_guess(payload: &[u8]) -> u64 {
    let u16_at =
        |at: usize| payload.get(at..at + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
    let (block_len, template) = (u16_at(0), u16_at(2));
    if block_len < 8 || template == novate_wire::ClearTradeBatchDecoder::TEMPLATE_ID {
        return 0;
    }
    payload.get(8..16).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
}

/// Submit the commands of one SBE frame (or answer its query); false if the connection must
/// end.
fn submit_frame(
    payload: &[u8],
    ctx: &ConnCtx,
    sub: &Submitter,
    local: &LocalTx,
    dead: &AtomicBool,
    out: &Deliver,
    waiter: &mut Waiter,
) -> bool {
    let rid_guess = rid_guess(payload);
    let msg = match novate_wire::decode_exact(payload) {
        Ok(m) => m,
        Err(e) => {
            let _ =
                local.send(Local::Bytes(reject_frame(rid_guess, reject_code_of_decode_error(&e))));
            return true;
        }
    };
    let mut submit = |rid: u64, cmd| -> bool {
        loop {
            match sub.try_submit(rid, cmd) {
                Ok(()) => {
                    waiter.reset();
                    return true;
                }
                Err(crate::pipeline::SubmitError::Busy) => {
                    // Window full: stop reading until answers are written (TCP back-pressure).
                    out.after_submit(sub);
                    if dead.load(Ordering::SeqCst) {
                        return false;
                    }
                    waiter.wait();
                }
                Err(crate::pipeline::SubmitError::Closed) => return false,
            }
        }
    };
    match &msg {
        Message::ClearTradeBatch(b) => {
            for (rid, cmd) in b.commands() {
                if !submit(rid, cmd) {
                    return false;
                }
            }
            true
        }
        m => match (m.command(), m.request()) {
            (Some((rid, cmd)), _) => submit(rid, cmd),
            (None, Some(r)) => request(r, ctx, sub, local, out),
            (None, None) => {
                // An event or an answer sent to the engine: not a command.
                let _ =
                    local.send(Local::Bytes(reject_frame(rid_guess, RejectCode::UnknownTemplate)));
                true
            }
        },
    }
}

/// Append one framed report to `out`.
fn put_report(out: &mut Vec<u8>, r: &Report) {
    let mut buf = [0u8; REPORT_FRAME_MAX];
    let n = write_frame(&mut buf, |b| encode_report(b, r)).unwrap_or(0);
    debug_assert!(n > 0, "a report fits in REPORT_FRAME_MAX");
    out.extend_from_slice(&buf[..n]);
}

/// The largest framed report (AccountReport: 6 + 8 + 181 bytes).
const REPORT_FRAME_MAX: usize = 256;

/// Answer a query from the views, or hand a state-hash barrier or a subscription change to
/// the pipeline and the writer (which answer it in order). False if the engine has closed.
fn request(r: Request, ctx: &ConnCtx, sub: &Submitter, local: &LocalTx, out: &Deliver) -> bool {
    let views: &Views = &ctx.views;
    let view_seq = views.seq();
    let report = match r {
        Request::Position { request_id, account, instrument } => {
            let p = views.position(account, instrument);
            let view_seq = p.as_ref().map_or(view_seq, |p| p.seq);
            Report::Position { request_id, view_seq, position: p.map(|p| p.value) }
        }
        Request::Account { request_id, account } => match views.account(account) {
            Ok(p) => Report::Account { request_id, view_seq: p.seq, account: p.value },
            Err(reason) => {
                let _ = local.send(Local::Bytes(reject_frame(request_id, reject_code(reason))));
                return true;
            }
        },
        Request::Instrument { request_id, instrument } => {
            let p = views.instrument(instrument);
            let view_seq = p.as_ref().map_or(view_seq, |p| p.seq);
            Report::Instrument { request_id, view_seq, instrument: p.map(|p| p.value) }
        }
        Request::StateHash { request_id } => return hash_barrier(request_id, sub, local, out),
        Request::Subscribe { request_id, account, kinds } => {
            if u32::from(kinds) >= 1 << EVENT_KINDS {
                let frame = reject_frame(request_id, RejectCode::MalformedMessage);
                let _ = local.send(Local::Bytes(frame));
            } else {
                let mut stops = out.stops.borrow_mut();
                stops.retain(|(_, st)| !st.is_closed());
                if stops.len() >= ctx.subscriptions_per_connection
                    || ctx.maker.live_subscriptions() >= ctx.subscriptions_max
                {
                    let frame = reject_frame(request_id, RejectCode::SubscriptionCapacity);
                    let _ = local.send(Local::Bytes(frame));
                    return true;
                }
                let account = (account != 0).then_some(account);
                let s = ctx.maker.subscribe(EventFilter { kinds, account });
                stops.push((request_id, s.stopper()));
                let _ = local.send(Local::Subscribe { id: request_id, sub: Box::new(s) });
            }
            return true;
        }
        Request::Unsubscribe { subscription, .. } => {
            // (A Subscribe refused for a taken id left its handle here too: stopping it as
            // well is harmless, it was dropped.)
            out.stops.borrow_mut().retain(|(id, st)| {
                if *id == subscription {
                    st.stop();
                }
                *id != subscription
            });
            let _ = local.send(Local::Unsubscribe { id: subscription });
            return true;
        }
    };
    let mut frame = Vec::with_capacity(REPORT_FRAME_MAX);
    put_report(&mut frame, &report);
    let _ = local.send(Local::Bytes(frame));
    true
}

/// Submit a state-hash barrier; the writer answers it with a `StateHashReport` in order with
/// the commands.
fn hash_barrier(request_id: u64, sub: &Submitter, local: &LocalTx, out: &Deliver) -> bool {
    // Barrier ids live in their own space (top bit set), apart from the member's command ids.
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let internal = (1u64 << 63) | NEXT.fetch_add(1, Ordering::Relaxed) as u64;
    // The Local must reach the writer before the answer can: send first, then submit.
    let _ = local.send(Local::HashQuery { internal, request_id });
    let mut w = Waiter::new(sub.wait_strategy());
    loop {
        match sub.try_state_hash(internal) {
            Ok(()) => return true,
            Err(crate::pipeline::SubmitError::Busy) => {
                out.after_submit(sub);
                w.wait();
            }
            Err(_) => return false,
        }
    }
}

/// Write answers (batched per syscall) until the reader is done and nothing is in flight.
/// `write_all`, but the whole buffer must go within `timeout` (a socket write timeout alone
/// restarts with every partial write, so a peer that reads a trickle would never be cut off).
/// Watches answers that sit in the kernel's send buffer: a member that reads nothing while it
/// sends nothing either never makes a write block, so the write timeout alone would not notice.
#[derive(Default)]
struct Stall {
    /// Something was written since the send queue was last seen empty.
    watching: bool,
    /// Bytes in the send queue at the last look, and since when it has not gone down.
    queued: usize,
    since: Option<Instant>,
}

impl Stall {
    fn wrote(&mut self) {
        // New bytes: start measuring again from now.
        *self = Stall { watching: true, queued: 0, since: None };
    }

    /// True once the send queue has not gone down for `timeout` (checked while idle).
    fn stalled(&mut self, sock: &TcpStream, timeout: Duration) -> bool {
        if !self.watching {
            return false;
        }
        let Some(queued) = send_queue_bytes(sock) else { return false };
        let now = Instant::now();
        if queued == 0 {
            self.watching = false;
            return false;
        }
        match self.since {
            Some(since) if queued >= self.queued => now.duration_since(since) >= timeout,
            _ => {
                // First look, or the member took some bytes: measure from here.
                (self.queued, self.since) = (queued, Some(now));
                false
            }
        }
    }
}

/// Bytes the kernel still holds to send on `sock` (unsent or unacknowledged), if it says.
fn send_queue_bytes(sock: &TcpStream) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ for a TCP socket) writes one c_int through the pointer, which
    // points to a live c_int; the fd is the open socket `sock` owns.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    (r == 0).then(|| usize::try_from(n).ok()).flatten()
}

fn write_all_within(sock: &mut TcpStream, mut buf: &[u8], timeout: Duration) -> io::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        sock.set_write_timeout(Some(left))?;
        match sock.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The writer's own state besides the socket: pending hash barriers, live subscriptions, and
/// the bytes to write next.
struct Outbox {
    out: Vec<u8>,
    /// (internal barrier id, the member's request id).
    hash_queries: Vec<(u64, u64)>,
    subs: Vec<(u64, Box<Subscription>)>,
    reader_done: bool,
}

impl Outbox {
    /// Move each subscription's events into the outbox, in batches (a status `Events` with the
    /// count, then the SBE event frames; at most `EVENTS_PER_BATCH` a batch), then its end if
    /// it overflowed or the engine closed it (dropping it). One batch each, or with `all`
    /// every event it holds now (not those that come meanwhile: the loop is bounded).
    /// `events` is scratch. True if anything came.
    fn take_events(&mut self, events: &mut Vec<u8>, all: bool) -> bool {
        let mut progressed = false;
        let mut event_frame = [0u8; 256];
        let mut subs = std::mem::take(&mut self.subs);
        subs.retain_mut(|(id, sub)| {
            let mut left = if all { sub.available() } else { EVENTS_PER_BATCH };
            loop {
                events.clear();
                let mut count = 0u32;
                let max = left.clamp(1, EVENTS_PER_BATCH);
                let (read, status) = sub.poll(max, |seq, e| {
                    let n = write_frame(&mut event_frame, |b| encode_event(b, seq, e)).unwrap_or(0);
                    if n > 0 {
                        events.extend_from_slice(&event_frame[..n]);
                        count += 1;
                    }
                });
                if count > 0 {
                    progressed = true;
                    self.status(*id, SubscriptionState::Events, count);
                    self.out.extend_from_slice(events);
                }
                left = left.saturating_sub(read);
                let end = match status {
                    SubStatus::Open if left > 0 && read == max => continue,
                    SubStatus::Open => return true,
                    SubStatus::Overflowed => SubscriptionState::Overflow,
                    SubStatus::Closed => SubscriptionState::Closed,
                };
                progressed = true;
                self.status(*id, end, 0);
                return false;
            }
        });
        self.subs = subs;
        progressed
    }

    fn report(&mut self, r: &Report) {
        put_report(&mut self.out, r);
    }

    fn status(&mut self, subscription: u64, state: SubscriptionState, events: u32) {
        self.report(&Report::Subscription { subscription, state, events });
    }

    /// Take one message from the reader; `writer` is the thread that egress wakes for events.
    fn take(&mut self, l: Local, writer: &thread::Thread) {
        match l {
            Local::Bytes(b) => self.out.extend_from_slice(&b),
            Local::HashQuery { internal, request_id } => {
                self.hash_queries.push((internal, request_id))
            }
            Local::Subscribe { id, sub } => {
                if self.subs.iter().any(|(i, _)| *i == id) {
                    // Its name is taken by a live subscription of this connection.
                    let mut frame = [0u8; 64];
                    let n =
                        write_frame(&mut frame, |b| encode_reject(b, id, RejectCode::InvalidId))
                            .unwrap_or(0);
                    self.out.extend_from_slice(&frame[..n]);
                    return;
                }
                // Egress wakes the writer thread when events arrive.
                sub.set_waker(Some(writer.clone()));
                self.subs.push((id, sub));
                self.status(id, SubscriptionState::Subscribed, 0);
            }
            Local::Unsubscribe { id } => {
                // Idempotent: it may have ended already (overflow, or an earlier Unsubscribe).
                self.subs.retain(|(i, _)| *i != id);
                self.status(id, SubscriptionState::Unsubscribed, 0);
            }
            Local::Close => self.reader_done = true,
        }
    }
}

/// A connection's writer state: the answers, the reader's messages, the subscriptions and the
/// bytes not yet written. Behind a lock: the writer thread runs it, and so does the reader
/// (without blocking) right after it submitted.
struct Writer {
    sock: TcpStream,
    answers: Answers,
    local: LocalRx,
    o: Outbox,
    /// The thread egress wakes: the writer thread.
    thread: thread::Thread,
    timeout: Duration,
    stall: Stall,
    /// The journal failed: write what is there and end the connection.
    unavailable: bool,
    events: Vec<u8>,
}

impl Writer {
    /// Made on the writer thread (the one egress wakes).
    fn new(sock: TcpStream, answers: Answers, local: LocalRx, timeout: Duration) -> Writer {
        Writer {
            sock,
            answers,
            local,
            o: Outbox {
                out: Vec::with_capacity(64 * 1024),
                hash_queries: Vec::new(),
                subs: Vec::new(),
                reader_done: false,
            },
            thread: thread::current(),
            timeout,
            stall: Stall::default(),
            unavailable: false,
            events: Vec::with_capacity(64 * 1024),
        }
    }

    /// Move the reader's messages, the answers and the subscriptions' events (a status
    /// `Events` with the count and then the SBE event frames, per subscription; then its end
    /// if it overflowed or the engine closed it) into the outbox. True if anything came.
    fn gather(&mut self) -> bool {
        let mut progressed = false;
        let o = &mut self.o;
        // Past GATHER_OUT_MAX unwritten bytes the reader's messages stay in the channel, where
        // the reader counts them (`LOCAL_PENDING_MAX`) and stops reading the socket.
        while o.out.len() < GATHER_OUT_MAX {
            let Some(l) = self.local.try_take() else { break };
            progressed = true;
            o.take(l, &self.thread);
        }
        let mut frame = [0u8; 64];
        while let Some(a) = self.answers.poll() {
            progressed = true;
            let n = match a.kind {
                AnswerKind::Ack { seq, ts } => {
                    write_frame(&mut frame, |b| encode_ack(b, a.request_id, seq, ts)).unwrap_or(0)
                }
                AnswerKind::Reject { reason, .. } => {
                    write_frame(&mut frame, |b| encode_reject(b, a.request_id, reject_code(reason)))
                        .unwrap_or(0)
                }
                AnswerKind::Hash { seq, hash } => {
                    // Its query was sent before the barrier; it may not have been taken yet.
                    if !o.hash_queries.iter().any(|(r, _)| *r == a.request_id) {
                        while let Some(l) = self.local.take_now() {
                            o.take(l, &self.thread);
                        }
                    }
                    if let Some(k) = o.hash_queries.iter().position(|(r, _)| *r == a.request_id) {
                        let (_, request_id) = o.hash_queries.swap_remove(k);
                        // The events of the commands before the query were handed to the
                        // subscriptions before this answer: they go out first, so the answer
                        // follows every event of the commands it covers on this connection.
                        progressed |= o.take_events(&mut self.events, true);
                        o.report(&Report::StateHash { request_id, seq, hash });
                    }
                    0
                }
                AnswerKind::Snapshot { .. } => 0,
                AnswerKind::Unavailable => {
                    // The journal failed: nothing more can be acknowledged on this connection.
                    self.unavailable = true;
                    return true;
                }
            };
            o.out.extend_from_slice(&frame[..n]);
            if o.out.len() > 60 * 1024 {
                break;
            }
        }
        progressed | o.take_events(&mut self.events, false)
    }

    /// The reader's turn: gather and write as much as the socket takes without blocking. True
    /// if everything went out; false leaves the rest (and any ending) to the writer thread.
    fn pass_nonblocking(&mut self) -> bool {
        // A gather stops at ~60 KB of answers: a few rounds, then the writer thread goes on.
        for _ in 0..READER_PASS_ROUNDS {
            let got = self.gather();
            if self.unavailable || self.o.reader_done {
                return false;
            }
            while !self.o.out.is_empty() {
                match send_nonblocking(&self.sock, &self.o.out) {
                    Ok(n) if n > 0 => {
                        self.o.out.drain(..n);
                        self.stall.wrote();
                    }
                    _ => return false, // would block, or broken: the writer thread handles it
                }
            }
            if !got {
                return true;
            }
        }
        false
    }
}

/// Unwritten bytes past which a gather takes no more of the reader's messages.
const GATHER_OUT_MAX: usize = 256 * 1024;

/// Gather-and-write rounds of one reader pass before it leaves the rest to the writer thread.
const READER_PASS_ROUNDS: usize = 4;

/// Read into `buf` (`Ok(0)`: end of stream), first polling the socket without blocking for up
/// to `poll` (`net.busy_poll_us`; zero: block at once).
fn read_polling(sock: &mut TcpStream, buf: &mut [u8], poll: Duration) -> io::Result<usize> {
    if !poll.is_zero() {
        let start = Instant::now();
        loop {
            match recv_nonblocking(sock, buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                done => return done,
            }
            if start.elapsed() >= poll {
                break;
            }
            std::hint::spin_loop();
        }
    }
    sock.read(buf)
}

/// One `recv` that never blocks: the bytes read (`Ok(0)`: end of stream), or `WouldBlock`.
fn recv_nonblocking(sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is the open socket `sock` owns; the pointer and length describe `buf`,
    // which the kernel writes at most `buf.len()` bytes of during the call.
    let n = unsafe {
        libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// One `send` that never blocks (and never raises SIGPIPE); the bytes the kernel took.
fn send_nonblocking(sock: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is the open socket `sock` owns; the pointer and length describe `buf`,
    // which the kernel only reads during the call.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// The writer thread: write answers (batched per syscall) until the reader is done and nothing
/// is in flight; cut off a member that does not read.
fn write_loop(w: &Mutex<Writer>, dead: &AtomicBool) {
    // Idle parks in a row (1 ms each): after IDLE_DEEP_PARKS with nothing to watch, longer.
    let mut idle = 0u32;
    loop {
        let Ok(mut guard) = w.lock() else { return };
        let w = &mut *guard;
        let progressed = w.gather();
        if w.unavailable {
            let _ = w.sock.write_all(&w.o.out);
            return;
        }
        if !w.o.out.is_empty() {
            if write_all_within(&mut w.sock, &w.o.out, w.timeout).is_err() {
                // Timed out (the member does not read) or gone: drop the connection.
                dead.store(true, Ordering::SeqCst);
                let _ = w.sock.shutdown(Shutdown::Both);
                return;
            }
            w.o.out.clear();
            w.stall.wrote();
        }
        if w.o.reader_done && w.answers.inflight() == 0 {
            return;
        }
        if !progressed && w.stall.stalled(&w.sock, w.timeout) {
            // Our writes fit in the send buffer, but the member has taken none of it for
            // `timeout`: it does not read. Drop it as a blocked write would.
            dead.store(true, Ordering::SeqCst);
            let _ = w.sock.shutdown(Shutdown::Both);
            return;
        }
        // Answers in the kernel's send queue are watched for a stall every WRITER_IDLE; with
        // none, the park only guards against a missed wake-up, and long idle parks longer.
        let watching = w.stall.watching;
        drop(guard);
        if progressed {
            idle = 0;
        } else {
            // No spinning: whoever gives this thread work unparks it (egress for answers routed
            // on another thread and for events, the reader for what it could not write, and
            // at its end), and the reader writes most answers itself.
            let deep = !watching && idle >= IDLE_DEEP_PARKS;
            thread::park_timeout(if deep { PARK_IDLE_MAX } else { WRITER_IDLE });
            idle = idle.saturating_add(1);
        }
    }
}

/// Longest sleep of an idle writer thread (between two looks at a stalled member), until it
/// has been idle for `IDLE_DEEP_PARKS` of them with nothing in the send queue to watch.
const WRITER_IDLE: Duration = Duration::from_millis(1);

/// Event kinds (bits of a subscription filter).
const EVENT_KINDS: u32 = 11;

/// A reject for a core rejection, as the wire carries it (for tests and tools).
pub fn wire_code(r: Reject) -> RejectCode {
    reject_code(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connected pair whose server side times out a blocking read after 20 ms.
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        server.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        (client, server)
    }

    #[test]
    fn a_polling_read_takes_bytes_that_arrive_while_it_polls() {
        for poll_ms in [0u64, 2_000] {
            let (mut client, mut server) = pair();
            let (read_done, wait_read) = mpsc::channel::<()>();
            let sender = thread::spawn(move || {
                if poll_ms == 0 {
                    let _ = wait_read.recv(); // only after the read gave up
                } else {
                    thread::sleep(Duration::from_millis(200));
                }
                client.write_all(b"frame").unwrap();
                client // keep the connection open until joined
            });
            let mut buf = [0u8; 16];
            let got = read_polling(&mut server, &mut buf, Duration::from_millis(poll_ms));
            let _ = read_done.send(());
            if poll_ms == 0 {
                // Blocking at once: the 20 ms read timeout fires before the bytes come.
                let e = got.unwrap_err();
                assert!(matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
            } else {
                // Polling for up to 2 s: the bytes that came after 200 ms are read by the poll
                // (a blocking read would have timed out after 20 ms).
                assert_eq!(&buf[..got.unwrap()], b"frame");
            }
            drop(sender.join().unwrap());
        }
    }

    #[test]
    fn a_polling_read_sees_the_end_of_the_stream_and_blocks_after_its_time() {
        let (client, mut server) = pair();
        drop(client);
        let mut buf = [0u8; 16];
        assert_eq!(read_polling(&mut server, &mut buf, Duration::from_millis(500)).unwrap(), 0);
        // Nothing arrives: after polling 5 ms the read blocks and times out (20 ms), no sooner.
        let (_client, mut server) = pair();
        let t = Instant::now();
        assert!(read_polling(&mut server, &mut buf, Duration::from_millis(5)).is_err());
        assert!(t.elapsed() >= Duration::from_millis(20), "{:?}", t.elapsed());
    }
}
