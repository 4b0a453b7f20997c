//! Rivulet's SQL front end.
//!
//! SQL text is parsed by sqlparser (DataFusion's re-export) with Rivulet's extensions added around
//! it, not in a fork: statement splitting and RisingWave/Flink keywords such as `APPEND ONLY` and
//! `FLUSH` are handled on the token stream before sqlparser sees a statement. Queries and DML are
//! then planned by DataFusion; the streaming planner joins this crate with materialized views.

/// `ALTER MATERIALIZED VIEW | SINK ... SET PARALLELISM`.
pub mod alter_job;
/// `BACKUP TO 'directory'`.
pub mod backup;
/// Catalog records: tables and columns as stored and planned.
pub mod catalog;
/// Computed columns (`name AS expr`), filled on insert.
pub mod computed;
/// DDL: `CREATE TABLE` to a [`catalog::TableDef`].
pub mod ddl;
/// Errors of parsing and planning, each with the position in the SQL text where known.
pub mod error;
/// `jsonb`'s text form: JSON parsed and printed as Postgres prints `jsonb`.
pub mod jsonb;
/// The declared lengths of `CHAR(n)` and `VARCHAR(n)` columns, checked on insert and update, and
/// `jsonb` columns' values put in `jsonb`'s text form.
pub mod lengths;
/// Integer arithmetic that fails on overflow, as Postgres' does.
pub mod overflow;
/// Splitting SQL text into statements and parsing them with Rivulet's extensions.
pub mod parse;
/// `MATCH_RECOGNIZE`: parsed, compiled, and planned as a table for the streaming planner.
pub mod recognize;
/// Postgres' rules for `WITH RECURSIVE`, which DataFusion does not enforce.
pub mod recursive;
/// Savepoints of streaming jobs: `ALTER ... SAVEPOINT TO`, `CREATE ... FROM SAVEPOINT`, ...
pub mod savepoint;
pub mod sequence;
/// Session windows: `SESSION(t, ts, gap)` as SQL window functions.
pub mod session;
/// RisingWave's `SESSION WITH GAP` window frame, as the session window functions.
pub mod session_frame;
/// The streaming planner: a view's query to a job graph of operators.
pub mod stream;
/// `SUBSCRIBE`: a relation's changes pushed to a client as they commit.
pub mod subscribe;
/// `FOR SYSTEM_TIME AS OF`: temporal joins' table versions, through the Postgres grammar.
pub mod temporal;
/// SQL column types and their Arrow and Postgres counterparts.
pub mod types;
/// `uuid` values: Postgres' input and text form, and the binary wire form.
pub mod uuid;
/// Window table functions (TUMBLE, HOP, CUMULATE) rewritten into plain SQL.
pub mod window;

pub use error::{PlanError, Result};
