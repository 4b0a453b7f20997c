//! Window functions (`OVER`) that are not a top-N filter: an [`OverWindow`] stage behind a hash
//! exchange on the partition columns (one instance without PARTITION BY), which evaluates
//! DataFusion's own physical window expressions over each changed partition; or, for Flink's
//! event-time OVER aggregates over append-only input, an [`EventTimeOver`] stage (see
//! `over_time.rs`).
//!
//! DataFusion puts the functions of one `PARTITION BY` and `ORDER BY` in one `Window` node (and
//! nests one node per other clause), so one node is one operator. Partition and order keys that
//! are not plain columns are computed by a `Project` after the input's own columns. A function
//! whose result depends on an order the query does not give (`lag(x) OVER (PARTITION BY k)`, a
//! ROWS frame without ORDER BY) picks arbitrary rows: refused.

use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Window, WindowFrameBound, WindowFunctionDefinition};
use datafusion::physical_planner::create_window_expr;
use rivulet_engine::operator::over::event_time::{self, EventTimeOver, EventTimeOverSpec};
use rivulet_engine::operator::over::{OverSpec, OverWindow};

use super::topn::sort_keys;
use super::*;

/// A `Window` node as an [`OverWindow`] stage.
pub(super) fn lower_window(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    window: &Window,
) -> Result<Lowered> {
    let mut clause = None;
    for e in &window.window_expr {
        let Expr::WindowFunction(f) = e.clone().unalias() else {
            return Err(PlanError::Unsupported(format!(
                "the window expression {e} in a materialized view"
            )));
        };
        let p = &f.params;
        // An aggregate over the whole partition does not depend on the rows' order.
        let frame = &p.window_frame;
        let whole = matches!(&frame.start_bound, WindowFrameBound::Preceding(v) if v.is_null())
            && matches!(&frame.end_bound, WindowFrameBound::Following(v) if v.is_null());
        let order_free = matches!(f.fun, WindowFunctionDefinition::AggregateUDF(_)) && whole;
        if p.order_by.is_empty() && !order_free {
            return Err(PlanError::UnsupportedHint {
                what: format!(
                    "{}() OVER a window without ORDER BY in a materialized view",
                    f.fun.name()
                ),
                hint: "Without ORDER BY the rows it reads are arbitrary; add an ORDER BY to the \
                       OVER clause."
                    .into(),
            });
        }
        match &clause {
            None => clause = Some((p.partition_by.clone(), p.order_by.clone())),
            Some((partition, order)) if *partition == p.partition_by && *order == p.order_by => {}
            Some(_) => {
                return Err(PlanError::Unsupported(
                    "window functions with different PARTITION BY or ORDER BY in one window \
                     node of a materialized view"
                        .into(),
                ));
            }
        }
    }
    let Some((partition, order)) = clause else {
        return Err(PlanError::Unsupported(
            "a window node without functions".into(),
        ));
    };
    let l = lower(ctx, b, &window.input)?;
    let input = window.input.schema();
    let rows = sort_keys(ctx, b, &l, input, &partition, &order)?;
    let functions = (window.window_expr.iter())
        .map(|e| {
            create_window_expr(
                e,
                input,
                ctx.state.execution_props(),
                &PhysicalPlanningContext::default(),
            )
            .map_err(PlanError::DataFusion)
        })
        .collect::<Result<Vec<_>>>()?;
    let (width, partition) = (rows.width, rows.partition.clone());
    let schema = arrow_schema(&window.schema);
    let event_time = super::over_time::event_time_frame(window, &l, &rows);
    let op: Box<dyn Operator> = match event_time {
        Some(preceding) => {
            if let Some(f) = event_time::unretractable(&functions) {
                return Err(PlanError::UnsupportedHint {
                    what: format!("{f} OVER a frame that slides by event time"),
                    hint: "Its aggregate cannot remove the rows that leave the frame.".into(),
                });
            }
            // The operator feeds the aggregates itself: it evaluates their FILTERs too.
            let filters = (window.window_expr.iter())
                .map(|e| match e.clone().unalias() {
                    Expr::WindowFunction(f) => (f.params.filter)
                        .map(|c| crate::overflow::physical_expr(ctx.state, *c, input))
                        .transpose()
                        .map_err(PlanError::DataFusion),
                    _ => Ok(None),
                })
                .collect::<Result<Vec<_>>>()?;
            Box::new(EventTimeOver::try_new(
                EventTimeOverSpec {
                    rows,
                    functions,
                    filters,
                    preceding,
                },
                schema,
            )?)
        }
        None => Box::new(OverWindow::try_new(OverSpec { rows, functions }, schema)?),
    };
    let exchange = (!partition.is_empty()).then(|| partition.clone());
    let stage = b.exchange(l.stage, exchange, ctx.parallelism);
    b.push_op(stage, op)?;
    // Each input row is one output row: the input's key stays one, with the partition (which
    // says which instance has the row) in front.
    let key = l
        .key
        .filter(|_| partition.iter().all(|&c| c < width))
        .map(|key| {
            let extra: Vec<usize> = key.into_iter().filter(|c| !partition.contains(c)).collect();
            partition.into_iter().chain(extra).collect()
        });
    // An event-time OVER emits each row once, final, and passes its event time on.
    let (time, append_only) = match event_time {
        Some(_) => (
            EventTime {
                rowtime: l.time.rowtime,
                processing: l.time.processing,
                ..EventTime::default()
            },
            true,
        ),
        None => (EventTime::default(), false),
    };
    Ok(Lowered {
        stage,
        key,
        time,
        append_only,
    })
}
