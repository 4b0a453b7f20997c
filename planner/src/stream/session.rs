//! Session windows in a materialized view: an aggregate grouped by the bounds of a `SESSION`
//! window becomes one `SessionAggregate` (see `rivulet_engine::operator::aggregate`).
//!
//! The window table function is, in SQL, two window functions over the table (see
//! [`crate::session`]); they cannot be maintained row by row, since a session's bounds move as
//! rows come. So the planner looks through the aggregate's input (aliases and projections that
//! pass columns through) for that window node, and plans the aggregation over the table below it:
//! a `Project` computing the event time, the partition keys and the aggregate arguments, a hash
//! exchange on the partition keys, and the session aggregation. The group columns must be the
//! window bounds and the session's partition keys; the table must be append-only (a deleted row
//! could split a session) and the time column its WATERMARK column.

use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::common::Column as ColumnRef;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::expr::WindowFunctionDefinition;
use datafusion::logical_expr::{Aggregate, BinaryExpr, Expr, LogicalPlan, Operator as BinOp};
use rivulet_engine::operator::aggregate::{SessionAggregate, SessionColumn, SessionSpec};
use rivulet_engine::operator::over::session::{SessionRows, SessionRowsSpec};
use rivulet_engine::operator::project::Project;
use rivulet_engine::operator::sorted::PartitionOrder;

use super::aggregate::{aggregate_of, pre_schema};
use super::time::{EventTime, interval_micros};
use super::{Builder, Lowered, StreamContext, arrow_schema, column, column_index, lower, physical};
use crate::error::{PlanError, Result};
use crate::session::{SESSION_END, SESSION_START, gap_micros};

/// What a column above the window node holds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Origin {
    /// Column `i` of the table below the window node.
    Column(usize),
    Start,
    End,
    /// Flink's `window_time`.
    Time,
    /// The session's last event time: `window_end` minus the gap (RisingWave's `last_value`
    /// over a SESSION frame).
    Last,
}

/// A session window node found below an aggregate.
struct Found<'a> {
    window: &'a datafusion::logical_expr::Window,
    /// The event time argument, over the window's input.
    ts: Expr,
    gap: i64,
    /// Input columns of the partition keys.
    partition: Vec<usize>,
    /// For each column of the plan node looked through, what it holds (`None`: computed).
    map: Vec<Option<Origin>>,
}

/// Whether `e` calls one of the session window functions; which one and its parameters.
fn session_call(e: &Expr) -> Option<(bool, &datafusion::logical_expr::expr::WindowFunction)> {
    let Expr::WindowFunction(w) = e else {
        return None;
    };
    let WindowFunctionDefinition::WindowUDF(udf) = &w.fun else {
        return None;
    };
    match udf.name() {
        SESSION_START => Some((false, w.as_ref())),
        SESSION_END => Some((true, w.as_ref())),
        _ => None,
    }
}

/// True if `plan` is a window node of session window functions.
pub(super) fn is_session_window(plan: &LogicalPlan) -> bool {
    matches!(plan, LogicalPlan::Window(w)
        if w.window_expr.iter().any(|e| session_call(&e.clone().unalias()).is_some()))
}

/// A SESSION window over a table whose rows can change.
fn not_append_only() -> PlanError {
    PlanError::UnsupportedHint {
        what: "a SESSION window over a table whose rows can be updated or deleted".into(),
        hint: "A deleted row could split a session: create the table APPEND ONLY.".into(),
    }
}

fn unsupported(what: impl Into<String>) -> PlanError {
    PlanError::Unsupported(what.into())
}

fn find(plan: &LogicalPlan) -> Result<Option<Found<'_>>> {
    match plan {
        LogicalPlan::SubqueryAlias(a) => find(&a.input),
        LogicalPlan::Projection(p) => {
            let Some(inner) = find(&p.input)? else {
                return Ok(None);
            };
            let input = p.input.schema();
            let origin = |c: &ColumnRef| {
                input
                    .index_of_column(c)
                    .ok()
                    .and_then(|i| inner.map.get(i).copied().flatten())
            };
            let map = p
                .expr
                .iter()
                .map(|e| match e.clone().unalias() {
                    Expr::Column(c) => origin(&c),
                    Expr::BinaryExpr(BinaryExpr {
                        left,
                        op: BinOp::Minus,
                        right,
                    }) => match (left.as_ref(), interval_micros(&right)) {
                        (Expr::Column(c), Some(1_000)) if origin(c) == Some(Origin::End) => {
                            Some(Origin::Time)
                        }
                        (Expr::Column(c), Some(us)) if us == inner.gap => {
                            (origin(c) == Some(Origin::End)).then_some(Origin::Last)
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            Ok(Some(Found { map, ..inner }))
        }
        LogicalPlan::Window(w) => {
            let mut call: Option<(Expr, i64, Vec<usize>)> = None;
            let input = w.input.schema();
            let mut map: Vec<Option<Origin>> = (0..input.fields().len())
                .map(|i| Some(Origin::Column(i)))
                .collect();
            for e in &w.window_expr {
                let e = e.clone().unalias();
                let Some((end, f)) = session_call(&e) else {
                    if call.is_some() {
                        return Err(unsupported(
                            "window functions (OVER) next to a SESSION window",
                        ));
                    }
                    return Ok(None);
                };
                let [ts, gap] = f.params.args.as_slice() else {
                    return Err(unsupported("a SESSION window with other arguments"));
                };
                let gap = match gap {
                    Expr::Literal(v, _) => gap_micros(v),
                    _ => None,
                }
                .ok_or_else(|| {
                    PlanError::InvalidParameter(
                        "the SESSION gap must be a positive constant interval without months"
                            .into(),
                    )
                })?;
                let partition = f
                    .params
                    .partition_by
                    .iter()
                    .map(|k| match k {
                        Expr::Column(c) => input.index_of_column(c).ok(),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| unsupported("a SESSION window partitioned by an expression"))?;
                let this = (ts.clone(), gap, partition);
                match &call {
                    Some(seen) if *seen != this => {
                        return Err(unsupported("two different SESSION windows in one query"));
                    }
                    _ => call = Some(this),
                }
                map.push(Some(if end { Origin::End } else { Origin::Start }));
            }
            let Some((ts, gap, partition)) = call else {
                return Ok(None);
            };
            Ok(Some(Found {
                window: w,
                ts,
                gap,
                partition,
                map,
            }))
        }
        _ => Ok(None),
    }
}

/// Plans a window node of session window functions without an aggregate above it (RisingWave's
/// `first_value(ts) OVER (... SESSION WITH GAP g)` per row) as a `SessionRows`: with EMIT ON
/// WINDOW CLOSE each row is emitted once, with its session's bounds, when its session closes.
/// Emitted on update, a row's bounds would change as sessions grow and merge: refused, as
/// RisingWave does.
pub(super) fn lower_session_rows(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    plan: &LogicalPlan,
) -> Result<Lowered> {
    if !ctx.emit_on_window_close {
        return Err(PlanError::UnsupportedHint {
            what: "a SESSION window per row (not grouped by its window_start or window_end) in a \
                   view that emits on update"
                .into(),
            hint: "Add EMIT ON WINDOW CLOSE (each row is emitted once its session closes), or \
                   group by the session's bounds and its partition keys."
                .into(),
        });
    }
    let Some(found) = find(plan)? else {
        return Err(PlanError::Engine(rivulet_engine::EngineError::Internal(
            "a session window node without one".into(),
        )));
    };
    let w = found.window;
    let l = lower(ctx, b, &w.input)?;
    let below = w.input.schema();
    let ts_column = column_index(&found.ts, below);
    if ts_column.is_none() || ts_column != l.time.rowtime {
        return Err(unsupported(format!(
            "a SESSION window over {}, which is not the time column of a table's WATERMARK",
            found.ts
        )));
    }
    let Some(time) = ts_column else {
        return Err(PlanError::Engine(rivulet_engine::EngineError::Internal(
            "a session window without its time".into(),
        )));
    };
    if !l.append_only {
        return Err(not_append_only());
    }
    let width = below.fields().len();
    let bounds = (found.map.get(width..).unwrap_or_default().iter())
        .map(|o| matches!(o, Some(Origin::End)))
        .collect();
    let rows = PartitionOrder {
        input: arrow_schema(below),
        width,
        partition: found.partition.clone(),
        order: vec![(
            time,
            SortOptions {
                descending: false,
                nulls_first: false,
            },
        )],
    };
    let spec = SessionRowsSpec {
        rows,
        gap: found.gap,
        bounds,
    };
    let op = SessionRows::try_new(spec, arrow_schema(&w.schema))?;
    let keys = (!found.partition.is_empty()).then(|| found.partition.clone());
    let stage = b.exchange(l.stage, keys, ctx.parallelism);
    b.push_op(stage, Box::new(op))?;
    b.windowed_aggregates += 1;
    Ok(Lowered {
        stage,
        key: None,
        time: EventTime::default(),
        append_only: true,
    })
}

/// Plans aggregate `a` as a session aggregation if it groups a SESSION window; `None` if its
/// input is no session window.
pub(super) fn lower_session(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    a: &Aggregate,
) -> Result<Option<Lowered>> {
    let Some(found) = find(&a.input)? else {
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
    let keys_named = || {
        let below = found.window.input.schema();
        let names: Vec<String> = found
            .partition
            .iter()
            .map(|&i| below.field(i).name().clone())
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    let mut columns = Vec::with_capacity(a.group_expr.len());
    for e in &a.group_expr {
        columns.push(match origin_of(e) {
            Some(Origin::Start) => SessionColumn::Start,
            Some(Origin::End) => SessionColumn::End,
            Some(Origin::Time) => SessionColumn::Time,
            Some(Origin::Last) => SessionColumn::Last,
            Some(Origin::Column(i)) => match found.partition.iter().position(|&k| k == i) {
                Some(j) => SessionColumn::Partition(j),
                None => {
                    return Err(PlanError::UnsupportedHint {
                        what: format!(
                            "GROUP BY {e} over a SESSION window whose partition keys are ({})",
                            keys_named()
                        ),
                        hint: "Group by the window bounds and the partition keys (Flink: add \
                               it to PARTITION BY)."
                            .into(),
                    });
                }
            },
            None => {
                return Err(PlanError::UnsupportedHint {
                    what: format!("GROUP BY {e} over a SESSION window"),
                    hint: "Group by window_start, window_end and the partition keys.".into(),
                });
            }
        });
    }
    let has_bound = columns
        .iter()
        .any(|c| !matches!(c, SessionColumn::Partition(_)));
    let all_keys =
        (0..found.partition.len()).all(|j| columns.contains(&SessionColumn::Partition(j)));
    if !has_bound || !all_keys {
        return Err(unsupported(format!(
            "an aggregate over a SESSION window must GROUP BY window_start or window_end and \
             every partition key ({})",
            keys_named()
        )));
    }

    // Aggregate arguments, rewritten over the table below the window node.
    let below = found.window.input.schema();
    let mut pre: Vec<Expr> = vec![found.ts.clone()];
    pre.extend(found.partition.iter().map(|&i| column(below, i)));
    let mut specs = Vec::with_capacity(a.aggr_expr.len());
    for e in &a.aggr_expr {
        let call = aggregate_of(ctx, e, a.input.schema())?;
        let mut columns = Vec::with_capacity(call.exprs.len());
        for arg in &call.exprs {
            let arg = arg
                .clone()
                .transform_up(|e| match &e {
                    Expr::Column(_) => match origin_of(&e) {
                        Some(Origin::Column(i)) => Ok(Transformed::yes(column(below, i))),
                        _ => Err(datafusion::error::DataFusionError::Plan(format!(
                            "aggregating the window column {e} of a SESSION window"
                        ))),
                    },
                    _ => Ok(Transformed::no(e)),
                })
                .map_err(|e| unsupported(e.message().to_string()))?
                .data;
            pre.push(arg);
            columns.push(pre.len() - 1);
        }
        specs.push(call.spec(&columns));
    }

    let l = lower(ctx, b, &found.window.input)?;
    let ts_column = column_index(&found.ts, below);
    if ts_column.is_none() || ts_column != l.time.rowtime {
        return Err(unsupported(format!(
            "a SESSION window over {}, which is not the time column of a table's WATERMARK",
            found.ts
        )));
    }
    if !l.append_only {
        return Err(not_append_only());
    }
    let physical_pre = pre
        .iter()
        .map(|e| physical(ctx, e, below))
        .collect::<Result<Vec<_>>>()?;
    let pre_schema = pre_schema(&pre, below)?;
    b.push_op(
        l.stage,
        Box::new(Project::new(None, physical_pre, Arc::clone(&pre_schema))),
    )?;
    let p = found.partition.len();
    let lateness = if ctx.emit_on_window_close {
        0
    } else {
        ctx.allowed_lateness
    };
    let spec = SessionSpec {
        time: 0,
        partition: (1..=p).collect(),
        gap: found.gap,
        lateness,
        emit_on_close: ctx.emit_on_window_close,
        columns: columns.clone(),
    };
    let aggregate = SessionAggregate::try_new(pre_schema, spec, specs, arrow_schema(&a.schema))?;
    let keys = (p > 0).then(|| (1..=p).collect());
    let stage = b.exchange(l.stage, keys, ctx.parallelism);
    b.push_op(stage, Box::new(aggregate))?;
    b.windowed_aggregates += 1;
    let bounds = columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            SessionColumn::End => Some((i, 0)),
            SessionColumn::Time => Some((i, 1_000)),
            SessionColumn::Last => Some((i, found.gap)),
            _ => None,
        })
        .collect();
    Ok(Some(Lowered {
        stage,
        key: Some((0..a.group_expr.len()).collect()),
        time: EventTime {
            bounds,
            ..EventTime::default()
        },
        append_only: ctx.emit_on_window_close,
    }))
}
