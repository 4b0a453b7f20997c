-- MATCH_RECOGNIZE: a MatchRecognize behind a hash exchange on the partition columns, over an
-- append-only input.
SET streaming_parallelism = 2;
CREATE TABLE ticks (sym VARCHAR, price BIGINT, ts TIMESTAMP(3),
                    WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY;
CREATE TABLE clicks (uid INT, page VARCHAR, ts TIMESTAMP(3)) APPEND ONLY;
CREATE TABLE changing (k INT PRIMARY KEY, v INT, ts TIMESTAMP(3));

CREATE MATERIALIZED VIEW rises AS
SELECT * FROM ticks MATCH_RECOGNIZE (
  PARTITION BY sym ORDER BY ts
  MEASURES FIRST(A.price) AS start_price, LAST(B.price) AS top, COUNT(B.*) AS rises,
           AVG(B.price) AS avg_rise, MATCH_NUMBER() AS m, CLASSIFIER() AS cls,
           FIRST(A.ts) AS started, MATCH_ROWTIME() AS ended
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (A B+ C)
  DEFINE B AS B.price > PREV(B.price), C AS C.price < LAST(B.price)
);

CREATE MATERIALIZED VIEW rises_rows AS
SELECT * FROM ticks MATCH_RECOGNIZE (
  PARTITION BY sym ORDER BY ts
  MEASURES LAST(B.price) AS top, COUNT(B.*) AS n
  ALL ROWS PER MATCH
  PATTERN (A B+? C)
  DEFINE B AS B.price > PREV(B.price), C AS C.price < PREV(C.price)
);

-- Without a watermark the rows are matched in arrival order.
EXPLAIN CREATE MATERIALIZED VIEW f2 AS SELECT * FROM clicks MATCH_RECOGNIZE (
  PARTITION BY uid ORDER BY ts MEASURES COUNT(*) AS n AFTER MATCH SKIP TO LAST V
  PATTERN (V+? C) DEFINE V AS V.page = 'view', C AS C.page = 'cart');

-- An aggregate over the matches.
CREATE MATERIALIZED VIEW per_sym AS
  SELECT sym, count(*) AS matches FROM ticks MATCH_RECOGNIZE (
    PARTITION BY sym ORDER BY ts MEASURES LAST(B.price) AS top
    PATTERN (A B+) DEFINE B AS B.price > PREV(B.price)) m
  GROUP BY sym;

CREATE MATERIALIZED VIEW bad_updates AS SELECT * FROM changing MATCH_RECOGNIZE (
  ORDER BY ts MEASURES COUNT(*) AS n PATTERN (A B) DEFINE B AS B.v > A.v);
