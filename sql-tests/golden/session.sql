-- SESSION windows: a SessionAggregate over the table, behind a hash exchange on the partition
-- keys; RisingWave's SESSION WITH GAP frame the same, or SessionRows per row.
SET streaming_parallelism = 2;
CREATE TABLE clicks (user_id INT, url VARCHAR, ts TIMESTAMP,
                     WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) APPEND ONLY;
CREATE TABLE edits (user_id INT PRIMARY KEY, ts TIMESTAMP,
                    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND);
CREATE TABLE actions (user_id INT, action VARCHAR, action_time TIMESTAMP,
                      WATERMARK FOR action_time AS action_time - INTERVAL '10' MINUTE) APPEND ONLY;

CREATE MATERIALIZED VIEW sessions AS
  SELECT user_id, window_start, window_end, count(*) AS n, string_agg(url, ',') AS urls
  FROM SESSION(clicks, ts, INTERVAL '30' SECOND)
  GROUP BY user_id, window_start, window_end;

CREATE MATERIALIZED VIEW flink_closed AS
  SELECT window_start, window_end, user_id, count(*) AS n
  FROM TABLE(SESSION(TABLE clicks PARTITION BY user_id, DESCRIPTOR(ts), INTERVAL '30' SECONDS))
  GROUP BY window_start, window_end, user_id EMIT ON WINDOW CLOSE;

CREATE MATERIALIZED VIEW everyone AS
  SELECT window_start, window_end, count(*) AS n
  FROM TABLE(SESSION(TABLE clicks, DESCRIPTOR(ts), INTERVAL '30' SECONDS))
  GROUP BY window_start, window_end;

EXPLAIN CREATE MATERIALIZED VIEW x AS
  SELECT user_id, action, first_value(action_time) OVER w AS window_start,
         last_value(action_time) OVER w AS window_end
  FROM actions
  WINDOW w AS (PARTITION BY user_id ORDER BY action_time SESSION WITH GAP INTERVAL '5 MINUTES')
  EMIT ON WINDOW CLOSE;

EXPLAIN CREATE MATERIALIZED VIEW x AS
  SELECT user_id, window_start, window_end, count(*) AS n FROM (
    SELECT user_id, first_value(action_time) OVER w AS window_start,
           last_value(action_time) OVER w AS window_end
    FROM actions
    WINDOW w AS (PARTITION BY user_id ORDER BY action_time SESSION WITH GAP INTERVAL '5 MINUTES'))
  GROUP BY user_id, window_start, window_end;

-- Refused: a partition key that is not grouped, per-row sessions emitted on update, a gap that is
-- not positive, an updatable input.
CREATE MATERIALIZED VIEW bad_key AS
  SELECT url, window_start, window_end, count(*) AS n
  FROM TABLE(SESSION(TABLE clicks PARTITION BY user_id, DESCRIPTOR(ts), INTERVAL '30' SECONDS))
  GROUP BY url, window_start, window_end;
CREATE MATERIALIZED VIEW bad_rows AS SELECT * FROM SESSION(clicks, ts, INTERVAL '30' SECOND);
CREATE MATERIALIZED VIEW bad_gap AS
  SELECT user_id, window_start, window_end, count(*) AS n
  FROM SESSION(clicks, ts, INTERVAL '-3' SECOND) GROUP BY user_id, window_start, window_end;
CREATE MATERIALIZED VIEW bad_updates AS
  SELECT user_id, window_start, window_end, count(*) AS n
  FROM SESSION(edits, ts, INTERVAL '30' SECOND) GROUP BY user_id, window_start, window_end;
