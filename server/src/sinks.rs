//! The sinks of jobs: a materialized view's own rows, or the connector a sink names.
//!
//! A job ends in one [`Sink`] (`rivulet_engine::sink`): the view's table for a materialized view,
//! and for a sink (`CREATE SINK`, or Flink's `INSERT INTO` a sink table) the connector its
//! options name. The options are parsed into their typed form ([`SinkOptions`]) when the sink is
//! created, where a bad one is the user's error, and again whenever its job starts.

use std::collections::BTreeMap;
use std::sync::Arc;

use rivulet_connectors::filesystem::sink::{FileSink, FileSinkOptions};
use rivulet_connectors::kafka::sink::{KafkaSink, KafkaSinkOptions, SinkFormat};
use rivulet_engine::sink::{Blackhole, Sink, ViewSink};
use rivulet_engine::table::TableStore;
use rivulet_planner::catalog::TableDef;

use crate::error::{SqlError, sqlstate};

/// The sink connectors Rivulet has.
pub const CONNECTORS: &[&str] = &["blackhole", "filesystem", "kafka", "upsert-kafka"];

/// A sink's connector and its options, parsed.
pub enum SinkOptions {
    Blackhole,
    File(FileSinkOptions),
    Kafka(KafkaSinkOptions),
}

fn option_error(e: impl std::fmt::Display) -> SqlError {
    SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, e.to_string())
}

impl SinkOptions {
    /// Parses a sink's `WITH (...)` options (keys lowercased).
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, SqlError> {
        let connector = options
            .get("connector")
            .ok_or_else(|| {
                SqlError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "a sink needs a connector: WITH (connector = 'blackhole')",
                )
            })?
            .to_lowercase();
        match connector.as_str() {
            "blackhole" => Ok(Self::Blackhole),
            "filesystem" => FileSinkOptions::parse(options)
                .map(Self::File)
                .map_err(option_error),
            "kafka" | "upsert-kafka" => KafkaSinkOptions::parse(options)
                .map(Self::Kafka)
                .map_err(option_error),
            other => Err(
                SqlError::unsupported(format!("sink connector \"{other}\"")).with_hint(format!(
                    "Supported sink connectors: {}.",
                    CONNECTORS.join(", ")
                )),
            ),
        }
    }

    /// Fails unless the sink can take what its query emits (`columns`, `append_only`): a sink
    /// that only appends refuses a query that updates or deletes rows, and key columns must be
    /// there. Checks that a Kafka sink's topic exists, and when its options name no delivery
    /// guarantee, adds the one it gets to `options`: exactly-once where the broker commits
    /// transactions, else at-least-once (may block: asks the broker).
    pub fn check(
        &self,
        name: &str,
        columns: &[String],
        append_only: bool,
        options: &mut BTreeMap<String, String>,
    ) -> Result<(), SqlError> {
        match self {
            Self::Blackhole => Ok(()),
            Self::Kafka(k) => {
                k.key_columns(columns).map_err(option_error)?;
                if k.format == SinkFormat::Plain && !append_only && !k.force_append_only {
                    return Err(SqlError::unsupported(format!(
                        "an updating query into sink \"{name}\" with FORMAT PLAIN"
                    ))
                    .with_detail("The query updates or deletes rows, and FORMAT PLAIN (Flink: 'format' = 'json' | 'csv' on 'kafka') only appends records.")
                    .with_hint("Use FORMAT UPSERT (Flink: 'upsert-kafka') or FORMAT DEBEZIUM (Flink: 'debezium-json'), or add force_append_only = 'true' to drop deletes and write updates as inserts."));
                }
                tokio::task::block_in_place(|| k.check_topic()).map_err(|e| {
                    option_error(e).with_hint(
                        "Create the topic first; Rivulet does not create topics it writes.",
                    )
                })?;
                if !k.guarantee_given {
                    let exactly_once = tokio::task::block_in_place(|| k.probe_transactions());
                    let guarantee = if exactly_once {
                        "exactly-once"
                    } else {
                        "at-least-once"
                    };
                    options.insert("sink.delivery-guarantee".into(), guarantee.into());
                }
                Ok(())
            }
            Self::File(_) if append_only => Ok(()),
            Self::File(_) => Err(SqlError::unsupported(format!(
                "an updating query into file sink \"{name}\""
            ))
            .with_detail("The filesystem connector only appends rows, and this query also updates or deletes them.")
            .with_hint("Write the query's results to a materialized view, or aggregate windows with EMIT ON WINDOW CLOSE.")),
        }
    }
}

/// The sink of view or sink `def`, whose rows are stored in `table` (a sink keeps none).
pub fn open(def: &TableDef, table: &Arc<TableStore>) -> Result<Box<dyn Sink>, SqlError> {
    let Some(view) = &def.view else {
        return Err(SqlError::internal(format!(
            "\"{}\" is not a materialized view",
            def.name
        )));
    };
    if view.sink.is_none() {
        return Ok(Box::new(ViewSink::new(Arc::clone(table), view.counted)));
    }
    match SinkOptions::parse(&def.options)? {
        SinkOptions::Blackhole => Ok(Box::new(Blackhole::new())),
        SinkOptions::File(options) => Ok(Box::new(
            FileSink::new(def.id, options, &names(def)).map_err(option_error)?,
        )),
        SinkOptions::Kafka(options) => Ok(Box::new(
            KafkaSink::new(def.id, &def.name, options, &names(def)).map_err(option_error)?,
        )),
    }
}

/// The names of a sink's columns, as its records carry them.
fn names(def: &TableDef) -> Vec<String> {
    def.columns.iter().map(|c| c.name.clone()).collect()
}
