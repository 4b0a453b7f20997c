//! Rivulet's sources and sinks: Kafka (rdkafka), the built-in generators (datagen, Nexmark), files,
//! and their record formats, each decoding straight into Arrow batches for the engine.
//!
//! A generator feeds a table: it inserts rows into the table's store in atomic commits that also
//! hold its own position, and streaming jobs read the table's change log like any other (the
//! `datagen` and `nexmark` generators). An external source (`filesystem`) is read by the jobs
//! themselves, which keep its position in their checkpoints; the table stores no rows. Kafka (#6)
//! follows. This crate depends on `engine` only and never sees the planner.

/// The `datagen` generator source.
pub mod datagen;
/// Rows out: JSON and CSV encoding for the sinks.
pub mod encode;
/// The `filesystem` source (JSON and CSV files, read by jobs directly) and sink (part files).
pub mod filesystem;
/// Record formats (JSON, CSV, raw) decoded into Arrow batches, shared by the sources.
pub mod format;
/// Generators read by each job itself (`CREATE SOURCE`).
pub mod generator;
/// The `kafka` source.
pub mod kafka;
/// The `nexmark` generator source (persons, auctions, bids).
pub mod nexmark;

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use rivulet_engine::state::{StateBatch, StateStore};
use rivulet_engine::table::TableStore;

/// Where a source keeps its position: key space `S`, by table id.
fn position_key(table: u64) -> Vec<u8> {
    let mut k = vec![b'S'];
    k.extend_from_slice(&table.to_be_bytes());
    k
}

/// Where a table's source keeps the records it could not decode: key space `S`, by table id,
/// then `x` and a sequence number.
fn dead_prefix(table: u64) -> Vec<u8> {
    let mut k = position_key(table);
    k.push(b'x');
    k
}

/// The dead letters of table `id`'s own source (a changelog Kafka table), oldest first.
pub fn dead_letters(
    store: &StateStore,
    id: u64,
) -> rivulet_engine::Result<Vec<rivulet_engine::operator::DeadLetter>> {
    let mut out = Vec::new();
    store.scan_prefix(None, &dead_prefix(id), None, |_, v| {
        out.push(
            rivulet_engine::operator::DeadLetter::decode(v).ok_or_else(|| {
                rivulet_engine::EngineError::Corrupt(format!("table {id}: dead letter"))
            })?,
        );
        Ok(std::ops::ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// Adds the removal of table `id`'s source position (and dead letters) to `batch`.
pub fn drop_state(batch: &mut StateBatch, id: u64) {
    batch.delete(position_key(id));
    batch.delete_prefix(&dead_prefix(id));
}

/// Errors of sources and sinks.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A `WITH (...)` option that is missing, unknown or has a bad value.
    #[error("{0}")]
    Option(String),
    /// The engine failed writing what the source produced.
    #[error(transparent)]
    Engine(#[from] rivulet_engine::EngineError),
    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A file could not be written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Result alias for connectors.
pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

/// A generator: the rows of positions `from..to` (events or row numbers), a pure function of them.
pub(crate) type Rows = Arc<dyn Fn(u64, u64) -> Result<RecordBatch> + Send + Sync>;

/// Runs a generator source: every 20 ms, generates the positions due at `per_second` since the
/// start (at most `batch` per commit, and no more than `total`) and inserts their rows into
/// `table` together with the new position, in one atomic commit. Resumes after the committed
/// position, so a restart neither repeats nor skips a row.
async fn generate(
    store: StateStore,
    table: Arc<TableStore>,
    per_second: f64,
    total: Option<u64>,
    batch: u64,
    rows: Rows,
) -> Result<()> {
    let key = position_key(table.id());
    let mut done = match store.get(&key)? {
        Some(b) => u64::from_le_bytes(
            b.as_slice()
                .try_into()
                .map_err(|_| ConnectorError::Option("corrupt source position".into()))?,
        ),
        None => 0,
    };
    let (started, base) = (Instant::now(), done);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if total.is_some_and(|t| done >= t) {
            return Ok(());
        }
        let due = base + (started.elapsed().as_secs_f64() * per_second) as u64;
        let due = total.map_or(due, |t| due.min(t));
        while done < due {
            let (from, to) = (done, due.min(done + batch));
            let (rows, table, key) = (Arc::clone(&rows), Arc::clone(&table), key.clone());
            tokio::task::spawn_blocking(move || -> Result<()> {
                let batch = rows(from, to)?;
                let mut extra = StateBatch::new();
                extra.put(key, to.to_le_bytes());
                table.insert_with(&[batch], extra)?;
                Ok(())
            })
            .await
            .map_err(|e| ConnectorError::Option(format!("source task: {e}")))??;
            done = to;
        }
    }
}
