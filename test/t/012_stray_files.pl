# Files of relations that never committed: a crash (or a failover, or a restore) ends the
# transaction of a step that creates relations without removing their files. The next run of
# the job removes exactly those, and never a file some transaction alive now may still own.
#
# 1. Crash: the worker is killed with kill -9 while it builds the shadow's indexes (an index on
#    a slow expression holds it there). Meanwhile, after the task started: a table created and
#    committed, and a table created by a transaction that is then prepared (two-phase commit; it
#    survives the crash). After the crash restart, before backfill_resume: a session creates a
#    table and keeps its transaction open, and another session is held inside CREATE TABLE
#    after PostgreSQL created the table's file and before any catalog row names it (an
#    uncommitted type of the same name holds it there). backfill_resume then removes the
#    killed step's files (the log says how many), and every other table is intact: the prepared
#    and the open transactions commit, the held CREATE TABLE completes, and each table has its
#    rows, also after a CHECKPOINT (which would delete a file wrongly handed to it).
# 2. Failover: a streaming standby replays the start of the index step (the files it creates);
#    the primary stops (immediate) and the standby is promoted. There those replayed files are
#    present, and backfill_resume removes them too: no data file without a relation is left.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf', q{
max_worker_processes = 16
max_prepared_transactions = 4
restart_after_crash = on
});
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION backfill');
create_events($primary, 12000);

# An index on a slow expression: building it on a shadow of 1000 rows takes 2 s once the sleep
# is set, which holds the worker inside the step that creates the shadow's indexes.
$primary->safe_psql(
	'postgres', q{
CREATE TABLE slow (seconds float8 NOT NULL);
INSERT INTO slow VALUES (0);
GRANT SELECT ON slow TO PUBLIC;    -- indexes are built as the table owner
CREATE FUNCTION slow_key(bigint) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM pg_catalog.pg_sleep(seconds) FROM public.slow;
    RETURN $1;
END $$;
CREATE INDEX events_slow_idx ON events (slow_key(id));
});
is(join(', ', orphan_files($primary)), '', 'before any job, every data file belongs to a relation');

$primary->backup('before');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'before', has_streaming => 1);
$standby->start;

# Starts a job multiplying amount by $factor; returns its id.
sub start_job
{
	my ($factor) = @_;
	return $primary->safe_psql('postgres',
		"SELECT backfill_start('events', '2024-01-01', '2025-01-01', "
		  . "\$\$SELECT id, day, amount * $factor AS amount FROM raw WHERE day >= \$1 AND day < \$2\$\$)");
}

sub expected
{
	my ($factor) = @_;
	return "SELECT id, day, amount * $factor, 'fresh'::text, amount * $factor * 2 FROM raw";
}

# Waits until the job's worker builds an index of a shadow; returns the worker's pid and the
# task it works on.
sub wait_index_build
{
	my ($node, $job) = @_;
	$node->poll_query_until(
		'postgres', q{
SELECT count(*) > 0 FROM pg_stat_progress_create_index p
JOIN pg_stat_activity a USING (pid) WHERE a.backend_type = 'backfill worker'})
	  or die 'no backfill worker builds an index';
	return split /\|/, $node->safe_psql(
		'postgres', qq{
SELECT a.pid, t.task_no FROM pg_stat_activity a, backfill.tasks t
WHERE a.backend_type = 'backfill worker' AND t.job = $job AND t.state = 'running'});
}

# The orphan files (see orphan_files) of relation file numbers not in the list given.
sub orphans_except
{
	my ($node, @known) = @_;
	my %known = map { $_ => 1 } @known;
	return grep { /^(\d+)/; !$known{$1} } orphan_files($node);
}

# The file numbers of the relations whose files the runs logged since $offset they remove,
# sorted, and the same of a list of orphan files.
sub stray_removals
{
	my ($node, $offset) = @_;
	my @details = slurp_file($node->logfile, $offset) =~
	  /backfill: removing the files of \d+ relations that no relation owns.*\n.*DETAIL:  Tablespace\/file numbers: (.*)\./g;
	return join(' ', sort map { m{/(\d+)$} } map { split /, / } @details);
}

sub file_numbers
{
	my %n = map { /^(\d+)/; $1 => 1 } @_;
	return join(' ', sort keys %n);
}

# =============================================================================================
# 1. Crash.
$primary->safe_psql('postgres', 'UPDATE slow SET seconds = 0.002');
my $job = start_job(3);
my ($pid, $task) = wait_index_build($primary, $job);
note("job $job: worker $pid builds the indexes of task $task");
my $files_from = $primary->safe_psql('postgres',
	"SELECT files_from FROM backfill.tasks WHERE job = $job AND task_no = $task");

# Relations made while the task runs: their file numbers come after the task's first one.
$primary->safe_psql('postgres', 'CREATE TABLE committed_table AS SELECT g FROM generate_series(1, 2000) g');
my $prepared_file = $primary->safe_psql(
	'postgres', q{
BEGIN;
CREATE TABLE prepared_table AS SELECT g FROM generate_series(1, 5000) g;
SELECT pg_relation_filenode('prepared_table');
PREPARE TRANSACTION 'made_before_the_crash';
});
cmp_ok($prepared_file, '>=', $files_from,
	"the prepared table's file number ($prepared_file) is at or above the task's first ($files_from)");
is($primary->safe_psql('postgres', "SELECT state FROM backfill.tasks WHERE job = $job AND task_no = $task"),
	'running', "task $task is still building its indexes");

my $offset = kill9_and_wait_for_recovery($primary, $pid, 'worker inside the index step');

my @strays = orphans_except($primary, $prepared_file);
note('files without a committed relation after the crash: ' . join(', ', orphan_files($primary)));
cmp_ok(scalar(@strays), '>', 0,
	'after the crash, the killed step left files no relation owns: ' . join(', ', @strays));

# Transactions alive after the restart, with files no committed catalog row names.
my $open = $primary->background_psql('postgres');
$open->query_safe('BEGIN; CREATE TABLE open_table AS SELECT g FROM generate_series(1, 3000) g');
my $open_file = $open->query_safe("SELECT pg_relation_filenode('open_table')");
my $type_holder = $primary->background_psql('postgres');
$type_holder->query_safe('BEGIN; CREATE TYPE public.held_table AS (x int)');
my $held = $primary->background_psql('postgres');
my $held_pid = $held->query_safe('SELECT pg_backend_pid()');
$held->query_until(qr/sent/, "\\echo sent\nCREATE TABLE public.held_table (x int);\n");
$primary->poll_query_until('postgres',
	"SELECT count(*) FROM pg_locks WHERE pid = $held_pid AND locktype = 'transactionid' AND NOT granted", '1')
  or die 'CREATE TABLE held_table is not held';
my @live = orphans_except($primary, $prepared_file, $open_file, map { /^(\d+)/ } @strays);
note('files of the CREATE TABLE held before its catalog rows: ' . join(', ', @live));
cmp_ok(scalar(@live), '>', 0, 'the held CREATE TABLE has created its file, not yet named by a committed relation');

$offset = -s $primary->logfile;
$primary->safe_psql('postgres', 'UPDATE slow SET seconds = 0');
$primary->safe_psql('postgres', "SELECT backfill_resume($job)");
is(wait_job($primary, $job, 120), 'done', "job $job, resumed, ends done");
is(stray_removals($primary, $offset), file_numbers(@strays),
	'the resumed run removed exactly the files the killed step left (its log names them)');
is(table_equals($primary, 'TABLE events', expected(3)), '0|0', 'events equals the source');
is(leftover_relations($primary, $job), '', 'no shadow, kept table or task index is left');

# Everything alive was left alone.
$type_holder->query_safe('ROLLBACK');
$held->query_safe('INSERT INTO held_table SELECT generate_series(1, 100)');
$open->query_safe('COMMIT');
$primary->safe_psql('postgres', "COMMIT PREPARED 'made_before_the_crash'");
my $counts = q{SELECT (SELECT count(*) FROM committed_table) || ' ' || (SELECT count(*) FROM prepared_table)
  || ' ' || (SELECT count(*) FROM open_table) || ' ' || (SELECT count(*) FROM held_table)};
is($primary->safe_psql('postgres', $counts), '2000 5000 3000 100',
	'the committed, prepared, open and held tables have all their rows');
$primary->safe_psql('postgres', 'CHECKPOINT');
is($primary->safe_psql('postgres', $counts), '2000 5000 3000 100', 'and still after a CHECKPOINT');
$_->quit for ($open, $type_holder, $held);
is(join(', ', orphan_files($primary)), '', 'every data file belongs to a relation');
ok(!$primary->log_contains(qr/could not (?:open|fsync|remove|truncate) file/),
	'the server log has no file error');
# The files went at the commit of the run that found them, whose commit record names them.
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is(join(', ', orphan_files($standby)), '', 'the standby, which had replayed them, removed them too');

# =============================================================================================
# 2. Failover while the index step runs on the primary.
$primary->safe_psql('postgres', 'UPDATE slow SET seconds = 0.002');
$job = start_job(5);
($pid, $task) = wait_index_build($primary, $job);
note("job $job: worker $pid builds the indexes of task $task");
sleep(1);    # the step's files are created at its start; the WAL writer sends them on
$primary->safe_psql('postgres', 'UPDATE slow SET seconds = 0');    # for the promoted standby
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
$primary->stop('immediate');
$standby->promote;
$standby->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
  or die 'the standby was not promoted';

@strays = orphan_files($standby);
cmp_ok(scalar(@strays), '>', 0,
	'the promoted standby has the replayed files of the uncommitted index step: ' . join(', ', @strays));
$offset = -s $standby->logfile;
$standby->safe_psql('postgres', "SELECT backfill_resume($job)");
is(wait_job($standby, $job, 120), 'done', "job $job, resumed on the promoted standby, ends done");
is(stray_removals($standby, $offset), file_numbers(@strays),
	'there the resumed run removed exactly those replayed files (its log names them)');
is(table_equals($standby, 'TABLE events', expected(5)), '0|0', 'events equals the source');
is(join(', ', orphan_files($standby)), '', 'every data file belongs to a relation');
ok(!$standby->log_contains(qr/could not (?:open|fsync|remove|truncate) file/),
	'the server log has no file error');

$standby->stop;
done_testing();
