//! Result column names as Postgres gives them.
//!
//! DataFusion names an unaliased select item after its whole expression (`count(*)`,
//! `CAST(x AS Utf8)`) and refuses two items with the same name (`SELECT 1, 1`). Postgres names it
//! after the column or function it ends in (`count`, `x`), the type of a cast of something
//! nameless (`text`), or `?column?`, and allows duplicates. Drivers that return rows keyed by
//! name (node-postgres, psycopg's dict rows, JDBC's `getString("count")`) depend on these names.
//!
//! So every unaliased item of a query's select lists gets Postgres' name as an alias; a name already
//! taken in the same list gets a hidden suffix ([`MARK`] and a number) that keeps DataFusion's
//! names unique, and [`visible`] strips when the result is described to the client.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::sql::sqlparser::ast::{
    self, Expr, Ident, Query, SelectItem, SetExpr, VisitMut, VisitorMut,
};

/// Starts the hidden suffix of a duplicate name; no SQL identifier contains it.
const MARK: char = '\u{1}';

/// Gives the unaliased items of every select list in `stmt` Postgres' names.
pub fn postgres_names(stmt: &mut ast::Statement) {
    let _ = stmt.visit(&mut Namer);
}

struct Namer;

impl VisitorMut for Namer {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        name_set_expr(&mut query.body);
        ControlFlow::Continue(())
    }
}

fn name_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => name_items(&mut select.projection),
        SetExpr::SetOperation { left, right, .. } => {
            name_set_expr(left);
            name_set_expr(right);
        }
        // A parenthesized query is visited as a query of its own.
        _ => {}
    }
}

fn name_items(items: &mut [SelectItem]) {
    // A wildcard's columns are unknown here; leave such lists as they are.
    if items.iter().any(|i| {
        matches!(
            i,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    }) {
        return;
    }
    let mut taken: HashSet<String> = HashSet::new();
    for (n, item) in items.iter_mut().enumerate() {
        match item {
            SelectItem::ExprWithAlias { alias, .. } => {
                let name = alias_name(alias);
                if !taken.insert(name.clone()) {
                    alias.value = format!("{name}{MARK}{n}");
                    alias.quote_style = Some('"');
                }
            }
            SelectItem::UnnamedExpr(expr) => {
                let name = column_name(expr);
                let unique = if taken.insert(name.clone()) {
                    // A plain column keeps its own (qualified) name: DataFusion resolves ORDER BY
                    // and GROUP BY against it.
                    if matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                        continue;
                    }
                    name
                } else {
                    format!("{name}{MARK}{n}")
                };
                *item = SelectItem::ExprWithAlias {
                    expr: expr.clone(),
                    alias: Ident::with_quote('"', unique),
                };
            }
            _ => {}
        }
    }
}

/// The name an alias gives, case-folded as Postgres folds unquoted identifiers.
fn alias_name(alias: &Ident) -> String {
    match alias.quote_style {
        Some(_) => alias.value.clone(),
        None => alias.value.to_lowercase(),
    }
}

fn is_procedure_cast(f: &ast::Function) -> bool {
    f.name.0.len() == 1
        && f.name.0[0]
            .as_ident()
            .is_some_and(|i| matches!(i.value.as_str(), "rivulet_regproc" | "rivulet_regprocedure"))
}

/// Postgres' name for an unaliased select item (its `FigureColname`).
fn column_name(expr: &Expr) -> String {
    figure(expr).unwrap_or_else(|| "?column?".to_string())
}

fn figure(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Identifier(i) => Some(alias_name(i)),
        Expr::CompoundIdentifier(parts) => parts.last().map(alias_name),
        // `x::regproc` as the catalog rewrites turn it into a call: named as the cast.
        Expr::Function(f) if is_procedure_cast(f) => match &f.args {
            ast::FunctionArguments::List(list) => match list.args.as_slice() {
                [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e))] => figure(e),
                _ => None,
            },
            _ => None,
        }
        .or_else(|| {
            f.name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(|i| i.value.trim_start_matches("rivulet_").to_string())
        }),
        Expr::Function(f) => f.name.0.last().and_then(|p| p.as_ident()).map(alias_name),
        // Named after what is cast, else after the outermost type (`'..'::uuid::text` is `text`).
        Expr::Cast {
            expr, data_type, ..
        } => {
            let mut inner = expr.as_ref();
            while let Expr::Cast { expr, .. } | Expr::Nested(expr) = inner {
                inner = expr.as_ref();
            }
            figure(inner).or_else(|| Some(type_name(data_type)))
        }
        Expr::AtTimeZone { .. } => Some("timezone".into()),
        Expr::Nested(inner) => figure(inner),
        Expr::Case { .. } => Some("case".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Array(_) => Some("array".into()),
        Expr::Subquery(q) => subquery_name(q),
        Expr::Extract { .. } => Some("extract".into()),
        Expr::Position { .. } => Some("position".into()),
        Expr::Substring {
            shorthand: true, ..
        } => Some("substr".into()),
        Expr::Substring { .. } => Some("substring".into()),
        Expr::Trim { .. } => Some("btrim".into()),
        Expr::Ceil { .. } => Some("ceil".into()),
        Expr::Floor { .. } => Some("floor".into()),
        Expr::Overlay { .. } => Some("overlay".into()),
        _ => None,
    }
}

/// A scalar subquery is named after its single output column.
fn subquery_name(q: &Query) -> Option<String> {
    match q.body.as_ref() {
        SetExpr::Select(s) => match s.projection.as_slice() {
            [SelectItem::ExprWithAlias { alias, .. }] => Some(alias_name(alias)),
            [SelectItem::UnnamedExpr(e)] => figure(e),
            _ => None,
        },
        _ => None,
    }
}

/// The Postgres name of a cast's target type, as a column name.
fn type_name(t: &ast::DataType) -> String {
    use ast::DataType as T;
    match t {
        T::Int(_) | T::Integer(_) | T::Int4(_) => "int4".into(),
        T::BigInt(_) | T::Int8(_) => "int8".into(),
        T::SmallInt(_) | T::Int2(_) => "int2".into(),
        T::Real | T::Float4 => "float4".into(),
        T::Double(_) | T::DoublePrecision | T::Float8 => "float8".into(),
        T::Boolean | T::Bool => "bool".into(),
        T::Varchar(_) | T::CharacterVarying(_) => "varchar".into(),
        T::Char(_) | T::Character(_) => "bpchar".into(),
        T::Numeric(_) | T::Decimal(_) => "numeric".into(),
        T::Timestamp(_, ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz) => {
            "timestamptz".into()
        }
        T::Timestamp(..) => "timestamp".into(),
        // An array cast is named after the element type (`$1::int[]` is `int4`).
        T::Array(
            ast::ArrayElemTypeDef::SquareBracket(elem, _)
            | ast::ArrayElemTypeDef::AngleBracket(elem)
            | ast::ArrayElemTypeDef::Parenthesis(elem),
        ) => type_name(elem),
        // `pg_catalog.text` and friends: the type's own name.
        T::Custom(name, _) => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase())
            .unwrap_or_else(|| "?column?".into()),
        other => other.to_string().to_lowercase(),
    }
}

/// The field metadata `datafusion-pg-catalog` and `arrow-pg` use for an OID column's Postgres type.
pub const OID_ALIAS: &str = "pg.oid_alias";

/// `schema` as the client sees it: the hidden suffixes of duplicate names removed, and OID columns
/// typed `oid`. `datafusion-pg-catalog` tags catalog columns as `regtype`, `regclass`, ...; in
/// Postgres those columns are `oid` (a `reg*` type prints a name, and these hold numbers), and
/// drivers decode `oid` as an integer but a `reg*` type as text or raw bytes.
pub fn visible(schema: &Schema) -> SchemaRef {
    let is_reg = |f: &Field| {
        f.metadata()
            .get(OID_ALIAS)
            .is_some_and(|k| k.starts_with("reg"))
    };
    // The tag outlives a cast (`elemtype::regtype::text`, asyncpg's type introspection): on a
    // column that is no longer a number it would make the text travel as an `oid`.
    let stale = |f: &Field| f.metadata().contains_key(OID_ALIAS) && !f.data_type().is_integer();
    if !schema
        .fields()
        .iter()
        .any(|f| f.name().contains(MARK) || is_reg(f) || stale(f))
    {
        return Arc::new(schema.clone());
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let name = f.name().split(MARK).next().unwrap_or_default().to_string();
            let mut field = f.as_ref().clone().with_name(name);
            if stale(&field) {
                let mut metadata = field.metadata().clone();
                metadata.remove(OID_ALIAS);
                field = field.with_metadata(metadata);
            } else if is_reg(&field) {
                let mut metadata = field.metadata().clone();
                metadata.insert(OID_ALIAS.to_string(), "oid".to_string());
                field = field.with_metadata(metadata);
            }
            field
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(sql: &str) -> String {
        let mut stmt = datafusion::sql::sqlparser::parser::Parser::parse_sql(
            &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
            sql,
        )
        .unwrap()
        .pop()
        .unwrap();
        postgres_names(&mut stmt);
        stmt.to_string().replace(MARK, "#")
    }

    #[test]
    fn items_get_postgres_names() {
        assert_eq!(
            named("SELECT count(*), t.a, a::text, 1, 'x'::text, (SELECT max(b) FROM u) FROM t"),
            "SELECT count(*) AS \"count\", t.a, a::TEXT AS \"a#2\", 1 AS \"?column?\", \
             'x'::TEXT AS \"text\", (SELECT max(b) AS \"max\" FROM u) AS \"max\" FROM t"
        );
    }

    /// Postgres 18's names.
    #[test]
    fn casts_substr_and_time_zones_as_postgres() {
        assert_eq!(
            named(
                "SELECT substr(a, 2), b AT TIME ZONE 'UTC', 'x'::uuid::text, 1::int::text, \
                 a::int::text FROM t"
            ),
            "SELECT SUBSTR(a, 2) AS \"substr\", b AT TIME ZONE 'UTC' AS \"timezone\", \
             'x'::UUID::TEXT AS \"text\", 1::INT::TEXT AS \"text#3\", a::INT::TEXT AS \"a\" FROM t"
        );
    }

    #[test]
    fn duplicates_get_hidden_suffixes() {
        assert_eq!(
            named("SELECT 1, 1 UNION ALL SELECT a, a AS A FROM t"),
            "SELECT 1 AS \"?column?\", 1 AS \"?column?#1\" UNION ALL SELECT a, a AS \"a#1\" FROM t"
        );
        assert_eq!(named("SELECT *, a FROM t"), "SELECT *, a FROM t");
    }
}
