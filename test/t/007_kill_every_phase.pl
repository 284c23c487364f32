# kill -9 of the worker in the phases 002 does not cover, and a task that fails.
#
# 1. kill -9 during the swap: an event trigger on ALTER TABLE holds the swap transaction of task
#    3 open right after its ATTACH PARTITION (the worker holds ACCESS EXCLUSIVE on events, the
#    new events_2024_03 is attached, the old one detached, nothing committed), waiting for an
#    advisory lock the test holds. The crash rolls the swap back: the old partition is in place.
# 2. kill -9 between tasks: the worker sleeps its pause after task 3.
#
# Cases 1 and 2 run twice: first without shared_preload_libraries (after crash recovery the job
# shows paused and backfill_resume continues it), then with backfill preloaded (the launcher
# resumes the job by itself; in case 1 a backfill_resume is also issued right after recovery,
# racing the launcher: it may be refused or not, the job must run once either way). Each time
# the job ends done, every task is done once (attempts 1, 2 for the task whose swap was
# killed), no shadow, kept old partition, task index or write-noting trigger is left, no data
# file belongs to no relation, every partition keeps its properties, and the data equals the
# source.
#
# 3. A task failure: the source divides by zero for May. Task 5 fails with the error text, the
#    job becomes failed, tasks 1-4 stay done (not redone later), 6-12 stay pending, May onwards
#    keeps its old rows and no shadow or file is left. After the function the source calls is
#    fixed (CREATE OR REPLACE), backfill_resume finishes the job.
# 4. kill -9 after the swap of task 3 committed, before its retire step did (keep_old => true,
#    then false): held by an event trigger on DROP TRIGGER / DROP TABLE. After the resume, the
#    same checks: in particular the kept old partitions carry no write-noting trigger, and task
#    3's swap_lock_ms is recorded like every task's.
# 5. kill -9 while the shadow's data file exists but none of its catalog rows does (PostgreSQL
#    creates the file first): held there by an uncommitted type of the name the shadow's row
#    type gets. The same checks: in particular, no data file may be left behind.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('kill_phases');
create_events($node, 12000);
my $gate_key = 4343;

# The swap gate: once armed, the first ALTER TABLE after which parts.events_2024_03 is a
# partition of events but not the relation it was when armed (that is: right after the ATTACH of
# task 3's new partition) waits for advisory lock $gate_key, in the swap's transaction. The wait
# is exempt from the swap's lock_timeout. Disarming is part of the swap transaction, so a crash
# leaves the gate armed; the test holds the lock only until the crash, so the resumed swap passes.
$node->safe_psql(
	'postgres', qq{
CREATE TABLE swap_gate (armed boolean NOT NULL, old_oid oid);
INSERT INTO swap_gate VALUES (false, NULL);
CREATE FUNCTION hold_swap() RETURNS event_trigger LANGUAGE plpgsql
    SET lock_timeout = 0 SET search_path = public AS \$\$
DECLARE
    p regclass := to_regclass('parts.events_2024_03');
BEGIN
    IF (SELECT armed FROM swap_gate) AND p::oid IS DISTINCT FROM (SELECT old_oid FROM swap_gate)
       AND EXISTS (SELECT FROM pg_inherits WHERE inhrelid = p AND inhparent = 'public.events'::regclass)
    THEN
        UPDATE swap_gate SET armed = false;
        PERFORM pg_advisory_xact_lock_shared($gate_key);
    END IF;
END
\$\$;
CREATE EVENT TRIGGER hold_swap ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION hold_swap();
});

# After a kill: the job either resumes by itself (preloaded: the launcher says so in the log)
# or shows paused and is resumed by hand. Then it must finish and be exactly right.
sub recover_and_check
{
	my (%c) = @_;
	my ($name, $job) = ($c{name}, $c{job});
	if ($c{preloaded})
	{
		$node->wait_for_log(qr/backfill: resuming job $job in database \d+ after a server start/,
			$c{log_offset});
		pass("$name: the launcher resumes job $job by itself");
		$c{after_recovery}->() if $c{after_recovery};
	}
	else
	{
		is( $node->safe_psql(
				'postgres', "SELECT state || ' / ' || waiting_on FROM backfill_status($job)"),
			"paused / nothing: no process runs it; SELECT backfill_resume($job)",
			"$name: without preloading, the job shows paused after the crash");
		is($node->safe_psql('postgres',
				"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'backfill worker'"),
			'0', "$name: and no worker runs it");
		$c{after_recovery}->() if $c{after_recovery};
		$node->safe_psql('postgres', "SELECT backfill_resume($job)");
	}
	is(wait_until_ended($node, $job), 'done', "$name: the job ends done");
	is(tasks_actual($node, $job), tasks_expected($node, 'TABLE snap', 'TABLE raw', %{ $c{attempts} }),
		"$name: every task done once (" . ($c{attempts_text} // 'attempts 1 each')
		  . '), rows_before and rows_after right, swap_lock_ms > 0');
	is(table_equals($node, 'TABLE events', $c{expected}), '0|0', "$name: events equals the source");
	if ($c{keep_old})
	{
		is( $node->safe_psql(
				'postgres',
				q{SELECT count(*) FROM pg_class WHERE relname LIKE 'bf\_shadow\_%'}),
			'0', "$name: no shadow left");
	}
	else
	{
		is(leftover_relations($node, $job), '', "$name: no shadow, kept old partition or task index left");
	}
	is($node->safe_psql('postgres',
			q{SELECT coalesce(string_agg(tgrelid::regclass || ': ' || tgname, ', ' ORDER BY tgname), 'none')
			  FROM pg_trigger WHERE tgname LIKE 'bf\_%'}),
		'none', "$name: no write-noting trigger left (on a partition or a kept old table)");
	is(catalog_snapshot($node), $c{catalog_before}, "$name: every partition property carried over");
	is(join(', ', orphan_files($node)), '', "$name: every data file belongs to a relation");
	return;
}

# Starts a job with $source (a $1/$2 query) and $options; snapshots events first.
sub start_job
{
	my ($source, $options) = @_;
	$node->safe_psql('postgres', 'DROP TABLE IF EXISTS snap; CREATE TABLE snap AS TABLE events');
	return $node->safe_psql('postgres',
		"SELECT backfill_start('events', '2024-01-01', '2025-01-01', \$src\$$source\$src\$$options)");
}

is(join(', ', orphan_files($node)), '', 'before any job, every data file belongs to a relation');

# =============================================================================================
# 1. kill -9 inside the swap transaction of task 3, right after its ATTACH.
my $round = 0;

sub kill_in_swap
{
	my ($preloaded) = @_;
	$round++;
	my $name = 'swap' . ($preloaded ? ', preloaded' : ', not preloaded');
	my $catalog_before = catalog_snapshot($node);
	my $old_oid = $node->safe_psql('postgres', q{SELECT 'parts.events_2024_03'::regclass::oid});
	$node->safe_psql('postgres',
		"UPDATE swap_gate SET armed = true, old_oid = 'parts.events_2024_03'::regclass");
	my $gate = $node->background_psql('postgres');
	$gate->query_safe("SELECT pg_advisory_lock($gate_key)");

	my $job = start_job("SELECT id, day, amount + $round AS amount FROM raw WHERE day >= \$1 AND day < \$2", '');
	my $pid = worker_pid($node);
	ok(wait_at_gate($node, $gate_key, $pid),
		"$name: job $job: the worker waits at the gate inside its swap of task 3");
	is( $node->safe_psql(
			'postgres', qq{
SELECT mode FROM pg_locks WHERE pid = $pid AND granted AND locktype = 'relation'
   AND relation = 'public.events'::regclass AND mode = 'AccessExclusiveLock'}),
		'AccessExclusiveLock',
		"$name: the swap transaction is open, holding ACCESS EXCLUSIVE on events");
	is(task_states($node, $job), 'done:1 done:1 running:1' . ' pending:0' x 9,
		"$name: tasks 1 and 2 are done, task 3 is running");
	is(task_phase($node, $job, 3), "indexed bf_shadow_${job}_3",
		"$name: task 3 has built its shadow and is swapping it in (uncommitted)");

	my $log_offset = kill9_and_wait_for_recovery($node, $pid, $name);
	$gate->quit;
	# (Preloaded, the launcher's worker may already have swapped task 3 again by now.)
	is( $node->safe_psql(
			'postgres', q{
SELECT c.oid || ' ' || i.inhparent::regclass::text FROM pg_class c
JOIN pg_inherits i ON i.inhrelid = c.oid WHERE c.oid = 'parts.events_2024_03'::regclass}),
		"$old_oid events",
		"$name: after the crash events_2024_03 is the old relation, still a partition of events")
	  unless $preloaded;

	my %attempts = ('parts.events_2024_03' => 2);
	recover_and_check(
		name      => $name,
		job       => $job,
		preloaded => $preloaded,
		log_offset => $log_offset,
		after_recovery => sub {
			return unless $preloaded;
			# A resume racing the launcher's worker: refused (a process runs the job), or
			# accepted (the worker had not claimed the job yet): the job must run once either way.
			my ($ret, $out, $err) = $node->psql('postgres', "SELECT backfill_resume($job)");
			note("$name: backfill_resume($job) right after recovery, racing the launcher: "
				  . ($ret == 0 ? 'accepted' : "refused: $err"));
			like($err, qr/^$|backfill job $job is (running|pending|done)/,
				"$name: a resume racing the launcher is accepted, or refused as the job is running (or done)");
		},
		attempts       => \%attempts,
		attempts_text  => 'attempts 1, 2 for task 3 whose swap was killed',
		expected       => events_recomputed("amount + $round"),
		catalog_before => $catalog_before);
	return;
}

# =============================================================================================
# 2. kill -9 between tasks, while the worker sleeps its pause after task 3.
sub kill_in_pause
{
	my ($preloaded) = @_;
	$round++;
	my $name = 'pause' . ($preloaded ? ', preloaded' : ', not preloaded');
	my $catalog_before = catalog_snapshot($node);
	my $job = start_job("SELECT id, day, amount + $round AS amount FROM raw WHERE day >= \$1 AND day < \$2",
		", pause => '1h'");
	my $pid = worker_pid($node);
	ok( $node->poll_query_until(
			'postgres',
			"SELECT tasks_done || ' ' || waiting_on FROM backfill_status($job)", '1 pause'),
		"$name: job $job sleeps its pause after task 1");
	$node->safe_psql('postgres', "SELECT backfill_set($job, 'pause', '0.2s')");
	ok( $node->poll_query_until(
			'postgres',
			"SELECT tasks_done >= 3 FROM backfill_status($job)"),
		"$name: job $job did tasks 1 to 3");
	$node->safe_psql('postgres', "SELECT backfill_set($job, 'pause', '1h')");
	ok( $node->poll_query_until(
			'postgres',
			"SELECT waiting_on = 'pause' AND tasks_done >= 3 FROM backfill_status($job)"),
		"$name: the worker sleeps between tasks");
	my $done_before = $node->safe_psql('postgres', "SELECT tasks_done FROM backfill_status($job)");
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM backfill.tasks WHERE job = $job AND state NOT IN ('done', 'pending')"),
		'0', "$name: no task is running while the worker sleeps ($done_before done)");
	my $log_offset = kill9_and_wait_for_recovery($node, $pid, $name);
	recover_and_check(
		name       => $name,
		job        => $job,
		preloaded  => $preloaded,
		log_offset => $log_offset,
		after_recovery => sub {
			# (preloaded, the launcher's worker may have done more since)
			cmp_ok($node->safe_psql('postgres', "SELECT tasks_done FROM backfill_status($job)"),
				'>=', $done_before, "$name: the tasks done before the crash are still done");
			$node->safe_psql('postgres', "SELECT backfill_set($job, 'pause', '0s')");
		},
		attempts       => {},
		expected       => events_recomputed("amount + $round"),
		catalog_before => $catalog_before);
	return;
}

# =============================================================================================
# 3. A task fails: the source divides by zero for May.
sub task_failure
{
	my $name = 'failure';
	$node->safe_psql(
		'postgres', q{
CREATE FUNCTION fix(amount int, day date) RETURNS int LANGUAGE sql IMMUTABLE
    AS $$ SELECT amount * 3 / (CASE WHEN extract(month FROM day) = 5 THEN 0 ELSE 1 END) $$;
});
	my $catalog_before = catalog_snapshot($node);
	my $job = start_job('SELECT id, day, fix(amount, day) AS amount FROM raw WHERE day >= $1 AND day < $2', '');
	is(wait_until_ended($node, $job), 'failed', "$name: job $job fails");
	is( $node->safe_psql(
			'postgres',
			"SELECT state || ' | ' || attempts || ' | ' || error FROM backfill_tasks($job) WHERE partition = 'parts.events_2024_05'"),
		'failed | 1 | division by zero',
		"$name: task 5 failed once (a division by zero is not retried), with the error text")
	  or diag($node->safe_psql('postgres', "SELECT error FROM backfill_tasks($job) WHERE partition = 'parts.events_2024_05'"));
	like($node->safe_psql('postgres', "SELECT last_error FROM backfill_status($job)"),
		qr/division by zero/, "$name: the job's last_error has the error text");
	is(task_states($node, $job), 'done:1 done:1 done:1 done:1 failed:1' . ' pending:0' x 7,
		"$name: tasks 1-4 done, task 5 failed, 6-12 not run");
	is( table_equals(
			$node, "SELECT * FROM events WHERE day < '2024-05-01'",
			"SELECT id, day, amount * 3, 'fresh'::text, amount * 6 FROM raw WHERE day < '2024-05-01'"),
		'0|0', "$name: January to April hold the source's rows");
	is( table_equals(
			$node, "SELECT * FROM events WHERE day >= '2024-05-01'",
			"SELECT * FROM snap WHERE day >= '2024-05-01'"),
		'0|0', "$name: May onwards hold their old rows");
	is(leftover_relations($node, $job), '', "$name: no shadow or old partition left");
	is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'bf\_%'}),
		'0', "$name: no write-noting trigger left");
	is(catalog_snapshot($node), $catalog_before, "$name: every partition as it was");
	is(join(', ', orphan_files($node)), '', "$name: every data file belongs to a relation");
	my $finished_before = $node->safe_psql('postgres',
		"SELECT string_agg(partition || ' ' || finished_at, ', ' ORDER BY partition) FROM backfill_tasks($job) WHERE state = 'done'");

	$node->safe_psql(
		'postgres', q{
CREATE OR REPLACE FUNCTION fix(amount int, day date) RETURNS int LANGUAGE sql IMMUTABLE
    AS $$ SELECT amount * 3 $$;
});
	$node->safe_psql('postgres', "SELECT backfill_resume($job)");
	is(wait_until_ended($node, $job), 'done', "$name: after the source is fixed, backfill_resume finishes the job");
	is( tasks_actual($node, $job),
		tasks_expected($node, 'TABLE snap', 'TABLE raw', 'parts.events_2024_05' => 2),
		"$name: every task done once: attempts 1, 2 for the failed and resumed task 5");
	is( $node->safe_psql(
			'postgres',
			"SELECT string_agg(partition || ' ' || finished_at, ', ' ORDER BY partition) FROM backfill_tasks($job) "
			  . "WHERE partition < 'parts.events_2024_05'"),
		$finished_before, "$name: the tasks done before the failure were not redone (same finished_at)");
	is(table_equals($node, 'TABLE events', events_recomputed('amount * 3')),
		'0|0', "$name: events equals the source");
	is(leftover_relations($node, $job), '', "$name: no shadow or old partition left");
	is(catalog_snapshot($node), $catalog_before, "$name: every partition property carried over");
	is(join(', ', orphan_files($node)), '', "$name: every data file belongs to a relation");
	return;
}

# =============================================================================================
# 4. kill -9 after the swap of task 3 committed, before its retire step did. The retire step
#    drops the write-noting triggers from the kept old partition (keep_old => true), or drops
#    that partition (false). An event trigger holds it at its DROP TRIGGER or DROP TABLE, once
#    task 3's old partition has been detached under its kept name.
$node->safe_psql(
	'postgres', qq{
CREATE TABLE retire_gate (armed boolean NOT NULL);
INSERT INTO retire_gate VALUES (false);
CREATE FUNCTION hold_retire() RETURNS event_trigger LANGUAGE plpgsql
    SET lock_timeout = 0 SET search_path = public AS \$\$
BEGIN
    IF (SELECT armed FROM retire_gate) AND EXISTS (
           SELECT FROM pg_class WHERE relnamespace = 'parts'::regnamespace
              AND relname LIKE 'events\\_2024\\_03\\_bf%') THEN
        UPDATE retire_gate SET armed = false;
        PERFORM pg_advisory_xact_lock_shared($gate_key);
    END IF;
END
\$\$;
CREATE EVENT TRIGGER hold_retire ON ddl_command_start WHEN TAG IN ('DROP TRIGGER', 'DROP TABLE')
    EXECUTE FUNCTION hold_retire();
});

sub kill_before_retire
{
	my ($keep_old) = @_;
	$round++;
	my $name = 'after the swap, before the retire, keep_old ' . ($keep_old ? 'true' : 'false');
	my $catalog_before = catalog_snapshot($node);
	$node->safe_psql('postgres', 'UPDATE retire_gate SET armed = true');
	my $gate = $node->background_psql('postgres');
	$gate->query_safe("SELECT pg_advisory_lock($gate_key)");
	my $job = start_job("SELECT id, day, amount + $round AS amount FROM raw WHERE day >= \$1 AND day < \$2",
		", keep_old => " . ($keep_old ? 'true' : 'false'));
	my $pid = worker_pid($node);
	ok(wait_at_gate($node, $gate_key, $pid),
		"$name: job $job: the worker waits at the gate inside the retire step of task 3");
	is(task_states($node, $job), 'done:1 done:1 done:1' . ' pending:0' x 9,
		"$name: tasks 1 to 3 are done (task 3's swap committed)");
	my $log_offset = kill9_and_wait_for_recovery($node, $pid, $name);
	$gate->quit;
	$node->safe_psql('postgres', 'UPDATE retire_gate SET armed = false');
	recover_and_check(
		name           => $name,
		job            => $job,
		preloaded      => 0,
		log_offset     => $log_offset,
		attempts       => {},
		expected       => events_recomputed("amount + $round"),
		catalog_before => $catalog_before,
		keep_old       => $keep_old);
	return unless $keep_old;
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*) FROM pg_class c WHERE c.relkind = 'r' AND NOT c.relispartition
   AND c.relname ~ '^events_2024_\\d\\d_bf$job\$'}),
		'12', "$name: one kept old partition per partition");
	$node->safe_psql('postgres', "SELECT backfill_drop_old($job)");
	is(leftover_relations($node, $job), '', "$name: backfill_drop_old drops them");
	return;
}

# =============================================================================================
# 5. kill -9 while the shadow's data file exists but none of its catalog rows does.
#
# PostgreSQL creates a new relation's file (heap_create) before it inserts the relation's catalog
# rows. To hold the worker in between, a session creates, in an open
# transaction, a type of the name the shadow's row type will get: the worker's insert into
# pg_type then waits for that transaction, after the shadow's file was created (lock_timeout
# => '1h', so that it waits instead of retrying). The kill must leave no file behind either.
sub kill_before_noting
{
	$round++;
	my $name = 'shadow file created, not yet noted';
	my $catalog_before = catalog_snapshot($node);
	my %files_before = map { $_ => 1 } data_files();
	my $job = 1 + $node->safe_psql('postgres',
		q{SELECT setval('backfill.jobs_id_seq', (SELECT max(id) + 100 FROM backfill.jobs))});
	my $type_holder = $node->background_psql('postgres');
	$type_holder->query_safe("BEGIN; CREATE TYPE parts.bf_shadow_${job}_3 AS (x int)");
	is(start_job("SELECT id, day, amount + $round AS amount FROM raw WHERE day >= \$1 AND day < \$2",
			", lock_timeout => '1h'"),
		$job, "$name: job $job started");
	my $pid = worker_pid($node);
	ok( $node->poll_query_until(
			'postgres', qq{
SELECT count(*) FROM pg_locks WHERE pid = $pid AND locktype = 'transactionid' AND NOT granted},
			'1'),
		"$name: the worker waits for the type's transaction, inside the creation of task 3's shadow");
	is(task_states($node, $job), 'done:1 done:1 running:1' . ' pending:0' x 9,
		"$name: tasks 1 and 2 are done, task 3 is running");
	my @new_files = grep { !$files_before{$_} } data_files();
	note("$name: data files created meanwhile that no committed relation owns: "
		  . (join(', ', grep { my $f = $_; !grep { $_ eq $f } owned_files() } @new_files) || 'none'));

	my $log_offset = kill9_and_wait_for_recovery($node, $pid, $name);
	$type_holder->quit;
	recover_and_check(
		name           => $name,
		job            => $job,
		preloaded      => 1,
		log_offset     => $log_offset,
		attempts       => { 'parts.events_2024_03' => 2 },
		attempts_text  => 'attempts 1, 2 for task 3 whose shadow was being created',
		expected       => events_recomputed("amount + $round"),
		catalog_before => $catalog_before);
	return;
}

# The numeric data files of database postgres (main forks), and those that relations own.
sub data_files
{
	my $dboid = $node->safe_psql('postgres',
		'SELECT oid FROM pg_database WHERE datname = current_database()');
	opendir(my $dh, $node->data_dir . "/base/$dboid") or die "cannot open base/$dboid: $!";
	my @files = sort grep { /^\d+$/ } readdir $dh;
	closedir $dh;
	return @files;
}

sub owned_files
{
	return split /\n/,
	  $node->safe_psql('postgres',
		'SELECT pg_relation_filenode(oid) FROM pg_class WHERE pg_relation_filenode(oid) IS NOT NULL');
}

kill_in_swap(0);
kill_in_pause(0);
task_failure();
kill_before_retire(1);
kill_before_retire(0);

$node->append_conf('postgresql.conf', "shared_preload_libraries = 'backfill'\n");
$node->restart;
kill_in_swap(1);
kill_in_pause(1);
# last: the empty file it leaves would fail the orphan checks of the cases after it
kill_before_noting();

$node->stop;
done_testing();
