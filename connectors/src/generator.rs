//! A generator read by each job itself (RisingWave's `CREATE SOURCE ... WITH (connector =
//! 'datagen' | 'nexmark')`): nothing is stored, so a generator running for days fills no disk.
//! Each job's reader produces the rows of positions `from..` at the generator's rate from the
//! moment it opens, and its position (the next row's number) goes into the job's checkpoint: a
//! restarted job continues after it, neither repeating nor skipping a row. A generator with a
//! row count is bounded: it finishes after its last row (its watermark then closes every window).

use std::time::{Duration, Instant};

use rivulet_engine::job::graph::{ExternalBatch, ExternalReader, ExternalSource};
use rivulet_engine::{EngineError, Result as EngineResult};

use crate::Rows;

/// Rows a reader returns at most at a time.
const BATCH_ROWS: u64 = 8192;

/// The longest a reader waits for its next row to be due.
const MAX_WAIT: Duration = Duration::from_millis(20);

/// A generator as a source jobs read themselves.
#[derive(Clone)]
pub struct GeneratorSource {
    connector: &'static str,
    rows: Rows,
    per_second: f64,
    total: Option<u64>,
}

impl GeneratorSource {
    pub(crate) fn new(
        connector: &'static str,
        rows: Rows,
        per_second: f64,
        total: Option<u64>,
    ) -> Self {
        Self {
            connector,
            rows,
            per_second,
            total,
        }
    }
}

impl std::fmt::Debug for GeneratorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorSource")
            .field("connector", &self.connector)
            .field("per_second", &self.per_second)
            .field("total", &self.total)
            .finish()
    }
}

impl ExternalSource for GeneratorSource {
    fn open(&self, progress: u64, _state: &[u8]) -> EngineResult<Box<dyn ExternalReader>> {
        Ok(Box::new(GeneratorReader {
            source: self.clone(),
            started: Instant::now(),
            base: progress,
            done: progress,
        }))
    }

    /// A bounded generator ends one past its last row (reached once finished); an unbounded one
    /// holds nothing yet when asked: each job generates its own rows from when it starts.
    fn end(&self) -> EngineResult<u64> {
        Ok(self.total.map_or(0, |t| t + 1))
    }

    fn describe(&self) -> String {
        match self.total {
            Some(t) => format!(
                "{} generator, {} rows/s, {t} rows",
                self.connector, self.per_second
            ),
            None => format!("{} generator, {} rows/s", self.connector, self.per_second),
        }
    }

    fn snapshot(&self) -> EngineResult<Box<dyn ExternalReader>> {
        Err(EngineError::External {
            system: format!("{} source", self.connector),
            message: "a generator source produces rows only for the streaming jobs that read \
                      it; query a materialized view over it"
                .into(),
        })
    }
}

struct GeneratorReader {
    source: GeneratorSource,
    started: Instant,
    /// The position the reader opened at: rows after it come at the rate from `started`.
    base: u64,
    /// The next row's position.
    done: u64,
}

impl ExternalReader for GeneratorReader {
    fn next(&mut self) -> EngineResult<Option<ExternalBatch>> {
        let s = &self.source;
        if self.finished() {
            return Ok(None);
        }
        let elapsed = self.started.elapsed().as_secs_f64();
        let due = self.base + (elapsed * s.per_second) as u64;
        let due = s.total.map_or(due, |t| due.min(t));
        if due <= self.done {
            // Until the next row is due, briefly.
            let next_at = (self.done + 1 - self.base) as f64 / s.per_second;
            let wait = Duration::from_secs_f64((next_at - elapsed).max(0.0)).min(MAX_WAIT);
            std::thread::sleep(wait);
            return Ok(None);
        }
        let to = due.min(self.done + BATCH_ROWS);
        let rows = (s.rows)(self.done, to).map_err(|e| EngineError::External {
            system: format!("{} source", s.connector),
            message: e.to_string(),
        })?;
        self.done = to;
        Ok(Some(ExternalBatch {
            rows,
            split: 0,
            progress: to,
            deleted: None,
        }))
    }

    fn finished(&self) -> bool {
        self.source.total.is_some_and(|t| self.done >= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    fn numbers(per_second: f64, total: Option<u64>) -> GeneratorSource {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let rows: Rows = Arc::new(move |from, to| {
            Ok(RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from_iter_values(
                    from as i64..to as i64,
                ))],
            )?)
        });
        GeneratorSource::new("datagen", rows, per_second, total)
    }

    fn read_all(reader: &mut Box<dyn ExternalReader>, until: Instant) -> Vec<i64> {
        let mut out = Vec::new();
        while !reader.finished() && Instant::now() < until {
            if let Some(b) = reader.next().unwrap() {
                out.extend(b.rows.column(0).as_primitive::<Int64Type>().values().iter());
            }
        }
        out
    }

    #[test]
    fn a_reopened_reader_continues_after_its_position_at_the_rate() {
        let source = numbers(1_000_000.0, Some(30_000));
        let mut reader = source.open(0, &[]).unwrap();
        let first = reader.next().unwrap();
        let Some(first) = first else {
            // Nothing due in the first instant: the next call has some.
            let b = reader.next().unwrap().unwrap();
            assert_eq!(b.rows.column(0).as_primitive::<Int64Type>().value(0), 0);
            return;
        };
        let progress = first.progress;
        let mut again = source.open(progress, &[]).unwrap();
        let rest = read_all(&mut again, Instant::now() + Duration::from_secs(10));
        assert_eq!(rest.first().copied(), Some(progress as i64));
        assert_eq!(rest.len() as u64, 30_000 - progress);
        assert!(again.finished());
        assert_eq!(source.end().unwrap(), 30_001);
        assert!(source.snapshot().is_err());
    }

    #[test]
    fn rows_come_at_the_rate() {
        let source = numbers(2_000.0, None);
        let mut reader = source.open(0, &[]).unwrap();
        let start = Instant::now();
        let rows = read_all(&mut reader, start + Duration::from_millis(500));
        // 1,000 rows due in half a second; a slow machine reads fewer, never more.
        assert!(
            rows.len() <= 1_000 + 2,
            "{} rows in 0.5 s at 2,000/s",
            rows.len()
        );
        assert!(rows.len() >= 500, "{} rows in 0.5 s at 2,000/s", rows.len());
        assert_eq!(source.end().unwrap(), 0);
    }
}
