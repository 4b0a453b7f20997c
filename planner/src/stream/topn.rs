//! Top-N as a [`TopN`] stage behind a hash exchange on the partition columns (one instance
//! without PARTITION BY). Three query shapes become one:
//! - a filter on a ranking window function's column, `WHERE rn <= N` (also `rn < N`, `rn = N`,
//!   `rn BETWEEN a AND b`, `N >= rn`) over `ROW_NUMBER()`, `RANK()` or `DENSE_RANK()` `OVER
//!   (PARTITION BY ... ORDER BY ...)`, with projections and aliases in between; the other
//!   conditions of the filter apply to its output. Deduplication (`rn = 1` ordered by a time
//!   column) is top-1. Other conditions on the rank (`rn > 3`, `rn <= x`) are left to the
//!   general OVER window ([`super::over`]) and a filter;
//! - `ORDER BY ... LIMIT n [OFFSET m]`: row numbers `m + 1 ..= m + n` of the whole input;
//! - `DISTINCT ON (k) ... ORDER BY k, ...`: row number 1 per `k`.
//!
//! The window function's input is first narrowed to the columns the query reads (the projection
//! over the window, and the window's keys), so that the state holds only those; the streaming
//! planner lowers DataFusion's analyzed plan, in which a subquery's window reads every column of
//! the scan. Partition and order keys that are not plain columns are computed by a `Project` at the
//! end of the input's stage, after the input's own columns. The operator emits the input's columns
//! and the rank; the rank changes it emits only when the query reads the rank. `LIMIT` or `DISTINCT
//! ON` without `ORDER BY` picks arbitrary rows, which a view cannot maintain: refused.

use datafusion::arrow::compute::SortOptions;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    Between, BinaryExpr, DistinctOn, FetchType, Filter, Limit, Operator as BinOp, Projection,
    SkipType, SortExpr, SubqueryAlias, Window,
};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use rivulet_engine::operator::sorted::PartitionOrder;
use rivulet_engine::operator::topn::{Dedup, RankKind, TopN, TopNSpec, WindowClose};
use rivulet_engine::state::keys::sortable;

use super::*;

/// A ranking function's use, as the planner found it.
struct Ranking<'a> {
    rank: RankKind,
    partition: &'a [Expr],
    order: &'a [SortExpr],
    lo: u64,
    hi: u64,
    emit_rank: bool,
}

/// Nodes between a filter and the window function below it that pass rows through one by one.
enum Step<'a> {
    Alias(&'a SubqueryAlias),
    Projection(&'a Projection),
}

/// `f` as a top-N, if it filters a ranking window function's column (see the module
/// documentation); `None` if it does not. `above` is the projection over the filter, if any:
/// the rank is emitted only if it (or, without one, the query) reads it.
pub(super) fn lower_rank_filter(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    f: &Filter,
    above: Option<&[Expr]>,
) -> Result<Option<Lowered>> {
    // Down to the window function, noting where its column is at each level.
    let mut chain = Vec::new();
    let mut node = f.input.as_ref();
    let window = loop {
        match node {
            LogicalPlan::SubqueryAlias(a) => {
                chain.push(Step::Alias(a));
                node = &a.input;
            }
            LogicalPlan::Projection(p) => {
                chain.push(Step::Projection(p));
                node = &p.input;
            }
            LogicalPlan::Window(w) => break w,
            _ => return Ok(None),
        }
    };
    let [function] = window.window_expr.as_slice() else {
        return Ok(None);
    };
    let Expr::WindowFunction(function) = function.clone().unalias() else {
        return Ok(None);
    };
    let rank = match function.fun.name() {
        "row_number" => RankKind::RowNumber,
        "rank" => RankKind::Rank,
        "dense_rank" => RankKind::DenseRank,
        _ => return Ok(None),
    };
    let mut positions = vec![window.input.schema().fields().len()];
    for step in chain.iter().rev() {
        if let Step::Projection(p) = step {
            let input = p.input.schema();
            positions = (p.expr.iter().enumerate())
                .filter(|(_, e)| {
                    column_index(&(*e).clone().unalias(), input)
                        .is_some_and(|i| positions.contains(&i))
                })
                .map(|(i, _)| i)
                .collect();
        }
    }
    let schema = f.input.schema();
    let reads_rank = |e: &Expr| {
        e.column_refs().iter().any(|c| {
            schema
                .index_of_column(c)
                .is_ok_and(|i| positions.contains(&i))
        })
    };
    let (mut bounds, mut rest) = (Vec::new(), Vec::new());
    for conjunct in split_conjunction(&f.predicate) {
        if reads_rank(conjunct) {
            bounds.push(conjunct);
        } else {
            rest.push(conjunct.clone());
        }
    }
    if bounds.is_empty() {
        return Ok(None);
    }
    // Conditions that are not a range with an upper bound, and ranks without an order (which
    // the OVER window refuses), are the general OVER window's, filtered.
    let Ok((lo, hi)) = rank_range(&bounds, schema, &positions) else {
        return Ok(None);
    };
    if function.params.order_by.is_empty() {
        return Ok(None);
    }
    if let Some(narrowed) = narrowed(f, &chain, window)? {
        return lower_rank_filter(ctx, b, &narrowed, above);
    }
    let emit_rank = above.is_none_or(|exprs| exprs.iter().any(reads_rank));
    let ranking = Ranking {
        rank,
        partition: &function.params.partition_by,
        order: &function.params.order_by,
        lo,
        hi,
        emit_rank,
    };
    let mut l = lower_top_n(
        ctx,
        b,
        &window.input,
        &ranking,
        arrow_schema(&window.schema),
    )?;
    for step in chain.iter().rev() {
        if let Step::Projection(p) = step {
            l = project::project_over(ctx, b, p, l)?;
        }
    }
    if let Some(predicate) = rest.into_iter().reduce(Expr::and) {
        let predicate = physical(ctx, &predicate, schema)?;
        b.push_op(
            l.stage,
            Box::new(Project::new(
                Some(predicate),
                identity(schema),
                arrow_schema(schema),
            )),
        )?;
    }
    Ok(Some(l))
}

/// `f` with the window function's input narrowed to the columns the plan reads, so that the
/// top-N stores only those: the projection nearest above the window (which the streaming planner
/// has, as DataFusion's analyzer leaves it, over every column of the scan) reads some, the
/// window's keys others. `None` when it reads them all, or nothing projects between the filter
/// and the window (the filter's output is then the window's, which the caller lowered against).
fn narrowed(f: &Filter, chain: &[Step<'_>], window: &Window) -> Result<Option<Filter>> {
    let Some(nearest) = chain.iter().rev().find_map(|s| match s {
        Step::Projection(p) => Some(*p),
        Step::Alias(_) => None,
    }) else {
        return Ok(None);
    };
    let input = window.input.schema();
    let width = input.fields().len();
    // Aliases between the projection and the window rename, but keep positions.
    let read = nearest.input.schema();
    let mut keep = vec![false; width];
    let mut mark = |schema: &DFSchema, e: &Expr| {
        for c in e.column_refs() {
            match schema.index_of_column(c) {
                Ok(i) if i < width => keep[i] = true,
                Ok(_) => {}
                // Not a column of this schema (an outer reference): keep everything.
                Err(_) => keep.iter_mut().for_each(|k| *k = true),
            }
        }
    };
    for e in &nearest.expr {
        mark(read, e);
    }
    for e in &window.window_expr {
        mark(input, e);
    }
    if keep.iter().all(|k| *k) {
        return Ok(None);
    }
    let columns = (0..width)
        .filter(|&i| keep[i])
        .map(|i| Expr::Column(datafusion::common::Column::from(input.qualified_field(i))))
        .collect();
    let df = PlanError::DataFusion;
    let narrow = Projection::try_new(columns, Arc::clone(&window.input)).map_err(df)?;
    let mut plan = LogicalPlan::Window(
        Window::try_new(
            window.window_expr.clone(),
            Arc::new(LogicalPlan::Projection(narrow)),
        )
        .map_err(df)?,
    );
    for step in chain.iter().rev() {
        plan = match step {
            Step::Alias(a) => LogicalPlan::SubqueryAlias(
                SubqueryAlias::try_new(Arc::new(plan), a.alias.clone()).map_err(df)?,
            ),
            Step::Projection(p) => LogicalPlan::Projection(
                Projection::try_new(p.expr.clone(), Arc::new(plan)).map_err(df)?,
            ),
        };
    }
    Ok(Some(
        Filter::try_new(f.predicate.clone(), Arc::new(plan)).map_err(df)?,
    ))
}

/// The ranks `lo..=hi` that the conditions `bounds` on the rank column allow; an error when
/// they are not comparisons with constants (`rn % 2 = 0`) or set no upper bound (`rn > 3`).
fn rank_range(bounds: &[&Expr], schema: &DFSchema, positions: &[usize]) -> Result<(u64, u64)> {
    let refused = || PlanError::Unsupported("this condition on a rank as a top-N".into());
    let (mut lo, mut hi) = (1f64, f64::INFINITY);
    let constant = |e: &Expr| -> Result<Option<f64>> {
        if !e.column_refs().is_empty() {
            return Err(refused());
        }
        let simplifier = ExprSimplifier::new(
            datafusion::logical_expr::simplify::SimplifyContext::builder()
                .with_schema(Arc::new(schema.clone()))
                .build(),
        );
        match simplifier
            .simplify(e.clone())
            .map_err(PlanError::DataFusion)?
        {
            Expr::Literal(v, _) if v.is_null() => Ok(None),
            Expr::Literal(v, _) => match v.cast_to(&DataType::Float64) {
                Ok(ScalarValue::Float64(Some(x))) => Ok(Some(x)),
                _ => Err(refused()),
            },
            _ => Err(refused()),
        }
    };
    let is_rank = |e: &Expr| column_index(e, schema).is_some_and(|i| positions.contains(&i));
    for bound in bounds {
        let (op, value) = match bound {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_rank(left) => (*op, right),
            Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_rank(right) => {
                let flipped = match op {
                    BinOp::Lt => BinOp::Gt,
                    BinOp::LtEq => BinOp::GtEq,
                    BinOp::Gt => BinOp::Lt,
                    BinOp::GtEq => BinOp::LtEq,
                    other => *other,
                };
                (flipped, left)
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_rank(expr) => {
                match (constant(low)?, constant(high)?) {
                    (Some(l), Some(h)) => {
                        lo = lo.max(l.ceil());
                        hi = hi.min(h.floor());
                    }
                    _ => hi = 0.0,
                }
                continue;
            }
            _ => return Err(refused()),
        };
        // A comparison with NULL holds for no row.
        let Some(x) = constant(value)? else {
            hi = 0.0;
            continue;
        };
        match op {
            BinOp::LtEq => hi = hi.min(x.floor()),
            BinOp::Lt => hi = hi.min(x.ceil() - 1.0),
            BinOp::GtEq => lo = lo.max(x.ceil()),
            BinOp::Gt => lo = lo.max(x.floor() + 1.0),
            BinOp::Eq if x.fract() == 0.0 => {
                lo = lo.max(x);
                hi = hi.min(x);
            }
            BinOp::Eq => hi = 0.0,
            _ => return Err(refused()),
        }
    }
    if hi.is_infinite() {
        return Err(refused());
    }
    // Ranks are at least 1; an empty range keeps no row.
    Ok((lo.max(1.0) as u64, hi.max(0.0) as u64))
}

/// `ORDER BY ... LIMIT n [OFFSET m]`: the rows numbered `m + 1 ..= m + n`.
pub(super) fn lower_limit(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    limit: &Limit,
) -> Result<Lowered> {
    let skip = match limit.get_skip_type().map_err(PlanError::DataFusion)? {
        SkipType::Literal(n) => n as u64,
        SkipType::UnsupportedExpr => {
            return Err(PlanError::Unsupported(
                "OFFSET that is not a constant in a materialized view".into(),
            ));
        }
    };
    let fetch = match limit.get_fetch_type().map_err(PlanError::DataFusion)? {
        FetchType::Literal(Some(n)) => Some(n as u64),
        FetchType::Literal(None) => None,
        FetchType::UnsupportedExpr => {
            return Err(PlanError::Unsupported(
                "LIMIT that is not a constant in a materialized view".into(),
            ));
        }
    };
    let mut chain = Vec::new();
    let mut node = limit.input.as_ref();
    let sort = loop {
        match node {
            LogicalPlan::Projection(p) => {
                chain.push(p);
                node = &p.input;
            }
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            LogicalPlan::Sort(s) => break s,
            _ => {
                return Err(PlanError::UnsupportedHint {
                    what: "LIMIT without ORDER BY in a materialized view".into(),
                    hint: "A view keeps the rows its query defines, and LIMIT alone picks \
                           arbitrary ones; add an ORDER BY that decides which rows to keep."
                        .into(),
                });
            }
        }
    };
    let fetch = match (fetch, sort.fetch) {
        (Some(a), Some(b)) => a.min(b as u64),
        (a, b) => a.or(b.map(|b| b as u64)).ok_or_else(|| {
            PlanError::Unsupported("OFFSET without LIMIT in a materialized view".into())
        })?,
    };
    let ranking = Ranking {
        rank: RankKind::RowNumber,
        partition: &[],
        order: &sort.expr,
        lo: skip + 1,
        hi: skip.saturating_add(fetch),
        emit_rank: false,
    };
    let l = ranked_rows(ctx, b, &sort.input, &ranking)?;
    chain
        .iter()
        .rev()
        .try_fold(l, |l, p| project::project_over(ctx, b, p, l))
}

/// A sort that keeps its first `fetch` rows (as DataFusion's optimizer folds a LIMIT into it).
pub(super) fn lower_sort(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    sort: &datafusion::logical_expr::Sort,
) -> Result<Lowered> {
    let ranking = Ranking {
        rank: RankKind::RowNumber,
        partition: &[],
        order: &sort.expr,
        lo: 1,
        hi: sort.fetch.unwrap_or(usize::MAX) as u64,
        emit_rank: false,
    };
    ranked_rows(ctx, b, &sort.input, &ranking)
}

/// `DISTINCT ON (k) ... ORDER BY k, ...`: the first row of each `k`, projected.
pub(super) fn lower_distinct_on(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    d: &DistinctOn,
) -> Result<Lowered> {
    let Some(order) = &d.sort_expr else {
        return Err(PlanError::UnsupportedHint {
            what: "DISTINCT ON without ORDER BY in a materialized view".into(),
            hint: "Without ORDER BY the row kept for each value is arbitrary; add an ORDER BY \
                   that decides which row to keep."
                .into(),
        });
    };
    let ranking = Ranking {
        rank: RankKind::RowNumber,
        partition: &d.on_expr,
        order,
        lo: 1,
        hi: 1,
        emit_rank: false,
    };
    let l = ranked_rows(ctx, b, &d.input, &ranking)?;
    let projection = Projection::try_new(d.select_expr.clone(), Arc::clone(&d.input))
        .map_err(PlanError::DataFusion)?;
    project::project_over(ctx, b, &projection, l)
}

/// A top-N over `input` whose output is `input`'s columns (the rank dropped).
fn ranked_rows(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    input: &Arc<LogicalPlan>,
    ranking: &Ranking<'_>,
) -> Result<Lowered> {
    let schema = input.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_rivulet_rank", DataType::UInt64, false));
    let l = lower_top_n(ctx, b, input, ranking, Arc::new(Schema::new(fields)))?;
    b.push_op(
        l.stage,
        Box::new(Project::new(None, identity(schema), arrow_schema(schema))),
    )?;
    Ok(l)
}

/// The [`TopN`] stage over `input`, emitting `output` (`input`'s columns and the rank).
fn lower_top_n(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    input: &Arc<LogicalPlan>,
    ranking: &Ranking<'_>,
    output: SchemaRef,
) -> Result<Lowered> {
    let l = lower(ctx, b, input)?;
    let rows = sort_keys(ctx, b, &l, input.schema(), ranking.partition, ranking.order)?;
    let (width, partition) = (rows.width, rows.partition.clone());
    let append_only = l.append_only;
    // Partitioned by a window bound: a top-N per time window, whose groups close.
    let close = partition.iter().find_map(|&c| {
        let (_, offset) = l.time.bounds.iter().find(|(b, _)| *b == c && c < width)?;
        Some(WindowClose {
            column: c,
            offset: *offset,
            emit_on_close: ctx.emit_on_window_close,
        })
    });
    if close.is_some_and(|c| c.emit_on_close) {
        b.windowed_aggregates += 1;
    }
    let spec = TopNSpec {
        rows,
        rank: ranking.rank,
        lo: ranking.lo,
        hi: ranking.hi,
        emit_rank: ranking.emit_rank,
        append_only,
        close,
    };
    // The first row per group of an append-only input is Flink's deduplication: its own
    // operator, one row per group.
    let dedup = spec.append_only
        && spec.close.is_none()
        && spec.rank == RankKind::RowNumber
        && (spec.lo, spec.hi) == (1, 1);
    let op: Box<dyn rivulet_engine::operator::Operator> = if dedup {
        Box::new(Dedup::try_new(spec, output)?)
    } else {
        Box::new(TopN::try_new(spec, output)?)
    };
    let keys = (!partition.is_empty()).then(|| partition.clone());
    let stage = b.exchange(l.stage, keys, ctx.parallelism);
    b.push_op(stage, op)?;
    // The output's key, if one is known: rows are unique by their group and row number when
    // each group keeps one row or the row number is emitted, and by the input's key (with the
    // group, which says which instance has the row) otherwise.
    let plain = partition.iter().all(|&c| c < width);
    let key = match (plain, ranking.rank, l.key) {
        (false, _, _) => None,
        (true, RankKind::RowNumber, _) if ranking.lo >= ranking.hi => Some(partition),
        (true, RankKind::RowNumber, _) if ranking.emit_rank => {
            Some(partition.into_iter().chain([width]).collect())
        }
        (true, _, Some(key)) => {
            let extra: Vec<usize> = key.into_iter().filter(|c| !partition.contains(c)).collect();
            Some(partition.into_iter().chain(extra).collect())
        }
        (true, _, None) => None,
    };
    // Closed windows' rows are final; emitted on close, they are all there is.
    let time = EventTime {
        bounds: close.map(|c| (c.column, c.offset)).into_iter().collect(),
        ..EventTime::default()
    };
    Ok(Lowered {
        stage,
        key,
        time,
        append_only: close.is_some_and(|c| c.emit_on_close),
    })
}

/// The partition and order keys of rows of `input` (lowered to `l`) as columns: keys that are
/// not plain columns are computed by a `Project` at the end of `l`'s stage, after the input's
/// own columns.
pub(super) fn sort_keys(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    l: &Lowered,
    input: &DFSchema,
    partition: &[Expr],
    order: &[SortExpr],
) -> Result<PartitionOrder> {
    let width = input.fields().len();
    let mut computed: Vec<Expr> = Vec::new();
    let mut key_column = |e: &Expr| match e {
        Expr::Column(c) => input.index_of_column(c).map_err(PlanError::DataFusion),
        _ => {
            computed.push(e.clone());
            Ok(width + computed.len() - 1)
        }
    };
    let partition = (partition.iter())
        .map(&mut key_column)
        .collect::<Result<Vec<_>>>()?;
    let order_columns = (order.iter())
        .map(|s| {
            let options = SortOptions {
                descending: !s.asc,
                nulls_first: s.nulls_first,
            };
            Ok((key_column(&s.expr)?, options))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (i, e) in computed.iter().enumerate() {
        let (_, field) = e.to_field(input).map_err(PlanError::DataFusion)?;
        fields.push(Field::new(
            format!("_sort_key{i}"),
            field.data_type().clone(),
            true,
        ));
    }
    for (s, (c, _)) in order.iter().zip(&order_columns) {
        let t = fields[*c].data_type();
        if !sortable(t) {
            let t = SqlType::from_arrow(t).map_or_else(|| t.to_string(), |t| t.pg_name());
            return Err(PlanError::Unsupported(format!(
                "ORDER BY {} of type {t} in a materialized view",
                s.expr
            )));
        }
    }
    let input_schema = Arc::new(Schema::new(fields));
    if !computed.is_empty() {
        let mut exprs = identity(input);
        for e in &computed {
            exprs.push(physical(ctx, e, input)?);
        }
        b.push_op(
            l.stage,
            Box::new(Project::new(None, exprs, Arc::clone(&input_schema))),
        )?;
    }
    Ok(PartitionOrder {
        input: input_schema,
        width,
        partition,
        order: order_columns,
    })
}
