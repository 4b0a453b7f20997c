//! Event-time timers kept in an operator's state table: a key per timer, ordered by its time
//! (then a kind byte, then the partition key it is for), so the timers a watermark reaches are a
//! range scan per key group and survive restarts with the rest of the state. The event-time OVER
//! window emits rows with them and top-N per time window frees closed windows.

use std::ops::ControlFlow;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};

use super::{LateRow, rows_text};
use crate::changelog::ChangeBatch;
use crate::state::keys::put_i64;
use crate::state::table::{Direction, StateTable};
use crate::{EngineError, Result};

/// A timer's key: its time, its kind, the partition key.
pub(crate) fn key(time: i64, kind: u8, partition: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + partition.len());
    set_key(&mut k, time, kind, partition);
    k
}

/// Sets `k` to a timer's key (see [`key`]).
pub(crate) fn set_key(k: &mut Vec<u8>, time: i64, kind: u8, partition: &[u8]) {
    k.clear();
    put_i64(k, time);
    k.push(kind);
    k.extend_from_slice(partition);
}

/// The time, kind and partition key of a timer's key.
pub(crate) fn parse(key: &[u8]) -> Result<(i64, u8, &[u8])> {
    let corrupt = || EngineError::Corrupt("event-time timer".into());
    let time = key.get(..8).ok_or_else(corrupt)?;
    let time = u64::from_be_bytes(time.try_into().map_err(|_| corrupt())?) ^ (1 << 63);
    let kind = *key.get(8).ok_or_else(corrupt)?;
    Ok((time as i64, kind, key.get(9..).ok_or_else(corrupt)?))
}

/// A timer the watermark reached: its key group and key.
pub(crate) struct Due {
    pub kg: u16,
    pub key: Vec<u8>,
}

impl Due {
    /// Its time, kind and partition key.
    pub(crate) fn parts(&self) -> Result<(i64, u8, &[u8])> {
        parse(&self.key)
    }
}

/// The timers of `table` before `end` (exclusive), in key group then time order; they are
/// deleted from the table (a range delete per key group that had any).
pub(crate) fn take_due(table: &mut StateTable, end: i64) -> Result<Vec<Due>> {
    Ok(take_due_from(table, i64::MIN, end)?.0)
}

/// [`take_due`] of a table without timers before `from` (a caller that takes every timer due
/// and sets no timer before the watermark knows where the taken ones end): the scans start
/// there, not at the deleted timers RocksDB keeps until it compacts them. Also the earliest
/// timer left, if any.
pub(crate) fn take_due_from(
    table: &mut StateTable,
    from: i64,
    end: i64,
) -> Result<(Vec<Due>, Option<i64>)> {
    let mut start = Vec::with_capacity(8);
    put_i64(&mut start, from);
    let mut bound = Vec::with_capacity(8);
    put_i64(&mut bound, end);
    let mut due = Vec::new();
    let mut next: Option<i64> = None;
    for kg in table.key_groups() {
        let before = due.len();
        table.scan(kg, &start, None, Direction::Forward, |key, _| {
            if key >= bound.as_slice() {
                let (t, _, _) = parse(key)?;
                next = Some(next.map_or(t, |n| n.min(t)));
                return Ok(ControlFlow::Break(()));
            }
            due.push(Due {
                kg,
                key: key.to_vec(),
            });
            Ok(ControlFlow::Continue(()))
        })?;
        if due.len() > before {
            table.delete_range(kg, &start, Some(&bound));
        }
    }
    Ok((due, next))
}

/// The earliest timer of `table` (which has none before `from`), if any.
pub(crate) fn earliest(table: &StateTable, from: i64) -> Result<Option<i64>> {
    let mut start = Vec::with_capacity(8);
    put_i64(&mut start, from);
    let mut earliest: Option<i64> = None;
    for kg in table.key_groups() {
        table.scan(kg, &start, None, Direction::Forward, |key, _| {
            let (t, _, _) = parse(key)?;
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
            Ok(ControlFlow::Break(()))
        })?;
    }
    Ok(earliest)
}

/// The values of `batch`'s column `c` in microseconds since the epoch (`None` for NULL): a
/// timestamp of any unit, or a BIGINT taken as microseconds.
pub(crate) fn micros(batch: &RecordBatch, c: usize) -> Result<Vec<Option<i64>>> {
    let column = batch.column(c);
    let column = match column.data_type() {
        DataType::Int64 => std::sync::Arc::clone(column),
        DataType::Timestamp(TimeUnit::Microsecond, _) => cast(column, &DataType::Int64)?,
        DataType::Timestamp(_, tz) => cast(
            &cast(
                column,
                &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            )?,
            &DataType::Int64,
        )?,
        other => {
            return Err(EngineError::Internal(format!(
                "event time in a column of type {other}"
            )));
        }
    };
    Ok(column.as_primitive::<Int64Type>().iter().collect())
}

/// `us` microseconds as EXPLAIN says them: `10 s`, `250 ms` or `7 us`.
pub(crate) fn duration_text(us: i64) -> String {
    match us {
        _ if us % 1_000_000 == 0 => format!("{} s", us / 1_000_000),
        _ if us % 1000 == 0 => format!("{} ms", us / 1000),
        _ => format!("{us} us"),
    }
}

/// Sets aside the rows of `batch` whose event times (`times`, one per row) `late` says are
/// behind `watermark`, as late rows of the batch's first `width` columns, into `out`; returns
/// the other rows and their event times.
pub(crate) fn set_aside_late(
    batch: ChangeBatch,
    times: Vec<Option<i64>>,
    late: impl Fn(Option<i64>) -> bool,
    width: usize,
    watermark: i64,
    out: &mut Vec<LateRow>,
) -> Result<(ChangeBatch, Vec<Option<i64>>)> {
    let behind: Vec<usize> = (0..times.len()).filter(|&i| late(times[i])).collect();
    if behind.is_empty() {
        return Ok((batch, times));
    }
    let own = batch.data.project(&(0..width).collect::<Vec<_>>())?;
    for (&i, row) in behind.iter().zip(rows_text(&own, &behind)?) {
        out.push(LateRow {
            event_time: times[i].unwrap_or(i64::MIN),
            watermark,
            row,
        });
    }
    let keep: BooleanArray = times.iter().map(|&t| Some(!late(t))).collect();
    let ops = (batch.ops.iter().zip(&times))
        .filter(|(_, t)| !late(**t))
        .map(|(op, _)| *op)
        .collect();
    let times = times.into_iter().filter(|&t| !late(t)).collect();
    let batch = ChangeBatch {
        data: filter_record_batch(&batch.data, &keep)?,
        ops,
    };
    Ok((batch, times))
}
