//! Streaming operators: each turns changelog batches into changelog batches.
//!
//! An operator is synchronous and owns its state. The job that runs it (see [`crate::job`]) calls
//! [`Operator::process`] for every input batch and [`Operator::checkpoint`] at each barrier, which
//! adds the operator's changed state to the job's write batch; that batch also holds the source
//! positions and the view's rows, so state and positions change atomically. State lives under the
//! operator's own key prefix in the one [`StateStore`](crate::state::StateStore).

use datafusion::arrow::datatypes::SchemaRef;

use crate::Result;
use crate::changelog::ChangeBatch;
use crate::state::StateBatch;

/// Hash aggregation with retractions (count, sum, avg, min, max, count distinct, bool_and/or).
pub mod aggregate;
/// Projection and filter with DataFusion physical expressions.
pub mod project;

/// One step of a streaming job.
pub trait Operator: Send {
    /// A short name for plans and logs (`Project`, `HashAggregate`).
    fn name(&self) -> &'static str;

    /// The schema of the batches this operator emits.
    fn schema(&self) -> SchemaRef;

    /// Output the operator has before any input (a global aggregate's row, say).
    fn start(&mut self) -> Result<Vec<ChangeBatch>> {
        Ok(Vec::new())
    }

    /// Processes one input batch and returns what changed downstream.
    fn process(&mut self, input: ChangeBatch) -> Result<Vec<ChangeBatch>>;

    /// Adds the state changed since the last checkpoint to `batch`.
    fn checkpoint(&mut self, batch: &mut StateBatch) -> Result<()>;

    /// One line describing the operator for EXPLAIN.
    fn describe(&self) -> String {
        self.name().to_string()
    }
}
