//! The engine's error type. Each variant says whose fault it is: the user's data (`NotNull`,
//! `DuplicateKey`, `Unsupported`), the disk (`Storage`), a system outside (`External`), or us
//! (`Corrupt`, `Internal`).

use datafusion::arrow::error::ArrowError;

/// Result alias for the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// An error of the storage or runtime layer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// RocksDB reported an I/O or corruption problem.
    #[error("storage error: {0}")]
    Storage(#[from] rocksdb::Error),
    /// Arrow failed on a batch we built or read.
    #[error("arrow error: {0}")]
    Arrow(#[from] ArrowError),
    /// Stored bytes do not decode: a bug or a damaged data directory.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A column type the storage layer cannot hold.
    #[error("column type {0} is not supported in tables")]
    Unsupported(String),
    /// A NULL for a column declared NOT NULL (or part of the primary key).
    #[error(
        "null value in column \"{column}\" of relation \"{table}\" violates not-null constraint"
    )]
    NotNull { table: String, column: String },
    /// A text that is no value of its column's type (`jsonb` that is not JSON), in Postgres'
    /// words; `kind` says why (the SQLSTATE the server gives it).
    #[error("{message}")]
    InvalidText {
        message: String,
        detail: Option<String>,
        kind: InvalidTextKind,
    },
    /// A text value longer than its column's declared length.
    #[error("value too long for type {type_name}")]
    TooLong { type_name: String },
    /// A second row with the same primary key.
    #[error("duplicate key value violates unique constraint \"{table}_pkey\"")]
    DuplicateKey { table: String, key: String },
    /// A row the view's query cannot compute (a division by zero, an overflowing cast): the
    /// user's data, not a bug; the job fails until the data or the view changes.
    #[error("{operator}: {message} (caused by the data, not by Rivulet)")]
    Data { operator: String, message: String },
    /// A sum beyond the 38 digits of NUMERIC, Arrow's 128-bit decimal: the user's data, as in
    /// Postgres' `value overflows numeric format`; the job fails (its operator is named there).
    #[error("value overflows numeric format (caused by the data, not by Rivulet)")]
    NumericOverflow,
    /// A system outside Rivulet failed (a file system, a Kafka broker): not the user's data and
    /// not a bug; the job fails and its restart strategy retries from the last checkpoint.
    #[error("{system}: {message}")]
    External { system: String, message: String },
    /// A read of change-log entries that were trimmed (every reader had committed past them).
    #[error(
        "the change log of \"{relation}\" no longer holds the commits after {after}: it keeps \
         only those after {kept_after}"
    )]
    Trimmed {
        relation: String,
        after: u64,
        kept_after: u64,
    },
    /// A broken invariant inside the engine.
    #[error("transaction too large: its writes to \"{table}\" pass {limit} bytes")]
    TransactionTooLarge { table: String, limit: usize },

    #[error("could not commit the transaction: {0}")]
    TransactionConflict(String),

    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a text is no value of its column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidTextKind {
    /// Not in the type's syntax (`[1,]` as `json`).
    Syntax,
    /// A character the value cannot hold (`\u0000` in `jsonb`).
    Untranslatable,
    /// A number beyond the range the type holds (`1e1000000` in `jsonb`).
    OutOfRange,
    /// Nested deeper than the server takes.
    TooDeep,
}
