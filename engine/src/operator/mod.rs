//! Streaming operators: each turns changelog batches into changelog batches.
//!
//! An operator is synchronous, owns its state and never sees channels, tasks or RocksDB. The job
//! runtime (see [`crate::job`]) gives every parallel instance its own copy ([`Operator::fork`]),
//! restores its state from the last checkpoint ([`Operator::restore`]), calls
//! [`Operator::process`] for every input batch, and at each barrier calls
//! [`Operator::checkpoint`], which adds the state changed since the last barrier to the epoch's
//! write batch; that batch also holds the source positions and the view's rows, so state and
//! positions change atomically.
//!
//! Keyed state lives under the operator's own prefix, each entry under its key's key group
//! ([`crate::keygroup`]), so that an instance reads back exactly the keys it owns.

use std::ops::Range;

use datafusion::arrow::datatypes::SchemaRef;

use crate::Result;
use crate::changelog::ChangeBatch;
use crate::state::{StateBatch, StateStore};

/// Hash aggregation with retractions (count, sum, avg, min, max, count distinct, bool_and/or).
pub mod aggregate;
/// Projection and filter with DataFusion physical expressions.
pub mod project;
/// UNNEST of one list column (HOP and CUMULATE windows).
pub mod unnest;

/// Where one instance of an operator keeps its state.
#[derive(Debug, Clone)]
pub struct StateScope {
    pub store: StateStore,
    /// Every key of this operator (all instances) starts with it; no other key does.
    pub prefix: Vec<u8>,
    /// The key groups this instance owns.
    pub key_groups: Range<u16>,
}

impl StateScope {
    /// The stored key of `key` in key group `kg`: `prefix ++ kg (big endian) ++ key`.
    pub fn key(&self, kg: u16, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 2 + key.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(&kg.to_be_bytes());
        k.extend_from_slice(key);
        k
    }

    /// Length of the stored key of a `key`.
    pub fn key_len(&self, key: &[u8]) -> usize {
        self.prefix.len() + 2 + key.len()
    }

    /// Calls `f(kg, key, value)` for every entry in this instance's key groups.
    pub fn scan(&self, mut f: impl FnMut(u16, &[u8], &[u8]) -> Result<()>) -> Result<()> {
        for kg in self.key_groups.clone() {
            let mut prefix = self.prefix.clone();
            prefix.extend_from_slice(&kg.to_be_bytes());
            self.store.scan_prefix(None, &prefix, None, |k, v| {
                f(kg, k.get(prefix.len()..).unwrap_or_default(), v)?;
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
        }
        Ok(())
    }
}

/// One step of a streaming job.
pub trait Operator: Send {
    /// A short name for plans and logs (`Project`, `HashAggregate`).
    fn name(&self) -> &'static str;

    /// The schema of the batches this operator emits.
    fn schema(&self) -> SchemaRef;

    /// A copy without state, for another parallel instance.
    fn fork(&self) -> Result<Box<dyn Operator>>;

    /// Loads the state `scope` holds (what the last checkpoint wrote for its key groups). Called
    /// once, before any other call but [`Operator::fork`].
    fn restore(&mut self, _scope: &StateScope) -> Result<()> {
        Ok(())
    }

    /// Output the operator has before any input (a global aggregate's row, say).
    fn start(&mut self) -> Result<Vec<ChangeBatch>> {
        Ok(Vec::new())
    }

    /// Processes one input batch and returns what changed downstream.
    fn process(&mut self, input: ChangeBatch) -> Result<Vec<ChangeBatch>>;

    /// Event time has reached `watermark` (microseconds since the epoch): no row with an earlier
    /// event time follows. Returns what that closes. The runtime forwards the watermark itself.
    fn on_watermark(&mut self, _watermark: i64) -> Result<Vec<ChangeBatch>> {
        Ok(Vec::new())
    }

    /// Adds the state changed since the last checkpoint to `batch`.
    fn checkpoint(&mut self, _scope: &StateScope, _batch: &mut StateBatch) -> Result<()> {
        Ok(())
    }

    /// Bytes of state this instance keeps in the store (keys and values), as of its last
    /// checkpoint.
    fn state_bytes(&self) -> usize {
        0
    }

    /// One line describing the operator for EXPLAIN.
    fn describe(&self) -> String {
        self.name().to_string()
    }
}
