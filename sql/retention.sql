-- A partition that retention drops or detaches while a job still has it to do is skipped, named
-- in a NOTICE (at resume) or a WARNING (found by the runner) and in backfill_tasks; the job goes
-- on with the others and ends done.
SET client_min_messages = notice;
SELECT setval('backfill.jobs_id_seq', 24000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE TABLE r (id int NOT NULL, day date NOT NULL, amount int, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE r_01 PARTITION OF r FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE r_02 PARTITION OF r FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE r_03 PARTITION OF r FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
CREATE TABLE r_04 PARTITION OF r FOR VALUES FROM ('2024-04-01') TO ('2024-05-01');
INSERT INTO r SELECT g, date '2024-01-01' + g % 120, 1 FROM generate_series(1, 1200) g;

SELECT backfill_start('r', '2024-01-01', '2024-05-01',
                      'SELECT id, day, amount * 2 AS amount FROM r WHERE day >= $1 AND day < $2',
                      background => false) AS job \gset
CALL backfill_run(:job, max_tasks => 1);
-- retention drops one partition and detaches another
DROP TABLE r_02;
ALTER TABLE r DETACH PARTITION r_03;
SELECT backfill_resume(:job);
CALL backfill_run(:job);
SELECT partition, state, error FROM backfill_tasks(:job);
SELECT state, tasks_done, last_error FROM backfill_status(:job);
SELECT tableoid::regclass AS partition, count(*), min(amount), max(amount) FROM r GROUP BY 1 ORDER BY 1;
SELECT count(*), min(amount), max(amount) FROM r_03;   -- detached: as it was

-- found by the runner, without a resume: the job goes on past it
CREATE TABLE r_02 PARTITION OF r FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
INSERT INTO r SELECT g, date '2024-02-01' + g % 29, 1 FROM generate_series(1, 100) g;
SELECT backfill_start('r', '2024-01-01', '2024-05-01',
                      'SELECT id, day, amount * 2 AS amount FROM r WHERE day >= $1 AND day < $2',
                      background => false) AS job \gset
DROP TABLE r_02;
CALL backfill_run(:job);
SELECT partition, state, error FROM backfill_tasks(:job);
SELECT state, tasks_done FROM backfill_status(:job);

DROP TABLE r, r_03;
