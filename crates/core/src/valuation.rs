//! Batch valuation over positions laid out by column (design notes §6.2): an AVX2 kernel that
//! values four positions per step, exactly, for the common range of magnitudes, and falls back
//! to the scalar terms for any group of four with a value outside that range. Results are
//! identical to [`value_scalar`](crate::value_scalar) over the same positions (property-tested).
//!
//! Why a restricted range: SPEC.md's values are 64x64 -> 128-bit products and AVX2 multiplies
//! only 32x32 -> 64. Inside the range below every product and the margin division are exact in
//! 64-bit lanes (the division through f64, exact for the magnitudes involved); outside it the
//! four positions go through [`Valued::terms`], so no input is ever valued approximately.
//!
//! The fast range, per position (every bound is checked per lane, branch-free):
//! - `qty` and `multiplier` fit in i32 and `|qty * multiplier| < 2^32`;
//! - the notional `|qty * multiplier| * mark < 2^63` (9.2e10 money units), mark as unsigned;
//! - `0 <= margin_bps <= 10_000` (margin at most the notional);
//! - `cost` and `realized` fit in i64 and so does the unrealized `+-notional - cost`.
//!
//! Lane sums are exact: each term is split into 32-bit halves summed in 64-bit lanes.

use crate::position::{Book, Sums, Totals, Valued};
use crate::units::*;

/// Positions by column: what [`value_columns`] reads. Money splits into low and high 64-bit
/// words so a lane loads the low word and checks the high one.
#[derive(Clone, Debug, Default)]
pub struct Columns {
    qty: Vec<i64>,
    multiplier: Vec<i64>,
    mark: Vec<i64>,
    margin_bps: Vec<i64>,
    cost_lo: Vec<i64>,
    cost_hi: Vec<i64>,
    realized_lo: Vec<i64>,
    realized_hi: Vec<i64>,
}

impl Columns {
    pub fn with_capacity(n: usize) -> Columns {
        let v = || Vec::with_capacity(n);
        Columns {
            qty: v(),
            multiplier: v(),
            mark: v(),
            margin_bps: v(),
            cost_lo: v(),
            cost_hi: v(),
            realized_lo: v(),
            realized_hi: v(),
        }
    }

    pub fn len(&self) -> usize {
        self.qty.len()
    }

    pub fn is_empty(&self) -> bool {
        self.qty.is_empty()
    }

    pub fn clear(&mut self) {
        for c in self.columns_mut() {
            c.clear();
        }
    }

    fn columns_mut(&mut self) -> [&mut Vec<i64>; 8] {
        [
            &mut self.qty,
            &mut self.multiplier,
            &mut self.mark,
            &mut self.margin_bps,
            &mut self.cost_lo,
            &mut self.cost_hi,
            &mut self.realized_lo,
            &mut self.realized_hi,
        ]
    }

    pub fn push(&mut self, v: &Valued) {
        self.qty.push(v.book.qty);
        self.multiplier.push(v.multiplier);
        self.mark.push(v.mark);
        self.margin_bps.push(v.margin_bps);
        self.cost_lo.push(v.book.cost as i64);
        self.cost_hi.push((v.book.cost >> 64) as i64);
        self.realized_lo.push(v.book.realized as i64);
        self.realized_hi.push((v.book.realized >> 64) as i64);
    }

    /// Position `i` as [`Valued`] (panics if out of bounds).
    pub fn get(&self, i: usize) -> Valued {
        let money = |lo: i64, hi: i64| (i128::from(hi) << 64) | i128::from(lo as u64);
        Valued {
            book: Book {
                qty: self.qty[i],
                cost: money(self.cost_lo[i], self.cost_hi[i]),
                realized: money(self.realized_lo[i], self.realized_hi[i]),
            },
            mark: self.mark[i],
            multiplier: self.multiplier[i],
            margin_bps: self.margin_bps[i],
        }
    }
}

impl<'a> FromIterator<&'a Valued> for Columns {
    fn from_iter<I: IntoIterator<Item = &'a Valued>>(iter: I) -> Columns {
        let mut c = Columns::default();
        iter.into_iter().for_each(|v| c.push(v));
        c
    }
}

/// Totals over all positions: the AVX2 kernel when the CPU has it, else [`value_columns_scalar`].
/// `None` if a position's term or a sum does not fit in i128.
pub fn value_columns(c: &Columns) -> Option<Totals> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), which is all the kernel needs.
        return unsafe { avx2::value(c) }.0;
    }
    value_columns_scalar(c)
}

/// [`value_columns`] and how many positions the vector lanes valued (tests check that the
/// fast path is really taken).
#[cfg(all(test, target_arch = "x86_64"))]
fn value_columns_counted(c: &Columns) -> (Option<Totals>, usize) {
    assert!(std::arch::is_x86_feature_detected!("avx2"), "the test machine has AVX2");
    // SAFETY: AVX2 is present (asserted above).
    unsafe { avx2::value(c) }
}

/// The scalar twin over the same columns.
pub fn value_columns_scalar(c: &Columns) -> Option<Totals> {
    let mut s = Sums::default();
    for i in 0..c.len() {
        s.add(&c.get(i).terms_scalar()?);
    }
    s.totals()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// 2^52 as f64 and as its bit pattern: `bits(x + 2^52) ^ bits(2^52) == x` for integers
    /// `0 <= x < 2^52`, in both directions.
    const MAGIC: f64 = 4_503_599_627_370_496.0;

    /// Exact lane sums of 64-bit terms: the low 32 bits, the (logical) high 32 bits and, for
    /// signed terms, minus the number of negative terms. Each lane grows by < 2^32 per step, so
    /// no lane can overflow before 2^31 steps (the kernel flushes long before).
    #[derive(Clone, Copy)]
    struct Acc {
        lo: __m256i,
        hi: __m256i,
        neg: __m256i,
    }

    impl Acc {
        #[target_feature(enable = "avx2")]
        fn new() -> Acc {
            Acc {
                lo: _mm256_setzero_si256(),
                hi: _mm256_setzero_si256(),
                neg: _mm256_setzero_si256(),
            }
        }

        /// Add four terms; `signed`: they are i64 (else u64 below 2^63).
        #[target_feature(enable = "avx2")]
        fn add(&mut self, t: __m256i, signed: bool) {
            self.lo =
                _mm256_add_epi64(self.lo, _mm256_and_si256(t, _mm256_set1_epi64x(0xffff_ffff)));
            self.hi = _mm256_add_epi64(self.hi, _mm256_srli_epi64::<32>(t));
            if signed {
                // -1 in every negative lane: its logical high half counted 2^64 too much.
                self.neg =
                    _mm256_add_epi64(self.neg, _mm256_cmpgt_epi64(_mm256_setzero_si256(), t));
            }
        }

        /// The exact sum of every term added, and the accumulator reset.
        #[target_feature(enable = "avx2")]
        fn take(&mut self) -> i128 {
            let mut lanes = [[0i64; 4]; 3];
            for (out, v) in lanes.iter_mut().zip([self.lo, self.hi, self.neg]) {
                // SAFETY: `out` is 32 writable bytes; storeu has no alignment requirement.
                unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
            }
            *self = Acc::new();
            let sum = |l: &[i64; 4]| l.iter().map(|&x| i128::from(x)).sum::<i128>();
            sum(&lanes[0]) + (sum(&lanes[1]) << 32) + (sum(&lanes[2]) << 64)
        }
    }

    /// Vector steps between flushes (far below the 2^31 an [`Acc`] lane could take).
    const FLUSH_EVERY: usize = 1 << 20;

    /// The totals and how many positions the vector lanes valued.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn value(c: &Columns) -> (Option<Totals>, usize) {
        let n = c.len();
        let mut sums = Sums::default();
        // Notional, unrealized, realized, margin.
        let mut acc = [Acc::new(); 4];
        let (mut steps, mut fast) = (0, 0);
        let mut i = 0;
        while i + 4 <= n {
            // SAFETY: i + 4 <= n = the length of every column.
            let (ok, [notional, unrealized, realized, margin]) = unsafe { four(c, i) };
            if ok {
                acc[0].add(notional, false);
                acc[1].add(unrealized, true);
                acc[2].add(realized, true);
                acc[3].add(margin, false);
                steps += 1;
                fast += 4;
                if steps == FLUSH_EVERY {
                    flush(&mut acc, &mut sums);
                    steps = 0;
                }
            } else {
                for j in i..i + 4 {
                    let Some(t) = c.get(j).terms() else { return (None, fast) };
                    sums.add(&t);
                }
            }
            i += 4;
        }
        flush(&mut acc, &mut sums);
        for j in i..n {
            let Some(t) = c.get(j).terms() else { return (None, fast) };
            sums.add(&t);
        }
        (sums.totals(), fast)
    }

    #[target_feature(enable = "avx2")]
    fn flush(acc: &mut [Acc; 4], sums: &mut Sums) {
        let [notional, unrealized, realized, margin] = acc.each_mut().map(|a| a.take());
        sums.add(&Totals { notional, unrealized, realized, margin });
    }

    /// Values positions `i..i + 4`: (all four in the fast range, their terms by lane).
    ///
    /// # Safety
    /// `i + 4 <= c.len()`, and the CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn four(c: &Columns, i: usize) -> (bool, [__m256i; 4]) {
        let ld = |v: &Vec<i64>| {
            // SAFETY: the caller guarantees i + 4 <= len of every column, so each load reads
            // 32 bytes inside its Vec; loadu has no alignment requirement.
            unsafe { _mm256_loadu_si256(v.as_ptr().add(i).cast()) }
        };
        let (q, m, mark, bps) = (ld(&c.qty), ld(&c.multiplier), ld(&c.mark), ld(&c.margin_bps));
        let (clo, chi, rlo, rhi) =
            (ld(&c.cost_lo), ld(&c.cost_hi), ld(&c.realized_lo), ld(&c.realized_hi));
        let zero = _mm256_setzero_si256();
        let one = _mm256_set1_epi64x(1);
        let is_zero = |x: __m256i| _mm256_cmpeq_epi64(x, zero);
        let negative = |x: __m256i| _mm256_cmpgt_epi64(zero, x);
        // mul_epi32 multiplies the sign-extended low halves: x * 1 == x iff x fits in i32.
        let fits32 = |x: __m256i| _mm256_cmpeq_epi64(_mm256_mul_epi32(x, one), x);
        let mut ok = _mm256_and_si256(fits32(q), fits32(m));
        let qm = _mm256_mul_epi32(q, m); // exact: |q * m| < 2^62
        let neg = negative(qm);
        let aqm = _mm256_sub_epi64(_mm256_xor_si256(qm, neg), neg);
        ok = _mm256_and_si256(ok, is_zero(_mm256_srli_epi64::<32>(aqm)));
        // notional = aqm * mark with aqm < 2^32 and mark = mh * 2^32 + ml. A negative mark
        // (mark >= 2^63 as unsigned) fails the notional bound below unless aqm = 0, where the
        // notional is 0 at any mark, so it needs no check of its own.
        let p0 = _mm256_mul_epu32(aqm, mark);
        let p1 = _mm256_mul_epu32(aqm, _mm256_srli_epi64::<32>(mark));
        let high = _mm256_add_epi64(_mm256_srli_epi64::<32>(p0), p1); // notional >> 32, < 2^63
        ok = _mm256_and_si256(ok, is_zero(_mm256_srli_epi64::<31>(high)));
        let low = _mm256_and_si256(p0, _mm256_set1_epi64x(0xffff_ffff));
        let notional = _mm256_or_si256(_mm256_slli_epi64::<32>(high), low); // < 2^63
        let bps_ok = _mm256_cmpgt_epi64(_mm256_set1_epi64x(BPS_SCALE + 1), bps);
        ok = _mm256_and_si256(ok, _mm256_andnot_si256(negative(bps), bps_ok));
        // Money fits in i64 when its high word is the sign of its low word.
        let fits64 = |lo: __m256i, hi: __m256i| _mm256_cmpeq_epi64(hi, negative(lo));
        ok = _mm256_and_si256(ok, _mm256_and_si256(fits64(clo, chi), fits64(rlo, rhi)));
        // unrealized = +-notional - cost, unless the i64 subtraction overflows.
        let signed = _mm256_sub_epi64(_mm256_xor_si256(notional, neg), neg);
        let unrealized = _mm256_sub_epi64(signed, clo);
        let overflow =
            _mm256_and_si256(_mm256_xor_si256(signed, clo), _mm256_xor_si256(signed, unrealized));
        ok = _mm256_andnot_si256(negative(overflow), ok);
        let margin = margin(high, low, bps);
        let all = _mm256_movemask_pd(_mm256_castsi256_pd(ok)) == 0b1111;
        (all, [notional, unrealized, rlo, margin])
    }

    /// floor(notional * bps / 10_000) for notional = high * 2^32 + low < 2^63 and
    /// 0 <= bps <= 10_000 (so the result <= notional): one step of long division in base 2^32,
    /// each quotient through f64. a = high * bps < 2^45 and y = ra * 2^32 + b < 2^50 are exact
    /// in f64, and their quotients (< 2^32 and < 2^37) round with an error below 2^-16, less
    /// than the distance 1/10_000 from a non-integer quotient to the next integer, so floor()
    /// of the rounded quotient is the exact truncated one.
    #[target_feature(enable = "avx2")]
    fn margin(high: __m256i, low: __m256i, bps: __m256i) -> __m256i {
        let a = _mm256_mul_epu32(high, bps);
        let b = _mm256_mul_epu32(low, bps); // < 2^46
        let d = _mm256_set1_pd(BPS_SCALE as f64);
        let qa = to_int(_mm256_floor_pd(_mm256_div_pd(to_f64(a), d)));
        let ra = _mm256_sub_epi64(a, _mm256_mul_epu32(qa, _mm256_set1_epi64x(BPS_SCALE)));
        let y = _mm256_add_epi64(_mm256_slli_epi64::<32>(ra), b);
        let qy = to_int(_mm256_floor_pd(_mm256_div_pd(to_f64(y), d)));
        _mm256_add_epi64(_mm256_slli_epi64::<32>(qa), qy)
    }

    /// Integers 0 <= x < 2^52 to f64, exactly.
    #[target_feature(enable = "avx2")]
    fn to_f64(x: __m256i) -> __m256d {
        let magic = _mm256_set1_pd(MAGIC);
        _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(x, _mm256_castpd_si256(magic))), magic)
    }

    /// Integral f64 values 0 <= x < 2^52 to integers, exactly.
    #[target_feature(enable = "avx2")]
    fn to_int(x: __m256d) -> __m256i {
        let magic = _mm256_set1_pd(MAGIC);
        _mm256_xor_si256(_mm256_castpd_si256(_mm256_add_pd(x, magic)), _mm256_castpd_si256(magic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::value_scalar;
    use proptest::prelude::*;

    const P: Price = PRICE_SCALE;

    fn v(qty: Qty, cost: Money, realized: Money, mark: Price, multiplier: i64, bps: Bps) -> Valued {
        Valued { book: Book { qty, cost, realized }, mark, multiplier, margin_bps: bps }
    }

    #[test]
    fn columns_round_trip_every_field() {
        let x = v(-7, -(1 << 100) - 3, i128::MIN, i64::MAX, 50, MARGIN_BPS_MAX);
        let c: Columns = [x, x].iter().collect();
        assert_eq!((c.len(), c.get(1)), (2, x));
    }

    #[test]
    fn edges_of_the_fast_range_agree_with_the_scalar_twin() {
        let (min, max) = (i128::from(i64::MIN), i128::from(i64::MAX));
        // Eight positions just inside a bound of the fast range, then eight just outside one.
        let edge = [
            v(1, 0, 0, i64::MAX, 1, 10_000), // notional 2^63 - 1, margin 100 %
            v(i64::from(i32::MAX), 0, 0, 1, 1, 1),
            v(65_536, 0, 0, 3, 65_535, 9_999), // |q*m| = 2^32 - 2^16
            v(-5, min + 1, min, 100 * P, 10, 1_000),
            v(3, 3, 0, 1, 1, 3_333), // margin truncates to 0
            v(-3, 7, 1, 0, 1, 1),    // no mark yet
            v(1 << 20, 1 << 40, -(1 << 40), (1 << 31) - 1, 1 << 11, 10_000),
            v(-(1 << 31), min, max, 1, 1, 10_000), // unrealized 2^63 - 2^31
            v(2, 0, 0, 1 << 62, 1, 10_000),        // notional 2^63
            v(1 << 31, 0, 0, 1, 1, 1),             // qty beyond i32
            v(65_536, 0, 0, 3, 65_536, 9_999),     // |q*m| = 2^32
            v(-5, 1 << 63, 0, 100 * P, 10, 1_000), // cost beyond i64
            v(1, 0, 0, 1, 1, 10_001),              // margin above 100 %
            v(-1, max, 0, 2, 1, 1),                // -2 - (2^63 - 1) overflows i64
            v(0, 0, -(1 << 90), 100 * P, 10, 1_000), // flat, huge realized
            v(1, 0, 0, 1, 1 << 32, 1),             // multiplier beyond i32
        ];
        for i in 0..edge.len() {
            // Every rotation, so each edge is tried in every lane and next to the others.
            let rotated: Vec<Valued> = edge[i..].iter().chain(&edge[..i]).copied().collect();
            let c: Columns = rotated.iter().collect();
            let (totals, fast) = value_columns_counted(&c);
            assert_eq!(totals, value_scalar(&rotated), "rotation {i}");
            assert_eq!(value_columns_scalar(&c), value_scalar(&rotated));
            // Only groups of four in-range positions go through the lanes.
            let in_range = |k: usize| (k + i) % edge.len() < 8;
            let all_in = (0..4).filter(|g| (4 * g..4 * g + 4).all(in_range)).count();
            assert_eq!(fast, 4 * all_in, "rotation {i}");
        }
        // Each bound on its own: one outside edge among three inside ones sends the group to
        // the scalar path, and the result is still exact.
        for (k, &out) in edge[8..].iter().enumerate() {
            let group = [edge[k % 8], out, edge[(k + 3) % 8], edge[(k + 5) % 8]];
            let c: Columns = group.iter().collect();
            assert_eq!(value_columns_counted(&c), (value_scalar(&group), 0), "edge {}", 8 + k);
        }
    }

    #[test]
    fn lane_sums_are_exact_beyond_64_bits() {
        // 4,100 terms at the range limits: their sums need 75 bits.
        let (min, max) = (i128::from(i64::MIN), i128::from(i64::MAX));
        let x = v(-1, 0, min, i64::MAX, 1, 10_000);
        let y = v(1, 0, max, i64::MAX, 1, 10_000);
        let all: Vec<Valued> = (0..4_100).map(|k| if k % 3 == 0 { y } else { x }).collect();
        let c: Columns = all.iter().collect();
        let want = value_scalar(&all);
        assert!(want.is_some_and(|t| t.notional > 1 << 74));
        assert_eq!(value_columns_counted(&c), (want, 4_100));
    }

    #[test]
    fn a_term_that_does_not_fit_is_none() {
        let x = v(i64::MAX, 0, 0, i64::MAX, i64::MAX, 1);
        let c: Columns = [x; 5].iter().collect();
        assert_eq!(value_columns(&c), None);
        assert_eq!(value_scalar(&[x; 5]), None);
    }

    fn position() -> impl Strategy<Value = Valued> {
        // Mostly inside the fast range (realistic books), some at and beyond its edges.
        let qty = prop_oneof![4 => -10_000i64..10_000, 1 => any::<i64>(), 1 => Just(1 << 31)];
        let mult = prop_oneof![4 => 1i64..1_000, 1 => 1..i64::MAX];
        let mark =
            prop_oneof![4 => 0i64..1_000 * P, 1 => 0..i64::MAX, 1 => (1i64 << 49)..(1i64 << 51)];
        let money = prop_oneof![
            4 => -(1i128 << 50)..(1 << 50),
            1 => -(1i128 << 53)..(1 << 53),
            1 => any::<i128>(),
        ];
        (qty, mult, mark, money.clone(), money, 0..=MARGIN_BPS_MAX)
            .prop_map(|(q, m, mark, cost, realized, bps)| v(q, cost, realized, mark, m, bps))
    }

    /// Quantities, prices and money of everyday books: always inside the fast range.
    fn realistic() -> impl Strategy<Value = Valued> {
        let money = -(1i128 << 45)..(1 << 45);
        (-100_000i64..100_000, 1i64..100, 0..1_000 * P, money.clone(), money, 0..=BPS_SCALE)
            .prop_map(|(q, m, mark, cost, realized, bps)| v(q, cost, realized, mark, m, bps))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn simd_equals_scalar(ps in proptest::collection::vec(position(), 0..64)) {
            let c: Columns = ps.iter().collect();
            prop_assert_eq!(value_columns(&c), value_scalar(&ps));
            prop_assert_eq!(value_columns_scalar(&c), value_scalar(&ps));
        }

        #[test]
        fn realistic_books_go_through_the_lanes(ps in proptest::collection::vec(realistic(), 4..64)) {
            let c: Columns = ps.iter().collect();
            let (totals, fast) = value_columns_counted(&c);
            prop_assert_eq!(totals, value_scalar(&ps));
            prop_assert_eq!(fast, ps.len() / 4 * 4);
        }
    }
}
