//! Fragments of client catalog queries that DataFusion cannot plan, replaced by expressions that
//! give Postgres' answer for Rivulet's catalog.
//!
//! Each entry names the client and the reason. Matching is on tokens, whitespace-insensitive, and
//! finds a fragment anywhere in a statement; `$n` in a pattern matches any single token (a bound
//! parameter or the literal a simple-protocol client put there), and `$n` in the replacement stands
//! for the token it matched, so parameters keep their numbers. These are
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
    // SQLAlchemy 2.x column reflection: identity column options. Rivulet has no identity columns
    // (`attidentity` is always ''), so the `CASE` around this is NULL either way; DataFusion cannot
    // decorrelate the outer column inside the subquery's `json_build_object`.
    (
        "(SELECT json_build_object($1, pg_catalog.pg_attribute.attidentity = $2, $3, pg_catalog.pg_sequence.seqstart, \
         $4, pg_catalog.pg_sequence.seqincrement, $5, pg_catalog.pg_sequence.seqmin, $6, pg_catalog.pg_sequence.seqmax, \
         $7, pg_catalog.pg_sequence.seqcache, $8, pg_catalog.pg_sequence.seqcycle) AS json_build_object_1 \
         FROM pg_catalog.pg_sequence WHERE pg_catalog.pg_attribute.attidentity != $9 \
         AND pg_catalog.pg_sequence.seqrelid = CAST(CAST(pg_catalog.pg_get_serial_sequence(\
         CAST(CAST(pg_catalog.pg_attribute.attrelid AS REGCLASS) AS TEXT), pg_catalog.pg_attribute.attname) AS REGCLASS) AS OID))",
        "NULL",
    ),
    // pgjdbc getPrimaryKeys/getIndexInfo: the key columns of each index and their positions, as
    // the composite rows `(x, n)` of `information_schema._pg_expandarray`, which DataFusion cannot
    // type; `unnest` and `generate_subscripts` side by side give the same rows.
    (
        "(information_schema._pg_expandarray(i.indkey)).n",
        "generate_subscripts(i.indkey, 1)",
    ),
    (
        "information_schema._pg_expandarray(i.indkey) AS KEYS",
        "unnest(i.indkey) AS KEYS",
    ),
    ("result.A_ATTNUM = (result.KEYS).x", "result.A_ATTNUM = result.KEYS"),
    // pgjdbc getBestRowIdentifier: the primary key's columns (as above).
    (
        "information_schema._pg_expandarray(i.indkey) AS keys",
        "unnest(i.indkey) AS keys",
    ),
    ("a.attnum = (i.keys).x", "a.attnum = i.keys"),
    // pgjdbc's TypeInfoCache, which every type lookup by name or OID goes through (getTypeInfo,
    // getVersionColumns, result columns of types it does not know): `typinput` is a `regproc` in
    // Postgres, the function's name as text in `datafusion-pg-catalog`.
    ("typinput='pg_catalog.array_in'::regproc", "typinput='array_in'"),
    // Grafana's PostgreSQL data source: "is the table's schema on the search path", with `"$user"`
    // read as the user (postgresMetaQuery.ts), in the select list and in ORDER BY. DataFusion
    // cannot index an array by a `generate_series` column nor plan a subquery in ORDER BY; the
    // same test as an expression over the setting plans anywhere.
    (
        "quote_ident(table_schema) IN ( \
         SELECT CASE WHEN trim(s[i]) = '\"$user\"' THEN user ELSE trim(s[i]) END \
         FROM generate_series(array_lower(string_to_array(current_setting('search_path'),','),1), \
         array_upper(string_to_array(current_setting('search_path'),','),1)) as i, \
         string_to_array(current_setting('search_path'),',') s)",
        "array_has(string_to_array(replace(replace(current_setting('search_path'), ' ', ''), \
         '\"$user\"', current_user), ','), quote_ident(table_schema))",
    ),
    // psql \dp: column privileges and row security policies; Rivulet has neither, and DataFusion
    // has no `ARRAY(subquery)`.
    (
        r#"pg_catalog.array_to_string(ARRAY(
    SELECT attname || E':\n  ' || pg_catalog.array_to_string(attacl, E'\n  ')
    FROM pg_catalog.pg_attribute a
    WHERE attrelid = c.oid AND NOT attisdropped AND attacl IS NOT NULL
  ), E'\n')"#,
        "''",
    ),
    (
        r#"pg_catalog.array_to_string(ARRAY(
    SELECT polname
    || CASE WHEN NOT polpermissive THEN
       E' (RESTRICTIVE)'
       ELSE '' END
    || CASE WHEN polcmd != '*' THEN
           E' (' || polcmd::pg_catalog.text || E'):'
       ELSE E':'
       END
    || CASE WHEN polqual IS NOT NULL THEN
           E'\n  (u): ' || pg_catalog.pg_get_expr(polqual, polrelid)
       ELSE E''
       END
    || CASE WHEN polwithcheck IS NOT NULL THEN
           E'\n  (c): ' || pg_catalog.pg_get_expr(polwithcheck, polrelid)
       ELSE E''
       END    || CASE WHEN polroles <> '{0}' THEN
           E'\n  to: ' || pg_catalog.array_to_string(
               ARRAY(
                   SELECT rolname
                   FROM pg_catalog.pg_roles
                   WHERE oid = ANY (polroles)
                   ORDER BY 1
               ), E', ')
       ELSE E''
       END
    FROM pg_catalog.pg_policy pol
    WHERE polrelid = c.oid), E'\n')"#,
        "''",
    ),
    // psql \dn+: schema privileges; Rivulet grants none, and `nspacl` is not an array here.
    ("pg_catalog.array_to_string(n.nspacl, E'\\n')", "NULL::text"),
    // psql \df+, \dD+, \dL+: privileges of functions, types and languages; Rivulet grants none
    // (Postgres prints NULL for default privileges), and the `*acl` columns are not arrays here.
    (r"pg_catalog.array_to_string(p.proacl, E'\n')", "NULL::text"),
    (r"pg_catalog.array_to_string(t.typacl, E'\n')", "NULL::text"),
    (r"pg_catalog.array_to_string(l.lanacl, E'\n')", "NULL::text"),
    // psql \drds: per-role and per-database settings; Rivulet has none (`pg_db_role_setting` is empty).
    (r"pg_catalog.array_to_string(setconfig, E'\n')", "NULL::text"),
    // psql \dD: a domain's check constraints; Rivulet has no domains, and DataFusion has no
    // `ARRAY(subquery)`.
    (
        "pg_catalog.array_to_string(ARRAY(
         SELECT pg_catalog.pg_get_constraintdef(r.oid, true) FROM pg_catalog.pg_constraint r WHERE t.oid = r.contypid
       ), ' ')",
        "''",
    ),
    // psql \dy: an event trigger's tags; Rivulet has no event triggers (`pg_event_trigger` is empty).
    (
        "pg_catalog.array_to_string(array(select x from pg_catalog.unnest(evttags) as t(x)), ', ')",
        "NULL::text",
    ),
    // psql \dD+, \dL, \dL+: descriptions joined on the system column `tableoid`, which the catalog
    // tables here do not have; it is the OID of the catalog table itself (pg_type 1247,
    // pg_language 2612).
    ("d.classoid = t.tableoid", "d.classoid = 1247"),
    ("d.classoid = l.tableoid", "d.classoid = 2612"),
    // asyncpg's type introspection (introspection.py, `_TYPEINFO_13`), which builds its codecs for
    // arrays, domains and composite types: a domain's base type through a recursive CTE, and a
    // composite type's attributes, in correlated subqueries DataFusion cannot plan. Rivulet has
    // no user-defined domains or composite types: a domain's base type is one level down, and
    // the attributes are none.
    (
        r#"(CASE WHEN t.typtype = 'd' THEN (WITH RECURSIVE typebases(oid, depth) AS ( SELECT t2.typbasetype AS oid, 0 AS depth FROM pg_type t2 WHERE t2.oid = t.oid UNION ALL SELECT t2.typbasetype AS oid, tb.depth + 1 AS depth FROM pg_type t2, typebases tb WHERE tb.oid = t2.oid AND t2.typbasetype != 0 ) SELECT oid FROM typebases ORDER BY depth DESC LIMIT 1) ELSE NULL END) AS basetype"#,
        r#"(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE NULL END) AS basetype"#,
    ),
    (r#"(CASE WHEN t.typtype = 'c' THEN (SELECT array_agg(ia.atttypid ORDER BY ia.attnum) FROM pg_attribute ia INNER JOIN pg_class c ON (ia.attrelid = c.oid) WHERE ia.attnum > 0 AND NOT ia.attisdropped AND c.reltype = t.oid) ELSE NULL END) AS attrtypoids"#, "CAST(NULL AS INT[]) AS attrtypoids"),
    (r#"(CASE WHEN t.typtype = 'c' THEN (SELECT array_agg(ia.attname::text ORDER BY ia.attnum) FROM pg_attribute ia INNER JOIN pg_class c ON (ia.attrelid = c.oid) WHERE ia.attnum > 0 AND NOT ia.attisdropped AND c.reltype = t.oid) ELSE NULL END) AS attrnames"#, "CAST(NULL AS TEXT[]) AS attrnames"),
    // Metabase's field sync (describe-fields-sql) adds the columns of materialized views from
    // pg_catalog to information_schema's, because Postgres' information_schema leaves them out.
    // Rivulet's lists them (so that Grafana's table and column pickers offer views too): that
    // branch would list every view column twice.
    (
        r#"WHERE ("pc"."relkind" = $1) AND ("pa"."attnum" >= $2) AND ("pn"."nspname" IN"#,
        r#"WHERE ("pc"."relkind" = $1 AND FALSE) AND ("pa"."attnum" >= $2) AND ("pn"."nspname" IN"#,
    ),
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

/// The tokens each placeholder of a pattern matched, by the placeholder's name.
type Captures = Vec<(String, Vec<Token>)>;

/// Where `pattern` matching `input` from `start` ends, and what each of its placeholders matched: one
/// token, with the bind cast a driver may add after a parameter (`$1::VARCHAR`).
fn matches_at(input: &[Token], start: usize, pattern: &[Token]) -> Option<(usize, Captures)> {
    let mut i = start;
    let mut captures = Vec::new();
    for (k, p) in pattern.iter().enumerate() {
        let token = input.get(i)?;
        if !same(token, p) {
            return None;
        }
        i += 1;
        if let Token::Placeholder(name) = p {
            let mut taken = vec![token.clone()];
            let cast_follows = matches!(input.get(i), Some(Token::DoubleColon))
                && !matches!(pattern.get(k + 1), Some(Token::DoubleColon))
                && matches!(input.get(i + 1), Some(Token::Word(_)));
            if cast_follows {
                taken.extend(input[i..i + 2].iter().cloned());
                i += 2;
            }
            captures.push((name.clone(), taken));
        }
    }
    Some((i, captures))
}

/// The tokens of `sql` with every known fragment replaced, or `None` if none occurs.
pub fn replace(sql: &str) -> Option<Vec<Token>> {
    let input = tokens(sql)?;
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    let mut changed = false;
    'outer: while i < input.len() {
        for (pattern, replacement) in PATTERNS.iter() {
            if let Some((end, captures)) = matches_at(&input, i, pattern) {
                out.extend(replacement.iter().flat_map(|t| {
                    match t {
                        Token::Placeholder(name) => captures
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, tokens)| tokens.clone())
                            .unwrap_or_else(|| vec![t.clone()]),
                        other => vec![other.clone()],
                    }
                }));
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

    #[test]
    fn placeholders_carry_what_they_matched() {
        let sql = r#"SELECT 1 FROM x WHERE ("pc"."relkind" = $3) AND ("pa"."attnum" >= $4) AND ("pn"."nspname" IN ('public'))"#;
        let stmt = parse(replace(sql).unwrap()).unwrap();
        assert_eq!(
            stmt.to_string(),
            r#"SELECT 1 FROM x WHERE ("pc"."relkind" = $3 AND false) AND ("pa"."attnum" >= $4) AND ("pn"."nspname" IN ('public'))"#
        );
        let literal = sql.replace("$3", "'m'");
        let stmt = parse(replace(&literal).unwrap()).unwrap();
        assert!(
            stmt.to_string()
                .contains(r#"("pc"."relkind" = 'm' AND false)"#)
        );
    }

    #[test]
    fn pgjdbc_key_columns_unnest_the_index_keys() {
        let sql = "SELECT (information_schema._pg_expandarray(i.indkey)).n AS KEY_SEQ, \
                   information_schema._pg_expandarray(i.indkey) AS KEYS FROM i";
        let stmt = parse(replace(sql).unwrap()).unwrap();
        assert_eq!(
            stmt.to_string(),
            "SELECT generate_subscripts(i.indkey, 1) AS KEY_SEQ, unnest(i.indkey) AS KEYS FROM i"
        );
    }
}
