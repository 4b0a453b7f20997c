//! General OVER windows over updatable input: `LAG`, `LEAD`, `FIRST_VALUE`, `ROW_NUMBER`,
//! `SUM(...) OVER (PARTITION BY ... ORDER BY ... ROWS BETWEEN ...)` and every other window
//! function DataFusion evaluates, maintained under inserts, updates and deletes, as RisingWave's
//! over-window operator: each input row is emitted with its window functions' values, and a row
//! whose values change (its neighbour went, a running sum moved) is retracted and emitted again.
//!
//! **Inputs.** One input, hash-exchanged on the partition columns, so a partition lives in one
//! instance and one key group. Rows may carry extra trailing columns (partition or order keys the
//! planner computed from expressions); only the first `width` columns are the row.
//!
//! **Semantics.** The functions are DataFusion's own physical window expressions, evaluated over
//! the partition's rows in `ORDER BY` order, so every function and frame (ROWS, RANGE, GROUPS)
//! means what it means in an ad-hoc query. Rows tied in the order are ordered by their stored
//! encoding (SQL leaves their order open).
//!
//! **State.** One [`StateTable`] (tag `w`) holding every row of every partition in order
//! ([`super::sorted`]'s layout). A batch's net change per partition is applied, and the
//! partition's output before and after is computed and compared: the work per change is
//! proportional to its partition's size (RisingWave limits it to the affected frames; not done
//! here). Nothing is read back at restart; a partition is read when a change reaches it.
//!
//! **Emission.** On update, retractions of a batch before its insertions. No watermark logic.

/// Flink's event-time OVER aggregates over append-only input, emitted as the watermark passes.
pub mod event_time;
/// RisingWave's per-row session windows (SESSION WITH GAP), emitted as sessions close.
pub mod session;

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::window::WindowExpr;

use super::sorted::{self, PartitionOrder, SortedRows, Table, count_of, row_of};
use super::{Operator, StateScope};
use crate::changelog::{ChangeBatch, Op};
use crate::state::StateBatch;
use crate::state::table::Direction;
use crate::{EngineError, Result};

/// What the planner decides about an OVER window.
#[derive(Debug, Clone)]
pub struct OverSpec {
    /// The partitions and their order.
    pub rows: PartitionOrder,
    /// The window functions, over the row's own columns, all with this partitioning and order.
    pub functions: Vec<Arc<dyn WindowExpr>>,
}

/// The immutable part of an operator, shared by its instances.
#[derive(Debug)]
struct Shared {
    spec: OverSpec,
    rows: SortedRows,
    schema: SchemaRef,
}

/// The OVER window operator; see the module documentation.
pub struct OverWindow {
    shared: Arc<Shared>,
    table: Table,
    groups: Vec<u16>,
}

/// A partition's rows in order: table keys and counts.
type Entries = Vec<(Vec<u8>, i64)>;

impl OverWindow {
    /// An OVER window over `spec`'s input, emitting `schema` (the row's columns, then one
    /// column per function).
    pub fn try_new(spec: OverSpec, schema: SchemaRef) -> Result<Self> {
        if schema.fields().len() != spec.rows.width + spec.functions.len() {
            return Err(EngineError::Internal(format!(
                "OVER window of rows of {} columns and {} functions with an output of {} columns",
                spec.rows.width,
                spec.functions.len(),
                schema.fields().len()
            )));
        }
        let rows = SortedRows::try_new(spec.rows.clone())?;
        Ok(Self {
            shared: Arc::new(Shared { spec, rows, schema }),
            table: Table::default(),
            groups: Vec::new(),
        })
    }

    /// The output rows of a partition whose rows are `entries`.
    fn evaluate(&self, entries: &Entries) -> Result<Option<RecordBatch>> {
        let n: i64 = entries.iter().map(|(_, c)| *c).sum();
        if n <= 0 {
            return Ok(None);
        }
        let mut decoder = self.shared.rows.row_codec.decoder(None, n as usize);
        for (key, count) in entries {
            let row = row_of(key)?;
            for _ in 0..*count {
                decoder.push(row)?;
            }
        }
        let rows = decoder.flush()?;
        let schema = &self.shared.schema;
        let mut columns = rows.columns().to_vec();
        for f in &self.shared.spec.functions {
            let values = f.evaluate(&rows).map_err(|e| EngineError::Data {
                operator: "OverWindow".into(),
                message: e.to_string(),
            })?;
            let field = schema.field(columns.len());
            columns.push(cast(&values, field.data_type())?);
        }
        Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
    }
}

/// Appends to `deletes` the rows of `old` that `new` lacks and to `inserts` those of `new` that
/// `old` lacks, as multisets.
fn diff(
    converter: &RowConverter,
    old: Option<RecordBatch>,
    new: Option<RecordBatch>,
    deletes: &mut Vec<RecordBatch>,
    inserts: &mut Vec<RecordBatch>,
) -> Result<()> {
    let rows_of = |b: &Option<RecordBatch>| -> Result<_> {
        match b {
            Some(b) => Ok(Some(converter.convert_columns(b.columns())?)),
            None => Ok(None),
        }
    };
    let (old_rows, new_rows) = (rows_of(&old)?, rows_of(&new)?);
    let sorted = |rows: &Option<datafusion::arrow::row::Rows>| {
        let mut order: Vec<u32> = (0..rows.as_ref().map_or(0, |r| r.num_rows()) as u32).collect();
        if let Some(rows) = rows {
            order.sort_unstable_by_key(|&i| rows.row(i as usize));
        }
        order
    };
    let (a, b) = (sorted(&old_rows), sorted(&new_rows));
    let (mut gone, mut came) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let ordering = match (&old_rows, &new_rows) {
            (Some(o), Some(n)) if i < a.len() && j < b.len() => {
                o.row(a[i] as usize).cmp(&n.row(b[j] as usize))
            }
            _ if i < a.len() => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ordering {
            std::cmp::Ordering::Less => {
                gone.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                came.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    let pick = |batch: &Option<RecordBatch>, rows: Vec<u32>| -> Result<Option<RecordBatch>> {
        let Some(batch) = batch.as_ref().filter(|_| !rows.is_empty()) else {
            return Ok(None);
        };
        let indices = UInt32Array::from(rows);
        let columns = (batch.columns().iter())
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
        Ok(Some(RecordBatch::try_new(batch.schema(), columns)?))
    };
    deletes.extend(pick(&old, gone)?);
    inserts.extend(pick(&new, came)?);
    Ok(())
}

/// `old` with each key's net change applied (entries whose count drops to 0 removed).
fn merged(old: &Entries, deltas: &[(&[u8], i64)]) -> Entries {
    let mut out = Vec::with_capacity(old.len() + deltas.len());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < deltas.len() {
        let (key, count) = match (old.get(i), deltas.get(j)) {
            (Some((a, n)), Some((b, d))) if a.as_slice() == *b => {
                i += 1;
                j += 1;
                (a.clone(), n + d)
            }
            (Some((a, n)), Some((b, _))) if a.as_slice() < *b => {
                i += 1;
                (a.clone(), *n)
            }
            (Some((a, n)), None) => {
                i += 1;
                (a.clone(), *n)
            }
            (_, Some((b, d))) => {
                j += 1;
                (b.to_vec(), *d)
            }
            (None, None) => break,
        };
        if count > 0 {
            out.push((key, count));
        }
    }
    out
}

impl Operator for OverWindow {
    fn name(&self) -> &'static str {
        "OverWindow"
    }

    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.shared.schema)
    }

    fn fork(&self) -> Result<Box<dyn Operator>> {
        Ok(Box::new(Self {
            shared: Arc::clone(&self.shared),
            table: Table::default(),
            groups: Vec::new(),
        }))
    }

    fn restore(&mut self, scope: &StateScope) -> Result<()> {
        self.table.open(scope, b'w', scope.cache_bytes);
        Ok(())
    }

    fn process(&mut self, _input: usize, batch: ChangeBatch) -> Result<Vec<ChangeBatch>> {
        let shared = Arc::clone(&self.shared);
        let mut groups = std::mem::take(&mut self.groups);
        let encoded = shared.rows.encode(&batch.data, &mut groups)?;
        let fields = shared.schema.fields().iter();
        let converter = RowConverter::new(
            fields
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        let (mut deletes, mut inserts) = (Vec::new(), Vec::new());
        encoded.for_each_partition(&groups, &batch.ops, |kg, group, deltas| {
            let mut old: Entries = Vec::new();
            self.table
                .get_mut()?
                .scan_prefix(kg, group, Direction::Forward, |key, value| {
                    old.push((key.to_vec(), count_of(value)?));
                    Ok(ControlFlow::Continue(()))
                })?;
            sorted::apply(self.table.get_mut()?, kg, deltas)?;
            let new = merged(&old, deltas);
            let (before, after) = (self.evaluate(&old)?, self.evaluate(&new)?);
            diff(&converter, before, after, &mut deletes, &mut inserts)
        })?;
        self.groups = groups;
        let mut out = Vec::with_capacity(2);
        for (batches, op) in [(deletes, Op::Delete), (inserts, Op::Insert)] {
            if batches.is_empty() {
                continue;
            }
            let data = concat_batches(&shared.schema, &batches)?;
            let n = data.num_rows();
            out.push(ChangeBatch {
                data,
                ops: vec![op; n],
            });
        }
        Ok(out)
    }

    fn checkpoint(
        &mut self,
        epoch: u64,
        _scope: &StateScope,
        batch: &mut StateBatch,
    ) -> Result<()> {
        self.table.checkpoint(epoch, batch)
    }

    fn state_bytes(&self) -> usize {
        self.table.bytes()
    }

    fn describe(&self) -> String {
        let spec = &self.shared.spec;
        let (partition, order) = spec.rows.describe();
        // A function's name ends with its OVER clause, which the line says once.
        let functions = (spec.functions.iter())
            .map(|f| {
                let name = f.name();
                let call = name.split(" PARTITION BY ").next().unwrap_or(name);
                let call = call.split(" ORDER BY ").next().unwrap_or(call);
                format!("{call} {}", f.get_window_frame())
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "OverWindow: [{functions}] partition by [{partition}] order by [{order}]; state: every \
             row of each partition, ordered; a change recomputes its partition"
        )
    }
}

#[cfg(test)]
mod tests;
