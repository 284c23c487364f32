-- An error raised in any entry point leaves the session healthy: the error arrives as a normal
-- PostgreSQL error (catchable, with its SQLSTATE), settings and the current user are as they
-- were, memory does not pile up, and the next call works.
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 1000) AS job_ids_from; -- job ids in messages do not depend on test order
SET datestyle = 'SQL, DMY';
CREATE TABLE h (id int, day date NOT NULL) PARTITION BY RANGE (day);
CREATE TABLE h_01 PARTITION OF h FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE h_02 PARTITION OF h FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE h_src (id int, day date);
CREATE FUNCTION try(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE sql;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- errors of our own (C++ exceptions) and PostgreSQL errors met on the way, in every function
SELECT try($$SELECT backfill_start('h', '2024-02-01', '2024-01-01', 'h_src')$$);
SELECT try($$SELECT backfill_start('h', 'garbage', '2024-01-01', 'h_src')$$);
SELECT try($$SELECT backfill_start('h', '2024-01-01', '2024-03-01', 'SELECT nonsense FROM')$$);
SELECT try($$SELECT * FROM backfill_plan('h', '2024-03-01', '2024-01-01')$$);
SELECT try($$SELECT * FROM backfill_status(-1)$$);
SELECT try($$SELECT * FROM backfill_tasks(-1)$$);
SELECT try($$SELECT backfill_pause(-1)$$);
SELECT try($$SELECT backfill_resume(-1)$$);
SELECT try($$SELECT backfill_cancel(-1)$$);
SELECT try($$SELECT backfill_wait(-1)$$);
SELECT try($$CALL backfill_run(-1)$$);

-- the session is as it was
SELECT current_user = session_user AS same_user, current_setting('datestyle') AS datestyle,
       current_setting('search_path') AS search_path;

-- bounds are read in the caller's DateStyle (DMY here): 01/02/2024 is the first of February
SELECT partition, lower_bound FROM backfill_plan('h', '01/02/2024', '01/03/2024');

-- many failures in one session leave no memory behind, and calls that work still do
SELECT sum(total_bytes) AS before_bytes FROM pg_backend_memory_contexts \gset
SELECT count(*) FROM generate_series(1, 300) g,
       LATERAL try($$SELECT backfill_start('h', 'bad', 'bad', 'h_src')$$) r
 WHERE r LIKE '22023: range_from cannot be converted%';
SELECT sum(total_bytes) - :before_bytes < 1024 * 1024 AS memory_flat
  FROM pg_backend_memory_contexts;
SELECT backfill_start('h', '2024-01-01', '2024-03-01', 'h_src', background => false) AS job \gset
CALL backfill_run(:job);
SELECT state, tasks_done FROM backfill_status(:job);

-- an error inside a transaction rolls back only that transaction
BEGIN;
SELECT backfill_start('h', '2024-01-01', '2024-03-01', 'h_src', background => false) AS job2 \gset
SAVEPOINT s;
SELECT backfill_pause(-1);
ROLLBACK TO s;
SELECT state FROM backfill_status(:job2);
SELECT backfill_cancel(:job2);
COMMIT;
SELECT state FROM backfill_status(:job2);

-- a statement on the control tables that fails while it runs as the extension's owner (here a
-- trigger refuses the new pause) leaves the caller's user and settings as they were
CREATE FUNCTION refuse_pause() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN RAISE EXCEPTION 'pause % refused', NEW.pause; END$$;
CREATE TRIGGER refuse_pause BEFORE UPDATE OF pause ON backfill.jobs
  FOR EACH ROW WHEN (NEW.pause = '42s') EXECUTE FUNCTION refuse_pause();
SELECT backfill_start('h', '2024-01-01', '2024-03-01', 'h_src', background => false) AS job3 \gset
SET search_path = public, pg_temp;
SELECT try(format('SELECT backfill_set(%s, %L, %L)', :job3, 'pause', '42s'));
SELECT current_user = session_user AS same_user, current_setting('datestyle') AS datestyle,
       current_setting('search_path') AS search_path;
SELECT backfill_set(:job3, 'pause', '2s');
SELECT pause FROM backfill.jobs WHERE id = :job3;
BEGIN;
SELECT backfill_set(:job3, 'pause', '42s');
ROLLBACK;
SELECT current_user = session_user AS same_user, current_setting('search_path') AS search_path;
SELECT backfill_cancel(:job3);
SELECT state FROM backfill_status(:job3);
DROP TRIGGER refuse_pause ON backfill.jobs;
DROP FUNCTION refuse_pause();
RESET search_path;

RESET datestyle;
DROP TABLE h, h_src;
DROP FUNCTION try(text);
