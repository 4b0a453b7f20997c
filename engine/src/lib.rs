//! Rivulet's streaming runtime.
//!
//! This crate never sees SQL text or the Postgres wire: it stores and moves Arrow data. Today it holds
//! the storage layer every later feature stands on; operators, watermarks and checkpoints join it as
//! the streaming issues land (see ARCHITECTURE.md).

/// Changelog batches: an Arrow `RecordBatch` plus an op per row.
pub mod changelog;
/// The stable byte encoding of one row, used for stored rows and keys.
pub mod codec;
/// Errors of the storage and runtime layer.
pub mod error;
/// Streaming jobs: sources and parallel stages as tasks, barriers, epochs committed atomically.
pub mod job;
/// Key groups: stable hashing of keys, and which parallel instance owns which keys.
pub mod keygroup;
/// Streaming operators over changelog batches.
pub mod operator;
/// Sinks: where a job's changes go, written, pre-committed at the barrier, committed after it.
pub mod sink;
/// The one handle on RocksDB: keyed get/put/delete, prefix scans, atomic batches, snapshots.
pub mod state;
/// Tables: current rows plus a durable, sequenced change log, on the state store.
pub mod table;
/// Named, abort-on-drop tasks (the only sanctioned way to spawn).
pub mod task;

pub use error::{EngineError, Result};
