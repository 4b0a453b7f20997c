//! `EXCEPT ALL` and `INTERSECT ALL` as multisets, as Postgres computes them: a row that the left
//! side has `m` times and the right side `n` times is kept `max(m - n, 0)` times by EXCEPT ALL and
//! `min(m, n)` times by INTERSECT ALL. DataFusion plans them as an anti or semi join on every
//! column, which keeps a left row zero times or all `m` (`SELECT x FROM (VALUES (1), (1)) t(x)
//! EXCEPT ALL SELECT 1` gave no rows). Each side's copies of a row are numbered (`ROW_NUMBER()`
//! over the row's columns), and the number joins too: the left's k-th copy is matched by the
//! right's k-th.

use std::sync::Arc;

use datafusion::common::{Column, NullEquality, Result};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{
    Expr, ExprFunctionExt, Join, JoinType, LogicalPlan, LogicalPlanBuilder,
};

/// `node` with an `EXCEPT ALL` or `INTERSECT ALL` (DataFusion's anti or semi join of every
/// column, NULLs equal, on a left side that is not DISTINCT) joining numbered copies instead;
/// other nodes as they are.
pub fn multisets(node: LogicalPlan) -> Result<LogicalPlan> {
    let LogicalPlan::Join(join) = node else {
        return Ok(node);
    };
    if !set_operation(&join) {
        return Ok(LogicalPlan::Join(join));
    }
    let name = "__rivulet_copy";
    let number = |side: &Arc<LogicalPlan>| -> Result<LogicalPlan> {
        let columns: Vec<Expr> = side
            .schema()
            .columns()
            .into_iter()
            .map(Expr::Column)
            .collect();
        // Ordered by the same columns (a partition's rows are equal), so that a view, which
        // refuses arbitrary order, keeps the numbering too.
        let order = columns.iter().map(|c| c.clone().sort(true, true)).collect();
        let copy = row_number()
            .partition_by(columns)
            .order_by(order)
            .build()?
            .alias(name);
        LogicalPlanBuilder::from(Arc::clone(side))
            .window(vec![copy])?
            .build()
    };
    let (left, right) = (number(&join.left)?, number(&join.right)?);
    let mut keys: (Vec<Column>, Vec<Column>) = join
        .on
        .iter()
        .filter_map(|(l, r)| match (l, r) {
            (Expr::Column(l), Expr::Column(r)) => Some((l.clone(), r.clone())),
            _ => None,
        })
        .unzip();
    keys.0.push(Column::new_unqualified(name));
    keys.1.push(Column::new_unqualified(name));
    let kept: Vec<Expr> = join
        .left
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    LogicalPlanBuilder::from(left)
        .join_detailed(
            right,
            join.join_type,
            keys,
            None,
            NullEquality::NullEqualsNull,
        )?
        .project(kept)?
        .build()
}

/// Whether `join` is how DataFusion plans `EXCEPT ALL` or `INTERSECT ALL`: an anti or semi join
/// on every column pairwise, NULLs equal, without a filter, of a left side that is not DISTINCT
/// (without ALL it is). Before optimization nothing else makes such a join: `NOT EXISTS` and `IN`
/// are still subqueries then.
fn set_operation(join: &Join) -> bool {
    let columns = join.left.schema().fields().len();
    matches!(join.join_type, JoinType::LeftAnti | JoinType::LeftSemi)
        && join.null_equality == NullEquality::NullEqualsNull
        && join.filter.is_none()
        && join.on.len() == columns
        && join.right.schema().fields().len() == columns
        && join
            .on
            .iter()
            .all(|(l, r)| matches!((l, r), (Expr::Column(_), Expr::Column(_))))
        && !matches!(join.left.as_ref(), LogicalPlan::Distinct(_))
}
