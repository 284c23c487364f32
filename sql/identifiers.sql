-- Names with quotes, spaces, mixed case, non-ASCII characters and names of the maximum length
-- (63 bytes) in the schema, table, partitions and columns: backfills give the source's data and
-- keep every name; the names backfill makes (the shadow, the kept old partition) fit in 63 bytes
-- without cutting a character in two, never collide, and a table already holding one of them
-- stops the task clearly with nothing changed.
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 17000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE SCHEMA "Sch ""Q"" Größe";
CREATE TABLE "Sch ""Q"" Größe"."Events ""2024"" 日付" (
    "Id ""x""" int NOT NULL,
    "日付" date NOT NULL,
    "Größe" bigint,
    "Mixed Case" text DEFAULT 'dflt',
    PRIMARY KEY ("Id ""x""", "日付")) PARTITION BY RANGE ("日付");
CREATE INDEX "Größe Index" ON "Sch ""Q"" Größe"."Events ""2024"" 日付" ("Größe");
-- two partition names of 63 bytes that differ only in their last characters, so that any
-- name made by cutting them short and adding a suffix would be the same for both
CREATE TABLE names (month int, name text);
INSERT INTO names VALUES (1, 'Part Jan'), (2, 'Part "Feb"'),
    (3, 'xy' || repeat('ü', 29) || ' 03'), (4, 'xy' || repeat('ü', 29) || ' 04');
SELECT month, name, octet_length(name) AS bytes FROM names ORDER BY month;
SELECT format('CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
              'Sch "Q" Größe', name, 'Sch "Q" Größe', 'Events "2024" 日付',
              make_date(2024, month, 1), make_date(2024, month + 1, 1))
  FROM names ORDER BY month \gexec
INSERT INTO "Sch ""Q"" Größe"."Events ""2024"" 日付"
SELECT g, date '2024-01-01' + g % 120, g, 'old' FROM generate_series(1, 1200) g;
CREATE TABLE "Sch ""Q"" Größe"."Src ""Table"""
    AS SELECT "Id ""x""", "日付", "Größe" * 2 AS "Größe" FROM "Sch ""Q"" Größe"."Events ""2024"" 日付";
-- the partitions as they are: name, oid, rows, sum
CREATE TABLE parts_before AS
SELECT c.relname, c.oid, (xpath('/row/n/text()', query_to_xml(format(
           'SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text AS n
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE i.inhparent = '"Sch ""Q"" Größe"."Events ""2024"" 日付"'::regclass;
CREATE VIEW parts AS
SELECT c.relname, c.oid, octet_length(c.relname) AS bytes
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = '"Sch ""Q"" Größe"."Events ""2024"" 日付"'::regclass;
CREATE VIEW made_names AS  -- tables backfill made in the schema, attached or not
SELECT relname, octet_length(relname) AS bytes FROM pg_class
 WHERE relnamespace = '"Sch ""Q"" Größe"'::regnamespace AND relkind = 'r'
   AND relname NOT IN (SELECT name FROM names) AND relname NOT LIKE 'Src%';
\set VERBOSITY default

-- 1. a relation source given by its quoted name, keep_old: every name kept, the data new
SELECT backfill_start('"Sch ""Q"" Größe"."Events ""2024"" 日付"', '2024-01-01', '2024-05-01',
       '"Sch ""Q"" Größe"."Src ""Table"""', keep_old => true, background => false) AS job \gset
CALL backfill_run(:job);
SELECT state, tasks_done, last_error FROM backfill_status(:job);
SELECT partition, state, rows_before, rows_after FROM backfill_tasks(:job);
SELECT p.relname, p.bytes, p.oid <> b.oid AS replaced FROM parts p JOIN parts_before b USING (relname)
 ORDER BY 1;
SELECT count(*) AS differences FROM (
    SELECT "Id ""x""", "日付", "Größe" FROM "Sch ""Q"" Größe"."Events ""2024"" 日付"
    EXCEPT SELECT * FROM "Sch ""Q"" Größe"."Src ""Table""") d;
SELECT "Mixed Case", count(*), sum("Größe") FROM "Sch ""Q"" Größe"."Events ""2024"" 日付"
 GROUP BY 1;
-- the kept partitions: one per partition, each name at most 63 bytes and whole characters
-- (the long ones are cut to 52 bytes before '_bf<job>_<task>': 53 would split a 'ü')
SELECT relname, bytes, relname IS NFC NORMALIZED AS valid_text FROM made_names ORDER BY 1;
SELECT count(*) AS kept, count(DISTINCT old_name) AS distinct_names
  FROM backfill.tasks WHERE job = :job AND old_name IS NOT NULL;
SELECT indexrelid::regclass FROM pg_index i JOIN parts p ON p.oid = i.indrelid
 WHERE p.relname = 'Part "Feb"' ORDER BY 1;

-- 2. rolled back: the old partitions return under their own names, with their rows
SELECT backfill_rollback(:job);
CALL backfill_run(:job);
SELECT state, last_error FROM backfill_status(:job);
SELECT p.relname, b.n = (xpath('/row/n/text()', query_to_xml(format(
           'SELECT count(*) AS n FROM %I.%I WHERE "Mixed Case" = ''old''', 'Sch "Q" Größe', p.relname),
           false, true, '')))[1]::text AS old_rows_back
  FROM parts p JOIN parts_before b USING (relname) ORDER BY 1;
SELECT count(*) AS made_names_left FROM made_names;

-- 3. a table already holding the shadow's name: a start refuses it; made after the start, the
--    task stops, saying so, nothing changes; once it is gone, resume finishes the job
SELECT last_value + 1 AS next_job FROM backfill.jobs_id_seq \gset
SELECT format('CREATE TABLE %I.%I (planted int)', 'Sch "Q" Größe', 'bf_shadow_' || :next_job || '_1') \gexec
SELECT backfill_start('"Sch ""Q"" Größe"."Events ""2024"" 日付"', '2024-01-01', '2024-05-01',
       '"Sch ""Q"" Größe"."Src ""Table"""', background => false);
SELECT format('DROP TABLE %I.%I', 'Sch "Q" Größe', 'bf_shadow_' || :next_job || '_1') \gexec
SELECT backfill_start('"Sch ""Q"" Größe"."Events ""2024"" 日付"', '2024-01-01', '2024-05-01',
       'SELECT "Id ""x""", "日付", "Größe" + 1 AS "Größe", ''q'' AS "Mixed Case"
          FROM "Sch ""Q"" Größe"."Src ""Table"""
         WHERE "日付" >= $1 AND "日付" < $2', background => false) AS job \gset
SELECT format('CREATE TABLE %I.%I (planted int)', 'Sch "Q" Größe', 'bf_shadow_' || :job || '_1') \gexec
CALL backfill_run(:job);
SELECT state, tasks_done, last_error FROM backfill_status(:job);
SELECT count(*) FILTER (WHERE p.oid = b.oid) AS unchanged_partitions FROM parts p JOIN parts_before b USING (relname);
SELECT "Mixed Case", count(*) FROM "Sch ""Q"" Größe"."Events ""2024"" 日付" GROUP BY 1;
SELECT relname FROM made_names ORDER BY 1;
SELECT count(*) AS triggers FROM pg_trigger t JOIN parts p ON p.oid = t.tgrelid;
SELECT format('DROP TABLE %I.%I', 'Sch "Q" Größe', 'bf_shadow_' || :job || '_1') \gexec
SELECT backfill_resume(:job);
CALL backfill_run(:job);
SELECT state, tasks_done FROM backfill_status(:job);
SELECT "Mixed Case", count(*), sum("Größe") FROM "Sch ""Q"" Größe"."Events ""2024"" 日付" GROUP BY 1;
SELECT count(*) AS made_names_left FROM made_names;

-- 4. a table already holding the name the kept old partition would get: that task's swap
--    stops, saying so, its partition as it was; once the table is gone, resume finishes
CREATE TABLE parts_mid AS SELECT relname, oid FROM parts;
SELECT backfill_start('"Sch ""Q"" Größe"."Events ""2024"" 日付"', '2024-01-01', '2024-05-01',
       '"Sch ""Q"" Größe"."Src ""Table"""', keep_old => true, background => false) AS job \gset
SELECT format('CREATE TABLE %I.%I (planted int)', 'Sch "Q" Größe', 'Part "Feb"_bf' || :job) \gexec
CALL backfill_run(:job);
SELECT state, tasks_done, last_error FROM backfill_status(:job);
SELECT partition, state, error FROM backfill_tasks(:job);
SELECT p.relname, p.oid <> m.oid AS replaced FROM parts p JOIN parts_mid m USING (relname) ORDER BY 1;
SELECT relname FROM made_names ORDER BY 1;
SELECT format('DROP TABLE %I.%I', 'Sch "Q" Größe', 'Part "Feb"_bf' || :job) \gexec
SELECT backfill_resume(:job);
CALL backfill_run(:job);
SELECT state, tasks_done FROM backfill_status(:job);
SELECT relname, bytes FROM made_names ORDER BY 1;
SELECT count(*) AS differences FROM (
    SELECT "Id ""x""", "日付", "Größe" FROM "Sch ""Q"" Größe"."Events ""2024"" 日付"
    EXCEPT SELECT * FROM "Sch ""Q"" Größe"."Src ""Table""") d;
SELECT backfill_drop_old(:job);
SELECT count(*) AS made_names_left FROM made_names;
SELECT relname, bytes FROM parts ORDER BY 1;

DROP SCHEMA "Sch ""Q"" Größe" CASCADE;
DROP TABLE names, parts_before, parts_mid CASCADE;
