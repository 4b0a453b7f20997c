//! The oracle property for joins: after random INSERT/UPDATE/DELETE on three tables and a FLUSH,
//! every view with a join or a subquery equals DataFusion's batch answer to its own query, at
//! parallelism 1 and more, and still does after the server is killed with SIGKILL in the middle
//! of the changes and restarted.
//!
//! The same property holds over `APPEND ONLY` tables, whose join sides store each row under a
//! sequence number rather than a count (a blind write): inserts only, every join kind, with the
//! kill -9 replaying epochs whose sequence numbers were already used before the crash.
//!
//! Half of the seeds run with no state cache (`--state-cache-mb 0`): state that does not fit in
//! memory is read back from RocksDB.
//!
//! Seeded and bounded: `RIVULET_ORACLE_SEED=<n>` replays one seed; a failure prints its seed, the
//! round and the view that differed.
#![allow(clippy::unwrap_used)]

use rand::Rng;
use rand::rngs::StdRng;
use rivulet_sql_tests::oracle::{self, Oracle};

/// (name, query): every join kind, residual conditions, NULL-safe keys, subqueries of each form
/// (correlated by equality, by inequalities, with outer columns in their select list; EXISTS
/// and IN under OR and as values),
/// chains, self-joins, aggregates over joins and joins over aggregates.
const VIEWS: &[(&str, &str)] = &[
    (
        "inner",
        "SELECT t1.id, t1.v, t2.w FROM t1 JOIN t2 ON t1.k = t2.k",
    ),
    (
        "left_",
        "SELECT t1.id, t2.w FROM t1 LEFT JOIN t2 ON t1.k = t2.k AND t2.w > t1.v",
    ),
    (
        "right_",
        "SELECT t1.id, t2.k, t2.w FROM t1 RIGHT JOIN t2 ON t1.k = t2.k",
    ),
    (
        "full_",
        "SELECT t1.id, t3.name FROM t1 FULL JOIN t3 ON t1.k = t3.k",
    ),
    (
        "nulls",
        "SELECT t1.id, t2.w FROM t1 JOIN t2 ON t1.k IS NOT DISTINCT FROM t2.k",
    ),
    (
        "semi",
        "SELECT * FROM t1 WHERE EXISTS (SELECT 1 FROM t2 WHERE t2.k = t1.k AND t2.w < 50)",
    ),
    (
        "anti",
        "SELECT * FROM t1 WHERE NOT EXISTS (SELECT 1 FROM t3 WHERE t3.k = t1.k)",
    ),
    (
        "in_",
        "SELECT id, s FROM t1 WHERE k IN (SELECT k FROM t3 WHERE name <> 'c')",
    ),
    (
        "scalar",
        "SELECT id, v, (SELECT max(w) FROM t2) AS top FROM t1",
    ),
    (
        "not_in",
        "SELECT id, v FROM t1 WHERE k NOT IN (SELECT k FROM t2 WHERE w < 60)",
    ),
    (
        "not_in_nonnull",
        "SELECT id, s FROM t1 WHERE v NOT IN (SELECT k FROM t3 WHERE k IS NOT NULL)",
    ),
    (
        "correlated",
        "SELECT id, (SELECT count(*) FROM t2 WHERE t2.k = t1.k) AS n FROM t1",
    ),
    (
        "correlated_range",
        "SELECT id, (SELECT count(*) FROM t2 WHERE t2.k = t1.k AND t2.w < t1.v) AS n FROM t1",
    ),
    (
        "as_of",
        "SELECT id, (SELECT w FROM t2 WHERE t2.k = t1.k AND t2.w <= t1.v ORDER BY w DESC LIMIT 1) \
         AS w FROM t1",
    ),
    (
        "outer_item",
        "SELECT id, (SELECT max(w) + t1.v FROM t2 WHERE t2.k > t1.k OR t2.k IS NULL) AS m FROM t1",
    ),
    (
        "lateral_top",
        "SELECT t1.id, x.w FROM t1 CROSS JOIN LATERAL \
         (SELECT w FROM t2 WHERE t2.k = t1.k ORDER BY w DESC LIMIT 2) x",
    ),
    (
        "lateral_range",
        "SELECT t1.id, x.n, x.top FROM t1 LEFT JOIN LATERAL \
         (SELECT count(*) AS n, max(w) AS top FROM t2 WHERE t2.w < t1.v) x ON TRUE",
    ),
    (
        "lateral_groups",
        "SELECT t1.id, x.name, x.n FROM t1 CROSS JOIN LATERAL (SELECT name, count(*) AS n \
         FROM t3 WHERE t3.k = t1.k GROUP BY name ORDER BY n DESC, name LIMIT 1) x",
    ),
    (
        "or_exists",
        "SELECT id, v FROM t1 WHERE v > 50 OR EXISTS (SELECT 1 FROM t2 WHERE t2.k = t1.k AND t2.w < 30)",
    ),
    (
        "exists_in_values",
        "SELECT id, EXISTS (SELECT 1 FROM t2 WHERE t2.k = t1.k) AS e, \
         t1.k IN (SELECT k FROM t3 WHERE name <> 'c') AS i FROM t1",
    ),
    (
        "chain",
        "SELECT t1.id, t2.w, t3.name FROM t1 JOIN t2 ON t1.k = t2.k JOIN t3 ON t2.k = t3.k",
    ),
    (
        "self_",
        "SELECT a.id, b.id AS other FROM t1 a JOIN t1 b ON a.k = b.k + 1",
    ),
    (
        "agg",
        "SELECT t3.name, count(*) AS n, sum(t1.v) AS s FROM t1 JOIN t3 ON t1.k = t3.k GROUP BY t3.name",
    ),
    (
        "over_agg",
        "SELECT g.k, g.n, t3.name FROM (SELECT k, count(*) AS n FROM t2 GROUP BY k) g LEFT JOIN t3 ON g.k = t3.k",
    ),
];

fn random_statement(rng: &mut StdRng, next_id: &mut i32) -> String {
    let k = if rng.random_bool(0.1) {
        "NULL".to_string()
    } else {
        rng.random_range(0..6).to_string()
    };
    let v = rng.random_range(0..100);
    let s = ["a", "b", "c"][rng.random_range(0..3)];
    match rng.random_range(0..12) {
        0..=2 => {
            *next_id += 1;
            format!("INSERT INTO t1 VALUES ({next_id}, {k}, {v}, '{s}')")
        }
        3 => format!(
            "UPDATE t1 SET v = {v} WHERE id = {}",
            rng.random_range(0..=*next_id)
        ),
        4 => format!(
            "UPDATE t1 SET k = {k} WHERE id % 5 = {}",
            rng.random_range(0..5)
        ),
        5 => format!(
            "DELETE FROM t1 WHERE id = {}",
            rng.random_range(0..=*next_id)
        ),
        6 | 7 => format!("INSERT INTO t2 VALUES ({k}, {v})"),
        8 => format!("DELETE FROM t2 WHERE w < {}", rng.random_range(0..30)),
        9 => format!("UPDATE t2 SET w = w + 7 WHERE k = {k}"),
        10 => format!(
            "INSERT INTO t3 VALUES ({}, {k}, '{s}')",
            rng.random_range(0..8)
        ),
        _ => format!("DELETE FROM t3 WHERE id = {}", rng.random_range(0..8)),
    }
}

#[tokio::test]
async fn join_views_equal_their_queries_after_random_changes_and_kill_9() {
    let oracle = Oracle {
        setup: "CREATE TABLE t1 (id INT PRIMARY KEY, k INT, v BIGINT, s VARCHAR); \
         CREATE TABLE t2 (k INT, w BIGINT); \
         CREATE TABLE t3 (id INT, k INT, name VARCHAR)",
        views: VIEWS,
        statement: random_statement,
        rounds: 6,
        min_rows: 40,
    };
    for seed in oracle::seeds(&[1, 2, 3, 4]) {
        oracle.run(seed).await;
    }
}

/// (name, query) over the append-only tables `a1`, `a2`, `a3`: both sides, one side and neither
/// side append-only are all planned differently, so each kind is here with each mix.
const APPEND_ONLY_VIEWS: &[(&str, &str)] = &[
    (
        "inner_",
        "SELECT a1.id, a1.v, a2.w FROM a1 JOIN a2 ON a1.k = a2.k",
    ),
    (
        "residual",
        "SELECT a1.id, a2.w FROM a1 JOIN a2 ON a1.k = a2.k AND a2.w > a1.v",
    ),
    (
        "left_",
        "SELECT a1.id, a2.w FROM a1 LEFT JOIN a2 ON a1.k = a2.k AND a2.w < a1.v",
    ),
    (
        "right_",
        "SELECT a1.id, a3.k, a3.name FROM a1 RIGHT JOIN a3 ON a1.k = a3.k",
    ),
    (
        "full_",
        "SELECT a2.w, a3.name FROM a2 FULL JOIN a3 ON a2.k = a3.k",
    ),
    (
        "semi",
        "SELECT * FROM a1 WHERE EXISTS (SELECT 1 FROM a2 WHERE a2.k = a1.k AND a2.w < 50)",
    ),
    (
        "anti",
        "SELECT * FROM a1 WHERE NOT EXISTS (SELECT 1 FROM a3 WHERE a3.k = a1.k)",
    ),
    (
        "not_in",
        "SELECT id, v FROM a1 WHERE k NOT IN (SELECT k FROM a2 WHERE w < 20)",
    ),
    (
        "self_",
        "SELECT x.id, y.id AS other FROM a1 x JOIN a1 y ON x.k = y.k AND x.id < y.id",
    ),
    (
        "chain",
        "SELECT a1.id, a2.w, a3.name FROM a1 JOIN a2 ON a1.k = a2.k JOIN a3 ON a2.k = a3.k",
    ),
    (
        // The inner join of two append-only sides is append-only: the aggregate over it is
        // planned for an input without retractions.
        "agg",
        "SELECT a3.name, count(*) AS n, max(a1.v) AS top FROM a1 JOIN a3 ON a1.k = a3.k \
         GROUP BY a3.name",
    ),
    (
        // One side updatable: only the other side stores rows under a sequence.
        "mixed",
        "SELECT a1.id, g.n FROM a1 JOIN (SELECT k, count(*) AS n FROM a2 GROUP BY k) g \
         ON a1.k = g.k",
    ),
];

/// A random insert into one of the append-only tables, often of several rows so that one epoch
/// stores duplicates and several rows under one key.
fn random_insert(rng: &mut StdRng, next_id: &mut i32) -> String {
    let table = rng.random_range(0..4);
    let rows: Vec<String> = (0..rng.random_range(1..4))
        .map(|_| {
            let k = oracle::nullable(rng, 6);
            let v = rng.random_range(0..100);
            match table {
                0 | 1 => {
                    *next_id += 1;
                    format!("({next_id}, {k}, {v})")
                }
                2 => format!("({k}, {v})"),
                _ => format!("({k}, '{}')", ["a", "b", "c"][rng.random_range(0..3)]),
            }
        })
        .collect();
    let name = ["a1", "a1", "a2", "a3"][table];
    format!("INSERT INTO {name} VALUES {}", rows.join(", "))
}

#[tokio::test]
async fn append_only_join_views_equal_their_queries_after_inserts_and_kill_9() {
    let oracle = Oracle {
        setup: "CREATE TABLE a1 (id INT, k INT, v BIGINT) APPEND ONLY; \
         CREATE TABLE a2 (k INT, w BIGINT) APPEND ONLY; \
         CREATE TABLE a3 (k INT, name VARCHAR) APPEND ONLY",
        views: APPEND_ONLY_VIEWS,
        statement: random_insert,
        rounds: 6,
        min_rows: 40,
    };
    for seed in oracle::seeds(&[1, 2, 3, 4]) {
        oracle.run(seed).await;
    }
}
