//! `information_schema` as Rivulet serves it: DataFusion's, with `columns.data_type` in Postgres'
//! words (`bigint`, `timestamp without time zone`) instead of Arrow's (`Int64`, `Timestamp(µs)`).
//!
//! BI tools' column pickers (Grafana's among them) show and branch on `data_type`. DataFusion's
//! built-in schema cannot be changed, so the session turns it off and registers this one, over
//! the same provider, as an ordinary schema of its database.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::catalog::information_schema::InformationSchemaProvider;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};

use super::catalog::Patched;

/// DataFusion's `information_schema` with Postgres type names in `columns`.
#[derive(Debug)]
pub struct InformationSchema {
    inner: InformationSchemaProvider,
}

impl InformationSchema {
    pub fn new(catalogs: Arc<dyn CatalogProviderList>) -> Self {
        Self {
            inner: InformationSchemaProvider::new(catalogs),
        }
    }
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        if !name.eq_ignore_ascii_case("columns") {
            return Ok(Some(table));
        }
        Ok(Some(Arc::new(Patched::new(
            table,
            Box::new(postgres_types),
        ))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

fn postgres_types(batch: RecordBatch) -> Result<RecordBatch> {
    let index = batch.schema().index_of("data_type")?;
    let types = batch
        .column(index)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("columns.data_type is not text".into()))?;
    let names: StringArray = types
        .iter()
        .map(|t| {
            t.map(|t| match t.parse::<DataType>() {
                Ok(dt) => postgres_name(&dt).to_string(),
                Err(_) => t.to_string(),
            })
        })
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[index] = Arc::new(names);
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
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
