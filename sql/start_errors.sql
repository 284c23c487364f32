-- Every refusal of backfill_start and backfill_plan happens at start, says what to do, and
-- changes nothing.
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 3000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE TABLE m (id int, day date NOT NULL, amount int) PARTITION BY RANGE (day);
CREATE TABLE m_01 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE m_02 PARTITION OF m FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE m_03 PARTITION OF m FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
INSERT INTO m SELECT g, date '2024-01-01' + g % 90, g FROM generate_series(1, 900) g;
CREATE TABLE m_src AS SELECT * FROM m;
\set VERBOSITY default

-- the target
SELECT backfill_start('no_such_table', '2024-01-01', '2024-02-01', 'm_src');
CREATE TABLE plain (day date);
SELECT backfill_start('plain', '2024-01-01', '2024-02-01', 'm_src');
CREATE TABLE by_list (day date) PARTITION BY LIST (day);
SELECT backfill_start('by_list', '2024-01-01', '2024-02-01', 'm_src');
CREATE TABLE two_cols (a int, day date) PARTITION BY RANGE (a, day);
SELECT backfill_start('two_cols', '2024-01-01', '2024-02-01', 'm_src');
CREATE TABLE by_expr (day date) PARTITION BY RANGE ((day + 1));
SELECT backfill_start('by_expr', '2024-01-01', '2024-02-01', 'm_src');
SELECT backfill_start(NULL, '2024-01-01', '2024-02-01', 'm_src');

-- the range
SELECT backfill_start('m', '2024-02-01', '2024-01-01', 'm_src');
SELECT backfill_start('m', '2024-01-01', '2024-01-01', 'm_src');
SELECT backfill_start('m', 'yesterday-ish', '2024-02-01', 'm_src');
SELECT backfill_start('m', NULL, '2024-02-01', 'm_src');
SELECT backfill_start('m', timestamptz '2024-01-01 12:00+00', timestamptz '2024-02-01 00:00+00', 'm_src');
SELECT backfill_start('m', 20240101, 20240201, 'm_src');
SELECT backfill_start('m', '2025-01-01', '2025-02-01', 'm_src');
SELECT backfill_start('m', '2024-01-15', '2024-03-01', 'm_src');
SELECT backfill_start('m', '2024-01-01', '2024-02-15', 'm_src');
CREATE TABLE m_tail PARTITION OF m FOR VALUES FROM ('2024-04-01') TO (MAXVALUE);
SELECT backfill_start('m', '2024-01-01', '2025-01-01', 'm_src');
DROP TABLE m_tail;
CREATE TABLE m_sub PARTITION OF m FOR VALUES FROM ('2024-04-01') TO ('2024-05-01') PARTITION BY RANGE (id);
SELECT backfill_start('m', '2024-01-01', '2024-05-01', 'm_src');
DROP TABLE m_sub;

-- a default partition that holds rows, then the CHECK the hint proposes
CREATE TABLE m_other PARTITION OF m DEFAULT;
INSERT INTO m VALUES (0, '2030-01-01', 0);
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src');
ALTER TABLE m_other ADD CONSTRAINT outside_backfill_range CHECK (day IS NULL OR day < '2024-01-01' OR day >= '2024-03-01');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', background => false) AS job \gset
SELECT backfill_cancel(:job);
DROP TABLE m_other;

-- foreign keys, dependent objects, publications
ALTER TABLE m_01 ADD PRIMARY KEY (id, day);
CREATE TABLE m_ref2 (id int, day date, CONSTRAINT m_ref2_fk FOREIGN KEY (id, day) REFERENCES m_01 (id, day));
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src');
DROP TABLE m_ref2;
CREATE VIEW m_01_view AS SELECT * FROM m_01;
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src');
DROP VIEW m_01_view;
CREATE FUNCTION m_02_total() RETURNS bigint BEGIN ATOMIC SELECT sum(amount) FROM m_02; END;
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src');
DROP FUNCTION m_02_total();
CREATE VIEW m_view AS SELECT * FROM m;   -- through the parent: fine
CREATE PUBLICATION m_pub FOR TABLE m;
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src');
DROP PUBLICATION m_pub;
-- a FOR ALL TABLES publication would publish the shadows: ignore_publications cannot allow it
CREATE PUBLICATION m_all FOR ALL TABLES;
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', ignore_publications => true);
DROP PUBLICATION m_all;
CREATE PUBLICATION m_schema FOR TABLES IN SCHEMA public;
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', ignore_publications => true);
DROP PUBLICATION m_schema;

-- backfill_plan lists every problem at once, on the partitions they concern, each with its fix;
-- backfill_start refuses with the first and counts the others
CREATE TABLE m_ref2 (id int, day date, CONSTRAINT m_ref2_fk FOREIGN KEY (id, day) REFERENCES m_01 (id, day));
CREATE VIEW m_01_view AS SELECT * FROM m_01;
CREATE PUBLICATION m_pub FOR TABLE m_02;
SELECT partition, unnest(problems) AS problem
  FROM backfill_plan('m', '2024-01-01', '2024-03-01', 'SELECT id, day, 1 AS extra FROM m_src')
  ORDER BY 1, 2;
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src');
DROP PUBLICATION m_pub;
DROP VIEW m_01_view;
DROP TABLE m_ref2;
SELECT partition, problems FROM backfill_plan('m', '2024-01-01', '2024-03-01', 'm_src');
-- a partition no job could replace is listed with its problem, and so is a live job
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', background => false) AS job \gset
SELECT partition, concurrent_writes, unnest(problems) AS problem
  FROM backfill_plan('m', '2024-01-15', '2024-03-01') ORDER BY 1, 3;
SELECT backfill_cancel(:job);

-- the source
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'no_such_source');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'SELECT id, day FROM nowhere');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'SELECT id, day, amount, 1 AS extra FROM m_src');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'SELECT id, amount FROM m_src');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'SELECT id, day, ''x''::text AS amount FROM m_src');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'SELECT id, day, id AS day FROM m_src');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'SELECT id, day FROM m_src WHERE day >= $1 AND day < $3');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', NULL);
CREATE TABLE g (id int, day date NOT NULL, twice int GENERATED ALWAYS AS (id * 2) STORED, must int NOT NULL) PARTITION BY RANGE (day);
CREATE TABLE g_01 PARTITION OF g FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
SELECT backfill_start('g', '2024-01-01', '2024-02-01', 'SELECT 1 AS id, day, 2 AS twice, 3 AS must FROM m_src');
SELECT backfill_start('g', '2024-01-01', '2024-02-01', 'SELECT 1 AS id, day FROM m_src');

-- options
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', pause => '-1s');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', lock_timeout => '0');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', swap_wait => '1s', lock_timeout => '2s');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', workers => 0);
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', concurrent_writes => 'block');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', max_rows_per_second => 0);
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', max_rows_per_second => -5);
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', max_replication_lag => '0s');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', max_replication_lag => '-1 min');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', run_window => '01:00');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', run_window => '01:00-24:30');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', run_window => '05:00-5:00');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', throttle_query => 'SELECT 1');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', throttle_query => 'SELECT false; SELECT true');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', throttle_query => 'DELETE FROM m_src RETURNING true');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', throttle_query => 'SELECT no_such_column');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', throttle_query => 'WITH gone AS (DELETE FROM m_src RETURNING 1) SELECT count(*) > 0 FROM gone');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', keep_old => NULL);

-- ownership
CREATE ROLE bf_stranger;
GRANT SELECT ON m_src TO bf_stranger;
SET ROLE bf_stranger;
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src');
RESET ROLE;

-- one live job per target
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', background => false) AS job \gset
SELECT backfill_start('m', '2024-02-01', '2024-04-01', 'm_src', background => false);
SELECT backfill_cancel(:job);

-- a relation already under a name the job would give: its shadow, or the replaced partition
SELECT last_value + 1 AS next_job FROM backfill.jobs_id_seq \gset
SELECT format('CREATE TABLE %I (planted int)', 'bf_shadow_' || :next_job || '_2') \gexec
SELECT partition, problems FROM backfill_plan('m', '2024-01-01', '2024-03-01');
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', background => false);
SELECT format('DROP TABLE %I', 'bf_shadow_' || :next_job || '_2') \gexec
SELECT last_value + 1 AS next_job FROM backfill.jobs_id_seq \gset
SELECT format('CREATE TABLE %I (planted int)', 'm_01_bf' || :next_job) \gexec
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', background => false);
SELECT format('DROP TABLE %I', 'm_01_bf' || :next_job) \gexec

-- nothing was changed by any refusal
SELECT state, count(*) FROM backfill.jobs WHERE target_name = 'public.m' GROUP BY state;
SELECT count(*) AS shadows FROM pg_class WHERE relname LIKE 'bf\_shadow\_%';
SELECT count(*), sum(amount) FROM m;

-- the refusal names the live job, even where the refused job's row would come first in the table
DELETE FROM backfill.jobs;
VACUUM FULL backfill.jobs;
CREATE TABLE m_other (LIKE m) PARTITION BY RANGE (day);
CREATE TABLE m_other_01 PARTITION OF m_other FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
SELECT backfill_start('m_other', '2024-01-01', '2024-02-01', 'm_src', background => false) AS first_job \gset
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', background => false) AS live_job \gset
DELETE FROM backfill.jobs WHERE id = :first_job;
VACUUM backfill.jobs;
SET enable_indexscan = off;  -- the jobs read in table order
SET enable_bitmapscan = off;
SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src', background => false);
RESET enable_indexscan;
RESET enable_bitmapscan;
SELECT backfill_cancel(:live_job);

DROP TABLE m, m_src, m_other, plain, by_list, two_cols, by_expr, g CASCADE;
DROP ROLE bf_stranger;
