# End to end: backfill all 12 partitions of a table from a view, then from a $1/$2 query, then
# with keep_old; after each job the table is the source's, every task is done with the right row
# counts, each partition keeps its name, bound, indexes, grants, owner and other properties,
# and nothing (shadow, old partition) is left behind; with keep_old the old partitions stay,
# detached, holding the old rows.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('end_to_end');
create_events($node, 50000);
my @partitions = month_partitions();

is($node->safe_psql('postgres', 'SELECT count(*) FROM events'), '50000', 'events holds 50000 rows');

# Source 1: a view whose columns come in another order than the table's, without status (it
# gets its default 'fresh') and without the generated column; a tenth of the rows are gone.
$node->safe_psql('postgres',
	q{CREATE VIEW fixed AS SELECT amount + 1 AS amount, day, id FROM raw WHERE id % 10 <> 0});
my $fixed_expected =
  q{SELECT id, day, amount, 'fresh'::text AS status, amount * 2 AS amount_x2 FROM fixed};

my $catalog_before = catalog_snapshot($node);
like($catalog_before, qr/^index \| events_2024_03 \| events_2024_03_pkey \| .* primary true/m,
	'the catalog snapshot sees the primary key of a partition');
like($catalog_before, qr/acl \{.*reader=r\/app_owner.*\}/,
	'the catalog snapshot sees the grant on a partition');
like($catalog_before, qr/^relation \| events_2024_02 \| .* \| comment February: audited$/m,
	'the catalog snapshot sees the comment on a partition');
like($catalog_before, qr/^column \| events_2024_08 \| 1 \| id \| .* \| acl \{reader=r\/app_owner\}/m,
	'the catalog snapshot sees a column grant on a partition');
like($catalog_before, qr/^column \| events_2024_09 \| 3 \| amount \| .* \| statistics 500$/m,
	'the catalog snapshot sees a statistics target on a partition');

# ---------------------------------------------------------------------------------------------
# Job 1: from the view, paced (pause => '1s') so that its worker can be seen at work.
$node->safe_psql('postgres', 'CREATE TABLE snap_1 AS TABLE events');
my $job1 = $node->safe_psql('postgres',
	q{SELECT backfill_start('events', '2024-01-01', '2025-01-01', 'fixed', pause => '1s')});
like($job1, qr/^\d+$/, "backfill_start returned job id $job1");

ok( $node->poll_query_until(
		'postgres', qq{
SELECT count(*) FROM pg_stat_activity
WHERE backend_type = 'backfill worker' AND application_name = 'backfill job $job1'
  AND query LIKE 'backfill job $job1: %'}, '1'),
	"while job $job1 runs, pg_stat_activity shows its worker as 'backfill job $job1'");
ok(wait_for_state($node, $job1, 'running'), "backfill_status shows job $job1 running");
ok( $node->poll_query_until(
		'postgres', "SELECT tasks_done BETWEEN 1 AND 11 FROM backfill_status($job1)"),
	"job $job1 is seen part-way");

is(wait_job($node, $job1),
	'done', "backfill_wait($job1) returns done");
is(table_equals($node, 'TABLE events', $fixed_expected),
	'0|0', 'events equals the view exactly (defaults filled in, generated column computed)');
is( $node->safe_psql('postgres', q{SELECT count(*) FROM events WHERE status <> 'fresh'}),
	'0', 'no row kept its old status: the omitted column got its default');
is(tasks_actual($node, $job1), tasks_expected($node, 'TABLE snap_1', 'TABLE fixed'),
	"job $job1: every task done once, rows_before/rows_after right, swap_lock_ms > 0");
is( $node->safe_psql(
		'postgres',
		"SELECT state, tasks_total, tasks_done, tasks_failed, rows_written, percent, "
		  . "last_error IS NULL, finished_at >= started_at FROM backfill_status($job1)"),
	'done|12|12|0|45000|100|t|t',
	"backfill_status($job1) reports all 12 tasks and 45000 rows written");
is(catalog_snapshot($node), $catalog_before,
	"job $job1: partition names, bounds, columns, indexes, constraints, grants, owners carry over");
is(leftover_relations($node, $job1), '', "job $job1 left no shadow or old partition behind");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'backfill worker'", '0'),
	"the worker of job $job1 exits when the job is done");

# The grants work, not just exist: reader may read the partition granted to it, not the others.
my ($ret, $out, $err) = $node->psql('postgres',
	'SET ROLE reader; SELECT count(*) FROM parts.events_2024_03');
is($ret, 0, 'reader can still read the partition granted to it');
($ret, $out, $err) = $node->psql('postgres',
	'SET ROLE reader; SELECT count(*) FROM parts.events_2024_05');
like($err, qr/permission denied for table events_2024_05/, 'reader still cannot read a partition not granted to it');

# ---------------------------------------------------------------------------------------------
# Job 2: from a query whose $1 and $2 are the partition's bounds.
$node->safe_psql('postgres', 'CREATE TABLE snap_2 AS TABLE events');
my $query = q{SELECT id, day, amount * 3 AS amount FROM raw WHERE day >= $1 AND day < $2};
my $job2 = $node->safe_psql('postgres',
	qq{SELECT backfill_start('events', '2024-01-01', '2025-01-01', \$src\$$query\$src\$)});
is(wait_job($node, $job2),
	'done', "backfill_wait($job2) returns done");
is( table_equals(
		$node, 'TABLE events',
		q{SELECT id, day, amount * 3, 'fresh'::text, amount * 6 FROM raw}),
	'0|0',
	'events equals the query source exactly');
is(tasks_actual($node, $job2), tasks_expected($node, 'TABLE snap_2', 'TABLE raw'),
	"job $job2: every task done once, rows_before/rows_after right, swap_lock_ms > 0");
is(catalog_snapshot($node), $catalog_before, "job $job2: every partition property carries over");
is(leftover_relations($node, $job2), '', "job $job2 left no shadow or old partition behind");

# ---------------------------------------------------------------------------------------------
# Job 3: keep_old => true. The replaced partitions stay, detached, as <partition>_bf<job>.
$node->safe_psql('postgres', 'CREATE TABLE snap_3 AS TABLE events');
$query =
  q{SELECT id, day, amount - 5 AS amount, 'kept' AS status FROM raw WHERE day >= $1 AND day < $2 AND id % 3 <> 0};
my $job3 = $node->safe_psql('postgres',
	qq{SELECT backfill_start('events', '2024-01-01', '2025-01-01', \$src\$$query\$src\$, keep_old => true)});
is(wait_job($node, $job3),
	'done', "backfill_wait($job3) returns done");
is( table_equals(
		$node, 'TABLE events',
		q{SELECT id, day, amount - 5, 'kept'::text, (amount - 5) * 2 FROM raw WHERE id % 3 <> 0}),
	'0|0',
	'events equals the keep_old job\'s source exactly');
is( tasks_actual($node, $job3),
	tasks_expected($node, 'TABLE snap_3', 'SELECT day FROM raw WHERE id % 3 <> 0'),
	"job $job3: every task done once, rows_before/rows_after right, swap_lock_ms > 0");
is(catalog_snapshot($node), $catalog_before, "job $job3: every partition property carries over");

is( $node->safe_psql(
		'postgres', qq{
SELECT string_agg(n.nspname || '.' || c.relname || ' ' || c.relkind::text
                  || CASE WHEN c.relispartition THEN ' attached' ELSE ' detached' END, ', '
                  ORDER BY c.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname LIKE '%\\_bf$job3'}),
	join(', ', map { "parts.${_}_bf$job3 r detached" } @partitions),
	"job $job3 kept exactly one detached old table per partition, named <partition>_bf$job3");
is( $node->safe_psql(
		'postgres',
		"SELECT count(*) FROM pg_inherits WHERE inhrelid::regclass::text LIKE 'parts.%\\_bf$job3'"),
	'0',
	'no kept table is a partition of anything');
for my $p (@partitions)
{
	my ($lower, $upper) = partition_bounds($p);
	is( table_equals(
			$node, "TABLE parts.${p}_bf$job3",
			"SELECT * FROM snap_3 WHERE day >= '$lower' AND day < '$upper'"),
		'0|0',
		"parts.${p}_bf$job3 holds exactly the rows $p held before job $job3");
}
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_class WHERE relname LIKE 'bf\_shadow\_%'}),
	'0',
	"job $job3 left no shadow");
is( $node->safe_psql(
		'postgres', qq{
SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE NOT t.tgisinternal AND c.relname LIKE '%\\_bf$job3'}),
	'0',
	'the kept tables carry no backfill trigger');

$node->stop;
done_testing();
