//! The catalog: databases and their tables, persisted in the state store.
//!
//! Key space (tag `C`): `C n` the next object id; `C d <db>` one database; `C t <db> 0x00 <table>` one
//! [`TableDef`] as JSON; `C i` the server's identity (random, made at the first start, copied
//! by a backup: savepoints name the server whose change-log positions they hold); `C s <path>`
//! one savepoint this server wrote (see `savepoints.rs`); `C u <db> 0x00 <name>` one
//! [`SubscriptionDef`] as JSON (a subscription goes with its relation and its database); `C q <db>
//! 0x00 <name>` one [`StandaloneSequence`] as JSON; `C v ..` a sequence's position (see
//! `sequence.rs`; a `serial` column's sequence is defined in its table's definition). Every DDL
//! statement is one synced write batch, so the catalog and the table data it points at change
//! together. The in-memory copy is authoritative for readers and is only
//! changed after the write succeeded.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use rivulet_engine::state::{StateBatch, StateStore};
use rivulet_engine::table::TableStore;
use rivulet_planner::catalog::{SequenceDef, TableDef};
use serde::{Deserialize, Serialize};

use crate::error::{SqlError, sqlstate};
use crate::sequence::{Sequence, position_key, position_prefix};

/// The database every server has and clients connect to by default.
pub const DEFAULT_DATABASE: &str = "dev";
/// The one schema of each database.
pub const DEFAULT_SCHEMA: &str = "public";

const NEXT_ID_KEY: &[u8] = b"Cn";
const SERVER_ID_KEY: &[u8] = b"Ci";
const SAVEPOINT_PREFIX: &[u8] = b"Cs";

fn savepoint_key(path: &str) -> Vec<u8> {
    let mut k = SAVEPOINT_PREFIX.to_vec();
    k.extend_from_slice(path.as_bytes());
    k
}

/// What a restore writes with a new table, given the table's id (see
/// [`Catalog::create_table_restoring`]).
pub type Restore<'a> = dyn Fn(u64, &mut StateBatch) -> Result<(), SqlError> + 'a;

/// A table with its storage.
#[derive(Debug)]
pub struct TableEntry {
    pub def: TableDef,
    pub store: Arc<TableStore>,
}

#[derive(Debug, Default)]
struct Database {
    tables: BTreeMap<String, Arc<TableEntry>>,
    subscriptions: BTreeMap<String, SubscriptionDef>,
    /// Every sequence, `CREATE SEQUENCE`'s and the columns', by name.
    sequences: BTreeMap<String, Arc<Sequence>>,
}

impl Database {
    /// Whether a relation (table, view, sequence) is named `name`: they share one name space.
    fn has_relation(&self, name: &str) -> bool {
        self.tables.contains_key(name) || self.sequences.contains_key(name)
    }
}

/// A `CREATE SEQUENCE`, as the catalog stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandaloneSequence {
    pub id: u64,
    pub database: String,
    pub def: SequenceDef,
}

/// The sequences `def`'s columns own, opened at their stored positions.
fn column_sequences(store: &StateStore, def: &TableDef) -> Result<Vec<Arc<Sequence>>, SqlError> {
    let mut out = Vec::new();
    for (i, column) in def.columns.iter().enumerate() {
        if let Some(sequence) = &column.sequence {
            let key = position_key(def.id, u32::try_from(i).ok());
            let owner = Some((def.name.clone(), column.name.clone()));
            out.push(Arc::new(Sequence::open(
                sequence.clone(),
                owner,
                store.clone(),
                key,
            )?));
        }
    }
    Ok(out)
}

/// RisingWave's `CREATE SUBSCRIPTION`: a relation whose committed changes stay readable by
/// subscription cursors for `retention_ms` (see `subscriptions.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionDef {
    pub name: String,
    pub database: String,
    /// The table or materialized view, by name and id.
    pub relation: String,
    pub relation_id: u64,
    pub retention_ms: i64,
    /// When it was created, Unix milliseconds.
    pub created_ms: i64,
}

#[derive(Debug)]
struct Inner {
    databases: BTreeMap<String, Database>,
    next_id: u64,
}

/// All databases and tables of the server.
#[derive(Debug)]
pub struct Catalog {
    store: StateStore,
    inner: RwLock<Inner>,
    server_id: String,
}

fn db_key(db: &str) -> Vec<u8> {
    let mut k = b"Cd".to_vec();
    k.extend_from_slice(db.as_bytes());
    k
}

fn table_key(db: &str, table: &str) -> Vec<u8> {
    named_key(b"Ct", db, table)
}

fn sequence_key(db: &str, name: &str) -> Vec<u8> {
    named_key(b"Cq", db, name)
}

fn subscription_key(db: &str, name: &str) -> Vec<u8> {
    named_key(b"Cu", db, name)
}

/// `tag db 0x00 name`.
fn named_key(tag: &[u8], db: &str, name: &str) -> Vec<u8> {
    let mut k = tag.to_vec();
    k.extend_from_slice(db.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

/// `def` as stored in the catalog.
fn definition_json(def: &TableDef) -> Result<Vec<u8>, SqlError> {
    serde_json::to_vec(def).map_err(|e| {
        SqlError::new(
            sqlstate::INTERNAL_ERROR,
            format!("table definition does not serialize: {e}"),
        )
    })
}

/// Every catalog entry under `prefix`, each JSON of a `T`; one that does not parse is corrupt.
fn load_json<T: serde::de::DeserializeOwned>(
    store: &StateStore,
    prefix: &[u8],
) -> Result<Vec<T>, SqlError> {
    let mut out = Vec::new();
    let mut bad = None;
    store
        .scan_prefix(None, prefix, None, |k, v| {
            match serde_json::from_slice::<T>(v) {
                Ok(def) => out.push(def),
                Err(e) => {
                    bad = Some(format!(
                        "catalog entry {:?}: {e}",
                        String::from_utf8_lossy(k)
                    ))
                }
            }
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .map_err(storage_error)?;
    match bad {
        Some(b) => Err(SqlError::new(sqlstate::DATA_CORRUPTED, b)),
        None => Ok(out),
    }
}

fn storage_error(e: impl std::fmt::Display) -> SqlError {
    SqlError::new(
        sqlstate::IO_ERROR,
        format!("could not write the catalog: {e}"),
    )
}

impl Catalog {
    /// Loads the catalog (creating the default database on first start).
    pub fn load(store: StateStore) -> Result<Self, SqlError> {
        let mut databases: BTreeMap<String, Database> = BTreeMap::new();
        let corrupt = |what: String| SqlError::new(sqlstate::DATA_CORRUPTED, what);
        store
            .scan_prefix(None, b"Cd", None, |k, _| {
                let name = String::from_utf8_lossy(&k[2..]).into_owned();
                databases.insert(name, Database::default());
                Ok(std::ops::ControlFlow::Continue(()))
            })
            .map_err(storage_error)?;
        let defs: Vec<TableDef> = load_json(&store, b"Ct")?;
        let subscriptions: Vec<SubscriptionDef> = load_json(&store, b"Cu")?;
        let sequences: Vec<StandaloneSequence> = load_json(&store, b"Cq")?;
        let next_id = match store.get(NEXT_ID_KEY).map_err(storage_error)? {
            Some(v) => u64::from_le_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| corrupt("next id".into()))?,
            ),
            None => 1,
        };
        for def in defs {
            let table = TableStore::open(
                store.clone(),
                def.id,
                &def.name,
                def.stored_schema(),
                def.primary_key.clone(),
            )
            .map_err(|e| corrupt(format!("table \"{}\": {e}", def.name)))?;
            if let Some(view) = &def.view {
                table.mark_view(view.counted);
            }
            if !def.scaled_columns().is_empty() {
                table.set_visible(def.visible_columns());
            }
            crate::functions::install_computed(&table, &def)
                .map_err(|e| corrupt(format!("table \"{}\": {}", def.name, e.message)))?;
            let database = databases.entry(def.database.clone()).or_default();
            for sequence in column_sequences(&store, &def)? {
                database
                    .sequences
                    .insert(sequence.def.name.clone(), sequence);
            }
            database.tables.insert(
                def.name.clone(),
                Arc::new(TableEntry {
                    def,
                    store: Arc::new(table),
                }),
            );
        }
        for s in sequences {
            let key = position_key(s.id, None);
            let sequence = Sequence::open(s.def, None, store.clone(), key)?;
            databases
                .entry(s.database)
                .or_default()
                .sequences
                .insert(sequence.def.name.clone(), Arc::new(sequence));
        }
        for def in subscriptions {
            databases
                .entry(def.database.clone())
                .or_default()
                .subscriptions
                .insert(def.name.clone(), def);
        }
        let server_id = match store.get(SERVER_ID_KEY).map_err(storage_error)? {
            Some(v) => String::from_utf8(v).map_err(|_| corrupt("server identity".into()))?,
            None => {
                let id = format!("{:032x}", rand::random::<u128>());
                let mut batch = StateBatch::new();
                batch.put(SERVER_ID_KEY, id.as_bytes());
                store.write(batch, true).map_err(storage_error)?;
                id
            }
        };
        let catalog = Self {
            store,
            inner: RwLock::new(Inner { databases, next_id }),
            server_id,
        };
        if !catalog.database_exists(DEFAULT_DATABASE) {
            catalog.create_database(DEFAULT_DATABASE, false)?;
        }
        Ok(catalog)
    }

    /// Names of all databases, sorted.
    pub fn databases(&self) -> Vec<String> {
        self.inner.read().databases.keys().cloned().collect()
    }

    /// True if `db` exists.
    pub fn database_exists(&self, db: &str) -> bool {
        self.inner.read().databases.contains_key(db)
    }

    /// Creates a database.
    pub fn create_database(&self, db: &str, if_not_exists: bool) -> Result<(), SqlError> {
        let mut inner = self.inner.write();
        if inner.databases.contains_key(db) {
            if if_not_exists {
                return Ok(());
            }
            return Err(SqlError::new(
                sqlstate::DUPLICATE_DATABASE,
                format!("database \"{db}\" already exists"),
            ));
        }
        let mut batch = StateBatch::new();
        batch.put(db_key(db), b"");
        self.store.write(batch, true).map_err(storage_error)?;
        inner.databases.insert(db.to_string(), Database::default());
        Ok(())
    }

    /// Drops a database and every table in it.
    pub fn drop_database(&self, db: &str, if_exists: bool) -> Result<(), SqlError> {
        let mut inner = self.inner.write();
        let Some(database) = inner.databases.get(db) else {
            if if_exists {
                return Ok(());
            }
            return Err(SqlError::new(
                sqlstate::UNDEFINED_DATABASE,
                format!("database \"{db}\" does not exist"),
            ));
        };
        let mut batch = StateBatch::new();
        for (name, entry) in &database.tables {
            entry.store.close();
            batch.delete(table_key(db, name));
            TableStore::drop_data(&mut batch, entry.def.id);
            rivulet_engine::job::drop_state(&mut batch, entry.def.id);
            rivulet_connectors::drop_state(&mut batch, entry.def.id);
            batch.delete_prefix(&position_prefix(entry.def.id));
        }
        for name in database.subscriptions.keys() {
            batch.delete(subscription_key(db, name));
        }
        // A standalone sequence's position is under its own id.
        let standalone: Vec<StandaloneSequence> = load_json(&self.store, &sequence_key(db, ""))?;
        for s in standalone {
            batch.delete(sequence_key(db, &s.def.name));
            batch.delete_prefix(&position_prefix(s.id));
        }
        batch.delete(db_key(db));
        self.store.write(batch, true).map_err(storage_error)?;
        inner.databases.remove(db);
        Ok(())
    }

    /// Tables of `db`, sorted by name.
    pub fn tables(&self, db: &str) -> Vec<Arc<TableEntry>> {
        self.inner
            .read()
            .databases
            .get(db)
            .map(|d| d.tables.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One table, if it exists.
    pub fn table(&self, db: &str, name: &str) -> Option<Arc<TableEntry>> {
        self.inner
            .read()
            .databases
            .get(db)
            .and_then(|d| d.tables.get(name).cloned())
    }

    /// The storage of table `def`, as a new table gets it.
    fn open_table(&self, def: &TableDef) -> Result<TableStore, SqlError> {
        let table = TableStore::open(
            self.store.clone(),
            def.id,
            &def.name,
            def.stored_schema(),
            def.primary_key.clone(),
        )
        .map_err(SqlError::from)?;
        if let Some(view) = &def.view {
            table.mark_view(view.counted);
        }
        if !def.scaled_columns().is_empty() {
            table.set_visible(def.visible_columns());
        }
        crate::functions::install_computed(&table, def)?;
        Ok(table)
    }

    /// Creates a table from `def` (its id and database are assigned here). Returns false if it
    /// already existed and `if_not_exists` was given.
    pub fn create_table(
        &self,
        db: &str,
        def: TableDef,
        if_not_exists: bool,
    ) -> Result<bool, SqlError> {
        self.create_table_restoring(db, def, if_not_exists, None)
    }

    /// [`Catalog::create_table`], writing in the same synced batch what `restore` adds given
    /// the new table's id (a view's rows and its job's state, from a savepoint).
    pub fn create_table_restoring(
        &self,
        db: &str,
        mut def: TableDef,
        if_not_exists: bool,
        restore: Option<&Restore<'_>>,
    ) -> Result<bool, SqlError> {
        let mut inner = self.inner.write();
        let next_id = inner.next_id;
        let Some(database) = inner.databases.get(db) else {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_DATABASE,
                format!("database \"{db}\" does not exist"),
            ));
        };
        if database.has_relation(&def.name) {
            if if_not_exists {
                return Ok(false);
            }
            return Err(SqlError::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{}\" already exists", def.name),
            ));
        }
        let owned = def.columns.iter().filter_map(|c| c.sequence.as_ref());
        if let Some(taken) = owned
            .map(|s| &s.name)
            .find(|n| database.has_relation(n.as_str()) || **n == def.name)
        {
            return Err(SqlError::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{taken}\" already exists"),
            ));
        }
        def.id = next_id;
        def.database = db.to_string();
        let table = self.open_table(&def)?;
        let json = definition_json(&def)?;
        let mut batch = StateBatch::new();
        // A crashed earlier attempt may have left rows or job state under this id; start clean.
        TableStore::drop_data(&mut batch, def.id);
        rivulet_engine::job::drop_state(&mut batch, def.id);
        batch.delete_prefix(&position_prefix(def.id));
        batch.put(table_key(db, &def.name), json);
        batch.put(NEXT_ID_KEY, (next_id + 1).to_le_bytes());
        if let Some(restore) = restore {
            restore(def.id, &mut batch)?;
        }
        self.store.write(batch, true).map_err(storage_error)?;
        inner.next_id = next_id + 1;
        // Opened again to read the restored rows' counters.
        let table = match restore {
            None => table,
            Some(_) => self.open_table(&def)?,
        };
        let name = def.name.clone();
        let sequences = column_sequences(&self.store, &def)?;
        if let Some(database) = inner.databases.get_mut(db) {
            for sequence in sequences {
                database
                    .sequences
                    .insert(sequence.def.name.clone(), sequence);
            }
            database.tables.insert(
                name,
                Arc::new(TableEntry {
                    def,
                    store: Arc::new(table),
                }),
            );
        }
        Ok(true)
    }

    /// Drops a table and its data. Returns false if it did not exist and `if_exists` was given.
    pub fn drop_table(&self, db: &str, name: &str, if_exists: bool) -> Result<bool, SqlError> {
        let mut inner = self.inner.write();
        let Some(entry) = inner
            .databases
            .get(db)
            .and_then(|d| d.tables.get(name))
            .cloned()
        else {
            if if_exists {
                return Ok(false);
            }
            return Err(SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("table \"{name}\" does not exist"),
            ));
        };
        entry.store.close();
        let mut batch = StateBatch::new();
        batch.delete(table_key(db, name));
        TableStore::drop_data(&mut batch, entry.def.id);
        rivulet_engine::job::drop_state(&mut batch, entry.def.id);
        rivulet_connectors::drop_state(&mut batch, entry.def.id);
        batch.delete_prefix(&position_prefix(entry.def.id));
        // Its subscriptions go with it, as an index goes with its table.
        let subscriptions: Vec<String> = inner
            .databases
            .get(db)
            .map(|d| {
                (d.subscriptions.values())
                    .filter(|s| s.relation_id == entry.def.id)
                    .map(|s| s.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        for s in &subscriptions {
            batch.delete(subscription_key(db, s));
        }
        self.store.write(batch, true).map_err(storage_error)?;
        if let Some(database) = inner.databases.get_mut(db) {
            database.tables.remove(name);
            database
                .sequences
                .retain(|_, s| s.owner.as_ref().is_none_or(|(t, _)| t != name));
            for s in &subscriptions {
                database.subscriptions.remove(s);
            }
        }
        Ok(true)
    }

    /// Stores subscription `def`. Returns false if one of its name existed and
    /// `if_not_exists` was given.
    pub fn create_subscription(
        &self,
        def: SubscriptionDef,
        if_not_exists: bool,
    ) -> Result<bool, SqlError> {
        let mut inner = self.inner.write();
        let Some(database) = inner.databases.get_mut(&def.database) else {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_DATABASE,
                format!("database \"{}\" does not exist", def.database),
            ));
        };
        if database.subscriptions.contains_key(&def.name) {
            if if_not_exists {
                return Ok(false);
            }
            return Err(SqlError::new(
                sqlstate::DUPLICATE_OBJECT,
                format!("subscription \"{}\" already exists", def.name),
            ));
        }
        let json = serde_json::to_vec(&def).map_err(|e| {
            SqlError::internal(format!("subscription definition does not serialize: {e}"))
        })?;
        let mut batch = StateBatch::new();
        batch.put(subscription_key(&def.database, &def.name), json);
        self.store.write(batch, true).map_err(storage_error)?;
        database.subscriptions.insert(def.name.clone(), def);
        Ok(true)
    }

    /// Drops a subscription. Returns false if it did not exist and `if_exists` was given.
    pub fn drop_subscription(
        &self,
        db: &str,
        name: &str,
        if_exists: bool,
    ) -> Result<bool, SqlError> {
        let mut inner = self.inner.write();
        let exists = inner
            .databases
            .get(db)
            .is_some_and(|d| d.subscriptions.contains_key(name));
        if !exists {
            if if_exists {
                return Ok(false);
            }
            return Err(SqlError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!("subscription \"{name}\" does not exist"),
            ));
        }
        let mut batch = StateBatch::new();
        batch.delete(subscription_key(db, name));
        self.store.write(batch, true).map_err(storage_error)?;
        if let Some(database) = inner.databases.get_mut(db) {
            database.subscriptions.remove(name);
        }
        Ok(true)
    }

    /// One subscription of `db`, if it exists.
    pub fn subscription(&self, db: &str, name: &str) -> Option<SubscriptionDef> {
        let inner = self.inner.read();
        inner.databases.get(db)?.subscriptions.get(name).cloned()
    }

    /// Every subscription of every database.
    pub fn subscriptions(&self) -> Vec<SubscriptionDef> {
        let inner = self.inner.read();
        (inner.databases.values())
            .flat_map(|d| d.subscriptions.values().cloned())
            .collect()
    }

    /// Stores `def` in place of the definition of the table (or view) with its database, name
    /// and id (a view's changed job settings); its storage stays. Returns the new entry.
    pub fn replace_definition(&self, def: TableDef) -> Result<Arc<TableEntry>, SqlError> {
        let mut inner = self.inner.write();
        let Some(old) = inner
            .databases
            .get(&def.database)
            .and_then(|d| d.tables.get(&def.name))
            .filter(|t| t.def.id == def.id)
            .cloned()
        else {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("relation \"{}\" does not exist", def.name),
            ));
        };
        let json = definition_json(&def)?;
        let mut batch = StateBatch::new();
        batch.put(table_key(&def.database, &def.name), json);
        self.store.write(batch, true).map_err(storage_error)?;
        let entry = Arc::new(TableEntry {
            def,
            store: Arc::clone(&old.store),
        });
        if let Some(database) = inner.databases.get_mut(&entry.def.database) {
            database
                .tables
                .insert(entry.def.name.clone(), Arc::clone(&entry));
        }
        Ok(entry)
    }

    /// The sequence `name` of `db`, if there is one.
    pub fn sequence(&self, db: &str, name: &str) -> Option<Arc<Sequence>> {
        self.inner
            .read()
            .databases
            .get(db)
            .and_then(|d| d.sequences.get(name).cloned())
    }

    /// Every sequence of `db`, by name.
    pub fn sequences(&self, db: &str) -> Vec<Arc<Sequence>> {
        self.inner
            .read()
            .databases
            .get(db)
            .map(|d| d.sequences.values().cloned().collect())
            .unwrap_or_default()
    }

    /// `CREATE SEQUENCE`. Returns false if a relation of its name existed and `if_not_exists`
    /// was given.
    pub fn create_sequence(
        &self,
        db: &str,
        def: SequenceDef,
        if_not_exists: bool,
    ) -> Result<bool, SqlError> {
        let mut inner = self.inner.write();
        let id = inner.next_id;
        let Some(database) = inner.databases.get(db) else {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_DATABASE,
                format!("database \"{db}\" does not exist"),
            ));
        };
        if database.has_relation(&def.name) {
            if if_not_exists {
                return Ok(false);
            }
            return Err(SqlError::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{}\" already exists", def.name),
            ));
        }
        let record = StandaloneSequence {
            id,
            database: db.to_string(),
            def,
        };
        let json = serde_json::to_vec(&record).map_err(storage_error)?;
        let key = position_key(id, None);
        let mut batch = StateBatch::new();
        batch.delete(&key);
        batch.put(sequence_key(db, &record.def.name), json);
        batch.put(NEXT_ID_KEY, (id + 1).to_le_bytes());
        self.store.write(batch, true).map_err(storage_error)?;
        inner.next_id = id + 1;
        let sequence = Sequence::open(record.def, None, self.store.clone(), key)?;
        if let Some(database) = inner.databases.get_mut(db) {
            database
                .sequences
                .insert(sequence.def.name.clone(), Arc::new(sequence));
        }
        Ok(true)
    }

    /// `DROP SEQUENCE` of a standalone one (a column's goes with its table: 2BP01). Returns
    /// false if it did not exist and `if_exists` was given.
    pub fn drop_sequence(&self, db: &str, name: &str, if_exists: bool) -> Result<bool, SqlError> {
        let mut inner = self.inner.write();
        let Some(sequence) = inner
            .databases
            .get(db)
            .and_then(|d| d.sequences.get(name))
            .cloned()
        else {
            if if_exists {
                return Ok(false);
            }
            return Err(SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("sequence \"{name}\" does not exist"),
            ));
        };
        if let Some((table, column)) = &sequence.owner {
            return Err(SqlError::new(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!("cannot drop sequence {name} because other objects depend on it"),
            )
            .with_detail(format!(
                "default value for column {column} of table {table} depends on sequence {name}"
            ))
            .with_hint("The sequence goes with the table that owns it."));
        }
        let records: Vec<StandaloneSequence> = load_json(&self.store, &sequence_key(db, name))?;
        let mut batch = StateBatch::new();
        batch.delete(sequence_key(db, name));
        for r in records.iter().filter(|r| r.def.name == name) {
            batch.delete_prefix(&position_prefix(r.id));
        }
        self.store.write(batch, true).map_err(storage_error)?;
        if let Some(database) = inner.databases.get_mut(db) {
            database.sequences.remove(name);
        }
        Ok(true)
    }

    /// The server's identity (see the module documentation).
    pub fn server_id(&self) -> &str {
        &self.server_id
    }

    /// The stored records of the savepoints this server wrote, as stored.
    pub fn savepoint_records(&self) -> Result<Vec<Vec<u8>>, SqlError> {
        let mut out = Vec::new();
        self.store
            .scan_prefix(None, SAVEPOINT_PREFIX, None, |_, v| {
                out.push(v.to_vec());
                Ok(std::ops::ControlFlow::Continue(()))
            })
            .map_err(storage_error)?;
        Ok(out)
    }

    /// Stores (`Some`) or removes the record of the savepoint at `path`, synced.
    pub fn set_savepoint_record(&self, path: &str, record: Option<&[u8]>) -> Result<(), SqlError> {
        let mut batch = StateBatch::new();
        match record {
            Some(r) => batch.put(savepoint_key(path), r),
            None => batch.delete(savepoint_key(path)),
        }
        self.store.write(batch, true).map_err(storage_error)
    }

    /// The state store (for snapshots).
    pub fn store(&self) -> &StateStore {
        &self.store
    }
}
