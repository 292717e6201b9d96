//! Units of SPEC.md: fixed-point prices, whole quantities, exact money, basis points, dates.
//!
//! All arithmetic is integer. Division truncates toward zero (Rust's `/`). Overflow of any of
//! these types is an input error (`Reject::Overflow`), never a wrap.

/// Fixed point with 8 decimals: 101.25 is `10_125_000_000`.
pub type Price = i64;
/// Whole units. A trade quantity is > 0; a position is signed (long > 0).
pub type Qty = i64;
/// Units of 10^-8 of the currency. The value of `q` units at price `p`, multiplier `m` is
/// `q * p * m`, exact.
pub type Money = i128;
/// Basis points: 1/10_000.
pub type Bps = i64;
/// A calendar date as `YYYYMMDD`.
pub type Date = u32;
/// Nanoseconds since the Unix epoch, stamped by the sequencer. Never read inside the core.
pub type Nanos = u64;
/// Log sequence number stamped by the sequencer.
pub type Seq = u64;

/// Account ids are chosen by the clearing house; 0 is reserved (invalid).
pub type AccountId = u64;
/// Instrument ids are chosen by the clearing house; 0 is reserved (invalid).
pub type InstrumentId = u32;
/// Trade ids are the venue's execution ids; 0 is reserved (invalid).
pub type TradeId = u64;

/// `PRICE_SCALE` units of price are one currency unit per unit of quantity.
pub const PRICE_SCALE: i64 = 100_000_000;
/// One whole in basis points.
pub const BPS_SCALE: i64 = 10_000;
/// The largest margin rate accepted: 1000% (margin above notional is allowed for stress add-ons).
pub const MARGIN_BPS_MAX: Bps = 10 * BPS_SCALE;
/// The longest settlement cycle accepted, in business days.
pub const SETTLE_DAYS_MAX: u8 = 30;

/// Is `d` a real Gregorian calendar date in `YYYYMMDD` form (years 1..=9999)?
pub fn is_valid_date(d: Date) -> bool {
    let (y, m, day) = (d / 10_000, (d / 100) % 100, d % 100);
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || day == 0 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in_month = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    day <= days_in_month
}

/// Parse a decimal price with at most 8 fractional digits ("101.25" -> 10_125_000_000).
/// Returns `None` for anything else (empty, sign only, too many decimals, overflow).
pub fn parse_price(s: &str) -> Option<Price> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty() && frac.is_empty() || frac.len() > 8 {
        return None;
    }
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !digits(frac) {
        return None;
    }
    let mut v: i64 = 0;
    for b in int.bytes().chain(frac.bytes()).chain(std::iter::repeat_n(b'0', 8 - frac.len())) {
        v = v.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert!(is_valid_date(20240229));
        assert!(!is_valid_date(20230229));
        assert!(!is_valid_date(21000229));
        assert!(is_valid_date(20000229));
        assert!(!is_valid_date(20241301));
        assert!(!is_valid_date(20240431));
        assert!(!is_valid_date(20240100));
        assert!(!is_valid_date(0));
        assert!(is_valid_date(99991231));
    }

    #[test]
    fn prices() {
        assert_eq!(parse_price("101.25"), Some(10_125_000_000));
        assert_eq!(parse_price("0.00000001"), Some(1));
        assert_eq!(parse_price("-3"), Some(-300_000_000));
        assert_eq!(parse_price(".5"), Some(50_000_000));
        assert_eq!(parse_price("1.123456789"), None);
        assert_eq!(parse_price(""), None);
        assert_eq!(parse_price("."), None);
        assert_eq!(parse_price("1e5"), None);
        assert_eq!(parse_price("92233720368.54775807"), Some(i64::MAX));
        assert_eq!(parse_price("92233720368.54775808"), None);
    }
}
