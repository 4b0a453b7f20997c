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
use datafusion_pg_catalog::sql::rules::{RewriteRegCastToSubquery, SqlStatementRewriteRule};
use rivulet_planner::parse::{Parsed, Statement};

static PARSER: LazyLock<PostgresCompatibilityParser> =
    LazyLock::new(PostgresCompatibilityParser::new);

/// `parsed` as DataFusion should plan it: a query gets Postgres' result column names
/// ([`super::names`]), and a query over the system catalogs the compatibility rewrites too.
pub fn statement(parsed: Parsed) -> Parsed {
    let mut parsed = catalog_query(parsed);
    if let Statement::Sql { stmt, .. } = &mut parsed.statement {
        super::distinct_from::rewrite(stmt);
    }
    if let Statement::Sql { stmt, .. } = &mut parsed.statement
        && matches!(stmt.as_ref(), ast::Statement::Query(_))
    {
        super::names::postgres_names(stmt);
        prepend_pg_catalog(stmt);
        like_escapes(stmt);
        regex_substrings(stmt);
    }
    if let Statement::Sql { stmt, .. } = &mut parsed.statement {
        if matches!(stmt.as_ref(), ast::Statement::Insert(_)) {
            // An INSERT's SELECT may repeat a name (`SELECT g, g % 2, g`): columns match by
            // position.
            super::names::postgres_names(stmt);
        }
        array_literals(stmt);
        super::typing::exponent_literals(stmt);
        super::datetime_input::literals(stmt);
        super::datetime_input::local_time(stmt);
        super::make::rewrite(stmt);
        super::extract::rewrite(stmt);
        to_timestamp_templates(stmt);
        super::at_time_zone::rewrite(stmt);
        super::similar::rewrite(stmt);
        root_operators(stmt);
        fetch_first(stmt);
        values_casts(stmt);
        update_assignments(stmt);
        user_keyword(stmt);
        series_interval_steps(stmt);
        super::set_returning::series_rows(stmt);
        generate_subscripts(stmt);
        int4_series(stmt);
        function_column_aliases(stmt);
        super::subquery::rewrite(stmt);
        super::set_returning::rewrite(stmt);
    }
    parsed
}

/// UPDATE's `SET (a, b) = (x, y)` as `SET a = x, b = y` (`SET a = DEFAULT` is the column's
/// default: `exec/defaults.rs`).
fn update_assignments(stmt: &mut ast::Statement) {
    let ast::Statement::Update(update) = stmt else {
        return;
    };
    let mut assignments = Vec::with_capacity(update.assignments.len());
    for assignment in std::mem::take(&mut update.assignments) {
        match (assignment.target, assignment.value) {
            (ast::AssignmentTarget::Tuple(columns), ast::Expr::Tuple(values))
                if columns.len() == values.len() =>
            {
                for (column, value) in columns.into_iter().zip(values) {
                    assignments.push(ast::Assignment {
                        target: ast::AssignmentTarget::ColumnName(column),
                        value,
                    });
                }
            }
            (target, value) => assignments.push(ast::Assignment { target, value }),
        }
    }
    update.assignments = assignments;
}

/// A VALUES column with an explicit cast in one row (`'{}'::json`, `'a'::varchar(3)`) and a bare
/// literal or NULL in another: Postgres gives the column the cast's type, where DataFusion refuses
/// the rows' different field metadata (the declared type a cast carries). The bare ones get the
/// same cast.
fn values_casts(stmt: &mut ast::Statement) {
    fn cast_values(body: &mut ast::SetExpr) {
        match body {
            ast::SetExpr::Values(values) => {
                let width = values.rows.first().map_or(0, |row| row.content.len());
                for j in 0..width {
                    let cast = values.rows.iter().find_map(|row| match row.get(j) {
                        Some(ast::Expr::Cast {
                            data_type,
                            array: false,
                            format: None,
                            ..
                        }) => Some(data_type.clone()),
                        _ => None,
                    });
                    let Some(data_type) = cast else {
                        continue;
                    };
                    for row in &mut values.rows {
                        if let Some(value @ ast::Expr::Value(_)) = row.get_mut(j) {
                            *value = ast::Expr::Cast {
                                kind: ast::CastKind::Cast,
                                expr: Box::new(value.clone()),
                                data_type: data_type.clone(),
                                array: false,
                                format: None,
                            };
                        }
                    }
                }
            }
            ast::SetExpr::SetOperation { left, right, .. } => {
                cast_values(left);
                cast_values(right);
            }
            ast::SetExpr::Query(query) => cast_values(&mut query.body),
            _ => {}
        }
    }
    struct Values;
    impl ast::VisitorMut for Values {
        type Break = ();
        fn post_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
            cast_values(&mut query.body);
            ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(stmt, &mut Values);
}

/// `FETCH FIRST n ROWS ONLY` (the standard's LIMIT, which JDBC tools write) as `LIMIT n`; without
/// a count, one row. `WITH TIES` and `PERCENT` are left to DataFusion, which refuses them.
fn fetch_first(stmt: &mut ast::Statement) {
    struct Fetches;
    impl ast::VisitorMut for Fetches {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
            let Some(fetch) = query.fetch.as_ref() else {
                return ControlFlow::Continue(());
            };
            if fetch.with_ties || fetch.percent {
                return ControlFlow::Continue(());
            }
            let count = fetch.quantity.clone().unwrap_or_else(|| {
                ast::Expr::Value(ast::Value::Number("1".into(), false).with_empty_span())
            });
            let offset = match query.limit_clause.take() {
                None => None,
                Some(ast::LimitClause::LimitOffset {
                    limit: None,
                    offset,
                    limit_by,
                }) if limit_by.is_empty() => offset,
                Some(other) => {
                    // LIMIT and FETCH both: DataFusion's refusal stands.
                    query.limit_clause = Some(other);
                    return ControlFlow::Continue(());
                }
            };
            query.fetch = None;
            query.limit_clause = Some(ast::LimitClause::LimitOffset {
                limit: Some(count),
                offset,
                limit_by: vec![],
            });
            ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(stmt, &mut Fetches);
}

/// Postgres' prefix operators `|/ x` (square root), `||/ x` (cube root) and `@ x` (absolute
/// value) as the functions, which DataFusion has.
fn root_operators(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::UnaryOp { op, expr: operand } = expr {
            let function = match op {
                ast::UnaryOperator::PGSquareRoot => "sqrt",
                ast::UnaryOperator::PGCubeRoot => "cbrt",
                ast::UnaryOperator::PGAbs => "abs",
                _ => return ControlFlow::<()>::Continue(()),
            };
            *expr = call(function, vec![operand.as_ref().clone()], vec![]);
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `user` and `current_schema`, unquoted, are keywords in Postgres for `current_user` and
/// `current_schema()` (a column of either name must be quoted); DataFusion reads them as column
/// names.
fn user_keyword(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        // Each keyword, and the function it calls.
        let function = |id: &ast::Ident| {
            if id.quote_style.is_some() {
                None
            } else if id.value.eq_ignore_ascii_case("user") {
                Some("current_user")
            } else if id.value.eq_ignore_ascii_case("current_schema") {
                Some("current_schema")
            } else {
                None
            }
        };
        let keyword = match expr {
            ast::Expr::Identifier(id) => function(id),
            // The Postgres dialect parses it as a call without parentheses.
            ast::Expr::Function(f) if matches!(f.args, ast::FunctionArguments::None) => {
                match f.name.0.as_slice() {
                    [part] => part.as_ident().and_then(function),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(function) = keyword {
            *expr = call(function, vec![], vec![]);
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `generate_subscripts(a, dim [, reverse])`, Postgres' set-returning function of an array's
/// subscripts: in a select list it becomes `unnest(generate_series(1, array_length(a, dim)))`
/// (counting down when `reverse`, a literal), in FROM the same `unnest` as a table. Arrays here
/// start at 1.
fn generate_subscripts(stmt: &mut ast::Statement) {
    fn subscripts(args: &ast::FunctionArguments) -> Option<ast::Expr> {
        let ast::FunctionArguments::List(list) = args else {
            return None;
        };
        let args: Vec<ast::Expr> = (list.args.iter())
            .map(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect::<Option<_>>()?;
        let (array, dim, reverse) = match args.as_slice() {
            [a, d] => (a, d, None),
            [a, d, r] => (a, d, Some(r)),
            _ => return None,
        };
        let one = || ast::Expr::value(ast::Value::Number("1".into(), false));
        let len = call("array_length", vec![array.clone(), dim.clone()], vec![]);
        // `reverse` as written: a literal (what callers write), else the call is left alone.
        let reverse = match reverse {
            None => false,
            Some(ast::Expr::Value(v)) => match &v.value {
                ast::Value::Boolean(b) => *b,
                _ => return None,
            },
            Some(_) => return None,
        };
        let series = if reverse {
            let minus_one = ast::Expr::UnaryOp {
                op: ast::UnaryOperator::Minus,
                expr: Box::new(one()),
            };
            call("generate_series", vec![len, one(), minus_one], vec![])
        } else {
            call("generate_series", vec![one(), len], vec![])
        };
        Some(series)
    }
    let is_subscripts = |name: &ast::ObjectName| {
        name.0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|f| f.value.eq_ignore_ascii_case("generate_subscripts"))
    };
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Function(f) = expr
            && is_subscripts(&f.name)
            && let Some(series) = subscripts(&f.args)
        {
            *expr = call("unnest", vec![series], vec![]);
        }
        ControlFlow::<()>::Continue(())
    });
    struct Tables<'a>(&'a dyn Fn(&ast::ObjectName) -> bool);
    impl ast::VisitorMut for Tables<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut ast::TableFactor) -> ControlFlow<()> {
            if let ast::TableFactor::Table {
                name,
                args: Some(args),
                alias,
                ..
            } = factor
                && (self.0)(name)
            {
                let list = ast::FunctionArguments::List(ast::FunctionArgumentList {
                    duplicate_treatment: None,
                    args: args.args.clone(),
                    clauses: vec![],
                });
                if let Some(series) = subscripts(&list) {
                    *factor = ast::TableFactor::UNNEST {
                        alias: alias.take(),
                        array_exprs: vec![series],
                        with_offset: false,
                        with_offset_alias: None,
                        with_ordinality: false,
                    };
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(stmt, &mut Tables(&is_subscripts));
}

/// `FROM generate_series(1, 3) AS g`: Postgres names the one column of a function that returns
/// a scalar after the table alias (`g`); DataFusion names it `value` (or after the function). The
/// alias of such a call (`generate_series`, `generate_subscripts`, `range`, a one-array `unnest`)
/// without column aliases gets its own name as the column alias.
/// `generate_series` of `integer` bounds is a series of `integer`s, as in Postgres (DataFusion's is
/// `bigint`, which node-postgres hands out as strings): over integer literals that fit, a call
/// becomes `(SELECT CAST(value AS INT) ... FROM generate_series(..))` under the call's alias
/// (`generate_series(1, 3) g`, `AS g(x)`), or without one as `generate_series` with DataFusion's
/// column name `value`, which queries written for DataFusion name.
/// `generate_series(a, b, '1 day')`: a quoted step is the number it spells, or else an
/// `interval`, as Postgres types the unknown literal (DataFusion's series refuse text).
fn series_interval_steps(stmt: &mut ast::Statement) {
    fn step(args: &mut [ast::FunctionArg]) {
        let [
            _,
            _,
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)),
        ] = args
        else {
            return;
        };
        if let ast::Expr::Value(ast::ValueWithSpan {
            value: value @ ast::Value::SingleQuotedString(_),
            ..
        }) = e
            && let ast::Value::SingleQuotedString(text) = value
            && text.trim().parse::<f64>().is_ok()
        {
            // A number's text: that number (`generate_series(1, 10, '2')`).
            *value = ast::Value::Number(text.trim().to_string(), false);
        } else if let ast::Expr::Value(ast::ValueWithSpan {
            value: ast::Value::SingleQuotedString(_),
            ..
        }) = e
        {
            *e = ast::Expr::Cast {
                kind: ast::CastKind::Cast,
                expr: Box::new(e.clone()),
                data_type: ast::DataType::Interval {
                    fields: None,
                    precision: None,
                },
                array: false,
                format: None,
            };
        }
    }
    let is_series = |name: &ast::ObjectName| {
        name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
            i.quote_style.is_none() && i.value.eq_ignore_ascii_case("generate_series")
        })
    };
    struct Steps<F: Fn(&ast::ObjectName) -> bool>(F);
    impl<F: Fn(&ast::ObjectName) -> bool> ast::VisitorMut for Steps<F> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut ast::TableFactor) -> ControlFlow<()> {
            if let ast::TableFactor::Table {
                name,
                args: Some(args),
                ..
            } = factor
                && (self.0)(name)
            {
                step(&mut args.args);
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
            if let ast::Expr::Function(f) = expr
                && (self.0)(&f.name)
                && let ast::FunctionArguments::List(list) = &mut f.args
            {
                step(&mut list.args);
            }
            ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(stmt, &mut Steps(is_series));
}

fn int4_series(stmt: &mut ast::Statement) {
    struct Series;
    impl ast::VisitorMut for Series {
        type Break = ();
        // After the factor's children: the new subquery calls `generate_series` itself and must
        // not be visited again.
        fn post_visit_table_factor(&mut self, factor: &mut ast::TableFactor) -> ControlFlow<()> {
            let ast::TableFactor::Table {
                name,
                args: Some(args),
                alias,
                with_ordinality: false,
                ..
            } = factor
            else {
                // WITH ORDINALITY: [`super::set_returning`]'s.
                return ControlFlow::Continue(());
            };
            let is_series = matches!(
                name.0.as_slice(),
                [part] if part.as_ident().is_some_and(|i| i.value.eq_ignore_ascii_case("generate_series"))
            );
            let int4 = |a: &ast::FunctionArg| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => int4_literal(e),
                _ => false,
            };
            if !is_series || !(2..=3).contains(&args.args.len()) {
                return ControlFlow::Continue(());
            }
            if !args.args.iter().all(int4) {
                // DataFusion's series of timestamps takes nanoseconds.
                for arg in args.args.iter_mut().take(2) {
                    if let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) = arg {
                        nanosecond_timestamp(e);
                    }
                }
                return ControlFlow::Continue(());
            }
            let list = args
                .args
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("SELECT CAST(value AS INT) AS value FROM generate_series({list})");
            let Ok(mut parsed) = datafusion::sql::sqlparser::parser::Parser::parse_sql(
                &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
                &sql,
            ) else {
                return ControlFlow::Continue(());
            };
            let Some(ast::Statement::Query(subquery)) = parsed.pop() else {
                return ControlFlow::Continue(());
            };
            let alias = match alias.take() {
                Some(mut alias) => {
                    if alias.columns.is_empty() {
                        alias.columns = vec![ast::TableAliasColumnDef {
                            name: alias.name.clone(),
                            data_type: None,
                        }];
                    }
                    alias
                }
                // Without an alias, DataFusion's column name `value` stays usable.
                None => ast::TableAlias {
                    explicit: true,
                    name: ast::Ident::new("generate_series"),
                    columns: vec![],
                    at: None,
                },
            };
            *factor = ast::TableFactor::Derived {
                lateral: false,
                subquery,
                alias: Some(alias),
                sample: None,
            };
            ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(stmt, &mut Series);
}

/// Makes `e`, if it is a `timestamp`/`timestamptz` constant or a cast to one (microseconds), one
/// of nanoseconds.
fn nanosecond_timestamp(e: &mut ast::Expr) {
    let data_type = match e {
        ast::Expr::TypedString(t) => &mut t.data_type,
        ast::Expr::Cast { data_type, .. } => data_type,
        ast::Expr::Nested(inner) => return nanosecond_timestamp(inner),
        _ => return,
    };
    if let ast::DataType::Timestamp(precision @ (None | Some(6)), _) = data_type {
        *precision = Some(9);
    }
}

/// An integer literal that fits `integer` (with a sign).
pub(super) fn int4_literal(e: &ast::Expr) -> bool {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse::<i32>().is_ok(),
            _ => false,
        },
        ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Minus | ast::UnaryOperator::Plus,
            expr,
        } => int4_literal(expr),
        ast::Expr::Nested(inner) => int4_literal(inner),
        _ => false,
    }
}

fn function_column_aliases(stmt: &mut ast::Statement) {
    struct Aliases;
    impl ast::VisitorMut for Aliases {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut ast::TableFactor) -> ControlFlow<()> {
            let (name, alias) = match factor {
                ast::TableFactor::Table {
                    name,
                    args: Some(_),
                    alias: Some(alias),
                    ..
                }
                | ast::TableFactor::Function {
                    name,
                    alias: Some(alias),
                    ..
                } => (Some(&*name), alias),
                ast::TableFactor::UNNEST {
                    alias: Some(alias),
                    array_exprs,
                    with_offset: false,
                    with_ordinality: false,
                    ..
                } if array_exprs.len() == 1 => (None, alias),
                _ => return ControlFlow::Continue(()),
            };
            let scalar = name.is_none_or(|name| {
                name.0.last().and_then(|p| p.as_ident()).is_some_and(|f| {
                    ["generate_series", "generate_subscripts", "range"]
                        .contains(&f.value.to_ascii_lowercase().as_str())
                })
            });
            if !scalar {
                return ControlFlow::Continue(());
            }
            if alias.columns.is_empty() {
                alias.columns = vec![ast::TableAliasColumnDef {
                    name: alias.name.clone(),
                    data_type: None,
                }];
            }
            ControlFlow::Continue(())
        }
    }
    let _ = ast::VisitMut::visit(stmt, &mut Aliases);
}

/// Rewrites `'{1,2}'::int[]`, Postgres' text form of an array cast to an array type, into
/// `ARRAY[CAST('1' AS int), CAST('2' AS int)]` (DataFusion casts no text to an array). One
/// dimension, split by [`crate::text::array_elements`]; other texts are left for the cast of text
/// constants to arrays after planning (`exec::query`), which reports them.
fn array_literals(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Cast {
            expr: inner,
            data_type: ast::DataType::Array(ast::ArrayElemTypeDef::SquareBracket(elem, _)),
            ..
        } = expr
            && let ast::Expr::Value(v) = inner.as_ref()
            && let ast::Value::SingleQuotedString(text) = &v.value
            && let Some(items) = crate::text::array_elements(text, false)
        {
            let elem = elem.as_ref().clone();
            let elements = items
                .into_iter()
                .map(|item| ast::Expr::Cast {
                    kind: ast::CastKind::Cast,
                    expr: Box::new(ast::Expr::Value(
                        match item {
                            Some(s) => ast::Value::SingleQuotedString(s),
                            None => ast::Value::Null,
                        }
                        .with_empty_span(),
                    )),
                    data_type: elem.clone(),
                    array: false,
                    format: None,
                })
                .collect();
            let array = ast::Expr::Array(ast::Array {
                elem: elements,
                named: true,
            });
            // The cast stays, so that `'{}'` has its element type too.
            **inner = array;
        }
        ControlFlow::<()>::Continue(())
    });
}

/// The call `name(args [ORDER BY order])`.
pub(super) fn call(name: &str, args: Vec<ast::Expr>, order: Vec<ast::OrderByExpr>) -> ast::Expr {
    ast::Expr::Function(ast::Function {
        name: ast::ObjectName::from(vec![ast::Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: ast::FunctionArguments::None,
        args: ast::FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: if order.is_empty() {
                vec![]
            } else {
                vec![ast::FunctionArgumentClause::OrderBy(order)]
            },
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// Rewrites `LIKE p ESCAPE 'c'` with another escape character than DataFusion's only one, the
/// backslash, into the same pattern with backslash escapes (SQLAlchemy's reflection uses `/`).
fn like_escapes(stmt: &mut ast::Statement) {
    fn text(s: &str) -> ast::Expr {
        ast::Expr::Value(ast::Value::SingleQuotedString(s.to_string()).with_empty_span())
    }
    fn replace(e: ast::Expr, from: &str, to: &str) -> ast::Expr {
        call("replace", vec![e, text(from), text(to)], vec![])
    }
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | ast::Expr::ILike {
            pattern,
            escape_char,
            ..
        } = expr
            && let Some(ast::ValueWithSpan {
                value: ast::Value::SingleQuotedString(c),
                ..
            }) = escape_char.as_ref()
            && c.chars().count() == 1
            && c != "\\"
        {
            // Literal backslashes first, then the escape character becomes the backslash.
            let c = c.clone();
            let p = std::mem::replace(pattern.as_mut(), text(""));
            **pattern = replace(replace(p, "\\", "\\\\"), &c, "\\");
            *escape_char = None;
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Rewrites `SUBSTRING(s FROM 'pattern')`, Postgres' regular-expression substring (the part
/// matching the pattern's first parenthesized group, or the whole match without groups; NULL
/// when that group took no part), into `regexp_match(s, 'pattern')[1]`, which means the same.
/// DataFusion would read the pattern as a start position.
fn regex_substrings(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Substring {
            expr: text,
            substring_from: Some(from),
            substring_for: None,
            special: false,
            ..
        } = expr
            && matches!(
                from.as_ref(),
                ast::Expr::Value(ast::ValueWithSpan {
                    value: ast::Value::SingleQuotedString(_),
                    ..
                })
            )
        {
            let text = std::mem::replace(text.as_mut(), ast::Expr::value(ast::Value::Null));
            let pattern = std::mem::replace(from.as_mut(), ast::Expr::value(ast::Value::Null));
            let one = ast::Expr::value(ast::Value::Number("1".into(), false));
            *expr = call(
                "array_element",
                vec![call("regexp_match", vec![text, pattern], vec![]), one],
                vec![],
            );
        }
        ControlFlow::<()>::Continue(())
    });
}

/// `to_timestamp(text, template)` and `to_date(text, template)` as Postgres reads them
/// ([`super::to_date`]); a template with a `%` (a chrono format, which DataFusion's functions of
/// those names read) stays with DataFusion's.
fn to_timestamp_templates(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Function(f) = expr
            && let Some(ident) = f.name.0.last().and_then(|p| p.as_ident())
            && let Some(name) = if ident.value.eq_ignore_ascii_case("to_timestamp") {
                Some(super::to_date::TO_TIMESTAMP)
            } else if ident.value.eq_ignore_ascii_case("to_date") {
                Some(super::to_date::TO_DATE)
            } else {
                None
            }
            && let ast::FunctionArguments::List(list) = &f.args
            && let [
                _,
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(template)),
            ] = list.args.as_slice()
            && !matches!(
                template,
                ast::Expr::Value(ast::ValueWithSpan {
                    value: ast::Value::SingleQuotedString(t),
                    ..
                }) if t.contains('%')
            )
        {
            f.name = ast::ObjectName::from(vec![ast::Ident::new(name)]);
        }
        ControlFlow::<()>::Continue(())
    });
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
        && let Some(mut rewritten) = statements.pop()
    {
        correlated_projections(stmt, &mut rewritten);
        super::regclass::lookups(&mut rewritten);
        if to_reg_casts(&mut rewritten) {
            rewritten = REG_CASTS.rewrite(rewritten);
        }
        no_comments(&mut rewritten);
        type_visibility(&mut rewritten);
        procedure_casts(&mut rewritten);
        drop_guarded_conjuncts(&mut rewritten);
        array_subqueries(&mut rewritten);
        aggregate_scalar_subqueries(&mut rewritten);
        **stmt = rewritten;
    }
    parsed
}

/// Puts back the correlated scalar subqueries of `original`'s select list that the library's
/// rewrite made NULL (SQLAlchemy 1.4 reads a column's default as `(SELECT pg_get_expr(d.adbin,
/// d.adrelid) FROM pg_attrdef d WHERE d.adrelid = a.attrelid AND ..)`), each with the library's
/// rewrites of its own; [`aggregate_scalar_subqueries`] then makes them plannable.
fn correlated_projections(original: &ast::Statement, rewritten: &mut ast::Statement) {
    let (ast::Statement::Query(original), ast::Statement::Query(rewritten)) = (original, rewritten)
    else {
        return;
    };
    let (ast::SetExpr::Select(original), ast::SetExpr::Select(rewritten)) =
        (original.body.as_ref(), rewritten.body.as_mut())
    else {
        return;
    };
    if original.projection.len() != rewritten.projection.len() {
        return;
    }
    let expr = |item: &ast::SelectItem| match item {
        ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
            Some(e.clone())
        }
        _ => None,
    };
    for (before, after) in original.projection.iter().zip(&mut rewritten.projection) {
        let (
            Some(ast::Expr::Subquery(query)),
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. },
        ) = (expr(before), after)
        else {
            continue;
        };
        if !matches!(e, ast::Expr::Value(v) if v.value == ast::Value::Null) {
            continue;
        }
        if let ast::Statement::Query(query) = PARSER.rewrite(ast::Statement::Query(query)) {
            *e = ast::Expr::Subquery(query);
        }
    }
}

/// Rewrites `x::regproc` and `x::regprocedure` of an OID (not of a name in quotes) into a call
/// that prints the function as Postgres does, `plpgsql_validator(oid)` (psql's `\dL+`).
fn procedure_casts(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Cast {
            expr: inner,
            data_type: ast::DataType::Custom(name, _),
            ..
        } = expr
            && !matches!(inner.as_ref(), ast::Expr::Value(v) if matches!(v.value, ast::Value::SingleQuotedString(_)))
            && let Some(function) = name.0.last().and_then(|p| p.as_ident()).and_then(|i| {
                match i.value.to_ascii_lowercase().as_str() {
                    "regproc" => Some("rivulet_regproc"),
                    "regprocedure" => Some("rivulet_regprocedure"),
                    _ => None,
                }
            })
        {
            *expr = call(function, vec![inner.as_ref().clone()], vec![]);
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Rewrites `pg_type_is_visible(t.oid)` into `t.typnamespace = 11`: Rivulet has no user-defined
/// types, so the types on the search path are `pg_catalog`'s (the library's `pg_type` also holds
/// PostgreSQL's `information_schema` domains, which are not on it). psql's `\dT` and type name
/// completion ask this of `pg_type` rows.
fn type_visibility(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Function(f) = expr
            && f.name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.eq_ignore_ascii_case("pg_type_is_visible"))
            && let ast::FunctionArguments::List(list) = &f.args
            && let [
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(
                    ast::Expr::CompoundIdentifier(parts),
                )),
            ] = list.args.as_slice()
            && let [alias, column] = parts.as_slice()
            && column.value.eq_ignore_ascii_case("oid")
        {
            *expr = ast::Expr::Nested(Box::new(ast::Expr::BinaryOp {
                left: Box::new(ast::Expr::CompoundIdentifier(vec![
                    alias.clone(),
                    ast::Ident::new("typnamespace"),
                ])),
                op: ast::BinaryOperator::Eq,
                right: Box::new(ast::Expr::Value(
                    ast::Value::Number("11".into(), false).with_empty_span(),
                )),
            }));
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Replaces `shobj_description(..)` (no shared object has a comment) with a NULL text, and
/// `obj_description(..)` and `col_description(..)` too where their relation is not a column, a
/// number or a constant name: their arguments are often casts DataFusion cannot evaluate
/// (Metabase's `format('%I.%I', schema, table)::regclass` of every column). Otherwise the
/// functions give the relation's and the column's comments (`functions::descriptions`).
fn no_comments(stmt: &mut ast::Statement) {
    fn evaluable(e: &ast::Expr) -> bool {
        match e {
            ast::Expr::Identifier(_) | ast::Expr::CompoundIdentifier(_) | ast::Expr::Value(_) => {
                true
            }
            ast::Expr::Nested(e) => evaluable(e),
            ast::Expr::Cast { expr, .. } => matches!(expr.as_ref(), ast::Expr::Value(_)),
            // A constant name's lookup (`'t'::regclass`): `regclass::lookups`.
            ast::Expr::Function(f) => {
                f.name.to_string() == super::regclass::NAME
                    && matches!(&f.args, ast::FunctionArguments::List(list)
                        if matches!(list.args.last(), Some(ast::FunctionArg::Unnamed(
                            ast::FunctionArgExpr::Expr(ast::Expr::Value(_))))))
            }
            _ => false,
        }
    }
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Function(f) = expr
            && let Some(name) = f.name.0.last().and_then(|p| p.as_ident())
        {
            let name = name.value.to_ascii_lowercase();
            let relation = match &f.args {
                ast::FunctionArguments::List(list) => match list.args.first() {
                    Some(ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e))) => Some(e),
                    _ => None,
                },
                _ => None,
            };
            let null = match name.as_str() {
                "shobj_description" => true,
                "obj_description" | "col_description" => !relation.is_some_and(evaluable),
                _ => false,
            };
            if null {
                *expr = ast::Expr::Cast {
                    kind: ast::CastKind::Cast,
                    expr: Box::new(ast::Expr::Value(ast::Value::Null.with_empty_span())),
                    data_type: ast::DataType::Text,
                    array: false,
                    format: None,
                };
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

/// In `CASE WHEN c THEN (SELECT .. WHERE c AND ..)`, drops the `c` the `CASE` already guarantees
/// from the subquery's `WHERE` (SQLAlchemy's column defaults). DataFusion cannot decorrelate a
/// subquery predicate that reads only outer columns; without it the lookup is the same.
fn drop_guarded_conjuncts(stmt: &mut ast::Statement) {
    fn conjuncts(e: ast::Expr, out: &mut Vec<ast::Expr>) {
        match e {
            ast::Expr::BinaryOp {
                left,
                op: ast::BinaryOperator::And,
                right,
            } => {
                conjuncts(*left, out);
                conjuncts(*right, out);
            }
            ast::Expr::Nested(inner) if matches!(*inner, ast::Expr::BinaryOp { .. }) => {
                conjuncts(*inner, out)
            }
            other => out.push(other),
        }
    }
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Case { conditions, .. } = expr {
            for when in conditions.iter_mut() {
                if let ast::Expr::Subquery(query) = &mut when.result
                    && let ast::SetExpr::Select(select) = query.body.as_mut()
                    && let Some(selection) = select.selection.take()
                {
                    let mut parts = Vec::new();
                    conjuncts(selection, &mut parts);
                    let guard = unnested(&when.condition);
                    parts.retain(|p| unnested(p) != guard);
                    select.selection = parts.into_iter().reduce(|a, b| ast::Expr::BinaryOp {
                        left: Box::new(a),
                        op: ast::BinaryOperator::And,
                        right: Box::new(b),
                    });
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

fn unnested(e: &ast::Expr) -> &ast::Expr {
    match e {
        ast::Expr::Nested(inner) => unnested(inner),
        other => other,
    }
}

/// Rewrites `ARRAY(SELECT e FROM .. [ORDER BY o])` into `(SELECT array_agg(e ORDER BY o) FROM ..)`:
/// DataFusion has no array constructor over a subquery, but plans a correlated aggregate. psql's
/// `\dD` and `\dL+` (psql 16+) build lists of names this way. One difference from Postgres: over
/// no rows `array_agg` is NULL where `ARRAY(..)` is an empty array, and both print as nothing in
/// the `array_to_string(..)` around them.
fn array_subqueries(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Function(f) = expr
            && f.name.0.len() == 1
            && f.name.0[0]
                .as_ident()
                .is_some_and(|i| i.value.eq_ignore_ascii_case("array"))
            && let ast::FunctionArguments::Subquery(query) = &f.args
            && query.limit_clause.is_none()
            && query.with.is_none()
            && let ast::SetExpr::Select(select) = query.body.as_ref()
            && matches!(select.group_by, ast::GroupByExpr::Expressions(ref e, _) if e.is_empty())
            && select.having.is_none()
            && select.distinct.is_none()
            && let [
                ast::SelectItem::UnnamedExpr(item)
                | ast::SelectItem::ExprWithAlias { expr: item, .. },
            ] = select.projection.as_slice()
        {
            let mut query = query.clone();
            let order = match query.order_by.take().map(|o| o.kind) {
                Some(ast::OrderByKind::Expressions(order)) => order,
                _ => Vec::new(),
            };
            let agg = call("array_agg", vec![item.clone()], order);
            if let ast::SetExpr::Select(select) = query.body.as_mut() {
                select.projection = vec![ast::SelectItem::UnnamedExpr(agg)];
            }
            *expr = ast::Expr::Subquery(query);
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Wraps the single item of each scalar subquery nested in an expression in `max(..)`.
///
/// Catalog queries look up one row by key in correlated scalar subqueries (SQLAlchemy's column
/// defaults, identity options and collations inside `CASE`); DataFusion plans a correlated scalar
/// subquery only if it is aggregated. For a lookup that finds at most one row, `max` of it is the
/// row's value. Subqueries that are already aggregated, grouped or limited are left alone. (User
/// queries get [`super::subquery::rewrite`], which refuses a second row instead.)
fn aggregate_scalar_subqueries(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Subquery(query) = expr
            && query.limit_clause.is_none()
            && let ast::SetExpr::Select(select) = query.body.as_mut()
            && matches!(select.group_by, ast::GroupByExpr::Expressions(ref e, _) if e.is_empty())
            && select.having.is_none()
            && select.distinct.is_none()
            && let [item] = select.projection.as_mut_slice()
        {
            let inner = match item {
                ast::SelectItem::UnnamedExpr(e)
                | ast::SelectItem::ExprWithAlias { expr: e, .. } => e,
                _ => return ControlFlow::<()>::Continue(()),
            };
            if !super::subquery::aggregates(inner) {
                *inner = call("max", vec![inner.clone()], vec![]);
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

static REG_CASTS: LazyLock<RewriteRegCastToSubquery> = LazyLock::new(RewriteRegCastToSubquery::new);

/// Turns `to_regclass(x)`, `to_regtype(x)`, ... into `x::regclass`, ..., which the library resolves
/// to a lookup in the catalog (NULL when nothing has that name, as `to_reg*` answers). Returns
/// whether anything changed.
fn to_reg_casts(stmt: &mut ast::Statement) -> bool {
    let mut changed = false;
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Function(f) = expr
            && let Some(name) = f.name.0.last().and_then(|p| p.as_ident())
            && let Some(kind) = name
                .value
                .to_ascii_lowercase()
                .strip_prefix("to_")
                .filter(|k| matches!(*k, "regclass" | "regtype" | "regnamespace" | "regproc"))
            && let ast::FunctionArguments::List(list) = &f.args
            && let [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))] =
                list.args.as_slice()
        {
            *expr = ast::Expr::Cast {
                kind: ast::CastKind::DoubleColon,
                expr: Box::new(arg.clone()),
                data_type: ast::DataType::Custom(
                    ast::ObjectName::from(vec![ast::Ident::new(kind)]),
                    vec![],
                ),
                array: false,
                format: None,
            };
            changed = true;
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// Whether `stmt` reads a `pg_catalog` or `information_schema` relation (not only a function).
pub fn reads_catalog_relation(stmt: &ast::Statement) -> bool {
    ast::visit_relations(stmt, |relation| {
        if is_system_name(relation) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// Whether `stmt` names a `pg_catalog` or `information_schema` relation or function.
pub fn reads_catalog(stmt: &ast::Statement) -> bool {
    let mut finder = CatalogFinder;
    stmt.visit(&mut finder).is_break()
}

struct CatalogFinder;

pub(super) fn is_system_name(name: &ast::ObjectName) -> bool {
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
            ast::Expr::Function(f)
                if f.name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                    matches!(
                        i.value.to_ascii_lowercase().as_str(),
                        "to_regclass" | "to_regtype" | "to_regnamespace" | "to_regproc"
                    )
                }) =>
            {
                ControlFlow::Break(())
            }
            ast::Expr::Cast {
                data_type: ast::DataType::Custom(name, _),
                ..
            } if name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| i.value.to_ascii_lowercase().starts_with("reg")) =>
            {
                ControlFlow::Break(())
            }
            // sqlparser parses `regclass` (unqualified) as a type of its own.
            ast::Expr::Cast {
                data_type: ast::DataType::Regclass,
                ..
            } => ControlFlow::Break(()),
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
            _ => String::new(),
        }
    }

    #[test]
    fn array_texts_become_array_constructors() {
        assert_eq!(
            crate::text::array_elements(r#"{1, 2,NULL,"NULL","a,\"b"}"#, false),
            Some(vec![
                Some("1".into()),
                Some("2".into()),
                None,
                Some("NULL".into()),
                Some("a,\"b".into())
            ])
        );
        assert_eq!(crate::text::array_elements("{}", false), Some(vec![]));
        assert_eq!(crate::text::array_elements("{1,}", false), None);
        assert_eq!(crate::text::array_elements("{1,,2}", false), None);
        assert_eq!(
            crate::text::array_elements(r"{\NULL,a\ }", false),
            Some(vec![Some("NULL".into()), Some("a ".into())])
        );
        assert_eq!(crate::text::array_elements("{{1},{2}}", false), None);
        assert_eq!(crate::text::array_elements("1,2", false), None);
        assert_eq!(
            rewritten("SELECT '{1,NULL}'::int[]"),
            "SELECT ARRAY[CAST('1' AS INT), CAST(NULL AS INT)]::INT[] AS \"int4\""
        );
    }

    #[test]
    fn user_queries_stay_as_written() {
        let sql = "SELECT a, (SELECT max(b) AS x FROM t2 WHERE t2.a = t.a) AS m FROM t";
        assert_eq!(rewritten(sql), sql);
    }

    #[test]
    fn like_escapes_become_backslashes() {
        assert_eq!(
            rewritten("SELECT a FROM t WHERE a NOT LIKE 'pg/_' || '%' ESCAPE '/'"),
            "SELECT a FROM t WHERE a NOT LIKE replace(replace('pg/_' || '%', '\\', '\\\\'), '/', '\\')"
        );
    }

    #[test]
    fn case_guards_leave_subqueries() {
        let out = rewritten(
            "SELECT CASE WHEN a.atthasdef THEN (SELECT d.adbin FROM pg_catalog.pg_attrdef d \
             WHERE a.atthasdef AND d.adrelid = a.attrelid) ELSE NULL END FROM pg_catalog.pg_attribute a",
        );
        assert!(out.contains("WHERE d.adrelid = a.attrelid"), "{out}");
        assert!(out.contains("max(d.adbin)"), "{out}");
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
