//! The `rivulet` server: a streaming SQL server that speaks the Postgres wire protocol.
//!
//! Start-up opens the state store (RocksDB), loads the catalog, and accepts Postgres connections;
//! each connection gets its own pgwire handlers and session (see `wire`). See ARCHITECTURE.md.

/// Trust and SCRAM authentication.
mod auth;
/// Databases and tables, persisted in the state store.
mod catalog;
/// `COPY ... FROM STDIN`.
mod copy;
/// Errors as clients see them (SQLSTATE mapping).
mod error;
/// Running statements.
mod exec;
/// Extra SQL functions clients expect.
mod functions;
/// The streaming jobs of materialized views.
mod jobs;
/// Rivulet's catalog as DataFusion catalogs and tables.
mod provider;
/// Per-connection session state.
mod session;
/// Postgres text input for columns.
mod text;
/// Postgres text output where arrow-pg prints differently.
mod text_out;
/// The pgwire front end.
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use jobs::{Jobs, RestartPolicy};
use pgwire::api::{ConnectionManager, RandomPidSecretKeyGenerator};
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
    /// Address to listen on for Postgres clients. A non-loopback address requires --password.
    #[arg(long, env = "RIVULET_LISTEN", default_value = "127.0.0.1:4566")]
    listen: SocketAddr,
    /// Directory of the state store (catalog, tables, change logs).
    #[arg(long, env = "RIVULET_DATA_DIR", default_value = "./rivulet-data")]
    data_dir: PathBuf,
    /// Log filter, e.g. `info` or `rivulet=debug`.
    #[arg(long, env = "RIVULET_LOG", default_value = "info")]
    log: String,
    /// User name clients log in as when a password is set.
    #[arg(long, env = "RIVULET_USER", default_value = "root")]
    user: String,
    /// Password (SCRAM-SHA-256) for --user; without it, any user may connect, from loopback only.
    #[arg(long, env = "RIVULET_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// How often a failed materialized view job is restarted from its last checkpoint before it
    /// stays failed (Flink's `restart-strategy.fixed-delay.attempts`).
    #[arg(long, env = "RIVULET_RESTART_ATTEMPTS", default_value_t = 3)]
    restart_attempts: u32,
    /// Milliseconds between those restarts (Flink's `restart-strategy.fixed-delay.delay`).
    #[arg(long, env = "RIVULET_RESTART_DELAY_MS", default_value_t = 1000)]
    restart_delay_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    // A panic ends only its task (one connection, say); log it as the broken invariant it is, in
    // one line, instead of a backtrace on stderr.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panic");
    }));
    if !args.listen.ip().is_loopback() && args.password.is_none() {
        bail!(
            "refusing to listen on {} without credentials: set --password (or RIVULET_PASSWORD) to require \
             SCRAM-SHA-256 authentication, or listen on a loopback address",
            args.listen
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rivulet")
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    let store = StateStore::open(&args.data_dir)
        .with_context(|| format!("cannot open the state store in {}", args.data_dir.display()))?;
    let catalog =
        Catalog::load(store).map_err(|e| anyhow::anyhow!("cannot load the catalog: {e}"))?;
    let shared = Arc::new(Shared {
        catalog: Arc::new(catalog),
        jobs: Jobs::new(RestartPolicy {
            attempts: args.restart_attempts,
            delay: std::time::Duration::from_millis(args.restart_delay_ms),
        }),
    });
    shared
        .jobs
        .start_all(&shared)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the materialized views: {e}"))?;
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
                let handlers = Arc::new(Connection::new(Arc::clone(&frontend)));
                spawn_named(format!("conn-{peer}"), async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                })
                .detach();
            }
            _ = &mut shutdown => {
                tracing::info!("shutting down");
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
