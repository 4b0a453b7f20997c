//! Sequence values, as Postgres hands them out: `nextval`, `currval`, `setval`, `lastval` and
//! `pg_get_serial_sequence`, over the sequences of `CREATE SEQUENCE` and of `serial` and identity
//! columns (their definitions: [`rivulet_planner::sequence`]).
//!
//! As in Postgres, a value handed out is never handed out again, whether the statement that drew
//! it commits or not (a sequence is outside transactions), and values are logged ahead: each
//! durable write of a sequence's position covers the next [`LOG_AHEAD`] values, so a crash skips
//! at most that many. The position is written before any value it covers is returned, so no
//! value is given twice across a crash.
//!
//! Key space (under the catalog's tag `C`): `C v <owner id> <column>` a sequence's position: the
//! last value handed out (or to start from) and whether it was; `<owner id>` is the table of a
//! column's sequence, or a `CREATE SEQUENCE`'s own id with column `u32::MAX`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use parking_lot::Mutex;
use rivulet_engine::state::{StateBatch, StateStore};
use rivulet_planner::catalog::SequenceDef;

use crate::catalog::{Catalog, DEFAULT_SCHEMA};
use crate::error::{SqlError, sqlstate};

/// How many values one durable write of a sequence's position covers (Postgres' `SEQ_LOG_VALS`).
const LOG_AHEAD: u32 = 32;

/// The column number of a `CREATE SEQUENCE`'s key.
const STANDALONE: u32 = u32::MAX;

/// The key of the position of the sequence of `owner`'s `column`, or of standalone sequence
/// `owner` (`column` None).
pub fn position_key(owner: u64, column: Option<u32>) -> Vec<u8> {
    let mut k = position_prefix(owner);
    k.extend_from_slice(&column.unwrap_or(STANDALONE).to_be_bytes());
    k
}

/// The keys of every sequence position `owner` has.
pub fn position_prefix(owner: u64) -> Vec<u8> {
    let mut k = b"Cv".to_vec();
    k.extend_from_slice(&owner.to_be_bytes());
    k
}

/// Where a sequence is: the last value handed out, or the one the next `nextval` gives when
/// `called` is false.
#[derive(Debug, Clone, Copy)]
struct Position {
    last: i64,
    called: bool,
    /// How many values may still be handed out before the position must be logged again.
    covered: u32,
}

/// A sequence with its position.
#[derive(Debug)]
pub struct Sequence {
    pub def: SequenceDef,
    /// The table and column owning it (`serial`, identity), if any.
    pub owner: Option<(String, String)>,
    store: StateStore,
    key: Vec<u8>,
    position: Mutex<Position>,
}

impl Sequence {
    /// The sequence `def` stored under `key`, at its stored position (at its start when it has
    /// none).
    pub fn open(
        def: SequenceDef,
        owner: Option<(String, String)>,
        store: StateStore,
        key: Vec<u8>,
    ) -> Result<Self, SqlError> {
        let position = match store.get(&key).map_err(SqlError::from)? {
            Some(v) if v.len() == 9 => {
                let mut last = [0u8; 8];
                last.copy_from_slice(&v[..8]);
                Position {
                    last: i64::from_le_bytes(last),
                    called: v[8] != 0,
                    covered: 0,
                }
            }
            Some(_) => {
                return Err(SqlError::new(
                    sqlstate::DATA_CORRUPTED,
                    format!("the position of sequence \"{}\" is corrupt", def.name),
                ));
            }
            None => Position {
                last: def.start,
                called: false,
                covered: 0,
            },
        };
        Ok(Self {
            def,
            owner,
            store,
            key,
            position: Mutex::new(position),
        })
    }

    /// Where it is, as `SELECT * FROM` a sequence shows it: the last value handed out (or the
    /// next one, when none was), how many values are logged ahead of it, and whether one was
    /// handed out.
    pub fn state(&self) -> (i64, i64, bool) {
        let p = *self.position.lock();
        (p.last, i64::from(p.covered), p.called)
    }

    /// The sequence as a relation, as `SELECT * FROM` it reads it: one row of [`Self::state`].
    pub fn relation(&self) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("last_value", DataType::Int64, false),
            Field::new("log_cnt", DataType::Int64, false),
            Field::new("is_called", DataType::Boolean, false),
        ]));
        let (last, logged, called) = self.state();
        let row = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![last])),
                Arc::new(Int64Array::from(vec![logged])),
                Arc::new(BooleanArray::from(vec![called])),
            ],
        )?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![row]])?))
    }

    /// A number no other sequence of the server has, stable across restarts: from the id its
    /// position is kept under (its table's and column's, or its own).
    pub fn number(&self) -> u64 {
        let (mut owner, mut column) = ([0u8; 8], [0u8; 4]);
        if let (Some(o), Some(c)) = (self.key.get(2..10), self.key.get(10..14)) {
            owner.copy_from_slice(o);
            column.copy_from_slice(c);
        }
        let column = u64::from(u32::from_be_bytes(column).min(63));
        u64::from_be_bytes(owner)
            .wrapping_mul(64)
            .wrapping_add(column)
    }

    /// The value after `v`, wrapping round with CYCLE; 2200H past a bound without it.
    fn step(&self, v: i64) -> Result<i64, SqlError> {
        let d = &self.def;
        match v.checked_add(d.increment) {
            Some(n) if (d.min..=d.max).contains(&n) => Ok(n),
            _ if d.cycle => Ok(if d.increment > 0 { d.min } else { d.max }),
            _ => {
                let (bound, which) = if d.increment > 0 {
                    (d.max, "maximum")
                } else {
                    (d.min, "minimum")
                };
                Err(SqlError::new(
                    sqlstate::SEQUENCE_GENERATOR_LIMIT_EXCEEDED,
                    format!(
                        "nextval: reached {which} value of sequence \"{}\" ({bound})",
                        d.name
                    ),
                ))
            }
        }
    }

    /// The next `n` values, as `n` calls of `nextval` give them; logged durably first when they
    /// go past the logged position.
    pub fn next(&self, n: usize) -> Result<Vec<i64>, SqlError> {
        let mut guard = self.position.lock();
        let mut p = *guard;
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            p.last = if p.called { self.step(p.last)? } else { p.last };
            p.called = true;
            values.push(p.last);
        }
        let drawn = u32::try_from(n).unwrap_or(u32::MAX);
        if drawn <= p.covered {
            p.covered -= drawn;
        } else {
            // Log a position LOG_AHEAD values on (or at the bound): a restart continues after it.
            let (mut logged, mut covered) = (p.last, 0);
            while covered < LOG_AHEAD {
                match self.step(logged) {
                    Ok(v) => logged = v,
                    Err(_) => break,
                }
                covered += 1;
            }
            self.write(logged, true)?;
            p.covered = covered;
        }
        *guard = p;
        Ok(values)
    }

    /// `setval`: the last value handed out is `value` (or, `called` false, the next one is).
    pub fn set(&self, value: i64, called: bool) -> Result<(), SqlError> {
        let d = &self.def;
        if !(d.min..=d.max).contains(&value) {
            return Err(SqlError::new(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                format!(
                    "setval: value {value} is out of bounds for sequence \"{}\" ({}..{})",
                    d.name, d.min, d.max
                ),
            ));
        }
        let mut guard = self.position.lock();
        self.write(value, called)?;
        *guard = Position {
            last: value,
            called,
            covered: 0,
        };
        Ok(())
    }

    fn write(&self, last: i64, called: bool) -> Result<(), SqlError> {
        let mut value = last.to_le_bytes().to_vec();
        value.push(u8::from(called));
        let mut batch = StateBatch::new();
        batch.put(&self.key, value);
        self.store.write(batch, true).map_err(SqlError::from)
    }
}

/// What a session drew: `currval`'s value per sequence, and `lastval`'s.
#[derive(Debug, Default)]
pub struct Drawn {
    current: HashMap<String, i64>,
    last: Option<i64>,
}

/// A sequence's name as `nextval('..')` takes it: `[public.]name`, folded to lower case unless
/// quoted.
fn relation_name(text: &str) -> String {
    let unquote = |part: &str| match part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(quoted) => quoted.replace("\"\"", "\""),
        None => part.to_lowercase(),
    };
    let text = text.trim();
    match text.split_once('.') {
        Some((schema, name)) if unquote(schema) == DEFAULT_SCHEMA => unquote(name),
        _ => unquote(text),
    }
}

fn external(e: SqlError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// The sequence `name` names in `database`; 42P01 if there is none.
fn find(catalog: &Catalog, database: &str, name: &str) -> Result<Arc<Sequence>, DataFusionError> {
    let name = relation_name(name);
    catalog.sequence(database, &name).ok_or_else(|| {
        external(SqlError::new(
            sqlstate::UNDEFINED_TABLE,
            format!("relation \"{name}\" does not exist"),
        ))
    })
}

/// The rows' texts of argument `i` (a constant repeated).
fn texts(args: &[ColumnarValue], i: usize, rows: usize) -> Result<StringArray, DataFusionError> {
    let array = args
        .get(i)
        .ok_or_else(|| DataFusionError::Plan("missing argument".into()))?
        .to_array(rows)?;
    let array = datafusion::arrow::compute::cast(&array, &DataType::Utf8)?;
    Ok(array.as_string::<i32>().clone())
}

/// Registers the sequence functions on a session's context in `database`; `drawn` is the
/// session's.
pub fn register(
    ctx: &SessionContext,
    catalog: &Arc<Catalog>,
    database: &str,
    drawn: &Arc<Mutex<Drawn>>,
) {
    let text = || Signature::exact(vec![DataType::Utf8], Volatility::Volatile);
    let (c, db, d) = (Arc::clone(catalog), database.to_string(), Arc::clone(drawn));
    ctx.register_udf(Function::udf(
        "nextval",
        text(),
        DataType::Int64,
        move |args, rows| {
            // One name for all rows (the usual `nextval('s')`): drawn at once.
            if let Some(ColumnarValue::Scalar(ScalarValue::Utf8(Some(name)))) = args.first() {
                let sequence = find(&c, &db, name)?;
                let values = sequence.next(rows).map_err(external)?;
                if let Some(&v) = values.last() {
                    d.lock().drew(&sequence, v);
                }
                return Ok(Arc::new(Int64Array::from(values)));
            }
            per_name(&c, &db, args, rows, |sequence| {
                let v = (sequence.next(1).map_err(external)?.first().copied())
                    .ok_or_else(|| DataFusionError::Internal("nextval drew nothing".into()))?;
                d.lock().drew(sequence, v);
                Ok(v)
            })
        },
    ));
    let (c, db, d) = (Arc::clone(catalog), database.to_string(), Arc::clone(drawn));
    ctx.register_udf(Function::udf(
        "currval",
        text(),
        DataType::Int64,
        move |args, rows| {
            per_name(&c, &db, args, rows, |sequence| {
                let value = d.lock().current.get(&sequence.def.name).copied();
                value.ok_or_else(|| {
                    external(SqlError::new(
                        sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                        format!(
                            "currval of sequence \"{}\" is not yet defined in this session",
                            sequence.def.name
                        ),
                    ))
                })
            })
        },
    ));
    let d = Arc::clone(drawn);
    let none = Signature::exact(vec![], Volatility::Volatile);
    ctx.register_udf(Function::udf(
        "lastval",
        none,
        DataType::Int64,
        move |_, rows| {
            let value = d.lock().last.ok_or_else(|| {
                external(SqlError::new(
                    sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    "lastval is not yet defined in this session",
                ))
            })?;
            Ok(Arc::new(Int64Array::from(vec![value; rows])))
        },
    ));
    let (c, db, d) = (Arc::clone(catalog), database.to_string(), Arc::clone(drawn));
    let two_or_three = Signature::one_of(
        vec![
            TypeSignature::Exact(vec![DataType::Utf8, DataType::Int64]),
            TypeSignature::Exact(vec![DataType::Utf8, DataType::Int64, DataType::Boolean]),
        ],
        Volatility::Volatile,
    );
    ctx.register_udf(Function::udf(
        "setval",
        two_or_three,
        DataType::Int64,
        move |args, rows| {
            let names = texts(args, 0, rows)?;
            let values = argument(args, 1, rows)?;
            let values = values.as_primitive::<Int64Type>();
            let called = args.get(2).map(|a| a.to_array(rows)).transpose()?;
            let mut out = Vec::with_capacity(rows);
            for i in 0..rows {
                if names.is_null(i) || values.is_null(i) {
                    out.push(None);
                    continue;
                }
                let sequence = find(&c, &db, names.value(i))?;
                let is_called = match &called {
                    Some(a) => a.as_boolean().is_valid(i) && a.as_boolean().value(i),
                    None => true,
                };
                let value = values.value(i);
                sequence.set(value, is_called).map_err(external)?;
                if is_called {
                    d.lock().current.insert(sequence.def.name.clone(), value);
                }
                out.push(Some(value));
            }
            Ok(Arc::new(Int64Array::from(out)))
        },
    ));
    let (c, db) = (Arc::clone(catalog), database.to_string());
    let pair = Signature::exact(vec![DataType::Utf8, DataType::Utf8], Volatility::Stable);
    ctx.register_udf(Function::udf(
        "pg_get_serial_sequence",
        pair,
        DataType::Utf8,
        move |args, rows| {
            let (tables, columns) = (texts(args, 0, rows)?, texts(args, 1, rows)?);
            let mut out = Vec::with_capacity(rows);
            for (table, column) in tables.iter().zip(columns.iter()) {
                let (Some(table), Some(column)) = (table, column) else {
                    out.push(None);
                    continue;
                };
                let table = relation_name(table);
                let Some(entry) = c.table(&db, &table) else {
                    return Err(external(SqlError::new(
                        sqlstate::UNDEFINED_TABLE,
                        format!("relation \"{table}\" does not exist"),
                    )));
                };
                // The column name is taken as written, not folded (Postgres' rule).
                let Some(col) = entry.def.columns.iter().find(|c| c.name == column) else {
                    return Err(external(SqlError::new(
                        sqlstate::UNDEFINED_COLUMN,
                        format!("column \"{column}\" of relation \"{table}\" does not exist"),
                    )));
                };
                out.push((col.sequence.as_ref()).map(|s| format!("{DEFAULT_SCHEMA}.{}", s.name)));
            }
            Ok(Arc::new(StringArray::from(out)))
        },
    ));
}

impl Drawn {
    fn drew(&mut self, sequence: &Sequence, value: i64) {
        self.current.insert(sequence.def.name.clone(), value);
        self.last = Some(value);
    }
}

/// One value per row from the sequence the row's name (argument 0) names, or NULL for a NULL name.
fn per_name(
    catalog: &Catalog,
    database: &str,
    args: &[ColumnarValue],
    rows: usize,
    value: impl Fn(&Sequence) -> Result<i64, DataFusionError>,
) -> Result<ArrayRef, DataFusionError> {
    let names = texts(args, 0, rows)?;
    let mut out = Vec::with_capacity(rows);
    for name in names.iter() {
        out.push(match name {
            Some(name) => Some(value(find(catalog, database, name)?.as_ref())?),
            None => None,
        });
    }
    Ok(Arc::new(Int64Array::from(out)))
}

/// Argument `i` of a call for `rows` rows as an array of int8.
fn argument(args: &[ColumnarValue], i: usize, rows: usize) -> Result<ArrayRef, DataFusionError> {
    let array = args
        .get(i)
        .ok_or_else(|| DataFusionError::Plan("missing argument".into()))?
        .to_array(rows)?;
    Ok(datafusion::arrow::compute::cast(&array, &DataType::Int64)?)
}

type Call = Arc<dyn Fn(&[ColumnarValue], usize) -> Result<ArrayRef, DataFusionError> + Send + Sync>;

/// A function of the rows it is called for (`create_udf`'s functions are not told how many rows
/// a call of constants is for, and `nextval('s')` is one value per row).
struct Function {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    call: Call,
}

impl Function {
    fn udf(
        name: &'static str,
        signature: Signature,
        returns: DataType,
        call: impl Fn(&[ColumnarValue], usize) -> Result<ArrayRef, DataFusionError>
        + Send
        + Sync
        + 'static,
    ) -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            name,
            signature,
            returns,
            call: Arc::new(call),
        })
    }
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Function {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.signature == other.signature
    }
}

impl Eq for Function {}

impl std::hash::Hash for Function {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.signature.hash(state);
    }
}

impl ScalarUDFImpl for Function {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(self.returns.clone())
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        (self.call)(&args.args, args.number_rows).map(ColumnarValue::Array)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_as_relation_names() {
        assert_eq!(relation_name("T_Id_Seq"), "t_id_seq");
        assert_eq!(relation_name("public.t_id_seq"), "t_id_seq");
        assert_eq!(relation_name("\"Mixed\""), "Mixed");
        assert_eq!(relation_name("other.s"), "other.s");
    }
}
