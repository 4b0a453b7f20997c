//! Generator sources are exactly-once across kill -9: a bounded generator killed mid-way, restarted,
//! ends with exactly its rows (none lost, none twice), and a view on it equals its query.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};

async fn wait_for_count(c: &tokio_postgres::Client, sql: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = text_rows(c, sql).await.unwrap();
        if got == vec![want.to_string()] {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {got:?}, want {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn generators_resume_exactly_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE seq (id BIGINT, v INT) WITH ('connector' = 'datagen', \
           'rows-per-second' = '20000', 'fields.id.kind' = 'sequence', 'fields.id.start' = '1', \
           'fields.id.end' = '30000', 'fields.v.min' = '0', 'fields.v.max' = '9'); \
         CREATE TABLE bid (auction BIGINT, price BIGINT, ts TIMESTAMP) WITH ( \
           'connector' = 'nexmark', 'nexmark.table.type' = 'bid', \
           'nexmark.events-per-second' = '50000', 'nexmark.events.num' = '60000'); \
         CREATE MATERIALIZED VIEW per_v AS SELECT v, count(*) AS n, sum(id) AS s FROM seq GROUP BY v; \
         CREATE MATERIALIZED VIEW per_auction AS SELECT auction, count(*) AS n, max(price) AS top FROM bid GROUP BY auction",
    )
    .await
    .unwrap();
    // Kill while both generators are mid-way.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = text_rows(&c, "SELECT count(*) FROM seq").await.unwrap();
    server.kill9().await.unwrap();
    assert_ne!(
        before,
        vec!["30000".to_string()],
        "the generator finished before the kill"
    );

    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    wait_for_count(&c, "SELECT count(*) FROM seq", "30000").await;
    wait_for_count(&c, "SELECT count(*) FROM bid", "55200").await;
    // Every id once: nothing generated twice, nothing skipped.
    let ids = text_rows(&c, "SELECT count(DISTINCT id), min(id), max(id) FROM seq")
        .await
        .unwrap();
    assert_eq!(ids, vec!["30000|1|30000".to_string()]);
    c.batch_execute("FLUSH").await.unwrap();
    for (view, query) in [
        ("per_v", "SELECT v, count(*), sum(id) FROM seq GROUP BY v"),
        (
            "per_auction",
            "SELECT auction, count(*), max(price) FROM bid GROUP BY auction",
        ),
    ] {
        let got = sorted_rows(&c, &format!("SELECT * FROM {view}"))
            .await
            .unwrap();
        assert_eq!(got, sorted_rows(&c, query).await.unwrap(), "view {view}");
    }
    server.kill9().await.unwrap();
}
