//! `information_schema` as Rivulet serves it: DataFusion's, with `columns.data_type` in Postgres'
//! words (`bigint`, `timestamp without time zone`) instead of Arrow's (`Int64`, `Timestamp(µs)`),
//! the `columns` Postgres has and DataFusion lacks (`udt_schema`, `udt_name`, `is_identity`, ...),
//! the constraint views with the primary keys (Rivulet has no other constraints beyond NOT
//! NULL), `sequences`, and
//! `ordinal_position` counted from 1.
//!
//! BI tools' column pickers (Grafana's among them) show and branch on `data_type`; Metabase's field
//! sync reads `udt_name` and joins the constraint views. DataFusion's
//! built-in schema cannot be changed, so the session turns it off and registers this one, over
//! the same provider, as an ordinary schema of its database.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, Scalar, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};

use rivulet_planner::catalog::{ColumnDef, Identity};
use rivulet_planner::types::SqlType;

use super::catalog::Patched;

/// DataFusion's `information_schema` with Postgres type names in `columns`.
#[derive(Debug)]
pub struct InformationSchema {
    inner: InformationSchemaProvider,
    /// Rivulet's catalog, for the declared types of its columns.
    server: Arc<crate::catalog::Catalog>,
    database: String,
}

impl InformationSchema {
    pub fn new(
        catalogs: Arc<dyn CatalogProviderList>,
        server: Arc<crate::catalog::Catalog>,
        database: &str,
    ) -> Self {
        Self {
            inner: InformationSchemaProvider::new(catalogs),
            server,
            database: database.to_string(),
        }
    }
}

/// Each column's definition (its declared type, default, identity), by (relation, column).
pub type Declared = HashMap<(String, String), ColumnDef>;

/// The declared types of the columns of `database`'s tables and views, as of now.
pub fn declared(server: &crate::catalog::Catalog, database: &str) -> Declared {
    server
        .tables(database)
        .iter()
        .flat_map(|t| {
            t.def
                .columns
                .iter()
                .map(|c| ((t.def.name.clone(), c.name.clone()), c.clone()))
        })
        .collect()
}

/// `information_schema.sequences` ([`super::keys::information_schema_sequences`]).
const SEQUENCES: &str = "sequences";

/// The constraint views, with Postgres' columns (all text but positions); only primary keys
/// have rows.
const CONSTRAINT_VIEWS: &[(&str, &[&str])] = &[
    (
        "table_constraints",
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "table_catalog",
            "table_schema",
            "table_name",
            "constraint_type",
            "is_deferrable",
            "initially_deferred",
            "enforced",
            "nulls_distinct",
        ],
    ),
    (
        "key_column_usage",
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "table_catalog",
            "table_schema",
            "table_name",
            "column_name",
            "ordinal_position",
            "position_in_unique_constraint",
        ],
    ),
    (
        "referential_constraints",
        &[
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
            "unique_constraint_catalog",
            "unique_constraint_schema",
            "unique_constraint_name",
            "match_option",
            "update_rule",
            "delete_rule",
        ],
    ),
    (
        "constraint_column_usage",
        &[
            "table_catalog",
            "table_schema",
            "table_name",
            "column_name",
            "constraint_catalog",
            "constraint_schema",
            "constraint_name",
        ],
    ),
];

/// Constraint view `view` (of `columns`): the primary keys' rows ([`super::keys::constraint_rows`]).
fn constraint_view(
    view: &str,
    columns: &[&str],
    keys: &super::keys::Keys,
    database: &str,
) -> Result<Arc<dyn TableProvider>> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            let t = if c.contains("position") {
                DataType::Int32
            } else {
                DataType::Utf8
            };
            Field::new(*c, t, true)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let rows = super::keys::constraint_rows(view, &schema, keys, database)?;
    // A view, as in Postgres (and so, like the rest of this schema, out of `pg_class` lookups).
    let table = Arc::new(MemTable::try_new(schema, vec![vec![rows]])?);
    Ok(Arc::new(Patched::new(table, Box::new(Ok))))
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.extend(CONSTRAINT_VIEWS.iter().map(|(n, _)| n.to_string()));
        names.push(SEQUENCES.to_string());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let lower = name.to_ascii_lowercase();
        if let Some((_, columns)) = CONSTRAINT_VIEWS.iter().find(|(n, _)| *n == lower) {
            let keys = super::keys::Keys::of(&self.server, &self.database);
            return constraint_view(&lower, columns, &keys, &self.database).map(Some);
        }
        if lower == SEQUENCES {
            let keys = super::keys::Keys::of(&self.server, &self.database);
            let rows = super::keys::information_schema_sequences(&keys, &self.database)?;
            let table = Arc::new(MemTable::try_new(rows.schema(), vec![vec![rows]])?);
            return Ok(Some(Arc::new(Patched::new(table, Box::new(Ok)))));
        }
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        if lower != "columns" {
            return Ok(Some(table));
        }
        let schema = with_udt_columns(&table.schema());
        let out = postgres_columns(&schema);
        let declared = declared(&self.server, &self.database);
        Ok(Some(Arc::new(Patched::with_schema(
            table,
            Arc::clone(&out),
            Box::new(move |batch| {
                let batch = postgres_types(batch, &schema)?;
                let batch = declared_types(batch, &declared)?;
                let columns = (batch.columns().iter().zip(out.fields()))
                    .map(|(c, f)| datafusion::arrow::compute::cast(c, f.data_type()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(RecordBatch::try_new(Arc::clone(&out), columns)?)
            }),
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
            || name.eq_ignore_ascii_case(SEQUENCES)
            || CONSTRAINT_VIEWS
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
}

/// The columns Postgres' `information_schema.columns` has beyond DataFusion's.
const UDT_COLUMNS: &[&str] = &[
    "udt_catalog",
    "udt_schema",
    "udt_name",
    "is_identity",
    "is_generated",
    "identity_generation",
];

fn with_udt_columns(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(
        UDT_COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, true)),
    );
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `columns`' schema with Postgres' types: its numbers are `cardinal_number`s (`integer` on the
/// wire), its names `sql_identifier`s (`name`), its other texts `character_data` or `yes_or_no`
/// (`character varying`).
fn postgres_columns(schema: &SchemaRef) -> SchemaRef {
    use super::wire_types::declare;
    let fields: Vec<Field> = (schema.fields().iter())
        .map(|f| {
            let name = f.name().as_str();
            let field = f.as_ref().clone();
            if f.data_type().is_integer() {
                field.with_data_type(DataType::Int32)
            } else if name.ends_with("_catalog")
                || name.ends_with("_schema")
                || name.ends_with("_name")
            {
                declare(field, "name")
            } else {
                declare(field, "character varying")
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn postgres_types(batch: RecordBatch, out: &SchemaRef) -> Result<RecordBatch> {
    let index = batch.schema().index_of("data_type")?;
    let catalog = batch.schema().index_of("table_catalog")?;
    let types = batch
        .column(index)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("columns.data_type is not text".into()))?;
    let arrow: Vec<Option<DataType>> = types
        .iter()
        .map(|t| t.and_then(|t| t.parse::<DataType>().ok()))
        .collect();
    let names: StringArray = types
        .iter()
        .zip(&arrow)
        .map(|(t, dt)| match dt {
            Some(dt) => Some(postgres_name(dt).to_string()),
            None => t.map(str::to_string),
        })
        .collect();
    let udt_names: StringArray = arrow.iter().map(|dt| dt.as_ref().map(udt_name)).collect();
    let n = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(names);
    // DataFusion counts columns from 0, Postgres (and the SQL standard) from 1.
    let ordinal = batch.schema().index_of("ordinal_position")?;
    let one = Scalar::new(UInt64Array::from(vec![1u64]));
    let position = datafusion::arrow::compute::cast(&columns[ordinal], &DataType::UInt64)?;
    let position = datafusion::arrow::compute::kernels::numeric::add(&position, &one)?;
    columns[ordinal] = datafusion::arrow::compute::cast(&position, columns[ordinal].data_type())?;
    columns.push(Arc::clone(&columns[catalog]));
    columns.push(Arc::new(StringArray::from(vec!["pg_catalog"; n])));
    columns.push(Arc::new(udt_names));
    columns.push(Arc::new(StringArray::from(vec!["NO"; n])));
    columns.push(Arc::new(StringArray::from(vec!["NEVER"; n])));
    columns.push(Arc::new(StringArray::from(vec![None::<&str>; n])));
    Ok(RecordBatch::try_new(Arc::clone(out), columns)?)
}

/// `columns` with the declared type of each of Rivulet's columns (`varchar(20)` is stored as text,
/// `jsonb` too): `data_type`, `udt_name`, and the length, precision and scale of `varchar(n)` and
/// `numeric(p,s)`, as `pg_attribute` has them; and its `column_default` and identity.
fn declared_types(batch: RecordBatch, declared: &Declared) -> Result<RecordBatch> {
    let text = |name: &str| -> Result<StringArray> {
        Ok(batch
            .column(batch.schema().index_of(name)?)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal(format!("columns.{name} is not text")))?
            .clone())
    };
    let (schemas, tables, names) = (
        text("table_schema")?,
        text("table_name")?,
        text("column_name")?,
    );
    let (mut data_types, mut udt_names): (Vec<Option<String>>, Vec<Option<String>>) = (
        text("data_type")?
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
        text("udt_name")?
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
    );
    let number = |name: &str| -> Result<Vec<Option<u64>>> {
        let column = batch.column(batch.schema().index_of(name)?);
        let cast = datafusion::arrow::compute::cast(column, &DataType::UInt64)?;
        Ok(cast
            .as_any()
            .downcast_ref::<UInt64Array>()
            .map(|a| a.iter().collect())
            .unwrap_or_default())
    };
    let mut lengths = number("character_maximum_length")?;
    let mut precisions = number("numeric_precision")?;
    let mut scales = number("numeric_scale")?;
    let mut radixes = number("numeric_precision_radix")?;
    let n = batch.num_rows();
    let (mut defaults, mut identities, mut generations) =
        (vec![None; n], vec![Some("NO"); n], vec![None; n]);
    for i in 0..batch.num_rows() {
        if schemas.value(i) != crate::catalog::DEFAULT_SCHEMA {
            continue;
        }
        let Some(column) = declared.get(&(tables.value(i).to_string(), names.value(i).to_string()))
        else {
            continue;
        };
        defaults[i] = column_default(column);
        if let Some(identity) = column.identity {
            identities[i] = Some("YES");
            generations[i] = Some(match identity {
                Identity::Always => "ALWAYS",
                Identity::ByDefault => "BY DEFAULT",
            });
        }
        let t = &column.sql_type;
        let (data_type, udt) = information_schema_type(t);
        data_types[i] = Some(data_type.to_string());
        udt_names[i] = Some(udt.to_string());
        if let SqlType::Varchar { max_len } = *t {
            lengths[i] = max_len.map(u64::from);
        } else if let SqlType::Char { len } = *t {
            lengths[i] = len.map(u64::from);
        }
        (precisions[i], radixes[i], scales[i]) = numeric_size(t);
    }
    let mut columns = batch.columns().to_vec();
    let schema = batch.schema();
    let mut set = |name: &str, array: datafusion::arrow::array::ArrayRef| -> Result<()> {
        let index = schema.index_of(name)?;
        columns[index] = datafusion::arrow::compute::cast(&array, schema.field(index).data_type())?;
        Ok(())
    };
    set("data_type", Arc::new(StringArray::from(data_types)))?;
    set("column_default", Arc::new(StringArray::from(defaults)))?;
    set("is_identity", Arc::new(StringArray::from(identities)))?;
    set(
        "identity_generation",
        Arc::new(StringArray::from(generations)),
    )?;
    set("udt_name", Arc::new(StringArray::from(udt_names)))?;
    set(
        "character_maximum_length",
        Arc::new(UInt64Array::from(lengths)),
    )?;
    set("numeric_precision", Arc::new(UInt64Array::from(precisions)))?;
    set("numeric_scale", Arc::new(UInt64Array::from(scales)))?;
    set(
        "numeric_precision_radix",
        Arc::new(UInt64Array::from(radixes)),
    )?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

/// A column's DEFAULT as Postgres shows it: a sequence named as a `regclass`
/// (`nextval('t_id_seq'::regclass)`), a quoted constant of a text-like column with its type
/// (`'new'::text`).
pub fn column_default(column: &ColumnDef) -> Option<String> {
    let text = column.default.as_deref()?;
    if let Some(sequence) = (text.strip_prefix("nextval('")).and_then(|t| t.strip_suffix("')")) {
        return Some(format!("nextval('{sequence}'::regclass)"));
    }
    let quoted = text.len() >= 2
        && text.starts_with('\'')
        && text.ends_with('\'')
        && !text[1..text.len() - 1].replace("''", "").contains('\'');
    let cast = match column.sql_type {
        SqlType::Text => Some("text"),
        SqlType::Varchar { .. } => Some("character varying"),
        SqlType::Char { .. } => Some("bpchar"),
        SqlType::Json => Some("json"),
        SqlType::Jsonb => Some("jsonb"),
        SqlType::Uuid => Some("uuid"),
        _ => None,
    };
    Some(match cast {
        Some(cast) if quoted => format!("{text}::{cast}"),
        _ => text.to_string(),
    })
}

/// A column type's `numeric_precision`, `numeric_precision_radix` and `numeric_scale`, as Postgres
/// has them: integers and floats in bits, `numeric(p,s)` in digits, an unconstrained `numeric`
/// (stored as `numeric(38,10)`) without any.
fn numeric_size(t: &SqlType) -> (Option<u64>, Option<u64>, Option<u64>) {
    use rivulet_planner::types::{DEFAULT_NUMERIC_SCALE, MAX_NUMERIC_PRECISION};
    match *t {
        SqlType::SmallInt => (Some(16), Some(2), Some(0)),
        SqlType::Int => (Some(32), Some(2), Some(0)),
        SqlType::BigInt => (Some(64), Some(2), Some(0)),
        SqlType::Real => (Some(24), Some(2), None),
        SqlType::Double => (Some(53), Some(2), None),
        SqlType::Numeric {
            precision: MAX_NUMERIC_PRECISION,
            scale: DEFAULT_NUMERIC_SCALE,
        } => (None, Some(10), None),
        SqlType::Numeric { precision, scale } => (
            Some(u64::from(precision)),
            Some(10),
            u64::try_from(scale).ok(),
        ),
        _ => (None, None, None),
    }
}

/// A column type's `information_schema.columns.data_type` and `udt_name`, as Postgres has them:
/// an array is `ARRAY`, its `udt_name` its element's with a leading underscore (`_int4`).
fn information_schema_type(t: &SqlType) -> (&'static str, &'static str) {
    match t {
        SqlType::Boolean => ("boolean", "bool"),
        SqlType::SmallInt => ("smallint", "int2"),
        SqlType::Int => ("integer", "int4"),
        SqlType::BigInt => ("bigint", "int8"),
        SqlType::Real => ("real", "float4"),
        SqlType::Double => ("double precision", "float8"),
        SqlType::Numeric { .. } => ("numeric", "numeric"),
        SqlType::Varchar { .. } => ("character varying", "varchar"),
        SqlType::Char { .. } => ("character", "bpchar"),
        SqlType::Text => ("text", "text"),
        SqlType::Date => ("date", "date"),
        SqlType::Time => ("time without time zone", "time"),
        SqlType::Timestamp => ("timestamp without time zone", "timestamp"),
        SqlType::TimestampTz => ("timestamp with time zone", "timestamptz"),
        SqlType::Interval => ("interval", "interval"),
        SqlType::Bytea => ("bytea", "bytea"),
        SqlType::Jsonb => ("jsonb", "jsonb"),
        SqlType::Json => ("json", "json"),
        SqlType::Uuid => ("uuid", "uuid"),
        SqlType::Array(_) => {
            let udt = match t.element() {
                SqlType::Boolean => "_bool",
                SqlType::SmallInt => "_int2",
                SqlType::Int => "_int4",
                SqlType::BigInt => "_int8",
                SqlType::Real => "_float4",
                SqlType::Double => "_float8",
                SqlType::Numeric { .. } => "_numeric",
                SqlType::Varchar { .. } => "_varchar",
                SqlType::Char { .. } => "_bpchar",
                SqlType::Text => "_text",
                SqlType::Date => "_date",
                SqlType::Time => "_time",
                SqlType::Timestamp => "_timestamp",
                SqlType::TimestampTz => "_timestamptz",
                SqlType::Interval => "_interval",
                SqlType::Bytea => "_bytea",
                SqlType::Jsonb => "_jsonb",
                SqlType::Json => "_json",
                SqlType::Uuid => "_uuid",
                // `element` goes through every dimension.
                SqlType::Array(_) => "_text",
            };
            ("ARRAY", udt)
        }
    }
}

/// The `udt_name` (the `pg_type.typname`) of a column of Arrow type `dt`.
fn udt_name(dt: &DataType) -> &'static str {
    match dt {
        DataType::Boolean => "bool",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "int2",
        DataType::Int32 | DataType::UInt16 => "int4",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "int8",
        DataType::Float16 | DataType::Float32 => "float4",
        DataType::Float64 => "float8",
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "numeric",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Time32(_) | DataType::Time64(_) => "time",
        DataType::Timestamp(_, None) => "timestamp",
        DataType::Timestamp(_, Some(_)) => "timestamptz",
        DataType::Interval(_) | DataType::Duration(_) => "interval",
        _ => "unknown",
    }
}

/// The `information_schema.columns.data_type` Postgres shows for a column of Arrow type `dt`.
fn postgres_name(dt: &DataType) -> &'static str {
    match dt {
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint",
        DataType::Float16 | DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "numeric",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Time32(_) | DataType::Time64(_) => "time without time zone",
        DataType::Timestamp(_, None) => "timestamp without time zone",
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone",
        DataType::Interval(_) | DataType::Duration(TimeUnit::Microsecond) => "interval",
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..) => "ARRAY",
        _ => "USER-DEFINED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_type_names_become_postgres_names() {
        for (arrow, pg) in [
            ("Int64", "bigint"),
            ("Utf8", "text"),
            ("Timestamp(µs)", "timestamp without time zone"),
            ("Float64", "double precision"),
        ] {
            let dt: DataType = arrow.parse().unwrap();
            assert_eq!(postgres_name(&dt), pg, "{arrow}");
        }
    }
}
