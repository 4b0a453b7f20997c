-- GROUPING SETS, ROLLUP and CUBE: a union of one aggregate per grouping set.
CREATE TABLE sales (id INT PRIMARY KEY, region VARCHAR, product VARCHAR, amount INT);

CREATE MATERIALIZED VIEW by_rollup AS
  SELECT region, product, sum(amount) AS total, count(*) AS n, GROUPING(region, product) AS g
  FROM sales GROUP BY ROLLUP(region, product);

CREATE MATERIALIZED VIEW by_cube AS
  SELECT region, product, sum(amount) AS total FROM sales GROUP BY CUBE(region, product);

CREATE MATERIALIZED VIEW by_sets AS
  SELECT region, product, count(*) AS n FROM sales GROUP BY GROUPING SETS ((region), (product), (region), ());

CREATE TABLE wide (a INT, b INT, c INT, d INT, e INT, f INT, g INT, v INT);
CREATE MATERIALIZED VIEW too_many AS SELECT a, b, c, d, e, f, g, sum(v) AS s FROM wide GROUP BY CUBE(a, b, c, d, e, f, g);
