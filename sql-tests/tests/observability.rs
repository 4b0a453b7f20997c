//! Observability against the real binary: `/metrics` scraped while jobs run and parsed by
//! prometheus-client's OpenMetrics parser (Python, installed by scripts/deps-compat), `/health`
//! and `/ready`, and the `rivulet_*` system tables agreeing with `/metrics` and with what was
//! inserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use rivulet_sql_tests::{TestServer, http_get, text_rows};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The Python of scripts/deps-compat's venv, if installed.
fn python() -> Option<PathBuf> {
    let dir = std::env::var("RIVULET_COMPAT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/rivulet-compat")
        });
    let python = dir.join("venv/bin/python");
    python.exists().then_some(python)
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("observability")
        .join(name)
}

/// One scrape: samples by name, each with its labels and value.
struct Scrape {
    families: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    async fn take(python: &PathBuf, port: u16) -> Scrape {
        let out = tokio::process::Command::new(python)
            .arg(script("scrape.py"))
            .arg(format!("http://127.0.0.1:{port}/metrics"))
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "the OpenMetrics parser refused /metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let families = v["families"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, t)| (k.clone(), t.as_str().unwrap().to_string()))
            .collect();
        let samples = v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = s[1]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (
                    s[0].as_str().unwrap().to_string(),
                    labels,
                    s[2].as_f64().unwrap(),
                )
            })
            .collect();
        Scrape { families, samples }
    }

    /// The sum of sample `name`'s values whose labels include every pair of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.2).sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a (String, BTreeMap<String, String>, f64)> {
        self.samples.iter().filter(move |(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
    }

    fn count(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.matching(name, labels).count()
    }
}

/// Every family the issue asks for, as the parser names them (counters without `_total`).
const FAMILIES: &[&str] = &[
    "rivulet_job_up",
    "rivulet_job_uptime_seconds",
    "rivulet_job_restarts",
    "rivulet_job_records_in",
    "rivulet_job_records_out",
    "rivulet_job_epochs",
    "rivulet_job_last_epoch_duration_seconds",
    "rivulet_job_checkpoints",
    "rivulet_job_checkpoint_failures",
    "rivulet_job_last_checkpoint_duration_seconds",
    "rivulet_job_last_checkpoint_size_bytes",
    "rivulet_job_last_checkpoint_alignment_seconds",
    "rivulet_job_last_checkpoint_timestamp_seconds",
    "rivulet_job_state_bytes",
    "rivulet_job_late_rows",
    "rivulet_job_dead_letters",
    "rivulet_sink_records",
    "rivulet_operator_records_in",
    "rivulet_operator_records_out",
    "rivulet_operator_current_input_watermark_seconds",
    "rivulet_operator_current_output_watermark_seconds",
    "rivulet_operator_watermark_lag_seconds",
    "rivulet_operator_state_bytes",
    "rivulet_operator_state_cache_hits",
    "rivulet_operator_state_cache_misses",
    "rivulet_state_table_bytes",
    "rivulet_state_table_memory_bytes",
    "rivulet_state_table_cache_hits",
    "rivulet_state_table_cache_misses",
    "rivulet_task_busy_seconds",
    "rivulet_task_idle_seconds",
    "rivulet_task_backpressured_seconds",
    "rivulet_source_records_in",
    "rivulet_source_watermark_seconds",
    "rivulet_source_watermark_lag_seconds",
    "rivulet_kafka_partition_lag",
    "rivulet_pgwire_sessions",
    "rivulet_pgwire_query_duration_seconds",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_system_tables_follow_running_jobs() {
    let Some(python) = python() else {
        eprintln!("the compat venv is missing; scripts/deps-compat installs it");
        return;
    };
    let server = TestServer::start_with_flags(&["--checkpoint-frequency", "2"])
        .await
        .unwrap();
    let http = server.http_port.expect("the HTTP endpoint is on");
    assert_eq!(http_get(http, "/health").await, (200, "ok\n".into()));
    assert_eq!(http_get(http, "/ready").await.0, 200);
    let client = server.connect("dev").await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE gen (id BIGINT, user_id INT, ts TIMESTAMP, \
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ( \
               'connector' = 'datagen', 'rows-per-second' = '500', \
               'fields.user_id.min' = '1', 'fields.user_id.max' = '5', 'fields.ts.max-past' = '0 s'); \
             CREATE MATERIALIZED VIEW per_user AS SELECT user_id, count(*) AS n FROM gen GROUP BY user_id; \
             CREATE TABLE t (k INT, v INT); \
             CREATE MATERIALIZED VIEW sums AS SELECT k, sum(v) AS s FROM t GROUP BY k; \
             CREATE SINK drain FROM t WITH (connector = 'blackhole'); \
             CREATE MATERIALIZED VIEW \"q\"\"uote\\\" AS SELECT count(*) AS n FROM t; \
             CREATE TABLE names (k INT PRIMARY KEY, name TEXT); \
             CREATE MATERIALIZED VIEW named AS \
               SELECT t.k, names.name, t.v FROM t JOIN names ON t.k = names.k;",
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO t SELECT x % 7, x FROM generate_series(1, 1000) AS g(x); \
             INSERT INTO t VALUES (1, 1), (2, 2), (3, 3); \
             INSERT INTO names SELECT x, 'n' || x FROM generate_series(0, 6) AS g(x); FLUSH;",
        )
        .await
        .unwrap();
    let first = Scrape::take(&python, http).await;
    for family in FAMILIES {
        assert!(first.families.contains_key(*family), "{family} missing");
    }
    let sums = [("job", "sums")];
    assert_eq!(first.sum("rivulet_job_records_in_total", &sums), 1003.0);
    assert_eq!(first.sum("rivulet_source_records_in_total", &sums), 1003.0);
    // The aggregate's instances together saw every row; the view got one row per key.
    let agg = [("job", "sums"), ("operator", "0:HashAggregate")];
    assert_eq!(first.sum("rivulet_operator_records_in_total", &agg), 1003.0);
    assert_eq!(
        first.sum("rivulet_sink_records_total", &[("job", "drain")]),
        1003.0
    );
    assert_eq!(first.sum("rivulet_job_up", &[]), 5.0);
    // The aggregate's one state table (id 1, table 0) read a group per row, all from memory.
    let table = [("job", "sums"), ("state_table", "1.0")];
    assert_eq!(
        first.sum("rivulet_state_table_cache_hits_total", &table),
        1003.0
    );
    assert_eq!(
        first.sum("rivulet_state_table_cache_misses_total", &table),
        0.0
    );
    assert!(first.sum("rivulet_state_table_bytes", &table) > 0.0);
    // A name with a quote and a backslash survives the exposition's escaping.
    assert_eq!(
        first.sum("rivulet_job_records_in_total", &[("job", "q\"uote\\")]),
        1003.0
    );
    assert!(first.sum("rivulet_pgwire_sessions", &[]) >= 1.0);
    assert!(first.sum("rivulet_pgwire_query_duration_seconds_count", &[]) >= 2.0);
    assert!(first.sum("process_resident_memory_bytes", &[]) > 1e6);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = Scrape::take(&python, http).await;
    let per_user = [("job", "per_user")];
    let grew = |name: &str| second.sum(name, &per_user) > first.sum(name, &per_user);
    assert!(grew("rivulet_job_records_in_total"), "records in");
    assert!(grew("rivulet_job_checkpoints_total"), "checkpoints");
    assert!(
        grew("process_cpu_seconds_total") || second.sum("process_cpu_seconds_total", &[]) > 0.0
    );
    // A live generator with a 1 s watermark delay: event time is about a second behind.
    let lag = second.sum("rivulet_source_watermark_lag_seconds", &per_user);
    assert!((0.5..10.0).contains(&lag), "watermark lag {lag}");
    assert_eq!(
        second.count("rivulet_operator_watermark_lag_seconds", &per_user),
        second.count(
            "rivulet_operator_records_in_total",
            &[("job", "per_user"), ("stage", "1")]
        )
    );
    assert!(second.sum("rivulet_job_last_checkpoint_timestamp_seconds", &per_user) > 1.7e9);

    // The system tables say the same.
    let jobs = text_rows(
        &client,
        "SELECT job_name, kind, status, records_in, restarts FROM rivulet_jobs ORDER BY job_name",
    )
    .await
    .unwrap();
    assert_eq!(jobs.len(), 5, "{jobs:?}");
    assert_eq!(jobs[0], "drain|sink|running|1003|0");
    assert_eq!(jobs[1], "named|materialized view|running|1010|0");
    assert!(
        jobs[2].starts_with("per_user|materialized view|running|"),
        "{jobs:?}"
    );
    assert_eq!(jobs[3], "q\"uote\\|materialized view|running|1003|0");
    assert_eq!(jobs[4], "sums|materialized view|running|1003|0");
    // Per state table: the aggregate's one table, and the join's two sides, each of which
    // stored its rows and was read for the other side's.
    let tables = text_rows(
        &client,
        "SELECT job_name, state_table_id, tag, operator, stored_bytes > 0, \
           memory_bytes > 0, cache_hits + cache_misses > 0, cache_hit_rate \
         FROM rivulet_state_tables WHERE job_name IN ('sums', 'named') \
         ORDER BY job_name, state_table_id, tag",
    )
    .await
    .unwrap();
    // The join view has no key: an aggregate after the join counts its rows.
    let (joined, aggregated) = tables.split_at(2);
    assert_eq!(
        aggregated,
        [
            "named|2|0|HashAggregate|t|t|t|1",
            "sums|1|0|HashAggregate|t|t|t|1"
        ],
        "{tables:?}"
    );
    for (side, tag) in joined.iter().zip(["l", "r"]) {
        let prefix = format!("named|1|{tag}|HashJoin|t|t|t|");
        assert!(side.starts_with(&prefix), "{tables:?}");
        let rate: f64 = side.rsplit('|').next().unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&rate), "{tables:?}");
    }
    let ops = text_rows(
        &client,
        "SELECT sum(records_in), count(*) FROM rivulet_operators \
         WHERE job_name = 'sums' AND operator = 'HashAggregate'",
    )
    .await
    .unwrap();
    let instances = first.count("rivulet_operator_records_in_total", &agg);
    assert_eq!(ops, [format!("1003|{instances}")]);
    let sources = text_rows(
        &client,
        "SELECT table_name, records_in, watermark IS NOT NULL FROM rivulet_sources \
         WHERE job_name IN ('sums', 'per_user') ORDER BY job_name",
    )
    .await
    .unwrap();
    assert_eq!(sources[1], "t|1003|f", "{sources:?}");
    assert!(
        sources[0].starts_with("gen|") && sources[0].ends_with("|t"),
        "{sources:?}"
    );
    let checkpoints = text_rows(
        &client,
        "SELECT count(*) > 0, bool_and(duration_ms >= 0), max(size_bytes) > 0 \
         FROM rivulet_checkpoints WHERE job_name = 'per_user' AND checkpoint",
    )
    .await
    .unwrap();
    assert_eq!(checkpoints, ["t|t|t"]);
    let sinks = text_rows(
        &client,
        "SELECT sink_name, connector, status, records FROM rivulet_sinks",
    )
    .await
    .unwrap();
    assert_eq!(sinks, ["drain|blackhole|running|1003"]);
}

#[tokio::test]
async fn non_loopback_http_needs_a_password() {
    let stderr = rivulet_sql_tests::refused_start(
        &[
            "--http-listen",
            "0.0.0.0:0",
            "--data-dir",
            "/nonexistent/never",
        ],
        &[],
    )
    .await;
    assert!(
        stderr.contains("refusing to serve HTTP on 0.0.0.0:0 without credentials"),
        "{stderr}"
    );
}

#[tokio::test]
async fn with_a_password_metrics_ask_for_basic_auth_and_probes_do_not() {
    let server = TestServer::start_with_flags(&["--password", "secret"])
        .await
        .unwrap();
    let http = server.http_port.unwrap();
    assert_eq!(http_get(http, "/metrics").await.0, 401);
    assert_eq!(http_get(http, "/health").await.0, 200);
    assert_eq!(http_get(http, "/ready").await.0, 200);
    let mut stream = TcpStream::connect(("127.0.0.1", http)).await.unwrap();
    // root:secret
    let request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                   Authorization: Basic cm9vdDpzZWNyZXQ=\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("rivulet_pgwire_sessions"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_headless_chromium_lists_jobs_draws_graphs_and_moves() {
    let Some(python) = python() else {
        eprintln!("the compat venv is missing; scripts/deps-compat installs it");
        return;
    };
    if std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("chromium missing; scripts/deps-compat installs it");
        return;
    }
    let server = TestServer::start().await.unwrap();
    let http = server.http_port.unwrap();
    let client = server.connect("dev").await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE gen (id BIGINT, user_id INT, ts TIMESTAMP, \
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) WITH ( \
               'connector' = 'datagen', 'rows-per-second' = '300', \
               'fields.user_id.min' = '1', 'fields.user_id.max' = '5', 'fields.ts.max-past' = '0 s'); \
             CREATE MATERIALIZED VIEW per_user AS SELECT user_id, count(*) AS n FROM gen GROUP BY user_id;",
        )
        .await
        .unwrap();
    let (status, page) = http_get(http, "/").await;
    assert_eq!(status, 200);
    assert!(page.contains("/assets/app.js"), "{page}");
    for outside in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!page.contains(outside), "no CDN: {page}");
    }
    let shot = std::env::temp_dir().join(format!("rivulet-dashboard-{}.png", std::process::id()));
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(&python)
            .arg(script("dashboard.py"))
            .arg(format!("http://127.0.0.1:{http}/"))
            .arg(&shot)
            .output(),
    )
    .await
    .expect("the browser run within 90 s")
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["errors"],
        serde_json::json!([]),
        "console errors: {seen}"
    );
    let first = &seen["first"];
    assert_eq!(first["jobs"][0][0], "per_user", "{seen}");
    assert_eq!(first["jobs"][0][2], "running", "{seen}");
    // Every operator of the job is drawn, with its stages and the exchange between them.
    let ops = text_rows(
        &client,
        "SELECT DISTINCT operator FROM rivulet_operators WHERE job_name = 'per_user' ORDER BY 1",
    )
    .await
    .unwrap();
    let mut drawn: Vec<String> = first["operators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    drawn.sort();
    drawn.dedup();
    assert_eq!(drawn, ops, "{seen}");
    assert!(first["stages"].as_u64().unwrap() >= 2, "{seen}");
    assert!(first["edges"].as_u64().unwrap() >= 1, "{seen}");
    // The generator keeps going: the epoch and the rate move between the two looks.
    let second = &seen["second"];
    let epoch = |v: &Value| v["jobs"][0][4].as_str().unwrap().parse::<u64>().unwrap();
    assert!(epoch(second) > epoch(first), "{seen}");
    let rate: f64 = second["jobs"][0][5]
        .as_str()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(rate > 50.0, "records in per second: {seen}");
    assert!(second["epochs"].as_u64().unwrap() > 0, "{seen}");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    eprintln!("dashboard screenshot: {}", shot.display());
}
