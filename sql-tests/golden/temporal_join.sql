-- Temporal joins (FOR SYSTEM_TIME AS OF): event time over a versioned table, or processing time
-- (a lookup join).
SET streaming_parallelism = 2;
CREATE TABLE orders (id INT, cur VARCHAR, amount INT, ts TIMESTAMP(3),
                     WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY;
CREATE TABLE rates (cur VARCHAR PRIMARY KEY, rate INT, ts TIMESTAMP(3),
                    WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);
CREATE TABLE plain_rates (cur VARCHAR, rate INT, ts TIMESTAMP(3),
                          WATERMARK FOR ts AS ts - INTERVAL '1' SECOND);
CREATE TABLE untimed (cur VARCHAR PRIMARY KEY, rate INT);
CREATE TABLE clicks (usr INT, url VARCHAR, pt AS PROCTIME()) APPEND ONLY;

CREATE MATERIALIZED VIEW conv AS
  SELECT o.id, o.amount * r.rate AS v, r.rate FROM orders o
  JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.cur = r.cur;

EXPLAIN CREATE MATERIALIZED VIEW x AS
  SELECT o.id, r.rate FROM orders o JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.cur = r.cur;

CREATE MATERIALIZED VIEW conv_left AS
  SELECT o.id, r.rate FROM orders o
  LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ts r ON o.cur = r.cur AND r.rate < 100;

CREATE MATERIALIZED VIEW lookup AS
  SELECT o.id, r.rate FROM orders o
  LEFT JOIN rates FOR SYSTEM_TIME AS OF PROCTIME() AS r ON o.cur = r.cur;

CREATE MATERIALIZED VIEW lookup_untimed AS
  SELECT c.usr, u.rate FROM clicks c JOIN untimed FOR SYSTEM_TIME AS OF c.pt AS u ON c.url = u.cur;

-- Refused: no primary key, no watermark, not the probe side's time, versioned table on the left,
-- an updatable probe side, a FULL join.
CREATE MATERIALIZED VIEW bad_key AS SELECT o.id FROM orders o
  JOIN plain_rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.cur = r.cur;
CREATE MATERIALIZED VIEW bad_watermark AS SELECT o.id FROM orders o
  JOIN untimed FOR SYSTEM_TIME AS OF o.ts AS u ON o.cur = u.cur;
CREATE MATERIALIZED VIEW bad_time AS SELECT o.id FROM orders o
  JOIN rates FOR SYSTEM_TIME AS OF o.id AS r ON o.cur = r.cur;
CREATE MATERIALIZED VIEW bad_side AS SELECT o.id FROM rates FOR SYSTEM_TIME AS OF PROCTIME() AS r
  JOIN orders o ON o.cur = r.cur;
CREATE MATERIALIZED VIEW bad_probe AS SELECT r.cur, u.rate FROM rates r
  JOIN untimed FOR SYSTEM_TIME AS OF PROCTIME() AS u ON r.cur = u.cur;
CREATE MATERIALIZED VIEW bad_full AS SELECT o.id FROM orders o
  FULL JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.cur = r.cur;
