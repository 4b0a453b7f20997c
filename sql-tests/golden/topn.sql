-- Top-N and deduplication: ranking window functions filtered by rank, ORDER BY ... LIMIT and
-- DISTINCT ON become a TopN behind a hash exchange on the partition columns.
SET streaming_parallelism = 2;
CREATE TABLE scores (id INT PRIMARY KEY, player VARCHAR, game INT, points INT);
CREATE TABLE events (device INT, ts TIMESTAMP, reading INT) APPEND ONLY;
CREATE TABLE clicks (usr INT, url VARCHAR, pt AS PROCTIME());
CREATE TABLE spans (id INT, d INTERVAL);
CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP,
                   WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) APPEND ONLY;

EXPLAIN CREATE MATERIALIZED VIEW x AS
  SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY game ORDER BY points DESC) AS rn FROM scores) WHERE rn <= 3;
CREATE MATERIALIZED VIEW podium AS
  SELECT player, game, points FROM (SELECT *, RANK() OVER (PARTITION BY game ORDER BY points DESC) AS r FROM scores) s WHERE r <= 2;
CREATE MATERIALIZED VIEW dense AS
  SELECT id, game FROM (SELECT *, DENSE_RANK() OVER (PARTITION BY game ORDER BY points DESC) AS r FROM scores) s WHERE r < 3;

-- Deduplication of append-only input: the first and the last row of each key.
CREATE MATERIALIZED VIEW first_seen AS
  SELECT device, ts, reading FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY device ORDER BY ts) AS rn FROM events) WHERE rn = 1;
CREATE MATERIALIZED VIEW last_seen AS
  SELECT device, ts, reading FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY device ORDER BY ts DESC) AS rn FROM events) WHERE rn = 1;
EXPLAIN CREATE MATERIALIZED VIEW x AS
  SELECT d, ts FROM (SELECT device AS d, ts, ROW_NUMBER() OVER (PARTITION BY device ORDER BY ts DESC) AS rn FROM events) q WHERE rn = 1;

-- Flink's deduplication on processing time.
CREATE MATERIALIZED VIEW first_click AS
  SELECT usr, url FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY usr ORDER BY pt ASC) AS rn FROM clicks) WHERE rn = 1;

-- ORDER BY ... LIMIT: one partition, gathered into one instance.
EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT id, points FROM scores ORDER BY points + 1 DESC LIMIT 5;
CREATE MATERIALIZED VIEW paged AS SELECT id, points FROM scores ORDER BY points DESC, id LIMIT 5 OFFSET 5;

EXPLAIN CREATE MATERIALIZED VIEW x AS SELECT DISTINCT ON (game) game, id FROM scores ORDER BY game, points DESC;

-- The rank kept as a column, a rank past an offset.
CREATE MATERIALIZED VIEW ranked AS
  SELECT id, game, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY game ORDER BY points, id) AS rn FROM scores) q WHERE rn <= 10;
EXPLAIN CREATE MATERIALIZED VIEW x AS
  SELECT id, game, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY game ORDER BY points, id) AS rn FROM scores) q WHERE rn > 2;

-- Top-N per window.
EXPLAIN CREATE MATERIALIZED VIEW x AS
  SELECT window_start, auction, price FROM (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY price DESC) AS rn
    FROM TUMBLE(bids, ts, INTERVAL '10' SECOND)) WHERE rn <= 2;

-- Refused.
CREATE MATERIALIZED VIEW bad_limit AS SELECT id FROM scores LIMIT 3;
CREATE MATERIALIZED VIEW bad_distinct_on AS SELECT DISTINCT ON (game) game, points FROM scores;
CREATE MATERIALIZED VIEW bad_type AS SELECT * FROM spans ORDER BY d LIMIT 2;
CREATE MATERIALIZED VIEW bad_rank AS
  SELECT id FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY game ORDER BY points) AS rn FROM scores) q WHERE rn <= 3 OR id = 1;
