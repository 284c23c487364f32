# A job recorded with one (system identifier, timeline) never resumes by itself on a server that
# has another: a restored backup or a promoted standby. Done for real, with backfill preloaded
# everywhere, not by changing the recorded identifier:
#
# 1. Restored backup (PITR): a base backup of the primary is taken while a background job is
#    mid-way, then restored from the WAL archive up to a later point (recovery_target_lsn, still
#    mid-way) and promoted at the end of recovery, onto a new timeline. There the launcher sets
#    the job paused, with a last_error that says why (a restored backup or a promoted standby)
#    and to check, then backfill_resume; for several seconds no worker runs it and no task
#    changes. Meanwhile the primary's own job is unaffected: it still runs there.
# 2. Promoted standby: a streaming standby has replayed the job mid-way; the primary stops
#    (immediate mode, as in a failover) and the standby is promoted onto a new timeline. The job
#    is paused there with the same reason, and nothing runs by itself.
# 3. On both, backfill_resume finishes the job: done, each task that was done before is not
#    redone and each other task is done once more, the data equals the source, no shadow, kept
#    table or orphan data file is left; the job is then recorded with that server's identity.
# 4. The opposite, on the original primary (same system identifier and timeline): started again
#    after its immediate stop, and then restarted once more mid-way, the launcher resumes the
#    job by itself each time, and it ends done with no backfill_resume.
#
# The source sleeps a few seconds per partition (set in table slow), so that the job is surely
# mid-way when the backup, the recovery target and the failover happen; once a server is on its
# own, the sleep there is made short so that the rest of the job goes quickly.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1, has_archiving => 1);
$primary->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'backfill'
max_worker_processes = 16
});
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION backfill');
create_events($primary, 12000);
$primary->safe_psql('postgres', 'CREATE TABLE slow (seconds float8 NOT NULL); INSERT INTO slow VALUES (2)');

# The standby, from a base backup taken before the job. The configuration comes with the
# backup (backfill preloaded); archiving is off on the copies, so that nothing they archive
# after their promotion lands in the primary's archive.
$primary->backup('before');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'before', has_streaming => 1);
$standby->append_conf('postgresql.conf', "archive_mode = off\n");
$standby->start;

my $source = q{SELECT id, day, amount * 3 AS amount FROM raw WHERE day >= $1 AND day < $2 }
  . q{AND (SELECT pg_sleep(seconds) FROM slow) IS NOT NULL};
my $expected = q{SELECT id, day, amount * 3, 'fresh'::text, amount * 3 * 2 FROM raw};

sub tasks_done
{
	my ($node, $job) = @_;
	return $node->safe_psql('postgres', "SELECT count(*) FROM backfill.tasks WHERE job = $job AND state = 'done'");
}

sub wait_tasks_done
{
	my ($node, $job, $n) = @_;
	$node->poll_query_until('postgres',
		"SELECT count(*) >= $n FROM backfill.tasks WHERE job = $job AND state = 'done'")
	  or die "job $job did not reach $n done tasks on " . $node->name;
	return;
}

sub workers
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'backfill worker'");
}

# The job's tasks, one line each: number, state, attempts, phase, shadow.
sub task_rows
{
	my ($node, $job) = @_;
	return $node->safe_psql(
		'postgres', qq{
SELECT task_no, state, attempts, coalesce(phase, '-'), coalesce(shadow_name, '-')
FROM backfill.tasks WHERE job = $job ORDER BY task_no});
}

# The current timeline of a running server: the first 8 hex digits of the WAL file it writes.
sub current_timeline
{
	my ($node) = @_;
	return hex(substr($node->safe_psql('postgres', 'SELECT pg_walfile_name(pg_current_wal_lsn())'), 0, 8));
}

# What a server that is not the one the job was started on must show, once its launcher has run
# (recovery ended): the job paused with the reason, the identity that differs, and for
# 4 seconds nothing that runs it. Returns the job's tasks as they were then ("no state attempts").
sub check_not_resumed
{
	my ($node, $job, $what, $log_offset) = @_;
	# Until the launcher has done something with the job: paused it, or resumed it (a worker).
	$node->poll_query_until(
		'postgres', qq{
SELECT state NOT IN ('running', 'pending') OR EXISTS (
    SELECT 1 FROM pg_stat_activity WHERE backend_type = 'backfill worker')
FROM backfill.jobs WHERE id = $job});
	is($node->safe_psql('postgres', "SELECT state FROM backfill.jobs WHERE id = $job"),
		'paused', "$what: the job becomes paused");
	like(
		$node->safe_psql('postgres', "SELECT last_error FROM backfill_status($job)"),
		qr/^not resumed by itself: this server is not the one the job was started on \(another system identifier or timeline: a restored backup or a promoted standby\); check the data, then SELECT backfill_resume\($job\)$/,
		"$what: last_error says why (a restored backup or a promoted standby) and to check, then backfill_resume");
	my ($recorded_system, $recorded_timeline) = split /\|/,
	  $node->safe_psql('postgres', "SELECT system_identifier, timeline FROM backfill.jobs WHERE id = $job");
	is($recorded_system, $node->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()'),
		"$what: same system identifier as the primary (a copy of it)");
	my $timeline = current_timeline($node);
	cmp_ok($timeline, '>', $recorded_timeline,
		"$what: it runs on a new timeline ($timeline), the job was recorded on $recorded_timeline");
	note("$what: the checkpoint's timeline is "
		  . $node->safe_psql('postgres', 'SELECT timeline_id FROM pg_control_checkpoint()'));

	my $tasks = task_rows($node, $job);
	my $busy = '';
	my $until = Time::HiRes::time() + 4;
	while (Time::HiRes::time() < $until)
	{
		my $now = $node->safe_psql('postgres',
			"SELECT state FROM backfill.jobs WHERE id = $job") . ' ' . workers($node);
		$busy .= "$now; " unless $now eq 'paused 0';
		Time::HiRes::sleep(0.25);
	}
	is($busy, '', "$what: for 4 s the job stays paused and no backfill worker runs");
	is(task_rows($node, $job), $tasks, "$what: no task changes by itself");
	ok(!$node->log_contains(qr/backfill: resuming job $job /, $log_offset),
		"$what: the launcher did not resume it");
	return $node->safe_psql('postgres',
		"SELECT task_no || ' ' || state || ' ' || attempts FROM backfill.tasks WHERE job = $job ORDER BY task_no");
}

# After backfill_resume: done, tasks done before not redone, the others done once more, the data
# equal to the source, nothing left behind.
sub check_resumed
{
	my ($node, $job, $what, $tasks_before) = @_;
	is(wait_job($node, $job, 120), 'done', "$what: after backfill_resume the job is done");
	my @expected;
	for my $line (split /\n/, $tasks_before)
	{
		my ($no, $state, $attempts) = split / /, $line;
		push @expected, join(' ', $no, 'done', $state eq 'done' ? $attempts : $attempts + 1);
	}
	is( $node->safe_psql('postgres',
			"SELECT task_no || ' ' || state || ' ' || attempts FROM backfill.tasks WHERE job = $job ORDER BY task_no"),
		join("\n", @expected),
		"$what: every task is done; those done before were not redone, the others ran once more");
	is(table_equals($node, 'TABLE events', $expected), '0|0', "$what: events equals the source");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM events'), '12000', "$what: all rows are there");
	is(leftover_relations($node, $job), '', "$what: no shadow, kept table or task index is left");
	is(join(', ', orphan_files($node)), '', "$what: every data file belongs to a relation");
	return;
}

# =============================================================================================
my $job = $primary->safe_psql('postgres',
	"SELECT backfill_start('events', '2024-01-01', '2025-01-01', \$src\$$source\$src\$)");
wait_tasks_done($primary, $job, 2);
$primary->backup('mid');    # pg_basebackup while the job runs
wait_tasks_done($primary, $job, 4);
my $done_at_target = tasks_done($primary, $job);
my $target = $primary->lsn('insert');
my $segment = $primary->safe_psql('postgres', 'SELECT pg_walfile_name(pg_switch_wal())');
$primary->poll_query_until('postgres',
	"SELECT last_archived_wal >= '$segment' FROM pg_stat_archiver")
  or die "WAL segment $segment was not archived";
is($primary->safe_psql('postgres', "SELECT state FROM backfill.jobs WHERE id = $job"),
	'running', "job $job still runs on the primary at the recovery target ($done_at_target tasks done)");

# =============================================================================================
# 1. The backup restored up to $target from the archive, then promoted onto a new timeline.
my $restored = PostgreSQL::Test::Cluster->new('restored');
$restored->init_from_backup($primary, 'mid', has_restoring => 1, standby => 0);
$restored->append_conf(
	'postgresql.conf', qq{
archive_mode = off
recovery_target_lsn = '$target'
recovery_target_action = 'promote'
});
$restored->start;
$restored->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the restored server did not end its recovery';
ok($restored->log_contains(qr/recovery stopping after WAL location \(LSN\)|recovery stopping before WAL location \(LSN\)/),
	'the restored server stopped its recovery at the target LSN');
my $restored_done = tasks_done($restored, $job);
cmp_ok($restored_done, '>=', $done_at_target,
	"the restored server replayed the archive past the backup, up to the target ($restored_done tasks done)");
cmp_ok($restored_done, '<', 12, 'there the job is mid-way');
my $restored_tasks = check_not_resumed($restored, $job, 'restored backup', 0);

my $primary_done = tasks_done($primary, $job);
is($primary->safe_psql('postgres', "SELECT state || ' ' || coalesce(last_error, '-') FROM backfill.jobs WHERE id = $job"),
	'running -', 'meanwhile the job runs on the primary, unaffected');
cmp_ok($primary_done, '>', $done_at_target, 'and goes on there');

# =============================================================================================
# 2. Failover: the standby has replayed the job mid-way, the primary stops (immediate), the
# standby is promoted.
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
my $left = $primary->safe_psql('postgres',
	"SELECT count(*) FROM backfill.tasks WHERE job = $job AND state <> 'done'");
die "job $job is almost done on the primary, too late for a failover mid-way" if $left < 3;
$primary->stop('immediate');
my $standby_log = -s $standby->logfile;
my $replayed = task_rows($standby, $job);
note("the standby replayed the tasks:\n$replayed");
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby was not promoted';
like($replayed, qr/\|done\|/, 'the standby has replayed tasks done before the failover');
like($replayed, qr/\|(?:pending|running)\|/, 'and tasks not done: the job is mid-way');
my $standby_tasks = check_not_resumed($standby, $job, 'promoted standby', $standby_log);

# =============================================================================================
# 3. backfill_resume on each, made quick.
for my $node ($restored, $standby)
{
	$node->safe_psql('postgres', 'UPDATE slow SET seconds = 0.1');
	$node->safe_psql('postgres', "SELECT backfill_resume($job)");
}
check_resumed($restored, $job, 'restored backup', $restored_tasks);
check_resumed($standby, $job, 'promoted standby', $standby_tasks);
# Run there by hand, the job now belongs to that server: its next restart would resume it.
for my $node ($restored, $standby)
{
	is( $node->safe_psql('postgres',
			"SELECT system_identifier || ' ' || timeline FROM backfill.jobs WHERE id = $job"),
		$node->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()') . ' '
		  . current_timeline($node),
		$node->name . ': the resumed job is recorded with this server\'s identifier and timeline');
}

# =============================================================================================
# 4. The original primary, same system identifier and timeline: the launcher resumes the job by
# itself after a start (crash recovery after the immediate stop) and after a plain restart.
my $log_offset = -s $primary->logfile;
$primary->start;
ok($primary->wait_for_log(qr/backfill: resuming job $job in database \d+ after a server start/, $log_offset),
	'the primary, started again after its immediate stop, resumes the job by itself');
is( $primary->safe_psql('postgres',
		"SELECT system_identifier || ' ' || timeline FROM backfill.jobs WHERE id = $job"),
	$primary->safe_psql('postgres', 'SELECT system_identifier FROM pg_control_system()') . ' '
	  . current_timeline($primary),
	'there the job was recorded with the same system identifier and timeline');
my $before_restart = tasks_done($primary, $job);
wait_tasks_done($primary, $job, $before_restart + 1);
$primary->safe_psql('postgres', 'UPDATE slow SET seconds = 0.3');
$log_offset = -s $primary->logfile;
$primary->restart;
ok($primary->wait_for_log(qr/backfill: resuming job $job in database \d+ after a server start/, $log_offset),
	'after a plain restart too');
is(wait_job($primary, $job, 120), 'done', 'the job ends done on the primary with no backfill_resume');
is($primary->safe_psql('postgres', "SELECT count(*) FROM backfill.tasks WHERE job = $job AND (state <> 'done' OR attempts > 2)"),
	'0', 'on the primary every task is done, none more than twice');
is(table_equals($primary, 'TABLE events', $expected), '0|0', 'on the primary events equals the source');
is(leftover_relations($primary, $job), '', 'on the primary no shadow, kept table or task index is left');

$restored->stop;
$standby->stop;
$primary->stop;
done_testing();
