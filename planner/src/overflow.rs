//! Integer arithmetic that fails on overflow, as Postgres' does (`integer out of range`, 22003).
//!
//! DataFusion's `+`, `-` and `*` wrap around on integers unless the physical expression is built
//! with `fail_on_overflow`, which its planner never sets: `2147483647::int + 1` would be a silent
//! `-2147483648`. [`checked`] turns it on in one expression tree (the streaming planner calls it on
//! every expression it builds, through [`physical_expr`]); [`CheckedArithmetic`] is the physical
//! optimizer rule that does the same in an ad-hoc query's plan (projections, filters and aggregate
//! arguments, where arithmetic is evaluated).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, Operator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

/// `expr` planned by `state` over `schema`, with integer arithmetic that fails on overflow.
pub fn physical_expr(
    state: &SessionState,
    expr: Expr,
    schema: &DFSchema,
) -> Result<Arc<dyn PhysicalExpr>> {
    checked(state.create_physical_expr(expr, schema)?, schema.as_arrow())
}

/// `expr` with every integer `+`, `-` and `*` failing on overflow; `schema` is its input's.
pub fn checked(expr: Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Arc<dyn PhysicalExpr>> {
    let rewritten = expr.transform_up(|e| {
        let Some(binary) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(e));
        };
        let integers = |side: &Arc<dyn PhysicalExpr>| {
            side.data_type(schema)
                .is_ok_and(|t: DataType| t.is_integer())
        };
        if matches!(
            binary.op(),
            Operator::Plus | Operator::Minus | Operator::Multiply
        ) && integers(binary.left())
            && integers(binary.right())
        {
            let strict = BinaryExpr::new(
                Arc::clone(binary.left()),
                *binary.op(),
                Arc::clone(binary.right()),
            )
            .with_fail_on_overflow(true);
            Ok(Transformed::yes(Arc::new(strict) as Arc<dyn PhysicalExpr>))
        } else {
            Ok(Transformed::no(e))
        }
    })?;
    Ok(rewritten.data)
}

/// The physical optimizer rule that applies [`checked`] to a query's plan. It runs last, after
/// DataFusion's rules have settled which node evaluates what.
#[derive(Debug, Default)]
pub struct CheckedArithmetic;

impl PhysicalOptimizerRule for CheckedArithmetic {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let rewritten = plan.transform_up(|node| {
            if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
                let schema = projection.input().schema();
                let exprs = projection
                    .expr()
                    .iter()
                    .map(|p| {
                        Ok(ProjectionExpr {
                            expr: checked(Arc::clone(&p.expr), &schema)?,
                            alias: p.alias.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let input = Arc::clone(projection.input());
                return Ok(Transformed::yes(
                    Arc::new(ProjectionExec::try_new(exprs, input)?) as Arc<dyn ExecutionPlan>,
                ));
            }
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                let schema = filter.input().schema();
                let predicate = checked(Arc::clone(filter.predicate()), &schema)?;
                let rebuilt = FilterExecBuilder::from(filter)
                    .with_predicate(predicate)
                    .build()?;
                return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
            }
            if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
                let schema = aggregate.input_schema();
                let mut exprs = Vec::with_capacity(aggregate.aggr_expr().len());
                for a in aggregate.aggr_expr() {
                    let all = a.all_expressions();
                    let args = all
                        .args
                        .iter()
                        .map(|e| checked(Arc::clone(e), &schema))
                        .collect::<Result<Vec<_>>>()?;
                    if args == all.args {
                        exprs.push(Arc::clone(a));
                        continue;
                    }
                    // `with_new_expressions` drops the flag of an aggregate DataFusion reversed
                    // to read its input's order backwards (`array_agg(x ORDER BY x DESC)` over
                    // input sorted ascending), whose result would then come out ascending: such
                    // an aggregate is rebuilt from its unreversed form, which sorts by itself.
                    let base = match a.reverse_expr() {
                        Some(forward) if a.is_reversed() => forward,
                        _ => a.as_ref().clone(),
                    };
                    let order_by_exprs = base.all_expressions().order_by_exprs;
                    // An aggregate that cannot take new arguments keeps its own.
                    let new: Arc<AggregateFunctionExpr> =
                        match base.with_new_expressions(args, order_by_exprs) {
                            Some(new) => Arc::new(new),
                            None => Arc::clone(a),
                        };
                    exprs.push(new);
                }
                return Ok(Transformed::yes(
                    Arc::new(aggregate.with_new_aggr_exprs(exprs)) as Arc<dyn ExecutionPlan>,
                ));
            }
            Ok(Transformed::no(node))
        })?;
        Ok(rewritten.data)
    }

    fn name(&self) -> &str {
        "checked_arithmetic"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
