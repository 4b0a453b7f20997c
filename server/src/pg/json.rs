//! JSON as Postgres users query it. Rivulet keeps `json` and `jsonb` values as their text (a
//! JSON or JSONB column is text in Arrow), and answers Postgres' JSON operators and functions
//! with `datafusion-functions-json`'s path functions over that text:
//!
//! | Postgres | planned as |
//! |---|---|
//! | `doc -> 'k'`, `doc -> 0` | `json_get_json(doc, 'k')` (the JSON text of the member) |
//! | `doc ->> 'k'` | `json_as_text(doc, 'k')` (a string unquoted, anything else as JSON) |
//! | `doc #> '{a,0}'`, `doc #>> '{a,0}'` | the same with the path's elements |
//! | `doc ? 'k'` | `json_contains(doc, 'k')` |
//! | `json[b]_extract_path[_text]`, `json[b]_array_length` | the same functions |
//! | `x::json` | `json_in(x)`: the text, checked to be JSON ([`rivulet_planner::jsonb::validate`]) |
//! | `x::jsonb` | `jsonb_in(x)`: the text in `jsonb`'s form ([`rivulet_planner::jsonb`]) |
//!
//! A path or member that is not there (or text that is not JSON) gives NULL, as Postgres gives
//! for a missing member.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::expr::{Cast, ScalarFunction};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr, TypePlanner};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility, create_udf, lit,
};
use datafusion::sql::sqlparser::ast::{BinaryOperator, DataType as SqlType, TimezoneInfo};
use datafusion_functions_json::udfs;

use crate::error::{SqlError, sqlstate};

/// The JSON functions, under their own names and Postgres' where the meaning is the same.
pub fn functions() -> Vec<ScalarUDF> {
    fn named(udf: Arc<ScalarUDF>, aliases: &[&'static str]) -> ScalarUDF {
        ScalarUDF::new_from_impl(BigintIndexes::new(udf)).with_aliases(aliases.iter().copied())
    }
    vec![
        named(
            udfs::json_get_json_udf(),
            &["jsonb_extract_path", "json_extract_path"],
        ),
        named(
            udfs::json_as_text_udf(),
            &["jsonb_extract_path_text", "json_extract_path_text"],
        ),
        named(
            udfs::json_length_udf(),
            &["jsonb_array_length", "json_array_length"],
        ),
        named(udfs::json_contains_udf(), &[]),
        named(udfs::json_get_str_udf(), &[]),
        named(udfs::json_get_int_udf(), &[]),
        named(udfs::json_get_float_udf(), &[]),
        named(udfs::json_get_bool_udf(), &[]),
    ]
}

/// A JSON function whose integer arguments (array indexes) are cast to `bigint`, the only integer
/// type the library takes: `jsonb_extract_path_text(doc, 'a', 0)` passes an `integer` literal.
#[derive(Debug, PartialEq, Eq, Hash)]
struct BigintIndexes {
    inner: Arc<ScalarUDF>,
    signature: Signature,
}

impl BigintIndexes {
    fn new(inner: Arc<ScalarUDF>) -> Self {
        let volatility = inner.signature().volatility;
        Self {
            inner,
            signature: Signature::user_defined(volatility),
        }
    }
}

impl ScalarUDFImpl for BigintIndexes {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        Ok(args
            .iter()
            .map(|t| {
                if t.is_integer() {
                    DataType::Int64
                } else {
                    t.clone()
                }
            })
            .collect())
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.inner.return_type(args)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.invoke_with_args(args)
    }
}

/// Plans `->`, `->>`, `#>`, `#>>` and `?` over JSON text.
#[derive(Debug)]
pub struct JsonOperators {
    get_json: Arc<ScalarUDF>,
    as_text: Arc<ScalarUDF>,
    contains: Arc<ScalarUDF>,
}

impl JsonOperators {
    pub fn new() -> Self {
        Self {
            get_json: udfs::json_get_json_udf(),
            as_text: udfs::json_as_text_udf(),
            contains: udfs::json_contains_udf(),
        }
    }
}

fn call(udf: &Arc<ScalarUDF>, args: Vec<Expr>) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(udf), args))
}

/// The elements of a text-array literal path (`'{a,0}'`): a number is an array index.
fn path_elements(path: &Expr) -> Option<Vec<Expr>> {
    let Expr::Literal(ScalarValue::Utf8(Some(text)), _) = path else {
        return None;
    };
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    if inner.trim().is_empty() {
        return Some(Vec::new());
    }
    Some(
        inner
            .split(',')
            .map(|part| {
                let part = part.trim().trim_matches('"');
                match part.parse::<i64>() {
                    Ok(i) => bigint(i),
                    Err(_) => lit(part.to_string()),
                }
            })
            .collect(),
    )
}

/// An array index as the functions take it: a `bigint` that stays one (see `typing`).
fn bigint(i: i64) -> Expr {
    Expr::Cast(Cast::new(Box::new(lit(i)), DataType::Int64))
}

/// The JSON type `e` is declared, if any.
fn declared_json(e: &Expr, schema: &DFSchema) -> Option<Json> {
    e.to_field(schema).ok().and_then(|(_, f)| json_kind(&f))
}

/// `e` as an operand of a `jsonb` operator: a text constant (Postgres' unknown literal) cast to
/// `jsonb`, a parameter of no type yet typed `jsonb` (what Describe tells the client), anything
/// else as it is.
fn jsonb_operand(e: Expr) -> Expr {
    match e {
        Expr::Literal(ScalarValue::Utf8(Some(_)), None) => json(e, "jsonb"),
        Expr::Placeholder(p) if p.field.is_none() => {
            Expr::Placeholder(datafusion::logical_expr::expr::Placeholder {
                field: Some(Arc::new(declared("jsonb"))),
                ..p
            })
        }
        e => e,
    }
}

/// Plans the `jsonb` operators of [`super::jsonb`] (`||`, `-`, `#-`, `@>`, `<@`, `?|`, `?&`) where an
/// operand is JSON; `None` where the operator is not one of them or no operand is.
fn jsonb_operator(expr: &RawBinaryExpr, schema: &DFSchema) -> Option<Expr> {
    use super::jsonb::{Op, udf};
    let left = declared_json(&expr.left, schema);
    let right = declared_json(&expr.right, schema);
    let op = match expr.op {
        // Postgres has `||` for `jsonb` only; text with text stays a text concatenation.
        BinaryOperator::StringConcat if left == Some(Json::Jsonb) || right == Some(Json::Jsonb) => {
            Op::Concat
        }
        BinaryOperator::Minus if left == Some(Json::Jsonb) => Op::Delete,
        BinaryOperator::HashMinus if left == Some(Json::Jsonb) => Op::DeletePath,
        BinaryOperator::AtArrow if left.is_some() || right.is_some() => Op::Contains,
        BinaryOperator::ArrowAt if left.is_some() || right.is_some() => Op::ContainedBy,
        BinaryOperator::Question if left.is_some() => Op::HasKey,
        BinaryOperator::QuestionPipe if left.is_some() => Op::AnyKey,
        BinaryOperator::QuestionAnd if left.is_some() => Op::AllKeys,
        _ => return None,
    };
    let (l, r) = (expr.left.clone(), expr.right.clone());
    let args = match op {
        Op::Delete | Op::DeletePath | Op::HasKey | Op::AnyKey | Op::AllKeys => vec![l, r],
        _ => vec![jsonb_operand(l), jsonb_operand(r)],
    };
    Some(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(udf(op)),
        args,
    )))
}

impl ExprPlanner for JsonOperators {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        if let Some(planned) = jsonb_operator(&expr, schema) {
            return Ok(PlannerResult::Planned(planned));
        }
        let expr = super::uuid::typed_literals(expr, schema);
        let json_text = matches!(
            expr.left.get_type(schema),
            Ok(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        );
        if !json_text {
            return Ok(PlannerResult::Original(expr));
        }
        // `->` and `#>` give the left operand's type: `json` from a `json`, else `jsonb`.
        let kind = match expr.left.to_field(schema) {
            Ok((_, f))
                if f.metadata()
                    .get(super::wire_types::PG_TYPE)
                    .map(String::as_str)
                    == Some("json") =>
            {
                "json"
            }
            _ => "jsonb",
        };
        // The functions take array indexes as `bigint`; an integer literal is `integer` by the
        // time the plan runs (see `typing`).
        let right = match expr.right.get_type(schema) {
            Ok(t) if t.is_integer() => {
                Expr::Cast(Cast::new(Box::new(expr.right.clone()), DataType::Int64))
            }
            _ => expr.right.clone(),
        };
        let planned = match expr.op {
            BinaryOperator::Arrow => json(call(&self.get_json, vec![expr.left, right]), kind),
            BinaryOperator::LongArrow => call(&self.as_text, vec![expr.left, right]),
            BinaryOperator::HashArrow | BinaryOperator::HashLongArrow => {
                let Some(path) = path_elements(&expr.right) else {
                    return Ok(PlannerResult::Original(expr));
                };
                let mut args = vec![expr.left];
                args.extend(path);
                if expr.op == BinaryOperator::HashArrow {
                    json(call(&self.get_json, args), kind)
                } else {
                    call(&self.as_text, args)
                }
            }
            BinaryOperator::Question => call(&self.contains, vec![expr.left, right]),
            _ => return Ok(PlannerResult::Original(expr)),
        };
        Ok(PlannerResult::Planned(planned))
    }
}

/// Postgres' two JSON types, both text here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Json {
    /// The text as written, checked to be JSON.
    Json,
    /// The text in `jsonb`'s form.
    Jsonb,
}

impl Json {
    /// The input function: the text as a value of this type, or Postgres' error.
    fn input(self, text: &str) -> Result<String> {
        match self {
            Json::Json => rivulet_planner::jsonb::validate(text).map(|()| text.to_string()),
            Json::Jsonb => rivulet_planner::jsonb::normalize(text),
        }
        .map_err(jsonb_error)
    }

    fn name(self) -> &'static str {
        match self {
            Json::Json => "json_in",
            Json::Jsonb => "jsonb_in",
        }
    }

    /// The type's name: `json` or `jsonb`.
    pub fn type_name(self) -> &'static str {
        match self {
            Json::Json => "json",
            Json::Jsonb => "jsonb",
        }
    }
}

/// Which JSON type `field` is declared, if any.
pub fn json_kind(field: &Field) -> Option<Json> {
    if !field.data_type().is_string() {
        return None;
    }
    match field.metadata().get(super::wire_types::PG_TYPE)?.as_str() {
        "json" => Some(Json::Json),
        "jsonb" => Some(Json::Jsonb),
        _ => None,
    }
}

/// A `jsonb` error as Postgres reports it.
pub(super) fn jsonb_error(e: rivulet_planner::jsonb::JsonbError) -> DataFusionError {
    use rivulet_planner::jsonb::JsonbError;
    let code = match e {
        JsonbError::NullCharacter => sqlstate::UNTRANSLATABLE_CHARACTER,
        JsonbError::TooDeep => sqlstate::STATEMENT_TOO_COMPLEX,
        JsonbError::NumericOverflow => sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        JsonbError::Syntax(_) => sqlstate::INVALID_TEXT_REPRESENTATION,
    };
    let mut err = SqlError::new(code, e.message());
    if let Some(detail) = e.detail() {
        err = err.with_detail(detail);
    }
    DataFusionError::External(Box::new(err))
}

/// `cast`, a cast of text to `kind`, giving `jsonb`'s text form ([`rivulet_planner::jsonb`]) or
/// `json`'s checked text: a constant now (text that is no JSON fails at planning, as Postgres'
/// Describe of `'x'::jsonb` does), anything else when it runs.
pub fn json_cast(cast: Cast, kind: Json) -> Result<Transformed<Expr>> {
    if let Expr::Literal(ScalarValue::Utf8(Some(text)), _) = cast.expr.as_ref() {
        // The error points at the constant, as Postgres' does.
        let value = kind.input(text).map_err(|e| match e {
            DataFusionError::External(inner) => match inner.downcast::<SqlError>() {
                Ok(sql) => DataFusionError::External(Box::new(sql.about_constant(text))),
                Err(other) => DataFusionError::External(other),
            },
            other => other,
        })?;
        return Ok(Transformed::yes(Expr::Cast(Cast::new_from_field(
            Box::new(lit(value)),
            cast.field,
        ))));
    }
    let field = Arc::clone(&cast.field);
    // The cast stays inside, so that a `$1::jsonb` placeholder is still described as `jsonb`.
    let normalized = call(&Arc::new(json_in(kind)), vec![Expr::Cast(cast)]);
    Ok(Transformed::yes(Expr::Cast(Cast::new_from_field(
        Box::new(normalized),
        field,
    ))))
}

/// `jsonb_in(text)` or `json_in(text)`: the text as a value of `kind`, or Postgres' error for
/// text that is no JSON.
fn json_in(kind: Json) -> ScalarUDF {
    create_udf(
        kind.name(),
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let [arg] = args else {
                return Err(DataFusionError::Internal(format!(
                    "{} takes one argument",
                    kind.name()
                )));
            };
            let normalize = |v: Option<&str>| v.map(|v| kind.input(v)).transpose();
            match arg {
                ColumnarValue::Scalar(s) => {
                    let text = match s {
                        ScalarValue::Utf8(v)
                        | ScalarValue::LargeUtf8(v)
                        | ScalarValue::Utf8View(v) => v.as_deref(),
                        ScalarValue::Null => None,
                        other => {
                            return Err(DataFusionError::Internal(format!(
                                "{} of {}",
                                kind.name(),
                                other.data_type()
                            )));
                        }
                    };
                    Ok(ColumnarValue::Scalar(ScalarValue::Utf8(normalize(text)?)))
                }
                ColumnarValue::Array(a) => {
                    let text = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                    let out = text
                        .as_string::<i32>()
                        .iter()
                        .map(normalize)
                        .collect::<Result<StringArray>>()?;
                    Ok(ColumnarValue::Array(Arc::new(out)))
                }
            }
        }),
    )
}

/// A text field declared `json`, `jsonb` or `character` ([`super::wire_types`]), as a cast's
/// target.
fn declared(name: &str) -> Field {
    super::wire_types::declare(Field::new(name, DataType::Utf8, true), name)
}

/// `e`, JSON text, declared `kind` (`json` or `jsonb`): what `->` and `#>` give in Postgres.
fn json(e: Expr, kind: &str) -> Expr {
    Expr::Cast(Cast::new_from_field(Box::new(e), Arc::new(declared(kind))))
}

/// `json`, `jsonb`, `bpchar` and `character(n)` are text, declared as such, and `text` declares
/// nothing; every other type goes to `inner` (the catalog library's planner of `regclass` and
/// friends).
#[derive(Debug)]
pub struct JsonTypes<T> {
    pub inner: T,
}

impl<T: TypePlanner> TypePlanner for JsonTypes<T> {
    fn plan_type_field(&self, sql_type: &SqlType) -> Result<Option<FieldRef>> {
        match sql_type {
            // Named, so that a cast takes the declared type rather than its operand's metadata.
            SqlType::JSON => Ok(Some(Arc::new(declared("json")))),
            SqlType::JSONB => Ok(Some(Arc::new(declared("jsonb")))),
            SqlType::Uuid => Ok(Some(Arc::new(super::uuid::field("uuid")))),
            // `bpchar` without a length keeps its value's blanks (see `super::literals`).
            SqlType::Custom(name, args)
                if args.is_empty()
                    && name
                        .0
                        .last()
                        .and_then(|p| p.as_ident())
                        .is_some_and(|i| i.value.eq_ignore_ascii_case("bpchar")) =>
            {
                Ok(Some(Arc::new(declared("character"))))
            }
            // Plain text, named so that a cast drops what its operand declares
            // (`'a'::char(3)::text` is `a`, not padded; `pg_typeof(x)::text` is no `regtype`).
            SqlType::Text | SqlType::Varchar(None) => {
                Ok(Some(Arc::new(Field::new("text", DataType::Utf8, true))))
            }
            // `varchar(n)`: its length in the field, which the cast cuts to (see
            // `super::character`).
            SqlType::Varchar(Some(_)) | SqlType::CharacterVarying(Some(_)) => {
                let column = rivulet_planner::types::SqlType::from_ast(sql_type)
                    .map_err(|e| DataFusionError::External(Box::new(SqlError::from(e))))?;
                Ok(Some(Arc::new(column.field("varchar", true))))
            }
            // `character(n)` (`char` is `character(1)`): its length in the field, as a
            // column's (see `super::characters`).
            SqlType::Char(_) | SqlType::Character(_) => {
                let column = rivulet_planner::types::SqlType::from_ast(sql_type)
                    .map_err(|e| DataFusionError::External(Box::new(SqlError::from(e))))?;
                Ok(Some(Arc::new(column.field("character", true))))
            }
            // `numeric(p,s)`: declared, so that clients are told its precision and scale, as
            // Postgres tells them for a cast to it.
            SqlType::Numeric(info) | SqlType::Decimal(info)
                if !matches!(info, datafusion::sql::sqlparser::ast::ExactNumberInfo::None) =>
            {
                let column = rivulet_planner::types::SqlType::from_ast(sql_type)
                    .map_err(|e| DataFusionError::External(Box::new(SqlError::from(e))))?;
                Ok(Some(Arc::new(column.field("numeric", true))))
            }
            // Postgres' `timestamp` holds microseconds from 4713 BC; DataFusion's default
            // (nanoseconds) ends in 2262, so `'9999-12-31'::timestamp` overflowed. A table's
            // `timestamp` column is microseconds too.
            SqlType::Timestamp(
                None | Some(6),
                TimezoneInfo::None | TimezoneInfo::WithoutTimeZone,
            ) => Ok(Some(Arc::new(Field::new(
                "",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            )))),
            // `timestamptz` likewise, an instant as a table's column (shown in the session's zone).
            SqlType::Timestamp(None | Some(6), TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
                Ok(Some(Arc::new(Field::new(
                    "",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                    true,
                ))))
            }
            other => self.inner.plan_type_field(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_array_paths_become_keys_and_indexes() {
        let path = |s: &str| path_elements(&lit(s.to_string()));
        assert_eq!(path("{a,0}"), Some(vec![lit("a".to_string()), bigint(0)]));
        assert_eq!(path("{\"b c\"}"), Some(vec![lit("b c".to_string())]));
        assert_eq!(path("{}"), Some(vec![]));
        assert_eq!(path("a"), None);
    }
}
