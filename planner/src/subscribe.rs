//! `SUBSCRIBE` (Materialize): a client asks for a relation's changes pushed to it as they
//! commit, over the Postgres wire.
//!
//! `SUBSCRIBE [TO] name [WITH (SNAPSHOT = false, SINCE = n)]`, and the same inside
//! `COPY (...) TO STDOUT`. Without options the client gets the relation's rows as of now, then
//! every committed change; `SNAPSHOT = false` skips the rows; `SINCE = n` resumes after the
//! relation's commit `n` (a number an earlier subscription printed), without the rows. The
//! server streams it (`server/src/subscribe.rs`).
//!
//! RisingWave's subscriptions, pulled instead of pushed, so every driver in either protocol can
//! read them: `CREATE SUBSCRIPTION s FROM relation WITH (retention = '1 day')` keeps the
//! relation's committed changes for that long; `DECLARE c SUBSCRIPTION CURSOR FOR s [SINCE
//! now() | begin() | unix_ms | FULL]` opens a session's cursor on them, `FETCH n FROM c` returns
//! up to `n` changes without waiting (or waits up to `WITH (timeout = ...)` for the first), and
//! `CLOSE c` ends it (`server/src/subscriptions.rs`).

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::Result;
use crate::parse::{Statement, expected_error, ident, is_bare_word, significant_tokens};

/// `tokens` as a SUBSCRIBE statement, if they are one (`None`: not a SUBSCRIBE at all).
pub fn parse(sql: &str, tokens: &[TokenWithSpan]) -> Option<Result<Statement>> {
    let words: Vec<&TokenWithSpan> = significant_tokens(tokens);
    let inner: &[&TokenWithSpan] = match words.as_slice() {
        [first, ..] if is_bare_word(first, "subscribe") => &words,
        // COPY ( SUBSCRIBE ... ) TO STDOUT
        [copy, open, rest @ ..]
            if is_bare_word(copy, "copy")
                && open.token == Token::LParen
                && rest.first().is_some_and(|t| is_bare_word(t, "subscribe")) =>
        {
            let n = rest.len();
            let tail_ok = n >= 3
                && rest[n - 3].token == Token::RParen
                && is_bare_word(rest[n - 2], "to")
                && is_bare_word(rest[n - 1], "stdout");
            if !tail_ok {
                return Some(Err(expected_error(
                    sql,
                    rest.get(n.saturating_sub(2)).copied(),
                    ") TO STDOUT",
                )));
            }
            &rest[..n - 3]
        }
        _ => return None,
    };
    Some(subscribe(sql, inner))
}

/// `SUBSCRIBE [TO] name [WITH (...)]`, `words[0]` being SUBSCRIBE.
fn subscribe(sql: &str, words: &[&TokenWithSpan]) -> Result<Statement> {
    let mut at = 1;
    if words.get(at).is_some_and(|t| is_bare_word(t, "to")) {
        at += 1;
    }
    let relation = words
        .get(at)
        .and_then(|t| ident(t))
        .ok_or_else(|| expected_error(sql, words.get(at).copied(), "a relation name"))?;
    at += 1;
    let (mut snapshot, mut since) = (true, None);
    if words.get(at).is_some_and(|t| is_bare_word(t, "with")) {
        at += 1;
        if words.get(at).is_none_or(|t| t.token != Token::LParen) {
            return Err(expected_error(sql, words.get(at).copied(), "("));
        }
        at += 1;
        loop {
            let key = words
                .get(at)
                .and_then(|t| ident(t))
                .ok_or_else(|| expected_error(sql, words.get(at).copied(), "an option name"))?;
            if words.get(at + 1).is_none_or(|t| t.token != Token::Eq) {
                return Err(expected_error(sql, words.get(at + 1).copied(), "="));
            }
            let value_at = at + 2;
            let value = words.get(value_at).map(|t| match &t.token {
                Token::Word(w) => w.value.to_lowercase(),
                Token::Number(n, _) => n.clone(),
                Token::SingleQuotedString(s) => s.to_lowercase(),
                other => other.to_string(),
            });
            let bad = || expected_error(sql, words.get(value_at).copied(), "a valid option value");
            match (key.as_str(), value.as_deref()) {
                ("snapshot", Some("true")) => snapshot = true,
                ("snapshot", Some("false")) => snapshot = false,
                ("since", Some(v)) => since = Some(v.parse::<u64>().map_err(|_| bad())?),
                ("snapshot" | "since", _) => return Err(bad()),
                _ => {
                    return Err(expected_error(
                        sql,
                        words.get(at).copied(),
                        "SNAPSHOT or SINCE",
                    ));
                }
            }
            at += 3;
            match words.get(at).map(|t| &t.token) {
                Some(Token::Comma) => at += 1,
                Some(Token::RParen) => {
                    at += 1;
                    break;
                }
                _ => return Err(expected_error(sql, words.get(at).copied(), ", or )")),
            }
        }
    }
    if let Some(extra) = words.get(at) {
        return Err(expected_error(sql, Some(extra), "end of statement"));
    }
    Ok(Statement::Subscribe {
        relation,
        snapshot: snapshot && since.is_none(),
        since,
    })
}

/// Where a subscription cursor starts reading (RisingWave's `DECLARE ... SUBSCRIPTION CURSOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorStart {
    /// `SINCE now()` / `SINCE proctime()`, the default: the changes committed after DECLARE.
    Now,
    /// `SINCE begin()`: the oldest change the subscription still holds.
    Begin,
    /// `SINCE unix_ms`: the changes committed at or after that Unix millisecond.
    Since(i64),
    /// `FULL`: the relation's rows as of DECLARE, then the changes after.
    Full,
}

/// RisingWave's subscriptions: `CREATE SUBSCRIPTION`, `DROP SUBSCRIPTION`, `DECLARE ...
/// SUBSCRIPTION CURSOR`, `FETCH` and `CLOSE` (`None`: none of them).
pub fn parse_subscription(sql: &str, tokens: &[TokenWithSpan]) -> Option<Result<Statement>> {
    let words: Vec<&TokenWithSpan> = significant_tokens(tokens);
    let word = |i: usize, w: &str| words.get(i).is_some_and(|t| is_bare_word(t, w));
    if word(0, "create") && word(1, "subscription") {
        return Some(create_subscription(sql, &words));
    }
    if word(0, "drop") && word(1, "subscription") {
        return Some(drop_subscription(sql, &words));
    }
    if word(0, "declare") && word(2, "subscription") {
        return Some(declare_cursor(sql, &words));
    }
    if word(0, "fetch") {
        return Some(fetch(sql, &words));
    }
    if word(0, "close") {
        return Some(close(sql, &words));
    }
    None
}

/// A name at `words[at]`, or a syntax error expecting `what`.
fn name_at(sql: &str, words: &[&TokenWithSpan], at: usize, what: &str) -> Result<String> {
    words
        .get(at)
        .and_then(|t| ident(t))
        .ok_or_else(|| expected_error(sql, words.get(at).copied(), what))
}

/// An error unless `words` end at `at`.
fn end_at(sql: &str, words: &[&TokenWithSpan], at: usize) -> Result<()> {
    match words.get(at) {
        Some(extra) => Err(expected_error(sql, Some(extra), "end of statement")),
        None => Ok(()),
    }
}

/// `WITH (key = value [, ...])` from `words[at]` (at `WITH`): the pairs, keys lowercased and
/// values as written (quotes removed), and where the words after it start.
fn with_options(
    sql: &str,
    words: &[&TokenWithSpan],
    mut at: usize,
) -> Result<(Vec<(String, String)>, usize)> {
    at += 1;
    if words.get(at).is_none_or(|t| t.token != Token::LParen) {
        return Err(expected_error(sql, words.get(at).copied(), "("));
    }
    at += 1;
    let mut options = Vec::new();
    loop {
        let key = name_at(sql, words, at, "an option name")?.to_lowercase();
        if words.get(at + 1).is_none_or(|t| t.token != Token::Eq) {
            return Err(expected_error(sql, words.get(at + 1).copied(), "="));
        }
        let value = match words.get(at + 2).map(|t| &t.token) {
            Some(Token::SingleQuotedString(s)) => s.clone(),
            Some(Token::Number(n, _)) => n.clone(),
            Some(Token::Word(w)) => w.value.clone(),
            _ => {
                return Err(expected_error(sql, words.get(at + 2).copied(), "a value"));
            }
        };
        options.push((key, value));
        at += 3;
        match words.get(at).map(|t| &t.token) {
            Some(Token::Comma) => at += 1,
            Some(Token::RParen) => return Ok((options, at + 1)),
            _ => return Err(expected_error(sql, words.get(at).copied(), ", or )")),
        }
    }
}

/// `[IF NOT EXISTS | IF EXISTS]` at `words[at]`: whether it is there, and what follows it.
fn if_clause(sql: &str, words: &[&TokenWithSpan], at: usize, not: bool) -> Result<(bool, usize)> {
    if !words.get(at).is_some_and(|t| is_bare_word(t, "if")) {
        return Ok((false, at));
    }
    let mut next = at + 1;
    if not {
        if !words.get(next).is_some_and(|t| is_bare_word(t, "not")) {
            return Err(expected_error(sql, words.get(next).copied(), "NOT EXISTS"));
        }
        next += 1;
    }
    if !words.get(next).is_some_and(|t| is_bare_word(t, "exists")) {
        return Err(expected_error(sql, words.get(next).copied(), "EXISTS"));
    }
    Ok((true, next + 1))
}

fn create_subscription(sql: &str, words: &[&TokenWithSpan]) -> Result<Statement> {
    let (if_not_exists, at) = if_clause(sql, words, 2, true)?;
    let name = name_at(sql, words, at, "a subscription name")?;
    if !words.get(at + 1).is_some_and(|t| is_bare_word(t, "from")) {
        return Err(expected_error(sql, words.get(at + 1).copied(), "FROM"));
    }
    let relation = name_at(sql, words, at + 2, "a table or materialized view")?;
    let mut at = at + 3;
    let mut retention = None;
    if words.get(at).is_some_and(|t| is_bare_word(t, "with")) {
        let (options, next) = with_options(sql, words, at)?;
        for (key, value) in options {
            match key.as_str() {
                "retention" => retention = Some(value),
                _ => return Err(expected_error(sql, words.get(at + 2).copied(), "retention")),
            }
        }
        at = next;
    }
    end_at(sql, words, at)?;
    Ok(Statement::CreateSubscription {
        name,
        if_not_exists,
        relation,
        retention,
    })
}

fn drop_subscription(sql: &str, words: &[&TokenWithSpan]) -> Result<Statement> {
    let (if_exists, at) = if_clause(sql, words, 2, false)?;
    let name = name_at(sql, words, at, "a subscription name")?;
    end_at(sql, words, at + 1)?;
    Ok(Statement::DropSubscription { name, if_exists })
}

/// `DECLARE cursor SUBSCRIPTION CURSOR FOR subscription [SINCE ... | FULL]`.
fn declare_cursor(sql: &str, words: &[&TokenWithSpan]) -> Result<Statement> {
    let cursor = name_at(sql, words, 1, "a cursor name")?;
    if !words.get(3).is_some_and(|t| is_bare_word(t, "cursor")) {
        return Err(expected_error(sql, words.get(3).copied(), "CURSOR"));
    }
    if !words.get(4).is_some_and(|t| is_bare_word(t, "for")) {
        return Err(expected_error(sql, words.get(4).copied(), "FOR"));
    }
    let subscription = name_at(sql, words, 5, "a subscription name")?;
    let mut at = 6;
    let start = match words.get(at) {
        None => CursorStart::Now,
        Some(t) if is_bare_word(t, "full") => {
            at += 1;
            CursorStart::Full
        }
        Some(t) if is_bare_word(t, "since") => {
            let from = at + 1;
            let bad = || {
                expected_error(
                    sql,
                    words.get(from).copied(),
                    "now(), proctime(), begin() or Unix milliseconds",
                )
            };
            let value = words.get(from).ok_or_else(bad)?;
            let call = |name: &str| {
                is_bare_word(value, name)
                    && words
                        .get(from + 1)
                        .is_some_and(|t| t.token == Token::LParen)
                    && words
                        .get(from + 2)
                        .is_some_and(|t| t.token == Token::RParen)
            };
            let (start, next) = if call("now") || call("proctime") {
                (CursorStart::Now, from + 3)
            } else if call("begin") {
                (CursorStart::Begin, from + 3)
            } else if let Token::Number(n, _) = &value.token {
                let ms = n.parse::<i64>().map_err(|_| bad())?;
                (CursorStart::Since(ms), from + 1)
            } else {
                return Err(bad());
            };
            at = next;
            start
        }
        Some(other) => return Err(expected_error(sql, Some(other), "SINCE, FULL or the end")),
    };
    end_at(sql, words, at)?;
    Ok(Statement::DeclareCursor {
        cursor,
        subscription,
        start,
    })
}

/// `FETCH [NEXT | n] [FROM | IN] cursor [WITH (timeout = '1s')]`.
fn fetch(sql: &str, words: &[&TokenWithSpan]) -> Result<Statement> {
    let mut at = 1;
    let mut count = 1;
    match words.get(at).map(|t| &t.token) {
        Some(Token::Number(n, _)) => {
            count = n
                .parse::<u64>()
                .map_err(|_| expected_error(sql, words.get(at).copied(), "a row count"))?;
            at += 1;
        }
        Some(_) if words.get(at).is_some_and(|t| is_bare_word(t, "next")) => at += 1,
        _ => {}
    }
    if words
        .get(at)
        .is_some_and(|t| is_bare_word(t, "from") || is_bare_word(t, "in"))
    {
        at += 1;
    }
    let cursor = name_at(sql, words, at, "a cursor name")?;
    at += 1;
    let mut timeout = None;
    if words.get(at).is_some_and(|t| is_bare_word(t, "with")) {
        let (options, next) = with_options(sql, words, at)?;
        for (key, value) in options {
            match key.as_str() {
                "timeout" => timeout = Some(value),
                _ => return Err(expected_error(sql, words.get(at + 2).copied(), "timeout")),
            }
        }
        at = next;
    }
    end_at(sql, words, at)?;
    Ok(Statement::Fetch {
        cursor,
        count,
        timeout,
    })
}

/// `CLOSE cursor` or `CLOSE ALL`.
fn close(sql: &str, words: &[&TokenWithSpan]) -> Result<Statement> {
    if words.get(1).is_some_and(|t| is_bare_word(t, "all")) {
        end_at(sql, words, 2)?;
        return Ok(Statement::CloseCursor { cursor: None });
    }
    let cursor = name_at(sql, words, 1, "a cursor name")?;
    end_at(sql, words, 2)?;
    Ok(Statement::CloseCursor {
        cursor: Some(cursor),
    })
}

#[cfg(test)]
mod tests {
    use crate::parse::{Statement, parse_sql};

    fn one(sql: &str) -> Statement {
        parse_sql(sql).unwrap().remove(0).statement
    }

    #[test]
    fn subscribe_forms() {
        let plain = Statement::Subscribe {
            relation: "v".into(),
            snapshot: true,
            since: None,
        };
        assert_eq!(one("SUBSCRIBE TO v"), plain);
        assert_eq!(one("subscribe V"), plain);
        assert_eq!(one("COPY (SUBSCRIBE v) TO STDOUT"), plain);
        assert_eq!(
            one("COPY (SUBSCRIBE TO \"V\" WITH (SNAPSHOT = false)) TO STDOUT"),
            Statement::Subscribe {
                relation: "V".into(),
                snapshot: false,
                since: None
            }
        );
        assert_eq!(
            one("SUBSCRIBE v WITH (since = 42)"),
            Statement::Subscribe {
                relation: "v".into(),
                snapshot: false,
                since: Some(42)
            }
        );
        let err = parse_sql("SUBSCRIBE v WITH (snapshot = maybe)").unwrap_err();
        assert!(err.to_string().contains("maybe"), "{err}");
        assert!(parse_sql("SUBSCRIBE").is_err());
        assert!(parse_sql("COPY (SUBSCRIBE v) TO '/tmp/x'").is_err());
    }

    #[test]
    fn subscription_forms() {
        use super::CursorStart;
        assert_eq!(
            one("CREATE SUBSCRIPTION s FROM mv WITH (retention = '1D')"),
            Statement::CreateSubscription {
                name: "s".into(),
                if_not_exists: false,
                relation: "mv".into(),
                retention: Some("1D".into()),
            }
        );
        assert_eq!(
            one("create subscription if not exists S from t"),
            Statement::CreateSubscription {
                name: "s".into(),
                if_not_exists: true,
                relation: "t".into(),
                retention: None,
            }
        );
        assert_eq!(
            one("DROP SUBSCRIPTION IF EXISTS s"),
            Statement::DropSubscription {
                name: "s".into(),
                if_exists: true
            }
        );
        let declare = |sql: &str| match one(sql) {
            Statement::DeclareCursor { start, .. } => start,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            declare("DECLARE c SUBSCRIPTION CURSOR FOR s"),
            CursorStart::Now
        );
        assert_eq!(
            declare("DECLARE c SUBSCRIPTION CURSOR FOR s SINCE begin()"),
            CursorStart::Begin
        );
        assert_eq!(
            declare("DECLARE c SUBSCRIPTION CURSOR FOR s SINCE proctime()"),
            CursorStart::Now
        );
        assert_eq!(
            declare("DECLARE c SUBSCRIPTION CURSOR FOR s SINCE 1715669376304"),
            CursorStart::Since(1715669376304)
        );
        assert_eq!(
            declare("DECLARE c SUBSCRIPTION CURSOR FOR s FULL"),
            CursorStart::Full
        );
        let fetch = |sql: &str| match one(sql) {
            Statement::Fetch {
                cursor,
                count,
                timeout,
            } => (cursor, count, timeout),
            other => panic!("{other:?}"),
        };
        assert_eq!(fetch("FETCH NEXT FROM c"), ("c".into(), 1, None));
        assert_eq!(fetch("fetch 10 from C"), ("c".into(), 10, None));
        assert_eq!(
            fetch("FETCH 5 FROM c WITH (timeout = '2s')"),
            ("c".into(), 5, Some("2s".into()))
        );
        assert_eq!(
            one("CLOSE c"),
            Statement::CloseCursor {
                cursor: Some("c".into())
            }
        );
        assert_eq!(one("CLOSE ALL"), Statement::CloseCursor { cursor: None });
        for bad in [
            "CREATE SUBSCRIPTION s mv",
            "CREATE SUBSCRIPTION s FROM mv WITH (size = 3)",
            "DECLARE c SUBSCRIPTION CURSOR FOR s SINCE yesterday",
            "FETCH NEXT FROM",
            "CLOSE c d",
        ] {
            assert!(parse_sql(bad).is_err(), "{bad}");
        }
    }
}
