//! LATERAL FROM items: a right side of a join that reads the left row's columns.
//!
//! DataFusion plans such a right side as a subquery of the left row and runs only the simplest
//! (filters on the left row's columns, aggregates correlated by equalities). Two more are
//! computed here, over the left side:
//! - a right side that computes rows from one left row alone (Flink's `CROSS JOIN UNNEST`,
//!   `jsonb_array_elements(t.doc)`): over the left side itself ([`unnested`]);
//! - any other of the shapes [`step`] takes, notably the top-N per row `CROSS JOIN LATERAL
//!   (SELECT .. ORDER BY .. LIMIT 3)` and aggregates over inequalities: once per distinct value
//!   of the left columns it reads, its *domain*, then joined with the left side on them, NULLs
//!   equal ([`per_domain`]). `LIMIT` becomes `ROW_NUMBER()` per domain value (a top-N in a view),
//!   and an aggregate without GROUP BY gets its value over no rows where no row matched.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, NullEquality, Result, ScalarValue, TableReference, internal_err};
use datafusion::functions_nested::expr_fn::cardinality;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    Aggregate, Distinct, Expr, ExprFunctionExt, ExprSchemable, FetchType, GroupingSet, Join,
    JoinType, LogicalPlan, LogicalPlanBuilder, Projection, SkipType, SortExpr, Subquery,
    SubqueryAlias, lit, when,
};

use super::decorrelate::outer_inside;

/// `node` with a lateral right side computed over its left side, if it is a join with one that
/// DataFusion cannot run and of a shape taken here; else `node`. `joined` counts the rewrites
/// so far, for unique names.
pub(super) fn lateral(node: LogicalPlan, joined: &mut usize) -> Result<LogicalPlan> {
    let LogicalPlan::Join(join) = node else {
        return Ok(node);
    };
    let (alias, body) = right_body(&join);
    let outer = body.all_out_ref_exprs();
    let reads_left = !outer.is_empty()
        && outer.iter().all(|e| match e {
            Expr::OuterReferenceColumn(_, c) => join.left.schema().has_column(c),
            _ => false,
        });
    if !reads_left || !matches!(join.join_type, JoinType::Inner | JoinType::Left) {
        return Ok(LogicalPlan::Join(join));
    }
    if per_row(body) && on_true(&join) && !(join.join_type == JoinType::Left && filters(body)) {
        return unnested(&join, alias, body, joined);
    }
    if datafusion_runs(body) {
        return Ok(LogicalPlan::Join(join));
    }
    let (alias, body) = (alias.clone(), body.clone());
    match per_domain(&join, alias, &body, joined)? {
        Some(plan) => Ok(plan),
        None => Ok(LogicalPlan::Join(join)),
    }
}

/// The join's right side under its alias, if it has one.
fn right_body(join: &Join) -> (Option<TableReference>, &LogicalPlan) {
    match join.right.as_ref() {
        LogicalPlan::SubqueryAlias(a) => match a.input.as_ref() {
            LogicalPlan::Subquery(sq) => (Some(a.alias.clone()), sq.subquery.as_ref()),
            other => (Some(a.alias.clone()), other),
        },
        LogicalPlan::Subquery(sq) => (None, sq.subquery.as_ref()),
        other => (None, other),
    }
}

/// Whether the join has no condition (`CROSS JOIN`, a comma, `ON TRUE`).
fn on_true(join: &Join) -> bool {
    join.on.is_empty()
        && join
            .filter
            .as_ref()
            .is_none_or(|f| matches!(f, Expr::Literal(ScalarValue::Boolean(Some(true)), _)))
}

/// Whether DataFusion runs lateral right side `body` itself: the left row's columns only in
/// filters, and no aggregate, LIMIT, DISTINCT or window (it decorrelates some aggregates, but
/// not all correctly: a HAVING clause kept the rows it should drop).
fn datafusion_runs(body: &LogicalPlan) -> bool {
    !body
        .exists(|node| {
            Ok(match node {
                LogicalPlan::Aggregate(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::Distinct(_)
                | LogicalPlan::Window(_) => true,
                LogicalPlan::Sort(s) => s.fetch.is_some(),
                LogicalPlan::Filter(_) => false,
                other => other.expressions().iter().any(Expr::contains_outer),
            })
        })
        .unwrap_or(true)
}

/// `t CROSS JOIN UNNEST(t.xs) AS u(x)` (Flink's way to flatten an array; also `t, UNNEST(..)`
/// and LATERAL): a right side that computes rows from one left row alone (projections, unnests
/// and filters over no table, reading the left row's columns) is computed over the left side
/// itself, each of its steps carrying the left row's columns along. DataFusion plans the right
/// side as a subquery of the left row and cannot run it. `LEFT JOIN UNNEST(..) ON TRUE` keeps a
/// row whose array is empty or NULL, with NULL for the element (the unnest reads such an array
/// as NULL and keeps NULLs).
fn unnested(
    join: &Join,
    alias: Option<TableReference>,
    body: &LogicalPlan,
    joined: &mut usize,
) -> Result<LogicalPlan> {
    let outer = join.join_type == JoinType::Left;
    *joined += 1;
    let carried: Vec<Column> = join.left.schema().columns();
    let rebased = rebase(body, &join.left, &carried, *joined, outer)?;
    // The join's columns: the left side's as they were, the right side's under its alias.
    let right_fields = join.right.schema().fields().len();
    let mut outputs: Vec<Expr> = carried.iter().cloned().map(Expr::Column).collect();
    for i in 0..right_fields {
        let (qualifier, field) = join.right.schema().qualified_field(i);
        let inner = Expr::Column(Column::new_unqualified(format!(
            "__rivulet_lateral{joined}_{i}"
        )));
        let qualifier = alias.clone().or_else(|| qualifier.cloned());
        outputs.push(inner.alias_qualified(qualifier, field.name()));
    }
    LogicalPlanBuilder::from(rebased).project(outputs)?.build()
}

/// Whether `plan` computes its rows from one row of nothing: projections, unnests and filters
/// down to a one-row empty relation.
fn per_row(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::EmptyRelation(e) => e.produce_one_row,
        LogicalPlan::Projection(p) => per_row(&p.input),
        LogicalPlan::Unnest(u) => per_row(&u.input),
        LogicalPlan::Filter(f) => per_row(&f.input),
        LogicalPlan::SubqueryAlias(a) => per_row(&a.input),
        _ => false,
    }
}

/// Whether `plan` has a filter.
fn filters(plan: &LogicalPlan) -> bool {
    plan.exists(|p| Ok(matches!(p, LogicalPlan::Filter(_))))
        .unwrap_or(true)
}

/// `plan` ([`per_row`]) computed over `left` instead of its one empty row: outer columns read
/// from `left`, every step carrying `carried` along, and the top step's own columns renamed
/// `__rivulet_lateral{n}_{i}` (a left column may have the same name). With `outer`, an empty or
/// NULL array unnests to one NULL.
fn rebase(
    plan: &LogicalPlan,
    left: &Arc<LogicalPlan>,
    carried: &[Column],
    n: usize,
    outer: bool,
) -> Result<LogicalPlan> {
    let rebased = rebase_step(plan, left, carried, outer)?;
    let own = rebased.schema().fields().len() - carried.len();
    let mut outputs = Vec::with_capacity(rebased.schema().fields().len());
    for i in 0..own {
        let (q, f) = rebased.schema().qualified_field(i);
        outputs.push(
            Expr::Column(Column::new(q.cloned(), f.name()))
                .alias(format!("__rivulet_lateral{n}_{i}")),
        );
    }
    outputs.extend(carried.iter().cloned().map(Expr::Column));
    LogicalPlanBuilder::from(rebased).project(outputs)?.build()
}

/// One step of [`rebase`]: its own columns first, then `carried`.
fn rebase_step(
    plan: &LogicalPlan,
    left: &Arc<LogicalPlan>,
    carried: &[Column],
    outer: bool,
) -> Result<LogicalPlan> {
    let from_left = |e: &Expr| -> Result<Expr> {
        e.clone()
            .transform_up(|e| match e {
                Expr::OuterReferenceColumn(_, c) => Ok(Transformed::yes(Expr::Column(c))),
                e => Ok(Transformed::no(e)),
            })
            .map(|t| t.data)
    };
    match plan {
        LogicalPlan::EmptyRelation(_) => Ok(left.as_ref().clone()),
        LogicalPlan::Projection(p) => {
            let input = rebase_step(&p.input, left, carried, outer)?;
            let mut exprs = p.expr.iter().map(from_left).collect::<Result<Vec<_>>>()?;
            exprs.extend(carried.iter().cloned().map(Expr::Column));
            LogicalPlanBuilder::from(input).project(exprs)?.build()
        }
        LogicalPlan::Unnest(u) => {
            let mut input = rebase_step(&u.input, left, carried, outer)?;
            let mut options = u.options.clone();
            if outer {
                // An empty array as NULL, and NULLs kept: one row of NULL.
                let exprs = input
                    .schema()
                    .columns()
                    .into_iter()
                    .map(|c| {
                        if !u.exec_columns.contains(&c) {
                            return Ok(Expr::Column(c));
                        }
                        let array = Expr::Column(c.clone());
                        let filled = cardinality(array.clone()).gt(lit(0_u64));
                        Ok(when(filled, array)
                            .end()?
                            .alias_qualified(c.relation.clone(), c.name.clone()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                input = LogicalPlanBuilder::from(input).project(exprs)?.build()?;
                options = options.with_preserve_nulls(true);
            }
            LogicalPlanBuilder::from(input)
                .unnest_columns_with_options(u.exec_columns.clone(), options)?
                .build()
        }
        LogicalPlan::Filter(f) => {
            let input = rebase_step(&f.input, left, carried, outer)?;
            LogicalPlanBuilder::from(input)
                .filter(from_left(&f.predicate)?)?
                .build()
        }
        LogicalPlan::SubqueryAlias(a) => rebase_step(&a.input, left, carried, outer),
        other => internal_err!(
            "a lateral step of kind {} was not expected",
            other.display()
        ),
    }
}

/// The lateral join `join` of right side `body` (under `alias`) computed once per value of its
/// domain; `None` where [`step`] does not take a part of `body`.
fn per_domain(
    join: &Join,
    alias: Option<TableReference>,
    body: &LogicalPlan,
    joined: &mut usize,
) -> Result<Option<LogicalPlan>> {
    // The join's own condition, its equalities included.
    let mut condition: Vec<Expr> = join
        .on
        .iter()
        .map(|(l, r)| l.clone().eq(r.clone()))
        .collect();
    condition.extend(join.filter.iter().cloned());
    let right = Right {
        body,
        alias,
        names: join.right.schema(),
    };
    let Some(plan) = domain_join(&join.left, &right, join.join_type, condition, joined)? else {
        return Ok(None);
    };
    let kept: Vec<Expr> = join
        .schema
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    Ok(Some(LogicalPlanBuilder::from(plan).project(kept)?.build()?))
}

/// A correlated scalar subquery `sq` of `input` that reads `input`'s columns in its FROM (`(SELECT
/// sum(x) FROM unnest(t.xs) x)`, `jsonb_array_elements(t.doc)`), which DataFusion cannot
/// decorrelate: whether this module takes it.
pub(super) fn takes_scalar(sq: &Subquery, input: &LogicalPlan) -> bool {
    let all_outer = !sq.outer_ref_columns.is_empty()
        && sq.outer_ref_columns.iter().all(|e| match e {
            Expr::OuterReferenceColumn(_, c) => input.schema().has_column(c),
            _ => false,
        });
    all_outer && single_row(&sq.subquery) && outer_inside(from(&sq.subquery))
}

/// `input` left-joined with scalar subquery `sq` ([`takes_scalar`]) computed per domain value, and
/// the subquery's value over that join; `None` where a part of it is not taken.
pub(super) fn scalar(
    input: &Arc<LogicalPlan>,
    sq: &Subquery,
    joined: &mut usize,
) -> Result<Option<(Arc<LogicalPlan>, Expr)>> {
    let alias = TableReference::bare(format!("__rivulet_scalar{}", *joined + 1));
    let right = Right {
        body: &sq.subquery,
        alias: Some(alias.clone()),
        names: sq.subquery.schema(),
    };
    let Some(plan) = domain_join(input, &right, JoinType::Left, vec![], joined)? else {
        return Ok(None);
    };
    let value = Expr::Column(Column::new(
        Some(alias),
        sq.subquery.schema().field(0).name(),
    ));
    Ok(Some((Arc::new(plan), value)))
}

/// Whether query `plan` reads an outer row's columns in its FROM.
pub(super) fn reads_outer_in_from(plan: &LogicalPlan) -> bool {
    outer_inside(from(plan))
}

/// Whether `plan` gives one row: an aggregate without GROUP BY under projections.
fn single_row(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Projection(p) => single_row(&p.input),
        LogicalPlan::SubqueryAlias(a) => single_row(&a.input),
        LogicalPlan::Aggregate(a) => a.group_expr.is_empty(),
        _ => false,
    }
}

/// The FROM of query `plan`: below its select list, aggregate, WHERE, ORDER BY and LIMIT.
fn from(plan: &LogicalPlan) -> &LogicalPlan {
    match plan {
        LogicalPlan::Projection(p) => from(&p.input),
        LogicalPlan::SubqueryAlias(a) => from(&a.input),
        LogicalPlan::Aggregate(a) => from(&a.input),
        LogicalPlan::Filter(f) => from(&f.input),
        LogicalPlan::Sort(s) => from(&s.input),
        LogicalPlan::Limit(l) => from(&l.input),
        LogicalPlan::Distinct(Distinct::All(input)) => from(input),
        other => other,
    }
}

/// The right side of a lateral join: its plan, and the names its columns take.
struct Right<'a> {
    body: &'a LogicalPlan,
    /// The qualifier of every column, if not their own.
    alias: Option<TableReference>,
    names: &'a datafusion::common::DFSchemaRef,
}

/// `left` joined (`join_type`, on `condition` and the domain) with `right` computed per value of
/// its domain: `left`'s columns, then `right`'s under their names, then the domain's. `None` where
/// [`step`] does not take a part of `right`.
fn domain_join(
    left: &Arc<LogicalPlan>,
    right: &Right<'_>,
    join_type: JoinType,
    condition: Vec<Expr>,
    joined: &mut usize,
) -> Result<Option<LogicalPlan>> {
    *joined += 1;
    let name = TableReference::bare(format!("__rivulet_domain{joined}"));
    let mut outer: Vec<Column> = Vec::new();
    for e in right.body.all_out_ref_exprs() {
        if let Expr::OuterReferenceColumn(_, c) = e
            && !outer.contains(&c)
        {
            outer.push(c);
        }
    }
    let columns: Vec<Column> = (0..outer.len())
        .map(|i| Column::new(Some(name.clone()), format!("c{i}")))
        .collect();
    let plan = LogicalPlanBuilder::from(Arc::clone(left))
        .project(
            outer
                .iter()
                .zip(&columns)
                .map(|(o, c)| Expr::Column(o.clone()).alias(c.name.clone())),
        )?
        .distinct()?
        .alias(name)?
        .build()?;
    let domain = Domain {
        plan: Arc::new(plan),
        outer,
        columns,
        n: *joined,
    };
    let Some(stepped) = step(right.body, &domain)? else {
        return Ok(None);
    };
    // The right side's columns under their names, then the domain's.
    let mut outputs = Vec::with_capacity(stepped.schema().fields().len());
    for i in 0..right.names.fields().len() {
        let (q, f) = stepped.schema().qualified_field(i);
        let (right_q, right_f) = right.names.qualified_field(i);
        let qualifier = right.alias.clone().or_else(|| right_q.cloned());
        outputs.push(
            Expr::Column(Column::new(q.cloned(), f.name()))
                .alias_qualified(qualifier, right_f.name()),
        );
    }
    outputs.extend(domain.exprs());
    let right_side = LogicalPlanBuilder::from(stepped)
        .project(outputs)?
        .build()?;
    let plan = LogicalPlanBuilder::from(Arc::clone(left))
        .join_detailed(
            right_side,
            join_type,
            (domain.outer.clone(), domain.columns.clone()),
            conjunction(condition),
            NullEquality::NullEqualsNull,
        )?
        .build()?;
    Ok(Some(plan))
}

/// The distinct values of the left columns a lateral right side reads.
struct Domain {
    plan: Arc<LogicalPlan>,
    /// The left columns, and the domain's column for each.
    outer: Vec<Column>,
    columns: Vec<Column>,
    n: usize,
}

impl Domain {
    fn exprs(&self) -> impl Iterator<Item = Expr> + '_ {
        self.columns.iter().cloned().map(Expr::Column)
    }

    /// `e` with the left columns it reads read from the domain.
    fn read(&self, e: &Expr) -> Result<Expr> {
        e.clone()
            .transform_up(|e| match e {
                Expr::OuterReferenceColumn(_, ref c) => {
                    match self.outer.iter().position(|o| o == c) {
                        Some(i) => Ok(Transformed::yes(Expr::Column(self.columns[i].clone()))),
                        None => Ok(Transformed::no(e)),
                    }
                }
                e => Ok(Transformed::no(e)),
            })
            .map(|t| t.data)
    }

    /// `e` read from the domain ([`Self::read`]), keeping the name of `plan`'s column `i`.
    fn read_named(&self, e: &Expr, plan: &LogicalPlan, i: usize) -> Result<Expr> {
        let read = self.read(e)?;
        if read == *e || matches!(read, Expr::Alias(_)) {
            return Ok(read);
        }
        let (q, f) = plan.schema().qualified_field(i);
        Ok(read.alias_qualified(q.cloned(), f.name()))
    }
}

/// `plan` (part of a lateral right side) computed for every domain value: its columns, then the
/// domain's. `None` for a part not taken: a join, a union or a window reading the left row.
fn step(plan: &LogicalPlan, domain: &Domain) -> Result<Option<LogicalPlan>> {
    if let LogicalPlan::EmptyRelation(e) = plan
        && e.produce_one_row
        && e.schema.fields().is_empty()
    {
        // One row of no columns per domain value: the domain (a view has no empty relation).
        return Ok(Some(domain.plan.as_ref().clone()));
    }
    if !outer_inside(plan) {
        // The same rows for every domain value.
        let crossed = LogicalPlanBuilder::from(plan.clone())
            .cross_join(domain.plan.as_ref().clone())?
            .build()?;
        return Ok(Some(crossed));
    }
    let stepped = |input: &LogicalPlan| step(input, domain);
    Ok(Some(match plan {
        LogicalPlan::Filter(f) => {
            let Some(input) = stepped(&f.input)? else {
                return Ok(None);
            };
            LogicalPlanBuilder::from(input)
                .filter(domain.read(&f.predicate)?)?
                .build()?
        }
        LogicalPlan::Projection(p) => match stepped(&p.input)? {
            Some(input) => projected(p, plan, input, domain)?,
            None => return Ok(None),
        },
        LogicalPlan::SubqueryAlias(a) => match stepped(&a.input)? {
            Some(input) => realiased(a, input, domain)?,
            None => return Ok(None),
        },
        LogicalPlan::Distinct(Distinct::All(input)) => {
            let Some(input) = stepped(input)? else {
                return Ok(None);
            };
            LogicalPlanBuilder::from(input).distinct()?.build()?
        }
        // ORDER BY alone orders nothing a join keeps.
        LogicalPlan::Sort(s) if s.fetch.is_none() => match stepped(&s.input)? {
            Some(input) => input,
            None => return Ok(None),
        },
        LogicalPlan::Sort(s) => {
            let Some(fetch) = s.fetch else {
                return internal_err!("a sort without a fetch was taken as one with");
            };
            return numbered(&s.input, &s.expr, 0, Some(fetch), domain);
        }
        LogicalPlan::Limit(l) => {
            let (SkipType::Literal(skip), FetchType::Literal(fetch)) =
                (l.get_skip_type()?, l.get_fetch_type()?)
            else {
                return Ok(None);
            };
            return limited(&l.input, skip, fetch, domain);
        }
        LogicalPlan::Aggregate(a) => return aggregated(a, plan, domain),
        LogicalPlan::Subquery(sq) => return stepped(&sq.subquery),
        // The domain's columns pass through as the other columns do.
        LogicalPlan::Unnest(u) => match stepped(&u.input)? {
            Some(input) => LogicalPlanBuilder::from(input)
                .unnest_columns_with_options(u.exec_columns.clone(), u.options.clone())?
                .build()?,
            None => return Ok(None),
        },
        _ => return Ok(None),
    }))
}

/// Projection `p` (the plan `plan`) over `input`, a step's output, reading the domain.
fn projected(
    p: &Projection,
    plan: &LogicalPlan,
    input: LogicalPlan,
    domain: &Domain,
) -> Result<LogicalPlan> {
    let mut exprs = Vec::with_capacity(p.expr.len() + domain.columns.len());
    for (i, e) in p.expr.iter().enumerate() {
        exprs.push(domain.read_named(e, plan, i)?);
    }
    exprs.extend(domain.exprs());
    LogicalPlanBuilder::from(input).project(exprs)?.build()
}

/// `input`, a step's output, with its own columns under alias `a`'s name. A subquery alias, not a
/// projection: a projection from `v` to `f.v` makes a plan DataFusion's optimizer refuses (a
/// schema with both names); the domain's columns get their own qualifier back.
fn realiased(a: &SubqueryAlias, input: LogicalPlan, domain: &Domain) -> Result<LogicalPlan> {
    let aliased = LogicalPlanBuilder::from(input)
        .alias(a.alias.clone())?
        .build()?;
    let own = a.schema.fields().len();
    let mut exprs: Vec<Expr> = Vec::with_capacity(aliased.schema().fields().len());
    for i in 0..aliased.schema().fields().len() {
        let (q, f) = aliased.schema().qualified_field(i);
        let column = Expr::Column(Column::new(q.cloned(), f.name()));
        let domain_column = i.checked_sub(own).and_then(|d| domain.columns.get(d));
        exprs.push(match domain_column {
            Some(d) => column.alias_qualified(d.relation.clone(), d.name.clone()),
            None => column,
        });
    }
    LogicalPlanBuilder::from(aliased).project(exprs)?.build()
}

/// `LIMIT fetch OFFSET skip` over `node` per domain value: in the order of the sort under the
/// projections and aliases below the limit (which pass rows one by one), if there is one.
fn limited(
    node: &LogicalPlan,
    skip: usize,
    fetch: Option<usize>,
    domain: &Domain,
) -> Result<Option<LogicalPlan>> {
    match node {
        LogicalPlan::Sort(s) => {
            let fetch = match (fetch, s.fetch) {
                (Some(f), Some(g)) => Some(f.min(g.saturating_sub(skip))),
                (f, None) => f,
                (None, Some(g)) => Some(g.saturating_sub(skip)),
            };
            numbered(&s.input, &s.expr, skip, fetch, domain)
        }
        LogicalPlan::Projection(p) => match limited(&p.input, skip, fetch, domain)? {
            Some(input) => projected(p, node, input, domain).map(Some),
            None => Ok(None),
        },
        LogicalPlan::SubqueryAlias(a) => match limited(&a.input, skip, fetch, domain)? {
            Some(input) => realiased(a, input, domain).map(Some),
            None => Ok(None),
        },
        input => numbered(input, &[], skip, fetch, domain),
    }
}

/// Rows `skip + 1 ..= skip + fetch` of `input` in `order`, per domain value: `ROW_NUMBER()` over
/// the domain's columns (a top-N in a view).
fn numbered(
    input: &LogicalPlan,
    order: &[SortExpr],
    skip: usize,
    fetch: Option<usize>,
    domain: &Domain,
) -> Result<Option<LogicalPlan>> {
    let Some(stepped) = step(input, domain)? else {
        return Ok(None);
    };
    let order = order
        .iter()
        .map(|s| Ok(SortExpr::new(domain.read(&s.expr)?, s.asc, s.nulls_first)))
        .collect::<Result<Vec<_>>>()?;
    let rank = format!("__rivulet_rank{}", domain.n);
    let mut number = row_number().partition_by(domain.exprs().collect());
    if !order.is_empty() {
        number = number.order_by(order);
    }
    let number = number.build()?.alias(&rank);
    let rank_column = Expr::Column(Column::new_unqualified(&rank));
    let from = lit(skip as u64 + 1);
    let kept = match fetch {
        Some(fetch) if skip == 0 => rank_column.lt_eq(lit(fetch as u64)),
        Some(fetch) => rank_column.between(from, lit((skip + fetch) as u64)),
        None => rank_column.gt_eq(from),
    };
    let columns: Vec<Expr> = stepped
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let plan = LogicalPlanBuilder::from(stepped)
        .window(vec![number])?
        .filter(kept)?
        .project(columns)?
        .build()?;
    Ok(Some(plan))
}

/// Aggregate `a` (the plan `plan`) per domain value. Without GROUP BY, a domain value that no
/// row matched has the aggregates' values over no rows (`count` 0, the others NULL).
fn aggregated(a: &Aggregate, plan: &LogicalPlan, domain: &Domain) -> Result<Option<LogicalPlan>> {
    if a.group_expr.iter().any(|g| {
        matches!(
            g,
            Expr::GroupingSet(
                GroupingSet::Cube(_) | GroupingSet::Rollup(_) | GroupingSet::GroupingSets(_)
            )
        )
    }) {
        return Ok(None);
    }
    let Some(input) = step(&a.input, domain)? else {
        return Ok(None);
    };
    let mut group: Vec<Expr> = domain.exprs().collect();
    for (i, g) in a.group_expr.iter().enumerate() {
        group.push(domain.read_named(g, plan, i)?);
    }
    let groups = a.group_expr.len();
    let mut aggregates = Vec::with_capacity(a.aggr_expr.len());
    for (i, e) in a.aggr_expr.iter().enumerate() {
        aggregates.push(domain.read_named(e, plan, groups + i)?);
    }
    let grouped = LogicalPlanBuilder::from(input)
        .aggregate(group, aggregates)?
        .build()?;
    // The aggregate's columns as they were named, then the domain's.
    let width = domain.columns.len();
    let own = |g: &LogicalPlan| -> Vec<Expr> {
        (0..plan.schema().fields().len())
            .map(|i| {
                let (q, f) = g.schema().qualified_field(width + i);
                let (pq, pf) = plan.schema().qualified_field(i);
                Expr::Column(Column::new(q.cloned(), f.name()))
                    .alias_qualified(pq.cloned(), pf.name())
            })
            .collect()
    };
    if groups > 0 {
        let mut outputs = own(&grouped);
        outputs.extend(domain.exprs());
        return Ok(Some(
            LogicalPlanBuilder::from(grouped)
                .project(outputs)?
                .build()?,
        ));
    }
    // One row per domain value: the aggregates where rows matched, else their empty values.
    let name = TableReference::bare(format!("__rivulet_aggregate{}", domain.n));
    let mut inner = own(&grouped);
    inner.extend(domain.exprs().map(|c| {
        let name = match &c {
            Expr::Column(c) => c.name.clone(),
            _ => String::new(),
        };
        c.alias(name)
    }));
    inner.push(lit(true).alias("matched"));
    let inner = LogicalPlanBuilder::from(grouped)
        .project(inner)?
        .alias(name.clone())?
        .build()?;
    let keys: Vec<Column> = domain
        .columns
        .iter()
        .map(|c| Column::new(Some(name.clone()), c.name.clone()))
        .collect();
    let filled = LogicalPlanBuilder::from(domain.plan.as_ref().clone())
        .join_detailed(
            inner,
            JoinType::Left,
            (domain.columns.clone(), keys),
            None,
            NullEquality::NullEqualsNull,
        )?
        .build()?;
    let matched = Expr::Column(Column::new(Some(name.clone()), "matched"));
    let mut outputs = Vec::with_capacity(plan.schema().fields().len() + width);
    for (i, e) in a.aggr_expr.iter().enumerate() {
        let (pq, pf) = plan.schema().qualified_field(i);
        let value = Expr::Column(Column::new(Some(name.clone()), pf.name()));
        let t = value.get_type(filled.schema())?;
        let empty = match e.clone().unalias() {
            Expr::AggregateFunction(f) => f.func.default_value(&t)?,
            _ => return Ok(None),
        };
        let chosen = if empty.is_null() {
            value
        } else {
            when(matched.clone().is_null(), Expr::Literal(empty, None)).otherwise(value)?
        };
        outputs.push(chosen.alias_qualified(pq.cloned(), pf.name()));
    }
    outputs.extend(domain.exprs());
    Ok(Some(
        LogicalPlanBuilder::from(filled).project(outputs)?.build()?,
    ))
}
