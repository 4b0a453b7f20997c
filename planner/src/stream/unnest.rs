//! `UNNEST` of list columns, side by side (HOP and CUMULATE windows' starts, arrays, `WITH
//! ORDINALITY`'s positions), chained into the stage below.

use super::*;
use datafusion::logical_expr::Unnest;
use rivulet_engine::operator::unnest::Unnest as UnnestOp;

/// An `UNNEST` as an `Unnest` operator chained into its input's stage.
pub(super) fn lower_unnest(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    u: &Unnest,
) -> Result<Lowered> {
    let l = lower(ctx, b, &u.input)?;
    if !u.struct_type_columns.is_empty() || u.list_type_columns.is_empty() {
        return Err(PlanError::Unsupported(
            "UNNEST of a struct in a materialized view".into(),
        ));
    }
    if u.list_type_columns.iter().any(|(_, c)| c.depth != 1) {
        return Err(PlanError::Unsupported(
            "UNNEST of nested lists in a materialized view".into(),
        ));
    }
    let lists: Vec<usize> = u.list_type_columns.iter().map(|(l, _)| *l).collect();
    let input = arrow_schema(u.input.schema());
    let preserve = matches!(
        u.options.null_handling,
        datafusion::common::NullHandling::Preserve
    );
    let unnest = UnnestOp::try_new(
        &input,
        lists.clone(),
        u.dependency_indices.clone(),
        preserve,
        arrow_schema(&u.schema),
    )?;
    b.push_op(l.stage, Box::new(unnest))?;
    // One input row becomes several: no key survives.
    Ok(Lowered {
        stage: l.stage,
        key: None,
        time: l.time.unnest(&lists, &u.dependency_indices),
        append_only: l.append_only,
    })
}
