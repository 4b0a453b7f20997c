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
//!
//! DataFusion plans EXISTS and IN only as a filter's conjuncts (semi and anti joins). Used as a
//! value (`SELECT id, EXISTS (..) AS has_orders`, under OR, in CASE) they become scalar subqueries
//! first ([`as_value`]): `EXISTS (q)` is `(SELECT count(*) > 0 FROM q)`, and `x IN (SELECT y ..)`
//! is true if a row has `y = x`, else NULL if `x` is NULL (of a set that is not empty) or a `y`
//! is, else false, each part a count of its own.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    Column, DFSchema, NullEquality, Result, ScalarValue, Spans, TableReference, internal_err,
};
use datafusion::functions_aggregate::count::count_all;
use datafusion::logical_expr::expr::{
    Cast, Exists, InSubquery, SetComparison, SetQuantifier, TryCast,
};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    BinaryExpr, Distinct, EmptyRelation, Expr, ExprSchemable, Filter, JoinType, LogicalPlan,
    LogicalPlanBuilder, Operator, Projection, Subquery, lit, when,
};

/// `plan` with every correlated scalar subquery DataFusion cannot decorrelate, of the shape this
/// module takes, joined with its outer query instead.
pub fn scalar_subqueries(plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut joined = 0;
    plan.transform_up_with_subqueries(|node| {
        let node = node
            .map_expressions(|e| e.transform_up(|e| Ok(declared_value(e))))?
            .data;
        let node = values_rows(node)?;
        let node = super::set_operations::multisets(node)?;
        let node = super::lateral::lateral(node, &mut joined)?;
        let valued = as_values(node)?;
        let transformed = valued.transformed;
        let joined_in = join_in(valued.data, &mut joined)?;
        Ok(Transformed::new_transformed(
            joined_in.data,
            transformed || joined_in.transformed,
        ))
    })
    .map(|t| t.data)
}

/// A VALUES list with a subquery in a row (`INSERT INTO t VALUES ((SELECT max(id) + 1 FROM
/// t))`) as one projection of no table per row, in a UNION ALL: DataFusion computes a VALUES
/// list's rows while it plans the query, before any subquery has run.
fn values_rows(node: LogicalPlan) -> Result<LogicalPlan> {
    let LogicalPlan::Values(values) = node else {
        return Ok(node);
    };
    if !values.values.iter().flatten().any(has_subquery) {
        return Ok(LogicalPlan::Values(values));
    }
    let one_row = LogicalPlan::EmptyRelation(EmptyRelation {
        produce_one_row: true,
        schema: Arc::new(DFSchema::empty()),
    });
    let mut rows = values.values.into_iter().map(|row| {
        let exprs = row.into_iter().zip(values.schema.fields()).map(|(e, f)| {
            let typed = match e.get_type(&DFSchema::empty()) {
                Ok(t) if t == *f.data_type() => e,
                _ => e.cast_to(f.data_type(), &DFSchema::empty())?,
            };
            Ok(typed.alias(f.name()))
        });
        LogicalPlanBuilder::from(one_row.clone())
            .project(exprs.collect::<Result<Vec<_>>>()?)?
            .build()
    });
    let Some(first) = rows.next() else {
        return internal_err!("a VALUES list without rows");
    };
    let mut union = LogicalPlanBuilder::from(first?);
    for row in rows {
        union = union.union(row?)?;
    }
    union.build()
}

/// An uncorrelated scalar subquery whose value's field has metadata (a numeric's display rule,
/// a type's name), cast to that field: DataFusion runs one on its own, before the query, and its
/// physical form of the value drops the metadata, which then fails the plan's schema check
/// (`SELECT (SELECT avg(x) FROM t)`). The cast keeps it, as [`super::numeric`]'s rules do.
fn declared_value(e: Expr) -> Transformed<Expr> {
    let Expr::ScalarSubquery(sq) = e else {
        return Transformed::no(e);
    };
    let Some(field) = sq.subquery.schema().fields().first().cloned() else {
        return Transformed::no(Expr::ScalarSubquery(sq));
    };
    if !sq.outer_ref_columns.is_empty() || field.metadata().is_empty() {
        return Transformed::no(Expr::ScalarSubquery(sq));
    }
    let field = Arc::new(field.as_ref().clone().with_nullable(true));
    Transformed::yes(Expr::Cast(Cast::new_from_field(
        Box::new(Expr::ScalarSubquery(sq)),
        field,
    )))
}

/// `node` with the EXISTS and IN subqueries DataFusion cannot plan where they are (anywhere in a
/// projection, below the top of a filter's conjuncts) as scalar subqueries ([`as_value`]).
fn as_values(node: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    match node {
        LogicalPlan::Projection(p) => {
            let exprs = p
                .expr
                .iter()
                .map(|e| as_value(e.clone(), &p.input))
                .collect::<Result<Vec<_>>>()?;
            if exprs == p.expr {
                return Ok(Transformed::no(LogicalPlan::Projection(p)));
            }
            let exprs = keep_names(exprs, &p);
            Ok(Transformed::yes(LogicalPlan::Projection(
                Projection::try_new(exprs, p.input)?,
            )))
        }
        LogicalPlan::Filter(f) => {
            let conjuncts = split_conjunction(&f.predicate)
                .into_iter()
                .map(|c| match c {
                    // A semi or anti join of DataFusion's, unless it reads the outer row in
                    // its FROM (`EXISTS (SELECT 1 FROM unnest(t.xs) x WHERE x = 5)`).
                    Expr::Exists(Exists { subquery, .. })
                    | Expr::InSubquery(InSubquery { subquery, .. })
                        if !super::lateral::reads_outer_in_from(&subquery.subquery) =>
                    {
                        Ok(c.clone())
                    }
                    c => as_value(c.clone(), &f.input),
                })
                .collect::<Result<Vec<_>>>()?;
            let Some(predicate) = conjunction(conjuncts) else {
                return Ok(Transformed::no(LogicalPlan::Filter(f)));
            };
            if predicate == f.predicate {
                return Ok(Transformed::no(LogicalPlan::Filter(f)));
            }
            Ok(Transformed::yes(LogicalPlan::Filter(Filter::try_new(
                predicate, f.input,
            )?)))
        }
        node => Ok(Transformed::no(node)),
    }
}

/// `e` with each EXISTS and IN subquery in it as scalar subqueries of the same value.
fn as_value(e: Expr, input: &LogicalPlan) -> Result<Expr> {
    e.transform_up(|e| match e {
        Expr::Exists(Exists { subquery, negated }) => {
            let body = without_select_list(&subquery.subquery);
            let value = nonempty(body)?;
            Ok(Transformed::yes(if negated {
                Expr::Not(Box::new(value))
            } else {
                value
            }))
        }
        Expr::SetComparison(SetComparison {
            expr,
            subquery,
            op,
            quantifier,
        }) => match compared(&expr, op, quantifier, &subquery, input)? {
            Some(value) => Ok(Transformed::yes(value)),
            None => Ok(Transformed::no(Expr::SetComparison(SetComparison {
                expr,
                subquery,
                op,
                quantifier,
            }))),
        },
        Expr::InSubquery(InSubquery {
            expr,
            subquery,
            negated,
        }) => match in_value(&expr, &subquery, input)? {
            Some(value) => Ok(Transformed::yes(if negated {
                Expr::Not(Box::new(value))
            } else {
                value
            })),
            None => Ok(Transformed::no(Expr::InSubquery(InSubquery {
                expr,
                subquery,
                negated,
            }))),
        },
        e => Ok(Transformed::no(e)),
    })
    .map(|t| t.data)
}

/// What a subquery's rows are without its select list (all EXISTS asks), or `plan` itself.
fn without_select_list(plan: &LogicalPlan) -> LogicalPlan {
    match plan {
        LogicalPlan::Projection(p) => without_select_list(&p.input),
        LogicalPlan::Distinct(Distinct::All(input)) => without_select_list(input),
        other => other.clone(),
    }
}

/// `(SELECT count(*) > 0 FROM body)`: whether `body` has a row.
fn nonempty(body: LogicalPlan) -> Result<Expr> {
    let counted = LogicalPlanBuilder::from(body)
        .aggregate(Vec::<Expr>::new(), vec![count_all()])?
        .build()?;
    let count = Expr::Column(Column::from(counted.schema().qualified_field(0)));
    let plan = LogicalPlanBuilder::from(counted)
        .project(vec![count.gt(lit(0_i64))])?
        .build()?;
    Ok(Expr::ScalarSubquery(Subquery {
        outer_ref_columns: plan.all_out_ref_exprs(),
        subquery: Arc::new(plan),
        spans: Spans::new(),
    }))
}

/// `x IN (subquery)` as counts (see the module's documentation); `None` for a subquery of more
/// than one column or an `x` that holds a subquery.
fn in_value(x: &Expr, sq: &Subquery, input: &LogicalPlan) -> Result<Option<Expr>> {
    compared(x, Operator::Eq, SetQuantifier::Any, sq, input)
}

/// `x op ANY (subquery)` and `x op ALL (subquery)` (`IN` is `= ANY`) as counts, as Postgres
/// defines them: ANY is true if a row compares true, else NULL if one compares NULL, else false
/// (no rows: false); ALL is false if a row compares false, else NULL if one compares NULL, else
/// true (no rows: true). DataFusion's own plan read `x` as the subquery's column where both have
/// the same name (`salary > ANY (SELECT salary FROM emp ..)` over `emp`), a wrong answer. `None`
/// for a subquery of more than one column or an `x` that holds a subquery.
fn compared(
    x: &Expr,
    op: Operator,
    quantifier: SetQuantifier,
    sq: &Subquery,
    input: &LogicalPlan,
) -> Result<Option<Expr>> {
    let LogicalPlan::Projection(p) = sq.subquery.as_ref() else {
        return Ok(None);
    };
    let [y] = p.expr.as_slice() else {
        return Ok(None);
    };
    if has_subquery(x) {
        return Ok(None);
    }
    let y = y.clone().unalias();
    // `x` read inside the subquery: its columns are the outer query's.
    let outer_x = x
        .clone()
        .transform_up(|e| match e {
            Expr::Column(c) => {
                let (_, field) = input.schema().qualified_field_from_column(&c)?;
                Ok(Transformed::yes(Expr::OuterReferenceColumn(
                    Arc::clone(field),
                    c,
                )))
            }
            e => Ok(Transformed::no(e)),
        })?
        .data;
    // The subquery's rows under a name of their own, where it reads no outer column itself:
    // DataFusion's decorrelation reads an outer column as the inner one of the same name
    // (`id = ANY (SELECT boss FROM emp ..)` over `emp`).
    let name = TableReference::bare("__rivulet_compared");
    let mut names = std::collections::HashSet::new();
    let renamed = !outer_inside(&p.input)
        && p.input
            .schema()
            .fields()
            .iter()
            .all(|f| names.insert(f.name()));
    let (body, y) = if renamed {
        let body = LogicalPlanBuilder::from(Arc::clone(&p.input))
            .alias(name.clone())?
            .build()?;
        let y = y
            .transform_up(|e| match e {
                Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new(
                    Some(name.clone()),
                    c.name,
                )))),
                e => Ok(Transformed::no(e)),
            })?
            .data;
        (body, y)
    } else {
        (p.input.as_ref().clone(), y)
    };
    // One filter: DataFusion pulls a subquery's correlation out of the filter under its aggregate.
    let filtered = |predicate: Expr| -> Result<LogicalPlan> {
        match &body {
            LogicalPlan::Filter(f) => LogicalPlanBuilder::from(Arc::clone(&f.input))
                .filter(f.predicate.clone().and(predicate))?
                .build(),
            body => LogicalPlanBuilder::from(body.clone())
                .filter(predicate)?
                .build(),
        }
    };
    let comparison = Expr::BinaryExpr(BinaryExpr::new(Box::new(outer_x), op, Box::new(y.clone())));
    let unknown = if op == Operator::Eq {
        // As IN has it: `x` NULL over rows, or a NULL among them.
        let rows = nonempty(body.clone())?;
        let null_items = nonempty(filtered(y.is_null())?)?;
        x.clone().is_null().and(rows).or(null_items)
    } else {
        nonempty(filtered(comparison.clone().is_null())?)?
    };
    let value = match quantifier {
        SetQuantifier::Any => when(nonempty(filtered(comparison)?)?, lit(true))
            .when(unknown, lit(ScalarValue::Boolean(None)))
            .otherwise(lit(false))?,
        SetQuantifier::All => when(nonempty(filtered(comparison.is_false())?)?, lit(false))
            .when(unknown, lit(ScalarValue::Boolean(None)))
            .otherwise(lit(true))?,
    };
    Ok(Some(value))
}

/// Whether `e` is a NULL constant (perhaps cast, as a numeric's display rule is put on it).
fn null_constant(e: &Expr) -> bool {
    match e {
        Expr::Literal(v, _) => v.is_null(),
        Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => null_constant(expr),
        Expr::Alias(a) => null_constant(&a.expr),
        _ => false,
    }
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// `exprs`, the new expressions of projection `p`, each changed one named as `p`'s was.
pub(super) fn keep_names(exprs: Vec<Expr>, p: &Projection) -> Vec<Expr> {
    exprs
        .into_iter()
        .zip(&p.expr)
        .zip(p.schema.iter())
        .map(|((e, was), (qualifier, field))| match e {
            e if e == *was || matches!(e, Expr::Alias(_)) => e,
            e => e.alias_qualified(qualifier.cloned(), field.name()),
        })
        .collect()
}

/// `node` (a projection or a filter) with its subqueries of this module's shape joined in;
/// `joined` counts the subqueries joined so far, for unique names.
fn join_in(node: LogicalPlan, joined: &mut usize) -> Result<Transformed<LogicalPlan>> {
    match node {
        LogicalPlan::Projection(p) => {
            let (mut exprs, mut input) = (p.expr.clone(), Arc::clone(&p.input));
            while let Some(sq) = first_taken(&exprs, &input) {
                let Some((with, value)) = join_any(&input, &sq, joined)? else {
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
            let exprs = keep_names(exprs, &p);
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
                let Some((with, value)) = join_any(&input, &sq, joined)? else {
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

/// `input` left-joined with subquery `sq` (one [`first_taken`] found), and the expression of
/// its value over that join: this module's shape, or one reading `input` in its FROM
/// ([`super::lateral`]'s).
fn join_any(
    input: &Arc<LogicalPlan>,
    sq: &Subquery,
    joined: &mut usize,
) -> Result<Option<(Arc<LogicalPlan>, Expr)>> {
    if taken(sq, input) {
        join_subquery(input, sq, joined)
    } else {
        super::lateral::scalar(input, sq, joined)
    }
}

/// The first scalar subquery in `exprs` this module joins in over `input`.
fn first_taken(exprs: &[Expr], input: &LogicalPlan) -> Option<Subquery> {
    let mut found = None;
    for e in exprs {
        let _ = e.apply(|e| {
            if let Expr::ScalarSubquery(sq) = e
                && (taken(sq, input) || super::lateral::takes_scalar(sq, input))
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
pub(super) fn outer_inside(plan: &LogicalPlan) -> bool {
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
    let value_field = Arc::new(result.schema().field(0).as_ref().clone());

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
        empty if null_constant(&empty) => value,
        empty => {
            let matched = Expr::Column(Column::new(Some(result_name), "matched"));
            let chosen = when(
                matched.is_null(),
                empty.cast_to(value_field.data_type(), with.schema())?,
            )
            .otherwise(value)?;
            // As the value's field: a CASE would drop its metadata (a numeric's display rule).
            Expr::Cast(Cast::new_from_field(Box::new(chosen), value_field))
        }
    };
    Ok(Some((Arc::new(with), value)))
}
