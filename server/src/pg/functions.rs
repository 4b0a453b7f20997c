//! Postgres functions that clients' catalog queries call and that neither DataFusion nor
//! `datafusion-pg-catalog` provide (or provide with another answer than Postgres').
//!
//! Each answers as Postgres would for Rivulet's catalog: one role (OID 10), UTF8 everywhere, no
//! user-defined functions, comments, indexes or constraints, so the lookups of those return NULL.
//! `current_setting` reads the session's settings as of the statement (see [`settings`]);
//! `set_config` sets a session setting as `SET` does.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use parking_lot::RwLock;

use crate::pg::catalog::ROLE_OID;

/// When the server started (`pg_postmaster_start_time()`); set by [`mark_start`].
static STARTED: LazyLock<chrono::DateTime<chrono::Utc>> = LazyLock::new(chrono::Utc::now);

/// Records the server's start time; call once at startup.
pub fn mark_start() {
    LazyLock::force(&STARTED);
}

/// The names of the relations a session's `pg_class` listed last, by OID: how `pg_get_viewdef(oid)`
/// finds a view, since the OIDs are `datafusion-pg-catalog`'s. Clients always read the OID from
/// `pg_class` before asking for a definition.
pub type RelationNames = Arc<RwLock<HashMap<i32, String>>>;

type Body = dyn Fn(&[ArrayRef], usize) -> Result<ArrayRef> + Send + Sync;

/// A function given by its name, accepted arguments, result type and a body over whole arrays.
struct PgFunction {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    body: Box<Body>,
}

impl std::fmt::Debug for PgFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgFunction")
            .field("name", &self.name)
            .finish()
    }
}

impl PartialEq for PgFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for PgFunction {}

impl Hash for PgFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if scalar { 1 } else { args.number_rows };
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let out = (self.body)(&arrays, rows)?;
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

fn function(
    name: &'static str,
    arities: &[usize],
    returns: DataType,
    body: impl Fn(&[ArrayRef], usize) -> Result<ArrayRef> + Send + Sync + 'static,
) -> ScalarUDF {
    function_of(name, arities, returns, Volatility::Stable, body)
}

/// [`function`] of another volatility: a `Volatile` one is never evaluated while planning.
pub(crate) fn function_of(
    name: &'static str,
    arities: &[usize],
    returns: DataType,
    volatility: Volatility,
    body: impl Fn(&[ArrayRef], usize) -> Result<ArrayRef> + Send + Sync + 'static,
) -> ScalarUDF {
    let signatures = arities
        .iter()
        .map(|&n| {
            if n == 0 {
                TypeSignature::Nullary
            } else {
                TypeSignature::Any(n)
            }
        })
        .collect();
    ScalarUDF::new_from_impl(PgFunction {
        name,
        signature: Signature::one_of(signatures, volatility),
        returns,
        body: Box::new(body),
    })
}

/// Postgres' `quote_literal`: the text in single quotes, quotes doubled; with a backslash, an
/// `E'...'` string whose backslashes are doubled too.
/// `pg_get_expr(expr, relation)` with `datafusion-pg-catalog`'s signature: the text of `expr`, which
/// Rivulet's catalogs keep as Postgres shows it (`pg_attrdef.adbin`); the library's gives ''.
pub fn get_expr() -> ScalarUDF {
    ScalarUDF::new_from_impl(GetExpr(
        datafusion_pg_catalog::pg_catalog::pg_get_expr_udf::create_pg_get_expr_udf(),
    ))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct GetExpr(ScalarUDF);

impl ScalarUDFImpl for GetExpr {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn signature(&self) -> &Signature {
        self.0.signature()
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let expr = (args.args.into_iter().next())
            .ok_or_else(|| DataFusionError::Plan("pg_get_expr takes an expression".into()))?;
        Ok(match expr {
            ColumnarValue::Array(a) => {
                ColumnarValue::Array(datafusion::arrow::compute::cast(&a, &DataType::Utf8)?)
            }
            ColumnarValue::Scalar(v) => ColumnarValue::Scalar(v.cast_to(&DataType::Utf8)?),
        })
    }
}

/// `format_type` as `datafusion-pg-catalog` has it, but with a `numeric` of scale 0 named as
/// Postgres names it, `numeric(30,0)` (the library writes `numeric(30)`, which SQLAlchemy 1.4's
/// column reflection cannot read).
pub fn format_type() -> ScalarUDF {
    ScalarUDF::new_from_impl(FormatType(
        datafusion_pg_catalog::pg_catalog::format_type::create_format_type_udf(),
    ))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FormatType(ScalarUDF);

impl ScalarUDFImpl for FormatType {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn signature(&self) -> &Signature {
        self.0.signature()
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.0.return_type(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let named = |name: &str| -> String {
            let (base, array) = match name.strip_suffix("[]") {
                Some(base) => (base, "[]"),
                None => (name, ""),
            };
            match base
                .strip_prefix("numeric(")
                .and_then(|p| p.strip_suffix(')'))
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            {
                Some(precision) => format!("numeric({precision},0){array}"),
                None => name.to_string(),
            }
        };
        Ok(match self.0.invoke_with_args(args)? {
            ColumnarValue::Scalar(ScalarValue::Utf8(v)) => {
                ColumnarValue::Scalar(ScalarValue::Utf8(v.map(|v| named(&v))))
            }
            ColumnarValue::Array(a) if *a.data_type() == DataType::Utf8 => {
                let names: StringArray =
                    a.as_string::<i32>().iter().map(|v| v.map(named)).collect();
                ColumnarValue::Array(Arc::new(names))
            }
            other => other,
        })
    }
}

fn quote_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    if text.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in text.chars() {
        if c == '\'' || c == '\\' {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The `i`th argument as int64 values (OIDs and sizes arrive as int32 or int64).
fn ints(args: &[ArrayRef], i: usize) -> Result<Vec<Option<i64>>> {
    let arg = args
        .get(i)
        .ok_or_else(|| DataFusionError::Plan("function called with too few arguments".into()))?;
    let cast = datafusion::arrow::compute::cast(arg, &DataType::Int64)?;
    Ok(cast.as_primitive::<Int64Type>().iter().collect())
}

fn texts(args: &[ArrayRef], i: usize) -> Result<Vec<Option<String>>> {
    let arg = args
        .get(i)
        .ok_or_else(|| DataFusionError::Plan("function called with too few arguments".into()))?;
    let cast = datafusion::arrow::compute::cast(arg, &DataType::Utf8)?;
    Ok(cast
        .as_string::<i32>()
        .iter()
        .map(|s| s.map(str::to_string))
        .collect())
}

fn null_text(name: &'static str, arities: &[usize]) -> ScalarUDF {
    function(name, arities, DataType::Utf8, |_, rows| {
        Ok(datafusion::arrow::array::new_null_array(
            &DataType::Utf8,
            rows,
        ))
    })
}

fn always_true(name: &'static str, arities: &[usize]) -> ScalarUDF {
    function(name, arities, DataType::Boolean, |_, rows| {
        Ok(Arc::new(BooleanArray::from(vec![true; rows])))
    })
}

/// `pg_sleep(seconds)`: waits that long (fractions too), without holding a thread, and returns
/// NULL (Postgres' `void` prints as an empty value). Cancel (Ctrl-C) interrupts it like any query.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgSleep {
    signature: Signature,
}

/// The longest `pg_sleep` waits in one call (Postgres has no limit; a day keeps a typo from
/// holding a session for ever).
const MAX_SLEEP_SECS: f64 = 86_400.0;

impl ScalarUDFImpl for PgSleep {
    fn name(&self) -> &str {
        "pg_sleep"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Null)
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Err(DataFusionError::Internal(
            "pg_sleep is evaluated asynchronously".into(),
        ))
    }
}

#[async_trait::async_trait]
impl datafusion::logical_expr::async_udf::AsyncScalarUDFImpl for PgSleep {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let seconds = match args.args.first() {
            Some(ColumnarValue::Scalar(v)) => match v.cast_to(&DataType::Float64)? {
                ScalarValue::Float64(s) => s.unwrap_or(0.0) * rows.max(1) as f64,
                _ => 0.0,
            },
            Some(ColumnarValue::Array(a)) => {
                let a = datafusion::arrow::compute::cast(a, &DataType::Float64)?;
                let a = a.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
                a.iter().flatten().sum()
            }
            None => 0.0,
        };
        // Postgres sleeps once per row it is called for; a negative or NaN time does not wait.
        if seconds > 0.0 {
            let seconds = seconds.min(MAX_SLEEP_SECS);
            tokio::time::sleep(std::time::Duration::from_secs_f64(seconds)).await;
        }
        Ok(ColumnarValue::Scalar(ScalarValue::Null))
    }
}

/// `pg_available_extensions()`: the extensions that could be installed, here the one Postgres
/// always has installed (psql 16+'s `\dx` joins it for the default version).
#[derive(Debug)]
struct AvailableExtensions;

impl datafusion::catalog::TableFunctionImpl for AvailableExtensions {
    fn call_with_args(
        &self,
        _args: datafusion::catalog::TableFunctionArgs,
    ) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
        use datafusion::arrow::datatypes::{Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("default_version", DataType::Utf8, true),
            Field::new("comment", DataType::Utf8, true),
        ]));
        let batch = datafusion::arrow::record_batch::RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(vec!["plpgsql"])),
                Arc::new(StringArray::from(vec!["1.0"])),
                Arc::new(StringArray::from(vec!["PL/pgSQL procedural language"])),
            ],
        )?;
        Ok(Arc::new(datafusion::datasource::MemTable::try_new(
            schema,
            vec![vec![batch]],
        )?))
    }
}

/// PostgreSQL's functions and types as `datafusion-pg-catalog` ships them (its `pg_proc` and
/// `pg_type`), by OID: what `::regproc` and `::regprocedure` print. Read once.
struct Procedures {
    /// Function OID to its name and argument type OIDs.
    procs: HashMap<i64, (String, Vec<i64>)>,
    /// Type OID to its name as `format_type` prints it.
    types: HashMap<i64, String>,
}

static PROCEDURES: LazyLock<Procedures> = LazyLock::new(|| {
    let mut out = Procedures {
        procs: HashMap::new(),
        types: HashMap::new(),
    };
    let tables = match super::STATIC_TABLES.as_ref() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "pg_catalog's static tables do not load: ::regproc prints OIDs");
            return out;
        }
    };
    let ints = |batch: &datafusion::arrow::record_batch::RecordBatch, name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| datafusion::arrow::compute::cast(c, &DataType::Int64).ok())
            .map(|c| c.as_primitive::<Int64Type>().iter().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let texts = |batch: &datafusion::arrow::record_batch::RecordBatch, name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| datafusion::arrow::compute::cast(c, &DataType::Utf8).ok())
            .map(|c| {
                c.as_string::<i32>()
                    .iter()
                    .map(|v| v.map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    for batch in tables.pg_proc.data() {
        let (oids, names, args) = (
            ints(batch, "oid"),
            texts(batch, "proname"),
            texts(batch, "proargtypes"),
        );
        for ((oid, name), args) in oids.into_iter().zip(names).zip(args) {
            if let (Some(oid), Some(name)) = (oid, name) {
                let args = args
                    .unwrap_or_default()
                    .split([' ', ',', '[', ']'])
                    .filter_map(|a| a.trim().parse::<i64>().ok())
                    .collect();
                out.procs.insert(oid, (name, args));
            }
        }
    }
    for batch in tables.pg_type.data() {
        for (oid, name) in ints(batch, "oid").into_iter().zip(texts(batch, "typname")) {
            if let (Some(oid), Some(name)) = (oid, name) {
                let pretty = match name.as_str() {
                    "int2" => "smallint",
                    "int4" => "integer",
                    "int8" => "bigint",
                    "float4" => "real",
                    "float8" => "double precision",
                    "bool" => "boolean",
                    "varchar" => "character varying",
                    "bpchar" => "character",
                    "timestamp" => "timestamp without time zone",
                    "timestamptz" => "timestamp with time zone",
                    "time" => "time without time zone",
                    "timetz" => "time with time zone",
                    other => other,
                };
                out.types.insert(oid, pretty.to_string());
            }
        }
    }
    out
});

/// `oid::regproc` (`with_args` false: the name) or `oid::regprocedure` (the name and argument
/// types), as Postgres prints them: `-` for 0, the number for an OID that names no function.
fn procedure_name(oid: i64, with_args: bool) -> String {
    if oid == 0 {
        return "-".into();
    }
    match PROCEDURES.procs.get(&oid) {
        None => oid.to_string(),
        Some((name, _)) if !with_args => name.clone(),
        Some((name, args)) => {
            let args: Vec<String> = args
                .iter()
                .map(|t| {
                    PROCEDURES
                        .types
                        .get(t)
                        .cloned()
                        .unwrap_or_else(|| t.to_string())
                })
                .collect();
            format!("{name}({})", args.join(", "))
        }
    }
}

/// Registers the functions on a session's context.
pub fn register(
    ctx: &SessionContext,
    user: &str,
    relations: &RelationNames,
    views: ViewQueries,
    sizes: RelationSizes,
    keys: PrimaryKeys,
) {
    ctx.register_udtf("pg_available_extensions", Arc::new(AvailableExtensions));
    // Postgres' templates (`YYYY-MM-DD`, `FM999.99`), not DataFusion's chrono formats.
    ctx.register_udf(super::to_char::udf());
    for udf in super::datetime::udfs() {
        ctx.register_udf(udf);
    }
    ctx.register_udf(super::to_number::udf());
    for udf in super::to_date::udfs() {
        ctx.register_udf(udf);
    }
    ctx.register_udf(
        datafusion::logical_expr::async_udf::AsyncScalarUDF::new(Arc::new(PgSleep {
            signature: Signature::uniform(1, vec![DataType::Float64], Volatility::Volatile),
        }))
        .into_scalar_udf(),
    );
    for (name, null_text) in [("quote_literal", None), ("quote_nullable", Some("NULL"))] {
        ctx.register_udf(function_of(
            name,
            &[1],
            DataType::Utf8,
            Volatility::Immutable,
            move |args, _| {
                let quoted: StringArray = texts(args, 0)?
                    .into_iter()
                    .map(|v| match v {
                        Some(v) => Some(quote_literal(&v)),
                        None => null_text.map(str::to_string),
                    })
                    .collect();
                Ok(Arc::new(quoted))
            },
        ));
    }
    let owner = user.to_string();
    ctx.register_udf(function(
        "pg_get_userbyid",
        &[1],
        DataType::Utf8,
        move |args, _| {
            let names: StringArray = ints(args, 0)?
                .into_iter()
                .map(|oid| {
                    oid.map(|oid| {
                        if oid == i64::from(ROLE_OID) {
                            owner.clone()
                        } else {
                            format!("unknown (OID={oid})")
                        }
                    })
                })
                .collect();
            Ok(Arc::new(names))
        },
    ));
    ctx.register_udf(function(
        "pg_encoding_to_char",
        &[1],
        DataType::Utf8,
        |args, _| {
            let names: StringArray = ints(args, 0)?
                .into_iter()
                .map(|e| e.map(|e| if e == 6 { "UTF8" } else { "" }))
                .collect();
            Ok(Arc::new(names))
        },
    ));
    ctx.register_udf(function(
        "getdatabaseencoding",
        &[0],
        DataType::Utf8,
        |_, rows| Ok(Arc::new(StringArray::from(vec!["UTF8"; rows]))),
    ));
    ctx.register_udf(function(
        "pg_char_to_encoding",
        &[1],
        DataType::Int32,
        |args, _| {
            let codes: datafusion::arrow::array::Int32Array = texts(args, 0)?
                .into_iter()
                .map(|name| {
                    name.map(|n| match n.to_ascii_uppercase().replace('-', "").as_str() {
                        "UTF8" | "UNICODE" => 6,
                        "SQL_ASCII" => 0,
                        _ => -1,
                    })
                })
                .collect();
            Ok(Arc::new(codes))
        },
    ));
    ctx.register_udf(function(
        "pg_size_pretty",
        &[1],
        DataType::Utf8,
        |args, _| {
            let out: StringArray = ints(args, 0)?
                .into_iter()
                .map(|s| s.map(size_pretty))
                .collect();
            Ok(Arc::new(out))
        },
    ));
    // Sizes: a relation by OID (as pg_class listed it) or by name (`'t'` for `'t'::regclass`).
    // A relation's size is its rows' keys and values; its change log counts towards the table's
    // and the total size; Rivulet has no indexes.
    type Part = fn(&rivulet_engine::table::TableSize) -> u64;
    let parts: [(&'static str, Part); 4] = [
        ("pg_relation_size", |s| s.row_bytes),
        ("pg_table_size", |s| s.row_bytes + s.log_bytes),
        ("pg_total_relation_size", |s| s.row_bytes + s.log_bytes),
        ("pg_indexes_size", |_| 0),
    ];
    for (name, part) in parts {
        let (names, sizes) = (Arc::clone(relations), Arc::clone(&sizes));
        let arities: &[usize] = if name == "pg_relation_size" {
            &[1, 2]
        } else {
            &[1]
        };
        ctx.register_udf(function(name, arities, DataType::Int64, move |args, _| {
            let arg = args.first().ok_or_else(|| {
                DataFusionError::Plan(format!("{name} called without a relation"))
            })?;
            let relations: Vec<Option<String>> = if matches!(
                arg.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                texts(args, 0)?
            } else {
                let names = names.read();
                ints(args, 0)?
                    .into_iter()
                    .map(|oid| names.get(&(oid? as i32)).cloned())
                    .collect()
            };
            let out: datafusion::arrow::array::Int64Array = relations
                .into_iter()
                .map(|r| {
                    let size = sizes(r?.trim_matches('"'))?;
                    Some(i64::try_from(part(&size)).unwrap_or(i64::MAX))
                })
                .collect();
            Ok(Arc::new(out))
        }));
    }
    let names = Arc::clone(relations);
    ctx.register_udf(function(
        "pg_get_viewdef",
        &[1, 2],
        DataType::Utf8,
        move |args, _| {
            let names = names.read();
            let out: StringArray = ints(args, 0)?
                .into_iter()
                .map(|oid| {
                    let name = names.get(&(oid? as i32))?;
                    views(name)
                })
                .collect();
            Ok(Arc::new(out))
        },
    ));
    // A key's index and constraint OIDs lead to its table's (see `keys.rs`).
    let (names, key_of) = (Arc::clone(relations), Arc::clone(&keys));
    let key = move |table: Option<i32>| {
        let name = names.read().get(&table?).cloned()?;
        key_of(&name)
    };
    let index_key = key.clone();
    ctx.register_udf(function(
        "pg_get_indexdef",
        &[1, 3],
        DataType::Utf8,
        move |args, rows| {
            let columns = match args.len() {
                1 => vec![Some(0); rows],
                _ => ints(args, 1)?,
            };
            let out: StringArray = (ints(args, 0)?.into_iter().zip(columns))
                .map(|(oid, column)| {
                    let key = index_key(super::keys::table_of_index(oid?))?;
                    match usize::try_from(column?).ok()? {
                        0 => Some(key.index_def()),
                        // Past the key's columns: empty, as in Postgres.
                        n => Some(
                            key.columns
                                .get(n - 1)
                                .map_or_else(String::new, |(_, c)| quote_ident(c)),
                        ),
                    }
                })
                .collect();
            Ok(Arc::new(out))
        },
    ));
    ctx.register_udf(function(
        "pg_get_constraintdef",
        &[1, 2],
        DataType::Utf8,
        move |args, _| {
            // Other constraints (the library's rows for `pg_catalog`) have an empty definition,
            // as the library gives them.
            let out: StringArray = ints(args, 0)?
                .into_iter()
                .map(|oid| {
                    let table = super::keys::table_of_constraint(oid?);
                    Some(table.map_or_else(String::new, |_| {
                        key(table).map(|k| k.constraint_def()).unwrap_or_default()
                    }))
                })
                .collect();
            Ok(Arc::new(out))
        },
    ));
    ctx.register_udf(function(
        "pg_postmaster_start_time",
        &[0],
        DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        |_, rows| {
            let t = STARTED.timestamp_micros();
            Ok(Arc::new(
                TimestampMicrosecondArray::from(vec![t; rows]).with_timezone("+00:00"),
            ))
        },
    ));
    // What `x::regproc` and `x::regprocedure` become in catalog queries (see `rewrite.rs`).
    for (name, with_args) in [("rivulet_regproc", false), ("rivulet_regprocedure", true)] {
        ctx.register_udf(function(name, &[1], DataType::Utf8, move |args, _| {
            // A name already (the library keeps `pg_type.typinput` and friends as text).
            if args.first().is_some_and(|a| a.data_type().is_string()) {
                return Ok(Arc::new(StringArray::from(texts(args, 0)?)));
            }
            Ok(Arc::new(StringArray::from_iter(
                ints(args, 0)?
                    .into_iter()
                    .map(|oid| oid.map(|oid| procedure_name(oid, with_args))),
            )))
        }));
    }
    ctx.register_udf(super::wire_types::pg_typeof());
    ctx.register_udf(super::regclass::udf());
    ctx.register_udf(width_bucket());
    ctx.register_udf(function(
        "pg_is_in_recovery",
        &[0],
        DataType::Boolean,
        |_, rows| Ok(Arc::new(BooleanArray::from(vec![false; rows]))),
    ));
    ctx.register_udf(function(
        "format",
        &[1, 2, 3, 4, 5, 6, 7, 8],
        DataType::Utf8,
        format,
    ));
    for name in [
        "pg_function_is_visible",
        "pg_type_is_visible",
        "pg_collation_is_visible",
        "pg_opclass_is_visible",
        "pg_operator_is_visible",
        "pg_conversion_is_visible",
        "has_column_privilege",
        "has_function_privilege",
        "has_sequence_privilege",
    ] {
        ctx.register_udf(always_true(name, &[1, 2, 3, 4]));
    }
    for (name, arities) in [
        ("pg_get_function_result", &[1][..]),
        ("pg_get_function_arguments", &[1]),
        ("pg_get_function_identity_arguments", &[1]),
        ("pg_get_function_sqlbody", &[1]),
        ("shobj_description", &[2]),
        ("pg_get_serial_sequence", &[2]),
        ("pg_get_triggerdef", &[1, 2]),
    ] {
        ctx.register_udf(null_text(name, arities));
    }
}

/// A view's query by name (the server catalog's), for `pg_get_viewdef`.
pub type ViewQueries = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// A table's primary key, by name (the server catalog's), for `pg_get_indexdef` and
/// `pg_get_constraintdef`.
pub type PrimaryKeys = Arc<dyn Fn(&str) -> Option<super::keys::PrimaryKey> + Send + Sync>;

/// What a relation stores, by name (the server catalog's), for `pg_total_relation_size` and
/// its kin.
pub type RelationSizes =
    Arc<dyn Fn(&str) -> Option<rivulet_engine::table::TableSize> + Send + Sync>;

/// The session's settings (keys lowercased) as of the running statement: the session copies them
/// in before each statement (`Session::context`), `current_setting` and `pg_settings` read them,
/// and `set_config` writes them, noting what it wrote for the session to keep ([`Self::take_written`]).
#[derive(Debug, Default)]
pub struct StatementSettings {
    values: RwLock<BTreeMap<String, String>>,
    written: parking_lot::Mutex<Vec<(String, String, bool)>>,
}

impl StatementSettings {
    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, BTreeMap<String, String>> {
        self.values.read()
    }

    pub fn write(&self) -> parking_lot::RwLockWriteGuard<'_, BTreeMap<String, String>> {
        self.values.write()
    }

    /// What `set_config(name, value, is_local)` set since the last call, in order, with
    /// `is_local`.
    pub fn take_written(&self) -> Vec<(String, String, bool)> {
        std::mem::take(&mut *self.written.lock())
    }
}

pub type SessionSettings = Arc<StatementSettings>;

/// Registers `current_setting(name [, missing_ok])`, `set_config` and `current_schemas`.
pub fn settings(ctx: &SessionContext, settings: &SessionSettings) {
    let handle = Arc::clone(settings);
    ctx.register_udf(function(
        "current_setting",
        &[1, 2],
        DataType::Utf8,
        move |args, rows| {
            let missing_ok = match args.get(1) {
                Some(a) => a
                    .as_boolean_opt()
                    .map(|b| b.iter().map(|v| v.unwrap_or(false)).collect())
                    .unwrap_or_else(|| vec![false; rows]),
                None => vec![false; rows],
            };
            let values = handle.read();
            let mut out = Vec::with_capacity(rows);
            for (i, name) in texts(args, 0)?.into_iter().enumerate() {
                let Some(name) = name else {
                    out.push(None);
                    continue;
                };
                match values.get(&name.to_ascii_lowercase()) {
                    Some(v) => out.push(Some(v.clone())),
                    None if missing_ok.get(i).copied().unwrap_or(false) => out.push(None),
                    None => {
                        return Err(DataFusionError::Plan(format!(
                            "unrecognized configuration parameter \"{name}\""
                        )));
                    }
                }
            }
            Ok(Arc::new(StringArray::from(out)))
        },
    ));
    // `set_config(name, value, is_local)`: as `SET` (or `SET LOCAL`), returning the value.
    let handle = Arc::clone(settings);
    let set_config = function_of(
        "set_config",
        &[3],
        DataType::Utf8,
        Volatility::Volatile,
        move |args, rows| {
            let names = texts(args, 0)?;
            let values = texts(args, 1)?;
            // `is_local` may come as text from an untyped parameter: read as Postgres reads it.
            let local: Vec<bool> = match args.get(2) {
                Some(a) => {
                    let b = datafusion::arrow::compute::cast(a, &DataType::Boolean)?;
                    b.as_boolean().iter().map(|v| v.unwrap_or(false)).collect()
                }
                None => vec![false; rows],
            };
            for ((name, value), local) in names.iter().zip(&values).zip(local) {
                let (Some(name), Some(value)) = (name, value) else {
                    continue;
                };
                let name = name.to_ascii_lowercase();
                handle.write().insert(name.clone(), value.clone());
                handle.written.lock().push((name, value.clone(), local));
            }
            Ok(Arc::new(StringArray::from(values)))
        },
    );
    ctx.register_udf(set_config);
    // Postgres' search path here: `pg_catalog` (implicitly first) and `public`.
    ctx.register_udf(function(
        "current_schemas",
        &[1],
        DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new(
            "item",
            DataType::Utf8,
            true,
        ))),
        |args, rows| {
            let implicit = args
                .first()
                .and_then(|a| a.as_boolean_opt())
                .map(|b| b.iter().map(|v| v.unwrap_or(false)).collect::<Vec<_>>())
                .unwrap_or_else(|| vec![false; rows]);
            let mut list = datafusion::arrow::array::ListBuilder::new(
                datafusion::arrow::array::StringBuilder::new(),
            );
            for with_implicit in implicit {
                if with_implicit {
                    list.values().append_value("pg_catalog");
                }
                list.values().append_value("public");
                list.append(true);
            }
            Ok(Arc::new(list.finish()))
        },
    ));
}

/// Postgres' `array_dims(array)`: its bounds as text, `[1:3]` (`[1:2][1:3]` for an array of
/// arrays, read from the first element); NULL for an empty or NULL array.
pub fn array_dims() -> ScalarUDF {
    function_of(
        "array_dims",
        &[1],
        DataType::Utf8,
        Volatility::Immutable,
        |args, _| {
            let array = args
                .first()
                .ok_or_else(|| DataFusionError::Plan("array_dims takes an array".into()))?;
            let mut out = datafusion::arrow::array::StringBuilder::new();
            for row in 0..array.len() {
                let mut dims = String::new();
                let mut level = array.is_valid(row).then(|| array.slice(row, 1));
                while let Some(list) = level.take() {
                    let values = match list.data_type() {
                        DataType::List(_) => list.as_list::<i32>().value(0),
                        DataType::LargeList(_) => list.as_list::<i64>().value(0),
                        _ => break,
                    };
                    if values.is_empty() {
                        break;
                    }
                    dims.push_str(&format!("[1:{}]", values.len()));
                    level = values.is_valid(0).then(|| values.slice(0, 1));
                }
                if dims.is_empty() {
                    out.append_null();
                } else {
                    out.append_value(&dims);
                }
            }
            Ok(Arc::new(out.finish()) as ArrayRef)
        },
    )
}

/// Postgres' `width_bucket(operand, low, high, count)`: which of `count` equal buckets from `low`
/// to `high` (either way round) `operand` falls in, 0 below the range and `count + 1` above it.
fn width_bucket() -> ScalarUDF {
    function_of(
        "width_bucket",
        &[4],
        DataType::Int32,
        Volatility::Immutable,
        |args, _| {
            let floats = |i: usize| -> Result<Vec<Option<f64>>> {
                let arg = args.get(i).ok_or_else(|| {
                    DataFusionError::Plan("width_bucket takes four arguments".into())
                })?;
                let cast = datafusion::arrow::compute::cast(arg, &DataType::Float64)?;
                Ok(cast
                    .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                    .iter()
                    .collect())
            };
            let (operand, low, high, count) = (floats(0)?, floats(1)?, floats(2)?, ints(args, 3)?);
            let invalid = |m: &str| {
                DataFusionError::External(Box::new(crate::error::SqlError::new(
                    crate::error::sqlstate::INVALID_ARGUMENT_FOR_WIDTH_BUCKET,
                    m.to_string(),
                )))
            };
            let mut out = Vec::with_capacity(operand.len());
            for i in 0..operand.len() {
                let (Some(x), Some(low), Some(high), Some(count)) =
                    (operand[i], low[i], high[i], count[i])
                else {
                    out.push(None);
                    continue;
                };
                if count <= 0 {
                    return Err(invalid("count must be greater than zero"));
                }
                if low == high {
                    return Err(invalid("lower bound cannot equal upper bound"));
                }
                if !x.is_finite() || !low.is_finite() || !high.is_finite() {
                    return Err(invalid(
                        "operand, lower bound, and upper bound cannot be NaN or infinity",
                    ));
                }
                let bucket = if low < high {
                    if x < low {
                        0
                    } else if x >= high {
                        count + 1
                    } else {
                        ((x - low) / (high - low) * count as f64).floor() as i64 + 1
                    }
                } else if x > low {
                    0
                } else if x <= high {
                    count + 1
                } else {
                    ((low - x) / (low - high) * count as f64).floor() as i64 + 1
                };
                let bucket = i32::try_from(bucket).map_err(|_| {
                    DataFusionError::External(Box::new(crate::error::SqlError::new(
                        crate::error::sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                        "integer out of range",
                    )))
                })?;
                out.push(Some(bucket));
            }
            Ok(Arc::new(datafusion::arrow::array::Int32Array::from(out)) as ArrayRef)
        },
    )
}

/// The comments of the database's relations (`COMMENT ON`): relation name, 0 for the relation
/// or the column's number, the text.
pub type Comments = Arc<dyn Fn() -> Vec<(String, i32, String)> + Send + Sync>;

/// `obj_description(oid [, catalog])` and `col_description(oid, column)`: a relation's comment
/// (of catalog `pg_class`; another catalog's objects have none) and a column's, by the OIDs
/// `pg_class` listed (`relations`).
pub fn descriptions(relations: &RelationNames, comments: Comments) -> [ScalarUDF; 2] {
    let lookup = |relations: RelationNames, comments: Comments| {
        move |oids: Vec<Option<i64>>, subids: Vec<Option<i64>>| -> ArrayRef {
            let all = comments();
            let names = relations.read();
            let out: StringArray = oids
                .into_iter()
                .zip(subids)
                .map(|(oid, subid)| {
                    let name = names.get(&i32::try_from(oid?).ok()?)?;
                    let subid = i32::try_from(subid?).ok()?;
                    all.iter()
                        .find(|(t, n, _)| t == name && *n == subid)
                        .map(|(_, _, text)| text.clone())
                })
                .collect();
            Arc::new(out)
        }
    };
    let object = lookup(Arc::clone(relations), Arc::clone(&comments));
    let column = lookup(Arc::clone(relations), comments);
    [
        function(
            "obj_description",
            &[1, 2],
            DataType::Utf8,
            move |args, rows| {
                let oids = ints(args, 0)?;
                let catalogs = match args.get(1) {
                    Some(_) => texts(args, 1)?,
                    None => vec![Some("pg_class".to_string()); rows.max(oids.len())],
                };
                let subids = catalogs
                    .into_iter()
                    .map(|c| c.filter(|c| c == "pg_class").map(|_| 0))
                    .collect();
                Ok(object(oids, subids))
            },
        ),
        function("col_description", &[2], DataType::Utf8, move |args, _| {
            Ok(column(ints(args, 0)?, ints(args, 1)?))
        }),
    ]
}

/// `pg_database_size(name or oid)`: what the database's relations store (`total`), their rows
/// and change logs; Rivulet serves one database, named `database` (another name is 3D000).
pub fn database_size(
    database: String,
    total: impl Fn() -> u64 + Send + Sync + 'static,
) -> ScalarUDF {
    function(
        "pg_database_size",
        &[1],
        DataType::Int64,
        move |args, rows| {
            let arg = args
                .first()
                .ok_or_else(|| DataFusionError::Plan("pg_database_size takes a database".into()))?;
            let size = i64::try_from(total()).unwrap_or(i64::MAX);
            let out: datafusion::arrow::array::Int64Array = if matches!(
                arg.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                texts(args, 0)?
                    .into_iter()
                    .map(|name| match name {
                        None => Ok(None),
                        Some(n) if n == database => Ok(Some(size)),
                        Some(n) => Err(DataFusionError::External(Box::new(
                            crate::error::SqlError::new(
                                crate::error::sqlstate::UNDEFINED_DATABASE,
                                format!("database \"{n}\" does not exist"),
                            ),
                        ))),
                    })
                    .collect::<Result<_>>()?
            } else {
                // An OID from `pg_database`, which lists this one database.
                (0..rows).map(|i| arg.is_valid(i).then_some(size)).collect()
            };
            Ok(Arc::new(out))
        },
    )
}

/// Postgres' `pg_size_pretty`: bytes below 10 kB, then the largest unit keeping the number below
/// 10240, rounded half away from zero.
fn size_pretty(size: i64) -> String {
    const LIMIT: i64 = 10 * 1024;
    if size.abs() < LIMIT {
        return format!("{size} bytes");
    }
    // One extra bit is kept for rounding, as Postgres does.
    let mut size = size >> 9;
    for unit in ["kB", "MB", "GB", "TB"] {
        if size.abs() < 2 * LIMIT - 1 {
            return format!("{} {unit}", half_rounded(size));
        }
        size >>= 10;
    }
    format!("{} PB", half_rounded(size))
}

fn half_rounded(x: i64) -> i64 {
    (x + if x < 0 { -1 } else { 1 }) / 2
}

/// Postgres' `format(template, args...)`: `%s` as text (NULL as empty), `%I` as a quoted
/// identifier, `%L` as a quoted literal (NULL unquoted), `%%` a percent sign.
fn format(args: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let templates = texts(args, 0)?;
    let values = (1..args.len())
        .map(|i| texts(args, i))
        .collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(rows);
    for (row, template) in templates.into_iter().enumerate() {
        let Some(template) = template else {
            out.push(None);
            continue;
        };
        let mut text = String::new();
        let mut next = 0;
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let kind = chars.next();
            if kind == Some('%') {
                text.push('%');
                continue;
            }
            let value = values
                .get(next)
                .ok_or_else(|| DataFusionError::Plan("too few arguments for format()".into()))?
                .get(row)
                .cloned()
                .flatten();
            next += 1;
            match (kind, value) {
                (Some('s'), v) => text.push_str(v.as_deref().unwrap_or("")),
                (Some('I'), Some(v)) => text.push_str(&quote_ident(&v)),
                (Some('I'), None) => {
                    return Err(DataFusionError::Plan(
                        "null values cannot be formatted as an SQL identifier".into(),
                    ));
                }
                (Some('L'), Some(v)) => text.push_str(&format!("'{}'", v.replace('\'', "''"))),
                (Some('L'), None) => text.push_str("NULL"),
                (other, _) => {
                    return Err(DataFusionError::Plan(format!(
                        "unrecognized format() type specifier \"{}\"",
                        other.map(String::from).unwrap_or_default()
                    )));
                }
            }
        }
        out.push(Some(text));
    }
    Ok(Arc::new(StringArray::from(out)))
}

/// `name` as Postgres' `quote_ident` gives it: bare if it is a lowercase identifier.
pub fn quote_ident(name: &str) -> String {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_postgres() {
        assert_eq!(size_pretty(0), "0 bytes");
        assert_eq!(size_pretty(10239), "10239 bytes");
        assert_eq!(size_pretty(10240), "10 kB");
        assert_eq!(size_pretty(8192 * 1024), "8192 kB");
        assert_eq!(size_pretty(1_000_000_000), "954 MB");
    }

    #[test]
    fn format_quotes_identifiers_and_literals() {
        let args: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["%I.%I = %L, %s%%"])),
            Arc::new(StringArray::from(vec!["public"])),
            Arc::new(StringArray::from(vec!["Big Table"])),
            Arc::new(StringArray::from(vec!["it's"])),
            Arc::new(StringArray::from(vec![None::<&str>])),
        ];
        let out = format(&args, 1).unwrap();
        assert_eq!(
            out.as_string::<i32>().value(0),
            r#"public."Big Table" = 'it''s', %"#
        );
    }
}
