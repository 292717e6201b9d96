//! Average-cost positions, mark-to-market and valuation, exactly as SPEC.md states them.
//!
//! Every function is pure and returns `None` on overflow of the SPEC's types; callers turn that
//! into `Reject::Overflow` before changing any state.

use crate::units::*;

/// The booked part of a position: signed open quantity, signed cost basis of the open quantity,
/// and realized P&L.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Book {
    pub qty: Qty,
    pub cost: Money,
    pub realized: Money,
}

/// `-x` (wrapping) if `neg`, else `x`, without a branch: the trade path's signs (a position's
/// side, a fill's) are as random as the positions, and a branch on them is mispredicted about
/// half the time (`(x ^ -1) + 1 == -x`).
#[inline(always)]
pub fn negate_if(x: i64, neg: bool) -> i64 {
    let mask = -i64::from(neg);
    (x ^ mask).wrapping_sub(mask)
}

/// `q * p * m` in money, exact or `None`.
#[inline]
pub fn value(q: i128, p: Price, m: i64) -> Option<Money> {
    mul(mul(q, p)?, m)
}

/// `a * b`, exact or `None`. When `a` fits in 64 bits the product cannot overflow
/// (|a * b| <= 2^126), so it is one widening multiply instead of i128's checked multiply
/// (a `__muloti4` call).
#[inline]
pub fn mul(a: i128, b: i64) -> Option<i128> {
    match i64::try_from(a) {
        Ok(a) => Some(i128::from(a) * i128::from(b)),
        Err(_) => a.checked_mul(i128::from(b)),
    }
}

/// `a / b` truncating toward zero (b != 0), with a 64-bit division when both fit.
#[inline]
pub fn div(a: i128, b: i128) -> i128 {
    match (i64::try_from(a), i64::try_from(b)) {
        (Ok(x), Ok(y)) if !(x == i64::MIN && y == -1) => i128::from(x / y),
        _ => a / b,
    }
}

impl Book {
    /// Apply a signed trade quantity `d` (buy > 0, sell < 0) at price `p`, multiplier `m`
    /// (SPEC.md "Positions (average cost)", rules 1 and 2).
    #[inline(never)]
    pub fn fill(self, d: Qty, p: Price, m: i64) -> Option<Book> {
        match self.fill64(d, p, m) {
            Some(b) => Some(b),
            None => self.fill_wide(d, p, m),
        }
    }

    /// [`fill`](Self::fill) in 64-bit arithmetic for the common magnitudes; `None` says only
    /// "not in 64 bits" and the caller takes the exact path. Equal to the exact path wherever
    /// it answers (a property test holds it). It answers when `p * m` fits and is positive,
    /// `max(|qty|, |d|) * p * m < 2^58` and the cost and realized are within +-2^61: then
    /// `fill_in_range` cannot overflow (one range check instead of an overflow check per
    /// operation).
    #[inline]
    pub fn fill64(self, d: Qty, p: Price, m: i64) -> Option<Book> {
        let (pm, o) = p.overflowing_mul(m);
        let s = u128::from(self.qty.unsigned_abs().max(d.unsigned_abs()));
        let fits = !o
            & (pm > 0)
            & ((s * u128::from(pm as u64)) >> FILL_RANGE_BITS == 0)
            & in_book_range(self.cost)
            & in_book_range(self.realized);
        if !fits {
            return None;
        }
        let (book, _) = fill_in_range(self.qty, self.cost as i64, self.realized as i64, d, pm);
        Some(book)
    }

    /// [`fill`](Self::fill) in exact i128 arithmetic, SPEC.md's rules written literally.
    pub fn fill_wide(self, d: Qty, p: Price, m: i64) -> Option<Book> {
        debug_assert!(d != 0);
        let Book { qty, cost, realized } = self;
        if qty == 0 || (qty > 0) == (d > 0) {
            return Some(Book {
                qty: qty.checked_add(d)?,
                cost: cost.checked_add(value(i128::from(d), p, m)?)?,
                realized,
            });
        }
        let open = i128::from(qty.unsigned_abs());
        let c = i128::from(d.unsigned_abs()).min(open);
        let cost_c = match i64::try_from(c) {
            Ok(c) => mul(cost, c)?,
            Err(_) => cost.checked_mul(c)?, // only for d == i64::MIN
        };
        let closed = div(cost_c, open);
        let sign_qty = i128::from(qty.signum());
        let sign_d = i128::from(d.signum());
        let realized = realized.checked_add(value(sign_qty * c, p, m)?.checked_sub(closed)?)?;
        let r = i128::from(d.unsigned_abs()) - c;
        if r > 0 {
            // Flip: the old position is fully closed (closed == cost), the rest opens anew.
            let qty = i64::try_from(sign_d * r).ok()?;
            return Some(Book { qty, cost: value(sign_d * r, p, m)?, realized });
        }
        // c <= |qty| and has the opposite sign, so this cannot overflow.
        let qty = qty + i64::try_from(sign_d * c).ok()?;
        Some(Book { qty, cost: cost - closed, realized })
    }

    /// Mark to a settlement price `s`: returns the new book and the variation paid.
    pub fn settle(self, s: Price, m: i64) -> Option<(Book, Money)> {
        let at_s = value(i128::from(self.qty), s, m)?;
        let variation = at_s.checked_sub(self.cost)?;
        let realized = self.realized.checked_add(variation)?;
        Some((Book { qty: self.qty, cost: at_s, realized }, variation))
    }

    /// Unrealized P&L at mark `mark`: `qty * M * m - cost`.
    pub fn unrealized(&self, mark: Price, m: i64) -> Option<Money> {
        value(i128::from(self.qty), mark, m)?.checked_sub(self.cost)
    }

    /// Average price for display: `cost / (qty * m)` truncated; `None` when flat.
    pub fn avg_price(&self, m: i64) -> Option<Price> {
        if self.qty == 0 {
            return None;
        }
        i64::try_from(self.cost / (i128::from(self.qty) * i128::from(m))).ok()
    }
}

/// `a * b / d` truncating toward zero, the product exact in 128 bits, with no branch: one
/// `imul` and one `idiv`. (Rust's `/` on i64 compiles, for generic x86-64, to a test of
/// whether both operands fit in 32 bits and a branch to a 32-bit division; on the trade path
/// the dividend's size follows a position's side, as random as the positions, so that branch
/// was mispredicted about half the time. And a 128-bit division would be a library call.)
///
/// # Safety
/// `0 <= b <= d` and `d >= 1`: then `|a * b / d| <= |a|`, so the quotient fits (the division
/// faults when it does not, or when `d` is 0).
#[inline(always)]
pub unsafe fn mul_div64(a: i64, b: i64, d: i64) -> i64 {
    debug_assert!(0 <= b && b <= d && d >= 1, "mul_div64({a}, {b}, {d})");
    #[cfg(target_arch = "x86_64")]
    {
        let q: i64;
        // SAFETY: `imul` sets rdx:rax to the 128-bit product rax * b, `idiv` divides it by `d`
        // (quotient in rax, remainder in rdx, discarded); the caller's bounds keep the quotient
        // within i64, so it does not fault. No memory or stack is touched; the flags are
        // clobbered (asm!'s default).
        unsafe {
            std::arch::asm!(
                "imul {b}",
                "idiv {d}",
                b = in(reg) b,
                d = in(reg) d,
                inout("rax") a => q,
                out("rdx") _,
                options(pure, nomem, nostack),
            );
        }
        q
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (i128::from(a) * i128::from(b) / i128::from(d)) as i64
    }
}

/// Whether a book's cost or realized is within the range `fill_in_range` takes: +-2^61.
#[inline(always)]
fn in_book_range(x: Money) -> bool {
    (x as u128).wrapping_add(BOOK_RANGE) < 2 * BOOK_RANGE
}

/// A fill of `d` (buy > 0) at `pm` (price times multiplier, > 0) of the book `qty`, `cost`,
/// `realized` (SPEC.md "Positions (average cost)", rules 1 and 2): the new book and the P&L
/// the fill realizes. In 64-bit arithmetic with no overflow check: the callers check that
/// `max(|qty|, |d|) * pm < 2^58` and `|cost|, |realized| < 2^61` ([`Book::fill64`],
/// [`MarkedFill::leg`]), and then every value below is under 2^63 in magnitude (a unit
/// count is at most `2 * max(|qty|, |d|)`, a value of units below 2^59, the closed cost at
/// most `|cost|`).
///
/// No branch on the kind of fill: whether a trade adds to, reduces, closes or flips a
/// position is as random as the positions' sides, and a branch on it was mispredicted about
/// half the time. One formula covers all four: `c` units close (0 unless `d` is against the
/// position), the closed cost is `cost * c / |qty|`, and the other `|d| - c` units open.
#[inline(always)]
fn fill_in_range(qty: Qty, cost: i64, realized: i64, d: Qty, pm: i64) -> (Book, i64) {
    // |qty| as a divisor, at most i64::MAX (so it stays positive whatever the input).
    let (a, dd) = (qty.unsigned_abs().min(i64::MAX as u64), d.unsigned_abs());
    // Units closed: min(|d|, |qty|) when d is against the position, else 0 (and 0 when
    // qty == 0: then |qty| = 0).
    let c = dd.min(a) as i64 & (qty ^ d) >> 63;
    // cost * c / |qty| (the product exact in 128 bits), truncating toward zero like i128's
    // division; 0 when qty == 0.
    // SAFETY: 0 <= c <= a <= a.max(1), and a.max(1) >= 1.
    let closed = unsafe { mul_div64(cost, c, a.max(1) as i64) };
    let gain = negate_if(c * pm, qty < 0) - closed;
    let opened = negate_if((dd as i64 - c) * pm, d < 0);
    // |closed| <= |cost|, of the same sign: cost - closed is between 0 and cost.
    let book = Book {
        qty: qty + d,
        cost: (cost - closed + opened).into(),
        realized: (realized + gain).into(),
    };
    (book, gain)
}

/// A fill at `price` of a position valued at one mark before and after it (a trade that does
/// not move its instrument's mark), computed for the common magnitudes with no overflow check
/// per operation: one range check per leg ([`MarkedFill::leg`]) proves that nothing in it can
/// overflow 64 bits. Built from the instrument's [`MarkedUnit`] (its part at the mark, kept with
/// the instrument) and the trade's price, once a trade, for both legs.
#[derive(Clone, Copy, Debug)]
pub struct MarkedFill {
    /// `price * m`: the money of one unit at the fill's price.
    pm: i64,
    /// `mark * m`: the money of one unit at the mark.
    mm: i64,
    /// `mark * m * margin_bps`: a unit's margin, times `BPS_SCALE`.
    mmb: i64,
    /// [`MarkedFill::leg`] answers for unit counts below `2^units_bits`: then a count times
    /// `max(pm, mm)` is below `2^FILL_RANGE_BITS` and times `mmb` below
    /// `2^MARGIN_RANGE_BITS`.
    units_bits: u32,
}

/// [`MarkedFill::leg`] answers when `max(|qty|, |d|) * max(pm, mm)` is below this (every
/// quantity's value then fits with room to add three of them)...
const FILL_RANGE_BITS: u32 = 58;
/// ... and `max(|qty|, |d|) * mmb` below this (a margin's product, at most twice that, then
/// fits in u64: as [`Valued::terms64`] requires of `notional * margin_bps`)...
const MARGIN_RANGE_BITS: u32 = 63;
/// ... and the book's cost and realized are within +-2^61.
const BOOK_RANGE: u128 = 1 << 61;

/// The part of a [`MarkedFill`] that depends on the instrument alone: a unit's value and
/// margin at its mark, kept with the instrument and computed again whenever its mark or terms
/// change, so that a trade computes only its own price's part ([`MarkedUnit::fill`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarkedUnit {
    /// The mark these are for; 0 (no mark is) when a product does not fit or an input is out
    /// of its domain: then no fill is computed from it.
    mark: Price,
    /// `mark * m`.
    mm: i64,
    /// `mark * m * margin_bps`.
    mmb: i64,
    /// `bits(mm)`, and `MARGIN_RANGE_BITS - bits(mmb)`: a unit count below `2^margin_bits`
    /// times `mmb` is below `2^MARGIN_RANGE_BITS`.
    mm_bits: u32,
    margin_bits: u32,
}

/// The bit length of a non-negative `x`: `x < 2^bits(x)`.
#[inline(always)]
fn bits(x: i64) -> u32 {
    u64::BITS - (x as u64).leading_zeros()
}

impl MarkedUnit {
    /// For an instrument of multiplier `m` and margin rate `bps` at `mark` (any values: out of
    /// their domain, `mark`, `m` > 0 and `bps` >= 0, it computes no fill).
    pub fn new(mark: Price, m: i64, bps: Bps) -> MarkedUnit {
        let (mm, o1) = mark.overflowing_mul(m);
        let (mmb, o2) = mm.overflowing_mul(bps);
        if o1 | o2 | (m <= 0) | (mark <= 0) | (bps < 0) {
            return MarkedUnit::default();
        }
        let (mm_bits, margin_bits) = (bits(mm), MARGIN_RANGE_BITS - bits(mmb));
        MarkedUnit { mark, mm, mmb, mm_bits, margin_bits }
    }

    /// The fill at `price` of an instrument of multiplier `m` (the one these were computed
    /// for) valued at this mark before and after; `None` when `price * m` does not fit, an
    /// input is out of its domain or this is for no mark.
    #[inline(always)]
    pub fn fill(&self, price: Price, m: i64) -> Option<MarkedFill> {
        let (pm, o) = price.overflowing_mul(m);
        if o | (price <= 0) | (self.mark == 0) {
            return None;
        }
        // (Up to twice as strict as the products themselves: the bound is checked with one
        // shift a leg.)
        let fill = FILL_RANGE_BITS.checked_sub(bits(pm).max(self.mm_bits))?;
        let units_bits = fill.min(self.margin_bits);
        Some(MarkedFill { pm, mm: self.mm, mmb: self.mmb, units_bits })
    }

    /// The change of a book's [`Terms`] (notional, unrealized, realized, margin) when its
    /// instrument's mark and margin rate move from this unit's to `to`'s (a unit of the same
    /// multiplier), or `None` when the magnitudes are beyond the ranges of
    /// [`MarkedFill::leg`] at either mark (the caller takes the exact path). Equal to the
    /// exact terms' difference wherever it answers (a property test holds it).
    ///
    /// The bounds: `|qty|` below `2^(58 - bits(mm))` and `2^margin_bits` at both marks, so
    /// each value `qty * mm` is below 2^58 in magnitude and each margin product `|qty| * mmb`
    /// below 2^63; the cost within +-2^61, so the unrealized (`qty * mm - cost`) fits at
    /// both marks, as the exact terms require. The realized does not move.
    #[inline(always)]
    pub fn moved(&self, to: &MarkedUnit, book: &Book) -> Option<[i64; 4]> {
        if self.mark == 0 || to.mark == 0 || !in_book_range(book.cost) {
            return None;
        }
        let qty = book.qty;
        let units = FILL_RANGE_BITS
            .checked_sub(self.mm_bits.max(to.mm_bits))?
            .min(self.margin_bits)
            .min(to.margin_bits);
        let a = qty.unsigned_abs();
        if a >> units != 0 {
            return None;
        }
        let (v_old, v_new) = (qty * self.mm, qty * to.mm);
        let (n_old, n_new) = (v_old.unsigned_abs() as i64, v_new.unsigned_abs() as i64);
        let bps = BPS_SCALE as u64;
        let (g_old, g_new) = ((a * self.mmb as u64) / bps, (a * to.mmb as u64) / bps);
        Some([n_new - n_old, v_new - v_old, 0, g_new as i64 - g_old as i64])
    }

    /// A book settled at `to`'s mark (as [`Book::settle`]: its cost becomes its value there,
    /// the difference is the variation, realized) and the change of its [`Terms`] from this
    /// unit's mark to the settled book's at `to`'s, or `None` as for [`moved`](Self::moved)
    /// (and when the realized would pass i128). The variation is the change of realized.
    /// Equal to the exact path wherever it answers (a property test holds it).
    ///
    /// The bounds of `moved`: the value at the settlement price is below 2^58 in magnitude and
    /// the cost within +-2^61, so the variation is within +-2^62 and the change of unrealized
    /// (to 0: the old value's difference less the variation) within +-2^63.
    #[inline(always)]
    pub fn settled(&self, to: &MarkedUnit, book: &Book) -> Option<(Book, [i64; 4])> {
        let [dn, du, _, dg] = self.moved(to, book)?;
        let at_s = book.qty * to.mm;
        let variation = at_s - book.cost as i64;
        let realized = book.realized.checked_add(variation.into())?;
        let settled = Book { qty: book.qty, cost: at_s.into(), realized };
        Some((settled, [dn, du - variation, variation, dg]))
    }
}

impl MarkedFill {
    /// `None` when a product does not fit or an input is out of its domain (`price`, `m` and
    /// `mark` > 0, `bps` >= 0: always, for validated instruments and trades).
    #[inline(always)]
    pub fn new(price: Price, mark: Price, m: i64, bps: Bps) -> Option<MarkedFill> {
        MarkedUnit::new(mark, m, bps).fill(price, m)
    }

    /// The book after filling `d` (SPEC.md rules 1 and 2, as [`Book::fill`]) and the change of
    /// the position's [`Terms`] at the mark (new minus old: notional, unrealized, realized,
    /// margin), or `None` when the magnitudes are beyond the ranges above (the caller takes the
    /// exact path). Equal to the exact path wherever it answers (a property test holds it).
    ///
    /// The bounds, with `s = max(|qty|, |d|)` (below `2^units_bits`), `K = max(pm, mm)`,
    /// `s * K < 2^58`, `s * mmb < 2^63`, `|cost|, |realized| < 2^61`: every unit count is at
    /// most `2s`, every value of units below `2 * 2^58`, the closed cost at most `|cost|`, a
    /// margin's product below 2^64, so each result below is under 2^63 in magnitude, and a
    /// margin (a product over `BPS_SCALE`) below 2^51: so is the change of margin. The fill
    /// itself is `fill_in_range`'s.
    #[inline(always)]
    pub fn leg(&self, old: &Book, d: Qty) -> Option<(Book, [i64; 4])> {
        let (qty, a) = (old.qty, old.qty.unsigned_abs());
        // max(|qty|, |d|) < 2^units_bits.
        let units = (a | d.unsigned_abs()) >> self.units_bits == 0;
        if !(units & in_book_range(old.cost) & in_book_range(old.realized)) {
            return None;
        }
        let cost = old.cost as i64;
        let (book, gain) = fill_in_range(qty, cost, old.realized as i64, d, self.pm);
        let (q, cost_new) = (book.qty, book.cost as i64);
        // The position's signed value at the mark before and after (`qty * mark * m`; its
        // magnitude is the notional), computed signed: an absolute value first was compiled to
        // a branch on the new side, as random as the trades.
        let (v_old, v_new) = (qty * self.mm, q * self.mm);
        let (n_old, n_new) = (v_old.unsigned_abs() as i64, v_new.unsigned_abs() as i64);
        let bps = BPS_SCALE as u64;
        let (g_old, g_new) =
            ((a * self.mmb as u64) / bps, (q.unsigned_abs() * self.mmb as u64) / bps);
        let (u_old, u_new) = (v_old - cost, v_new - cost_new);
        Some((book, [n_new - n_old, u_new - u_old, gain, g_new as i64 - g_old as i64]))
    }
}

/// Sums over positions that risk and margin need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Totals {
    /// Sum of `|qty| * mark * m`.
    pub notional: Money,
    /// Sum of `qty * mark * m - cost`.
    pub unrealized: Money,
    /// Sum of realized P&L.
    pub realized: Money,
    /// Sum of `|qty| * mark * m * margin_bps / 10_000`, truncated per position.
    pub margin: Money,
}

impl Totals {
    #[inline]
    fn parts(&self) -> [i128; 4] {
        [self.notional, self.unrealized, self.realized, self.margin]
    }

    #[inline]
    fn from_parts(p: [i128; 4]) -> Totals {
        Totals { notional: p[0], unrealized: p[1], realized: p[2], margin: p[3] }
    }

    /// These totals with one position's 64-bit terms `old` replaced by `new`, or `None` if a
    /// total would not fit in i128. Exact: each difference fits in 65 bits, so one checked
    /// add per part overflows exactly when the true total does not fit.
    #[inline]
    pub fn replaced64(&self, old: &Terms64, new: &Terms64) -> Option<Totals> {
        let t = self.parts();
        let mut out = [0i128; 4];
        let mut overflow = false;
        for i in 0..4 {
            let (x, o) = t[i].overflowing_add(i128::from(new[i]) - i128::from(old[i]));
            out[i] = x;
            overflow |= o;
        }
        if overflow {
            return None;
        }
        Some(Totals::from_parts(out))
    }

    /// These totals with one position's terms `old` replaced by `new`, or `None` if a total
    /// would not fit in i128. Exact whatever the magnitudes (the difference of two i128 terms
    /// may not fit in i128 itself: then it goes through a [`WideSum`]); equal to
    /// [`replaced64`](Self::replaced64) where that answers.
    #[inline]
    pub fn replaced(&self, old: &Terms, new: &Terms) -> Option<Totals> {
        let (t, o, n) = (self.parts(), old.parts(), new.parts());
        let mut out = [0i128; 4];
        for i in 0..4 {
            out[i] = match n[i].checked_sub(o[i]) {
                Some(d) => t[i].checked_add(d)?,
                None => {
                    let mut w = WideSum::of(t[i]);
                    w.sub(o[i]);
                    w.add(n[i]);
                    w.get()?
                }
            };
        }
        Some(Totals::from_parts(out))
    }
}

/// One position with what valuing it needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Valued {
    pub book: Book,
    pub mark: Price,
    pub multiplier: i64,
    pub margin_bps: Bps,
}

/// One position's contribution to each of the [`Totals`].
pub type Terms = Totals;

impl Valued {
    /// The scalar twin: SPEC.md's formulas written literally with checked arithmetic.
    pub fn terms_scalar(&self) -> Option<Terms> {
        let q = i128::from(self.book.qty);
        let notional = value(q.abs(), self.mark, self.multiplier)?;
        Some(Terms {
            notional,
            unrealized: self.book.unrealized(self.mark, self.multiplier)?,
            realized: self.book.realized,
            margin: div(mul(notional, self.margin_bps)?, i128::from(BPS_SCALE)),
        })
    }

    /// The fast path: one widening 64x64 multiply per value and a 64-bit division when the
    /// numbers allow it, overflow tracked as flags instead of branches. Falls back to the
    /// scalar twin for the rare position whose magnitudes could overflow: results are identical.
    #[inline]
    pub fn terms(&self) -> Option<Terms> {
        let qm = i128::from(self.book.qty) * i128::from(self.multiplier); // |q*m| <= 2^126
        let qm_abs = qm.unsigned_abs();
        // < 2^64 * 2^63 = 2^127 when qm_abs < 2^64 and mark >= 0: fits i128.
        let notional_u = u128::from(qm_abs as u64) * u128::from(self.mark as u64);
        let notional = notional_u as i128;
        let signed = if qm < 0 { notional.wrapping_neg() } else { notional };
        let (unrealized, o1) = signed.overflowing_sub(self.book.cost);
        let (nb, o2) = notional_u.overflowing_mul(u128::from(self.margin_bps as u64));
        let margin = if (nb >> 64) == 0 {
            ((nb as u64) / BPS_SCALE as u64) as i128
        } else {
            (nb / BPS_SCALE as u128) as i128
        };
        let slow = (qm_abs >> 64) != 0 || self.mark < 0 || self.margin_bps < 0;
        if slow | o1 | o2 | ((nb >> 127) != 0) {
            return self.terms_scalar();
        }
        Some(Terms { notional, unrealized, realized: self.book.realized, margin })
    }
}

/// A position's [`Terms`] as 64-bit numbers: notional, unrealized, realized, margin.
pub type Terms64 = [i64; 4];

impl Valued {
    /// The common case in 64 bits: when the book's cost and realized, `qty * m`, the notional
    /// and `notional * margin_bps` all fit, the terms are computed with 64-bit multiplies and
    /// one overflow flag; equal to [`terms`](Self::terms) then. `None` says only "not in 64
    /// bits": the caller takes the exact path, which may still succeed.
    #[inline]
    pub fn terms64(&self) -> Option<Terms64> {
        let b = &self.book;
        let (cost, realized) = (b.cost as i64, b.realized as i64);
        let wide = i128::from(cost) != b.cost || i128::from(realized) != b.realized;
        let (qm, o1) = b.qty.overflowing_mul(self.multiplier);
        let (n, o2) = (negate_if(qm, qm < 0) as u64).overflowing_mul(self.mark as u64);
        let (nb, o3) = n.overflowing_mul(self.margin_bps as u64);
        let signed = negate_if(n as i64, qm < 0);
        let (unrealized, o4) = signed.overflowing_sub(cost);
        // A negative mark or rate, or a notional >= 2^63, would make the casts above lie.
        let sign = (self.mark | self.margin_bps | n as i64) < 0;
        if wide | o1 | o2 | o3 | o4 | sign {
            return None;
        }
        Some([n as i64, unrealized, realized, (nb / BPS_SCALE as u64) as i64])
    }
}

/// An exact running sum of i128 terms: a wrapping 128-bit low part and a signed count of
/// carries. Partial sums never overflow, so a total is the same whatever the order of its
/// terms (or whether it was built incrementally); only the final value must fit in i128.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WideSum {
    lo: u128,
    hi: i64,
}

impl WideSum {
    pub fn of(x: i128) -> WideSum {
        WideSum { lo: x as u128, hi: -i64::from(x < 0) }
    }

    #[inline]
    pub fn add(&mut self, x: i128) {
        let (s, carry) = self.lo.overflowing_add(x as u128);
        self.lo = s;
        self.hi += i64::from(carry) - i64::from(x < 0);
    }

    #[inline]
    pub fn sub(&mut self, x: i128) {
        let (s, borrow) = self.lo.overflowing_sub(x as u128);
        self.lo = s;
        self.hi += i64::from(x < 0) - i64::from(borrow);
    }

    /// The sum, if it fits in i128.
    pub fn get(&self) -> Option<i128> {
        let v = self.lo as i128;
        match self.hi {
            0 if v >= 0 => Some(v),
            -1 if v < 0 => Some(v),
            _ => None,
        }
    }
}

/// [`Totals`] being summed exactly (see [`WideSum`]), laid out as four low words then four
/// carry counts (96 bytes instead of 4 x 32 padded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    lo: [u128; 4],
    hi: [i64; 4],
}

impl Sums {
    pub fn of(t: &Totals) -> Sums {
        let mut s = Sums::default();
        s.add(t);
        s
    }

    #[inline]
    pub fn add(&mut self, t: &Terms) {
        for (i, x) in t.parts().into_iter().enumerate() {
            let mut w = WideSum { lo: self.lo[i], hi: self.hi[i] };
            w.add(x);
            (self.lo[i], self.hi[i]) = (w.lo, w.hi);
        }
    }

    #[inline]
    pub fn sub(&mut self, t: &Terms) {
        for (i, x) in t.parts().into_iter().enumerate() {
            let mut w = WideSum { lo: self.lo[i], hi: self.hi[i] };
            w.sub(x);
            (self.lo[i], self.hi[i]) = (w.lo, w.hi);
        }
    }

    pub fn totals(&self) -> Option<Totals> {
        let get = |i: usize| WideSum { lo: self.lo[i], hi: self.hi[i] }.get();
        Some(Totals { notional: get(0)?, unrealized: get(1)?, realized: get(2)?, margin: get(3)? })
    }
}

/// Value many positions with the fast kernel.
pub fn value_batch(positions: &[Valued]) -> Option<Totals> {
    let mut s = Sums::default();
    for v in positions {
        s.add(&v.terms()?);
    }
    s.totals()
}

/// Value many positions with the scalar twin.
pub fn value_scalar(positions: &[Valued]) -> Option<Totals> {
    let mut s = Sums::default();
    for v in positions {
        s.add(&v.terms_scalar()?);
    }
    s.totals()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: Price = PRICE_SCALE; // 1.00

    fn b(qty: Qty, cost: Money, realized: Money) -> Book {
        Book { qty, cost, realized }
    }

    #[test]
    fn open_and_add() {
        let x = Book::default().fill(10, 100 * P, 1).unwrap();
        assert_eq!(x, b(10, 1000 * P as i128, 0));
        let x = x.fill(5, 110 * P, 1).unwrap();
        assert_eq!(x, b(15, 1550 * P as i128, 0));
        assert_eq!(x.avg_price(1), Some(10_333_333_333)); // 103.33333333 truncated
    }

    #[test]
    fn reduce_truncates_the_closed_cost() {
        // Long 3 at total cost 100 (1e-8 units): closing 1 closes 100*1/3 = 33 (truncated).
        let x = b(3, 100, 0).fill(-1, 50, 1).unwrap();
        assert_eq!(x, b(2, 67, 50 - 33));
    }

    #[test]
    fn short_reduce_and_close() {
        // Short 10 at 100, multiplier 50: cost = -10*100*50.
        let x = Book::default().fill(-10, 100 * P, 50).unwrap();
        assert_eq!(x.cost, -50_000 * P as i128);
        // Buy back 4 at 90: realized = sign(-1)*4*90*50 - (cost*4/10) = -18000 + 20000 = 2000.
        let x = x.fill(4, 90 * P, 50).unwrap();
        assert_eq!(x, b(-6, -30_000 * P as i128, 2_000 * P as i128));
        // Close at 95: realized += -6*95*50 - (-30000) = -28500 + 30000 = 1500.
        let x = x.fill(6, 95 * P, 50).unwrap();
        assert_eq!(x, b(0, 0, 3_500 * P as i128));
        assert_eq!(x.avg_price(50), None);
    }

    #[test]
    fn flip_long_to_short() {
        // Long 5 at 10, sell 8 at 12: close 5 (realized 10), open short 3 at 12.
        let x = Book::default().fill(5, 10 * P, 1).unwrap().fill(-8, 12 * P, 1).unwrap();
        assert_eq!(x, b(-3, -36 * P as i128, 10 * P as i128));
    }

    #[test]
    fn settlement_moves_cost_to_the_price() {
        let x = Book::default().fill(-2, 100 * P, 10).unwrap();
        let (y, var) = x.settle(105 * P, 10).unwrap();
        assert_eq!(var, -100 * P as i128); // short 2 x 5 x 10
        assert_eq!(y, b(-2, -2100 * P as i128, -100 * P as i128));
        assert_eq!(y.unrealized(105 * P, 10), Some(0));
    }

    #[test]
    fn extreme_quantities_are_exact_or_none() {
        // A position of i64::MIN closed by i64::MIN + 1 and the other way round.
        let x = b(i64::MIN, -(1 << 50), 0).fill(i64::MAX, 1, 1).unwrap();
        assert_eq!(x.qty, -1);
        let y = b(i64::MAX, 1 << 60, 0).fill(i64::MIN, 1, 1).unwrap(); // flips to short 1
        assert_eq!(b(i64::MAX, 1 << 90, 0).fill(i64::MIN, 1, 1), None); // cost * c = 2^153
        assert_eq!((y.qty, y.cost), (-1, -1));
        assert_eq!(div(-7, 2), -3);
        assert_eq!(div(i128::from(i64::MIN), -1), 1 << 63);
        assert_eq!(mul(i128::MAX, 2), None);
        assert_eq!(mul(1 << 64, 1 << 62), Some(1 << 126));
    }

    #[test]
    fn overflow_is_none() {
        assert_eq!(Book::default().fill(i64::MAX, i64::MAX, i64::MAX), None);
        assert_eq!(b(i64::MAX, 0, 0).fill(1, 1, 1), None);
        assert_eq!(b(1, i128::MAX, 0).fill(1, 1, 1), None);
    }

    #[test]
    fn margin_truncates_per_position() {
        // 3 units at 0.00000001 with 3333 bps: 3 * 3333 / 10000 = 0 per position.
        let v = Valued { book: b(3, 3, 0), mark: 1, multiplier: 1, margin_bps: 3333 };
        let t = value_scalar(&[v, v, v, v]).unwrap();
        assert_eq!(t.margin, 0);
        assert_eq!(t.notional, 12);
        assert_eq!(value_batch(&[v, v, v, v]), Some(t));
    }

    fn valued() -> impl Strategy<Value = Valued> {
        let big =
            prop_oneof![any::<i64>(), -1_000_000i64..1_000_000, Just(i64::MAX), Just(i64::MIN + 1)];
        let money = prop_oneof![any::<i128>(), -1_000_000_000_000i128..1_000_000_000_000];
        (big.clone(), money.clone(), money, 1..i64::MAX, 1..i64::MAX, 0..=MARGIN_BPS_MAX).prop_map(
            |(qty, cost, realized, mark, multiplier, margin_bps)| Valued {
                book: Book { qty, cost, realized },
                mark,
                multiplier: if multiplier % 3 == 0 { multiplier } else { multiplier % 100 + 1 },
                margin_bps,
            },
        )
    }

    /// Positions whose values mostly fit in 64 bits, with each bound of `terms64` reachable.
    fn small_valued() -> impl Strategy<Value = Valued> {
        let qty = prop_oneof![-1_000_000i64..1_000_000, Just(i64::MAX), Just(i64::MIN)];
        let money = prop_oneof![
            -(1i128 << 40)..(1 << 40),
            Just(i128::from(i64::MAX)),
            Just(i128::from(i64::MIN)),
            Just(i128::from(i64::MAX) + 1),
            Just(i128::from(i64::MIN) - 1),
        ];
        let mark = prop_oneof![1i64..1 << 24, Just(i64::MAX), Just(-1)];
        let bps = prop_oneof![0..=MARGIN_BPS_MAX, Just(-1)];
        (qty, money.clone(), money, mark, 1i64..1_000, bps).prop_map(
            |(qty, cost, realized, mark, multiplier, margin_bps)| Valued {
                book: Book { qty, cost, realized },
                mark,
                multiplier,
                margin_bps,
            },
        )
    }

    #[test]
    fn terms64_answers_for_ordinary_positions_and_declines_at_each_bound() {
        let v = Valued { book: b(-7, -7_000, 25), mark: 90, multiplier: 10, margin_bps: 1_000 };
        assert_eq!(v.terms64(), Some([6_300, 700, 25, 630]));
        // Notional exactly i64::MAX still answers; one more unit of quantity does not.
        let at = Valued { book: b(1, 0, 0), mark: i64::MAX, multiplier: 1, margin_bps: 0 };
        assert_eq!(at.terms64(), Some([i64::MAX, i64::MAX, 0, 0]));
        assert_eq!(Valued { book: b(2, 0, 0), ..at }.terms64(), None);
        let declines = [
            Valued { book: b(-7, i128::from(i64::MIN) - 1, 25), ..v }, // cost beyond i64
            Valued { book: b(-7, -7_000, i128::from(i64::MAX) + 1), ..v }, // realized too
            Valued { book: b(i64::MIN, 0, 0), multiplier: 1, ..v },    // |qty * m| = 2^63
            Valued { margin_bps: -1, ..v },                            // a negative rate
            Valued { mark: -1, ..v },                                  // a negative mark
            Valued { book: b(1, 0, 0), mark: 1 << 60, margin_bps: 100, ..v }, // notional * bps
            Valued { book: b(1, i128::from(i64::MIN), 0), mark: 1, ..v }, // unrealized
        ];
        for d in declines {
            assert_eq!(d.terms64(), None, "{d:?}");
        }
    }

    /// The reference for replacing terms in totals: subtract and add in a wide sum, then see
    /// whether the totals fit.
    fn replaced_wide(t: &Totals, old: &Terms, new: &Terms) -> Option<Totals> {
        let mut s = Sums::of(t);
        s.sub(old);
        s.add(new);
        s.totals()
    }

    #[test]
    fn replacing_64_bit_terms_takes_differences_beyond_64_bits() {
        let s = Totals { notional: 5, unrealized: -5, realized: 1 << 100, margin: -(1 << 100) };
        let (lo, hi) =
            ([i64::MIN, i64::MAX, i64::MIN, i64::MAX], [i64::MAX, i64::MIN, i64::MAX, 0]);
        let wide = |t: Terms64| Terms {
            notional: t[0].into(),
            unrealized: t[1].into(),
            realized: t[2].into(),
            margin: t[3].into(),
        };
        for (o, n) in [(lo, hi), (hi, lo)] {
            let want = replaced_wide(&s, &wide(o), &wide(n));
            assert!(want.is_some());
            assert_eq!(s.replaced64(&o, &n), want);
            assert_eq!(s.replaced(&wide(o), &wide(n)), want);
        }
    }

    #[test]
    fn replacing_terms_overflows_exactly_when_a_total_does_not_fit() {
        let t = |x: i128| Totals { notional: x, unrealized: x, realized: x, margin: x };
        // A total one past i128 either way: refused, by both paths.
        assert_eq!(t(i128::MAX).replaced64(&[0; 4], &[1; 4]), None);
        assert_eq!(t(i128::MIN).replaced64(&[1; 4], &[0; 4]), None);
        assert_eq!(t(i128::MAX).replaced(&t(0), &t(1)), None);
        // A difference beyond i128 whose total fits: MAX - MIN is 2^128 - 1, yet the total is
        // MIN + (MAX - MIN) = MAX.
        assert_eq!(t(i128::MIN).replaced(&t(i128::MIN), &t(i128::MAX)), Some(t(i128::MAX)));
        assert_eq!(t(i128::MAX).replaced(&t(i128::MAX), &t(i128::MIN)), Some(t(i128::MIN)));
        // ... and one whose total does not.
        assert_eq!(t(0).replaced(&t(i128::MIN), &t(i128::MAX)), None);
        // At the edge, by one unit in one part only.
        let edge = Totals { margin: i128::MAX - 1, ..t(0) };
        assert_eq!(
            edge.replaced64(&[0; 4], &[0, 0, 0, 1]),
            Some(Totals { margin: i128::MAX, ..t(0) })
        );
        assert_eq!(edge.replaced64(&[0; 4], &[0, 0, 0, 2]), None);
    }

    #[test]
    fn wide_sums_do_not_depend_on_order() {
        let mut a = WideSum::default();
        a.add(i128::MAX);
        a.add(i128::MAX);
        assert_eq!(a.get(), None);
        a.sub(i128::MAX);
        assert_eq!(a.get(), Some(i128::MAX));
        a.add(i128::MIN);
        assert_eq!(a.get(), Some(-1));
        let mut b = WideSum::of(i128::MIN);
        b.sub(1);
        assert_eq!(b.get(), None);
        b.add(2);
        assert_eq!(b.get(), Some(i128::MIN + 1));
        b.sub(i128::MIN);
        assert_eq!(b.get(), Some(1));
    }

    #[test]
    fn the_branch_free_helpers_equal_the_operators() {
        let xs = [0, 1, -1, 7, -7, 1 << 40, -(1 << 40) - 3, i64::MAX, i64::MIN, i64::MIN + 1];
        for a in xs {
            assert_eq!(negate_if(a, false), a);
            assert_eq!(negate_if(a, true), a.wrapping_neg());
            for d in [1, 3, 7, 1 << 40, i64::MAX - 1, i64::MAX] {
                for b in [0, 1, d / 3, d / 2, d - 1, d] {
                    let exact = i128::from(a) * i128::from(b) / i128::from(d);
                    // SAFETY: 0 <= b <= d and d >= 1.
                    assert_eq!(i128::from(unsafe { mul_div64(a, b, d) }), exact, "{a} * {b} / {d}");
                }
            }
        }
    }

    #[test]
    fn fill64_answers_ordinary_fills_and_declines_at_each_bound() {
        let long = b(10, 10_000, 5);
        for (book, d) in [(long, 3), (long, -4), (long, -10), (long, -13), (b(-7, -700, 0), 9)] {
            let fast = book.fill64(d, 1_000, 1).expect("ordinary numbers answer in 64 bits");
            assert_eq!(Some(fast), book.fill_wide(d, 1_000, 1), "{book:?} {d}");
        }
        let declines = [
            (b(1, i128::from(i64::MAX) + 1, 0), 1, 1, 1), // cost beyond i64
            (b(1, 0, i128::from(i64::MIN) - 1), 1, 1, 1), // realized beyond i64
            (b(1, 0, 0), 1, i64::MAX, 2),                 // p * m
            (b(1, 0, 0), i64::MAX, 2, 1),                 // d * p * m
            (b(i64::MAX, 0, 0), 1, 1, 1),                 // qty + d
            (b(1, i128::from(i64::MAX), 0), 1, 1, 1),     // cost + d * p * m
            (b(i64::MIN, 0, 0), 1, 1, 1),                 // |qty| = 2^63
            (b(1, 0, 0), -1, 0, 1),                       // p * m <= 0
            (b(-1, -2, i128::from(i64::MAX)), 1, 1, 1),   // realized + gain
            (b(1, 1 << 61, 0), 1, 1, 1),                  // cost at 2^61
            (b(1, 0, -(1 << 61) - 1), 1, 1, 1),           // realized below -2^61
            (b(1, 0, 0), 1, 1 << 57, 2),                  // |qty| * p * m = 2^58
        ];
        for (book, d, p, m) in declines {
            assert_eq!(book.fill64(d, p, m), None, "{book:?} {d} {p} {m}");
        }
        // Just inside each of those three bounds it answers.
        for (book, d, p, m) in [
            (b(1, (1 << 61) - 1, 0), -1, 1, 1),
            (b(1, 0, -(1 << 61)), 1, 1, 1),
            (b(-1, 0, 0), 1, (1 << 57) - 1, 2),
        ] {
            let fast = book.fill64(d, p, m);
            assert!(fast.is_some(), "{book:?} {d} {p} {m}");
            assert_eq!(fast, book.fill_wide(d, p, m));
        }
        // cost * c beyond 64 bits: the product is exact in 128 (`mul_div64`), so it answers.
        let rich = b(3, 1 << 60, 0);
        for d in [-1, -2, -3, -5] {
            assert_eq!(rich.fill64(d, 1, 1), rich.fill_wide(d, 1, 1), "{d}");
            assert!(rich.fill64(d, 1, 1).is_some());
        }
    }

    /// The exact fill and change of terms that [`MarkedFill::leg`] must equal: `None` if the
    /// exact path overflows.
    fn exact_marked_leg(v: &Valued, d: Qty, p: Price) -> Option<(Book, [i128; 4])> {
        let book = v.book.fill_wide(d, p, v.multiplier)?;
        let (old, new) = (v.terms_scalar()?, Valued { book, ..*v }.terms_scalar()?);
        let delta = [0, 1, 2, 3].map(|i| new.parts()[i] - old.parts()[i]);
        Some((book, delta))
    }

    #[test]
    fn a_marked_fill_answers_ordinary_fills_and_declines_beyond_its_ranges() {
        let v = |book: Book| Valued {
            book,
            mark: 101 * PRICE_SCALE,
            multiplier: 10,
            margin_bps: 1_000,
        };
        let f = MarkedFill::new(99 * PRICE_SCALE, 101 * PRICE_SCALE, 10, 1_000).expect("in range");
        let (long, short) = (b(10, 10 * 1_000 * PRICE_SCALE as i128, 5), b(-7, -7_000, -3));
        let one = b(1, 1_003, 0); // a single unit: closed as a whole (cost * 1 / 1)
        let fills = [
            (long, 3),
            (long, -4),
            (long, -10),
            (long, -13),
            (short, 9),
            (short, -2),
            (b(0, 0, 8), -5),
            (one, -1),
            (one, -3),
        ];
        for (book, d) in fills {
            let fast = f.leg(&book, d).expect("ordinary numbers answer");
            let exact = exact_marked_leg(&v(book), d, 99 * PRICE_SCALE).expect("exact");
            assert_eq!((fast.0, fast.1.map(i128::from)), exact, "{book:?} {d}");
        }
        let edge = 1i128 << 61;
        for book in [b(1, edge, 0), b(1, -edge - 1, 0), b(1, 0, edge), b(1, 0, -edge - 1)] {
            assert_eq!(f.leg(&book, 1), None, "{book:?}: the book is beyond +-2^61");
            let inside = Book { cost: book.cost.clamp(-edge, edge - 1), ..book };
            let inside = Book { realized: inside.realized.clamp(-edge, edge - 1), ..inside };
            assert!(f.leg(&inside, 1).is_some(), "{inside:?}: within +-2^61");
        }
        // s * max(price, mark) * m: 101e8 * 10 = 1.01e11 < 2^37, so fewer than 2^21 units stay
        // below 2^58 (2^22 units would not: the bound is up to twice as strict).
        let flat = MarkedFill::new(99 * PRICE_SCALE, 101 * PRICE_SCALE, 10, 0).expect("in range");
        assert!(flat.leg(&b((1 << 21) - 1, 0, 0), 1 - (1 << 21)).is_some());
        assert_eq!(flat.leg(&b(1 << 21, 0, 0), 1), None, "|qty| * pm");
        assert_eq!(flat.leg(&b(0, 0, 0), -(1 << 21)), None, "|d| * pm");
        // s * mmb: a margin rate of 10x (100,000 bps) makes mmb 1.01e16 < 2^54, so fewer than
        // 2^9 units stay below 2^63.
        let heavy =
            MarkedFill::new(PRICE_SCALE, 101 * PRICE_SCALE, 10, MARGIN_BPS_MAX).expect("ok");
        assert!(heavy.leg(&b((1 << 9) - 1, 0, 0), 1).is_some());
        assert_eq!(heavy.leg(&b(1 << 9, 0, 0), 1), None, "|qty| * mmb");
        assert!(MarkedFill::new(1 << 57, 1, 2, 0).is_none(), "a unit's value is 2^58");
        for (price, mark, m, bps) in [
            (i64::MAX, 1, 2, 0),
            (1, i64::MAX, 2, 0),
            (1, 1 << 40, 1 << 20, 1 << 4),
            (1, 0, 1, 0),
            (0, 1, 1, 0),
            (1, 1, 0, 0),
            (1, 1, 1, -1),
        ] {
            assert!(MarkedFill::new(price, mark, m, bps).is_none(), "{price} {mark} {m} {bps}");
        }
    }

    /// Positions and fills at and around [`MarkedFill`]'s range bounds: books of +-2^61 and
    /// beyond, quantities whose values reach 2^58 and margins' products 2^63.
    fn near_marked_bounds() -> impl Strategy<Value = (Valued, Qty, Price)> {
        let edges = [1i128 << 61, (1 << 61) - 1, 1 << 62, i128::from(i64::MAX)];
        let edge = proptest::sample::select(edges.to_vec())
            .prop_flat_map(|e| prop_oneof![Just(e), Just(-e), Just(-e - 1)]);
        let money = prop_oneof![
            6 => -(1i128 << 40)..(1 << 40),
            2 => edge,
            1 => any::<i64>().prop_map(i128::from)
        ];
        // Magnitudes spread over many powers of two, so that products land on both sides of
        // each bound.
        let units = prop_oneof![
            4 => -1_000i64..1_000,
            2 => -(1i64 << 16)..(1 << 16),
            1 => -(1i64 << 26)..(1 << 26),
            1 => prop_oneof![Just(i64::MIN), Just(i64::MAX)],
        ];
        let price = prop_oneof![4 => 1i64..1 << 20, 2 => 1i64..1 << 34, 1 => 1i64 << 30..1 << 44];
        let m = prop_oneof![3 => 1i64..10, 1 => 1i64..1_000];
        let bps = prop_oneof![3 => 0i64..=1_000, 1 => 0..=MARGIN_BPS_MAX];
        (units.clone(), money.clone(), money, units, price.clone(), price, m, bps)
            .prop_filter("a fill is never 0", |t| t.3 != 0)
            .prop_map(|(qty, cost, realized, d, p, mark, multiplier, margin_bps)| {
                let book = Book { qty, cost, realized };
                (Valued { book, mark, multiplier, margin_bps }, d, p)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn a_marked_fill_equals_the_exact_fill_and_terms_where_it_answers(
            (v, d, p) in prop_oneof![
                3 => near_marked_bounds(),
                1 => (prop_oneof![valued(), small_valued()],
                 prop_oneof![-1_000_000i64..1_000_000, any::<i64>(), Just(i64::MIN), Just(i64::MAX)]
                    .prop_filter("a fill is never 0", |d| *d != 0),
                 prop_oneof![1i64..1 << 40, 1..i64::MAX, Just(i64::MAX)]),
            ],
        ) {
            let f = MarkedFill::new(p, v.mark, v.multiplier, v.margin_bps);
            if let Some((book, delta)) = f.and_then(|f| f.leg(&v.book, d)) {
                let exact = exact_marked_leg(&v, d, p);
                prop_assert_eq!(Some((book, delta.map(i128::from))), exact);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        /// Where it answers, equal to the exact fill; and it answers far inside its ranges.
        #[test]
        fn fill64_equals_the_exact_fill_where_it_answers(
            (v, d, p, m) in prop_oneof![
                near_marked_bounds().prop_map(|(v, d, p)| (v, d, p, v.multiplier)),
                (prop_oneof![valued(), small_valued()],
                 prop_oneof![-1_000i64..1_000, any::<i64>(), Just(i64::MIN), Just(i64::MAX)]
                    .prop_filter("a fill is never 0", |d| *d != 0),
                 prop_oneof![1i64..1 << 40, 1..i64::MAX, Just(i64::MAX)],
                 prop_oneof![1i64..1_000, 1..i64::MAX]),
            ],
        ) {
            let fast = v.book.fill64(d, p, m);
            if let Some(fast) = fast {
                prop_assert_eq!(Some(fast), v.book.fill_wide(d, p, m));
            }
            let s = v.book.qty.unsigned_abs().max(d.unsigned_abs());
            let ordinary = p.checked_mul(m).is_some_and(|pm| u128::from(s) * (pm as u128) < 1 << 50)
                && [v.book.cost, v.book.realized].iter().all(|x| x.unsigned_abs() < 1 << 50);
            prop_assert!(fast.is_some() || !ordinary, "an ordinary fill answers");
        }
    }

    proptest! {

        #[test]
        fn wide_sum_is_exact(xs in proptest::collection::vec(any::<i128>(), 0..20)) {
            // Reference: the same sum in 4 x 64-bit limbs... simpler: in pairs of i128 halves.
            let mut w = WideSum::default();
            let (mut hi, mut lo) = (0i128, 0i128);
            for &x in &xs {
                w.add(x);
                hi += x >> 64;
                lo += x & 0xffff_ffff_ffff_ffff;
            }
            hi += lo >> 64;
            lo &= 0xffff_ffff_ffff_ffff;
            let want = if (i128::from(i64::MIN)..=i128::from(i64::MAX)).contains(&hi) {
                (hi << 64).checked_add(lo)
            } else {
                None
            };
            prop_assert_eq!(w.get(), want);
        }

        #[test]
        fn replacing_terms_equals_subtracting_then_adding(
            b in prop_oneof![any::<[i128; 4]>(), (-1000i128..1000).prop_map(|d| [d; 4])],
            o in any::<[i128; 4]>(),
            n in prop_oneof![any::<[i128; 4]>(), (-1000i128..1000).prop_map(|d| [d; 4])],
        ) {
            let s = Totals { notional: b[0], unrealized: b[1], realized: b[2], margin: b[3] };
            let old = Terms { notional: o[0], unrealized: o[1], realized: o[2], margin: o[3] };
            // Small differences from old (the common path) or unrelated values (overflow).
            let new = Terms {
                notional: o[0].wrapping_add(n[0]),
                unrealized: o[1].wrapping_add(n[1]),
                realized: o[2].wrapping_add(n[2]),
                margin: o[3].wrapping_add(n[3]),
            };
            prop_assert_eq!(s.replaced(&old, &new), replaced_wide(&s, &old, &new));
        }

        #[test]
        fn terms64_equals_terms_where_it_answers(
            v in prop_oneof![valued(), small_valued()],
            b in prop_oneof![any::<[i128; 4]>(), (-1i128 << 70..1 << 70).prop_map(|d| [d; 4])],
            w in small_valued(),
        ) {
            let t64 = v.terms64();
            if let Some(t) = t64 {
                let exact = v.terms().expect("fits in 64 bits, so in i128");
                prop_assert_eq!(t.map(i128::from), exact.parts());
            }
            // Replacing through the 64-bit path equals the exact replace.
            let s = Totals { notional: b[0], unrealized: b[1], realized: b[2], margin: b[3] };
            if let (Some(o), Some(n)) = (t64, w.terms64()) {
                let (old, new) = (v.terms().unwrap(), w.terms().unwrap());
                let exact = replaced_wide(&s, &old, &new);
                prop_assert_eq!(s.replaced64(&o, &n), exact);
                prop_assert_eq!(s.replaced(&old, &new), exact);
            }
        }
        #[test]
        fn batch_equals_scalar(v in proptest::collection::vec(valued(), 0..40)) {
            prop_assert_eq!(value_batch(&v), value_scalar(&v));
        }
    }
}
