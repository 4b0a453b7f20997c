-- GROUP BY: a HashAggregate behind a hash exchange on the group columns, one per aggregate kind.
CREATE TABLE bids (id INT PRIMARY KEY, auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, ok BOOLEAN);
CREATE TABLE readings (device VARCHAR, reading BIGINT, label VARCHAR) APPEND ONLY;
CREATE TABLE t (k INT, v INT, f DOUBLE);

CREATE MATERIALIZED VIEW kinds AS
  SELECT auction, count(*) AS n, count(bidder) AS bidders, sum(price) AS total, avg(price) AS mean,
         min(price) AS lo, max(price) AS hi, bool_and(ok) AS all_ok, bool_or(ok) AS any_ok
  FROM bids GROUP BY auction;

CREATE MATERIALIZED VIEW distinct_counts AS
  SELECT auction, count(DISTINCT bidder) AS bidders FROM bids GROUP BY auction;

CREATE MATERIALIZED VIEW filtered AS
  SELECT auction, count(*) FILTER (WHERE price > 100) AS big, sum(price) FILTER (WHERE ok) AS ok_total
  FROM bids GROUP BY auction;

CREATE MATERIALIZED VIEW strings AS
  SELECT auction, string_agg(channel, ',' ORDER BY price DESC NULLS LAST) AS channels,
         string_agg(DISTINCT channel, ';') AS distinct_channels
  FROM bids GROUP BY auction;

CREATE MATERIALIZED VIEW arrays AS
  SELECT auction, array_agg(channel ORDER BY price DESC) FILTER (WHERE price > 1) AS channels
  FROM bids GROUP BY auction;

CREATE MATERIALIZED VIEW approx AS
  SELECT k, approx_distinct(v) AS d, approx_percentile_cont(f, 0.9) AS p90, median(v) AS med
  FROM t GROUP BY k;

-- Without GROUP BY: one instance, one row.
CREATE MATERIALIZED VIEW global AS SELECT count(*) AS n, max(price) AS hi FROM bids;

-- Group keys and arguments that are expressions get a Project first; HAVING is a Project after.
CREATE MATERIALIZED VIEW expr_keys AS
  SELECT auction % 10 AS bucket, sum(price + 1) AS s FROM bids GROUP BY auction % 10 HAVING count(*) > 1;

-- Over an append-only input min and max keep one value.
CREATE MATERIALIZED VIEW append_minmax AS
  SELECT device, min(reading) AS lo, max(reading) AS hi FROM readings GROUP BY device;

-- Flink's state TTL bounds groups of an aggregate without windows.
SET 'table.exec.state.ttl' = '1 h';
CREATE MATERIALIZED VIEW with_ttl AS SELECT auction, count(*) AS n FROM bids GROUP BY auction;
RESET 'table.exec.state.ttl';

SET streaming_parallelism = 1;
CREATE MATERIALIZED VIEW one_instance AS SELECT auction, count(*) AS n FROM bids GROUP BY auction;
RESET streaming_parallelism;

-- An aggregate over an aggregate.
CREATE MATERIALIZED VIEW nested AS
  SELECT n, count(*) AS auctions FROM (SELECT auction, count(*) AS n FROM bids GROUP BY auction) GROUP BY n;

-- Refused aggregates.
CREATE MATERIALIZED VIEW bad_order AS SELECT auction, sum(price ORDER BY bidder) AS s FROM bids GROUP BY auction;
CREATE MATERIALIZED VIEW bad_distinct_order AS
  SELECT auction, string_agg(DISTINCT channel, ',' ORDER BY price) AS s FROM bids GROUP BY auction;
CREATE MATERIALIZED VIEW bad_separator AS SELECT auction, string_agg(channel, channel) AS s FROM bids GROUP BY auction;
CREATE MATERIALIZED VIEW bad_distinct AS SELECT auction, sum(DISTINCT price) AS s FROM bids GROUP BY auction;
CREATE MATERIALIZED VIEW bad_kind AS SELECT auction, stddev(price) AS s FROM bids GROUP BY auction;
