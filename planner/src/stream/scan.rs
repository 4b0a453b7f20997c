//! A table scan: a source stage reading the table's change log (or an external source), its
//! projection and pushed filters a `Project`.

use super::*;
use datafusion::logical_expr::TableScan;
use datafusion::physical_expr::utils::collect_columns;

/// A table scan as a source stage.
pub(super) fn lower_scan(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    scan: &TableScan,
) -> Result<Lowered> {
    let resolved = (ctx.resolve)(&scan.table_name).ok_or_else(|| {
        PlanError::DataFusion(datafusion::error::DataFusionError::Plan(format!(
            "table '{}' not found",
            scan.table_name
        )))
    })?;
    let (source, source_key) = (resolved.store, resolved.key);
    let watermark = resolved
        .watermark
        .as_ref()
        .map(|w| watermark_expr(ctx.state, source.schema(), w))
        .transpose()?;
    let mut operators: Vec<Box<dyn Operator>> = Vec::new();
    let full =
        DFSchema::try_from_qualified_schema(scan.table_name.clone(), source.schema().as_ref())
            .map_err(PlanError::DataFusion)?;
    let predicate = scan
        .filters
        .iter()
        .cloned()
        .reduce(|a, b| a.and(b))
        .map(|p| physical(ctx, &p, &full))
        .transpose()?;
    // Without a projection DataFusion reads every visible column; a counted view's hidden
    // count column (last in storage) is never one of them.
    let columns = scan
        .projection
        .clone()
        .unwrap_or_else(|| (0..scan.source.schema().fields().len()).collect());
    // Rows of a keyed relation stay unique by its key while the key columns are read.
    let key = source_key.and_then(|key| {
        key.iter()
            .map(|k| columns.iter().position(|c| c == k))
            .collect::<Option<Vec<_>>>()
    });
    // A source outside Rivulet (files) decodes only the columns the stage reads: the scan's,
    // its filters', the watermark's, and what the computed ones among them are made of.
    let external = resolved.external.as_ref().map(|external| {
        let mut read = columns.clone();
        for expr in predicate.iter().chain(watermark.iter()) {
            read.extend(collect_columns(expr).iter().map(Column::index));
        }
        read.extend(resolved.watermark.as_ref().map(|w| w.column));
        external
            .reading(&source.inputs_of(&read))
            .unwrap_or_else(|| Arc::clone(external))
    });
    if columns.len() != full.fields().len() || predicate.is_some() {
        let exprs = columns
            .iter()
            .map(|&i| Arc::new(Column::new(full.field(i).name(), i)) as Arc<dyn PhysicalExpr>)
            .collect();
        operators.push(Box::new(Project::new(
            predicate,
            exprs,
            arrow_schema(&scan.projected_schema),
        )));
    }
    let rowtime = resolved
        .watermark
        .as_ref()
        .and_then(|w| columns.iter().position(|&c| c == w.column));
    b.stages.push(Stage {
        input: StageInput::Source(Source {
            table: source,
            watermark,
            idle_timeout: resolved.idle_timeout,
            processing_time: resolved.processing_time,
            external,
            history: false,
            append_only: resolved.append_only,
        }),
        operators,
        parallelism: 1,
    });
    Ok(Lowered {
        stage: b.stages.len() - 1,
        key,
        time: EventTime {
            rowtime,
            processing: resolved.processing_time,
            ..EventTime::default()
        },
        append_only: resolved.append_only,
    })
}
