-- The EXPLAIN statements of sql-tests/**/*.slt not already in another case, with their tables:
-- the same text must come out here as from the server (checked when these cases were written).
SET streaming_parallelism = 2;

-- sql-tests/streaming/string_agg.slt
CREATE TABLE t (k INT, s VARCHAR, n INT);
EXPLAIN CREATE MATERIALIZED VIEW e AS SELECT k, string_agg(s, ',' ORDER BY n DESC NULLS LAST) AS x FROM t GROUP BY k;

-- sql-tests/streaming/aggregate.slt
CREATE TABLE e (k INT, v BIGINT);
SET streaming_parallelism = 3;
EXPLAIN CREATE MATERIALIZED VIEW ev AS SELECT k, sum(v) AS s FROM e WHERE v > 0 GROUP BY k;
SET streaming_parallelism = 2;

-- sql-tests/streaming/approx.slt
CREATE TABLE ap_t (k INT, v INT, f DOUBLE);
EXPLAIN CREATE MATERIALIZED VIEW e AS
  SELECT k, approx_percentile_cont(0.9) WITHIN GROUP (ORDER BY f DESC) AS p FROM ap_t GROUP BY k;

-- sql-tests/streaming/array_agg.slt
CREATE TABLE aa_t (id INT PRIMARY KEY, k INT, s TEXT, v INT);
EXPLAIN CREATE MATERIALIZED VIEW e AS SELECT k, array_agg(s ORDER BY v DESC) FILTER (WHERE v > 1) AS x FROM aa_t GROUP BY k;

-- sql-tests/windows/over_event_time.slt
CREATE TABLE trades (sym TEXT, px BIGINT, ts TIMESTAMP,
                     WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) APPEND ONLY;
EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT sym, sum(px) OVER (PARTITION BY sym ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW) AS s FROM trades;

-- sql-tests/windows/topn_window.slt
CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP,
                   WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) APPEND ONLY;
EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT window_start, auction, price FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY price DESC) AS rn FROM TUMBLE(bids, ts, INTERVAL '10' SECOND)) WHERE rn <= 2;
CREATE MATERIALIZED VIEW busiest AS
  SELECT window_start, auction, n FROM (
    SELECT window_start, auction, n,
           ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY n DESC, auction) AS rn
    FROM (SELECT window_start, auction, count(*) AS n FROM TUMBLE(bids, ts, INTERVAL '10' SECOND)
          GROUP BY window_start, auction) c
  ) WHERE rn <= 1 EMIT ON WINDOW CLOSE;

-- sql-tests/streaming/topn.slt
CREATE TABLE events (device INT, ts TIMESTAMP, reading INT) APPEND ONLY;
EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT device, ts FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY device ORDER BY ts DESC) AS rn FROM events) WHERE rn = 1;
