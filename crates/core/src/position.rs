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

/// `q * p * m` in money, exact or `None`.
#[inline]
pub fn value(q: i128, p: Price, m: i64) -> Option<Money> {
    q.checked_mul(i128::from(p))?.checked_mul(i128::from(m))
}

impl Book {
    /// Apply a signed trade quantity `d` (buy > 0, sell < 0) at price `p`, multiplier `m`
    /// (SPEC.md "Positions (average cost)", rules 1 and 2).
    pub fn fill(self, d: Qty, p: Price, m: i64) -> Option<Book> {
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
        let closed = cost.checked_mul(c)? / open;
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

/// One position with what valuing it needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Valued {
    pub book: Book,
    pub mark: Price,
    pub multiplier: i64,
    pub margin_bps: Bps,
}

impl Totals {
    /// The scalar twin: SPEC.md's formulas written literally with checked arithmetic.
    pub fn add_scalar(mut self, v: &Valued) -> Option<Totals> {
        let q = i128::from(v.book.qty);
        let notional = value(q.abs(), v.mark, v.multiplier)?;
        let margin = notional.checked_mul(i128::from(v.margin_bps))? / i128::from(BPS_SCALE);
        self.notional = self.notional.checked_add(notional)?;
        self.unrealized = self.unrealized.checked_add(v.book.unrealized(v.mark, v.multiplier)?)?;
        self.realized = self.realized.checked_add(v.book.realized)?;
        self.margin = self.margin.checked_add(margin)?;
        Some(self)
    }

    /// The fast path: one widening 64x64 multiply per value and 64-bit division when the
    /// numbers allow it, overflow tracked as flags instead of branches. Falls back to the scalar
    /// twin for the rare position whose magnitudes could overflow, so results are identical.
    #[inline]
    pub fn add(self, v: &Valued) -> Option<Totals> {
        match self.add_fast(v) {
            (t, false) => Some(t),
            (_, true) => self.add_scalar(v),
        }
    }

    #[inline]
    fn add_fast(self, v: &Valued) -> (Totals, bool) {
        let qm = i128::from(v.book.qty) * i128::from(v.multiplier); // |q*m| <= 2^126: exact
        let qm_abs = qm.unsigned_abs();
        let mut slow = (qm_abs >> 64) != 0 || v.mark < 0 || v.margin_bps < 0;
        // < 2^64 * 2^63 = 2^127: fits i128 when !slow.
        let notional_u = u128::from(qm_abs as u64) * u128::from(v.mark as u64);
        let notional = notional_u as i128;
        let signed = if qm < 0 { notional.wrapping_neg() } else { notional };
        let (unrealized, o1) = signed.overflowing_sub(v.book.cost);
        let (nb, o2) = notional_u.overflowing_mul(u128::from(v.margin_bps as u64));
        slow |= o1 | o2 | ((nb >> 127) != 0);
        let margin = if (nb >> 64) == 0 {
            ((nb as u64) / BPS_SCALE as u64) as i128
        } else {
            (nb / BPS_SCALE as u128) as i128
        };
        let (n, o3) = self.notional.overflowing_add(notional);
        let (u, o4) = self.unrealized.overflowing_add(unrealized);
        let (r, o5) = self.realized.overflowing_add(v.book.realized);
        let (g, o6) = self.margin.overflowing_add(margin);
        slow |= o3 | o4 | o5 | o6;
        (Totals { notional: n, unrealized: u, realized: r, margin: g }, slow)
    }
}

/// Value many positions, fast path (see [`Totals::add`]).
pub fn value_batch(positions: &[Valued]) -> Option<Totals> {
    positions.iter().try_fold(Totals::default(), |t, v| t.add(v))
}

/// Value many positions with the scalar twin.
pub fn value_scalar(positions: &[Valued]) -> Option<Totals> {
    positions.iter().try_fold(Totals::default(), |t, v| t.add_scalar(v))
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
        let big = prop_oneof![
            any::<i64>(),
            -1_000_000i64..1_000_000,
            Just(i64::MAX),
            Just(i64::MIN + 1)
        ];
        let money = prop_oneof![any::<i128>(), -1_000_000_000_000i128..1_000_000_000_000];
        (big.clone(), money.clone(), money, 1..i64::MAX, 1..i64::MAX, 0..=MARGIN_BPS_MAX)
            .prop_map(|(qty, cost, realized, mark, multiplier, margin_bps)| Valued {
                book: Book { qty, cost, realized },
                mark,
                multiplier: if multiplier % 3 == 0 { multiplier } else { multiplier % 100 + 1 },
                margin_bps,
            })
    }

    proptest! {
        #[test]
        fn batch_equals_scalar(v in proptest::collection::vec(valued(), 0..40)) {
            prop_assert_eq!(value_batch(&v), value_scalar(&v));
        }
    }
}
