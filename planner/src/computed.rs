//! Computed columns: `name AS expr` (Flink) and `name type AS expr` (RisingWave's generated
//! columns) in a CREATE TABLE.
//!
//! A computed column is stored like any other column, its value computed from the row's other
//! columns when the row is inserted (by DML, COPY or a connector), so every reader (ad-hoc
//! queries, views, their recovery) sees the same value. `PROCTIME()` (Flink) and `proctime()`
//! (RisingWave) give the time the row was ingested: processing time, kept with the row. A WATERMARK
//! may be declared on a computed column.

use std::sync::Arc;

use datafusion::arrow::array::new_null_array;
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::common::DFSchema;
use datafusion::common::ScalarValue;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{
    ColumnarValue, ExprSchemable, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_plan::PhysicalExpr;
use rivulet_engine::EngineError;
use rivulet_engine::table::Computed;

use crate::catalog::{ColumnDef, TableDef};
use crate::parse::ComputedClause;
use crate::types::SqlType;
use crate::{PlanError, Result};

fn schema_of(columns: &[ColumnDef]) -> Result<DFSchema> {
    let fields: Vec<_> = columns
        .iter()
        .map(|c| c.sql_type.field(&c.name, true))
        .collect();
    DFSchema::try_from(datafusion::arrow::datatypes::Schema::new(fields))
        .map_err(PlanError::DataFusion)
}

/// Each computed column as a column of the type its expression has over `columns`.
pub fn typed(
    state: &SessionState,
    columns: &[ColumnDef],
    clauses: &[ComputedClause],
) -> Result<Vec<(ColumnDef, String)>> {
    let schema = schema_of(columns)?;
    clauses
        .iter()
        .map(|c| {
            let expr = state
                .create_logical_expr(&c.expr, &schema)
                .map_err(PlanError::DataFusion)?;
            let data_type = expr.get_type(&schema).map_err(PlanError::DataFusion)?;
            let sql_type = SqlType::from_arrow(&data_type).ok_or_else(|| {
                PlanError::WrongType(format!(
                    "computed column \"{}\" would be of type {data_type}, which a table cannot hold",
                    c.name
                ))
            })?;
            Ok((
                ColumnDef::new(c.name.clone(), sql_type, true),
                c.expr.clone(),
            ))
        })
        .collect()
}

/// `PROCTIME()`: the current time, once per batch of rows (the time they are processed).
#[derive(Debug, PartialEq, Eq, Hash)]
struct Proctime {
    signature: Signature,
}

/// Name of the processing-time function (Flink's `PROCTIME()`, RisingWave's `proctime()`).
pub const PROCTIME: &str = "proctime";

impl ScalarUDFImpl for Proctime {
    fn name(&self) -> &str {
        PROCTIME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(SqlType::TimestampTz.arrow_type())
    }

    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let now = chrono::Utc::now().timestamp_micros();
        let value = ScalarValue::TimestampMicrosecond(Some(now), None)
            .cast_to(&SqlType::TimestampTz.arrow_type())?;
        Ok(ColumnarValue::Scalar(value))
    }
}

/// Flink's `TO_TIMESTAMP_LTZ(epoch, precision)`: an epoch number (precision 0: seconds, 3:
/// milliseconds, up to 6) as a timestamp with time zone.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ToTimestampLtz {
    signature: Signature,
}

impl ScalarUDFImpl for ToTimestampLtz {
    fn name(&self) -> &str {
        "to_timestamp_ltz"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(SqlType::TimestampTz.arrow_type())
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        use datafusion::arrow::array::{AsArray, TimestampMicrosecondArray};
        use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
        let (value, precision) = match args.args.as_slice() {
            [v] => (v, 3),
            [v, ColumnarValue::Scalar(p)] => {
                let p = match p.cast_to(&DataType::Int64)? {
                    ScalarValue::Int64(Some(p)) if (0..=6).contains(&p) => p,
                    _ => {
                        return datafusion::common::exec_err!(
                            "TO_TIMESTAMP_LTZ precision must be a constant from 0 to 6"
                        );
                    }
                };
                (v, p)
            }
            _ => {
                return datafusion::common::exec_err!(
                    "TO_TIMESTAMP_LTZ takes (epoch [, precision])"
                );
            }
        };
        let factor = 10i64.pow(6 - precision as u32);
        let values = value.to_array(args.number_rows)?;
        let values = datafusion::arrow::compute::cast(&values, &DataType::Int64)?;
        let micros: TimestampMicrosecondArray =
            values
                .as_primitive::<Int64Type>()
                .unary::<_, TimestampMicrosecondType>(|v| v.saturating_mul(factor));
        let out = micros.with_timezone("+00:00");
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// The functions computed columns use, for every session to register.
pub fn udfs() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(Proctime {
            signature: Signature::exact(Vec::new(), Volatility::Volatile),
        }),
        ScalarUDF::new_from_impl(ToTimestampLtz {
            signature: Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Immutable,
            ),
        }),
    ]
}

/// Computes a table's computed columns from its other columns.
struct Filler {
    /// (column, expression over the table's row, the column's type)
    exprs: Vec<(usize, Arc<dyn PhysicalExpr>, DataType)>,
    schema: SchemaRef,
    /// The table's schema with every column nullable.
    relaxed: SchemaRef,
}

impl Computed for Filler {
    fn inputs(&self) -> Vec<(usize, Vec<usize>)> {
        self.exprs
            .iter()
            .map(|(column, expr, _)| {
                let inputs = collect_columns(expr).iter().map(Column::index).collect();
                (*column, inputs)
            })
            .collect()
    }

    fn fill(&self, rows: &RecordBatch) -> rivulet_engine::Result<RecordBatch> {
        let n = rows.num_rows();
        let mut columns = rows.columns().to_vec();
        for f in self.schema.fields().iter().skip(columns.len()) {
            columns.push(new_null_array(f.data_type(), n));
        }
        // Evaluated over the row with every column nullable (the table's NOT NULL columns were
        // checked already, with Postgres' error).
        let rows = RecordBatch::try_new_with_options(
            Arc::clone(&self.relaxed),
            columns.clone(),
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        let rows = &rows;
        let strict = CastOptions {
            safe: false,
            ..Default::default()
        };
        for (column, expr, data_type) in &self.exprs {
            let value = expr
                .evaluate(rows)
                .and_then(|v| v.into_array(rows.num_rows()))
                .map_err(|e| EngineError::Data {
                    operator: "computed column".into(),
                    message: e.to_string(),
                })?;
            let value = cast_with_options(&value, data_type, &strict)?;
            if let Some(slot) = columns.get_mut(*column) {
                *slot = value;
            }
        }
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }
}

/// What fills `def`'s computed columns on insert, if it has any.
pub fn filler(state: &SessionState, def: &TableDef) -> Result<Option<Arc<dyn Computed>>> {
    if def.computed.is_empty() {
        return Ok(None);
    }
    let df_schema = schema_of(&def.columns)?;
    let schema = def.schema();
    let mut exprs = Vec::with_capacity(def.computed.len());
    for c in &def.computed {
        let column = def.columns.get(c.column).ok_or_else(|| {
            PlanError::Unsupported(format!("computed column {} out of range", c.column))
        })?;
        let expr = state
            .create_logical_expr(&c.expr, &df_schema)
            .map_err(PlanError::DataFusion)?;
        let physical = crate::overflow::physical_expr(state, expr, &df_schema)
            .map_err(PlanError::DataFusion)?;
        exprs.push((c.column, physical, column.sql_type.arrow_type()));
    }
    let relaxed = Arc::new(df_schema.as_arrow().clone());
    Ok(Some(Arc::new(Filler {
        exprs,
        schema,
        relaxed,
    })))
}
