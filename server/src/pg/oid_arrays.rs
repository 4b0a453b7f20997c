//! `oid[]` on the wire, which `arrow-pg` does not know (it maps arrays of Int32 to `int4[]`).
//!
//! asyncpg builds its codec for any array, domain or composite type by running its type
//! introspection query, whose parameter is `$1::oid[]` and whose `attrtypoids` column is an
//! `array_agg` of OIDs. asyncpg has built-in codecs for `oid[]` only: were either typed `int4[]`,
//! it would introspect `int4[]` with the same query, forever. So, as in Postgres:
//! - a parameter cast to `oid[]` is described as `oid[]` and decoded from it ([`parameter_types`],
//!   [`decode`]);
//! - an `int4[]` column of a query over the system catalogs is sent as `oid[]` (the catalogs hold
//!   OIDs where Rivulet's types say Int32; they have no `int4[]` columns), [`mark_result`]. Its
//!   values encode the same: an `oid` is four bytes, as an `int4`.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast;
use pgwire::api::Type;
use pgwire::api::portal::Portal;
use pgwire::error::PgWireResult;

/// The field metadata that marks an `int4[]` result column as `oid[]`.
const OID_ARRAY: &str = "rivulet.oid_array";

/// For each parameter `$n` of `stmt` (by position), `oid[]` where the statement casts it to one.
pub fn parameter_types(stmt: &ast::Statement, count: usize) -> Vec<Option<Type>> {
    let mut types = vec![None; count];
    let _ = ast::visit_expressions(stmt, |e| {
        if let ast::Expr::Cast {
            expr, data_type, ..
        } = e
            && let ast::Expr::Value(v) = expr.as_ref()
            && let ast::Value::Placeholder(p) = &v.value
            && let Some(n) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
            && is_oid_array(data_type)
            && let Some(slot) = n.checked_sub(1).and_then(|i| types.get_mut(i))
        {
            *slot = Some(Type::OID_ARRAY);
        }
        ControlFlow::<()>::Continue(())
    });
    types
}

fn is_oid_array(t: &ast::DataType) -> bool {
    let ast::DataType::Array(ast::ArrayElemTypeDef::SquareBracket(elem, _)) = t else {
        return false;
    };
    matches!(elem.as_ref(), ast::DataType::Custom(name, _)
        if name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| i.value.eq_ignore_ascii_case("oid")))
}

/// A portal's `oid[]` parameters decoded, by position, and the portal without them.
pub type Decoded = (Portal<()>, HashMap<usize, ScalarValue>);

/// The `oid[]` parameters of `portal` (per [`parameter_types`]), decoded into lists of Int32 (the
/// catalogs' OID type), and its `uuid` ones (16 bytes in binary) into `uuid`'s text form, and the
/// portal without them, for `arrow-pg` to decode the others: `None` when it has none.
pub fn decode<S: Clone>(
    portal: &Portal<S>,
    types: &[Option<Type>],
) -> PgWireResult<Option<Decoded>> {
    if !types
        .iter()
        .any(|t| matches!(t.as_ref(), Some(&Type::OID_ARRAY | &Type::UUID)))
    {
        return Ok(None);
    }
    let mut decoded = HashMap::new();
    let mut parameters = portal.parameters.clone();
    let mut hints = portal.statement.parameter_types.clone();
    for (i, t) in types.iter().enumerate() {
        if t.as_ref() == Some(&Type::UUID) {
            // A `uuid`: 16 bytes in binary, text in Postgres' input form; kept in its text form.
            let Some(raw) = portal.parameters.get(i) else {
                continue;
            };
            let value = match raw {
                None => None,
                Some(bytes) if portal.parameter_format.is_binary(i) => Some(
                    rivulet_planner::uuid::from_bytes(bytes)
                        .ok_or_else(|| invalid_uuid(&format!("{} bytes", bytes.len())))?,
                ),
                Some(bytes) => {
                    let text = String::from_utf8_lossy(bytes);
                    Some(rivulet_planner::uuid::parse(&text).ok_or_else(|| invalid_uuid(&text))?)
                }
            };
            decoded.insert(i, ScalarValue::Utf8(value));
            if let Some(p) = parameters.get_mut(i) {
                *p = None;
            }
            if let Some(h) = hints.get_mut(i) {
                *h = None;
            }
            continue;
        }
        if t.as_ref() != Some(&Type::OID_ARRAY) {
            continue;
        }
        let value = portal.parameter::<Vec<Option<u32>>>(i, &Type::OID_ARRAY)?;
        let list = match value {
            Some(oids) => {
                let items: Vec<ScalarValue> = oids
                    .into_iter()
                    .map(|o| ScalarValue::Int32(o.map(|o| o as i32)))
                    .collect();
                ScalarValue::List(ScalarValue::new_list_nullable(&items, &DataType::Int32))
            }
            None => ScalarValue::new_null_list(DataType::Int32, true, 1),
        };
        decoded.insert(i, list);
        if let Some(p) = parameters.get_mut(i) {
            *p = None;
        }
        if let Some(h) = hints.get_mut(i) {
            *h = None;
        }
    }
    let mut rest: Portal<()> = Portal::default();
    rest.name = portal.name.clone();
    rest.statement = Arc::new(pgwire::api::stmt::StoredStatement::new(
        portal.statement.id.clone(),
        (),
        hints,
    ));
    rest.parameter_format = portal.parameter_format.clone();
    rest.parameters = parameters;
    Ok(Some((rest, decoded)))
}

/// Postgres' error for a `uuid` parameter that is none.
fn invalid_uuid(text: &str) -> pgwire::error::PgWireError {
    pgwire::error::PgWireError::UserError(Box::new(pgwire::error::ErrorInfo::new(
        "ERROR".to_string(),
        crate::error::sqlstate::INVALID_TEXT_REPRESENTATION.to_string(),
        format!("invalid input syntax for type uuid: \"{text}\""),
    )))
}

/// `schema` with its `int4[]` columns marked as `oid[]` when `stmt` reads the system catalogs.
pub fn mark_result(stmt: &ast::Statement, schema: SchemaRef) -> SchemaRef {
    let is_int_list = |f: &Field| matches!(f.data_type(), DataType::List(item) if item.data_type() == &DataType::Int32);
    if !schema.fields().iter().any(|f| is_int_list(f))
        || !super::rewrite::reads_catalog_relation(stmt)
    {
        return schema;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if is_int_list(f) {
                let mut metadata = f.metadata().clone();
                metadata.insert(OID_ARRAY.to_string(), "true".to_string());
                f.as_ref().clone().with_metadata(metadata)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Whether `field` is an `oid[]` column per [`mark_result`].
pub fn is_marked(field: &Field) -> bool {
    field.metadata().contains_key(OID_ARRAY)
}
