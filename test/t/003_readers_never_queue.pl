# A swap never stalls readers. A session holds a long transaction that has read the parent
# (ACCESS SHARE on events and all its partitions), so the swap of the first task cannot get its
# ACCESS EXCLUSIVE lock: each attempt waits at most lock_timeout, gives up its place in the lock
# queue, backs off and tries again, showing the blocker in waiting_on.
#
# 1. Meanwhile 100 new queries through the parent, each reading a random day, all get their
#    (unchanged) answers, and the slowest waits less than lock_timeout plus a margin (< 1 s);
#    some of them did queue behind an attempt (else the test would show nothing). waiting_on,
#    read between the readers, names the long transaction every time, lock attempts included
#    (a DBA watching never sees it blank while the swap waits). When the long
#    transaction ends, the job finishes: done, the data equal to the source.
# 2. With a blocker that outlasts swap_wait (3 s), the task fails naming the blocker; the old
#    partition is intact (same relation, same rows; its write-noting triggers stay while the
#    blocker holds it, named in the error) and no shadow is left. Once the blocker is gone,
#    backfill_resume drops the triggers and finishes the job.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use List::Util qw(max sum);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

my $node = new_node('readers');
create_events($node, 24000);

my $readers        = 100;
my $reader_limit_s = 1.0;     # lock_timeout (200ms) plus a margin: no reader waits a second
my $queued_ms      = 50;      # a reader that took this long met a swap attempt in the queue
# The readers run one after another, 30 ms apart, for about 3.5 s: the one that arrives while an
# attempt waits in the lock queue waits with it until the attempt gives up, so each attempt
# (0.2 s, then a backoff of 0.1, 0.2, 0.4 ... 5 s) delays about one reader.

# A session inside a transaction that has read the parent; returns it and its pid.
sub long_reader
{
	my $session = $node->background_psql('postgres');
	my $pid = $session->query_safe('SELECT pg_backend_pid()');
	$session->query_safe('BEGIN; SELECT count(*) FROM events');
	return ($session, $pid);
}

# Polls until the job's waiting_on names the blocker as the holder of the lock it waits for.
sub waits_for_blocker
{
	my ($job, $pid) = @_;
	return $node->poll_query_until('postgres',
		"SELECT waiting_on LIKE 'lock: %pid $pid (%' FROM backfill_status($job)");
}

# The triggers backfill puts on the partitions of events while it builds their shadows.
sub write_triggers
{
	return $node->safe_psql(
		'postgres', q{
SELECT string_agg(t.tgrelid::regclass || ': ' || t.tgname, ', ' ORDER BY t.tgname)
FROM pg_trigger t JOIN pg_inherits i ON i.inhrelid = t.tgrelid
WHERE i.inhparent = 'events'::regclass AND t.tgname LIKE 'bf\\_%'});
}

# The nearest-rank percentile of a sorted list.
sub percentile
{
	my ($p, @sorted) = @_;
	my $rank = int($p / 100 * @sorted + 0.999999);
	$rank = 1 if $rank < 1;
	return $sorted[ $rank - 1 ];
}

# =============================================================================================
# 1. A blocker that ends within swap_wait, readers meanwhile.
$node->safe_psql('postgres', 'CREATE TABLE snap1 AS TABLE events');
my %rows_of_day = split /[|\n]/,
  $node->safe_psql('postgres', 'SELECT day, count(*) FROM snap1 GROUP BY day');
my @days = sort keys %rows_of_day;

my ($blocker, $blocker_pid) = long_reader();
my $source1 = q{SELECT id, day, amount + 1 AS amount FROM raw WHERE day >= $1 AND day < $2};
my $job = $node->safe_psql('postgres',
	qq{SELECT backfill_start('events', '2024-01-01', '2025-01-01', \$src\$$source1\$src\$,
	                         lock_timeout => '200ms', swap_wait => '30s')});

ok(waits_for_blocker($job, $blocker_pid),
	"the swap waits for the locks, waiting_on names the long transaction (pid $blocker_pid)");
is( $node->safe_psql(
		'postgres',
		"SELECT state || ' ' || phase FROM backfill.tasks WHERE job = $job AND task_no = 1"),
	'running indexed',
	'task 1 has built and indexed its shadow: it is at its swap');

my $reader = $node->background_psql('postgres');
my (@latencies, @wrong, %waiting_on_seen);
for my $n (1 .. $readers)
{
	# Between the readers, what the job says it waits for: the lock, during attempts too.
	my $waiting_on = job_status($node, $job, 'waiting_on');
	$waiting_on =~ s/^lock: .*pid $blocker_pid \(.*/lock: the long transaction/s;
	$waiting_on_seen{$waiting_on}++;

	my $day     = $days[ int(rand(@days)) ];
	my $started = Time::HiRes::time();
	my $count   = $reader->query_safe("SELECT count(*) FROM events WHERE day = '$day'");
	push @latencies, Time::HiRes::time() - $started;
	push @wrong, "$day: $count rows, not $rows_of_day{$day}" if $count ne $rows_of_day{$day};
	Time::HiRes::sleep(0.03);
}
$reader->quit;

my @sorted = sort { $a <=> $b } @latencies;
my $worst  = $sorted[-1];
my $queued = grep { $_ * 1000 >= $queued_ms } @latencies;
diag(
	sprintf(
		'%d readers through the parent while the swap was due (lock_timeout 200ms): '
		  . 'p50 %.1f ms, p99 %.1f ms, worst %.1f ms, mean %.1f ms; %d took %d ms or more',
		$readers, 1000 * percentile(50, @sorted), 1000 * percentile(99, @sorted),
		1000 * $worst, 1000 * sum(@latencies) / @latencies, $queued, $queued_ms));
is(join('; ', @wrong), '', "all $readers readers got the rows of the old partitions");
cmp_ok($worst, '<', $reader_limit_s,
	"the slowest of the $readers readers took less than ${reader_limit_s}s");
cmp_ok($queued, '>=', 1,
	"readers did meet the swap's lock requests (at least one took ${queued_ms}ms or more)");
is(join(', ', sort keys %waiting_on_seen), 'lock: the long transaction',
	"waiting_on named the long transaction each of the $readers times it was read, "
	  . 'lock attempts included');
like(job_status($node, $job, 'state, tasks_done, waiting_on'),
	qr/^running\|0\|lock: .*pid $blocker_pid \(/,
	'after the readers, the job still waits for the long transaction, no task done');

$blocker->query_safe('COMMIT');
$blocker->quit;
is(wait_job($node, $job), 'done', 'once the long transaction ends, the job is done');
is(tasks_actual($node, $job), tasks_expected($node, 'TABLE snap1', 'TABLE raw'),
	'every task done once, rows_before/rows_after right, swap_lock_ms > 0');
is(table_equals($node, 'TABLE events', events_recomputed('amount + 1')),
	'0|0', 'events equals the source');
is(leftover_relations($node, $job), '', 'no shadow or old partition left');
is(write_triggers(), '', 'no write-noting trigger left');
my $max_lock_ms =
  $node->safe_psql('postgres', "SELECT max(swap_lock_ms) FROM backfill_tasks($job)");
diag("longest swap lock hold of the 12 tasks: $max_lock_ms ms");
cmp_ok($max_lock_ms, '<', 1000, 'each swap held its locks for less than a second');

# =============================================================================================
# 2. A blocker that outlasts swap_wait: the task fails naming it, nothing changed; resumable.
$node->safe_psql('postgres', 'CREATE TABLE snap2 AS TABLE events');
my $catalog_before = catalog_snapshot($node);
my $oid_before =
  $node->safe_psql('postgres', q{SELECT 'parts.events_2024_01'::regclass::oid});

($blocker, $blocker_pid) = long_reader();
my $source2 = q{SELECT id, day, amount + 2 AS amount FROM raw WHERE day >= $1 AND day < $2};
$job = $node->safe_psql('postgres',
	qq{SELECT backfill_start('events', '2024-01-01', '2025-01-01', \$src\$$source2\$src\$,
	                         lock_timeout => '200ms', swap_wait => '3s')});
ok(waits_for_blocker($job, $blocker_pid),
	"the swap waits for the locks, waiting_on names the blocker (pid $blocker_pid)");
my $started = Time::HiRes::time();
is($node->safe_psql('postgres', "SELECT backfill_wait($job, '60s')"),
	'failed', 'the blocker outlasts swap_wait: the job fails');
note(sprintf('the job failed %.1f s after its swap was first seen waiting',
		Time::HiRes::time() - $started));

like(
	$node->safe_psql(
		'postgres',
		"SELECT state || ' | ' || error FROM backfill_tasks($job) WHERE partition = 'parts.events_2024_01'"
	),
	qr/^failed \| could not get the locks to swap partition parts\.events_2024_01 within swap_wait \(Held by: .*pid $blocker_pid \(/,
	'task 1 failed, naming the blocker');
like(job_status($node, $job, 'last_error'),
	qr/pid $blocker_pid \(/, 'so does the last_error of the job');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(state, ' ' ORDER BY partition) FROM backfill_tasks($job)"),
	'failed' . ' pending' x 11,
	'the other tasks did not run');
is( $node->safe_psql(
		'postgres', q{
SELECT c.oid || ' ' || i.inhparent::regclass::text FROM pg_class c
JOIN pg_inherits i ON i.inhrelid = c.oid WHERE c.oid = 'parts.events_2024_01'::regclass}),
	"$oid_before events",
	'events_2024_01 is the same relation as before, still a partition of events');
is(table_equals($node, 'TABLE events', 'TABLE snap2'),
	'0|0', 'events holds the same rows as before the job');
# Dropping the write-noting triggers needs the lock the blocker still holds: they stay (they
# only note writes), and the error says so and what removes them.
like(write_triggers(), qr/bf_writes_${job}_1/,
	'the write-noting triggers stay while the blocker holds events_2024_01');
like(
	$node->safe_psql(
		'postgres',
		"SELECT error FROM backfill_tasks($job) WHERE partition = 'parts.events_2024_01'"),
	qr/its write-noting triggers bf_writes_${job}_1 and bf_truncate_${job}_1 stay on the partition until backfill_resume or backfill_cancel/,
	'the task error names them and what drops them');
is(leftover_relations($node, $job), '', 'no shadow left');

$blocker->query_safe('COMMIT');
$blocker->quit;
$node->safe_psql('postgres', "SELECT backfill_resume($job)");
is(wait_job($node, $job), 'done', 'after the blocker ended, backfill_resume finishes the job');
is(write_triggers(), '', 'no write-noting trigger is left after the resume');
is( tasks_actual($node, $job),
	tasks_expected($node, 'TABLE snap2', 'TABLE raw', 'parts.events_2024_01' => 2),
	'every task done once: attempts 1, except the failed and resumed task 1 (2)');
is(table_equals($node, 'TABLE events', events_recomputed('amount + 2')),
	'0|0', 'events equals the source');
is(leftover_relations($node, $job), '', 'no shadow or old partition left');
is(catalog_snapshot($node), $catalog_before, 'every partition property carried over');

$node->stop;
done_testing();
