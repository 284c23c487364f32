-- Checks :tbl after a variant and prints one line: OK, or MISMATCH and what differs.
--   * over the range it holds exactly the rows of :fix (counted, and EXCEPT both ways);
--   * outside the range it holds exactly the rows it started with (from :orig);
--   * it still has parts + 1 partitions, each with the primary key and the secondary indexes
--     attached to the parent's, and no CHECK constraint or table left over by a recipe.
-- Variables: tbl, orig, fix, range_from, range_to, parts, indexes.
\set ON_ERROR_STOP 1
SET work_mem = '1GB';   -- the EXCEPTs hash or sort a few million rows
WITH
in_range AS (SELECT * FROM :"tbl" WHERE day >= :'range_from' AND day < :'range_to'),
outside  AS (SELECT * FROM :"tbl" WHERE NOT (day >= :'range_from' AND day < :'range_to')),
orig_out AS (SELECT * FROM :"orig" WHERE NOT (day >= :'range_from' AND day < :'range_to')),
partitions AS (
    SELECT i.inhrelid AS part FROM pg_inherits i WHERE i.inhparent = :'tbl'::regclass),
checks(problem, bad) AS (
    VALUES
    ('rows in range',
     (SELECT count(*) FROM in_range) <> (SELECT count(*) FROM :"fix")),
    ('range rows not in source',
     EXISTS (SELECT * FROM in_range EXCEPT SELECT * FROM :"fix")),
    ('source rows missing',
     EXISTS (SELECT * FROM :"fix" EXCEPT SELECT * FROM in_range)),
    ('rows outside the range changed',
     (SELECT count(*) FROM outside) <> (SELECT count(*) FROM orig_out)
     OR EXISTS (SELECT * FROM outside EXCEPT SELECT * FROM orig_out)
     OR EXISTS (SELECT * FROM orig_out EXCEPT SELECT * FROM outside)),
    ('partition count',
     (SELECT count(*) FROM partitions) <> :parts + 1),
    ('partition indexes',
     EXISTS (SELECT FROM partitions p
             WHERE (SELECT count(*) FROM pg_index x
                    JOIN pg_inherits h ON h.inhrelid = x.indexrelid
                    WHERE x.indrelid = p.part AND x.indisvalid) <> :indexes + 1)),
    ('leftover CHECK constraints',
     EXISTS (SELECT FROM pg_constraint c JOIN partitions p ON c.conrelid = p.part
             WHERE c.contype = 'c')),
    ('leftover tables',
     EXISTS (SELECT FROM pg_class c
             WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace
               AND (c.relname LIKE :'tbl' || '\_%' OR c.relname LIKE 'bf\_shadow\_%')
               AND c.relname NOT IN (:'orig', :'fix')
               AND c.oid NOT IN (SELECT part FROM partitions))))
SELECT CASE WHEN bool_or(bad) THEN 'MISMATCH: ' || string_agg(problem, ', ') FILTER (WHERE bad)
            ELSE 'OK' END
FROM checks;
