//! A subquery's references to a table of an enclosing query, resolved as Postgres resolves them.
//! In `SELECT (SELECT sum(amount) FROM pay WHERE pay.acc = acc.id) FROM acc`, `acc.id` is the
//! column `id` of the enclosing query's table `acc`, though `pay` has a column `acc`: Postgres
//! looks for a relation of that name first, in every enclosing query, and reads a column's field
//! only after. DataFusion reads the subquery's column `acc` first and fails ("cannot access field
//! .. type Int32 is not Struct").
//!
//! Such a reference (`table.column`, where the subquery's own relations have no `table` and an
//! enclosing query reads table `table` by its name) is written out in full,
//! `database.public.table.column`, which DataFusion reads only as that table's column.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{self, VisitMut, VisitorMut};

use rivulet_planner::ddl::normalize_ident;

use crate::catalog::{Catalog, DEFAULT_SCHEMA};

/// `stmt` with its references to enclosing queries' tables written out in full, if it has any.
pub fn qualify(stmt: &ast::Statement, catalog: &Catalog, database: &str) -> Option<ast::Statement> {
    let mut stmt = stmt.clone();
    let mut scopes = Scopes {
        catalog,
        database,
        stack: Vec::new(),
        ctes: HashSet::new(),
        changed: false,
    };
    let _ = VisitMut::visit(&mut stmt, &mut scopes);
    scopes.changed.then_some(stmt)
}

/// The relations of a query's FROM clause, by the name the query refers to them with; `tables`
/// those that are tables read by their own name.
#[derive(Default)]
struct Scope {
    names: HashSet<String>,
    tables: HashSet<String>,
}

struct Scopes<'a> {
    catalog: &'a Catalog,
    database: &'a str,
    /// The queries being visited, outermost first.
    stack: Vec<Scope>,
    /// The statement's CTE names, which are no tables.
    ctes: HashSet<String>,
    changed: bool,
}

/// The FROM items of `select`, joined ones and those inside parentheses included, each with the
/// name the query refers to it by (its alias, else a table's own name, folded as Postgres folds
/// identifiers); `whole_row.rs` reads them too.
pub fn from_items(select: &ast::Select) -> Vec<(String, &ast::TableFactor)> {
    fn add<'a>(factor: &'a ast::TableFactor, out: &mut Vec<(String, &'a ast::TableFactor)>) {
        if let ast::TableFactor::NestedJoin {
            table_with_joins, ..
        } = factor
        {
            add(&table_with_joins.relation, out);
            for join in &table_with_joins.joins {
                add(&join.relation, out);
            }
            return;
        }
        let name = match factor {
            ast::TableFactor::Table {
                alias: Some(alias), ..
            }
            | ast::TableFactor::Derived {
                alias: Some(alias), ..
            }
            | ast::TableFactor::Function {
                alias: Some(alias), ..
            }
            | ast::TableFactor::UNNEST {
                alias: Some(alias), ..
            }
            | ast::TableFactor::TableFunction {
                alias: Some(alias), ..
            } => Some(normalize_ident(&alias.name)),
            ast::TableFactor::Table { name, .. } => name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(normalize_ident),
            _ => None,
        };
        if let Some(name) = name {
            out.push((name, factor));
        }
    }
    let mut out = Vec::new();
    for from in &select.from {
        add(&from.relation, &mut out);
        for join in &from.joins {
            add(&join.relation, &mut out);
        }
    }
    out
}

impl Scopes<'_> {
    fn scope_of(&self, body: &ast::SetExpr, scope: &mut Scope) {
        match body {
            ast::SetExpr::Select(select) => {
                for (name, factor) in from_items(select) {
                    // A table read by its own, unqualified name (not a CTE's).
                    if let ast::TableFactor::Table {
                        name: table,
                        alias: None,
                        ..
                    } = factor
                        && table.0.len() == 1
                        && !self.ctes.contains(&name)
                        && self.catalog.table(self.database, &name).is_some()
                    {
                        scope.tables.insert(name.clone());
                    }
                    scope.names.insert(name);
                }
            }
            ast::SetExpr::SetOperation { left, right, .. } => {
                self.scope_of(left, scope);
                self.scope_of(right, scope);
            }
            _ => {}
        }
    }
}

impl VisitorMut for Scopes<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            self.ctes.extend(
                with.cte_tables
                    .iter()
                    .map(|c| normalize_ident(&c.alias.name)),
            );
        }
        let mut scope = Scope::default();
        self.scope_of(&query.body, &mut scope);
        self.stack.push(scope);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &mut ast::Query) -> ControlFlow<()> {
        self.stack.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
        let ast::Expr::CompoundIdentifier(parts) = expr else {
            return ControlFlow::Continue(());
        };
        let ([relation, column], Some((innermost, outer))) =
            (parts.as_slice(), self.stack.split_last())
        else {
            return ControlFlow::Continue(());
        };
        let name = normalize_ident(relation);
        if innermost.names.contains(&name) {
            return ControlFlow::Continue(());
        }
        // The innermost enclosing query with a relation of that name is the one meant.
        let Some(scope) = outer.iter().rev().find(|s| s.names.contains(&name)) else {
            return ControlFlow::Continue(());
        };
        if scope.tables.contains(&name) {
            let (relation, column) = (relation.clone(), column.clone());
            *parts = vec![
                ast::Ident::with_quote('"', self.database),
                ast::Ident::new(DEFAULT_SCHEMA),
                relation,
                column,
            ];
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}
