//! Whole-row references in the JSON functions, as Postgres has them: in `row_to_json(t)`,
//! `to_json(t)`, `to_jsonb(t)`, `json_agg(t)` and `jsonb_agg(t)`, a relation `t` of the query's
//! FROM clause stands for its row (`SELECT json_agg(t) FROM (SELECT ..) t` is how applications
//! build JSON documents in SQL). DataFusion has no whole-row references: each such `t` becomes
//! `named_struct('a', t.a, 'b', t.b, ..)` of the relation's columns, which those functions
//! write as Postgres writes a row (`jsonb.rs`). A relation's columns are found by planning
//! `SELECT * FROM` it alone; one that cannot be planned alone (LATERAL, a CTE's name) keeps the
//! reference, and DataFusion's error.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{self, Visit, VisitMut, Visitor, VisitorMut};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use rivulet_planner::ddl::normalize_ident;

/// The functions that take a whole row.
const FUNCTIONS: &[&str] = &[
    "row_to_json",
    "to_json",
    "to_jsonb",
    "json_agg",
    "jsonb_agg",
];

/// `stmt` with its whole-row references spelled out, if it has any.
pub async fn rewrite(ctx: &SessionContext, stmt: &ast::Statement) -> Option<ast::Statement> {
    let mut found = Found::default();
    let _ = stmt.visit(&mut found);
    if found.factors.is_empty() {
        return None;
    }
    let mut columns: HashMap<String, Vec<Column>> = HashMap::new();
    for factor in found.factors {
        if let Some(names) = columns_of(ctx, &factor).await {
            columns.insert(factor, names);
        }
    }
    let mut stmt = stmt.clone();
    let _ = VisitMut::visit(&mut stmt, &mut Spell { columns: &columns });
    Some(stmt)
}

/// The relations of `select`'s FROM clause by the name a query refers to them with, each with its
/// text (what [`columns_of`] plans).
fn relations(select: &ast::Select) -> HashMap<String, String> {
    (super::outer_names::from_items(select).into_iter())
        .map(|(name, factor)| (name, factor.to_string()))
        .collect()
}

/// The whole-row argument of `call`, if it is one of [`FUNCTIONS`] called on a bare name.
fn whole_row_arg(call: &ast::Function) -> Option<&ast::Ident> {
    let name = call.name.0.last()?.as_ident()?.value.to_ascii_lowercase();
    if !FUNCTIONS.contains(&name.as_str()) {
        return None;
    }
    let ast::FunctionArguments::List(list) = &call.args else {
        return None;
    };
    match list.args.as_slice() {
        [
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Identifier(ident))),
            ..,
        ] => Some(ident),
        _ => None,
    }
}

/// The FROM relations of every select with a whole-row reference.
#[derive(Default)]
struct Found {
    factors: HashSet<String>,
}

impl Visitor for Found {
    type Break = ();

    fn pre_visit_query(&mut self, query: &ast::Query) -> ControlFlow<()> {
        if let ast::SetExpr::Select(select) = query.body.as_ref() {
            let relations = relations(select);
            let mut referenced = false;
            let _ = ast::visit_expressions(&select.projection, |expr| {
                if let ast::Expr::Function(call) = expr
                    && let Some(ident) = whole_row_arg(call)
                    && relations.contains_key(&normalize_ident(ident))
                {
                    referenced = true;
                }
                ControlFlow::<()>::Continue(())
            });
            if referenced {
                self.factors.extend(relations.into_values());
            }
        }
        ControlFlow::Continue(())
    }
}

/// Replaces each whole-row reference by the relation's columns in a struct.
struct Spell<'a> {
    columns: &'a HashMap<String, Vec<Column>>,
}

impl VisitorMut for Spell<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
        let ast::SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        let relations = relations(select);
        // A column of that name in any of the relations is what the name means, as in Postgres.
        let column_names: HashSet<&String> = (relations.values())
            .filter_map(|factor| self.columns.get(factor))
            .flatten()
            .map(|c| &c.name)
            .collect();
        let columns = self.columns;
        let _ = ast::visit_expressions_mut(&mut select.projection, |expr| {
            let ast::Expr::Function(call) = expr else {
                return ControlFlow::<()>::Continue(());
            };
            let Some(ident) = whole_row_arg(call) else {
                return ControlFlow::Continue(());
            };
            let name = normalize_ident(ident);
            let Some(names) = relations.get(&name).and_then(|f| columns.get(f)) else {
                return ControlFlow::Continue(());
            };
            if column_names.contains(&name) {
                return ControlFlow::Continue(());
            }
            let relation = ident.clone();
            let mut args = Vec::with_capacity(names.len() * 2);
            for column in names {
                // A struct's fields carry no declared type: a `json` or `jsonb` one says so in
                // its name.
                let field = match column.json {
                    true => format!("{}{JSON_FIELD}", column.name),
                    false => column.name.clone(),
                };
                args.push(ast::Expr::Value(
                    ast::Value::SingleQuotedString(field).with_empty_span(),
                ));
                args.push(ast::Expr::CompoundIdentifier(vec![
                    relation.clone(),
                    ast::Ident::with_quote('"', column.name.clone()),
                ]));
            }
            let row = super::rewrite::call("named_struct", args, vec![]);
            if let ast::FunctionArguments::List(list) = &mut call.args
                && let Some(first) = list.args.first_mut()
            {
                *first = ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(row));
            }
            ControlFlow::Continue(())
        });
        ControlFlow::Continue(())
    }
}

/// The end of the name of a row's field that holds `json` or `jsonb` (see `jsonb.rs`).
pub const JSON_FIELD: &str = "\u{1}json";

/// A column of a relation a whole-row reference names.
struct Column {
    name: String,
    /// Whether it is `json` or `jsonb`, whose text is JSON, not a string.
    json: bool,
}

/// The columns of the FROM item `factor` (its text), planned alone.
async fn columns_of(ctx: &SessionContext, factor: &str) -> Option<Vec<Column>> {
    let sql = format!("SELECT * FROM {factor}");
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, &sql).ok()?;
    let stmt = statements.pop()?;
    let plan = ctx
        .state()
        .statement_to_plan(DFStatement::Statement(Box::new(stmt)))
        .await
        .ok()?;
    Some(
        plan.schema()
            .fields()
            .iter()
            .map(|f| Column {
                name: f.name().clone(),
                json: matches!(
                    f.metadata()
                        .get(super::wire_types::PG_TYPE)
                        .map(String::as_str),
                    Some("json" | "jsonb")
                ),
            })
            .collect(),
    )
}
