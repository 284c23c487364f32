-- A data set: :orig holds the rows a partitioned table :tbl starts with, :fix the corrected rows.
-- Variables: tbl, orig, fix, rows (rows inside the recomputed range), outside_rows (rows in the
-- one partition just before the range, which every variant must leave alone), range_from,
-- range_to, step (the partitions' width: '1 month', '1 day').
-- Ids and days rise together (rows arrive in time order), and both tables are stored in day
-- order, as a table loaded over time would be.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
DROP TABLE IF EXISTS :"tbl", :"orig", :"fix";

CREATE TABLE :"orig" (
    id          bigint        NOT NULL,
    day         date          NOT NULL,
    customer_id int           NOT NULL,
    amount      numeric(12,2) NOT NULL,
    status      text          NOT NULL,
    payload     text
);

-- The rows one partition before the range: ids after the range's, days spread over that partition.
INSERT INTO :"orig"
SELECT :rows + g,
       (date :'range_from' - interval :'step')::date
         + ((g - 1) * (date :'range_from' - (date :'range_from' - interval :'step')::date)
            / :outside_rows)::int,
       1 + (g * 7919) % 50000,
       ((g * 104729) % 100000) / 100.0,
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'refunded'])[1 + g % 5],
       '{"sku":"' || md5(g::text) || '","qty":' || g % 7 || ',"channel":"web"}'
FROM generate_series(1::bigint, :outside_rows) g;

-- The range: :rows rows spread evenly over its days.
INSERT INTO :"orig"
SELECT g,
       date :'range_from' + ((g - 1) * (date :'range_to' - date :'range_from') / :rows)::int,
       1 + (g * 7919) % 50000,
       ((g * 104729) % 100000) / 100.0,
       (ARRAY['new', 'paid', 'shipped', 'delivered', 'refunded'])[1 + g % 5],
       '{"sku":"' || md5(g::text) || '","qty":' || g % 7 || ',"channel":"web"}'
FROM generate_series(1::bigint, :rows) g;

-- The recompute: every amount changes (a 7% correction), 'paid' becomes 'settled'; same keys.
CREATE TABLE :"fix" AS
SELECT id, day, customer_id, round(amount * 1.07, 2)::numeric(12,2) AS amount,
       CASE status WHEN 'paid' THEN 'settled' ELSE status END AS status, payload
FROM :"orig"
WHERE day >= :'range_from' AND day < :'range_to'
ORDER BY day, id;
-- Every variant reads one partition's worth of the source at a time.
CREATE INDEX ON :"fix" (day);

-- Settled tables: hint bits set and visibility maps current, so no variant pays for that.
VACUUM (ANALYZE) :"orig";
VACUUM (ANALYZE) :"fix";
