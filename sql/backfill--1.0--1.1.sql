-- backfill 1.1: writes into a partition during its build are caught up by key, not thrown away.
\echo Use "ALTER EXTENSION backfill UPDATE TO '1.1'" to load this file. \quit

-- How each task handled the writes made into its partition while its shadow was built.
ALTER TABLE backfill.tasks
    ADD COLUMN catch_up_key    text,   -- the key columns writes are caught up by; NULL: rebuilt
    ADD COLUMN keys_caught_up  bigint NOT NULL DEFAULT 0,
    ADD COLUMN catch_up_rounds int    NOT NULL DEFAULT 0,
    ADD COLUMN rebuilds        int    NOT NULL DEFAULT 0;  -- builds thrown away for a write

-- Row trigger put on a partition while its shadow is built, when the partition has a key: logs
-- the key of every row written (both keys of an update that changes it) into the task's key
-- log, backfill.keys_<job>_<task>. Arguments: job, task, the key's column numbers. It runs as
-- the extension owner so that any writer can log.
CREATE FUNCTION backfill.note_key() RETURNS trigger
AS 'MODULE_PATHNAME', 'backfill_note_key' LANGUAGE C SECURITY DEFINER;
REVOKE ALL ON FUNCTION backfill.note_key() FROM PUBLIC;

-- backfill_tasks shows how each task caught up.
DROP FUNCTION backfill_tasks(bigint);
CREATE FUNCTION backfill_tasks(job bigint)
RETURNS TABLE (partition text, lower_bound text, upper_bound text, state text, attempts int,
               rows_before bigint, rows_after bigint, swap_lock_ms numeric,
               started_at timestamptz, finished_at timestamptz, error text,
               catch_up_key text, keys_caught_up bigint, catch_up_rounds int, rebuilds int)
AS 'MODULE_PATHNAME', 'backfill_tasks' LANGUAGE C CALLED ON NULL INPUT STABLE;

-- backfill_plan, given the source, shows how writes into each partition would be handled, and
-- lists every problem that backfill_start would refuse (or a task would wait for).
DROP FUNCTION backfill_plan(regclass, anycompatible, anycompatible);
CREATE FUNCTION backfill_plan(target regclass, range_from anycompatible, range_to anycompatible,
                              source text DEFAULT NULL)
RETURNS TABLE (partition regclass, lower_bound text, upper_bound text, estimated_rows bigint,
               estimated_bytes bigint, concurrent_writes text, problems text[])
AS 'MODULE_PATHNAME', 'backfill_plan' LANGUAGE C CALLED ON NULL INPUT;
