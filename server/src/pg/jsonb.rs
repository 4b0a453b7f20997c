//! Postgres' functions and operators that build and change `jsonb` (and `json`) values, over the
//! text Rivulet keeps them as ([`super::json`]), taken apart with
//! [`rivulet_planner::jsonb::parse_jsonb`] and written back in `jsonb`'s text form:
//!
//! - constructors: `jsonb_build_object`, `jsonb_build_array` (and `json_build_array`), `to_jsonb`
//!   (and `to_json`), the aggregates `jsonb_agg`, `json_agg`, `jsonb_object_agg`,
//!   `json_object_agg` (with ORDER BY);
//! - `jsonb_typeof`, `jsonb_strip_nulls`, `jsonb_set`, `jsonb_insert`, `jsonb_pretty`;
//! - operators, planned by [`super::json::JsonOperators`]: `||` (concatenation, where either
//!   side is `jsonb`: Arrow's `||` would join the texts), `-` (a key, or an array index), `#-`
//!   (a path),
//!   `@>` and `<@` (containment), `?` (a key, or a string element of an array), `?|` and `?&`
//!   (any or all of the keys).
//!
//! A value of another type becomes JSON as Postgres' `to_jsonb` makes it: numbers as numbers
//! (a `numeric` with the decimals it shows), booleans, NULL as `null`, arrays as arrays, `json`
//! and `jsonb` as themselves, and anything else as its text.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanBuilder, ListArray, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::utils::SingleRowListArrayBuilder;
use datafusion::common::{Column, DataFusionError, Result, ScalarValue, exec_err};
use datafusion::functions_aggregate::array_agg::array_agg_udaf;
use datafusion::logical_expr::expr::{AggregateFunction, Cast, ScalarFunction};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, Aggregate, AggregateUDF, AggregateUDFImpl, ColumnarValue, Expr, ExprSchemable,
    LogicalPlan, LogicalPlanBuilder, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignature, Volatility,
};
use rivulet_planner::jsonb::{Value, parse_jsonb};

use super::json::jsonb_error;

use super::wire_types::{PG_TYPE, declare};

/// What a function computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `a || b`.
    Concat,
    /// `a - key`, `a - index`.
    Delete,
    /// `a @> b`.
    Contains,
    /// `a <@ b`.
    ContainedBy,
    /// `a ? key`.
    HasKey,
    /// `a ?| keys`.
    AnyKey,
    /// `a ?& keys`.
    AllKeys,
    BuildObject {
        json: bool,
    },
    BuildArray {
        json: bool,
    },
    To {
        json: bool,
    },
    TypeOf,
    StripNulls,
    Set,
    /// `jsonb_insert(target, path, new [, insert_after])`.
    Insert,
    /// `a #- path`.
    DeletePath,
    Pretty,
}

impl Op {
    /// The function's name; the operators' are Rivulet's own.
    fn name(self) -> &'static str {
        match self {
            Op::Concat => "rivulet_jsonb_concat",
            Op::Delete => "rivulet_jsonb_delete",
            Op::Contains => "rivulet_jsonb_contains",
            Op::ContainedBy => "rivulet_jsonb_contained",
            Op::HasKey => "rivulet_jsonb_has_key",
            Op::AnyKey => "rivulet_jsonb_any_key",
            Op::AllKeys => "rivulet_jsonb_all_keys",
            Op::BuildObject { json: false } => "jsonb_build_object",
            Op::BuildObject { json: true } => "json_build_object",
            Op::BuildArray { json: false } => "jsonb_build_array",
            Op::BuildArray { json: true } => "json_build_array",
            Op::To { json: false } => "to_jsonb",
            Op::To { json: true } => "to_json",
            Op::TypeOf => "jsonb_typeof",
            Op::StripNulls => "jsonb_strip_nulls",
            Op::Set => "jsonb_set",
            Op::Insert => "jsonb_insert",
            Op::DeletePath => "rivulet_jsonb_delete_path",
            Op::Pretty => "jsonb_pretty",
        }
    }

    fn returns(self) -> Returns {
        match self {
            Op::Contains | Op::ContainedBy | Op::HasKey | Op::AnyKey | Op::AllKeys => Returns::Bool,
            Op::TypeOf | Op::Pretty => Returns::Text,
            Op::BuildObject { json: true }
            | Op::BuildArray { json: true }
            | Op::To { json: true } => Returns::Json("json"),
            _ => Returns::Json("jsonb"),
        }
    }
}

enum Returns {
    Bool,
    Text,
    Json(&'static str),
}

/// The functions, for the session's registry (the operators' too: the planner calls them).
pub fn functions() -> Vec<ScalarUDF> {
    let ops = [
        Op::Concat,
        Op::Delete,
        Op::Contains,
        Op::ContainedBy,
        Op::HasKey,
        Op::AnyKey,
        Op::AllKeys,
        Op::BuildObject { json: false },
        Op::BuildObject { json: true },
        Op::BuildArray { json: false },
        Op::BuildArray { json: true },
        Op::To { json: false },
        Op::To { json: true },
        Op::TypeOf,
        Op::StripNulls,
        Op::Set,
        Op::Insert,
        Op::DeletePath,
        Op::Pretty,
    ];
    ops.into_iter().map(udf).collect()
}

/// The function of `op`.
pub fn udf(op: Op) -> ScalarUDF {
    let aliases: &[&str] = match op {
        Op::TypeOf => &["json_typeof"],
        Op::StripNulls => &["json_strip_nulls"],
        // A row (`row_to_json(t)`: `whole_row.rs` makes `t` a struct) as `to_json` writes it.
        Op::To { json: true } => &["row_to_json"],
        _ => &[],
    };
    ScalarUDF::new_from_impl(JsonbFunction {
        op,
        signature: Signature::one_of(
            vec![TypeSignature::VariadicAny, TypeSignature::Nullary],
            Volatility::Immutable,
        ),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonbFunction {
    op: Op,
    signature: Signature,
    aliases: Vec<String>,
}

impl ScalarUDFImpl for JsonbFunction {
    fn name(&self) -> &str {
        self.op.name()
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.op.returns() {
            Returns::Bool => DataType::Boolean,
            Returns::Text | Returns::Json(_) => DataType::Utf8,
        })
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let arity = match self.op {
            Op::BuildObject { .. } | Op::BuildArray { .. } => None,
            Op::To { .. } | Op::TypeOf | Op::StripNulls | Op::Pretty => Some(1..=1),
            Op::Set | Op::Insert => Some(3..=4),
            _ => Some(2..=2),
        };
        if let Some(arity) = arity
            && !arity.contains(&args.arg_fields.len())
        {
            return exec_err!(
                "function {} does not take {} arguments",
                self.op.name(),
                args.arg_fields.len()
            );
        }
        if matches!(self.op, Op::BuildObject { .. }) && args.arg_fields.len() % 2 == 1 {
            return Err(invalid(
                "argument list must have even number of elements".into(),
            ));
        }
        Ok(Arc::new(match self.op.returns() {
            Returns::Bool => Field::new(self.name(), DataType::Boolean, true),
            Returns::Text => Field::new(self.name(), DataType::Utf8, true),
            Returns::Json(kind) => declare(Field::new(self.name(), DataType::Utf8, true), kind),
        }))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let fields = &args.arg_fields;
        let missing = |i: usize| -> DataFusionError {
            DataFusionError::Execution(format!("{} lacks argument {}", self.op.name(), i + 1))
        };
        // Each argument read once per batch (a constant once): as `to_jsonb` reads a value, and
        // as `jsonb`.
        let values = args
            .args
            .iter()
            .zip(fields.iter())
            .map(|(a, f)| JsonColumn::of(a, f, false))
            .collect::<Result<Vec<_>>>()?;
        let jsons = args
            .args
            .iter()
            .zip(fields.iter())
            .map(|(a, f)| JsonColumn::of(a, f, true))
            .collect::<Result<Vec<_>>>()?;
        // A constant key list (`?| array['a', 'b']`, a path) is read once.
        let constant_keys = match (args.args.get(1), arrays.get(1)) {
            (Some(ColumnarValue::Scalar(_)), Some(a)) if rows > 0 => Some(keys(a, 0)?),
            _ => None,
        };
        let keys_at = |row: usize| -> Result<Vec<String>> {
            match (&constant_keys, arrays.get(1)) {
                (Some(k), _) => Ok(k.clone()),
                (None, Some(a)) => keys(a, row),
                (None, None) => Err(missing(1)),
            }
        };
        let at = |i: usize, row: usize| -> Result<Value> {
            values.get(i).ok_or_else(|| missing(i))?.value(row)
        };
        // An argument as `json`'s constructors write it: `json` text as given, arrays compact.
        let text = |i: usize, row: usize| -> Result<String> {
            values.get(i).ok_or_else(|| missing(i))?.json_text(row)
        };
        let null = |i: usize, row: usize| values.get(i).is_none_or(|c| c.is_null(row));
        let json = |i: usize, row: usize| -> Result<Value> {
            jsons.get(i).ok_or_else(|| missing(i))?.value(row)
        };
        match self.op.returns() {
            Returns::Bool => {
                // `?`'s key is one text, braces and all.
                let key = match (self.op, arrays.get(1)) {
                    (Op::HasKey, Some(k)) => Some(cast(k, &DataType::Utf8)?),
                    _ => None,
                };
                let mut out = BooleanBuilder::with_capacity(rows);
                for row in 0..rows {
                    if null(0, row) || null(1, row) {
                        out.append_null();
                        continue;
                    }
                    let a = json(0, row)?;
                    let b = match self.op {
                        Op::Contains | Op::ContainedBy => json(1, row)?,
                        _ => Value::Null,
                    };
                    out.append_value(match self.op {
                        Op::Contains => contains(&a, &b, true),
                        Op::ContainedBy => contains(&b, &a, true),
                        Op::HasKey => match &key {
                            Some(k) => has_key(&a, k.as_string::<i32>().value(row)),
                            None => return Err(missing(1)),
                        },
                        Op::AnyKey => keys_at(row)?.iter().any(|k| has_key(&a, k)),
                        _ => keys_at(row)?.iter().all(|k| has_key(&a, k)),
                    });
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            }
            Returns::Text | Returns::Json(_) => {
                let mut out = StringBuilder::with_capacity(rows, rows * 16);
                for row in 0..rows {
                    let built = match self.op {
                        Op::BuildObject { json } => {
                            let mut members = Vec::with_capacity(arrays.len() / 2);
                            for pair in (0..arrays.len()).step_by(2) {
                                let key = match at(pair, row)? {
                                    Value::Null => {
                                        return Err(invalid(format!(
                                            "argument {}: key must not be null",
                                            pair + 1
                                        )));
                                    }
                                    Value::String(s) | Value::Number(s) => s,
                                    other => other.text(),
                                };
                                members.push((key, at(pair + 1, row)?));
                            }
                            Some(if json {
                                // `json` keeps its members as given, spaced as Postgres'.
                                let mut out = Vec::with_capacity(members.len());
                                for (pair, (k, _)) in (0..arrays.len()).step_by(2).zip(&members) {
                                    let mut member = String::new();
                                    rivulet_planner::jsonb::escape(k, &mut member);
                                    member.push_str(" : ");
                                    member.push_str(&text(pair + 1, row)?);
                                    out.push(member);
                                }
                                format!("{{{}}}", out.join(", "))
                            } else {
                                Value::object(members).text()
                            })
                        }
                        Op::BuildArray { json: true } => {
                            let items = (0..arrays.len())
                                .map(|i| text(i, row))
                                .collect::<Result<Vec<_>>>()?;
                            Some(format!("[{}]", items.join(", ")))
                        }
                        Op::BuildArray { .. } => {
                            let items = (0..arrays.len())
                                .map(|i| at(i, row))
                                .collect::<Result<Vec<_>>>()?;
                            Some(Value::Array(items).text())
                        }
                        Op::To { .. } if null(0, row) => None,
                        Op::To { json: true } => Some(text(0, row)?),
                        Op::To { .. } => Some(at(0, row)?.text()),
                        _ if (0..arrays.len()).any(|i| null(i, row)) => None,
                        Op::TypeOf => Some(type_name(&json(0, row)?).to_string()),
                        Op::StripNulls => Some(strip_nulls(json(0, row)?).text()),
                        Op::Pretty => {
                            let mut text = String::new();
                            pretty(&json(0, row)?, 0, &mut text);
                            Some(text)
                        }
                        Op::Concat => Some(concat(json(0, row)?, json(1, row)?).text()),
                        Op::Delete => Some(delete(json(0, row)?, &arrays[1], row)?.text()),
                        Op::Set | Op::Insert => {
                            // The fourth argument: create_missing, insert_after.
                            let flag = arrays
                                .get(3)
                                .map(|a| a.as_boolean_opt().is_none_or(|b| b.value(row)));
                            let new = json(2, row)?;
                            let edit = match self.op {
                                Op::Set => Edit::Set {
                                    new,
                                    create: flag.unwrap_or(true),
                                },
                                _ => Edit::Insert {
                                    new,
                                    after: flag.unwrap_or(false),
                                },
                            };
                            let path = keys_at(row)?;
                            Some(edit_path(json(0, row)?, &path, &edit)?.text())
                        }
                        Op::DeletePath => {
                            let path = keys_at(row)?;
                            Some(edit_path(json(0, row)?, &path, &Edit::Delete)?.text())
                        }
                        _ => None,
                    };
                    out.append_option(built);
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            }
        }
    }
}

/// Postgres' error for an argument a function cannot take (22023).
fn invalid(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(crate::error::SqlError::new(
        crate::error::sqlstate::INVALID_PARAMETER_VALUE,
        message,
    )))
}

/// An argument column read as JSON: converted once per batch, then read row by row.
pub(super) struct JsonColumn {
    kind: Kind,
    nulls: Option<datafusion::arrow::buffer::NullBuffer>,
    /// One row standing for every row (a constant argument).
    constant: bool,
}

enum Kind {
    Null,
    /// A constant argument, read once; `sql_null` for SQL's NULL (not JSON's `null`); `raw` the
    /// text `json`'s constructors write for a `json`, `jsonb` or array one ([`JsonColumn::json_text`]).
    Constant {
        value: Value,
        sql_null: bool,
        raw: Option<String>,
    },
    /// Text, parsed as JSON where `parse` (a `json`/`jsonb` value), a string otherwise.
    Text {
        texts: StringArray,
        parse: bool,
    },
    Bool(datafusion::arrow::array::BooleanArray),
    /// Integers, as their text.
    Integer(StringArray),
    Float(datafusion::arrow::array::Float64Array),
    Decimal {
        values: datafusion::arrow::array::Decimal128Array,
        scale: i8,
        rule: super::numeric::Scale,
    },
    List {
        array: ArrayRef,
        item: FieldRef,
    },
    /// A row (a struct: `whole_row.rs`): its fields' names and columns.
    Struct {
        names: Vec<String>,
        fields: Vec<JsonColumn>,
    },
    /// Anything else, as its text.
    Other(StringArray),
}

/// A `timestamptz` column's values as Postgres writes them in JSON.
fn json_instants(array: &ArrayRef) -> Result<StringArray> {
    let Some(local) = super::time_zone::local(array)? else {
        return Ok(cast(array, &DataType::Utf8)?.as_string::<i32>().clone());
    };
    let clocks = local
        .clocks
        .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
    let mut out =
        datafusion::arrow::array::StringBuilder::with_capacity(clocks.len(), 32 * clocks.len());
    let mut text = String::with_capacity(40);
    for (clock, zone) in clocks.iter().zip(&local.zones) {
        let (Some(clock), Some(zone)) = (clock, zone) else {
            out.append_null();
            continue;
        };
        let at = chrono::DateTime::from_timestamp_micros(clock)
            .ok_or_else(|| DataFusionError::Execution(format!("timestamp {clock} out of range")))?
            .naive_utc();
        text.clear();
        use std::fmt::Write;
        let _ = write!(text, "{}", at.format("%Y-%m-%dT%H:%M:%S"));
        let micros = clock.rem_euclid(1_000_000);
        if micros != 0 {
            let digits = format!("{micros:06}");
            text.push('.');
            text.push_str(digits.trim_end_matches('0'));
        }
        let sign = if zone.offset < 0 { '-' } else { '+' };
        let s = zone.offset.unsigned_abs();
        let _ = write!(text, "{sign}{:02}:{:02}", s / 3600, s / 60 % 60);
        if !s.is_multiple_of(60) {
            let _ = write!(text, ":{:02}", s % 60);
        }
        out.append_value(&text);
    }
    Ok(out.finish())
}

impl JsonColumn {
    /// `array`, a column of `field`; `jsonb` for an argument Postgres types `jsonb`, whose text
    /// (an unknown literal, a parameter) is JSON whatever its field says.
    pub(super) fn new(array: &ArrayRef, field: &Field, jsonb: bool) -> Result<JsonColumn> {
        let texts = |array: &ArrayRef| -> Result<StringArray> {
            Ok(cast(array, &DataType::Utf8)?.as_string::<i32>().clone())
        };
        let declared = field.metadata().get(PG_TYPE).map(String::as_str);
        let kind = match array.data_type() {
            DataType::Null => Kind::Null,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Kind::Text {
                texts: texts(array)?,
                parse: jsonb || matches!(declared, Some("json" | "jsonb")),
            },
            DataType::Boolean => Kind::Bool(array.as_boolean().clone()),
            t if t.is_integer() => Kind::Integer(texts(array)?),
            DataType::Float16 | DataType::Float32 | DataType::Float64 => Kind::Float(
                cast(array, &DataType::Float64)?
                    .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                    .clone(),
            ),
            DataType::Decimal128(_, scale) => Kind::Decimal {
                values: array.as_primitive::<Decimal128Type>().clone(),
                scale: *scale,
                rule: super::numeric::Scale::of(field),
            },
            DataType::List(item) => Kind::List {
                array: Arc::clone(array),
                item: Arc::clone(item),
            },
            // ISO 8601 with the offset of the zone its type is labelled with, as Postgres
            // writes a `timestamptz` in JSON (`2024-07-04T23:00:00-04:00`).
            DataType::Timestamp(_, Some(_)) => Kind::Other(json_instants(array)?),
            DataType::Struct(fields) => {
                let row = array.as_struct();
                // A field named so holds JSON text (`whole_row.rs`).
                let json = |f: &FieldRef| {
                    f.name()
                        .strip_suffix(super::whole_row::JSON_FIELD)
                        .map(str::to_string)
                };
                Kind::Struct {
                    names: (fields.iter())
                        .map(|f| json(f).unwrap_or_else(|| f.name().clone()))
                        .collect(),
                    fields: (fields.iter().zip(row.columns()))
                        .map(|(f, c)| JsonColumn::new(c, f, json(f).is_some()))
                        .collect::<Result<Vec<_>>>()?,
                }
            }
            _ => Kind::Other(texts(array)?),
        };
        Ok(JsonColumn {
            kind,
            nulls: array.logical_nulls(),
            constant: false,
        })
    }

    /// `value`, an argument of a call: a constant is read once.
    pub(super) fn of(value: &ColumnarValue, field: &Field, jsonb: bool) -> Result<JsonColumn> {
        match value {
            ColumnarValue::Array(array) => JsonColumn::new(array, field, jsonb),
            ColumnarValue::Scalar(scalar) => {
                let mut one = JsonColumn::new(&scalar.to_array_of_size(1)?, field, jsonb)?;
                let sql_null = one.is_null(0);
                let raw = match &one.kind {
                    Kind::Text { parse: true, .. } | Kind::List { .. } if !sql_null => {
                        one.json_text(0).ok()
                    }
                    _ => None,
                };
                match one.value(0) {
                    Ok(value) => Ok(JsonColumn {
                        kind: Kind::Constant {
                            value,
                            sql_null,
                            raw,
                        },
                        nulls: None,
                        constant: true,
                    }),
                    // Not read this way, perhaps (`'x'` is text to `to_jsonb`): its error, if
                    // any, comes where a row reads it.
                    Err(_) => {
                        one.constant = true;
                        Ok(one)
                    }
                }
            }
        }
    }

    /// Whether row `row` is NULL.
    pub(super) fn is_null(&self, row: usize) -> bool {
        let row = if self.constant { 0 } else { row };
        match &self.kind {
            Kind::Null => true,
            Kind::Constant { sql_null, .. } => *sql_null,
            _ => self.nulls.as_ref().is_some_and(|n| n.is_null(row)),
        }
    }

    /// Row `row` as `json`'s constructors (`json_build_object`, `json_build_array`, `to_json`)
    /// write it: a `json` or `jsonb` value as its text, unchanged; an array as `array_to_json`
    /// writes it, without spaces (`[1,2]`); anything else as in `jsonb`.
    pub(super) fn json_text(&self, row: usize) -> Result<String> {
        let at = if self.constant { 0 } else { row };
        if self.is_null(at) {
            return Ok("null".to_string());
        }
        match &self.kind {
            Kind::Constant { raw: Some(raw), .. } => Ok(raw.clone()),
            Kind::Text { texts, parse: true } => {
                // Checked as JSON, kept as written.
                parse_jsonb(texts.value(at)).map_err(jsonb_error)?;
                Ok(texts.value(at).to_string())
            }
            Kind::List { array, item } => {
                let items = array.as_list::<i32>().value(at);
                let column = JsonColumn::new(&items, item, false)?;
                let items = (0..items.len())
                    .map(|i| column.json_text(i))
                    .collect::<Result<Vec<_>>>()?;
                Ok(format!("[{}]", items.join(",")))
            }
            // As `row_to_json` writes a row: members in column order, without spaces.
            Kind::Struct { names, fields } => {
                let mut out = String::from("{");
                for (i, (name, field)) in names.iter().zip(fields).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    rivulet_planner::jsonb::escape(name, &mut out);
                    out.push(':');
                    out.push_str(&field.json_text(at)?);
                }
                out.push('}');
                Ok(out)
            }
            _ => Ok(self.value(row)?.text()),
        }
    }

    /// Row `row` as JSON.
    pub(super) fn value(&self, row: usize) -> Result<Value> {
        let row = if self.constant { 0 } else { row };
        if self.is_null(row) {
            return Ok(Value::Null);
        }
        Ok(match &self.kind {
            Kind::Null => Value::Null,
            Kind::Constant { value, .. } => value.clone(),
            Kind::Text { texts, parse: true } => {
                parse_jsonb(texts.value(row)).map_err(jsonb_error)?
            }
            Kind::Text {
                texts,
                parse: false,
            }
            | Kind::Other(texts) => Value::String(texts.value(row).to_string()),
            Kind::Bool(b) => Value::Bool(b.value(row)),
            Kind::Integer(texts) => Value::Number(texts.value(row).to_string()),
            Kind::Float(f) => {
                let x = f.value(row);
                if x.is_finite() {
                    // A float's shortest text, as numeric reads it.
                    parse_jsonb(&format!("{x:?}")).unwrap_or_else(|_| Value::Number(format!("{x}")))
                } else {
                    Value::String(pg_float(x))
                }
            }
            Kind::Decimal {
                values,
                scale,
                rule,
            } => {
                let v = values.value(row);
                let mut text = String::new();
                super::numeric::write_text(&mut text, v, *scale, rule.decimals(v, *scale));
                Value::Number(text)
            }
            Kind::List { array, item } => {
                let items = array.as_list::<i32>().value(row);
                let column = JsonColumn::new(&items, item, false)?;
                let items = (0..items.len())
                    .map(|i| column.value(i))
                    .collect::<Result<Vec<_>>>()?;
                Value::Array(items)
            }
            Kind::Struct { names, fields } => Value::object(
                (names.iter().zip(fields))
                    .map(|(name, field)| Ok((name.clone(), field.value(row)?)))
                    .collect::<Result<Vec<_>>>()?,
            ),
        })
    }
}

/// A float that is no JSON number, as Postgres spells it.
fn pg_float(x: f64) -> String {
    match x {
        x if x.is_nan() => "NaN".into(),
        x if x > 0.0 => "Infinity".into(),
        _ => "-Infinity".into(),
    }
}

/// Row `row` of `array` as a list of texts: a `text[]`, or one text (a key).
fn keys(array: &ArrayRef, row: usize) -> Result<Vec<String>> {
    Ok(match array.data_type() {
        DataType::List(_) => {
            let list: &ListArray = array.as_list::<i32>();
            let items = cast(&list.value(row), &DataType::Utf8)?;
            let items = items.as_string::<i32>();
            (0..items.len())
                .filter(|&i| items.is_valid(i))
                .map(|i| items.value(i).to_string())
                .collect()
        }
        _ => {
            let text = cast(&array.slice(row, 1), &DataType::Utf8)?;
            let text = text.as_string::<i32>().value(0);
            // A text-array constant (`'{a,b}'`) its elements, anything else one key.
            match text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(inner) if !inner.is_empty() => inner
                    .split(',')
                    .map(|k| k.trim().trim_matches('"').to_string())
                    .collect(),
                Some(_) => Vec::new(),
                None => vec![text.to_string()],
            }
        }
    })
}

/// `a || b`: objects merged (the right one's member wins), arrays joined, anything else made
/// an array first.
fn concat(a: Value, b: Value) -> Value {
    match (a, b) {
        (Value::Object(mut x), Value::Object(y)) => {
            x.extend(y);
            Value::object(x)
        }
        (Value::Array(mut x), Value::Array(y)) => {
            x.extend(y);
            Value::Array(x)
        }
        (Value::Array(mut x), b) => {
            x.push(b);
            Value::Array(x)
        }
        (a, Value::Array(mut y)) => {
            y.insert(0, a);
            Value::Array(y)
        }
        (a, b) => Value::Array(vec![a, b]),
    }
}

/// `a - key` (an object's member, an array's strings equal to it) or `a - index`.
fn delete(a: Value, by: &ArrayRef, row: usize) -> Result<Value> {
    let index = by.data_type().is_integer();
    match (a, index) {
        (Value::Object(members), false) => {
            let key = keys(by, row)?.concat();
            Ok(Value::Object(
                members.into_iter().filter(|(k, _)| *k != key).collect(),
            ))
        }
        (Value::Array(items), false) => {
            let key = keys(by, row)?.concat();
            Ok(Value::Array(
                items
                    .into_iter()
                    .filter(|v| !matches!(v, Value::String(s) if *s == key))
                    .collect(),
            ))
        }
        (Value::Array(mut items), true) => {
            let i = cast(&by.slice(row, 1), &DataType::Int64)?;
            let i = i
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0);
            let len = items.len() as i64;
            let at = if i < 0 { len + i } else { i };
            if (0..len).contains(&at) {
                items.remove(at as usize);
            }
            Ok(Value::Array(items))
        }
        (Value::Object(_), true) => Err(invalid(
            "cannot delete from object using integer index".into(),
        )),
        (_, _) => Err(invalid("cannot delete from scalar".into())),
    }
}

/// Whether `a` contains `b`, as `@>` decides it: an object every member of `b` (its value
/// contained), an array every element of `b` (contained in one of its own), a scalar an equal
/// one; at the top, an array contains a scalar it holds.
fn contains(a: &Value, b: &Value, top: bool) -> bool {
    match (a, b) {
        (Value::Object(am), Value::Object(bm)) => bm.iter().all(|(k, bv)| {
            am.iter()
                .find(|(ak, _)| ak == k)
                .is_some_and(|(_, av)| same_kind(av, bv) && contains(av, bv, false))
        }),
        (Value::Array(ai), Value::Array(bi)) => bi.iter().all(|bv| {
            ai.iter()
                .any(|av| same_kind(av, bv) && contains(av, bv, false))
        }),
        (Value::Array(ai), b) if top && !matches!(b, Value::Object(_)) => {
            ai.iter().any(|av| scalar_eq(av, b))
        }
        (a, b) => scalar_eq(a, b),
    }
}

fn same_kind(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Scalars equal as `jsonb` compares them (numbers by value: `1.50` is `1.5`).
fn scalar_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_key(x) == number_key(y),
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => false,
        (a, b) => a == b,
    }
}

/// A number's text without the zeros that do not change its value.
fn number_key(n: &str) -> String {
    let n = match n.split_once('.') {
        Some((int, frac)) => {
            let frac = frac.trim_end_matches('0');
            if frac.is_empty() {
                int.to_string()
            } else {
                format!("{int}.{frac}")
            }
        }
        None => n.to_string(),
    };
    if n == "-0" { "0".into() } else { n }
}

/// `a ? key`: an object's key, an array's string element, or the string itself.
fn has_key(a: &Value, key: &str) -> bool {
    match a {
        Value::Object(members) => members.iter().any(|(k, _)| k == key),
        Value::Array(items) => items
            .iter()
            .any(|v| matches!(v, Value::String(s) if s == key)),
        Value::String(s) => s == key,
        _ => false,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `v` without object members whose value is null, at every depth (arrays keep their nulls).
fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(members) => Value::Object(
            members
                .into_iter()
                .filter(|(_, v)| *v != Value::Null)
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        v => v,
    }
}

/// What [`edit_path`] does at the end of its path.
enum Edit {
    /// `jsonb_set`: the value there replaced; a missing last step added if `create`.
    Set { new: Value, create: bool },
    /// `jsonb_insert`: an array element inserted before (`after`: after) the one there; an
    /// object member added where there is none (22023 where there is one).
    Insert { new: Value, after: bool },
    /// `#-`: the member or element there removed.
    Delete,
}

/// `target` with `edit` at `path` (object keys, array indexes counted from the end when
/// negative), as Postgres' `jsonb_set`, `jsonb_insert` and `#-`: a missing step before the last,
/// or a scalar on the way, leaves `target` as it was; an index outside the array inserts at its
/// start or end; `target` itself a scalar is 22023.
fn edit_path(target: Value, path: &[String], edit: &Edit) -> Result<Value> {
    if path.is_empty() {
        return Ok(target);
    }
    if !matches!(target, Value::Object(_) | Value::Array(_)) {
        let verb = match edit {
            Edit::Delete => "delete",
            _ => "set",
        };
        return Err(invalid(format!("cannot {verb} path in scalar")));
    }
    edit_at(target, path, 1, edit)
}

/// [`edit_path`] from path step number `position` (1-based) on.
fn edit_at(target: Value, path: &[String], position: usize, edit: &Edit) -> Result<Value> {
    let Some((step, rest)) = path.split_first() else {
        return Ok(target);
    };
    let last = rest.is_empty();
    match target {
        Value::Object(mut members) => {
            match (members.iter().position(|(k, _)| k == step), last) {
                (Some(i), false) => {
                    let old = std::mem::replace(&mut members[i].1, Value::Null);
                    members[i].1 = edit_at(old, rest, position + 1, edit)?;
                }
                (Some(i), true) => match edit {
                    Edit::Set { new, .. } => members[i].1 = new.clone(),
                    Edit::Insert { .. } => {
                        return Err(DataFusionError::External(Box::new(
                            crate::error::SqlError::new(
                                crate::error::sqlstate::INVALID_PARAMETER_VALUE,
                                "cannot replace existing key",
                            )
                            .with_hint("Try using the function jsonb_set to replace key value."),
                        )));
                    }
                    Edit::Delete => {
                        members.remove(i);
                    }
                },
                (None, true) => match edit {
                    Edit::Set { new, create: true } | Edit::Insert { new, .. } => {
                        members.push((step.clone(), new.clone()))
                    }
                    _ => {}
                },
                (None, false) => {}
            }
            Ok(Value::object(members))
        }
        Value::Array(mut items) => {
            let Ok(i) = step.parse::<i64>() else {
                return Err(invalid(format!(
                    "path element at position {position} is not an integer: \"{step}\""
                )));
            };
            let len = items.len() as i64;
            let at = if i < 0 { len + i } else { i };
            let inside = (0..len).contains(&at);
            let end = |items: &mut Vec<Value>, new: &Value| {
                if at < 0 {
                    items.insert(0, new.clone());
                } else {
                    items.push(new.clone());
                }
            };
            match (edit, last) {
                (_, false) if inside => {
                    let old = std::mem::replace(&mut items[at as usize], Value::Null);
                    items[at as usize] = edit_at(old, rest, position + 1, edit)?;
                }
                (_, false) => {}
                (Edit::Set { new, .. }, true) if inside => items[at as usize] = new.clone(),
                (Edit::Set { new, create: true }, true) => end(&mut items, new),
                (Edit::Set { .. }, true) => {}
                (Edit::Insert { new, after }, true) if inside => {
                    items.insert(at as usize + usize::from(*after), new.clone())
                }
                (Edit::Insert { new, .. }, true) => end(&mut items, new),
                (Edit::Delete, true) if inside => {
                    items.remove(at as usize);
                }
                (Edit::Delete, true) => {}
            }
            Ok(Value::Array(items))
        }
        scalar => Ok(scalar),
    }
}

/// `v` as `jsonb_pretty` lays it out: a member or element per line, four spaces a level (an
/// empty object or array too: its brackets on two lines).
fn pretty(v: &Value, depth: usize, out: &mut String) {
    let indent = |out: &mut String, depth: usize| out.push_str(&"    ".repeat(depth));
    match v {
        Value::Object(members) => {
            out.push_str("{\n");
            for (i, (k, v)) in members.iter().enumerate() {
                indent(out, depth + 1);
                rivulet_planner::jsonb::escape(k, out);
                out.push_str(": ");
                pretty(v, depth + 1, out);
                out.push_str(if i + 1 < members.len() { ",\n" } else { "\n" });
            }
            indent(out, depth);
            out.push('}');
        }
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                indent(out, depth + 1);
                pretty(v, depth + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            indent(out, depth);
            out.push(']');
        }
        v => v.write(out),
    }
}

/// The aggregates: `jsonb_agg(x)`, `json_agg(x)` (an array of the values, in the call's ORDER
/// BY), `jsonb_object_agg(k, v)`, `json_object_agg(k, v)`; NULL over no rows.
pub fn aggregates() -> Vec<AggregateUDF> {
    [
        ("jsonb_agg", false, false),
        ("json_agg", false, true),
        ("jsonb_object_agg", true, false),
        ("json_object_agg", true, true),
    ]
    .into_iter()
    .map(|(name, object, json)| {
        AggregateUDF::new_from_impl(JsonAgg {
            name,
            object,
            json,
            signature: Signature::new(
                TypeSignature::Any(if object { 2 } else { 1 }),
                Volatility::Immutable,
            ),
        })
    })
    .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonAgg {
    name: &'static str,
    object: bool,
    json: bool,
    signature: Signature,
}

impl AggregateUDFImpl for JsonAgg {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field(&self, _args: &[FieldRef]) -> Result<FieldRef> {
        let kind = if self.json { "json" } else { "jsonb" };
        Ok(Arc::new(declare(
            Field::new(self.name, DataType::Utf8, true),
            kind,
        )))
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::SoftRequirement
    }

    /// The accumulator sorts by the ORDER BY itself: an input already in that order changes
    /// nothing.
    fn with_beneficial_ordering(
        self: Arc<Self>,
        _beneficial_ordering: bool,
    ) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        Ok(Some(self))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new_list(
                format!("{}[items]", args.name),
                Field::new_list_field(DataType::Utf8, true),
                true,
            )),
            Arc::new(Field::new_list(
                format!("{}[order]", args.name),
                Field::new_list_field(DataType::Binary, true),
                true,
            )),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        // DISTINCT without ORDER BY orders by the value, as Postgres' sort does.
        let by_value = args.is_distinct && args.order_bys.is_empty();
        let order = match args.order_bys {
            [] if by_value => match args.expr_fields.first() {
                Some(f) => Some(RowConverter::new(vec![SortField::new(
                    f.data_type().clone(),
                )])?),
                None => None,
            },
            [] => None,
            keys => Some(RowConverter::new(
                keys.iter()
                    .map(|k| {
                        Ok(SortField::new_with_options(
                            k.expr.data_type(args.schema)?,
                            k.options,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?,
            )?),
        };
        // `json_agg` puts a newline before each array or row after the first, as Postgres does.
        let lines = self.json
            && !self.object
            && args
                .expr_fields
                .first()
                .is_some_and(|f| matches!(f.data_type(), DataType::List(_) | DataType::Struct(_)));
        Ok(Box::new(JsonItems {
            fields: args.expr_fields.to_vec(),
            object: self.object,
            json: self.json,
            lines,
            order,
            distinct: args.is_distinct,
            by_value,
            entries: Vec::new(),
        }))
    }
}

/// The values' texts (for an object, its key's and its value's), each with its row's ORDER BY
/// key (empty without one), in arrival order; sorted (stably) when the result is made.
#[derive(Debug)]
struct JsonItems {
    fields: Vec<FieldRef>,
    object: bool,
    json: bool,
    /// Items on lines of their own (`json_agg` of arrays and rows).
    lines: bool,
    order: Option<RowConverter>,
    /// DISTINCT: equal values (adjacent once sorted) kept once; `by_value`: ordered by the value.
    distinct: bool,
    by_value: bool,
    entries: Vec<(Vec<u8>, Vec<String>)>,
}

impl JsonItems {
    fn arity(&self) -> usize {
        if self.object { 2 } else { 1 }
    }
}

impl Accumulator for JsonItems {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let arity = self.arity();
        let (args, ordering) = values.split_at(arity.min(values.len()));
        let Some(first) = args.first() else {
            return Ok(());
        };
        let keys = match &self.order {
            Some(converter) if self.by_value => Some(converter.convert_columns(&args[..1])?),
            Some(converter) if !ordering.is_empty() => Some(converter.convert_columns(ordering)?),
            _ => None,
        };
        let columns = args
            .iter()
            .zip(&self.fields)
            .map(|(a, f)| JsonColumn::new(a, f, false))
            .collect::<Result<Vec<_>>>()?;
        let Some(firsts) = columns.first() else {
            return exec_err!("an aggregate without its argument");
        };
        for row in 0..first.len() {
            let mut texts = Vec::with_capacity(arity);
            if self.object {
                let key = match firsts.value(row)? {
                    Value::Null => {
                        return Err(invalid("field name must not be null".into()));
                    }
                    Value::String(s) | Value::Number(s) => s,
                    other => other.text(),
                };
                texts.push(key);
                let Some(values) = columns.get(1) else {
                    return exec_err!("an object aggregate takes a key and a value");
                };
                texts.push(values.value(row)?.text());
            } else if self.json {
                texts.push(firsts.json_text(row)?);
            } else {
                texts.push(firsts.value(row)?.text());
            }
            let key = keys
                .as_ref()
                .map_or_else(Vec::new, |k| k.row(row).as_ref().to_vec());
            self.entries.push((key, texts));
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.entries.is_empty() {
            return Ok(ScalarValue::Utf8(None));
        }
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        if self.distinct {
            self.entries.dedup_by(|a, b| a.1 == b.1);
        }
        let texts = self.entries.iter().map(|(_, t)| t);
        let text = if !self.object {
            let items: Vec<&str> = texts.map(|t| t[0].as_str()).collect();
            format!("[{}]", items.join(if self.lines { ", \n " } else { ", " }))
        } else if self.json {
            // `json_object_agg` keeps its members as they came, spaced as Postgres spaces them.
            let members: Vec<String> = texts
                .map(|kv| {
                    let mut key = String::new();
                    rivulet_planner::jsonb::escape(&kv[0], &mut key);
                    format!("{key} : {}", kv.get(1).map_or("null", String::as_str))
                })
                .collect();
            format!("{{ {} }}", members.join(", "))
        } else {
            let members = texts
                .map(|kv| {
                    let value = kv.get(1).map_or("null", String::as_str);
                    Ok((kv[0].clone(), parse_jsonb(value).map_err(jsonb_error)?))
                })
                .collect::<Result<Vec<_>>>()?;
            Value::object(members).text()
        };
        Ok(ScalarValue::Utf8(Some(text)))
    }

    fn size(&self) -> usize {
        let entries: usize = self
            .entries
            .iter()
            .map(|(k, t)| k.capacity() + t.iter().map(|s| s.capacity() + 24).sum::<usize>() + 48)
            .sum();
        std::mem::size_of_val(self) + entries
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let texts: Vec<&str> = self
            .entries
            .iter()
            .flat_map(|(_, t)| t.iter().map(String::as_str))
            .collect();
        let orders: Vec<&[u8]> = self.entries.iter().map(|(k, _)| k.as_slice()).collect();
        let texts: ArrayRef = Arc::new(StringArray::from(texts));
        let orders: ArrayRef = Arc::new(BinaryArray::from(orders));
        Ok(vec![
            ScalarValue::List(Arc::new(
                SingleRowListArrayBuilder::new(texts).build_list_array(),
            )),
            ScalarValue::List(Arc::new(
                SingleRowListArrayBuilder::new(orders).build_list_array(),
            )),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let (Some(texts), Some(orders)) = (states.first(), states.get(1)) else {
            return Ok(());
        };
        let (texts, orders) = (texts.as_list::<i32>(), orders.as_list::<i32>());
        let arity = self.arity();
        for row in 0..texts.len() {
            if texts.is_null(row) || orders.is_null(row) {
                continue;
            }
            let (items, keys) = (texts.value(row), orders.value(row));
            let (items, keys) = (items.as_string::<i32>(), keys.as_binary::<i32>());
            if items.len() != keys.len() * arity {
                return exec_err!(
                    "{} items for {} entries in a JSON aggregate's state",
                    items.len(),
                    keys.len()
                );
            }
            for (i, key) in keys.iter().enumerate() {
                let texts = (0..arity)
                    .map(|j| items.value(i * arity + j).to_string())
                    .collect();
                self.entries.push((key.unwrap_or_default().to_vec(), texts));
            }
        }
        Ok(())
    }
}

/// A materialized view's `jsonb_agg(x [ORDER BY ..])` as `to_jsonb(array_agg(x [ORDER BY
/// ..]))`, the same jsonb from an aggregate the engine keeps incrementally (the group's values as
/// an ordered multiset). DISTINCT and FILTER carry over. `json_agg` keeps its values' own text,
/// which an array does not: it stays, and a view refuses it.
pub fn in_views(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up(|node| {
        let LogicalPlan::Aggregate(a) = node else {
            return Ok(Transformed::no(node));
        };
        let jsonb_agg = |e: &Expr| match e.clone().unalias() {
            Expr::AggregateFunction(f) if f.func.name() == "jsonb_agg" => Some(f),
            _ => None,
        };
        if !a.aggr_expr.iter().any(|e| jsonb_agg(e).is_some()) {
            return Ok(Transformed::no(LogicalPlan::Aggregate(a)));
        }
        let first_aggregate = a.schema.fields().len() - a.aggr_expr.len();
        // Each replaced aggregate's position, and its list's type with the values' own field
        // (a `jsonb` value is embedded, a `numeric` keeps its decimals).
        let mut replaced: Vec<(usize, DataType)> = Vec::new();
        let mut aggr_expr = Vec::with_capacity(a.aggr_expr.len());
        for (i, e) in a.aggr_expr.iter().enumerate() {
            let Some(f) = jsonb_agg(e) else {
                aggr_expr.push(e.clone());
                continue;
            };
            let [value] = f.params.args.as_slice() else {
                return exec_err!("jsonb_agg takes one argument");
            };
            let (_, field) = value.to_field(a.input.schema())?;
            let item = Field::new_list_field(field.data_type().clone(), true)
                .with_metadata(field.metadata().clone());
            replaced.push((first_aggregate + i, DataType::List(Arc::new(item))));
            aggr_expr.push(
                Expr::AggregateFunction(AggregateFunction {
                    func: array_agg_udaf(),
                    params: f.params,
                })
                .alias(format!("__rivulet_jsonb_agg{i}")),
            );
        }
        let grouped = LogicalPlan::Aggregate(Aggregate::try_new(
            Arc::clone(&a.input),
            a.group_expr.clone(),
            aggr_expr,
        )?);
        let to_jsonb = Arc::new(udf(Op::To { json: false }));
        let outputs: Vec<Expr> = (0..a.schema.fields().len())
            .map(|i| {
                let (q, f) = grouped.schema().qualified_field(i);
                let (was_q, was) = a.schema.qualified_field(i);
                let column = Expr::Column(Column::new(q.cloned(), f.name()));
                let value = match replaced.iter().find(|(at, _)| *at == i) {
                    Some((_, list)) => Expr::ScalarFunction(ScalarFunction::new_udf(
                        Arc::clone(&to_jsonb),
                        vec![Expr::Cast(Cast::new(Box::new(column), list.clone()))],
                    )),
                    None => column,
                };
                value.alias_qualified(was_q.cloned(), was.name())
            })
            .collect();
        let projected = LogicalPlanBuilder::from(grouped)
            .project(outputs)?
            .build()?;
        Ok(Transformed::yes(projected))
    })
    .map(|t| t.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Value {
        parse_jsonb(text).expect("jsonb")
    }

    #[test]
    fn concatenation_merges_objects_and_joins_arrays() {
        let cases = [
            (
                r#"{"a": 1, "b": 2}"#,
                r#"{"b": 3, "c": 4}"#,
                r#"{"a": 1, "b": 3, "c": 4}"#,
            ),
            ("[1, 2]", "[3]", "[1, 2, 3]"),
            ("[1]", "2", "[1, 2]"),
            ("1", "[2]", "[1, 2]"),
            (r#"{"a": 1}"#, "[2]", r#"[{"a": 1}, 2]"#),
            ("1", "2", "[1, 2]"),
        ];
        for (a, b, want) in cases {
            assert_eq!(concat(v(a), v(b)).text(), want, "{a} || {b}");
        }
    }

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn containment_follows_postgres() {
        let cases = [
            (r#"{"a": 1, "b": [1, 2]}"#, r#"{"b": [2]}"#, true),
            (r#"{"a": 1}"#, r#"{"a": 1.00}"#, true),
            (r#"{"a": {"b": 1}}"#, r#"{"a": {}}"#, true),
            (r#"{"a": [1]}"#, r#"{"a": 1}"#, false),
            ("[1, [2, 3]]", "[[3]]", true),
            ("[1, 2]", "1", true),
            ("[[1]]", "1", false),
            ("1", "[1]", false),
            (r#""a""#, r#""a""#, true),
        ];
        for (a, b, want) in cases {
            assert_eq!(contains(&v(a), &v(b), true), want, "{a} @> {b}");
        }
    }

    #[test]
    fn set_replaces_adds_and_leaves_missing_paths() {
        let doc = || v(r#"{"a": [1, 2], "b": {"c": 1}}"#);
        let cases = [
            (path(&["b", "c"]), true, r#"{"a": [1, 2], "b": {"c": 9}}"#),
            (
                path(&["b", "d"]),
                true,
                r#"{"a": [1, 2], "b": {"c": 1, "d": 9}}"#,
            ),
            (path(&["b", "d"]), false, r#"{"a": [1, 2], "b": {"c": 1}}"#),
            (path(&["a", "-1"]), true, r#"{"a": [1, 9], "b": {"c": 1}}"#),
            (
                path(&["a", "5"]),
                true,
                r#"{"a": [1, 2, 9], "b": {"c": 1}}"#,
            ),
            (path(&["x", "y"]), true, r#"{"a": [1, 2], "b": {"c": 1}}"#),
        ];
        for (p, create, want) in cases {
            let edit = Edit::Set {
                new: v("9"),
                create,
            };
            assert_eq!(
                edit_path(doc(), &p, &edit).expect("set").text(),
                want,
                "{p:?}"
            );
        }
    }

    /// Postgres 18's answers.
    #[test]
    fn insert_and_delete_paths() {
        let doc = || v(r#"{"a": [0, 1, 2], "b": {"c": 1}, "s": 1}"#);
        let insert = |after| Edit::Insert { new: v("9"), after };
        let cases = [
            (path(&["a", "1"]), insert(false), r#"[0, 9, 1, 2]"#),
            (path(&["a", "1"]), insert(true), r#"[0, 1, 9, 2]"#),
            (path(&["a", "-1"]), insert(true), r#"[0, 1, 2, 9]"#),
            (path(&["a", "7"]), insert(false), r#"[0, 1, 2, 9]"#),
            (path(&["a", "-7"]), insert(true), r#"[9, 0, 1, 2]"#),
            (path(&["a", "-1"]), Edit::Delete, r#"[0, 1]"#),
            (path(&["a", "7"]), Edit::Delete, r#"[0, 1, 2]"#),
        ];
        for (p, edit, want) in cases {
            let Value::Object(members) = edit_path(doc(), &p, &edit).expect("edit") else {
                panic!("not an object");
            };
            let a = members.iter().find(|(k, _)| k == "a").expect("a").1.text();
            assert_eq!(a, want, "{p:?}");
        }
        let text = |p: &[&str], edit: Edit| edit_path(doc(), &path(p), &edit).map(|d| d.text());
        assert_eq!(
            text(&["b", "d"], insert(false)).expect("insert"),
            r#"{"a": [0, 1, 2], "b": {"c": 1, "d": 9}, "s": 1}"#
        );
        assert!(text(&["b", "c"], insert(false)).is_err(), "an existing key");
        assert_eq!(
            text(&["b", "c"], Edit::Delete).expect("delete"),
            r#"{"a": [0, 1, 2], "b": {}, "s": 1}"#
        );
        // A scalar on the way, or an empty path, leaves the document as it was.
        for p in [&["s", "x"][..], &[]] {
            assert_eq!(text(p, Edit::Delete).expect("delete"), doc().text());
            assert_eq!(text(p, insert(false)).expect("insert"), doc().text());
        }
        assert!(edit_path(v("1"), &path(&["a"]), &Edit::Delete).is_err());
        assert!(text(&["a", "x"], Edit::Delete).is_err(), "not an integer");
    }

    #[test]
    fn pretty_indents_four_spaces() {
        let mut out = String::new();
        pretty(&v(r#"{"a": [1, {}], "b": []}"#), 0, &mut out);
        assert_eq!(
            out,
            "{\n    \"a\": [\n        1,\n        {\n        }\n    ],\n    \"b\": [\n    ]\n}"
        );
    }
}
