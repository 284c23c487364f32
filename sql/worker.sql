-- Background workers: started only when the starting transaction commits, visible in
-- pg_stat_activity, woken by pause and cancel, and waited for by backfill_wait.
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 4000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE TABLE w (id int NOT NULL, day date NOT NULL, amount int) PARTITION BY RANGE (day);
CREATE TABLE w_01 PARTITION OF w FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE w_02 PARTITION OF w FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE w_03 PARTITION OF w FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
INSERT INTO w SELECT g, date '2024-01-01' + g % 90, g FROM generate_series(1, 900) g;
CREATE TABLE w_src AS SELECT * FROM w;
CREATE VIEW w_fixed AS SELECT day, id, amount + 1 AS amount FROM w_src;
\set VERBOSITY default

-- polls backfill_status until the job has `done` tasks done, or 60 seconds pass
CREATE PROCEDURE wait_for_tasks(job bigint, done int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..1200 LOOP
        EXIT WHEN (SELECT tasks_done FROM backfill_status(job)) >= done;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
-- polls until the job's worker says what it waits for (it records that just after a task's
-- commit), or 60 seconds pass
CREATE PROCEDURE wait_for_waiting_on(job bigint) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..1200 LOOP
        EXIT WHEN (SELECT waiting_on FROM backfill_status(job)) IS NOT NULL;
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;

-- a start that is rolled back starts nothing, also inside a savepoint
BEGIN;
SELECT backfill_start('w', '2024-01-01', '2024-04-01', 'w_fixed') IS NOT NULL AS started;
ROLLBACK;
BEGIN;
SAVEPOINT before_start;
SELECT backfill_start('w', '2024-01-01', '2024-04-01', 'w_fixed') IS NOT NULL AS started;
ROLLBACK TO before_start;
COMMIT;
SELECT pg_sleep(0.5);
SELECT count(*) AS jobs FROM backfill.jobs WHERE target = 'w'::regclass;
SELECT count(*) AS workers FROM pg_stat_activity WHERE backend_type = 'backfill worker';

-- waiting where no progress can be seen
BEGIN;
SELECT backfill_start('w', '2024-01-01', '2024-04-01', 'w_fixed') AS job \gset
SELECT backfill_wait(:job);
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT backfill_wait(1);
ROLLBACK;
-- nor where this session holds a lock the job's swap needs: the job could never swap
SELECT backfill_start('w', '2024-01-01', '2024-04-01', 'w_fixed', background => false) AS job \gset
SELECT backfill_wait(:job) = 'done' AND (SELECT count(*) FROM w) > 0;
BEGIN;
SELECT count(*) > 0 AS read_a_partition FROM w_02;
SELECT backfill_wait(:job, '1s');
ROLLBACK;
SELECT backfill_wait(:job, '100ms');   -- in a transaction of its own it waits
SELECT backfill_cancel(:job);

-- a job that sleeps an hour between tasks: pause wakes and stops it at once, resume goes on
SELECT backfill_start('w', '2024-01-01', '2024-04-01', 'w_fixed', pause => '1 hour') AS job \gset
CALL wait_for_tasks(:job, 1);
CALL wait_for_waiting_on(:job);
SELECT application_name = 'backfill job ' || :job AS named, backend_type
  FROM pg_stat_activity WHERE backend_type = 'backfill worker';
SELECT state, tasks_done, waiting_on FROM backfill_status(:job);
SELECT backfill_pause(:job);
SELECT backfill_wait(:job, '300ms');
SELECT pg_sleep(0.5);
SELECT state, tasks_done FROM backfill_status(:job);
SELECT count(*) AS workers FROM pg_stat_activity WHERE backend_type = 'backfill worker';
SELECT backfill_resume(:job);
CALL wait_for_tasks(:job, 2);
CALL wait_for_waiting_on(:job);
SELECT state, tasks_done, waiting_on FROM backfill_status(:job);
\set VERBOSITY terse
SELECT backfill_resume(:job);
\set VERBOSITY default
-- cancel wakes it too; the last partition stays as it was
SELECT backfill_cancel(:job);
SELECT backfill_wait(:job, '30s');
SELECT partition, state, attempts FROM backfill_tasks(:job);
SELECT count(*) FILTER (WHERE amount = id + 1) AS fixed, count(*) FILTER (WHERE amount = id) AS old
  FROM w;

-- a job that runs to the end: the data is the view's
SELECT backfill_start('w', '2024-01-01', '2024-04-01', 'w_fixed') AS job \gset
SELECT backfill_wait(:job, '60s');
SELECT state, tasks_total, tasks_done, percent FROM backfill_status(:job);
SELECT count(*) FROM (SELECT id, day, amount FROM w EXCEPT SELECT id, day, amount FROM w_fixed) d;
SELECT count(*) FROM (SELECT id, day, amount FROM w_fixed EXCEPT SELECT id, day, amount FROM w) d;
SELECT count(*) AS shadows FROM pg_class WHERE relname LIKE 'bf\_shadow%';

-- two workers build two partitions at a time; more than the partitions is cut down, saying why
SET client_min_messages = notice;
SELECT backfill_start('w', '2024-01-01', '2024-04-01', 'w_src', workers => 10) AS job \gset
SET client_min_messages = warning;
SELECT workers FROM backfill.jobs WHERE id = :job;
SELECT backfill_wait(:job, '60s');
SELECT state, tasks_done, rows_written FROM backfill_status(:job);
SELECT count(*) FROM (SELECT id, day, amount FROM w EXCEPT SELECT id, day, amount FROM w_src) d;
SELECT count(DISTINCT runner_slot) BETWEEN 1 AND 3 AS slots_within_workers FROM backfill.tasks WHERE job = :job;

-- a source that fails in the worker fails the task and the job, and leaves the data as it was
CREATE FUNCTION w_boom(int) RETURNS int LANGUAGE sql AS 'SELECT 1 / ($1 - 100)';
SELECT backfill_start('w', '2024-01-01', '2024-04-01',
       'SELECT id, day, w_boom(id) AS amount FROM w_src WHERE day >= $1 AND day < $2') AS job \gset
SELECT backfill_wait(:job, '60s');
SELECT state, tasks_done, tasks_failed, last_error FROM backfill_status(:job);
SELECT partition, state, attempts, error FROM backfill_tasks(:job);
SELECT count(*) FILTER (WHERE amount = id) AS unchanged FROM w;
SELECT backfill_cancel(:job);

-- the worker logs in as the session's login role and runs as the (NOLOGIN) owner it switched to
CREATE ROLE bf_owner NOLOGIN;
CREATE ROLE bf_login LOGIN;
GRANT bf_owner TO bf_login;
GRANT CREATE ON SCHEMA public TO bf_owner;
SET ROLE bf_owner;
CREATE TABLE o (id int NOT NULL, day date NOT NULL, amount int) PARTITION BY RANGE (day);
CREATE TABLE o_01 PARTITION OF o FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
INSERT INTO o SELECT g, '2024-01-05', g FROM generate_series(1, 10) g;
CREATE TABLE o_src AS SELECT id, day, amount + 1 AS amount FROM o;
RESET ROLE;
SET SESSION AUTHORIZATION bf_login;
SET ROLE bf_owner;
SELECT backfill_start('o', '2024-01-01', '2024-02-01', 'o_src') AS job \gset
SELECT backfill_wait(:job, '60s');
SELECT state, attempts, error FROM backfill_tasks(:job);
RESET SESSION AUTHORIZATION;
SELECT run_as, login_role FROM backfill.jobs WHERE id = :job;
SELECT relowner::regrole AS new_partition_owner, (SELECT sum(amount) FROM o) AS total
  FROM pg_class WHERE relname = 'o_01';
DROP TABLE o, o_src;
REVOKE CREATE ON SCHEMA public FROM bf_owner;
DROP ROLE bf_login, bf_owner;

DROP TABLE w, w_src CASCADE;
DROP FUNCTION w_boom(int);
DROP PROCEDURE wait_for_tasks(bigint, int);
DROP PROCEDURE wait_for_waiting_on(bigint);
