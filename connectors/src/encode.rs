//! Rows out: JSON and CSV encoding of Arrow rows for the sinks, one record per row.
//!
//! JSON goes through arrow-json's encoders over the batch as one struct column, so a row becomes
//! `{"col": value, ...}` (nulls written as `null`, as Flink does) without building a JSON value;
//! timestamps in Flink's `json.timestamp-format.standard`: `SQL` (`2026-01-01 10:00:00.5`, the
//! default) or `ISO-8601` (`2026-01-01T10:00:00.5`). CSV goes through arrow-csv's writer over the
//! whole batch, and the output is cut into rows at line ends outside quotes. Either way each row is
//! written into one reused buffer: no allocation per row.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::arrow::json::writer::{EncoderOptions, make_encoder};
use datafusion::arrow::record_batch::RecordBatch;

use crate::ConnectorError;

/// How a row's bytes look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowFormat {
    Json,
    Csv { delimiter: u8 },
}

/// Encodes rows as one format says.
#[derive(Debug, Clone)]
pub struct RowEncoder {
    format: RowFormat,
    timestamp: String,
    /// The names rows' fields get in JSON, when not the batches' own (a Flink sink table's).
    names: Option<Vec<String>>,
}

/// Flink's `json.timestamp-format.standard` values and their chrono formats.
const TIMESTAMP_FORMATS: &[(&str, &str)] = &[
    ("sql", "%Y-%m-%d %H:%M:%S%.f"),
    ("iso-8601", "%Y-%m-%dT%H:%M:%S%.f"),
];

impl RowEncoder {
    /// An encoder for `format`, with the timestamp format `options` pick
    /// (`json.timestamp-format.standard`, for CSV too).
    pub fn new(
        format: RowFormat,
        options: &BTreeMap<String, String>,
    ) -> Result<Self, ConnectorError> {
        let standard = options
            .get("json.timestamp-format.standard")
            .map_or("sql".to_string(), |s| s.to_lowercase());
        let timestamp = TIMESTAMP_FORMATS
            .iter()
            .find(|(name, _)| *name == standard)
            .map(|(_, f)| f.to_string())
            .ok_or_else(|| {
                ConnectorError::Option(format!(
                    "invalid json.timestamp-format.standard \"{standard}\": SQL or ISO-8601 \
                     expected"
                ))
            })?;
        Ok(Self {
            format,
            timestamp,
            names: None,
        })
    }

    /// Names the JSON fields `names`, in column order, whatever the batches call them.
    pub fn with_names(mut self, names: &[String]) -> Self {
        self.names = Some(names.to_vec());
        self
    }

    /// Calls `each(row, bytes)` for every row of `rows`, in order.
    pub fn encode(
        &self,
        rows: &RecordBatch,
        mut each: impl FnMut(usize, &[u8]) -> Result<(), ConnectorError>,
    ) -> Result<(), ConnectorError> {
        match self.format {
            RowFormat::Json => {
                let fields: Fields = match &self.names {
                    Some(names) if names.len() == rows.num_columns() => rows
                        .schema()
                        .fields()
                        .iter()
                        .zip(names.iter())
                        .map(|(f, n)| Arc::new(f.as_ref().clone().with_name(n.as_str())))
                        .collect(),
                    _ => rows.schema().fields().clone(),
                };
                let array = StructArray::try_new(fields.clone(), rows.columns().to_vec(), None)?;
                let field = Arc::new(Field::new("row", DataType::Struct(fields), false));
                let options = EncoderOptions::default()
                    .with_explicit_nulls(true)
                    .with_timestamp_format(self.timestamp.clone());
                let mut encoder = make_encoder(&field, &array as &dyn Array, &options)?;
                let mut buf = Vec::with_capacity(256);
                for row in 0..rows.num_rows() {
                    buf.clear();
                    encoder.encode(row, &mut buf);
                    each(row, &buf)?;
                }
                Ok(())
            }
            RowFormat::Csv { delimiter } => {
                let mut out = Vec::with_capacity(rows.num_rows() * 64);
                {
                    let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                        .with_header(false)
                        .with_delimiter(delimiter)
                        .with_timestamp_format(self.timestamp.clone())
                        .build(&mut out);
                    writer.write(rows)?;
                }
                for (row, line) in csv_rows(&out).enumerate() {
                    each(row, line)?;
                }
                Ok(())
            }
        }
    }
}

/// The rows of CSV text: lines, except that a line end inside quotes belongs to its field.
fn csv_rows(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut quoted = false;
        let mut end = rest.len();
        for (i, &b) in rest.iter().enumerate() {
            match b {
                b'"' => quoted = !quoted,
                b'\n' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let line = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or(&[]);
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Schema, TimeUnit};

    fn rows() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a\nb, \"c\""), None])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(1_767_261_600_500),
                    None,
                ])),
            ],
        )
        .unwrap()
    }

    fn all(e: &RowEncoder) -> Vec<String> {
        let mut out = Vec::new();
        e.encode(&rows(), |_, b| {
            out.push(String::from_utf8_lossy(b).into_owned());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn json_rows_with_sql_timestamps_and_nulls() {
        let e = RowEncoder::new(RowFormat::Json, &BTreeMap::new()).unwrap();
        assert_eq!(
            all(&e),
            [
                r#"{"id":1,"name":"a\nb, \"c\"","ts":"2026-01-01 10:00:00.500"}"#,
                r#"{"id":2,"name":null,"ts":null}"#
            ]
        );
        let iso = BTreeMap::from([(
            "json.timestamp-format.standard".to_string(),
            "ISO-8601".to_string(),
        )]);
        let e = RowEncoder::new(RowFormat::Json, &iso).unwrap();
        assert!(all(&e)[0].contains("2026-01-01T10:00:00.500"));
    }

    #[test]
    fn csv_rows_keep_quoted_line_ends() {
        let e = RowEncoder::new(RowFormat::Csv { delimiter: b',' }, &BTreeMap::new()).unwrap();
        assert_eq!(
            all(&e),
            ["1,\"a\nb, \"\"c\"\"\",2026-01-01 10:00:00.500", "2,,"]
        );
    }

    #[test]
    fn bad_timestamp_standard_is_an_option_error() {
        let bad = BTreeMap::from([(
            "json.timestamp-format.standard".to_string(),
            "rfc".to_string(),
        )]);
        assert!(RowEncoder::new(RowFormat::Json, &bad).is_err());
    }
}
