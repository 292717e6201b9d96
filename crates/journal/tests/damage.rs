//! Random storage damage to a closed journal: bit flips, zeroed or overwritten ranges, files cut
//! short and segments deleted, several at once, anywhere in the files. For every case:
//! - nothing panics: `Journal::open`, the `Reader` and `repair` answer or return a typed error;
//! - what opens is a verified prefix of what was written, and it holds every record wholly
//!   before the first damaged byte (a damaged record may end the journal, an intact one is never
//!   dropped in silence); under `Policy::Fsync` it holds all of them, unless a record or the
//!   durable mark itself was damaged;
//! - `repair` keeps the same records, after which the journal opens and appends where it ends.
//!
//! The fixed cases in `faults.rs` pin each outcome exactly; this test looks for the combination
//! nobody wrote down.

use novate_journal::format::*;
use novate_journal::*;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

const SEG: u64 = 128 << 10;

fn opts(policy: Policy) -> Options {
    Options { segment_bytes: SEG, policy, first_seq: 1, populate: false }
}

/// Record `seq`'s payload: 1-300 bytes, a function of `seq`.
fn payload(seq: u64) -> Vec<u8> {
    let len = 1 + (seq as usize * 37) % 300;
    (0..len).map(|i| (seq as usize * 31 + i * 7) as u8).collect()
}

#[derive(Clone, Debug)]
enum Damage {
    /// XOR one byte with a non-zero mask.
    Flip { seg: usize, at: usize, mask: u8 },
    /// Zero `len` bytes.
    Zero { seg: usize, at: usize, len: usize },
    /// Overwrite with these bytes.
    Garbage { seg: usize, at: usize, bytes: Vec<u8> },
    /// Cut the file to `at` bytes (in its pre-allocated zeros with `zeros`).
    Cut { seg: usize, at: usize, zeros: bool },
    /// XOR a byte `back` bytes before the end of the last segment's records: a torn tail.
    Tail { back: usize, mask: u8 },
    /// Delete a segment other than the first (a journal may begin at any segment: retention
    /// deletes the first ones, and recovery, not the journal, knows whether they were needed).
    Delete { seg: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    // `at` is scaled to the segment's written bytes (plus a little) when applied, so that most
    // damage lands on records rather than on the pre-allocated zeros.
    let at = 0usize..1 << 20;
    prop_oneof![
        4 => (any::<usize>(), at.clone(), 1u8..=255).prop_map(|(seg, at, mask)| Damage::Flip { seg, at, mask }),
        2 => (any::<usize>(), at.clone(), 1usize..5_000).prop_map(|(seg, at, len)| Damage::Zero { seg, at, len }),
        2 => (any::<usize>(), at.clone(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(seg, at, bytes)| Damage::Garbage { seg, at, bytes }),
        2 => (any::<usize>(), at, any::<bool>()).prop_map(|(seg, at, zeros)| Damage::Cut { seg, at, zeros }),
        2 => (0usize..600, 1u8..=255).prop_map(|(back, mask)| Damage::Tail { back, mask }),
        1 => any::<usize>().prop_map(|seg| Damage::Delete { seg }),
    ]
}

/// Where each record (and seal) of a segment lies: (start, end, seq); a seal's seq is its
/// successor's first.
fn spans(b: &[u8]) -> Vec<(usize, usize, u64)> {
    let mut out = Vec::new();
    let mut off = SEGMENT_DATA_OFFSET;
    while off + RECORD_HEADER_BYTES <= b.len() {
        let h = RecordHeader::read(&b[off..]);
        if h.is_seal() {
            out.push((off, off + RECORD_HEADER_BYTES, h.seq));
            break;
        }
        if h.len == 0 {
            break;
        }
        let end = off + record_bytes(h.len as usize);
        out.push((off, end, h.seq));
        off = end;
    }
    out
}

struct Written {
    /// (first seq, path, original bytes) of each segment, in order.
    segs: Vec<(u64, PathBuf, Vec<u8>)>,
    n: u64,
}

fn write_journal(dir: &Path, n: u64, policy: Policy) -> Written {
    let (mut j, _) = Journal::open(dir, opts(policy)).unwrap();
    for seq in 1..=n {
        j.append(seq, &payload(seq)).unwrap();
    }
    j.close().unwrap();
    let segs = scan::list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|(first, path)| {
            let b = std::fs::read(&path).unwrap();
            (first, path, b)
        })
        .collect();
    Written { segs, n }
}

/// Apply the damage to the files; return the first record whose bytes changed (n + 1 if none)
/// and whether a durable mark changed.
fn apply(w: &Written, damage: &[Damage]) -> (u64, bool) {
    let mut files: Vec<Option<Vec<u8>>> = w.segs.iter().map(|s| Some(s.2.clone())).collect();
    let count = files.len();
    for d in damage {
        let seg = match *d {
            Damage::Flip { seg, .. }
            | Damage::Zero { seg, .. }
            | Damage::Garbage { seg, .. }
            | Damage::Cut { seg, .. } => seg % count,
            Damage::Tail { .. } => count - 1,
            Damage::Delete { seg } if count > 1 => 1 + seg % (count - 1),
            Damage::Delete { .. } => continue,
        };
        let Some(b) = files[seg].as_mut() else { continue };
        // Scale `at` to the written part of the segment and one page past it.
        let written = spans(&w.segs[seg].2).last().map_or(SEGMENT_DATA_OFFSET, |s| s.1);
        let room = (written + 4096).min(b.len()).max(1);
        let scale = |at: usize| at % room;
        match d {
            Damage::Flip { at, mask, .. } => {
                let at = scale(*at);
                if at < b.len() {
                    b[at] ^= mask;
                }
            }
            Damage::Zero { at, len, .. } => {
                let at = scale(*at).min(b.len());
                let end = (at + len).min(b.len());
                b[at..end].fill(0);
            }
            Damage::Garbage { at, bytes, .. } => {
                let at = scale(*at).min(b.len());
                let end = (at + bytes.len()).min(b.len());
                b[at..end].copy_from_slice(&bytes[..end - at]);
            }
            Damage::Cut { at, zeros: false, .. } => {
                let at = scale(*at);
                b.truncate(at);
            }
            Damage::Cut { at, zeros: true, .. } => {
                if b.len() > written {
                    let at = written + at % (b.len() - written);
                    b.truncate(at);
                }
            }
            Damage::Tail { back, mask } => {
                if let Some(at) = written.checked_sub(1 + back).filter(|&at| at < b.len()) {
                    b[at] ^= mask;
                }
            }
            Damage::Delete { .. } => files[seg] = None,
        }
    }
    let mut first_bad = w.n + 1;
    let mut mark_changed = false;
    for (k, ((first, path, orig), now)) in w.segs.iter().zip(&files).enumerate() {
        let Some(now) = now else {
            std::fs::remove_file(path).unwrap();
            first_bad = first_bad.min(*first);
            // The durable mark is kept in the last segment: deleting it deletes the mark.
            mark_changed |= k == count - 1;
            continue;
        };
        std::fs::write(path, now).unwrap();
        // A byte changed: it differs, or it was cut off and was not a pre-allocated zero.
        let changed = |i: usize| now.get(i).map_or(orig[i] != 0, |&x| x != orig[i]);
        if (0..SEGMENT_HEADER_BYTES).any(changed) {
            first_bad = first_bad.min(*first);
        }
        let mark = DURABLE_MARK_OFFSET..DURABLE_MARK_OFFSET + DURABLE_MARK_BYTES;
        mark_changed |= mark.clone().any(changed);
        for (start, end, seq) in spans(orig) {
            if (start..end).any(changed) {
                first_bad = first_bad.min(seq);
            }
        }
    }
    (first_bad, mark_changed)
}

/// Read every record from the first; each must be the one written. Returns the seqs read.
fn read_all(dir: &Path) -> Result<Vec<u64>, Error> {
    let mut r = Reader::open(dir, 1)?;
    let mut out = Vec::new();
    while let Some(rec) = r.next()? {
        assert_eq!(rec.payload, payload(rec.seq).as_slice(), "record {} altered", rec.seq);
        out.push(rec.seq);
    }
    Ok(out)
}

/// What a case came to, for the test that the cases reach every outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Opened with every record.
    Whole,
    /// Opened without a damaged tail (`Policy::None`).
    TornTail,
    /// Refused; repair kept every record (the damage hit no record).
    RefusedNothingLost,
    /// Refused; repair truncated at the damage.
    RefusedRepaired,
}

fn check(n: u64, fsync: bool, damage: Vec<Damage>) -> Outcome {
    let t = tempfile::tempdir().unwrap();
    let policy = if fsync { Policy::Fsync } else { Policy::None };
    let w = write_journal(t.path(), n, policy);
    let (first_bad, mark_changed) = apply(&w, &damage);
    let intact = first_bad - 1; // records 1..=intact are untouched

    let opened = match Journal::open(t.path(), opts(policy)) {
        Ok((j, report)) => {
            let last = j.last_seq();
            drop(j);
            assert!(last >= intact, "open dropped intact records: {last} < {intact} ({report:?})");
            assert!(last <= n);
            if fsync && !mark_changed {
                // Every record was durable: one that cannot be read back must be refused.
                assert_eq!(last, n, "a durable record was dropped in silence ({report:?})");
            }
            let read = read_all(t.path()).expect("an opened journal reads back");
            assert_eq!(read, (1..=last).collect::<Vec<_>>());
            Some(last)
        }
        Err(Error::Corrupt(_)) => None,
        Err(e) => panic!("damage must be reported as corruption, not {e}"),
    };

    let report = repair(t.path()).expect("repair answers");
    assert!(
        report.last_seq >= intact,
        "repair dropped intact records: {report:?}, intact {intact}"
    );
    assert!(report.last_seq <= n);
    let (mut j, _) = Journal::open(t.path(), opts(policy)).expect("a repaired journal opens");
    let last = j.last_seq();
    assert_eq!(last, report.last_seq);
    j.append(last + 1, &payload(last + 1)).unwrap();
    j.close().unwrap();
    assert_eq!(read_all(t.path()).unwrap(), (1..=last + 1).collect::<Vec<_>>());
    match opened {
        Some(m) if m == n => Outcome::Whole,
        Some(_) => Outcome::TornTail,
        None if last == n => Outcome::RefusedNothingLost,
        None => Outcome::RefusedRepaired,
    }
}

fn case() -> impl Strategy<Value = (u64, bool, Vec<Damage>)> {
    (1u64..2_500, any::<bool>(), prop::collection::vec(damage(), 1..4))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("DAMAGE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_journals_open_as_a_verified_prefix_or_are_refused_and_repair_keeps_it(
        (n, fsync, damage) in case()
    ) {
        check(n, fsync, damage);
    }
}

#[test]
fn the_damage_cases_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let (n, fsync, damage) = case().new_tree(&mut runner).unwrap().current();
        *seen.entry(check(n, fsync, damage)).or_insert(0) += 1;
    }
    for o in
        [Outcome::Whole, Outcome::TornTail, Outcome::RefusedNothingLost, Outcome::RefusedRepaired]
    {
        assert!(seen.contains_key(&o), "no case came to {o:?}: {seen:?}");
    }
    println!("outcomes of 200 cases: {seen:?}");
}
