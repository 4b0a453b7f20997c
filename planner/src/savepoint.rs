//! Savepoints of streaming jobs (Flink's, for a SQL server), written and restored with SQL:
//!
//! - `ALTER {MATERIALIZED VIEW | SINK} name SAVEPOINT [TO] 'directory'`: a snapshot of the running
//!   job at its last committed epoch, written into the directory (also `'file:///...'`).
//! - `ALTER {MATERIALIZED VIEW | SINK} name SUSPEND WITH SAVEPOINT [TO] 'directory'`: Flink's
//!   stop-with-savepoint: the job stops at a checkpoint, the savepoint is written from it, and the
//!   view stays, readable and unchanging, until `ALTER ... RESUME` (or until it is dropped and
//!   created again from the savepoint, with a changed query: an upgrade).
//! - `CREATE {MATERIALIZED VIEW | SINK} [IF NOT EXISTS] name FROM SAVEPOINT 'directory'
//!   [WITH (allow_non_restored_state = true)]`: a new view or sink running the savepoint's query
//!   from the savepoint's state (with the session's parallelism). A view with another query
//!   restores with `CREATE MATERIALIZED VIEW name WITH (savepoint = '...') AS query`, read by the
//!   executor from the statement's options.
//! - `SHOW SAVEPOINTS`, and `DROP SAVEPOINT [IF EXISTS] 'directory'`, which releases what the
//!   savepoint keeps of its sources' change logs (its files stay).
//!
//! `SAVEPOINT name` alone, `RELEASE SAVEPOINT` and `ROLLBACK TO SAVEPOINT` stay the transaction
//! statements Postgres has.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Word};

use crate::Result;
use crate::parse::{Statement, expected_error, ident, is_bare_word, significant_tokens};

fn is_keyword(t: &TokenWithSpan, kw: Keyword) -> bool {
    matches!(&t.token, Token::Word(Word { keyword, quote_style: None, .. }) if *keyword == kw)
}

/// The job a statement names: a sink, or a materialized view, and where its name is.
fn job_kind(words: &[&TokenWithSpan], at: usize) -> Option<(bool, usize)> {
    match words.get(at..) {
        Some([sink, ..]) if is_bare_word(sink, "sink") => Some((true, at + 1)),
        Some([mat, view, ..])
            if is_keyword(mat, Keyword::MATERIALIZED) && is_keyword(view, Keyword::VIEW) =>
        {
            Some((false, at + 2))
        }
        _ => None,
    }
}

/// `tokens` as a savepoint statement, if they are one (`None`: some other statement).
pub fn parse(sql: &str, tokens: &[TokenWithSpan]) -> Option<Result<Statement>> {
    let words = significant_tokens(tokens);
    let first = words.first()?;
    if is_keyword(first, Keyword::SHOW)
        && words.get(1).is_some_and(|t| is_bare_word(t, "savepoints"))
    {
        return Some(match words.get(2) {
            None => Ok(Statement::ShowSavepoints),
            Some(extra) => Err(expected_error(sql, Some(extra), "end of statement")),
        });
    }
    if is_keyword(first, Keyword::DROP)
        && words
            .get(1)
            .is_some_and(|t| is_keyword(t, Keyword::SAVEPOINT))
    {
        return Some(drop_savepoint(sql, &words));
    }
    if is_keyword(first, Keyword::ALTER) {
        let (sink, at) = job_kind(&words, 1)?;
        let next = words.get(at + 1)?;
        let ours = is_keyword(next, Keyword::SAVEPOINT)
            || is_bare_word(next, "suspend")
            || is_bare_word(next, "resume");
        return ours.then(|| alter(sql, &words, sink, at));
    }
    if is_keyword(first, Keyword::CREATE) {
        let (sink, mut at) = job_kind(&words, 1)?;
        let if_not_exists = words.get(at).is_some_and(|t| is_keyword(t, Keyword::IF))
            && words
                .get(at + 1)
                .is_some_and(|t| is_keyword(t, Keyword::NOT))
            && words
                .get(at + 2)
                .is_some_and(|t| is_keyword(t, Keyword::EXISTS));
        if if_not_exists {
            at += 3;
        }
        let from_savepoint = words
            .get(at + 1)
            .is_some_and(|t| is_keyword(t, Keyword::FROM))
            && words
                .get(at + 2)
                .is_some_and(|t| is_keyword(t, Keyword::SAVEPOINT));
        return from_savepoint.then(|| create(sql, &words, sink, at, if_not_exists));
    }
    None
}

/// The directory a `'...'` token names: an absolute path, or a `file://` URL of one. Relative
/// paths are left to the executor to refuse (it knows the SQLSTATE).
fn directory(sql: &str, words: &[&TokenWithSpan], at: usize) -> Result<String> {
    match words.get(at).map(|t| &t.token) {
        Some(Token::SingleQuotedString(s)) if !s.is_empty() => {
            Ok(s.strip_prefix("file://").unwrap_or(s).to_string())
        }
        _ => Err(expected_error(
            sql,
            words.get(at).copied(),
            "a directory as a string",
        )),
    }
}

fn end(sql: &str, words: &[&TokenWithSpan], at: usize) -> Result<()> {
    match words.get(at) {
        None => Ok(()),
        Some(extra) => Err(expected_error(sql, Some(extra), "end of statement")),
    }
}

fn name(sql: &str, words: &[&TokenWithSpan], at: usize, sink: bool) -> Result<String> {
    let what = if sink { "a sink name" } else { "a view name" };
    words
        .get(at)
        .and_then(|t| ident(t))
        .ok_or_else(|| expected_error(sql, words.get(at).copied(), what))
}

fn alter(sql: &str, words: &[&TokenWithSpan], sink: bool, at: usize) -> Result<Statement> {
    let name = name(sql, words, at, sink)?;
    let mut v = at + 1;
    if words.get(v).is_some_and(|t| is_bare_word(t, "resume")) {
        end(sql, words, v + 1)?;
        return Ok(Statement::ResumeJob { name, sink });
    }
    let suspend = words.get(v).is_some_and(|t| is_bare_word(t, "suspend"));
    if suspend {
        v += 1;
        if !words.get(v).is_some_and(|t| is_keyword(t, Keyword::WITH)) {
            return Err(expected_error(sql, words.get(v).copied(), "WITH SAVEPOINT"));
        }
        v += 1;
        if !words
            .get(v)
            .is_some_and(|t| is_keyword(t, Keyword::SAVEPOINT))
        {
            return Err(expected_error(sql, words.get(v).copied(), "SAVEPOINT"));
        }
    }
    v += 1;
    if words.get(v).is_some_and(|t| is_keyword(t, Keyword::TO)) {
        v += 1;
    }
    let to = directory(sql, words, v)?;
    end(sql, words, v + 1)?;
    Ok(Statement::SaveJob {
        name,
        sink,
        to,
        suspend,
    })
}

fn create(
    sql: &str,
    words: &[&TokenWithSpan],
    sink: bool,
    at: usize,
    if_not_exists: bool,
) -> Result<Statement> {
    let name = name(sql, words, at, sink)?;
    let from = directory(sql, words, at + 3)?;
    let mut v = at + 4;
    let mut allow_non_restored_state = false;
    if words.get(v).is_some_and(|t| is_keyword(t, Keyword::WITH)) {
        let expected = "(allow_non_restored_state = true | false)";
        let option = words.get(v + 2).and_then(|t| ident(t));
        let shape_ok = words.get(v + 1).is_some_and(|t| t.token == Token::LParen)
            && option.as_deref() == Some("allow_non_restored_state")
            && words.get(v + 3).is_some_and(|t| t.token == Token::Eq)
            && words.get(v + 5).is_some_and(|t| t.token == Token::RParen);
        let value = match words.get(v + 4).map(|t| &t.token) {
            Some(Token::Word(w)) if w.keyword == Keyword::TRUE => Some(true),
            Some(Token::Word(w)) if w.keyword == Keyword::FALSE => Some(false),
            Some(Token::SingleQuotedString(s)) if s.eq_ignore_ascii_case("true") => Some(true),
            Some(Token::SingleQuotedString(s)) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        };
        match (shape_ok, value) {
            (true, Some(b)) => allow_non_restored_state = b,
            _ => {
                let bad = (v + 1..=v + 5)
                    .find(|i| words.get(*i).is_none())
                    .unwrap_or(v + 1);
                return Err(expected_error(sql, words.get(bad).copied(), expected));
            }
        }
        v += 6;
    }
    end(sql, words, v)?;
    Ok(Statement::RestoreJob {
        name,
        sink,
        if_not_exists,
        from,
        allow_non_restored_state,
    })
}

fn drop_savepoint(sql: &str, words: &[&TokenWithSpan]) -> Result<Statement> {
    let mut v = 2;
    let if_exists = words.get(v).is_some_and(|t| is_keyword(t, Keyword::IF))
        && words
            .get(v + 1)
            .is_some_and(|t| is_keyword(t, Keyword::EXISTS));
    if if_exists {
        v += 2;
    }
    let path = directory(sql, words, v)?;
    end(sql, words, v + 1)?;
    Ok(Statement::DropSavepoint { path, if_exists })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_sql;

    fn one(sql: &str) -> Statement {
        parse_sql(sql).expect(sql).remove(0).statement
    }

    #[test]
    fn savepoint_statements() {
        assert_eq!(
            one("ALTER MATERIALIZED VIEW v SAVEPOINT TO 'file:///b/v-1'"),
            Statement::SaveJob {
                name: "v".into(),
                sink: false,
                to: "/b/v-1".into(),
                suspend: false
            }
        );
        assert_eq!(
            one("alter sink \"S\" suspend with savepoint '/b/s'"),
            Statement::SaveJob {
                name: "S".into(),
                sink: true,
                to: "/b/s".into(),
                suspend: true
            }
        );
        assert_eq!(
            one("ALTER MATERIALIZED VIEW v RESUME"),
            Statement::ResumeJob {
                name: "v".into(),
                sink: false
            }
        );
        assert_eq!(
            one(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS v2 FROM SAVEPOINT '/b/v' WITH (allow_non_restored_state = true)"
            ),
            Statement::RestoreJob {
                name: "v2".into(),
                sink: false,
                if_not_exists: true,
                from: "/b/v".into(),
                allow_non_restored_state: true
            }
        );
        assert_eq!(
            one("CREATE SINK s2 FROM SAVEPOINT '/b/s'"),
            Statement::RestoreJob {
                name: "s2".into(),
                sink: true,
                if_not_exists: false,
                from: "/b/s".into(),
                allow_non_restored_state: false
            }
        );
        assert_eq!(one("SHOW SAVEPOINTS"), Statement::ShowSavepoints);
        assert_eq!(
            one("DROP SAVEPOINT IF EXISTS '/b/v'"),
            Statement::DropSavepoint {
                path: "/b/v".into(),
                if_exists: true
            }
        );
        // Other statements are left alone.
        assert!(matches!(one("SAVEPOINT a"), Statement::Sql { .. }));
        assert!(matches!(
            one("ALTER MATERIALIZED VIEW v SET PARALLELISM = 2"),
            Statement::AlterParallelism { .. }
        ));
        assert!(matches!(
            one("CREATE SINK s FROM v WITH (connector = 'blackhole')"),
            Statement::CreateSink { .. }
        ));
        for (sql, near) in [
            ("ALTER MATERIALIZED VIEW v SAVEPOINT TO x", "x"),
            ("ALTER MATERIALIZED VIEW v SUSPEND '/x'", "'/x'"),
            ("ALTER MATERIALIZED VIEW v SAVEPOINT '/x' now", "now"),
            (
                "CREATE MATERIALIZED VIEW v FROM SAVEPOINT '/x' WITH (other = 1)",
                "(",
            ),
            ("SHOW SAVEPOINTS x", "x"),
        ] {
            let err = parse_sql(sql).unwrap_err().to_string();
            assert!(
                err.contains(&format!("at or near \"{near}\"")),
                "{sql}: {err}"
            );
        }
    }
}
