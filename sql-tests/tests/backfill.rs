//! CREATE MATERIALIZED VIEW returns once the view holds the result over the data present at
//! CREATE (both protocols), reports progress with NOTICEs while it waits, leaves no view behind
//! when cancelled or timed out, and returns at once under `SET background_ddl = true`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use rivulet_sql_tests::{TestServer, text_rows};
use tokio_postgres::{AsyncMessage, Client, NoTls};

const ROWS: i64 = 1_000_000;
const VIEW: &str = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k";
const TOTALS: &str = "SELECT count(*), sum(n), sum(s) FROM";
/// A view whose backfill does not end in the test's time: every row meets 100,000 others.
const ENDLESS: &str = "SELECT a.v AS x, b.v AS y FROM t a JOIN t b ON a.k = b.k";

/// A client whose NOTICEs arrive on the returned channel.
async fn connect_with_notices(
    server: &TestServer,
) -> (Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let conn_str = format!("host=127.0.0.1 port={} user=root dbname=dev", server.port);
    let (client, mut connection) = tokio_postgres::connect(&conn_str, NoTls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    #[allow(clippy::disallowed_methods)] // ends with the connection, which the client owns
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notice(notice) = message {
                let _ = tx.send(notice.message().to_string());
            }
        }
    });
    (client, rx)
}

async fn relation_exists(client: &Client, name: &str) -> bool {
    let rows = text_rows(
        client,
        &format!("SELECT count(*) FROM pg_class WHERE relname = '{name}'"),
    )
    .await
    .unwrap();
    rows != vec!["0".to_string()]
}

async fn job_names(client: &Client) -> Vec<String> {
    text_rows(
        client,
        "SELECT job_name FROM rivulet_jobs ORDER BY job_name",
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn create_waits_for_the_backfill_and_a_cancel_leaves_no_view() {
    let server = TestServer::start_with_flags(&["--streaming-parallelism", "2"])
        .await
        .unwrap();
    let (client, mut notices) = connect_with_notices(&server).await;
    client
        .batch_execute("CREATE TABLE t (k BIGINT, v BIGINT) APPEND ONLY")
        .await
        .unwrap();
    // Several statements, so the change log has several entries to read.
    for part in 0..4 {
        let (lo, hi) = (part * ROWS / 4 + 1, (part + 1) * ROWS / 4);
        client
            .batch_execute(&format!(
                "INSERT INTO t SELECT i % 10 AS k, i AS v FROM generate_series({lo}, {hi}) g(i)"
            ))
            .await
            .unwrap();
    }
    let oracle = text_rows(&client, &format!("{TOTALS} ({VIEW}) x"))
        .await
        .unwrap();
    assert_eq!(oracle, vec![format!("10|{ROWS}|{}", ROWS * (ROWS + 1) / 2)]);

    // The simple protocol, then the extended one: the first SELECT after CREATE sees it all.
    client
        .simple_query(&format!("CREATE MATERIALIZED VIEW simple_v AS {VIEW}"))
        .await
        .unwrap();
    let simple = text_rows(&client, &format!("{TOTALS} simple_v"))
        .await
        .unwrap();
    assert_eq!(simple, oracle);
    client
        .execute(
            &format!("CREATE MATERIALIZED VIEW extended_v AS {VIEW}"),
            &[],
        )
        .await
        .unwrap();
    let extended = text_rows(&client, &format!("{TOTALS} extended_v"))
        .await
        .unwrap();
    assert_eq!(extended, oracle);

    // background_ddl: CREATE returns while the job still backfills, which rivulet_jobs shows.
    client
        .batch_execute("SET background_ddl = true")
        .await
        .unwrap();
    let started = Instant::now();
    client
        .batch_execute(&format!("CREATE MATERIALIZED VIEW endless_bg AS {ENDLESS}"))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let progress = text_rows(
        &client,
        "SELECT progress FROM rivulet_jobs WHERE job_name = 'endless_bg'",
    )
    .await
    .unwrap();
    let progress: f64 = progress[0].parse().unwrap();
    assert!((0.0..1.0).contains(&progress), "progress {progress}");
    client
        .batch_execute("DROP MATERIALIZED VIEW endless_bg; SET background_ddl = false")
        .await
        .unwrap();
    assert!(
        client
            .batch_execute("SET background_ddl = maybe")
            .await
            .is_err()
    );

    // A CREATE that waits reports its progress, and a cancel drops the half-built view.
    while notices.try_recv().is_ok() {}
    let token = client.cancel_token();
    let sql = format!("CREATE MATERIALIZED VIEW endless AS {ENDLESS}");
    let create = client.batch_execute(&sql);
    let cancel = async {
        let notice = tokio::time::timeout(Duration::from_secs(60), notices.recv())
            .await
            .expect("a progress NOTICE within a minute")
            .unwrap();
        token.cancel_query(NoTls).await.unwrap();
        notice
    };
    let (created, notice) = tokio::join!(create, cancel);
    assert!(
        notice.contains("materialized view \"endless\": backfill") && notice.contains("rows read"),
        "{notice}"
    );
    let error = created.unwrap_err();
    let error = error.as_db_error().unwrap();
    assert_eq!(error.code().code(), "57014");
    assert!(!relation_exists(&client, "endless").await);
    assert_eq!(job_names(&client).await, ["extended_v", "simple_v"]);

    // So does statement_timeout.
    let error = client
        .batch_execute(&format!(
            "SET statement_timeout = '1s'; CREATE MATERIALIZED VIEW endless AS {ENDLESS}"
        ))
        .await
        .unwrap_err();
    assert_eq!(error.as_db_error().unwrap().code().code(), "57014");
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .unwrap();
    assert!(!relation_exists(&client, "endless").await);
    assert_eq!(job_names(&client).await, ["extended_v", "simple_v"]);

    // A sink waits for its backfill too: its rows are written when CREATE SINK returns.
    let dir = tempfile::tempdir().unwrap();
    client
        .batch_execute(&format!(
            "CREATE SINK out AS SELECT k, v FROM t WHERE v % 1000 = 0 WITH (connector = 'filesystem', \
             path = '{}', format = 'csv')",
            dir.path().display()
        ))
        .await
        .unwrap();
    let mut lines = 0;
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let path = file.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("part-")
        {
            lines += std::fs::read_to_string(&path).unwrap().lines().count();
        }
    }
    assert_eq!(lines as i64, ROWS / 1000);
}

/// `SET visibility_mode = 'strict'`: a SELECT sees, in the views it reads (and the views those
/// read), every write another session committed before it, without FLUSH.
#[tokio::test]
async fn strict_visibility_reads_every_write_committed_before_the_query() {
    let server = TestServer::start().await.unwrap();
    let writer = server.connect("dev").await.unwrap();
    let reader = server.connect("dev").await.unwrap();
    writer
        .batch_execute(
            "CREATE TABLE t (k BIGINT, v BIGINT); \
             CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n FROM t GROUP BY k; \
             CREATE MATERIALIZED VIEW on_view AS SELECT count(*) AS keys FROM per_k",
        )
        .await
        .unwrap();
    let visible = |strict: bool| {
        let (writer, reader) = (&writer, &reader);
        async move {
            let mode = if strict { "strict" } else { "checkpoint" };
            reader
                .batch_execute(&format!("SET visibility_mode = '{mode}'"))
                .await
                .unwrap();
            let (mut seen, mut took) = (0, Vec::new());
            for i in 0..100 {
                let k = if strict { i } else { 1000 + i };
                writer
                    .batch_execute(&format!("INSERT INTO t VALUES ({k}, 1)"))
                    .await
                    .unwrap();
                let started = Instant::now();
                let n = text_rows(reader, &format!("SELECT n FROM per_k WHERE k = {k}"))
                    .await
                    .unwrap();
                took.push(started.elapsed());
                seen += usize::from(n == vec!["1".to_string()]);
            }
            took.sort();
            eprintln!(
                "{mode}: {seen}/100 inserts visible at once, SELECT p50 {:?}, p99 {:?}",
                took[50], took[98]
            );
            seen
        }
    };
    assert_eq!(visible(true).await, 100);
    // Without it, a read right after a write usually misses it (the view commits every 100 ms).
    assert!(visible(false).await < 100);
    // A view on a view waits for its upstream too.
    reader
        .batch_execute("SET visibility_mode = 'strict'")
        .await
        .unwrap();
    writer
        .batch_execute("INSERT INTO t VALUES (5000, 1)")
        .await
        .unwrap();
    assert_eq!(
        text_rows(&reader, "SELECT keys FROM on_view")
            .await
            .unwrap(),
        vec!["201"]
    );
    let error = reader
        .batch_execute("SET visibility_mode = 'sometimes'")
        .await
        .unwrap_err();
    assert_eq!(error.as_db_error().unwrap().code().code(), "22023");
}
