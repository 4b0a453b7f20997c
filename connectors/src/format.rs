//! Record formats shared by the external sources: JSON and CSV decoded columnar into Arrow
//! batches (arrow-json's and arrow-csv's decoders), and raw bytes.
//!
//! Timestamps are accepted in the usual text forms (`2024-05-01 12:00:00.123`, ISO 8601 with
//! `T` and an offset or `Z`) and as integer epoch milliseconds (JSON numbers or digit strings),
//! as Kafka producers commonly write them. A timestamp column is therefore decoded as text first
//! and converted in one pass over the column: no row is ever a JSON value or a string map.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::record_batch::RecordBatch;

/// How a record's bytes encode a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One JSON object per record.
    Json,
    /// One CSV line per record.
    Csv { delimiter: u8 },
    /// The record's bytes are the row's one column (`BYTEA`, or text checked as UTF-8): Flink's
    /// `raw` format, RisingWave's `ENCODE BYTES`.
    Raw,
}

impl Encoding {
    /// The encoding a table's options name (`format` in Flink's spelling; `encode`, from
    /// RisingWave's `FORMAT ... ENCODE ...`, when present), with `prefix` before option names
    /// (`value.` for Flink's upsert-kafka).
    pub fn from_options(
        options: &std::collections::BTreeMap<String, String>,
        prefix: &str,
    ) -> Result<Option<Encoding>, String> {
        let get = |name: &str| options.get(&format!("{prefix}{name}"));
        let name = match (get("encode"), get("format")) {
            (Some(e), _) => e.to_lowercase(),
            (None, Some(f)) => f.to_lowercase(),
            (None, None) => return Ok(None),
        };
        Ok(Some(match name.as_str() {
            "json" | "debezium-json" | "debezium_json" | "upsert-json" => Encoding::Json,
            "csv" => {
                let delimiter = match get("csv.field-delimiter").or(get("delimiter")) {
                    None => b',',
                    Some(d) if d.len() == 1 => d.as_bytes()[0],
                    Some(d) if d == "\\t" => b'\t',
                    Some(d) => {
                        return Err(format!(
                            "invalid csv.field-delimiter \"{d}\": one character expected"
                        ));
                    }
                };
                Encoding::Csv { delimiter }
            }
            "raw" | "bytes" => Encoding::Raw,
            other => return Err(format!("format \"{other}\" is not supported")),
        }))
    }
}

/// Decodes records of one encoding into rows of `schema`.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    schema: SchemaRef,
    /// `schema` with timestamp columns as text (see the module documentation).
    text_schema: SchemaRef,
    /// Whether any column is a timestamp (then `text_schema` differs).
    timestamps: bool,
    /// For JSON with nested fields: each column's path of field names (see [`RecordDecoder::new`]).
    paths: Option<Vec<Vec<String>>>,
    encoding: Encoding,
    /// JSON: the columns decoded, when not all are (see [`RecordDecoder::reading`]), and
    /// `text_schema` narrowed to them.
    read: Option<(Vec<usize>, SchemaRef)>,
    /// JSON: the decoder of the last call, kept for its buffers.
    json: SpareJson,
}

/// An Arrow JSON decoder kept between calls with its batch size: its buffers grow to a batch's
/// size once, instead of from nothing (in freshly zeroed pages) for every batch.
#[derive(Default)]
struct SpareJson(std::sync::Mutex<Option<Box<(usize, datafusion::arrow::json::reader::Decoder)>>>);

impl SpareJson {
    /// A decoder of batches of at least `rows` rows over `schema`: the kept one, or a new one.
    fn take(
        &self,
        schema: &SchemaRef,
        rows: usize,
    ) -> Result<(usize, datafusion::arrow::json::reader::Decoder), String> {
        if let Ok(mut spare) = self.0.try_lock()
            && let Some(kept) = spare.take_if(|kept| kept.0 >= rows)
        {
            return Ok(*kept);
        }
        let decoder = datafusion::arrow::json::ReaderBuilder::new(Arc::clone(schema))
            .with_batch_size(rows)
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(|e| e.to_string())?;
        Ok((rows, decoder))
    }

    /// Keeps a decoder that has flushed all it decoded.
    fn keep(&self, decoder: (usize, datafusion::arrow::json::reader::Decoder)) {
        if let Ok(mut spare) = self.0.try_lock() {
            *spare = Some(Box::new(decoder));
        }
    }
}

/// A clone keeps no decoder: decoders are per schema, and a clone may narrow it.
impl Clone for SpareJson {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for SpareJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpareJson")
    }
}

impl RecordDecoder {
    pub fn new(schema: SchemaRef, encoding: Encoding) -> Result<Self, String> {
        if encoding == Encoding::Raw {
            let ok = schema.fields().len() == 1
                && matches!(
                    schema.field(0).data_type(),
                    DataType::Binary | DataType::Utf8
                );
            if !ok {
                return Err(
                    "the raw format needs exactly one BYTEA or VARCHAR column (besides metadata \
                     columns)"
                        .into(),
                );
            }
        }
        let mut timestamps = false;
        let text_field = |name: &str, f: &Field, timestamps: &mut bool| match f.data_type() {
            DataType::Timestamp(..) => {
                *timestamps = true;
                Field::new(name, DataType::Utf8, true)
            }
            _ => Field::new(name, f.data_type().clone(), true),
        };
        // JSON: a column whose name has dots reads a nested field (`"user.id"` is `id` in the
        // object `user`), so nested objects become columns.
        let nested =
            encoding == Encoding::Json && schema.fields().iter().any(|f| f.name().contains('.'));
        let (text_schema, paths) = if nested {
            let mut tree = Node::default();
            let mut paths = Vec::new();
            for f in schema.fields() {
                let path: Vec<String> = f.name().split('.').map(str::to_string).collect();
                if path.iter().any(String::is_empty) {
                    return Err(format!(
                        "column \"{}\": an empty step in its JSON path",
                        f.name()
                    ));
                }
                let leaf = text_field(path.last().map_or("", String::as_str), f, &mut timestamps);
                tree.insert(&path, leaf).map_err(|p| {
                    format!(
                        "column \"{}\": \"{p}\" is both a value and an object",
                        f.name()
                    )
                })?;
                paths.push(path);
            }
            (Arc::new(Schema::new(tree.fields())), Some(paths))
        } else {
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .map(|f| text_field(f.name(), f, &mut timestamps))
                .collect();
            (Arc::new(Schema::new(fields)), None)
        };
        Ok(Self {
            text_schema,
            schema,
            timestamps,
            paths,
            encoding,
            read: None,
            json: SpareJson::default(),
        })
    }

    /// This decoder decoding only `columns` (and the NOT NULL ones, which every record must
    /// have) of JSON records: the other columns are NULL, and their values are skipped, neither
    /// copied nor checked against their type. `None` when it would decode every column anyway,
    /// or for CSV (positional) and nested JSON fields.
    pub fn reading(&self, columns: &[usize]) -> Option<RecordDecoder> {
        if self.encoding != Encoding::Json || self.paths.is_some() {
            return None;
        }
        let fields = self.schema.fields();
        let mut read: Vec<usize> = (0..fields.len())
            .filter(|i| columns.contains(i) || !fields[*i].is_nullable())
            .collect();
        if read.len() == fields.len() {
            return None;
        }
        if read.is_empty() {
            // A batch's row count comes from its columns: one is decoded.
            read.push(0);
        }
        let narrow = Arc::new(self.text_schema.project(&read).ok()?);
        Some(RecordDecoder {
            read: Some((read, narrow)),
            ..self.clone()
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Decodes `bytes`: whole records, each ended by a newline (JSON may also separate them by
    /// other whitespace). `rows` is an upper bound on the rows (the decoders' batch size).
    /// Any bad record fails the whole call; callers then decode record by record to find it.
    pub fn decode(&self, bytes: &[u8], rows: usize) -> Result<Option<RecordBatch>, String> {
        let err = |e: datafusion::arrow::error::ArrowError| e.to_string();
        let batch = match self.encoding {
            Encoding::Json => {
                let schema = self.read.as_ref().map_or(&self.text_schema, |(_, s)| s);
                let mut decoder = self.json.take(schema, rows + 1)?;
                decoder.1.decode(bytes).map_err(err)?;
                let batch = decoder.1.flush().map_err(err)?;
                // After an error the decoder may hold part of a record: it is dropped.
                self.json.keep(decoder);
                match (&self.read, batch) {
                    (Some((read, _)), Some(batch)) => Some(self.widen(read, &batch)?),
                    (_, batch) => batch,
                }
            }
            Encoding::Csv { delimiter } => {
                let mut decoder =
                    datafusion::arrow::csv::ReaderBuilder::new(Arc::clone(&self.text_schema))
                        .with_header(false)
                        .with_delimiter(delimiter)
                        .with_batch_size(rows + 1)
                        .build_decoder();
                let mut at = 0;
                while at < bytes.len() {
                    let n = decoder.decode(&bytes[at..]).map_err(err)?;
                    if n == 0 {
                        break;
                    }
                    at += n;
                }
                decoder.flush().map_err(err)?
            }
            Encoding::Raw => {
                return Err("raw records are decoded with decode_raw".into());
            }
        };
        let Some(batch) = batch else {
            return Ok(None);
        };
        let batch = match &self.paths {
            Some(paths) => {
                let columns = paths
                    .iter()
                    .map(|p| nested_column(&batch, p))
                    .collect::<Result<Vec<_>, String>>()?;
                let fields: Vec<Field> = columns
                    .iter()
                    .zip(self.schema.fields())
                    .map(|(c, f)| Field::new(f.name(), c.data_type().clone(), true))
                    .collect();
                RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
                    .map_err(|e| e.to_string())?
            }
            None => batch,
        };
        self.check_required(&batch)?;
        if !self.timestamps {
            return Ok(Some(batch));
        }
        let columns = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| match f.data_type() {
                DataType::Timestamp(..) => timestamps_from_text(c, f.data_type()),
                _ => Ok(Arc::clone(c)),
            })
            .collect::<Result<Vec<_>, String>>()?;
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// `batch` of the columns `read` as all of `text_schema`'s: the others NULL.
    fn widen(&self, read: &[usize], batch: &RecordBatch) -> Result<RecordBatch, String> {
        let n = batch.num_rows();
        let mut decoded = batch.columns().iter();
        let columns = self
            .text_schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| match read.contains(&i) {
                true => decoded
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("column \"{}\" was not decoded", f.name())),
                false => Ok(datafusion::arrow::array::new_null_array(f.data_type(), n)),
            })
            .collect::<Result<Vec<_>, String>>()?;
        RecordBatch::try_new(Arc::clone(&self.text_schema), columns).map_err(|e| e.to_string())
    }

    /// A NOT NULL column must be present in every record.
    fn check_required(&self, batch: &RecordBatch) -> Result<(), String> {
        for (c, f) in batch.columns().iter().zip(self.schema.fields()) {
            if !f.is_nullable() && c.null_count() > 0 {
                return Err(format!(
                    "missing value for NOT NULL column \"{}\"",
                    f.name()
                ));
            }
        }
        Ok(())
    }

    /// The one column of the raw format from each record's bytes; a record that is not UTF-8
    /// for a text column is an error, by index.
    pub fn decode_raw(&self, records: &[&[u8]]) -> (Option<RecordBatch>, Vec<(usize, String)>) {
        let mut bad = Vec::new();
        let column: ArrayRef = match self.schema.field(0).data_type() {
            DataType::Utf8 => {
                let mut good = Vec::with_capacity(records.len());
                for (i, r) in records.iter().enumerate() {
                    match std::str::from_utf8(r) {
                        Ok(s) => good.push(s),
                        Err(e) => bad.push((i, format!("not UTF-8 text: {e}"))),
                    }
                }
                Arc::new(StringArray::from(good))
            }
            _ => Arc::new(BinaryArray::from(records.to_vec())),
        };
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), vec![column]).ok();
        (batch, bad)
    }
}

/// The fields of nested JSON columns, as a tree of objects.
#[derive(Default)]
struct Node {
    /// In first-seen order: a leaf field, or an object's fields.
    children: Vec<(String, Result<Field, Node>)>,
}

impl Node {
    /// Adds the leaf at `path`; on a conflict, the step where it is.
    fn insert(&mut self, path: &[String], leaf: Field) -> Result<(), String> {
        let Some((first, rest)) = path.split_first() else {
            return Ok(());
        };
        let at = self.children.iter().position(|(n, _)| n == first);
        match (at, rest.is_empty()) {
            (None, true) => self.children.push((first.clone(), Ok(leaf))),
            (None, false) => {
                let mut node = Node::default();
                node.insert(rest, leaf)?;
                self.children.push((first.clone(), Err(node)));
            }
            (Some(i), false) => match &mut self.children[i].1 {
                Err(node) => node.insert(rest, leaf)?,
                Ok(_) => return Err(first.clone()),
            },
            (Some(_), true) => return Err(first.clone()),
        }
        Ok(())
    }

    fn fields(&self) -> Vec<Field> {
        self.children
            .iter()
            .map(|(name, c)| match c {
                Ok(f) => f.clone(),
                Err(node) => Field::new(name, DataType::Struct(node.fields().into()), true),
            })
            .collect()
    }
}

/// The column at `path` in a batch decoded with nested fields: null where any object on the
/// way is missing.
fn nested_column(batch: &RecordBatch, path: &[String]) -> Result<ArrayRef, String> {
    let missing = || format!("no field \"{}\" in the decoded record", path.join("."));
    let (first, rest) = path.split_first().ok_or_else(missing)?;
    let mut column = Arc::clone(batch.column_by_name(first).ok_or_else(missing)?);
    let mut nulls = column.logical_nulls();
    for step in rest {
        let child = Arc::clone(
            column
                .as_struct_opt()
                .and_then(|s| s.column_by_name(step))
                .ok_or_else(missing)?,
        );
        nulls = datafusion::arrow::buffer::NullBuffer::union(
            nulls.as_ref(),
            child.logical_nulls().as_ref(),
        );
        column = child;
    }
    if nulls == column.logical_nulls() {
        return Ok(column);
    }
    let data = column
        .to_data()
        .into_builder()
        .nulls(nulls)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(datafusion::arrow::array::make_array(data))
}

/// Decodes Debezium JSON change events (`{"before": {...}, "after": {...}, "op": "c"}`, alone
/// or inside Kafka Connect's `{"schema": ..., "payload": {...}}` envelope) into rows of a table
/// with a primary key: `c`, `r` (snapshot) and `u` upsert `after`; `d` deletes `before`.
#[derive(Debug, Clone)]
pub struct DebeziumDecoder {
    schema: SchemaRef,
    /// The event as arrow-json reads it: before/after as structs of the row's columns
    /// (timestamps as text), op, and the same three inside `payload`.
    event: SchemaRef,
}

impl DebeziumDecoder {
    pub fn new(schema: SchemaRef) -> Self {
        let row: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Timestamp(..) => Field::new(f.name(), DataType::Utf8, true),
                _ => f.as_ref().clone().with_nullable(true),
            })
            .collect();
        let row = DataType::Struct(row.into());
        let parts = vec![
            Field::new("before", row.clone(), true),
            Field::new("after", row, true),
            Field::new("op", DataType::Utf8, true),
        ];
        let mut event = parts.clone();
        event.push(Field::new("payload", DataType::Struct(parts.into()), true));
        Self {
            schema,
            event: Arc::new(Schema::new(event)),
        }
    }

    /// Decodes whole events, one per line: the rows (the image each event applies) and, per
    /// row, whether it deletes. Fails on any bad event (callers then go event by event).
    pub fn decode(&self, bytes: &[u8], rows: usize) -> Result<(RecordBatch, Vec<bool>), String> {
        let err = |e: datafusion::arrow::error::ArrowError| e.to_string();
        let mut decoder = datafusion::arrow::json::ReaderBuilder::new(Arc::clone(&self.event))
            .with_batch_size(rows + 1)
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(err)?;
        decoder.decode(bytes).map_err(err)?;
        let Some(events) = decoder.flush().map_err(err)? else {
            return Ok((RecordBatch::new_empty(Arc::clone(&self.schema)), Vec::new()));
        };
        let n = events.num_rows();
        let payload = events.column(3).as_struct();
        // Per event: the envelope's parts when it has one.
        let part = |i: usize, row: usize| -> ArrayRef {
            if payload.is_valid(row) {
                Arc::clone(payload.column(i))
            } else {
                Arc::clone(events.column(i))
            }
        };
        let mut take: Vec<(usize, usize)> = Vec::with_capacity(n);
        let mut deletes = Vec::with_capacity(n);
        let sources: Vec<ArrayRef> = vec![
            Arc::clone(events.column(0)),
            Arc::clone(events.column(1)),
            Arc::clone(payload.column(0)),
            Arc::clone(payload.column(1)),
        ];
        for row in 0..n {
            let op = part(2, row);
            let op = op.as_string::<i32>();
            let base = if payload.is_valid(row) { 2 } else { 0 };
            let delete = match op.is_valid(row).then(|| op.value(row)) {
                Some("c" | "r" | "u") => false,
                Some("d") => true,
                Some(other) => return Err(format!("unknown Debezium op \"{other}\"")),
                None => return Err("a Debezium event without \"op\"".into()),
            };
            let image = if delete { base } else { base + 1 };
            if sources[image].is_null(row) {
                return Err(format!(
                    "a Debezium \"{}\" event without \"{}\"",
                    op.value(row),
                    if delete { "before" } else { "after" }
                ));
            }
            take.push((image, row));
            deletes.push(delete);
        }
        let structs: Vec<&datafusion::arrow::array::StructArray> =
            sources.iter().map(|a| a.as_struct()).collect();
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for (c, f) in self.schema.fields().iter().enumerate() {
            let parts: Vec<&dyn Array> = structs.iter().map(|s| s.column(c).as_ref()).collect();
            let column = datafusion::arrow::compute::interleave(&parts, &take).map_err(err)?;
            columns.push(match f.data_type() {
                DataType::Timestamp(..) => timestamps_from_text(&column, f.data_type())?,
                _ => column,
            });
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(err)?;
        Ok((batch, deletes))
    }
}

/// Casts that fail on a bad value instead of making it null.
const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: datafusion::arrow::util::display::FormatOptions::new(),
};

/// Converts a text column of timestamps (text forms, or epoch milliseconds as digits) to
/// `to`, a timestamp type.
fn timestamps_from_text(column: &ArrayRef, to: &DataType) -> Result<ArrayRef, String> {
    let text = column.as_string::<i32>();
    let is_epoch = |s: &str| {
        let digits = s.strip_prefix('-').unwrap_or(s);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let any_epoch = text.iter().flatten().any(is_epoch);
    if !any_epoch {
        return cast_with_options(column, to, &STRICT).map_err(|e| e.to_string());
    }
    // Mixed or epoch: epoch values as milliseconds, the rest parsed as text, row by row.
    let micros_type = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
    let one = |s: &str| -> Result<i64, String> {
        let single: ArrayRef = Arc::new(StringArray::from(vec![s]));
        let t = cast_with_options(&single, &micros_type, &STRICT).map_err(|e| e.to_string())?;
        let t = t.as_primitive::<TimestampMicrosecondType>();
        if t.is_null(0) {
            return Err(format!("invalid timestamp \"{s}\""));
        }
        Ok(t.value(0))
    };
    let mut out: Vec<Option<i64>> = Vec::with_capacity(text.len());
    for v in text.iter() {
        out.push(match v {
            None => None,
            Some(s) if is_epoch(s) => Some(
                s.parse::<i64>()
                    .ok()
                    .and_then(|ms| ms.checked_mul(1000))
                    .ok_or_else(|| format!("invalid epoch milliseconds \"{s}\""))?,
            ),
            Some(s) => Some(one(s)?),
        });
    }
    let tz = match to {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let micros: ArrayRef = Arc::new(TimestampMicrosecondArray::from(out).with_timezone_opt(tz));
    cast_with_options(&micros, to, &STRICT).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Int64Type;

    #[test]
    fn json_reading_some_columns_skips_the_others() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("price", DataType::Int64, true),
            Field::new("url", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let all = RecordDecoder::new(schema, Encoding::Json).unwrap();
        assert!(all.reading(&[0, 1, 2, 3]).is_none(), "nothing to skip");
        assert!(
            all.reading(&[1, 2, 3]).is_none(),
            "NOT NULL id is always read"
        );
        let d = all.reading(&[3]).unwrap();
        // `price` is not a number here: not read, so not an error.
        let lines = b"{\"id\": 1, \"price\": \"n/a\", \"url\": \"x\", \"ts\": 1714564800123}\n\
                      {\"id\": 2, \"url\": \"y\"}\n";
        assert!(all.decode(lines, 2).is_err());
        let batch = d.decode(lines, 2).unwrap().unwrap();
        assert_eq!(batch.schema(), *all.schema());
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values().to_vec(), vec![1, 2]);
        assert_eq!(batch.column(1).null_count(), 2);
        assert_eq!(batch.column(2).null_count(), 2);
        let ts = batch.column(3).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_714_564_800_123_000);
        assert!(ts.is_null(1));
        // A NOT NULL column is still required; a record that is not JSON is still an error.
        assert!(d.decode(b"{\"url\": \"z\"}\n", 1).is_err());
        assert!(d.decode(b"{\"id\": 3,\n", 1).is_err());
        // Reading no column still counts the rows.
        let none = all.reading(&[]).unwrap_or_else(|| all.clone());
        assert_eq!(
            none.decode(b"{\"id\": 1}\n{\"id\": 2}\n", 2)
                .unwrap()
                .unwrap()
                .num_rows(),
            2
        );
    }

    #[test]
    fn json_timestamps_in_text_and_epoch_millis() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let d = RecordDecoder::new(schema, Encoding::Json).unwrap();
        let batch = d
            .decode(
                b"{\"a\": 1, \"ts\": \"2024-05-01 12:00:00.123456\"}\n\
                  {\"a\": 2, \"ts\": 1714564800123}\n\
                  {\"a\": 3, \"ts\": \"2024-05-01T12:00:00Z\"}\n{\"a\": 4}\n",
                4,
            )
            .unwrap()
            .unwrap();
        let ts = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_714_564_800_123_456);
        assert_eq!(ts.value(1), 1_714_564_800_123_000);
        assert_eq!(ts.value(2), 1_714_564_800_000_000);
        assert!(ts.is_null(3));
        assert_eq!(
            batch
                .column(0)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec(),
            vec![1, 2, 3, 4]
        );
        // A NOT NULL column missing, a value of the wrong type: errors.
        assert!(d.decode(b"{\"ts\": 5}\n", 1).is_err());
        assert!(d.decode(b"{\"a\": \"x\"}\n", 1).is_err());
        assert!(d.decode(b"{\"a\": 1, \"ts\": \"yesterday\"}\n", 1).is_err());
    }

    #[test]
    fn debezium_events_with_and_without_envelope() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let d = DebeziumDecoder::new(schema);
        let (batch, deletes) = d
            .decode(
                b"{\"before\": null, \"after\": {\"id\": 1, \"name\": \"a\"}, \"op\": \"c\"}\n\
                  {\"schema\": {}, \"payload\": {\"before\": {\"id\": 1, \"name\": \"a\"}, \
                   \"after\": {\"id\": 1, \"name\": \"b\"}, \"op\": \"u\"}}\n\
                  {\"before\": {\"id\": 1, \"name\": \"b\"}, \"after\": null, \"op\": \"d\"}\n",
                3,
            )
            .unwrap();
        assert_eq!(deletes, vec![false, false, true]);
        let names = batch.column(1).as_string::<i32>();
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            vec![Some("a"), Some("b"), Some("b")]
        );
        assert!(d.decode(b"{\"op\": \"d\", \"before\": null}\n", 1).is_err());
        assert!(
            d.decode(b"{\"op\": \"x\", \"after\": {\"id\": 1}}\n", 1)
                .is_err()
        );
    }

    #[test]
    fn nested_json_fields_become_columns() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("user.name", DataType::Utf8, true),
            Field::new("user.address.city", DataType::Utf8, true),
            Field::new(
                "user.seen",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
        ]));
        let d = RecordDecoder::new(schema, Encoding::Json).unwrap();
        let batch = d
            .decode(
                b"{\"id\": 1, \"user\": {\"name\": \"ann\", \"address\": {\"city\": \"Oslo\"}, \
                   \"seen\": 1714564800000}}\n\
                  {\"id\": 2, \"user\": null}\n{\"id\": 3, \"user\": {\"name\": \"bo\"}}\n",
                3,
            )
            .unwrap()
            .unwrap();
        assert_eq!(batch.schema().field(1).name(), "user.name");
        let names = batch.column(1).as_string::<i32>();
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            vec![Some("ann"), None, Some("bo")]
        );
        let cities = batch.column(2).as_string::<i32>();
        assert_eq!(
            cities.iter().collect::<Vec<_>>(),
            vec![Some("Oslo"), None, None]
        );
        let seen = batch.column(3).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(seen.value(0), 1_714_564_800_000_000);
        assert!(seen.is_null(1) && seen.is_null(2));
        // A path that is both a value and an object is refused.
        let bad = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("a.b", DataType::Int64, true),
        ]));
        assert!(RecordDecoder::new(bad, Encoding::Json).is_err());
    }

    #[test]
    fn raw_records() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Utf8, true)]));
        let d = RecordDecoder::new(schema, Encoding::Raw).unwrap();
        let (batch, bad) = d.decode_raw(&[b"ok", b"\xff\xfe", b"fine"]);
        assert_eq!(batch.unwrap().num_rows(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 1);
    }
}
