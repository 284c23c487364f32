# Hot partitions: the application writes into every partition of the range while a default job
# recomputes all 12 of them, and not one committed write is lost or left stale.
#
# ev: RANGE (day), 12 monthly partitions of 2024, PK (id, day); raw: the same rows, PK (id, day).
# The source is the query SELECT id, day, amount * 10 AS amount FROM raw WHERE day >= $1 AND
# day < $2, so that ev holds raw with amount * 10 before, during and after the job. pgbench (the
# server's own, from its bin directory) runs at a fixed rate (-R), 4 clients, two scripts of equal
# weight, each one transaction that writes raw and ev alike:
#   insert: a new row (id from a sequence, above the initial ids) on a random day of 2024
#   update: amount + 1 in raw and + 10 in ev of a random initial id
# For 50 and then 200 transactions a second: pgbench starts, a second later the job
# (backfill_start with default options over all 12 partitions: concurrent_writes 'retry', which
# catches writes up by key); pgbench runs in slices of $slice_s seconds until the slice in which
# the job ended is over (so writes overlap the job's start, every build and every swap, and go on
# after it). Checks, each rate: the job done, its 12 tasks done; no shadow or write-noting trigger
# left; ev equal to raw with amount * 10, row for row (none missing, none extra, none stale); every
# row inserted during the run is in ev, at least as many as pgbench counted committed; pgbench
# exited 0 in every slice, no client aborted, no failed transaction; at 200/s writes were caught
# up by key (sum of keys_caught_up > 0). Timings are only reported (note), never asserted.
use strict;
use warnings;

use FindBin;
use lib $FindBin::RealBin;

use BackfillTest;
use Config;
use IPC::Run ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes ();

# 40000 rows a partition: each build then takes long enough (about 0.1 s on 2 cores) that at 200/s
# some 15 to 50 writes land inside builds (seen on PostgreSQL 13, 15 and 17), so that not one
# does, which would fail the keys_caught_up check, is as likely as e^-15 (Poisson), i.e. never.
my $rows      = 480000;
my $slice_s   = 4;         # seconds of each pgbench run
my $max_s     = 240;       # give up on a job that has not ended after this long
my $live_from = 100000001; # ids of the rows pgbench inserts start here

my $node = new_node('hot');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(qq{
CREATE TABLE raw (id bigint NOT NULL, day date NOT NULL, amount int NOT NULL, PRIMARY KEY (id, day));
INSERT INTO raw SELECT g, date '2024-01-01' + ((g * 7919) % 366)::int, g % 1000 FROM generate_series(1::bigint, $rows) g;
CREATE TABLE ev (id bigint NOT NULL, day date NOT NULL, amount int NOT NULL, PRIMARY KEY (id, day))
  PARTITION BY RANGE (day);
@{[ month_partitions_sql('ev', 'public', 'ev_') ]}
INSERT INTO ev SELECT id, day, amount * 10 FROM raw;
CREATE SEQUENCE live_id START WITH $live_from;
ANALYZE raw, ev;
});

my $source = 'SELECT id, day, amount * 10 AS amount FROM raw WHERE day >= $1 AND day < $2';
(my $source_literal = $source) =~ s/'/''/g;

# Rows of ev and raw that disagree: missing on either side, or ev.amount not raw.amount * 10.
my $mismatch_query = q{
SELECT count(*) FROM ev e FULL JOIN raw r USING (id, day)
WHERE e.id IS NULL OR r.id IS NULL OR e.amount IS DISTINCT FROM r.amount * 10};

is(sql("SELECT count(*) FROM backfill_plan('ev', '2024-01-01', '2025-01-01', '$source_literal') "
		  . "WHERE concurrent_writes LIKE 'caught up by key%'"),
	'12', 'the plan catches writes up by key in all 12 partitions');
is(sql($mismatch_query), '0', 'before any job ev is raw with amount * 10');

# The pgbench of the server's own bin directory: the install path the node was given, else the
# directory of the first postgres on PATH (the one the node runs: PGXS puts that bin first).
sub server_bindir
{
	if ($node->can('install_path') && defined $node->install_path)
	{
		return $node->install_path . '/bin';
	}
	for my $dir (split /\Q$Config{path_sep}\E/, $ENV{PATH})
	{
		return $dir if -x "$dir/postgres";
	}
	die 'no postgres on PATH';
}
my $pgbench = server_bindir() . '/pgbench';
-x $pgbench or die "no pgbench beside the server: $pgbench";
note("pgbench: $pgbench");

sub write_file
{
	my ($path, $text) = @_;
	open(my $fh, '>', $path) or die "cannot write $path: $!";
	print $fh $text;
	close($fh) or die "cannot write $path: $!";
	return $path;
}
my $insert_script = write_file($node->basedir . '/insert.pgb', q{\set d random(0, 365)
\set a random(0, 999)
BEGIN;
INSERT INTO raw VALUES (nextval('live_id'), date '2024-01-01' + :d, :a);
INSERT INTO ev VALUES (currval('live_id'), date '2024-01-01' + :d, :a * 10);
END;
});
my $update_script = write_file($node->basedir . '/update.pgb', qq{\\set id random(1, $rows)
BEGIN;
UPDATE raw SET amount = amount + 1 WHERE id = :id;
UPDATE ev SET amount = amount + 10 WHERE id = :id;
END;
});

# One pgbench slice in the background: its harness and the refs its output goes to.
sub start_pgbench
{
	my ($rate) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			$pgbench, '-n', '-h', $node->host, '-p', $node->port,
			'-c', '4', '-j', '2', '-R', $rate, '-T', $slice_s,
			'-f', "$insert_script\@1", '-f', "$update_script\@1", 'postgres'
		],
		'<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout($slice_s + 120));
	return { harness => $h, out => \$out, err => \$err };
}

# Waits for a slice to end; returns its exit status, output and error output.
sub finish_pgbench
{
	my ($slice) = @_;
	$slice->{harness}->finish;
	return { rc => $?, out => ${ $slice->{out} }, err => ${ $slice->{err} } };
}

for my $rate (50, 200)
{
	my $name = "$rate tx/s";
	my $base = sql('SELECT max(id) FROM raw');

	my ($job, $state, @slices);
	my $t0 = Time::HiRes::time();
	while (1)
	{
		my $slice = start_pgbench($rate);
		if (!defined $job)
		{
			sleep 1;    # pgbench writes before the job starts
			$job = sql(
				"SELECT backfill_start('ev', '2024-01-01', '2025-01-01', '$source_literal')");
		}
		push @slices, finish_pgbench($slice);
		$state = job_state($node, $job);
		last if $state =~ /^(done|failed|cancelled|paused)$/;
		last if Time::HiRes::time() - $t0 > $max_s;
	}
	$state = wait_job($node, $job, 5);    # its control rows in the log if it did not end done
	my $job_seconds = sql(
		"SELECT round(extract(epoch FROM finished_at - started_at)::numeric, 1) FROM backfill_status($job)");
	note(sprintf('%s: job %d %s in %s s; pgbench ran %d slices of %d s, %.1f s in all',
		$name, $job, $state, $job_seconds, scalar(@slices), $slice_s, Time::HiRes::time() - $t0));

	is($state, 'done', "$name: the job ends done");
	is(sql("SELECT count(*) FILTER (WHERE state = 'done') || '/' || count(*) FROM backfill_tasks($job)"),
		'12/12', "$name: all 12 tasks done");
	my ($keys, $rounds, $rebuilds, $max_lock) = split /\|/, sql(qq{
SELECT sum(keys_caught_up), sum(catch_up_rounds), sum(rebuilds), max(swap_lock_ms)
FROM backfill_tasks($job)});
	note("$name: keys caught up $keys, catch-up rounds $rounds, rebuilds $rebuilds, "
		  . "max swap_lock_ms $max_lock");
	note("$name: per task (partition, keys_caught_up, catch_up_rounds, rebuilds, attempts, swap_lock_ms):\n"
		  . sql(qq{
SELECT partition, keys_caught_up, catch_up_rounds, rebuilds, attempts, swap_lock_ms
FROM backfill_tasks($job) ORDER BY partition}));
	if ($rate == 200)
	{
		cmp_ok($keys, '>', 0, "$name: writes during the builds were caught up by key");
	}
	is(leftover_relations($node, $job), '', "$name: no shadow or task index left");
	is(sql(q{
SELECT count(*) FROM pg_trigger t JOIN pg_inherits i ON i.inhrelid = t.tgrelid
WHERE i.inhparent = 'ev'::regclass AND NOT t.tgisinternal}),
		'0', "$name: no write-noting trigger left on the partitions");
	is(sql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ev'::regclass"),
		'12', "$name: ev still has its 12 partitions");

	# pgbench: every slice exited 0, no client aborted, no failed transaction (the count is in
	# pgbench's report from PostgreSQL 15 on; before, an error aborts its client and exits 2).
	my ($failed, $inserts_counted, $transactions) = (0, 0, 0);
	my @problems;
	for my $i (0 .. $#slices)
	{
		my $s = $slices[$i];
		push @problems, "slice $i: exit status $s->{rc}" if $s->{rc} != 0;
		push @problems, "slice $i: " . join(' / ', grep { /abort|error/i } split /\n/, $s->{err})
		  if $s->{err} =~ /abort|error/i;
		$failed += $1 if $s->{out} =~ /^number of failed transactions: (\d+)/m;
		$transactions += $1 if $s->{out} =~ /^number of transactions actually processed: (\d+)/m;
		if ($s->{out} =~ /^SQL script 1: .*\n - weight: .*\n - (\d+) transactions/m)
		{
			$inserts_counted += $1;
		}
		else
		{
			push @problems, "slice $i: no count of the insert script in:\n$s->{out}";
		}
	}
	is(join("\n", @problems), '', "$name: pgbench exited 0 in each of its slices, no client aborted");
	is($failed, 0, "$name: pgbench reported no failed transaction");
	cmp_ok($transactions, '>', 0, "$name: pgbench committed transactions ($transactions)");

	# The data: ev is raw with amount * 10, and every row inserted during the run is in it.
	is(sql($mismatch_query), '0', "$name: ev equals raw with amount * 10, no write lost or stale");
	my ($raw_new, $ev_new) = split /\|/,
	  sql("SELECT (SELECT count(*) FROM raw WHERE id > $base), (SELECT count(*) FROM ev WHERE id > $base)");
	note("$name: pgbench counted $transactions transactions, $inserts_counted inserts; "
		  . "rows inserted: raw $raw_new, ev $ev_new");
	cmp_ok($raw_new, '>', 0, "$name: pgbench inserted rows");
	is($ev_new, $raw_new, "$name: every row inserted into raw during the run is in ev");
	cmp_ok($ev_new, '>=', $inserts_counted,
		"$name: at least the $inserts_counted inserts pgbench counted committed are in ev");
}

done_testing();
