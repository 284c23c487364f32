-- A job without a worker, run in slices by CALL backfill_run: the path pg_cron and scripts use.
-- Covers status, tasks, pause/resume/cancel and the calling rules.
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 2000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE TABLE s (id int NOT NULL, day date NOT NULL, amount int, note text DEFAULT 'fresh',
                PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE s_01 PARTITION OF s FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE s_02 PARTITION OF s FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE s_03 PARTITION OF s FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
CREATE TABLE s_04 PARTITION OF s FOR VALUES FROM ('2024-04-01') TO ('2024-05-01');
CREATE INDEX s_amount ON s (amount);
INSERT INTO s SELECT g, date '2024-01-01' + g % 120, g, 'old' FROM generate_series(1, 1200) g;
CREATE TABLE s_raw AS SELECT id, day, amount * 10 AS amount FROM s;
GRANT SELECT ON s_02 TO PUBLIC;
\set VERBOSITY default

SELECT partition, lower_bound, upper_bound FROM backfill_plan('s', '2024-01-01', '2024-04-01');
SELECT backfill_start('s', '2024-01-01', '2024-04-01',
       'SELECT id, day, amount FROM s_raw WHERE day >= $1 AND day < $2',
       background => false, keep_old => true) AS job \gset
SELECT state, tasks_total, tasks_done, percent FROM backfill_status(:job);

-- the calling rules
BEGIN;
CALL backfill_run(:job);
ROLLBACK;
CREATE FUNCTION run_inside() RETURNS void LANGUAGE plpgsql AS $$ BEGIN CALL backfill_run(1); END $$;
SELECT run_inside();
DROP FUNCTION run_inside();
SET statement_timeout = '1min';
CALL backfill_run(:job, max_duration => '10 min');
RESET statement_timeout;
CALL backfill_run(:job, max_tasks => 0);

-- one task per call
CALL backfill_run(:job, max_tasks => 1);
SELECT state, tasks_done, waiting_on FROM backfill_status(:job);
SELECT partition, state, attempts, rows_before, rows_after, swap_lock_ms > 0 AS swapped
  FROM backfill_tasks(:job);
CALL backfill_run(:job, max_tasks => 1);
SELECT backfill_pause(:job);
CALL backfill_run(:job);
SELECT state FROM backfill_status(:job);
SELECT backfill_pause(:job);
SELECT backfill_resume(:job);
SELECT backfill_resume(:job);
CALL backfill_run(:job);
SELECT backfill_wait(:job);
SELECT state, tasks_total, tasks_done, tasks_failed, rows_written, percent, waiting_on,
       finished_at IS NOT NULL AS finished FROM backfill_status(:job);
SELECT partition, state, attempts, rows_before, rows_after FROM backfill_tasks(:job);

-- the data is the source's, new rows got the default, names, indexes and grants carried over
SELECT count(*) FROM (SELECT id, day, amount FROM s WHERE day < '2024-04-01'
                      EXCEPT SELECT id, day, amount FROM s_raw WHERE day < '2024-04-01') d;
SELECT count(*) FROM (SELECT id, day, amount FROM s_raw WHERE day < '2024-04-01'
                      EXCEPT SELECT id, day, amount FROM s WHERE day < '2024-04-01') d;
SELECT note, count(*) FROM s GROUP BY note ORDER BY note;
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 's'::regclass ORDER BY 1;
SELECT indexrelid::regclass, indisprimary FROM pg_index
  WHERE indrelid = 's_02'::regclass ORDER BY 1;
SELECT has_table_privilege('public', 's_02', 'SELECT') AS public_reads_s_02;
-- kept old partitions: detached, with the old rows
SELECT relname, (SELECT count(*) FROM pg_inherits WHERE inhrelid = c.oid) AS attached
  FROM pg_class c WHERE relname LIKE 's\_0%\_bf%' ORDER BY 1;
SELECT count(*) FROM s_01_bf:job WHERE note = 'old';
SELECT count(*) AS shadows FROM pg_class WHERE relname LIKE 'bf\_shadow%';

-- a finished job can be neither paused, resumed, cancelled nor run
SELECT backfill_pause(:job);
SELECT backfill_resume(:job);
SELECT backfill_cancel(:job);
CALL backfill_run(:job);
SELECT backfill_wait(:job, '10ms');

-- a source row outside the partition fails that task, leaves the partition as it was,
-- and the job resumes once the source is fixed
CREATE TABLE s_bad AS SELECT * FROM s_raw;
INSERT INTO s_bad VALUES (9999, '2024-06-01', 1);
SELECT backfill_start('s', '2024-04-01', '2024-05-01',
       'SELECT id, day, amount FROM s_bad WHERE day >= $1 AND day < $2 OR id = 9999',
                      background => false) AS job2 \gset
CALL backfill_run(:job2);
SELECT state, tasks_failed, last_error FROM backfill_status(:job2);
SELECT partition, state, attempts, error FROM backfill_tasks(:job2);
SELECT count(*) FROM s_04 WHERE note = 'old';
SELECT count(*) AS shadows FROM pg_class WHERE relname LIKE 'bf\_shadow%';
DELETE FROM s_bad WHERE id = 9999;
SELECT backfill_resume(:job2);
CALL backfill_run(:job2);
SELECT state, tasks_done, tasks_failed, last_error FROM backfill_status(:job2);
SELECT partition, state, attempts, error FROM backfill_tasks(:job2);

-- options of a job that has not ended can be changed; they apply at its next step
SELECT backfill_start('s', '2024-01-01', '2024-05-01', 's_raw', background => false) AS job4 \gset
SELECT backfill_set(:job4, 'pause', '2 seconds');
SELECT backfill_set(:job4, 'lock_timeout', '1s');
SELECT backfill_set(:job4, 'swap_wait', '10 min');
SELECT pause, lock_timeout, swap_wait FROM backfill.jobs WHERE id = :job4;
SELECT backfill_set(:job4, 'pause', '-1s');
SELECT backfill_set(:job4, 'pause', NULL);
SELECT backfill_set(:job4, 'lock_timeout', '1 hour');
SELECT backfill_set(:job4, 'swap_wait', '0');
SELECT backfill_set(:job4, 'workers', '2');
SELECT backfill_set(:job4, 'throttle_query', 'SELECT 1');
SELECT backfill_set(:job4, 'max_rows_per_second', '1.5');
SELECT backfill_set(:job4, 'run_window', 'night');
SELECT backfill_set(:job4, NULL, '1s');
SELECT backfill_set(424242, 'pause', '1s');
SELECT backfill_cancel(:job4);
SELECT backfill_set(:job4, 'pause', '1s');

-- cancel: nothing half-done, the rest skipped
SELECT backfill_start('s', '2024-01-01', '2024-05-01', 's_raw', background => false) AS job3 \gset
CALL backfill_run(:job3, max_tasks => 1);
SELECT backfill_cancel(:job3);
SELECT state, tasks_done FROM backfill_status(:job3);
SELECT partition, state FROM backfill_tasks(:job3);
SELECT backfill_resume(:job3);

-- jobs that do not exist
SELECT backfill_status(424242);
SELECT backfill_tasks(424242);
SELECT backfill_pause(424242);
SELECT backfill_resume(424242);
SELECT backfill_cancel(424242);
SELECT backfill_wait(424242);
CALL backfill_run(424242);
SELECT backfill_tasks(NULL);

-- roll back: the kept partitions go back in, the job ends cancelled, the data is as before
SELECT sum(amount) AS before_total FROM s WHERE day < '2024-03-01' \gset
SELECT backfill_start('s', '2024-01-01', '2024-03-01',
       'SELECT id, day, amount + 1 AS amount FROM s_raw WHERE day >= $1 AND day < $2',
       background => false, keep_old => true) AS job5 \gset
SELECT backfill_rollback(:job5);
CALL backfill_run(:job5);
SELECT sum(amount) <> :before_total AS changed FROM s WHERE day < '2024-03-01';
SELECT backfill_rollback(:job5);
CALL backfill_run(:job5);
SELECT state, last_error FROM backfill_status(:job5);
SELECT partition, state, error FROM backfill_tasks(:job5);
SELECT sum(amount) = :before_total AS as_before FROM s WHERE day < '2024-03-01';
SELECT indexrelid::regclass FROM pg_index WHERE indrelid = 's_01'::regclass ORDER BY 1;
SELECT count(*) AS leftovers FROM pg_class
 WHERE relname LIKE 's\_0%\_bf' || :job5 OR relname LIKE 'bf\_rolled%';
SELECT backfill_rollback(:job5);
SELECT backfill_drop_old(:job5);
SELECT backfill_rollback(:job2);
-- the kept partitions of the first job go with one call
SELECT backfill_drop_old(:job);
SELECT count(*) AS kept FROM pg_class WHERE relname LIKE 's\_0%\_bf' || :job;
SELECT partition, state FROM backfill_tasks(:job);

DROP TABLE s, s_raw, s_bad CASCADE;
