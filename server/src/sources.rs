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
use rivulet_connectors::kafka::{self, KafkaSource};
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
    /// A changelog Kafka table (upsert, Debezium): its rows are stored, fed by the topic.
    Kafka(KafkaSource),
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

/// Whether `def` was created by `CREATE SOURCE`: it stores no rows, each job reads its
/// connector itself.
pub fn is_source(def: &TableDef) -> bool {
    def.options
        .get(rivulet_planner::parse::SOURCE_OPTION)
        .is_some_and(|v| v == "true")
}

/// The connector `def`'s options declare, if any; an unknown or misconfigured one is an error.
/// A generator of a `CREATE SOURCE` has none: the jobs read it ([`external`]).
pub fn connector(def: &TableDef) -> Result<Option<Connector>, SqlError> {
    let Some(name) = def.options.get("connector") else {
        if is_source(def) {
            return Err(SqlError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("source \"{}\" has no connector", def.name),
            )
            .with_hint(
                "Name one: WITH (connector = 'kafka' | 'datagen' | 'nexmark' | 'filesystem', ...).",
            ));
        }
        return Ok(None);
    };
    let connector = connector_of(def, name)?;
    if !is_source(def) {
        return Ok(connector);
    }
    match connector {
        Some(Connector::Kafka(_)) => Err(SqlError::unsupported(format!(
            "a source with a changelog format (\"{}\")",
            def.name
        ))
        .with_hint("A source's records are appended; use CREATE TABLE with a PRIMARY KEY for FORMAT UPSERT or DEBEZIUM.")),
        _ => Ok(None),
    }
}

fn connector_of(def: &TableDef, name: &str) -> Result<Option<Connector>, SqlError> {
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
        "filesystem" | "posix_fs" => {
            // A Flink sink table names the directory its files will go to, which need not
            // exist yet: it is created (as Flink's filesystem sink does), and reads as empty.
            if let Some(path) = def.options.get("path") {
                let dir = std::path::Path::new(path.strip_prefix("file://").unwrap_or(path));
                if !dir.exists() {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        SqlError::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            format!("cannot create directory \"{}\": {e}", dir.display()),
                        )
                    })?;
                }
            }
            FileSource::parse(&schema, &def.options)
                .map(|_| None)
                .map_err(|e| SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, e.to_string()))
        }
        // Plain records are read by the jobs themselves (see `external`); changelog records
        // change the table's stored rows.
        "kafka" | "upsert-kafka" => {
            kafka_source(def).map(|s| s.is_changelog().then_some(Connector::Kafka(s)))
        }
        "datagen" => Datagen::parse(&schema, &def.options)
            .map(|g| Some(Connector::Datagen(g)))
            .map_err(|e| SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, e.to_string())),
        "nexmark" => Nexmark::parse(&schema, &def.options)
            .map(|g| Some(Connector::Nexmark(g)))
            .map_err(|e| SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, e.to_string())),
        other => Err(
            SqlError::unsupported(format!("connector \"{other}\"")).with_hint(
                "Supported connectors: kafka, filesystem (posix_fs), datagen, nexmark, and \
                 blackhole for sinks.",
            ),
        ),
    }
}

/// The stored columns of `def` (without the computed ones, which come last): what a connector
/// produces.
fn stored_schema(def: &TableDef) -> Result<datafusion::arrow::datatypes::SchemaRef, SqlError> {
    let physical = def.columns.len().saturating_sub(def.computed.len());
    def.schema()
        .project(&(0..physical).collect::<Vec<_>>())
        .map(Arc::new)
        .map_err(|e| SqlError::internal(e.to_string()))
}

/// The Kafka source table `def` declares; a bad option or metadata column is an error.
fn kafka_source(def: &TableDef) -> Result<KafkaSource, SqlError> {
    let invalid = |m: String| SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, m);
    let schema = stored_schema(def)?;
    let mut metadata = Vec::new();
    for (k, v) in &def.options {
        let Some(column) = k.strip_prefix(rivulet_planner::parse::METADATA_OPTION) else {
            continue;
        };
        let m = kafka::Metadata::parse(v).ok_or_else(|| {
            invalid(format!(
                "unknown metadata \"{v}\" for column \"{column}\" (partition, offset, \
                 timestamp, key, headers, topic)"
            ))
        })?;
        let i = schema.index_of(column).map_err(|_| {
            invalid(format!(
                "metadata column \"{column}\" is not a stored column of the table"
            ))
        })?;
        metadata.push((i, m));
    }
    KafkaSource::parse(&schema, &def.primary_key, &metadata, &def.options)
        .map_err(|e| invalid(e.to_string()))
}

/// Checks what only a new table's connector can be checked for: that a Kafka table's topics
/// exist (the broker is asked; an existing table whose broker is down still starts).
pub fn check_new(def: &TableDef) -> Result<(), SqlError> {
    let connector = def.options.get("connector").map(|c| c.to_lowercase());
    if matches!(connector.as_deref(), Some("kafka" | "upsert-kafka")) {
        let source = kafka_source(def)?;
        tokio::task::block_in_place(|| source.check_topics()).map_err(|e| {
            SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, e.to_string())
                .with_hint("Create the topic first; Rivulet does not create topics it reads.")
        })?;
    }
    Ok(())
}

/// Whether table `def` is fed by a source that updates and deletes rows (an upsert or
/// Debezium Kafka table): its change log is not append-only.
pub fn is_changelog(def: &TableDef) -> bool {
    let connector = def.options.get("connector").map(|c| c.to_lowercase());
    matches!(connector.as_deref(), Some("kafka" | "upsert-kafka"))
        && kafka_source(def).is_ok_and(|s| s.is_changelog())
}

/// The external source a job reads for table `def` (files, Kafka topics), if it has one.
pub fn external(def: &TableDef) -> Option<Arc<dyn ExternalSource>> {
    let connector = def.options.get("connector")?.to_lowercase();
    if is_source(def) {
        // Checked at CREATE SOURCE: a generator each job runs itself.
        match connector_of(def, &connector) {
            Ok(Some(Connector::Datagen(g))) => return Some(Arc::new(datagen::source(g))),
            Ok(Some(Connector::Nexmark(g))) => return Some(Arc::new(nexmark::source(g))),
            _ => {}
        }
    }
    if connector == "kafka" {
        return match kafka_source(def) {
            Ok(s) if s.is_changelog() => None,
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::warn!(table = %def.name, error = %e.message, "kafka source unavailable");
                None
            }
        };
    }
    if !matches!(connector.as_str(), "filesystem" | "posix_fs") {
        return None;
    }
    let schema = stored_schema(def).ok()?;
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
                Connector::Kafka(s) => kafka::ingest(s, store, table).await,
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
