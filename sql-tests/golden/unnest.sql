-- UNNEST of a list column: a per-row expansion chained into the stage below.
CREATE TABLE posts (id INT PRIMARY KEY, tags VARCHAR[], scores INT[]);

CREATE MATERIALIZED VIEW tags AS SELECT id, unnest(tags) AS tag FROM posts;
CREATE MATERIALIZED VIEW tag_counts AS
  SELECT tag, count(*) AS n FROM (SELECT unnest(tags) AS tag FROM posts) t GROUP BY tag;

-- Two lists side by side, to the longest (shorter ones padded with NULL).
CREATE MATERIALIZED VIEW zipped AS SELECT id, unnest(tags) AS tag, unnest(scores) AS score FROM posts;
