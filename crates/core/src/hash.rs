//! A stable 64-bit hash for `state_hash()`: the same bytes give the same value on every build,
//! platform and Rust version (std's `DefaultHasher` promises none of that). Not cryptographic:
//! it tells replicas, replays and snapshots apart when they diverge.

use crate::map::fmix64;

#[derive(Clone, Debug)]
pub struct StableHasher {
    h: u64,
    words: u64,
}

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher { h: 0x6e6f_7661_7465_0001, words: 0 } // "novate" + format version 1
    }
}

impl StableHasher {
    #[inline]
    pub fn u64(&mut self, x: u64) -> &mut Self {
        self.h = fmix64(self.h ^ x).wrapping_add(self.words);
        self.words += 1;
        self
    }

    pub fn i64(&mut self, x: i64) -> &mut Self {
        self.u64(x as u64)
    }

    pub fn i128(&mut self, x: i128) -> &mut Self {
        self.u64(x as u64).u64((x >> 64) as u64)
    }

    pub fn finish(&self) -> u64 {
        fmix64(self.h ^ self.words)
    }
}

/// `a * b` as 128 bits, folded to 64 (the wyhash "mum").
#[inline(always)]
fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

const K: [u64; 4] =
    [0xa076_1d64_78bd_642f, 0xe703_7ed1_a0b4_28db, 0x8ebc_6af0_9c88_c6e3, 0x5899_65cc_7537_4cc3];

/// The hash of one record (a `tag` naming its kind and its fields as words) for a
/// [`Digest`]: two words per 64x64 -> 128-bit multiply, chained, and a final multiply with the
/// length. Stable across builds and platforms like [`StableHasher`]; a fraction of its cost
/// per word.
#[inline]
pub fn record<const N: usize>(tag: u64, w: [u64; N]) -> u64 {
    let mut acc = tag ^ K[0];
    let mut i = 0;
    while i + 1 < N {
        acc = mum(w[i] ^ acc ^ K[1], w[i + 1] ^ K[2]);
        i += 2;
    }
    if N % 2 == 1 {
        acc = mum(w[N - 1] ^ acc ^ K[1], K[3]);
    }
    mum(acc ^ K[3], N as u64 ^ K[0])
}

/// An order-independent digest of a set of records: the wrapping sum of their [`record`]
/// hashes. A record that changes is subtracted with its old fields and added with its new
/// ones, so the state machine keeps the digest of its whole state in O(1) per change, and a
/// snapshot, whatever order it lists its records in, sums to the same value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest(pub u64);

impl Digest {
    #[inline]
    pub fn add(&mut self, record: u64) {
        self.0 = self.0.wrapping_add(record);
    }

    #[inline]
    pub fn sub(&mut self, record: u64) {
        self.0 = self.0.wrapping_sub(record);
    }

    /// Replace one record's hash by another.
    #[inline]
    pub fn replace(&mut self, old: u64, new: u64) {
        self.0 = self.0.wrapping_sub(old).wrapping_add(new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_differ_in_every_word_tag_and_length() {
        let base = record(1, [1, 2, 3, 4, 5]);
        for i in 0..5 {
            let mut w = [1, 2, 3, 4, 5];
            w[i] ^= 1 << (i * 13);
            assert_ne!(record(1, w), base, "word {i}");
        }
        assert_ne!(record(2, [1, 2, 3, 4, 5]), base);
        assert_ne!(record(1, [1, 2, 3, 4, 5, 0]), base);
        assert_ne!(record(1, [1, 2]), record(1, [2, 1]), "order matters within a record");
        assert_eq!(record(7, [42, 43, 44]), 0x117b_133f_e020_6cb8, "pinned");
    }

    #[test]
    fn a_digest_is_the_same_whatever_the_order_and_history() {
        let (a, b, c) = (record(1, [1]), record(1, [2]), record(2, [3, 4]));
        let mut x = Digest::default();
        [a, b, c].into_iter().for_each(|r| x.add(r));
        let mut y = Digest::default();
        y.add(c);
        y.add(record(1, [9]));
        y.add(a);
        y.replace(record(1, [9]), b);
        assert_eq!(x, y);
        y.sub(b);
        assert_ne!(x, y);
    }

    #[test]
    fn pinned_values() {
        // Pinned: a change here changes every stored snapshot hash.
        assert_eq!(StableHasher::default().finish(), StableHasher::default().finish());
        let a = StableHasher::default().u64(1).u64(2).finish();
        let b = StableHasher::default().u64(2).u64(1).finish();
        assert_ne!(a, b, "order matters");
        let c = StableHasher::default().i128(-1).finish();
        let d = StableHasher::default().i64(-1).i64(-1).finish();
        assert_eq!(c, d, "i128 is two little-endian words");
        assert_eq!(StableHasher::default().u64(42).finish(), 0x7168_d5c7_98d7_6107);
    }
}
