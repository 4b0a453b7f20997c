//! Interval joins: a join whose condition bounds one side's event time by the other's (`b.ts
//! BETWEEN a.ts - INTERVAL '1' HOUR AND a.ts`, or the same with `>=`/`<`/`>` conjuncts, in
//! either direction) over two append-only inputs with watermarks. Such a join frees its state as
//! the watermarks pass and emits append-only rows that keep their event time, so windows and
//! EMIT ON WINDOW CLOSE work over it. A window join (both sides' window bounds equal) is the same
//! operator over the bound columns, freeing a window's rows when it closes. Any other join is a
//! regular one.

use datafusion::common::{Column, DFSchema};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator as BinOp};

use super::time::{EventTime, interval_micros};

/// `lower <= right.ts - left.ts <= upper` (microseconds), if `filter` (over the left schema's
/// columns followed by the right's) bounds the right time column `times[1]` on both sides by the
/// left time column `times[0]`. The tightest of several bounds wins.
pub(super) fn bounds(
    filter: &Expr,
    left: &DFSchema,
    right: &DFSchema,
    times: [usize; 2],
) -> Option<(i64, i64)> {
    let side_of = |c: &Column| -> Option<usize> {
        if let Ok(i) = left.index_of_column(c) {
            return (i == times[0]).then_some(0);
        }
        match right.index_of_column(c) {
            Ok(i) if i == times[1] => Some(1),
            _ => None,
        }
    };
    let (mut lower, mut upper) = (None::<i64>, None::<i64>);
    let mut bound = |a: &Expr, op: BinOp, b: &Expr| {
        let (Some((sa, ca)), Some((sb, cb))) = (linear(a, &side_of), linear(b, &side_of)) else {
            return;
        };
        // a.side + ca OP b.side + cb, as right - left OP c.
        let (op, c) = match (sa, sb) {
            (1, 0) => (op, cb.saturating_sub(ca)),
            (0, 1) => match op.swap() {
                Some(flipped) => (flipped, ca.saturating_sub(cb)),
                None => return,
            },
            _ => return,
        };
        let (lo, hi) = match op {
            BinOp::Gt | BinOp::GtEq => (Some(c), None),
            BinOp::Lt | BinOp::LtEq => (None, Some(c)),
            BinOp::Eq => (Some(c), Some(c)),
            _ => (None, None),
        };
        if let Some(lo) = lo {
            lower = Some(lower.map_or(lo, |l| l.max(lo)));
        }
        if let Some(hi) = hi {
            upper = Some(upper.map_or(hi, |u| u.min(hi)));
        }
    };
    for conjunct in split_conjunction(filter) {
        match conjunct {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => bound(left, *op, right),
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                bound(expr, BinOp::GtEq, low);
                bound(expr, BinOp::LtEq, high);
            }
            _ => {}
        }
    }
    Some((lower?, upper?))
}

/// `e` as one side's time column plus a constant (microseconds), if it is one.
fn linear(e: &Expr, side_of: &dyn Fn(&Column) -> Option<usize>) -> Option<(usize, i64)> {
    match e {
        Expr::Column(c) => Some((side_of(c)?, 0)),
        Expr::Cast(c) => linear(&c.expr, side_of),
        Expr::TryCast(c) => linear(&c.expr, side_of),
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: BinOp::Plus,
            right,
        }) => match (linear(left, side_of), interval_micros(right)) {
            (Some((s, c)), Some(d)) => Some((s, c.saturating_add(d))),
            _ => {
                let (s, c) = linear(right, side_of)?;
                Some((s, c.saturating_add(interval_micros(left)?)))
            }
        },
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: BinOp::Minus,
            right,
        }) => {
            let (s, c) = linear(left, side_of)?;
            Some((s, c.saturating_sub(interval_micros(right)?)))
        }
        _ => None,
    }
}

/// For a window join (Flink's `L.window_start = R.window_start AND L.window_end = R.window_end`
/// over two window TVFs): the pair of equal window bound columns to free state by, and their
/// offset (see [`EventTime`]); `window_end` (offset 0) is preferred.
pub(super) fn window_bound(
    on: &[(Expr, Expr)],
    left: (&DFSchema, &EventTime),
    right: (&DFSchema, &EventTime),
) -> Option<([usize; 2], i64)> {
    let bound = |e: &Expr, (schema, time): (&DFSchema, &EventTime)| {
        let Expr::Column(c) = e else { return None };
        let i = schema.index_of_column(c).ok()?;
        time.bounds
            .iter()
            .find(|(b, _)| *b == i)
            .map(|(_, o)| (i, *o))
    };
    on.iter()
        .filter_map(|(l, r)| {
            let ((li, lo), (ri, ro)) = (bound(l, left)?, bound(r, right)?);
            (lo == ro).then_some(([li, ri], lo))
        })
        .min_by_key(|(_, offset)| offset.abs())
}
