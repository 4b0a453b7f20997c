//! Transaction blocks against the real server (the statement-level cases are in
//! `dml/transactions.slt`):
//! - blocks that write two tables commit all or nothing across kill -9 during a stream of
//!   COMMITs, every acknowledged COMMIT survives, and a view over both tables agrees with them;
//! - COPY FROM STDIN inside a block is staged: rolled back it leaves nothing;
//! - a connection that ends inside a block rolls it back.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures::SinkExt;
use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};

/// Rows each block inserts into `a`.
const ROWS: i64 = 3000;

#[tokio::test]
async fn blocks_commit_all_or_nothing_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE a (k BIGINT, i BIGINT); \
         CREATE TABLE b (k BIGINT PRIMARY KEY, n BIGINT); \
         CREATE MATERIALIZED VIEW per_k AS \
           SELECT b.k, b.n, count(*) AS rows FROM b JOIN a ON a.k = b.k GROUP BY b.k, b.n",
    )
    .await
    .unwrap();
    // Blocks one after the other until the server is gone; each acknowledged COMMIT is noted.
    let writer = server.connect("dev").await.unwrap();
    let blocks = async move {
        let mut acknowledged = Vec::new();
        for k in 1..10_000i64 {
            let block = format!(
                "BEGIN; \
                 INSERT INTO a SELECT {k}, g FROM generate_series(1, {ROWS}) AS s(g); \
                 UPDATE a SET i = -i WHERE k = {k} AND i % 2 = 0; \
                 INSERT INTO b VALUES ({k}, {ROWS}); \
                 COMMIT"
            );
            if writer.batch_execute(&block).await.is_err() {
                break;
            }
            acknowledged.push(k);
        }
        acknowledged
    };
    let kill = async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.kill9().await.unwrap();
    };
    let (acknowledged, ()) = tokio::join!(blocks, kill);
    assert!(
        acknowledged.len() >= 3,
        "only {} blocks",
        acknowledged.len()
    );
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    // Every block is whole or absent: its rows in `a` (half of them updated) and its row in `b`.
    let per_block = sorted_rows(
        &c,
        &format!(
            "SELECT k, count(*), sum(CASE WHEN i < 0 THEN 1 ELSE 0 END) FROM a GROUP BY k \
             HAVING count(*) <> {ROWS} OR sum(CASE WHEN i < 0 THEN 1 ELSE 0 END) <> {}",
            ROWS / 2
        ),
    )
    .await
    .unwrap();
    assert!(per_block.is_empty(), "partial blocks in a: {per_block:?}");
    let in_a: Vec<String> = sorted_rows(&c, "SELECT DISTINCT k FROM a").await.unwrap();
    let in_b: Vec<String> = sorted_rows(&c, "SELECT k FROM b").await.unwrap();
    assert_eq!(in_a, in_b, "a block wrote one table and not the other");
    // Every acknowledged block survived.
    let committed: std::collections::HashSet<i64> =
        in_b.iter().map(|k| k.parse().unwrap()).collect();
    for k in &acknowledged {
        assert!(committed.contains(k), "acknowledged block {k} is gone");
    }
    // The view agrees with its tables.
    c.batch_execute("FLUSH").await.unwrap();
    let view = sorted_rows(&c, "SELECT k, n, rows FROM per_k")
        .await
        .unwrap();
    let query = sorted_rows(
        &c,
        "SELECT b.k, b.n, count(*) FROM b JOIN a ON a.k = b.k GROUP BY b.k, b.n",
    )
    .await
    .unwrap();
    assert_eq!(view, query);
    server.kill9().await.unwrap();
}

#[tokio::test]
async fn copy_in_a_block_and_a_dropped_connection_roll_back() {
    let server = TestServer::start().await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    let mut c = c;
    for commit in [false, true] {
        let tx = c.transaction().await.unwrap();
        let sink = tx.copy_in("COPY t FROM STDIN").await.unwrap();
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(b"1\tone\n2\ttwo\n"))
            .await
            .unwrap();
        assert_eq!(sink.finish().await.unwrap(), 2);
        assert_eq!(
            text_rows(tx.client(), "SELECT count(*) FROM t")
                .await
                .unwrap(),
            vec!["2".to_string()]
        );
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
            assert_eq!(
                text_rows(&c, "SELECT count(*) FROM t").await.unwrap(),
                vec!["0".to_string()]
            );
        }
    }
    assert_eq!(
        sorted_rows(&c, "SELECT id, v FROM t").await.unwrap(),
        vec!["1|one".to_string(), "2|two".to_string()]
    );
    // A connection that goes away inside a block leaves nothing behind.
    let gone = server.connect("dev").await.unwrap();
    gone.batch_execute("BEGIN; INSERT INTO t VALUES (3, 'three')")
        .await
        .unwrap();
    gone.batch_execute("CREATE TABLE made_then_gone (id INT)")
        .await
        .unwrap();
    drop(gone);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        text_rows(&c, "SELECT count(*) FROM t").await.unwrap(),
        vec!["2".to_string()]
    );
    // ... including the tables it created.
    let e = c
        .simple_query("SELECT * FROM made_then_gone")
        .await
        .unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42P01"), "{e}");
    server.kill9().await.unwrap();
}
