# pg_cron drives a job started with background => false: a cron entry that is a lone
# CALL backfill_run(...) runs every minute and the job advances one slice per run, committing
# after each task, until it is done; a server restart between two runs leaves the job waiting
# for the next one. pg_cron runs in its default mode, connecting with libpq (cron.host is the
# socket directory). Also: a statement_timeout shorter than max_duration is refused up front and
# changes nothing; a cron command that puts another statement before the CALL is refused; the
# README's pause and resume commands, run by cron, pause and resume a background job.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);

my $t0 = time();
my $node = new_node('pg_cron');
my $pg_major = int($node->safe_psql('postgres', 'SHOW server_version_num') / 10000);
die "pg_cron is not installed for this server: apt-get install postgresql-$pg_major-cron "
  . "(test/install_deps.sh installs it)\n"
  unless $node->safe_psql('postgres',
	"SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_cron'");
my $socket_dir = $node->host;
$node->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'pg_cron,backfill'
cron.database_name = 'postgres'
cron.host = '$socket_dir'
});
$node->restart;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');

# t: 4 monthly partitions, backfilled by cron. Its source sleeps 2 s per task, so that a run
# doing two tasks can be watched between them. b: 3 partitions, for the pause/resume commands.
$node->safe_psql(
	'postgres', q{
CREATE TABLE t (id bigint NOT NULL, day date NOT NULL, amount int NOT NULL, PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
CREATE TABLE b (id bigint NOT NULL, day date NOT NULL, amount int NOT NULL) PARTITION BY RANGE (day);
DO $$
BEGIN
    FOR m IN 1..4 LOOP
        EXECUTE format('CREATE TABLE t_2024_%s PARTITION OF t FOR VALUES FROM (%L) TO (%L)',
                       lpad(m::text, 2, '0'), make_date(2024, m, 1), make_date(2024, m + 1, 1));
    END LOOP;
    FOR m IN 1..3 LOOP
        EXECUTE format('CREATE TABLE b_2024_%s PARTITION OF b FOR VALUES FROM (%L) TO (%L)',
                       lpad(m::text, 2, '0'), make_date(2024, m, 1), make_date(2024, m + 1, 1));
    END LOOP;
END
$$;
INSERT INTO t SELECT g, date '2024-01-01' + g % 121, g FROM generate_series(1, 4000) g;
INSERT INTO b SELECT g, date '2024-01-01' + g % 91, g FROM generate_series(1, 900) g;
CREATE TABLE t_src AS SELECT id, day, amount * 10 AS amount FROM t;
CREATE TABLE b_src AS SELECT id, day, amount + 1 AS amount FROM b;
CREATE TABLE t_before AS TABLE t;
});

# Polls $sql every 0.1 s until it returns a value matching $want, for at most $limit seconds;
# returns the last value.
sub poll_for
{
	my ($sql, $want, $limit) = @_;
	my $deadline = time() + $limit;
	my $value;
	for (;;)
	{
		$value = $node->safe_psql('postgres', $sql);
		return $value if $value =~ $want || time() >= $deadline;
		sleep 0.1;
	}
}

# Waits until cron entry $cron has $n finished runs (at most $limit seconds); returns
# 'status|return_message' of each finished run, oldest first, one per line.
sub finished_runs
{
	my ($cron, $n, $limit) = @_;
	poll_for(
		"SELECT count(*) >= $n FROM cron.job_run_details "
		  . "WHERE jobid = $cron AND status IN ('succeeded', 'failed')",
		qr/^t$/, $limit // 150);
	return $node->safe_psql('postgres',
		"SELECT status || '|' || coalesce(return_message, '') FROM cron.job_run_details "
		  . "WHERE jobid = $cron AND status IN ('succeeded', 'failed') ORDER BY runid");
}

sub status_of
{
	my ($job) = @_;
	return $node->safe_psql('postgres',
		"SELECT state, tasks_done, tasks_failed, coalesce(waiting_on, '-') FROM backfill_status($job)");
}

# ---------------------------------------------------------------------------------------------
# The job cron will run, and a statement_timeout shorter than max_duration refused up front.
my $query = q{SELECT s.id, s.day, s.amount FROM t_src s, pg_sleep(2) WHERE s.day >= $1 AND s.day < $2};
my $job = $node->safe_psql('postgres',
	qq{SELECT backfill_start('t', '2024-01-01', '2024-05-01', \$src\$$query\$src\$, background => false)});
my $status_before = status_of($job);
my $tasks_before = $node->safe_psql('postgres',
	"SELECT partition, state, attempts, coalesce(started_at::text, '-') FROM backfill_tasks($job) ORDER BY 1");
is($status_before, 'pending|0|0|the next CALL backfill_run',
	"job $job (background => false) is pending, waiting for a CALL");

my ($ret, $out, $err) = $node->psql(
	'postgres', qq{SET statement_timeout = '1s';
CALL backfill_run($job, max_duration => '10 min');});
isnt($ret, 0, 'CALL backfill_run with a statement_timeout shorter than max_duration fails');
like($err, qr/ERROR:  statement_timeout is shorter than max_duration/,
	'... saying that statement_timeout is shorter than max_duration');
is(status_of($job), $status_before, '... and leaves the job as it was');
is( $node->safe_psql(
		'postgres',
		"SELECT partition, state, attempts, coalesce(started_at::text, '-') FROM backfill_tasks($job) ORDER BY 1"),
	$tasks_before,
	'... starts no task');
is(table_equals($node, 'TABLE t', 'TABLE t_before'), '0|0', '... and changes no row');

# A background job, between its first and second task (pause => '1h'), for the pause command.
my $bjob = $node->safe_psql('postgres',
	q{SELECT backfill_start('b', '2024-01-01', '2024-04-01', 'b_src', pause => '1h')});
poll_for("SELECT tasks_done FROM backfill_status($bjob)", qr/^1$/, 60) eq '1'
  or die "background job $bjob did not finish its first task";

# ---------------------------------------------------------------------------------------------
# Every minute: one task of job $job; once: the command that puts a SET before the CALL; once:
# the README's pause command for the background job. All three are scheduled in one transaction,
# so their first runs come at the same minute.
my ($slice, $two, $pause) = split /\|/, $node->safe_psql(
	'postgres', qq{
SELECT cron.schedule('backfill-slice', '* * * * *',
                     \$\$CALL backfill_run($job, max_tasks => 1, max_duration => '10 min')\$\$) || '|' ||
       cron.schedule('backfill-two-statements', '* * * * *',
                     \$\$SET statement_timeout = 0; CALL backfill_run($job, max_duration => '10 min')\$\$) || '|' ||
       cron.schedule('backfill-pause', '* * * * *',
                     \$\$SELECT backfill_pause($bjob) FROM backfill_status($bjob) WHERE state IN ('pending', 'running')\$\$)});
is( $node->safe_psql('postgres',
		"SELECT string_agg(nodename, ',') FROM cron.job WHERE jobid IN ($slice, $two, $pause)"),
	join(',', ($socket_dir) x 3),
	'the cron entries connect through the socket directory (cron.host)');

my $pause_runs = finished_runs($pause, 1);
$node->safe_psql('postgres', "SELECT cron.unschedule($pause)");
is($pause_runs, 'succeeded|1 row', 'cron ran the pause command once, and it paused one job');
ok(wait_for_state($node, $bjob, 'paused'), "background job $bjob is paused");

my $two_runs = finished_runs($two, 1);
$node->safe_psql('postgres', "SELECT cron.unschedule($two)");
like($two_runs, qr/^failed\|ERROR:  backfill_run must be called as a lone top-level CALL/,
	'a cron command with a SET before the CALL is refused: it runs as one transaction');

# While paused, the background job's pause becomes 0s, so that once resumed it finishes at once.
$node->safe_psql('postgres', "SELECT backfill_set($bjob, 'pause', '0s')");
my $resume = $node->safe_psql(
	'postgres', qq{
SELECT cron.schedule('backfill-resume', '* * * * *',
                     \$\$SELECT backfill_resume($bjob) FROM backfill_status($bjob) WHERE state = 'paused'\$\$)});
my $resume_runs = finished_runs($resume, 1);
$node->safe_psql('postgres', "SELECT cron.unschedule($resume)");
is($resume_runs, 'succeeded|1 row', 'cron ran the resume command once, and it resumed one job');
is(wait_job($node, $bjob), 'done', "the resumed background job $bjob finishes");
# pg_cron stamps a run's start_time only once its command is under way, hence the second's slack
# (the runs are a minute apart).
is( $node->safe_psql(
		'postgres', qq{
WITH p AS (SELECT end_time FROM cron.job_run_details WHERE jobid = $pause),
     r AS (SELECT start_time - interval '1 second' AS start_time
           FROM cron.job_run_details WHERE jobid = $resume)
SELECT string_agg(CASE WHEN t.finished_at < (SELECT end_time FROM p) THEN 'before the pause'
                       WHEN t.started_at > (SELECT start_time FROM r) THEN 'after the resume'
                       ELSE 'while paused' END, ', ' ORDER BY t.partition)
FROM backfill_tasks($bjob) t}),
	'before the pause, after the resume, after the resume',
	"job $bjob: one task before the cron pause, none while paused, the others after the cron resume");
is(table_equals($node, 'TABLE b', 'TABLE b_src'), '0|0', "job $bjob: b equals its source");

# ---------------------------------------------------------------------------------------------
# Two runs of the slice entry: two tasks, one per run; the job waits for the next run.
my $slice_runs = finished_runs($slice, 2);
is($slice_runs, "succeeded|CALL\nsucceeded|CALL", 'two slice runs, both succeeded');
is(status_of($job), 'pending|2|0|the next CALL backfill_run',
	"after two runs job $job has done two tasks and waits for the next CALL");

# A restart in between: nothing runs job $job by itself after the start (no worker); the next
# cron run goes on with it.
$node->restart;
is(status_of($job), 'pending|2|0|the next CALL backfill_run',
	"after a restart job $job still waits for the next CALL");
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'backfill worker'"),
	'0', 'no backfill worker runs it');

# From now on the entry is the lone CALL with max_duration only: the next run does both tasks
# left, committing after each: while it runs, the third task is seen done before the fourth is.
# (Scheduling by an existing name changes that entry; cron.alter_job came with pg_cron 1.4.)
is( $node->safe_psql(
		'postgres', qq{
SELECT cron.schedule('backfill-slice', '* * * * *',
                     \$\$CALL backfill_run($job, max_duration => '10 min')\$\$)}),
	$slice,
	'the slice entry now runs the job to its end');
my $seen = poll_for(
	qq{
SELECT CASE WHEN (SELECT state FROM backfill_status($job)) = 'done' THEN 'done'
            WHEN (SELECT tasks_done FROM backfill_status($job)) = 3
             AND EXISTS (SELECT FROM cron.job_run_details WHERE jobid = $slice
                         AND status NOT IN ('succeeded', 'failed')) THEN 'third task committed mid-run'
            ELSE 'waiting' END}, qr/^(done|third task committed mid-run)$/, 150);
is($seen, 'third task committed mid-run',
	'during the third run, the third task is committed while the run goes on');
$slice_runs = finished_runs($slice, 3);
$node->safe_psql('postgres', "SELECT cron.unschedule($slice)");
is($slice_runs, "succeeded|CALL\nsucceeded|CALL\nsucceeded|CALL",
	'three slice runs, all succeeded');
is(status_of($job), 'done|4|0|-', "job $job is done, no task failed");

# Each task ran within one cron run: the first two in runs 1 and 2, the last two in run 3.
# A run's span starts where the run before it ended, not at its start_time: pg_cron stamps
# start_time only once the command is under way, so a task can start a moment before it.
is( $node->safe_psql(
		'postgres', qq{
WITH runs AS (SELECT row_number() OVER (ORDER BY runid) AS n,
                     coalesce(lag(end_time) OVER (ORDER BY runid), '-infinity') AS after,
                     end_time
              FROM cron.job_run_details WHERE jobid = $slice)
SELECT string_agg(t.partition || ' ' || t.state || ' attempts ' || t.attempts || ' in run '
                  || coalesce((SELECT string_agg(n::text, ',') FROM runs
                               WHERE t.started_at > runs.after
                                 AND t.finished_at <= runs.end_time), 'none'),
                  ', ' ORDER BY t.partition)
FROM backfill_tasks($job) t}),
	'public.t_2024_01 done attempts 1 in run 1, public.t_2024_02 done attempts 1 in run 2, '
	  . 'public.t_2024_03 done attempts 1 in run 3, public.t_2024_04 done attempts 1 in run 3',
	'each task ran within one cron run: one per run, then the last two in the lone-CALL run')
  or diag(
	"cron runs:\n"
	  . $node->safe_psql('postgres',
		"SELECT runid, status, start_time, end_time FROM cron.job_run_details WHERE jobid = $slice ORDER BY runid")
	  . "\ntasks:\n"
	  . $node->safe_psql('postgres',
		"SELECT partition, state, started_at, finished_at FROM backfill_tasks($job) ORDER BY 1"));
is( $node->safe_psql(
		'postgres', qq{
SELECT bool_and(gap >= interval '55 seconds') FROM (
    SELECT start_time - lag(start_time) OVER (ORDER BY runid) AS gap
    FROM cron.job_run_details WHERE jobid = $slice) g WHERE gap IS NOT NULL}),
	't', 'the runs were a minute apart or more');
is(table_equals($node, 'TABLE t', 'TABLE t_src'), '0|0', "job $job: t equals its source");
is(leftover_relations($node, $job), '', "job $job left no shadow or old partition behind");
is($node->safe_psql('postgres', 'SELECT count(*) FROM cron.job'), '0', 'every cron entry is unscheduled');

note(sprintf('wall time %.0f s', time() - $t0));
$node->stop;
done_testing();
