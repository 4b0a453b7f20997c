//! Incremental `GROUP BY` over changelog batches, with retractions.
//!
//! `Insert` and `UpdateAfter` rows add to their group, `Delete` and `UpdateBefore` rows take away
//! from it. A group exists while it holds at least one row (NULLs included); NULL is a group key
//! like any other. Aggregates follow Postgres: NULL inputs are ignored, SUM/AVG/MIN/MAX over no
//! values are NULL, COUNT is 0. Without group columns (a global aggregate) there is always exactly
//! one row: [`Operator::start`] inserts it and later batches only ever update it.
//!
//! **Emission.** Each input batch yields at most one output batch: the net change of every group it
//! touched, in order of first touch. A new group is an `Insert`, a vanished group a `Delete` of its
//! old row, a changed one an `UpdateBefore`/`UpdateAfter` pair; a group whose result did not change
//! emits nothing. There is no watermark and nothing is late: every row counts, whenever it comes.
//!
//! **State.** Every group lives in memory, keyed by its Arrow row-format key (order preserving, so
//! it also decodes back into the output's key columns). MIN, MAX and COUNT(DISTINCT) keep a
//! multiset of row-format value encodings per group, so a retracted minimum falls back to the next
//! one. Integer and decimal sums are `i128` (wrapping, hence exact whenever the final sum fits);
//! float sums keep NaN and infinities as counts, so retracting them restores a finite sum. At a
//! checkpoint each group changed since the last one is written under `prefix ++ key` (or deleted
//! if gone); construction reads them all back. A failed [`Operator::process`] leaves the state
//! undefined: the job must restart from its last checkpoint.
//!
//! **Stored value**, integers as LEB128 varints (signed ones zigzag-encoded):
//!
//! ```text
//! group := FORMAT:u8 rows:ivar n_aggs:uvar acc*        (one acc per aggregate, in order)
//! acc   := count(*): nothing | count: n:ivar | int/decimal sum: sum:ivar n:ivar
//!        | float sum: finite:f64le n:ivar nan:ivar pos_inf:ivar neg_inf:ivar
//!        | min/max/distinct: len:uvar (bytes_len:uvar bytes count:ivar)* | bool: trues:ivar falses:ivar
//! ```
//!
//! The row format is Arrow's and not promised stable across Arrow releases: an Arrow upgrade that
//! changes it needs this state rebuilt from the source. Stored bytes are trusted to be ours.
//!
//! Floats are canonicalized before they are encoded (-0.0 becomes 0.0, every NaN one NaN), so they
//! group and count as distinct the way Postgres compares them; NaN sorts above every number. Strings
//! order bytewise (the C collation).

use std::collections::{BTreeMap, HashMap, HashSet};

/// Group maps hash byte keys several times per row: foldhash, randomly seeded per map, the hasher
/// DataFusion's own hash aggregation uses, instead of std's much slower SipHash.
type FastHash = foldhash::fast::RandomState;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array,
    new_null_array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{CastOptions, can_cast_types, cast, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float32Type, Float64Type, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::{OwnedRow, RowConverter, RowParser, Rows, SortField};

use super::Operator;
use super::StateScope;
use crate::changelog::{ChangeBatch, Op};
use crate::keygroup;
use crate::state::StateBatch;
use crate::{EngineError, Result};

/// Version byte of the stored group state.
const FORMAT: u8 = 1;

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
    CountDistinct,
    BoolAnd,
    BoolOr,
}

/// One output aggregate column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggSpec {
    pub func: AggFunc,
    /// Column index in the input batch; `None` for `CountStar`.
    pub input: Option<usize>,
}

/// Incremental hash aggregation; see the module documentation.
pub struct HashAggregate {
    input: SchemaRef,
    /// As given to [`HashAggregate::try_new`], for [`Operator::fork`].
    specs: Vec<AggSpec>,
    group_by: Vec<usize>,
    aggs: Vec<Agg>,
    output: SchemaRef,
    /// Encodes the group key; `None` for a global aggregate, whose one key is empty.
    keys: Option<Codec>,
    groups: HashMap<Box<[u8]>, Group, FastHash>,
    /// Keys changed since the last checkpoint.
    dirty: HashSet<Box<[u8]>, FastHash>,
    /// Bytes of the stored state (keys and values) as of the last checkpoint.
    stored_bytes: usize,
    /// Key groups of groups that vanished since the last checkpoint, to delete their state.
    gone: HashMap<Box<[u8]>, u16, FastHash>,
    /// Key group of each input row of the batch being processed (reused buffer).
    row_groups: Vec<u16>,
}

/// How an aggregate reads its input and what it keeps per group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `count(*)`: the group's row count is all it needs.
    Rows,
    Count,
    /// Integer or decimal sum; the input is read as `Decimal128(38, scale)`.
    Exact {
        scale: i8,
    },
    /// Float sum; the input is read as `Float64`.
    Float,
    /// Multiset of row-format values: MIN, MAX, COUNT(DISTINCT).
    Set,
    Bool,
}

/// The array a result column is first built as, before the cast to the output type.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Int64,
    Decimal(i8),
    Float64,
    Bool,
    /// Decoded from the value codec: the input's own type.
    Decoded(DataType),
}

impl Out {
    fn data_type(&self) -> DataType {
        match self {
            Out::Int64 => DataType::Int64,
            Out::Decimal(s) => DataType::Decimal128(38, *s),
            Out::Float64 => DataType::Float64,
            Out::Bool => DataType::Boolean,
            Out::Decoded(t) => t.clone(),
        }
    }
}

/// A row converter with its parser; `null` is the encoding of a NULL value (value codecs only).
struct Codec {
    converter: RowConverter,
    parser: RowParser,
    null: Option<OwnedRow>,
}

impl Codec {
    fn new(types: Vec<DataType>, with_null: bool) -> Result<Self> {
        let converter = RowConverter::new(types.iter().cloned().map(SortField::new).collect())?;
        let null = match (with_null, types.first()) {
            (true, Some(t)) => {
                let rows = converter.convert_columns(&[new_null_array(t, 1)])?;
                Some(rows.row(0).owned())
            }
            _ => None,
        };
        let parser = converter.parser();
        Ok(Self {
            converter,
            parser,
            null,
        })
    }
}

struct Agg {
    func: AggFunc,
    input: Option<usize>,
    kind: Kind,
    /// For `Kind::Set`.
    values: Option<Codec>,
    out: Out,
}

/// Per-group state of one aggregate.
#[derive(Debug, Clone, PartialEq)]
enum Acc {
    None,
    Count(i64),
    Exact { sum: i128, n: i64 },
    Float(FloatSum),
    Set(BTreeMap<Box<[u8]>, i64>),
    Bool { trues: i64, falses: i64 },
}

/// A retractable float sum: non-finite values are counted, not added.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct FloatSum {
    finite: f64,
    n: i64,
    nan: i64,
    pos_inf: i64,
    neg_inf: i64,
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

    fn total(&self) -> Option<f64> {
        Some(match () {
            _ if self.n == 0 => return None,
            _ if self.nan > 0 || (self.pos_inf > 0 && self.neg_inf > 0) => f64::NAN,
            _ if self.pos_inf > 0 => f64::INFINITY,
            _ if self.neg_inf > 0 => f64::NEG_INFINITY,
            _ => self.finite,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Group {
    /// All rows of the group, NULLs included.
    rows: i64,
    accs: Vec<Acc>,
    /// The key group of the group's key (see [`crate::keygroup`]).
    kg: u16,
    /// Length of the group's stored key and value at the last checkpoint (0: not stored).
    stored: u32,
}

/// One aggregate's result for one group; floats as bits so that an unchanged NaN compares equal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Null,
    Int(i128),
    Float(u64),
    Row(Box<[u8]>),
    Bool(bool),
}

/// A group touched by the batch being processed.
struct Slot<'k> {
    key: &'k [u8],
    group: Group,
    /// The group's result before the batch; `None` if it did not exist.
    before: Option<Vec<Value>>,
}

fn internal(msg: impl Into<String>) -> EngineError {
    EngineError::Internal(msg.into())
}

fn strict() -> CastOptions<'static> {
    CastOptions {
        safe: false,
        ..Default::default()
    }
}

impl Agg {
    fn new(spec: &AggSpec, input: &SchemaRef, out_type: &DataType) -> Result<Self> {
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
        let (kind, out) = match (spec.func, &in_type) {
            (AggFunc::CountStar, _) => (Kind::Rows, Out::Int64),
            (AggFunc::Count, _) => (Kind::Count, Out::Int64),
            (AggFunc::CountDistinct, _) => (Kind::Set, Out::Int64),
            (AggFunc::Min | AggFunc::Max, Some(t)) => (Kind::Set, Out::Decoded(t.clone())),
            (AggFunc::BoolAnd | AggFunc::BoolOr, Some(DataType::Boolean)) => {
                (Kind::Bool, Out::Bool)
            }
            (AggFunc::Sum | AggFunc::Avg, Some(t)) => {
                let kind = match t {
                    t if t.is_integer() => Kind::Exact { scale: 0 },
                    DataType::Decimal128(_, s) => Kind::Exact { scale: *s },
                    t if t.is_floating() => Kind::Float,
                    _ => return Err(internal(format!("{:?} of {t} is not supported", spec.func))),
                };
                let out = match (spec.func, kind, out_type) {
                    (AggFunc::Sum, Kind::Exact { scale }, _) => Out::Decimal(scale),
                    (AggFunc::Avg, Kind::Exact { .. }, DataType::Decimal128(_, s)) => {
                        Out::Decimal(*s)
                    }
                    _ => Out::Float64,
                };
                (kind, out)
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
        let values = match (kind, in_type) {
            (Kind::Set, Some(t)) => Some(Codec::new(vec![t], true)?),
            _ => None,
        };
        Ok(Self {
            func: spec.func,
            input: spec.input,
            kind,
            values,
            out,
        })
    }

    fn empty(&self) -> Acc {
        match self.kind {
            Kind::Rows => Acc::None,
            Kind::Count => Acc::Count(0),
            Kind::Exact { .. } => Acc::Exact { sum: 0, n: 0 },
            Kind::Float => Acc::Float(FloatSum::default()),
            Kind::Set => Acc::Set(BTreeMap::new()),
            Kind::Bool => Acc::Bool {
                trues: 0,
                falses: 0,
            },
        }
    }

    /// Adds (`sign` 1) or retracts (-1) the batch's values; true if a multiset count went negative.
    fn update(
        &self,
        a: usize,
        column: &ArrayRef,
        slots: &mut [Slot],
        gids: &[usize],
        signs: &[i64],
    ) -> Result<bool> {
        let nulls = column.logical_nulls();
        let each = |f: &mut dyn FnMut(usize, usize, i64)| {
            for (i, (&g, &s)) in gids.iter().zip(signs).enumerate() {
                if nulls.as_ref().is_none_or(|n: &NullBuffer| n.is_valid(i)) {
                    f(i, g, s);
                }
            }
        };
        let mut negative = false;
        match self.kind {
            Kind::Rows => {}
            Kind::Count => each(&mut |_, g, s| {
                if let Acc::Count(c) = &mut slots[g].group.accs[a] {
                    *c += s;
                }
            }),
            Kind::Exact { scale } => {
                let column = cast(column, &DataType::Decimal128(38, scale))?;
                let values = column.as_primitive::<Decimal128Type>();
                each(&mut |i, g, s| {
                    if let Acc::Exact { sum, n } = &mut slots[g].group.accs[a] {
                        *sum = sum.wrapping_add(i128::from(s).wrapping_mul(values.value(i)));
                        *n += s;
                    }
                });
            }
            Kind::Float => {
                let column = cast(column, &DataType::Float64)?;
                let values = column.as_primitive::<Float64Type>();
                each(&mut |i, g, s| {
                    if let Acc::Float(f) = &mut slots[g].group.accs[a] {
                        f.add(values.value(i), s);
                    }
                });
            }
            Kind::Set => {
                let codec = self
                    .values
                    .as_ref()
                    .ok_or_else(|| internal("set aggregate without a codec"))?;
                let rows = codec.converter.convert_columns(&[canonical(column)])?;
                each(&mut |i, g, s| {
                    if let Acc::Set(set) = &mut slots[g].group.accs[a] {
                        let value = rows.row(i).data();
                        let count = set.get(value).copied().unwrap_or(0) + s;
                        negative |= count < 0;
                        if count == 0 {
                            set.remove(value);
                        } else {
                            set.insert(value.into(), count);
                        }
                    }
                });
            }
            Kind::Bool => {
                let values = column.as_boolean();
                each(&mut |i, g, s| {
                    if let Acc::Bool { trues, falses } = &mut slots[g].group.accs[a] {
                        *(if values.value(i) { trues } else { falses }) += s;
                    }
                });
            }
        }
        Ok(negative)
    }

    fn result(&self, rows: i64, acc: &Acc) -> Result<Value> {
        let float = |v: Option<f64>| v.map_or(Value::Null, |v| Value::Float(v.to_bits()));
        Ok(match (self.func, acc) {
            (AggFunc::CountStar, _) => Value::Int(rows.into()),
            (AggFunc::Count, Acc::Count(n)) => Value::Int((*n).into()),
            (_, Acc::Exact { n: 0, .. }) => Value::Null,
            (AggFunc::Sum, Acc::Exact { sum, .. }) => Value::Int(*sum),
            (AggFunc::Avg, Acc::Exact { sum, n }) => match (self.kind, &self.out) {
                (Kind::Exact { scale }, Out::Decimal(out_scale)) => {
                    Value::Int(decimal_avg(*sum, scale, *out_scale, *n)?)
                }
                (Kind::Exact { scale }, _) => {
                    float(Some(*sum as f64 / 10f64.powi(scale.into()) / *n as f64))
                }
                _ => return Err(internal("avg without an exact kind")),
            },
            (AggFunc::Sum, Acc::Float(f)) => float(f.total()),
            (AggFunc::Avg, Acc::Float(f)) => float(f.total().map(|t| t / f.n as f64)),
            (AggFunc::Min, Acc::Set(set)) => set
                .keys()
                .next()
                .map_or(Value::Null, |k| Value::Row(k.clone())),
            (AggFunc::Max, Acc::Set(set)) => set
                .keys()
                .next_back()
                .map_or(Value::Null, |k| Value::Row(k.clone())),
            (AggFunc::CountDistinct, Acc::Set(set)) => Value::Int(set.len() as i128),
            (
                _,
                Acc::Bool {
                    trues: 0,
                    falses: 0,
                },
            ) => Value::Null,
            (AggFunc::BoolAnd, Acc::Bool { falses, .. }) => Value::Bool(*falses == 0),
            (AggFunc::BoolOr, Acc::Bool { trues, .. }) => Value::Bool(*trues > 0),
            (func, acc) => return Err(internal(format!("{func:?} cannot read {acc:?}"))),
        })
    }

    /// Builds the result column (before the cast to the output type) from one value per row.
    fn build<'v>(&self, values: impl Iterator<Item = &'v Value>) -> Result<ArrayRef> {
        let int = |v: &Value| match v {
            Value::Int(i) => Some(*i),
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
                array.validate_decimal_precision(38)?;
                Arc::new(array)
            }
            Out::Float64 => Arc::new(
                values
                    .map(|v| match v {
                        Value::Float(bits) => Some(f64::from_bits(*bits)),
                        _ => None,
                    })
                    .collect::<Float64Array>(),
            ),
            Out::Bool => Arc::new(
                values
                    .map(|v| match v {
                        Value::Bool(b) => Some(*b),
                        _ => None,
                    })
                    .collect::<BooleanArray>(),
            ),
            Out::Decoded(_) => {
                let codec = self
                    .values
                    .as_ref()
                    .ok_or_else(|| internal("min/max without a codec"))?;
                let null = codec
                    .null
                    .as_ref()
                    .ok_or_else(|| internal("min/max without a null row"))?;
                let rows = values.map(|v| match v {
                    Value::Row(bytes) => codec.parser.parse(bytes),
                    _ => null.row(),
                });
                codec
                    .converter
                    .convert_rows(rows)?
                    .pop()
                    .ok_or_else(|| internal("min/max decoded no column"))?
            }
        })
    }
}

/// `sum / n` rescaled from `scale` to `out_scale`, rounded half away from zero as Postgres does.
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
    let (q, r) = (num / den, num % den);
    Ok(if 2 * r.unsigned_abs() >= den.unsigned_abs() {
        q + num.signum()
    } else {
        q
    })
}

/// Maps -0.0 to 0.0 and every NaN to one NaN, so that equal floats (in SQL) encode equally.
fn canonical(array: &ArrayRef) -> ArrayRef {
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

impl HashAggregate {
    /// `group_by`: input column indices of the group key; `aggs`: one per output aggregate column;
    /// `output`: the group columns (in `group_by` order) then one column per aggregate, with the
    /// types the planner chose (results are cast to them). The operator starts empty;
    /// [`Operator::restore`] loads the groups of its key groups. A plan the operator cannot run is
    /// an `Internal` error: the planner should have rejected it.
    pub fn try_new(
        input: SchemaRef,
        group_by: Vec<usize>,
        aggs: Vec<AggSpec>,
        output: SchemaRef,
    ) -> Result<Self> {
        let fields = output.fields();
        if fields.len() != group_by.len() + aggs.len() {
            return Err(internal(format!(
                "aggregate output has {} columns, expected {}",
                fields.len(),
                group_by.len() + aggs.len()
            )));
        }
        let mut key_types = Vec::with_capacity(group_by.len());
        for (&i, out) in group_by.iter().zip(fields.iter()) {
            let t = input
                .fields()
                .get(i)
                .ok_or_else(|| internal(format!("group column {i} does not exist")))?
                .data_type();
            if !can_cast_types(t, out.data_type()) {
                return Err(internal(format!(
                    "group column {i} of type {t} cannot become {}",
                    out.data_type()
                )));
            }
            key_types.push(t.clone());
        }
        let keys = if group_by.is_empty() {
            None
        } else {
            Some(Codec::new(key_types, false)?)
        };
        let specs = aggs;
        let aggs = specs
            .iter()
            .zip(fields.iter().skip(group_by.len()))
            .map(|(spec, f)| Agg::new(spec, &input, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            input,
            specs,
            group_by,
            aggs,
            output,
            keys,
            groups: HashMap::default(),
            dirty: HashSet::default(),
            stored_bytes: 0,
            gone: HashMap::default(),
            row_groups: Vec::new(),
        })
    }

    /// Number of groups held (1 for a started global aggregate).
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    fn empty_group(&self, kg: u16) -> Group {
        Group {
            rows: 0,
            accs: self.aggs.iter().map(Agg::empty).collect(),
            kg,
            stored: 0,
        }
    }

    fn values(&self, group: &Group) -> Result<Vec<Value>> {
        self.aggs
            .iter()
            .zip(&group.accs)
            .map(|(agg, acc)| agg.result(group.rows, acc))
            .collect()
    }

    /// One output batch of `(op, group key, results)` rows.
    fn build(&self, rows: &[(Op, &[u8], &[Value])]) -> Result<ChangeBatch> {
        let mut columns = Vec::with_capacity(self.output.fields().len());
        if let Some(keys) = &self.keys {
            columns.extend(
                keys.converter
                    .convert_rows(rows.iter().map(|r| keys.parser.parse(r.1)))?,
            );
        }
        for (a, agg) in self.aggs.iter().enumerate() {
            columns.push(agg.build(rows.iter().filter_map(|r| r.2.get(a)))?);
        }
        let columns = columns
            .iter()
            .zip(self.output.fields().iter())
            .map(|(c, f)| cast_with_options(c, f.data_type(), &strict()))
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let data = RecordBatch::try_new_with_options(Arc::clone(&self.output), columns, &options)?;
        Ok(ChangeBatch {
            data,
            ops: rows.iter().map(|r| r.0).collect(),
        })
    }

    /// Takes every group the batch touches out of the map (so the aggregates can update them
    /// column by column) with its result before the batch; also returns each row's slot.
    fn take_groups<'k>(
        &mut self,
        keys: Option<&'k Rows>,
        n: usize,
    ) -> Result<(Vec<Slot<'k>>, Vec<usize>)> {
        let row_groups = std::mem::take(&mut self.row_groups);
        let mut index: HashMap<&[u8], usize, FastHash> = HashMap::default();
        let mut slots: Vec<Slot> = Vec::new();
        let mut gids = Vec::with_capacity(n);
        for i in 0..n {
            let key: &[u8] = keys.map_or(&[], |r| r.row(i).data());
            let id = match index.get(key) {
                Some(id) => *id,
                None => {
                    let group = self.groups.remove(key);
                    let before = group.as_ref().map(|g| self.values(g)).transpose()?;
                    let kg = row_groups.get(i).copied().unwrap_or(0);
                    let group = group.unwrap_or_else(|| self.empty_group(kg));
                    slots.push(Slot { key, group, before });
                    index.insert(key, slots.len() - 1);
                    slots.len() - 1
                }
            };
            gids.push(id);
        }
        self.row_groups = row_groups;
        Ok((slots, gids))
    }

    /// Each touched group's result after the batch; `None` if the group is gone.
    fn results_after(&self, slots: &[Slot], negative: bool) -> Result<Vec<Option<Vec<Value>>>> {
        let global = self.keys.is_none();
        let mut afters = Vec::with_capacity(slots.len());
        for slot in slots {
            let held_negative = negative
                && slot
                    .group
                    .accs
                    .iter()
                    .any(|acc| matches!(acc, Acc::Set(s) if s.values().any(|&c| c < 0)));
            if slot.group.rows < 0 || held_negative {
                return Err(internal("aggregate input retracts a row it never added"));
            }
            let exists = slot.group.rows > 0 || global;
            afters.push(if exists {
                Some(self.values(&slot.group)?)
            } else {
                None
            });
        }
        Ok(afters)
    }

    /// The output batch: every touched group's net change, in order of first touch.
    fn changes(&self, slots: &[Slot], afters: &[Option<Vec<Value>>]) -> Result<Vec<ChangeBatch>> {
        let mut rows: Vec<(Op, &[u8], &[Value])> = Vec::new();
        for (slot, after) in slots.iter().zip(afters) {
            match (&slot.before, after) {
                (None, Some(a)) => rows.push((Op::Insert, slot.key, a)),
                (Some(b), None) => rows.push((Op::Delete, slot.key, b)),
                (Some(b), Some(a)) if b != a => {
                    rows.push((Op::UpdateBefore, slot.key, b));
                    rows.push((Op::UpdateAfter, slot.key, a));
                }
                _ => {}
            }
        }
        Ok(if rows.is_empty() {
            Vec::new()
        } else {
            vec![self.build(&rows)?]
        })
    }

    fn encode(&self, group: &Group) -> Vec<u8> {
        let mut out = vec![FORMAT];
        put_i(&mut out, group.rows.into());
        put_u(&mut out, group.accs.len() as u128);
        for acc in &group.accs {
            match acc {
                Acc::None => {}
                Acc::Count(n) => put_i(&mut out, (*n).into()),
                Acc::Exact { sum, n } => {
                    put_i(&mut out, *sum);
                    put_i(&mut out, (*n).into());
                }
                Acc::Float(f) => {
                    out.extend_from_slice(&f.finite.to_le_bytes());
                    for c in [f.n, f.nan, f.pos_inf, f.neg_inf] {
                        put_i(&mut out, c.into());
                    }
                }
                Acc::Set(set) => {
                    put_u(&mut out, set.len() as u128);
                    for (value, count) in set {
                        put_u(&mut out, value.len() as u128);
                        out.extend_from_slice(value);
                        put_i(&mut out, (*count).into());
                    }
                }
                Acc::Bool { trues, falses } => {
                    put_i(&mut out, (*trues).into());
                    put_i(&mut out, (*falses).into());
                }
            }
        }
        out
    }

    fn decode(&self, bytes: &[u8]) -> Result<Group> {
        let mut r = Reader(bytes);
        if r.take(1)? != [FORMAT] {
            return Err(EngineError::Corrupt(
                "unknown aggregate state format".into(),
            ));
        }
        let rows = r.i64()?;
        if r.u()? != self.aggs.len() as u128 {
            return Err(EngineError::Corrupt(
                "aggregate state has a different number of aggregates".into(),
            ));
        }
        let mut accs = Vec::with_capacity(self.aggs.len());
        for agg in &self.aggs {
            accs.push(match agg.kind {
                Kind::Rows => Acc::None,
                Kind::Count => Acc::Count(r.i64()?),
                Kind::Exact { .. } => Acc::Exact {
                    sum: r.i()?,
                    n: r.i64()?,
                },
                Kind::Float => {
                    let finite = f64::from_le_bytes(r.take(8)?.try_into().map_err(|_| corrupt())?);
                    let (n, nan, pos_inf, neg_inf) = (r.i64()?, r.i64()?, r.i64()?, r.i64()?);
                    Acc::Float(FloatSum {
                        finite,
                        n,
                        nan,
                        pos_inf,
                        neg_inf,
                    })
                }
                Kind::Set => {
                    let mut set = BTreeMap::new();
                    for _ in 0..r.u()? {
                        let len = usize::try_from(r.u()?).map_err(|_| corrupt())?;
                        let value: Box<[u8]> = r.take(len)?.into();
                        set.insert(value, r.i64()?);
                    }
                    Acc::Set(set)
                }
                Kind::Bool => Acc::Bool {
                    trues: r.i64()?,
                    falses: r.i64()?,
                },
            });
        }
        if !r.0.is_empty() {
            return Err(corrupt());
        }
        Ok(Group {
            rows,
            accs,
            kg: 0,
            stored: 0,
        })
    }
}

fn corrupt() -> EngineError {
    EngineError::Corrupt("truncated or overlong aggregate state".into())
}

fn put_u(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i(out: &mut Vec<u8>, v: i128) {
    put_u(out, ((v << 1) ^ (v >> 127)) as u128);
}

/// Reads the stored group format.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(corrupt());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u(&mut self) -> Result<u128> {
        let mut v = 0u128;
        for shift in (0..128).step_by(7) {
            let &[b] = self.take(1)? else {
                return Err(corrupt());
            };
            v |= u128::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(corrupt())
    }

    fn i(&mut self) -> Result<i128> {
        let u = self.u()?;
        Ok((u >> 1) as i128 ^ -((u & 1) as i128))
    }

    fn i64(&mut self) -> Result<i64> {
        i64::try_from(self.i()?).map_err(|_| corrupt())
    }
}

impl Operator for HashAggregate {
    fn name(&self) -> &'static str {
        "HashAggregate"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.output)
    }

    fn start(&mut self) -> Result<Vec<ChangeBatch>> {
        // A recovered global row is already downstream; a grouped aggregate has nothing to say.
        if self.keys.is_some() || self.groups.contains_key(&[][..]) {
            return Ok(Vec::new());
        }
        let group = self.empty_group(0);
        let values = self.values(&group)?;
        self.groups.insert(Box::default(), group);
        self.dirty.insert(Box::default());
        Ok(vec![self.build(&[(Op::Insert, &[], &values)])?])
    }

    fn process(&mut self, input: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let n = input.num_rows();
        let columns = input.data.columns();
        let types_match = columns.len() == self.input.fields().len()
            && columns
                .iter()
                .zip(self.input.fields().iter())
                .all(|(c, f)| c.data_type() == f.data_type());
        if !types_match || input.ops.len() != n {
            return Err(internal(
                "aggregate input does not match its declared schema",
            ));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let key_rows = match &self.keys {
            Some(keys) => {
                let cols: Vec<ArrayRef> = self
                    .group_by
                    .iter()
                    .map(|&i| canonical(input.data.column(i)))
                    .collect();
                keygroup::key_groups(&cols, n, &mut self.row_groups)?;
                Some(keys.converter.convert_columns(&cols)?)
            }
            None => None,
        };
        let (mut slots, gids) = self.take_groups(key_rows.as_ref(), n)?;
        let signs: Vec<i64> = input
            .ops
            .iter()
            .map(|op| if op.is_add() { 1 } else { -1 })
            .collect();
        for (&g, &s) in gids.iter().zip(&signs) {
            slots[g].group.rows += s;
        }
        let mut negative = false;
        for (a, agg) in self.aggs.iter().enumerate() {
            if let Some(c) = agg.input {
                negative |= agg.update(a, input.data.column(c), &mut slots, &gids, &signs)?;
            }
        }
        let afters = self.results_after(&slots, negative)?;
        let out = self.changes(&slots, &afters)?;
        for (slot, after) in slots.into_iter().zip(afters) {
            let key: Box<[u8]> = slot.key.into();
            self.dirty.insert(key.clone());
            if after.is_some() {
                self.groups.insert(key, slot.group);
            } else if slot.group.stored > 0 {
                self.stored_bytes = self.stored_bytes.saturating_sub(slot.group.stored as usize);
                self.gone.insert(key, slot.group.kg);
            }
        }
        Ok(out)
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Self::try_new(
            Arc::clone(&self.input),
            self.group_by.clone(),
            self.specs.clone(),
            Arc::clone(&self.output),
        )?))
    }

    fn restore(&mut self, scope: &StateScope) -> Result<()> {
        let mut groups = HashMap::default();
        let mut bytes = 0;
        scope.scan(|kg, key, value| {
            if key.is_empty() != self.keys.is_none() {
                return Err(EngineError::Corrupt(
                    "aggregate group key of the wrong shape".into(),
                ));
            }
            let mut group = self.decode(value)?;
            group.kg = kg;
            group.stored = (scope.key_len(key) + value.len()) as u32;
            bytes += group.stored as usize;
            groups.insert(key.into(), group);
            Ok(())
        })?;
        self.groups = groups;
        self.stored_bytes = bytes;
        self.dirty.clear();
        Ok(())
    }

    fn checkpoint(&mut self, scope: &StateScope, batch: &mut StateBatch) -> Result<()> {
        for key in std::mem::take(&mut self.dirty) {
            let Some(group) = self.groups.get(&key) else {
                if let Some(kg) = self.gone.remove(&key) {
                    batch.delete(scope.key(kg, &key));
                }
                continue;
            };
            let stored = scope.key(group.kg, &key);
            let value = self.encode(group);
            let len = stored.len() + value.len();
            self.stored_bytes = (self.stored_bytes + len).saturating_sub(group.stored as usize);
            batch.put(stored, value);
            if let Some(group) = self.groups.get_mut(&key) {
                group.stored = len as u32;
            }
            self.gone.remove(&key);
        }
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        self.stored_bytes
    }

    fn describe(&self) -> String {
        let aggs: Vec<String> = self
            .aggs
            .iter()
            .map(|a| match a.input {
                Some(i) => format!("{:?}(#{i})", a.func),
                None => format!("{:?}", a.func),
            })
            .collect();
        let keys: Vec<String> = self.group_by.iter().map(|i| format!("#{i}")).collect();
        format!(
            "HashAggregate group_by=[{}] aggs=[{}]",
            keys.join(", "),
            aggs.join(", ")
        )
    }
}

#[cfg(test)]
mod tests;
