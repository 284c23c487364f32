# A job that is interrupted part-way resumes where it stopped: after a kill -9 of its worker
# (crash recovery of the whole server), after a pg_terminate_backend of its worker, and as slices
# of CALL backfill_run(job, max_tasks => 3). Every partition is replaced exactly once and the
# data ends as the source's. Also: the data files of the database after a kill -9, compared with
# the relations that own them.
#
# To interrupt a task at a known step rather than at a random moment, the sources go through a
# "gate": a function that, for rows of March 2024 only, takes a shared advisory lock that the test
# holds exclusively. The worker then stops inside task 3 (events_2024_03), at the step that reads
# the gate, until the test kills it.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('kill_resume');
create_events($node, 24000);
my @partitions = month_partitions();
my $gate_key = 4242;

$node->safe_psql(
	'postgres', qq{
CREATE FUNCTION gate(d date) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS \$\$
BEGIN
    IF d >= '2024-03-01' AND d < '2024-04-01' THEN
        PERFORM pg_advisory_xact_lock_shared($gate_key);
    END IF;
    RETURN true;
END
\$\$;
CREATE VIEW gated AS SELECT amount * 5 AS amount, day, id FROM raw WHERE gate(day);
});

my $catalog_before = catalog_snapshot($node);

# Holds the gate shut in a session of its own; returns that session.
sub close_gate
{
	my $session = $node->background_psql('postgres');
	$session->query_safe("SELECT pg_advisory_lock($gate_key)");
	return $session;
}

# Polls until the worker of a job waits at the gate.
sub wait_at_gate
{
	return $node->poll_query_until(
		'postgres', qq{
SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE a.backend_type = 'backfill worker' AND l.locktype = 'advisory'
  AND l.objid = $gate_key AND NOT l.granted}, '1');
}

sub worker_pid
{
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'backfill worker'");
}

sub task_states
{
	my ($job) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(state || ':' || attempts, ' ' ORDER BY partition) FROM backfill_tasks($job)"
	);
}

# kill -9 of a server process; returns once the server is back from crash recovery.
sub kill9_and_wait_for_recovery
{
	my ($pid) = @_;
	my $log_offset = -s $node->logfile;
	ok(kill('KILL', $pid), "kill -9 of process $pid");
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
	ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
		'the server is back after crash recovery');
}

my $expected_gated = q{SELECT id, day, amount * 5, 'fresh'::text, amount * 10 FROM raw};

is(join(', ', orphan_files($node)), '',
	'before any job, every data file of the database belongs to a relation');

# =============================================================================================
# 1. kill -9 of the worker inside task 3, a job with keep_old => true and pause => '1s'.
$node->safe_psql('postgres', 'CREATE TABLE snap_a AS TABLE events');
my $gate = close_gate();
my $job = $node->safe_psql('postgres',
	q{SELECT backfill_start('events', '2024-01-01', '2025-01-01', 'gated', pause => '1s', keep_old => true)});
ok(wait_at_gate(), "job $job: the worker waits at the gate, inside task 3");
is(task_states($job), 'done:1 done:1 running:1' . ' pending:0' x 9,
	'tasks 1 and 2 are done, task 3 is running');
is( $node->safe_psql(
		'postgres',
		"SELECT phase || ' ' || shadow_name FROM backfill.tasks WHERE job = $job AND task_no = 3"),
	"shadow bf_shadow_${job}_3",
	'task 3 is loading its shadow (created and committed) when the worker is killed');

my $pid = worker_pid();
like($pid, qr/^\d+$/, "the worker of job $job is process $pid");
kill9_and_wait_for_recovery($pid);
$gate->quit;

is($node->safe_psql('postgres', "SELECT state FROM backfill.jobs WHERE id = $job"),
	'running', 'after the crash the job row still says running');
is( $node->safe_psql(
		'postgres', "SELECT state || ' / ' || waiting_on FROM backfill_status($job)"),
	"paused / nothing: no process runs it; SELECT backfill_resume($job)",
	'backfill_status shows the job paused: no process runs it');
is( table_equals(
		$node,
		"SELECT * FROM events WHERE day >= '2024-03-01'",
		"SELECT * FROM snap_a WHERE day >= '2024-03-01'"),
	'0|0',
	'the partition being built when the worker was killed, and those after it, are unchanged');
is(catalog_snapshot($node), $catalog_before,
	'after the crash every partition is in place with all its properties');

my @orphans_after_crash = orphan_files($node);
is(join(', ', @orphans_after_crash), '',
	'after the crash (before resume), every data file belongs to a relation');

$node->safe_psql('postgres', "SELECT backfill_resume($job)");
is($node->safe_psql('postgres', "SELECT backfill_wait($job, '100s')"),
	'done', "after backfill_resume($job), backfill_wait returns done");
is( tasks_actual($node, $job),
	tasks_expected($node, 'TABLE snap_a', 'TABLE raw', 'parts.events_2024_03' => 2),
	'every task done once: attempts 1, except the interrupted task 3 (attempts 2)');
is(table_equals($node, 'TABLE events', $expected_gated), '0|0', 'events equals the source');
is(catalog_snapshot($node), $catalog_before, 'every partition property carried over');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_class WHERE relname LIKE 'bf\_shadow\_%'}),
	'0',
	'no shadow table is left after the resume');

# keep_old => true: each replaced partition is kept under one name, <partition>_bf<job>. One
# such table per partition, each with the rows from before the job, proves that every
# partition was replaced exactly once (a second replacement would have detached a table
# holding the new rows, or failed on the name).
is( $node->safe_psql(
		'postgres', qq{
SELECT string_agg(n.nspname || '.' || c.relname, ', ' ORDER BY c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relname LIKE '%\\_bf%' AND NOT c.relispartition}),
	join(', ', map { "parts.${_}_bf$job" } @partitions),
	'exactly one kept old table per partition');
for my $p (@partitions)
{
	my ($lower, $upper) = partition_bounds($p);
	is( table_equals(
			$node, "TABLE parts.${p}_bf$job",
			"SELECT * FROM snap_a WHERE day >= '$lower' AND day < '$upper'"),
		'0|0',
		"parts.${p}_bf$job holds exactly the rows of $p from before the job");
}

# The orphan check after the kill -9 and the resume.
my @orphans_after_resume = orphan_files($node);
is(join(', ', @orphans_after_resume), '',
	'after the kill -9 and the resume, every data file belongs to a relation');

# Put events back as raw for the next cases (and drop the kept tables).
$node->safe_psql('postgres',
	join('', map { "DROP TABLE parts.${_}_bf$job;" } @partitions));

# =============================================================================================
# 2. pg_terminate_backend of the worker inside task 3: the worker stops at a safe point.
$node->safe_psql('postgres', 'CREATE TABLE snap_b AS TABLE events');
my $source_b = q{SELECT id, day, amount + 11 AS amount FROM raw WHERE day >= $1 AND day < $2 AND gate(day)};
$gate = close_gate();
$job = $node->safe_psql('postgres',
	qq{SELECT backfill_start('events', '2024-01-01', '2025-01-01', \$src\$$source_b\$src\$)});
ok(wait_at_gate(), "job $job: the worker waits at the gate, inside task 3");
$pid = worker_pid();
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)"),
	't', "pg_terminate_backend($pid)");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'backfill worker'", '0'),
	'the worker exits');
$gate->quit;
is( $node->safe_psql(
		'postgres', "SELECT state, last_error LIKE 'interrupted%' FROM backfill_status($job)"),
	'paused|t',
	"the job is paused, last_error says 'interrupted'");
is($node->safe_psql('postgres', "SELECT state FROM backfill.jobs WHERE id = $job"),
	'paused', 'the job row itself says paused');
is(task_states($job), 'done:1 done:1 pending:1' . ' pending:0' x 9,
	'tasks 1 and 2 are done, task 3 went back to pending');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_class WHERE relname LIKE 'bf\_shadow\_%'}),
	'0',
	'the stopped worker dropped the shadow of task 3 itself');
is( table_equals(
		$node,
		"SELECT * FROM events WHERE day >= '2024-03-01'",
		"SELECT * FROM snap_b WHERE day >= '2024-03-01'"),
	'0|0',
	'partitions from task 3 on are unchanged');

$node->safe_psql('postgres', "SELECT backfill_resume($job)");
is($node->safe_psql('postgres', "SELECT backfill_wait($job, '100s')"),
	'done', 'after the resume the job is done');
is( tasks_actual($node, $job),
	tasks_expected($node, 'TABLE snap_b', 'TABLE raw', 'parts.events_2024_03' => 2),
	'every task done once: attempts 1, except the interrupted task 3 (attempts 2)');
is( table_equals(
		$node, 'TABLE events',
		q{SELECT id, day, amount + 11, 'fresh'::text, (amount + 11) * 2 FROM raw}),
	'0|0',
	'events equals the source');
is(leftover_relations($node, $job), '', 'no shadow or old partition left');
is(catalog_snapshot($node), $catalog_before, 'every partition property carried over');

# =============================================================================================
# 3. background => false: CALL backfill_run(job, max_tasks => 3) advances three tasks a call.
$node->safe_psql('postgres', 'CREATE TABLE snap_c AS TABLE events');
my $source_c =
  q{SELECT id, day, amount, 'slice' AS status FROM raw WHERE day >= $1 AND day < $2};
$job = $node->safe_psql('postgres',
	qq{SELECT backfill_start('events', '2024-01-01', '2025-01-01', \$src\$$source_c\$src\$, background => false)});
is( $node->safe_psql(
		'postgres',
		"SELECT state, tasks_done FROM backfill_status($job)"),
	'pending|0',
	'a background => false job waits, pending');
is($node->safe_psql('postgres', "SELECT backfill_wait($job, '300ms')"),
	'pending', 'backfill_wait times out on it: nobody runs it');
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'backfill worker'"),
	'0',
	'no worker was started for it');

for my $call (1 .. 4)
{
	my ($ret, $stdout, $stderr) =
	  $node->psql('postgres', "CALL backfill_run($job, max_tasks => 3)");
	my $state = $call < 4 ? 'pending' : 'done';
	is($ret, 0, "CALL $call of backfill_run succeeds");
	like($stderr, qr/NOTICE:  backfill job $job is $state/,
		"CALL $call says the job is $state");
	is( $node->safe_psql(
			'postgres', "SELECT state, tasks_done FROM backfill_status($job)"),
		"$state|" . 3 * $call,
		"after CALL $call: $state, " . 3 * $call . ' tasks done');
	is( $node->safe_psql(
			'postgres',
			q{SELECT string_agg(DISTINCT to_char(day, 'MM'), ',') FROM events WHERE status = 'slice'}),
		join(',', map { sprintf('%02d', $_) } 1 .. 3 * $call),
		"after CALL $call, exactly the first " . 3 * $call . ' partitions hold the new rows');
}
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'backfill worker'"),
	'0',
	'still no worker: the calls ran the job');
is(tasks_actual($node, $job), tasks_expected($node, 'TABLE snap_c', 'TABLE raw'),
	'every task done once, rows_before/rows_after right, swap_lock_ms > 0');
is( table_equals(
		$node, 'TABLE events',
		q{SELECT id, day, amount, 'slice'::text, amount * 2 FROM raw}),
	'0|0',
	'events equals the source');
is(leftover_relations($node, $job), '', 'no shadow or old partition left');

# =============================================================================================
# 4. kill -9 of the worker while task 3 builds the indexes of its shadow: the gate is in an
# index expression, evaluated by CREATE INDEX on the shadow. The indexes built so far in that
# (never committed) transaction have data files; the catalog rows that named them die with the
# transaction.
$node->safe_psql('postgres', 'CREATE INDEX events_gated_idx ON events ((gate(day)))');
$catalog_before = catalog_snapshot($node);
is(join(', ', orphan_files($node)), '', 'before the job, no orphan data file');
$node->safe_psql('postgres', 'CREATE TABLE snap_d AS TABLE events');
$gate = close_gate();
$job = $node->safe_psql('postgres',
	q{SELECT backfill_start('events', '2024-01-01', '2025-01-01', 'SELECT id, day, amount - 1 AS amount FROM raw WHERE day >= $1 AND day < $2')});
ok(wait_at_gate(), "job $job: the worker waits at the gate, building an index of task 3");
is( $node->safe_psql(
		'postgres', "SELECT phase FROM backfill.tasks WHERE job = $job AND task_no = 3"),
	'loaded', 'task 3 has loaded its shadow and is building its indexes');
# The relations the worker created in its open transaction: locked by it, not yet visible.
my $uncommitted = $node->safe_psql(
	'postgres', q{
SELECT string_agg(l.relation::text, ', ' ORDER BY l.relation)
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE a.backend_type = 'backfill worker' AND l.locktype = 'relation'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = l.relation)});
note "relations created by the worker's open transaction: $uncommitted";
$pid = worker_pid();
kill9_and_wait_for_recovery($pid);
$gate->quit;

is($node->safe_psql('postgres', "SELECT state FROM backfill_status($job)"),
	'paused', 'after the crash the job shows paused');
$node->safe_psql('postgres', "SELECT backfill_resume($job)");
is($node->safe_psql('postgres', "SELECT backfill_wait($job, '100s')"),
	'done', 'after the resume the job is done');
is( tasks_actual($node, $job),
	tasks_expected($node, 'TABLE snap_d', 'TABLE raw', 'parts.events_2024_03' => 2),
	'every task done once: attempts 1, except the interrupted task 3 (attempts 2)');
is( table_equals(
		$node, 'TABLE events',
		q{SELECT id, day, amount - 1, 'fresh'::text, (amount - 1) * 2 FROM raw}),
	'0|0',
	'events equals the source');
is(leftover_relations($node, $job), '', 'no shadow or old partition left');
is(catalog_snapshot($node), $catalog_before, 'every partition property carried over');

my @orphans = orphan_files($node);
note 'orphan data files after a kill -9 while indexing and the resume: '
  . (join(', ', @orphans) || 'none');
TODO:
{
	local $TODO =
	  'files of relations created by a transaction that a crash aborts are never removed: '
	  . 'the indexes task 3 had built on its shadow (in the uncommitted build_indexes step) '
	  . 'have data files that no catalog row names, and the resume drops only the committed shadow';
	is(join(', ', @orphans), '',
		'after a kill -9 while indexing and the resume, every data file belongs to a relation');
}

$node->stop;
done_testing();
