//! The deterministic clearing state machine.
//!
//! # Layout
//! Accounts and instruments live in dense arrays (`row`, `col`) reached through fixed-capacity
//! id maps. Positions are 64-byte records (one cache line) allocated to their account in chunks
//! of [`CHUNK_POSITIONS`] adjacent slots, and a (account id, instrument id) map finds one
//! position in one probe. Each instrument lists its holders' slots in 64-byte chunks.
//! Everything is allocated in [`StateMachine::new`]; `apply` never allocates
//! (tests/no_alloc.rs proves it).
//!
//! # Valuation
//! Each account keeps the exact totals ([`Totals`]) of its positions' value terms at current
//! marks; they always fit in i128 (the account invariant below), so a change is one checked add
//! per part, and only a difference that itself does not fit goes through a wide sum
//! ([`Sums`]). A trade updates them by the difference in its own position only; a change of
//! mark, margin rate or settlement re-values that instrument's holders (check pass, then apply
//! pass). So a trade costs O(1) whatever the account holds, and risk always sees current marks.
//! Invariant: every position's terms at its instrument's current mark fit their types; a
//! command that would break it is rejected with `Overflow`.
//!
//! # Determinism
//! No clocks, no randomness; maps are only probed, never iterated for output. Mark-to-market
//! emits in ascending account id, and `state_hash()` walks ids in ascending order.

use crate::command::*;
use crate::hash::{record, Digest, StableHasher};
use crate::lookahead::{look_ahead, LookupStage, Lookups};
use crate::map::{
    prefetch_element, prefetch_element_bytes, FixedMap, MapReader, PairKey, Probe, TradeIndex,
};
use crate::position::{Book, MarkedFill, MarkedUnit, Sums, Totals, Valued};
use crate::units::*;
use crate::valuation::{value_columns, Columns};
use std::sync::Arc;

/// Positions per allocation chunk: 4 x 64 B = 256 B, adjacent lines the prefetcher pulls in.
pub const CHUNK_POSITIONS: usize = 4;
/// Holder slots per 64-byte holder chunk (15 slots + the next-chunk index).
pub const CHUNK_HOLDERS: usize = 15;
/// Commands ahead whose positions `apply_batch` looks up (its second stage; its first
/// prefetches their index slots twice this far ahead). 8 (it was 4) takes 6-10 % off a trade
/// on the 1M-position book on a Zen 4 VM, and changes nothing on the cache-resident books; 12
/// was no better and 16 worse (PERFORMANCE.md, twenty-seventh session).
pub const PREFETCH_DISTANCE: usize = 8;
/// Commands ahead of the hint asked for whose lines `apply_batch_on` prefetches (32 ahead
/// of the command applied).
const COMMAND_PREFETCH: usize = 24;
/// Commands at the start of a batch that `apply_batch_on` looks up itself, as `apply_batch`
/// does, while the stage's thread starts on the rest: their lookups and the application of
/// the first eight take about as long as the stage takes to publish its first hints after a
/// hand-over (~0.45 us between two close cores; ~0.8 us on the 1M book, whose lookups wait
/// for DRAM), which the state machine's thread would otherwise spend waiting.
const HEAD: usize = 16;
/// The most commands a batch's head can be ([`LookupStage::force_head`]).
const HEAD_MAX: usize = 32;

/// Accounts' bytes past which `apply_batch_on`'s stage finds the rows of holders too
/// ([`Indices::resolve`]'s `HOLDERS`): the accounts no longer fit the L2, and an account's line,
/// prefetched only once its position has come (`resolve_rows`), may come too late. On a
/// smaller book it is the stage's work for nothing (1.7 ns a trade more on the 9,556-position
/// book's uniform workload; docs/PERFORMANCE.md, twenty-ninth session).
const HOLDER_ROWS_MIN_BYTES: usize = 4 << 20;

/// Commands ahead whose accounts `apply_batch` prefetches (its third stage, after their
/// positions: see `StateMachine::resolve_rows`): the account's line, mostly from the L3,
/// comes in time; a position's, from DRAM, needs the longer lead (4 here was slower, and 1).
const ROW_DISTANCE: usize = 2;
/// Holders ahead whose position and account lines a walk over an instrument's holders
/// prefetches (`collect_holders`, `revalue_holders`, `settlement_price`): a holder's
/// re-valuation is a few hundred instructions, a fetch from DRAM as long as several.
const HOLDER_DISTANCE: usize = 8;
/// Events one ClearTrade or BustTrade can emit: cleared, 2 positions, 2 x (3 breaches + call).
pub const TRADE_EVENTS_MAX: usize = 11;
pub(crate) const NONE: u32 = u32::MAX;
/// A date known to be valid, to start the trade-date cache with (it must only ever hold one).
const EPOCH_DATE: Date = 19700101;

/// Capacities, fixed at start-up. Running out is a typed rejection, never a silent drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub accounts_max: u32,
    pub instruments_max: u32,
    /// Open or flat positions remembered (a flat position keeps its realized P&L).
    pub positions_max: u32,
    /// Trade ids remembered for duplicate detection and busts.
    pub trades_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            accounts_max: 10_000,
            instruments_max: 1_000,
            positions_max: 100_000,
            trades_max: 1_000_000,
        }
    }
}

/// Limits that cannot be honoured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitsError {
    /// A capacity was 0.
    Zero(&'static str),
    /// The slots needed do not fit the u32 indices (or sane memory).
    TooLarge(&'static str),
}

impl std::fmt::Display for LimitsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitsError::Zero(k) => write!(f, "limit {k} must be at least 1"),
            LimitsError::TooLarge(k) => write!(f, "limit {k} is too large"),
        }
    }
}

impl std::error::Error for LimitsError {}

impl Limits {
    /// Largest value of each capacity (keeps every index in u32 and memory within reason).
    pub const EACH_MAX: u32 = 1 << 28;

    fn validate(&self) -> Result<(), LimitsError> {
        for (name, v) in [
            ("accounts_max", self.accounts_max),
            ("instruments_max", self.instruments_max),
            ("positions_max", self.positions_max),
            ("trades_max", self.trades_max),
        ] {
            if v == 0 {
                return Err(LimitsError::Zero(name));
            }
            if v > Self::EACH_MAX {
                return Err(LimitsError::TooLarge(name));
            }
        }
        Ok(())
    }

    /// Chunks so that `positions_max` positions always fit: each account wastes < 1 chunk.
    fn chunks(&self) -> usize {
        (self.positions_max as usize).div_ceil(CHUNK_POSITIONS) + self.accounts_max as usize
    }

    /// Holder chunks so that `positions_max` holders always fit: each instrument wastes < 1.
    fn holder_chunks(&self) -> usize {
        (self.positions_max as usize).div_ceil(CHUNK_HOLDERS) + self.instruments_max as usize
    }
}

/// An account's totals and the bounds of its post-trade checks as a trade between two holders
/// reads and writes them, in one cache line, in 64 bits: the totals as offsets from the
/// account's base ([`Account::base`], exact, set whenever the funds are set:
/// [`Account::set_funds`]), the bounds with the base and the collateral taken out. A trade
/// moves the offsets by its change of terms while they fit ([`Narrow::shifted`]); the base
/// absorbs any magnitude, so an account of any size trades in 64 bits.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Narrow {
    /// The totals (notional, unrealized, realized, margin, as [`Totals`]) less the base's
    /// (0 while the funds are wide).
    totals: [Money64; 4],
    /// The checks' bounds for the offsets, clamped to i64 (a clamped bound decides as the
    /// exact one for every offset, or the funds are wide): MaxNotional fails when the notional
    /// offset is above `notional_cap`, MaxLoss when the P&L offset (realized + unrealized) is
    /// below `loss_floor`, Margin when the excess offset (P&L - margin) is below
    /// `excess_floor`, MaxPosition when `|qty|` is above `position_cap` (`u64::MAX`: none;
    /// [`WIDE`], which no limit is: the funds are wide, the base alone, and the narrow path
    /// declines the account: an account astronomically far out, see `Account::set_funds`).
    notional_cap: Money64,
    loss_floor: Money64,
    excess_floor: Money64,
    position_cap: u64,
}

/// [`Narrow::position_cap`] when the account's funds are wide (a limit of 0 is none).
const WIDE: u64 = 0;
type Money64 = i64;

impl Narrow {
    /// The offsets moved by `delta`, unchecked against the limits (a re-valuation at a new mark
    /// checks none): `None` when the funds are wide or an offset does not fit in 64 bits. Then
    /// the exact totals (the base plus these) can be valued ([`valuation`] cannot overflow:
    /// see [`shifted`](Self::shifted)).
    #[inline(always)]
    fn moved(&self, delta: &[i64; 4]) -> Option<[Money64; 4]> {
        if self.position_cap == WIDE {
            return None;
        }
        let t = self.totals;
        Some([
            t[0].checked_add(delta[0])?,
            t[1].checked_add(delta[1])?,
            t[2].checked_add(delta[2])?,
            t[3].checked_add(delta[3])?,
        ])
    }

    /// The offsets moved by a position's change of terms `delta` (as [`MarkedFill::leg`] gives
    /// it) and the post-trade checks of the totals and the new book's `qty` ([`checks`]' bits),
    /// in 64-bit arithmetic; `None` when the funds are wide or an offset does not fit in 64
    /// bits (then the exact path answers). Equal to the exact path wherever it answers: the
    /// base and the collateral are within +-2^124 (`Account::set_funds`), so the exact totals,
    /// equity and excess fit in i128 and `checks` would not fail, and each bound decides as
    /// the limit does.
    #[inline(always)]
    fn shifted(&self, qty: Qty, delta: &[i64; 4]) -> Option<([Money64; 4], u8)> {
        let n = self.moved(delta)?;
        let pnl = n[2].checked_add(n[1])?;
        let excess = pnl.checked_sub(n[3])?;
        let pos = qty.unsigned_abs() > self.position_cap;
        let (notional, loss) = (n[0] > self.notional_cap, pnl < self.loss_floor);
        Some((
            n,
            u8::from(pos)
                | u8::from(notional) << 1
                | u8::from(loss) << 2
                | u8::from(excess < self.excess_floor) << 3,
        ))
    }
}

/// An account, its fields ordered so that a trade on a position it holds reads and writes
/// only its first cache line ([`Narrow`]); a CheckOrder or a trade that opens a position
/// reads the other three too (its limits as given, suspension, position count and chunks; its
/// base; its collateral): see `ACCOUNT_HOLDER_BYTES`. Its spec is [`Account::spec`].
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Account {
    narrow: Narrow,
    /// The limits as given (0: none), for its spec.
    max_notional: Money,
    max_loss: Money,
    max_position: Qty,
    positions: u32,
    suspended: bool,
    /// Its position chunks: the first and the one it fills next (NONE before its first
    /// position); `chunk_next` links them.
    first_chunk: u32,
    last_chunk: u32,
    id: AccountId,
    /// Exact totals of its positions' value terms at current marks (derived, not hashed),
    /// less the offsets in `narrow` (all of them while its funds are wide). Read the totals
    /// with [`Account::totals`].
    base: Totals,
    collateral: Money,
}

/// The bytes at the start of an [`Account`] that a trade between holders touches
/// ([`Narrow`]), all that is prefetched for one; for anything else, the whole account is.
const ACCOUNT_HOLDER_BYTES: usize = 64;
const _: () = assert!(std::mem::size_of::<Narrow>() == ACCOUNT_HOLDER_BYTES);
/// The bytes at the start of an [`Account`] that a CheckOrder reads: its suspension too.
const ACCOUNT_ORDER_BYTES: usize = 128;
const _: () = assert!(std::mem::offset_of!(Account, suspended) < ACCOUNT_ORDER_BYTES);

impl Account {
    fn new(spec: AccountSpec) -> Account {
        let mut a = Account {
            narrow: Narrow {
                totals: [0; 4],
                notional_cap: 0,
                loss_floor: 0,
                excess_floor: 0,
                position_cap: 0,
            },
            max_notional: 0,
            max_loss: 0,
            max_position: 0,
            positions: 0,
            suspended: false,
            first_chunk: NONE,
            last_chunk: NONE,
            id: 0,
            base: Totals::default(),
            collateral: 0,
        };
        a.set_spec(spec);
        a
    }

    fn spec(&self) -> AccountSpec {
        AccountSpec {
            id: self.id,
            max_position: self.max_position,
            max_notional: self.max_notional,
            max_loss: self.max_loss,
            suspended: self.suspended,
        }
    }

    /// Set the spec; its limits are non-negative (`upsert_account` checks).
    fn set_spec(&mut self, s: AccountSpec) {
        let totals = self.totals();
        (self.id, self.max_position, self.max_notional, self.max_loss, self.suspended) =
            (s.id, s.max_position, s.max_notional, s.max_loss, s.suspended);
        // The bounds follow the limits.
        self.set_funds(self.collateral, totals);
    }

    /// MaxNotional fails when the notional is above this (`i128::MAX`: no limit).
    fn notional_cap(&self) -> Money {
        if self.max_notional == 0 {
            i128::MAX
        } else {
            self.max_notional
        }
    }

    /// MaxLoss fails when the P&L is below this (`i128::MIN`: no limit). Fits: `max_loss >= 0`.
    fn loss_floor(&self) -> Money {
        if self.max_loss == 0 {
            i128::MIN
        } else {
            -self.max_loss
        }
    }

    /// MaxPosition fails when `|qty|` is above this (`u64::MAX`: no limit).
    fn position_cap(&self) -> u64 {
        match self.max_position {
            0 => u64::MAX,
            m => m as u64,
        }
    }

    fn is_wide(&self) -> bool {
        self.narrow.position_cap == WIDE
    }

    fn totals(&self) -> Totals {
        let [n, u, r, m] = self.narrow.totals.map(i128::from);
        // Fit: the base is within +-2^124 while the funds are narrow, and the offsets are 0
        // while they are wide.
        let b = &self.base;
        Totals {
            notional: b.notional + n,
            unrealized: b.unrealized + u,
            realized: b.realized + r,
            margin: b.margin + m,
        }
    }

    /// Set the collateral and the totals: the totals become the base, the offsets 0, and the
    /// bounds are the limits and the collateral less the base. Wide (the narrow path declines
    /// the account's trades) when the collateral or a total is beyond +-2^124, or a bound
    /// clamped to i64 would not decide as the limit does: a check that always fails whatever
    /// the offset (the account is beyond the limit by more than 2^63), whose bound is beyond
    /// the offsets' range on the failing side. Astronomical accounts only.
    fn set_funds(&mut self, collateral: Money, t: Totals) {
        (self.collateral, self.base) = (collateral, t);
        let bounds = (|| {
            if !near_zero(collateral, &t) {
                return None;
            }
            // Within +-2^124 each: the sums below fit, and so do the limits less them.
            let (pnl, min, max) = (t.realized + t.unrealized, i64::MIN.into(), i64::MAX.into());
            // notional_base + offset > cap  <=>  offset > cap - notional_base.
            let notional = self.notional_cap().saturating_sub(t.notional);
            // pnl_base + offset < floor  <=>  offset < floor - pnl_base.
            let loss = self.loss_floor().saturating_sub(pnl);
            // collateral + pnl_base - margin_base + offset < 0  <=>  offset < -(...).
            let excess = -(collateral + pnl - t.margin);
            // A bound past the offsets' range on the side where the check fails would fail
            // every offset, but a clamped one not the offset at the clamp.
            if notional < min || loss > max || excess > max {
                return None;
            }
            let clamp = |x: i128| x.clamp(min, max) as i64;
            Some([clamp(notional), clamp(loss), clamp(excess)])
        })();
        // Not WIDE: a limit of 0 is none, u64::MAX.
        let position_cap = self.position_cap();
        let n = &mut self.narrow;
        n.totals = [0; 4];
        match bounds {
            Some([notional, loss, excess]) => {
                (n.notional_cap, n.loss_floor, n.excess_floor, n.position_cap) =
                    (notional, loss, excess, position_cap);
            }
            None => n.position_cap = WIDE,
        }
    }

    /// Set the totals: as offsets from the base when they fit (the bounds stay), else as the
    /// new base ([`set_funds`](Self::set_funds)).
    fn set_totals(&mut self, t: Totals) {
        let b = &self.base;
        let offset = |x: Money, base: Money| i64::try_from(x.checked_sub(base)?).ok();
        let offsets = (|| {
            Some([
                offset(t.notional, b.notional)?,
                offset(t.unrealized, b.unrealized)?,
                offset(t.realized, b.realized)?,
                offset(t.margin, b.margin)?,
            ])
        })();
        match offsets {
            Some(o) if !self.is_wide() => self.narrow.totals = o,
            _ => self.set_funds(self.collateral, t),
        }
    }

    fn set_collateral(&mut self, collateral: Money) {
        self.set_funds(collateral, self.totals());
    }
}

#[derive(Clone, Copy, Debug)]
struct Instrument {
    spec: InstrumentSpec,
    /// Last mark or settlement price; 0 = none yet.
    explicit_mark: Price,
    /// Last cleared trade price; 0 = none yet.
    last_price: Price,
    /// `last_price_record(spec.id, last_price)`, the last price's record as the state digest
    /// holds it; 0 while it is out of the digest (the price changed since the digest was last
    /// settled, and the column is in `dirty_prices`: see [`StateMachine::settle_some`]).
    last_record: u64,
    /// Holder chunks (NONE if none) and the number of holders (positions, open or flat).
    holders_first: u32,
    holders_last: u32,
    holders: u32,
    /// A unit's value and margin at the mark ([`Instrument::mark`]), for the trades that do
    /// not move it: set by [`Instrument::refresh`] whenever the mark or the spec changes.
    unit: MarkedUnit,
}

impl Instrument {
    /// Compute [`unit`](Self::unit) again, after the mark or the spec changed.
    fn refresh(&mut self) {
        self.unit = MarkedUnit::new(self.mark(), self.spec.multiplier, self.spec.margin_bps);
    }

    /// SPEC.md: the last settlement or mark price, else the last cleared trade price (0: none).
    fn mark(&self) -> Price {
        if self.explicit_mark != 0 {
            self.explicit_mark
        } else {
            self.last_price
        }
    }
}

/// One cache line per position.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Position {
    book: Book,
    account: u32,
    instrument: u32,
    /// This position's record hash as the state digest holds it (derived from the other
    /// fields); 0 while it is out of the digest (the book changed since the digest was last
    /// settled, and the slot is in `dirty_positions`: see [`StateMachine::settle_some`]).
    record: u64,
}

const _: () = assert!(std::mem::size_of::<Position>() == 64);
// The narrow line; the spec, counts and chunk links; the base; the collateral: four lines, of
// which a trade between holders touches one.
const ACCOUNT_BYTES: usize = std::mem::size_of::<Account>();
const _: () = assert!(ACCOUNT_BYTES == 256);

/// One cache line of an instrument's holder list.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct HolderChunk {
    slots: [u32; CHUNK_HOLDERS],
    next: u32,
}

const _: () = assert!(std::mem::size_of::<HolderChunk>() == 64);

#[derive(Clone, Copy, Debug)]
struct TradeRecord {
    trade: Trade,
    busted: bool,
}

/// The whole business state in ascending id order: what snapshots store and restore.
/// `StateMachine::restore(limits, &state.export())` has the same `state_hash()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Spec, explicit mark (0: none), last trade price (0: none), ascending id.
    pub instruments: Vec<(InstrumentSpec, Price, Price)>,
    /// Spec and collateral, ascending id.
    pub accounts: Vec<(AccountSpec, Money)>,
    /// Ascending (account id, instrument id); flat positions included (they keep realized).
    pub positions: Vec<(AccountId, InstrumentId, Book)>,
    /// Remembered trades and whether each was busted, ascending trade id.
    pub trades: Vec<(Trade, bool)>,
    /// Sequence number of the last command applied.
    pub last_seq: Seq,
}

/// Why a snapshot cannot be restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreError {
    Limits(LimitsError),
    /// The snapshot holds more than the limits allow, or refers to unknown ids, or repeats one.
    Invalid(&'static str),
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Limits(e) => write!(f, "{e}"),
            RestoreError::Invalid(why) => write!(f, "invalid snapshot: {why}"),
        }
    }
}

impl std::error::Error for RestoreError {}

/// A command with what the sequencer stamped on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sequenced {
    pub seq: Seq,
    pub ts: Nanos,
    pub cmd: Command,
}

/// An item of a batch for [`StateMachine::apply_batch_with`]: a command held inside a larger
/// item (a pipeline's ring entry), so that applying it copies nothing first; either plain or
/// [`Prepared`] (with the hashes of its index keys, computed on another thread).
pub trait BatchItem {
    fn item(&self) -> Item<'_>;
}

/// What a [`BatchItem`] holds.
#[derive(Clone, Copy, Debug)]
pub enum Item<'a> {
    Plain(&'a Sequenced),
    Prepared(&'a Prepared),
}

impl<'a> Item<'a> {
    #[inline]
    pub fn sequenced(self) -> &'a Sequenced {
        match self {
            Item::Plain(s) => s,
            Item::Prepared(p) => &p.s,
        }
    }

    /// The hashes of the command's index keys: the prepared ones, or computed now.
    #[inline]
    pub(crate) fn index_hashes(self) -> IndexHashes {
        match self {
            Item::Prepared(Prepared { h: Some(h), .. }) => *h,
            _ => IndexHashes::of(&self.sequenced().cmd),
        }
    }

    /// [`index_hashes`](Self::index_hashes) of the trade `t` that this item holds.
    #[inline(always)]
    fn trade_hashes(self, t: &Trade) -> IndexHashes {
        match self {
            Item::Prepared(Prepared { h: Some(h), .. }) => *h,
            _ => IndexHashes::of_trade(t),
        }
    }
}

impl BatchItem for Sequenced {
    #[inline]
    fn item(&self) -> Item<'_> {
        Item::Plain(self)
    }
}

impl BatchItem for Prepared {
    #[inline]
    fn item(&self) -> Item<'_> {
        Item::Prepared(self)
    }
}

/// A sequenced command that may carry the hashes of its index keys ([`hash`](Self::hash)), so
/// that another thread (the pipeline's sequencer) spares the state machine's the work. The
/// fields are private and the hashes are only ever computed from the command held: they always
/// agree (a wrong hash would make a duplicate trade id go unseen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepared {
    s: Sequenced,
    h: Option<IndexHashes>,
}

impl Prepared {
    /// `s`, not hashed yet (the state machine hashes it if it needs to).
    #[inline]
    pub fn new(s: Sequenced) -> Prepared {
        Prepared { s, h: None }
    }

    /// Compute the hashes of the command's index keys.
    #[inline]
    pub fn hash(&mut self) {
        self.h = Some(IndexHashes::of(&self.s.cmd));
    }

    #[inline]
    pub fn sequenced(&self) -> &Sequenced {
        &self.s
    }
}

/// A position as queries see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PositionView {
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub qty: Qty,
    pub cost: Money,
    pub realized: Money,
    /// At the instrument's current mark (0 when it has no mark).
    pub unrealized: Money,
    /// `cost / (qty * m)`, display only; `None` when flat.
    pub avg_price: Option<Price>,
}

/// An account as queries see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountView {
    pub spec: AccountSpec,
    pub collateral: Money,
    pub totals: Totals,
    /// collateral + realized + unrealized.
    pub equity: Money,
    /// Initial margin (rate model).
    pub margin: Money,
    /// equity - margin.
    pub excess: Money,
    pub positions: u32,
}

/// The parts of an account that commands change (see
/// [`StateMachine::account_funds_at`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountFunds {
    pub collateral: Money,
    pub totals: Totals,
    pub positions: u32,
    /// Its equity and excess fit in i128 ([`StateMachine::account_at`] answers `Ok`).
    pub valued: bool,
}

/// A position by slot, with the dense indices of its account and instrument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotPosition {
    pub row: u32,
    pub col: u32,
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub book: Book,
}

/// An instrument as queries see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstrumentView {
    pub spec: InstrumentSpec,
    /// 0 when none yet.
    pub mark: Price,
    pub last_price: Price,
    pub holders: u32,
}

/// Where a trade's two legs are: the buyer's and seller's account rows, the instrument's
/// column, and the buyer's and seller's position slots; `NONE` where not known (look it up).
/// The batch path fills them ahead of applying a trade (its prefetch lookups, kept as hints).
/// A CheckOrder's are its account's row and position's slot (the first of each) and the
/// column.
#[derive(Clone, Copy)]
pub(crate) struct Legs {
    rows: [u32; 2],
    col: u32,
    slots: [u32; 2],
}

impl Legs {
    pub(crate) const NONE: Legs = Legs { rows: [NONE; 2], col: NONE, slots: [NONE; 2] };

    /// The legs as three words (for [`LookupStage`]'s hints, atomic words).
    #[inline(always)]
    pub(crate) fn to_words(self) -> [u64; 3] {
        let pair = |p: [u32; 2]| u64::from(p[0]) | u64::from(p[1]) << 32;
        [pair(self.slots), pair(self.rows), u64::from(self.col)]
    }

    /// The legs of [`to_words`](Self::to_words).
    #[inline(always)]
    pub(crate) fn from_words(w: [u64; 3]) -> Legs {
        let pair = |w: u64| [w as u32, (w >> 32) as u32];
        Legs { slots: pair(w[0]), rows: pair(w[1]), col: w[2] as u32 }
    }
}

/// A command's lookups made by [`StateMachine::resolve_ahead`], for
/// [`StateMachine::apply_resolved`] (a measurement of a two-stage split).
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct Resolved(Legs);

/// The three indices a batch's lookups read: the state machine's own, or readers of them on
/// another thread ([`LookupStage`]).
#[derive(Clone, Copy)]
pub(crate) struct Indices<'a> {
    pub(crate) positions: &'a MapReader<PairKey>,
    pub(crate) accounts: &'a MapReader<u64>,
    pub(crate) instruments: &'a MapReader<u64>,
}

impl Indices<'_> {
    /// Look up the accounts, instrument and positions of a trade (or of a CheckOrder: as a
    /// trade's buyer, with no seller) ahead of applying it; `found_position(slot)` and
    /// `found_account(row)` are called for each position found, and each account found that
    /// holds no position in the instrument (to prefetch their lines). Only hits are kept:
    /// rows, columns and slots never move or disappear, so a hit is still true when the trade
    /// is applied; a miss (an account or position that a command in between may create) is
    /// looked up again then. `hashes` are the command's ([`IndexHashes::of`]); `last` is the
    /// last instrument found (id, column; id 0, which no instrument has, before the first),
    /// updated here.
    ///
    /// The batch's second stage: a holder's row and the column are left for the third
    /// ([`StateMachine::resolve_rows`]), which reads them from the position found here; the
    /// account index is read only for an account that does not hold the instrument, the
    /// instrument index only when neither account holds it. (A CheckOrder reads its account's
    /// second line too, its suspension, which the third stage does not prefetch: on a book
    /// larger than the caches, one more line to wait for, mostly from the L3, than prefetching
    /// it for every trade would cost the trades.)
    ///
    /// With `HOLDERS` (a lookup stage on a large book), a holder's row and the column are
    /// found here too, from the indices, so that the state machine's thread can prefetch the
    /// account's line with the position's rather than after it; a row not found (an account
    /// the stage's reader does not see yet) stays `NONE`, for the third stage.
    #[inline(always)]
    pub(crate) fn resolve<const HOLDERS: bool>(
        self,
        cmd: &Command,
        hashes: &IndexHashes,
        last: &mut (InstrumentId, u32),
        mut found_position: impl FnMut(u32),
        mut found_account: impl FnMut(u32),
    ) -> Legs {
        // A CheckOrder as a trade's buyer; its seller is account 0, which is none: its lookups
        // find nothing.
        let (accounts, instrument) = match *cmd {
            Command::ClearTrade(ref t) => ([t.buy, t.sell], t.instrument),
            Command::CheckOrder { account, instrument, .. } => ([account, 0], instrument),
            _ => return Legs::NONE,
        };
        let mut h = Legs::NONE;
        for (k, acct) in accounts.into_iter().enumerate() {
            let key = PairKey::new(acct, instrument);
            if let Some(s) = self.positions.get_hashed(&key, hashes.positions[k]) {
                found_position(s);
                h.slots[k] = s;
                if HOLDERS {
                    h.rows[k] = self.accounts.get_hashed(&acct, hashes.accounts[k]).unwrap_or(NONE);
                }
            } else if let Some(r) = self.accounts.get_hashed(&acct, hashes.accounts[k]) {
                found_account(r);
                h.rows[k] = r;
            }
        }
        // A position found names the column too (the third stage reads it).
        if HOLDERS || h.slots == [NONE; 2] {
            h.col = resolve_col(self.instruments, instrument, last);
        }
        h
    }
}

/// The column of `instrument` in `instruments` (`NONE` if absent); `last` is the last
/// instrument found (id, column; id 0, which no instrument has, before the first), updated
/// here.
#[inline(always)]
fn resolve_col(
    instruments: &MapReader<u64>,
    instrument: InstrumentId,
    last: &mut (InstrumentId, u32),
) -> u32 {
    if instrument == last.0 {
        return last.1;
    }
    let col = instruments.get(&u64::from(instrument)).unwrap_or(NONE);
    if col != NONE {
        *last = (instrument, col);
    }
    col
}

/// The hashes of a trade's keys in the state machine's indices (of a CheckOrder, its account
/// and position as the buyer's, and account 0's, which is none, as the seller's; all zero for
/// any other command): a pure function of the command, so any thread can compute them
/// ([`Prepared`]). The batch path uses them for its prefetches, its lookups ahead and the
/// trade's duplicate check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IndexHashes {
    /// Buyer and seller in the account index.
    pub(crate) accounts: [u64; 2],
    /// Buyer's and seller's positions in the position index.
    pub(crate) positions: [u64; 2],
    /// The trade's id (0 for any other command): the trade index reads its map for an id
    /// that is not the next in order, and hashes it then ([`TradeIndex`]).
    trade_id: u64,
}

impl IndexHashes {
    /// The hashes of `cmd`'s keys.
    #[inline]
    pub(crate) fn of(cmd: &Command) -> IndexHashes {
        match *cmd {
            Command::ClearTrade(ref t) => IndexHashes::of_trade(t),
            // As a trade's buyer's, with account 0 (none) as the seller.
            Command::CheckOrder { account, instrument, .. } => IndexHashes {
                accounts: [account, 0].map(|a| FixedMap::hash(&a)),
                positions: [account, 0].map(|a| FixedMap::hash(&PairKey::new(a, instrument))),
                trade_id: 0,
            },
            _ => IndexHashes::default(),
        }
    }

    /// The hashes of the trade `t`'s keys.
    #[inline(always)]
    fn of_trade(t: &Trade) -> IndexHashes {
        IndexHashes {
            accounts: [t.buy, t.sell].map(|a| FixedMap::hash(&a)),
            positions: [t.buy, t.sell].map(|a| FixedMap::hash(&PairKey::new(a, t.instrument))),
            trade_id: t.trade_id,
        }
    }
}

/// The book of a position not held yet: flat.
const NO_BOOK: Book = Book { qty: 0, cost: 0, realized: 0 };

/// One leg's outcome: the account's new book in the instrument, its what-if totals, and the
/// post-trade checks ([`checks`]) that fail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Leg {
    book: Book,
    totals: Totals,
    /// Bit i set: `RISK_ORDER[i]` fails (a margin call's shortfall is computed when its event
    /// is, from the totals: rare).
    failed: u8,
}

/// One leg's fill: signed quantity `d` (buy > 0) at `price`; the instrument is then valued at
/// `mark`.
#[derive(Clone, Copy)]
struct Fill {
    d: Qty,
    price: Price,
    mark: Price,
}

/// Risk checks in SPEC.md's order, after the existence/suspension checks.
const RISK_ORDER: [Reject; 4] =
    [Reject::MaxPosition, Reject::MaxNotional, Reject::MaxLoss, Reject::Margin];

pub struct StateMachine {
    limits: Limits,
    account_index: FixedMap<u64>,
    accounts: Vec<Account>,
    /// Account id by row (derived; 8 bytes per account, so a walk over every position can
    /// name its account from a table that stays in cache).
    row_ids: Vec<AccountId>,
    instrument_index: FixedMap<u64>,
    instruments: Vec<Instrument>,
    position_index: FixedMap<PairKey>,
    positions: Box<[Position]>,
    chunk_next: Box<[u32]>,
    chunks_used: u32,
    positions_len: u32,
    holder_chunks: Box<[HolderChunk]>,
    holder_chunks_used: u32,
    trade_index: TradeIndex,
    trades: Vec<TradeRecord>,
    events: Vec<Event>,
    /// Position slots whose book the last accepted command changed (see `changed_positions`).
    changed: Vec<u32>,
    /// Scratch for re-valuing holders: (account row, or id when ordering, position slot).
    scratch: Vec<(u64, u32)>,
    last_seq: Seq,
    /// A calendar date: the last trade date found valid, at first [`EPOCH_DATE`]. A day's
    /// trades share their date, so the calendar check runs once per change of date. A cache
    /// of a pure function: not state, not hashed, not in snapshots.
    valid_date: Date,
    /// Order-independent digest of every hashed record (see `state_hash`) but the position
    /// books and last prices listed in `dirty_positions` and `dirty_prices` and the trades
    /// past `trades_hashed`, which are added when it is settled
    /// ([`settle_some`](Self::settle_some)): O(1) per change.
    digest: Digest,
    /// Position slots whose record is out of the digest (`Position::record` 0), each listed
    /// once: at most `positions_max`.
    dirty_positions: Vec<u32>,
    /// Instrument columns whose last price's record is out of the digest
    /// (`Instrument::last_record` 0), each listed once: at most `instruments_max`.
    dirty_prices: Vec<u32>,
    /// The remembered trades whose records are in the digest: `trades[..trades_hashed]` (the
    /// others were cleared since it was last settled).
    trades_hashed: usize,
    /// Readers of the three indices, lent to a [`LookupStage`]'s jobs
    /// ([`apply_batch_on`](Self::apply_batch_on)).
    lookups: Arc<Lookups>,
    /// Tests only: every leg of `book_legs` and every holder re-valued at a new mark through
    /// the exact path ([`leg`](Self::leg), [`revalue_holders`](Self::revalue_holders)), so
    /// that a test can hold the 64-bit legs to it.
    #[cfg(test)]
    exact_legs: bool,
}

impl StateMachine {
    /// Allocate everything the state machine will ever use.
    pub fn new(limits: Limits) -> Result<StateMachine, LimitsError> {
        limits.validate()?;
        let chunks = limits.chunks();
        let slots = chunks * CHUNK_POSITIONS;
        if slots >= NONE as usize {
            return Err(LimitsError::TooLarge("positions_max"));
        }
        let a = limits.accounts_max as usize;
        let account_index = FixedMap::new(a);
        let instrument_index = FixedMap::new(limits.instruments_max as usize);
        let position_index = FixedMap::new(limits.positions_max as usize);
        let lookups = Arc::new(Lookups {
            positions: position_index.reader(),
            accounts: account_index.reader(),
            instruments: instrument_index.reader(),
        });
        Ok(StateMachine {
            limits,
            account_index,
            accounts: with_capacity_huge(a),
            row_ids: Vec::with_capacity(a),
            instrument_index,
            instruments: Vec::with_capacity(limits.instruments_max as usize),
            position_index,
            // SAFETY: an all-zero Position is a flat book with indices 0: valid.
            positions: unsafe { crate::map::zeroed_slice(slots) },
            chunk_next: vec![NONE; chunks].into_boxed_slice(),
            chunks_used: 0,
            positions_len: 0,
            // SAFETY: an all-zero HolderChunk is valid plain data (never read before written).
            holder_chunks: unsafe { crate::map::zeroed_slice(limits.holder_chunks()) },
            holder_chunks_used: 0,
            trade_index: TradeIndex::new(limits.trades_max as usize),
            trades: with_capacity_huge(limits.trades_max as usize),
            events: Vec::with_capacity(a + TRADE_EVENTS_MAX + 1),
            // A settlement changes at most one position per account; a trade two.
            changed: Vec::with_capacity(a + 2),
            scratch: Vec::with_capacity(a),
            last_seq: 0,
            valid_date: EPOCH_DATE,
            digest: Digest::default(),
            dirty_positions: Vec::with_capacity(limits.positions_max as usize),
            dirty_prices: Vec::with_capacity(limits.instruments_max as usize),
            trades_hashed: 0,
            lookups,
            #[cfg(test)]
            exact_legs: false,
        })
    }

    /// Whether a test asked for exact legs only (never, outside tests).
    #[inline(always)]
    fn exact_legs(&self) -> bool {
        #[cfg(test)]
        return self.exact_legs;
        #[cfg(not(test))]
        false
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Commit the memory of every table, at its full capacity, now (see
    /// [`populate`](crate::map::populate)), so that no command later takes a page fault on
    /// first touch: start-up work, like the allocation in [`new`](Self::new). Nothing visible
    /// changes (the state hash included). Returns the bytes committed and the bytes asked for
    /// (less committed: the kernel refused, e.g. one older than 5.14).
    pub fn prefault(&self) -> (usize, usize) {
        fn vec<T>(v: &Vec<T>) -> (*const u8, usize) {
            (v.as_ptr().cast(), v.capacity() * std::mem::size_of::<T>())
        }
        fn boxed<T>(b: &[T]) -> (*const u8, usize) {
            (b.as_ptr().cast(), std::mem::size_of_val(b))
        }
        let [trade_bits, trade_ids, trade_slots, trade_map] = self.trade_index.memory();
        let tables = [
            self.account_index.memory(),
            vec(&self.accounts),
            vec(&self.row_ids),
            self.instrument_index.memory(),
            vec(&self.instruments),
            self.position_index.memory(),
            boxed(&self.positions),
            boxed(&self.chunk_next),
            boxed(&self.holder_chunks),
            trade_bits,
            trade_ids,
            trade_slots,
            trade_map,
            vec(&self.trades),
            vec(&self.events),
            vec(&self.changed),
            vec(&self.scratch),
            vec(&self.dirty_positions),
            vec(&self.dirty_prices),
        ];
        populate_all(&tables)
    }

    /// Sequence number of the last command applied (accepted or rejected); 0 before any.
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Apply one command. On `Err` nothing changed. `ts` is carried for the log; the state
    /// machine never reads a clock and its results do not depend on `ts`.
    pub fn apply(&mut self, cmd: &Command, seq: Seq, ts: Nanos) -> Result<&[Event], Reject> {
        self.apply_one(cmd, seq, ts, IndexHashes::of_trade)
    }

    /// [`apply`](Self::apply) of one command on its own (no batch to overlap its cache misses
    /// with): a trade's lookups are made first, overlapped ([`look_up_overlapped`]), with its
    /// index hashes from `hashes`. Not inlined, so that `apply_batch_with`'s loop holds one
    /// inlined copy of `apply_hinted` (with two, it was ~38 instructions a command slower).
    #[inline(never)]
    fn apply_one(
        &mut self,
        cmd: &Command,
        seq: Seq,
        ts: Nanos,
        hashes: impl FnOnce(&Trade) -> IndexHashes,
    ) -> Result<&[Event], Reject> {
        let hints = match cmd {
            Command::ClearTrade(t) => self.look_up_overlapped(t, &hashes(t)),
            _ => Legs::NONE,
        };
        self.apply_hinted(cmd, seq, ts, &hints)
    }

    /// A trade's lookups with their cache misses overlapped: every index slot it reads is
    /// prefetched at once, then the index entries are read and its accounts' and positions'
    /// lines prefetched at once ([`resolve_trade`](Self::resolve_trade)): two rounds of
    /// misses, each in parallel, instead of one dependent miss after another (on a book larger
    /// than the caches, most of a lone command's time: 829-857 -> 444-452 ns a trade on the
    /// 1M-position book, PERFORMANCE.md, fifteenth session).
    #[inline(always)]
    fn look_up_overlapped(&self, t: &Trade, h: &IndexHashes) -> Legs {
        self.prefetch_slots(*h);
        self.resolve_trade(t, h, &mut (0, NONE))
    }

    /// [`apply`](Self::apply), skipping the lookups `hints` already made (a trade's; any it
    /// did not make, `NONE`, are made as it applies). Inlined into each caller (the batch loop,
    /// `apply_one`): left to itself, the compiler outlined it once it had two callers.
    #[inline(always)]
    fn apply_hinted(
        &mut self,
        cmd: &Command,
        seq: Seq,
        ts: Nanos,
        hints: &Legs,
    ) -> Result<&[Event], Reject> {
        let _ = ts;
        self.last_seq = seq;
        self.events.clear();
        self.changed.clear();
        // A trade first, before the jump table of the other kinds: most commands are trades.
        if let Command::ClearTrade(t) = cmd {
            self.clear_trade(t, hints)?;
            return Ok(&self.events);
        }
        match *cmd {
            Command::UpsertInstrument(spec) => self.upsert_instrument(spec)?,
            Command::UpsertAccount(spec) => self.upsert_account(spec)?,
            Command::AdjustCollateral { account, amount } => {
                self.adjust_collateral(account, amount)?
            }
            Command::CheckOrder { account, instrument, side, qty, price } => {
                self.check_order(account, instrument, side, qty, price, hints)?
            }
            // Taken above; the arm keeps the match exhaustive without a panic path.
            Command::ClearTrade(ref t) => self.clear_trade(t, hints)?,
            Command::BustTrade { trade_id } => self.bust_trade(trade_id)?,
            Command::MarkPrice { instrument, price } => self.mark_price(instrument, price)?,
            Command::SettlementPrice { instrument, price } => {
                self.settlement_price(instrument, price)?
            }
        }
        Ok(&self.events)
    }

    /// Apply a batch in order, calling `on_result(i, result)` for each command. Equivalent to
    /// calling [`apply`](Self::apply) one by one; it prefetches, in three stages, the index
    /// slots of the trades `2 * PREFETCH_DISTANCE` commands ahead, then the positions they
    /// name `PREFETCH_DISTANCE` ahead, then the accounts those name `ROW_DISTANCE` ahead, so
    /// their cache misses overlap. A CheckOrder's account and position are looked up (and
    /// their lines prefetched) `PREFETCH_DISTANCE` ahead too.
    pub fn apply_batch(
        &mut self,
        batch: &[Sequenced],
        mut on_result: impl FnMut(usize, Result<&[Event], Reject>),
    ) {
        self.apply_batch_with(batch, |i, r, _| on_result(i, r));
    }

    /// [`apply_batch`](Self::apply_batch), with the state machine as it is after each command
    /// (to read what it changed, e.g. [`changed_positions`](Self::changed_positions)).
    ///
    /// The lookups of the second prefetch stage are kept and spare `apply` its own.
    ///
    /// The batch's items are anything that holds a [`Sequenced`] or a [`Prepared`]
    /// ([`BatchItem`]).
    pub fn apply_batch_with<T: BatchItem>(
        &mut self,
        batch: &[T],
        mut on_result: impl FnMut(usize, Result<&[Event], Reject>, &StateMachine),
    ) {
        // Per command ahead: its index hashes (from the first prefetch stage), then its hints
        // (from the second). A ring over the commands i .. i + 2 * PREFETCH_DISTANCE, its size
        // a power of two (an index is a mask, not a division).
        const AHEAD: usize = (2 * PREFETCH_DISTANCE + 1).next_power_of_two();
        const RING: usize = AHEAD - 1;
        // The last instrument resolved (id, column): trades in a row are often in one.
        let mut last = (0, NONE);
        // A batch of one has no other command to overlap its cache misses with: it is applied
        // as `apply` does (its own lookups overlapped), without setting up the rings (deferred
        // initialization; one loop below, so `on_result` has one call site and stays inlined).
        let mut rings;
        let mut ahead = None;
        if batch.len() > 1 {
            rings = ([IndexHashes::default(); AHEAD], [Legs::NONE; AHEAD]);
            let (hashes, hints) = &mut rings;
            for (k, far) in batch.iter().enumerate().take(2 * PREFETCH_DISTANCE) {
                hashes[k] = self.prefetch_index(far);
            }
            for (k, near) in batch.iter().enumerate().take(PREFETCH_DISTANCE) {
                hints[k] = self.resolve(&near.item().sequenced().cmd, &hashes[k], &mut last);
            }
            for hint in hints.iter_mut().take(ROW_DISTANCE.min(batch.len())) {
                self.resolve_rows::<false>(hint);
            }
            ahead = Some((hashes, hints));
        }
        for (i, item) in batch.iter().enumerate() {
            let s = item.item().sequenced();
            let ok = if let Some((hashes, hints)) = ahead.as_mut() {
                if let Some(far) = batch.get(i + 2 * PREFETCH_DISTANCE) {
                    hashes[(i + 2 * PREFETCH_DISTANCE) & RING] = self.prefetch_index(far);
                }
                if let Some(near) = batch.get(i + PREFETCH_DISTANCE) {
                    let k = (i + PREFETCH_DISTANCE) & RING;
                    hints[k] = self.resolve(&near.item().sequenced().cmd, &hashes[k], &mut last);
                }
                if i + ROW_DISTANCE < batch.len() {
                    self.resolve_rows::<false>(&mut hints[(i + ROW_DISTANCE) & RING]);
                }
                self.apply_hinted(&s.cmd, s.seq, s.ts, &hints[i & RING]).map(|_| ())
            } else {
                let hashes = |t: &Trade| item.item().trade_hashes(t);
                self.apply_one(&s.cmd, s.seq, s.ts, hashes).map(|_| ())
            };
            let me = &*self;
            on_result(i, ok.map(|()| &me.events[..]), me);
        }
    }

    /// The first half of a batch split in two stages, for measuring what a stage on another
    /// core could take off the state machine's (`benches/benches/core.rs`, "split"): the
    /// lookups of every command of `batch` (its positions' slots, prefetching their index
    /// slots `2 * PREFETCH_DISTANCE` ahead; an account's row where it holds no position; the
    /// column where neither account does), into `out`, without touching a position's or an
    /// account's line: what a [`LookupStage`]'s thread does.
    /// [`apply_resolved`](Self::apply_resolved) is the second half.
    #[doc(hidden)]
    pub fn resolve_ahead(&self, batch: &[Sequenced], out: &mut Vec<Resolved>) {
        out.clear();
        let item = |k: usize| (&batch[k], IndexHashes::of(&batch[k].cmd));
        look_ahead::<false>(self.indices(), batch.len(), item, |_, legs| {
            out.push(Resolved(legs));
        });
    }

    /// The second half of [`resolve_ahead`](Self::resolve_ahead): apply `batch` with the
    /// lookups `hints` made for it (`hints[i]` for `batch[i]`; any that a command before it
    /// may have changed, a miss, is looked up again, as in `apply_batch`), prefetching the
    /// positions and trade-id slots `PREFETCH_DISTANCE` ahead and the accounts (read from the
    /// positions) `ROW_DISTANCE` ahead. Equivalent to `apply_batch`.
    #[doc(hidden)]
    pub fn apply_resolved(
        &mut self,
        batch: &[Sequenced],
        hints: &[Resolved],
        mut on_result: impl FnMut(usize, Result<&[Event], Reject>),
    ) {
        assert_eq!(batch.len(), hints.len(), "a hint for every command");
        self.apply_hints(batch, |i| hints[i].0, |i, r, _| on_result(i, r));
    }

    /// [`apply_batch_with`](Self::apply_batch_with) with the lookups of its first two stages
    /// made by `stage`'s thread, ahead of this one (see [`crate::lookahead`]): this thread
    /// reads their hints, and prefetches the positions and accounts they name (on a book of
    /// more than `HOLDER_ROWS_MIN_BYTES` of accounts, the stage finds holders' rows too, so
    /// their accounts are prefetched with their positions). The same results, events and
    /// state as `apply_batch`. This thread looks up the batch's first `HEAD` commands itself
    /// while the stage starts on the rest (not to wait for its first hints); a batch of fewer
    /// than `HEAD + 2 * PREFETCH_DISTANCE` commands is applied by `apply_batch` (handing it
    /// over would cost more than its lookups). The rest goes to the stage in jobs of
    /// [`JOB_MAX`](crate::JOB_MAX), the next looked up while this thread applies one.
    pub fn apply_batch_on<T: BatchItem + Sync>(
        &mut self,
        stage: &mut LookupStage,
        batch: &[T],
        on_result: impl FnMut(usize, Result<&[Event], Reject>, &StateMachine),
    ) {
        let head = stage.head().unwrap_or(HEAD).min(HEAD_MAX);
        if batch.len() < head + 2 * PREFETCH_DISTANCE {
            return self.apply_batch_with(batch, on_result);
        }
        let holder_rows = self.row_ids.len() * ACCOUNT_BYTES > HOLDER_ROWS_MIN_BYTES;
        let mut jobs = stage.pipeline(&batch[head..], self.lookups.clone(), holder_rows);
        // The head's lookups, made here as the stage makes the rest's.
        let mut local = [Legs::NONE; HEAD_MAX];
        let item = |k: usize| {
            let it = batch[k].item();
            (it.sequenced(), it.index_hashes())
        };
        let out = |k: usize, legs| local[k] = legs;
        if holder_rows {
            look_ahead::<true>(self.indices(), head, item, out);
        } else {
            look_ahead::<false>(self.indices(), head, item, out);
        }
        let hint = |i: usize| {
            // The stage read the commands first: their lines come from its core, later than
            // from the caches' own prefetchers. Asked for `i`, this thread applies
            // `i - PREFETCH_DISTANCE` now.
            prefetch_element(batch, i + COMMAND_PREFETCH);
            if i < head {
                local[i]
            } else {
                jobs.hint(i - head)
            }
        };
        self.apply_hints(batch, hint, on_result);
        // `jobs`' drop waits for the stage to be done with `batch`.
    }

    /// Apply `batch` with the lookups `hint(i)` made for `batch[i]` ahead (asked for in
    /// order, `PREFETCH_DISTANCE` commands ahead; any that a command before it may have
    /// changed, a miss, is looked up again, as in `apply_batch`), prefetching the positions
    /// and trade-id slots `PREFETCH_DISTANCE` ahead and the accounts (read from the
    /// positions) `ROW_DISTANCE` ahead. Equivalent to `apply_batch`.
    fn apply_hints<T: BatchItem>(
        &mut self,
        batch: &[T],
        mut hint: impl FnMut(usize) -> Legs,
        mut on_result: impl FnMut(usize, Result<&[Event], Reject>, &StateMachine),
    ) {
        // The hints of commands i ..= i + PREFETCH_DISTANCE (the third stage fills in their
        // rows and columns), in a ring whose size is a power of two.
        const RING: usize = (PREFETCH_DISTANCE + 1).next_power_of_two() - 1;
        let mut ring = [Legs::NONE; RING + 1];
        let prefetch = |sm: &StateMachine, h: &Legs, cmd: &Command| {
            for k in 0..2 {
                if h.slots[k] != NONE {
                    prefetch_element(&sm.positions, h.slots[k] as usize);
                    if h.rows[k] != NONE {
                        prefetch_element_bytes(
                            &sm.accounts,
                            h.rows[k] as usize,
                            ACCOUNT_HOLDER_BYTES,
                        );
                    }
                } else if h.rows[k] != NONE {
                    prefetch_element_bytes(&sm.accounts, h.rows[k] as usize, ACCOUNT_BYTES);
                }
            }
            if let Command::ClearTrade(t) = cmd {
                sm.trade_index.prefetch(t.trade_id);
            }
        };
        for (k, s) in batch.iter().enumerate().take(PREFETCH_DISTANCE) {
            ring[k] = hint(k);
            prefetch(self, &ring[k], &s.item().sequenced().cmd);
        }
        for h in ring.iter_mut().take(ROW_DISTANCE.min(batch.len())) {
            self.resolve_rows::<true>(h);
        }
        for (i, item) in batch.iter().enumerate() {
            let s = item.item().sequenced();
            if let Some(ahead) = batch.get(i + PREFETCH_DISTANCE) {
                let k = (i + PREFETCH_DISTANCE) & RING;
                ring[k] = hint(i + PREFETCH_DISTANCE);
                prefetch(self, &ring[k], &ahead.item().sequenced().cmd);
            }
            if i + ROW_DISTANCE < batch.len() {
                self.resolve_rows::<true>(&mut ring[(i + ROW_DISTANCE) & RING]);
            }
            let ok = self.apply_hinted(&s.cmd, s.seq, s.ts, &ring[i & RING]).map(|_| ());
            let me = &*self;
            on_result(i, ok.map(|()| &me.events[..]), me);
        }
    }

    /// Prefetch the index slots of a trade's positions and trade id (the batch's first
    /// stage); the hashes of its keys.
    #[inline(always)]
    fn prefetch_index(&self, item: &impl BatchItem) -> IndexHashes {
        let item = item.item();
        // Not the accounts' index slots: the batch finds a holder's row in its position.
        // Any command's: a CheckOrder's are its position's (a trade's buyer's) and those of
        // account 0, which is none, as the seller's; another command's are 0. The prefetches
        // of hashes 0 fetch the first line of each index, which costs nothing. (No branch on
        // the kind here: with one, a trade took ~16 instructions more in the pipeline.)
        let h = item.index_hashes();
        self.prefetch_positions(h);
        h
    }

    /// Prefetch the index slots that the hashes `h` of a trade's keys name (its accounts', its
    /// positions' and its trade id's): the first of a lookup's two rounds of cache misses.
    #[inline(always)]
    fn prefetch_slots(&self, h: IndexHashes) {
        for a in h.accounts {
            self.account_index.prefetch_hashed(a);
        }
        self.prefetch_positions(h);
    }

    /// [`prefetch_slots`](Self::prefetch_slots) but the accounts' index slots.
    #[inline(always)]
    fn prefetch_positions(&self, h: IndexHashes) {
        for p in h.positions {
            self.position_index.prefetch_hashed_probe(p);
        }
        self.trade_index.prefetch(h.trade_id);
    }

    /// The row of `account` and the slot of its position in `instrument` (`None` if absent),
    /// from the hashes `h` of their index keys, each found line prefetched (of the account,
    /// `held_bytes` when it holds the position, else all): the second of a lookup's two
    /// rounds of cache misses (the first prefetched the index slots).
    #[inline(always)]
    fn find_holder(
        &self,
        account: AccountId,
        instrument: InstrumentId,
        h: [u64; 2],
        held_bytes: usize,
    ) -> (Option<u32>, Option<u32>) {
        let slot = self.position_index.get_hashed(&PairKey::new(account, instrument), h[1]);
        if let Some(s) = slot {
            prefetch_element(&self.positions, s as usize);
        }
        let row = self.account_index.get_hashed(&account, h[0]);
        if let Some(r) = row {
            // Opening a position reads all of the account.
            let bytes = if slot.is_some() { held_bytes } else { ACCOUNT_BYTES };
            prefetch_element_bytes(&self.accounts, r as usize, bytes);
        }
        (row, slot)
    }

    /// [`Indices::resolve`] on this machine's indices: a command's lookups ahead of applying
    /// it, each position found and each account found that holds no position prefetched
    /// (`hashes` are the command's, from `prefetch_index`).
    #[inline(always)]
    fn resolve(&self, cmd: &Command, hashes: &IndexHashes, last: &mut (InstrumentId, u32)) -> Legs {
        self.indices().resolve::<false>(
            cmd,
            hashes,
            last,
            |s| prefetch_element(&self.positions, s as usize),
            |r| prefetch_element_bytes(&self.accounts, r as usize, ACCOUNT_BYTES),
        )
    }

    /// This machine's three indices, for [`Indices::resolve`].
    #[inline(always)]
    fn indices(&self) -> Indices<'_> {
        Indices {
            positions: &self.position_index,
            accounts: &self.account_index,
            instruments: &self.instrument_index,
        }
    }

    /// The batch's third stage: the rows of the holders whose positions the second found, and
    /// the column, read from the positions (prefetched by it), each account's line prefetched.
    /// A position's account row and instrument column are set when it is opened and never
    /// change. Instead of lookups in the account and instrument indices: three lookups a trade
    /// fewer, and on a book larger than the caches two lines fewer to fetch (PERFORMANCE.md,
    /// twenty-first session). With `KEEP`, a row already found (by a lookup stage's
    /// [`Indices::resolve`] with `HOLDERS`) is kept, its position not read; without, `h` has
    /// none (`apply_batch`: one test fewer a leg).
    #[inline(always)]
    fn resolve_rows<const KEEP: bool>(&self, h: &mut Legs) {
        for k in 0..2 {
            if h.slots[k] != NONE && !(KEEP && h.rows[k] != NONE) {
                // SAFETY: a slot of the position index (`at`).
                let p = unsafe { at(&self.positions, h.slots[k]) };
                prefetch_element_bytes(&self.accounts, p.account as usize, ACCOUNT_HOLDER_BYTES);
                (h.rows[k], h.col) = (p.account, p.instrument);
            }
        }
    }

    /// The column of `instrument` (`NONE` if absent); `last` as for [`Indices::resolve`].
    #[inline(always)]
    fn resolve_col(&self, instrument: InstrumentId, last: &mut (InstrumentId, u32)) -> u32 {
        resolve_col(&self.instrument_index, instrument, last)
    }

    /// A lone trade's lookups (`last` as for [`resolve`](Self::resolve)): its rows from the
    /// account index, looked up with its positions (one round of misses, not two in a row).
    #[inline(always)]
    fn resolve_trade(
        &self,
        t: &Trade,
        hashes: &IndexHashes,
        last: &mut (InstrumentId, u32),
    ) -> Legs {
        let mut h = Legs::NONE;
        h.col = self.resolve_col(t.instrument, last);
        for (k, acct) in [t.buy, t.sell].into_iter().enumerate() {
            let keys = [hashes.accounts[k], hashes.positions[k]];
            // A holder's trade reads the account's first line.
            let (row, slot) = self.find_holder(acct, t.instrument, keys, ACCOUNT_HOLDER_BYTES);
            h.rows[k] = row.unwrap_or(NONE);
            h.slots[k] = slot.unwrap_or(NONE);
        }
        h
    }

    // ---- commands -------------------------------------------------------------------------

    fn upsert_instrument(&mut self, spec: InstrumentSpec) -> Result<(), Reject> {
        if spec.id == 0 {
            return Err(Reject::InvalidId);
        }
        if spec.multiplier < 1 {
            return Err(Reject::InvalidMultiplier);
        }
        if !(0..=MARGIN_BPS_MAX).contains(&spec.margin_bps) {
            return Err(Reject::InvalidMarginRate);
        }
        if spec.settle_days > SETTLE_DAYS_MAX {
            return Err(Reject::InvalidSettleDays);
        }
        match self.instrument_index.get(&u64::from(spec.id)) {
            Some(col) => {
                let ins = self.instruments[col as usize];
                if ins.spec.multiplier != spec.multiplier && ins.holders > 0 {
                    return Err(Reject::InstrumentInUse);
                }
                if ins.spec.margin_bps != spec.margin_bps {
                    self.revalue_holders(col, ins.mark(), spec.margin_bps, [NONE; 2])?;
                }
                self.instruments[col as usize].spec = spec;
                self.instruments[col as usize].refresh();
                self.digest.replace(
                    instrument_record(&ins.spec, ins.explicit_mark),
                    instrument_record(&spec, ins.explicit_mark),
                );
            }
            None => {
                let col = self.instruments.len() as u32;
                self.instrument_index
                    .insert(u64::from(spec.id), col)
                    .map_err(|_| Reject::InstrumentCapacity)?;
                let ins = Instrument {
                    spec,
                    explicit_mark: 0,
                    last_price: 0,
                    last_record: last_price_record(spec.id, 0),
                    holders_first: NONE,
                    holders_last: NONE,
                    holders: 0,
                    // No mark yet.
                    unit: MarkedUnit::default(),
                };
                self.digest.add(instrument_record(&spec, 0));
                self.digest.add(ins.last_record);
                self.instruments.push(ins);
            }
        }
        self.events.push(Event::InstrumentUpdated { instrument: spec.id });
        Ok(())
    }

    fn upsert_account(&mut self, spec: AccountSpec) -> Result<(), Reject> {
        if spec.id == 0 {
            return Err(Reject::InvalidId);
        }
        if spec.max_position < 0 || spec.max_notional < 0 || spec.max_loss < 0 {
            return Err(Reject::InvalidLimit);
        }
        match self.account_index.get(&spec.id) {
            Some(row) => {
                let a = &mut self.accounts[row as usize];
                let old = account_record(&a.spec(), a.collateral);
                a.set_spec(spec);
                self.digest.replace(old, account_record(&spec, a.collateral));
            }
            None => {
                let row = self.accounts.len() as u32;
                self.account_index.insert(spec.id, row).map_err(|_| Reject::AccountCapacity)?;
                self.digest.add(account_record(&spec, 0));
                self.row_ids.push(spec.id);
                self.accounts.push(Account::new(spec));
            }
        }
        self.events.push(Event::AccountUpdated { account: spec.id });
        Ok(())
    }

    fn adjust_collateral(&mut self, account: AccountId, amount: Money) -> Result<(), Reject> {
        let row = self.account_row(account)?;
        let acct = self.accounts[row as usize];
        let balance = acct.collateral.checked_add(amount).ok_or(Reject::Overflow)?;
        if amount < 0 && balance < 0 {
            return Err(Reject::InsufficientCollateral);
        }
        // A deposit too can overflow the account's equity (the account invariant).
        let v = valuation(balance, &acct.totals())?;
        if amount < 0 && v.excess < 0 {
            return Err(Reject::Margin);
        }
        self.accounts[row as usize].set_collateral(balance);
        self.digest.replace(
            account_record(&acct.spec(), acct.collateral),
            account_record(&acct.spec(), balance),
        );
        self.events.push(Event::CollateralChanged { account, amount, balance });
        Ok(())
    }

    fn check_order(
        &mut self,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        qty: Qty,
        price: Price,
        hints: &Legs,
    ) -> Result<(), Reject> {
        if qty <= 0 {
            return Err(Reject::InvalidQuantity);
        }
        // Signed only after the check: `-i64::MIN` would overflow.
        let d = side.signed(qty);
        if price <= 0 {
            return Err(Reject::InvalidPrice);
        }
        let (row, slot) = if hints.rows[0] != NONE {
            // Looked up by the batch ahead (`resolve`): a slot found then is still right; a
            // position not found then may have been opened since.
            let slot = match hints.slots[0] {
                NONE => self.position_index.get(&PairKey::new(account, instrument)),
                s => Some(s),
            };
            (hints.rows[0], slot)
        } else {
            // The account's and the position's index slots, then their lines, each pair
            // fetched at once (two rounds of cache misses, not four one after another).
            let keys =
                [FixedMap::hash(&account), FixedMap::hash(&PairKey::new(account, instrument))];
            self.account_index.prefetch_hashed(keys[0]);
            self.position_index.prefetch_hashed(keys[1]);
            // A CheckOrder reads the account's narrow line and its suspension (the rest only
            // if the order's what-if is beyond the held leg's ranges).
            let (row, slot) = self.find_holder(account, instrument, keys, ACCOUNT_ORDER_BYTES);
            (row.ok_or(Reject::UnknownAccount)?, slot)
        };
        let col = match hints.col {
            NONE => self.instrument_col(instrument)?,
            c => c,
        };
        // SAFETY: a row, a column and a slot of the indices, now or ahead (`at`).
        let (acct, ins) = unsafe { (at(&self.accounts, row), at(&self.instruments, col)) };
        if acct.suspended {
            return Err(Reject::Suspended);
        }
        // SAFETY: as above.
        let old = slot.map_or(&NO_BOOK, |s| unsafe { &at(&self.positions, s).book });
        // At the instrument's mark, the order is a held leg's what-if (its unit is for that
        // mark); with no mark yet, it is valued at its own price (the exact path).
        let m = ins.spec.multiplier;
        debug_assert_eq!(ins.unit, MarkedUnit::new(ins.mark(), m, ins.spec.margin_bps), "fresh");
        let held = (ins.mark() != 0)
            .then(|| ins.unit.fill(price, m))
            .flatten()
            .and_then(|fill| HeldLeg::of(acct, old, d, &fill));
        let failed = match held {
            Some(HeldLeg(_, _, failed)) => failed,
            None => {
                let mark = if ins.mark() != 0 { ins.mark() } else { price };
                let mut out = Leg::default();
                self.leg(row, col, old, Fill { d, price, mark }, &mut out)?;
                out.failed
            }
        };
        match failed {
            0 => {
                self.events.push(Event::OrderAccepted { account, instrument });
                Ok(())
            }
            // Branch-light: all four checks were evaluated; the lowest set bit is the first
            // failing check in SPEC.md's order.
            f => Err(RISK_ORDER[f.trailing_zeros() as usize]),
        }
    }

    #[inline(always)] // into `apply_hinted`'s two callers, as it is (see there)
    fn clear_trade(&mut self, t: &Trade, hints: &Legs) -> Result<(), Reject> {
        if t.trade_id == 0 {
            return Err(Reject::InvalidId);
        }
        if t.qty <= 0 {
            return Err(Reject::InvalidQuantity);
        }
        if t.price <= 0 {
            return Err(Reject::InvalidPrice);
        }
        if t.trade_date != self.valid_date {
            if !is_valid_date(t.trade_date) {
                return Err(Reject::InvalidDate);
            }
            self.valid_date = t.trade_date;
        }
        if t.buy == t.sell {
            return Err(Reject::SelfTrade);
        }
        // The lookups made ahead (the batch's, or `apply`'s own) found all three, as for
        // nearly every trade: no `Result` to unpack.
        let [buy_row, sell_row, col] = match [hints.rows[0], hints.rows[1], hints.col] {
            found if !found.contains(&NONE) => found,
            _ => self.trade_lookups(t, hints)?,
        };
        let Some(trade_at) = self.trade_index.vacancy(t.trade_id) else {
            return Err(Reject::Duplicate);
        };
        if self.trade_index.is_full() {
            return Err(Reject::TradeCapacity);
        }
        // SAFETY: a column of the instrument index (`at`).
        let ins = unsafe { at(&self.instruments, col) };
        let mark = if ins.explicit_mark != 0 { ins.explicit_mark } else { t.price };
        let moves_mark = mark != ins.mark();
        // Events of a rejected command are discarded, so the first one can go in now.
        // SAFETY: the command's first event (`events` is cleared by every command and holds
        // at least TRADE_EVENTS_MAX + 1).
        unsafe { push_unchecked(&mut self.events, Event::TradeCleared { trade_id: t.trade_id }) };
        let held = hints.slots[0] != NONE && hints.slots[1] != NONE && !moves_mark;
        let rows = [buy_row, sell_row];
        if !(held && self.book_held(t, rows, col, hints.slots)) {
            let legs = Legs { rows, col, slots: hints.slots };
            self.book_legs(t, legs, mark, t.qty, moves_mark)?;
        }
        // SAFETY: as above.
        if unsafe { at(&self.instruments, col) }.last_price != t.price {
            self.set_last_price(col, t.price);
        }
        let index = self.trades.len() as u32;
        let inserted = self.trade_index.insert(trade_at, t.trade_id, index);
        debug_assert!(inserted.is_ok(), "capacity was checked above");
        // Its record goes into the digest when the digest is settled (`trades_hashed`).
        self.trades.push(TradeRecord { trade: *t, busted: false });
        Ok(())
    }

    /// A trade's buyer's and seller's rows and its instrument's column: the hints that were
    /// found, and lookups for the others (`NONE`), in SPEC.md's reject order.
    #[inline(never)]
    fn trade_lookups(&self, t: &Trade, hints: &Legs) -> Result<[u32; 3], Reject> {
        let hint = |h: u32| if h != NONE { Some(h) } else { None };
        let buy_row = hint(hints.rows[0]).map_or_else(|| self.account_row(t.buy), Ok)?;
        let sell_row = hint(hints.rows[1]).map_or_else(|| self.account_row(t.sell), Ok)?;
        let col = hint(hints.col).map_or_else(|| self.instrument_col(t.instrument), Ok)?;
        Ok([buy_row, sell_row, col])
    }

    fn bust_trade(&mut self, trade_id: TradeId) -> Result<(), Reject> {
        if trade_id == 0 {
            return Err(Reject::InvalidId);
        }
        let index = self.trade_index.get(trade_id).ok_or(Reject::UnknownTrade)? as usize;
        let rec = self.trades[index];
        if rec.busted {
            return Err(Reject::AlreadyBusted);
        }
        let t = rec.trade;
        let rows = [self.account_row(t.buy)?, self.account_row(t.sell)?];
        let col = self.instrument_col(t.instrument)?;
        let mark = self.instruments[col as usize].mark();
        self.events.push(Event::TradeBusted { trade_id });
        // The reverse: the buyer sells and the seller buys the original quantity.
        self.book_legs(&t, Legs { rows, col, ..Legs::NONE }, mark, -t.qty, false)?;
        self.trades[index].busted = true;
        if index < self.trades_hashed {
            self.digest.replace(trade_record(&t, false), trade_record(&t, true));
        } // else: not in the digest yet, and hashed busted when it is
        Ok(())
    }

    fn mark_price(&mut self, instrument: InstrumentId, price: Price) -> Result<(), Reject> {
        if price <= 0 {
            return Err(Reject::InvalidPrice);
        }
        let col = self.instrument_col(instrument)?;
        let bps = self.instruments[col as usize].spec.margin_bps;
        self.revalue_holders(col, price, bps, [NONE; 2])?;
        self.set_explicit_mark(col, price);
        self.events.push(Event::MarkChanged { instrument, price });
        Ok(())
    }

    fn settlement_price(&mut self, instrument: InstrumentId, price: Price) -> Result<(), Reject> {
        if price <= 0 {
            return Err(Reject::InvalidPrice);
        }
        let col = self.instrument_col(instrument)?;
        let ins = self.instruments[col as usize];
        let at_s = |book: Book| valued(book, price, &ins);
        // A holder within the common magnitudes is settled in 64 bits, as a holder re-valued
        // at a new mark (`revalue_holders`): the settled book and the change of its terms
        // (`MarkedUnit::settled`) move its account's offsets; the others take the exact path.
        // Each account holds one position of the instrument: pass 2 decides as pass 1.
        let (from, to) =
            (ins.unit, MarkedUnit::new(price, ins.spec.multiplier, ins.spec.margin_bps));
        let narrow = !self.exact_legs();
        let settled64 = |sm: &StateMachine, book: &Book, row: u32| {
            let (settled, d) = narrow.then(|| from.settled(&to, book)).flatten()?;
            // SAFETY: a row of the account index (a position's; `at`).
            let offsets = unsafe { at(&sm.accounts, row) }.narrow.moved(&d)?;
            Some((settled, offsets, d[2]))
        };
        // Pass 1: every open position can be settled and valued at S, and its account valued
        // after; order by account id.
        self.collect_holders(col, [NONE; 2]);
        let mut open = 0;
        for i in 0..self.scratch.len() {
            self.prefetch_holder(self.scratch.get(i + HOLDER_DISTANCE));
            let (row, slot) = self.scratch[i];
            let book = self.positions[slot as usize].book;
            if book.qty == 0 {
                continue;
            }
            let acct = &self.accounts[row as usize];
            if settled64(self, &book, row as u32).is_none() {
                let (settled, _) =
                    book.settle(price, ins.spec.multiplier).ok_or(Reject::Overflow)?;
                let new = at_s(settled).terms().ok_or(Reject::Overflow)?;
                let old = valued(book, ins.mark(), &ins).terms().ok_or(Reject::Overflow)?;
                let totals = acct.totals().replaced(&old, &new).ok_or(Reject::Overflow)?;
                valuation(acct.collateral, &totals)?;
            }
            self.scratch[open] = (acct.id, slot);
            open += 1;
        }
        self.scratch.truncate(open);
        self.scratch.sort_unstable();
        // Pass 2: apply (cannot fail now). Flat positions are worth the same at any mark.
        self.set_explicit_mark(col, price);
        self.events.push(Event::MarkChanged { instrument, price });
        for i in 0..self.scratch.len() {
            // In account order now: the positions ahead (their accounts were read by pass 1).
            if let Some(&(_, ahead)) = self.scratch.get(i + HOLDER_DISTANCE) {
                prefetch_element(&self.positions, ahead as usize);
            }
            let (account, slot) = self.scratch[i];
            let p = self.positions[slot as usize];
            if let Some((book, offsets, variation)) = settled64(self, &p.book, p.account) {
                self.positions[slot as usize].book = book;
                self.unhash_position(slot);
                self.changed.push(slot);
                // SAFETY: as above.
                unsafe { at_mut(&mut self.accounts, p.account) }.narrow.totals = offsets;
                let amount = variation.into();
                self.events.push(Event::VariationMargin { account, instrument, amount });
                continue;
            }
            let (Some((book, amount)), Some(old)) = (
                p.book.settle(price, ins.spec.multiplier),
                valued(p.book, ins.mark(), &ins).terms(),
            ) else {
                unreachable!("checked in pass 1 and by the terms invariant")
            };
            let Some(new) = at_s(book).terms() else { unreachable!("checked in pass 1") };
            self.positions[slot as usize].book = book;
            self.unhash_position(slot);
            self.changed.push(slot);
            let acct = &mut self.accounts[p.account as usize];
            let Some(totals) = acct.totals().replaced(&old, &new) else {
                unreachable!("checked in pass 1")
            };
            acct.set_totals(totals);
            self.events.push(Event::VariationMargin { account, instrument, amount });
        }
        Ok(())
    }

    /// Fill `self.scratch` with (account row, slot) of every holder of `col` but `skip`.
    ///
    /// The slots first (from the holder list, read in order), then each position's row, its
    /// line prefetched `2 * HOLDER_DISTANCE` holders ahead (reading a row is all this loop
    /// does) and its account's lines as soon as the row is known, for the passes that follow.
    fn collect_holders(&mut self, col: u32, skip: [u32; 2]) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        // No allocation: an instrument has at most one holder per account, and the scratch
        // holds `accounts_max`.
        scratch.extend(self.holder_slots(col).filter(|s| !skip.contains(s)).map(|s| (0, s)));
        for i in 0..scratch.len() {
            if let Some(&(_, ahead)) = scratch.get(i + 2 * HOLDER_DISTANCE) {
                prefetch_element(&self.positions, ahead as usize);
            }
            let row = self.positions[scratch[i].1 as usize].account;
            prefetch_element_bytes(&self.accounts, row as usize, ACCOUNT_BYTES);
            scratch[i].0 = u64::from(row);
        }
        self.scratch = scratch;
    }

    /// Prefetch the position and the account of the holder `ahead` (account row, slot) of a
    /// walk over `scratch`, if there is one.
    #[inline(always)]
    fn prefetch_holder(&self, ahead: Option<&(u64, u32)>) {
        if let Some(&(row, slot)) = ahead {
            prefetch_element(&self.positions, slot as usize);
            prefetch_element_bytes(&self.accounts, row as usize, ACCOUNT_BYTES);
        }
    }

    /// The position slots of every holder of `col`, in holder order (chunk by chunk).
    fn holder_slots(&self, col: u32) -> impl Iterator<Item = u32> + '_ {
        let ins = &self.instruments[col as usize];
        let n = ins.holders as usize;
        let mut chunk = ins.holders_first;
        (0..n.div_ceil(CHUNK_HOLDERS)).flat_map(move |k| {
            let c = &self.holder_chunks[chunk as usize];
            chunk = c.next;
            c.slots[..(n - k * CHUNK_HOLDERS).min(CHUNK_HOLDERS)].iter().copied()
        })
    }

    /// Re-value every holder of `col` (but `skip`) at a new `mark` and margin rate `bps`.
    /// Pass 1 checks that every new value fits and that every holder's account can still be
    /// valued; pass 2 moves each account's totals by the difference. On `Err(Overflow)` nothing
    /// changed.
    ///
    /// A holder within the common magnitudes is re-valued in 64 bits: the change of its terms
    /// from the instrument's [`MarkedUnit`] to the new mark's ([`MarkedUnit::moved`]) moves its
    /// account's offsets ([`Narrow::moved`]); it cannot fail then, and equals the exact path.
    /// The others take the exact path (`revalued`). Each account holds one position of the
    /// instrument, so pass 2 sees every account as pass 1 did, and decides alike.
    fn revalue_holders(
        &mut self,
        col: u32,
        mark: Price,
        bps: Bps,
        skip: [u32; 2],
    ) -> Result<(), Reject> {
        let ins = self.instruments[col as usize];
        let new_ins = Instrument { spec: InstrumentSpec { margin_bps: bps, ..ins.spec }, ..ins };
        debug_assert_eq!(
            ins.unit,
            MarkedUnit::new(ins.mark(), ins.spec.multiplier, ins.spec.margin_bps)
        );
        let (from, to) = (ins.unit, MarkedUnit::new(mark, ins.spec.multiplier, bps));
        let narrow = !self.exact_legs();
        self.collect_holders(col, skip);
        let moved = |sm: &StateMachine, row: u64, slot: u32| {
            // SAFETY: a row and a slot of the indices (`collect_holders`; `at`).
            let (acct, p) = unsafe { (at(&sm.accounts, row as u32), at(&sm.positions, slot)) };
            narrow.then(|| from.moved(&to, &p.book)).flatten().and_then(|d| acct.narrow.moved(&d))
        };
        let revalued = |sm: &StateMachine, row: u64, slot: u32| {
            let book = sm.positions[slot as usize].book;
            let old = valued(book, ins.mark(), &ins).terms().ok_or(Reject::Overflow)?;
            let new = valued(book, mark, &new_ins).terms().ok_or(Reject::Overflow)?;
            let acct = &sm.accounts[row as usize];
            let totals = acct.totals().replaced(&old, &new).ok_or(Reject::Overflow)?;
            valuation(acct.collateral, &totals).map(|_| totals)
        };
        for i in 0..self.scratch.len() {
            self.prefetch_holder(self.scratch.get(i + HOLDER_DISTANCE));
            let (row, slot) = self.scratch[i];
            if moved(self, row, slot).is_none() {
                revalued(self, row, slot)?;
            }
        }
        for i in 0..self.scratch.len() {
            let (row, slot) = self.scratch[i];
            self.prefetch_holder(self.scratch.get(i + HOLDER_DISTANCE));
            if let Some(offsets) = moved(self, row, slot) {
                // SAFETY: as above.
                unsafe { at_mut(&mut self.accounts, row as u32) }.narrow.totals = offsets;
                continue;
            }
            let Ok(totals) = revalued(self, row, slot) else { unreachable!("checked in pass 1") };
            self.accounts[row as usize].set_totals(totals);
        }
        Ok(())
    }

    // ---- booking --------------------------------------------------------------------------

    /// Book `qty` bought by `rows[0]` and sold by `rows[1]` (negative `qty` reverses), value
    /// both accounts with the instrument at `mark`, and emit positions, breaches and margin
    /// calls. `moves_mark`: the instrument's mark becomes `mark`, so its other holders are
    /// re-valued too. All-or-nothing: every fallible step runs before the first write.
    fn book_legs(
        &mut self,
        t: &Trade,
        legs: Legs,
        mark: Price,
        qty: Qty,
        moves_mark: bool,
    ) -> Result<(), Reject> {
        let Legs { rows, col, slots: slot_hints, .. } = legs;
        let ids = [t.buy, t.sell];
        // A position's slot, or where its index entry goes when it is new.
        let probes = [0, 1].map(|k| match slot_hints[k] {
            NONE => self.position_index.find(&PairKey::new(ids[k], t.instrument)),
            s => Probe::Found(s),
        });
        let slots = probes.map(|p| match p {
            Probe::Found(s) => Some(s),
            Probe::Vacant(_) => None,
        });
        let new_positions = slots.iter().filter(|s| s.is_none()).count() as u32;
        if self.positions_len + new_positions > self.limits.positions_max {
            return Err(Reject::PositionCapacity);
        }
        if !moves_mark && !self.exact_legs() && self.book_at_mark(t, qty, rows, col, probes) {
            return Ok(());
        }
        let old = |s: Option<u32>| {
            // SAFETY: a slot of the position index (`at`).
            s.map_or(&NO_BOOK, |s| unsafe { &at(&self.positions, s).book })
        };
        let fill = Fill { d: qty, price: t.price, mark };
        let (mut buy, mut sell) = (Leg::default(), Leg::default());
        self.leg(rows[0], col, old(slots[0]), fill, &mut buy)?;
        self.leg(rows[1], col, old(slots[1]), Fill { d: -qty, ..fill }, &mut sell)?;
        if moves_mark {
            // Every other holder is re-valued at the new mark (checked, then applied).
            let bps = self.instruments[col as usize].spec.margin_bps;
            self.revalue_holders(col, mark, bps, slots.map(|s| s.unwrap_or(NONE)))?;
        }
        self.accounts[rows[0] as usize].set_totals(buy.totals);
        self.accounts[rows[1] as usize].set_totals(sell.totals);
        self.write_legs(t, rows, col, probes, [(buy.book, buy.failed), (sell.book, sell.failed)]);
        Ok(())
    }

    /// [`book_legs`](Self::book_legs) for the common trade: `qty` bought by `rows[0]` and sold
    /// by `rows[1]` at a price that does not move the instrument's mark (`probes`: each
    /// account's position, or where a new one goes; a new one is within capacity), both legs
    /// within the ranges of [`MarkedFill`] (every value involved fits in 64 bits, proven by
    /// one range check a leg instead of an overflow check per operation) and both accounts'
    /// totals moving within their 64-bit offsets ([`Narrow::shifted`]). True when booked;
    /// false, with nothing changed, when a leg cannot be computed so (then `book_legs` books
    /// the trade, or rejects it).
    ///
    /// `clear_trade` calls it first for a trade between holders, its lookups made;
    /// `book_legs` calls [`book_at_mark`](Self::book_at_mark) (inlined there) after its own
    /// lookups, for the others and for a bust. Two copies, so that in this one the positions
    /// are known to exist (no branch to open one: ~40 instructions a trade).
    #[inline(never)]
    fn book_held(&mut self, t: &Trade, rows: [u32; 2], col: u32, slots: [u32; 2]) -> bool {
        self.book_at_mark(t, t.qty, rows, col, slots.map(Probe::Found))
    }

    /// [`book_held`](Self::book_held), and inlined into `book_legs` for any position that may
    /// be new.
    #[inline(always)]
    fn book_at_mark(
        &mut self,
        t: &Trade,
        qty: Qty,
        rows: [u32; 2],
        col: u32,
        probes: [Probe; 2],
    ) -> bool {
        // SAFETY: a column of the instrument index (`at`).
        let ins = unsafe { at(&self.instruments, col) };
        let m = ins.spec.multiplier;
        debug_assert_eq!(ins.unit, MarkedUnit::new(ins.mark(), m, ins.spec.margin_bps), "fresh");
        // The unit is for the mark (a trade that moves it does not come here), but for an
        // instrument with none yet (then for no mark, and the fill is None).
        let Some(fill) = ins.unit.fill(t.price, m) else { return false };
        let old = probes.map(|p| match p {
            // SAFETY: a slot of the position index (`at`).
            Probe::Found(s) => unsafe { &at(&self.positions, s).book },
            Probe::Vacant(_) => &NO_BOOK,
        });
        // SAFETY: rows of the account index (`at`).
        let accounts = unsafe { [at(&self.accounts, rows[0]), at(&self.accounts, rows[1])] };
        let Some(buy) = HeldLeg::of(accounts[0], old[0], qty, &fill) else { return false };
        let Some(sell) = HeldLeg::of(accounts[1], old[1], -qty, &fill) else { return false };
        // SAFETY: as above.
        let buy = buy.write(unsafe { at_mut(&mut self.accounts, rows[0]) });
        // SAFETY: as above.
        let sell = sell.write(unsafe { at_mut(&mut self.accounts, rows[1]) });
        self.write_legs(t, rows, col, probes, [buy, sell]);
        true
    }

    /// Write a trade's two legs, computed and checked, the accounts' totals written already:
    /// the positions (with their events), then the breach events. `legs`: each leg's new book
    /// and the checks that failed ([`Leg::failed`]).
    #[inline(always)]
    fn write_legs(
        &mut self,
        t: &Trade,
        rows: [u32; 2],
        col: u32,
        probes: [Probe; 2],
        legs: [(Book, u8); 2],
    ) {
        let ([(buy, buy_failed), (sell, sell_failed)], ids) = (legs, [t.buy, t.sell]);
        self.write_leg(probes[0], rows[0], col, ids[0], t.instrument, buy);
        self.write_leg(probes[1], rows[1], col, ids[1], t.instrument, sell);
        if (buy_failed | sell_failed) != 0 {
            self.breach_events(ids, rows, [buy_failed, sell_failed]);
        }
    }

    /// Store one leg's new book in its position (allocated if `probe` is vacant), take its
    /// old record out of the digest and note the change and its event.
    #[inline(always)]
    fn write_leg(
        &mut self,
        probe: Probe,
        row: u32,
        col: u32,
        id: AccountId,
        instrument: InstrumentId,
        b: Book,
    ) {
        let slot = match probe {
            Probe::Found(s) => s,
            Probe::Vacant(at) => self.new_position(row, col, id, instrument, at),
        };
        // SAFETY: a slot of the position index, or just allocated (`at`).
        unsafe { at_mut(&mut self.positions, slot) }.book = b;
        self.unhash_position(slot);
        // SAFETY: the second and third events and the first and second changed slots of a
        // trade or a bust (`clear_trade` or `bust_trade` pushes the first event, then both legs
        // are written); `changed` and `events` are cleared by every command and hold at least 2
        // and TRADE_EVENTS_MAX + 1 items (`StateMachine::new`).
        unsafe {
            push_unchecked(&mut self.changed, slot);
            push_unchecked(
                &mut self.events,
                Event::PositionChanged {
                    account: id,
                    instrument,
                    qty: b.qty,
                    cost: b.cost,
                    realized: b.realized,
                },
            );
        }
    }

    /// The breach and margin-call events of a trade's two accounts, in SPEC.md's order, from
    /// the checks that failed (`Leg::failed`), after the accounts' new totals are written.
    #[cold]
    #[inline(never)]
    fn breach_events(&mut self, ids: [AccountId; 2], rows: [u32; 2], failed: [u8; 2]) {
        for leg in 0..2 {
            let failed = failed[leg];
            for (bit, reason) in RISK_ORDER[..3].iter().enumerate() {
                if failed & (1 << bit) != 0 {
                    self.events.push(Event::LimitBreach { account: ids[leg], reason: *reason });
                }
            }
            if failed & (1 << 3) != 0 {
                // Valued already by `checks` (the same collateral, and the totals written since):
                // cannot fail.
                let acct = &self.accounts[rows[leg] as usize];
                let v = valuation(acct.collateral, &acct.totals());
                debug_assert!(v.is_ok(), "checks valued these totals");
                if let Ok(v) = v {
                    // Fits: see `Valuation::excess`.
                    self.events.push(Event::MarginCall { account: ids[leg], shortfall: -v.excess });
                }
            }
        }
    }

    /// Allocate a position slot for (row, col); its index entry goes at or after `at` (its
    /// home slot or a `find` vacancy). Capacity was checked by the caller.
    fn new_position(
        &mut self,
        row: u32,
        col: u32,
        id: AccountId,
        instrument: InstrumentId,
        at: usize,
    ) -> u32 {
        let acct = &mut self.accounts[row as usize];
        let lane = acct.positions as usize % CHUNK_POSITIONS;
        if lane == 0 {
            let chunk = self.chunks_used;
            assert!(
                (chunk as usize) < self.chunk_next.len(),
                "chunk bound is proven by Limits::chunks"
            );
            self.chunks_used += 1;
            // Lanes this account has not used yet are no position (`export_into` skips them).
            let base = chunk as usize * CHUNK_POSITIONS;
            for p in &mut self.positions[base..base + CHUNK_POSITIONS] {
                p.account = NONE;
            }
            if acct.last_chunk == NONE {
                acct.first_chunk = chunk;
            } else {
                self.chunk_next[acct.last_chunk as usize] = chunk;
            }
            acct.last_chunk = chunk;
        }
        let slot = acct.last_chunk * CHUNK_POSITIONS as u32 + lane as u32;
        acct.positions += 1;
        self.positions_len += 1;
        // Its record is out of the digest until the digest is settled.
        self.positions[slot as usize] =
            Position { book: Book::default(), account: row, instrument: col, record: 0 };
        // SAFETY: one push per position, and there are at most `positions_max` (checked by
        // every caller); `dirty_positions` holds that many.
        unsafe { push_unchecked(&mut self.dirty_positions, slot) };
        let ins = &mut self.instruments[col as usize];
        let lane = ins.holders as usize % CHUNK_HOLDERS;
        if lane == 0 {
            let chunk = self.holder_chunks_used;
            assert!(
                (chunk as usize) < self.holder_chunks.len(),
                "bound proven by Limits::holder_chunks"
            );
            self.holder_chunks_used += 1;
            if ins.holders_last == NONE {
                ins.holders_first = chunk;
            } else {
                self.holder_chunks[ins.holders_last as usize].next = chunk;
            }
            ins.holders_last = chunk;
        }
        self.holder_chunks[ins.holders_last as usize].slots[lane] = slot;
        ins.holders += 1;
        let inserted = self.position_index.insert_at(at, PairKey::new(id, instrument), slot);
        debug_assert!(inserted.is_ok(), "positions_max bounds the index");
        slot
    }

    // ---- valuation and risk ---------------------------------------------------------------

    /// One leg of a trade or order: the account in `row`, whose position in instrument `col`
    /// was `old`, makes the fill `f`. Writes the new book, the what-if totals and the checks
    /// ([`checks`]) to `out`: "as if" the position were the new book valued at
    /// `f.mark` instead of `old` at the instrument's current mark (the what-if replaces that
    /// position's terms in the account's totals: exact, see `Totals::replaced`).
    ///
    /// The common case (every value fits in 64 bits) is computed inline; anything else takes
    /// the exact path, which gives the same answer (`Err(Overflow)` included). An
    /// out-parameter, and the two legs of [`book_legs`](Self::book_legs) written out: a
    /// returned `Result` of the leg, or arrays of legs, were copied through memory two or three
    /// times per leg (their removal: 1,757 -> 1,646 instructions per `apply`, PERFORMANCE.md).
    #[inline(always)]
    fn leg(&self, row: u32, col: u32, old: &Book, f: Fill, out: &mut Leg) -> Result<(), Reject> {
        *out = match self.leg64(row, col, old, f) {
            Some(leg) => leg,
            None => self.leg_exact(row, col, *old, f)?,
        };
        Ok(())
    }

    /// [`leg`](Self::leg) in 64-bit arithmetic: `None` if it cannot answer (a value does not
    /// fit, or the account could not be valued).
    #[inline(always)]
    fn leg64(&self, row: u32, col: u32, old: &Book, f: Fill) -> Option<Leg> {
        // SAFETY: a row and a column of the indices (`at`).
        let (acct, ins) = unsafe { (at(&self.accounts, row), at(&self.instruments, col)) };
        let book = old.fill64(f.d, f.price, ins.spec.multiplier)?;
        let o = valued(*old, ins.mark(), ins).terms64();
        let n = valued(book, f.mark, ins).terms64();
        let totals = acct.totals().replaced64(&o?, &n?)?;
        let failed = checks(acct, &book, &totals).ok()?;
        Some(Leg { book, totals, failed })
    }

    /// [`leg`](Self::leg) in exact arithmetic whatever the magnitudes.
    #[cold]
    #[inline(never)]
    fn leg_exact(&self, row: u32, col: u32, old: Book, f: Fill) -> Result<Leg, Reject> {
        let acct = &self.accounts[row as usize];
        let ins = &self.instruments[col as usize];
        let book = old.fill(f.d, f.price, ins.spec.multiplier).ok_or(Reject::Overflow)?;
        let old = valued(old, ins.mark(), ins).terms().ok_or(Reject::Overflow)?;
        let new = valued(book, f.mark, ins).terms().ok_or(Reject::Overflow)?;
        let totals = acct.totals().replaced(&old, &new).ok_or(Reject::Overflow)?;
        let failed = checks(acct, &book, &totals)?;
        Ok(Leg { book, totals, failed })
    }

    // ---- lookups and queries --------------------------------------------------------------

    #[inline]
    fn account_row(&self, id: AccountId) -> Result<u32, Reject> {
        self.account_index.get(&id).ok_or(Reject::UnknownAccount)
    }

    #[inline]
    fn instrument_col(&self, id: InstrumentId) -> Result<u32, Reject> {
        self.instrument_index.get(&u64::from(id)).ok_or(Reject::UnknownInstrument)
    }

    pub fn position(&self, account: AccountId, instrument: InstrumentId) -> Option<PositionView> {
        let slot = self.position_index.get(&PairKey::new(account, instrument))?;
        let p = &self.positions[slot as usize];
        let ins = &self.instruments[p.instrument as usize];
        Some(PositionView {
            account,
            instrument,
            qty: p.book.qty,
            cost: p.book.cost,
            realized: p.book.realized,
            unrealized: p.book.unrealized(ins.mark(), ins.spec.multiplier).unwrap_or(0),
            avg_price: p.book.avg_price(ins.spec.multiplier),
        })
    }

    /// The account's valuation (`Err(Overflow)` cannot happen: SEMANTICS.md, the account
    /// invariant).
    pub fn account(&self, id: AccountId) -> Result<AccountView, Reject> {
        self.account_at(self.account_row(id)?)
    }

    /// The account in dense row `row` (see [`row_of`](Self::row_of)); `UnknownAccount` past
    /// the last row.
    pub fn account_at(&self, row: u32) -> Result<AccountView, Reject> {
        let a = self.accounts.get(row as usize).ok_or(Reject::UnknownAccount)?;
        // `Err(Overflow)` only for a state that breaks the account invariant (none does).
        let Valuation { equity, excess, .. } = valuation(a.collateral, &a.totals())?;
        Ok(AccountView {
            spec: a.spec(),
            collateral: a.collateral,
            totals: a.totals(),
            equity,
            margin: a.totals().margin,
            excess,
            positions: a.positions,
        })
    }

    /// What changes in the account in dense row `row` as commands apply (its spec aside):
    /// [`account_at`](Self::account_at) without building the view. `None` past the last row.
    #[inline]
    pub fn account_funds_at(&self, row: u32) -> Option<AccountFunds> {
        let a = self.accounts.get(row as usize)?;
        Some(AccountFunds {
            collateral: a.collateral,
            totals: a.totals(),
            positions: a.positions,
            // Always true: the account invariant (SEMANTICS.md, "Overflow").
            valued: valuation(a.collateral, &a.totals()).is_ok(),
        })
    }

    pub fn instrument(&self, id: InstrumentId) -> Option<InstrumentView> {
        self.instrument_at(self.instrument_col(id).ok()?)
    }

    /// The instrument in dense column `col` (see [`col_of`](Self::col_of)).
    pub fn instrument_at(&self, col: u32) -> Option<InstrumentView> {
        let ins = self.instruments.get(col as usize)?;
        Some(InstrumentView {
            spec: ins.spec,
            mark: ins.mark(),
            last_price: ins.last_price,
            holders: ins.holders,
        })
    }

    /// The dense row of an account: rows are 0, 1, 2, ... in creation order and never change.
    pub fn row_of(&self, id: AccountId) -> Option<u32> {
        self.account_row(id).ok()
    }

    /// The dense column of an instrument: 0, 1, 2, ... in creation order, never changing.
    pub fn col_of(&self, id: InstrumentId) -> Option<u32> {
        self.instrument_col(id).ok()
    }

    /// The slot of a position: stable for the position's life (positions are never removed).
    pub fn position_slot(&self, account: AccountId, instrument: InstrumentId) -> Option<u32> {
        self.position_index.get(&PairKey::new(account, instrument))
    }

    /// Slots are below this bound (for tables indexed by slot).
    pub fn position_slots_max(&self) -> usize {
        self.positions.len()
    }

    /// The book of the position in `slot` with its account's row and instrument's column:
    /// [`position_at`](Self::position_at) without the ids (for a caller that keeps its own
    /// table by row and column, such as the engine's view publisher).
    #[inline]
    pub fn position_book_at(&self, slot: u32) -> Option<(u32, u32, Book)> {
        let p = self.positions.get(slot as usize)?;
        Some((p.account, p.instrument, p.book))
    }

    /// The position in `slot` (a slot from [`changed_positions`](Self::changed_positions) or
    /// [`position_slot`](Self::position_slot)).
    pub fn position_at(&self, slot: u32) -> Option<SlotPosition> {
        let p = self.positions.get(slot as usize)?;
        let (account, i) =
            (*self.row_ids.get(p.account as usize)?, self.instruments.get(p.instrument as usize)?);
        Some(SlotPosition {
            row: p.account,
            col: p.instrument,
            account,
            instrument: i.spec.id,
            book: p.book,
        })
    }

    /// The slots of the positions whose book the last command changed (nothing if it was
    /// rejected), in the order of its `PositionChanged` / `VariationMargin` events.
    pub fn changed_positions(&self) -> &[u32] {
        &self.changed
    }

    /// The trade and whether it was busted.
    pub fn trade(&self, id: TradeId) -> Option<(Trade, bool)> {
        let r = self.trades[self.trade_index.get(id)? as usize];
        Some((r.trade, r.busted))
    }

    /// Totals over every position in an instrument at its current mark, recomputed from the
    /// positions (not from the kept sums) with the vector kernel ([`crate::value_columns`]).
    /// `None` if unknown or a sum does not fit. Allocates: a query, not the hot path.
    pub fn value_instrument(&self, id: InstrumentId) -> Option<Totals> {
        let mut c = Columns::default();
        self.instrument_columns(id, &mut c).ok()?;
        value_columns(&c)
    }

    /// Totals over every position of an account at current marks, recomputed from the
    /// positions with the vector kernel: what the account's kept sums must equal.
    pub fn value_account(&self, id: AccountId) -> Result<Totals, Reject> {
        let mut c = Columns::default();
        self.account_columns(id, &mut c)?;
        value_columns(&c).ok_or(Reject::Overflow)
    }

    /// Fill `out` (cleared first) with every position of an instrument (open or flat), valued
    /// at its current mark, in holder order.
    pub fn instrument_columns(&self, id: InstrumentId, out: &mut Columns) -> Result<(), Reject> {
        let col = self.instrument_col(id)?;
        let ins = &self.instruments[col as usize];
        out.clear();
        for slot in self.holder_slots(col) {
            out.push(&valued(self.positions[slot as usize].book, ins.mark(), ins));
        }
        Ok(())
    }

    /// Fill `out` (cleared first) with every position of an account (open or flat), each
    /// valued at its instrument's current mark.
    pub fn account_columns(&self, id: AccountId, out: &mut Columns) -> Result<(), Reject> {
        let acct = &self.accounts[self.account_row(id)? as usize];
        out.clear();
        let (mut left, mut chunk) = (acct.positions as usize, acct.first_chunk);
        while left > 0 {
            let base = chunk as usize * CHUNK_POSITIONS;
            for p in &self.positions[base..base + left.min(CHUNK_POSITIONS)] {
                let ins = &self.instruments[p.instrument as usize];
                out.push(&valued(p.book, ins.mark(), ins));
            }
            left = left.saturating_sub(CHUNK_POSITIONS);
            chunk = self.chunk_next[chunk as usize];
        }
        Ok(())
    }

    /// Every position of an instrument (open or flat) with what valuing it needs, in holder
    /// order. Allocates: a query, not the hot path.
    pub fn instrument_positions(&self, id: InstrumentId) -> Vec<crate::position::Valued> {
        let Ok(col) = self.instrument_col(id) else { return Vec::new() };
        let ins = &self.instruments[col as usize];
        self.holder_slots(col)
            .map(|s| valued(self.positions[s as usize].book, ins.mark(), ins))
            .collect()
    }

    pub fn accounts_len(&self) -> usize {
        self.accounts.len()
    }

    pub fn instruments_len(&self) -> usize {
        self.instruments.len()
    }

    pub fn positions_len(&self) -> usize {
        self.positions_len as usize
    }

    pub fn trades_len(&self) -> usize {
        self.trades.len()
    }

    /// Account ids in ascending order (allocates; for queries and snapshots).
    pub fn account_ids(&self) -> Vec<AccountId> {
        let mut ids: Vec<_> = self.accounts.iter().map(|a| a.id).collect();
        ids.sort_unstable();
        ids
    }

    /// Copy out the whole business state in ascending id order (allocates).
    pub fn export(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        self.export_into(&mut snap);
        snap.sort();
        snap
    }

    /// Copy out the whole business state into `snap` (its previous contents replaced), in
    /// internal order, reusing its buffers: one sequential pass over each table, no sorting,
    /// and after the first time no allocation or page faults. This is the state machine's
    /// whole pause for a periodic snapshot; whoever needs id order calls [`Snapshot::sort`]
    /// afterwards, on another thread. `state_hash` does not depend on the order.
    pub fn export_into(&self, snap: &mut Snapshot) {
        self.export_head(snap);
        // Positions in slot order: chunks are allocated densely, and lanes not yet used by
        // their account are marked `account == NONE` (see `new_position`).
        for p in &self.positions[..self.chunks_used as usize * CHUNK_POSITIONS] {
            if let Some(ids) = exported(p, &self.row_ids, &snap.instruments) {
                snap.positions.push(ids);
            }
        }
        self.export_trades(snap);
    }

    /// [`export_into`](Self::export_into) and [`state_hash`](Self::state_hash) in one pass over
    /// the positions: those whose records are out of the digest are hashed as the copy reads
    /// them, in slot order, instead of fetched again at random (on a book larger than the
    /// caches, ~27 ns a trade when every trade changed two positions of its own; PERFORMANCE.md,
    /// twentieth session). A periodic snapshot takes the state hash anyway.
    pub fn export_hashed(&mut self, snap: &mut Snapshot) -> u64 {
        self.export_head(snap);
        let used = self.chunks_used as usize * CHUNK_POSITIONS;
        for p in &mut self.positions[..used] {
            if let Some(ids @ (account, instrument, _)) =
                exported(p, &self.row_ids, &snap.instruments)
            {
                if p.record == 0 {
                    p.record = position_record(account, instrument, &p.book);
                    self.digest.add(p.record);
                }
                snap.positions.push(ids);
            }
        }
        self.dirty_positions.clear(); // every listed position was hashed above
        self.export_trades(snap);
        self.state_hash()
    }

    /// The first part of an export: sequence, instruments, accounts; positions emptied.
    fn export_head(&self, snap: &mut Snapshot) {
        snap.last_seq = self.last_seq;
        snap.instruments.clear();
        snap.instruments
            .extend(self.instruments.iter().map(|i| (i.spec, i.explicit_mark, i.last_price)));
        snap.accounts.clear();
        snap.accounts.extend(self.accounts.iter().map(|a| (a.spec(), a.collateral)));
        snap.positions.clear();
        reserve_huge(&mut snap.positions, self.positions_len as usize);
    }

    /// The last part of an export: the remembered trades (the positions are in).
    fn export_trades(&self, snap: &mut Snapshot) {
        debug_assert_eq!(snap.positions.len(), self.positions_len as usize);
        snap.trades.clear();
        reserve_huge(&mut snap.trades, self.trades.len());
        snap.trades.extend(self.trades.iter().map(|t| (t.trade, t.busted)));
    }

    /// Rebuild a state machine from a snapshot. Validates what it loads: capacity, unknown or
    /// repeated ids, and positions that do not fit their types.
    pub fn restore(limits: Limits, snap: &Snapshot) -> Result<StateMachine, RestoreError> {
        use RestoreError::Invalid;
        let mut sm = StateMachine::new(limits).map_err(RestoreError::Limits)?;
        for &(spec, mark, last) in &snap.instruments {
            let before = sm.instruments.len();
            sm.upsert_instrument(spec).map_err(|_| Invalid("instrument"))?;
            if sm.instruments.len() == before {
                return Err(Invalid("repeated instrument id"));
            }
            if mark < 0 || last < 0 {
                return Err(Invalid("negative mark or price"));
            }
            let ins = &mut sm.instruments[before];
            ins.explicit_mark = mark;
            // The digest is set from the snapshot's records below.
            (ins.last_price, ins.last_record) = (last, last_price_record(spec.id, last));
            ins.refresh();
        }
        for &(spec, collateral) in &snap.accounts {
            let before = sm.accounts.len();
            sm.upsert_account(spec).map_err(|_| Invalid("account"))?;
            if sm.accounts.len() == before {
                return Err(Invalid("repeated account id"));
            }
            sm.accounts[before].set_collateral(collateral);
        }
        if snap.positions.len() > limits.positions_max as usize {
            return Err(Invalid("more positions than positions_max"));
        }
        let mut sums = vec![Sums::default(); sm.accounts.len()];
        for &(account, instrument, book) in &snap.positions {
            let row =
                sm.account_row(account).map_err(|_| Invalid("position of an unknown account"))?;
            let col = sm
                .instrument_col(instrument)
                .map_err(|_| Invalid("position in an unknown instrument"))?;
            let Probe::Vacant(at) = sm.position_index.find(&PairKey::new(account, instrument))
            else {
                return Err(Invalid("repeated position"));
            };
            if book.qty == 0 && book.cost != 0 {
                // Closing takes the whole cost out (`cost * |qty| / |qty|`), exactly.
                return Err(Invalid("a flat position with a cost"));
            }
            let slot = sm.new_position(row, col, account, instrument, at);
            sm.positions[slot as usize].book = book;
            sm.positions[slot as usize].record = position_record(account, instrument, &book);
            let terms =
                valued(book, sm.instruments[col as usize].mark(), &sm.instruments[col as usize])
                    .terms();
            // Summed exactly, in any order: only each account's total must fit.
            sums[row as usize].add(&terms.ok_or(Invalid("a position's value overflows"))?);
        }
        for (a, s) in sm.accounts.iter_mut().zip(&sums) {
            if a.collateral < 0 {
                return Err(Invalid("negative collateral"));
            }
            let overflows = Invalid("an account's value overflows");
            let totals = s.totals().ok_or(overflows)?;
            valuation(a.collateral, &totals).map_err(|_| overflows)?;
            a.set_totals(totals);
        }
        if snap.trades.len() > limits.trades_max as usize {
            return Err(Invalid("more trades than trades_max"));
        }
        for &(trade, busted) in &snap.trades {
            // A remembered trade was booked: its fields passed ClearTrade's checks, and its
            // accounts and instrument exist (none is ever removed). A bust books it again.
            let booked = trade.qty > 0
                && trade.price > 0
                && is_valid_date(trade.trade_date)
                && trade.buy != trade.sell
                && sm.account_row(trade.buy).is_ok()
                && sm.account_row(trade.sell).is_ok()
                && sm.instrument_col(trade.instrument).is_ok();
            if !booked {
                return Err(Invalid("a trade that could not have been booked"));
            }
            let vacancy = match trade.trade_id {
                0 => None,
                id => sm.trade_index.vacancy(id),
            };
            let vacancy = vacancy.ok_or(Invalid("repeated or zero trade id"))?;
            let index = sm.trades.len() as u32;
            sm.trade_index.insert(vacancy, trade.trade_id, index).map_err(|_| Invalid("trades"))?;
            sm.trades.push(TradeRecord { trade, busted });
        }
        sm.events.clear();
        sm.last_seq = snap.last_seq;
        // Every record was set above, each position's too: the digest is the records'.
        sm.dirty_positions.clear();
        sm.trades_hashed = sm.trades.len();
        sm.digest = snap.digest();
        Ok(sm)
    }

    /// A stable hash of the whole business state: every instrument, account, position and
    /// remembered trade (independent of internal layout, of insertion order and of
    /// `seq`/`ts`). The digest of the records is kept by every change, but for the records of
    /// the positions and last prices changed and the trades cleared since the last call, which
    /// are hashed now ([`settle_some`](Self::settle_some)): O(1) per change, amortized.
    pub fn state_hash(&mut self) -> u64 {
        self.settle_some(usize::MAX);
        finish_hash(
            [
                self.instruments.len(),
                self.accounts.len(),
                self.positions_len as usize,
                self.trades.len(),
            ],
            self.digest,
        )
    }

    /// Put up to `max` of the records the digest lacks into it: those of the positions and last
    /// prices changed, then of the trades cleared, since it was last settled. Returns how many;
    /// fewer than `max`: none is left. `state_hash()` settles them all; an idle engine settles
    /// a few at a time, so that a later read has less to hash. Changes nothing visible.
    ///
    /// A trade does not hash its two positions' new books, its price or itself when it writes
    /// them (~105 instructions a trade; PERFORMANCE.md, twentieth session): it takes the old
    /// records out of the digest (`unhash`), and the new ones are hashed here, once however
    /// many commands changed them.
    pub fn settle_some(&mut self, max: usize) -> usize {
        let mut budget = max;
        // The lists are emptied from their ends, in place: they keep the capacity the unchecked
        // pushes rely on.
        while budget > 0 {
            let Some(slot) = self.dirty_positions.pop() else { break };
            // The positions are anywhere in the table, out of cache on a large book: fetched
            // ahead (the list is read from its end) so that their misses overlap.
            let n = self.dirty_positions.len();
            if let Some(&ahead) =
                n.checked_sub(4 * PREFETCH_DISTANCE).map(|k| &self.dirty_positions[k])
            {
                prefetch_element(&self.positions, ahead as usize);
            }
            let p = &mut self.positions[slot as usize];
            let (account, ins) = (self.row_ids[p.account as usize], &self.instruments);
            p.record = position_record(account, ins[p.instrument as usize].spec.id, &p.book);
            self.digest.add(p.record);
            budget -= 1;
        }
        while budget > 0 {
            let Some(col) = self.dirty_prices.pop() else { break };
            let ins = &mut self.instruments[col as usize];
            ins.last_record = last_price_record(ins.spec.id, ins.last_price);
            self.digest.add(ins.last_record);
            budget -= 1;
        }
        let start = self.trades_hashed;
        let end = start.saturating_add(budget).min(self.trades.len());
        for r in &self.trades[start..end] {
            self.digest.add(trade_record(&r.trade, r.busted));
        }
        self.trades_hashed = end;
        max - budget + (end - start)
    }

    /// Take the record of the position in `slot`, whose book is being changed, out of the
    /// digest (if it is in: it may have changed already since the digest was settled).
    #[inline(always)]
    fn unhash_position(&mut self, slot: u32) {
        // SAFETY: a slot of the position index (`at`); at most `positions_max` slots are
        // listed, the list's capacity (`unhash`).
        unsafe {
            let p = at_mut(&mut self.positions, slot);
            unhash(&mut self.digest, &mut p.record, &mut self.dirty_positions, slot);
        }
    }

    /// Set the last cleared trade price of the instrument in `col`, its record out of the
    /// digest (as [`unhash_position`](Self::unhash_position)).
    #[inline(always)]
    fn set_last_price(&mut self, col: u32, price: Price) {
        // SAFETY: a column of the instrument index (`at`); at most `instruments_max` columns
        // are listed, the list's capacity (`unhash`).
        unsafe {
            let ins = at_mut(&mut self.instruments, col);
            ins.last_price = price;
            if ins.explicit_mark == 0 {
                // The last price is the mark.
                ins.refresh();
            }
            unhash(&mut self.digest, &mut ins.last_record, &mut self.dirty_prices, col);
        }
    }

    fn set_explicit_mark(&mut self, col: u32, price: Price) {
        let ins = &mut self.instruments[col as usize];
        let old = instrument_record(&ins.spec, ins.explicit_mark);
        ins.explicit_mark = price;
        ins.refresh();
        self.digest.replace(old, instrument_record(&ins.spec, price));
    }
}

impl Snapshot {
    /// An empty snapshot with room for all a state machine with `limits` can hold, advised for
    /// huge pages: [`StateMachine::export_into`] fills it without growing it.
    pub fn with_room(limits: &Limits) -> Snapshot {
        Snapshot {
            instruments: with_capacity_huge(limits.instruments_max as usize),
            accounts: with_capacity_huge(limits.accounts_max as usize),
            positions: with_capacity_huge(limits.positions_max as usize),
            trades: with_capacity_huge(limits.trades_max as usize),
            last_seq: 0,
        }
    }

    /// Commit the pages of this snapshot's room now, as [`StateMachine::prefault`] does for
    /// the state machine's tables, so that an export into it takes no page fault. Nothing
    /// visible changes. Returns the bytes committed and the bytes asked for.
    pub fn prefault(&self) -> (usize, usize) {
        fn room<T>(v: &Vec<T>) -> (*const u8, usize) {
            (v.as_ptr().cast(), v.capacity() * std::mem::size_of::<T>())
        }
        populate_all(&[
            room(&self.instruments),
            room(&self.accounts),
            room(&self.positions),
            room(&self.trades),
        ])
    }

    /// Put every table in ascending id order (positions by account, then instrument): the
    /// canonical order `export()` returns and stores that append by key need.
    pub fn sort(&mut self) {
        self.instruments.sort_unstable_by_key(|i| i.0.id);
        self.accounts.sort_unstable_by_key(|a| a.0.id);
        self.positions.sort_unstable_by_key(|p| (p.0, p.1));
        // Trades arrive mostly in id order, which this (merge) sort handles in linear time.
        self.trades.sort_by_key(|t| t.0.trade_id);
    }

    /// The `state_hash()` of the state this snapshot holds, without restoring it. Both are
    /// `finish_hash` of the record counts and the [`Digest`] of the records, so they cannot
    /// disagree on what is hashed.
    pub fn state_hash(&self) -> u64 {
        let counts =
            [self.instruments.len(), self.accounts.len(), self.positions.len(), self.trades.len()];
        finish_hash(counts, self.digest())
    }

    /// The digest of every record the snapshot holds (its order does not matter).
    fn digest(&self) -> Digest {
        let mut d = Digest::default();
        for &(spec, explicit_mark, last_price) in &self.instruments {
            d.add(instrument_record(&spec, explicit_mark));
            d.add(last_price_record(spec.id, last_price));
        }
        for (spec, collateral) in &self.accounts {
            d.add(account_record(spec, *collateral));
        }
        for (account, instrument, book) in &self.positions {
            d.add(position_record(*account, *instrument, book));
        }
        for (trade, busted) in &self.trades {
            d.add(trade_record(trade, *busted));
        }
        d
    }
}

// ---- the records state_hash covers (format 2: a digest of records) ---------------------------

/// A used position slot's (account id, instrument id, book) for a snapshot; `None` for a lane
/// no position holds yet (`account == NONE`, see `new_position`).
#[inline]
fn exported(
    p: &Position,
    row_ids: &[AccountId],
    instruments: &[(InstrumentSpec, Price, Price)],
) -> Option<(AccountId, InstrumentId, Book)> {
    (p.account != NONE)
        .then(|| (row_ids[p.account as usize], instruments[p.instrument as usize].0.id, p.book))
}

/// The hash of the counts of each kind of record and their digest.
fn finish_hash(counts: [usize; 4], digest: Digest) -> u64 {
    let mut h = StableHasher::default();
    h.u64(2); // format 2: a sum of record hashes (format 1 hashed sorted records in order)
    counts.iter().for_each(|&n| {
        h.u64(n as u64);
    });
    h.u64(digest.0).finish()
}

fn money(x: Money) -> [u64; 2] {
    [x as u64, (x >> 64) as u64]
}

/// An instrument's spec and explicit mark; its last trade price is a record of its own
/// ([`last_price_record`]) because every trade may move it.
fn instrument_record(s: &InstrumentSpec, explicit_mark: Price) -> u64 {
    let w = [u64::from(s.id), s.multiplier as u64, s.margin_bps as u64, u64::from(s.settle_days)];
    record(1, [w[0], w[1], w[2], w[3], explicit_mark as u64])
}

/// Never 0, which marks a record out of the digest (`Instrument::last_record`): a hash of 0
/// is taken as 1 (one chance in 2^64).
fn last_price_record(instrument: InstrumentId, price: Price) -> u64 {
    record(5, [u64::from(instrument), price as u64]).max(1)
}

fn account_record(s: &AccountSpec, collateral: Money) -> u64 {
    let ([n0, n1], [l0, l1], [c0, c1]) =
        (money(s.max_notional), money(s.max_loss), money(collateral));
    record(2, [s.id, s.max_position as u64, n0, n1, l0, l1, u64::from(s.suspended), c0, c1])
}

/// Never 0, which marks a record out of the digest (`Position::record`): a hash of 0 is taken
/// as 1 (one chance in 2^64).
fn position_record(account: AccountId, instrument: InstrumentId, b: &Book) -> u64 {
    let ([c0, c1], [r0, r1]) = (money(b.cost), money(b.realized));
    record(3, [account, u64::from(instrument), b.qty as u64, c0, c1, r0, r1]).max(1)
}

fn trade_record(t: &Trade, busted: bool) -> u64 {
    let w = [t.trade_id, t.buy, t.sell, u64::from(t.instrument), t.qty as u64, t.price as u64];
    record(4, [w[0], w[1], w[2], w[3], w[4], w[5], u64::from(t.trade_date), u64::from(busted)])
}

/// Room for `n` items in the cleared `v`, at once (not by doublings, each a copy) and, when
/// it grows, advised for huge pages: a snapshot buffer's first fill then takes a page fault
/// per 2 MiB instead of per 4 KiB (the periodic snapshot's pause, the first time).
fn reserve_huge<T>(v: &mut Vec<T>, n: usize) {
    if v.capacity() < n {
        v.reserve(n - v.len());
        advise_spare(v);
    }
}

/// Advise `v`'s spare capacity for huge pages and hand its whole pages back to the kernel:
/// pages the allocator had touched would otherwise stay 4 KiB pages (a 64-byte-aligned block,
/// for one, is carved out with writes to it).
fn advise_spare<T>(v: &mut Vec<T>) {
    let spare = v.spare_capacity_mut();
    let (ptr, len) = (spare.as_ptr().cast::<u8>(), std::mem::size_of_val(spare));
    crate::map::advise_huge_pages(ptr, len);
    // SAFETY: the spare capacity is the vector's own allocation and holds no element: nothing
    // reads it before writing it.
    unsafe { crate::map::fresh_pages(ptr, len) };
}

/// Commit every `(start, bytes)` range now (`map::populate`); the bytes committed and asked for.
fn populate_all(tables: &[(*const u8, usize)]) -> (usize, usize) {
    let asked = tables.iter().map(|t| t.1).sum();
    let done = tables.iter().filter(|t| crate::map::populate(t.0, t.1)).map(|t| t.1).sum();
    (done, asked)
}

/// A Vec whose capacity is advised for huge pages, its pages fresh ([`advise_spare`]).
fn with_capacity_huge<T>(n: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    advise_spare(&mut v);
    v
}

/// Evaluate MaxPosition (on the what-if position `book`), MaxNotional, MaxLoss and Margin
/// for the account `acct` whose totals would become `totals`, all at once (no early exit), as
/// bits in SPEC.md's order (bit i: `RISK_ORDER[i]` fails).
///
/// When the collateral and the totals it sums are within +-2^125 (always, but for
/// astronomical accounts), no sum of three of them can overflow, so the P&L and the excess are
/// computed without overflow checks; otherwise through [`valuation`], which may refuse.
#[inline(always)]
fn checks(acct: &Account, book: &Book, totals: &Totals) -> Result<u8, Reject> {
    // 1 unless -2^125 <= x < 2^125 (the high word's top three bits are equal).
    let far = |x: i128| ((x >> 64) as i64).wrapping_add(1 << 61) as u64 >> 62;
    let Totals { realized: r, unrealized: u, margin: m, .. } = *totals;
    if (far(acct.collateral) | far(r) | far(u) | far(m)) == 0 {
        return Ok(risk_bits_in_range(acct, book, totals));
    }
    let Valuation { pnl, excess, .. } = valuation(acct.collateral, totals)?;
    Ok(risk_bits(acct, book, totals, pnl, excess))
}

/// [`checks`] of totals whose P&L (`realized + unrealized`) and excess (`collateral + P&L -
/// margin`) the caller knows to fit in i128: computed without overflow checks.
#[inline(always)]
fn risk_bits_in_range(acct: &Account, book: &Book, totals: &Totals) -> u8 {
    let pnl = totals.realized + totals.unrealized;
    risk_bits(acct, book, totals, pnl, acct.collateral + pnl - totals.margin)
}

/// One leg of a trade between holders at an unchanged mark ([`StateMachine::book_held`]): the
/// new book's quantity, cost and realized (in 64 bits, as [`MarkedFill::leg`] computes them:
/// kept so, a leg's results take fewer registers until they are written), the account's new
/// totals' offsets ([`Narrow::shifted`]) and the checks that fail.
struct HeldLeg([i64; 3], [Money64; 4], u8);

impl HeldLeg {
    /// The leg for the common magnitudes, or `None` when it cannot answer so. Equal to
    /// [`StateMachine::leg`] wherever it answers.
    #[inline(always)]
    fn of(acct: &Account, old: &Book, d: Qty, fill: &MarkedFill) -> Option<HeldLeg> {
        let (book, delta) = fill.leg(old, d)?;
        let (totals, failed) = acct.narrow.shifted(book.qty, &delta)?;
        Some(HeldLeg([book.qty, book.cost as i64, book.realized as i64], totals, failed))
    }

    /// Write the account's new totals; the leg's new book and the checks that fail.
    #[inline(always)]
    fn write(self, acct: &mut Account) -> (Book, u8) {
        acct.narrow.totals = self.1;
        let [qty, cost, realized] = self.0;
        (Book { qty, cost: cost.into(), realized: realized.into() }, self.2)
    }
}

/// Whether an account's collateral and totals are within +-2^124: then the totals moved by
/// 64-bit offsets ([`Narrow`]), their P&L (`realized + unrealized`) and excess (`collateral +
/// P&L - margin`) cannot overflow (below 2^127 in magnitude: 2^124 + 2 * (2^124 + 2^63) +
/// 2^124 + 2^63), and neither can the bounds [`Account::set_funds`] computes from them;
/// always, but for astronomical accounts.
fn near_zero(collateral: Money, t: &Totals) -> bool {
    // 0 unless -2^124 <= x < 2^124 (the high word's top four bits are equal).
    let far = |x: i128| ((x >> 64) as i64).wrapping_add(1 << 60) as u64 >> 61;
    (far(collateral) | far(t.notional) | far(t.unrealized) | far(t.realized) | far(t.margin)) == 0
}

/// The post-trade checks' bits (bit i: `RISK_ORDER[i]` fails), from the account's limits and
/// its new book, totals, P&L and excess.
#[inline(always)]
fn risk_bits(acct: &Account, book: &Book, totals: &Totals, pnl: Money, excess: Money) -> u8 {
    let pos = book.qty.unsigned_abs() > acct.position_cap();
    let notional = totals.notional > acct.notional_cap();
    let loss = pnl < acct.loss_floor();
    let margin = excess < 0;
    u8::from(pos) | u8::from(notional) << 1 | u8::from(loss) << 2 | u8::from(margin) << 3
}

/// Take a `record` that changes out of `digest` and list its index `at` in `dirty`, unless it
/// is out already (0: listed since the digest was last settled, which hashes the records
/// listed and sets them again, never to 0).
///
/// # Safety
/// `dirty` has room for one more: an index is listed only while its record is 0, so at most
/// once, and the list holds as many as there are indices.
#[inline(always)]
unsafe fn unhash(digest: &mut Digest, record: &mut u64, dirty: &mut Vec<u32>, at: u32) {
    if *record != 0 {
        digest.sub(std::mem::replace(record, 0));
        // SAFETY: the caller's contract.
        unsafe { push_unchecked(dirty, at) };
    }
}

/// `table[i]` without a bounds check, for the trade path, which indexes the same rows, column
/// and slots many times: the checks cost ~40 instructions a trade, mostly in the registers the
/// panic paths hold (with the failed check moved out of line, -8 of them; PERFORMANCE.md,
/// eighteenth session). Every test build (debug assertions) still checks.
///
/// # Safety
/// `i < table.len()`. The trade path's indices are values of the account, instrument and
/// position indices (or hints read from them ahead): rows and columns of accounts and
/// instruments, which are appended and never removed, and slots, which `new_position` allocates
/// inside the fixed position table and which are never freed.
#[inline(always)]
unsafe fn at<T>(table: &[T], i: u32) -> &T {
    debug_assert!((i as usize) < table.len(), "{i} is not in its table");
    // SAFETY: the caller's contract.
    unsafe { table.get_unchecked(i as usize) }
}

/// [`at`] for writing.
///
/// # Safety
/// As for [`at`].
#[inline(always)]
unsafe fn at_mut<T>(table: &mut [T], i: u32) -> &mut T {
    debug_assert!((i as usize) < table.len(), "{i} is not in its table");
    // SAFETY: the caller's contract.
    unsafe { table.get_unchecked_mut(i as usize) }
}

/// `v.push(x)` without the capacity check: the trade path's first events and changed slots,
/// into vectors allocated once with room for them. With the check, the registers its growth
/// call holds cost ~20 instructions a trade (PERFORMANCE.md, eighteenth session); every test
/// build (debug assertions) still checks.
///
/// # Safety
/// `v.len() < v.capacity()`.
#[inline(always)]
unsafe fn push_unchecked<T>(v: &mut Vec<T>, x: T) {
    let n = v.len();
    debug_assert!(n < v.capacity(), "no room for the push");
    // SAFETY: the caller's contract: slot `n` is allocated and unused, and once it is written
    // the first `n + 1` items are initialized.
    unsafe {
        v.as_mut_ptr().add(n).write(x);
        v.set_len(n + 1);
    }
}

#[inline]
fn valued(book: Book, mark: Price, ins: &Instrument) -> Valued {
    Valued { book, mark, multiplier: ins.spec.multiplier, margin_bps: ins.spec.margin_bps }
}

/// An account valued from its totals: what its risk checks and its view read.
struct Valuation {
    equity: Money,
    /// realized + unrealized (MaxLoss).
    pnl: Money,
    /// equity - margin; never `i128::MIN`, so `-excess` (the shortfall) fits too.
    excess: Money,
}

/// The account invariant (docs/SEMANTICS.md, "Overflow"): an account can be valued when its
/// totals, equity, P&L, `equity - margin` and `margin - equity` all fit in i128. Every command
/// that would leave an account unvaluable is rejected with `Overflow` (totals that do not fit
/// arrive here as `None` from `Totals::replaced` or `Sums::totals`, and are refused before).
#[inline]
fn valuation(collateral: Money, t: &Totals) -> Result<Valuation, Reject> {
    let equity = equity(collateral, t)?;
    let pnl = t.realized.checked_add(t.unrealized).ok_or(Reject::Overflow)?;
    let excess = equity.checked_sub(t.margin).filter(|&x| x != i128::MIN);
    Ok(Valuation { equity, pnl, excess: excess.ok_or(Reject::Overflow)? })
}

#[inline]
fn equity(collateral: Money, t: &Totals) -> Result<Money, Reject> {
    collateral
        .checked_add(t.realized)
        .and_then(|x| x.checked_add(t.unrealized))
        .ok_or(Reject::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_batch_has_its_next_job_looked_up_while_one_is_read() {
        use crate::lookahead::JOB_MAX;
        let limits =
            Limits { accounts_max: 64, instruments_max: 8, positions_max: 512, trades_max: 8192 };
        let mut sm = StateMachine::new(limits).unwrap();
        let trade = |trade_id: u64, buy: u64, sell: u64, instrument: u32| {
            Command::ClearTrade(Trade {
                trade_id,
                buy,
                sell,
                instrument,
                qty: 1,
                price: 100 * PRICE_SCALE,
                trade_date: 20260105,
            })
        };
        let mut setup = Vec::new();
        for id in 1..=4 {
            let spec = InstrumentSpec { id, multiplier: 1, margin_bps: 100, settle_days: 2 };
            setup.push(Command::UpsertInstrument(spec));
        }
        for id in 1..=40 {
            let spec =
                AccountSpec { id, max_position: 0, max_notional: 0, max_loss: 0, suspended: false };
            setup.push(Command::UpsertAccount(spec));
            setup.push(Command::AdjustCollateral { account: id, amount: 1 << 60 });
        }
        // Positions for accounts 1..=20 in every instrument; accounts 21..=40 hold none.
        setup.extend((0..40).map(|k| trade(k + 1, 1 + k % 20, 1 + (k + 7) % 20, 1 + k as u32 % 4)));
        for (seq, c) in setup.iter().enumerate() {
            sm.apply(c, seq as u64 + 1, 0).unwrap();
        }
        // Two jobs and a bit: held positions, new ones, unknown accounts and instruments.
        let batch: Vec<Sequenced> = (0..2 * JOB_MAX as u64 + 10)
            .map(|k| Sequenced {
                seq: 1000 + k,
                ts: 0,
                cmd: trade(1000 + k, 1 + k % 43, 1 + (k * 7 + 3) % 41, 1 + (k % 5) as u32),
            })
            .collect();
        let mut want = Vec::new();
        sm.resolve_ahead(&batch, &mut want);
        let mut stage = LookupStage::new(|| {}).unwrap();
        for round in 0..3 {
            let mut jobs = stage.pipeline(&batch, sm.lookups.clone(), false);
            let before = 3 * round;
            // The first job and the next are out before any hint is read.
            assert_eq!(jobs.posted(), before + 2);
            for (i, w) in want.iter().enumerate() {
                assert_eq!(jobs.hint(i).to_words(), w.0.to_words(), "round {round}, hint {i}");
                // The first hint of the second job released the first and posted the third.
                let out = if i < JOB_MAX { 2 } else { 3 };
                assert_eq!(jobs.posted(), before + out, "round {round}, hint {i}");
            }
        }
        assert_eq!(stage.jobs(), 9);
    }

    #[test]
    fn funds_round_trip_and_are_wide_only_beyond_2_pow_124_or_2_pow_63_under_margin() {
        let spec =
            AccountSpec { id: 1, max_position: 0, max_notional: 0, max_loss: 0, suspended: false };
        let (edge, big) = (1i128 << 124, i128::from(i64::MAX) + 1);
        for x in [0, big, -big, -big + 1, edge - 1, -edge, edge, -edge - 1, i128::MIN, i128::MAX] {
            for field in 0..5 {
                let mut parts = [0; 5];
                parts[field] = x;
                let [c, notional, unrealized, realized, margin] = parts;
                let t = Totals { notional, unrealized, realized, margin };
                let mut a = Account::new(spec);
                a.set_funds(c, t);
                let near = parts.iter().all(|p| (-edge..edge).contains(p));
                // With no limits, only a margin call's bound can be out of reach: an excess of
                // -2^63 or less (the only non-zero part is x).
                let excess = if field == 4 {
                    x.saturating_neg()
                } else if field == 1 {
                    0
                } else {
                    x
                };
                let wide = !near || excess <= i64::MIN.into();
                assert_eq!(a.is_wide(), wide, "field {field} = {x}");
                assert_eq!((a.collateral, a.totals()), (c, t), "field {field} = {x}");
                // And back: funds within range again are narrow again.
                a.set_funds(7, Totals { notional: 8, unrealized: -9, realized: 10, margin: 11 });
                assert!(!a.is_wide());
                assert_eq!(a.totals().unrealized, -9);
                assert_eq!(a.collateral, 7);
            }
        }
        // Offsets move the totals from the base.
        let mut a = Account::new(spec);
        let t = Totals { notional: big, unrealized: -big, realized: 5, margin: big };
        a.set_funds(2 * big, t);
        a.narrow.totals = [1, -2, 3, -4];
        let moved =
            Totals { notional: big + 1, unrealized: -big - 2, realized: 8, margin: big - 4 };
        assert_eq!(a.totals(), moved);
    }

    #[test]
    fn narrow_checks_fail_just_past_each_bound_and_decline_what_does_not_fit() {
        let spec = AccountSpec {
            id: 1,
            max_position: 10,
            max_notional: 1_000,
            max_loss: 50,
            suspended: false,
        };
        let mut a = Account::new(spec);
        // Collateral 100; notional 900, unrealized -20, realized -10, margin 70: excess 0.
        a.set_funds(100, Totals { notional: 900, unrealized: -20, realized: -10, margin: 70 });
        let n = a.narrow;
        let bits = |qty: Qty, delta: [i64; 4]| n.shifted(qty, &delta).map(|(_, f)| f);
        assert_eq!(n.shifted(10, &[0; 4]), Some(([0; 4], 0)), "all at their bounds");
        assert_eq!(bits(11, [0; 4]), Some(1), "MaxPosition past 10");
        assert_eq!(bits(-11, [0; 4]), Some(1), "MaxPosition of a short");
        assert_eq!(bits(0, [100, 0, 0, 0]), Some(0), "notional 1,000 is the limit");
        assert_eq!(bits(0, [101, 0, 0, 0]), Some(2), "MaxNotional past 1,000");
        assert_eq!(bits(0, [0, -20, 0, -20]), Some(0), "P&L -50 is the limit, excess 0");
        assert_eq!(bits(0, [0, -21, 0, -21]), Some(4), "MaxLoss past -50, excess 0");
        assert_eq!(bits(0, [0, 0, 0, 1]), Some(8), "excess -1: a margin call");
        assert_eq!(bits(0, [0, 0, 1, 1]), Some(0), "excess 0 again");
        let mut moved = n;
        moved.totals = [i64::MAX, 0, 0, 0];
        assert_eq!(moved.shifted(0, &[1, 0, 0, 0]), None, "a notional offset beyond 64 bits");
        moved.totals = [0, i64::MAX, 0, 0];
        assert_eq!(moved.shifted(0, &[0, 0, 1, 0]), None, "a P&L offset beyond 64 bits");
        moved.totals = [0, 0, 0, 1];
        assert_eq!(moved.shifted(0, &[0, 0, 0, -1]), Some(([0; 4], 0)), "a margin offset of 0");
        moved.totals = [0, 0, 0, i64::MIN + 1];
        assert_eq!(moved.shifted(0, &[0, 0, 0, -2]), None, "a margin offset beyond 64 bits");
        // Far from 64 bits, by the base: the same checks, offsets from there.
        let far = 1i128 << 100;
        let t = Totals { notional: 900, unrealized: -far - 20, realized: far - 10, margin: 70 };
        a.set_funds(100, t);
        assert_eq!(a.narrow.shifted(10, &[100, 0, 0, 0]), Some(([100, 0, 0, 0], 0)));
        assert_eq!(a.narrow.shifted(10, &[0, -21, 0, -21]).map(|(_, f)| f), Some(4));
        a.set_funds(1 << 124, a.totals());
        assert_eq!(a.narrow.shifted(0, &[0; 4]), None, "wide funds");
        // Beyond a limit by more than 2^63: every offset fails the check; wide.
        a.set_funds(0, Totals { notional: 1_000 + (1 << 64), ..Totals::default() });
        assert!(a.is_wide(), "a notional past its limit by 2^64");
        a.set_funds(1 << 65, Totals { realized: -50 - (1 << 64), ..Totals::default() });
        assert!(a.is_wide(), "a P&L past its limit by 2^64");
        a.set_funds(0, Totals { margin: 1 << 63, ..Totals::default() });
        assert!(a.is_wide(), "a margin past the equity by 2^63");
        // (5 - 2^63 fits in 64 bits: an offset from that base.)
        a.set_totals(Totals { margin: 5, ..Totals::default() });
        assert!(!a.is_wide(), "narrow again once the margin is back");
        assert_eq!(a.totals().margin, 5);
        a.set_funds(1 << 65, Totals { notional: 1_000, realized: -50, ..Totals::default() });
        assert!(!a.is_wide(), "at the limits");
    }

    #[test]
    fn near_zero_is_collateral_and_totals_within_2_pow_124() {
        let edge = 1i128 << 124;
        for (x, near) in
            [(0, true), (edge - 1, true), (-edge, true), (edge, false), (-edge - 1, false)]
        {
            for field in 0..5 {
                let mut parts = [0; 5];
                parts[field] = x;
                let [c, notional, unrealized, realized, margin] = parts;
                let t = Totals { notional, unrealized, realized, margin };
                assert_eq!(near_zero(c, &t), near, "field {field} = {x}");
            }
        }
    }

    #[test]
    fn the_trade_date_cache_starts_with_a_valid_date() {
        // Anything else would let trades dated EPOCH_DATE skip the calendar check.
        assert!(is_valid_date(EPOCH_DATE));
    }

    use proptest::prelude::*;

    /// Money that mostly fits in 64 bits, with each 64-bit bound (and a step past it) and any
    /// i128 reachable.
    fn money() -> impl Strategy<Value = Money> {
        prop_oneof![
            24 => -(1i128 << 40)..(1 << 40),
            1 => prop_oneof![
                Just(i128::from(i64::MAX)),
                Just(i128::from(i64::MIN)),
                Just(i128::from(i64::MAX) + 1),
                Just(i128::from(i64::MIN) - 1),
            ],
            1 => any::<i128>(),
        ]
    }

    /// A trade's quantity: mostly small, with values whose books do not fit 64 bits.
    fn trade_qty() -> impl Strategy<Value = i64> {
        prop_oneof![8 => 1..2_000i64, 1 => Just(1i64 << 40), 1 => Just(i64::MAX)]
    }

    /// A trade's price in hundredths: mostly 0.01-10.00, sometimes huge.
    fn trade_price() -> impl Strategy<Value = i64> {
        prop_oneof![8 => 1..1_000i64, 1 => Just(1i64 << 40)]
    }

    /// Money near the fast checks' bound (+-2^125) and i128's, as well as anywhere.
    fn far_money() -> impl Strategy<Value = Money> {
        prop_oneof![
            4 => money(),
            1 => prop_oneof![
                Just(1i128 << 125),
                Just((1i128 << 125) - 1),
                Just(-(1i128 << 125)),
                Just(-(1i128 << 125) - 1),
                Just((1i128 << 126) - 1),
                Just(-(1i128 << 126)),
                Just(i128::MAX),
                Just(i128::MIN),
                Just(i128::MIN + 1),
            ],
            1 => any::<i128>(),
        ]
    }

    /// A positive i64: mostly below `small` (so a fill's values fit in 64 bits), with
    /// `i64::MAX` and any positive value reachable.
    fn positive(small: i64) -> impl Strategy<Value = i64> {
        prop_oneof![8 => 1..small, 1 => Just(i64::MAX), 1 => 1..i64::MAX]
    }

    /// An account's limits (max position, notional, loss): none, ordinary, any money, or the
    /// largest.
    fn limits() -> impl Strategy<Value = (Qty, Money, Money)> {
        (
            prop_oneof![Just(0), 1..1_000_000i64, Just(i64::MAX)],
            prop_oneof![Just(0), money().prop_map(|x| x.saturating_abs()), Just(i128::MAX)],
            prop_oneof![Just(0), money().prop_map(|x| x.saturating_abs()), Just(i128::MAX)],
        )
    }

    /// Whether a holder's magnitudes are ordinary: there the 64-bit holder paths
    /// (`MarkedUnit::moved`, `MarkedUnit::settled`) must answer. `price_max` is the larger of
    /// the old and new marks.
    fn ordinary_holder(qty: Qty, price_max: Price, m: i64, cost: Money, acct: &Account) -> bool {
        qty.unsigned_abs() < 1 << 16
            && price_max < 1 << 24
            && m < 100
            && cost.unsigned_abs() < 1 << 60
            && !acct.is_wide()
    }

    /// `acct`'s totals with its offsets moved by `d` ([`Narrow::moved`]), if they fit.
    fn moved_totals(acct: &Account, d: &[i64; 4]) -> Option<Totals> {
        let mut moved = *acct;
        moved.narrow.totals = acct.narrow.moved(d)?;
        Some(moved.totals())
    }

    /// An instrument's multiplier and margin rate: mostly ordinary, any valid one reachable.
    fn unit_terms() -> impl Strategy<Value = (i64, Bps)> {
        (
            prop_oneof![3 => 1i64..100, 1 => positive(100)],
            prop_oneof![3 => 0i64..=2_000, 1 => 0..=MARGIN_BPS_MAX],
        )
    }

    /// A price or mark: mostly below 2^24, any positive one reachable.
    fn held_price() -> impl Strategy<Value = i64> {
        prop_oneof![4 => 1i64..1 << 24, 1 => positive(1 << 34)]
    }

    /// A held position's quantity: mostly small, or either bound.
    fn held_qty() -> impl Strategy<Value = Qty> {
        prop_oneof![8 => -10_000i64..10_000, 1 => Just(i64::MAX), 1 => Just(i64::MIN)]
    }

    /// A book's cost or realized: mostly small, any money, or next to i128's bounds.
    fn book_money() -> impl Strategy<Value = Money> {
        prop_oneof![
            3 => -(1i128 << 40)..1 << 40,
            1 => money(),
            1 => prop_oneof![Just(i128::MAX - 7), Just(i128::MIN + 7)],
        ]
    }

    /// A position's quantity: ordinary, or either bound.
    fn position_qty() -> impl Strategy<Value = Qty> {
        prop_oneof![-1_000_000i64..1_000_000, Just(i64::MAX), Just(i64::MIN)]
    }

    /// A 64-bit offset or change: mostly small, with each bound and any value reachable.
    fn offset() -> impl Strategy<Value = i64> {
        prop_oneof![
            8 => -1_000_000i64..1_000_000,
            1 => prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(i64::MIN + 1), Just(i64::MAX - 1)],
            1 => any::<i64>(),
        ]
    }

    /// An account's limits (none, ordinary or extreme), collateral and totals (of every
    /// magnitude), for the leg tests.
    fn account_state() -> impl Strategy<Value = (AccountSpec, Money, Totals)> {
        let limits = (
            prop_oneof![Just(0), 1..1_000_000i64, Just(i64::MAX)],
            prop_oneof![Just(0), 0..(1i128 << 50), Just(i128::MAX)],
            prop_oneof![Just(0), 0..(1i128 << 50), Just(i128::MAX)],
        );
        (limits, money(), [money(), money(), money(), money()]).prop_map(|(l, collateral, t)| {
            let (max_position, max_notional, max_loss) = l;
            let spec =
                AccountSpec { id: 7, max_position, max_notional, max_loss, suspended: false };
            let totals = Totals { notional: t[0], unrealized: t[1], realized: t[2], margin: t[3] };
            (spec, collateral, totals)
        })
    }

    /// One instrument (multiplier `m`, rate `bps`, current mark `mark`) and one account whose
    /// collateral and totals are set directly: everything [`StateMachine::leg`] reads.
    fn one_of_each(
        m: i64,
        bps: Bps,
        mark: Price,
        spec: AccountSpec,
        collateral: Money,
        totals: Totals,
    ) -> StateMachine {
        let limits =
            Limits { accounts_max: 1, instruments_max: 1, positions_max: 1, trades_max: 1 };
        let mut sm = StateMachine::new(limits).expect("limits");
        let ins = InstrumentSpec { id: 1, multiplier: m, margin_bps: bps, settle_days: 2 };
        sm.apply(&Command::UpsertInstrument(ins), 1, 0).expect("instrument");
        sm.apply(&Command::UpsertAccount(spec), 2, 0).expect("account");
        sm.instruments[0].explicit_mark = mark;
        sm.instruments[0].refresh();
        sm.accounts[0].set_funds(collateral, totals);
        sm
    }

    proptest! {
        /// The inlined 64-bit leg (fill, both valuations, the totals' replace, the checks)
        /// gives exactly what the exact path gives, `Err(Overflow)` included, whatever the
        /// magnitudes: it only ever declines to the exact path, never answers differently.
        #[test]
        fn a_leg_in_64_bits_equals_the_exact_leg(
            (m, bps) in (positive(100), 0..=MARGIN_BPS_MAX),
            mark in prop_oneof![Just(0), positive(1 << 34)],
            (qty, cost, realized) in (
                prop_oneof![8 => -100_000i64..100_000, 1 => Just(i64::MAX), 1 => Just(i64::MIN)],
                money(),
                money(),
            ),
            (d, price, new_mark) in (
                prop_oneof![8 => -100_000i64..100_000, 1 => Just(i64::MAX), 1 => Just(-i64::MAX)]
                    .prop_filter("a fill is never 0", |d| *d != 0),
                positive(1 << 34),
                positive(1 << 34),
            ),
            (spec, collateral, totals) in account_state(),
        ) {
            let sm = one_of_each(m, bps, mark, spec, collateral, totals);
            let old = Book { qty, cost, realized };
            let f = Fill { d, price, mark: new_mark };
            let mut out = Leg::default();
            let fast = sm.leg(0, 0, &old, f, &mut out).map(|()| out);
            prop_assert_eq!(fast, sm.leg_exact(0, 0, old, f));
        }

        /// A holder re-valued at a new mark and margin rate in 64 bits (`MarkedUnit::moved`, then
        /// `Narrow::moved`) ends with exactly the totals of the exact path (`revalue_holders`'s
        /// `revalued`: both terms, the totals' replace, the valuation) wherever it answers, and
        /// answers for the ordinary magnitudes.
        #[test]
        fn a_holder_revalued_in_64_bits_equals_the_exact_revaluation(
            ((m, bps), (_, new_bps)) in (unit_terms(), unit_terms()),
            (mark, new_mark) in (held_price(), held_price()),
            (qty, cost, realized) in (held_qty(), book_money(), money()),
            (spec, collateral, totals) in account_state(),
        ) {
            let sm = one_of_each(m, bps, mark, spec, collateral, totals);
            let (ins, acct) = (sm.instruments[0], &sm.accounts[0]);
            let book = Book { qty, cost, realized };
            let new_ins =
                Instrument { spec: InstrumentSpec { margin_bps: new_bps, ..ins.spec }, ..ins };
            let old = valued(book, ins.mark(), &ins).terms();
            let new = valued(book, new_mark, &new_ins).terms();
            let exact = old
                .zip(new)
                .and_then(|(old, new)| acct.totals().replaced(&old, &new))
                .filter(|t| valuation(acct.collateral, t).is_ok());
            let fast = ins
                .unit
                .moved(&MarkedUnit::new(new_mark, m, new_bps), &book)
                .and_then(|d| moved_totals(acct, &d));
            let ordinary = ordinary_holder(qty, mark.max(new_mark), m, cost, acct);
            prop_assert!(fast.is_some() || !ordinary, "an ordinary holder answers");
            if fast.is_some() {
                prop_assert_eq!(fast, exact);
            }
        }

        /// A holder settled in 64 bits (`MarkedUnit::settled`, then `Narrow::moved`) ends with
        /// exactly the book, variation and totals of the exact path (`settlement_price`'s:
        /// `Book::settle`, both terms, the totals' replace, the valuation) wherever it answers,
        /// and answers for the ordinary magnitudes.
        #[test]
        fn a_holder_settled_in_64_bits_equals_the_exact_settlement(
            (m, bps) in unit_terms(),
            (mark, s) in (held_price(), held_price()),
            (qty, cost, realized) in (held_qty(), book_money(), book_money()),
            (spec, collateral, totals) in account_state(),
        ) {
            let sm = one_of_each(m, bps, mark, spec, collateral, totals);
            let (ins, acct) = (sm.instruments[0], &sm.accounts[0]);
            let book = Book { qty, cost, realized };
            let exact = book.settle(s, m).and_then(|(settled, variation)| {
                let old = valued(book, ins.mark(), &ins).terms()?;
                let new = valued(settled, s, &ins).terms()?;
                let t = acct.totals().replaced(&old, &new)?;
                valuation(acct.collateral, &t).ok().map(|_| (settled, variation, t))
            });
            let fast = ins
                .unit
                .settled(&MarkedUnit::new(s, m, bps), &book)
                .and_then(|(b, d)| Some((b, Money::from(d[2]), moved_totals(acct, &d)?)));
            let ordinary = ordinary_holder(qty, mark.max(s), m, cost, acct)
                && realized.unsigned_abs() < 1 << 120;
            prop_assert!(fast.is_some() || !ordinary, "an ordinary holder answers");
            if fast.is_some() {
                prop_assert_eq!(fast, exact);
            }
        }

        /// A leg at an unchanged mark for the common magnitudes (`HeldLeg`: the fill, the change
        /// of terms, the totals, the checks) gives exactly what the exact path gives wherever
        /// it answers, and answers for the ordinary magnitudes.
        #[test]
        fn a_leg_at_an_unchanged_mark_equals_the_exact_leg(
            (m, bps) in unit_terms(),
            mark in held_price(),
            (qty, cost, realized) in (held_qty(), money(), money()),
            (d, price) in (
                prop_oneof![8 => -10_000i64..10_000, 1 => Just(i64::MAX), 1 => Just(-i64::MAX)]
                    .prop_filter("a fill is never 0", |d| *d != 0),
                held_price(),
            ),
            (spec, collateral, totals) in account_state(),
        ) {
            let sm = one_of_each(m, bps, mark, spec, collateral, totals);
            let old = Book { qty, cost, realized };
            let exact = sm.leg_exact(0, 0, old, Fill { d, price, mark });
            let fill = MarkedFill::new(price, mark, m, bps);
            let acct = &sm.accounts[0];
            let leg = fill.and_then(|f| HeldLeg::of(acct, &old, d, &f)).map(|l| {
                let HeldLeg([qty, cost, realized], t, failed) = l;
                let book = Book { qty, cost: cost.into(), realized: realized.into() };
                let mut moved = *acct;
                moved.narrow.totals = t;
                Leg { book, totals: moved.totals(), failed }
            });
            // Far inside MarkedFill's ranges (units below 2^21 here), and an account that is not
            // wide (its funds far from 128 bits' bounds, its limits not passed by 2^63).
            let ordinary = qty.unsigned_abs().max(d.unsigned_abs()) < 1 << 16
                && price.max(mark) < 1 << 24
                && m < 100
                && bps <= 2_000
                && [cost, realized].iter().all(|x| x.unsigned_abs() < 1 << 60)
                && !acct.is_wide();
            prop_assert!(leg.is_some() || !ordinary, "an ordinary leg answers");
            if let Some(leg) = leg {
                prop_assert_eq!(Ok(leg), exact);
            }
        }

        /// A trade between two holders that does not move the mark, booked by `book_held` (its
        /// lookups made first, as `apply` makes them), leaves the same state, events and
        /// rejection as the general `book_legs` with exact legs (no hints: the trade looks
        /// everything up), at every magnitude: `book_held` only ever declines, never answers
        /// differently.
        #[test]
        fn a_trade_between_holders_is_booked_alike_by_both_paths(
            m in prop_oneof![Just(1i64), 1..1_000i64, Just(1 << 40)],
            bps in 0..=MARGIN_BPS_MAX,
            opening in [(trade_qty(), trade_price()), (trade_qty(), trade_price())],
            (qty, price) in (trade_qty(), trade_price()),
            (collateral, max_loss) in (money(), prop_oneof![Just(0), 1..(1i128 << 40)]),
        ) {
            let mark = 500 * PRICE_SCALE;
            let build = || {
                let limits =
                    Limits { accounts_max: 4, instruments_max: 1, positions_max: 8, trades_max: 8 };
                let mut sm = StateMachine::new(limits).expect("limits");
                let ins = InstrumentSpec { id: 1, multiplier: m, margin_bps: bps, settle_days: 2 };
                let mut seq = 0;
                let mut apply = |sm: &mut StateMachine, c: Command| {
                    seq += 1;
                    let _ = sm.apply(&c, seq, 0);
                };
                apply(&mut sm, Command::UpsertInstrument(ins));
                apply(&mut sm, Command::MarkPrice { instrument: 1, price: mark });
                for id in 1..=3 {
                    let spec = AccountSpec {
                        id,
                        max_position: 0,
                        max_notional: 0,
                        max_loss,
                        suspended: false,
                    };
                    apply(&mut sm, Command::UpsertAccount(spec));
                    apply(&mut sm, Command::AdjustCollateral { account: id, amount: collateral });
                }
                // Accounts 1 and 2 each open a position against account 3 (which may fail: the
                // trade below then opens it, and both paths take `book_legs`).
                for (k, (q, p)) in opening.iter().enumerate() {
                    let (buy, sell) = if k == 0 { (1, 3) } else { (3, 2) };
                    let t = Trade {
                        trade_id: 100 + k as u64,
                        buy,
                        sell,
                        instrument: 1,
                        qty: *q,
                        price: *p * (PRICE_SCALE / 100),
                        trade_date: 20260105,
                    };
                    apply(&mut sm, Command::ClearTrade(t));
                }
                sm
            };
            let t = Trade {
                trade_id: 1,
                buy: 2,
                sell: 1,
                instrument: 1,
                qty,
                price: price * (PRICE_SCALE / 100),
                trade_date: 20260105,
            };
            let mut held = build();
            let held_result = held.apply(&Command::ClearTrade(t), 50, 0).map(<[Event]>::to_vec);
            let mut general = build();
            general.exact_legs = true;
            let general_result = general
                .apply_hinted(&Command::ClearTrade(t), 50, 0, &Legs::NONE)
                .map(<[Event]>::to_vec);
            prop_assert_eq!(held_result, general_result);
            prop_assert_eq!(held.state_hash(), general.state_hash());
            for id in 1..=3 {
                prop_assert_eq!(held.account(id), general.account(id));
            }
        }

        /// The narrow checks (offsets from the base, their bounds clamped to i64) decide as the
        /// checks of the exact totals wherever they answer, at every magnitude of the base,
        /// the collateral, the limits, the offsets and the change; they decline only an
        /// account whose funds are wide or a sum beyond 64 bits.
        #[test]
        fn narrow_checks_equal_the_exact_checks(
            (max_position, max_notional, max_loss) in limits(),
            qty in position_qty(),
            (collateral, base) in (far_money(), [far_money(), far_money(), far_money(), far_money()]),
            offsets in [offset(), offset(), offset(), offset()],
            delta in [offset(), offset(), offset(), offset()],
        ) {
            let spec =
                AccountSpec { id: 7, max_position, max_notional, max_loss, suspended: false };
            let mut a = Account::new(spec);
            let [notional, unrealized, realized, margin] = base;
            a.set_funds(collateral, Totals { notional, unrealized, realized, margin });
            if !a.is_wide() {
                a.narrow.totals = offsets;
            }
            let sum = |x: [i64; 4]| x.map(i128::from);
            let (o, d) = (sum(offsets), sum(delta));
            let moved = [o[0] + d[0], o[1] + d[1], o[2] + d[2], o[3] + d[3]];
            let (pnl, fits) = (moved[2] + moved[1], |x: i128| i64::try_from(x).is_ok());
            let answers = !a.is_wide()
                && moved.iter().all(|&x| fits(x))
                && fits(pnl)
                && fits(pnl - moved[3]);
            let narrow = a.narrow.shifted(qty, &delta);
            prop_assert_eq!(narrow.is_some(), answers);
            if let Some((n, failed)) = narrow {
                prop_assert_eq!(sum(n), moved);
                let mut after = a;
                after.narrow.totals = n;
                let book = Book { qty, cost: 0, realized: 0 };
                prop_assert_eq!(Ok(failed), checks(&after, &book, &after.totals()));
            }
        }

        /// The checks (limits kept as caps, the valuation unchecked when every value is far
        /// from i128's bounds) equal SPEC.md's rules written literally with checked
        /// arithmetic, `Err(Overflow)` included, at every magnitude and at each range bound.
        #[test]
        fn the_checks_equal_the_rules_written_literally(
            (max_position, max_notional, max_loss) in limits(),
            qty in position_qty(),
            (collateral, parts) in (far_money(), [far_money(), far_money(), far_money(), far_money()]),
        ) {
            let spec =
                AccountSpec { id: 7, max_position, max_notional, max_loss, suspended: false };
            let mut acct = Account::new(spec);
            acct.set_collateral(collateral);
            let t = Totals {
                notional: parts[0],
                unrealized: parts[1],
                realized: parts[2],
                margin: parts[3],
            };
            let book = Book { qty, cost: 0, realized: 0 };
            let literal = (|| {
                let equity = collateral.checked_add(t.realized)?.checked_add(t.unrealized)?;
                let pnl = t.realized.checked_add(t.unrealized)?;
                let excess = equity.checked_sub(t.margin).filter(|&x| x != i128::MIN)?;
                let pos = max_position != 0 && qty.unsigned_abs() > max_position as u64;
                let notional = max_notional != 0 && t.notional > max_notional;
                let loss = max_loss != 0 && pnl < -max_loss;
                Some(u8::from(pos) | u8::from(notional) << 1 | u8::from(loss) << 2
                    | u8::from(excess < 0) << 3)
            })()
            .ok_or(Reject::Overflow);
            prop_assert_eq!(checks(&acct, &book, &t), literal);
            prop_assert_eq!(acct.spec(), spec, "the spec round-trips through the caps");
        }
    }
}
