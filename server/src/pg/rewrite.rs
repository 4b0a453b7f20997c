//! Catalog queries get `datafusion-pg-catalog`'s Postgres-compatibility rewrites before planning.
//!
//! Clients introspect with SQL DataFusion does not plan as written: `COLLATE pg_catalog.default`,
//! `OPERATOR(pg_catalog.~)`, `pg_catalog.`-qualified function calls, `'name'::regclass`, `= ANY
//! (array)` and a few whole statements psql sends that have no equivalent yet (those come back as
//! empty results of the same shape). The rewrites are lossy for general SQL (a correlated scalar
//! subquery in a projection becomes NULL), so only statements that read `pg_catalog` or
//! `information_schema` get them; everything else is planned exactly as the user wrote it.

use std::ops::ControlFlow;
use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::{self, Visit, Visitor};
use datafusion_pg_catalog::pg_catalog::PG_CATALOG_TABLES;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use rivulet_planner::parse::{Parsed, Statement};

static PARSER: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

/// `parsed` as DataFusion should plan it: a query gets Postgres' result column names
/// ([`super::names`]), and a query over the system catalogs the compatibility rewrites too.
pub fn statement(parsed: Parsed) -> Parsed {
    let mut parsed = catalog_query(parsed);
    if let Statement::Sql { stmt, .. } = &mut parsed.statement
        && matches!(stmt.as_ref(), ast::Statement::Query(_))
    {
        super::names::postgres_names(stmt);
        prepend_pg_catalog(stmt);
    }
    parsed
}

/// Qualifies the relations Rivulet adds to `pg_catalog` (see [`super::catalog::EXTRA`]) when named
/// without a schema, as Postgres' search path finds them there first.
fn prepend_pg_catalog(stmt: &mut ast::Statement) {
    let _ = ast::visit_relations_mut(stmt, |name| {
        if let [part] = name.0.as_slice()
            && let Some(ident) = part.as_ident()
            && super::catalog::EXTRA.contains(&ident.value.to_ascii_lowercase().as_str())
        {
            name.0.insert(
                0,
                ast::ObjectNamePart::Identifier(ast::Ident::new("pg_catalog")),
            );
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `parsed`, rewritten for DataFusion if it is a query over the system catalogs.
fn catalog_query(mut parsed: Parsed) -> Parsed {
    let Statement::Sql { stmt, .. } = &mut parsed.statement else {
        return parsed;
    };
    if !matches!(stmt.as_ref(), ast::Statement::Query(_)) || !reads_catalog(stmt) {
        return parsed;
    }
    // The compatibility parser works on the text (some rewrites match token sequences); a text it
    // cannot parse keeps the statement as it was, so the user sees DataFusion's own error.
    let statements = match super::fragments::replace(&parsed.text) {
        Some(tokens) => super::fragments::parse(tokens).map(|s| vec![PARSER.rewrite(s)]),
        None => PARSER.parse(&parsed.text).ok(),
    };
    if let Some(mut statements) = statements
        && statements.len() == 1
        && let Some(rewritten) = statements.pop()
    {
        **stmt = rewritten;
    }
    parsed
}

/// Whether `stmt` names a `pg_catalog` or `information_schema` relation or function.
fn reads_catalog(stmt: &ast::Statement) -> bool {
    let mut finder = CatalogFinder;
    stmt.visit(&mut finder).is_break()
}

struct CatalogFinder;

fn is_system_name(name: &ast::ObjectName) -> bool {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.to_ascii_lowercase()))
        .collect();
    match parts.as_slice() {
        [schema, ..] if schema == "pg_catalog" || schema == "information_schema" => true,
        [_, schema, _] if schema == "pg_catalog" || schema == "information_schema" => true,
        [table] => {
            PG_CATALOG_TABLES.contains(&table.as_str())
                || super::catalog::EXTRA.contains(&table.as_str())
        }
        _ => false,
    }
}

impl Visitor for CatalogFinder {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ast::ObjectName) -> ControlFlow<()> {
        if is_system_name(relation) {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &ast::Expr) -> ControlFlow<()> {
        match expr {
            ast::Expr::Function(f)
                if f.name.0.len() > 1
                    && f.name
                        .0
                        .first()
                        .and_then(|p| p.as_ident())
                        .is_some_and(|i| i.value.eq_ignore_ascii_case("pg_catalog")) =>
            {
                ControlFlow::Break(())
            }
            ast::Expr::Collate { .. } => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let parsed = rivulet_planner::parse::parse_sql(sql)
            .unwrap()
            .pop()
            .unwrap();
        match statement(parsed).statement {
            Statement::Sql { stmt, .. } => stmt.to_string(),
            Statement::Flush => String::new(),
        }
    }

    #[test]
    fn user_queries_stay_as_written() {
        let sql = "SELECT a, (SELECT max(b) AS x FROM t2 WHERE t2.a = t.a) AS m FROM t";
        assert_eq!(rewritten(sql), sql);
    }

    #[test]
    fn catalog_queries_lose_collate() {
        let out = rewritten(
            "SELECT c.relname FROM pg_catalog.pg_class c \
             WHERE c.relname OPERATOR(pg_catalog.~) '^(t)$' COLLATE pg_catalog.default",
        );
        assert!(!out.contains("COLLATE"), "{out}");
    }
}
