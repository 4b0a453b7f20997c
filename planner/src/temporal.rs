//! `FOR SYSTEM_TIME AS OF` (Flink's temporal join; RisingWave's `AS OF PROCTIME()` lookup join).
//!
//! The Postgres grammar has no table versions, so the parser takes `FOR SYSTEM_TIME AS OF <expr>`
//! out of the tokens after a table name ([`take`]) and, once the statement is parsed, puts it on
//! that table factor as sqlparser's `TableVersion` ([`restore`]): the statement prints back with
//! it (a view's stored query keeps it). DataFusion ignores table versions, so a statement that has
//! one is planned by the streaming planner only, which reads them with [`tables`]; an ad-hoc query
//! with one is refused ([`refuse_ad_hoc`]).

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, Expr, ObjectNamePart, TableFactor, TableVersion, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Word};

use crate::error::{PlanError, Result};

/// A `FOR SYSTEM_TIME AS OF` taken out of the tokens: where its table's name starts, and the
/// expression's tokens.
pub struct Taken {
    table: Location,
    expr: Vec<TokenWithSpan>,
}

/// What a view's query asks of one versioned table.
#[derive(Debug, Clone, PartialEq)]
pub struct TemporalTable {
    /// The name the query calls the table by (its alias, or its name).
    pub qualifier: String,
    pub as_of: AsOf,
}

/// The moment whose version a probe row meets.
#[derive(Debug, Clone, PartialEq)]
pub enum AsOf {
    /// `PROCTIME()`: the current rows when the probe row arrives.
    ProcessingTime,
    /// A column of the probe side: `relation.name` or `name` (as Postgres folds them).
    Column {
        relation: Option<String>,
        name: String,
    },
}

fn is_keyword(t: &TokenWithSpan, kw: Keyword) -> bool {
    matches!(&t.token, Token::Word(Word { keyword, quote_style: None, .. }) if *keyword == kw)
}

fn is_trivia(t: &TokenWithSpan) -> bool {
    matches!(t.token, Token::Whitespace(_) | Token::EOF)
}

/// Takes every `FOR SYSTEM_TIME AS OF <expr>` that follows a table name out of `tokens`. The
/// expression is a (qualified) column or a function call.
pub fn take(tokens: &mut Vec<TokenWithSpan>) -> Vec<Taken> {
    let mut taken = Vec::new();
    loop {
        let words: Vec<usize> = (0..tokens.len())
            .filter(|&i| !is_trivia(&tokens[i]))
            .collect();
        let found = words.windows(5).position(|w| {
            matches!(tokens[w[0]].token, Token::Word(_))
                && is_keyword(&tokens[w[1]], Keyword::FOR)
                && matches!(&tokens[w[2]].token, Token::Word(word) if word.value.eq_ignore_ascii_case("SYSTEM_TIME"))
                && is_keyword(&tokens[w[3]], Keyword::AS)
                && is_keyword(&tokens[w[4]], Keyword::OF)
        });
        let Some(at) = found else {
            return taken;
        };
        let table = tokens[words[at]].span.start;
        // The expression: a word, `.word`s, then a balanced parenthesis group.
        let mut k = at + 5;
        let mut expr_end = None;
        if words
            .get(k)
            .is_some_and(|&i| matches!(tokens[i].token, Token::Word(_)))
        {
            expr_end = Some(words[k]);
            k += 1;
            while words
                .get(k)
                .is_some_and(|&i| tokens[i].token == Token::Period)
                && words
                    .get(k + 1)
                    .is_some_and(|&i| matches!(tokens[i].token, Token::Word(_)))
            {
                expr_end = Some(words[k + 1]);
                k += 2;
            }
            if words
                .get(k)
                .is_some_and(|&i| tokens[i].token == Token::LParen)
            {
                let mut depth = 0;
                while let Some(&i) = words.get(k) {
                    match tokens[i].token {
                        Token::LParen => depth += 1,
                        Token::RParen => depth -= 1,
                        _ => {}
                    }
                    expr_end = Some(i);
                    k += 1;
                    if depth == 0 {
                        break;
                    }
                }
            }
        }
        let Some(expr_end) = expr_end else {
            // Not an expression we take: leave it to the parser's error.
            return taken;
        };
        let start = words[at + 1];
        let expr_start = words[at + 5];
        let expr: Vec<TokenWithSpan> = tokens[expr_start..=expr_end].to_vec();
        tokens.drain(start..=expr_end);
        taken.push(Taken { table, expr });
    }
}

/// Puts what [`take`] took back onto the parsed statement's table factors.
pub fn restore(stmt: &mut ast::Statement, taken: Vec<Taken>) -> Result<()> {
    if taken.is_empty() {
        return Ok(());
    }
    struct Restore {
        taken: Vec<(Location, Option<Expr>)>,
    }
    impl VisitorMut for Restore {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            // The word before FOR: the table's name, or its alias (`t AS a FOR SYSTEM_TIME AS
            // OF ...`, as sqlparser prints a version back).
            if let TableFactor::Table {
                name,
                alias,
                version,
                ..
            } = factor
                && let Some(ObjectNamePart::Identifier(last)) = name.0.last()
                && let Some((_, expr)) = self.taken.iter_mut().find(|(at, _)| {
                    *at == last.span.start
                        || alias.as_ref().is_some_and(|a| *at == a.name.span.start)
                })
                && let Some(expr) = expr.take()
            {
                *version = Some(TableVersion::ForSystemTimeAsOf(expr));
            }
            ControlFlow::Continue(())
        }
    }
    let dialect = PostgreSqlDialect {};
    let mut exprs = Vec::with_capacity(taken.len());
    for t in taken {
        let expr = Parser::new(&dialect)
            .with_tokens_with_locations(t.expr)
            .parse_expr()
            .map_err(|e| PlanError::Syntax {
                message: format!("FOR SYSTEM_TIME AS OF: {e}"),
                detail: None,
                position: None,
            })?;
        exprs.push((t.table, Some(expr)));
    }
    let mut restore = Restore { taken: exprs };
    let _ = stmt.visit(&mut restore);
    if restore.taken.iter().any(|(_, e)| e.is_some()) {
        return Err(PlanError::Unsupported(
            "FOR SYSTEM_TIME AS OF after something other than a table name".into(),
        ));
    }
    Ok(())
}

/// The versioned tables of a statement, in the order they appear.
pub fn tables(stmt: &ast::Statement) -> Result<Vec<TemporalTable>> {
    struct Collect(Vec<std::result::Result<TemporalTable, PlanError>>);
    impl Visitor for Collect {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name,
                alias,
                version: Some(TableVersion::ForSystemTimeAsOf(expr)),
                ..
            } = factor
            {
                let fold = |i: &ast::Ident| match i.quote_style {
                    Some(_) => i.value.clone(),
                    None => i.value.to_lowercase(),
                };
                let qualifier = match alias {
                    Some(a) => fold(&a.name),
                    None => name
                        .0
                        .last()
                        .and_then(ObjectNamePart::as_ident)
                        .map(fold)
                        .unwrap_or_default(),
                };
                let as_of = match expr {
                    Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("proctime") => {
                        Ok(AsOf::ProcessingTime)
                    }
                    Expr::Identifier(i) => Ok(AsOf::Column {
                        relation: None,
                        name: fold(i),
                    }),
                    Expr::CompoundIdentifier(parts) if parts.len() == 2 => Ok(AsOf::Column {
                        relation: Some(fold(&parts[0])),
                        name: fold(&parts[1]),
                    }),
                    other => Err(PlanError::Unsupported(format!(
                        "FOR SYSTEM_TIME AS OF {other}: name the probe side's event-time \
                         column (one with a WATERMARK) or PROCTIME()"
                    ))),
                };
                self.0
                    .push(as_of.map(|as_of| TemporalTable { qualifier, as_of }));
            }
            ControlFlow::Continue(())
        }
    }
    let mut collect = Collect(Vec::new());
    let _ = stmt.visit(&mut collect);
    collect.0.into_iter().collect()
}

/// An ad-hoc query reads each table's current rows; a temporal join is a continuous one.
pub fn refuse_ad_hoc(stmt: &ast::Statement) -> Result<()> {
    if tables(stmt)?.is_empty() {
        return Ok(());
    }
    Err(PlanError::Unsupported(
        "FOR SYSTEM_TIME AS OF in an ad-hoc query (a temporal join is continuous: use it in \
         CREATE MATERIALIZED VIEW ... AS, or INSERT INTO a sink table)"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Statement, parse_sql};

    fn versions(sql: &str) -> Vec<TemporalTable> {
        let parsed = parse_sql(sql).unwrap();
        match &parsed[0].statement {
            Statement::Sql { stmt, .. } => tables(stmt).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn versions_survive_the_postgres_grammar_and_print_back() {
        let sql =
            "SELECT o.id FROM orders o JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.cur = r.cur";
        assert_eq!(
            versions(sql),
            vec![TemporalTable {
                qualifier: "r".into(),
                as_of: AsOf::Column {
                    relation: Some("o".into()),
                    name: "ts".into()
                }
            }]
        );
        let printed = "SELECT o.id FROM orders AS o JOIN rates AS r FOR SYSTEM_TIME AS OF o.ts ON o.cur = r.cur";
        assert_eq!(versions(printed), versions(sql));
        let view = "CREATE MATERIALIZED VIEW v AS SELECT o.id FROM orders AS o \
                    LEFT JOIN public.rates FOR SYSTEM_TIME AS OF PROCTIME() ON o.cur = rates.cur";
        let parsed = parse_sql(view).unwrap();
        let Statement::Sql { stmt, .. } = &parsed[0].statement else {
            panic!()
        };
        let printed = stmt.to_string();
        assert!(
            printed.contains("FOR SYSTEM_TIME AS OF PROCTIME()"),
            "{printed}"
        );
        // The printed form (alias first) parses back to the same.
        let again = parse_sql(&printed).unwrap();
        let Statement::Sql { stmt: again, .. } = &again[0].statement else {
            panic!()
        };
        assert_eq!(again.to_string(), printed);
        assert_eq!(
            tables(stmt).unwrap(),
            vec![TemporalTable {
                qualifier: "rates".into(),
                as_of: AsOf::ProcessingTime
            }]
        );
    }
}
