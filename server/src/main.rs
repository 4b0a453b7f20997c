//! The `rivulet` server: a streaming SQL server that speaks the Postgres wire protocol.
//!
//! Start-up opens the state store (RocksDB), loads the catalog, and accepts Postgres connections;
//! each connection gets its own pgwire handlers and session (see `wire`). See ARCHITECTURE.md.

/// mimalloc: batches are allocated on one thread and freed on another (clients', jobs' and
/// blocking threads), which glibc's malloc answered with constant `madvise` calls and page faults
/// (a projection job spent up to 40% of its CPU in the kernel).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Trust and SCRAM authentication.
mod auth;
/// Databases and tables, persisted in the state store.
mod catalog;
/// `COPY ... FROM STDIN`.
mod copy;
/// The web dashboard's page and the JSON it polls.
mod dashboard;
/// Errors as clients see them (SQLSTATE mapping).
mod error;
/// Running statements.
mod exec;
/// Extra SQL functions clients expect.
mod functions;
/// The HTTP endpoint: `/metrics`, `/health`, `/ready`, the dashboard.
mod http;
/// Ending connections left idle inside a transaction block.
mod idle;
/// Stopping running statements: cancel requests, timeouts, clients gone.
mod interrupt;
/// The streaming jobs of materialized views.
mod jobs;
/// Prometheus metrics of the server and its jobs.
mod metrics;
/// Postgres compatibility for catalog queries: pg_catalog, functions, query rewrites.
mod pg;
/// Rivulet's catalog as DataFusion catalogs and tables.
mod provider;
/// DataFusion's shared runtime: the queries' memory pool and spill directory.
mod runtime;
/// Savepoints of jobs: their manifests, the ones this server wrote, the checks of a restore.
mod savepoints;
/// Sequence values: `nextval`, `currval`, `setval`; `serial` and identity columns draw from them.
mod sequence;
/// Per-connection session state.
mod session;
/// The sinks jobs end in: a view's rows, or a sink's connector.
mod sinks;
/// One client socket's message loop (pgwire's, with UTF-8 checked).
mod socket;
/// The source connectors of tables (datagen).
mod sources;
/// `SUBSCRIBE`: a relation's changes streamed to the client as they commit.
mod subscribe;
/// RisingWave's `CREATE SUBSCRIPTION` and subscription cursors: changes pulled with FETCH.
mod subscriptions;
/// The monitoring system tables (`rivulet_jobs`, `rivulet_operators`, ...).
mod system_tables;
/// Postgres text input for columns.
mod text;
/// Postgres text output where arrow-pg prints differently.
mod text_out;
/// Plain views, expanded into their queries before planning.
mod views;
/// The pgwire front end.
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use jobs::{JobDefaults, Jobs, RestartPolicy};
use pgwire::api::{ConnectionManager, RandomPidSecretKeyGenerator};
use rivulet_engine::job::JobConfig;
use rivulet_engine::state::StateStore;
use rivulet_engine::task::spawn_named;
use tokio::net::TcpListener;

use crate::catalog::Catalog;
use crate::session::Shared;
use crate::wire::{Connection, Frontend};

/// Command-line flags (each also settable by environment variable).
#[derive(Debug, Parser)]
#[command(
    name = "rivulet",
    version,
    about = "Rivulet: streaming SQL over the Postgres wire protocol"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on for Postgres clients. A non-loopback address requires --password.
    /// (`rivulet backup` connects to it.)
    #[arg(
        long,
        env = "RIVULET_LISTEN",
        default_value = "127.0.0.1:4566",
        global = true
    )]
    listen: SocketAddr,
    /// Directory of the state store (catalog, tables, change logs).
    #[arg(long, env = "RIVULET_DATA_DIR", default_value = "./rivulet-data")]
    data_dir: PathBuf,
    /// Log filter, e.g. `info` or `rivulet=debug`.
    #[arg(long, env = "RIVULET_LOG", default_value = "info")]
    log: String,
    /// User name clients log in as when a password is set.
    #[arg(long, env = "RIVULET_USER", default_value = "root", global = true)]
    user: String,
    /// Password (SCRAM-SHA-256) for --user; without it, any user may connect, from loopback only.
    #[arg(long, env = "RIVULET_PASSWORD", hide_env_values = true, global = true)]
    password: Option<String>,
    /// How a failed materialized view job is restarted from its last checkpoint: `fixed-delay`,
    /// `exponential-delay` or `none` (Flink's `restart-strategy.type`). A view created with the
    /// session setting `restart-strategy.type` (and the settings below, Flink's names) overrides it.
    #[arg(long, env = "RIVULET_RESTART_STRATEGY", default_value = "fixed-delay")]
    restart_strategy: String,
    /// Restarts before a failed job stays failed (`restart-strategy.fixed-delay.attempts`).
    #[arg(long, env = "RIVULET_RESTART_ATTEMPTS", default_value_t = 3)]
    restart_attempts: u32,
    /// Milliseconds between those restarts (`restart-strategy.fixed-delay.delay`); for
    /// `exponential-delay`, the first delay (`...exponential-delay.initial-backoff`), doubled at
    /// each restart up to one minute.
    #[arg(long, env = "RIVULET_RESTART_DELAY_MS", default_value_t = 1000)]
    restart_delay_ms: u64,
    /// Milliseconds between barriers: how stale a materialized view may get while its sources
    /// change (RisingWave's `barrier_interval_ms`).
    #[arg(long, env = "RIVULET_BARRIER_INTERVAL_MS", default_value_t = 100)]
    barrier_interval_ms: u64,
    /// Every this many barriers, a job's commit is synced to disk (RisingWave's
    /// `checkpoint_frequency`); the others survive a crash of the process, not of the machine.
    #[arg(long, env = "RIVULET_CHECKPOINT_FREQUENCY", default_value_t = 10)]
    checkpoint_frequency: u64,
    /// Parallel instances of each keyed stage of a new job (aggregations); 0 means the number of
    /// cores. A session overrides it with `SET streaming_parallelism = n` before CREATE.
    #[arg(long, env = "RIVULET_STREAMING_PARALLELISM", default_value_t = 0)]
    streaming_parallelism: usize,
    /// Memory all running ad-hoc queries may hold together: bytes, a size (`512MB`, `2GiB`) or a
    /// share of the machine's memory (`25%`). Sorts, aggregations and joins spill to
    /// `<data dir>/tmp` before a query fails with `53200` (out of memory).
    #[arg(long, env = "RIVULET_QUERY_MEMORY", default_value = "25%")]
    query_memory: String,
    /// Default `statement_timeout` of every session, in Postgres' syntax (`30s`, `5min`, `1500`
    /// milliseconds); 0 means none. A session overrides it with SET.
    #[arg(long, env = "RIVULET_STATEMENT_TIMEOUT", default_value = "0")]
    statement_timeout: String,
    /// Default `idle_in_transaction_session_timeout`: a session idle this long inside a
    /// transaction block is ended; 0 means never. A session overrides it with SET.
    #[arg(
        long,
        env = "RIVULET_IDLE_IN_TRANSACTION_SESSION_TIMEOUT",
        default_value = "0"
    )]
    idle_in_transaction_session_timeout: String,
    /// A cap, in MiB, on the clean state each stateful operator instance caches (a join's
    /// rows, say), below the shared `--state-memory`; 0: none, every read goes to RocksDB.
    /// Without it, only the shared limit bounds an instance.
    #[arg(long, env = "RIVULET_STATE_CACHE_MB")]
    state_cache_mb: Option<usize>,
    /// Memory the state caches of all running jobs may hold together: bytes, a size (`4GB`) or
    /// a share of the machine's memory (`25%`). Over it, every operator's cache shrinks in
    /// proportion to its size; state beyond the caches stays in RocksDB.
    #[arg(long, env = "RIVULET_STATE_MEMORY", default_value = "25%")]
    state_memory: String,
    /// Rows a new view's backfill reads from a table per snapshot chunk; between chunks it
    /// checkpoints and takes in the table's changes made meanwhile.
    #[arg(long, env = "RIVULET_BACKFILL_CHUNK_ROWS", default_value_t = 8192)]
    backfill_chunk_rows: usize,
    /// Address of the HTTP endpoint: `/metrics` (Prometheus), `/health`, `/ready` and the
    /// dashboard at `/`; `off` for none. A non-loopback address requires --password (then asked
    /// for with HTTP basic authentication, except by `/health` and `/ready`).
    #[arg(long, env = "RIVULET_HTTP_LISTEN", default_value = "127.0.0.1:9250")]
    http_listen: String,
    /// `off` stops jobs from recording their per-operator, per-task and per-source figures
    /// (rows, watermarks, busy and backpressured time): `rivulet_operators`, `rivulet_sources`
    /// and their `/metrics` stay at zero. For measuring what recording costs; `on` by default.
    #[arg(long, env = "RIVULET_METRICS", default_value = "on", value_parser = ["on", "off"])]
    metrics: String,
    /// On SIGTERM or Ctrl-C, how long the jobs may take to reach a last checkpoint before the
    /// server exits anyway, in milliseconds (a job still running then, waiting for a broker say,
    /// replays its open epoch at the next start).
    #[arg(long, env = "RIVULET_SHUTDOWN_TIMEOUT_MS", default_value_t = 30_000)]
    shutdown_timeout_ms: u64,
}

/// What `rivulet` does besides serving (the default).
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Writes a consistent copy of a running server's whole store into a new directory on the
    /// server's machine (RocksDB's checkpoint: hard links where it is on the same file system);
    /// a server started with `--data-dir` on it has everything as of that instant. Connects to
    /// the server at --listen as --user, like a client.
    Backup {
        /// The directory to create (on the server's machine).
        #[arg(long)]
        to: PathBuf,
    },
}

/// `rivulet backup --to DIR`: asks the server at `args.listen` for `BACKUP TO 'DIR'`.
async fn backup(args: &Args, to: &std::path::Path) -> anyhow::Result<()> {
    let dir = std::path::absolute(to)
        .with_context(|| format!("invalid backup directory {}", to.display()))?;
    let text = dir
        .to_str()
        .with_context(|| format!("backup directory {} is not UTF-8", dir.display()))?;
    // A server listening on every address is reached on loopback.
    let ip = match args.listen.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host(ip.to_string())
        .port(args.listen.port())
        .user(&args.user)
        .dbname(catalog::DEFAULT_DATABASE)
        .application_name("rivulet backup");
    if let Some(password) = &args.password {
        config.password(password);
    }
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| {
            format!(
                "cannot connect to the server at {ip}:{}",
                args.listen.port()
            )
        })?;
    let _connection = spawn_named("backup-connection", connection);
    let sql = format!("BACKUP TO '{}'", text.replace('\'', "''"));
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => anyhow::anyhow!("{}: {}", db.code().code(), db.message()),
            None => anyhow::anyhow!("{e}"),
        })?;
    println!("backup written to {}", dir.display());
    Ok(())
}

/// The HTTP endpoint's address, `None` when turned off.
fn http_address(args: &Args) -> anyhow::Result<Option<SocketAddr>> {
    if args.http_listen.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let addr: SocketAddr = args.http_listen.parse().with_context(|| {
        format!(
            "invalid --http-listen {:?}: expected host:port or off",
            args.http_listen
        )
    })?;
    if !addr.ip().is_loopback() && args.password.is_none() {
        bail!(
            "refusing to serve HTTP on {addr} without credentials: set --password (or \
             RIVULET_PASSWORD) to require basic authentication, or listen on a loopback address"
        );
    }
    Ok(Some(addr))
}

/// The session settings the flags set, checked as SET checks them.
fn server_settings(args: &Args) -> anyhow::Result<Vec<(String, String)>> {
    [
        ("statement_timeout", &args.statement_timeout),
        (
            "idle_in_transaction_session_timeout",
            &args.idle_in_transaction_session_timeout,
        ),
    ]
    .into_iter()
    .map(|(name, value)| {
        crate::exec::checked_setting(name, value.clone())
            .map(|v| (name.to_string(), v))
            .map_err(|e| anyhow::anyhow!("--{}: {}", name.replace('_', "-"), e.message))
    })
    .collect()
}

/// The job defaults the flags ask for.
fn job_defaults(args: &Args) -> anyhow::Result<JobDefaults> {
    let delay = std::time::Duration::from_millis(args.restart_delay_ms);
    let restart = match args.restart_strategy.as_str() {
        "fixed-delay" => RestartPolicy::FixedDelay {
            attempts: args.restart_attempts,
            delay,
        },
        "exponential-delay" => RestartPolicy::ExponentialDelay {
            initial: delay,
            max: std::time::Duration::from_secs(60).max(delay),
            multiplier: 2.0,
            attempts: Some(args.restart_attempts),
        },
        "none" => RestartPolicy::None,
        other => bail!(
            "unknown --restart-strategy {other:?}: expected fixed-delay, exponential-delay or none"
        ),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parallelism = match args.streaming_parallelism {
        0 => cores,
        n => n,
    }
    .min(usize::from(rivulet_engine::keygroup::KEY_GROUPS));
    Ok(JobDefaults {
        config: JobConfig {
            barrier_interval: std::time::Duration::from_millis(args.barrier_interval_ms.max(1)),
            checkpoint_frequency: args.checkpoint_frequency.max(1),
            // Without a cap of its own, an instance's cache is bounded by the shared limit.
            state_cache_bytes: (args.state_cache_mb)
                .map_or(usize::MAX, |mb| mb.saturating_mul(1 << 20)),
            backfill_chunk_rows: args.backfill_chunk_rows.max(1),
            ..JobConfig::default()
        },
        parallelism,
        restart,
    })
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // An empty password (`RIVULET_PASSWORD=` from an unset template, say) is no password: it must
    // not open a non-loopback address.
    if args.password.as_deref().is_some_and(str::is_empty) {
        args.password = None;
    }
    rivulet_engine::job::metrics::set_recording(args.metrics == "on");
    if let Some(Command::Backup { to }) = &args.command {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        if let Err(e) = runtime.block_on(backup(&args, to)) {
            eprintln!("rivulet backup: {e:#}");
            std::process::exit(1);
        }
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in log files or a pod's log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A panic ends only its task (one connection, say); log it as the broken invariant it is, in
    // one line, with a backtrace only when RUST_BACKTRACE asks for one.
    std::panic::set_hook(Box::new(|info| {
        metrics::PANICS.inc();
        let trace = std::backtrace::Backtrace::capture();
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(panic = %info, backtrace = %trace, "panic");
        } else {
            tracing::error!(panic = %info, "panic");
        }
    }));
    metrics::mark_start();
    http_address(&args)?;
    if !args.listen.ip().is_loopback() && args.password.is_none() {
        bail!(
            "refusing to listen on {} without credentials: set --password (or RIVULET_PASSWORD) to require \
             SCRAM-SHA-256 authentication, or listen on a loopback address",
            args.listen
        );
    }
    limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rivulet")
        .build()?;
    // Jobs run on their own worker threads: a job busy with a large batch does not hold up
    // clients' statements (the OS shares the cores between the two pools).
    let jobs = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rivulet-job")
        .build()?;
    rivulet_engine::task::set_job_runtime(jobs.handle().clone());
    let served = runtime.block_on(serve(args));
    // Jobs stop (and let go of the store) before the process exits.
    jobs.shutdown_timeout(std::time::Duration::from_secs(10));
    served
}

/// Gives glibc's malloc, which RocksDB and librdkafka still use, one arena per core instead of
/// eight: with the clients', the jobs' and the blocking threads, many arenas made it return pages
/// to the kernel and fault them back in all the time (the tumble view over 10M bids: 1.17-1.26M
/// events per CPU-second with glibc's default, 1.39-1.55M with this).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(cores).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other thread
    // exists.
    let set = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
    if set != 1 {
        eprintln!("could not limit malloc arenas");
    }
}

/// Other C allocators need no limit.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

async fn serve(args: Args) -> anyhow::Result<()> {
    pg::functions::mark_start();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    let store = StateStore::open(&args.data_dir)
        .with_context(|| format!("cannot open the state store in {}", args.data_dir.display()))?;
    let catalog =
        Catalog::load(store).map_err(|e| anyhow::anyhow!("cannot load the catalog: {e}"))?;
    session::set_server_defaults(server_settings(&args)?);
    let query_memory = runtime::parse_memory("--query-memory", &args.query_memory)?;
    let state_memory = runtime::parse_memory("--state-memory", &args.state_memory)?;
    rivulet_engine::state::memory::shared()
        .set_limit(usize::try_from(state_memory).unwrap_or(usize::MAX));
    let runtime = runtime::build(&args.data_dir, query_memory)?;
    let savepoints = savepoints::Savepoints::load(&catalog)
        .map_err(|e| anyhow::anyhow!("cannot load the savepoints: {e}"))?;
    let shared = Arc::new(Shared {
        savepoints,
        catalog: Arc::new(catalog),
        jobs: Jobs::new(job_defaults(&args)?),
        sources: Default::default(),
        runtime,
    });
    // Up before the jobs recover, so that `/health` answers and `/ready` says not yet.
    let http = match http_address(&args)? {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve HTTP on {addr}"))?;
            let state = Arc::new(http::HttpState {
                shared: Arc::downgrade(&shared),
                registry: metrics::registry(Arc::downgrade(&shared)),
                started: std::sync::atomic::AtomicBool::new(false),
                basic: args
                    .password
                    .as_deref()
                    .map(|p| http::basic_credentials(&args.user, p)),
            });
            let local = listener.local_addr()?;
            let task = spawn_named("http", http::serve(listener, Arc::clone(&state)));
            Some((state, task, local))
        }
        None => None,
    };
    for db in shared.catalog.databases() {
        for table in shared.catalog.tables(&db) {
            if table.def.view.is_none() {
                shared
                    .sources
                    .start(shared.catalog.store(), &table)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot start the source of {}: {e}", table.def.name)
                    })?;
            }
        }
    }
    shared
        .jobs
        .start_all(&shared)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the materialized views: {e}"))?;
    // Only once every job is listed: until then, a log's readers are not all known.
    let _trimmer = spawn_named("trim", jobs::trim::run(Arc::clone(&shared)));
    let frontend = Arc::new(Frontend {
        shared: Arc::clone(&shared),
        connections: Arc::new(ConnectionManager::new()),
        pids: RandomPidSecretKeyGenerator::default(),
        parameters: Arc::new(Frontend::parameters()),
        scram: args
            .password
            .as_deref()
            .map(|p| Arc::new(auth::Credentials::new(&args.user, p))),
    });
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    // Tests and scripts wait for this line (and read the port from it when --listen used port 0).
    println!(
        "rivulet listening on {local} (data dir {})",
        args.data_dir.display()
    );
    if let Some((state, _, addr)) = &http {
        state
            .started
            .store(true, std::sync::atomic::Ordering::Release);
        // The second line: tests read the HTTP port from it.
        println!("rivulet http on {addr}");
        tracing::info!(%addr, "http endpoint started");
    }
    tracing::info!(%local, data_dir = %args.data_dir.display(), "server started");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let watch = interrupt::ClientWatch::new(&socket);
                let handlers = Arc::new(Connection::new(Arc::clone(&frontend), watch));
                let session = metrics::SessionGuard::new();
                spawn_named(format!("conn-{peer}"), async move {
                    let _session = session;
                    if let Err(e) = socket::serve(socket, handlers).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                })
                .detach();
            }
            _ = &mut shutdown => {
                // No new clients; every job ends at a synced checkpoint, so the next start
                // replays nothing committed.
                drop(listener);
                let bound = std::time::Duration::from_millis(args.shutdown_timeout_ms);
                tracing::info!(?bound, "shutting down: stopping jobs at a checkpoint");
                let late = shared.jobs.shutdown(bound).await;
                if !late.is_empty() {
                    tracing::warn!(
                        jobs = ?late,
                        "jobs did not reach a checkpoint in time; they replay their open epoch at the next start"
                    );
                }
                tracing::info!("shut down");
                return Ok(());
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
