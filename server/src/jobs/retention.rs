//! Retention of APPEND ONLY tables (`WITH (retention = '1 day')`): rows whose event time the
//! table's watermark has passed by the retention are dropped from the table, without a change-log
//! entry, so views that counted them keep them (a Kafka topic's retention). The table's watermark
//! is its watermark expression's largest value over its newest rows; rows are removed oldest
//! (first inserted) first, so a row that came very late after newer ones waits for the sweep to
//! reach it.

use std::sync::Arc;

use datafusion::arrow::array::{Array, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use rivulet_engine::EngineError;
use rivulet_planner::ddl::{RETENTION, parse_duration};

use crate::error::SqlError;
use crate::session::Shared;

/// The newest rows a sweep reads for the table's watermark.
const NEWEST_ROWS: usize = 8192;

/// Rows one sweep removes from a table at most (the next sweep goes on).
const MAX_EXPIRED: usize = 500_000;

/// Sweeps every table with a retention once; returns the rows removed.
pub async fn expire_once(shared: &Arc<Shared>) -> Result<u64, SqlError> {
    let state = datafusion::prelude::SessionContext::new().state();
    let mut removed = 0;
    for db in shared.catalog.databases() {
        for t in shared.catalog.tables(&db) {
            let (Some(v), Some(watermark)) = (t.def.options.get(RETENTION), &t.def.watermark)
            else {
                continue;
            };
            let Some(retention) = parse_duration(v) else {
                continue;
            };
            let store = Arc::clone(&t.store);
            let expr = rivulet_planner::stream::watermark_expr(&state, store.schema(), watermark)
                .map_err(SqlError::from)?;
            let column = watermark.column;
            let n = tokio::task::spawn_blocking(move || -> Result<u64, EngineError> {
                let Some(newest) = store.newest_rows(NEWEST_ROWS)? else {
                    return Ok(0);
                };
                let values = expr
                    .evaluate(&newest)
                    .and_then(|v| v.into_array(newest.num_rows()))
                    .map_err(|e| EngineError::Internal(format!("watermark of a table: {e}")))?;
                let micros = datafusion::arrow::compute::cast(
                    &values,
                    &DataType::Timestamp(TimeUnit::Microsecond, None),
                )?;
                let Some(now) = micros
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .and_then(|m| m.iter().flatten().max())
                else {
                    return Ok(0);
                };
                let cutoff =
                    now.saturating_sub(i64::try_from(retention.as_micros()).unwrap_or(i64::MAX));
                store.expire(column, cutoff, MAX_EXPIRED)
            })
            .await
            .map_err(|e| SqlError::internal(format!("retention task: {e}")))?
            .map_err(SqlError::from)?;
            removed += n;
        }
    }
    Ok(removed)
}
