//! Key groups: how keyed state and rows are split among the parallel instances of an operator.
//!
//! As in Flink, every key hashes to one of [`KEY_GROUPS`] key groups, and instance `i` of `n`
//! owns a contiguous range of them (`kg * n / KEY_GROUPS == i`). The hash exchange sends a row to
//! the instance owning its key's group, and keyed operators store each entry under its key group,
//! so a job restarted with another parallelism finds every key's state in the range of the
//! instance that now owns it, without rewriting state. [`KEY_GROUPS`] is therefore the most
//! instances a keyed operator can have.
//!
//! The hash must be stable across processes and builds (it is part of stored keys): it is computed
//! here from the values themselves, never with a randomly seeded or CPU-dependent hasher. Equal SQL
//! values hash equally: -0.0 and 0.0 are one value, all NaNs are one, NULL is one value.

use std::ops::Range;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal128Type, Float32Type, Float64Type, Int8Type,
    Int16Type, Int32Type, Int64Type, IntervalDayTime, IntervalDayTimeType, IntervalMonthDayNano,
    IntervalMonthDayNanoType, IntervalUnit, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};

use crate::Result;
use crate::state::sortrows::SortRowCodec;

/// Number of key groups, and the most parallel instances a keyed operator can have.
pub const KEY_GROUPS: u16 = 256;

const NULL_HASH: u64 = 0x5bd1_e995_7a3f_9c41;
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// MurmurHash3's 64-bit finalizer: a fixed, well-mixed bijection.
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn combine(h: u64, v: u64) -> u64 {
    (h.rotate_left(23) ^ fmix(v)).wrapping_mul(SEED)
}

fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = SEED ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = combine(h, u64::from_le_bytes(w));
    }
    let mut w = [0u8; 8];
    w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    combine(h, u64::from_le_bytes(w))
}

fn canonical_f64(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else if v == 0.0 {
        0
    } else {
        v.to_bits()
    }
}

/// Mixes column `array` into the per-row hashes `hashes`.
fn hash_column(array: &ArrayRef, hashes: &mut [u64]) -> Result<()> {
    macro_rules! prim {
        ($t:ty, $conv:expr) => {{
            let a = array.as_primitive::<$t>();
            for (i, h) in hashes.iter_mut().enumerate() {
                let v = if a.is_null(i) {
                    NULL_HASH
                } else {
                    #[allow(clippy::redundant_closure_call)]
                    $conv(a.value(i))
                };
                *h = combine(*h, v);
            }
        }};
    }
    match array.data_type() {
        DataType::Null => hashes.iter_mut().for_each(|h| *h = combine(*h, NULL_HASH)),
        DataType::Boolean => {
            let a = array.as_boolean();
            for (i, h) in hashes.iter_mut().enumerate() {
                let v = if a.is_null(i) {
                    NULL_HASH
                } else {
                    a.value(i) as u64
                };
                *h = combine(*h, v);
            }
        }
        DataType::Int8 => prim!(Int8Type, |v: i8| v as u64),
        DataType::Int16 => prim!(Int16Type, |v: i16| v as u64),
        DataType::Int32 => prim!(Int32Type, |v: i32| v as u64),
        DataType::Int64 => prim!(Int64Type, |v: i64| v as u64),
        DataType::UInt8 => prim!(UInt8Type, |v: u8| v as u64),
        DataType::UInt16 => prim!(UInt16Type, |v: u16| v as u64),
        DataType::UInt32 => prim!(UInt32Type, |v: u32| v as u64),
        DataType::UInt64 => prim!(UInt64Type, |v: u64| v),
        DataType::Float32 => prim!(Float32Type, |v: f32| canonical_f64(v as f64)),
        DataType::Float64 => prim!(Float64Type, canonical_f64),
        DataType::Decimal128(_, _) => {
            prim!(Decimal128Type, |v: i128| (v as u64)
                ^ fmix((v >> 64) as u64))
        }
        DataType::Date32 => prim!(Date32Type, |v: i32| v as u64),
        DataType::Date64 => prim!(Date64Type, |v: i64| v as u64),
        DataType::Time32(TimeUnit::Second) => prim!(Time32SecondType, |v: i32| v as u64),
        DataType::Time32(_) => prim!(Time32MillisecondType, |v: i32| v as u64),
        DataType::Time64(TimeUnit::Microsecond) => prim!(Time64MicrosecondType, |v: i64| v as u64),
        DataType::Time64(_) => prim!(Time64NanosecondType, |v: i64| v as u64),
        DataType::Timestamp(TimeUnit::Second, _) => prim!(TimestampSecondType, |v: i64| v as u64),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            prim!(TimestampMillisecondType, |v: i64| v as u64)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            prim!(TimestampMicrosecondType, |v: i64| v as u64)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            prim!(TimestampNanosecondType, |v: i64| v as u64)
        }
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            prim!(IntervalMonthDayNanoType, |v: IntervalMonthDayNano| {
                fmix(v.months as u64) ^ fmix(v.days as u64).rotate_left(17) ^ v.nanoseconds as u64
            })
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            prim!(IntervalDayTimeType, |v: IntervalDayTime| {
                fmix(v.days as u64) ^ v.milliseconds as u64
            })
        }
        DataType::Utf8 => bytes_column(
            array
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(str::as_bytes)),
            hashes,
        ),
        DataType::LargeUtf8 => bytes_column(
            array
                .as_string::<i64>()
                .iter()
                .map(|v| v.map(str::as_bytes)),
            hashes,
        ),
        DataType::Utf8View => bytes_column(
            array.as_string_view().iter().map(|v| v.map(str::as_bytes)),
            hashes,
        ),
        DataType::Binary => bytes_column(array.as_binary::<i32>().iter(), hashes),
        DataType::LargeBinary => bytes_column(array.as_binary::<i64>().iter(), hashes),
        DataType::BinaryView => bytes_column(array.as_binary_view().iter(), hashes),
        // Nested and rare types: hash their sorted-row encoding (ours, so stable).
        other => {
            let codec = SortRowCodec::ascending(std::slice::from_ref(other))?;
            let rows = codec.convert_columns(&[ArrayRef::clone(array)])?;
            for (i, h) in hashes.iter_mut().enumerate() {
                *h = combine(*h, hash_bytes(rows.row(i)));
            }
        }
    }
    Ok(())
}

fn bytes_column<'a>(values: impl Iterator<Item = Option<&'a [u8]>>, hashes: &mut [u64]) {
    for (v, h) in values.zip(hashes.iter_mut()) {
        *h = combine(*h, v.map_or(NULL_HASH, hash_bytes));
    }
}

/// The key group of every row whose key is `columns` (one array per key column, equal lengths).
/// Without key columns every row is in key group 0.
pub fn key_groups(columns: &[ArrayRef], rows: usize, out: &mut Vec<u16>) -> Result<()> {
    out.clear();
    if columns.is_empty() {
        out.resize(rows, 0);
        return Ok(());
    }
    let mut hashes = vec![SEED; rows];
    for c in columns {
        hash_column(c, &mut hashes)?;
    }
    out.extend(hashes.iter().map(|&h| of_hash(h)));
    Ok(())
}

fn of_hash(h: u64) -> u16 {
    (((fmix(h) >> 32) * u64::from(KEY_GROUPS)) >> 32) as u16
}

/// The instance (of `parallelism`) that owns key group `kg`.
pub fn instance_of(kg: u16, parallelism: usize) -> usize {
    usize::from(kg) * parallelism / usize::from(KEY_GROUPS)
}

/// The key groups instance `index` of `parallelism` owns.
pub fn range_of(index: usize, parallelism: usize) -> Range<u16> {
    let groups = usize::from(KEY_GROUPS);
    let start = (index * groups).div_ceil(parallelism);
    let end = ((index + 1) * groups).div_ceil(parallelism);
    start.min(groups) as u16..end.min(groups) as u16
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};

    use super::*;

    #[test]
    fn ranges_partition_the_groups_as_instance_of_says() {
        for p in [1, 2, 3, 7, 64, 256] {
            let mut next = 0u16;
            for i in 0..p {
                let r = range_of(i, p);
                assert_eq!(r.start, next, "p={p} i={i}");
                for kg in r.clone() {
                    assert_eq!(instance_of(kg, p), i, "p={p} kg={kg}");
                }
                next = r.end;
            }
            assert_eq!(next, KEY_GROUPS);
        }
    }

    #[test]
    fn hash_is_fixed_and_canonical() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(1)]));
        let mut kgs = Vec::new();
        key_groups(&[ints], 4, &mut kgs).unwrap();
        assert_eq!(kgs[0], kgs[3]);
        // Part of stored keys: a change here breaks existing state.
        assert_eq!(kgs, vec![58, 221, 184, 58]);

        let floats: ArrayRef = Arc::new(Float64Array::from(vec![0.0, -0.0, f64::NAN, -f64::NAN]));
        key_groups(&[floats], 4, &mut kgs).unwrap();
        assert_eq!(kgs[0], kgs[1]);
        assert_eq!(kgs[2], kgs[3]);

        let a: ArrayRef = Arc::new(StringArray::from(vec!["ab", "abcdefghij", "ab"]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![7, 7, 8]));
        key_groups(&[a, b], 3, &mut kgs).unwrap();
        assert_ne!((kgs[0], kgs[1]), (kgs[2], kgs[2]));
    }
}
