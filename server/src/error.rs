//! The one place where errors become Postgres errors.
//!
//! Every error a client can see is a [`SqlError`]: a SQLSTATE from [`sqlstate`], a message in the
//! Postgres style, and optional detail, hint and character position. Planner, engine and DataFusion
//! errors are mapped here and nowhere else. `XX000` (internal_error) is reserved for Rivulet's bugs.

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::tokenizer::Location;
use pgwire::error::{ErrorInfo, PgWireError};
use rivulet_engine::EngineError;
use rivulet_planner::PlanError;

/// SQLSTATE codes Rivulet sends (names as in the Postgres manual, appendix A).
pub mod sqlstate {
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const DATA_EXCEPTION: &str = "22000";
    pub const CARDINALITY_VIOLATION: &str = "21000";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const STRING_DATA_RIGHT_TRUNCATION: &str = "22001";
    pub const DATETIME_FIELD_OVERFLOW: &str = "22008";
    pub const INVALID_DATETIME_FORMAT: &str = "22007";
    pub const DIVISION_BY_ZERO: &str = "22012";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const INVALID_ESCAPE_SEQUENCE: &str = "22025";
    pub const INVALID_REGULAR_EXPRESSION: &str = "2201B";
    pub const SEQUENCE_GENERATOR_LIMIT_EXCEEDED: &str = "2200H";
    pub const BAD_COPY_FILE_FORMAT: &str = "22P04";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
    pub const UNTRANSLATABLE_CHARACTER: &str = "22P05";
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    pub const OBJECT_IN_USE: &str = "55006";
    pub const WRONG_OBJECT_TYPE: &str = "42809";
    pub const DEPENDENT_OBJECTS_STILL_EXIST: &str = "2BP01";
    pub const INVALID_SCHEMA_NAME: &str = "3F000";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const GENERATED_ALWAYS: &str = "428C9";
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
    pub const NO_ACTIVE_SQL_TRANSACTION: &str = "25P01";
    pub const INVALID_SAVEPOINT_SPECIFICATION: &str = "3B001";
    pub const INVALID_PASSWORD: &str = "28P01";
    pub const SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION: &str = "42000";
    pub const GROUPING_ERROR: &str = "42803";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const INVALID_COLUMN_REFERENCE: &str = "42P10";
    pub const DUPLICATE_COLUMN: &str = "42701";
    pub const AMBIGUOUS_COLUMN: &str = "42702";
    pub const DUPLICATE_TABLE: &str = "42P07";
    pub const DUPLICATE_DATABASE: &str = "42P04";
    pub const INVALID_TABLE_DEFINITION: &str = "42P16";
    pub const INVALID_OBJECT_DEFINITION: &str = "42P17";
    pub const DATATYPE_MISMATCH: &str = "42804";
    pub const UNDEFINED_DATABASE: &str = "3D000";
    pub const INVALID_ARGUMENT_FOR_WIDTH_BUCKET: &str = "2201G";
    pub const OUT_OF_MEMORY: &str = "53200";
    pub const CONFIGURATION_LIMIT_EXCEEDED: &str = "53400";
    pub const QUERY_CANCELED: &str = "57014";
    pub const IDLE_IN_TRANSACTION_SESSION_TIMEOUT: &str = "25P03";
    pub const INVALID_RECURSION: &str = "42P19";
    pub const CONNECTION_FAILURE: &str = "08006";
    pub const IO_ERROR: &str = "58030";
    pub const DUPLICATE_FILE: &str = "58P02";
    pub const UNDEFINED_FILE: &str = "58P01";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
    pub const INVALID_CURSOR_NAME: &str = "34000";
    pub const DUPLICATE_CURSOR: &str = "42P03";
    pub const DUPLICATE_OBJECT: &str = "42710";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const STATEMENT_TOO_COMPLEX: &str = "54001";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const ACTIVE_SQL_TRANSACTION: &str = "25001";
    pub const DATA_CORRUPTED: &str = "XX001";
}

/// An error as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// 1-based character position in the query string (a `u32`, which keeps every `Result`
    /// carrying the error small).
    pub position: Option<u32>,
    /// What the error points at in the query string, until [`SqlError::locate`] turns it into
    /// [`SqlError::position`].
    pub place: Place,
}

/// What an error points at, before the query string it came from is known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Place {
    /// Nothing given: an error about a value that quotes it (`invalid input syntax for type
    /// integer: "abc"`) points at the query's one string constant with that text, if it has one.
    #[default]
    Unknown,
    /// A parsed statement's span (line and column, kept small).
    Span(u32, u32),
    /// The query's string constant with this text (a `'[1,]'::json` that is no JSON), where the
    /// message does not quote it.
    Constant(Box<str>),
    /// Nowhere: raised by a function while it ran (`to_date`'s reading of its text), which
    /// Postgres gives no position even where it quotes a constant of the query.
    Running,
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for SqlError {}

impl SqlError {
    /// An error with a code and a message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
            hint: None,
            position: None,
            place: Place::Unknown,
        }
    }

    /// The error, about the query's string constant `text` ([`Place::Constant`]).
    pub fn about_constant(mut self, text: &str) -> Self {
        self.place = Place::Constant(text.into());
        self
    }

    /// The error, raised by a function while it ran ([`Place::Running`]).
    pub fn while_running(mut self) -> Self {
        self.place = Place::Running;
        self
    }

    /// Points at `at` in the query string: a span's start from the parsed statement.
    pub fn at(mut self, at: Location) -> Self {
        if let (Ok(line), Ok(column)) = (u32::try_from(at.line), u32::try_from(at.column)) {
            self.place = Place::Span(line, column);
        }
        self
    }

    /// The error with its position in `query`, the string its statement was parsed from, from
    /// what it points at ([`Place`]), unless it has one already.
    pub fn locate(mut self, query: &str) -> Self {
        use rivulet_planner::parse::{char_position, string_constant_position};
        if self.position.is_some() {
            return self;
        }
        let position = match &self.place {
            Place::Span(line, column) => {
                char_position(query, Location::new(u64::from(*line), u64::from(*column)))
            }
            Place::Constant(text) => string_constant_position(query, text),
            Place::Unknown if self.code.starts_with("22") => self
                .quoted_value()
                .and_then(|value| string_constant_position(query, value)),
            Place::Unknown | Place::Running => None,
        };
        self.position = position.and_then(|p| u32::try_from(p).ok());
        self
    }

    /// The value a data error's message ends with, in double quotes.
    fn quoted_value(&self) -> Option<&str> {
        let (_, rest) = self.message.rsplit_once(": \"")?;
        rest.strip_suffix('"')
    }

    /// Adds a detail sentence.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a hint sentence.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A feature that is not supported, named.
    pub fn unsupported(what: impl std::fmt::Display) -> Self {
        Self::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("{what} is not supported"),
        )
    }

    /// A bug in Rivulet.
    pub fn internal(what: impl std::fmt::Display) -> Self {
        Self::new(sqlstate::INTERNAL_ERROR, format!("internal error: {what}"))
    }

    /// An Arrow error raised while computing on user data.
    pub fn from_arrow(e: ArrowError) -> Self {
        from_arrow(&e)
    }

    /// The pgwire form of the error.
    pub fn into_error_info(self) -> ErrorInfo {
        let mut info = ErrorInfo::new("ERROR".into(), self.code.into(), self.message);
        info.detail = self.detail;
        info.hint = self.hint;
        info.position = self.position.map(|p| p.to_string());
        info
    }
}

impl From<SqlError> for PgWireError {
    fn from(e: SqlError) -> Self {
        PgWireError::UserError(Box::new(e.into_error_info()))
    }
}

impl From<PlanError> for SqlError {
    fn from(e: PlanError) -> Self {
        use sqlstate::*;
        match e {
            PlanError::Syntax {
                message,
                detail,
                position,
            } => SqlError {
                code: SYNTAX_ERROR,
                message,
                detail,
                hint: None,
                position: position.and_then(|p| u32::try_from(p).ok()),
                place: Place::Unknown,
            },
            PlanError::Unsupported(_) | PlanError::NotImplemented(_) => {
                SqlError::new(FEATURE_NOT_SUPPORTED, e.to_string())
            }
            PlanError::UnsupportedHint { ref hint, .. } => {
                let hint = hint.clone();
                SqlError::new(FEATURE_NOT_SUPPORTED, e.to_string()).with_hint(hint)
            }
            PlanError::InvalidRecursion(_) => SqlError::new(INVALID_RECURSION, e.to_string()),
            PlanError::UnknownType(_) => SqlError::new(UNDEFINED_OBJECT, e.to_string()),
            PlanError::DuplicateColumn(_) => SqlError::new(DUPLICATE_COLUMN, e.to_string()),
            PlanError::UnknownKeyColumn(_) | PlanError::UnknownColumn { .. } => {
                SqlError::new(UNDEFINED_COLUMN, e.to_string())
            }
            PlanError::WrongType(_) => SqlError::new(DATATYPE_MISMATCH, e.to_string()),
            PlanError::MultiplePrimaryKeys(_) => {
                SqlError::new(INVALID_TABLE_DEFINITION, e.to_string())
            }
            PlanError::InvalidParameter(_) => SqlError::new(INVALID_PARAMETER_VALUE, e.to_string()),
            PlanError::DataFusion(df) => SqlError::from(df),
            PlanError::Engine(engine) => from_engine(&engine),
        }
    }
}

impl From<EngineError> for SqlError {
    fn from(e: EngineError) -> Self {
        from_engine(&e)
    }
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        from_datafusion(&e)
    }
}

fn from_engine(e: &EngineError) -> SqlError {
    use sqlstate::*;
    match e {
        EngineError::NotNull { .. } => SqlError::new(NOT_NULL_VIOLATION, e.to_string()),
        EngineError::TooLong { .. } => SqlError::new(STRING_DATA_RIGHT_TRUNCATION, e.to_string()),
        EngineError::InvalidText {
            message,
            detail,
            kind,
        } => {
            use rivulet_engine::error::InvalidTextKind;
            let code = match kind {
                InvalidTextKind::Syntax => INVALID_TEXT_REPRESENTATION,
                InvalidTextKind::Untranslatable => UNTRANSLATABLE_CHARACTER,
                InvalidTextKind::OutOfRange => NUMERIC_VALUE_OUT_OF_RANGE,
                InvalidTextKind::TooDeep => STATEMENT_TOO_COMPLEX,
            };
            let err = SqlError::new(code, message.clone());
            match detail {
                Some(d) => err.with_detail(d.clone()),
                None => err,
            }
        }
        EngineError::DuplicateKey { key, .. } => {
            let err = SqlError::new(UNIQUE_VIOLATION, e.to_string());
            if key.is_empty() {
                err
            } else {
                err.with_detail(format!("Key {key} already exists."))
            }
        }
        EngineError::Unsupported(_) => SqlError::new(FEATURE_NOT_SUPPORTED, e.to_string()),
        EngineError::Arrow(a) => from_arrow(a),
        EngineError::Storage(_) => SqlError::new(IO_ERROR, e.to_string()),
        EngineError::Corrupt(_) => SqlError::new(DATA_CORRUPTED, e.to_string()),
        EngineError::Data { .. } => SqlError::new(DATA_EXCEPTION, e.to_string()),
        EngineError::NumericOverflow => SqlError::new(NUMERIC_VALUE_OUT_OF_RANGE, e.to_string())
            .with_hint("NUMERIC holds up to 38 digits here."),
        EngineError::External { .. } => SqlError::new(IO_ERROR, e.to_string()),
        EngineError::Trimmed { .. } => {
            SqlError::new(OBJECT_NOT_IN_PREREQUISITE_STATE, e.to_string())
        }
        EngineError::TransactionTooLarge { .. } => {
            SqlError::new(PROGRAM_LIMIT_EXCEEDED, e.to_string()).with_hint(
                "Commit in smaller transactions, or use COPY outside a transaction block.",
            )
        }
        EngineError::TransactionConflict(_) => SqlError::new(SERIALIZATION_FAILURE, e.to_string()),
        EngineError::Internal(_) => SqlError::internal(e),
    }
}

fn from_arrow(e: &ArrowError) -> SqlError {
    use sqlstate::*;
    if let ArrowError::CastError(m) | ArrowError::InvalidArgumentError(m) = e
        && let Some(overflow) = numeric_overflow(m)
    {
        return overflow;
    }
    match e {
        // A number that does not fit the target type: Postgres' "smallint out of range".
        ArrowError::CastError(m) if m.contains("Can't cast value") => {
            SqlError::new(NUMERIC_VALUE_OUT_OF_RANGE, clean(m))
        }
        // A numeric too large for the integer it is cast to ("value of 10000000000 is out of
        // range Int32").
        ArrowError::CastError(m) if m.contains("is out of range ") => {
            let target = m.rsplit(' ').next().and_then(integer_name);
            SqlError::new(
                NUMERIC_VALUE_OUT_OF_RANGE,
                match target {
                    Some(name) => format!("{name} out of range"),
                    None => clean(m),
                },
            )
        }
        ArrowError::CastError(m) => numeric_input(m)
            .or_else(|| text_input(m))
            .unwrap_or_else(|| SqlError::new(INVALID_TEXT_REPRESENTATION, clean(m))),
        ArrowError::ParseError(m) => timestamp_input(m)
            .unwrap_or_else(|| SqlError::new(INVALID_TEXT_REPRESENTATION, clean(m))),
        ArrowError::DivideByZero => SqlError::new(DIVISION_BY_ZERO, "division by zero"),
        ArrowError::ArithmeticOverflow(m) => SqlError::new(NUMERIC_VALUE_OUT_OF_RANGE, clean(m)),
        ArrowError::ComputeError(m) if m.to_lowercase().contains("overflow") => {
            SqlError::new(NUMERIC_VALUE_OUT_OF_RANGE, clean(m))
        }
        ArrowError::ExternalError(inner) => from_external(inner.as_ref()),
        other => SqlError::new(DATA_EXCEPTION, clean(&other.to_string())),
    }
}

/// Postgres' name of an Arrow integer type.
fn integer_name(arrow: &str) -> Option<&'static str> {
    Some(match arrow {
        "Int16" | "UInt8" | "Int8" => "smallint",
        "Int32" | "UInt16" => "integer",
        "Int64" | "UInt32" | "UInt64" => "bigint",
        _ => return None,
    })
}

/// Arrow's failed cast of text to an integer, a double, a boolean, a date or a timestamp
/// ("Cannot cast string 'x' to value of Int32 type") in Postgres' words and SQLSTATEs: 22P02
/// for text that is no number or boolean, 22003 for an integer too large for its type, 22008 for a
/// date or time with a field out of range (`2024-13-01`), 22007 for text that is no date at all.
fn text_input(m: &str) -> Option<SqlError> {
    use sqlstate::*;
    let rest = m.split_once("annot cast string '")?.1;
    let (text, tail) = rest.rsplit_once("' to value of ")?;
    let arrow = tail.strip_suffix(" type")?;
    let syntax = |name: &str| {
        SqlError::new(
            INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type {name}: \"{text}\""),
        )
    };
    if let Some(name) = integer_name(arrow) {
        return Some(if text.trim().parse::<i128>().is_ok() {
            SqlError::new(
                NUMERIC_VALUE_OUT_OF_RANGE,
                format!("value \"{text}\" is out of range for type {name}"),
            )
        } else {
            syntax(name)
        });
    }
    let datetime = match arrow {
        "Float64" | "Float32" => return Some(syntax("double precision")),
        "Boolean" => return Some(syntax("boolean")),
        "Date32" | "Date64" => "date",
        a if a.starts_with("Timestamp(") && a.contains(", None") => "timestamp",
        a if a.starts_with("Timestamp(") => "timestamp with time zone",
        a if a.starts_with("Time64(") || a.starts_with("Time32(") => "time",
        _ => return None,
    };
    Some(datetime_input(text, datetime))
}

/// Text that does not read as a value of the date/time type named `name` (`timestamp with time
/// zone`), in Postgres' words: digits in a date's shape with a field out of range are 22008, text
/// that is no date at all 22007.
pub fn datetime_input(text: &str, name: &str) -> SqlError {
    use sqlstate::*;
    let shaped = text
        .trim()
        .split(['-', ' ', ':', 'T', '.'])
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
        && text.contains(['-', ':']);
    if shaped {
        SqlError::new(
            DATETIME_FIELD_OVERFLOW,
            format!("date/time field value out of range: \"{text}\""),
        )
    } else {
        SqlError::new(
            INVALID_DATETIME_FORMAT,
            format!("invalid input syntax for type {name}: \"{text}\""),
        )
    }
}

/// Arrow's failed reading of text as a timestamp ("Error parsing timestamp from 'x': ..."), which
/// does not say whether it read for a `timestamp` or a `timestamptz`.
fn timestamp_input(m: &str) -> Option<SqlError> {
    let rest = m.split_once("rror parsing timestamp from '")?.1;
    let (text, _) = rest.rsplit_once("': ")?;
    Some(datetime_input(text, "timestamp"))
}

/// Arrow's failed text-to-decimal cast ("Cannot cast string 'x' to value of Decimal128(38, 10)
/// type") in Postgres' words: NaN and Infinity are 0A000 (a 128-bit decimal has neither), other
/// text 22P02.
fn numeric_input(m: &str) -> Option<SqlError> {
    use sqlstate::*;
    let rest = m.split_once("annot cast string '")?.1;
    let (text, tail) = rest.rsplit_once("' to value of Decimal")?;
    if !tail.contains("type") {
        return None;
    }
    let special = ["nan", "infinity", "-infinity", "+infinity", "inf", "-inf"];
    Some(if special.contains(&text.trim().to_lowercase().as_str()) {
        no_special_numeric(text)
    } else if text.trim().parse::<f64>().is_ok_and(f64::is_finite) {
        // A number, too large for the target: its type is in `tail`.
        match decimal_type(tail) {
            Some((p, s)) if (p, s) != (38, 10) => field_overflow(p, s),
            _ => too_large(),
        }
    } else {
        SqlError::new(
            INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type numeric: \"{text}\""),
        )
    })
}

/// Postgres' NaN and infinities, which this NUMERIC (a 128-bit decimal) cannot hold.
fn no_special_numeric(text: &str) -> SqlError {
    SqlError::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("numeric value \"{text}\" is not supported"),
    )
    .with_hint(
        "NUMERIC is a 128-bit decimal here, without NaN or Infinity; double precision has them.",
    )
}

/// A number beyond an unconstrained NUMERIC's 38 digits (Postgres: beyond its format's limits).
fn too_large() -> SqlError {
    SqlError::new(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        "value overflows numeric format",
    )
    .with_hint("NUMERIC holds up to 38 digits here.")
}

/// A number too large for `numeric(precision, scale)`, in Postgres' words.
fn field_overflow(precision: u32, scale: u32) -> SqlError {
    let integer_digits = precision.saturating_sub(scale);
    let bound = match integer_digits {
        0 => "1".to_string(),
        d => format!("10^{d}"),
    };
    SqlError::new(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        "numeric field overflow",
    )
    .with_detail(format!(
        "A field with precision {precision}, scale {scale} must round to an absolute value \
             less than {bound}."
    ))
}

/// Precision and scale of the first `Decimal128(p, s)` in `m`.
fn decimal_type(m: &str) -> Option<(u32, u32)> {
    let args = m.split_once("Decimal128(")?.1.split_once(')')?.0;
    let (p, s) = args.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// Arrow's and DataFusion's words for a value too large for its decimal type: "1000.5 is too
/// large to store in a Decimal128 of precision 4. Max is 999.9" (a cast, an INSERT), "Cannot
/// cast to Decimal128(38, 10). Overflowing on 1e38" (a float or a wider decimal); NaN and the
/// infinities of a float arrive the same way.
fn numeric_overflow(m: &str) -> Option<SqlError> {
    if let Some((_, rest)) = m.split_once("is too large to store in a Decimal128 of precision ") {
        let (precision, max) = rest.split_once(". Max is ")?;
        let precision = precision.trim().parse().ok()?;
        let max = max.split_whitespace().next()?;
        let scale = max.split_once('.').map_or(0, |(_, f)| f.len());
        return Some(field_overflow(precision, u32::try_from(scale).ok()?));
    }
    let (head, value) = m.split_once("Overflowing on ")?;
    let (p, s) = decimal_type(head)?;
    let value = value.split_whitespace().next().unwrap_or_default();
    let special = ["nan", "inf", "-inf", "infinity", "-infinity"];
    Some(if special.contains(&value.to_lowercase().as_str()) {
        no_special_numeric(value)
    } else if (p, s) == (38, 10) {
        too_large()
    } else {
        field_overflow(p, s)
    })
}

fn from_external(inner: &(dyn std::error::Error + Send + Sync + 'static)) -> SqlError {
    if let Some(engine) = inner.downcast_ref::<EngineError>() {
        from_engine(engine)
    } else if let Some(sql) = inner.downcast_ref::<SqlError>() {
        sql.clone()
    } else if let Some(df) = inner.downcast_ref::<DataFusionError>() {
        from_datafusion(df)
    } else if let Some(arrow) = inner.downcast_ref::<ArrowError>() {
        from_arrow(arrow)
    } else {
        SqlError::new(sqlstate::DATA_EXCEPTION, clean(&inner.to_string()))
    }
}

/// DataFusion wraps messages in prefixes such as "Error during planning: "; the Postgres style
/// wants the bare message, starting lowercase unless it starts with an acronym, without a period.
fn clean(msg: &str) -> String {
    let mut m = msg.trim();
    let prefixes = [
        "Error during planning: ",
        "Execution error: ",
        "Arrow error: ",
        "Cast error: ",
        "Parser error: ",
    ];
    while let Some(rest) = prefixes.iter().find_map(|p| m.strip_prefix(p)) {
        m = rest.trim();
    }
    let m = m.trim_end_matches('.');
    let mut chars = m.chars();
    match (chars.next(), chars.next()) {
        (Some(a), Some(b)) if a.is_uppercase() && !b.is_uppercase() => {
            let mut out: String = a.to_lowercase().collect();
            out.push_str(&m[a.len_utf8()..]);
            out
        }
        _ => m.to_string(),
    }
}

fn from_datafusion(e: &DataFusionError) -> SqlError {
    use sqlstate::*;
    match e {
        DataFusionError::Context(_, inner) => from_datafusion(inner),
        // DataFusion's SQL planner says where (a table's name, a column's, a function call):
        // Postgres' error position, once the query string is known.
        DataFusionError::Diagnostic(diagnostic, inner) => {
            let e = from_datafusion(inner);
            match diagnostic.span {
                Some(span) if e.place == Place::Unknown && span.start.line > 0 => {
                    e.at(Location::new(span.start.line, span.start.column))
                }
                _ => e,
            }
        }
        DataFusionError::Shared(inner) => from_datafusion(inner),
        DataFusionError::SQL(p, _) => SqlError::new(SYNTAX_ERROR, clean(&p.to_string())),
        DataFusionError::NotImplemented(m)
            if m.starts_with("Physical plan does not support logical expression")
                && [
                    "ScalarSubquery",
                    "Exists",
                    "InSubquery",
                    "SetComparison",
                    "OuterReferenceColumn",
                ]
                .iter()
                .any(|kind| m.contains(kind)) =>
        {
            // A correlated subquery DataFusion could not turn into a join.
            SqlError::new(
                FEATURE_NOT_SUPPORTED,
                "this correlated subquery is not supported",
            )
            .with_hint(
                "Use outer columns in the subquery's WHERE clause, its select list or a \
                 set-returning function in its FROM (not in a UNION, a join's ON or a window), \
                 or write it as a join.",
            )
        }
        // `WITH d AS (DELETE .. RETURNING *) SELECT ..`: DataFusion names the statement.
        DataFusionError::NotImplemented(m)
            if m.ends_with("not implemented yet")
                && m.get(.."query ".len())
                    .is_some_and(|q| q.eq_ignore_ascii_case("query "))
                && m.get("query ".len()..).is_some_and(|statement| {
                    ["INSERT", "UPDATE", "DELETE"]
                        .iter()
                        .any(|dml| statement.starts_with(dml))
                }) =>
        {
            SqlError::new(
                FEATURE_NOT_SUPPORTED,
                "a data-modifying statement in WITH is not supported",
            )
            .with_hint(
                "Run the INSERT, UPDATE or DELETE as a statement of its own, with RETURNING.",
            )
        }
        DataFusionError::NotImplemented(m) => {
            // DataFusion's own messages often say so already (`FETCH clause is not supported
            // yet`, `unsupported ...`).
            let m = clean(m);
            let m = if m.contains("not supported")
                || m.contains("not implemented")
                || m.starts_with("unsupported ")
            {
                m
            } else {
                format!("{m} is not supported")
            };
            SqlError::new(FEATURE_NOT_SUPPORTED, m)
        }
        DataFusionError::SchemaError(s, _) => from_schema_error(s),
        DataFusionError::ArrowError(a, _) => from_arrow(a),
        DataFusionError::External(inner) => from_external(inner.as_ref()),
        DataFusionError::Plan(m) => from_plan_message(m),
        DataFusionError::Execution(m) => from_execution_message(m),
        DataFusionError::ResourcesExhausted(m) => SqlError::new(OUT_OF_MEMORY, "out of memory")
            .with_detail(format!("{}.", clean(m)))
            .with_hint("Make the query hold less at once, or raise the server's --query-memory."),
        DataFusionError::Configuration(m) => SqlError::new(INVALID_PARAMETER_VALUE, clean(m)),
        DataFusionError::Collection(errs) if !errs.is_empty() => from_datafusion(&errs[0]),
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => {
            SqlError::new(IO_ERROR, clean(&e.to_string()))
        }
        // DataFusion's own invariants, broken by a query shape its planner or executor does not
        // handle: from the user's side, a query Rivulet cannot run, not a bug in Rivulet.
        DataFusionError::Internal(m) => {
            tracing::warn!(error = %m, "datafusion internal error");
            SqlError::new(FEATURE_NOT_SUPPORTED, "this form of query is not supported")
                .with_detail(format!("The query engine failed: {}.", clean(m)))
        }
        // A task that panicked or was lost: a bug, ours or in a function we registered.
        other => SqlError::internal(other),
    }
}

fn from_schema_error(s: &SchemaError) -> SqlError {
    use sqlstate::*;
    match s {
        SchemaError::FieldNotFound {
            field,
            valid_fields,
        } => {
            // Postgres quotes a bare name, not a qualified one: `column t.zz does not exist`.
            let message = match &field.relation {
                Some(relation) => format!("column {relation}.{} does not exist", field.name),
                None => format!("column \"{}\" does not exist", field.name),
            };
            let err = SqlError::new(UNDEFINED_COLUMN, message);
            if valid_fields.is_empty() {
                err
            } else {
                let names: Vec<String> = valid_fields.iter().map(|c| c.name.clone()).collect();
                err.with_hint(format!("Available columns: {}.", names.join(", ")))
            }
        }
        SchemaError::AmbiguousReference { field } => SqlError::new(
            AMBIGUOUS_COLUMN,
            format!("column reference \"{}\" is ambiguous", field.name),
        ),
        other => SqlError::new(DUPLICATE_COLUMN, clean(&other.to_string())),
    }
}

fn from_plan_message(m: &str) -> SqlError {
    use sqlstate::*;
    let m = clean(m);
    if let Some(rest) = m.strip_prefix("table '")
        && let Some((name, _)) = rest.split_once("' not found")
    {
        let short = name.rsplit('.').next().unwrap_or(name);
        return SqlError::new(
            UNDEFINED_TABLE,
            format!("relation \"{short}\" does not exist"),
        );
    }
    // `clean` lowercased the first letter: match case-insensitively.
    let lower = m.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    // One `pg::subquery` does not make an aggregate of (a LIMIT other than 1, an OFFSET).
    if has(&["correlated scalar subquery must be aggregated"]) {
        return SqlError::new(
            FEATURE_NOT_SUPPORTED,
            "this correlated scalar subquery is not supported",
        )
        .with_hint(
            "Select one item of at most one row (a lookup by key, or ORDER BY .. LIMIT 1), \
             aggregate it, or join instead.",
        );
    }
    // DataFusion: "Invalid function 'f'.\nDid you mean 'g'?", before the arguments are typed.
    if let Some(rest) = m.strip_prefix("invalid function '")
        && let Some((name, rest)) = rest.split_once('\'')
    {
        let err = SqlError::new(
            UNDEFINED_FUNCTION,
            format!("function {name} does not exist"),
        );
        return match rest
            .split_once("Did you mean '")
            .and_then(|(_, r)| r.split_once('\''))
        {
            // DataFusion names its nearest function however far; a hint only for a typo.
            Some((suggested, _))
                if datafusion::common::utils::datafusion_strsim::levenshtein(name, suggested)
                    <= 2 =>
            {
                err.with_hint(format!("Perhaps you meant {suggested}()."))
            }
            _ => err.with_hint(
                "No function matches the given name and argument types. You might need to add \
                 explicit type casts.",
            ),
        };
    }
    if has(&["function"]) && has(&["not found"]) {
        return SqlError::new(UNDEFINED_FUNCTION, m);
    }
    // DataFusion's "No function matches the given name and argument types 'f(Utf8, Int64)'",
    // after pages of candidates: Postgres' "function f(text, bigint) does not exist".
    if let Some(call) = m
        .split_once("argument types '")
        .and_then(|(_, rest)| rest.split_once("'."))
        .map(|(call, _)| call)
        && let Some((name, args)) = call.split_once('(')
    {
        let args: Vec<&str> = top_level_parts(args.strip_suffix(')').unwrap_or(args))
            .into_iter()
            .filter(|a| !a.is_empty())
            .map(postgres_type_name)
            .collect();
        return SqlError::new(
            UNDEFINED_FUNCTION,
            format!("function {name}({}) does not exist", args.join(", ")),
        )
        .with_hint(
            "No function matches the given name and argument types. You might need to add \
             explicit type casts.",
        );
    }
    // DataFusion: "column in SELECT must be in GROUP BY or an aggregate function: While
    // expanding wildcard, column "t.i" must appear in the GROUP BY clause or must be part of an
    // aggregate function, ..." (also without a wildcard): Postgres' 42803 and its words.
    if has(&["must appear in the group by clause"]) {
        let column = m
            .split_once("column \"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(c, _)| c);
        let message = match column {
            Some(c) => format!(
                "column \"{c}\" must appear in the GROUP BY clause or be used in an aggregate \
                 function"
            ),
            None => m,
        };
        return SqlError::new(GROUPING_ERROR, message);
    }
    // Postgres: "operator does not exist: integer + text".
    if has(&["cannot coerce arithmetic expression"]) {
        return SqlError::new(UNDEFINED_FUNCTION, m)
            .with_hint("No operator matches the given argument types; add an explicit cast.");
    }
    if has(&[
        "cannot infer common",
        "no function matches",
        "does not support",
        "cannot coerce",
        "failed to coerce",
        "type_coercion",
        "non-boolean predicate",
    ]) {
        return SqlError::new(DATATYPE_MISMATCH, m);
    }
    if has(&[
        "inserting query must have the same schema",
        "column count mismatch",
        // An INSERT ... SELECT of another width than its target columns.
        "column count doesn't match insert query",
    ]) {
        return SqlError::new(SYNTAX_ERROR, m);
    }
    SqlError::new(SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION, m)
}

/// `text` split at the commas outside parentheses (`Decimal128(3, 1), Int64`), trimmed.
fn top_level_parts(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts
}

/// Postgres' name of an Arrow type as DataFusion prints it in messages (the type itself when
/// Postgres has no name for it).
fn postgres_type_name(arrow: &str) -> &str {
    match arrow {
        "Utf8" | "LargeUtf8" | "Utf8View" => "text",
        "Int16" => "smallint",
        "Int32" => "integer",
        "Int64" => "bigint",
        "Float32" => "real",
        "Float64" => "double precision",
        "Boolean" => "boolean",
        "Date32" => "date",
        "Binary" | "LargeBinary" | "BinaryView" => "bytea",
        a if a.starts_with("Decimal128") => "numeric",
        a if a.starts_with("Interval") => "interval",
        a if a.starts_with("Timestamp(") && a.ends_with("None)") => "timestamp without time zone",
        a if a.starts_with("Timestamp(") => "timestamp with time zone",
        a if a.starts_with("Time64") => "time without time zone",
        other => other,
    }
}

fn from_execution_message(m: &str) -> SqlError {
    use sqlstate::*;
    let m = clean(m);
    let lower = m.to_lowercase();
    let has = |needle: &str| lower.contains(needle);
    if has("divide by zero") || has("division by zero") {
        return SqlError::new(DIVISION_BY_ZERO, "division by zero");
    }
    if let Some(e) = numeric_overflow(&m) {
        return e;
    }
    // An uncorrelated scalar subquery of several rows.
    if has("scalar subquery returned more than one row") {
        return crate::pg::subquery::more_than_one_row();
    }
    if has("can't cast value") {
        return SqlError::new(NUMERIC_VALUE_OUT_OF_RANGE, m);
    }
    if has("invalid input syntax") {
        return SqlError::new(INVALID_TEXT_REPRESENTATION, m);
    }
    // make_time(25, 0, 0), make_timestamp(2024, 2, 30, ...).
    if has("field value out of range") {
        return SqlError::new(DATETIME_FIELD_OVERFLOW, m);
    }
    // `time zone "x" not recognized`, `unit "x" not recognized by EXTRACT`: Postgres' 22023.
    if has("not recognized") {
        return SqlError::new(INVALID_PARAMETER_VALUE, m);
    }
    if has("not supported for input") {
        return SqlError::new(FEATURE_NOT_SUPPORTED, m);
    }
    if has("cannot cast") || has("cast error") || has("parse") {
        return SqlError::new(INVALID_TEXT_REPRESENTATION, m);
    }
    if has("overflow") {
        return SqlError::new(NUMERIC_VALUE_OUT_OF_RANGE, m);
    }
    if m.contains("non-nullable") || m.contains("non-null") {
        return SqlError::new(NOT_NULL_VIOLATION, m);
    }
    SqlError::new(DATA_EXCEPTION, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_point_where_the_query_says_it() {
        // A span DataFusion's planner attached, on the second line.
        let inner = DataFusionError::SchemaError(
            Box::new(SchemaError::FieldNotFound {
                field: Box::new(datafusion::common::Column::new(Some("t"), "zz")),
                valid_fields: vec![],
            }),
            Box::new(None),
        );
        let span = datafusion::common::Span::new(
            datafusion::common::Location { line: 2, column: 3 },
            datafusion::common::Location { line: 2, column: 7 },
        );
        let e = SqlError::from(
            inner.with_diagnostic(datafusion::common::Diagnostic::new_error(
                "column 'zz' not found",
                Some(span),
            )),
        );
        assert_eq!(e.message, "column t.zz does not exist");
        let query = "SELECT 1,\n  t.zz FROM t";
        assert_eq!(e.locate(query).position, Some(13));
        // A value error points at the one constant with that text, and nowhere when there are
        // two (or none).
        let bad = || {
            SqlError::new(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                "invalid input syntax for type integer: \"abc\"",
            )
        };
        assert_eq!(bad().locate("SELECT 'abc'::int").position, Some(8));
        assert_eq!(
            bad().locate("SELECT -- 'abc'\n E'abc'::int").position,
            Some(18)
        );
        assert_eq!(bad().locate("SELECT 'abc'::int, 'abc'::int").position, None);
        assert_eq!(bad().locate("SELECT $1::int").position, None);
        // An unknown function: Postgres' words, a hint naming a near name only.
        let unknown = |m: &str| SqlError::from(DataFusionError::Plan(m.into()));
        let e = unknown("Invalid function 'conut'.\nDid you mean 'count'?");
        assert_eq!(
            (e.code, e.message.as_str(), e.hint.as_deref()),
            (
                sqlstate::UNDEFINED_FUNCTION,
                "function conut does not exist",
                Some("Perhaps you meant count().")
            )
        );
        let e = unknown("Invalid function 'no_such_function'.\nDid you mean 'list_union'?");
        assert!(e.hint.is_some_and(|h| !h.contains("list_union")));
    }

    #[test]
    fn common_datafusion_errors_get_postgres_codes() {
        let e = SqlError::from(DataFusionError::Plan(
            "table 'dev.public.nope' not found".into(),
        ));
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                sqlstate::UNDEFINED_TABLE,
                "relation \"nope\" does not exist"
            )
        );
        let e = SqlError::from(DataFusionError::ArrowError(
            Box::new(ArrowError::DivideByZero),
            None,
        ));
        assert_eq!(e.code, sqlstate::DIVISION_BY_ZERO);
        // DataFusion's internal errors are shapes it cannot run, not Rivulet's bugs.
        let e = SqlError::from(DataFusionError::Internal("x".into()));
        assert_eq!(e.code, sqlstate::FEATURE_NOT_SUPPORTED);
        let e = SqlError::from(DataFusionError::ArrowError(
            Box::new(ArrowError::InvalidArgumentError(
                "1000.5 is too large to store in a Decimal128 of precision 4. Max is 999.9".into(),
            )),
            None,
        ));
        assert_eq!(
            (e.code, e.message.as_str(), e.detail.as_deref()),
            (
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                "numeric field overflow",
                Some(
                    "A field with precision 4, scale 1 must round to an absolute value less \
                     than 10^3."
                )
            )
        );
        let e = SqlError::from(DataFusionError::Execution(
            "Cannot cast to Decimal128(38, 10). Overflowing on NaN".into(),
        ));
        assert_eq!(e.code, sqlstate::FEATURE_NOT_SUPPORTED);
        let e = SqlError::from(DataFusionError::ArrowError(
            Box::new(ArrowError::CastError(
                "Cannot cast string '1e40' to value of Decimal128(38, 10) type".into(),
            )),
            None,
        ));
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                "value overflows numeric format"
            )
        );
        let e = SqlError::from(DataFusionError::ResourcesExhausted("no room".into()));
        assert_eq!(
            (e.code, e.message.as_str()),
            (sqlstate::OUT_OF_MEMORY, "out of memory")
        );
        let e = SqlError::from(DataFusionError::External(Box::new(
            EngineError::DuplicateKey {
                table: "users".into(),
                key: "(id)=(1)".into(),
            },
        )));
        assert_eq!(e.code, sqlstate::UNIQUE_VIOLATION);
        assert_eq!(e.detail.as_deref(), Some("Key (id)=(1) already exists."));
    }

    #[test]
    fn datafusion_not_implemented_says_not_supported_once() {
        for (message, shown) in [
            ("Unsupported SQL type Foo", "unsupported SQL type Foo"),
            (
                "Window frame is not supported",
                "window frame is not supported",
            ),
            ("GROUPS mode", "GROUPS mode is not supported"),
        ] {
            let e = SqlError::from(DataFusionError::NotImplemented(message.into()));
            assert_eq!(
                (e.code, e.message.as_str()),
                (sqlstate::FEATURE_NOT_SUPPORTED, shown)
            );
        }
    }
}
