# A partition the application keeps writing into, recomputed from itself while single-row inserts
# arrive every 10 ms: with a primary key the writes are caught up and the job ends done with every
# row; without one every build is thrown away, each rebuild waits for a quiet moment that never
# comes, and after swap_wait the task fails saying why and what to do, the partition as it was
# (every row the application wrote in it) and no trigger or key log left behind. A TRUNCATE
# during a build makes the task rebuild.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('rebuild');
sub sql { return $node->safe_psql('postgres', $_[0]); }

# Tables alike but for the key: 50000 rows in one January partition (2000 in truncated).
for my $t ('keyed', 'keyless', 'truncated')
{
	my $pk = $t eq 'keyless' ? '' : ', PRIMARY KEY (id, day)';
	my $rows = $t eq 'truncated' ? 2000 : 50000;
	sql(qq{
CREATE TABLE $t (id bigint NOT NULL, day date NOT NULL, amount int$pk) PARTITION BY RANGE (day);
CREATE TABLE ${t}_01 PARTITION OF $t FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
INSERT INTO $t SELECT g, date '2024-01-01' + g % 31, 1 FROM generate_series(1, $rows) g;
ANALYZE $t;
});
}

# The application: 600 single-row inserts into the table's partition, one every 10 ms, each
# committed, in the background.
sub start_writer
{
	my ($table) = @_;
	my $h = IPC::Run::start(
		[
			'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', $node->host, '-p', $node->port,
			'-d', 'postgres', '-c',
			"DO \$\$ BEGIN FOR i IN 1..600 LOOP
			     INSERT INTO $table VALUES (1000000 + i, date '2024-01-10', 1); COMMIT;
			     PERFORM pg_sleep(0.01);
			 END LOOP; END \$\$"
		],
		'<', \undef, '>', \my $out, '2>', \my $err);
	return $h;
}

sub backfill
{
	my ($table) = @_;
	my $writer = start_writer($table);
	sleep 1;
	my $job = sql(
		"SELECT backfill_start('$table', '2024-01-01', '2024-02-01', "
		  . "'SELECT id, day, amount * 10 AS amount FROM $table WHERE day >= \$1 AND day < \$2', "
		  . "swap_wait => '3s')");
	my $state = sql("SELECT backfill_wait($job, '120s')");
	$writer->finish;
	is($?, 0, "$table: the application's inserts all succeeded");
	return ($job, $state);
}

my ($job, $state) = backfill('keyed');
is($state, 'done', 'keyed: the job is done while the application writes');
# Rows written before the swap are recomputed (10), those after it are as written (1).
is(sql("SELECT count(*) FILTER (WHERE id <= 50000 AND amount = 10), "
	  . "count(*) FILTER (WHERE id > 50000 AND amount IN (1, 10)), count(*) FROM keyed"),
	'50000|600|50600', 'keyed: every row there, the loaded ones and the written ones');
ok(sql("SELECT keys_caught_up FROM backfill_tasks($job)") > 0,
	'keyed: the writes during the build were caught up by key');

($job, $state) = backfill('keyless');
is($state, 'failed', 'keyless: the job fails once swap_wait has passed without a quiet moment');
my $error = sql("SELECT last_error FROM backfill_status($job)");
like($error, qr/was written to during every rebuild for swap_wait/, 'keyless: the error says why');
like($error, qr/primary key/, 'keyless: and what to do');
ok(sql("SELECT rebuilds FROM backfill_tasks($job)") >= 1, 'keyless: the task was rebuilt first');
is(sql("SELECT count(*) FILTER (WHERE amount = 1), count(*) FROM keyless"),
	'50600|50600', 'keyless: the partition is as it was, with every row the application wrote');
is(sql("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'bf\\_%'"), '0', 'no trigger left');
is(sql("SELECT count(*) FROM pg_class WHERE relname LIKE 'keys\\_%' OR relname LIKE 'bf\\_%'"),
	'0', 'no key log or shadow left');

# A TRUNCATE during the load (which takes 2 s, a millisecond a row) cannot be caught up by key:
# the task is rebuilt, from the partition as the TRUNCATE left it.
my $truncate = IPC::Run::start(
	[
		'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', $node->host, '-p', $node->port,
		'-d', 'postgres', '-c', 'SELECT pg_sleep(0.5)', '-c', 'TRUNCATE truncated_01'
	],
	'<', \undef, '>', \my $out, '2>', \my $err);
$job = sql(
	"SELECT backfill_start('truncated', '2024-01-01', '2024-02-01', "
	  . "'SELECT id, day, amount * 10 AS amount FROM truncated WHERE day >= \$1 AND day < \$2 "
	  . "AND pg_sleep(0.001) IS NOT NULL')");
is(sql("SELECT backfill_wait($job, '120s')"), 'done', 'truncated: the job is done');
$truncate->finish;
is($?, 0, 'truncated: the TRUNCATE succeeded');
is(sql("SELECT rebuilds, keys_caught_up FROM backfill_tasks($job)"), '1|0',
	'truncated: the TRUNCATE made the task rebuild, not catch up');
is(sql("SELECT count(*) FROM truncated"), '0', 'truncated: rebuilt from the truncated partition');

done_testing();
