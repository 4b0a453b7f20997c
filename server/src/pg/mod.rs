//! Postgres compatibility for clients' catalog queries: what psql's backslash commands, drivers'
//! metadata calls and BI tools send, made to return what Postgres would.
//!
//! `rewrite` turns a catalog query into a form DataFusion plans (through `datafusion-pg-catalog`'s
//! compatibility rewrites); user queries are planned as written.

pub mod catalog;
pub mod fragments;
pub mod functions;
pub mod information_schema;
pub mod names;
pub mod oid_arrays;
pub mod rewrite;

use std::sync::Arc;

use datafusion::prelude::SessionContext;

use crate::error::SqlError;

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
    let (server, db_name) = (Arc::clone(server), database.to_string());
    let views: functions::ViewQueries = Arc::new(move |name| {
        let view = server.table(&db_name, name)?.def.view.clone()?;
        Some(format!(" {};", view.query.trim().trim_end_matches(';')))
    });
    functions::register(ctx, user, &relations, views);
    functions::settings(ctx, settings);
    Ok(())
}
