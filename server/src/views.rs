//! Plain (not materialized) views: expanded into their queries before planning.
//!
//! A view stores no rows; like Postgres' rewriter, every statement that names one reads
//! `(its query) AS name(its columns)` in its place, so ad-hoc queries, DML's inputs and
//! materialized views over it all see the query. The stored query is SQL text bound by name when
//! it is expanded (Postgres binds it by OID at CREATE): dropping what it reads is refused while it
//! exists (see [`dependents`]). Expansion is recursive, bounded by [`MAX_DEPTH`], which also
//! catches a view that reads itself.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, Ident, Query, TableAlias, TableAliasColumnDef, TableFactor, Visit, VisitMut, Visitor,
    VisitorMut,
};
use rivulet_planner::ddl::object_name;
use rivulet_planner::parse::{Statement, parse_sql};

use crate::catalog::{Catalog, DEFAULT_SCHEMA};
use crate::error::{SqlError, sqlstate};

/// How deep views may read views.
const MAX_DEPTH: usize = 32;

/// `stmt` with every plain view of `database` it names replaced by the view's query.
pub fn expand(
    stmt: &ast::Statement,
    catalog: &Catalog,
    database: &str,
) -> Result<ast::Statement, SqlError> {
    if !catalog
        .tables(database)
        .iter()
        .any(|t| t.def.plain_view.is_some())
    {
        return Ok(stmt.clone());
    }
    // A view is no target of UPDATE or DELETE (its rows are its query's).
    let target = match stmt {
        ast::Statement::Update(u) => Some(&u.table.relation),
        ast::Statement::Delete(d) => match &d.from {
            ast::FromTable::WithFromKeyword(t) | ast::FromTable::WithoutKeyword(t) => {
                t.first().map(|t| &t.relation)
            }
        },
        _ => None,
    };
    if let Some(TableFactor::Table { name, .. }) = target
        && let Ok((None | Some(_), view)) = object_name(name)
        && let Some(entry) = catalog.table(database, &view)
        && entry.def.plain_view.is_some()
    {
        return Err(not_updatable(&view));
    }
    let mut stmt = stmt.clone();
    expand_in(&mut stmt, catalog, database, 0)?;
    Ok(stmt)
}

fn expand_in<T: VisitMut + Visit>(
    node: &mut T,
    catalog: &Catalog,
    database: &str,
    depth: usize,
) -> Result<(), SqlError> {
    let mut ctes = CteNames::default();
    let _ = Visit::visit(node, &mut ctes);
    let mut expander = Expander {
        catalog,
        database,
        depth,
        ctes: ctes.0,
    };
    match VisitMut::visit(node, &mut expander) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// The names of the common table expressions of a statement, which hide views of that name.
#[derive(Default)]
struct CteNames(HashSet<String>);

impl Visitor for CteNames {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.0
                    .insert(rivulet_planner::ddl::normalize_ident(&cte.alias.name));
            }
        }
        ControlFlow::Continue(())
    }
}

struct Expander<'a> {
    catalog: &'a Catalog,
    database: &'a str,
    depth: usize,
    ctes: HashSet<String>,
}

impl Expander<'_> {
    /// The expanded derived table for `factor` when it names a plain view.
    fn replacement(&self, factor: &TableFactor) -> Result<Option<TableFactor>, SqlError> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        else {
            return Ok(None);
        };
        let Ok((schema, view)) = object_name(name) else {
            return Ok(None);
        };
        if schema.as_deref().is_some_and(|s| s != DEFAULT_SCHEMA)
            || (schema.is_none() && self.ctes.contains(&view))
        {
            return Ok(None);
        }
        let Some(entry) = self.catalog.table(self.database, &view) else {
            return Ok(None);
        };
        let Some(text) = &entry.def.plain_view else {
            return Ok(None);
        };
        if self.depth >= MAX_DEPTH {
            return Err(SqlError::new(
                sqlstate::INVALID_OBJECT_DEFINITION,
                format!("infinite recursion detected in rules for relation \"{view}\""),
            ));
        }
        let mut query = view_query(text, &view)?;
        expand_in(&mut query, self.catalog, self.database, self.depth + 1)?;
        // The view's own column names, renamed further by the reference's alias columns.
        let mut columns: Vec<TableAliasColumnDef> = entry
            .def
            .columns
            .iter()
            .map(|c| TableAliasColumnDef {
                name: Ident::with_quote('"', c.name.clone()),
                data_type: None,
            })
            .collect();
        let name = match alias {
            Some(alias) => {
                for (column, renamed) in columns.iter_mut().zip(&alias.columns) {
                    column.name = renamed.name.clone();
                }
                alias.name.clone()
            }
            None => Ident::with_quote('"', view.clone()),
        };
        Ok(Some(TableFactor::Derived {
            lateral: false,
            subquery: Box::new(query),
            alias: Some(TableAlias {
                explicit: true,
                name,
                columns,
                at: None,
            }),
            sample: None,
        }))
    }
}

impl VisitorMut for Expander<'_> {
    type Break = SqlError;

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<SqlError> {
        match self.replacement(factor) {
            Ok(Some(expanded)) => *factor = expanded,
            Ok(None) => {}
            Err(e) => return ControlFlow::Break(e),
        }
        ControlFlow::Continue(())
    }
}

/// The error for a write into view `name`.
pub fn not_updatable(name: &str) -> SqlError {
    SqlError::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("cannot change view \"{name}\""),
    )
    .with_detail("Views are not updatable in Rivulet.")
    .with_hint("Change the tables the view reads.")
}

/// A view's stored query, parsed.
fn view_query(text: &str, view: &str) -> Result<Query, SqlError> {
    let corrupt = || {
        SqlError::new(
            sqlstate::DATA_CORRUPTED,
            format!("the stored query of view \"{view}\" is not a query"),
        )
    };
    let parsed = parse_sql(text)?;
    let [parsed] = parsed.as_slice() else {
        return Err(corrupt());
    };
    match &parsed.statement {
        Statement::Sql { stmt, .. } => match stmt.as_ref() {
            ast::Statement::Query(q) => Ok(q.as_ref().clone()),
            _ => Err(corrupt()),
        },
        _ => Err(corrupt()),
    }
}

/// The relations (by folded name) a query's text reads; empty when it does not parse.
pub fn relations_read(text: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    let Ok(parsed) = parse_sql(text) else {
        return names;
    };
    for p in &parsed {
        if let Statement::Sql { stmt, .. } = &p.statement {
            let _ = ast::visit_relations(stmt.as_ref(), |name| {
                if let Ok((None | Some(_), relation)) = object_name(name) {
                    names.insert(relation);
                }
                ControlFlow::<()>::Continue(())
            });
        }
    }
    names
}

/// The views (plain, materialized, and sinks) of `database` whose queries name `relation`,
/// as `(kind, name)`: what Postgres would list as depending on it.
pub fn dependents(
    catalog: &Catalog,
    database: &str,
    relation: &str,
) -> Vec<(&'static str, String)> {
    catalog
        .tables(database)
        .iter()
        .filter(|t| t.def.name != relation)
        .filter_map(|t| {
            let (kind, query) = match (&t.def.plain_view, &t.def.view) {
                (Some(q), _) => ("view", q),
                (None, Some(v)) if v.sink.is_some() => ("sink", &v.query),
                (None, Some(v)) => ("materialized view", &v.query),
                (None, None) => return None,
            };
            relations_read(query)
                .contains(relation)
                .then(|| (kind, t.def.name.clone()))
        })
        .collect()
}
