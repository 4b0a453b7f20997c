//! Conditions and measures over a match: each expression reads *terms* (a column of a row the
//! match navigates to, an aggregate over the rows of a variable, the classifier, the match number),
//! and is a DataFusion physical expression over one column per term. Many contexts (candidate
//! rows of many threads, rows of many matches) are evaluated in one batch: the terms' columns are
//! gathered with `interleave` from the batches the rows live in.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    new_null_array,
};
use datafusion::arrow::compute::{cast, interleave};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::physical_plan::PhysicalExpr;

use crate::{EngineError, Result};

/// Which end of the (running) match a row reference counts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    First,
    Last,
}

/// An aggregate over the rows of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TermAgg {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

/// One value an expression reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// Column `column` of the `offset`-th row (0-based) from the `anchor` end of the rows mapped
    /// to `var` (`None`: every row of the match so far), then `prev` rows earlier and `next`
    /// rows later in the partition. `A.price` is `Last` of `A`, offset 0; a bare `price` is the
    /// current row; `NEXT(A.price)` is the row after it, whether or not the match reaches it.
    Row {
        anchor: Anchor,
        var: Option<u16>,
        offset: u32,
        prev: u32,
        next: u32,
        column: usize,
    },
    /// An aggregate of column `column` (`None`: `COUNT(*)`) over the rows mapped to `var`.
    Agg {
        func: TermAgg,
        var: Option<u16>,
        column: Option<usize>,
    },
    /// The variable the current row is mapped to.
    Classifier,
    /// The match's number within its partition, from 1.
    MatchNumber,
    /// The term over the whole match rather than the match up to the current row (`FINAL` in
    /// `MEASURES`; the same with `ONE ROW PER MATCH`, where the current row is the last).
    Final(Box<Term>),
}

impl Term {
    /// The term without `FINAL`.
    pub fn base(&self) -> &Term {
        match self {
            Term::Final(t) => t.base(),
            t => t,
        }
    }

    pub fn base_mut(&mut self) -> &mut Term {
        match self {
            Term::Final(t) => t.base_mut(),
            t => t,
        }
    }

    /// Whether the term reads only the current row and rows before it in the partition, never
    /// what the match mapped earlier rows to (`current` is the variable being defined).
    pub fn row_local(&self, current: u16) -> bool {
        matches!(self, Term::Row { anchor: Anchor::Last, var, offset: 0, .. }
            if var.is_none_or(|v| v == current))
    }
}

/// The type a term's column has over `input`.
pub fn term_type(term: &Term, input: &Schema) -> Result<DataType> {
    let column_type = |c: usize| -> Result<DataType> {
        input
            .fields()
            .get(c)
            .map(|f| f.data_type().clone())
            .ok_or_else(|| EngineError::Internal(format!("no input column {c}")))
    };
    Ok(match term {
        Term::Row { column, .. } => column_type(*column)?,
        Term::Agg {
            func: TermAgg::Count,
            ..
        } => DataType::Int64,
        Term::Agg {
            func: TermAgg::Avg, ..
        } => DataType::Float64,
        Term::Agg {
            column: Some(c), ..
        } => {
            if integer(&column_type(*c)?) {
                DataType::Int64
            } else {
                DataType::Float64
            }
        }
        Term::Agg { column: None, .. } => DataType::Int64,
        Term::Classifier => DataType::Utf8,
        Term::MatchNumber => DataType::Int64,
        Term::Final(t) => term_type(t, input)?,
    })
}

fn integer(t: &DataType) -> bool {
    t.is_integer()
}

/// An expression over terms.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub terms: Vec<Term>,
    /// One field per term, named `__t0`, `__t1`, ...
    pub schema: SchemaRef,
    pub expr: Arc<dyn PhysicalExpr>,
}

impl Compiled {
    /// The schema of `terms` over `input`.
    pub fn term_schema(terms: &[Term], input: &Schema) -> Result<SchemaRef> {
        let fields = terms
            .iter()
            .enumerate()
            .map(|(i, t)| Ok(Field::new(format!("__t{i}"), term_type(t, input)?, true)))
            .collect::<Result<Vec<Field>>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// Where a row lives: batch `slot` of the arena, row `row` of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub slot: u32,
    pub row: u32,
}

/// The batches rows live in, shared by every partition of an operator instance. Slot 0 holds
/// one row of NULLs (where a navigation leads nowhere).
pub struct Arena {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
}

struct Slot {
    batch: RecordBatch,
    /// Rows of the batch still referenced.
    live: usize,
    /// Numeric columns cast for aggregates: `[column * 2 + float]`.
    numeric: Vec<Option<ArrayRef>>,
}

impl Arena {
    pub fn new(schema: &SchemaRef) -> Result<Self> {
        let nulls: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), 1))
            .collect();
        let batch = RecordBatch::try_new(Arc::clone(schema), nulls)?;
        Ok(Self {
            slots: vec![Some(Slot::new(batch, usize::MAX))],
            free: Vec::new(),
        })
    }

    /// Keeps `batch` whose `live` rows are referenced.
    pub fn add(&mut self, batch: RecordBatch, live: usize) -> u32 {
        let slot = Slot::new(batch, live);
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// One reference to a row of `slot` is gone.
    pub fn release(&mut self, slot: u32) {
        if slot == 0 {
            return;
        }
        if let Some(Some(s)) = self.slots.get_mut(slot as usize) {
            s.live = s.live.saturating_sub(1);
            if s.live == 0 {
                self.slots[slot as usize] = None;
                self.free.push(slot);
            }
        }
    }

    pub fn batch(&self, slot: u32) -> Result<&RecordBatch> {
        match self.slots.get(slot as usize) {
            Some(Some(s)) => Ok(&s.batch),
            _ => Err(EngineError::Internal(format!("row batch {slot} is gone"))),
        }
    }

    /// Rows the arena keeps, referenced or not.
    pub fn rows(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|s| s.batch.num_rows())
            .sum()
    }

    /// Column `column` of the rows at `rows`.
    pub fn gather(&self, column: usize, rows: &[At]) -> Result<ArrayRef> {
        let fallback = self.batch(0)?.column(column);
        let values: Vec<&dyn Array> = self
            .slots
            .iter()
            .map(|s| match s {
                Some(s) => s.batch.column(column).as_ref(),
                None => fallback.as_ref(),
            })
            .collect();
        let indices: Vec<(usize, usize)> = rows
            .iter()
            .map(|a| (a.slot as usize, a.row as usize))
            .collect();
        Ok(interleave(&values, &indices)?)
    }

    /// Column `column` of `slot` as `Int64` or `Float64`, cast once.
    fn numeric(&mut self, slot: u32, column: usize, float: bool) -> Result<ArrayRef> {
        let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
            return Err(EngineError::Internal(format!("row batch {slot} is gone")));
        };
        let at = column * 2 + usize::from(float);
        if s.numeric.len() <= at {
            s.numeric.resize(at + 1, None);
        }
        if let Some(a) = &s.numeric[at] {
            return Ok(Arc::clone(a));
        }
        let to = if float {
            DataType::Float64
        } else {
            DataType::Int64
        };
        let a = cast(s.batch.column(column), &to)?;
        s.numeric[at] = Some(Arc::clone(&a));
        Ok(a)
    }
}

impl Slot {
    fn new(batch: RecordBatch, live: usize) -> Self {
        Self {
            batch,
            live,
            numeric: Vec::new(),
        }
    }
}

/// One place an expression is evaluated: the rows of a (running) match in order, each with its
/// variable; the current row is the last. Rows are given by their index in the partition,
/// resolved by `locate`.
pub struct Context<'a> {
    /// The match's rows before the current one's tail: `(row index, variable)`.
    pub path: &'a [(u64, u16)],
    /// A row appended to `path` (a candidate row being classified).
    pub extra: Option<(u64, u16)>,
    /// The whole match, for `FINAL` terms (in a DEFINE, what `path` and `extra` are).
    pub whole: &'a [(u64, u16)],
    pub match_number: u64,
    /// Which partition's rows the indices are: an index into the locators given to
    /// [`evaluate`].
    pub partition: usize,
}

impl Context<'_> {
    fn len(&self) -> usize {
        self.path.len() + usize::from(self.extra.is_some())
    }

    fn get(&self, i: usize) -> (u64, u16) {
        match self.path.get(i) {
            Some(&p) => p,
            None => self.extra.unwrap_or((0, 0)),
        }
    }

    /// The `offset`-th row from `anchor`'s end among those mapped to `var`.
    fn nth(&self, anchor: Anchor, var: Option<u16>, offset: u32) -> Option<u64> {
        let n = self.len();
        let mut seen = 0;
        let matches = |i: usize| var.is_none_or(|v| self.get(i).1 == v);
        let mut visit = |i: usize| -> Option<u64> {
            if matches(i) {
                if seen == offset {
                    return Some(self.get(i).0);
                }
                seen += 1;
            }
            None
        };
        match anchor {
            Anchor::First => (0..n).find_map(&mut visit),
            Anchor::Last => (0..n).rev().find_map(&mut visit),
        }
    }
}

/// Finds rows of one partition by index: `None` when the partition no longer keeps the row.
pub trait Locate {
    fn locate(&self, index: u64) -> Option<At>;
}

/// Evaluates `compiled` for each context: one array, a row per context.
pub fn evaluate(
    compiled: &Compiled,
    contexts: &[Context<'_>],
    partitions: &[&dyn Locate],
    arena: &mut Arena,
    vars: &[String],
) -> Result<ArrayRef> {
    let n = contexts.len();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(compiled.terms.len());
    for (t, term) in compiled.terms.iter().enumerate() {
        let want = compiled.schema.field(t).data_type();
        let column = match term {
            Term::Final(inner) => {
                let whole: Vec<Context<'_>> = contexts
                    .iter()
                    .map(|c| Context {
                        path: c.whole,
                        extra: None,
                        whole: c.whole,
                        match_number: c.match_number,
                        partition: c.partition,
                    })
                    .collect();
                term_column(inner, want, &whole, partitions, arena, vars)?
            }
            term => term_column(term, want, contexts, partitions, arena, vars)?,
        };
        let column = if column.data_type() == want {
            column
        } else {
            cast(&column, want)?
        };
        columns.push(column);
    }
    let batch = RecordBatch::try_new_with_options(
        Arc::clone(&compiled.schema),
        columns,
        &datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(n)),
    )?;
    compiled
        .expr
        .evaluate(&batch)
        .and_then(|v| v.into_array(n))
        .map_err(|e| EngineError::Data {
            operator: "MATCH_RECOGNIZE".into(),
            message: e.to_string(),
        })
}

/// The values of `term` (of type `want`, or one cast to it) in each context.
fn term_column(
    term: &Term,
    want: &DataType,
    contexts: &[Context<'_>],
    partitions: &[&dyn Locate],
    arena: &mut Arena,
    vars: &[String],
) -> Result<ArrayRef> {
    let n = contexts.len();
    let null_row = At { slot: 0, row: 0 };
    let locate = |c: &Context<'_>, index: u64| -> At {
        partitions
            .get(c.partition)
            .and_then(|p| p.locate(index))
            .unwrap_or(null_row)
    };
    Ok(match term {
        Term::Row {
            anchor,
            var,
            offset,
            prev,
            next,
            column,
        } => {
            let rows: Vec<At> = contexts
                .iter()
                .map(|c| match c.nth(*anchor, *var, *offset) {
                    Some(i) if i >= u64::from(*prev) => {
                        locate(c, i - u64::from(*prev) + u64::from(*next))
                    }
                    _ => null_row,
                })
                .collect();
            arena.gather(*column, &rows)?
        }
        Term::Classifier => Arc::new(
            contexts
                .iter()
                .map(|c| {
                    (c.len() > 0)
                        .then(|| vars.get(c.get(c.len() - 1).1 as usize).map(String::as_str))
                        .flatten()
                })
                .collect::<StringArray>(),
        ),
        Term::MatchNumber => Arc::new(
            contexts
                .iter()
                .map(|c| Some(c.match_number as i64))
                .collect::<Int64Array>(),
        ),
        Term::Agg { func, var, column } => {
            let float = *want == DataType::Float64;
            let mut ints: Vec<Option<i64>> = Vec::with_capacity(n);
            let mut floats: Vec<Option<f64>> = Vec::with_capacity(n);
            for c in contexts {
                let (mut count, mut isum, mut fsum) = (0i64, 0i64, 0f64);
                let (mut imin, mut imax) = (None::<i64>, None::<i64>);
                let (mut fmin, mut fmax) = (None::<f64>, None::<f64>);
                for i in 0..c.len() {
                    let (index, v) = c.get(i);
                    if var.is_some_and(|want| want != v) {
                        continue;
                    }
                    let Some(col) = column else {
                        count += 1;
                        continue;
                    };
                    let at = locate(c, index);
                    let values = arena.numeric(at.slot, *col, float)?;
                    if values.is_null(at.row as usize) {
                        continue;
                    }
                    count += 1;
                    if float {
                        let x = values.as_primitive::<Float64Type>().value(at.row as usize);
                        fsum += x;
                        fmin = Some(fmin.map_or(x, |m| m.min(x)));
                        fmax = Some(fmax.map_or(x, |m| m.max(x)));
                    } else {
                        let x = values.as_primitive::<Int64Type>().value(at.row as usize);
                        isum = isum.wrapping_add(x);
                        imin = Some(imin.map_or(x, |m| m.min(x)));
                        imax = Some(imax.map_or(x, |m| m.max(x)));
                    }
                }
                match func {
                    TermAgg::Count => ints.push(Some(count)),
                    TermAgg::Sum if float => floats.push((count > 0).then_some(fsum)),
                    TermAgg::Sum => ints.push((count > 0).then_some(isum)),
                    TermAgg::Avg => floats.push((count > 0).then(|| fsum / count as f64)),
                    TermAgg::Min if float => floats.push(fmin),
                    TermAgg::Min => ints.push(imin),
                    TermAgg::Max if float => floats.push(fmax),
                    TermAgg::Max => ints.push(imax),
                }
            }
            if float {
                Arc::new(Float64Array::from(floats))
            } else {
                Arc::new(Int64Array::from(ints))
            }
        }
        Term::Final(inner) => term_column(inner, want, contexts, partitions, arena, vars)?,
    })
}

/// A condition's result as booleans (NULL is false).
pub fn truths(array: &ArrayRef) -> Result<Vec<bool>> {
    let b: &BooleanArray = array
        .as_any()
        .downcast_ref()
        .ok_or_else(|| EngineError::Internal("a DEFINE condition is not boolean".into()))?;
    Ok((0..b.len()).map(|i| b.is_valid(i) && b.value(i)).collect())
}
