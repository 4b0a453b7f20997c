//! The `filesystem` source (Flink; RisingWave's `posix_fs`): newline-delimited JSON or CSV files,
//! read by the jobs that use the table, with the position in their checkpoints.
//!
//! Options (Flink's names, then RisingWave's):
//! - `path`: a file or a directory (`file://` prefix optional); `posix_fs.root`: a directory;
//! - `match_pattern` (RisingWave) / `source.path.regex-pattern`-like glob: only files whose name
//!   matches (`*` and `?` wildcards), default every file;
//! - `format` = `json` | `csv` (RisingWave: `FORMAT PLAIN ENCODE JSON | CSV`, stored as `encode`);
//! - `csv.field-delimiter` (default `,`), `csv.ignore-first-line` (default false).
//!
//! The files are read in name order. A position is a file's index and a byte offset in it, always
//! at the start of a line, so a job restarted from its checkpoint reads each line exactly once.
//! The source is bounded: once every file is read it is finished, and its watermark jumps to the
//! end of time (as Flink's bounded file source does).
//!
//! Decoding is columnar, straight into Arrow arrays (arrow-json's and arrow-csv's decoders) in
//! batches of [`BATCH_LINES`] lines; no row is ever a JSON value or a string map. When a batch does
//! not decode, its lines are decoded one by one: the ones that fail become dead letters (file,
//! byte offset, the line, the error), kept and counted by the job, and the others are read.

/// The `filesystem` sink: one part file per epoch, renamed into place after the checkpoint.
pub mod sink;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use rivulet_engine::job::graph::{ExternalBatch, ExternalReader, ExternalSource};
use rivulet_engine::operator::DeadLetter;
use rivulet_engine::{EngineError, Result as EngineResult};

use crate::ConnectorError;
use crate::format::{Encoding, RecordDecoder};

/// Lines decoded into one batch.
pub const BATCH_LINES: usize = 8192;
/// Bytes read from a file at a time.
const READ_BYTES: usize = 1 << 20;
/// Bits of a position that hold the byte offset (the file index is above them).
const OFFSET_BITS: u32 = 40;

/// A table's files and how to decode them.
#[derive(Debug, Clone)]
pub struct FileSource {
    schema: SchemaRef,
    root: PathBuf,
    /// A single file (`path` named one) rather than a directory.
    single: bool,
    pattern: Option<String>,
    /// CSV: the first line of each file is a header.
    skip_header: bool,
    decoder: RecordDecoder,
}

fn option<'a>(options: &'a BTreeMap<String, String>, names: &[&str]) -> Option<&'a String> {
    names.iter().find_map(|n| options.get(*n))
}

/// Whether `name` matches `pattern` (`*`: any run of characters, `?`: one character).
fn glob(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.split_first(), name.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob(rest, name) || name.split_first().is_some_and(|(_, n)| glob(pattern, n))
        }
        (Some((b'?', rest)), Some((_, n))) => glob(rest, n),
        (Some((p, rest)), Some((c, n))) if p == c => glob(rest, n),
        _ => false,
    }
}

impl FileSource {
    /// Reads the options of a table `WITH (connector = 'filesystem' | 'posix_fs', ...)` whose
    /// stored columns are `schema`.
    pub fn parse(
        schema: &SchemaRef,
        options: &BTreeMap<String, String>,
    ) -> Result<Self, ConnectorError> {
        let bad = |msg: String| ConnectorError::Option(msg);
        let path = option(options, &["path", "posix_fs.root"]).ok_or_else(|| {
            bad(
                "the filesystem connector needs 'path' (or posix_fs.root): a file or directory"
                    .into(),
            )
        })?;
        let path = path.strip_prefix("file://").unwrap_or(path);
        let root = PathBuf::from(path);
        let single = root.is_file();
        if !single && !root.is_dir() {
            return Err(bad(format!(
                "path \"{}\" is neither a file nor a directory",
                root.display()
            )));
        }
        // RisingWave's FORMAT PLAIN ENCODE JSON arrives as format = 'plain', encode = 'json'.
        let name = option(options, &["encode", "format"]).map(|f| f.to_lowercase());
        let encoding = match Encoding::from_options(options, "") {
            Ok(Some(e @ (Encoding::Json | Encoding::Csv { .. })))
                if matches!(name.as_deref(), Some("json" | "csv")) =>
            {
                e
            }
            Err(e) => return Err(bad(e)),
            Ok(Some(_)) => {
                return Err(bad(format!(
                    "format \"{}\" is not supported by the filesystem connector (json, csv)",
                    name.unwrap_or_default()
                )));
            }
            Ok(None) => {
                return Err(bad(
                    "the filesystem connector needs 'format' = 'json' or 'csv' \
                     (RisingWave: FORMAT PLAIN ENCODE JSON)"
                        .into(),
                ));
            }
        };
        let skip_header = match option(options, &["csv.ignore-first-line"]) {
            None => false,
            Some(v) => match v.to_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(bad(format!(
                        "invalid csv.ignore-first-line \"{v}\": true or false expected"
                    )));
                }
            },
        };
        Ok(Self {
            schema: Arc::clone(schema),
            root,
            single,
            pattern: option(options, &["match_pattern", "source.path.glob"]).cloned(),
            skip_header: skip_header && matches!(encoding, Encoding::Csv { .. }),
            decoder: RecordDecoder::new(Arc::clone(schema), encoding).map_err(bad)?,
        })
    }

    /// The files to read, in name order.
    fn files(&self) -> EngineResult<Vec<PathBuf>> {
        if self.single {
            return Ok(vec![self.root.clone()]);
        }
        let io = |e: std::io::Error| EngineError::Internal(format!("{}: {e}", self.root.display()));
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let wanted = self
                .pattern
                .as_ref()
                .is_none_or(|p| glob(p.as_bytes(), name.as_bytes()));
            if path.is_file() && wanted && !name.starts_with('.') {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }
}

fn position(file: usize, offset: u64) -> u64 {
    ((file as u64) << OFFSET_BITS) | offset
}

impl ExternalSource for FileSource {
    fn reading(&self, columns: &[usize]) -> Option<Arc<dyn ExternalSource>> {
        let decoder = self.decoder.reading(columns)?;
        Some(Arc::new(FileSource {
            decoder,
            ..self.clone()
        }))
    }

    fn open(&self, position: u64, _state: &[u8]) -> EngineResult<Box<dyn ExternalReader>> {
        let files = self.files()?;
        let file = (position >> OFFSET_BITS) as usize;
        let offset = position & ((1 << OFFSET_BITS) - 1);
        let mut reader = FileReader {
            source: self.clone(),
            files,
            file,
            offset,
            open: None,
            buf: Vec::new(),
            start: 0,
            eof: false,
            dead: Vec::new(),
        };
        reader.open_current()?;
        Ok(Box::new(reader))
    }

    fn end(&self) -> EngineResult<u64> {
        let files = self.files()?;
        let Some(last) = files.last() else {
            return Ok(0);
        };
        let len = std::fs::metadata(last)
            .map_err(|e| EngineError::Internal(format!("{}: {e}", last.display())))?
            .len();
        // One past the last byte: reached only once the source has finished (see the trait).
        Ok(position(files.len() - 1, len) + 1)
    }

    fn describe(&self) -> String {
        let format = match self.decoder.encoding() {
            Encoding::Csv { .. } => "csv",
            _ => "json",
        };
        format!("{format} files at {}", self.root.display())
    }
}

/// Reads the files line by line, [`BATCH_LINES`] at a time.
struct FileReader {
    source: FileSource,
    files: Vec<PathBuf>,
    /// The file being read, and the offset of `buf[start]` in it.
    file: usize,
    offset: u64,
    open: Option<File>,
    buf: Vec<u8>,
    start: usize,
    /// The open file has been read to its end (its last bytes may still be in `buf`).
    eof: bool,
    /// Lines that could not be decoded since the last `take_dead_letters`.
    dead: Vec<DeadLetter>,
}

impl FileReader {
    fn io(&self, e: impl std::fmt::Display) -> EngineError {
        let path = self.files.get(self.file).map(|p| p.display().to_string());
        EngineError::Internal(format!("{}: {e}", path.unwrap_or_default()))
    }

    /// Opens the current file at the current offset (skipping a CSV header at offset 0).
    fn open_current(&mut self) -> EngineResult<()> {
        self.buf.clear();
        self.start = 0;
        self.eof = false;
        self.open = None;
        let Some(path) = self.files.get(self.file).cloned() else {
            return Ok(());
        };
        let mut f = File::open(&path).map_err(|e| self.io(e))?;
        f.seek(SeekFrom::Start(self.offset))
            .map_err(|e| self.io(e))?;
        self.open = Some(f);
        if self.source.skip_header && self.offset == 0 {
            // Drop the first line: the header.
            loop {
                if let Some(nl) = memchr(b'\n', &self.buf[self.start..]) {
                    self.start += nl + 1;
                    self.offset += (nl + 1) as u64;
                    break;
                }
                if !self.fill()? {
                    self.offset += (self.buf.len() - self.start) as u64;
                    self.start = self.buf.len();
                    break;
                }
            }
        }
        Ok(())
    }

    /// Reads more of the open file into `buf`; false at its end.
    fn fill(&mut self) -> EngineResult<bool> {
        if self.eof {
            return Ok(false);
        }
        let Some(f) = self.open.as_mut() else {
            return Ok(false);
        };
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_BYTES, 0);
        let n = match f.read(&mut self.buf[old..]) {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(self.io(e));
            }
        };
        self.buf.truncate(old + n);
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// The end (exclusive, in `buf`) of the next [`BATCH_LINES`] complete lines, reading more as
    /// needed; at the end of the file, whatever is left. `None` when nothing is left.
    fn next_lines(&mut self) -> EngineResult<Option<usize>> {
        // Bytes after `start` scanned so far (`fill` may move the buffer's contents).
        let mut scanned = 0;
        let mut lines = 0;
        loop {
            while lines < BATCH_LINES {
                match memchr(b'\n', &self.buf[self.start + scanned..]) {
                    Some(nl) => {
                        scanned += nl + 1;
                        lines += 1;
                    }
                    None => break,
                }
            }
            if lines == BATCH_LINES {
                return Ok(Some(self.start + scanned));
            }
            if !self.fill()? {
                let end = self.buf.len();
                return Ok((end > self.start).then_some(end));
            }
        }
    }

    /// Decodes `bytes` (whole lines at file offset `self.offset`); when they do not all decode,
    /// decodes them line by line and keeps the lines that fail as dead letters.
    fn decode_lines(&mut self, bytes: &[u8]) -> EngineResult<Option<RecordBatch>> {
        if let Ok(batch) = self.decode(bytes) {
            return Ok(batch);
        }
        let mut good = Vec::new();
        let mut at = 0usize;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let offset = self.offset + at as u64;
            at += line.len();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match self.decode(line) {
                Ok(Some(b)) => good.push(b),
                Ok(None) => {}
                Err(e) => {
                    let raw = &line[..line.len().min(DeadLetter::MAX_RAW)];
                    self.dead.push(DeadLetter {
                        table: String::new(),
                        source: self
                            .files
                            .get(self.file)
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        position: offset,
                        raw: String::from_utf8_lossy(raw).trim_end().to_string(),
                        error: match e {
                            EngineError::Data { message, .. } => message,
                            other => other.to_string(),
                        },
                    });
                }
            }
        }
        if good.is_empty() {
            return Ok(None);
        }
        Ok(Some(datafusion::arrow::compute::concat_batches(
            &self.source.schema,
            &good,
        )?))
    }

    fn decode(&self, bytes: &[u8]) -> EngineResult<Option<RecordBatch>> {
        self.source
            .decoder
            .decode(bytes, BATCH_LINES)
            .map_err(|e| EngineError::Data {
                operator: "filesystem source".into(),
                message: format!(
                    "{} at byte {}: {e}",
                    self.files
                        .get(self.file)
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    self.offset
                ),
            })
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    memchr::memchr(needle, haystack)
}

impl ExternalReader for FileReader {
    fn next(&mut self) -> EngineResult<Option<ExternalBatch>> {
        loop {
            if self.file >= self.files.len() {
                return Ok(None);
            }
            if let Some(end) = self.next_lines()? {
                let len = end - self.start;
                let lines = self.buf[self.start..end].to_vec();
                let batch = self.decode_lines(&lines)?;
                self.start = end;
                self.offset += len as u64;
                let at = position(self.file, self.offset);
                match batch {
                    Some(rows) if rows.num_rows() > 0 => {
                        return Ok(Some(ExternalBatch {
                            rows,
                            split: 0,
                            progress: at,
                            deleted: None,
                        }));
                    }
                    _ => continue,
                }
            }
            // This file is done: on to the next one, if there is one.
            if self.file + 1 >= self.files.len() {
                return Ok(None);
            }
            self.file += 1;
            self.offset = 0;
            self.open_current()?;
        }
    }

    fn take_dead_letters(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.dead)
    }

    fn finished(&self) -> bool {
        let last = self.files.len().saturating_sub(1);
        self.file > last
            || (self.file == last && self.eof && self.start >= self.buf.len())
            || self.files.is_empty()
    }
}

/// Whether `path` (an option value) names something the filesystem connector can read.
pub fn exists(path: &str) -> bool {
    Path::new(path.strip_prefix("file://").unwrap_or(path)).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]))
    }

    fn read_all(source: &FileSource, from: u64) -> (Vec<i64>, Vec<u64>) {
        let mut reader = source.open(from, &[]).unwrap();
        let (mut values, mut positions) = (Vec::new(), Vec::new());
        while let Some(batch) = reader.next().unwrap() {
            let a = batch.rows.column(0).as_primitive::<Int64Type>();
            values.extend(a.iter().map(|v| v.unwrap_or(-1)));
            positions.push(batch.progress);
        }
        assert!(reader.finished());
        (values, positions)
    }

    #[test]
    fn json_and_csv_files_resume_at_any_position_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let n = BATCH_LINES * 2 + 17;
        let mut json = String::new();
        let mut csv = String::from("a,b\n");
        for i in 0..n {
            // Long lines: several reads and buffer compactions per batch.
            json.push_str(&format!(
                "{{\"a\": {i}, \"b\": \"x{i}{}\", \"extra\": [1]}}\n",
                "p".repeat(i % 300)
            ));
            csv.push_str(&format!("{i},\"y,{i}\"\n"));
        }
        std::fs::write(dir.path().join("1.jsonl"), &json).unwrap();
        std::fs::write(dir.path().join("2.jsonl"), "{\"a\": -5}\n\n{\"a\": -6}").unwrap();
        std::fs::write(dir.path().join("x.csv"), &csv).unwrap();
        let options = |format: &str, pattern: &str| {
            BTreeMap::from([
                (
                    "path".to_string(),
                    format!("file://{}", dir.path().display()),
                ),
                ("format".to_string(), format.to_string()),
                ("match_pattern".to_string(), pattern.to_string()),
                ("csv.ignore-first-line".to_string(), "true".to_string()),
            ])
        };
        let source = FileSource::parse(&schema(), &options("json", "*.jsonl")).unwrap();
        let (values, positions) = read_all(&source, 0);
        let mut expected: Vec<i64> = (0..n as i64).collect();
        expected.extend([-5, -6]);
        assert_eq!(values, expected);
        assert_eq!(*positions.last().unwrap() + 1, source.end().unwrap());
        // Resuming from every position reached reads exactly the rest.
        let mut before = 0;
        for &p in &positions {
            let batch_rows = values.len() - read_all(&source, p).0.len();
            assert!(batch_rows > before);
            before = batch_rows;
        }
        let source = FileSource::parse(&schema(), &options("csv", "*.csv")).unwrap();
        let (values, _) = read_all(&source, 0);
        assert_eq!(values, (0..n as i64).collect::<Vec<_>>());
        let _ = Int64Array::from(vec![0]);
    }

    #[test]
    fn malformed_lines_become_dead_letters_and_the_rest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bad.jsonl"),
            "{\"a\": 1}\n{\"a\": \n{\"a\": \"x\"}\n{\"a\": 4}\n",
        )
        .unwrap();
        let options = BTreeMap::from([
            ("path".to_string(), dir.path().display().to_string()),
            ("format".to_string(), "json".to_string()),
        ]);
        let source = FileSource::parse(&schema(), &options).unwrap();
        let mut reader = source.open(0, &[]).unwrap();
        let batch = reader.next().unwrap().unwrap().rows;
        let a = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(a.values().to_vec(), vec![1, 4]);
        let dead = reader.take_dead_letters();
        let found: Vec<(u64, &str)> = dead.iter().map(|d| (d.position, d.raw.as_str())).collect();
        assert_eq!(found, vec![(9, "{\"a\":"), (16, "{\"a\": \"x\"}")]);
        assert!(dead[0].source.ends_with("bad.jsonl"));
        assert!(reader.next().unwrap().is_none());
        assert!(
            FileSource::parse(
                &schema(),
                &BTreeMap::from([("path".to_string(), "/nonexistent".to_string())])
            )
            .is_err()
        );
    }

    #[test]
    fn glob_patterns() {
        assert!(glob(b"*.json", b"a.json"));
        assert!(glob(b"part-?.csv", b"part-1.csv"));
        assert!(!glob(b"*.json", b"a.jsonl"));
        assert!(glob(b"*", b""));
    }
}
