//! Configuration: one TOML file, every key documented in docs/CONFIG.md, defaults that run on a
//! laptop. An invalid file is an error that names the key and the reason.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use novate_core::Limits;
use novate_ring::WaitStrategy;
use serde::Deserialize;

/// When a command counts as durable (and so may be applied and acknowledged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityPolicy {
    /// Appended to the journal (page cache or memory); a crash may lose the last batches.
    #[default]
    None,
    /// Appended and `fsync`ed before any command of the batch is applied or acknowledged.
    Fsync,
}

impl DurabilityPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DurabilityPolicy::None => "none",
            DurabilityPolicy::Fsync => "fsync",
        }
    }
}

/// Which pages the engine asks for (crates/mem). `normal` asks for nothing special.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HugePages {
    #[default]
    Normal,
    /// Transparent huge pages (madvise) for the state machine's tables (core does this itself).
    Thp,
    /// Lock every page of the process in RAM (`mlockall`) after start-up allocations.
    Locked,
}

/// Capacities of the state machine and the rings. Every limit has a name and a number.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    pub accounts_max: u32,
    pub instruments_max: u32,
    pub positions_max: u32,
    pub trades_max: u32,
    /// Slots of the ingress ring (members -> sequencer), a power of two.
    pub ingress_ring: usize,
    /// Slots of the sequencer -> state machine ring, a power of two.
    pub apply_ring: usize,
    /// Slots of the state machine -> egress ring (answers and events), a power of two.
    pub egress_ring: usize,
    /// Most commands per sequencer batch (one journal group commit) and per `apply_batch`.
    pub batch_max: usize,
    /// Answers one client may have outstanding (its answer ring), a power of two.
    pub client_inflight_max: usize,
    /// Events buffered per subscription before it is cut off with an overflow signal.
    pub subscriber_buffer: usize,
}

impl Default for EngineSection {
    fn default() -> Self {
        let l = Limits::default();
        EngineSection {
            accounts_max: l.accounts_max,
            instruments_max: l.instruments_max,
            positions_max: l.positions_max,
            trades_max: l.trades_max,
            ingress_ring: 1 << 14,
            apply_ring: 1 << 14,
            egress_ring: 1 << 15,
            batch_max: 4096,
            client_inflight_max: 1 << 14,
            subscriber_buffer: 1 << 16,
        }
    }
}

/// Journal and snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DurabilitySection {
    pub policy: DurabilityPolicy,
    /// Take a snapshot every this many commands (0: only at shutdown).
    pub snapshot_every: u64,
}

impl Default for DurabilitySection {
    fn default() -> Self {
        DurabilitySection { policy: DurabilityPolicy::None, snapshot_every: 1_000_000 }
    }
}

/// Threads: how they wait, where they run, what memory they get.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThreadsSection {
    /// `park` (default: ~0 CPU when idle, good on 2 cores), `spin-yield` or `busy-spin`.
    pub wait: String,
    /// `split` (default: sequencer, state machine and egress threads) or `fused` (one thread
    /// runs all three stages: fewer hand-offs, lower latency on few cores).
    pub stages: String,
    /// With `fused` stages: a thread that submits and then waits for its answers (a novated
    /// connection, a blocking call) steps the pipeline itself when it is idle, instead of
    /// waking the pipeline thread (flat combining). Ignored with `split`.
    pub combine: bool,
    /// CPUs for [sequencer, state machine, egress] (`split`) or [the one thread] (`fused`);
    /// empty = no pinning.
    pub pin: Vec<usize>,
    /// SCHED_FIFO priority for the pipeline threads (0 = leave the default scheduler).
    pub fifo_priority: i32,
    /// A lookup stage: a thread that makes each batch's index lookups (its positions' slots)
    /// ahead of the state machine's thread, which then applies the batch with them
    /// (`StateMachine::apply_batch_on`; batches of 32 commands or more). Off by default: the
    /// stage spins while batches come, so it wants a core of its own, which a 2-core machine
    /// does not have beside the other stages.
    pub lookup_stage: bool,
    /// The CPU to pin the lookup stage's thread to (with `lookup_stage`); none: not pinned.
    pub lookup_cpu: Option<usize>,
    pub huge_pages: HugePages,
    /// Commit the state machine's tables at start-up, at their full capacity
    /// (`StateMachine::prefault`), so that no command pays a page fault on first touch
    /// (off by default: start-up then commits the whole capacity, ~100 MiB in ~0.15 s with the
    /// default capacities; see docs/CONFIG.md).
    pub prefault: bool,
}

impl Default for ThreadsSection {
    fn default() -> Self {
        ThreadsSection {
            wait: "park".into(),
            stages: "split".into(),
            combine: true,
            pin: Vec::new(),
            fifo_priority: 0,
            lookup_stage: false,
            lookup_cpu: None,
            huge_pages: HugePages::Normal,
            prefault: false,
        }
    }
}

/// The TCP listener of `novated`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetSection {
    /// Address to listen on (`127.0.0.1:0` picks a free port, printed at start).
    pub listen: String,
    /// Connections served at once; more are refused (closed at once).
    pub connections_max: usize,
    /// Live subscriptions one connection may hold; a `Subscribe` past it is refused
    /// (`SubscriptionCapacity`).
    pub subscriptions_per_connection: usize,
    /// Live subscriptions of the whole engine (each may buffer `engine.subscriber_buffer`
    /// events); a `Subscribe` past it is refused likewise.
    pub subscriptions_max: usize,
    /// A client that does not read its answers for this long is disconnected, and so is one
    /// that leaves a frame unfinished for this long.
    pub write_timeout_ms: u64,
    /// Before a connection's reader blocks for the next request it polls its socket (a
    /// non-blocking `recv` in a loop) for this long: it stays on its CPU with warm caches
    /// instead of sleeping, at the price of that CPU. 0 (default): block at once.
    pub busy_poll_us: u64,
}

impl Default for NetSection {
    fn default() -> Self {
        NetSection {
            listen: "127.0.0.1:7301".into(),
            connections_max: 64,
            subscriptions_per_connection: 16,
            subscriptions_max: 256,
            write_timeout_ms: 10_000,
            busy_poll_us: 0,
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Journal segments and snapshots live here. Empty: in memory only (nothing survives).
    pub data_dir: String,
    pub engine: EngineSection,
    pub durability: DurabilitySection,
    pub threads: ThreadsSection,
    pub net: NetSection,
}

/// A configuration that cannot be used: which key, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key (`engine.ingress_ring`), or `""` for the file as a whole.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "invalid configuration: {}", self.reason)
        } else {
            write!(f, "invalid configuration: {}: {}", self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), reason: reason.into() }
}

/// The longest socket poll accepted (1 s): beyond that a reader would rather block.
pub const BUSY_POLL_US_MAX: u64 = 1_000_000;

/// The largest ring accepted (slots): 2^24 keeps a ring of 80-byte slots under 1.3 GiB.
pub const RING_SLOTS_MAX: usize = 1 << 24;

/// Largest `engine.batch_max`: the state machine's thread keeps room for a batch's answers and
/// events (~8 of each a command), allocated at start; past ~64k commands a batch only delays
/// its first answer longer.
pub const BATCH_MAX_MAX: usize = 1 << 16;

impl Config {
    /// Parse and validate TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            // toml's message says which key and why; name the key first when it can be found.
            let msg = e.message().to_string();
            let key = key_of_toml_error(text, &e).unwrap_or_default();
            err(&key, msg)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("", format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&text)
    }

    /// Every check that the types alone do not make.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = &self.engine;
        for (key, v) in [
            ("engine.accounts_max", e.accounts_max),
            ("engine.instruments_max", e.instruments_max),
            ("engine.positions_max", e.positions_max),
            ("engine.trades_max", e.trades_max),
        ] {
            if v == 0 {
                return Err(err(key, "must be at least 1"));
            }
            if v > Limits::EACH_MAX {
                return Err(err(
                    key,
                    format!("{v} is above the largest capacity {}", Limits::EACH_MAX),
                ));
            }
        }
        for (key, v) in [
            ("engine.ingress_ring", e.ingress_ring),
            ("engine.apply_ring", e.apply_ring),
            ("engine.egress_ring", e.egress_ring),
            ("engine.client_inflight_max", e.client_inflight_max),
        ] {
            if v < 2 || !v.is_power_of_two() {
                return Err(err(key, format!("{v} is not a power of two >= 2")));
            }
            if v > RING_SLOTS_MAX {
                return Err(err(key, format!("{v} is above {RING_SLOTS_MAX}")));
            }
        }
        if e.batch_max == 0 || e.batch_max > e.apply_ring.min(BATCH_MAX_MAX) {
            return Err(err(
                "engine.batch_max",
                format!(
                    "{} must be in 1..=engine.apply_ring ({}) and at most {BATCH_MAX_MAX}",
                    e.batch_max, e.apply_ring
                ),
            ));
        }
        if e.subscriber_buffer < 2
            || !e.subscriber_buffer.is_power_of_two()
            || e.subscriber_buffer > RING_SLOTS_MAX
        {
            return Err(err(
                "engine.subscriber_buffer",
                format!("{} is not a power of two in 2..={RING_SLOTS_MAX}", e.subscriber_buffer),
            ));
        }
        self.wait_strategy()?;
        let fused = self.fused()?;
        if fused && self.threads.pin.len() > 1 {
            return Err(err("threads.pin", "give one CPU (the fused pipeline thread) or none"));
        }
        if !fused && !self.threads.pin.is_empty() && self.threads.pin.len() != 3 {
            return Err(err(
                "threads.pin",
                "give three CPUs (sequencer, state machine, egress) or none",
            ));
        }
        if self.threads.lookup_cpu.is_some() && !self.threads.lookup_stage {
            return Err(err("threads.lookup_cpu", "set threads.lookup_stage = true to use it"));
        }
        if !(0..=99).contains(&self.threads.fifo_priority) {
            return Err(err("threads.fifo_priority", "must be in 0..=99"));
        }
        self.listen_addr()?;
        if self.net.connections_max == 0 {
            return Err(err("net.connections_max", "must be at least 1"));
        }
        if self.net.subscriptions_per_connection == 0 {
            return Err(err("net.subscriptions_per_connection", "must be at least 1"));
        }
        if self.net.subscriptions_max == 0 {
            return Err(err("net.subscriptions_max", "must be at least 1"));
        }
        if self.net.write_timeout_ms == 0 {
            return Err(err("net.write_timeout_ms", "must be at least 1"));
        }
        if self.net.busy_poll_us > BUSY_POLL_US_MAX {
            return Err(err("net.busy_poll_us", format!("must be at most {BUSY_POLL_US_MAX}")));
        }
        if self.durability.policy == DurabilityPolicy::Fsync && self.data_dir.is_empty() {
            return Err(err("durability.policy", "fsync needs a data_dir"));
        }
        Ok(())
    }

    pub fn limits(&self) -> Limits {
        Limits {
            accounts_max: self.engine.accounts_max,
            instruments_max: self.engine.instruments_max,
            positions_max: self.engine.positions_max,
            trades_max: self.engine.trades_max,
        }
    }

    /// `threads.stages`: true for `fused`.
    pub fn fused(&self) -> Result<bool, ConfigError> {
        match self.threads.stages.as_str() {
            "split" => Ok(false),
            "fused" => Ok(true),
            other => Err(err("threads.stages", format!("{other:?} is not \"split\" or \"fused\""))),
        }
    }

    pub fn wait_strategy(&self) -> Result<WaitStrategy, ConfigError> {
        self.threads
            .wait
            .parse()
            .map_err(|e: novate_ring::wait::UnknownWaitStrategy| err("threads.wait", e.to_string()))
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.net.listen.parse().map_err(|e| {
            err("net.listen", format!("{:?} is not an address:port ({e})", self.net.listen))
        })
    }

    pub fn data_dir(&self) -> Option<PathBuf> {
        (!self.data_dir.is_empty()).then(|| PathBuf::from(&self.data_dir))
    }
}

/// Best effort: the dotted key at the error's position (`[section]` header + `key =`).
fn key_of_toml_error(text: &str, e: &toml::de::Error) -> Option<String> {
    let span = e.span()?;
    let before = text.get(..span.start)?;
    let mut section = String::new();
    for line in before.lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            section = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let key = if key.is_empty() || key.starts_with('[') { "" } else { key };
    Some(match (section.is_empty(), key.is_empty()) {
        (true, _) => key.to_string(),
        (false, true) => section,
        (false, false) => format!("{section}.{key}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        Config::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        let e = Config::from_toml("[engine]\ningress_ring = 1000\n").unwrap_err();
        assert_eq!(e.key, "engine.ingress_ring");
        assert!(e.reason.contains("power of two"), "{e}");
        let e = Config::from_toml("[engine]\nbogus = 1\n").unwrap_err();
        assert!(e.reason.contains("bogus"), "{e}");
        assert_eq!(e.key, "engine.bogus");
        let e = Config::from_toml("[threads]\nwait = \"spin\"\n").unwrap_err();
        assert_eq!(e.key, "threads.wait");
        let e = Config::from_toml("[threads]\nstages = \"one\"\n").unwrap_err();
        assert_eq!(e.key, "threads.stages");
        let e = Config::from_toml("[threads]\nstages = \"fused\"\npin = [0, 1, 1]\n").unwrap_err();
        assert_eq!(e.key, "threads.pin");
        assert!(Config::from_toml("[threads]\nstages = \"fused\"\npin = [1]\n").is_ok());
        let e = Config::from_toml("[engine]\naccounts_max = \"many\"\n").unwrap_err();
        assert_eq!(e.key, "engine.accounts_max");
        let e = Config::from_toml("[durability]\npolicy = \"sometimes\"\n").unwrap_err();
        assert_eq!(e.key, "durability.policy");
        let e = Config::from_toml("[durability]\npolicy = \"fsync\"\n").unwrap_err();
        assert_eq!(e.key, "durability.policy");
        let e = Config::from_toml("[net]\nlisten = \"nowhere\"\n").unwrap_err();
        assert_eq!(e.key, "net.listen");
        let e = Config::from_toml("[engine]\nbatch_max = 0\n").unwrap_err();
        assert_eq!(e.key, "engine.batch_max");
        let huge = "[engine]\napply_ring = 16777216\nbatch_max = 16777216\n";
        assert_eq!(Config::from_toml(huge).unwrap_err().key, "engine.batch_max");
        let e = Config::from_toml("[net]\nsubscriptions_max = 0\n").unwrap_err();
        assert_eq!(e.key, "net.subscriptions_max");
        let e = Config::from_toml("[net]\nsubscriptions_per_connection = 0\n").unwrap_err();
        assert_eq!(e.key, "net.subscriptions_per_connection");
        let e = Config::from_toml("[threads]\nlookup_cpu = 1\n").unwrap_err();
        assert_eq!(e.key, "threads.lookup_cpu");
        let c = Config::from_toml("[threads]\nlookup_stage = true\nlookup_cpu = 1\n").unwrap();
        assert_eq!((c.threads.lookup_stage, c.threads.lookup_cpu), (true, Some(1)));
        assert!(!Config::default().threads.lookup_stage);
        let e = Config::from_toml("[threads]\ncombine = \"no\"\n").unwrap_err();
        assert_eq!(e.key, "threads.combine");
        let c = Config::from_toml("[threads]\nstages = \"fused\"\ncombine = false\n").unwrap();
        assert!(!c.threads.combine && Config::default().threads.combine);
        let e = Config::from_toml("[net]\nbusy_poll_us = 1000001\n").unwrap_err();
        assert_eq!(e.key, "net.busy_poll_us");
        assert!(e.reason.contains("at most 1000000"), "{e}");
        let e = Config::from_toml("[net]\nbusy_poll_us = -1\n").unwrap_err();
        assert_eq!(e.key, "net.busy_poll_us");
        let c = Config::from_toml("[net]\nbusy_poll_us = 100\n").unwrap();
        assert_eq!((c.net.busy_poll_us, Config::default().net.busy_poll_us), (100, 0));
    }
}
