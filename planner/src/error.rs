//! The planner's error type. Variants map one-to-one onto SQLSTATE classes in the server's
//! `error.rs`; messages follow the Postgres style (lowercase, no final period, identifiers quoted).

use datafusion::error::DataFusionError;

/// Result alias for the planner.
pub type Result<T, E = PlanError> = std::result::Result<T, E>;

/// An error found while parsing or planning a statement.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The text does not parse. `position` is the 1-based character offset in the whole query string.
    #[error("{message}")]
    Syntax {
        message: String,
        detail: Option<String>,
        position: Option<usize>,
    },
    /// Valid SQL that Rivulet does not support (yet); the message names the construct.
    #[error("{0} is not supported")]
    Unsupported(String),
    /// [`PlanError::Unsupported`], with a hint sentence saying what to write instead.
    #[error("{what} is not supported")]
    UnsupportedHint { what: String, hint: String },
    /// A type name that is not a known type.
    #[error("type \"{0}\" does not exist")]
    UnknownType(String),
    /// A column named twice in one table.
    #[error("column \"{0}\" specified more than once")]
    DuplicateColumn(String),
    /// A constraint naming a column the table does not have.
    #[error("column \"{0}\" named in key does not exist")]
    UnknownKeyColumn(String),
    /// A clause (WATERMARK, ...) naming a column the table does not have.
    #[error("column \"{column}\" named in {clause} does not exist")]
    UnknownColumn {
        column: String,
        clause: &'static str,
    },
    /// A value or column of the wrong type for where it is used.
    #[error("{0}")]
    WrongType(String),
    /// More than one primary key.
    #[error("multiple primary keys for table \"{0}\" are not allowed")]
    MultiplePrimaryKeys(String),
    /// A `WITH RECURSIVE` query Postgres refuses as ill-formed (`42P19`).
    #[error("{0}")]
    InvalidRecursion(String),
    /// A construct Postgres itself has not implemented; the message is Postgres' own.
    #[error("{0}")]
    NotImplemented(String),
    /// An invalid value in a statement (a bad option, a numeric precision out of range).
    #[error("{0}")]
    InvalidParameter(String),
    /// The engine could not set up an operator (its state did not load).
    #[error(transparent)]
    Engine(#[from] rivulet_engine::EngineError),
    /// DataFusion's planner refused the statement.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}
