//! `ALTER MATERIALIZED VIEW v SET PARALLELISM = n` (and `ALTER SINK`): live rescaling, RisingWave's
//! spelling with Flink's reactive scaling as the model. The job stops at a synced checkpoint,
//! the new parallelism is stored with the view, and the job starts again from that checkpoint
//! with the new instances: keyed state is stored by key group, so each new instance reads the
//! groups it now owns, and nothing is lost or counted twice. Other jobs keep running.

use rivulet_engine::task::spawn_named;
use rivulet_planner::alter_job::Parallelism;

use super::Outcome;
use crate::error::{SqlError, sqlstate};
use crate::jobs::{ADAPTIVE, PARALLELISM};
use crate::session::{Session, TxState};

impl Session {
    /// The view (or, with `sink`, the sink) called `name`, or the error for its absence.
    pub(super) fn job_entry(
        &self,
        name: &str,
        sink: bool,
    ) -> Result<std::sync::Arc<crate::catalog::TableEntry>, SqlError> {
        let kind = if sink { "sink" } else { "materialized view" };
        let Some(entry) = self.catalog().table(&self.database, name) else {
            let state = if sink {
                sqlstate::UNDEFINED_OBJECT
            } else {
                sqlstate::UNDEFINED_TABLE
            };
            return Err(SqlError::new(
                state,
                format!("{kind} \"{name}\" does not exist"),
            ));
        };
        let is_kind = entry
            .def
            .view
            .as_ref()
            .is_some_and(|v| v.sink.is_some() == sink);
        if !is_kind {
            return Err(SqlError::new(
                sqlstate::WRONG_OBJECT_TYPE,
                format!("\"{name}\" is not a {kind}"),
            ));
        }
        Ok(entry)
    }

    pub(super) async fn alter_parallelism(
        &mut self,
        name: &str,
        sink: bool,
        parallelism: Parallelism,
    ) -> Result<Outcome, SqlError> {
        let tag = if sink {
            "ALTER SINK"
        } else {
            "ALTER MATERIALIZED VIEW"
        };
        if self.tx != TxState::Idle {
            return Err(SqlError::new(
                sqlstate::ACTIVE_SQL_TRANSACTION,
                format!("{tag} ... SET PARALLELISM cannot run inside a transaction block"),
            ));
        }
        let entry = self.job_entry(name, sink)?;
        let mut def = entry.def.clone();
        let Some(view) = def.view.as_mut() else {
            return Err(SqlError::internal("a view without its query"));
        };
        match parallelism {
            Parallelism::Fixed(n) => {
                let max = u64::from(rivulet_engine::keygroup::KEY_GROUPS);
                if n > max {
                    return Err(SqlError::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!("parallelism {n} is out of range (1 to {max})"),
                    )
                    .with_detail(format!(
                        "Keyed state is split into {max} key groups; each instance owns some."
                    )));
                }
                view.settings.insert(PARALLELISM.into(), n.to_string());
            }
            Parallelism::Adaptive => {
                view.settings.insert(PARALLELISM.into(), ADAPTIVE.into());
            }
            Parallelism::Default => {
                view.settings.remove(PARALLELISM);
            }
        }
        // Checked before the job stops: a value the view could not start with is refused here.
        crate::jobs::parallelism(&view.settings, self.shared.jobs.defaults().parallelism)?;
        // The rescale runs on its own: a cancel or a statement_timeout while the job waits for
        // its last checkpoint (a sink whose broker is down, say) ends the statement, and the
        // job still starts again with the new parallelism once it has stopped.
        let shared = std::sync::Arc::clone(&self.shared);
        let (done, result) = tokio::sync::oneshot::channel();
        spawn_named(format!("rescale-{name}"), async move {
            let _ = done.send(shared.jobs.rescale(&shared, def).await);
        })
        .detach();
        self.interrupt
            .run(async {
                result
                    .await
                    .map_err(|_| SqlError::internal("the rescale task ended without a result"))?
            })
            .await?;
        Ok(Outcome::Command(tag.into()))
    }
}
