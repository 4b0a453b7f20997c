//! `MATCH_RECOGNIZE`: the clause's table (see [`crate::recognize`]) as a `MatchRecognize`
//! operator over its lowered input, behind a hash exchange on the partition columns.

use super::*;
use crate::recognize::MatchRecognizeTable;
use datafusion::logical_expr::TableScan;
use rivulet_engine::operator::recognize::Recognize;

/// The clause a table scan reads, if it reads one.
pub(super) fn clause(scan: &TableScan) -> Option<&MatchRecognizeTable> {
    let source = scan
        .source
        .as_ref()
        .downcast_ref::<datafusion::datasource::DefaultTableSource>()?;
    source
        .table_provider
        .as_ref()
        .downcast_ref::<MatchRecognizeTable>()
}

pub(super) fn lower_match_recognize(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    scan: &TableScan,
    table: &MatchRecognizeTable,
) -> Result<Lowered> {
    let input = ctx
        .state
        .analyzer()
        .execute_and_check(table.input.clone(), ctx.state.config_options(), |_, _| {})
        .map_err(PlanError::DataFusion)?;
    let input = join::decorrelate(ctx, input)?;
    let lowered = lower(ctx, b, &input)?;
    if !lowered.append_only {
        return Err(PlanError::UnsupportedHint {
            what: "MATCH_RECOGNIZE over rows that are updated or deleted".into(),
            hint: "Its input must be append-only: an APPEND ONLY table, a Kafka, file or \
                   generator table, or an EMIT ON WINDOW CLOSE view."
                .into(),
        });
    }
    let mut spec = table.spec.clone();
    spec.event_time = lowered.time.rowtime == Some(spec.time);
    // Event time goes on where matches have one (see `MatchRecognizeTable::rowtime`).
    let mut rowtime = table.rowtime.filter(|_| spec.event_time);
    let keys = (!spec.partition.is_empty()).then(|| spec.partition.clone());
    let stage = b.exchange(lowered.stage, keys, ctx.parallelism);
    let output = Arc::clone(&spec.output);
    b.push_op(stage, Box::new(Recognize::try_new(spec)?))?;
    if let Some(projection) = &scan.projection
        && projection.len() != output.fields().len()
    {
        rowtime = rowtime.and_then(|r| projection.iter().position(|&c| c == r));
        let exprs = projection
            .iter()
            .map(|&i| Arc::new(Column::new(output.field(i).name(), i)) as Arc<dyn PhysicalExpr>)
            .collect();
        b.push_op(
            stage,
            Box::new(Project::new(
                None,
                exprs,
                arrow_schema(&scan.projected_schema),
            )),
        )?;
    }
    Ok(Lowered {
        stage,
        key: None,
        time: EventTime {
            processing: rowtime.is_some() && lowered.time.processing,
            rowtime,
            ..EventTime::default()
        },
        append_only: true,
    })
}
