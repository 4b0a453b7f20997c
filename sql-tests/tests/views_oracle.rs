//! The oracle property for aggregates, unions and projections: after random INSERT/UPDATE/DELETE
//! on two tables and a FLUSH, every materialized view equals DataFusion's batch answer to its own
//! query over the tables' current rows, at parallelism 1 and 3, with the state cache off or
//! squeezed (groups leave memory and are read back from RocksDB), across kill -9 (see
//! [`oracle`]).
//!
//! Seeded and bounded: `RIVULET_ORACLE_SEED=<n>` replays one seed; a failure prints its seed, the
//! round and the view that differed.
#![allow(clippy::unwrap_used)]

use rand::Rng;
use rand::rngs::StdRng;
use rivulet_sql_tests::oracle::{self, Oracle};

/// (name, query): aggregates with retractions, min/max under deletes, FILTER, DISTINCT, HAVING, a global
/// aggregate, views on views, a keyed projection, and a view without a key (duplicates counted).
const VIEWS: &[(&str, &str)] = &[
    (
        "by_k",
        "SELECT k, count(*) AS n, count(v) AS nv, sum(v) AS s, min(v) AS lo, max(v) AS hi, \
         avg(v) AS mean, count(DISTINCT v) AS dv FROM t1 GROUP BY k",
    ),
    (
        "by_s",
        "SELECT s, count(*) AS n FROM t1 WHERE v > 50 GROUP BY s HAVING count(*) > 1",
    ),
    (
        "strings",
        "SELECT k, min(s) AS lo, max(s) AS hi, string_agg(s, ',' ORDER BY s) AS joined \
         FROM t1 GROUP BY k",
    ),
    (
        "filtered",
        "SELECT k, count(*) FILTER (WHERE v > 50) AS big, sum(v) FILTER (WHERE s <> 'a') AS s_not_a, \
         min(v) FILTER (WHERE s = 'b') AS lo_b, count(DISTINCT s) FILTER (WHERE v < 30) AS few \
         FROM t1 GROUP BY k",
    ),
    // Aggregates ordered by other columns (ties broken by the unique id), DISTINCT, FILTER.
    // (One ordering per query: DataFusion's batch aggregate, the oracle, refuses several.)
    (
        "ordered",
        "SELECT k, string_agg(s, ',' ORDER BY v DESC, id) AS by_v FROM t1 GROUP BY k",
    ),
    (
        "ordered_distinct",
        "SELECT k, string_agg(DISTINCT s, '|' ORDER BY s DESC) AS kinds FROM t1 GROUP BY k",
    ),
    (
        "ordered_filtered",
        "SELECT k, string_agg(s, ';' ORDER BY id) FILTER (WHERE v > 40) AS big FROM t1 GROUP BY k",
    ),
    (
        "arrays",
        "SELECT k, array_agg(v ORDER BY id) AS vs FROM t1 GROUP BY k",
    ),
    (
        "arrays_distinct",
        "SELECT k, array_agg(DISTINCT s ORDER BY s DESC) AS ss FROM t1 GROUP BY k",
    ),
    (
        "arrays_filtered",
        "SELECT k, array_agg(id ORDER BY v, id) FILTER (WHERE v < 50) AS small FROM t1 GROUP BY k",
    ),
    (
        "jsonb_arrays",
        "SELECT k, jsonb_agg(jsonb_build_object('id', id, 's', s) ORDER BY v, id) AS docs, \
         jsonb_agg(DISTINCT s ORDER BY s) FILTER (WHERE v > 20) AS kinds FROM t1 GROUP BY k",
    ),
    (
        "except_all",
        "SELECT k, v % 7 AS r FROM t1 EXCEPT ALL SELECT k, v % 7 FROM t2",
    ),
    (
        "intersect_all",
        "SELECT k, v % 5 AS r FROM t1 INTERSECT ALL SELECT k, v % 5 FROM t2",
    ),
    // Aggregates recomputed from each group's multiset of values.
    (
        "recomputed",
        "SELECT k, approx_distinct(v) AS d, median(v) AS med, approx_median(v) AS am, \
         approx_percentile_cont(0.75) WITHIN GROUP (ORDER BY v) AS p75 FROM t1 GROUP BY k",
    ),
    ("keys2", "SELECT DISTINCT k FROM t2"),
    (
        "global2",
        "SELECT count(*) AS n, sum(v) AS s, bool_or(v > 90) AS any_big, bool_and(v > 5) AS all_small FROM t2",
    ),
    (
        "on_view",
        "SELECT count(*) AS groups, sum(n) AS total FROM by_s",
    ),
    (
        "projected",
        "SELECT id, v * 2 AS v2, s FROM t1 WHERE k <> 3",
    ),
    (
        "unioned",
        "SELECT k, v FROM t1 WHERE v > 20 UNION ALL SELECT k, v FROM t2",
    ),
    (
        "union_sums",
        "SELECT k, count(*) AS n, sum(v) AS s, max(v) AS hi \
         FROM (SELECT k, v FROM t1 UNION ALL SELECT k, v FROM t2 UNION ALL SELECT k, v FROM t2 WHERE v < 30) u \
         GROUP BY k",
    ),
    ("union_distinct", "SELECT k FROM t1 UNION SELECT k FROM t2"),
    // Nexmark q4's shape: an aggregate whose GROUP BY columns are not all selected (a bag of
    // rows, duplicates counted), aggregated again.
    (
        "dropped_key",
        "SELECT max(v) AS hi, s FROM t1 GROUP BY k, s",
    ),
    (
        "q4_shape",
        "SELECT s, avg(hi) AS mean, count(*) AS n FROM (SELECT max(v) AS hi, s FROM t1 GROUP BY k, s) q GROUP BY s",
    ),
    // Grouping sets: a union of one aggregate per set, padded with NULLs and the grouping id.
    (
        "rollup",
        "SELECT k, s, sum(v) AS total, count(*) AS n, GROUPING(k, s) AS g FROM t1 GROUP BY ROLLUP(k, s)",
    ),
    (
        "cube",
        "SELECT k, s, max(v) AS hi FROM t1 GROUP BY CUBE(k, s)",
    ),
];

fn random_statement(rng: &mut StdRng, next_id: &mut i32) -> String {
    let k = rng.random_range(0..6);
    let v = if rng.random_bool(0.1) {
        "NULL".to_string()
    } else {
        rng.random_range(0..100).to_string()
    };
    let s = ["a", "b", "c", "dd", "e"][rng.random_range(0..5)];
    match rng.random_range(0..10) {
        0..=3 => {
            *next_id += 1;
            format!("INSERT INTO t1 VALUES ({next_id}, {k}, {v}, '{s}')")
        }
        4 if rng.random_bool(0.5) => format!(
            "UPDATE t1 SET v = {v}, s = '{s}' WHERE id = {}",
            rng.random_range(0..=*next_id)
        ),
        // An upsert: an update where the id is taken, an insert where it is free (deleted).
        4 => format!(
            "INSERT INTO t1 VALUES ({}, {k}, {v}, '{s}') ON CONFLICT (id) DO UPDATE \
             SET v = EXCLUDED.v, s = EXCLUDED.s WHERE t1.k <> EXCLUDED.k",
            rng.random_range(0..=*next_id)
        ),
        5 if rng.random_bool(0.5) => format!(
            "UPDATE t1 SET k = {k} WHERE id % 7 = {}",
            rng.random_range(0..7)
        ),
        // Reading another table: a join, a subquery.
        5 if rng.random_bool(0.5) => format!(
            "UPDATE t1 SET v = t2.v FROM t2 WHERE t2.k = t1.k AND t1.id % 5 = {}",
            rng.random_range(0..5)
        ),
        5 => format!("DELETE FROM t2 WHERE k IN (SELECT k FROM t1 WHERE v > {v})"),
        6 => format!(
            "DELETE FROM t1 WHERE id = {}",
            rng.random_range(0..=*next_id)
        ),
        7 => format!("INSERT INTO t2 VALUES ({k}, {v}), ({}, {v})", (k + 1) % 6),
        8 => format!(
            "DELETE FROM t2 WHERE k = {k} AND v < {}",
            rng.random_range(0..100)
        ),
        _ => format!("UPDATE t2 SET v = v + 1 WHERE k = {k}"),
    }
}

#[tokio::test]
async fn views_equal_their_queries_after_random_changes() {
    let oracle = Oracle {
        setup: "CREATE TABLE t1 (id INT PRIMARY KEY, k INT, v BIGINT, s VARCHAR); \
         CREATE TABLE t2 (k INT, v BIGINT)",
        views: VIEWS,
        statement: random_statement,
        rounds: 6,
        min_rows: 20,
    };
    for seed in oracle::seeds(&[1, 2, 3, 4]) {
        oracle.run(seed).await;
    }
}
