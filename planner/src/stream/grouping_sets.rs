//! `GROUPING SETS`, `ROLLUP` and `CUBE`: one aggregate per grouping set, each padded to the
//! grouping-set aggregate's columns (NULL for the columns its set does not group by, then
//! DataFusion's `__grouping_id` as its batch plan computes it, so `GROUPING()` reads the same),
//! and their `UNION ALL`. Each set's aggregate is planned as any other aggregate (its own keyed
//! stage, a window aggregate when it groups by a window bound).

use std::collections::HashMap;

use super::*;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Aggregate, GroupingSet, Projection, Union};

/// Grouping sets a view may have, at most (`CUBE` of 6 columns is 64).
const MAX_SETS: usize = 64;

/// `a` as a union of one aggregate per grouping set; `None` if it has no grouping sets.
pub(super) fn as_union(a: &Aggregate) -> Result<Option<LogicalPlan>> {
    let [Expr::GroupingSet(set)] = a.group_expr.as_slice() else {
        return Ok(None);
    };
    let distinct: Vec<&Expr> = set.distinct_expr();
    let n = distinct.len();
    let sets: Vec<Vec<Expr>> = match set {
        GroupingSet::Rollup(e) => (0..=e.len()).rev().map(|k| e[..k].to_vec()).collect(),
        GroupingSet::Cube(e) if e.len() <= 6 => (0..1usize << e.len())
            .rev()
            .map(|mask| {
                (e.iter().enumerate())
                    .filter(|(i, _)| mask >> (e.len() - 1 - i) & 1 == 1)
                    .map(|(_, x)| x.clone())
                    .collect()
            })
            .collect(),
        GroupingSet::Cube(_) => Vec::new(),
        GroupingSet::GroupingSets(s) => s.clone(),
    };
    if sets.is_empty() || sets.len() > MAX_SETS {
        return Err(PlanError::Unsupported(format!(
            "more than {MAX_SETS} grouping sets (CUBE of more than 6 columns) in a \
             materialized view"
        )));
    }
    let df = PlanError::DataFusion;
    let schema = a.schema.as_ref();
    let id_type = schema.field(n).data_type().clone();
    let mut ordinals: HashMap<&[Expr], u64> = HashMap::new();
    let mut inputs = Vec::with_capacity(sets.len());
    for grouped in &sets {
        let ordinal = ordinals.entry(grouped.as_slice()).or_insert(0);
        let id_high = *ordinal << n;
        *ordinal += 1;
        let agg = Aggregate::try_new(Arc::clone(&a.input), grouped.clone(), a.aggr_expr.clone())
            .map_err(df)?;
        let own = Arc::clone(&agg.schema);
        let column =
            |i: usize| Expr::Column(datafusion::common::Column::from(own.qualified_field(i)));
        let named = |e: Expr, i: usize| {
            let (qualifier, field) = schema.qualified_field(i);
            e.alias_qualified(qualifier.cloned(), field.name())
        };
        let mut exprs = Vec::with_capacity(schema.fields().len());
        // A bit per distinct grouping expression, the first the highest: 1 when the set does not
        // group by it (its column is NULL), as DataFusion numbers them.
        let mut semantic = 0u64;
        for (j, e) in distinct.iter().enumerate() {
            let at = grouped.iter().position(|g| g == *e);
            semantic = (semantic << 1) | u64::from(at.is_none());
            let value = match at {
                Some(p) => column(p),
                None => Expr::Literal(
                    ScalarValue::try_from(schema.field(j).data_type()).map_err(df)?,
                    None,
                ),
            };
            exprs.push(named(value, j));
        }
        let id = ScalarValue::UInt64(Some(semantic | id_high))
            .cast_to(&id_type)
            .map_err(df)?;
        exprs.push(named(Expr::Literal(id, None), n));
        for k in 0..a.aggr_expr.len() {
            exprs.push(named(column(grouped.len() + k), n + 1 + k));
        }
        let projection =
            Projection::try_new(exprs, Arc::new(LogicalPlan::Aggregate(agg))).map_err(df)?;
        inputs.push(Arc::new(LogicalPlan::Projection(projection)));
    }
    // The union has the grouping-set aggregate's schema (its nullable grouping columns), so the
    // plan above reads it as it would have.
    Ok(Some(LogicalPlan::Union(Union {
        inputs,
        schema: Arc::clone(&a.schema),
    })))
}
