//! Sequences as Postgres defines them: `CREATE SEQUENCE`'s options, and the sequence a `serial`
//! or identity column owns. The server keeps their values (`server/src/sequence.rs`).

use datafusion::sql::sqlparser::ast::{Expr, SequenceOptions, UnaryOperator, Value};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

use crate::catalog::SequenceDef;
use crate::types::SqlType;
use crate::{PlanError, Result};

/// The name Postgres gives the sequence of `table`'s `serial` or identity `column`.
pub fn owned_name(table: &str, column: &str) -> String {
    format!("{table}_{column}_seq")
}

/// A sequence of `sql_type` (`bigint` when `CREATE SEQUENCE` names none) with `options`, checked
/// as Postgres checks them (22023 for a bound out of the type's range, a start out of the bounds,
/// a zero increment).
pub fn sequence_def(
    name: &str,
    sql_type: SqlType,
    options: &[SequenceOptions],
) -> Result<SequenceDef> {
    let (type_min, type_max) = match sql_type {
        SqlType::SmallInt => (i64::from(i16::MIN), i64::from(i16::MAX)),
        SqlType::Int => (i64::from(i32::MIN), i64::from(i32::MAX)),
        SqlType::BigInt => (i64::MIN, i64::MAX),
        _ => {
            return Err(PlanError::InvalidParameter(
                "sequence type must be smallint, integer, or bigint".into(),
            ));
        }
    };
    let invalid = |m: String| PlanError::InvalidParameter(m);
    let (mut increment, mut min, mut max, mut start, mut cycle) = (1, None, None, None, false);
    for option in options {
        match option {
            SequenceOptions::IncrementBy(e, _) => increment = integer(e)?,
            SequenceOptions::MinValue(e) => min = e.as_ref().map(integer).transpose()?,
            SequenceOptions::MaxValue(e) => max = e.as_ref().map(integer).transpose()?,
            SequenceOptions::StartWith(e, _) => start = Some(integer(e)?),
            SequenceOptions::Cache(e) => {
                let cache = integer(e)?;
                if cache <= 0 {
                    return Err(invalid(format!(
                        "CACHE ({cache}) must be greater than zero"
                    )));
                }
            }
            SequenceOptions::Cycle(no) => cycle = !no,
        }
    }
    if increment == 0 {
        return Err(invalid("INCREMENT must not be zero".into()));
    }
    let type_name = sql_type.pg_name();
    let max = max.unwrap_or(if increment > 0 { type_max } else { -1 });
    let min = min.unwrap_or(if increment > 0 { 1 } else { type_min });
    if !(type_min..=type_max).contains(&max) {
        return Err(invalid(format!(
            "MAXVALUE ({max}) is out of range for sequence data type {type_name}"
        )));
    }
    if !(type_min..=type_max).contains(&min) {
        return Err(invalid(format!(
            "MINVALUE ({min}) is out of range for sequence data type {type_name}"
        )));
    }
    if min >= max {
        return Err(invalid(format!(
            "MINVALUE ({min}) must be less than MAXVALUE ({max})"
        )));
    }
    let start = start.unwrap_or(if increment > 0 { min } else { max });
    if start < min {
        return Err(invalid(format!(
            "START value ({start}) cannot be less than MINVALUE ({min})"
        )));
    }
    if start > max {
        return Err(invalid(format!(
            "START value ({start}) cannot be greater than MAXVALUE ({max})"
        )));
    }
    Ok(SequenceDef {
        name: name.to_string(),
        sql_type,
        start,
        increment,
        min,
        max,
        cycle,
    })
}

/// Puts the options of a `CREATE SEQUENCE` and of an identity column (`AS IDENTITY (..)`) in
/// the order sqlparser reads them (`AS type`, `INCREMENT`, `MINVALUE`, `MAXVALUE`, `START`, `CACHE`,
/// `CYCLE`); Postgres takes them in any order (`START 5 INCREMENT 2`).
pub(crate) fn order_options(tokens: &mut Vec<TokenWithSpan>) {
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_) | Token::EOF))
        .collect();
    let word = |i: usize| match &tokens[i].token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
        _ => None,
    };
    // The regions of options, as positions in `significant`: (first, end exclusive).
    let mut regions = Vec::new();
    let create_sequence = significant.len() > 2
        && word(significant[0]) == Some(Keyword::CREATE)
        && (significant.iter().skip(1).take(2)).any(|&i| word(i) == Some(Keyword::SEQUENCE));
    if create_sequence {
        // After the name: the word after SEQUENCE [IF NOT EXISTS], maybe dotted.
        let mut k = (significant.iter())
            .position(|&i| word(i) == Some(Keyword::SEQUENCE))
            .map_or(significant.len(), |p| p + 1);
        if (significant.get(k)).is_some_and(|&i| word(i) == Some(Keyword::IF)) {
            k += 3;
        }
        k += 1;
        while (significant.get(k)).is_some_and(|&i| tokens[i].token == Token::Period) {
            k += 2;
        }
        let end = (significant.iter().skip(k))
            .position(|&i| word(i) == Some(Keyword::OWNED))
            .map_or(significant.len(), |p| p + k);
        regions.push((k, end));
    } else {
        for (n, &i) in significant.iter().enumerate() {
            if word(i) == Some(Keyword::IDENTITY)
                && (significant.get(n + 1)).is_some_and(|&j| tokens[j].token == Token::LParen)
            {
                let start = n + 2;
                let end = (significant.iter().skip(start))
                    .position(|&j| tokens[j].token == Token::RParen)
                    .map_or(significant.len(), |p| p + start);
                regions.push((start, end));
            }
        }
    }
    let rank = |k: usize| -> Option<u8> {
        let next = significant.get(k + 1).and_then(|&i| word(i));
        match word(significant[k])? {
            Keyword::AS => Some(0),
            Keyword::INCREMENT => Some(1),
            Keyword::MINVALUE => Some(2),
            Keyword::MAXVALUE => Some(3),
            Keyword::START => Some(4),
            Keyword::CACHE => Some(5),
            Keyword::CYCLE => Some(6),
            Keyword::NO => match next? {
                Keyword::MINVALUE => Some(2),
                Keyword::MAXVALUE => Some(3),
                Keyword::CYCLE => Some(6),
                _ => None,
            },
            _ => None,
        }
    };
    // Later regions first, so the token positions of earlier ones stay valid.
    let mut edits = Vec::new();
    for (start, end) in regions.into_iter().rev() {
        // Clauses: each from an option's first word up to the next option's.
        let mut clauses: Vec<(u8, usize, usize)> = Vec::new();
        let mut k = start;
        while k < end {
            let skip = usize::from(word(significant[k]) == Some(Keyword::NO));
            match (rank(k), clauses.last_mut()) {
                (Some(r), _) => clauses.push((r, k, k + 1 + skip)),
                (None, Some(last)) => last.2 = k + 1,
                (None, None) => break,
            }
            k += 1 + skip;
        }
        if clauses.windows(2).all(|w| w[0].0 <= w[1].0) {
            continue;
        }
        clauses.sort_by_key(|c| c.0);
        let mut ordered = Vec::new();
        for (_, from, to) in clauses {
            ordered.extend_from_slice(&tokens[significant[from]..=significant[to - 1]]);
            ordered.push(TokenWithSpan::wrap(Token::Whitespace(Whitespace::Space)));
        }
        edits.push((significant[start], significant[end - 1], ordered));
    }
    for (first, last, ordered) in edits {
        tokens.splice(first..=last, ordered);
    }
}

/// A sequence option's value: an integer literal, maybe negative.
fn integer(e: &Expr) -> Result<i64> {
    let bad = || PlanError::InvalidParameter(format!("invalid sequence option value {e}"));
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().map_err(|_| bad()),
            _ => Err(bad()),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => integer(expr)?.checked_neg().ok_or_else(bad),
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => integer(expr),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn def(sql_type: SqlType, options: &str) -> Result<SequenceDef> {
        let sql = format!("CREATE SEQUENCE s {options}");
        let stmt = Parser::parse_sql(&PostgreSqlDialect {}, &sql)
            .unwrap()
            .remove(0);
        let datafusion::sql::sqlparser::ast::Statement::CreateSequence {
            sequence_options, ..
        } = stmt
        else {
            panic!("not a CREATE SEQUENCE: {sql}");
        };
        sequence_def("s", sql_type, &sequence_options)
    }

    fn ordered(sql: &str) -> String {
        let dialect = PostgreSqlDialect {};
        let mut tokens = datafusion::sql::sqlparser::tokenizer::Tokenizer::new(&dialect, sql)
            .tokenize_with_location()
            .unwrap();
        order_options(&mut tokens);
        tokens.iter().map(|t| t.token.to_string()).collect()
    }

    #[test]
    fn options_in_any_order_are_put_in_sqlparser_order() {
        assert_eq!(
            ordered("CREATE SEQUENCE s START 5 NO CYCLE INCREMENT BY -2 AS int"),
            "CREATE SEQUENCE s AS int INCREMENT BY -2 START 5 NO CYCLE "
        );
        assert_eq!(
            ordered(
                "CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY (START WITH 10 INCREMENT 5), v int)"
            ),
            "CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY (INCREMENT 5 START WITH 10 ), v int)"
        );
        let already = "CREATE SEQUENCE IF NOT EXISTS public.s INCREMENT 2 START 3";
        assert_eq!(ordered(already), already);
    }

    #[test]
    fn defaults_follow_the_direction_and_the_type() {
        let up = def(SqlType::Int, "").unwrap();
        assert_eq!((up.start, up.min, up.max), (1, 1, i64::from(i32::MAX)));
        let down = def(SqlType::SmallInt, "INCREMENT BY -2").unwrap();
        assert_eq!((down.start, down.min, down.max), (-1, -32768, -1));
        let given = def(
            SqlType::BigInt,
            "INCREMENT 5 MAXVALUE 200 START WITH 100 CYCLE",
        )
        .unwrap();
        assert_eq!(
            (given.start, given.increment, given.max, given.cycle),
            (100, 5, 200, true)
        );
    }

    #[test]
    fn bad_options_are_postgres_errors() {
        let message = |t, o| def(t, o).unwrap_err().to_string();
        assert_eq!(
            message(SqlType::Int, "MAXVALUE 3000000000"),
            "MAXVALUE (3000000000) is out of range for sequence data type integer"
        );
        assert_eq!(
            message(SqlType::BigInt, "START 0"),
            "START value (0) cannot be less than MINVALUE (1)"
        );
        assert_eq!(
            message(SqlType::BigInt, "INCREMENT 0"),
            "INCREMENT must not be zero"
        );
        assert_eq!(
            message(SqlType::BigInt, "MINVALUE 10 MAXVALUE 5"),
            "MINVALUE (10) must be less than MAXVALUE (5)"
        );
    }
}
