//! The long soak: mixed clients against views fed by a generator, for `RIVULET_SOAK_SECS`
//! (default 1800), sampling the server's resident memory, open files and threads every
//! `RIVULET_SOAK_SAMPLE_SECS` (default 60). `scripts/bench soak`.
//!
//! Clients, all bounded by the deadline:
//! - psql, one process per query (`psql -c`), two at a time: a connection per query, as cron
//!   jobs and serverless functions do;
//! - four clients that connect, run a catalog query and a view query, and disconnect, in a loop;
//! - eight long-lived connections (a pool's), each running queries against the views and the
//!   table in a loop.
//!
//! A `datagen` table feeds an aggregate view and a join view all along. At the end it prints the
//! peaks of the middle and the last third of the run (the first is warm-up: RocksDB's memtables
//! fill); it fails when the last third's resident memory peak is more than 32 MiB over the
//! middle third's, or file descriptors or threads grew by more than a few, since a leak of a
//! session, a task or a socket shows as steady growth.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rivulet_sql_tests::TestServer;

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

const VIEW_QUERIES: &[&str] = &[
    "SELECT * FROM per_user ORDER BY n DESC LIMIT 5",
    "SELECT count(*) FROM joined",
    "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'm') ORDER BY 1",
];

async fn connect(port: u16) -> Option<tokio_postgres::Client> {
    let conn = format!("host=127.0.0.1 port={port} user=root dbname=dev");
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .ok()?;
    rivulet_sql_tests::drive(connection);
    Some(client)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    if std::env::var("RIVULET_BIN").is_err() {
        eprintln!("soak benchmark: run it with `scripts/bench soak`");
        return;
    }
    let duration = env_secs("RIVULET_SOAK_SECS", 1800);
    let every = env_secs("RIVULET_SOAK_SAMPLE_SECS", 60);
    let server = TestServer::start().await.unwrap();
    let port = server.port;
    let setup = connect(port).await.unwrap();
    setup
        .batch_execute(
            "CREATE TABLE clicks (user_id INT, url VARCHAR, ts TIMESTAMP) APPEND ONLY
               WITH (connector = 'datagen', datagen.rows.per.second = '2000',
                     fields.user_id.min = '1', fields.user_id.max = '500');
             CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR);
             CREATE MATERIALIZED VIEW per_user AS SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id;
             CREATE MATERIALIZED VIEW joined AS
               SELECT u.name, p.n FROM per_user p JOIN users u ON p.user_id = u.id;",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + duration;
    let queries = Arc::new(AtomicU64::new(0));
    let mut clients: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> =
        Vec::new();
    // psql, a process and a connection per query.
    for _ in 0..2 {
        let queries = Arc::clone(&queries);
        clients.push(Box::pin(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let sql = VIEW_QUERIES[(i % VIEW_QUERIES.len() as u64) as usize];
                let status = tokio::process::Command::new("psql")
                    .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "root"])
                    .args(["-d", "dev", "-X", "-q", "-c", sql])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
                if status.is_ok_and(|s| s.success()) {
                    queries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Connect, query, disconnect.
    for c in 0..4u64 {
        let queries = Arc::clone(&queries);
        clients.push(Box::pin(async move {
            let mut i = c;
            while Instant::now() < deadline {
                let Some(client) = connect(port).await else {
                    continue;
                };
                for q in VIEW_QUERIES {
                    if client.simple_query(q).await.is_ok() {
                        queries.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
                let upsert = format!(
                    "INSERT INTO users VALUES ({}, 'user {i}')",
                    1 + (i * 7919) % 500
                );
                let _ = client.simple_query(&upsert).await;
            }
        }));
    }
    // A pool's long-lived connections.
    for _ in 0..8 {
        let queries = Arc::clone(&queries);
        clients.push(Box::pin(async move {
            let client = connect(port).await.expect("pool connection");
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let q = VIEW_QUERIES[(i % VIEW_QUERIES.len() as u64) as usize];
                if client.simple_query(q).await.is_ok() {
                    queries.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let sampler = async {
        while Instant::now() < deadline {
            tokio::time::sleep(every.min(deadline.saturating_duration_since(Instant::now()))).await;
            let sample = (
                started.elapsed().as_secs(),
                server.rss_bytes().unwrap() >> 20,
                server.open_fds().unwrap(),
                server.threads().unwrap(),
                queries.load(Ordering::Relaxed),
            );
            println!(
                "t={:>5}s  rss={:>5} MiB  fds={:>4}  threads={:>3}  queries={}",
                sample.0, sample.1, sample.2, sample.3, sample.4
            );
            samples.push(sample);
        }
    };
    futures::join!(futures::future::join_all(clients), sampler);
    // RocksDB's memtables fill during the first minutes (the generator writes all along), so
    // the warm-up third is left out: a leak shows as the last third above the middle one.
    let third = (samples.len() / 3).max(1);
    let peak = |part: &[(u64, u64, usize, u64, u64)]| {
        (
            part.iter().map(|s| s.1).max().unwrap_or(0),
            part.iter().map(|s| s.2).max().unwrap_or(0),
            part.iter().map(|s| s.3).max().unwrap_or(0),
        )
    };
    let n = samples.len();
    let middle = peak(&samples[third.min(n)..(2 * third).min(n)]);
    let last = peak(&samples[(2 * third).min(n)..]);
    let queries = samples.last().map_or(0, |s| s.4);
    println!(
        "soak {} s, {queries} queries: peak rss {} -> {} MiB, fds {} -> {}, threads {} -> {} \
         (middle third -> last third)",
        duration.as_secs(),
        middle.0,
        last.0,
        middle.1,
        last.1,
        middle.2,
        last.2,
    );
    assert!(last.0 <= middle.0 + 32, "resident memory grew");
    assert!(last.1 <= middle.1 + 8, "open files grew");
    assert!(last.2 <= middle.2 + 16, "threads grew");
    server.kill9().await.unwrap();
}
