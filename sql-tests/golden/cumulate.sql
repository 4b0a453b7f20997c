-- CUMULATE windows: an UNNEST of each row's window ends.
SET streaming_parallelism = 2;
CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP,
                   WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) APPEND ONLY;

CREATE MATERIALIZED VIEW cumulating AS
  SELECT window_start, window_end, count(*) AS n, sum(price) AS total
  FROM TABLE(CUMULATE(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '15' SECOND))
  GROUP BY window_start, window_end;

CREATE MATERIALIZED VIEW cumulating_closed AS
  SELECT window_start, window_end, count(*) AS n, sum(price) AS total
  FROM CUMULATE(bids, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)
  GROUP BY window_start, window_end EMIT ON WINDOW CLOSE;
