//! Query views published by the state-machine thread at batch boundaries.
//!
//! Readers (the SDK, the daemon's query handler, the demo's summary) never touch the state
//! machine: every account, position and instrument it may report has a seqlock cell
//! ([`crate::seqarray`]), allocated at start-up up to the configured limits and reached through
//! lock-free id indexes (crates/ring `index`, one writer, any readers).
//!
//! What the state-machine thread publishes, and when:
//! - **positions** (qty, cost, realized): after each `apply_batch`, every position whose book
//!   the batch changed (`StateMachine::changed_positions` after each command: a trade's two, a
//!   settlement's holders), once per batch however often the batch moved it, read by slot
//!   (cells are indexed by the state machine's own row, column and slot, so publishing costs no
//!   lookup by id);
//!   readers value them (unrealized, average price) at the instrument's published mark with
//!   core's own `Book` functions, so a new mark does not re-publish positions;
//! - **accounts** (collateral, totals at current marks, equity, margin, excess): after each
//!   `apply_batch`, for every account the batch touched (`AccountUpdated`, `CollateralChanged`,
//!   `PositionChanged`) and every holder of an instrument whose mark or margin rate changed
//!   (O(holders), as in the state machine itself);
//! - **instruments** (spec, mark, last price): after each batch that touched them.
//!
//! A reader sees each view as of some batch boundary, never half a value. The state hash is
//! not a view: it is answered in order with the commands (`Client::state_hash`), which costs
//! the state machine O(1) since the core keeps it current as it applies each command.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use novate_core::{
    AccountFunds, AccountId, AccountSpec, AccountView, Book, Command, Event, InstrumentId,
    InstrumentSpec, InstrumentView, Limits, PositionView, Reject, Seq, StateMachine, Totals,
};
use novate_ring::index::{self, IndexReader, IndexWriter};

use crate::seqarray::SeqArray;

/// Probe bound of the view indexes (see crates/ring `index`): none but the table's size, as
/// in the state machine's own indexes. Every id the state machine holds must be found here;
/// with a bound, ids whose hashes collide (chosen so, or by chance) past it would be left out
/// of the views, and their queries would answer "unknown". The tables are at most half full,
/// so a lookup still ends at the first empty slot.
const PROBES_MAX: usize = usize::MAX;

/// Words of each view (i128 values take two words). An account's cell is its sequence word
/// and 19 words: three cache lines (equity and excess are derived when read).
const ACCOUNT_WORDS: usize = 19;
/// The account word holding `seq << 8 | status`.
const ACCOUNT_STATUS: usize = ACCOUNT_WORDS - 1;
/// The first account word that commands other than `UpsertAccount` change (the position
/// count; the id and spec come before it).
const ACCOUNT_FUNDS: usize = 7;
/// The first position word that changes (qty; the ids come before it).
const POSITION_BOOK: usize = 2;
const POSITION_WORDS: usize = 8;
const INSTRUMENT_WORDS: usize = 8;

/// Dirty positions up to which `publish` prefetches every cell it will write before writing:
/// a lone trade's two (a larger batch's own loop keeps enough misses in flight).
const PREFETCH_CELLS_MAX: usize = 8;

/// Status word values: a slot is indexed before its first publication and reads as absent.
const UNPUBLISHED: u64 = 0;
const OK: u64 = 1;
const OVERFLOW: u64 = 2;

fn split(v: i128) -> [u64; 2] {
    [v as u64, (v >> 64) as u64]
}

fn join(w: &[u64]) -> i128 {
    (i128::from(w[1] as i64) << 64) | i128::from(w[0])
}

/// The reading side; `Send + Sync`, shared behind an `Arc`.
pub struct Views {
    account_index: IndexReader,
    accounts: SeqArray<ACCOUNT_WORDS>,
    accounts_len: AtomicU32,
    position_index: IndexReader,
    positions: SeqArray<POSITION_WORDS>,
    instrument_index: IndexReader,
    instruments: SeqArray<INSTRUMENT_WORDS>,
    instruments_len: AtomicU32,
    /// Seq of the last command of the last published batch.
    seq: AtomicU64,
}

struct InstrumentState {
    /// (mark, margin_bps) last published.
    published: (i64, i64),
    /// Rows of the accounts holding it (positions open or flat), each once.
    holders: Vec<u32>,
}

/// No view cell yet.
const NO_CELL: u32 = u32::MAX;

/// The writing side, owned by the state-machine thread. Its cells are indexed by the state
/// machine's own dense indices (account row, instrument column; position slot through
/// `slot_cell`), so publishing a change costs no lookup by id: the ids go into the readers'
/// indexes once, when a row, column or slot is first seen.
pub struct Publisher {
    account_index: IndexWriter,
    /// Account id by row, 0 before the row is first seen (and put in `account_index`).
    row_ids: Vec<AccountId>,
    /// One past the highest row seen (readers iterate `0..accounts_len`).
    rows: u32,
    position_index: IndexWriter,
    /// State-machine position slot -> view cell (`NO_CELL` before its first publication).
    slot_cell: Vec<u32>,
    positions_len: u32,
    instrument_index: IndexWriter,
    /// By column; `None` before the column is seen.
    instruments: Vec<Option<InstrumentState>>,
    cols: u32,
    /// State-machine position slots the batch changed, each once.
    dirty_positions: Vec<u32>,
    dirty_accounts: Vec<u32>,
    dirty_instruments: Vec<u32>,
    /// By row: the account's id and spec words must be written too (first publication or
    /// `AccountUpdated`); otherwise only its funds words are.
    spec_dirty: Vec<bool>,
    /// Batch stamp per slot / row / column, to mark each dirty once per batch.
    stamp_positions: Vec<u32>,
    stamp_accounts: Vec<u32>,
    stamp_instruments: Vec<u32>,
    holders_stamp: Vec<u32>,
    batch: u32,
}

/// Create both sides with room for the state machine's limits; `slots` is the state machine's
/// [`StateMachine::position_slots_max`].
pub fn new(limits: Limits, slots: usize) -> (Publisher, Views) {
    let (a, p, i) = (
        limits.accounts_max as usize,
        limits.positions_max as usize,
        limits.instruments_max as usize,
    );
    let (aiw, air) = index::new(a, PROBES_MAX);
    let (piw, pir) = index::new(p, PROBES_MAX);
    let (iiw, iir) = index::new(i, PROBES_MAX);
    let views = Views {
        account_index: air,
        accounts: SeqArray::new(a),
        accounts_len: AtomicU32::new(0),
        position_index: pir,
        positions: SeqArray::new(p),
        instrument_index: iir,
        instruments: SeqArray::new(i),
        instruments_len: AtomicU32::new(0),
        seq: AtomicU64::new(0),
    };
    let publisher = Publisher {
        account_index: aiw,
        row_ids: vec![0; a],
        rows: 0,
        position_index: piw,
        slot_cell: vec![NO_CELL; slots],
        positions_len: 0,
        instrument_index: iiw,
        instruments: (0..i).map(|_| None).collect(),
        cols: 0,
        // At most one entry per position a batch can change.
        dirty_positions: Vec::with_capacity(p.min(slots)),
        dirty_accounts: Vec::with_capacity(a),
        dirty_instruments: Vec::with_capacity(i),
        spec_dirty: vec![false; a],
        stamp_positions: vec![0; slots],
        stamp_accounts: vec![0; a],
        stamp_instruments: vec![0; i],
        holders_stamp: vec![0; i],
        batch: 1,
    };
    (publisher, views)
}

fn position_key(row: u32, instrument: InstrumentId) -> u64 {
    (u64::from(row) + 1) << 32 | u64::from(instrument)
}

impl Publisher {
    /// Mark the account in `row` for publication at the end of the batch (indexing its id on
    /// first sight); with `spec`, its spec words too.
    #[inline]
    fn mark_account(&mut self, row: u32, id: AccountId, spec: bool) {
        let r = row as usize;
        if r >= self.row_ids.len() {
            return; // the state machine holds no more rows than accounts_max
        }
        if self.row_ids[r] == 0 {
            self.row_ids[r] = id;
            self.rows = self.rows.max(row + 1);
            // Indexed at once; readers treat an UNPUBLISHED cell as absent. (It cannot fail:
            // no probe bound, and no more rows than the table's capacity.)
            let _ = self.account_index.insert(id, row);
            self.spec_dirty[r] = true;
        }
        self.spec_dirty[r] |= spec;
        self.dirty_account(row);
    }

    /// Put a seen row on this batch's dirty list, once.
    #[inline]
    fn dirty_account(&mut self, row: u32) {
        if self.stamp_accounts[row as usize] != self.batch {
            self.stamp_accounts[row as usize] = self.batch;
            self.dirty_accounts.push(row);
        }
    }

    /// Mark the instrument in `col` for publication (and, with `holders`, every holder's
    /// account: its mark or rate moved).
    #[inline]
    fn mark_instrument(&mut self, col: u32, id: InstrumentId, holders: bool) {
        let c = col as usize;
        let Some(slot) = self.instruments.get_mut(c) else { return };
        if slot.is_none() {
            *slot = Some(InstrumentState { published: (i64::MIN, i64::MIN), holders: Vec::new() });
            self.cols = self.cols.max(col + 1);
            let _ = self.instrument_index.insert(u64::from(id), col);
        }
        self.dirty_instrument(col);
        if holders {
            self.holders_stamp[c] = self.batch;
        }
    }

    /// Put a seen column on this batch's dirty list, once.
    #[inline]
    fn dirty_instrument(&mut self, col: u32) {
        if self.stamp_instruments[col as usize] != self.batch {
            self.stamp_instruments[col as usize] = self.batch;
            self.dirty_instruments.push(col);
        }
    }

    /// Publish the position in state-machine slot `slot` now, and mark its account and
    /// instrument for publication (`publish` writes them after the positions).
    #[inline]
    fn write_position(&mut self, views: &Views, sm: &StateMachine, slot: u32, seq: Seq) {
        let Some((row, col, b)) = sm.position_book_at(slot) else { return };
        let Some(&cell) = self.slot_cell.get(slot as usize) else { return };
        if cell == NO_CELL {
            return self.first_position(views, sm, slot, seq);
        }
        // A published cell's account and instrument were seen by `first_position`.
        self.dirty_account(row);
        self.dirty_instrument(col);
        let ([c0, c1], [r0, r1]) = (split(b.cost), split(b.realized));
        let book = [b.qty as u64, c0, c1, r0, r1, seq << 8 | OK];
        views.positions.write_words(cell as usize, POSITION_BOOK, &book);
    }

    /// [`write_position`](Self::write_position) for a slot without a view cell yet: index it
    /// (and its account and instrument on first sight) and write the whole cell.
    #[cold]
    fn first_position(&mut self, views: &Views, sm: &StateMachine, slot: u32, seq: Seq) {
        let Some(p) = sm.position_at(slot) else { return };
        self.mark_account(p.row, p.account, false);
        self.mark_instrument(p.col, p.instrument, false);
        let c = self.positions_len;
        if self.position_index.insert(position_key(p.row, p.instrument), c).is_err() {
            return; // cannot happen: the state machine holds at most positions_max
        }
        let Some(cell) = self.slot_cell.get_mut(slot as usize) else { return };
        *cell = c;
        self.positions_len += 1;
        if let Some(Some(st)) = self.instruments.get_mut(p.col as usize) {
            st.holders.push(p.row);
        }
        let (b, [c0, c1], [r0, r1]) = (p.book, split(p.book.cost), split(p.book.realized));
        views.positions.write(
            c as usize,
            &[p.account, u64::from(p.instrument), b.qty as u64, c0, c1, r0, r1, seq << 8 | OK],
        );
    }

    /// Note what the command `cmd` just applied changed (its `events`, the state machine's
    /// `changed_positions`): positions, accounts and instruments are marked, each once per
    /// batch, for [`Publisher::publish`].
    #[inline]
    pub fn note(&mut self, sm: &StateMachine, cmd: &Command, events: &[Event]) {
        // A trade's events name only its positions, which mark their accounts and instrument
        // (a mark the trade moved is seen in `publish`).
        if !matches!(cmd, Command::ClearTrade(_)) {
            self.note_events(sm, events);
        }
        for &slot in sm.changed_positions() {
            let Some(stamp) = self.stamp_positions.get_mut(slot as usize) else { continue };
            if *stamp != self.batch {
                *stamp = self.batch;
                self.dirty_positions.push(slot);
            }
        }
    }

    fn note_events(&mut self, sm: &StateMachine, events: &[Event]) {
        for e in events {
            match e {
                Event::AccountUpdated { account } | Event::CollateralChanged { account, .. } => {
                    if let Some(row) = sm.row_of(*account) {
                        let spec = matches!(e, Event::AccountUpdated { .. });
                        self.mark_account(row, *account, spec);
                    }
                }
                Event::InstrumentUpdated { instrument } | Event::MarkChanged { instrument, .. } => {
                    if let Some(col) = sm.col_of(*instrument) {
                        let moved = matches!(e, Event::MarkChanged { .. });
                        self.mark_instrument(col, *instrument, moved);
                    }
                }
                _ => {}
            }
        }
    }

    /// Publish everything the state machine holds (after recovery).
    pub fn publish_all(&mut self, sm: &StateMachine, views: &Views) {
        let snap = sm.export();
        for (spec, _, _) in &snap.instruments {
            if let Some(col) = sm.col_of(spec.id) {
                self.mark_instrument(col, spec.id, false);
            }
        }
        for (spec, _) in &snap.accounts {
            if let Some(row) = sm.row_of(spec.id) {
                self.mark_account(row, spec.id, true);
            }
        }
        for (a, i, _) in &snap.positions {
            if let Some(slot) = sm.position_slot(*a, *i) {
                self.write_position(views, sm, slot, snap.last_seq);
            }
        }
        self.publish(sm, views, snap.last_seq);
    }

    /// Publish what the batch changed; `seq` is the batch's last seq.
    pub fn publish(&mut self, sm: &StateMachine, views: &Views, seq: Seq) {
        // A small batch (a lone command: a TCP request, an SDK call) first starts the cache
        // misses of every cell it will write, at once, rather than one write after another.
        if self.dirty_positions.len() <= PREFETCH_CELLS_MAX {
            for &slot in &self.dirty_positions {
                if let Some(&cell) = self.slot_cell.get(slot as usize) {
                    views.positions.prefetch(cell as usize);
                }
                if let Some((row, col, _)) = sm.position_book_at(slot) {
                    views.accounts.prefetch(row as usize);
                    views.instruments.prefetch(col as usize);
                }
            }
        }
        // Positions first: each marks its account and instrument.
        for k in 0..self.dirty_positions.len() {
            self.write_position(views, sm, self.dirty_positions[k], seq);
        }
        self.dirty_positions.clear();
        // Instruments: a changed mark or margin rate re-values every holder's account.
        for k in 0..self.dirty_instruments.len() {
            let col = self.dirty_instruments[k];
            let Some(v) = sm.instrument_at(col) else { continue };
            let s = v.spec;
            views.instruments.write(
                col as usize,
                &[
                    u64::from(s.id),
                    s.multiplier as u64,
                    s.margin_bps as u64,
                    u64::from(s.settle_days),
                    v.mark as u64,
                    v.last_price as u64,
                    u64::from(v.holders),
                    seq << 8 | OK,
                ],
            );
            let c = col as usize;
            let Some(st) = self.instruments[c].as_mut() else { continue };
            let changed = st.published != (v.mark, s.margin_bps);
            st.published = (v.mark, s.margin_bps);
            if changed || self.holders_stamp[c] == self.batch {
                let holders = std::mem::take(&mut st.holders);
                for &row in &holders {
                    self.dirty_account(row);
                }
                if let Some(st) = self.instruments[c].as_mut() {
                    st.holders = holders;
                }
            }
        }
        for k in 0..self.dirty_accounts.len() {
            let row = self.dirty_accounts[k];
            let r = row as usize;
            if std::mem::take(&mut self.spec_dirty[r]) {
                views.accounts.write(r, &account_words(self.row_ids[r], sm.account_at(row), seq));
            } else if let Some(f) = sm.account_funds_at(row) {
                views.accounts.write_words(r, ACCOUNT_FUNDS, &funds_words(&f, seq));
            }
        }
        // Release: a reader that sees a length sees the cells published before it.
        views.accounts_len.store(self.rows, Ordering::Release);
        views.instruments_len.store(self.cols, Ordering::Release);
        self.dirty_accounts.clear();
        self.dirty_instruments.clear();
        self.batch = self.batch.wrapping_add(1).max(1);
        // Release: a reader that sees this seq sees every view published above.
        views.seq.store(seq, Ordering::Release);
    }
}

/// Words `ACCOUNT_FUNDS..` of an account's cell (its spec words unchanged).
fn funds_words(f: &AccountFunds, seq: Seq) -> [u64; ACCOUNT_WORDS - ACCOUNT_FUNDS] {
    let mut w = [0u64; ACCOUNT_WORDS - ACCOUNT_FUNDS];
    w[0] = u64::from(f.positions);
    let t = &f.totals;
    for (k, x) in
        [f.collateral, t.notional, t.unrealized, t.realized, t.margin].into_iter().enumerate()
    {
        w[1 + 2 * k..3 + 2 * k].copy_from_slice(&split(x));
    }
    w[ACCOUNT_STATUS - ACCOUNT_FUNDS] = seq << 8 | if f.valued { OK } else { OVERFLOW };
    w
}

fn account_words(id: AccountId, v: Result<AccountView, Reject>, seq: Seq) -> [u64; ACCOUNT_WORDS] {
    let mut w = [0u64; ACCOUNT_WORDS];
    w[0] = id;
    w[ACCOUNT_STATUS] = seq << 8 | OVERFLOW;
    let Ok(v) = v else { return w };
    let s = v.spec;
    w[1] = s.max_position as u64;
    w[2..4].copy_from_slice(&split(s.max_notional));
    w[4..6].copy_from_slice(&split(s.max_loss));
    w[6] = u64::from(s.suspended);
    w[7] = u64::from(v.positions);
    let t = v.totals;
    for (k, x) in
        [v.collateral, t.notional, t.unrealized, t.realized, t.margin].into_iter().enumerate()
    {
        w[8 + 2 * k..10 + 2 * k].copy_from_slice(&split(x));
    }
    w[ACCOUNT_STATUS] = seq << 8 | OK;
    w
}

/// The view of a cell published `OK`: its equity and excess fitted when the state machine
/// computed them (`StateMachine::account_at`), so the same sums in the same order fit here.
fn account_view(w: &[u64; ACCOUNT_WORDS]) -> AccountView {
    let m = |k: usize| join(&w[8 + 2 * k..10 + 2 * k]);
    let (collateral, unrealized, realized, margin) = (m(0), m(2), m(3), m(4));
    let equity = collateral.wrapping_add(realized).wrapping_add(unrealized);
    AccountView {
        spec: AccountSpec {
            id: w[0],
            max_position: w[1] as i64,
            max_notional: join(&w[2..4]),
            max_loss: join(&w[4..6]),
            suspended: w[6] != 0,
        },
        positions: w[7] as u32,
        collateral,
        totals: Totals { notional: m(1), unrealized, realized, margin },
        equity,
        margin,
        excess: equity.wrapping_sub(margin),
    }
}

fn instrument_view(w: &[u64; INSTRUMENT_WORDS]) -> InstrumentView {
    InstrumentView {
        spec: InstrumentSpec {
            id: w[0] as u32,
            multiplier: w[1] as i64,
            margin_bps: w[2] as i64,
            settle_days: w[3] as u8,
        },
        mark: w[4] as i64,
        last_price: w[5] as i64,
        holders: w[6] as u32,
    }
}

/// A published view and the seq it is current as of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published<T> {
    pub value: T,
    pub seq: Seq,
}

impl Views {
    /// Seq of the last published batch.
    pub fn seq(&self) -> Seq {
        // Acquire: pairs with the publisher's Release store.
        self.seq.load(Ordering::Acquire)
    }

    /// The account's valuation: `UnknownAccount` if it does not exist; `Overflow` only for a
    /// state that breaks the account invariant (SEMANTICS.md: no accepted command does).
    pub fn account(&self, id: AccountId) -> Result<Published<AccountView>, Reject> {
        let slot = self.account_index.get(id).ok_or(Reject::UnknownAccount)?;
        let w = self.accounts.read(slot as usize);
        match w[ACCOUNT_STATUS] & 0xff {
            OK => Ok(Published { value: account_view(&w), seq: w[ACCOUNT_STATUS] >> 8 }),
            OVERFLOW => Err(Reject::Overflow),
            _ => Err(Reject::UnknownAccount),
        }
    }

    /// The position, valued at the instrument's published mark (`None`: never traded).
    pub fn position(
        &self,
        account: AccountId,
        instrument: InstrumentId,
    ) -> Option<Published<PositionView>> {
        let a = self.account_index.get(account)?;
        let slot = self.position_index.get(position_key(a, instrument))?;
        let w = self.positions.read(slot as usize);
        if w[7] & 0xff != OK {
            return None;
        }
        let book = Book { qty: w[2] as i64, cost: join(&w[3..5]), realized: join(&w[5..7]) };
        let ins = self.instrument(instrument)?.value;
        let m = ins.spec.multiplier;
        Some(Published {
            value: PositionView {
                account,
                instrument,
                qty: book.qty,
                cost: book.cost,
                realized: book.realized,
                unrealized: book.unrealized(ins.mark, m).unwrap_or(0),
                avg_price: book.avg_price(m),
            },
            seq: w[7] >> 8,
        })
    }

    pub fn instrument(&self, id: InstrumentId) -> Option<Published<InstrumentView>> {
        let slot = self.instrument_index.get(u64::from(id))?;
        let w = self.instruments.read(slot as usize);
        (w[7] & 0xff == OK).then(|| Published { value: instrument_view(&w), seq: w[7] >> 8 })
    }

    /// Every published account that can be valued, in creation order (allocates).
    pub fn accounts(&self) -> Vec<AccountView> {
        // Acquire: pairs with the Release store of the length after the cells were written.
        let n = self.accounts_len.load(Ordering::Acquire) as usize;
        (0..n)
            .filter_map(|i| {
                let w = self.accounts.read(i);
                (w[ACCOUNT_STATUS] & 0xff == OK).then(|| account_view(&w))
            })
            .collect()
    }

    /// Every published instrument, in creation order (allocates).
    pub fn instruments(&self) -> Vec<InstrumentView> {
        // Acquire: as in `accounts`.
        let n = self.instruments_len.load(Ordering::Acquire) as usize;
        (0..n)
            .filter_map(|i| {
                let w = self.instruments.read(i);
                (w[7] & 0xff == OK).then(|| instrument_view(&w))
            })
            .collect()
    }
}

const _: () = assert!(UNPUBLISHED == 0 && ACCOUNT_WORDS == 19);

#[cfg(test)]
mod tests {
    use super::*;
    use novate_core::{Trade, PRICE_SCALE};

    /// Nothing a batch changed is visible before `publish`; then its positions, accounts and
    /// instrument are all views of the state after the batch, at its last seq (a position
    /// that a later command of the batch did not touch included).
    #[test]
    fn a_batch_is_published_whole_at_its_last_seq() {
        let limits =
            Limits { accounts_max: 8, instruments_max: 4, positions_max: 16, trades_max: 64 };
        let mut sm = StateMachine::new(limits).unwrap();
        let (mut publisher, views) = new(limits, sm.position_slots_max());
        let account = |id| AccountSpec {
            id,
            max_position: 0,
            max_notional: 0,
            max_loss: 0,
            suspended: false,
        };
        let trade = |trade_id, buy, sell, qty| {
            Command::ClearTrade(Trade {
                trade_id,
                buy,
                sell,
                instrument: 7,
                qty,
                price: 100 * PRICE_SCALE,
                trade_date: 20261125,
            })
        };
        let spec = InstrumentSpec { id: 7, multiplier: 1, margin_bps: 500, settle_days: 2 };
        let batch = [
            Command::UpsertInstrument(spec),
            Command::UpsertAccount(account(1)),
            Command::UpsertAccount(account(2)),
            Command::AdjustCollateral { account: 1, amount: 1 << 60 },
            Command::AdjustCollateral { account: 2, amount: 1 << 60 },
            trade(1, 1, 2, 3),
            trade(2, 2, 1, 1),
            Command::AdjustCollateral { account: 2, amount: 5 },
        ];
        for (k, cmd) in batch.iter().enumerate() {
            let events = sm.apply(cmd, k as Seq + 1, 0).unwrap().to_vec();
            publisher.note(&sm, cmd, &events);
        }
        assert!(views.position(1, 7).is_none() && views.account(1).is_err());
        assert_eq!(views.seq(), 0);
        let last = batch.len() as Seq;
        publisher.publish(&sm, &views, last);
        assert_eq!(views.seq(), last);
        for id in [1, 2] {
            let p = views.position(id, 7).expect("published");
            assert_eq!((p.value, p.seq), (sm.position(id, 7).unwrap(), last), "position {id}");
            let a = views.account(id).expect("published");
            assert_eq!((a.value, a.seq), (sm.account(id).unwrap(), last), "account {id}");
        }
        assert_eq!(views.position(1, 7).unwrap().value.qty, 2);
        let i = views.instrument(7).expect("published");
        assert_eq!((i.value, i.seq), (sm.instrument(7).unwrap(), last));
    }

    /// Cells are rewritten in part (an account's funds words, a position's book words) unless
    /// a spec changed: after every batch of a random stream of spec changes, collateral, trades
    /// and marks, every view equals the state machine.
    #[test]
    fn views_equal_the_state_machine_after_every_batch() {
        let limits =
            Limits { accounts_max: 6, instruments_max: 3, positions_max: 18, trades_max: 4096 };
        let mut sm = StateMachine::new(limits).unwrap();
        let (mut publisher, views) = new(limits, sm.position_slots_max());
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let (mut seq, mut trade_id, mut accepted) = (0, 0, [0u32; 16]);
        for _batch in 0..300 {
            for _ in 0..1 + next(6) {
                let (a, b) = (1 + next(6), 1 + next(6));
                let instrument = 1 + next(3) as u32;
                let price = (90 + next(20) as i64) * PRICE_SCALE;
                let cmd = match next(8) {
                    0 => Command::UpsertAccount(AccountSpec {
                        id: a,
                        max_position: next(3) as i64 * 50,
                        max_notional: i128::from(next(2)) << 80,
                        max_loss: i128::from(next(2)) << 70,
                        suspended: next(5) == 0,
                    }),
                    1 => Command::UpsertInstrument(InstrumentSpec {
                        id: instrument,
                        multiplier: 1 + next(3) as i64,
                        margin_bps: next(2000) as i64,
                        settle_days: 2,
                    }),
                    2 => Command::AdjustCollateral { account: a, amount: next(1 << 40) as i128 },
                    3 => Command::MarkPrice { instrument, price },
                    _ => {
                        trade_id += 1;
                        Command::ClearTrade(Trade {
                            trade_id,
                            buy: a,
                            sell: b,
                            instrument,
                            qty: 1 + next(30) as i64,
                            price,
                            trade_date: 20261125,
                        })
                    }
                };
                seq += 1;
                if let Ok(events) = sm.apply(&cmd, seq, 0).map(|e| e.to_vec()) {
                    publisher.note(&sm, &cmd, &events);
                    accepted[cmd.kind() as usize] += 1;
                }
            }
            publisher.publish(&sm, &views, seq);
            for a in 1..=6 {
                assert_eq!(views.account(a).map(|p| p.value), sm.account(a), "account {a}");
                for i in 1..=3 {
                    let v = views.position(a, i).map(|p| p.value);
                    assert_eq!(v, sm.position(a, i), "position ({a}, {i})");
                }
            }
            for i in 1..=3 {
                assert_eq!(views.instrument(i).map(|p| p.value), sm.instrument(i), "{i}");
            }
        }
        // Every kind of change happened many times, spec changes after trades included.
        assert!([1, 2, 3, 5, 7].iter().all(|&k| accepted[k] >= 20), "{accepted:?}");
    }
}
