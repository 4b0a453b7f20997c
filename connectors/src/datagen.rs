//! The `datagen` source: a table whose rows a generator inserts at a steady rate.
//!
//! Options, in Flink's and RisingWave's spellings (keys are lowercased by the DDL; `_` and `-`
//! are interchangeable after `fields.<column>.`):
//! - `rows-per-second` / `datagen.rows.per.second` (default 10000), `number-of-rows` /
//!   `datagen.number.of.rows` (default unbounded);
//! - `fields.<col>.kind`: `random` (default) or `sequence`;
//! - random numbers: `fields.<col>.min`, `.max` (default: the type's range, as in Flink);
//!   strings: `.length` (default 10); timestamps: the generation time minus a random lateness up
//!   to `.max-past` (default 0, so event time is processing time); `.null-rate` (default 0);
//! - sequences: `fields.<col>.start` (default 0) and `.end`; the generator stops after `end`.
//!
//! Row `i`'s values are a pure function of `i` (and the column), so the rows are reproducible.
//! Generated rows are inserted like an INSERT statement, in one atomic commit with the
//! generator's position (under the table's key in the source key space), so after a crash the
//! generator continues exactly after the last committed row: no row is lost or generated twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int16Builder,
    Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use rivulet_engine::state::StateStore;
use rivulet_engine::table::TableStore;

use crate::{ConnectorError, Result};

/// Rows generated per commit, at most.
const BATCH_ROWS: u64 = 8192;

/// How one column is generated.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Sequence {
        start: i64,
        end: Option<i64>,
    },
    Int {
        min: i64,
        max: i64,
    },
    Float {
        min: f64,
        max: f64,
    },
    Bool,
    Text {
        length: usize,
    },
    /// Generation time minus up to `max_past` microseconds.
    Time {
        max_past: i64,
    },
    Date {
        min: i32,
        max: i32,
    },
}

/// A parsed datagen table definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Datagen {
    rows_per_second: f64,
    number_of_rows: Option<u64>,
    fields: Vec<(Field, f64)>,
    schema: SchemaRef,
}

fn invalid(key: &str, value: &str, expected: &str) -> ConnectorError {
    ConnectorError::Option(format!(
        "invalid value for datagen option \"{key}\": \"{value}\" (expected {expected})"
    ))
}

/// Parses a Flink duration such as `5 s`, `500ms`, `1 min` into microseconds.
fn duration_micros(key: &str, v: &str) -> Result<i64> {
    let t = v.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| invalid(key, v, "a duration such as '5 s'"))?;
    let scale = match unit.trim() {
        "" | "ms" => 1_000,
        "s" | "sec" | "second" | "seconds" => 1_000_000,
        "min" | "minute" | "minutes" => 60_000_000,
        "h" | "hour" | "hours" => 3_600_000_000,
        _ => return Err(invalid(key, v, "a duration such as '5 s'")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| invalid(key, v, "a shorter duration"))
}

impl Datagen {
    /// Reads the options of a table with `connector = 'datagen'`; `schema` is the table's.
    pub fn parse(schema: &SchemaRef, options: &BTreeMap<String, String>) -> Result<Datagen> {
        let get = |keys: &[&str]| keys.iter().find_map(|k| options.get(*k).cloned());
        let rows_per_second = match get(&["rows-per-second", "datagen.rows.per.second"]) {
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .ok_or_else(|| invalid("rows-per-second", &v, "a positive number"))?,
            None => 10_000.0,
        };
        let number_of_rows = get(&["number-of-rows", "datagen.number.of.rows"])
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| invalid("number-of-rows", &v, "a whole number"))
            })
            .transpose()?;
        let mut fields = Vec::new();
        for f in schema.fields() {
            let name = f.name().to_lowercase();
            let opt = |key: &str| {
                let dashed = format!("fields.{name}.{key}");
                let underscored = format!("fields.{name}.{}", key.replace('-', "_"));
                options
                    .get(&dashed)
                    .or_else(|| options.get(&underscored))
                    .map(|v| (dashed, v.clone()))
            };
            let int = |key: &str, default: i64| -> Result<i64> {
                match opt(key) {
                    Some((k, v)) => v.trim().parse().map_err(|_| invalid(&k, &v, "an integer")),
                    None => Ok(default),
                }
            };
            let kind = opt("kind").map(|(_, v)| v.to_lowercase());
            let null_rate = match opt("null-rate") {
                Some((k, v)) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| invalid(&k, &v, "a number from 0 to 1"))?,
                None => 0.0,
            };
            let dt = f.data_type();
            let field = match kind.as_deref() {
                Some("sequence") => {
                    if !matches!(dt, DataType::Int16 | DataType::Int32 | DataType::Int64) {
                        return Err(ConnectorError::Option(format!(
                            "datagen cannot generate a sequence for column \"{name}\" of type {dt}"
                        )));
                    }
                    Field::Sequence {
                        start: int("start", 0)?,
                        end: opt("end")
                            .map(|(k, v)| {
                                v.trim().parse().map_err(|_| invalid(&k, &v, "an integer"))
                            })
                            .transpose()?,
                    }
                }
                None | Some("random") => match dt {
                    DataType::Int16 => Field::Int {
                        min: int("min", i16::MIN.into())?,
                        max: int("max", i16::MAX.into())?,
                    },
                    DataType::Int32 => Field::Int {
                        min: int("min", i32::MIN.into())?,
                        max: int("max", i32::MAX.into())?,
                    },
                    DataType::Int64 => Field::Int {
                        min: int("min", i64::MIN)?,
                        max: int("max", i64::MAX)?,
                    },
                    DataType::Float32 | DataType::Float64 => {
                        let float = |key: &str, default: f64| -> Result<f64> {
                            match opt(key) {
                                Some((k, v)) => {
                                    v.trim().parse().map_err(|_| invalid(&k, &v, "a number"))
                                }
                                None => Ok(default),
                            }
                        };
                        Field::Float {
                            min: float("min", 0.0)?,
                            max: float("max", 1.0)?,
                        }
                    }
                    DataType::Boolean => Field::Bool,
                    DataType::Utf8 => Field::Text {
                        length: usize::try_from(int("length", 10)?)
                            .map_err(|_| invalid("length", "negative", "a length"))?,
                    },
                    DataType::Timestamp(TimeUnit::Microsecond, None) => Field::Time {
                        max_past: match opt("max-past") {
                            Some((k, v)) => duration_micros(&k, &v)?,
                            None => 0,
                        },
                    },
                    DataType::Date32 => Field::Date {
                        min: int("min", 19_000)? as i32,
                        max: int("max", 21_000)? as i32,
                    },
                    other => {
                        return Err(ConnectorError::Option(format!(
                            "datagen cannot generate column \"{name}\" of type {other}"
                        )));
                    }
                },
                Some(other) => {
                    return Err(invalid(
                        &format!("fields.{name}.kind"),
                        other,
                        "random or sequence",
                    ));
                }
            };
            if let Field::Int { min, max } = field
                && min > max
            {
                return Err(ConnectorError::Option(format!(
                    "datagen option fields.{name}.min is greater than fields.{name}.max"
                )));
            }
            fields.push((field, null_rate));
        }
        Ok(Datagen {
            rows_per_second,
            number_of_rows,
            fields,
            schema: Arc::clone(schema),
        })
    }

    /// How many rows the generator makes in all (`None`: without end).
    fn total(&self) -> Option<u64> {
        let mut total = self.number_of_rows;
        for (f, _) in &self.fields {
            if let Field::Sequence {
                start,
                end: Some(end),
            } = f
            {
                let n = u64::try_from(end.saturating_sub(*start).saturating_add(1)).unwrap_or(0);
                total = Some(total.map_or(n, |t| t.min(n)));
            }
        }
        total
    }

    /// Rows `from..from + n`, with timestamps ending at `now` (microseconds).
    pub fn rows(&self, from: u64, n: u64, now: i64) -> Result<RecordBatch> {
        let columns = self
            .fields
            .iter()
            .enumerate()
            .map(|(c, (field, null_rate))| self.column(c, field, *null_rate, from, n, now))
            .collect::<Vec<_>>();
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    fn column(
        &self,
        c: usize,
        field: &Field,
        null_rate: f64,
        from: u64,
        n: u64,
        now: i64,
    ) -> ArrayRef {
        let dt = self.schema.field(c).data_type().clone();
        let rand = |i: u64, salt: u64| {
            mix(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((c as u64 + 1) << 48) ^ salt)
        };
        let is_null = |i: u64| null_rate > 0.0 && unit(rand(i, 7)) < null_rate;
        let rows = from..from + n;
        macro_rules! build {
            ($builder:expr, $value:expr) => {{
                let mut b = $builder;
                for i in rows.clone() {
                    if is_null(i) {
                        b.append_null();
                    } else {
                        b.append_value($value(i));
                    }
                }
                Arc::new(b.finish()) as ArrayRef
            }};
        }
        let int_value = |i: u64| -> i64 {
            match field {
                Field::Sequence { start, .. } => start.saturating_add(i as i64),
                Field::Int { min, max } => {
                    let span = (*max as i128 - *min as i128 + 1) as u128;
                    (*min as i128 + (rand(i, 1) as u128 % span) as i128) as i64
                }
                _ => 0,
            }
        };
        match (field, dt) {
            (_, DataType::Int16) => build!(Int16Builder::new(), |i| int_value(i) as i16),
            (_, DataType::Int32) => build!(Int32Builder::new(), |i| int_value(i) as i32),
            (_, DataType::Int64) => build!(Int64Builder::new(), int_value),
            (Field::Float { min, max }, DataType::Float32) => {
                build!(
                    Float32Builder::new(),
                    |i| (min + unit(rand(i, 2)) * (max - min)) as f32
                )
            }
            (Field::Float { min, max }, _) => {
                build!(Float64Builder::new(), |i| min
                    + unit(rand(i, 2)) * (max - min))
            }
            (Field::Bool, _) => build!(BooleanBuilder::new(), |i| rand(i, 3) & 1 == 1),
            (Field::Text { length }, _) => {
                const CHARS: &[u8] =
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
                build!(StringBuilder::new(), |i: u64| {
                    (0..*length)
                        .map(|k| {
                            CHARS[(rand(i, 100 + k as u64) % CHARS.len() as u64) as usize] as char
                        })
                        .collect::<String>()
                })
            }
            (Field::Time { max_past }, _) => {
                let step = (1e6 / self.rows_per_second) as i64;
                let last = from + n - 1;
                build!(TimestampMicrosecondBuilder::new(), |i: u64| {
                    let base = now - (last - i) as i64 * step;
                    if *max_past > 0 {
                        base - (rand(i, 4) % (*max_past as u64 + 1)) as i64
                    } else {
                        base
                    }
                })
            }
            (Field::Date { min, max }, _) => {
                let span = (*max as i64 - *min as i64 + 1).max(1) as u64;
                build!(Date32Builder::new(), |i| *min + (rand(i, 5) % span) as i32)
            }
            _ => Arc::new(datafusion::arrow::array::new_null_array(
                &DataType::Null,
                n as usize,
            )),
        }
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(v: u64) -> f64 {
    (v >> 11) as f64 / (1u64 << 53) as f64
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The generator as a source each job reads itself, storing nothing (`CREATE SOURCE`).
pub fn source(generator: Datagen) -> crate::generator::GeneratorSource {
    let (rate, total) = (generator.rows_per_second, generator.total());
    let rows: crate::Rows = Arc::new(move |from, to| generator.rows(from, to - from, now_micros()));
    crate::generator::GeneratorSource::new("datagen", rows, rate, total)
}

/// Generates rows into `table` at the configured rate until the generator ends or the task is
/// dropped. Returns the error that stopped it, if any.
pub async fn run(generator: Datagen, store: StateStore, table: Arc<TableStore>) -> Result<()> {
    let (rate, total) = (generator.rows_per_second, generator.total());
    let rows: crate::Rows = Arc::new(move |from, to| generator.rows(from, to - from, now_micros()));
    crate::generate(store, table, rate, total, BATCH_ROWS, rows).await
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Field as ArrowField, Int64Type, Schema};

    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            ArrowField::new("id", DataType::Int64, true),
            ArrowField::new("user_id", DataType::Int32, true),
            ArrowField::new("name", DataType::Utf8, true),
            ArrowField::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]))
    }

    #[test]
    fn both_spellings_and_reproducible_rows() {
        let flink = Datagen::parse(
            &schema(),
            &options(&[
                ("rows-per-second", "5"),
                ("fields.id.kind", "sequence"),
                ("fields.id.start", "1"),
                ("fields.id.end", "100"),
                ("fields.user_id.min", "1"),
                ("fields.user_id.max", "3"),
                ("fields.name.length", "4"),
                ("fields.ts.max-past", "5 s"),
            ]),
        )
        .unwrap();
        let rw = Datagen::parse(
            &schema(),
            &options(&[
                ("datagen.rows.per.second", "5"),
                ("fields.id.kind", "sequence"),
                ("fields.id.start", "1"),
                ("fields.id.end", "100"),
                ("fields.user_id.min", "1"),
                ("fields.user_id.max", "3"),
                ("fields.name.length", "4"),
                ("fields.ts.max_past", "5s"),
            ]),
        )
        .unwrap();
        assert_eq!(flink, rw);
        assert_eq!(flink.total(), Some(100));
        let a = flink.rows(10, 50, 1_000_000_000).unwrap();
        assert_eq!(a, flink.rows(10, 50, 1_000_000_000).unwrap());
        let ids = a.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.value(0), 11);
        let users = a
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int32Type>();
        assert!(users.values().iter().all(|u| (1..=3).contains(u)));
        assert!(
            a.column(2)
                .as_string::<i32>()
                .iter()
                .all(|s| s.is_some_and(|s| s.len() == 4))
        );
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        let err = Datagen::parse(&schema(), &options(&[("rows-per-second", "fast")])).unwrap_err();
        assert!(err.to_string().contains("rows-per-second"), "{err}");
        let err =
            Datagen::parse(&schema(), &options(&[("fields.name.kind", "sequence")])).unwrap_err();
        assert!(
            err.to_string().contains("sequence for column \"name\""),
            "{err}"
        );
    }
}
