//! `a IS [NOT] DISTINCT FROM b AND c` as Postgres reads it: `(a IS DISTINCT FROM b) AND c`.
//!
//! sqlparser parses the right operand of `IS [NOT] DISTINCT FROM` as a whole expression, so it
//! takes everything after it: `a IS DISTINCT FROM (b AND c)`. That fails on types at best, and
//! where `b` is a boolean it silently answers another question. In Postgres, IS binds tighter than
//! NOT, AND and OR and less tightly than comparisons. So an expression of those operators holding
//! an `IS [NOT] DISTINCT FROM` whose right operand is one of the looser ones (not in parentheses)
//! is laid out again in the order it was written and parsed with Postgres' precedences.

use std::iter::Peekable;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{self, BinaryOperator, UnaryOperator, VisitMut, VisitorMut};

/// `stmt` with every misparsed `IS [NOT] DISTINCT FROM` parsed as Postgres does.
pub fn rewrite(stmt: &mut ast::Statement) {
    let _ = stmt.visit(&mut Repair);
}

struct Repair;

impl VisitorMut for Repair {
    type Break = ();

    // Before the operands: the outermost operator of an expression sees all of it.
    fn pre_visit_expr(&mut self, expr: &mut ast::Expr) -> ControlFlow<()> {
        if misparsed(expr) {
            let mut items = Vec::new();
            flatten(expr.clone(), &mut items);
            if let Some(reparsed) = climb(&mut items.into_iter().peekable(), 0) {
                *expr = reparsed;
            }
        }
        ControlFlow::Continue(())
    }
}

/// The operators laid out again, loosest first (`NOT`, a prefix, binds at 3).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Or,
    And,
    Distinct { not: bool },
    Compare(Comparison),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comparison {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

const NOT_PRECEDENCE: u8 = 3;

impl Op {
    fn precedence(self) -> u8 {
        match self {
            Op::Or => 1,
            Op::And => 2,
            Op::Distinct { .. } => 4,
            Op::Compare(_) => 5,
        }
    }

    fn of(op: &BinaryOperator) -> Option<Op> {
        Some(match op {
            BinaryOperator::Or => Op::Or,
            BinaryOperator::And => Op::And,
            BinaryOperator::Eq => Op::Compare(Comparison::Eq),
            BinaryOperator::NotEq => Op::Compare(Comparison::NotEq),
            BinaryOperator::Lt => Op::Compare(Comparison::Lt),
            BinaryOperator::LtEq => Op::Compare(Comparison::LtEq),
            BinaryOperator::Gt => Op::Compare(Comparison::Gt),
            BinaryOperator::GtEq => Op::Compare(Comparison::GtEq),
            _ => return None,
        })
    }

    fn apply(self, left: ast::Expr, right: ast::Expr) -> ast::Expr {
        let (left, right) = (Box::new(left), Box::new(right));
        let op = match self {
            Op::Distinct { not: false } => return ast::Expr::IsDistinctFrom(left, right),
            Op::Distinct { not: true } => return ast::Expr::IsNotDistinctFrom(left, right),
            Op::Or => BinaryOperator::Or,
            Op::And => BinaryOperator::And,
            Op::Compare(Comparison::Eq) => BinaryOperator::Eq,
            Op::Compare(Comparison::NotEq) => BinaryOperator::NotEq,
            Op::Compare(Comparison::Lt) => BinaryOperator::Lt,
            Op::Compare(Comparison::LtEq) => BinaryOperator::LtEq,
            Op::Compare(Comparison::Gt) => BinaryOperator::Gt,
            Op::Compare(Comparison::GtEq) => BinaryOperator::GtEq,
        };
        ast::Expr::BinaryOp { left, op, right }
    }
}

/// An expression laid out in writing order.
enum Item {
    Operand(Box<ast::Expr>),
    Not,
    Binary(Op),
}

/// Whether `e`'s operators hold an `IS [NOT] DISTINCT FROM` that took a looser operator (or
/// another `IS`) as its right operand.
fn misparsed(e: &ast::Expr) -> bool {
    match e {
        ast::Expr::IsDistinctFrom(left, right) | ast::Expr::IsNotDistinctFrom(left, right) => {
            let swallowed = match right.as_ref() {
                ast::Expr::BinaryOp { op, .. } => matches!(Op::of(op), Some(Op::Or | Op::And)),
                ast::Expr::UnaryOp {
                    op: UnaryOperator::Not,
                    ..
                } => true,
                ast::Expr::IsDistinctFrom(..) | ast::Expr::IsNotDistinctFrom(..) => true,
                _ => false,
            };
            swallowed || misparsed(left) || misparsed(right)
        }
        ast::Expr::BinaryOp { left, op, right } if Op::of(op).is_some() => {
            misparsed(left) || misparsed(right)
        }
        ast::Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => misparsed(expr),
        _ => false,
    }
}

fn flatten(e: ast::Expr, out: &mut Vec<Item>) {
    match e {
        ast::Expr::IsDistinctFrom(left, right) => {
            flatten(*left, out);
            out.push(Item::Binary(Op::Distinct { not: false }));
            flatten(*right, out);
        }
        ast::Expr::IsNotDistinctFrom(left, right) => {
            flatten(*left, out);
            out.push(Item::Binary(Op::Distinct { not: true }));
            flatten(*right, out);
        }
        ast::Expr::BinaryOp { left, op, right } if let Some(op) = Op::of(&op) => {
            flatten(*left, out);
            out.push(Item::Binary(op));
            flatten(*right, out);
        }
        ast::Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => {
            out.push(Item::Not);
            flatten(*expr, out);
        }
        other => out.push(Item::Operand(Box::new(other))),
    }
}

/// Precedence climbing over `items`: the expression of the operators binding tighter than
/// `floor` (all left-associative, as Postgres' are).
fn climb(items: &mut Peekable<impl Iterator<Item = Item>>, floor: u8) -> Option<ast::Expr> {
    let mut left = match items.next()? {
        Item::Operand(e) => *e,
        Item::Not => ast::Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr: Box::new(climb(items, NOT_PRECEDENCE)?),
        },
        Item::Binary(_) => return None,
    };
    while let Some(Item::Binary(op)) = items.peek() {
        let op = *op;
        if op.precedence() <= floor {
            break;
        }
        items.next();
        let right = climb(items, op.precedence())?;
        left = op.apply(left, right);
    }
    Some(left)
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    /// The WHERE clause's tree, repaired or as sqlparser left it, without parentheses.
    fn tree(where_clause: &str, repair: bool) -> String {
        let sql = format!("SELECT 1 FROM t WHERE {where_clause}");
        let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, &sql).expect("parses");
        if repair {
            rewrite(&mut stmts[0]);
        }
        let _ = ast::visit_expressions_mut(&mut stmts[0], |e| {
            if let ast::Expr::Nested(inner) = e {
                *e = inner.as_ref().clone();
            }
            ControlFlow::<()>::Continue(())
        });
        let ast::Statement::Query(q) = &stmts[0] else {
            panic!("not a query");
        };
        let ast::SetExpr::Select(s) = q.body.as_ref() else {
            panic!("not a select");
        };
        let debug = format!("{:?}", s.selection.as_ref().expect("a WHERE clause"));
        // Without the spans: the two texts put their operands at other columns.
        let mut parts = debug.split("span: Span(");
        let first = parts.next().unwrap_or_default().to_string();
        parts.fold(first, |text, part| {
            text + part.split_once("))").map_or(part, |(_, rest)| rest)
        })
    }

    /// `written`, repaired, is `meant` (parenthesized as Postgres reads it).
    fn same(written: &str, meant: &str) {
        assert_eq!(tree(written, true), tree(meant, false), "{written}");
    }

    #[test]
    fn is_distinct_from_binds_tighter_than_and_or_not() {
        same("a IS DISTINCT FROM b AND c", "(a IS DISTINCT FROM b) AND c");
        same(
            "a IS NOT DISTINCT FROM b OR c AND d",
            "(a IS NOT DISTINCT FROM b) OR (c AND d)",
        );
        same(
            "w AND x IS DISTINCT FROM y OR z",
            "(w AND (x IS DISTINCT FROM y)) OR z",
        );
        same(
            "a IS DISTINCT FROM b AND c IS NOT DISTINCT FROM d AND e",
            "((a IS DISTINCT FROM b) AND (c IS NOT DISTINCT FROM d)) AND e",
        );
        same(
            "NOT a IS DISTINCT FROM b AND c",
            "(NOT (a IS DISTINCT FROM b)) AND c",
        );
        same(
            "a IS DISTINCT FROM b IS DISTINCT FROM c",
            "(a IS DISTINCT FROM b) IS DISTINCT FROM c",
        );
    }

    #[test]
    fn is_distinct_from_binds_looser_than_comparisons_and_parentheses_hold() {
        same(
            "a = b IS DISTINCT FROM c AND d",
            "((a = b) IS DISTINCT FROM c) AND d",
        );
        same(
            "a IS DISTINCT FROM b = c AND d",
            "(a IS DISTINCT FROM (b = c)) AND d",
        );
        same(
            "a IS DISTINCT FROM (b AND c)",
            "a IS DISTINCT FROM (b AND c)",
        );
        same(
            "a + 1 IS DISTINCT FROM b * 2 OR c",
            "((a + 1) IS DISTINCT FROM (b * 2)) OR c",
        );
        // Untouched: no IS DISTINCT FROM took a looser operator.
        same("a AND b OR c", "(a AND b) OR c");
    }
}
