//! Flink's event-time OVER aggregates: a window node whose functions are all aggregates over
//! `ORDER BY` the input's event time (ascending) with a bounded frame, `RANGE BETWEEN INTERVAL
//! ... PRECEDING AND CURRENT ROW` or `ROWS BETWEEN n PRECEDING AND CURRENT ROW`, over an
//! append-only input, runs as an `EventTimeOver` stage: each row is emitted once, final, when
//! the watermark passes it, and state holds only the frame. Any other window node is a general
//! `OverWindow` (see `over.rs`).
//!
//! RisingWave's `EMIT ON WINDOW CLOSE` on a query without a windowed aggregate (`SELECT * FROM
//! t EMIT ON WINDOW CLOSE`) is the same operator without functions, over one partition: each row
//! of an append-only input with an event time is emitted once the watermark passes it, in
//! event-time order, and then forgotten.

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    Expr, Window, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use rivulet_engine::operator::over::event_time::{EventTimeOver, EventTimeOverSpec, Preceding};
use rivulet_engine::operator::sorted::PartitionOrder;

use super::time::interval_micros;
use super::{Builder, Lowered};
use crate::error::{PlanError, Result};

/// The frame of `window`'s functions, if the window node is an event-time OVER over `input`
/// (lowered), whose rows are laid out as `rows`.
pub(super) fn event_time_frame(
    window: &Window,
    input: &Lowered,
    rows: &PartitionOrder,
) -> Option<Preceding> {
    if !input.append_only {
        return None;
    }
    let time = input.time.rowtime?;
    match rows.order.as_slice() {
        [(c, o)] if *c == time && *c < rows.width && !o.descending => {}
        _ => return None,
    }
    let mut frame = None;
    for e in &window.window_expr {
        let Expr::WindowFunction(f) = e.clone().unalias() else {
            return None;
        };
        if !matches!(f.fun, WindowFunctionDefinition::AggregateUDF(_)) {
            return None;
        }
        let w = &f.params.window_frame;
        if !matches!(w.end_bound, WindowFrameBound::CurrentRow) {
            return None;
        }
        let WindowFrameBound::Preceding(bound) = &w.start_bound else {
            return None;
        };
        let this = match (&w.units, bound) {
            (WindowFrameUnits::Range, v) => {
                let us = interval_micros(&Expr::Literal(v.clone(), None))?;
                (us >= 0).then_some(Preceding::Range(us))?
            }
            (WindowFrameUnits::Rows, ScalarValue::UInt64(Some(n))) => Preceding::Rows(*n),
            _ => return None,
        };
        match frame {
            None => frame = Some(this),
            Some(f) if f == this => {}
            Some(_) => return None,
        }
    }
    frame
}

/// `input` (lowered, with output `schema`) as a query with EMIT ON WINDOW CLOSE and no windowed
/// aggregate: an `EventTimeOver` without functions in one instance, emitting each row once the
/// watermark passes it.
pub(super) fn emit_on_window_close(
    b: &mut Builder,
    input: Lowered,
    schema: SchemaRef,
) -> Result<Lowered> {
    let (Some(time), true) = (input.time.rowtime, input.append_only) else {
        return Err(PlanError::Unsupported(
            "EMIT ON WINDOW CLOSE without a GROUP BY on a window bound (window_start or \
             window_end), other than on an append-only query that keeps its table's event-time \
             column (a table with a WATERMARK)"
                .into(),
        ));
    };
    let rows = PartitionOrder {
        input: SchemaRef::clone(&schema),
        width: schema.fields().len(),
        partition: Vec::new(),
        order: vec![(
            time,
            SortOptions {
                descending: false,
                nulls_first: false,
            },
        )],
    };
    let op = EventTimeOver::try_new(
        EventTimeOverSpec {
            rows,
            functions: Vec::new(),
            filters: Vec::new(),
            preceding: Preceding::Rows(0),
        },
        schema,
    )?;
    let stage = b.exchange(input.stage, None, 1);
    b.push_op(stage, Box::new(op))?;
    b.windowed_aggregates += 1;
    Ok(Lowered {
        stage,
        append_only: true,
        ..input
    })
}
