//! `JOIN` (and the semi and anti joins DataFusion's decorrelation makes of `IN` and `EXISTS`
//! subqueries) as a [`HashJoin`] stage reading both sides, each hash-exchanged on its own key
//! columns.
//!
//! Key expressions that are not plain columns (`ON a.k + 1 = b.k`, or the casts DataFusion's
//! type coercion adds) are computed by a `Project` at the end of that side's stage, appended after
//! the side's own columns; the join reads and emits only the own columns. The residual condition
//! is evaluated over the left side's own columns followed by the right side's, as DataFusion
//! states it. The output has no key and no event time (as in Flink, a regular join's output
//! loses its time attributes); it is append-only only for an inner or semi join of append-only
//! inputs. A join of append-only inputs with watermarks whose condition bounds one side's time by
//! the other's is an `IntervalJoin` instead ([`super::interval`]): state freed by the watermarks,
//! append-only output that keeps the left side's event time.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinType, NullEquality};
use datafusion::logical_expr::{Expr, ExprSchemable, Join, LogicalPlan};
use datafusion::optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery;
use datafusion::optimizer::eliminate_cross_join::EliminateCrossJoin;
use datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate;
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::push_down_filter::PushDownFilter;
use datafusion::optimizer::scalar_subquery_to_join::ScalarSubqueryToJoin;
use datafusion::optimizer::{Optimizer, OptimizerContext, OptimizerRule};
use datafusion::physical_plan::PhysicalExpr;
use rivulet_engine::job::graph::{Edge, Stage, StageInput};
use rivulet_engine::operator::Operator;
use rivulet_engine::operator::join::interval::{Interval, IntervalJoin};
use rivulet_engine::operator::join::not_in::NotInJoin;
use rivulet_engine::operator::join::{HashJoin, JoinKind, JoinSide};
use rivulet_engine::operator::project::Project;

use super::time::EventTime;
use super::{Builder, Lowered, StreamContext, arrow_schema, identity, lower, physical};
use super::{interval, temporal};
use crate::error::{PlanError, Result};

/// `plan` with its subqueries turned into joins and its comma joins' equality conditions into
/// join keys, by DataFusion's own rules (only these: the streaming planner relies on the shape
/// the analyzer leaves elsewhere). A plan without joins or subqueries is returned as it is.
pub(super) fn decorrelate(ctx: &StreamContext<'_>, plan: LogicalPlan) -> Result<LogicalPlan> {
    let mut joins = false;
    plan.apply_with_subqueries(|node| {
        joins |= matches!(node, LogicalPlan::Join(_) | LogicalPlan::Subquery(_))
            || node.expressions().iter().any(|e| {
                e.exists(|e| {
                    Ok(matches!(
                        e,
                        Expr::Exists(_) | Expr::InSubquery(_) | Expr::ScalarSubquery(_)
                    ))
                })
                .unwrap_or(false)
            });
        Ok(if joins {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })
    .map_err(PlanError::DataFusion)?;
    if !joins {
        return Ok(plan);
    }
    let mut rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![
        Arc::new(DecorrelatePredicateSubquery::new()),
        Arc::new(ScalarSubqueryToJoin::new()),
        Arc::new(ExtractEquijoinPredicate::new()),
        Arc::new(EliminateCrossJoin::new()),
        Arc::new(PushDownFilter::new()),
        Arc::new(ExtractEquijoinPredicate::new()),
        // Each side carries only the columns above the join read: its state stores whole rows,
        // so a column nobody reads (a bid's URL) costs memory, RocksDB writes and compaction.
        Arc::new(OptimizeProjections::new()),
    ];
    if !ctx.temporal.is_empty() {
        // A condition on a versioned table applies to the version a row meets, after the
        // join: pushed below it, it would choose among the versions instead. And the times a
        // temporal join goes by (the probe side's AS OF column, the versioned table's event
        // time) are not in the plan's expressions: pruned, they would be gone.
        rules.retain(|r| {
            r.name() != PushDownFilter::new().name()
                && r.name() != OptimizeProjections::new().name()
        });
    }
    // Uncorrelated scalar subqueries become joins too (DataFusion's batch plans may evaluate
    // them once instead; a view must follow the subquery's changes). A rule that fails is an
    // error here, not skipped.
    let mut options = ctx.state.config_options().as_ref().clone();
    options
        .optimizer
        .enable_physical_uncorrelated_scalar_subquery = false;
    options.optimizer.skip_failed_rules = false;
    let config = OptimizerContext::new_with_config_options(Arc::new(options));
    Optimizer::with_rules(rules)
        .optimize(plan, &config, |_, _| {})
        .map_err(PlanError::DataFusion)
}

/// Plans `join`; see the module documentation.
pub(super) fn lower_join(ctx: &StreamContext<'_>, b: &mut Builder, join: &Join) -> Result<Lowered> {
    let kind = match join.join_type {
        JoinType::Inner => JoinKind::Inner,
        JoinType::Left => JoinKind::Left,
        JoinType::Right => JoinKind::Right,
        JoinType::Full => JoinKind::Full,
        JoinType::LeftSemi => JoinKind::LeftSemi,
        JoinType::LeftAnti => JoinKind::LeftAnti,
        JoinType::RightSemi => JoinKind::RightSemi,
        JoinType::RightAnti => JoinKind::RightAnti,
        JoinType::LeftMark | JoinType::RightMark => {
            return Err(PlanError::UnsupportedHint {
                what: "a subquery that DataFusion plans as a mark join (EXISTS or IN under OR) \
                       in a materialized view"
                    .into(),
                hint: "Rewrite it as a JOIN or a UNION.".into(),
            });
        }
    };
    if join.null_aware && (join.on.len() != 1 || join.filter.is_some()) {
        return Err(PlanError::UnsupportedHint {
            what: "NOT IN over a correlated subquery, or over several columns, in a materialized \
                   view"
                .into(),
            hint: "Its NULL semantics need each correlated group's whole result: write NOT \
                   EXISTS, or filter the subquery's columns IS NOT NULL."
                .into(),
        });
    }
    let versioned = temporal::versioned(ctx.temporal, join)?;
    let left = lower(ctx, b, &join.left)?;
    let right = lower(ctx, b, &join.right)?;
    let mut left_keys = Vec::with_capacity(join.on.len());
    let mut right_keys = Vec::with_capacity(join.on.len());
    for (l, r) in &join.on {
        let lt = l
            .get_type(join.left.schema())
            .map_err(PlanError::DataFusion)?;
        let rt = r
            .get_type(join.right.schema())
            .map_err(PlanError::DataFusion)?;
        // Both sides hash and compare the key in one type: DataFusion's coercion usually
        // made them equal already.
        let r = if lt == rt {
            r.clone()
        } else {
            r.clone()
                .cast_to(&lt, join.right.schema())
                .map_err(PlanError::DataFusion)?
        };
        left_keys.push(l.clone());
        right_keys.push(r);
    }
    let left_side = side(ctx, b, &left, &join.left, &left_keys)?;
    let right_side = side(ctx, b, &right, &join.right, &right_keys)?;
    let filter = join
        .filter
        .as_ref()
        .map(|f| {
            let both = join
                .left
                .schema()
                .join(join.right.schema())
                .map_err(PlanError::DataFusion)?;
            physical(ctx, f, &both)
        })
        .transpose()?;
    let null_equal = join.null_equality == NullEquality::NullEqualsNull;
    if join.null_aware {
        // NOT IN: whether the subquery is empty or has a NULL decides for every row, so one
        // instance sees all of both sides.
        let op = NotInJoin::try_new(left_side, right_side, arrow_schema(&join.schema))?;
        b.stages.push(Stage {
            input: StageInput::Merge(vec![
                Edge {
                    from: vec![left.stage],
                    keys: None,
                },
                Edge {
                    from: vec![right.stage],
                    keys: None,
                },
            ]),
            operators: vec![Box::new(op)],
            parallelism: 1,
        });
        return Ok(Lowered {
            stage: b.stages.len() - 1,
            key: None,
            time: EventTime::default(),
            append_only: false,
        });
    }
    let edges = vec![
        Edge {
            from: vec![left.stage],
            keys: Some(left_side.keys.clone()),
        },
        Edge {
            from: vec![right.stage],
            keys: Some(right_side.keys.clone()),
        },
    ];
    let outer_or_inner = matches!(
        kind,
        JoinKind::Inner | JoinKind::Left | JoinKind::Right | JoinKind::Full
    );
    let width = join.left.schema().fields().len();
    // The output's event time: the left's columns stay where they are, the right's move by the
    // left's width.
    let mut interval_time = left.time.clone();
    interval_time
        .bounds
        .extend(right.time.bounds.iter().map(|(c, o)| (c + width, *o)));
    let interval = match (left.time.rowtime, right.time.rowtime, &join.filter) {
        (Some(lt), Some(rt), Some(f))
            if outer_or_inner && left.append_only && right.append_only =>
        {
            interval::bounds(f, join.left.schema(), join.right.schema(), [lt, rt]).map(
                |(lower, upper)| Interval {
                    times: [lt, rt],
                    lower,
                    upper,
                    shift: [0, 0],
                },
            )
        }
        _ => None,
    };
    let window = match interval {
        None if outer_or_inner && left.append_only && right.append_only => {
            interval::window_bound(
                &join.on,
                (join.left.schema(), &left.time),
                (join.right.schema(), &right.time),
            )
            .map(|(times, offset)| {
                // Rows of one window meet; a window's rows go once it has closed on the other
                // side. The left's rowtime does not survive: a pair may come long after it.
                interval_time.rowtime = None;
                Interval {
                    times,
                    lower: 0,
                    upper: 0,
                    shift: [1 - offset; 2],
                }
            })
        }
        _ => None,
    };
    let interval = interval.or(window);
    let schema = arrow_schema(&join.schema);
    let (op, time, append_only): (Box<dyn Operator>, EventTime, bool) = match (versioned, interval)
    {
        (Some(table), _) => {
            let (op, time) = temporal::temporal_join(
                table, join, kind, &left, &right, left_side, right_side, filter, schema,
            )?;
            if op.event_time() {
                temporal::keep_history(b, right.stage);
            }
            (Box::new(op), time, true)
        }
        (None, interval) => match interval {
            Some(interval) => {
                let op =
                    IntervalJoin::try_new(kind, left_side, right_side, interval, filter, schema)?;
                (Box::new(op), interval_time, true)
            }
            None => {
                let op =
                    HashJoin::try_new(kind, left_side, right_side, null_equal, filter, schema)?
                        .with_append_only([left.append_only, right.append_only]);
                let op = match ctx.state_ttl {
                    Some(ttl) => op.with_state_ttl(ttl),
                    None => op,
                };
                let append_only = match kind {
                    JoinKind::Inner | JoinKind::LeftSemi | JoinKind::RightSemi => {
                        left.append_only && right.append_only
                    }
                    _ => false,
                };
                (Box::new(op), EventTime::default(), append_only)
            }
        },
    };
    b.stages.push(Stage {
        input: StageInput::Merge(edges),
        operators: vec![op],
        parallelism: ctx.parallelism.max(1),
    });
    Ok(Lowered {
        stage: b.stages.len() - 1,
        key: None,
        time,
        append_only,
    })
}

/// One side of the join: its key columns, computed by a `Project` on the side's stage where a
/// key is not a plain column.
fn side(
    ctx: &StreamContext<'_>,
    b: &mut Builder,
    lowered: &Lowered,
    plan: &LogicalPlan,
    keys: &[Expr],
) -> Result<JoinSide> {
    let input = plan.schema();
    let width = input.fields().len();
    let plain: Option<Vec<usize>> = keys
        .iter()
        .map(|e| match e {
            Expr::Column(c) => input.index_of_column(c).ok(),
            _ => None,
        })
        .collect();
    if let Some(keys) = plain {
        return Ok(JoinSide {
            schema: arrow_schema(input),
            keys,
            width,
        });
    }
    let mut exprs: Vec<Arc<dyn PhysicalExpr>> = identity(input);
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (i, e) in keys.iter().enumerate() {
        exprs.push(physical(ctx, e, input)?);
        let (_, field) = e.to_field(input).map_err(PlanError::DataFusion)?;
        fields.push(Field::new(
            format!("_join_key{i}"),
            field.data_type().clone(),
            true,
        ));
    }
    let schema = Arc::new(Schema::new(fields));
    b.push_op(
        lowered.stage,
        Box::new(Project::new(None, exprs, Arc::clone(&schema))),
    )?;
    Ok(JoinSide {
        schema,
        keys: (width..width + keys.len()).collect(),
        width,
    })
}
