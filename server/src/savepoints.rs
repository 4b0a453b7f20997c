//! Savepoints of views' and sinks' jobs: what a savepoint directory's manifest says, the
//! savepoints this server wrote, and the checks a restore makes.
//!
//! A savepoint (see `rivulet_engine::job::savepoint` for the record file) is portable as far as
//! its sources are:
//! - Kafka topics, files and generators are read by the job itself; their positions (offsets,
//!   file positions, generated counts) mean the same on any server that defines the source with
//!   the same name, so such a view restores anywhere.
//! - Tables and views are read through their change logs, by sequence number. A sequence means
//!   something only on the server whose table it counts, or on a backup of that server's data
//!   directory (the catalog's server identity tells), and only while the log still holds the
//!   entries after it. So a savepoint keeps those entries: each one this server writes holds its
//!   sources' logs from its positions on (a [`LogHold`] per table, made again at every start
//!   from the record kept in the catalog) until `DROP SAVEPOINT`.
//!
//! A restore plans the query (the savepoint's, or a new one) and refuses, naming the difference,
//! when the plan's stateful operators, columns or sources are not the savepoint's; with
//! `allow_non_restored_state` (Flink's `allowNonRestoredState`), state tables of the savepoint
//! that no operator of the new plan matches are left out instead.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rivulet_engine::table::{LogHold, TableStore};
use rivulet_planner::catalog::{StateTableDef, TableDef};
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::error::{SqlError, sqlstate};

/// The version of the manifest's layout.
pub const MANIFEST_FORMAT: u32 = 1;

/// A savepoint directory's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// The Rivulet that wrote it.
    pub rivulet_version: String,
    /// When it was written (RFC 3339, UTC).
    pub created_at: String,
    /// The identity of the server that wrote it (see `Catalog::server_id`).
    pub server: String,
    /// The view's or sink's definition: its query, settings, columns and state tables.
    pub definition: TableDef,
    /// The job's committed epoch the savepoint holds.
    pub epoch: u64,
    pub sources: Vec<SavedSource>,
    pub state_tables: Vec<SavedStateTable>,
    /// The view's rows.
    pub rows: u64,
    /// Records in `state.bin`, and bytes of their keys and values.
    pub records: u64,
    pub bytes: u64,
}

/// One source of the job, in the job's source order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedSource {
    pub index: u32,
    /// The table, view or source the job reads.
    pub relation: String,
    /// Its id on the server that wrote the savepoint.
    pub table_id: u64,
    /// For a source outside Rivulet's tables (Kafka, files, a generator), what it is.
    pub external: Option<String>,
    /// The committed position: a change-log sequence, or an external source's progress.
    pub position: u64,
    pub watermark: Option<i64>,
}

/// One state table of the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedStateTable {
    pub id: u32,
    /// The operator it belongs to (see `StateTableDef::shape`).
    pub shape: String,
    /// Keys it holds.
    pub keys: u64,
}

/// A savepoint this server wrote, as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub path: String,
    pub database: String,
    /// The view or sink it was taken of.
    pub name: String,
    /// `materialized view` or `sink`.
    pub kind: String,
    pub epoch: u64,
    pub created_at: String,
    pub rows: u64,
    pub bytes: u64,
    /// Per table read through its change log: its id and the position from which on the
    /// savepoint keeps its entries.
    pub holds: Vec<(u64, u64)>,
}

/// The savepoints this server wrote, with the change-log entries each keeps.
pub struct Savepoints {
    kept: Mutex<BTreeMap<String, (Record, Vec<LogHold>)>>,
}

impl std::fmt::Debug for Savepoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Savepoints")
            .field("count", &self.kept.lock().len())
            .finish()
    }
}

/// Table `id` of `catalog`, in any database.
pub fn table_by_id(catalog: &Catalog, id: u64) -> Option<Arc<TableStore>> {
    catalog
        .databases()
        .iter()
        .flat_map(|db| catalog.tables(db))
        .find(|t| t.def.id == id)
        .map(|t| Arc::clone(&t.store))
}

fn hold_all(catalog: &Catalog, holds: &[(u64, u64)]) -> Vec<LogHold> {
    holds
        .iter()
        .filter_map(|(table, after)| table_by_id(catalog, *table).map(|t| t.hold(*after)))
        .collect()
}

impl Savepoints {
    /// The savepoints the catalog records, each holding its change-log entries again.
    pub fn load(catalog: &Catalog) -> Result<Self, SqlError> {
        let mut kept = BTreeMap::new();
        for bytes in catalog.savepoint_records()? {
            let record: Record = serde_json::from_slice(&bytes).map_err(|e| {
                SqlError::new(sqlstate::DATA_CORRUPTED, format!("savepoint record: {e}"))
            })?;
            let holds = hold_all(catalog, &record.holds);
            kept.insert(record.path.clone(), (record, holds));
        }
        Ok(Self {
            kept: Mutex::new(kept),
        })
    }

    /// Records `record` (synced) and holds its change-log entries.
    pub fn add(&self, catalog: &Catalog, record: Record) -> Result<(), SqlError> {
        let json = serde_json::to_vec(&record)
            .map_err(|e| SqlError::internal(format!("savepoint record: {e}")))?;
        catalog.set_savepoint_record(&record.path, Some(&json))?;
        let holds = hold_all(catalog, &record.holds);
        self.kept
            .lock()
            .insert(record.path.clone(), (record, holds));
        Ok(())
    }

    /// Forgets the savepoint at `path` and releases its entries; false if there is none.
    pub fn remove(&self, catalog: &Catalog, path: &str) -> Result<bool, SqlError> {
        if !self.kept.lock().contains_key(path) {
            return Ok(false);
        }
        catalog.set_savepoint_record(path, None)?;
        self.kept.lock().remove(path);
        Ok(true)
    }

    /// The savepoints, by path.
    pub fn list(&self) -> Vec<Record> {
        self.kept.lock().values().map(|(r, _)| r.clone()).collect()
    }
}

/// Which state table of the savepoint each of the new plan's takes (saved id to new id),
/// matching shapes in plan order. Without `allow_unclaimed`, the plan must have exactly the
/// savepoint's stateful operators; with it, a saved table no operator takes is left out (and
/// a new operator without a match starts empty). The error says what differs.
pub fn match_state_tables(
    saved: &[SavedStateTable],
    planned: &[StateTableDef],
    allow_unclaimed: bool,
) -> Result<BTreeMap<u32, u32>, String> {
    if !allow_unclaimed {
        if saved.len() != planned.len() {
            return Err(format!(
                "The savepoint holds {} stateful operators, and the query is planned now with {}.",
                saved.len(),
                planned.len()
            ));
        }
        for (s, p) in saved.iter().zip(planned) {
            if s.shape != p.shape {
                return Err(format!(
                    "State table {} of the savepoint is \"{}\", and the query plans operator {} as \"{}\".",
                    s.id, s.shape, p.id, p.shape
                ));
            }
        }
        return Ok(saved
            .iter()
            .zip(planned)
            .map(|(s, p)| (s.id, p.id))
            .collect());
    }
    let mut map = BTreeMap::new();
    let mut next = 0;
    for p in planned {
        if let Some(k) = saved[next.min(saved.len())..]
            .iter()
            .position(|s| s.shape == p.shape)
        {
            let s = &saved[next + k];
            map.insert(s.id, p.id);
            next += k + 1;
        }
    }
    Ok(map)
}

/// Whether the new plan reads the savepoint's sources, in the same order and the same way, and
/// whether this server has what a table source's position points at. `sources` are the plan's
/// (see `JobGraph::source_kinds`).
pub fn check_sources(
    catalog: &Catalog,
    manifest: &Manifest,
    sources: &[(Arc<TableStore>, Option<String>)],
) -> Result<(), String> {
    if manifest.sources.len() != sources.len() {
        return Err(format!(
            "The savepoint reads {} sources, and the query reads {}.",
            manifest.sources.len(),
            sources.len()
        ));
    }
    for (saved, (table, external)) in manifest.sources.iter().zip(sources) {
        if saved.relation != table.name() || saved.external != *external {
            return Err(format!(
                "Source {} of the savepoint is \"{}\" ({}), and the query reads \"{}\" ({}) there.",
                saved.index + 1,
                saved.relation,
                saved.external.as_deref().unwrap_or("a change log"),
                table.name(),
                external.as_deref().unwrap_or("a change log"),
            ));
        }
        if saved.external.is_some() {
            continue;
        }
        if manifest.server != catalog.server_id() || saved.table_id != table.id() {
            return Err(format!(
                "It reads \"{}\" through its change log at position {}, which counts the commits \
                 of that table on the server that wrote the savepoint (or a backup of it); here \
                 \"{}\" is another table.",
                saved.relation,
                saved.position,
                table.name()
            ));
        }
        if table.trimmed() > saved.position {
            return Err(format!(
                "The change log of \"{}\" no longer holds the commits after position {}: it keeps \
                 only those after {} (the savepoint was dropped, or written by another copy of \
                 this server).",
                saved.relation,
                saved.position,
                table.trimmed()
            ));
        }
    }
    Ok(())
}

/// Where a restore of the rows of `saved` into a view planned with `columns`/`key` goes wrong.
pub fn check_rows(saved: &TableDef, planned: &TableDef) -> Result<(), String> {
    let shape = |d: &TableDef| {
        d.columns
            .iter()
            .map(|c| format!("{} {}", c.name, c.sql_type.pg_name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Compared as types, not names: `integer[]` names an array of any dimensions.
    let types = |d: &TableDef| {
        d.columns
            .iter()
            .map(|c| (c.name.clone(), c.sql_type.clone()))
            .collect::<Vec<_>>()
    };
    if types(saved) != types(planned) {
        return Err(format!(
            "The savepoint's rows have the columns ({}), and the query's are ({}).",
            shape(saved),
            shape(planned)
        ));
    }
    let counted = |d: &TableDef| d.view.as_ref().is_some_and(|v| v.counted);
    if saved.primary_key != planned.primary_key || counted(saved) != counted(planned) {
        return Err("The savepoint's rows are keyed differently than the query's.".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(shapes: &[&str]) -> Vec<SavedStateTable> {
        shapes
            .iter()
            .zip(1..)
            .map(|(s, id)| SavedStateTable {
                id,
                shape: s.to_string(),
                keys: 0,
            })
            .collect()
    }

    fn planned(shapes: &[&str]) -> Vec<StateTableDef> {
        shapes
            .iter()
            .zip(1..)
            .map(|(s, id)| StateTableDef {
                id,
                shape: s.to_string(),
            })
            .collect()
    }

    #[test]
    fn state_tables_match_by_shape_in_plan_order() {
        let s = saved(&["agg a", "topn b", "agg c"]);
        assert_eq!(
            match_state_tables(&s, &planned(&["agg a", "topn b", "agg c"]), false),
            Ok(BTreeMap::from([(1, 1), (2, 2), (3, 3)]))
        );
        let err = match_state_tables(&s, &planned(&["agg a", "topn X", "agg c"]), false)
            .expect_err("differs");
        assert!(
            err.contains("\"topn b\"") && err.contains("\"topn X\""),
            "{err}"
        );
        let err = match_state_tables(&s, &planned(&["agg a"]), false).expect_err("fewer");
        assert!(
            err.contains("3 stateful operators") && err.contains("with 1"),
            "{err}"
        );
        // Unclaimed state left out; a new operator starts empty.
        assert_eq!(
            match_state_tables(&s, &planned(&["agg a", "new", "agg c"]), true),
            Ok(BTreeMap::from([(1, 1), (3, 3)]))
        );
    }
}
