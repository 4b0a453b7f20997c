-- HOP windows: emit-on-update as an UNNEST of window starts; EMIT ON WINDOW CLOSE by slices.
SET streaming_parallelism = 2;
CREATE TABLE bids (auction BIGINT, price BIGINT, ts TIMESTAMP, other TIMESTAMP,
                   WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) APPEND ONLY;

CREATE MATERIALIZED VIEW hopping AS
  SELECT window_start, window_end, count(*) AS n, sum(price) AS total
  FROM HOP(bids, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) GROUP BY window_start, window_end;

CREATE MATERIALIZED VIEW hopping_closed AS
  SELECT window_start, window_end, auction, count(*) AS n, max(price) AS top
  FROM TABLE(HOP(TABLE bids, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '10' SECOND))
  GROUP BY window_start, window_end, auction EMIT ON WINDOW CLOSE;

CREATE MATERIALIZED VIEW bad AS
  SELECT window_start, window_end, count(*) AS n
  FROM HOP(bids, other, INTERVAL '5' SECOND, INTERVAL '10' SECOND)
  GROUP BY window_start, window_end EMIT ON WINDOW CLOSE;
