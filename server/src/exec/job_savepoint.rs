//! Savepoints of views' and sinks' jobs (see `rivulet_planner::savepoint` for the statements,
//! `crate::savepoints` for the manifest and the restore checks, `rivulet_engine::job::savepoint`
//! for the record file).
//!
//! - `ALTER ... SAVEPOINT TO 'dir'` writes the job's last committed epoch while the job runs on.
//! - `ALTER ... SUSPEND WITH SAVEPOINT TO 'dir'` stops the job at a synced checkpoint first, so
//!   the savepoint is where the job stands, and keeps it stopped (stored with the view, so a
//!   restart keeps it suspended) until `ALTER ... RESUME`.
//! - `CREATE ... FROM SAVEPOINT 'dir'` (or `CREATE MATERIALIZED VIEW v WITH (savepoint = 'dir')
//!   AS query`) plans the query, checks it against the savepoint, and creates the view with the
//!   savepoint's rows and state in the same synced write as its definition; its job then starts
//!   from the savepoint's positions, with this session's parallelism.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rivulet_engine::job::savepoint;
use rivulet_planner::catalog::TableDef;

use super::Outcome;
use crate::catalog::TableEntry;
use crate::error::{SqlError, sqlstate};
use crate::jobs::{SUSPENDED, plan_stream};
use crate::savepoints::{
    MANIFEST_FORMAT, Manifest, Record, SavedSource, SavedStateTable, check_rows, check_sources,
    match_state_tables,
};
use crate::session::{Session, TxState};

fn kind(sink: bool) -> &'static str {
    if sink { "sink" } else { "materialized view" }
}

/// `dir` as a directory on the server's machine, or the error for a relative one.
fn absolute(dir: &str) -> Result<PathBuf, SqlError> {
    let path = PathBuf::from(dir);
    if !path.is_absolute() {
        return Err(SqlError::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("savepoint directory \"{dir}\" is not an absolute path"),
        )
        .with_hint("The directory is on the server's machine; give its full path."));
    }
    Ok(path)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Writes the savepoint of `entry`'s job, whose sources are `sources`, into `dir`.
async fn write(
    shared: &Arc<crate::session::Shared>,
    entry: &TableEntry,
    sources: Vec<(Arc<rivulet_engine::table::TableStore>, Option<String>)>,
    dir: PathBuf,
) -> Result<Record, SqlError> {
    let def = entry.def.clone();
    let store = shared.catalog.store().clone();
    let server = shared.catalog.server_id().to_string();
    let created_at = now();
    let id = def.id;
    let target = dir.clone();
    let saved_sources = sources.clone();
    let when = created_at.clone();
    let (contents, manifest) = tokio::task::spawn_blocking(move || {
        let mut manifest = None;
        let contents = savepoint::write(&store, id, Some(id), &target, |c| {
            let m = Manifest {
                format: MANIFEST_FORMAT,
                rivulet_version: env!("CARGO_PKG_VERSION").into(),
                created_at: when,
                server,
                epoch: c.epoch,
                sources: saved_sources
                    .iter()
                    .zip(0u32..)
                    .map(|((table, external), index)| SavedSource {
                        index,
                        relation: table.name().to_string(),
                        table_id: table.id(),
                        external: external.clone(),
                        position: c.positions.get(&index).copied().unwrap_or(0),
                        watermark: c.watermarks.get(&index).copied(),
                    })
                    .collect(),
                state_tables: def
                    .view
                    .iter()
                    .flat_map(|v| &v.state_tables)
                    .map(|t| SavedStateTable {
                        id: t.id,
                        shape: t.shape.clone(),
                        keys: c.state_tables.get(&t.id).copied().unwrap_or(0),
                    })
                    .collect(),
                rows: c.rows,
                records: c.records,
                bytes: c.bytes,
                definition: def,
            };
            let json = serde_json::to_vec_pretty(&m).unwrap_or_default();
            manifest = Some(m);
            json
        })?;
        Ok::<_, rivulet_engine::EngineError>((contents, manifest))
    })
    .await
    .map_err(|e| SqlError::internal(format!("savepoint task: {e}")))?
    .map_err(|e| {
        SqlError::new(
            sqlstate::IO_ERROR,
            format!(
                "could not write the savepoint to \"{}\": {e}",
                dir.display()
            ),
        )
    })?;
    let manifest = manifest.ok_or_else(|| SqlError::internal("savepoint without a manifest"))?;
    let holds = manifest
        .sources
        .iter()
        .filter(|s| s.external.is_none())
        .map(|s| (s.table_id, s.position))
        .collect();
    tracing::info!(
        job = %entry.def.name,
        dir = %dir.display(),
        epoch = contents.epoch,
        records = contents.records,
        bytes = contents.bytes,
        "savepoint written"
    );
    Ok(Record {
        path: dir.display().to_string(),
        database: entry.def.database.clone(),
        name: entry.def.name.clone(),
        kind: kind(entry.def.view.as_ref().is_some_and(|v| v.sink.is_some())).into(),
        epoch: contents.epoch,
        created_at,
        rows: contents.rows,
        bytes: contents.bytes,
        holds,
    })
}

/// Reads and checks the savepoint in `dir`.
async fn read(dir: &Path) -> Result<(savepoint::Savepoint, Manifest), SqlError> {
    if !dir.join(savepoint::MANIFEST_FILE).exists() {
        return Err(SqlError::new(
            sqlstate::UNDEFINED_FILE,
            format!("savepoint \"{}\" does not exist", dir.display()),
        )
        .with_hint(
            "Give the directory an ALTER ... SAVEPOINT TO wrote (SHOW SAVEPOINTS lists them).",
        ));
    }
    let at = dir.to_path_buf();
    let saved = tokio::task::spawn_blocking(move || savepoint::read(&at))
        .await
        .map_err(|e| SqlError::internal(format!("savepoint task: {e}")))??;
    let manifest: Manifest = serde_json::from_slice(&saved.manifest).map_err(|e| {
        SqlError::new(
            sqlstate::DATA_CORRUPTED,
            format!("savepoint \"{}\": manifest.json: {e}", dir.display()),
        )
    })?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(SqlError::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "savepoint \"{}\" has manifest format {}; this server reads format {MANIFEST_FORMAT}",
                dir.display(),
                manifest.format
            ),
        ));
    }
    Ok((saved, manifest))
}

impl Session {
    fn outside_block(&self, what: &str) -> Result<(), SqlError> {
        if self.tx != TxState::Idle {
            return Err(SqlError::new(
                sqlstate::ACTIVE_SQL_TRANSACTION,
                format!("{what} cannot run inside a transaction block"),
            ));
        }
        Ok(())
    }

    /// `ALTER {MATERIALIZED VIEW | SINK} name [SUSPEND WITH] SAVEPOINT TO 'dir'`.
    pub(super) async fn save_job(
        &mut self,
        name: &str,
        sink: bool,
        to: &str,
        suspend: bool,
    ) -> Result<Outcome, SqlError> {
        let tag = if sink {
            "ALTER SINK"
        } else {
            "ALTER MATERIALIZED VIEW"
        };
        self.outside_block(&format!("{tag} ... SAVEPOINT"))?;
        let entry = self.job_entry(name, sink)?;
        let dir = absolute(to)?;
        if dir.exists() {
            return Err(SqlError::new(
                sqlstate::DUPLICATE_FILE,
                format!("savepoint directory \"{to}\" already exists"),
            )
            .with_hint("Give a directory that does not exist yet; the savepoint creates it."));
        }
        let stateless_legacy = entry
            .def
            .view
            .as_ref()
            .is_some_and(|v| v.state_tables.is_empty())
            && rivulet_engine::job::has_positional_state(self.catalog().store(), entry.def.id)?;
        if stateless_legacy {
            return Err(SqlError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "{} \"{name}\" was created before savepoints existed: its state is stored by \
                     plan position",
                    kind(sink)
                ),
            )
            .with_hint("Create it again to take savepoints of it."));
        }
        let shared = Arc::clone(&self.shared);
        let jobs = &shared.jobs;
        let _one_change = jobs.exclusive().await;
        // Read again under the lock: a rescale may have changed its settings meanwhile.
        let entry = self.job_entry(name, sink)?;
        if let Some(at) = crate::jobs::suspended(&entry.def) {
            return Err(SqlError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("{} \"{name}\" is suspended", kind(sink)),
            )
            .with_detail(format!(
                "It was suspended with the savepoint \"{at}\", which holds its state."
            )));
        }
        let Some(job) = jobs.job(entry.def.id) else {
            return Err(SqlError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "{} \"{name}\" has no job to take a savepoint of",
                    kind(sink)
                ),
            )
            .with_hint("SHOW JOBS says why it is not running."));
        };
        let backfilling = jobs.catch_up(entry.def.id).is_some_and(|c| {
            matches!(
                *c.borrow(),
                crate::jobs::catch_up::CatchUp::Starting
                    | crate::jobs::catch_up::CatchUp::Running(_)
            )
        });
        if suspend && backfilling {
            return Err(SqlError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "{} \"{name}\" is still catching up with its sources",
                    kind(sink)
                ),
            )
            .with_hint("Suspend it once its CREATE has returned (SHOW JOBS shows the progress)."));
        }
        let sources = job.source_kinds();
        // Until the savepoint's own holds are in place, keep every entry the logs have now: the
        // job may commit, and the trim follow it, while the savepoint is written.
        let _meanwhile: Vec<_> = sources
            .iter()
            .filter(|(_, external)| external.is_none())
            .map(|(t, _)| t.hold(t.trimmed()))
            .collect();
        if suspend {
            jobs.suspend(entry.def.id).await;
        }
        drop(job);
        let record = match write(&shared, &entry, sources, dir).await {
            Ok(r) => r,
            Err(e) => {
                if suspend {
                    // Nothing was saved: the job goes on from its checkpoint.
                    jobs.resume(&shared, &entry).await?;
                }
                return Err(e);
            }
        };
        let path = record.path.clone();
        if let Err(e) = shared.savepoints.add(&shared.catalog, record) {
            if suspend {
                jobs.resume(&shared, &entry).await?;
            }
            return Err(e);
        }
        if suspend {
            let mut def = entry.def.clone();
            if let Some(view) = def.view.as_mut() {
                view.settings.insert(SUSPENDED.into(), path);
            }
            shared.catalog.replace_definition(def)?;
        }
        Ok(Outcome::Command(tag.into()))
    }

    /// `ALTER {MATERIALIZED VIEW | SINK} name RESUME`.
    pub(super) async fn resume_job(&mut self, name: &str, sink: bool) -> Result<Outcome, SqlError> {
        let tag = if sink {
            "ALTER SINK"
        } else {
            "ALTER MATERIALIZED VIEW"
        };
        self.outside_block(&format!("{tag} ... RESUME"))?;
        let shared = Arc::clone(&self.shared);
        let _one_change = shared.jobs.exclusive().await;
        let entry = self.job_entry(name, sink)?;
        if crate::jobs::suspended(&entry.def).is_none() {
            return Err(SqlError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("{} \"{name}\" is not suspended", kind(sink)),
            ));
        }
        let mut def = entry.def.clone();
        if let Some(view) = def.view.as_mut() {
            view.settings.remove(SUSPENDED);
        }
        let entry = shared.catalog.replace_definition(def)?;
        shared.jobs.resume(&shared, &entry).await?;
        Ok(Outcome::Command(tag.into()))
    }

    /// `CREATE {MATERIALIZED VIEW | SINK} name FROM SAVEPOINT 'dir'`, and with `query` (its
    /// text and whether it emits on window close) a view created `WITH (savepoint = 'dir') AS
    /// query`.
    pub(super) async fn restore_job(
        &mut self,
        name: &str,
        sink: bool,
        if_not_exists: bool,
        from: &str,
        allow_non_restored_state: bool,
        query: Option<(String, bool)>,
    ) -> Result<Outcome, SqlError> {
        let tag = if sink {
            "CREATE SINK"
        } else {
            "CREATE MATERIALIZED VIEW"
        };
        self.outside_block(&format!("{tag} ... FROM SAVEPOINT"))?;
        if self.catalog().table(&self.database, name).is_some() {
            if if_not_exists {
                return Ok(Outcome::Command(tag.into()));
            }
            return Err(SqlError::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        let dir = absolute(from)?;
        let (saved, manifest) = read(&dir).await?;
        let saved_sink = manifest
            .definition
            .view
            .as_ref()
            .is_some_and(|v| v.sink.is_some());
        let Some(saved_view) = manifest.definition.view.clone() else {
            return Err(SqlError::new(
                sqlstate::DATA_CORRUPTED,
                format!("savepoint \"{from}\" describes no view or sink"),
            ));
        };
        if saved_sink != sink {
            return Err(SqlError::new(
                sqlstate::WRONG_OBJECT_TYPE,
                format!(
                    "savepoint \"{from}\" is of a {}, not of a {}",
                    kind(saved_sink),
                    kind(sink)
                ),
            ));
        }
        let refuse = |detail: String| {
            SqlError::new(
                sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "savepoint \"{from}\" of {} \"{}\" does not fit the query of \"{name}\"",
                    kind(sink),
                    manifest.definition.name
                ),
            )
            .with_detail(detail)
        };
        let mut settings = saved_view.settings.clone();
        settings.remove(SUSPENDED);
        settings.extend(crate::jobs::job_settings(&self.settings));
        let (query, eowc) =
            query.unwrap_or_else(|| (saved_view.query.clone(), saved_view.emit_on_window_close));
        let scales = !sink && !saved_view.scales.is_empty();
        let plan = plan_stream(self, &query, &settings, eowc, sink, scales).await?;
        let planned_tables = crate::jobs::state_tables(&plan.graph);
        let tables = match_state_tables(
            &manifest.state_tables,
            &planned_tables,
            allow_non_restored_state,
        )
        .map_err(|d| {
            refuse(d).with_hint(
                "Restore with the savepoint's query, or add WITH (allow_non_restored_state = \
                 true) to leave out state no operator takes.",
            )
        })?;
        // From here until the job is listed (and reads them), nothing trims what the restore
        // needs of its sources' change logs.
        let sources = plan.graph.source_kinds();
        let _held: Vec<_> = sources
            .iter()
            .zip(&manifest.sources)
            .filter(|((_, external), _)| external.is_none())
            .map(|((table, _), saved)| table.hold(saved.position))
            .collect();
        check_sources(self.catalog(), &manifest, &sources).map_err(refuse)?;
        let mut def: TableDef = manifest.definition.clone();
        def.name = name.to_string();
        def.id = 0;
        if !sink {
            let mut columns = plan.columns.clone();
            crate::pg::dscale::split_view_columns(&mut columns);
            let planned = TableDef {
                columns,
                primary_key: plan.key.clone(),
                view: Some(rivulet_planner::catalog::ViewDef {
                    counted: plan.counted,
                    ..saved_view.clone()
                }),
                ..def.clone()
            };
            check_rows(&manifest.definition, &planned).map_err(refuse)?;
        }
        if let Some(view) = def.view.as_mut() {
            view.query = query;
            view.emit_on_window_close = eowc;
            view.settings = settings;
            view.state_tables = planned_tables;
        }
        let unclaimed: Vec<u32> = manifest
            .state_tables
            .iter()
            .map(|t| t.id)
            .filter(|id| !tables.contains_key(id))
            .collect();
        drop(plan.graph);
        let restore = |id: u64, batch: &mut rivulet_engine::state::StateBatch| {
            saved
                .restore(batch, id, Some(id), &tables)
                .map_err(SqlError::from)
        };
        self.catalog()
            .create_table_restoring(&self.database, def, false, Some(&restore))?;
        drop(saved);
        if !unclaimed.is_empty() {
            self.notice(format!(
                "state tables {unclaimed:?} of the savepoint were not restored: no operator of the \
                 query takes them"
            ));
        }
        let Some(entry) = self.catalog().table(&self.database, name) else {
            return Err(SqlError::internal("restored view vanished after creation"));
        };
        tracing::info!(
            job = %name,
            savepoint = %dir.display(),
            epoch = manifest.epoch,
            "restoring from a savepoint"
        );
        self.start_job(&entry, kind(sink)).await?;
        Ok(Outcome::Command(tag.into()))
    }

    /// `SHOW SAVEPOINTS`: the savepoints this server wrote and keeps change-log entries for.
    pub(super) fn show_savepoints(&mut self) -> Result<Outcome, SqlError> {
        let records = self.shared.savepoints.list();
        let rows: Vec<[String; 8]> = records
            .into_iter()
            .map(|r| {
                let holds = r
                    .holds
                    .iter()
                    .map(|(table, after)| {
                        let name = crate::savepoints::table_by_id(self.catalog(), *table)
                            .map_or_else(|| format!("#{table}"), |t| t.name().to_string());
                        format!("{name} after {after}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                [
                    r.path,
                    r.name,
                    r.kind,
                    r.epoch.to_string(),
                    r.created_at,
                    r.rows.to_string(),
                    r.bytes.to_string(),
                    holds,
                ]
            })
            .collect();
        let column = |i: usize| rows.iter().map(|r| r[i].as_str()).collect::<Vec<_>>();
        Ok(super::settings::text_rows(
            &[
                "Path",
                "Name",
                "Kind",
                "Epoch",
                "Created at",
                "Rows",
                "Bytes",
                "Keeps log of",
            ],
            (0..8).map(column).collect(),
        ))
    }

    /// `DROP SAVEPOINT [IF EXISTS] 'dir'`: the server forgets the savepoint and trims the change
    /// logs it kept; its files stay where they are.
    pub(super) fn drop_savepoint(
        &mut self,
        path: &str,
        if_exists: bool,
    ) -> Result<Outcome, SqlError> {
        self.outside_block("DROP SAVEPOINT")?;
        let in_use = self
            .catalog()
            .databases()
            .iter()
            .flat_map(|db| self.catalog().tables(db))
            .find(|t| crate::jobs::suspended(&t.def) == Some(path));
        if let Some(view) = in_use {
            return Err(SqlError::new(
                sqlstate::OBJECT_IN_USE,
                format!(
                    "savepoint \"{path}\" holds the state of suspended \"{}\"",
                    view.def.name
                ),
            )
            .with_hint("Resume or drop it first."));
        }
        if !self.shared.savepoints.remove(&self.shared.catalog, path)? && !if_exists {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!("savepoint \"{path}\" does not exist"),
            ));
        }
        Ok(Outcome::Command("DROP SAVEPOINT".into()))
    }
}
