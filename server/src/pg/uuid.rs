//! `uuid` in queries: casts of text to `uuid` (`'A0EE..'::uuid`, a text compared with a `uuid`
//! column) read it as Postgres' `uuid_in` does into its text form ([`rivulet_planner::uuid`]), or
//! fail with 22P02; `gen_random_uuid()` makes a version 4 one. A `uuid` is text declared `uuid`
//! ([`super::wire_types`]), stored and compared in that form, whose order is the bytes' order.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::planner::RawBinaryExpr;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use rand::RngCore;

use super::wire_types::{PG_TYPE, declare};

/// A `uuid` field named `name`.
pub fn field(name: &str) -> Field {
    declare(Field::new(name, DataType::Utf8, true), "uuid")
}

/// Whether `field` is a `uuid`.
pub fn is_uuid(field: &Field) -> bool {
    field.data_type().is_string() && field.metadata().get(PG_TYPE).is_some_and(|t| t == "uuid")
}

/// `cast`, a cast of text to `uuid`, reading its text as `uuid_in` does.
pub fn cast_text(cast: Cast) -> Expr {
    let Cast { expr, field } = cast;
    let read = Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(input()), vec![*expr]));
    Expr::Cast(Cast::new_from_field(Box::new(read), field))
}

/// `expr` with a quoted literal compared with a `uuid` (`id = 'A0EE..'`) cast to `uuid`, as
/// Postgres types it by the other operand: compared as text, a literal not in `uuid`'s form
/// would match nothing.
pub fn typed_literals(mut expr: RawBinaryExpr, schema: &DFSchema) -> RawBinaryExpr {
    use datafusion::sql::sqlparser::ast::BinaryOperator as Op;
    if !matches!(
        expr.op,
        Op::Eq | Op::NotEq | Op::Lt | Op::LtEq | Op::Gt | Op::GtEq
    ) {
        return expr;
    }
    let uuid = |e: &Expr| e.to_field(schema).is_ok_and(|(_, f)| is_uuid(&f));
    let text_literal = |e: &Expr| {
        matches!(
            e,
            Expr::Literal(
                ScalarValue::Utf8(Some(_)) | ScalarValue::Utf8View(Some(_)),
                _
            )
        )
    };
    let typed = |e: Expr| Expr::Cast(Cast::new_from_field(Box::new(e), Arc::new(field("uuid"))));
    if uuid(&expr.left) && text_literal(&expr.right) {
        expr.right = typed(expr.right);
    } else if uuid(&expr.right) && text_literal(&expr.left) {
        expr.left = typed(expr.left);
    }
    expr
}

/// `uuid_in(text)`.
pub fn input() -> ScalarUDF {
    ScalarUDF::new_from_impl(Uuid {
        name: "uuid_in",
        signature: Signature::exact(vec![DataType::Utf8], Volatility::Immutable),
    })
}

/// `gen_random_uuid()`.
pub fn random() -> ScalarUDF {
    ScalarUDF::new_from_impl(Uuid {
        name: "gen_random_uuid",
        signature: Signature::nullary(Volatility::Volatile),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Uuid {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for Uuid {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(field(self.name)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let mut out = StringBuilder::with_capacity(rows, rows * 36);
        let Some(text) = args.args.first() else {
            // Version 4: random but for the version and variant bits.
            let mut rng = rand::rng();
            for _ in 0..rows {
                let mut bytes = [0u8; 16];
                rng.fill_bytes(&mut bytes);
                bytes[6] = (bytes[6] & 0x0f) | 0x40;
                bytes[8] = (bytes[8] & 0x3f) | 0x80;
                out.append_option(rivulet_planner::uuid::from_bytes(&bytes));
            }
            return Ok(ColumnarValue::Array(Arc::new(out.finish())));
        };
        let texts = cast(&text.to_array(rows)?, &DataType::Utf8)?;
        let texts = texts.as_string::<i32>();
        for row in 0..rows {
            if texts.is_null(row) {
                out.append_null();
                continue;
            }
            let value = texts.value(row);
            let Some(form) = rivulet_planner::uuid::parse(value) else {
                return Err(DataFusionError::External(Box::new(
                    crate::error::SqlError::new(
                        crate::error::sqlstate::INVALID_TEXT_REPRESENTATION,
                        format!("invalid input syntax for type uuid: \"{value}\""),
                    ),
                )));
            };
            out.append_value(form);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
