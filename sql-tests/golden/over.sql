-- Window functions (OVER) other than top-N: an OverWindow behind a hash exchange on the
-- partition columns; over an append-only table with a watermark, ordered by its event time,
-- Flink's event-time OVER (EventTimeOver), and EMIT ON WINDOW CLOSE without an aggregate.
SET streaming_parallelism = 2;
CREATE TABLE readings (id INT PRIMARY KEY, sensor VARCHAR, seq INT, val INT);
CREATE TABLE trades (sym TEXT, px BIGINT, ts TIMESTAMP,
                     WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) APPEND ONLY;
CREATE TABLE quotes (sym TEXT PRIMARY KEY, px BIGINT, ts TIMESTAMP,
                     WATERMARK FOR ts AS ts - INTERVAL '2' SECOND);

EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT id, lag(val) OVER (PARTITION BY sensor ORDER BY seq) AS prev FROM readings;
CREATE MATERIALIZED VIEW running AS
  SELECT id, sum(val) OVER (PARTITION BY sensor ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS total,
         lead(val, 2) OVER (PARTITION BY sensor ORDER BY seq) AS next2
  FROM readings;

CREATE MATERIALIZED VIEW moving AS
  SELECT sym, px, ts,
         sum(px) OVER (PARTITION BY sym ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS s10,
         count(*) OVER (PARTITION BY sym ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS n10
  FROM trades;
CREATE MATERIALIZED VIEW last2 AS
  SELECT sym, ts, max(px) OVER (PARTITION BY sym ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS top2
  FROM trades;
CREATE MATERIALIZED VIEW filtered AS
  SELECT sym, ts,
         sum(px) FILTER (WHERE px > 1) OVER (PARTITION BY sym ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS big
  FROM trades;

EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT sym, ts FROM trades EMIT ON WINDOW CLOSE;
CREATE MATERIALIZED VIEW settled AS SELECT sym, px, ts FROM trades WHERE px > 1 EMIT ON WINDOW CLOSE;

-- Over an updatable table, the general operator.
EXPLAIN CREATE MATERIALIZED VIEW x AS
  SELECT sym, sum(px) OVER (ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS s FROM quotes;

-- Functions over different windows: one OverWindow per window, each behind its own exchange.
CREATE MATERIALIZED VIEW two_windows AS
  SELECT id, lag(val) OVER (PARTITION BY sensor ORDER BY seq) AS prev,
         lag(val) OVER (PARTITION BY id ORDER BY seq) AS other
  FROM readings;

-- Refused.
CREATE MATERIALIZED VIEW bad_slide AS
  SELECT sym, bool_and(px > 1) OVER (PARTITION BY sym ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS b FROM trades;
CREATE MATERIALIZED VIEW bad_eowc AS SELECT sym, ts FROM quotes EMIT ON WINDOW CLOSE;
CREATE MATERIALIZED VIEW bad_unordered AS SELECT id, lag(val) OVER (PARTITION BY sensor) AS prev FROM readings;
