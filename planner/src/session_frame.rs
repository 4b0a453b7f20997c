//! RisingWave's session windows: a `SESSION WITH GAP interval` window frame.
//!
//! ```sql
//! SELECT user_id, first_value(ts) OVER w AS window_start, last_value(ts) OVER w AS window_end
//! FROM clicks WINDOW w AS (PARTITION BY user_id ORDER BY ts SESSION WITH GAP INTERVAL '5' MINUTE)
//! ```
//!
//! The frame of a row is its session: the run of its partition's rows, in `ORDER BY` order, at
//! most the gap apart. `first_value` of the order column is the session's first event time,
//! `last_value` its last. They are written with the session window functions of
//! [`crate::session`] (a session's `window_start`, and its `window_end`: the last event time plus
//! the gap), so the same sessions are computed, in batch and, grouped by them, by the streaming
//! session aggregation: `first_value(ts)` becomes `rivulet_session_start(ts, gap) OVER
//! (PARTITION BY ...)` and `last_value(ts)` becomes `rivulet_session_end(ts, gap) OVER (...) -
//! gap`.
//!
//! The Postgres grammar has no such frame, so [`take`] replaces `SESSION WITH GAP g` in the
//! tokens by `GROUPS BETWEEN g PRECEDING AND g FOLLOWING` (a frame no valid query has: GROUPS
//! offsets are integers, and a gap is an interval), and [`rewrite`] turns the window functions
//! over such a frame into the session functions once the statement has parsed.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, NamedWindowExpr, ObjectName,
    ObjectNamePart, VisitMut, VisitorMut, WindowFrameBound, WindowFrameUnits, WindowSpec,
    WindowType,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use crate::error::{PlanError, Result};
use crate::parse::is_bare_word;
use crate::session::{SESSION_END, SESSION_START};

/// Replaces each `SESSION WITH GAP g` frame in `tokens` by `GROUPS BETWEEN g PRECEDING AND g
/// FOLLOWING` (see the module documentation).
pub fn take(tokens: &mut Vec<TokenWithSpan>) {
    let mut from = 0;
    while let Some((session, gap_start)) = find(&tokens[from..]).map(|(s, g)| (s + from, g + from))
    {
        // The gap runs to the parenthesis that closes the window specification.
        let mut depth = 0usize;
        let mut end = gap_start;
        while end < tokens.len() {
            match tokens[end].token {
                Token::LParen => depth += 1,
                Token::RParen if depth == 0 => break,
                Token::RParen => depth -= 1,
                _ => {}
            }
            end += 1;
        }
        let gap: Vec<TokenWithSpan> = tokens[gap_start..end].to_vec();
        let span = tokens[session].span;
        let word = |kw: &str| TokenWithSpan {
            token: Token::make_keyword(kw),
            span,
        };
        let space = || TokenWithSpan {
            token: Token::Whitespace(datafusion::sql::sqlparser::tokenizer::Whitespace::Space),
            span,
        };
        let mut frame = vec![word("GROUPS"), space(), word("BETWEEN"), space()];
        frame.extend(gap.iter().cloned());
        frame.extend([space(), word("PRECEDING"), space(), word("AND"), space()]);
        frame.extend(gap);
        frame.extend([space(), word("FOLLOWING"), space()]);
        let next = session + frame.len();
        tokens.splice(session..end, frame);
        from = next;
    }
}

/// The positions of `SESSION` and of the first token after `GAP` of the first session frame
/// in `tokens`.
fn find(tokens: &[TokenWithSpan]) -> Option<(usize, usize)> {
    let words: Vec<(usize, &TokenWithSpan)> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    words.windows(3).find_map(|w| {
        let with = matches!(&w[1].1.token, Token::Word(word) if word.keyword == Keyword::WITH);
        (is_bare_word(w[0].1, "session") && with && is_bare_word(w[2].1, "gap"))
            .then_some((w[0].0, w[2].0 + 1))
    })
}

/// Turns the window functions over session frames in `stmt` into the session window functions
/// (see the module documentation); any other function over such a frame is refused.
pub fn rewrite(stmt: &mut ast::Statement) -> Result<()> {
    match stmt.visit(&mut Rewriter) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct Rewriter;

impl VisitorMut for Rewriter {
    type Break = PlanError;

    fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<PlanError> {
        let ast::SetExpr::Select(select) = query.body.as_mut() else {
            return ControlFlow::Continue(());
        };
        // Named session windows are written into each call that names them.
        let mut named = Vec::new();
        select.named_window.retain(|w| match &w.1 {
            NamedWindowExpr::WindowSpec(spec) if gap_of(spec).is_some() => {
                named.push((w.0.value.clone(), spec.clone()));
                false
            }
            _ => true,
        });
        if named.is_empty() {
            return ControlFlow::Continue(());
        }
        let _ = select.visit(&mut Inline(&named));
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<PlanError> {
        let Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        let Some(WindowType::WindowSpec(spec)) = &f.over else {
            return ControlFlow::Continue(());
        };
        let Some(gap) = gap_of(spec) else {
            return ControlFlow::Continue(());
        };
        match session_call(f, spec, gap) {
            Ok(new) => {
                *expr = new;
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(e),
        }
    }
}

/// Writes the named session windows into the calls that name them.
struct Inline<'a>(&'a [(String, WindowSpec)]);

impl VisitorMut for Inline<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr
            && let Some(WindowType::NamedWindow(name)) = &f.over
            && let Some((_, spec)) = self.0.iter().find(|(n, _)| *n == name.value)
        {
            f.over = Some(WindowType::WindowSpec(spec.clone()));
        }
        ControlFlow::Continue(())
    }
}

/// The gap of a session frame (as [`take`] writes it).
fn gap_of(spec: &WindowSpec) -> Option<&Expr> {
    let frame = spec.window_frame.as_ref()?;
    match (&frame.units, &frame.start_bound, &frame.end_bound) {
        (
            WindowFrameUnits::Groups,
            WindowFrameBound::Preceding(Some(a)),
            Some(WindowFrameBound::Following(Some(b))),
        ) if a == b && matches!(a.as_ref(), Expr::Interval(_)) => Some(a.as_ref()),
        _ => None,
    }
}

/// What is not supported over a session frame, with what to write instead.
fn unsupported(what: String) -> PlanError {
    PlanError::UnsupportedHint {
        what,
        hint: "Over a SESSION frame, first_value(t) and last_value(t) of its ORDER BY column t \
               are the session's first and last event times; aggregate the session's rows by \
               grouping by them."
            .into(),
    }
}

/// The session window function that `f` over the session frame `spec` (gap `gap`) is.
fn session_call(f: &ast::Function, spec: &WindowSpec, gap: &Expr) -> Result<Expr> {
    let name = f.name.to_string().to_lowercase();
    let last = match name.as_str() {
        "first_value" => false,
        "last_value" => true,
        _ => {
            return Err(unsupported(format!("{name}() over a SESSION frame")));
        }
    };
    let arg = match &f.args {
        FunctionArguments::List(list) => match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => Some(e),
            _ => None,
        },
        _ => None,
    };
    let order = match spec.order_by.as_slice() {
        [o] if o.options.asc != Some(false) => Some(&o.expr),
        _ => None,
    };
    let (Some(arg), Some(order)) = (arg, order) else {
        return Err(unsupported(format!(
            "{name}() over a SESSION frame without one ascending ORDER BY column, or of more \
             than that column"
        )));
    };
    if arg != order {
        return Err(unsupported(format!(
            "{name}({arg}) over a SESSION frame ordered by {order}"
        )));
    }
    let function = ast::Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(ast::Ident::new(if last {
            SESSION_END
        } else {
            SESSION_START
        }))]),
        args: FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![
                FunctionArg::Unnamed(FunctionArgExpr::Expr(arg.clone())),
                FunctionArg::Unnamed(FunctionArgExpr::Expr(gap.clone())),
            ],
            clauses: Vec::new(),
        }),
        over: Some(WindowType::WindowSpec(WindowSpec {
            window_name: None,
            partition_by: spec.partition_by.clone(),
            order_by: Vec::new(),
            window_frame: None,
        })),
        ..f.clone()
    };
    let call = Expr::Function(function);
    Ok(if last {
        Expr::Nested(Box::new(Expr::BinaryOp {
            left: Box::new(call),
            op: ast::BinaryOperator::Minus,
            right: Box::new(gap.clone()),
        }))
    } else {
        call
    })
}
