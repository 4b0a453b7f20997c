//! Closing windows: an aggregation grouped by a window bound frees (and, with EMIT ON WINDOW
//! CLOSE, emits) each group once the watermark passes its window's end.
//!
//! A group's *close time* is its bound column's value plus the bound's offset (0 for
//! `window_end`, the window size for `window_start`). When the watermark reaches a close time,
//! the groups closing then are final: with `emit_on_close` their one and only row is emitted as an
//! `Insert`; otherwise their rows are already downstream. Either way their state is deleted, so
//! state stays bounded on an unbounded stream. An input row whose close time is not after the
//! watermark belongs to a closed window: it is not aggregated but set aside as a [`LateRow`]. A
//! NULL bound never closes.
//!
//! A new group sets a timer at its close time (see [`super::due`]); the watermark fires the
//! timers it reaches, and each reads its group (from memory, or the store) and closes it. So the
//! open windows need not be in memory, nor read at restore.
//!
//! The watermark itself is not stored: after a restart the source sends its checkpointed
//! watermark before replaying rows, so the aggregate sees the same sequence as before the crash.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;

use crate::Result;
use crate::operator::{LateRow, rows_text};

/// No close time: the bound is NULL.
pub(super) const NEVER: i64 = i64::MAX;

/// The window configuration and watermark of a windowed aggregation.
#[derive(Debug, Clone)]
pub(super) struct Window {
    /// Position of the bound column in the group key.
    pub key: usize,
    /// Microseconds from the bound's value to the window's close.
    pub offset: i64,
    pub emit_on_close: bool,
    /// Input column with each row's event time, for late rows.
    pub rowtime: Option<usize>,
    pub watermark: Option<i64>,
    pub late: Vec<LateRow>,
}

/// Values of a timestamp column in microseconds (NULL as `None`).
pub(super) fn micros(column: &ArrayRef) -> Result<Vec<Option<i64>>> {
    let column = cast(column, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    let column = column.as_primitive::<TimestampMicrosecondType>();
    Ok((0..column.len())
        .map(|i| column.is_valid(i).then(|| column.value(i)))
        .collect())
}

impl Window {
    pub fn new(key: usize, offset: i64, emit_on_close: bool, rowtime: Option<usize>) -> Self {
        Self {
            key,
            offset,
            emit_on_close,
            rowtime,
            watermark: None,
            late: Vec::new(),
        }
    }

    /// A copy with the configuration only (for another instance).
    pub fn fresh(&self) -> Self {
        Self::new(self.key, self.offset, self.emit_on_close, self.rowtime)
    }

    /// Close times of `bounds` (NULL never closes).
    pub fn close_times(&self, bounds: &ArrayRef) -> Result<Vec<i64>> {
        Ok(micros(bounds)?
            .into_iter()
            .map(|b| b.map_or(NEVER, |b| b.saturating_add(self.offset)))
            .collect())
    }

    /// Splits the rows of `data` with close times `closes` into those still open (indices) and
    /// the late ones, which are recorded.
    pub fn split_late(&mut self, data: &RecordBatch, closes: &[i64]) -> Result<Option<Vec<u32>>> {
        let Some(w) = self.watermark else {
            return Ok(None);
        };
        let late: Vec<usize> = (0..closes.len()).filter(|&i| closes[i] <= w).collect();
        if late.is_empty() {
            return Ok(None);
        }
        let times = match self.rowtime {
            Some(c) => micros(data.column(c))?,
            None => closes.iter().map(|c| Some(c - self.offset)).collect(),
        };
        for (i, row) in late.iter().zip(rows_text(data, &late)?) {
            self.late.push(LateRow {
                event_time: times[*i].unwrap_or(i64::MIN),
                watermark: w,
                row,
            });
        }
        Ok(Some(
            (0..closes.len())
                .filter(|&i| closes[i] > w)
                .map(|i| i as u32)
                .collect(),
        ))
    }

    /// Advances the watermark to `w`; false if it was there already.
    pub fn advance(&mut self, w: i64) -> bool {
        if self.watermark.is_some_and(|old| old >= w) {
            return false;
        }
        self.watermark = Some(w);
        true
    }
}
