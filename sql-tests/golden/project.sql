-- Scans, projections and filters: one source stage, a Project where columns are dropped,
-- computed or filtered; the view's key is the table's primary key when it is selected, and a
-- count of identical rows otherwise.
CREATE TABLE bids (id INT PRIMARY KEY, auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR);
CREATE TABLE events (device INT, reading BIGINT, note VARCHAR) APPEND ONLY;

CREATE MATERIALIZED VIEW all_bids AS SELECT * FROM bids;

CREATE MATERIALIZED VIEW keyed AS SELECT id, price * 2 AS doubled FROM bids WHERE channel = 'web';

-- Without the key column: each distinct row is kept once with a count.
CREATE MATERIALIZED VIEW counted AS SELECT auction, price FROM bids WHERE price > 100;

CREATE MATERIALIZED VIEW cases AS
  SELECT id, CASE WHEN price > 100 THEN 'high' ELSE 'low' END AS band, coalesce(channel, '?') AS ch
  FROM bids;

-- An ORDER BY without LIMIT is dropped: a view is a set.
CREATE MATERIALIZED VIEW ordered AS SELECT id, price FROM bids ORDER BY price DESC;

CREATE MATERIALIZED VIEW appended AS SELECT device, reading FROM events WHERE reading IS NOT NULL;

-- A view on a view reads the upstream view's change log; a counted view is read without a key.
CREATE MATERIALIZED VIEW on_keyed AS SELECT id FROM keyed WHERE doubled > 10;
CREATE MATERIALIZED VIEW on_counted AS SELECT auction FROM counted;

-- A sink needs no count of identical rows.
CREATE SINK out AS SELECT auction, price FROM bids WITH (connector = 'blackhole');
-- A sink's options are checked before its plan is shown.
CREATE SINK bad AS SELECT auction FROM bids WITH (connector = 'nowhere');

-- DISTINCT is an aggregate over all columns.
CREATE MATERIALIZED VIEW distinct_channels AS SELECT DISTINCT channel FROM bids;

-- A computed column is a column like the others.
CREATE TABLE priced (id INT PRIMARY KEY, net BIGINT, gross AS net * 2);
CREATE MATERIALIZED VIEW gross AS SELECT id, gross FROM priced;
