//! SET, RESET and SHOW of session settings, and SHOW TABLES / SHOW DATABASES.
//!
//! Settings are transactional, as in Postgres: a `SET` in a block is undone by `ROLLBACK` (and
//! `ROLLBACK TO SAVEPOINT`) and kept by `COMMIT`; a `SET LOCAL` (or `set_config(.., true)`) lasts
//! until the block ends, and outside a block only warns (`25P01`).
//!
//! Settings are kept per session as text. Unknown names are accepted and remembered, because
//! clients and test suites set things Rivulet has no use for (`extra_float_digits`,
//! `RW_IMPLICIT_FLUSH`, `streaming_parallelism`); `SHOW` of a name never set is `42704`, as in Postgres.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::sqlparser::ast::{
    ContextModifier, Expr, Ident, ObjectName, Reset, Set, Value,
};

use super::Outcome;
use crate::error::{SqlError, sqlstate};
use crate::session::{Session, TxState};

/// The settings of an open block: as they were at `BEGIN` (what `ROLLBACK` goes back to), and
/// for each setting a `SET LOCAL` changed, what it goes back to when the block ends.
#[derive(Debug, Clone, Default)]
pub struct BlockSettings {
    before: BTreeMap<String, String>,
    local: BTreeMap<String, Option<String>>,
}

impl BlockSettings {
    /// The settings as they were at `BEGIN`.
    pub fn before(&self) -> &BTreeMap<String, String> {
        &self.before
    }
}

impl Session {
    /// Sets (or with `None`, removes) setting `name`; `local`: until the block ends.
    pub fn assign(&mut self, name: String, value: Option<String>, local: bool) {
        if local {
            if self.tx == TxState::Idle {
                self.warning(
                    sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                    "SET LOCAL can only be used in transaction blocks".into(),
                );
                return;
            }
            let now = self.settings.get(&name).cloned();
            self.block_settings.local.entry(name.clone()).or_insert(now);
        } else {
            self.block_settings.local.remove(&name);
        }
        match value {
            Some(v) => self.settings.insert(name, v),
            None => self.settings.remove(&name),
        };
    }

    /// `BEGIN`: the settings `ROLLBACK` goes back to.
    pub(super) fn begin_settings(&mut self) {
        self.block_settings = BlockSettings {
            before: self.settings.clone(),
            local: BTreeMap::new(),
        };
    }

    /// The end of a block: committed, its `SET LOCAL`s are undone; rolled back, all its `SET`s.
    pub(super) fn end_settings(&mut self, committed: bool) {
        let block = std::mem::take(&mut self.block_settings);
        if !committed {
            self.settings = block.before;
            return;
        }
        for (name, value) in block.local {
            match value {
                Some(v) => self.settings.insert(name, v),
                None => self.settings.remove(&name),
            };
        }
    }

    /// The settings as they are now, for a savepoint.
    pub(super) fn settings_now(&self) -> BlockSettings {
        BlockSettings {
            before: self.settings.clone(),
            local: self.block_settings.local.clone(),
        }
    }

    /// `ROLLBACK TO SAVEPOINT`: the settings as they were at it.
    pub(super) fn restore_settings(&mut self, at: &BlockSettings) {
        self.settings = at.before.clone();
        self.block_settings.local = at.local.clone();
    }

    pub(super) fn set(&mut self, set: &Set) -> Result<Outcome, SqlError> {
        match set {
            Set::SingleAssignment {
                scope,
                variable,
                values,
                ..
            } => {
                let local = matches!(scope, Some(ContextModifier::Local));
                let name = setting_name(variable);
                if values.len() == 1 && is_default(&values[0]) {
                    self.reset_one(name, local);
                    return Ok(Outcome::Command("SET".into()));
                }
                let value = values.iter().map(value_text).collect::<Vec<_>>().join(", ");
                let value = checked(&name, value)?;
                self.assign(name, Some(value), local);
            }
            Set::MultipleAssignments { assignments } => {
                for a in assignments {
                    let name = setting_name(&a.name);
                    let value = checked(&name, value_text(&a.value))?;
                    self.assign(name, Some(value), false);
                }
            }
            Set::SetTimeZone { value, local } => {
                match crate::pg::time_zone::set_time_zone(value)? {
                    Some(zone) => self.assign("timezone".into(), Some(zone.shown), *local),
                    None => self.reset_one("timezone".into(), *local),
                }
            }
            Set::SetNames { charset_name, .. } => {
                self.assign(
                    "client_encoding".into(),
                    Some(charset_name.value.clone()),
                    false,
                );
            }
            // SET ROLE, SET SESSION AUTHORIZATION, SET TRANSACTION ...: accepted, no effect: there is
            // one role and one isolation level.
            _ => {}
        }
        Ok(Outcome::Command("SET".into()))
    }

    pub(super) fn reset(&mut self, reset: &Reset) -> Result<Outcome, SqlError> {
        match reset {
            Reset::ALL => {
                let defaults = crate::session::default_settings(&self.user, &self.database);
                let names: Vec<String> = self
                    .settings
                    .keys()
                    .chain(defaults.keys())
                    .cloned()
                    .collect();
                for name in names {
                    self.assign(name.clone(), defaults.get(&name).cloned(), false);
                }
            }
            Reset::ConfigurationParameter(name) => self.reset_one(setting_name(name), false),
        }
        Ok(Outcome::Command("RESET".into()))
    }

    /// Setting `name` back to the session's default (`local`: until the block ends).
    fn reset_one(&mut self, name: String, local: bool) {
        let defaults = crate::session::default_settings(&self.user, &self.database);
        let value = defaults.get(&name).cloned();
        self.assign(name, value, local);
    }

    pub(super) fn show(&mut self, variable: &[Ident]) -> Result<Outcome, SqlError> {
        let name = variable
            .iter()
            .map(|i| i.value.to_lowercase())
            .collect::<Vec<_>>()
            .join(" ");
        let name = match name.as_str() {
            "transaction isolation level" => "transaction_isolation".to_string(),
            "time zone" => "timezone".to_string(),
            _ => name,
        };
        if name == "all" {
            let (names, values): (Vec<&str>, Vec<&str>) = self
                .settings
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .unzip();
            return Ok(text_rows(&["name", "setting"], vec![names, values]));
        }
        if name == "tables" {
            return self.show_tables();
        }
        if name == "databases" {
            return self.show_databases();
        }
        if name == "materialized views" {
            return self.show_views();
        }
        if name == "jobs" {
            return self.show_jobs();
        }
        if name == "sinks" {
            return self.show_sinks();
        }
        // `SHOW my.var` (a custom setting) arrives as the words `my` `var`.
        let dotted = variable
            .iter()
            .map(|i| i.value.to_lowercase())
            .collect::<Vec<_>>()
            .join(".");
        let found = self
            .settings
            .get_key_value(&name)
            .or_else(|| self.settings.get_key_value(&dotted));
        match found {
            Some((name, v)) => Ok(text_rows(&[name.as_str()], vec![vec![v.as_str()]])),
            None => Err(SqlError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!("unrecognized configuration parameter \"{name}\""),
            )),
        }
    }

    pub(super) fn show_tables(&mut self) -> Result<Outcome, SqlError> {
        Ok(self.relation_names(false))
    }

    /// SHOW MATERIALIZED VIEWS.
    pub(super) fn show_views(&mut self) -> Result<Outcome, SqlError> {
        Ok(self.relation_names(true))
    }

    /// The names of this database's tables, or of its materialized views.
    fn relation_names(&self, views: bool) -> Outcome {
        let names: Vec<String> = self
            .catalog()
            .tables(&self.database)
            .iter()
            .filter(|t| t.def.view.is_some() == views && t.def.plain_view.is_none())
            .map(|t| t.def.name.clone())
            .collect();
        text_rows(&["Name"], vec![names.iter().map(String::as_str).collect()])
    }

    /// SHOW JOBS: each view's job in this database, with its progress and last error.
    pub(super) fn show_jobs(&mut self) -> Result<Outcome, SqlError> {
        let mut rows: Vec<[String; 15]> = Vec::new();
        let overview = self.shared.jobs.overview(self.catalog());
        for j in overview.into_iter().filter(|j| j.database == self.database) {
            let mut row: [String; 15] = Default::default();
            row[0] = j.name;
            row[1] = j.status.to_string();
            row[12] = j.error.unwrap_or_default();
            row[14] = j
                .progress
                .map(|p| format!("{:.1}%", p * 100.0))
                .unwrap_or_default();
            if let Some((job, stats)) = j.job {
                let sources: Vec<&str> = job.sources().iter().map(|s| s.name()).collect();
                row[2] = sources.join(", ");
                row[3] = stats.parallelism.to_string();
                row[4] = stats.epoch.to_string();
                row[5] = stats.checkpoint_epoch.to_string();
                row[6] = stats
                    .checkpoint_at
                    .map(|t| {
                        chrono::DateTime::<chrono::Utc>::from(t)
                            .format("%Y-%m-%d %H:%M:%S%.3f+00")
                            .to_string()
                    })
                    .unwrap_or_default();
                row[7] = stats.rows_in.to_string();
                row[8] = stats.rows_out.to_string();
                row[9] = stats.state_bytes.to_string();
                row[10] = stats.late_rows.to_string();
                row[11] = j.restarts.to_string();
                row[13] = stats.dead_letters.to_string();
            }
            rows.push(row);
        }
        let column = |i: usize| rows.iter().map(|r| r[i].as_str()).collect::<Vec<_>>();
        Ok(text_rows(
            &[
                "Name",
                "Status",
                "Sources",
                "Parallelism",
                "Epoch",
                "Checkpoint epoch",
                "Checkpoint time",
                "Rows in",
                "Rows out",
                "State bytes",
                "Late rows",
                "Restarts",
                "Error",
                "Dead letters",
                "Progress",
            ],
            (0..15).map(column).collect(),
        ))
    }

    /// SHOW SINKS: each sink in this database, where it writes and what it has committed.
    pub(super) fn show_sinks(&mut self) -> Result<Outcome, SqlError> {
        let running = self.shared.jobs.list();
        let mut rows: Vec<[String; 13]> = Vec::new();
        for sink in self.catalog().tables(&self.database) {
            if sink.def.view.as_ref().is_none_or(|v| v.sink.is_none()) {
                continue;
            }
            let Some((job, _)) = running.get(&sink.def.id) else {
                continue;
            };
            let failure = job.failure();
            let stats = job.stats();
            let retrying = stats.sink_error.clone().or(stats.source_error.clone());
            let status = match (&failure, &retrying) {
                (Some(_), _) => "failed",
                (None, Some(_)) => "retrying",
                (None, None) => "running",
            };
            let s = stats.sink;
            rows.push([
                sink.def.name.clone(),
                s.connector,
                s.target,
                s.guarantee,
                status.to_string(),
                s.committed_epoch.to_string(),
                s.open.map(|e| e.to_string()).unwrap_or_default(),
                s.records.to_string(),
                s.bytes.to_string(),
                s.transaction.unwrap_or_default(),
                s.open_since
                    .map(|t| crate::system_tables::open_ms(t).to_string())
                    .unwrap_or_default(),
                s.retries.to_string(),
                failure.or(retrying).unwrap_or_default(),
            ]);
        }
        let column = |i: usize| rows.iter().map(|r| r[i].as_str()).collect::<Vec<_>>();
        Ok(text_rows(
            &[
                "Name",
                "Connector",
                "Target",
                "Guarantee",
                "Status",
                "Committed epoch",
                "Open epoch",
                "Records",
                "Bytes",
                "Transaction",
                "Open ms",
                "Retries",
                "Error",
            ],
            (0..13).map(column).collect(),
        ))
    }

    pub(super) fn show_databases(&mut self) -> Result<Outcome, SqlError> {
        let names = self.catalog().databases();
        Ok(text_rows(
            &["Name"],
            vec![names.iter().map(String::as_str).collect()],
        ))
    }
}

/// A result of text columns.
pub(super) fn text_rows(names: &[&str], columns: Vec<Vec<&str>>) -> Outcome {
    let schema = Arc::new(Schema::new(
        names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ));
    let arrays: Vec<ArrayRef> = columns
        .into_iter()
        .map(|c| Arc::new(StringArray::from(c)) as ArrayRef)
        .collect();
    let batches = RecordBatch::try_new(Arc::clone(&schema), arrays)
        .map(|b| vec![b])
        .unwrap_or_default();
    Outcome::Rows {
        schema,
        batches,
        tag: "SHOW",
    }
}

/// A setting's name, lowercased, without quotes: `"a"."b"`, `a.b` and Flink's `'a.b'` are one name.
fn setting_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| p.to_string().trim_matches(['"', '\'']).to_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

fn is_default(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

/// A SET value as text: strings unquoted, identifiers and numbers as written.
fn value_text(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

/// Settings Rivulet acts on, whose values must parse as Postgres' do.
const TIMEOUTS: [&str; 2] = ["statement_timeout", "idle_in_transaction_session_timeout"];

/// `value` as the setting `name` keeps it (a timeout in its canonical form, `1s` for `1000`), or
/// `22023` if `name` is a setting Rivulet acts on and `value` is not one of its values.
pub fn checked(name: &str, value: String) -> Result<String, SqlError> {
    if name == "timezone" {
        return Ok(crate::pg::time_zone::setting(&value)?.shown);
    }
    if name == super::backfill::BACKGROUND_DDL {
        return match value.to_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok("true".into()),
            "false" | "off" | "no" | "0" => Ok("false".into()),
            _ => Err(SqlError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("parameter \"{name}\" requires a Boolean value"),
            )),
        };
    }
    if name == super::query::VISIBILITY_MODE {
        let mode = value.to_lowercase();
        if mode == "checkpoint" || mode == "strict" {
            return Ok(mode);
        }
        return Err(SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("invalid value for parameter \"{name}\": \"{value}\""),
        )
        .with_hint("Available values: checkpoint, strict."));
    }
    if !TIMEOUTS.contains(&name) {
        return Ok(value);
    }
    match crate::interrupt::parse_timeout(&value) {
        Some(timeout) => Ok(crate::interrupt::format_timeout(timeout)),
        None => Err(SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("invalid value for parameter \"{name}\": \"{value}\""),
        )),
    }
}
