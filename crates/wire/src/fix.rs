//! A FIX 4.4 tag=value parser for the two messages a member sends before it speaks SBE:
//! TradeCaptureReport (35=AE) and NewOrderSingle (35=D). Both map to the same core commands the
//! SBE path produces. There is no session layer yet (logon, sequence numbers, resend): header
//! fields such as 49/56/34/52 are accepted and ignored.
//!
//! # Checks
//!
//! The message must start `8=FIX.4.4<SOH>9=<BodyLength><SOH>`; BodyLength (9) must equal the bytes
//! from after its SOH to the SOH before `10=`, inclusive; the message must end with
//! `10=<3 digits><SOH>`, the sum of every byte before `10=` modulo 256. The first body field is
//! MsgType (35). Every field is `<tag digits>=<non-empty value><SOH>`. A mapped tag seen twice
//! (outside its repeating group) is an error. Nothing allocates.
//!
//! # Tag mapping
//!
//! | tag | name | AE (-> `Command::ClearTrade`) | D (-> `Command::CheckOrder`) |
//! |---|---|---|---|
//! | 571 | TradeReportID | request id (u64) | — |
//! | 11 | ClOrdID | — | request id (u64) |
//! | 17 | ExecID | trade id (u64) | — |
//! | 48 | SecurityID | instrument id (u32); 22 (SecurityIDSource) is ignored | same |
//! | 55 | Symbol | instrument id (u32) when 48 is absent | same |
//! | 32 / 38 | LastQty / OrderQty | qty (whole units, digits only) | qty |
//! | 31 / 44 | LastPx / Price | price (decimal, at most 8 decimals) | price (limit) |
//! | 75 | TradeDate | trade date (YYYYMMDD) | — |
//! | 552 | NoSides | must be 2: one side 54=1 (buy), one 54=2 (sell) | — |
//! | 54 | Side | opens a side entry: 1 buy, 2 sell | 1 buy, 2 sell (others rejected) |
//! | 1 | Account | the side's account id (u64) | the account id |
//! | 448 / 452 | PartyID / PartyRole | in a side without tag 1: the 448 whose 452 is 24 (customer account) | — |
//! | 40 | OrdType | — | optional; if present must be 2 (limit) |
//!
//! Ids must be decimal digits that fit their type (novate ids are numbers).

use novate_core::{parse_price, Command, Side, Trade};

/// FIX field delimiter.
pub const SOH: u8 = 0x01;
/// The only BeginString accepted.
pub const BEGIN_STRING: &[u8] = b"8=FIX.4.4\x01";
/// Longest message accepted: far above a trade report (~200 bytes), low enough that a corrupt
/// BodyLength cannot make a reader wait for megabytes.
pub const FIX_MSG_LEN_MAX: usize = 4096;

/// Why a FIX message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FixError {
    /// The message ends early (no complete `10=NNN<SOH>` trailer).
    Truncated,
    /// Longer than `FIX_MSG_LEN_MAX`.
    TooLong(usize),
    /// Does not start with `8=FIX.4.4<SOH>`.
    BadBeginString,
    /// The second field is not `9=<digits>`.
    BadBodyLength,
    /// BodyLength disagrees with where the trailer is (`actual` is None if no trailer was found).
    BodyLengthMismatch { declared: usize, actual: Option<usize> },
    /// The trailer's value is not 3 digits, or bytes follow it.
    MalformedChecksum,
    /// The checksum does not match the bytes.
    BadChecksum { declared: u16, computed: u8 },
    /// A field at this byte offset is not `<digits>=<value><SOH>`.
    MalformedField { offset: usize },
    /// The first body field is not MsgType (35).
    MsgTypeNotFirst,
    /// MsgType other than AE or D.
    UnsupportedMsgType,
    /// A required tag is missing.
    MissingTag(u32),
    /// A tag's value is not what its type allows.
    MalformedValue { tag: u32 },
    /// A value that parses but is not supported (e.g. Side 5, OrdType 1, NoSides 3).
    UnsupportedValue { tag: u32 },
    /// A mapped tag appears twice.
    DuplicateTag(u32),
}

impl std::fmt::Display for FixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FixError::Truncated => write!(f, "truncated message"),
            FixError::TooLong(n) => write!(f, "{n} bytes, max {FIX_MSG_LEN_MAX}"),
            FixError::BadBeginString => write!(f, "BeginString (8) is not FIX.4.4"),
            FixError::BadBodyLength => write!(f, "BodyLength (9) missing or not a number"),
            FixError::BodyLengthMismatch { declared, actual } => {
                write!(f, "BodyLength (9) {declared}, actual {actual:?}")
            }
            FixError::MalformedChecksum => write!(f, "CheckSum (10) is not 3 digits at the end"),
            FixError::BadChecksum { declared, computed } => {
                write!(f, "CheckSum (10) {declared:03}, computed {computed:03}")
            }
            FixError::MalformedField { offset } => write!(f, "malformed field at byte {offset}"),
            FixError::MsgTypeNotFirst => write!(f, "MsgType (35) is not the first body field"),
            FixError::UnsupportedMsgType => write!(f, "MsgType (35) is not AE or D"),
            FixError::MissingTag(t) => write!(f, "missing tag {t}"),
            FixError::MalformedValue { tag } => write!(f, "malformed value of tag {tag}"),
            FixError::UnsupportedValue { tag } => write!(f, "unsupported value of tag {tag}"),
            FixError::DuplicateTag(t) => write!(f, "tag {t} appears twice"),
        }
    }
}

impl std::error::Error for FixError {}

/// A parsed message: the command and the request id it answers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixCommand {
    pub request_id: u64,
    pub command: Command,
}

/// The FIX checksum: sum of the bytes modulo 256.
#[inline]
pub fn checksum(bytes: &[u8]) -> u8 {
    // Sum in u32 lanes so the compiler can vectorize; 4096 bytes * 255 fits easily.
    (bytes.iter().map(|&b| u32::from(b)).sum::<u32>() & 0xff) as u8
}

fn digits_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Check framing (BeginString, BodyLength, CheckSum) and return the body (from MsgType to the SOH
/// before `10=`, inclusive) and its offset in `msg`.
pub fn validate(msg: &[u8]) -> Result<(&[u8], usize), FixError> {
    if msg.len() > FIX_MSG_LEN_MAX {
        return Err(FixError::TooLong(msg.len()));
    }
    if !msg.starts_with(BEGIN_STRING) {
        return Err(if BEGIN_STRING.starts_with(msg) {
            FixError::Truncated
        } else {
            FixError::BadBeginString
        });
    }
    let rest = msg.get(BEGIN_STRING.len()..).unwrap_or_default();
    let Some(after9) = rest.strip_prefix(b"9=") else {
        return Err(if rest.len() < 2 { FixError::Truncated } else { FixError::BadBodyLength });
    };
    let soh = after9.iter().position(|&b| b == SOH).ok_or(FixError::Truncated)?;
    let declared = after9.get(..soh).and_then(digits_u64).ok_or(FixError::BadBodyLength)?;
    let body_start = BEGIN_STRING.len() + 2 + soh + 1;
    let trailer = find_trailer(msg, body_start);
    let body_end = body_start.checked_add(declared as usize).filter(|&e| Some(e) == trailer);
    let Some(body_end) = body_end else {
        return Err(match trailer {
            None if !msg.ends_with(&[SOH]) => FixError::Truncated,
            actual => FixError::BodyLengthMismatch {
                declared: declared as usize,
                actual: actual.map(|t| t - body_start),
            },
        });
    };
    // Trailer: "10=" + 3 digits + SOH, and nothing after.
    let t = msg.get(body_end..).unwrap_or_default();
    if t.len() != 7 || t.get(6) != Some(&SOH) {
        return Err(FixError::MalformedChecksum);
    }
    let declared_sum = t.get(3..6).and_then(digits_u64).ok_or(FixError::MalformedChecksum)? as u16;
    let computed = checksum(msg.get(..body_end).unwrap_or_default());
    if declared_sum != u16::from(computed) {
        return Err(FixError::BadChecksum { declared: declared_sum, computed });
    }
    Ok((msg.get(body_start..body_end).unwrap_or_default(), body_start))
}

/// Offset of the last `10=` that starts a field at or after `from`.
fn find_trailer(msg: &[u8], from: usize) -> Option<usize> {
    let mut i = msg.len().checked_sub(3)?;
    while i > from {
        if msg.get(i - 1) == Some(&SOH) && msg.get(i..i + 3) == Some(b"10=") {
            return Some(i);
        }
        i -= 1;
    }
    None
}

/// Iterates `tag=value<SOH>` fields of a body: `(tag, value, offset)`.
struct Fields<'a> {
    body: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, &'a [u8]), FixError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.body.get(self.pos..)?;
        if rest.is_empty() {
            return None;
        }
        let offset = self.base + self.pos;
        let bad = FixError::MalformedField { offset };
        let Some(end) = rest.iter().position(|&b| b == SOH) else { return Some(Err(bad)) };
        let field = rest.get(..end).unwrap_or_default();
        self.pos += end + 1;
        let Some(eq) = field.iter().position(|&b| b == b'=') else { return Some(Err(bad)) };
        let (tag, value) =
            (field.get(..eq).unwrap_or_default(), field.get(eq + 1..).unwrap_or_default());
        match digits_u64(tag) {
            Some(t) if tag.len() <= 9 && t > 0 && !value.is_empty() => Some(Ok((t as u32, value))),
            _ => Some(Err(bad)),
        }
    }
}

fn set<'a>(slot: &mut Option<&'a [u8]>, tag: u32, v: &'a [u8]) -> Result<(), FixError> {
    if slot.replace(v).is_some() {
        return Err(FixError::DuplicateTag(tag));
    }
    Ok(())
}

fn req(slot: Option<&[u8]>, tag: u32) -> Result<&[u8], FixError> {
    slot.ok_or(FixError::MissingTag(tag))
}

fn id_u64(v: &[u8], tag: u32) -> Result<u64, FixError> {
    digits_u64(v).ok_or(FixError::MalformedValue { tag })
}

fn id_u32(v: &[u8], tag: u32) -> Result<u32, FixError> {
    digits_u64(v).and_then(|n| u32::try_from(n).ok()).ok_or(FixError::MalformedValue { tag })
}

fn qty(v: &[u8], tag: u32) -> Result<i64, FixError> {
    digits_u64(v).and_then(|n| i64::try_from(n).ok()).ok_or(FixError::MalformedValue { tag })
}

fn price(v: &[u8], tag: u32) -> Result<i64, FixError> {
    std::str::from_utf8(v).ok().and_then(parse_price).ok_or(FixError::MalformedValue { tag })
}

fn side(v: &[u8]) -> Result<Side, FixError> {
    match v {
        b"1" => Ok(Side::Buy),
        b"2" => Ok(Side::Sell),
        _ if digits_u64(v).is_some() || v.len() == 1 => Err(FixError::UnsupportedValue { tag: 54 }),
        _ => Err(FixError::MalformedValue { tag: 54 }),
    }
}

fn instrument(security_id: Option<&[u8]>, symbol: Option<&[u8]>) -> Result<u32, FixError> {
    match (security_id, symbol) {
        (Some(v), _) => id_u32(v, 48),
        (None, Some(v)) => id_u32(v, 55),
        (None, None) => Err(FixError::MissingTag(48)),
    }
}

/// One side entry of a trade capture report.
#[derive(Default)]
struct SideEntry<'a> {
    side: Option<Side>,
    account: Option<&'a [u8]>,
    party_id: Option<&'a [u8]>,
    customer_account: Option<&'a [u8]>,
}

impl<'a> SideEntry<'a> {
    fn account(&self) -> Result<u64, FixError> {
        match (self.account, self.customer_account) {
            (Some(a), _) => id_u64(a, 1),
            (None, Some(p)) => id_u64(p, 448),
            (None, None) => Err(FixError::MissingTag(1)),
        }
    }
}

/// Parse and validate one complete FIX 4.4 message (AE or D) into a core command.
pub fn parse(msg: &[u8]) -> Result<FixCommand, FixError> {
    let (body, base) = validate(msg)?;
    let mut fields = Fields { body, pos: 0, base };
    let (tag, msg_type) = fields.next().ok_or(FixError::MsgTypeNotFirst)??;
    if tag != 35 {
        return Err(FixError::MsgTypeNotFirst);
    }
    match msg_type {
        b"AE" => parse_ae(fields),
        b"D" => parse_d(fields),
        _ => Err(FixError::UnsupportedMsgType),
    }
}

fn parse_d(fields: Fields<'_>) -> Result<FixCommand, FixError> {
    let (mut cl_ord_id, mut account, mut sec, mut sym, mut sd, mut oqty, mut px, mut ord_type) =
        (None, None, None, None, None, None, None, None);
    for f in fields {
        let (tag, v) = f?;
        match tag {
            11 => set(&mut cl_ord_id, tag, v)?,
            1 => set(&mut account, tag, v)?,
            48 => set(&mut sec, tag, v)?,
            55 => set(&mut sym, tag, v)?,
            54 => set(&mut sd, tag, v)?,
            38 => set(&mut oqty, tag, v)?,
            44 => set(&mut px, tag, v)?,
            40 => set(&mut ord_type, tag, v)?,
            35 => return Err(FixError::DuplicateTag(35)),
            _ => {}
        }
    }
    if let Some(t) = ord_type {
        if t != b"2" {
            return Err(FixError::UnsupportedValue { tag: 40 });
        }
    }
    Ok(FixCommand {
        request_id: id_u64(req(cl_ord_id, 11)?, 11)?,
        command: Command::CheckOrder {
            account: id_u64(req(account, 1)?, 1)?,
            instrument: instrument(sec, sym)?,
            side: side(req(sd, 54)?)?,
            qty: qty(req(oqty, 38)?, 38)?,
            price: price(req(px, 44)?, 44)?,
        },
    })
}

fn parse_ae(fields: Fields<'_>) -> Result<FixCommand, FixError> {
    let (mut report_id, mut exec_id, mut sec, mut sym, mut lqty, mut lpx, mut date, mut no_sides) =
        (None, None, None, None, None, None, None, None);
    let mut sides: [SideEntry; 2] = Default::default();
    let mut n_sides = 0usize;
    for f in fields {
        let (tag, v) = f?;
        let in_side = n_sides > 0;
        match tag {
            571 => set(&mut report_id, tag, v)?,
            17 => set(&mut exec_id, tag, v)?,
            48 => set(&mut sec, tag, v)?,
            55 => set(&mut sym, tag, v)?,
            32 => set(&mut lqty, tag, v)?,
            31 => set(&mut lpx, tag, v)?,
            75 => set(&mut date, tag, v)?,
            552 => {
                set(&mut no_sides, tag, v)?;
                if v != b"2" {
                    return Err(match digits_u64(v) {
                        Some(_) => FixError::UnsupportedValue { tag },
                        None => FixError::MalformedValue { tag },
                    });
                }
            }
            54 if no_sides.is_some() => {
                let s = sides.get_mut(n_sides).ok_or(FixError::UnsupportedValue { tag: 552 })?;
                s.side = Some(side(v)?);
                n_sides += 1;
            }
            1 | 448 | 452 if in_side => {
                let s =
                    sides.get_mut(n_sides - 1).ok_or(FixError::UnsupportedValue { tag: 552 })?;
                match tag {
                    1 => set(&mut s.account, tag, v)?,
                    448 => s.party_id = Some(v),
                    _ => {
                        if v == b"24" {
                            let p = s.party_id.take().ok_or(FixError::MissingTag(448))?;
                            set(&mut s.customer_account, 448, p)?;
                        }
                    }
                }
            }
            54 => return Err(FixError::MissingTag(552)),
            35 => return Err(FixError::DuplicateTag(35)),
            _ => {}
        }
    }
    req(no_sides, 552)?;
    let [a, b] = &sides;
    let (buy, sell) = match (a.side, b.side) {
        (Some(Side::Buy), Some(Side::Sell)) => (a, b),
        (Some(Side::Sell), Some(Side::Buy)) => (b, a),
        (Some(_), Some(_)) => return Err(FixError::UnsupportedValue { tag: 54 }),
        _ => return Err(FixError::MissingTag(54)),
    };
    let trade_date = req(date, 75)?;
    if trade_date.len() != 8 {
        return Err(FixError::MalformedValue { tag: 75 });
    }
    Ok(FixCommand {
        request_id: id_u64(req(report_id, 571)?, 571)?,
        command: Command::ClearTrade(Trade {
            trade_id: id_u64(req(exec_id, 17)?, 17)?,
            buy: buy.account()?,
            sell: sell.account()?,
            instrument: instrument(sec, sym)?,
            qty: qty(req(lqty, 32)?, 32)?,
            price: price(req(lpx, 31)?, 31)?,
            trade_date: id_u32(trade_date, 75)?,
        }),
    })
}

/// A cursor writing ASCII into a fixed buffer; `None` once it runs out of room.
struct Out<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Out<'_> {
    fn bytes(&mut self, b: &[u8]) -> Option<()> {
        let d = self.buf.get_mut(self.len..self.len + b.len())?;
        d.copy_from_slice(b);
        self.len += b.len();
        Some(())
    }

    fn u64(&mut self, mut n: u64) -> Option<()> {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.bytes(tmp.get(i..)?)
    }

    fn i64(&mut self, n: i64) -> Option<()> {
        if n < 0 {
            self.bytes(b"-")?;
        }
        self.u64(n.unsigned_abs())
    }

    /// A price in fixed point 10^-8 as a decimal with trailing zeros trimmed.
    fn price(&mut self, p: i64) -> Option<()> {
        if p < 0 {
            self.bytes(b"-")?;
        }
        let a = p.unsigned_abs();
        self.u64(a / 100_000_000)?;
        let mut frac = a % 100_000_000;
        if frac != 0 {
            self.bytes(b".")?;
            let mut digits = 8;
            while frac.is_multiple_of(10) {
                frac /= 10;
                digits -= 1;
            }
            let mut tmp = [b'0'; 8];
            let mut i = digits;
            while frac > 0 {
                i -= 1;
                tmp[i] = b'0' + (frac % 10) as u8;
                frac /= 10;
            }
            self.bytes(tmp.get(..digits)?)?;
        }
        Some(())
    }

    fn field_u64(&mut self, tag: &[u8], v: u64) -> Option<()> {
        self.bytes(tag)?;
        self.u64(v)?;
        self.bytes(&[SOH])
    }
}

/// Header space reserved in front of the body: `8=FIX.4.4|9=` + 4 digits + SOH.
const HEAD_ROOM: usize = BEGIN_STRING.len() + 2 + 4 + 1;

/// Write a complete message around a body written by `body`; returns its length, or `None` if
/// `buf` is too small.
fn write_message(buf: &mut [u8], body: impl FnOnce(&mut Out<'_>) -> Option<()>) -> Option<usize> {
    let mut o = Out { buf, len: HEAD_ROOM };
    body(&mut o)?;
    let body_len = o.len - HEAD_ROOM;
    if body_len > 9999 {
        return None;
    }
    let mut head = [0u8; HEAD_ROOM];
    let mut h = Out { buf: &mut head, len: 0 };
    h.bytes(BEGIN_STRING)?;
    h.field_u64(b"9=", body_len as u64)?;
    let head_len = h.len;
    o.buf.copy_within(HEAD_ROOM..HEAD_ROOM + body_len, head_len);
    o.buf.get_mut(..head_len)?.copy_from_slice(head.get(..head_len)?);
    o.len = head_len + body_len;
    let sum = checksum(o.buf.get(..o.len)?);
    o.bytes(b"10=")?;
    o.bytes(&[b'0' + sum / 100, b'0' + (sum / 10) % 10, b'0' + sum % 10, SOH])?;
    Some(o.len)
}

/// Write a TradeCaptureReport (35=AE) of `trade` in the tag mapping of this module; returns its
/// length, or `None` if `buf` is too small.
pub fn write_trade_capture_report(buf: &mut [u8], request_id: u64, t: &Trade) -> Option<usize> {
    write_message(buf, |o| {
        o.bytes(b"35=AE\x01")?;
        o.field_u64(b"571=", request_id)?;
        o.field_u64(b"17=", t.trade_id)?;
        o.field_u64(b"48=", u64::from(t.instrument))?;
        o.bytes(b"22=8\x01")?;
        o.bytes(b"32=")?;
        o.i64(t.qty)?;
        o.bytes(b"\x0131=")?;
        o.price(t.price)?;
        o.bytes(b"\x01")?;
        // TradeDate is always 8 digits (YYYYMMDD, zero-padded).
        o.bytes(b"75=")?;
        let d = t.trade_date;
        for div in [10_000_000, 1_000_000, 100_000, 10_000, 1000, 100, 10, 1] {
            o.bytes(&[b'0' + ((d / div) % 10) as u8])?;
        }
        o.bytes(&[SOH])?;
        o.bytes(b"552=2\x0154=1\x01")?;
        o.field_u64(b"1=", t.buy)?;
        o.bytes(b"54=2\x01")?;
        o.field_u64(b"1=", t.sell)
    })
}

/// Write a NewOrderSingle (35=D, limit) for `CheckOrder`; `None` if `buf` is too small or
/// `cmd` is not a `CheckOrder`.
pub fn write_new_order_single(buf: &mut [u8], request_id: u64, cmd: &Command) -> Option<usize> {
    let Command::CheckOrder { account, instrument, side, qty, price } = *cmd else { return None };
    write_message(buf, |o| {
        o.bytes(b"35=D\x01")?;
        o.field_u64(b"11=", request_id)?;
        o.field_u64(b"1=", account)?;
        o.field_u64(b"48=", u64::from(instrument))?;
        o.bytes(if side == Side::Buy { b"54=1\x01" } else { b"54=2\x01" })?;
        o.bytes(b"38=")?;
        o.i64(qty)?;
        o.bytes(b"\x0140=2\x0144=")?;
        o.price(price)?;
        o.bytes(b"\x01")
    })
}
