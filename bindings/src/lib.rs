//! novate-bindings: the napi-rs layer of the SDK. Argument conversion and handle lifetimes only;
//! everything else lives in crates/engine. Commands cross as SBE bytes (the TS side encodes them
//! with the generated codecs in ts/src/wire), so one entry point serves every command and the
//! batch path is one call for many commands. Rejections cross as numbers: `call` returns the
//! seq of an Ack (> 0) or minus the reject code (< 0); queries throw `NOVATE_REJECT:<code>`
//! errors that ts/src/errors.ts turns into `NovateError`.

use std::time::Duration;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use novate_core::{AccountView, Command, PositionView, Reject};
use novate_engine::{
    AnswerKind, CallError, Client, Config, Engine, EventFilter, SubStatus, SubmitError,
    Subscription,
};
use novate_wire::Message;

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
fn commands_of(msg: &[u8], out: &mut Vec<Command>) -> Result<usize> {
    let m = novate_wire::decode_message(msg).map_err(|e| err(format!("NOVATE_DECODE:{e}")))?;
    match &m {
        Message::ClearTradeBatch(b) => out.extend(b.commands().map(|(_, c)| c)),
        _ => out.push(m.command().ok_or_else(|| err("NOVATE_DECODE:not a command message"))?.1),
    }
    Ok(m.encoded_len())
}

/// An in-process engine and the client this JS thread uses.
#[napi]
pub struct NativeEngine {
    engine: Option<Engine>,
    client: Option<Client>,
    cmds: Vec<Command>,
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
    /// Start an in-process engine from TOML configuration text (docs/CONFIG.md).
    #[napi(factory)]
    pub fn open(config_toml: String) -> Result<NativeEngine> {
        let cfg = Config::from_toml(&config_toml)
            .map_err(|e| err(format!("NOVATE_CONFIG:{}:{}", e.key, e.reason)))?;
        let engine = Engine::open(&cfg).map_err(|e| err(format!("NOVATE_CONFIG::{e}")))?;
        let client = engine.client();
        Ok(NativeEngine { engine: Some(engine), client: Some(client), cmds: Vec::new() })
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

    /// Submit every SBE message in `messages` (back to back: single commands and
    /// ClearTradeBatch), keeping the client's window full, and wait for every answer.
    #[napi]
    pub fn submit_batch(&mut self, messages: Uint8Array) -> Result<NativeBatchResult> {
        let mut cmds = std::mem::take(&mut self.cmds);
        cmds.clear();
        let bytes: &[u8] = &messages;
        let mut off = 0;
        while off < bytes.len() {
            match commands_of(&bytes[off..], &mut cmds) {
                Ok(n) => off += n,
                Err(e) => {
                    self.cmds = cmds;
                    return Err(err(format!("{e} (message at byte {off})")));
                }
            }
        }
        let result = self.submit_all(&cmds);
        self.cmds = cmds;
        result
    }

    fn submit_all(&mut self, cmds: &[Command]) -> Result<NativeBatchResult> {
        let (_, client) = self.parts()?;
        let mut res =
            NativeBatchResult { accepted: 0, rejected: 0, last_seq: 0.0, rejects: Vec::new() };
        let record = |a: novate_engine::Answer, res: &mut NativeBatchResult| match a.kind {
            AnswerKind::Ack { seq, .. } => {
                res.accepted += 1;
                res.last_seq = res.last_seq.max(seq as f64);
            }
            AnswerKind::Reject { seq, reason } => {
                res.rejected += 1;
                res.last_seq = res.last_seq.max(seq as f64);
                res.rejects.extend([a.request_id as u32, u32::from(reason.code())]);
            }
            _ => res.rejected += 1,
        };
        for (i, cmd) in cmds.iter().enumerate() {
            let mut pending = Vec::new();
            client
                .submit_with(i as u64, *cmd, Duration::from_secs(30), &mut |a| pending.push(a))
                .map_err(|e| call_error(CallError::Submit(e)))?;
            for a in pending {
                record(a, &mut res);
            }
        }
        while client.inflight() > 0 {
            match client.wait_answer(Duration::from_secs(30)) {
                Some(a) => record(a, &mut res),
                None => return Err(call_error(CallError::Timeout)),
            }
        }
        // Rejections in batch order (answers come in order per client; keep it explicit).
        let mut pairs: Vec<[u32; 2]> = res.rejects.chunks_exact(2).map(|c| [c[0], c[1]]).collect();
        pairs.sort_unstable();
        res.rejects = pairs.concat();
        Ok(res)
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
    /// naming it).
    #[napi]
    pub fn subscribe(&mut self, kinds: u32, account: Option<BigInt>) -> Result<NativeSubscription> {
        let account = account.map(|a| u64_of(&a, "account")).transpose()?;
        let (engine, _) = self.parts()?;
        let sub = engine.subscribe(EventFilter { kinds: kinds as u16, account });
        Ok(NativeSubscription { sub: Some(sub), buf: Vec::new() })
    }

    /// Graceful shutdown (answers everything accepted, commits, snapshots). Idempotent.
    #[napi]
    pub fn close(&mut self) -> Result<Option<NativeHash>> {
        self.client = None;
        Ok(self.engine.take().map(|e| {
            let r = e.shutdown();
            NativeHash { seq: r.last_seq as f64, hash: BigInt::from(r.state_hash) }
        }))
    }
}

/// A subscription's reading end; `poll` returns SBE-encoded events.
#[napi]
pub struct NativeSubscription {
    sub: Option<Subscription>,
    buf: Vec<u8>,
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
        let status = match st {
            SubStatus::Open => 0,
            SubStatus::Overflowed => 1,
            SubStatus::Closed => 2,
        };
        NativePoll { events: Buffer::from(self.buf.as_slice()), count: n as u32, status }
    }

    /// Stop delivery and free the buffer. Idempotent.
    #[napi]
    pub fn close(&mut self) {
        self.sub = None;
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

/// Rebuild the state of a data dir read-only (newest snapshot + journal), drawing a progress
/// bar on stderr; returns the seq and state hash. `config_toml` supplies the limits.
#[napi]
pub fn replay(data_dir: String, config_toml: String) -> Result<NativeHash> {
    let cfg = Config::from_toml(&config_toml)
        .map_err(|e| err(format!("NOVATE_CONFIG:{}:{}", e.key, e.reason)))?;
    let mut bar = novate_engine::demo::Progress::new(true, "replay");
    let (seq, hash) = novate_engine::store::replay_dir(
        std::path::Path::new(&data_dir),
        cfg.limits(),
        &mut |d, t| bar.draw(d, t),
    )
    .map_err(|e| err(format!("NOVATE_REPLAY:{e}")))?;
    Ok(NativeHash { seq: seq as f64, hash: BigInt::from(hash) })
}
