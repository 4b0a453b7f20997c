//! Order-preserving ("memcomparable") key encoding, for keys of [`super::table::StateTable`].
//!
//! RocksDB orders keys bytewise, so a key built from several values must compare, byte by byte,
//! the way the values compare, one after the other: then a scan in key order is a scan in value
//! order (top-N by a column, CEP by event time, expiry of everything before a watermark) and a
//! prefix scan on the first values finds every key that starts with them (a multi-map's
//! `join key ++ row id`).
//!
//! - Integers are big endian; signed ones have the sign bit flipped, so negatives sort first.
//! - Floats: positive ones get the sign bit set, negative ones have every bit flipped. -0.0 sorts
//!   just below 0.0 and NaN above infinity (callers that want SQL's equalities canonicalize first).
//! - Byte strings are escaped and terminated: every 0x00 becomes `00 ff` and the end is `00 01`.
//!   The encoding is prefix-free (no encoded string is a prefix of another's), so what follows a
//!   string in a key never changes how two strings compare, and a prefix scan over an encoded
//!   string matches that string exactly, never a longer one.
//! - A descending value is the bitwise NOT of its ascending encoding. Every encoding here is
//!   fixed-width or prefix-free, so NOT reverses its order.
//!
//! Decoding ([`KeyReader`]) reads the values back in the order they were written; bytes that do
//! not decode are reported as corrupt, never a panic.

use crate::{EngineError, Result};

const SIGN_64: u64 = 1 << 63;
const SIGN_32: u32 = 1 << 31;
const ESCAPE: u8 = 0xff;
const TERMINATOR: u8 = 0x01;

/// Appends `v`, ordered like the numbers.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends `v`, ordered like the numbers.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends `v`, ordered like the numbers (negatives first).
pub fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, v as u64 ^ SIGN_64);
}

/// Appends `v`, ordered like the numbers (negatives first).
pub fn put_i32(out: &mut Vec<u8>, v: i32) {
    put_u32(out, v as u32 ^ SIGN_32);
}

/// Appends `v`, ordered by IEEE 754 total order (-NaN < -inf < ... < -0.0 < 0.0 < ... < inf < NaN).
pub fn put_f64(out: &mut Vec<u8>, v: f64) {
    let bits = v.to_bits();
    put_u64(
        out,
        if bits & SIGN_64 == 0 {
            bits ^ SIGN_64
        } else {
            !bits
        },
    );
}

/// Appends `bytes` escaped and terminated (see the module documentation), ordered bytewise.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    let mut rest = bytes;
    while let Some(zero) = rest.iter().position(|&b| b == 0) {
        out.extend_from_slice(&rest[..zero]);
        out.extend_from_slice(&[0, ESCAPE]);
        rest = &rest[zero + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&[0, TERMINATOR]);
}

/// Appends `v` in descending order (larger values first).
pub fn put_i64_desc(out: &mut Vec<u8>, v: i64) {
    put_u64(out, !(v as u64 ^ SIGN_64));
}

/// Appends `v` in descending order (larger values first).
pub fn put_u64_desc(out: &mut Vec<u8>, v: u64) {
    put_u64(out, !v);
}

/// Appends `v` in descending order (larger values first).
pub fn put_i32_desc(out: &mut Vec<u8>, v: i32) {
    put_u32(out, !(v as u32 ^ SIGN_32));
}

/// Appends `v` in descending IEEE 754 total order.
pub fn put_f64_desc(out: &mut Vec<u8>, v: f64) {
    let start = out.len();
    put_f64(out, v);
    invert(&mut out[start..]);
}

/// Appends `bytes` in descending bytewise order.
pub fn put_bytes_desc(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    put_bytes(out, bytes);
    invert(&mut out[start..]);
}

/// The float [`put_f64`] encoded as `bits`.
fn f64_from(bits: u64) -> f64 {
    f64::from_bits(if bits & SIGN_64 != 0 {
        bits ^ SIGN_64
    } else {
        !bits
    })
}

fn invert(bytes: &mut [u8]) {
    bytes.iter_mut().for_each(|b| *b = !*b);
}

/// Reads back, in order, values appended with this module's `put_*` functions.
#[derive(Debug, Clone)]
pub struct KeyReader<'a> {
    rest: &'a [u8],
}

fn corrupt(what: &str) -> EngineError {
    EngineError::Corrupt(format!("state key: {what}"))
}

impl<'a> KeyReader<'a> {
    /// A reader at the start of `key`.
    pub fn new(key: &'a [u8]) -> Self {
        Self { rest: key }
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| corrupt("value cut short"))?;
        self.rest = rest;
        Ok(*head)
    }

    /// Reads a [`put_u64`] value.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    /// Reads a [`put_u32`] value.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    /// Reads a [`put_i64`] value.
    pub fn i64(&mut self) -> Result<i64> {
        Ok((self.u64()? ^ SIGN_64) as i64)
    }

    /// Reads a [`put_i32`] value.
    pub fn i32(&mut self) -> Result<i32> {
        Ok((self.u32()? ^ SIGN_32) as i32)
    }

    /// Reads a [`put_f64`] value.
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64_from(self.u64()?))
    }

    /// Reads a [`put_bytes`] value.
    pub fn bytes(&mut self) -> Result<Vec<u8>> {
        self.bytes_with(0)
    }

    /// Reads a [`put_i64_desc`] value.
    pub fn i64_desc(&mut self) -> Result<i64> {
        Ok((!self.u64()? ^ SIGN_64) as i64)
    }

    /// Reads a [`put_u64_desc`] value.
    pub fn u64_desc(&mut self) -> Result<u64> {
        Ok(!self.u64()?)
    }

    /// Reads a [`put_i32_desc`] value.
    pub fn i32_desc(&mut self) -> Result<i32> {
        Ok((!self.u32()? ^ SIGN_32) as i32)
    }

    /// Reads a [`put_f64_desc`] value.
    pub fn f64_desc(&mut self) -> Result<f64> {
        Ok(f64_from(!self.u64()?))
    }

    /// Reads a [`put_bytes_desc`] value.
    pub fn bytes_desc(&mut self) -> Result<Vec<u8>> {
        self.bytes_with(0xff)
    }

    /// Reads an escaped string whose bytes were XORed with `mask` (0 ascending, 0xff descending).
    fn bytes_with(&mut self, mask: u8) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            let zero = self.rest[at..]
                .iter()
                .position(|&b| b ^ mask == 0)
                .ok_or_else(|| corrupt("unterminated string"))?;
            out.extend(self.rest[at..at + zero].iter().map(|b| b ^ mask));
            at += zero + 1;
            match self.rest.get(at).map(|b| b ^ mask) {
                Some(ESCAPE) => out.push(0),
                Some(TERMINATOR) => {
                    self.rest = &self.rest[at + 1..];
                    return Ok(out);
                }
                _ => return Err(corrupt("bad escape in string")),
            }
            at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use super::*;

    /// A small deterministic generator (xorshift64*), so failures reproduce without a seed file.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// Mostly values near the edges (0, -1, MIN, MAX), where encodings go wrong.
        fn int(&mut self) -> i64 {
            match self.next() % 4 {
                0 => (self.next() % 5) as i64 - 2,
                1 => i64::MIN + (self.next() % 3) as i64,
                2 => i64::MAX - (self.next() % 3) as i64,
                _ => self.next() as i64,
            }
        }

        fn bytes(&mut self) -> Vec<u8> {
            let len = self.next() % 6;
            // Few distinct bytes, so strings share prefixes and hold zeros and 0xff.
            (0..len)
                .map(|_| [0u8, 1, 0xfe, 0xff, b'a'][(self.next() % 5) as usize])
                .collect()
        }

        fn float(&mut self) -> f64 {
            match self.next() % 5 {
                0 => [0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN]
                    [(self.next() % 5) as usize],
                1 => f64::from_bits(self.next()),
                _ => (self.next() % 2001) as f64 / 7.0 - 140.0,
            }
        }
    }

    /// One key of several values: (i64, bytes, i32 desc, bytes desc, u64, f64).
    type Tuple = (i64, Vec<u8>, i32, Vec<u8>, u64, f64);

    fn encode(t: &Tuple) -> Vec<u8> {
        let mut out = Vec::new();
        put_i64(&mut out, t.0);
        put_bytes(&mut out, &t.1);
        put_i32_desc(&mut out, t.2);
        put_bytes_desc(&mut out, &t.3);
        put_u64(&mut out, t.4);
        put_f64(&mut out, t.5);
        out
    }

    fn decode(key: &[u8]) -> Result<Tuple> {
        let mut r = KeyReader::new(key);
        let t = (
            r.i64()?,
            r.bytes()?,
            r.i32_desc()?,
            r.bytes_desc()?,
            r.u64()?,
            r.f64()?,
        );
        assert!(r.rest().is_empty());
        Ok(t)
    }

    fn compare(a: &Tuple, b: &Tuple) -> Ordering {
        a.0.cmp(&b.0)
            .then_with(|| a.1.cmp(&b.1))
            .then_with(|| b.2.cmp(&a.2))
            .then_with(|| b.3.cmp(&a.3))
            .then_with(|| a.4.cmp(&b.4))
            .then_with(|| a.5.total_cmp(&b.5))
    }

    #[test]
    fn encoded_order_is_value_order_and_round_trips() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let tuples: Vec<Tuple> = (0..400)
            .map(|_| {
                (
                    rng.int() % 4,
                    rng.bytes(),
                    rng.int() as i32 % 3,
                    rng.bytes(),
                    rng.int() as u64,
                    rng.float(),
                )
            })
            .collect();
        let keys: Vec<Vec<u8>> = tuples.iter().map(encode).collect();
        for (t, k) in tuples.iter().zip(&keys) {
            let back = decode(k).unwrap();
            assert_eq!(encode(&back), *k, "{t:?}");
        }
        for (a, ka) in tuples.iter().zip(&keys) {
            for (b, kb) in tuples.iter().zip(&keys) {
                assert_eq!(ka.cmp(kb), compare(a, b), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn single_values_order_at_the_edges() {
        let mut rng = Rng(42);
        for _ in 0..2000 {
            let (a, b) = (rng.int(), rng.int());
            let enc = |f: fn(&mut Vec<u8>, i64), v| {
                let mut out = Vec::new();
                f(&mut out, v);
                out
            };
            assert_eq!(enc(put_i64, a).cmp(&enc(put_i64, b)), a.cmp(&b));
            assert_eq!(enc(put_i64_desc, a).cmp(&enc(put_i64_desc, b)), b.cmp(&a));
            let (x, y) = (a as u64, b as u64);
            let (mut ex, mut ey) = (Vec::new(), Vec::new());
            put_u64_desc(&mut ex, x);
            put_u64_desc(&mut ey, y);
            assert_eq!(ex.cmp(&ey), y.cmp(&x));
            assert_eq!(KeyReader::new(&ex).u64_desc().unwrap(), x);
            let (f, g) = (rng.float(), rng.float());
            let (mut ef, mut eg) = (Vec::new(), Vec::new());
            put_f64_desc(&mut ef, f);
            put_f64_desc(&mut eg, g);
            assert_eq!(ef.cmp(&eg), g.total_cmp(&f));
            assert_eq!(
                KeyReader::new(&ef).f64_desc().unwrap().to_bits(),
                f.to_bits()
            );
        }
    }

    #[test]
    fn prefix_of_an_encoded_string_matches_that_string_only() {
        let mut ab = Vec::new();
        put_bytes(&mut ab, b"ab");
        let mut abc = Vec::new();
        put_bytes(&mut abc, b"abc");
        put_u64(&mut abc, 7);
        let mut ab_row = ab.clone();
        put_u64(&mut ab_row, 7);
        assert!(!abc.starts_with(&ab));
        assert!(ab_row.starts_with(&ab));
    }

    #[test]
    fn bad_bytes_are_corrupt_not_a_panic() {
        for bad in [&b"ab"[..], b"a\x00", b"a\x00\x07", b"\x00\x00\x01"] {
            assert!(KeyReader::new(bad).bytes().is_err(), "{bad:?}");
        }
        assert!(KeyReader::new(b"1234567").i64().is_err());
    }
}
