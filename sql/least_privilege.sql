-- A non-superuser who owns a partitioned table runs the whole life of a backfill on it; another
-- non-superuser can act on none of it; nobody edits the control tables directly; a source the
-- job's role cannot read, or reads only in part (row-level security), fails the task loudly.
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 18000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE ROLE bf_lp_owner LOGIN;
CREATE ROLE bf_lp_other LOGIN;
GRANT CREATE ON SCHEMA public TO bf_lp_owner;   -- the shadows are created next to the partitions
CREATE TABLE lp_secret (id int, day date, amount int);           -- the owner may not read it
INSERT INTO lp_secret SELECT g, date '2024-01-01' + g % 60, -g FROM generate_series(1, 600) g;
CREATE TABLE lp_hidden AS SELECT * FROM lp_secret;                -- readable, in part
UPDATE lp_hidden SET amount = -amount;
ALTER TABLE lp_hidden ENABLE ROW LEVEL SECURITY;
CREATE POLICY lp_even ON lp_hidden FOR SELECT USING (id % 2 = 0);
GRANT SELECT ON lp_hidden TO bf_lp_owner;

SET SESSION AUTHORIZATION bf_lp_owner;
CREATE TABLE lp (id int NOT NULL, day date NOT NULL, amount int) PARTITION BY RANGE (day);
CREATE TABLE lp_01 PARTITION OF lp FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE lp_02 PARTITION OF lp FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
INSERT INTO lp SELECT g, date '2024-01-01' + g % 60, g FROM generate_series(1, 600) g;
CREATE TABLE lp_src AS SELECT id, day, amount * 10 AS amount FROM lp;
\set VERBOSITY default

-- the owner: plan, start, watch, pause, resume, run, roll back, cancel
SELECT partition, lower_bound, upper_bound FROM backfill_plan('lp', '2024-01-01', '2024-03-01');
SELECT backfill_start('lp', '2024-01-01', '2024-03-01', 'lp_src', keep_old => true,
                      background => false) AS job \gset
SELECT state, tasks_total FROM backfill_status(:job);
SELECT partition, state FROM backfill_tasks(:job);
SELECT backfill_pause(:job);
SELECT backfill_set(:job, 'pause', '0s');
SELECT backfill_resume(:job);
CALL backfill_run(:job);
SELECT state, tasks_done, rows_written FROM backfill_status(:job);
SELECT sum(amount) AS total_after_job FROM lp;
SELECT backfill_rollback(:job);
CALL backfill_run(:job);
SELECT state, last_error FROM backfill_status(:job);
SELECT sum(amount) AS total_after_rollback FROM lp;
-- a background job: the worker logs in as the owner and runs as the owner
SELECT backfill_start('lp', '2024-01-01', '2024-02-01', 'lp_src') AS bg_job \gset
SELECT backfill_wait(:bg_job, '60s');
SELECT partition, state, error FROM backfill_tasks(:bg_job);
SELECT relowner::regrole AS new_owner FROM pg_class WHERE relname = 'lp_01';
-- a job left pending for the other role to try its hands on
SELECT backfill_start('lp', '2024-02-01', '2024-03-01', 'lp_src', background => false,
                      keep_old => true) AS live_job \gset
RESET SESSION AUTHORIZATION;

-- another role: it can neither start nor act on the owner's jobs, whatever the function
GRANT SELECT ON lp_src TO bf_lp_other;
SET SESSION AUTHORIZATION bf_lp_other;
-- (from 15 on, CREATE on schema public is not granted to all either: one more problem than on 13, whose output is least_privilege_1.out)
SELECT backfill_start('lp', '2024-01-01', '2024-03-01', 'lp_src', background => false);
SELECT backfill_pause(:live_job);
SELECT backfill_resume(:live_job);
SELECT backfill_cancel(:live_job);
SELECT backfill_set(:live_job, 'pause', '1 hour');
CALL backfill_run(:live_job);
SELECT backfill_rollback(:job);
SELECT backfill_drop_old(:job);
-- nor the control tables, nor the trigger function, directly
\set VERBOSITY terse
INSERT INTO backfill.jobs (id) VALUES (1);
UPDATE backfill.jobs SET state = 'cancelled';
DELETE FROM backfill.tasks;
SELECT count(*) FROM backfill.tasks;
CREATE TEMP TABLE lp_other_t (id int);
CREATE TRIGGER spam AFTER INSERT ON lp_other_t FOR EACH ROW EXECUTE FUNCTION backfill.note_write('1', '1');
SELECT backfill.note_write();
DROP TABLE lp_other_t;
\set VERBOSITY default
RESET SESSION AUTHORIZATION;
-- the owner has no more rights on the control tables than anyone else
SET SESSION AUTHORIZATION bf_lp_owner;
\set VERBOSITY terse
UPDATE backfill.jobs SET state = 'done' WHERE id = :live_job;
DELETE FROM backfill.jobs WHERE id = :job;
INSERT INTO backfill.writes VALUES (:live_job, 1);
\set VERBOSITY default
-- the live job is as the owner left it
SELECT state, tasks_done FROM backfill_status(:live_job);
RESET SESSION AUTHORIZATION;
SELECT state, pause, (SELECT count(*) FROM backfill.tasks WHERE job = :live_job) AS tasks
  FROM backfill.jobs WHERE id = :live_job;

-- a source the job's role may not read: the task fails with permission denied, the partition
-- stays as it was
SET SESSION AUTHORIZATION bf_lp_owner;
SELECT backfill_cancel(:live_job);
SELECT sum(amount) AS total_before FROM lp \gset
SELECT backfill_start('lp', '2024-01-01', '2024-03-01', 'lp_secret', background => false) AS job \gset
CALL backfill_run(:job);
SELECT state, tasks_done, last_error FROM backfill_status(:job);
SELECT sum(amount) = :total_before AS unchanged FROM lp;
-- a source hidden in part by row-level security: the task fails instead of losing rows
SELECT count(*) AS rows_the_owner_sees FROM lp_hidden;
SELECT backfill_start('lp', '2024-01-01', '2024-03-01',
       'SELECT id, day, amount FROM lp_hidden WHERE day >= $1 AND day < $2',
       background => false) AS job \gset
CALL backfill_run(:job);
SELECT state, tasks_done, last_error FROM backfill_status(:job);
SELECT partition, state, error FROM backfill_tasks(:job);
SELECT count(*) AS rows, sum(amount) = :total_before AS unchanged FROM lp;
SELECT count(*) AS leftovers FROM pg_class WHERE relname LIKE 'bf\_%' OR relname LIKE 'lp\_0%\_bf%';
SELECT backfill_cancel(:job);
RESET SESSION AUTHORIZATION;

-- A superuser's job on the owner's table runs the owner's index expressions (index builds,
-- ANALYZE) as the owner, as PostgreSQL's own REINDEX does, never as the superuser.
CREATE FUNCTION lp_not_as_superuser(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        RAISE EXCEPTION 'an index expression of bf_lp_owner ran as superuser %', current_user;
    END IF;
    RETURN i;
END $$;
CREATE INDEX lp_expr ON lp (lp_not_as_superuser(id));
REINDEX TABLE lp_01;  -- a partition: REINDEX of a partitioned table came with PostgreSQL 14
SELECT backfill_start('lp', '2024-01-01', '2024-03-01', 'lp_src', background => false) AS job \gset
CALL backfill_run(:job);
SELECT partition, state, error FROM backfill_tasks(:job);
SELECT c.relname, c.relowner::regrole FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
 WHERE i.inhparent = 'lp'::regclass ORDER BY 1;

DROP TABLE lp, lp_src, lp_secret, lp_hidden CASCADE;
DROP FUNCTION lp_not_as_superuser(int);
REVOKE CREATE ON SCHEMA public FROM bf_lp_owner;
DROP ROLE bf_lp_owner, bf_lp_other;
