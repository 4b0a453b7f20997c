//! A value cast to text as Postgres casts it: through its type's output function, the text a
//! client reads in the text format. Arrow's casts print forms of their own: `array[1,2]::text`
//! is `[1, 2]` there and `{1,2}` in Postgres, an interval `1 days 2 hours` for `1 day 02:00:00`,
//! a `float8` `1e20` for `1e+20`, a `bytea` its raw bytes for `\x0102`, an unconstrained
//! `numeric` all ten stored decimals, and a row cannot be cast at all (`(1,a)`).
//!
//! [`text`] is that cast: `pg_text(x)`, which encodes `x`'s values as the wire layer does
//! ([`crate::wire::output_text`]), so a value's text is one thing wherever it is read. The
//! session-zone pass ([`super::time_zone`]) puts it in place of each such cast, in queries and
//! materialized views alike. A `boolean` keeps Arrow's cast: Postgres' cast of one to text is
//! `true`, where its output function (and so an array of them) says `t`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};

/// Whether a cast of a value of type `t` to text is Postgres' output function rather than
/// Arrow's cast.
pub fn by_output_function(t: &DataType) -> bool {
    matches!(
        t,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Struct(_)
            | DataType::Interval(_)
            | DataType::Duration(_)
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Timestamp(..)
            | DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(..)
            | DataType::Decimal256(..)
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

/// Whether `e` is [`text`] of one value.
pub fn is_text_of(e: &Expr) -> Option<&Expr> {
    match e {
        Expr::ScalarFunction(f) if f.func.name() == "pg_text" => match f.args.as_slice() {
            [x] => Some(x),
            _ => None,
        },
        _ => None,
    }
}

/// [`text`] of a numeric `x` with its values' display `scales`.
pub fn text_scaled(x: Expr, scales: Expr) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(PgText::default())),
        vec![x, scales],
    ))
}

/// `x` as text, as Postgres' output function for its type writes it (a `timestamptz` in the zone
/// its type is labelled with).
pub fn text(x: Expr) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(PgText::default())),
        vec![x],
    ))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgText {
    signature: Signature,
}

impl Default for PgText {
    fn default() -> Self {
        PgText {
            // A numeric may come with its values' display scales ([`super::dscale`]).
            signature: Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for PgText {
    fn name(&self) -> &str {
        "pg_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (Some(value), Some(field)) = (args.args.first(), args.arg_fields.first()) else {
            return Err(DataFusionError::Internal("pg_text takes one value".into()));
        };
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let column = value.to_array(rows)?;
        let text = match args.args.get(1) {
            Some(scales) => {
                let scales = scales.to_array(rows)?;
                match super::dscale::texts(&column, field, &scales) {
                    Some(text) => text,
                    None => output(field, &column)?,
                }
            }
            None => output(field, &column)?,
        };
        Ok(if scalar {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&text, 0)?)
        } else {
            ColumnarValue::Array(text)
        })
    }
}

fn output(
    field: &FieldRef,
    column: &datafusion::arrow::array::ArrayRef,
) -> Result<datafusion::arrow::array::ArrayRef> {
    crate::wire::output_text(field, column, None)
        .map_err(|e| DataFusionError::Execution(e.to_string()))
}
