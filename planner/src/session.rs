//! Session windows in SQL: `SESSION(t, ts, gap)` (and Flink's
//! `TABLE(SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), gap))`) as a derived table.
//!
//! A session of a partition key is a run of rows whose event times are at most `gap` apart; its
//! window is `[first event time, last event time + gap)`. The derived table is every column of
//! `t` plus `window_start` and `window_end` (and Flink's `window_time`), computed by two window
//! functions over the partition:
//!
//! ```sql
//! SELECT *, rivulet_session_start(ts, gap) OVER (PARTITION BY k) AS window_start,
//!           rivulet_session_end(ts, gap) OVER (PARTITION BY k) AS window_end FROM t
//! ```
//!
//! So an ad-hoc query computes sessions in batch, and the streaming planner recognizes these
//! window functions under a `GROUP BY` and plans an incremental session aggregation instead
//! (`stream::session`): the view equals the batch answer over the same rows.
//!
//! The partition: Flink's `PARTITION BY` inside the table argument, or, in the RisingWave-style
//! `SESSION(t, ts, gap)`, the plain columns of the enclosing query's `GROUP BY` other than the
//! window columns (sessions per user when grouping by user). Both become trailing arguments,
//! `session(t, ts, gap, k...)`, before the derived table is built.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};
use datafusion::sql::sqlparser::ast::{
    self, FunctionArg, FunctionArgExpr, GroupByExpr, TableFactor,
};

/// Name of the window function giving each row its session's start.
pub const SESSION_START: &str = "rivulet_session_start";
/// Name of the window function giving each row its session's end.
pub const SESSION_END: &str = "rivulet_session_end";

/// The session window functions, for every session to register.
pub fn udwfs() -> Vec<WindowUDF> {
    vec![
        WindowUDF::new_from_impl(SessionBound::new(SESSION_START)),
        WindowUDF::new_from_impl(SessionBound::new(SESSION_END)),
    ]
}

/// The derived table's SQL for `session(table, ts, gap, keys...)`.
pub fn derived_sql(flink: bool, table: &str, ts: &str, gap: &str, keys: &[String]) -> String {
    let over = if keys.is_empty() {
        "OVER ()".to_string()
    } else {
        format!("OVER (PARTITION BY {})", keys.join(", "))
    };
    let sql = format!(
        "SELECT *, {SESSION_START}({ts}, {gap}) {over} AS window_start, \
         {SESSION_END}({ts}, {gap}) {over} AS window_end FROM {table}"
    );
    if flink {
        format!(
            "SELECT *, window_end - INTERVAL '0.001' SECOND AS window_time FROM ({sql}) AS __session"
        )
    } else {
        sql
    }
}

/// Adds the partition keys inferred from `select`'s GROUP BY to each RisingWave-style
/// `SESSION(t, ts, gap)` in its FROM clause.
pub fn infer_partition(select: &mut ast::Select) {
    let GroupByExpr::Expressions(exprs, _) = &select.group_by else {
        return;
    };
    let keys: Vec<ast::Ident> = exprs
        .iter()
        .filter_map(|e| match e {
            ast::Expr::Identifier(i) => Some(i.clone()),
            ast::Expr::CompoundIdentifier(parts) => parts.last().cloned(),
            _ => None,
        })
        .filter(|i| {
            let name = i.value.to_lowercase();
            !matches!(name.as_str(), "window_start" | "window_end" | "window_time")
        })
        .collect();
    for table in &mut select.from {
        let factors = std::iter::once(&mut table.relation)
            .chain(table.joins.iter_mut().map(|j| &mut j.relation));
        for factor in factors {
            let TableFactor::Table {
                name,
                args: Some(args),
                ..
            } = factor
            else {
                continue;
            };
            let is_session = matches!(name.0.as_slice(), [ast::ObjectNamePart::Identifier(i)]
                if i.value.eq_ignore_ascii_case("session"));
            if is_session && args.args.len() == 3 {
                args.args.extend(keys.iter().map(|k| {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(ast::Expr::Identifier(k.clone())))
                }));
            }
        }
    }
}

/// `rivulet_session_start` / `rivulet_session_end`: `(ts, gap)` over a partition.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SessionBound {
    name: &'static str,
    signature: Signature,
}

impl SessionBound {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl WindowUDFImpl for SessionBound {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> datafusion::error::Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(Evaluator {
            end: self.name == SESSION_END,
        }))
    }

    fn field(&self, args: WindowUDFFieldArgs) -> datafusion::error::Result<FieldRef> {
        let t = match args.get_input_field(0).map(|f| f.data_type().clone()) {
            Some(t @ DataType::Timestamp(..)) => t,
            Some(other) => {
                return exec_err!("SESSION needs a timestamp time column, not {other}");
            }
            None => DataType::Timestamp(TimeUnit::Microsecond, None),
        };
        Ok(Arc::new(Field::new(args.name(), t, true)))
    }
}

#[derive(Debug)]
struct Evaluator {
    end: bool,
}

/// The gap of a session in microseconds: a positive constant interval without months.
pub fn gap_micros(value: &ScalarValue) -> Option<i64> {
    let value = value
        .cast_to(&DataType::Interval(
            datafusion::arrow::datatypes::IntervalUnit::MonthDayNano,
        ))
        .ok()?;
    match value {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            let micros = i64::from(i.days) * 86_400_000_000 + i.nanoseconds / 1000;
            (micros > 0).then_some(micros)
        }
        _ => None,
    }
}

impl PartitionEvaluator for Evaluator {
    fn evaluate_all(
        &mut self,
        values: &[ArrayRef],
        num_rows: usize,
    ) -> datafusion::error::Result<ArrayRef> {
        let [ts, gap] = values else {
            return exec_err!("SESSION window functions take (time, gap)");
        };
        let out_type = ts.data_type().clone();
        let gap = if gap.is_empty() {
            None
        } else {
            gap_micros(&ScalarValue::try_from_array(gap, 0)?)
        };
        let Some(gap) = gap else {
            return exec_err!("the SESSION gap must be a positive interval without months");
        };
        let micros = cast(ts, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let micros = micros.as_primitive::<TimestampMicrosecondType>();
        // Rows in event-time order; each run of rows at most `gap` apart is one session.
        let mut order: Vec<usize> = (0..num_rows).filter(|&i| micros.is_valid(i)).collect();
        order.sort_by_key(|&i| micros.value(i));
        let mut out: Vec<Option<i64>> = vec![None; num_rows];
        let mut run_start = 0;
        while run_start < order.len() {
            let first = micros.value(order[run_start]);
            let mut last = first;
            let mut run_end = run_start + 1;
            while run_end < order.len() && micros.value(order[run_end]) - last <= gap {
                last = micros.value(order[run_end]);
                run_end += 1;
            }
            let bound = if self.end {
                last.saturating_add(gap)
            } else {
                first
            };
            for &i in &order[run_start..run_end] {
                out[i] = Some(bound);
            }
            run_start = run_end;
        }
        let bounds: ArrayRef = Arc::new(TimestampMicrosecondArray::from(out));
        Ok(cast(&bounds, &out_type)?)
    }
}
