//! The stable byte encoding of table rows.
//!
//! A row is a null bitmap (one bit per column, `ceil(n/8)` bytes) followed by each non-null value in
//! column order: fixed-width values little-endian, strings and bytes as a `u32` length plus the bytes.
//! The format is ours and versioned with the data directory, unlike Arrow's row format, which may
//! change between Arrow releases. It is also used for primary keys, where only equality matters.
//!
//! A list (`List` or `LargeList`, of any type here, lists too) is a `u32` element count, a null
//! bitmap over the elements (`ceil(count/8)` bytes) and each non-null element in its own type's
//! encoding, so a list nests the way a row does. Both list types encode alike; the schema says
//! which one a column decodes to.
//!
//! Encoding walks a batch row by row with the columns downcast once up front; decoding appends into
//! typed builders. Bytes that do not decode are reported as corrupt, never panicked on.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::array::make_array;
use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, Date32Array,
    Date32Builder, Decimal128Array, Decimal128Builder, Float32Array, Float32Builder, Float64Array,
    Float64Builder, Int16Array, Int16Builder, Int32Array, Int32Builder, Int64Array, Int64Builder,
    IntervalMonthDayNanoArray, IntervalMonthDayNanoBuilder, LargeListArray, ListArray, StringArray,
    StringBuilder, Time64MicrosecondArray, Time64MicrosecondBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder, UInt64Array, UInt64Builder,
};
use datafusion::arrow::buffer::{OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{
    DataType, FieldRef, IntervalMonthDayNano, IntervalUnit, SchemaRef, TimeUnit,
};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::{EngineError, Result};

/// The storage kind of one column.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Bool,
    I16,
    I32,
    I64,
    /// Unsigned 64-bit integers (ranks and row numbers of window functions).
    U64,
    F32,
    F64,
    Decimal,
    Utf8,
    Binary,
    Date,
    Time,
    Timestamp,
    /// A timestamp in seconds, milliseconds or nanoseconds (DataFusion's window bounds are in
    /// nanoseconds): the same 8 bytes, the unit from the schema.
    Stamp,
    Interval,
    /// A `List` (or, when `large`, a `LargeList`) of elements described by `field`.
    List {
        field: FieldRef,
        large: bool,
        item: Box<Kind>,
    },
}

impl Kind {
    fn of(dt: &DataType) -> Result<Self> {
        Ok(match dt {
            DataType::Boolean => Kind::Bool,
            DataType::Int16 => Kind::I16,
            DataType::Int32 => Kind::I32,
            DataType::Int64 => Kind::I64,
            DataType::UInt64 => Kind::U64,
            DataType::Float32 => Kind::F32,
            DataType::Float64 => Kind::F64,
            DataType::Decimal128(_, _) => Kind::Decimal,
            DataType::Utf8 => Kind::Utf8,
            DataType::Binary => Kind::Binary,
            DataType::Date32 => Kind::Date,
            DataType::Time64(TimeUnit::Microsecond) => Kind::Time,
            DataType::Timestamp(TimeUnit::Microsecond, _) => Kind::Timestamp,
            DataType::Timestamp(_, _) => Kind::Stamp,
            DataType::Interval(IntervalUnit::MonthDayNano) => Kind::Interval,
            DataType::List(field) | DataType::LargeList(field) => Kind::List {
                field: Arc::clone(field),
                large: matches!(dt, DataType::LargeList(_)),
                item: Box::new(
                    Kind::of(field.data_type())
                        .map_err(|_| EngineError::Unsupported(dt.to_string()))?,
                ),
            },
            other => return Err(EngineError::Unsupported(other.to_string())),
        })
    }
}

/// Encodes and decodes rows of one schema.
#[derive(Debug, Clone)]
pub struct RowCodec {
    schema: SchemaRef,
    kinds: Vec<Kind>,
}

/// One column of a batch being encoded, downcast once.
enum Col<'a> {
    Bool(&'a BooleanArray),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    U64(&'a UInt64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Decimal(&'a Decimal128Array),
    Utf8(&'a StringArray),
    Binary(&'a BinaryArray),
    Date(&'a Date32Array),
    Time(&'a Time64MicrosecondArray),
    Timestamp(&'a TimestampMicrosecondArray),
    Stamp(ScalarBuffer<i64>),
    Interval(&'a IntervalMonthDayNanoArray),
    List(Box<ListCol<'a>>),
}

/// A list column being encoded: where each list's elements are, and the elements as a column.
struct ListCol<'a> {
    offsets: Offsets<'a>,
    items: &'a dyn Array,
    item: Col<'a>,
}

/// The offsets of a `List` or a `LargeList`.
enum Offsets<'a> {
    Small(&'a [i32]),
    Large(&'a [i64]),
}

impl Offsets<'_> {
    /// The element positions of list `row` (Arrow's offsets are non-negative and non-decreasing).
    fn range(&self, row: usize) -> Range<usize> {
        match self {
            Offsets::Small(o) => o[row] as usize..o[row + 1] as usize,
            Offsets::Large(o) => o[row] as usize..o[row + 1] as usize,
        }
    }
}

/// A batch prepared for row-by-row encoding.
pub struct BatchEncoder<'a> {
    cols: Vec<(&'a dyn Array, Col<'a>)>,
}

fn downcast<T: 'static>(array: &ArrayRef) -> Result<&T> {
    array.as_any().downcast_ref::<T>().ok_or_else(|| {
        EngineError::Internal(format!(
            "column of type {} does not match the table",
            array.data_type()
        ))
    })
}

/// `array`, a column of `kind`, downcast for encoding.
fn column<'a>(kind: &Kind, array: &'a ArrayRef) -> Result<Col<'a>> {
    Ok(match kind {
        Kind::Bool => Col::Bool(downcast(array)?),
        Kind::I16 => Col::I16(downcast(array)?),
        Kind::I32 => Col::I32(downcast(array)?),
        Kind::I64 => Col::I64(downcast(array)?),
        Kind::U64 => Col::U64(downcast(array)?),
        Kind::F32 => Col::F32(downcast(array)?),
        Kind::F64 => Col::F64(downcast(array)?),
        Kind::Decimal => Col::Decimal(downcast(array)?),
        Kind::Utf8 => Col::Utf8(downcast(array)?),
        Kind::Binary => Col::Binary(downcast(array)?),
        Kind::Date => Col::Date(downcast(array)?),
        Kind::Time => Col::Time(downcast(array)?),
        Kind::Timestamp => Col::Timestamp(downcast(array)?),
        Kind::Stamp => {
            let data = array.to_data();
            let buffer =
                data.buffers().first().cloned().ok_or_else(|| {
                    EngineError::Internal("timestamp column without values".into())
                })?;
            Col::Stamp(ScalarBuffer::new(buffer, data.offset(), data.len()))
        }
        Kind::Interval => Col::Interval(downcast(array)?),
        Kind::List { large, item, .. } => {
            let (offsets, items) = if *large {
                let list: &LargeListArray = downcast(array)?;
                (Offsets::Large(list.value_offsets()), list.values())
            } else {
                let list: &ListArray = downcast(array)?;
                (Offsets::Small(list.value_offsets()), list.values())
            };
            Col::List(Box::new(ListCol {
                offsets,
                items: items.as_ref(),
                item: column(item, items)?,
            }))
        }
    })
}

impl<'a> BatchEncoder<'a> {
    /// Encodes row `row` into `out` (appending).
    pub fn encode(&self, row: usize, out: &mut Vec<u8>) {
        let bitmap_at = out.len();
        out.resize(bitmap_at + self.cols.len().div_ceil(8), 0);
        for (i, (array, col)) in self.cols.iter().enumerate() {
            if array.is_null(row) {
                out[bitmap_at + i / 8] |= 1 << (i % 8);
            } else {
                put_value(col, row, out);
            }
        }
    }
}

/// Appends the value at `row` of `col`, which is not null.
fn put_value(col: &Col<'_>, row: usize, out: &mut Vec<u8>) {
    match col {
        Col::Bool(a) => out.push(a.value(row) as u8),
        Col::I16(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
        Col::I32(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
        Col::I64(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
        Col::U64(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
        Col::F32(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
        Col::F64(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
        Col::Decimal(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
        Col::Utf8(a) => put_bytes(out, a.value(row).as_bytes()),
        Col::Binary(a) => put_bytes(out, a.value(row)),
        Col::Date(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
        Col::Time(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
        Col::Timestamp(a) => out.extend_from_slice(&a.value(row).to_le_bytes()),
        Col::Stamp(values) => out.extend_from_slice(&values[row].to_le_bytes()),
        Col::Interval(a) => {
            let v = a.value(row);
            out.extend_from_slice(&v.months.to_le_bytes());
            out.extend_from_slice(&v.days.to_le_bytes());
            out.extend_from_slice(&v.nanoseconds.to_le_bytes());
        }
        Col::List(list) => {
            let range = list.offsets.range(row);
            // As for strings: a list of over 4 Gi elements cannot be a row of ours.
            out.extend_from_slice(&(range.len() as u32).to_le_bytes());
            let bitmap_at = out.len();
            out.resize(bitmap_at + range.len().div_ceil(8), 0);
            for (k, j) in range.enumerate() {
                if list.items.is_null(j) {
                    out[bitmap_at + k / 8] |= 1 << (k % 8);
                } else {
                    put_value(&list.item, j, out);
                }
            }
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Values over 4 GiB cannot reach here: a Postgres message is at most 1 GiB.
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Column builders for decoding.
enum Builder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Decimal(Decimal128Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Stamp(Int64Builder, DataType),
    Interval(IntervalMonthDayNanoBuilder),
    List(Box<ListBuilder>),
}

/// Decoded lists: their elements in one builder, where each list ends in it, which are null.
struct ListBuilder {
    field: FieldRef,
    /// Starts at `[0]` and only grows, as `OffsetBuffer::new` requires.
    offsets: ListOffsets,
    nulls: NullBufferBuilder,
    items: Builder,
}

enum ListOffsets {
    Small(Vec<i32>),
    Large(Vec<i64>),
}

impl ListBuilder {
    /// Ends a list of the `n` elements appended to `items` since the previous one.
    fn append(&mut self, n: usize) -> Result<()> {
        match &mut self.offsets {
            ListOffsets::Small(o) => {
                let end = o.last().map_or(0, |&e| e as usize) + n;
                o.push(i32::try_from(end).map_err(|_| {
                    EngineError::Internal(format!("{end} list elements in one batch"))
                })?);
            }
            ListOffsets::Large(o) => o.push(o.last().copied().unwrap_or(0) + n as i64),
        }
        self.nulls.append_non_null();
        Ok(())
    }

    fn append_null(&mut self) {
        match &mut self.offsets {
            ListOffsets::Small(o) => o.push(o.last().copied().unwrap_or(0)),
            ListOffsets::Large(o) => o.push(o.last().copied().unwrap_or(0)),
        }
        self.nulls.append_null();
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        let field = Arc::clone(&self.field);
        let items = finish(&mut self.items)?;
        let nulls = self.nulls.finish();
        Ok(match &mut self.offsets {
            ListOffsets::Small(o) => {
                let offsets = OffsetBuffer::new(std::mem::replace(o, vec![0]).into());
                Arc::new(ListArray::try_new(field, offsets, items, nulls)?)
            }
            ListOffsets::Large(o) => {
                let offsets = OffsetBuffer::new(std::mem::replace(o, vec![0]).into());
                Arc::new(LargeListArray::try_new(field, offsets, items, nulls)?)
            }
        })
    }
}

struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                EngineError::Corrupt(format!(
                    "row of {} bytes ends early at byte {}",
                    self.bytes.len(),
                    self.at
                ))
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn var(&mut self) -> Result<&'b [u8]> {
        let len = u32::from_le_bytes(self.fixed::<4>()?) as usize;
        self.take(len)
    }
}

impl RowCodec {
    /// A codec for rows of `schema`; fails on a column type tables cannot hold.
    pub fn try_new(schema: SchemaRef) -> Result<Self> {
        let kinds = schema
            .fields()
            .iter()
            .map(|f| Kind::of(f.data_type()))
            .collect::<Result<_>>()?;
        Ok(Self { schema, kinds })
    }

    /// The schema rows are encoded in.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Prepares `batch` (which must have this codec's schema) for encoding.
    pub fn encoder<'a>(&self, batch: &'a RecordBatch) -> Result<BatchEncoder<'a>> {
        self.encoder_for_columns(batch.columns())
    }

    /// Prepares the given columns (in this codec's column order) for encoding.
    pub fn encoder_for_columns<'a>(&self, columns: &'a [ArrayRef]) -> Result<BatchEncoder<'a>> {
        if columns.len() != self.kinds.len() {
            return Err(EngineError::Internal(format!(
                "batch has {} columns, table has {}",
                columns.len(),
                self.kinds.len()
            )));
        }
        let cols = columns
            .iter()
            .zip(&self.kinds)
            .map(|(array, kind)| Ok((array.as_ref(), column(kind, array)?)))
            .collect::<Result<_>>()?;
        Ok(BatchEncoder { cols })
    }

    /// Starts decoding rows into a batch with the columns in `projection` (all when `None`).
    pub fn decoder(&self, projection: Option<&[usize]>, capacity: usize) -> RowDecoder {
        let keep: Vec<bool> = match projection {
            Some(p) => (0..self.kinds.len()).map(|i| p.contains(&i)).collect(),
            None => vec![true; self.kinds.len()],
        };
        let out_schema = match projection {
            Some(p) => Arc::new(
                self.schema
                    .project(p)
                    .unwrap_or_else(|_| self.schema.as_ref().clone()),
            ),
            None => Arc::clone(&self.schema),
        };
        let order: Vec<usize> = projection
            .map(|p| p.to_vec())
            .unwrap_or_else(|| (0..self.kinds.len()).collect());
        let builders = self
            .kinds
            .iter()
            .zip(self.schema.fields())
            .map(|(kind, field)| new_builder(kind, field.data_type(), capacity))
            .collect();
        RowDecoder {
            keep,
            order,
            builders,
            out_schema,
            rows: 0,
        }
    }
}

fn new_builder(kind: &Kind, dt: &DataType, cap: usize) -> Builder {
    match kind {
        Kind::Bool => Builder::Bool(BooleanBuilder::with_capacity(cap)),
        Kind::I16 => Builder::I16(Int16Builder::with_capacity(cap)),
        Kind::I32 => Builder::I32(Int32Builder::with_capacity(cap)),
        Kind::I64 => Builder::I64(Int64Builder::with_capacity(cap)),
        Kind::U64 => Builder::U64(UInt64Builder::with_capacity(cap)),
        Kind::F32 => Builder::F32(Float32Builder::with_capacity(cap)),
        Kind::F64 => Builder::F64(Float64Builder::with_capacity(cap)),
        Kind::Decimal => {
            let b = Decimal128Builder::with_capacity(cap);
            Builder::Decimal(match dt {
                DataType::Decimal128(p, s) => b.with_data_type(DataType::Decimal128(*p, *s)),
                _ => b,
            })
        }
        Kind::Utf8 => Builder::Utf8(StringBuilder::with_capacity(cap, cap * 8)),
        Kind::Binary => Builder::Binary(BinaryBuilder::with_capacity(cap, cap * 8)),
        Kind::Date => Builder::Date(Date32Builder::with_capacity(cap)),
        Kind::Time => Builder::Time(Time64MicrosecondBuilder::with_capacity(cap)),
        Kind::Timestamp => {
            let tz = match dt {
                DataType::Timestamp(_, tz) => tz.clone(),
                _ => None,
            };
            Builder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(cap).with_timezone_opt(tz),
            )
        }
        Kind::Stamp => Builder::Stamp(Int64Builder::with_capacity(cap), dt.clone()),
        Kind::Interval => Builder::Interval(IntervalMonthDayNanoBuilder::with_capacity(cap)),
        Kind::List { field, large, item } => {
            let offsets = if *large {
                ListOffsets::Large(first_offset(cap))
            } else {
                ListOffsets::Small(first_offset(cap))
            };
            Builder::List(Box::new(ListBuilder {
                field: Arc::clone(field),
                offsets,
                nulls: NullBufferBuilder::new(cap),
                items: new_builder(item, field.data_type(), cap),
            }))
        }
    }
}

/// The offsets of no list yet, `[0]`, with room for `cap` lists.
fn first_offset<T: Default>(cap: usize) -> Vec<T> {
    let mut offsets = Vec::with_capacity(cap + 1);
    offsets.push(T::default());
    offsets
}

/// Accumulates decoded rows into Arrow builders.
pub struct RowDecoder {
    keep: Vec<bool>,
    order: Vec<usize>,
    builders: Vec<Builder>,
    out_schema: SchemaRef,
    rows: usize,
}

macro_rules! append_fixed {
    ($b:expr, $keep:expr, $r:expr, $n:literal, $t:ty) => {{
        let v = <$t>::from_le_bytes($r.fixed::<$n>()?);
        if $keep {
            $b.append_value(v);
        }
    }};
}

impl RowDecoder {
    /// Rows decoded so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True before the first row.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Decodes one encoded row and appends it. After an error the builders may hold part of the
    /// row: drop the decoder.
    pub fn push(&mut self, bytes: &[u8]) -> Result<()> {
        let n = self.builders.len();
        let mut r = Reader { bytes, at: 0 };
        let bitmap = r.take(n.div_ceil(8))?;
        for (i, (b, &keep)) in self.builders.iter_mut().zip(&self.keep).enumerate() {
            if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                if keep {
                    append_null(b);
                }
            } else {
                read_value(b, &mut r, keep)?;
            }
        }
        if r.at != bytes.len() {
            return Err(EngineError::Corrupt(format!(
                "row has {} trailing bytes",
                bytes.len() - r.at
            )));
        }
        self.rows += 1;
        Ok(())
    }

    /// Finishes the batch decoded so far and starts a new one.
    pub fn flush(&mut self) -> Result<RecordBatch> {
        let mut arrays: Vec<Option<ArrayRef>> = self
            .builders
            .iter_mut()
            .map(|b| finish(b).map(Some))
            .collect::<Result<_>>()?;
        let columns: Vec<ArrayRef> = self
            .order
            .iter()
            .filter_map(|&i| arrays.get_mut(i).and_then(Option::take))
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.out_schema),
            columns,
            &options,
        )?)
    }
}

/// Reads one non-null value of `b`'s type, appending it to `b` when `keep`.
fn read_value(b: &mut Builder, r: &mut Reader<'_>, keep: bool) -> Result<()> {
    match b {
        Builder::Bool(b) => {
            let v = r.take(1)?[0] != 0;
            if keep {
                b.append_value(v);
            }
        }
        Builder::I16(b) => append_fixed!(b, keep, r, 2, i16),
        Builder::I32(b) => append_fixed!(b, keep, r, 4, i32),
        Builder::I64(b) => append_fixed!(b, keep, r, 8, i64),
        Builder::U64(b) => append_fixed!(b, keep, r, 8, u64),
        Builder::F32(b) => append_fixed!(b, keep, r, 4, f32),
        Builder::F64(b) => append_fixed!(b, keep, r, 8, f64),
        Builder::Decimal(b) => append_fixed!(b, keep, r, 16, i128),
        Builder::Date(b) => append_fixed!(b, keep, r, 4, i32),
        Builder::Time(b) => append_fixed!(b, keep, r, 8, i64),
        Builder::Timestamp(b) => append_fixed!(b, keep, r, 8, i64),
        Builder::Stamp(b, _) => append_fixed!(b, keep, r, 8, i64),
        Builder::Utf8(b) => {
            let v = r.var()?;
            if keep {
                let s = std::str::from_utf8(v)
                    .map_err(|e| EngineError::Corrupt(format!("text value: {e}")))?;
                b.append_value(s);
            }
        }
        Builder::Binary(b) => {
            let v = r.var()?;
            if keep {
                b.append_value(v);
            }
        }
        Builder::Interval(b) => {
            let months = i32::from_le_bytes(r.fixed::<4>()?);
            let days = i32::from_le_bytes(r.fixed::<4>()?);
            let nanoseconds = i64::from_le_bytes(r.fixed::<8>()?);
            if keep {
                b.append_value(IntervalMonthDayNano {
                    months,
                    days,
                    nanoseconds,
                });
            }
        }
        Builder::List(list) => {
            // A count past the bytes left fails at the bitmap: no allocation is sized by it.
            let n = u32::from_le_bytes(r.fixed::<4>()?) as usize;
            let bitmap = r.take(n.div_ceil(8))?;
            for k in 0..n {
                if bitmap[k / 8] & (1 << (k % 8)) != 0 {
                    if keep {
                        append_null(&mut list.items);
                    }
                } else {
                    read_value(&mut list.items, r, keep)?;
                }
            }
            if keep {
                list.append(n)?;
            }
        }
    }
    Ok(())
}

fn append_null(b: &mut Builder) {
    match b {
        Builder::Bool(b) => b.append_null(),
        Builder::I16(b) => b.append_null(),
        Builder::I32(b) => b.append_null(),
        Builder::I64(b) => b.append_null(),
        Builder::U64(b) => b.append_null(),
        Builder::F32(b) => b.append_null(),
        Builder::F64(b) => b.append_null(),
        Builder::Decimal(b) => b.append_null(),
        Builder::Utf8(b) => b.append_null(),
        Builder::Binary(b) => b.append_null(),
        Builder::Date(b) => b.append_null(),
        Builder::Time(b) => b.append_null(),
        Builder::Timestamp(b) => b.append_null(),
        Builder::Stamp(b, _) => b.append_null(),
        Builder::Interval(b) => b.append_null(),
        Builder::List(b) => b.append_null(),
    }
}

fn finish(b: &mut Builder) -> Result<ArrayRef> {
    Ok(match b {
        Builder::Bool(b) => Arc::new(b.finish()),
        Builder::I16(b) => Arc::new(b.finish()),
        Builder::I32(b) => Arc::new(b.finish()),
        Builder::I64(b) => Arc::new(b.finish()),
        Builder::U64(b) => Arc::new(b.finish()),
        Builder::F32(b) => Arc::new(b.finish()),
        Builder::F64(b) => Arc::new(b.finish()),
        Builder::Decimal(b) => Arc::new(b.finish()),
        Builder::Utf8(b) => Arc::new(b.finish()),
        Builder::Binary(b) => Arc::new(b.finish()),
        Builder::Date(b) => Arc::new(b.finish()),
        Builder::Time(b) => Arc::new(b.finish()),
        Builder::Timestamp(b) => Arc::new(b.finish()),
        Builder::Stamp(b, dt) => {
            // The same i64 buffers, typed as the column's timestamp (no copy).
            let data = b.finish().into_data().into_builder().data_type(dt.clone());
            make_array(data.build()?)
        }
        Builder::Interval(b) => Arc::new(b.finish()),
        Builder::List(b) => b.finish()?,
    })
}

/// Appends row `row` of `encoder` to `out` after its length (u32, little endian): a state
/// value that holds many rows frames them so (read back with [`framed_rows`]).
pub fn encode_framed(encoder: &BatchEncoder<'_>, row: usize, out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    encoder.encode(row, out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// The rows of a value of framed rows (see [`encode_framed`]), in order.
pub fn framed_rows(value: &[u8]) -> impl Iterator<Item = Result<&[u8]>> {
    let mut rest = value;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let row = rest
            .split_first_chunk::<4>()
            .and_then(|(len, tail)| {
                let len = u32::from_le_bytes(*len) as usize;
                (tail.len() >= len).then(|| tail.split_at(len))
            })
            .ok_or_else(|| EngineError::Corrupt("state value of framed rows".into()));
        match row {
            Ok((row, tail)) => {
                rest = tail;
                Some(Ok(row))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema};

    fn sample() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("d", DataType::Decimal128(10, 2), true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
            Field::new("i", DataType::Interval(IntervalUnit::MonthDayNano), true),
            Field::new("b", DataType::Boolean, true),
            Field::new(
                "ns",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
                true,
            ),
            Field::new("u", DataType::UInt64, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(-7)])),
            Arc::new(StringArray::from(vec![Some("x"), Some(""), None])),
            Arc::new(
                Decimal128Array::from(vec![Some(12345), None, Some(-1)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1), Some(2), None])
                    .with_timezone("+00:00"),
            ),
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                Some(IntervalMonthDayNano::new(1, 2, 3)),
                None,
                Some(IntervalMonthDayNano::new(-1, 0, 0)),
            ])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(
                datafusion::arrow::array::TimestampNanosecondArray::from(vec![
                    None,
                    Some(1_767_261_600_000_000_001),
                    Some(-5),
                ])
                .with_timezone("+00:00"),
            ),
            Arc::new(UInt64Array::from(vec![None, Some(u64::MAX), Some(3)])),
        ];
        RecordBatch::try_new(schema, cols).unwrap()
    }

    #[test]
    fn round_trip_keeps_values_nulls_and_types() {
        let batch = sample();
        let codec = RowCodec::try_new(batch.schema()).unwrap();
        let enc = codec.encoder(&batch).unwrap();
        let mut dec = codec.decoder(None, 4);
        for row in 0..batch.num_rows() {
            let mut buf = Vec::new();
            enc.encode(row, &mut buf);
            dec.push(&buf).unwrap();
        }
        assert_eq!(dec.flush().unwrap(), batch);
    }

    #[test]
    fn projection_reorders_and_drops_columns() {
        let batch = sample();
        let codec = RowCodec::try_new(batch.schema()).unwrap();
        let enc = codec.encoder(&batch).unwrap();
        let mut dec = codec.decoder(Some(&[5, 0]), 4);
        for row in 0..batch.num_rows() {
            let mut buf = Vec::new();
            enc.encode(row, &mut buf);
            dec.push(&buf).unwrap();
        }
        assert_eq!(dec.flush().unwrap(), batch.project(&[5, 0]).unwrap());
    }

    #[test]
    fn truncated_row_is_an_error_not_a_panic() {
        let batch = sample();
        let codec = RowCodec::try_new(batch.schema()).unwrap();
        let mut buf = Vec::new();
        codec.encoder(&batch).unwrap().encode(0, &mut buf);
        for cut in 0..buf.len() {
            let mut dec = codec.decoder(None, 1);
            assert!(dec.push(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    /// Lists of every shape: NULL lists, empty lists, NULL elements, strings, timestamps (both
    /// kinds), decimals, a list of lists and a large list.
    fn lists() -> RecordBatch {
        use datafusion::arrow::array::{LargeListBuilder, ListBuilder};
        let mut ints = ListBuilder::new(Int32Builder::new());
        for list in [
            vec![Some(1), Some(2), None],
            vec![],
            vec![None],
            vec![Some(-3)],
        ] {
            ints.append_value(list);
        }
        let mut texts = ListBuilder::new(StringBuilder::new());
        texts.append_value([Some("a"), Some(""), None]);
        texts.append_null();
        texts.append_value([Some("longer text"), Some("b")]);
        texts.append_value(Vec::<Option<&str>>::new());
        let mut stamps =
            ListBuilder::new(TimestampMicrosecondBuilder::new().with_timezone("+00:00"));
        stamps.append_value([Some(1), None]);
        stamps.append_value([Some(-2)]);
        stamps.append_null();
        stamps.append_value([Some(i64::MAX)]);
        let mut nanos = ListBuilder::new(Int64Builder::new());
        nanos.append_value([Some(1_767_261_600_000_000_001)]);
        nanos.append_null();
        nanos.append_value([None, Some(-5)]);
        nanos.append_value([Some(0)]);
        let nanos = {
            let list = nanos.finish();
            let (field, offsets, values, nulls) = list.into_parts();
            let ns = DataType::Timestamp(TimeUnit::Nanosecond, None);
            let values = make_array(
                values
                    .into_data()
                    .into_builder()
                    .data_type(ns.clone())
                    .build()
                    .unwrap(),
            );
            let field = Arc::new(field.as_ref().clone().with_data_type(ns));
            ListArray::new(field, offsets, values, nulls)
        };
        let mut decimals =
            ListBuilder::new(Decimal128Builder::new().with_data_type(DataType::Decimal128(10, 2)));
        decimals.append_value([Some(12345), None, Some(-1)]);
        decimals.append_value([]);
        decimals.append_value([Some(0)]);
        decimals.append_null();
        let mut nested = ListBuilder::new(ListBuilder::new(Int64Builder::new()));
        nested.values().append_value([Some(1), None]);
        nested.values().append_null();
        nested.values().append_value([]);
        nested.append(true);
        nested.append_null();
        nested.append(true);
        nested.values().append_value([Some(7)]);
        nested.append(true);
        let mut large = LargeListBuilder::new(StringBuilder::new());
        large.append_value([Some("x")]);
        large.append_value([None, Some("y")]);
        large.append_null();
        large.append_value(Vec::<Option<&str>>::new());
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            Arc::new(ints.finish()),
            Arc::new(texts.finish()),
            Arc::new(stamps.finish()),
            Arc::new(nanos),
            Arc::new(decimals.finish()),
            Arc::new(nested.finish()),
            Arc::new(large.finish()),
        ];
        let names = [
            "id", "ints", "texts", "stamps", "nanos", "decimals", "nested", "large",
        ];
        let schema = Schema::new(
            names
                .iter()
                .zip(&columns)
                .map(|(name, c)| Field::new(*name, c.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    /// `batch` encoded row by row and decoded with `projection`.
    fn round_trip(batch: &RecordBatch, projection: Option<&[usize]>) -> RecordBatch {
        let codec = RowCodec::try_new(batch.schema()).unwrap();
        let enc = codec.encoder(batch).unwrap();
        let mut dec = codec.decoder(projection, 2);
        for row in 0..batch.num_rows() {
            let mut buf = Vec::new();
            enc.encode(row, &mut buf);
            dec.push(&buf).unwrap();
        }
        dec.flush().unwrap()
    }

    #[test]
    fn lists_round_trip_with_null_and_empty_lists_and_null_elements() {
        let batch = lists();
        assert_eq!(round_trip(&batch, None), batch);
    }

    #[test]
    fn sliced_lists_encode_their_own_elements() {
        let batch = lists().slice(1, 3);
        assert_eq!(round_trip(&batch, None), batch);
    }

    #[test]
    fn projection_skips_lists_it_drops() {
        let batch = lists();
        assert_eq!(
            round_trip(&batch, Some(&[6, 0, 2])),
            batch.project(&[6, 0, 2]).unwrap()
        );
    }

    #[test]
    fn a_decoder_holds_several_batches_of_lists() {
        let batch = lists();
        let codec = RowCodec::try_new(batch.schema()).unwrap();
        let enc = codec.encoder(&batch).unwrap();
        let mut dec = codec.decoder(None, 0);
        for range in [0..2, 2..4] {
            for row in range.clone() {
                let mut buf = Vec::new();
                enc.encode(row, &mut buf);
                dec.push(&buf).unwrap();
            }
            assert_eq!(dec.flush().unwrap(), batch.slice(range.start, 2));
        }
    }

    #[test]
    fn truncated_or_overlong_lists_are_errors_not_panics() {
        let batch = lists();
        let codec = RowCodec::try_new(batch.schema()).unwrap();
        let enc = codec.encoder(&batch).unwrap();
        for row in 0..batch.num_rows() {
            let mut buf = Vec::new();
            enc.encode(row, &mut buf);
            for cut in 0..buf.len() {
                let mut dec = codec.decoder(None, 1);
                assert!(dec.push(&buf[..cut]).is_err(), "row {row} cut at {cut}");
            }
        }
        // Row 2 with its first list's count (after the bitmap and the id) made 2^32 - 1.
        let mut buf = Vec::new();
        enc.encode(2, &mut buf);
        buf[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut dec = codec.decoder(None, 1);
        assert!(matches!(dec.push(&buf), Err(EngineError::Corrupt(_))));
    }

    #[test]
    fn a_list_of_an_unsupported_type_is_refused_by_its_list_type() {
        let item = Arc::new(Field::new("item", DataType::Utf8View, true));
        let schema = Schema::new(vec![Field::new("l", DataType::List(item), true)]);
        let err = RowCodec::try_new(Arc::new(schema)).unwrap_err();
        assert!(
            matches!(&err, EngineError::Unsupported(t) if t.starts_with("List(")),
            "{err}"
        );
    }
}
