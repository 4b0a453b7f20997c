//! Window table functions, rewritten into plain SQL before DataFusion plans a query.
//!
//! `TUMBLE(t, ts, size [, offset])`, `HOP(t, ts, slide, size [, offset])` and
//! `CUMULATE(t, ts, step, size [, offset])` in a FROM clause (RisingWave's spelling; Flink's
//! `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), ...))` is turned into it by the parser, see
//! [`crate::parse`]) become a derived table: every column of `t` plus `window_start` and
//! `window_end` (and, in Flink's spelling, `window_time`, the window's last instant):
//! - TUMBLE: `date_bin(size, ts, origin)` and that plus `size`: one window per row;
//! - HOP: one row per window the row falls in, from `unnest(rivulet_hop_starts(ts, slide, size,
//!   origin))`;
//! - CUMULATE: `date_bin(size, ts, origin)` as the start, and one row per end from
//!   `unnest(rivulet_cumulate_ends(ts, step, size, origin))`.
//!
//! Flink's legacy group windows, `GROUP BY TUMBLE(ts, size)` with `TUMBLE_START`, `TUMBLE_END` and
//! `TUMBLE_ROWTIME` in the select list, become the same `date_bin` expressions; the legacy HOP and
//! SESSION group windows are refused with a pointer to the table-function form.
//!
//! The origin is the Unix epoch plus the optional offset, as in Flink. Because the result is
//! ordinary SQL, ad-hoc queries answer windowed queries exactly as a materialized view would (the
//! oracle), and the streaming planner recognizes these very expressions to know which columns are
//! window bounds (see `stream::EventTime`).

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray, TimestampMicrosecondArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{DataFusionError, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{
    self, FunctionArg, FunctionArgExpr, ObjectNamePart, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use crate::{PlanError, Result};

/// Name Flink's spelling of a window function is parsed into (it adds `window_time`).
pub const FLINK_PREFIX: &str = "__flink_";

/// The window functions' UDFs, for every session to register.
pub fn udfs() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(WindowBounds::new(HOP_STARTS)),
        ScalarUDF::new_from_impl(WindowBounds::new(CUMULATE_ENDS)),
        ScalarUDF::new_from_impl(SliceStart {
            signature: Signature::any(3, Volatility::Immutable),
        }),
    ]
}

/// Name of the UDF giving a timestamp's slice of a hopping window: `(ts, slide, origin)` to the
/// start of the `slide`-long slice it falls in (what `date_bin` gives, on microseconds).
pub const SLICE_START: &str = "rivulet_slice_start";

#[derive(Debug, PartialEq, Eq, Hash)]
struct SliceStart {
    signature: Signature,
}

impl ScalarUDFImpl for SliceStart {
    fn name(&self) -> &str {
        SLICE_START
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Microsecond, None))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let [ts, slide, origin] = args.args.as_slice() else {
            return exec_err!("{SLICE_START} takes 3 arguments");
        };
        let (slide, origin) = (interval_micros(slide, "slide")?, origin_micros(origin)?);
        let ts = cast(
            &ts.to_array(args.number_rows)?,
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?;
        let starts: TimestampMicrosecondArray = ts
            .as_primitive::<TimestampMicrosecondType>()
            .unary(|t| origin + (t - origin).div_euclid(slide) * slide);
        Ok(ColumnarValue::Array(Arc::new(starts)))
    }
}

/// Name of the UDF listing the starts of the hopping windows a timestamp falls in.
pub const HOP_STARTS: &str = "rivulet_hop_starts";
/// Name of the UDF listing the ends of the cumulating windows a timestamp falls in.
pub const CUMULATE_ENDS: &str = "rivulet_cumulate_ends";

/// Rewrites every window table function in `stmt` into a derived table.
pub fn rewrite(stmt: &mut ast::Statement) -> Result<()> {
    let mut rewriter = Rewriter;
    match stmt.visit(&mut rewriter) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct Rewriter;

impl VisitorMut for Rewriter {
    type Break = PlanError;

    fn post_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<PlanError> {
        match group_window(expr) {
            Ok(Some(new)) => {
                *expr = new;
                ControlFlow::Continue(())
            }
            Ok(None) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }

    fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<PlanError> {
        if let ast::SetExpr::Select(select) = query.body.as_mut() {
            if let Err(e) = legacy_group_window(select) {
                return ControlFlow::Break(e);
            }
            crate::session::infer_partition(select);
        }
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<PlanError> {
        match derived(factor) {
            Ok(Some(new)) => {
                *factor = new;
                ControlFlow::Continue(())
            }
            Ok(None) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }
}

/// The expression a legacy group window function stands for, or `None` if `expr` is not one.
fn group_window(expr: &ast::Expr) -> Result<Option<ast::Expr>> {
    let ast::Expr::Function(f) = expr else {
        return Ok(None);
    };
    let [ObjectNamePart::Identifier(ident)] = f.name.0.as_slice() else {
        return Ok(None);
    };
    let name = ident.value.to_lowercase();
    let known = [
        "tumble",
        "tumble_start",
        "tumble_end",
        "tumble_rowtime",
        "hop",
        "hop_start",
        "hop_end",
        "session",
        "session_start",
        "session_end",
    ];
    if !known.contains(&name.as_str()) {
        return Ok(None);
    }
    if name.starts_with("hop") || name.starts_with("session") {
        // `GROUP BY HOP(...)`/`SESSION(...)` made the FROM clause a window table function (see
        // `legacy_group_window`); their start and end are its columns.
        let column = match name.as_str() {
            "hop_start" | "session_start" => "window_start",
            "hop_end" | "session_end" => "window_end",
            _ => {
                return Err(PlanError::Unsupported(format!(
                    "{}() outside a GROUP BY HOP(...) or SESSION(...) query",
                    name.to_uppercase()
                )));
            }
        };
        return Ok(Some(ast::Expr::Identifier(ast::Ident::new(column))));
    }
    let ast::FunctionArguments::List(list) = &f.args else {
        return Err(usage("tumble"));
    };
    let args: Vec<String> = list
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.to_string()),
            _ => Err(usage("tumble")),
        })
        .collect::<Result<_>>()?;
    let [ts, size] = args.as_slice() else {
        return Err(PlanError::InvalidParameter(format!(
            "{}() expects (time_column, size)",
            name.to_uppercase()
        )));
    };
    // DataFusion's `date_bin` takes its origin in nanoseconds (`TIMESTAMP` alone is microseconds,
    // as in Postgres): an origin of another unit would cast the time column instead.
    let start = format!("date_bin({size}, {ts}, CAST('1970-01-01 00:00:00' AS TIMESTAMP(9)))");
    let sql = match name.as_str() {
        "tumble" | "tumble_start" => start,
        "tumble_end" => format!("({start} + {size})"),
        _ => format!("({start} + {size} - INTERVAL '0.001' SECOND)"),
    };
    let dialect = PostgreSqlDialect {};
    Parser::new(&dialect)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_expr())
        .map(Some)
        .map_err(|e| PlanError::InvalidParameter(format!("{}(): {e}", name.to_uppercase())))
}

/// Flink's legacy `GROUP BY HOP(ts, slide, size)` and `GROUP BY SESSION(ts, gap)`: the single
/// table in FROM becomes the window table function (a session's partition keys are the other
/// GROUP BY columns, as Flink's legacy session windows are per group), and the group window
/// becomes `window_start, window_end`; HOP_START/SESSION_START and the END functions become
/// those columns (in `group_window`).
fn legacy_group_window(select: &mut ast::Select) -> Result<()> {
    let ast::GroupByExpr::Expressions(exprs, _) = &mut select.group_by else {
        return Ok(());
    };
    let found = exprs.iter().position(|e| {
        matches!(e, ast::Expr::Function(f) if matches!(f.name.0.as_slice(),
            [ObjectNamePart::Identifier(i)] if matches!(i.value.to_lowercase().as_str(), "hop" | "session")))
    });
    let Some(at) = found else {
        return Ok(());
    };
    let ast::Expr::Function(f) = exprs.remove(at) else {
        return Ok(());
    };
    let kind = f.name.to_string().to_lowercase();
    let ast::FunctionArguments::List(list) = &f.args else {
        return Err(usage(&kind));
    };
    let args: Vec<String> = list.args.iter().map(|a| a.to_string()).collect();
    let expected = if kind == "hop" { 3 } else { 2 };
    if args.len() != expected {
        return Err(PlanError::InvalidParameter(format!(
            "{}() expects {}",
            kind.to_uppercase(),
            if kind == "hop" {
                "(time_column, slide, size)"
            } else {
                "(time_column, gap)"
            }
        )));
    }
    let keys: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
    exprs.push(ast::Expr::Identifier(ast::Ident::new("window_start")));
    exprs.push(ast::Expr::Identifier(ast::Ident::new("window_end")));
    let [from] = select.from.as_mut_slice() else {
        return Err(PlanError::Unsupported(format!(
            "GROUP BY {}() over anything but one table",
            kind.to_uppercase()
        )));
    };
    let TableFactor::Table {
        name,
        alias,
        args: None,
        ..
    } = &from.relation
    else {
        return Err(PlanError::Unsupported(format!(
            "GROUP BY {}() over anything but one table",
            kind.to_uppercase()
        )));
    };
    if !from.joins.is_empty() {
        return Err(PlanError::Unsupported(format!(
            "GROUP BY {}() over a join",
            kind.to_uppercase()
        )));
    }
    let mut call = vec![name.to_string()];
    call.extend(args);
    if kind == "session" {
        call.extend(keys);
    }
    let alias = match alias {
        Some(a) => a.to_string(),
        None => name.to_string(),
    };
    let sql = format!("SELECT * FROM {kind}({}) AS {alias}", call.join(", "));
    let dialect = PostgreSqlDialect {};
    let parsed = Parser::new(&dialect)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| PlanError::InvalidParameter(format!("{}(): {e}", kind.to_uppercase())))?;
    let ast::SetExpr::Select(parsed) = *parsed.body else {
        return Err(usage(&kind));
    };
    if let Some(t) = parsed.from.into_iter().next() {
        from.relation = t.relation;
    }
    Ok(())
}

fn usage(kind: &str) -> PlanError {
    let args = match kind {
        "tumble" => "(table, time_column, size [, offset])",
        "hop" => "(table, time_column, slide, size [, offset])",
        "session" => "(table, time_column, gap)",
        _ => "(table, time_column, step, size [, offset])",
    };
    PlanError::InvalidParameter(format!("{} expects {args}", kind.to_uppercase()))
}

/// The derived table a window function stands for, or `None` if `factor` is not one.
fn derived(factor: &TableFactor) -> Result<Option<TableFactor>> {
    let TableFactor::Table {
        name,
        alias,
        args: Some(args),
        ..
    } = factor
    else {
        return Ok(None);
    };
    let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
        return Ok(None);
    };
    let lower = ident.value.to_lowercase();
    let (flink, kind) = match lower.strip_prefix(FLINK_PREFIX) {
        Some(k) => (true, k.to_string()),
        None => (false, lower),
    };
    if !matches!(kind.as_str(), "tumble" | "hop" | "cumulate" | "session") {
        return Ok(None);
    }
    let exprs: Vec<String> = args
        .args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e.to_string()),
            _ => Err(usage(&kind)),
        })
        .collect::<Result<_>>()?;
    let (table, ts) = match exprs.as_slice() {
        [t, ts, ..] => (t.clone(), ts.clone()),
        _ => return Err(usage(&kind)),
    };
    let origin = |offset: Option<&String>| match offset {
        Some(o) => format!("(CAST('1970-01-01 00:00:00' AS TIMESTAMP(9)) + {o})"),
        None => "CAST('1970-01-01 00:00:00' AS TIMESTAMP(9))".to_string(),
    };
    let window_time = |end: &str| {
        if flink {
            format!(", {end} - INTERVAL '0.001' SECOND AS window_time")
        } else {
            String::new()
        }
    };
    let sql = match (kind.as_str(), &exprs[2..]) {
        ("tumble", [size, rest @ ..]) if rest.len() <= 1 => {
            let start = format!("date_bin({size}, {ts}, {})", origin(rest.first()));
            format!(
                "SELECT *, {start} AS window_start, {start} + {size} AS window_end{} FROM {table}",
                window_time(&format!("({start} + {size})"))
            )
        }
        ("hop", [slide, size, rest @ ..]) if rest.len() <= 1 => {
            let starts = format!(
                "{HOP_STARTS}({ts}, {slide}, {size}, {})",
                origin(rest.first())
            );
            format!(
                "SELECT *, window_start + {size} AS window_end{} \
                 FROM (SELECT *, unnest({starts}) AS window_start FROM {table}) AS __hop",
                window_time(&format!("(window_start + {size})"))
            )
        }
        ("cumulate", [step, size, rest @ ..]) if rest.len() <= 1 => {
            let o = origin(rest.first());
            format!(
                "SELECT *{} FROM (SELECT *, date_bin({size}, {ts}, {o}) AS window_start, \
                 unnest({CUMULATE_ENDS}({ts}, {step}, {size}, {o})) AS window_end FROM {table}) AS __cumulate",
                window_time("window_end")
            )
        }
        ("session", [gap, keys @ ..]) => crate::session::derived_sql(flink, &table, &ts, gap, keys),
        _ => return Err(usage(&kind)),
    };
    let alias = match alias {
        Some(a) => a.to_string(),
        None => table.clone(),
    };
    let wrapped = format!("SELECT * FROM ({sql}) AS {alias}");
    let dialect = PostgreSqlDialect {};
    let parsed = Parser::new(&dialect)
        .try_with_sql(&wrapped)
        .and_then(|mut p| p.parse_query())
        .map_err(|e| {
            PlanError::InvalidParameter(format!(
                "{} arguments do not form a valid window: {e}",
                kind.to_uppercase()
            ))
        })?;
    let ast::SetExpr::Select(select) = *parsed.body else {
        return Err(usage(&kind));
    };
    let relation = select
        .from
        .into_iter()
        .next()
        .map(|t| t.relation)
        .ok_or_else(|| usage(&kind))?;
    Ok(Some(relation))
}

/// `rivulet_hop_starts` and `rivulet_cumulate_ends`: `(ts, a, b, origin)` to a list of timestamps.
#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowBounds {
    name: &'static str,
    signature: Signature,
}

impl WindowBounds {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            signature: Signature::any(4, Volatility::Immutable),
        }
    }
}

fn interval_micros(v: &ColumnarValue, what: &str) -> datafusion::error::Result<i64> {
    let ColumnarValue::Scalar(s) = v else {
        return exec_err!("the window {what} must be a constant interval");
    };
    let s = s.cast_to(&DataType::Interval(
        datafusion::arrow::datatypes::IntervalUnit::MonthDayNano,
    ))?;
    let ScalarValue::IntervalMonthDayNano(Some(i)) = s else {
        return exec_err!("the window {what} must be a constant interval");
    };
    if i.months != 0 {
        return exec_err!("the window {what} cannot be counted in months");
    }
    let micros = i64::from(i.days) * 86_400_000_000 + i.nanoseconds / 1000;
    if micros <= 0 {
        return exec_err!("the window {what} must be positive");
    }
    Ok(micros)
}

fn origin_micros(v: &ColumnarValue) -> datafusion::error::Result<i64> {
    let ColumnarValue::Scalar(s) = v else {
        return exec_err!("the window origin must be a constant timestamp");
    };
    match s.cast_to(&DataType::Timestamp(TimeUnit::Microsecond, None))? {
        ScalarValue::TimestampMicrosecond(Some(v), _) => Ok(v),
        _ => exec_err!("the window origin must be a constant timestamp"),
    }
}

impl ScalarUDFImpl for WindowBounds {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::List(Arc::new(Field::new(
            "item",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ))))
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let [ts, a, b, origin] = args.args.as_slice() else {
            return exec_err!("{} takes 4 arguments", self.name);
        };
        let (a, b, origin) = (
            interval_micros(a, "slide or step")?,
            interval_micros(b, "size")?,
            origin_micros(origin)?,
        );
        let rows = args.number_rows;
        let ts = cast(
            &ts.to_array(rows)?,
            &DataType::Timestamp(TimeUnit::Microsecond, None),
        )?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let hop = self.name == HOP_STARTS;
        if !hop && b % a != 0 {
            return exec_err!("the CUMULATE size must be a whole number of steps");
        }
        let mut values: Vec<i64> = Vec::new();
        let mut offsets: Vec<i32> = vec![0];
        let floor = |t: i64, d: i64| origin + (t - origin).div_euclid(d) * d;
        for i in 0..ts.len() {
            if ts.is_valid(i) {
                let t = ts.value(i);
                if hop {
                    // Starts s with s <= t < s + size, newest first, on the slide grid.
                    let mut s = floor(t, a);
                    while s > t - b {
                        values.push(s);
                        s -= a;
                    }
                } else {
                    // Ends e of the windows [floor(t, size), e) with t < e, one step apart.
                    let start = floor(t, b);
                    let mut e = floor(t, a) + a;
                    while e <= start + b {
                        values.push(e);
                        e += a;
                    }
                }
            }
            let len = i32::try_from(values.len())
                .map_err(|_| DataFusionError::Execution("too many windows".into()))?;
            offsets.push(len);
        }
        let field = Arc::new(Field::new(
            "item",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ));
        let list = ListArray::try_new(
            field,
            OffsetBuffer::new(offsets.into()),
            Arc::new(TimestampMicrosecondArray::from(values)) as ArrayRef,
            ts.nulls().cloned(),
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut parsed = crate::parse::parse_sql(sql).unwrap();
        let crate::parse::Statement::Sql { stmt, .. } = &mut parsed[0].statement else {
            panic!()
        };
        rewrite(stmt).unwrap();
        stmt.to_string()
    }

    #[test]
    fn window_functions_become_derived_tables() {
        let sql = rewritten(
            "SELECT window_start, count(*) FROM TUMBLE(bids, ts, INTERVAL '1' MINUTE) GROUP BY window_start",
        );
        assert!(
            sql.contains(
                "date_bin(INTERVAL '1' MINUTE, ts, CAST('1970-01-01 00:00:00' AS TIMESTAMP(9))) AS window_start"
            ),
            "{sql}"
        );
        assert!(sql.contains(") AS bids GROUP BY"), "{sql}");
        let sql = rewritten(
            "SELECT * FROM HOP(bids, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS h",
        );
        assert!(
            sql.contains("unnest(rivulet_hop_starts(ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND"),
            "{sql}"
        );
        assert!(matches!(
            crate::parse::parse_sql("SELECT * FROM TUMBLE(bids, ts)"),
            Err(PlanError::InvalidParameter(_))
        ));
        let flink = rewritten(
            "SELECT * FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '1' MINUTES)) t",
        );
        assert!(flink.contains("AS window_time FROM bids) AS t"), "{flink}");
    }

    #[test]
    fn session_partition_keys_come_from_partition_by_or_the_group_by() {
        let rw = rewritten(
            "SELECT user_id, window_start, count(*) FROM SESSION(clicks, ts, INTERVAL '30' SECOND) \
             GROUP BY user_id, window_start, window_end",
        );
        assert!(
            rw.contains(
                "rivulet_session_start(ts, INTERVAL '30' SECOND) OVER (PARTITION BY user_id) AS window_start"
            ),
            "{rw}"
        );
        let flink = rewritten(
            "SELECT * FROM TABLE(SESSION(TABLE clicks PARTITION BY user_id, region, \
             DESCRIPTOR(ts), INTERVAL '30' SECONDS))",
        );
        assert!(
            flink.contains("OVER (PARTITION BY user_id, region) AS window_end"),
            "{flink}"
        );
        assert!(flink.contains("AS window_time"), "{flink}");
        // Flink's form without PARTITION BY is one global session, whatever the GROUP BY.
        let global = rewritten(
            "SELECT user_id, count(*) FROM TABLE(SESSION(TABLE clicks, DESCRIPTOR(ts), \
             INTERVAL '30' SECONDS)) GROUP BY user_id",
        );
        assert!(global.contains("OVER () AS window_start"), "{global}");
    }
}
