//! The source connectors of tables: one task per table declared `WITH (connector = ...)`
//! (`datagen`, `nexmark`).
//!
//! A source inserts into its table like DML does (atomically with its own position), so every
//! view on the table sees its rows through the table's change log. Sources start when their table
//! is created and when the server starts, and stop when the table is dropped. A source that fails
//! logs its error and stops; the table keeps the rows it committed.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rivulet_connectors::datagen::{self, Datagen};
use rivulet_connectors::filesystem::FileSource;
use rivulet_connectors::nexmark::{self, Nexmark};
use rivulet_engine::job::graph::ExternalSource;
use rivulet_engine::task::{TaskHandle, spawn_named};
use rivulet_planner::catalog::TableDef;

use crate::catalog::TableEntry;
use crate::error::{SqlError, sqlstate};

/// A table's connector, ready to run.
pub enum Connector {
    Datagen(Datagen),
    Nexmark(Nexmark),
}

/// Completes a new table's connector options: a Nexmark table's event time starts now, and is
/// stored so that a restarted server continues the same timeline.
pub fn prepare(def: &mut TableDef) {
    let nexmark = def
        .options
        .get("connector")
        .is_some_and(|c| c.eq_ignore_ascii_case("nexmark"));
    if nexmark && !def.options.contains_key("nexmark.base-time-ms") {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        def.options
            .insert("nexmark.base-time-ms".into(), now.to_string());
    }
}

/// The connector `def`'s options declare, if any; an unknown or misconfigured one is an error.
pub fn connector(def: &TableDef) -> Result<Option<Connector>, SqlError> {
    let Some(name) = def.options.get("connector") else {
        return Ok(None);
    };
    // Connectors produce the stored columns; the table computes its computed ones (the last).
    let schema = def.schema();
    let physical = def.columns.len().saturating_sub(def.computed.len());
    let schema = std::sync::Arc::new(
        schema
            .project(&(0..physical).collect::<Vec<_>>())
            .map_err(|e| SqlError::internal(e.to_string()))?,
    );
    match name.to_lowercase().as_str() {
        // A sink table (Flink): rows go out through INSERT INTO ... SELECT jobs, none come in.
        "blackhole" => Ok(None),
        // Read by the jobs themselves (see `external`); checked here.
        "filesystem" | "posix_fs" => FileSource::parse(&schema, &def.options)
            .map(|_| None)
            .map_err(|e| SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, e.to_string())),
        "datagen" => Datagen::parse(&schema, &def.options)
            .map(|g| Some(Connector::Datagen(g)))
            .map_err(|e| SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, e.to_string())),
        "nexmark" => Nexmark::parse(&schema, &def.options)
            .map(|g| Some(Connector::Nexmark(g)))
            .map_err(|e| SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, e.to_string())),
        other => Err(
            SqlError::unsupported(format!("connector \"{other}\"")).with_hint(
                "Supported connectors: datagen, nexmark. Kafka and file sources are planned.",
            ),
        ),
    }
}

/// The external source a job reads for table `def` (files), if it has one.
pub fn external(def: &TableDef) -> Option<Arc<dyn ExternalSource>> {
    let connector = def.options.get("connector")?.to_lowercase();
    if !matches!(connector.as_str(), "filesystem" | "posix_fs") {
        return None;
    }
    let physical = def.columns.len().saturating_sub(def.computed.len());
    let schema = Arc::new(
        def.schema()
            .project(&(0..physical).collect::<Vec<_>>())
            .ok()?,
    );
    // Checked at CREATE TABLE; a path removed since then fails the job when it opens the files.
    match FileSource::parse(&schema, &def.options) {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            tracing::warn!(table = %def.name, error = %e, "file source unavailable");
            None
        }
    }
}

/// The running sources, by table id.
#[derive(Default)]
pub struct Sources {
    running: Mutex<BTreeMap<u64, TaskHandle<()>>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources").finish_non_exhaustive()
    }
}

impl Sources {
    /// Starts `entry`'s source, if it has one.
    pub fn start(
        &self,
        store: &rivulet_engine::state::StateStore,
        entry: &TableEntry,
    ) -> Result<(), SqlError> {
        let Some(connector) = connector(&entry.def)? else {
            return Ok(());
        };
        let (store, table, name) = (
            store.clone(),
            Arc::clone(&entry.store),
            entry.def.name.clone(),
        );
        let task = spawn_named(format!("source-{name}"), async move {
            let result = match connector {
                Connector::Datagen(g) => datagen::run(g, store, table).await,
                Connector::Nexmark(g) => nexmark::run(g, store, table).await,
            };
            match result {
                Ok(()) => tracing::info!(table = %name, "source finished"),
                Err(e) => tracing::error!(table = %name, error = %e, "source failed"),
            }
        });
        self.running.lock().insert(entry.def.id, task);
        Ok(())
    }

    /// Stops table `id`'s source.
    pub fn stop(&self, id: u64) {
        self.running.lock().remove(&id);
    }
}
