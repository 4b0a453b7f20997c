//! Rows grouped by partition and ordered within it: the state layout that [`super::topn`] and
//! [`super::over`] share, and how a batch's changes become each partition's net changes.
//!
//! A row's table key (after the key group) is the partition key (length-prefixed [`RowCodec`]
//! bytes, so a prefix scan finds the partition), the order key ([`SortKeyEncoder`], so key order
//! is the `ORDER BY` order, ties broken by the row's bytes), the row's encoding and its length
//! (four bytes, last, so the row can be read back from the key alone). The value is the row's
//! count: identical rows are one entry.

use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{Schema, SchemaRef};

use crate::changelog::Op;
use crate::codec::RowCodec;
use crate::keygroup;
use crate::operator::StateScope;
use crate::state::StateBatch;
use crate::state::keys::SortKeyEncoder;
use crate::state::table::StateTable;
use crate::{EngineError, Result};

/// Which input columns partition the rows and which order them.
#[derive(Debug, Clone)]
pub struct PartitionOrder {
    /// The input's columns: the row's own, then any computed keys.
    pub input: SchemaRef,
    /// How many leading input columns are the row.
    pub width: usize,
    /// Partition columns of the input.
    pub partition: Vec<usize>,
    /// Order columns of the input, with their direction and NULL placement.
    pub order: Vec<(usize, SortOptions)>,
}

impl PartitionOrder {
    /// `#1` for partition columns, `#2 DESC NULLS LAST` for order columns, for EXPLAIN.
    pub(crate) fn describe(&self) -> (String, String) {
        let columns = |c: &mut dyn Iterator<Item = String>| c.collect::<Vec<_>>().join(", ");
        let order = columns(&mut self.order.iter().map(|(c, o)| describe_key(*c, o)));
        let partition = columns(&mut self.partition.iter().map(|c| format!("#{c}")));
        (partition, order)
    }
}

/// `#2 DESC NULLS LAST`: order column `column` and its options, as EXPLAIN shows them.
pub(crate) fn describe_key(column: usize, o: &SortOptions) -> String {
    let mut s = format!("#{column}");
    if o.descending {
        s.push_str(" DESC");
    }
    // Postgres' default: NULLs sort as if larger than every value.
    if o.nulls_first != o.descending {
        s.push_str(if o.nulls_first {
            " NULLS FIRST"
        } else {
            " NULLS LAST"
        });
    }
    s
}

/// Encodes rows of a [`PartitionOrder`] input into table keys.
#[derive(Debug)]
pub(crate) struct SortedRows {
    pub(crate) layout: PartitionOrder,
    group_codec: RowCodec,
    pub(crate) row_codec: RowCodec,
}

/// Where one input row's key lies in the batch's key buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    /// End of the partition key.
    group: usize,
    end: usize,
}

/// A batch's table keys, in one buffer.
pub(crate) struct Encoded {
    buf: Vec<u8>,
    spans: Vec<Span>,
}

/// The row bytes of a table key: its last four bytes are their length.
pub(crate) fn row_of(key: &[u8]) -> Result<&[u8]> {
    let corrupt = || EngineError::Corrupt("state key without its row".into());
    let (rest, len) = key.split_last_chunk::<4>().ok_or_else(corrupt)?;
    let len = u32::from_be_bytes(*len) as usize;
    rest.get(rest.len().checked_sub(len).ok_or_else(corrupt)?..)
        .ok_or_else(corrupt)
}

/// The order key of a table key whose partition key is `group` bytes long.
pub(crate) fn order_of(key: &[u8], group: usize) -> Result<&[u8]> {
    let row = row_of(key)?.len();
    key.get(group..key.len() - 4 - row)
        .ok_or_else(|| EngineError::Corrupt("state key without its order key".into()))
}

/// The count a value holds.
pub(crate) fn count_of(value: &[u8]) -> Result<i64> {
    value
        .try_into()
        .map(i64::from_le_bytes)
        .map_err(|_| EngineError::Corrupt("state value is not a count".into()))
}

/// Adds each key's net change to its stored count in key group `kg`.
pub(crate) fn apply(table: &mut StateTable, kg: u16, deltas: &[(&[u8], i64)]) -> Result<()> {
    let keys: Vec<(u16, &[u8])> = deltas.iter().map(|(k, _)| (kg, *k)).collect();
    let counts = table
        .multi_get(&keys)?
        .into_iter()
        .map(|v| v.map_or(Ok(0), count_of))
        .collect::<Result<Vec<i64>>>()?;
    for ((key, delta), count) in deltas.iter().zip(counts) {
        let count = count + delta;
        if count > 0 {
            table.put(kg, key, &count.to_le_bytes());
        } else {
            table.delete(kg, key);
        }
    }
    Ok(())
}

impl SortedRows {
    /// Validates `layout` and prepares its codecs.
    pub(crate) fn try_new(layout: PartitionOrder) -> Result<Self> {
        let input = &layout.input;
        let columns_ok = (layout.partition.iter())
            .chain(layout.order.iter().map(|(c, _)| c))
            .all(|&c| c < input.fields().len());
        if layout.width > input.fields().len() || !columns_ok {
            return Err(EngineError::Internal(format!(
                "rows of {} columns with width {}, partitioned by {:?} and ordered by {:?}",
                input.fields().len(),
                layout.width,
                layout.partition,
                layout.order,
            )));
        }
        let fields = |columns: &mut dyn Iterator<Item = usize>| {
            Arc::new(Schema::new(
                columns
                    .map(|c| input.field(c).clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            ))
        };
        let group_codec = RowCodec::try_new(fields(&mut layout.partition.iter().copied()))?;
        let row_codec = RowCodec::try_new(fields(&mut (0..layout.width)))?;
        Ok(Self {
            layout,
            group_codec,
            row_codec,
        })
    }

    /// Each row's table key, and its key group in `groups`.
    pub(crate) fn encode(&self, batch: &RecordBatch, groups: &mut Vec<u16>) -> Result<Encoded> {
        let layout = &self.layout;
        let n = batch.num_rows();
        let partition: Vec<ArrayRef> = (layout.partition.iter())
            .map(|&c| Arc::clone(batch.column(c)))
            .collect();
        keygroup::key_groups(&partition, n, groups)?;
        let order: Vec<(ArrayRef, SortOptions)> = (layout.order.iter())
            .map(|&(c, o)| (Arc::clone(batch.column(c)), o))
            .collect();
        let group_encoder = self.group_codec.encoder_for_columns(&partition)?;
        let order_encoder = SortKeyEncoder::try_new(&order)?;
        let own = batch.columns().get(..layout.width).unwrap_or_default();
        let row_encoder = self.row_codec.encoder_for_columns(own)?;
        let mut buf = Vec::with_capacity(n * 48);
        let mut spans = Vec::with_capacity(n);
        for i in 0..n {
            let start = buf.len();
            buf.extend_from_slice(&[0; 4]);
            group_encoder.encode(i, &mut buf);
            let len = (buf.len() - start - 4) as u32;
            buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
            let group = buf.len();
            order_encoder.encode(i, &mut buf);
            let row = buf.len();
            row_encoder.encode(i, &mut buf);
            let len = (buf.len() - row) as u32;
            buf.extend_from_slice(&len.to_be_bytes());
            spans.push(Span {
                start,
                group,
                end: buf.len(),
            });
        }
        Ok(Encoded { buf, spans })
    }
}

impl Encoded {
    /// The partition key of input row `row`.
    pub(crate) fn partition(&self, row: usize) -> &[u8] {
        let s = self.spans[row];
        &self.buf[s.start..s.group]
    }

    /// The table key of input row `row`.
    pub(crate) fn key(&self, row: usize) -> &[u8] {
        let s = self.spans[row];
        &self.buf[s.start..s.end]
    }

    /// Calls `f(kg, partition key, deltas)` for each partition the batch changes (in no
    /// particular order), with the net change of each of its rows (non-zero, in key order);
    /// `groups` and `ops` are the rows' key groups and ops.
    pub(crate) fn for_each_partition(
        &self,
        groups: &[u16],
        ops: &[Op],
        mut f: impl FnMut(u16, &[u8], &[(&[u8], i64)]) -> Result<()>,
    ) -> Result<()> {
        let (buf, spans) = (&self.buf, &self.spans);
        let group_of = |r: u32| {
            let s = spans[r as usize];
            (groups[r as usize], &buf[s.start..s.group])
        };
        // Partitions come out in the order of a hash of their key (any order will do), so that
        // sorting compares bytes only among rows of one partition (or of a hash collision).
        let hasher = foldhash::fast::FixedState::default();
        let hashes: Vec<u64> = (0..spans.len() as u32)
            .map(|r| hasher.hash_one(group_of(r)))
            .collect();
        let mut rows: Vec<u32> = (0..spans.len() as u32).collect();
        rows.sort_unstable_by(|&a, &b| {
            let (sa, sb) = (spans[a as usize], spans[b as usize]);
            (hashes[a as usize].cmp(&hashes[b as usize]))
                .then_with(|| group_of(a).cmp(&group_of(b)))
                .then_with(|| buf[sa.group..sa.end].cmp(&buf[sb.group..sb.end]))
        });
        let mut deltas: Vec<(&[u8], i64)> = Vec::new();
        let mut at = 0;
        while at < rows.len() {
            let (kg, group) = group_of(rows[at]);
            deltas.clear();
            while at < rows.len() && group_of(rows[at]) == (kg, group) {
                let r = rows[at] as usize;
                let key = &buf[spans[r].start..spans[r].end];
                let sign = if ops[r].is_add() { 1 } else { -1 };
                match deltas.last_mut() {
                    Some((last, n)) if *last == key => *n += sign,
                    _ => deltas.push((key, sign)),
                }
                at += 1;
            }
            deltas.retain(|(_, n)| *n != 0);
            if !deltas.is_empty() {
                f(kg, group, &deltas)?;
            }
        }
        Ok(())
    }
}

/// An operator's one state table, opened at restore.
#[derive(Debug, Default)]
pub(crate) struct Table(Option<StateTable>);

impl Table {
    /// Opens the table under `scope`'s prefix and `tag`, caching up to `cache_bytes`.
    pub(crate) fn open(&mut self, scope: &StateScope, tag: u8, cache_bytes: usize) {
        self.0 = Some(scope.table(tag, cache_bytes));
    }

    fn unopened() -> EngineError {
        EngineError::Internal("operator state used before restore".into())
    }

    pub(crate) fn get(&self) -> Result<&StateTable> {
        self.0.as_ref().ok_or_else(Self::unopened)
    }

    pub(crate) fn get_mut(&mut self) -> Result<&mut StateTable> {
        self.0.as_mut().ok_or_else(Self::unopened)
    }

    /// Hands the writes since the last checkpoint to epoch `epoch`'s write batch.
    pub(crate) fn checkpoint(&mut self, epoch: u64, batch: &mut StateBatch) -> Result<()> {
        if let Some(table) = self.0.as_mut() {
            table.checkpoint(epoch, batch);
        }
        Ok(())
    }

    /// Approximate bytes stored (see [`StateTable::bytes`]).
    pub(crate) fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |t| t.bytes() as usize)
    }
}
