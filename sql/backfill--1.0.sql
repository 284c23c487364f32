-- backfill 1.0: shadow-and-swap backfills of RANGE-partitioned tables.
\echo Use "CREATE EXTENSION backfill" to load this file. \quit

-- Job and task state lives in an extension-owned schema; ordinary roles reach it only through
-- the functions below.
CREATE SCHEMA backfill;
REVOKE ALL ON SCHEMA backfill FROM PUBLIC;
-- Everyone may look into the schema (the progress view, the pacing function); its tables stay
-- closed to ordinary roles.
GRANT USAGE ON SCHEMA backfill TO PUBLIC;

CREATE TABLE backfill.jobs (
    id                  bigserial PRIMARY KEY,
    target              regclass    NOT NULL,
    target_name         text        NOT NULL,   -- qualified name at start, for messages
    key_column          name        NOT NULL,
    key_type            regtype     NOT NULL,
    range_from          text        NOT NULL,   -- canonical text of the key type (ISO dates)
    range_to            text        NOT NULL,
    source              text        NOT NULL,
    source_is_query     boolean     NOT NULL,
    pause               interval    NOT NULL,
    workers             int         NOT NULL,
    keep_old            boolean     NOT NULL,
    lock_timeout        interval    NOT NULL,
    swap_wait           interval    NOT NULL,
    concurrent_writes   text        NOT NULL,
    ignore_publications boolean     NOT NULL,
    max_rows_per_second bigint,
    max_replication_lag interval,
    run_window          text,
    throttle_query      text,
    background          boolean     NOT NULL,
    run_as              regrole     NOT NULL,   -- current_user at start: the job's rights
    login_role          regrole     NOT NULL,   -- session user at start: the worker logs in as it
    search_path         text        NOT NULL,   -- the caller's search_path, pinned for the source
    time_zone           text        NOT NULL,   -- the caller's TimeZone and DateStyle, for the
    date_style          text        NOT NULL,   -- source's values as the caller's INSERT would get them
    state               text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'paused', 'done', 'failed', 'cancelled')),
    waiting_on          text,
    last_error          text,
    interrupted         boolean     NOT NULL DEFAULT false, -- stopped by SIGTERM or a restart
    rolling_back        boolean     NOT NULL DEFAULT false, -- backfill_rollback asked for
    system_identifier   numeric,    -- the server the job started on: a restored backup or a
    timeline            int,        -- promoted standby does not resume it by itself
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    finished_at         timestamptz,
    CHECK (concurrent_writes IN ('retry', 'ignore'))
);
-- One live job per target, even when two sessions start at the same moment.
CREATE UNIQUE INDEX jobs_one_live_job_per_target ON backfill.jobs (target)
    WHERE state IN ('pending', 'running', 'paused');

CREATE TABLE backfill.tasks (
    job              bigint      NOT NULL REFERENCES backfill.jobs (id) ON DELETE CASCADE,
    task_no          int         NOT NULL,
    partition_schema name        NOT NULL,
    partition_name   name        NOT NULL,
    lower_bound      text        NOT NULL,
    upper_bound      text        NOT NULL,
    estimated_rows   bigint      NOT NULL DEFAULT 0,
    state            text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'done', 'failed', 'skipped')),
    phase            text,       -- how far a running task got: shadow, loaded, indexed
    runner_slot      int,        -- which of the job's runners runs it (see control.cpp)
    attempts         int         NOT NULL DEFAULT 0,
    files_from       oid,        -- lowest relation file number of its latest attempt (stray_files)
    rows_before      bigint,
    rows_after       bigint,
    swap_lock_ms     numeric,
    shadow_name      name,       -- the shadow table this task created, while it exists
    old_name         name,       -- the replaced partition, detached, while it exists
    started_at       timestamptz,
    finished_at      timestamptz,
    error            text,
    PRIMARY KEY (job, task_no)
);

-- Markers left by writes into a partition while its shadow is built (concurrent_writes = retry).
CREATE UNLOGGED TABLE backfill.writes (
    job     bigint NOT NULL,
    task_no int    NOT NULL
);
CREATE INDEX writes_task ON backfill.writes (job, task_no);

SELECT pg_catalog.pg_extension_config_dump('backfill.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('backfill.jobs_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('backfill.tasks', '');

-- Every change of a job's or a task's state is logged and sent as NOTIFY backfill, '<json>', in
-- the transaction that makes it, so a client can follow a job with LISTEN backfill. The payload
-- names the job, task, partition and state, never data or error text: backfill_status and
-- backfill_tasks, which check who may see a job, give the rest.
CREATE FUNCTION backfill.announce_state() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'jobs' THEN
        RAISE LOG 'backfill job % (%): %', NEW.id, NEW.target_name, NEW.state;
        PERFORM pg_notify('backfill', json_build_object(
            'job', NEW.id, 'target', NEW.target_name, 'state', NEW.state)::text);
    ELSE
        RAISE LOG 'backfill job %: partition %: %', NEW.job,
            format('%I.%I', NEW.partition_schema, NEW.partition_name), NEW.state;
        PERFORM pg_notify('backfill', json_build_object(
            'job', NEW.job, 'task', NEW.task_no,
            'partition', format('%I.%I', NEW.partition_schema, NEW.partition_name),
            'state', NEW.state, 'rows', NEW.rows_after)::text);
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION backfill.announce_state() FROM PUBLIC;
CREATE TRIGGER announce_new_job AFTER INSERT ON backfill.jobs
    FOR EACH ROW EXECUTE FUNCTION backfill.announce_state();
CREATE TRIGGER announce_job_state AFTER UPDATE OF state ON backfill.jobs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION backfill.announce_state();
CREATE TRIGGER announce_task_state AFTER UPDATE OF state ON backfill.tasks
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION backfill.announce_state();

-- Row trigger put on a partition while its shadow is built: notes, once per transaction, that
-- the partition was written to. It runs as the extension owner so any writer can leave the note.
CREATE FUNCTION backfill.note_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('backfill_noted.job' || TG_ARGV[0] || '_' || TG_ARGV[1], true)
       IS DISTINCT FROM 'on' THEN
        INSERT INTO backfill.writes VALUES (TG_ARGV[0]::bigint, TG_ARGV[1]::int);
        PERFORM set_config('backfill_noted.job' || TG_ARGV[0] || '_' || TG_ARGV[1], 'on', true);
    END IF;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION backfill.note_write() FROM PUBLIC;

-- Called per row by a load under max_rows_per_second: sleeps while the load runs ahead of the
-- rate. Outside such a load it returns true at once.
CREATE FUNCTION backfill.pace() RETURNS boolean
AS 'MODULE_PATHNAME', 'backfill_pace' LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION backfill_start(
    target              regclass,
    range_from          anycompatible,
    range_to            anycompatible,
    source              text,
    pause               interval DEFAULT '0s',
    workers             int      DEFAULT 1,
    keep_old            boolean  DEFAULT false,
    lock_timeout        interval DEFAULT '200ms',
    swap_wait           interval DEFAULT '1 hour',
    concurrent_writes   text     DEFAULT 'retry',
    ignore_publications boolean  DEFAULT false,
    max_rows_per_second bigint   DEFAULT NULL,
    max_replication_lag interval DEFAULT NULL,
    run_window          text     DEFAULT NULL,
    throttle_query      text     DEFAULT NULL,
    background          boolean  DEFAULT true)
RETURNS bigint
AS 'MODULE_PATHNAME', 'backfill_start' LANGUAGE C CALLED ON NULL INPUT;

CREATE FUNCTION backfill_plan(target regclass, range_from anycompatible, range_to anycompatible)
RETURNS TABLE (partition regclass, lower_bound text, upper_bound text, estimated_rows bigint,
               estimated_bytes bigint)
AS 'MODULE_PATHNAME', 'backfill_plan' LANGUAGE C CALLED ON NULL INPUT;

CREATE PROCEDURE backfill_run(job bigint, max_tasks int DEFAULT NULL,
                              max_duration interval DEFAULT NULL)
AS 'MODULE_PATHNAME', 'backfill_run' LANGUAGE C;

CREATE FUNCTION backfill_wait(job bigint, timeout interval DEFAULT NULL) RETURNS text
AS 'MODULE_PATHNAME', 'backfill_wait' LANGUAGE C CALLED ON NULL INPUT;

CREATE FUNCTION backfill_status(job bigint DEFAULT NULL)
RETURNS TABLE (job bigint, target regclass, state text, tasks_total int, tasks_done int,
               tasks_failed int, rows_written bigint, percent numeric, rows_per_second numeric,
               eta interval, waiting_on text, started_at timestamptz, finished_at timestamptz,
               last_error text)
AS 'MODULE_PATHNAME', 'backfill_status' LANGUAGE C CALLED ON NULL INPUT STABLE;

CREATE FUNCTION backfill_tasks(job bigint)
RETURNS TABLE (partition text, lower_bound text, upper_bound text, state text, attempts int,
               rows_before bigint, rows_after bigint, swap_lock_ms numeric,
               started_at timestamptz, finished_at timestamptz, error text)
AS 'MODULE_PATHNAME', 'backfill_tasks' LANGUAGE C CALLED ON NULL INPUT STABLE;

CREATE FUNCTION backfill_pause(job bigint) RETURNS void
AS 'MODULE_PATHNAME', 'backfill_pause' LANGUAGE C CALLED ON NULL INPUT;

CREATE FUNCTION backfill_resume(job bigint) RETURNS void
AS 'MODULE_PATHNAME', 'backfill_resume' LANGUAGE C CALLED ON NULL INPUT;

CREATE FUNCTION backfill_cancel(job bigint) RETURNS void
AS 'MODULE_PATHNAME', 'backfill_cancel' LANGUAGE C CALLED ON NULL INPUT;

CREATE FUNCTION backfill_set(job bigint, option text, value text) RETURNS void
AS 'MODULE_PATHNAME', 'backfill_set' LANGUAGE C CALLED ON NULL INPUT;

CREATE FUNCTION backfill_rollback(job bigint) RETURNS void
AS 'MODULE_PATHNAME', 'backfill_rollback' LANGUAGE C CALLED ON NULL INPUT;

CREATE FUNCTION backfill_drop_old(job bigint) RETURNS void
AS 'MODULE_PATHNAME', 'backfill_drop_old' LANGUAGE C CALLED ON NULL INPUT;

-- The jobs that are not over, made for `\watch 1` in psql: one line each, with a progress bar.
CREATE VIEW backfill.progress AS
SELECT s.job, s.target, s.state,
       '[' || repeat('#', (coalesce(s.percent, 0) / 5)::int)
           || repeat('.', 20 - (coalesce(s.percent, 0) / 5)::int) || ']' AS bar,
       s.percent, s.tasks_done || '/' || s.tasks_total AS tasks, s.rows_written,
       s.rows_per_second, s.eta, s.waiting_on
FROM @extschema@.backfill_status() s
WHERE s.state IN ('pending', 'running', 'paused') OR s.finished_at > now() - interval '1 minute'
ORDER BY s.job;
GRANT SELECT ON backfill.progress TO PUBLIC;
