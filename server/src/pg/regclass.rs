//! `'name'::regclass` as Postgres has it: the relation's OID, and `42P01` for a name no relation
//! has (`relation "nope" does not exist`), where the lookup `datafusion-pg-catalog` plans for it
//! is NULL. [`lookups`] wraps each such lookup of a catalog query in `rivulet_regclass(lookup,
//! name)` ([`udf`]), which refuses the missing name and declares its result `regclass` (so
//! `pg_typeof` says so; the value still goes out as an `oid`, see [`super::names::visible`]).
//! `to_regclass(name)`, NULL for a missing name, is rewritten into a cast after this runs. A
//! constant name is resolved at Describe already ([`resolve_constants`]), as Postgres does.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int32Type};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast;

use crate::error::{SqlError, sqlstate};

pub(crate) const NAME: &str = "rivulet_regclass";

/// Wraps each `'name'::regclass` lookup (the library's subquery over `pg_catalog.pg_class`, found
/// by the `parse_ident(name::TEXT)` it calls) in `rivulet_regclass(lookup, name)`.
pub fn lookups(stmt: &mut ast::Statement) {
    let _ = ast::visit_expressions_mut(stmt, |expr| {
        if let ast::Expr::Subquery(query) = expr
            && reads_pg_class(query)
            && let Some(name) = looked_up(query)
        {
            let mut query = query.clone();
            in_pg_catalog(&mut query, &name);
            let lookup = ast::Expr::Subquery(query);
            *expr = super::rewrite::call(NAME, vec![lookup, name], vec![]);
        }
        ControlFlow::<()>::Continue(())
    });
}

fn reads_pg_class(query: &ast::Query) -> bool {
    let ast::SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    select.from.first().is_some_and(|from| {
        matches!(&from.relation, ast::TableFactor::Table { name, .. }
            if name.to_string().eq_ignore_ascii_case("pg_catalog.pg_class"))
    })
}

/// Makes the lookup of a system catalog's name without a schema (`'pg_class'::regclass`, in
/// Metabase's table query) look in `pg_catalog`, which Postgres' search path starts with; the
/// library's lookup looks in the current schema only.
fn in_pg_catalog(query: &mut ast::Query, name: &ast::Expr) {
    let ast::Expr::Value(v) = name else {
        return;
    };
    let ast::Value::SingleQuotedString(text) = &v.value else {
        return;
    };
    let relation = ast::ObjectName::from(vec![ast::Ident::new(text.as_str())]);
    if text.contains('.') || !super::rewrite::is_system_name(&relation) {
        return;
    }
    let qualified = format!("pg_catalog.{text}");
    let _ = ast::visit_expressions_mut(query, |e| {
        if let ast::Expr::Value(v) = e
            && matches!(&v.value, ast::Value::SingleQuotedString(s) if s == text)
        {
            v.value = ast::Value::SingleQuotedString(qualified.clone());
        }
        ControlFlow::<()>::Continue(())
    });
}

/// The name the lookup resolves: `x` of its `parse_ident(x::TEXT)`.
fn looked_up(query: &ast::Query) -> Option<ast::Expr> {
    let mut found = None;
    let _ = ast::visit_expressions(query, |e| {
        if let ast::Expr::Function(f) = e
            && f.name.to_string().eq_ignore_ascii_case("parse_ident")
            && let ast::FunctionArguments::List(list) = &f.args
            && let [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(arg))] =
                list.args.as_slice()
        {
            let name = match arg {
                ast::Expr::Cast { expr, .. } => expr.as_ref(),
                other => other,
            };
            found = Some(name.clone());
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

/// Resolves each `'name'::regclass` of `plan` whose name is a constant, as Postgres does when it
/// parses the statement: a missing relation is `42P01` at Describe, before any Execute.
pub async fn resolve_constants(
    ctx: &datafusion::prelude::SessionContext,
    plan: &LogicalPlan,
) -> std::result::Result<(), SqlError> {
    let mut constant = Vec::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.name() == NAME
                    && f.args.get(1).is_some_and(|name| {
                        name.column_refs().is_empty()
                            && !name
                                .exists(|e| Ok(matches!(e, Expr::Placeholder(_))))
                                .unwrap_or(true)
                    })
                {
                    constant.push(e.clone());
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    for lookup in constant {
        let plan = LogicalPlanBuilder::empty(true)
            .project(vec![lookup])?
            .build()?;
        ctx.execute_logical_plan(plan).await?.collect().await?;
    }
    Ok(())
}

/// `rivulet_regclass(oid, name)`: `oid`, or `42P01` naming `name` where `oid` is NULL.
pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(RegClass {
        signature: Signature::any(2, Volatility::Stable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RegClass {
    signature: Signature,
}

impl ScalarUDFImpl for RegClass {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn return_field_from_args(&self, _: ReturnFieldArgs) -> Result<FieldRef> {
        let oid = Field::new("regclass", DataType::Int32, true).with_metadata(HashMap::from([(
            super::names::OID_ALIAS.to_string(),
            "oid".to_string(),
        )]));
        Ok(Arc::new(super::wire_types::declare(oid, "regclass")))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [oids, names] = args.args.as_slice() else {
            return Err(DataFusionError::Plan(format!("{NAME} takes two arguments")));
        };
        let oids = cast(&oids.to_array(rows)?, &DataType::Int32)?;
        let names = cast(&names.to_array(rows)?, &DataType::Utf8)?;
        let (oids, names) = (oids.as_primitive::<Int32Type>(), names.as_string::<i32>());
        if let Some(missing) = (0..rows).find(|&i| oids.is_null(i) && names.is_valid(i)) {
            return Err(DataFusionError::External(Box::new(SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{}\" does not exist", names.value(missing)),
            ))));
        }
        Ok(ColumnarValue::Array(Arc::new(oids.clone())))
    }
}
