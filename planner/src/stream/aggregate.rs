//! `Aggregate` and `DISTINCT`: a `HashAggregate` with retractions in a new stage behind a hash
//! exchange on the group columns, preceded by a `Project` when a key or argument is an expression;
//! windowed when it groups by a window bound.

use super::*;
use datafusion::arrow::compute::SortOptions;
use datafusion::logical_expr::expr::NullTreatment;
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::{Aggregate, lit};
use datafusion::physical_expr::PhysicalSortExpr;
use rivulet_engine::operator::aggregate::AccumulatorFactory;

/// An `Aggregate` (or a session or HOP window aggregate) as a keyed stage.
pub(super) fn lower_aggregate(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    a: &Aggregate,
) -> Result<Lowered> {
    if let Some(union) = grouping_sets::as_union(a)? {
        return lower(ctx, b, &union);
    }
    if let Some(l) = session::lower_session(ctx, b, a)? {
        return Ok(l);
    }
    if let Some(l) = hop::lower_hop(ctx, b, a)? {
        return Ok(l);
    }
    let l = lower(ctx, b, &a.input)?;
    let input = a.input.schema();
    let groups = a.group_expr.len();
    let mut pre_exprs: Vec<Expr> = a.group_expr.clone();
    let mut specs = Vec::with_capacity(a.aggr_expr.len());
    for e in &a.aggr_expr {
        let mut call = aggregate_of(ctx, e, input)?;
        // `avg` of an integer reaches us as `avg(CAST(x AS DECIMAL))`, and `sum` of a bigint as
        // `sum(CAST(x AS DECIMAL(20,0)))` (Postgres' numeric results, `server/src/pg/typing.rs`);
        // the operator sums and averages the integers exactly into the decimal output type
        // itself, to the same digits, so `x` is read in place.
        let func = call.func();
        if let (AggFunc::Avg | AggFunc::Sum, Some(Expr::Cast(c))) = (func, call.exprs.first())
            && matches!(c.field.data_type(),
                DataType::Decimal128(_, s) if func == AggFunc::Avg || *s == 0)
            && c.expr.get_type(input).is_ok_and(|t| t.is_integer())
        {
            call.exprs[0] = (*c.expr).clone();
        }
        let columns: Vec<usize> = (pre_exprs.len()..).take(call.exprs.len()).collect();
        pre_exprs.extend(call.exprs.iter().cloned());
        specs.push(call.spec(&columns));
    }
    // Keys and arguments that are plain input columns are read in place; otherwise a
    // `Project` computes them first.
    let direct: Option<Vec<usize>> = pre_exprs
        .iter()
        .map(|e| match e {
            Expr::Column(c) => input.index_of_column(c).ok(),
            _ => None,
        })
        .collect();
    let (agg_input, group_by, specs, time) = match direct {
        Some(columns) => {
            let specs = specs
                .into_iter()
                .map(|s| s.map_columns(|i| columns[i]))
                .collect();
            (
                arrow_schema(input),
                columns[..groups].to_vec(),
                specs,
                l.time.clone(),
            )
        }
        None => {
            let pre_physical = pre_exprs
                .iter()
                .map(|e| physical(ctx, e, input))
                .collect::<Result<Vec<_>>>()?;
            let pre_schema = pre_schema(&pre_exprs, input)?;
            b.push_op(
                l.stage,
                Box::new(Project::new(None, pre_physical, Arc::clone(&pre_schema))),
            )?;
            let time = l.time.project(&pre_exprs, input);
            (pre_schema, (0..groups).collect::<Vec<_>>(), specs, time)
        }
    };
    let window = time.window_key(&group_by);
    let keys = (!group_by.is_empty()).then(|| group_by.clone());
    let aggregate = HashAggregate::try_new(agg_input, group_by, specs, arrow_schema(&a.schema))?;
    let aggregate = match (window, ctx.state_ttl) {
        (None, Some(ttl)) => aggregate.with_state_ttl(ttl),
        _ => aggregate,
    };
    let aggregate = if l.append_only {
        aggregate.with_append_only_input()
    } else {
        aggregate
    };
    let aggregate = windowed(ctx, b, aggregate, window, time.rowtime)?;
    let stage = b.exchange(l.stage, keys, ctx.parallelism);
    b.push_op(stage, Box::new(aggregate))?;
    Ok(Lowered {
        stage,
        key: Some((0..groups).collect()),
        time: EventTime {
            bounds: window.into_iter().collect(),
            ..EventTime::default()
        },
        append_only: window.is_some() && ctx.emit_on_window_close,
    })
}

/// `DISTINCT` as a `HashAggregate` grouped by every column.
pub(super) fn lower_distinct(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    input: &Arc<LogicalPlan>,
) -> Result<Lowered> {
    let l = lower(ctx, b, input)?;
    let schema = arrow_schema(input.schema());
    let columns = schema.fields().len();
    let aggregate = HashAggregate::try_new(
        Arc::clone(&schema),
        (0..columns).collect(),
        Vec::new(),
        schema,
    )?;
    let window = l.time.window_key(&(0..columns).collect::<Vec<_>>());
    let aggregate = windowed(ctx, b, aggregate, window, l.time.rowtime)?;
    let stage = b.exchange(l.stage, Some((0..columns).collect()), ctx.parallelism);
    b.push_op(stage, Box::new(aggregate))?;
    Ok(Lowered {
        stage,
        key: Some((0..columns).collect()),
        time: EventTime {
            bounds: window.into_iter().collect(),
            ..EventTime::default()
        },
        append_only: window.is_some() && ctx.emit_on_window_close,
    })
}

/// Makes `aggregate` close its windows on the watermark when it groups by a window bound
/// (`window`: key position and offset), emitting on close when the view asks for it.
fn windowed(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    aggregate: HashAggregate,
    window: Option<(usize, i64)>,
    rowtime: Option<usize>,
) -> Result<HashAggregate> {
    let Some((key, offset)) = window else {
        return Ok(aggregate);
    };
    b.windowed_aggregates += 1;
    let lateness = if ctx.emit_on_window_close {
        0
    } else {
        ctx.allowed_lateness
    };
    Ok(aggregate.with_window(
        key,
        offset.saturating_add(lateness),
        ctx.emit_on_window_close,
        rowtime,
    ))
}

/// The schema of the columns computed before an aggregate: group keys, then arguments.
pub(super) fn pre_schema(exprs: &[Expr], input: &DFSchema) -> Result<SchemaRef> {
    let fields = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let (_, field) = e.to_field(input).map_err(PlanError::DataFusion)?;
            Ok(Field::new(
                format!("c{i}"),
                field.data_type().clone(),
                field.is_nullable(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(fields)))
}

/// One aggregate call as the operator reads it: the expressions it needs computed before it and
/// how it uses them.
#[derive(Debug, Clone)]
pub(super) struct AggCall {
    spec: AggSpec,
    /// The value, then the `ORDER BY` keys, then the `FILTER` predicate (whichever the call
    /// has): `spec` reads `exprs[i]` as input column `i`.
    pub(super) exprs: Vec<Expr>,
}

impl AggCall {
    fn new(func: AggFunc, arg: Option<Expr>) -> Self {
        let mut exprs = Vec::new();
        let input = arg.map(|a| {
            exprs.push(a);
            0
        });
        Self {
            spec: AggSpec {
                func,
                input,
                ..AggSpec::default()
            },
            exprs,
        }
    }

    pub(super) fn func(&self) -> AggFunc {
        self.spec.func
    }

    /// The operator's aggregate, reading `exprs[i]` at input column `columns[i]`.
    pub(super) fn spec(&self, columns: &[usize]) -> AggSpec {
        self.spec
            .clone()
            .map_columns(|i| columns.get(i).copied().unwrap_or(i))
    }

    /// `agg(x) FILTER (WHERE p)`. Every aggregate but ARRAY_AGG, FIRST_VALUE and LAST_VALUE
    /// skips NULLs, so there it is `agg(CASE WHEN p THEN x END)` (and `count(*)` counts the
    /// non-NULL 1s); those three keep NULLs and read the predicate as a column of their own.
    fn filtered(mut self, filter: Box<Expr>) -> Self {
        if matches!(
            self.spec.func,
            AggFunc::ArrayAgg | AggFunc::FirstValue | AggFunc::LastValue
        ) {
            self.exprs.push(*filter);
            self.spec.filter = Some(self.exprs.len() - 1);
            return self;
        }
        let when = |value: Expr| {
            Expr::Case(datafusion::logical_expr::Case::new(
                None,
                vec![(filter.clone(), Box::new(value))],
                None,
            ))
        };
        if self.spec.func == AggFunc::CountStar {
            self.spec.func = AggFunc::Count;
            self.spec.input = Some(0);
            self.exprs = vec![when(lit(1i64))];
        } else if let Some(value) = self.exprs.first_mut() {
            *value = when(value.clone());
        }
        self
    }
}

/// Aggregates without a retractable state of their own that a view computes from the multiset of
/// a group's values ([`AggFunc::Recomputed`]): each result depends only on that multiset, never on
/// the order rows came in, so a view equals the batch answer.
const RECOMPUTED: &[&str] = &[
    "approx_distinct",
    "approx_median",
    "approx_percentile_cont",
    "median",
    SINGLE_VALUE,
];

/// Name of the server's aggregate of a scalar subquery's one row (NULL for none, an error for a
/// second): a correlated lookup `(SELECT name FROM u WHERE u.id = t.uid)` aggregates through it.
/// In a view, a group whose second row comes fails the job, as Flink's SINGLE_VALUE does (NULL
/// items are not counted, as the recomputed aggregates skip NULLs).
pub const SINGLE_VALUE: &str = "rivulet_single_value";

/// An aggregate call of DataFusion's plan (over `input`) as the streaming aggregate's.
pub(super) fn aggregate_of(ctx: &StreamContext<'_>, e: &Expr, input: &DFSchema) -> Result<AggCall> {
    let Expr::AggregateFunction(agg) = e.clone().unalias() else {
        return Err(PlanError::Unsupported(format!("aggregate expression {e}")));
    };
    let name = agg.func.name().to_lowercase();
    let p = agg.params;
    if let Some(filter) = p.filter {
        let call = aggregate_of(
            ctx,
            &Expr::AggregateFunction(datafusion::logical_expr::expr::AggregateFunction {
                func: agg.func,
                params: datafusion::logical_expr::expr::AggregateFunctionParams {
                    filter: None,
                    ..p
                },
            }),
            input,
        )?;
        return Ok(call.filtered(filter));
    }
    if matches!(
        name.as_str(),
        "string_agg" | "array_agg" | "first_value" | "last_value"
    ) {
        if p.null_treatment == Some(NullTreatment::IgnoreNulls) {
            return Err(PlanError::Unsupported(format!(
                "{name}(... IGNORE NULLS) in a materialized view"
            )));
        }
        return ordered(&name, &p.args, &p.order_by, p.distinct);
    }
    if RECOMPUTED.contains(&name.as_str()) {
        return recomputed(ctx, e, &agg.func, &p, input);
    }
    if !p.order_by.is_empty() {
        return Err(PlanError::Unsupported(format!("ORDER BY inside {name}()")));
    }
    let arg = match p.args.as_slice() {
        [] => None,
        [a] => Some(a.clone()),
        _ => {
            return Err(PlanError::Unsupported(format!(
                "{name}() with several arguments"
            )));
        }
    };
    let func = match (name.as_str(), p.distinct) {
        ("count", false) => match &arg {
            None => AggFunc::CountStar,
            Some(Expr::Literal(v, _)) if !v.is_null() => AggFunc::CountStar,
            Some(_) => AggFunc::Count,
        },
        ("count", true) => AggFunc::CountDistinct,
        ("sum", false) => AggFunc::Sum,
        ("avg" | "mean", false) => AggFunc::Avg,
        ("min", _) => AggFunc::Min,
        ("max", _) => AggFunc::Max,
        ("bool_and", _) => AggFunc::BoolAnd,
        ("bool_or", _) => AggFunc::BoolOr,
        (other, true) => {
            return Err(PlanError::Unsupported(format!(
                "{other}(DISTINCT ...) in a materialized view"
            )));
        }
        (other, false) => {
            return Err(PlanError::Unsupported(format!(
                "the aggregate {other}() in a materialized view"
            )));
        }
    };
    let arg = if func == AggFunc::CountStar {
        None
    } else {
        arg
    };
    Ok(AggCall::new(func, arg))
}

/// `string_agg(value, separator [ORDER BY ...])` and `array_agg(value [ORDER BY ...])`, with
/// or without DISTINCT, and `first_value`/`last_value(value [ORDER BY ...])`. Values that tie in
/// the order (all of them, without ORDER BY) follow in their encoding's order: a view must not
/// depend on arrival order.
fn ordered(
    name: &str,
    args: &[Expr],
    order_by: &[datafusion::logical_expr::SortExpr],
    distinct: bool,
) -> Result<AggCall> {
    let (func, value, delimiter) = match (name, args) {
        ("array_agg", [value]) => (AggFunc::ArrayAgg, value, None),
        ("first_value", [value]) if !distinct => (AggFunc::FirstValue, value, None),
        ("last_value", [value]) if !distinct => (AggFunc::LastValue, value, None),
        ("string_agg", [value, separator]) => {
            (AggFunc::StringAgg, value, Some(separator_of(separator)?))
        }
        _ => {
            return Err(PlanError::Unsupported(format!(
                "{name}() with {} arguments",
                args.len()
            )));
        }
    };
    let plain = |e: &Expr| match e.clone().unalias() {
        Expr::Cast(c) => *c.expr,
        other => other,
    };
    if distinct && order_by.iter().any(|s| plain(&s.expr) != plain(value)) {
        // Postgres refuses it too: which of a value's rows would give its place?
        return Err(PlanError::UnsupportedHint {
            what: format!("{name}(DISTINCT ...) ordered by anything but its value"),
            hint: "order by the aggregated value, or drop DISTINCT".into(),
        });
    }
    let mut call = AggCall::new(func, Some(value.clone()));
    call.spec.delimiter = delimiter;
    call.spec.distinct = distinct;
    for s in order_by {
        call.exprs.push(s.expr.clone());
        let options = SortOptions {
            descending: !s.asc,
            nulls_first: s.nulls_first,
        };
        call.spec.order.push((call.exprs.len() - 1, options));
    }
    Ok(call)
}

/// An aggregate in [`RECOMPUTED`]: its value argument is the operator's input, its other
/// arguments (a percentile) constants that DataFusion's accumulator reads as they are.
fn recomputed(
    ctx: &StreamContext<'_>,
    call: &Expr,
    func: &Arc<datafusion::logical_expr::AggregateUDF>,
    p: &datafusion::logical_expr::expr::AggregateFunctionParams,
    input: &DFSchema,
) -> Result<AggCall> {
    let name = func.name().to_string();
    let Some((value, constants)) = p.args.split_first() else {
        return Err(PlanError::Unsupported(format!(
            "{name}() without an argument"
        )));
    };
    if p.distinct {
        return Err(PlanError::Unsupported(format!(
            "{name}(DISTINCT ...) in a materialized view"
        )));
    }
    let (_, value_field) = value.to_field(input).map_err(PlanError::DataFusion)?;
    let value_field = Arc::new(Field::new("value", value_field.data_type().clone(), true));
    let (_, return_field) = call.to_field(input).map_err(PlanError::DataFusion)?;
    let schema = Schema::new(vec![Arc::clone(&value_field)]);
    let mut args: Vec<Arc<dyn PhysicalExpr>> = vec![Arc::new(Column::new("value", 0))];
    let mut fields = vec![value_field];
    for c in constants {
        args.push(physical(ctx, c, input)?);
        let (_, f) = c.to_field(input).map_err(PlanError::DataFusion)?;
        fields.push(f);
    }
    // WITHIN GROUP (ORDER BY x DESC) turns a percentile around.
    let order: Vec<PhysicalSortExpr> = p
        .order_by
        .iter()
        .map(|s| {
            PhysicalSortExpr::new(
                Arc::new(Column::new("value", 0)),
                SortOptions {
                    descending: !s.asc,
                    nulls_first: s.nulls_first,
                },
            )
        })
        .collect();
    // `approx_percentile_cont(0.9) DESC`: the constants and the direction, for EXPLAIN.
    let mut shown = name.clone();
    if args.len() > 1 {
        let constants: Vec<String> = args[1..].iter().map(|c| c.to_string()).collect();
        shown.push_str(&format!("({})", constants.join(", ")));
    }
    if order.iter().any(|o| o.options.descending) {
        shown.push_str(" DESC");
    }
    let func = Arc::clone(func);
    let make = move || {
        func.accumulator(AccumulatorArgs {
            return_field: Arc::clone(&return_field),
            schema: &schema,
            ignore_nulls: false,
            order_bys: &order,
            is_reversed: false,
            name: &name,
            is_distinct: false,
            exprs: &args,
            expr_fields: &fields,
        })
    };
    // A constant the accumulator cannot use (a percentile of 2) is the user's error, now.
    make().map_err(PlanError::DataFusion)?;
    let mut call = AggCall::new(AggFunc::Recomputed, Some(value.clone()));
    call.spec.recompute = Some(AccumulatorFactory {
        name: shown,
        make: Arc::new(make),
    });
    Ok(call)
}

/// STRING_AGG's separator, which must be a constant.
fn separator_of(separator: &Expr) -> Result<String> {
    let not_constant =
        || PlanError::Unsupported("string_agg() with a separator that is not a constant".into());
    Ok(match separator.clone().unalias() {
        Expr::Literal(v, _) if v.is_null() => String::new(),
        Expr::Literal(v, _) => v.to_string(),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(v, _) => v.to_string(),
            _ => return Err(not_constant()),
        },
        _ => return Err(not_constant()),
    })
}
