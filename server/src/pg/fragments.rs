//! Fragments of client catalog queries that DataFusion cannot plan, replaced by expressions that
//! give Postgres' answer for Rivulet's catalog.
//!
//! Each entry names the client and the reason. Matching is on tokens, whitespace-insensitive, and
//! finds a fragment anywhere in a statement; `$n` in a pattern matches any single token. These are
//! the last resort, for constructs that have no general rewrite (`ARRAY(subquery)`, columns Rivulet
//! has no notion of): what they stand for is always empty or absent here.

use std::sync::LazyLock;

use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer};

const FRAGMENTS: &[(&str, &str)] = &[
    // psql \du: role memberships; the server's one role belongs to none.
    (
        "ARRAY(SELECT b.rolname
        FROM pg_catalog.pg_auth_members m
        JOIN pg_catalog.pg_roles b ON (m.roleid = b.oid)
        WHERE m.member = r.oid) as memberof",
        "'{}' AS memberof",
    ),
    // psql \d+: storage options of a relation and its TOAST table; Rivulet has neither.
    (
        "pg_catalog.array_to_string(c.reloptions || array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x), ', ')",
        "''",
    ),
    // psql \dn+: schema privileges; Rivulet grants none, and `nspacl` is not an array here.
    ("pg_catalog.array_to_string(n.nspacl, E'\\n')", "NULL::text"),
];

fn tokens(sql: &str) -> Option<Vec<Token>> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    Some(
        tokens
            .into_iter()
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect(),
    )
}

static PATTERNS: LazyLock<Vec<(Vec<Token>, Vec<Token>)>> = LazyLock::new(|| {
    FRAGMENTS
        .iter()
        .filter_map(|(from, to)| Some((tokens(from)?, tokens(to)?)))
        .collect()
});

/// Whether `token` equals the pattern's `expected` (keywords and identifiers ignore case).
fn same(token: &Token, expected: &Token) -> bool {
    match (token, expected) {
        (_, Token::Placeholder(_)) => !matches!(token, Token::SemiColon),
        (Token::Word(a), Token::Word(b)) => {
            a.quote_style == b.quote_style && a.value.eq_ignore_ascii_case(&b.value)
        }
        _ => token == expected,
    }
}

/// The tokens of `sql` with every known fragment replaced, or `None` if none occurs.
pub fn replace(sql: &str) -> Option<Vec<Token>> {
    let input = tokens(sql)?;
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    let mut changed = false;
    'outer: while i < input.len() {
        for (pattern, replacement) in PATTERNS.iter() {
            let end = i + pattern.len();
            if end <= input.len() && input[i..end].iter().zip(pattern).all(|(t, p)| same(t, p)) {
                out.extend(replacement.iter().cloned());
                i = end;
                changed = true;
                continue 'outer;
            }
        }
        out.push(input[i].clone());
        i += 1;
    }
    changed.then_some(out)
}

/// The one statement of `tokens`, if they parse.
pub fn parse(tokens: Vec<Token>) -> Option<Statement> {
    let tokens = tokens
        .into_iter()
        .map(|token| TokenWithSpan {
            token,
            span: Span::empty(),
        })
        .collect();
    let mut statements = Parser::new(&PostgreSqlDialect {})
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .ok()?;
    (statements.len() == 1).then(|| statements.pop()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fragment_tokenizes() {
        assert_eq!(PATTERNS.len(), FRAGMENTS.len());
    }

    #[test]
    fn psql_du_memberships_are_empty() {
        let sql = "SELECT r.rolname, ARRAY(SELECT b.rolname\n FROM pg_catalog.pg_auth_members m \
                   JOIN pg_catalog.pg_roles b ON (m.roleid = b.oid)  WHERE m.member = r.oid) as memberof \
                   FROM pg_catalog.pg_roles r";
        let stmt = parse(replace(sql).unwrap()).unwrap();
        assert_eq!(
            stmt.to_string(),
            "SELECT r.rolname, '{}' AS memberof FROM pg_catalog.pg_roles r"
        );
        assert!(replace("SELECT 1").is_none());
    }
}
