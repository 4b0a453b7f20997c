//! A new view backfills from its tables' current rows, not their change-log history, and change
//! logs are trimmed once every reader has committed past an entry.
//!
//! - Views created while another session keeps inserting, updating (also primary keys, which
//!   moves rows between chunks already read and chunks still to read) and deleting, over tables
//!   of many snapshot chunks, with and without a primary key, equal their queries after FLUSH, at
//!   parallelism 1 and 3.
//! - A table that receives 1M inserts and as many deletes (net zero rows), read by two views,
//!   keeps a bounded change log; a third view created afterwards is correct; a kill -9 in the
//!   middle of it loses nothing; `n_live_tup` and `pg_total_relation_size` report what each
//!   relation stores.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};
use tokio_postgres::Client;

/// Rows in each table before the views exist: many snapshot chunks.
const ROWS: i64 = 40_000;

const VIEWS: &[(&str, &str)] = &[
    (
        "by_k",
        "SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi FROM t1 GROUP BY k",
    ),
    ("keyed", "SELECT id, v, k FROM t1 WHERE v % 3 <> 0"),
    (
        "by_k2",
        "SELECT k, count(*) AS n, sum(v) AS s FROM t2 GROUP BY k",
    ),
    // No key: the view counts identical rows, and a view on it reads them as row instances.
    ("bag", "SELECT k, v % 10 AS d FROM t2 WHERE v > 100"),
    ("on_bag", "SELECT d, count(*) AS n FROM bag GROUP BY d"),
    (
        "on_keyed",
        "SELECT k, count(*) AS n, max(v) AS hi FROM keyed GROUP BY k",
    ),
];

fn random_statement(rng: &mut StdRng, next_id: &mut i64) -> String {
    let k = rng.random_range(0..50);
    let v = rng.random_range(0..1000);
    let id = rng.random_range(0..*next_id);
    match rng.random_range(0..9) {
        0 | 1 => {
            *next_id += 3;
            format!(
                "INSERT INTO t1 VALUES ({}, {k}, {v}), ({}, {k}, {v}), ({}, {}, {v})",
                *next_id - 2,
                *next_id - 1,
                *next_id,
                (k + 1) % 50
            )
        }
        2 => format!("UPDATE t1 SET v = {v} WHERE id % 97 = {}", id % 97),
        // Moves rows to keys far after every chunk (and their row from an early chunk).
        3 => {
            *next_id += 1;
            format!(
                "UPDATE t1 SET id = {} WHERE id = {id}",
                1_000_000 + *next_id
            )
        }
        4 => format!("DELETE FROM t1 WHERE id % 211 = {}", id % 211),
        5 => format!(
            "INSERT INTO t2 VALUES ({k}, {v}), ({}, {})",
            (k + 7) % 50,
            v / 2
        ),
        6 => format!("UPDATE t2 SET v = v + 1 WHERE v % 89 = {}", id % 89),
        7 => format!("DELETE FROM t2 WHERE v % 151 = {}", id % 151),
        _ => format!("UPDATE t2 SET k = {k} WHERE v % 113 = {}", id % 113),
    }
}

async fn assert_views_equal_queries(c: &Client, views: &[(&str, &str)], context: &str) {
    for (name, query) in views {
        let view = sorted_rows(c, &format!("SELECT * FROM {name}"))
            .await
            .unwrap();
        let oracle = sorted_rows(c, query).await.unwrap();
        assert!(!view.is_empty(), "{context}: view {name} is empty");
        assert_eq!(
            view, oracle,
            "{context}: view {name} differs from its query"
        );
    }
}

async fn backfill_while_writing(seed: u64, parallelism: u64) {
    // Small chunks: many snapshots per backfill, and the writer's changes between them.
    let server = TestServer::start_with_flags(&["--backfill-chunk-rows", "50"])
        .await
        .unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE t1 (id BIGINT PRIMARY KEY, k INT, v BIGINT); \
         CREATE TABLE t2 (k INT, v BIGINT); \
         INSERT INTO t1 SELECT g, g % 50, g % 997 FROM generate_series(1, {ROWS}) AS s(g); \
         INSERT INTO t2 SELECT g % 50, g % 991 FROM generate_series(1, {ROWS}) AS s(g); \
         SET streaming_parallelism = {parallelism}"
    ))
    .await
    .unwrap();

    // Another session writes all along, so changes land between the chunks of every backfill.
    let stop = AtomicBool::new(false);
    let w = server.connect("dev").await.unwrap();
    let writer = async {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut next_id = ROWS;
        let mut statements = 0u32;
        // Bounded: at most 20,000 statements, whatever the views take.
        while !stop.load(Ordering::Relaxed) && statements < 20_000 {
            // Four statements a round trip, each its own commit.
            let sql: Vec<String> = (0..4)
                .map(|_| random_statement(&mut rng, &mut next_id))
                .collect();
            let sql = sql.join("; ");
            w.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: {sql}: {e}"));
            statements += 4;
        }
        statements
    };
    let create = async {
        for (name, query) in VIEWS {
            c.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
                .await
                .unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    };
    let (statements, ()) = tokio::join!(writer, create);
    eprintln!("seed {seed}: {statements} statements while the views backfilled");
    assert!(statements > 10, "seed {seed}: the writer hardly ran");
    c.batch_execute("FLUSH").await.unwrap();
    assert_views_equal_queries(
        &c,
        VIEWS,
        &format!("seed {seed}, parallelism {parallelism}, {statements} concurrent statements"),
    )
    .await;
    server.kill9().await.unwrap();
}

#[tokio::test]
async fn views_backfilled_while_writes_go_on_equal_their_queries() {
    backfill_while_writing(1, 1).await;
    backfill_while_writing(2, 3).await;
}

/// The change-log entries `relation` stores now.
async fn log_entries(c: &Client, relation: &str) -> i64 {
    let rows = text_rows(
        c,
        &format!("SELECT entries FROM rivulet_change_logs WHERE relation = '{relation}'"),
    )
    .await
    .unwrap();
    rows.first()
        .unwrap_or_else(|| panic!("no change log row for {relation}"))
        .parse()
        .unwrap()
}

/// Waits (bounded) until every relation in `relations` keeps at most `bound` log entries.
async fn assert_logs_trimmed(c: &Client, relations: &[&str], bound: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut sizes = Vec::new();
        for r in relations {
            sizes.push((r.to_string(), log_entries(c, r).await));
        }
        if sizes.iter().all(|(_, n)| *n <= bound) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "change logs not trimmed to {bound} entries: {sizes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const TRIM_VIEWS: &[(&str, &str)] = &[
    (
        "sums",
        "SELECT g, count(*) AS n, sum(v) AS s FROM t GROUP BY g",
    ),
    ("big", "SELECT id, v FROM t WHERE v > 500"),
];

#[tokio::test]
async fn change_logs_stay_bounded_under_inserts_and_deletes_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_in(dir.path()).await.unwrap();
    let mut c = server.connect("dev").await.unwrap();
    c.batch_execute("CREATE TABLE t (id BIGINT PRIMARY KEY, g INT, v INT)")
        .await
        .unwrap();
    for (name, query) in TRIM_VIEWS {
        c.batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .unwrap();
    }
    // 1M inserts and 1M deletes in 100K-row statements (13 log entries each), net zero rows; a
    // kill -9 halfway, without a FLUSH before it.
    const BATCH: i64 = 100_000;
    for round in 0..10i64 {
        let first = round * BATCH;
        c.batch_execute(&format!(
            "INSERT INTO t SELECT x, x % 7, x % 1000 FROM generate_series({}, {}) AS s(x); \
             DELETE FROM t WHERE id >= {first}",
            first,
            first + BATCH - 1
        ))
        .await
        .unwrap();
        if round == 4 {
            server.kill9().await.unwrap();
            server = TestServer::start_in(dir.path()).await.unwrap();
            c = server.connect("dev").await.unwrap();
        }
    }
    c.batch_execute(
        "INSERT INTO t SELECT x, x % 7, x % 1000 FROM generate_series(1, 5000) AS s(x); FLUSH",
    )
    .await
    .unwrap();
    let last: i64 = text_rows(
        &c,
        "SELECT last_seq FROM rivulet_change_logs WHERE relation = 't'",
    )
    .await
    .unwrap()[0]
        .parse()
        .unwrap();
    assert!(last > 250, "the table's log had {last} entries in all");
    // Every reader has committed the log: what is left is at most the entries since the last
    // trim, none here.
    assert_logs_trimmed(&c, &["t", "sums", "big"], 0).await;

    // A view created now backfills from the rows, not the (trimmed) history.
    let third = (
        "spread",
        "SELECT g, min(v) AS lo, max(v) AS hi FROM t GROUP BY g",
    );
    c.batch_execute(&format!(
        "CREATE MATERIALIZED VIEW {} AS {}",
        third.0, third.1
    ))
    .await
    .unwrap();
    let mut all: Vec<(&str, &str)> = TRIM_VIEWS.to_vec();
    all.push(third);
    assert_views_equal_queries(&c, &all, "after trimming").await;

    // And again after a kill -9: the views resume after their committed positions, which the
    // trimmed logs still hold.
    c.batch_execute("DELETE FROM t WHERE id % 2 = 0; INSERT INTO t VALUES (900000, 3, 999)")
        .await
        .unwrap();
    server.kill9().await.unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    c.batch_execute("FLUSH").await.unwrap();
    assert_views_equal_queries(&c, &all, "after trimming and a kill -9").await;
    assert_logs_trimmed(&c, &["t", "sums", "big", "spread"], 0).await;
    // What each relation stores, as Postgres' statistics and size functions report it.
    for relation in ["t", "sums", "big", "spread"] {
        let live = text_rows(
            &c,
            &format!("SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = '{relation}'"),
        )
        .await
        .unwrap();
        let count = text_rows(&c, &format!("SELECT count(*) FROM {relation}"))
            .await
            .unwrap();
        assert_eq!(live, count, "n_live_tup of {relation}");
        let size: i64 = text_rows(&c, &format!("SELECT pg_total_relation_size('{relation}')"))
            .await
            .unwrap()[0]
            .parse()
            .unwrap();
        let rows: i64 = count[0].parse().unwrap();
        // Every row costs its key and value, a few bytes each at least; the trimmed log nothing.
        assert!(
            size >= rows * 4 && size < rows * 200 + 1000,
            "{relation}: {size} bytes for {rows} rows"
        );
    }
    server.kill9().await.unwrap();
}

async fn one_number(c: &Client, sql: &str) -> i64 {
    text_rows(c, sql).await.unwrap()[0].parse().unwrap()
}

/// A generator declared with `CREATE SOURCE` stores nothing, and a view over it keeps its rows
/// and no change log: storage stays bounded however long the generator runs. A kill -9 while
/// it generates loses no row and counts none twice.
#[tokio::test]
async fn a_generator_source_stores_nothing_and_its_views_keep_no_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    // 150,000 rows at 50,000 a second; CREATE returns at once, the job generates meanwhile.
    c.batch_execute(
        "CREATE SOURCE g (id BIGINT, k INT) WITH (connector = 'datagen', \
           datagen.rows.per.second = '50000', fields.id.kind = 'sequence', \
           fields.id.start = '1', fields.id.end = '150000', fields.k.min = '0', \
           fields.k.max = '99'); \
         SET background_ddl = true; \
         CREATE MATERIALIZED VIEW per_k AS \
           SELECT k, count(*) AS n, sum(id) AS s, max(id) AS top FROM g GROUP BY k",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = one_number(&c, "SELECT coalesce(sum(n), 0) FROM per_k").await;
    assert!(before < 150_000, "the generator was done before the kill");
    assert_eq!(
        one_number(&c, "SELECT pg_total_relation_size('g')").await,
        0
    );
    server.kill9().await.unwrap();

    let server = TestServer::start_in(dir.path()).await.unwrap();
    let c = server.connect("dev").await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), c.batch_execute("FLUSH"))
        .await
        .expect("the bounded generator ends")
        .unwrap();
    assert_eq!(
        text_rows(&c, "SELECT sum(n), sum(s), max(top) FROM per_k")
            .await
            .unwrap(),
        vec!["150000|11250075000|150000".to_string()],
        "every generated row counted once across the kill -9 ({before} before it)"
    );
    assert_eq!(
        one_number(&c, "SELECT pg_total_relation_size('g')").await,
        0
    );
    assert_logs_trimmed(&c, &["per_k"], 0).await;
    let view_bytes = one_number(&c, "SELECT pg_total_relation_size('per_k')").await;
    assert!(
        view_bytes < 100 * 200,
        "a 100-row view takes {view_bytes} bytes"
    );
    server.kill9().await.unwrap();
}

/// `WITH (retention = ...)` on an APPEND ONLY table drops the rows its watermark has passed by
/// the retention, without retracting them from views (a Kafka topic's retention); a view created
/// afterwards sees what is left. The clock is the table's own event time.
#[tokio::test]
async fn retention_drops_old_rows_and_views_keep_them() {
    let server = TestServer::start().await.unwrap();
    let c = server.connect("dev").await.unwrap();
    for (sql, hint) in [
        (
            "CREATE TABLE bad (ts TIMESTAMP, WATERMARK FOR ts AS ts) WITH (retention = '1 day')",
            "needs an APPEND ONLY table",
        ),
        (
            "CREATE TABLE bad (ts TIMESTAMP, WATERMARK FOR ts AS ts) APPEND ONLY \
             WITH (retention = 'forever')",
            "invalid value for option \"retention\"",
        ),
    ] {
        let e = c.batch_execute(sql).await.unwrap_err();
        let db = e.as_db_error().unwrap();
        assert_eq!(db.code().code(), "22023", "{sql}");
        assert!(db.message().contains(hint), "{}", db.message());
    }
    // One row a second from 10:00:00 to 10:09:59; a minute of retention, a 1 s watermark delay.
    c.batch_execute(
        "CREATE TABLE ev (id INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) \
           APPEND ONLY WITH (retention = '1 minute'); \
         CREATE MATERIALIZED VIEW seen AS SELECT count(*) AS n, min(ts) AS first FROM ev; \
         INSERT INTO ev SELECT g, to_timestamp(1767261600 + g) AT TIME ZONE 'UTC' \
           FROM generate_series(0, 599) AS s(g); \
         FLUSH",
    )
    .await
    .unwrap();
    // Kept: times at or after 10:09:58 (the watermark, 10:09:58) minus a minute = 10:08:58.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = one_number(&c, "SELECT count(*) FROM ev").await;
        if left == 62 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} rows left, not 62");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        text_rows(&c, "SELECT min(ts) FROM ev").await.unwrap(),
        vec!["2026-01-01 10:08:58".to_string()]
    );
    assert_eq!(
        one_number(
            &c,
            "SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'ev'"
        )
        .await,
        62
    );
    // The view still counts every row.
    assert_eq!(
        text_rows(&c, "SELECT n, first FROM seen").await.unwrap(),
        vec!["600|2026-01-01 10:00:00".to_string()]
    );
    // A view created now reads the rows there are.
    c.batch_execute("CREATE MATERIALIZED VIEW later AS SELECT count(*) AS n FROM ev")
        .await
        .unwrap();
    assert_eq!(one_number(&c, "SELECT n FROM later").await, 62);
    server.kill9().await.unwrap();
}

/// A new window view over an APPEND ONLY table sees the watermark move as its rows came: a row
/// that was late to the views reading it live is late to it too, and no row is later to it than
/// it was live, also where one INSERT of rows in falling time order straddles two backfill
/// chunks. Over a table with a primary key (rows read in key order) the watermark is held until
/// the backfill ends, and no row is late.
#[tokio::test]
async fn backfill_watermark_moves_as_rows_came_in_an_append_only_table() {
    let server = TestServer::start().await.unwrap();
    let c = server.connect("dev").await.unwrap();
    let query = |t: &str| {
        format!(
            "SELECT window_start, count(*) AS n FROM TUMBLE({t}, ts, INTERVAL '10' SECOND) \
             GROUP BY window_start"
        )
    };
    c.batch_execute(&format!(
        "CREATE TABLE ev (id BIGINT, ts TIMESTAMP(3), \
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY; \
         CREATE TABLE keyed (id BIGINT PRIMARY KEY, ts TIMESTAMP(3), \
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY; \
         CREATE MATERIALIZED VIEW live AS {}",
        query("ev")
    ))
    .await
    .unwrap();
    // Event time in milliseconds after 2026-01-01 00:00:00. Each INSERT is at most one batch of
    // 8192 rows, so its rows are stored, and read live, in the order of `g` (a live reader moves
    // its watermark after each change-log entry).
    let insert = |from: i64, to: i64, ms: &str| {
        format!(
            "INSERT INTO ev SELECT g, to_timestamp_millis(1767225600000 + {ms}) \
             FROM generate_series({from}, {to}) AS s(g); \
             INSERT INTO keyed SELECT g, to_timestamp_millis(1767225600000 + {ms}) \
             FROM generate_series({from}, {to}) AS s(g)"
        )
    };
    // 40 000 rows, one a millisecond; then a row at 0.5 s, late (the watermark is at 39 s); then
    // 8000 rows in one INSERT from 100 s falling to 60 s (row ids 40 001 to 48 000, across the
    // backfill chunks that meet at id 40 960), none late live; then 20 000 rows up to 120 s.
    let batches = |from: i64, to: i64| {
        (from..=to)
            .step_by(8192)
            .map(move |a| (a, (a + 8191).min(to)))
    };
    let mut statements: Vec<String> = batches(0, 39_999).map(|(a, b)| insert(a, b, "g")).collect();
    statements.push(insert(40_000, 40_000, "500"));
    statements.push(insert(40_001, 48_000, "(100000 - (g - 40001) * 5)"));
    statements.extend(batches(48_001, 68_000).map(|(a, b)| insert(a, b, "(100000 + g - 48000)")));
    for sql in statements {
        c.batch_execute(&sql).await.unwrap();
    }
    c.batch_execute(&format!(
        "FLUSH; CREATE MATERIALIZED VIEW fresh AS {}; CREATE MATERIALIZED VIEW fresh_keyed AS {}",
        query("ev"),
        query("keyed")
    ))
    .await
    .unwrap();
    let live = sorted_rows(&c, "SELECT * FROM live").await.unwrap();
    assert_eq!(
        live.first().map(String::as_str),
        Some("2026-01-01 00:00:00|10000")
    );
    assert_eq!(live, sorted_rows(&c, "SELECT * FROM fresh").await.unwrap());
    let all = sorted_rows(&c, &format!("SELECT * FROM ({}) AS q", query("ev")))
        .await
        .unwrap();
    assert_eq!(
        all.first().map(String::as_str),
        Some("2026-01-01 00:00:00|10001")
    );
    assert_eq!(
        all,
        sorted_rows(&c, "SELECT * FROM fresh_keyed").await.unwrap()
    );
    // Only the late row differs.
    assert_eq!(live[1..], all[1..]);
    server.kill9().await.unwrap();
}

/// EXPLAIN of `create` without a state TTL and with `'table.exec.state.ttl' = '2 s'`.
async fn plans_without_and_with_ttl(c: &Client, create: &str) -> (String, String) {
    let explain = format!("EXPLAIN {create}");
    let without = text_rows(c, &explain).await.unwrap().join("\n");
    c.batch_execute("SET 'table.exec.state.ttl' = '2 s'")
        .await
        .unwrap();
    let with = text_rows(c, &explain).await.unwrap().join("\n");
    c.batch_execute("RESET 'table.exec.state.ttl'")
        .await
        .unwrap();
    (without, with)
}

/// Flink's `table.exec.state.ttl`, stored with the view at CREATE: an aggregate forgets groups
/// no row touched for that long (their state goes; the view keeps their last result), and a
/// later row starts its group afresh. A view without it keeps everything.
#[tokio::test]
async fn state_ttl_forgets_idle_groups() {
    let server = TestServer::start().await.unwrap();
    let c = server.connect("dev").await.unwrap();
    let e = c
        .batch_execute(
            "CREATE TABLE t0 (k INT); SET 'table.exec.state.ttl' = 'soon'; \
             CREATE MATERIALIZED VIEW bad AS SELECT k, count(*) AS n FROM t0 GROUP BY k",
        )
        .await
        .unwrap_err();
    assert_eq!(e.as_db_error().unwrap().code().code(), "22023");
    c.batch_execute(
        "CREATE TABLE t (k INT, v INT); \
         SET 'table.exec.state.ttl' = '2 s'; \
         CREATE MATERIALIZED VIEW brief AS SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k; \
         RESET 'table.exec.state.ttl'; \
         CREATE MATERIALIZED VIEW kept AS SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k; \
         INSERT INTO t VALUES (1, 10), (1, 20), (2, 5); FLUSH",
    )
    .await
    .unwrap();
    let state = |view: &'static str| {
        let c = &c;
        async move {
            one_number(
                c,
                &format!("SELECT state_bytes FROM rivulet_jobs WHERE job_name = '{view}'"),
            )
            .await
        }
    };
    assert!(state("brief").await > 0);
    // EXPLAIN says what bounds an aggregate's state.
    let (without, with) = plans_without_and_with_ttl(
        &c,
        "CREATE MATERIALIZED VIEW x AS SELECT k, count(*) AS n FROM t GROUP BY k",
    )
    .await;
    assert!(without.contains("state unbounded"), "{without}");
    assert!(with.contains("state TTL 2 s"), "{with}");
    // Group 2 stays touched; group 1 goes idle past the TTL.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c.batch_execute("INSERT INTO t VALUES (2, 1); FLUSH")
            .await
            .unwrap();
        let (brief, kept) = (state("brief").await, state("kept").await);
        if brief < kept {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no state expired: {brief} vs {kept} bytes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The view keeps group 1's last result; a new row starts it afresh.
    assert_eq!(
        text_rows(&c, "SELECT n, s FROM brief WHERE k = 1")
            .await
            .unwrap(),
        vec!["2|30".to_string()]
    );
    c.batch_execute("INSERT INTO t VALUES (1, 7); FLUSH")
        .await
        .unwrap();
    assert_eq!(
        text_rows(&c, "SELECT n, s FROM brief WHERE k = 1")
            .await
            .unwrap(),
        vec!["1|7".to_string()]
    );
    assert_eq!(
        text_rows(&c, "SELECT n, s FROM kept WHERE k = 1")
            .await
            .unwrap(),
        vec!["3|37".to_string()]
    );
    server.kill9().await.unwrap();
}

/// The state TTL bounds a regular join too, as in Flink: a row not written for that long no
/// longer matches the other side's new rows (the view keeps what it produced), the sweep deletes
/// it from the state, and a join without the setting keeps and matches everything.
#[tokio::test]
async fn state_ttl_bounds_join_state() {
    let server = TestServer::start().await.unwrap();
    let c = server.connect("dev").await.unwrap();
    let join = "SELECT o.id, o.amount, c.name FROM orders o JOIN customers c ON o.cust = c.id";
    c.batch_execute(&format!(
        "CREATE TABLE orders (id INT PRIMARY KEY, cust INT, amount INT); \
         CREATE TABLE customers (id INT PRIMARY KEY, name TEXT); \
         SET 'table.exec.state.ttl' = '2 s'; \
         CREATE MATERIALIZED VIEW brief AS {join}; \
         RESET 'table.exec.state.ttl'; \
         CREATE MATERIALIZED VIEW kept AS {join}; \
         INSERT INTO customers VALUES (1, 'ann'), (2, 'bob'); \
         INSERT INTO orders SELECT g, 1 + g % 2, g FROM generate_series(1, 1000) AS s(g); FLUSH"
    ))
    .await
    .unwrap();
    let count = |view: &'static str| {
        let c = &c;
        async move { one_number(c, &format!("SELECT count(*) FROM {view}")).await }
    };
    assert_eq!((count("brief").await, count("kept").await), (1000, 1000));
    let (without, with) =
        plans_without_and_with_ttl(&c, &format!("CREATE MATERIALIZED VIEW x AS {join}")).await;
    assert!(
        without.contains("unbounded (SET table.exec.state.ttl bounds it)"),
        "{without}"
    );
    assert!(with.contains("state TTL 2 s"), "{with}");
    let state = |view: &'static str| {
        let c = &c;
        async move {
            one_number(
                c,
                &format!(
                    "SELECT sum(state_bytes)::bigint FROM rivulet_operators \
                     WHERE job_name = '{view}' AND operator = 'HashJoin'"
                ),
            )
            .await
        }
    };
    // Past the TTL, the sweep at the barriers deletes the expired rows of both sides.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (brief, kept) = (state("brief").await, state("kept").await);
        if brief * 10 < kept {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "join state not swept: {brief} vs {kept} bytes"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A new customer row for id 1 meets no expired order; the view keeps the old results.
    c.batch_execute(
        "INSERT INTO customers VALUES (3, 'cy'); \
         INSERT INTO orders VALUES (2001, 3, 5), (2002, 1, 7); FLUSH",
    )
    .await
    .unwrap();
    let rows = |view: &'static str| {
        let c = &c;
        async move {
            sorted_rows(c, &format!("SELECT id, name FROM {view} WHERE id > 2000"))
                .await
                .unwrap()
        }
    };
    // Order 2001 meets the new customer 3; order 2002 meets no customer 1 under the TTL (the
    // customer row expired), and meets it in the view without one.
    assert_eq!(rows("brief").await, vec!["2001|cy".to_string()]);
    assert_eq!(
        rows("kept").await,
        vec!["2001|cy".to_string(), "2002|ann".to_string()]
    );
    assert_eq!((count("brief").await, count("kept").await), (1001, 1002));
    server.kill9().await.unwrap();
}
