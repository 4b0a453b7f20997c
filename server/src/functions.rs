//! SQL functions Postgres clients call that neither DataFusion nor `datafusion-pg-catalog` provide.

use std::sync::Arc;

use datafusion::arrow::compute::{CastOptions, cast};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{ColumnarValue, Expr, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

use crate::session::SERVER_VERSION;

/// Registers the functions on the context of a session of `user` in `database`.
pub fn register(ctx: &SessionContext, user: &str, database: &str) {
    let version = format!(
        "PostgreSQL {SERVER_VERSION} (Rivulet {}) on x86_64-pc-linux-gnu, a streaming SQL server",
        env!("CARGO_PKG_VERSION")
    );
    ctx.register_udf(constant("version", version));
    let name =
        |f, value: &str| crate::pg::wire_types::returning(constant(f, value.to_string()), "name");
    ctx.register_udf(name("current_user", user));
    // No roles to switch to: the session's user is the current one.
    ctx.register_udf(name("session_user", user));
    ctx.register_udf(name("current_catalog", database));
    for udf in rivulet_planner::window::udfs() {
        ctx.register_udf(udf);
    }
    for udwf in rivulet_planner::session::udwfs() {
        ctx.register_udwf(udwf);
    }
    for udf in rivulet_planner::computed::udfs() {
        ctx.register_udf(udf);
    }
    ctx.register_udaf(crate::pg::sum::udaf());
    for udaf in crate::pg::ordered_set::udafs() {
        ctx.register_udaf(udaf);
    }
    ctx.register_udaf(crate::pg::subquery::udaf());
    ctx.register_udf(crate::pg::extract::udf());
    ctx.register_udf(crate::pg::date_trunc::udf());
    ctx.register_udf(crate::pg::at_time_zone::udf());
    ctx.register_udf(crate::pg::similar::udf());
    for udf in crate::pg::regexp::udfs() {
        ctx.register_udf(udf);
    }
    ctx.register_udf(crate::pg::uuid::input());
    ctx.register_udf(crate::pg::uuid::random());
    // Postgres' `array_remove` removes every equal element: DataFusion's `array_remove_all`
    // (its `array_remove` removes the first).
    ctx.register_udf(
        datafusion::functions_nested::remove::array_remove_all_udf()
            .as_ref()
            .clone()
            .with_aliases(["array_remove"]),
    );
    ctx.register_udf(crate::pg::functions::array_dims());
    // Postgres' names for DataFusion's `ceil`, `signum` and `bool_and`.
    ctx.register_udf(
        datafusion::functions::math::signum()
            .as_ref()
            .clone()
            .with_aliases(["sign"]),
    );
    ctx.register_udf(
        datafusion::functions::math::ceil()
            .as_ref()
            .clone()
            .with_aliases(["ceiling"]),
    );
    ctx.register_udaf(
        datafusion::functions_aggregate::bool_and_or::bool_and_udaf()
            .as_ref()
            .clone()
            .with_aliases(["every"]),
    );
    // Postgres' `variance` is the sample variance.
    ctx.register_udaf(
        datafusion::functions_aggregate::variance::var_samp_udaf()
            .as_ref()
            .clone()
            .with_aliases(["variance"]),
    );
    for udf in crate::pg::make::udfs() {
        ctx.register_udf(udf);
    }
    for udf in crate::pg::json::functions() {
        ctx.register_udf(udf);
    }
    for udf in crate::pg::jsonb::functions() {
        ctx.register_udf(udf);
    }
    for udf in crate::pg::set_returning::functions() {
        ctx.register_udf(udf);
    }
    for udaf in crate::pg::jsonb::aggregates() {
        ctx.register_udaf(udaf);
    }
    // `interval * number`, `interval / number`, the JSON operators and quoted literals typed by
    // the other operand, as Postgres has them.
    // The context's state is shared by its clones.
    let mut shared = ctx.clone();
    let planners: [Arc<dyn datafusion::logical_expr::planner::ExprPlanner>; 3] = [
        Arc::new(crate::pg::interval::IntervalArithmetic::new()),
        Arc::new(crate::pg::json::JsonOperators::new()),
        Arc::new(crate::pg::literals::UnknownLiterals),
    ];
    for planner in planners {
        if let Err(e) = shared.register_expr_planner(planner) {
            tracing::warn!(error = %e, "operator planner not registered");
        }
    }
}

/// Makes `table` compute its computed columns on insert, if it has any, and check its text
/// columns' declared lengths.
pub fn install_computed(
    table: &rivulet_engine::table::TableStore,
    def: &rivulet_planner::catalog::TableDef,
) -> Result<(), crate::error::SqlError> {
    if let Some(check) = rivulet_planner::lengths::check(def) {
        table.set_check(check);
    }
    if def.computed.is_empty() {
        return Ok(());
    }
    let ctx = SessionContext::new();
    register(&ctx, "root", "dev");
    if let Some(filler) = rivulet_planner::computed::filler(&ctx.state(), def)? {
        table.set_computed(filler);
    }
    Ok(())
}

/// `expr` (text) decoded as Postgres bytea text (`\\x4869`, or the escape form).
pub fn bytea_in(expr: Expr) -> Expr {
    let udf = create_udf(
        "bytea_in",
        vec![DataType::Utf8],
        DataType::Binary,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let Some(text) = arrays.first() else {
                return Err(DataFusionError::Internal(
                    "bytea_in without argument".into(),
                ));
            };
            let text = cast(text, &DataType::Utf8)?;
            let opts = CastOptions {
                safe: false,
                ..CastOptions::default()
            };
            let bytes = crate::text::parse_column(&text, &DataType::Binary, &opts)?;
            if scalar {
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &bytes, 0,
                )?))
            } else {
                Ok(ColumnarValue::Array(bytes))
            }
        }),
    );
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), vec![expr]))
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
