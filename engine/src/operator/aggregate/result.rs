//! Results of one aggregate: the value of each touched group before and after a batch, and the
//! output column built from them.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, ListArray,
    StringArray, UInt32Array,
};
use datafusion::arrow::buffer::{NullBuffer, OffsetBuffer};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::arrow::error::ArrowError;

use super::accumulator::{Agg, BoolCount, ExactSum, State, put_fixed_row};
use super::{AggFunc, Codec, internal};
use crate::{EngineError, Result};

/// The array a result column is first built as, before the cast to the output type.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Out {
    Int64,
    Decimal(i8),
    Float64,
    Bool,
    /// Decoded from the value codec: the input's own type.
    Decoded(DataType),
    /// Text built in the arena (STRING_AGG).
    Text,
    /// ARRAY_AGG's arrays of items of this field: the arena holds each group's multiset entries
    /// (see [`Agg::results`]), decoded when the column is built.
    List(FieldRef),
    /// A recomputed aggregate's result of this type, as its row encoding in the arena.
    Recomputed(DataType),
}

impl Out {
    pub(super) fn data_type(&self) -> DataType {
        match self {
            Out::Int64 => DataType::Int64,
            Out::Decimal(s) => DataType::Decimal128(38, *s),
            Out::Float64 => DataType::Float64,
            Out::Bool => DataType::Boolean,
            Out::Decoded(t) => t.clone(),
            Out::Text => DataType::Utf8,
            Out::List(item) => DataType::List(Arc::clone(item)),
            Out::Recomputed(t) => t.clone(),
        }
    }
}

/// One aggregate's result for one group; floats as bits so that an unchanged NaN compares equal.
/// `Fixed` is a MIN or MAX as its multiset key, `Bytes(start, end)` one as a range of the batch's
/// arena (see [`Agg::results`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Value {
    Null,
    Int(i128),
    Float(u64),
    Bool(bool),
    Fixed(u128),
    Bytes(usize, usize),
}

impl Value {
    /// Equality of results, comparing `Bytes` by content.
    pub(super) fn same(&self, other: &Value, arena: &[u8]) -> bool {
        match (self, other) {
            (Value::Bytes(a, b), Value::Bytes(c, d)) => arena.get(*a..*b) == arena.get(*c..*d),
            _ => self == other,
        }
    }
}

/// Appends `f(t, ids[t])` for every `t`, or NULL where `keep[t]` is false.
fn fill(
    ids: &[u32],
    keep: &[bool],
    out: &mut Vec<Value>,
    mut f: impl FnMut(usize, usize) -> Value,
) {
    out.extend(ids.iter().zip(keep).enumerate().map(|(t, (&id, &keep))| {
        if keep { f(t, id as usize) } else { Value::Null }
    }));
}

impl Agg {
    /// Appends the result of every group `ids[t]` (with `rows[t]` rows) to `out`, or NULL where
    /// `keep[t]` is false. MIN and MAX over `Bytes` copy their value into `arena`.
    pub(super) fn results(
        &self,
        ids: &[u32],
        rows: &[i64],
        keep: &[bool],
        out: &mut Vec<Value>,
        arena: &mut Vec<u8>,
    ) -> Result<()> {
        // One loop per kind of state, each without a fallible or dispatching step per group.
        let float = |v: Option<f64>| v.map_or(Value::Null, |v| Value::Float(v.to_bits()));
        match (self.func, &self.state) {
            (AggFunc::CountStar, _) => fill(ids, keep, out, |t, _| Value::Int(rows[t].into())),
            (AggFunc::Count, State::Count(c)) => {
                fill(ids, keep, out, |_, id| Value::Int(c[id].into()))
            }
            (AggFunc::Sum, State::Exact { sums, .. }) => {
                fill(ids, keep, out, |_, id| match sums[id] {
                    ExactSum { n: 0, .. } => Value::Null,
                    ExactSum { sum, .. } => Value::Int(sum),
                })
            }
            (AggFunc::Avg, State::Exact { scale, sums }) => {
                for (&id, &keep) in ids.iter().zip(keep) {
                    let ExactSum { sum, n } = sums[id as usize];
                    out.push(match &self.out {
                        _ if !keep || n == 0 => Value::Null,
                        Out::Decimal(out_scale) => {
                            Value::Int(decimal_avg(sum, *scale, *out_scale, n)?)
                        }
                        _ => float(Some(sum as f64 / 10f64.powi((*scale).into()) / n as f64)),
                    });
                }
            }
            (AggFunc::Sum, State::Float(f)) => fill(ids, keep, out, |_, id| float(f[id].total())),
            (AggFunc::Avg, State::Float(f)) => fill(ids, keep, out, |_, id| {
                float(f[id].total().map(|t| t / f[id].n as f64))
            }),
            (func, State::Fixed { sets, .. }) => fill(ids, keep, out, |_, id| {
                let pick = match func {
                    AggFunc::Min | AggFunc::FirstValue => sets[id].keys().next(),
                    AggFunc::Max | AggFunc::LastValue => sets[id].keys().next_back(),
                    _ => return Value::Int(sets[id].len() as i128),
                };
                pick.map_or(Value::Null, |&k| Value::Fixed(k))
            }),
            (AggFunc::StringAgg, State::Bytes(sets)) => {
                let codec = self
                    .values
                    .as_ref()
                    .ok_or_else(|| internal("string_agg without a codec"))?;
                for (&id, &keep) in ids.iter().zip(keep) {
                    let set = &sets[id as usize];
                    if !keep || set.is_empty() {
                        out.push(Value::Null);
                        continue;
                    }
                    let decoded = codec.rows.convert_rows(set.keys().map(|k| &k[..]))?;
                    // The keys are the order columns, then the value.
                    let value = decoded
                        .last()
                        .ok_or_else(|| internal("string_agg decoded no column"))?;
                    let texts = cast(value, &DataType::Utf8)?;
                    let texts = texts.as_string::<i32>();
                    let start = arena.len();
                    for (i, (_, &count)) in set.iter().enumerate() {
                        for _ in 0..self.times(count) {
                            if arena.len() > start {
                                arena.extend_from_slice(self.delimiter.as_bytes());
                            }
                            arena.extend_from_slice(texts.value(i).as_bytes());
                        }
                    }
                    out.push(Value::Bytes(start, arena.len()));
                }
            }
            (AggFunc::ArrayAgg, State::Bytes(sets)) => fill(ids, keep, out, |_, id| {
                let set = &sets[id];
                if set.is_empty() {
                    return Value::Null;
                }
                // Each entry: its key's length, the key, how many times the value is there.
                let start = arena.len();
                for (key, &count) in set {
                    arena.extend_from_slice(&(key.len() as u32).to_le_bytes());
                    arena.extend_from_slice(key);
                    arena.extend_from_slice(&(self.times(count) as u32).to_le_bytes());
                }
                Value::Bytes(start, arena.len())
            }),
            (AggFunc::Recomputed, State::Bytes(sets)) => {
                for (&id, &keep) in ids.iter().zip(keep) {
                    let set = &sets[id as usize];
                    // A group without values gets the accumulator's answer for none (a
                    // count's 0).
                    out.push(match keep {
                        true => self.recomputed(set, arena)?,
                        false => Value::Null,
                    });
                }
            }
            (func, State::Bytes(sets)) => fill(ids, keep, out, |_, id| {
                let pick = match func {
                    AggFunc::Min | AggFunc::FirstValue => sets[id].keys().next(),
                    AggFunc::Max | AggFunc::LastValue => sets[id].keys().next_back(),
                    _ => return Value::Int(sets[id].len() as i128),
                };
                pick.map_or(Value::Null, |k| {
                    let start = arena.len();
                    arena.extend_from_slice(k);
                    Value::Bytes(start, arena.len())
                })
            }),
            (func, State::Bool(counts)) => fill(ids, keep, out, |_, id| match counts[id] {
                BoolCount {
                    trues: 0,
                    falses: 0,
                } => Value::Null,
                BoolCount { falses, .. } if func == AggFunc::BoolAnd => Value::Bool(falses == 0),
                BoolCount { trues, .. } => Value::Bool(trues > 0),
            }),
            (func, state) => return Err(internal(format!("{func:?} cannot read {state:?}"))),
        }
        Ok(())
    }

    /// Builds the result column (before the cast to the output type) from one value per row.
    pub(super) fn build(
        &self,
        values: impl Iterator<Item = Value>,
        arena: &[u8],
    ) -> Result<ArrayRef> {
        let int = |v: Value| match v {
            Value::Int(i) => Some(i),
            _ => None,
        };
        Ok(match &self.out {
            Out::Int64 => Arc::new(
                values
                    .map(|v| {
                        int(v)
                            .map(|i| i64::try_from(i).map_err(|_| internal("count overflows")))
                            .transpose()
                    })
                    .collect::<Result<Int64Array>>()?,
            ),
            Out::Decimal(s) => {
                let array = values
                    .map(int)
                    .collect::<Decimal128Array>()
                    .with_precision_and_scale(38, *s)?;
                // A sum past 38 digits (within `i128`): Postgres' numeric holds it, ours cannot.
                array
                    .validate_decimal_precision(38)
                    .map_err(|_| super::accumulator::overflow())?;
                Arc::new(array)
            }
            Out::Float64 => Arc::new(
                values
                    .map(|v| match v {
                        Value::Float(bits) => Some(f64::from_bits(bits)),
                        _ => None,
                    })
                    .collect::<Float64Array>(),
            ),
            Out::Bool => Arc::new(
                values
                    .map(|v| match v {
                        Value::Bool(b) => Some(b),
                        _ => None,
                    })
                    .collect::<BooleanArray>(),
            ),
            Out::Decoded(_) => self.decode(values, arena)?,
            Out::Recomputed(_) => {
                let (_, codec) = self
                    .recompute
                    .as_ref()
                    .ok_or_else(|| internal("a recomputed aggregate without its codec"))?;
                decode_rows(codec, 0, values, arena)?
            }
            Out::List(item) => self.arrays(values, arena, item)?,
            Out::Text => Arc::new(
                values
                    .map(|v| match v {
                        Value::Bytes(from, to) => arena
                            .get(from..to)
                            .map(|b| String::from_utf8_lossy(b).into_owned()),
                        _ => None,
                    })
                    .collect::<StringArray>(),
            ),
        })
    }

    /// How many times a value held `count` times appears in the result.
    fn times(&self, count: i64) -> usize {
        match count {
            ..=0 => 0,
            _ if self.distinct => 1,
            n => n as usize,
        }
    }

    /// ARRAY_AGG results: the arrays whose entries [`Agg::results`] put in the arena.
    fn arrays(
        &self,
        values: impl Iterator<Item = Value>,
        arena: &[u8],
        item: &FieldRef,
    ) -> Result<ArrayRef> {
        let codec = self
            .values
            .as_ref()
            .ok_or_else(|| internal("array_agg without a codec"))?;
        let corrupt = || internal("array_agg result outside the arena");
        let mut keys = Vec::new();
        let mut offsets = vec![0i32];
        let mut valid = Vec::new();
        for v in values {
            if let Value::Bytes(from, to) = v {
                let mut entries = arena.get(from..to).ok_or_else(corrupt)?;
                while let Some((len, rest)) = entries.split_first_chunk::<4>() {
                    let len = u32::from_le_bytes(*len) as usize;
                    let key = rest.get(..len).ok_or_else(corrupt)?;
                    let (count, rest) = rest[len..].split_first_chunk::<4>().ok_or_else(corrupt)?;
                    let count = u32::from_le_bytes(*count) as usize;
                    keys.extend(std::iter::repeat_n(key, count));
                    entries = rest;
                }
            }
            valid.push(matches!(v, Value::Bytes(..)));
            let n = i32::try_from(keys.len()).map_err(|_| internal("array_agg too large"))?;
            offsets.push(n);
        }
        let decoded = codec.rows.convert_rows(keys.iter().copied())?;
        // The keys are the order columns, then the value.
        let items = decoded
            .last()
            .ok_or_else(|| internal("array_agg decoded no column"))?;
        let items = cast(items, item.data_type())?;
        Ok(Arc::new(ListArray::try_new(
            Arc::clone(item),
            OffsetBuffer::new(offsets.into()),
            items,
            Some(NullBuffer::from(valid)),
        )?))
    }

    /// A recomputed aggregate's result over the multiset `set`: a fresh accumulator fed every
    /// value as many times as the group holds it, its result's row encoding put in `arena`.
    fn recomputed(&self, set: &BTreeMap<Box<[u8]>, i64>, arena: &mut Vec<u8>) -> Result<Value> {
        let (Some((factory, out)), Some(codec)) = (&self.recompute, &self.values) else {
            return Err(internal("a recomputed aggregate without its accumulator"));
        };
        let decoded = codec.rows.convert_rows(set.keys().map(|k| &k[..]))?;
        let distinct = decoded
            .first()
            .ok_or_else(|| internal("a recomputed aggregate decoded no column"))?;
        let repeats: UInt32Array = set
            .values()
            .enumerate()
            .flat_map(|(i, &n)| std::iter::repeat_n(i as u32, n.max(0) as usize))
            .collect();
        let values = take(distinct, &repeats, None)?;
        // A failure here comes from the values (an overflow, say), not from Rivulet.
        let data = |e: datafusion::error::DataFusionError| EngineError::Data {
            operator: format!("HashAggregate {}", factory.name),
            message: e.to_string(),
        };
        let mut accumulator = (factory.make)().map_err(data)?;
        accumulator.update_batch(&[values]).map_err(data)?;
        let result = accumulator.evaluate().map_err(data)?;
        let result = result.to_array().map_err(data)?;
        if result.is_null(0) {
            return Ok(Value::Null);
        }
        let rows = out.rows.convert_columns(&[result])?;
        let start = arena.len();
        arena.extend_from_slice(rows.row(0));
        Ok(Value::Bytes(start, arena.len()))
    }

    /// MIN or MAX results decoded from sorted rows into the input's type.
    fn decode(&self, values: impl Iterator<Item = Value>, arena: &[u8]) -> Result<ArrayRef> {
        let codec = self
            .values
            .as_ref()
            .ok_or_else(|| internal("min/max without a codec"))?;
        let width = match self.state {
            State::Fixed { width, .. } => width,
            _ => 0,
        };
        decode_rows(codec, width, values, arena)
    }
}

/// Results that are row encodings of `codec`'s one column (`Fixed` ones `width` bytes wide, or
/// in the arena) decoded into a column.
fn decode_rows(
    codec: &Codec,
    width: usize,
    values: impl Iterator<Item = Value>,
    arena: &[u8],
) -> Result<ArrayRef> {
    let null = codec
        .null
        .as_ref()
        .ok_or_else(|| internal("a decoded result without a null row"))?;
    let mut buf = Vec::new();
    let mut ends = Vec::new();
    for v in values {
        match v {
            Value::Fixed(k) => put_fixed_row(&mut buf, k, width),
            Value::Bytes(from, to) => buf.extend_from_slice(
                arena
                    .get(from..to)
                    .ok_or_else(|| internal("result outside the arena"))?,
            ),
            _ => buf.extend_from_slice(null),
        }
        ends.push(buf.len());
    }
    let rows = ends.iter().scan(0, |start, &end| {
        let row = buf.get(*start..end).unwrap_or_default();
        *start = end;
        Some(row)
    });
    codec
        .rows
        .convert_rows(rows)?
        .pop()
        .ok_or_else(|| internal("decoded no column"))
}

/// `sum / n` rescaled from `scale` to `out_scale`, truncated toward zero as DataFusion's decimal
/// `avg` does, so a view's average equals the same query's batch answer (Postgres rounds the last
/// decimal).
fn decimal_avg(sum: i128, scale: i8, out_scale: i8, n: i64) -> Result<i128> {
    let shift = i32::from(out_scale) - i32::from(scale);
    let pow = 10i128.checked_pow(shift.unsigned_abs());
    let (num, den) = match pow {
        Some(p) if shift >= 0 => (sum.checked_mul(p), Some(i128::from(n))),
        Some(p) => (Some(sum), p.checked_mul(n.into())),
        None => (None, None),
    };
    let (Some(num), Some(den)) = (num, den) else {
        return Err(ArrowError::ComputeError("numeric overflow in avg".into()).into());
    };
    Ok(num / den)
}
