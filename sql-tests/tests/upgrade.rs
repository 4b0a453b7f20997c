//! Upgrade safety: a view's operator state lives under state table ids stored with the view,
//! next to the shape of each stateful operator. A server whose planner plans the view otherwise
//! (simulated with the `RIVULET_TEST_PLANNER_CHANGE` hook) refuses to run that view, naming it and
//! what differs, while the server and its other views run on; the same server as before runs the
//! view again with its state intact.
#![allow(clippy::unwrap_used)]

use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};

#[tokio::test]
async fn a_view_planned_differently_after_an_upgrade_is_refused_not_fed_the_old_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE a (k INT, v INT); CREATE TABLE b (k INT, w INT); \
         CREATE MATERIALIZED VIEW joined AS \
           SELECT a.k, count(*) AS n, sum(b.w) AS s FROM a JOIN b ON a.k = b.k GROUP BY a.k; \
         INSERT INTO a VALUES (1, 10), (2, 20); INSERT INTO b VALUES (1, 5), (1, 6), (2, 7); FLUSH",
    )
    .await
    .unwrap();
    let before = sorted_rows(&c, "SELECT * FROM joined").await.unwrap();
    assert_eq!(before, vec!["1|2|11", "2|1|7"]);
    server.kill9().await.unwrap();

    // A server that plans the view otherwise: the job is refused, the server runs.
    let changed = TestServer::start_with_env(
        dir.path(),
        &[],
        &[("RIVULET_TEST_PLANNER_CHANGE", " (changed)")],
    )
    .await
    .unwrap();
    let c = changed.connect("dev").await.unwrap();
    let jobs = text_rows(&c, "SHOW JOBS").await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(jobs[0].starts_with("joined|failed|"), "{jobs:?}");
    assert!(
        jobs[0].contains(
            "materialized view \"joined\" cannot run: this server plans its query differently"
        ),
        "{jobs:?}"
    );
    // Tables and new views still work.
    c.batch_execute(
        "INSERT INTO a VALUES (3, 30); CREATE MATERIALIZED VIEW other AS SELECT count(*) FROM a; FLUSH",
    )
    .await
    .unwrap();
    assert_eq!(
        text_rows(&c, "SELECT * FROM other").await.unwrap(),
        vec!["3"]
    );
    changed.kill9().await.unwrap();

    // The server that created it: the view runs on its own state and catches up.
    let again = TestServer::start_in(dir.path()).await.unwrap();
    let c = again.connect("dev").await.unwrap();
    c.batch_execute("INSERT INTO b VALUES (3, 1), (1, 1); FLUSH")
        .await
        .unwrap();
    // `other` was created by the changed planner: this server refuses it in turn.
    let jobs = text_rows(&c, "SHOW JOBS").await.unwrap();
    assert!(jobs[0].starts_with("joined|running|"), "{jobs:?}");
    assert!(jobs[1].starts_with("other|failed|"), "{jobs:?}");
    assert_eq!(
        sorted_rows(&c, "SELECT * FROM joined").await.unwrap(),
        vec!["1|3|12", "2|1|7", "3|1|1"]
    );
    again.kill9().await.unwrap();
}
