//! `COPY table [(columns)] FROM STDIN` in Postgres' text and CSV formats.
//!
//! Data arrives in `CopyData` chunks that split rows anywhere; complete records are parsed as they
//! arrive into one string builder per column, and every [`BATCH_ROWS`] records the strings are cast
//! column by column (Arrow's vectorized casts) into a batch of the table's types. At `CopyDone` all
//! batches are inserted as one atomic, durable change: a COPY stores every row or none, like
//! Postgres. A value that does not parse fails the COPY with `22P02` and names the line and column.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, StringBuilder, new_null_array,
};
use datafusion::arrow::compute::CastOptions;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::FormatOptions;
use datafusion::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption};

use crate::catalog::TableEntry;
use crate::error::{SqlError, sqlstate};

/// Records per batch.
const BATCH_ROWS: usize = 8192;

/// The COPY data format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyFormat {
    /// Postgres' text format: tab-separated, backslash escapes, `\N` for NULL.
    Text { delimiter: u8, null: String },
    /// CSV: quoted fields, unquoted empty (or the NULL string) for NULL.
    Csv {
        delimiter: u8,
        quote: u8,
        escape: u8,
        null: String,
        header: bool,
    },
}

impl CopyFormat {
    /// The format described by a COPY statement's options.
    pub fn from_options(
        options: &[CopyOption],
        legacy: &[CopyLegacyOption],
    ) -> Result<Self, SqlError> {
        let mut csv = false;
        let mut delimiter = None;
        let mut null = None;
        let mut header = false;
        let mut quote = b'"';
        let mut escape = None;
        let one_byte = |c: char, what: &str| -> Result<u8, SqlError> {
            u8::try_from(c as u32)
                .ok()
                .filter(|b| b.is_ascii())
                .ok_or_else(|| {
                    SqlError::new(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("COPY {what} must be a single one-byte character"),
                    )
                })
        };
        for opt in options {
            match opt {
                CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                    "csv" => csv = true,
                    "text" => csv = false,
                    other => return Err(SqlError::unsupported(format!("COPY format \"{other}\""))),
                },
                CopyOption::Delimiter(c) => delimiter = Some(one_byte(*c, "delimiter")?),
                CopyOption::Null(s) => null = Some(s.clone()),
                CopyOption::Header(h) => header = *h,
                CopyOption::Quote(c) => quote = one_byte(*c, "quote")?,
                CopyOption::Escape(c) => escape = Some(one_byte(*c, "escape")?),
                CopyOption::Encoding(e)
                    if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                CopyOption::Freeze(_) => {}
                other => return Err(SqlError::unsupported(format!("COPY option {other}"))),
            }
        }
        for opt in legacy {
            match opt {
                CopyLegacyOption::Delimiter(c) => delimiter = Some(one_byte(*c, "delimiter")?),
                CopyLegacyOption::Null(s) => null = Some(s.clone()),
                CopyLegacyOption::Csv(csv_opts) => {
                    csv = true;
                    for o in csv_opts {
                        match o {
                            CopyLegacyCsvOption::Header => header = true,
                            CopyLegacyCsvOption::Quote(c) => quote = one_byte(*c, "quote")?,
                            CopyLegacyCsvOption::Escape(c) => {
                                escape = Some(one_byte(*c, "escape")?)
                            }
                            other => {
                                return Err(SqlError::unsupported(format!("COPY option {other}")));
                            }
                        }
                    }
                }
                other => return Err(SqlError::unsupported(format!("COPY option {other}"))),
            }
        }
        Ok(if csv {
            CopyFormat::Csv {
                delimiter: delimiter.unwrap_or(b','),
                quote,
                escape: escape.unwrap_or(quote),
                null: null.unwrap_or_default(),
                header,
            }
        } else {
            if header {
                return Err(SqlError::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "COPY HEADER available only in CSV mode",
                ));
            }
            CopyFormat::Text {
                delimiter: delimiter.unwrap_or(b'\t'),
                null: null.unwrap_or_else(|| "\\N".into()),
            }
        })
    }
}

/// A COPY in progress.
#[derive(Debug)]
pub struct CopyIn {
    pub table: Arc<TableEntry>,
    /// Table column positions the data's fields go to, in field order.
    columns: Vec<usize>,
    format: CopyFormat,
    /// Bytes of an incomplete record carried over to the next chunk.
    pending: Vec<u8>,
    builders: Vec<StringBuilder>,
    batches: Vec<RecordBatch>,
    /// Line number (1-based) of the next record, for error messages.
    line: u64,
    /// Line number of the first record in `builders`.
    batch_first_line: u64,
    header_pending: bool,
    finished: bool,
    /// Field scratch space.
    fields: Vec<Option<Vec<u8>>>,
    /// The columns the data does not have that have a default, with it (over no columns).
    defaults: Vec<(usize, Arc<dyn datafusion::physical_plan::PhysicalExpr>)>,
    /// The session's time zone, which a `timestamptz` without an offset is read in.
    zone: Option<String>,
}

impl CopyIn {
    /// Starts a COPY into `table`'s `columns`.
    pub fn new(table: Arc<TableEntry>, columns: Vec<usize>, format: CopyFormat) -> Self {
        let header_pending = matches!(format, CopyFormat::Csv { header: true, .. });
        let builders = columns
            .iter()
            .map(|_| StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 16))
            .collect();
        Self {
            table,
            columns,
            format,
            pending: Vec::new(),
            builders,
            batches: Vec::new(),
            line: 1,
            batch_first_line: 1,
            header_pending,
            finished: false,
            fields: Vec::new(),
            defaults: Vec::new(),
            zone: None,
        }
    }

    /// Reads a `timestamptz` without an offset as a wall clock in `zone` (`None`: UTC).
    pub fn in_zone(mut self, zone: Option<String>) -> Self {
        self.zone = zone;
        self
    }

    /// Fills the columns the data does not have with `defaults`, each an expression over no
    /// columns (a constant, `now()`, `nextval('..')`), evaluated once per batch of rows.
    pub fn with_defaults(
        mut self,
        defaults: Vec<(usize, Arc<dyn datafusion::physical_plan::PhysicalExpr>)>,
    ) -> Self {
        self.defaults = defaults;
        self
    }

    /// Number of fields each record has.
    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// Consumes one chunk of data.
    pub fn push(&mut self, data: &[u8]) -> Result<(), SqlError> {
        if self.finished {
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(data);
        let consumed = self.parse_records(&buf, false)?;
        self.pending = buf.split_off(consumed);
        Ok(())
    }

    /// Parses what is left and returns the batches to insert.
    pub fn finish(mut self) -> Result<(Arc<TableEntry>, Vec<RecordBatch>), SqlError> {
        let buf = std::mem::take(&mut self.pending);
        if !buf.is_empty() && !self.finished {
            self.parse_records(&buf, true)?;
        }
        self.flush_batch()?;
        Ok((self.table, self.batches))
    }

    /// Parses complete records from `buf`; returns how many bytes were used. With `at_end`, a final
    /// record without a newline is complete.
    fn parse_records(&mut self, buf: &[u8], at_end: bool) -> Result<usize, SqlError> {
        let mut pos = 0;
        while pos < buf.len() && !self.finished {
            let (end, next) = match &self.format {
                CopyFormat::Text { .. } => match memchr(b'\n', &buf[pos..]) {
                    Some(i) => (pos + i, pos + i + 1),
                    None if at_end => (buf.len(), buf.len()),
                    None => break,
                },
                CopyFormat::Csv { quote, .. } => match csv_record_end(&buf[pos..], *quote) {
                    Some(i) => (pos + i, pos + i + 1),
                    None if at_end => (buf.len(), buf.len()),
                    None => break,
                },
            };
            let mut record = &buf[pos..end];
            if record.last() == Some(&b'\r') {
                record = &record[..record.len() - 1];
            }
            self.record(record)?;
            self.line += 1;
            pos = next;
        }
        Ok(pos)
    }

    fn record(&mut self, record: &[u8]) -> Result<(), SqlError> {
        if record == b"\\." {
            self.finished = true;
            return Ok(());
        }
        if self.header_pending {
            self.header_pending = false;
            return Ok(());
        }
        let mut fields = std::mem::take(&mut self.fields);
        fields.clear();
        let split = match &self.format {
            CopyFormat::Text { delimiter, null } => {
                split_text(record, *delimiter, null.as_bytes(), &mut fields)
            }
            CopyFormat::Csv {
                delimiter,
                quote,
                escape,
                null,
                ..
            } => split_csv(
                record,
                *delimiter,
                *quote,
                *escape,
                null.as_bytes(),
                &mut fields,
            ),
        };
        split.map_err(|m| self.bad_data(m))?;
        if fields.len() != self.columns.len() {
            let msg = if fields.len() < self.columns.len() {
                "missing data for column".to_string()
            } else {
                "extra data after last expected column".to_string()
            };
            self.fields = fields;
            return Err(self.bad_data(msg));
        }
        for (builder, field) in self.builders.iter_mut().zip(&fields) {
            match field {
                Some(bytes) => match std::str::from_utf8(bytes) {
                    Ok(s) => builder.append_value(s),
                    Err(_) => {
                        return Err(SqlError::new(
                            sqlstate::CHARACTER_NOT_IN_REPERTOIRE,
                            format!(
                                "invalid byte sequence for encoding \"UTF8\" on line {}",
                                self.line
                            ),
                        ));
                    }
                },
                None => builder.append_null(),
            }
        }
        self.fields = fields;
        if self.builders.first().map(|b| b.len()).unwrap_or(0) >= BATCH_ROWS {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn bad_data(&self, message: String) -> SqlError {
        SqlError::new(sqlstate::BAD_COPY_FILE_FORMAT, message)
            .with_detail(format!("COPY {}, line {}", self.table.def.name, self.line))
    }

    /// Casts the buffered strings to the table's types and keeps the batch.
    fn flush_batch(&mut self) -> Result<(), SqlError> {
        let rows = self.builders.first().map(|b| b.len()).unwrap_or(0);
        if rows == 0 {
            return Ok(());
        }
        let schema = Arc::clone(self.table.store.schema());
        let mut columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), rows))
            .collect();
        let strict = CastOptions {
            safe: false,
            format_options: FormatOptions::default(),
        };
        let finished: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let nothing = RecordBatch::try_new_with_options(
            Arc::new(datafusion::arrow::datatypes::Schema::empty()),
            Vec::new(),
            &datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(SqlError::internal)?;
        for (col, default) in &self.defaults {
            let value = default.evaluate(&nothing)?.into_array(rows)?;
            columns[*col] =
                datafusion::arrow::compute::cast(&value, schema.field(*col).data_type())
                    .map_err(SqlError::from_arrow)?;
        }
        let scaled = self.table.def.scaled_columns();
        for (strings, &col) in finished.iter().zip(&self.columns) {
            // An unconstrained numeric's display scales: the decimals each value is written with.
            if let Some(k) = scaled.iter().position(|&c| c == col) {
                columns[self.table.def.columns.len() + k] =
                    crate::pg::dscale::of_texts(strings.as_string::<i32>().iter());
            }
            let field = schema.field(col);
            let target = field.data_type();
            let cast =
                crate::pg::time_zone::parse_text(strings, target, &strict, self.zone.as_deref())
                    .map_err(|_| self.cast_error(strings, target, col))?;
            columns[col] = cast;
        }
        let batch = RecordBatch::try_new(schema, columns).map_err(SqlError::internal)?;
        self.batches.push(batch);
        self.batch_first_line = self.line + 1;
        Ok(())
    }

    /// The Postgres message for the first value of `strings` that does not parse as `target`.
    fn cast_error(&self, strings: &ArrayRef, target: &DataType, col: usize) -> SqlError {
        let lenient = CastOptions {
            safe: true,
            format_options: FormatOptions::default(),
        };
        let column = &self.table.def.columns[col];
        let type_name = column.sql_type.pg_name();
        let found = crate::text::parse_column(strings, target, &lenient)
            .ok()
            .and_then(|parsed| {
                (0..strings.len())
                    .find(|&i| strings.is_valid(i) && parsed.is_null(i))
                    .map(|i| {
                        let value = datafusion::arrow::array::as_string_array(strings)
                            .value(i)
                            .to_string();
                        (i, value)
                    })
            });
        match found {
            Some((i, value)) => SqlError::new(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                format!("invalid input syntax for type {type_name}: \"{value}\""),
            )
            .with_detail(format!(
                "COPY {}, line {}, column {}",
                self.table.def.name,
                self.batch_first_line + i as u64,
                column.name
            )),
            None => SqlError::new(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                format!(
                    "invalid input syntax for type {type_name} in column \"{}\"",
                    column.name
                ),
            ),
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// Index of the newline that ends the first CSV record of `buf` (newlines inside quotes do not).
fn csv_record_end(buf: &[u8], quote: u8) -> Option<usize> {
    let mut in_quotes = false;
    for (i, &b) in buf.iter().enumerate() {
        if b == quote {
            // A doubled quote inside quotes toggles twice: out and back in.
            in_quotes = !in_quotes;
        } else if b == b'\n' && !in_quotes {
            return Some(i);
        }
    }
    None
}

/// Splits a text-format line into fields, undoing backslash escapes.
fn split_text(
    line: &[u8],
    delimiter: u8,
    null: &[u8],
    out: &mut Vec<Option<Vec<u8>>>,
) -> Result<(), String> {
    for raw in line.split(|&b| b == delimiter) {
        if raw == null {
            out.push(None);
            continue;
        }
        if !raw.contains(&b'\\') {
            out.push(Some(raw.to_vec()));
            continue;
        }
        let mut v = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            let b = raw[i];
            if b != b'\\' || i + 1 == raw.len() {
                v.push(b);
                i += 1;
                continue;
            }
            let e = raw[i + 1];
            i += 2;
            match e {
                b'n' => v.push(b'\n'),
                b't' => v.push(b'\t'),
                b'r' => v.push(b'\r'),
                b'b' => v.push(8),
                b'f' => v.push(12),
                b'v' => v.push(11),
                b'0'..=b'7' => {
                    let mut n = u32::from(e - b'0');
                    let mut k = 0;
                    while k < 2 && i < raw.len() && (b'0'..=b'7').contains(&raw[i]) {
                        n = n * 8 + u32::from(raw[i] - b'0');
                        i += 1;
                        k += 1;
                    }
                    v.push((n & 0xff) as u8);
                }
                b'x' if i < raw.len() && raw[i].is_ascii_hexdigit() => {
                    let mut n = 0u32;
                    let mut k = 0;
                    while k < 2 && i < raw.len() && raw[i].is_ascii_hexdigit() {
                        n = n * 16 + (raw[i] as char).to_digit(16).unwrap_or(0);
                        i += 1;
                        k += 1;
                    }
                    v.push(n as u8);
                }
                other => v.push(other),
            }
        }
        out.push(Some(v));
    }
    Ok(())
}

/// Splits one CSV record into fields. An unquoted field equal to `null` is NULL; a quoted one never is.
fn split_csv(
    record: &[u8],
    delimiter: u8,
    quote: u8,
    escape: u8,
    null: &[u8],
    out: &mut Vec<Option<Vec<u8>>>,
) -> Result<(), String> {
    let mut i = 0;
    loop {
        let mut value = Vec::new();
        let mut quoted = false;
        let mut in_quotes = false;
        while i < record.len() {
            let b = record[i];
            if in_quotes {
                // Inside quotes, the escape character makes the next quote (or escape) literal; with
                // the default escape (the quote itself) that is the doubled quote `""`.
                if b == escape
                    && i + 1 < record.len()
                    && (record[i + 1] == quote || record[i + 1] == escape)
                    && (escape != quote || record[i + 1] == quote)
                {
                    value.push(record[i + 1]);
                    i += 2;
                    continue;
                }
                if b == quote {
                    in_quotes = false;
                    i += 1;
                    continue;
                }
                value.push(b);
                i += 1;
            } else if b == quote {
                quoted = true;
                in_quotes = true;
                i += 1;
            } else if b == delimiter {
                break;
            } else {
                value.push(b);
                i += 1;
            }
        }
        if in_quotes {
            return Err("unterminated CSV quoted field".into());
        }
        if !quoted && value == null {
            out.push(None);
        } else {
            out.push(Some(value));
        }
        if i >= record.len() {
            return Ok(());
        }
        i += 1; // the delimiter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        split_text(line.as_bytes(), b'\t', b"\\N", &mut out).unwrap();
        out.into_iter()
            .map(|f| f.map(|v| String::from_utf8(v).unwrap()))
            .collect()
    }

    fn csv(line: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        split_csv(line.as_bytes(), b',', b'"', b'"', b"", &mut out).unwrap();
        out.into_iter()
            .map(|f| f.map(|v| String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn text_fields_and_escapes() {
        assert_eq!(
            text("1\t\\N\ta\\tb\\\\c\\101"),
            vec![Some("1".into()), None, Some("a\tb\\cA".into())]
        );
        assert_eq!(text(""), vec![Some(String::new())]);
    }

    #[test]
    fn csv_fields_quotes_and_nulls() {
        assert_eq!(
            csv("1,,\"\",\"a,\"\"b\"\"\",x"),
            vec![
                Some("1".into()),
                None,
                Some(String::new()),
                Some("a,\"b\"".into()),
                Some("x".into())
            ]
        );
        assert_eq!(csv_record_end(b"1,\"a\nb\"\n2", b'"'), Some(7));
    }
}
