-- bench_watch(job): while the job runs, samples its background workers every `every` and
-- reports each sample as a NOTICE line
--   sample|<epoch seconds>|<pid>|<activity>|<VmHWM kB>|<RssAnon kB>
-- The activity says which step a worker is in (pg_stat_activity.query); VmHWM is the worker's
-- peak resident set (shared buffers it touched included), RssAnon its private memory now, both
-- from /proc/<pid>/status. One backend polling: it costs the job next to nothing.
CREATE OR REPLACE FUNCTION bench_watch(job bigint, every float8 DEFAULT 0.2) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    w record;
    status text;
BEGIN
    LOOP
        PERFORM pg_stat_clear_snapshot();   -- else pg_stat_activity stays as first read
        FOR w IN SELECT pid, coalesce(query, '') AS query FROM pg_stat_activity
                 WHERE backend_type = 'backfill worker' LOOP
            BEGIN
                status := pg_read_file('/proc/' || w.pid || '/status');
            EXCEPTION WHEN OTHERS THEN
                status := '';               -- the worker exited since pg_stat_activity was read
            END;
            RAISE NOTICE 'sample|%|%|%|%|%', extract(epoch FROM clock_timestamp()), w.pid,
                replace(w.query, '|', '/'), substring(status FROM 'VmHWM:\s*(\d+)'),
                substring(status FROM 'RssAnon:\s*(\d+)');
        END LOOP;
        -- The control table, not backfill_status: a sample must cost the job next to nothing.
        EXIT WHEN (SELECT state FROM backfill.jobs WHERE id = job)
                  IN ('done', 'failed', 'cancelled', 'paused');   -- paused: it stopped short
        PERFORM pg_sleep(every);
    END LOOP;
END
$$;
