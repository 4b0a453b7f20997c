//! The oracle property for Flink's event-time OVER aggregates (RANGE and ROWS frames ordered by
//! the event time of an append-only table), for EMIT ON WINDOW CLOSE without an aggregate, and
//! for top-N per time window (emitted on update, and on window close): after each round of
//! out-of-order inserts and a FLUSH, a view holds exactly the rows it should given the
//! watermark, each with the values DataFusion's batch query gives, at parallelism 1 and 3,
//! across kill -9. (That state stays within the frame, and that closed windows are freed, is
//! checked by the operators' own tests, which count their stored keys.)
#![allow(clippy::unwrap_used)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rivulet_sql_tests::{TestServer, sorted_rows, text_rows};

const VIEWS: &[(&str, &str)] = &[
    (
        "ranged",
        "SELECT id, dev, val, ts, \
         sum(val) OVER (PARTITION BY dev ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS s, \
         count(*) OVER (PARTITION BY dev ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS n, \
         max(val) OVER (PARTITION BY dev ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS top \
         FROM ev",
    ),
    (
        "rowed",
        "SELECT id, ts, \
         min(val) OVER (PARTITION BY dev ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS low, \
         avg(val) OVER (PARTITION BY dev ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS mean \
         FROM ev",
    ),
    (
        "everything",
        "SELECT id, sum(val) OVER (ORDER BY ts RANGE BETWEEN INTERVAL '1' MINUTE PRECEDING AND CURRENT ROW) AS s \
         FROM ev",
    ),
    // RisingWave's EMIT ON WINDOW CLOSE without an aggregate (the clause is added at CREATE).
    ("settled", "SELECT id, dev, val, ts FROM ev WHERE val > 10"),
    // Flink's window Top-N, emitted as rows change; and per window on close (RisingWave's).
    (
        "window_top",
        "SELECT window_start, id, val, rn FROM (SELECT *, ROW_NUMBER() OVER \
         (PARTITION BY window_start, window_end ORDER BY val DESC, id) AS rn \
         FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '5' SECOND))) WHERE rn <= 3",
    ),
    (
        "closed_top",
        "SELECT window_end, dev, n FROM (SELECT window_end, dev, n, ROW_NUMBER() OVER \
         (PARTITION BY window_end ORDER BY n DESC, dev) AS rn FROM (SELECT window_end, dev, \
         count(*) AS n FROM TUMBLE(ev, ts, INTERVAL '5' SECOND) GROUP BY window_end, dev) c) \
         WHERE rn <= 2",
    ),
];

/// What follows view `name`'s query at CREATE.
fn suffix(name: &str) -> &'static str {
    match name {
        "settled" | "closed_top" => " EMIT ON WINDOW CLOSE",
        _ => "",
    }
}

/// The rows of view `name`'s batch answer `q` that the view holds once the watermark is `wm`
/// (SQL): rows of event times before it, all of an emit-on-update top-N, closed windows.
fn holds(name: &str) -> &'static str {
    match name {
        "window_top" => "true",
        "closed_top" => "q.window_end <= wm.at",
        _ => "q.id IN (SELECT id FROM ev WHERE ts < wm.at)",
    }
}

/// Rows `from..from + n`: each 200 ms after the last, out of order by up to 2 s (the watermark
/// waits 3 s, so none is late); event times are unique, so ROWS frames are well defined.
fn rows(rng: &mut StdRng, from: i64, n: i64) -> String {
    let values: Vec<String> = (from..from + n)
        .map(|i| {
            let us = i * 200_001 - rng.random_range(0..2000) * 1000;
            format!(
                "({i}, {}, {}, TIMESTAMP '2026-01-01 10:00:00' + INTERVAL '{us} microseconds')",
                rng.random_range(0..5),
                rng.random_range(-20..100)
            )
        })
        .collect();
    format!("INSERT INTO ev VALUES {}", values.join(", "))
}

#[tokio::test]
async fn event_time_over_views_hold_the_rows_the_watermark_passed_with_the_batch_values() {
    for seed in [1u64, 2] {
        let parallelism = [1, 3][(seed % 2) as usize];
        let dir = tempfile::tempdir().unwrap();
        let mut server = TestServer::start_in(dir.path()).await.unwrap();
        let mut c = server.connect("dev").await.unwrap();
        c.batch_execute(&format!(
            "CREATE TABLE ev (id INT, dev INT, val BIGINT, ts TIMESTAMP, \
               WATERMARK FOR ts AS ts - INTERVAL '3' SECOND) APPEND ONLY;
             SET streaming_parallelism = {parallelism};"
        ))
        .await
        .unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut next = 0;
        // Rows before the views exist: the backfill goes through the same operator.
        c.batch_execute(&rows(&mut rng, next, 150)).await.unwrap();
        next += 150;
        for (name, query) in VIEWS {
            c.batch_execute(&format!(
                "CREATE MATERIALIZED VIEW {name} AS {query}{}",
                suffix(name)
            ))
            .await
            .unwrap();
        }
        let plan = text_rows(
            &c,
            &format!("EXPLAIN CREATE MATERIALIZED VIEW x AS {}", VIEWS[0].1),
        )
        .await
        .unwrap();
        assert!(plan.iter().any(|l| l.contains("EventTimeOver")), "{plan:?}");
        for round in 0..6 {
            for _ in 0..4 {
                c.batch_execute(&rows(&mut rng, next, 50)).await.unwrap();
                next += 50;
            }
            if round % 2 == 1 {
                server.kill9().await.unwrap();
                server = TestServer::start_in(dir.path()).await.unwrap();
                c = server.connect("dev").await.unwrap();
            }
            c.batch_execute("FLUSH").await.unwrap();
            let mut compared = 0;
            for (name, query) in VIEWS {
                let got = sorted_rows(&c, &format!("SELECT * FROM {name}"))
                    .await
                    .unwrap();
                let want = sorted_rows(
                    &c,
                    &format!(
                        "SELECT q.* FROM ({query}) q, \
                           (SELECT max(ts) - INTERVAL '3' SECOND AS at FROM ev) wm \
                         WHERE {}",
                        holds(name)
                    ),
                )
                .await
                .unwrap();
                assert_eq!(
                    got, want,
                    "seed {seed} (parallelism {parallelism}), round {round}: {name}"
                );
                compared += got.len();
            }
            eprintln!("seed {seed}, round {round}: {compared} rows equal");
            assert!(compared > 300);
        }
        server.kill9().await.unwrap();
    }
}
