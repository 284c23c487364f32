# A partition the application keeps writing into, recomputed from itself while single-row inserts
# arrive every 10 ms: with a primary key the writes are caught up and the job ends done with every
# row; without one every build is thrown away, each rebuild waits for a quiet moment that never
# comes, and after swap_wait the task fails saying why and what to do, the partition as it was
# (every row the application wrote in it) and no trigger or key log left behind. A TRUNCATE
# during a build makes the task rebuild. Writes that come faster than the rounds apply them make
# the task say so and fail after swap_wait, the partition as the application left it.
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

# After a job that failed: no write-noting trigger, key log or shadow left. $name starts the
# checks' names.
sub nothing_left
{
	my ($name) = @_;
	is(sql("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'bf\\_%'"), '0', "${name}no trigger left");
	is(sql("SELECT count(*) FROM pg_class WHERE relname LIKE 'keys\\_%' OR relname LIKE 'bf\\_%'"),
		'0', "${name}no key log or shadow left");
	return;
}

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
nothing_left('');

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

# Writes faster than the rounds apply them: the source costs half a millisecond a row, and the
# application updates 300 rows of the partition's 3000 every 50 ms, so every round finds more
# keys than it may leave for the swap. The task says so in waiting_on and fails after swap_wait,
# giving the rate, with the partition as the application left it.
sql(q{
CREATE TABLE outpaced (id bigint PRIMARY KEY, day date NOT NULL, amount int) PARTITION BY RANGE (id);
CREATE TABLE outpaced_1 PARTITION OF outpaced FOR VALUES FROM (1) TO (100001);
INSERT INTO outpaced SELECT g, date '2024-01-01', 1 FROM generate_series(1, 3000) g;
CREATE TABLE outpaced_writes (n bigint NOT NULL, stop boolean NOT NULL);
INSERT INTO outpaced_writes VALUES (0, false);
ANALYZE outpaced;
});
my $outpacer = IPC::Run::start(
	[
		'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', $node->host, '-p', $node->port,
		'-d', 'postgres', '-c',
		q{DO $$ BEGIN FOR i IN 0..10000 LOOP
		     EXIT WHEN (SELECT stop FROM outpaced_writes);
		     UPDATE outpaced SET amount = amount + 1 WHERE id > (i % 10) * 300 AND id <= (i % 10 + 1) * 300;
		     UPDATE outpaced_writes SET n = n + 300;
		     COMMIT;
		     PERFORM pg_sleep(0.05);
		 END LOOP; END $$}
	],
	'<', \undef, '>', \my $out2, '2>', \my $err2);
$job = sql(
	"SELECT backfill_start('outpaced', 1, 100001, "
	  . "'SELECT id, day, amount * 1000 AS amount FROM outpaced WHERE id >= \$1 AND id < \$2 "
	  . "AND pg_sleep(0.0005) IS NOT NULL', swap_wait => '6s')");
my %seen;
for (my $i = 0; $i < 1200; $i++)
{
	my ($state, $waiting) =
	  split /\|/, sql("SELECT state, coalesce(waiting_on, '') FROM backfill_status($job)"), 2;
	$seen{$waiting} = 1 if $waiting ne '';
	last if $state ne 'running' && $state ne 'pending';
	select(undef, undef, undef, 0.1);
}
is(sql("SELECT backfill_wait($job, '120s')"), 'failed',
	'outpaced: the job fails once swap_wait has passed while the rounds fall behind');
sql("UPDATE outpaced_writes SET stop = true");
$outpacer->finish;
is($?, 0, "outpaced: the application's updates all succeeded");
my @rounds = grep { /^catching up writes into public\.outpaced_1: round \d+ applied \d+ keys in \d+ ms; writes came at about \d+ keys a second/ } keys %seen;
ok(@rounds > 0, 'outpaced: waiting_on said the task was catching up, and at what rate')
  or diag explain \%seen;
ok((grep { /a round takes \d+% of the time the build took/ } @rounds),
	'outpaced: and that a round costs a large share of the build')
  or diag explain \%seen;
$error = sql("SELECT last_error FROM backfill_status($job)");
like($error, qr/writes into partition public\.outpaced_1 could not be caught up within swap_wait/,
	'outpaced: the error says why');
like($error, qr/writes came at about \d+ keys a second.*raise swap_wait/, 'outpaced: the rate and what to do');
ok(sql("SELECT catch_up_rounds FROM backfill_tasks($job)") >= 2, 'outpaced: after rounds');
is(sql("SELECT sum(amount) - count(*) = (SELECT n FROM outpaced_writes), count(*) FROM outpaced"),
	't|3000', 'outpaced: the partition holds every update the application made, and no recomputed row');
nothing_left('outpaced: ');

done_testing();
