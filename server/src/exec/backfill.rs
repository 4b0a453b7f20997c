//! Starting a new view's or sink's job, and waiting for its backfill.
//!
//! `CREATE MATERIALIZED VIEW`, `CREATE SINK ... AS` and `INSERT INTO sink SELECT` return once the
//! job has committed everything its sources held at CREATE (RisingWave's and Materialize's
//! behaviour: the first SELECT sees the whole view), sending a NOTICE with the progress every few
//! seconds while they wait. A cancel, `statement_timeout` or a job that fails during the wait
//! drops the half-built view. `SET background_ddl = true` (RisingWave's name) returns at once;
//! `SHOW JOBS` then shows the backfill's progress.

use std::sync::Arc;
use std::time::Duration;

use crate::catalog::TableEntry;
use crate::error::{SqlError, sqlstate};
use crate::jobs::catch_up::CatchUp;
use crate::session::Session;

/// The session setting that makes CREATE return before the backfill (RisingWave's name).
pub const BACKGROUND_DDL: &str = "background_ddl";

/// How often a waiting CREATE reports its progress.
const NOTICE_EVERY: Duration = Duration::from_secs(5);

impl Session {
    /// Starts the job of `entry` (a view or sink just stored) and, unless `background_ddl` is
    /// on, waits for its backfill. If either fails, `entry` is dropped again. `what`: `materialized
    /// view` or `sink`, for messages.
    pub(super) async fn start_job(
        &mut self,
        entry: &Arc<TableEntry>,
        what: &str,
    ) -> Result<(), SqlError> {
        let shared = Arc::clone(&self.shared);
        if let Err(e) = shared.jobs.start(&shared, entry).await {
            let _ = self
                .catalog()
                .drop_table(&self.database, &entry.def.name, true);
            return Err(e);
        }
        if self.background_ddl() {
            return Ok(());
        }
        let interrupt = self.interrupt.clone();
        let waited = interrupt.run(self.await_backfill(entry, what)).await;
        if let Err(e) = waited {
            self.abandon_job(entry, what);
            return Err(e);
        }
        Ok(())
    }

    /// Whether `background_ddl` is on.
    fn background_ddl(&self) -> bool {
        self.settings
            .get(BACKGROUND_DDL)
            .is_some_and(|v| v == "true")
    }

    /// Waits until the job of `entry` has caught up with its sources as they were when it started.
    async fn await_backfill(&self, entry: &TableEntry, what: &str) -> Result<(), SqlError> {
        let name = &entry.def.name;
        let Some(mut state) = self.shared.jobs.catch_up(entry.def.id) else {
            return Err(SqlError::internal("the new job vanished"));
        };
        let mut ticker = tokio::time::interval(NOTICE_EVERY);
        ticker.tick().await;
        loop {
            let now = state.borrow_and_update().clone();
            match now {
                CatchUp::Done => return Ok(()),
                CatchUp::Unknown(e) => {
                    self.notice(format!(
                        "{what} \"{name}\" was created without waiting for its backfill: its \
                         sources could not tell where they end ({e})"
                    ));
                    return Ok(());
                }
                CatchUp::Failed(e) => {
                    // Stopped by a rescale (ALTER ... SET PARALLELISM in another session): the
                    // new job's backfill is what to wait for.
                    if let Some(next) = self
                        .shared
                        .jobs
                        .successor_catch_up(entry.def.id, &state)
                        .await
                    {
                        state = next;
                        continue;
                    }
                    return Err(SqlError::new(
                        sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        format!("{what} \"{name}\" failed during its backfill: {e}"),
                    ));
                }
                CatchUp::Starting | CatchUp::Running(_) => {}
            }
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        if let Some(next) =
                            self.shared.jobs.successor_catch_up(entry.def.id, &state).await
                        {
                            state = next;
                            continue;
                        }
                        return Err(SqlError::new(
                            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                            format!("{what} \"{name}\" stopped during its backfill"),
                        ));
                    }
                }
                _ = ticker.tick() => {
                    if let CatchUp::Running(targets) = &now {
                        self.notice(format!(
                            "{what} \"{name}\": backfill {:.1}% done, {} rows read",
                            targets.fraction() * 100.0,
                            targets.rows_read()
                        ));
                    }
                }
            }
        }
    }

    /// Drops the view or sink whose CREATE did not complete, unless something already reads it.
    fn abandon_job(&mut self, entry: &TableEntry, what: &str) {
        let id = entry.def.id;
        if !self.shared.jobs.readers_of(id).is_empty() {
            tracing::warn!(
                name = %entry.def.name,
                "{what} kept after its CREATE failed: other views read it"
            );
            return;
        }
        self.shared.jobs.stop(id);
        if let Err(e) = self
            .catalog()
            .drop_table(&self.database, &entry.def.name, true)
        {
            tracing::error!(name = %entry.def.name, error = %e, "{what} could not be dropped after its CREATE failed");
        }
    }
}
