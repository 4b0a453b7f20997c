//! The `filesystem` sink (Flink's connector): one part file per epoch, exactly once.
//!
//! Options: `path` (a directory, created if missing; `file://` prefix optional), `format` =
//! `json` | `csv` (RisingWave's `FORMAT PLAIN ENCODE JSON | CSV` too), `csv.field-delimiter`,
//! `json.timestamp-format.standard`. Each row is one line.
//!
//! Exactly-once by rename: the rows of epoch `e` go to the hidden file
//! `.part-<sink>-<e>.<ext>.inprogress`, synced at the barrier (pre-commit), and the checkpoint
//! records `e`. Once the epoch is in the store the file is renamed to `part-<sink>-<e>.<ext>`
//! (commit) and the directory synced. After a crash, recovery renames the recorded epoch's file
//! if it is still in progress (the crash came between checkpoint and rename) and deletes every
//! other in-progress file of the sink: those epochs were never checkpointed, and the job writes
//! their rows again. A reader that skips hidden files therefore sees every row exactly once.
//! Only rows that add (inserts, update-afters of a `force_append_only` sink) are written.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rivulet_engine::changelog::ChangeBatch;
use rivulet_engine::sink::{Sink, SinkStats};
use rivulet_engine::state::StateBatch;
use rivulet_engine::{EngineError, Result as EngineResult};

use crate::ConnectorError;
use crate::encode::{RowEncoder, RowFormat};

/// A file sink's options, parsed once.
#[derive(Debug, Clone)]
pub struct FileSinkOptions {
    pub dir: PathBuf,
    pub format: RowFormat,
    encoder: RowEncoder,
}

impl FileSinkOptions {
    /// Reads the options of a sink `WITH (connector = 'filesystem', ...)`.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, ConnectorError> {
        let bad = |m: String| ConnectorError::Option(m);
        let path = options.get("path").ok_or_else(|| {
            bad("the filesystem sink needs 'path': the directory its files go to".into())
        })?;
        let dir = PathBuf::from(path.strip_prefix("file://").unwrap_or(path));
        // RisingWave's FORMAT PLAIN ENCODE JSON arrives as format = 'plain', encode = 'json'.
        let name = options
            .get("encode")
            .or_else(|| options.get("format"))
            .map(|f| f.to_lowercase());
        let format = match name.as_deref() {
            Some("json") => RowFormat::Json,
            Some("csv") => RowFormat::Csv {
                delimiter: match options.get("csv.field-delimiter").map(|d| d.as_bytes()) {
                    None => b',',
                    Some([d]) => *d,
                    Some(_) => {
                        return Err(bad(
                            "csv.field-delimiter must be one single-byte character".into()
                        ));
                    }
                },
            },
            Some(other) => {
                return Err(bad(format!(
                    "format \"{other}\" is not supported by the filesystem sink (json, csv)"
                )));
            }
            None => {
                return Err(bad(
                    "the filesystem sink needs 'format' = 'json' or 'csv'".into()
                ));
            }
        };
        let encoder = RowEncoder::new(format.clone(), options)?;
        Ok(Self {
            dir,
            format,
            encoder,
        })
    }
}

/// Writes a job's rows into part files, one per epoch (see the module documentation).
pub struct FileSink {
    options: FileSinkOptions,
    /// Names this sink's files, so that several sinks can share a directory.
    id: u64,
    /// The epoch being written and its in-progress file.
    open: Option<(u64, BufWriter<File>)>,
    /// The epoch pre-committed and not yet renamed.
    pending: Option<u64>,
    stats: SinkStats,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> EngineError {
    EngineError::External {
        system: "filesystem sink".into(),
        message: format!("{what} \"{}\": {e}", path.display()),
    }
}

impl FileSink {
    /// The sink of job `id` into `options.dir` (created if missing); `names` name the fields of
    /// JSON rows.
    pub fn new(
        id: u64,
        mut options: FileSinkOptions,
        names: &[String],
    ) -> Result<Self, ConnectorError> {
        options.encoder = options.encoder.with_names(names);
        std::fs::create_dir_all(&options.dir).map_err(|e| {
            ConnectorError::Option(format!(
                "cannot create the sink directory \"{}\": {e}",
                options.dir.display()
            ))
        })?;
        let stats = SinkStats {
            connector: "filesystem".into(),
            target: options.dir.display().to_string(),
            guarantee: "exactly-once".into(),
            ..SinkStats::default()
        };
        Ok(Self {
            options,
            id,
            open: None,
            pending: None,
            stats,
        })
    }

    fn extension(&self) -> &'static str {
        match self.options.format {
            RowFormat::Json => "json",
            RowFormat::Csv { .. } => "csv",
        }
    }

    /// The committed file of `epoch`.
    pub fn part_path(&self, epoch: u64) -> PathBuf {
        self.options
            .dir
            .join(format!("part-{}-{epoch:020}.{}", self.id, self.extension()))
    }

    fn in_progress_prefix(&self) -> String {
        format!(".part-{}-", self.id)
    }

    fn in_progress_path(&self, epoch: u64) -> PathBuf {
        self.options.dir.join(format!(
            "{}{epoch:020}.{}.inprogress",
            self.in_progress_prefix(),
            self.extension()
        ))
    }

    /// Renames epoch `epoch`'s file into place, if it is still in progress.
    fn publish(&mut self, epoch: u64) -> EngineResult<()> {
        let from = self.in_progress_path(epoch);
        if from.exists() {
            let to = self.part_path(epoch);
            std::fs::rename(&from, &to).map_err(|e| io("cannot rename", &from, e))?;
            // The rename is durable once the directory is.
            File::open(&self.options.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("cannot sync", &self.options.dir, e))?;
        }
        self.stats.committed_epoch = epoch;
        self.stats.open = None;
        Ok(())
    }
}

impl Sink for FileSink {
    fn describe(&self) -> String {
        format!("filesystem {}", self.options.dir.display())
    }

    fn recover(&mut self, epoch: u64, recorded: Option<&[u8]>) -> EngineResult<()> {
        std::fs::create_dir_all(&self.options.dir)
            .map_err(|e| io("cannot create", &self.options.dir, e))?;
        if let Some(bytes) = recorded {
            let e = bytes
                .try_into()
                .map(u64::from_le_bytes)
                .map_err(|_| EngineError::Corrupt("file sink: recorded epoch".into()))?;
            self.publish(e)?;
        }
        // Anything else in progress was written after the checkpoint: the job writes it again.
        let prefix = self.in_progress_prefix();
        let entries = std::fs::read_dir(&self.options.dir)
            .map_err(|e| io("cannot list", &self.options.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io("cannot list", &self.options.dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".inprogress") {
                std::fs::remove_file(entry.path())
                    .map_err(|e| io("cannot remove", &entry.path(), e))?;
            }
        }
        self.stats.committed_epoch = epoch;
        Ok(())
    }

    fn write(&mut self, epoch: u64, changes: &ChangeBatch) -> EngineResult<()> {
        if self.open.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let path = self.in_progress_path(epoch);
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| io("cannot create", &path, e))?;
            self.open = Some((epoch, BufWriter::with_capacity(1 << 16, file)));
            self.stats.open = Some(epoch);
        }
        let Some((_, out)) = self.open.as_mut() else {
            return Err(EngineError::Internal("file sink: no open file".into()));
        };
        let mut written = 0u64;
        let mut bytes = 0u64;
        let ops = &changes.ops;
        self.options
            .encoder
            .encode(&changes.data, |row, line| {
                if ops.get(row).is_some_and(|op| op.is_add()) {
                    out.write_all(line).and_then(|()| out.write_all(b"\n"))?;
                    written += 1;
                    bytes += line.len() as u64 + 1;
                }
                Ok(())
            })
            .map_err(|e| EngineError::External {
                system: "filesystem sink".into(),
                message: e.to_string(),
            })?;
        self.stats.records += written;
        self.stats.bytes += bytes;
        Ok(())
    }

    fn pre_commit(&mut self, epoch: u64, _batch: &mut StateBatch) -> EngineResult<Option<Vec<u8>>> {
        let Some((e, out)) = self.open.take() else {
            return Ok(None);
        };
        if e != epoch {
            return Err(EngineError::Internal(format!(
                "file sink: epoch {e} open at the barrier of {epoch}"
            )));
        }
        let path = self.in_progress_path(epoch);
        let file = out
            .into_inner()
            .map_err(|e| io("cannot write", &path, e.into_error()))?;
        file.sync_all().map_err(|e| io("cannot sync", &path, e))?;
        self.pending = Some(epoch);
        Ok(Some(epoch.to_le_bytes().to_vec()))
    }

    fn commit(&mut self, epoch: u64) -> EngineResult<()> {
        if let Some(e) = self.pending.take() {
            self.publish(e)?;
        }
        self.stats.committed_epoch = epoch;
        Ok(())
    }

    fn external(&self) -> bool {
        true
    }

    fn stats(&self) -> SinkStats {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use super::*;

    fn sink(dir: &Path) -> FileSink {
        let options = BTreeMap::from([
            ("path".to_string(), dir.display().to_string()),
            ("format".to_string(), "json".to_string()),
        ]);
        FileSink::new(7, FileSinkOptions::parse(&options).unwrap(), &["id".into()]).unwrap()
    }

    fn rows(ids: &[i64]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids.to_vec()))]).unwrap();
        ChangeBatch::inserts(data)
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn recovery_publishes_the_recorded_epoch_and_drops_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = sink(dir.path());
        s.write(1, &rows(&[1, 2])).unwrap();
        let recorded = s.pre_commit(1, &mut StateBatch::new()).unwrap().unwrap();
        // A crash after the checkpoint of epoch 1 and before its rename, with epoch 2 written.
        s.write(2, &rows(&[3])).unwrap();
        s.pre_commit(2, &mut StateBatch::new()).unwrap();
        drop(s);
        assert!(files(dir.path()).iter().all(|f| f.ends_with(".inprogress")));
        let mut s = sink(dir.path());
        s.recover(1, Some(&recorded)).unwrap();
        let committed = files(dir.path());
        assert_eq!(committed, ["part-7-00000000000000000001.json"]);
        let text = std::fs::read_to_string(dir.path().join(&committed[0])).unwrap();
        assert_eq!(text, "{\"id\":1}\n{\"id\":2}\n");
        // Recovering again (a second crash) changes nothing: commits are idempotent.
        s.recover(1, Some(&recorded)).unwrap();
        assert_eq!(files(dir.path()), committed);
    }
}
