//! Durability: every statement the server acknowledged is there after `kill -9` and a restart on the
//! same data dir, compared row by row with what the client was told succeeded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use rivulet_sql_tests::{TestServer, text_rows};

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute("CREATE TABLE users (id INT PRIMARY KEY, name TEXT); CREATE TABLE log (n BIGINT, note TEXT)")
        .await
        .unwrap();
    // The model: what the client was acknowledged.
    let mut users: BTreeMap<i32, String> = BTreeMap::new();
    let mut log: Vec<i64> = Vec::new();
    for i in 0..200i32 {
        c.execute("INSERT INTO users VALUES ($1, $2)", &[&i, &format!("u{i}")])
            .await
            .unwrap();
        users.insert(i, format!("u{i}"));
        let n = i64::from(i);
        c.simple_query(&format!("INSERT INTO log VALUES ({n}, 'n{n}')"))
            .await
            .unwrap();
        log.push(n);
        if i % 3 == 0 {
            c.simple_query(&format!("UPDATE users SET name = 'v{i}' WHERE id = {i}"))
                .await
                .unwrap();
            users.insert(i, format!("v{i}"));
        }
        if i % 7 == 0 {
            c.simple_query(&format!("DELETE FROM users WHERE id = {}", i / 2))
                .await
                .unwrap();
            users.remove(&(i / 2));
        }
    }
    server.kill9().await.unwrap();

    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    let got = text_rows(&c, "SELECT id, name FROM users ORDER BY id")
        .await
        .unwrap();
    let want: Vec<String> = users.iter().map(|(k, v)| format!("{k}|{v}")).collect();
    assert_eq!(got, want);
    let got = text_rows(&c, "SELECT n FROM log ORDER BY n").await.unwrap();
    let want: Vec<String> = log.iter().map(|n| n.to_string()).collect();
    assert_eq!(got, want);
    // The restarted server takes new writes, keys and all.
    let err = c
        .simple_query("INSERT INTO users VALUES (1, 'dup')")
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("23505"));
}

#[tokio::test]
async fn array_columns_survive_kill_9_in_tables_and_views() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, xs INT[], tags TEXT[]);
         INSERT INTO t VALUES (1, ARRAY[1,2,NULL], ARRAY['a','b c']), (2, NULL, '{}'), (3, '{}', NULL);
         CREATE MATERIALIZED VIEW v AS SELECT id, xs, cardinality(tags) AS n FROM t;
         FLUSH",
    )
    .await
    .unwrap();
    let want = ["1|{1,2,NULL}|2", "2|NULL|0", "3|{}|NULL"];
    assert_eq!(
        text_rows(&c, "SELECT * FROM v ORDER BY id").await.unwrap(),
        want
    );
    server.kill9().await.unwrap();

    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    assert_eq!(
        text_rows(&c, "SELECT * FROM v ORDER BY id").await.unwrap(),
        want
    );
    // The restarted job keeps the view up to date from the table's arrays.
    c.batch_execute("UPDATE t SET xs = array_append(xs, 7) WHERE id = 3; FLUSH")
        .await
        .unwrap();
    assert_eq!(
        text_rows(&c, "SELECT xs FROM v WHERE id = 3")
            .await
            .unwrap(),
        ["{7}"]
    );
    assert_eq!(
        text_rows(&c, "SELECT tags FROM t WHERE id = 1")
            .await
            .unwrap(),
        ["{a,\"b c\"}"]
    );
}

#[tokio::test]
async fn plain_views_and_view_column_lists_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, k INT, v BIGINT);
         INSERT INTO t VALUES (1, 1, 10), (2, 1, 20), (3, 2, 5);
         CREATE VIEW big (id, key, value) AS SELECT id, k, v FROM t WHERE v > 6;
         CREATE VIEW per_key AS SELECT key, sum(value) AS total FROM big GROUP BY key;
         CREATE MATERIALIZED VIEW m (k, n) AS SELECT key, count(*) FROM big GROUP BY key;
         FLUSH",
    )
    .await
    .unwrap();
    server.kill9().await.unwrap();

    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute("INSERT INTO t VALUES (4, 2, 7); FLUSH")
        .await
        .unwrap();
    assert_eq!(
        text_rows(&c, "SELECT * FROM per_key ORDER BY key")
            .await
            .unwrap(),
        ["1|30", "2|7"]
    );
    assert_eq!(
        text_rows(&c, "SELECT k, n FROM m ORDER BY k")
            .await
            .unwrap(),
        ["1|2", "2|1"]
    );
    let err = c.batch_execute("DROP VIEW big").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("2BP01"));
}

/// A sequence never hands out a value twice, across `kill -9`: its position is logged (32 values
/// ahead, as Postgres does) before a value it covers is returned, so a restart continues past
/// every value drawn, used or not.
#[tokio::test]
async fn sequences_never_repeat_a_value_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(
        "CREATE TABLE acct (id SERIAL PRIMARY KEY, email TEXT);
         INSERT INTO acct (email) VALUES ('a'), ('b'), ('c');
         CREATE SEQUENCE s INCREMENT BY 10;
         SELECT nextval('s'), nextval('s')",
    )
    .await
    .unwrap();
    // 40 values: more than one logged stretch.
    c.batch_execute("INSERT INTO acct (email) SELECT 'x' FROM generate_series(1, 40)")
        .await
        .unwrap();
    server.kill9().await.unwrap();

    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute("INSERT INTO acct (email) VALUES ('after')")
        .await
        .unwrap();
    let after: i32 = text_rows(&c, "SELECT id FROM acct WHERE email = 'after'")
        .await
        .unwrap()[0]
        .parse()
        .unwrap();
    assert!(after > 43, "a key was handed out again: {after}");
    assert_eq!(
        text_rows(&c, "SELECT count(DISTINCT id), count(*) FROM acct")
            .await
            .unwrap(),
        ["44|44"]
    );
    let next: i64 = text_rows(&c, "SELECT nextval('s')").await.unwrap()[0]
        .parse()
        .unwrap();
    assert!(next > 11 && (next - 1) % 10 == 0, "{next}");
}
