//! `SAVEPOINT`, `RELEASE SAVEPOINT` and `ROLLBACK TO SAVEPOINT` inside a transaction block.
//!
//! Drivers and ORMs set savepoints around statements that may fail (psycopg's nested
//! `transaction()`, SQLAlchemy's `begin_nested()`), so the bookkeeping works as on Postgres:
//! `ROLLBACK TO` a savepoint ends the block's failed state and discards what the block staged
//! since (see `transaction.rs`), and unknown names fail with `3B001`.

use datafusion::sql::sqlparser::ast::Ident;
use rivulet_planner::ddl::normalize_ident;

use super::Outcome;
use crate::error::{SqlError, sqlstate};
use crate::session::{Session, TxState};

impl Session {
    fn in_block(&self, what: &str) -> Result<(), SqlError> {
        if self.tx == TxState::Idle {
            return Err(SqlError::new(
                sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                format!("{what} can only be used in transaction blocks"),
            ));
        }
        Ok(())
    }

    /// The position of the newest savepoint called `name`.
    fn find_savepoint(&self, name: &str) -> Result<usize, SqlError> {
        self.savepoints
            .iter()
            .rposition(|(s, _, _)| s == name)
            .ok_or_else(|| {
                SqlError::new(
                    sqlstate::INVALID_SAVEPOINT_SPECIFICATION,
                    format!("savepoint \"{name}\" does not exist"),
                )
            })
    }

    pub(super) fn savepoint(&mut self, name: &Ident) -> Result<Outcome, SqlError> {
        self.in_block("SAVEPOINT")?;
        let staged = self.staged_now();
        let settings = self.settings_now();
        self.savepoints
            .push((normalize_ident(name), staged, settings));
        Ok(Outcome::Command("SAVEPOINT".into()))
    }

    pub(super) fn release_savepoint(&mut self, name: &Ident) -> Result<Outcome, SqlError> {
        self.in_block("RELEASE SAVEPOINT")?;
        let at = self.find_savepoint(&normalize_ident(name))?;
        self.savepoints.truncate(at);
        Ok(Outcome::Command("RELEASE".into()))
    }

    pub(super) fn rollback_to_savepoint(&mut self, name: &Ident) -> Result<Outcome, SqlError> {
        self.in_block("ROLLBACK TO SAVEPOINT")?;
        let at = self.find_savepoint(&normalize_ident(name))?;
        // The savepoint itself stays, as in Postgres; later ones go.
        self.savepoints.truncate(at + 1);
        if let Some((_, staged, settings)) = self.savepoints.get(at) {
            let (staged, settings) = (staged.clone(), settings.clone());
            self.restore_staged(staged)?;
            self.restore_settings(&settings);
        }
        self.tx = TxState::Open;
        Ok(Outcome::Command("ROLLBACK".into()))
    }
}
