//! The oracle property for top-N: after random INSERT/UPDATE/DELETE on three tables and a FLUSH,
//! every top-N, deduplication and DISTINCT ON view (over an append-only table too, where the
//! first row per key is a deduplication) equals DataFusion's batch answer to its own query, at
//! parallelism 1 and 3, and still does after the server is killed with SIGKILL in the middle of
//! the changes and restarted.
//!
//! Values are drawn from a small range, so groups have ties (RANK, DENSE_RANK) and identical rows
//! (the keyless table); deletes often take a group's top rows, so the next ones must enter from
//! state. ROW_NUMBER views order by a unique column last, since SQL leaves the order of tied rows
//! open. Half of the seeds run with no state cache (`--state-cache-mb 0`): no window is cached
//! and every read goes to RocksDB.
//!
//! Seeded and bounded: `RIVULET_ORACLE_SEED=<n>` replays one seed; a failure prints its seed, the
//! round and the view that differed.
#![allow(clippy::unwrap_used)]

use rand::Rng;
use rand::rngs::StdRng;
use rivulet_sql_tests::oracle::{self, Oracle};

/// (name, query): each rank function, ranges from the top and in the middle, the rank selected
/// or not, a residual condition, first and last row per key, ORDER BY ... LIMIT ... OFFSET,
/// DISTINCT ON, a top-N over an aggregate and an aggregate over a top-N.
const VIEWS: &[(&str, &str)] = &[
    (
        "top_rn",
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC, id) AS rn FROM t1) q \
         WHERE rn <= 3",
    ),
    (
        "top_rank",
        "SELECT id, k, v FROM (SELECT *, RANK() OVER (PARTITION BY k ORDER BY v DESC) AS r FROM t1) q \
         WHERE r <= 2 AND s <> 'c'",
    ),
    (
        "dense",
        "SELECT k, v, d FROM (SELECT k, v, DENSE_RANK() OVER (PARTITION BY k ORDER BY v) AS d FROM t1) q \
         WHERE d BETWEEN 2 AND 3",
    ),
    (
        "first_per_s",
        "SELECT id, k, s FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY s ORDER BY id) AS rn FROM t1) q \
         WHERE rn = 1",
    ),
    (
        "last_per_k",
        "SELECT k, v FROM (SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM t2) q \
         WHERE rn = 1",
    ),
    (
        "rank_dups",
        "SELECT * FROM (SELECT k, v, RANK() OVER (PARTITION BY k ORDER BY v) AS r FROM t2) q WHERE r < 3",
    ),
    (
        "rn_dups",
        "SELECT k, v FROM (SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM t2) q \
         WHERE rn <= 2",
    ),
    (
        "middle",
        "SELECT id, k, rn FROM (SELECT id, k, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v, id) AS rn FROM t1) q \
         WHERE rn BETWEEN 2 AND 4",
    ),
    (
        "limited",
        "SELECT id, v FROM t1 ORDER BY v DESC NULLS LAST, id LIMIT 5 OFFSET 2",
    ),
    (
        "distinct_on",
        "SELECT DISTINCT ON (k) k, id, v FROM t1 ORDER BY k, v DESC, id",
    ),
    (
        "top_groups",
        "SELECT * FROM (SELECT k, n, ROW_NUMBER() OVER (ORDER BY n DESC, k) AS rn \
         FROM (SELECT k, count(*) AS n FROM t1 GROUP BY k) c) q WHERE rn <= 2",
    ),
    (
        "dedup_first",
        "SELECT id, k, v FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v, id) AS rn FROM t3) q \
         WHERE rn = 1",
    ),
    (
        "dedup_last",
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k, v ORDER BY id DESC) AS rn FROM t3) q \
         WHERE rn = 1",
    ),
    (
        "distinct_on_append_only",
        "SELECT DISTINCT ON (k) k, id, v FROM t3 ORDER BY k, v DESC, id",
    ),
    (
        "sum_of_top",
        "SELECT k, sum(v) AS s, count(*) AS n FROM \
         (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC, id) AS rn FROM t1) q \
         WHERE rn <= 2 GROUP BY k",
    ),
];

fn random_statement(rng: &mut StdRng, next_id: &mut i32) -> String {
    let k = oracle::nullable(rng, 4);
    let v = oracle::nullable(rng, 12);
    let s = ["a", "b", "c", "d"][rng.random_range(0..4)];
    match rng.random_range(0..17) {
        0..=3 => {
            *next_id += 1;
            format!("INSERT INTO t1 VALUES ({next_id}, {k}, {v}, '{s}')")
        }
        4 => format!(
            "UPDATE t1 SET v = {v} WHERE id = {}",
            rng.random_range(0..=*next_id)
        ),
        5 => format!(
            "UPDATE t1 SET k = {k} WHERE id % 5 = {}",
            rng.random_range(0..5)
        ),
        6 => format!(
            "DELETE FROM t1 WHERE id = {}",
            rng.random_range(0..=*next_id)
        ),
        // The top rows of every group go: the next ones must enter.
        7 => format!("DELETE FROM t1 WHERE v >= {}", rng.random_range(9..12)),
        8 => format!(
            "DELETE FROM t1 WHERE k = {k} AND v > {}",
            rng.random_range(3..10)
        ),
        9 | 10 => format!("INSERT INTO t2 VALUES ({k}, {v}), ({k}, {v})"),
        11 => format!("DELETE FROM t2 WHERE v > {}", rng.random_range(6..12)),
        12 => format!("UPDATE t2 SET v = v + 1 WHERE k = {k}"),
        // The append-only table: deduplicated, first or last row per key.
        14..=16 => {
            *next_id += 2;
            let (a, b) = (*next_id - 1, *next_id);
            let w = oracle::nullable(rng, 12);
            format!("INSERT INTO t3 VALUES ({a}, {k}, {v}), ({b}, {k}, {w})")
        }
        _ => format!("UPDATE t1 SET v = v - 2 WHERE k = {k}"),
    }
}

#[tokio::test]
async fn top_n_views_equal_their_queries_after_random_changes_and_kill_9() {
    let oracle = Oracle {
        setup: "CREATE TABLE t1 (id INT PRIMARY KEY, k INT, v BIGINT, s VARCHAR); \
         CREATE TABLE t2 (k INT, v BIGINT); \
         CREATE TABLE t3 (id INT, k INT, v BIGINT) APPEND ONLY",
        views: VIEWS,
        statement: random_statement,
        rounds: 8,
        min_rows: 40,
    };
    for seed in oracle::seeds(&[1, 2, 3, 4, 5, 6]) {
        oracle.run(seed).await;
    }
}
