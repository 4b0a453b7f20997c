//! `MATCH_RECOGNIZE` (SQL:2016 row pattern recognition, Flink's and RisingWave's spelling) in
//! views and sinks.
//!
//! **Parsing.** The Postgres grammar has no `MATCH_RECOGNIZE`: [`take`] cuts each clause out of
//! the statement's tokens and parses it with sqlparser's generic dialect, which has it, and
//! [`restore`] puts it back around the table it followed once the rest of the statement is
//! parsed as Postgres. Two clauses sqlparser lacks are rewritten first and kept as definitions of
//! reserved variables, so that the statement prints back (a view's stored query) with them: Flink's `WITHIN <interval>` after `PATTERN
//! (...)` becomes `DEFINE ..., _within AS <interval>`, and Rivulet's `ONE ROW PER MATCH WITH
//! TIMEOUT ROWS` becomes `_timeout_rows AS TRUE`.
//!
//! **Planning.** DataFusion does not plan `MATCH_RECOGNIZE` either. [`prepare`] replaces each one
//! by a call of a table function registered for the statement, whose table
//! ([`MatchRecognizeTable`]) has the clause's output columns and carries the planned input query
//! and the compiled clause. The streaming planner finds it in the plan's table scan and lowers
//! it to a `MatchRecognize` operator behind a hash exchange on the partition columns.
//!
//! **Expressions.** `DEFINE` conditions and `MEASURES` are rewritten into plain expressions over
//! *terms* (see `rivulet_engine::operator::recognize::eval`): `B.price` (the last row mapped to
//! `B`; the current row while `B` is being defined), `price` (the current row), `PREV(B.price,
//! n)`, `FIRST`/`LAST(A.price, n)`, `COUNT/SUM/AVG/MIN/MAX` over a variable's rows,
//! `CLASSIFIER()`, `MATCH_NUMBER()` and Flink's `MATCH_ROWTIME()` (the event time of the match's
//! last row) each become one term column, and DataFusion plans the rest. In `MEASURES`, `RUNNING`
//! (the default) and `FINAL` may precede a navigation or an aggregate (`FINAL LAST(B.price)`):
//! `FINAL` reads the whole match, which differs with `ALL ROWS PER MATCH`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionImpl, TableProvider};
use datafusion::common::DFSchema;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    self, AfterMatchSkip, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    MatchRecognizePattern, MatchRecognizeSymbol, ObjectName, ObjectNamePart, RepetitionQuantifier,
    RowsPerMatch, TableFactor, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Word};
use rivulet_engine::operator::recognize::eval::{Anchor, Compiled, Term, TermAgg, term_type};
use rivulet_engine::operator::recognize::program::{MAX_PERMUTE, Pattern};
use rivulet_engine::operator::recognize::{RecognizeSpec, RowsPerMatch as Rows, Skip};

use crate::error::{PlanError, Result};

/// The reserved variable holding `WITHIN`'s interval.
pub const WITHIN: &str = "_within";
/// `FINAL LAST(x)` is parsed as a call of `_final_last(x)`.
const FINAL_PREFIX: &str = "_final_";

/// Most rows a `PREV` or `NEXT` may reach (each partition keeps that many rows around).
const MAX_NAVIGATION: u32 = 100_000;
/// The reserved variable saying `WITH TIMEOUT ROWS`.
pub const TIMEOUT_ROWS: &str = "_timeout_rows";
/// The column of timeout rows that says a row is one.
pub const TIMED_OUT: &str = "timed_out";
/// Table functions standing for a statement's `MATCH_RECOGNIZE` clauses are named this, then a
/// number.
const FUNCTION: &str = "__rivulet_match_recognize_";

fn is_word(t: &TokenWithSpan, word: &str) -> bool {
    matches!(&t.token, Token::Word(Word { value, quote_style: None, .. }) if value.eq_ignore_ascii_case(word))
}

fn is_trivia(t: &TokenWithSpan) -> bool {
    matches!(t.token, Token::Whitespace(_) | Token::EOF)
}

fn word(value: &str, keyword: Keyword) -> TokenWithSpan {
    TokenWithSpan::new(
        Token::Word(Word {
            value: value.into(),
            quote_style: None,
            keyword,
        }),
        Span::empty(),
    )
}

fn space() -> TokenWithSpan {
    TokenWithSpan::new(
        Token::Whitespace(datafusion::sql::sqlparser::tokenizer::Whitespace::Space),
        Span::empty(),
    )
}

/// A `MATCH_RECOGNIZE` taken out of the tokens: where the table it reads is named (its name's
/// last word, or its alias), and the clause as parsed over a stand-in table.
pub struct Taken {
    table: Location,
    clause: TableFactor,
}

/// Takes every `MATCH_RECOGNIZE (...)` out of `tokens`, parsing each with sqlparser's generic
/// dialect (see the module documentation). The clause must follow a table's name (or alias).
pub fn take(tokens: &mut Vec<TokenWithSpan>) -> Result<Vec<Taken>> {
    let mut taken = Vec::new();
    let mut at = 0;
    while at < tokens.len() {
        if !is_word(&tokens[at], "match_recognize") {
            at += 1;
            continue;
        }
        let Some(open) = (at + 1..tokens.len()).find(|&i| !is_trivia(&tokens[i])) else {
            break;
        };
        if tokens[open].token != Token::LParen {
            at += 1;
            continue;
        }
        let before = (0..at).rev().find(|&i| !is_trivia(&tokens[i]));
        let Some(table) = before
            .filter(|&i| matches!(tokens[i].token, Token::Word(_)))
            .map(|i| tokens[i].span.start)
        else {
            return Err(PlanError::Unsupported(
                "MATCH_RECOGNIZE after a subquery (name a table, a view or a WITH query)".into(),
            ));
        };
        let mut depth = 0;
        let mut close = None;
        for (i, t) in tokens.iter().enumerate().skip(open) {
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(close) = close else { break };
        let mut clause: Vec<TokenWithSpan> = tokens.drain(at..=close).collect();
        prepare_clause(&mut clause);
        let mut query = vec![
            word("SELECT", Keyword::SELECT),
            space(),
            TokenWithSpan::new(Token::Mul, Span::empty()),
            space(),
            word("FROM", Keyword::FROM),
            space(),
            word("t", Keyword::NoKeyword),
            space(),
        ];
        query.extend(clause);
        let stmt = Parser::new(&GenericDialect {})
            .with_tokens_with_locations(query)
            .parse_statement()
            .map_err(|e| syntax(format!("in MATCH_RECOGNIZE: {e}")))?;
        let ast::Statement::Query(q) = stmt else {
            return Err(syntax("MATCH_RECOGNIZE does not parse".into()));
        };
        let ast::SetExpr::Select(select) = *q.body else {
            return Err(syntax("MATCH_RECOGNIZE does not parse".into()));
        };
        let Some(from) = select.from.into_iter().next() else {
            return Err(syntax("MATCH_RECOGNIZE does not parse".into()));
        };
        taken.push(Taken {
            table,
            clause: from.relation,
        });
    }
    Ok(taken)
}

/// Rewrites the tokens of one `MATCH_RECOGNIZE ( ... )`: Flink's `WITHIN` and `WITH TIMEOUT
/// ROWS` become reserved DEFINEs, and Postgres' `?` operator token the quantifier.
fn prepare_clause(tokens: &mut Vec<TokenWithSpan>) {
    mark_semantics(tokens);
    let Some(open) = tokens.iter().position(|t| t.token == Token::LParen) else {
        return;
    };
    let mut close = tokens.len() - 1;
    let mut extra: Vec<Vec<TokenWithSpan>> = Vec::new();
    // `?` is an operator token in Postgres; the pattern grammar wants a placeholder.
    for t in &mut tokens[open..close] {
        if t.token == Token::Question {
            t.token = Token::Placeholder("?".into());
        }
    }
    // WITH TIMEOUT ROWS
    let words: Vec<usize> = (open..close).filter(|&i| !is_trivia(&tokens[i])).collect();
    if let Some(w) = words.windows(3).find(|w| {
        is_word(&tokens[w[0]], "with")
            && is_word(&tokens[w[1]], "timeout")
            && is_word(&tokens[w[2]], "rows")
    }) {
        let (a, b) = (w[0], w[2]);
        tokens.drain(a..=b);
        close -= b + 1 - a;
        extra.push(vec![
            word(TIMEOUT_ROWS, Keyword::NoKeyword),
            space(),
            word("AS", Keyword::AS),
            space(),
            word("TRUE", Keyword::TRUE),
        ]);
    }
    // WITHIN <interval>, up to DEFINE or the end of the clause.
    let words: Vec<usize> = (open..close).filter(|&i| !is_trivia(&tokens[i])).collect();
    if let Some(p) = words.iter().position(|&i| is_word(&tokens[i], "within")) {
        let start = words[p];
        let end = words[p + 1..]
            .iter()
            .copied()
            .find(|&i| is_word(&tokens[i], "define"))
            .unwrap_or(close);
        let mut interval: Vec<TokenWithSpan> = tokens.drain(start..end).skip(1).collect();
        close -= end - start;
        while interval.last().is_some_and(is_trivia) {
            interval.pop();
        }
        let mut def = vec![
            word(WITHIN, Keyword::NoKeyword),
            space(),
            word("AS", Keyword::AS),
            space(),
        ];
        def.extend(interval);
        extra.push(def);
    }
    if !extra.is_empty() {
        let has_define = (open..close).any(|i| is_word(&tokens[i], "define"));
        let mut add = Vec::new();
        if has_define {
            add.push(TokenWithSpan::new(Token::Comma, Span::empty()));
        } else {
            add.push(word("DEFINE", Keyword::DEFINE));
        }
        for (i, def) in extra.into_iter().enumerate() {
            if i > 0 {
                add.push(TokenWithSpan::new(Token::Comma, Span::empty()));
            }
            add.push(space());
            add.extend(def);
        }
        add.push(space());
        tokens.splice(close..close, add);
    }
}

/// `RUNNING` and `FINAL` before a function call (`FINAL LAST(B.price)`): `RUNNING`, the default,
/// is dropped; `FINAL` joins the function's name (`_final_last(B.price)`), which the measure's
/// compiler reads back.
fn mark_semantics(tokens: &mut Vec<TokenWithSpan>) {
    let mut i = 0;
    while i < tokens.len() {
        let final_ = is_word(&tokens[i], "final");
        if !(final_ || is_word(&tokens[i], "running")) {
            i += 1;
            continue;
        }
        let mut next = (i + 1..tokens.len()).filter(|&j| !is_trivia(&tokens[j]));
        let (Some(f), Some(paren)) = (next.next(), next.next()) else {
            break;
        };
        let call = matches!(&tokens[f].token, Token::Word(w) if w.quote_style.is_none())
            && tokens[paren].token == Token::LParen;
        if !call {
            i += 1;
            continue;
        }
        if final_ && let Token::Word(w) = &mut tokens[f].token {
            w.value = format!("{FINAL_PREFIX}{}", w.value);
            w.keyword = Keyword::NoKeyword;
        }
        tokens.drain(i..f);
    }
}

/// Puts what [`take`] took back onto the parsed statement: the table factor it followed becomes
/// the clause's input, and the factor's alias the clause's.
pub fn restore(stmt: &mut ast::Statement, taken: Vec<Taken>) -> Result<()> {
    if taken.is_empty() {
        return Ok(());
    }
    struct Restore {
        taken: Vec<(Location, Option<TableFactor>)>,
    }
    impl VisitorMut for Restore {
        type Break = ();
        fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table { name, alias, .. } = factor else {
                return ControlFlow::Continue(());
            };
            let Some(ObjectNamePart::Identifier(last)) = name.0.last() else {
                return ControlFlow::Continue(());
            };
            let found = self.taken.iter_mut().find(|(at, clause)| {
                clause.is_some()
                    && (*at == last.span.start
                        || alias.as_ref().is_some_and(|a| *at == a.name.span.start))
            });
            let Some(mut clause) = found.and_then(|(_, clause)| clause.take()) else {
                return ControlFlow::Continue(());
            };
            let alias = alias.take();
            if let TableFactor::MatchRecognize {
                table,
                alias: clause_alias,
                ..
            } = &mut clause
            {
                *clause_alias = alias;
                let placeholder = table_factor(ObjectName(Vec::new()), None, None);
                **table = std::mem::replace(factor, placeholder);
                *factor = clause;
            }
            ControlFlow::Continue(())
        }
    }
    let mut restore = Restore {
        taken: taken
            .into_iter()
            .map(|t| (t.table, Some(t.clause)))
            .collect(),
    };
    let _ = stmt.visit(&mut restore);
    if restore.taken.iter().any(|(_, c)| c.is_some()) {
        return Err(PlanError::Unsupported(
            "MATCH_RECOGNIZE after something other than a table name".into(),
        ));
    }
    Ok(())
}

/// A `MATCH_RECOGNIZE` clause as a table: its output columns, the planned input and the
/// compiled clause (without the choice of event-time order, which the streaming planner makes).
#[derive(Debug)]
pub struct MatchRecognizeTable {
    pub input: LogicalPlan,
    pub spec: RecognizeSpec,
    /// The output column that carries event time, if the clause has one: `MATCH_ROWTIME()` of
    /// one row per match, or the input's time column of all rows per match (only with
    /// `WITHIN`, which bounds how far behind the watermark a match can be emitted).
    pub rowtime: Option<usize>,
}

#[async_trait]
impl TableProvider for MatchRecognizeTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.spec.output)
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::NotImplemented(
            "MATCH_RECOGNIZE in an ad-hoc query is not supported: it runs in materialized views \
             and sinks (CREATE MATERIALIZED VIEW ... AS SELECT ... MATCH_RECOGNIZE (...))"
                .into(),
        ))
    }
}

#[derive(Debug)]
struct Fixed(Arc<MatchRecognizeTable>);

impl TableFunctionImpl for Fixed {
    fn call(&self, _args: &[Expr]) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        Ok(Arc::clone(&self.0) as Arc<dyn TableProvider>)
    }
}

/// A `MATCH_RECOGNIZE` taken out of a statement.
struct Clause {
    factor: TableFactor,
}

struct Collect {
    clauses: Vec<Clause>,
}

impl VisitorMut for Collect {
    type Break = ();

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::MatchRecognize { alias, .. } = factor {
            let name = format!("{FUNCTION}{}", self.clauses.len());
            let name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]);
            let args = ast::TableFunctionArgs {
                args: Vec::new(),
                settings: None,
            };
            let replacement = table_factor(name, alias.clone(), Some(args));
            let factor = std::mem::replace(factor, replacement);
            self.clauses.push(Clause { factor });
        }
        ControlFlow::Continue(())
    }
}

/// A plain table factor: `name`, or a call of table function `name` with `args`.
fn table_factor(
    name: ObjectName,
    alias: Option<ast::TableAlias>,
    args: Option<ast::TableFunctionArgs>,
) -> TableFactor {
    TableFactor::Table {
        name,
        alias,
        args,
        with_hints: Vec::new(),
        version: None,
        with_ordinality: false,
        partitions: Vec::new(),
        json_path: None,
        sample: None,
        index_hints: Vec::new(),
    }
}

/// Whether `stmt` has a `MATCH_RECOGNIZE`.
pub fn has_match_recognize(stmt: &ast::Statement) -> bool {
    stmt.to_string().to_uppercase().contains("MATCH_RECOGNIZE")
}

/// Replaces each `MATCH_RECOGNIZE` of `stmt` by a table function registered in `ctx` (see the
/// module documentation). Returns the statement to plan and the functions to deregister after.
pub async fn prepare(
    ctx: &SessionContext,
    stmt: &ast::Statement,
) -> Result<(ast::Statement, Vec<String>)> {
    let mut stmt = stmt.clone();
    if !has_match_recognize(&stmt) {
        return Ok((stmt, Vec::new()));
    }
    let mut collect = Collect {
        clauses: Vec::new(),
    };
    let _ = stmt.visit(&mut collect);
    let mut names = Vec::new();
    for (i, clause) in collect.clauses.into_iter().enumerate() {
        let table = plan_clause(ctx, &clause.factor).await?;
        let name = format!("{FUNCTION}{i}");
        ctx.register_udtf(&name, Arc::new(Fixed(Arc::new(table))));
        names.push(name);
    }
    Ok((stmt, names))
}

fn syntax(message: String) -> PlanError {
    PlanError::Syntax {
        message,
        detail: None,
        position: None,
    }
}

/// The variable `id` names: unquoted names compare case-insensitively.
fn find_var(vars: &[String], id: &Ident) -> Option<usize> {
    vars.iter().position(|v| match id.quote_style {
        Some(_) => *v == id.value,
        None => v.eq_ignore_ascii_case(&id.value),
    })
}

/// Postgres' folding of an identifier.
fn fold(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

async fn plan_clause(ctx: &SessionContext, factor: &TableFactor) -> Result<MatchRecognizeTable> {
    let TableFactor::MatchRecognize {
        table,
        partition_by,
        order_by,
        measures,
        rows_per_match,
        after_match_skip,
        pattern,
        symbols,
        alias: _,
    } = factor
    else {
        return Err(PlanError::Unsupported("this MATCH_RECOGNIZE".into()));
    };
    let state = ctx.state();
    // The input, as its own query.
    let input_sql = format!("SELECT * FROM {table}");
    let parsed = crate::parse::parse_sql(&input_sql)?;
    let Some(crate::parse::Statement::Sql { stmt, .. }) =
        parsed.into_iter().next().map(|p| p.statement)
    else {
        return Err(PlanError::Unsupported("this MATCH_RECOGNIZE input".into()));
    };
    let (stmt, inner) = Box::pin(prepare(ctx, &stmt)).await?;
    let input = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(
            stmt,
        )))
        .await;
    for name in inner {
        ctx.deregister_udtf(&name);
    }
    let input = input?;
    let schema: SchemaRef = Arc::new(input.schema().as_arrow().clone());
    let column = |id: &Ident, clause: &str| -> Result<usize> {
        let name = fold(id);
        schema
            .fields()
            .iter()
            .position(|f| f.name() == &name)
            .ok_or_else(|| PlanError::UnknownColumn {
                column: name,
                clause: if clause == "PARTITION BY" {
                    "PARTITION BY"
                } else {
                    "ORDER BY"
                },
            })
    };
    let plain = |e: &ast::Expr, clause: &str| -> Result<usize> {
        match e {
            ast::Expr::Identifier(id) => column(id, clause),
            ast::Expr::CompoundIdentifier(ids) if !ids.is_empty() => {
                column(&ids[ids.len() - 1], clause)
            }
            other => Err(PlanError::Unsupported(format!(
                "the expression \"{other}\" in MATCH_RECOGNIZE's {clause} (name a column)"
            ))),
        }
    };
    let partition = partition_by
        .iter()
        .map(|e| plain(e, "PARTITION BY"))
        .collect::<Result<Vec<usize>>>()?;
    let order = match order_by.as_slice() {
        [o] => o,
        [] => {
            return Err(syntax(
                "MATCH_RECOGNIZE needs ORDER BY a time column".into(),
            ));
        }
        _ => {
            return Err(PlanError::Unsupported(
                "MATCH_RECOGNIZE ordered by more than one column".into(),
            ));
        }
    };
    if order.options.asc == Some(false) {
        return Err(PlanError::Unsupported(
            "MATCH_RECOGNIZE ORDER BY ... DESC (rows are matched in time order)".into(),
        ));
    }
    let time = plain(&order.expr, "ORDER BY")?;
    if !matches!(schema.field(time).data_type(), DataType::Timestamp(_, _)) {
        return Err(PlanError::WrongType(format!(
            "MATCH_RECOGNIZE must be ordered by a time column, but \"{}\" is not a timestamp",
            schema.field(time).name()
        )));
    }
    // Variables: in order of first appearance in PATTERN.
    let mut vars: Vec<String> = Vec::new();
    let pattern = convert_pattern(pattern, &mut vars)?;
    if pattern.nullable() {
        return Err(PlanError::Unsupported(format!(
            "the pattern ({}), which can match no rows",
            pattern.sql(&vars)
        )));
    }
    let mut within = None;
    let mut timeout_rows = false;
    let mut defines: Vec<Option<Compiled>> = vec![None; vars.len()];
    let mut defined: BTreeMap<String, ()> = BTreeMap::new();
    for s in symbols {
        let name = fold(&s.symbol);
        if name == WITHIN {
            let df = DFSchema::empty();
            let e = state.create_logical_expr(&s.definition.to_string(), &df)?;
            let e = datafusion::optimizer::simplify_expressions::ExprSimplifier::new(
                datafusion::logical_expr::simplify::SimplifyContext::builder()
                    .with_schema(Arc::new(df))
                    .build(),
            )
            .simplify(e)?;
            within = Some(
                crate::stream::time::interval_micros(&e)
                    .filter(|w| *w > 0)
                    .ok_or_else(|| {
                        PlanError::WrongType(format!(
                            "WITHIN needs a positive interval of fixed length, not {}",
                            s.definition
                        ))
                    })?,
            );
            continue;
        }
        if name == TIMEOUT_ROWS {
            timeout_rows = true;
            continue;
        }
        let Some(v) = find_var(&vars, &s.symbol) else {
            return Err(syntax(format!(
                "pattern variable \"{name}\" is defined in DEFINE but not used in PATTERN"
            )));
        };
        if defined.insert(vars[v].clone(), ()).is_some() {
            return Err(syntax(format!(
                "pattern variable \"{name}\" is defined twice"
            )));
        }
        let compiled = compile(&state, &schema, &vars, time, &s.definition)?;
        if compiled.terms.iter().any(|t| matches!(t, Term::Final(_))) {
            return Err(syntax(format!(
                "FINAL is not allowed in DEFINE {name} (a condition sees the match up to its \
                 row; FINAL belongs in MEASURES)"
            )));
        }
        let out_type = compiled_type(&compiled)?;
        if out_type != DataType::Boolean {
            return Err(PlanError::WrongType(format!(
                "argument of DEFINE {name} must be type boolean, not {out_type}"
            )));
        }
        defines[v] = Some(compiled);
    }
    if timeout_rows && within.is_none() {
        return Err(syntax(
            "WITH TIMEOUT ROWS needs a WITHIN interval after PATTERN".into(),
        ));
    }
    let rows = match rows_per_match {
        None | Some(RowsPerMatch::OneRow) => Rows::One,
        Some(RowsPerMatch::AllRows(
            None | Some(ast::EmptyMatchesMode::Omit | ast::EmptyMatchesMode::Show),
        )) => Rows::All,
        Some(RowsPerMatch::AllRows(Some(mode))) => {
            return Err(PlanError::Unsupported(format!("ALL ROWS PER MATCH {mode}")));
        }
    };
    if timeout_rows && rows == Rows::All {
        return Err(PlanError::Unsupported(
            "WITH TIMEOUT ROWS with ALL ROWS PER MATCH (use ONE ROW PER MATCH)".into(),
        ));
    }
    let var = |id: &Ident| -> Result<u16> {
        find_var(&vars, id).map(|v| v as u16).ok_or_else(|| {
            syntax(format!(
                "AFTER MATCH SKIP names \"{}\", which is not a pattern variable",
                id.value
            ))
        })
    };
    let skip = match after_match_skip {
        None | Some(AfterMatchSkip::PastLastRow) => Skip::PastLastRow,
        Some(AfterMatchSkip::ToNextRow) => Skip::ToNextRow,
        Some(AfterMatchSkip::ToFirst(v)) => Skip::ToFirst(var(v)?),
        Some(AfterMatchSkip::ToLast(v)) => Skip::ToLast(var(v)?),
    };
    let mut fields: Vec<Field> = match rows {
        Rows::One => partition
            .iter()
            .map(|&c| schema.field(c).clone().with_nullable(true))
            .collect(),
        Rows::All => schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect(),
    };
    let mut compiled_measures = Vec::new();
    let mut rowtime = match rows {
        Rows::All => Some(time),
        Rows::One => None,
    };
    for m in measures {
        let is_rowtime = matches!(&m.expr, ast::Expr::Function(f)
            if f.name.to_string().eq_ignore_ascii_case("match_rowtime"));
        if is_rowtime && rowtime.is_none() {
            rowtime = Some(fields.len());
        }
        let name = fold(&m.alias);
        if fields.iter().any(|f| f.name() == &name) {
            return Err(PlanError::DuplicateColumn(name));
        }
        let compiled = compile(&state, &schema, &vars, time, &m.expr)?;
        fields.push(Field::new(name, compiled_type(&compiled)?, true));
        compiled_measures.push(compiled);
    }
    if timeout_rows {
        fields.push(Field::new(TIMED_OUT, DataType::Boolean, true));
    }
    let reads_ahead = defines
        .iter()
        .flatten()
        .chain(&compiled_measures)
        .flat_map(|c| &c.terms)
        .any(|t| matches!(t.base(), Term::Row { next, .. } if *next > 0));
    if reads_ahead && within.is_some() {
        return Err(PlanError::UnsupportedHint {
            what: "NEXT with WITHIN".into(),
            hint: "A row that NEXT reads may come after the WITHIN interval has passed, so \
                   a match could not be told apart from a timeout when the interval ends; \
                   drop WITHIN, or write the condition with PREV on the following variable."
                .into(),
        });
    }
    Ok(MatchRecognizeTable {
        input,
        rowtime: rowtime.filter(|_| within.is_some()),
        spec: RecognizeSpec {
            input: Arc::clone(&schema),
            partition,
            time,
            event_time: false,
            vars,
            pattern,
            defines,
            measures: compiled_measures,
            rows,
            skip,
            within,
            timeout_rows,
            output: Arc::new(Schema::new(fields)),
        },
    })
}

fn compiled_type(c: &Compiled) -> Result<DataType> {
    Ok(c.expr.data_type(&c.schema)?)
}

fn convert_pattern(p: &MatchRecognizePattern, vars: &mut Vec<String>) -> Result<Pattern> {
    let mut var = |s: &MatchRecognizeSymbol| -> Result<Pattern> {
        match s {
            MatchRecognizeSymbol::Named(id) => {
                let i = match find_var(vars, id) {
                    Some(i) => i,
                    None => {
                        // Kept as written: CLASSIFIER() returns it so.
                        vars.push(id.value.clone());
                        vars.len() - 1
                    }
                };
                Ok(Pattern::Var(i as u16))
            }
            MatchRecognizeSymbol::Start => Ok(Pattern::Start),
            MatchRecognizeSymbol::End => Err(PlanError::UnsupportedHint {
                what: "the anchor $ in a streaming PATTERN".into(),
                hint: "A stream's partition has no last row to anchor to; ^ anchors a match \
                       to the partition's first row."
                    .into(),
            }),
        }
    };
    Ok(match p {
        MatchRecognizePattern::Symbol(s) => var(s)?,
        MatchRecognizePattern::Exclude(_) => {
            return Err(PlanError::Unsupported(
                "{- ... -} exclusion in PATTERN".into(),
            ));
        }
        MatchRecognizePattern::Permute(symbols) => {
            if symbols.len() > MAX_PERMUTE {
                return Err(PlanError::Unsupported(format!(
                    "PERMUTE of more than {MAX_PERMUTE} variables"
                )));
            }
            Pattern::Permute(symbols.iter().map(&mut var).collect::<Result<_>>()?)
        }
        MatchRecognizePattern::Concat(parts) => Pattern::Concat(
            parts
                .iter()
                .map(|q| convert_pattern(q, vars))
                .collect::<Result<_>>()?,
        ),
        MatchRecognizePattern::Group(inner) => convert_pattern(inner, vars)?,
        MatchRecognizePattern::Alternation(parts) => Pattern::Alt(
            parts
                .iter()
                .map(|q| convert_pattern(q, vars))
                .collect::<Result<_>>()?,
        ),
        MatchRecognizePattern::Repetition(inner, q) => {
            // `A+?`: sqlparser reads a `?` after a quantifier as a second quantifier; it is the
            // reluctant form of the first.
            if let (
                MatchRecognizePattern::Repetition(body, first),
                RepetitionQuantifier::AtMostOne,
            ) = (inner.as_ref(), q)
            {
                return repeat(convert_pattern(body, vars)?, first, false);
            }
            repeat(convert_pattern(inner, vars)?, q, true)?
        }
    })
}

fn repeat(body: Pattern, q: &RepetitionQuantifier, greedy: bool) -> Result<Pattern> {
    let (min, max) = match *q {
        RepetitionQuantifier::ZeroOrMore => (0, None),
        RepetitionQuantifier::OneOrMore => (1, None),
        RepetitionQuantifier::AtMostOne => (0, Some(1)),
        RepetitionQuantifier::Exactly(n) => (n, Some(n)),
        RepetitionQuantifier::AtLeast(n) => (n, None),
        RepetitionQuantifier::AtMost(m) => (0, Some(m)),
        RepetitionQuantifier::Range(n, m) => {
            if m < n {
                return Err(syntax(format!(
                    "quantifier {{{n},{m}}} has its bounds reversed"
                )));
            }
            (n, Some(m))
        }
    };
    if max.is_some_and(|m| m > 1000) || min > 1000 {
        return Err(PlanError::Unsupported(
            "a quantifier bound over 1000".into(),
        ));
    }
    Ok(Pattern::Repeat {
        body: Box::new(body),
        min,
        max,
        greedy,
    })
}

/// Rewrites navigation and aggregates over variables into term columns `__t0`, `__t1`, ...
struct Terms<'a> {
    schema: &'a Schema,
    vars: &'a [String],
    time: usize,
    terms: Vec<Term>,
    error: Option<PlanError>,
}

impl Terms<'_> {
    fn term(&mut self, t: Term) -> ast::Expr {
        self.terms.push(t);
        ast::Expr::Identifier(Ident::new(format!("__t{}", self.terms.len() - 1)))
    }

    fn column(&self, id: &Ident) -> Result<usize> {
        let name = fold(id);
        self.schema
            .fields()
            .iter()
            .position(|f| f.name() == &name)
            .ok_or_else(|| {
                syntax(format!(
                    "column \"{name}\" does not exist in MATCH_RECOGNIZE's input"
                ))
            })
    }

    fn var(&self, id: &Ident) -> Result<u16> {
        find_var(self.vars, id).map(|v| v as u16).ok_or_else(|| {
            syntax(format!(
                "pattern variable \"{}\" is not in PATTERN",
                id.value
            ))
        })
    }

    /// Column `column` of the current row (the match's last row).
    fn current(&mut self, column: usize) -> ast::Expr {
        self.term(Term::Row {
            anchor: Anchor::Last,
            var: None,
            offset: 0,
            prev: 0,
            next: 0,
            column,
        })
    }

    /// The term an already rewritten argument stands for.
    fn arg_term(&self, e: &ast::Expr) -> Option<(usize, Term)> {
        let ast::Expr::Identifier(id) = e else {
            return None;
        };
        let i: usize = id.value.strip_prefix("__t")?.parse().ok()?;
        self.terms.get(i).cloned().map(|t| (i, t))
    }

    fn rewrite(&mut self, e: &ast::Expr) -> Result<Option<ast::Expr>> {
        match e {
            ast::Expr::Identifier(id) if self.arg_term(e).is_none() => {
                let column = self.column(id)?;
                Ok(Some(self.current(column)))
            }
            ast::Expr::CompoundIdentifier(ids) if ids.len() == 2 => {
                let var = self.var(&ids[0])?;
                let column = self.column(&ids[1])?;
                Ok(Some(self.term(Term::Row {
                    anchor: Anchor::Last,
                    var: Some(var),
                    offset: 0,
                    prev: 0,
                    next: 0,
                    column,
                })))
            }
            ast::Expr::Function(f) => self.function(f),
            _ => Ok(None),
        }
    }

    fn function(&mut self, f: &ast::Function) -> Result<Option<ast::Expr>> {
        let name = f.name.to_string().to_lowercase();
        let Some(base) = name.strip_prefix(FINAL_PREFIX) else {
            return self.function_named(f, name.clone());
        };
        if !matches!(
            base,
            "first" | "last" | "count" | "sum" | "avg" | "min" | "max"
        ) {
            return Err(syntax(format!(
                "FINAL applies to FIRST, LAST, COUNT, SUM, AVG, MIN and MAX, not {base}"
            )));
        }
        let e = self.function_named(f, base.to_string())?;
        if e.is_some()
            && let Some(t) = self.terms.pop()
        {
            self.terms.push(Term::Final(Box::new(t)));
        }
        Ok(e)
    }

    /// A call of `name` over pattern variables as a term (`None`: an ordinary function).
    fn function_named(&mut self, f: &ast::Function, name: String) -> Result<Option<ast::Expr>> {
        let args: Vec<&FunctionArgExpr> = match &f.args {
            FunctionArguments::List(l) => l
                .args
                .iter()
                .map(|a| match a {
                    FunctionArg::Unnamed(e) => e,
                    FunctionArg::Named { arg, .. } | FunctionArg::ExprNamed { arg, .. } => arg,
                })
                .collect(),
            _ => Vec::new(),
        };
        let count = |e: Option<&&FunctionArgExpr>| -> Result<u32> {
            match e {
                None => Ok(1),
                Some(FunctionArgExpr::Expr(ast::Expr::Value(v))) => {
                    v.to_string().parse::<u32>().map_err(|_| {
                        syntax(format!(
                            "{name} needs a non-negative integer offset, not {v}"
                        ))
                    })
                }
                Some(other) => Err(syntax(format!(
                    "{name} needs a constant offset, not {other}"
                ))),
            }
        };
        let row_arg = |this: &Self| -> Result<Term> {
            match args.first() {
                Some(FunctionArgExpr::Expr(e)) => match this.arg_term(e) {
                    Some((_, t @ Term::Row { .. })) => Ok(t),
                    _ => Err(syntax(format!(
                        "{name} needs a column of a pattern variable (such as {name}(A.price)), not {e}"
                    ))),
                },
                _ => Err(syntax(format!("{name} needs one column argument"))),
            }
        };
        match name.as_str() {
            "classifier" => Ok(Some(self.term(Term::Classifier))),
            "match_number" => Ok(Some(self.term(Term::MatchNumber))),
            "match_rowtime" => Ok(Some(self.current(self.time))),
            "prev" | "next" => {
                let Term::Row {
                    anchor,
                    var,
                    offset,
                    prev,
                    next,
                    column,
                } = row_arg(self)?
                else {
                    return Ok(None);
                };
                let n = count(args.get(1))?;
                if n > MAX_NAVIGATION {
                    return Err(syntax(format!(
                        "{name} reaches at most {MAX_NAVIGATION} rows, not {n}"
                    )));
                }
                let (prev, next) = if name == "prev" {
                    (prev + n, next)
                } else {
                    (prev, next + n)
                };
                Ok(Some(self.term(Term::Row {
                    anchor,
                    var,
                    offset,
                    prev,
                    next,
                    column,
                })))
            }
            "first" | "last" => {
                let Term::Row { var, column, .. } = row_arg(self)? else {
                    return Ok(None);
                };
                let n = count(args.get(1)).map(|n| if args.len() > 1 { n } else { 0 })?;
                let anchor = if name == "first" {
                    Anchor::First
                } else {
                    Anchor::Last
                };
                Ok(Some(self.term(Term::Row {
                    anchor,
                    var,
                    offset: n,
                    prev: 0,
                    next: 0,
                    column,
                })))
            }
            "count" | "sum" | "avg" | "min" | "max" => {
                let func = match name.as_str() {
                    "count" => TermAgg::Count,
                    "sum" => TermAgg::Sum,
                    "avg" => TermAgg::Avg,
                    "min" => TermAgg::Min,
                    _ => TermAgg::Max,
                };
                let (var, column) = match args.as_slice() {
                    [FunctionArgExpr::Wildcard] if func == TermAgg::Count => (None, None),
                    [FunctionArgExpr::QualifiedWildcard(n)] if func == TermAgg::Count => {
                        let id = match n.0.as_slice() {
                            [ObjectNamePart::Identifier(id)] => id.clone(),
                            _ => {
                                return Err(syntax(format!(
                                    "COUNT({n}.*) needs a pattern variable"
                                )));
                            }
                        };
                        (Some(self.var(&id)?), None)
                    }
                    [FunctionArgExpr::Expr(e)] => match self.arg_term(e) {
                        Some((_, Term::Row { var, column, .. })) => (var, Some(column)),
                        _ => {
                            return Err(syntax(format!(
                                "{name} over a pattern variable needs a column (such as \
                                 {name}(B.price)), not {e}"
                            )));
                        }
                    },
                    _ => return Err(syntax(format!("{name} needs one argument"))),
                };
                if let (Some(c), true) = (column, func != TermAgg::Count) {
                    let t = self.schema.field(c).data_type();
                    if !(t.is_integer()
                        || t.is_floating()
                        || matches!(t, DataType::Decimal128(_, _)))
                    {
                        return Err(PlanError::WrongType(format!(
                            "{name} over pattern variables needs a numeric column, not {t}"
                        )));
                    }
                }
                Ok(Some(self.term(Term::Agg { func, var, column })))
            }
            _ => Ok(None),
        }
    }
}

struct Rewrite<'a, 'b>(&'a mut Terms<'b>);

impl VisitorMut for Rewrite<'_, '_> {
    type Break = ();

    fn post_visit_expr(&mut self, e: &mut ast::Expr) -> ControlFlow<()> {
        match self.0.rewrite(e) {
            Ok(Some(new)) => *e = new,
            Ok(None) => {}
            Err(err) => {
                self.0.error = Some(err);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

/// Compiles a DEFINE condition or a measure. In a DEFINE, `B.price` of the variable being
/// defined is the current row: terms are evaluated with the candidate row appended to the match
/// as that variable, so the last row mapped to it is the candidate.
fn compile(
    state: &SessionState,
    schema: &SchemaRef,
    vars: &[String],
    time: usize,
    e: &ast::Expr,
) -> Result<Compiled> {
    let mut terms = Terms {
        schema,
        vars,
        time,
        terms: Vec::new(),
        error: None,
    };
    let mut e = e.clone();
    let _ = e.visit(&mut Rewrite(&mut terms));
    if let Some(err) = terms.error {
        return Err(err);
    }
    let term_schema = Compiled::term_schema(&terms.terms, schema)?;
    for t in &terms.terms {
        term_type(t, schema)?;
    }
    let df = DFSchema::try_from(term_schema.as_ref().clone())?;
    let logical = state.create_logical_expr(&e.to_string(), &df)?;
    logical.get_type(&df)?;
    let physical = crate::overflow::physical_expr(state, logical, &df)?;
    Ok(Compiled {
        terms: terms.terms,
        schema: term_schema,
        expr: physical,
    })
}
