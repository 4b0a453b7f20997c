//! Correlated scalar subqueries that DataFusion cannot decorrelate, joined with their outer query.
//!
//! DataFusion turns a correlated scalar subquery into a join only when the correlation is
//! equalities (`p.sym = o.sym`) under its aggregate. Postgres (and Flink, through Calcite) also
//! runs the rest, and two of them are among the commonest subqueries people write: the as-of
//! lookup `(SELECT price FROM p WHERE p.sym = o.sym AND p.ts <= o.ts ORDER BY p.ts DESC LIMIT 1)`
//! and the running count `(SELECT count(*) FROM o o2 WHERE o2.ts < o.ts)`.
//!
//! Such a subquery is computed once per distinct value of the outer columns it reads, its
//! *domain* (the unnesting of Neumann and Kemper): the domain is joined with the subquery's input
//! on the subquery's whole WHERE clause (outer columns read from the domain), the aggregate is
//! grouped by the domain, and the outer query is left-joined with the result on the domain's
//! columns, NULLs equal. A domain value that no row matched has no group: there the subquery's
//! value is what its select list gives over no rows (`count` 0, the others NULL), as in Postgres.
//!
//! The shape taken is a subquery that aggregates without GROUP BY, over a WHERE clause
//! ([`super::subquery`] has made a plain lookup one), with outer columns in its WHERE, aggregate
//! arguments or select list. Others are left to DataFusion, whose refusal becomes 0A000.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, NullEquality, Result, TableReference};
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, Filter, JoinType, LogicalPlan, LogicalPlanBuilder, Operator,
    Projection, Subquery, lit, when,
};

/// `plan` with every correlated scalar subquery DataFusion cannot decorrelate, of the shape this
/// module takes, joined with its outer query instead.
pub fn scalar_subqueries(plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut joined = 0;
    plan.transform_up_with_subqueries(|node| join_in(node, &mut joined))
        .map(|t| t.data)
}

/// `node` (a projection or a filter) with its subqueries of this module's shape joined in;
/// `joined` counts the subqueries joined so far, for unique names.
fn join_in(node: LogicalPlan, joined: &mut usize) -> Result<Transformed<LogicalPlan>> {
    match node {
        LogicalPlan::Projection(p) => {
            let (mut exprs, mut input) = (p.expr.clone(), Arc::clone(&p.input));
            while let Some(sq) = first_taken(&exprs, &input) {
                let Some((with, value)) = join_subquery(&input, &sq, joined)? else {
                    break;
                };
                exprs = exprs
                    .into_iter()
                    .map(|e| replace(e, &sq, &value))
                    .collect::<Result<_>>()?;
                input = with;
            }
            if exprs == p.expr {
                return Ok(Transformed::no(LogicalPlan::Projection(p)));
            }
            // A changed column keeps its name (a subquery's was its text).
            let exprs = exprs
                .into_iter()
                .zip(&p.expr)
                .zip(p.schema.iter())
                .map(|((e, was), (qualifier, field))| match e {
                    e if e == *was || matches!(e, Expr::Alias(_)) => e,
                    e => e.alias_qualified(qualifier.cloned(), field.name()),
                })
                .collect();
            Ok(Transformed::yes(LogicalPlan::Projection(
                Projection::try_new(exprs, input)?,
            )))
        }
        LogicalPlan::Filter(f) => {
            let (mut predicate, mut input) = (f.predicate, f.input);
            let columns: Vec<Expr> = input
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            let mut changed = false;
            while let Some(sq) = first_taken(std::slice::from_ref(&predicate), &input) {
                let Some((with, value)) = join_subquery(&input, &sq, joined)? else {
                    break;
                };
                predicate = replace(predicate, &sq, &value)?;
                input = with;
                changed = true;
            }
            let filter = LogicalPlan::Filter(Filter::try_new(predicate, input)?);
            if !changed {
                return Ok(Transformed::no(filter));
            }
            // The filter passes on its input's columns, not the joined subquery's.
            let restored = LogicalPlanBuilder::from(filter).project(columns)?.build()?;
            Ok(Transformed::yes(restored))
        }
        node => Ok(Transformed::no(node)),
    }
}

/// The first scalar subquery in `exprs` this module joins in over `input`.
fn first_taken(exprs: &[Expr], input: &LogicalPlan) -> Option<Subquery> {
    let mut found = None;
    for e in exprs {
        let _ = e.apply(|e| {
            if let Expr::ScalarSubquery(sq) = e
                && taken(sq, input)
            {
                found = Some(sq.clone());
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if found.is_some() {
            break;
        }
    }
    found
}

/// `e` with subquery `sq` replaced by `value`.
fn replace(e: Expr, sq: &Subquery, value: &Expr) -> Result<Expr> {
    e.transform_up(|e| match e {
        Expr::ScalarSubquery(s) if s == *sq => Ok(Transformed::yes(value.clone())),
        e => Ok(Transformed::no(e)),
    })
    .map(|t| t.data)
}

/// The parts of a subquery of the shape taken: `SELECT item FROM .. WHERE ..` where `item`
/// aggregates (no GROUP BY).
struct Shape<'a> {
    /// The select item over the aggregate's output (`None`: the aggregate is the subquery's
    /// root); projections stacked on the aggregate (Rivulet's typing adds some) are composed.
    item: Option<Expr>,
    aggregates: &'a [Expr],
    /// The aggregate's input: its conjuncts, and what they filter.
    conjuncts: Vec<&'a Expr>,
    from: &'a Arc<LogicalPlan>,
    /// The aggregate's input schema (what its arguments are typed against).
    aggregated: &'a LogicalPlan,
}

fn shape(plan: &LogicalPlan) -> Option<Shape<'_>> {
    let mut item: Option<Expr> = None;
    let mut node = plan;
    while let LogicalPlan::Projection(p) = node {
        let [e] = p.expr.as_slice() else {
            return None;
        };
        let e = e.clone().unalias();
        item = Some(match item {
            None => e,
            Some(upper) => {
                let (qualifier, field) = p.schema.qualified_field(0);
                let output = Column::new(qualifier.cloned(), field.name());
                upper
                    .transform_up(|u| match u {
                        Expr::Column(ref c) if *c == output => Ok(Transformed::yes(e.clone())),
                        u => Ok(Transformed::no(u)),
                    })
                    .ok()?
                    .data
            }
        });
        node = p.input.as_ref();
    }
    let LogicalPlan::Aggregate(a) = node else {
        return None;
    };
    if !a.group_expr.is_empty() || (item.is_none() && a.aggr_expr.len() != 1) {
        return None;
    }
    let mut conjuncts = Vec::new();
    let mut from = &a.input;
    while let LogicalPlan::Filter(f) = from.as_ref() {
        conjuncts.extend(split_conjunction(&f.predicate));
        from = &f.input;
    }
    Some(Shape {
        item,
        aggregates: &a.aggr_expr,
        conjuncts,
        from,
        aggregated: a.input.as_ref(),
    })
}

/// Whether this module joins `sq` in over `input`: it is correlated, of the shape taken, with
/// outer columns of `input` only and outside its FROM, and DataFusion would not decorrelate it.
fn taken(sq: &Subquery, input: &LogicalPlan) -> bool {
    if sq.outer_ref_columns.is_empty() {
        return false;
    }
    let Some(shape) = shape(&sq.subquery) else {
        return false;
    };
    let all_outer = sq.outer_ref_columns.iter().all(|e| match e {
        Expr::OuterReferenceColumn(_, c) => input.schema().has_column(c),
        _ => false,
    });
    let exprs = shape
        .item
        .iter()
        .chain(shape.aggregates)
        .chain(shape.conjuncts.iter().copied());
    let nested = exprs.clone().any(|e| reads_outer_in_subquery(e, input));
    if !all_outer || nested || outer_inside(shape.from) {
        return false;
    }
    // DataFusion's: every outer column in conjuncts of the form `inner = outer expression`.
    let decorrelated = shape.item.as_ref().is_none_or(|e| !e.contains_outer())
        && !shape.aggregates.iter().any(Expr::contains_outer)
        && shape
            .conjuncts
            .iter()
            .filter(|c| c.contains_outer())
            .all(|c| pulls_up(c));
    !decorrelated
}

/// Whether correlated conjunct `e` is one DataFusion pulls above an aggregate: a column (or a
/// cast of one) equal to an expression of no inner column.
fn pulls_up(e: &Expr) -> bool {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Eq,
        right,
    }) = e
    else {
        return false;
    };
    let column = |e: &Expr| match e {
        Expr::Column(_) => true,
        Expr::Cast(Cast { expr, .. }) => matches!(expr.as_ref(), Expr::Column(_)),
        _ => false,
    };
    (column(left) && !right.any_column_refs()) || (column(right) && !left.any_column_refs())
}

/// Whether `e` has a subquery that reads a column of `input` (the outer query of the subquery
/// being joined in, two levels up from it): only the subquery's own outer columns are joined in.
fn reads_outer_in_subquery(e: &Expr, input: &LogicalPlan) -> bool {
    e.exists(|e| {
        let sq = match e {
            Expr::ScalarSubquery(sq) => sq,
            Expr::Exists(exists) => &exists.subquery,
            Expr::InSubquery(in_subquery) => &in_subquery.subquery,
            _ => return Ok(false),
        };
        Ok(sq.outer_ref_columns.iter().any(|o| match o {
            Expr::OuterReferenceColumn(_, c) => input.schema().has_column(c),
            _ => true,
        }))
    })
    .unwrap_or(true)
}

/// Whether `plan` reads an outer column anywhere (its nested subqueries included).
fn outer_inside(plan: &LogicalPlan) -> bool {
    let mut outer = false;
    let walked = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            outer = e.contains_outer();
            Ok(stop_if(outer))
        })?;
        Ok(stop_if(outer))
    });
    outer || walked.is_err()
}

fn stop_if(found: bool) -> TreeNodeRecursion {
    if found {
        TreeNodeRecursion::Stop
    } else {
        TreeNodeRecursion::Continue
    }
}

/// `input` left-joined with subquery `sq` computed per domain value, and the expression of the
/// subquery's value over that join; `None` where the subquery's parts do not plan.
fn join_subquery(
    input: &Arc<LogicalPlan>,
    sq: &Subquery,
    joined: &mut usize,
) -> Result<Option<(Arc<LogicalPlan>, Expr)>> {
    let Some(shape) = shape(&sq.subquery) else {
        return Ok(None);
    };
    *joined += 1;
    let domain_name = TableReference::bare(format!("__rivulet_domain{joined}"));
    let result_name = TableReference::bare(format!("__rivulet_subquery{joined}"));

    // The outer columns read, each once, and the domain's column for each.
    let mut outer: Vec<Column> = Vec::new();
    for e in &sq.outer_ref_columns {
        if let Expr::OuterReferenceColumn(_, c) = e
            && !outer.contains(c)
        {
            outer.push(c.clone());
        }
    }
    let names: Vec<String> = (0..outer.len()).map(|i| format!("c{i}")).collect();
    let domain_columns: HashMap<&Column, Expr> = outer
        .iter()
        .zip(&names)
        .map(|(c, n)| (c, Expr::Column(Column::new(Some(domain_name.clone()), n))))
        .collect();
    let from_domain = |e: &Expr| -> Result<Expr> {
        e.clone()
            .transform_up(|e| match e {
                Expr::OuterReferenceColumn(_, ref c) => match domain_columns.get(c) {
                    Some(d) => Ok(Transformed::yes(d.clone())),
                    None => Ok(Transformed::no(e)),
                },
                e => Ok(Transformed::no(e)),
            })
            .map(|t| t.data)
    };

    let domain = LogicalPlanBuilder::from(Arc::clone(input))
        .project(
            outer
                .iter()
                .zip(&names)
                .map(|(c, n)| Expr::Column(c.clone()).alias(n)),
        )?
        .distinct()?
        .alias(domain_name.clone())?
        .build()?;
    let mut per_domain =
        LogicalPlanBuilder::from(domain).cross_join(shape.from.as_ref().clone())?;
    let conjuncts = shape
        .conjuncts
        .iter()
        .map(|c| from_domain(c))
        .collect::<Result<Vec<_>>>()?;
    if let Some(predicate) = conjunction(conjuncts) {
        per_domain = per_domain.filter(predicate)?;
    }
    let group: Vec<Expr> = names
        .iter()
        .map(|n| Expr::Column(Column::new(Some(domain_name.clone()), n)))
        .collect();
    // An aggregate keeps its name: the select item reads it by that.
    let aggregates = shape
        .aggregates
        .iter()
        .map(|a| {
            let rewritten = from_domain(a)?;
            Ok(match rewritten {
                r if r == *a || matches!(r, Expr::Alias(_)) => r,
                r => r.alias(a.schema_name().to_string()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let aggregated = per_domain.aggregate(group.clone(), aggregates)?.build()?;

    // The value over no rows: the select item with each aggregate at its value for no input and
    // the outer columns read from the outer query.
    let mut empty_values: HashMap<Column, Expr> = HashMap::new();
    for (i, a) in shape.aggregates.iter().enumerate() {
        let at_empty = a
            .clone()
            .transform_up(|e| match &e {
                Expr::AggregateFunction(f) => {
                    let t = e.get_type(shape.aggregated.schema())?;
                    Ok(Transformed::yes(Expr::Literal(
                        f.func.default_value(&t)?,
                        None,
                    )))
                }
                _ => Ok(Transformed::no(e)),
            })?
            .data
            .unalias();
        let (qualifier, field) = aggregated.schema().qualified_field(group.len() + i);
        empty_values.insert(Column::new(qualifier.cloned(), field.name()), at_empty);
    }
    let item = match shape.item {
        Some(item) => item,
        None => {
            let (q, f) = aggregated.schema().qualified_field(group.len());
            Expr::Column(Column::new(q.cloned(), f.name()))
        }
    };
    let at_empty = item
        .clone()
        .transform_up(|e| match e {
            Expr::Column(ref c) => match empty_values.get(c) {
                Some(v) => Ok(Transformed::yes(v.clone())),
                None => Ok(Transformed::no(e)),
            },
            Expr::OuterReferenceColumn(_, c) => Ok(Transformed::yes(Expr::Column(c))),
            e => Ok(Transformed::no(e)),
        })?
        .data
        .unalias();

    let mut outputs = vec![from_domain(&item)?.unalias().alias("value")];
    outputs.extend(group.iter().zip(&names).map(|(g, n)| g.clone().alias(n)));
    outputs.push(lit(true).alias("matched"));
    let result = LogicalPlanBuilder::from(aggregated)
        .project(outputs)?
        .alias(result_name.clone())?
        .build()?;
    let value_type = result.schema().field(0).data_type().clone();

    let keys: Vec<Column> = names
        .iter()
        .map(|n| Column::new(Some(result_name.clone()), n))
        .collect();
    let with = LogicalPlanBuilder::from(Arc::clone(input))
        .join_detailed(
            result,
            JoinType::Left,
            (outer, keys),
            None,
            NullEquality::NullEqualsNull,
        )?
        .build()?;
    let value = Expr::Column(Column::new(Some(result_name.clone()), "value"));
    let value = match at_empty {
        Expr::Literal(v, _) if v.is_null() => value,
        empty => {
            let matched = Expr::Column(Column::new(Some(result_name), "matched"));
            when(
                matched.is_null(),
                empty.cast_to(&value_type, with.schema())?,
            )
            .otherwise(value)?
        }
    };
    Ok(Some((Arc::new(with), value)))
}
