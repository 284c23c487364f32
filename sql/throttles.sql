-- Throttles on a job run in this session (CALL backfill_run): run_window, throttle_query,
-- max_rows_per_second; then who sees which job, and the progress view.
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 6000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE TABLE t (id int NOT NULL, day date NOT NULL, amount int, PRIMARY KEY (id, day))
    PARTITION BY RANGE (day);
CREATE TABLE t_01 PARTITION OF t FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE t_02 PARTITION OF t FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE t_03 PARTITION OF t FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
INSERT INTO t SELECT g, date '2024-01-01' + g % 90, g FROM generate_series(1, 900) g;
CREATE TABLE t_raw AS SELECT id, day, amount * 10 AS amount FROM t;
CREATE TABLE hold_back (on_hold boolean);
\set VERBOSITY default

-- a window that is closed now (an hour from now for an hour, in server time): no task starts,
-- and a CALL with max_duration ends its slice
SELECT to_char(now() + interval '1 hour', 'HH24:MI') || '-' ||
       to_char(now() + interval '2 hours', 'HH24:MI') AS closed_window \gset
SELECT backfill_start('t', '2024-01-01', '2024-04-01', 't_raw', background => false,
                      run_window => :'closed_window') AS job \gset
SELECT run_window = :'closed_window' AS stored_as_given FROM backfill.jobs WHERE id = :job;
CALL backfill_run(:job, max_duration => '1.5 s');
SELECT state, tasks_done, waiting_on FROM backfill_status(:job);
SELECT count(*) AS tasks_started FROM backfill_tasks(:job) WHERE started_at IS NOT NULL;

-- a probe that says wait holds the job back the same way; the window is opened
SELECT backfill_set(:job, 'run_window', NULL);
SELECT backfill_set(:job, 'throttle_query', 'SELECT EXISTS (SELECT FROM hold_back)');
INSERT INTO hold_back VALUES (true);
CALL backfill_run(:job, max_duration => '1.5 s');
SELECT count(*) AS tasks_started FROM backfill_tasks(:job) WHERE started_at IS NOT NULL;

-- a probe that fails stops the job, which names it; fixed, the job resumes
SELECT backfill_set(:job, 'throttle_query', 'SELECT on_hold FROM hold_back WHERE 1 / 0 = 1');
CALL backfill_run(:job, max_duration => '1.5 s');
SELECT state, last_error FROM backfill_status(:job);
DELETE FROM hold_back;
SELECT backfill_set(:job, 'throttle_query', 'SELECT EXISTS (SELECT FROM hold_back)');
SELECT backfill_resume(:job);

-- a window open now: the job runs, under max_rows_per_second = 250 (about 300 rows a partition,
-- so each task takes more than a second: over the task, no more than the limit and its 10% margin)
SELECT to_char(now() - interval '1 hour', 'HH24:MI') || '-' ||
       to_char(now() + interval '1 hour', 'HH24:MI') AS open_window \gset
SELECT backfill_set(:job, 'run_window', :'open_window');
SELECT backfill_set(:job, 'max_rows_per_second', '250');
CALL backfill_run(:job);
SELECT state, tasks_done, rows_written, percent, waiting_on FROM backfill_status(:job);
SELECT partition, rows_after,
       rows_after / extract(epoch FROM finished_at - started_at) <= 250 * 1.1 AS within_the_rate
  FROM backfill_tasks(:job);
SELECT count(*) AS rows_not_from_the_source
  FROM (SELECT * FROM t EXCEPT SELECT * FROM t_raw) d;

-- the throttles of a finished job cannot change any more
SELECT backfill_set(:job, 'max_rows_per_second', '100');

-- only the role that started a job may change its probe, which runs with that role's rights
CREATE ROLE bf_team NOLOGIN;
CREATE ROLE bf_member NOLOGIN IN ROLE bf_team;
ALTER TABLE t OWNER TO bf_team;
SELECT backfill_start('t', '2024-01-01', '2024-02-01', 't_raw', background => false) AS job2 \gset
SET ROLE bf_member;
SELECT backfill_set(:job2, 'throttle_query', 'SELECT false');
SELECT backfill_set(:job2, 'run_window', '01:00-05:00');
RESET ROLE;

-- who sees a job: members of its target's owner and of the role that started it, members of
-- pg_monitor, superusers; nobody else, not even through the progress view
CREATE ROLE bf_outsider NOLOGIN;
CREATE ROLE bf_watcher NOLOGIN IN ROLE pg_monitor;
SET ROLE bf_outsider;
SELECT count(*) AS jobs_seen FROM backfill_status();
SELECT count(*) AS jobs_seen FROM backfill.progress;
SELECT * FROM backfill_status(:job2);
SELECT * FROM backfill_tasks(:job2);
SELECT backfill_wait(:job2, '1 s');
SET ROLE bf_watcher;
SELECT job - :job AS job, state FROM backfill_status() WHERE job BETWEEN :job AND :job2 ORDER BY job;
SET ROLE bf_member;
SELECT job - :job AS job, state FROM backfill_status() WHERE job BETWEEN :job AND :job2 ORDER BY job;
SELECT count(*) AS tasks FROM backfill_tasks(:job2);
RESET ROLE;

-- the progress view: the jobs not over, and those over in the last minute
SELECT job - :job AS job, target, state, bar, percent, tasks, rows_written
  FROM backfill.progress WHERE job BETWEEN :job AND :job2 ORDER BY job;

SELECT backfill_cancel(:job2);
DROP TABLE t, t_raw, hold_back;
DROP ROLE bf_team, bf_member, bf_outsider, bf_watcher;
