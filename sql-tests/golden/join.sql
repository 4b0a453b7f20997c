-- Regular joins: a HashJoin reading both sides, each hash-exchanged on its own key columns.
SET streaming_parallelism = 2;
CREATE TABLE a (k INT, x INT);
CREATE TABLE b (k INT, y VARCHAR, z INT);
CREATE TABLE c (z INT PRIMARY KEY, w VARCHAR);

CREATE MATERIALIZED VIEW inner_join AS SELECT a.x, b.y FROM a JOIN b ON a.k = b.k;
CREATE MATERIALIZED VIEW left_join AS SELECT a.x, b.y FROM a LEFT JOIN b ON a.k = b.k;
CREATE MATERIALIZED VIEW right_join AS SELECT a.x, b.y FROM a RIGHT JOIN b ON a.k = b.k;
CREATE MATERIALIZED VIEW full_join AS SELECT a.x, b.y FROM a FULL JOIN b ON a.k = b.k;

-- Keys that are expressions are computed by a Project below the exchange.
EXPLAIN CREATE MATERIALIZED VIEW e1 AS SELECT a.x, b.y FROM a JOIN b ON a.k + 1 = b.z;

CREATE MATERIALIZED VIEW using_join AS SELECT k, a.x, b.y FROM a JOIN b USING (k);
CREATE MATERIALIZED VIEW natural_join AS SELECT * FROM a NATURAL JOIN b;
CREATE MATERIALIZED VIEW comma_join AS SELECT a.x, b.y FROM a, b WHERE a.k = b.k AND a.x > 1;
CREATE MATERIALIZED VIEW residual AS SELECT a.x, b.y FROM a JOIN b ON a.k = b.k AND a.x < b.z;
CREATE MATERIALIZED VIEW null_safe AS SELECT a.x, b.y FROM a JOIN b ON a.k IS NOT DISTINCT FROM b.k;
CREATE MATERIALIZED VIEW self_join AS SELECT l.x, r.x AS rx FROM a l JOIN a r ON l.k = r.x;
CREATE MATERIALIZED VIEW chain AS
  SELECT a.x, b.y, c.w FROM a JOIN b ON a.k = b.k JOIN c ON b.z = c.z;

-- A key on the keyed side keeps the view keyed.
CREATE MATERIALIZED VIEW keyed_lookup AS SELECT c.z, c.w, b.y FROM c LEFT JOIN b ON c.z = b.z;

CREATE MATERIALIZED VIEW join_then_aggregate AS
  SELECT b.y, count(*) AS n, sum(a.x) AS s FROM a JOIN b ON a.k = b.k GROUP BY b.y;
CREATE MATERIALIZED VIEW aggregate_then_join AS
  SELECT s.k, s.total, c.w FROM (SELECT k, sum(x) AS total FROM a GROUP BY k) s JOIN c ON s.k = c.z;

-- Cross joins and joins without an equality.
CREATE MATERIALIZED VIEW cross_join AS SELECT a.x, c.w FROM a CROSS JOIN c;
CREATE MATERIALIZED VIEW theta AS SELECT a.x, b.y FROM a JOIN b ON a.x < b.z;

SET 'table.exec.state.ttl' = '10 min';
CREATE MATERIALIZED VIEW bounded AS SELECT a.x, b.y FROM a JOIN b ON a.k = b.k;
RESET 'table.exec.state.ttl';
