# Every ```sql block of README.md and doc/*.md runs, in document order, on one server: the
# README's setup and quick start build the tables the other examples use. A block fails the test
# with its file and line, unless a line of it says `-- ERROR: text`, which the error must contain.
# Between blocks, jobs an example left running are cancelled, so the next start is not refused.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my @files = ('README.md', sort glob('doc/*.md'));
-f $_ or BAIL_OUT("$_ not found: run from the repository's root") for @files;

# [file, line, sql] of each ```sql block.
my @blocks;
for my $file (@files)
{
	open(my $fh, '<', $file) or die "$file: $!";
	my ($start, $sql);
	while (my $line = <$fh>)
	{
		if (!defined $sql && $line =~ /^```sql\s*$/) { ($start, $sql) = ($., ''); }
		elsif (defined $sql && $line =~ /^```\s*$/) { push @blocks, [ $file, $start, $sql ]; undef $sql; }
		elsif (defined $sql) { $sql .= $line; }
	}
	close $fh;
}
cmp_ok(scalar @blocks, '>=', 10, 'the docs hold SQL examples');

my $node = PostgreSQL::Test::Cluster->new('doc_examples');
$node->init;
$node->append_conf('postgresql.conf', "max_worker_processes = 16\n");
$node->start;
# pg_cron for the scheduling examples, when installed for this server.
my $have_cron = $node->safe_psql('postgres',
	"SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_cron'") eq '1';
if ($have_cron)
{
	$node->append_conf('postgresql.conf',
		"shared_preload_libraries = 'pg_cron'\ncron.database_name = 'postgres'\n");
	$node->restart;
}
# What the setup example assumes exists already: the roles and the schema it grants on.
$node->safe_psql('postgres', 'CREATE ROLE app_owner; CREATE ROLE dashboards; CREATE SCHEMA parts; CREATE DATABASE appdb');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron') if $have_cron;
# cron.schedule_in_database came with pg_cron 1.4 (PostgreSQL 13's Debian package has 1.3).
my $cron_in_database = $have_cron && $node->safe_psql('postgres',
	q{SELECT regexp_match(extversion, '^(\d+)\.(\d+)')::int[] >= '{1,4}' FROM pg_extension WHERE extname = 'pg_cron'}) eq 't';

for my $block (@blocks)
{
	my ($file, $line, $sql) = @$block;
	my ($expected) = $sql =~ /--\s*ERROR:\s*(.+?)\s*$/m;
	if (!$have_cron && $sql =~ /\bcron\./)
	{
	  SKIP: { skip("$file:$line needs pg_cron (Debian package postgresql-NN-cron)", 1); }
		next;
	}
	if (!$cron_in_database && $sql =~ /\bcron\.schedule_in_database\b/)
	{
	  SKIP: { skip("$file:$line needs pg_cron 1.4 or later", 1); }
		next;
	}
	my ($rc, $out, $err) = $node->psql('postgres', $sql, on_error_stop => 1);
	if (defined $expected)
	{
		ok($rc != 0 && index($err, $expected) >= 0, "$file:$line fails with \"$expected\"")
		  or diag("stdout: $out\nstderr: $err");
	}
	else
	{
		ok($rc == 0, "$file:$line runs") or diag("stderr: $err");
	}
	# One job at a time: a rollback under way refuses the cancel and ends by itself.
	for my $job (split /\n/, $node->safe_psql('postgres',
		q{SELECT job FROM backfill_status() WHERE state IN ('pending', 'running', 'paused')}))
	{
		$node->psql('postgres', "SELECT backfill_cancel($job)");
	}
	$node->safe_psql('postgres', q{SELECT backfill_wait(job, '60s') FROM backfill_status()});
}

$node->stop;
done_testing();
