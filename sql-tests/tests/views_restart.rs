//! Exactly-once views across `kill -9` at arbitrary moments while a client streams changes: a view
//! resumes from its last committed epoch, never double-counting a change and never missing one.
//! The oracle is the view's own query run ad hoc over the table.
#![allow(clippy::unwrap_used)]

use rivulet_sql_tests::{TestServer, sorted_rows};

const VIEW: &str =
    "SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi FROM t GROUP BY k";

/// Views on top of `v` and on `t` itself: a view on a view, a parallel DISTINCT, a union.
const MORE_VIEWS: &[(&str, &str)] = &[
    (
        "on_v",
        "SELECT count(*) AS groups, sum(n) AS total, max(hi) AS top FROM v",
    ),
    ("ks", "SELECT DISTINCT k % 5 AS m FROM t"),
    (
        "u",
        "SELECT k, count(*) AS n FROM (SELECT k FROM t UNION ALL SELECT k FROM t WHERE v > 50) x GROUP BY k",
    ),
];

async fn assert_view_matches_query(client: &tokio_postgres::Client) {
    client.batch_execute("FLUSH").await.unwrap();
    let view = sorted_rows(client, "SELECT * FROM v").await.unwrap();
    let oracle = sorted_rows(client, VIEW).await.unwrap();
    assert!(!oracle.is_empty());
    assert_eq!(view, oracle);
    for (name, query) in MORE_VIEWS {
        let view = sorted_rows(client, &format!("SELECT * FROM {name}"))
            .await
            .unwrap();
        let oracle = sorted_rows(client, query).await.unwrap();
        assert_eq!(view, oracle, "view {name}");
    }
}

/// Every third epoch is synced: the others must survive kill -9 too (they are in the WAL).
const FLAGS: &[&str] = &[
    "--checkpoint-frequency",
    "3",
    "--streaming-parallelism",
    "3",
];

fn change(next: i32) -> String {
    match next % 7 {
        6 => format!("DELETE FROM t WHERE id = {}", next - 3),
        5 => format!(
            "UPDATE t SET v = v + 1000, k = k + 1 WHERE id = {}",
            next - 2
        ),
        _ => format!(
            "INSERT INTO t VALUES ({next}, {}, {})",
            next % 13,
            next * 7 % 101
        ),
    }
}

#[tokio::test]
// `next` also advances inside the streaming future, which the lint does not see.
#[allow(clippy::explicit_counter_loop)]
async fn views_are_exactly_once_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_with(dir.path(), FLAGS).await.unwrap();
    let mut c = server.connect("dev").await.unwrap();
    c.batch_execute("CREATE TABLE t (id INT PRIMARY KEY, k INT, v BIGINT)")
        .await
        .unwrap();
    c.batch_execute(&format!("CREATE MATERIALIZED VIEW v AS {VIEW}"))
        .await
        .unwrap();
    for (name, query) in MORE_VIEWS {
        c.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap();
    }
    let mut next = 0;
    // Pseudo-random kill moments, fixed so that a failure replays.
    let delays_ms = [40u64, 170, 90, 260, 15, 130];
    for delay in delays_ms {
        // A client streams changes while the server is killed at an arbitrary moment of it.
        let dml = async {
            loop {
                if c.batch_execute(&change(next)).await.is_err() {
                    break;
                }
                next += 1;
            }
        };
        let kill = async move {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            server.kill9().await.unwrap();
        };
        tokio::join!(dml, kill);
        assert!(next > 0);
        server = TestServer::start_with(dir.path(), FLAGS).await.unwrap();
        c = server.connect("dev").await.unwrap();
        assert_view_matches_query(&c).await;
        // The statement in flight at the kill may or may not have committed: the table's rows,
        // not the client's count, are the truth the view is checked against.
        next += 1;
    }
    server.kill9().await.unwrap();
}

#[tokio::test]
async fn a_failing_job_is_restarted_then_stays_failed_with_its_error() {
    let server =
        TestServer::start_with_flags(&["--restart-attempts", "2", "--restart-delay-ms", "50"])
            .await
            .unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE t (k INT, v INT); \
         CREATE MATERIALIZED VIEW m AS SELECT k, sum(10 / v) AS s FROM t GROUP BY k; \
         INSERT INTO t VALUES (1, 2); FLUSH",
    )
    .await
    .unwrap();
    assert_eq!(
        sorted_rows(&c, "SELECT * FROM m").await.unwrap(),
        vec!["1|5"]
    );
    c.batch_execute("INSERT INTO t VALUES (1, 0)")
        .await
        .unwrap();
    let err = c.batch_execute("FLUSH").await.unwrap_err();
    let message = err.as_db_error().map(|e| e.message().to_string());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("materialized view \"m\" failed")),
        "{message:?}"
    );
    // Two restarts replay the same row and fail the same way; then the job stays failed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let jobs = sorted_rows(&c, "SHOW JOBS").await.unwrap();
        let [job] = jobs.as_slice() else {
            panic!("one job expected: {jobs:?}")
        };
        let fields: Vec<&str> = job.split('|').collect();
        if fields[11] == "2" && fields[1] == "failed" {
            assert!(fields[12].contains("Divide by zero"), "{job}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no second restart: {job}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The view keeps its last committed result.
    assert_eq!(
        sorted_rows(&c, "SELECT * FROM m").await.unwrap(),
        vec!["1|5"]
    );
    server.kill9().await.unwrap();
}
