//! RisingWave's subscriptions: changes pulled with a cursor, so that any driver in either
//! protocol (psycopg's `execute`, JDBC, node-postgres) can follow a relation, where `SUBSCRIBE`
//! pushes COPY data that only psql and COPY readers take.
//!
//! - `CREATE SUBSCRIPTION s FROM relation [WITH (retention = '1 day')]` (a table or materialized
//!   view; retention defaults to a day) keeps the relation's committed changes readable for that
//!   long: the change-log trimmer (`jobs/trim.rs`) keeps every entry committed after
//!   `max(created, now - retention)`, found through each entry's commit time.
//! - `DECLARE c SUBSCRIPTION CURSOR FOR s [SINCE now() | proctime() | begin() | unix_ms | FULL]`
//!   opens a cursor of the session: from the changes committed after DECLARE (the default), from
//!   the oldest the subscription holds (`begin()`), from those committed at or after a Unix
//!   millisecond within the retention, or from the relation's rows as of DECLARE and then the
//!   changes (`FULL`).
//! - `FETCH [NEXT | n] FROM c [WITH (timeout = '1s')]` returns up to `n` rows without waiting (an
//!   empty result once it is caught up), or waits up to the timeout for a first row. Each row is
//!   the relation's columns, `op` (`Insert`, `Delete`, `UpdateDelete` then `UpdateInsert` for an
//!   update: RisingWave's names) and `rw_timestamp`, the commit's Unix milliseconds (for `FULL`'s
//!   rows, the snapshot's commit).
//! - `CLOSE c` / `CLOSE ALL`; a session's cursors end with it.
//!
//! An open cursor holds the change log after what it has read ([`LogHold`]), so it never loses a
//! change while it is open; a cursor whose starting point was trimmed away fails with `55000`.
//! Dropping the relation drops its subscriptions.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rivulet_engine::EngineError;
use rivulet_engine::changelog::Op;
use rivulet_engine::table::{LogHold, TableStore};
use rivulet_planner::subscribe::CursorStart;

use crate::catalog::SubscriptionDef;
use crate::error::{SqlError, sqlstate};
use crate::exec::Outcome;
use crate::session::Session;

/// A subscription's retention when CREATE SUBSCRIPTION names none.
const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Change-log entries read at a time.
const READ_ENTRIES: usize = 64;

/// Rows per FETCH at most: a `FETCH ALL`-sized count must not hold a huge result in memory.
const MAX_FETCH_ROWS: u64 = 100_000;

/// Milliseconds since the Unix epoch, now.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Rows of one commit (or of the snapshot) not fetched yet.
struct Pending {
    /// The relation's visible columns.
    data: RecordBatch,
    ops: Vec<Op>,
    /// The commit's Unix milliseconds, if recorded.
    time: Option<i64>,
    /// Rows before this one were fetched.
    next: usize,
}

/// An open subscription cursor of a session.
pub struct Cursor {
    relation: String,
    table: Arc<TableStore>,
    /// How many leading columns of the relation's rows are its own (a counted view's hidden
    /// count follows).
    columns: usize,
    /// Rows read and not fetched yet, oldest first.
    pending: VecDeque<Pending>,
    /// The last change-log entry read.
    seq: u64,
    hold: LogHold,
    schema: SchemaRef,
}

impl Cursor {
    /// The rows FETCH returns: the relation's columns, `op`, `rw_timestamp`.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Reads the change-log entries after the last one read into `pending`; false if there
    /// were none.
    fn read(&mut self) -> Result<bool, SqlError> {
        let entries = self
            .table
            .changes_after(None, self.seq, READ_ENTRIES)
            .map_err(|e| match e {
                EngineError::Trimmed { .. } => SqlError::from(e).with_hint(
                    "The cursor fell behind its subscription's retention: declare it again.",
                ),
                e => SqlError::from(e),
            })?;
        if entries.is_empty() {
            return Ok(false);
        }
        for (seq, change) in entries {
            let time = self.table.commit_time(None, seq).map_err(SqlError::from)?;
            let data = change
                .data
                .project(&(0..self.columns).collect::<Vec<_>>())
                .map_err(|e| SqlError::internal(format!("subscription rows: {e}")))?;
            self.pending.push_back(Pending {
                data,
                ops: change.ops,
                time,
                next: 0,
            });
            self.seq = seq;
        }
        // What is in memory no longer needs the log.
        self.hold.advance(self.seq);
        Ok(true)
    }

    /// Up to `n` rows from what was read, as one batch of [`Cursor::schema`].
    fn take(&mut self, n: usize) -> Result<RecordBatch, SqlError> {
        let mut parts: Vec<RecordBatch> = Vec::new();
        let (mut ops, mut times) = (Vec::new(), Vec::new());
        while ops.len() < n {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            let count = (n - ops.len()).min(front.data.num_rows() - front.next);
            parts.push(front.data.slice(front.next, count));
            ops.extend(
                front.ops[front.next..front.next + count]
                    .iter()
                    .map(|op| match op {
                        Op::Insert => "Insert",
                        Op::Delete => "Delete",
                        Op::UpdateBefore => "UpdateDelete",
                        Op::UpdateAfter => "UpdateInsert",
                    }),
            );
            times.extend(std::iter::repeat_n(front.time, count));
            front.next += count;
            if front.next >= front.data.num_rows() {
                self.pending.pop_front();
            }
        }
        let arrow = |e: datafusion::arrow::error::ArrowError| {
            SqlError::internal(format!("subscription rows: {e}"))
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.columns + 2);
        for c in 0..self.columns {
            let arrays: Vec<&dyn datafusion::arrow::array::Array> =
                parts.iter().map(|p| p.column(c).as_ref()).collect();
            columns.push(match arrays.as_slice() {
                [] => datafusion::arrow::array::new_empty_array(self.schema.field(c).data_type()),
                arrays => concat(arrays).map_err(arrow)?,
            });
        }
        columns.push(Arc::new(StringArray::from(ops)));
        columns.push(Arc::new(Int64Array::from(times)));
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(arrow)
    }
}

/// A duration option's value (`'1 day'`, `'1D'`, `'30s'`).
fn duration_option(option: &str, value: &str) -> Result<Duration, SqlError> {
    rivulet_planner::ddl::parse_duration(value).ok_or_else(|| {
        SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("invalid value for option \"{option}\": \"{value}\""),
        )
        .with_hint("Give a duration such as '1 day', '12 h' or '30 min'.")
    })
}

impl Session {
    pub(crate) fn create_subscription(
        &mut self,
        name: &str,
        if_not_exists: bool,
        relation: &str,
        retention: Option<&str>,
    ) -> Result<Outcome, SqlError> {
        let entry = self
            .catalog()
            .table(&self.database, relation)
            .ok_or_else(|| {
                SqlError::new(
                    sqlstate::UNDEFINED_TABLE,
                    format!("relation \"{relation}\" does not exist"),
                )
            })?;
        if crate::sources::is_source(&entry.def) {
            return Err(SqlError::new(
                sqlstate::WRONG_OBJECT_TYPE,
                format!("\"{relation}\" is a source: it stores no rows or changes to subscribe to"),
            )
            .with_hint("Subscribe to a table or a materialized view that reads the source."));
        }
        let retention = match retention {
            Some(r) => duration_option("retention", r)?,
            None => DEFAULT_RETENTION,
        };
        let def = SubscriptionDef {
            name: name.to_string(),
            database: self.database.clone(),
            relation: relation.to_string(),
            relation_id: entry.def.id,
            retention_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
            created_ms: unix_ms(),
        };
        if !self.catalog().create_subscription(def, if_not_exists)? {
            self.notice(format!("subscription \"{name}\" already exists, skipping"));
        }
        Ok(Outcome::Command("CREATE SUBSCRIPTION".into()))
    }

    pub(crate) fn drop_subscription(
        &mut self,
        name: &str,
        if_exists: bool,
    ) -> Result<Outcome, SqlError> {
        if !self
            .catalog()
            .drop_subscription(&self.database, name, if_exists)?
        {
            self.notice(format!("subscription \"{name}\" does not exist, skipping"));
        }
        Ok(Outcome::Command("DROP SUBSCRIPTION".into()))
    }

    pub(crate) fn declare_cursor(
        &mut self,
        cursor: &str,
        subscription: &str,
        start: CursorStart,
    ) -> Result<Outcome, SqlError> {
        if self.cursors.contains_key(cursor) {
            return Err(SqlError::new(
                sqlstate::DUPLICATE_CURSOR,
                format!("cursor \"{cursor}\" already exists"),
            ));
        }
        let def = self
            .catalog()
            .subscription(&self.database, subscription)
            .ok_or_else(|| {
                SqlError::new(
                    sqlstate::UNDEFINED_OBJECT,
                    format!("subscription \"{subscription}\" does not exist"),
                )
            })?;
        let entry = self
            .catalog()
            .table(&self.database, &def.relation)
            .filter(|e| e.def.id == def.relation_id)
            .ok_or_else(|| {
                SqlError::new(
                    sqlstate::UNDEFINED_TABLE,
                    format!("relation \"{}\" does not exist", def.relation),
                )
            })?;
        let table = Arc::clone(&entry.store);
        let counted = entry.def.view.as_ref().is_some_and(|v| v.counted);
        let columns = entry.def.visible_columns();
        let mut fields: Vec<Field> = (table.schema().fields().iter().take(columns))
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("op", DataType::Utf8, false));
        fields.push(Field::new("rw_timestamp", DataType::Int64, true));
        // Held from what the log still has before the start is worked out: nothing after it
        // can be trimmed meanwhile. Advanced to the start below.
        let hold = table.hold(table.trimmed());
        let now = unix_ms();
        let oldest_ms = def.created_ms.max(now.saturating_sub(def.retention_ms));
        let mut pending = VecDeque::new();
        let seq = match start {
            CursorStart::Now => table.last_seq(),
            CursorStart::Begin => table
                .last_seq_before(oldest_ms)
                .map_err(SqlError::from)?
                .max(table.trimmed()),
            CursorStart::Since(ms) => {
                if ms < oldest_ms || ms > now {
                    return Err(SqlError::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!(
                            "subscription \"{subscription}\" holds the changes from {oldest_ms} \
                             to now ({now}), not from {ms}"
                        ),
                    ));
                }
                let seq = table.last_seq_before(ms).map_err(SqlError::from)?;
                if seq < table.trimmed() {
                    return Err(SqlError::from(EngineError::Trimmed {
                        relation: def.relation.clone(),
                        after: seq,
                        kept_after: table.trimmed(),
                    }));
                }
                seq
            }
            CursorStart::Full => {
                let snap = self.catalog().store().snapshot();
                let seq = table.seq_at(&snap).map_err(SqlError::from)?;
                let time = table
                    .commit_time(Some(&snap), seq)
                    .map_err(SqlError::from)?;
                let mut rows = Vec::new();
                table
                    .scan(&snap, None, 4096, |b| {
                        rows.push(b);
                        Ok(std::ops::ControlFlow::Continue(()))
                    })
                    .map_err(SqlError::from)?;
                for batch in rows {
                    let batch = match counted {
                        true => crate::provider::expand_counted(&batch)?,
                        false => batch,
                    };
                    let ops = vec![Op::Insert; batch.num_rows()];
                    pending.push_back(Pending {
                        data: batch,
                        ops,
                        time,
                        next: 0,
                    });
                }
                seq
            }
        };
        hold.advance(seq);
        self.cursors.insert(
            cursor.to_string(),
            Cursor {
                relation: def.relation,
                table,
                columns,
                pending,
                seq,
                hold,
                schema: Arc::new(Schema::new(fields)),
            },
        );
        Ok(Outcome::Command("DECLARE CURSOR".into()))
    }

    /// The open cursor `name`.
    pub(crate) fn cursor(&mut self, name: &str) -> Result<&mut Cursor, SqlError> {
        self.cursors.get_mut(name).ok_or_else(|| {
            SqlError::new(
                sqlstate::INVALID_CURSOR_NAME,
                format!("cursor \"{name}\" does not exist"),
            )
        })
    }

    pub(crate) async fn fetch(
        &mut self,
        name: &str,
        count: u64,
        timeout: Option<&str>,
    ) -> Result<Outcome, SqlError> {
        let timeout = timeout.map(|t| duration_option("timeout", t)).transpose()?;
        let n = count.min(MAX_FETCH_ROWS) as usize;
        let interrupt = self.interrupt.clone();
        let cursor = self.cursor(name)?;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut changed = cursor.table.subscribe();
        loop {
            let mut held: usize = cursor
                .pending
                .iter()
                .map(|p| p.data.num_rows() - p.next)
                .sum();
            while held < n && cursor.read()? {
                held = cursor
                    .pending
                    .iter()
                    .map(|p| p.data.num_rows() - p.next)
                    .sum();
            }
            let waiting = held == 0 && n > 0;
            let Some(deadline) = deadline.filter(|_| waiting) else {
                break;
            };
            if cursor.table.is_closed() {
                return Err(SqlError::new(
                    sqlstate::UNDEFINED_TABLE,
                    format!("relation \"{}\" was dropped", cursor.relation),
                ));
            }
            // Waits for a commit, the deadline, or the statement's cancel or timeout.
            let commit = tokio::time::timeout_at(deadline, changed.changed());
            match interrupt.run(async { Ok(commit.await) }).await? {
                Ok(Ok(())) => continue,
                // The relation is gone, or the wait timed out: an empty result.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        let batch = cursor.take(n)?;
        Ok(Outcome::Rows {
            schema: batch.schema(),
            batches: vec![batch],
            tag: "FETCH",
        })
    }

    pub(crate) fn close_cursor(&mut self, name: Option<&str>) -> Result<Outcome, SqlError> {
        match name {
            Some(name) => {
                if self.cursors.remove(name).is_none() {
                    return Err(SqlError::new(
                        sqlstate::INVALID_CURSOR_NAME,
                        format!("cursor \"{name}\" does not exist"),
                    ));
                }
            }
            None => self.cursors.clear(),
        }
        Ok(Outcome::Command("CLOSE CURSOR".into()))
    }
}
