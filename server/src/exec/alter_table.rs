//! `ALTER TABLE [IF EXISTS] name ALTER [COLUMN] c SET DEFAULT expr | DROP DEFAULT, ...`: a column's
//! default, kept with its definition in the catalog (what INSERT stores where it gives no value,
//! `exec/defaults.rs`). In a block it takes effect at once and a rollback puts the old one back.
//! The other forms change the stored rows' shape (`ADD COLUMN`, `SET NOT NULL`, ...) and are
//! refused, naming the form.

use datafusion::sql::sqlparser::ast;
use rivulet_planner::ddl::{normalize_ident, object_name};

use super::Outcome;
use crate::error::{SqlError, sqlstate};
use crate::session::Session;

impl Session {
    pub(super) fn alter_table(&mut self, alter: &ast::AlterTable) -> Result<Outcome, SqlError> {
        let (schema, relation) = object_name(&alter.name)?;
        let entry = self
            .catalog()
            .table(&self.database, &relation)
            .filter(|_| {
                schema
                    .as_deref()
                    .is_none_or(|s| s == crate::catalog::DEFAULT_SCHEMA)
            })
            .filter(|t| !self.reads.staged.lock().is_dropped(t.def.id));
        let Some(entry) = entry else {
            if alter.if_exists {
                self.notice(format!("relation \"{relation}\" does not exist, skipping"));
                return Ok(Outcome::Command("ALTER TABLE".into()));
            }
            return Err(SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{relation}\" does not exist"),
            ));
        };
        if entry.def.view.is_some() || entry.def.plain_view.is_some() {
            return Err(SqlError::new(
                sqlstate::WRONG_OBJECT_TYPE,
                format!("\"{relation}\" is not a table"),
            ));
        }
        let mut def = entry.def.clone();
        for operation in &alter.operations {
            let ast::AlterTableOperation::AlterColumn { column_name, op } = operation else {
                return Err(SqlError::unsupported(format!(
                    "ALTER TABLE {} {operation}",
                    alter.name
                )));
            };
            let name = normalize_ident(column_name);
            let Some(position) = def.columns.iter().position(|c| c.name == name) else {
                return Err(SqlError::new(
                    sqlstate::UNDEFINED_COLUMN,
                    format!("column \"{name}\" of relation \"{relation}\" does not exist"),
                ));
            };
            let refused = |what: &str| {
                SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    format!("column \"{name}\" of relation \"{relation}\" is {what}"),
                )
            };
            let computed = def.computed.iter().any(|c| c.column == position);
            let column = &mut def.columns[position];
            match op {
                ast::AlterColumnOperation::SetDefault { .. } if column.identity.is_some() => {
                    return Err(refused("an identity column"));
                }
                ast::AlterColumnOperation::SetDefault { .. }
                | ast::AlterColumnOperation::DropDefault
                    if computed =>
                {
                    return Err(refused("a generated column"));
                }
                ast::AlterColumnOperation::SetDefault { value } => {
                    column.default = Some(value.to_string());
                }
                ast::AlterColumnOperation::DropDefault => column.default = None,
                other => {
                    return Err(SqlError::unsupported(format!(
                        "ALTER TABLE {} ALTER COLUMN {name} {other}",
                        alter.name
                    )));
                }
            }
        }
        self.redefine(&entry.def, def)?;
        Ok(Outcome::Command("ALTER TABLE".into()))
    }
}
