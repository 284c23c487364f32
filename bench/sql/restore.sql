-- (Re)builds the partitioned table :tbl from :orig, so that every variant starts from the same
-- state: same partitions, same rows in the same physical order, freshly built indexes, vacuumed
-- and analyzed.
-- Variables: tbl, orig, range_from, parts (partitions in the range), step, name_format (to_char
-- format of a partition's lower bound, appended to the table name), indexes (secondary indexes).
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
DROP TABLE IF EXISTS :"tbl";

-- :orig's columns (bench/sql/dataset.sql defines them), NOT NULL included
CREATE TABLE :"tbl" (LIKE :"orig") PARTITION BY RANGE (day);

-- Partition -1 lies before the range; 0 .. parts-1 are the range.
SELECT format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
              :'tbl' || '_' || to_char(lower_bound, :'name_format'), :'tbl',
              lower_bound::date, (lower_bound + interval :'step')::date)
FROM generate_series(-1, :parts - 1) n,
     LATERAL (SELECT date :'range_from' + n * interval :'step' AS lower_bound) b
ORDER BY n
\gexec

-- Load first and index after, as the fastest way to get here; the result is the same.
INSERT INTO :"tbl" SELECT * FROM :"orig";
ALTER TABLE :"tbl" ADD PRIMARY KEY (id, day);
SELECT format('CREATE INDEX ON %I (%s)', :'tbl', columns)
FROM unnest(ARRAY['customer_id', 'status', 'amount', 'customer_id, amount'])
       WITH ORDINALITY AS i(columns, n)
WHERE n <= :indexes
ORDER BY n
\gexec

VACUUM (ANALYZE) :"tbl";
