//! Ad-hoc queries (`SELECT`, `VALUES`, `EXPLAIN`): planned and run by DataFusion over the tables'
//! current rows. Every table in one statement reads the same RocksDB snapshot.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, IntervalUnit};
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{DFSchema, ParamValues, ScalarValue};
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast;

use super::Outcome;
use crate::error::SqlError;
use crate::session::Session;

/// Plans `stmt` with DataFusion, without binding parameters.
pub async fn plan_query(
    ctx: &SessionContext,
    stmt: &ast::Statement,
) -> Result<LogicalPlan, SqlError> {
    rivulet_planner::temporal::refuse_ad_hoc(stmt)?;
    plan_continuous(ctx, stmt).await
}

/// [`plan_query`] for a view's or a sink's query, which may have temporal joins (the streaming
/// planner reads their table versions from `stmt`; DataFusion's plan has plain joins there).
pub async fn plan_continuous(
    ctx: &SessionContext,
    stmt: &ast::Statement,
) -> Result<LogicalPlan, SqlError> {
    // Plain views become their queries first, as in Postgres' rewriter.
    let catalogs = ctx.state().catalog_list().clone();
    let any: &dyn std::any::Any = catalogs.as_ref();
    let server = any
        .downcast_ref::<crate::provider::SessionCatalogs>()
        .map(|catalogs| catalogs.server());
    let expanded = match server {
        Some((catalog, database)) => Some(crate::views::expand(stmt, catalog, database)?),
        None => None,
    };
    let stmt = expanded.as_ref().unwrap_or(stmt);
    // A subquery's `table.column` of an enclosing query's table, as Postgres resolves it.
    let qualified = server
        .and_then(|(catalog, database)| crate::pg::outer_names::qualify(stmt, catalog, database));
    let stmt = qualified.as_ref().unwrap_or(stmt);
    // `row_to_json(t)`, `json_agg(t)`: the row of `t` spelled out.
    let whole_rows = crate::pg::whole_row::rewrite(ctx, stmt).await;
    let stmt = whole_rows.as_ref().unwrap_or(stmt);
    rivulet_planner::recursive::check(stmt)?;
    // Each MATCH_RECOGNIZE becomes a table function registered for this statement only.
    let (stmt, functions) = rivulet_planner::recognize::prepare(ctx, stmt).await?;
    let state = ctx.state();
    let plan = state
        .statement_to_plan(DFStatement::Statement(Box::new(stmt)))
        .await;
    for name in functions {
        ctx.deregister_udtf(&name);
    }
    let typed = crate::pg::typing::postgres_types(plan?)?;
    let plan = postgres_text_casts(crate::pg::decorrelate::scalar_subqueries(typed)?)?;
    let zone = crate::pg::time_zone::of(state.config_options());
    Ok(crate::pg::time_zone::in_session_zone(plan, zone)?)
}

/// Makes text-to-bytea casts read Postgres' bytea text forms (`'\x4869'::bytea` is `Hi`), where
/// Arrow's cast would take the text's own bytes. Covers literals, VALUES in INSERT, and columns.
/// Casts to `jsonb` put their text in `jsonb`'s form, casts to `json` check it
/// ([`crate::pg::json::json_cast`]).
/// Casts to `character(n)` cut the text to `n` ([`crate::pg::character`]).
/// Text constants cast to timestamps and intervals get Postgres' forms Arrow does not read
/// rewritten ([`crate::pg::datetime_input`]); those cast to arrays (`'{1,2}'` into an `INT[]`
/// column) are parsed as Postgres array literals ([`crate::text`]).
fn postgres_text_casts(plan: LogicalPlan) -> Result<LogicalPlan, SqlError> {
    // A rewritten expression that names a column (a select item, an aggregate: `count(doc ->
    // 'k')` reads the cast that becomes `jsonb_in`) keeps its name.
    Ok(crate::pg::map_plan_expressions(
        plan,
        false,
        |e, schema| text_cast(e, schema)?.map_data(|e| Ok(operand_nullability(e, schema))),
    )?)
}

/// `e`, a cast with a target field of its own (`x::jsonb`, `x::char(4)`, `x::text`), nullable as
/// its operand is: DataFusion's logical schema takes the operand's nullability, its physical cast
/// the field's, and a plan whose two differ fails.
fn operand_nullability(e: Expr, schema: &DFSchema) -> Expr {
    match e {
        Expr::Cast(Cast { expr, field }) if !field.name().is_empty() => {
            let nullable = expr.nullable(schema).unwrap_or(true);
            let field = if field.is_nullable() == nullable {
                field
            } else {
                Arc::new(field.as_ref().clone().with_nullable(nullable))
            };
            Expr::Cast(Cast { expr, field })
        }
        other => other,
    }
}

/// One expression of [`postgres_text_casts`].
fn text_cast(e: Expr, input: &DFSchema) -> datafusion::error::Result<Transformed<Expr>> {
    match e {
        Expr::Cast(Cast { expr, field })
            if *field.data_type() == DataType::Binary && is_text(&expr.get_type(input)?) =>
        {
            Ok(Transformed::yes(crate::functions::bytea_in(*expr)))
        }
        Expr::Cast(cast)
            if crate::pg::uuid::is_uuid(&cast.field)
                && is_text(&cast.expr.get_type(input)?)
                && !cast
                    .expr
                    .to_field(input)
                    .is_ok_and(|(_, f)| crate::pg::uuid::is_uuid(&f)) =>
        {
            Ok(Transformed::yes(crate::pg::uuid::cast_text(cast)))
        }
        // `id IN ('A0EE..', ..)`: each quoted literal read as a `uuid`, as `id = 'A0EE..'` is.
        Expr::InList(mut list)
            if list
                .expr
                .to_field(input)
                .is_ok_and(|(_, f)| crate::pg::uuid::is_uuid(&f)) =>
        {
            let mut changed = false;
            for item in &mut list.list {
                if let Expr::Literal(
                    ScalarValue::Utf8(Some(_)) | ScalarValue::Utf8View(Some(_)),
                    _,
                ) = item
                {
                    let field = Arc::new(crate::pg::uuid::field("uuid"));
                    let cast = Cast::new_from_field(Box::new(item.clone()), field);
                    *item = crate::pg::uuid::cast_text(cast);
                    changed = true;
                }
            }
            Ok(if changed {
                Transformed::yes(Expr::InList(list))
            } else {
                Transformed::no(Expr::InList(list))
            })
        }
        Expr::Cast(cast) if let Some(n) = crate::pg::character::varying_length(&cast.field) => {
            crate::pg::character::cast_varying(cast, n)
        }
        Expr::Cast(cast) if let Some(n) = crate::pg::character::length(&cast.field) => {
            crate::pg::character::cast(cast, n)
        }
        Expr::Cast(cast)
            if let Some(kind) = crate::pg::json::json_kind(&cast.field)
                && !input_is_json(&cast.expr, kind, input) =>
        {
            crate::pg::json::json_cast(cast, kind)
        }
        Expr::Cast(cast) => match (text_constant(&cast.expr), cast.field.data_type()) {
            (Some(text), t @ (DataType::List(_) | DataType::LargeList(_))) => Ok(Transformed::yes(
                Expr::Literal(array_constant(text, t)?, None),
            )),
            _ => text_constant_cast(cast),
        },
        other => Ok(Transformed::no(other)),
    }
}

/// A text constant cast to a timestamp, an interval or a numeric, with Postgres' forms Arrow
/// does not read rewritten; any other cast as it is. A text constant that is no number or date
/// fails here, at planning, as in Postgres (whose Describe of `'abc'::int` fails).
fn text_constant_cast(cast: Cast) -> datafusion::error::Result<Transformed<Expr>> {
    if let Some(text) = text_constant(&cast.expr)
        && matches!(
            cast.field.data_type(),
            DataType::Timestamp(..) | DataType::Date32
        )
        && let Some(special) = crate::pg::datetime_input::special(text, cast.field.data_type())
    {
        return special
            .map(Transformed::yes)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)));
    }
    if let Some(text) = text_constant(&cast.expr)
        && matches!(
            cast.field.data_type(),
            DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Float32
                | DataType::Float64
                | DataType::Date32
        )
    {
        // The kernel and options the cast runs with when executed.
        let strict = datafusion::arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        };
        let text = datafusion::arrow::array::StringArray::from(vec![text]);
        datafusion::arrow::compute::cast_with_options(&text, cast.field.data_type(), &strict)?;
    }
    // Text no timestamp form reads: Postgres' 22007 naming the type, not Arrow's parser message.
    if let Some(text) = text_constant(&cast.expr)
        && let DataType::Timestamp(_, zone) = cast.field.data_type()
        && crate::pg::datetime_input::timestamp(text).is_none()
    {
        let strict = datafusion::arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        };
        let texts = datafusion::arrow::array::StringArray::from(vec![text]);
        if datafusion::arrow::compute::cast_with_options(&texts, cast.field.data_type(), &strict)
            .is_err()
        {
            let name = match zone {
                Some(_) => "timestamp with time zone",
                None => "timestamp",
            };
            return Err(datafusion::error::DataFusionError::External(Box::new(
                crate::error::datetime_input(text, name),
            )));
        }
    }
    let rewritten = text_constant(&cast.expr).and_then(|text| match cast.field.data_type() {
        DataType::Interval(IntervalUnit::MonthDayNano) => crate::pg::datetime_input::interval(text),
        DataType::Timestamp(..) => crate::pg::datetime_input::timestamp(text),
        // `'1e5'::numeric`: Arrow reads no exponent.
        DataType::Decimal128(..) => crate::pg::typing::without_exponent(text.trim()),
        _ => None,
    });
    Ok(match rewritten {
        Some(text) => Transformed::yes(Expr::Cast(Cast {
            expr: Box::new(Expr::Literal(ScalarValue::Utf8(Some(text)), None)),
            field: cast.field,
        })),
        None => Transformed::no(Expr::Cast(cast)),
    })
}

/// A Postgres array literal as a constant of the list type `t`.
fn array_constant(text: &str, t: &DataType) -> datafusion::error::Result<ScalarValue> {
    let strings: datafusion::arrow::array::ArrayRef =
        Arc::new(datafusion::arrow::array::StringArray::from(vec![text]));
    let strict = datafusion::arrow::compute::CastOptions {
        safe: false,
        ..Default::default()
    };
    let array = crate::text::parse_column(&strings, t, &strict)?;
    ScalarValue::try_from_array(&array, 0)
}

/// The text of a string constant.
fn text_constant(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s),
        _ => None,
    }
}

/// Whether `e` is `json` or `jsonb` already (a `jsonb` column, `->` of one), so a cast to either
/// keeps it (a `json` cast to `jsonb` is already JSON, but not in `jsonb`'s form).
fn input_is_json(e: &Expr, target: crate::pg::json::Json, schema: &DFSchema) -> bool {
    e.to_field(schema).is_ok_and(|(_, f)| {
        crate::pg::json::json_kind(&f).is_some_and(|k| {
            k == target
                || (k == crate::pg::json::Json::Jsonb && target == crate::pg::json::Json::Json)
        })
    })
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Replaces `$n` placeholders with the bound values.
pub fn bind(plan: LogicalPlan, params: Option<&ParamValues>) -> Result<LogicalPlan, SqlError> {
    match params {
        Some(p) => {
            // Unconstrained numerics keep the scale they were written with.
            let plan = crate::pg::dscale::bind_marked(plan, p)?;
            let bound = plan.with_param_values(p.clone())?;
            crate::pg::typing::check_constant_overflow(&bound)?;
            Ok(bound)
        }
        None => Ok(plan),
    }
}

/// The session setting that makes a SELECT wait for the views it reads (see
/// [`Session::read_your_writes`]).
pub const VISIBILITY_MODE: &str = "visibility_mode";

impl Session {
    /// Whether `visibility_mode` is `strict`: a query that reads materialized views first waits
    /// until each reflects every write committed before the query began, in any session (what
    /// FLUSH does, for those views and the views they read). The default, `checkpoint`, reads
    /// what the views have committed, at most a barrier interval behind.
    fn read_your_writes(&self) -> bool {
        self.settings
            .get(VISIBILITY_MODE)
            .is_some_and(|m| m == "strict")
    }

    /// The materialized views `plan` reads, by id.
    fn views_read(&self, plan: &LogicalPlan) -> Vec<u64> {
        let mut views = Vec::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node
                && let Some(entry) = self.catalog().table(
                    scan.table_name.catalog().unwrap_or(&self.database),
                    scan.table_name.table(),
                )
                && entry.def.view.is_some()
            {
                views.push(entry.def.id);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        views
    }

    pub(super) async fn query(
        &mut self,
        stmt: &ast::Statement,
        params: Option<&ParamValues>,
    ) -> Result<Outcome, SqlError> {
        let ctx = self.context()?.clone();
        let plan = bind(plan_query(&ctx, stmt).await?, params)?;
        // Unconstrained numerics' own display scales, where the tables read keep them.
        let plan = crate::pg::dscale::attach(plan);
        if self.read_your_writes() {
            let views = self.views_read(&plan);
            let jobs = &self.shared.jobs;
            self.interrupt.run(jobs.flush_views(&views)).await?;
        }
        let tag = match stmt {
            ast::Statement::Explain { .. } => "EXPLAIN",
            _ => "SELECT",
        };
        let df = ctx.execute_logical_plan(plan).await?;
        let schema = crate::pg::oid_arrays::mark_result(stmt, df.schema().inner().clone());
        let batches = self
            .interrupt
            .run(async { Ok(df.collect().await?) })
            .await?;
        Ok(Outcome::Rows {
            schema,
            batches,
            tag,
        })
    }
}
