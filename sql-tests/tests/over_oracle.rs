//! The oracle property for window functions (OVER) over updatable input: after random
//! INSERT/UPDATE/DELETE and a FLUSH, every view with LAG, LEAD, running and moving aggregates,
//! FIRST_VALUE, RANK and whole-partition aggregates equals DataFusion's batch answer to its own
//! query, at parallelism 1 and 3, and after kill -9 (see `rivulet_sql_tests::oracle`).
//!
//! Functions that read neighbours order by a unique column (`seq`), since SQL leaves the order of
//! tied rows open; values repeat, so RANK and RANGE frames see ties. Rows move between
//! partitions and sequence positions, and go, so neighbours and running sums change.
#![allow(clippy::unwrap_used)]

use rand::Rng;
use rand::rngs::StdRng;
use rivulet_sql_tests::oracle::{self, Oracle};

/// (name, query).
const VIEWS: &[(&str, &str)] = &[
    (
        "neighbours",
        "SELECT seq, dev, val, lag(val) OVER (PARTITION BY dev ORDER BY seq) AS prev, \
         lead(val, 2, 0) OVER (PARTITION BY dev ORDER BY seq) AS next2 FROM m",
    ),
    (
        "running",
        "SELECT seq, dev, sum(val) OVER (PARTITION BY dev ORDER BY seq) AS total, \
         count(val) OVER (PARTITION BY dev ORDER BY seq ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS last3, \
         max(val) OVER (PARTITION BY dev ORDER BY val RANGE BETWEEN 3 PRECEDING AND CURRENT ROW) AS near \
         FROM m",
    ),
    (
        "whole",
        "SELECT seq, max(val) OVER (PARTITION BY tag) AS top, count(*) OVER () AS n, \
         first_value(seq) OVER (PARTITION BY tag ORDER BY seq DESC) AS newest FROM m",
    ),
    (
        "ranks",
        "SELECT dev, val, rank() OVER (PARTITION BY dev ORDER BY val) AS r, \
         dense_rank() OVER (PARTITION BY dev ORDER BY val DESC) AS d FROM b",
    ),
    (
        "over_agg",
        "SELECT dev, n, lag(n) OVER (ORDER BY dev) AS prev_n \
         FROM (SELECT dev, count(*) AS n FROM m GROUP BY dev) g",
    ),
    (
        "agg_over",
        "SELECT dev, sum(d) AS total, count(*) AS n \
         FROM (SELECT dev, val - lag(val) OVER (PARTITION BY dev ORDER BY seq) AS d FROM m) q GROUP BY dev",
    ),
];

fn random_statement(rng: &mut StdRng, next_seq: &mut i32) -> String {
    let dev = oracle::nullable(rng, 4);
    let val = oracle::nullable(rng, 10);
    let tag = ["x", "y", "z"][rng.random_range(0..3)];
    let some_seq = rng.random_range(0..=*next_seq);
    match rng.random_range(0..12) {
        0..=3 => {
            *next_seq += 1;
            format!("INSERT INTO m VALUES ({next_seq}, {dev}, {val}, '{tag}')")
        }
        4 => format!("UPDATE m SET val = {val} WHERE seq = {some_seq}"),
        5 => format!("UPDATE m SET dev = {dev} WHERE seq % 4 = {}", some_seq % 4),
        6 | 7 => format!("DELETE FROM m WHERE seq = {some_seq}"),
        8 => format!("DELETE FROM m WHERE dev = {dev} AND val > {val}"),
        9 | 10 => format!("INSERT INTO b VALUES ({dev}, {val}), ({dev}, {val})"),
        _ => format!("DELETE FROM b WHERE val < {}", rng.random_range(0..4)),
    }
}

#[tokio::test]
async fn over_views_equal_their_queries_after_random_changes_and_kill_9() {
    let oracle = Oracle {
        setup: "CREATE TABLE m (seq INT PRIMARY KEY, dev INT, val BIGINT, tag VARCHAR); \
                CREATE TABLE b (dev INT, val BIGINT)",
        views: VIEWS,
        statement: random_statement,
        rounds: 6,
        min_rows: 40,
    };
    for seed in oracle::seeds(&[1, 2, 3, 4]) {
        oracle.run(seed).await;
    }
}
