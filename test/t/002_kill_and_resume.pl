# A job that is interrupted part-way resumes where it stopped: after a kill -9 of its worker
# (crash recovery of the whole server), after a pg_terminate_backend of its worker, and as slices
# of CALL backfill_run(job, max_tasks => 3). Every partition is replaced exactly once and the
# data ends as the source's. After each kill -9, the data files of the database are compared
# with the relations that own them (cases 1, 4 and 5).
#
# To interrupt a task at a known step rather than at a random moment, the worker is held inside
# task 3 (events_2024_03) until the test has looked and killed it: by a "gate", a function that,
# for rows of March 2024 only, takes a shared advisory lock that the test holds exclusively (in
# the source, cases 1 and 2, or in an index expression, case 4), or by a lock on the partition
# (case 5).
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

create_gate($node, $gate_key);

my $catalog_before = catalog_snapshot($node);

# When a case failed and left its job live, cancels it so that the next case can start a job on
# the same table (one live job per target). A no-op when the job finished.
sub cancel_if_live
{
	my ($job) = @_;
	my $state = job_state($node, $job);
	return if $state =~ /^(done|failed|cancelled)$/;
	diag("job $job is still $state: cancelling it so that the next case can run");
	$node->safe_psql('postgres', "SELECT backfill_cancel($job)");
	$node->safe_psql('postgres', "SELECT backfill_wait($job, '30s')");
}

# Resumes a job whose task 3 was interrupted; it must end done ($done_name) with every task
# done once and task 3 twice, against $snapshot (the table before the job).
sub resume_after_task_3
{
	my ($job, $snapshot, $done_name) = @_;
	$node->safe_psql('postgres', "SELECT backfill_resume($job)");
	is(wait_job($node, $job), 'done', $done_name);
	is( tasks_actual($node, $job),
		tasks_expected($node, "TABLE $snapshot", 'TABLE raw', 'parts.events_2024_03' => 2),
		'every task done once: attempts 1, except the interrupted task 3 (attempts 2)');
	return;
}

my $expected_gated = q{SELECT id, day, amount * 5, 'fresh'::text, amount * 10 FROM raw};

is(join(', ', orphan_files($node)), '',
	'before any job, every data file of the database belongs to a relation');

# =============================================================================================
# 1. kill -9 of the worker inside task 3, a job with keep_old => true and pause => '1s'.
$node->safe_psql('postgres', 'CREATE TABLE snap_a AS TABLE events');
my $gate = close_gate($node, $gate_key);
my $job = $node->safe_psql('postgres',
	q{SELECT backfill_start('events', '2024-01-01', '2025-01-01', 'gated', pause => '1s', keep_old => true)});
ok(wait_at_gate($node, $gate_key), "job $job: the worker waits at the gate, inside task 3");
is(task_states($node, $job), 'done:1 done:1 running:1' . ' pending:0' x 9,
	'tasks 1 and 2 are done, task 3 is running');
is(task_phase($node, $job, 3),
	"shadow bf_shadow_${job}_3",
	'task 3 is loading its shadow (created and committed) when the worker is killed');

my $pid = worker_pid($node);
like($pid, qr/^\d+$/, "the worker of job $job is process $pid");
kill9_and_wait_for_recovery($node, $pid);
$gate->quit;

is(stored_job_state($node, $job),
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
# Until the job runs again, the partition being built may keep the triggers that note writes
# while its shadow is built (the next run drops them); everything else is as before.
my $catalog_after_crash = catalog_snapshot($node);
$catalog_after_crash =~ s/^trigger \| events_2024_03 \| bf_\w+_${job}_3\n?//mg;
$catalog_after_crash =~ s/\n\z//;
is($catalog_after_crash, $catalog_before,
	'after the crash every partition is in place with all its properties');

# The load empties the shadow (TRUNCATE, so that it can write its rows frozen): the kill leaves
# the files of that uncommitted TRUNCATE, all numbered from the task's files_from on; the resume
# removes them (checked below).
my $files_from = $node->safe_psql('postgres',
	"SELECT files_from FROM backfill.tasks WHERE job = $job AND task_no = 3");
my @orphans_after_crash = orphan_files($node);
ok(scalar(@orphans_after_crash) > 0, 'the killed load left the files of its TRUNCATE');
is(join(', ', grep { /^(\d+)/; $1 < $files_from } @orphans_after_crash), '',
	'after the crash (before resume), the only data files without a relation are the load\'s');

resume_after_task_3($job, 'snap_a', "after backfill_resume($job), backfill_wait returns done");
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

cancel_if_live($job);
$node->safe_psql('postgres',
	join('', map { "DROP TABLE IF EXISTS parts.${_}_bf$job;" } @partitions));

# =============================================================================================
# 2. pg_terminate_backend of the worker inside task 3: the worker stops at a safe point.
$node->safe_psql('postgres', 'CREATE TABLE snap_b AS TABLE events');
my $source_b = q{SELECT id, day, amount + 11 AS amount FROM raw WHERE day >= $1 AND day < $2 AND gate(day)};
$gate = close_gate($node, $gate_key);
$job = $node->safe_psql('postgres',
	qq{SELECT backfill_start('events', '2024-01-01', '2025-01-01', \$src\$$source_b\$src\$)});
ok(wait_at_gate($node, $gate_key), "job $job: the worker waits at the gate, inside task 3");
$pid = worker_pid($node);
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
is(stored_job_state($node, $job),
	'paused', 'the job row itself says paused');
is(task_states($node, $job), 'done:1 done:1 pending:1' . ' pending:0' x 9,
	'tasks 1 and 2 are done, task 3 went back to pending');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_class WHERE relname LIKE 'bf\_shadow\_%'}),
	'0',
	'the stopped worker dropped the shadow of task 3 itself');
is(catalog_snapshot($node), $catalog_before,
	'and its write-noting triggers: every partition is as it was, with all its properties');
is( table_equals(
		$node,
		"SELECT * FROM events WHERE day >= '2024-03-01'",
		"SELECT * FROM snap_b WHERE day >= '2024-03-01'"),
	'0|0',
	'partitions from task 3 on are unchanged');

resume_after_task_3($job, 'snap_b', 'after the resume the job is done');
is(table_equals($node, 'TABLE events', events_recomputed('amount + 11')),
	'0|0', 'events equals the source');
is(leftover_relations($node, $job), '', 'no shadow or old partition left');
is(catalog_snapshot($node), $catalog_before, 'every partition property carried over');

cancel_if_live($job);

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
is(catalog_snapshot($node), $catalog_before, 'every partition property carried over');

cancel_if_live($job);

# =============================================================================================
# 4 and 5. kill -9 of the worker inside a step that creates relations, then the orphan check.
#
# kill_inside_step(%case): $case{hold}->() starts holding the worker back (it returns the
# sessions that do); a job is started; $case{held}->($job) waits until the worker is held
# inside task 3 at the step under test (and may hold it further). Then the test notes the
# relations that the worker's open transaction has created (the worker holds locks on them; no
# other session can see their catalog rows), kills the worker with kill -9, resumes the job,
# checks it as in case 1, and compares the data files with the catalog: files that belong to no
# relation and were not there before the case: the files of the relations the killed step
# created are removed by the next run (stray_files.cpp).
sub kill_inside_step
{
	my (%case) = @_;
	$catalog_before = catalog_snapshot($node);
	my %orphans_before = map { $_ => 1 } orphan_files($node);    # left by an earlier case
	$node->safe_psql('postgres', 'DROP TABLE IF EXISTS snap; CREATE TABLE snap AS TABLE events');
	my @sessions = $case{hold}->();
	my $job = $node->safe_psql('postgres',
		qq{SELECT backfill_start('events', '2024-01-01', '2025-01-01', \$src\$$case{source}\$src\$$case{options})});
	ok($case{held}->($job),
		"$case{name}: the worker of job $job is held inside task 3, $case{step}");
	is( $node->safe_psql(
			'postgres',
			"SELECT state || ' ' || coalesce(phase, '-') || ' ' || coalesce(shadow_name, '-') "
			  . "FROM backfill.tasks WHERE job = $job AND task_no = 3"),
		$case{task_row} =~ s/%JOB%/$job/gr,
		"$case{name}: task 3 in the control table");
	my $uncommitted = $node->safe_psql(
		'postgres', q{
SELECT string_agg(DISTINCT l.relation::text, ', ')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE a.backend_type = 'backfill worker' AND l.locktype = 'relation'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = l.relation)});
	note "$case{name}: relations created by the worker's open transaction: "
	  . ($uncommitted || 'none');
	kill9_and_wait_for_recovery($node, worker_pid($node));
	$_->quit for @sessions;

	is($node->safe_psql('postgres', "SELECT state FROM backfill_status($job)"),
		'paused', "$case{name}: after the crash the job shows paused");
	$node->safe_psql('postgres', "SELECT backfill_resume($job)");
	is(wait_job($node, $job), 'done', "$case{name}: after the resume the job is done");
	is( tasks_actual($node, $job),
		tasks_expected($node, 'TABLE snap', 'TABLE raw', 'parts.events_2024_03' => 2),
		"$case{name}: every task done once: attempts 1, except the interrupted task 3 (2)");
	is(table_equals($node, 'TABLE events', $case{expected}), '0|0',
		"$case{name}: events equals the source");
	is(leftover_relations($node, $job), '', "$case{name}: no shadow or old partition left");
	is(catalog_snapshot($node), $catalog_before,
		"$case{name}: every partition property carried over");
	cancel_if_live($job);

	my @orphans = grep { !$orphans_before{$_} } orphan_files($node);
	note "$case{name}: new orphan data files after the kill -9 and the resume: "
	  . (join(', ', @orphans) || 'none');
	my %created = map { $_ => 1 } split /, /, $uncommitted;
	is(join(', ', grep { /^(\d+)/; !$created{$1} } @orphans), '',
		"$case{name}: every orphan file (if any) belongs to a relation the killed transaction created");
	is(join(', ', @orphans), '',
		"$case{name}: after the kill -9 and the resume, every data file belongs to a relation");
	return;
}

# Whether the worker waits for a lock: $what is an SQL condition on pg_locks l.
sub worker_waits_for
{
	my ($what) = @_;
	return $node->poll_query_until(
		'postgres', qq{
SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE a.backend_type = 'backfill worker' AND NOT l.granted AND $what}, '1');
}

# A session that holds partition events_2024_03 in ROW EXCLUSIVE mode, as a writer would: the
# worker cannot put its write-noting trigger on the partition until it ends.
sub writer_on_march
{
	my $writer = $node->background_psql('postgres');
	$writer->query_safe('BEGIN; LOCK TABLE parts.events_2024_03 IN ROW EXCLUSIVE MODE');
	return $writer;
}

# 4. Held in build_indexes: the gate is in an index expression, which CREATE INDEX on the
# shadow evaluates (indexes are built in the order of their names: amount_idx is complete,
# gated_idx is being built).
$node->safe_psql('postgres', 'CREATE INDEX events_gated_idx ON events ((gate(day)))');
kill_inside_step(
	name => 'kill -9 while indexing',
	step => 'building the indexes of its shadow',
	hold => sub { close_gate($node, $gate_key) },
	held => sub {
		worker_waits_for("l.locktype = 'advisory' AND l.objid = $gate_key");
	},
	source   => q{SELECT id, day, amount - 1 AS amount FROM raw WHERE day >= $1 AND day < $2},
	options  => '',
	task_row => 'running loaded bf_shadow_%JOB%_3',
	expected => events_recomputed('amount - 1'),);
$node->safe_psql('postgres', 'DROP INDEX events_gated_idx');

# 5a. Held in create_shadow, waiting for the partition's lock (a writer holds it); with
# lock_timeout => '1h' the step waits instead of retrying.
kill_inside_step(
	name => 'kill -9 while waiting for the partition lock',
	step => 'waiting for the lock on its partition to create its shadow',
	hold => \&writer_on_march,
	held => sub {
		worker_waits_for(
			"l.locktype = 'relation' AND l.relation = 'parts.events_2024_03'::regclass");
	},
	source   => q{SELECT id, day, amount + 2 AS amount FROM raw WHERE day >= $1 AND day < $2},
	options  => q{, lock_timeout => '1h'},
	task_row => 'running - -',
	expected => events_recomputed('amount + 2'));

# 5b. Held in create_shadow after the shadow table is created, before that step commits: the
# step ends by recording the shadow's name in the task's control row, which a second session
# holds locked (FOR UPDATE) once the worker waits for the writer; then the writer ends. In real
# life this window lasts milliseconds; the locks widen it so that a kill lands in it.
my ($writer, $row_holder);
kill_inside_step(
	name => 'kill -9 after the shadow is created, before its step commits',
	step => 'recording its new, uncommitted shadow',
	hold => sub {
		$writer     = writer_on_march();
		$row_holder = $node->background_psql('postgres');
		return ($writer, $row_holder);
	},
	held => sub {
		my ($job) = @_;
		worker_waits_for(
			"l.locktype = 'relation' AND l.relation = 'parts.events_2024_03'::regclass")
		  or return 0;
		$row_holder->query_safe(
			"BEGIN; SELECT 1 FROM backfill.tasks WHERE job = $job AND task_no = 3 FOR UPDATE");
		$writer->query_safe('COMMIT');
		worker_waits_for("l.locktype IN ('transactionid', 'tuple')");
	},
	source   => q{SELECT id, day, amount + 3 AS amount FROM raw WHERE day >= $1 AND day < $2},
	options  => q{, lock_timeout => '1h'},
	task_row => 'running - -',
	expected => events_recomputed('amount + 3'),);

$node->stop;
done_testing();
