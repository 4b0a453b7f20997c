//! `Filter` and `Projection`: a `Project` of DataFusion physical expressions chained into the
//! stage below; a projection keeps the key when it selects every key column.

use super::*;
use datafusion::logical_expr::{Filter, Projection};

/// A `Filter` as a `Project` with a predicate, chained into its input's stage.
pub(super) fn lower_filter(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    f: &Filter,
) -> Result<Lowered> {
    if let Some(l) = topn::lower_rank_filter(ctx, b, f, None)? {
        return Ok(l);
    }
    let l = lower(ctx, b, &f.input)?;
    // `WHERE true` (decorrelated subqueries leave it) passes every row: no operator.
    if matches!(
        &f.predicate,
        Expr::Literal(datafusion::scalar::ScalarValue::Boolean(Some(true)), _)
    ) {
        return Ok(l);
    }
    let input = f.input.schema();
    let predicate = physical(ctx, &f.predicate, input)?;
    b.push_op(
        l.stage,
        Box::new(Project::new(
            Some(predicate),
            identity(input),
            arrow_schema(f.input.schema()),
        )),
    )?;
    Ok(l)
}

/// A `Projection` as a `Project` (none when it selects every column in order).
pub(super) fn lower_projection(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    p: &Projection,
) -> Result<Lowered> {
    // A filter on a ranking function's column below: top-N, which emits rank changes only if
    // this projection reads the rank.
    let top = match p.input.as_ref() {
        LogicalPlan::Filter(f) => topn::lower_rank_filter(ctx, b, f, Some(&p.expr))?,
        _ => None,
    };
    let l = match top {
        Some(l) => l,
        None => lower(ctx, b, &p.input)?,
    };
    project_over(ctx, b, p, l)
}

/// A `Projection` over its input, already lowered to `l`.
pub(super) fn project_over(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    p: &Projection,
    mut l: Lowered,
) -> Result<Lowered> {
    let input = p.input.schema();
    let exprs = p
        .expr
        .iter()
        .map(|e| physical(ctx, e, input))
        .collect::<Result<Vec<_>>>()?;
    // The key survives if every key column is selected as a plain column.
    l.key = l.key.and_then(|key| {
        key.iter()
            .map(|&k| {
                p.expr.iter().position(|e| match e.clone().unalias() {
                    Expr::Column(c) => input.index_of_column(&c).ok() == Some(k),
                    _ => false,
                })
            })
            .collect()
    });
    l.time = l.time.project(&p.expr, input);
    // Selecting every input column in order (renamed or not) changes nothing downstream
    // operators see: they address columns by position.
    let identity = p.expr.len() == input.fields().len()
        && p.expr.iter().enumerate().all(|(i, e)| {
            matches!(e.clone().unalias(), Expr::Column(c) if input.index_of_column(&c).ok() == Some(i))
        });
    if !identity {
        b.push_op(
            l.stage,
            Box::new(Project::new(None, exprs, arrow_schema(&p.schema))),
        )?;
    }
    Ok(l)
}
