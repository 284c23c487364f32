-- The load step: the rows and the checks of a plain INSERT ... SELECT (assignment coercions,
-- defaults, NULL for a column left out, domains, generated columns, NOT NULL and CHECK
-- constraints), written as COPY FREEZE writes them: frozen and all-visible. When something acts
-- on each row of the shadow (here an audit trigger an event trigger adds), the INSERT itself runs.
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 22000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE EXTENSION pg_visibility;
CREATE DOMAIN positive_int AS int NOT NULL CHECK (VALUE > 0);
CREATE TABLE b (
    id     int NOT NULL,
    day    date NOT NULL,
    amount int CHECK (amount < 1000000),
    code   varchar(4),
    note   text DEFAULT 'none',
    flag   boolean,
    qty    positive_int DEFAULT 1,
    big    text,
    total  bigint GENERATED ALWAYS AS (amount * 2) STORED
) PARTITION BY RANGE (day);
CREATE TABLE b_01 PARTITION OF b FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE b_02 PARTITION OF b FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
INSERT INTO b (id, day, amount, code) SELECT g, date '2024-01-01' + g % 60, g, 'old'
  FROM generate_series(1, 6000) g;
-- The corrected rows: amounts as numeric (stored rounded), codes as text (within varchar(4)),
-- every tenth row with a value large enough to be stored out of line; more rows than one batch.
CREATE TABLE b_src AS
SELECT g AS id, date '2024-01-01' + g % 60 AS day, g + 0.5 AS amount, 'c' || g % 100 AS code,
       CASE WHEN g % 10 = 0 THEN (SELECT string_agg(md5(g::text || n), '') FROM generate_series(1, 200) n) END AS big
FROM generate_series(1, 6000) g;
-- What a plain INSERT of the same rows stores.
CREATE TABLE b_expected (LIKE b INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED);
INSERT INTO b_expected (id, day, amount, code, big) SELECT id, day, amount, code, big FROM b_src;

-- Partition by partition the table now holds exactly what the INSERT stored, frozen.
SELECT backfill_start('b', '2024-01-01', '2024-03-01', 'b_src') AS job \gset
SELECT backfill_wait(:job);
SELECT partition, state, rows_before, rows_after FROM backfill_tasks(:job);
SELECT count(*) AS rows, count(*) FILTER (WHERE big IS NOT NULL) AS out_of_line,
       count(*) FILTER (WHERE note = 'none' AND flag IS NULL AND qty = 1 AND total = amount * 2) AS filled
  FROM b;
SELECT count(*) AS differing FROM ((TABLE b EXCEPT ALL TABLE b_expected)
                                    UNION ALL (TABLE b_expected EXCEPT ALL TABLE b)) d;
SELECT relname, pg_relation_size(reltoastrelid) > 0 AS values_stored_out_of_line
  FROM pg_class WHERE relname IN ('b_01', 'b_02') ORDER BY relname;
-- the pages holding rows (from PostgreSQL 16 a load extends a table several pages at a time,
-- and may leave a few empty)
SELECT u.p AS partition, count(*) AS pages, count(*) FILTER (WHERE v.all_visible) AS all_visible,
       count(*) FILTER (WHERE v.all_frozen) AS all_frozen,
       (SELECT count(*) FROM pg_check_frozen(u.p)) AS not_frozen_on_frozen_pages
  FROM (SELECT DISTINCT tableoid::regclass AS p, ((ctid::text::point)[0])::bigint AS blkno FROM b) u,
       pg_visibility_map(u.p, u.blkno) v
 GROUP BY u.p ORDER BY u.p::text;
\set VERBOSITY terse

-- A value too long for the column fails as the INSERT fails: the task fails, the partition
-- is left as it was.
UPDATE b_src SET code = 'toolong' WHERE id = 4000;
SELECT backfill_start('b', '2024-01-01', '2024-03-01', 'b_src') AS job \gset
SELECT backfill_wait(:job);
SELECT partition, state, error FROM backfill_tasks(:job);
UPDATE b_src SET code = 'c0' WHERE id = 4000;

-- A CHECK constraint, checked on every row, also after the first batches were written.
UPDATE b_src SET amount = 2000000 WHERE id = 5999;
SELECT backfill_start('b', '2024-01-01', '2024-03-01', 'b_src') AS job \gset
SELECT backfill_wait(:job);
SELECT partition, state, error FROM backfill_tasks(:job);
UPDATE b_src SET amount = 5999.5 WHERE id = 5999;
SELECT count(*) AS differing FROM ((TABLE b EXCEPT ALL TABLE b_expected)
                                    UNION ALL (TABLE b_expected EXCEPT ALL TABLE b)) d;

-- A domain's NOT NULL holds for a column the source leaves out and that has no default.
CREATE TABLE d (id int NOT NULL, day date NOT NULL, qty positive_int) PARTITION BY RANGE (day);
CREATE TABLE d_01 PARTITION OF d FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
INSERT INTO d VALUES (1, '2024-01-05', 3);
SELECT backfill_start('d', '2024-01-01', '2024-02-01',
                      'SELECT id, day FROM d WHERE day >= $1 AND day < $2') AS job \gset
SELECT backfill_wait(:job);
SELECT partition, state, error FROM backfill_tasks(:job);
SELECT * FROM d;

-- Run in this session, a load that fails leaves the session healthy.
UPDATE b_src SET code = 'toolong' WHERE id = 10;
SELECT backfill_start('b', '2024-01-01', '2024-02-01', 'b_src', background => false) AS job \gset
CALL backfill_run(:job);
SELECT partition, state, error FROM backfill_tasks(:job);
SELECT count(*) AS rows, sum(amount) = (SELECT sum(amount) FROM b_expected WHERE day < '2024-02-01') AS unchanged
  FROM b_01;
UPDATE b_src SET code = 'c10' WHERE id = 10;
-- resumed, the same job loads the partition, frozen as in a worker
SELECT backfill_resume(:job);
CALL backfill_run(:job);
SELECT partition, state, error FROM backfill_tasks(:job);
SELECT bool_and(v.all_frozen) AS all_frozen
  FROM (SELECT DISTINCT ((ctid::text::point)[0])::bigint AS blkno FROM b_01) u,
       pg_visibility_map('b_01', u.blkno) v;

-- An audit trigger that an event trigger puts on every new table is on the shadow too: the
-- load is then the INSERT itself, and the trigger sees every row.
CREATE TABLE audit (tbl text);
CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.audit VALUES (TG_TABLE_NAME); RETURN NEW; END $$;
CREATE FUNCTION add_audit() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE t regclass;
BEGIN
    FOR t IN SELECT DISTINCT objid FROM pg_event_trigger_ddl_commands() WHERE object_type = 'table' LOOP
        EXECUTE format('CREATE TRIGGER audit AFTER INSERT ON %s FOR EACH ROW EXECUTE FUNCTION public.audit_row()', t);
    END LOOP;
END $$;
CREATE EVENT TRIGGER add_audit ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
  EXECUTE FUNCTION add_audit();
SELECT backfill_start('b', '2024-02-01', '2024-03-01', 'b_src') AS job \gset
SELECT backfill_wait(:job);
DROP EVENT TRIGGER add_audit;
SELECT partition, state, rows_after, error FROM backfill_tasks(:job);
SELECT count(*) AS audited, count(DISTINCT tbl) AS tables FROM audit;
SELECT v.all_frozen FROM pg_visibility_map_summary('b_02') v;
SELECT count(*) AS differing FROM ((TABLE b EXCEPT ALL TABLE b_expected)
                                    UNION ALL (TABLE b_expected EXCEPT ALL TABLE b)) d;

DROP TABLE b, b_src, b_expected, d, audit;
DROP FUNCTION audit_row(), add_audit();
DROP DOMAIN positive_int;
DROP EXTENSION pg_visibility;

-- Values converted as the caller's own INSERT would convert them: with the TimeZone and DateStyle
-- of the session that started the job, whatever those of the session or worker that runs it.
SET TimeZone = 'America/New_York';
SET DateStyle = 'ISO, DMY';
CREATE TABLE tz (id int, at timestamptz NOT NULL, d date) PARTITION BY RANGE (at);
CREATE TABLE tz_01 PARTITION OF tz FOR VALUES FROM ('2024-01-01 00:00+00') TO ('2024-03-01 00:00+00');
CREATE TABLE tz_src (id int, at timestamp, d text);
INSERT INTO tz_src VALUES (1, '2024-01-31 21:00', '01/02/2024'), (2, '2024-02-10 09:30', '10/02/2024');
CREATE TABLE tz_expected AS SELECT id, at::timestamptz AS at, d::date AS d FROM tz_src;
SELECT backfill_start('tz', '2024-01-01 00:00+00', '2024-03-01 00:00+00',
                      $$SELECT id, at, d::date AS d FROM tz_src WHERE at >= $1 AND at < $2$$,
                      background => false) AS job \gset
RESET TimeZone;
RESET DateStyle;
CALL backfill_run(:job);
SELECT id, at AT TIME ZONE 'UTC' AS at_utc, to_char(d, 'YYYY-MM-DD') AS d FROM tz ORDER BY id;
SELECT count(*) AS differing FROM ((TABLE tz EXCEPT ALL TABLE tz_expected)
                                    UNION ALL (TABLE tz_expected EXCEPT ALL TABLE tz)) d;
DROP TABLE tz, tz_src, tz_expected;
