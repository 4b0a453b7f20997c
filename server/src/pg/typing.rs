//! Postgres' types for what a query does not type itself, in one place:
//!
//! - an integer literal is `integer` (`int4`), or `bigint` when it does not fit (DataFusion types
//!   every integer literal `Int64`, so `SELECT 1` reached node-postgres as a string);
//! - a literal with a decimal point or an exponent is `numeric`, not `double precision`
//!   (DataFusion's `parse_float_as_decimal`, set in the session's configuration by [`configure`]),
//!   so `0.908 * 13909` is `12629.372`;
//! - `avg` of integers is `numeric`, with the sixteen decimals Postgres shows for it, and so is
//!   `sum` of `bigint`;
//! - `real` with an integer or a `numeric` is `double precision` ([`real_arithmetic`]);
//! - a `numeric` result shows the decimals Postgres shows ([`super::numeric`]);
//! - a `bpchar` without a length passed to a function of text loses its trailing blanks, as
//!   Postgres' cast to `text` drops them.
//!
//! A quoted literal's type comes from its context, as Postgres' `unknown` ([`super::literals`]).
//!
//! [`postgres_types`] rewrites the logical plan as DataFusion's SQL planner leaves it, before type
//! coercion, and keeps every column's name. `INSERT`, `UPDATE` and `DELETE` are left alone: their
//! values take the target columns' types. `LIMIT` and `OFFSET` stay `bigint`, as DataFusion needs.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::{AggregateFunction, Cast};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, Projection,
    RecursiveQuery, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Union, Values,
    Volatility,
};
use datafusion::sql::sqlparser::ast;

/// Writes numeric literals with an exponent (`1e3`, `1.0E-2`) in plain decimals (`1000`,
/// `0.010`, Postgres' values and scales): DataFusion's decimal parsing of them fails on a positive
/// exponent. One without decimals is cast to `numeric`, which it is in Postgres.
pub fn exponent_literals(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Value(v) = expr
            && let ast::Value::Number(text, long) = &v.value
            && let Some(plain) = without_exponent(text)
        {
            let integral = !plain.contains('.');
            let digits = plain.len() as u64;
            v.value = ast::Value::Number(plain, *long);
            if integral {
                // A plain `numeric` where the integer fits a bigint (the cast keeps its own
                // digits, and clients see no type modifier, as in Postgres); beyond, its width.
                let info = if digits <= 18 {
                    ast::ExactNumberInfo::None
                } else {
                    ast::ExactNumberInfo::PrecisionAndScale(digits.clamp(1, 38), 0)
                };
                *expr = ast::Expr::Cast {
                    kind: ast::CastKind::Cast,
                    expr: Box::new(expr.clone()),
                    data_type: ast::DataType::Numeric(info),
                    array: false,
                    format: None,
                };
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `1.5e3` as `1500`, `1.0E-2` as `0.010`; `None` without an exponent or for what does not parse.
pub fn without_exponent(text: &str) -> Option<String> {
    let (mantissa, exponent) = text.split_once(['e', 'E'])?;
    let exponent: i32 = exponent.parse().ok()?;
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !(int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())) || exponent.abs() > 1000 {
        return None;
    }
    let digits = format!("{int}{frac}");
    // Position of the decimal point in `digits`.
    let point = i32::try_from(int.len()).ok()? + exponent;
    let plain = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (a, b) = digits.split_at(point as usize);
        format!("{a}.{b}")
    };
    // Leading zeros of the integer part go, as Postgres prints the value.
    let trimmed = plain.trim_start_matches('0');
    Some(if trimmed.is_empty() || trimmed.starts_with('.') {
        format!("0{trimmed}")
    } else {
        trimmed.to_string()
    })
}

/// Sets the session options behind these rules.
pub fn configure(options: &mut ConfigOptions) {
    options.sql_parser.parse_float_as_decimal = true;
    // Column references keep where they were written, so an unknown column's error says where.
    options.sql_parser.collect_spans = true;
}

/// Decimal type `avg` reads its argument as. A numeric's: the decimals that give the average a
/// quotient's ([`super::numeric`]). An integer's: 10 integer digits hold every `int4`, with a
/// quotient's decimals too (DataFusion's decimal average has 4 more than its argument), so the
/// average shows Postgres' 16 significant digits, 20 decimals below 1, the last one rounded. A
/// `bigint` needs 20 integer digits, and its sum in 38 digits room for more than a few rows of
/// large values: 12 decimals, so 16 show (Postgres' 20 below 1), the last one truncated (`avg` of
/// 2, 2 and 1 is 1.6666666666666666, Postgres' 1.6666666666666667), as a view's average is too.
fn avg_input(t: &DataType) -> Option<DataType> {
    use super::numeric::QUOTIENT_SCALE;
    let (digits, scale) = match t {
        // A numeric's average with a quotient's decimals, where 38 digits hold them; an
        // unconstrained one's has no room.
        DataType::Decimal128(p, s) => {
            let scale = QUOTIENT_SCALE - 4;
            let precision = i16::from(*p) - i16::from(*s) + i16::from(scale);
            return (*s < scale && precision <= 38)
                .then_some(DataType::Decimal128(precision as u8, scale));
        }
        DataType::Int8 | DataType::Int16 | DataType::Int32 => (10, QUOTIENT_SCALE - 4),
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => (10, QUOTIENT_SCALE - 4),
        DataType::Int64 | DataType::UInt64 => (20, 12),
        _ => return None,
    };
    Some(DataType::Decimal128(digits + scale as u8, scale))
}

/// The type an aggregate's argument is cast to for Postgres' result type: `avg` of an integer
/// ([`avg_input`]), and `sum` of a `bigint`, a `numeric` in Postgres (DataFusion's `bigint` sum
/// wraps around where it overflows).
fn aggregate_input(name: &str, t: &DataType) -> Option<DataType> {
    match (name, t) {
        ("avg", t) => avg_input(t),
        ("sum", DataType::Int64 | DataType::UInt64) => Some(DataType::Decimal128(20, 0)),
        _ => None,
    }
}

/// `plan` with Postgres' types for literals and `avg` of integers; see the module documentation.
pub fn postgres_types(plan: LogicalPlan) -> Result<LogicalPlan> {
    if matches!(plan, LogicalPlan::Dml(_)) {
        return Ok(plan);
    }
    let rewritten = plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::Limit(_) => Ok(Transformed::no(node)),
        LogicalPlan::Values(values) => values_as_int4(values),
        LogicalPlan::RecursiveQuery(query) => recursive_query(query),
        LogicalPlan::Union(union) => {
            // A union's schema is its first input's; rebuilt, it follows retyped inputs.
            let inputs = union.inputs;
            Ok(Transformed::yes(LogicalPlan::Union(
                Union::try_new_with_loose_types(inputs)?,
            )))
        }
        node => {
            let input_schema = node
                .inputs()
                .first()
                .map(|i| Arc::clone(i.schema()))
                .unwrap_or_else(|| Arc::new(DFSchema::empty()));
            let names = NamePreserver::new(&node);
            let projection = matches!(node, LogicalPlan::Projection(_));
            let changed = node.map_expressions(|e| {
                let saved = names.save(&e);
                let mut retyped = e.transform_up(|e| retype(e, &input_schema))?;
                if projection {
                    retyped = retyped
                        .transform_data(|e| Ok(super::numeric::average(e, &input_schema)))?;
                }
                Ok(if retyped.transformed {
                    retyped.update_data(|e| saved.restore(e))
                } else {
                    retyped
                })
            })?;
            // Recomputed even when this node's expressions did not change: an input's may have.
            Ok(Transformed::yes(changed.data.recompute_schema()?))
        }
    })?;
    Ok(rewritten.data)
}

fn rounding(name: &str) -> bool {
    matches!(name, "floor" | "ceil" | "ceiling" | "round" | "trunc")
}

/// An `Int64` literal that fits, as `Int32`; `avg` of an integer, as `avg` of a decimal.
fn retype(e: Expr, input: &DFSchema) -> Result<Transformed<Expr>> {
    match e {
        Expr::Literal(ScalarValue::Int64(Some(v)), meta) => match i32::try_from(v) {
            Ok(small) => Ok(Transformed::yes(Expr::Literal(
                ScalarValue::Int32(Some(small)),
                meta,
            ))),
            Err(_) => Ok(Transformed::no(Expr::Literal(
                ScalarValue::Int64(Some(v)),
                meta,
            ))),
        },
        Expr::AggregateFunction(mut agg) if agg.params.args.len() == 1 => {
            // A type that cannot be told here (a column of another input) leaves it alone.
            let arg_type = agg.params.args[0].get_type(input).ok();
            let name = agg.func.name().to_ascii_lowercase();
            match arg_type.and_then(|t| aggregate_input(&name, &t)) {
                Some(decimal) => {
                    let arg = agg.params.args.remove(0);
                    agg.params
                        .args
                        .push(Expr::Cast(Cast::new(Box::new(arg), decimal)));
                    Ok(Transformed::yes(Expr::AggregateFunction(
                        AggregateFunction {
                            func: agg.func,
                            params: agg.params,
                        },
                    )))
                }
                None => Ok(Transformed::no(Expr::AggregateFunction(agg))),
            }
        }
        Expr::Cast(Cast { expr, field })
            if field.data_type().is_integer()
                && expr.get_type(input).is_ok_and(|t| {
                    matches!(
                        t,
                        DataType::Decimal128(..)
                            | DataType::Decimal256(..)
                            | DataType::Float32
                            | DataType::Float64
                    )
                }) =>
        {
            // Postgres rounds a numeric or a float cast to an integer (`2.5::int` is 3); Arrow's
            // cast truncates. A numeric rounds half away from zero, a float half to even
            // (`2.5::float8::int` is 2), as C's rint.
            let rounded = if expr.get_type(input).is_ok_and(|t| t.is_floating()) {
                half_even(*expr)
            } else {
                datafusion::functions::math::expr_fn::round(vec![*expr])
            };
            Ok(Transformed::yes(Expr::Cast(Cast::new(
                Box::new(rounded),
                field.data_type().clone(),
            ))))
        }
        Expr::Negative(inner)
            if inner.to_field(input).is_ok_and(|(_, f)| {
                f.metadata()
                    .contains_key(rivulet_planner::types::NUMERIC_TYPMOD)
            }) =>
        {
            // `-n` of a `numeric(p,s)` column is plain `numeric` in Postgres; DataFusion's
            // negation keeps the column's declared type modifier.
            Ok(Transformed::yes(Expr::Negative(Box::new(plain(*inner)))))
        }
        Expr::ScalarSubquery(mut sq)
            if sq
                .subquery
                .schema()
                .fields()
                .first()
                .is_some_and(|f| declares_column_type(f)) =>
        {
            // DataFusion's decorrelation of a scalar subquery loses its column's metadata (a
            // `jsonb` or `varchar(n)` column's declared type), and the optimizer then refuses
            // the changed schema ("schema field unallowed change"): the subquery gives the plain
            // value, and a cast outside it declares the column's type again.
            let plan = Arc::unwrap_or_clone(sq.subquery);
            let declared = Arc::new(plan.schema().field(0).as_ref().clone());
            let column = Expr::Column(Column::from(plan.schema().qualified_field(0)));
            let name = declared.name().clone();
            sq.subquery = Arc::new(
                datafusion::logical_expr::LogicalPlanBuilder::from(plan)
                    .project(vec![plain(column).alias(name)])?
                    .build()?,
            );
            Ok(Transformed::yes(Expr::Cast(Cast::new_from_field(
                Box::new(Expr::ScalarSubquery(sq)),
                declared,
            ))))
        }
        Expr::ScalarFunction(f) if let Some(declared) = conditional_type(&f, input) => {
            // `coalesce(j, '{}')` of a `jsonb` j is `jsonb` in Postgres; DataFusion's result
            // declares nothing (text).
            let field = super::wire_types::declare(
                datafusion::arrow::datatypes::Field::new(declared, DataType::Utf8, true),
                declared,
            );
            Ok(Transformed::yes(Expr::Cast(Cast::new_from_field(
                Box::new(Expr::ScalarFunction(f)),
                Arc::new(field),
            ))))
        }
        Expr::ScalarFunction(f)
            if matches!(
                f.name(),
                "array_length" | "cardinality" | "array_ndims" | "array_position" | "json_length"
            ) =>
        {
            // Postgres' integer, where DataFusion's is an unsigned bigint (shown as numeric).
            Ok(Transformed::yes(Expr::Cast(Cast::new(
                Box::new(Expr::ScalarFunction(f)),
                DataType::Int32,
            ))))
        }
        Expr::BinaryExpr(b)
            if b.op == Operator::Minus
                && b.left.get_type(input).is_ok_and(|t| t == DataType::Date32)
                && b.right.get_type(input).is_ok_and(|t| t == DataType::Date32) =>
        {
            // date - date is a number of days, an integer in Postgres (DataFusion's bigint).
            Ok(Transformed::yes(Expr::Cast(Cast::new(
                Box::new(Expr::BinaryExpr(b)),
                DataType::Int32,
            ))))
        }
        Expr::BinaryExpr(b)
            if matches!(b.op, Operator::Plus | Operator::Minus)
                && b.left.get_type(input).is_ok_and(|t| t == DataType::Date32)
                && b.right
                    .get_type(input)
                    .is_ok_and(|t| matches!(t, DataType::Interval(_))) =>
        {
            // date ± interval is a timestamp in Postgres; DataFusion keeps a date.
            let left = Expr::Cast(Cast::new(
                b.left,
                DataType::Timestamp(TimeUnit::Microsecond, None),
            ));
            Ok(Transformed::yes(Expr::BinaryExpr(
                datafusion::logical_expr::BinaryExpr::new(Box::new(left), b.op, b.right),
            )))
        }
        Expr::ScalarFunction(mut f)
            if f.name() == "round"
                && f.args.len() == 1
                && f.args[0].get_type(input).is_ok_and(|t| t.is_floating()) =>
        {
            // round(double precision) rounds half to even in Postgres (rint); DataFusion's half
            // away from zero.
            Ok(Transformed::yes(half_even(f.args.remove(0))))
        }
        Expr::ScalarFunction(mut f)
            if f.name() == "pg_typeof"
                && matches!(
                    f.args.as_slice(),
                    [Expr::Literal(ScalarValue::Utf8(Some(_)), _)]
                ) =>
        {
            // A quoted literal is of type unknown until its context types it, and pg_typeof
            // gives it none.
            f.args = vec![Expr::Literal(ScalarValue::Null, None)];
            Ok(Transformed::yes(Expr::ScalarFunction(f)))
        }
        Expr::ScalarFunction(f) if rounding(f.name()) => {
            // Postgres' floor, ceil, round and trunc of a numeric have the decimals asked for (none,
            // or round(x, n)'s n); DataFusion's keep the argument's.
            let target = match (
                f.args.first().and_then(|a| a.get_type(input).ok()),
                f.args.get(1),
            ) {
                (Some(DataType::Decimal128(p, _)), None) => Some(DataType::Decimal128(p, 0)),
                (
                    Some(DataType::Decimal128(p, s)),
                    Some(Expr::Literal(ScalarValue::Int32(Some(n)), _)),
                ) if (0..=i32::from(s)).contains(n) => {
                    i8::try_from(*n).ok().map(|n| DataType::Decimal128(p, n))
                }
                _ => None,
            };
            let call = Expr::ScalarFunction(f);
            Ok(match target {
                Some(t) => Transformed::yes(Expr::Cast(Cast::new(Box::new(call), t))),
                None => Transformed::no(call),
            })
        }
        Expr::BinaryExpr(b) if b.op.is_numerical_operators() => {
            let e = real_arithmetic(b, input);
            if let Some(failing) = overflow_when_run(&e.data, input)? {
                return Ok(Transformed::yes(failing));
            }
            let shown = super::numeric::arithmetic(e.data, input)?;
            Ok(Transformed::new_transformed(
                shown.data,
                e.transformed || shown.transformed,
            ))
        }
        Expr::Cast(c) if c.field.data_type().is_decimal() => {
            Ok(super::numeric::cast(Expr::Cast(c), input))
        }
        Expr::BinaryExpr(_) | Expr::Negative(_) => match overflow_when_run(&e, input)? {
            Some(failing) => Ok(Transformed::yes(failing)),
            None => Ok(Transformed::no(e)),
        },
        Expr::Cast(Cast { expr, field })
            if field.data_type().is_string()
                && field
                    .metadata()
                    .get(rivulet_planner::types::PG_TYPE)
                    .map(String::as_str)
                    != Some("character")
                && blank_padded(&expr, input) =>
        {
            // `bpchar` to text (or `varchar`, `jsonb`) drops the trailing blanks.
            Ok(Transformed::yes(Expr::Cast(Cast {
                expr: Box::new(without_blanks(*expr)),
                field,
            })))
        }
        Expr::ScalarFunction(mut f)
            if !matches!(f.name(), "pg_typeof" | "octet_length" | "rtrim")
                && f.args.iter().any(|a| blank_padded(a, input)) =>
        {
            // A function of text gets a `bpchar` as text, without its trailing blanks (its own
            // `length` ignores them too); `octet_length` counts them, as Postgres' does.
            for arg in &mut f.args {
                if blank_padded(arg, input) {
                    let padded = std::mem::replace(arg, Expr::Literal(ScalarValue::Null, None));
                    *arg = without_blanks(padded);
                }
            }
            Ok(Transformed::yes(Expr::ScalarFunction(f)))
        }
        other => Ok(Transformed::no(other)),
    }
}

/// `e`, a `bpchar`, as text: without its trailing blanks.
fn without_blanks(e: Expr) -> Expr {
    datafusion::functions::string::expr_fn::rtrim(vec![
        e,
        Expr::Literal(ScalarValue::Utf8(Some(" ".into())), None),
    ])
}

/// Whether `e` is a `bpchar` without a length, whose values keep their trailing blanks.
fn blank_padded(e: &Expr, input: &DFSchema) -> bool {
    e.to_field(input).is_ok_and(|(_, f)| {
        f.metadata()
            .get(rivulet_planner::types::PG_TYPE)
            .map(String::as_str)
            == Some("character")
            && !f
                .metadata()
                .contains_key(rivulet_planner::types::CHAR_LENGTH)
    })
}

/// `real` with an integer or a `numeric` in arithmetic (`+ - * / %`) is `double precision`:
/// Postgres has no such `real` operator and converts both sides to its preferred float type
/// (DataFusion keeps `real`).
fn real_arithmetic(b: BinaryExpr, input: &DFSchema) -> Transformed<Expr> {
    let (Ok(left), Ok(right)) = (b.left.get_type(input), b.right.get_type(input)) else {
        return Transformed::no(Expr::BinaryExpr(b));
    };
    let exact = |t: &DataType| t.is_integer() || t.is_decimal();
    let widen = |side: Box<Expr>| Box::new(Expr::Cast(Cast::new(side, DataType::Float64)));
    match (&left, &right) {
        (DataType::Float32, other) if exact(other) => Transformed::yes(Expr::BinaryExpr(
            BinaryExpr::new(widen(b.left), b.op, b.right),
        )),
        (other, DataType::Float32) if exact(other) => Transformed::yes(Expr::BinaryExpr(
            BinaryExpr::new(b.left, b.op, widen(b.right)),
        )),
        _ => Transformed::no(Expr::BinaryExpr(b)),
    }
}

/// The type `e` has once [`postgres_types`] has retyped it (`1 + 1` is `integer`), for rules that
/// run while DataFusion's SQL planner builds the expression, before the plan is rewritten.
pub fn postgres_type(e: &Expr, input: &DFSchema) -> Result<DataType> {
    e.clone()
        .transform_up(|e| retype(e, input))?
        .data
        .get_type(input)
}

/// The JSON type a conditional function's arguments declare, which Postgres gives its result:
/// `coalesce`, `nullif`, `greatest` and `least` of `jsonb` values are `jsonb` (of `json`
/// likewise). Untyped constants (`'{}'`, NULL) take the others' type, as Postgres' `unknown`
/// does; arguments of different types declare nothing. (`character varying` and `bpchar` results
/// stay `text`, which keeps the plans of existing views as they were.)
pub fn conditional_type(
    f: &datafusion::logical_expr::expr::ScalarFunction,
    input: &DFSchema,
) -> Option<&'static str> {
    if !matches!(
        f.name(),
        "coalesce" | "nullif" | "greatest" | "least" | "nvl" | "ifnull"
    ) {
        return None;
    }
    let mut shared = None;
    for arg in &f.args {
        if untyped_constant(arg) {
            continue;
        }
        let (_, field) = arg.to_field(input).ok()?;
        if !field.data_type().is_string() {
            return None;
        }
        let declared = match super::wire_types::type_name(&field) {
            t @ ("json" | "jsonb") => t,
            _ => return None,
        };
        match shared {
            Some(s) if s != declared => return None,
            _ => shared = Some(declared),
        }
    }
    shared
}

/// A quoted constant or an untyped NULL: Postgres' `unknown`, typed by its context.
pub fn untyped_constant(e: &Expr) -> bool {
    match e {
        Expr::Literal(ScalarValue::Utf8(_) | ScalarValue::Null, _) => true,
        Expr::Alias(a) => untyped_constant(&a.expr),
        _ => false,
    }
}

/// Whether `field` declares a column type beyond its Arrow type (`jsonb`, `varchar(n)`,
/// `numeric(p,s)`), which DataFusion's scalar subqueries lose.
fn declares_column_type(field: &datafusion::arrow::datatypes::Field) -> bool {
    use rivulet_planner::types::{CHAR_LENGTH, NUMERIC_TYPMOD, PG_TYPE};
    [PG_TYPE, CHAR_LENGTH, NUMERIC_TYPMOD]
        .iter()
        .any(|key| field.metadata().contains_key(*key))
}

/// `x` as it is, without the metadata its field declares (see the scalar subqueries of
/// [`retype`]).
fn plain(x: Expr) -> Expr {
    static UDF: std::sync::LazyLock<Arc<ScalarUDF>> = std::sync::LazyLock::new(|| {
        Arc::new(ScalarUDF::new_from_impl(Plain {
            signature: Signature::any(1, Volatility::Immutable),
        }))
    });
    Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
        Arc::clone(&UDF),
        vec![x],
    ))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Plain {
    signature: Signature,
}

impl ScalarUDFImpl for Plain {
    fn name(&self) -> &str {
        "rivulet_plain"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        args.first().cloned().ok_or_else(|| {
            datafusion::error::DataFusionError::Plan("rivulet_plain takes one argument".into())
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        args.args.into_iter().next().ok_or_else(|| {
            datafusion::error::DataFusionError::Plan("rivulet_plain takes one argument".into())
        })
    }
}

/// `x` (a float) rounded to the nearest integer, ties to even, as a double.
fn half_even(x: Expr) -> Expr {
    static UDF: std::sync::LazyLock<Arc<datafusion::logical_expr::ScalarUDF>> =
        std::sync::LazyLock::new(|| {
            use datafusion::arrow::array::{AsArray, Float64Array};
            use datafusion::arrow::datatypes::Float64Type;
            use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
            Arc::new(create_udf(
                "round",
                vec![DataType::Float64],
                DataType::Float64,
                Volatility::Immutable,
                Arc::new(|args: &[ColumnarValue]| match args.first() {
                    Some(ColumnarValue::Array(a)) => {
                        let rounded: Float64Array =
                            a.as_primitive::<Float64Type>().unary(f64::round_ties_even);
                        Ok(ColumnarValue::Array(Arc::new(rounded)))
                    }
                    Some(ColumnarValue::Scalar(ScalarValue::Float64(v))) => Ok(
                        ColumnarValue::Scalar(ScalarValue::Float64(v.map(f64::round_ties_even))),
                    ),
                    _ => datafusion::common::exec_err!("round expects one double precision"),
                }),
            ))
        });
    Expr::ScalarFunction(datafusion::logical_expr::expr::ScalarFunction::new_udf(
        Arc::clone(&UDF),
        vec![Expr::Cast(Cast::new(Box::new(x), DataType::Float64))],
    ))
}

/// The value and type of an integer constant expression: literals, casts of them to integer types,
/// and `-`, `+`, `-`, `*` over them; an error where one overflows its type, as in Postgres.
fn integer_constant(e: &Expr) -> Result<Option<(i128, DataType)>> {
    let checked = |v: i128, t: DataType| {
        if in_range(v, &t) {
            Ok(Some((v, t)))
        } else {
            Err(out_of_range(&t))
        }
    };
    match e {
        Expr::Literal(ScalarValue::Int16(Some(v)), _) => {
            Ok(Some((i128::from(*v), DataType::Int16)))
        }
        Expr::Literal(ScalarValue::Int32(Some(v)), _) => {
            Ok(Some((i128::from(*v), DataType::Int32)))
        }
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => {
            Ok(Some((i128::from(*v), DataType::Int64)))
        }
        Expr::Cast(Cast { expr, field }) if in_range(0, field.data_type()) => {
            match integer_constant(expr)? {
                Some((v, _)) => checked(v, field.data_type().clone()),
                None => Ok(None),
            }
        }
        Expr::Negative(inner) => match integer_constant(inner)? {
            Some((v, t)) => checked(-v, t),
            None => Ok(None),
        },
        Expr::BinaryExpr(b)
            if matches!(b.op, Operator::Plus | Operator::Minus | Operator::Multiply) =>
        {
            let (Some((l, lt)), Some((r, rt))) =
                (integer_constant(&b.left)?, integer_constant(&b.right)?)
            else {
                return Ok(None);
            };
            let wider = [DataType::Int64, DataType::Int32, DataType::Int16]
                .into_iter()
                .find(|t| *t == lt || *t == rt)
                .unwrap_or(DataType::Int64);
            let v = match b.op {
                Operator::Plus => l + r,
                Operator::Minus => l - r,
                _ => l * r,
            };
            checked(v, wider)
        }
        _ => Ok(None),
    }
}

fn in_range(v: i128, t: &DataType) -> bool {
    match t {
        DataType::Int16 => i16::try_from(v).is_ok(),
        DataType::Int32 => i32::try_from(v).is_ok(),
        DataType::Int64 => i64::try_from(v).is_ok(),
        _ => false,
    }
}

fn out_of_range(t: &DataType) -> datafusion::error::DataFusionError {
    let name = match t {
        DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        _ => "bigint",
    };
    datafusion::error::DataFusionError::ArrowError(
        Box::new(datafusion::arrow::error::ArrowError::ArithmeticOverflow(
            format!("{name} out of range"),
        )),
        None,
    )
}

/// `e`, integer arithmetic on constants that overflows its type (`2147483647 + 1`), as an
/// expression of its type that fails with Postgres' error (`integer out of range`, 22003) when it
/// runs; `None` for anything else. Postgres' Describe of it succeeds and its execution fails, so
/// both protocols fail at execution, with DataFusion's constant folding (which would wrap it
/// around) kept off it.
fn overflow_when_run(e: &Expr, input: &DFSchema) -> Result<Option<Expr>> {
    if integer_constant(e).is_ok() {
        return Ok(None);
    }
    let t = e.get_type(input)?;
    let udf = ScalarUDF::new_from_impl(OutOfRange {
        signature: Signature::nullary(Volatility::Immutable),
        t,
    });
    Ok(Some(Expr::ScalarFunction(
        datafusion::logical_expr::expr::ScalarFunction::new_udf(Arc::new(udf), Vec::new()),
    )))
}

/// What [`overflow_when_run`] leaves: a value of type `t` that fails when computed.
#[derive(Debug, PartialEq, Eq, Hash)]
struct OutOfRange {
    signature: Signature,
    t: DataType,
}

impl ScalarUDFImpl for OutOfRange {
    fn name(&self) -> &str {
        "out_of_range"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.t.clone())
    }

    /// Fails where the query is optimized for execution, as Postgres' planner folds constants:
    /// even over no rows.
    fn simplify(
        &self,
        _: Vec<Expr>,
        _: &datafusion::logical_expr::simplify::SimplifyContext,
    ) -> Result<datafusion::logical_expr::simplify::ExprSimplifyResult> {
        Err(out_of_range(&self.t))
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Err(out_of_range(&self.t))
    }
}

/// Refuses integer arithmetic on constants that overflows, before DataFusion's constant folding
/// wraps it around (`2147483647 + 1`, or `$1::int * 2` once `$1` is bound). Run on a plan whose
/// parameters are bound; [`postgres_types`] does it on the plan as written.
pub fn check_constant_overflow(plan: &LogicalPlan) -> Result<()> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if matches!(e, Expr::BinaryExpr(_) | Expr::Negative(_)) {
                    integer_constant(e)?;
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })
    .map(|_| ())
}

/// A VALUES list whose columns hold only integer literals that fit `int4` (or NULLs), with those
/// columns typed `int4`.
fn values_as_int4(values: Values) -> Result<Transformed<LogicalPlan>> {
    let Values { schema, values } = values;
    let width = schema.fields().len();
    let small = |e: &Expr| match e {
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => i32::try_from(*v).is_ok(),
        Expr::Literal(ScalarValue::Int64(None) | ScalarValue::Null, _) => true,
        _ => false,
    };
    let retyped: Vec<bool> = (0..width)
        .map(|c| {
            *schema.field(c).data_type() == DataType::Int64
                && values.iter().all(|row| row.get(c).is_some_and(small))
                && values.iter().any(|row| {
                    matches!(
                        row.get(c),
                        Some(Expr::Literal(ScalarValue::Int64(Some(_)), _))
                    )
                })
        })
        .collect();
    if !retyped.contains(&true) {
        return Ok(Transformed::no(LogicalPlan::Values(Values {
            schema,
            values,
        })));
    }
    let values = values
        .into_iter()
        .map(|row| {
            row.into_iter()
                .enumerate()
                .map(|(c, e)| match e {
                    Expr::Literal(ScalarValue::Int64(v), meta) if retyped[c] => Expr::Literal(
                        ScalarValue::Int32(v.and_then(|v| i32::try_from(v).ok())),
                        meta,
                    ),
                    other => other,
                })
                .collect()
        })
        .collect();
    let fields = schema
        .iter()
        .enumerate()
        .map(|(c, (qualifier, field))| {
            let field = if retyped[c] {
                Arc::new(field.as_ref().clone().with_data_type(DataType::Int32))
            } else {
                Arc::clone(field)
            };
            (qualifier.cloned(), field)
        })
        .collect();
    let schema = DFSchema::new_with_metadata(fields, schema.metadata().clone())?;
    Ok(Transformed::yes(LogicalPlan::Values(Values {
        schema: Arc::new(schema),
        values,
    })))
}

/// A recursive query whose first term is cast to its recursive term's types: the recursive term
/// reads the work table as DataFusion typed it before the first term's literals were retyped.
fn recursive_query(query: RecursiveQuery) -> Result<Transformed<LogicalPlan>> {
    let wanted = Arc::clone(query.recursive_term.schema());
    let first = Arc::clone(query.static_term.schema());
    if first.fields().len() != wanted.fields().len()
        || first
            .fields()
            .iter()
            .zip(wanted.fields())
            .all(|(a, b)| a.data_type() == b.data_type())
    {
        return Ok(Transformed::no(LogicalPlan::RecursiveQuery(query)));
    }
    let exprs = first
        .iter()
        .zip(wanted.fields())
        .map(|((qualifier, field), want)| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            if field.data_type() == want.data_type() {
                column
            } else {
                Expr::Cast(Cast::new(Box::new(column), want.data_type().clone()))
                    .alias_qualified(qualifier.cloned(), field.name())
            }
        })
        .collect();
    let static_term = Projection::try_new(exprs, query.static_term)?;
    Ok(Transformed::yes(LogicalPlan::RecursiveQuery(
        RecursiveQuery {
            static_term: Arc::new(LogicalPlan::Projection(static_term)),
            ..query
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::without_exponent;

    #[test]
    fn exponents_become_plain_decimals() {
        let plain = |s: &str| without_exponent(s).unwrap_or_default();
        assert_eq!(plain("1e3"), "1000");
        assert_eq!(plain("1.5E3"), "1500");
        assert_eq!(plain("1.0E-2"), "0.010");
        assert_eq!(plain("12.34e1"), "123.4");
        assert_eq!(plain("5e-1"), "0.5");
        assert_eq!(plain("0e0"), "0");
        assert_eq!(without_exponent("1.5"), None);
    }
}
