//! `BACKUP TO 'directory'`: a consistent copy of the whole store (every database, table, view,
//! job state and source position as of one instant), written by the server into a new directory
//! on its machine; `rivulet backup --to DIR` sends it. Start a server with `--data-dir DIR` to
//! restore: each job resumes from the last epoch the copy holds, like after a crash.

use std::path::PathBuf;

use super::Outcome;
use crate::error::{SqlError, sqlstate};
use crate::session::{Session, TxState};

impl Session {
    pub(super) async fn backup(&mut self, to: &str) -> Result<Outcome, SqlError> {
        if self.tx != TxState::Idle {
            return Err(SqlError::new(
                sqlstate::ACTIVE_SQL_TRANSACTION,
                "BACKUP cannot run inside a transaction block",
            ));
        }
        let dir = PathBuf::from(to);
        if !dir.is_absolute() {
            return Err(SqlError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("backup directory \"{to}\" is not an absolute path"),
            )
            .with_hint("The directory is on the server's machine; give its full path."));
        }
        if dir.exists() {
            return Err(SqlError::new(
                sqlstate::DUPLICATE_FILE,
                format!("backup directory \"{to}\" already exists"),
            )
            .with_hint("Give a directory that does not exist yet; the backup creates it."));
        }
        let store = self.catalog().store().clone();
        let target = dir.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            store.checkpoint_to(&target).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| SqlError::internal(format!("backup task: {e}")))?
        .map_err(|e| {
            SqlError::new(
                sqlstate::IO_ERROR,
                format!("could not write the backup to \"{to}\": {e}"),
            )
        })?;
        tracing::info!(dir = %dir.display(), "backup written");
        Ok(Outcome::Command("BACKUP".into()))
    }
}
