//! Connection churn does not grow the server: hundreds of clients that each connect, run a few
//! queries (one of them a catalog query, which builds the session's `pg_catalog`) and disconnect
//! leave the server's resident memory, threads and open files where they were, alone and while
//! a view is being fed by other clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rivulet_sql_tests::TestServer;

/// Connections of the churn phase.
const CONNECTIONS: usize = 500;
/// How many of them are open at once.
const CONCURRENT: usize = 10;
/// Growth of resident memory that churn may leave behind: allocator caches and arenas, not
/// sessions (a session that stays alive costs megabytes, so 500 of them would be gigabytes).
const RSS_MARGIN: u64 = 32 * 1024 * 1024;

/// The statements each client runs: a plain query, a catalog query of the kind psql's `\d` sends,
/// and a read of the view.
const QUERIES: &[&str] = &[
    "SELECT 1",
    "SELECT c.relname, n.nspname FROM pg_catalog.pg_class c \
     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'm') ORDER BY 1",
    "SELECT k, n FROM per_key ORDER BY k",
];

/// Runs `clients` clients, `CONCURRENT` at a time; each connects, runs [`QUERIES`] and
/// disconnects. With `feed`, every client also inserts a row.
async fn churn(server: &TestServer, clients: usize, concurrent: usize, feed: bool) {
    let port = server.port;
    let mut done = 0;
    while done < clients {
        let wave = concurrent.min(clients - done);
        let clients = (0..wave).map(|i| {
            let n = done + i;
            async move {
                let conn = format!("host=127.0.0.1 port={port} user=root dbname=dev");
                let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                    .await
                    .expect("connects");
                // The connection ends when its client is dropped, after the queries.
                let work = async move {
                    for q in QUERIES {
                        client.simple_query(q).await.expect(q);
                    }
                    if feed {
                        let sql = format!("INSERT INTO t VALUES ({}, {n})", n % 7);
                        client.simple_query(&sql).await.expect("insert");
                    }
                };
                let (_, _) = futures::join!(connection, work);
            }
        });
        futures::future::join_all(clients).await;
        done += wave;
    }
}

/// Resident memory once the server has had a moment to finish what the last clients started.
async fn settled_rss(server: &TestServer) -> u64 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.rss_bytes().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_churn_keeps_memory_flat() {
    let server = TestServer::start().await.unwrap();
    let setup = server.connect("dev").await.unwrap();
    setup
        .batch_execute(
            "CREATE TABLE t (k INT, v INT);
             INSERT INTO t VALUES (1, 1), (2, 2);
             CREATE MATERIALIZED VIEW per_key AS SELECT k, count(*) AS n FROM t GROUP BY k;
             FLUSH;",
        )
        .await
        .unwrap();
    // Warm up, at the highest concurrency used below: lazily built statics, thread pools and the
    // allocator's arenas reach their working size (memory freed by 20 concurrent sessions stays
    // with the allocator for the next ones; it is not a leak, and it does not grow).
    churn(&server, 60, 20, true).await;
    let (rss0, threads0, fds0) = (
        settled_rss(&server).await,
        server.threads().unwrap(),
        server.open_fds().unwrap(),
    );

    let started = Instant::now();
    churn(&server, CONNECTIONS, CONCURRENT, false).await;
    let rss1 = settled_rss(&server).await;
    eprintln!(
        "{CONNECTIONS} connections in {:.1} s: RSS {} MiB -> {} MiB",
        started.elapsed().as_secs_f64(),
        rss0 >> 20,
        rss1 >> 20
    );
    assert!(
        rss1 < rss0 + RSS_MARGIN,
        "RSS grew from {} MiB to {} MiB over {CONNECTIONS} connections",
        rss0 >> 20,
        rss1 >> 20
    );

    // Twenty clients at a time while the view is fed, then the view is still right.
    churn(&server, 200, 20, true).await;
    setup.batch_execute("FLUSH").await.unwrap();
    let rss2 = settled_rss(&server).await;
    eprintln!("200 feeding clients, 20 at a time: RSS {} MiB", rss2 >> 20);
    assert!(
        rss2 < rss0 + RSS_MARGIN,
        "RSS grew from {} MiB to {} MiB with 20 concurrent feeding clients",
        rss0 >> 20,
        rss2 >> 20
    );
    let total = rivulet_sql_tests::text_rows(&setup, "SELECT sum(n) FROM per_key")
        .await
        .unwrap();
    assert_eq!(total, vec![(2 + 60 + 200).to_string()]);
    // Tokio's blocking pool keeps idle threads for a while, so the count may move a little; a
    // thread per connection would be hundreds.
    let threads = server.threads().unwrap();
    assert!(
        threads <= threads0 + 16,
        "threads grew from {threads0} to {threads}"
    );
    let fds = server.open_fds().unwrap();
    assert!(fds <= fds0 + 4, "open files grew from {fds0} to {fds}");
}
