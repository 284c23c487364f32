# backfill on a Citus cluster: a coordinator and two workers on loopback.
# 1. A target Citus distributes (by hash, on the coordinator and on a worker that holds its
#    metadata) or manages (a Citus local table) is refused at start, named, and backfill_plan
#    lists the refusal on each partition; nothing is created on any node.
# 2. A plain partitioned table on the coordinator is backfilled from a colocated distributed
#    source and from a $1/$2 query joining it with a reference table: the data equals the source,
#    and max_rows_per_second holds though Citus runs the source on the workers.
# 3. A table Citus distributes after its job started: its task does not start, the job fails
#    naming why, and the partition keeps its rows.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Whether Citus is installed for this server, asked of the server itself.
my $probe = PostgreSQL::Test::Cluster->new('probe');
$probe->init;
$probe->start;
my ($major, $citus) = split /\|/, $probe->safe_psql('postgres',
	"SELECT current_setting('server_version_num')::int / 10000, "
	  . "(SELECT count(*) FROM pg_available_extensions WHERE name = 'citus')");
$probe->stop;
if ($citus == 0)
{
	plan skip_all => "Citus is not installed for PostgreSQL $major (test/run_all.sh builds it "
	  . "from ../shared/citus when that folder is beside the repository; or install Citus 13.2 "
	  . "for this server)";
}

# A node of the cluster: Citus preloaded, reachable on 127.0.0.1 by the other nodes.
sub citus_node
{
	my ($name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf(
		'postgresql.conf', q{
shared_preload_libraries = 'citus,backfill'
listen_addresses = '127.0.0.1'
max_prepared_transactions = 100
max_worker_processes = 16
citus.shard_count = 4
});
	$node->append_conf('pg_hba.conf', "host all all 127.0.0.1/32 trust\n");
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION citus');
	return $node;
}

my $coordinator = citus_node('coordinator');
my @workers = (citus_node('worker1'), citus_node('worker2'));
$coordinator->safe_psql('postgres', 'CREATE EXTENSION backfill');    # Citus propagates it
$coordinator->safe_psql('postgres',
	"SELECT citus_set_coordinator_host('127.0.0.1', " . $coordinator->port . ")");
$coordinator->safe_psql('postgres', "SELECT citus_add_node('127.0.0.1', " . $_->port . ")")
  for @workers;

sub sql { return $coordinator->safe_psql('postgres', $_[0]); }

# An events table of two months (5000 rows), partitioned by day, on the coordinator.
sub create_table
{
	my ($name) = @_;
	sql(qq{
CREATE TABLE $name (id bigint, tenant_id int, day date, amount numeric, note text,
                    PRIMARY KEY (tenant_id, id, day)) PARTITION BY RANGE (day);
CREATE TABLE ${name}_2024_01 PARTITION OF $name FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE ${name}_2024_02 PARTITION OF $name FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
});
}
sub fill { sql("INSERT INTO $_[0] SELECT g, g % 10, DATE '2024-01-01' + g % 59, g, 'n' || g "
	  . "FROM generate_series(1, 5000) g"); }

create_table('events');
sql("SELECT create_distributed_table('events', 'tenant_id')");
fill('events');
sql(q{CREATE TABLE raw_events (id bigint, tenant_id int, day date, amount numeric, note text)});
sql("SELECT create_distributed_table('raw_events', 'tenant_id', colocate_with => 'events')");
sql(q{INSERT INTO raw_events SELECT id, tenant_id, day, amount * 2, note FROM events});
sql(q{CREATE TABLE tenants (tenant_id int PRIMARY KEY, factor int)});
sql("SELECT create_reference_table('tenants')");
sql(q{INSERT INTO tenants SELECT g, g + 1 FROM generate_series(0, 9) g});

# ---------------------------------------------------------------------------------------------
# 1. Citus targets are refused at start.
my ($rc, $out, $err) = $coordinator->psql('postgres',
	q{SELECT backfill_start('events', '2024-01-01', '2024-03-01', 'raw_events')});
isnt($rc, 0, 'a distributed target is refused at start');
like($err, qr/public\.events is distributed by hash: backfill cannot replace the partitions of a Citus table/,
	'the refusal names the table and what Citus makes of it');
like($err, qr/a write made on a worker during the build would be lost/, 'and says why');
is(sql(q{SELECT count(*) FROM backfill_plan('events', '2024-01-01', '2024-03-01')
         WHERE problems[1] LIKE 'public.events is distributed by hash%'}),
	'2', 'backfill_plan lists the refusal on each partition');

($rc, $out, $err) = $workers[0]->psql('postgres',
	q{SELECT backfill_start('events', '2024-01-01', '2024-03-01', 'raw_events')});
like($err, qr/public\.events is distributed by hash/,
	'on a worker holding the metadata the same target is refused');

create_table('managed');
sql("SELECT citus_add_local_table_to_metadata('managed')");
($rc, $out, $err) = $coordinator->psql('postgres',
	q{SELECT backfill_start('managed', '2024-01-01', '2024-03-01', 'managed')});
like($err, qr/public\.managed is a Citus local table: backfill cannot replace/,
	'a Citus local table is refused');
like($err, qr/undistribute_table\('public\.managed'\)/, 'the hint says how to take it out of Citus');

for my $node ($coordinator, @workers)
{
	is( $node->safe_psql('postgres',
			q{SELECT (SELECT count(*) FROM backfill.jobs) || ' ' ||
                     (SELECT count(*) FROM pg_class WHERE relname LIKE 'bf\_%')}),
		'0 0', $node->name . ': no job and no shadow were created');
}

# ---------------------------------------------------------------------------------------------
# 2. A plain table on the coordinator, from Citus sources.
create_table('local_events');
fill('local_events');
my $job = sql(q{SELECT backfill_start('local_events', '2024-01-01', '2024-03-01', 'raw_events',
                                      background => false)});
$coordinator->safe_psql('postgres', "CALL backfill_run($job)");
is(sql("SELECT state FROM backfill_status($job)"), 'done',
	'from a distributed source: the job ends done');
is(table_equals($coordinator, 'SELECT * FROM local_events', 'SELECT * FROM raw_events'), '0|0',
	'the table equals the distributed source');
is(sql(q{SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'local_events%'}),
	'0', 'the new partitions are plain tables of the coordinator');

my $query = q{SELECT r.id, r.tenant_id, r.day, r.amount * t.factor AS amount, r.note
              FROM raw_events r JOIN tenants t USING (tenant_id)
              WHERE r.day >= $1 AND r.day < $2};
$job = sql("SELECT backfill_start('local_events', '2024-01-01', '2024-03-01', "
	  . "\$q\$$query\$q\$, background => false, max_rows_per_second => 1000)");
$coordinator->safe_psql('postgres', "CALL backfill_run($job)");
is(sql("SELECT state FROM backfill_status($job)"), 'done',
	'from a query joining a distributed and a reference table: done');
(my $whole = $query) =~ s/WHERE .*//s;
is(table_equals($coordinator, 'SELECT * FROM local_events', $whole), '0|0',
	'the table equals the query over the whole range');
my @rates = split /\n/, sql(qq{
SELECT rows_after / extract(epoch FROM finished_at - started_at)
FROM backfill_tasks($job) ORDER BY partition});
note("paced loads: @rates rows per second (limit 1000)");
cmp_ok($_, '<=', 1000 * 1.1, 'a paced load from Citus keeps to the rate') for @rates;

# ---------------------------------------------------------------------------------------------
# 3. Distributed after the start: the task does not touch it.
create_table('later');
fill('later');
$job = sql(q{SELECT backfill_start('later', '2024-01-01', '2024-03-01',
                                   'SELECT * FROM later WHERE day >= $1 AND day < $2',
                                   background => false, swap_wait => '2s')});
sql("SELECT create_distributed_table('later', 'tenant_id')");
($rc, $out, $err) = $coordinator->psql('postgres', "CALL backfill_run($job)");
like($err, qr/backfill job $job failed/, 'the job of a table distributed since its start fails');
like(sql("SELECT last_error FROM backfill_status($job)"),
	qr/public\.later is distributed by hash: backfill cannot replace the partitions/,
	'naming why');
is(sql(q{SELECT count(*) || ' ' || sum(amount) FROM later}), '5000 12502500',
	'the table keeps its rows');
is(sql(q{SELECT count(*) FROM pg_class WHERE relname LIKE 'bf\_%'}), '0', 'no shadow is left');

$_->stop for ($coordinator, @workers);
done_testing();
