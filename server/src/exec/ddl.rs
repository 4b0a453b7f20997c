//! CREATE/DROP of tables and databases. Definitions come from the planner's DDL module; the catalog
//! persists them in the same synced write as the storage they own.

use datafusion::sql::sqlparser::ast::{CreateTable, ObjectName, ObjectType};
use rivulet_planner::ddl::{object_name, table_def};
use rivulet_planner::parse::{ComputedClause, WatermarkClause};
use rivulet_planner::stream::watermark_expr;

use super::Outcome;
use crate::catalog::DEFAULT_SCHEMA;
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
                    if let Some(entry) = self.catalog().table(&self.database, &table) {
                        if entry.def.view.is_some() || entry.def.plain_view.is_some() {
                            let hint = match entry.def.plain_view {
                                Some(_) => "Use DROP VIEW to remove a view.",
                                None => "Use DROP MATERIALIZED VIEW to remove a materialized view.",
                            };
                            return Err(SqlError::new(
                                sqlstate::WRONG_OBJECT_TYPE,
                                format!("\"{table}\" is not a table"),
                            )
                            .with_hint(hint));
                        }
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
