-- TUMBLE windows (RisingWave's and Flink's forms, and Flink's legacy GROUP BY TUMBLE): window
-- bounds are computed per row; an aggregate grouped by one closes its windows on the watermark.
SET streaming_parallelism = 2;
CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP,
                   WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) APPEND ONLY;
CREATE TABLE keyed_bids (id INT PRIMARY KEY, auction BIGINT, price BIGINT, ts TIMESTAMP,
                         WATERMARK FOR ts AS ts - INTERVAL '5' SECOND);

CREATE MATERIALIZED VIEW updating AS
  SELECT window_start, window_end, count(*) AS n, sum(price) AS total
  FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end;

CREATE MATERIALIZED VIEW closed AS
  SELECT window_start, window_end, count(*) AS n, sum(price) AS total
  FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end
  EMIT ON WINDOW CLOSE;

EXPLAIN CREATE MATERIALIZED VIEW x AS
  SELECT window_end, count(*) AS n FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY window_end
  EMIT ON WINDOW CLOSE;

CREATE MATERIALIZED VIEW flink AS
  SELECT window_start, window_end, auction, max(price) AS top
  FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECONDS))
  GROUP BY window_start, window_end, auction;

CREATE MATERIALIZED VIEW legacy AS
  SELECT TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws, count(*) AS n
  FROM bids GROUP BY TUMBLE(ts, INTERVAL '10' SECOND);

-- Windows over an updatable table.
CREATE MATERIALIZED VIEW keyed_windows AS
  SELECT window_start, count(*) AS n FROM TUMBLE(keyed_bids, ts, INTERVAL '1' MINUTE) GROUP BY window_start;

-- Per-row windows without an aggregate: EMIT ON WINDOW CLOSE holds each row until the watermark
-- passes its event time, which the query must keep.
CREATE MATERIALIZED VIEW rows_closed AS
  SELECT auction, price, ts, window_start FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) EMIT ON WINDOW CLOSE;
CREATE MATERIALIZED VIEW bad_rows AS
  SELECT auction, price, window_start FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) EMIT ON WINDOW CLOSE;

-- Allowed lateness keeps emit-on-update windows open longer.
SET 'table.exec.emit.allow-lateness' = '1 min';
CREATE MATERIALIZED VIEW late AS
  SELECT window_start, count(*) AS n FROM TUMBLE(bids, ts, INTERVAL '10' SECOND) GROUP BY window_start;
RESET 'table.exec.emit.allow-lateness';

CREATE MATERIALIZED VIEW bad AS SELECT auction, count(*) AS n FROM bids GROUP BY auction EMIT ON WINDOW CLOSE;
