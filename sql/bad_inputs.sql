-- Bad input to every function: each one is refused with an error that names the object and says
-- what to do, and no refusal changes anything (checked at the end against a snapshot).
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 15000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE TABLE bi (id int NOT NULL, day date NOT NULL, amount int) PARTITION BY RANGE (day);
CREATE TABLE bi_01 PARTITION OF bi FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE bi_02 PARTITION OF bi FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
INSERT INTO bi SELECT g, date '2024-01-01' + g % 60, g FROM generate_series(1, 600) g;
CREATE TABLE bi_src AS SELECT id, day, amount + 1 AS amount FROM bi;
CREATE VIEW bi_view AS SELECT * FROM bi;
CREATE MATERIALIZED VIEW bi_matview AS SELECT * FROM bi;
CREATE TABLE bi_hash (id int, day date) PARTITION BY HASH (id);
CREATE INDEX bi_amount ON bi (amount);

-- jobs in every end state, to call functions in the wrong state
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', background => false) AS done_job \gset
CALL backfill_run(:done_job);
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', background => false) AS cancelled_job \gset
SELECT backfill_cancel(:cancelled_job);
SELECT backfill_start('bi', '2024-02-01', '2024-03-01',
       'SELECT id, day, amount / 0 AS amount FROM bi_src WHERE day >= $1 AND day < $2',
       background => false) AS failed_job \gset
CALL backfill_run(:failed_job);
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', keep_old => true,
                      background => false) AS kept_nothing_job \gset
SELECT backfill_cancel(:kept_nothing_job);
SELECT id, state FROM backfill.jobs WHERE target = 'bi'::regclass ORDER BY id;

-- the snapshot every refusal below must leave as it is
CREATE TABLE before_snapshot AS
SELECT (SELECT count(*) FROM backfill.jobs) AS jobs,
       (SELECT string_agg(id || ':' || state, ',' ORDER BY id) FROM backfill.jobs) AS job_states,
       (SELECT count(*) FROM backfill.tasks) AS tasks,
       (SELECT string_agg(job || '/' || task_no || ':' || state || ':' || attempts, ','
                          ORDER BY job, task_no) FROM backfill.tasks) AS task_states,
       (SELECT string_agg(c.oid || '=' || c.relname, ',' ORDER BY c.relname)
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'bi'::regclass) AS partitions,
       (SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class
         WHERE relnamespace = 'public'::regnamespace) AS relations,
       (SELECT count(*) FROM pg_trigger WHERE tgrelid IN (SELECT inhrelid FROM pg_inherits)) AS triggers,
       (SELECT count(*) || ':' || sum(amount) FROM bi) AS rows_and_sum;
\set VERBOSITY default

-- backfill_start: the target
SELECT backfill_start(42, '2024-01-01', '2024-02-01', 'bi_src');
SELECT backfill_start('bi_01', '2024-01-01', '2024-02-01', 'bi_src');
SELECT backfill_start('bi_view', '2024-01-01', '2024-02-01', 'bi_src');
SELECT backfill_start('bi_matview', '2024-01-01', '2024-02-01', 'bi_src');
SELECT backfill_start('bi_hash', '2024-01-01', '2024-02-01', 'bi_src');
-- the range
SELECT backfill_start('bi', '2024-01-01', NULL, 'bi_src');
SELECT backfill_start('bi', true, false, 'bi_src');
SELECT backfill_start('bi', '2023-01-01', '2023-12-01', 'bi_src');
SELECT backfill_start('bi', '2024-03-01', '2024-01-01', 'bi_src');
SELECT backfill_start('bi', '2024-01-01', '2024-03-32', 'bi_src');
SELECT backfill_start('bi', 'infinity', 'infinity', 'bi_src');
-- every option NULL
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', pause => NULL);
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', workers => NULL);
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', lock_timeout => NULL);
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', swap_wait => NULL);
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', concurrent_writes => NULL);
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', ignore_publications => NULL);
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', background => NULL);
-- negative, absurd and unknown option values
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', pause => '-1 s');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', pause => 'soon');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', workers => -5);
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', lock_timeout => '-200ms');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', lock_timeout => '30 days',
                      swap_wait => '60 days');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', swap_wait => '-1 hour');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', swap_wait => '100ms');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', concurrent_writes => 'maybe');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_src', concurrent_writes => 'RETRY');
-- more workers than partitions is no error: the job gets fewer, with a NOTICE (rolled back here)
BEGIN;
SET LOCAL client_min_messages = notice;
SELECT backfill_start('bi', '2024-01-01', '2024-03-01', 'bi_src', workers => 100000,
                      background => false) AS big_job \gset
SELECT workers FROM backfill.jobs WHERE id = :big_job;
ROLLBACK;
-- the source
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', '');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'DELETE FROM bi_src RETURNING *');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'SELECT * FROM bi_src; DROP TABLE bi_src');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01',
       'WITH gone AS (DELETE FROM bi_src RETURNING *) SELECT * FROM gone');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'SELECT 1 AS id');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'bi_amount');
SELECT backfill_start('bi', '2024-01-01', '2024-02-01', 'SELECT id, day, amount FROM bi_src WHERE day >= $1 AND day < $2 ORDER BY');
-- backfill_plan
SELECT * FROM backfill_plan(NULL, '2024-01-01', '2024-02-01');
SELECT * FROM backfill_plan('bi_view', '2024-01-01', '2024-02-01');
SELECT * FROM backfill_plan('bi', '2024-02-01', NULL);
-- backfill_run, backfill_wait
CALL backfill_run(NULL);
CALL backfill_run(:done_job, max_tasks => -1);
CALL backfill_run(:done_job, max_duration => '-1 min');
CALL backfill_run(:done_job, max_duration => '0');
SET client_min_messages = notice;
CALL backfill_run(:done_job);
SET client_min_messages = warning;
SELECT backfill_wait(:done_job, '-1 s');
SELECT backfill_wait(NULL);
-- each call's answer is its own, however many in one query
SELECT backfill_wait(:done_job, '0s') AS done_job, backfill_wait(:failed_job, '0s') AS failed_job;
SELECT backfill_wait(:failed_job, '0s') AS failed_job, backfill_wait(:done_job, '0s') AS done_job;
-- backfill_set
SELECT backfill_set(:done_job, 'pause', '1s');
SELECT backfill_set(:failed_job, 'nap', '1s');
SELECT backfill_set(:failed_job, 'PAUSE', '1s');
SELECT backfill_set(:failed_job, 'pause', 'a while');
SELECT backfill_set(:failed_job, 'lock_timeout', '0');
SELECT backfill_set(:failed_job, 'lock_timeout', '30 days');
SELECT backfill_set(:failed_job, 'concurrent_writes', 'maybe');
SELECT backfill_set(:failed_job, 'swap_wait', '1ms');
SELECT backfill_set(:failed_job, '', '');
SELECT backfill_set(NULL, 'pause', '1s');
-- jobs that do not exist, wrong types
SELECT backfill_rollback(424242);
SELECT backfill_drop_old(424242);
SELECT backfill_rollback(NULL);
SELECT backfill_drop_old(NULL);
SELECT backfill_pause(NULL);
SELECT backfill_resume(NULL);
SELECT backfill_cancel(NULL);
SELECT backfill_pause('first');
SELECT backfill_status(0);
-- calls in the wrong state
SELECT backfill_pause(:cancelled_job);
SELECT backfill_resume(:cancelled_job);
SELECT backfill_cancel(:cancelled_job);
SELECT backfill_rollback(:done_job);
SELECT backfill_drop_old(:done_job);
SELECT backfill_drop_old(:kept_nothing_job);
SELECT backfill_rollback(:kept_nothing_job);
SELECT backfill_drop_old(:failed_job);
SELECT backfill_set(:cancelled_job, 'pause', '1s');

\set VERBOSITY terse
-- nothing changed
SELECT b.jobs = (SELECT count(*) FROM backfill.jobs) AS same_jobs,
       b.job_states = (SELECT string_agg(id || ':' || state, ',' ORDER BY id) FROM backfill.jobs) AS same_job_states,
       b.tasks = (SELECT count(*) FROM backfill.tasks) AS same_tasks,
       b.task_states = (SELECT string_agg(job || '/' || task_no || ':' || state || ':' || attempts, ','
                                          ORDER BY job, task_no) FROM backfill.tasks) AS same_task_states,
       b.partitions = (SELECT string_agg(c.oid || '=' || c.relname, ',' ORDER BY c.relname)
                         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                        WHERE i.inhparent = 'bi'::regclass) AS same_partitions,
       b.relations = (SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class
                       WHERE relnamespace = 'public'::regnamespace
                         AND relname <> 'before_snapshot') AS same_relations,
       b.triggers = (SELECT count(*) FROM pg_trigger WHERE tgrelid IN (SELECT inhrelid FROM pg_inherits)) AS same_triggers,
       b.rows_and_sum = (SELECT count(*) || ':' || sum(amount) FROM bi) AS same_rows
  FROM before_snapshot b;
SELECT count(*) AS bi_src_rows FROM bi_src;

DROP TABLE bi, bi_src, bi_hash, before_snapshot CASCADE;
