# backfill.maintenance_work_mem: the memory each index build of a job sorts in, whatever the
# server's maintenance_work_mem (48MB here), shared by the build's parallel participants.
# trace_sort logs the budget of every index sort ("begin index sort: ... workMem = N" in kB):
# a serial build logs one sort of the whole budget; a parallel one logs the leader's merge with
# the whole budget and one sort per participant with its share. Each job below builds the
# primary key and one secondary index of each of its 2 partitions, plus the primary key's spool
# for dead rows (work_mem, 3MB here, per participant) as in any unique index build. The
# partitions are small, so min_parallel_table_scan_size is lowered for PostgreSQL to consider a
# parallel build at all; max_parallel_maintenance_workers = 1 makes 2 participants.
# 1. By default (8MB) a one-worker job builds each index in parallel, 4MB per participant, where
#    PostgreSQL itself would not (it wants 32MB per participant), and leaves no option behind.
# 2. A job with 2 workers builds serially (its workers already fill the cores), 8MB each.
# 3. A partition that sets parallel_workers keeps it, and its builds follow it.
# 4. -1: maintenance_work_mem and PostgreSQL's own plan (serial: 24MB per participant is too
#    little for it).
# 5. Set to 2MB, a session run (CALL backfill_run) sorts in 2MB.
# 6. Refused: below 1MB (other than -1), and a SET in a session (a server-wide setting).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('index_memory');
$node->append_conf('postgresql.conf',
	"maintenance_work_mem = '48MB'\nwork_mem = '3MB'\ntrace_sort = on\n"
	  . "min_parallel_table_scan_size = '8kB'\nmax_parallel_maintenance_workers = 1\n");
$node->reload;
$node->safe_psql(
	'postgres', q{
CREATE TABLE m (id int NOT NULL, day date NOT NULL, amount int, PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
CREATE INDEX ON m (amount);
CREATE TABLE m_01 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE m_02 PARTITION OF m FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
INSERT INTO m SELECT g, date '2024-01-01' + g % 60, g FROM generate_series(1, 6000) g;
CREATE TABLE m_src AS SELECT id, day, amount + 1 AS amount FROM m;
});

# Runs a job over m with the backfill_start options $options, to done (a session run when they
# say background => false); returns the workMem (kB) of each index sort it logged, sorted.
sub index_sort_budgets
{
	my ($options) = @_;
	my $offset = -s $node->logfile;
	my $job = $node->safe_psql('postgres',
		"SELECT backfill_start('m', '2024-01-01', '2024-03-01', 'm_src'$options)");
	$node->safe_psql('postgres', "CALL backfill_run($job)") if $options =~ /background => false/;
	is(wait_job($node, $job), 'done', "job $job ($options) is done");
	my @budgets = slurp_file($node->logfile, $offset) =~ /begin index sort: .*workMem = (\d+)/g;
	return join(' ', sort { $a <=> $b } @budgets);
}

# Sets backfill.maintenance_work_mem in postgresql.conf and reloads; waits until a new session,
# forked as a worker is, has the new value.
sub set_index_memory
{
	my ($value) = @_;
	$node->append_conf('postgresql.conf', "backfill.maintenance_work_mem = '$value'\n");
	$node->reload;
	$node->poll_query_until('postgres',
		"SELECT current_setting('backfill.maintenance_work_mem', true) = '$value'")
	  or die "backfill.maintenance_work_mem never became $value";
	return;
}

# Per index: the leader's merge (8192) and two participants (4096 each); the primary key's
# dead-row spool likewise: the leader's (3072) and one per participant (3072 each).
is(index_sort_budgets(''), join(' ', (3072) x 6, (4096) x 8, (8192) x 4),
	'by default, a worker builds each index in parallel, sharing 8MB');
is( $node->safe_psql(
		'postgres', "SELECT count(*) FROM pg_class WHERE relname LIKE 'm%' AND reloptions IS NOT NULL"),
	'0',
	'no table is left with a parallel_workers option');

is(index_sort_budgets(', workers => 2'), '3072 3072 8192 8192 8192 8192',
	'with 2 workers, each index is built serially in 8MB');

$node->safe_psql('postgres', 'ALTER TABLE m_01 SET (parallel_workers = 0)');
# m_01: 8192 per index and one spool (3072); m_02 as in the first job.
is(index_sort_budgets(''), join(' ', (3072) x 4, (4096) x 4, (8192) x 4),
	'a partition that sets parallel_workers = 0 is built serially, the other in parallel');
is( $node->safe_psql(
		'postgres',
		"SELECT relname, reloptions FROM pg_class WHERE relname IN ('m_01', 'm_02') ORDER BY 1"),
	"m_01|{parallel_workers=0}\nm_02|", 'the partition keeps its own option');
$node->safe_psql('postgres', 'ALTER TABLE m_01 RESET (parallel_workers)');

set_index_memory('-1');
is(index_sort_budgets(''), '3072 3072 49152 49152 49152 49152',
	'with -1, each index sort gets maintenance_work_mem, serially as PostgreSQL plans it');

set_index_memory('2MB');
# A participant's dead-row spool gets no more than its share (1024) of the budget.
is(index_sort_budgets(', background => false'), join(' ', (1024) x 12, (2048) x 4, (3072) x 2),
	'set to 2MB, a session run sorts in 2MB, in parallel');

my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"LOAD 'backfill'; ALTER SYSTEM SET backfill.maintenance_work_mem = '512kB'");
like(
	$stderr,
	qr/invalid value for parameter "backfill\.maintenance_work_mem": 512\n.*DETAIL:  It must be -1 \(use maintenance_work_mem\) or at least 1MB\./s,
	'a value below 1MB is refused, saying what is allowed');
($ret, $stdout, $stderr) =
  $node->psql('postgres', "LOAD 'backfill'; SET backfill.maintenance_work_mem = '1GB'");
like(
	$stderr,
	qr/parameter "backfill\.maintenance_work_mem" cannot be changed now/,
	'a session cannot change it for itself');
is($node->safe_psql('postgres', "LOAD 'backfill'; SHOW backfill.maintenance_work_mem"),
	'2MB', 'the setting is as the configuration file has it');

done_testing();
