# An error right after a swap has committed (a cancel arriving as the runner clears waiting_on)
# must not undo the task's bookkeeping: the new partition is live, so the task stays done, the
# replaced partition is dropped, and the job goes on to its end.
#
# The swap of March is made to time out once (a session holds the partition), so that waiting_on
# names the holder; a trigger on the job's control row then fails the update that clears it,
# once, as a cancel would.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = new_node('error_after_swap');
create_events($node, 12000);
$node->safe_psql(
	'postgres', q{
CREATE SEQUENCE fired;  -- not rolled back with the failed update
CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_catalog.nextval('public.fired') = 1 THEN
        RAISE EXCEPTION USING ERRCODE = 'query_canceled',
            MESSAGE = 'canceling statement due to user request';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fail_once BEFORE UPDATE ON backfill.jobs FOR EACH ROW
    WHEN (OLD.waiting_on LIKE 'lock:%' AND NEW.waiting_on IS NULL)
    EXECUTE FUNCTION fail_once();
});

my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN; LOCK TABLE parts.events_2024_03 IN ACCESS SHARE MODE');
my $job = $node->safe_psql(
	'postgres', q{
SELECT backfill_start('events', '2024-01-01', '2025-01-01',
                      'SELECT id, day, amount + 1 AS amount FROM raw WHERE day >= $1 AND day < $2',
                      lock_timeout => '100ms', swap_wait => '5min')});
ok( $node->poll_query_until(
		'postgres', "SELECT waiting_on LIKE 'lock:%' FROM backfill_status($job)"),
	'the swap of March waits for the session that holds it, and says so');
$holder->query_safe('COMMIT');
$holder->quit;

is(wait_job($node, $job, 120), 'done', 'the job ends done');
is($node->safe_psql('postgres', 'SELECT is_called FROM fired'),
	't', 'the update that clears waiting_on after the swap failed');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(DISTINCT state || ':' || attempts, ' ') FROM backfill_tasks($job)"),
	'done:1',
	'every task is done at its first attempt, March included');
is( table_equals(
		$node, 'SELECT id, day, amount FROM events',
		'SELECT id, day, amount + 1 FROM raw'),
	'0|0',
	'events holds the source rows');
is(leftover_relations($node, $job), '', 'no shadow or replaced partition is left behind');

$node->stop;
done_testing();
