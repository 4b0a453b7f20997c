//! Result columns whose Postgres type their Arrow type does not tell: Arrow has one string type
//! where Postgres has `text`, `name`, `regtype` and `jsonb`, and one 32-bit integer for `integer`,
//! `oid` and `regclass`. A function or a catalog table declares the type in its field's metadata
//! ([`PG_TYPE`]); the wire layer sends it in RowDescription ([`declared`]) and encodes the values
//! as Postgres does ([`encode`]); `pg_typeof` names it.
//!
//! | declared   | Arrow  | text format | binary format                       |
//! |------------|--------|-------------|-------------------------------------|
//! | `regtype`  | string | the name    | the type's OID                      |
//! | `name`     | string | the text    | the text                            |
//! | `character varying` | string | the text | the text                     |
//! | `jsonb`    | string | the text    | version byte 1, then the text       |
//! | `uuid`     | string | the text    | its 16 bytes                        |
//! | `json`     | string | the text    | the text                            |
//! | `character`| string | padded to n | padded to n ([`padded`])            |
//! | `"char"`   | string | the text    | its first byte (0 if empty)         |
//! | `regclass` | int32  | (oid)       | (oid: sent as `oid`, see `names`)    |
//!
//! `arrow-pg`'s own `"char"` marker (`pg.char`) is not used: its binary encoding fails on an empty
//! code.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::scalar::ScalarValue;
use pgwire::api::Type;
use pgwire::api::portal::Portal;
use pgwire::api::results::{DataRowEncoder, FieldFormat};
use pgwire::error::PgWireResult;

use crate::error::{SqlError, sqlstate};

/// The field metadata key naming a column's Postgres type (the planner's: table columns carry it).
pub use rivulet_planner::types::PG_TYPE;

/// Postgres' names of the types Rivulet's values have (`format_type`'s, which `pg_typeof`
/// prints), by OID.
const NAMES: &[(Type, &str)] = &[
    (Type::BOOL, "boolean"),
    (Type::INT2, "smallint"),
    (Type::INT4, "integer"),
    (Type::INT8, "bigint"),
    (Type::NUMERIC, "numeric"),
    (Type::FLOAT4, "real"),
    (Type::FLOAT8, "double precision"),
    (Type::TEXT, "text"),
    (Type::VARCHAR, "character varying"),
    (Type::BPCHAR, "character"),
    (Type::NAME, "name"),
    (Type::CHAR, "\"char\""),
    (Type::BYTEA, "bytea"),
    (Type::DATE, "date"),
    (Type::TIME, "time without time zone"),
    (Type::TIMESTAMP, "timestamp without time zone"),
    (Type::TIMESTAMPTZ, "timestamp with time zone"),
    (Type::INTERVAL, "interval"),
    (Type::JSON, "json"),
    (Type::JSONB, "jsonb"),
    (Type::UUID, "uuid"),
    (Type::OID, "oid"),
    (Type::REGCLASS, "regclass"),
    (Type::REGTYPE, "regtype"),
    (Type::UNKNOWN, "unknown"),
    (Type::RECORD, "record"),
    (Type::BOOL_ARRAY, "boolean[]"),
    (Type::INT2_ARRAY, "smallint[]"),
    (Type::INT4_ARRAY, "integer[]"),
    (Type::INT8_ARRAY, "bigint[]"),
    (Type::NUMERIC_ARRAY, "numeric[]"),
    (Type::FLOAT4_ARRAY, "real[]"),
    (Type::FLOAT8_ARRAY, "double precision[]"),
    (Type::TEXT_ARRAY, "text[]"),
    (Type::BYTEA_ARRAY, "bytea[]"),
    (Type::DATE_ARRAY, "date[]"),
    (Type::TIME_ARRAY, "time without time zone[]"),
    (Type::TIMESTAMP_ARRAY, "timestamp without time zone[]"),
    (Type::TIMESTAMPTZ_ARRAY, "timestamp with time zone[]"),
    (Type::INTERVAL_ARRAY, "interval[]"),
    (Type::OID_ARRAY, "oid[]"),
];

static OIDS: LazyLock<HashMap<&'static str, u32>> =
    LazyLock::new(|| NAMES.iter().map(|(t, name)| (*name, t.oid())).collect());

/// Postgres' name of the type `field` holds: its declared type, else the one its Arrow type maps
/// to (`record` for what has none).
pub fn type_name(field: &Field) -> &'static str {
    let declared = field.metadata().get(PG_TYPE).map(String::as_str);
    let oid = match declared.and_then(|d| OIDS.get(d)) {
        Some(oid) => *oid,
        None => match field.data_type() {
            // A list of lists is an array of more dimensions, of the same type in Postgres.
            DataType::List(item) | DataType::LargeList(item)
                if matches!(item.data_type(), DataType::List(_) | DataType::LargeList(_)) =>
            {
                return type_name(item);
            }
            DataType::Decimal256(..) => Type::NUMERIC.oid(),
            t => arrow_pg::datatypes::into_pg_type(t)
                .map(|t| t.oid())
                .unwrap_or(Type::RECORD.oid()),
        },
    };
    NAMES
        .iter()
        .find(|(t, _)| t.oid() == oid)
        .map_or("record", |(_, name)| *name)
}

/// `pg_typeof(x)`: the name of `x`'s type, a `regtype`.
pub fn pg_typeof() -> ScalarUDF {
    ScalarUDF::new_from_impl(PgTypeof {
        signature: Signature::any(1, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgTypeof {
    signature: Signature,
}

impl ScalarUDFImpl for PgTypeof {
    fn name(&self) -> &str {
        "pg_typeof"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(declare(
            Field::new(self.name(), DataType::Utf8, false),
            "regtype",
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let field = args
            .arg_fields
            .first()
            .ok_or_else(|| DataFusionError::Plan("pg_typeof takes one argument".into()))?;
        Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
            type_name(field).to_string(),
        ))))
    }
}

/// `udf` with its result declared of Postgres' type `pg_type` (one of [`NAMES`]):
/// `current_user` and `current_schema()` are `name`s.
pub fn returning(udf: ScalarUDF, pg_type: &'static str) -> ScalarUDF {
    ScalarUDF::new_from_impl(Returning { udf, pg_type })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Returning {
    udf: ScalarUDF,
    pg_type: &'static str,
}

impl ScalarUDFImpl for Returning {
    fn name(&self) -> &str {
        self.udf.name()
    }

    fn aliases(&self) -> &[String] {
        self.udf.aliases()
    }

    fn signature(&self) -> &Signature {
        self.udf.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.udf.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let field = self.udf.return_field_from_args(args)?;
        Ok(Arc::new(declare(field.as_ref().clone(), self.pg_type)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.udf.invoke_with_args(args)
    }
}

/// `field` declared to hold Postgres' type `name` (one of [`NAMES`]).
pub fn declare(field: Field, name: &str) -> Field {
    let mut metadata = field.metadata().clone();
    metadata.insert(PG_TYPE.to_string(), name.to_string());
    field.with_metadata(metadata)
}

/// The type a string column declares that the wire layer sends in its place.
pub fn declared(field: &Field) -> Option<Type> {
    if !field.data_type().is_string() {
        return None;
    }
    match field.metadata().get(PG_TYPE)?.as_str() {
        "regtype" => Some(Type::REGTYPE),
        "name" => Some(Type::NAME),
        "character varying" => Some(Type::VARCHAR),
        "jsonb" => Some(Type::JSONB),
        "json" => Some(Type::JSON),
        "uuid" => Some(Type::UUID),
        "character" => Some(Type::BPCHAR),
        "\"char\"" => Some(Type::CHAR),
        _ => None,
    }
}

/// `batch` with its `character(n)` columns padded with blanks to `n` characters, as Postgres
/// shows them (they are stored without their trailing blanks); `None` if it has none.
pub fn padded(batch: &RecordBatch) -> Option<RecordBatch> {
    use rivulet_planner::types::CHAR_LENGTH;
    let schema = batch.schema();
    let lengths: Vec<Option<usize>> = schema
        .fields()
        .iter()
        .map(|f| {
            let character = f.metadata().get(PG_TYPE).is_some_and(|t| t == "character");
            f.metadata()
                .get(CHAR_LENGTH)
                .filter(|_| character)
                .and_then(|n| n.parse().ok())
        })
        .collect();
    if lengths.iter().all(Option::is_none) {
        return None;
    }
    let columns = batch
        .columns()
        .iter()
        .zip(&lengths)
        .map(|(column, n)| match n {
            Some(n) if column.data_type().is_string() => {
                let padded: StringArray = (0..column.len())
                    .map(|row| text_at(column.as_ref(), row).map(|s| format!("{s:<n$}")))
                    .collect();
                Arc::new(padded) as ArrayRef
            }
            _ => Arc::clone(column),
        })
        .collect();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c): (&FieldRef, &ArrayRef)| {
            f.as_ref().clone().with_data_type(c.data_type().clone())
        })
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).ok()
}

/// Encodes the value at `row` of `array`, a column the client was told is of type `t`, where
/// Postgres' binary form of `t` is not the text's bytes; `None` where it is, or for a column that
/// is no string.
pub fn encode(
    encoder: &mut DataRowEncoder,
    array: &dyn Array,
    row: usize,
    t: &Type,
    format: FieldFormat,
) -> Option<PgWireResult<()>> {
    if format == FieldFormat::Text
        || !matches!(*t, Type::REGTYPE | Type::JSONB | Type::CHAR | Type::UUID)
        || !array.data_type().is_string()
    {
        return None;
    }
    let text = text_at(array, row);
    Some(if *t == Type::REGTYPE {
        encoder.encode_field(&text.map(|name| OIDS.get(name).copied().unwrap_or(0)))
    } else if *t == Type::UUID {
        // Its 16 bytes.
        let bytes = text.and_then(rivulet_planner::uuid::bytes);
        encoder.encode_field(&bytes.as_ref().map(|b| b.as_slice()))
    } else if *t == Type::CHAR {
        // One byte, 0 for an empty code (`attidentity` of a column that is no identity).
        encoder.encode_field(&text.map(|c| c.bytes().next().unwrap_or(0) as i8))
    } else {
        // jsonb's binary form: its version, 1, then the text.
        let bytes = text.map(|s| {
            let mut out = Vec::with_capacity(s.len() + 1);
            out.push(1u8);
            out.extend_from_slice(s.as_bytes());
            out
        });
        encoder.encode_field(&bytes.as_deref())
    })
}

/// `values` with each binary `jsonb` parameter's text without the version byte (1) that
/// Postgres' binary form puts before it. A parameter is `jsonb` as the client declared it at
/// Parse, else as Describe told it (`described`).
pub fn jsonb_parameters<S>(
    values: &mut ParamValues,
    portal: &Portal<S>,
    described: &[Option<Type>],
) {
    let ParamValues::List(list) = values else {
        return;
    };
    for (i, value) in list.iter_mut().enumerate() {
        let declared = portal.statement.parameter_types.get(i).cloned().flatten();
        let t = declared.or_else(|| described.get(i).cloned().flatten());
        if t != Some(Type::JSONB) || !portal.parameter_format.is_binary(i) {
            continue;
        }
        if let ScalarValue::Utf8(Some(text)) = value.value()
            && let Some(json) = text.strip_prefix('\u{1}')
        {
            *value = ScalarValue::Utf8(Some(json.to_string())).into();
        }
    }
}

/// The types to decode parameters as: `types` (what the statement needs), except where the
/// client declared an integer or a float for a `numeric`, which `arrow-pg` does not convert:
/// those are decoded as what the client sent ([`numeric_parameters`] converts them after).
pub fn decoded_types<'a, S>(
    portal: &Portal<S>,
    types: &[Option<&'a DataType>],
) -> Vec<Option<&'a DataType>> {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| match (t, sent_number(portal, i)) {
            (Some(DataType::Decimal128(..)), Some(sent)) => Some(sent),
            _ => *t,
        })
        .collect()
}

/// The type of a number the client declared parameter `i` as, if an integer or a float.
fn sent_number<S>(portal: &Portal<S>, i: usize) -> Option<&'static DataType> {
    match portal.statement.parameter_types.get(i).cloned().flatten()? {
        Type::INT2 | Type::INT4 | Type::INT8 => Some(&DataType::Int64),
        Type::FLOAT4 | Type::FLOAT8 => Some(&DataType::Float64),
        _ => None,
    }
}

/// `values` (decoded with [`decoded_types`]) with each integer or float sent for a `numeric`
/// converted to it, as Postgres' assignment casts do: a float by its shortest decimal text
/// (`0.1` is `0.1`, as `float8out` writes it). 0A000 for a float that is no number (NaN,
/// infinity), 22003 for one beyond the numeric's range.
pub fn numeric_parameters<S>(
    values: &mut ParamValues,
    portal: &Portal<S>,
    types: &[Option<&DataType>],
) -> Result<(), SqlError> {
    let ParamValues::List(list) = values else {
        return Ok(());
    };
    for (i, slot) in list.iter_mut().enumerate() {
        let Some(Some(target @ DataType::Decimal128(..))) = types.get(i) else {
            continue;
        };
        if sent_number(portal, i).is_none() {
            continue;
        }
        let text = match &slot.value {
            ScalarValue::Int64(Some(n)) => n.to_string(),
            ScalarValue::Float64(Some(f)) if f.is_finite() => f.to_string(),
            // As `'NaN'::numeric` (a 128-bit decimal has no NaN or infinity).
            ScalarValue::Float64(Some(f)) => {
                return Err(SqlError::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!("numeric value \"{f}\" is not supported"),
                ));
            }
            _ => {
                slot.value = ScalarValue::try_from(&**target)?;
                continue;
            }
        };
        let text = ScalarValue::Utf8(Some(text.clone()));
        slot.value = text.cast_to(target).map_err(|_| {
            SqlError::new(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                format!("parameter ${} is out of range for type numeric", i + 1),
            )
        })?;
    }
    Ok(())
}

fn text_at(array: &dyn Array, row: usize) -> Option<&str> {
    if array.is_null(row) {
        return None;
    }
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Some(array.as_string_view().value(row)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn names_types_as_format_type() {
        let field = |t: DataType| Field::new("x", t, true);
        assert_eq!(type_name(&field(DataType::Int32)), "integer");
        assert_eq!(type_name(&field(DataType::Null)), "unknown");
        assert_eq!(
            type_name(&field(DataType::new_list(DataType::Float64, true))),
            "double precision[]"
        );
        let nested = DataType::new_list(DataType::new_list(DataType::Int64, true), true);
        assert_eq!(type_name(&field(nested)), "bigint[]");
        assert_eq!(
            type_name(&declare(field(DataType::Int32), "regclass")),
            "regclass"
        );
        let item = Arc::new(Field::new("a", DataType::Int32, true));
        assert_eq!(
            type_name(&field(DataType::Struct(vec![item].into()))),
            "record"
        );
        assert_eq!(OIDS.get("integer"), Some(&23));
    }
}
