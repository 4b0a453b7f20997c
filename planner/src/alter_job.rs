//! `ALTER MATERIALIZED VIEW name SET PARALLELISM {= | TO} {n | ADAPTIVE | DEFAULT}` and the same
//! for `ALTER SINK` (RisingWave's spelling): change a running job's parallelism. The server stops
//! the job at a checkpoint and starts it again with the new instances; key groups move between
//! them with their state (`server/src/exec/alter_job.rs`).

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Word};

use crate::Result;
use crate::parse::{Statement, expected_error, ident, is_bare_word, significant_tokens};

/// The parallelism an ALTER asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallelism {
    /// This many instances of each keyed stage.
    Fixed(u64),
    /// As many as the machine has cores, whenever the job starts (`ADAPTIVE`, or `0`).
    Adaptive,
    /// The server's `--streaming-parallelism` (`DEFAULT`).
    Default,
}

fn is_keyword(t: &TokenWithSpan, kw: Keyword) -> bool {
    matches!(&t.token, Token::Word(Word { keyword, quote_style: None, .. }) if *keyword == kw)
}

/// `tokens` as an ALTER of a job's parallelism, if they are one (`None`: some other statement,
/// left to sqlparser).
pub fn parse(sql: &str, tokens: &[TokenWithSpan]) -> Option<Result<Statement>> {
    let words = significant_tokens(tokens);
    let (sink, at) = match words.as_slice() {
        [alter, sink, ..] if is_keyword(alter, Keyword::ALTER) && is_bare_word(sink, "sink") => {
            (true, 2)
        }
        [alter, mat, view, ..]
            if is_keyword(alter, Keyword::ALTER)
                && is_keyword(mat, Keyword::MATERIALIZED)
                && is_keyword(view, Keyword::VIEW) =>
        {
            (false, 3)
        }
        _ => return None,
    };
    // Only SET PARALLELISM is Rivulet's; other ALTERs of a view go on to sqlparser (and are
    // refused there or by the executor with their own messages).
    let set_parallelism = words
        .get(at + 1)
        .is_some_and(|t| is_keyword(t, Keyword::SET))
        && words
            .get(at + 2)
            .is_some_and(|t| is_bare_word(t, "parallelism"));
    if !sink && !set_parallelism {
        return None;
    }
    Some(alter(sql, &words, sink, at))
}

fn alter(sql: &str, words: &[&TokenWithSpan], sink: bool, at: usize) -> Result<Statement> {
    let what = if sink { "a sink name" } else { "a view name" };
    let name = words
        .get(at)
        .and_then(|t| ident(t))
        .ok_or_else(|| expected_error(sql, words.get(at).copied(), what))?;
    if !words
        .get(at + 1)
        .is_some_and(|t| is_keyword(t, Keyword::SET))
    {
        return Err(expected_error(
            sql,
            words.get(at + 1).copied(),
            "SET PARALLELISM",
        ));
    }
    if !words
        .get(at + 2)
        .is_some_and(|t| is_bare_word(t, "parallelism"))
    {
        return Err(expected_error(
            sql,
            words.get(at + 2).copied(),
            "PARALLELISM",
        ));
    }
    let mut v = at + 3;
    if words
        .get(v)
        .is_some_and(|t| t.token == Token::Eq || is_keyword(t, Keyword::TO))
    {
        v += 1;
    }
    let value = words.get(v).copied();
    let expected = "a number of instances, ADAPTIVE or DEFAULT";
    let parallelism = match value.map(|t| &t.token) {
        Some(Token::Number(n, _)) => match n.parse::<u64>() {
            Ok(0) => Parallelism::Adaptive,
            Ok(n) => Parallelism::Fixed(n),
            Err(_) => return Err(expected_error(sql, value, expected)),
        },
        Some(Token::SingleQuotedString(s)) if s.eq_ignore_ascii_case("adaptive") => {
            Parallelism::Adaptive
        }
        _ if value.is_some_and(|t| is_bare_word(t, "adaptive") || is_bare_word(t, "auto")) => {
            Parallelism::Adaptive
        }
        _ if value.is_some_and(|t| is_keyword(t, Keyword::DEFAULT)) => Parallelism::Default,
        _ => return Err(expected_error(sql, value, expected)),
    };
    if let Some(extra) = words.get(v + 1) {
        return Err(expected_error(sql, Some(extra), "end of statement"));
    }
    Ok(Statement::AlterParallelism {
        name,
        sink,
        parallelism,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_sql;

    fn parsed(sql: &str) -> Statement {
        parse_sql(sql).unwrap().remove(0).statement
    }

    #[test]
    fn risingwave_spellings() {
        assert_eq!(
            parsed("ALTER MATERIALIZED VIEW v SET PARALLELISM = 4"),
            Statement::AlterParallelism {
                name: "v".into(),
                sink: false,
                parallelism: Parallelism::Fixed(4)
            }
        );
        assert_eq!(
            parsed("alter sink \"S\" set parallelism to adaptive;"),
            Statement::AlterParallelism {
                name: "S".into(),
                sink: true,
                parallelism: Parallelism::Adaptive
            }
        );
        assert_eq!(
            parsed("ALTER MATERIALIZED VIEW v SET PARALLELISM 0"),
            Statement::AlterParallelism {
                name: "v".into(),
                sink: false,
                parallelism: Parallelism::Adaptive
            }
        );
        assert_eq!(
            parsed("ALTER MATERIALIZED VIEW v SET PARALLELISM = DEFAULT"),
            Statement::AlterParallelism {
                name: "v".into(),
                sink: false,
                parallelism: Parallelism::Default
            }
        );
    }

    #[test]
    fn errors_point_at_the_token() {
        for (sql, near) in [
            ("ALTER MATERIALIZED VIEW v SET PARALLELISM = x", "x"),
            ("ALTER MATERIALIZED VIEW v SET PARALLELISM = -1", "-"),
            ("ALTER MATERIALIZED VIEW v SET PARALLELISM = 2 3", "3"),
            ("ALTER SINK s RENAME TO t", "RENAME"),
        ] {
            let err = parse_sql(sql).unwrap_err().to_string();
            assert!(
                err.contains(&format!("at or near \"{near}\"")),
                "{sql}: {err}"
            );
        }
    }
}
