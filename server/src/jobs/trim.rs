//! Trimming change logs: every table's and view's change log keeps only the entries some reader
//! still needs, so storage is bounded by the data, not its history.
//!
//! A reader is a job (a view's or sink's) that reads the relation through its log, a SUBSCRIBE
//! or an open subscription cursor (a [`rivulet_engine::table::LogHold`]), or a subscription,
//! which keeps the entries of its retention (`subscriptions.rs`). A job has committed everything up to its
//! committed position, and a restart resumes after it, so entries up to the smallest committed
//! position of every reader can go; a relation nobody reads keeps nothing. New jobs do not need
//! the log's past: they start from the current rows (snapshot backfill, in the engine).
//!
//! Jobs that are being created are not in the job list yet: [`Jobs::starting`] (a read lock held
//! from planning until the job is listed) keeps a trim from running meanwhile (the trim skips its
//! turn rather than queue: a queued writer would hold back every later start). While a view's job
//! could not be started with the server (its readers unknown), nothing is trimmed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::session::Shared;

/// Time between trims.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(2);

/// Trims every relation's change log up to what all its readers have committed; returns how many
/// logs were trimmed.
pub async fn trim_once(shared: &Arc<Shared>) -> rivulet_engine::Result<usize> {
    // Never waits: a start waiting behind a queued trim would wait for every other start too.
    let Ok(_no_job_starting) = shared.jobs.starting.try_write() else {
        return Ok(0);
    };
    if !shared.jobs.refused().is_empty() {
        return Ok(0);
    }
    let mut floors: HashMap<u64, u64> = HashMap::new();
    for (job, _) in shared.jobs.list().values() {
        for (table, position) in job.log_positions() {
            let floor = floors.entry(table).or_insert(u64::MAX);
            *floor = (*floor).min(position);
        }
    }
    let tables: Vec<_> = shared
        .catalog
        .databases()
        .iter()
        .flat_map(|db| shared.catalog.tables(db))
        .map(|t| Arc::clone(&t.store))
        .collect();
    // A subscription keeps the entries committed from `max(created, now - retention)` on.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut kept_from: HashMap<u64, i64> = HashMap::new();
    for s in shared.catalog.subscriptions() {
        let from = s.created_ms.max(now.saturating_sub(s.retention_ms));
        let oldest = kept_from.entry(s.relation_id).or_insert(i64::MAX);
        *oldest = (*oldest).min(from);
    }
    let mut trimmed = 0;
    for table in tables {
        let mut upto = table.last_seq();
        if let Some(f) = floors.get(&table.id()) {
            upto = upto.min(*f);
        }
        if let Some(h) = table.oldest_hold() {
            upto = upto.min(h);
        }
        let kept_from = kept_from.get(&table.id()).copied();
        if upto > table.trimmed() {
            let t = Arc::clone(&table);
            let done = tokio::task::spawn_blocking(move || {
                let upto = match kept_from {
                    Some(ms) => upto.min(t.last_seq_before(ms)?),
                    None => upto,
                };
                t.trim(upto)
            })
            .await
            .map_err(|e| rivulet_engine::EngineError::Internal(format!("trim task: {e}")))??;
            trimmed += usize::from(done);
        }
    }
    Ok(trimmed)
}

/// Trims every [`TRIM_INTERVAL`], and applies the tables' retention, until the server stops.
pub async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = trim_once(&shared).await {
            tracing::warn!(error = %e, "trimming change logs failed");
        }
        if let Err(e) = super::retention::expire_once(&shared).await {
            tracing::warn!(error = %e.message, "dropping rows past their tables' retention failed");
        }
    }
}
