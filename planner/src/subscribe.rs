//! `SUBSCRIBE` (Materialize): a client asks for a relation's changes pushed to it as they
//! commit, over the Postgres wire.
//!
//! `SUBSCRIBE [TO] name [WITH (SNAPSHOT = false, SINCE = n)]`, and the same inside
//! `COPY (...) TO STDOUT`. Without options the client gets the relation's rows as of now, then
//! every committed change; `SNAPSHOT = false` skips the rows; `SINCE = n` resumes after the
//! relation's commit `n` (a number an earlier subscription printed), without the rows. The
//! server streams it (`server/src/subscribe.rs`).

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
}
