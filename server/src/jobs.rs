//! The job manager: one streaming job per materialized view.
//!
//! A view's job is planned from its stored query text whenever it starts (at `CREATE MATERIALIZED
//! VIEW`, and for every view when the server starts), so the operator graph always matches the code
//! that runs it; the job's state and position in RocksDB carry over. Jobs start in view id order,
//! which is also dependency order (a view can only read relations that existed before it).
//!
//! A job that fails is restarted from its last checkpoint by a supervisor task, after a fixed delay
//! and at most a fixed number of times (Flink's fixed-delay restart strategy; `--restart-attempts`,
//! `--restart-delay-ms`). Its restored operators replay the source from the checkpointed position,
//! so a transient failure costs nothing; a deterministic one (an expression error on some row)
//! fails again, and the job then stays failed with its error in `SHOW JOBS`.
//!
//! `FLUSH` waits, in id order, for each job to have committed everything its source had committed
//! when the wait for it began; going in id order makes a view on a view see its upstream's flushed
//! changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::common::TableReference;
use parking_lot::Mutex;
use rivulet_engine::job::{Job, JobSpec};
use rivulet_engine::task::{TaskHandle, spawn_named};
use rivulet_planner::parse::{Statement, parse_sql};
use rivulet_planner::stream::{Resolved, StreamContext, StreamPlan, plan_view};

use crate::catalog::{Catalog, TableEntry};
use crate::error::SqlError;
use crate::exec::plan_query;
use crate::session::{Session, Shared};

/// When and how often failed jobs are restarted.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub attempts: u32,
    pub delay: Duration,
}

/// A view's job and the task that restarts it.
struct Running {
    job: Arc<Job>,
    restarts: u32,
    _supervisor: TaskHandle<()>,
}

/// The running jobs, by view id.
pub struct Jobs {
    running: Mutex<BTreeMap<u64, Running>>,
    policy: RestartPolicy,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("policy", &self.policy)
            .finish()
    }
}

/// Plans view `entry`'s query and starts its job from the last checkpoint.
async fn build(shared: &Arc<Shared>, entry: &TableEntry) -> Result<Job, SqlError> {
    let Some(view) = &entry.def.view else {
        return Err(SqlError::internal(format!(
            "\"{}\" is not a materialized view",
            entry.def.name
        )));
    };
    let mut session = Session::new(Arc::clone(shared), "rivulet", &entry.def.database)?;
    let plan = plan_stream(&mut session, &view.query, entry.def.id).await?;
    Ok(Job::start(JobSpec {
        id: entry.def.id,
        name: entry.def.name.clone(),
        store: shared.catalog.store().clone(),
        source: plan.source,
        operators: plan.operators,
        sink: Arc::clone(&entry.store),
        counted: view.counted,
    })?)
}

/// Restarts view `entry`'s job each time it fails, as the policy allows.
async fn supervise(shared: Arc<Shared>, entry: Arc<TableEntry>, mut job: Arc<Job>) {
    let id = entry.def.id;
    let policy = shared.jobs.policy;
    let mut restarts = 0;
    loop {
        job.stopped().await;
        let Some(error) = job.failure() else {
            return;
        };
        if restarts >= policy.attempts {
            tracing::error!(view = %entry.def.name, %error, restarts, "job failed; no restarts left");
            return;
        }
        restarts += 1;
        tracing::warn!(view = %entry.def.name, %error, restarts, "job failed; restarting");
        tokio::time::sleep(policy.delay).await;
        match build(&shared, &entry).await {
            Ok(next) => {
                let next = Arc::new(next);
                let mut running = shared.jobs.running.lock();
                // Dropped or restarted meanwhile: this supervisor is no longer wanted.
                let Some(current) = running.get_mut(&id) else {
                    return;
                };
                current.job = Arc::clone(&next);
                current.restarts = restarts;
                job = next;
            }
            Err(e) => {
                tracing::error!(view = %entry.def.name, error = %e, "job could not restart");
                return;
            }
        }
    }
}

impl Jobs {
    /// No jobs yet; failed jobs are restarted as `policy` says.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            running: Mutex::new(BTreeMap::new()),
            policy,
        }
    }

    /// Starts the job of view `entry`.
    pub async fn start(&self, shared: &Arc<Shared>, entry: &TableEntry) -> Result<(), SqlError> {
        let job = Arc::new(build(shared, entry).await?);
        let Some(entry) = shared.catalog.table(&entry.def.database, &entry.def.name) else {
            return Err(SqlError::internal("view vanished while starting"));
        };
        let supervisor = spawn_named(
            format!("supervise-{}", entry.def.name),
            supervise(Arc::clone(shared), Arc::clone(&entry), Arc::clone(&job)),
        );
        self.running.lock().insert(
            entry.def.id,
            Running {
                job,
                restarts: 0,
                _supervisor: supervisor,
            },
        );
        Ok(())
    }

    /// Starts the jobs of every view in the catalog, in id order.
    pub async fn start_all(&self, shared: &Arc<Shared>) -> Result<(), SqlError> {
        let mut views: Vec<Arc<TableEntry>> = shared
            .catalog
            .databases()
            .iter()
            .flat_map(|db| shared.catalog.tables(db))
            .filter(|t| t.def.view.is_some())
            .collect();
        views.sort_by_key(|v| v.def.id);
        for view in views {
            self.start(shared, &view).await?;
        }
        Ok(())
    }

    /// The jobs by view id, with how often each was restarted.
    pub fn list(&self) -> BTreeMap<u64, (Arc<Job>, u32)> {
        self.running
            .lock()
            .iter()
            .map(|(id, r)| (*id, (Arc::clone(&r.job), r.restarts)))
            .collect()
    }

    /// Stops the job of view `id` (its state stays until the view is dropped).
    pub fn stop(&self, id: u64) {
        self.running.lock().remove(&id);
    }

    /// The views whose jobs read relation `id`.
    pub fn readers_of(&self, id: u64) -> Vec<u64> {
        self.running
            .lock()
            .iter()
            .filter(|(_, r)| r.job.source().id() == id)
            .map(|(view, _)| *view)
            .collect()
    }

    /// Waits until every view reflects every change committed before the call.
    pub async fn flush(&self) -> Result<(), SqlError> {
        let jobs: Vec<Arc<Job>> = self
            .running
            .lock()
            .values()
            .map(|r| Arc::clone(&r.job))
            .collect();
        for job in jobs {
            let target = job.source().last_seq();
            job.wait_for(target)
                .await
                .map_err(|e| SqlError::new(crate::error::sqlstate::INTERNAL_ERROR, e))?;
        }
        Ok(())
    }
}

/// Plans a view's query text into operators whose state lives under job `id`.
pub async fn plan_stream(
    session: &mut Session,
    query: &str,
    id: u64,
) -> Result<StreamPlan, SqlError> {
    let parsed = parse_sql(query)?;
    let [parsed] = parsed.as_slice() else {
        return Err(SqlError::internal("a view's query is not one statement"));
    };
    let Statement::Sql { stmt, .. } = &parsed.statement else {
        return Err(SqlError::internal("a view's query is not a query"));
    };
    let catalog: Arc<Catalog> = Arc::clone(session.catalog());
    let database = session.database.clone();
    let ctx = session.context()?.clone();
    let plan = plan_query(&ctx, stmt).await?;
    let state = ctx.state();
    let resolve = |name: &TableReference| -> Option<Resolved> {
        let t = catalog.table(&database, name.table())?;
        // A counted view's rows are not unique: it is read like a table without a key.
        let counted = t.def.view.as_ref().is_some_and(|v| v.counted);
        let keyed = !counted && (t.def.view.is_some() || !t.def.primary_key.is_empty());
        let key = keyed.then(|| t.def.primary_key.clone());
        Some((Arc::clone(&t.store), key))
    };
    let stream = StreamContext {
        state: &state,
        store: catalog.store().clone(),
        job_id: id,
        resolve: &resolve,
    };
    Ok(plan_view(&stream, plan)?)
}
