//! The streaming planner: a materialized view's query, as DataFusion planned it, to a job graph of
//! streaming operators (see `rivulet_engine::job::graph`).
//!
//! DataFusion binds the query, resolves names, coerces types (its analyzer runs first) and types the
//! output; this module only decides how each plan node is maintained incrementally:
//! - a table scan becomes a source stage reading the table's change log (projection and pushed
//!   filters become a `Project`);
//! - `Filter` and `Projection` become a `Project` with DataFusion physical expressions, chained
//!   into the stage below;
//! - `Aggregate` (and `DISTINCT`) becomes a `HashAggregate` with retractions in a new stage of
//!   `parallelism` instances behind a hash exchange on the group columns (one instance without
//!   GROUP BY), preceded by a `Project` when a group key or argument is an expression; its group
//!   columns are the view's key;
//! - `UNION ALL` merges its inputs' stages into one stream (a `UNION` is its `DISTINCT`);
//! - `JOIN` (and the semi and anti joins of `IN`/`EXISTS` subqueries) becomes a `HashJoin` in a
//!   new stage of `parallelism` instances reading both sides, each hash-exchanged on its own key
//!   columns ([`join`]);
//! - a top-level `ORDER BY` without `LIMIT` is dropped (a view is a set, as in RisingWave).
//!
//! Anything else is refused with `Unsupported` naming the construct, never planned approximately.
//! A view is keyed by its GROUP BY columns, or by its source's primary key when it selects it;
//! a view with neither keeps each distinct row once with a hidden count ([`COUNT_COLUMN`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, TableReference};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Distinct, Expr, ExprSchemable, LogicalPlan};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::physical_plan::expressions::{CastExpr, Column};
use rivulet_engine::job::graph::{Edge, JobGraph, Source, Stage, StageInput};
use rivulet_engine::operator::Operator;
use rivulet_engine::operator::aggregate::{AggFunc, AggSpec, HashAggregate};
use rivulet_engine::operator::project::Project;
use rivulet_engine::operator::unnest::Unnest;
use rivulet_engine::table::TableStore;

use crate::catalog::{ColumnDef, WatermarkDef};
use crate::error::{PlanError, Result};
use crate::types::SqlType;

/// Fixed-interval timestamp arithmetic, vectorized.
mod fast;
/// HOP windows aggregated by slices.
mod hop;
/// Regular joins, semi and anti joins.
mod join;

/// Session windows under an aggregate.
mod session;
/// Event-time lineage: which columns are window bounds, and when their windows close.
pub mod time;

use time::EventTime;

/// A view's query as a job graph.
pub struct StreamPlan {
    /// Sources, stages and their operators; the last stage emits the view's changes.
    pub graph: JobGraph,
    /// The view's columns, as stored (the last operator emits exactly these types).
    pub columns: Vec<ColumnDef>,
    /// Positions of the view's key columns (empty: the view has one row).
    pub key: Vec<usize>,
    /// The view has no key of its own: its last column, [`COUNT_COLUMN`], counts identical rows.
    pub counted: bool,
}

/// The hidden multiplicity column of a view without a key.
pub const COUNT_COLUMN: &str = "_rivulet_count";

impl StreamPlan {
    /// One line per stage and operator, for EXPLAIN.
    pub fn explain(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .graph
            .explain(&|t: &TableStore| t.name().to_string())
            .iter()
            .map(|l| readable_intervals(l))
            .collect();
        lines.push(format!("Materialize: key {:?}", self.key));
        lines
    }
}

/// Rewrites Arrow's debug form of interval literals in plan text
/// (`IntervalMonthDayNano { months: 0, days: 0, nanoseconds: 5000000000 }`) as SQL (`INTERVAL '5 s'`).
fn readable_intervals(line: &str) -> String {
    const OPEN: &str = "IntervalMonthDayNano { months: ";
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(OPEN) {
        out.push_str(&rest[..at]);
        let tail = &rest[at + OPEN.len()..];
        let parsed = (|| {
            let (months, tail) = tail.split_once(", days: ")?;
            let (days, tail) = tail.split_once(", nanoseconds: ")?;
            let (nanos, tail) = tail.split_once(" }")?;
            Some((
                months.parse::<i64>().ok()?,
                days.parse::<i64>().ok()?,
                nanos.parse::<i64>().ok()?,
                tail,
            ))
        })();
        match parsed {
            Some((months, days, nanos, tail)) => {
                let mut parts = Vec::new();
                if months != 0 {
                    parts.push(format!("{months} mons"));
                }
                if days != 0 {
                    parts.push(format!("{days} days"));
                }
                if nanos != 0 || parts.is_empty() {
                    let secs = nanos as f64 / 1e9;
                    parts.push(format!("{secs} s"));
                }
                out.push_str(&format!("INTERVAL '{}'", parts.join(" ")));
                rest = tail;
            }
            None => {
                out.push_str(OPEN);
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A table's watermark expression, planned over its rows: `ts - INTERVAL '5' SECOND` must be a
/// TIMESTAMP, like the event-time column it is computed from.
pub fn watermark_expr(
    state: &SessionState,
    schema: &SchemaRef,
    def: &WatermarkDef,
) -> Result<Arc<dyn PhysicalExpr>> {
    let df_schema = DFSchema::try_from(schema.as_ref().clone()).map_err(PlanError::DataFusion)?;
    let expr = state
        .create_logical_expr(&def.expr, &df_schema)
        .map_err(PlanError::DataFusion)?;
    let data_type = expr.get_type(&df_schema).map_err(PlanError::DataFusion)?;
    if !matches!(data_type, DataType::Timestamp(_, _)) {
        let type_name = SqlType::from_arrow(&data_type)
            .map(|t| t.pg_name())
            .unwrap_or_else(|| data_type.to_string());
        return Err(PlanError::WrongType(format!(
            "watermark expression \"{}\" is of type {type_name}, but a TIMESTAMP is required",
            def.expr
        )));
    }
    state
        .create_physical_expr(fast::rewrite(expr, &df_schema), &df_schema)
        .map_err(PlanError::DataFusion)
}

/// A relation as a job reads it.
pub struct Resolved {
    pub store: Arc<TableStore>,
    /// Its key, if its rows are unique by one.
    pub key: Option<Vec<usize>>,
    /// Its event time, if it declares a watermark.
    pub watermark: Option<WatermarkDef>,
    /// How long without rows before its watermark follows the wall clock.
    pub idle_timeout: Option<std::time::Duration>,
    /// Its rows are only ever inserted (APPEND ONLY, a connector's table, an EMIT ON WINDOW
    /// CLOSE view).
    pub append_only: bool,
    /// Its event time is a `PROCTIME()` column (see `rivulet_engine::job::graph::Source`).
    pub processing_time: bool,
    /// Its rows come from outside (files), read by the job itself.
    pub external: Option<Arc<dyn rivulet_engine::job::graph::ExternalSource>>,
}

/// Where the planner finds tables, and how parallel keyed stages are.
pub struct StreamContext<'a> {
    pub state: &'a SessionState,
    /// Instances of each keyed stage (aggregations).
    pub parallelism: usize,
    /// Windowed aggregations emit one final row per window when it closes.
    pub emit_on_window_close: bool,
    /// Microseconds a window stays open for late rows after the watermark passed its end
    /// (emit-on-update views only: an emitted-on-close window is final).
    pub allowed_lateness: i64,
    /// The job is a sink: its changes leave Rivulet as they are, so a query without a key needs
    /// no counting of identical rows.
    pub sink: bool,
    /// A relation's storage and its key (primary key, or a view's key; `None` for a table
    /// without a primary key).
    pub resolve: &'a dyn Fn(&TableReference) -> Option<Resolved>,
}

/// A subtree of the plan, lowered: its output is what stage `stage` emits.
struct Lowered {
    stage: usize,
    /// Positions of the key columns in the current output, when there is a key.
    key: Option<Vec<usize>>,
    /// Which output columns carry event time (see [`time`]).
    time: EventTime,
    /// The output only ever inserts rows.
    append_only: bool,
}

/// The stages planned so far.
#[derive(Default)]
struct Builder {
    stages: Vec<Stage>,
    /// Aggregations that close windows on the watermark.
    windowed_aggregates: usize,
}

impl Builder {
    fn push_op(&mut self, stage: usize, op: Box<dyn Operator>) -> Result<()> {
        self.stages
            .get_mut(stage)
            .ok_or_else(|| rivulet_engine::EngineError::Internal(format!("no stage {stage}")))?
            .operators
            .push(op);
        Ok(())
    }

    /// A new stage reading `from`'s output: hash-partitioned on `keys` among `parallelism`
    /// instances, or gathered into one instance when `keys` is `None`.
    fn exchange(&mut self, from: usize, keys: Option<Vec<usize>>, parallelism: usize) -> usize {
        let parallelism = if keys.is_some() {
            parallelism.max(1)
        } else {
            1
        };
        // A union that nothing was applied to yet is read directly from its inputs.
        if from + 1 == self.stages.len()
            && let Some(stage) = self.stages.last_mut()
            && stage.operators.is_empty()
            && let StageInput::Merge(edges) = &stage.input
            && let [
                Edge {
                    from: inputs,
                    keys: None,
                },
            ] = edges.as_slice()
        {
            stage.input = StageInput::merge(inputs.clone(), keys);
            stage.parallelism = parallelism;
            return from;
        }
        self.stages.push(Stage {
            input: StageInput::merge(vec![from], keys),
            operators: Vec::new(),
            parallelism,
        });
        self.stages.len() - 1
    }
}

/// Plans `plan` (a query as DataFusion's SQL planner produced it) for incremental maintenance.
pub fn plan_view(ctx: &StreamContext<'_>, plan: LogicalPlan) -> Result<StreamPlan> {
    let plan = ctx
        .state
        .analyzer()
        .execute_and_check(plan, ctx.state.config_options(), |_, _| {})
        .map_err(PlanError::DataFusion)?;
    let plan = strip_top_sort(plan)?;
    let plan = join::decorrelate(ctx, plan)?;
    let output = plan.schema();
    let columns = view_columns(&plan, output)?;
    let mut b = Builder::default();
    let lowered = lower(ctx, &mut b, &plan)?;
    // Store columns in their SQL types; cast where DataFusion computed another Arrow type.
    let stored: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(&c.name, c.sql_type.arrow_type(), true))
        .collect();
    if stored
        .iter()
        .zip(output.fields())
        .any(|(s, o)| s.data_type() != o.data_type())
    {
        let exprs = output
            .fields()
            .iter()
            .zip(&stored)
            .enumerate()
            .map(|(i, (o, s))| {
                let col: Arc<dyn PhysicalExpr> = Arc::new(Column::new(o.name(), i));
                if o.data_type() == s.data_type() {
                    col
                } else {
                    Arc::new(CastExpr::new(col, s.data_type().clone(), None))
                }
            })
            .collect();
        b.push_op(
            lowered.stage,
            Box::new(Project::new(
                None,
                exprs,
                Arc::new(Schema::new(stored.clone())),
            )),
        )?;
    }
    let mut columns = columns;
    let (key, counted) = match lowered.key {
        Some(key) => (key, false),
        None if ctx.sink => (Vec::new(), false),
        None => {
            // No key: count identical rows. The view keeps each distinct row once with its
            // multiplicity in a hidden last column; reads repeat the row that many times.
            let n = stored.len();
            let mut counted_fields = stored.clone();
            counted_fields.push(Field::new(COUNT_COLUMN, DataType::Int64, false));
            let counter = HashAggregate::try_new(
                Arc::new(Schema::new(stored)),
                (0..n).collect(),
                vec![AggSpec {
                    func: AggFunc::CountStar,
                    input: None,
                    delimiter: None,
                }],
                Arc::new(Schema::new(counted_fields)),
            )?;
            let stage = b.exchange(lowered.stage, Some((0..n).collect()), ctx.parallelism);
            b.push_op(stage, Box::new(counter))?;
            columns.push(ColumnDef {
                name: COUNT_COLUMN.into(),
                sql_type: SqlType::BigInt,
                nullable: false,
            });
            ((0..n).collect(), true)
        }
    };
    if ctx.emit_on_window_close && b.windowed_aggregates == 0 {
        return Err(PlanError::Unsupported(
            "EMIT ON WINDOW CLOSE without a GROUP BY on a window bound (window_start or \
             window_end) of a table with a WATERMARK"
                .into(),
        ));
    }
    let graph = JobGraph { stages: b.stages };
    graph.validate()?;
    Ok(StreamPlan {
        graph,
        columns,
        key,
        counted,
    })
}

/// Column names and types of a view, named as Postgres names them: `count(*)` is `count`,
/// `t.price` is `price`.
fn view_columns(plan: &LogicalPlan, output: &DFSchema) -> Result<Vec<ColumnDef>> {
    let mut columns: Vec<ColumnDef> = Vec::with_capacity(output.fields().len());
    for (i, field) in output.fields().iter().enumerate() {
        let raw = field.name().as_str();
        // Names the user gave (`AS total`) and plain column names are kept as they are.
        let given = match plan {
            LogicalPlan::Projection(p) => match p.expr.get(i) {
                Some(Expr::Alias(a)) => Some(a.name.clone()),
                Some(Expr::Column(c)) => Some(c.name.clone()),
                _ => None,
            },
            _ => None,
        };
        let is_ident =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
        let name = match (given, raw.split_once('(')) {
            (Some(g), _) if !g.contains('(') => g,
            (_, Some((func, _))) if is_ident(func) => func.to_string(),
            (None, None) if is_ident(raw) => raw.to_string(),
            _ => "?column?".to_string(),
        };
        if columns.iter().any(|c| c.name == name) {
            return Err(PlanError::DuplicateColumn(name));
        }
        let sql_type = SqlType::from_arrow(field.data_type()).ok_or_else(|| {
            PlanError::Unsupported(format!(
                "column \"{name}\" of type {} in a materialized view",
                field.data_type()
            ))
        })?;
        columns.push(ColumnDef {
            name,
            sql_type,
            nullable: true,
        });
    }
    Ok(columns)
}

fn strip_top_sort(plan: LogicalPlan) -> Result<LogicalPlan> {
    match plan {
        LogicalPlan::Sort(s) if s.fetch.is_none() => Ok(Arc::unwrap_or_clone(s.input)),
        LogicalPlan::Projection(p) if matches!(p.input.as_ref(), LogicalPlan::Sort(s) if s.fetch.is_none()) =>
        {
            let input = strip_top_sort(Arc::unwrap_or_clone(p.input))?;
            let projection = datafusion::logical_expr::Projection::try_new(p.expr, Arc::new(input))
                .map_err(PlanError::DataFusion)?;
            Ok(LogicalPlan::Projection(projection))
        }
        other => Ok(other),
    }
}

fn physical(ctx: &StreamContext<'_>, e: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>> {
    // Simplified first, as DataFusion's optimizer would (some functions, such as coalesce, only
    // run once rewritten); without a query start time, so now() stays a function of each row's
    // processing.
    let simplifier = datafusion::optimizer::simplify_expressions::ExprSimplifier::new(
        datafusion::logical_expr::simplify::SimplifyContext::builder()
            .with_schema(Arc::new(schema.clone()))
            .with_config_options(Arc::new(ctx.state.config_options().as_ref().clone()))
            .build(),
    );
    let e = simplifier
        .simplify(e.clone())
        .map_err(PlanError::DataFusion)?;
    ctx.state
        .create_physical_expr(fast::rewrite(e, schema), schema)
        .map_err(PlanError::DataFusion)
}

/// A column expression for column `i` of `schema`.
fn column(schema: &DFSchema, i: usize) -> Expr {
    let (qualifier, field) = schema.qualified_field(i);
    Expr::Column(datafusion::common::Column::from((qualifier, field)))
}

/// The column of `schema` that `e` is, possibly cast.
fn column_index(e: &Expr, schema: &DFSchema) -> Option<usize> {
    match e {
        Expr::Column(c) => schema.index_of_column(c).ok(),
        Expr::Cast(c) => column_index(&c.expr, schema),
        _ => None,
    }
}

fn arrow_schema(schema: &DFSchema) -> SchemaRef {
    Arc::new(schema.as_arrow().clone())
}

fn identity(schema: &DFSchema) -> Vec<Arc<dyn PhysicalExpr>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>)
        .collect()
}

fn lower(ctx: &StreamContext<'_>, b: &mut Builder, plan: &LogicalPlan) -> Result<Lowered> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let resolved = (ctx.resolve)(&scan.table_name).ok_or_else(|| {
                PlanError::DataFusion(datafusion::error::DataFusionError::Plan(format!(
                    "table '{}' not found",
                    scan.table_name
                )))
            })?;
            let (source, source_key) = (resolved.store, resolved.key);
            let watermark = resolved
                .watermark
                .as_ref()
                .map(|w| watermark_expr(ctx.state, source.schema(), w))
                .transpose()?;
            let mut operators: Vec<Box<dyn Operator>> = Vec::new();
            let full = DFSchema::try_from_qualified_schema(
                scan.table_name.clone(),
                source.schema().as_ref(),
            )
            .map_err(PlanError::DataFusion)?;
            let predicate = scan
                .filters
                .iter()
                .cloned()
                .reduce(|a, b| a.and(b))
                .map(|p| physical(ctx, &p, &full))
                .transpose()?;
            // Without a projection DataFusion reads every visible column; a counted view's hidden
            // count column (last in storage) is never one of them.
            let columns = scan
                .projection
                .clone()
                .unwrap_or_else(|| (0..scan.source.schema().fields().len()).collect());
            // Rows of a keyed relation stay unique by its key while the key columns are read.
            let key = source_key.and_then(|key| {
                key.iter()
                    .map(|k| columns.iter().position(|c| c == k))
                    .collect::<Option<Vec<_>>>()
            });
            if columns.len() != full.fields().len() || predicate.is_some() {
                let exprs = columns
                    .iter()
                    .map(|&i| {
                        Arc::new(Column::new(full.field(i).name(), i)) as Arc<dyn PhysicalExpr>
                    })
                    .collect();
                operators.push(Box::new(Project::new(
                    predicate,
                    exprs,
                    arrow_schema(&scan.projected_schema),
                )));
            }
            let rowtime = resolved
                .watermark
                .as_ref()
                .and_then(|w| columns.iter().position(|&c| c == w.column));
            b.stages.push(Stage {
                input: StageInput::Source(Source {
                    table: source,
                    watermark,
                    idle_timeout: resolved.idle_timeout,
                    processing_time: resolved.processing_time,
                    external: resolved.external.clone(),
                }),
                operators,
                parallelism: 1,
            });
            Ok(Lowered {
                stage: b.stages.len() - 1,
                key,
                time: EventTime {
                    rowtime,
                    ..EventTime::default()
                },
                append_only: resolved.append_only,
            })
        }
        LogicalPlan::Filter(f) => {
            let l = lower(ctx, b, &f.input)?;
            let input = f.input.schema();
            let predicate = physical(ctx, &f.predicate, input)?;
            b.push_op(
                l.stage,
                Box::new(Project::new(
                    Some(predicate),
                    identity(input),
                    arrow_schema(f.input.schema()),
                )),
            )?;
            Ok(l)
        }
        LogicalPlan::Projection(p) => {
            let mut l = lower(ctx, b, &p.input)?;
            let input = p.input.schema();
            let exprs = p
                .expr
                .iter()
                .map(|e| physical(ctx, e, input))
                .collect::<Result<Vec<_>>>()?;
            // The key survives if every key column is selected as a plain column.
            l.key = l.key.and_then(|key| {
                key.iter()
                    .map(|&k| {
                        p.expr.iter().position(|e| match e.clone().unalias() {
                            Expr::Column(c) => input.index_of_column(&c).ok() == Some(k),
                            _ => false,
                        })
                    })
                    .collect()
            });
            l.time = l.time.project(&p.expr, input);
            // Selecting every input column in order (renamed or not) changes nothing downstream
            // operators see: they address columns by position.
            let identity = p.expr.len() == input.fields().len()
                && p.expr.iter().enumerate().all(|(i, e)| {
                    matches!(e.clone().unalias(), Expr::Column(c) if input.index_of_column(&c).ok() == Some(i))
                });
            if !identity {
                b.push_op(
                    l.stage,
                    Box::new(Project::new(None, exprs, arrow_schema(&p.schema))),
                )?;
            }
            Ok(l)
        }
        LogicalPlan::SubqueryAlias(a) => lower(ctx, b, &a.input),
        LogicalPlan::Join(j) => join::lower_join(ctx, b, j),
        LogicalPlan::Unnest(u) => {
            let l = lower(ctx, b, &u.input)?;
            let ([(list, column)], []) = (
                u.list_type_columns.as_slice(),
                u.struct_type_columns.as_slice(),
            ) else {
                return Err(PlanError::Unsupported(
                    "UNNEST of more than one list, or of a struct, in a materialized view".into(),
                ));
            };
            if column.depth != 1 {
                return Err(PlanError::Unsupported(
                    "UNNEST of nested lists in a materialized view".into(),
                ));
            }
            let input = arrow_schema(u.input.schema());
            let preserve = matches!(
                u.options.null_handling,
                datafusion::common::NullHandling::Preserve
            );
            let unnest = Unnest::try_new(
                &input,
                *list,
                u.dependency_indices.clone(),
                preserve,
                arrow_schema(&u.schema),
            )?;
            b.push_op(l.stage, Box::new(unnest))?;
            // One input row becomes several: no key survives.
            Ok(Lowered {
                stage: l.stage,
                key: None,
                time: l.time.unnest(*list, &u.dependency_indices),
                append_only: l.append_only,
            })
        }
        LogicalPlan::Union(u) => {
            let mut from = Vec::with_capacity(u.inputs.len());
            let mut append_only = true;
            for input in &u.inputs {
                let l = lower(ctx, b, input)?;
                append_only &= l.append_only;
                from.push(l.stage);
            }
            b.stages.push(Stage {
                input: StageInput::merge(from, None),
                operators: Vec::new(),
                parallelism: 1,
            });
            // A bag of rows from several relations: no key survives, and event time is only
            // tracked within one source.
            Ok(Lowered {
                stage: b.stages.len() - 1,
                key: None,
                time: EventTime::default(),
                append_only,
            })
        }
        LogicalPlan::Aggregate(a) => {
            if let Some(l) = session::lower_session(ctx, b, a)? {
                return Ok(l);
            }
            if let Some(l) = hop::lower_hop(ctx, b, a)? {
                return Ok(l);
            }
            let l = lower(ctx, b, &a.input)?;
            let input = a.input.schema();
            let groups = a.group_expr.len();
            if a.group_expr
                .iter()
                .any(|e| matches!(e, Expr::GroupingSet(_)))
            {
                return Err(PlanError::Unsupported(
                    "GROUPING SETS, CUBE and ROLLUP".into(),
                ));
            }
            let mut pre_exprs: Vec<Expr> = a.group_expr.clone();
            let mut specs = Vec::with_capacity(a.aggr_expr.len());
            for e in &a.aggr_expr {
                let (func, arg, delimiter) = aggregate_of(e)?;
                let input_col = match arg {
                    Some(arg) => {
                        pre_exprs.push(arg);
                        Some(pre_exprs.len() - 1)
                    }
                    None => None,
                };
                specs.push(AggSpec {
                    func,
                    input: input_col,
                    delimiter,
                });
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
                        .map(|s| AggSpec {
                            input: s.input.map(|i| columns[i]),
                            ..s
                        })
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
            let aggregate =
                HashAggregate::try_new(agg_input, group_by, specs, arrow_schema(&a.schema))?;
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
        LogicalPlan::Distinct(Distinct::All(input)) => {
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
        other if session::is_session_window(other) => Err(PlanError::Unsupported(
            "a SESSION window in a materialized view without an aggregate grouped by its \
             window_start or window_end"
                .into(),
        )),
        other => Err(PlanError::Unsupported(format!(
            "{} in a materialized view",
            construct_name(other)
        ))),
    }
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
fn pre_schema(exprs: &[Expr], input: &DFSchema) -> Result<SchemaRef> {
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

/// The streaming aggregate for one of DataFusion's aggregate expressions, and its argument.
/// An aggregate call as the operator's function, its argument and (for STRING_AGG) separator.
fn aggregate_of(e: &Expr) -> Result<(AggFunc, Option<Expr>, Option<String>)> {
    let Expr::AggregateFunction(agg) = e.clone().unalias() else {
        return Err(PlanError::Unsupported(format!("aggregate expression {e}")));
    };
    let name = agg.func.name().to_lowercase();
    let p = agg.params;
    if p.filter.is_some() {
        return Err(PlanError::Unsupported("FILTER on aggregates".into()));
    }
    if name == "string_agg" {
        return string_agg(&p.args, &p.order_by, p.distinct);
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
    Ok((func, arg, None))
}

/// `string_agg(value, separator [ORDER BY value])`: the values in ascending order, which is also
/// what a view without ORDER BY gives (a view must not depend on arrival order).
fn string_agg(
    args: &[Expr],
    order_by: &[datafusion::logical_expr::SortExpr],
    distinct: bool,
) -> Result<(AggFunc, Option<Expr>, Option<String>)> {
    let [value, separator] = args else {
        return Err(PlanError::Unsupported(
            "string_agg() without a separator".into(),
        ));
    };
    if distinct {
        return Err(PlanError::Unsupported(
            "string_agg(DISTINCT ...) in a materialized view".into(),
        ));
    }
    let separator = match separator.clone().unalias() {
        Expr::Literal(v, _) if v.is_null() => String::new(),
        Expr::Literal(v, _) => v.to_string(),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(v, _) => v.to_string(),
            _ => {
                return Err(PlanError::Unsupported(
                    "string_agg() with a separator that is not a constant".into(),
                ));
            }
        },
        _ => {
            return Err(PlanError::Unsupported(
                "string_agg() with a separator that is not a constant".into(),
            ));
        }
    };
    let plain = |e: &Expr| match e.clone().unalias() {
        Expr::Cast(c) => *c.expr,
        other => other,
    };
    match order_by {
        [] => {}
        [s] if s.asc && plain(&s.expr) == plain(value) => {}
        _ => {
            return Err(PlanError::Unsupported(
                "string_agg() ordered by anything but its value, ascending, in a materialized view"
                    .into(),
            ));
        }
    }
    Ok((AggFunc::StringAgg, Some(value.clone()), Some(separator)))
}

fn construct_name(plan: &LogicalPlan) -> &'static str {
    match plan {
        LogicalPlan::Join(_) => "JOIN",
        LogicalPlan::Sort(_) => "ORDER BY with LIMIT",
        LogicalPlan::Limit(_) => "LIMIT",
        LogicalPlan::Union(_) => "UNION",
        LogicalPlan::Window(_) => "window functions (OVER)",
        LogicalPlan::Distinct(Distinct::On(_)) => "DISTINCT ON",
        LogicalPlan::Values(_) => "VALUES",
        LogicalPlan::EmptyRelation(_) => "a query without FROM",
        LogicalPlan::Subquery(_) => "subqueries",
        LogicalPlan::Unnest(_) => "UNNEST",
        LogicalPlan::RecursiveQuery(_) => "WITH RECURSIVE",
        _ => "this query shape",
    }
}
