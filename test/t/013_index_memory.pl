# backfill.maintenance_work_mem: the memory each index build of a job sorts in, whatever the
# server's maintenance_work_mem (64MB here). trace_sort logs the budget of every index sort
# ("begin index sort: ... workMem = N" in kB); each job below builds the primary key and one
# secondary index of each of its 2 partitions: 4 sorts, plus the primary key's spool for dead
# rows, which gets work_mem (3MB here) as in any unique index build.
# 1. By default (-1) a background worker sorts in the server's maintenance_work_mem.
# 2. Set to 8MB in postgresql.conf and reloaded, a background worker sorts in 8MB.
# 3. Set to 2MB, a session run (CALL backfill_run) sorts in 2MB.
# 4. Refused: below 1MB (other than -1), and a SET in a session (a server-wide setting).
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('index_memory');
$node->append_conf('postgresql.conf', "maintenance_work_mem = '64MB'\nwork_mem = '3MB'\ntrace_sort = on\n");
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

is(index_sort_budgets(''), '3072 3072 65536 65536 65536 65536',
	'by default, each of the 4 index sorts of a worker gets the server\'s maintenance_work_mem');

set_index_memory('8MB');
is(index_sort_budgets(''), '3072 3072 8192 8192 8192 8192',
	'set to 8MB and reloaded, each index sort of a worker gets 8MB, not maintenance_work_mem');

set_index_memory('2MB');
is(index_sort_budgets(', background => false'), '2048 2048 2048 2048 3072 3072',
	'set to 2MB, a session run sorts in 2MB');

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
