//! Flink's event-time OVER aggregates: a window node whose functions are all aggregates over
//! `ORDER BY` the input's event time (ascending) with a bounded frame, `RANGE BETWEEN INTERVAL
//! ... PRECEDING AND CURRENT ROW` or `ROWS BETWEEN n PRECEDING AND CURRENT ROW`, over an
//! append-only input, runs as an `EventTimeOver` stage: each row is emitted once, final, when
//! the watermark passes it, and state holds only the frame. Any other window node is a general
//! `OverWindow` (see `over.rs`).

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    Expr, Window, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use rivulet_engine::operator::over::event_time::Preceding;
use rivulet_engine::operator::sorted::PartitionOrder;

use super::Lowered;
use super::time::interval_micros;

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
