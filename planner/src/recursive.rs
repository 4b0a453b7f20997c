//! Postgres' rules for `WITH RECURSIVE`, checked before DataFusion plans a statement.
//!
//! DataFusion runs recursive terms Postgres refuses (an aggregate over the working table never
//! reaches a fixpoint, so such a query ran until the server was stopped). A CTE that references
//! itself must be `non-recursive-term UNION [ALL] recursive-term`, with exactly one reference, in
//! the recursive term, not inside an expression subquery, an outer join's nullable side,
//! INTERSECT or EXCEPT; the query level that reads it may not aggregate; and the CTE as a whole
//! takes no ORDER BY, LIMIT, OFFSET or FOR UPDATE. Messages and SQLSTATEs are Postgres'
//! (`parse_cte.c`, `parse_agg.c`): `42P19` for invalid recursion, `0A000` for the clauses it has
//! not implemented. What passes is still bounded by `statement_timeout` and the memory pool.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    self, Cte, Expr, JoinOperator, LimitClause, ObjectName, Query, Select, SetExpr, SetOperator,
    TableFactor, TableWithJoins, Visit, Visitor,
};

use crate::ddl::normalize_ident;
use crate::error::{PlanError, Result};

/// Checks every `WITH RECURSIVE` in `statement`.
pub fn check(statement: &ast::Statement) -> Result<()> {
    match statement.visit(&mut RecursiveCtes) {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(()),
    }
}

struct RecursiveCtes;

impl Visitor for RecursiveCtes {
    type Break = PlanError;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<PlanError> {
        if let Some(with) = &query.with
            && with.recursive
        {
            if let Err(e) = no_mutual_recursion(&with.cte_tables) {
                return ControlFlow::Break(e);
            }
            for cte in &with.cte_tables {
                if let Err(e) = check_cte(cte) {
                    return ControlFlow::Break(e);
                }
            }
        }
        ControlFlow::Continue(())
    }
}

/// Postgres runs a CTE that reads itself, not two that read each other.
fn no_mutual_recursion(ctes: &[Cte]) -> Result<()> {
    let names: Vec<String> = ctes
        .iter()
        .map(|c| normalize_ident(&c.alias.name))
        .collect();
    // reads[i]: the other items of this WITH that item i reads.
    let reads: Vec<Vec<usize>> = ctes
        .iter()
        .enumerate()
        .map(|(i, cte)| {
            names
                .iter()
                .enumerate()
                .filter(|(j, name)| *j != i && references(cte.query.as_ref(), name) > 0)
                .map(|(j, _)| j)
                .collect()
        })
        .collect();
    for (start, first) in reads.iter().enumerate() {
        let mut seen = vec![false; reads.len()];
        let mut stack = first.clone();
        while let Some(item) = stack.pop() {
            if item == start {
                return Err(PlanError::NotImplemented(
                    "mutual recursion between WITH items is not implemented".into(),
                ));
            }
            if let Some(seen) = seen.get_mut(item)
                && !std::mem::replace(seen, true)
            {
                stack.extend(reads.get(item).into_iter().flatten().copied());
            }
        }
    }
    Ok(())
}

fn check_cte(cte: &Cte) -> Result<()> {
    let name = normalize_ident(&cte.alias.name);
    let query = cte.query.as_ref();
    if references(query, &name) == 0 {
        return Ok(());
    }
    let invalid = |what: &str| PlanError::InvalidRecursion(what.replace("{}", &name));
    let SetExpr::SetOperation {
        op: SetOperator::Union,
        left,
        right,
        ..
    } = query.body.as_ref()
    else {
        return Err(invalid(
            "recursive query \"{}\" does not have the form non-recursive-term UNION [ALL] recursive-term",
        ));
    };
    if references(left.as_ref(), &name) > 0 {
        return Err(invalid(
            "recursive reference to query \"{}\" must not appear within its non-recursive term",
        ));
    }
    term(right, &name, false)?;
    if references(right.as_ref(), &name) > 1 {
        return Err(invalid(
            "recursive reference to query \"{}\" must not appear more than once",
        ));
    }
    let not_implemented = |what: &str| {
        PlanError::NotImplemented(format!("{what} in a recursive query is not implemented"))
    };
    if query.order_by.is_some() {
        return Err(not_implemented("ORDER BY"));
    }
    match &query.limit_clause {
        Some(LimitClause::LimitOffset {
            offset: Some(_), ..
        })
        | Some(LimitClause::OffsetCommaLimit { .. }) => return Err(not_implemented("OFFSET")),
        Some(LimitClause::LimitOffset { limit: Some(_), .. }) => {
            return Err(not_implemented("LIMIT"));
        }
        _ => {}
    }
    if query.fetch.is_some() {
        return Err(not_implemented("LIMIT"));
    }
    if !query.locks.is_empty() {
        return Err(not_implemented("FOR UPDATE/SHARE"));
    }
    Ok(())
}

/// Checks the recursive term `set`; `outer` when it is on an outer join's nullable side.
fn term(set: &SetExpr, name: &str, outer: bool) -> Result<()> {
    let invalid = |what: &str| PlanError::InvalidRecursion(what.replace("{}", name));
    match set {
        SetExpr::Select(select) => select_level(select, name, outer),
        SetExpr::Query(query) => term(&query.body, name, outer),
        SetExpr::SetOperation {
            op, left, right, ..
        } => match op {
            SetOperator::Union => {
                term(left, name, outer)?;
                term(right, name, outer)
            }
            SetOperator::Intersect if references(set, name) > 0 => Err(invalid(
                "recursive reference to query \"{}\" must not appear within INTERSECT",
            )),
            SetOperator::Except if references(set, name) > 0 => Err(invalid(
                "recursive reference to query \"{}\" must not appear within EXCEPT",
            )),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// One SELECT of the recursive term: its FROM's references, and an aggregate at its level.
fn select_level(select: &Select, name: &str, outer: bool) -> Result<()> {
    let invalid = |what: &str| PlanError::InvalidRecursion(what.replace("{}", name));
    let mut direct = 0;
    let mut in_from = 0;
    for from in &select.from {
        from_item(from, name, outer, &mut direct, &mut in_from)?;
    }
    if references(select, name) > in_from {
        return Err(invalid(
            "recursive reference to query \"{}\" must not appear within a subquery",
        ));
    }
    if direct > 0 && has_aggregate(select) {
        return Err(PlanError::InvalidRecursion(
            "aggregate functions are not allowed in a recursive query's recursive term".into(),
        ));
    }
    Ok(())
}

/// Walks a FROM item: `direct` counts references read at this level, `in_from` every reference
/// in the item (derived tables included).
fn from_item(
    from: &TableWithJoins,
    name: &str,
    outer: bool,
    direct: &mut usize,
    in_from: &mut usize,
) -> Result<()> {
    let right_outer = from.joins.iter().any(|j| {
        matches!(
            j.join_operator,
            JoinOperator::Right(_) | JoinOperator::RightOuter(_) | JoinOperator::FullOuter(_)
        )
    });
    factor(&from.relation, name, outer || right_outer, direct, in_from)?;
    for join in &from.joins {
        let nullable = matches!(
            join.join_operator,
            JoinOperator::Left(_)
                | JoinOperator::LeftOuter(_)
                | JoinOperator::FullOuter(_)
                | JoinOperator::OuterApply
        );
        factor(&join.relation, name, outer || nullable, direct, in_from)?;
    }
    Ok(())
}

fn factor(
    table: &TableFactor,
    name: &str,
    outer: bool,
    direct: &mut usize,
    in_from: &mut usize,
) -> Result<()> {
    match table {
        TableFactor::Table { name: table, .. } if is_self(table, name) => {
            if outer {
                return Err(PlanError::InvalidRecursion(format!(
                    "recursive reference to query \"{name}\" must not appear within an outer join"
                )));
            }
            *direct += 1;
            *in_from += 1;
        }
        TableFactor::Derived { subquery, .. } => {
            let n = references(subquery.as_ref(), name);
            if n > 0 {
                term(&subquery.body, name, outer)?;
            }
            *in_from += n;
        }
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => from_item(table_with_joins, name, outer, direct, in_from)?,
        _ => {}
    }
    Ok(())
}

/// Whether `table` names the CTE `name` (an unqualified name).
fn is_self(table: &ObjectName, name: &str) -> bool {
    match table.0.as_slice() {
        [part] => part
            .as_ident()
            .is_some_and(|id| normalize_ident(id) == name),
        _ => false,
    }
}

/// How many times `node` reads a relation called `name`.
fn references<V: Visit>(node: &V, name: &str) -> usize {
    let mut count = 0;
    let _ = ast::visit_relations(node, |relation| {
        if is_self(relation, name) {
            count += 1;
        }
        ControlFlow::<()>::Continue(())
    });
    count
}

/// Whether `select` calls an aggregate at its own level (not in a subquery, not as a window).
fn has_aggregate(select: &Select) -> bool {
    struct Aggregates {
        depth: usize,
    }
    impl Visitor for Aggregates {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = expr
                && self.depth == 0
                && f.over.is_none()
                && f.name.0.len() == 1
                && f.name
                    .0
                    .first()
                    .and_then(|p| p.as_ident())
                    .is_some_and(|id| AGGREGATES.contains(&id.value.to_lowercase().as_str()))
            {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut visitor = Aggregates { depth: 0 };
    let levels = (&select.projection, &select.having);
    levels.0.visit(&mut visitor).is_break() || levels.1.visit(&mut visitor).is_break()
}

/// Postgres' built-in aggregates (and DataFusion's) by name.
const AGGREGATES: &[&str] = &[
    "array_agg",
    "avg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "bool_and",
    "bool_or",
    "count",
    "corr",
    "covar_pop",
    "covar_samp",
    "every",
    "json_agg",
    "json_object_agg",
    "jsonb_agg",
    "jsonb_object_agg",
    "max",
    "median",
    "min",
    "mode",
    "percentile_cont",
    "percentile_disc",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "sum",
    "var_pop",
    "var_samp",
    "variance",
    "approx_distinct",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Statement, parse_sql};

    fn error(sql: &str) -> Option<String> {
        let parsed = parse_sql(sql).ok()?.pop()?;
        let Statement::Sql { stmt, .. } = parsed.statement else {
            return None;
        };
        check(&stmt).err().map(|e| e.to_string())
    }

    #[test]
    fn refuses_what_postgres_refuses() {
        let agg = "aggregate functions are not allowed in a recursive query's recursive term";
        assert_eq!(
            error(
                "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT count(*) FROM x) SELECT * FROM x"
            )
            .as_deref(),
            Some(agg)
        );
        assert_eq!(
            error("WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM x ORDER BY 1) SELECT * FROM x")
                .as_deref(),
            Some("ORDER BY in a recursive query is not implemented")
        );
        assert_eq!(
            error("WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM x LIMIT 3 OFFSET 1) SELECT * FROM x")
                .as_deref(),
            Some("OFFSET in a recursive query is not implemented")
        );
        assert_eq!(
            error("WITH RECURSIVE x(n) AS (SELECT n FROM x UNION ALL SELECT 1) SELECT * FROM x")
                .as_deref(),
            Some(
                "recursive reference to query \"x\" must not appear within its non-recursive term"
            )
        );
        assert_eq!(
            error("WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM x WHERE n IN (SELECT n FROM x)) SELECT * FROM x")
                .as_deref(),
            Some("recursive reference to query \"x\" must not appear within a subquery")
        );
        assert_eq!(
            error("WITH RECURSIVE x(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM y WHERE id < 5), y(id) AS (SELECT 1 UNION ALL SELECT id + 1 FROM x WHERE id < 5) SELECT * FROM x")
                .as_deref(),
            Some("mutual recursion between WITH items is not implemented")
        );
    }

    #[test]
    fn accepts_what_postgres_runs() {
        for sql in [
            "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM x WHERE n < 5) SELECT * FROM x",
            "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM x WHERE n < (SELECT max(a) FROM t)) SELECT count(*) FROM x",
            "WITH x(n) AS (SELECT 1) SELECT count(*) FROM x",
            "WITH RECURSIVE x(n) AS (SELECT 1 UNION ALL SELECT count(*) FROM t) SELECT * FROM x",
        ] {
            assert_eq!(error(sql), None, "{sql}");
        }
    }
}
