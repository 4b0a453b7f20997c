-- Subqueries, decorrelated into joins: IN and EXISTS are semi joins, NOT IN and NOT EXISTS anti
-- joins, scalar subqueries joins with a one-row input or with an aggregate by the correlation key.
SET streaming_parallelism = 2;
CREATE TABLE a (k INT, x INT);
CREATE TABLE b (k INT, y VARCHAR, z INT);

CREATE MATERIALIZED VIEW semi_in AS SELECT * FROM a WHERE k IN (SELECT k FROM b);
CREATE MATERIALIZED VIEW semi_exists AS SELECT * FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.k = a.k);
CREATE MATERIALIZED VIEW anti_not_exists AS
  SELECT * FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.z > a.x);
CREATE MATERIALIZED VIEW anti_not_in AS SELECT * FROM a WHERE k NOT IN (SELECT z FROM b);

CREATE MATERIALIZED VIEW scalar_uncorrelated AS SELECT k, x FROM a WHERE x > (SELECT avg(z) FROM b);
CREATE MATERIALIZED VIEW scalar_in_select AS
  SELECT k, (SELECT max(z) FROM b WHERE b.k = a.k) AS top FROM a;
CREATE MATERIALIZED VIEW having_subquery AS
  SELECT k, sum(x) AS s FROM a GROUP BY k HAVING sum(x) > (SELECT count(*) FROM b);

-- EXISTS under OR: a count per key of b, left-joined (it was a mark join, refused).
CREATE MATERIALIZED VIEW or_exists AS
  SELECT * FROM a WHERE x = 1 OR EXISTS (SELECT 1 FROM b WHERE b.k = a.k);
-- Refused: NOT IN over a correlated subquery.
CREATE MATERIALIZED VIEW bad_not_in AS
  SELECT * FROM a WHERE k NOT IN (SELECT z FROM b WHERE b.y = 'x' AND b.k = a.x);
