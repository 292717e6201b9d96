//! novate-bindings: the napi-rs layer of the SDK. Argument conversion and handle lifetimes only;
//! everything else lives in crates/engine. Commands cross as SBE bytes (the TS side encodes them
//! with the generated codecs in ts/src/wire), so one entry point serves every command and the
//! batch path is one call for many commands. Rejections cross as numbers: `call` returns the
//! seq of an Ack (> 0) or minus the reject code (< 0); queries throw `NOVATE_REJECT:<code>`
//! errors that ts/src/errors.ts turns into `NovateError`.
//!
//! Commands never block the JS thread: `submit`/`submitBatch`/`requestHash` hand the work to
//! an [`AsyncClient`] (crates/engine) under a caller-chosen ticket and return; its completion
//! thread delivers completions (numbers, see `encode_completion`) in batches, in log order, through a threadsafe function
//! (the `onComplete` callback of `open`). That function does not keep Node alive unless the SDK
//! says work is in flight (`keepAlive`). The one exception to "hand over and return": with a
//! fused pipeline and `threads.combine`, `submit(..., now = true)` from an idle client steps
//! the pipeline on the JS thread (two steps at most, never a waiting journal commit) and
//! returns what completed, so an awaited call costs no thread hand-off.

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi::threadsafe_function::{
    ThreadsafeFunction, ThreadsafeFunctionCallMode, UnknownReturnValue,
};
use napi_derive::napi;
use novate_core::{AccountView, Command, PositionView, Reject};
use novate_engine::{
    AsyncClient, CallError, Client, Config, Engine, EventFilter, Outcome, SubStatus, SubmitError,
    Subscription, Ticket, Work,
};
use novate_wire::Message;

/// The `onComplete` callback of `open` (spelled out there for the generated types): called on the JS thread with completions in log order. Weak (not
/// keeping the event loop alive) until `keepAlive(true)`; not callee-handled (no error argument).
type OnComplete =
    ThreadsafeFunction<Float64Array, UnknownReturnValue, Float64Array, Status, false, true>;

fn err(msg: impl std::fmt::Display) -> Error {
    Error::new(Status::GenericFailure, msg.to_string())
}

fn reject(r: Reject) -> Error {
    Error::new(Status::GenericFailure, format!("NOVATE_REJECT:{}:{}", r.code(), r.name()))
}

fn u64_of(b: &BigInt, what: &str) -> Result<u64> {
    let (signed, v, lossless) = b.get_u64();
    if signed || !lossless {
        return Err(err(format!("NOVATE_RANGE:{what} must fit an unsigned 64-bit integer")));
    }
    Ok(v)
}

fn big(v: i128) -> BigInt {
    BigInt::from(v)
}

/// Decode one SBE message into the commands it carries.
/// Bytes of one trade's entry in a `ClearTradeBatch` (its fields and request id).
/// `submit_batch` reserves room for `bytes / ENCODED_TRADE_MIN` commands up front (`batch_vec`:
/// the last finished batch's vector, or one advised for huge pages): exact for a batch of
/// trades, so decoding a million of them grows nothing (smaller single-command messages just
/// grow it).
const ENCODED_TRADE_MIN: usize = 56;

fn commands_of(msg: &[u8], out: &mut Vec<Command>) -> Result<usize> {
    let m = novate_wire::decode_message(msg).map_err(|e| err(format!("NOVATE_DECODE:{e}")))?;
    match &m {
        Message::ClearTradeBatch(b) => out.extend(b.commands().map(|(_, c)| c)),
        _ => out.push(m.command().ok_or_else(|| err("NOVATE_DECODE:not a command message"))?.1),
    }
    Ok(m.encoded_len())
}

/// An in-process engine, the blocking client of the `*Sync` calls and the non-blocking client
/// of the promise-returning ones. Field order is drop order: the engine shuts down (answering
/// everything accepted) before the async client finishes.
#[napi]
pub struct NativeEngine {
    engine: Option<Engine>,
    client: Option<Client>,
    async_client: Option<AsyncClient>,
    on_complete: Option<Arc<Mutex<OnComplete>>>,
    cmds: Vec<Command>,
}

/// Completions cross to JS as numbers, back to back in one `Float64Array` (no object per
/// completion): `ticket, kind, ...` where kind and what follows are
/// - `0` ACK: `seq`; `1` REJECT: `seq, code`; `3` SNAPSHOT: `seq`;
/// - `2` HASH: `seq, hi, lo` (the u64 hash as two 32-bit halves);
/// - `4` BATCH: `accepted, rejected, last_seq, unavailable, n, (index, code) * n`;
/// - `5` FAILED: `0` closed, `1` busy, `2` timeout, `3` journal unavailable.
///
/// ts/src/engine.ts (`complete`) reads it. Seqs and tickets stay below 2^53.
/// Completions as the `on_complete` callback (and `submit(..., now)`) hand them to JS.
fn completions_array(done: Vec<(Ticket, Outcome)>) -> Float64Array {
    let mut nums = Vec::with_capacity(done.len() * 3);
    for (t, o) in done {
        encode_completion(&mut nums, t, o);
    }
    Float64Array::new(nums)
}

fn encode_completion(out: &mut Vec<f64>, ticket: Ticket, o: Outcome) {
    out.push(ticket as f64);
    match o {
        Outcome::Ack { seq } => out.extend([0.0, seq as f64]),
        Outcome::Rejected { seq, reason } => {
            out.extend([1.0, seq as f64, f64::from(reason.code())])
        }
        Outcome::Hash { seq, hash } => {
            out.extend([2.0, seq as f64, (hash >> 32) as f64, (hash & 0xffff_ffff) as f64])
        }
        Outcome::Snapshot { seq } => out.extend([3.0, seq as f64]),
        Outcome::Batch(b) => {
            out.extend([
                4.0,
                f64::from(b.accepted),
                f64::from(b.rejected),
                b.last_seq as f64,
                f64::from(b.unavailable),
                b.rejects.len() as f64,
            ]);
            for (i, r) in b.rejects {
                out.extend([f64::from(i), f64::from(r.code())]);
            }
        }
        Outcome::Failed(e) => {
            let why = match e {
                CallError::Submit(SubmitError::Closed) | CallError::Rejected(_) => 0.0,
                CallError::Submit(SubmitError::Busy) => 1.0,
                CallError::Timeout => 2.0,
                CallError::Unavailable => 3.0,
            };
            out.extend([5.0, why]);
        }
    }
}

/// A position as queries see it (money and quantities as bigint).
#[napi(object)]
pub struct NativePosition {
    pub account: BigInt,
    pub instrument: u32,
    pub qty: BigInt,
    pub cost: BigInt,
    pub realized: BigInt,
    pub unrealized: BigInt,
    pub avg_price: Option<BigInt>,
    pub seq: f64,
}

/// An account summary as queries see it.
#[napi(object)]
pub struct NativeAccount {
    pub id: BigInt,
    pub max_position: BigInt,
    pub max_notional: BigInt,
    pub max_loss: BigInt,
    pub suspended: bool,
    pub collateral: BigInt,
    pub notional: BigInt,
    pub unrealized: BigInt,
    pub realized: BigInt,
    pub equity: BigInt,
    pub margin: BigInt,
    pub excess: BigInt,
    pub positions: u32,
    pub seq: f64,
}

/// An instrument as queries see it.
#[napi(object)]
pub struct NativeInstrument {
    pub id: u32,
    pub multiplier: BigInt,
    pub margin_bps: BigInt,
    pub settle_days: u32,
    pub mark: BigInt,
    pub last_price: BigInt,
    pub holders: u32,
    pub seq: f64,
}

/// What a batch submission got.
#[napi(object)]
pub struct NativeBatchResult {
    pub accepted: u32,
    pub rejected: u32,
    pub last_seq: f64,
    /// Pairs (index in the batch, reject code), in batch order.
    pub rejects: Vec<u32>,
}

/// The state hash and the seq it covers.
#[napi(object)]
pub struct NativeHash {
    pub seq: f64,
    pub hash: BigInt,
}

fn position_js(v: &PositionView, seq: u64) -> NativePosition {
    NativePosition {
        account: BigInt::from(v.account),
        instrument: v.instrument,
        qty: BigInt::from(v.qty),
        cost: big(v.cost),
        realized: big(v.realized),
        unrealized: big(v.unrealized),
        avg_price: v.avg_price.map(BigInt::from),
        seq: seq as f64,
    }
}

fn account_js(v: &AccountView, seq: u64) -> NativeAccount {
    NativeAccount {
        id: BigInt::from(v.spec.id),
        max_position: BigInt::from(v.spec.max_position),
        max_notional: big(v.spec.max_notional),
        max_loss: big(v.spec.max_loss),
        suspended: v.spec.suspended,
        collateral: big(v.collateral),
        notional: big(v.totals.notional),
        unrealized: big(v.totals.unrealized),
        realized: big(v.totals.realized),
        equity: big(v.equity),
        margin: big(v.margin),
        excess: big(v.excess),
        positions: v.positions,
        seq: seq as f64,
    }
}

fn call_error(e: CallError) -> Error {
    match e {
        CallError::Rejected(r) => reject(r),
        CallError::Submit(SubmitError::Busy) => err("NOVATE_BUSY:the engine is busy"),
        CallError::Submit(SubmitError::Closed) => err("NOVATE_CLOSED:the engine is closed"),
        CallError::Timeout => err("NOVATE_TIMEOUT:no answer within the timeout"),
        CallError::Unavailable => err("NOVATE_UNAVAILABLE:the journal failed"),
    }
}

#[napi]
impl NativeEngine {
    /// Start an in-process engine from TOML configuration text (docs/CONFIG.md). Completions of
    /// `submit`, `submitBatch` and `requestHash` go to `on_complete`, in log order.
    #[napi(factory)]
    pub fn open(
        config_toml: String,
        on_complete: ThreadsafeFunction<
            Float64Array,
            UnknownReturnValue,
            Float64Array,
            Status,
            false,
            true,
        >,
    ) -> Result<NativeEngine> {
        let cfg = Config::from_toml(&config_toml)
            .map_err(|e| err(format!("NOVATE_CONFIG:{}:{}", e.key, e.reason)))?;
        let engine = Engine::open(&cfg).map_err(|e| err(format!("NOVATE_CONFIG::{e}")))?;
        let client = engine.client();
        let on_complete = Arc::new(Mutex::new(on_complete));
        let tsfn = on_complete.clone();
        let async_client = AsyncClient::start(
            &engine.client_maker(),
            Box::new(move |done| {
                let batch = completions_array(done);
                if let Ok(f) = tsfn.lock() {
                    // NonBlocking on an unbounded queue: never waits. If Node is tearing the
                    // function down (napi_closing) there is nobody left to tell.
                    let _ = f.call(batch, ThreadsafeFunctionCallMode::NonBlocking);
                }
            }),
        )
        .map_err(|e| err(format!("NOVATE_CONFIG::cannot start the completion thread: {e}")))?;
        Ok(NativeEngine {
            engine: Some(engine),
            client: Some(client),
            async_client: Some(async_client),
            on_complete: Some(on_complete),
            cmds: Vec::new(),
        })
    }

    fn async_client(&self) -> Result<&AsyncClient> {
        self.async_client.as_ref().ok_or_else(|| err("NOVATE_CLOSED:the engine is closed"))
    }

    /// Decode the SBE command messages in `messages` (back to back) and submit each as its own
    /// piece of work, with tickets `first_ticket`, `first_ticket + 1`, ... (a ClearTradeBatch
    /// message is one piece of work: a batch); returns at once. A malformed message throws
    /// `NOVATE_DECODE` and nothing is submitted; a closed engine throws `NOVATE_CLOSED`.
    /// With `now` (the caller has no earlier completion still to receive) and a fused pipeline
    /// with `threads.combine`, the pipeline may be stepped here (two steps at most): the
    /// completions ready then are returned (encoded as for `on_complete`) instead of delivered
    /// later; `null` if none.
    #[napi]
    pub fn submit(
        &mut self,
        first_ticket: f64,
        messages: Uint8Array,
        now: bool,
    ) -> Result<Option<Float64Array>> {
        let client = self.async_client()?;
        let bytes: &[u8] = &messages;
        let mut work = Vec::new();
        let mut cmds = Vec::with_capacity(1);
        let mut off = 0;
        let mut ticket = first_ticket as Ticket;
        while off < bytes.len() {
            cmds.clear();
            match commands_of(&bytes[off..], &mut cmds) {
                Ok(n) => off += n,
                Err(e) => return Err(err(format!("{} (message at byte {off})", e.reason))),
            }
            let w = match cmds.as_slice() {
                [one] => Work::Command(*one),
                _ => Work::Batch(std::mem::take(&mut cmds)),
            };
            work.push((ticket, w));
            ticket += 1;
        }
        if !now {
            client.submit_all(work);
            return Ok(None);
        }
        let done = client.submit_all_now(work);
        if done.is_empty() {
            return Ok(None);
        }
        Ok(Some(completions_array(done)))
    }

    /// Decode every SBE message in `messages` (back to back: single commands and
    /// ClearTradeBatch) and submit them as one batch under `ticket`; returns at once, the batch
    /// completes with one `NativeBatchResult`.
    #[napi]
    pub fn submit_batch(&mut self, ticket: f64, messages: Uint8Array) -> Result<()> {
        let client = self.async_client()?;
        let bytes: &[u8] = &messages;
        // The vector of the last batch that finished, if large enough: already mapped.
        let mut cmds = novate_engine::completion::batch_vec(bytes.len() / ENCODED_TRADE_MIN);
        let mut off = 0;
        while off < bytes.len() {
            match commands_of(&bytes[off..], &mut cmds) {
                Ok(n) => off += n,
                Err(e) => return Err(err(format!("{} (message at byte {off})", e.reason))),
            }
        }
        client.submit(ticket as Ticket, Work::Batch(cmds));
        Ok(())
    }

    /// Ask for the state hash after everything submitted before; completes with `hash`.
    #[napi]
    pub fn request_hash(&mut self, ticket: f64) -> Result<()> {
        self.async_client()?.submit(ticket as Ticket, Work::Hash);
        Ok(())
    }

    /// Whether the completion callback keeps Node alive: the SDK turns it on while work is in
    /// flight and off when idle, so an idle engine never holds the process.
    #[napi]
    pub fn keep_alive(&self, env: Env, on: bool) -> Result<()> {
        let Some(f) = &self.on_complete else { return Ok(()) };
        let mut f = f.lock().map_err(|_| err("completion callback lock poisoned"))?;
        // napi-rs 3 deprecates refer/unref in favour of counting clones, but clone counting
        // (napi_acquire/release) controls the function's lifetime, not whether the event loop
        // waits for it; napi_ref/unref_threadsafe_function is exactly what is meant here.
        #[allow(deprecated)]
        if on {
            f.refer(&env)
        } else {
            f.unref(&env)
        }
    }

    fn parts(&mut self) -> Result<(&Engine, &mut Client)> {
        match (&self.engine, &mut self.client) {
            (Some(e), Some(c)) => Ok((e, c)),
            _ => Err(err("NOVATE_CLOSED:the engine is closed")),
        }
    }

    /// What start-up obtained and recovered (one line each).
    #[napi]
    pub fn start_report(&mut self) -> Result<Vec<String>> {
        Ok(self.parts()?.0.start_report().lines.clone())
    }

    /// Apply one SBE-encoded command and wait for its answer: the seq of its Ack (> 0), or
    /// minus its reject code (< 0).
    #[napi]
    pub fn call(&mut self, message: Uint8Array) -> Result<f64> {
        let mut cmds = std::mem::take(&mut self.cmds);
        cmds.clear();
        let r = commands_of(&message, &mut cmds);
        let out = r.and_then(|_| {
            let cmd = *cmds
                .first()
                .filter(|_| cmds.len() == 1)
                .ok_or_else(|| err("NOVATE_DECODE:call takes one command"))?;
            let (_, client) = self.parts()?;
            match client.call(cmd) {
                Ok((seq, _)) => Ok(seq as f64),
                Err(CallError::Rejected(r)) => Ok(-f64::from(r.code())),
                Err(e) => Err(call_error(e)),
            }
        });
        self.cmds = cmds;
        out
    }

    /// The state hash at a batch boundary.
    #[napi]
    pub fn state_hash(&mut self) -> Result<NativeHash> {
        let (_, client) = self.parts()?;
        let (seq, hash) = client.state_hash().map_err(call_error)?;
        Ok(NativeHash { seq: seq as f64, hash: BigInt::from(hash) })
    }

    /// Take a snapshot now; returns the seq it covers.
    #[napi]
    pub fn snapshot(&mut self) -> Result<f64> {
        let (_, client) = self.parts()?;
        Ok(client.snapshot().map_err(call_error)? as f64)
    }

    /// The published position (`null`: never traded).
    #[napi]
    pub fn position(&mut self, account: BigInt, instrument: u32) -> Result<Option<NativePosition>> {
        let a = u64_of(&account, "account")?;
        let (engine, _) = self.parts()?;
        Ok(engine.views().position(a, instrument).map(|p| position_js(&p.value, p.seq)))
    }

    /// The published account summary; throws `UnknownAccount` (or `Overflow`).
    #[napi]
    pub fn account(&mut self, account: BigInt) -> Result<NativeAccount> {
        let a = u64_of(&account, "account")?;
        let (engine, _) = self.parts()?;
        let p = engine.views().account(a).map_err(reject)?;
        Ok(account_js(&p.value, p.seq))
    }

    /// The published instrument (`null`: unknown).
    #[napi]
    pub fn instrument(&mut self, id: u32) -> Result<Option<NativeInstrument>> {
        let (engine, _) = self.parts()?;
        Ok(engine.views().instrument(id).map(|p| NativeInstrument {
            id: p.value.spec.id,
            multiplier: BigInt::from(p.value.spec.multiplier),
            margin_bps: BigInt::from(p.value.spec.margin_bps),
            settle_days: u32::from(p.value.spec.settle_days),
            mark: BigInt::from(p.value.mark),
            last_price: BigInt::from(p.value.last_price),
            holders: p.value.holders,
            seq: p.seq as f64,
        }))
    }

    /// Subscribe to events (bit k of `kinds`: event kind k, 0 = all; `account`: only events
    /// naming it). With `notify`: after `arm` returned false, `notify` is called (once, on the
    /// JS thread) when events or the subscription's end arrive. Weak: it never keeps the event
    /// loop alive.
    #[napi]
    pub fn subscribe(
        &mut self,
        kinds: u32,
        account: Option<BigInt>,
        notify: Option<ThreadsafeFunction<u32, UnknownReturnValue, u32, Status, false, true>>,
    ) -> Result<NativeSubscription> {
        let account = account.map(|a| u64_of(&a, "account")).transpose()?;
        // Bits 0..=10 name the event kinds (as on the wire, where more is MalformedMessage).
        if kinds >= 1 << 11 {
            return Err(err(format!(
                "NOVATE_RANGE:kinds {kinds} has bits past the last event kind"
            )));
        }
        let (engine, _) = self.parts()?;
        let sub = engine.subscribe(EventFilter { kinds: kinds as u16, account });
        let notifier = match notify {
            Some(f) => Some(Notifier::start(f)?),
            None => None,
        };
        Ok(NativeSubscription { sub: Some(sub), buf: Vec::new(), notifier })
    }

    /// `close` off the JS thread: resolves with the final seq and hash (`null` if already
    /// closed). Calls after it find the engine closed at once.
    #[napi(ts_return_type = "Promise<NativeHash | null>")]
    pub fn close_async(&mut self) -> AsyncTask<CloseTask> {
        self.client = None;
        AsyncTask::new(CloseTask {
            engine: self.engine.take(),
            async_client: self.async_client.take(),
            on_complete: self.on_complete.take(),
        })
    }

    /// Graceful shutdown (answers everything accepted, commits, snapshots). Idempotent.
    #[napi]
    pub fn close(&mut self) -> Result<Option<NativeHash>> {
        self.client = None;
        let report = self.engine.take().map(|e| {
            let r = e.shutdown();
            NativeHash { seq: r.last_seq as f64, hash: BigInt::from(r.state_hash) }
        });
        // After the shutdown answered everything accepted: deliver it, fail the rest as
        // Closed, stop the completion thread. The callback's queue is still delivered.
        if let Some(c) = self.async_client.take() {
            c.finish();
        }
        self.on_complete = None;
        Ok(report)
    }
}

/// The work of `closeAsync`: the graceful shutdown on a libuv worker thread, so the JS thread
/// goes on while the engine drains, commits and snapshots.
pub struct CloseTask {
    engine: Option<Engine>,
    async_client: Option<AsyncClient>,
    on_complete: Option<Arc<Mutex<OnComplete>>>,
}

impl Task for CloseTask {
    type Output = Option<(u64, u64)>;
    type JsValue = Option<NativeHash>;

    fn compute(&mut self) -> Result<Self::Output> {
        let report = self.engine.take().map(|e| {
            let r = e.shutdown();
            (r.last_seq, r.state_hash)
        });
        if let Some(c) = self.async_client.take() {
            c.finish();
        }
        // Releasing a threadsafe function is allowed from any thread; what it queued is still
        // delivered on the JS thread.
        self.on_complete = None;
        Ok(report)
    }

    fn resolve(&mut self, _env: Env, out: Self::Output) -> Result<Self::JsValue> {
        Ok(out.map(|(seq, hash)| NativeHash { seq: seq as f64, hash: BigInt::from(hash) }))
    }
}

/// A subscription's reading end; `poll` returns SBE-encoded events.
#[napi]
pub struct NativeSubscription {
    sub: Option<Subscription>,
    buf: Vec<u8>,
    notifier: Option<Notifier>,
}

/// A subscription's wake-up for JS: a thread that egress unparks when it delivers events to
/// the subscription (its waker) and that then calls JS once if JS is waiting (`armed`). So an
/// idle `for await` sleeps without polling, and wakes as soon as an event comes.
struct Notifier {
    state: Arc<NotifyState>,
    thread: std::thread::Thread,
    /// The thread is the subscription's waker now (set by `arm`, cleared by a poll that finds
    /// events): each change takes the waker's lock once, not every poll.
    waking: bool,
}

#[derive(Default)]
struct NotifyState {
    /// JS waits for events (set by `arm`, taken by the thread when it calls JS).
    armed: std::sync::atomic::AtomicBool,
    /// The subscription is closed: the thread ends.
    closed: std::sync::atomic::AtomicBool,
}

impl Notifier {
    /// The thread becomes the subscription's waker only while JS waits (`arm`, until a poll
    /// finds events): while JS reads a flow of events, egress wakes nobody.
    fn start(
        notify: ThreadsafeFunction<u32, UnknownReturnValue, u32, Status, false, true>,
    ) -> Result<Notifier> {
        use std::sync::atomic::Ordering;
        let state = Arc::new(NotifyState::default());
        let st = state.clone();
        let handle = std::thread::Builder::new()
            .name("novate-notify".into())
            .spawn(move || loop {
                // Unparked by egress after it delivered events (or ended the subscription), by
                // `close`, or spuriously: calling JS then is harmless (it polls and re-arms).
                std::thread::park();
                // Acquire: pairs with `close`'s Release (nothing to do after it).
                if st.closed.load(Ordering::Acquire) {
                    return;
                }
                // AcqRel: see `arm`.
                if st.armed.swap(false, Ordering::AcqRel) {
                    // NonBlocking on an unbounded queue: never waits; when Node is tearing the
                    // function down there is nobody left to tell.
                    let _ = notify.call(0, ThreadsafeFunctionCallMode::NonBlocking);
                }
            })
            .map_err(|e| err(format!("cannot start the subscription's notifier: {e}")))?;
        Ok(Notifier { state, thread: handle.thread().clone(), waking: false })
    }

    fn stop(&self) {
        // Release: the thread's Acquire load sees it after its next wake-up (this one).
        self.state.closed.store(true, std::sync::atomic::Ordering::Release);
        self.thread.unpark();
    }
}

/// Events (SBE messages 101..=111 back to back) and the subscription's status
/// (0: open, 1: overflowed after these events, 2: closed).
#[napi(object)]
pub struct NativePoll {
    pub events: Buffer,
    pub count: u32,
    pub status: u32,
}

#[napi]
impl NativeSubscription {
    /// Up to `max` events; never blocks.
    #[napi]
    pub fn poll(&mut self, max: u32) -> NativePoll {
        self.buf.clear();
        let Some(sub) = self.sub.as_mut() else {
            return NativePoll { events: Buffer::from(Vec::new()), count: 0, status: 2 };
        };
        let (n, st) = sub.poll_encoded(max as usize, &mut self.buf);
        if let Some(w) = self.notifier.as_mut().filter(|w| n > 0 && w.waking) {
            sub.set_waker(None); // JS reads: nobody to wake until it arms again
            w.waking = false;
        }
        let status = match st {
            SubStatus::Open => 0,
            SubStatus::Overflowed => 1,
            SubStatus::Closed => 2,
        };
        NativePoll { events: Buffer::from(self.buf.as_slice()), count: n as u32, status }
    }

    /// Before waiting for `notify` (see `subscribe`): false if nothing can be read now, and
    /// then `notify` will be called once something can; true if `poll` would find events or the
    /// subscription's end already (or it has no `notify`): poll instead of waiting.
    #[napi]
    pub fn arm(&mut self) -> bool {
        let (Some(sub), Some(n)) = (self.sub.as_mut(), self.notifier.as_mut()) else { return true };
        // Egress looks at the waker (under its lock) after it delivered: either it finds this
        // thread there and wakes it, or it took the lock first and the check below sees what
        // it delivered (the lock orders the two).
        if !n.waking {
            sub.set_waker(Some(n.thread.clone()));
            n.waking = true;
        }
        // AcqRel RMW: if the notifier already took an earlier arming (its swap wrote false after
        // it was woken), this reads that write and so sees everything delivered before the
        // wake-up; otherwise the notifier's next swap reads this `true`.
        n.state.armed.swap(true, std::sync::atomic::Ordering::AcqRel);
        if sub.available() > 0 || sub.ended() {
            n.state.armed.store(false, std::sync::atomic::Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Stop delivery and free the buffer. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.sub = None;
        if let Some(n) = self.notifier.take() {
            n.stop();
        }
    }
}

impl Drop for NativeSubscription {
    fn drop(&mut self) {
        self.close();
    }
}

/// Run the demo (prints its progress to stderr and the summary to stdout).
#[napi(object)]
pub struct DemoOptionsJs {
    pub accounts: Option<u32>,
    pub instruments: Option<u32>,
    pub trades: Option<f64>,
    pub latency_samples: Option<u32>,
    pub data_dir: Option<String>,
    pub fsync: Option<bool>,
    /// `threads.stages = "fused"`.
    pub fused: Option<bool>,
    pub progress: Option<bool>,
}

/// Run the demo; returns commands per second.
#[napi]
pub fn run_demo(options: DemoOptionsJs) -> Result<f64> {
    let mut o = novate_engine::demo::DemoOptions::default();
    if let Some(v) = options.accounts {
        o.accounts = v.max(2);
    }
    if let Some(v) = options.instruments {
        o.instruments = v.max(1);
    }
    if let Some(v) = options.trades {
        o.trades = v.max(0.0) as u64;
    }
    if let Some(v) = options.latency_samples {
        o.latency_samples = v;
    }
    if let Some(v) = options.data_dir {
        o.data_dir = v;
    }
    o.fsync = options.fsync.unwrap_or(false);
    o.fused = options.fused.unwrap_or(false);
    o.progress = options.progress.unwrap_or(true);
    let s = novate_engine::demo::run(&o, &mut std::io::stdout().lock()).map_err(err)?;
    Ok(s.commands_per_sec)
}

/// The host checks of crates/mem, printable.
#[napi]
pub fn doctor() -> String {
    novate_mem::doctor().to_string()
}

/// A novated server running inside this process (the CLI's `serve`): the engine and its TCP
/// listener on background threads. They do not keep Node alive; the CLI does.
#[napi]
pub struct NativeServer {
    server: Option<novate_engine::Server>,
    addr: String,
}

#[napi]
impl NativeServer {
    /// Start from TOML configuration text (docs/CONFIG.md), recovering the data dir.
    #[napi(factory)]
    pub fn start(config_toml: String) -> Result<NativeServer> {
        let cfg = Config::from_toml(&config_toml)
            .map_err(|e| err(format!("NOVATE_CONFIG:{}:{}", e.key, e.reason)))?;
        let server =
            novate_engine::Server::start(&cfg).map_err(|e| err(format!("NOVATE_CONFIG::{e}")))?;
        let addr = server.local_addr().to_string();
        Ok(NativeServer { server: Some(server), addr })
    }

    /// The address it listens on.
    #[napi]
    pub fn address(&self) -> String {
        self.addr.clone()
    }

    /// What start-up obtained and recovered.
    #[napi]
    pub fn start_report(&self) -> Vec<String> {
        self.server.as_ref().map(|s| s.engine().start_report().lines.clone()).unwrap_or_default()
    }

    /// Graceful stop: stop accepting, answer what was read, commit, snapshot. Idempotent.
    #[napi]
    pub fn stop(&mut self) -> Option<NativeHash> {
        self.server.take().map(|s| {
            let r = s.shutdown();
            NativeHash { seq: r.last_seq as f64, hash: BigInt::from(r.state_hash) }
        })
    }
}

/// What `replay` rebuilt: the seq and state hash, and how many commands the replay refused
/// for a capacity (the limits of `config_toml` smaller than the engine's, if any).
#[napi(object)]
pub struct NativeReplay {
    pub seq: f64,
    pub hash: BigInt,
    pub capacity_rejects: f64,
}

/// Rebuild the state of a data dir read-only (newest snapshot + journal), drawing a progress
/// bar on stderr. `config_toml` supplies the limits.
#[napi]
pub fn replay(data_dir: String, config_toml: String) -> Result<NativeReplay> {
    let cfg = Config::from_toml(&config_toml)
        .map_err(|e| err(format!("NOVATE_CONFIG:{}:{}", e.key, e.reason)))?;
    let mut bar = novate_engine::demo::Progress::new(true, "replay");
    let r = novate_engine::store::replay_dir(
        std::path::Path::new(&data_dir),
        cfg.limits(),
        &mut |d, t| bar.draw(d, t),
    )
    .map_err(|e| err(format!("NOVATE_REPLAY:{e}")))?;
    Ok(NativeReplay {
        seq: r.seq as f64,
        hash: BigInt::from(r.state_hash),
        capacity_rejects: r.capacity_rejects as f64,
    })
}
