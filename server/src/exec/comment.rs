//! `COMMENT ON { TABLE | VIEW | MATERIALIZED VIEW | COLUMN } name IS 'text' | NULL`: a relation's
//! or column's description, kept with its definition in the catalog. `obj_description`,
//! `col_description` and `pg_description` give it back (psql's `\d+`, `\dt+`, SQLAlchemy's
//! reflection, JDBC's REMARKS). `IS NULL` or `IS ''` removes it. In a block it takes effect at
//! once and a rollback puts the old one back.

use datafusion::sql::sqlparser::ast;
use rivulet_planner::ddl::object_name;

use super::Outcome;
use crate::error::{SqlError, sqlstate};
use crate::session::Session;

impl Session {
    pub(super) fn comment(
        &mut self,
        object_type: &ast::CommentObject,
        name: &ast::ObjectName,
        comment: Option<&str>,
    ) -> Result<Outcome, SqlError> {
        use ast::CommentObject as O;
        let (relation, column) = match object_type {
            O::Table | O::View | O::MaterializedView => (name.clone(), None),
            O::Column => {
                let Some((column, relation)) = name.0.split_last() else {
                    return Err(SqlError::new(
                        sqlstate::SYNTAX_ERROR,
                        "column name expected",
                    ));
                };
                if relation.is_empty() {
                    return Err(SqlError::new(
                        sqlstate::SYNTAX_ERROR,
                        format!("column name \"{name}\" must be qualified"),
                    ));
                }
                let Some(column) = column.as_ident().map(rivulet_planner::ddl::normalize_ident)
                else {
                    return Err(SqlError::new(
                        sqlstate::SYNTAX_ERROR,
                        format!("column name expected in \"{name}\""),
                    ));
                };
                (ast::ObjectName(relation.to_vec()), Some(column))
            }
            other => return Err(SqlError::unsupported(format!("COMMENT ON {other}"))),
        };
        let (schema, relation) = object_name(&relation)?;
        let missing = || {
            SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{relation}\" does not exist"),
            )
        };
        if schema
            .as_deref()
            .is_some_and(|s| s != crate::catalog::DEFAULT_SCHEMA)
        {
            return Err(missing());
        }
        let entry = self
            .catalog()
            .table(&self.database, &relation)
            .filter(|t| !self.reads.staged.lock().is_dropped(t.def.id))
            .ok_or_else(missing)?;
        // As Postgres: the object type must be the relation's kind.
        let kind = match (&entry.def.view, &entry.def.plain_view) {
            (Some(_), _) => O::MaterializedView,
            (None, Some(_)) => O::View,
            (None, None) => O::Table,
        };
        if !matches!(object_type, O::Column) && *object_type != kind {
            let what = match object_type {
                O::View => "a view",
                O::MaterializedView => "a materialized view",
                _ => "a table",
            };
            return Err(SqlError::new(
                sqlstate::WRONG_OBJECT_TYPE,
                format!("\"{relation}\" is not {what}"),
            ));
        }
        let text = comment.filter(|c| !c.is_empty()).map(str::to_string);
        let mut def = entry.def.clone();
        match column {
            None => def.comment = text,
            Some(column) => {
                let Some(c) = def.columns.iter_mut().find(|c| c.name == column) else {
                    return Err(SqlError::new(
                        sqlstate::UNDEFINED_COLUMN,
                        format!("column \"{column}\" of relation \"{relation}\" does not exist"),
                    ));
                };
                c.comment = text;
            }
        }
        self.redefine(&entry.def, def)?;
        Ok(Outcome::Command("COMMENT".into()))
    }
}
