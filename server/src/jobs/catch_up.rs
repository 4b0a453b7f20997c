//! A job catching up with what its sources held when it started: a new view's or sink's backfill,
//! or a restarted server's catch-up on what came in while it was down.
//!
//! Every job start runs a tracker task: it asks the job for its targets (per source, the position
//! that covers everything there now: a table's last change-log sequence, a Kafka topic's end) and
//! waits until the job has committed them ([`Job::reach`]). `CREATE MATERIALIZED VIEW`, `CREATE
//! SINK ... AS` and `INSERT INTO sink SELECT` wait for it (unless the session has
//! `background_ddl` on, RisingWave's setting), and `SHOW JOBS` and `rivulet_jobs` show its
//! progress.

use std::sync::Arc;

use rivulet_engine::job::Job;
use tokio::sync::watch;

/// Where a job's catch-up is.
#[derive(Clone)]
pub enum CatchUp {
    /// Asking the sources where they end.
    Starting,
    /// Reading towards the targets.
    Running(Arc<Targets>),
    /// Everything there at the start is committed.
    Done,
    /// The sources could not tell where they end (a Kafka broker that is down): nothing to wait
    /// for, the job runs on.
    Unknown(String),
    /// The job failed or stopped before it caught up.
    Failed(String),
}

/// A job and the positions it catches up to.
pub struct Targets {
    job: Arc<Job>,
    targets: Vec<u64>,
    /// Per source: the rows its table held when the catch-up began (what a backfill reading the
    /// current rows reads).
    rows: Vec<u64>,
}

impl Targets {
    /// The share of the catch-up committed, from 0 to 1: the mean over the sources of each one's
    /// share, in rows of its table while a new job reads the table's current rows, then in
    /// source positions (change-log entries, records of a Kafka topic).
    pub fn fraction(&self) -> f64 {
        let now = self.job.positions();
        let backfilling = self.job.backfilling();
        let read = self
            .job
            .metrics()
            .sources
            .iter()
            .map(|s| s.rows.load(std::sync::atomic::Ordering::Relaxed));
        let mut shares = Vec::with_capacity(now.len());
        for ((((start, now), target), snapshot), (rows, read)) in self
            .job
            .start_positions()
            .iter()
            .zip(&now)
            .zip(&self.targets)
            .zip(backfilling)
            .zip(self.rows.iter().zip(read))
        {
            shares.push(if snapshot {
                // Not done until the snapshot is: at most 99%.
                (read as f64 / (*rows).max(1) as f64).min(0.99)
            } else if target > start {
                (*now).min(*target).saturating_sub(*start) as f64 / (target - start) as f64
            } else {
                1.0
            });
        }
        if shares.is_empty() {
            1.0
        } else {
            shares.iter().sum::<f64>() / shares.len() as f64
        }
    }

    /// Rows the job has read since it started.
    pub fn rows_read(&self) -> u64 {
        self.job.stats().rows_in
    }
}

/// Runs `job`'s catch-up, publishing where it is on `state`.
pub async fn track(job: Arc<Job>, state: watch::Sender<CatchUp>) {
    let targets = match job.targets().await {
        Ok(t) => t,
        Err(e) => {
            state.send_replace(CatchUp::Unknown(e));
            return;
        }
    };
    let rows = job.sources().iter().map(|t| t.size().rows).collect();
    let targets = Arc::new(Targets { job, targets, rows });
    state.send_replace(CatchUp::Running(Arc::clone(&targets)));
    let reached = targets.job.reach(&targets.targets).await;
    state.send_replace(match reached {
        Ok(()) => CatchUp::Done,
        Err(e) => CatchUp::Failed(e),
    });
}

impl CatchUp {
    /// The progress to show while catching up (`None` once it ended).
    pub fn progress(&self) -> Option<f64> {
        match self {
            CatchUp::Starting => Some(0.0),
            CatchUp::Running(t) => Some(t.fraction()),
            CatchUp::Done | CatchUp::Unknown(_) | CatchUp::Failed(_) => None,
        }
    }
}
