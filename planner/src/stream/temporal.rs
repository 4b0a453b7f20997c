//! Temporal joins (`JOIN t FOR SYSTEM_TIME AS OF ...`, see [`crate::temporal`]): a `TemporalJoin`
//! in a stage reading the probe side (left) and the versioned table (right), each hash-exchanged
//! on its join key. `AS OF PROCTIME()` is a lookup of the table's current rows; `AS OF` the probe
//! side's event-time column meets the version valid then, and needs a versioned table: a primary
//! key among the join keys, and a watermark. The output is append-only and keeps the probe side's
//! event time.

use datafusion::common::Column;
use datafusion::logical_expr::Join;
use rivulet_engine::operator::join::temporal::{AsOf, TemporalJoin};
use rivulet_engine::operator::join::{JoinKind, JoinSide};

use super::Lowered;
use super::time::EventTime;
use crate::error::{PlanError, Result};
use crate::temporal::{self, TemporalTable};

/// The versioned table among `join`'s inputs, if one of them is: its `FOR SYSTEM_TIME AS OF`.
/// A versioned table on the left is refused.
pub(super) fn versioned<'a>(
    tables: &'a [TemporalTable],
    join: &Join,
) -> Result<Option<&'a TemporalTable>> {
    let is = |schema: &datafusion::common::DFSchema, t: &TemporalTable| {
        !schema.fields().is_empty()
            && schema
                .iter()
                .all(|(q, _)| q.is_some_and(|q| q.table() == t.qualifier))
    };
    for t in tables {
        if is(join.right.schema(), t) {
            return Ok(Some(t));
        }
        if is(join.left.schema(), t) {
            return Err(PlanError::Unsupported(format!(
                "FOR SYSTEM_TIME AS OF on the left of a join ({}); the versioned table goes on \
                 the right: probe JOIN versioned FOR SYSTEM_TIME AS OF probe.time",
                t.qualifier
            )));
        }
    }
    Ok(None)
}

/// The `TemporalJoin` of `left` (the probe side) with the versioned `right`, and its output's
/// event time.
#[allow(clippy::too_many_arguments)]
pub(super) fn temporal_join(
    table: &TemporalTable,
    join: &Join,
    kind: JoinKind,
    left: &Lowered,
    right: &Lowered,
    left_side: JoinSide,
    right_side: JoinSide,
    filter: Option<std::sync::Arc<dyn datafusion::physical_plan::PhysicalExpr>>,
    schema: datafusion::arrow::datatypes::SchemaRef,
) -> Result<(TemporalJoin, EventTime)> {
    if !matches!(kind, JoinKind::Inner | JoinKind::Left) {
        let kind = match kind {
            JoinKind::Right => "RIGHT",
            JoinKind::Full => "FULL",
            _ => "semi or anti",
        };
        return Err(PlanError::UnsupportedHint {
            what: format!("a {kind} temporal join (FOR SYSTEM_TIME AS OF)"),
            hint: "A temporal join is an INNER or LEFT join of the probe side with the versioned \
                   table."
                .into(),
        });
    }
    if join.on.is_empty() {
        return Err(PlanError::Unsupported(
            "a temporal join without an equality on the versioned table's key".into(),
        ));
    }
    if !left.append_only {
        return Err(PlanError::UnsupportedHint {
            what: "a temporal join whose probe side (left) has updates or deletes".into(),
            hint: "Its rows are joined once, with the version of their time, so the probe side \
                   must be append-only."
                .into(),
        });
    }
    let as_of = match &table.as_of {
        temporal::AsOf::ProcessingTime => AsOf::ProcessingTime,
        // Flink's lookup join: as of the probe side's `PROCTIME()` column.
        temporal::AsOf::Column { relation, name }
            if left.time.processing
                && join
                    .left
                    .schema()
                    .index_of_column(&Column::new(relation.clone(), name.clone()))
                    .ok()
                    .is_some_and(|at| Some(at) == left.time.rowtime) =>
        {
            AsOf::ProcessingTime
        }
        temporal::AsOf::Column { relation, name } => {
            let column = Column::new(relation.clone(), name.clone());
            let at = join.left.schema().index_of_column(&column).ok();
            if at.is_none() || at != left.time.rowtime {
                return Err(PlanError::UnsupportedHint {
                    what: format!("FOR SYSTEM_TIME AS OF {column}"),
                    hint: "An event-time temporal join is as of the probe side's event-time \
                           column (one with a WATERMARK), or PROCTIME() for the current version."
                        .into(),
                });
            }
            let Some(rt) = right.time.rowtime else {
                return Err(PlanError::UnsupportedHint {
                    what: format!(
                        "an event-time temporal join with {}, which has no WATERMARK",
                        table.qualifier
                    ),
                    hint: "A versioned table needs a primary key and a watermark; or join AS OF \
                           PROCTIME()."
                        .into(),
                });
            };
            let keyed = right.key.as_ref().is_some_and(|key| {
                !key.is_empty() && key.iter().all(|k| right_side.keys.contains(k))
            });
            if !keyed {
                return Err(PlanError::UnsupportedHint {
                    what: format!(
                        "an event-time temporal join with {} not on its primary key",
                        table.qualifier
                    ),
                    hint: "A versioned table needs a PRIMARY KEY, and the join condition must \
                           include equality on all of it."
                        .into(),
                });
            }
            AsOf::EventTime {
                times: [at.unwrap_or_default(), rt],
            }
        }
    };
    let op = TemporalJoin::try_new(kind, left_side, right_side, as_of, filter, schema)?;
    Ok((op, left.time.clone()))
}

/// Marks the table source feeding `stage` (the versioned side of an event-time temporal join)
/// as one whose past versions the job needs: a new job replays its change log rather than
/// reading only its current rows.
pub(super) fn keep_history(b: &mut super::Builder, stage: usize) {
    let mut at = stage;
    loop {
        match b.stages.get_mut(at).map(|s| &mut s.input) {
            Some(rivulet_engine::job::graph::StageInput::Source(source)) => {
                source.history = true;
                return;
            }
            Some(rivulet_engine::job::graph::StageInput::Merge(edges)) if edges.len() == 1 => {
                match edges[0].from.as_slice() {
                    [from] => at = *from,
                    _ => return,
                }
            }
            _ => return,
        }
    }
}
