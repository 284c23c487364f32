-- The new partition is the old one, corrected: what belongs to the partition rather than its
-- parent carries over (indexes and their tablespaces, constraints, foreign keys, defaults, owner,
-- grants, storage options, publication memberships), and the parent's foreign keys arrive
-- validated before the swap. A rollback brings the old partitions back with all of it.
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 5000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE ROLE "bf part owner";
CREATE ROLE "bf reader";
CREATE TABLE co_cust (id int PRIMARY KEY);
INSERT INTO co_cust SELECT generate_series(1, 50);
CREATE TABLE co (id int NOT NULL, gone int, day date NOT NULL, cust int REFERENCES co_cust, amount int,
                 note text DEFAULT 'parent default', PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
CREATE TABLE co_01 PARTITION OF co FOR VALUES FROM ('2024-01-01') TO ('2024-02-01')
  WITH (fillfactor = 70, autovacuum_enabled = false);
CREATE UNLOGGED TABLE co_02 PARTITION OF co FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE INDEX co_amount ON co (amount);
CREATE INDEX co_01_local_note ON co_01 (note) WHERE note IS NOT NULL;
-- the partitions keep the dropped column: their attribute numbers differ from a new table's
ALTER TABLE co DROP COLUMN gone;
ALTER TABLE co_01 ADD CONSTRAINT co_01_positive CHECK (amount > 0);
ALTER TABLE co_01 ADD CONSTRAINT co_01_cust_local FOREIGN KEY (cust) REFERENCES co_cust ON DELETE CASCADE;
ALTER TABLE co_01 ADD CONSTRAINT co_01_unique_amount UNIQUE (amount);
ALTER TABLE co_01 ALTER COLUMN note SET DEFAULT 'partition default';
COMMENT ON COLUMN co_01.amount IS 'cents';
GRANT SELECT, UPDATE ON co_01 TO "bf reader";
GRANT "bf part owner" TO CURRENT_USER;
ALTER TABLE co_02 OWNER TO "bf part owner";
INSERT INTO co SELECT g, date '2024-01-01' + g % 60, 1 + g % 50, g FROM generate_series(1, 600) g;
-- a partition's own triggers (one disabled), row-level security, replica identity, comments,
-- statistics targets and column grants
CREATE TABLE co_audit (id int, day date);
CREATE FUNCTION co_audit_row() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN INSERT INTO co_audit VALUES (NEW.id, NEW.day); RETURN NEW; END $$;
CREATE TRIGGER co_01_audit AFTER INSERT ON co_01 FOR EACH ROW EXECUTE FUNCTION co_audit_row();
CREATE TRIGGER co_01_quiet BEFORE UPDATE ON co_01 FOR EACH ROW WHEN (OLD.amount < 0)
  EXECUTE FUNCTION co_audit_row();
ALTER TABLE co_01 DISABLE TRIGGER co_01_quiet;
ALTER TABLE co_01 ENABLE ROW LEVEL SECURITY;
ALTER TABLE co_01 FORCE ROW LEVEL SECURITY;
CREATE POLICY co_01_mine ON co_01 AS RESTRICTIVE FOR SELECT TO "bf reader" USING (cust < 10);
CREATE POLICY co_01_all ON co_01 USING (true) WITH CHECK (amount > 0);
ALTER TABLE co_01 REPLICA IDENTITY USING INDEX co_01_pkey;
ALTER TABLE co_02 REPLICA IDENTITY FULL;
COMMENT ON TABLE co_01 IS 'January, corrected';
ALTER TABLE co_01 ALTER COLUMN amount SET STATISTICS 500;
GRANT SELECT (id, amount) ON co_02 TO "bf reader";
-- indexes in another tablespace: a partition's own, its copy of a parent's, constraint-backed
SET allow_in_place_tablespaces = on;
CREATE TABLESPACE bf_co_space LOCATION '';
RESET allow_in_place_tablespaces;
ALTER INDEX co_01_local_note SET TABLESPACE bf_co_space;
ALTER INDEX co_01_amount_idx SET TABLESPACE bf_co_space;
ALTER INDEX co_01_unique_amount SET TABLESPACE bf_co_space;
ALTER INDEX co_02_pkey SET TABLESPACE bf_co_space;
ALTER TABLE co_01 ADD CONSTRAINT co_01_one_id EXCLUDE USING btree (id WITH =)
  USING INDEX TABLESPACE bf_co_space WHERE (amount > 100) DEFERRABLE;
-- publication memberships of the partitions themselves, with a column list and a row filter;
-- a schema's publication covers any table in it
-- (co_02 is unlogged: no publication takes it)
SET client_min_messages = error; -- no warning that wal_level is not logical
CREATE PUBLICATION bf_co_cols FOR TABLE co_01 (day, id, amount) WHERE (id > 10 AND day <> '2024-01-05');
CREATE PUBLICATION bf_co_plain FOR TABLE co_01;
CREATE SCHEMA bf_co_elsewhere;  -- a schema publication of the partitions' own schema would publish the shadows: refused
CREATE PUBLICATION bf_co_schema FOR TABLES IN SCHEMA bf_co_elsewhere;
SET client_min_messages = warning;
CREATE TABLE co_src AS SELECT id, day, cust, amount + 1000 AS amount FROM co;

-- what belongs to a partition, as text, to compare before and after
CREATE FUNCTION partition_properties(rel regclass) RETURNS TABLE (property text, value text)
LANGUAGE sql AS $$
    SELECT 'persistence', relpersistence::text FROM pg_class WHERE oid = rel
    UNION ALL SELECT 'owner', relowner::regrole::text FROM pg_class WHERE oid = rel
    UNION ALL SELECT 'grants', relacl::text FROM pg_class WHERE oid = rel
    UNION ALL SELECT 'options', reloptions::text FROM pg_class WHERE oid = rel
    UNION ALL SELECT 'index', pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = rel
    UNION ALL SELECT 'constraint', conname || ': ' || pg_get_constraintdef(oid) || ' valid '
                     || convalidated || ' inherited ' || (conparentid <> 0 OR coninhcount > 0)
                FROM pg_constraint WHERE conrelid = rel
    UNION ALL SELECT 'default', a.attname || ' = ' || pg_get_expr(d.adbin, d.adrelid)
                FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
               WHERE d.adrelid = rel
    UNION ALL SELECT 'comment', a.attname || ': ' || col_description(rel, a.attnum)
                FROM pg_attribute a WHERE a.attrelid = rel AND col_description(rel, a.attnum) IS NOT NULL
    UNION ALL SELECT 'table comment', obj_description(rel, 'pg_class')
    UNION ALL SELECT 'trigger', pg_get_triggerdef(oid) || ' enabled ' || tgenabled::text
                FROM pg_trigger WHERE tgrelid = rel AND NOT tgisinternal
    UNION ALL SELECT 'row security', relrowsecurity || ' forced ' || relforcerowsecurity
                FROM pg_class WHERE oid = rel
    UNION ALL SELECT 'policy', policyname || ' ' || permissive || ' ' || cmd || ' ' || roles::text
                               || ' ' || coalesce(qual, '-') || ' ' || coalesce(with_check, '-')
                FROM pg_policies WHERE (schemaname || '.' || tablename)::regclass = rel
    UNION ALL SELECT 'replica identity', relreplident::text FROM pg_class WHERE oid = rel
    UNION ALL SELECT 'replica identity index', indexrelid::regclass::text
                FROM pg_index WHERE indrelid = rel AND indisreplident
    UNION ALL SELECT 'statistics target', attname || ' ' || attstattarget
                FROM pg_attribute WHERE attrelid = rel AND attnum > 0 AND attstattarget >= 0
                 AND NOT attisdropped
    UNION ALL SELECT 'column grants', attname || ' ' || attacl::text
                FROM pg_attribute WHERE attrelid = rel AND attacl IS NOT NULL
    UNION ALL SELECT 'index tablespace', ic.relname || ' ' || coalesce(t.spcname, '-')
                FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                LEFT JOIN pg_tablespace t ON t.oid = ic.reltablespace WHERE i.indrelid = rel
    UNION ALL SELECT 'publication member', p.pubname || ' columns '
                     || coalesce((SELECT string_agg(a.attname, ',' ORDER BY a.attname)
                                  FROM pg_attribute a WHERE a.attrelid = r.prrelid
                                   AND a.attnum = ANY (r.prattrs::int2[])), '-')
                     || ' where ' || coalesce(pg_get_expr(r.prqual, r.prrelid), '-')
                FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
               WHERE r.prrelid = rel
    UNION ALL SELECT 'published', pubname || ' ' || attnames::text || ' ' || coalesce(rowfilter, '-')
                FROM pg_publication_tables
               WHERE (quote_ident(schemaname) || '.' || quote_ident(tablename))::regclass = rel
$$;
CREATE TEMP TABLE before AS
  SELECT p.relname, pp.* FROM (VALUES ('co_01'), ('co_02')) p (relname),
         LATERAL partition_properties(p.relname::regclass) pp;
-- the properties that differ from before, either way: what the partitions of that name have now
CREATE TEMP VIEW properties_changed AS
(SELECT * FROM before EXCEPT
 SELECT p.relname, pp.* FROM (VALUES ('co_01'), ('co_02')) p (relname),
        LATERAL partition_properties(p.relname::regclass) pp)
UNION ALL
(SELECT p.relname, pp.* FROM (VALUES ('co_01'), ('co_02')) p (relname),
        LATERAL partition_properties(p.relname::regclass) pp
 EXCEPT SELECT * FROM before);

-- Before each step the probe notes what a grantee of the partition could read of each shadow:
-- none of its rows before the shadow has the partition's row-level security too.
CREATE TABLE co_probes (loaded boolean, row_security boolean, reader_may_select boolean);
CREATE FUNCTION co_probe() RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE r record; loaded boolean;
BEGIN
  FOR r IN SELECT oid::regclass AS rel, relrowsecurity FROM pg_class
            WHERE relname LIKE 'bf_shadow%' AND relkind = 'r' LOOP
    EXECUTE format('SELECT EXISTS (SELECT FROM %s)', r.rel) INTO loaded;
    INSERT INTO co_probes VALUES (loaded, r.relrowsecurity,
                                  has_table_privilege('bf reader', r.rel, 'SELECT'));
  END LOOP;
  RETURN false;
END $$;
SELECT backfill_start('co', '2024-01-01', '2024-03-01', 'co_src', background => false,
                      keep_old => true, ignore_publications => true,
                      throttle_query => 'SELECT public.co_probe()') AS job \gset
CALL backfill_run(:job);
SELECT partition, state, rows_before, rows_after FROM backfill_tasks(:job);
SELECT loaded, row_security, reader_may_select, count(*) AS probes
  FROM co_probes GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

-- every property is the same on the new partitions: nothing is missing, nothing new
SELECT relname, count(*) AS properties FROM before GROUP BY 1 ORDER BY 1;
SELECT * FROM properties_changed;
-- the parent's foreign key is attached (not a second copy), the local one stays local
SELECT conname, conparentid <> 0 AS from_parent, convalidated
  FROM pg_constraint WHERE conrelid = 'co_01'::regclass AND contype = 'f' ORDER BY 1;
SELECT count(*) FROM (SELECT id, day, cust, amount FROM co EXCEPT SELECT * FROM co_src) d;
-- the load fired no trigger of the partition
SELECT count(*) AS audited FROM co_audit;
-- and they are enforced
INSERT INTO co VALUES (1000, '2024-01-10', 999, 5);
INSERT INTO co VALUES (1001, '2024-01-10', 1, -5);
-- the kept partitions are in no publication of their own (they would be published under their
-- new names); the new ones are
SELECT c.relname, count(r.prpubid) AS publications
  FROM pg_class c LEFT JOIN pg_publication_rel r ON r.prrelid = c.oid
 WHERE c.relname IN ('co_01', 'co_02', 'co_01_bf5001', 'co_02_bf5001') GROUP BY 1 ORDER BY 1;
-- rolled back, the old partitions are back with all their properties, memberships included
SELECT backfill_rollback(:job);
CALL backfill_run(:job);
SELECT state, last_error FROM backfill_status(:job);
SELECT * FROM properties_changed;
SELECT count(*) AS corrected_rows FROM (SELECT id, day, cust, amount FROM co INTERSECT SELECT * FROM co_src) d;
SELECT pubname, prrelid::regclass FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
 WHERE p.pubname LIKE 'bf_co_%' ORDER BY 1, 2;
-- the extension's tables are dumped with the database
SELECT unnest(extconfig)::regclass AS dumped FROM pg_extension WHERE extname = 'backfill' ORDER BY 1;

DROP TABLE co, co_src, co_cust, co_audit, co_probes;
DROP PUBLICATION bf_co_cols, bf_co_plain, bf_co_schema;
DROP SCHEMA bf_co_elsewhere;
DROP TABLESPACE bf_co_space;
DROP FUNCTION co_audit_row();
DROP FUNCTION co_probe();
DROP VIEW properties_changed;
DROP FUNCTION partition_properties(regclass);
DROP ROLE "bf part owner", "bf reader";
