# With backfill in shared_preload_libraries, a job resumes by itself after every server start:
# after a kill -9 of its worker (crash recovery), after a fast shutdown and start, and in every
# database. A job the DBA paused stays paused, and a job recorded on another system (as after a
# restored backup) is paused with the reason instead of resumed.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('launcher');
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'backfill'\n");
$node->restart;
create_events($node, 12000);

sub start_job
{
	my ($options) = @_;
	return $node->safe_psql('postgres',
		"SELECT backfill_start('events', '2024-01-01', '2025-01-01', "
		  . "'SELECT id, day, amount * 7 AS amount FROM raw WHERE day >= \$1 AND day < \$2'"
		  . "$options)");
}

sub tasks_done
{
	my ($job) = @_;
	return $node->safe_psql('postgres', "SELECT tasks_done FROM backfill_status($job)");
}

sub source_equals
{
	return table_equals($node, 'SELECT id, day, amount FROM events',
		'SELECT id, day, amount * 7 FROM raw');
}

# 1. kill -9 of the worker between tasks: crash recovery, then the launcher resumes the job.
my $job = start_job(", pause => '1s'");
$node->poll_query_until('postgres', "SELECT tasks_done >= 2 FROM backfill_status($job)")
  or die 'job made no progress';
my $log_offset = kill9_and_wait_for_recovery($node, worker_pid($node));
$node->wait_for_log(qr/backfill: resuming job $job in database \d+ after a server start/,
	$log_offset);
pass('after a kill -9 and crash recovery, the launcher resumes the job');
is(wait_job($node, $job), 'done', 'the resumed job finishes');
is(source_equals(), '0|0', 'the data equals the source');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM backfill.tasks WHERE job = $job AND (state <> 'done' OR attempts > 2)"),
	'0', 'every task is done, none more than twice');

# 2. A fast shutdown stops the worker at a safe point (the job is paused, interrupted); the next
# start resumes it. A job that the DBA paused stays paused across the restart.
$node->safe_psql('postgres', 'CREATE TABLE other (day date NOT NULL) PARTITION BY RANGE (day)');
$node->safe_psql('postgres',
	"CREATE TABLE other_1 PARTITION OF other FOR VALUES FROM ('2024-01-01') TO ('2024-02-01')");
$node->safe_psql('postgres',
	"CREATE TABLE other_2 PARTITION OF other FOR VALUES FROM ('2024-02-01') TO ('2024-03-01')");
my $paused = $node->safe_psql('postgres',
	"SELECT backfill_start('other', '2024-01-01', '2024-03-01', "
	  . "'SELECT day FROM other WHERE day >= \$1 AND day < \$2', pause => '1h')");
$node->safe_psql('postgres', "SELECT backfill_pause($paused)");
wait_for_state($node, $paused, 'paused');
$job = start_job(", pause => '1s'");
$node->poll_query_until('postgres', "SELECT tasks_done >= 1 FROM backfill_status($job)")
  or die 'job made no progress';
$log_offset = -s $node->logfile;
$node->restart;  # a fast shutdown, then a start
$node->wait_for_log(qr/backfill: resuming job $job in database/, $log_offset);
pass('after a fast shutdown and a start, the launcher resumes the job');
is(wait_job($node, $job), 'done', 'the job resumed after the restart finishes');
is(source_equals(), '0|0', 'the data equals the source');
is($node->safe_psql('postgres', "SELECT state FROM backfill_status($paused)"),
	'paused', 'a job paused by the DBA stays paused after the restart');
$node->safe_psql('postgres', "SELECT backfill_cancel($paused)");

# 3. A job in another database resumes too.
$node->safe_psql('postgres', 'CREATE DATABASE second');
$node->safe_psql('second', 'CREATE EXTENSION backfill');
$node->safe_psql(
	'second', q{
CREATE TABLE t (id int, day date NOT NULL) PARTITION BY RANGE (day);
CREATE TABLE t_1 PARTITION OF t FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE t_2 PARTITION OF t FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE t_src AS SELECT g AS id, date '2024-01-01' + g % 59 AS day FROM generate_series(1, 100) g;
});
my $second = $node->safe_psql('second',
	"SELECT backfill_start('t', '2024-01-01', '2024-03-01', 't_src', pause => '1h')");
$node->poll_query_until('second', "SELECT tasks_done = 1 FROM backfill_status($second)")
  or die 'job in database second made no progress';
$log_offset = -s $node->logfile;
$node->restart;
$node->wait_for_log(qr/backfill: resuming job $second in database/, $log_offset);
is($node->safe_psql('second', "SELECT backfill_wait($second, '60s')"),
	'done', 'a job in another database is resumed after the restart, and finishes');

# 4. A job recorded on another system (as in a restored backup) is paused, with the reason.
$job = start_job(", pause => '1h'");
$node->poll_query_until('postgres', "SELECT tasks_done >= 1 FROM backfill_status($job)")
  or die 'job made no progress';
$node->safe_psql('postgres',
	"UPDATE backfill.jobs SET system_identifier = system_identifier + 1 WHERE id = $job");
$node->restart;
$node->poll_query_until('postgres',
	"SELECT state = 'paused' FROM backfill.jobs WHERE id = $job")
  or die 'job was not paused';
like(
	$node->safe_psql('postgres', "SELECT last_error FROM backfill_status($job)"),
	qr/not resumed by itself: this server is not the one the job was started on/,
	'a job of another system is paused with the reason');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'backfill worker'"),
	'0', 'and no worker runs it');

$node->stop;
done_testing();
