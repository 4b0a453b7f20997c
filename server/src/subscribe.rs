//! `SUBSCRIBE` (Materialize's statement; `COPY (SUBSCRIBE ...) TO STDOUT` too): a relation's
//! rows, then every change committed to it, pushed to the client as COPY text lines while the
//! statement runs, so psql (which prints COPY data as it arrives) and drivers' COPY readers
//! (psycopg's `cursor.copy`) see each commit within a barrier interval.
//!
//! Each line is `epoch`, `op`, then the relation's columns, tab-separated in COPY's text format
//! (`\N` for NULL). `epoch` is the relation's commit number: the sequence of its change log, one
//! per committed epoch of a view's job that changed it (one per statement for a table), the
//! same number for every line of one commit; the snapshot's lines carry the commit they show.
//! `op` is `insert`, `delete`, `update_before` or `update_after` (an update's two lines are
//! adjacent). `WITH (SINCE = n)` resumes after commit `n`, across server restarts: the change
//! log is durable.
//!
//! A subscription reads the relation's change log in RocksDB at its own pace; it never holds a
//! job back. A client that stops reading makes its socket fill, the subscription falls behind
//! the log, and once it is more than `rivulet.subscribe_max_lag` commits behind (10,000 by
//! default) it ends with `53400`. Cancel, `statement_timeout` and the client going away end it
//! as any statement. Both protocols stream it (tokio-postgres' `copy_out` uses the extended one);
//! it must be alone in its query.

use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::{Sink, SinkExt};
use pgwire::error::PgWireError;
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use rivulet_engine::EngineError;
use rivulet_engine::changelog::Op;
use rivulet_engine::state::StateStore;
use rivulet_engine::table::LogHold;

use crate::catalog::TableEntry;
use crate::error::{SqlError, sqlstate};
use crate::session::Session;

/// Change-log entries read at a time.
const READ_ENTRIES: usize = 64;

/// Commits a subscription may fall behind before it ends, unless the session sets
/// `rivulet.subscribe_max_lag`.
const DEFAULT_MAX_LAG: u64 = 10_000;

/// What a SUBSCRIBE asks for.
pub struct Request<'a> {
    pub relation: &'a str,
    pub snapshot: bool,
    pub since: Option<u64>,
}

/// Streams `request` to `client` until the statement is stopped (cancel, timeout, client gone:
/// the caller drops this future) or fails. The COPY OUT header goes first; rows follow.
pub async fn stream<C>(
    client: &mut C,
    session: &mut Session,
    request: Request<'_>,
) -> Result<u64, SqlError>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<C::Error>,
{
    let entry = session
        .catalog()
        .table(&session.database, request.relation)
        .ok_or_else(|| {
            SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{}\" does not exist", request.relation),
            )
        })?;
    let max_lag = match session.settings.get("rivulet.subscribe_max_lag") {
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            SqlError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("invalid value for parameter \"rivulet.subscribe_max_lag\": \"{v}\""),
            )
        })?,
        None => DEFAULT_MAX_LAG,
    };
    let zone = session.time_zone();
    let table = Arc::clone(&entry.store);
    // Without a counted view's count and a table's hidden display scales.
    let columns = entry.def.visible_columns();
    let mut changed = table.subscribe();
    let (mut seq, snapshot, hold) = start(session.catalog().store(), &entry, &request)?;
    if let Some(since) = request.since
        && since > table.last_seq()
    {
        return Err(SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "relation \"{}\" has no commit {since} yet (its last is {})",
                request.relation,
                table.last_seq()
            ),
        ));
    }
    let header = CopyOutResponse::new(0, (columns + 2) as i16, vec![0; columns + 2]);
    send(client, PgWireBackendMessage::CopyOutResponse(header)).await?;
    let mut lines = 0u64;
    for batch in snapshot {
        let batch = visible_columns(&batch, columns)?;
        let ops = vec![Op::Insert; batch.num_rows()];
        lines += send_rows(client, seq, &batch, &ops, zone.as_deref()).await?;
    }
    loop {
        let entries = table
            .changes_after(None, seq, READ_ENTRIES)
            .map_err(SqlError::from)?;
        if entries.is_empty() {
            // Every commit after `seq` is visible once the watch says so.
            if changed.changed().await.is_err() {
                // The relation was dropped: the subscription ends normally.
                send(client, PgWireBackendMessage::CopyDone(CopyDone::new())).await?;
                return Ok(lines);
            }
            continue;
        }
        for (at, changes) in entries {
            let data = visible_columns(&changes.data, columns)?;
            lines += send_rows(client, at, &data, &changes.ops, zone.as_deref()).await?;
            seq = at;
        }
        hold.advance(seq);
        let behind = table.last_seq().saturating_sub(seq);
        if behind > max_lag {
            return Err(SqlError::new(
                sqlstate::CONFIGURATION_LIMIT_EXCEEDED,
                format!(
                    "subscription to \"{}\" fell {behind} commits behind",
                    request.relation
                ),
            )
            .with_detail(format!(
                "A subscription may fall at most {max_lag} commits behind its relation; the \
                 client did not read fast enough."
            ))
            .with_hint(format!(
                "Resume with WITH (SINCE = {seq}), or raise rivulet.subscribe_max_lag."
            )));
        }
    }
}

/// Where the subscription starts: the commit its first change follows, the snapshot's rows (as
/// of that commit) if asked for, and the hold that keeps the change log after it from being
/// trimmed while the subscription reads it.
fn start(
    store: &StateStore,
    entry: &TableEntry,
    request: &Request<'_>,
) -> Result<(u64, Vec<RecordBatch>, LogHold), SqlError> {
    let table = &entry.store;
    if let Some(since) = request.since {
        let kept_after = table.trimmed();
        if since < kept_after {
            return Err(SqlError::from(EngineError::Trimmed {
                relation: entry.def.name.clone(),
                after: since,
                kept_after,
            })
            .with_hint("Subscribe without SINCE to start from the current rows."));
        }
        return Ok((since, Vec::new(), table.hold(since)));
    }
    // Held before the snapshot: the entries after it cannot be trimmed meanwhile.
    let hold = table.hold(table.last_seq());
    let snap = store.snapshot();
    let seq = table.seq_at(&snap).map_err(SqlError::from)?;
    hold.advance(seq);
    if !request.snapshot {
        return Ok((seq, Vec::new(), hold));
    }
    let counted = entry.def.view.as_ref().is_some_and(|v| v.counted);
    let mut batches = Vec::new();
    table
        .scan(&snap, None, 4096, |b| {
            batches.push(b);
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .map_err(|e| SqlError::internal(e.to_string()))?;
    if counted {
        batches = batches
            .iter()
            .map(crate::provider::expand_counted)
            .collect::<datafusion::error::Result<_>>()?;
    }
    Ok((seq, batches, hold))
}

/// `data` without a counted view's hidden count column or a table's display scales.
fn visible_columns(data: &RecordBatch, columns: usize) -> Result<RecordBatch, SqlError> {
    if data.num_columns() == columns {
        return Ok(data.clone());
    }
    data.project(&(0..columns).collect::<Vec<_>>())
        .map_err(arrow_error)
}

/// Rows this module built itself that Arrow refuses: a bug of ours.
fn arrow_error(e: datafusion::arrow::error::ArrowError) -> SqlError {
    SqlError::internal(format!("subscription rows: {e}"))
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Insert => "insert",
        Op::Delete => "delete",
        Op::UpdateBefore => "update_before",
        Op::UpdateAfter => "update_after",
    }
}

async fn send<C>(client: &mut C, message: PgWireBackendMessage) -> Result<(), SqlError>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<C::Error>,
{
    client.send(message).await.map_err(|e| {
        SqlError::new(
            sqlstate::CONNECTION_FAILURE,
            PgWireError::from(e).to_string(),
        )
    })
}

/// Sends `batch`'s rows as COPY text lines, each `epoch`, op, columns; flushed together.
async fn send_rows<C>(
    client: &mut C,
    epoch: u64,
    batch: &RecordBatch,
    ops: &[Op],
    zone: Option<&str>,
) -> Result<u64, SqlError>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<C::Error>,
{
    if batch.num_rows() == 0 {
        return Ok(0);
    }
    for data in lines(epoch, batch, ops, zone)? {
        client
            .feed(PgWireBackendMessage::CopyData(CopyData::new(data)))
            .await
            .map_err(|e| {
                SqlError::new(
                    sqlstate::CONNECTION_FAILURE,
                    PgWireError::from(e).to_string(),
                )
            })?;
    }
    client.flush().await.map_err(|e| {
        SqlError::new(
            sqlstate::CONNECTION_FAILURE,
            PgWireError::from(e).to_string(),
        )
    })?;
    Ok(batch.num_rows() as u64)
}

/// `batch`'s rows as COPY text lines: `epoch`, op, columns (a `timestamptz` in `zone`).
fn lines(
    epoch: u64,
    batch: &RecordBatch,
    ops: &[Op],
    zone: Option<&str>,
) -> Result<Vec<bytes::Bytes>, SqlError> {
    let batch =
        crate::text_out::postgres_text(batch.clone(), |_| true, zone).map_err(arrow_error)?;
    let options = FormatOptions::default();
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(arrow_error)?;
    let mut out = Vec::with_capacity(batch.num_rows());
    let mut line = String::new();
    for row in 0..batch.num_rows() {
        line.clear();
        let op = ops.get(row).copied().unwrap_or(Op::Insert);
        let _ = write!(line, "{epoch}\t{}", op_name(op));
        for (column, formatter) in batch.columns().iter().zip(&formatters) {
            line.push('\t');
            cell(&mut line, column, formatter, row);
        }
        line.push('\n');
        out.push(bytes::Bytes::copy_from_slice(line.as_bytes()));
    }
    Ok(out)
}

/// One value in COPY's text format: `\N` for NULL, `t`/`f` for booleans, backslash escapes.
fn cell(out: &mut String, column: &ArrayRef, formatter: &ArrayFormatter, row: usize) {
    if column.is_null(row) {
        out.push_str("\\N");
        return;
    }
    if column.data_type() == &DataType::Boolean {
        out.push(if column.as_boolean().value(row) {
            't'
        } else {
            'f'
        });
        return;
    }
    for c in formatter.value(row).to_string().chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}
