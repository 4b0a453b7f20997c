//! Each unconstrained `numeric` value's own display scale, as Postgres keeps it.
//!
//! A Postgres numeric carries the decimals it shows: `1.50` stays `1.50`, a sum shows as many
//! decimals as its most precise term (`1.25 + 1.75` is `3.00`), a product the sum of its
//! factors'. Arrow's decimal has one scale per column, and an unconstrained `numeric` is stored
//! as `numeric(38,10)`, so without more the trailing zeros are lost ([`super::numeric`] shows the
//! value's own digits, `3`). Here the scale travels next to the value, as a hidden `int` column:
//!
//! - tables keep one per unconstrained numeric column, after their other columns
//!   ([`TableDef::stored_schema`](rivulet_planner::catalog::TableDef::stored_schema)), filled
//!   from the written text where rows are written from text (INSERT's literals, COPY);
//! - an ad-hoc query's plan reads them and derives its results' ([`attach`]): a column passes
//!   its own on, arithmetic combines them as Postgres' numeric does, `sum` takes the largest,
//!   `min` and `max` the chosen value's; where a plan node or an expression is not covered, the
//!   result has none and shows as before;
//! - the wire layer writes each such value with its scale ([`render`]) and sends no hidden
//!   column to the client.
//!
//! A NULL scale (rows written before, or through a path that does not know it) shows the value's
//! own digits; a scale never hides digits the value has.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, Decimal128Array, Int32Array, RecordBatch,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, Int32Type, Schema, SchemaRef};
use datafusion::common::metadata::FieldMetadata;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    Column, DFSchema, DataFusionError, ParamValues, Result, ScalarValue, TableReference,
};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::functions_aggregate::first_last::first_value_udaf;
use datafusion::functions_aggregate::min_max::max_udaf;
use datafusion::logical_expr::expr::{AggregateFunction, Case, Cast, ScalarFunction, TryCast};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::logical_plan::TableScanBuilder;
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, ColumnarValue, Distinct, Expr, ExprSchemable, JoinType, LogicalPlan,
    LogicalPlanBuilder, Operator, Projection, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, SortExpr, TableScan, Union, Values, Volatility, Window, WindowFunctionDefinition,
    lit,
};
use pgwire::api::Type;
use pgwire::api::portal::Portal;
use rivulet_planner::types::{SCALE_PREFIX, SCALE_TYPE, scale_name, scale_target};

use super::numeric::{MIN_SIG_DIGITS, Scale, first_digit, unconstrained};
use crate::provider::StoredTable;

/// The display scale of a number written as `text` (`1.50`: 2, `15e-1`: 1, `12`: 0); `None`
/// for what is no plain number (`NaN`, garbage, which the value's parser reports).
pub fn of_text(text: &str) -> Option<i32> {
    let text = text.trim();
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i32>().ok()?),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.len() + frac.len() == 0 || !digits(int) || !digits(frac) {
        return None;
    }
    let decimals = i32::try_from(frac.len()).ok()?;
    Some(decimals.saturating_sub(exponent).max(0))
}

/// [`of_text`] of each text (NULL for a NULL), as a display-scale column.
pub fn of_texts<'a>(texts: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(
        texts
            .into_iter()
            .map(|t| t.and_then(of_text))
            .collect::<Int32Array>(),
    )
}

/// Whether `schema` has display-scale columns.
fn has_scales(schema: &DFSchema) -> bool {
    schema.fields().iter().any(|f| is_scale(f.name()))
}

/// Whether a column named `name` holds display scales.
fn is_scale(name: &str) -> bool {
    name.starts_with(SCALE_PREFIX)
}

/// `plan` (an ad-hoc query's) with its unconstrained numeric result columns' display scales as
/// hidden columns after the others, named [`scale_name`] of the column they belong to; `plan`
/// itself where it reads no table that keeps them, or where they cannot be carried to the top.
pub fn attach(plan: LogicalPlan) -> LogicalPlan {
    if !reads_scales(&plan) || !is_query(&plan) {
        return plan;
    }
    let mut walk = Walk {
        next: 0,
        values: false,
    };
    walk.plan(plan.clone())
        .and_then(|(p, scales)| top(p, &scales))
        .unwrap_or(plan)
}

/// [`attach`] for a materialized view's query: the plan with its result's display scales where
/// it has any (the view stores them, [`ViewDef::scales`](rivulet_planner::catalog::ViewDef)),
/// else `plan` as it was.
pub fn attach_view(plan: LogicalPlan) -> LogicalPlan {
    let attached = attach(plan.clone());
    if has_scales(attached.schema()) {
        attached
    } else {
        plan
    }
}

/// The columns a view's planned `columns` (its query's result) carry display scales of, with
/// those scale columns taken out of `columns` (they are stored hidden, [`ViewDef::scales`]).
///
/// [`ViewDef::scales`]: rivulet_planner::catalog::ViewDef::scales
pub fn split_view_columns(columns: &mut Vec<rivulet_planner::catalog::ColumnDef>) -> Vec<usize> {
    let scales = columns
        .iter()
        .filter_map(|c| scale_target(&c.name))
        .collect();
    columns.retain(|c| !is_scale(&c.name));
    scales
}

fn is_query(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Ddl(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::DescribeTable(_)
    )
}

/// The table behind `scan`, with its display-scale columns, if it keeps any.
fn scaled_source(scan: &TableScan) -> Option<StoredTable> {
    let provider = source_as_provider(&scan.source).ok()?;
    let any: &dyn std::any::Any = provider.as_ref();
    any.downcast_ref::<StoredTable>()?.with_scales()
}

/// Whether `plan` reads a table that keeps display scales (subqueries in expressions aside,
/// which [`attach`] leaves as they are).
fn reads_scales(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && (scaled_source(scan).is_some() || has_scales(&scan.projected_schema))
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// The plan's result: its own columns, then each one's display scales that has them, named
/// after the column's position.
fn top(plan: LogicalPlan, scales: &[Option<usize>]) -> Result<LogicalPlan> {
    let schema = Arc::clone(plan.schema());
    if !schema.fields().iter().any(|f| is_scale(f.name())) {
        return Ok(plan);
    }
    let mut shown = Vec::new();
    let mut hidden = Vec::new();
    for (i, (qualifier, field)) in schema.iter().enumerate() {
        if is_scale(field.name()) {
            continue;
        }
        if let Some(Some(s)) = scales.get(i) {
            let (q, f) = schema.qualified_field(*s);
            hidden.push(Expr::Column(Column::from((q, f))).alias(scale_name(shown.len())));
        }
        shown.push(Expr::Column(Column::from((qualifier, field))));
    }
    shown.extend(hidden);
    Ok(LogicalPlan::Projection(Projection::try_new(
        shown,
        Arc::new(plan),
    )?))
}

/// A plan with, for each of its output columns, the position of the column of its display
/// scales, if it has one.
type Scaled = (LogicalPlan, Vec<Option<usize>>);

struct Walk {
    /// Numbers the display-scale columns the walk adds (their names must be unique).
    next: usize,
    /// VALUES lists give their numbers' scales (an INSERT's rows), not only tables.
    values: bool,
}

impl Walk {
    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("{SCALE_PREFIX}#{}", self.next)
    }

    fn plan(&mut self, plan: LogicalPlan) -> Result<Scaled> {
        if !self.values && !reads_scales(&plan) {
            let n = plan.schema().fields().len();
            return Ok((plan, vec![None; n]));
        }
        match plan {
            LogicalPlan::TableScan(scan) => self.scan(scan),
            LogicalPlan::Projection(p) => self.projection(p),
            LogicalPlan::Aggregate(a) => self.aggregate(a),
            LogicalPlan::Window(w) => self.window(w),
            LogicalPlan::Values(v) if self.values => self.values(v),
            LogicalPlan::Distinct(Distinct::All(input)) => {
                self.distinct(Arc::unwrap_or_clone(input))
            }
            LogicalPlan::Union(u) => self.union(u),
            LogicalPlan::Join(ref join) => {
                let join_type = join.join_type;
                let inputs = self.inputs(&plan)?;
                let (left, right) = (&inputs[0], &inputs[1]);
                let shifted = |s: &[Option<usize>]| -> Vec<Option<usize>> {
                    let by = left.1.len();
                    s.iter().map(|c| c.map(|c| c + by)).collect()
                };
                let scales = match join_type {
                    JoinType::Inner | JoinType::Left | JoinType::Right | JoinType::Full => {
                        [left.1.clone(), shifted(&right.1)].concat()
                    }
                    JoinType::LeftSemi | JoinType::LeftAnti => left.1.clone(),
                    JoinType::LeftMark => [left.1.clone(), vec![None]].concat(),
                    JoinType::RightSemi | JoinType::RightAnti => right.1.clone(),
                    JoinType::RightMark => [right.1.clone(), vec![None]].concat(),
                };
                let inputs = inputs.into_iter().map(|(p, _)| p).collect();
                let plan = plan.with_new_exprs(plan.expressions(), inputs)?;
                Ok((plan, scales))
            }
            // Nodes that pass their input's columns on, in place.
            LogicalPlan::Filter(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Repartition(_) => {
                let mut inputs = self.inputs(&plan)?;
                let (input, mut scales) = inputs.remove(0);
                let plan = plan.with_new_exprs(plan.expressions(), vec![input])?;
                scales.resize(plan.schema().fields().len(), None);
                Ok((plan, scales))
            }
            // Anything else sees its inputs without display scales (DISTINCT and set
            // operations would tell `1.5` from `1.50`).
            plan => {
                let inputs = self
                    .inputs(&plan)?
                    .into_iter()
                    .map(|(p, s)| without_scales(p, &s))
                    .collect::<Result<Vec<_>>>()?;
                let plan = plan.with_new_exprs(plan.expressions(), inputs)?;
                let n = plan.schema().fields().len();
                Ok((plan, vec![None; n]))
            }
        }
    }

    fn inputs(&mut self, plan: &LogicalPlan) -> Result<Vec<Scaled>> {
        plan.inputs()
            .into_iter()
            .map(|i| self.plan(i.clone()))
            .collect()
    }

    /// A scan of a table that keeps display scales reads them too.
    fn scan(&mut self, scan: TableScan) -> Result<Scaled> {
        let Some(scaled) = scaled_source(&scan) else {
            // Rows that carry their scales already (a statement's written rows, RETURNING).
            let schema = &scan.projected_schema;
            let columns = |k: usize| {
                scan.projection
                    .as_ref()
                    .map_or(Some(k), |p| p.get(k).copied())
            };
            let scales = (0..schema.fields().len())
                .map(|k| schema.index_of_column_by_name(None, &scale_name(columns(k)?)))
                .collect();
            return Ok((LogicalPlan::TableScan(scan), scales));
        };
        let stored = datafusion::catalog::TableProvider::schema(&scaled);
        let visible = scan.source.schema().fields().len();
        let mut projection = scan.projection.unwrap_or_else(|| (0..visible).collect());
        let mut scales = vec![None; projection.len()];
        for (k, column) in projection.clone().into_iter().enumerate() {
            if let Ok(at) = stored.index_of(&scale_name(column)) {
                scales[k] = Some(projection.len());
                projection.push(at);
            }
        }
        let plan = TableScanBuilder::new(scan.table_name, provider_as_source(Arc::new(scaled)))
            .with_projection(Some(projection))
            .with_filters(scan.filters)
            .with_fetch(scan.fetch)
            .build()?;
        Ok((LogicalPlan::TableScan(plan), scales))
    }

    /// Window functions: their input's columns pass on; a `sum` over a frame shows the largest
    /// scale in it, as the aggregate does.
    fn window(&mut self, w: Window) -> Result<Scaled> {
        let (input, below) = self.plan(Arc::unwrap_or_clone(w.input))?;
        let schema = Arc::clone(input.schema());
        let width = schema.fields().len();
        let mut exprs = w.window_expr;
        let mut scales = below;
        scales.resize(width + exprs.len(), None);
        for i in 0..exprs.len() {
            if let Some(scale) = window_scale(&exprs[i], &schema, &scales[..width]) {
                scales[width + i] = Some(width + exprs.len());
                exprs.push(scale.alias(self.fresh()));
            }
        }
        scales.resize(width + exprs.len(), None);
        let plan = Window::try_new(exprs, Arc::new(input))?;
        Ok((LogicalPlan::Window(plan), scales))
    }

    /// `SELECT DISTINCT`: as a grouping by the shown columns, each one's scale the largest
    /// among its duplicates' (`1.5` and `1.50` are one value; Postgres shows the first it met).
    fn distinct(&mut self, input: LogicalPlan) -> Result<Scaled> {
        let (input, below) = self.plan(input)?;
        if below.iter().all(Option::is_none) {
            let input = without_scales(input, &below)?;
            let plan = LogicalPlan::Distinct(Distinct::All(Arc::new(input)));
            let n = plan.schema().fields().len();
            return Ok((plan, vec![None; n]));
        }
        let schema = Arc::clone(input.schema());
        let mut groups = Vec::new();
        let mut scales = Vec::new();
        let mut aggregates = Vec::new();
        for (i, (q, f)) in schema.iter().enumerate() {
            if is_scale(f.name()) {
                continue;
            }
            groups.push(Expr::Column(Column::from((q, f))));
            scales.push(below[i].map(|s| {
                aggregates.push(
                    max_udaf()
                        .call(vec![Expr::Column(Column::from(schema.qualified_field(s)))])
                        .alias(self.fresh()),
                );
                aggregates.len() - 1
            }));
        }
        let width = groups.len();
        let scales = scales
            .into_iter()
            .map(|s| s.map(|k| width + k))
            .chain(std::iter::repeat_n(None, aggregates.len()))
            .collect();
        let plan = Aggregate::try_new(Arc::new(input), groups, aggregates)?;
        Ok((LogicalPlan::Aggregate(plan), scales))
    }

    /// `UNION ALL`: a column's scales where any branch has them, NULL from the others.
    fn union(&mut self, u: Union) -> Result<Scaled> {
        let mut branches = Vec::with_capacity(u.inputs.len());
        for input in u.inputs {
            branches.push(self.plan(Arc::unwrap_or_clone(input))?);
        }
        // Each branch's shown columns, with their scales' positions.
        let shown = |(plan, below): &Scaled| -> Vec<(Expr, Option<Expr>)> {
            let schema = plan.schema();
            schema
                .iter()
                .enumerate()
                .filter(|(_, (_, f))| !is_scale(f.name()))
                .map(|(i, (q, f))| {
                    let scale =
                        below[i].map(|s| Expr::Column(Column::from(schema.qualified_field(s))));
                    (Expr::Column(Column::from((q, f))), scale)
                })
                .collect()
        };
        let columns: Vec<Vec<(Expr, Option<Expr>)>> = branches.iter().map(shown).collect();
        let width = columns.first().map_or(0, Vec::len);
        let carried: Vec<usize> = (0..width)
            .filter(|&j| {
                columns
                    .iter()
                    .any(|c| c.get(j).is_some_and(|(_, s)| s.is_some()))
            })
            .collect();
        let names: Vec<String> = carried.iter().map(|_| self.fresh()).collect();
        let mut inputs = Vec::with_capacity(branches.len());
        for ((plan, _), columns) in branches.into_iter().zip(columns) {
            let mut exprs: Vec<Expr> = columns.iter().map(|(e, _)| e.clone()).collect();
            for (&j, name) in carried.iter().zip(&names) {
                let scale = columns
                    .get(j)
                    .and_then(|(_, s)| s.clone())
                    .unwrap_or_else(|| lit(ScalarValue::Int32(None)));
                exprs.push(scale.alias(name));
            }
            inputs.push(Arc::new(LogicalPlan::Projection(Projection::try_new(
                exprs,
                Arc::new(plan),
            )?)));
        }
        let mut scales = vec![None; width + carried.len()];
        for (k, &j) in carried.iter().enumerate() {
            scales[j] = Some(width + k);
        }
        let plan = Union::try_new_with_loose_types(inputs)?;
        Ok((LogicalPlan::Union(plan), scales))
    }

    /// Each number's scale, as written, next to its column.
    fn values(&mut self, v: Values) -> Result<Scaled> {
        let width = v.schema.fields().len();
        let mut scales = vec![None; width];
        let mut rows = v.values;
        for (column, slot) in scales.iter_mut().enumerate() {
            let written: Vec<Option<i32>> = rows
                .iter()
                .map(|row| row.get(column).and_then(written_scale))
                .collect();
            if written.iter().all(Option::is_none) {
                continue;
            }
            *slot = Some(width + rows.first().map_or(0, |r| r.len() - width));
            for (row, scale) in rows.iter_mut().zip(written) {
                row.push(lit(ScalarValue::Int32(scale)));
            }
        }
        let names: Vec<String> = scales.iter().flatten().map(|_| self.fresh()).collect();
        let plan = LogicalPlanBuilder::values_with_schema(rows.clone(), &{
            let mut fields: Vec<(Option<TableReference>, Arc<Field>)> = v
                .schema
                .iter()
                .map(|(q, f)| (q.cloned(), Arc::clone(f)))
                .collect();
            fields.extend(
                names
                    .iter()
                    .map(|n| (None, Arc::new(Field::new(n, SCALE_TYPE, true)))),
            );
            Arc::new(DFSchema::new_with_metadata(
                fields,
                v.schema.metadata().clone(),
            )?)
        })?
        .build()?;
        Ok((plan, scales))
    }

    fn projection(&mut self, p: Projection) -> Result<Scaled> {
        let (input, below) = self.plan(Arc::unwrap_or_clone(p.input))?;
        let schema = Arc::clone(input.schema());
        let mut exprs = p.expr;
        let mut scales = vec![None; exprs.len()];
        // Numerics cast to text keep their scales in the text.
        let names = NamePreserver::new_for_projection();
        for e in exprs.iter_mut() {
            let name = names.save(e);
            *e = name.restore(scaled_texts(e.clone(), &schema, &below)?);
        }
        for i in 0..exprs.len() {
            if is_decimal(&exprs[i], &schema)
                && let Some(Some(scale)) = derive(&exprs[i], &schema, &below)
            {
                scales[i] = Some(exprs.len());
                exprs.push(scale.alias(self.fresh()));
            }
        }
        let plan = Projection::try_new(exprs, Arc::new(input))?;
        Ok((LogicalPlan::Projection(plan), scales))
    }

    fn aggregate(&mut self, a: Aggregate) -> Result<Scaled> {
        let (input, below) = self.plan(Arc::unwrap_or_clone(a.input))?;
        let grouping_sets = a
            .group_expr
            .iter()
            .any(|g| matches!(g, Expr::GroupingSet(_)));
        if grouping_sets {
            let input = without_scales(input, &below)?;
            let plan = Aggregate::try_new(Arc::new(input), a.group_expr, a.aggr_expr)?;
            let n = plan.schema.fields().len();
            return Ok((LogicalPlan::Aggregate(plan), vec![None; n]));
        }
        let schema = Arc::clone(input.schema());
        let groups = a.group_expr.len();
        let mut aggregates = a.aggr_expr.clone();
        let mut scales = vec![None; groups + aggregates.len()];
        let mut extra = Vec::new();
        // A group's value shows the largest scale among its rows' (`1.5` and `1.50` group
        // together; Postgres shows whichever came first).
        for (i, g) in a.group_expr.iter().enumerate() {
            if is_decimal(g, &schema)
                && let Some(Some(scale)) = derive(g, &schema, &below)
            {
                extra.push((i, max_udaf().call(vec![scale])));
            }
        }
        for (j, e) in a.aggr_expr.iter().enumerate() {
            if let Some(scale) = aggregate_scale(e, &schema, &below) {
                extra.push((groups + j, scale));
            }
        }
        for (of, scale) in extra {
            scales[of] = Some(groups + aggregates.len());
            aggregates.push(scale.alias(self.fresh()));
        }
        scales.resize(groups + aggregates.len(), None);
        let plan = Aggregate::try_new(Arc::new(input), a.group_expr, aggregates)?;
        Ok((LogicalPlan::Aggregate(plan), scales))
    }
}

/// `e` with each numeric written as text (`x::text`, `'a' || x`) given its values' scales where
/// they can be derived.
fn scaled_texts(e: Expr, schema: &DFSchema, below: &[Option<usize>]) -> Result<Expr> {
    Ok(e.transform_up(|e| {
        let scaled = super::output::is_text_of(&e)
            .filter(|x| is_decimal(x, schema))
            .and_then(|x| Some((x.clone(), derive(x, schema, below)??)));
        Ok(match scaled {
            Some((x, scale)) => Transformed::yes(super::output::text_scaled(x, scale)),
            None => Transformed::no(e),
        })
    })?
    .data)
}

/// `plan` without its display-scale columns.
fn without_scales(plan: LogicalPlan, scales: &[Option<usize>]) -> Result<LogicalPlan> {
    if scales.iter().all(Option::is_none)
        && !plan.schema().fields().iter().any(|f| is_scale(f.name()))
    {
        return Ok(plan);
    }
    let schema = Arc::clone(plan.schema());
    let kept = schema
        .iter()
        .filter(|(_, f)| !is_scale(f.name()))
        .map(|(q, f)| Expr::Column(Column::from((q, f))))
        .collect::<Vec<_>>();
    Ok(LogicalPlan::Projection(Projection::try_new(
        kept,
        Arc::new(plan),
    )?))
}

fn is_decimal(e: &Expr, schema: &DFSchema) -> bool {
    e.get_type(schema).is_ok_and(|t| t.is_decimal())
}

/// Whether `e`'s values show scales of their own: an unconstrained numeric, or arithmetic
/// with one ([`Scale::Own`]).
fn is_unconstrained(e: &Expr, schema: &DFSchema) -> bool {
    e.to_field(schema).is_ok_and(|(_, f)| {
        unconstrained(f.data_type())
            || (f.data_type().is_decimal()
                && matches!(Scale::of(&f), Scale::Own(_) | Scale::Quotient(_)))
    })
}

fn unaliased(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unaliased(&a.expr),
        e => e,
    }
}

/// The display scale of an aggregate of unconstrained numerics where Postgres' follows from its
/// arguments': `sum` the largest, `min` and `max` the chosen value's.
fn aggregate_scale(e: &Expr, schema: &DFSchema, below: &[Option<usize>]) -> Option<Expr> {
    let Expr::AggregateFunction(f) = unaliased(e) else {
        return None;
    };
    let [arg] = f.params.args.as_slice() else {
        return None;
    };
    if !is_decimal(arg, schema) {
        return None;
    }
    let scale = derive(arg, schema, below)??;
    let filter = f.params.filter.clone();
    let (func, order_by) = match f.func.name() {
        "sum" => (max_udaf(), Vec::new()),
        // The scale of the value chosen: the first in the aggregate's order.
        "min" | "max" => {
            let ascending = f.func.name() == "min";
            (
                first_value_udaf(),
                vec![SortExpr::new(arg.clone(), ascending, false)],
            )
        }
        _ => return None,
    };
    let mut aggregate = AggregateFunction::new_udf(func, vec![scale], false, None, order_by, None);
    aggregate.params.filter = filter;
    Some(Expr::AggregateFunction(aggregate))
}

/// [`aggregate_scale`] of a window function: `sum(x) OVER w` shows `max(scale of x) OVER w`.
fn window_scale(e: &Expr, schema: &DFSchema, below: &[Option<usize>]) -> Option<Expr> {
    let Expr::WindowFunction(w) = unaliased(e) else {
        return None;
    };
    let WindowFunctionDefinition::AggregateUDF(f) = &w.fun else {
        return None;
    };
    let [arg] = w.params.args.as_slice() else {
        return None;
    };
    if f.name() != "sum" || w.params.distinct || !is_decimal(arg, schema) {
        return None;
    }
    let scale = derive(arg, schema, below)??;
    let mut largest = w.as_ref().clone();
    largest.fun = WindowFunctionDefinition::AggregateUDF(max_udaf());
    largest.params.args = vec![scale];
    Some(Expr::WindowFunction(Box::new(largest)))
}

/// The expression of `e`'s display scales over `schema`, whose columns' are at `below`, if it
/// can be derived (an `ON CONFLICT DO UPDATE`'s new values').
pub fn scale_of(e: &Expr, schema: &DFSchema, below: &[Option<usize>]) -> Option<Expr> {
    derive(e, schema, below).flatten()
}

/// The expression of `e`'s display scales over `schema` (whose columns' scales are at
/// `below`): `Some(None)` where `e` has no scale of its own to show, `None` where it has one
/// that cannot be derived here.
fn derive(e: &Expr, schema: &DFSchema, below: &[Option<usize>]) -> Option<Option<Expr>> {
    Some(Some(match e {
        Expr::Alias(a) => return derive(&a.expr, schema, below),
        Expr::Column(c) => {
            let i = schema.index_of_column(c).ok()?;
            let s = (*below.get(i)?)?;
            let (q, f) = schema.qualified_field(s);
            Expr::Column(Column::from((q, f)))
        }
        Expr::Literal(..) => lit(written_scale(e)?),
        // A quotient's rule ([`Scale::Quotient`]) on arithmetic: the arithmetic's scales (a
        // quotient's by `select_div_scale`); on anything else (an average) no scale of its
        // values' own.
        Expr::Cast(Cast { field, expr }) if matches!(Scale::of(field), Scale::Quotient(_)) => {
            return match expr.as_ref() {
                Expr::BinaryExpr(_) => derive(expr, schema, below),
                _ => None,
            };
        }
        Expr::Cast(Cast { expr, .. }) | Expr::TryCast(TryCast { expr, .. }) => {
            return match (derive(expr, schema, below), expr.as_ref()) {
                (Some(Some(scale)), _) => Some(Some(scale)),
                // A column or constant's type tells its scale where nothing else does.
                (_, Expr::Column(_) | Expr::Literal(..)) => operand(expr, schema, below),
                _ => None,
            };
        }
        Expr::Negative(x) => return operand(x, schema, below),
        Expr::BinaryExpr(b) => {
            let l = operand(&b.left, schema, below)??;
            let r = operand(&b.right, schema, below)??;
            match b.op {
                Operator::Plus | Operator::Minus | Operator::Modulo => greatest(l, r),
                Operator::Multiply => {
                    Expr::BinaryExpr(BinaryExpr::new(Box::new(l), Operator::Plus, Box::new(r)))
                }
                Operator::Divide => Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::new(ScalarUDF::new_from_impl(QuotientScale::default())),
                    vec![b.left.as_ref().clone(), l, b.right.as_ref().clone(), r],
                )),
                _ => return None,
            }
        }
        Expr::Case(c) => {
            let mut branches = Vec::with_capacity(c.when_then_expr.len());
            for (when, then) in &c.when_then_expr {
                let then = operand(then, schema, below)??;
                branches.push((when.clone(), Box::new(then)));
            }
            let otherwise = match &c.else_expr {
                Some(e) => Some(Box::new(operand(e, schema, below)??)),
                None => None,
            };
            Expr::Case(Case::new(c.expr.clone(), branches, otherwise))
        }
        Expr::ScalarFunction(f) => {
            let args = &f.args;
            match (f.func.name(), args.as_slice()) {
                ("abs", [x]) | ("nullif", [x, _]) => return operand(x, schema, below),
                ("round" | "trunc", [_]) | ("ceil" | "floor", [_]) => lit(0),
                ("round" | "trunc", [_, Expr::Literal(n, _)]) => {
                    let n = match n {
                        ScalarValue::Int64(Some(n)) => i32::try_from(*n).ok()?,
                        ScalarValue::Int32(Some(n)) => *n,
                        _ => return None,
                    };
                    lit(n.max(0))
                }
                // Each row's first non-NULL argument's.
                ("coalesce", args) => {
                    let mut branches = Vec::with_capacity(args.len());
                    for a in args {
                        let scale = operand(a, schema, below)??;
                        branches.push((Box::new(a.clone().is_not_null()), Box::new(scale)));
                    }
                    Expr::Case(Case::new(None, branches, None))
                }
                _ => return None,
            }
        }
        _ => return None,
    }))
}

/// The display scale of an operand of numeric arithmetic: a column's that carries them, an
/// unconstrained numeric's derived, another decimal's its type's, an integer's 0.
fn operand(e: &Expr, schema: &DFSchema, below: &[Option<usize>]) -> Option<Option<Expr>> {
    if let Expr::Column(_) = e
        && let Some(Some(scale)) = derive(e, schema, below)
    {
        return Some(Some(scale));
    }
    if is_unconstrained(e, schema) {
        return derive(e, schema, below);
    }
    // A cast the planner put in to widen a decimal (a dividend's, for the quotient's digits;
    // a user's cast to `numeric(p,s)` has its type modifier in its field) keeps its operand's.
    if let Expr::Cast(Cast { expr, field }) = e
        && field.metadata().is_empty()
        && field.data_type().is_decimal()
        && expr
            .get_type(schema)
            .is_ok_and(|t| t.is_decimal() || t.is_integer())
    {
        return operand(expr, schema, below);
    }
    match e.get_type(schema).ok()? {
        DataType::Decimal128(_, s) => Some(Some(lit(i32::from(s.max(0))))),
        DataType::Null => Some(Some(lit(ScalarValue::Int32(None)))),
        t if t.is_integer() => Some(Some(lit(0))),
        _ => None,
    }
}

/// The scale a constant number was written with: a decimal literal's, an integer's 0, a
/// string's as [`of_text`] reads it. Not an unconstrained numeric's, whose type says nothing.
fn written_scale(e: &Expr) -> Option<i32> {
    match e {
        Expr::Literal(ScalarValue::Decimal128(Some(_), p, s), _)
            if !unconstrained(&DataType::Decimal128(*p, *s)) =>
        {
            Some(i32::from((*s).max(0)))
        }
        Expr::Literal(v, _) if v.data_type().is_integer() && !v.is_null() => Some(0),
        Expr::Literal(ScalarValue::Utf8(Some(t)), _) => of_text(t),
        Expr::Negative(x) => written_scale(x),
        Expr::Cast(c) => written_scale(&c.expr),
        Expr::TryCast(c) => written_scale(&c.expr),
        Expr::Alias(a) => written_scale(&a.expr),
        _ => None,
    }
}

/// An INSERT's rows (`plan`, in the table's columns) with the display scales of the table's
/// `scaled` columns after them, as the table stores them; NULL where a value's cannot be
/// told. `plan` itself where the table keeps none or the walk does not get through it (the
/// table then stores NULL scales).
pub fn for_insert(plan: LogicalPlan, scaled: &[usize]) -> LogicalPlan {
    if scaled.is_empty() {
        return plan;
    }
    let mut walk = Walk {
        next: 0,
        values: true,
    };
    let stored = walk.plan(plan.clone()).and_then(|(rows, scales)| {
        let schema = Arc::clone(rows.schema());
        let mut columns: Vec<Expr> = schema
            .iter()
            .filter(|(_, f)| !is_scale(f.name()))
            .map(|(q, f)| Expr::Column(Column::from((q, f))))
            .collect();
        for &c in scaled {
            let scale = match scales.get(c).copied().flatten() {
                Some(s) => Expr::Column(Column::from(schema.qualified_field(s))),
                None => lit(ScalarValue::Int32(None)),
            };
            columns.push(scale.alias(scale_name(c)));
        }
        Ok(LogicalPlan::Projection(Projection::try_new(
            columns,
            Arc::new(rows),
        )?))
    });
    stored.unwrap_or(plan)
}

/// An UPDATE's new display scales: for each of the table's `scaled` columns, the expression of
/// its new values' over `schema` (the table's columns) followed by the stored scales (which
/// the returned schema has), given the `assignments` (one per column: the column itself where
/// it is not set); `None` where they cannot be told.
pub fn for_update(
    assignments: &[Expr],
    schema: &DFSchema,
    scaled: &[usize],
) -> Result<(DFSchema, Vec<Option<Expr>>)> {
    let mut fields: Vec<(Option<TableReference>, Arc<Field>)> = schema
        .iter()
        .map(|(q, f)| (q.cloned(), Arc::clone(f)))
        .collect();
    let width = fields.len();
    let qualifier = schema.iter().next().and_then(|(q, _)| q.cloned());
    let mut below = vec![None; width + scaled.len()];
    for (k, &c) in scaled.iter().enumerate() {
        below[c] = Some(width + k);
        fields.push((
            qualifier.clone(),
            Arc::new(Field::new(scale_name(c), SCALE_TYPE, true)),
        ));
    }
    let full = DFSchema::new_with_metadata(fields, schema.metadata().clone())?;
    let scales = scaled
        .iter()
        .map(|&c| {
            let assigned = assignments.get(c)?;
            derive(assigned, &full, &below).flatten()
        })
        .collect();
    Ok((full, scales))
}

/// The field metadata key that marks an unconstrained numeric parameter with its written scale.
const PARAMETER_SCALE: &str = "rivulet.parameter_scale";

/// Marks each unconstrained numeric among `values` (the decoded parameters of `portal`) with
/// the scale the client wrote it with: a text parameter's decimals, a binary one's display
/// scale field. [`bind_marked`] binds them keeping it.
pub fn mark_parameters<S>(values: &mut ParamValues, portal: &Portal<S>) {
    let ParamValues::List(list) = values else {
        return;
    };
    for (i, slot) in list.iter_mut().enumerate() {
        let ScalarValue::Decimal128(Some(_), p, s) = slot.value else {
            continue;
        };
        let Some(Some(bytes)) = portal.parameters.get(i) else {
            continue;
        };
        if !unconstrained(&DataType::Decimal128(p, s)) {
            continue;
        }
        let declared = portal.statement.parameter_types.get(i).cloned().flatten();
        let scale = match (declared, portal.parameter_format.is_binary(i)) {
            (_, false) => std::str::from_utf8(bytes).ok().and_then(of_text),
            // The display scale field of Postgres' binary numeric.
            (Some(Type::NUMERIC), true) => bytes
                .get(6..8)
                .map(|b| i32::from(u16::from_be_bytes([b[0], b[1]]))),
            (Some(Type::INT2 | Type::INT4 | Type::INT8), true) => Some(0),
            // A float becomes the numeric of its shortest text, as in Postgres.
            (Some(Type::FLOAT8), true) => <[u8; 8]>::try_from(bytes.as_ref())
                .ok()
                .and_then(|b| of_text(&f64::from_be_bytes(b).to_string())),
            (Some(Type::FLOAT4), true) => <[u8; 4]>::try_from(bytes.as_ref())
                .ok()
                .and_then(|b| of_text(&f32::from_be_bytes(b).to_string())),
            _ => None,
        };
        if let Some(scale) = scale {
            let marked = [(PARAMETER_SCALE.to_string(), scale.to_string())];
            slot.metadata = Some(FieldMetadata::from(BTreeMap::from(marked)));
        }
    }
}

/// `plan` with the parameters [`mark_parameters`] marked bound as constants of their written
/// scale (cast to the type they were planned with), so that [`for_insert`] and [`attach`] see
/// it. The others are left to DataFusion's binding.
pub fn bind_marked(plan: LogicalPlan, values: &ParamValues) -> Result<LogicalPlan> {
    let ParamValues::List(list) = values else {
        return Ok(plan);
    };
    let mut marked = std::collections::HashMap::new();
    for (i, v) in list.iter().enumerate() {
        let (ScalarValue::Decimal128(Some(value), p, s), Some(metadata)) = (&v.value, &v.metadata)
        else {
            continue;
        };
        let Some(scale) = metadata
            .inner()
            .get(PARAMETER_SCALE)
            .and_then(|m| m.parse::<i8>().ok())
            .filter(|scale| (0..*s).contains(scale))
        else {
            continue;
        };
        let Some(written) = 10_i128
            .checked_pow(u32::try_from(s - scale).unwrap_or(0))
            .filter(|div| value % div == 0)
            .map(|div| value / div)
        else {
            continue;
        };
        let constant = lit(ScalarValue::Decimal128(Some(written), *p, scale));
        let bound = Expr::Cast(Cast::new(Box::new(constant), DataType::Decimal128(*p, *s)));
        marked.insert(format!("${}", i + 1), bound);
    }
    if marked.is_empty() {
        return Ok(plan);
    }
    let bound = plan.transform_up_with_subqueries(|node| {
        let names = NamePreserver::new(&node);
        node.map_expressions(|e| {
            let name = names.save(&e);
            let e = e.transform_up(|e| match e {
                Expr::Placeholder(p) => match marked.get(&p.id) {
                    Some(bound) => Ok(Transformed::yes(bound.clone())),
                    None => Ok(Transformed::no(Expr::Placeholder(p))),
                },
                e => Ok(Transformed::no(e)),
            })?;
            Ok(e.update_data(|e| name.restore(e)))
        })
    })?;
    Ok(bound.data)
}

/// The display scale of a quotient, as Postgres chooses it (`select_div_scale`): at least 16
/// significant digits, from the operands' first base-10000 digits and weights, and at least
/// either operand's scale. Arguments: dividend, its scale, divisor, its scale.
#[derive(Debug, PartialEq, Eq, Hash)]
struct QuotientScale {
    signature: Signature,
}

impl Default for QuotientScale {
    fn default() -> Self {
        QuotientScale {
            signature: Signature::any(4, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for QuotientScale {
    fn name(&self) -> &str {
        "rivulet_quotient_scale"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(SCALE_TYPE)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [dividend, dividend_scale, divisor, divisor_scale] = arrays.as_slice() else {
            return Err(DataFusionError::Internal(
                "rivulet_quotient_scale takes four arguments".into(),
            ));
        };
        let (dividend, a_scale) = decimals(dividend)?;
        let (divisor, b_scale) = decimals(divisor)?;
        let dividend_scale = cast(dividend_scale, &SCALE_TYPE)?;
        let divisor_scale = cast(divisor_scale, &SCALE_TYPE)?;
        let (ds1, ds2) = (
            dividend_scale.as_primitive::<Int32Type>(),
            divisor_scale.as_primitive::<Int32Type>(),
        );
        let scales: Int32Array = (0..rows)
            .map(|i| {
                if dividend.is_null(i) || divisor.is_null(i) || ds1.is_null(i) || ds2.is_null(i) {
                    return None;
                }
                let (w1, d1) = first_digit(dividend.value(i), a_scale)?;
                let (w2, d2) = first_digit(divisor.value(i), b_scale)?;
                let weight = w1 - w2 - i32::from(d1 <= d2);
                let scale = (MIN_SIG_DIGITS - weight * 4)
                    .max(ds1.value(i))
                    .max(ds2.value(i));
                Some(scale.clamp(0, 1000))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(scales)))
    }
}

/// `column` as 128-bit decimals, with their scale (integers have 0).
fn decimals(column: &ArrayRef) -> Result<(Decimal128Array, i8)> {
    let scale = match column.data_type() {
        DataType::Decimal128(_, s) => *s,
        _ => 0,
    };
    let as_decimal = cast(column, &DataType::Decimal128(38, scale))?;
    Ok((as_decimal.as_primitive::<Decimal128Type>().clone(), scale))
}

fn greatest(l: Expr, r: Expr) -> Expr {
    let larger = Expr::BinaryExpr(BinaryExpr::new(
        Box::new(l.clone()),
        Operator::GtEq,
        Box::new(r.clone()),
    ));
    Expr::Case(Case::new(
        None,
        vec![(Box::new(larger), Box::new(l))],
        Some(Box::new(r)),
    ))
}

/// A result's display-scale columns applied: `schema` without them, and each batch with the
/// decimal columns that had them written out, as text or (where `binary` says so of its
/// position) as Postgres' binary numeric, each value with its own scale. Results without such
/// columns are returned as they are.
pub fn render(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    binary: impl Fn(usize) -> bool,
) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), DataFusionError> {
    let fields = schema.fields();
    let shown: Vec<usize> = (0..fields.len())
        .filter(|&i| !is_scale(fields[i].name()))
        .collect();
    if shown.len() == fields.len() {
        return Ok((schema, batches));
    }
    let scales: Vec<(usize, usize)> = (0..fields.len())
        .filter_map(|i| Some((scale_target(fields[i].name())?, i)))
        .collect();
    let visible = Arc::new(schema.project(&shown)?);
    let batches = batches
        .into_iter()
        .map(|batch| {
            let mut columns: Vec<ArrayRef> =
                shown.iter().map(|&i| Arc::clone(batch.column(i))).collect();
            let mut out_fields: Vec<Field> = visible
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            for &(of, at) in &scales {
                let (Some(column), Some(field)) = (columns.get(of), visible.fields().get(of))
                else {
                    continue;
                };
                let Some(written) = write(column, field, batch.column(at), binary(of)) else {
                    continue;
                };
                out_fields[of] = Field::new(field.name(), written.data_type().clone(), true);
                columns[of] = written;
            }
            Ok(RecordBatch::try_new(
                Arc::new(Schema::new(out_fields)),
                columns,
            )?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((visible, batches))
}

/// `schema` without its display-scale columns: the result's columns as clients see them.
pub fn shown(schema: &Schema) -> Schema {
    let kept: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| !is_scale(schema.field(i).name()))
        .collect();
    schema.project(&kept).unwrap_or_else(|_| schema.clone())
}

/// The values of decimal `column` (of `field`) as text with their `scales` (`pg_text`'s, where a
/// query carries them: [`super::output::text_scaled`]); `None` for another column.
pub fn texts(column: &ArrayRef, field: &Field, scales: &ArrayRef) -> Option<ArrayRef> {
    let scales = cast(scales, &SCALE_TYPE).ok()?;
    write(column, field, &scales, false)
}

/// The values of decimal `column` (of `field`) written with their `scales`.
fn write(column: &ArrayRef, field: &Field, scales: &ArrayRef, binary: bool) -> Option<ArrayRef> {
    let DataType::Decimal128(_, scale) = *column.data_type() else {
        return None;
    };
    let scales = scales.as_primitive_opt::<Int32Type>()?;
    let rule = Scale::of(field);
    let values = column.as_primitive::<Decimal128Type>();
    let decimals = |row: usize| {
        let v = values.value(row);
        let own = rule.decimals(v, scale);
        match scales.is_valid(row).then(|| scales.value(row)) {
            // At most the decimals stored; a quotient is rounded to its scale, any other value
            // shows at least the digits it has (a scale kept where a path changed the value
            // without deriving its scale must not hide digits).
            Some(s) => {
                let shown = u32::try_from(s)
                    .unwrap_or(0)
                    .min(u32::try_from(scale).unwrap_or(0));
                match rule {
                    Scale::Quotient(_) => shown,
                    _ => shown.max(Scale::Own(0).decimals(v, scale)),
                }
            }
            None => own,
        }
    };
    if binary {
        let mut out = BinaryBuilder::new();
        for row in 0..values.len() {
            if values.is_null(row) {
                out.append_null();
            } else {
                out.append_value(super::numeric::binary(
                    values.value(row),
                    scale,
                    decimals(row),
                ));
            }
        }
        return Some(Arc::new(out.finish()));
    }
    Some(crate::text_out::numerics_showing(column, |row, _, _| {
        decimals(row)
    }))
}

#[cfg(test)]
mod tests {
    use super::of_text;

    #[test]
    fn scales_of_written_numbers() {
        assert_eq!(of_text("1.50"), Some(2));
        assert_eq!(of_text("-0.000"), Some(3));
        assert_eq!(of_text("12"), Some(0));
        assert_eq!(of_text(" 15e-1 "), Some(1));
        assert_eq!(of_text("1.5E2"), Some(0));
        assert_eq!(of_text(".5"), Some(1));
        assert_eq!(of_text("NaN"), None);
        assert_eq!(of_text("1.2.3"), None);
        assert_eq!(of_text(""), None);
    }
}
