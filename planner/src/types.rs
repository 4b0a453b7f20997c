//! SQL column types: what `CREATE TABLE` accepts, the Arrow type a column is stored and computed in,
//! and the Postgres name shown to clients.
//!
//! `TIMESTAMP` and `TIME` are kept in microseconds like Postgres (DataFusion's default nanoseconds
//! cannot hold dates past 2262). `TIMESTAMPTZ` is UTC instants. `NUMERIC` without a precision is
//! `NUMERIC(38, 10)`, the widest decimal Arrow's 128-bit decimals hold. `JSONB` is stored as text.
//!
//! An array (`INT[]`, `INT[3]`, `ARRAY<INT>`) is an Arrow `List` of its element type. Postgres
//! has one array type per element type, of any number of dimensions, each rectangular; Arrow nests
//! lists, so `INT[][]` is a list of lists (as DataFusion plans it), whose inner lists may differ in
//! length.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use datafusion::sql::sqlparser::ast::{self, CharacterLength, ExactNumberInfo, TimezoneInfo};
use serde::{Deserialize, Serialize};

use crate::{PlanError, Result};

/// Largest decimal precision (Arrow's `Decimal128`).
pub const MAX_NUMERIC_PRECISION: u8 = 38;
/// Scale of a `NUMERIC` declared without one.
pub const DEFAULT_NUMERIC_SCALE: i8 = 10;

/// How the names of display-scale columns begin: hidden columns next to unconstrained `numeric`
/// values that hold how many decimals each value shows, as a Postgres numeric's own display scale
/// (`1.50` keeps two). Stored with a table's rows ([`scale_field`]) and carried through queries
/// to the wire (`server/src/pg/dscale.rs`). No client sees them.
pub const SCALE_PREFIX: &str = "\u{1}scale";

/// The type of a display-scale column.
pub const SCALE_TYPE: DataType = DataType::Int32;

/// The name of the display-scale column of column (or result column) `of`.
pub fn scale_name(of: usize) -> String {
    format!("{SCALE_PREFIX}:{of}")
}

/// The column whose display scales a column named `name` holds, if it is one.
pub fn scale_target(name: &str) -> Option<usize> {
    name.strip_prefix(SCALE_PREFIX)?
        .strip_prefix(':')?
        .parse()
        .ok()
}

/// The stored display-scale column of a table's column `of`.
pub fn scale_field(of: usize) -> Field {
    Field::new(scale_name(of), SCALE_TYPE, true)
}

/// The field metadata key naming a column's Postgres type where its Arrow type does not tell it
/// (a `jsonb` column is Arrow text); the server sends that type to clients.
pub const PG_TYPE: &str = "rivulet.pg_type";

/// The field metadata key of a `character(n)` or `character varying(n)` column's `n`: clients are
/// told it (type modifier `n + 4`), and `character(n)`'s values are shown padded to it.
pub const CHAR_LENGTH: &str = "rivulet.char_length";

/// The field metadata key marking a column declared `numeric(p,s)`: clients are told its
/// precision and scale (the type modifier), as Postgres tells them for a column of a declared
/// type and not for a computed value.
pub const NUMERIC_TYPMOD: &str = "rivulet.numeric_typmod";

/// A column type as declared in SQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    Boolean,
    SmallInt,
    Int,
    BigInt,
    Real,
    Double,
    Numeric {
        precision: u8,
        scale: i8,
    },
    Varchar {
        max_len: Option<u32>,
    },
    /// `CHAR(n)`, `CHARACTER(n)`, `bpchar` (`len` None: any length). `CHAR(n)` is stored
    /// without its trailing blanks, which Postgres ignores in comparisons and drops when casting
    /// to text; a column's values are padded back to `n` on output ([`CHAR_LENGTH`]). `bpchar`
    /// keeps them, as Postgres does (comparisons and `||` drop them).
    Char {
        len: Option<u32>,
    },
    Text,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Bytea,
    /// `JSON`: its text as written.
    Json,
    /// `JSONB`: stored as its text too (not normalized as Postgres' binary form).
    Jsonb,
    /// `UUID`: stored as its text in Postgres' form (lowercase, hyphenated: [`crate::uuid`]),
    /// whose order is the bytes' order.
    Uuid,
    /// An array of the element type.
    Array(Box<SqlType>),
}

impl SqlType {
    /// A `numeric` declared without precision and scale, whose values show their own scales.
    pub fn is_unconstrained_numeric(&self) -> bool {
        *self
            == SqlType::Numeric {
                precision: MAX_NUMERIC_PRECISION,
                scale: DEFAULT_NUMERIC_SCALE,
            }
    }

    /// Resolves a parsed SQL type.
    pub fn from_ast(dt: &ast::DataType) -> Result<Self> {
        use ast::DataType as D;
        Ok(match dt {
            D::Bool | D::Boolean => SqlType::Boolean,
            D::SmallInt(_) | D::Int2(_) => SqlType::SmallInt,
            D::Int(_) | D::Integer(_) | D::Int4(_) => SqlType::Int,
            D::BigInt(_) | D::Int8(_) => SqlType::BigInt,
            D::Real | D::Float4 => SqlType::Real,
            D::DoublePrecision | D::Float8 | D::Double(ExactNumberInfo::None) => SqlType::Double,
            D::Float(info) => match info {
                ExactNumberInfo::Precision(p) if *p <= 24 => SqlType::Real,
                _ => SqlType::Double,
            },
            D::Numeric(info) | D::Decimal(info) => numeric(info)?,
            D::Varchar(len) | D::CharacterVarying(len) | D::CharVarying(len) => SqlType::Varchar {
                max_len: char_len(len.as_ref(), "varchar")?,
            },
            // Postgres: CHAR without a length is CHAR(1).
            D::Char(len) | D::Character(len) => SqlType::Char {
                len: Some(char_len(len.as_ref(), "char")?.unwrap_or(1)),
            },
            D::Text | D::String(None) => SqlType::Text,
            D::Date => SqlType::Date,
            D::Time(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => SqlType::Time,
            D::Timestamp(_, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
                SqlType::Timestamp
            }
            D::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => SqlType::TimestampTz,
            D::Interval { .. } => SqlType::Interval,
            D::Bytea => SqlType::Bytea,
            D::JSON => SqlType::Json,
            D::JSONB => SqlType::Jsonb,
            D::Uuid => SqlType::Uuid,
            D::Array(
                ast::ArrayElemTypeDef::SquareBracket(elem, _)
                | ast::ArrayElemTypeDef::AngleBracket(elem)
                | ast::ArrayElemTypeDef::Parenthesis(elem),
            ) => SqlType::Array(Box::new(SqlType::from_ast(elem)?)),
            // Flink's TIMESTAMP_LTZ(p): a point in time.
            D::Custom(name, _) if name.to_string().eq_ignore_ascii_case("timestamp_ltz") => {
                SqlType::TimestampTz
            }
            D::Custom(name, args) if args.is_empty() => {
                match name
                    .to_string()
                    .to_ascii_lowercase()
                    .trim_start_matches("pg_catalog.")
                {
                    "timestamptz" => SqlType::TimestampTz,
                    "int2" => SqlType::SmallInt,
                    "int4" => SqlType::Int,
                    "float4" => SqlType::Real,
                    "float8" => SqlType::Double,
                    "bool" => SqlType::Boolean,
                    "jsonb" => SqlType::Jsonb,
                    "json" => SqlType::Json,
                    "uuid" => SqlType::Uuid,
                    "varchar" => SqlType::Varchar { max_len: None },
                    "bpchar" => SqlType::Char { len: None },
                    "string" => SqlType::Text,
                    _ => return Err(PlanError::UnknownType(name.to_string())),
                }
            }
            other => return Err(PlanError::UnknownType(other.to_string())),
        })
    }

    /// A column of this type named `name`, as an Arrow field: its type, and its Postgres type in
    /// the metadata ([`PG_TYPE`]) where the Arrow type does not tell it.
    pub fn field(&self, name: &str, nullable: bool) -> Field {
        let field = Field::new(name, self.arrow_type(), nullable);
        match self {
            SqlType::Jsonb => field.with_metadata([(PG_TYPE.into(), "jsonb".into())].into()),
            SqlType::Json => field.with_metadata([(PG_TYPE.into(), "json".into())].into()),
            SqlType::Uuid => field.with_metadata([(PG_TYPE.into(), "uuid".into())].into()),
            SqlType::Varchar { max_len: len } | SqlType::Char { len } => {
                let name = match self {
                    SqlType::Char { .. } => "character",
                    _ => "character varying",
                };
                let mut metadata = std::collections::HashMap::new();
                metadata.insert(PG_TYPE.into(), name.into());
                if let Some(n) = len {
                    metadata.insert(CHAR_LENGTH.into(), n.to_string());
                }
                field.with_metadata(metadata)
            }
            // An unconstrained `numeric` (stored as numeric(38,10)) has no type modifier.
            SqlType::Numeric { precision, scale }
                if (*precision, *scale) != (MAX_NUMERIC_PRECISION, DEFAULT_NUMERIC_SCALE) =>
            {
                field.with_metadata([(NUMERIC_TYPMOD.into(), "declared".into())].into())
            }
            _ => field,
        }
    }

    /// The column type of a view's output column `field`: [`SqlType::from_arrow`] of its type, or
    /// the Postgres type its metadata names.
    pub fn of_field(field: &Field) -> Option<Self> {
        match field.metadata().get(PG_TYPE).map(String::as_str) {
            Some("jsonb") if field.data_type().is_string() => Some(SqlType::Jsonb),
            Some("json") if field.data_type().is_string() => Some(SqlType::Json),
            Some("uuid") if field.data_type().is_string() => Some(SqlType::Uuid),
            Some("character") if field.data_type().is_string() => Some(SqlType::Char {
                len: field
                    .metadata()
                    .get(CHAR_LENGTH)
                    .and_then(|n| n.parse().ok()),
            }),
            _ => SqlType::from_arrow(field.data_type()),
        }
    }

    /// The column type that stores values of Arrow type `t` (a view's output column), widening
    /// where SQL has no exact match; `None` for types a column cannot hold.
    pub fn from_arrow(t: &DataType) -> Option<Self> {
        Some(match t {
            DataType::Boolean => SqlType::Boolean,
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => SqlType::SmallInt,
            DataType::Int32 | DataType::UInt16 => SqlType::Int,
            DataType::Int64 | DataType::UInt32 => SqlType::BigInt,
            DataType::UInt64 => SqlType::Numeric {
                precision: 20,
                scale: 0,
            },
            DataType::Float16 | DataType::Float32 => SqlType::Real,
            DataType::Float64 => SqlType::Double,
            DataType::Decimal128(p, s) => SqlType::Numeric {
                precision: *p,
                scale: *s,
            },
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => SqlType::Text,
            DataType::Date32 | DataType::Date64 => SqlType::Date,
            DataType::Time32(_) | DataType::Time64(_) => SqlType::Time,
            DataType::Timestamp(_, None) => SqlType::Timestamp,
            DataType::Timestamp(_, Some(_)) => SqlType::TimestampTz,
            DataType::Interval(_) | DataType::Duration(_) => SqlType::Interval,
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => SqlType::Bytea,
            DataType::List(item) | DataType::LargeList(item) => {
                SqlType::Array(Box::new(SqlType::from_arrow(item.data_type())?))
            }
            _ => return None,
        })
    }

    /// The Arrow type values of this column are stored and computed in.
    pub fn arrow_type(&self) -> DataType {
        match self {
            SqlType::Boolean => DataType::Boolean,
            SqlType::SmallInt => DataType::Int16,
            SqlType::Int => DataType::Int32,
            SqlType::BigInt => DataType::Int64,
            SqlType::Real => DataType::Float32,
            SqlType::Double => DataType::Float64,
            SqlType::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            SqlType::Varchar { .. }
            | SqlType::Char { .. }
            | SqlType::Text
            | SqlType::Json
            | SqlType::Jsonb
            | SqlType::Uuid => DataType::Utf8,
            SqlType::Date => DataType::Date32,
            SqlType::Time => DataType::Time64(TimeUnit::Microsecond),
            SqlType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            SqlType::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
            }
            SqlType::Interval => DataType::Interval(IntervalUnit::MonthDayNano),
            SqlType::Bytea => DataType::Binary,
            SqlType::Array(elem) => {
                DataType::List(Arc::new(Field::new_list_field(elem.arrow_type(), true)))
            }
        }
    }

    /// The element type of an array, through every dimension; `self` for other types.
    pub fn element(&self) -> &SqlType {
        match self {
            SqlType::Array(elem) => elem.element(),
            other => other,
        }
    }

    /// The type's name as Postgres' `format_type` shows it.
    pub fn pg_name(&self) -> String {
        match self {
            SqlType::Boolean => "boolean".into(),
            SqlType::SmallInt => "smallint".into(),
            SqlType::Int => "integer".into(),
            SqlType::BigInt => "bigint".into(),
            SqlType::Real => "real".into(),
            SqlType::Double => "double precision".into(),
            SqlType::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            SqlType::Varchar { max_len: Some(n) } => format!("character varying({n})"),
            SqlType::Varchar { max_len: None } => "character varying".into(),
            SqlType::Char { len: Some(n) } => format!("character({n})"),
            SqlType::Char { len: None } => "bpchar".into(),
            SqlType::Text => "text".into(),
            SqlType::Date => "date".into(),
            SqlType::Time => "time without time zone".into(),
            SqlType::Timestamp => "timestamp without time zone".into(),
            SqlType::TimestampTz => "timestamp with time zone".into(),
            SqlType::Interval => "interval".into(),
            SqlType::Bytea => "bytea".into(),
            SqlType::Jsonb => "jsonb".into(),
            SqlType::Json => "json".into(),
            SqlType::Uuid => "uuid".into(),
            // Postgres names an array of any dimension by its element: `integer[]`.
            SqlType::Array(_) => format!("{}[]", self.element().pg_name()),
        }
    }
}

fn numeric(info: &ExactNumberInfo) -> Result<SqlType> {
    let (precision, scale) = match *info {
        ExactNumberInfo::None => (MAX_NUMERIC_PRECISION as u64, DEFAULT_NUMERIC_SCALE as i64),
        ExactNumberInfo::Precision(p) => (p, 0),
        ExactNumberInfo::PrecisionAndScale(p, s) => (p, s),
    };
    if precision == 0 || precision > MAX_NUMERIC_PRECISION as u64 {
        return Err(PlanError::InvalidParameter(format!(
            "NUMERIC precision {precision} must be between 1 and {MAX_NUMERIC_PRECISION}"
        )));
    }
    if scale < 0 || scale as u64 > precision {
        return Err(PlanError::InvalidParameter(format!(
            "NUMERIC scale {scale} must be between 0 and precision {precision}"
        )));
    }
    Ok(SqlType::Numeric {
        precision: precision as u8,
        scale: scale as i8,
    })
}

/// A declared length of `varchar` or `char` (`kind`, as Postgres names it in its error).
fn char_len(len: Option<&CharacterLength>, kind: &str) -> Result<Option<u32>> {
    match len {
        None | Some(CharacterLength::Max) => Ok(None),
        Some(CharacterLength::IntegerLength { length, .. }) => match u32::try_from(*length) {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(PlanError::InvalidParameter(format!(
                "length for type {kind} must be at least 1"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn ty(sql: &str) -> Result<SqlType> {
        let dialect = PostgreSqlDialect {};
        let dt = Parser::new(&dialect)
            .try_with_sql(sql)
            .unwrap()
            .parse_data_type()
            .unwrap();
        SqlType::from_ast(&dt)
    }

    #[test]
    fn postgres_spellings_resolve() {
        assert_eq!(ty("INT").unwrap(), SqlType::Int);
        assert_eq!(ty("int8").unwrap(), SqlType::BigInt);
        assert_eq!(ty("DOUBLE PRECISION").unwrap(), SqlType::Double);
        assert_eq!(
            ty("NUMERIC(10,2)").unwrap(),
            SqlType::Numeric {
                precision: 10,
                scale: 2
            }
        );
        assert_eq!(
            ty("VARCHAR(20)").unwrap(),
            SqlType::Varchar { max_len: Some(20) }
        );
        assert_eq!(
            ty("TIMESTAMP WITH TIME ZONE").unwrap(),
            SqlType::TimestampTz
        );
        assert_eq!(ty("timestamptz").unwrap(), SqlType::TimestampTz);
        assert_eq!(ty("CHAR(25)").unwrap(), SqlType::Char { len: Some(25) });
        assert_eq!(ty("CHARACTER").unwrap(), SqlType::Char { len: Some(1) });
        assert_eq!(ty("bpchar").unwrap(), SqlType::Char { len: None });
        assert_eq!(ty("CHAR(3)").unwrap().pg_name(), "character(3)");
        assert_eq!(ty("TIMESTAMP(3)").unwrap(), SqlType::Timestamp);
        assert!(matches!(
            ty("NUMERIC(50,2)"),
            Err(PlanError::InvalidParameter(_))
        ));
        assert!(matches!(ty("geometry"), Err(PlanError::UnknownType(_))));
        let ints = SqlType::Array(Box::new(SqlType::Int));
        assert_eq!(ty("INT[]").unwrap(), ints);
        assert_eq!(ty("ARRAY<INT>").unwrap(), ints);
        assert_eq!(ty("INT[3]").unwrap(), ints);
        assert_eq!(
            ty("TEXT[][]").unwrap(),
            SqlType::Array(Box::new(SqlType::Array(Box::new(SqlType::Text))))
        );
        assert_eq!(ty("TEXT[][]").unwrap().pg_name(), "text[]");
    }

    #[test]
    fn arrays_are_lists_of_their_element_type() {
        let t = SqlType::Array(Box::new(SqlType::Numeric {
            precision: 10,
            scale: 2,
        }));
        assert_eq!(SqlType::from_arrow(&t.arrow_type()), Some(t.clone()));
        assert_eq!(t.pg_name(), "numeric(10,2)[]");
        let utf8_view = DataType::new_list(DataType::Utf8View, true);
        assert_eq!(
            SqlType::from_arrow(&utf8_view),
            Some(SqlType::Array(Box::new(SqlType::Text)))
        );
    }
}
