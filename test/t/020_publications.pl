# Logical replication beside jobs, with a real subscriber. A FOR ALL TABLES publication would
# publish the shadows and stop every subscriber: the start refuses it (ignore_publications
# included), and one created while a job runs makes the next task wait, naming it, and fail
# after swap_wait, nothing swapped. The subscription replicates throughout.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $publisher = new_node('publisher', "wal_level = logical\nmax_wal_senders = 10\n");
my $subscriber = new_node('subscriber');
my $schema = q{
CREATE TABLE ev (id bigint NOT NULL, day date NOT NULL, amount int, PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
CREATE TABLE ev_01 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE ev_02 PARTITION OF ev FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE ev_03 PARTITION OF ev FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
CREATE TABLE orders (id bigint PRIMARY KEY, note text);
};
$publisher->safe_psql('postgres', $schema);
$subscriber->safe_psql('postgres', $schema);
sub pub { return $publisher->safe_psql('postgres', $_[0]); }
pub(q{INSERT INTO ev SELECT g, date '2024-01-01' + g % 90, 1 FROM generate_series(1, 900) g;
      INSERT INTO orders VALUES (1, 'first');
      CREATE PUBLICATION everything FOR ALL TABLES;});
my $connection = $publisher->connstr . ' dbname=postgres';
$subscriber->safe_psql('postgres',
	"CREATE SUBSCRIPTION sub CONNECTION '$connection' PUBLICATION everything");
$subscriber->wait_for_subscription_sync($publisher, 'sub');

# A new order on the publisher reaches the subscriber.
my $order = 1;
sub replicates
{
	my ($what) = @_;
	$order++;
	pub("INSERT INTO orders VALUES ($order, 'then')");
	ok( $subscriber->poll_query_until('postgres',
			"SELECT count(*) = 1 FROM orders WHERE id = $order"),
		"$what: the subscription replicates");
}
replicates('set up');

my $source = q{SELECT id, day, amount * 10 AS amount FROM ev WHERE day >= $1 AND day < $2};
for my $ignore ('false', 'true')
{
	my ($rc, $out, $err) = $publisher->psql('postgres',
		"SELECT backfill_start('ev', '2024-01-01', '2024-04-01', \$q\$$source\$q\$, "
		  . "ignore_publications => $ignore)");
	like($err, qr/publication everything is FOR ALL TABLES: it would publish the shadow tables/,
		"ignore_publications => $ignore: the start refuses a FOR ALL TABLES publication");
}
my ($rc, $out, $err) = $publisher->psql('postgres',
	"SELECT backfill_start('ev', '2024-01-01', '2024-04-01', \$q\$$source\$q\$, ignore_publications => true)"
);
like($err, qr/no option keeps a table out of a FOR ALL TABLES publication/,
	'the refusal says why ignore_publications cannot cover it');
like($err, qr/CREATE PUBLICATION \.\.\. FOR TABLE/, 'and what the DBA can do');
like(pub("SELECT string_agg(p, ' ') FROM backfill_plan('ev', '2024-01-01', '2024-04-01') b, unnest(b.problems) p"),
	qr/publication everything is FOR ALL TABLES/, 'backfill_plan shows it too');
replicates('after the refusals');

# The DBA follows the hint: the subscriber takes the tables from a publication that names them.
pub('CREATE PUBLICATION named FOR TABLE orders');
$subscriber->safe_psql('postgres', 'ALTER SUBSCRIPTION sub SET PUBLICATION named');
pub('DROP PUBLICATION everything');
replicates('by name');

# A FOR ALL TABLES publication created while the job runs (it pauses 2 s after its first task):
# the next task waits, naming it, and fails after swap_wait; nothing is swapped under it.
my $job = pub("SELECT backfill_start('ev', '2024-01-01', '2024-04-01', \$q\$$source\$q\$, "
	  . "pause => '2s', swap_wait => '4s')");
$publisher->poll_query_until('postgres', "SELECT tasks_done = 1 FROM backfill_status($job)");
pub('CREATE PUBLICATION later FOR ALL TABLES');
ok( $publisher->poll_query_until('postgres',
		"SELECT waiting_on LIKE 'before public.ev_02: publication later is FOR ALL TABLES%' "
		  . "FROM backfill_status($job)"),
	'a task waits while a FOR ALL TABLES publication exists, naming it');
is(wait_job($publisher, $job, 60), 'failed', 'and fails after swap_wait');
like(pub("SELECT last_error FROM backfill_status($job)"),
	qr/publication later is FOR ALL TABLES.*for swap_wait/, 'saying why');
is(pub("SELECT string_agg(state, ' ' ORDER BY partition) FROM backfill_tasks($job)"),
	'done failed pending', 'the first partition was done; the others not swapped');
is(pub("SELECT count(*) FROM pg_class WHERE relname LIKE 'bf\\_%'"), '0', 'no shadow was built');
replicates('during the job');

# Once it is gone, the job resumes and finishes.
pub('DROP PUBLICATION later');
pub("SELECT backfill_resume($job)");
is(wait_job($publisher, $job, 60), 'done', 'the resumed job is done');
is(pub("SELECT count(*) FILTER (WHERE amount = 10), count(*) FROM ev"), '900|900',
	'every partition recomputed');
replicates('after the job');
is($subscriber->safe_psql('postgres', "SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL"),
	'1', 'the subscription\'s apply worker runs');

done_testing();
