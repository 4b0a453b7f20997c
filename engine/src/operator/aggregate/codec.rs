//! The stored value of one group (layout in the module documentation of [`super`]).

use super::accumulator::{Agg, BoolCount, ExactSum, FloatSum, State, fixed_key, put_fixed_row};
use crate::{EngineError, Result};

/// Version byte of the stored group state.
const FORMAT: u8 = 1;

/// Appends the stored value of the group in slot `id`, holding `rows` rows, to `out`.
pub(super) fn encode(rows: i64, aggs: &[Agg], id: u32, out: &mut Vec<u8>) {
    let id = id as usize;
    out.push(FORMAT);
    put_i(out, rows.into());
    put_u(out, aggs.len() as u128);
    for agg in aggs {
        match &agg.state {
            State::Rows => {}
            State::Count(counts) => put_i(out, counts.get(id).copied().unwrap_or(0).into()),
            State::Exact { sums, .. } => {
                let ExactSum { sum, n } = sums.get(id).copied().unwrap_or_default();
                put_i(out, sum);
                put_i(out, n.into());
            }
            State::Float(sums) => {
                let f = sums.get(id).copied().unwrap_or_default();
                out.extend_from_slice(&f.finite.to_le_bytes());
                for c in [f.n, f.nan, f.pos_inf, f.neg_inf] {
                    put_i(out, c.into());
                }
            }
            State::Fixed { width, sets } => {
                let set = sets.get(id);
                put_u(out, set.map_or(0, |s| s.len()) as u128);
                for (&key, &count) in set.into_iter().flatten() {
                    put_u(out, (*width + 1) as u128);
                    put_fixed_row(out, key, *width);
                    put_i(out, count.into());
                }
            }
            State::Bytes(sets) => {
                let set = sets.get(id);
                put_u(out, set.map_or(0, |s| s.len()) as u128);
                for (value, &count) in set.into_iter().flatten() {
                    put_u(out, value.len() as u128);
                    out.extend_from_slice(value);
                    put_i(out, count.into());
                }
            }
            State::Bool(counts) => {
                let BoolCount { trues, falses } = counts.get(id).copied().unwrap_or_default();
                put_i(out, trues.into());
                put_i(out, falses.into());
            }
        }
    }
}

/// Loads a stored value into slot `id` (which every aggregate has room for and holds empty);
/// returns the group's row count.
pub(super) fn decode(bytes: &[u8], aggs: &mut [Agg], id: u32) -> Result<i64> {
    let id = id as usize;
    let mut r = Reader(bytes);
    if r.take(1)? != [FORMAT] {
        return Err(EngineError::Corrupt(
            "unknown aggregate state format".into(),
        ));
    }
    let rows = r.i64()?;
    if r.u()? != aggs.len() as u128 {
        return Err(EngineError::Corrupt(
            "aggregate state has a different number of aggregates".into(),
        ));
    }
    for agg in aggs {
        match &mut agg.state {
            State::Rows => {}
            State::Count(counts) => *slot(counts, id)? = r.i64()?,
            State::Exact { sums, .. } => {
                *slot(sums, id)? = ExactSum {
                    sum: r.i()?,
                    n: r.i64()?,
                }
            }
            State::Float(sums) => {
                let finite = f64::from_le_bytes(r.take(8)?.try_into().map_err(|_| corrupt())?);
                let (n, nan, pos_inf, neg_inf) = (r.i64()?, r.i64()?, r.i64()?, r.i64()?);
                *slot(sums, id)? = FloatSum {
                    finite,
                    n,
                    nan,
                    pos_inf,
                    neg_inf,
                };
            }
            State::Fixed { width, sets } => {
                let set = slot(sets, id)?;
                for _ in 0..r.u()? {
                    let len = usize::try_from(r.u()?).map_err(|_| corrupt())?;
                    let row = r.take(len)?;
                    if len != *width + 1 || row.first() != Some(&1) {
                        return Err(corrupt());
                    }
                    set.insert(fixed_key(row), r.i64()?);
                }
            }
            State::Bytes(sets) => {
                let set = slot(sets, id)?;
                for _ in 0..r.u()? {
                    let len = usize::try_from(r.u()?).map_err(|_| corrupt())?;
                    let value: Box<[u8]> = r.take(len)?.into();
                    set.insert(value, r.i64()?);
                }
            }
            State::Bool(counts) => {
                *slot(counts, id)? = BoolCount {
                    trues: r.i64()?,
                    falses: r.i64()?,
                }
            }
        }
    }
    if !r.0.is_empty() {
        return Err(corrupt());
    }
    Ok(rows)
}

fn slot<T>(column: &mut [T], id: usize) -> Result<&mut T> {
    column
        .get_mut(id)
        .ok_or_else(|| EngineError::Internal("aggregate state has no room for a group".into()))
}

fn corrupt() -> EngineError {
    EngineError::Corrupt("truncated or overlong aggregate state".into())
}

pub(super) fn put_u(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn put_i(out: &mut Vec<u8>, v: i128) {
    put_u(out, ((v << 1) ^ (v >> 127)) as u128);
}

/// Reads the stored group format.
pub(super) struct Reader<'a>(pub &'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(corrupt());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    pub(super) fn u(&mut self) -> Result<u128> {
        let mut v = 0u128;
        for shift in (0..128).step_by(7) {
            let &[b] = self.take(1)? else {
                return Err(corrupt());
            };
            v |= u128::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(corrupt())
    }

    pub(super) fn i(&mut self) -> Result<i128> {
        let u = self.u()?;
        Ok((u >> 1) as i128 ^ -((u & 1) as i128))
    }

    pub(super) fn i64(&mut self) -> Result<i64> {
        i64::try_from(self.i()?).map_err(|_| corrupt())
    }
}
