-- Interval joins: equi-joins of append-only tables with time bounds between the sides; state on
-- each side is dropped as the other side's watermark passes.
SET streaming_parallelism = 2;
CREATE TABLE orders (id INT, k INT, ts TIMESTAMP(3),
                     WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) APPEND ONLY;
CREATE TABLE pays (pid INT, k INT, ts TIMESTAMP(3),
                   WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) APPEND ONLY;
CREATE TABLE pays_updatable (pid INT, k INT, ts TIMESTAMP(3),
                             WATERMARK FOR ts AS ts - INTERVAL '5' SECOND);

CREATE MATERIALIZED VIEW paid AS
  SELECT o.id, p.pid, o.ts AS ots, p.ts AS pts FROM orders o JOIN pays p
  ON o.k = p.k AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND;

EXPLAIN CREATE MATERIALIZED VIEW x AS
  SELECT o.id, p.pid FROM orders o LEFT JOIN pays p
  ON o.k = p.k AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND;

CREATE MATERIALIZED VIEW both_sides AS
  SELECT o.id, p.pid FROM orders o FULL JOIN pays p
  ON o.k = p.k AND p.ts > o.ts - INTERVAL '2' SECOND AND p.ts <= o.ts + INTERVAL '10' SECOND;

CREATE MATERIALIZED VIEW comma AS
  SELECT o.id, p.pid FROM orders o, pays p
  WHERE o.k = p.k AND o.ts <= p.ts AND o.ts + INTERVAL '10' SECOND >= p.ts;

-- A window over an interval join, closed by the join's output watermark.
CREATE MATERIALIZED VIEW per_window AS
  SELECT window_start, window_end, count(*) AS n
  FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '10' SECONDS)) o JOIN pays p
  ON o.k = p.k AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND
  GROUP BY window_start, window_end EMIT ON WINDOW CLOSE;

-- With an updatable side the bounds are a residual filter of a regular join.
EXPLAIN CREATE MATERIALIZED VIEW x AS
  SELECT o.id, p.pid FROM orders o JOIN pays_updatable p
  ON o.k = p.k AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND;
