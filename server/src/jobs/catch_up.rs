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
}

impl Targets {
    /// The share of the catch-up committed, from 0 to 1, counted in source positions (change-log
    /// entries of a table, records of a Kafka topic); a table whose current rows a new job is
    /// still reading counts as not started.
    pub fn fraction(&self) -> f64 {
        let now = self.job.positions();
        let backfilling = self.job.backfilling();
        let (mut done, mut total) = (0u64, 0u64);
        for (((start, now), target), snapshot) in self
            .job
            .start_positions()
            .iter()
            .zip(&now)
            .zip(&self.targets)
            .zip(backfilling)
        {
            if target > start {
                total += target - start;
                if !snapshot {
                    done += (*now).min(*target).saturating_sub(*start);
                }
            }
        }
        if total == 0 {
            1.0
        } else {
            done as f64 / total as f64
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
    let targets = Arc::new(Targets { job, targets });
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
