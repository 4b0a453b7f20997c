//! Scalar subqueries that are not aggregates, as Postgres runs them.
//!
//! `(SELECT name FROM u WHERE u.id = o.uid)` is the common lookup; DataFusion plans a correlated
//! scalar subquery only if it aggregates ("must be aggregated to return at most one row"), and one
//! with `ORDER BY .. LIMIT 1` not at all. Postgres takes both: the subquery's one row, NULL for
//! none, and error 21000 when it returns more than one. So before planning, the select item of such
//! a subquery becomes an aggregate with exactly that meaning: [`udaf`] (`rivulet_single_value`)
//! without a LIMIT, `first_value(item ORDER BY ..)` with `LIMIT 1`. Every statement gets it: a
//! materialized view recomputes `rivulet_single_value` per key (its job fails on a second row, as
//! Flink's SINGLE_VALUE does), and `first_value(.. ORDER BY ..)` keeps the group's first row in
//! that order. Correlations DataFusion cannot decorrelate are [`super::decorrelate`]'s.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
use datafusion::common::{Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::sql::sqlparser::ast::{self, VisitMut, VisitorMut};

use crate::error::{SqlError, sqlstate};

/// The aggregate a plain scalar subquery's item is wrapped in (views recompute it per group).
pub use rivulet_planner::stream::SINGLE_VALUE;

/// Postgres' error for a scalar subquery with more than one row.
pub fn more_than_one_row() -> SqlError {
    SqlError::new(
        sqlstate::CARDINALITY_VIOLATION,
        "more than one row returned by a subquery used as an expression",
    )
}

/// `rivulet_single_value(x)`: the one value of its group, NULL for an empty group, error 21000 for
/// a group of more than one row (a NULL counts as a row).
pub fn udaf() -> AggregateUDF {
    AggregateUDF::new_from_impl(SingleValue {
        signature: Signature::new(TypeSignature::Any(1), Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SingleValue {
    signature: Signature,
}

impl AggregateUDFImpl for SingleValue {
    fn name(&self) -> &str {
        SINGLE_VALUE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        arg_types
            .first()
            .cloned()
            .ok_or_else(|| DataFusionError::Plan(format!("{SINGLE_VALUE} takes one argument")))
    }

    /// The argument's field, metadata and all: the subquery's column keeps its declared type
    /// (`varchar(n)`, `jsonb`, `numeric(p,s)`).
    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        let arg = arg_fields
            .first()
            .ok_or_else(|| DataFusionError::Plan(format!("{SINGLE_VALUE} takes one argument")))?;
        Ok(Arc::new(
            Field::new(self.name(), arg.data_type().clone(), true)
                .with_metadata(arg.metadata().clone()),
        ))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                "value",
                args.return_field.data_type().clone(),
                true,
            )),
            Arc::new(Field::new("rows", DataType::Int64, false)),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SingleValueAccumulator {
            value: ScalarValue::try_from(args.return_field.data_type())?,
            rows: 0,
        }))
    }
}

#[derive(Debug)]
struct SingleValueAccumulator {
    value: ScalarValue,
    rows: i64,
}

impl SingleValueAccumulator {
    /// Counts `rows` more rows, the first of them (if any) at `values[index]`.
    fn add(&mut self, rows: i64, values: &ArrayRef, index: usize) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        if self.rows + rows > 1 {
            return Err(DataFusionError::External(Box::new(more_than_one_row())));
        }
        self.rows = rows;
        self.value = ScalarValue::try_from_array(values, index)?;
        Ok(())
    }
}

impl Accumulator for SingleValueAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values.first() {
            Some(v) => self.add(v.len() as i64, v, 0),
            None => Ok(()),
        }
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [values, rows] = states else {
            return Err(DataFusionError::Internal(format!(
                "{SINGLE_VALUE} merges two state columns"
            )));
        };
        for (i, n) in rows.as_primitive::<Int64Type>().iter().enumerate() {
            self.add(n.unwrap_or(0), values, i)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            self.value.clone(),
            ScalarValue::Int64(Some(self.rows)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.value.size() - size_of_val(&self.value)
    }
}

/// Names of the aggregate and window functions DataFusion knows, in lower case.
static AGGREGATES: LazyLock<HashSet<String>> =
    LazyLock::new(|| {
        let aggregates = datafusion::functions_aggregate::all_default_aggregate_functions();
        let windows = datafusion::functions_window::all_default_window_functions();
        aggregates
            .iter()
            .flat_map(|f| std::iter::once(f.name().to_string()).chain(f.aliases().iter().cloned()))
            .chain(windows.iter().flat_map(|f| {
                std::iter::once(f.name().to_string()).chain(f.aliases().iter().cloned())
            }))
            .map(|n| n.to_ascii_lowercase())
            .chain([SINGLE_VALUE.to_string()])
            .collect()
    });

/// Whether `expr` calls an aggregate or a window function.
pub(super) fn aggregates(expr: &ast::Expr) -> bool {
    let mut found = false;
    let _ = ast::visit_expressions(expr, |e| {
        if let ast::Expr::Function(f) = e
            && (f.over.is_some()
                || f.name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .is_some_and(|name| AGGREGATES.contains(&name.value.to_ascii_lowercase())))
        {
            found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

/// Whether `e` is the literal 1.
fn is_one(e: &ast::Expr) -> bool {
    matches!(e, ast::Expr::Value(v) if matches!(&v.value, ast::Value::Number(n, _) if n == "1"))
}

/// Makes `query`, a scalar subquery, an aggregate of at most one row with Postgres' meaning, if it
/// is a plain SELECT of one item that does not aggregate and is limited to nothing or to one row.
fn single_row(query: &mut ast::Query) {
    // `LIMIT 1` / `FETCH FIRST 1 ROW ONLY`, without an offset, takes the first row in ORDER BY.
    let first = match (&query.limit_clause, &query.fetch) {
        (None, None) => false,
        (
            Some(ast::LimitClause::LimitOffset {
                limit: Some(limit),
                offset: None,
                limit_by,
            }),
            None,
        ) if is_one(limit) && limit_by.is_empty() => true,
        (None, Some(fetch))
            if !fetch.percent && !fetch.with_ties && fetch.quantity.as_ref().is_none_or(is_one) =>
        {
            true
        }
        _ => return,
    };
    let order = match &query.order_by {
        None => vec![],
        Some(ast::OrderBy {
            kind: ast::OrderByKind::Expressions(order),
            interpolate: None,
        }) => order.clone(),
        Some(_) => return,
    };
    let ast::SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let plain = matches!(&select.group_by, ast::GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && select.having.is_none()
        && select.distinct.is_none()
        && select.qualify.is_none()
        && select.named_window.is_empty();
    let [item] = select.projection.as_mut_slice() else {
        return;
    };
    let (ast::SelectItem::UnnamedExpr(inner) | ast::SelectItem::ExprWithAlias { expr: inner, .. }) =
        item
    else {
        return;
    };
    if !plain || aggregates(inner) || order.iter().any(|o| aggregates(&o.expr)) {
        return;
    }
    let value = std::mem::replace(inner, ast::Expr::value(ast::Value::Null));
    *inner = if first {
        super::rewrite::call("first_value", vec![value], order)
    } else {
        super::rewrite::call(SINGLE_VALUE, vec![value], vec![])
    };
    // The order is the aggregate's now, and the one row is all an aggregate gives.
    query.order_by = None;
    query.limit_clause = None;
    query.fetch = None;
}

/// Rewrites every scalar subquery of `stmt` that [`single_row`] applies to; the subquery of
/// `x = ANY (..)`, `x IN (..)` and `EXISTS (..)` is a set, not a value, and stays.
pub fn rewrite(stmt: &mut ast::Statement) {
    struct Rewriter {
        /// Subqueries of `ANY`/`ALL`, by address, seen before their children are visited.
        sets: HashSet<*const ast::Query>,
    }
    impl VisitorMut for Rewriter {
        type Break = ();

        fn pre_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
            if let ast::Expr::AnyOp { right, .. } | ast::Expr::AllOp { right, .. } = expr
                && let ast::Expr::Subquery(q) = right.as_ref()
            {
                self.sets.insert(&**q as *const ast::Query);
            }
            ControlFlow::Continue(())
        }

        fn post_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
            if let ast::Expr::Subquery(q) = expr
                && !self.sets.contains(&(&**q as *const ast::Query))
            {
                single_row(q);
            }
            ControlFlow::Continue(())
        }
    }
    let _ = stmt.visit(&mut Rewriter {
        sets: HashSet::new(),
    });
}
