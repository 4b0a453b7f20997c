//! What flows between a job's tasks, and the two ends of its channels.
//!
//! Channels are bounded, so a slow stage slows its upstream down to its own pace (backpressure)
//! instead of buffering without limit. Watermarks and barriers travel in-band with the batches:
//! - [`Inputs`] merges a task's input channels, each belonging to one of the task's logical
//!   inputs (a join's left and right; several channels when the upstream is parallel or a union).
//!   A barrier on one channel blocks that channel until the same barrier has arrived on every
//!   channel (alignment, across all logical inputs), so the state a task checkpoints at epoch `e`
//!   reflects exactly the rows sent before barrier `e` everywhere. Each logical input has its own
//!   watermark, the minimum over its channels; the operator that reads the inputs decides what
//!   they mean together.
//! - [`Output`] sends to one downstream task, or hash-partitions each batch among several by key
//!   group; watermarks and barriers go to every downstream task.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use datafusion::arrow::array::ArrayRef;
use tokio::sync::mpsc;

use crate::changelog::ChangeBatch;
use crate::keygroup::{instance_of, key_groups};
use crate::{EngineError, Result};

/// A barrier: the end of epoch `epoch`. With `checkpoint`, the epoch's commit is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub epoch: u64,
    pub checkpoint: bool,
}

/// One message between tasks.
#[derive(Debug)]
pub enum Message {
    Batch(ChangeBatch),
    /// No later row has an earlier event time (microseconds since the epoch).
    Watermark(i64),
    Barrier(Barrier),
}

/// A task's merged input channels; see the module documentation.
pub struct Inputs {
    rx: Vec<mpsc::Receiver<Message>>,
    /// Per channel: the logical input it belongs to.
    input_of: Vec<usize>,
    open: Vec<bool>,
    /// Channels that delivered the barrier being aligned.
    blocked: Vec<bool>,
    barrier: Option<Barrier>,
    /// Per channel: the largest watermark it sent.
    watermarks: Vec<Option<i64>>,
    /// Per logical input: the watermark last reported.
    reported: Vec<Option<i64>>,
    /// Where polling starts, rotated so that no channel starves the others.
    next: usize,
    /// When the barrier being aligned first arrived, and how long the last alignment took.
    aligning_since: Option<std::time::Instant>,
    last_alignment: std::time::Duration,
}

impl Inputs {
    /// Channels that are all one logical input (input 0).
    pub fn new(rx: Vec<mpsc::Receiver<Message>>) -> Self {
        Self::with_inputs(rx.into_iter().map(|r| (0, r)).collect())
    }

    /// Channels each with the logical input it belongs to (numbered from 0, none left out).
    pub fn with_inputs(rx: Vec<(usize, mpsc::Receiver<Message>)>) -> Self {
        let n = rx.len();
        let inputs = rx.iter().map(|(i, _)| i + 1).max().unwrap_or(1);
        let (input_of, rx) = rx.into_iter().unzip();
        Self {
            rx,
            input_of,
            open: vec![true; n],
            blocked: vec![false; n],
            barrier: None,
            watermarks: vec![None; n],
            reported: vec![None; inputs],
            next: 0,
            aligning_since: None,
            last_alignment: std::time::Duration::ZERO,
        }
    }

    /// The next message with the logical input it came from, aligned; `None` once every channel
    /// is closed. A watermark is reported for an input when the smallest over its channels grows;
    /// a barrier, once aligned, is reported as from input 0.
    pub async fn next(&mut self) -> Result<Option<(usize, Message)>> {
        loop {
            let Some((i, msg)) = self.poll_any().await else {
                return Ok(None);
            };
            let input = self.input_of[i];
            match msg {
                Message::Batch(b) => return Ok(Some((input, Message::Batch(b)))),
                Message::Watermark(w) => {
                    let slot = &mut self.watermarks[i];
                    *slot = Some(slot.map_or(w, |old| old.max(w)));
                    let min = self
                        .watermarks
                        .iter()
                        .zip(&self.input_of)
                        .filter(|(_, of)| **of == input)
                        .try_fold(i64::MAX, |m, (w, _)| w.map(|w| m.min(w)));
                    if let Some(min) = min
                        && self.reported[input].is_none_or(|old| min > old)
                    {
                        self.reported[input] = Some(min);
                        return Ok(Some((input, Message::Watermark(min))));
                    }
                }
                Message::Barrier(b) => {
                    if let Some(current) = self.barrier
                        && current != b
                    {
                        return Err(EngineError::Internal(format!(
                            "barrier {} arrived while aligning barrier {}",
                            b.epoch, current.epoch
                        )));
                    }
                    self.barrier = Some(b);
                    self.blocked[i] = true;
                    if self.aligning_since.is_none() {
                        self.aligning_since = Some(std::time::Instant::now());
                    }
                    if let Some(b) = self.aligned() {
                        return Ok(Some((0, Message::Barrier(b))));
                    }
                }
            }
        }
    }

    /// The barrier being aligned, once every open input has delivered it (inputs unblock).
    fn aligned(&mut self) -> Option<Barrier> {
        let b = self.barrier?;
        let done = (0..self.rx.len()).all(|i| self.blocked[i] || !self.open[i]);
        if !done {
            return None;
        }
        self.blocked.iter_mut().for_each(|x| *x = false);
        self.barrier = None;
        self.last_alignment = self
            .aligning_since
            .take()
            .map(|t| t.elapsed())
            .unwrap_or_default();
        Some(b)
    }

    /// How long the last aligned barrier waited from its first arrival until every channel had
    /// delivered it (Flink's alignment time).
    pub fn last_alignment(&self) -> std::time::Duration {
        self.last_alignment
    }

    async fn poll_any(&mut self) -> Option<(usize, Message)> {
        poll_fn(|cx| {
            let n = self.rx.len();
            let mut any_open = false;
            for k in 0..n {
                let i = (self.next + k) % n;
                if !self.open[i] || self.blocked[i] {
                    any_open |= self.open[i];
                    continue;
                }
                match self.rx[i].poll_recv(cx) {
                    Poll::Ready(Some(m)) => {
                        self.next = (i + 1) % n;
                        return Poll::Ready(Some((i, m)));
                    }
                    Poll::Ready(None) => self.open[i] = false,
                    Poll::Pending => any_open = true,
                }
            }
            if any_open {
                Poll::Pending
            } else {
                Poll::Ready(None)
            }
        })
        .await
    }
}

/// Where a task's output goes.
pub enum Output {
    One(mpsc::Sender<Message>),
    /// Rows go to `targets[instance_of(key group of keys)]`.
    Hash {
        keys: Vec<usize>,
        targets: Vec<mpsc::Sender<Message>>,
        groups: Vec<u16>,
    },
}

fn gone() -> EngineError {
    EngineError::Internal("a downstream task of the job stopped".into())
}

impl Output {
    /// Sends `batch` on, partitioned if this output is a hash exchange.
    pub async fn send(&mut self, batch: ChangeBatch) -> Result<()> {
        match self {
            Output::One(tx) => tx.send(Message::Batch(batch)).await.map_err(|_| gone()),
            Output::Hash {
                keys,
                targets,
                groups,
            } => {
                let n = batch.num_rows();
                let columns: Vec<ArrayRef> = keys
                    .iter()
                    .map(|&k| Arc::clone(batch.data.column(k)))
                    .collect();
                key_groups(&columns, n, groups)?;
                let p = targets.len();
                let mut parts: Vec<Vec<u32>> = vec![Vec::new(); p];
                for (row, &kg) in groups.iter().enumerate() {
                    parts[instance_of(kg, p)].push(row as u32);
                }
                for (target, rows) in targets.iter().zip(parts) {
                    if rows.is_empty() {
                        continue;
                    }
                    let part = if rows.len() == n {
                        batch.clone()
                    } else {
                        batch.select(rows)?
                    };
                    target
                        .send(Message::Batch(part))
                        .await
                        .map_err(|_| gone())?;
                }
                Ok(())
            }
        }
    }

    /// Sends a watermark or barrier to every downstream task.
    pub async fn broadcast(&mut self, msg: impl Fn() -> Message) -> Result<()> {
        match self {
            Output::One(tx) => tx.send(msg()).await.map_err(|_| gone()),
            Output::Hash { targets, .. } => {
                for t in targets.iter() {
                    t.send(msg()).await.map_err(|_| gone())?;
                }
                Ok(())
            }
        }
    }
}
