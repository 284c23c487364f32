-- The load runs the source query in parallel when the planner finds that faster, as for a SELECT
-- or a CREATE TABLE AS (an INSERT ... SELECT runs it in one process); the job's own process writes
-- the rows, with the same checks. A job of several workers loads without parallel workers, and
-- a CHECK that writes keeps the query in one process.
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 23000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE EXTENSION pg_visibility;
-- Which kind of process computed a row: a parallel worker, or the job's own process. Declared
-- parallel safe so that the planner may run it in a worker, which is what it reports.
CREATE FUNCTION computed_by() RETURNS text LANGUAGE plpgsql PARALLEL SAFE AS $$
BEGIN RETURN (SELECT backend_type FROM pg_stat_activity WHERE pid = pg_backend_pid()); END $$;
CREATE TABLE pl (id int NOT NULL, day date NOT NULL, amount int CHECK (amount >= 0),
                 computed_by text) PARTITION BY RANGE (day);
CREATE TABLE pl_01 PARTITION OF pl FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE pl_02 PARTITION OF pl FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
INSERT INTO pl SELECT g, date '2024-01-01' + g % 60, g, 'old' FROM generate_series(1, 6000) g;
CREATE TABLE pl_src AS SELECT id, day, amount + 1 AS amount FROM pl;
CREATE VIEW pl_fixed AS SELECT id, day, amount, computed_by() AS computed_by FROM pl_src;
-- Parallel plans cost nothing here, and every row comes from a parallel worker when one runs.
SELECT set_config(name, value, false) IS NOT NULL AS set
  FROM (VALUES ('parallel_setup_cost', '0'), ('parallel_tuple_cost', '0'),
               ('min_parallel_table_scan_size', '0'),
               ('parallel_leader_participation', 'off')) s(name, value);
EXPLAIN (COSTS OFF) SELECT * FROM pl_fixed WHERE day >= '2024-01-01' AND day < '2024-02-01';

-- Run in this session: the query ran in parallel workers, the job's process wrote the rows,
-- frozen, and they are exactly the source's.
SELECT backfill_start('pl', '2024-01-01', '2024-03-01', 'pl_fixed', background => false) AS job \gset
CALL backfill_run(:job);
SELECT partition, state, rows_before, rows_after FROM backfill_tasks(:job);
SELECT computed_by, count(*) FROM pl GROUP BY computed_by;
SELECT count(*) AS differing
  FROM ((SELECT id, day, amount FROM pl EXCEPT ALL SELECT id, day, amount FROM pl_src)
        UNION ALL (SELECT id, day, amount FROM pl_src EXCEPT ALL SELECT id, day, amount FROM pl)) d;
-- every page holding rows (from PostgreSQL 16 a load may leave a few pages empty)
SELECT u.p AS partition, bool_and(v.all_frozen) AS all_frozen
  FROM (SELECT DISTINCT tableoid::regclass AS p, ((ctid::text::point)[0])::bigint AS blkno
          FROM pl WHERE tableoid IN ('pl_01'::regclass, 'pl_02'::regclass)) u,
       pg_visibility_map(u.p, u.blkno) v
 GROUP BY u.p ORDER BY u.p::text;

-- A CHECK constraint that writes (each checked amount noted in a table) cannot run while
-- parallel workers do: the query then runs in the job's process alone, and every row is checked.
CREATE TABLE checked (amount int);
CREATE FUNCTION note_checked(a int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.checked VALUES (a); RETURN a >= 0; END $$;
ALTER TABLE pl ADD CONSTRAINT noted CHECK (note_checked(amount));
TRUNCATE checked;
SELECT backfill_start('pl', '2024-01-01', '2024-03-01', 'pl_fixed', background => false) AS job \gset
CALL backfill_run(:job);
SELECT partition, state, rows_after, error FROM backfill_tasks(:job);
SELECT computed_by, count(*) FROM pl GROUP BY computed_by;
-- the rows of the two loads, and no other (ATTACH does not check the new partition's rows again)
SELECT count(*) AS checked_rows FROM checked;
ALTER TABLE pl DROP CONSTRAINT noted;
-- The same for a column of a domain whose CHECK writes: the load stores the column as an INSERT
-- would, through the domain's checks, in the job's process alone.
CREATE DOMAIN noted_int AS int CHECK (note_checked(VALUE));
CREATE TABLE pd (id int NOT NULL, day date NOT NULL, amount noted_int, computed_by text)
  PARTITION BY RANGE (day);
CREATE TABLE pd_01 PARTITION OF pd FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
TRUNCATE checked;
SELECT backfill_start('pd', '2024-01-01', '2024-02-01', 'pl_fixed', background => false) AS job \gset
CALL backfill_run(:job);
SELECT partition, state, rows_after, error FROM backfill_tasks(:job);
SELECT computed_by, count(*) FROM pd GROUP BY computed_by;
SELECT count(*) AS checked_rows FROM checked;

-- In background workers, with the same settings for the database: a one-worker job's query runs
-- in parallel, a job of two workers (the cores already busy) in each worker alone.
DO $$ BEGIN
    EXECUTE format('ALTER DATABASE %I SET parallel_setup_cost = 0', current_database());
    EXECUTE format('ALTER DATABASE %I SET parallel_tuple_cost = 0', current_database());
    EXECUTE format('ALTER DATABASE %I SET min_parallel_table_scan_size = 0', current_database());
    EXECUTE format('ALTER DATABASE %I SET parallel_leader_participation = off', current_database());
END $$;
SELECT backfill_start('pl', '2024-01-01', '2024-03-01', 'pl_fixed') AS job \gset
SELECT backfill_wait(:job);
SELECT computed_by, count(*) FROM pl GROUP BY computed_by;
SELECT backfill_start('pl', '2024-01-01', '2024-03-01', 'pl_fixed', workers => 2) AS job \gset
SELECT backfill_wait(:job);
SELECT computed_by, count(*) FROM pl GROUP BY computed_by;
SELECT count(*) AS differing
  FROM ((SELECT id, day, amount FROM pl EXCEPT ALL SELECT id, day, amount FROM pl_src)
        UNION ALL (SELECT id, day, amount FROM pl_src EXCEPT ALL SELECT id, day, amount FROM pl)) d;
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET ALL', current_database()); END $$;

DROP TABLE pl, pd, pl_src, checked CASCADE;
DROP DOMAIN noted_int;
DROP FUNCTION computed_by(), note_checked(int);
DROP EXTENSION pg_visibility;
