//! The job manager: one streaming job per materialized view.
//!
//! A view's job is planned from its stored query text whenever it starts (at `CREATE MATERIALIZED
//! VIEW`, and for every view when the server starts), so the operator graph always matches the code
//! that runs it; the job's state and position in RocksDB carry over. Jobs start in view id order,
//! which is also dependency order (a view can only read relations that existed before it).
//!
//! A job that fails is restarted from its last checkpoint by a supervisor task, as its restart
//! strategy says (Flink's names and meanings, see [`RestartPolicy`]): the server's flags set the
//! default, and the `restart-strategy*` settings of the session that created a view override it
//! for that view. Its restored operators replay the sources from the checkpointed positions, so a
//! transient failure costs nothing; a deterministic one (an expression error on some row) fails
//! again, and once the strategy gives up the job stays failed with its error in `SHOW JOBS`.
//!
//! The settings of the creating session that shape a job (`streaming_parallelism` and the restart
//! strategy) are stored with the view, so the job is the same after a server restart.
//!
//! `FLUSH` waits, in id order, for each job to have committed everything its sources had committed
//! when the wait for it began; going in id order makes a view on a view see its upstream's flushed
//! changes.

use std::collections::BTreeMap;
use std::sync::Arc;

pub use restart::RestartPolicy;

use datafusion::common::TableReference;
use datafusion::prelude::SessionContext;
use parking_lot::Mutex;
use rivulet_engine::job::{Job, JobConfig, JobSpec};
use rivulet_engine::task::{TaskHandle, spawn_named};
use rivulet_planner::catalog::{StateTableDef, WatermarkDef};
use rivulet_planner::computed::PROCTIME;
use rivulet_planner::parse::{Statement, parse_sql};
use rivulet_planner::stream::{Resolved, StreamContext, StreamPlan, plan_view};

use crate::catalog::{Catalog, TableEntry};
use crate::error::SqlError;
use crate::exec::plan_continuous;
use crate::session::{Session, Shared};

/// How long a processing-time source waits without rows before its watermark follows the clock.
const PROCTIME_IDLE: std::time::Duration = std::time::Duration::from_millis(200);

/// Restart strategies and their settings.
mod restart;

/// A starting job's catch-up (a new view's backfill): what CREATE waits for.
pub mod catch_up;
pub mod retention;
pub mod trim;

/// Settings of a session that are stored with a view it creates.
pub fn job_settings(settings: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    settings
        .iter()
        .filter(|(k, _)| {
            k.as_str() == PARALLELISM
                || k.as_str() == ALLOWED_LATENESS
                || k.as_str() == STATE_TTL
                || k.as_str() == TIME_ZONE
                || k.starts_with("restart-strategy")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The session's time zone: a view computes its `timestamptz` days, hours and text in the zone
/// of the session that created it, whoever reads it.
pub const TIME_ZONE: &str = "timezone";

/// The setting for the instances of each keyed stage (RisingWave's name).
pub const PARALLELISM: &str = "streaming_parallelism";

/// A view's stored setting while its job is suspended: the savepoint it was suspended with.
/// Never a session's setting (`job_settings` does not take it).
pub const SUSPENDED: &str = "rivulet.suspended_with_savepoint";

/// The savepoint view `def` is suspended with, if it is suspended.
pub fn suspended(def: &rivulet_planner::catalog::TableDef) -> Option<&str> {
    def.view
        .as_ref()
        .and_then(|v| v.settings.get(SUSPENDED))
        .map(String::as_str)
}

/// How jobs run unless a view's settings say otherwise.
#[derive(Debug, Clone, Copy)]
pub struct JobDefaults {
    pub config: JobConfig,
    /// Instances of each keyed stage.
    pub parallelism: usize,
    pub restart: RestartPolicy,
}

/// The stored parallelism of a view that follows the machine's cores (`SET PARALLELISM =
/// ADAPTIVE`): each time its job starts, as many instances as there are cores.
pub const ADAPTIVE: &str = "adaptive";

/// The parallelism `settings` ask for (`0`, `default` or `auto`: the server's default;
/// `adaptive`: the machine's cores).
pub fn parallelism(settings: &BTreeMap<String, String>, default: usize) -> Result<usize, SqlError> {
    let Some(v) = settings.get(PARALLELISM) else {
        return Ok(default);
    };
    let v = v.trim().trim_matches('\'');
    if v.eq_ignore_ascii_case("default") || v.eq_ignore_ascii_case("auto") || v == "0" {
        return Ok(default);
    }
    if v.eq_ignore_ascii_case(ADAPTIVE) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        return Ok(cores.min(usize::from(rivulet_engine::keygroup::KEY_GROUPS)));
    }
    match v.parse::<usize>() {
        Ok(n) if n <= usize::from(rivulet_engine::keygroup::KEY_GROUPS) => Ok(n),
        _ => Err(SqlError::new(
            crate::error::sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "invalid value for parameter \"{PARALLELISM}\": \"{v}\" (expected 1 to {})",
                rivulet_engine::keygroup::KEY_GROUPS
            ),
        )),
    }
}

/// A job as monitoring sees it.
pub struct JobOverview {
    pub id: u64,
    pub database: String,
    /// The view's or sink's name.
    pub name: String,
    /// `materialized view` or `sink`.
    pub kind: &'static str,
    /// `running`, `retrying` (a source or sink waits for a broker) or `failed`.
    pub status: &'static str,
    pub error: Option<String>,
    pub restarts: u32,
    /// The running job and its figures; `None` for a job that could not start.
    pub job: Option<(Arc<Job>, rivulet_engine::job::JobStats)>,
    /// While the job catches up with what its sources held when it started (a new view's
    /// backfill), the share done, 0 to 1.
    pub progress: Option<f64>,
}

/// A view's job, the task that restarts it and the one that follows its catch-up.
struct Running {
    job: Arc<Job>,
    restarts: u32,
    catch_up: tokio::sync::watch::Receiver<catch_up::CatchUp>,
    _supervisor: TaskHandle<()>,
    _catch_up: TaskHandle<()>,
}

/// The running jobs, by view id.
pub struct Jobs {
    running: Mutex<BTreeMap<u64, Running>>,
    /// Views whose jobs could not start when the server did, with the error.
    refused: Mutex<BTreeMap<u64, String>>,
    defaults: JobDefaults,
    /// Held (shared) by every job start until the job is listed, taken exclusively by a change-log
    /// trim: a job that is not listed yet may already read a log (see `trim`).
    pub starting: tokio::sync::RwLock<()>,
    /// Held by a rescale from stopping a job to listing its successor: two at once could run
    /// two jobs of one view.
    rescaling: tokio::sync::Mutex<()>,
    /// The view whose job a rescale is replacing, if any.
    rescaled: Mutex<Option<u64>>,
    /// Views whose jobs are suspended (`ALTER ... SUSPEND WITH SAVEPOINT`): stopped at a
    /// checkpoint until resumed.
    suspended: Mutex<std::collections::BTreeSet<u64>>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("defaults", &self.defaults)
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
    let defaults = shared.jobs.defaults;
    let plan = plan_stream(
        &mut session,
        &view.query,
        &view.settings,
        view.emit_on_window_close,
        view.sink.is_some(),
        !view.scales.is_empty(),
    )
    .await?;
    let mut plan = plan;
    if !view.state_tables.is_empty() {
        plan.graph.state_ids = Some(state_ids(&entry.def.name, &view.state_tables, &plan.graph)?);
    }
    Ok(Job::start(JobSpec {
        id: entry.def.id,
        name: entry.def.name.clone(),
        store: shared.catalog.store().clone(),
        graph: plan.graph,
        sink: crate::sinks::open(&entry.def, &entry.store)?,
        config: defaults.config,
    })?)
}

/// The state tables of a new view's job: its stateful operators' shapes, numbered from 1.
pub fn state_tables(graph: &rivulet_engine::job::graph::JobGraph) -> Vec<StateTableDef> {
    shapes(graph)
        .into_iter()
        .zip(1..)
        .map(|((_, _, shape), id)| StateTableDef { id, shape })
        .collect()
}

/// Test hook: a server started with this variable set plans every view as if its planner had
/// changed (each operator's shape gets the variable's value appended), to test the refusal.
const PLANNER_CHANGE: &str = "RIVULET_TEST_PLANNER_CHANGE";

/// The shapes of `graph`'s stateful operators (see `JobGraph::shapes`), as this server plans
/// them.
fn shapes(graph: &rivulet_engine::job::graph::JobGraph) -> Vec<(usize, usize, String)> {
    let changed = std::env::var(PLANNER_CHANGE).unwrap_or_default();
    graph
        .shapes()
        .into_iter()
        .map(|(s, o, shape)| (s, o, format!("{shape}{changed}")))
        .collect()
}

/// The state table id of each operator of `graph` (by stage and position; 0 for stateless
/// ones), from the ids view `name` stored: its stateful operators must be, in order, the ones the
/// view was created with. Otherwise the stored state belongs to other operators, and the view
/// is refused, saying what differs.
fn state_ids(
    name: &str,
    stored: &[StateTableDef],
    graph: &rivulet_engine::job::graph::JobGraph,
) -> Result<Vec<Vec<u32>>, SqlError> {
    let shapes = shapes(graph);
    let refuse = |detail: String| {
        SqlError::new(
            crate::error::sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "materialized view \"{name}\" cannot run: this server plans its query differently \
                 than the server that created it, and its state belongs to the old plan"
            ),
        )
        .with_detail(detail)
        .with_hint("Drop the view and create it again; it is rebuilt from its sources.")
    };
    if shapes.len() != stored.len() {
        return Err(refuse(format!(
            "It was created with {} stateful operators, and is planned now with {}.",
            stored.len(),
            shapes.len()
        )));
    }
    let mut ids: Vec<Vec<u32>> = graph
        .stages
        .iter()
        .map(|s| vec![0; s.operators.len()])
        .collect();
    for ((s, o, shape), def) in shapes.into_iter().zip(stored) {
        if shape != def.shape {
            return Err(refuse(format!(
                "State table {} was \"{}\", and is planned now as \"{shape}\".",
                def.id, def.shape
            )));
        }
        ids[s][o] = def.id;
    }
    Ok(ids)
}

/// Restarts view `entry`'s job each time it fails, as the policy allows.
async fn supervise(shared: Arc<Shared>, entry: Arc<TableEntry>, mut job: Arc<Job>) {
    let id = entry.def.id;
    let policy = match &entry.def.view {
        Some(view) => RestartPolicy::from_settings(&view.settings, shared.jobs.defaults.restart)
            .unwrap_or(shared.jobs.defaults.restart),
        None => shared.jobs.defaults.restart,
    };
    let mut restarts = 0;
    loop {
        job.stopped().await;
        let Some(error) = job.failure() else {
            return;
        };
        let Some(delay) = policy.delay(restarts) else {
            tracing::error!(view = %entry.def.name, %error, restarts, "job failed; no restarts left");
            return;
        };
        restarts += 1;
        tracing::warn!(view = %entry.def.name, %error, restarts, ?delay, "job failed; restarting");
        tokio::time::sleep(delay).await;
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
    /// No jobs yet; jobs run as `defaults` say unless their view's settings override them.
    pub fn new(defaults: JobDefaults) -> Self {
        Self {
            running: Mutex::new(BTreeMap::new()),
            refused: Mutex::new(BTreeMap::new()),
            defaults,
            starting: tokio::sync::RwLock::new(()),
            rescaling: tokio::sync::Mutex::new(()),
            rescaled: Mutex::new(None),
            suspended: Mutex::new(Default::default()),
        }
    }

    /// The server's defaults.
    pub fn defaults(&self) -> JobDefaults {
        self.defaults
    }

    /// Starts the job of view `entry`.
    pub async fn start(&self, shared: &Arc<Shared>, entry: &TableEntry) -> Result<(), SqlError> {
        let _listing = self.starting.read().await;
        let job = Arc::new(build(shared, entry).await?);
        tracing::info!(
            job = job.name(),
            epoch = job.start_epoch(),
            positions = ?job.start_positions(),
            "job started"
        );
        let Some(entry) = shared.catalog.table(&entry.def.database, &entry.def.name) else {
            return Err(SqlError::internal("view vanished while starting"));
        };
        let supervisor = spawn_named(
            format!("supervise-{}", entry.def.name),
            supervise(Arc::clone(shared), Arc::clone(&entry), Arc::clone(&job)),
        );
        let (state, catch_up) = tokio::sync::watch::channel(catch_up::CatchUp::Starting);
        let tracker = spawn_named(
            format!("catch-up-{}", entry.def.name),
            catch_up::track(Arc::clone(&job), state),
        );
        self.running.lock().insert(
            entry.def.id,
            Running {
                job,
                restarts: 0,
                catch_up,
                _supervisor: supervisor,
                _catch_up: tracker,
            },
        );
        Ok(())
    }

    /// The catch-up of the job that replaces view `id`'s, when the one `old` follows was stopped
    /// by a rescale (a CREATE waiting for its backfill goes on waiting for the new job); `None`
    /// when it stopped or failed otherwise.
    pub async fn successor_catch_up(
        &self,
        id: u64,
        old: &tokio::sync::watch::Receiver<catch_up::CatchUp>,
    ) -> Option<tokio::sync::watch::Receiver<catch_up::CatchUp>> {
        self.successor(id, |r| {
            (!r.catch_up.same_channel(old)).then(|| r.catch_up.clone())
        })
        .await
    }

    /// What `new` takes from view `id`'s listed job once a rescale has replaced the one the
    /// caller knew (`new` answers `None` while it is still listed): waits while the rescale runs;
    /// `None` when no rescale is replacing it, or the view is gone.
    async fn successor<T>(&self, id: u64, new: impl Fn(&Running) -> Option<T>) -> Option<T> {
        for _ in 0..RESCALE_POLLS {
            if let Some(next) = new(self.running.lock().get(&id)?) {
                return Some(next);
            }
            if *self.rescaled.lock() != Some(id) {
                return None;
            }
            tokio::time::sleep(RESCALE_POLL).await;
        }
        None
    }

    /// Where the catch-up of view `id`'s job (as it started) is, and its changes.
    pub fn catch_up(&self, id: u64) -> Option<tokio::sync::watch::Receiver<catch_up::CatchUp>> {
        self.running.lock().get(&id).map(|r| r.catch_up.clone())
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
            if suspended(&view.def).is_some() {
                self.suspended.lock().insert(view.def.id);
                continue;
            }
            // One view that cannot start (say, planned differently after an upgrade) shows as
            // failed; the server and the other views run.
            if let Err(e) = self.start(shared, &view).await {
                tracing::error!(view = %view.def.name, error = %e, "job could not start");
                self.refused.lock().insert(view.def.id, e.to_string());
            }
        }
        Ok(())
    }

    /// Views whose jobs could not start with the server, with the error.
    pub fn refused(&self) -> BTreeMap<u64, String> {
        self.refused.lock().clone()
    }

    /// The jobs by view id, with how often each was restarted.
    pub fn list(&self) -> BTreeMap<u64, (Arc<Job>, u32)> {
        self.running
            .lock()
            .iter()
            .map(|(id, r)| (*id, (Arc::clone(&r.job), r.restarts)))
            .collect()
    }

    /// Every view's and sink's job as monitoring sees it (`/metrics`, the `rivulet_*` system
    /// tables, the dashboard), in database and id order.
    pub fn overview(&self, catalog: &Catalog) -> Vec<JobOverview> {
        let running = self.list();
        let refused = self.refused();
        let mut out = Vec::new();
        for db in catalog.databases() {
            let mut views: Vec<Arc<TableEntry>> = catalog
                .tables(&db)
                .into_iter()
                .filter(|t| t.def.view.is_some())
                .collect();
            views.sort_by_key(|v| v.def.id);
            for view in views {
                let kind = match view.def.view.as_ref().and_then(|v| v.sink.as_ref()) {
                    Some(_) => "sink",
                    None => "materialized view",
                };
                let base = JobOverview {
                    id: view.def.id,
                    database: db.clone(),
                    name: view.def.name.clone(),
                    kind,
                    status: "failed",
                    error: None,
                    restarts: 0,
                    job: None,
                    progress: None,
                };
                match running.get(&view.def.id) {
                    Some((job, restarts)) => {
                        let progress = self
                            .catch_up(view.def.id)
                            .and_then(|c| c.borrow().progress());
                        let stats = job.stats();
                        let failure = job.failure();
                        let retrying = stats.source_error.clone().or(stats.sink_error.clone());
                        let status = match (&failure, &retrying) {
                            (Some(_), _) => "failed",
                            (None, Some(_)) => "retrying",
                            (None, None) => "running",
                        };
                        out.push(JobOverview {
                            status,
                            error: failure.or(retrying),
                            restarts: *restarts,
                            job: Some((Arc::clone(job), stats)),
                            progress,
                            ..base
                        });
                    }
                    None if suspended(&view.def).is_some() => out.push(JobOverview {
                        status: "suspended",
                        ..base
                    }),
                    None => {
                        if let Some(error) = refused.get(&view.def.id) {
                            out.push(JobOverview {
                                error: Some(error.clone()),
                                ..base
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// Whether every job has recovered: committed an epoch since it (re)started, or failed for
    /// good. `/ready` answers with it.
    pub fn recovered(&self) -> bool {
        self.running.lock().values().all(|r| {
            r.job.failure().is_some()
                || r.job
                    .metrics()
                    .epochs
                    .load(std::sync::atomic::Ordering::Relaxed)
                    > 0
        })
    }

    /// Stops every job at a synced checkpoint (see [`Job::stop`]), all at once, waiting at most
    /// `bound`: a graceful shutdown, after which a restart replays nothing that was committed.
    /// Jobs still running after `bound` (a sink waiting for its broker, say) are dropped; they
    /// restart from their last committed epoch. Returns the names of those.
    pub async fn shutdown(&self, bound: std::time::Duration) -> Vec<String> {
        let jobs: Vec<Arc<Job>> = self
            .running
            .lock()
            .values()
            .map(|r| Arc::clone(&r.job))
            .collect();
        let stops = jobs.iter().map(|job| async move {
            match tokio::time::timeout(bound, job.stop()).await {
                Ok(Ok(epoch)) => {
                    let positions = job.positions();
                    tracing::info!(
                        job = job.name(),
                        epoch,
                        ?positions,
                        "job stopped at a checkpoint"
                    );
                    None
                }
                // A job that had failed has nothing more to commit.
                Ok(Err(error)) => {
                    tracing::info!(job = job.name(), %error, "failed job stopped");
                    None
                }
                Err(_) => Some(job.name().to_string()),
            }
        });
        let late: Vec<String> = futures::future::join_all(stops)
            .await
            .into_iter()
            .flatten()
            .collect();
        self.running.lock().clear();
        late
    }

    /// Gives view `def.id` the definition `def` (new settings of its job, such as its
    /// parallelism) and restarts its job with it: the running job stops at a synced checkpoint,
    /// and the new one starts from it, so nothing is lost or counted twice. Other jobs run on.
    pub async fn rescale(
        &self,
        shared: &Arc<Shared>,
        def: rivulet_planner::catalog::TableDef,
    ) -> Result<(), SqlError> {
        let id = def.id;
        let _one_at_a_time = self.rescaling.lock().await;
        *self.rescaled.lock() = Some(id);
        let result = self.replace_job(shared, def).await;
        *self.rescaled.lock() = None;
        result
    }

    /// The part of [`Jobs::rescale`] done under its lock.
    async fn replace_job(
        &self,
        shared: &Arc<Shared>,
        def: rivulet_planner::catalog::TableDef,
    ) -> Result<(), SqlError> {
        let id = def.id;
        // The ALTER read the definition before the lock: take only its parallelism into the
        // definition as it is now (a suspend or resume may have changed it meanwhile).
        let def = {
            let Some(current) = shared.catalog.table(&def.database, &def.name) else {
                return Err(SqlError::new(
                    crate::error::sqlstate::UNDEFINED_TABLE,
                    format!("materialized view \"{}\" does not exist", def.name),
                ));
            };
            let mut now = current.def.clone();
            let wanted = def.view.as_ref().and_then(|v| v.settings.get(PARALLELISM));
            if let Some(view) = now.view.as_mut() {
                match wanted {
                    Some(p) => view.settings.insert(PARALLELISM.into(), p.clone()),
                    None => view.settings.remove(PARALLELISM),
                };
            }
            now
        };
        if def.id != id {
            return Err(SqlError::new(
                crate::error::sqlstate::UNDEFINED_TABLE,
                format!("materialized view \"{}\" was dropped meanwhile", def.name),
            ));
        }
        if self.suspended.lock().contains(&id) {
            // Takes effect when it is resumed.
            shared.catalog.replace_definition(def)?;
            return Ok(());
        }
        let running = self.running.lock().get(&id).map(|r| Arc::clone(&r.job));
        if let Some(job) = running {
            // A job that had failed has nothing more to commit; it restarts below like one
            // that stopped.
            if let Err(error) = job.stop().await {
                tracing::info!(job = job.name(), %error, "failed job stopped for a restart");
            }
        }
        let entry = shared.catalog.replace_definition(def)?;
        self.refused.lock().remove(&id);
        if let Err(e) = self.start(shared, &entry).await {
            // Shown as failed, with why, as a view that could not start with the server.
            self.running.lock().remove(&id);
            self.refused.lock().insert(id, e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// Stops the job of view (or sink) `id` before it is dropped: once this returns, the job
    /// writes nothing more ([`Job::halt`]), so the keys the drop deletes stay deleted.
    pub fn stop(&self, id: u64) {
        let running = self.running.lock().remove(&id);
        self.refused.lock().remove(&id);
        self.suspended.lock().remove(&id);
        if let Some(running) = running {
            // A commit under way takes milliseconds (a Kafka sink's, up to its timeouts):
            // waited for off this worker's other tasks.
            match tokio::runtime::Handle::try_current() {
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(|| running.job.halt());
                }
                _ => running.job.halt(),
            }
        }
    }

    /// The running (or failed) job of view `id`.
    pub fn job(&self, id: u64) -> Option<Arc<Job>> {
        self.running.lock().get(&id).map(|r| Arc::clone(&r.job))
    }

    /// Held while a job is stopped and replaced or suspended: one such change at a time.
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.rescaling.lock().await
    }

    /// Stops view `id`'s job at a synced checkpoint and keeps it stopped (call under
    /// [`Jobs::exclusive`]); its state is then what the checkpoint holds. Returns the
    /// stopped job, `None` if it was not running.
    pub async fn suspend(&self, id: u64) -> Option<Arc<Job>> {
        let job = self.job(id)?;
        // Before the stop: a FLUSH that sees the job stop then knows why.
        self.suspended.lock().insert(id);
        if let Err(error) = job.stop().await {
            tracing::info!(job = job.name(), %error, "failed job stopped for a suspend");
        }
        self.running.lock().remove(&id);
        Some(job)
    }

    /// Starts suspended view `entry`'s job again (call under [`Jobs::exclusive`]), from its
    /// checkpoint.
    pub async fn resume(&self, shared: &Arc<Shared>, entry: &TableEntry) -> Result<(), SqlError> {
        self.suspended.lock().remove(&entry.def.id);
        self.refused.lock().remove(&entry.def.id);
        if let Err(e) = self.start(shared, entry).await {
            self.refused.lock().insert(entry.def.id, e.to_string());
            return Err(e);
        }
        Ok(())
    }

    /// The views whose jobs read relation `id`.
    pub fn readers_of(&self, id: u64) -> Vec<u64> {
        self.running
            .lock()
            .iter()
            .filter(|(_, r)| r.job.sources().iter().any(|s| s.id() == id))
            .map(|(view, _)| *view)
            .collect()
    }

    /// Waits until views `ids`, and the views they read, reflect every change committed before
    /// the call (upstream views first, as FLUSH does).
    pub async fn flush_views(&self, ids: &[u64]) -> Result<(), SqlError> {
        let jobs: Vec<(u64, Arc<Job>)> = {
            let running = self.running.lock();
            let mut wanted: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
            let mut next: Vec<u64> = ids.to_vec();
            while let Some(id) = next.pop() {
                if !wanted.insert(id) {
                    continue;
                }
                if let Some(r) = running.get(&id) {
                    next.extend(r.job.sources().iter().map(|s| s.id()));
                }
            }
            wanted
                .iter()
                .filter_map(|id| running.get(id).map(|r| (*id, Arc::clone(&r.job))))
                .collect()
        };
        for (id, mut job) in jobs {
            while let Err(e) = flush_one(&job).await {
                match self.replacement(id, &job).await {
                    Some(next) => job = next,
                    // Suspended meanwhile: it has committed all it will until resumed.
                    None if self.suspended.lock().contains(&id) => break,
                    None => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// The job that replaces `job`, view `id`'s, when it stopped (not failed) for a rescale: the
    /// new one reads on from where it stopped. `None` when it failed, or was stopped for good
    /// (dropped, the server shutting down).
    async fn replacement(&self, id: u64, job: &Arc<Job>) -> Option<Arc<Job>> {
        if job.failure().is_some() {
            return None;
        }
        self.successor(id, |r| {
            (!Arc::ptr_eq(&r.job, job)).then(|| Arc::clone(&r.job))
        })
        .await
    }
}

/// How often, and how many times at most, a FLUSH or a CREATE whose job stopped for a rescale
/// looks for the job that replaces it (a minute in all).
const RESCALE_POLL: std::time::Duration = std::time::Duration::from_millis(20);
const RESCALE_POLLS: usize = 3000;

/// How long a FLUSH waits for one job before it says so in the log (and goes on waiting).
const SLOW_FLUSH: std::time::Duration = std::time::Duration::from_secs(20);

/// Waits until `job` reflects every change committed before the call; logs the job's name when
/// that takes long, so that a FLUSH that seems to hang says what it waits for.
async fn flush_one(job: &Job) -> Result<(), SqlError> {
    let flushed = job.flush();
    tokio::pin!(flushed);
    let result = tokio::select! {
        r = &mut flushed => r,
        () = tokio::time::sleep(SLOW_FLUSH) => {
            tracing::warn!(
                job = job.name(),
                waited = ?SLOW_FLUSH,
                "FLUSH still waits for this job to commit the changes before it"
            );
            flushed.await
        }
    };
    result.map_err(|e| {
        use crate::error::sqlstate;
        // A value past its type's range is the user's data: Postgres' 22003, as the same query
        // ad hoc gets. Any other failure leaves the view not ready.
        if job.overflowed() {
            SqlError::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, e)
                .with_hint("NUMERIC holds up to 38 digits here.")
        } else {
            SqlError::new(sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE, e)
        }
    })
}

impl Jobs {
    /// The ids of the materialized views (and sinks) of `database`: what a session's FLUSH waits
    /// for. A view reads only its own database's relations, so another database's jobs (a Kafka
    /// sink waiting for its broker) never hold up this database's FLUSH.
    pub fn views_of(shared_catalog: &crate::catalog::Catalog, database: &str) -> Vec<u64> {
        shared_catalog
            .tables(database)
            .iter()
            .filter(|t| t.def.view.is_some())
            .map(|t| t.def.id)
            .collect()
    }
}

/// The setting that lets late rows still update a window for a while after it closed (Flink's
/// name), in emit-on-update views.
pub const ALLOWED_LATENESS: &str = "table.exec.emit.allow-lateness";

/// Flink's state TTL for aggregates without windows (see `HashAggregate::with_state_ttl`),
/// stored with the view at CREATE.
pub const STATE_TTL: &str = "table.exec.state.ttl";

/// The state TTL `settings` ask for (`None`: state is kept; `0` too, as in Flink).
pub fn state_ttl(
    settings: &BTreeMap<String, String>,
) -> Result<Option<std::time::Duration>, SqlError> {
    match settings.get(STATE_TTL) {
        None => Ok(None),
        Some(v) => rivulet_planner::ddl::parse_duration(v)
            .map(|d| (!d.is_zero()).then_some(d))
            .ok_or_else(|| {
                SqlError::new(
                    crate::error::sqlstate::INVALID_PARAMETER_VALUE,
                    format!("invalid value for parameter \"{STATE_TTL}\": \"{v}\""),
                )
                .with_hint("Expected a duration such as '1 h'.")
            }),
    }
}

/// The allowed lateness `settings` ask for, in microseconds (0 when not set).
pub fn allowed_lateness(settings: &BTreeMap<String, String>) -> Result<i64, SqlError> {
    match settings.get(ALLOWED_LATENESS) {
        None => Ok(0),
        Some(v) => rivulet_planner::ddl::parse_duration(v)
            .map(|d| d.as_micros() as i64)
            .ok_or_else(|| {
                SqlError::new(
                    crate::error::sqlstate::INVALID_PARAMETER_VALUE,
                    format!("invalid value for parameter \"{ALLOWED_LATENESS}\": \"{v}\""),
                )
                .with_hint("Expected a duration such as '1 min'.")
            }),
    }
}

/// `ctx` planning in the time zone a view's `settings` store (UTC for views created before
/// zones were stored), whatever the planning session's own.
fn in_zone(
    ctx: &SessionContext,
    settings: &BTreeMap<String, String>,
) -> Result<SessionContext, SqlError> {
    let zone = match settings.get(TIME_ZONE) {
        Some(setting) => crate::pg::time_zone::setting(setting)?.zone,
        None => "UTC".to_string(),
    };
    let mut state = ctx.state();
    crate::pg::time_zone::configure(state.config_mut().options_mut(), &zone);
    Ok(SessionContext::new_with_state(state))
}

/// Plans a view's query text into a job graph as the view's stored settings say (parallelism
/// of keyed stages, allowed lateness) and with its emit mode.
pub async fn plan_stream(
    session: &mut Session,
    query: &str,
    settings: &BTreeMap<String, String>,
    emit_on_window_close: bool,
    sink: bool,
    scales: bool,
) -> Result<StreamPlan, SqlError> {
    let parallelism = parallelism(settings, session.shared.jobs.defaults().parallelism)?;
    let allowed_lateness = allowed_lateness(settings)?;
    let state_ttl = state_ttl(settings)?;
    let parsed = parse_sql(query)?;
    let [parsed] = parsed.as_slice() else {
        return Err(SqlError::internal("a view's query is not one statement"));
    };
    let Statement::Sql { stmt, .. } = &parsed.statement else {
        return Err(SqlError::internal("a view's query is not a query"));
    };
    let catalog: Arc<Catalog> = Arc::clone(session.catalog());
    let database = session.database.clone();
    let ctx = in_zone(session.context()?, settings)?;
    let temporal = rivulet_planner::temporal::tables(stmt)?;
    let plan = crate::pg::jsonb::in_views(plan_continuous(&ctx, stmt).await?)?;
    // A view stores its numerics' display scales where it was created with them.
    let plan = if scales {
        crate::pg::dscale::attach_view(plan)
    } else {
        plan
    };
    let state = ctx.state();
    let resolve = |name: &TableReference| -> Option<Resolved> {
        let t = catalog.table(&database, name.table())?;
        // A counted view's rows are not unique: it is read like a table without a key.
        let counted = t.def.view.as_ref().is_some_and(|v| v.counted);
        let keyed = !counted && (t.def.view.is_some() || !t.def.primary_key.is_empty());
        let key = keyed.then(|| t.def.primary_key.clone());
        // A table without a WATERMARK but with a PROCTIME() column has processing time: its
        // watermark is that column, and follows the wall clock when no rows come.
        let proctime = t
            .def
            .computed
            .iter()
            .find(|c| c.expr.replace(' ', "").to_lowercase() == format!("{PROCTIME}()"));
        let (watermark, idle_timeout, processing_time) = match (&t.def.watermark, proctime) {
            (None, Some(p)) => (
                t.def.columns.get(p.column).map(|c| WatermarkDef {
                    column: p.column,
                    expr: format!("\"{}\"", c.name.replace('"', "\"\"")),
                }),
                Some(PROCTIME_IDLE),
                true,
            ),
            (w, _) => (
                w.clone(),
                t.def
                    .options
                    .get(rivulet_planner::ddl::IDLE_TIMEOUT)
                    .and_then(|v| rivulet_planner::ddl::parse_duration(v)),
                false,
            ),
        };
        Some(Resolved {
            store: Arc::clone(&t.store),
            key,
            watermark,
            idle_timeout,
            processing_time,
            external: crate::sources::external(&t.def),
            append_only: t.def.append_only
                || (t.def.options.contains_key("connector")
                    && !crate::sources::is_changelog(&t.def))
                || t.def.view.as_ref().is_some_and(|v| v.emit_on_window_close),
        })
    };
    let stream = StreamContext {
        state: &state,
        parallelism,
        emit_on_window_close,
        allowed_lateness,
        state_ttl,
        sink,
        resolve: &resolve,
        temporal: &temporal,
    };
    Ok(plan_view(&stream, plan)?)
}
