-- What a job needs to carry a partition's tablespaces and publication memberships over, checked
-- at start: CREATE on the tablespaces of the partitions and their indexes, and ownership of the
-- publications the partitions are members of (with ignore_publications).
SET client_min_messages = warning;
SELECT setval('backfill.jobs_id_seq', 21000) AS job_ids_from; -- job ids in messages do not depend on test order
CREATE ROLE bf_cr_owner;
CREATE ROLE bf_cr_pubs;
GRANT CREATE ON SCHEMA public TO bf_cr_owner;
DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO bf_cr_pubs', current_database()); END $$;
SET allow_in_place_tablespaces = on;
CREATE TABLESPACE "bf cr space" LOCATION '';
RESET allow_in_place_tablespaces;

SET SESSION AUTHORIZATION bf_cr_owner;
CREATE TABLE cr (id int, day date NOT NULL, amount int, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE cr_01 PARTITION OF cr FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE cr_02 PARTITION OF cr FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE INDEX cr_02_amount ON cr_02 (amount);
INSERT INTO cr SELECT g, date '2024-01-01' + g % 60, g FROM generate_series(1, 600) g;
CREATE TABLE cr_src AS SELECT id, day, amount * 10 AS amount FROM cr;
RESET SESSION AUTHORIZATION;
-- placed by a superuser where the owner may not create
ALTER INDEX cr_02_amount SET TABLESPACE "bf cr space";
SET client_min_messages = error; -- no warning that wal_level is not logical
CREATE PUBLICATION "bf cr pub" FOR TABLE cr_01 (id, day) WHERE (id > 300);
SET client_min_messages = warning;
ALTER PUBLICATION "bf cr pub" OWNER TO bf_cr_pubs;
\set VERBOSITY default

SET SESSION AUTHORIZATION bf_cr_owner;
SELECT backfill_start('cr', '2024-01-01', '2024-03-01', 'cr_src', background => false,
                      ignore_publications => true);
RESET SESSION AUTHORIZATION;
GRANT CREATE ON TABLESPACE "bf cr space" TO bf_cr_owner;
SET SESSION AUTHORIZATION bf_cr_owner;
SELECT backfill_start('cr', '2024-01-01', '2024-03-01', 'cr_src', background => false,
                      ignore_publications => true);
-- without ignore_publications, any publication is refused, whoever owns it
SELECT backfill_start('cr', '2024-01-01', '2024-03-01', 'cr_src', background => false);
RESET SESSION AUTHORIZATION;
GRANT bf_cr_pubs TO bf_cr_owner;
SET SESSION AUTHORIZATION bf_cr_owner;
SELECT backfill_start('cr', '2024-01-01', '2024-03-01', 'cr_src', background => false,
                      ignore_publications => true) AS job \gset
CALL backfill_run(:job);
SELECT partition, state, rows_before, rows_after FROM backfill_tasks(:job);
SELECT sum(amount) AS total FROM cr;
RESET SESSION AUTHORIZATION;
SELECT c.relname, t.spcname FROM pg_class c LEFT JOIN pg_tablespace t ON t.oid = c.reltablespace
 WHERE c.relname LIKE 'cr%' AND c.relkind = 'i' ORDER BY 1;
SELECT p.pubname, r.prrelid::regclass, r.prattrs, pg_get_expr(r.prqual, r.prrelid)
  FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid ORDER BY 1, 2;

DROP TABLE cr, cr_src;
DROP PUBLICATION "bf cr pub";
DROP TABLESPACE "bf cr space";
DO $$ BEGIN EXECUTE format('REVOKE CREATE ON DATABASE %I FROM bf_cr_pubs', current_database()); END $$;
REVOKE CREATE ON SCHEMA public FROM bf_cr_owner;
DROP ROLE bf_cr_owner, bf_cr_pubs;
