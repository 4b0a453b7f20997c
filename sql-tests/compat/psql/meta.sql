\conninfo
\l
\dn
\dt
\dv
\dm
\d
\d bids
\d per_auction
\d+ bids
\d+ per_auction
\dt+
\dm+
\dn+
\df
\df+
\dD
\dy
\dL
\dL+
\dO
\drds
\du
\di
\dp
\dT
\dx
\dconfig
\x
SELECT auction, n, total FROM per_auction ORDER BY auction;
\x
\timing on
SELECT count(*) FROM bids;
\timing off
SELECT 1, 1;
SELECT count(*), max(price), price::text FROM bids GROUP BY price ORDER BY price;
