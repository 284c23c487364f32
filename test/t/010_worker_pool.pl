# The worker pool: with backfill.max_total_workers = 1, three background jobs started at once
# (on three tables, in two databases) run one at a time, in the order they were created; the
# queued ones are pending and say so in waiting_on; a queued job that is cancelled never runs;
# raising the limit (reload) lets two run at once.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('pool');
$node->append_conf('postgresql.conf', "backfill.max_total_workers = 1\n");
$node->reload;
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION backfill');

# A table of 2 partitions in $db whose source sleeps 1 s per partition.
sub make_table
{
	my ($db, $name) = @_;
	$node->safe_psql(
		$db, qq{
CREATE TABLE $name (id int NOT NULL, day date NOT NULL, amount int) PARTITION BY RANGE (day);
CREATE TABLE ${name}_01 PARTITION OF $name FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE ${name}_02 PARTITION OF $name FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
INSERT INTO $name SELECT g, date '2024-01-01' + g % 60, g FROM generate_series(1, 600) g;
CREATE TABLE ${name}_raw AS SELECT id, day, amount + 1 AS amount FROM $name;
CREATE VIEW ${name}_src AS SELECT r.* FROM ${name}_raw r, pg_sleep(1);
});
	return;
}
make_table('postgres', 'a');
make_table('other', 'b');
make_table('postgres', 'c');

sub start
{
	my ($db, $name) = @_;
	return $node->safe_psql($db,
		"SELECT backfill_start('$name', '2024-01-01', '2024-03-01', '${name}_src')");
}
my $job_a = start('postgres', 'a');
my $job_b = start('other', 'b');
my $job_c = start('postgres', 'c');

$node->poll_query_until('other',
	"SELECT state = 'pending' AND waiting_on LIKE 'queue:%' FROM backfill_status($job_b)")
  or die 'job b never queued';
like(
	$node->safe_psql('other', "SELECT waiting_on FROM backfill_status($job_b)"),
	qr/^queue: all 1 backfill workers of the server are busy \(backfill\.max_total_workers\)/,
	'a job beyond the pool waits pending and says why');

is(wait_job($node, $job_a, 60), 'done', 'job a ends done');
$node->poll_query_until('other', "SELECT state = 'done' FROM backfill_status($job_b)")
  or die 'job b never ended';
is(wait_job($node, $job_c, 60), 'done', 'job c ends done');

my $start_a = $node->safe_psql('postgres', "SELECT started_at FROM backfill_status($job_a)");
my $end_a = $node->safe_psql('postgres', "SELECT finished_at FROM backfill_status($job_a)");
my $start_b = $node->safe_psql('other', "SELECT started_at FROM backfill_status($job_b)");
my $end_b = $node->safe_psql('other', "SELECT finished_at FROM backfill_status($job_b)");
my $start_c = $node->safe_psql('postgres', "SELECT started_at FROM backfill_status($job_c)");
is($node->safe_psql('postgres',
		"SELECT '$start_a'::timestamptz < '$start_b' AND '$end_a'::timestamptz <= '$start_b' "
		  . "AND '$end_b'::timestamptz <= '$start_c'"),
	't', 'the jobs ran one after the other, in the order they were created, across databases');
# No two tasks of the three jobs overlapped in time.
my @spans;
for my $j (['postgres', $job_a], ['other', $job_b], ['postgres', $job_c])
{
	push @spans, split /\n/, $node->safe_psql($j->[0],
		"SELECT extract(epoch FROM started_at) || ' ' || extract(epoch FROM finished_at) "
		  . "FROM backfill_tasks($j->[1])");
}
@spans = sort { $a->[0] <=> $b->[0] } map { [split / /] } @spans;
my $overlaps = grep { $spans[$_]->[0] < $spans[$_ - 1]->[1] } 1 .. $#spans;
is(scalar(@spans) . " tasks, $overlaps overlapping", '6 tasks, 0 overlapping',
	'one task at a time over the three jobs');

for my $t (['postgres', 'a'], ['other', 'b'], ['postgres', 'c'])
{
	is($node->safe_psql($t->[0],
			"SELECT count(*) FROM (SELECT * FROM $t->[1] EXCEPT SELECT * FROM $t->[1]_raw) d"),
		'0', "table $t->[1] holds its source rows");
}

# A queued job that is cancelled never runs.
$job_a = $node->safe_psql('postgres',
	"SELECT backfill_start('a', '2024-01-01', '2024-03-01', 'a_src')");
$job_c = $node->safe_psql('postgres',
	"SELECT backfill_start('c', '2024-01-01', '2024-03-01', 'c_src')");
$node->poll_query_until('postgres',
	"SELECT waiting_on LIKE 'queue:%' FROM backfill_status($job_c)")
  or die 'job c never queued';
$node->safe_psql('postgres', "SELECT backfill_cancel($job_c)");
is(wait_job($node, $job_c, 30), 'cancelled', 'the queued job is cancelled');
is($node->safe_psql('postgres',
		"SELECT count(*) FROM backfill_tasks($job_c) WHERE started_at IS NOT NULL"),
	'0', 'none of its tasks ran');
is(wait_job($node, $job_a, 60), 'done', 'the job ahead of it ends done');

# Raised to 2 (a reload), two jobs run at once.
$node->append_conf('postgresql.conf', "backfill.max_total_workers = 2\n");
$node->reload;
$job_a = $node->safe_psql('postgres',
	"SELECT backfill_start('a', '2024-01-01', '2024-03-01', 'a_src')");
$job_c = $node->safe_psql('postgres',
	"SELECT backfill_start('c', '2024-01-01', '2024-03-01', 'c_src')");
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM backfill.jobs WHERE id IN ($job_a, $job_c) AND state = 'running'")
  or die 'the two jobs never ran at once';
pass('with two slots two jobs run at once');
is(wait_job($node, $job_a, 60), 'done', 'job a ends done');
is(wait_job($node, $job_c, 60), 'done', 'job c ends done');

done_testing();
