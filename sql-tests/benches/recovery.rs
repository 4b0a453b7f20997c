//! Recovery time after kill -9 with about 1 GB of operator state, against the release binary.
//!
//! Loads a table with COPY, creates a view whose aggregate keeps large state (MIN and MAX of
//! 100-byte strings keep every value, so that a retraction can fall back to the next one), waits
//! for its backfill, reads the state size from `SHOW JOBS`, kills the server with SIGKILL,
//! restarts it on the same data directory and measures the time until it accepts connections and
//! until `FLUSH` returns (every operator instance has restored its key groups and caught up). Then
//! checks the view against its own query.
//!
//! Run with `scripts/bench recovery` (builds the release server and sets `RIVULET_BIN`).
//! `RIVULET_RECOVERY_ROWS` sets the row count (default 4,400,000: two rows per group).
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use bytes::Bytes;
use futures::SinkExt;
use rivulet_sql_tests::TestServer;

fn text(i: usize) -> String {
    // 100 bytes, unique per row, not sorted like `i`.
    let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{h:016x}-{i:012}-{}", "x".repeat(100 - 16 - 1 - 12 - 1))
}

fn du(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let meta = match e.metadata() {
                Ok(m) => m,
                Err(_) => continue,
            };
            total += if meta.is_dir() {
                du(&e.path())
            } else {
                meta.len()
            };
        }
    }
    total
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("recovery benchmark: run it with `scripts/bench recovery`");
        return;
    }
    let rows: usize = std::env::var("RIVULET_RECOVERY_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_400_000);
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute("CREATE TABLE big (k BIGINT, s VARCHAR)")
        .await
        .unwrap();
    let t0 = Instant::now();
    let sink = c
        .copy_in("COPY big FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    let chunk = 10_000;
    for start in (0..rows).step_by(chunk) {
        let mut buf = String::with_capacity(chunk * 120);
        for i in start..(start + chunk).min(rows) {
            buf.push_str(&format!("{},{}\n", i / 2, text(i)));
        }
        sink.send(Bytes::from(buf)).await.unwrap();
    }
    sink.finish().await.unwrap();
    println!(
        "loaded {rows} rows with COPY in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let t0 = Instant::now();
    c.batch_execute(
        "CREATE MATERIALIZED VIEW big_v AS \
           SELECT k, count(*) AS n, min(s) AS low, max(s) AS high FROM big GROUP BY k; FLUSH",
    )
    .await
    .unwrap();
    let backfill = t0.elapsed();
    let jobs = c.simple_query("SHOW JOBS").await.unwrap();
    let state_bytes: u64 = jobs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get("State bytes")?.parse().ok(),
            _ => None,
        })
        .unwrap();
    println!(
        "backfill of the view ({} groups): {:.1} s, {:.0} rows/s; operator state {:.2} GB \
         (SHOW JOBS); data dir {:.2} GB on disk",
        rows / 2,
        backfill.as_secs_f64(),
        rows as f64 / backfill.as_secs_f64(),
        state_bytes as f64 / 1e9,
        du(dir.path()) as f64 / 1e9
    );
    // A change after the last checkpoint, so that recovery also replays something.
    c.batch_execute("INSERT INTO big VALUES (-1, 'after')")
        .await
        .unwrap();
    drop(c);
    server.kill9().await.unwrap();

    let t0 = Instant::now();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let listening = t0.elapsed();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute("FLUSH").await.unwrap();
    let caught_up = t0.elapsed();
    let cpu = server.cpu_time().unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM big_v", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, rows / 2 + 1);
    let wrong: i64 = c
        .query_one(
            "SELECT count(*) FROM (SELECT k, count(*), min(s), max(s) FROM big GROUP BY k \
             EXCEPT SELECT * FROM big_v) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wrong, 0, "the view differs from its query after recovery");
    println!(
        "recovery after kill -9 with {:.2} GB of operator state: accepting connections after \
         {:.2} s; view restored and caught up (FLUSH returned) after {:.2} s; server CPU {:.1} s",
        state_bytes as f64 / 1e9,
        listening.as_secs_f64(),
        caught_up.as_secs_f64(),
        cpu.as_secs_f64()
    );
    server.kill9().await.unwrap();
}
