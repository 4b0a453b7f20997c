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
//! - Rows of Arrow sort columns (top-N's `ORDER BY`) go through [`SortKeyEncoder`]: each value
//!   a NULL marker that puts NULLs first or last, then the value, inverted when descending.
//!
//! Decoding ([`KeyReader`]) reads the values back in the order they were written; bytes that do
//! not decode are reported as corrupt, never a panic.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Decimal128Array, Float64Array, Int64Array,
    StringArray,
};
use datafusion::arrow::compute::{SortOptions, cast};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type};

use crate::{EngineError, Result};

const SIGN_64: u64 = 1 << 63;
const SIGN_32: u32 = 1 << 31;
const ESCAPE: u8 = 0xff;
const TERMINATOR: u8 = 0x01;

/// The first 16 bytes of table key `kg ++ key` (zero-padded) as a number: ordering keys by it,
/// then by `(kg, key)` where two tie, is their table-key order. An operator sorting an epoch's
/// writes (RocksDB inserts sorted keys much faster) computes it once per key, so keys of up to
/// 14 bytes (an encoded integer or two) sort with no byte-string comparison at all.
pub fn head(kg: u16, key: &[u8]) -> u128 {
    let mut head = [0u8; 16];
    head[..2].copy_from_slice(&kg.to_be_bytes());
    let n = key.len().min(14);
    head[2..2 + n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(head)
}

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

/// Appends `v`, ordered like the numbers (negatives first).
pub fn put_i128(out: &mut Vec<u8>, v: i128) {
    out.extend_from_slice(&(v as u128 ^ (1 << 127)).to_be_bytes());
}

/// The values of one sort column, in the form they are encoded from.
enum SortValues {
    Bool(BooleanArray),
    /// Integers, dates, times and timestamps (as their integer value).
    Int(Int64Array),
    /// Decimals and unsigned 64-bit integers.
    Wide(Decimal128Array),
    Float(Float64Array),
    Str(StringArray),
    Bin(BinaryArray),
}

/// Encodes rows of sort columns (`ORDER BY a DESC, b NULLS FIRST`) as keys whose bytewise order
/// is the rows' sort order, as Arrow's sort kernels order them: floats by IEEE 754 total order,
/// strings bytewise.
///
/// Each value is a NULL marker (`00` for a NULL sorted first, `02` for a NULL sorted last, `01`
/// before a value) followed by the value's ascending encoding, inverted when descending. Every
/// encoding is fixed-width or prefix-free, so the concatenation of a row's values is too.
pub struct SortKeyEncoder {
    columns: Vec<(SortValues, SortOptions)>,
}

/// Whether [`SortKeyEncoder`] can order a column of type `t`.
pub fn sortable(t: &DataType) -> bool {
    sort_form(t).is_some()
}

/// The type a sortable column is cast to before encoding.
fn sort_form(t: &DataType) -> Option<DataType> {
    Some(match t {
        DataType::Boolean => DataType::Boolean,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::Date32
        | DataType::Date64
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Timestamp(_, _)
        | DataType::Duration(_) => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::Decimal128(p, s) => DataType::Decimal128(*p, *s),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => DataType::Float64,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        _ => return None,
    })
}

impl SortKeyEncoder {
    /// Prepares `columns` (equal lengths) with their sort options for encoding.
    pub fn try_new(columns: &[(ArrayRef, SortOptions)]) -> Result<Self> {
        let columns = columns
            .iter()
            .map(|(array, options)| {
                let form = sort_form(array.data_type()).ok_or_else(|| {
                    EngineError::Unsupported(format!("{} as a sort key", array.data_type()))
                })?;
                let cast = cast(array, &form)?;
                let values = match form {
                    DataType::Boolean => SortValues::Bool(cast.as_boolean().clone()),
                    DataType::Int64 => SortValues::Int(cast.as_primitive::<Int64Type>().clone()),
                    DataType::Decimal128(_, _) => {
                        SortValues::Wide(cast.as_primitive::<Decimal128Type>().clone())
                    }
                    DataType::Float64 => {
                        SortValues::Float(cast.as_primitive::<Float64Type>().clone())
                    }
                    DataType::Utf8 => SortValues::Str(cast.as_string::<i32>().clone()),
                    _ => SortValues::Bin(cast.as_binary::<i32>().clone()),
                };
                Ok((values, *options))
            })
            .collect::<Result<_>>()?;
        Ok(Self { columns })
    }

    /// Appends row `row`'s key to `out`.
    pub fn encode(&self, row: usize, out: &mut Vec<u8>) {
        for (values, options) in &self.columns {
            let valid = match values {
                SortValues::Bool(a) => a.is_valid(row),
                SortValues::Int(a) => a.is_valid(row),
                SortValues::Wide(a) => a.is_valid(row),
                SortValues::Float(a) => a.is_valid(row),
                SortValues::Str(a) => a.is_valid(row),
                SortValues::Bin(a) => a.is_valid(row),
            };
            if !valid {
                out.push(if options.nulls_first { 0 } else { 2 });
                continue;
            }
            out.push(1);
            let start = out.len();
            match values {
                SortValues::Bool(a) => out.push(a.value(row) as u8),
                SortValues::Int(a) => put_i64(out, a.value(row)),
                SortValues::Wide(a) => put_i128(out, a.value(row)),
                SortValues::Float(a) => put_f64(out, a.value(row)),
                SortValues::Str(a) => put_bytes(out, a.value(row).as_bytes()),
                SortValues::Bin(a) => put_bytes(out, a.value(row)),
            }
            if options.descending {
                invert(&mut out[start..]);
            }
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
    fn heads_then_keys_order_table_keys() {
        let keys: Vec<(u16, Vec<u8>)> = vec![
            (1, vec![]),
            (0, vec![0; 20]),
            (0, vec![0; 14]),
            (0, vec![0; 15]),
            (0, vec![1]),
            (0, vec![0, 0, 0, 7]),
            (2, vec![9; 30]),
            (2, [vec![9; 14], vec![1]].concat()),
            (0, vec![]),
        ];
        let mut by_head = keys.clone();
        by_head.sort_by(|a, b| {
            (head(a.0, &a.1).cmp(&head(b.0, &b.1))).then_with(|| (a.0, &a.1).cmp(&(b.0, &b.1)))
        });
        let mut plain = keys;
        plain.sort();
        assert_eq!(by_head, plain);
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

    #[test]
    fn sort_keys_order_rows_as_arrow_sorts_them() {
        use std::sync::Arc;

        use datafusion::arrow::array::{Float64Array, Int32Array, StringArray};
        use datafusion::arrow::compute::{LexicographicalComparator, SortColumn};

        let mut rng = Rng(7);
        let n = 120;
        let ints: ArrayRef =
            Arc::new(Int32Array::from_iter((0..n).map(|_| {
                (!rng.next().is_multiple_of(5)).then(|| (rng.next() % 7) as i32 - 3)
            })));
        let strings: ArrayRef = Arc::new(StringArray::from_iter((0..n).map(|_| {
            (!rng.next().is_multiple_of(6))
                .then(|| String::from_utf8_lossy(&rng.bytes()).into_owned())
        })));
        let floats: ArrayRef = Arc::new(Float64Array::from_iter(
            (0..n).map(|_| (!rng.next().is_multiple_of(6)).then(|| rng.float())),
        ));
        for variant in 0..8u8 {
            let options = |bit: u8| SortOptions {
                descending: variant & bit != 0,
                nulls_first: (variant >> 1) & bit == 0,
            };
            let columns = vec![
                (Arc::clone(&ints), options(1)),
                (Arc::clone(&strings), options(2)),
                (Arc::clone(&floats), options(4)),
            ];
            let encoder = SortKeyEncoder::try_new(&columns).unwrap();
            let keys: Vec<Vec<u8>> = (0..n)
                .map(|i| {
                    let mut k = Vec::new();
                    encoder.encode(i, &mut k);
                    k
                })
                .collect();
            let sort_columns: Vec<SortColumn> = columns
                .iter()
                .map(|(values, options)| SortColumn {
                    values: Arc::clone(values),
                    options: Some(*options),
                })
                .collect();
            let comparator = LexicographicalComparator::try_new(&sort_columns).unwrap();
            for i in 0..n {
                for j in 0..n {
                    assert_eq!(
                        keys[i].cmp(&keys[j]),
                        comparator.compare(i, j),
                        "variant {variant}, rows {i} and {j}"
                    );
                }
            }
        }
    }
}
