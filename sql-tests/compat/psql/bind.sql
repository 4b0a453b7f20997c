SELECT $1::bigint AS a, $2::text AS b \bind 42 'hello' \g
SELECT auction, price FROM bids WHERE price > $1 ORDER BY price \bind 15 \g
SELECT auction, n, total FROM per_auction WHERE auction = $1 \bind 1 \g
SELECT channel FROM bids WHERE auction = $1 AND channel = $2 ORDER BY 1 \parse by_channel
\bind_named by_channel 1 web \g
\bind_named by_channel 1 app \g
SELECT $1::int + 1 AS next \parse inc
\bind_named inc 41 \g
\close_prepared inc
\bind_named inc 1 \g
\bind_named by_channel 2 web \g
SELECT $1::int AS x \bind \g
SELECT $1::int AS x \bind 1 2 \g
SELECT count(*) FROM bids WHERE ts >= $1 \bind '2026-01-01 10:00:01' \g
INSERT INTO bids VALUES ($1, $2, $3, $4) \bind 3 40 'web' '2026-01-01 10:00:03' \g
SELECT count(*), sum(price) FROM bids \bind \g
