# Soak: a job of 200 small (daily) partitions whose worker is killed with kill -9 at random
# moments, again and again. backfill is preloaded and restart_after_crash is on, so each kill
# means crash recovery of the whole server, after which the launcher resumes the job by itself.
#
# Each job (a "round") must end done with every partition replaced exactly once: it runs with
# keep_old => true, so each replaced partition is kept, detached, as <partition>_bf<job>; there
# must be exactly one such table per partition, holding exactly that partition's rows from before
# the job (a second replacement would have kept a table of new rows, or failed on the name). Also:
# every task done, with the right rows_before and rows_after and a swap_lock_ms, and no more
# attempts in all than tasks plus kills (a kill interrupts at most the one task under way); after
# each kill the launcher resumed the job; never two workers at once; the 200 partitions still
# there with their bounds; no shadow, task index or write-noting trigger (on a partition or a kept
# table) left; no data file that belongs to no relation; the data equal to the source. Then
# backfill_drop_old drops the kept tables, and the next round starts, until the kills are made.
#
# The number of kills is BACKFILL_SOAK_KILLS (default 5, for CI: well under 2 minutes). A long
# soak, for as many rounds as it takes, as the postgres OS user in a copy of the tree it owns,
# after make install:
#   BACKFILL_SOAK_KILLS=200 make installcheck REGRESS= ISOLATION= PROVE_TESTS=test/t/006_soak.pl
# or directly with prove (PG_REGRESS must name pg_regress):
#   BACKFILL_SOAK_KILLS=200 prove -I /usr/lib/postgresql/<major>/lib/pgxs/src/test/perl -I . test/t/006_soak.pl
# The kill moments are random; BACKFILL_SOAK_SEED=N repeats a run's sequence of delays (the seed
# is printed).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

my $kills_wanted = $ENV{BACKFILL_SOAK_KILLS} || 5;
my $seed         = $ENV{BACKFILL_SOAK_SEED}  || int(rand(1_000_000));
my $partitions   = 200;
my $rows_per_day = 10;
my $max_delay_s  = 1.0;    # a kill lands 0 .. 1 s after the worker is seen running
srand($seed);
note("soak: $kills_wanted kills, seed $seed (BACKFILL_SOAK_SEED=$seed repeats the delays)");

my $node = new_node('soak');
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'backfill'\n");
$node->restart;

# days: RANGE (day), 200 daily partitions days_YYYYMMDD from 2024-01-01, PK (id, day), an
# index on the parent, a default. raw_days: the rows, 10 a day; days starts as raw_days.
$node->safe_psql(
	'postgres', qq{
CREATE TABLE raw_days (id bigint NOT NULL, day date NOT NULL, amount int NOT NULL);
INSERT INTO raw_days SELECT g, date '2024-01-01' + (g % $partitions)::int, g % 1000
  FROM generate_series(1, $partitions * $rows_per_day) g;
CREATE TABLE days (
    id     bigint NOT NULL,
    day    date   NOT NULL,
    amount int    NOT NULL,
    note   text   NOT NULL DEFAULT 'fresh',
    PRIMARY KEY (id, day)
) PARTITION BY RANGE (day);
CREATE INDEX days_amount_idx ON days (amount);
DO \$\$
DECLARE
    d date;
BEGIN
    FOR i IN 0 .. $partitions - 1 LOOP
        d := date '2024-01-01' + i;
        EXECUTE format('CREATE TABLE %I PARTITION OF days FOR VALUES FROM (%L) TO (%L)',
                       'days_' || to_char(d, 'YYYYMMDD'), d, d + 1);
    END LOOP;
END
\$\$;
INSERT INTO days (id, day, amount, note) SELECT id, day, amount, 'old' FROM raw_days;
ANALYZE raw_days, days;
});
my $range_to = $node->safe_psql('postgres', "SELECT date '2024-01-01' + $partitions");

# The partitions of days with their bounds, one a line.
sub partition_list
{
	return $node->safe_psql(
		'postgres', q{
SELECT string_agg(c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid), E'\n' ORDER BY c.relname)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'days'::regclass});
}
my $partitions_before = partition_list();
is(scalar(split /\n/, $partitions_before), $partitions, "days has $partitions partitions");
is(join(', ', orphan_files($node)), '', 'before any job, every data file belongs to a relation');

sub ended
{
	my ($job) = @_;
	return stored_job_state($node, $job) =~ /^(done|failed|cancelled)$/;
}

# Waits until one worker runs the job (returns its pid) or the job has ended (returns undef).
# Counts the times more than one worker was seen.
my $two_workers_seen = 0;

sub running_worker
{
	my ($job) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		my @pids = worker_pids($node);
		$two_workers_seen++ if @pids > 1;
		return $pids[0] if @pids == 1 && !ended($job);
		return undef if ended($job);
		Time::HiRes::sleep(0.02);
	}
	die "job $job: no worker and not ended after $PostgreSQL::Test::Utils::timeout_default s";
}

# After crash recovery: waits until the launcher has said it resumes the job, or the job had
# ended anyway (a kill just after it finished). Returns whether the launcher resumed it.
sub launcher_resumed
{
	my ($job, $log_offset) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_offset);
		return 1 if $log =~ /backfill: resuming job $job in database \d+ after a server start/;
		return 0 if ended($job);
		Time::HiRes::sleep(0.05);
	}
	return 0;
}

# Whether the postmaster saw the worker die of the kill. A worker that had just ended the job
# may have exited already (a process not yet reaped still takes a signal): no crash follows.
sub killed_by_signal
{
	my ($pid, $log_offset) = @_;
	my $deadline = time() + 10;
	while (time() < $deadline)
	{
		my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_offset);
		return 1 if $log =~ /\(PID $pid\) was terminated by signal 9/;
		return 0 if $log =~ /\(PID $pid\) exited with exit code/;
		Time::HiRes::sleep(0.05);
	}
	return 0;
}

my $kills_made = 0;
my $round      = 0;
my %crash_seconds;

while ($kills_made < $kills_wanted)
{
	$round++;
	my $factor = $round + 1;
	$node->safe_psql('postgres', 'DROP TABLE IF EXISTS snap; CREATE TABLE snap AS TABLE days');
	my $job = $node->safe_psql(
		'postgres', qq{
SELECT backfill_start('days', '2024-01-01', '$range_to',
       'SELECT id, day, amount * $factor AS amount FROM raw_days WHERE day >= \$1 AND day < \$2',
       keep_old => true, pause => '10ms')});
	my $started = Time::HiRes::time();
	my ($kills, $not_resumed) = (0, 0);
	my @progress;

	while ($kills_made < $kills_wanted)
	{
		my $pid = running_worker($job) // last;
		my $log_offset = -s $node->logfile;
		Time::HiRes::sleep(rand($max_delay_s));
		my $done = $node->safe_psql('postgres',
			"SELECT count(*) FROM backfill.tasks WHERE job = $job AND state = 'done'");
		# Every other kill waits, after its random delay, until a task is under way (else
		# a good part of the kills would land between tasks, in the pause).
		$node->poll_query_until('postgres',
			"SELECT count(*) FILTER (WHERE state = 'running') > 0 "
			  . "OR count(*) FILTER (WHERE state <> 'done') = 0 FROM backfill.tasks WHERE job = $job")
		  if $kills_made % 2;
		next unless kill('KILL', $pid);    # the worker had exited (the job ended, as the next look shows)
		my $killed_at = Time::HiRes::time();
		next unless killed_by_signal($pid, $log_offset);    # it was exiting, the job done
		$kills++;
		$kills_made++;
		push @progress, $done;
		$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
		$node->poll_query_until('postgres', 'SELECT 1', '1') or die 'server did not come back';
		$crash_seconds{ $kills_made } = Time::HiRes::time() - $killed_at;
		$not_resumed++ unless launcher_resumed($job, $log_offset) || ended($job);
	}
	$node->poll_query_until('postgres',
		"SELECT state IN ('done', 'failed', 'cancelled') FROM backfill.jobs WHERE id = $job")
	  or diag("round $round: job $job did not end");
	note(sprintf('round %d: job %d, %d kills (with %s tasks done), ended after %.1f s',
		$round, $job, $kills, join(', ', @progress) || '-', Time::HiRes::time() - $started));

	is(wait_job($node, $job, 60), 'done', "round $round: job $job ends done after $kills kills");
	is($not_resumed, 0, "round $round: after each kill the launcher resumed the job by itself");
	is($two_workers_seen, 0, "round $round: never two workers at once");
	is( $node->safe_psql(
			'postgres',
			"SELECT tasks_total || ' ' || tasks_done || ' ' || tasks_failed FROM backfill_status($job)"),
		"$partitions $partitions 0",
		"round $round: all $partitions tasks done");
	my ($attempts, $max_attempts) = split /\|/,
	  $node->safe_psql('postgres',
		"SELECT sum(attempts), max(attempts) FROM backfill.tasks WHERE job = $job");
	note("round $round: $attempts attempts for $partitions tasks (at most $max_attempts for one): "
		  . ($attempts - $partitions) . " of the $kills kills interrupted a task");
	cmp_ok($attempts, '<=', $partitions + $kills,
		"round $round: no more attempts than tasks plus kills");
	is( $node->safe_psql(
			'postgres', qq{
WITH b AS (SELECT day, count(*) AS n FROM snap GROUP BY day),
     a AS (SELECT day, count(*) AS n FROM raw_days GROUP BY day)
SELECT count(*) FROM backfill_tasks($job) t
LEFT JOIN b ON b.day = t.lower_bound::date LEFT JOIN a ON a.day = t.lower_bound::date
WHERE t.state <> 'done' OR t.attempts < 1 OR t.rows_before IS DISTINCT FROM coalesce(b.n, 0)
   OR t.rows_after IS DISTINCT FROM coalesce(a.n, 0)}),
		'0',
		"round $round: every task done, with rows_before and rows_after right");
	is( $node->safe_psql(
			'postgres',
			"SELECT coalesce(string_agg(partition, ', '), 'none') FROM backfill_tasks($job) "
			  . "WHERE swap_lock_ms IS NULL OR swap_lock_ms <= 0"),
		'none',
		"round $round: every task has its swap_lock_ms");

	# Exactly one kept table per partition, detached, named after it, with its rows from before.
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*) || ' ' || count(*) FILTER (WHERE c.relispartition)
FROM pg_class c WHERE c.relkind = 'r' AND c.relname ~ '^days_\\d{8}_bf$job\$'}),
		"$partitions 0",
		"round $round: $partitions kept old tables, none attached");
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*) FROM pg_class c WHERE c.relkind = 'r' AND c.relname ~ '^days_\\d{8}_bf$job\$'
   AND c.relname NOT IN (SELECT p.relname || '_bf$job' FROM pg_inherits i
                         JOIN pg_class p ON p.oid = i.inhrelid WHERE i.inhparent = 'days'::regclass)}),
		'0',
		"round $round: each kept table is named after a partition: one per partition");
	$node->safe_psql(
		'postgres', qq{
DROP TABLE IF EXISTS kept;
CREATE TABLE kept (relname name, LIKE days);
DO \$\$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT relname FROM pg_class WHERE relkind = 'r' AND relname ~ '^days_\\d{8}_bf$job\$' LOOP
        EXECUTE format('INSERT INTO kept SELECT %L, * FROM %I', r.relname, r.relname);
    END LOOP;
END
\$\$;
});
	is( table_equals(
			$node, 'SELECT * FROM kept',
			"SELECT 'days_' || to_char(day, 'YYYYMMDD') || '_bf$job', * FROM snap"),
		'0|0',
		"round $round: each kept table holds exactly its partition's rows from before the job");

	is(partition_list(), $partitions_before, "round $round: the $partitions partitions, same bounds");
	is( table_equals(
			$node, 'TABLE days',
			"SELECT id, day, amount * $factor, 'fresh'::text FROM raw_days"),
		'0|0',
		"round $round: days equals the source");
	# (the kept tables keep their indexes, named bf_<job>_<task>_old_...)
	is( $node->safe_psql(
			'postgres', qq{
SELECT count(*) FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid
LEFT JOIN pg_class t ON t.oid = i.indrelid
WHERE c.relname LIKE 'bf\\_shadow\\_%'
   OR (c.relname LIKE 'bf\\_${job}\\_%' AND coalesce(t.relname, '') !~ '^days_\\d{8}_bf$job\$')}),
		'0', "round $round: no shadow or task index left");
	is( $node->safe_psql(
			'postgres',
			q{SELECT coalesce(string_agg(tgrelid::regclass || ': ' || tgname, ', ' ORDER BY tgname), 'none')
			  FROM pg_trigger WHERE tgname LIKE 'bf\_%'}),
		'none', "round $round: no write-noting trigger left (on a partition or a kept table)");
	is(join(', ', orphan_files($node)), '', "round $round: every data file belongs to a relation");

	$node->safe_psql('postgres', "DROP TABLE kept; SELECT backfill_drop_old($job)");
	is( $node->safe_psql(
			'postgres',
			"SELECT count(*) FROM pg_class WHERE relname ~ '_bf$job\$' OR relname LIKE 'bf\\_${job}\\_%'"),
		'0', "round $round: backfill_drop_old drops the kept tables and their indexes");
}

is($kills_made, $kills_wanted, "$kills_made kills made over $round rounds");
my @crash = sort { $a <=> $b } values %crash_seconds;
note(sprintf('crash recovery after a kill took %.2f s at most, %.2f s at the median',
		$crash[-1], $crash[ int(@crash / 2) ])) if @crash;
my $stray = () = PostgreSQL::Test::Utils::slurp_file($node->logfile) =~ /backfill: removing the files of \d+ relations that no relation owns/g;
note("runs that removed stray relation files left by a kill: $stray");
is(join(', ', orphan_files($node)), '', 'at the end, every data file belongs to a relation');

$node->stop;
done_testing();
