//! CREATE [OR REPLACE] VIEW and DROP VIEW: plain views, which store a query and no rows.
//!
//! CREATE plans the query once, to check it and to learn its columns (renamed by a column list),
//! and stores both in the catalog like a table's definition; statements that name the view read
//! its query (`crate::views`). OR REPLACE follows Postgres: the new query keeps every column's
//! name and type in place and may add columns at the end. What a view's query names cannot be
//! dropped while the view exists, unless CASCADE drops the view too.

use datafusion::sql::sqlparser::ast::{self, CreateView, ObjectName};
use rivulet_planner::catalog::{ColumnDef, TableDef};
use rivulet_planner::ddl::object_name;
use rivulet_planner::types::SqlType;

use super::Outcome;
use super::ddl::RelationKind;
use super::query::plan_query;
use crate::error::{SqlError, sqlstate};
use crate::session::Session;

impl Session {
    pub(super) async fn create_plain_view(
        &mut self,
        create: &CreateView,
    ) -> Result<Outcome, SqlError> {
        let (schema, name) = object_name(&create.name)?;
        super::ddl::check_schema(schema.as_deref())?;
        let existing = self.catalog().table(&self.database, &name);
        if let Some(entry) = &existing {
            if create.if_not_exists {
                return Ok(Outcome::Command("CREATE VIEW".into()));
            }
            if !create.or_replace {
                return Err(SqlError::new(
                    sqlstate::DUPLICATE_TABLE,
                    format!("relation \"{name}\" already exists"),
                ));
            }
            if entry.def.plain_view.is_none() {
                return Err(SqlError::new(
                    sqlstate::WRONG_OBJECT_TYPE,
                    format!("\"{name}\" is not a view"),
                ));
            }
        }
        let query = create.query.to_string();
        // Bound by name, a view reading itself would expand forever (Postgres would read the
        // view as it was before the replacement).
        if crate::views::relations_read(&query).contains(&name) {
            return Err(SqlError::new(
                sqlstate::INVALID_OBJECT_DEFINITION,
                format!("infinite recursion detected in rules for relation \"{name}\""),
            ));
        }
        let ctx = self.context()?.clone();
        let plan = plan_query(&ctx, &ast::Statement::Query(create.query.clone())).await?;
        let mut columns: Vec<ColumnDef> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| {
                ColumnDef::new(
                    f.name().clone(),
                    // Only catalogs read a view's types: one Rivulet cannot store is shown as text.
                    SqlType::of_field(f).unwrap_or(SqlType::Text),
                    f.is_nullable(),
                )
            })
            .collect();
        super::view::rename_columns(
            &mut columns,
            &create.columns,
            "CREATE VIEW specifies more column names than columns",
        )?;
        let mut def = TableDef {
            comment: None,
            display_scales: false,
            id: 0,
            database: self.database.clone(),
            name: name.clone(),
            columns,
            primary_key: Vec::new(),
            append_only: false,
            options: Default::default(),
            view: None,
            watermark: None,
            computed: Vec::new(),
            plain_view: Some(query),
        };
        match existing {
            Some(old) => {
                check_replacement(&old.def.columns, &def.columns)?;
                // A running job planned the old query; it would read the new one only after a
                // restart, against state built from the old.
                let dependents = crate::views::dependents(self.catalog(), &self.database, &name);
                if let Some((kind, job)) = dependents.iter().find(|(kind, _)| *kind != "view") {
                    return Err(SqlError::new(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("cannot replace view \"{name}\": {kind} \"{job}\" reads it"),
                    )
                    .with_hint("Drop the materialized view first, or create a new view."));
                }
                def.id = old.def.id;
                self.catalog().replace_definition(def)?;
            }
            None => {
                self.catalog().create_table(&self.database, def, false)?;
            }
        }
        Ok(Outcome::Command("CREATE VIEW".into()))
    }

    /// DROP VIEW.
    pub(super) fn drop_plain_views(
        &mut self,
        if_exists: bool,
        cascade: bool,
        names: &[ObjectName],
    ) -> Result<Outcome, SqlError> {
        for name in names {
            let (schema, view) = object_name(name)?;
            super::ddl::check_schema(schema.as_deref())?;
            if self.drop_target(&view, RelationKind::View)?.is_none() {
                if if_exists {
                    continue;
                }
                return Err(SqlError::new(
                    sqlstate::UNDEFINED_TABLE,
                    format!("view \"{view}\" does not exist"),
                ));
            }
            self.refuse_if_named(&view, cascade)?;
            self.catalog()
                .drop_table(&self.database, &view, if_exists)?;
        }
        Ok(Outcome::Command("DROP VIEW".into()))
    }

    /// Fails if the query of a view names relation `name` (Postgres' `2BP01`); with `cascade`,
    /// drops those views instead, and what depends on them.
    pub(super) fn refuse_if_named(&mut self, name: &str, cascade: bool) -> Result<(), SqlError> {
        let dependents = crate::views::dependents(self.catalog(), &self.database, name);
        if dependents.is_empty() {
            return Ok(());
        }
        if !cascade {
            let detail = dependents
                .iter()
                .map(|(kind, d)| format!("{kind} \"{d}\" depends on \"{name}\""))
                .collect::<Vec<_>>()
                .join("\n");
            return Err(SqlError::new(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!("cannot drop \"{name}\" because other objects depend on it"),
            )
            .with_detail(detail)
            .with_hint("Use DROP ... CASCADE to drop the dependent objects too."));
        }
        for (_, dependent) in dependents {
            let Some(entry) = self.catalog().table(&self.database, &dependent) else {
                continue;
            };
            self.drop_readers(entry.def.id)?;
            self.refuse_if_named(&dependent, true)?;
            self.shared.jobs.stop(entry.def.id);
            self.catalog()
                .drop_table(&self.database, &dependent, true)?;
        }
        Ok(())
    }
}

/// Postgres' rules for CREATE OR REPLACE VIEW: every old column stays, with its name and type, in
/// its place; new columns may follow.
fn check_replacement(old: &[ColumnDef], new: &[ColumnDef]) -> Result<(), SqlError> {
    if new.len() < old.len() {
        return Err(SqlError::new(
            sqlstate::INVALID_TABLE_DEFINITION,
            "cannot drop columns from view",
        ));
    }
    for (old, new) in old.iter().zip(new) {
        if old.name != new.name {
            return Err(SqlError::new(
                sqlstate::INVALID_TABLE_DEFINITION,
                format!(
                    "cannot change name of view column \"{}\" to \"{}\"",
                    old.name, new.name
                ),
            )
            .with_hint(
                "Use ALTER VIEW ... RENAME COLUMN ... to change name of view column instead.",
            ));
        }
        if old.sql_type != new.sql_type {
            return Err(SqlError::new(
                sqlstate::INVALID_TABLE_DEFINITION,
                format!(
                    "cannot change data type of view column \"{}\" from {} to {}",
                    old.name,
                    old.sql_type.pg_name(),
                    new.sql_type.pg_name()
                ),
            ));
        }
    }
    Ok(())
}
