//! HOP windows under an aggregate that emits on window close: aggregated by slices.
//!
//! `HOP(t, ts, slide, size)` is, in SQL, an UNNEST of the window starts each row falls in (see
//! [`crate::window`]), so a plain plan adds every row to `size / slide` windows. When the view
//! emits on window close, the planner instead looks through the aggregate's input (aliases and
//! projections that pass columns through, and the UNNEST) for the list of window starts, and plans
//! the aggregation over the table below it: a `Project` computing the keys, each row's slice
//! (`rivulet_slice_start`), the aggregate arguments and the event time, a hash exchange on the
//! keys, and a `HashAggregate` grouped by keys and slice that assembles each window from its
//! slices when it closes (`rivulet_engine::operator::aggregate::HopColumn`). Anything else (an
//! emit-on-update view, a computed column below the UNNEST) keeps the plain plan.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{Aggregate, BinaryExpr, Expr, LogicalPlan, Operator as BinOp};
use rivulet_engine::operator::aggregate::{AggSpec, HashAggregate, HopColumn};
use rivulet_engine::operator::project::Project;

use super::aggregate::{aggregate_of, pre_schema};
use super::time::{EventTime, interval_micros};
use super::{Builder, Lowered, StreamContext, arrow_schema, column, column_index, lower, physical};
use crate::error::{PlanError, Result};
use crate::window::{HOP_STARTS, SLICE_START};

/// What a column above the UNNEST holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Origin {
    /// Column `i` of the plan below the list's projection.
    Column(usize),
    Start,
    End,
    Time,
}

struct Found<'a> {
    /// The plan below the projection that computes the list of window starts.
    below: &'a LogicalPlan,
    /// `rivulet_hop_starts`' arguments: the event time, the slide, the origin.
    ts: Expr,
    slide_expr: Expr,
    origin: Expr,
    slide: i64,
    size: i64,
    map: Vec<Option<Origin>>,
}

fn find(plan: &LogicalPlan) -> Option<Found<'_>> {
    match plan {
        LogicalPlan::SubqueryAlias(a) => find(&a.input),
        LogicalPlan::Projection(p) => {
            let inner = find(&p.input)?;
            let input = p.input.schema();
            let origin = |e: &Expr| match e {
                Expr::Column(c) => input
                    .index_of_column(c)
                    .ok()
                    .and_then(|i| inner.map.get(i).copied().flatten()),
                _ => None,
            };
            let map = p
                .expr
                .iter()
                .map(|e| match unaliased(e) {
                    e @ Expr::Column(_) => origin(e),
                    Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                        let delta = interval_micros(right)?;
                        // `(window_start + size) - 1 ms` is Flink's window_time.
                        let left = match unaliased(left) {
                            Expr::BinaryExpr(BinaryExpr {
                                left: start,
                                op: BinOp::Plus,
                                right: size,
                            }) if origin(unaliased(start)) == Some(Origin::Start)
                                && interval_micros(size) == Some(inner.size) =>
                            {
                                Some(Origin::End)
                            }
                            other => origin(other),
                        };
                        match (left, op) {
                            (Some(Origin::Start), BinOp::Plus) if delta == inner.size => {
                                Some(Origin::End)
                            }
                            (Some(Origin::End), BinOp::Minus) if delta == 1_000 => {
                                Some(Origin::Time)
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                })
                .collect();
            Some(Found { map, ..inner })
        }
        LogicalPlan::Unnest(u) => {
            let [(list, column)] = u.list_type_columns.as_slice() else {
                return None;
            };
            if column.depth != 1 || !u.struct_type_columns.is_empty() {
                return None;
            }
            let LogicalPlan::Projection(p) = u.input.as_ref() else {
                return None;
            };
            let below = p.input.schema();
            let Expr::ScalarFunction(f) = unaliased(p.expr.get(*list)?).clone() else {
                return None;
            };
            if f.name() != HOP_STARTS {
                return None;
            }
            let [ts, slide_expr, size_expr, origin] = f.args.as_slice() else {
                return None;
            };
            let (slide, size) = (interval_micros(slide_expr)?, interval_micros(size_expr)?);
            if slide <= 0 || size % slide != 0 {
                return None;
            }
            // Columns of the projection under the UNNEST, as columns of the plan below it.
            let through: Vec<Option<Origin>> = p
                .expr
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    if i == *list {
                        return Some(Origin::Start);
                    }
                    match unaliased(e) {
                        Expr::Column(c) => below.index_of_column(c).ok().map(Origin::Column),
                        _ => None,
                    }
                })
                .collect();
            let map = u
                .dependency_indices
                .iter()
                .map(|&s| through.get(s).copied().flatten())
                .collect();
            Some(Found {
                below: p.input.as_ref(),
                ts: ts.clone(),
                slide_expr: slide_expr.clone(),
                origin: origin.clone(),
                slide,
                size,
                map,
            })
        }
        _ => None,
    }
}

/// `e` without its aliases (a projection may alias an alias).
fn unaliased(mut e: &Expr) -> &Expr {
    while let Expr::Alias(a) = e {
        e = &a.expr;
    }
    e
}

/// Plans aggregate `a` by slices if it groups HOP windows and the view emits on window close;
/// `None` to plan it plainly.
pub(super) fn lower_hop(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    a: &Aggregate,
) -> Result<Option<Lowered>> {
    if !ctx.emit_on_window_close {
        return Ok(None);
    }
    let Some(found) = find(&a.input) else {
        return Ok(None);
    };
    let input = a.input.schema();
    let origin_of = |e: &Expr| match e {
        Expr::Column(c) => input
            .index_of_column(c)
            .ok()
            .and_then(|i| found.map.get(i).copied().flatten()),
        _ => None,
    };
    let below = found.below.schema();
    let mut keys: Vec<usize> = Vec::new();
    let mut columns = Vec::with_capacity(a.group_expr.len());
    for e in &a.group_expr {
        columns.push(match origin_of(e) {
            Some(Origin::Start) => HopColumn::Start,
            Some(Origin::End) => HopColumn::End,
            Some(Origin::Time) => HopColumn::Time,
            Some(Origin::Column(i)) => {
                keys.push(i);
                HopColumn::Key(keys.len() - 1)
            }
            None => return Ok(None),
        });
    }
    if columns.iter().all(|c| matches!(c, HopColumn::Key(_))) {
        return Ok(None);
    }
    // Aggregate arguments over the plan below; a window bound as an argument keeps the plain plan.
    let mut args = Vec::new();
    let mut specs = Vec::with_capacity(a.aggr_expr.len());
    for e in &a.aggr_expr {
        let call = aggregate_of(ctx, e, a.input.schema())?;
        let mut columns = Vec::with_capacity(call.exprs.len());
        for arg in &call.exprs {
            let mut ok = true;
            let arg = arg
                .clone()
                .transform_up(|e| match &e {
                    Expr::Column(_) => match origin_of(&e) {
                        Some(Origin::Column(i)) => Ok(Transformed::yes(column(below, i))),
                        _ => {
                            ok = false;
                            Ok(Transformed::no(e))
                        }
                    },
                    _ => Ok(Transformed::no(e)),
                })
                .map_err(PlanError::DataFusion)?
                .data;
            if !ok {
                return Ok(None);
            }
            args.push(arg);
            columns.push(args.len() - 1);
        }
        specs.push(call.spec(&columns));
    }
    let k = keys.len();
    let l = lower(ctx, b, found.below)?;
    let ts_column = column_index(&found.ts, below);
    if ts_column.is_none() || ts_column != l.time.rowtime {
        return Err(PlanError::Unsupported(
            "EMIT ON WINDOW CLOSE over HOP windows of a column that is not the table's \
             WATERMARK column"
                .into(),
        ));
    }
    // keys..., slice, arguments..., event time
    let slice = Expr::ScalarFunction(ScalarFunction::new_udf(
        ctx.state
            .scalar_functions()
            .get(SLICE_START)
            .cloned()
            .ok_or_else(|| PlanError::Unsupported(format!("{SLICE_START} is not registered")))?,
        vec![
            found.ts.clone(),
            found.slide_expr.clone(),
            found.origin.clone(),
        ],
    ));
    let mut pre: Vec<Expr> = keys.iter().map(|&i| column(below, i)).collect();
    pre.push(slice);
    let first_arg = pre.len();
    pre.extend(args);
    pre.push(found.ts.clone());
    let rowtime = pre.len() - 1;
    let specs: Vec<AggSpec> = specs
        .into_iter()
        .map(|s| s.map_columns(|i| first_arg + i))
        .collect();
    let physical_pre = pre
        .iter()
        .map(|e| physical(ctx, e, below))
        .collect::<Result<Vec<_>>>()?;
    let pre_schema = pre_schema(&pre, below)?;
    b.push_op(
        l.stage,
        Box::new(Project::new(None, physical_pre, Arc::clone(&pre_schema))),
    )?;
    let output = arrow_schema(&a.schema);
    let groups = a.group_expr.len();
    let mut internal: Vec<Field> = pre_schema.fields()[..=k]
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    internal.extend(output.fields()[groups..].iter().map(|f| f.as_ref().clone()));
    let aggregate = HashAggregate::try_new(
        Arc::clone(&pre_schema),
        (0..=k).collect(),
        specs,
        Arc::new(Schema::new(internal)),
    )?
    .with_hop_slices(
        k,
        found.slide,
        found.size,
        columns.clone(),
        output,
        Some(rowtime),
    );
    let exchange = (k > 0).then(|| (0..k).collect());
    let stage = b.exchange(l.stage, exchange, ctx.parallelism);
    b.push_op(stage, Box::new(aggregate))?;
    b.windowed_aggregates += 1;
    let bounds = columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            HopColumn::End => Some((i, 0)),
            HopColumn::Start => Some((i, found.size)),
            HopColumn::Time => Some((i, 1_000)),
            HopColumn::Key(_) => None,
        })
        .collect();
    Ok(Some(Lowered {
        stage,
        key: Some((0..groups).collect()),
        time: EventTime {
            bounds,
            ..EventTime::default()
        },
        append_only: true,
    }))
}
