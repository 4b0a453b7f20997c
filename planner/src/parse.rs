//! Splitting SQL text into statements and parsing them, with Rivulet's extensions.
//!
//! The whole string is tokenized once (so `;` inside strings, comments and dollar quotes is not a
//! separator), cut at top-level semicolons, and each statement's tokens are handed to sqlparser's
//! Postgres dialect. Extensions are handled on the tokens first:
//! - `FLUSH` is a statement of its own (RisingWave).
//! - `APPEND ONLY` after a `CREATE TABLE` column list (RisingWave) is removed and recorded.
//! - `WATERMARK FOR col AS expr` in a `CREATE TABLE` column list (Flink and RisingWave) is removed
//!   and recorded as the column and the expression's text.
//! - Flink's window table functions, `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), ...))`, become
//!   `__flink_tumble(t, ts, ...)`, and every window function in a FROM clause is then rewritten
//!   into plain SQL by [`crate::window`].
//!
//! Like Postgres, a syntax error anywhere fails the whole string before anything runs, and reports
//! `syntax error at or near "…"` with the 1-based character position in the string.

use datafusion::sql::sqlparser::ast;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Word};

use crate::{PlanError, Result};

/// One parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// A statement sqlparser understands, with what the extensions took out of it.
    Sql {
        stmt: Box<ast::Statement>,
        append_only: bool,
        watermark: Option<WatermarkClause>,
        /// `EMIT ON WINDOW CLOSE` after a materialized view's query (RisingWave).
        emit_on_window_close: bool,
        /// Computed columns of a CREATE TABLE, `name AS expr` (Flink) or `name type AS expr`
        /// (RisingWave), in declared order.
        computed: Vec<ComputedClause>,
    },
    /// `FLUSH`: wait until every streaming job has seen all earlier writes.
    Flush,
    /// `CREATE SINK [IF NOT EXISTS] name {FROM relation | AS query} WITH (options)` (RisingWave).
    CreateSink {
        name: String,
        if_not_exists: bool,
        /// The query whose changes go to the sink (`SELECT * FROM relation` for FROM).
        query: String,
        /// `WITH (...)` options, keys lowercased.
        options: std::collections::BTreeMap<String, String>,
        emit_on_window_close: bool,
        /// `EXPLAIN CREATE SINK ...`: show the job's plan instead of creating the sink.
        explain: bool,
    },
    /// `DROP SINK [IF EXISTS] name`.
    DropSink { name: String, if_exists: bool },
    /// `ALTER {MATERIALIZED VIEW | SINK} name SET PARALLELISM = ...` (see
    /// [`crate::alter_job`]).
    AlterParallelism {
        name: String,
        sink: bool,
        parallelism: crate::alter_job::Parallelism,
    },
    /// `ALTER {MATERIALIZED VIEW | SINK} name [SUSPEND WITH] SAVEPOINT [TO] 'directory'` (see
    /// [`crate::savepoint`]).
    SaveJob {
        name: String,
        sink: bool,
        to: String,
        /// Stop the job after the savepoint (Flink's stop-with-savepoint).
        suspend: bool,
    },
    /// `ALTER {MATERIALIZED VIEW | SINK} name RESUME`: start a suspended job again.
    ResumeJob { name: String, sink: bool },
    /// `CREATE {MATERIALIZED VIEW | SINK} name FROM SAVEPOINT 'directory'`.
    RestoreJob {
        name: String,
        sink: bool,
        if_not_exists: bool,
        from: String,
        /// Flink's `allowNonRestoredState`: state of the savepoint no operator takes is left out.
        allow_non_restored_state: bool,
    },
    /// `SHOW SAVEPOINTS`.
    ShowSavepoints,
    /// `DROP SAVEPOINT [IF EXISTS] 'directory'`.
    DropSavepoint { path: String, if_exists: bool },
    /// `BACKUP TO 'directory'` (see [`crate::backup`]).
    Backup { to: String },
    /// `SUBSCRIBE [TO] relation [WITH (...)]`, also inside `COPY (...) TO STDOUT`
    /// (see [`crate::subscribe`]).
    Subscribe {
        relation: String,
        /// Send the relation's current rows first.
        snapshot: bool,
        /// Resume after this commit of the relation.
        since: Option<u64>,
    },
    /// `CREATE SUBSCRIPTION [IF NOT EXISTS] name FROM relation [WITH (retention = '1 day')]`
    /// (RisingWave; see [`crate::subscribe`]).
    CreateSubscription {
        name: String,
        if_not_exists: bool,
        relation: String,
        /// How long committed changes stay readable, as written (an interval).
        retention: Option<String>,
    },
    /// `DROP SUBSCRIPTION [IF EXISTS] name`.
    DropSubscription { name: String, if_exists: bool },
    /// `DECLARE cursor SUBSCRIPTION CURSOR FOR subscription [SINCE ... | FULL]`.
    DeclareCursor {
        cursor: String,
        subscription: String,
        start: crate::subscribe::CursorStart,
    },
    /// `FETCH [NEXT | n] [FROM | IN] cursor [WITH (timeout = '1s')]`.
    Fetch {
        cursor: String,
        count: u64,
        /// How long to wait for a first row when none is there, as written (an interval).
        timeout: Option<String>,
    },
    /// `CLOSE cursor` or `CLOSE ALL` (`None`).
    CloseCursor { cursor: Option<String> },
}

/// `WATERMARK FOR column AS expr` of a CREATE TABLE.
#[derive(Debug, Clone, PartialEq)]
pub struct WatermarkClause {
    pub column: String,
    /// The expression as written (parsed again when the table is defined).
    pub expr: String,
    /// 1-based character position of `WATERMARK` in the query string, for errors.
    pub position: Option<usize>,
}

/// A computed column of a CREATE TABLE: `name AS expr`, or `name type AS expr`.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputedClause {
    pub name: String,
    /// The expression as written, cast to the declared type when one is given.
    pub expr: String,
    /// 1-based character position of the column's name in the query string, for errors.
    pub position: Option<usize>,
}

/// A statement and the text it was parsed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub statement: Statement,
    pub text: String,
}

/// Parses every statement in `sql`. Empty statements (`;;`) are skipped.
pub fn parse_sql(sql: &str) -> Result<Vec<Parsed>> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| PlanError::Syntax {
            message: e.message.clone(),
            detail: None,
            position: char_position(sql, e.location),
        })?;
    let mut out = Vec::new();
    for group in split_statements(tokens) {
        if group.iter().all(|t| is_trivia(&t.token)) {
            continue;
        }
        let text = statement_text(sql, &group);
        let statement = parse_one(sql, group, &dialect)?;
        out.push(Parsed { statement, text });
    }
    Ok(out)
}

fn is_trivia(token: &Token) -> bool {
    matches!(token, Token::Whitespace(_) | Token::EOF)
}

fn split_statements(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut groups = vec![Vec::new()];
    for t in tokens {
        match t.token {
            Token::SemiColon => groups.push(Vec::new()),
            Token::EOF => {}
            _ => groups.last_mut().map(|g| g.push(t)).unwrap_or(()),
        }
    }
    groups
}

fn significant(tokens: &[TokenWithSpan]) -> impl Iterator<Item = (usize, &TokenWithSpan)> {
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !is_trivia(&t.token))
}

fn is_word(t: &TokenWithSpan, kw: Keyword) -> bool {
    matches!(&t.token, Token::Word(Word { keyword, quote_style: None, .. }) if *keyword == kw)
}

/// An unquoted word, compared case-insensitively (for words sqlparser has no keyword for).
fn is_bare(t: &TokenWithSpan, word: &str) -> bool {
    matches!(&t.token, Token::Word(Word { value, quote_style: None, .. }) if value.eq_ignore_ascii_case(word))
}

fn parse_one(
    sql: &str,
    mut tokens: Vec<TokenWithSpan>,
    dialect: &PostgreSqlDialect,
) -> Result<Statement> {
    let words: Vec<(usize, &TokenWithSpan)> = significant(&tokens).collect();
    if words.len() == 1 && is_bare(words[0].1, "flush") {
        return Ok(Statement::Flush);
    }
    if let Some(savepoint) = crate::savepoint::parse(sql, &tokens) {
        return savepoint;
    }
    if words.len() > 1 && is_word(words[0].1, Keyword::CREATE) && is_bare(words[1].1, "sink") {
        return create_sink(sql, tokens, dialect);
    }
    if words.len() > 2
        && is_word(words[0].1, Keyword::EXPLAIN)
        && is_word(words[1].1, Keyword::CREATE)
        && is_bare(words[2].1, "sink")
    {
        let mut sink = create_sink(sql, tokens[words[1].0..].to_vec(), dialect)?;
        if let Statement::CreateSink { explain, .. } = &mut sink {
            *explain = true;
        }
        return Ok(sink);
    }
    if words.len() > 1 && is_word(words[0].1, Keyword::DROP) && is_bare(words[1].1, "sink") {
        return drop_sink(sql, &tokens);
    }
    if let Some(subscribe) = crate::subscribe::parse(sql, &tokens) {
        return subscribe;
    }
    if let Some(subscription) = crate::subscribe::parse_subscription(sql, &tokens) {
        return subscription;
    }
    if let Some(alter) = crate::alter_job::parse(sql, &tokens) {
        return alter;
    }
    if let Some(backup) = crate::backup::parse(sql, &tokens) {
        return backup;
    }
    // RisingWave's `CREATE SOURCE` / `DROP SOURCE`: a table that stores nothing, read by each
    // job itself (a generator's, a topic's or files' rows), and append-only.
    let source = words.len() > 2
        && (is_word(words[0].1, Keyword::CREATE) || is_word(words[0].1, Keyword::DROP))
        && is_bare(words[1].1, "source");
    if source {
        let at = words[1].0;
        tokens[at] = TokenWithSpan {
            token: Token::make_keyword("TABLE"),
            span: tokens[at].span,
        };
    }
    let words: Vec<(usize, &TokenWithSpan)> = significant(&tokens).collect();
    let mut append_only = false;
    let mut watermark = None;
    let mut computed = Vec::new();
    let is_create_table = words.len() > 2
        && is_word(words[0].1, Keyword::CREATE)
        && is_word(words[1].1, Keyword::TABLE);
    if is_create_table {
        let found = words
            .windows(2)
            .find(|w| is_bare(w[0].1, "append") && is_word(w[1].1, Keyword::ONLY))
            .map(|w| (w[0].0, w[1].0));
        if let Some((a, b)) = found {
            tokens.drain(a..=b);
            append_only = true;
        }
        watermark = take_watermark(sql, &mut tokens)?;
        computed = take_computed(sql, &mut tokens)?;
        take_metadata(dialect, &mut tokens);
        format_encode_to_options(dialect, &mut tokens);
        if source {
            append_only = true;
            add_options(
                dialect,
                &mut tokens,
                format!(", '{SOURCE_OPTION}' = 'true'"),
            );
        }
        quote_dotted_options(&mut tokens);
    }
    crate::sequence::order_options(&mut tokens);
    trim_blanks(&mut tokens);
    let emit_on_window_close = take_emit_on_window_close(&mut tokens);
    flink_windows(&mut tokens);
    let system_time = crate::temporal::take(&mut tokens);
    let match_recognize = crate::recognize::take(&mut tokens)?;
    crate::session_frame::take(&mut tokens);
    let end = tokens
        .iter()
        .rev()
        .find(|t| !is_trivia(&t.token))
        .map(|t| t.span.end);
    let mut parser = Parser::new(dialect).with_tokens_with_locations(tokens);
    let stmt = parser
        .parse_statement()
        .map_err(|e| syntax_error(sql, e, end))?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(syntax_error(
            sql,
            ParserError::ParserError(format!("Expected: end of statement, found: {next}")),
            Some(next.span.start),
        ));
    }
    let mut stmt = stmt;
    crate::temporal::restore(&mut stmt, system_time)?;
    crate::recognize::restore(&mut stmt, match_recognize)?;
    crate::session_frame::rewrite(&mut stmt)?;
    crate::window::rewrite(&mut stmt)?;
    Ok(Statement::Sql {
        stmt: Box::new(stmt),
        append_only,
        watermark,
        emit_on_window_close,
        computed,
    })
}

/// `trim(LEADING FROM x)` (and TRAILING, BOTH) trims blanks, as Postgres has it; sqlparser reads
/// `trim(<where> [characters] FROM x)` only with the characters, so a `' '` is put there.
fn trim_blanks(tokens: &mut Vec<TokenWithSpan>) {
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !is_trivia(&tokens[i].token))
        .collect();
    let mut insert_at = Vec::new();
    for w in significant.windows(4) {
        if is_word(&tokens[w[0]], Keyword::TRIM)
            && tokens[w[1]].token == Token::LParen
            && [Keyword::LEADING, Keyword::TRAILING, Keyword::BOTH]
                .iter()
                .any(|k| is_word(&tokens[w[2]], *k))
            && is_word(&tokens[w[3]], Keyword::FROM)
        {
            insert_at.push(w[3]);
        }
    }
    for at in insert_at.into_iter().rev() {
        let blank = [
            TokenWithSpan::wrap(Token::SingleQuotedString(" ".into())),
            TokenWithSpan::wrap(Token::Whitespace(
                datafusion::sql::sqlparser::tokenizer::Whitespace::Space,
            )),
        ];
        tokens.splice(at..at, blank);
    }
}

/// An identifier token's name as Postgres folds it.
fn ident_name(t: &TokenWithSpan) -> Option<String> {
    match &t.token {
        Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
        Token::Word(w) => Some(w.value.to_lowercase()),
        _ => None,
    }
}

/// The tokens that are not whitespace.
pub(crate) fn significant_tokens(tokens: &[TokenWithSpan]) -> Vec<&TokenWithSpan> {
    significant(tokens).map(|(_, t)| t).collect()
}

/// An unquoted word, compared case-insensitively.
pub(crate) fn is_bare_word(t: &TokenWithSpan, word: &str) -> bool {
    is_bare(t, word)
}

/// An identifier as Postgres folds it (unquoted lowercased).
pub(crate) fn ident(t: &TokenWithSpan) -> Option<String> {
    ident_name(t)
}

/// A syntax error at token `at` (or the end of input), expecting `expected`.
pub(crate) fn expected_error(sql: &str, at: Option<&TokenWithSpan>, expected: &str) -> PlanError {
    sink_syntax(sql, at, expected)
}

fn sink_syntax(sql: &str, at: Option<&TokenWithSpan>, expected: &str) -> PlanError {
    PlanError::Syntax {
        message: match at {
            Some(t) => format!("syntax error at or near \"{}\"", t.token),
            None => "syntax error at end of input".into(),
        },
        detail: Some(format!("Expected: {expected}")),
        position: at.and_then(|t| char_position(sql, t.span.start)),
    }
}

/// `CREATE SINK [IF NOT EXISTS] name {FROM relation | AS query} WITH (options)`.
fn create_sink(
    sql: &str,
    mut tokens: Vec<TokenWithSpan>,
    dialect: &PostgreSqlDialect,
) -> Result<Statement> {
    // `EMIT ON WINDOW CLOSE` ends the query, before WITH.
    let mut emit_on_window_close = false;
    {
        let words: Vec<usize> = significant(&tokens).map(|(i, _)| i).collect();
        if let Some(k) = (0..words.len().saturating_sub(3)).find(|&k| {
            is_bare(&tokens[words[k]], "emit")
                && is_word(&tokens[words[k + 1]], Keyword::ON)
                && is_word(&tokens[words[k + 2]], Keyword::WINDOW)
                && is_word(&tokens[words[k + 3]], Keyword::CLOSE)
        }) {
            tokens.drain(words[k]..=words[k + 3]);
            emit_on_window_close = true;
        }
    }
    flink_windows(&mut tokens);
    quote_dotted_options(&mut tokens);
    let format = take_sink_format(sql, dialect, &mut tokens)?;
    let words: Vec<usize> = significant(&tokens).map(|(i, _)| i).collect();
    let at = |n: usize| words.get(n).map(|&i| &tokens[i]);
    let mut n = 2;
    let if_not_exists = at(n).is_some_and(|t| is_word(t, Keyword::IF));
    if if_not_exists {
        if !(at(n + 1).is_some_and(|t| is_word(t, Keyword::NOT))
            && at(n + 2).is_some_and(|t| is_word(t, Keyword::EXISTS)))
        {
            return Err(sink_syntax(sql, at(n + 1), "IF NOT EXISTS"));
        }
        n += 3;
    }
    let name = at(n)
        .and_then(ident_name)
        .ok_or_else(|| sink_syntax(sql, at(n), "a sink name"))?;
    n += 1;
    // The options: the last `WITH ( ... )`, which ends the statement.
    let last = *words
        .last()
        .ok_or_else(|| sink_syntax(sql, None, "WITH (connector = ...)"))?;
    let open = (0..words.len())
        .rev()
        .map(|k| words[k])
        .find(|&i| tokens[i].token == Token::LParen && closing(&tokens, i) == Some(last))
        .ok_or_else(|| sink_syntax(sql, at(words.len() - 1), "WITH (connector = ...)"))?;
    let with = words
        .iter()
        .rposition(|&i| i < open)
        .map(|k| words[k])
        .filter(|&i| is_word(&tokens[i], Keyword::WITH))
        .ok_or_else(|| sink_syntax(sql, Some(&tokens[open]), "WITH (connector = ...)"))?;
    let options_sql = format!(
        "CREATE TABLE __sink (__c INT) {}",
        tokens[with..=last]
            .iter()
            .map(|t| t.token.to_string())
            .collect::<String>()
    );
    let mut options = sink_options(dialect, &options_sql)
        .ok_or_else(|| sink_syntax(sql, Some(&tokens[with]), "WITH (name = 'value', ...)"))??;
    options.extend(format);
    let body: Vec<usize> = words
        .iter()
        .copied()
        .filter(|&i| i < with)
        .skip(n)
        .collect();
    let query = match body.first().map(|&i| &tokens[i]) {
        Some(t) if is_word(t, Keyword::FROM) => {
            let relation = body
                .get(1)
                .map(|&i| &tokens[i])
                .and_then(ident_name)
                .filter(|_| body.len() == 2)
                .ok_or_else(|| {
                    sink_syntax(sql, body.get(1).map(|&i| &tokens[i]), "a relation name")
                })?;
            format!("SELECT * FROM \"{}\"", relation.replace('"', "\"\""))
        }
        Some(t) if is_word(t, Keyword::AS) && body.len() > 1 => {
            // Tokens were rewritten (Flink windows): parse the query from them, not the text.
            let query_tokens: Vec<TokenWithSpan> = tokens[body[1]..with].to_vec();
            let mut parser = Parser::new(dialect).with_tokens_with_locations(query_tokens);
            let mut stmt = parser
                .parse_statement()
                .map_err(|e| syntax_error(sql, e, Some(tokens[with].span.start)))?;
            let next = parser.peek_token();
            if next.token != Token::EOF {
                return Err(syntax_error(
                    sql,
                    ParserError::ParserError(format!("Expected: WITH, found: {next}")),
                    Some(next.span.start),
                ));
            }
            crate::window::rewrite(&mut stmt)?;
            stmt.to_string()
        }
        other => return Err(sink_syntax(sql, other, "FROM relation or AS query")),
    };
    Ok(Statement::CreateSink {
        name,
        if_not_exists,
        query,
        options,
        emit_on_window_close,
        explain: false,
    })
}

/// The options of `CREATE TABLE __sink (__c INT) WITH (...)`; `None` if it does not parse.
fn sink_options(
    dialect: &PostgreSqlDialect,
    sql: &str,
) -> Option<Result<std::collections::BTreeMap<String, String>>> {
    match Parser::new(dialect)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statement())
    {
        Ok(ast::Statement::CreateTable(create)) => {
            Some(crate::ddl::with_options(&create.table_options))
        }
        _ => None,
    }
}

/// Takes RisingWave's `FORMAT PLAIN | UPSERT | DEBEZIUM ENCODE JSON [(k = 'v', ...)]` off the end
/// of a CREATE SINK, as options `format`, `encode` and `k`.
fn take_sink_format(
    sql: &str,
    dialect: &PostgreSqlDialect,
    tokens: &mut Vec<TokenWithSpan>,
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut options = std::collections::BTreeMap::new();
    let words: Vec<usize> = significant(tokens).map(|(i, _)| i).collect();
    // The last FORMAT that follows the WITH clause's closing parenthesis.
    let Some(k) = (1..words.len()).rev().find(|&k| {
        is_bare(&tokens[words[k]], "format") && tokens[words[k - 1]].token == Token::RParen
    }) else {
        return Ok(options);
    };
    let word = |n: usize| words.get(n).map(|&i| &tokens[i]);
    let (Some(format), Some(encode)) = (
        word(k + 1).and_then(ident_name),
        word(k + 3)
            .filter(|_| word(k + 2).is_some_and(|t| is_bare(t, "encode")))
            .and_then(ident_name),
    ) else {
        let at = if word(k + 1).is_some() { k + 2 } else { k + 1 };
        return Err(sink_syntax(sql, word(at), "FORMAT format ENCODE encoding"));
    };
    if let Some(&open) = words.get(k + 4) {
        let close = (tokens[open].token == Token::LParen)
            .then(|| closing(tokens, open))
            .flatten()
            .filter(|&c| words.last() == Some(&c))
            .ok_or_else(|| sink_syntax(sql, word(k + 4), "end of statement"))?;
        let inner: String = tokens[open + 1..close]
            .iter()
            .map(|t| t.token.to_string())
            .collect();
        if !inner.trim().is_empty() {
            let parsed = sink_options(
                dialect,
                &format!("CREATE TABLE __sink (__c INT) WITH ({inner})"),
            )
            .ok_or_else(|| sink_syntax(sql, word(k + 4), "(name = 'value', ...)"))??;
            options.extend(parsed);
        }
    }
    options.insert("format".into(), format.to_lowercase());
    options.insert("encode".into(), encode.to_lowercase());
    tokens.truncate(words[k]);
    Ok(options)
}

/// `DROP SINK [IF EXISTS] name`.
fn drop_sink(sql: &str, tokens: &[TokenWithSpan]) -> Result<Statement> {
    let words: Vec<&TokenWithSpan> = significant(tokens).map(|(_, t)| t).collect();
    let if_exists = words.get(2).is_some_and(|t| is_word(t, Keyword::IF));
    let n = if if_exists {
        if !words.get(3).is_some_and(|t| is_word(t, Keyword::EXISTS)) {
            return Err(sink_syntax(sql, words.get(3).copied(), "IF EXISTS"));
        }
        4
    } else {
        2
    };
    let name = words
        .get(n)
        .copied()
        .and_then(ident_name)
        .ok_or_else(|| sink_syntax(sql, words.get(n).copied(), "a sink name"))?;
    if let Some(extra) = words.get(n + 1) {
        return Err(sink_syntax(sql, Some(extra), "end of statement"));
    }
    Ok(Statement::DropSink { name, if_exists })
}

/// Turns RisingWave's `FORMAT PLAIN ENCODE JSON [(k = 'v', ...)]` after a CREATE TABLE's WITH
/// clause into options of that clause: `format = 'plain', encode = 'json', k = 'v'`.
fn format_encode_to_options(dialect: &PostgreSqlDialect, tokens: &mut Vec<TokenWithSpan>) {
    let words: Vec<usize> = significant(tokens).map(|(i, _)| i).collect();
    let Some(k) = words.iter().position(|&i| is_bare(&tokens[i], "format")) else {
        return;
    };
    let (Some(&f), Some(&e), Some(&enc)) = (words.get(k + 1), words.get(k + 2), words.get(k + 3))
    else {
        return;
    };
    if !is_bare(&tokens[e], "encode") {
        return;
    }
    let name = |i: usize| match &tokens[i].token {
        Token::Word(w) => Some(w.value.to_lowercase()),
        _ => None,
    };
    let (Some(format), Some(encode)) = (name(f), name(enc)) else {
        return;
    };
    let mut extra = format!(", format = '{format}', encode = '{encode}'");
    let mut end = enc + 1;
    if let Some(&open) = words.get(k + 4)
        && tokens[open].token == Token::LParen
        && let Some(close) = closing(tokens, open)
    {
        let inner: String = tokens[open + 1..close]
            .iter()
            .map(|t| t.token.to_string())
            .collect();
        if !inner.trim().is_empty() {
            extra.push_str(", ");
            extra.push_str(&inner);
        }
        end = close + 1;
    }
    tokens.drain(words[k]..end);
    add_options(dialect, tokens, extra);
}

/// Adds `extra` (`, k = 'v', ...`) to a CREATE TABLE's WITH clause, or adds the clause.
fn add_options(dialect: &PostgreSqlDialect, tokens: &mut Vec<TokenWithSpan>, extra: String) {
    let with_open = tokens
        .iter()
        .position(|t| is_word(t, Keyword::WITH))
        .and_then(|w| next_significant(tokens, w))
        .filter(|&o| tokens[o].token == Token::LParen);
    let (at, text) = match with_open.and_then(|o| closing(tokens, o)) {
        Some(close) => (close, extra),
        None => {
            let last = tokens
                .iter()
                .rposition(|t| !is_trivia(&t.token))
                .map_or(tokens.len(), |i| i + 1);
            (last, format!(" WITH ({})", extra.trim_start_matches(", ")))
        }
    };
    if let Ok(new) = Tokenizer::new(dialect, &text).tokenize_with_location() {
        tokens.splice(at..at, new);
    }
}

/// The option `CREATE SOURCE` sets: the relation stores no rows; each job that reads it reads its
/// connector itself.
pub const SOURCE_OPTION: &str = "rivulet.source";

/// The option that says column `name` holds a record's metadata (its value names which: a
/// Kafka `partition`, `offset`, `timestamp`, `key`, `headers`).
pub const METADATA_OPTION: &str = "metadata.";

/// Takes the metadata columns out of a CREATE TABLE into options `'metadata.<column>' =
/// '<key>'`: Flink's `name type METADATA [FROM 'key'] [VIRTUAL]` (the column stays, its
/// METADATA clause goes) and RisingWave's `INCLUDE key [AS name]` after the column list (which
/// becomes a column, named and typed as RisingWave does).
fn take_metadata(dialect: &PostgreSqlDialect, tokens: &mut Vec<TokenWithSpan>) {
    let Some(open) = tokens.iter().position(|t| t.token == Token::LParen) else {
        return;
    };
    let Some(mut close) = closing(tokens, open) else {
        return;
    };
    let mut found: Vec<(String, String)> = Vec::new();
    // Flink: inside the column list, from METADATA to the end of the column.
    let mut i = open + 1;
    let mut depth = 0usize;
    let mut element_start = open + 1;
    while i < close {
        match &tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Comma if depth == 0 => element_start = i + 1,
            _ if depth == 0 && is_bare(&tokens[i], "metadata") => {
                let name =
                    significant(&tokens[element_start..i])
                        .next()
                        .and_then(|(_, t)| match &t.token {
                            Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
                            Token::Word(w) => Some(w.value.to_lowercase()),
                            _ => None,
                        });
                // The end of this column: the next top-level comma or the list's end.
                let mut end = i + 1;
                let mut d = 0usize;
                while end < close {
                    match tokens[end].token {
                        Token::LParen => d += 1,
                        Token::RParen => d = d.saturating_sub(1),
                        Token::Comma if d == 0 => break,
                        _ => {}
                    }
                    end += 1;
                }
                let words: Vec<&TokenWithSpan> =
                    significant(&tokens[i + 1..end]).map(|(_, t)| t).collect();
                let key = match words.as_slice() {
                    [from, key, ..] if is_word(from, Keyword::FROM) => match &key.token {
                        Token::SingleQuotedString(k) => Some(k.clone()),
                        _ => None,
                    },
                    _ => name.clone(),
                };
                if let (Some(name), Some(key)) = (name, key) {
                    found.push((name, key));
                    tokens.drain(i..end);
                    close -= end - i;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    // RisingWave: INCLUDE key [AS name] ... between the column list and WITH.
    let mut added = String::new();
    loop {
        let words: Vec<usize> = significant(&tokens[close + 1..])
            .map(|(j, _)| close + 1 + j)
            .take(4)
            .collect();
        let Some(&inc) = words.first() else { break };
        if !is_bare(&tokens[inc], "include") {
            break;
        }
        let Some(key) = words.get(1).and_then(|&k| match &tokens[k].token {
            Token::Word(w) => Some(w.value.to_lowercase()),
            _ => None,
        }) else {
            break;
        };
        let (name, end) = match (words.get(2), words.get(3)) {
            (Some(&a), Some(&n)) if is_word(&tokens[a], Keyword::AS) => {
                let name = match &tokens[n].token {
                    Token::Word(w) if w.quote_style.is_some() => w.value.clone(),
                    Token::Word(w) => w.value.to_lowercase(),
                    _ => break,
                };
                (name, n + 1)
            }
            _ => (format!("_rw_kafka_{key}"), words[1] + 1),
        };
        let sql_type = match key.as_str() {
            "partition" | "offset" | "topic" => "VARCHAR",
            "timestamp" => "TIMESTAMP WITH TIME ZONE",
            "key" => "BYTEA",
            _ => "JSONB",
        };
        added.push_str(&format!(", \"{}\" {sql_type}", name.replace('"', "\"\"")));
        found.push((name, key));
        tokens.drain(inc..end);
    }
    if !added.is_empty()
        && let Ok(new) = Tokenizer::new(dialect, &added).tokenize_with_location()
    {
        tokens.splice(close..close, new);
    }
    if found.is_empty() {
        return;
    }
    let extra: String = found
        .iter()
        .map(|(name, key)| {
            format!(
                ", '{METADATA_OPTION}{}' = '{}'",
                name.replace('\'', "''"),
                key.replace('\'', "''")
            )
        })
        .collect();
    add_options(dialect, tokens, extra);
}

/// Turns RisingWave's dotted option names in `WITH (...)`, such as `datagen.rows.per.second =
/// '10'`, into the quoted form sqlparser reads (`'datagen.rows.per.second' = '10'`).
fn quote_dotted_options(tokens: &mut Vec<TokenWithSpan>) {
    let Some(with) = tokens.iter().position(|t| is_word(t, Keyword::WITH)) else {
        return;
    };
    let Some(open) = next_significant(tokens, with) else {
        return;
    };
    if tokens[open].token != Token::LParen {
        return;
    }
    let Some(close) = closing(tokens, open) else {
        return;
    };
    // Option starts: right after `(` and after each `,` at depth 1.
    let mut starts = Vec::new();
    let mut depth = 0usize;
    for i in open..close {
        match tokens[i].token {
            Token::LParen => {
                depth += 1;
                if depth == 1 {
                    starts.extend(next_significant(tokens, i));
                }
            }
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Comma if depth == 1 => starts.extend(next_significant(tokens, i)),
            _ => {}
        }
    }
    for &start in starts.iter().rev() {
        let mut parts = Vec::new();
        let mut i = start;
        let mut end = None;
        while let Token::Word(w) = &tokens[i].token {
            parts.push(w.value.clone());
            match next_significant(tokens, i) {
                Some(j) if tokens[j].token == Token::Period => match next_significant(tokens, j) {
                    Some(k) => i = k,
                    None => break,
                },
                Some(j) if tokens[j].token == Token::Eq => {
                    end = Some(i);
                    break;
                }
                _ => break,
            }
        }
        if let Some(end) = end
            && parts.len() > 1
        {
            let span = tokens[start].span.union(&tokens[end].span);
            tokens.splice(
                start..=end,
                [TokenWithSpan::new(
                    Token::SingleQuotedString(parts.join(".")),
                    span,
                )],
            );
        }
    }
}

/// Removes a trailing `EMIT ON WINDOW CLOSE` from a (possibly EXPLAINed) CREATE MATERIALIZED VIEW.
fn take_emit_on_window_close(tokens: &mut Vec<TokenWithSpan>) -> bool {
    let words: Vec<(usize, &TokenWithSpan)> = significant(tokens).collect();
    let is_view = words
        .iter()
        .take(4)
        .any(|(_, t)| is_word(t, Keyword::MATERIALIZED));
    let n = words.len();
    if !is_view || n < 4 {
        return false;
    }
    let tail = &words[n - 4..];
    let matches = is_bare(tail[0].1, "emit")
        && is_word(tail[1].1, Keyword::ON)
        && is_word(tail[2].1, Keyword::WINDOW)
        && is_word(tail[3].1, Keyword::CLOSE);
    if matches {
        let from = tail[0].0;
        tokens.truncate(from);
    }
    matches
}

/// Index of the next significant token after `i`.
fn next_significant(tokens: &[TokenWithSpan], i: usize) -> Option<usize> {
    (i + 1..tokens.len()).find(|&j| !is_trivia(&tokens[j].token))
}

/// Index of the `)` closing the `(` at `open`.
fn closing(tokens: &[TokenWithSpan], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// Rewrites Flink's `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), args))` (and HOP, CUMULATE) into
/// `__flink_tumble(t, ts, args)`; anything that does not match exactly is left for the parser.
fn flink_windows(tokens: &mut Vec<TokenWithSpan>) {
    let mut i = 0;
    while i < tokens.len() {
        if let Some(done) = flink_window_at(tokens, i) {
            i = done;
        } else {
            i += 1;
        }
    }
}

fn flink_window_at(tokens: &mut Vec<TokenWithSpan>, i: usize) -> Option<usize> {
    if !is_word(&tokens[i], Keyword::TABLE) {
        return None;
    }
    let outer_open = next_significant(tokens, i)?;
    let func = next_significant(tokens, outer_open)?;
    let inner_open = next_significant(tokens, func)?;
    let inner_table = next_significant(tokens, inner_open)?;
    let Token::Word(w) = &tokens[func].token else {
        return None;
    };
    let kind = w.value.to_lowercase();
    if tokens[outer_open].token != Token::LParen
        || tokens[inner_open].token != Token::LParen
        || !is_word(&tokens[inner_table], Keyword::TABLE)
        || !matches!(kind.as_str(), "tumble" | "hop" | "cumulate" | "session")
    {
        return None;
    }
    if kind == "session" {
        move_partition_keys(tokens, inner_table, closing(tokens, inner_open)?)?;
    }
    let outer_close = closing(tokens, outer_open)?;
    // DESCRIPTOR ( col ) -> col
    let mut j = inner_table;
    let inner_close = closing(tokens, inner_open)?;
    let mut remove: Vec<usize> = vec![i, outer_open, inner_table, outer_close];
    while j < inner_close {
        if is_bare(&tokens[j], "descriptor") {
            let open = next_significant(tokens, j)?;
            if tokens[open].token == Token::LParen {
                let close = closing(tokens, open)?;
                remove.extend([j, open, close]);
                j = close;
            }
        }
        j += 1;
    }
    if let Token::Word(w) = &mut tokens[func].token {
        w.value = format!("{}{kind}", crate::window::FLINK_PREFIX);
        w.quote_style = None;
        w.keyword = Keyword::NoKeyword;
    }
    remove.sort_unstable();
    for &r in remove.iter().rev() {
        tokens.remove(r);
    }
    Some(func.saturating_sub(2))
}

/// In `SESSION(TABLE t PARTITION BY k1, k2, DESCRIPTOR(ts), gap)` (tokens `table..close`), moves
/// the partition keys to the end: `SESSION(TABLE t, DESCRIPTOR(ts), gap, k1, k2)`. `None` if the
/// shape is not that.
fn move_partition_keys(tokens: &mut Vec<TokenWithSpan>, table: usize, close: usize) -> Option<()> {
    let name = next_significant(tokens, table)?;
    let partition = next_significant(tokens, name)?;
    if !is_word(&tokens[partition], Keyword::PARTITION) {
        return Some(());
    }
    let by = next_significant(tokens, partition)?;
    if !is_word(&tokens[by], Keyword::BY) {
        return None;
    }
    let descriptor = (by..close).find(|&j| is_bare(&tokens[j], "descriptor"))?;
    // The comma before DESCRIPTOR ends the key list.
    let comma = (by..descriptor)
        .rev()
        .find(|&j| tokens[j].token == Token::Comma)?;
    let keys: Vec<TokenWithSpan> = tokens[by + 1..comma].to_vec();
    let comma_token = tokens[comma].clone();
    // `t PARTITION BY keys , DESCRIPTOR ... )` -> `t , DESCRIPTOR ... , keys )`
    let mut moved: Vec<TokenWithSpan> = tokens[comma..close].to_vec();
    moved.push(comma_token);
    moved.extend(keys);
    tokens.splice(partition..close, moved);
    Some(())
}

/// Removes the computed columns (`name AS expr`, `name type AS expr`) from a CREATE TABLE's
/// column list, with the comma that joins each to the list.
fn take_computed(sql: &str, tokens: &mut Vec<TokenWithSpan>) -> Result<Vec<ComputedClause>> {
    let mut out = Vec::new();
    loop {
        let Some(open) = tokens.iter().position(|t| t.token == Token::LParen) else {
            return Ok(out);
        };
        let Some(close) = closing(tokens, open) else {
            return Ok(out);
        };
        // Elements of the column list: token ranges between top-level commas.
        let mut elements = Vec::new();
        let (mut depth, mut start) = (0usize, open + 1);
        for (j, t) in tokens.iter().enumerate().take(close).skip(open + 1) {
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => depth = depth.saturating_sub(1),
                Token::Comma if depth == 0 => {
                    elements.push(start..j);
                    start = j + 1;
                }
                _ => {}
            }
        }
        elements.push(start..close);
        let found = elements.iter().enumerate().find_map(|(e, range)| {
            let words: Vec<usize> = range
                .clone()
                .filter(|&j| !is_trivia(&tokens[j].token))
                .collect();
            let first = *words.first()?;
            let Token::Word(name) = &tokens[first].token else {
                return None;
            };
            if name.quote_style.is_none()
                && matches!(
                    name.keyword,
                    Keyword::PRIMARY
                        | Keyword::CONSTRAINT
                        | Keyword::UNIQUE
                        | Keyword::FOREIGN
                        | Keyword::CHECK
                )
            {
                return None;
            }
            // `AS` outside parentheses, not Postgres' `GENERATED ALWAYS AS (...)` nor
            // `GENERATED { ALWAYS | BY DEFAULT } AS IDENTITY`.
            let mut depth = 0usize;
            let mut as_at = None;
            for (n, &j) in words.iter().enumerate() {
                match tokens[j].token {
                    Token::LParen => depth += 1,
                    Token::RParen => depth = depth.saturating_sub(1),
                    _ if depth == 0 && n > 0 && is_word(&tokens[j], Keyword::AS) => {
                        let after_always = is_word(&tokens[words[n - 1]], Keyword::ALWAYS)
                            || is_word(&tokens[words[n - 1]], Keyword::DEFAULT)
                                && (words.get(n + 1))
                                    .is_some_and(|&k| is_word(&tokens[k], Keyword::IDENTITY));
                        if !after_always {
                            as_at = Some(n);
                        }
                        break;
                    }
                    _ => {}
                }
            }
            let n = as_at?;
            Some((
                e,
                words[0],
                words[1..n].to_vec(),
                words.get(n + 1..)?.to_vec(),
            ))
        });
        let Some((e, name_at, type_words, expr_words)) = found else {
            return Ok(out);
        };
        let position = char_position(sql, tokens[name_at].span.start);
        let text = |from: usize, to: usize| {
            let a = byte_offset(sql, tokens[from].span.start).unwrap_or(0);
            let b = byte_offset(sql, tokens[to].span.end).unwrap_or(sql.len());
            sql.get(a..b).unwrap_or_default().trim().to_string()
        };
        let (Some(&first), Some(&last)) = (expr_words.first(), expr_words.last()) else {
            return Err(PlanError::Syntax {
                message: "syntax error in computed column: an expression must follow AS".into(),
                detail: None,
                position,
            });
        };
        let mut expr = text(first, last);
        if let (Some(&t0), Some(&t1)) = (type_words.first(), type_words.last()) {
            expr = format!("CAST(({expr}) AS {})", text(t0, t1));
        }
        let name = match &tokens[name_at].token {
            Token::Word(w) if w.quote_style.is_some() => w.value.clone(),
            Token::Word(w) => w.value.to_lowercase(),
            _ => String::new(),
        };
        out.push(ComputedClause {
            name,
            expr,
            position,
        });
        // Remove the element and the comma after it, or (when it is last) the one before it.
        let range = elements[e].clone();
        let cut = if e + 1 < elements.len() {
            range.start..range.end + 1
        } else if e > 0 {
            elements[e - 1].end..range.end
        } else {
            return Err(PlanError::Unsupported(
                "a table with only computed columns".into(),
            ));
        };
        tokens.drain(cut);
    }
}

/// Removes `WATERMARK FOR col AS expr` (and the comma that joins it to the column list) from a
/// CREATE TABLE's tokens.
fn take_watermark(sql: &str, tokens: &mut Vec<TokenWithSpan>) -> Result<Option<WatermarkClause>> {
    let mut depth = 0usize;
    let mut start = None;
    for (i, t) in tokens.iter().enumerate() {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth == 1 && is_bare(t, "watermark") {
            let next = tokens[i + 1..].iter().find(|t| !is_trivia(&t.token));
            if next.is_some_and(|n| is_word(n, Keyword::FOR)) {
                start = Some(i);
                break;
            }
        }
    }
    let Some(start) = start else {
        return Ok(None);
    };
    let position = char_position(sql, tokens[start].span.start);
    let bad = |message: &str| PlanError::Syntax {
        message: message.to_string(),
        detail: Some("Expected: WATERMARK FOR column AS expression".into()),
        position,
    };
    let rest: Vec<(usize, &TokenWithSpan)> =
        significant(tokens).filter(|(i, _)| *i > start).collect();
    // rest[0] is FOR; then the column, AS, and the expression up to `,` or `)` at this depth.
    let column = match rest.get(1).map(|(_, t)| &t.token) {
        Some(Token::Word(w)) => match w.quote_style {
            Some(_) => w.value.clone(),
            None => w.value.to_lowercase(),
        },
        _ => {
            return Err(bad(
                "syntax error in WATERMARK clause: a column name must follow FOR",
            ));
        }
    };
    if !rest.get(2).is_some_and(|(_, t)| is_word(t, Keyword::AS)) {
        return Err(bad(
            "syntax error in WATERMARK clause: AS must follow the column",
        ));
    }
    let mut depth = 0usize;
    let mut end = None;
    let mut last_expr = None;
    for &(i, t) in rest.iter().skip(3) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => {
                end = Some((i, false));
                break;
            }
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                end = Some((i, true));
                break;
            }
            _ => {}
        }
        last_expr = Some(i);
    }
    let (Some((end, comma_after)), Some(last_expr)) = (end, last_expr) else {
        return Err(bad(
            "syntax error in WATERMARK clause: an expression must follow AS",
        ));
    };
    let first_expr = rest.get(3).map(|(i, _)| *i).unwrap_or(last_expr);
    let from = byte_offset(sql, tokens[first_expr].span.start).unwrap_or(0);
    let to = byte_offset(sql, tokens[last_expr].span.end).unwrap_or(sql.len());
    let expr = sql.get(from..to).unwrap_or_default().trim().to_string();
    // Remove the clause with the comma after it, or (when it is last) the comma before it.
    let range = if comma_after {
        start..end + 1
    } else {
        let comma = tokens[..start]
            .iter()
            .rposition(|t| !is_trivia(&t.token))
            .filter(|&c| tokens[c].token == Token::Comma)
            .ok_or_else(|| bad("a table needs columns besides its WATERMARK clause"))?;
        comma..end
    };
    tokens.drain(range);
    Ok(Some(WatermarkClause {
        column,
        expr,
        position,
    }))
}

/// The source text covered by a statement's tokens.
fn statement_text(sql: &str, tokens: &[TokenWithSpan]) -> String {
    let first = tokens.iter().find(|t| !is_trivia(&t.token));
    let last = tokens.iter().rev().find(|t| !is_trivia(&t.token));
    match (first, last) {
        (Some(f), Some(l)) => {
            let start = byte_offset(sql, f.span.start).unwrap_or(0);
            let end = byte_offset(sql, l.span.end).unwrap_or(sql.len());
            sql.get(start..end).unwrap_or(sql).trim().to_string()
        }
        _ => String::new(),
    }
}

/// Byte offset of a 1-based line/column location (columns count characters).
fn byte_offset(sql: &str, loc: Location) -> Option<usize> {
    if loc.line == 0 {
        return None;
    }
    let mut line = 1;
    let mut col = 1;
    for (i, ch) in sql.char_indices() {
        if line == loc.line && col == loc.column {
            return Some(i);
        }
        if ch == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    (line == loc.line && col == loc.column).then_some(sql.len())
}

/// 1-based character position of a location in `sql`, as the Postgres ErrorResponse wants it.
/// The 1-based character position of the one string constant in `sql` whose text is `text`
/// (`'abc'` for `abc`), or `None` when there is none or more than one: where an error about a
/// value points when only the value is known (`invalid input syntax for type integer: "abc"`).
pub fn string_constant_position(sql: &str, text: &str) -> Option<usize> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    let mut found = tokens.iter().filter(|t| match &t.token {
        Token::SingleQuotedString(s)
        | Token::EscapedStringLiteral(s)
        | Token::NationalStringLiteral(s)
        | Token::UnicodeStringLiteral(s) => s == text,
        Token::DollarQuotedString(d) => d.value == text,
        _ => false,
    });
    let first = found.next()?;
    if found.next().is_some() {
        return None;
    }
    char_position(sql, first.span.start)
}

pub fn char_position(sql: &str, loc: Location) -> Option<usize> {
    byte_offset(sql, loc).map(|b| sql[..b].chars().count() + 1)
}

/// Turns a sqlparser error into Postgres' `syntax error at or near "…"`, keeping sqlparser's
/// expectation as the detail. `end` is where the statement's last token ends (for "end of input").
fn syntax_error(sql: &str, err: ParserError, end: Option<Location>) -> PlanError {
    let raw = match err {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
        ParserError::RecursionLimitExceeded => {
            return PlanError::Syntax {
                message: "statement is nested too deeply".into(),
                detail: None,
                position: None,
            };
        }
    };
    let (text, loc) = split_location(&raw);
    let found = text
        .rsplit_once("found: ")
        .map(|(_, f)| f.trim().to_string());
    let (message, position) = match found.as_deref() {
        Some("EOF") => (
            "syntax error at end of input".to_string(),
            end.and_then(|e| char_position(sql, e)),
        ),
        Some(tok) => (
            format!("syntax error at or near \"{tok}\""),
            loc.and_then(|l| char_position(sql, l)),
        ),
        None => (
            format!("syntax error: {text}"),
            loc.and_then(|l| char_position(sql, l)),
        ),
    };
    let position = position.or_else(|| end.and_then(|e| char_position(sql, e)));
    PlanError::Syntax {
        message,
        detail: Some(text.to_string()),
        position,
    }
}

/// Splits sqlparser's `"… at Line: 3, Column: 7"` suffix off a message.
fn split_location(msg: &str) -> (&str, Option<Location>) {
    let Some((text, tail)) = msg.rsplit_once(" at Line: ") else {
        return (msg, None);
    };
    let Some((line, column)) = tail.split_once(", Column: ") else {
        return (msg, None);
    };
    match (line.trim().parse(), column.trim().parse()) {
        (Ok(line), Ok(column)) => (text, Some(Location { line, column })),
        _ => (msg, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(sql: &str) -> (String, Option<usize>) {
        match parse_sql(sql) {
            Err(PlanError::Syntax {
                message, position, ..
            }) => (message, position),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn splits_statements_but_not_strings() {
        let parsed = parse_sql("SELECT 'a;b'; ;\n SELECT 2;").unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].text, "SELECT 'a;b'");
        assert_eq!(parsed[1].text, "SELECT 2");
    }

    #[test]
    fn extensions() {
        let parsed = parse_sql("flush; CREATE TABLE t (a INT) APPEND ONLY").unwrap();
        assert_eq!(parsed[0].statement, Statement::Flush);
        // EXPLAIN CREATE SINK is the sink's statement, marked to be explained.
        let explained =
            parse_sql("EXPLAIN CREATE SINK s AS SELECT a FROM t WITH (connector = 'x')");
        assert!(matches!(
            &explained.unwrap()[0].statement,
            Statement::CreateSink { name, query, explain: true, .. }
                if name == "s" && query == "SELECT a FROM t"
        ));
        assert!(matches!(
            parsed[1].statement,
            Statement::Sql {
                append_only: true,
                ..
            }
        ));
        for (sql, expr) in [
            (
                "CREATE TABLE b (ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH ('a' = 'b')",
                "ts - INTERVAL '5' SECOND",
            ),
            (
                "CREATE TABLE b (WATERMARK FOR Ts AS (Ts - INTERVAL '5 seconds'), Ts TIMESTAMP) APPEND ONLY",
                "(Ts - INTERVAL '5 seconds')",
            ),
        ] {
            let parsed = parse_sql(sql).unwrap();
            let Statement::Sql {
                watermark: Some(w),
                stmt,
                ..
            } = &parsed[0].statement
            else {
                panic!("no watermark in {sql}");
            };
            assert_eq!((w.column.as_str(), w.expr.as_str()), ("ts", expr));
            assert!(
                stmt.to_string().starts_with("CREATE TABLE b (ts TIMESTAMP")
                    || stmt.to_string().starts_with("CREATE TABLE b (Ts TIMESTAMP"),
                "{stmt}"
            );
        }
        assert!(parse_sql("CREATE TABLE b (ts TIMESTAMP, WATERMARK FOR ts)").is_err());
        // `append` and `only` as column names are left alone outside CREATE TABLE ... APPEND ONLY.
        assert!(matches!(
            parse_sql("SELECT 1 AS append").unwrap()[0].statement,
            Statement::Sql {
                append_only: false,
                ..
            }
        ));
    }

    #[test]
    fn metadata_columns_become_options() {
        let text = |sql: &str| {
            let parsed = parse_sql(sql).unwrap();
            let Statement::Sql { stmt, .. } = &parsed[0].statement else {
                panic!("not sql");
            };
            stmt.to_string()
        };
        let flink = text(
            "CREATE TABLE b (a BIGINT, part INT METADATA FROM 'partition' VIRTUAL, \
             off BIGINT METADATA FROM 'offset', \"timestamp\" TIMESTAMP(3) METADATA, \
             WATERMARK FOR a AS a) WITH ('connector' = 'kafka')",
        );
        assert!(
            flink.contains("(a BIGINT, part INT, off BIGINT, \"timestamp\" TIMESTAMP(3))"),
            "{flink}"
        );
        for opt in [
            "'metadata.part' = 'partition'",
            "'metadata.off' = 'offset'",
            "'metadata.timestamp' = 'timestamp'",
        ] {
            assert!(flink.contains(opt), "{flink}");
        }
        let rw = text(
            "CREATE TABLE u (id INT) INCLUDE partition AS p INCLUDE offset \
             WITH (connector = 'kafka', topic = 'u') FORMAT PLAIN ENCODE JSON",
        );
        assert!(
            rw.contains("(id INT, \"p\" VARCHAR, \"_rw_kafka_offset\" VARCHAR)"),
            "{rw}"
        );
        assert!(rw.contains("'metadata.p' = 'partition'"), "{rw}");
        assert!(
            rw.contains("'metadata._rw_kafka_offset' = 'offset'"),
            "{rw}"
        );
        assert!(rw.contains("encode = 'json'"), "{rw}");
    }

    #[test]
    fn computed_columns_leave_the_column_list() {
        let parsed = parse_sql(
            "CREATE TABLE t (a INT, pt AS PROCTIME(), b BIGINT AS a * (2 + 1), \
             g INT GENERATED ALWAYS AS (a) STORED, c TEXT)",
        )
        .unwrap();
        let Statement::Sql { stmt, computed, .. } = &parsed[0].statement else {
            panic!("not sql");
        };
        let found: Vec<(&str, &str)> = computed
            .iter()
            .map(|c| (c.name.as_str(), c.expr.as_str()))
            .collect();
        assert_eq!(
            found,
            vec![("pt", "PROCTIME()"), ("b", "CAST((a * (2 + 1)) AS BIGINT)")]
        );
        // Postgres' generated column is left for sqlparser (and refused by the DDL).
        assert!(
            stmt.to_string()
                .contains("(a INT, g INT GENERATED ALWAYS AS (a) STORED, c TEXT)"),
            "{stmt}"
        );
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        assert_eq!(
            position("SELEC 1"),
            ("syntax error at or near \"SELEC\"".into(), Some(1))
        );
        assert_eq!(
            position("SELECT 1;\nSELECT * FROM t t2 t3"),
            ("syntax error at or near \"t3\"".into(), Some(30))
        );
        assert_eq!(
            position("SELECT (1"),
            ("syntax error at end of input".into(), Some(10))
        );
        let (msg, _) = position("SELECT 'unterminated");
        assert!(msg.contains("Unterminated"), "{msg}");
    }
}
