//! Postgres' set-returning JSON functions (`jsonb_array_elements[_text]`,
//! `json_array_elements[_text]`, `jsonb_object_keys`, `json_object_keys`) and `LATERAL unnest(..)`,
//! run as DataFusion's UNNEST over an array of the set:
//!
//! - in a select list, `jsonb_array_elements(doc)` is `unnest(rivulet_jsonb_elements(doc))`, and
//!   `generate_series(..)` is `unnest(generate_series(..))` (DataFusion's is a list);
//! - in FROM (`FROM orders o, jsonb_array_elements(o.doc -> 'items') AS item`, LATERAL or not),
//!   the function is `UNNEST(rivulet_jsonb_elements(..)) AS item(item)`: its one column is named
//!   after the alias, so `item ->> 'sku'` reads the element as in Postgres (without an alias the
//!   column is Postgres' `value`); `jsonb_each[_text](doc) AS kv` is the keys and the values
//!   unnested side by side, `kv(key, value)`; `LATERAL unnest(xs)` is `UNNEST(xs)`.
//!
//! A FROM item that reads an earlier one's columns is a lateral join, which
//! [`super::decorrelate`] runs.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, ListBuilder, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::sql::sqlparser::ast::{self, VisitMut, VisitorMut};
use rivulet_planner::jsonb::Value;

use super::rewrite::{call, int4_literal};

/// (Postgres' function, the function giving its set as an array, the set's column).
const FUNCTIONS: &[(&str, Set, &str)] = &[
    (
        "jsonb_array_elements",
        Set::Elements { text: false },
        "value",
    ),
    (
        "json_array_elements",
        Set::Elements { text: false },
        "value",
    ),
    (
        "jsonb_array_elements_text",
        Set::Elements { text: true },
        "value",
    ),
    (
        "json_array_elements_text",
        Set::Elements { text: true },
        "value",
    ),
    ("jsonb_object_keys", Set::Keys, "jsonb_object_keys"),
    ("json_object_keys", Set::Keys, "json_object_keys"),
];

/// `jsonb_each[_text]` and `json_each[_text]`: an object's members as two columns, `key` and
/// `value`, zipped from two sets (`text`: the values as text).
const EACH: &[(&str, bool)] = &[
    ("jsonb_each", false),
    ("json_each", false),
    ("jsonb_each_text", true),
    ("json_each_text", true),
];

/// What set a function gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Set {
    /// An array's elements, as `jsonb` or (`text`) as text.
    Elements { text: bool },
    /// An object's keys.
    Keys,
    /// An object's keys, for `jsonb_each`.
    EachKeys,
    /// An object's values, for `jsonb_each`, as `jsonb` or (`text`) as text.
    EachValues { text: bool },
}

impl Set {
    fn udf_name(self) -> &'static str {
        match self {
            Set::Elements { text: false } => "rivulet_jsonb_elements",
            Set::Elements { text: true } => "rivulet_jsonb_elements_text",
            Set::Keys => "rivulet_jsonb_object_keys",
            Set::EachKeys => "rivulet_jsonb_each_keys",
            Set::EachValues { text: false } => "rivulet_jsonb_each_values",
            Set::EachValues { text: true } => "rivulet_jsonb_each_values_text",
        }
    }
}

/// The function giving `name`'s set as an array, and the set's column, if `name` is a
/// set-returning function run as an UNNEST (`regexp_split_to_table` is `regexp_split_to_array`'s
/// elements).
fn function(name: &ast::ObjectName) -> Option<(&'static str, &'static str)> {
    let [part] = name.0.as_slice() else {
        return None;
    };
    let ident = part.as_ident()?;
    if ident.value.eq_ignore_ascii_case("regexp_split_to_table") {
        return Some(("regexp_split_to_array", "regexp_split_to_table"));
    }
    if ident.value.eq_ignore_ascii_case("regexp_matches") {
        return Some((super::regexp::MATCHES, "regexp_matches"));
    }
    FUNCTIONS
        .iter()
        .find(|(n, _, _)| ident.value.eq_ignore_ascii_case(n))
        .map(|(_, set, column)| (set.udf_name(), *column))
}

fn each(name: &ast::ObjectName) -> Option<bool> {
    let [part] = name.0.as_slice() else {
        return None;
    };
    let ident = part.as_ident()?;
    EACH.iter()
        .find(|(n, _)| ident.value.eq_ignore_ascii_case(n))
        .map(|(_, text)| *text)
}

fn is_unnest(name: &ast::ObjectName) -> bool {
    matches!(name.0.as_slice(), [part] if part.as_ident().is_some_and(|i| i.value.eq_ignore_ascii_case("unnest")))
}

/// `stmt` with the set-returning functions as UNNEST (see the module's documentation).
pub fn rewrite(stmt: &mut ast::Statement) {
    let _ = stmt.visit(&mut Sets);
}

struct Sets;

impl VisitorMut for Sets {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut ast::TableFactor) -> ControlFlow<()> {
        if let ast::TableFactor::UNNEST {
            alias,
            array_exprs,
            with_ordinality: true,
            with_offset: false,
            ..
        } = factor
        {
            let arrays = std::mem::take(array_exprs);
            let alias = alias.take();
            let column = alias
                .as_ref()
                .map_or("unnest".to_string(), |a| a.name.value.clone());
            *factor = numbered(arrays, alias, "unnest", &column);
            return ControlFlow::Continue(());
        }
        // `FROM f(x)` is a table with arguments, `FROM LATERAL f(x)` a function.
        let (name, args, alias, ordinality) = match factor {
            ast::TableFactor::Function {
                name,
                args,
                alias,
                with_ordinality,
                ..
            } => (name, &*args, alias, *with_ordinality),
            ast::TableFactor::Table {
                name,
                args: Some(args),
                alias,
                with_ordinality,
                ..
            } => (name, &args.args, alias, *with_ordinality),
            _ => return ControlFlow::Continue(()),
        };
        let called = name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map_or(String::new(), |i| i.value.to_ascii_lowercase());
        let exprs: Option<Vec<ast::Expr>> = args
            .iter()
            .map(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect();
        let Some(exprs) = exprs else {
            return ControlFlow::Continue(());
        };
        if ordinality {
            // The set's column: a scalar's after the alias, a JSON function's its own.
            let own = alias
                .as_ref()
                .map_or(called.clone(), |a| a.name.value.clone());
            let (arrays, column) = if is_unnest(name) {
                (exprs, own)
            } else if called == "generate_series" {
                let int4 = exprs.iter().all(int4_literal);
                let mut series = call("generate_series", exprs, vec![]);
                if int4 {
                    series = ast::Expr::Cast {
                        kind: ast::CastKind::Cast,
                        expr: Box::new(series),
                        data_type: ast::DataType::Array(ast::ArrayElemTypeDef::SquareBracket(
                            Box::new(ast::DataType::Int(None)),
                            None,
                        )),
                        array: false,
                        format: None,
                    };
                }
                (vec![series], own)
            } else if let Some(text) = each(name) {
                let sets = [Set::EachKeys, Set::EachValues { text }];
                let arrays = sets
                    .iter()
                    .map(|set| call(set.udf_name(), exprs.clone(), vec![]))
                    .collect();
                let mut alias = alias.take().unwrap_or_else(|| named(&called, vec![]));
                if alias.columns.is_empty() {
                    alias.columns = ["key", "value"]
                        .into_iter()
                        .map(ast::TableAliasColumnDef::from_name)
                        .collect();
                }
                *factor = numbered(arrays, Some(alias), &called, "");
                return ControlFlow::Continue(());
            } else if let Some((udf, column)) = function(name) {
                (vec![call(udf, exprs, vec![])], column.to_string())
            } else {
                return ControlFlow::Continue(());
            };
            *factor = numbered(arrays, alias.take(), &called, &column);
            return ControlFlow::Continue(());
        }
        let (array_exprs, alias) = if is_unnest(name) {
            (exprs, alias.take())
        } else if let Some(text) = each(name) {
            let columns = || {
                vec![
                    ast::TableAliasColumnDef::from_name("key"),
                    ast::TableAliasColumnDef::from_name("value"),
                ]
            };
            let alias = match alias.take() {
                Some(mut a) if a.columns.is_empty() => {
                    a.columns = columns();
                    a
                }
                Some(a) => a,
                None => ast::TableAlias {
                    explicit: true,
                    name: ast::Ident::new(name.to_string()),
                    columns: columns(),
                    at: None,
                },
            };
            let sets = [Set::EachKeys, Set::EachValues { text }];
            let arrays = sets
                .iter()
                .map(|set| call(set.udf_name(), exprs.clone(), vec![]))
                .collect();
            (arrays, Some(alias))
        } else if let Some((udf, column)) = function(name) {
            let alias = match alias.take() {
                Some(mut a) if a.columns.is_empty() => {
                    let own = a.name.value.clone();
                    a.columns = vec![ast::TableAliasColumnDef::from_name(own)];
                    a
                }
                Some(a) => a,
                None => ast::TableAlias {
                    explicit: true,
                    name: ast::Ident::new(name.to_string()),
                    columns: vec![ast::TableAliasColumnDef::from_name(column)],
                    at: None,
                },
            };
            (vec![call(udf, exprs, vec![])], Some(alias))
        } else {
            return ControlFlow::Continue(());
        };
        *factor = ast::TableFactor::UNNEST {
            alias,
            array_exprs,
            with_offset: false,
            with_offset_alias: None,
            with_ordinality: false,
        };
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
        let ast::Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        let Some((udf, _)) = function(&f.name) else {
            return ControlFlow::Continue(());
        };
        let ast::FunctionArguments::List(list) = &f.args else {
            return ControlFlow::Continue(());
        };
        let args: Option<Vec<ast::Expr>> = list
            .args
            .iter()
            .map(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect();
        if let Some(args) = args {
            *expr = call("unnest", vec![call(udf, args, vec![])], vec![]);
        }
        ControlFlow::Continue(())
    }
}

/// `SELECT generate_series(1, 3)`: a row per value, as in Postgres (DataFusion's scalar
/// `generate_series` is the list of them); of int4 literals, int4 values. Before the rewrites that
/// make `generate_series` calls of their own (`generate_subscripts`, `WITH ORDINALITY`).
pub fn series_rows(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Function(f) = expr
            && is_series(&f.name)
            && let ast::FunctionArguments::List(list) = &f.args
        {
            let int4 = list.args.iter().all(|a| {
                matches!(a, ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) if int4_literal(e))
            });
            let mut unnested = call("unnest", vec![expr.clone()], vec![]);
            if int4 {
                unnested = ast::Expr::Cast {
                    kind: ast::CastKind::Cast,
                    expr: Box::new(unnested),
                    data_type: ast::DataType::Int(None),
                    array: false,
                    format: None,
                };
            }
            *expr = unnested;
        }
        ControlFlow::<()>::Continue(())
    });
}

/// Whether `name` is `generate_series`.
fn is_series(name: &ast::ObjectName) -> bool {
    matches!(
        name.0.as_slice(),
        [part] if part.as_ident().is_some_and(|i| i.value.eq_ignore_ascii_case("generate_series"))
    )
}

/// `FROM f(..) WITH ORDINALITY`: the sets `arrays` unnested side by side with their row numbers,
/// `1 ..` up to the longest set's length, in a last column `ordinality`. Without an alias the
/// table is named `function`; without column names, a single set's column is `column`.
fn numbered(
    mut arrays: Vec<ast::Expr>,
    alias: Option<ast::TableAlias>,
    function: &str,
    column: &str,
) -> ast::TableFactor {
    let mut lengths: Vec<ast::Expr> = arrays
        .iter()
        .map(|a| call("cardinality", vec![a.clone()], vec![]))
        .collect();
    let longest = match lengths.len() {
        1 => lengths.remove(0),
        _ => call("greatest", lengths, vec![]),
    };
    let end = ast::Expr::BinaryOp {
        left: Box::new(ast::Expr::Cast {
            kind: ast::CastKind::Cast,
            expr: Box::new(longest),
            data_type: ast::DataType::BigInt(None),
            array: false,
            format: None,
        }),
        op: ast::BinaryOperator::Plus,
        right: Box::new(number("1")),
    };
    let sets = arrays.len();
    arrays.push(call("range", vec![number("1"), end], vec![]));
    let mut alias = alias.unwrap_or_else(|| named(function, vec![]));
    if alias.columns.is_empty() && sets == 1 {
        alias.columns = vec![ast::TableAliasColumnDef::from_name(column)];
    }
    // Postgres names each set after the function; a plan's names must differ.
    let mut i = alias.columns.len();
    while alias.columns.len() < sets {
        i += 1;
        let name = if i == 1 {
            function.to_string()
        } else {
            format!("{function}_{i}")
        };
        alias
            .columns
            .push(ast::TableAliasColumnDef::from_name(name));
    }
    if alias.columns.len() == sets {
        alias
            .columns
            .push(ast::TableAliasColumnDef::from_name("ordinality"));
    }
    ast::TableFactor::UNNEST {
        alias: Some(alias),
        array_exprs: arrays,
        with_offset: false,
        with_offset_alias: None,
        with_ordinality: false,
    }
}

/// The table alias `name(columns)`.
fn named(name: &str, columns: Vec<ast::TableAliasColumnDef>) -> ast::TableAlias {
    ast::TableAlias {
        explicit: true,
        name: ast::Ident::new(name),
        columns,
        at: None,
    }
}

fn number(n: &str) -> ast::Expr {
    ast::Expr::Value(ast::Value::Number(n.to_string(), false).with_empty_span())
}

/// The functions giving each set as an array.
pub fn functions() -> Vec<ScalarUDF> {
    [
        Set::Elements { text: false },
        Set::Elements { text: true },
        Set::Keys,
        Set::EachKeys,
        Set::EachValues { text: false },
        Set::EachValues { text: true },
    ]
    .into_iter()
    .map(|set| {
        ScalarUDF::new_from_impl(SetArray {
            set,
            signature: Signature::any(1, Volatility::Immutable),
        })
    })
    .collect()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SetArray {
    set: Set,
    signature: Signature,
}

impl SetArray {
    fn item(&self) -> Field {
        let item = Field::new_list_field(DataType::Utf8, true);
        match self.set {
            Set::Elements { text: false } | Set::EachValues { text: false } => {
                super::wire_types::declare(item, "jsonb")
            }
            _ => item,
        }
    }
}

impl ScalarUDFImpl for SetArray {
    fn name(&self) -> &str {
        self.set.udf_name()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(Arc::new(self.item())))
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            self.name(),
            DataType::List(Arc::new(self.item())),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let Some(docs) = arrays.first() else {
            return exec_err!("{} takes one argument", self.name());
        };
        let field = args
            .arg_fields
            .first()
            .cloned()
            .unwrap_or_else(|| Arc::new(Field::new("doc", docs.data_type().clone(), true)));
        let docs = super::jsonb::JsonColumn::new(docs, &field, true)?;
        let mut out = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(self.item()));
        for row in 0..rows {
            let doc = docs.value(row)?;
            match (self.set, doc) {
                (_, Value::Null) if docs.is_null(row) => out.append_null(),
                (Set::Elements { text }, Value::Array(items)) => {
                    for item in items {
                        match (text, item) {
                            (true, Value::Null) => out.values().append_null(),
                            (true, Value::String(s)) => out.values().append_value(s),
                            (_, item) => out.values().append_value(item.text()),
                        }
                    }
                    out.append(true);
                }
                (Set::Keys | Set::EachKeys, Value::Object(members)) => {
                    for (key, _) in members {
                        out.values().append_value(key);
                    }
                    out.append(true);
                }
                (Set::EachValues { text }, Value::Object(members)) => {
                    for (_, value) in members {
                        match (text, value) {
                            (true, Value::Null) => out.values().append_null(),
                            (true, Value::String(s)) => out.values().append_value(s),
                            (_, value) => out.values().append_value(value.text()),
                        }
                    }
                    out.append(true);
                }
                (Set::EachKeys | Set::EachValues { .. }, _) => {
                    return Err(invalid("cannot call jsonb_each on a non-object"));
                }
                (Set::Elements { .. }, Value::Object(_)) => {
                    return Err(invalid("cannot extract elements from an object"));
                }
                (Set::Elements { .. }, _) => {
                    return Err(invalid("cannot extract elements from a scalar"));
                }
                (Set::Keys, Value::Array(_)) => {
                    return Err(invalid("cannot call jsonb_object_keys on an array"));
                }
                (Set::Keys, _) => {
                    return Err(invalid("cannot call jsonb_object_keys on a scalar"));
                }
            }
        }
        let array: ArrayRef = Arc::new(out.finish());
        Ok(ColumnarValue::Array(array))
    }
}

fn invalid(message: &str) -> DataFusionError {
    DataFusionError::External(Box::new(crate::error::SqlError::new(
        crate::error::sqlstate::INVALID_PARAMETER_VALUE,
        message,
    )))
}
