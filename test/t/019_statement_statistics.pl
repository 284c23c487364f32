# pg_stat_statements beside jobs: a job of 3 partitions and one of 60 add the same number of
# entries, none names a task's own objects (shadow, trigger, index, key log), and the load stays
# visible: one entry, the source's SELECT, called once per partition.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('statistics', q{
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track_utility = on
});
sub sql { return $node->safe_psql('postgres', $_[0]); }
sql('CREATE EXTENSION pg_stat_statements');

# Tables alike but for their number of monthly partitions, 20 rows in each, with a key.
for my $t (['three', 3], ['sixty', 60])
{
	my ($name, $months) = @$t;
	sql(qq{
CREATE TABLE $name (id bigint NOT NULL, day date NOT NULL, amount int, PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
SELECT format('CREATE TABLE %I PARTITION OF $name FOR VALUES FROM (%L) TO (%L)',
              '${name}_' || m, date '2020-01-01' + make_interval(months => m),
              date '2020-01-01' + make_interval(months => m + 1))
  FROM generate_series(0, $months - 1) m \\gexec
INSERT INTO $name SELECT g, date '2020-01-01' + make_interval(months => g % $months), 1
  FROM generate_series(1, 20 * $months) g;
ANALYZE $name;
});
}

# The entries a job adds: reset, run it to the end, count.
sub entries_of_job
{
	my ($table, $months) = @_;
	my $to = sql("SELECT (date '2020-01-01' + make_interval(months => $months))::date");
	sql('SELECT pg_stat_statements_reset()');
	my $job = sql("SELECT backfill_start('$table', '2020-01-01', '$to', "
		  . "'SELECT id, day, amount + 1 AS amount FROM $table WHERE day >= \$1 AND day < \$2')");
	is(wait_job($node, $job, 300), 'done', "$table: the job is done");
	return sql("SELECT count(*) FROM pg_stat_statements WHERE dbid = "
		  . "(SELECT oid FROM pg_database WHERE datname = current_database()) "
		  . "AND query NOT LIKE '%pg_stat_statements%'");
}

my $three = entries_of_job('three', 3);
my $sixty = entries_of_job('sixty', 60);
ok($three > 0, "a job adds entries ($three)");
is($sixty, $three, 'a job of 60 partitions adds as many entries as one of 3');
is(sql("SELECT count(*) FROM pg_stat_statements WHERE query ~ '(bf_|keys_)[0-9]'"),
	'0', 'no entry names a task\'s own objects');
is(sql("SELECT calls FROM pg_stat_statements WHERE query LIKE 'SELECT id, day, amount + % AS amount FROM sixty WHERE day >= \$1 AND day < \$2'"),
	'60', 'the load is one entry, the source\'s SELECT, called once per partition')
  or diag(sql("SELECT calls, query FROM pg_stat_statements ORDER BY calls DESC"));

done_testing();
