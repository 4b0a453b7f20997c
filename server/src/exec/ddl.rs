//! CREATE/DROP of tables and databases. Definitions come from the planner's DDL module; the catalog
//! persists them in the same synced write as the storage they own.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{CreateTable, ObjectName, ObjectType};
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
            other => Err(SqlError::unsupported(format!("DROP {other}"))),
        }
    }
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
