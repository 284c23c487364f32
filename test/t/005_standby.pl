# A streaming standby (pg_basebackup of the primary) and a backfill on the primary.
#
# 1. A job over the 12 partitions of events: once it is done and the standby has replayed
#    everything, the standby's events equals the primary's exactly (as a multiset against the
#    source, by count, and by a digest of all rows in order), its partitions have the same
#    catalog properties, and it has no shadow, kept partition, task index or orphan data file.
# 2. Replaying a swap is replaying DDL: the swap's ACCESS EXCLUSIVE lock on events conflicts
#    with standby queries that hold a lock on events. With max_standby_streaming_delay = 2s, a
#    standby transaction that has read events and is still running (pg_sleep) is cancelled with
#    "canceling statement due to conflict with recovery" (pg_stat_database_conflicts.confl_lock
#    counts it) and replay then goes on; the delays are measured and printed.
# 3. With max_standby_streaming_delay = -1 replay waits for the standby transaction instead, as
#    long as it lasts (new standby queries on events queue behind the waiting replay); once the
#    transaction ends, replay catches up and the standby has the new rows.
#
# The figures (note lines) come out with, e.g.:
#   prove -v -I /usr/lib/postgresql/<major>/lib/pgxs/src/test/perl -I . test/t/005_standby.pl
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
$primary->append_conf('postgresql.conf', "max_worker_processes = 16\n");
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION backfill');
create_events($primary, 12000);

$primary->backup('base');    # pg_basebackup
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->append_conf('postgresql.conf', "max_standby_streaming_delay = 2s\n");
# The replay's waits in the log, for a failing run (the setting came with PostgreSQL 14).
$standby->append_conf('postgresql.conf', "log_recovery_conflict_waits = on\n")
  if $primary->safe_psql('postgres', 'SHOW server_version_num') >= 140000;
$standby->start;
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');
is($standby->safe_psql('postgres', 'SELECT count(*) FROM events'),
	'12000', 'the standby has the table as the base backup and the stream gave it');

# Digest of all rows of events in a fixed order, and their number.
sub digest
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		q{SELECT count(*) || ' ' || md5(string_agg(e::text, ';' ORDER BY id, day)) FROM events e});
}

# =============================================================================================
# 1. A whole job; the standby ends with exactly the primary's data.
my $source1 = q{SELECT id, day, amount + 1 AS amount FROM raw WHERE day >= $1 AND day < $2};
my $expected1 = q{SELECT id, day, amount + 1, 'fresh'::text, (amount + 1) * 2 FROM raw};
my $job = $primary->safe_psql('postgres',
	"SELECT backfill_start('events', '2024-01-01', '2025-01-01', \$src\$$source1\$src\$)");
is(wait_job($primary, $job), 'done', "job $job is done on the primary");
is(table_equals($primary, 'TABLE events', $expected1), '0|0', 'the primary has the source');
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));

is(table_equals($standby, 'TABLE events', $expected1),
	'0|0', 'the standby has exactly the source too (EXCEPT ALL both ways)');
is(digest($standby), digest($primary),
	'the standby has the same number of rows as the primary, the same rows in the same order');
is(catalog_snapshot($standby), catalog_snapshot($primary),
	'the partitions on the standby have the same properties as on the primary');
is(leftover_relations($standby, $job), '',
	'the standby has no shadow, kept old partition or task index');
is( $standby->safe_psql(
		'postgres', q{SELECT count(*) FROM pg_class WHERE relname LIKE 'bf\_shadow\_%'}),
	'0', 'the standby has no shadow table at all');
is($standby->safe_psql('postgres', "SELECT state FROM backfill.jobs WHERE id = $job"),
	'done', "the standby's control tables say job $job is done");
is(join(', ', orphan_files($standby)), '',
	'every data file on the standby belongs to a relation');

# =============================================================================================
# 2. A standby query holding a lock on events while the primary swaps a partition.

# Conflicts counted on the standby for database postgres: lock conflicts.
sub lock_conflicts
{
	return $standby->safe_psql('postgres',
		"SELECT confl_lock FROM pg_stat_database_conflicts WHERE datname = 'postgres'");
}

sub replay_lsn_reached
{
	my ($lsn) = @_;
	return $standby->safe_psql('postgres',
		"SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn");
}

# Starts a one-partition job on the primary and waits until it is done there; returns the job,
# the time it was done and the primary's WAL position then.
sub swap_january
{
	my ($n) = @_;
	my $job = $primary->safe_psql('postgres',
		"SELECT backfill_start('events', '2024-01-01', '2024-02-01', "
		  . "'SELECT id, day, amount + $n AS amount FROM raw WHERE day >= \$1 AND day < \$2')");
	is(wait_job($primary, $job), 'done', "job $job (January, amount + $n) is done on the primary");
	return ($job, Time::HiRes::time(), $primary->lsn('insert'));
}

my $conflicts_before = lock_conflicts();
my $reader = $standby->background_psql('postgres', on_error_stop => 0);
$reader->query_safe('BEGIN; SELECT count(*) FROM events');
$reader->query_until(qr/sleeping/, "\\echo sleeping\nSELECT pg_sleep(300);\n");
my $log_offset = -s $standby->logfile;
my $started = Time::HiRes::time();
my ($job2, $done2, $lsn2) = swap_january(2);

# The reader's pg_sleep ends by being cancelled; the replay of the swap goes on after it.
my ($cancelled, $replayed);
my $deadline = time() + 60;
while (!($cancelled && $replayed) && time() < $deadline)
{
	$reader->{run}->pump_nb;
	$cancelled //= Time::HiRes::time() if $reader->{stderr} =~ /conflict with recovery/;
	$replayed //= Time::HiRes::time() if replay_lsn_reached($lsn2) eq 't';
	Time::HiRes::sleep(0.02);
}
like($reader->{stderr}, qr/ERROR:  canceling statement due to conflict with recovery/,
	'with max_standby_streaming_delay = 2s the standby query is cancelled: conflict with recovery');
like($reader->{stderr}, qr/DETAIL:  User was holding a relation lock for too long/,
	'the conflict is on a relation lock (the swap\'s ACCESS EXCLUSIVE)');
ok($replayed, 'after the cancel the standby replays the swap');
note("the standby query's error: $reader->{stderr}");
$reader->{stderr} = '';
# The startup process may signal the session again once it is idle in its aborted transaction,
# which ends the session instead: either is the conflict doing its job.
note('the conflict also ended the standby session')
  unless eval { $reader->query_safe('ROLLBACK'); 1 };
eval { $reader->quit };
ok($standby->poll_query_until('postgres',
		"SELECT confl_lock > $conflicts_before FROM pg_stat_database_conflicts WHERE datname = 'postgres'"),
	'pg_stat_database_conflicts.confl_lock counts the lock conflict');

my $waited = '';
if ($standby->log_contains(qr/recovery finished waiting after [\d.]+ ms: recovery conflict on lock/, $log_offset))
{
	($waited) = slurp_file($standby->logfile, $log_offset)
	  =~ /recovery finished waiting after ([\d.]+) ms: recovery conflict on lock/;
}
note(sprintf(
	'max_standby_streaming_delay = 2s: the standby query was cancelled %.2f s after the job '
	  . 'started on the primary (%.2f s after it was done there); the standby replayed the '
	  . 'swap %.2f s after the primary had done it%s',
	($cancelled // 0) - $started, ($cancelled // 0) - $done2, ($replayed // 0) - $done2,
	$waited ? "; the standby's log: replay waited $waited ms for the conflicting lock" : ''));
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is(digest($standby), digest($primary), 'then the standby has exactly the primary\'s rows');

# =============================================================================================
# 3. max_standby_streaming_delay = -1: replay waits for the standby query as long as it lasts.
$standby->append_conf('postgresql.conf', "max_standby_streaming_delay = -1\n");
$standby->reload;
is($standby->safe_psql('postgres', 'SHOW max_standby_streaming_delay'), '-1',
	'max_standby_streaming_delay is now -1 (wait forever)');
$conflicts_before = lock_conflicts();
my $old_digest = digest($standby);
$reader = $standby->background_psql('postgres');
$reader->query_safe('BEGIN; SELECT count(*) FROM events');
my ($job3, $done3, $lsn3) = swap_january(3);

# For 5 s after the primary is done, the standby has not replayed the swap (a slower standby can
# only take longer).
my $behind_since = Time::HiRes::time();
my $caught_up = 0;
while (Time::HiRes::time() - $behind_since < 5)
{
	$caught_up = 1 if replay_lsn_reached($lsn3) eq 't';
	Time::HiRes::sleep(0.1);
}
is($caught_up, 0, 'the standby has not replayed the swap 5 s after the primary did it: replay waits');
my $lag = $standby->safe_psql('postgres',
	q{SELECT round(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::numeric, 1)});
my $bytes_behind = $standby->safe_psql('postgres',
	"SELECT pg_wal_lsn_diff('$lsn3', pg_last_wal_replay_lsn())");
like( $standby->safe_psql(
		'postgres', q{SELECT wait_event_type || ' ' || wait_event FROM pg_stat_activity
		              WHERE backend_type = 'startup'}),
	qr/^Lock relation$/,
	'the startup process waits for a relation lock');
my $replay_waits_for = $standby->safe_psql(
	'postgres', q{SELECT string_agg(DISTINCT l.relation::regclass::text || ' ' || l.mode, ', ')
	              FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
	              WHERE a.backend_type = 'startup' AND NOT l.granted});
note("replay waits for: $replay_waits_for");
like($replay_waits_for,
	qr/^(events|parts\.events_2024_01) AccessExclusiveLock$/,
	'the lock replay waits for is the ACCESS EXCLUSIVE lock of the swap on events or its January partition');

# A new query on events on the standby queues behind the waiting replay.
my ($ret, $out, $err) = $standby->psql('postgres',
	"SET statement_timeout = '500ms'; SELECT count(*) FROM events");
like($err, qr/canceling statement due to statement timeout/,
	'a new standby query on events queues behind the waiting replay (cut by its statement_timeout)');
is($reader->query_safe('SELECT count(*) FROM events'), '12000',
	'the long standby transaction still reads events');
my $commit_at = Time::HiRes::time();
$reader->query_safe('COMMIT');
$reader->quit;
ok($standby->poll_query_until('postgres', "SELECT pg_last_wal_replay_lsn() >= '$lsn3'::pg_lsn"),
	'once the standby transaction ends, the standby replays the swap');
my $after_commit = Time::HiRes::time() - $commit_at;
is(lock_conflicts(), $conflicts_before, 'no query was cancelled this time');
note(sprintf(
	'max_standby_streaming_delay = -1: %.1f s after the primary had done the swap the standby '
	  . 'was still %s bytes of WAL behind, its last replayed transaction %s s old; '
	  . 'it replayed the swap %.2f s after the standby transaction ended',
	Time::HiRes::time() - $done3 - $after_commit, $bytes_behind, $lag, $after_commit));
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
isnt(digest($standby), $old_digest, 'the standby has the new January rows');
is(digest($standby), digest($primary), 'the standby has exactly the primary\'s rows');
is( table_equals(
		$standby, "SELECT * FROM events WHERE day < '2024-02-01'",
		q{SELECT id, day, amount + 3, 'fresh'::text, (amount + 3) * 2 FROM raw WHERE day < '2024-02-01'}),
	'0|0',
	'January on the standby is the last job\'s source');
is(leftover_relations($standby, $job3), '', 'no shadow or old partition on the standby');

$standby->stop;
$primary->stop;
done_testing();
