//! State that outgrows its cache: a join feeding an aggregate whose state is far larger than the
//! server's state cache (`--state-cache-mb 1`, against about 60 MB of state) gives the right
//! answer, keeps it under changes that reach state long evicted, and restarts after kill -9 about
//! as fast as a server with almost no state, since nothing is read at restart. The same holds
//! for a windowed aggregate with many open windows: they close after the restart, read back
//! when the watermark reaches them.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use rivulet_sql_tests::TestServer;
use tokio_postgres::Client;

const FLAGS: &[&str] = &["--state-cache-mb", "1"];

/// `a`: `rows` rows of 100-byte text over `rows / 5` keys; `b`: one row per key.
async fn load(c: &Client, rows: usize) {
    c.batch_execute(
        "CREATE TABLE a (id BIGINT PRIMARY KEY, k BIGINT, pad VARCHAR); \
         CREATE TABLE b (k BIGINT PRIMARY KEY, x BIGINT)",
    )
    .await
    .unwrap();
    let copy = |table: &'static str, lines: Vec<String>| async move {
        let sink = c
            .copy_in(&format!("COPY {table} FROM STDIN WITH (FORMAT csv)"))
            .await
            .unwrap();
        futures::pin_mut!(sink);
        for chunk in lines.chunks(5_000) {
            sink.send(Bytes::from(chunk.concat())).await.unwrap();
        }
        sink.finish().await.unwrap();
    };
    let keys = rows / 5;
    let a = (0..rows)
        .map(|i| {
            let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            format!("{i},{},{h:016x}-{}\n", i % keys, "p".repeat(83))
        })
        .collect();
    copy("a", a).await;
    copy("b", (0..keys).map(|k| format!("{k},{}\n", k * 3)).collect()).await;
}

const VIEW: &str = "SELECT a.k, count(*) AS n, sum(b.x) AS s, min(a.pad) AS lo, max(a.pad) AS hi \
                    FROM a JOIN b ON a.k = b.k GROUP BY a.k";

/// Rows where the view and its query differ.
async fn differences(c: &Client) -> i64 {
    c.batch_execute("FLUSH").await.unwrap();
    let sql = format!(
        "SELECT count(*) FROM ((SELECT * FROM v EXCEPT ALL ({VIEW})) \
         UNION ALL (({VIEW}) EXCEPT ALL SELECT * FROM v)) d"
    );
    c.query_one(&sql, &[]).await.unwrap().get(0)
}

/// Kills the server, starts it again on `dir` and returns it with the time until `FLUSH`
/// returned (every job restored and caught up).
async fn restart(server: TestServer, dir: &Path) -> (TestServer, Duration) {
    server.kill9().await.unwrap();
    let t0 = Instant::now();
    let server = TestServer::start_with(dir, FLAGS).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute("FLUSH").await.unwrap();
    (server, t0.elapsed())
}

/// A server with the view over `rows` rows, in `dir`.
async fn with_view(dir: &Path, rows: usize) -> (TestServer, Client) {
    let server = TestServer::start_with(dir, FLAGS).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    load(&c, rows).await;
    c.batch_execute(&format!("CREATE MATERIALIZED VIEW v AS {VIEW}"))
        .await
        .unwrap();
    (server, c)
}

#[tokio::test]
async fn a_join_and_aggregate_with_state_60_times_the_cache_are_right_and_restart_fast() {
    let small_dir = tempfile::tempdir().unwrap();
    let (small, c) = with_view(small_dir.path(), 500).await;
    assert_eq!(differences(&c).await, 0);
    drop(c);
    let (small, small_restart) = restart(small, small_dir.path()).await;
    small.kill9().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (server, c) = with_view(dir.path(), 240_000).await;
    assert_eq!(differences(&c).await, 0, "after the backfill");
    // The join's sides and the aggregate's groups, in the store: far beyond the 1 MB cache.
    let state: i64 = c
        .query_one(
            "SELECT sum(stored_bytes)::bigint FROM rivulet_state_tables WHERE job_name = 'v'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(state > 30 << 20, "state of {state} bytes");
    drop(c);

    let (server, large_restart) = restart(server, dir.path()).await;
    let c = server.connect("dev").await.unwrap();
    // Changes that reach rows and groups of every key, none of them in memory after the restart.
    c.batch_execute(
        "DELETE FROM a WHERE id % 7 = 0; UPDATE b SET x = x + 1 WHERE k % 3 = 0; \
         UPDATE a SET pad = 'changed' WHERE id % 11 = 0; DELETE FROM b WHERE k % 13 = 0",
    )
    .await
    .unwrap();
    assert_eq!(differences(&c).await, 0, "after changes past the restart");
    let misses: i64 = c
        .query_one(
            "SELECT sum(cache_misses)::bigint FROM rivulet_state_tables WHERE job_name = 'v'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        misses > 1_000,
        "state was read back from RocksDB: {misses} misses"
    );
    drop(c);
    server.kill9().await.unwrap();
    eprintln!(
        "{:.1} MB of state, 1 MB cache: restart {large_restart:?} (with almost no state \
         {small_restart:?}); {misses} reads from RocksDB after it",
        state as f64 / 1e6
    );
    // Nothing is read at restart: the time does not grow with the state (a margin for a busy
    // machine).
    assert!(
        large_restart < small_restart * 3 + Duration::from_secs(3),
        "restart with state took {large_restart:?}, without {small_restart:?}"
    );
}

/// `w`: `rows` rows over `rows / 4` keys, one event a second from 2026-01-01, in a table whose
/// watermark trails its event time by a day (every window stays open), and a view of 1-minute
/// windows per key.
async fn with_windows(dir: &Path, rows: usize) -> (TestServer, Client) {
    let server = TestServer::start_with(dir, FLAGS).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE w (k BIGINT, ts TIMESTAMP, pad VARCHAR, \
           WATERMARK FOR ts AS ts - INTERVAL '1' DAY)",
    )
    .await
    .unwrap();
    let sink = c
        .copy_in("COPY w FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    let keys = (rows / 4).max(1);
    let lines: Vec<String> = (0..rows)
        .map(|i| {
            let (h, m, s) = (i / 3600, i / 60 % 60, i % 60);
            format!(
                "{},2026-01-01 {h:02}:{m:02}:{s:02},{}\n",
                i % keys,
                "p".repeat(60)
            )
        })
        .collect();
    for chunk in lines.chunks(5_000) {
        sink.send(Bytes::from(chunk.concat())).await.unwrap();
    }
    sink.finish().await.unwrap();
    c.batch_execute(&format!("CREATE MATERIALIZED VIEW wv AS {WINDOWED}"))
        .await
        .unwrap();
    (server, c)
}

const WINDOWED: &str = "SELECT k, window_start, window_end, count(*) AS n, max(pad) AS hi \
                        FROM TUMBLE(w, ts, INTERVAL '1' MINUTE) \
                        GROUP BY k, window_start, window_end";

/// Rows where the windowed view and its query differ.
async fn window_differences(c: &Client) -> i64 {
    c.batch_execute("FLUSH").await.unwrap();
    let sql = format!(
        "SELECT count(*) FROM ((SELECT * FROM wv EXCEPT ALL ({WINDOWED})) \
         UNION ALL (({WINDOWED}) EXCEPT ALL SELECT * FROM wv)) d"
    );
    c.query_one(&sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn many_open_windows_restart_fast_and_still_close() {
    let small_dir = tempfile::tempdir().unwrap();
    let (small, c) = with_windows(small_dir.path(), 400).await;
    assert_eq!(window_differences(&c).await, 0);
    drop(c);
    let (small, small_restart) = restart(small, small_dir.path()).await;
    small.kill9().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (server, c) = with_windows(dir.path(), 40_000).await;
    assert_eq!(window_differences(&c).await, 0, "after the backfill");
    drop(c);
    let (server, large_restart) = restart(server, dir.path()).await;
    let c = server.connect("dev").await.unwrap();
    // A row two days on moves the watermark past every window: all of them close (each read
    // back as its timer fires), and the view still equals its query.
    c.batch_execute("INSERT INTO w VALUES (1, '2026-01-03 12:00:00', 'late')")
        .await
        .unwrap();
    assert_eq!(window_differences(&c).await, 0, "after the windows closed");
    let misses: i64 = c
        .query_one(
            "SELECT sum(cache_misses)::bigint FROM rivulet_state_tables WHERE job_name = 'wv'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    drop(c);
    server.kill9().await.unwrap();
    eprintln!(
        "windows: restart {large_restart:?} (with almost no state {small_restart:?}); \
         {misses} reads from RocksDB after it"
    );
    assert!(
        misses > 1_000,
        "closed windows were read back: {misses} misses"
    );
    assert!(
        large_restart < small_restart * 3 + Duration::from_secs(3),
        "restart with state took {large_restart:?}, without {small_restart:?}"
    );
}
