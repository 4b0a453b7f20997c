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
//! - a filter on a ranking window function's column (`WHERE rn <= N`), `ORDER BY ... LIMIT`
//!   and `DISTINCT ON` become a `TopN` in a new stage behind a hash exchange on the partition
//!   columns ([`topn`]);
//! - other window functions (`OVER`) become an `OverWindow` in a new stage behind a hash
//!   exchange on the partition columns ([`over`]);
//! - `MATCH_RECOGNIZE` becomes a `MatchRecognize` in a new stage behind a hash exchange on the
//!   partition columns ([`recognize`]);
//! - an `ORDER BY` without `LIMIT` is dropped (a view is a set, as in RisingWave).
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
use rivulet_engine::table::TableStore;

use crate::catalog::{ColumnDef, WatermarkDef};
use crate::error::{PlanError, Result};
use crate::types::SqlType;

/// `Aggregate` and `DISTINCT`.
mod aggregate;
pub use aggregate::SINGLE_VALUE;
/// Fixed-interval timestamp arithmetic, vectorized.
mod fast;
/// `GROUPING SETS`, `ROLLUP`, `CUBE`: a union of one aggregate per set.
mod grouping_sets;
/// HOP windows aggregated by slices.
mod hop;
/// Interval joins: time bounds between the sides of a join.
mod interval;
/// Regular joins, semi and anti joins.
mod join;
/// Window functions (OVER) other than top-N.
mod over;
/// Flink's event-time OVER aggregates, and EMIT ON WINDOW CLOSE without an aggregate: when a
/// node runs as `EventTimeOver`.
mod over_time;
/// `Filter` and `Projection`.
mod project;
/// `MATCH_RECOGNIZE`.
mod recognize;
/// Table scans.
mod scan;
/// Temporal joins (`FOR SYSTEM_TIME AS OF`).
mod temporal;
/// Top-N: ranking window functions filtered by rank, ORDER BY ... LIMIT, DISTINCT ON.
mod topn;

/// Session windows under an aggregate.
mod session;
/// Event-time lineage: which columns are window bounds, and when their windows close.
pub mod time;
/// `UNION ALL`.
mod union;
/// `UNNEST` of a list column.
mod unnest;

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
    /// The query only ever inserts rows (no update or delete reaches the view or sink).
    pub append_only: bool,
    /// EMIT ON WINDOW CLOSE holds every row until the watermark passes it (the query has no
    /// windowed aggregate or top-N that closes windows itself).
    pub holds_rows: bool,
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

    /// [`StreamPlan::explain`] of the plan as a sink's job, whose changes leave the job
    /// instead of being kept.
    pub fn explain_sink(&self) -> Vec<String> {
        let mut lines = self.explain();
        lines.pop();
        let changes = if self.append_only {
            "inserts only"
        } else {
            "inserts, updates and deletes"
        };
        let key = if self.key.is_empty() {
            String::new()
        } else {
            format!(", key {:?}", self.key)
        };
        lines.push(format!("Sink: {changes}{key}"));
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
    crate::overflow::physical_expr(state, fast::rewrite(expr, &df_schema), &df_schema)
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
    /// Flink's `table.exec.state.ttl`: aggregates without windows forget groups untouched this
    /// long.
    pub state_ttl: Option<std::time::Duration>,
    /// The job is a sink: its changes leave Rivulet as they are, so a query without a key needs
    /// no counting of identical rows.
    pub sink: bool,
    /// A relation's storage and its key (primary key, or a view's key; `None` for a table
    /// without a primary key).
    pub resolve: &'a dyn Fn(&TableReference) -> Option<Resolved>,
    /// The query's versioned tables (`FOR SYSTEM_TIME AS OF`), joined as temporal joins.
    pub temporal: &'a [crate::temporal::TemporalTable],
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
    let mut lowered = lower(ctx, &mut b, &plan)?;
    let holds_rows = ctx.emit_on_window_close && b.windowed_aggregates == 0;
    if holds_rows {
        lowered = over_time::emit_on_window_close(&mut b, lowered, arrow_schema(output))?;
    }
    // Store columns in their SQL types; cast where DataFusion computed another Arrow type.
    let stored: Vec<Field> = columns.iter().map(ColumnDef::field).collect();
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
                    ..AggSpec::default()
                }],
                Arc::new(Schema::new(counted_fields)),
            )?
            .counting_rows();
            let stage = b.exchange(lowered.stage, Some((0..n).collect()), ctx.parallelism);
            b.push_op(stage, Box::new(counter))?;
            columns.push(ColumnDef::new(COUNT_COLUMN, SqlType::BigInt, false));
            ((0..n).collect(), true)
        }
    };
    let graph = JobGraph {
        stages: b.stages,
        state_ids: None,
    };
    graph.validate()?;
    Ok(StreamPlan {
        graph,
        columns,
        key,
        counted,
        append_only: lowered.append_only,
        holds_rows,
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
        let sql_type = SqlType::of_field(field).ok_or_else(|| {
            PlanError::Unsupported(format!(
                "column \"{name}\" of type {} in a materialized view",
                field.data_type()
            ))
        })?;
        let shown = field
            .metadata()
            .iter()
            .filter(|(k, _)| k.starts_with("rivulet.") && k.as_str() != crate::types::PG_TYPE)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        columns.push(ColumnDef {
            shown,
            ..ColumnDef::new(name, sql_type, true)
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
    crate::overflow::physical_expr(ctx.state, fast::rewrite(e, schema), schema)
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
        LogicalPlan::TableScan(scan) => match recognize::clause(scan) {
            Some(table) => recognize::lower_match_recognize(ctx, b, scan, table),
            None => scan::lower_scan(ctx, b, scan),
        },
        LogicalPlan::Filter(f) => project::lower_filter(ctx, b, f),
        LogicalPlan::Projection(p) => project::lower_projection(ctx, b, p),
        LogicalPlan::SubqueryAlias(a) => lower(ctx, b, &a.input),
        LogicalPlan::Join(j) => join::lower_join(ctx, b, j),
        LogicalPlan::Unnest(u) => unnest::lower_unnest(ctx, b, u),
        LogicalPlan::Union(u) => union::lower_union(ctx, b, u),
        LogicalPlan::Aggregate(a) => aggregate::lower_aggregate(ctx, b, a),
        LogicalPlan::Distinct(Distinct::All(input)) => aggregate::lower_distinct(ctx, b, input),
        LogicalPlan::Distinct(Distinct::On(d)) => topn::lower_distinct_on(ctx, b, d),
        LogicalPlan::Limit(l) => topn::lower_limit(ctx, b, l),
        // Rows of a view have no order: an ORDER BY without LIMIT changes nothing.
        LogicalPlan::Sort(s) if s.fetch.is_none() => lower(ctx, b, &s.input),
        LogicalPlan::Sort(s) => topn::lower_sort(ctx, b, s),
        other if session::is_session_window(other) => session::lower_session_rows(ctx, b, other),
        LogicalPlan::Window(w) => over::lower_window(ctx, b, w),
        other => Err(PlanError::Unsupported(format!(
            "{} in a materialized view",
            construct_name(other)
        ))),
    }
}

fn construct_name(plan: &LogicalPlan) -> &'static str {
    match plan {
        LogicalPlan::Join(_) => "JOIN",
        LogicalPlan::Limit(_) => "LIMIT",
        LogicalPlan::Union(_) => "UNION",
        LogicalPlan::Distinct(Distinct::On(_)) => "DISTINCT ON",
        LogicalPlan::Values(_) => "VALUES",
        LogicalPlan::EmptyRelation(_) => "a query without FROM",
        LogicalPlan::Subquery(_) => "subqueries",
        LogicalPlan::Unnest(_) => "UNNEST",
        LogicalPlan::RecursiveQuery(_) => "WITH RECURSIVE",
        _ => "this query shape",
    }
}
