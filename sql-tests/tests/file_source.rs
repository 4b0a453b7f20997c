//! The filesystem source: JSON (Flink's spelling) and CSV (RisingWave's `posix_fs`) files read by
//! the jobs themselves, exactly once across kill -9 in the middle of a backfill, and bounded: the
//! end of the files closes every window.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::time::{Duration, Instant};

use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};

const ROWS: i64 = 400_000;
/// Milliseconds since the epoch of 2026-01-01 00:00:00.
const BASE_MS: i64 = 1_767_225_600_000;

/// Rows in of job `name`, from SHOW JOBS.
async fn rows_in(c: &tokio_postgres::Client, name: &str) -> u64 {
    for m in c.simple_query("SHOW JOBS").await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m
            && r.get("Name") == Some(name)
        {
            return r.get("Rows in").and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    0
}

#[tokio::test]
async fn file_tables_are_read_exactly_once_across_kill_9() {
    let files = tempfile::tempdir().unwrap();
    let (mut json, mut csv) = (
        std::io::BufWriter::new(std::fs::File::create(files.path().join("a.jsonl")).unwrap()),
        std::io::BufWriter::new(std::fs::File::create(files.path().join("b.csv")).unwrap()),
    );
    for id in 1..=ROWS {
        // Out of order by up to 3 s, one row per millisecond.
        let ts = BASE_MS + id - (id * 7919) % 3000;
        writeln!(
            json,
            "{{\"id\":{id},\"k\":{},\"v\":{},\"ms\":{ts},\"note\":\"n{id}\"}}",
            id % 7,
            id % 100
        )
        .unwrap();
        writeln!(csv, "{id},{},{}", id % 5, id % 10).unwrap();
    }
    // Two malformed lines: kept as dead letters, the rest is read.
    writeln!(json, "{{\"id\": 1, \"k\": ").unwrap();
    writeln!(
        json,
        "{{\"id\": \"not a number\", \"k\": 1, \"v\": 1, \"ms\": 0}}"
    )
    .unwrap();
    json.flush().unwrap();
    csv.flush().unwrap();
    drop((json, csv));

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    // CREATE returns at once, so that the kill below comes part way through the file.
    c.batch_execute(&format!(
        "SET background_ddl = true; \
         CREATE TABLE j (id BIGINT, k INT, v INT, ms BIGINT, note STRING, \
           ts AS TO_TIMESTAMP_LTZ(ms, 3), WATERMARK FOR ts AS ts - INTERVAL '3' SECOND) \
         WITH ('connector' = 'filesystem', 'path' = 'file://{0}/a.jsonl', 'format' = 'json'); \
         CREATE TABLE c (id BIGINT, k INT, v INT) \
         WITH (connector = 'posix_fs', posix_fs.root = '{0}', match_pattern = '*.csv') \
         FORMAT PLAIN ENCODE CSV; \
         CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n, sum(id) AS ids, sum(v) AS vs FROM j GROUP BY k; \
         CREATE MATERIALIZED VIEW per_second AS \
           SELECT window_start, count(*) AS n FROM TUMBLE(j, ts, INTERVAL '1' SECOND) \
           GROUP BY window_start EMIT ON WINDOW CLOSE; \
         CREATE MATERIALIZED VIEW csv_k AS SELECT k, count(*) AS n, sum(id) AS ids FROM c GROUP BY k",
        files.path().display()
    ))
    .await
    .unwrap();
    // Kill while the JSON view is part way through its file.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = rows_in(&c, "per_k").await;
        if n > 0 {
            assert!(
                n < ROWS as u64,
                "the view read the whole file before the kill"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the view read nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9().await.unwrap();

    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute("FLUSH").await.unwrap();
    let expected: Vec<String> = (0..7)
        .map(|k| {
            let ids: Vec<i64> = (1..=ROWS).filter(|id| id % 7 == k).collect();
            let vs: i64 = ids.iter().map(|id| id % 100).sum();
            format!("{k}|{}|{}|{vs}", ids.len(), ids.iter().sum::<i64>())
        })
        .collect();
    assert_eq!(
        sorted_rows(&c, "SELECT * FROM per_k").await.unwrap(),
        expected
    );
    let csv: Vec<String> = (0..5)
        .map(|k| {
            let ids: Vec<i64> = (1..=ROWS).filter(|id| id % 5 == k).collect();
            format!("{k}|{}|{}", ids.len(), ids.iter().sum::<i64>())
        })
        .collect();
    assert_eq!(sorted_rows(&c, "SELECT * FROM csv_k").await.unwrap(), csv);
    // Bounded input: every window closed at the end of the file, each row counted once (none
    // was late: the file is at most 3 s out of order, the watermark's delay).
    let windows = text_rows(&c, "SELECT count(*), sum(n) FROM per_second")
        .await
        .unwrap();
    assert_eq!(windows, vec![format!("{}|{ROWS}", 403)]);
    let late = text_rows(&c, "SELECT count(*) FROM rivulet_late_rows")
        .await
        .unwrap();
    assert_eq!(late, vec!["0".to_string()]);
    // Each job that read the JSON file kept its two bad lines (none lost, none twice after the
    // kill), with their byte offsets.
    let dead = sorted_rows(
        &c,
        "SELECT job_name, table_name, count(*), count(DISTINCT position) FROM rivulet_dead_letters \
         GROUP BY job_name, table_name",
    )
    .await
    .unwrap();
    assert_eq!(dead, vec!["per_k|j|2|2", "per_second|j|2|2"]);
    // Ad-hoc queries read the files (the oracle for the views over them).
    assert_eq!(
        sorted_rows(&c, "SELECT k, count(*), sum(id), sum(v) FROM j GROUP BY k")
            .await
            .unwrap(),
        expected
    );
    let differ = sorted_rows(
        &c,
        "SELECT date_bin(INTERVAL '1' SECOND, ts, TIMESTAMPTZ '1970-01-01 00:00:00+00') AS w, \
           count(*) FROM j GROUP BY w EXCEPT SELECT * FROM per_second",
    )
    .await
    .unwrap();
    assert_eq!(differ, Vec::<String>::new());
    server.kill9().await.unwrap();
}
