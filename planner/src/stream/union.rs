//! `UNION ALL`: one stage merging its inputs' stages (a `UNION` is its `DISTINCT`).

use super::*;
use datafusion::logical_expr::Union;

/// A `UNION ALL` as one stage merging its inputs.
pub(super) fn lower_union(ctx: &StreamContext<'_>, b: &mut Builder, u: &Union) -> Result<Lowered> {
    let mut from = Vec::with_capacity(u.inputs.len());
    let mut append_only = true;
    for input in &u.inputs {
        let l = lower(ctx, b, input)?;
        append_only &= l.append_only;
        from.push(l.stage);
    }
    b.stages.push(Stage {
        input: StageInput::merge(from, None),
        operators: Vec::new(),
        parallelism: 1,
    });
    // A bag of rows from several relations: no key survives, and event time is only
    // tracked within one source.
    Ok(Lowered {
        stage: b.stages.len() - 1,
        key: None,
        time: EventTime::default(),
        append_only,
    })
}
