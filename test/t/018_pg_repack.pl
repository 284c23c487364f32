# pg_repack beside a job, run for real: on a partition when the task reaches it, on the
# partition a task is building, and over the whole table (-I) during a throttled job. The task
# waits for pg_repack (waiting_on names it), never copies its trigger onto the new partition and
# never swaps underneath it: afterwards every partition takes writes, no pg_repack trigger or log
# table is left, pg_repack ends by itself each time and runs again on the table.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# This server's programs come first on PATH; pg_repack must be the one built for it.
my ($bindir) = grep { -x "$_/pg_ctl" } split /:/, $ENV{PATH};
my $node = new_node('repack');
sub sql { return $node->safe_psql('postgres', $_[0]); }
my $major = sql("SELECT current_setting('server_version_num')::int / 10000");
if (!-x "$bindir/pg_repack"
	|| sql("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_repack'") == 0)
{
	plan skip_all => "pg_repack is not installed for PostgreSQL $major "
	  . "(install the Debian package postgresql-$major-repack to run this test)";
}
sql('CREATE EXTENSION pg_repack');

# 4 monthly partitions of 2000 rows, a key (pg_repack needs one), a trigger of the partition's
# own on ev_02 (it carries over), and the raw rows the job recomputes from.
sql(q{
CREATE TABLE ev (id bigint NOT NULL, day date NOT NULL, amount int NOT NULL,
                 PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE ev_01 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2024-02-01');
CREATE TABLE ev_02 PARTITION OF ev FOR VALUES FROM ('2024-02-01') TO ('2024-03-01');
CREATE TABLE ev_03 PARTITION OF ev FOR VALUES FROM ('2024-03-01') TO ('2024-04-01');
CREATE TABLE ev_04 PARTITION OF ev FOR VALUES FROM ('2024-04-01') TO ('2024-05-01');
CREATE TABLE raw (id bigint NOT NULL, day date NOT NULL, amount int NOT NULL);
INSERT INTO raw SELECT g, date '2024-01-01' + g % 120, g FROM generate_series(1, 8000) g;
INSERT INTO ev SELECT id, day, 0 FROM raw;
CREATE INDEX raw_day ON raw (day);
CREATE FUNCTION ev_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER ev_02_audit BEFORE UPDATE ON ev_02 FOR EACH ROW EXECUTE FUNCTION ev_audit();
ANALYZE raw, ev;
});
my $source = q{SELECT id, day, amount FROM raw WHERE day >= $1 AND day < $2};
my $slow_source = q{SELECT id, day, amount FROM raw WHERE day >= $1 AND day < $2 AND pg_sleep(0.001) IS NOT NULL};

# pg_repack in the background, as a DBA runs it.
sub start_repack
{
	my @args = @_;
	my ($out, $err) = ('', '');
	local $ENV{PGAPPNAME};    # the test's name otherwise: pg_repack names its sessions itself
	delete $ENV{PGAPPNAME};
	my $h = IPC::Run::start(
		[
			"$bindir/pg_repack", '-h', $node->host, '-p', $node->port, '-d', 'postgres',
			'--no-kill-backend', @args
		],
		'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(180));
	return { h => $h, out => \$out, err => \$err };
}

sub finish_repack
{
	my ($r, $what) = @_;
	my $ok = eval { $r->{h}->finish; 1 };
	is($ok && $? == 0 ? 0 : 1, 0, "$what: pg_repack ended by itself, successfully")
	  or diag("pg_repack: ${$r->{out}} ${$r->{err}}");
	$r->{h}->kill_kill unless $ok;
}

# A transaction older than pg_repack's: pg_repack waits for it with its trigger and log table in
# place, as it does on a busy server.
sub start_old_transaction
{
	my $h = IPC::Run::start(
		[
			'psql', '-X', '-q', '-h', $node->host, '-p', $node->port, '-d', 'postgres',
			'-c', "SET application_name = 'old_transaction'; SELECT pg_sleep(600)"
		],
		'<', \undef, '>', \my $out, '2>', \my $err);
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'old_transaction'");
	return $h;
}

sub end_old_transaction
{
	my ($h) = @_;
	sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'old_transaction'");
	eval { $h->finish };
}

sub repack_trigger_on
{
	my ($table) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_trigger WHERE tgrelid = '$table'::regclass AND tgname = 'repack_trigger'");
}

# Collects every waiting_on of the job until it ends; returns them and its state.
sub watch_job
{
	my ($job) = @_;
	my %seen;
	for (my $i = 0; $i < 1200; $i++)
	{
		my ($state, $waiting) =
		  split /\|/, sql("SELECT state, coalesce(waiting_on, '') FROM backfill_status($job)"), 2;
		$seen{$waiting} = 1 if $waiting ne '';
		return ($state, \%seen) if $state !~ /^(running|pending)$/;
		select(undef, undef, undef, 0.1);
	}
	return ('timeout', \%seen);
}

sub every_partition_takes_writes
{
	my ($what) = @_;
	my $ok = 1;
	for my $m (1 .. 4)
	{
		my $day = sprintf('2024-%02d-15', $m);
		my ($rc, $out, $err) = $node->psql('postgres',
			"BEGIN; INSERT INTO ev VALUES (-$m, '$day', 1); UPDATE ev SET amount = amount WHERE id = -$m; "
			  . "DELETE FROM ev WHERE id = -$m; COMMIT;");
		$ok = 0, diag("ev_0$m: $err") if $rc != 0;
	}
	ok($ok, "$what: every partition takes inserts, updates and deletes");
	is(sql("SELECT count(*) FROM pg_trigger WHERE tgname = 'repack_trigger'"),
		'0', "$what: no pg_repack trigger is left");
	is(sql("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
		  . "WHERE n.nspname = 'repack' AND c.relname LIKE 'log\\_%'"),
		'0', "$what: no pg_repack log table is left");
	is(sql("SELECT count(*) FROM pg_trigger WHERE tgname = 'ev_02_audit'"),
		'1', "$what: the partition's own trigger carried over");
}

# 1. pg_repack is at work on ev_01 (its trigger and log table in place) when the job starts:
#    the start does not refuse, the task waits, naming pg_repack, and goes on once it is done.
my $old = start_old_transaction();
my $repack = start_repack('-t', 'ev_01');
repack_trigger_on('ev_01');
my $job = sql("SELECT backfill_start('ev', '2024-01-01', '2024-03-01', \$q\$$source\$q\$)");
ok( $node->poll_query_until('postgres',
		"SELECT waiting_on LIKE 'before public.ev_01: pg_repack % public.ev_01%' FROM backfill_status($job)"),
	'before: the task waits for pg_repack, saying so in waiting_on')
  or diag(sql("SELECT waiting_on FROM backfill_status($job)"));
is(sql("SELECT state FROM backfill_tasks($job) WHERE partition = 'public.ev_01'"),
	'running', 'before: the task waits, its partition untouched');
end_old_transaction($old);
finish_repack($repack, 'before');
is(wait_job($node, $job, 120), 'done', 'before: the job is done once pg_repack is');
is(sql("SELECT count(*) FILTER (WHERE amount = id), count(*) FROM ev WHERE day < '2024-03-01'"),
	sql("SELECT count(*), count(*) FROM raw WHERE day < '2024-03-01'"),
	'before: the partitions hold the recomputed rows');
every_partition_takes_writes('before');

# 2. pg_repack starts on ev_03 while the task builds it (the load takes 2 s): its trigger is not
#    copied to the new partition, and the swap waits until pg_repack is done.
sql("UPDATE ev SET amount = 0");
$job = sql("SELECT backfill_start('ev', '2024-03-01', '2024-04-01', \$q\$$slow_source\$q\$)");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE 'backfill job $job: loading%'");
$old = start_old_transaction();
$repack = start_repack('-t', 'ev_03');
repack_trigger_on('ev_03');
# (pg_repack holds a lock on the partition while it waits: the swap's lock attempts name it.)
ok( $node->poll_query_until('postgres',
		"SELECT waiting_on ~ '^(pg_repack .*public.ev_03|lock: pid [0-9]+ \\[pg_repack\\])' "
		  . "FROM backfill_status($job)"),
	'during: the swap waits for pg_repack, saying so in waiting_on')
  or diag(sql("SELECT waiting_on FROM backfill_status($job)"));
end_old_transaction($old);
finish_repack($repack, 'during');
is(wait_job($node, $job, 120), 'done', 'during: the job is done once pg_repack is');
is(sql("SELECT count(*) FILTER (WHERE amount = id), count(*) FROM ev_03"),
	sql("SELECT count(*), count(*) FROM raw WHERE day >= '2024-03-01' AND day < '2024-04-01'"),
	'during: the new partition holds the recomputed rows');
every_partition_takes_writes('during');

# 3. pg_repack over the whole table (-I) during a throttled job over every partition: both end
#    by themselves, the job done.
sql("UPDATE ev SET amount = 0");
$job = sql("SELECT backfill_start('ev', '2024-01-01', '2024-05-01', \$q\$$source\$q\$, pause => '500ms')");
$repack = start_repack('-I', 'ev');
finish_repack($repack, 'whole table');
my ($state, $seen) = watch_job($job);
is($state, 'done', 'whole table: the job is done') or diag explain $seen;
is(sql("SELECT count(*) FILTER (WHERE amount = id), count(*) FROM ev"),
	sql("SELECT count(*), count(*) FROM raw"), 'whole table: every partition recomputed');
every_partition_takes_writes('whole table');

# After the job, pg_repack works on the table as before.
finish_repack(start_repack('-I', 'ev'), 'after');
every_partition_takes_writes('after');

done_testing();
