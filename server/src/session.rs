//! One client connection's state: its database, settings, transaction status, DataFusion context,
//! and an unfinished `COPY FROM STDIN`.
//!
//! Transactions: Rivulet runs every statement in autocommit mode, durably, as it arrives; `BEGIN`
//! only opens a block so that clients' bookkeeping works as on Postgres: after an error inside a
//! block every statement fails with `25P02` until `COMMIT` or `ROLLBACK` ends it. `ROLLBACK` does not
//! undo statements that already ran (the `issues` tracker records this).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::catalog::{Catalog, DEFAULT_SCHEMA};
use crate::copy::CopyIn;
use crate::error::{SqlError, sqlstate};
use crate::interrupt::Interrupt;
use crate::provider::{Reads, SessionCatalogs};

/// The Postgres version Rivulet reports (`server_version`, `version()`), the one its types and
/// results are compared with (`sql-tests/compat/postgres`). Clients choose their catalog queries
/// by it: its catalog answers what they ask an 18 server (`pg_database.datlocale`, psql's
/// not-null constraints), and still what they asked a 16 one (`colliculocale`).
pub const SERVER_VERSION: &str = "18.6";

/// [`SERVER_VERSION`] as `server_version_num` (major * 10000 + minor), which clients compare.
pub const SERVER_VERSION_NUM: &str = "180006";

/// What every session shares.
#[derive(Debug)]
pub struct Shared {
    pub catalog: Arc<Catalog>,
    /// The streaming jobs of materialized views.
    pub jobs: crate::jobs::Jobs,
    /// The source connectors of tables.
    pub sources: crate::sources::Sources,
    /// DataFusion's runtime for every session's queries: one memory pool, one spill directory.
    pub runtime: Arc<RuntimeEnv>,
    /// The savepoints this server wrote, and the change-log entries they keep.
    pub savepoints: crate::savepoints::Savepoints,
}

/// Settings the server's flags give every session (`--statement-timeout`, ...), set once at start.
static SERVER_DEFAULTS: OnceLock<Vec<(String, String)>> = OnceLock::new();

/// Sets the defaults of [`SERVER_DEFAULTS`]; only the first call counts.
pub fn set_server_defaults(settings: Vec<(String, String)>) {
    let _ = SERVER_DEFAULTS.set(settings);
}

/// Where a session stands with respect to an explicit transaction block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    /// Autocommit, no block open.
    Idle,
    /// Inside `BEGIN ... COMMIT`.
    Open,
    /// A statement failed inside a block; only `COMMIT`/`ROLLBACK` are accepted.
    Aborted,
}

/// One connection's session.
pub struct Session {
    pub shared: Arc<Shared>,
    pub database: String,
    pub user: String,
    /// `SET` values, keys lowercased. Unknown settings are kept as given.
    pub settings: BTreeMap<String, String>,
    pub tx: TxState,
    /// Savepoints of the open block, oldest first (see `exec/savepoint.rs`), with what was
    /// staged and the settings as they were.
    pub savepoints: Vec<(String, crate::exec::Staged, crate::exec::BlockSettings)>,
    /// The open block's settings: what they were at `BEGIN`, and what `SET LOCAL` undoes at its
    /// end (see `exec/settings.rs`).
    pub block_settings: crate::exec::BlockSettings,
    /// The snapshot the running statement reads (cleared after each statement) and the open
    /// transaction block's staged writes.
    pub reads: Reads,
    ctx: Option<SessionContext>,
    /// `ctx`'s catalog list, closed when the session ends (see [`crate::provider`]'s ownership
    /// note).
    catalogs: Option<Arc<SessionCatalogs>>,
    /// A `COPY FROM STDIN` waiting for its data.
    pub copy: Option<CopyIn>,
    /// `settings` as the running statement's SQL functions and `pg_settings` see them.
    pg_settings: crate::pg::functions::SessionSettings,
    /// Stops the running statement (cancel, timeout, client gone); set by the wire layer for
    /// each client message, given each statement's deadline by `run`.
    pub interrupt: Interrupt,
    /// Whether a statement is running: still set at the next one if the last was dropped mid-way.
    pub(crate) running: bool,
    /// NOTICEs of the running statement, sent to the client while it runs (see `wire.rs`).
    notices: Notices,
    /// Open subscription cursors, by name (see [`crate::subscriptions`]).
    pub cursors: BTreeMap<String, crate::subscriptions::Cursor>,
    /// The sequence values this session drew (`currval`, `lastval`).
    drawn: Arc<parking_lot::Mutex<crate::sequence::Drawn>>,
}

/// A session's NOTICE messages: statements send, the wire layer forwards them to the client.
#[derive(Clone)]
pub struct Notices {
    tx: tokio::sync::mpsc::UnboundedSender<pgwire::error::ErrorInfo>,
    pub rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<pgwire::error::ErrorInfo>>>,
}

impl Notices {
    fn new() -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Self {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("database", &self.database)
            .field("user", &self.user)
            .finish()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A connection that ends inside a block rolls it back, its CREATEs too.
        if self.tx != TxState::Idle {
            let staged = std::mem::take(&mut *self.reads.staged.lock());
            self.undo_created(staged.created());
            if let Err(e) = staged.undo(self.catalog()) {
                tracing::warn!(error = %e, "a change of the dropped block could not be undone");
            }
        }
        if let Some(catalogs) = self.catalogs.take() {
            catalogs.close();
        }
    }
}

/// Settings every session starts with; `SHOW` answers these as Postgres would.
pub(crate) fn default_settings(user: &str, database: &str) -> BTreeMap<String, String> {
    let pairs = [
        ("application_name", ""),
        ("client_encoding", "UTF8"),
        ("datestyle", "ISO, MDY"),
        ("default_table_access_method", "heap"),
        ("default_transaction_isolation", "read committed"),
        ("default_transaction_read_only", "off"),
        ("extra_float_digits", "1"),
        ("integer_datetimes", "on"),
        ("intervalstyle", "postgres"),
        ("is_superuser", "on"),
        ("search_path", "\"$user\", public"),
        ("server_encoding", "UTF8"),
        ("server_version", SERVER_VERSION),
        ("server_version_num", SERVER_VERSION_NUM),
        ("standard_conforming_strings", "on"),
        ("statement_timeout", "0"),
        ("idle_in_transaction_session_timeout", "0"),
        ("timezone", "UTC"),
        ("transaction_isolation", "read committed"),
        ("transaction_read_only", "off"),
        ("max_identifier_length", "63"),
        // Postgres' preset (read-only) options with its values, which drivers read: pgjdbc's
        // getImportedKeys/getExportedKeys need `max_index_keys`.
        ("max_index_keys", "32"),
        ("max_function_args", "100"),
        ("block_size", "8192"),
        ("data_checksums", "off"),
        // Rivulet compiles no queries: asyncpg reads it before its type introspection.
        ("jit", "off"),
    ];
    let mut out: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (name, value) in SERVER_DEFAULTS.get().into_iter().flatten() {
        out.insert(name.clone(), value.clone());
    }
    out.insert("session_authorization".into(), user.to_string());
    out.insert("current_database".into(), database.to_string());
    out
}

impl Session {
    /// A session for `user` on `database` (which must exist).
    pub fn new(shared: Arc<Shared>, user: &str, database: &str) -> Result<Self, SqlError> {
        if !shared.catalog.database_exists(database) {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_DATABASE,
                format!("database \"{database}\" does not exist"),
            ));
        }
        Ok(Self {
            shared,
            database: database.to_string(),
            user: user.to_string(),
            settings: default_settings(user, database),
            tx: TxState::Idle,
            savepoints: Vec::new(),
            block_settings: Default::default(),
            reads: Arc::default(),
            ctx: None,
            catalogs: None,
            copy: None,
            pg_settings: Default::default(),
            interrupt: Interrupt::new(),
            running: false,
            notices: Notices::new(),
            cursors: BTreeMap::new(),
            drawn: Arc::default(),
        })
    }

    /// Sends a WARNING with `code` to the client, before the running statement's result.
    pub fn warning(&self, code: &str, message: String) {
        let warning = pgwire::error::ErrorInfo::new("WARNING".into(), code.into(), message);
        let _ = self.notices.tx.send(warning);
    }

    /// Sends a NOTICE to the client (`00000`), before the running statement's result.
    pub fn notice(&self, message: String) {
        let notice = pgwire::error::ErrorInfo::new("NOTICE".into(), "00000".into(), message);
        // The receiver lives as long as the session.
        let _ = self.notices.tx.send(notice);
    }

    /// Where the wire layer reads the session's NOTICEs.
    pub fn notices(&self) -> Notices {
        self.notices.clone()
    }

    /// The server catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.shared.catalog
    }

    /// The session's `TimeZone` as Arrow reads it; `None` for UTC.
    pub fn time_zone(&self) -> Option<String> {
        let setting = self.settings.get("timezone")?;
        let zone = crate::pg::time_zone::setting(setting).ok()?.zone;
        (!crate::pg::time_zone::is_utc(&zone)).then_some(zone)
    }

    /// The DataFusion context for this session's database, built on first use.
    pub fn context(&mut self) -> Result<&SessionContext, SqlError> {
        self.keep_set_config();
        if self.ctx.is_none() {
            self.ctx = Some(self.build_context()?);
        }
        let zone = self.time_zone().unwrap_or_else(|| "UTC".into());
        let ctx = self
            .ctx
            .as_ref()
            .ok_or_else(|| SqlError::internal("session context missing"))?;
        {
            let state = ctx.state_ref();
            let mut state = state.write();
            let options = state.config_mut().options_mut();
            if crate::pg::time_zone::of(options).unwrap_or("UTC") != zone {
                crate::pg::time_zone::configure(options, &zone);
            }
        }
        *self.pg_settings.write() = self.settings.clone();
        Ok(ctx)
    }

    fn build_context(&mut self) -> Result<SessionContext, SqlError> {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(&self.database, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(false)
            // `information_schema` is registered by `pg::install`, in Postgres' words.
            .with_information_schema(false);
        let options = config.options_mut();
        options.sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
        options.execution.time_zone = Some("UTC".into());
        options.sql_parser.enable_ident_normalization = true;
        crate::pg::typing::configure(options);
        let list = Arc::new(SessionCatalogs::new(
            Arc::clone(&self.shared.catalog),
            Arc::downgrade(&self.shared),
            &self.database,
            Arc::clone(&self.reads),
        ));
        self.catalogs = Some(Arc::clone(&list));
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_catalog_list(list)
            .with_runtime_env(Arc::clone(&self.shared.runtime))
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(rivulet_planner::overflow::CheckedArithmetic))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let roles = crate::pg::catalog::Roles {
            user: self.user.clone(),
        };
        crate::pg::setup_pg_catalog(&ctx, &self.database, roles)?;
        crate::pg::install(
            &ctx,
            &self.shared.catalog,
            &self.database,
            &self.user,
            &self.pg_settings,
        )?;
        crate::functions::register(&ctx, &self.user, &self.database);
        crate::sequence::register(&ctx, &self.shared.catalog, &self.database, &self.drawn);
        Ok(ctx)
    }

    /// `idle_in_transaction_session_timeout` if the session is inside a block, else `None`.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        if self.tx == TxState::Idle {
            return None;
        }
        crate::interrupt::timeout_setting(self.settings.get("idle_in_transaction_session_timeout"))
    }

    /// Cleans up after a statement that was dropped before its end (its connection task was
    /// cancelled mid-way): as after a failed statement, an open block is aborted.
    pub fn abandon_statement(&mut self) {
        self.running = false;
        self.end_statement();
        if self.tx == TxState::Open {
            self.tx = TxState::Aborted;
        }
    }

    /// Forgets the statement snapshot; the next statement reads the latest committed state.
    pub fn end_statement(&mut self) {
        self.reads.snapshot.lock().take();
        self.keep_set_config();
    }

    /// Keeps what `set_config` set, as `SET` (or `SET LOCAL`, for `is_local`) would have (a
    /// query's rows, and so its `set_config` calls, may be computed after the statement's end:
    /// taken again before the next).
    fn keep_set_config(&mut self) {
        for (name, value, local) in self.pg_settings.take_written() {
            // Outside a block, `set_config(.., true)` lasted for its statement.
            if local && self.tx == TxState::Idle {
                continue;
            }
            // A value the setting does not take is not kept (Postgres refuses it).
            if let Ok(value) = crate::exec::checked_setting(&name, value) {
                self.assign(name, Some(value), local);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_number_matches_version() {
        let (major, minor) = SERVER_VERSION.split_once('.').unwrap_or_default();
        let number = major.parse::<u32>().unwrap_or(0) * 10_000 + minor.parse::<u32>().unwrap_or(0);
        assert_eq!(SERVER_VERSION_NUM, number.to_string());
    }
}
