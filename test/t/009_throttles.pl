# Throttles of background jobs, against a primary with a real streaming standby.
#
# 1. max_replication_lag: with the standby's replay paused (pg_wal_replay_pause), the job stops
#    starting steps once the standby is more than 1 s behind and says so in waiting_on; it makes
#    no progress while replay stays paused, and ends done once replay resumes.
# 2. run_window: the window closes (backfill_set) while a task is loading: that task finishes
#    its swap, no new task starts, waiting_on says 'window'; cleared, the job ends done.
# 3. throttle_query: while the probe returns true no task starts; once false the job ends done.
# 4. max_rows_per_second: waiting_on says 'rate' during a paced load; each load runs at the rate
#    (measured over the whole task, so a little under it); a rate changed by backfill_set on the
#    live job applies to the next task.
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
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "max_worker_processes = 16\ntimezone = 'UTC'\n");
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION backfill');
create_events($primary, 24000);

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));

sub sql { return $primary->safe_psql('postgres', $_[0]); }

# Starts a background job on events over [$from, $to) from raw, with extra options.
sub start_job
{
	my ($from, $to, $options, $source) = @_;
	$source //= 'raw';
	return sql("SELECT backfill_start('events', '$from', '$to', '$source'$options)");
}

# Polls until the job's waiting_on matches the LIKE pattern; returns it.
sub wait_waiting_on
{
	my ($job, $like) = @_;
	$primary->poll_query_until('postgres',
		"SELECT waiting_on LIKE '$like' OR state NOT IN ('pending', 'running') "
		  . "FROM backfill_status($job)")
	  or die "job $job never waited on $like";
	return sql("SELECT coalesce(waiting_on, 'job ' || state || ': ' || coalesce(last_error, '')) FROM backfill_status($job)");
}

sub tasks_started
{
	my ($job) = @_;
	return sql("SELECT count(*) FROM backfill_tasks($job) WHERE started_at IS NOT NULL");
}

sub tasks_done
{
	my ($job) = @_;
	return sql("SELECT tasks_done FROM backfill_status($job)");
}

# ==============================================================================================
# 1. Replication lag.
$standby->safe_psql('postgres', 'SELECT pg_wal_replay_pause()');
my $job = start_job('2024-01-01', '2025-01-01', ", max_replication_lag => '1s', pause => '300ms'");
my $waiting = wait_waiting_on($job, 'replication lag:%');
like($waiting, qr/^replication lag: standby "standby" replays [\d.]+ s behind, more than max_replication_lag \(1\.0 s\)$/,
	'the job waits for the paused standby and says which one and how far behind');
my $done_while_paused = tasks_done($job);
sleep 3;
is(tasks_done($job), $done_while_paused, 'no task finishes while the standby replays nothing');
cmp_ok($done_while_paused, '<', 12, 'the job stopped before its end');
$standby->safe_psql('postgres', 'SELECT pg_wal_replay_resume()');
is(wait_job($primary, $job, 120), 'done', 'once replay resumes, the job ends done');
is(table_equals($primary, 'SELECT id, day, amount FROM events', 'SELECT * FROM raw'),
	'0|0', 'events holds the source rows');

# ==============================================================================================
# 2. The window closes while a task is under way. Each load sleeps 2 s in the source.
my $tz_now = "now() AT TIME ZONE 'UTC'";    # the server's time zone (run_window is in it)
my $open = sql("SELECT to_char($tz_now - interval '1 hour', 'HH24:MI') || '-' || to_char($tz_now + interval '1 hour', 'HH24:MI')");
my $closed = sql("SELECT to_char($tz_now + interval '1 hour', 'HH24:MI') || '-' || to_char($tz_now + interval '2 hours', 'HH24:MI')");
my $slow = 'SELECT r.id, r.day, r.amount + 1 AS amount FROM raw r, pg_sleep(2) WHERE r.day >= $1 AND r.day < $2';
$job = start_job('2024-01-01', '2024-04-01', ", run_window => '$open'", $slow);
$primary->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM backfill_tasks($job) WHERE state = 'running'")
  or die 'the first task never started';
sql("SELECT backfill_set($job, 'run_window', '$closed')");
$waiting = wait_waiting_on($job, 'window:%');
like($waiting, qr/^window: \d\d:\d\d is outside run_window \Q$closed\E; the next task starts at/,
	'waiting_on says the window is closed and when it opens');
is(sql("SELECT string_agg(state, ',' ORDER BY partition) FROM backfill_tasks($job)"),
	'done,pending,pending', 'the task under way when the window closed finished its swap; no new task started');
sleep 2;
is(tasks_started($job), 1, 'still no new task outside the window');
sql("SELECT backfill_set($job, 'run_window', NULL)");
is(wait_job($primary, $job, 120), 'done', 'with the window cleared the job ends done');
is(table_equals($primary, "SELECT id, day, amount FROM events WHERE day < '2024-04-01'",
		"SELECT id, day, amount + 1 FROM raw WHERE day < '2024-04-01'"),
	'0|0', 'the three partitions hold the source rows');

# ==============================================================================================
# 3. A probe.
sql('CREATE TABLE hold (since timestamptz); INSERT INTO hold VALUES (now())');
$job = start_job('2024-01-01', '2024-03-01',
	", throttle_query => 'SELECT EXISTS (SELECT FROM hold)'");
$waiting = wait_waiting_on($job, 'probe:%');
is($waiting, 'probe: throttle_query returned true', 'waiting_on names the probe');
sleep 2;
is(tasks_started($job), 0, 'no task starts while the probe returns true');
sql('DELETE FROM hold');
is(wait_job($primary, $job, 60), 'done', 'once the probe returns false the job ends done');

# ==============================================================================================
# 4. The rate: 2 partitions of about 2000 rows at 500 rows a second (about 4 s each); during
#    the first load the rate goes up to 4000 for the next task.
$job = start_job('2024-01-01', '2024-03-01', ', max_rows_per_second => 500');
$waiting = wait_waiting_on($job, 'rate:%');
like($waiting, qr/^rate: loading parts\.events_2024_01 at most 500 rows per second$/,
	'waiting_on says the load is paced');
sql("SELECT backfill_set($job, 'max_rows_per_second', '4000')");
is(wait_job($primary, $job, 60), 'done', 'the paced job ends done');
my @tasks = split /\n/, sql(qq{
SELECT rows_after || ' ' || extract(epoch FROM finished_at - started_at)
FROM backfill_tasks($job) ORDER BY partition});
my ($rows1, $secs1) = split / /, $tasks[0];
my ($rows2, $secs2) = split / /, $tasks[1];
my $rate1 = $rows1 / $secs1;
my $rate2 = $rows2 / $secs2;
note(sprintf('task 1: %d rows in %.2f s = %.0f rows/s (limit 500); task 2: %d rows in %.2f s = %.0f rows/s (limit 4000)',
	$rows1, $secs1, $rate1, $rows2, $secs2, $rate2));
cmp_ok($rate1, '<=', 500 * 1.1, 'the first load kept to 500 rows a second');
cmp_ok($rate1, '>=', 500 * 0.8, 'and ran close to it');
cmp_ok($rate2, '<=', 4000 * 1.1, 'the second load kept to the new limit');
cmp_ok($secs2, '<', $secs1 / 2, 'the limit set on the live job applied to its next task');

done_testing();
