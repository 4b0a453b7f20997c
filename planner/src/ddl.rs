//! DDL: `CREATE TABLE` to a [`TableDef`].
//!
//! Accepts column types from [`SqlType`], `NOT NULL`/`NULL`, `PRIMARY KEY` on a column or as a table
//! constraint (key columns become NOT NULL, as in Postgres) and `WITH (...)` options in both the
//! RisingWave (`connector = 'kafka'`) and Flink (`'connector' = 'kafka'`) spellings. Anything else a
//! user could expect to have an effect (defaults, checks, foreign keys, `AS SELECT`) is refused by
//! name rather than ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{
    self, ColumnOption, CreateTable, CreateTableOptions, Expr, GeneratedAs, SqlOption,
    TableConstraint, Value,
};

use crate::catalog::{ColumnDef, ComputedDef, Identity, TableDef, WatermarkDef};
use crate::parse::WatermarkClause;
use crate::sequence;
use crate::types::SqlType;
use crate::{PlanError, Result};

/// The parts of a `CREATE TABLE` the catalog needs; `id` and `database` are filled in by the caller.
/// `computed` types the table's computed columns over its other columns (see
/// [`crate::computed::typed`]); they follow the other columns, in declared order.
pub fn table_def(
    create: &CreateTable,
    name: &str,
    append_only: bool,
    watermark: Option<&WatermarkClause>,
    computed: impl FnOnce(&[ColumnDef]) -> Result<Vec<(ColumnDef, String)>>,
) -> Result<TableDef> {
    refuse_unsupported(create)?;
    let mut columns: Vec<ColumnDef> = Vec::with_capacity(create.columns.len());
    let mut primary_key: Vec<usize> = Vec::new();
    for col in &create.columns {
        let col_name = normalize_ident(&col.name);
        if columns.iter().any(|c| c.name == col_name) {
            return Err(PlanError::DuplicateColumn(col_name));
        }
        let serial = serial_type(&col.data_type);
        let sql_type = match &serial {
            Some(t) => t.clone(),
            None => SqlType::from_ast(&col.data_type)?,
        };
        let mut column = ColumnDef::new(col_name, sql_type, serial.is_none());
        if serial.is_some() {
            let sequence = sequence::owned_name(name, &column.name);
            column.default = Some(format!("nextval('{sequence}')"));
            column.sequence = Some(sequence::sequence_def(
                &sequence,
                column.sql_type.clone(),
                &[],
            )?);
        }
        for opt in &col.options {
            match &opt.option {
                ColumnOption::NotNull => column.nullable = false,
                ColumnOption::Null => column.nullable = true,
                ColumnOption::PrimaryKey(_) => {
                    if !primary_key.is_empty() {
                        return Err(PlanError::MultiplePrimaryKeys(name.to_string()));
                    }
                    primary_key.push(columns.len());
                }
                ColumnOption::Default(e) => {
                    if column.default.is_some() {
                        return Err(twice("multiple default values", &column.name, name));
                    }
                    if column.identity.is_some() {
                        return Err(twice("both default and identity", &column.name, name));
                    }
                    column.default = Some(e.to_string());
                }
                ColumnOption::Generated {
                    generated_as: how @ (GeneratedAs::Always | GeneratedAs::ByDefault),
                    sequence_options,
                    generation_expr: None,
                    ..
                } => {
                    if column.identity.is_some() {
                        return Err(twice(
                            "multiple identity specifications",
                            &column.name,
                            name,
                        ));
                    }
                    if column.default.is_some() {
                        return Err(twice("both default and identity", &column.name, name));
                    }
                    if !matches!(
                        column.sql_type,
                        SqlType::SmallInt | SqlType::Int | SqlType::BigInt
                    ) {
                        return Err(PlanError::InvalidParameter(
                            "identity column type must be smallint, integer, or bigint".into(),
                        ));
                    }
                    let sequence = sequence::owned_name(name, &column.name);
                    let options = sequence_options.as_deref().unwrap_or_default();
                    column.sequence = Some(sequence::sequence_def(
                        &sequence,
                        column.sql_type.clone(),
                        options,
                    )?);
                    column.identity = Some(match how {
                        GeneratedAs::Always => Identity::Always,
                        _ => Identity::ByDefault,
                    });
                    // Postgres' identity columns are NOT NULL.
                    column.nullable = false;
                }
                other => return Err(PlanError::Unsupported(format!("column option {other}"))),
            }
        }
        columns.push(column);
    }
    for constraint in &create.constraints {
        match constraint {
            TableConstraint::PrimaryKey(pk) => {
                if !primary_key.is_empty() {
                    return Err(PlanError::MultiplePrimaryKeys(name.to_string()));
                }
                for ic in &pk.columns {
                    let key = match &ic.column.expr {
                        Expr::Identifier(id) => normalize_ident(id),
                        other => {
                            return Err(PlanError::Unsupported(format!(
                                "primary key expression {other}"
                            )));
                        }
                    };
                    let pos = columns
                        .iter()
                        .position(|c| c.name == key)
                        .ok_or_else(|| PlanError::UnknownKeyColumn(key.clone()))?;
                    primary_key.push(pos);
                }
            }
            other => return Err(PlanError::Unsupported(format!("table constraint {other}"))),
        }
    }
    for &i in &primary_key {
        columns[i].nullable = false;
    }
    let mut computed_defs = Vec::new();
    for (column, expr) in computed(&columns)? {
        if columns.iter().any(|c| c.name == column.name) {
            return Err(PlanError::DuplicateColumn(column.name));
        }
        computed_defs.push(ComputedDef {
            column: columns.len(),
            expr,
        });
        columns.push(column);
    }
    let watermark = watermark.map(|w| watermark_def(w, &columns)).transpose()?;
    let options = with_options(&create.table_options)?;
    if let Some(v) = options.get(IDLE_TIMEOUT) {
        if parse_duration(v).is_none() {
            return Err(PlanError::InvalidParameter(format!(
                "invalid value for option \"{IDLE_TIMEOUT}\": \"{v}\" (expected a duration such as '10 s')"
            )));
        }
        if watermark.is_none() {
            return Err(PlanError::InvalidParameter(format!(
                "option \"{IDLE_TIMEOUT}\" needs a WATERMARK on the table"
            )));
        }
    }
    if let Some(v) = options.get(RETENTION) {
        if parse_duration(v).is_none_or(|d| d.is_zero()) {
            return Err(PlanError::InvalidParameter(format!(
                "invalid value for option \"{RETENTION}\": \"{v}\" (expected a duration such as '1 day')"
            )));
        }
        if !append_only || watermark.is_none() {
            return Err(PlanError::InvalidParameter(format!(
                "option \"{RETENTION}\" needs an APPEND ONLY table with a WATERMARK: rows are \
                 dropped once the watermark has passed their time by the retention"
            )));
        }
    }
    let display_scales = !options.contains_key("connector");
    Ok(TableDef {
        comment: None,
        display_scales,
        id: 0,
        database: String::new(),
        name: name.to_string(),
        columns,
        primary_key,
        append_only,
        options,
        view: None,
        watermark,
        computed: computed_defs,
        plain_view: None,
    })
}

/// The integer type of Postgres' `smallserial`, `serial` and `bigserial` (and their `serial2`,
/// `serial4`, `serial8` spellings): a NOT NULL column drawing its default from a sequence.
fn serial_type(t: &ast::DataType) -> Option<SqlType> {
    let ast::DataType::Custom(name, args) = t else {
        return None;
    };
    if !args.is_empty() {
        return None;
    }
    match name.to_string().to_ascii_lowercase().as_str() {
        "smallserial" | "serial2" => Some(SqlType::SmallInt),
        "serial" | "serial4" => Some(SqlType::Int),
        "bigserial" | "serial8" => Some(SqlType::BigInt),
        _ => None,
    }
}

/// Postgres' 42601 for a column given two defaults, or a default and an identity.
fn twice(what: &str, column: &str, table: &str) -> PlanError {
    PlanError::Syntax {
        message: format!("{what} specified for column \"{column}\" of table \"{table}\""),
        detail: None,
        position: None,
    }
}

/// Parses a Flink duration: a number with an optional unit (ms, s, min, h, d and their long forms).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim().trim_matches('\'').trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let millis = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1e3,
        "m" | "min" | "mins" | "minute" | "minutes" => 60e3,
        "h" | "hour" | "hours" => 3600e3,
        "d" | "day" | "days" => 86_400e3,
        _ => return None,
    };
    let ms = number * millis;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1e3))
}

/// The table option that drops an APPEND ONLY table's rows once its watermark has passed their
/// event time by this long (`retention = '1 day'`), without retracting them from views.
pub const RETENTION: &str = "retention";

/// The table option that lets an idle source's watermark follow the wall clock (Flink's name).
pub const IDLE_TIMEOUT: &str = "scan.watermark.idle-timeout";

/// Checks a WATERMARK clause's column (a TIMESTAMP) and the syntax of its expression; the
/// expression's type is checked by the streaming planner, which has the functions.
fn watermark_def(w: &WatermarkClause, columns: &[ColumnDef]) -> Result<WatermarkDef> {
    let column = columns
        .iter()
        .position(|c| c.name == w.column)
        .ok_or_else(|| PlanError::UnknownColumn {
            column: w.column.clone(),
            clause: "WATERMARK",
        })?;
    if !matches!(
        columns[column].sql_type,
        SqlType::Timestamp | SqlType::TimestampTz
    ) {
        return Err(PlanError::WrongType(format!(
            "watermark column \"{}\" is of type {}, but a TIMESTAMP is required",
            w.column,
            columns[column].sql_type.pg_name()
        )));
    }
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    datafusion::sql::sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(&w.expr)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| PlanError::Syntax {
            message: format!("syntax error in WATERMARK expression \"{}\"", w.expr),
            detail: Some(e.to_string()),
            position: w.position,
        })?;
    Ok(WatermarkDef {
        column,
        expr: w.expr.clone(),
    })
}

fn refuse_unsupported(create: &CreateTable) -> Result<()> {
    if create.query.is_some() {
        return Err(PlanError::Unsupported("CREATE TABLE ... AS SELECT".into()));
    }
    if create.like.is_some() || create.clone.is_some() {
        return Err(PlanError::Unsupported("CREATE TABLE ... LIKE/CLONE".into()));
    }
    if create.or_replace {
        return Err(PlanError::Unsupported("CREATE OR REPLACE TABLE".into()));
    }
    if create.temporary {
        return Err(PlanError::Unsupported("CREATE TEMPORARY TABLE".into()));
    }
    if create.external {
        return Err(PlanError::Unsupported("CREATE EXTERNAL TABLE".into()));
    }
    if create.columns.is_empty() {
        return Err(PlanError::Unsupported("a table without columns".into()));
    }
    Ok(())
}

/// `WITH (k = v, ...)` as a map with lowercased keys, quoted or not, string or number values.
pub(crate) fn with_options(opts: &CreateTableOptions) -> Result<BTreeMap<String, String>> {
    let list: &[SqlOption] = match opts {
        CreateTableOptions::None => return Ok(BTreeMap::new()),
        CreateTableOptions::With(list)
        | CreateTableOptions::Options(list)
        | CreateTableOptions::Plain(list) => list,
        other => return Err(PlanError::Unsupported(format!("table options {other}"))),
    };
    let mut out = BTreeMap::new();
    for opt in list {
        let SqlOption::KeyValue { key, value } = opt else {
            return Err(PlanError::Unsupported(format!("table option {opt}")));
        };
        let key = key.value.to_ascii_lowercase();
        let value = match value {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                Value::Number(n, _) => n.clone(),
                Value::Boolean(b) => b.to_string(),
                other => other.to_string(),
            },
            Expr::Identifier(id) => id.value.clone(),
            other => other.to_string(),
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// An identifier as Postgres folds it: unquoted names are lowercased.
pub fn normalize_ident(id: &ast::Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_lowercase(),
    }
}

/// The last part of a possibly qualified name, folded.
pub fn object_name(name: &ast::ObjectName) -> Result<(Option<String>, String)> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| {
            p.as_ident()
                .map(normalize_ident)
                .ok_or_else(|| PlanError::Unsupported(format!("name {name}")))
        })
        .collect::<Result<_>>()?;
    match parts.as_slice() {
        [table] => Ok((None, table.clone())),
        [schema, table] => Ok((Some(schema.clone()), table.clone())),
        [_, schema, table] => Ok((Some(schema.clone()), table.clone())),
        _ => Err(PlanError::Unsupported(format!("name {name}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Statement, parse_sql};

    fn def(sql: &str) -> Result<TableDef> {
        let parsed = parse_sql(sql)?;
        let Statement::Sql {
            stmt,
            append_only,
            watermark,
            ..
        } = &parsed[0].statement
        else {
            panic!("not sql")
        };
        let ast::Statement::CreateTable(create) = stmt.as_ref() else {
            panic!("not create table")
        };
        table_def(create, "t", *append_only, watermark.as_ref(), |_| {
            Ok(Vec::new())
        })
    }

    #[test]
    fn columns_keys_and_options() {
        let t = def("CREATE TABLE t (id INT, Name TEXT NOT NULL, \"Mixed\" BIGINT, PRIMARY KEY (id)) APPEND ONLY \
                     WITH (connector = 'datagen', 'rows-per-second' = '10')")
            .unwrap();
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "name", "Mixed"]);
        assert_eq!(t.primary_key, vec![0]);
        assert!(!t.columns[0].nullable && !t.columns[1].nullable && t.columns[2].nullable);
        assert!(t.append_only);
        assert_eq!(
            t.options.get("connector").map(String::as_str),
            Some("datagen")
        );
        assert_eq!(
            t.options.get("rows-per-second").map(String::as_str),
            Some("10")
        );
    }

    #[test]
    fn serial_and_identity_columns_own_a_sequence() {
        let t = def("CREATE TABLE t (id BIGSERIAL, n INT GENERATED ALWAYS AS IDENTITY (START 5), s TEXT DEFAULT 'x')")
            .unwrap();
        let (id, n, s) = (&t.columns[0], &t.columns[1], &t.columns[2]);
        assert_eq!(id.sql_type, SqlType::BigInt);
        assert!(!id.nullable && !n.nullable && s.nullable);
        assert_eq!(id.default.as_deref(), Some("nextval('t_id_seq')"));
        assert_eq!(id.sequence.as_ref().map(|q| q.max), Some(i64::MAX));
        assert_eq!(n.identity, Some(Identity::Always));
        assert_eq!(
            n.sequence.as_ref().map(|q| (q.name.as_str(), q.start)),
            Some(("t_n_seq", 5))
        );
        assert_eq!(s.default.as_deref(), Some("'x'"));
    }

    #[test]
    fn refusals_name_the_construct() {
        assert_eq!(
            def("CREATE TABLE t (a INT, a INT)")
                .unwrap_err()
                .to_string(),
            "column \"a\" specified more than once"
        );
        assert_eq!(
            def("CREATE TABLE t (a INT PRIMARY KEY, b INT PRIMARY KEY)")
                .unwrap_err()
                .to_string(),
            "multiple primary keys for table \"t\" are not allowed"
        );
        assert!(
            def("CREATE TABLE t (a INT CHECK (a > 0))")
                .unwrap_err()
                .to_string()
                .contains("CHECK (a > 0)")
        );
        assert_eq!(
            def("CREATE TABLE t (a SERIAL DEFAULT 1)")
                .unwrap_err()
                .to_string(),
            "multiple default values specified for column \"a\" of table \"t\""
        );
        assert_eq!(
            def("CREATE TABLE t (a INT, PRIMARY KEY (b))")
                .unwrap_err()
                .to_string(),
            "column \"b\" named in key does not exist"
        );
    }
}
