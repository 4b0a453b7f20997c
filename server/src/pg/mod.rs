//! Postgres compatibility for clients' catalog queries: what psql's backslash commands, drivers'
//! metadata calls and BI tools send, made to return what Postgres would.
//!
//! `rewrite` turns a catalog query into a form DataFusion plans (through `datafusion-pg-catalog`'s
//! compatibility rewrites); user queries are planned as written.

pub mod assign;
pub mod at_time_zone;
pub mod catalog;
/// Casts to `character(n)`.
pub mod character;
pub mod date_trunc;
pub mod datetime;
pub mod datetime_input;
pub mod decorrelate;
pub mod distinct_from;
pub mod dscale;
pub mod extract;
pub mod fragments;
pub mod functions;
pub mod information_schema;
pub mod interval;
pub mod json;
pub mod jsonb;
pub mod keys;
pub mod lateral;
pub mod literals;
/// make_time, make_timestamp, make_timestamptz, make_interval.
pub mod make;
pub mod names;
pub mod numeric;
pub mod oid_arrays;
pub mod ordered_set;
pub mod outer_names;
pub mod output;
pub mod regclass;
pub mod regexp;
pub mod rewrite;
pub mod set_operations;
pub mod set_returning;
pub mod similar;
/// `sum` of numerics, refused (22003) rather than wrapped beyond 38 digits.
pub mod subquery;
pub mod sum;
pub mod time_zone;
pub mod to_char;
pub mod to_date;
pub mod to_number;
pub mod typing;
pub mod uuid;
pub mod whole_row;
pub mod wire_types;

use std::sync::{Arc, LazyLock};

use datafusion::prelude::SessionContext;
use datafusion_pg_catalog::pg_catalog::{
    self as lib, PgCatalogSchemaProvider, PgCatalogStaticTables,
};

use crate::error::SqlError;

/// `pg_catalog`'s fixed relations (`pg_proc`, `pg_type`, ...), loaded once for the server and
/// shared by every session: a copy per session cost about 5 MB and a few milliseconds per
/// connection.
pub static STATIC_TABLES: LazyLock<Result<Arc<PgCatalogStaticTables>, String>> =
    LazyLock::new(|| {
        PgCatalogStaticTables::try_new()
            .map(Arc::new)
            .map_err(|e| e.to_string())
    });

/// What `datafusion_pg_catalog::setup_pg_catalog` does, over the shared [`STATIC_TABLES`]
/// instead of a fresh copy: registers the library's `pg_catalog` schema on `database` and its
/// functions on `ctx`. The list follows the library's (0.19) function for function.
pub fn setup_pg_catalog(
    ctx: &SessionContext,
    database: &str,
    roles: catalog::Roles,
) -> Result<(), SqlError> {
    let tables = STATIC_TABLES
        .as_ref()
        .map_err(|e| SqlError::internal(format!("pg_catalog's tables do not load: {e}")))?;
    let schema = PgCatalogSchemaProvider::try_new(
        ctx.state().catalog_list().clone(),
        Arc::clone(tables),
        roles,
    )?;
    ctx.catalog(database)
        .ok_or_else(|| SqlError::internal(format!("catalog of database {database} missing")))?
        .register_schema("pg_catalog", Arc::new(schema))?;
    let udfs = [
        wire_types::returning(lib::create_current_database_udf(database), "name"),
        wire_types::returning(lib::create_current_schema_udf(), "name"),
        lib::create_current_schemas_udf(),
        lib::create_pg_get_userbyid_udf(),
        lib::has_privilege_udf::create_has_privilege_udf("has_table_privilege"),
        lib::has_privilege_udf::create_has_privilege_udf("has_schema_privilege"),
        lib::has_privilege_udf::create_has_privilege_udf("has_database_privilege"),
        lib::has_privilege_udf::create_has_privilege_udf("has_any_column_privilege"),
        lib::create_pg_table_is_visible(),
        functions::format_type(),
        lib::create_session_user_udf(),
        functions::get_expr(),
        lib::create_pg_get_partkeydef_udf(),
        lib::create_pg_relation_is_publishable_udf(),
        lib::create_pg_get_statisticsobjdef_columns_udf(),
        lib::create_pg_encoding_to_char_udf(),
        lib::create_pg_backend_pid_udf(),
        lib::create_pg_stat_get_numscans(),
        lib::create_pg_get_partition_ancestors_udf(),
        lib::quote_ident_udf::create_quote_ident_udf(),
        lib::quote_ident_udf::create_parse_ident_udf(),
        lib::array_bounds_udf::create_array_upper_udf(),
        lib::array_bounds_udf::create_array_lower_udf(),
    ];
    for udf in udfs {
        ctx.register_udf(udf);
    }
    ctx.register_udtf("pg_get_keywords", tables.pg_get_keywords.clone());
    {
        let state = ctx.state_ref();
        let existing = state.read().clone();
        let planned = datafusion::execution::SessionStateBuilder::new_from_existing(existing)
            .with_type_planner(Arc::new(json::JsonTypes {
                inner: lib::oid_type_planner::PgOidTypePlanner,
            }))
            .build();
        *state.write() = planned;
    }
    lib::generate_series_arg_coercion::CoerceIntArgsToBigInt::widen(ctx);
    Ok(())
}

/// Puts Rivulet's `pg_catalog` (see [`catalog`]) over the one `datafusion-pg-catalog` registered on
/// `ctx` for `database`.
pub fn install(
    ctx: &SessionContext,
    server: &Arc<crate::catalog::Catalog>,
    database: &str,
    user: &str,
    settings: &functions::SessionSettings,
) -> Result<(), SqlError> {
    let db = ctx
        .catalog(database)
        .ok_or_else(|| SqlError::internal(format!("catalog of database {database} missing")))?;
    let inner = db
        .schema("pg_catalog")
        .ok_or_else(|| SqlError::internal("pg_catalog schema missing"))?;
    let relations = functions::RelationNames::default();
    let schema = catalog::PgCatalog::new(
        inner,
        Arc::clone(server),
        database,
        user,
        Arc::clone(&relations),
        Arc::clone(settings),
    );
    db.register_schema("pg_catalog", Arc::new(schema))?;
    let catalogs = ctx.state().catalog_list().clone();
    db.register_schema(
        "information_schema",
        Arc::new(information_schema::InformationSchema::new(
            catalogs,
            Arc::clone(server),
            database,
        )),
    )?;
    let (catalog, db_name) = (Arc::clone(server), database.to_string());
    let keys: functions::PrimaryKeys =
        Arc::new(move |name| keys::primary_key(&catalog, &db_name, name));
    let sizes_of = Arc::clone(server);
    let total_of = Arc::clone(server);
    let (server, db_name) = (Arc::clone(server), database.to_string());
    let views: functions::ViewQueries = Arc::new(move |name| {
        let view = server.table(&db_name, name)?.def.view.clone()?;
        Some(format!(" {};", view.query.trim().trim_end_matches(';')))
    });
    let (catalog, db_name) = (sizes_of, database.to_string());
    let sizes: functions::RelationSizes =
        Arc::new(move |name| Some(catalog.table(&db_name, name)?.store.size()));
    functions::register(ctx, user, &relations, views, sizes, keys);
    let (catalog, db_name) = (Arc::clone(&total_of), database.to_string());
    let comments: functions::Comments = Arc::new(move || catalog::descriptions(&catalog, &db_name));
    for udf in functions::descriptions(&relations, comments) {
        ctx.register_udf(udf);
    }
    let (catalog, db_name) = (total_of, database.to_string());
    ctx.register_udf(functions::database_size(database.to_string(), move || {
        catalog
            .tables(&db_name)
            .iter()
            .map(|t| {
                let size = t.store.size();
                size.row_bytes + size.log_bytes
            })
            .sum()
    }));
    functions::settings(ctx, settings);
    Ok(())
}

/// `plan` with `rewrite` applied to each expression of each node, bottom up, against the schema
/// of the node's first input (empty for a leaf); a rewritten select item, aggregate or window
/// expression keeps its name, which the plan above reads. With `subqueries`, the plans of
/// subqueries in expressions too.
pub fn map_plan_expressions(
    plan: datafusion::logical_expr::LogicalPlan,
    subqueries: bool,
    rewrite: impl Fn(
        datafusion::logical_expr::Expr,
        &datafusion::common::DFSchema,
    ) -> datafusion::common::Result<
        datafusion::common::tree_node::Transformed<datafusion::logical_expr::Expr>,
    >,
) -> datafusion::common::Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::logical_expr::LogicalPlan;
    let node_rewrite = |node: LogicalPlan| {
        let input = node
            .inputs()
            .first()
            .map(|i| std::sync::Arc::clone(i.schema()));
        let empty = datafusion::common::DFSchema::empty();
        let named = matches!(
            node,
            LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) | LogicalPlan::Window(_)
        );
        let names = datafusion::logical_expr::expr_rewriter::NamePreserver::new(&node);
        node.map_expressions(|e| {
            let saved = named.then(|| names.save(&e));
            let schema = input.as_deref().unwrap_or(&empty);
            let rewritten = e.transform_up(|e| rewrite(e, schema))?;
            match saved {
                Some(saved) if rewritten.transformed => {
                    rewritten.map_data(|e| Ok(saved.restore(e)))
                }
                _ => Ok(rewritten),
            }
        })
    };
    let rewritten = if subqueries {
        plan.transform_up_with_subqueries(node_rewrite)?
    } else {
        plan.transform_up(node_rewrite)?
    };
    Ok(rewritten.data)
}
