# pg_partman's retention beside a job: a table pg_partman manages (monthly partitions, its
# default partition, premade future ones), a job over five months held after its first task,
# then pg_partman's maintenance drops the months past retention. backfill_resume names the
# dropped partitions it skips, and the job finishes the others.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('partman');
sub sql { return $node->safe_psql('postgres', $_[0]); }
my $major = sql("SELECT current_setting('server_version_num')::int / 10000");
if (sql("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_partman'") == 0)
{
	plan skip_all => "pg_partman is not installed for PostgreSQL $major "
	  . "(install the Debian package postgresql-$major-partman to run this test)";
}

# Months counted back from this one, so that retention (which reads the clock) drops the oldest.
sub month_ago { return "(date_trunc('month', now()) - interval '$_[0] months')::date" }
sql('CREATE SCHEMA partman; CREATE EXTENSION pg_partman SCHEMA partman');
# pg_partman 4 calls PostgreSQL's own partitioning 'native', 5 calls it 'range'.
my $type = sql("SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'") =~ /^4\./
  ? 'native' : 'range';
sql(qq{
CREATE TABLE ev (id bigint NOT NULL, day date NOT NULL, amount int NOT NULL,
                 PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
SELECT partman.create_parent(p_parent_table => 'public.ev', p_control => 'day',
                             p_type => '$type', p_interval => '1 month', p_premake => 2,
                             p_start_partition => @{[month_ago(15)]}::text);
INSERT INTO ev SELECT g, @{[month_ago(15)]} + g % 300, 1 FROM generate_series(1, 3000) g;
});
my ($from, $to) = split /\|/, sql("SELECT @{[month_ago(15)]}, @{[month_ago(10)]}");
is(sql("SELECT count(*) FROM backfill_plan('ev', '$from', '$to')"), '5',
	'the job covers five of pg_partman\'s monthly partitions');

my $job = sql("SELECT backfill_start('ev', '$from', '$to', "
	  . "'SELECT id, day, amount * 10 AS amount FROM ev WHERE day >= \$1 AND day < \$2', "
	  . "background => false)");
$node->safe_psql('postgres', "CALL backfill_run($job, max_tasks => 1)");
is(sql("SELECT count(*) FROM backfill_tasks($job) WHERE state = 'done'"), '1', 'one task done');

# pg_partman's retention: the partitions older than 13 months are dropped (two of the job's:
# the one done and the next one).
sql(q{UPDATE partman.part_config SET retention = '13 months', retention_keep_table = false
      WHERE parent_table = 'public.ev'});
sql("SELECT partman.run_maintenance('public.ev')");
my @gone = split /\n/, sql("SELECT partition FROM backfill_tasks($job) "
	  . "WHERE to_regclass(partition) IS NULL ORDER BY 1");
is(scalar @gone, 2, 'retention dropped two of the job\'s partitions');

my ($rc, $out, $err) = $node->psql('postgres', "SELECT backfill_resume($job)");
is($rc, 0, 'backfill_resume succeeds');
like($err, qr/backfill job $job skips 1 partitions that are no longer in public\.ev: \Q$gone[1]\E/,
	'its NOTICE names the dropped partition still to do');
$node->safe_psql('postgres', "CALL backfill_run($job)");
is(sql("SELECT state FROM backfill_status($job)"), 'done', 'the job finishes');
is(sql("SELECT string_agg(state, ' ' ORDER BY partition) FROM backfill_tasks($job)"),
	'done skipped done done done', 'the dropped partition skipped, the others done');
like(sql("SELECT error FROM backfill_tasks($job) WHERE state = 'skipped'"),
	qr/was dropped, renamed or detached after the job started/, 'backfill_tasks says why');
is(sql("SELECT count(*) FILTER (WHERE amount = 10), count(*) FROM ev WHERE day < '$to'"),
	sql("SELECT count(*), count(*) FROM ev WHERE day < '$to'"),
	'every row left in the range is recomputed');
# pg_partman goes on managing the table.
sql("SELECT partman.run_maintenance('public.ev')");
is(sql("SELECT count(*) FROM pg_class WHERE relname LIKE 'bf\\_%'"), '0', 'nothing of the job left');

done_testing();
