-- Window joins: both sides windowed by the same TUMBLE and joined on the window's bounds,
-- joined per window when it closes.
SET streaming_parallelism = 2;
CREATE TABLE l (id INT, k INT, ts TIMESTAMP(3),
                WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY;
CREATE TABLE r (id INT, k INT, ts TIMESTAMP(3),
                WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY;

CREATE MATERIALIZED VIEW wj AS
  SELECT L.id AS lid, R.id AS rid, L.window_start, L.window_end
  FROM (SELECT * FROM TABLE(TUMBLE(TABLE l, DESCRIPTOR(ts), INTERVAL '10' SECONDS))) L
  FULL JOIN (SELECT * FROM TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '10' SECONDS))) R
  ON L.k = R.k AND L.window_start = R.window_start AND L.window_end = R.window_end;

EXPLAIN CREATE MATERIALIZED VIEW x AS
  SELECT a.id AS lid, b.id AS rid
  FROM TUMBLE(l, ts, INTERVAL '10' SECOND) a LEFT JOIN TUMBLE(r, ts, INTERVAL '10' SECOND) b
  ON a.k = b.k AND a.window_start = b.window_start;

CREATE MATERIALIZED VIEW per_window AS
  SELECT window_start, count(*) AS n
  FROM (SELECT L.window_start, L.window_end
        FROM TABLE(TUMBLE(TABLE l, DESCRIPTOR(ts), INTERVAL '10' SECONDS)) L
        JOIN TABLE(TUMBLE(TABLE r, DESCRIPTOR(ts), INTERVAL '10' SECONDS)) R
        ON L.k = R.k AND L.window_start = R.window_start AND L.window_end = R.window_end) j
  GROUP BY window_start EMIT ON WINDOW CLOSE;
