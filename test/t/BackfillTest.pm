# Shared helpers of the backfill TAP tests (test/t/*.pl): a server with the extension, the
# 12-partition table the tests backfill, and what the tests compare before and after a job.
package BackfillTest;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(
  new_node create_events month_partitions partition_bounds table_equals
  tasks_expected tasks_actual catalog_snapshot leftover_relations wait_for_state
  wait_job orphan_files task_states kill9_and_wait_for_recovery worker_pid job_status
  month_partitions_sql events_recomputed create_gate close_gate wait_at_gate task_phase
  worker_pids job_state stored_job_state wait_until_ended
);

# A started server with the extension created in database postgres, with $conf (lines of
# postgresql.conf) if given. restart_after_crash is on: a kill -9 of a backend must lead to
# crash recovery, not shutdown.
sub new_node
{
	my ($name, $conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf(
		'postgresql.conf', q{
max_worker_processes = 16
restart_after_crash = on
} . ($conf // ''));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION backfill');
	return $node;
}

# The partitions of public.events, 2024-01 .. 2024-12, in schema parts.
sub month_partitions
{
	return map { sprintf('events_2024_%02d', $_) } 1 .. 12;
}

# [lower, upper) of a partition made by create_events, as date literals.
sub partition_bounds
{
	my ($partition) = @_;
	my ($month) = $partition =~ /_(\d\d)$/ or die "not a month partition: $partition";
	my $upper = $month == 12 ? '2025-01-01' : sprintf('2024-%02d-01', $month + 1);
	return (sprintf('2024-%02d-01', $month), $upper);
}

# A DO block that makes the 12 partitions of $parent, one a month of 2024, named $schema.$prefix
# followed by the month's two digits; each owned by $owner if given.
sub month_partitions_sql
{
	my ($parent, $schema, $prefix, $owner) = @_;
	my $owned =
	  defined $owner ? "EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', '$schema', p, '$owner');" : '';
	return qq{
DO \$\$
DECLARE
    p text;
BEGIN
    FOR m IN 1..12 LOOP
        p := '$prefix' || lpad(m::text, 2, '0');
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF $parent FOR VALUES FROM (%L) TO (%L)',
                       '$schema', p, make_date(2024, m, 1),
                       (make_date(2024, m, 1) + interval '1 month')::date);
        $owned
    END LOOP;
END
\$\$;};
}

# What events holds once a job recomputed every partition from raw with amount $amount (an SQL
# expression of raw's columns): status the default, amount_x2 generated from the new amount.
sub events_recomputed
{
	my ($amount) = @_;
	return "SELECT id, day, $amount, 'fresh'::text, ($amount) * 2 FROM raw";
}

# public.events: RANGE (day), 12 monthly partitions in schema parts, PK (id, day), a secondary
# index on the parent, a partition-local partial index, a column with a DEFAULT, a generated
# column, owners other than the superuser that runs the jobs, table and column grants on single
# partitions, a storage option, a table comment and a statistics target. public.raw holds $rows
# rows over 2024; events starts as raw with status 'old'.
sub create_events
{
	my ($node, $rows) = @_;
	$rows //= 50000;
	$node->safe_psql(
		'postgres', qq{
CREATE ROLE app_owner NOLOGIN;
CREATE ROLE other_owner NOLOGIN;
CREATE ROLE reader NOLOGIN;
CREATE SCHEMA parts;
CREATE TABLE raw (id bigint NOT NULL, day date NOT NULL, amount int NOT NULL);
INSERT INTO raw SELECT g, date '2024-01-01' + (g * 7919) % 366, (g * 31) % 1000
  FROM generate_series(1, $rows) g;
CREATE TABLE events (
    id        bigint NOT NULL,
    day       date   NOT NULL,
    amount    int    NOT NULL,
    status    text   NOT NULL DEFAULT 'fresh',
    amount_x2 int    GENERATED ALWAYS AS (amount * 2) STORED,
    PRIMARY KEY (id, day)
) PARTITION BY RANGE (day);
CREATE INDEX events_amount_idx ON events (amount);
ALTER TABLE events OWNER TO app_owner;
@{[ month_partitions_sql('events', 'parts', 'events_2024_', 'app_owner') ]}
ALTER TABLE parts.events_2024_07 OWNER TO other_owner;
CREATE INDEX events_2024_03_status_idx ON parts.events_2024_03 (status) WHERE status <> 'fresh';
ALTER TABLE parts.events_2024_06 SET (fillfactor = 70);
GRANT USAGE ON SCHEMA parts TO reader;
GRANT SELECT ON events TO reader;
GRANT SELECT ON parts.events_2024_03 TO reader;
GRANT SELECT, UPDATE ON parts.events_2024_04 TO reader WITH GRANT OPTION;
GRANT SELECT (id, day) ON parts.events_2024_08 TO reader;
COMMENT ON TABLE parts.events_2024_02 IS 'February: audited';
ALTER TABLE parts.events_2024_09 ALTER COLUMN amount SET STATISTICS 500;
INSERT INTO events (id, day, amount, status) SELECT id, day, amount, 'old' FROM raw;
ANALYZE raw, events;
});
	return;
}

# 'A|B': rows of query $a missing from $b, and of $b missing from $a, as multisets over all
# columns. '0|0' means equal; an SQL error (say, a missing table) is returned as its message.
sub table_equals
{
	my ($node, $a, $b) = @_;
	my ($ret, $stdout, $stderr) = $node->psql(
		'postgres', qq{
SELECT (SELECT count(*) FROM (SELECT * FROM ($a) x EXCEPT ALL SELECT * FROM ($b) y) d1) || '|' ||
       (SELECT count(*) FROM (SELECT * FROM ($b) y EXCEPT ALL SELECT * FROM ($a) x) d2)});
	return $ret == 0 ? $stdout : $stderr;    # an error fails the caller's comparison, readably
}

# What backfill_tasks should say of a job that has finished: per partition, 'done', the rows the
# partition held before ($before: a table or query with a column day), the rows the source gives
# ($after: idem), a positive swap_lock_ms and the attempts given (default 1 each).
sub tasks_expected
{
	my ($node, $before, $after, %attempts) = @_;
	my $counts = $node->safe_psql(
		'postgres', qq{
WITH p (partition) AS (SELECT 'parts.events_2024_' || lpad(m::text, 2, '0') FROM generate_series(1, 12) m),
     b AS (SELECT 'parts.events_' || to_char(day, 'YYYY_MM') AS partition, count(*) AS n
           FROM ($before) x GROUP BY 1),
     a AS (SELECT 'parts.events_' || to_char(day, 'YYYY_MM') AS partition, count(*) AS n
           FROM ($after) x GROUP BY 1)
SELECT p.partition, coalesce(b.n, 0), coalesce(a.n, 0)
FROM p LEFT JOIN b USING (partition) LEFT JOIN a USING (partition) ORDER BY 1});
	my @lines;
	for my $row (split /\n/, $counts)
	{
		my ($partition, $n_before, $n_after) = split /\|/, $row;
		my $tries = $attempts{$partition} // 1;
		push @lines, "$partition|done|$tries|$n_before|$n_after|swap_lock_ms>0";
	}
	return join("\n", @lines);
}

sub tasks_actual
{
	my ($node, $job) = @_;
	return $node->safe_psql(
		'postgres', qq{
SELECT partition, state, attempts, rows_before, rows_after,
       CASE WHEN swap_lock_ms > 0 THEN 'swap_lock_ms>0' ELSE 'swap_lock_ms=' || coalesce(swap_lock_ms::text, 'NULL') END
FROM backfill_tasks($job) ORDER BY partition});
}

# Everything that belongs to the partitions of events, one line per item: name, schema, kind,
# persistence, bound, owner, grants, storage options; columns with their defaults and generation;
# indexes with definitions and the parent index each is attached to; constraints; user triggers.
sub catalog_snapshot
{
	my ($node) = @_;
	return $node->safe_psql(
		'postgres', q{
WITH p AS (
    SELECT c.oid, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'public.events'::regclass)
SELECT line FROM (
    SELECT concat_ws(' | ', 'relation', p.relname, n.nspname, c.relkind, c.relpersistence,
                     pg_get_expr(c.relpartbound, c.oid), 'owner ' || c.relowner::regrole::text,
                     'acl ' || coalesce(c.relacl::text, '-'),
                     'options ' || coalesce(c.reloptions::text, '-'),
                     'comment ' || coalesce(obj_description(c.oid, 'pg_class'), '-')) AS line
    FROM p JOIN pg_class c ON c.oid = p.oid JOIN pg_namespace n ON n.oid = c.relnamespace
    UNION ALL
    SELECT concat_ws(' | ', 'column', p.relname, a.attnum, a.attname,
                     format_type(a.atttypid, a.atttypmod), 'notnull ' || a.attnotnull,
                     'default ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-'),
                     'generated ' || a.attgenerated::text,
                     'acl ' || coalesce(a.attacl::text, '-'),
                     'statistics ' || a.attstattarget)
    FROM p JOIN pg_attribute a ON a.attrelid = p.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    UNION ALL
    SELECT concat_ws(' | ', 'index', p.relname, ic.relname, pg_get_indexdef(i.indexrelid),
                     'primary ' || i.indisprimary, 'valid ' || i.indisvalid,
                     'attached to ' || coalesce(pi.inhparent::regclass::text, '-'))
    FROM p JOIN pg_index i ON i.indrelid = p.oid JOIN pg_class ic ON ic.oid = i.indexrelid
    LEFT JOIN pg_inherits pi ON pi.inhrelid = i.indexrelid
    UNION ALL
    SELECT concat_ws(' | ', 'constraint', p.relname, con.conname, con.contype,
                     pg_get_constraintdef(con.oid), 'validated ' || con.convalidated,
                     'inherited ' || (con.conparentid <> 0))
    FROM p JOIN pg_constraint con ON con.conrelid = p.oid
    UNION ALL
    SELECT concat_ws(' | ', 'trigger', p.relname, t.tgname)
    FROM p JOIN pg_trigger t ON t.tgrelid = p.oid AND NOT t.tgisinternal
) s ORDER BY line COLLATE "C"});
}

# Relations a finished job must not leave behind: shadows, and (for keep_old => false) kept old
# partitions <partition>_bf<job>; also the indexes a task names bf_<job>_<task>_new_/_old_.
sub leftover_relations
{
	my ($node, $job) = @_;
	return $node->safe_psql(
		'postgres', qq{
SELECT string_agg(n.nspname || '.' || c.relname || ' (' || c.relkind::text || ')', ', ' ORDER BY c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname LIKE 'bf\\_shadow\\_%' OR c.relname LIKE '%\\_bf$job'
   OR c.relname LIKE 'bf\\_${job}\\_%'});
}

# backfill_wait($job) until the job ends, in slices of a second, for at most $limit seconds;
# returns its last state. Returns early, with 'paused', when no process runs the job (it would
# never end), so that a job stuck by a bug fails its test at once instead of at the time limit.
sub wait_job
{
	my ($node, $job, $limit) = @_;
	my $deadline = time() + ($limit // 60);
	for (;;)
	{
		my $state = $node->safe_psql('postgres', "SELECT backfill_wait($job, '1s')");
		next unless $state =~ /^(done|failed|cancelled|paused)$/ || time() >= $deadline;
		diag("job $job ended $state; its control rows:\n"
			  . $node->safe_psql(
				'postgres', qq{
SELECT 'job: ' || row_to_json(j)::text FROM backfill.jobs j WHERE id = $job
UNION ALL
SELECT * FROM (SELECT 'task: ' || row_to_json(t)::text FROM backfill.tasks t
               WHERE job = $job ORDER BY task_no) t}))
		  if $state ne 'done';
		return $state;
	}
}

# The job's tasks as "state:attempts" in partition order, e.g. 'done:1 running:1 pending:0'.
sub task_states
{
	my ($node, $job) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(state || ':' || attempts, ' ' ORDER BY partition) FROM backfill_tasks($job)"
	);
}

# The pid of the one backfill worker, once there is exactly one (dies when there never is).
sub worker_pid
{
	my ($node) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'backfill worker'", '1')
	  or die 'not exactly one backfill worker';
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'backfill worker'");
}

# kill -9 of a server process; returns, once the server is back from crash recovery, the log's
# size from before the kill. $name, if given, starts the names of the two checks.
sub kill9_and_wait_for_recovery
{
	my ($node, $pid, $name) = @_;
	my $prefix = defined $name ? "$name: " : '';
	my $log_offset = -s $node->logfile;
	ok(kill('KILL', $pid), "${prefix}kill -9 of process $pid");
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
	ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
		"${prefix}the server is back after crash recovery");
	return $log_offset;
}

# The job's state as backfill_status shows it: 'paused' for a job stored as running that no
# process runs.
sub job_state
{
	my ($node, $job) = @_;
	return $node->safe_psql('postgres', "SELECT state FROM backfill_status($job)");
}

# The job's state as stored in backfill.jobs: still 'running' when no process runs it (after a
# crash, until a runner takes it up again).
sub stored_job_state
{
	my ($node, $job) = @_;
	return $node->safe_psql('postgres', "SELECT state FROM backfill.jobs WHERE id = $job");
}

# Polls until the job has ended (whoever runs it); returns its state. Unlike wait_job, it does
# not give up on a job that no process runs for a moment (the launcher is about to start one).
sub wait_until_ended
{
	my ($node, $job) = @_;
	$node->poll_query_until('postgres',
		"SELECT state IN ('done', 'failed', 'cancelled') FROM backfill.jobs WHERE id = $job")
	  or diag("job $job did not end: "
		  . $node->safe_psql('postgres', "SELECT row_to_json(s) FROM backfill_status($job) s"));
	return wait_job($node, $job, 60);
}

# The pids of the backfill workers now, in order.
sub worker_pids
{
	my ($node) = @_;
	return split /\n/,
	  $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'backfill worker' ORDER BY pid");
}

# The function gate(day), true for every day, which in March waits for the advisory lock $key
# (shared, so that every row passes once it is free), and the view gated: raw with amount * 5
# through gate. A job whose source is gated stops in its third task (March) while the gate is shut.
sub create_gate
{
	my ($node, $key) = @_;
	$node->safe_psql(
		'postgres', qq{
CREATE FUNCTION gate(d date) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS \$\$
BEGIN
    IF d >= '2024-03-01' AND d < '2024-04-01' THEN
        PERFORM pg_advisory_xact_lock_shared($key);
    END IF;
    RETURN true;
END
\$\$;
CREATE VIEW gated AS SELECT amount * 5 AS amount, day, id FROM raw WHERE gate(day);
});
	return;
}

# Holds the gate (advisory lock $key) shut in a session of its own; returns that session.
sub close_gate
{
	my ($node, $key) = @_;
	my $session = $node->background_psql('postgres');
	$session->query_safe("SELECT pg_advisory_lock($key)");
	return $session;
}

# Polls until a backfill worker (process $pid, if given) waits for the advisory lock $key.
sub wait_at_gate
{
	my ($node, $key, $pid) = @_;
	my $which = defined $pid ? "AND l.pid = $pid" : '';
	return $node->poll_query_until(
		'postgres', qq{
SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE a.backend_type = 'backfill worker' AND l.locktype = 'advisory'
  AND l.objid = $key AND NOT l.granted $which}, '1');
}

# "phase shadow_name" of task $task_no of the job.
sub task_phase
{
	my ($node, $job, $task_no) = @_;
	return $node->safe_psql('postgres',
		"SELECT phase || ' ' || shadow_name FROM backfill.tasks WHERE job = $job AND task_no = $task_no");
}

# Columns $columns (an SQL list) of backfill_status($job), '|'-separated as psql prints them.
sub job_status
{
	my ($node, $job, $columns) = @_;
	return $node->safe_psql('postgres', "SELECT $columns FROM backfill_status($job)");
}

# Polls backfill_status until the job's state is $state.
sub wait_for_state
{
	my ($node, $job, $state) = @_;
	return $node->poll_query_until('postgres',
		"SELECT state FROM backfill_status($job)", $state);
}

# Files in base/<dboid>/ of database postgres that belong to no relation: each numeric file
# name (less its _fsm/_vm/_init fork suffix and .N segment number) compared with
# pg_relation_filenode() of every relation of the database in its default tablespace. A CHECKPOINT
# first: the first segment of a dropped relation stays, empty, until the next checkpoint.
# Returns the sorted list of orphan file names with their sizes, e.g. '16421 (0 bytes)'.
sub orphan_files
{
	my ($node) = @_;
	$node->safe_psql('postgres', 'CHECKPOINT');
	my $dboid = $node->safe_psql('postgres',
		'SELECT oid FROM pg_database WHERE datname = current_database()');
	my %known = map { $_ => 1 } split /\n/,
	  $node->safe_psql(
		'postgres', q{
SELECT pg_relation_filenode(oid) FROM pg_class
WHERE pg_relation_filenode(oid) IS NOT NULL AND reltablespace IN (0, (
      SELECT dattablespace FROM pg_database WHERE datname = current_database()))});
	my $dir = $node->data_dir . "/base/$dboid";
	opendir(my $dh, $dir) or die "cannot open $dir: $!";
	my @orphans;
	for my $file (sort readdir $dh)
	{
		next unless $file =~ /^(\d+)(?:_(?:fsm|vm|init))?(?:\.\d+)?$/;
		next if $known{$1};
		push @orphans, "$file (" . ((-s "$dir/$file") || 0) . " bytes)";
	}
	closedir $dh;
	return @orphans;
}

1;
