//! One aggregate: how it reads its input and the state it keeps for every group (its results
//! and output column are in [`super::result`]).
//!
//! State is kept column-wise, one vector per aggregate indexed by the group's slot (see
//! [`super::groups`]), so that a batch updates it with one tight loop per aggregate and no
//! per-row dispatch. A freed slot is reset to the empty state, so a reused slot starts empty.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray, new_null_array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, SchemaRef, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use datafusion::arrow::compute::SortOptions;

use super::result::Out;
use super::{AccumulatorFactory, AggFunc, AggSpec, Codec, internal};
use crate::operator::sorted::describe_key;
use crate::{EngineError, Result};

/// An integer or decimal sum and the number of values in it. A sum that leaves `i128` fails the
/// job ([`overflow`]); one that leaves the 38 digits of its decimal type fails it when it is a
/// result ([`Agg::build`]), so a retraction may still bring it back in between.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct ExactSum {
    pub sum: i128,
    pub n: i64,
}

/// A retractable float sum: non-finite values are counted, not added.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct FloatSum {
    pub finite: f64,
    pub n: i64,
    pub nan: i64,
    pub pos_inf: i64,
    pub neg_inf: i64,
}

impl FloatSum {
    fn add(&mut self, v: f64, sign: i64) {
        self.n += sign;
        if v.is_nan() {
            self.nan += sign;
        } else if v == f64::INFINITY {
            self.pos_inf += sign;
        } else if v == f64::NEG_INFINITY {
            self.neg_inf += sign;
        } else {
            self.finite += sign as f64 * v;
        }
        // Forget the rounding error left by retractions once no finite value is left.
        if self.n - self.nan - self.pos_inf - self.neg_inf == 0 {
            self.finite = 0.0;
        }
    }

    pub(super) fn total(&self) -> Option<f64> {
        Some(match () {
            _ if self.n == 0 => return None,
            _ if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) => f64::NAN,
            _ if self.pos_inf > 0 => f64::INFINITY,
            _ if self.neg_inf > 0 => f64::NEG_INFINITY,
            _ => self.finite,
        })
    }
}

/// Every group's state of one aggregate, indexed by slot.
#[derive(Debug)]
pub(super) enum State {
    /// `count(*)`: the group's row count is all it needs.
    Rows,
    Count(Vec<i64>),
    /// Integer or decimal sum; `scale` is the input's (0 for integers).
    Exact {
        scale: i8,
        sums: Vec<ExactSum>,
    },
    /// Float sum; the input is read as `Float64`.
    Float(Vec<FloatSum>),
    /// MIN, MAX, COUNT(DISTINCT) over a type whose row encoding is `1` then `width` (at most 16)
    /// bytes: the multiset holds those bytes as one big-endian number, which orders like them.
    Fixed {
        width: usize,
        sets: Vec<BTreeMap<u128, i64>>,
    },
    /// MIN, MAX, COUNT(DISTINCT) over any other type, STRING_AGG and ARRAY_AGG: a multiset of
    /// row encodings (for the last two, of the order columns then the value, so the multiset's
    /// order is theirs).
    Bytes(Vec<BTreeMap<Box<[u8]>, i64>>),
    Bool(Vec<BoolCount>),
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct BoolCount {
    pub trues: i64,
    pub falses: i64,
}

/// One output aggregate column and its state.
pub(super) struct Agg {
    pub(super) func: AggFunc,
    pub(super) input: Option<usize>,
    /// Columns that order STRING_AGG's and ARRAY_AGG's values ([`AggSpec::order`]).
    order: Vec<(usize, SortOptions)>,
    /// Rows where this column is not true are skipped ([`AggSpec::filter`]).
    filter: Option<usize>,
    /// Each value counts once ([`AggSpec::distinct`]).
    pub(super) distinct: bool,
    /// [`AggFunc::Recomputed`]'s accumulator and the codec of its results.
    pub(super) recompute: Option<(AccumulatorFactory, Codec)>,
    pub(super) out: Out,
    /// For MIN, MAX and COUNT(DISTINCT): encodes values into (and decodes from) sorted rows.
    pub(super) values: Option<Codec>,
    pub(super) state: State,
    /// STRING_AGG's separator.
    pub(super) delimiter: String,
    /// MIN or MAX over an append-only input: a value that cannot become the extreme is not
    /// kept, so the multiset holds one value (a retraction is an error).
    pub(super) extreme_only: bool,
}

/// Adds `value` to `set`, an append-only MIN's (`min`) or MAX's multiset, keeping only the
/// extreme.
fn keep_extreme<K: Ord>(set: &mut BTreeMap<K, i64>, value: K, min: bool) {
    let extreme = if min {
        set.first_key_value()
    } else {
        set.last_key_value()
    };
    let better = extreme.is_none_or(|(k, _)| if min { value < *k } else { value > *k });
    if better {
        set.clear();
        set.insert(value, 1);
    }
}

/// Calls `f` with the index of every valid row of `0..n`.
fn each_valid(nulls: Option<&NullBuffer>, n: usize, mut f: impl FnMut(usize)) {
    match nulls {
        Some(nulls) if nulls.null_count() > 0 => nulls.valid_indices().for_each(f),
        _ => (0..n).for_each(&mut f),
    }
}

/// The error of a sum beyond what NUMERIC holds.
pub(super) fn overflow() -> EngineError {
    EngineError::NumericOverflow
}

/// `a + b`, or [`overflow`] where it leaves `i128`.
fn add_sums(a: ExactSum, b: ExactSum) -> Result<ExactSum> {
    Ok(ExactSum {
        sum: a.sum.checked_add(b.sum).ok_or_else(overflow)?,
        n: a.n + b.n,
    })
}

/// Adds the rows' values to their groups' sums; [`overflow`] where a sum leaves `i128`.
fn add_exact<T>(
    sums: &mut [ExactSum],
    values: &PrimitiveArray<T>,
    nulls: Option<&NullBuffer>,
    gids: &[u32],
    signs: &[i64],
) -> Result<()>
where
    T: ArrowPrimitiveType,
    T::Native: Into<i128>,
{
    let values = values.values();
    let mut overflowed = false;
    each_valid(nulls, gids.len(), |i| {
        let acc = &mut sums[gids[i] as usize];
        let v: i128 = values[i].into();
        let sum = if signs[i] > 0 {
            acc.sum.checked_add(v)
        } else {
            acc.sum.checked_sub(v)
        };
        match sum {
            Some(sum) => acc.sum = sum,
            None => overflowed = true,
        }
        acc.n += signs[i];
    });
    if overflowed {
        return Err(overflow());
    }
    Ok(())
}

/// The multiset key of a fixed-width row encoding: the bytes after the null marker, big-endian.
pub(super) fn fixed_key(row: &[u8]) -> u128 {
    let value = row.get(1..).unwrap_or_default();
    if let Ok(b) = <[u8; 8]>::try_from(value) {
        u64::from_be_bytes(b).into()
    } else if let Ok(b) = <[u8; 16]>::try_from(value) {
        u128::from_be_bytes(b)
    } else {
        value.iter().fold(0, |k, &b| (k << 8) | u128::from(b))
    }
}

/// Appends the row encoding of the non-null value with multiset key `key`.
pub(super) fn put_fixed_row(out: &mut Vec<u8>, key: u128, width: usize) {
    out.push(1);
    out.extend_from_slice(&key.to_be_bytes()[16 - width..]);
}

/// Adds `sign` to `value`'s count; true if the count is now negative.
fn count_in<K: Ord>(set: &mut BTreeMap<K, i64>, value: K, sign: i64) -> bool {
    match set.entry(value) {
        Entry::Vacant(e) => {
            e.insert(sign);
            sign < 0
        }
        Entry::Occupied(mut e) => {
            *e.get_mut() += sign;
            let count = *e.get();
            if count == 0 {
                e.remove();
            }
            count < 0
        }
    }
}

impl Agg {
    pub(super) fn new(spec: &AggSpec, input: &SchemaRef, out_type: &DataType) -> Result<Self> {
        let in_type = match (spec.func, spec.input) {
            (AggFunc::CountStar, None) => None,
            (AggFunc::CountStar, Some(_)) => {
                return Err(internal("count(*) takes no input column"));
            }
            (func, None) => return Err(internal(format!("{func:?} needs an input column"))),
            (_, Some(i)) => Some(
                input
                    .fields()
                    .get(i)
                    .ok_or_else(|| internal(format!("aggregate input column {i} does not exist")))?
                    .data_type()
                    .clone(),
            ),
        };
        let mut values = None;
        let mut recompute = None;
        let (state, out) = match (spec.func, &in_type) {
            (AggFunc::CountStar, _) => (State::Rows, Out::Int64),
            (AggFunc::Count, _) => (State::Count(Vec::new()), Out::Int64),
            (AggFunc::CountDistinct | AggFunc::Min | AggFunc::Max, Some(t)) => {
                let codec = Codec::new(vec![t.clone()], true)?;
                let null_len = codec.null.as_ref().map_or(0, Vec::len);
                let fixed = t.is_primitive() || *t == DataType::Boolean;
                let state = if fixed && (2..=17).contains(&null_len) {
                    State::Fixed {
                        width: null_len - 1,
                        sets: Vec::new(),
                    }
                } else {
                    State::Bytes(Vec::new())
                };
                values = Some(codec);
                let out = match spec.func {
                    AggFunc::CountDistinct => Out::Int64,
                    _ => Out::Decoded(t.clone()),
                };
                (state, out)
            }
            (
                AggFunc::StringAgg,
                Some(t @ (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)),
            ) => {
                values = Some(ordered_values(spec, input, t, false)?);
                (State::Bytes(Vec::new()), Out::Text)
            }
            (AggFunc::Recomputed, Some(t)) => {
                let factory = spec
                    .recompute
                    .clone()
                    .ok_or_else(|| internal("a recomputed aggregate without its accumulator"))?;
                values = Some(Codec::new(vec![t.clone()], false)?);
                recompute = Some((factory, Codec::new(vec![out_type.clone()], true)?));
                (State::Bytes(Vec::new()), Out::Recomputed(out_type.clone()))
            }
            (AggFunc::FirstValue | AggFunc::LastValue, Some(t)) => {
                values = Some(ordered_values(spec, input, t, true)?);
                (State::Bytes(Vec::new()), Out::Decoded(t.clone()))
            }
            (AggFunc::ArrayAgg, Some(t)) => {
                values = Some(ordered_values(spec, input, t, false)?);
                let item = match out_type {
                    DataType::List(item) => Arc::clone(item),
                    _ => Arc::new(Field::new_list_field(t.clone(), true)),
                };
                (State::Bytes(Vec::new()), Out::List(item))
            }
            (AggFunc::BoolAnd | AggFunc::BoolOr, Some(DataType::Boolean)) => {
                (State::Bool(Vec::new()), Out::Bool)
            }
            (AggFunc::Sum | AggFunc::Avg, Some(t)) => {
                let state = match t {
                    t if t.is_integer() => State::Exact {
                        scale: 0,
                        sums: Vec::new(),
                    },
                    DataType::Decimal128(_, s) => State::Exact {
                        scale: *s,
                        sums: Vec::new(),
                    },
                    t if t.is_floating() => State::Float(Vec::new()),
                    _ => return Err(internal(format!("{:?} of {t} is not supported", spec.func))),
                };
                let out = match (spec.func, &state, out_type) {
                    (AggFunc::Sum, State::Exact { scale, .. }, _) => Out::Decimal(*scale),
                    (AggFunc::Avg, State::Exact { .. }, DataType::Decimal128(_, s)) => {
                        Out::Decimal(*s)
                    }
                    _ => Out::Float64,
                };
                (state, out)
            }
            (func, t) => return Err(internal(format!("{func:?} of {t:?} is not supported"))),
        };
        if !can_cast_types(&out.data_type(), out_type) {
            return Err(internal(format!(
                "{:?} cannot produce {out_type} (computed as {})",
                spec.func,
                out.data_type()
            )));
        }
        Ok(Self {
            func: spec.func,
            input: spec.input,
            out,
            values,
            state,
            delimiter: spec.delimiter.clone().unwrap_or_default(),
            extreme_only: false,
            order: spec.order.clone(),
            filter: spec.filter,
            distinct: spec.distinct,
            recompute,
        })
    }

    /// `Sum(#2)`, `ArrayAgg(#2 order by [#3 DESC] filter #4 distinct)`, for EXPLAIN.
    pub(super) fn describe(&self) -> String {
        let Some(i) = self.input else {
            return format!("{:?}", self.func);
        };
        let mut s = match &self.recompute {
            Some((factory, _)) => format!("recomputed {}(#{i}", factory.name),
            None => format!("{:?}(#{i}", self.func),
        };
        if !self.order.is_empty() {
            let keys: Vec<String> = self
                .order
                .iter()
                .map(|(c, o)| describe_key(*c, o))
                .collect();
            s.push_str(&format!(" order by [{}]", keys.join(", ")));
        }
        if let Some(f) = self.filter {
            s.push_str(&format!(" filter #{f}"));
        }
        if self.distinct {
            s.push_str(" distinct");
        }
        s.push(')');
        s
    }

    /// Makes room for slots `0..len`, each new one empty.
    pub(super) fn grow(&mut self, len: usize) {
        match &mut self.state {
            State::Rows => {}
            State::Count(v) => v.resize(len.max(v.len()), 0),
            State::Exact { sums, .. } => sums.resize(len.max(sums.len()), ExactSum::default()),
            State::Float(v) => v.resize(len.max(v.len()), FloatSum::default()),
            State::Fixed { sets, .. } => sets.resize_with(len.max(sets.len()), BTreeMap::new),
            State::Bytes(v) => v.resize_with(len.max(v.len()), BTreeMap::new),
            State::Bool(v) => v.resize(len.max(v.len()), BoolCount::default()),
        }
    }

    /// Drops every slot's state.
    pub(super) fn clear(&mut self) {
        match &mut self.state {
            State::Rows => {}
            State::Count(v) => v.clear(),
            State::Exact { sums, .. } => sums.clear(),
            State::Float(v) => v.clear(),
            State::Fixed { sets, .. } => sets.clear(),
            State::Bytes(v) => v.clear(),
            State::Bool(v) => v.clear(),
        }
    }

    /// Resets slot `id` to the empty state.
    pub(super) fn reset(&mut self, id: u32) {
        let id = id as usize;
        match &mut self.state {
            State::Rows => {}
            State::Count(v) => v.get_mut(id).into_iter().for_each(|c| *c = 0),
            State::Exact { sums, .. } => sums
                .get_mut(id)
                .into_iter()
                .for_each(|c| *c = <_>::default()),
            State::Float(v) => v.get_mut(id).into_iter().for_each(|c| *c = <_>::default()),
            State::Fixed { sets, .. } => sets.get_mut(id).into_iter().for_each(BTreeMap::clear),
            State::Bytes(v) => v.get_mut(id).into_iter().for_each(BTreeMap::clear),
            State::Bool(v) => v.get_mut(id).into_iter().for_each(|c| *c = <_>::default()),
        }
    }

    /// Adds (`sign` 1) or retracts (-1) row `i`'s value to group `gids[i]`, for every row of
    /// the input `columns`; true if a multiset count went negative.
    pub(super) fn update(
        &mut self,
        columns: &[ArrayRef],
        gids: &[u32],
        signs: &[i64],
    ) -> Result<bool> {
        let Some(column) = self.input else {
            return Ok(false);
        };
        let column = input_column(columns, column)?;
        // ARRAY_AGG, FIRST_VALUE and LAST_VALUE keep NULLs; every other aggregate skips them. A
        // FILTER skips more.
        let nulls = match self.func {
            AggFunc::ArrayAgg | AggFunc::FirstValue | AggFunc::LastValue => None,
            _ => column.logical_nulls(),
        };
        let nulls = match self.filter {
            Some(f) => {
                let f = input_column(columns, f)?
                    .as_boolean_opt()
                    .ok_or_else(|| internal("an aggregate's FILTER is not boolean"))?;
                let mask = match f.nulls() {
                    Some(valid) => f.values() & valid.inner(),
                    None => f.values().clone(),
                };
                NullBuffer::union(nulls.as_ref(), Some(&NullBuffer::new(mask)))
            }
            None => nulls,
        };
        let nulls = nulls.as_ref();
        let n = gids.len();
        let mut negative = false;
        if self.extreme_only && signs.iter().any(|&s| s < 0) {
            return Err(internal(
                "MIN/MAX over an append-only input got a retraction",
            ));
        }
        match &mut self.state {
            State::Rows => {}
            State::Count(counts) => {
                each_valid(nulls, n, |i| counts[gids[i] as usize] += signs[i]);
            }
            State::Exact { scale, sums } => {
                macro_rules! exact {
                    ($t:ty) => {
                        add_exact(sums, column.as_primitive::<$t>(), nulls, gids, signs)?
                    };
                }
                match column.data_type() {
                    DataType::Int8 => exact!(Int8Type),
                    DataType::Int16 => exact!(Int16Type),
                    DataType::Int32 => exact!(Int32Type),
                    DataType::Int64 => exact!(Int64Type),
                    DataType::UInt8 => exact!(UInt8Type),
                    DataType::UInt16 => exact!(UInt16Type),
                    DataType::UInt32 => exact!(UInt32Type),
                    DataType::UInt64 => exact!(UInt64Type),
                    DataType::Decimal128(..) => exact!(Decimal128Type),
                    _ => {
                        let column = cast(column, &DataType::Decimal128(38, *scale))?;
                        let values = column.as_primitive::<Decimal128Type>();
                        add_exact(sums, values, nulls, gids, signs)?;
                    }
                }
            }
            State::Float(sums) => {
                let column = cast(column, &DataType::Float64)?;
                let values = column.as_primitive::<Float64Type>().values();
                each_valid(nulls, n, |i| {
                    sums[gids[i] as usize].add(values[i], signs[i]);
                });
            }
            State::Fixed { width, sets } => {
                let codec = self
                    .values
                    .as_ref()
                    .ok_or_else(|| internal("set aggregate without a codec"))?;
                let rows = codec.rows.convert_columns(&[canonical(column)])?;
                let mut misfit = false;
                let (extreme_only, min) = (self.extreme_only, self.func.keeps_first());
                each_valid(nulls, n, |i| {
                    let row = rows.row(i);
                    misfit |= row.len() != *width + 1;
                    let set = &mut sets[gids[i] as usize];
                    if extreme_only {
                        keep_extreme(set, fixed_key(row), min);
                    } else {
                        negative |= count_in(set, fixed_key(row), signs[i]);
                    }
                });
                if misfit {
                    return Err(internal("fixed-width value of another width"));
                }
            }
            State::Bytes(sets) => {
                let codec = self
                    .values
                    .as_ref()
                    .ok_or_else(|| internal("set aggregate without a codec"))?;
                let keys = self
                    .order
                    .iter()
                    .map(|&(c, _)| input_column(columns, c).map(canonical))
                    .chain([Ok(canonical(column))])
                    .collect::<Result<Vec<_>>>()?;
                let rows = codec.rows.convert_columns(&keys)?;
                let (extreme_only, min) = (self.extreme_only, self.func.keeps_first());
                each_valid(nulls, n, |i| {
                    let value = rows.row(i);
                    let set = &mut sets[gids[i] as usize];
                    if extreme_only {
                        // Compared by slice first: only a new extreme allocates.
                        let extreme = if min {
                            set.first_key_value()
                        } else {
                            set.last_key_value()
                        };
                        let better = extreme.is_none_or(|(k, _)| {
                            if min {
                                value < k.as_ref()
                            } else {
                                value > k.as_ref()
                            }
                        });
                        if better {
                            keep_extreme(set, value.into(), min);
                        }
                        return;
                    }
                    // Look up by slice first: a value already held costs no allocation.
                    let count = match set.get_mut(value) {
                        Some(count) => {
                            *count += signs[i];
                            *count
                        }
                        None => {
                            set.insert(value.into(), signs[i]);
                            signs[i]
                        }
                    };
                    if count == 0 {
                        set.remove(value);
                    }
                    negative |= count < 0;
                });
            }
            State::Bool(counts) => {
                let values = column.as_boolean();
                each_valid(nulls, n, |i| {
                    let c = &mut counts[gids[i] as usize];
                    *(if values.value(i) {
                        &mut c.trues
                    } else {
                        &mut c.falses
                    }) += signs[i];
                });
            }
        }
        Ok(negative)
    }

    /// Adds the state of slot `from` to slot `into` and empties `from` (two session windows that
    /// became one). Both slots must exist.
    pub(super) fn merge(&mut self, into: u32, from: u32) -> Result<()> {
        let (a, b) = (into as usize, from as usize);
        if a == b {
            return Ok(());
        }
        match &mut self.state {
            State::Rows => {}
            State::Count(v) => {
                let x = std::mem::take(&mut v[b]);
                v[a] += x;
            }
            State::Exact { sums, .. } => {
                let x = std::mem::take(&mut sums[b]);
                sums[a] = add_sums(sums[a], x)?;
            }
            State::Float(v) => {
                let x = std::mem::take(&mut v[b]);
                let acc = &mut v[a];
                acc.finite += x.finite;
                acc.n += x.n;
                acc.nan += x.nan;
                acc.pos_inf += x.pos_inf;
                acc.neg_inf += x.neg_inf;
            }
            State::Fixed { sets, .. } => {
                for (key, count) in std::mem::take(&mut sets[b]) {
                    count_in(&mut sets[a], key, count);
                }
            }
            State::Bytes(sets) => {
                for (value, count) in std::mem::take(&mut sets[b]) {
                    count_in(&mut sets[a], value, count);
                }
            }
            State::Bool(v) => {
                let x = std::mem::take(&mut v[b]);
                v[a].trues += x.trues;
                v[a].falses += x.falses;
            }
        }
        Ok(())
    }

    /// Adds the state of slot `from` to slot `into`, leaving `from` as it is (a hopping window
    /// assembled from its slices). Both slots must exist.
    pub(super) fn merge_copy(&mut self, into: u32, from: u32) -> Result<()> {
        let (a, b) = (into as usize, from as usize);
        if a == b {
            return Ok(());
        }
        match &mut self.state {
            State::Rows => {}
            State::Count(v) => v[a] += v[b],
            State::Exact { sums, .. } => sums[a] = add_sums(sums[a], sums[b])?,
            State::Float(v) => {
                let x = v[b];
                let acc = &mut v[a];
                acc.finite += x.finite;
                acc.n += x.n;
                acc.nan += x.nan;
                acc.pos_inf += x.pos_inf;
                acc.neg_inf += x.neg_inf;
            }
            State::Fixed { sets, .. } => {
                let from: Vec<(u128, i64)> = sets[b].iter().map(|(k, c)| (*k, *c)).collect();
                for (key, count) in from {
                    count_in(&mut sets[a], key, count);
                }
            }
            State::Bytes(sets) => {
                let from: Vec<(Box<[u8]>, i64)> =
                    sets[b].iter().map(|(k, c)| (k.clone(), *c)).collect();
                for (value, count) in from {
                    count_in(&mut sets[a], value, count);
                }
            }
            State::Bool(v) => {
                let x = v[b];
                v[a].trues += x.trues;
                v[a].falses += x.falses;
            }
        }
        Ok(())
    }

    /// True if slot `id` holds a negative multiset count.
    pub(super) fn negative(&self, id: u32) -> bool {
        let id = id as usize;
        match &self.state {
            State::Fixed { sets, .. } => sets.get(id).is_some_and(|s| s.values().any(|&c| c < 0)),
            State::Bytes(sets) => sets.get(id).is_some_and(|s| s.values().any(|&c| c < 0)),
            _ => false,
        }
    }
}

/// Input column `i`.
fn input_column(columns: &[ArrayRef], i: usize) -> Result<&ArrayRef> {
    columns
        .get(i)
        .ok_or_else(|| internal(format!("aggregate input column {i} does not exist")))
}

/// The multiset codec of STRING_AGG, ARRAY_AGG, FIRST_VALUE or LAST_VALUE over values of type
/// `t`: the order columns with their directions, then the value ascending, NULLs last; with
/// `with_null`, the row of all NULLs (a group without rows, decoded).
fn ordered_values(
    spec: &AggSpec,
    input: &SchemaRef,
    t: &DataType,
    with_null: bool,
) -> Result<Codec> {
    let mut fields = spec
        .order
        .iter()
        .map(|&(c, options)| {
            let field = input
                .fields()
                .get(c)
                .ok_or_else(|| internal(format!("order column {c} does not exist")))?;
            Ok((field.data_type().clone(), options))
        })
        .collect::<Result<Vec<_>>>()?;
    // Ascending with NULLs last, as Postgres orders by the value.
    let ascending = SortOptions {
        descending: false,
        nulls_first: false,
    };
    fields.push((t.clone(), ascending));
    let nulls: Vec<ArrayRef> = fields.iter().map(|(t, _)| new_null_array(t, 1)).collect();
    let mut codec = Codec::sorted(fields, None)?;
    if with_null {
        codec.null = Some(codec.rows.convert_columns(&nulls)?.row(0).to_vec());
    }
    Ok(codec)
}

/// Maps -0.0 to 0.0 and every NaN to one NaN, so that equal floats (in SQL) encode equally.
pub(super) fn canonical(array: &ArrayRef) -> ArrayRef {
    match array.data_type() {
        DataType::Float64 => Arc::new(array.as_primitive::<Float64Type>().unary::<_, Float64Type>(
            |v| {
                if v == 0.0 {
                    0.0
                } else if v.is_nan() {
                    f64::NAN
                } else {
                    v
                }
            },
        )),
        DataType::Float32 => Arc::new(array.as_primitive::<Float32Type>().unary::<_, Float32Type>(
            |v| {
                if v == 0.0 {
                    0.0
                } else if v.is_nan() {
                    f32::NAN
                } else {
                    v
                }
            },
        )),
        _ => Arc::clone(array),
    }
}
