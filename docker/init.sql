-- The Docker demo's table and view. After `docker compose up`, from the repository root:
--   PGPASSWORD=rivulet psql -h 127.0.0.1 -p 4566 -U root dev -f docker/init.sql
-- then, as often as you like:
--   SELECT * FROM bids_per_minute ORDER BY window_start DESC, bids DESC LIMIT 10;

-- The bids docker/producer.py writes to Kafka (the broker is `kafka` inside the compose network).
CREATE TABLE bids (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    ts TIMESTAMP(3),
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (
    'connector' = 'kafka',
    'topic' = 'bids',
    'properties.bootstrap.servers' = 'kafka:9092',
    'scan.startup.mode' = 'earliest-offset',
    'format' = 'json'
);

-- Bids and the top price per auction and minute, updated as bids arrive.
CREATE MATERIALIZED VIEW bids_per_minute AS
    SELECT auction, window_start, window_end, count(*) AS bids, max(price) AS top
    FROM TUMBLE(bids, ts, INTERVAL '1' MINUTE)
    GROUP BY auction, window_start, window_end;
