-- A schema early on the caller's search_path holds objects named like the ones backfill uses:
-- operators for the key's and the control tables' types, functions and an aggregate named like
-- pg_catalog's, tables named like catalogs. Each planted object notes every call in a log. The
-- backfills below (in the session and in a background worker) and the write-noting trigger give
-- the right data and never call a planted object: backfill's own SQL is schema-qualified or runs
-- with a pinned search_path, and only the job's source is read with the caller's.
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 16000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE ROLE bf_victim LOGIN;
CREATE TABLE hj (id int NOT NULL, day date NOT NULL, amount bigint, label text,
                 PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE hj_01 PARTITION OF hj FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE hj_02 PARTITION OF hj FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE hj_03 PARTITION OF hj FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
CREATE INDEX hj_label ON hj (lower(label));
INSERT INTO hj SELECT g, date '2024-01-01' + g % 90, g, 'Old' FROM generate_series(1, 900) g;
CREATE TABLE hj_src AS SELECT id, day, amount * 3 AS amount, 'New' AS label FROM hj;
ALTER TABLE hj OWNER TO bf_victim;
ALTER TABLE hj_01 OWNER TO bf_victim;
ALTER TABLE hj_02 OWNER TO bf_victim;
ALTER TABLE hj_03 OWNER TO bf_victim;
ALTER TABLE hj_src OWNER TO bf_victim;

SET ROLE bf_victim;
-- without CREATE on the partitions' schema, no job starts (each shadow is made there)
\set VERBOSITY default
SELECT backfill_start('hj', '2024-01-01', '2024-03-01', 'hj_src');
\set VERBOSITY terse
RESET ROLE;
GRANT CREATE ON SCHEMA public TO bf_victim;

-- the planted objects
CREATE SCHEMA evil;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
CREATE TABLE evil.calls (who text, what text);
GRANT INSERT ON evil.calls TO PUBLIC;
CREATE FUNCTION evil.noted(what text) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO evil.calls VALUES (pg_catalog."current_user"(), what) $$;
-- operators named like pg_catalog's: each notes its call, then does what pg_catalog's does
DO $plant$
DECLARE
    o record;
BEGIN
    FOR o IN SELECT * FROM (VALUES
            ('eq_bigint', '=', 'bigint', 'boolean'), ('eq_int', '=', 'int', 'boolean'),
            ('eq_oid', '=', 'oid', 'boolean'), ('eq_text', '=', 'text', 'boolean'),
            ('eq_name', '=', 'name', 'boolean'), ('eq_date', '=', 'date', 'boolean'),
            ('ge_date', '>=', 'date', 'boolean'), ('lt_date', '<', 'date', 'boolean'),
            ('ne_char', '<>', '"char"', 'boolean'), ('concat_text', '||', 'text', 'text'))
            v (fn, op, arg, result) LOOP
        EXECUTE format('CREATE FUNCTION evil.%I(%s, %s) RETURNS %s LANGUAGE plpgsql AS '
                       '$$ BEGIN PERFORM evil.noted(%L); '
                       'RETURN $1 OPERATOR(pg_catalog.%s) $2; END $$',
                       o.fn, o.arg, o.arg, o.result, o.op || ' ' || replace(o.arg, '"', ''), o.op);
        EXECUTE format('CREATE OPERATOR evil.%s (FUNCTION = evil.%I, LEFTARG = %s, RIGHTARG = %s)',
                       o.op, o.fn, o.arg, o.arg);
    END LOOP;
END
$plant$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.noted('now()'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.noted('lower()'); RETURN pg_catalog.lower($1); END $$;
CREATE FUNCTION evil.current_setting(text, boolean) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.noted('current_setting()'); RETURN pg_catalog.current_setting($1, $2); END $$;
CREATE FUNCTION evil.set_config(text, text, boolean) RETURNS text LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.noted('set_config()'); RETURN pg_catalog.set_config($1, $2, $3); END $$;
CREATE FUNCTION evil.to_regclass(text) RETURNS regclass LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.noted('to_regclass()'); RETURN pg_catalog.to_regclass($1); END $$;
CREATE FUNCTION evil.count_step(bigint) RETURNS bigint LANGUAGE plpgsql AS
    $$ BEGIN PERFORM evil.noted('count(*)'); RETURN $1 OPERATOR(pg_catalog.+) 1; END $$;
CREATE AGGREGATE evil.count(*) (SFUNC = evil.count_step, STYPE = bigint, INITCOND = '0');
CREATE TABLE evil.pg_class (nothing int);
CREATE TABLE evil.pg_inherits (nothing int);
CREATE TABLE evil.pg_index (nothing int);
CREATE TABLE evil.jobs (nothing int);
CREATE TABLE evil.tasks (nothing int);
GRANT SELECT ON ALL TABLES IN SCHEMA evil TO PUBLIC;
-- the planted objects work: a query that resolves names on the path calls them
SET search_path = evil, pg_catalog, public;
SELECT 1::bigint = 1::bigint AS planted_eq_works;
SELECT pg_catalog.count(*) AS planted_calls FROM evil.calls;
TRUNCATE evil.calls;
RESET search_path;

\set VERBOSITY default
-- a job run in this session, with the planted schema first on the caller's path
SET ROLE bf_victim;
SET search_path = evil, pg_catalog, public;
SELECT partition, lower_bound, upper_bound FROM public.backfill_plan('hj', '2024-01-01', '2024-04-01');
SELECT public.backfill_start('hj', '2024-01-01', '2024-03-01', 'hj_src', background => false,
                             keep_old => true) AS job \gset
CALL public.backfill_run(:job);
SELECT state, tasks_done, last_error FROM public.backfill_status(:job);
SELECT partition, state, error FROM public.backfill_tasks(:job);
-- a job run by a background worker, with the same path pinned for its source
SELECT public.backfill_start('hj', timestamptz '2024-03-01 00:00', '2024-04-01', 'hj_src') AS job2 \gset
SELECT public.backfill_wait(:job2, '60s');
SELECT partition, state, error FROM public.backfill_tasks(:job2);
-- roll the first job back and drop what it kept: the same discipline
SELECT public.backfill_rollback(:job);
CALL public.backfill_run(:job);
SELECT state FROM public.backfill_status(:job);
RESET search_path;
RESET ROLE;

-- no planted object was called, by anyone
SELECT who, what, pg_catalog.count(*) FROM evil.calls GROUP BY who, what ORDER BY who, what;
-- and the data is right: the first job rolled back (Old), the second job's partition is new
SELECT label, count(*), sum(amount) FROM hj GROUP BY label ORDER BY label;
SELECT count(*) AS differences FROM (
    SELECT id, day, amount, label FROM hj WHERE day >= '2024-03-01'
    EXCEPT SELECT id, day, amount, label FROM hj_src WHERE day >= '2024-03-01') d;
SELECT count(*) AS leftovers FROM pg_class WHERE relname LIKE 'bf\_%' OR relname LIKE 'hj\_0%\_bf%';

-- the write-noting trigger function runs as the extension owner with a pinned search_path
SELECT proname, prosecdef, proconfig FROM pg_proc WHERE oid = 'backfill.note_write'::regproc;
-- put on a table, it notes a write made by a role whose path has the planted schema first,
-- without calling anything planted
CREATE TABLE hj_noted (id int);
CREATE TRIGGER noted AFTER INSERT ON hj_noted
    FOR EACH ROW EXECUTE FUNCTION backfill.note_write('987654', '1');
GRANT INSERT ON hj_noted TO bf_victim;
SET ROLE bf_victim;
SET search_path = evil, pg_catalog, public;
INSERT INTO public.hj_noted VALUES (1), (2);
RESET search_path;
RESET ROLE;
SELECT job, task_no FROM backfill.writes WHERE job = 987654;
SELECT count(*) AS planted_calls FROM evil.calls;
DELETE FROM backfill.writes WHERE job = 987654;

DROP TABLE hj, hj_src, hj_noted CASCADE;
DROP SCHEMA evil CASCADE;
REVOKE CREATE ON SCHEMA public FROM bf_victim;
DROP ROLE bf_victim;
