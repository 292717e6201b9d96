//! The demo: an embedded engine, a synthetic but realistic feed (thousands of accounts, hundreds
//! of instruments, marks, trades, a settlement price), a progress bar, and a summary of
//! throughput, latency percentiles and the accounts with the most margin.
//!
//! Two phases: **throughput** (the feed submitted with the client's whole window in flight, as
//! a member's gateway would) and **latency** (one command at a time, submit -> ack, so the
//! percentiles are the pipeline's own and not queueing behind the window).

use std::io::Write;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use novate_core::{AccountSpec, Command, InstrumentSpec, Side, Trade, PRICE_SCALE};

use crate::config::{Config, DurabilityPolicy};
use crate::pipeline::{AnswerKind, Client, Engine};

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub accounts: u32,
    pub instruments: u32,
    pub trades: u64,
    /// Sequential submit -> ack round trips measured after the feed.
    pub latency_samples: u32,
    /// Empty: memory only.
    pub data_dir: String,
    pub fsync: bool,
    /// `threads.stages = "fused"`: sequencer, state machine and egress on one thread.
    pub fused: bool,
    pub seed: u64,
    /// Draw the progress bar (on stderr).
    pub progress: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            accounts: 5_000,
            instruments: 300,
            trades: 2_000_000,
            latency_samples: 20_000,
            data_dir: String::new(),
            fsync: false,
            fused: false,
            seed: 0x6e6f_7661_7465,
            progress: true,
        }
    }
}

/// What the demo measured.
#[derive(Clone, Debug, Default)]
pub struct DemoSummary {
    pub commands: u64,
    pub trades: u64,
    pub rejects: u64,
    pub seconds: f64,
    pub commands_per_sec: f64,
    pub latency_ns: [u64; 5],
    pub state_hash: u64,
    pub last_seq: u64,
}

/// xorshift64*: deterministic, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The synthetic market: instrument reference prices drift; a few instruments are busy.
pub struct Feed {
    rng: Rng,
    accounts: u32,
    instruments: u32,
    prices: Vec<i64>,
    next_trade: u64,
}

impl Feed {
    pub fn new(opts: &DemoOptions) -> Feed {
        let mut rng = Rng::new(opts.seed);
        let prices =
            (0..opts.instruments).map(|_| (10 + rng.below(490) as i64) * PRICE_SCALE).collect();
        Feed { rng, accounts: opts.accounts, instruments: opts.instruments, prices, next_trade: 1 }
    }

    /// Instruments, accounts with collateral, and a first mark for every instrument.
    pub fn setup(&mut self) -> Vec<Command> {
        let mut cmds = Vec::new();
        for i in 0..self.instruments {
            let multiplier = if i % 10 == 0 { 50 } else { 1 };
            cmds.push(Command::UpsertInstrument(InstrumentSpec {
                id: i + 1,
                multiplier,
                margin_bps: 500 + (self.rng.below(10) as i64) * 100,
                settle_days: 2,
            }));
        }
        for a in 0..self.accounts {
            cmds.push(Command::UpsertAccount(AccountSpec {
                id: u64::from(a) + 1,
                max_position: 0,
                max_notional: 0,
                max_loss: 0,
                suspended: false,
            }));
            let money = (1_000_000 + self.rng.below(50_000_000) as i128) * i128::from(PRICE_SCALE);
            cmds.push(Command::AdjustCollateral { account: u64::from(a) + 1, amount: money });
        }
        for i in 0..self.instruments {
            cmds.push(Command::MarkPrice { instrument: i + 1, price: self.prices[i as usize] });
        }
        cmds
    }

    /// One busy-market command: mostly trades, a mark update every 500.
    pub fn next_command(&mut self) -> Command {
        // Skewed instrument choice: half the flow in the first tenth of the instruments.
        let n = u64::from(self.instruments);
        let ins =
            if self.rng.below(2) == 0 { self.rng.below(n.div_ceil(10)) } else { self.rng.below(n) }
                as usize;
        let t = self.next_trade;
        if t.is_multiple_of(500) {
            let p = &mut self.prices[ins];
            let step = (*p / 1000).max(1);
            *p = (*p + (self.rng.below(3) as i64 - 1) * step).max(PRICE_SCALE);
            self.next_trade += 1;
            return Command::MarkPrice { instrument: ins as u32 + 1, price: *p };
        }
        // Each account trades the instruments of its desk (instrument id % DESKS == account % DESKS).
        let desks = desks(self.instruments, self.accounts);
        let desk = ins as u64 % desks;
        let members = (u64::from(self.accounts) - desk).div_ceil(desks);
        let buy_k = self.rng.below(members);
        let mut sell_k = self.rng.below(members);
        if sell_k == buy_k {
            sell_k = (buy_k + 1) % members;
        }
        let (buy, sell) = (desk + buy_k * desks + 1, desk + sell_k * desks + 1);
        let base = self.prices[ins];
        let price = base + (self.rng.below(201) as i64 - 100) * (base / 10_000).max(1);
        self.next_trade += 1;
        Command::ClearTrade(Trade {
            trade_id: t,
            buy,
            sell,
            instrument: ins as u32 + 1,
            qty: 1 + self.rng.below(100) as i64,
            price,
            trade_date: 20261125,
        })
    }

    /// The end of day: a settlement price for every instrument.
    pub fn settlement(&mut self) -> Vec<Command> {
        (0..self.instruments)
            .map(|i| Command::SettlementPrice { instrument: i + 1, price: self.prices[i as usize] })
            .collect()
    }
}

/// Accounts are split into desks; a desk trades every `desks`-th instrument.
pub fn desks(instruments: u32, accounts: u32) -> u64 {
    u64::from(instruments.clamp(1, 15).min(accounts / 2).max(1))
}

/// Positions the feed can open: each account holds its desk's instruments.
pub fn positions_needed(instruments: u32, accounts: u32) -> u64 {
    u64::from(accounts) * u64::from(instruments).div_ceil(desks(instruments, accounts))
}

/// Submit every command with the window full; returns (acks, rejects).
fn pump(
    client: &mut Client,
    cmds: &mut dyn Iterator<Item = Command>,
    total: u64,
    bar: &mut Progress,
) -> (u64, u64) {
    let (mut acks, mut rejects, mut rid) = (0u64, 0u64, 0u64);
    let mut count = |a: crate::pipeline::Answer| match a.kind {
        AnswerKind::Ack { .. } => acks += 1,
        _ => rejects += 1,
    };
    for cmd in cmds {
        rid += 1;
        if client.submit_with(rid, cmd, Duration::from_secs(30), &mut count).is_err() {
            break;
        }
        while let Some(a) = client.poll_answer() {
            count(a);
        }
        if rid % 65_536 == 0 {
            bar.draw(rid, total);
        }
    }
    while client.inflight() > 0 {
        match client.wait_answer(Duration::from_secs(30)) {
            Some(a) => count(a),
            None => break,
        }
    }
    bar.draw(rid, total);
    (acks, rejects)
}

/// A one-line progress bar on stderr.
pub struct Progress {
    on: bool,
    start: Instant,
    label: &'static str,
}

impl Progress {
    pub fn new(on: bool, label: &'static str) -> Progress {
        Progress { on, start: Instant::now(), label }
    }

    pub fn draw(&mut self, done: u64, total: u64) {
        if !self.on {
            return;
        }
        let width = 30usize;
        let filled = ((done as f64 / total.max(1) as f64) * width as f64).round() as usize;
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        eprint!(
            "\r{:<10} [{}{}] {:>3}% {done}/{total}  {:.2} M/s ",
            self.label,
            "#".repeat(filled.min(width)),
            "-".repeat(width - filled.min(width)),
            done * 100 / total.max(1),
            rate / 1e6
        );
        if done >= total {
            eprintln!();
        }
    }
}

fn fmt_money(m: i128) -> String {
    let scale = i128::from(PRICE_SCALE);
    let whole = m / scale;
    let s = whole.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if m < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Run the demo, printing the summary to `out`.
pub fn run(
    opts: &DemoOptions,
    out: &mut dyn Write,
) -> Result<DemoSummary, Box<dyn std::error::Error>> {
    let mut cfg = Config { data_dir: opts.data_dir.clone(), ..Config::default() };
    cfg.engine.accounts_max = opts.accounts.max(1);
    cfg.engine.instruments_max = opts.instruments.max(1);
    cfg.engine.positions_max =
        positions_needed(opts.instruments, opts.accounts).clamp(1, 4_000_000) as u32;
    cfg.engine.trades_max = (opts.trades + 1).min(u64::from(novate_core::Limits::EACH_MAX)) as u32;
    cfg.durability.policy =
        if opts.fsync { DurabilityPolicy::Fsync } else { DurabilityPolicy::None };
    cfg.durability.snapshot_every = 0;
    // Capacities sized to the run: commit them up front, as production would, so the feed's
    // figures are not first-touch page faults.
    cfg.threads.prefault = true;
    if opts.fused {
        cfg.threads.stages = "fused".into();
    }
    let engine = Engine::open(&cfg)?;
    writeln!(
        out,
        "novate demo: {} accounts, {} instruments, {} trades",
        opts.accounts, opts.instruments, opts.trades
    )?;
    for line in &engine.start_report().lines {
        writeln!(out, "  {line}")?;
    }
    let mut client = engine.client();
    let mut feed = Feed::new(opts);

    let setup = feed.setup();
    let n = setup.len() as u64;
    let (_, setup_rejects) =
        pump(&mut client, &mut setup.into_iter(), n, &mut Progress::new(false, "setup"));

    let start = Instant::now();
    let mut bar = Progress::new(opts.progress, "clearing");
    let total = opts.trades;
    let mut stream = (0..total).map(|_| feed.next_command());
    let (acks, rejects) = pump(&mut client, &mut stream, total, &mut bar);
    let settle = feed.settlement();
    let sn = settle.len() as u64;
    let (sacks, srejects) =
        pump(&mut client, &mut settle.into_iter(), sn, &mut Progress::new(false, "settle"));
    let seconds = start.elapsed().as_secs_f64();
    let commands = total + sn;

    // Latency: one command at a time (CheckOrder changes nothing, so the state stays the feed's).
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut lbar = Progress::new(opts.progress, "latency");
    for i in 0..opts.latency_samples {
        let cmd = Command::CheckOrder {
            account: u64::from(i % opts.accounts.max(1)) + 1,
            instrument: i % opts.instruments.max(1) + 1,
            side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
            qty: 1,
            price: 100 * PRICE_SCALE,
        };
        let t = Instant::now();
        let _ = client.call(cmd);
        hist.record(t.elapsed().as_nanos().max(1) as u64)?;
        if i % 1024 == 0 {
            lbar.draw(u64::from(i), u64::from(opts.latency_samples));
        }
    }
    lbar.draw(u64::from(opts.latency_samples), u64::from(opts.latency_samples));
    let (last_seq, state_hash) = client.state_hash()?;

    let summary = DemoSummary {
        commands,
        trades: acks + rejects,
        rejects: rejects + srejects + setup_rejects,
        seconds,
        commands_per_sec: commands as f64 / seconds.max(1e-9),
        latency_ns: [
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.value_at_quantile(0.999),
            hist.max(),
            hist.len(),
        ],
        state_hash,
        last_seq,
    };
    let _ = sacks;
    writeln!(out)?;
    writeln!(out, "throughput  {commands} commands in {seconds:.2} s = {:.2} M commands/s (window {}, durability {})",
        summary.commands_per_sec / 1e6, client.window(), cfg.durability.policy.as_str())?;
    writeln!(out, "            rejects: {} (setup {setup_rejects})", summary.rejects)?;
    writeln!(
        out,
        "latency     submit -> ack, one at a time, {} samples: p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us",
        summary.latency_ns[4],
        summary.latency_ns[0] as f64 / 1e3,
        summary.latency_ns[1] as f64 / 1e3,
        summary.latency_ns[2] as f64 / 1e3,
        summary.latency_ns[3] as f64 / 1e3
    )?;
    let mut accounts = engine.views().accounts();
    accounts.sort_by(|a, b| b.margin.cmp(&a.margin).then(a.spec.id.cmp(&b.spec.id)));
    writeln!(
        out,
        "top accounts by initial margin (published views at seq {}):",
        engine.views().seq()
    )?;
    writeln!(
        out,
        "  {:>8}  {:>16}  {:>16}  {:>16}  {:>9}",
        "account", "margin", "equity", "excess", "positions"
    )?;
    for a in accounts.iter().take(10) {
        writeln!(
            out,
            "  {:>8}  {:>16}  {:>16}  {:>16}  {:>9}",
            a.spec.id,
            fmt_money(a.margin),
            fmt_money(a.equity),
            fmt_money(a.excess),
            a.positions
        )?;
    }
    writeln!(out, "state hash  {state_hash:016x} at seq {last_seq}")?;
    drop(client);
    let report = engine.shutdown();
    if report.snapshot_saved {
        writeln!(out, "snapshot    saved at seq {}", report.last_seq)?;
    }
    Ok(summary)
}
