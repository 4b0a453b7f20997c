//! SQL functions Postgres clients call that neither DataFusion nor `datafusion-pg-catalog` provide.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

use crate::session::SERVER_VERSION;

/// Registers the functions on a session's context.
pub fn register(ctx: &SessionContext, user: &str) {
    let version = format!(
        "PostgreSQL {SERVER_VERSION} (Rivulet {}) on x86_64-pc-linux-gnu, a streaming SQL server",
        env!("CARGO_PKG_VERSION")
    );
    ctx.register_udf(constant("version", version));
    ctx.register_udf(constant("current_user", user.to_string()));
}

/// A zero-argument function returning a fixed string.
fn constant(name: &str, value: String) -> datafusion::logical_expr::ScalarUDF {
    let scalar = ScalarValue::Utf8(Some(value));
    create_udf(
        name,
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| Ok(ColumnarValue::Scalar(scalar.clone()))),
    )
}
