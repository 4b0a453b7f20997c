//! CREATE/DROP of tables and databases. Definitions come from the planner's DDL module; the catalog
//! persists them in the same synced write as the storage they own.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    CreateTable, DataType, ObjectName, ObjectType, SequenceOptions,
};
use rivulet_planner::ddl::{object_name, table_def};
use rivulet_planner::parse::{ComputedClause, WatermarkClause};
use rivulet_planner::stream::watermark_expr;

use super::Outcome;
use crate::catalog::{DEFAULT_SCHEMA, TableEntry};
use crate::error::{SqlError, sqlstate};
use crate::session::Session;

impl Session {
    pub(super) fn create_table(
        &mut self,
        create: &CreateTable,
        append_only: bool,
        watermark: Option<&WatermarkClause>,
        computed: &[ComputedClause],
    ) -> Result<Outcome, SqlError> {
        let (schema, name) = object_name(&create.name)?;
        check_schema(schema.as_deref())?;
        let state = self.context()?.state();
        let mut def = table_def(create, &name, append_only, watermark, |columns| {
            rivulet_planner::computed::typed(&state, columns, computed)
        })?;
        for column in &def.columns {
            check_default(&state, column)?;
            if def.options.contains_key("connector")
                && (column.default.is_some() || column.identity.is_some())
            {
                // A connector's rows are not INSERTed: nothing would fill the column.
                return Err(SqlError::unsupported(format!(
                    "a DEFAULT, serial or identity column (\"{}\") in a table with a connector",
                    column.name
                )));
            }
        }
        crate::sources::prepare(&mut def);
        if let Some(w) = &def.watermark {
            let state = self.context()?.state();
            watermark_expr(&state, &def.schema(), w)?;
        }
        crate::sources::connector(&def)?;
        crate::sources::check_new(&def)?;
        let name = def.name.clone();
        self.catalog()
            .create_table(&self.database, def, create.if_not_exists)?;
        if let Some(entry) = self.catalog().table(&self.database, &name) {
            self.shared.sources.start(self.catalog().store(), &entry)?;
        }
        Ok(Outcome::Command("CREATE TABLE".into()))
    }

    pub(super) fn create_sequence(
        &mut self,
        name: &ObjectName,
        data_type: Option<&DataType>,
        options: &[SequenceOptions],
        if_not_exists: bool,
    ) -> Result<Outcome, SqlError> {
        let (schema, name) = object_name(name)?;
        check_schema(schema.as_deref())?;
        let sql_type = match data_type {
            Some(t) => rivulet_planner::types::SqlType::from_ast(t)?,
            None => rivulet_planner::types::SqlType::BigInt,
        };
        let def = rivulet_planner::sequence::sequence_def(&name, sql_type, options)?;
        self.catalog()
            .create_sequence(&self.database, def, if_not_exists)?;
        Ok(Outcome::Command("CREATE SEQUENCE".into()))
    }

    pub(super) fn create_database(
        &mut self,
        name: &ObjectName,
        if_not_exists: bool,
    ) -> Result<Outcome, SqlError> {
        let (_, db) = object_name(name)?;
        self.catalog().create_database(&db, if_not_exists)?;
        Ok(Outcome::Command("CREATE DATABASE".into()))
    }

    pub(super) fn drop(
        &mut self,
        kind: &ObjectType,
        if_exists: bool,
        cascade: bool,
        names: &[ObjectName],
    ) -> Result<Outcome, SqlError> {
        match kind {
            ObjectType::Table => {
                for name in names {
                    let (schema, table) = object_name(name)?;
                    check_schema(schema.as_deref())?;
                    if let Some(entry) = self.drop_target(&table, RelationKind::Table)? {
                        if cascade {
                            self.drop_readers(entry.def.id)?;
                        }
                        self.refuse_if_read(entry.def.id, &table)?;
                        self.refuse_if_named(&table, cascade)?;
                    }
                    if let Some(entry) = self.catalog().table(&self.database, &table) {
                        self.shared.sources.stop(entry.def.id);
                    }
                    self.catalog()
                        .drop_table(&self.database, &table, if_exists)?;
                }
                Ok(Outcome::Command("DROP TABLE".into()))
            }
            ObjectType::Database => {
                for name in names {
                    let (_, db) = object_name(name)?;
                    if db == self.database {
                        return Err(SqlError::new(
                            sqlstate::OBJECT_IN_USE,
                            "cannot drop the currently open database",
                        ));
                    }
                    for view in self.catalog().tables(&db) {
                        self.shared.jobs.stop(view.def.id);
                        self.shared.sources.stop(view.def.id);
                    }
                    self.catalog().drop_database(&db, if_exists)?;
                }
                Ok(Outcome::Command("DROP DATABASE".into()))
            }
            ObjectType::Sequence => {
                for name in names {
                    let (schema, sequence) = object_name(name)?;
                    check_schema(schema.as_deref())?;
                    if self.catalog().sequence(&self.database, &sequence).is_none()
                        && self.catalog().table(&self.database, &sequence).is_some()
                    {
                        return Err(SqlError::new(
                            sqlstate::WRONG_OBJECT_TYPE,
                            format!("\"{sequence}\" is not a sequence"),
                        ));
                    }
                    self.catalog()
                        .drop_sequence(&self.database, &sequence, if_exists)?;
                }
                Ok(Outcome::Command("DROP SEQUENCE".into()))
            }
            other => Err(SqlError::unsupported(format!("DROP {other}"))),
        }
    }
}

/// Refuses a column's DEFAULT that reads a column (0A000) or whose type cannot be cast to the
/// column's (42804), as Postgres does at CREATE TABLE. A default DataFusion cannot plan alone
/// (Postgres syntax Rivulet rewrites) is left to the INSERTs, which plan it in full.
fn check_default(
    state: &datafusion::execution::SessionState,
    column: &rivulet_planner::catalog::ColumnDef,
) -> Result<(), SqlError> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::ExprSchemable;
    let Some(text) = &column.default else {
        return Ok(());
    };
    let empty = datafusion::common::DFSchema::empty();
    let expr = match state.create_logical_expr(text, &empty) {
        Ok(expr) => expr,
        Err(e) if e.to_string().contains("No field named") => {
            return Err(SqlError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "cannot use column reference in DEFAULT expression",
            ));
        }
        Err(_) => return Ok(()),
    };
    let Ok(from) = expr.get_type(&empty) else {
        return Ok(());
    };
    let to = column.sql_type.arrow_type();
    // Arrow casts booleans to and from numbers; Postgres does not.
    let boolean = |t: &DataType| *t == DataType::Boolean;
    let mismatch = (boolean(&from) != boolean(&to)) && (from.is_numeric() || to.is_numeric());
    if from != DataType::Null
        && (mismatch || !datafusion::arrow::compute::can_cast_types(&from, &to))
    {
        return Err(SqlError::new(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "column \"{}\" is of type {} but default expression is of type {}",
                column.name,
                column.sql_type.pg_name(),
                crate::pg::wire_types::type_name(&datafusion::arrow::datatypes::Field::new(
                    "", from, true
                ))
            ),
        )
        .with_hint("You will need to rewrite or cast the expression."));
    }
    Ok(())
}

pub(super) fn check_schema(schema: Option<&str>) -> Result<(), SqlError> {
    match schema {
        None | Some(DEFAULT_SCHEMA) => Ok(()),
        Some(other) => Err(SqlError::new(
            sqlstate::INVALID_SCHEMA_NAME,
            format!("schema \"{other}\" does not exist"),
        )),
    }
}

/// What a relation is, as a DROP statement names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RelationKind {
    /// A table or a source.
    Table,
    View,
    MaterializedView,
    Sink,
}

impl RelationKind {
    fn of(def: &rivulet_planner::catalog::TableDef) -> Self {
        match &def.view {
            Some(v) if v.sink.is_some() => Self::Sink,
            Some(_) => Self::MaterializedView,
            None if def.plain_view.is_some() => Self::View,
            None => Self::Table,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::View => "view",
            Self::MaterializedView => "materialized view",
            Self::Sink => "sink",
        }
    }
}

impl Session {
    /// The relation `name` that a `DROP <kind>` names, if it exists; 42809 with a hint naming
    /// the right DROP when it is another kind of relation.
    pub(super) fn drop_target(
        &self,
        name: &str,
        kind: RelationKind,
    ) -> Result<Option<Arc<TableEntry>>, SqlError> {
        let Some(entry) = self.catalog().table(&self.database, name) else {
            return Ok(None);
        };
        let actual = RelationKind::of(&entry.def);
        if actual != kind {
            let noun = actual.noun();
            return Err(SqlError::new(
                sqlstate::WRONG_OBJECT_TYPE,
                format!("\"{name}\" is not a {}", kind.noun()),
            )
            .with_hint(format!(
                "Use DROP {} to remove a {noun}.",
                noun.to_uppercase()
            )));
        }
        Ok(Some(entry))
    }
}
