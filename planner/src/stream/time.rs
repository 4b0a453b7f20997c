//! Event-time lineage: which columns of a plan node say when a row's window is complete.
//!
//! A source with a WATERMARK has a *rowtime* column: the watermark `W` promises no more rows with
//! an earlier event time. The window functions ([`crate::window`]) compute window bounds from it
//! with expressions this module recognizes, and each bound column gets an *offset*: a row whose
//! bound is `v` belongs to a window that is complete once `W >= v + offset`. `window_end` has
//! offset 0, `window_start` the window's size, Flink's `window_time` (end minus 1 ms) 1 ms. An
//! aggregation grouped by a bound column can then close its windows on the watermark: free their
//! state, emit their final rows (EMIT ON WINDOW CLOSE) and set aside rows that come too late.

use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator as BinOp};

use crate::window::{CUMULATE_ENDS, HOP_STARTS};

/// The event-time columns of a plan node's output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventTime {
    /// The source's event-time column, while it is passed through unchanged.
    pub rowtime: Option<usize>,
    /// `rowtime` is a processing-time attribute (a `PROCTIME()` column): its watermark follows
    /// the wall clock, and a temporal join as of it is a lookup join (as in Flink).
    pub processing: bool,
    /// Window bound columns with their offsets (see the module documentation).
    pub bounds: Vec<(usize, i64)>,
    /// List columns of window bounds, before they are unnested, with the bounds' offset.
    pub lists: Vec<(usize, i64)>,
}

/// The microseconds of a constant interval (no months), if `e` is one.
pub fn interval_micros(e: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = e else {
        return None;
    };
    match value {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i64::from(i.days) * 86_400_000_000 + i.nanoseconds / 1000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i64::from(i.days) * 86_400_000_000 + i64::from(i.milliseconds) * 1000)
        }
        _ => None,
    }
}

impl EventTime {
    fn column_index(e: &Expr, input: &DFSchema) -> Option<usize> {
        match e {
            Expr::Column(c) => input.index_of_column(c).ok(),
            _ => None,
        }
    }

    /// The offset of `e` as a window bound over this input, if it is one.
    fn bound(&self, e: &Expr, input: &DFSchema) -> Option<i64> {
        match e {
            Expr::Alias(a) => self.bound(&a.expr, input),
            Expr::Column(_) => {
                let i = Self::column_index(e, input)?;
                self.bounds.iter().find(|(c, _)| *c == i).map(|(_, o)| *o)
            }
            Expr::ScalarFunction(f) if f.name() == "date_bin" => match f.args.as_slice() {
                [size, ts, _origin] if self.is_rowtime(ts, input) => interval_micros(size),
                _ => None,
            },
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let offset = self.bound(left, input)?;
                let delta = interval_micros(right)?;
                match op {
                    BinOp::Plus => Some(offset - delta),
                    BinOp::Minus => Some(offset + delta),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn is_rowtime(&self, e: &Expr, input: &DFSchema) -> bool {
        let e = match e {
            Expr::Cast(c) => c.expr.as_ref(),
            other => other,
        };
        self.rowtime.is_some() && Self::column_index(e, input) == self.rowtime
    }

    /// The bound offset of a list column expression (`rivulet_hop_starts(ts, ...)`).
    fn list(&self, e: &Expr, input: &DFSchema) -> Option<i64> {
        match e {
            Expr::Alias(a) => self.list(&a.expr, input),
            Expr::Column(_) => {
                let i = Self::column_index(e, input)?;
                self.lists.iter().find(|(c, _)| *c == i).map(|(_, o)| *o)
            }
            Expr::ScalarFunction(f) => match (f.name(), f.args.as_slice()) {
                (HOP_STARTS, [ts, _slide, size, _]) if self.is_rowtime(ts, input) => {
                    interval_micros(size)
                }
                (CUMULATE_ENDS, [ts, ..]) if self.is_rowtime(ts, input) => Some(0),
                _ => None,
            },
            _ => None,
        }
    }

    /// The event time of a projection's output (`exprs` over `input`).
    pub fn project(&self, exprs: &[Expr], input: &DFSchema) -> EventTime {
        let mut out = EventTime::default();
        for (i, e) in exprs.iter().enumerate() {
            let plain = e.clone().unalias();
            if self.is_rowtime(&plain, input) && matches!(plain, Expr::Column(_)) {
                out.rowtime = Some(i);
                out.processing = self.processing;
            }
            if let Some(offset) = self.bound(&plain, input) {
                out.bounds.push((i, offset));
            }
            if let Some(offset) = self.list(&plain, input) {
                out.lists.push((i, offset));
            }
        }
        out
    }

    /// The event time after unnesting list columns `lists`; `sources[j]` is output column `j`'s
    /// input column. A window bound's list keeps bounding only unnested alone (beside another
    /// list its elements may be NULL padding).
    pub fn unnest(&self, lists: &[usize], sources: &[usize]) -> EventTime {
        let mut out = EventTime::default();
        for (j, &s) in sources.iter().enumerate() {
            if Some(s) == self.rowtime {
                out.rowtime = Some(j);
                out.processing = self.processing;
            }
            if lists.contains(&s) {
                if let Some((_, o)) = self.lists.iter().find(|(c, _)| *c == s)
                    && lists.len() == 1
                {
                    out.bounds.push((j, *o));
                }
            } else if let Some((_, o)) = self.bounds.iter().find(|(c, _)| *c == s) {
                out.bounds.push((j, *o));
            }
        }
        out
    }

    /// The window bound among `group_by` (input columns) that closes a group: a key position
    /// and its offset. `window_end` (offset 0) is preferred.
    pub fn window_key(&self, group_by: &[usize]) -> Option<(usize, i64)> {
        let mut found: Vec<(usize, i64)> = group_by
            .iter()
            .enumerate()
            .filter_map(|(pos, col)| {
                self.bounds
                    .iter()
                    .find(|(c, _)| c == col)
                    .map(|(_, o)| (pos, *o))
            })
            .collect();
        found.sort_by_key(|(_, o)| o.abs());
        found.first().copied()
    }
}
