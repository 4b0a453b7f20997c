//! Rows of Arrow values encoded so that their bytes compare as the rows sort, and decoded back
//! into arrays: the aggregate's group keys and the value multisets of MIN, MAX,
//! COUNT(DISTINCT), STRING_AGG, ARRAY_AGG and recomputed aggregates, which live in operator
//! state. The encoding is ours and versioned with the data directory; Arrow's row format, which
//! it replaces there, is not promised stable across Arrow releases.
//!
//! Each value is a NULL marker (as in [`super::keys::SortKeyEncoder`]: `00` for a NULL sorted
//! first, `02` for one sorted last, `01` before a value), then the value's ascending encoding,
//! inverted when the column sorts descending:
//! - fixed-width values (integers, floats, decimals, dates, times, timestamps, durations,
//!   intervals) as their components big-endian, signed ones with the sign bit flipped, floats in
//!   IEEE 754 total order, an interval as its months, days, then nanoseconds; a boolean as one
//!   byte. A NULL is padded with as many zero bytes, so every row of one fixed-width column has
//!   one length (the aggregate reads such values as numbers).
//! - strings and byte strings escaped and terminated ([`super::keys::put_bytes`]), fixed-size
//!   binary as its bytes;
//! - a list as `01` and the element (with its own marker) for each element, then `00`;
//! - a struct as its fields one after the other (a NULL struct: the marker alone);
//! - a dictionary-encoded value as the value.
//!
//! Every encoding is fixed-width or prefix-free, so a row (their concatenation) is too, and rows
//! compare bytewise as Arrow's sort kernels order them. Decoding checks what it reads: bytes
//! that do not decode are reported as corrupt, never a panic.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayData, ArrayRef, AsArray, BinaryArray, BinaryViewArray, BooleanArray,
    FixedSizeBinaryArray, GenericListArray, LargeBinaryArray, LargeStringArray, NullArray,
    OffsetSizeTrait, StringArray, StringViewArray, StructArray, make_array,
};
use datafusion::arrow::buffer::{
    BooleanBuffer, Buffer, MutableBuffer, NullBuffer, OffsetBuffer, ScalarBuffer,
};
use datafusion::arrow::compute::{SortOptions, cast};
use datafusion::arrow::datatypes::{DataType, FieldRef, Fields, IntervalUnit};

use super::keys::put_bytes;
use crate::{EngineError, Result};

const NULL_FIRST: u8 = 0;
const VALUE: u8 = 1;
const NULL_LAST: u8 = 2;
const ESCAPE: u8 = 0xff;
const TERMINATOR: u8 = 0x01;

/// One component of a fixed-width value, by its width in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Signed(usize),
    Unsigned(usize),
    Float(usize),
}

/// How values of one type are encoded.
#[derive(Debug, Clone)]
enum Kind {
    Null,
    Bool,
    /// A primitive of `width` bytes (little-endian in Arrow), made of `parts` in order.
    Fixed {
        width: usize,
        parts: &'static [Part],
    },
    /// Strings and byte strings, of this type.
    Bytes(DataType),
    FixedBinary(usize),
    List {
        field: FieldRef,
        large: bool,
        item: Box<Kind>,
    },
    Struct {
        fields: Fields,
        children: Vec<Kind>,
    },
    /// A dictionary-encoded column of this type, encoded as its values.
    Dictionary {
        data_type: DataType,
        value: Box<Kind>,
    },
}

impl Kind {
    fn of(dt: &DataType) -> Result<Self> {
        use Part::{Float, Signed, Unsigned};
        let fixed = |width, parts| Kind::Fixed { width, parts };
        Ok(match dt {
            DataType::Null => Kind::Null,
            DataType::Boolean => Kind::Bool,
            DataType::Int8 => fixed(1, &[Signed(1)]),
            DataType::Int16 => fixed(2, &[Signed(2)]),
            DataType::Int32 | DataType::Date32 | DataType::Time32(_) => fixed(4, &[Signed(4)]),
            DataType::Int64
            | DataType::Date64
            | DataType::Time64(_)
            | DataType::Timestamp(_, _)
            | DataType::Duration(_) => fixed(8, &[Signed(8)]),
            DataType::UInt8 => fixed(1, &[Unsigned(1)]),
            DataType::UInt16 => fixed(2, &[Unsigned(2)]),
            DataType::UInt32 => fixed(4, &[Unsigned(4)]),
            DataType::UInt64 => fixed(8, &[Unsigned(8)]),
            DataType::Float16 => fixed(2, &[Float(2)]),
            DataType::Float32 => fixed(4, &[Float(4)]),
            DataType::Float64 => fixed(8, &[Float(8)]),
            DataType::Decimal32(_, _) => fixed(4, &[Signed(4)]),
            DataType::Decimal64(_, _) => fixed(8, &[Signed(8)]),
            DataType::Decimal128(_, _) => fixed(16, &[Signed(16)]),
            DataType::Decimal256(_, _) => fixed(32, &[Signed(32)]),
            DataType::Interval(IntervalUnit::YearMonth) => fixed(4, &[Signed(4)]),
            DataType::Interval(IntervalUnit::DayTime) => fixed(8, &[Signed(4), Signed(4)]),
            DataType::Interval(IntervalUnit::MonthDayNano) => {
                fixed(16, &[Signed(4), Signed(4), Signed(8)])
            }
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView => Kind::Bytes(dt.clone()),
            DataType::FixedSizeBinary(n) => {
                Kind::FixedBinary(usize::try_from(*n).map_err(|_| unsupported(dt))?)
            }
            DataType::List(field) | DataType::LargeList(field) => Kind::List {
                field: Arc::clone(field),
                large: matches!(dt, DataType::LargeList(_)),
                item: Box::new(Kind::of(field.data_type()).map_err(|_| unsupported(dt))?),
            },
            DataType::Struct(fields) => Kind::Struct {
                fields: fields.clone(),
                children: fields
                    .iter()
                    .map(|f| Kind::of(f.data_type()))
                    .collect::<Result<_>>()
                    .map_err(|_| unsupported(dt))?,
            },
            DataType::Dictionary(_, value)
                if !matches!(value.as_ref(), DataType::Dictionary(..)) =>
            {
                Kind::Dictionary {
                    data_type: dt.clone(),
                    value: Box::new(Kind::of(value).map_err(|_| unsupported(dt))?),
                }
            }
            other => return Err(unsupported(other)),
        })
    }
}

fn unsupported(dt: &DataType) -> EngineError {
    EngineError::Unsupported(format!(
        "{dt} as a grouping key or an aggregate's ordered value"
    ))
}

fn corrupt(what: &str) -> EngineError {
    EngineError::Corrupt(format!("sorted row: {what}"))
}

/// Encodes columns into [`SortRows`] and decodes rows back into columns.
#[derive(Debug, Clone)]
pub struct SortRowCodec {
    fields: Vec<(DataType, SortOptions, Kind)>,
}

/// Encoded rows, one after the other in one buffer.
#[derive(Debug, Clone, Default)]
pub struct SortRows {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl SortRows {
    /// Row `i` (empty past the end).
    pub fn row(&self, i: usize) -> &[u8] {
        let start = match i {
            0 => 0,
            _ => self.ends.get(i - 1).copied().unwrap_or(0),
        };
        let end = self.ends.get(i).copied().unwrap_or(start);
        self.bytes.get(start..end).unwrap_or_default()
    }

    pub fn num_rows(&self) -> usize {
        self.ends.len()
    }
}

impl SortRowCodec {
    /// A codec for rows of columns of these types, with their sort options.
    pub fn new(fields: Vec<(DataType, SortOptions)>) -> Result<Self> {
        let fields = fields
            .into_iter()
            .map(|(dt, options)| Kind::of(&dt).map(|kind| (dt, options, kind)))
            .collect::<Result<_>>()?;
        Ok(Self { fields })
    }

    /// A codec for rows of columns of these types, ascending with NULLs first.
    pub fn ascending(types: &[DataType]) -> Result<Self> {
        Self::new(
            types
                .iter()
                .map(|t| (t.clone(), SortOptions::new(false, true)))
                .collect(),
        )
    }

    /// The rows of `columns` (one per field, of its type, all of one length).
    pub fn convert_columns(&self, columns: &[ArrayRef]) -> Result<SortRows> {
        if columns.len() != self.fields.len() {
            return Err(EngineError::Internal(format!(
                "{} columns for a sorted row of {}",
                columns.len(),
                self.fields.len()
            )));
        }
        let rows = columns.first().map_or(0, |c| c.len());
        let mut encoders = Vec::with_capacity(columns.len());
        for (column, (dt, options, kind)) in columns.iter().zip(&self.fields) {
            if column.data_type() != dt || column.len() != rows {
                return Err(EngineError::Internal(format!(
                    "a column of {} ({} rows) for a sorted row field of {dt} ({rows} rows)",
                    column.data_type(),
                    column.len()
                )));
            }
            encoders.push((Enc::new(column.as_ref(), kind)?, *options));
        }
        let mut out = SortRows {
            bytes: Vec::with_capacity(rows * 9 * columns.len()),
            ends: Vec::with_capacity(rows),
        };
        for row in 0..rows {
            for (enc, options) in &encoders {
                let null = enc.is_null(row);
                out.bytes.push(match (null, options.nulls_first) {
                    (false, _) => VALUE,
                    (true, true) => NULL_FIRST,
                    (true, false) => NULL_LAST,
                });
                let start = out.bytes.len();
                if null {
                    out.bytes.resize(start + enc.padding(), 0);
                } else {
                    // Nested NULLs as Arrow's comparators order them: first in the ascending
                    // encoding when they end first after any inversion.
                    let nested = if options.nulls_first == options.descending {
                        NULL_LAST
                    } else {
                        NULL_FIRST
                    };
                    enc.value(row, &mut out.bytes, nested);
                    if options.descending {
                        out.bytes[start..].iter_mut().for_each(|b| *b = !*b);
                    }
                }
            }
            out.ends.push(out.bytes.len());
        }
        Ok(out)
    }

    /// The columns of `rows`, each of its field's type.
    pub fn convert_rows<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<ArrayRef>> {
        let mut decoders: Vec<Dec> = self
            .fields
            .iter()
            .map(|(dt, _, k)| Dec::new(dt, k))
            .collect();
        for row in rows {
            let mut r = Reader { bytes: row, at: 0 };
            for ((_, options, _), dec) in self.fields.iter().zip(decoders.iter_mut()) {
                let mask = if options.descending { 0xff } else { 0 };
                match r.byte(0)? {
                    VALUE => dec.value(&mut r, mask)?,
                    NULL_FIRST | NULL_LAST => {
                        r.take(dec.padding())?;
                        dec.null();
                    }
                    _ => return Err(corrupt("bad NULL marker")),
                }
            }
            if r.at != row.len() {
                return Err(corrupt("bytes after the last column"));
            }
        }
        decoders.into_iter().map(Dec::finish).collect()
    }
}

/// A column ready to encode (its arrays are cheap clones: reference-counted buffers).
enum Enc {
    Null,
    Bool(BooleanArray),
    Fixed {
        nulls: Option<NullBuffer>,
        /// The values buffer, and the array's first value in it.
        values: Buffer,
        offset: usize,
        width: usize,
        parts: &'static [Part],
    },
    Bytes {
        nulls: Option<NullBuffer>,
        values: BytesOf,
    },
    FixedBinary(FixedSizeBinaryArray),
    List {
        nulls: Option<NullBuffer>,
        offsets: Vec<usize>,
        item: Box<Enc>,
    },
    Struct {
        nulls: Option<NullBuffer>,
        children: Vec<Enc>,
    },
}

/// Byte strings of one of Arrow's six string and binary layouts.
enum BytesOf {
    Utf8(StringArray),
    LargeUtf8(LargeStringArray),
    Utf8View(StringViewArray),
    Binary(BinaryArray),
    LargeBinary(LargeBinaryArray),
    BinaryView(BinaryViewArray),
}

impl BytesOf {
    fn get(&self, i: usize) -> &[u8] {
        match self {
            BytesOf::Utf8(a) => a.value(i).as_bytes(),
            BytesOf::LargeUtf8(a) => a.value(i).as_bytes(),
            BytesOf::Utf8View(a) => a.value(i).as_bytes(),
            BytesOf::Binary(a) => a.value(i),
            BytesOf::LargeBinary(a) => a.value(i),
            BytesOf::BinaryView(a) => a.value(i),
        }
    }
}

fn list_offsets<O: OffsetSizeTrait>(list: &GenericListArray<O>) -> Vec<usize> {
    list.value_offsets().iter().map(|o| o.as_usize()).collect()
}

impl Enc {
    fn new(array: &dyn Array, kind: &Kind) -> Result<Self> {
        let wrong =
            || EngineError::Internal(format!("a sorted row column of {}", array.data_type()));
        Ok(match kind {
            Kind::Null => Enc::Null,
            Kind::Bool => Enc::Bool(array.as_boolean_opt().ok_or_else(wrong)?.clone()),
            Kind::Fixed { width, parts } => {
                let data = array.to_data();
                Enc::Fixed {
                    nulls: array.nulls().cloned(),
                    values: data.buffers().first().ok_or_else(wrong)?.clone(),
                    offset: data.offset(),
                    width: *width,
                    parts,
                }
            }
            Kind::Bytes(_) => Enc::Bytes {
                nulls: array.nulls().cloned(),
                values: match array.data_type() {
                    DataType::Utf8 => BytesOf::Utf8(array.as_string::<i32>().clone()),
                    DataType::LargeUtf8 => BytesOf::LargeUtf8(array.as_string::<i64>().clone()),
                    DataType::Utf8View => BytesOf::Utf8View(array.as_string_view().clone()),
                    DataType::Binary => BytesOf::Binary(array.as_binary::<i32>().clone()),
                    DataType::LargeBinary => BytesOf::LargeBinary(array.as_binary::<i64>().clone()),
                    DataType::BinaryView => BytesOf::BinaryView(array.as_binary_view().clone()),
                    _ => return Err(wrong()),
                },
            },
            Kind::FixedBinary(_) => {
                Enc::FixedBinary(array.as_fixed_size_binary_opt().ok_or_else(wrong)?.clone())
            }
            Kind::List { item, large, .. } => {
                let (offsets, values) = if *large {
                    let l = array.as_list_opt::<i64>().ok_or_else(wrong)?;
                    (list_offsets(l), l.values())
                } else {
                    let l = array.as_list_opt::<i32>().ok_or_else(wrong)?;
                    (list_offsets(l), l.values())
                };
                Enc::List {
                    nulls: array.nulls().cloned(),
                    offsets,
                    item: Box::new(Enc::new(values.as_ref(), item)?),
                }
            }
            Kind::Struct { children, .. } => {
                let s = array.as_struct_opt().ok_or_else(wrong)?;
                Enc::Struct {
                    nulls: array.nulls().cloned(),
                    children: s
                        .columns()
                        .iter()
                        .zip(children)
                        .map(|(c, k)| Enc::new(c.as_ref(), k))
                        .collect::<Result<_>>()?,
                }
            }
            Kind::Dictionary { value, .. } => {
                let DataType::Dictionary(_, value_type) = array.data_type() else {
                    return Err(wrong());
                };
                Enc::new(cast(array, value_type)?.as_ref(), value)?
            }
        })
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Enc::Null => true,
            Enc::Bool(a) => a.is_null(i),
            Enc::FixedBinary(a) => a.is_null(i),
            Enc::Fixed { nulls, .. }
            | Enc::Bytes { nulls, .. }
            | Enc::List { nulls, .. }
            | Enc::Struct { nulls, .. } => nulls.as_ref().is_some_and(|n| n.is_null(i)),
        }
    }

    fn padding(&self) -> usize {
        match self {
            Enc::Bool(_) => 1,
            Enc::Fixed { width, .. } => *width,
            Enc::FixedBinary(a) => usize::try_from(a.value_length()).unwrap_or(0),
            _ => 0,
        }
    }

    /// Appends the marker (`null` for a NULL) and value of row `i`, ascending.
    fn item(&self, i: usize, out: &mut Vec<u8>, null: u8) {
        if self.is_null(i) {
            out.push(null);
            out.resize(out.len() + self.padding(), 0);
        } else {
            out.push(VALUE);
            self.value(i, out, null);
        }
    }

    /// Appends the ascending encoding of the (non-null) value of row `i`; `null` marks NULL
    /// elements of lists and fields of structs.
    fn value(&self, i: usize, out: &mut Vec<u8>, null: u8) {
        match self {
            Enc::Null => {}
            Enc::Bool(a) => out.push(u8::from(a.value(i))),
            Enc::Fixed {
                values,
                offset,
                width,
                parts,
                ..
            } => {
                let at = (offset + i) * width;
                let native = values.as_slice().get(at..at + width).unwrap_or_default();
                encode_fixed(native, parts, out);
            }
            Enc::Bytes { values, .. } => put_bytes(out, values.get(i)),
            Enc::FixedBinary(a) => out.extend_from_slice(a.value(i)),
            Enc::List { offsets, item, .. } => {
                let from = offsets.get(i).copied().unwrap_or(0);
                let to = offsets.get(i + 1).copied().unwrap_or(from);
                for e in from..to {
                    out.push(1);
                    item.item(e, out, null);
                }
                out.push(0);
            }
            Enc::Struct { children, .. } => {
                for child in children {
                    child.item(i, out, null);
                }
            }
        }
    }
}

/// Appends the ascending encoding of a fixed-width value from its little-endian bytes.
fn encode_fixed(native: &[u8], parts: &[Part], out: &mut Vec<u8>) {
    let mut at = 0;
    for part in parts {
        let (Part::Signed(w) | Part::Unsigned(w) | Part::Float(w)) = *part;
        let start = out.len();
        out.extend(native.get(at..at + w).unwrap_or_default().iter().rev());
        at += w;
        let be = &mut out[start..];
        let Some(top) = be.first().copied() else {
            continue;
        };
        match part {
            Part::Signed(_) => be[0] ^= 0x80,
            Part::Unsigned(_) => {}
            Part::Float(_) if top & 0x80 == 0 => be[0] ^= 0x80,
            Part::Float(_) => be.iter_mut().for_each(|b| *b = !*b),
        }
    }
}

/// Reads rows back.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self, mask: u8) -> Result<u8> {
        let b = self
            .bytes
            .get(self.at)
            .ok_or_else(|| corrupt("row too short"))?;
        self.at += 1;
        Ok(b ^ mask)
    }

    /// The next `n` bytes, as stored.
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let b = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or_else(|| corrupt("row too short"))?;
        self.at += n;
        Ok(b)
    }

    /// An escaped and terminated byte string, appended to `out`.
    fn bytes_into(&mut self, mask: u8, out: &mut Vec<u8>) -> Result<()> {
        loop {
            let b = self.byte(mask)?;
            if b != 0 {
                out.push(b);
                continue;
            }
            match self.byte(mask)? {
                ESCAPE => out.push(0),
                TERMINATOR => return Ok(()),
                _ => return Err(corrupt("bad escape in a string")),
            }
        }
    }
}

/// A column being decoded.
enum Dec {
    Null(usize),
    Bool {
        values: Vec<bool>,
        valid: Vec<bool>,
    },
    Fixed {
        data_type: DataType,
        width: usize,
        parts: &'static [Part],
        /// Aligned for the native type (Arrow checks).
        buf: MutableBuffer,
        valid: Vec<bool>,
    },
    Bytes {
        data_type: DataType,
        data: Vec<u8>,
        ends: Vec<usize>,
        valid: Vec<bool>,
    },
    FixedBinary {
        size: usize,
        buf: Vec<u8>,
        valid: Vec<bool>,
    },
    List {
        field: FieldRef,
        large: bool,
        ends: Vec<usize>,
        valid: Vec<bool>,
        item: Box<Dec>,
    },
    Struct {
        fields: Fields,
        children: Vec<Dec>,
        valid: Vec<bool>,
    },
    Dictionary {
        data_type: DataType,
        value: Box<Dec>,
    },
}

fn null_buffer(valid: Vec<bool>) -> Option<NullBuffer> {
    if valid.iter().all(|&v| v) {
        None
    } else {
        Some(NullBuffer::from(valid))
    }
}

impl Dec {
    fn new(dt: &DataType, kind: &Kind) -> Self {
        match kind {
            Kind::Null => Dec::Null(0),
            Kind::Bool => Dec::Bool {
                values: Vec::new(),
                valid: Vec::new(),
            },
            Kind::Fixed { width, parts } => Dec::Fixed {
                data_type: dt.clone(),
                width: *width,
                parts,
                buf: MutableBuffer::new(0),
                valid: Vec::new(),
            },
            Kind::Bytes(t) => Dec::Bytes {
                data_type: t.clone(),
                data: Vec::new(),
                ends: Vec::new(),
                valid: Vec::new(),
            },
            Kind::FixedBinary(size) => Dec::FixedBinary {
                size: *size,
                buf: Vec::new(),
                valid: Vec::new(),
            },
            Kind::List { field, large, item } => Dec::List {
                field: Arc::clone(field),
                large: *large,
                ends: Vec::new(),
                valid: Vec::new(),
                item: Box::new(Dec::new(field.data_type(), item)),
            },
            Kind::Struct { fields, children } => Dec::Struct {
                fields: fields.clone(),
                children: fields
                    .iter()
                    .zip(children)
                    .map(|(f, k)| Dec::new(f.data_type(), k))
                    .collect(),
                valid: Vec::new(),
            },
            Kind::Dictionary { data_type, value } => {
                let value_type = match data_type {
                    DataType::Dictionary(_, v) => v.as_ref().clone(),
                    other => other.clone(),
                };
                Dec::Dictionary {
                    data_type: data_type.clone(),
                    value: Box::new(Dec::new(&value_type, value)),
                }
            }
        }
    }

    fn padding(&self) -> usize {
        match self {
            Dec::Bool { .. } => 1,
            Dec::Fixed { width, .. } => *width,
            Dec::FixedBinary { size, .. } => *size,
            Dec::Dictionary { value, .. } => value.padding(),
            _ => 0,
        }
    }

    /// Appends a NULL.
    fn null(&mut self) {
        match self {
            Dec::Null(n) => *n += 1,
            Dec::Bool { values, valid } => {
                values.push(false);
                valid.push(false);
            }
            Dec::Fixed {
                width, buf, valid, ..
            } => {
                buf.resize(buf.len() + *width, 0);
                valid.push(false);
            }
            Dec::Bytes {
                data, ends, valid, ..
            } => {
                ends.push(data.len());
                valid.push(false);
            }
            Dec::FixedBinary { size, buf, valid } => {
                buf.resize(buf.len() + *size, 0);
                valid.push(false);
            }
            Dec::List {
                ends, valid, item, ..
            } => {
                ends.push(item.len());
                valid.push(false);
            }
            Dec::Struct {
                children, valid, ..
            } => {
                children.iter_mut().for_each(Dec::null);
                valid.push(false);
            }
            Dec::Dictionary { value, .. } => value.null(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Dec::Null(n) => *n,
            Dec::Bool { valid, .. }
            | Dec::Fixed { valid, .. }
            | Dec::Bytes { valid, .. }
            | Dec::FixedBinary { valid, .. }
            | Dec::List { valid, .. }
            | Dec::Struct { valid, .. } => valid.len(),
            Dec::Dictionary { value, .. } => value.len(),
        }
    }

    /// Reads a marker and a value (a list's element, a struct's field).
    fn item(&mut self, r: &mut Reader<'_>, mask: u8) -> Result<()> {
        match r.byte(mask)? {
            VALUE => self.value(r, mask),
            NULL_FIRST | NULL_LAST => {
                r.take(self.padding())?;
                self.null();
                Ok(())
            }
            _ => Err(corrupt("bad NULL marker in a list or struct")),
        }
    }

    /// Reads a non-null value, its bytes XORed with `mask`.
    fn value(&mut self, r: &mut Reader<'_>, mask: u8) -> Result<()> {
        match self {
            Dec::Null(_) => return Err(corrupt("a value of the NULL type")),
            Dec::Bool { values, valid } => {
                values.push(match r.byte(mask)? {
                    0 => false,
                    1 => true,
                    _ => return Err(corrupt("bad boolean")),
                });
                valid.push(true);
            }
            Dec::Fixed {
                parts, buf, valid, ..
            } => {
                for part in parts.iter() {
                    let (Part::Signed(w) | Part::Unsigned(w) | Part::Float(w)) = *part;
                    let start = buf.len();
                    buf.extend(r.take(w)?.iter().rev().map(|b| b ^ mask));
                    // Little-endian now: the top byte is the last.
                    let le = &mut buf[start..];
                    let top = le.len() - 1;
                    match part {
                        Part::Signed(_) => le[top] ^= 0x80,
                        Part::Unsigned(_) => {}
                        Part::Float(_) if le[top] & 0x80 != 0 => le[top] ^= 0x80,
                        Part::Float(_) => le.iter_mut().for_each(|b| *b = !*b),
                    }
                }
                valid.push(true);
            }
            Dec::Bytes {
                data, ends, valid, ..
            } => {
                r.bytes_into(mask, data)?;
                ends.push(data.len());
                valid.push(true);
            }
            Dec::FixedBinary { size, buf, valid } => {
                buf.extend(r.take(*size)?.iter().map(|b| b ^ mask));
                valid.push(true);
            }
            Dec::List {
                ends, valid, item, ..
            } => {
                loop {
                    match r.byte(mask)? {
                        0 => break,
                        1 => item.item(r, mask)?,
                        _ => return Err(corrupt("bad list element marker")),
                    }
                }
                ends.push(item.len());
                valid.push(true);
            }
            Dec::Struct {
                children, valid, ..
            } => {
                for child in children.iter_mut() {
                    child.item(r, mask)?;
                }
                valid.push(true);
            }
            Dec::Dictionary { value, .. } => value.value(r, mask)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<ArrayRef> {
        Ok(match self {
            Dec::Null(n) => Arc::new(NullArray::new(n)),
            Dec::Bool { values, valid } => Arc::new(BooleanArray::new(
                BooleanBuffer::from(values),
                null_buffer(valid),
            )),
            Dec::Fixed {
                data_type,
                buf,
                valid,
                ..
            } => {
                let len = valid.len();
                let data = ArrayData::builder(data_type)
                    .len(len)
                    .add_buffer(buf.into())
                    .nulls(null_buffer(valid))
                    .build()?;
                make_array(data)
            }
            Dec::Bytes {
                data_type,
                data,
                ends,
                valid,
            } => bytes_array(&data_type, data, &ends, null_buffer(valid))?,
            Dec::FixedBinary { size, buf, valid } => Arc::new(FixedSizeBinaryArray::try_new(
                i32::try_from(size).map_err(|_| corrupt("fixed-size binary too wide"))?,
                Buffer::from_vec(buf),
                null_buffer(valid),
            )?),
            Dec::List {
                field,
                large,
                ends,
                valid,
                item,
            } => {
                let items = item.finish()?;
                let nulls = null_buffer(valid);
                if large {
                    let offsets = offsets::<i64>(&ends)?;
                    Arc::new(GenericListArray::<i64>::try_new(
                        field, offsets, items, nulls,
                    )?)
                } else {
                    let offsets = offsets::<i32>(&ends)?;
                    Arc::new(GenericListArray::<i32>::try_new(
                        field, offsets, items, nulls,
                    )?)
                }
            }
            Dec::Struct {
                fields,
                children,
                valid,
            } => {
                let len = valid.len();
                let columns = children
                    .into_iter()
                    .map(Dec::finish)
                    .collect::<Result<Vec<_>>>()?;
                if fields.is_empty() {
                    Arc::new(StructArray::new_empty_fields(len, null_buffer(valid)))
                } else {
                    Arc::new(StructArray::try_new(fields, columns, null_buffer(valid))?)
                }
            }
            Dec::Dictionary { data_type, value } => cast(&value.finish()?, &data_type)?,
        })
    }
}

/// Offsets from the end of each value.
fn offsets<O: OffsetSizeTrait>(ends: &[usize]) -> Result<OffsetBuffer<O>> {
    let mut v = Vec::with_capacity(ends.len() + 1);
    v.push(O::usize_as(0));
    for &end in ends {
        v.push(O::from_usize(end).ok_or_else(|| corrupt("offset overflow"))?);
    }
    Ok(OffsetBuffer::new(ScalarBuffer::from(v)))
}

/// Each value's bytes (`None` for a NULL), from the values' bytes and ends.
fn slices<'a>(data: &'a [u8], ends: &[usize], nulls: Option<&NullBuffer>) -> Vec<Option<&'a [u8]>> {
    let mut start = 0;
    ends.iter()
        .enumerate()
        .map(|(i, &end)| {
            let v = data.get(start..end).unwrap_or_default();
            start = end;
            nulls.is_none_or(|n| n.is_valid(i)).then_some(v)
        })
        .collect()
}

/// A string or binary column of `data_type` from its values' bytes and ends.
fn bytes_array(
    data_type: &DataType,
    data: Vec<u8>,
    ends: &[usize],
    nulls: Option<NullBuffer>,
) -> Result<ArrayRef> {
    Ok(match data_type {
        DataType::Utf8View => {
            let mut out = Vec::with_capacity(ends.len());
            for v in slices(&data, ends, nulls.as_ref()) {
                out.push(match v {
                    Some(b) => Some(
                        std::str::from_utf8(b)
                            .map_err(|_| corrupt("a string that is not UTF-8"))?,
                    ),
                    None => None,
                });
            }
            Arc::new(StringViewArray::from(out))
        }
        DataType::BinaryView => {
            Arc::new(BinaryViewArray::from(slices(&data, ends, nulls.as_ref())))
        }
        DataType::Utf8 => Arc::new(StringArray::try_new(
            offsets::<i32>(ends)?,
            Buffer::from_vec(data),
            nulls,
        )?),
        DataType::LargeUtf8 => Arc::new(LargeStringArray::try_new(
            offsets::<i64>(ends)?,
            Buffer::from_vec(data),
            nulls,
        )?),
        DataType::Binary => Arc::new(BinaryArray::try_new(
            offsets::<i32>(ends)?,
            Buffer::from_vec(data),
            nulls,
        )?),
        DataType::LargeBinary => Arc::new(LargeBinaryArray::try_new(
            offsets::<i64>(ends)?,
            Buffer::from_vec(data),
            nulls,
        )?),
        other => return Err(unsupported(other)),
    })
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use datafusion::arrow::array::{
        Date32Array, Decimal128Array, DictionaryArray, DurationMicrosecondArray, Float32Array,
        Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, IntervalDayTimeArray,
        IntervalMonthDayNanoArray, IntervalYearMonthArray, LargeListArray, ListArray,
        Time64MicrosecondArray, TimestampMicrosecondArray, UInt8Array, UInt64Array,
        make_comparator,
    };
    use datafusion::arrow::datatypes::{Field, Int32Type, IntervalDayTime, IntervalMonthDayNano};

    use super::*;

    /// Columns of every supported kind, 7 rows each, with NULLs, duplicates and extremes.
    fn columns() -> Vec<ArrayRef> {
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
            Some(vec![Some(1)]),
            Some(vec![Some(1), Some(-2), Some(3)]),
            Some(vec![None]),
            Some(vec![Some(1)]),
        ]);
        let texts = StringArray::from(vec![
            Some("b"),
            None,
            Some(""),
            Some("a\0b"),
            Some("a"),
            Some("ab"),
            Some("b"),
        ]);
        let large_list = LargeListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8, true)),
            OffsetBuffer::new(ScalarBuffer::from(vec![0i64, 1, 1, 3, 4, 4, 6, 7])),
            Arc::new(texts.clone()),
            Some(NullBuffer::from(vec![
                true, true, true, true, false, true, true,
            ])),
        );
        let structs = StructArray::try_new(
            Fields::from(vec![
                Field::new("a", DataType::Int32, true),
                Field::new("b", DataType::Utf8, true),
            ]),
            vec![
                Arc::new(Int32Array::from(vec![
                    Some(1),
                    None,
                    Some(1),
                    Some(2),
                    None,
                    Some(1),
                    Some(1),
                ])),
                Arc::new(texts.clone()),
            ],
            Some(NullBuffer::from(vec![
                true, true, false, true, true, true, true,
            ])),
        )
        .expect("struct");
        let dictionary: DictionaryArray<Int32Type> = vec![
            Some("x"),
            None,
            Some("a"),
            Some("x"),
            Some(""),
            Some("b"),
            Some("a"),
        ]
        .into_iter()
        .collect();
        let mdn = |m, d, n| IntervalMonthDayNano::new(m, d, n);
        vec![
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(false),
                Some(true),
                Some(false),
                None,
                Some(true),
            ])),
            Arc::new(Int8Array::from(vec![
                Some(i8::MIN),
                None,
                Some(-1),
                Some(0),
                Some(1),
                Some(i8::MAX),
                Some(0),
            ])),
            Arc::new(Int16Array::from(vec![
                Some(-300),
                Some(300),
                None,
                Some(0),
                Some(-1),
                Some(1),
                Some(300),
            ])),
            Arc::new(Int32Array::from(vec![
                Some(i32::MIN),
                Some(-1),
                Some(0),
                None,
                Some(7),
                Some(i32::MAX),
                Some(-1),
            ])),
            Arc::new(Int64Array::from(vec![
                Some(i64::MIN),
                Some(i64::MAX),
                Some(-5),
                Some(5),
                None,
                Some(0),
                Some(5),
            ])),
            Arc::new(UInt8Array::from(vec![
                Some(0),
                Some(255),
                Some(1),
                None,
                Some(128),
                Some(127),
                Some(1),
            ])),
            Arc::new(UInt64Array::from(vec![
                Some(u64::MAX),
                Some(0),
                Some(1 << 63),
                None,
                Some(1),
                Some(2),
                Some(0),
            ])),
            Arc::new(Float32Array::from(vec![
                Some(-1.5),
                Some(f32::NAN),
                Some(0.0),
                Some(f32::NEG_INFINITY),
                None,
                Some(2.25),
                Some(-1.5),
            ])),
            Arc::new(Float64Array::from(vec![
                Some(f64::INFINITY),
                Some(-0.5),
                Some(0.5),
                Some(f64::NAN),
                Some(-1e300),
                None,
                Some(0.5),
            ])),
            Arc::new(
                Decimal128Array::from(vec![
                    Some(-12345),
                    Some(i128::MAX / 10),
                    None,
                    Some(0),
                    Some(1),
                    Some(-1),
                    Some(1),
                ])
                .with_precision_and_scale(38, 2)
                .expect("decimal"),
            ),
            Arc::new(Date32Array::from(vec![
                Some(-1),
                Some(0),
                Some(20000),
                None,
                Some(1),
                Some(0),
                Some(-1),
            ])),
            Arc::new(Time64MicrosecondArray::from(vec![
                Some(0),
                Some(86_399_999_999),
                None,
                Some(1),
                Some(2),
                Some(3),
                Some(0),
            ])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(-1),
                    Some(0),
                    Some(1_700_000_000_000_000),
                    None,
                    Some(5),
                    Some(-1),
                    Some(0),
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(DurationMicrosecondArray::from(vec![
                Some(3),
                None,
                Some(-3),
                Some(0),
                Some(3),
                Some(9),
                Some(-9),
            ])),
            Arc::new(IntervalYearMonthArray::from(vec![
                Some(1),
                Some(-1),
                None,
                Some(0),
                Some(12),
                Some(1),
                Some(0),
            ])),
            Arc::new(IntervalDayTimeArray::from(vec![
                Some(IntervalDayTime::new(1, -5)),
                Some(IntervalDayTime::new(-1, 5)),
                None,
                Some(IntervalDayTime::new(1, 5)),
                Some(IntervalDayTime::new(0, 0)),
                Some(IntervalDayTime::new(1, -5)),
                Some(IntervalDayTime::new(0, 1)),
            ])),
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                Some(mdn(1, 2, -3)),
                Some(mdn(0, 40, 0)),
                Some(mdn(1, 2, 3)),
                None,
                Some(mdn(-1, 0, 0)),
                Some(mdn(1, 2, -3)),
                Some(mdn(0, 0, i64::MIN)),
            ])),
            Arc::new(texts.clone()),
            Arc::new(LargeStringArray::from(vec![
                Some("z"),
                Some(""),
                None,
                Some("\0"),
                Some("\0\0"),
                Some("zz"),
                Some("z"),
            ])),
            Arc::new(StringViewArray::from(vec![
                Some("a long string past twelve bytes"),
                None,
                Some("a"),
                Some("a long string past twelve"),
                Some(""),
                Some("b"),
                Some("a"),
            ])),
            Arc::new(BinaryArray::from(vec![
                Some(&b"\x00\xff"[..]),
                Some(b"\xff"),
                None,
                Some(b""),
                Some(b"\x00"),
                Some(b"\x00\x00"),
                Some(b"\xff"),
            ])),
            Arc::new(BinaryViewArray::from(vec![
                Some(&b"\x01"[..]),
                None,
                Some(b""),
                Some(b"\x00"),
                Some(b"\x01\x00"),
                Some(b"\x01"),
                Some(b"x"),
            ])),
            Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                    vec![
                        Some(b"abc"),
                        None,
                        Some(b"ab\0"),
                        Some(b"\xff\0\0"),
                        Some(b"abc"),
                        Some(b"\0\0\0"),
                        None,
                    ]
                    .into_iter(),
                    3,
                )
                .expect("fixed binary"),
            ),
            Arc::new(list),
            Arc::new(large_list),
            Arc::new(structs),
            Arc::new(dictionary),
            Arc::new(NullArray::new(7)),
        ]
    }

    fn codec(columns: &[ArrayRef], options: SortOptions) -> SortRowCodec {
        SortRowCodec::new(
            columns
                .iter()
                .map(|c| (c.data_type().clone(), options))
                .collect(),
        )
        .expect("codec")
    }

    const OPTIONS: [SortOptions; 4] = [
        SortOptions {
            descending: false,
            nulls_first: true,
        },
        SortOptions {
            descending: false,
            nulls_first: false,
        },
        SortOptions {
            descending: true,
            nulls_first: true,
        },
        SortOptions {
            descending: true,
            nulls_first: false,
        },
    ];

    #[test]
    fn every_type_decodes_to_what_was_encoded() {
        let columns = columns();
        for options in OPTIONS {
            let codec = codec(&columns, options);
            let rows = codec.convert_columns(&columns).expect("encode");
            assert_eq!(rows.num_rows(), 7);
            let back = codec
                .convert_rows((0..rows.num_rows()).map(|i| rows.row(i)))
                .expect("decode");
            for (a, b) in columns.iter().zip(&back) {
                b.to_data().validate_full().expect("a valid array");
                assert_eq!(a.to_data(), b.to_data(), "{} {options:?}", a.data_type());
            }
            // A slice encodes as the rows it shows.
            let sliced: Vec<ArrayRef> = columns.iter().map(|c| c.slice(2, 4)).collect();
            let part = codec.convert_columns(&sliced).expect("encode slice");
            for i in 0..4 {
                assert_eq!(part.row(i), rows.row(i + 2));
            }
        }
    }

    #[test]
    fn bytes_compare_as_arrow_sorts() {
        let columns = columns();
        for options in OPTIONS {
            for column in &columns {
                let one = std::slice::from_ref(column);
                let rows = codec(one, options).convert_columns(one).expect("encode");
                let cmp = make_comparator(column.as_ref(), column.as_ref(), options).expect("cmp");
                for i in 0..7 {
                    for j in 0..7 {
                        assert_eq!(
                            rows.row(i).cmp(rows.row(j)),
                            cmp(i, j),
                            "{} {options:?} rows {i} and {j}",
                            column.data_type()
                        );
                    }
                }
            }
            // Whole rows compare column by column.
            let rows = codec(&columns, options)
                .convert_columns(&columns)
                .expect("encode");
            let comparators: Vec<_> = columns
                .iter()
                .map(|c| make_comparator(c.as_ref(), c.as_ref(), options).expect("cmp"))
                .collect();
            for i in 0..7 {
                for j in 0..7 {
                    let want = comparators
                        .iter()
                        .map(|c| c(i, j))
                        .find(|o| *o != Ordering::Equal)
                        .unwrap_or(Ordering::Equal);
                    assert_eq!(
                        rows.row(i).cmp(rows.row(j)),
                        want,
                        "{options:?} rows {i}, {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn fixed_width_rows_have_one_length_with_nulls() {
        let columns = columns();
        for column in &columns[1..17] {
            let one = std::slice::from_ref(column);
            let rows = codec(one, OPTIONS[0]).convert_columns(one).expect("encode");
            let width = column.data_type().primitive_width().expect("primitive");
            for i in 0..7 {
                assert_eq!(rows.row(i).len(), 1 + width, "{}", column.data_type());
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let columns = columns();
        let codec = codec(&columns, OPTIONS[2]);
        let rows = codec.convert_columns(&columns).expect("encode");
        let row = rows.row(3).to_vec();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for n in 0..2000 {
            let mut bad = row.clone();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            match n % 3 {
                0 => bad.truncate((seed as usize) % row.len()),
                1 => {
                    let at = (seed as usize) % row.len();
                    bad[at] = (seed >> 32) as u8;
                }
                _ => bad.push((seed >> 24) as u8),
            }
            // Either an error or some rows: never a panic.
            let _ = codec.convert_rows([bad.as_slice()]);
        }
        assert!(codec.convert_rows([&row[..row.len() - 1]]).is_err());
    }

    #[test]
    fn unsupported_types_are_refused_by_name() {
        let map = DataType::Map(
            Arc::new(Field::new(
                "entries",
                DataType::Struct(Fields::from(vec![
                    Field::new("k", DataType::Utf8, false),
                    Field::new("v", DataType::Int32, true),
                ])),
                false,
            )),
            false,
        );
        let err = SortRowCodec::ascending(&[map]).expect_err("map");
        assert!(err.to_string().contains("Map"), "{err}");
    }
}
